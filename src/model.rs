//! Plain data shared by every layer: addresses, node status, observations and the
//! recorded topology. No I/O here.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A node address as operators write it: `host:port`. Pika resolves hosts as IPv4 only and
/// compares `SLAVEOF` targets as strings, so we keep exactly what the config says.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Addr {
    pub host: String,
    pub port: u16,
}

impl Addr {
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Addr {
            host: host.into(),
            port,
        }
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Why a `host:port` string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid address {input:?}: {why}")]
pub struct AddrParseError {
    pub input: String,
    pub why: &'static str,
}

impl FromStr for Addr {
    type Err = AddrParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |why| AddrParseError {
            input: s.to_string(),
            why,
        };
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (h, p) = rest
                .split_once("]:")
                .ok_or_else(|| err("expected [v6]:port"))?;
            (h, p)
        } else {
            s.rsplit_once(':')
                .ok_or_else(|| err("expected host:port"))?
        };
        if host.is_empty() {
            return Err(err("empty host"));
        }
        if host.chars().any(|c| c.is_whitespace() || c == '/') {
            return Err(err("host contains whitespace or '/'"));
        }
        let port: u16 = port
            .parse()
            .map_err(|_| err("port is not a number in 1..65535"))?;
        if port == 0 {
            return Err(err("port 0"));
        }
        Ok(Addr::new(host, port))
    }
}

impl Serialize for Addr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Addr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Which server answered: Pika (has `pika_version`) or Redis (has `redis_version`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Pika,
    Redis,
    #[default]
    Unknown,
}

impl Engine {
    /// The lower-case name used in logs, metrics labels and the status table.
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Pika => "pika",
            Engine::Redis => "redis",
            Engine::Unknown => "unknown",
        }
    }
}

/// The role a node reports in `INFO replication`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Master,
    Slave,
    /// Pika `master&&slave`: a replica that has replicas of its own (chained).
    MasterSlave,
}

impl Role {
    /// True if the node follows some master (plain or chained replica).
    pub fn is_replica(self) -> bool {
        matches!(self, Role::Slave | Role::MasterSlave)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Master => "master",
            Role::Slave => "slave",
            Role::MasterSlave => "master&&slave",
        }
    }
}

/// Replication link state of a replica (overall, or of one Pika DB).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    Up,
    Down,
    Connecting,
    /// A full sync (Pika `WaitDBSync`/`syncing_full`/`kTryDBSync`, Redis `master_sync_in_progress:1`).
    FullSync,
    /// Pika `Error`: a state Pika never leaves by itself.
    Error,
}

impl LinkState {
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Up => "up",
            LinkState::Down => "down",
            LinkState::Connecting => "connecting",
            LinkState::FullSync => "full_sync",
            LinkState::Error => "error",
        }
    }
}

/// A Pika binlog position for one DB: (file number, offset in file). Ordered lexicographically.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BinlogPos {
    pub filenum: u64,
    pub offset: u64,
}

/// One connected replica as listed by its master (`slaveN:` lines).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaLine {
    pub ip: String,
    pub port: u16,
    /// Redis `state=` (online, wait_bgsave, send_bulk); Pika 3.0 `state=`; absent on Pika ≥ 3.2.
    pub state: Option<String>,
    /// Redis `offset=` (acked bytes).
    pub offset: Option<u64>,
    /// Pika: lag in binlog bytes per DB; `None` for `full syncing`/`not syncing`.
    pub db_lag: BTreeMap<String, Option<u64>>,
    /// Lag in bytes: Pika's sum over DBs (None if any DB is not syncing); Redis: master offset − replica offset when known.
    pub lag_bytes: Option<u64>,
    /// Redis `lag=` is seconds since the last ACK.
    pub lag_seconds: Option<u64>,
}

