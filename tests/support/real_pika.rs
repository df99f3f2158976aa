//! Real Pika server processes for integration tests (the binary from `PIKA_BIN`, in CI
//! `../shared/pika/bin/pika`).
//!
//! Each node runs from its own copy of the stock `pika.conf` (`PIKA_CONF`, default: the
//! `pika.conf` beside the binary's folder) in its own temp dir, with its port, paths,
//! `daemonize : no`, small write buffers and `network-interface : lo` (without it Pika
//! replaces `127.0.0.1` in `SLAVEOF` by the address of the first network interface, and
//! replication traffic would leave loopback). `restart()` starts again from the node's CURRENT
//! `pika.conf`, so what `CONFIG REWRITE` persisted is what the node comes back with.
//!
//! Ports: Pika also listens on port + 2000 (replication, on every interface) and port + 10001
//! (rsync). A node's port is picked at random in 12000..=22000 (so the derived ports stay below
//! the ephemeral range, 32768 and up) with all three ports checked free; a start that still
//! clashes is retried on another port. Processes are SIGKILLed and dirs removed on drop, also
//! when a test panics. Every wait is bounded.
//!
//! `PikaOptions::netns` runs the node inside a network namespace (tests/support/netns.rs):
//! `ip netns exec <ns> pika`, `network-interface` the namespace's veth, the node reached on
//! that veth's address; `PikaOptions::port` then fixes the port (the caller checked it and
//! its derived ports free where it needs them).

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pika_remedy::model::Addr;

use super::ports;
use super::redis::{answered_by, info_field, resp_calls_at, wait_for, wait_until};

/// Pika answers PING ~0.4 s after start; on a loaded 2-core machine give it more.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// A 1 + 2 set on loopback syncs in ~1.5 s.
pub const LINK_TIMEOUT: Duration = Duration::from_secs(30);

/// The Pika binary, or `None` outside CI when `PIKA_BIN` is not set (the caller then skips
/// with a message). Under `CI=true` a missing binary is a failure naming `PIKA_BIN`.
pub fn pika_bin() -> Option<PathBuf> {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    match std::env::var_os("PIKA_BIN") {
        Some(p) if !p.is_empty() => {
            let p = PathBuf::from(p);
            assert!(
                p.is_file(),
                "PIKA_BIN={} is not a file (point PIKA_BIN at a Pika server binary)",
                p.display()
            );
            Some(p)
        }
        _ if ci => panic!(
            "CI=true and PIKA_BIN is not set: the real-Pika suite must run in CI \
             (PIKA_BIN=../shared/pika/bin/pika; `make test` sets it when that file exists)"
        ),
        _ => None,
    }
}

/// `Some(bin)`, or prints why the test is skipped (outside CI only) and returns `None`.
pub fn pika_or_skip(test: &str) -> Option<PathBuf> {
    let bin = pika_bin();
    if bin.is_none() {
        eprintln!(
            "SKIPPED {test}: set PIKA_BIN to a Pika server binary to run the real-Pika suite"
        );
    }
    bin
}

/// The stock config: `PIKA_CONF`, else `<bin dir>/../pika.conf`, else `<bin dir>/pika.conf`.
pub fn stock_conf(bin: &Path) -> PathBuf {
    if let Some(p) = std::env::var_os("PIKA_CONF").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let dir = bin.parent().unwrap_or(Path::new("."));
    for c in [dir.join("../pika.conf"), dir.join("pika.conf")] {
        if c.is_file() {
            return c;
        }
    }
    panic!(
        "no pika.conf beside {} (set PIKA_CONF to Pika's stock config file)",
        bin.display()
    );
}

fn port_free(port: u16) -> bool {
    // The replication port binds every interface, so check the wildcard address.
    std::net::TcpListener::bind(("0.0.0.0", port)).is_ok()
        && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

static PICKS: AtomicU64 = AtomicU64::new(0);

/// A client port in 12000..=22000 whose derived ports (+2000, +10001) are free too.
pub fn free_pika_port() -> u16 {
    for _ in 0..200 {
        let n = PICKS.fetch_add(1, Ordering::Relaxed);
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos() as u64)
            .unwrap_or(0)
            ^ (u64::from(std::process::id()) << 16)
            ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let port = 12000 + (seed % 10001) as u16;
        let derived = [port, port + 2000, port + 10001];
        if derived.iter().all(|&p| port_free(p)) && derived.iter().all(|&p| ports::claim(p)) {
            return port;
        }
    }
    panic!("no free Pika port triple (p, p+2000, p+10001) in 12000..=22000 after 200 tries");
}

