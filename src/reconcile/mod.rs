//! The only place that locks and acts: observe → decide → lock → re-observe → re-decide →
//! apply steps (lock checked before each mutating step) → record → release.

use serde::{Deserialize, Serialize};

use crate::decide::{Plan, Step, Trigger};

mod exec;
mod follow;
pub mod handle;

use exec::Exec;

/// How a reconcile ended. `http` maps it to a status code: only `retryable` outcomes get 5xx.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Result_ {
    /// Plan was NoAction.
    NoAction,
    /// Plan was Refuse.
    Refused,
    /// Dry run: plan made and logged, nothing sent.
    DryRun,
    /// Another instance holds the lock.
    LockHeld { holder: String },
    /// The plan under the lock differed from the first one; nothing applied (the new plan is reported).
    PlanChanged,
    /// All steps applied and recorded.
    Applied,
    /// A step failed or the lock was lost; `error` says which. The next reconcile rolls forward.
    Failed { error: String },
    /// The coordinator could not be reached.
    CoordinatorUnreachable { error: String },
    /// Only in webhook answers: still running when the answer was due (`webhook.reply_within`).
    InProgress,
    /// A failing pre hook stopped the plan before any node was touched (`hooks.pre_*_veto`).
    Vetoed { hook: String, detail: String },
}

/// One applied step with its timing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepReport {
    pub step: Step,
    pub ok: bool,
    pub millis: u64,
    /// What happened (e.g. "role master after 0.3s", "link up after 1.2s", error text).
    pub detail: String,
    /// The snapshot a [`Step::Diverged`] took (location, size, duration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<crate::node::SnapshotInfo>,
}

/// The result of one reconcile, as logged, returned over HTTP and kept in the audit trail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub cluster: String,
    pub trigger: Trigger,
    pub plan: Plan,
    pub result: Result_,
    pub steps: Vec<StepReport>,
    /// One line per node: "addr role=… link=… offset=…" or "addr unreachable: …".
    pub observation: Vec<String>,
    pub millis: u64,
    /// A retry could help (coordinator unreachable, too few observations): HTTP 503.
    pub retryable: bool,
    /// Every hook run of this reconcile (`crate::hooks`), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<crate::hooks::HookRun>,
}

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tracing::{info, warn};

use crate::config::{ClusterConfig, Policy};
use crate::coord::{CoordError, Coordinator, Holder, Lease, LockOutcome};
use crate::decide::{decide, Action, Gate, MasterSeen};
use crate::hooks::{self, HookSet};
use crate::model::{Observation, Role, TopologyRecord, Versioned};
use crate::node::Nodes;
use crate::observe::{observe, observe_pooled};

/// Everything one reconcile needs. Borrowed, so callers keep ownership of clients.
pub struct Ctx<'a, N: Nodes, C: Coordinator> {
    pub cluster: &'a ClusterConfig,
    pub nodes: &'a N,
    pub coord: &'a C,
    pub policy: &'a Policy,
    pub holder: &'a Holder,
    /// The cluster has a node password (so `CONFIG SET masterauth` is sent before `SLAVEOF`).
    pub has_password: bool,
    /// Decide and report, but send no mutating command and take no lock.
    pub dry_run: bool,
    /// Global or per-cluster pause.
    pub paused: bool,
    /// What the service's poller saw the last time a master was alive. If it is the recorded
    /// master (same epoch), its offset is the absolute lag reference for candidates and the
    /// other nodes' links then bar those that were not linked; `None` when there is no
    /// history (CLI).
    pub last_seen_master: Option<MasterSeen>,
}

/// What a caller watching a reconcile is told while it runs (see [`PROGRESS`]). Every method
/// defaults to nothing, so a watcher implements only what it shows.
pub trait Progress: Send + Sync {
    /// The plan under the lock is about to run its steps.
    fn plan_started(&self, _plan: &Plan) {}
    /// A step starts.
    fn step_started(&self, _step: &Step) {}
    /// A step ended (its report: result, detail, milliseconds).
    fn step_done(&self, _report: &StepReport) {}
    /// A bounded wait inside a step is still waiting for `what` (called on every poll of it).
    fn waiting(&self, _what: &str, _waited: std::time::Duration, _bound: std::time::Duration) {}
}

/// The supervisor's watcher (for the webhook's `reply_within`): the plan once its steps start.
impl Progress for tokio::sync::watch::Sender<Option<Plan>> {
    fn plan_started(&self, plan: &Plan) {
        self.send_replace(Some(plan.clone()));
    }
}

