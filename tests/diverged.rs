//! Against fakes: a demotion that discards a node's own writes is preceded by the planned
//! [`Step::Diverged`], per `policy.diverged`: `snapshot` (BGSAVE first; a failed snapshot stops
//! the demotion, nothing discarded), `report` (no snapshot, the estimate recorded), `refuse`
//! (no automatic demotion; `demote --accept-data-loss` does it).

mod support;

use std::time::Duration;
use support::fixtures::{fake_policy, holder};

use pika_remedy::config::{ClusterConfig, DivergedPolicy, NodeConfig, Policy};
use pika_remedy::decide::{Action, Step, Trigger};
use pika_remedy::model::{Engine, Role};
use pika_remedy::reconcile::{reconcile, Outcome, Result_};
use support::fakes::{a, ctx, FakeCoord, FakeNodes};

const M: &str = "10.0.0.1:9221";
const R1: &str = "10.0.0.2:9221";
const OLD: &str = "10.0.0.3:9221";

fn cluster() -> ClusterConfig {
    ClusterConfig {
        name: "c".into(),
        password: None,
        paused: false,
        rename_commands: Default::default(),
        nodes: [M, R1, OLD]
            .iter()
            .map(|n| NodeConfig {
                addr: a(n),
                priority: 100,
                never_promote: false,
            })
            .collect(),
    }
}

/// M is the recorded master at offset 1000; OLD is a returning old master that took writes
/// (offset 1500: 500 bytes of binlog the master never had).
fn two_masters(engine: Engine) -> (FakeNodes, FakeCoord) {
    let nodes = FakeNodes::cluster(engine, M, &[R1, OLD]);
    nodes.set(OLD, |n| {
        n.role = Role::Master;
        n.master = None;
        n.offset = 1500;
    });
    (nodes, FakeCoord::with_record(M, &[R1, OLD], 2))
}

async fn run(nodes: &FakeNodes, coord: &FakeCoord, policy: &Policy, trigger: Trigger) -> Outcome {
    let c = cluster();
    let h = holder("me");
    let ctx = ctx(&c, nodes, coord, policy, &h);
    tokio::time::timeout(Duration::from_secs(30), reconcile(&ctx, trigger))
        .await
        .expect("reconcile is bounded")
}

fn policy(d: DivergedPolicy) -> Policy {
    Policy {
        diverged: d,
        ..fake_policy()
    }
}

fn diverged_step(out: &Outcome) -> &pika_remedy::reconcile::StepReport {
    out.steps
        .iter()
        .find(|r| matches!(r.step, Step::Diverged { .. }))
        .unwrap_or_else(|| panic!("no diverged step: {out:#?}"))
}

#[tokio::test]
async fn snapshot_is_taken_before_the_forced_resync_and_reported() {
    let (nodes, coord) = two_masters(Engine::Pika);
    let out = run(
        &nodes,
        &coord,
        &policy(DivergedPolicy::Snapshot),
        Trigger::RoleMismatch,
    )
    .await;
    assert_eq!(out.result, Result_::Applied, "{out:#?}");
    assert_eq!(
        nodes.commands(),
        vec![
            format!("{OLD}: BGSAVE"),
            // The forced resync is a full sync: the new master's dump is refreshed first.
            "10.0.0.1:9221: BGSAVE".to_string(),
            format!("{OLD}: SLAVEOF 10.0.0.1 9221 force"),
            format!("{OLD}: CONFIG REWRITE"),
        ]
    );
    let r = diverged_step(&out);
    assert!(r.ok);
    let Step::Diverged {
        estimate, snapshot, ..
    } = &r.step
    else {
        unreachable!()
    };
    assert!(*snapshot);
    assert!(estimate.claims_master);
    assert_eq!(estimate.bytes_ahead, Some(500), "{estimate:?}");
    assert_eq!(estimate.dbs[0].bytes_ahead, Some(500));
    let snap = r.snapshot.as_ref().expect("snapshot info in the report");
    assert!(snap.path.contains("pika-remedy-"), "{snap:?}");
    assert!(r.detail.contains(&snap.path), "{}", r.detail);
    assert!(r.detail.contains("db0 ahead by 500 bytes"), "{}", r.detail);
    // The event text (the outcome as JSON) carries the estimate and the path.
    let json = serde_json::to_string(&out).expect("json");
    assert!(
        json.contains("\"bytes_ahead\":500") && json.contains(&snap.path),
        "{json}"
    );
}

#[tokio::test]
async fn a_failed_snapshot_stops_the_demotion_nothing_discarded() {
    let (nodes, coord) = two_masters(Engine::Pika);
    nodes.set(OLD, |n| n.fail_snapshot = true);
    let out = run(
        &nodes,
        &coord,
        &policy(DivergedPolicy::Snapshot),
        Trigger::RoleMismatch,
    )
    .await;
    match &out.result {
        Result_::Failed { error } => assert!(
            error.contains("snapshot of 10.0.0.3:9221 failed")
                && error.contains("nothing discarded"),
            "{error}"
        ),
        other => panic!("expected a failure, got {other:?}"),
    }
    assert!(
        !nodes.commands().iter().any(|c| c.contains("SLAVEOF")),
        "{:?}",
        nodes.commands()
    );
    assert_eq!(nodes.get(OLD).role, Role::Master);
}

