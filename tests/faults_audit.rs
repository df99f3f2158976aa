//! The audit trail and the log stay bounded under a webhook flood: repeated "no action"
//! outcomes become one event with a count, the events file rotates at its size cap, repeated
//! warnings are rate-limited, and an acted-on event is never lost to any of that.
//!
//! The flood runs the real `pika-remedy serve` against real `redis-server` nodes with the local
//! coordinator. `PIKA_REMEDY_FLOOD_WEBHOOKS` sets the number of webhooks (default 10 000, so it
//! fits a 2-core CI run; the issue's measurement is 100 000).

mod support;
#[path = "support/serve.rs"]
mod svc;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::redis::{wait_for, RedisCluster};
use svc::{cli, Service};

const CLUSTER: &str = "mymaster";
const BEARER: &str = "flood-t0ken-Q4";
const FIXTURE_INSTANCE: &str = "redis://127.0.0.1:7000";

fn shared() -> PathBuf {
    std::env::var("PIKA_REMEDY_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"))
}

fn fixture(name: &str) -> String {
    let p = shared().join("fixtures/alertmanager").join(name);
    support::fixtures::starts_now(
        &std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
    )
}

fn flood_size() -> usize {
    std::env::var("PIKA_REMEDY_FLOOD_WEBHOOKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

/// Sum of the sizes of `events.jsonl` and its rotated files.
fn events_bytes(dir: &Path) -> (u64, usize) {
    let mut total = 0;
    let mut files = 0;
    for e in std::fs::read_dir(dir).expect("read dir").flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with("events.jsonl") {
            total += e.metadata().map(|m| m.len()).unwrap_or(0);
            files += 1;
        }
    }
    (total, files)
}

/// Every line of the events files, oldest file first.
fn event_lines(dir: &Path) -> Vec<Value> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("events.jsonl"))
        .collect();
    // events.jsonl.3 (oldest) … events.jsonl.1, events.jsonl (newest).
    names.sort_by_key(|n| {
        std::cmp::Reverse(
            n.rsplit_once('.')
                .and_then(|(_, k)| k.parse::<u32>().ok())
                .unwrap_or(0),
        )
    });
    names
        .iter()
        .flat_map(|n| {
            std::fs::read_to_string(dir.join(n))
                .unwrap_or_default()
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).expect("JSON line"))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_flood_leaves_bounded_events_and_log() {
    let n = flood_size();
    let mut cluster = RedisCluster::start(2, None);
    let dir = tempfile::Builder::new()
        .prefix("pika-remedy-flood-")
        .tempdir()
        .expect("temp dir");
    let bearer = dir.path().join("bearer");
    std::fs::write(&bearer, BEARER).expect("bearer");
    let text = format!(
        r#"
[service]
instance_id = "flood"
events_file = "{events}"
[timeouts]
connect = "500ms"
command = "2s"
[policy]
confirm_window = "200ms"
link_timeout = "5s"
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
        cluster = cluster.cluster_toml(CLUSTER, &[]),
    );
    let config = dir.path().join("pika-remedy.toml");
    std::fs::write(&config, text).expect("config");
    let (code, out, err) = cli(
        &[
            "record",
            "--config",
            config.to_str().expect("utf8"),
            "--cluster",
            CLUSTER,
            "--master",
            &cluster.master.addr().to_string(),
        ],
        Duration::from_secs(20),
    );
    assert_eq!(code, 0, "record failed:\n{out}\n{err}");
    let svc = Arc::new(Service::start(&config).await);

    let master = cluster.master.addr().to_string();
    let replica = cluster.replicas[0].addr().to_string();
    let firing = fixture("firing.json");
    let master_down = firing.replace(FIXTURE_INSTANCE, &format!("redis://{master}"));
    let role_mismatch = firing
        .replace(FIXTURE_INSTANCE, &format!("redis://{replica}"))
        .replace("\"RedisDown\"", "\"PikaRoleMismatch\"");
    let resolved = fixture("resolved.json").replace(FIXTURE_INSTANCE, &format!("redis://{master}"));
    let unknown_cluster = master_down.replace("\"cluster\":\"mymaster\"", "\"cluster\":\"nosuch\"");
    let not_a_trigger = fixture("firing-replica-link-down.json");
    // (body, bearer, content type)
    let kinds: Vec<(String, &str, &str)> = vec![
        (master_down.clone(), BEARER, "application/json"),
        (role_mismatch, BEARER, "application/json"),
        (resolved, BEARER, "application/json"),
        (unknown_cluster, BEARER, "application/json"),
        (not_a_trigger, BEARER, "application/json"),
        (master_down.clone(), "wrong-token", "application/json"),
        ("{not json".to_string(), BEARER, "application/json"),
        (master_down.clone(), BEARER, "text/plain"),
    ];
    let kinds = Arc::new(kinds);

    let next = Arc::new(AtomicUsize::new(0));
    let statuses = Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::<
        u16,
        usize,
    >::new()));
    let t = Instant::now();
    let workers = 16;
    let half = n / 2;
    let killed = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (svc, kinds, next, statuses) = (
            Arc::clone(&svc),
            Arc::clone(&kinds),
            Arc::clone(&next),
            Arc::clone(&statuses),
        );
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return;
                }
                let (body, token, ct) = &kinds[i % kinds.len()];
                let r = svc
                    .client
                    .post(svc.url("/v1/alerts"))
                    .bearer_auth(token)
                    .header("content-type", *ct)
                    .body(body.clone())
                    .send()
                    .await;
                let st = match r {
                    Ok(r) => {
                        let st = r.status().as_u16();
                        let _ = r.bytes().await;
                        st
                    }
                    Err(_) => 0,
                };
                *statuses.lock().expect("statuses").entry(st).or_default() += 1;
            }
        }));
    }
    // Half way through, the master really dies: the flood's own master-down alerts must fail
    // over exactly once, and that acted-on event must be in the events file.
    while next.load(Ordering::Relaxed) < half && t.elapsed() < Duration::from_secs(600) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.master.kill9();
    killed.store(1, Ordering::Relaxed);
    for task in tasks {
        task.await.expect("worker");
    }
    let took = t.elapsed();
    let statuses = statuses.lock().expect("statuses").clone();
    // Let the last run's aggregate reach the file, then stop the service cleanly.
    let replica_ports: Vec<u16> = cluster.replicas.iter().map(|r| r.port()).collect();
    wait_for(Duration::from_secs(20), "a replica was promoted", || {
        cluster.replicas.iter().any(|r| r.role() == "master")
    });
    assert_eq!(replica_ports.len(), 2);
    svc.signal("TERM");
    let mut svc = Arc::try_unwrap(svc).unwrap_or_else(|_| panic!("service still shared"));
    let st = svc.wait_exit(Duration::from_secs(20)).await;
    assert!(st.is_some(), "serve did not exit");

    let log = svc.log();
    let (ev_bytes, ev_files) = events_bytes(dir.path());
    let lines = event_lines(dir.path());
    let warn_lines = log.lines().filter(|l| l.contains("WARN")).count();
    eprintln!(
        "{n} webhooks in {took:?} ({:.0}/s); statuses {statuses:?}; events: {ev_bytes} bytes in {ev_files} file(s), {} lines; log: {} bytes, {} lines ({warn_lines} WARN)",
        n as f64 / took.as_secs_f64(),
        lines.len(),
        log.len(),
        log.lines().count(),
    );
    if std::env::var_os("PIKA_REMEDY_FLOOD_SHOW").is_some() {
        eprintln!("--- log ---\n{log}\n--- events ---");
        for l in &lines {
            eprintln!(
                "{} {} {} count={} {}",
                l["seq"], l["kind"], l["cluster"], l["count"], l["reason"]
            );
        }
    }
    let applied: Vec<&Value> = lines
        .iter()
        .filter(|e| {
            e["kind"] == "reconcile"
                && e["outcome"]["result"]["kind"] == "applied"
                && e["outcome"]["plan"]["action"]["kind"] == "failover"
        })
        .collect();
    assert_eq!(
        applied.len(),
        1,
        "exactly one failover, recorded once: {applied:#?}"
    );
    assert!(killed.load(Ordering::Relaxed) == 1);
    // Bounds that do not grow with the number of identical webhooks (the same for 100 000).
    assert!(
        ev_bytes < 256 * 1024,
        "events files hold {ev_bytes} bytes after {n} webhooks"
    );
    assert!(
        log.len() < 256 * 1024,
        "log holds {} bytes after {n} webhooks",
        log.len()
    );
}

