//! A scripted Pika-dialect RESP2 peer for the paths real redis-server cannot show (no Pika
//! package exists): `SLAVEOF … force`, `already master of others`, a handshake that never
//! retries, unknown `ROLE`/`REPLICAOF`/`CLIENT SETINFO`, Pika auth errors.
//!
//! It listens on 127.0.0.1:0 (a tokio task; start it inside a runtime), serves INFO bodies from
//! the shared fixtures (`pika-<family>-*.txt`, host/port substituted), follows the Pika rules of
//! pika.md §2–§4, and records every command it receives (AUTH and secret CONFIG values
//! redacted). Test code reads and changes its state through [`PikaPeer::with_state`].
//! Dropping the peer stops the listener and every connection.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

use pika_remedy::model::Addr;

/// The shared fixtures directory (`$PIKA_REMEDY_SHARED/fixtures/info` or `../shared/…`).
pub fn fixtures_dir() -> PathBuf {
    std::env::var("PIKA_REMEDY_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"))
        .join("fixtures/info")
}

/// Read one fixture file (panics naming the path if missing).
pub fn fixture(name: &str) -> String {
    let p = fixtures_dir().join(name);
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("fixture {}: {e} (set PIKA_REMEDY_SHARED)", p.display()))
}

/// Role the peer reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerRole {
    Master,
    Slave,
}

/// Replication link state of a slave peer; picks the fixture (`slave-up`, `slave-down`, …).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerLink {
    Up,
    Down,
    Connecting,
    Syncing,
    Error,
}

impl PeerLink {
    fn fixture_suffix(self) -> &'static str {
        match self {
            PeerLink::Up => "slave-up",
            PeerLink::Down => "slave-down",
            PeerLink::Connecting => "slave-connecting",
            PeerLink::Syncing => "slave-syncing",
            PeerLink::Error => "slave-error",
        }
    }
}

/// Everything the peer knows. Public so tests can script it through `with_state`.
#[derive(Clone, Debug)]
pub struct PikaState {
    /// Fixture family: `"4.0.1"` (default), `"4.0.0"`, `"3.5.4"`, `"3.3"`.
    pub family: String,
    pub role: PeerRole,
    /// `(host, port)` exactly as given to SLAVEOF (Pika compares strings).
    pub master: Option<(String, u16)>,
    /// Link state while a slave.
    pub link: PeerLink,
    /// Connected slaves `(ip, port)` (as listed on the master's `slaveN:` lines).
    pub slaves: Vec<(String, u16)>,
    /// Refuse this many more `SLAVEOF host port` with `already master of others`, then drop
    /// the slaves (like the real Pika, whose slave entries linger 1–4 s). `None` = refuse
    /// while `slaves` is non-empty, until a test clears it.
    pub slaves_linger: Option<u32>,
    /// `requirepass`; `None` = no auth.
    pub requirepass: Option<String>,
    /// `masterauth` as last set (by config or `CONFIG SET masterauth`).
    pub masterauth: Option<String>,
    /// If set, a SLAVEOF only links up when `masterauth` equals this (the master's requirepass);
    /// otherwise the link stays down (Pika's no-retry auth failure).
    pub expected_masterauth: Option<String>,
    /// Link state reached after an accepted SLAVEOF (default `Up`).
    pub link_after_slaveof: PeerLink,
    /// Pika's handshake that never retries: a SLAVEOF without `force` leaves the link `Down`
    /// forever; only a SLAVEOF with `force` (after `NO ONE` or to another master) links up.
    pub handshake_never_retries: bool,
    /// `CONFIG REWRITE` answers `-ERR Rewire CONFIG fail`.
    pub rewrite_fails: bool,
    /// Number of successful `CONFIG REWRITE`s.
    pub rewrites: u32,
    /// pika.conf has an uncommented `slaveof` line. Family 3.3 (like all of 3.2–3.4) rewrites
    /// only keys already present, so without it CONFIG REWRITE answers `+OK` and persists no
    /// `slaveof` (pika.md). 3.5+ appends the key. Default `false`: the stock file (`#slaveof`).
    pub conf_has_slaveof_line: bool,
    /// The `slaveof` persisted by the last successful `CONFIG REWRITE` (what a restart uses).
    pub persisted_master: Option<(String, u16)>,
    /// Whether the last accepted SLAVEOF carried `force`.
    pub last_force: bool,
    /// The real Pika's re-attach wait: a slave told `SLAVEOF NO ONE` and then `SLAVEOF` the
    /// SAME master again (the reset before a forced retry) is refused by that master while its
    /// stale entry lingers (`Slave AlreadyExist`, ~11–13 s on 4.0.1): `INFO` shows the link
    /// `Down` for this many `INFO replication` answers, then the link state follows
    /// `link_after_slaveof`. 0 (default) = links at once.
    pub reattach_refusals: u32,
    /// The master the peer followed before its last `SLAVEOF NO ONE` (for the re-attach wait).
    pub previous_master: Option<(String, u16)>,
    /// `INFO replication` answers left in the current re-attach wait.
    pub reattach_left: u32,
    /// Read commands but never answer (a hung node).
    pub silent: bool,
    /// Serve this text as `INFO replication` instead of a fixture.
    pub info_override: Option<String>,
    /// Every command received, in order (AUTH args and secret CONFIG values redacted).
    pub commands: Vec<Vec<String>>,
    /// `dump-prefix` as last set (CONFIG SET/GET).
    pub dump_prefix: String,
    /// BGSAVE calls.
    pub bgsaves: u64,
    /// Writes fenced by `ACL SETUSER default -@write` (Pika 4.x only; lifted by `+@write`).
    pub fenced: bool,
    /// Apply this many more `SLAVEOF`s, then close the connection without a reply (the real
    /// Pika's asynchronous `CLIENT KILL TYPE normal` can close a connection opened just after).
    pub drop_slaveof_replies: u32,
}

