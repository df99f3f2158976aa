//! Against fakes: for every action of the decision table, the commands the executor sends are
//! exactly the commands the plan lists (`Step::wire`, the lines `plan` prints), in order.
//! The fake records what it received in its own words, independent of `node::commands`.

mod support;

use std::time::Duration;
use support::fixtures::fake_policy;

use pika_remedy::config::{ClusterConfig, NodeConfig};
use pika_remedy::coord::Holder;
use pika_remedy::decide::{Action, Trigger};
use pika_remedy::model::{Engine, Role};
use pika_remedy::node::commands::Dialect;
use pika_remedy::reconcile::{look, reconcile, Ctx, Result_};
use support::fakes::{a, ctx, FakeCoord, FakeNodes};

const M: &str = "10.0.0.1:9221";
const R1: &str = "10.0.0.2:9221";
const R2: &str = "10.0.0.3:9221";
const R3: &str = "10.0.0.4:9221";
/// Not configured and not answering: a master some node was pointed at by hand.
const ELSEWHERE: &str = "10.0.0.9:9221";

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

struct Case {
    name: &'static str,
    nodes: FakeNodes,
    coord: FakeCoord,
    config: Vec<&'static str>,
    trigger: Trigger,
    has_password: bool,
    /// The action label the case must produce (so the table stays covered).
    action: &'static str,
    /// Command fragments that must (true) or must not (false) be among the planned ones.
    expect: Vec<(&'static str, bool)>,
    /// Step lines (as the plan prints them) that must be among the planned steps.
    steps: Vec<&'static str>,
}

/// Plan once (as `plan` does), run the reconcile, compare what the fake received.
async fn check(case: Case) {
    let c = cluster(&case.config);
    let p = fake_policy();
    let h = Holder {
        instance: "me".into(),
        host: "h".into(),
        pid: 1,
        since: 1,
    };
    let ctx = Ctx {
        has_password: case.has_password,
        ..ctx(&c, &case.nodes, &case.coord, &p, &h)
    };
    let (obs, _, plan) = look(&ctx, &case.trigger).await.expect("look");
    assert_eq!(plan.action.label(), case.action, "{}: {plan:#?}", case.name);
    let d = Dialect::new(c.renames());
    let planned: Vec<String> = plan
        .steps(&obs, &p)
        .iter()
        .flat_map(|s| s.wire(case.has_password, &d))
        .map(|(node, cmd)| format!("{node}: {cmd}"))
        .collect();
    let out = tokio::time::timeout(Duration::from_secs(30), reconcile(&ctx, case.trigger))
        .await
        .expect("reconcile is bounded");
    let want = if plan.action.mutates_nodes() || matches!(plan.action, Action::Bootstrap { .. }) {
        Result_::Applied
    } else {
        Result_::NoAction
    };
    assert_eq!(out.result, want, "{}: {out:#?}", case.name);
    assert_eq!(out.plan, plan, "{}: the plan under the lock", case.name);
    assert_eq!(case.nodes.commands(), planned, "{}", case.name);
    for (fragment, want) in &case.expect {
        assert!(
            planned.iter().any(|c| c.contains(fragment)) == *want,
            "{}: {fragment:?} expected {want} in {planned:#?}",
            case.name
        );
    }
    if plan.action.mutates_nodes() {
        assert!(!planned.is_empty(), "{}", case.name);
    }
    // Every step the plan lists ran, in order (WaitSynced included, though it sends nothing).
    let ran: Vec<String> = out.steps.iter().map(|r| r.step.to_string()).collect();
    let listed: Vec<String> = plan
        .steps(&obs, &p)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(ran, listed, "{}: executed steps", case.name);
    for want in &case.steps {
        assert!(
            listed.iter().any(|l| l == want),
            "{}: {want:?} not in {listed:#?}",
            case.name
        );
    }
}

fn dead_master(engine: Engine) -> FakeNodes {
    let n = FakeNodes::cluster(engine, M, &[R1, R2]);
    n.set(M, |x| x.up = false);
    n
}

fn record() -> FakeCoord {
    FakeCoord::with_record(M, &[R1, R2], 1)
}

fn cases() -> Vec<Case> {
    let base = |name, nodes, trigger, action| Case {
        name,
        nodes,
        coord: record(),
        config: vec![M, R1, R2],
        trigger,
        has_password: false,
        action,
        expect: Vec::new(),
        steps: Vec::new(),
    };
    let mut v = vec![
        base(
            "failover redis",
            dead_master(Engine::Redis),
            Trigger::MasterDown,
            "failover",
        ),
        Case {
            has_password: true,
            ..base(
                "failover pika with a password",
                dead_master(Engine::Pika),
                Trigger::MasterDown,
                "failover",
            )
        },
        base(
            "switchover redis",
            FakeNodes::cluster(Engine::Redis, M, &[R1, R2]),
            Trigger::Switchover { to: None },
            "switchover",
        ),
        base(
            "switchover pika 3 (no fence, old master forced)",
            FakeNodes::cluster(Engine::Pika, M, &[R1, R2]),
            Trigger::Switchover { to: None },
            "switchover",
        ),
    ];

    let fenced = FakeNodes::cluster(Engine::Pika, M, &[R1, R2]);
    for n in [M, R1, R2] {
        fenced.set(n, |x| x.version = "4.0.1".into());
    }
    v.push(base(
        "switchover pika 4 (fenced)",
        fenced,
        Trigger::Switchover { to: None },
        "switchover",
    ));

    // A restarted old master R1 with R2 still attached: R2 moves first, as a step.
    let restarted = FakeNodes::cluster(Engine::Pika, M, &[R1, R2]);
    restarted.set(R1, |x| {
        x.role = Role::Master;
        x.master = None;
    });
    restarted.set(R2, |x| x.master = Some(a(R1)));
    v.push(Case {
        // It claims master: the planned snapshot is sent first, exactly as listed.
        expect: vec![("CLIENT KILL", false), ("10.0.0.2:9221: BGSAVE", true)],
        ..base(
            "demote a restarted old master with a child",
            restarted,
            Trigger::RoleMismatch,
            "demote",
        )
    });

    // R2 names the master but its link never comes up: the demote resets it first.
    let stuck = FakeNodes::cluster(Engine::Pika, M, &[R1, R2]);
    stuck.set(R2, |x| x.stuck_until_force = true);
    v.push(Case {
        // A replica of the master, not ahead: nothing of its own to lose, no snapshot.
        expect: vec![("10.0.0.3:9221: BGSAVE", false)],
        ..base(
            "manual demote of a stuck replica",
            stuck,
            Trigger::Demote {
                node: a(R2),
                accept_data_loss: false,
            },
            "demote",
        )
    });

    // A chain ELSEWHERE <- R1 <- R2 <- R3 (config order top-down): deepest first.
    let chain = FakeNodes::cluster(Engine::Pika, M, &[R1, R2, R3]);
    chain.set(R1, |x| {
        x.role = Role::Master;
        x.master = Some(a(ELSEWHERE));
    });
    chain.set(R2, |x| {
        x.role = Role::Master;
        x.master = Some(a(R1));
    });
    chain.set(R3, |x| x.master = Some(a(R2)));
    v.push(Case {
        coord: FakeCoord::with_record(M, &[R1, R2, R3], 1),
        config: vec![M, R1, R2, R3],
        ..base("repoint a chain", chain, Trigger::Periodic, "repoint")
    });

    // Pika: R2 carries a foreign ReplicationID (the race of two first syncs, or a node once
    // attached elsewhere): its MetaSync is refused for good. Detach, clear, follow (full sync).
    let foreign = FakeNodes::cluster(Engine::Pika, M, &[R1, R2]);
    foreign.set(R2, |x| x.replid = Some("foreign".into()));
    v.push(Case {
        expect: vec![
            ("10.0.0.3:9221: CLEARREPLICATIONID", true),
            ("10.0.0.3:9221: SLAVEOF NO ONE", true),
        ],
        ..base(
            "repoint a pika replica whose replication id differs",
            foreign,
            Trigger::Periodic,
            "repoint",
        )
    });

    // The race seen after a failover: R1 (promoted, best offset) has another ID than R2.
    let race = dead_master(Engine::Pika);
    race.set(R1, |x| x.replid = Some("a".into()));
    v.push(Case {
        expect: vec![("10.0.0.3:9221: CLEARREPLICATIONID", true)],
        ..base(
            "failover pika where the other replica's replication id differs",
            race,
            Trigger::MasterDown,
            "failover",
        )
    });

    // A restarted old master on Pika 4 with clients: demoted, then its clients are closed.
    let stale = FakeNodes::cluster(Engine::Pika, M, &[R1, R2]);
    for n in [M, R1, R2] {
        stale.set(n, |x| x.version = "4.0.1".into());
    }
    stale.set(R1, |x| {
        x.role = Role::Master;
        x.master = None;
        x.clients = 3;
    });
    v.push(Case {
        expect: vec![("10.0.0.2:9221: CLIENT KILL TYPE normal", true)],
        ..base(
            "demote pika 4 closes the stale clients",
            stale,
            Trigger::RoleMismatch,
            "demote",
        )
    });

    // Redis 7 switchover: the old master's clients are closed before it follows.
    let redis7 = FakeNodes::cluster(Engine::Redis, M, &[R1, R2]);
    for n in [M, R1, R2] {
        redis7.set(n, |x| x.version = "7.0.15".into());
    }
    v.push(Case {
        expect: vec![
            ("10.0.0.1:9221: CLIENT KILL TYPE normal", true),
            ("CLEARREPLICATIONID", false),
        ],
        ..base(
            "switchover redis 7 closes the old master's clients",
            redis7,
            Trigger::Switchover { to: None },
            "switchover",
        )
    });

    // Redis: R2 and R3 were attached to another master (another replication id): after the
    // failover to R1 both need a full sync; the default budget of one makes R3 wait for R2's.
    let full = FakeNodes::cluster(Engine::Redis, M, &[R1, R2, R3]);
    full.set(M, |x| x.up = false);
    for n in [R2, R3] {
        full.set(n, |x| x.replid = Some("elsewhere".into()));
    }
    v.push(Case {
        coord: FakeCoord::with_record(M, &[R1, R2, R3], 1),
        config: vec![M, R1, R2, R3],
        steps: vec![
            "10.0.0.3:9221 follows 10.0.0.2:9221 (full sync)",
            "wait for the full sync of 10.0.0.3:9221 from 10.0.0.2:9221 before repointing 10.0.0.4:9221",
            "10.0.0.4:9221 follows 10.0.0.2:9221 (full sync)",
        ],
        ..base(
            "failover redis with two full syncs, one at a time",
            full,
            Trigger::MasterDown,
            "failover",
        )
    });

    v.push(Case {
        coord: FakeCoord::default(),
        ..base(
            "bootstrap",
            FakeNodes::cluster(Engine::Pika, M, &[R1, R2]),
            Trigger::Periodic,
            "bootstrap",
        )
    });
    v.push(base(
        "converged",
        FakeNodes::cluster(Engine::Pika, M, &[R1, R2]),
        Trigger::Periodic,
        "no_action",
    ));
    v
}

#[tokio::test]
async fn executed_commands_are_the_planned_commands_for_every_action() {
    let cases = cases();
    let labels: std::collections::BTreeSet<&str> = cases.iter().map(|c| c.action).collect();
    for want in [
        "failover",
        "switchover",
        "demote",
        "repoint",
        "bootstrap",
        "no_action",
    ] {
        assert!(labels.contains(want), "no case for {want}");
    }
    for case in cases {
        check(case).await;
    }
}