tokio::task_local! {
    /// Set by a caller that watches the reconcile as it runs: the supervisor (the plan, for
    /// the webhook's `reply_within`) and the CLI (live step lines on stderr).
    pub static PROGRESS: std::sync::Arc<dyn Progress>;
}

/// Tell the watcher (if any, see [`PROGRESS`]) which plan is now running.
pub fn plan_started(plan: &Plan) {
    let _ = PROGRESS.try_with(|p| p.plan_started(plan));
}

/// Tell the watcher (if any) that `step` starts.
pub fn step_started(step: &Step) {
    let _ = PROGRESS.try_with(|p| p.step_started(step));
}

/// Tell the watcher (if any) that a step ended.
pub fn step_done(report: &StepReport) {
    let _ = PROGRESS.try_with(|p| p.step_done(report));
}

/// Tell the watcher (if any) that a bounded wait still waits for `what`.
pub fn waiting(what: &str, waited: std::time::Duration, bound: std::time::Duration) {
    let _ = PROGRESS.try_with(|p| p.waiting(what, waited, bound));
}

pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// One line per node for logs, events and the API.
pub fn summarize(obs: &Observation) -> Vec<String> {
    obs.nodes
        .iter()
        .map(|n| match &n.status {
            Err(e) => format!("{} unreachable: {e}", n.addr),
            Ok(s) => {
                let mut line = format!("{} {} role={}", n.addr, s.engine.as_str(), s.role.as_str());
                if let Some(m) = &s.master {
                    line.push_str(&format!(" master={m}"));
                }
                if let Some(l) = s.link {
                    line.push_str(&format!(" link={}", l.as_str()));
                }
                if let Some(o) = s.offset {
                    line.push_str(&format!(" offset={o}"));
                }
                if s.role == Role::Master {
                    line.push_str(&format!(" replicas={}", s.connected_replicas));
                }
                line
            }
        })
        .collect()
}

/// Observe (on fresh connections), read the record, decide: no lock, no mutation. Used by
/// `plan` and as the look under the lock.
pub async fn look<N: Nodes, C: Coordinator>(
    ctx: &Ctx<'_, N, C>,
    trigger: &Trigger,
) -> Result<(Observation, Option<Versioned<TopologyRecord>>, Plan), CoordError> {
    look_with(ctx, trigger, Source::Fresh).await
}

/// How a look gets its observation.
enum Source {
    /// Fresh, on new connections (the look under the lock, `plan`).
    Fresh,
    /// Fresh, on the nodes' kept connections (a reconcile's first look).
    Pooled,
    /// The poller's, young enough and taken after what triggered the reconcile (see
    /// [`reconcile_reusing`]): nothing is sent to the nodes.
    Reused(Observation),
}

/// [`look`] with its observation from `source` (the first pass of a reconcile, which only
/// decides whether to take the lock, is pooled or reused).
async fn look_with<N: Nodes, C: Coordinator>(
    ctx: &Ctx<'_, N, C>,
    trigger: &Trigger,
    source: Source,
) -> Result<(Observation, Option<Versioned<TopologyRecord>>, Plan), CoordError> {
    let observation = async {
        match source {
            Source::Fresh => observe(ctx.nodes, ctx.cluster).await,
            Source::Pooled => observe_pooled(ctx.nodes, ctx.cluster).await,
            Source::Reused(obs) => obs,
        }
    };
    let (obs, record, controls) = tokio::join!(
        observation,
        ctx.coord.read_record(&ctx.cluster.name),
        crate::controls::read(ctx.coord)
    );
    let record = record?;
    // Every look (the one under the lock too) reads the shared controls: a pause or a
    // maintenance set through another instance or the CLI applies at once.
    let controls = controls?;
    let now = now_unix();
    let name = &ctx.cluster.name;
    let shared_pause = controls.pause_for(name, now).is_some();
    let cooldown_acked = record
        .as_ref()
        .and_then(|r| r.value.last_failover_at)
        .is_some_and(|t| controls.acked(name, t));
    // What was seen of a previous master (or epoch) is no reference for this one.
    let (last_master_offset, links_before) = match (&ctx.last_seen_master, &record) {
        (Some(seen), Some(r)) => seen.for_record(&r.value),
        _ => (None, Default::default()),
    };
    let (last_master_dbs, last_master_seen_at) = match (&ctx.last_seen_master, &record) {
        (Some(seen), Some(r)) => seen.last_offsets(&r.value).unwrap_or_default(),
        _ => Default::default(),
    };
    let gate = Gate {
        now,
        paused: ctx.paused || shared_pause,
        last_master_offset,
        last_master_dbs,
        last_master_seen_at,
        links_before,
        holds: controls.holds(name, now),
        cooldown_acked,
    };
    let plan = decide(
        trigger,
        &obs,
        record.as_ref().map(|r| &r.value),
        ctx.policy,
        &gate,
    );
    Ok((obs, record, plan))
}

