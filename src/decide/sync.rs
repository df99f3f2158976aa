//! Full or partial sync: whether a node that starts following a master will get a full copy
//! of its data (slow, heavy on both nodes) or continue from its own position. Pure, from the
//! two nodes' INFO. A follow planned as a full sync is shown in the plan (`(full sync)` and
//! the reason) and counts against `policy.max_parallel_full_syncs`.
//!
//! - **Pika** (pika.md §1.5, §4): a ReplicationID that differs, or none here while the master
//!   has one; `SLAVEOF … force` (sent to a node that claims master, is in link error, or whose
//!   binlog is ahead of the master's in some DB: Pika then goes to `kTryDBSync`); a binlog
//!   position older than what the master keeps. INFO does not show the master's oldest binlog
//!   file, so the rule is Pika's default `expire-logs-nums` of 10: a node 10 or more files
//!   behind may need a purged file (`SyncPointBePurged`), which is counted as a full sync.
//! - **Redis** (`PSYNC`): a partial resync needs the node's `master_replid` to be the
//!   master's `master_replid`, or its `master_replid2` with the node's offset not past
//!   `second_repl_offset`; the offset not past the master's, and inside its backlog. A replica
//!   about to be promoted keeps its master's history as `master_replid2` up to its own
//!   offset, so for it the node's ID must be the one it replicates now. Unknown offsets or IDs
//!   are not judged (no full sync claimed).

use crate::model::{Engine, NodeStatus, Role};

/// Pika's default `expire-logs-nums`: the newest binlog files a master always keeps.
const PIKA_KEPT_BINLOG_FILES: u64 = 10;

/// Why `node` following `target` is a full sync (a stable phrase starting "full sync: "), or
/// `None` for a partial one. `force`: the follow sends `SLAVEOF … force` (Pika).
pub fn full_sync_reason(node: &NodeStatus, target: &NodeStatus, force: bool) -> Option<String> {
    match (node.engine, target.engine) {
        (Engine::Pika, Engine::Pika) => pika(node, target, force),
        (Engine::Redis, Engine::Redis) => redis(node, target),
        _ => None,
    }
}

fn pika(node: &NodeStatus, target: &NodeStatus, force: bool) -> Option<String> {
    if let Some(why) = super::replid_conflict(node, target) {
        return Some(why);
    }
    if node.replid.is_none() && target.replid.is_some() {
        return Some(
            "full sync: no replication id here (Pika copies everything on the first connect)"
                .into(),
        );
    }
    for (db, pos) in &node.db_offsets {
        let Some(theirs) = target.db_offsets.get(db) else {
            continue;
        };
        if pos > theirs {
            return Some(format!(
                "full sync: {db} binlog ({} {}) is ahead of the master's ({} {})",
                pos.filenum, pos.offset, theirs.filenum, theirs.offset
            ));
        }
        if theirs.filenum.saturating_sub(pos.filenum) >= PIKA_KEPT_BINLOG_FILES {
            return Some(format!(
                "full sync: {db} binlog file {} may be purged on the master (at file {}; it keeps the newest {PIKA_KEPT_BINLOG_FILES} by default)",
                pos.filenum, theirs.filenum
            ));
        }
    }
    if force {
        let why = if node.role == Role::Master {
            "it claims master, its binlog may have diverged"
        } else {
            "its link is in error"
        };
        return Some(format!("full sync: SLAVEOF force ({why})"));
    }
    None
}

fn redis(node: &NodeStatus, target: &NodeStatus) -> Option<String> {
    let mine = node.replid.as_ref()?;
    let offset = node.offset?;
    let their_offset = target.offset?;
    let psync = target.psync.as_ref();
    let promoting = target.role.is_replica();
    let history_ok = if promoting {
        // After SLAVEOF NO ONE its current history becomes master_replid2, up to its offset.
        target.replid.as_ref() == Some(mine)
    } else {
        target.replid.as_ref() == Some(mine)
            || psync.is_some_and(|p| {
                p.replid2.as_ref() == Some(mine) && p.second_offset.is_some_and(|s| offset < s)
            })
    };
    if !history_ok {
        return Some(format!(
            "full sync: replication id {} is not in the master's history",
            short(mine)
        ));
    }
    if offset > their_offset {
        return Some(format!(
            "full sync: offset {offset} is ahead of the master's {their_offset}"
        ));
    }
    if let Some(first) = psync.and_then(|p| p.backlog_first) {
        if offset.saturating_add(1) < first {
            return Some(format!(
                "full sync: offset {offset} is older than the master's backlog (from {first})"
            ));
        }
    }
    None
}

fn short(id: &str) -> String {
    match id.get(..12) {
        Some(head) if id.len() > 12 => format!("{head}…"),
        _ => id.to_string(),
    }
}
