//! Real `redis-server` processes for integration tests.
//!
//! Every node runs from a config FILE in its own temp dir, so `CONFIG REWRITE` works and a
//! `restart()` (same file, same port) sees what the rewrite persisted: that is what the
//! failover tests check. Processes are SIGKILLed and temp dirs removed on drop, also when a
//! test panics. Every wait is bounded.
//!
//! Everything here is synchronous (std processes and a tiny blocking RESP client) so it works
//! from plain `#[test]`s and from `#[tokio::test]`s alike (calls are short and bounded).

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pika_remedy::model::Addr;

/// How long a started server gets to answer PING.
pub const START_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a cluster gets until every replica link is up.
pub const LINK_TIMEOUT: Duration = Duration::from_secs(15);
/// Socket timeout of the blocking RESP client.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// Absolute path of `bin` (searched in PATH, then /usr/bin, /usr/sbin). Panics naming the
/// Debian package if it is missing: a missing binary is a failed test, never a skipped one.
pub fn require_binary(bin: &str, debian_package: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.push("/usr/bin".into());
    dirs.push("/usr/sbin".into());
    for d in dirs {
        let p = d.join(bin);
        if p.is_file() {
            return p;
        }
    }
    panic!("required binary `{bin}` not found in PATH; install the Debian package `{debian_package}` (apt-get install -y {debian_package})");
}

pub use super::ports::free_port;

/// Whether the server that answered on a just-picked port is the process we spawned (`pid`),
/// from its `INFO server` reply. Between `free_port` releasing a port and our server binding
/// it, another listener in the same test binary (a scripted peer binding port 0) can take it:
/// our server then exits with "address in use", but the other listener has already answered
/// `PING`, and the test would run against the wrong server.
pub fn answered_by(pid: Option<u32>, info: Result<String, String>) -> Result<(), String> {
    let info = info.map_err(|e| format!("INFO server after PING: {e}"))?;
    let theirs = info_field(&info, "process_id");
    match (pid, theirs.as_deref().and_then(|t| t.parse::<u32>().ok())) {
        (Some(ours), Some(t)) if ours == t => Ok(()),
        (ours, _) => Err(format!(
            "answered by another process (process_id {}, ours {ours:?}); the port was taken",
            theirs.as_deref().unwrap_or("missing")
        )),
    }
}

/// Poll `cond` every 50 ms until it holds or `timeout` passes. Returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Like `wait_until`, but panics with `what` on timeout.
pub fn wait_for(timeout: Duration, what: &str, cond: impl FnMut() -> bool) {
    assert!(
        wait_until(timeout, cond),
        "timed out after {timeout:?} waiting for: {what}"
    );
}

// ---------------------------------------------------------------------------------------------
// A minimal blocking RESP2 client (no dependency on the code under test).

