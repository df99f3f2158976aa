//! `make bench`: failover and old-master demotion, pika-remedy through the real alert pipeline
//! (Prometheus 2.42 + Alertmanager 0.25 with the shipped rules and routes) side by side with
//! Redis Sentinel 7.0 (3 sentinels, quorum 2, down-after-milliseconds 1000, failover-timeout
//! 10000), on the same topology (redis-server master + 2 replicas), the same writer and the
//! same fault.
//!
//! Each run and each system: a writer `SET k:N` every 5 ms following the current master through
//! discovery (pika-remedy: `GET /v1/clusters/c` → record master; Sentinel: `SENTINEL
//! get-master-addr-by-name`, asked again after any failed write); `kill -9` the master; once the
//! writer's first write was acknowledged by the new master and the other replica follows it,
//! restart the old master from its original config (it comes back as an empty master) while a
//! stale client pinned to the OLD address keeps writing `SET stale:N`. A third client writes
//! `SET routed:N` through HAProxy (pika-remedy: the shipped `deploy/haproxy/haproxy.cfg` with
//! its route checks; Sentinel: the usual `tcp-check expect string role:master`), each
//! connection attributed to the server behind it (`CONFIG GET port`).
//!
//! Measured (all wall clock on this machine): kill → first acknowledged write on the new master,
//! kill → a replica reports role master (INFO polled every 10 ms), acknowledged writes lost
//! (acked keys missing on the final master), restart → old master role slave, restart → its link
//! up, stale writes acknowledged by the restarted old master (and how many of them after it
//! was seen demoted), writes through HAProxy acknowledged by the restarted old master.
//!
//! pika-remedy runs twice per run, both on the shipped alert pipeline: the default configuration
//! (`service.self_trigger = true`: its own poller starts the reconcile as soon as it sees the
//! master gone) and alerts only (`self_trigger = false`). The three systems run in a rotating
//! order in every run, and the kill comes after a random pause (uniform 0–500 ms, `BENCH_SEED`),
//! so it falls at a random phase of every poll, scrape and evaluation. `BENCH_RUNS` (or `RUNS`,
//! default 10) runs per system, pooled. Output: a markdown table on stdout and in docs/bench.md,
//! raw numbers in target/bench/failover.json.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};
use support::conn::Conn;
use support::prom::{
    event_line, parse_time, secs_between, Alertmanager, Coord, Prometheus, Remedy, RemedyOptions,
};
use support::redis::{free_port, info_field, require_binary, resp_call, RedisCluster};

const CLUSTER: &str = "c";
const WRITE_EVERY: Duration = Duration::from_millis(5);
/// Bound for every phase of a run (promotion, first ack, demotion, link up).
const PHASE_BOUND: Duration = Duration::from_secs(60);
/// The kill comes after a random pause up to this long (a random phase of every poll).
const KILL_JITTER_MS: u64 = 500;

/// A tiny deterministic generator (xorshift64*) for the jitter.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

static JITTER: Mutex<Rng> = Mutex::new(Rng(0x9E37_79B9_7F4A_7C15));

/// The next random pause before a kill (uniform 0–`KILL_JITTER_MS`).
fn jitter() -> Duration {
    let r = JITTER.lock().map(|mut g| g.next()).unwrap_or(0);
    Duration::from_millis(r % (KILL_JITTER_MS + 1))
}

// ---------------------------------------------------------------------------------------------
// A persistent RESP connection (the writer's), bounded by socket timeouts.

/// The writers' connection: 200 ms to connect, 500 ms per read or write.
fn open(port: u16) -> Result<Conn, String> {
    Conn::open_with(port, Duration::from_millis(200), Duration::from_millis(500))
}

/// How many of `keys` exist on 127.0.0.1:`port` (EXISTS in chunks).
fn count_existing(port: u16, keys: &[String]) -> Result<usize, String> {
    let mut n = 0usize;
    for chunk in keys.chunks(500) {
        let mut args = vec!["EXISTS"];
        args.extend(chunk.iter().map(String::as_str));
        n += resp_call(port, None, &args)?
            .parse::<usize>()
            .map_err(|e| e.to_string())?;
    }
    Ok(n)
}

// ---------------------------------------------------------------------------------------------
// Writers.

type Discover = Arc<dyn Fn() -> Option<u16> + Send + Sync>;

#[derive(Default)]
struct WriterState {
    acked: Vec<String>,
    failed: u64,
    /// Set by the main thread just before the kill: (when, old master port).
    killed: Option<(Instant, u16)>,
    /// First write acknowledged by a different master after the kill.
    first_ack: Option<(Instant, u16)>,
}

fn spawn_writer(
    discover: Discover,
    stop: Arc<AtomicBool>,
    st: Arc<Mutex<WriterState>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut conn: Option<(u16, Conn)> = None;
        let mut n: u64 = 0;
        let mut next = Instant::now();
        while !stop.load(Ordering::SeqCst) {
            next += WRITE_EVERY;
            if let Some(d) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            }
            if conn.is_none() {
                conn = discover().and_then(|p| open(p).ok().map(|c| (p, c)));
            }
            let Some((port, c)) = conn.as_mut() else {
                st.lock().map(|mut s| s.failed += 1).ok();
                continue;
            };
            n += 1;
            let key = format!("k:{n}");
            match c.set(&key, &n.to_string()) {
                Ok(()) => {
                    let now = Instant::now();
                    if let Ok(mut s) = st.lock() {
                        s.acked.push(key);
                        if let (Some((_, old)), None) = (s.killed, s.first_ack) {
                            if old != *port {
                                s.first_ack = Some((now, *port));
                            }
                        }
                    }
                }
                Err(_) => {
                    st.lock().map(|mut s| s.failed += 1).ok();
                    conn = None;
                }
            }
        }
    })
}

