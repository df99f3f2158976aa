//! What a demotion would discard: the estimate of a node's diverged writes, from the
//! observation alone, and the `policy.diverged = "refuse"` gate.
//!
//! A demotion makes a node follow the recorded master; on Pika that is `SLAVEOF … force`, a
//! full copy that drops everything the node had (pika.md §0.6), and a Redis old master that
//! took writes of its own cannot continue the new master's stream either (full resync). The
//! estimate compares the node with the master it will follow:
//! - Pika, per DB: the node's binlog position (`dbN:binlog_offset=F O`) against the master's.
//!   Within one binlog file the difference is bytes; across files only the aggregate
//!   `slave_repl_offset` (Pika 3.5.5/4.0.1+) gives bytes.
//! - Redis: the node's replication offset against the master's.
//!
//! Both histories grew from the point where the new master was promoted, so a node that
//! **claims master** counts as diverged whatever the positions say: the bytes ahead are a lower
//! bound (the master's own writes since the failover may hide the node's). A replica that is
//! not ahead of the master in any DB holds nothing the master lacks.

use serde::{Deserialize, Serialize};

use super::{Action, Plan, Trigger};
use crate::config::{DivergedPolicy, Policy};
use crate::model::{Addr, BinlogPos, Engine, NodeObservation, Observation, Role};

/// One DB of the node against the master it will follow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbDivergence {
    pub db: String,
    /// The node's binlog position.
    pub node: BinlogPos,
    /// The master's binlog position for the same DB (`None`: the master lacks the DB).
    pub master: Option<BinlogPos>,
    /// Bytes of binlog the node has beyond the master's position: 0 when it is not ahead;
    /// `None` when ahead across binlog files (the byte count needs the file size).
    pub bytes_ahead: Option<u64>,
}

/// The estimate of what a demotion of `node` would discard, computed by `decide` from the
/// observation and carried by [`super::Step::Diverged`] (so `plan` shows it, the audit event
/// and the API keep it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Divergence {
    /// The node claims master: it may have acknowledged writes the master never had.
    pub claims_master: bool,
    /// Pika: per DB; empty on Redis.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dbs: Vec<DbDivergence>,
    /// The node's and the master's single offsets (Redis replication offset, Pika
    /// `slave_repl_offset`), when both are known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_offset: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_offset: Option<u64>,
    /// Total bytes the node is ahead of the master (a lower bound when it claims master):
    /// Pika the sum over DBs when every DB's is known, else the single offsets'; Redis the
    /// offsets'. `None`: unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_ahead: Option<u64>,
}

impl Divergence {
    /// True if the node may hold writes the master does not have.
    pub fn diverged(&self) -> bool {
        self.claims_master
            || self.bytes_ahead.is_some_and(|b| b > 0)
            || self.dbs.iter().any(|d| d.master.is_none_or(|m| d.node > m))
    }

    /// One stable phrase, e.g. "claims master; db0 ahead by 1234 bytes (binlog 0 5678 against
    /// 0 4444)", for plans, refusals and events.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if self.claims_master {
            parts.push(
                "claims master (its own writes since the failover are lost on demotion)"
                    .to_string(),
            );
        }
        for d in &self.dbs {
            let pos = |p: &BinlogPos| format!("{} {}", p.filenum, p.offset);
            let text = match (&d.master, d.bytes_ahead) {
                (None, _) => format!("{} only on this node (binlog {})", d.db, pos(&d.node)),
                (Some(_), Some(0)) => continue,
                (Some(m), Some(b)) => format!(
                    "{} ahead by {b} bytes (binlog {} against {})",
                    d.db,
                    pos(&d.node),
                    pos(m)
                ),
                (Some(m), None) => format!(
                    "{} ahead across binlog files (binlog {} against {})",
                    d.db,
                    pos(&d.node),
                    pos(m)
                ),
            };
            parts.push(text);
        }
        match self.bytes_ahead {
            Some(b) if self.dbs.is_empty() => parts.push(format!("ahead by {b} bytes")),
            None if self.dbs.is_empty() => parts.push("offset unknown".to_string()),
            _ => {}
        }
        if parts.is_empty() {
            return "not ahead of the master".to_string();
        }
        parts.join("; ")
    }
}

/// The estimate for demoting `node` to `to`; `None` when the node is not observed.
pub fn estimate(obs: &Observation, node: &Addr, to: &Addr) -> Option<Divergence> {
    let me = obs.node(node).and_then(NodeObservation::reachable)?;
    let master = obs.node(to).and_then(NodeObservation::reachable);
    let claims_master = me.role == Role::Master;
    let mut dbs = Vec::new();
    if me.engine == Engine::Pika {
        for (db, pos) in &me.db_offsets {
            let theirs = master.and_then(|m| m.db_offsets.get(db)).copied();
            let bytes_ahead = match theirs {
                Some(m) if *pos <= m => Some(0),
                Some(m) if pos.filenum == m.filenum => Some(pos.offset - m.offset),
                Some(_) => None,
                None => None,
            };
            dbs.push(DbDivergence {
                db: db.clone(),
                node: *pos,
                master: theirs,
                bytes_ahead,
            });
        }
    }
    let node_offset = me.offset;
    let master_offset = master.and_then(|m| m.offset);
    let by_offsets = match (node_offset, master_offset) {
        (Some(n), Some(m)) => Some(n.saturating_sub(m)),
        _ => None,
    };
    let by_dbs = if dbs.is_empty() {
        None
    } else {
        dbs.iter().map(|d| d.bytes_ahead).sum::<Option<u64>>()
    };
    Some(Divergence {
        claims_master,
        dbs,
        node_offset,
        master_offset,
        bytes_ahead: by_dbs.or(by_offsets),
    })
}

/// `policy.diverged = "refuse"`: a demotion of a diverged node is refused unless the operator
/// asked for it with `--accept-data-loss`. Every other plan passes unchanged.
pub(super) fn refuse_check(
    plan: Plan,
    trigger: &Trigger,
    obs: &Observation,
    policy: &Policy,
) -> Plan {
    if policy.diverged != DivergedPolicy::Refuse {
        return plan;
    }
    let Action::Demote { node, to } = &plan.action else {
        return plan;
    };
    if matches!(
        trigger,
        Trigger::Demote {
            accept_data_loss: true,
            ..
        }
    ) {
        return plan;
    }
    let Some(est) = estimate(obs, node, to) else {
        return plan;
    };
    if !est.diverged() {
        return plan;
    }
    Plan {
        action: Action::Refuse { retryable: false },
        reason: format!(
            "{node} diverged from {to} ({}); policy.diverged = \"refuse\": no automatic demotion, \
             an operator decides: pika-remedy demote --cluster {} --node {node} --accept-data-loss",
            est.summary(),
            obs.cluster
        ),
        candidates: plan.candidates,
        expected_loss: None,
    }
}
