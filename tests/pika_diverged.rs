//! Real Pika (`PIKA_BIN`): no write silently discarded. A restarted old master that holds
//! writes the new master never had is snapshotted (`BGSAVE` under a dump prefix of its own)
//! before `SLAVEOF … force` discards them; the snapshot is read back by starting a Pika on it
//! (docs/recovery.md), and the audit event carries the estimate and the path. With
//! `policy.diverged = "refuse"` it is not demoted until `demote --accept-data-loss`. Under a
//! writer at ~200 writes/s, the acknowledged writes a kill -9 loses are measured on the new
//! master and looked for on the restarted old master and in its snapshot.
//!
//! Without `PIKA_BIN` each case prints `SKIPPED …` and passes, except under `CI=true`.

#[path = "support/serve.rs"]
mod serve;
mod support;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use serve::{cli, Service};
use support::conn::Conn;
use support::real_pika::{pika_or_skip, PikaNode, PikaOptions, PikaSet};
use support::redis::{info_field, resp_call, wait_for, wait_until};
use support::snapshots::{start_pika_on_snapshot as start_on_snapshot, start_redis_on_rdb};

const CLUSTER: &str = "mymaster";
const BEARER: &str = "pika-diverged-bearer-5d1e";
/// Upper bound for a Pika link to come up (a forced full sync takes ~8 s).
const SYNC: Duration = Duration::from_secs(40);

/// The captured firing payload, about `addr`, as alert `alertname`.
fn payload(alertname: &str, addr: &str) -> Vec<u8> {
    support::fixtures::firing_about(addr, alertname)
}

struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Setup {
    fn arg(&self) -> &str {
        self.config.to_str().expect("utf-8 path")
    }
    fn events(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join("events.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

/// Local coordinator, alerts only (no periodic check, no self-trigger), `diverged` policy.
fn setup(set: &PikaSet, diverged: &str) -> Setup {
    let dir = tempfile::Builder::new()
        .prefix("pika-remedy-diverged-")
        .tempdir()
        .expect("temp dir");
    let bearer = dir.path().join("bearer");
    std::fs::write(&bearer, format!("{BEARER}\n")).expect("bearer");
    std::fs::create_dir_all(dir.path().join("coord")).expect("coord dir");
    let text = format!(
        r#"
[service]
instance_id = "pika-diverged"
events_file = "{events}"
poll_interval = "500ms"
self_trigger = false
check_interval = "0s"
[timeouts]
connect = "500ms"
command = "2s"
[policy]
confirm_window = "200ms"
promote_timeout = "10s"
link_timeout = "15s"
detach_timeout = "20s"
switchover_pause = "10s"
lock_ttl = "120s"
diverged = "{diverged}"
snapshot_timeout = "30s"
[coordinator]
kind = "local"
[coordinator.local]
dir = "{coord}"
[webhook]
bearer_token = {{ file = "{bearer}" }}
master_down_alerts = ["RedisDown", "PikaMasterDown"]
role_mismatch_alerts = ["PikaRoleMismatch"]
max_body_bytes = 65536
{cluster}"#,
        events = dir.path().join("events.jsonl").display(),
        coord = dir.path().join("coord").display(),
        bearer = bearer.display(),
        cluster = set.cluster_toml(CLUSTER),
    );
    let config = dir.path().join("pika-remedy.toml");
    std::fs::write(&config, text).expect("config");
    Setup { dir, config }
}

async fn alert(svc: &Service, body: Vec<u8>) -> (u16, String) {
    for _ in 0..60 {
        let (st, text) = svc.post("/v1/alerts", BEARER, body.clone()).await;
        if st < 500 {
            return (st, text);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("the webhook kept answering 5xx");
}

fn record_master(s: &Setup, master: &str) {
    let (code, out, err) = cli(
        &[
            "record",
            "--config",
            s.arg(),
            "--cluster",
            CLUSTER,
            "--master",
            master,
        ],
        Duration::from_secs(30),
    );
    assert_eq!(code, 0, "record failed:\n{out}\n{err}");
}

fn get(port: u16, key: &str) -> Option<String> {
    resp_call(port, None, &["GET", key])
        .ok()
        .filter(|v| v != "(nil)")
}

fn put(port: u16, key: &str, value: &str) {
    resp_call(port, None, &["SET", key, value])
        .unwrap_or_else(|e| panic!("SET {key} on {port}: {e}"));
}

/// kill -9 of the master, the master-down webhook, the promoted slave's port.
async fn fail_over(set: &mut PikaSet, svc: &Service) -> u16 {
    let old = set.master.addr().to_string();
    set.master.kill9();
    let (st, body) = alert(svc, payload("PikaMasterDown", &old)).await;
    assert_eq!(st, 200, "{body}\nlog:\n{}", svc.log());
    let mut found = None;
    wait_for(SYNC, "a slave is promoted to role:master", || {
        found = set
            .replicas
            .iter()
            .find(|r| {
                r.try_cmd(&["INFO", "replication"])
                    .is_ok_and(|i| info_field(&i, "role").as_deref() == Some("master"))
            })
            .map(PikaNode::port);
        found.is_some()
    });
    found.expect("promoted")
}

/// The `diverged` step report of the last applied demotion in the events file.
fn demotion_report(s: &Setup) -> Value {
    s.events()
        .iter()
        .rev()
        .filter(|e| e["outcome"]["plan"]["action"]["kind"] == "demote")
        .flat_map(|e| {
            e["outcome"]["steps"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .find(|r| r["step"]["step"] == "diverged")
        .unwrap_or_else(|| panic!("no diverged step in the events: {:#?}", s.events()))
}

/// (a) The old master comes back, takes writes, is demoted with a snapshot: its diverged keys
/// are gone from the live node, present in the snapshot; the audit event, the API and the
/// metrics have the estimate and the path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diverged_old_master_is_snapshotted_before_its_demotion() {
    let Some(bin) = pika_or_skip("pika_diverged snapshot") else {
        return;
    };
    let mut set = PikaSet::start(&bin, 2, PikaOptions::default());
    put(set.master.port(), "before", "b");
    for r in &set.replicas {
        let p = r.port();
        wait_for(SYNC, "slaves have the pre-kill key", || {
            get(p, "before").is_some()
        });
    }
    let s = setup(&set, "snapshot");
    record_master(&s, &set.master.addr().to_string());
    let svc = Service::start(&s.config).await;
    let new_port = fail_over(&mut set, &svc).await;
    put(new_port, "after", "a");

    set.master.restart();
    assert_eq!(set.master.role(), "master", "the bug: back as master");
    let old_port = set.master.port();
    const N: usize = 20;
    for i in 0..N {
        put(old_port, &format!("div:{i}"), &format!("v{i}"));
    }
    let t = Instant::now();
    let (st, body) = alert(
        &svc,
        payload("PikaRoleMismatch", &set.master.addr().to_string()),
    )
    .await;
    assert_eq!(st, 200, "{body}\nlog:\n{}", svc.log());
    wait_for(SYNC, "the old master follows the new one, link up", || {
        set.master.is_linked_to(new_port)
    });
    wait_for(SYNC, "the old master resynced", || {
        get(old_port, "after").is_some()
    });
    let demote_ms = t.elapsed().as_millis();
    for i in 0..N {
        assert_eq!(
            get(old_port, &format!("div:{i}")),
            None,
            "div:{i} is gone live"
        );
    }

    let r = demotion_report(&s);
    assert_eq!(r["ok"], true, "{r:#}");
    let est = &r["step"]["estimate"];
    assert_eq!(est["claims_master"], true, "{r:#}");
    let bytes = est["bytes_ahead"].as_u64();
    let path = r["snapshot"]["path"]
        .as_str()
        .unwrap_or_else(|| panic!("no snapshot path: {r:#}"))
        .to_string();
    assert!(r["detail"].as_str().unwrap_or("").contains(&path), "{r:#}");
    let snap = PathBuf::from(&path);
    assert!(
        snap.starts_with(set.master.dir()),
        "{path} is in the node's dump-path"
    );
    // The API's events carry the same.
    let (st, events) = svc.get("/v1/events", BEARER).await;
    assert_eq!(st, 200, "{events}");
    assert!(events.contains(&path), "{events}");
    let (_, metrics) = svc.get("/metrics", BEARER).await;
    assert!(
        metrics.contains("pika_remedy_snapshots_total{cluster=\"mymaster\",result=\"ok\"} 1"),
        "{metrics}"
    );

    // Read back: a Pika on (a copy of) the snapshot has the diverged keys, not the new master's.
    let (recovered, _copy) = start_on_snapshot(&bin, &snap);
    for i in 0..N {
        assert_eq!(
            get(recovered.port(), &format!("div:{i}")).as_deref(),
            Some(format!("v{i}").as_str()),
            "div:{i} in the snapshot"
        );
    }
    assert_eq!(get(recovered.port(), "before").as_deref(), Some("b"));
    assert_eq!(get(recovered.port(), "after"), None);
    eprintln!(
        "pika_diverged: demotion with snapshot in {demote_ms} ms; estimate {bytes:?} bytes ahead ({}); snapshot {path} ({} bytes, {} ms)",
        r["step"]["estimate"],
        r["snapshot"]["size_bytes"],
        r["snapshot"]["millis"]
    );
}

/// (b) `policy.diverged = "refuse"`: the role-mismatch webhook does not demote the diverged
/// old master and says why; `demote --accept-data-loss` does it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuse_policy_leaves_the_diverged_node_to_the_operator() {
    let Some(bin) = pika_or_skip("pika_diverged refuse") else {
        return;
    };
    let mut set = PikaSet::start(&bin, 1, PikaOptions::default());
    let s = setup(&set, "refuse");
    record_master(&s, &set.master.addr().to_string());
    let svc = Service::start(&s.config).await;
    let new_port = fail_over(&mut set, &svc).await;
    set.master.restart();
    let old_port = set.master.port();
    put(old_port, "div", "1");
    let old = set.master.addr().to_string();
    let (st, body) = alert(&svc, payload("PikaRoleMismatch", &old)).await;
    assert!(st < 500, "{st} {body}");
    let refused = s
        .events()
        .into_iter()
        .rev()
        .find(|e| e["outcome"]["result"]["kind"] == "refused")
        .unwrap_or_else(|| panic!("no refusal: {:#?}\n{body}", s.events()));
    let reason = refused["outcome"]["plan"]["reason"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        reason.contains("diverged") && reason.contains("--accept-data-loss"),
        "{reason}"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(set.master.role(), "master", "not demoted");
    assert_eq!(get(old_port, "div").as_deref(), Some("1"));

    let (code, out, err) = cli(
        &[
            "demote",
            "--config",
            s.arg(),
            "--cluster",
            CLUSTER,
            "--node",
            &old,
            "--accept-data-loss",
        ],
        Duration::from_secs(90),
    );
    assert_eq!(code, 0, "demote --accept-data-loss:\n{out}\n{err}");
    wait_for(SYNC, "demoted: follows the new master, link up", || {
        set.master.is_linked_to(new_port)
    });
    assert_eq!(get(old_port, "div"), None, "the accepted loss");
    eprintln!("pika_diverged refuse: refused with: {reason}");
}

/// (c) kill -9 of the master under a writer at ~200 writes/s: the acknowledged writes that
/// never reached the new master; whether the restarted old master still has them; after its
/// demotion they are in its snapshot and the estimate's bytes are their binlog bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_lost_at_kill_are_in_the_old_masters_snapshot() {
    let Some(bin) = pika_or_skip("pika_diverged kill under writer") else {
        return;
    };
    let mut set = PikaSet::start(&bin, 2, PikaOptions::default());
    let s = setup(&set, "snapshot");
    record_master(&s, &set.master.addr().to_string());
    let svc = Service::start(&s.config).await;
    let mport = set.master.port();
    // The binlog bytes of one write of the writer's shape (fixed-width key and value).
    let key = |i: u64| format!("w:{i:08}");
    let value = |i: u64| format!("{i:016}");
    let binlog = |port: u16| -> u64 {
        let info = resp_call(port, None, &["INFO", "replication"]).unwrap_or_default();
        info_field(&info, "slave_repl_offset")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no slave_repl_offset:\n{info}"))
    };
    let b0 = binlog(mport);
    put(mport, &key(99_999_999), &value(99_999_999));
    let per_write = binlog(mport) - b0;
    assert!(per_write > 0);

    let acked = Arc::new(Mutex::new(Vec::<u64>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acked, stop) = (acked.clone(), stop.clone());
        std::thread::spawn(move || {
            let Ok(mut c) = Conn::open_with(
                mport,
                Duration::from_millis(500),
                Duration::from_millis(500),
            ) else {
                return;
            };
            let start = Instant::now();
            for i in 0..20_000u64 {
                if stop.load(Ordering::SeqCst) || start.elapsed() > Duration::from_secs(30) {
                    return;
                }
                match c.set(&format!("w:{i:08}"), &format!("{i:016}")) {
                    Ok(()) => acked.lock().expect("lock").push(i),
                    Err(_) => return, // the master is gone: stop at the first failure
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    let new_port = fail_over(&mut set, &svc).await;
    stop.store(true, Ordering::SeqCst);
    let _ = writer.join();
    let acked = acked.lock().expect("lock").clone();
    let rate = acked.len() as f64 / 2.0;
    // Nothing writes to the new master from here, so its binlog stays at the fork point.
    let lost: Vec<u64> = acked
        .iter()
        .copied()
        .filter(|i| get(new_port, &key(*i)).is_none())
        .collect();

    set.master.restart();
    let old_port = set.master.port();
    let kept: Vec<u64> = lost
        .iter()
        .copied()
        .filter(|i| get(old_port, &key(*i)).as_deref() == Some(value(*i).as_str()))
        .collect();
    eprintln!(
        "pika_diverged kill -9: {} writes acknowledged (~{rate:.0}/s), {} missing on the new master {:?}, {} of them still on the restarted old master; {per_write} binlog bytes per write",
        acked.len(),
        lost.len(),
        lost,
        kept.len()
    );

    // Pika writes before it acknowledges, and a kill -9 keeps what reached the OS: every
    // acknowledged write the replicas missed is still on the old master (4 of 4 runs so far).
    assert_eq!(kept, lost, "the restarted old master kept the lost writes");
    let old = set.master.addr().to_string();
    let (st, body) = alert(&svc, payload("PikaRoleMismatch", &old)).await;
    assert_eq!(st, 200, "{body}\nlog:\n{}", svc.log());
    wait_for(SYNC, "the old master follows the new one", || {
        set.master.is_linked_to(new_port)
    });
    let r = demotion_report(&s);
    assert_eq!(r["ok"], true, "{r:#}");
    let bytes = r["step"]["estimate"]["bytes_ahead"].as_u64().unwrap_or(0);
    let count = (bytes + per_write / 2) / per_write;
    eprintln!(
        "pika_diverged kill -9: the audit estimate is {bytes} bytes ahead = {count} writes of {per_write} bytes; snapshot {}",
        r["snapshot"]["path"]
    );
    assert_eq!(
        count,
        kept.len() as u64,
        "the estimate counts the writes the old master kept: {r:#}"
    );
    let path = PathBuf::from(r["snapshot"]["path"].as_str().expect("snapshot path"));
    let (recovered, _copy) = start_on_snapshot(&bin, &path);
    for i in &kept {
        assert_eq!(
            get(recovered.port(), &key(*i)).as_deref(),
            Some(value(*i).as_str()),
            "lost write {i} is in the snapshot"
        );
    }
    // And the live node lost them (the forced resync).
    wait_until(SYNC, || {
        kept.iter().all(|i| get(old_port, &key(*i)).is_none())
    });
    for i in &kept {
        assert_eq!(get(old_port, &key(*i)), None, "write {i} gone live");
    }
}

/// The same snapshot path on Redis (redis-server): a restarted old master that took writes is
/// saved to an RDB file of its own (`dbfilename pika-remedy-<tag>.rdb`, put back right after)
/// before its full resync; the file is read back by a redis-server started on it.
#[test]
fn redis_old_master_is_snapshotted_to_an_rdb_of_its_own() {
    use support::redis::RedisCluster;
    let mut rc = RedisCluster::start(1, None);
    let d = tempfile::Builder::new()
        .prefix("pika-remedy-diverged-redis-")
        .tempdir()
        .expect("temp dir");
    let text = format!(
        r#"[service]
events_file = "{events}"
[timeouts]
connect = "300ms"
command = "1s"
[policy]
confirm_window = "0s"
promote_timeout = "5s"
link_timeout = "3s"
detach_timeout = "1s"
lock_ttl = "60s"
diverged = "snapshot"
snapshot_timeout = "10s"
[coordinator]
kind = "local"
[coordinator.local]
dir = "{coord}"
[webhook]
allow_unauthenticated = true
{cluster}"#,
        events = d.path().join("events.jsonl").display(),
        coord = d.path().join("coord").display(),
        cluster = rc.cluster_toml("c", &[]),
    );
    let cfg = d.path().join("pika-remedy.toml");
    std::fs::write(&cfg, text).expect("config");
    let cfg = cfg.to_str().expect("utf-8").to_string();
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--config", &cfg]);
        cli(&all, Duration::from_secs(60))
    };
    let m = rc.master.addr().to_string();
    let (code, out, err) = run(&["record", "--cluster", "c", "--master", &m]);
    assert_eq!(code, 0, "{out}\n{err}");
    rc.master.kill9();
    let (code, out, err) = run(&["failover", "--cluster", "c"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let new_port = rc.replicas[0].port();
    wait_for(SYNC, "the replica is promoted", || {
        rc.replicas[0].role() == "master"
    });
    rc.master.restart();
    let old_port = rc.master.port();
    for i in 0..10 {
        rc.master
            .cmd(&["SET", &format!("div:{i}"), &format!("v{i}")]);
    }
    // `plan` shows the snapshot step with its commands.
    let (code, out, err) = run(&["plan", "--cluster", "c"]);
    assert_eq!(code, 0, "{out}\n{err}");
    for want in [
        ": diverged: claims master",
        ": BGSAVE",
        "CONFIG SET dbfilename pika-remedy-<unix time>.rdb",
        "rdb_bgsave_in_progress:0",
    ] {
        assert!(out.contains(want), "{want:?} in:\n{out}");
    }
    let (code, out, err) = run(&["demote", "--cluster", "c", "--node", &m, "--json"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    let text = v.to_string();
    let r = v
        .pointer("/steps")
        .or_else(|| v.pointer("/outcome/steps"))
        .and_then(Value::as_array)
        .and_then(|s| s.iter().find(|r| r["step"]["step"] == "diverged").cloned())
        .unwrap_or_else(|| panic!("no diverged step: {text}"));
    assert_eq!(r["ok"], true, "{r:#}");
    assert_eq!(r["snapshot"]["keys"].as_u64(), Some(10), "{r:#}");
    let path = PathBuf::from(r["snapshot"]["path"].as_str().expect("path"));
    assert!(path.is_file(), "{}", path.display());
    assert_eq!(
        rc.master.cmd(&["CONFIG", "GET", "dbfilename"]),
        "dbfilename\ndump.rdb",
        "the name is put back"
    );
    wait_for(SYNC, "the old master follows the new one", || {
        rc.master.is_linked_to(new_port)
    });
    assert_eq!(get(old_port, "div:0"), None, "gone live");
    // Read back: a redis-server started on a copy of the file.
    let back = start_redis_on_rdb(&path);
    for i in 0..10 {
        assert_eq!(
            get(back.port(), &format!("div:{i}")).as_deref(),
            Some(format!("v{i}").as_str())
        );
    }
    eprintln!("redis snapshot: {r}");
}
