//! Executor tests: `reconcile` against in-memory nodes and coordinator. They pin the
//! sequence (observe → decide → lock → re-observe → re-decide → fenced steps → record), the
//! fencing behaviour, roll-forward after a partial plan, and idempotency.

mod support;

use std::time::Duration;
use support::fixtures::{fake_policy, holder};

use pika_remedy::config::{ClusterConfig, NodeConfig, Policy};
use pika_remedy::decide::{Action, Trigger};
use pika_remedy::model::Engine;
use pika_remedy::reconcile::{reconcile, Ctx, Outcome, Result_};
use support::fakes::{a, ctx, FakeCoord, FakeNodes};

fn cluster(nodes: &[&str]) -> ClusterConfig {
    ClusterConfig {
        name: "c".into(),
        password: None,
        paused: false,
        rename_commands: Default::default(),
        nodes: nodes
            .iter()
            .map(|n| NodeConfig {
                addr: a(n),
                priority: 100,
                never_promote: false,
            })
            .collect(),
    }
}

const M: &str = "10.0.0.1:9221";
const R1: &str = "10.0.0.2:9221";
const R2: &str = "10.0.0.3:9221";

async fn run(nodes: &FakeNodes, coord: &FakeCoord, trigger: Trigger) -> Outcome {
    run_with(nodes, coord, trigger, |_| {}).await
}

