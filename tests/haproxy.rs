//! Proxy routing with a REAL HAProxy (Debian `haproxy`, 2.6) running the SHIPPED
//! `deploy/haproxy/haproxy.cfg` (only addresses, ports and the socket path are replaced; every
//! replacement is asserted to match), a real `pika-remedy serve` (periodic check on) and real
//! `redis-server`s (master + 2 replicas).
//!
//! A writer connects through HAProxy's master port and keeps writing across a `kill -9` of the
//! master, the failover, and the old master's return (restart as `role:master` with an empty
//! dataset, then its demotion). A write counts as acknowledged when `SET` answered `+OK` and
//! `WAIT 1` confirmed a replica has it (Redis replication is asynchronous: a bare `+OK` from a
//! master killed a millisecond later can be lost by any failover tool). Each connection asks the
//! server behind it for its port first (HAProxy in TCP mode pins a connection to one server), so
//! every acknowledgement is attributed to a node.
//!
//! Asserted: acknowledged writes missing on the final master = 0; connections and writes that
//! reached the old master's port after its restart = 0; the writer resumes on the new master.

mod support;

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::conn::Conn;
use support::prom::{repo_dir, Coord, Remedy, RemedyOptions, TOKEN};
use support::redis::{free_port, require_binary, wait_for, wait_until, RedisCluster};

const CLUSTER: &str = "main";
const READ_TOKEN: &str = "haproxy-read-only-token-42";

/// A running haproxy with the shipped config, killed on drop.
struct Haproxy {
    child: Option<Child>,
    _dir: tempfile::TempDir,
    log: PathBuf,
    master_port: u16,
    replica_port: u16,
}

fn replace_required(text: &str, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "shipped deploy/haproxy/haproxy.cfg no longer contains {from:?}; update tests/haproxy.rs"
    );
    text.replace(from, to)
}

