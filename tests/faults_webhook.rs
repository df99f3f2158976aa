//! Webhook answer time and wording: the answer is due within `webhook.reply_within` (below
//! Alertmanager's 10 s notification timeout) even while a reconcile waits for Pika links; a
//! request coalesced into the run right after a failover says that failover was just applied;
//! coordinator errors carry one prefix and their real cause.
//!
//! In-process service on 127.0.0.1:0 with a scripted reconciler; requests through reqwest.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pika_remedy::config::{Config, Loaded, Secret};
use pika_remedy::decide::{Action, Plan, Trigger};
use pika_remedy::http::{self, App};
use pika_remedy::model::Addr;
use pika_remedy::reconcile::{reconcile, Result_};
use pika_remedy::service::events::EventLog;
use pika_remedy::service::supervisor::{Supervisor, SupervisorConfig};
use serde_json::Value;
use support::fakes::{ctx, FakeCoord, FakeNodes, FakeReconciler, Script};

const BEARER: &str = "reply-t0ken-77";

fn shared() -> PathBuf {
    std::env::var("PIKA_REMEDY_SHARED")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"))
}

fn firing() -> Vec<u8> {
    let p = shared().join("fixtures/alertmanager/firing.json");
    support::fixtures::starts_now(
        &std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
    )
    .into_bytes()
}

fn addr(s: &str) -> Addr {
    s.parse().expect("addr")
}

fn failover_plan() -> Plan {
    Plan {
        action: Action::Failover {
            promote: addr("127.0.0.1:7001"),
            repoint: vec![addr("127.0.0.1:7002")],
            old_master: addr("127.0.0.1:7000"),
            automatic: true,
        },
        ..Plan::no_action("recorded master 127.0.0.1:7000 is unreachable and no replica sees it; promoting 127.0.0.1:7001")
    }
}

