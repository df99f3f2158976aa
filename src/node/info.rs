//! Pure parser for Pika (3.3–4.0.x) and Redis 7 `INFO` text (`# Server` + `# Replication`).

use crate::model::NodeStatus;

/// Why an INFO body could not be turned into a status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot parse INFO: {0}")]
pub struct InfoError(pub String);

/// Default Pika `binlog-file-size`, used to normalise per-DB offsets when `slave_repl_offset` is absent.
pub const DEFAULT_BINLOG_FILE_SIZE: u64 = 104_857_600;

/// Parse an INFO body (any section mix, CRLF or LF).
pub fn parse(text: &str) -> Result<NodeStatus, InfoError> {
    let _ = text;
    Err(InfoError("not implemented".into()))
}