impl Default for PikaState {
    fn default() -> Self {
        PikaState {
            family: "4.0.1".into(),
            role: PeerRole::Master,
            master: None,
            link: PeerLink::Down,
            slaves: Vec::new(),
            slaves_linger: None,
            requirepass: None,
            masterauth: None,
            expected_masterauth: None,
            link_after_slaveof: PeerLink::Up,
            handshake_never_retries: false,
            rewrite_fails: false,
            rewrites: 0,
            dump_prefix: String::new(),
            bgsaves: 0,
            fenced: false,
            drop_slaveof_replies: 0,
            conf_has_slaveof_line: false,
            persisted_master: None,
            last_force: false,
            reattach_refusals: 0,
            previous_master: None,
            reattach_left: 0,
            silent: false,
            info_override: None,
            commands: Vec::new(),
        }
    }
}

impl PikaState {
    /// A master without slaves.
    pub fn master() -> PikaState {
        PikaState::default()
    }

    /// A master with these connected slaves.
    pub fn master_with_slaves(slaves: &[Addr]) -> PikaState {
        PikaState {
            slaves: slaves.iter().map(|a| (a.host.clone(), a.port)).collect(),
            ..PikaState::default()
        }
    }

    /// A slave of `master` with the link in state `link`.
    pub fn slave_of(master: &Addr, link: PeerLink) -> PikaState {
        PikaState {
            role: PeerRole::Slave,
            master: Some((master.host.clone(), master.port)),
            persisted_master: Some((master.host.clone(), master.port)),
            link,
            ..PikaState::default()
        }
    }