fn not_acted(reason: String) -> pika_remedy::service::events::NewEvent {
    pika_remedy::service::events::NewEvent::not_acted(
        pika_remedy::service::events::EventKind::Ignored,
        Some(CLUSTER.into()),
        pika_remedy::service::events::TriggerSource::Alertmanager,
        Vec::new(),
        reason,
    )
}

fn applied(i: usize) -> pika_remedy::service::events::NewEvent {
    use pika_remedy::decide::{Plan, Trigger};
    use pika_remedy::reconcile::{Outcome, Result_};
    let outcome = Outcome {
        cluster: CLUSTER.into(),
        trigger: Trigger::MasterDown,
        plan: Plan::no_action(format!("acted {i}")),
        result: Result_::Applied,
        steps: Vec::new(),
        observation: Vec::new(),
        millis: 1,
        retryable: false,
        hooks: Vec::new(),
    };
    pika_remedy::service::events::NewEvent {
        kind: pika_remedy::service::events::EventKind::Reconcile,
        cluster: Some(CLUSTER.into()),
        source: pika_remedy::service::events::TriggerSource::Alertmanager,
        trigger: Some(Trigger::MasterDown),
        alerts: Vec::new(),
        alerts_omitted: 0,
        reason: format!("acted {i}"),
        outcome: Some(outcome),
    }
}

