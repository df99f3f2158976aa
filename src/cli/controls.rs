//! `pause`, `resume`, `maintenance set|clear|list`, `ack`: the shared controls in the
//! coordinator (see [`crate::controls`]), audited in the same trail as every action.

use crate::config::Loaded;
use crate::controls::{self, rfc3339, Change, Controls, ScheduleState, ScheduledSwitchover};
use crate::coord::Coordinator;
use crate::error::{Error, Exit};
use crate::reconcile::now_unix;
use crate::service::events::{EventKind, EventLog, FileCap, NewEvent, TriggerSource};

use super::ops::Reply;

/// Check that the clusters and nodes a change names are configured (a usage error otherwise).
pub fn validate(loaded: &Loaded, change: &Change) -> Result<(), Error> {
    if let Some(c) = change.cluster() {
        let Some(cl) = loaded.cluster(c) else {
            return Err(Error::Usage(format!("unknown cluster {c:?}")));
        };
        let named = match change {
            Change::SetMaintenance { node, .. } | Change::ClearMaintenance { node, .. } => {
                Some(node)
            }
            Change::ScheduleSwitchover { to, .. } => to.as_ref(),
            _ => None,
        };
        if let Some(node) = named {
            if !cl.nodes.iter().any(|n| &n.addr == node) {
                return Err(Error::Usage(format!(
                    "node {node} is not configured in cluster {c}"
                )));
            }
        }
    }
    Ok(())
}

/// Apply `change` and audit it (events file + the coordinator's trail of each cluster concerned).
pub async fn change<C: Coordinator>(
    loaded: &Loaded,
    coord: &C,
    change: Change,
    json: bool,
) -> Reply {
    let who = controls::operator();
    match controls::apply(coord, &change, &who, now_unix()).await {
        Ok((doc, text)) => {
            audit(loaded, coord, change.cluster(), &text).await;
            if json {
                Reply::new(json_line(&view(&doc, now_unix())), Exit::Ok)
            } else {
                Reply::new(format!("{text}\n"), Exit::Ok)
            }
        }
        Err(controls::ControlsError::Refused(why)) => Reply::new(format!("{why}\n"), Exit::NotDone),
        Err(controls::ControlsError::Coord(e)) => Reply::error(&e.into()),
        Err(e @ controls::ControlsError::Contended(_)) => Reply::new(format!("{e}\n"), Exit::Retry),
    }
}

/// `maintenance list` (and the controls part of `status`).
pub async fn list<C: Coordinator>(coord: &C, json: bool) -> Reply {
    match controls::read(coord).await {
        Err(e) => Reply::error(&e.into()),
        Ok(doc) => {
            let now = now_unix();
            if json {
                Reply::new(json_line(&view(&doc, now)), Exit::Ok)
            } else {
                Reply::new(render(&doc, now), Exit::Ok)
            }
        }
    }
}

fn json_line(v: &serde_json::Value) -> String {
    format!("{}\n", serde_json::to_string_pretty(v).unwrap_or_default())
}

/// The documented JSON shape of the controls: the stored document plus `now` and, per entry,
/// whether it is in force (`active`).
pub fn view(doc: &Controls, now: u64) -> serde_json::Value {
    let live = |until: Option<u64>| until.is_none_or(|u| now < u);
    let pauses: Vec<serde_json::Value> = doc
        .pauses
        .iter()
        .map(|p| {
            let mut v = serde_json::to_value(p).unwrap_or_default();
            v["active"] = live(p.until).into();
            v
        })
        .collect();
    let maintenance: Vec<serde_json::Value> = doc
        .maintenance
        .iter()
        .map(|m| {
            let mut v = serde_json::to_value(m).unwrap_or_default();
            v["active"] = live(m.until).into();
            v
        })
        .collect();
    serde_json::json!({
        "now": rfc3339(now),
        "pauses": pauses,
        "maintenance": maintenance,
        "acks": doc.acks,
        "switchovers": doc.switchovers.iter().map(|s| switchover_json(s, now)).collect::<Vec<_>>(),
    })
}