    fn pika_version(&self) -> &'static str {
        match self.family.as_str() {
            // v4.0.1 still reports 4.0.0 (pika.md, sources).
            "4.0.1" | "4.0.0" => "4.0.0",
            "3.5.4" => "3.5.4",
            _ => "3.3.6",
        }
    }

    /// The `INFO replication` body the peer would serve now.
    pub fn info_replication(&self) -> String {
        if let Some(t) = &self.info_override {
            return t.clone();
        }
        match self.role {
            PeerRole::Master => {
                let suffix = match self.slaves.len() {
                    0 => "master-0slaves",
                    1 => "master-1slave",
                    _ => "master-2slaves",
                };
                let body = load_family(&self.family, suffix);
                substitute_slaves(&body, &self.slaves)
            }
            PeerRole::Slave => {
                let body = load_family(&self.family, self.link.fixture_suffix());
                let (h, p) = self.master.clone().unwrap_or_else(|| ("".into(), 0));
                body.split_inclusive('\n')
                    .map(|l| {
                        if l.starts_with("master_host:") {
                            format!("master_host:{h}\r\n")
                        } else if l.starts_with("master_port:") {
                            format!("master_port:{p}\r\n")
                        } else {
                            l.to_string()
                        }
                    })
                    .collect()
            }
        }
    }

    fn info_server(&self, port: u16) -> String {
        [
            "# Server".to_string(),
            format!("pika_version:{}", self.pika_version()),
            "pika_git_sha:0000000000000000000000000000000000000000".into(),
            "pika_build_compile_date: 2024-09-30".into(),
            "os:Linux 6.1.0 x86_64".into(),
            "arch_bits:64".into(),
            "process_id:4242".into(),
            format!("tcp_port:{port}"),
            "thread_num:1".into(),
            "sync_thread_num:6".into(),
            "uptime_in_seconds:100".into(),
            "uptime_in_days:1".into(),
            "config_file:/etc/pika/pika.conf".into(),
            "server_id:1".into(),
            "run_id:2e1b8b4b0b6b8f7e2a1c3d5e7f9a0b1c2d3e4f50".into(),
        ]
        .join("\r\n")
            + "\r\n"
    }

    /// What a restart of the real Pika would do: come back from the persisted `slaveof`
    /// (nothing else survives), as a master if none was persisted.
    pub fn restart(&mut self) {
        self.slaves.clear();
        self.slaves_linger = None;
        match self.persisted_master.clone() {
            Some(m) => {
                self.role = PeerRole::Slave;
                self.master = Some(m);
                self.link = self.link_after_slaveof;
            }
            None => {
                self.role = PeerRole::Master;
                self.master = None;
            }
        }
    }
}

fn load_family(family: &str, suffix: &str) -> String {
    let name = format!("pika-{family}-{suffix}.txt");
    if fixtures_dir().join(&name).is_file() {
        fixture(&name)
    } else {
        // Not every family has every state (e.g. no 3.5.4 error fixture): use 4.0.1's.
        fixture(&format!("pika-4.0.1-{suffix}.txt"))
    }
}

/// Replace `ip=`/`port=` of the fixture's `slaveN:` lines with the peer's slaves.
fn substitute_slaves(body: &str, slaves: &[(String, u16)]) -> String {
    body.split_inclusive('\n')
        .map(|l| {
            let Some(rest) = l.strip_prefix("slave") else {
                return l.to_string();
            };
            let Some((idx, fields)) = rest.split_once(':') else {
                return l.to_string();
            };
            let (Ok(i), Some((ip, port))) = (
                idx.parse::<usize>(),
                slaves.get(idx.parse::<usize>().unwrap_or(usize::MAX)),
            ) else {
                return l.to_string();
            };
            let fields: Vec<String> = fields
                .split(',')
                .map(|f| {
                    if f.starts_with("ip=") {
                        format!("ip={ip}")
                    } else if f.starts_with("port=") {
                        format!("port={port}")
                    } else {
                        f.to_string()
                    }
                })
                .collect();
            format!("slave{i}:{}", fields.join(","))
        })
        .collect()
}

