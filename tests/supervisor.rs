//! Single-flight supervisor against a fake reconciler: coalescing under a storm, parallel
//! clusters, fresh follow-up outcomes, manual triggers kept apart, pause passed through,
//! panics contained, and shutdown waiting (bounded) for an in-flight reconcile.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pika_remedy::config::{Config, Loaded};
use pika_remedy::decide::Trigger;
use pika_remedy::http::{self, App};
use pika_remedy::model::Addr;
use pika_remedy::reconcile::Result_;
use pika_remedy::service::events::{AlertInfo, EventKind, EventLog, TriggerSource};
use pika_remedy::service::supervisor::{Request, SubmitError, Supervisor, SupervisorConfig};
use support::fakes::FakeReconciler;

/// The shared fake: counts calls, tracks concurrency, sleeps, answers "call N" as the plan reason.
fn fake(clusters: &[&str], delay: Duration) -> Arc<FakeReconciler> {
    Arc::new(FakeReconciler::new(clusters).delay(delay).millis(1))
}

fn supervisor(fake: &Arc<FakeReconciler>, grace: Duration) -> Arc<Supervisor<FakeReconciler>> {
    Supervisor::new(
        Arc::clone(fake),
        Arc::new(EventLog::in_memory(100)),
        SupervisorConfig {
            shutdown_grace: grace,
            ..SupervisorConfig::default()
        },
    )
}

fn alert() -> Request {
    Request::new(Trigger::MasterDown, TriggerSource::Alertmanager)
}