/// A scheduled switchover in the documented JSON shape, with its `state` at `now`
/// (waiting, due, expired).
pub fn switchover_json(s: &ScheduledSwitchover, now: u64) -> serde_json::Value {
    let mut v = serde_json::to_value(s).unwrap_or_default();
    v["state"] = s.state(now).as_str().into();
    v
}

/// One text line for a scheduled switchover.
pub fn switchover_text(s: &ScheduledSwitchover, now: u64) -> String {
    let when = match s.state(now) {
        ScheduleState::Waiting => format!(
            "in {}",
            humantime::format_duration(std::time::Duration::from_secs(s.at - now))
        ),
        ScheduleState::Due => format!("due since {} s", now - s.at),
        ScheduleState::Expired => "EXPIRED (more than --max-delay late; will not run)".into(),
    };
    let reason = if s.reason.is_empty() {
        String::new()
    } else {
        format!(": {}", s.reason)
    };
    format!(
        "{} ({when}; by {} at {}){reason}",
        s.describe(),
        s.who,
        rfc3339(s.since)
    )
}

/// Text lines for the controls, one per entry ("none" when empty).
pub fn render(doc: &Controls, now: u64) -> String {
    let mut out = String::new();
    let state = |until: Option<u64>| match until {
        Some(u) if now >= u => format!(" (EXPIRED at {}, not cleared)", rfc3339(u)),
        Some(u) => format!(" until {}", rfc3339(u)),
        None => String::new(),
    };
    for p in &doc.pauses {
        let scope = p.cluster.as_deref().unwrap_or("all clusters");
        out.push_str(&format!(
            "pause       {scope}: {} (by {} at {}){}\n",
            p.reason,
            p.who,
            rfc3339(p.since),
            state(p.until)
        ));
    }
    for m in &doc.maintenance {
        out.push_str(&format!(
            "maintenance {} {} {}: {} (by {} at {}){}\n",
            m.cluster,
            m.node,
            m.mode.as_str(),
            m.reason,
            m.who,
            rfc3339(m.since),
            state(m.until)
        ));
    }
    for a in &doc.acks {
        out.push_str(&format!(
            "ack         {}: failover at {} acknowledged by {} at {}: {}\n",
            a.cluster,
            rfc3339(a.failover_at),
            a.who,
            rfc3339(a.at),
            a.reason
        ));
    }
    for s in &doc.switchovers {
        out.push_str(&format!("scheduled   {}\n", switchover_text(s, now)));
    }
    if out.is_empty() {
        out.push_str("no pause, maintenance, acknowledgement or scheduled switchover\n");
    }
    out
}

/// A control event in the events file and in each concerned cluster's coordinator trail.
pub async fn audit<C: Coordinator>(loaded: &Loaded, coord: &C, cluster: Option<&str>, text: &str) {
    let log = match EventLog::open_capped(
        1,
        loaded.config.service.events_file.as_deref(),
        FileCap::of(&loaded.config.service),
    ) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "cannot open the events file; control change not recorded there");
            EventLog::in_memory(1)
        }
    };
    let recorded = log.record(NewEvent::not_acted(
        EventKind::Control,
        cluster.map(str::to_string),
        TriggerSource::Cli,
        Vec::new(),
        text.to_string(),
    ));
    let Ok(json) = serde_json::to_string(&recorded) else {
        return;
    };
    let clusters: Vec<String> = match cluster {
        Some(c) => vec![c.to_string()],
        None => loaded
            .config
            .clusters
            .iter()
            .map(|c| c.name.clone())
            .collect(),
    };
    for c in clusters {
        if let Err(e) = coord.append_event(&c, &json).await {
            tracing::warn!(error = %e, "control change not copied to the coordinator's event list");
        }
    }
}