/// Everything we read off one node's `INFO` (server + replication sections).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub engine: Engine,
    /// `pika_version` or `redis_version`, when the `# Server` section was present.
    pub version: Option<String>,
    pub role: Role,
    /// `master_host:master_port`, for replicas.
    pub master: Option<Addr>,
    /// `master_link_status` (refined by per-DB states), for replicas.
    pub link: Option<LinkState>,
    /// Pika per-DB link states (`repl_connect_status` / `db_repl_state`); empty on Redis.
    pub db_links: BTreeMap<String, LinkState>,
    /// Pika per-DB binlog positions; empty on Redis.
    pub db_offsets: BTreeMap<String, BinlogPos>,
    /// Normalised single offset: Redis `slave_repl_offset` (replica) / `master_repl_offset` (master);
    /// Pika `slave_repl_offset` if printed, else Σ filenum·binlog_file_size + offset.
    pub offset: Option<u64>,
    /// Pika `ReplicationID`, Redis `master_replid`. `None` if absent or empty.
    pub replid: Option<String>,
    /// Pika `is_eligible_for_master_election` (3.5.5/4.0.1+).
    pub eligible: Option<bool>,
    /// `slave_priority` (lower is preferred, 0 = never).
    pub priority: Option<i64>,
    pub connected_replicas: u32,
    pub replicas: Vec<ReplicaLine>,
    /// Redis only: what a partial resync (`PSYNC`) to this node can continue from; `None` on
    /// Pika and when the fields are absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psync: Option<Psync>,
}

/// Redis: the replication history a node can serve a partial resync from (`INFO replication`:
/// `master_replid2`, `second_repl_offset`, `repl_backlog_active`,
/// `repl_backlog_first_byte_offset`). A replica whose `master_replid` is neither this node's
/// `master_replid` nor (up to `second_repl_offset`) its `master_replid2`, or whose offset is
/// outside the backlog, gets a full sync.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Psync {
    /// `master_replid2`; `None` when all zeros (no previous history).
    pub replid2: Option<String>,
    /// `second_repl_offset`; `None` when -1.
    pub second_offset: Option<u64>,
    /// `repl_backlog_first_byte_offset` when `repl_backlog_active:1`; `None` without a backlog.
    pub backlog_first: Option<u64>,
}

impl NodeStatus {
    /// True if this node reports itself as a replica whose link to `master` is up.
    pub fn follows_with_link_up(&self, master: &Addr) -> bool {
        self.role.is_replica()
            && self.master.as_ref() == Some(master)
            && self.link == Some(LinkState::Up)
    }

    /// Pika before 3.5 rewrites only keys already uncommented in pika.conf, and the stock file
    /// has `#slaveof`, so its `CONFIG REWRITE` may answer `+OK` and persist no role change
    /// (docs: pika.md, CONFIG REWRITE). Nothing a client can read shows the file, so the
    /// caller can only warn. An unknown or unparsable version is not flagged.
    pub fn rewrite_may_skip_slaveof(&self) -> bool {
        if self.engine != Engine::Pika {
            return false;
        }
        let Some(v) = self.version.as_deref() else {
            return false;
        };
        let mut parts = v.trim().split('.').map(|p| p.parse::<u32>().ok());
        match (parts.next().flatten(), parts.next().flatten()) {
            (Some(major), Some(minor)) => (major, minor) < (3, 5),
            _ => false,
        }
    }

    /// `CLIENT KILL TYPE normal` (close every normal client connection, the caller's own
    /// excepted): Redis 2.8.12+ (it answers the count), Pika 3.5.5 and 4.x (it answers `+OK`;
    /// the 4.0.1 release reports `pika_version:4.0.0`). Older Pika answers a syntax error.
    /// An unknown engine or an unparsable version: no.
    pub fn can_kill_clients(&self) -> bool {
        let Some(v) = self.version.as_deref() else {
            return false;
        };
        let mut parts = v.trim().split('.').map(|p| p.parse::<u32>().ok());
        let ver = (
            parts.next().flatten(),
            parts.next().flatten().unwrap_or(0),
            parts.next().flatten().unwrap_or(0),
        );
        match (self.engine, ver) {
            (Engine::Redis, (Some(major), minor, patch)) => (major, minor, patch) >= (2, 8, 12),
            (Engine::Pika, (Some(major), minor, patch)) => (major, minor, patch) >= (3, 5, 5),
            _ => false,
        }
    }