/// The full sequence, without hooks. Never panics; every path ends in an `Outcome` that says why.
pub async fn reconcile<N: Nodes, C: Coordinator>(ctx: &Ctx<'_, N, C>, trigger: Trigger) -> Outcome {
    reconcile_with(ctx, &HookSet::default(), trigger, None).await
}

/// [`reconcile`] running the cluster's `hooks` around the plan (what the service and the CLI
/// use, through [`handle::ClusterHandle::reconcile`]), and whose first look decides on
/// `first_look` instead of asking the nodes, when given: the service passes the poller's
/// observation when it is younger than `service.reuse_observation_within` and was taken after
/// the alerts' `startsAt`, so a storm of webhooks about a healthy cluster costs no INFO. Only
/// the first look: the look under the lock, which decides what is sent, is always fresh.
pub async fn reconcile_with<N: Nodes, C: Coordinator>(
    ctx: &Ctx<'_, N, C>,
    hooks: &HookSet,
    trigger: Trigger,
    first_look: Option<Observation>,
) -> Outcome {
    let start = Instant::now();
    let mut out = Outcome {
        cluster: ctx.cluster.name.clone(),
        trigger: trigger.clone(),
        plan: Plan::no_action(""),
        result: Result_::NoAction,
        steps: Vec::new(),
        observation: Vec::new(),
        millis: 0,
        retryable: false,
        hooks: Vec::new(),
    };
    run(ctx, hooks, &trigger, first_look, &mut out).await;
    out.millis = start.elapsed().as_millis() as u64;
    log_outcome(&out);
    out
}

/// First look without the lock; then lock, look again, and apply the plan under the lock.
async fn run<N: Nodes, C: Coordinator>(
    ctx: &Ctx<'_, N, C>,
    hooks: &HookSet,
    trigger: &Trigger,
    first_look: Option<Observation>,
    out: &mut Outcome,
) {
    let source = first_look.map_or(Source::Pooled, Source::Reused);
    let (obs, _record, plan) = match look_with(ctx, trigger, source).await {
        Ok(x) => x,
        Err(e) => return coordinator_down(out, e),
    };
    out.observation = summarize(&obs);
    out.plan = plan.clone();
    match &plan.action {
        Action::NoAction => return,
        Action::Refuse { retryable } => {
            out.result = Result_::Refused;
            out.retryable = *retryable;
            return;
        }
        _ => {}
    }
    if ctx.dry_run {
        out.result = Result_::DryRun;
        return;
    }
    let lease = match ctx
        .coord
        .try_lock(&ctx.cluster.name, ctx.holder, ctx.policy.lock_ttl)
        .await
    {
        Ok(LockOutcome::Acquired(l)) => l,
        Ok(LockOutcome::HeldBy(h)) => {
            out.result = Result_::LockHeld {
                holder: h
                    .map(|h| h.to_string())
                    .unwrap_or_else(|| "another instance".into()),
            };
            return;
        }
        Err(e) => return coordinator_down(out, e),
    };
    under_lock(ctx, hooks, trigger, &plan, &lease, out).await;
    release(ctx, lease).await;
}

/// The second look under the lock: a plan that differs from the first one is reported
/// (`PlanChanged`) and nothing is sent; otherwise its steps run.
async fn under_lock<N: Nodes, C: Coordinator>(
    ctx: &Ctx<'_, N, C>,
    hooks: &HookSet,
    trigger: &Trigger,
    plan: &Plan,
    lease: &Lease,
    out: &mut Outcome,
) {
    // A failover is confirmed by a second look after the confirmation window, under the lock.
    if matches!(
        plan.action,
        Action::Failover {
            automatic: true,
            ..
        }
    ) && !ctx.policy.confirm_window.is_zero()
    {
        tokio::time::sleep(ctx.policy.confirm_window).await;
    }
    // A switchover to "the best replica" is pinned to the one the first look chose: under
    // writes the two best offsets race, and the choice must not flip between the looks.
    let trigger2 = match (trigger, &plan.action) {
        (Trigger::Switchover { to: None }, Action::Switchover { promote, .. }) => {
            Trigger::Switchover {
                to: Some(promote.clone()),
            }
        }
        _ => trigger.clone(),
    };
    let (obs2, record2, plan2) = match look(ctx, &trigger2).await {
        Ok(x) => x,
        Err(e) => return coordinator_down(out, e),
    };
    out.observation = summarize(&obs2);
    if plan2.action != plan.action {
        // The cluster is moving (a node answered one look and not the other, e.g. a Pika
        // slave whose INFO blocks for seconds after its master died). When the plan under the
        // lock still acts, a retry can help: 503, so Alertmanager sends the alert again.
        out.retryable = plan2.action.mutates_nodes();
        out.plan = plan2;
        out.result = Result_::PlanChanged;
        return;
    }
    out.plan = plan2.clone();
    plan_started(&plan2);
    let event_id = crate::hooks::event_id();
    let name = &ctx.cluster.name;
    let rec = record2.as_ref().map(|r| &r.value);
    if let Some((hook, env)) = hooks::pre_for(&plan2, name, trigger.label(), rec, &event_id) {
        if let Some(run) = hooks::run(hooks, hook, &env).await {
            let veto = run.vetoed.then(|| Result_::Vetoed {
                hook: run.hook.clone(),
                detail: run.detail.clone(),
            });
            out.hooks.push(run);
            if let Some(v) = veto {
                out.result = v;
                return;
            }
        }
    }
    let exec = Exec {
        ctx,
        lease,
        obs: &obs2,
        record: record2,
        snapshot: None,
    };
    out.result = exec.apply(&plan2, &mut out.steps).await;
    post_hook(ctx, hooks, trigger, &event_id, out).await;
}