/// A running scripted peer. Dropping it stops everything.
pub struct PikaPeer {
    port: u16,
    state: Arc<Mutex<PikaState>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PikaPeer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PikaPeer {
    /// Listen on 127.0.0.1:0 with `state` and serve until dropped.
    pub async fn start(state: PikaState) -> PikaPeer {
        PikaPeer::start_on(0, state).await
    }

    // Port 0 picks one this binary never used (see `support::ports`); a given port is kept.
    async fn listen(port: u16) -> TcpListener {
        if port == 0 {
            return super::ports::listen_tokio();
        }
        TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap_or_else(|e| panic!("bind 127.0.0.1:{port}: {e}"))
    }

    /// Listen on 127.0.0.1:`port` (0 = any): a "restart" of a dropped peer on its old port,
    /// so the cluster's configured address answers again.
    pub async fn start_on(port: u16, state: PikaState) -> PikaPeer {
        let listener = PikaPeer::listen(port).await;
        let port = listener.local_addr().expect("local_addr").port();
        let state = Arc::new(Mutex::new(state));
        let st = state.clone();
        let task = tokio::spawn(async move {
            // Connection tasks live in the JoinSet: aborting this task aborts them all.
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((sock, _)) = accepted else { continue };
                        conns.spawn(serve(sock, st.clone(), port));
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        PikaPeer { port, state, task }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> Addr {
        Addr::new("127.0.0.1", self.port)
    }

    /// Read or change the state.
    pub fn with_state<R>(&self, f: impl FnOnce(&mut PikaState) -> R) -> R {
        let mut g = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    /// A copy of the state.
    pub fn state(&self) -> PikaState {
        self.with_state(|s| s.clone())
    }

    /// Every command received so far (redacted).
    pub fn commands(&self) -> Vec<Vec<String>> {
        self.with_state(|s| s.commands.clone())
    }

    /// The commands as single strings, e.g. `"SLAVEOF 127.0.0.1 9221 force"`.
    pub fn command_lines(&self) -> Vec<String> {
        self.commands().iter().map(|c| c.join(" ")).collect()
    }

    pub fn clear_commands(&self) {
        self.with_state(|s| s.commands.clear());
    }

    /// Simulate a process restart (see [`PikaState::restart`]).
    pub fn restart(&self) {
        self.with_state(|s| s.restart());
    }
}

/// Read one command: a RESP array of bulk strings, or an inline line. `None` at EOF/garbage.
async fn read_command(r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> Option<Vec<String>> {
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        if !line.trim().is_empty() {
            break;
        }
    }
    let line = line.trim_end_matches(['\r', '\n']);
    let Some(n) = line.strip_prefix('*') else {
        return Some(line.split_whitespace().map(str::to_string).collect());
    };
    let n: usize = n.parse().ok()?;
    let mut args = Vec::with_capacity(n);
    for _ in 0..n {
        let mut hdr = String::new();
        r.read_line(&mut hdr).await.ok()?;
        let len: usize = hdr.trim_end().strip_prefix('$')?.parse().ok()?;
        let mut buf = vec![0u8; len + 2];
        r.read_exact(&mut buf).await.ok()?;
        buf.truncate(len);
        args.push(String::from_utf8_lossy(&buf).into_owned());
    }
    Some(args)
}

fn bulk(s: &str) -> Vec<u8> {
    let mut out = format!("${}\r\n", s.len()).into_bytes();
    out.extend_from_slice(s.as_bytes());
    out.extend_from_slice(b"\r\n");
    out
}

fn simple(s: &str) -> Vec<u8> {
    format!("+{s}\r\n").into_bytes()
}

fn error(s: &str) -> Vec<u8> {
    format!("-{s}\r\n").into_bytes()
}

fn redacted(args: &[String]) -> Vec<String> {
    let up: Vec<String> = args.iter().map(|a| a.to_ascii_uppercase()).collect();
    let mut out = args.to_vec();
    if up.first().map(String::as_str) == Some("AUTH") {
        for a in out.iter_mut().skip(1) {
            *a = "<redacted>".into();
        }
    }
    if up.len() >= 4
        && up[0] == "CONFIG"
        && up[1] == "SET"
        && matches!(up[2].as_str(), "MASTERAUTH" | "REQUIREPASS" | "USERPASS")
    {
        out[3] = "<redacted>".into();
    }
    out
}

async fn serve(sock: TcpStream, state: Arc<Mutex<PikaState>>, port: u16) {
    let (r, mut w) = sock.into_split();
    let mut r = BufReader::new(r);
    let mut authed = false;
    while let Some(args) = read_command(&mut r).await {
        if args.is_empty() {
            continue;
        }
        let (reply, close) = {
            let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
            st.commands.push(redacted(&args));
            if st.silent {
                continue;
            }
            handle(&mut st, &args, &mut authed, port)
        };
        if w.write_all(&reply).await.is_err() || close {
            return;
        }
    }
}

/// One command against the state → (reply bytes, close connection).
fn handle(st: &mut PikaState, args: &[String], authed: &mut bool, port: u16) -> (Vec<u8>, bool) {
    let name = args[0].to_ascii_lowercase();
    let rest = &args[1..];
    if name == "auth" {
        return (auth(st, rest, authed), false);
    }
    if name == "quit" {
        return (simple("OK"), true);
    }
    if st.requirepass.is_some() && !*authed {
        return (error("ERR NOAUTH Authentication required."), false);
    }
    let reply = match name.as_str() {
        "ping" => simple("PONG"),
        "info" => {
            let section = rest
                .first()
                .map(|s| s.to_ascii_lowercase())
                .unwrap_or_default();
            let text = match section.as_str() {
                "server" => st.info_server(port),
                "replication" => {
                    if st.reattach_left > 0 {
                        st.reattach_left -= 1;
                        if st.reattach_left == 0 && st.role == PeerRole::Slave {
                            st.link = st.link_after_slaveof;
                        }
                    }
                    st.info_replication()
                }
                // BGSAVE finishes at once here (real Pika 4.0.1 answers the same fields).
                "stats" => "# Stats\r\nis_bgsaving:No\r\n".to_string(),
                "data" => "# Data\r\ndb_size:0\r\n".to_string(),
                "" | "all" => format!("{}\r\n{}", st.info_server(port), st.info_replication()),
                _ => String::new(),
            };
            bulk(&text)
        }
        "slaveof" => {
            let reply = slaveof(st, rest, port);
            if st.drop_slaveof_replies > 0 {
                st.drop_slaveof_replies -= 1;
                return (Vec::new(), true);
            }
            reply
        }
        "bgsave" => {
            st.bgsaves += 1;
            simple("Background saving started")
        }
        "config" => config(st, rest),
        // Pika 4.x ACLs, as far as the write fence uses them (a fenced `default` user gets
        // NOPERM on writes; real Pika 4.0.1 answers `+OK` to both rules).
        "acl" if st.family.starts_with("4.") => {
            let words: Vec<String> = rest.iter().map(|w| w.to_ascii_lowercase()).collect();
            let words: Vec<&str> = words.iter().map(String::as_str).collect();
            match words.as_slice() {
                ["setuser", "default", "-@write"] => {
                    st.fenced = true;
                    simple("OK")
                }
                ["setuser", "default", "+@write"] => {
                    st.fenced = false;
                    simple("OK")
                }
                _ => error("ERR unsupported ACL subcommand in the scripted peer"),
            }
        }
        "set" if st.fenced => error("NOPERM this user has no permissions to run the 'set' command"),
        "set" => {
            if st.role == PeerRole::Slave {
                error("ERR READONLY You can't write against a read only replica.")
            } else {
                simple("OK")
            }
        }
        "client" => {
            let sub = rest
                .first()
                .map(|s| s.to_ascii_lowercase())
                .unwrap_or_default();
            let words: Vec<String> = rest.iter().map(|w| w.to_ascii_lowercase()).collect();
            let words: Vec<&str> = words.iter().map(String::as_str).collect();
            match (sub.as_str(), words.as_slice()) {
                ("getname", _) => bulk(""),
                // Real Pika 4.0.1: `+OK` (it closes the other normal clients asynchronously).
                // Before 3.5.5 only `CLIENT KILL ip:port|all` exists.
                ("kill", ["kill", "type", "normal" | "pubsub"]) if st.family.starts_with("4.") => {
                    simple("OK")
                }
                ("kill", ["kill", "type", ..]) => {
                    error("ERR Syntax error, try CLIENT (LIST [order by [addr|idle]| KILL ip:port)")
                }
                _ => error(&format!("ERR unknown command \"client {sub}\"")),
            }
        }
        // Pika 3.5.1+; a slave answers READONLY (seen on the real 4.0.1).
        "clearreplicationid" if st.family != "3.3" && st.family != "3.3.6" => {
            if st.role == PeerRole::Slave {
                error("ERR READONLY You can't write against a read only replica.")
            } else {
                simple("OK")
            }
        }
        // Pika has neither ROLE nor REPLICAOF (pika.md §3); everything else is unknown too.
        _ => error(&format!("ERR unknown command \"{name}\"")),
    };
    (reply, false)
}

fn auth(st: &PikaState, rest: &[String], authed: &mut bool) -> Vec<u8> {
    let pw = match rest {
        [pw] => pw,
        [user, pw] if user == "default" => pw,
        [_, _] => return error("WRONGPASS invalid username-password pair or user is disabled."),
        _ => return error("ERR wrong number of arguments for 'auth' command"),
    };
    match &st.requirepass {
        None => error("ERR Client sent AUTH, but no password is set"),
        Some(p) if p == pw => {
            *authed = true;
            simple("OK")
        }
        Some(_) => error("WRONGPASS invalid username-password pair or user is disabled."),
    }
}

/// Pika's `SlaveofCmd` (pika.md §2.1–§2.2).
fn slaveof(st: &mut PikaState, rest: &[String], port: u16) -> Vec<u8> {
    let wrong_args = || error("ERR wrong number of arguments for 'slaveof' command");
    if rest.len() < 2 || rest.len() > 3 {
        return wrong_args();
    }
    if rest.len() == 2 && rest[0].eq_ignore_ascii_case("no") && rest[1].eq_ignore_ascii_case("one")
    {
        st.role = PeerRole::Master;
        if let Some(m) = st.master.take() {
            st.previous_master = Some(m);
        }
        st.last_force = false;
        return simple("OK");
    }
    let force = match rest.get(2) {
        None => false,
        Some(w) if w.eq_ignore_ascii_case("force") => true,
        Some(_) => return wrong_args(),
    };
    let host = rest[0].clone();
    let Ok(mport) = rest[1].parse::<i64>() else {
        return error("ERR value is not an integer or out of range");
    };
    if mport <= 0 || mport > u16::MAX as i64 {
        return error("ERR value is not an integer or out of range");
    }
    let mport = mport as u16;
    if !st.slaves.is_empty() {
        match st.slaves_linger.as_mut() {
            Some(0) => st.slaves.clear(),
            Some(n) => {
                *n -= 1;
                if *n == 0 {
                    // This refusal was the last one; the slave entries are gone afterwards.
                    st.slaves.clear();
                    st.slaves_linger = None;
                }
                return error("ERR already master of others, invalid usage");
            }
            None => return error("ERR already master of others, invalid usage"),
        }
    }
    if mport == port && matches!(host.as_str(), "127.0.0.1" | "localhost") {
        return error("ERR The master ip:port and the slave ip:port are the same");
    }
    if st.role == PeerRole::Slave && st.master.as_ref() == Some(&(host.clone(), mport)) {
        // Already a slave of exactly that: a silent no-op, even with a broken link.
        return simple("OK");
    }
    st.role = PeerRole::Slave;
    st.master = Some((host, mport));
    st.last_force = force;
    let auth_ok = match &st.expected_masterauth {
        Some(e) => st.masterauth.as_ref() == Some(e),
        None => true,
    };
    st.link = if !auth_ok || (st.handshake_never_retries && !force) {
        PeerLink::Down
    } else if st.reattach_refusals > 0 && st.previous_master == st.master {
        st.reattach_left = st.reattach_refusals;
        PeerLink::Down
    } else {
        st.link_after_slaveof
    };
    simple("OK")
}

fn config(st: &mut PikaState, rest: &[String]) -> Vec<u8> {
    let sub = rest
        .first()
        .map(|s| s.to_ascii_lowercase())
        .unwrap_or_default();
    match (sub.as_str(), rest.len()) {
        ("set", 3) => {
            let key = rest[1].to_ascii_lowercase();
            match key.as_str() {
                "masterauth" => {
                    st.masterauth = Some(rest[2].clone());
                    simple("OK")
                }
                "requirepass" => {
                    st.requirepass = Some(rest[2].clone()).filter(|p| !p.is_empty());
                    simple("OK")
                }
                "slave-read-only" => error("ERR Unsupported CONFIG parameter: slave-read-only"),
                "dump-prefix" => {
                    st.dump_prefix = rest[2].clone();
                    simple("OK")
                }
                _ => simple("OK"),
            }
        }
        ("get", 2) => {
            let key = rest[1].to_ascii_lowercase();
            let value = match key.as_str() {
                "slaveof" => st
                    .master
                    .as_ref()
                    .map(|(h, p)| format!("{h}:{p}"))
                    .unwrap_or_default(),
                "binlog-file-size" => "104857600".into(),
                // Where BGSAVE writes (pika.conf defaults); the name is kept as set.
                "dump-path" => "./dump/".into(),
                "dump-prefix" => st.dump_prefix.clone(),
                _ => return b"*0\r\n".to_vec(),
            };
            let mut out = b"*2\r\n".to_vec();
            out.extend(bulk(&key));
            out.extend(bulk(&value));
            out
        }
        ("rewrite", 1) => {
            if st.rewrite_fails {
                error("ERR Rewire CONFIG fail")
            } else {
                st.rewrites += 1;
                if st.family != "3.3" || st.conf_has_slaveof_line {
                    st.persisted_master = st.master.clone();
                }
                simple("OK")
            }
        }
        _ => error("ERR wrong number of arguments for 'config' command"),
    }
}
