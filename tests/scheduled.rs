//! Scheduled switchovers (`switchover --at`), end to end: the real binary (`serve` and the
//! CLI), real `redis-server` nodes, the local coordinator and a real etcd with two `serve`
//! instances. Scheduled a few seconds ahead, the switchover happens (status showed it before,
//! the audit trail has it); cancelled, nothing happens; while paused it is held and expires;
//! two instances on one etcd run it exactly once. Every wait is bounded.

mod support;
#[path = "support/serve.rs"]
mod svc;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use support::etcd::EtcdServer;
use support::redis::{wait_for, RedisCluster};
use svc::{cli, Service};

const CLUSTER: &str = "sched";

struct Inst {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Inst {
    fn events(&self) -> Vec<Value> {
        let text =
            std::fs::read_to_string(self.dir.path().join("events.jsonl")).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

/// A config for one instance; `coordinator` is its TOML (local dir or etcd).
fn instance(coordinator: &str, cluster_toml: &str, id: &str) -> Inst {
    let dir = tempfile::Builder::new()
        .prefix("pika-remedy-sched-")
        .tempdir()
        .expect("temp dir");
    let text = format!(
        r#"[service]
instance_id = "{id}"
events_file = "{events}"
poll_interval = "200ms"
[timeouts]
connect = "200ms"
command = "500ms"
[policy]
confirm_window = "0s"
promote_timeout = "2s"
link_timeout = "3s"
detach_timeout = "500ms"
switchover_pause = "2s"
lock_ttl = "20s"
{coordinator}
[webhook]
allow_unauthenticated = true
{cluster_toml}"#,
        events = dir.path().join("events.jsonl").display(),
    );
    let config = dir.path().join("pika-remedy.toml");
    std::fs::write(&config, text).expect("write config");
    Inst { dir, config }
}

fn local(dir: &Path) -> String {
    format!(
        "[coordinator]\nkind = \"local\"\n[coordinator.local]\ndir = \"{}\"\n",
        dir.display()
    )
}

async fn run(inst: &Inst, args: &[&str]) -> (i32, String, String) {
    let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    all.push("--config".into());
    all.push(inst.config.display().to_string());
    tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = all.iter().map(String::as_str).collect();
        cli(&a, Duration::from_secs(30))
    })
    .await
    .expect("cli task")
}

async fn status_json(inst: &Inst) -> Value {
    let (_, out, err) = run(inst, &["status", "--json", "--cluster", CLUSTER]).await;
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("status --json: {e}\n{out}\n{err}"))
}

async fn record(inst: &Inst, c: &RedisCluster) {
    let m = c.master.addr().to_string();
    let (code, out, err) = run(inst, &["record", "--cluster", CLUSTER, "--master", &m]).await;
    assert_eq!(code, 0, "record: {out}{err}");
}