/// A client that never rediscovers: it keeps writing to the old master's address. `acked`
/// counts its acknowledged writes, `last_ack` holds when the latest one was.
fn spawn_stale_writer(
    port: u16,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    last_ack: Arc<Mutex<Option<Instant>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut conn: Option<Conn> = None;
        let mut n = 0u64;
        while !stop.load(Ordering::SeqCst) {
            std::thread::sleep(WRITE_EVERY);
            if conn.is_none() {
                conn = open(port).ok();
            }
            let Some(c) = conn.as_mut() else { continue };
            n += 1;
            match c.set(&format!("stale:{n}"), "x") {
                Ok(()) => {
                    acked.fetch_add(1, Ordering::SeqCst);
                    last_ack.lock().map(|mut l| *l = Some(Instant::now())).ok();
                }
                // READONLY once demoted (or a dropped connection): reconnect and keep trying.
                Err(_) => conn = None,
            }
        }
    })
}

/// A client through HAProxy's master port (the pooled client of `tests/haproxy.rs`): each
/// connection asks the server behind it for its port (`CONFIG GET port`; HAProxy in TCP mode
/// pins a connection to one server), a new connection every 10 writes. Records (port, when)
/// per acknowledged write.
fn spawn_routed_writer(
    proxy: u16,
    stop: Arc<AtomicBool>,
    acks: Arc<Mutex<Vec<(u16, Instant)>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut conn: Option<(Conn, u16)> = None;
        let mut n = 0u64;
        while !stop.load(Ordering::SeqCst) {
            std::thread::sleep(WRITE_EVERY);
            if conn.is_none() {
                conn = open(proxy).ok().and_then(|mut c| {
                    let p = c.call(&["CONFIG", "GET", "port"]).ok()?;
                    let p = p.split_whitespace().nth(1)?.parse().ok()?;
                    Some((c, p))
                });
            }
            let Some((c, p)) = conn.as_mut() else {
                continue;
            };
            n += 1;
            match c.set(&format!("routed:{n}"), "x") {
                Ok(()) => {
                    acks.lock().map(|mut a| a.push((*p, Instant::now()))).ok();
                    if n.is_multiple_of(10) {
                        conn = None;
                    }
                }
                Err(_) => conn = None,
            }
        }
    })
}

/// A running haproxy (Debian `haproxy`) with the given config, killed on drop.
struct Haproxy {
    child: Option<Child>,
    port: u16,
    _dir: tempfile::TempDir,
    /// The admin socket outside `_dir`, removed on drop.
    sock: Option<PathBuf>,
}

impl Haproxy {
    /// `text` must bind 127.0.0.1:`port`; `env`: variables the config reads.
    fn start(text: &str, port: u16, env: &[(&str, &str)]) -> Haproxy {
        let bin = require_binary("haproxy", "haproxy");
        let dir = tempfile::Builder::new()
            .prefix("pika-remedy-bench-haproxy-")
            .tempdir()
            .expect("temp dir");
        let conf = dir.path().join("haproxy.cfg");
        std::fs::write(&conf, text).expect("write haproxy.cfg");
        let log = std::fs::File::create(dir.path().join("haproxy.log")).expect("haproxy log");
        let mut cmd = Command::new(bin);
        cmd.arg("-db")
            .arg("-f")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn haproxy");
        let h = Haproxy {
            child: Some(child),
            port,
            _dir: dir,
            sock: None,
        };
        assert!(
            support::redis::wait_until(Duration::from_secs(10), || std::net::TcpStream::connect((
                "127.0.0.1",
                port
            ))
            .is_ok()),
            "haproxy did not listen on {port}"
        );
        h
    }

    /// The shipped `deploy/haproxy/haproxy.cfg` (pika-remedy's route checks), only addresses,
    /// ports and the socket path replaced.
    fn shipped(remedy_port: u16, nodes: &[String]) -> Haproxy {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let mut text = std::fs::read_to_string(dir.join("deploy/haproxy/haproxy.cfg"))
            .expect("read deploy/haproxy/haproxy.cfg");
        let (port, rport) = (free_port(), free_port());
        let sock = std::env::temp_dir().join(format!("pika-remedy-bench-{port}.sock"));
        let mut swaps = vec![
            (
                "/run/haproxy/pika-remedy.sock".to_string(),
                sock.display().to_string(),
            ),
            (
                "addr 127.0.0.1 port 9655".to_string(),
                format!("addr 127.0.0.1 port {remedy_port}"),
            ),
            ("bind :6380".to_string(), format!("bind 127.0.0.1:{port}")),
            (
                "uri-lf /v1/route/main/".to_string(),
                format!("uri-lf /v1/route/{CLUSTER}/"),
            ),
            ("bind :6381".to_string(), format!("bind 127.0.0.1:{rport}")),
        ];
        for (shipped, real) in ["10.0.0.11:9221", "10.0.0.12:9221", "10.0.0.13:9221"]
            .iter()
            .zip(nodes)
        {
            swaps.push((shipped.to_string(), real.clone()));
        }
        for (from, to) in swaps {
            assert!(text.contains(&from), "haproxy.cfg no longer has {from:?}");
            text = text.replace(&from, &to);
        }
        let mut h = Haproxy::start(&text, port, &[("PIKA_REMEDY_READ_TOKEN", READ_TOKEN)]);
        h.sock = Some(sock);
        h
    }