/// Bounded wait for a condition.
async fn until(what: &str, f: impl Fn() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn storm_of_1000_duplicates_runs_at_most_two_reconciles() {
    let fake = fake(&["c"], Duration::from_millis(200));
    let sup = supervisor(&fake, Duration::from_secs(5));
    let mut tasks = Vec::new();
    for _ in 0..1000 {
        let sup = Arc::clone(&sup);
        let mut req = alert();
        req.alerts.push(AlertInfo {
            alertname: "PikaMasterDown".into(),
            status: "firing".into(),
            fingerprint: "f1".into(),
            starts_at: "2026-01-01T00:00:00Z".into(),
            node: None,
            labels: BTreeMap::new(),
        });
        tasks.push(tokio::spawn(async move { sup.submit("c", req).await }));
    }
    for t in tasks {
        let o = tokio::time::timeout(Duration::from_secs(20), t)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(o.cluster, "c");
    }
    assert!(
        fake.calls() >= 1 && fake.calls() <= 2,
        "reconciles: {}",
        fake.calls()
    );
    assert_eq!(fake.max_same_cluster.load(Ordering::SeqCst), 1);
    // One audit event per reconcile, not per webhook.
    let evs = sup.events().recent(1000, Some("c"));
    assert_eq!(evs.len(), fake.calls());
    assert!(evs
        .iter()
        .all(|e| e.kind == EventKind::Reconcile && e.outcome.is_some()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn different_clusters_run_in_parallel() {
    let fake = fake(&["a", "b", "c"], Duration::from_millis(400));
    let sup = supervisor(&fake, Duration::from_secs(5));
    let (ra, rb, rc) = tokio::join!(
        sup.submit("a", alert()),
        sup.submit("b", alert()),
        sup.submit("c", alert())
    );
    assert_eq!(ra.unwrap().cluster, "a");
    assert_eq!(rb.unwrap().cluster, "b");
    assert_eq!(rc.unwrap().cluster, "c");
    assert_eq!(fake.calls(), 3);
    assert_eq!(
        fake.max_total.load(Ordering::SeqCst),
        3,
        "clusters did not overlap"
    );
    assert_eq!(fake.max_same_cluster.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn callers_during_a_run_get_the_follow_ups_fresh_outcome() {
    let fake = fake(&["c"], Duration::from_millis(300));
    let sup = supervisor(&fake, Duration::from_secs(5));
    let first = tokio::spawn({
        let sup = Arc::clone(&sup);
        async move { sup.submit("c", alert()).await }
    });
    until("first reconcile to start", || fake.calls() == 1).await;
    let mut later = Vec::new();
    for t in [
        Trigger::RoleMismatch,
        Trigger::MasterDown,
        Trigger::Periodic,
    ] {
        let sup = Arc::clone(&sup);
        later.push(tokio::spawn(async move {
            sup.submit("c", Request::new(t, TriggerSource::Alertmanager))
                .await
        }));
    }
    assert_eq!(first.await.unwrap().unwrap().plan.reason, "call 1");
    for l in later {
        let o = l.await.unwrap().unwrap();
        assert_eq!(o.plan.reason, "call 2");
        // The follow-up runs with the strongest trigger of those coalesced.
        assert_eq!(o.trigger, Trigger::MasterDown);
    }
    assert_eq!(fake.calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn manual_triggers_are_not_swallowed_by_alerts() {
    let fake = fake(&["c"], Duration::from_millis(200));
    let sup = supervisor(&fake, Duration::from_secs(5));
    let first = tokio::spawn({
        let sup = Arc::clone(&sup);
        async move { sup.submit("c", alert()).await }
    });
    until("first reconcile to start", || fake.calls() == 1).await;
    let to = Trigger::Failover {
        to: Some(Addr::new("127.0.0.1", 7001)),
        accept_data_loss: false,
    };
    let (a, m1, m2) = tokio::join!(
        sup.submit("c", alert()),
        sup.submit("c", Request::new(to.clone(), TriggerSource::Api)),
        sup.submit("c", Request::new(to.clone(), TriggerSource::Api)),
    );
    first.await.unwrap().unwrap();
    assert_eq!(a.unwrap().trigger, Trigger::MasterDown);
    let (m1, m2) = (m1.unwrap(), m2.unwrap());
    assert_eq!(m1.trigger, to);
    assert_eq!(
        m1.plan.reason, m2.plan.reason,
        "identical manual requests coalesce"
    );
    assert_eq!(fake.calls(), 3);
    let seen = fake.seen.lock().unwrap();
    assert_eq!(seen[2].2.source, TriggerSource::Api);
}

#[tokio::test]
async fn pause_and_dry_run_are_passed_to_the_reconciler() {
    let fake = fake(&["a", "b"], Duration::from_millis(0));
    let sup = Supervisor::new(
        Arc::clone(&fake),
        Arc::new(EventLog::in_memory(10)),
        SupervisorConfig {
            paused: false,
            paused_clusters: ["b".to_string()].into(),
            dry_run: true,
            shutdown_grace: Duration::from_secs(1),
            recheck_after_lock_held: Duration::ZERO,
        },
    );
    sup.submit("a", alert()).await.unwrap();
    sup.submit("b", alert()).await.unwrap();
    sup.set_paused(None, true).unwrap();
    sup.submit("a", alert()).await.unwrap();
    sup.set_paused(None, false).unwrap();
    sup.set_paused(Some("b"), false).unwrap();
    sup.submit("b", alert()).await.unwrap();
    assert_eq!(
        sup.set_paused(Some("zz"), true),
        Err(SubmitError::UnknownCluster("zz".into()))
    );
    let seen = fake.seen.lock().unwrap();
    let paused: Vec<(String, bool)> = seen
        .iter()
        .map(|(c, _, ctl)| (c.clone(), ctl.paused))
        .collect();
    assert_eq!(
        paused,
        [
            ("a".into(), false),
            ("b".into(), true),
            ("a".into(), true),
            ("b".into(), false)
        ]
    );
    assert!(seen.iter().all(|(_, _, ctl)| ctl.dry_run));
}

#[tokio::test]
async fn unknown_cluster_is_refused() {
    let fake = fake(&["a"], Duration::from_millis(0));
    let sup = supervisor(&fake, Duration::from_secs(1));
    assert_eq!(
        sup.submit("nope", alert()).await.unwrap_err(),
        SubmitError::UnknownCluster("nope".into())
    );
    assert_eq!(fake.calls(), 0);
}

#[tokio::test]
async fn a_panicking_reconcile_is_reported_and_does_not_wedge_the_cluster() {
    let fake = fake(&["c"], Duration::from_millis(0));
    let sup = supervisor(&fake, Duration::from_secs(1));
    fake.panic_next.store(true, Ordering::SeqCst);
    let o = sup.submit("c", alert()).await.unwrap();
    assert!(o.retryable);
    assert!(matches!(o.result, Result_::Failed { .. }));
    let o = sup.submit("c", alert()).await.unwrap();
    assert_eq!(o.plan.reason, "call 2");
}

fn loaded(grace: &str) -> Loaded {
    let text = format!(
        r#"
[service]
shutdown_grace = "{grace}"
[webhook]
allow_unauthenticated = true
[[cluster]]
name = "c"
nodes = [{{ addr = "127.0.0.1:7000" }}]
"#
    );
    Loaded {
        config: Config::parse(&text, "test.toml").unwrap(),
        path: "test.toml".into(),
        cluster_passwords: BTreeMap::new(),
        consul_token: None,
        etcd_password: None,
        webhook_bearer: None,
        webhook_basic_password: None,
        read_only_token: None,
    }
}

async fn start(
    fake: &Arc<FakeReconciler>,
    grace: &str,
) -> (
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let l = loaded(grace);
    let sup = Supervisor::new(
        Arc::clone(fake),
        Arc::new(EventLog::in_memory(10)),
        SupervisorConfig::from_config(&l.config),
    );
    let app = App::new(&l, sup, Arc::new(|_| ("text/plain", String::new())));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(http::serve(listener, app, async move {
        let _ = rx.await;
    }));
    (base, tx, server)
}

const BODY: &str = r#"{"version":"4","status":"firing","alerts":[{"status":"firing","labels":{"alertname":"PikaMasterDown","cluster":"c"},"startsAt":"2026-01-01T00:00:00Z","fingerprint":"f1"}]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_waits_for_the_in_flight_reconcile_then_exits() {
    let fake = fake(&["c"], Duration::from_millis(800));
    let (base, stop, server) = start(&fake, "10s").await;
    pika_remedy::tls::install_crypto_provider();
    let client = reqwest::Client::new();
    let hook = tokio::spawn({
        let client = client.clone();
        let url = format!("{base}/v1/alerts");
        async move {
            client
                .post(url)
                .header("content-type", "application/json")
                .body(BODY)
                .send()
                .await
        }
    });
    until("reconcile to start", || fake.calls() == 1).await;
    let t0 = Instant::now();
    stop.send(()).unwrap();
    // While draining, new work is refused with 503 "shutting down" (bounded retries: the
    // listener may need a moment to see the signal).
    let mut refused = false;
    for _ in 0..50 {
        let r = client
            .post(format!("{base}/v1/alerts"))
            .header("content-type", "application/json")
            .body(BODY)
            .send()
            .await;
        if let Ok(r) = r {
            if r.status() == 503 {
                assert!(r.text().await.unwrap().contains("shutting down"));
                refused = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "no 503 while shutting down");
    let res = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap();
    res.unwrap();
    let waited = t0.elapsed();
    // The in-flight webhook got its real answer: the reconcile was not cut short.
    let r = hook.await.unwrap().unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("call 1"));
    assert_eq!(fake.calls(), 1, "the refused request must not have run");
    assert!(waited < Duration::from_secs(9), "shutdown took {waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_is_bounded_by_the_grace_period() {
    let fake = fake(&["c"], Duration::from_secs(60));
    let (base, stop, server) = start(&fake, "300ms").await;
    pika_remedy::tls::install_crypto_provider();
    let client = reqwest::Client::new();
    let _hook = tokio::spawn(async move {
        client
            .post(format!("{base}/v1/alerts"))
            .header("content-type", "application/json")
            .body(BODY)
            .send()
            .await
    });
    until("reconcile to start", || fake.calls() == 1).await;
    let t0 = Instant::now();
    stop.send(()).unwrap();
    let res = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap();
    res.unwrap();
    // grace (0.3 s) + close margin (1 s), generously bounded.
    assert!(
        t0.elapsed() < Duration::from_secs(8),
        "shutdown took {:?}",
        t0.elapsed()
    );
}

/// "Lock held by another instance" is answered 200, so Alertmanager will not retry soon; if
/// that holder dies mid-plan nobody would finish. The supervisor looks again after the lock
/// TTL (once, even for many lock-held answers) and stops re-checking once it can act.
#[tokio::test(start_paused = true)]
async fn lock_held_schedules_one_recheck_after_the_ttl() {
    let fake = fake(&["a"], Duration::from_millis(0));
    fake.lock_held_next.store(2, Ordering::SeqCst);
    let sup = Supervisor::new(
        Arc::clone(&fake),
        Arc::new(EventLog::in_memory(100)),
        SupervisorConfig {
            shutdown_grace: Duration::from_secs(1),
            recheck_after_lock_held: Duration::from_secs(60),
            ..SupervisorConfig::default()
        },
    );
    let out = sup.submit("a", alert()).await.expect("submit");
    assert!(matches!(out.result, Result_::LockHeld { .. }));
    // A second lock-held answer while a re-check is pending does not add another one.
    let out = sup.submit("a", alert()).await.expect("submit");
    assert!(matches!(out.result, Result_::LockHeld { .. }));
    assert_eq!(fake.calls(), 2);
    tokio::time::sleep(Duration::from_secs(59)).await;
    assert_eq!(fake.calls(), 2, "not before the TTL");
    tokio::time::sleep(Duration::from_secs(2)).await;
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(fake.calls(), 3, "exactly one re-check after the TTL");
    let (_, trigger, ctl) = fake.seen.lock().unwrap().last().cloned().unwrap();
    assert_eq!(trigger, Trigger::Periodic);
    assert_eq!(ctl.source, TriggerSource::Periodic);
    // That re-check could act (no lock held): nothing more is scheduled.
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(fake.calls(), 3);
}
