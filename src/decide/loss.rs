//! The expected data loss of a promotion: how much of what the recorded master had
//! acknowledged the chosen candidate does not have. Pure: from the poller's last sighting of
//! the master ([`Gate::last_master_offset`], [`Gate::last_master_dbs`]) and the candidate's
//! own offsets. Without that sighting (the one-shot CLI, a service that never saw the master
//! alive) a dead master's offset is not known to anyone: a replica cannot tell what its master
//! had once the link is gone, so the estimate is "unknown", said so, never guessed.
//!
//! It is a lower bound: writes the master acknowledged after the poller's last look at it are
//! lost too (at most one poll interval of them).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Gate;
use crate::model::{BinlogPos, Engine, NodeStatus};

/// Pika's default `binlog-file-size` (104857600), the one the INFO parser assumes when it
/// sums binlog positions (`node::info::parse`): a byte distance between two positions.
const BINLOG_FILE_SIZE: u64 = 104_857_600;

/// What the chosen candidate is expected to lose.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ExpectedLoss {
    /// Nothing acknowledged is lost: the candidate had everything the master was last seen
    /// with, or writes are paused (Redis) or fenced (Pika 4.x) while it catches up.
    None,
    /// Bytes of the master's replication stream the candidate lacks: `total`, and per DB on
    /// Pika (`dbs`, empty on Redis, whose one stream covers every DB). `master_seen_at`: Unix
    /// seconds of the master's last sighting the estimate is based on.
    Bytes {
        total: u64,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        dbs: BTreeMap<String, u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        master_seen_at: Option<u64>,
    },
    /// Not known, and why (a stable phrase).
    Unknown { why: String },
}

impl ExpectedLoss {
    /// True if the estimate says something may be lost (bytes > 0 or unknown).
    pub fn may_lose(&self) -> bool {
        !matches!(self, ExpectedLoss::None)
    }
}

impl std::fmt::Display for ExpectedLoss {
    /// "none", "db0 120 bytes, db1 0 bytes", "4096 bytes", "unknown (why)". No timestamps.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExpectedLoss::None => f.write_str("none (0 bytes)"),
            ExpectedLoss::Bytes { total, dbs, .. } if dbs.is_empty() => {
                write!(f, "{total} bytes")
            }
            ExpectedLoss::Bytes { dbs, .. } => {
                let per: Vec<String> = dbs
                    .iter()
                    .map(|(db, b)| format!("{db} {b} bytes"))
                    .collect();
                f.write_str(&per.join(", "))
            }
            ExpectedLoss::Unknown { why } => write!(f, "unknown ({why})"),
        }
    }
}

/// Bytes from `from` up to `to` (0 when `from` is at or past `to`).
fn distance(from: BinlogPos, to: BinlogPos) -> u64 {
    if from >= to {
        return 0;
    }
    let files = to.filenum - from.filenum;
    files
        .saturating_mul(BINLOG_FILE_SIZE)
        .saturating_add(to.offset)
        .saturating_sub(from.offset)
}

/// The expected loss of promoting a node with status `s` after the recorded master died.
pub(super) fn of_failover(s: Option<&NodeStatus>, gate: &Gate) -> ExpectedLoss {
    let Some(s) = s else {
        return ExpectedLoss::Unknown {
            why: "the candidate was not observed".into(),
        };
    };
    let seen_at = gate.last_master_seen_at;
    if s.engine == Engine::Pika && !gate.last_master_dbs.is_empty() && !s.db_offsets.is_empty() {
        let mut dbs = BTreeMap::new();
        for (db, master_pos) in &gate.last_master_dbs {
            let Some(mine) = s.db_offsets.get(db) else {
                return ExpectedLoss::Unknown {
                    why: format!("the candidate has no {db}"),
                };
            };
            dbs.insert(db.clone(), distance(*mine, *master_pos));
        }
        let total = dbs.values().fold(0u64, |a, b| a.saturating_add(*b));
        return bytes(total, dbs, seen_at);
    }
    match (gate.last_master_offset, s.offset) {
        (Some(m), Some(o)) => bytes(m.saturating_sub(o), BTreeMap::new(), seen_at),
        (Some(_), None) => ExpectedLoss::Unknown {
            why: "the candidate reports no offset".into(),
        },
        (None, _) => ExpectedLoss::Unknown {
            why: "the master's last offset was not seen: no poller history (one-shot CLI, or the service never saw this master alive)".into(),
        },
    }
}

fn bytes(total: u64, dbs: BTreeMap<String, u64>, master_seen_at: Option<u64>) -> ExpectedLoss {
    if total == 0 {
        ExpectedLoss::None
    } else {
        ExpectedLoss::Bytes {
            total,
            dbs,
            master_seen_at,
        }
    }
}

/// A switchover's expected loss: none where writes stop while the candidate catches up
/// (Redis `CLIENT PAUSE … WRITE`, Pika 4.x write fence), else unknown.
pub(super) fn of_switchover(old_master: Option<&NodeStatus>) -> ExpectedLoss {
    match old_master {
        Some(m) if m.engine == Engine::Redis || m.can_fence_writes() => ExpectedLoss::None,
        Some(m) if m.engine == Engine::Pika => ExpectedLoss::Unknown {
            why: "this Pika has no write fence: writes the old master accepts between the catch-up and its demotion are discarded".into(),
        },
        _ => ExpectedLoss::Unknown {
            why: "the old master's engine is unknown".into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distance_spans_binlog_files() {
        let p = |filenum, offset| BinlogPos { filenum, offset };
        assert_eq!(distance(p(0, 10), p(0, 70)), 60);
        assert_eq!(distance(p(0, 70), p(0, 10)), 0);
        assert_eq!(distance(p(1, 100), p(2, 50)), BINLOG_FILE_SIZE - 50);
    }
}