    /// The common recipe without pika-remedy: a TCP check that the node says `role:master`.
    fn role_check(nodes: &[u16]) -> Haproxy {
        let port = free_port();
        let mut text = [
            "defaults",
            "    mode tcp",
            "    timeout connect 1s",
            "    timeout client 1h",
            "    timeout server 1h",
            "    timeout check 1s",
            "listen redis_master",
            &format!("    bind 127.0.0.1:{port}"),
            "    option tcp-check",
            "    tcp-check send PING\\r\\n",
            "    tcp-check expect string +PONG",
            "    tcp-check send info\\ replication\\r\\n",
            "    tcp-check expect string role:master",
            "    tcp-check send QUIT\\r\\n",
            "    tcp-check expect string +OK",
        ]
        .join("\n");
        text.push('\n');
        for p in nodes {
            text.push_str(&format!(
                "    server n{p} 127.0.0.1:{p} check inter 250ms fastinter 250ms downinter 500ms rise 2 fall 1 on-marked-down shutdown-sessions\n"
            ));
        }
        Haproxy::start(&text, port, &[])
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(s) = self.sock.take() {
            let _ = std::fs::remove_file(s);
        }
    }
}

/// The read-only token HAProxy's checks send to pika-remedy's route endpoint.
const READ_TOKEN: &str = "bench-read-only-token";

// ---------------------------------------------------------------------------------------------
// Redis Sentinel.

