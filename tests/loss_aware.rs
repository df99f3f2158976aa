//! No write silently discarded, end to end on real `redis-server`s:
//!
//! 1. **Loss-aware failover.** `serve` polls the master while both replicas are frozen
//!    (SIGSTOP) and it takes 16 MB of writes; the master is killed. The automatic failover is
//!    refused, and the refusal states the estimated loss; `POST …/failover` with
//!    `accept_data_loss` promotes the best replica anyway, and the audit event carries the
//!    accepted estimate (trigger, reason and `plan.expected_loss`).
//! 2. **Full-sync budget.** Master + 3 replicas, 2 of them attached to another master (another
//!    replication id): `plan` shows their repoints as full syncs with a wait between them, and a
//!    switchover runs them one after the other (the second starts after the first's link is up).

mod support;
#[path = "support/serve.rs"]
mod svc;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use support::redis::{info_field, wait_for, RedisCluster, RedisNode};
use svc::{cli, Service};

const CLUSTER: &str = "c";
const BEARER: &str = "loss-aware-test-token";

struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Setup {
    fn config_arg(&self) -> &str {
        self.config.to_str().expect("utf-8 path")
    }
}

/// A config for `cluster` with the local coordinator; `policy` is extra TOML for `[policy]`.
fn setup(cluster: &RedisCluster, policy: &str) -> Setup {
    let dir = tempfile::Builder::new()
        .prefix("pika-remedy-loss-")
        .tempdir()
        .expect("temp dir");
    let bearer = dir.path().join("bearer");
    std::fs::write(&bearer, format!("{BEARER}\n")).expect("write bearer");
    std::fs::create_dir_all(dir.path().join("coord")).expect("coord dir");
    let text = format!(
        r#"
[service]
instance_id = "loss-test"
events_file = "{events}"
poll_interval = "300ms"
[timeouts]
connect = "300ms"
command = "1s"
[policy]
confirm_window = "0s"
link_timeout = "5s"
{policy}
[coordinator]
kind = "local"
[coordinator.local]
dir = "{coord}"
[webhook]
bearer_token = {{ file = "{bearer}" }}
{cluster}"#,
        events = dir.path().join("events.jsonl").display(),
        coord = dir.path().join("coord").display(),
        bearer = bearer.display(),
        cluster = cluster.cluster_toml(CLUSTER, &[]),
    );
    let config = dir.path().join("pika-remedy.toml");
    std::fs::write(&config, text).expect("write config");
    Setup { dir, config }
}

fn record(s: &Setup, master: &RedisNode) {
    let (code, out, err) = cli(
        &[
            "record",
            "--config",
            s.config_arg(),
            "--cluster",
            CLUSTER,
            "--master",
            &master.addr().to_string(),
        ],
        Duration::from_secs(20),
    );
    assert_eq!(code, 0, "record failed:\n{out}\n{err}");
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn pid_of(n: &RedisNode) -> u32 {
    info_field(&n.cmd(&["INFO", "server"]), "process_id")
        .and_then(|p| p.parse().ok())
        .expect("process_id")
}

/// SIGSTOP by pid; SIGCONT on drop, so a failing test never leaves a frozen redis-server.
struct Frozen(Vec<u32>);

impl Frozen {
    fn freeze(nodes: &[&RedisNode]) -> Frozen {
        let pids: Vec<u32> = nodes.iter().map(|n| pid_of(n)).collect();
        for p in &pids {
            svc::signal_pid(*p, "STOP");
        }
        Frozen(pids)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::process::Command::new("kill")
                .args(["-CONT", &p.to_string()])
                .status();
        }
    }
}