/// Reconcile events run by the schedule, from every instance's events file.
fn scheduled_reconciles(insts: &[&Inst]) -> Vec<Value> {
    insts
        .iter()
        .flat_map(|i| i.events())
        .filter(|e| e["source"] == "schedule" && e["kind"] == "reconcile")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_switchover_runs_once_at_its_time_and_is_audited() {
    let c = RedisCluster::start(1, None);
    let coord = tempfile::tempdir().expect("coord dir");
    let inst = instance(
        &local(coord.path()),
        &c.cluster_toml(CLUSTER, &[]),
        "sched-a",
    );
    record(&inst, &c).await;
    let svc = Service::start(&inst.config).await;
    let to = c.replicas[0].addr().to_string();

    let (code, out, err) = run(
        &inst,
        &[
            "switchover",
            "--cluster",
            CLUSTER,
            "--to",
            &to,
            "--at",
            "+3s",
            "--reason",
            "kernel update",
        ],
    )
    .await;
    assert_eq!(code, 0, "schedule: {out}{err}");
    assert!(out.contains("switchover scheduled by"), "{out}");

    // Visible before it runs: status (JSON and text), the API and the metric.
    let st = status_json(&inst).await;
    let sw = &st["clusters"][0]["scheduled_switchover"];
    assert_eq!(sw["state"], "waiting", "{st}");
    assert_eq!(sw["to"], to.as_str(), "{st}");
    assert_eq!(sw["reason"], "kernel update", "{st}");
    support::schema::assert_valid("status_report", &st);
    let (_, text, _) = run(&inst, &["status", "--cluster", CLUSTER]).await;
    assert!(
        text.contains("scheduled: switchover of cluster sched to"),
        "{text}"
    );
    let (code, body) = svc.get("/v1/controls", "").await;
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["switchovers"][0]["cluster"], CLUSTER, "{v}");
    support::schema::assert_valid("controls", &v);
    let mut metric = String::new();
    for _ in 0..50 {
        metric = svc.get("/metrics", "").await.1;
        if metric
            .contains("pika_remedy_switchover_scheduled_timestamp_seconds{cluster=\"sched\"} 1")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        metric.contains("pika_remedy_switchover_scheduled_timestamp_seconds{cluster=\"sched\"} 1"),
        "{metric}"
    );
    // Not yet.
    assert_eq!(c.replicas[0].role(), "slave");

    wait_for(Duration::from_secs(20), "the scheduled switchover", || {
        c.replicas[0].role() == "master" && c.master.is_linked_to(c.replicas[0].port())
    });
    wait_for(Duration::from_secs(10), "its audit entry", || {
        !scheduled_reconciles(&[&inst]).is_empty()
    });
    let evs = scheduled_reconciles(&[&inst]);
    assert_eq!(evs.len(), 1, "{evs:?}\nlog:\n{}", svc.log());
    assert_eq!(evs[0]["outcome"]["result"]["kind"], "applied", "{evs:?}");
    assert!(
        inst.events().iter().any(|e| e["reason"]
            .as_str()
            .unwrap_or("")
            .contains("started by instance sched-a")),
        "{:?}",
        inst.events()
    );
    // Gone from the schedule once taken; the record names the new master.
    let st = status_json(&inst).await;
    assert!(st["clusters"][0]["scheduled_switchover"].is_null(), "{st}");
    assert_eq!(st["clusters"][0]["record"]["master"], to.as_str(), "{st}");
    let (_, hist, _) = run(&inst, &["history", "--cluster", CLUSTER]).await;
    assert!(hist.contains("switchover scheduled by"), "{hist}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_switchover_does_nothing_and_a_second_one_is_refused() {
    let c = RedisCluster::start(1, None);
    let coord = tempfile::tempdir().expect("coord dir");
    let inst = instance(
        &local(coord.path()),
        &c.cluster_toml(CLUSTER, &[]),
        "sched-b",
    );
    record(&inst, &c).await;
    let svc = Service::start(&inst.config).await;

    let (code, out, err) = run(&inst, &["switchover", "--cluster", CLUSTER, "--at", "+3s"]).await;
    assert_eq!(code, 0, "{out}{err}");
    // One per cluster: a second is refused (exit 1), unless it replaces the first.
    let (code, out, _) = run(&inst, &["switchover", "--cluster", CLUSTER, "--at", "+4s"]).await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("already scheduled"), "{out}");
    let (code, out, err) = run(
        &inst,
        &[
            "switchover",
            "--cluster",
            CLUSTER,
            "--at",
            "+4s",
            "--replace",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    // A time in the past is a usage error.
    let (code, _, err) = run(
        &inst,
        &[
            "switchover",
            "--cluster",
            CLUSTER,
            "--at",
            "2001-01-01T00:00:00Z",
        ],
    )
    .await;
    assert_eq!(code, 2, "{err}");

    let (code, out, err) = run(&inst, &["switchover", "--cluster", CLUSTER, "--cancel"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("cancelled by"), "{out}");
    let (code, out, _) = run(&inst, &["switchover", "--cluster", CLUSTER, "--cancel"]).await;
    assert_eq!(code, 1, "nothing left to cancel: {out}");

    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(c.master.role(), "master", "log:\n{}", svc.log());
    assert_eq!(c.replicas[0].role(), "slave");
    assert!(scheduled_reconciles(&[&inst]).is_empty());
    assert!(inst
        .events()
        .iter()
        .any(|e| e["reason"].as_str().unwrap_or("").contains("cancelled by")));
    let st = status_json(&inst).await;
    assert!(st["clusters"][0]["scheduled_switchover"].is_null(), "{st}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_cluster_holds_the_switchover_until_it_expires() {
    let c = RedisCluster::start(1, None);
    let coord = tempfile::tempdir().expect("coord dir");
    let inst = instance(
        &local(coord.path()),
        &c.cluster_toml(CLUSTER, &[]),
        "sched-c",
    );
    record(&inst, &c).await;
    let svc = Service::start(&inst.config).await;
    let (code, out, err) = run(
        &inst,
        &["pause", "--cluster", CLUSTER, "--reason", "freeze"],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = run(
        &inst,
        &[
            "switchover",
            "--cluster",
            CLUSTER,
            "--at",
            "+2s",
            "--max-delay",
            "2s",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    wait_for(Duration::from_secs(10), "the held note", || {
        inst.events().iter().any(|e| {
            e["reason"]
                .as_str()
                .unwrap_or("")
                .contains("held: the cluster is paused")
        })
    });
    wait_for(Duration::from_secs(15), "the expiry", || {
        inst.events().iter().any(|e| {
            e["reason"]
                .as_str()
                .unwrap_or("")
                .contains("expired without running")
        })
    });
    assert_eq!(c.master.role(), "master", "log:\n{}", svc.log());
    assert_eq!(c.replicas[0].role(), "slave");
    assert!(scheduled_reconciles(&[&inst]).is_empty());
    let st = status_json(&inst).await;
    assert!(st["clusters"][0]["scheduled_switchover"].is_null(), "{st}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_on_etcd_run_a_scheduled_switchover_exactly_once() {
    let etcd = EtcdServer::start_new();
    let c = RedisCluster::start(1, None);
    let coord = format!(
        "[coordinator]\nkind = \"etcd\"\n[coordinator.etcd]\nendpoints = [\"{}\"]\n",
        etcd.endpoint()
    );
    let toml = c.cluster_toml(CLUSTER, &[]);
    let ia = instance(&coord, &toml, "sched-e1");
    let ib = instance(&coord, &toml, "sched-e2");
    record(&ia, &c).await;
    let a = Service::start(&ia.config).await;
    let b = Service::start(&ib.config).await;
    let before = status_json(&ia).await["clusters"][0]["record"]["epoch"]
        .as_u64()
        .expect("epoch");

    let (code, out, err) = run(&ib, &["switchover", "--cluster", CLUSTER, "--at", "+3s"]).await;
    assert_eq!(code, 0, "{out}{err}");
    wait_for(Duration::from_secs(20), "the scheduled switchover", || {
        c.replicas[0].role() == "master"
    });
    // Both instances had their chance to (wrongly) run it again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let evs = scheduled_reconciles(&[&ia, &ib]);
    let reasons: Vec<&str> = evs
        .iter()
        .take(5)
        .map(|e| e["reason"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        evs.len(),
        1,
        "exactly one reconcile from the schedule: {reasons:?}\nA:\n{}\nB:\n{}",
        a.log(),
        b.log()
    );
    let started: Vec<Value> = ia
        .events()
        .into_iter()
        .chain(ib.events())
        .filter(|e| {
            e["reason"]
                .as_str()
                .unwrap_or("")
                .contains("started by instance")
        })
        .collect();
    assert_eq!(started.len(), 1, "{started:?}");
    let after = status_json(&ia).await["clusters"][0]["record"]["epoch"]
        .as_u64()
        .expect("epoch");
    assert_eq!(after, before + 1, "one change of master");
    assert_eq!(c.master.role(), "slave");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_lock_delays_the_scheduled_switchover_until_it_is_free() {
    use pika_remedy::coord::{local::Local, Coordinator, Holder, LockOutcome};
    let c = RedisCluster::start(1, None);
    let coord = tempfile::tempdir().expect("coord dir");
    let inst = instance(
        &local(coord.path()),
        &c.cluster_toml(CLUSTER, &[]),
        "sched-d",
    );
    record(&inst, &c).await;
    let svc = Service::start(&inst.config).await;
    // Someone else (this test process) holds the cluster's lock.
    let other = Local::new(coord.path()).expect("local");
    let holder = Holder {
        instance: "maintenance-script".into(),
        host: "test".into(),
        pid: std::process::id(),
        since: 0,
    };
    let lease = match other
        .try_lock(CLUSTER, &holder, Duration::from_secs(60))
        .await
        .expect("try_lock")
    {
        LockOutcome::Acquired(l) => l,
        o => panic!("lock: {o:?}"),
    };
    let (code, out, err) = run(&inst, &["switchover", "--cluster", CLUSTER, "--at", "+2s"]).await;
    assert_eq!(code, 0, "{out}{err}");
    wait_for(Duration::from_secs(15), "a lock_held attempt", || {
        scheduled_reconciles(&[&inst])
            .iter()
            .any(|e| e["outcome"]["result"]["kind"] == "lock_held")
    });
    assert_eq!(
        c.master.role(),
        "master",
        "nothing ran while the lock was held"
    );
    other.release(lease).await.expect("release");
    wait_for(
        Duration::from_secs(30),
        "the switchover once the lock is free",
        || c.replicas[0].role() == "master",
    );
    wait_for(Duration::from_secs(10), "its applied audit entry", || {
        scheduled_reconciles(&[&inst])
            .iter()
            .any(|e| e["outcome"]["result"]["kind"] == "applied")
    });
    drop(svc);
}
