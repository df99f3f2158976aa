//! The audit trail. Every reconcile, and every alert we decided *not* to act on, becomes one
//! [`Event`]: kept in a bounded in-memory ring (for `GET /v1/events`), appended to a JSON-lines
//! file when configured, and handed to an optional sink (the lead wires it to
//! `Coordinator::append_event`) with a bound on how many sink calls may be in flight.
//!
//! Why all three: the ring answers operators quickly, the file survives restarts, and the
//! coordinator copy is visible to the other instances. A webhook answered 2xx must never be
//! lost, so "ignored" and "resolved" alerts are recorded too, with their reason.
//!
//! # Bounded under floods
//! - **Repeats fold into one event.** *Not acted* entries (ignored or resolved alerts, and
//!   reconciles that sent nothing: no action, refused, lock held, coordinator unreachable, dry
//!   run) of the same cluster with the same kind, source, trigger, result and reason, with no
//!   acted-on entry of that cluster in between, are one event (at most
//!   [`MAX_RUNS_PER_CLUSTER`] such runs are open per cluster; interleaved alert kinds each keep
//!   their own): `count` says how many, `at` is the first and `last_at` the last
//!   time. The first is written at once; the count reaches the file (and the coordinator
//!   copy) as the same event again (same `seq` and `at`, higher `count`; the later line
//!   supersedes) when the run ends, at most every [`REPEAT_FLUSH`] while it lasts, and on
//!   [`EventLog::flush`] / drop. An event that acted on a node is never folded.
//! - **The file rotates at a size cap** (`service.events_file_max_bytes`, default 64 MiB, ×
//!   `service.events_file_keep` files, default 4): `events.jsonl` → `events.jsonl.1` → …,
//!   and only the oldest rotated file is ever removed. A new line is never dropped: if the
//!   rotation itself fails, the line is still appended to the current file.
//! - Warnings that can repeat per event (sink busy, file errors) are rate-limited
//!   ([`crate::throttle`]).

use std::collections::HashMap;
use std::collections::VecDeque;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

pub use crate::alert::AlertInfo;
use crate::decide::Trigger;
use crate::reconcile::{Outcome, Result_};
use crate::throttle::Throttle;

mod file;

use self::file::EventsFile;
pub use self::file::{rotated_path, FileCap};

/// Default `service.events_file_max_bytes`.
pub const DEFAULT_FILE_MAX_BYTES: u64 = 64 * 1024 * 1024;
/// Default `service.events_file_keep` (the current file included).
pub const DEFAULT_FILE_KEEP: usize = 4;
/// Smallest accepted `service.events_file_max_bytes`.
pub const MIN_FILE_MAX_BYTES: u64 = 4096;
/// Distinct runs of repeats kept open per cluster at a time.
pub const MAX_RUNS_PER_CLUSTER: usize = 32;
/// While a run of repeats lasts, its count reaches the file at least this often.
pub const REPEAT_FLUSH: Duration = Duration::from_secs(10);

static SINK_BUSY: Throttle = Throttle::new();
static FILE_WRITE_FAILED: Throttle = Throttle::new();
static NOT_SERIALISABLE: Throttle = Throttle::new();

/// Who asked for a reconcile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TriggerSource {
    Alertmanager,
    Api,
    Cli,
    Periodic,
    /// The service's own poller saw the master in trouble (`service.self_trigger`).
    #[serde(rename = "self")]
    SelfTrigger,
    /// A switchover scheduled with `switchover --at` came due.
    Schedule,
}

impl TriggerSource {
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerSource::Alertmanager => "alertmanager",
            TriggerSource::Api => "api",
            TriggerSource::Cli => "cli",
            TriggerSource::Periodic => "periodic",
            TriggerSource::SelfTrigger => "self",
            TriggerSource::Schedule => "schedule",
        }
    }
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
    /// Unique across processes (CLI and every `serve` append to the same trails):
    /// `<process id>-<seq>`, the process id being random per event log.
    #[serde(default)]
    pub id: String,
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
    /// How many consecutive identical not-acted entries this event stands for (`at` is the
    /// first, `last_at` the last). Absent = 1.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub count: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_at: Option<String>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