fn events_file(s: &Setup) -> Vec<Value> {
    let path: &Path = &s.dir.path().join("events.jsonl");
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_replicas_refuse_with_the_loss_then_accept_data_loss_records_it() {
    let mut c = RedisCluster::start(2, None);
    let s = setup(&c, "max_lag_bytes = 65536");
    record(&s, &c.master);
    let svc = Service::start(&s.config).await;
    // The poller has seen the master alive (its offset) before the replicas freeze.
    tokio::time::sleep(Duration::from_millis(900)).await;

    let frozen = Frozen::freeze(&c.replicas.iter().collect::<Vec<_>>());
    // 16 MB the frozen replicas cannot read (more than loopback socket buffers hold for them,
    // less than the replica output buffer soft limit of 64 MB).
    let value = "x".repeat(1024 * 1024);
    for i in 0..16 {
        c.master.cmd(&["SET", &format!("k{i}"), &value]);
    }
    let master_offset: u64 = info_field(&c.master.info_replication(), "master_repl_offset")
        .and_then(|v| v.parse().ok())
        .expect("master_repl_offset");
    // Let a few polls see the master at that offset.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    c.master.kill9();
    drop(frozen);
    let mport = c.master.port().to_string();
    wait_for(Duration::from_secs(15), "replica links down", || {
        c.replicas.iter().all(|r| {
            r.try_cmd(&["INFO", "replication"]).is_ok_and(|i| {
                info_field(&i, "master_link_status").as_deref() == Some("down")
                    && info_field(&i, "master_port").as_deref() == Some(mport.as_str())
            })
        })
    });

    // The service's own trigger (the master is unreachable) decides and is refused for lag.
    let mut refusal = String::new();
    wait_for(
        Duration::from_secs(20),
        "a lag refusal in the audit trail",
        || {
            refusal = events_file(&s)
                .iter()
                .filter_map(|e| e["reason"].as_str().map(str::to_string))
                .find(|r| r.contains("behind the master's last seen offset"))
                .unwrap_or_default();
            !refusal.is_empty()
        },
    );
    assert!(
        refusal.contains("estimated loss if promoted: ") && refusal.contains(" bytes"),
        "{refusal}"
    );
    assert!(refusal.contains("--accept-data-loss"), "{refusal}");
    for r in &c.replicas {
        assert_eq!(r.role(), "slave", "{} promoted despite the lag", r.addr());
    }

    // The operator accepts the loss.
    let (st, body) = svc
        .post(
            &format!("/v1/clusters/{CLUSTER}/failover"),
            BEARER,
            br#"{"accept_data_loss": true}"#.to_vec(),
        )
        .await;
    assert_eq!(st, 200, "{body}");
    let v = json(&body);
    let out = &v["outcome"];
    assert_eq!(out["result"]["kind"], "applied", "{out:#}");
    assert_eq!(out["trigger"]["accept_data_loss"], true, "{out:#}");
    let reason = out["plan"]["reason"].as_str().expect("reason");
    assert!(
        reason.contains("operator requested failover accepting data loss")
            && reason.contains("accepted estimated loss: "),
        "{reason}"
    );
    let loss = &out["plan"]["expected_loss"];
    assert_eq!(loss["kind"], "bytes", "{loss:#}");
    let total = loss["total"].as_u64().expect("total");
    assert!(
        total > 65536 && total <= master_offset,
        "estimated loss {total} (master offset {master_offset})"
    );
    assert!(loss["master_seen_at"].as_u64().is_some(), "{loss:#}");
    let promoted = out["plan"]["action"]["promote"].as_str().expect("promote");
    let p = c
        .replicas
        .iter()
        .find(|r| r.addr().to_string() == promoted)
        .expect("a replica was promoted");
    assert_eq!(p.role(), "master");

    // The audit trail (file) has the accepted estimate.
    let evs = events_file(&s);
    let accepted = evs
        .iter()
        .find(|e| e["outcome"]["trigger"]["accept_data_loss"] == true)
        .unwrap_or_else(|| panic!("no accepted failover in {evs:#?}"));
    assert_eq!(accepted["outcome"]["plan"]["expected_loss"]["total"], total);
    assert!(accepted["reason"]
        .as_str()
        .is_some_and(|r| r.contains("accepted estimated loss")));
    drop(svc);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_syncs_are_planned_and_run_one_at_a_time() {
    let c = RedisCluster::start(3, None);
    // Another master with data: replicas 2 and 3 follow it, so their replication id is not in
    // the cluster's history and their repoint is a full sync.
    let other = RedisNode::start_master();
    let value = "y".repeat(64 * 1024);
    for i in 0..64 {
        other.cmd(&["SET", &format!("o{i}"), &value]);
    }
    let oport = other.port().to_string();
    for r in &c.replicas[1..] {
        r.cmd(&["REPLICAOF", "127.0.0.1", &oport]);
    }
    wait_for(
        Duration::from_secs(15),
        "replicas 2, 3 linked elsewhere",
        || c.replicas[1..].iter().all(|r| r.is_linked_to(other.port())),
    );
    let s = setup(&c, "");
    record(&s, &c.master);
    let (r2, r3) = (c.replicas[1].addr(), c.replicas[2].addr());

    // The plan (periodic: repoint both to the master) shows two full syncs, the second waiting.
    let (code, text, err) = cli(
        &["plan", "--config", s.config_arg(), "--cluster", CLUSTER],
        Duration::from_secs(20),
    );
    assert_eq!(code, 0, "{text}\n{err}");
    assert!(
        text.contains("full sync: replication id"),
        "plan does not show the full sync:\n{text}"
    );
    assert!(
        text.contains(&format!(
            "{r3}: poll INFO until master_link_status:up (a full sync still copying"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("{r2}: poll INFO until master_link_status:up from")),
        "no wait for {r2}'s full sync:\n{text}"
    );

    // A switchover to replica 1 repoints all others: the two full syncs run one at a time.
    let to = c.replicas[0].addr().to_string();
    let (code, out, err) = cli(
        &[
            "switchover",
            "--config",
            s.config_arg(),
            "--cluster",
            CLUSTER,
            "--to",
            &to,
            "-y",
            "--json",
        ],
        Duration::from_secs(60),
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let o = json(&out);
    assert_eq!(o["result"]["kind"], "applied", "{o:#}");
    assert_eq!(o["plan"]["expected_loss"]["kind"], "none", "{o:#}");
    let steps = o["steps"].as_array().expect("steps");
    let pos = |pred: &dyn Fn(&Value) -> bool| steps.iter().position(pred);
    let follow_of = |node: &str| {
        pos(&|st: &Value| {
            st["step"]["step"] == "follow"
                && st["step"]["node"] == node
                && st["step"]["master"] == to.as_str()
        })
        .unwrap_or_else(|| panic!("no follow of {node} in {steps:#?}"))
    };
    let (f2, f3) = (follow_of(&r2.to_string()), follow_of(&r3.to_string()));
    assert!(
        steps[f2]["step"]["full_sync"].is_string(),
        "{:#}",
        steps[f2]
    );
    assert!(
        steps[f3]["step"]["full_sync"].is_string(),
        "{:#}",
        steps[f3]
    );
    let wait = pos(&|st: &Value| {
        st["step"]["step"] == "wait_synced" && st["step"]["node"] == r2.to_string().as_str()
    })
    .unwrap_or_else(|| panic!("no wait for {r2} in {steps:#?}"));
    // Serialised: r3's full sync starts only after r2's link came up.
    assert!(
        f2 < wait && wait < f3,
        "order: follow {f2}, wait {wait}, follow {f3}"
    );
    assert_eq!(steps[wait]["ok"], true, "{:#}", steps[wait]);
    assert!(
        steps[wait]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("full sync done, link up")),
        "{:#}",
        steps[wait]
    );
    let new_port = c.replicas[0].port();
    wait_for(
        Duration::from_secs(15),
        "every node follows the new master",
        || {
            c.replicas[1..]
                .iter()
                .chain(std::iter::once(&c.master))
                .all(|n| n.is_linked_to(new_port))
        },
    );
    drop(other);
}

/// Real Pika: a switchover in a set (master + 1 replica) whose config also lists two nodes of
/// another Pika set (another ReplicationID). Both are planned as full syncs (cleared first) and
/// run one at a time: the second is cleared only after the first's link is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pika_full_syncs_of_foreign_replicas_are_planned_and_serialised() {
    use support::real_pika::{pika_or_skip, PikaOptions, PikaSet};
    let Some(bin) = pika_or_skip("pika_full_syncs_of_foreign_replicas_are_planned_and_serialised")
    else {
        return;
    };
    let a = PikaSet::start(&bin, 1, PikaOptions::default());
    a.wait_linked(Duration::from_secs(30));
    let b = PikaSet::start(&bin, 2, PikaOptions::default());
    b.wait_linked(Duration::from_secs(30));
    for i in 0..50 {
        b.master.cmd(&["SET", &format!("b{i}"), "v"]);
    }
    let dir = tempfile::Builder::new()
        .prefix("pika-remedy-loss-pika-")
        .tempdir()
        .expect("temp dir");
    std::fs::create_dir_all(dir.path().join("coord")).expect("coord dir");
    let nodes: Vec<String> = a
        .addrs()
        .iter()
        .chain(
            b.replicas
                .iter()
                .map(|r| r.addr())
                .collect::<Vec<_>>()
                .iter(),
        )
        .map(|n| format!("{{ addr = \"{n}\" }}"))
        .collect();
    let config = dir.path().join("pika-remedy.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[timeouts]
connect = "500ms"
command = "3s"
[policy]
confirm_window = "0s"
link_timeout = "20s"
promote_timeout = "15s"
switchover_pause = "10s"
lock_ttl = "5m"
[coordinator]
kind = "local"
[coordinator.local]
dir = "{coord}"
[webhook]
allow_unauthenticated = true
[[cluster]]
name = "{CLUSTER}"
nodes = [{nodes}]
"#,
            coord = dir.path().join("coord").display(),
            nodes = nodes.join(", ")
        ),
    )
    .expect("write config");
    let cfg = config.to_str().expect("utf-8");
    let (code, out, err) = cli(
        &[
            "record",
            "--config",
            cfg,
            "--cluster",
            CLUSTER,
            "--master",
            &a.master.addr().to_string(),
        ],
        Duration::from_secs(30),
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let to = a.replicas[0].addr().to_string();
    let (y1, y2) = (
        b.replicas[0].addr().to_string(),
        b.replicas[1].addr().to_string(),
    );
    let (code, out, err) = cli(
        &[
            "switchover",
            "--config",
            cfg,
            "--cluster",
            CLUSTER,
            "--to",
            &to,
            "-y",
            "--json",
        ],
        Duration::from_secs(180),
    );
    assert_eq!(code, 0, "{out}\n{err}");
    let o = json(&out);
    assert_eq!(o["result"]["kind"], "applied", "{o:#}");
    let steps = o["steps"].as_array().expect("steps");
    let at = |kind: &str, node: &str| {
        steps
            .iter()
            .position(|s| s["step"]["step"] == kind && s["step"]["node"] == node)
            .unwrap_or_else(|| panic!("no {kind} of {node} in {steps:#?}"))
    };
    let (f1, f2) = (at("follow", &y1), at("follow", &y2));
    for f in [f1, f2] {
        assert!(
            steps[f]["step"]["full_sync"]
                .as_str()
                .is_some_and(|w| w.starts_with("full sync: replication id differs")),
            "{:#}",
            steps[f]
        );
    }
    let wait = at("wait_synced", &y1);
    let clear2 = at("clear_replication_id", &y2);
    assert!(
        f1 < wait && wait < clear2 && clear2 < f2,
        "order: follow y1 {f1}, wait {wait}, clear y2 {clear2}, follow y2 {f2}"
    );
    assert_eq!(steps[wait]["ok"], true, "{:#}", steps[wait]);
    let port = a.replicas[0].port();
    wait_for(Duration::from_secs(60), "both foreign nodes synced", || {
        b.replicas.iter().all(|r| r.is_linked_to(port))
    });
}
