//! The `Nodes` seam: read a node's status and change its replication role.
//!
//! Every call has a deadline (connect + command timeouts from config). Mutating calls only
//! send what they are told: the caller (the compiled plan) decides whether `force` is sent,
//! because Redis rejects it and Pika needs it to demote a diverged old master.
//!
//! Modules: `commands` (every wire command), `info` (the INFO parser), `redis` (the
//! production client), `kept` (the poller's kept connections: plain RESP2, used by `redis`).

pub mod commands;
pub mod info;
mod kept;
pub mod redis;

use std::future::Future;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::{Addr, Engine, NodeStatus};

/// A finished snapshot of a node (`BGSAVE` under a name of its own), as recorded in the audit
/// event, the API and the metrics.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    /// On the node's host: Pika the dump dir (`<dump-path>pika-remedy-<tag>-<YYYYMMDD>`, the
    /// date is the node's local date when the save started), Redis the RDB file.
    pub path: String,
    /// Pika: `db_size` of `INFO data` when saved (the dump is a checkpoint of that data);
    /// Redis: `None` (INFO does not say).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// Redis: `DBSIZE` when saved; Pika: `None` (its key count is only known after a scan).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<u64>,
    /// From `BGSAVE` to its completion.
    pub millis: u64,
}

/// Why a node call failed. The text never contains a password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeError {
    #[error("timeout")]
    Timeout,
    #[error("connection refused")]
    Refused,
    #[error("authentication failed: {0}")]
    Auth(String),
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The node answered with an error reply; the text is the node's own (e.g. `already master of others`).
    #[error("node error: {0}")]
    Node(String),
    /// Pika refused `SLAVEOF` because slaves are still attached (`already master of others`;
    /// a stale entry lingers 1–4 s after the last one left). The text is the node's own.
    #[error("node error: {0}")]
    MasterOfOthers(String),
    /// The node refused a write-class command because it is a replica (`READONLY …`; Pika
    /// also classes `CLEARREPLICATIONID` so). The text is the node's own.
    #[error("node error: {0}")]
    ReadOnly(String),
    /// The node does not know the command or this form of it (an older engine version:
    /// `unknown command`, or old Pika's `Syntax error` for `CLIENT KILL TYPE`).
    #[error("not supported by the node: {0}")]
    Unsupported(String),
    #[error("i/o error: {0}")]
    Io(String),
}

impl NodeError {
    /// Short label for metrics and summaries.
    pub fn kind(&self) -> &'static str {
        match self {
            NodeError::Timeout => "timeout",
            NodeError::Refused => "refused",
            NodeError::Auth(_) => "auth",
            NodeError::Protocol(_) => "protocol",
            NodeError::Node(_) | NodeError::MasterOfOthers(_) | NodeError::ReadOnly(_) => "node",
            NodeError::Unsupported(_) => "unsupported",
            NodeError::Io(_) => "io",
        }
    }
}