async fn run_with(
    nodes: &FakeNodes,
    coord: &FakeCoord,
    trigger: Trigger,
    tweak: impl FnOnce(&mut Ctx<'_, FakeNodes, FakeCoord>),
) -> Outcome {
    let c = cluster(&[M, R1, R2]);
    let p = fake_policy();
    let h = holder("me");
    let mut ctx = ctx(&c, nodes, coord, &p, &h);
    tweak(&mut ctx);
    tokio::time::timeout(Duration::from_secs(30), reconcile(&ctx, trigger))
        .await
        .expect("reconcile is bounded")
}

fn dead_master_cluster(engine: Engine) -> (FakeNodes, FakeCoord) {
    let nodes = FakeNodes::cluster(engine, M, &[R1, R2]);
    nodes.set(M, |n| n.up = false);
    (nodes, FakeCoord::with_record(M, &[R1, R2], 1))
}

#[tokio::test]
async fn dead_master_fails_over_records_then_repoints() {
    let (nodes, coord) = dead_master_cluster(Engine::Redis);
    let out = run(&nodes, &coord, Trigger::MasterDown).await;
    assert_eq!(out.result, Result_::Applied, "{out:#?}");
    assert!(matches!(out.plan.action, Action::Failover { ref promote, .. } if *promote == a(R1)));
    assert_eq!(
        nodes.commands(),
        vec![
            format!("{R1}: SLAVEOF NO ONE"),
            format!("{R1}: CONFIG REWRITE"),
            "10.0.0.3:9221: SLAVEOF 10.0.0.2 9221".to_string(),
            format!("{R2}: CONFIG REWRITE"),
        ]
    );
    let rec = coord.record().expect("record");
    assert_eq!(rec.master, a(R1));
    assert_eq!(rec.epoch, 2);
    assert!(
        rec.last_failover_at.is_some(),
        "automatic failover starts the cooldown"
    );
    assert!(out.steps.iter().all(|s| s.ok));
}

#[tokio::test]
async fn the_same_trigger_twice_gives_one_failover() {
    let (nodes, coord) = dead_master_cluster(Engine::Redis);
    let first = run(&nodes, &coord, Trigger::MasterDown).await;
    assert_eq!(first.result, Result_::Applied);
    let n = nodes.commands().len();
    let second = run(&nodes, &coord, Trigger::MasterDown).await;
    assert_eq!(second.result, Result_::NoAction, "{second:#?}");
    assert_eq!(
        nodes.commands().len(),
        n,
        "no command on a converged cluster"
    );
    assert_eq!(coord.record().expect("record").epoch, 2);
}

#[tokio::test]
async fn returning_old_master_is_demoted_with_force_on_pika() {
    let (nodes, coord) = dead_master_cluster(Engine::Pika);
    assert_eq!(
        run(&nodes, &coord, Trigger::MasterDown).await.result,
        Result_::Applied
    );
    // The old master restarts with its old config: role master, no replicas.
    nodes.set(M, |n| {
        n.up = true;
        n.offset = 5000;
    });
    let before = nodes.commands().len();
    let out = run(&nodes, &coord, Trigger::RoleMismatch).await;
    assert_eq!(out.result, Result_::Applied, "{out:#?}");
    assert_eq!(
        nodes.commands()[before..].to_vec(),
        vec![
            // It claims master: its own writes are snapshotted before the forced resync.
            format!("{M}: BGSAVE"),
            // The forced resync is a full sync: the new master's dump is refreshed first.
            format!("{R1}: BGSAVE"),
            format!("{M}: SLAVEOF 10.0.0.2 9221 force"),
            format!("{M}: CONFIG REWRITE")
        ]
    );
    assert_eq!(nodes.get(M).master, Some(a(R1)));
    assert_eq!(
        coord.record().expect("record").epoch,
        2,
        "a demotion does not change the epoch"
    );
}

#[tokio::test]
async fn lock_lost_mid_plan_stops_before_the_next_mutation_and_next_run_rolls_forward() {
    let (nodes, coord) = dead_master_cluster(Engine::Redis);
    let c2 = coord.clone();
    nodes.on_command(move |line| {
        if line.ends_with("SLAVEOF NO ONE") {
            c2.steal_lock("instance-b");
        }
    });
    let out = run(&nodes, &coord, Trigger::MasterDown).await;
    match &out.result {
        Result_::Failed { error } => assert!(error.contains("lock"), "{error}"),
        other => panic!("expected a lock-lost failure, got {other:?}"),
    }
    assert_eq!(
        nodes.commands(),
        vec![format!("{R1}: SLAVEOF NO ONE")],
        "nothing after the lock was lost"
    );
    // The intent was recorded before the promotion, so once the other instance's lease ends a
    // fresh reconcile completes the failover instead of needing an operator.
    assert_eq!(coord.record().expect("record").pending, Some(a(R1)));
    coord.release_stolen();
    *nodes.on_command.lock().expect("lock") = None;
    let out = run(&nodes, &coord, Trigger::Periodic).await;
    assert_eq!(out.result, Result_::Applied, "{out:#?}");
    assert!(
        out.plan.reason.contains("completing it"),
        "{}",
        out.plan.reason
    );
    let rec = coord.record().expect("record");
    assert_eq!(
        (rec.master.clone(), rec.epoch, rec.pending.clone()),
        (a(R1), 2, None)
    );
    assert_eq!(nodes.get(R2).master, Some(a(R1)));
}

#[tokio::test]
async fn crash_after_record_rolls_forward_by_repointing() {
    let (nodes, coord) = dead_master_cluster(Engine::Redis);
    // Lose the lock right after the record is written (the repoint of R2 would be next).
    coord.steal_lock_after_record();
    let out = run(&nodes, &coord, Trigger::MasterDown).await;
    assert!(matches!(out.result, Result_::Failed { .. }), "{out:#?}");
    assert_eq!(
        coord.record().expect("record").master,
        a(R1),
        "recorded right after the promotion"
    );
    assert_eq!(nodes.get(R2).master, Some(a(M)), "R2 not yet repointed");
    coord.release_stolen();
    let out = run(&nodes, &coord, Trigger::Periodic).await;
    assert_eq!(out.result, Result_::Applied, "{out:#?}");
    assert!(
        matches!(out.plan.action, Action::Repoint { .. }),
        "{out:#?}"
    );
    assert_eq!(nodes.get(R2).master, Some(a(R1)));
}

#[tokio::test]
async fn coordinator_unreachable_is_retryable_and_sends_nothing() {
    let (nodes, coord) = dead_master_cluster(Engine::Redis);
    coord.set_unreachable(true);
    let out = run(&nodes, &coord, Trigger::MasterDown).await;
    assert!(
        matches!(out.result, Result_::CoordinatorUnreachable { .. }),
        "{out:#?}"
    );
    assert!(out.retryable);
    assert!(
        out.plan.reason.contains("coordinator unreachable"),
        "{}",
        out.plan.reason
    );
    assert!(nodes.commands().is_empty());
}

#[tokio::test]
async fn lock_held_by_another_instance_names_it() {
    let (nodes, coord) = dead_master_cluster(Engine::Redis);
    coord.steal_lock("instance-b");
    let out = run(&nodes, &coord, Trigger::MasterDown).await;
    match &out.result {
        Result_::LockHeld { holder } => assert!(holder.contains("instance-b"), "{holder}"),
        other => panic!("{other:?}"),
    }
    assert!(!out.retryable);
    assert!(nodes.commands().is_empty());
}

#[tokio::test]
async fn dry_run_sends_nothing() {
    let (nodes, coord) = dead_master_cluster(Engine::Redis);
    let out = run_with(&nodes, &coord, Trigger::MasterDown, |c| c.dry_run = true).await;
    assert_eq!(out.result, Result_::DryRun);
    assert!(matches!(out.plan.action, Action::Failover { .. }));
    assert!(nodes.commands().is_empty());
    assert_eq!(coord.record().expect("record").master, a(M));
}

#[tokio::test]
async fn plan_changed_under_the_lock_is_not_applied() {
    let (nodes, coord) = dead_master_cluster(Engine::Redis);
    // The first look makes 3 status calls (M, R1, R2); the master is back for the second look.
    *nodes.up_at_status_call.lock().expect("lock") = Some((a(M), 4));
    let out = run(&nodes, &coord, Trigger::MasterDown).await;
    assert_eq!(out.result, Result_::PlanChanged, "{out:#?}");
    assert!(
        out.plan.reason.contains("false alarm"),
        "the reported plan is the one made under the lock: {}",
        out.plan.reason
    );
    assert!(
        nodes.commands().is_empty(),
        "nothing applied when the plan changed"
    );
    assert_eq!(coord.record().expect("record").master, a(M));
}

#[tokio::test]
async fn pika_already_master_of_others_is_retried_until_it_clears() {
    let (nodes, coord) = dead_master_cluster(Engine::Pika);
    assert_eq!(
        run(&nodes, &coord, Trigger::MasterDown).await.result,
        Result_::Applied
    );
    nodes.set(M, |n| {
        n.up = true;
        n.linger_others = 2;
    });
    let out = run(&nodes, &coord, Trigger::RoleMismatch).await;
    assert_eq!(out.result, Result_::Applied, "{out:#?}");
    assert_eq!(nodes.get(M).master, Some(a(R1)));
}

#[tokio::test]
async fn a_handshake_that_never_retries_gets_one_forced_reissue() {
    let (nodes, coord) = dead_master_cluster(Engine::Pika);
    nodes.set(R2, |n| n.stuck_until_force = true);
    let out = run(&nodes, &coord, Trigger::MasterDown).await;
    assert_eq!(out.result, Result_::Applied, "{out:#?}");
    let cmds = nodes.commands();
    let r2: Vec<&String> = cmds.iter().filter(|c| c.starts_with(R2)).collect();
    assert_eq!(
        r2,
        vec![
            &format!("{R2}: SLAVEOF 10.0.0.2 9221"),
            &format!("{R2}: SLAVEOF NO ONE"),
            &format!("{R2}: SLAVEOF 10.0.0.2 9221 force"),
            &format!("{R2}: CONFIG REWRITE"),
        ]
    );
}

#[tokio::test]
async fn a_failed_config_rewrite_is_reported_not_ignored() {
    let (nodes, coord) = dead_master_cluster(Engine::Pika);
    nodes.set(R1, |n| n.fail_rewrite = true);
    let out = run(&nodes, &coord, Trigger::MasterDown).await;
    match &out.result {
        Result_::Failed { error } => assert!(error.contains("CONFIG REWRITE"), "{error}"),
        other => panic!("{other:?}"),
    }
    // The roles still converged: the failure is about persistence, reported loudly.
    assert_eq!(nodes.get(R2).master, Some(a(R1)));
    assert_eq!(coord.record().expect("record").master, a(R1));
}

#[tokio::test]
async fn false_alarm_is_no_action() {
    let nodes = FakeNodes::cluster(Engine::Redis, M, &[R1, R2]);
    let coord = FakeCoord::with_record(M, &[R1, R2], 1);
    let out = run(&nodes, &coord, Trigger::MasterDown).await;
    assert_eq!(out.result, Result_::NoAction, "{out:#?}");
    assert!(nodes.commands().is_empty());
}

#[tokio::test]
async fn a_transient_config_rewrite_failure_is_retried() {
    let (nodes, coord) = dead_master_cluster(Engine::Pika);
    nodes.set(R1, |n| n.fail_rewrite_times = 1);
    let out = run(&nodes, &coord, Trigger::MasterDown).await;
    assert_eq!(out.result, Result_::Applied, "{out:#?}");
    let persist = out
        .steps
        .iter()
        .find(|s| matches!(&s.step, pika_remedy::decide::Step::Persist { node } if *node == a(R1)))
        .expect("persist step");
    assert_eq!(persist.detail, "config rewritten (attempt 2)");
}

/// A demotion waiting for a link that never comes up (the node is stuck) notices that the
/// master it was told to follow died, stops early instead of sitting out two link timeouts,
/// and the next reconcile fails over.
#[tokio::test]
async fn a_link_wait_stops_when_the_master_dies_and_the_next_run_fails_over() {
    // M master, R1 follows it, R2 restarted as a master (old master): demote R2 → M.
    let nodes = FakeNodes::cluster(Engine::Redis, M, &[R1]);
    {
        let mut n = nodes.nodes.lock().expect("lock");
        let mut x = support::fakes::FakeNode::new(Engine::Redis);
        x.stuck_until_force = true; // its link never comes up (Redis is never forced)
        x.version = "7.0.15".into(); // CLIENT PAUSE … WRITE (6.2+) pauses it for the snapshot
        n.insert(a(R2), x);
    }
    let coord = FakeCoord::with_record(M, &[R1, R2], 2);
    // 3 + 3 status calls for the two looks, 1 in the follow step; M dies a few polls later.
    *nodes.down_at_status_call.lock().expect("lock") = Some((a(M), 12));
    // A link timeout far longer than the test may take: only an early stop can end it.
    let long = Policy {
        link_timeout: Duration::from_secs(600),
        ..fake_policy()
    };
    let (c, h) = (cluster(&[M, R1, R2]), holder("me"));
    let ctx = ctx(&c, &nodes, &coord, &long, &h);
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        reconcile(&ctx, Trigger::RoleMismatch),
    )
    .await
    .expect("the demotion stopped early (it would otherwise wait 2 × 600 s)");
    assert_eq!(
        out.plan.action,
        Action::Demote {
            node: a(R2),
            to: a(M)
        }
    );
    match &out.result {
        Result_::Failed { error } => assert!(
            error.contains("the cluster changed")
                && error.contains(&format!("{M} stopped answering")),
            "{error}"
        ),
        other => panic!("expected the plan to stop, got {other:?}"),
    }
    // It gave up within a few polls, not after the link timeout (and never re-issued SLAVEOF).
    let polls = nodes.status_calls.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        polls < 30,
        "{polls} status calls: the wait did not stop early"
    );
    assert_eq!(
        nodes.commands(),
        vec![
            format!("{R2}: CLIENT PAUSE 630000 WRITE"),
            format!("{R2}: BGSAVE"),
            format!("{R2}: SLAVEOF {} {}", a(M).host, a(M).port),
            format!("{R2}: CLIENT UNPAUSE"),
        ],
        "writes paused, a snapshot (it claimed master), one SLAVEOF, no retry after the master \
         died, writes unpaused on the failure path"
    );
    let out = run(&nodes, &coord, Trigger::MasterDown).await;
    assert!(
        matches!(out.plan.action, Action::Failover { .. }),
        "{:#?}",
        out.plan
    );
}