impl Haproxy {
    fn start(remedy_port: u16, nodes: &[String]) -> Haproxy {
        let bin = require_binary("haproxy", "haproxy");
        let dir = tempfile::Builder::new()
            .prefix("pika-remedy-haproxy-")
            .tempdir()
            .expect("temp dir");
        let shipped = std::fs::read_to_string(repo_dir().join("deploy/haproxy/haproxy.cfg"))
            .expect("read deploy/haproxy/haproxy.cfg");
        let (master_port, replica_port) = (free_port(), free_port());
        let mut text = replace_required(
            &shipped,
            "/run/haproxy/pika-remedy.sock",
            &dir.path().join("admin.sock").display().to_string(),
        );
        text = replace_required(
            &text,
            "addr 127.0.0.1 port 9655",
            &format!("addr 127.0.0.1 port {remedy_port}"),
        );
        text = replace_required(
            &text,
            "bind :6380",
            &format!("bind 127.0.0.1:{master_port}"),
        );
        text = replace_required(
            &text,
            "bind :6381",
            &format!("bind 127.0.0.1:{replica_port}"),
        );
        for (shipped_node, real) in ["10.0.0.11:9221", "10.0.0.12:9221", "10.0.0.13:9221"]
            .iter()
            .zip(nodes)
        {
            text = replace_required(&text, shipped_node, real);
        }
        let conf = dir.path().join("haproxy.cfg");
        std::fs::write(&conf, text).expect("write haproxy.cfg");
        let log = dir.path().join("haproxy.log");
        let f = std::fs::File::create(&log).expect("log file");
        let check = Command::new(&bin)
            .arg("-c")
            .arg("-f")
            .arg(&conf)
            .env("PIKA_REMEDY_READ_TOKEN", READ_TOKEN)
            .output()
            .expect("run haproxy -c");
        assert!(
            check.status.success(),
            "haproxy -c rejected the config: {}",
            String::from_utf8_lossy(&check.stdout)
        );
        let child = Command::new(&bin)
            .arg("-db")
            .arg("-f")
            .arg(&conf)
            .env("PIKA_REMEDY_READ_TOKEN", READ_TOKEN)
            .stdin(Stdio::null())
            .stdout(f.try_clone().expect("clone"))
            .stderr(f)
            .spawn()
            .expect("spawn haproxy");
        let h = Haproxy {
            child: Some(child),
            _dir: dir,
            log,
            master_port,
            replica_port,
        };
        wait_for(Duration::from_secs(10), "haproxy listening", || {
            TcpStream::connect(("127.0.0.1", master_port)).is_ok()
        });
        h
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The writer's connection: 300 ms to connect, 1 s per read or write.
fn open(port: u16) -> Result<Conn, String> {
    Conn::open_with(
        port,
        Duration::from_millis(300),
        Duration::from_millis(1000),
    )
}

/// What the writer saw.
#[derive(Default)]
struct Tally {
    /// (key index, port of the node that acknowledged it, when)
    acked: Vec<(u64, u16, Instant)>,
    /// `+OK` but `WAIT 1` said no replica had it: not counted as acknowledged.
    unreplicated: Vec<(u16, Instant)>,
    /// Connections, by the port of the server behind them, and when.
    connections: Vec<(u16, Instant)>,
    failed_attempts: u64,
}

fn writer(port: u16, stop: Arc<AtomicBool>, tally: Arc<Mutex<Tally>>) {
    let mut conn: Option<(Conn, u16)> = None;
    let mut i: u64 = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
        if conn.is_none() {
            match open(port).and_then(|mut c| {
                let p = c.call(&["CONFIG", "GET", "port"])?;
                let p: u16 = p
                    .split_whitespace()
                    .nth(1)
                    .and_then(|x| x.parse().ok())
                    .ok_or_else(|| format!("bad CONFIG GET port reply {p:?}"))?;
                Ok((c, p))
            }) {
                Ok((c, p)) => {
                    tally.lock().unwrap().connections.push((p, Instant::now()));
                    conn = Some((c, p));
                }
                Err(_) => {
                    tally.lock().unwrap().failed_attempts += 1;
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
            }
        }
        let Some((c, p)) = conn.as_mut() else {
            continue;
        };
        let key = format!("k:{i}");
        let res = c
            .call(&["SET", &key, &i.to_string()])
            .and_then(|_| c.call(&["WAIT", "1", "500"]));
        match res {
            Ok(n) if n != "0" => {
                tally.lock().unwrap().acked.push((i, *p, Instant::now()));
                // A pooled client's churn: a new connection (a new routing decision) every 10 writes.
                if i % 10 == 9 {
                    conn = None;
                }
            }
            Ok(_) => tally
                .lock()
                .unwrap()
                .unreplicated
                .push((*p, Instant::now())),
            Err(_) => {
                tally.lock().unwrap().failed_attempts += 1;
                conn = None;
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        i += 1;
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn writer_through_haproxy_survives_failover_and_never_reaches_the_old_master() {
    let mut cl = RedisCluster::start(2, None);
    let addrs: Vec<String> = cl.addrs().iter().map(|a| a.to_string()).collect();
    let old_port = cl.master.port();
    std::fs::create_dir_all(repo_dir().join("target")).ok();
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
    opts.service_extra = vec![
        "check_interval = \"200ms\"".into(),
        "poll_interval = \"200ms\"".into(),
    ];
    opts.timeouts_extra = vec!["connect = \"200ms\"".into(), "command = \"1s\"".into()];
    opts.policy_extra = vec!["confirm_window = \"100ms\"".into()];
    let remedy = Remedy::start(&opts);
    // The periodic check bootstraps the record (the only master, every replica following it);
    // an explicit `record` here would race with it.
    assert!(
        wait_until(Duration::from_secs(15), || remedy
            .recorded_master(CLUSTER)
            .as_deref()
            == Some(addrs[0].as_str())),
        "no bootstrap record: {}",
        remedy.log_tail(40)
    );
    let hp = Haproxy::start(remedy.port, &addrs);
    let diag = |what: &str| {
        format!(
            "{what}\nhaproxy log:\n{}\npika-remedy log:\n{}",
            hp.log(),
            remedy.log_tail(60)
        )
    };

    // The route endpoint itself: open to the read-only token, 200 only for the master.
    let route = |node: &str, role: &str| {
        support::prom::http(
            "GET",
            remedy.port,
            &format!("/v1/route/{CLUSTER}/{node}/{role}"),
            &[("Authorization", &format!("Bearer {READ_TOKEN}"))],
            None,
        )
        .map(|r| r.status)
        .unwrap_or(0)
    };
    assert_eq!(route(&addrs[0], "master"), 200);
    assert_eq!(route(&addrs[1], "master"), 503);
    assert_eq!(route(&addrs[1], "replica"), 200);
    assert_eq!(route("127.0.0.1:1", "master"), 404);
    let anon = support::prom::get(
        remedy.port,
        &format!("/v1/route/{CLUSTER}/{}/master", addrs[0]),
    )
    .map(|r| r.status)
    .unwrap_or(0);
    assert_eq!(anon, 401, "the route endpoint needs credentials");

    // HAProxy routes to the master.
    assert!(
        wait_until(Duration::from_secs(10), || open(hp.master_port)
            .and_then(|mut c| c.call(&["CONFIG", "GET", "port"]))
            .is_ok_and(|p| p.ends_with(&old_port.to_string()))),
        "{}",
        diag("haproxy never routed to the master")
    );
    // And the replica port to a replica.
    let rport = open(hp.replica_port)
        .and_then(|mut c| c.call(&["CONFIG", "GET", "port"]))
        .unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(10), || open(hp.replica_port)
            .and_then(|mut c| c.call(&["CONFIG", "GET", "port"]))
            .is_ok_and(
                |p| !p.ends_with(&old_port.to_string()) && p.starts_with("port")
            )),
        "{}",
        diag(&format!("replica port did not reach a replica ({rport})"))
    );

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let w = {
        let (stop, tally) = (Arc::clone(&stop), Arc::clone(&tally));
        let port = hp.master_port;
        std::thread::spawn(move || writer(port, stop, tally))
    };
    wait_for(Duration::from_secs(10), "100 writes acknowledged", || {
        tally.lock().unwrap().acked.len() >= 100
    });

    // kill -9 the master; the periodic check fails over.
    let killed_at = Instant::now();
    cl.master.kill9();
    let mut new_master = String::new();
    assert!(
        wait_until(Duration::from_secs(20), || {
            new_master = remedy.recorded_master(CLUSTER).unwrap_or_default();
            !new_master.is_empty() && new_master != addrs[0]
        }),
        "{}",
        diag("no failover recorded")
    );
    let new_port: u16 = new_master
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    assert!(
        wait_until(Duration::from_secs(20), || tally
            .lock()
            .unwrap()
            .acked
            .iter()
            .any(|(_, p, _)| *p == new_port)),
        "{}",
        diag("the writer never reached the new master through haproxy")
    );
    let resumed_after = tally
        .lock()
        .unwrap()
        .acked
        .iter()
        .find(|(_, p, _)| *p == new_port)
        .map(|(_, _, t)| t.duration_since(killed_at))
        .unwrap_or_default();

    // The old master returns as role:master (empty). Automatic remediation is paused first, so
    // it stays a second master for 2 s while the writer keeps opening connections: the worst
    // case of a slow demotion. Then remediation resumes and pika-remedy demotes it.
    let api = |path: &str| {
        support::prom::http(
            "POST",
            remedy.port,
            path,
            &[("Authorization", &format!("Bearer {TOKEN}"))],
            None,
        )
        .map(|r| r.status)
        .unwrap_or(0)
    };
    assert_eq!(api(&format!("/v1/pause?cluster={CLUSTER}")), 200);
    let conns_before = tally.lock().unwrap().connections.len();
    // Anything the old port answers from now on comes from the restarted process (between the
    // kill and this instant nothing listens there).
    let restarted_at = Instant::now();
    cl.master.restart();
    assert_eq!(
        cl.master.role(),
        "master",
        "the restarted old master claims master"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        cl.master.role(),
        "master",
        "still a second master while paused"
    );
    let conns_during = tally.lock().unwrap().connections.len() - conns_before;
    assert!(
        conns_during >= 5,
        "the writer opened only {conns_during} connections in the window"
    );
    assert_eq!(api(&format!("/v1/resume?cluster={CLUSTER}")), 200);
    let returned_at = Instant::now();
    assert!(
        wait_until(Duration::from_secs(20), || cl.master.is_linked_to(new_port)),
        "{}",
        diag("the old master was not demoted")
    );
    let demoted_after = returned_at.elapsed();
    // Keep writing a little after the demotion.
    let n = tally.lock().unwrap().acked.len();
    wait_for(Duration::from_secs(10), "writes after the demotion", || {
        tally.lock().unwrap().acked.len() >= n + 50
    });
    stop.store(true, Ordering::Relaxed);
    w.join().expect("writer thread");

    let t = tally.lock().unwrap();
    let to_old_after_restart = t
        .acked
        .iter()
        .filter(|(_, p, at)| *p == old_port && *at > restarted_at)
        .count()
        + t.unreplicated
            .iter()
            .filter(|(p, at)| *p == old_port && *at > restarted_at)
            .count();
    let conns_to_old_after_restart = t
        .connections
        .iter()
        .filter(|(p, at)| *p == old_port && *at > restarted_at)
        .count();
    // Every acknowledged key must be on the final master.
    let mut final_master = open(new_port).expect("connect to the new master");
    let mut lost = Vec::new();
    for (i, _, _) in &t.acked {
        let v = final_master
            .call(&["GET", &format!("k:{i}")])
            .unwrap_or_default();
        if v != i.to_string() {
            lost.push(*i);
        }
    }
    let before_kill = t.acked.iter().filter(|(_, _, at)| *at <= killed_at).count();
    eprintln!(
        "haproxy: {} writes acknowledged ({before_kill} before the kill, {} by the new master), \
         {} OK without a replica (not counted), {} failed attempts; acknowledged writes lost: {}; \
         connections to the restarted old master: {conns_to_old_after_restart}; writes it answered +OK \
         (with or without a replica): {to_old_after_restart}; writer resumed on the new master {:.3}s after the kill; old master \
         demoted {:.3}s after remediation resumed; {} connections in all ({conns_during} while it was a second master)",
        t.acked.len(),
        t.acked.iter().filter(|(_, p, _)| *p == new_port).count(),
        t.unreplicated.len(),
        t.failed_attempts,
        lost.len(),
        resumed_after.as_secs_f64(),
        demoted_after.as_secs_f64(),
        t.connections.len(),
    );
    assert_eq!(
        conns_to_old_after_restart,
        0,
        "{}",
        diag("connections reached the restarted old master")
    );
    assert_eq!(
        to_old_after_restart,
        0,
        "{}",
        diag("writes reached the restarted old master")
    );
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    // The old master, now a replica, is never a master target; as a replica it is.
    assert_eq!(route(&addrs[0], "master"), 503);
    assert!(
        wait_until(Duration::from_secs(5), || route(&addrs[0], "replica")
            == 200),
        "{}",
        diag("the demoted old master is not a replica target")
    );
}
