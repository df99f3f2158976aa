//! `pika-remedy history`: the recorded topology per cluster and the newest audit events, read
//! as typed [`Event`]s from the coordinator's cluster-wide trail (etcd, Consul) and the events
//! file, deduplicated by event id.

use std::fmt::Write as _;

use crate::config::Loaded;
use crate::coord::Coordinator;
use crate::error::Exit;
use crate::service::events::{rotated_path, Event};

use super::ops::{json_text, record_json, Reply};
use crate::controls::rfc3339;

/// `history`: the recorded topology per cluster and the newest audit events from the
/// JSON-lines file (`service.events_file`).
pub async fn history<C: Coordinator>(
    loaded: &Loaded,
    coord: &C,
    q: &Query<'_>,
    json: bool,
) -> Reply {
    let cluster = q.cluster;
    let mut s = String::new();
    let mut exit = Exit::Ok;
    let mut records = Vec::new();
    let mut trail: Vec<Event> = Vec::new();
    let mut sources: Vec<String> = Vec::new();
    for c in &loaded.config.clusters {
        if cluster.is_some_and(|x| x != c.name) {
            continue;
        }
        match coord.read_record(&c.name).await {
            Ok(Some(r)) => {
                let v = &r.value;
                records.push(serde_json::json!({"cluster": c.name, "record": record_json(v)}));
                let _ = writeln!(
                    s,
                    "cluster {}: master {} epoch {} updated {} last automatic failover {}; {}",
                    c.name,
                    v.master,
                    v.epoch,
                    rfc3339(v.updated_at),
                    v.last_failover_at
                        .map(rfc3339)
                        .unwrap_or_else(|| "never".into()),
                    v.reason
                );
            }
            Ok(None) => {
                records.push(serde_json::json!({"cluster": c.name, "record": null}));
                let _ = writeln!(s, "cluster {}: no record", c.name);
            }
            Err(e) => {
                records.push(
                    serde_json::json!({"cluster": c.name, "record": null, "error": e.to_string()}),
                );
                let _ = writeln!(s, "cluster {}: {e}", c.name);
                exit = Exit::Retry;
            }
        }
        // The cluster-wide trail (every instance and the CLI append to it).
        if coord.keeps_events() {
            match coord.read_events(&c.name).await {
                Ok(lines) => trail.extend(
                    lines
                        .iter()
                        .filter_map(|l| serde_json::from_str::<Event>(l).ok()),
                ),
                Err(e) => {
                    let _ = writeln!(
                        s,
                        "cluster {}: events not read from the coordinator: {e}",
                        c.name
                    );
                    exit = Exit::Retry;
                }
            }
        }
    }
    if coord.keeps_events() {
        sources.push(format!("the {} trail", coord.kind()));
    }
    match &loaded.config.service.events_file {
        None if !coord.keeps_events() => {
            let _ = writeln!(s, "no service.events_file configured: the audit trail is only in the running service (GET /v1/events)");
        }
        None => {}
        Some(p) => {
            trail.extend(read_events(
                p,
                loaded.config.service.events_file_keep,
                cluster,
            ));
            sources.push(p.display().to_string());
        }
    }
    let events = select(trail, q);
    if json {
        let v = serde_json::json!({ "records": records, "events": events });
        return Reply::new(json_text(&v), exit);
    }
    let _ = writeln!(
        s,
        "events ({} from {}):",
        events.len(),
        sources.join(" and ")
    );
    for e in &events {
        let _ = writeln!(s, "  {}", event_line(e));
    }
    Reply::new(s, exit)
}

/// What `history` shows.
pub struct Query<'a> {
    pub cluster: Option<&'a str>,
    /// Only events at or after this Unix time.
    pub since: Option<u64>,
    /// At most this many (the latest).
    pub limit: usize,
}

/// Dedupe (the same event may be in the file and the coordinator's trail; a folded event
/// appears again with a higher count), filter by cluster and time, sort by time, keep the last
/// `limit`.
fn select(all: Vec<Event>, q: &Query<'_>) -> Vec<Event> {
    let mut by_key: std::collections::BTreeMap<(String, String, u64), Event> = Default::default();
    for e in all {
        if q.cluster.is_some_and(|c| e.cluster.as_deref() != Some(c)) {
            continue;
        }
        if let Some(since) = q.since {
            let at = crate::controls::parse_rfc3339(&e.at).unwrap_or(0);
            if at < since {
                continue;
            }
        }
        let key = (e.at.clone(), e.id.clone(), e.seq);
        match by_key.get(&key) {
            Some(old) if old.count >= e.count => {}
            _ => {
                by_key.insert(key, e);
            }
        }
    }
    let v: Vec<Event> = by_key.into_values().collect();
    let skip = v.len().saturating_sub(q.limit);
    v.into_iter().skip(skip).collect()
}

/// The events of the file and its rotated predecessors (oldest first), as typed records. A
/// folded event appears again with a higher `count` (same `seq` and `at`): the later line
/// supersedes. Lines that are not events (torn, foreign) are skipped.
fn read_events(path: &std::path::Path, keep: usize, cluster: Option<&str>) -> Vec<Event> {
    let mut text = String::new();
    for n in (1..keep).rev() {
        text.push_str(&std::fs::read_to_string(rotated_path(path, n)).unwrap_or_default());
    }
    text.push_str(&std::fs::read_to_string(path).unwrap_or_default());
    let mut events: Vec<Event> = Vec::new();
    let mut index: std::collections::HashMap<(u64, String), usize> = Default::default();
    for e in text
        .lines()
        .filter_map(|l| serde_json::from_str::<Event>(l).ok())
        .filter(|e| cluster.is_none_or(|c| e.cluster.as_deref() == Some(c)))
    {
        match index.get(&(e.seq, e.at.clone())) {
            Some(&i) => events[i] = e,
            None => {
                index.insert((e.seq, e.at.clone()), events.len());
                events.push(e);
            }
        }
    }
    events
}

/// `at cluster source [kind] reason -> result (×count, last at)`.
fn event_line(e: &Event) -> String {
    let result = e
        .outcome
        .as_ref()
        .map(|o| serde_tag(&o.result))
        .unwrap_or_else(|| "-".into());
    let repeated = if e.count > 1 {
        format!(
            " (×{}, last {})",
            e.count,
            e.last_at.as_deref().unwrap_or("-")
        )
    } else {
        String::new()
    };
    format!(
        "{} {} {} [{}] {} -> {}{}",
        e.at,
        e.cluster.as_deref().unwrap_or("-"),
        e.source.as_str(),
        serde_tag(&e.kind),
        e.reason,
        result,
        repeated
    )
}

/// The name a value has in the events file (`kind` of a tagged enum, or a unit variant).
fn serde_tag<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(serde_json::Value::Object(m)) => m
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or("-")
            .to_string(),
        _ => "-".into(),
    }
}
