//! Single-flight per cluster: at most one reconcile per cluster at a time, requests arriving
//! during one coalesce into at most one automatic follow-up, different clusters run in parallel.
//!
//! Why a follow-up and not "join the running one": the running reconcile may have observed the
//! cluster before the event that caused the new request, so its answer could be stale. Why only
//! one: every follow-up re-observes everything, so one is enough for any number of duplicates
//! (Alertmanager HA peers and retries do send duplicates).
//!
//! Reconciles run in their own task: a caller that goes away (HTTP client timeout) never cancels
//! a reconcile half way; its outcome is still recorded in the audit trail.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::{oneshot, watch};

use super::events::{lock, AlertInfo, EventKind, EventLog, NewEvent, TriggerSource};
use crate::config::Config;
use crate::controls::{Change, Controls, ControlsError};
use crate::decide::{Plan, Trigger};
use crate::model::{Observation, TopologyRecord};
use crate::reconcile::{Outcome, Result_};

mod pending;

use self::pending::{auto_rank, describe_applied, Pending};

/// Switches passed into every reconcile.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Control {
    pub source: TriggerSource,
    /// Global or cluster pause: the pure core turns it into "no automatic action" (manual
    /// triggers still run).
    pub paused: bool,
    /// Decide and log only (`service.dry_run`).
    pub dry_run: bool,
    /// The first look may reuse the poller's observation only if it was taken at or after
    /// this time (and is young enough, `service.reuse_observation_within`): the latest
    /// `startsAt` of the alerts behind the request. `None` (API, CLI, periodic, self): fresh.
    #[serde(skip)]
    pub reuse_after: Option<std::time::SystemTime>,
}

/// What the operator API shows for a cluster besides our own state: provided by the reconciler
/// (typically the poll loop's last observation and the last record read).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ClusterSnapshot {
    pub observation: Option<Observation>,
    pub record: Option<TopologyRecord>,
    /// Why something is missing (e.g. "coordinator unreachable: …"); secret-free.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The seam to the real `reconcile` (written by the lead). The supervisor guarantees it is
/// never called twice concurrently for the same cluster.
pub trait Reconciler: Send + Sync + 'static {
    /// Observe → decide → lock → … → outcome. Must be bounded in time and must not panic
    /// (a panic is reported as a failed, retryable outcome).
    fn reconcile(
        &self,
        cluster: &str,
        trigger: Trigger,
        ctl: Control,
    ) -> impl Future<Output = Outcome> + Send;
    /// The configured cluster names. Read once, when the supervisor is built.
    fn clusters(&self) -> Vec<String>;
    /// Last observation and record for `GET /v1/clusters/{c}`. Should be cheap (cached).
    fn snapshot(&self, cluster: &str) -> impl Future<Output = ClusterSnapshot> + Send;
    /// Readiness (`/readyz`): config loaded and coordinator reachable. `Err` is a secret-free reason.
    fn ready(&self) -> impl Future<Output = Result<(), String>> + Send;
    /// The shared operator controls (see [`crate::controls`]) as last read. Default (test
    /// doubles): none.
    fn controls(&self) -> impl Future<Output = Result<Controls, String>> + Send {
        async { Ok(Controls::default()) }
    }
    /// Apply an operator change to the shared controls as `who`; the new document and the
    /// audit sentence. `None`: this reconciler keeps no shared controls (test doubles), the
    /// caller falls back to the in-process pause.
    fn change_controls(
        &self,
        change: Change,
        who: String,
    ) -> impl Future<Output = Option<Result<(Controls, String), ControlsError>>> + Send {
        let _ = (change, who);
        async { None }
    }
}

/// One request for a reconcile.
#[derive(Clone, Debug)]
pub struct Request {
    pub trigger: Trigger,
    pub source: TriggerSource,
    /// The alerts behind it (empty for API/CLI/periodic).
    pub alerts: Vec<AlertInfo>,
}

