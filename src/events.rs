//! The audit trail. Every reconcile, and every alert we decided *not* to act on, becomes one
//! [`Event`]: kept in a bounded in-memory ring (for `GET /v1/events`), appended to a JSON-lines
//! file when configured, and handed to an optional sink (the lead wires it to
//! `Coordinator::append_event`) with a bound on how many sink calls may be in flight.
//!
//! Why all three: the ring answers operators quickly, the file survives restarts, and the
//! coordinator copy is visible to the other instances. A webhook answered 2xx must never be
//! lost, so "ignored" and "resolved" alerts are recorded too, with their reason.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::future::Future;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::decide::Trigger;
use crate::reconcile::Outcome;

/// Who asked for a reconcile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TriggerSource {
    Alertmanager,
    Api,
    Cli,
    Periodic,
}

impl TriggerSource {
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerSource::Alertmanager => "alertmanager",
            TriggerSource::Api => "api",
            TriggerSource::Cli => "cli",
            TriggerSource::Periodic => "periodic",
        }
    }
}

/// One Alertmanager alert as it appears in the audit trail. Label values that look like URLs
/// have their user-info removed (a `redis://:password@host` instance label must not leak).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertInfo {
    pub alertname: String,
    /// `firing` or `resolved` (as sent).
    pub status: String,
    /// Depends only on the labels: together with `starts_at` it identifies one incident.
    pub fingerprint: String,
    pub starts_at: String,
    /// The node the alert is about, normalised to `host:port`, when the instance label parsed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub labels: BTreeMap<String, String>,
}

/// What kind of entry this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A reconcile ran; `outcome` is set.
    Reconcile,
    /// An alert (or request) we did not act on; `reason` says why.
    Ignored,
    /// A resolved alert: logged, never acted on.
    Resolved,
    /// Operator control: pause / resume.
    Control,
}

/// One audit entry. JSON field names are part of the API (`GET /v1/events`, the events file).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Monotonic per process, starting at 1.
    pub seq: u64,
    /// RFC 3339 UTC with milliseconds.
    pub at: String,
    pub kind: EventKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    pub source: TriggerSource,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<Trigger>,
    /// The alerts that led here (for a coalesced reconcile: all of them, deduplicated by
    /// fingerprint + startsAt, at most [`MAX_ALERTS_PER_EVENT`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub alerts: Vec<AlertInfo>,
    /// How many alerts were left out of `alerts` because of the bound.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub alerts_omitted: usize,
    /// The plan's reason for a reconcile; otherwise why nothing was done.
    pub reason: String,
    /// Observation summary, plan, steps with timing, result and total duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Bound on the alerts listed in one event: a storm of distinct alerts must not grow one event
/// without limit.
pub const MAX_ALERTS_PER_EVENT: usize = 100;

/// Bound on concurrent calls into the [`EventSink`]. When exceeded, the event still goes to the
/// ring and the file; only the coordinator copy is skipped (with a warning).
pub const SINK_MAX_IN_FLIGHT: usize = 16;

/// An event about to be recorded (the log assigns `seq` and `at`).
#[derive(Clone, Debug)]
pub struct NewEvent {
    pub kind: EventKind,
    pub cluster: Option<String>,
    pub source: TriggerSource,
    pub trigger: Option<Trigger>,
    pub alerts: Vec<AlertInfo>,
    pub alerts_omitted: usize,
    pub reason: String,
    pub outcome: Option<Outcome>,
}

impl NewEvent {
    /// An entry for something we did not act on.
    pub fn not_acted(
        kind: EventKind,
        cluster: Option<String>,
        source: TriggerSource,
        alerts: Vec<AlertInfo>,
        reason: impl Into<String>,
    ) -> NewEvent {
        NewEvent {
            kind,
            cluster,
            source,
            trigger: None,
            alerts,
            alerts_omitted: 0,
            reason: reason.into(),
            outcome: None,
        }
    }
}

/// Receives `(cluster, event_json)` for the coordinator copy. Best effort.
pub type EventSink =
    Arc<dyn Fn(String, String) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

#[derive(Debug, thiserror::Error)]
#[error("events file {path}: {source}")]
pub struct EventsError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// The audit trail: ring + optional file + optional sink.
pub struct EventLog {
    capacity: usize,
    ring: Mutex<VecDeque<Event>>,
    file: Option<Mutex<File>>,
    file_path: Option<PathBuf>,
    sink: Option<EventSink>,
    sink_slots: Arc<Semaphore>,
    seq: AtomicU64,
}

impl std::fmt::Debug for EventLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLog")
            .field("capacity", &self.capacity)
            .field("file", &self.file_path)
            .field("sink", &self.sink.is_some())
            .finish()
    }
}