fn one() -> u64 {
    1
}

fn is_one(n: &u64) -> bool {
    *n == 1
}

/// What makes two consecutive not-acted entries of one cluster "the same".
#[derive(Clone, Debug, PartialEq, Eq)]
struct RunKey {
    kind: EventKind,
    source: TriggerSource,
    trigger: Option<Trigger>,
    result: Option<&'static str>,
    reason: String,
}

/// `Some` for entries that did not act on any node (they may fold into a run).
fn run_key(e: &NewEvent) -> Option<RunKey> {
    let result = match (&e.kind, &e.outcome) {
        (EventKind::Ignored | EventKind::Resolved, _) => None,
        (EventKind::Reconcile, Some(o)) if o.steps.is_empty() => Some(match o.result {
            Result_::NoAction => "no_action",
            Result_::Refused => "refused",
            Result_::LockHeld { .. } => "lock_held",
            Result_::CoordinatorUnreachable { .. } => "coordinator_unreachable",
            Result_::DryRun => "dry_run",
            _ => return None,
        }),
        _ => return None,
    };
    Some(RunKey {
        kind: e.kind,
        source: e.source,
        trigger: e.trigger.clone(),
        result,
        reason: e.reason.clone(),
    })
}

/// One open run of repeats.
struct Run {
    key: RunKey,
    event: Event,
    /// `event.count` as last written to the file.
    written: u64,
    last_write: Instant,
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
    file: Option<Mutex<EventsFile>>,
    file_path: Option<PathBuf>,
    /// Open runs of repeats per cluster (`None`: entries without a cluster).
    runs: Mutex<HashMap<Option<String>, Vec<Run>>>,
    sink: Option<EventSink>,
    sink_slots: Arc<Semaphore>,
    seq: AtomicU64,
    /// Random per log (so per process), the first half of every event id.
    origin: String,
}