#[tokio::test]
async fn report_demotes_without_a_snapshot_and_records_the_estimate() {
    let (nodes, coord) = two_masters(Engine::Redis);
    let out = run(
        &nodes,
        &coord,
        &policy(DivergedPolicy::Report),
        Trigger::RoleMismatch,
    )
    .await;
    assert_eq!(out.result, Result_::Applied, "{out:#?}");
    assert!(!nodes.commands().iter().any(|c| c.contains("BGSAVE")));
    let r = diverged_step(&out);
    assert!(r.snapshot.is_none());
    assert!(r.detail.contains("ahead by 500 bytes"), "{}", r.detail);
}

#[tokio::test]
async fn refuse_keeps_a_diverged_node_until_an_operator_accepts_the_loss() {
    let (nodes, coord) = two_masters(Engine::Pika);
    let p = policy(DivergedPolicy::Refuse);
    for trigger in [
        Trigger::RoleMismatch,
        Trigger::Demote {
            node: a(OLD),
            accept_data_loss: false,
        },
    ] {
        let out = run(&nodes, &coord, &p, trigger).await;
        assert_eq!(out.result, Result_::Refused, "{out:#?}");
        assert!(
            out.plan.reason.contains("diverged")
                && out.plan.reason.contains("--accept-data-loss")
                && out.plan.reason.contains("db0 ahead by 500 bytes"),
            "{}",
            out.plan.reason
        );
    }
    assert!(nodes.commands().is_empty());
    let out = run(
        &nodes,
        &coord,
        &p,
        Trigger::Demote {
            node: a(OLD),
            accept_data_loss: true,
        },
    )
    .await;
    assert_eq!(out.result, Result_::Applied, "{out:#?}");
    assert!(matches!(out.plan.action, Action::Demote { .. }));
    // Accepted: no snapshot, the estimate still recorded.
    let snapshot = format!("{OLD}: BGSAVE");
    assert!(!nodes.commands().contains(&snapshot));
    assert!(diverged_step(&out).detail.contains("no snapshot"));
}

#[tokio::test]
async fn a_replica_not_ahead_needs_no_snapshot() {
    // A replica of the master whose link is in error is repointed with force: it holds
    // nothing the master lacks (offset below the master's), so no diverged step.
    let nodes = FakeNodes::cluster(Engine::Pika, M, &[R1, OLD]);
    nodes.set(OLD, |n| {
        n.master = Some(a(R1));
        n.offset = 900;
    });
    let coord = FakeCoord::with_record(M, &[R1, OLD], 2);
    let out = run(
        &nodes,
        &coord,
        &policy(DivergedPolicy::Refuse),
        Trigger::Demote {
            node: a(OLD),
            accept_data_loss: false,
        },
    )
    .await;
    assert_eq!(out.result, Result_::Applied, "{out:#?}");
    assert!(!out
        .steps
        .iter()
        .any(|r| matches!(r.step, Step::Diverged { .. })));
}

#[tokio::test]
async fn a_replica_ahead_of_the_promoted_one_is_snapshotted_before_its_forced_resync() {
    // M dies; OLD (never_promote) got 100 bytes of M's writes that R1 never did. R1 is
    // promoted; OLD's forced resync to R1 drops those bytes: they are saved first.
    let nodes = FakeNodes::cluster(Engine::Pika, M, &[R1, OLD]);
    nodes.set(M, |n| n.up = false);
    nodes.set(R1, |n| n.offset = 900);
    nodes.set(OLD, |n| n.offset = 1000);
    let coord = FakeCoord::with_record(M, &[R1, OLD], 2);
    let mut c = cluster();
    c.nodes[2].never_promote = true;
    let h = holder("me");
    let p = policy(DivergedPolicy::Snapshot);
    let ctx = ctx(&c, &nodes, &coord, &p, &h);
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        reconcile(&ctx, Trigger::MasterDown),
    )
    .await
    .expect("bounded");
    assert_eq!(out.result, Result_::Applied, "{out:#?}");
    assert!(
        matches!(&out.plan.action, Action::Failover { promote, .. } if promote == &a(R1)),
        "{:#?}",
        out.plan
    );
    let cmds = nodes.commands();
    let snap = cmds.iter().position(|c| c == &format!("{OLD}: BGSAVE"));
    let follow = cmds
        .iter()
        .position(|c| c.starts_with(&format!("{OLD}: SLAVEOF")));
    assert!(
        snap.is_some() && snap < follow,
        "the snapshot precedes the forced SLAVEOF: {cmds:?}"
    );
    let r = diverged_step(&out);
    let Step::Diverged { estimate, .. } = &r.step else {
        unreachable!()
    };
    assert!(!estimate.claims_master);
    assert_eq!(estimate.bytes_ahead, Some(100), "{estimate:?}");
    assert!(r.snapshot.is_some(), "{r:?}");
}
