//! Line-level readers of INFO text: per-DB binlog and link lines, Pika's state tokens, roles
//! and `slaveN:` replica lines. Each takes one line or value and never panics.

use std::collections::{BTreeMap, HashMap};

use crate::model::{BinlogPos, Engine, LinkState, ReplicaLine, Role};

use super::InfoError;

/// Lower-case and drop whitespace, so `Master && SLAVE` and `master&&slave` compare equal.
pub(super) fn normalise(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_whitespace())
        .flat_map(char::to_lowercase)
        .collect()
}

pub(super) fn parse_role(text: &str, header: Option<&str>) -> Result<Role, InfoError> {
    match normalise(text).as_str() {
        "master" | "double_master" => Ok(Role::Master),
        "master&&slave" => Ok(Role::MasterSlave),
        "slave" if header.is_some_and(|h| normalise(h) == "master/slave") => Ok(Role::MasterSlave),
        "slave" => Ok(Role::Slave),
        _ => {
            let shown: String = text.chars().take(40).collect();
            Err(InfoError(format!("unknown role {shown:?}")))
        }
    }
}

/// Severity order used whenever two states describe the same link: Error > FullSync >
/// Connecting > Down > Up.
pub(super) fn severity(s: LinkState) -> u8 {
    match s {
        LinkState::Up => 0,
        LinkState::Down => 1,
        LinkState::Connecting => 2,
        LinkState::FullSync => 3,
        LinkState::Error => 4,
    }
}

pub(super) fn worse(a: LinkState, b: LinkState) -> LinkState {
    if severity(b) > severity(a) {
        b
    } else {
        a
    }
}

/// `Replication(MASTER)` → `MASTER` (the `#` already stripped).
pub(super) fn replication_header_role(header: &str) -> Option<&str> {
    let rest = header.trim().strip_prefix("Replication")?.trim_start();
    let inner = rest.strip_prefix('(')?;
    let end = inner.rfind(')')?;
    inner.get(..end).map(str::trim)
}

/// Length of a leading `db<digits>` name followed by `' '` or `':'`, if the line starts with one.
pub(super) fn db_name_len(line: &str) -> Option<usize> {
    let rest = line.strip_prefix("db")?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let len = 2 + digits;
    match line.as_bytes().get(len) {
        Some(b' ') | Some(b':') => Some(len),
        _ => None,
    }
}

/// `db0 binlog_offset=F O,safety_purge=X` or `db0:binlog_offset=F O,…` (name length known).
pub(super) fn binlog_line(line: &str, name_len: usize) -> Option<(&str, BinlogPos)> {
    let name = line.get(..name_len)?;
    let rest = line.get(name_len + 1..)?.trim_start();
    let value = rest.strip_prefix("binlog_offset=")?;
    let pos_text = value.split(',').next()?;
    Some((name, binlog_pos(pos_text)?))
}

/// `F O` → BinlogPos; exactly two unsigned numbers.
pub(super) fn binlog_pos(text: &str) -> Option<BinlogPos> {
    let mut it = text.split_whitespace();
    let filenum = it.next()?.parse().ok()?;
    let offset = it.next()?.parse().ok()?;
    if it.next().is_some() {
        return None;
    }
    Some(BinlogPos { filenum, offset })
}

/// A line inside the `repl_connect_status:` block: `dbN:<word>` without `=` or `,`.
pub(super) fn connect_status_line(line: &str) -> Option<(&str, &str)> {
    let name_len = db_name_len(line)?;
    if line.as_bytes().get(name_len) != Some(&b':') {
        return None;
    }
    let token = line.get(name_len + 1..)?.trim();
    if token.is_empty() || token.contains(['=', ',']) {
        return None;
    }
    Some((line.get(..name_len)?, token))
}

/// 4.0.0 / 3.5.5+ `repl_connect_status` tokens.
pub(super) fn connect_status_token(token: &str) -> Option<LinkState> {
    match token.to_ascii_lowercase().as_str() {
        "connected" => Some(LinkState::Up),
        "no_connect" => Some(LinkState::Down),
        "syncing_full" | "try_to_full_sync" => Some(LinkState::FullSync),
        "connecting" | "try_to_incr_sync" => Some(LinkState::Connecting),
        "error" => Some(LinkState::Error),
        _ => None,
    }
}