struct Sentinel {
    child: Option<Child>,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Sentinel {
    fn start(master_port: u16) -> Sentinel {
        let bin = require_binary("redis-sentinel", "redis-sentinel");
        let dir = tempfile::Builder::new()
            .prefix("pika-remedy-sentinel-")
            .tempdir()
            .expect("temp dir");
        let port = free_port();
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\nprotected-mode no\ndaemonize no\ndir \"{}\"\nlogfile \"{}\"\n\
                 sentinel monitor mymaster 127.0.0.1 {master_port} 2\n\
                 sentinel down-after-milliseconds mymaster 1000\n\
                 sentinel failover-timeout mymaster 10000\n\
                 sentinel parallel-syncs mymaster 1\n",
                dir.path().display(),
                dir.path().join("sentinel.log").display()
            ),
        )
        .expect("write sentinel.conf");
        let child = Command::new(bin)
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-sentinel");
        let s = Sentinel {
            child: Some(child),
            port,
            _dir: dir,
        };
        assert!(
            support::redis::wait_until(Duration::from_secs(10), || resp_call(
                port,
                None,
                &["PING"]
            )
            .is_ok()),
            "sentinel on {port} did not start"
        );
        s
    }

    /// `SENTINEL master mymaster` as a map.
    fn master_info(&self) -> BTreeMap<String, String> {
        let text =
            resp_call(self.port, None, &["SENTINEL", "master", "mymaster"]).unwrap_or_default();
        let parts: Vec<&str> = text.lines().collect();
        parts
            .chunks(2)
            .filter(|c| c.len() == 2)
            .map(|c| (c[0].to_string(), c[1].to_string()))
            .collect()
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn sentinel_discover(ports: Vec<u16>) -> Discover {
    Arc::new(move || {
        for p in &ports {
            if let Ok(t) = resp_call(
                *p,
                None,
                &["SENTINEL", "get-master-addr-by-name", "mymaster"],
            ) {
                if let Some(port) = t.lines().nth(1).and_then(|p| p.parse().ok()) {
                    return Some(port);
                }
            }
        }
        None
    })
}

// ---------------------------------------------------------------------------------------------
// One measured fault (kill, failover, restart, demotion) — identical for every system.

#[derive(Default, Debug, Clone)]
struct Measured {
    kill_wall: Option<SystemTime>,
    restart_wall: Option<SystemTime>,
    kill_to_promotion: Option<f64>,
    kill_to_first_ack: Option<f64>,
    new_master: Option<u16>,
    restart_to_demoted: Option<f64>,
    restart_to_link_up: Option<f64>,
    acked: usize,
    lost: Option<usize>,
    stale_acked: u64,
    /// Of those, acknowledged after the old master was seen demoted (role slave).
    stale_acked_after_demotion: Option<u64>,
    /// Writes through HAProxy acknowledged by the restarted old master.
    routed_stale_acked: Option<u64>,
    /// Writes through HAProxy acknowledged in all.
    routed_acked: Option<u64>,
    failed_writes: u64,
    error: Option<String>,
}

fn role_of(port: u16) -> Option<(String, Option<u16>, bool)> {
    let info = resp_call(port, None, &["INFO", "replication"]).ok()?;
    Some((
        info_field(&info, "role")?,
        info_field(&info, "master_port").and_then(|p| p.parse().ok()),
        info_field(&info, "master_link_status").as_deref() == Some("up"),
    ))
}

/// Poll every 10 ms until `f` gives a value, bounded by `PHASE_BOUND`.
fn poll<T>(mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + PHASE_BOUND;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn measure(cl: &mut RedisCluster, discover: Discover, proxy: Option<&Haproxy>) -> Measured {
    let mut m = Measured::default();
    let old = cl.master.port();
    let replicas: Vec<u16> = cl.replicas.iter().map(|r| r.port()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let st = Arc::new(Mutex::new(WriterState::default()));
    let writer = spawn_writer(discover.clone(), stop.clone(), st.clone());
    let routed_acks = Arc::new(Mutex::new(Vec::new()));
    let routed = proxy.map(|h| spawn_routed_writer(h.port, stop.clone(), routed_acks.clone()));
    std::thread::sleep(Duration::from_millis(1000) + jitter());

    // Kill.
    let t_kill = Instant::now();
    st.lock().map(|mut s| s.killed = Some((t_kill, old))).ok();
    m.kill_wall = Some(SystemTime::now());
    cl.master.kill9();
    let promoted = poll(|| {
        replicas
            .iter()
            .find(|p| role_of(**p).is_some_and(|(r, _, _)| r == "master"))
            .copied()
    });
    let Some(new) = promoted else {
        m.error = Some("no replica promoted".into());
        stop.store(true, Ordering::SeqCst);
        let _ = writer.join();
        return m;
    };
    m.kill_to_promotion = Some(t_kill.elapsed().as_secs_f64());
    m.new_master = Some(new);
    let first = poll(|| st.lock().ok().and_then(|s| s.first_ack));
    m.kill_to_first_ack = first.map(|(t, _)| t.duration_since(t_kill).as_secs_f64());
    let other = *replicas.iter().find(|p| **p != new).unwrap_or(&new);
    let other_ok = poll(|| {
        role_of(other)
            .is_some_and(|(r, mp, up)| r == "slave" && mp == Some(new) && up)
            .then_some(())
    });
    if first.is_none() || other_ok.is_none() {
        m.error = Some(format!(
            "after promotion: first ack {}, other replica linked {}",
            first.is_some(),
            other_ok.is_some()
        ));
    }

    // Restart the old master from its original config, with a stale client pinned to it.
    let stale_stop = Arc::new(AtomicBool::new(false));
    let stale_acked = Arc::new(AtomicU64::new(0));
    let stale_last = Arc::new(Mutex::new(None));
    let stale = spawn_stale_writer(
        old,
        stale_stop.clone(),
        stale_acked.clone(),
        stale_last.clone(),
    );
    let t_restart = Instant::now();
    m.restart_wall = Some(SystemTime::now());
    cl.master.restart();
    m.restart_to_demoted = poll(|| {
        role_of(old)
            .is_some_and(|(r, _, _)| r == "slave")
            .then(|| t_restart.elapsed().as_secs_f64())
    });
    let acked_at_demotion = stale_acked.load(Ordering::SeqCst);
    m.restart_to_link_up = poll(|| {
        role_of(old)
            .is_some_and(|(r, mp, up)| r == "slave" && mp == Some(new) && up)
            .then(|| t_restart.elapsed().as_secs_f64())
    });
    stale_stop.store(true, Ordering::SeqCst);
    let _ = stale.join();
    m.stale_acked = stale_acked.load(Ordering::SeqCst);
    if m.restart_to_demoted.is_some() {
        m.stale_acked_after_demotion = Some(m.stale_acked - acked_at_demotion);
    }
    let _ = stale_last;
    // A little more writing on the final topology, then stop and count.
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::SeqCst);
    let _ = writer.join();
    if let Some(r) = routed {
        let _ = r.join();
        let acks = routed_acks.lock().map(|a| a.clone()).unwrap_or_default();
        m.routed_acked = Some(acks.len() as u64);
        m.routed_stale_acked = Some(
            acks.iter()
                .filter(|(p, t)| *p == old && *t >= t_restart)
                .count() as u64,
        );
    }
    let (keys, failed) = st
        .lock()
        .map(|s| (s.acked.clone(), s.failed))
        .unwrap_or_default();
    m.acked = keys.len();
    m.failed_writes = failed;
    let final_master = discover().unwrap_or(new);
    m.lost = count_existing(final_master, &keys)
        .ok()
        .map(|found| keys.len() - found);
    if m.restart_to_demoted.is_none() && m.error.is_none() {
        m.error = Some("old master not demoted within the bound".into());
    }
    m
}

// ---------------------------------------------------------------------------------------------
// pika-remedy: where the time goes, from Prometheus and the event log.

/// Polls Prometheus' alerts every 50 ms: first `activeAt` and first time seen firing, per
/// (alertname, instance).
fn spawn_alert_watch(
    prom_port: u16,
    stop: Arc<AtomicBool>,
    out: Arc<Mutex<BTreeMap<(String, String), String>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            if let Ok(r) = support::prom::get(prom_port, "/api/v1/alerts") {
                if let Ok(v) = r.json() {
                    for a in v["data"]["alerts"].as_array().cloned().unwrap_or_default() {
                        let key = (
                            a["labels"]["alertname"].as_str().unwrap_or("").to_string(),
                            a["labels"]["instance"].as_str().unwrap_or("").to_string(),
                        );
                        if let Ok(mut o) = out.lock() {
                            o.entry(key)
                                .or_insert_with(|| a["activeAt"].as_str().unwrap_or("").into());
                        }
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
}

fn step_millis(e: &Value) -> Vec<(String, f64)> {
    e["outcome"]["steps"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|s| {
            (
                s["step"]["step"].as_str().unwrap_or("?").to_string(),
                s["millis"].as_f64().unwrap_or(0.0) / 1000.0,
            )
        })
        .collect()
}

/// Breakdown of one remediation (seconds), from the fault to the action.
fn breakdown(
    fault: SystemTime,
    active_at: Option<&String>,
    event: Option<&Value>,
    alert: &str,
) -> BTreeMap<String, f64> {
    let mut b = BTreeMap::new();
    let Some(e) = event else { return b };
    let at = e["at"].as_str().and_then(parse_time);
    let total = e["outcome"]["millis"].as_f64().unwrap_or(0.0) / 1000.0;
    let steps = step_millis(e);
    let steps_sum: f64 = steps.iter().map(|(_, s)| s).sum();
    let started = at.map(|t| t - Duration::from_secs_f64(total));
    let active = active_at.and_then(|s| parse_time(s));
    let starts_at = e["alerts"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["alertname"] == alert))
        .and_then(|a| a["starts_at"].as_str())
        .and_then(parse_time);
    if let Some(a) = active {
        b.insert("detect (poll+scrape+eval)".into(), secs_between(fault, a));
    }
    if let (Some(a), Some(s)) = (active, starts_at) {
        b.insert("for".into(), secs_between(a, s));
    }
    if let (Some(s), Some(w)) = (starts_at, started) {
        b.insert("alertmanager → webhook".into(), secs_between(s, w));
    }
    b.insert("verify (observe+confirm+lock)".into(), total - steps_sum);
    b.insert("steps".into(), steps_sum);
    if let Some(w) = started {
        b.insert("fault → reconcile start".into(), secs_between(fault, w));
    }
    if let Some(t) = at {
        b.insert("fault → reconcile end".into(), secs_between(fault, t));
    }
    b
}

fn run_remedy(self_trigger: bool) -> (Measured, Value) {
    let mut cl = RedisCluster::start(2, None);
    let old = cl.master.addr().to_string();
    let secrets = tempfile::tempdir().expect("temp dir");
    let ro = secrets.path().join("read-only.token");
    std::fs::write(&ro, READ_TOKEN).expect("write token");
    // The line lands in `[webhook]` (it precedes the first `[[cluster]]`).
    let toml = format!(
        "read_only_token = {{ file = \"{}\" }}\n{}",
        ro.display(),
        cl.cluster_toml(CLUSTER, &[])
    );
    let mut opts = RemedyOptions::new(Coord::Local, toml);
    if !self_trigger {
        opts.service_extra = vec!["self_trigger = false".into()];
    }
    let remedy = Arc::new(Remedy::start(&opts));
    remedy.record(CLUSTER, &old);
    let am = Alertmanager::start(&remedy.webhook_url(), support::prom::TOKEN);
    let prom = Prometheus::start(remedy.port, am.port);
    support::redis::wait_for(Duration::from_secs(20), "prometheus armed", || {
        prom.query("pika_remedy_node_up == 1")
            .is_ok_and(|v| v.len() == 3)
            && prom.value_for("pika_remedy_node_expected_role{role=\"master\"}", &old) == Some(1.0)
    });
    let watch_stop = Arc::new(AtomicBool::new(false));
    let alerts = Arc::new(Mutex::new(BTreeMap::new()));
    let watch = spawn_alert_watch(prom.port, watch_stop.clone(), alerts.clone());
    let r = Arc::clone(&remedy);
    let discover: Discover = Arc::new(move || {
        r.recorded_master(CLUSTER)
            .and_then(|m| m.rsplit(':').next().and_then(|p| p.parse().ok()))
    });
    let addrs: Vec<String> = cl.addrs().iter().map(|a| a.to_string()).collect();
    let hp = Haproxy::shipped(remedy.port, &addrs);
    wait_routed(&hp, cl.master.port());
    let m = measure(&mut cl, discover, Some(&hp));
    watch_stop.store(true, Ordering::SeqCst);
    let _ = watch.join();
    let events = remedy.events(CLUSTER).unwrap_or_default();
    let failover = events.iter().find(|e| {
        e["outcome"]["plan"]["action"]["kind"] == "failover"
            && e["outcome"]["result"]["kind"] == "applied"
    });
    let demote = events.iter().find(|e| {
        e["outcome"]["plan"]["action"]["kind"] == "demote"
            && e["outcome"]["result"]["kind"] == "applied"
    });
    let al = alerts.lock().map(|a| a.clone()).unwrap_or_default();
    let md = al.get(&("PikaMasterDown".to_string(), old.clone()));
    let rm = al.get(&("PikaRoleMismatch".to_string(), old.clone()));
    let fb = m
        .kill_wall
        .map(|k| breakdown(k, md, failover, "PikaMasterDown"))
        .unwrap_or_default();
    let db = m
        .restart_wall
        .map(|k| breakdown(k, rm, demote, "PikaRoleMismatch"))
        .unwrap_or_default();
    // Discovery: from the record write (end of the reconcile minus the steps after `record`)
    // to the writer's first acknowledged write on the new master.
    let mut fb = fb;
    if let (Some(e), Some(k), Some(first)) = (failover, m.kill_wall, m.kill_to_first_ack) {
        let steps = step_millis(e);
        let after_record: f64 = steps
            .iter()
            .skip_while(|(s, _)| s != "record")
            .skip(1)
            .map(|(_, s)| s)
            .sum();
        if let Some(end) = fb.get("fault → reconcile end").copied() {
            fb.insert(
                "discovery (record → first ack)".into(),
                first - (end - after_record),
            );
        }
        let _ = k;
    }
    let detail = json!({
        "failover_source": failover.map(|e| e["source"].clone()),
        "demote_source": demote.map(|e| e["source"].clone()),
        "failover_event": failover.map(event_line),
        "demote_event": demote.map(event_line),
        "failover_breakdown": fb,
        "demote_breakdown": db,
        "alert_active_at": { "PikaMasterDown": md, "PikaRoleMismatch": rm },
    });
    (m, detail)
}

fn run_sentinel() -> (Measured, Value) {
    let mut cl = RedisCluster::start(2, None);
    let sentinels: Vec<Sentinel> = (0..3).map(|_| Sentinel::start(cl.master.port())).collect();
    // Armed: every sentinel knows both replicas and the two other sentinels.
    let armed = support::redis::wait_until(Duration::from_secs(30), || {
        sentinels.iter().all(|s| {
            let i = s.master_info();
            i.get("num-slaves").map(String::as_str) == Some("2")
                && i.get("num-other-sentinels").map(String::as_str) == Some("2")
        })
    });
    assert!(armed, "sentinels did not discover each other within 30 s");
    let discover = sentinel_discover(sentinels.iter().map(|s| s.port).collect());
    let ports: Vec<u16> = cl.nodes().iter().map(|n| n.port()).collect();
    let hp = Haproxy::role_check(&ports);
    wait_routed(&hp, cl.master.port());
    let m = measure(&mut cl, discover, Some(&hp));
    (m, json!({}))
}

/// Wait (bounded) until HAProxy routes its master port to `master`.
fn wait_routed(hp: &Haproxy, master: u16) {
    let ok = support::redis::wait_until(Duration::from_secs(15), || {
        open(hp.port)
            .and_then(|mut c| c.call(&["CONFIG", "GET", "port"]))
            .is_ok_and(|p| p.ends_with(&master.to_string()))
    });
    assert!(
        ok,
        "haproxy never routed to the master {master}: {}",
        std::fs::read_to_string(hp._dir.path().join("haproxy.log")).unwrap_or_default()
    );
}

// ---------------------------------------------------------------------------------------------
// Summary.

fn stats(v: &[f64]) -> Option<(f64, f64, f64)> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let med = if s.len() % 2 == 1 {
        s[s.len() / 2]
    } else {
        (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0
    };
    Some((s[0], med, s[s.len() - 1]))
}

fn fmt_stats(v: &[f64], unit: &str) -> String {
    match stats(v) {
        None => "n/a".into(),
        Some((a, m, b)) if unit == "s" => format!("{a:.2} / **{m:.2}** / {b:.2}"),
        Some((a, m, b)) => format!("{a:.0} / **{m:.0}** / {b:.0}"),
    }
}

fn ratio(a: &[f64], b: &[f64]) -> String {
    match (stats(a), stats(b)) {
        (Some((_, x, _)), Some((_, y, _))) if y > 0.0 => format!("{:.2}×", x / y),
        (Some((_, x, _)), Some((_, y, _))) if x == 0.0 && y == 0.0 => "—".into(),
        _ => "n/a".into(),
    }
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is accepted.
    let runs: usize = std::env::var("BENCH_RUNS")
        .or_else(|_| std::env::var("RUNS"))
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
        .max(1);
    if let Some(seed) = std::env::var("BENCH_SEED")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        if let Ok(mut g) = JITTER.lock() {
            *g = Rng(seed.max(1));
        }
    }
    let systems = [
        "pika-remedy (default)",
        "pika-remedy (alerts only)",
        "Sentinel",
    ];
    let mut results: Vec<Vec<(Measured, Value)>> = vec![Vec::new(), Vec::new(), Vec::new()];
    let t0 = Instant::now();
    for run in 1..=runs {
        // A rotating order, so no system always runs first (or right after another one).
        for k in 0..systems.len() {
            let i = (k + run) % systems.len();
            let name = systems[i];
            let t = Instant::now();
            let (m, d) = match i {
                0 => run_remedy(true),
                1 => run_remedy(false),
                _ => run_sentinel(),
            };
            eprintln!(
                "run {run}/{runs} {name}: kill→promotion {:?}s, kill→first ack {:?}s, restart→demoted {:?}s, →link up {:?}s, lost {:?}/{}, stale acked {}{} ({:.0}s)",
                m.kill_to_promotion.map(|x| (x * 1000.0).round() / 1000.0),
                m.kill_to_first_ack.map(|x| (x * 1000.0).round() / 1000.0),
                m.restart_to_demoted.map(|x| (x * 1000.0).round() / 1000.0),
                m.restart_to_link_up.map(|x| (x * 1000.0).round() / 1000.0),
                m.lost,
                m.acked,
                m.stale_acked,
                m.error.as_ref().map(|e| format!(" ERROR: {e}")).unwrap_or_default(),
                t.elapsed().as_secs_f64()
            );
            if i < 2 {
                eprintln!("    breakdown: {}", d);
            }
            results[i].push((m, d));
        }
    }

    let col = |i: usize, f: &dyn Fn(&Measured) -> Option<f64>| -> Vec<f64> {
        results[i].iter().filter_map(|(m, _)| f(m)).collect()
    };
    type Metric<'a> = (&'a str, &'a str, Box<dyn Fn(&Measured) -> Option<f64>>);
    let metrics: Vec<Metric> = vec![
        (
            "kill → first acked write on the new master (s)",
            "s",
            Box::new(|m: &Measured| m.kill_to_first_ack),
        ),
        (
            "kill → replica reports role master (s)",
            "s",
            Box::new(|m: &Measured| m.kill_to_promotion),
        ),
        (
            "acknowledged writes lost",
            "n",
            Box::new(|m: &Measured| m.lost.map(|x| x as f64)),
        ),
        (
            "restart → old master role slave (s)",
            "s",
            Box::new(|m: &Measured| m.restart_to_demoted),
        ),
        (
            "restart → old master link up (s)",
            "s",
            Box::new(|m: &Measured| m.restart_to_link_up),
        ),
        (
            "stale-client writes acked by the restarted old master",
            "n",
            Box::new(|m: &Measured| Some(m.stale_acked as f64)),
        ),
        (
            "… of which after it was seen demoted",
            "n",
            Box::new(|m: &Measured| m.stale_acked_after_demotion.map(|x| x as f64)),
        ),
        (
            "writes through HAProxy acked by the restarted old master",
            "n",
            Box::new(|m: &Measured| m.routed_stale_acked.map(|x| x as f64)),
        ),
    ];
    let mut table = String::new();
    table.push_str(&format!(
        "| metric (min / **median** / max, {runs} runs) | {} | {} | {} | ratio default/Sentinel | ratio alerts only/Sentinel |\n",
        systems[0], systems[1], systems[2]
    ));
    table.push_str("| --- | --- | --- | --- | --- | --- |\n");
    for (name, unit, f) in &metrics {
        let (a, b, s) = (col(0, f.as_ref()), col(1, f.as_ref()), col(2, f.as_ref()));
        table.push_str(&format!(
            "| {name} | {} | {} | {} | {} | {} |\n",
            fmt_stats(&a, unit),
            fmt_stats(&b, unit),
            fmt_stats(&s, unit),
            ratio(&a, &s),
            ratio(&b, &s)
        ));
    }
    // Breakdown medians for the pika-remedy variants.
    let mut bd = String::new();
    for (i, sys) in systems.iter().enumerate().take(2) {
        for (what, key) in [
            ("failover", "failover_breakdown"),
            ("demotion", "demote_breakdown"),
        ] {
            let mut keys: Vec<String> = Vec::new();
            for (_, d) in &results[i] {
                if let Some(o) = d[key].as_object() {
                    for k in o.keys() {
                        if !keys.contains(k) {
                            keys.push(k.clone());
                        }
                    }
                }
            }
            let parts: Vec<String> = keys
                .iter()
                .map(|k| {
                    let v: Vec<f64> = results[i]
                        .iter()
                        .filter_map(|(_, d)| d[key][k].as_f64())
                        .collect();
                    format!("{k} {}", fmt_stats(&v, "s"))
                })
                .collect();
            let sources: Vec<String> = results[i]
                .iter()
                .map(|(_, d)| {
                    d[if what == "failover" {
                        "failover_source"
                    } else {
                        "demote_source"
                    }]
                    .as_str()
                    .unwrap_or("none")
                    .to_string()
                })
                .collect();
            bd.push_str(&format!(
                "- {sys}, {what} (triggered by: {}): {}\n",
                sources.join(", "),
                parts.join("; ")
            ));
        }
    }
    let errors: Vec<String> = results
        .iter()
        .enumerate()
        .flat_map(|(i, r)| {
            r.iter().enumerate().filter_map(move |(n, (m, _))| {
                m.error
                    .as_ref()
                    .map(|e| format!("{} run {}: {e}", systems[i], n + 1))
            })
        })
        .collect();
    println!("\n{table}\nWhere pika-remedy's time goes (min / median / max, seconds):\n{bd}");
    if !errors.is_empty() {
        println!("Errors:\n{}", errors.join("\n"));
    }

    let raw: Vec<Value> = results
        .iter()
        .enumerate()
        .flat_map(|(i, r)| {
            r.iter().enumerate().map(move |(n, (m, d))| {
                json!({
                    "system": systems[i], "run": n + 1,
                    "kill_to_first_ack_s": m.kill_to_first_ack,
                    "kill_to_promotion_s": m.kill_to_promotion,
                    "restart_to_demoted_s": m.restart_to_demoted,
                    "restart_to_link_up_s": m.restart_to_link_up,
                    "acked_writes": m.acked, "lost_writes": m.lost,
                    "failed_write_attempts": m.failed_writes,
                    "stale_acked": m.stale_acked,
                    "stale_acked_after_demotion": m.stale_acked_after_demotion,
                    "routed_acked": m.routed_acked, "routed_stale_acked": m.routed_stale_acked,
                    "error": m.error, "detail": d,
                })
            })
        })
        .collect();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    let _ = std::fs::create_dir_all(&dir);
    let json_path = dir.join("failover.json");
    let _ = std::fs::write(
        &json_path,
        serde_json::to_string_pretty(&json!({ "runs": runs, "results": raw })).unwrap_or_default(),
    );
    let doc = render_doc(runs, &table, &bd, &errors, t0.elapsed());
    // `BENCH_DOC=path`: write the report there instead (a reduced run must not replace the
    // published one).
    let doc_path = std::env::var_os("BENCH_DOC")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/bench.md"));
    // Keep the real-Pika section (benches/pika.rs writes it).
    // ... and the scale section (benches/scale.rs).
    let kept = std::fs::read_to_string(&doc_path).ok().and_then(|old| {
        ["## Scale", "## Real Pika"]
            .iter()
            .filter_map(|h| old.find(h))
            .min()
            .map(|i| old[i..].to_string())
    });
    let doc = match kept {
        Some(k) => format!("{}\n{k}", doc.trim_end()),
        None => doc,
    };
    let _ = std::fs::write(&doc_path, doc);
    println!(
        "wrote {} and {} ({:.0}s)",
        json_path.display(),
        doc_path.display(),
        t0.elapsed().as_secs_f64()
    );
}

fn render_doc(runs: usize, table: &str, bd: &str, errors: &[String], took: Duration) -> String {
    let mut s = String::new();
    s.push_str("# Failover benchmark: pika-remedy vs Redis Sentinel\n\n");
    s.push_str("Generated by `make bench` (`benches/failover.rs`); raw numbers per run in `target/bench/failover.json`.\n\n");
    s.push_str(&format!(
        "Machine: {} cores, shared with other work while measuring. Release build. {runs} runs per system, {:.0} s in total. \
         Redis 7.0.15 (`redis-server`, `redis-sentinel`), Prometheus 2.42, Alertmanager 0.25 (Debian bookworm).\n\n",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        took.as_secs_f64()
    ));
    s.push_str("## Setup (identical for every system)\n\n");
    s.push_str("- Topology: one `redis-server` master + 2 replicas on 127.0.0.1, fresh for every run and system, no persistence.\n");
    s.push_str("- Writer: `SET k:N` every 5 ms on one connection; after any failed write it asks discovery again (pika-remedy: `GET /v1/clusters/c` → `record.master`; Sentinel: `SENTINEL get-master-addr-by-name`).\n");
    s.push_str("- Fault: `kill -9` of the master. Once the new master acknowledged a write and the other replica follows it, the old master is restarted from its original config file (it comes back as an empty master) while a stale client pinned to its address keeps writing `SET stale:N` every 5 ms.\n");
    s.push_str("- A third client writes `SET routed:N` every 5 ms through HAProxy 2.6's master port, a new connection every 10 writes, each asking the server behind it for its port: pika-remedy with the shipped `deploy/haproxy/haproxy.cfg` (HTTP checks of `/v1/route/…/master`, every 250 ms); Sentinel with the usual recipe, a TCP check expecting `role:master` (same intervals).\n");
    s.push_str("- Roles are observed by polling `INFO replication` every 10 ms. \"Lost\" = keys acknowledged to the writer but missing on the final master.\n\n");
    s.push_str("## Settings\n\n");
    s.push_str("| | setting |\n| --- | --- |\n");
    s.push_str("| Prometheus (shipped `deploy/prometheus/prometheus.yml`) | scrape 1 s (timeout 1 s), evaluation 1 s, `honor_labels: true` |\n");
    s.push_str(&format!(
        "| rules (shipped `rules/pika-remedy.yml`, unchanged) | PikaMasterDown `for: {}`, PikaRoleMismatch `for: {}` |\n",
        shipped_for("PikaMasterDown"),
        shipped_for("PikaRoleMismatch")
    ));
    s.push_str("| Alertmanager (shipped `alerts/alertmanager.yml`, unchanged timings) | pika-remedy route group_wait 0s, group_interval 1s, repeat_interval 1m; bearer `credentials_file` |\n");
    {
        let c = pika_remedy::config::Config::parse("", "defaults").expect("empty config parses");
        s.push_str(&format!(
            "| pika-remedy (defaults) | poll_interval {}, policy.confirm_window {}, timeouts connect {} / command {}, coordinator local |\n",
            humantime::format_duration(c.service.poll_interval),
            humantime::format_duration(c.policy.confirm_window),
            humantime::format_duration(c.timeouts.connect),
            humantime::format_duration(c.timeouts.command),
        ));
    }
    s.push_str("| pika-remedy \"default\" | the defaults (`self_trigger = true`, `check_interval = 0s`): the service's own poller starts the reconcile when it sees the master gone; Alertmanager's notification comes too, whichever is first acts |\n");
    s.push_str("| pika-remedy \"alerts only\" | `self_trigger = false`: every action comes from an Alertmanager notification |\n");
    s.push_str(&format!("| fault timing | the kill comes 1 s + a random 0–{KILL_JITTER_MS} ms after the writer started (a random phase of every poll, scrape and evaluation); the systems run in a rotating order in every run |\n"));
    s.push_str("| Redis Sentinel | 3 sentinels, quorum 2, down-after-milliseconds 1000, failover-timeout 10000, parallel-syncs 1 |\n\n");
    s.push_str("## Results\n\n");
    s.push_str(table);
    s.push_str("\nTargets (medians, same run, pooled): default: kill → first acknowledged write ≤ 0.25× Sentinel's, kill → promotion ≤ 0.5×; alerts only: kill → first acknowledged write ≤ 0.75×; restart → demoted ≤ 0.1×; zero acknowledged writes lost.\n\n");
    s.push_str("## Where pika-remedy's time goes\n\n");
    s.push_str("From Prometheus' `activeAt` (polled every 50 ms), the alert's `startsAt` and the event log (`GET /v1/events`: event time, reconcile duration, step timings). `detect` = fault → the rule's expression first true (pika-remedy poll + scrape + evaluation alignment); `for` = pending → firing; `alertmanager → webhook` = `startsAt` → reconcile start; `verify` = reconcile time outside the steps (observation, `confirm_window`, lock, second observation); `steps` = promote/repoint/persist/record or the demotion's follow/persist; `discovery` = record written → the writer's first acknowledged write on the new master. With the default configuration the reconcile usually starts (source `self`) before the alert fires, so its `for`/`alertmanager` entries can be missing or negative.\n\n");
    s.push_str(bd);
    if !errors.is_empty() {
        s.push_str("\n## Errors during the runs\n\n");
        for e in errors {
            s.push_str(&format!("- {e}\n"));
        }
    }
    s
}

/// The `for:` of a shipped rule, read from `rules/pika-remedy.yml` (so the report never
/// states a stale setting).
fn shipped_for(alert: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/pika-remedy.yml");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let Some(start) = text.find(&format!("- alert: {alert}")) else {
        return "?".into();
    };
    text[start..]
        .lines()
        .find_map(|l| l.trim().strip_prefix("for:").map(|v| v.trim().to_string()))
        .unwrap_or_else(|| "?".into())
}