    /// Pika 4.x has ACLs, so its writes can be fenced for a switchover (`ACL SETUSER default
    /// -@write`, which also applies to open connections). Older Pika and unknown versions: no.
    pub fn can_fence_writes(&self) -> bool {
        if self.engine != Engine::Pika {
            return false;
        }
        self.version
            .as_deref()
            .and_then(|v| v.trim().split('.').next())
            .and_then(|m| m.parse::<u32>().ok())
            .is_some_and(|major| major >= 4)
    }
}

/// One node as configured plus what we saw when we asked it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeObservation {
    pub addr: Addr,
    /// Operator priority from config (lower is preferred, like `slave-priority`); 0 = never promote.
    pub priority: u32,
    pub never_promote: bool,
    /// The node's status, or a short, secret-free error text ("timeout", "connection refused", …).
    /// JSON: `{"ok": {…status…}}` or `{"error": "text"}` (no Rust `Ok`/`Err` shapes).
    #[serde(with = "status_json")]
    pub status: Result<NodeStatus, String>,
}

/// `Result<NodeStatus, String>` as `{"ok": …}` / `{"error": "…"}`.
mod status_json {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::NodeStatus;

    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "snake_case", deny_unknown_fields)]
    enum Shape<T> {
        Ok(T),
        Error(String),
    }

    pub fn serialize<S: Serializer>(
        v: &Result<NodeStatus, String>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match v {
            Ok(st) => Shape::Ok(st).serialize(s),
            Err(e) => Shape::<&NodeStatus>::Error(e.clone()).serialize(s),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Result<NodeStatus, String>, D::Error> {
        Ok(match Shape::<NodeStatus>::deserialize(d)? {
            Shape::Ok(st) => Ok(st),
            Shape::Error(e) => Err(e),
        })
    }
}

impl NodeObservation {
    pub fn reachable(&self) -> Option<&NodeStatus> {
        self.status.as_ref().ok()
    }

    /// Our own notion of "could be promoted right now", from this node's status alone: a
    /// reachable replica with its link up, not excluded by operator config (`never_promote`,
    /// priority 0), by `slave_priority 0`, or by Pika's `is_eligible_for_master_election:false`.
    /// The relative lag rule (behind the best candidate) needs all nodes and stays in `decide`.
    pub fn promotion_eligible(&self) -> bool {
        let Ok(s) = &self.status else { return false };
        s.role.is_replica()
            && s.link == Some(LinkState::Up)
            && s.eligible != Some(false)
            && s.priority != Some(0)
            && !self.never_promote
            && self.priority != 0
    }
}

/// What we observed of a whole cluster at one moment, in config order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    pub cluster: String,
    pub nodes: Vec<NodeObservation>,
}

impl Observation {
    pub fn node(&self, addr: &Addr) -> Option<&NodeObservation> {
        self.nodes.iter().find(|n| &n.addr == addr)
    }
    pub fn reachable_count(&self) -> usize {
        self.nodes.iter().filter(|n| n.status.is_ok()).count()
    }
    /// Reachable nodes that claim `role:master`.
    pub fn claiming_master(&self) -> Vec<&Addr> {
        self.nodes
            .iter()
            .filter(|n| matches!(&n.status, Ok(s) if s.role == Role::Master))
            .map(|n| &n.addr)
            .collect()
    }

    /// The master whose replica lines describe `node`: the one it says it follows, if
    /// observed, else the only node claiming master.
    pub fn master_of(&self, node: &NodeStatus) -> Option<&NodeStatus> {
        if let Some(m) = &node.master {
            if let Some(s) = self.node(m).and_then(NodeObservation::reachable) {
                return Some(s);
            }
        }
        match self.claiming_master().as_slice() {
            [only] => self.node(only).and_then(NodeObservation::reachable),
            _ => None,
        }
    }