fn encode(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// One RESP2 reply rendered as text: simple/bulk strings as-is, integers in decimal, nil as
/// `(nil)`, arrays as their elements joined by `\n`. Error replies are `Err("ERR …")`.
fn read_reply(r: &mut impl BufRead) -> Result<String, String> {
    let mut line = String::new();
    r.read_line(&mut line).map_err(|e| format!("read: {e}"))?;
    if line.is_empty() {
        return Err("connection closed".into());
    }
    let line = line.trim_end_matches(['\r', '\n']);
    let (kind, rest) = line.split_at(1);
    match kind {
        "+" => Ok(rest.to_string()),
        "-" => Err(rest.to_string()),
        ":" => Ok(rest.to_string()),
        "$" => {
            let n: i64 = rest
                .parse()
                .map_err(|_| format!("bad bulk length {rest:?}"))?;
            if n < 0 {
                return Ok("(nil)".into());
            }
            let mut buf = vec![0u8; n as usize + 2];
            r.read_exact(&mut buf).map_err(|e| format!("read: {e}"))?;
            buf.truncate(n as usize);
            Ok(String::from_utf8_lossy(&buf).into_owned())
        }
        "*" => {
            let n: i64 = rest
                .parse()
                .map_err(|_| format!("bad array length {rest:?}"))?;
            let mut parts = Vec::new();
            for _ in 0..n.max(0) {
                // An error inside an array is kept as text.
                parts.push(read_reply(r).unwrap_or_else(|e| e));
            }
            Ok(parts.join("\n"))
        }
        _ => Err(format!("unexpected reply line {line:?}")),
    }
}

/// Open a connection to `127.0.0.1:port`, AUTH with `password` if given, send `args`, return
/// the reply. Any failure (connect, I/O, AUTH, error reply) is `Err(text)`.
pub fn resp_call(port: u16, password: Option<&str>, args: &[&str]) -> Result<String, String> {
    resp_calls(port, password, &[args])
}

/// Like [`resp_call`] with several commands on one connection (e.g. `SELECT` then `GET`);
/// returns the last reply, or the first error.
pub fn resp_calls(
    port: u16,
    password: Option<&str>,
    commands: &[&[&str]],
) -> Result<String, String> {
    resp_calls_at("127.0.0.1", port, password, commands)
}

/// Like [`resp_calls`] on `host` instead of 127.0.0.1.
pub fn resp_calls_at(
    host: &str,
    port: u16,
    password: Option<&str>,
    commands: &[&[&str]],
) -> Result<String, String> {
    let s = TcpStream::connect((host, port)).map_err(|e| format!("connect {host}:{port}: {e}"))?;
    s.set_read_timeout(Some(CLIENT_TIMEOUT))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(CLIENT_TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut w = s.try_clone().map_err(|e| e.to_string())?;
    let mut r = BufReader::new(s);
    if let Some(pw) = password {
        w.write_all(&encode(&["AUTH", pw]))
            .map_err(|e| format!("write: {e}"))?;
        read_reply(&mut r).map_err(|e| format!("AUTH failed: {e}"))?;
    }
    let mut last = Err("no command".to_string());
    for args in commands {
        w.write_all(&encode(args))
            .map_err(|e| format!("write: {e}"))?;
        last = Ok(read_reply(&mut r)?);
    }
    last
}

/// The value of `key:` in an INFO body (first occurrence), if present.
pub fn info_field(info: &str, key: &str) -> Option<String> {
    info.lines().find_map(|l| {
        l.trim_end_matches('\r')
            .strip_prefix(key)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(|v| v.trim().to_string())
    })
}

// ---------------------------------------------------------------------------------------------

/// How to start one node.
#[derive(Clone, Debug, Default)]
pub struct NodeOptions {
    /// `requirepass`.
    pub password: Option<String>,
    /// `masterauth` (defaults to `password` when that is set).
    pub masterauth: Option<String>,
    /// `replicaof 127.0.0.1 <port>`.
    pub replicaof: Option<u16>,
    /// Extra config lines, verbatim.
    pub extra: Vec<String>,
}

/// One `redis-server` process. Killed (SIGKILL) and its dir removed on drop.
pub struct RedisNode {
    port: u16,
    password: Option<String>,
    dir: tempfile::TempDir,
    conf: PathBuf,
    child: Option<Child>,
}

impl RedisNode {
    /// Start a plain master without password.
    pub fn start_master() -> RedisNode {
        RedisNode::start(NodeOptions::default())
    }

    /// Start a node; retries with a new port (up to 3 times) if the port was taken.
    pub fn start(opts: NodeOptions) -> RedisNode {
        let bin = require_binary("redis-server", "redis-server");
        let mut dir = tempfile::Builder::new()
            .prefix("pika-remedy-redis-")
            .tempdir()
            .expect("temp dir");
        let conf = dir.path().join("redis.conf");
        let mut last_err = String::new();
        for _ in 0..3 {
            let port = free_port();
            std::fs::write(&conf, config_text(port, dir.path(), &opts)).expect("write redis.conf");
            let mut node = RedisNode {
                port,
                password: opts.password.clone(),
                dir,
                conf: conf.clone(),
                child: None,
            };
            match node.spawn(&bin) {
                Ok(()) => return node,
                Err(e) => {
                    last_err = e;
                    dir = node.take_dir();
                }
            }
        }
        panic!("redis-server did not start after 3 attempts: {last_err}");
    }

    // Moves the temp dir out of a failed node (its Drop then has nothing to clean).
    fn take_dir(mut self) -> tempfile::TempDir {
        self.kill9();
        let placeholder = tempfile::tempdir().expect("temp dir");
        std::mem::replace(&mut self.dir, placeholder)
    }

    fn spawn(&mut self, bin: &Path) -> Result<(), String> {
        let child = Command::new(bin)
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", bin.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(status)) = c.try_wait() {
                    self.child = None;
                    return Err(format!(
                        "redis-server on port {} exited with {status}; log:\n{}",
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
                    "redis-server on port {} did not answer PING within {START_TIMEOUT:?}; log:\n{}",
                    self.port,
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The last lines of the server log (for failure messages).
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn addr(&self) -> Addr {
        Addr::new("127.0.0.1", self.port)
    }

    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// The node's temp dir (its config, data and log live here).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn conf_path(&self) -> &Path {
        &self.conf
    }

    /// Current content of the config file (after any `CONFIG REWRITE`).
    pub fn conf_text(&self) -> String {
        std::fs::read_to_string(&self.conf).expect("read redis.conf")
    }

    /// Send a command (authenticating if the node has a password). `Err` for error replies.
    pub fn try_cmd(&self, args: &[&str]) -> Result<String, String> {
        resp_call(self.port, self.password.as_deref(), args)
    }

    /// Send a command; panics on any error.
    pub fn cmd(&self, args: &[&str]) -> String {
        self.try_cmd(args)
            .unwrap_or_else(|e| panic!("{args:?} on 127.0.0.1:{}: {e}", self.port))
    }

    /// `INFO replication` text.
    pub fn info_replication(&self) -> String {
        self.cmd(&["INFO", "replication"])
    }

    /// `role:` from INFO replication (`master` / `slave`).
    pub fn role(&self) -> String {
        info_field(&self.info_replication(), "role").unwrap_or_default()
    }

    /// True if this node is a replica of 127.0.0.1:`master_port` with the link up.
    pub fn is_linked_to(&self, master_port: u16) -> bool {
        let Ok(info) = self.try_cmd(&["INFO", "replication"]) else {
            return false;
        };
        info_field(&info, "role").as_deref() == Some("slave")
            && info_field(&info, "master_port").as_deref() == Some(&master_port.to_string())
            && info_field(&info, "master_link_status").as_deref() == Some("up")
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGKILL and reap the process (no shutdown save, like a crash). Idempotent.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start again from the SAME config file on the SAME port (kills first if running). What a
    /// `CONFIG REWRITE` persisted is what the node comes back with. Panics if it does not answer.
    pub fn restart(&mut self) {
        self.kill9();
        let bin = require_binary("redis-server", "redis-server");
        let mut last = String::new();
        // The port is part of the cluster's identity, so a clash is retried, not re-picked.
        for _ in 0..3 {
            match self.spawn(&bin) {
                Ok(()) => return,
                Err(e) => {
                    last = e;
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
        panic!("restart of 127.0.0.1:{} failed: {last}", self.port);
    }
}

impl Drop for RedisNode {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn config_text(port: u16, dir: &Path, opts: &NodeOptions) -> String {
    let mut lines = vec![
        format!("port {port}"),
        "bind 127.0.0.1".to_string(),
        "protected-mode no".to_string(),
        "daemonize no".to_string(),
        format!("dir \"{}\"", dir.display()),
        format!("logfile \"{}\"", dir.join("redis.log").display()),
        "save \"\"".to_string(),
        "appendonly no".to_string(),
        // Redis 7 waits 5 s before a diskless full sync by default; tests need it now.
        "repl-diskless-sync-delay 0".to_string(),
        "enable-debug-command yes".to_string(),
        // The snapshot before a demotion sets `dbfilename` (a protected config in Redis 7).
        "enable-protected-configs local".to_string(),
    ];
    if let Some(pw) = &opts.password {
        lines.push(format!("requirepass \"{pw}\""));
    }
    if let Some(ma) = opts.masterauth.as_ref().or(opts.password.as_ref()) {
        lines.push(format!("masterauth \"{ma}\""));
    }
    if let Some(p) = opts.replicaof {
        lines.push(format!("replicaof 127.0.0.1 {p}"));
    }
    lines.extend(opts.extra.iter().cloned());
    lines.join("\n") + "\n"
}

/// A master plus N replicas (`replicaof` in their config files), all linked.
pub struct RedisCluster {
    pub master: RedisNode,
    pub replicas: Vec<RedisNode>,
    password: Option<String>,
    /// Holds the password file referenced by `cluster_toml`.
    secrets: tempfile::TempDir,
}

impl RedisCluster {
    /// Start and wait (≤ `LINK_TIMEOUT`) until every replica reports its link up and the
    /// master counts them all.
    pub fn start(replicas: usize, password: Option<&str>) -> RedisCluster {
        let pw = password.map(str::to_string);
        let master = RedisNode::start(NodeOptions {
            password: pw.clone(),
            ..NodeOptions::default()
        });
        let replicas: Vec<RedisNode> = (0..replicas)
            .map(|_| {
                RedisNode::start(NodeOptions {
                    password: pw.clone(),
                    replicaof: Some(master.port()),
                    ..NodeOptions::default()
                })
            })
            .collect();
        let secrets = tempfile::Builder::new()
            .prefix("pika-remedy-secrets-")
            .tempdir()
            .expect("temp dir");
        if let Some(p) = &pw {
            std::fs::write(secrets.path().join("password"), p).expect("write password file");
        }
        let c = RedisCluster {
            master,
            replicas,
            password: pw,
            secrets,
        };
        c.wait_linked(LINK_TIMEOUT);
        c
    }

    /// Wait until every replica is linked to the master and the master counts them.
    pub fn wait_linked(&self, timeout: Duration) {
        let mport = self.master.port();
        let n = self.replicas.len().to_string();
        let linked = wait_until(timeout, || {
            self.replicas.iter().all(|r| r.is_linked_to(mport))
                && self
                    .master
                    .try_cmd(&["INFO", "replication"])
                    .is_ok_and(|i| {
                        info_field(&i, "connected_slaves").as_deref() == Some(n.as_str())
                    })
        });
        if !linked {
            let mut why = String::new();
            for node in self.nodes() {
                let info = node
                    .try_cmd(&["INFO", "replication"])
                    .unwrap_or_else(|e| format!("INFO replication: {e}"));
                why.push_str(&format!(
                    "--- 127.0.0.1:{}\n{}\n{}\n",
                    node.port(),
                    info.trim(),
                    node.log_tail()
                ));
            }
            panic!("timed out after {timeout:?} waiting for: all replica links up\n{why}");
        }
    }

    /// Master first, then replicas in start order.
    pub fn nodes(&self) -> Vec<&RedisNode> {
        std::iter::once(&self.master)
            .chain(self.replicas.iter())
            .collect()
    }

    pub fn addrs(&self) -> Vec<Addr> {
        self.nodes().iter().map(|n| n.addr()).collect()
    }

    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// Path of a file holding the password (exists only if the cluster has one).
    pub fn password_file(&self) -> PathBuf {
        self.secrets.path().join("password")
    }

    /// A `[[cluster]]` TOML block for this cluster (password via `file = …`), plus
    /// `extra_nodes` (e.g. an address nothing listens on).
    pub fn cluster_toml(&self, name: &str, extra_nodes: &[Addr]) -> String {
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
            .chain(extra_nodes.iter())
            .map(|a| format!("{{ addr = \"{a}\" }}"))
            .collect();
        s.push_str(&format!("nodes = [{}]\n", nodes.join(", ")));
        s
    }
}
