//! Interpretation of the scanned fields: engine, link, offset, per-DB links, replid and the
//! other single values (see the mapping decisions in [`super`]).

use std::collections::BTreeMap;

use super::lines::*;
use super::Scan;
use crate::model::{Addr, BinlogPos, Engine, LinkState, ReplicaLine, Role};

impl<'a> Scan<'a> {
    pub(super) fn engine(&self, role_text: &str) -> Engine {
        if self.has("pika_version") {
            return Engine::Pika;
        }
        if self.has("redis_version") {
            return Engine::Redis;
        }
        let role = normalise(role_text);
        let pika = self.header_role.is_some()
            || !self.db_offsets.is_empty()
            || self.saw_connect_status
            || [
                "ReplicationID",
                "db_repl_state",
                "db_repl_error_state",
                "repl_state",
                "is_eligible_for_master_election",
            ]
            .iter()
            .any(|k| self.has(k))
            || role == "master&&slave"
            || role == "double_master"
            || self.replica_lines.iter().any(|(_, l)| {
                let kv = replica_kv(l);
                kv.contains_key("conn_fd")
                    || kv.contains_key("sid")
                    || kv.get("lag").is_some_and(|v| v.starts_with('('))
            });
        let redis = [
            "master_replid",
            "master_replid2",
            "master_repl_offset",
            "master_failover_state",
            "repl_backlog_active",
            "master_sync_in_progress",
            "slave_read_repl_offset",
            "replica_announced",
        ]
        .iter()
        .any(|k| self.has(k))
            || self
                .replica_lines
                .iter()
                .any(|(_, l)| replica_kv(l).contains_key("offset"));
        match (pika, redis) {
            (true, false) => Engine::Pika,
            (false, true) => Engine::Redis,
            _ => Engine::Unknown,
        }
    }

    /// Overall link of a replica: per-DB trouble first, then the node-wide fields.
    pub(super) fn link(&self, db_links: &BTreeMap<String, LinkState>) -> Option<LinkState> {
        let worst_db = db_links
            .values()
            .copied()
            .filter(|s| *s != LinkState::Up)
            .reduce(worse);
        if worst_db.is_some() {
            return worst_db;
        }
        let status =
            self.get("master_link_status")
                .and_then(|v| match v.to_ascii_lowercase().as_str() {
                    "up" => Some(LinkState::Up),
                    "down" if self.get("master_sync_in_progress") == Some("1") => {
                        Some(LinkState::FullSync)
                    }
                    "down" => Some(LinkState::Down),
                    _ => None,
                });
        let repl_state = self.get("repl_state").and_then(repl_state_token);
        match (status, repl_state) {
            (Some(a), Some(b)) => Some(worse(a, b)),
            (a, b) => a.or(b),
        }
    }

    pub(super) fn offset(&self, engine: Engine, role: Role, binlog_file_size: u64) -> Option<u64> {
        let slave = self.get_u64("slave_repl_offset");
        let master = self.get_u64("master_repl_offset");
        let summed = || binlog_sum(&self.db_offsets, binlog_file_size);
        match engine {
            Engine::Redis if role.is_replica() => slave.or(master),
            Engine::Redis => master,
            Engine::Pika => slave.or_else(summed),
            Engine::Unknown => {
                let by_role = if role.is_replica() { slave } else { master };
                by_role.or(slave).or_else(summed)
            }
        }
    }
    /// `master_host` + `master_port` (port 1–65535), whatever the role.
    pub(super) fn master(&self) -> Option<Addr> {
        match (self.get("master_host"), self.get("master_port")) {
            (Some(host), Some(port)) if !host.is_empty() => port
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .map(|p| Addr::new(host, p)),
            _ => None,
        }
    }

    /// Per-DB links: the 4.x `repl_connect_status` block and the `db_repl_state` lists (the
    /// worse state wins); on a replica that only listed the DBs not connected, the others are Up.
    pub(super) fn db_links(&self, role: Role) -> BTreeMap<String, LinkState> {
        let mut db_links = self.connect_status.clone();
        let mut listed_not_connected = false;
        for key in ["db_repl_state", "db_repl_error_state"] {
            if let Some(v) = self.get(key) {
                listed_not_connected = true;
                for (db, state) in parse_db_repl_state(v) {
                    db_links
                        .entry(db)
                        .and_modify(|s| *s = worse(*s, state))
                        .or_insert(state);
                }
            }
        }
        if role.is_replica() && listed_not_connected && !self.saw_connect_status {
            for db in self.db_offsets.keys() {
                db_links.entry(db.clone()).or_insert(LinkState::Up);
            }
        }
        db_links
    }

    /// Pika `ReplicationID`, Redis `master_replid` (Unknown: whichever is present); empty → `None`.
    pub(super) fn replid(&self, engine: Engine) -> Option<String> {
        match engine {
            Engine::Pika => self.get("ReplicationID"),
            Engine::Redis => self.get("master_replid"),
            Engine::Unknown => self
                .get("ReplicationID")
                .filter(|v| !v.is_empty())
                .or_else(|| self.get("master_replid")),
        }
        .filter(|v| !v.is_empty())
        .map(str::to_string)
    }

    /// Redis: `master_replid2`/`second_repl_offset` and the backlog's first byte, when any of
    /// them is printed.
    pub(super) fn psync(&self) -> Option<crate::model::Psync> {
        let replid2 = self
            .get("master_replid2")
            .filter(|v| !v.is_empty() && v.bytes().any(|b| b != b'0'))
            .map(str::to_string);
        let second_offset = self
            .get("second_repl_offset")
            .and_then(|v| v.parse::<i64>().ok())
            .and_then(|v| u64::try_from(v).ok());
        let backlog_first = if self.get("repl_backlog_active") == Some("1") {
            self.get_u64("repl_backlog_first_byte_offset")
        } else {
            None
        };
        if !self.has("master_replid2") && !self.has("repl_backlog_active") {
            return None;
        }
        Some(crate::model::Psync {
            replid2,
            second_offset,
            backlog_first,
        })
    }

    /// `is_eligible_for_master_election` `true`/`false`, else `None`.
    pub(super) fn eligible(&self) -> Option<bool> {
        self.get("is_eligible_for_master_election").and_then(|v| {
            match v.to_ascii_lowercase().as_str() {
                "true" => Some(true),
                "false" => Some(false),
                _ => None,
            }
        })
    }

    /// The `slaveN:` lines in order, the unparseable ones skipped.
    pub(super) fn replicas(&self, engine: Engine) -> Vec<ReplicaLine> {
        let master_repl_offset = self.get_u64("master_repl_offset");
        self.replica_lines
            .iter()
            .filter_map(|(_, l)| parse_replica_line(l, engine, master_repl_offset))
            .collect()
    }
}

/// Σ filenum·binlog_file_size + offset, `None` when there are no DBs or the sum overflows.
pub(super) fn binlog_sum(dbs: &BTreeMap<String, BinlogPos>, binlog_file_size: u64) -> Option<u64> {
    if dbs.is_empty() {
        return None;
    }
    dbs.values().try_fold(0u64, |acc, p| {
        p.filenum
            .checked_mul(binlog_file_size)
            .and_then(|v| v.checked_add(p.offset))
            .and_then(|v| acc.checked_add(v))
    })
}