/// 16 hex digits, different for every call (and so for every process): the clock, the pid
/// and a randomly keyed hash.
fn origin_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(nanos);
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
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
    /// given (created if missing, never truncated) with the default [`FileCap`].
    pub fn open(capacity: usize, file: Option<&Path>) -> Result<EventLog, EventsError> {
        Self::open_capped(capacity, file, FileCap::default())
    }

    /// [`EventLog::open`] with the file's size cap and number of rotated files.
    pub fn open_capped(
        capacity: usize,
        file: Option<&Path>,
        cap: FileCap,
    ) -> Result<EventLog, EventsError> {
        let (file, file_path) = match file {
            Some(p) => {
                let f = EventsFile::open(p, cap).map_err(|source| EventsError {
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
            runs: Mutex::new(HashMap::new()),
            sink: None,
            sink_slots: Arc::new(Semaphore::new(SINK_MAX_IN_FLIGHT)),
            seq: AtomicU64::new(0),
            origin: origin_id(),
        })
    }

    /// In-memory only (tests, and when no file is configured).
    pub fn in_memory(capacity: usize) -> EventLog {
        EventLog {
            capacity: capacity.max(1),
            ring: Mutex::new(VecDeque::new()),
            file: None,
            file_path: None,
            runs: Mutex::new(HashMap::new()),
            sink: None,
            sink_slots: Arc::new(Semaphore::new(SINK_MAX_IN_FLIGHT)),
            seq: AtomicU64::new(0),
            origin: origin_id(),
        }
    }

    /// Also hand every event that names a cluster to `sink` (the coordinator copy).
    pub fn with_sink(mut self, sink: EventSink) -> EventLog {
        self.sink = Some(sink);
        self
    }

    /// Record one event: ring, file, sink. Never fails: file and sink errors are logged.
    /// A repeat of the cluster's current run of not-acted entries only raises that event's
    /// `count` (see the module docs); the returned event then has `count > 1`.
    pub fn record(&self, new: NewEvent) -> Event {
        let now = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        let key = run_key(&new);
        let mut runs = lock(&self.runs);
        let open = runs.entry(new.cluster.clone()).or_default();
        match &key {
            Some(k) => {
                if let Some(run) = open.iter_mut().find(|r| r.key == *k) {
                    run.event.count += 1;
                    run.event.last_at = Some(now);
                    self.update_ring(&run.event);
                    if run.last_write.elapsed() >= REPEAT_FLUSH {
                        self.write_run(run);
                    }
                    return run.event.clone();
                }
                // Bounded: too many distinct reasons at once end the oldest run.
                if open.len() >= MAX_RUNS_PER_CLUSTER {
                    let mut oldest = open.remove(0);
                    self.write_run(&mut oldest);
                }
            }
            None => {
                // Something acted (or is not foldable): every run of the cluster ends here,
                // so the counts come before it in the file.
                for mut run in open.drain(..) {
                    self.write_run(&mut run);
                }
            }
        }
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        let event = Event {
            id: format!("{}-{seq}", self.origin),
            seq,
            at: now,
            kind: new.kind,
            cluster: new.cluster,
            source: new.source,
            trigger: new.trigger,
            alerts: new.alerts,
            alerts_omitted: new.alerts_omitted,
            reason: new.reason,
            outcome: new.outcome,
            count: 1,
            last_at: None,
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
        self.persist(&event);
        if let Some(key) = key {
            runs.entry(event.cluster.clone()).or_default().push(Run {
                key,
                event: event.clone(),
                written: 1,
                last_write: Instant::now(),
            });
        }
        event
    }

    /// Write every run's count that has not reached the file yet (at shutdown; also called
    /// periodically so a long run's count is not only in memory).
    pub fn flush(&self) {
        let mut runs = lock(&self.runs);
        for run in runs.values_mut().flatten() {
            self.write_run(run);
        }
    }

    /// The run's event again, if its count grew since it was last written.
    fn write_run(&self, run: &mut Run) {
        if run.event.count <= run.written {
            return;
        }
        tracing::info!(
            seq = run.event.seq,
            count = run.event.count,
            cluster = run.event.cluster.as_deref().unwrap_or("-"),
            reason = %run.event.reason,
            "audit event repeated"
        );
        self.persist(&run.event);
        run.written = run.event.count;
        run.last_write = Instant::now();
    }

    fn update_ring(&self, event: &Event) {
        let mut ring = lock(&self.ring);
        if let Some(e) = ring.iter_mut().rev().find(|e| e.seq == event.seq) {
            e.count = event.count;
            e.last_at.clone_from(&event.last_at);
        }
    }

    /// File and sink.
    fn persist(&self, event: &Event) {
        let seq = event.seq;
        let json = match serde_json::to_string(event) {
            Ok(j) => j,
            Err(e) => {
                if let Some(suppressed) = NOT_SERIALISABLE.check() {
                    tracing::warn!(seq, error = %e, suppressed, "audit event not serialisable");
                }
                return;
            }
        };
        if let Some(file) = &self.file {
            let mut f = lock(file);
            if let Err(e) = f.append(&json) {
                if let Some(suppressed) = FILE_WRITE_FAILED.check() {
                    tracing::warn!(seq, error = %e, suppressed, "cannot append audit event to the events file");
                }
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
                    if let Some(suppressed) = SINK_BUSY.check() {
                        tracing::warn!(
                            seq,
                            suppressed,
                            "coordinator event sink busy: event kept locally only"
                        )
                    }
                }
            }
        }
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

impl Drop for EventLog {
    fn drop(&mut self) {
        self.flush();
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