/// Access to the nodes of one cluster (one password per cluster, as Pika requires
/// `masterauth` == `requirepass` across a replication group).
///
/// Implementations: [`redis::RedisNodes`] (production, over the `redis` crate); test fakes.
pub trait Nodes: Send + Sync {
    /// `INFO` (server + replication), parsed. Never mutates.
    fn status(&self, node: &Addr) -> impl Future<Output = Result<NodeStatus, NodeError>> + Send;
    /// [`Nodes::status`] on a kept connection, for the poller and a reconcile's first look
    /// (the look under the lock and every step use `status`). Default: `status`.
    fn status_pooled(
        &self,
        node: &Addr,
    ) -> impl Future<Output = Result<NodeStatus, NodeError>> + Send {
        self.status(node)
    }
    /// `SLAVEOF NO ONE`. Returns when the node answered `+OK` (the role change is asynchronous on Pika).
    fn promote(&self, node: &Addr) -> impl Future<Output = Result<(), NodeError>> + Send;
    /// `SLAVEOF host port` (`force` appended when asked; only ever asked for Pika).
    fn follow(
        &self,
        node: &Addr,
        master: &Addr,
        force: bool,
    ) -> impl Future<Output = Result<(), NodeError>> + Send;
    /// `CONFIG SET masterauth <cluster password>`; a no-op `Ok` when the cluster has no password.
    fn set_masterauth(&self, node: &Addr) -> impl Future<Output = Result<(), NodeError>> + Send;
    /// `CONFIG REWRITE`.
    fn config_rewrite(&self, node: &Addr) -> impl Future<Output = Result<(), NodeError>> + Send;
    /// Redis `CLIENT PAUSE <ms> WRITE` (switchover). Pika has no write pause: returns `Node` error.
    fn pause_writes(
        &self,
        node: &Addr,
        for_how_long: Duration,
    ) -> impl Future<Output = Result<(), NodeError>> + Send;
    /// Redis `CLIENT UNPAUSE`.
    fn unpause_writes(&self, node: &Addr) -> impl Future<Output = Result<(), NodeError>> + Send;
    /// Pika 4.x: `ACL SETUSER default -@write`, so no client (open connections included) can
    /// have a write acknowledged by this node until [`Nodes::unfence_writes`]. Pika has no
    /// `CLIENT PAUSE`; this is its switchover fence. Default: unsupported.
    fn fence_writes(&self, node: &Addr) -> impl Future<Output = Result<(), NodeError>> + Send {
        let _ = node;
        async {
            Err(NodeError::Node(
                "write fencing is not supported here".into(),
            ))
        }
    }
    /// Pika 3.5.1+: `CLEARREPLICATIONID` (the node must not be a slave: `ReadOnly`).
    /// Default: unsupported.
    fn clear_replication_id(
        &self,
        node: &Addr,
    ) -> impl Future<Output = Result<(), NodeError>> + Send {
        let _ = node;
        async {
            Err(NodeError::Unsupported(
                "CLEARREPLICATIONID is not supported here".into(),
            ))
        }
    }
    /// `CLIENT KILL TYPE normal`: close the node's normal client connections. `Some(n)` when
    /// the node says how many (Redis), `None` when it only answers `+OK` (Pika).
    /// Default: unsupported.
    fn kill_clients(
        &self,
        node: &Addr,
    ) -> impl Future<Output = Result<Option<u64>, NodeError>> + Send {
        let _ = node;
        async {
            Err(NodeError::Unsupported(
                "CLIENT KILL TYPE is not supported here".into(),
            ))
        }
    }
    /// Snapshot the node before its data is discarded: `CONFIG GET` its dump folder and name
    /// setting (Pika `dump-path`/`dump-prefix`, Redis `dir`/`dbfilename`), `CONFIG SET` the
    /// name to [`crate::decide::snapshot_name`]`(engine, tag)`, `BGSAVE`, poll until it is done
    /// (bounded by `timeout`), then put the name setting back. An error when the save fails,
    /// does not finish in time, or the node refuses any of it. Default: unsupported.
    fn snapshot(
        &self,
        node: &Addr,
        engine: Engine,
        tag: &str,
        timeout: Duration,
    ) -> impl Future<Output = Result<SnapshotInfo, NodeError>> + Send {
        let _ = (node, engine, tag, timeout);
        async {
            Err(NodeError::Unsupported(
                "BGSAVE snapshots are not supported here".into(),
            ))
        }
    }
    /// `BGSAVE` and the bounded wait for its end, under the node's own dump name: a fresh dump
    /// for the full sync a replica is about to ask this (Pika) master for. Pika serves a full
    /// sync from its last dump whenever that dump's binlog file still exists, even when the
    /// node's data and binlog were replaced since (by a full sync of its own, e.g. after a
    /// snapshot of its diverged writes): the replica then loads the stale dump and its
    /// `TrySync` fails for good (`Slave offset is not a start point of cur log`).
    /// Default: unsupported.
    fn refresh_dump(
        &self,
        node: &Addr,
        engine: Engine,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), NodeError>> + Send {
        let _ = (node, engine, timeout);
        async {
            Err(NodeError::Unsupported(
                "BGSAVE is not supported here".into(),
            ))
        }
    }
    /// Pika 4.x: `ACL SETUSER default +@write`. Default: unsupported.
    fn unfence_writes(&self, node: &Addr) -> impl Future<Output = Result<(), NodeError>> + Send {
        let _ = node;
        async {
            Err(NodeError::Node(
                "write fencing is not supported here".into(),
            ))
        }
    }
}
