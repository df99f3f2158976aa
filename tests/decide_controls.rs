//! The pure core honours the shared controls passed in as data (`Gate::holds`,
//! `Gate::cooldown_acked`): a node under maintenance is never a candidate (with the reason), a
//! plan that would send a command to a `hands-off` node is refused naming it, and an
//! acknowledged cooldown no longer blocks an automatic failover.

use std::collections::BTreeMap;

use pika_remedy::config::Policy;
use pika_remedy::decide::{decide, Action, Gate, NodeHold, Trigger};
use pika_remedy::model::{
    Addr, Engine, LinkState, NodeObservation, NodeStatus, Observation, Role, TopologyRecord,
};

const NOW: u64 = 1_000_000;

fn a(s: &str) -> Addr {
    s.parse().expect("addr")
}

fn replica(master: &str, offset: u64) -> NodeStatus {
    NodeStatus {
        engine: Engine::Redis,
        version: Some("7.0.15".into()),
        role: Role::Slave,
        master: Some(a(master)),
        link: Some(LinkState::Down),
        db_links: BTreeMap::new(),
        db_offsets: BTreeMap::new(),
        offset: Some(offset),
        replid: None,
        eligible: None,
        priority: None,
        connected_replicas: 0,
        replicas: Vec::new(),
        psync: None,
    }
}

fn node(addr: &str, status: Result<NodeStatus, String>) -> NodeObservation {
    NodeObservation {
        addr: a(addr),
        priority: 100,
        never_promote: false,
        status,
    }
}

/// Master :1 dead, replicas :2 (best offset) and :3.
fn master_dead() -> (Observation, TopologyRecord) {
    let obs = Observation {
        cluster: "c".into(),
        nodes: vec![
            node("127.0.0.1:1", Err("connection refused".into())),
            node("127.0.0.1:2", Ok(replica("127.0.0.1:1", 100))),
            node("127.0.0.1:3", Ok(replica("127.0.0.1:1", 90))),
        ],
    };
    let rec = TopologyRecord {
        master: a("127.0.0.1:1"),
        replicas: vec![a("127.0.0.1:2"), a("127.0.0.1:3")],
        epoch: 1,
        updated_at: NOW - 100,
        last_failover_at: None,
        pending: None,
        reason: "test".into(),
    };
    (obs, rec)
}

fn gate(holds: &[(&str, bool, &str)]) -> Gate {
    Gate {
        now: NOW,
        holds: holds
            .iter()
            .map(|(n, hands_off, why)| {
                (
                    a(n),
                    NodeHold {
                        hands_off: *hands_off,
                        reason: why.to_string(),
                    },
                )
            })
            .collect(),
        ..Gate::default()
    }
}

#[test]
fn no_promote_node_is_never_the_candidate() {
    let (obs, rec) = master_dead();
    let plan = decide(
        &Trigger::MasterDown,
        &obs,
        Some(&rec),
        &Policy::default(),
        &gate(&[]),
    );
    assert!(
        matches!(&plan.action, Action::Failover { promote, .. } if *promote == a("127.0.0.1:2")),
        "{plan:?}"
    );
    let g = gate(&[("127.0.0.1:2", false, "maintenance no-promote (disk)")]);
    let plan = decide(
        &Trigger::MasterDown,
        &obs,
        Some(&rec),
        &Policy::default(),
        &g,
    );
    assert!(
        matches!(&plan.action, Action::Failover { promote, .. } if *promote == a("127.0.0.1:3")),
        "{plan:?}"
    );
    let c2 = plan
        .candidates
        .iter()
        .find(|c| c.addr == a("127.0.0.1:2"))
        .expect("ranked");
    assert_eq!(
        c2.excluded.as_deref(),
        Some("maintenance no-promote (disk)")
    );
    // Not even when an operator names it.
    let plan = decide(
        &Trigger::Failover {
            to: Some(a("127.0.0.1:2")),
            accept_data_loss: false,
        },
        &obs,
        Some(&rec),
        &Policy::default(),
        &g,
    );
    assert!(
        !matches!(&plan.action, Action::Failover { promote, .. } if *promote == a("127.0.0.1:2")),
        "{plan:?}"
    );
}

#[test]
fn a_plan_touching_a_hands_off_node_is_refused_naming_it() {
    let (obs, rec) = master_dead();
    let g = gate(&[("127.0.0.1:3", true, "maintenance hands-off (kernel)")]);
    let plan = decide(
        &Trigger::MasterDown,
        &obs,
        Some(&rec),
        &Policy::default(),
        &g,
    );
    assert_eq!(plan.action, Action::Refuse { retryable: false }, "{plan:?}");
    assert!(
        plan.reason
            .contains("127.0.0.1:3: maintenance hands-off (kernel)"),
        "{}",
        plan.reason
    );
}

#[test]
fn an_acknowledged_cooldown_no_longer_blocks() {
    let (obs, mut rec) = master_dead();
    rec.last_failover_at = Some(NOW - 10);
    let plan = decide(
        &Trigger::MasterDown,
        &obs,
        Some(&rec),
        &Policy::default(),
        &gate(&[]),
    );
    assert!(plan.reason.starts_with("cooldown"), "{plan:?}");
    let g = Gate {
        cooldown_acked: true,
        ..gate(&[])
    };
    let plan = decide(
        &Trigger::MasterDown,
        &obs,
        Some(&rec),
        &Policy::default(),
        &g,
    );
    assert!(matches!(plan.action, Action::Failover { .. }), "{plan:?}");
}