/// The post hook, once the plan's role change took effect: the new master recorded (failover,
/// switchover) or the demoted node following (demote), whatever failed after it. It sees the
/// record as stored now.
async fn post_hook<N: Nodes, C: Coordinator>(
    ctx: &Ctx<'_, N, C>,
    hooks: &HookSet,
    trigger: &Trigger,
    event_id: &str,
    out: &mut Outcome,
) {
    let took_effect = out.steps.iter().any(|r| {
        r.ok && match (&out.plan.action, &r.step) {
            (Action::Failover { .. } | Action::Switchover { .. }, Step::Record { .. }) => true,
            (
                Action::Demote { node, to },
                Step::Follow {
                    node: n, master, ..
                },
            ) => n == node && master == to,
            _ => false,
        }
    });
    if !took_effect || hooks.is_empty() {
        return;
    }
    let record = match ctx.coord.read_record(&ctx.cluster.name).await {
        Ok(r) => r.map(|r| r.value),
        Err(e) => {
            warn!(cluster = %ctx.cluster.name, error = %e, "reading the record for the post hook failed; its epoch is empty");
            None
        }
    };
    let name = &ctx.cluster.name;
    if let Some((hook, env)) =
        hooks::post_for(&out.plan, name, trigger.label(), record.as_ref(), event_id)
    {
        if let Some(run) = hooks::run(hooks, hook, &env).await {
            out.hooks.push(run);
        }
    }
}

fn coordinator_down(out: &mut Outcome, e: CoordError) {
    out.retryable = e.is_retryable();
    // The error's text names its kind once ("coordinator unreachable: …"/"coordinator error: …").
    out.plan = Plan::refuse(e.to_string(), out.retryable);
    out.result = Result_::CoordinatorUnreachable {
        error: e.to_string(),
    };
}

async fn release<N: Nodes, C: Coordinator>(ctx: &Ctx<'_, N, C>, lease: Lease) {
    if let Err(e) = ctx.coord.release(lease).await {
        // The coordinator keeps retrying in the background and frees it before its next lock.
        warn!(cluster = %ctx.cluster.name, error = %e, "releasing the lock failed; retrying in the background");
    }
}

fn log_outcome(out: &Outcome) {
    let result = serde_json::to_string(&out.result).unwrap_or_default();
    if out.result == Result_::NoAction {
        // The caller logs it too ("reconcile done"); no-action floods must stay off the log.
        tracing::debug!(cluster = %out.cluster, trigger = out.trigger.label(), reason = %out.plan.reason, millis = out.millis, "reconcile");
        return;
    }
    info!(
        cluster = %out.cluster,
        trigger = out.trigger.label(),
        action = out.plan.action.label(),
        reason = %out.plan.reason,
        result = %result,
        millis = out.millis,
        "reconcile"
    );
}

impl Result_ {
    /// The `result` label of the `reconciles_total` metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Result_::NoAction => "no_action",
            Result_::Refused => "refused",
            Result_::DryRun => "dry_run",
            Result_::LockHeld { .. } => "lock_held",
            Result_::PlanChanged => "plan_changed",
            Result_::Applied => "applied",
            Result_::Failed { .. } => "failed",
            Result_::CoordinatorUnreachable { .. } => "coordinator_unreachable",
            Result_::InProgress => "in_progress",
            Result_::Vetoed { .. } => "vetoed",
        }
    }
}
