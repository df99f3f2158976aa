//! The CLI's live progress printer on the reconcile's progress hook, against fake nodes: a
//! demotion whose link never comes up prints the step start, "waiting for … link up to …"
//! while it waits, and the failed end, in that order.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pika_remedy::cli::progress::Printer;
use pika_remedy::config::{ClusterConfig, NodeConfig, Policy};
use pika_remedy::decide::Trigger;
use pika_remedy::model::Engine;
use pika_remedy::reconcile::{reconcile, Progress, PROGRESS};
use support::fakes::{a, ctx, FakeCoord, FakeNode, FakeNodes};
use support::fixtures::{fake_policy, holder};

const M: &str = "10.0.0.1:9221";
const R1: &str = "10.0.0.2:9221";
const R2: &str = "10.0.0.3:9221";

#[tokio::test]
async fn a_long_link_wait_says_what_it_waits_for() {
    let nodes = FakeNodes::cluster(Engine::Redis, M, &[R1]);
    {
        let mut n = nodes.nodes.lock().expect("lock");
        let mut x = FakeNode::new(Engine::Redis);
        x.stuck_until_force = true; // a restarted old master whose link never comes up
        n.insert(a(R2), x);
    }
    let coord = FakeCoord::with_record(M, &[R1, R2], 2);
    let policy = Policy {
        link_timeout: Duration::from_millis(2500),
        ..fake_policy()
    };
    let c = ClusterConfig {
        name: "c".into(),
        password: None,
        paused: false,
        rename_commands: Default::default(),
        nodes: [M, R1, R2]
            .iter()
            .map(|n| NodeConfig {
                addr: a(n),
                priority: 100,
                never_promote: false,
            })
            .collect(),
    };
    let h = holder("me");
    let ctx = ctx(&c, &nodes, &coord, &policy, &h);
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = Arc::clone(&lines);
    let printer: Arc<dyn Progress> = Arc::new(Printer::new(move |l: &str| {
        sink.lock().expect("lock").push(l.to_string())
    }));
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        PROGRESS.scope(
            printer,
            reconcile(
                &ctx,
                Trigger::Demote {
                    node: a(R2),
                    accept_data_loss: false,
                },
            ),
        ),
    )
    .await
    .expect("bounded");
    let lines = lines.lock().expect("lock").clone();
    let pos = |p: &str| lines.iter().position(|l| l.contains(p));
    let start = pos(&format!("start: {R2} follows {M}"))
        .unwrap_or_else(|| panic!("no start line: {lines:#?}\n{out:?}"));
    let wait = lines
        .iter()
        .position(|l| {
            l.starts_with(&format!("  waiting for {R2} link up to {M} ("))
                && l.ends_with(" s of 2 s)")
        })
        .unwrap_or_else(|| panic!("no waiting line: {lines:#?}"));
    let failed = lines
        .iter()
        .position(|l| l.contains(" FAILED ("))
        .unwrap_or_else(|| panic!("no failed end: {lines:#?}"));
    assert!(start < wait && wait < failed, "{lines:#?}");
}