#[tokio::test]
async fn a_child_the_plan_did_not_list_stops_the_plan_instead_of_being_moved() {
    // R1 is a restarted old master; R2 is down during both looks, so the plan demotes R1 with
    // no children to move. R2 then comes back following R1: the executor must not move it on
    // its own (that command would not be in the plan); it stops, and the next reconcile plans
    // the move.
    let nodes = FakeNodes::cluster(Engine::Pika, M, &[R1, R2]);
    nodes.set(R1, |n| {
        n.role = pika_remedy::model::Role::Master;
        n.master = None;
    });
    nodes.set(R2, |n| {
        n.master = Some(a(R1));
        n.up = false;
    });
    // Two looks of three nodes each; R2 is back when the follow step reads R1's status.
    *nodes.up_at_status_call.lock().expect("lock") = Some((a(R2), 7));
    let coord = FakeCoord::with_record(M, &[R1, R2], 3);
    let out = run(&nodes, &coord, Trigger::RoleMismatch).await;
    assert_eq!(
        out.plan.action,
        Action::Demote {
            node: a(R1),
            to: a(M)
        },
        "{out:#?}"
    );
    match &out.result {
        Result_::Failed { error } => assert!(
            error.contains("the cluster changed")
                && error.contains(&format!(
                    "{R2} still follows {R1}, which the plan did not move"
                )),
            "{error}"
        ),
        other => panic!("expected the plan to stop, got {other:?}"),
    }
    // Only the snapshot of the diverged R1 (a planned step before anything moves).
    assert_eq!(
        nodes.commands(),
        vec![format!("{R1}: BGSAVE")],
        "{:?}",
        nodes.commands()
    );
}