    /// The one lag rule: a replica's lag in bytes, from its master's replica line (Pika: binlog
    /// bytes summed over DBs, absent while a DB is in full sync; Redis: master offset minus
    /// acked offset), else from comparable offsets. `None` for a master or when unknown.
    pub fn lag_of(&self, addr: &Addr, s: &NodeStatus) -> Option<u64> {
        if !s.role.is_replica() {
            return None;
        }
        let m = self.master_of(s)?;
        let line = m
            .replicas
            .iter()
            .find(|r| r.ip == addr.host && r.port == addr.port);
        if let Some(lag) = line.and_then(|l| l.lag_bytes) {
            return Some(lag);
        }
        // Comparable offsets (Redis; Pika ≥ 3.5.5 slave_repl_offset) give the lag directly.
        match (m.offset, s.offset) {
            (Some(mo), Some(so)) => Some(mo.saturating_sub(so)),
            _ => None,
        }
    }
}

/// The recorded truth about a cluster, kept in the coordinator. `epoch` grows by one on every
/// change of master, so a returning old master can be told apart from the legitimate one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopologyRecord {
    pub master: Addr,
    pub replicas: Vec<Addr>,
    pub epoch: u64,
    /// Unix seconds of this write.
    pub updated_at: u64,
    /// Unix seconds of the last *automatic* failover (for the cooldown), if any.
    #[serde(default)]
    pub last_failover_at: Option<u64>,
    /// The reason sentence of the plan that produced this record.
    pub reason: String,
    /// Write-ahead intent: a failover to this node was started (written under the lock just
    /// before `SLAVEOF NO ONE`). If the holder dies before recording the result, the next
    /// instance sees this node claiming master and completes the failover instead of refusing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Addr>,
}

/// A record together with the backend's version, for compare-and-set.
impl TopologyRecord {
    /// The one epoch rule: the epoch a new record naming `master` gets after `prev` (the
    /// current record, if any): unchanged for the same master, one more for a new one, 1 for
    /// the first record.
    pub fn next_epoch(prev: Option<&TopologyRecord>, master: &Addr) -> u64 {
        match prev {
            Some(p) if &p.master == master => p.epoch,
            Some(p) => p.epoch + 1,
            None => 1,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned<T> {
    pub value: T,
    /// Backend-specific version (Consul ModifyIndex, etcd mod_revision, local file generation).
    pub version: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addr_round_trips() {
        let a: Addr = "10.0.0.11:9221".parse().unwrap();
        assert_eq!(a, Addr::new("10.0.0.11", 9221));
        assert_eq!(a.to_string(), "10.0.0.11:9221");
        let v6: Addr = "[::1]:6379".parse().unwrap();
        assert_eq!(v6.host, "::1");
        assert_eq!(v6.to_string(), "[::1]:6379");
    }

    #[test]
    fn only_pika_before_3_5_may_skip_slaveof_on_rewrite() {
        let status = |server: &str| {
            let text = format!("# Server\r\n{server}\r\n\r\n# Replication\r\nrole:master\r\nconnected_slaves:0\r\n");
            crate::node::info::parse(&text).unwrap()
        };
        for (server, flagged) in [
            ("pika_version:3.2.9", true),
            ("pika_version:3.3.6", true),
            ("pika_version:3.4.2", true),
            ("pika_version:3.5.0", false),
            ("pika_version:3.5.4", false),
            ("pika_version:4.0.0", false),
            ("pika_version:garbage", false),
            ("redis_version:3.2.0", false),
        ] {
            assert_eq!(
                status(server).rewrite_may_skip_slaveof(),
                flagged,
                "{server}"
            );
        }
        let mut s = status("pika_version:3.3.6");
        s.version = None;
        assert!(!s.rewrite_may_skip_slaveof(), "unknown version: no warning");
    }

    #[test]
    fn addr_rejects_garbage() {
        for bad in [
            "",
            "host",
            ":1",
            "h:0",
            "h:70000",
            "h:x",
            "a b:1",
            "[::1]6379",
        ] {
            assert!(bad.parse::<Addr>().is_err(), "{bad:?} should be rejected");
        }
    }
}