/// How to start one node.
#[derive(Clone, Debug, Default)]
pub struct PikaOptions {
    /// `requirepass` (and `masterauth`, which Pika requires to be equal across the group).
    pub password: Option<String>,
    /// `databases : N` (default 1).
    pub databases: Option<u32>,
    /// `slaveof : 127.0.0.1:<port>`.
    pub slaveof: Option<u16>,
    /// Extra `key : value` settings (replace the stock line of the same key).
    pub extra: Vec<(String, String)>,
    /// Run inside this network namespace instead of on loopback.
    pub netns: Option<NsPlace>,
    /// This port instead of a random free one (no retry on another port).
    pub port: Option<u16>,
}

/// Where a node inside a network namespace runs: the namespace, its interface and address.
#[derive(Clone, Debug)]
pub struct NsPlace {
    pub ns: String,
    pub iface: String,
    pub ip: String,
}

/// One real Pika process. Killed (SIGKILL) and its dir removed on drop.
pub struct PikaNode {
    port: u16,
    /// Where clients reach it: 127.0.0.1, or the namespace's address.
    host: String,
    netns: Option<String>,
    password: Option<String>,
    dir: tempfile::TempDir,
    conf: PathBuf,
    bin: PathBuf,
    child: Option<Child>,
}

/// `stock` with every `key : value` of `set` replacing the stock line (commented or not) of
/// that key, or appended.
fn render_conf(stock: &str, set: &[(String, String)]) -> String {
    let mut out = Vec::new();
    for line in stock.lines() {
        let key = line.split(':').next().unwrap_or("").trim();
        if set.iter().any(|(k, _)| k == key) {
            continue;
        }
        out.push(line.to_string());
    }
    for (k, v) in set {
        out.push(format!("{k} : {v}"));
    }
    out.join("\n") + "\n"
}

impl PikaNode {
    pub fn start(bin: &Path, opts: PikaOptions) -> PikaNode {
        let stock = std::fs::read_to_string(stock_conf(bin)).expect("read stock pika.conf");
        let mut last = String::new();
        let attempts = if opts.port.is_some() { 1 } else { 3 };
        for _ in 0..attempts {
            let dir = tempfile::Builder::new()
                .prefix("pika-remedy-pika-")
                .tempdir()
                .expect("temp dir");
            let port = opts.port.unwrap_or_else(free_pika_port);
            let d = dir.path();
            let path = |sub: &str| format!("{}/{sub}/", d.display());
            let mut set: Vec<(String, String)> = vec![
                ("port".into(), port.to_string()),
                ("daemonize".into(), "no".into()),
                (
                    "network-interface".into(),
                    opts.netns.as_ref().map_or("lo".into(), |n| n.iface.clone()),
                ),
                ("log-path".into(), path("log")),
                ("db-path".into(), path("db")),
                ("dump-path".into(), path("dump")),
                ("db-sync-path".into(), path("dbsync")),
                ("pidfile".into(), format!("{}/pika.pid", d.display())),
                ("write-buffer-size".into(), "16M".into()),
                ("max-write-buffer-size".into(), "64M".into()),
                ("maxclients".into(), "10000".into()),
                // Fewer threads than the stock file: the tests run on 2 cores.
                ("thread-pool-size".into(), "2".into()),
                ("sync-thread-num".into(), "2".into()),
                ("databases".into(), opts.databases.unwrap_or(1).to_string()),
            ];
            if let Some(pw) = &opts.password {
                set.push(("requirepass".into(), pw.clone()));
                set.push(("masterauth".into(), pw.clone()));
            }
            if let Some(m) = opts.slaveof {
                set.push(("slaveof".into(), format!("127.0.0.1:{m}")));
            }
            for (k, v) in &opts.extra {
                set.retain(|(key, _)| key != k);
                set.push((k.clone(), v.clone()));
            }
            let conf = d.join("pika.conf");
            std::fs::write(&conf, render_conf(&stock, &set)).expect("write pika.conf");
            let mut node = PikaNode {
                port,
                host: opts
                    .netns
                    .as_ref()
                    .map_or("127.0.0.1".into(), |n| n.ip.clone()),
                netns: opts.netns.as_ref().map(|n| n.ns.clone()),
                password: opts.password.clone(),
                dir,
                conf,
                bin: bin.to_path_buf(),
                child: None,
            };
            match node.spawn() {
                Ok(()) => return node,
                Err(e) => last = e,
            }
        }
        panic!("pika did not start after {attempts} attempts: {last}");
    }