impl Request {
    pub fn new(trigger: Trigger, source: TriggerSource) -> Request {
        Request {
            trigger,
            source,
            alerts: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error("unknown cluster {0}")]
    UnknownCluster(String),
    #[error("shutting down")]
    ShuttingDown,
    #[error("too many queued manual requests for cluster {0}")]
    Busy(String),
}

/// Bound on distinct queued manual requests per cluster (identical ones coalesce).
pub const MAX_QUEUED_MANUAL: usize = 8;

/// Static settings.
#[derive(Clone, Debug, Default)]
pub struct SupervisorConfig {
    pub paused: bool,
    pub paused_clusters: BTreeSet<String>,
    pub dry_run: bool,
    pub shutdown_grace: Duration,
    /// After an outcome "lock held by another instance", check the cluster again this much
    /// later (the lock TTL): if the holder died mid-plan, nobody else would (Alertmanager got
    /// a 200 and only re-sends at its `repeat_interval`). Zero turns it off.
    pub recheck_after_lock_held: Duration,
}

impl SupervisorConfig {
    pub fn from_config(c: &Config) -> SupervisorConfig {
        SupervisorConfig {
            paused: c.service.paused,
            paused_clusters: c
                .clusters
                .iter()
                .filter(|c| c.paused)
                .map(|c| c.name.clone())
                .collect(),
            dry_run: c.service.dry_run,
            shutdown_grace: c.service.shutdown_grace,
            recheck_after_lock_held: c.policy.lock_ttl,
        }
    }
}

/// What [`Supervisor::submit_within`] got within its bound.
#[derive(Clone, Debug)]
pub enum Answer {
    Done(Outcome),
    /// Still running (or queued behind a running reconcile): the plan if it has started.
    /// The outcome goes to the audit trail.
    InProgress {
        plan: Option<Plan>,
    },
}

#[derive(Default)]
struct Slot {
    running: bool,
    queue: VecDeque<Pending>,
    paused: bool,
    last: Option<Outcome>,
    /// A delayed re-check after "lock held" is already scheduled (at most one per cluster).
    recheck_scheduled: bool,
}

/// Our state of one cluster, for the operator API.
#[derive(Clone, Debug, Serialize)]
pub struct ClusterState {
    pub name: String,
    pub paused: bool,
    /// Paused globally or for this cluster.
    pub effectively_paused: bool,
    pub running: bool,
    pub queued: usize,
    pub last_outcome: Option<Outcome>,
}

pub struct Supervisor<R: Reconciler> {
    reconciler: Arc<R>,
    events: Arc<EventLog>,
    slots: Mutex<BTreeMap<String, Slot>>,
    paused: AtomicBool,
    dry_run: bool,
    shutdown_grace: Duration,
    shutting_down: AtomicBool,
    /// Number of clusters with a running driver task (for the shutdown drain).
    active: watch::Sender<usize>,
    recheck_after_lock_held: Duration,
}

impl<R: Reconciler> Supervisor<R> {
    pub fn new(reconciler: Arc<R>, events: Arc<EventLog>, cfg: SupervisorConfig) -> Arc<Self> {
        let slots = reconciler
            .clusters()
            .into_iter()
            .map(|name| {
                let slot = Slot {
                    paused: cfg.paused_clusters.contains(&name),
                    ..Slot::default()
                };
                (name, slot)
            })
            .collect();
        Arc::new(Supervisor {
            reconciler,
            events,
            slots: Mutex::new(slots),
            paused: AtomicBool::new(cfg.paused),
            dry_run: cfg.dry_run,
            shutdown_grace: cfg.shutdown_grace,
            shutting_down: AtomicBool::new(false),
            active: watch::channel(0).0,
            recheck_after_lock_held: cfg.recheck_after_lock_held,
        })
    }

    pub fn reconciler(&self) -> &Arc<R> {
        &self.reconciler
    }
    pub fn events(&self) -> &Arc<EventLog> {
        &self.events
    }
    pub fn shutdown_grace(&self) -> Duration {
        self.shutdown_grace
    }
    pub fn dry_run(&self) -> bool {
        self.dry_run
    }

    pub fn clusters(&self) -> BTreeSet<String> {
        lock(&self.slots).keys().cloned().collect()
    }

    /// Run (or join) a reconcile of `cluster` and wait for its outcome.
    ///
    /// Automatic triggers (alerts, periodic) arriving while one runs merge into one queued
    /// follow-up whose trigger is the strongest (MasterDown > RoleMismatch > Periodic). Manual
    /// triggers are queued separately and coalesce only with an identical queued one, so an
    /// operator's `failover to X` is never swallowed by an alert.
    pub async fn submit(
        self: &Arc<Self>,
        cluster: &str,
        req: Request,
    ) -> Result<Outcome, SubmitError> {
        let (rx, _) = self.enqueue(cluster, req)?;
        // A dropped sender means the queued request was discarded by shutdown.
        rx.await.map_err(|_| SubmitError::ShuttingDown)
    }

    /// Like [`Supervisor::submit`], but waits at most `within`: then it answers with the plan
    /// in progress (or none yet, if still deciding or queued). The reconcile goes on and its
    /// outcome is recorded in the audit trail as always.
    pub async fn submit_within(
        self: &Arc<Self>,
        cluster: &str,
        req: Request,
        within: Duration,
    ) -> Result<Answer, SubmitError> {
        let (mut rx, progress) = self.enqueue(cluster, req)?;
        match tokio::time::timeout(within, &mut rx).await {
            Ok(r) => r.map(Answer::Done).map_err(|_| SubmitError::ShuttingDown),
            Err(_) => Ok(Answer::InProgress {
                plan: progress.borrow().clone(),
            }),
        }
    }

