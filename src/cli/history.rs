//! `pika-remedy history`: the recorded topology per cluster and the newest audit events,
//! read from the events file as typed [`Event`]s.

use std::fmt::Write as _;

use crate::config::Loaded;
use crate::coord::Coordinator;
use crate::error::Exit;
use crate::service::events::{rotated_path, Event};

use super::ops::Reply;

/// `history`: the recorded topology per cluster and the newest audit events from the
/// JSON-lines file (`service.events_file`).
pub async fn history<C: Coordinator>(
    loaded: &Loaded,
    coord: &C,
    cluster: Option<&str>,
    limit: usize,
) -> Reply {
    let mut s = String::new();
    let mut exit = Exit::Ok;
    for c in &loaded.config.clusters {
        if cluster.is_some_and(|x| x != c.name) {
            continue;
        }
        match coord.read_record(&c.name).await {
            Ok(Some(r)) => {
                let v = &r.value;
                let _ = writeln!(
                    s,
                    "cluster {}: master {} epoch {} updated {} last automatic failover {}; {}",
                    c.name,
                    v.master,
                    v.epoch,
                    v.updated_at,
                    v.last_failover_at
                        .map(|t| t.to_string())
                        .unwrap_or_else(|| "never".into()),
                    v.reason
                );
            }
            Ok(None) => {
                let _ = writeln!(s, "cluster {}: no record", c.name);
            }
            Err(e) => {
                let _ = writeln!(s, "cluster {}: {e}", c.name);
                exit = Exit::Retry;
            }
        }
    }
    match &loaded.config.service.events_file {
        None => {
            let _ = writeln!(s, "no service.events_file configured: the audit trail is only in the running service (GET /v1/events)");
        }
        Some(p) => {
            let events = read_events(p, loaded.config.service.events_file_keep, cluster);
            let skip = events.len().saturating_sub(limit);
            let _ = writeln!(
                s,
                "events ({} of {} in {}):",
                events.len() - skip,
                events.len(),
                p.display()
            );
            for e in &events[skip..] {
                let _ = writeln!(s, "  {}", event_line(e));
            }
        }
    }
    Reply::new(s, exit)
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