    fn spawn(&mut self) -> Result<(), String> {
        let out =
            std::fs::File::create(self.dir.path().join("stdout.log")).map_err(|e| e.to_string())?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = match &self.netns {
            // `ip netns exec` execs: the child's pid is Pika's.
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&self.bin);
                c
            }
            None => Command::new(&self.bin),
        };
        let child = cmd
            .arg("-c")
            .arg(&self.conf)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", self.bin.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    self.child = None;
                    return Err(format!(
                        "pika on port {} exited with {status}; log:\n{}",
                        self.port,
                        self.log_tail()
                    ));
                }
            }
            if self.try_cmd(&["PING"]).is_ok_and(|r| r == "PONG") {
                let pid = self.child.as_ref().map(Child::id);
                if let Err(e) = answered_by(pid, self.try_cmd(&["INFO", "server"])) {
                    self.kill9();
                    return Err(format!("port {}: {e}", self.port));
                }
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill9();
                return Err(format!(
                    "pika on port {} did not answer PING within {START_TIMEOUT:?}; log:\n{}",
                    self.port,
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last lines of the process output and of Pika's INFO/WARNING log files.
    pub fn log_tail(&self) -> String {
        let mut text =
            std::fs::read_to_string(self.dir.path().join("stdout.log")).unwrap_or_default();
        if let Ok(rd) = std::fs::read_dir(self.dir.path().join("log")) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.ends_with(".INFO") || name.ends_with(".WARNING") || name.contains(".log.") {
                    text.push_str(&format!("--- {name}\n"));
                    text.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
                }
            }
        }
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> Addr {
        Addr::new(&self.host, self.port)
    }

    /// The process id while it runs (the Pika process itself, also inside a namespace).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn conf_text(&self) -> String {
        std::fs::read_to_string(&self.conf).expect("read pika.conf")
    }

    pub fn try_cmd(&self, args: &[&str]) -> Result<String, String> {
        resp_calls_at(&self.host, self.port, self.password.as_deref(), &[args])
    }

    pub fn cmd(&self, args: &[&str]) -> String {
        self.try_cmd(args)
            .unwrap_or_else(|e| panic!("{args:?} on {}:{}: {e}", self.host, self.port))
    }

    pub fn info_replication(&self) -> String {
        self.cmd(&["INFO", "replication"])
    }

    pub fn role(&self) -> String {
        info_field(&self.info_replication(), "role").unwrap_or_default()
    }

    /// A slave of 127.0.0.1:`master_port` with `master_link_status:up` and every DB `connected`.
    pub fn is_linked_to(&self, master_port: u16) -> bool {
        let Ok(info) = self.try_cmd(&["INFO", "replication"]) else {
            return false;
        };
        info_field(&info, "role").as_deref() == Some("slave")
            && info_field(&info, "master_port").as_deref() == Some(&master_port.to_string())
            && info_field(&info, "master_link_status").as_deref() == Some("up")
            && info
                .lines()
                .map(str::trim_end)
                .filter(|l| {
                    l.starts_with("db") && !l.contains("binlog_offset") && !l.starts_with("db_repl")
                })
                .all(|l| l.ends_with(":connected"))
    }

    /// SIGKILL and reap (a crash). Idempotent.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start again from the node's CURRENT pika.conf on the same port (kills first). The
    /// derived ports of a killed Pika can take a moment to be free again: retried, bounded.
    pub fn restart(&mut self) {
        self.kill9();
        let mut last = String::new();
        for _ in 0..5 {
            let p = self.port;
            // Inside a namespace the root namespace's ports say nothing (a proxy may hold them).
            if self.netns.is_none() {
                wait_until(Duration::from_secs(10), || {
                    port_free(p) && port_free(p + 2000) && port_free(p + 10001)
                });
            }
            match self.spawn() {
                Ok(()) => return,
                Err(e) => {
                    last = e;
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
        }
        panic!("restart of pika {}:{} failed: {last}", self.host, self.port);
    }
}

impl Drop for PikaNode {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A Pika master plus N slaves, all linked.
pub struct PikaSet {
    pub master: PikaNode,
    pub replicas: Vec<PikaNode>,
    password: Option<String>,
    secrets: tempfile::TempDir,
}

impl PikaSet {
    /// Start the master, then each slave in turn (waiting for each link: two first syncs to a
    /// fresh master microseconds apart can be given different ReplicationIDs, pika.md A.13).
    pub fn start(bin: &Path, replicas: usize, opts: PikaOptions) -> PikaSet {
        let master = PikaNode::start(
            bin,
            PikaOptions {
                slaveof: None,
                ..opts.clone()
            },
        );
        let mut reps = Vec::new();
        for _ in 0..replicas {
            let r = PikaNode::start(
                bin,
                PikaOptions {
                    slaveof: Some(master.port()),
                    ..opts.clone()
                },
            );
            let mport = master.port();
            let mut r = r;
            // A first sync can stall in one DB (seen: `db1:connecting`, `kWaitReply`, for 30 s+
            // with 3 DBs on a loaded machine); a restart of the slave starts it afresh. Once.
            if !wait_until(LINK_TIMEOUT / 2, || r.is_linked_to(mport)) {
                eprintln!(
                    "pika slave {} not linked after {:?}, restarting it once: {}",
                    r.port(),
                    LINK_TIMEOUT / 2,
                    r.try_cmd(&["INFO", "replication"])
                        .unwrap_or_default()
                        .replace("\r\n", " ")
                );
                r.restart();
            }
            if !wait_until(LINK_TIMEOUT, || r.is_linked_to(mport)) {
                panic!(
                    "pika slave {} did not link to {}: {}\nlog:\n{}",
                    r.port(),
                    mport,
                    r.try_cmd(&["INFO", "replication"]).unwrap_or_default(),
                    r.log_tail()
                );
            }
            reps.push(r);
        }
        let secrets = tempfile::Builder::new()
            .prefix("pika-remedy-secrets-")
            .tempdir()
            .expect("temp dir");
        if let Some(p) = &opts.password {
            std::fs::write(secrets.path().join("password"), p).expect("write password file");
        }
        let s = PikaSet {
            master,
            replicas: reps,
            password: opts.password.clone(),
            secrets,
        };
        s.wait_linked(LINK_TIMEOUT);
        s
    }

    pub fn wait_linked(&self, timeout: Duration) {
        let mport = self.master.port();
        let n = self.replicas.len().to_string();
        wait_for(timeout, "all pika slave links up", || {
            self.replicas.iter().all(|r| r.is_linked_to(mport))
                && self
                    .master
                    .try_cmd(&["INFO", "replication"])
                    .is_ok_and(|i| {
                        info_field(&i, "connected_slaves").as_deref() == Some(n.as_str())
                    })
        });
    }

    pub fn nodes(&self) -> Vec<&PikaNode> {
        std::iter::once(&self.master)
            .chain(self.replicas.iter())
            .collect()
    }

    /// Every node, master first, mutable (to kill or restart by index: 0 = master).
    pub fn node_mut(&mut self, i: usize) -> &mut PikaNode {
        if i == 0 {
            &mut self.master
        } else {
            &mut self.replicas[i - 1]
        }
    }

    pub fn addrs(&self) -> Vec<Addr> {
        self.nodes().iter().map(|n| n.addr()).collect()
    }

    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    pub fn password_file(&self) -> PathBuf {
        self.secrets.path().join("password")
    }

    /// A `[[cluster]]` TOML block for this set (password via `file = …`).
    pub fn cluster_toml(&self, name: &str) -> String {
        let mut s = format!("[[cluster]]\nname = \"{name}\"\n");
        if self.password.is_some() {
            s.push_str(&format!(
                "password = {{ file = \"{}\" }}\n",
                self.password_file().display()
            ));
        }
        let nodes: Vec<String> = self
            .addrs()
            .iter()
            .map(|a| format!("{{ addr = \"{a}\" }}"))
            .collect();
        s.push_str(&format!("nodes = [{}]\n", nodes.join(", ")));
        s
    }

    /// The node (by index, 0 = master as started) whose address is `addr`.
    pub fn index_of(&self, addr: &str) -> usize {
        self.nodes()
            .iter()
            .position(|n| n.addr().to_string() == addr)
            .unwrap_or_else(|| panic!("{addr} is not a node of this set"))
    }
}