/// `db_repl_state` / `db_repl_error_state` tokens (spellings are inconsistent in Pika itself).
pub(super) fn db_repl_state_token(token: &str) -> LinkState {
    match token.trim().to_ascii_lowercase().as_str() {
        "connected" | "kconnected" => LinkState::Up,
        "ktryconnect" | "kwaitreply" | "tryconnect" | "waitreply" => LinkState::Connecting,
        "ktrydbsync" | "waitdbsync" | "kwaitdbsync" | "trydbsync" => LinkState::FullSync,
        "error" | "kerror" | "internalerror" => LinkState::Error,
        // NoConnect, kDBNoConnect, Other, and anything new: Pika lists only DBs that are not
        // connected, so "not up" is all we know.
        _ => LinkState::Down,
    }
}

/// `(db0:WaitDBSync)(db1: InternalError)` → per-DB states.
pub(super) fn parse_db_repl_state(value: &str) -> Vec<(String, LinkState)> {
    paren_groups(value)
        .into_iter()
        .map(|(db, tok)| (db.to_string(), db_repl_state_token(tok)))
        .collect()
}

/// `(name:value)(name:value)…` → pairs, both trimmed; groups without `:` or a name are skipped.
pub(super) fn paren_groups(value: &str) -> Vec<(&str, &str)> {
    let mut out = Vec::new();
    let mut rest = value;
    // Each `)` closes the group opened by the nearest `(` before it; stray brackets are skipped.
    while let Some(end) = rest.find(')') {
        let segment = rest.get(..end).unwrap_or("");
        if let Some(start) = segment.rfind('(') {
            let inner = segment.get(start + 1..).unwrap_or("");
            if let Some((name, val)) = inner.split_once(':') {
                let name = name.trim();
                if !name.is_empty() {
                    out.push((name, val.trim()));
                }
            }
        }
        rest = rest.get(end + 1..).unwrap_or("");
    }
    out
}

/// Pika 3.0 `repl_state:` tokens.
pub(super) fn repl_state_token(value: &str) -> Option<LinkState> {
    let words: Vec<String> = value
        .split_whitespace()
        .map(str::to_ascii_lowercase)
        .collect();
    match words.join(" ").as_str() {
        "connected" => Some(LinkState::Up),
        "wait dbsync" => Some(LinkState::FullSync),
        "error" => Some(LinkState::Error),
        "connecting" | "connect" => Some(LinkState::Connecting),
        "no connect" => Some(LinkState::Down),
        _ => None,
    }
}

/// Index and value of a `slave<digits>:` line (not `slave_priority:` and friends).
pub(super) fn replica_line_value(line: &str) -> Option<(u64, &str)> {
    let rest = line.strip_prefix("slave")?;
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let index = rest.get(..digits)?.parse().unwrap_or(u64::MAX);
    let value = rest.get(digits..)?.strip_prefix(':')?.trim();
    Some((index, value))
}

/// `ip=a,port=b,…` → map (keys and values trimmed; first occurrence wins).
pub(super) fn replica_kv(value: &str) -> HashMap<&str, &str> {
    let mut kv = HashMap::new();
    for part in value.split(',') {
        if let Some((k, v)) = part.split_once('=') {
            kv.entry(k.trim()).or_insert(v.trim());
        }
    }
    kv
}

pub(super) fn parse_replica_line(
    value: &str,
    engine: Engine,
    master_repl_offset: Option<u64>,
) -> Option<ReplicaLine> {
    let kv = replica_kv(value);
    let ip = kv.get("ip").filter(|v| !v.is_empty())?.to_string();
    let port = kv.get("port")?.parse::<u16>().ok()?;
    let state = kv
        .get("state")
        .filter(|v| !v.is_empty())
        .map(|v| v.to_string());
    let offset = kv.get("offset").and_then(|v| v.parse::<u64>().ok());
    let lag = kv.get("lag").copied().unwrap_or("");

    let mut line = ReplicaLine {
        ip,
        port,
        state,
        offset,
        db_lag: BTreeMap::new(),
        lag_bytes: None,
        lag_seconds: None,
    };
    if lag.starts_with('(') {
        for (db, v) in paren_groups(lag) {
            line.db_lag.insert(db.to_string(), v.parse::<u64>().ok());
        }
        if !line.db_lag.is_empty() {
            line.lag_bytes = line
                .db_lag
                .values()
                .try_fold(0u64, |acc, v| v.and_then(|v| acc.checked_add(v)));
        }
        return Some(line);
    }
    let redis_style = match engine {
        Engine::Redis => true,
        Engine::Pika => false,
        Engine::Unknown => kv.contains_key("offset"),
    };
    let lag_num = lag.parse::<u64>().ok();
    if redis_style {
        line.lag_seconds = lag_num;
        line.lag_bytes = match (master_repl_offset, offset) {
            (Some(m), Some(o)) => Some(m.saturating_sub(o)),
            _ => None,
        };
    } else {
        line.lag_bytes = lag_num;
    }
    Some(line)
}