struct Svc {
    base: String,
    client: reqwest::Client,
    events: Arc<EventLog>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start(script: Script, webhook_extra: &str) -> Svc {
    let text = format!(
        r#"
[webhook]
master_down_alerts = ["RedisDown"]
{webhook_extra}
[[cluster]]
name = "mymaster"
nodes = [{{ addr = "127.0.0.1:7000" }}, {{ addr = "127.0.0.1:7001" }}, {{ addr = "127.0.0.1:7002" }}]
"#
    );
    let config = Config::parse(&text, "test.toml").expect("config");
    let loaded = Loaded {
        config,
        path: "test.toml".into(),
        cluster_passwords: Default::default(),
        consul_token: None,
        etcd_password: None,
        webhook_bearer: Some(Secret::new(BEARER)),
        webhook_basic_password: None,
        read_only_token: None,
    };
    let fake = Arc::new(
        FakeReconciler::new(&["mymaster"])
            .script(script)
            .millis(1)
            .idle_reason(
                "recorded master 127.0.0.1:7001 is reachable and reports role master; no failover (false alarm)",
            ),
    );
    let events = Arc::new(EventLog::in_memory(100));
    let sup = Supervisor::new(
        fake,
        Arc::clone(&events),
        SupervisorConfig::from_config(&loaded.config),
    );
    let metrics: http::MetricsFn =
        Arc::new(|_| (http::OPENMETRICS_CONTENT_TYPE, "# EOF\n".to_string()));
    let app = App::new(&loaded, sup, metrics);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let (stop, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(http::serve(listener, app, async move {
        let _ = rx.await;
    }));
    pika_remedy::tls::install_crypto_provider();
    Svc {
        base,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client"),
        events,
        _stop: stop,
    }
}

impl Svc {
    async fn hook(&self) -> (u16, Value, Duration) {
        let t = Instant::now();
        let r = self
            .client
            .post(format!("{}/v1/alerts", self.base))
            .bearer_auth(BEARER)
            .header("content-type", "application/json")
            .body(firing())
            .send()
            .await
            .expect("webhook");
        let st = r.status().as_u16();
        let v: Value = r.json().await.expect("json");
        (st, v, t.elapsed())
    }
}

/// A failover waiting 3 s for links: the webhook is answered after `reply_within` (500 ms)
/// with the plan and "in progress", not after the whole reconcile; the outcome still reaches
/// the audit trail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_answers_in_progress_within_reply_within() {
    let script: Script = vec![(Duration::from_secs(3), |_| {
        (failover_plan(), Result_::Applied)
    })];
    let svc = start(script, "reply_within = \"500ms\"").await;
    let (st, v, took) = svc.hook().await;
    assert_eq!(st, 200, "{v}");
    assert!(
        took < Duration::from_millis(2500),
        "answered after {took:?}, the reconcile takes 3 s: {v}"
    );
    assert_eq!(v["status"], "in_progress", "{v}");
    let c = &v["clusters"]["mymaster"];
    assert_eq!(c["result"]["kind"], "in_progress", "{v}");
    assert_eq!(c["action"], "failover", "{v}");
    assert_eq!(c["plan"]["action"]["promote"], "127.0.0.1:7001", "{v}");
    assert!(
        c["reason"].as_str().unwrap_or("").contains("audit trail"),
        "{v}"
    );
    // The outcome is recorded when the reconcile ends.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let done = svc.events.recent(10, None).iter().any(|e| {
            e.outcome
                .as_ref()
                .is_some_and(|o| o.result == Result_::Applied)
        });
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the outcome never reached the audit trail"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A request queued behind that running failover is answered within the bound as well
/// ("pending": its own reconcile has not started).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_webhook_is_answered_within_reply_within() {
    let script: Script = vec![(Duration::from_secs(3), |_| {
        (failover_plan(), Result_::Applied)
    })];
    let svc = Arc::new(start(script, "reply_within = \"500ms\"").await);
    let first = {
        let svc = Arc::clone(&svc);
        tokio::spawn(async move { svc.hook().await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (st, v, took) = svc.hook().await;
    assert_eq!(st, 200, "{v}");
    assert!(
        took < Duration::from_millis(2500),
        "answered after {took:?}: {v}"
    );
    assert_eq!(
        v["clusters"]["mymaster"]["result"]["kind"], "in_progress",
        "{v}"
    );
    assert_eq!(v["clusters"]["mymaster"]["action"], "pending", "{v}");
    let (st, _, _) = first.await.expect("first");
    assert_eq!(st, 200);
}

/// The default bound is below Alertmanager's 10 s notification timeout.
#[test]
fn default_reply_within_is_below_alertmanagers_timeout() {
    let d = pika_remedy::config::WebhookConfig::default().reply_within;
    assert!(!d.is_zero() && d < Duration::from_secs(10), "{d:?}");
}

/// A webhook coalesced into the run right after a failover is not just "false alarm": it says
/// which run applied which failover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coalesced_after_failover_names_the_failover() {
    let script: Script = vec![(Duration::from_millis(600), |_| {
        (failover_plan(), Result_::Applied)
    })];
    let svc = Arc::new(start(script, "").await);
    let first = {
        let svc = Arc::clone(&svc);
        tokio::spawn(async move { svc.hook().await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (st, v, _) = svc.hook().await;
    assert_eq!(st, 200, "{v}");
    let (_, v1, _) = first.await.expect("first");
    assert_eq!(
        v1["clusters"]["mymaster"]["result"]["kind"], "applied",
        "{v1}"
    );
    let c = &v["clusters"]["mymaster"];
    assert_eq!(c["action"], "no_action", "{v}");
    let reason = c["reason"].as_str().unwrap_or("");
    assert!(
        reason.contains("false alarm")
            && reason.contains(
                "a failover from 127.0.0.1:7000 to 127.0.0.1:7001 was just applied by the preceding reconcile (audit event #1"
            ),
        "{reason}"
    );
}

/// One prefix: "coordinator unreachable: fake store down", not "… unreachable: … unreachable: …".
#[tokio::test]
async fn coordinator_error_has_one_prefix() {
    let nodes = FakeNodes::cluster(
        pika_remedy::model::Engine::Redis,
        "127.0.0.1:7000",
        &["127.0.0.1:7001"],
    );
    let coord = FakeCoord::with_record("127.0.0.1:7000", &["127.0.0.1:7001"], 1);
    coord.set_unreachable(true);
    let cfg = pika_remedy::config::ClusterConfig {
        name: "c".into(),
        password: None,
        paused: false,
        rename_commands: Default::default(),
        nodes: ["127.0.0.1:7000", "127.0.0.1:7001"]
            .iter()
            .map(|a| pika_remedy::config::NodeConfig {
                addr: addr(a),
                priority: 100,
                never_promote: false,
            })
            .collect(),
    };
    let policy = pika_remedy::config::Policy::default();
    let holder = support::contract::holder("me");
    let ctx = ctx(&cfg, &nodes, &coord, &policy, &holder);
    let out = reconcile(&ctx, Trigger::MasterDown).await;
    assert_eq!(out.plan.reason, "coordinator unreachable: fake store down");
    match &out.result {
        Result_::CoordinatorUnreachable { error } => {
            assert_eq!(error.matches("unreachable").count(), 1, "{error}")
        }
        other => panic!("{other:?}"),
    }
}