/// The cap rotates whole files and only ever removes the oldest one: the retained files hold
/// an unbroken sequence up to the newest event, acted-on events included; repeats add nothing
/// per repeat.
#[test]
fn events_file_rotates_at_its_cap_and_drops_only_the_oldest_file() {
    use pika_remedy::service::events::{EventLog, FileCap};
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("events.jsonl");
    let cap = FileCap {
        max_bytes: 8192,
        keep: 4,
    };
    let log = EventLog::open_capped(100, Some(&path), cap).expect("open");
    let mut last_seq = 0;
    for i in 0..5_000 {
        // Distinct reasons: nothing folds, so the file has to rotate.
        let e = if i % 50 == 0 {
            log.record(applied(i))
        } else {
            log.record(not_acted(format!("ignored: distinct reason {i}")))
        };
        last_seq = e.seq;
    }
    let (bytes, files) = events_bytes(dir.path());
    assert_eq!(files, 4, "the current file and 3 rotated ones");
    assert!(
        bytes <= cap.max_bytes * cap.keep as u64,
        "{bytes} bytes in {files} files"
    );
    let lines = event_lines(dir.path());
    let seqs: Vec<u64> = lines
        .iter()
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect();
    let first = seqs[0];
    assert_eq!(
        *seqs.last().expect("lines"),
        last_seq,
        "the newest event is there"
    );
    assert_eq!(
        seqs,
        (first..=last_seq).collect::<Vec<_>>(),
        "retained files hold an unbroken run of events (only whole oldest files went)"
    );
    let acted = lines
        .iter()
        .filter(|e| e["outcome"]["result"]["kind"] == "applied")
        .count() as u64;
    assert_eq!(
        acted,
        (first..=last_seq).filter(|s| (s - 1) % 50 == 0).count() as u64,
        "every acted-on event in the retained range is present"
    );

    // 10 000 identical repeats: one event, its count written when the run ends.
    let before = events_bytes(dir.path()).0;
    for _ in 0..10_000 {
        log.record(not_acted("ignored: the same reason".into()));
    }
    let e = log.record(applied(99_999));
    let after = events_bytes(dir.path()).0;
    assert!(
        after - before < 2048,
        "10 000 repeats grew the files by {} bytes",
        after - before
    );
    let lines = event_lines(dir.path());
    let folded = lines
        .iter()
        .rev()
        .find(|l| l["reason"] == "ignored: the same reason")
        .expect("the folded event");
    assert_eq!(folded["count"], 10_000, "{folded}");
    assert!(folded["last_at"].is_string(), "{folded}");
    assert_eq!(
        lines.last().expect("lines")["seq"],
        e.seq,
        "and the acted-on event after it"
    );
}