    /// Queue `req` (or join a queued one): the receiver of its outcome and of its plan.
    fn enqueue(
        self: &Arc<Self>,
        cluster: &str,
        req: Request,
    ) -> Result<(oneshot::Receiver<Outcome>, watch::Receiver<Option<Plan>>), SubmitError> {
        let (tx, rx) = oneshot::channel();
        let progress;
        {
            if self.is_shutting_down() {
                return Err(SubmitError::ShuttingDown);
            }
            let mut slots = lock(&self.slots);
            let slot = slots
                .get_mut(cluster)
                .ok_or_else(|| SubmitError::UnknownCluster(cluster.to_string()))?;
            if !slot.running {
                slot.running = true;
                let p = Pending::new(req, tx);
                progress = p.progress.subscribe();
                slot.queue.push_back(p);
                self.active.send_modify(|n| *n += 1);
                let me = Arc::clone(self);
                let name = cluster.to_string();
                tokio::spawn(async move { me.drive(name).await });
            } else if req.trigger.is_manual() {
                if let Some(p) = slot.queue.iter_mut().find(|p| p.trigger == req.trigger) {
                    p.waiters.push(tx);
                    progress = p.progress.subscribe();
                } else if slot.queue.iter().filter(|p| p.trigger.is_manual()).count()
                    >= MAX_QUEUED_MANUAL
                {
                    return Err(SubmitError::Busy(cluster.to_string()));
                } else {
                    let p = Pending::new(req, tx);
                    progress = p.progress.subscribe();
                    slot.queue.push_back(p);
                }
            } else if let Some(p) = slot.queue.iter_mut().find(|p| !p.trigger.is_manual()) {
                if auto_rank(&req.trigger) > auto_rank(&p.trigger) {
                    p.trigger = req.trigger;
                    p.source = req.source;
                }
                p.add_alerts(req.alerts);
                p.waiters.push(tx);
                progress = p.progress.subscribe();
            } else {
                let p = Pending::new(req, tx);
                progress = p.progress.subscribe();
                slot.queue.push_back(p);
            }
        }
        Ok((rx, progress))
    }