impl EventLog {
    /// A log keeping the last `capacity` events in memory (at least 1), appending to `file` when
    /// given (created if missing, never truncated).
    pub fn open(capacity: usize, file: Option<&Path>) -> Result<EventLog, EventsError> {
        let (file, file_path) = match file {
            Some(p) => {
                let f = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|source| EventsError {
                        path: p.to_path_buf(),
                        source,
                    })?;
                (Some(Mutex::new(f)), Some(p.to_path_buf()))
            }
            None => (None, None),
        };
        Ok(EventLog {
            capacity: capacity.max(1),
            ring: Mutex::new(VecDeque::new()),
            file,
            file_path,
            sink: None,
            sink_slots: Arc::new(Semaphore::new(SINK_MAX_IN_FLIGHT)),
            seq: AtomicU64::new(0),
        })
    }

    /// In-memory only (tests, and when no file is configured).
    pub fn in_memory(capacity: usize) -> EventLog {
        EventLog {
            capacity: capacity.max(1),
            ring: Mutex::new(VecDeque::new()),
            file: None,
            file_path: None,
            sink: None,
            sink_slots: Arc::new(Semaphore::new(SINK_MAX_IN_FLIGHT)),
            seq: AtomicU64::new(0),
        }
    }

    /// Also hand every event that names a cluster to `sink` (the coordinator copy).
    pub fn with_sink(mut self, sink: EventSink) -> EventLog {
        self.sink = Some(sink);
        self
    }

    /// Record one event: ring, file, sink. Never fails: file and sink errors are logged.
    pub fn record(&self, new: NewEvent) -> Event {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let event = Event {
            seq,
            at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            kind: new.kind,
            cluster: new.cluster,
            source: new.source,
            trigger: new.trigger,
            alerts: new.alerts,
            alerts_omitted: new.alerts_omitted,
            reason: new.reason,
            outcome: new.outcome,
        };
        tracing::info!(
            seq,
            kind = ?event.kind,
            cluster = event.cluster.as_deref().unwrap_or("-"),
            source = event.source.as_str(),
            reason = %event.reason,
            "audit event"
        );
        {
            let mut ring = lock(&self.ring);
            while ring.len() >= self.capacity {
                ring.pop_front();
            }
            ring.push_back(event.clone());
        }
        let json = match serde_json::to_string(&event) {
            Ok(j) => j,
            Err(e) => {
                tracing::warn!(seq, error = %e, "audit event not serialisable");
                return event;
            }
        };
        if let Some(file) = &self.file {
            let mut f = lock(file);
            if let Err(e) = writeln!(f, "{json}") {
                tracing::warn!(seq, error = %e, "cannot append audit event to the events file");
            }
        }
        if let (Some(sink), Some(cluster)) = (&self.sink, &event.cluster) {
            match (
                tokio::runtime::Handle::try_current(),
                self.sink_slots.clone().try_acquire_owned(),
            ) {
                (Ok(rt), Ok(permit)) => {
                    let fut = sink(cluster.clone(), json);
                    rt.spawn(async move {
                        fut.await;
                        drop(permit);
                    });
                }
                (Err(_), _) => {
                    tracing::warn!(seq, "no runtime: audit event not sent to the coordinator")
                }
                (_, Err(_)) => {
                    tracing::warn!(seq, "coordinator event sink busy: event kept locally only")
                }
            }
        }
        event
    }

    /// The most recent `limit` events (oldest first), optionally only one cluster's.
    pub fn recent(&self, limit: usize, cluster: Option<&str>) -> Vec<Event> {
        let ring = lock(&self.ring);
        let mut out: Vec<Event> = ring
            .iter()
            .rev()
            .filter(|e| cluster.is_none() || e.cluster.as_deref() == cluster)
            .take(limit)
            .cloned()
            .collect();
        out.reverse();
        out
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

/// A poisoned lock only means another thread panicked mid-update of plain data; the data is
/// still usable for an audit log, so we keep going rather than cascade the panic.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(cluster: &str, reason: &str) -> NewEvent {
        NewEvent::not_acted(
            EventKind::Ignored,
            Some(cluster.into()),
            TriggerSource::Alertmanager,
            Vec::new(),
            reason,
        )
    }

    #[test]
    fn ring_is_bounded_and_filters() {
        let log = EventLog::in_memory(3);
        for i in 0..5 {
            log.record(ev(if i % 2 == 0 { "a" } else { "b" }, &format!("r{i}")));
        }
        let all = log.recent(10, None);
        assert_eq!(
            all.iter().map(|e| e.reason.as_str()).collect::<Vec<_>>(),
            ["r2", "r3", "r4"]
        );
        assert_eq!(all[2].seq, 5);
        let a = log.recent(10, Some("a"));
        assert_eq!(a.len(), 2);
        assert_eq!(log.recent(1, None)[0].reason, "r4");
    }

    #[test]
    fn file_gets_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("events.jsonl");
        let log = EventLog::open(2, Some(&p)).unwrap();
        log.record(ev("a", "one"));
        log.record(ev("a", "two"));
        log.record(ev("a", "three"));
        let text = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<Event> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[2].reason, "three");
        assert_eq!(lines[0].kind, EventKind::Ignored);
    }

    #[tokio::test]
    async fn sink_receives_cluster_events() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let sink: EventSink = Arc::new(move |c, j| {
            let tx = tx.clone();
            Box::pin(async move {
                let _ = tx.send((c, j));
            })
        });
        let log = EventLog::in_memory(4).with_sink(sink);
        log.record(ev("main", "x"));
        let (c, j) = tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(c, "main");
        assert!(j.contains("\"reason\":\"x\""), "{j}");
    }
}