    /// Another instance holds the lock: if it dies mid-plan, its lease lapses after the TTL and
    /// the cluster is left half-done with nobody to finish it. So look again after the TTL
    /// (level-triggered: a converged cluster then yields "no action"). One per cluster at a time.
    fn schedule_recheck(self: &Arc<Self>, cluster: &str) {
        let delay = self.recheck_after_lock_held;
        if delay.is_zero() || self.is_shutting_down() {
            return;
        }
        {
            let mut slots = lock(&self.slots);
            let Some(slot) = slots.get_mut(cluster) else {
                return;
            };
            if slot.recheck_scheduled {
                return;
            }
            slot.recheck_scheduled = true;
        }
        let me = Arc::clone(self);
        let cluster = cluster.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Some(slot) = lock(&me.slots).get_mut(&cluster) {
                slot.recheck_scheduled = false;
            }
            if me.is_shutting_down() {
                return;
            }
            let req = Request::new(Trigger::Periodic, TriggerSource::Periodic);
            match me.submit(&cluster, req).await {
                Ok(out) => tracing::info!(
                    cluster = %cluster,
                    action = out.plan.action.label(),
                    reason = %out.plan.reason,
                    "re-check after the lock was held by another instance"
                ),
                Err(e) => tracing::debug!(cluster = %cluster, error = %e, "re-check not run"),
            }
        });
    }

    /// The per-cluster driver: runs queued reconciles one after the other, then exits.
    async fn drive(self: Arc<Self>, cluster: String) {
        // What the previous run of this loop applied, for the requests queued meanwhile.
        let mut just_applied: Option<String> = None;
        loop {
            let next = {
                let mut slots = lock(&self.slots);
                let Some(slot) = slots.get_mut(&cluster) else {
                    break;
                };
                match slot.queue.pop_front() {
                    Some(p) if !self.is_shutting_down() => Some((p, self.control_for(slot))),
                    _ => {
                        // Queued requests are dropped on shutdown: their callers get
                        // `ShuttingDown` (HTTP 503, so Alertmanager retries elsewhere/later).
                        slot.queue.clear();
                        slot.running = false;
                        None
                    }
                }
            };
            let Some((pending, mut ctl)) = next else {
                break;
            };
            ctl.source = pending.source;
            ctl.reuse_after = pending.reuse_after();
            let mut outcome = self
                .run_one(
                    &cluster,
                    pending.trigger.clone(),
                    ctl,
                    Arc::clone(&pending.progress),
                )
                .await;
            // This request was queued while the previous run acted: a "false alarm" or
            // "converged" now is the result of that run, and the answer must say so.
            if let (Some(prev), Result_::NoAction) = (&just_applied, &outcome.result) {
                outcome.plan.reason = format!("{}; {prev}", outcome.plan.reason);
            }
            let event = self.events.record(NewEvent {
                kind: EventKind::Reconcile,
                cluster: Some(cluster.clone()),
                source: pending.source,
                trigger: Some(pending.trigger.clone()),
                alerts: pending.alerts,
                alerts_omitted: pending.alerts_omitted,
                reason: outcome.plan.reason.clone(),
                outcome: Some(outcome.clone()),
            });
            // A repeat folded into the audit trail's current run is logged at debug only: a
            // flood of identical no-action webhooks must not fill the disk with log lines.
            if event.count > 1 {
                tracing::debug!(cluster, action = outcome.plan.action.label(), result = ?outcome.result, millis = outcome.millis, repeats = event.count, reason = %outcome.plan.reason, "reconcile done");
            } else {
                tracing::info!(cluster, action = outcome.plan.action.label(), result = ?outcome.result, retryable = outcome.retryable, millis = outcome.millis, reason = %outcome.plan.reason, "reconcile done");
            }
            if let Some(slot) = lock(&self.slots).get_mut(&cluster) {
                slot.last = Some(outcome.clone());
            }
            if matches!(outcome.result, Result_::LockHeld { .. }) {
                self.schedule_recheck(&cluster);
            }
            just_applied = match (&outcome.result, describe_applied(&outcome.plan.action)) {
                (Result_::Applied, Some(what)) => Some(format!(
                    "{what} was just applied by the preceding reconcile (audit event #{} at {})",
                    event.seq, event.at
                )),
                _ => None,
            };
            for w in pending.waiters {
                let _ = w.send(outcome.clone());
            }
        }
        self.active.send_modify(|n| *n = n.saturating_sub(1));
    }

    /// One reconcile in its own task, so a panic in it cannot wedge the cluster's slot.
    async fn run_one(
        &self,
        cluster: &str,
        trigger: Trigger,
        ctl: Control,
        progress: Arc<watch::Sender<Option<Plan>>>,
    ) -> Outcome {
        let started = Instant::now();
        let r = Arc::clone(&self.reconciler);
        let (c, t) = (cluster.to_string(), trigger.clone());
        tracing::debug!(
            cluster,
            trigger = trigger.label(),
            source = ctl.source.as_str(),
            paused = ctl.paused,
            dry_run = ctl.dry_run,
            "reconcile start"
        );
        let res = tokio::spawn(
            crate::reconcile::PROGRESS
                .scope(progress, async move { r.reconcile(&c, t, ctl).await }),
        )
        .await;
        res.unwrap_or_else(|e| {
            tracing::error!(cluster, error = %e, "reconcile task failed");
            Outcome {
                cluster: cluster.to_string(),
                trigger,
                plan: Plan::refuse("internal error: reconcile did not complete", true),
                result: Result_::Failed {
                    error: "reconcile task panicked or was cancelled".into(),
                },
                steps: Vec::new(),
                observation: Vec::new(),
                millis: started.elapsed().as_millis() as u64,
                retryable: true,
                hooks: Vec::new(),
            }
        })
    }

    fn control_for(&self, slot: &Slot) -> Control {
        Control {
            source: TriggerSource::Api,
            paused: self.paused.load(Ordering::SeqCst) || slot.paused,
            dry_run: self.dry_run,
            reuse_after: None,
        }
    }

    /// Pause or resume automatic action, globally (`None`) or for one cluster.
    pub fn set_paused(&self, cluster: Option<&str>, paused: bool) -> Result<(), SubmitError> {
        match cluster {
            None => self.paused.store(paused, Ordering::SeqCst),
            Some(c) => {
                lock(&self.slots)
                    .get_mut(c)
                    .ok_or_else(|| SubmitError::UnknownCluster(c.to_string()))?
                    .paused = paused
            }
        }
        Ok(())
    }

    pub fn globally_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    pub fn cluster_state(&self, cluster: &str) -> Option<ClusterState> {
        let global = self.globally_paused();
        lock(&self.slots).get(cluster).map(|s| ClusterState {
            name: cluster.to_string(),
            paused: s.paused,
            effectively_paused: global || s.paused,
            running: s.running,
            queued: s.queue.len(),
            last_outcome: s.last.clone(),
        })
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// Stop accepting work: new submits fail with `ShuttingDown`, queued ones are dropped
    /// when the running reconcile ends.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// Wait until no reconcile runs, at most `grace`. True if drained.
    pub async fn drain(&self, grace: Duration) -> bool {
        let mut rx = self.active.subscribe();
        let drained = tokio::time::timeout(grace, rx.wait_for(|n| *n == 0)).await;
        matches!(drained, Ok(Ok(_)))
    }
}
