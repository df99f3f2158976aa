//! The only place that locks and acts: observe → decide → lock → re-observe → re-decide →
//! apply steps (lock checked before each mutating step) → record → release.

pub mod handle;

use serde::{Deserialize, Serialize};

use crate::decide::{Plan, Step, Trigger};

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
}

/// One applied step with its timing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepReport {
    pub step: Step,
    pub ok: bool,
    pub millis: u64,
    /// What happened (e.g. "role master after 0.3s", "link up after 1.2s", error text).
    pub detail: String,
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
}

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing::{info, warn};

use crate::config::{ClusterConfig, Policy};
use crate::coord::{CasOutcome, CoordError, Coordinator, Holder, Lease, LockOutcome};
use crate::decide::{decide, Action, Gate};
use crate::model::{Addr, Engine, NodeStatus, Observation, Role, TopologyRecord, Versioned};
use crate::node::{NodeError, Nodes};
use crate::observe::observe;

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
    /// A master and its offset when the service's poller last saw it alive. If it is the
    /// recorded master, that offset is the absolute lag reference for candidates; `None` when
    /// there is no history (CLI).
    pub last_seen_master: Option<(Addr, u64)>,
}

/// How often bounded waits poll INFO.
const POLL_EVERY: Duration = Duration::from_millis(100);
/// Failed probes in a row after which a wait takes the node it depends on for gone.
const GONE_AFTER: u32 = 3;

tokio::task_local! {
    /// Set by a caller that may stop waiting before the reconcile ends (the supervisor, for
    /// the webhook's `reply_within`): it receives the plan once its steps start.
    pub static PROGRESS: std::sync::Arc<tokio::sync::watch::Sender<Option<Plan>>>;
}

/// Tell the caller (if it asked, see [`PROGRESS`]) which plan is now running. A no-op outside
/// a supervised reconcile (CLI).
pub fn plan_started(plan: &Plan) {
    let _ = PROGRESS.try_with(|tx| tx.send_replace(Some(plan.clone())));
}

/// Counts failed probes in a row of the node a wait depends on.
#[derive(Default)]
struct Misses(u32);

impl Misses {
    /// `Some(why)` once [`GONE_AFTER`] probes of `who` failed in a row.
    fn see(&mut self, who: &Addr, probe: &Result<NodeStatus, NodeError>) -> Option<String> {
        match probe {
            Ok(_) => {
                self.0 = 0;
                None
            }
            Err(e) => {
                self.0 += 1;
                (self.0 >= GONE_AFTER)
                    .then(|| format!("{who} stopped answering ({e}, {} probes in a row)", self.0))
            }
        }
    }
}

/// Why a bounded wait ended without its condition.
enum WaitEnd {
    Timeout,
    /// The watched node stopped answering (the text says which, how and when).
    Gone(String),
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

/// Observe, read the record, decide: no lock, no mutation. Used by `plan` and as the first pass.
pub async fn look<N: Nodes, C: Coordinator>(
    ctx: &Ctx<'_, N, C>,
    trigger: &Trigger,
) -> Result<(Observation, Option<Versioned<TopologyRecord>>, Plan), CoordError> {
    let (obs, record) = tokio::join!(
        observe(ctx.nodes, ctx.cluster),
        ctx.coord.read_record(&ctx.cluster.name)
    );
    let record = record?;
    // An offset seen for a previous master is no reference for this one.
    let last_master_offset = match (&ctx.last_seen_master, &record) {
        (Some((addr, offset)), Some(r)) if *addr == r.value.master => Some(*offset),
        _ => None,
    };
    let gate = Gate {
        now: now_unix(),
        paused: ctx.paused,
        last_master_offset,
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

/// The full sequence. Never panics; every path ends in an `Outcome` that says why.
pub async fn reconcile<N: Nodes, C: Coordinator>(ctx: &Ctx<'_, N, C>, trigger: Trigger) -> Outcome {
    let start = Instant::now();
    let cluster = ctx.cluster.name.clone();
    let mut out = Outcome {
        cluster: cluster.clone(),
        trigger: trigger.clone(),
        plan: Plan::no_action(""),
        result: Result_::NoAction,
        steps: Vec::new(),
        observation: Vec::new(),
        millis: 0,
        retryable: false,
    };
    let finish = |mut out: Outcome| {
        out.millis = start.elapsed().as_millis() as u64;
        log_outcome(&out);
        out
    };

    // First pass: observe and decide without the lock.
    let (obs, _record, plan) = match look(ctx, &trigger).await {
        Ok(x) => x,
        Err(e) => return finish(coordinator_down(out, e)),
    };
    out.observation = summarize(&obs);
    out.plan = plan.clone();
    match &plan.action {
        Action::NoAction => return finish(out),
        Action::Refuse { retryable } => {
            out.result = Result_::Refused;
            out.retryable = *retryable;
            return finish(out);
        }
        _ => {}
    }
    if ctx.dry_run {
        out.result = Result_::DryRun;
        return finish(out);
    }

    // Lock.
    let lease = match ctx
        .coord
        .try_lock(&cluster, ctx.holder, ctx.policy.lock_ttl)
        .await
    {
        Ok(LockOutcome::Acquired(l)) => l,
        Ok(LockOutcome::HeldBy(h)) => {
            out.result = Result_::LockHeld {
                holder: h
                    .map(|h| h.to_string())
                    .unwrap_or_else(|| "another instance".into()),
            };
            return finish(out);
        }
        Err(e) => return finish(coordinator_down(out, e)),
    };

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
    let trigger2 = match (&trigger, &plan.action) {
        (Trigger::Switchover { to: None }, Action::Switchover { promote, .. }) => {
            Trigger::Switchover {
                to: Some(promote.clone()),
            }
        }
        _ => trigger.clone(),
    };
    let (obs2, record2, plan2) = match look(ctx, &trigger2).await {
        Ok(x) => x,
        Err(e) => {
            release(ctx, lease).await;
            return finish(coordinator_down(out, e));
        }
    };
    out.observation = summarize(&obs2);
    if plan2.action != plan.action {
        // The cluster is moving (a node answered one look and not the other, e.g. a Pika
        // slave whose INFO blocks for seconds after its master died). When the plan under the
        // lock still acts, a retry can help: 503, so Alertmanager sends the alert again.
        out.retryable = plan2.action.mutates_nodes();
        out.plan = plan2;
        out.result = Result_::PlanChanged;
        release(ctx, lease).await;
        return finish(out);
    }
    out.plan = plan2.clone();
    plan_started(&plan2);

    let exec = Exec {
        ctx,
        lease: &lease,
        obs: &obs2,
        record: record2,
    };
    let result = exec.apply(&plan2, &mut out.steps).await;
    out.result = result;
    release(ctx, lease).await;
    finish(out)
}

fn coordinator_down(mut out: Outcome, e: CoordError) -> Outcome {
    out.retryable = e.is_retryable();
    // The error's text names its kind once ("coordinator unreachable: …"/"coordinator error: …").
    out.plan = Plan::refuse(e.to_string(), out.retryable);
    out.result = Result_::CoordinatorUnreachable {
        error: e.to_string(),
    };
    out
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

/// Applies one plan's steps under a held lease.
struct Exec<'a, 'c, N: Nodes, C: Coordinator> {
    ctx: &'a Ctx<'c, N, C>,
    lease: &'a Lease,
    obs: &'a Observation,
    record: Option<Versioned<TopologyRecord>>,
}

impl<N: Nodes, C: Coordinator> Exec<'_, '_, N, C> {
    /// Run one step and report it (with `prefix` before its detail, e.g. "rollback: ").
    async fn run(
        &mut self,
        step: &Step,
        plan: &Plan,
        prefix: &str,
        reports: &mut Vec<StepReport>,
    ) -> Result<String, StepError> {
        let t = Instant::now();
        let r = self.step(step, plan).await;
        let (ok, detail) = match &r {
            Ok(d) => (true, d.clone()),
            Err(e) => (false, e.to_string()),
        };
        reports.push(StepReport {
            step: step.clone(),
            ok,
            millis: t.elapsed().as_millis() as u64,
            detail: format!("{prefix}{detail}"),
        });
        r
    }

    /// Runs exactly the plan's steps. Before the new master is recorded, a failed step stops
    /// the plan and a switchover is put back as it was (the promoted node follows the old
    /// master again, the old master's writes are unfenced). After the record, the plan goes
    /// on: a node whose follow step failed is skipped (a fenced old master stays fenced, so it
    /// cannot acknowledge writes it would lose), the others still converge.
    async fn apply(mut self, plan: &Plan, reports: &mut Vec<StepReport>) -> Result_ {
        let steps = plan.steps(self.obs, self.ctx.policy);
        let mut paused: Option<Addr> = None;
        let mut fenced: Option<Addr> = None;
        let mut promoted: Option<Addr> = None;
        let mut recorded = false;
        let mut stop_now = false;
        let mut skipped: Vec<Addr> = Vec::new();
        let mut soft_failures: Vec<String> = Vec::new();
        let mut errors: Vec<String> = Vec::new();
        for step in steps {
            if step_node(&step).is_some_and(|n| skipped.contains(n)) {
                continue;
            }
            let r = self.run(&step, plan, "", reports).await;
            let ok = r.is_ok();
            match &step {
                Step::PauseWrites { node, .. } if ok => paused = Some(node.clone()),
                Step::Unpause { .. } => paused = None,
                Step::FenceWrites { node } if ok => fenced = Some(node.clone()),
                Step::UnfenceWrites { .. } if ok => fenced = None,
                // Even a promotion that timed out may have happened: roll it back too.
                Step::Promote { node } => promoted = Some(node.clone()),
                Step::Record { .. } if ok => recorded = true,
                _ => {}
            }
            match r {
                Ok(_) => {}
                // A failed CONFIG REWRITE is reported, but the role change already happened:
                // keep going so the cluster converges, and fail the outcome at the end.
                Err(StepError::Persist(e)) => soft_failures.push(e),
                Err(e @ (StepError::LockLost(_) | StepError::ClusterChanged(_))) => {
                    errors.push(format!("{step}: {e}"));
                    stop_now = true;
                    break;
                }
                Err(e) => {
                    errors.push(format!("{step}: {e}"));
                    match &step {
                        Step::Follow { node, .. } if recorded => {
                            if fenced.as_ref() == Some(node) {
                                errors.push(format!(
                                    "{node} stays fenced (no write can be acknowledged there) until it follows the recorded master"
                                ));
                            }
                            skipped.push(node.clone());
                        }
                        _ => break,
                    }
                }
            }
        }
        if !errors.is_empty() && !recorded && !stop_now {
            self.roll_back(plan, promoted.as_ref(), fenced.take(), reports, &mut errors)
                .await;
        }
        if let Some(node) = paused {
            // Never leave a master paused on a failure path.
            if let Err(e) = self.ctx.nodes.unpause_writes(&node).await {
                warn!(node = %node, error = %e, "CLIENT UNPAUSE failed on the failure path");
            }
        }
        if errors.is_empty() && soft_failures.is_empty() {
            return Result_::Applied;
        }
        errors.extend(soft_failures);
        Result_::Failed {
            error: errors.join("; "),
        }
    }

    /// A switchover that failed before its record: the promoted node follows the old master
    /// again, then the old master's writes are unfenced. Reported as `rollback:` steps.
    async fn roll_back(
        &mut self,
        plan: &Plan,
        promoted: Option<&Addr>,
        fenced: Option<Addr>,
        reports: &mut Vec<StepReport>,
        errors: &mut Vec<String>,
    ) {
        let mut back = Vec::new();
        if let (Action::Switchover { old_master, .. }, Some(p)) = (&plan.action, promoted) {
            let engine = self
                .obs
                .node(p)
                .and_then(|n| n.reachable())
                .map(|s| s.engine)
                .unwrap_or(Engine::Redis);
            back.push(Step::Follow {
                node: p.clone(),
                master: old_master.clone(),
                force: false,
                engine,
            });
            back.push(Step::Persist { node: p.clone() });
        }
        if let Some(node) = fenced {
            back.push(Step::UnfenceWrites { node });
        }
        let rolled_back = !back.is_empty();
        for step in back {
            if let Err(e) = self.run(&step, plan, "rollback: ", reports).await {
                errors.push(format!("rollback: {step}: {e}"));
                if !matches!(e, StepError::Persist(_)) {
                    break;
                }
            }
        }
        if rolled_back {
            errors.push("the switchover was rolled back".into());
        }
    }

    /// Fencing: before every mutating command, the lease must still be ours in the store.
    async fn fence(&self) -> Result<(), StepError> {
        match self.ctx.coord.still_held(self.lease).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(StepError::LockLost(
                "the lock is no longer held (fencing token changed or expired)".into(),
            )),
            Err(e) => Err(StepError::LockLost(format!("cannot confirm the lock: {e}"))),
        }
    }

    async fn step(&mut self, step: &Step, plan: &Plan) -> Result<String, StepError> {
        let nodes = self.ctx.nodes;
        let p = self.ctx.policy;
        match step {
            Step::PauseWrites { node, millis } => {
                self.fence().await?;
                nodes
                    .pause_writes(node, Duration::from_millis(*millis))
                    .await
                    .map_err(StepError::Node)?;
                Ok(format!("writes paused for {millis} ms"))
            }
            Step::Unpause { node } => {
                self.fence().await?;
                nodes.unpause_writes(node).await.map_err(StepError::Node)?;
                Ok("writes unpaused".into())
            }
            Step::FenceWrites { node } => {
                self.fence().await?;
                nodes.fence_writes(node).await.map_err(StepError::Node)?;
                Ok("writes fenced (ACL: default user -@write)".into())
            }
            Step::UnfenceWrites { node } => {
                self.fence().await?;
                nodes.unfence_writes(node).await.map_err(StepError::Node)?;
                Ok("writes unfenced (ACL: default user +@write)".into())
            }
            Step::WaitCatchUp { node, of } => {
                let t = Instant::now();
                let deadline = t + p.switchover_pause;
                let mut misses = Misses::default();
                loop {
                    let (a, b) = tokio::join!(nodes.status(node), nodes.status(of));
                    if let (Ok(a), Ok(b)) = (&a, &b) {
                        if let (Some(x), Some(y)) = (a.offset, b.offset) {
                            if x >= y {
                                return Ok(format!(
                                    "offset {x} >= {y} after {:.1}s",
                                    t.elapsed().as_secs_f64()
                                ));
                            }
                        }
                    }
                    if let Some(why) = misses.see(of, &b) {
                        return Err(StepError::ClusterChanged(why));
                    }
                    if Instant::now() >= deadline {
                        return Err(StepError::Timeout(format!(
                            "{node} did not catch up with {of} within {}",
                            humantime::format_duration(p.switchover_pause)
                        )));
                    }
                    tokio::time::sleep(POLL_EVERY).await;
                }
            }
            Step::Promote { node } => {
                self.fence().await?;
                nodes.promote(node).await.map_err(StepError::Node)?;
                let waited = self
                    .wait(node, p.promote_timeout, None, |s| s.role == Role::Master)
                    .await
                    .map_err(|_| {
                        StepError::Timeout(format!(
                            "{node} not master within {}",
                            humantime::format_duration(p.promote_timeout)
                        ))
                    })?;
                Ok(format!("role master after {waited:.1}s"))
            }
            Step::Follow {
                node,
                master,
                force,
                engine,
            } => self.follow(node, master, *force, *engine).await,
            Step::Persist { node } => self.persist(node).await,
            Step::Record {
                master,
                replicas,
                automatic_failover,
            } => {
                self.record(master, replicas, *automatic_failover, &plan.reason)
                    .await
            }
            Step::Intent { promote } => self.intent(promote).await,
        }
    }

    /// `CONFIG REWRITE`, retried a few times (a busy disk or a transient error must not leave
    /// a role change unpersisted: a restart would undo it). Still failing → reported.
    async fn persist(&self, node: &Addr) -> Result<String, StepError> {
        const ATTEMPTS: u32 = 3;
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            self.fence().await?;
            match self.ctx.nodes.config_rewrite(node).await {
                Ok(()) => {
                    let mut done = if attempt == 1 {
                        "config rewritten".to_string()
                    } else {
                        format!("config rewritten (attempt {attempt})")
                    };
                    if let Some(caveat) = self.rewrite_caveat(node) {
                        warn!(cluster = %self.ctx.cluster.name, %node, "{caveat}");
                        done.push_str("; warning: ");
                        done.push_str(&caveat);
                    }
                    return Ok(done);
                }
                Err(e) => last = e.to_string(),
            }
            if attempt < ATTEMPTS {
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
            }
        }
        Err(StepError::Persist(format!(
            "CONFIG REWRITE on {node} failed {ATTEMPTS} times: {last}; a restart of {node} would undo its new role"
        )))
    }

    /// The warning for a node whose `CONFIG REWRITE` may have persisted nothing (Pika < 3.5).
    fn rewrite_caveat(&self, node: &Addr) -> Option<String> {
        let s = self.obs.node(node)?.status.as_ref().ok()?;
        if !s.rewrite_may_skip_slaveof() {
            return None;
        }
        Some(format!(
            "Pika {} rewrites slaveof only if pika.conf already has an uncommented `slaveof` line \
             (the stock file has `#slaveof`); without it the role change is lost on restart",
            s.version.as_deref().unwrap_or("?")
        ))
    }

    /// Poll a node until `pred` holds, bounded. Returns seconds waited. With `watch`, the node
    /// it depends on (the master it was told to follow, the master it catches up with) is
    /// probed alongside: after [`GONE_AFTER`] failed probes in a row the wait ends early, so a
    /// plan never sits out a long bound behind a master that has died meanwhile.
    async fn wait(
        &self,
        node: &Addr,
        bound: Duration,
        watch: Option<&Addr>,
        pred: impl Fn(&NodeStatus) -> bool,
    ) -> Result<f64, WaitEnd> {
        let t = Instant::now();
        let mut misses = Misses::default();
        loop {
            let (me, other) = tokio::join!(self.ctx.nodes.status(node), async {
                match watch {
                    Some(m) => Some(self.ctx.nodes.status(m).await),
                    None => None,
                }
            });
            if let Ok(s) = me {
                if pred(&s) {
                    return Ok(t.elapsed().as_secs_f64());
                }
            }
            if let (Some(m), Some(r)) = (watch, other) {
                if let Some(why) = misses.see(m, &r) {
                    return Err(WaitEnd::Gone(format!(
                        "{why} after {:.1}s",
                        t.elapsed().as_secs_f64()
                    )));
                }
            }
            if t.elapsed() >= bound {
                return Err(WaitEnd::Timeout);
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    /// Make `node` follow `master`, verified by `master_link_status:up`.
    async fn follow(
        &self,
        node: &Addr,
        master: &Addr,
        force: bool,
        engine: Engine,
    ) -> Result<String, StepError> {
        let nodes = self.ctx.nodes;
        let p = self.ctx.policy;
        let current = nodes.status(node).await.map_err(StepError::Node)?;
        if current.follows_with_link_up(master) && !force {
            return Ok("already following with link up".into());
        }
        let mut notes = Vec::new();
        // Pika refuses SLAVEOF while it has connected slaves: move configured nodes that still
        // follow it to the new master first (they are in this plan's repoint list anyway).
        if engine == Engine::Pika && current.connected_replicas > 0 {
            for n in &self.ctx.cluster.nodes {
                if &n.addr == node || &n.addr == master {
                    continue;
                }
                if let Ok(s) = nodes.status(&n.addr).await {
                    if s.role.is_replica() && s.master.as_ref() == Some(node) {
                        self.fence().await?;
                        if self.ctx.has_password {
                            nodes
                                .set_masterauth(&n.addr)
                                .await
                                .map_err(StepError::Node)?;
                        }
                        nodes
                            .follow(&n.addr, master, false)
                            .await
                            .map_err(StepError::Node)?;
                        // Its new role must survive a restart too.
                        self.persist(&n.addr).await?;
                        notes.push(format!("moved {} to {master} first", n.addr));
                    }
                }
            }
        }
        if self.ctx.has_password {
            self.fence().await?;
            nodes.set_masterauth(node).await.map_err(StepError::Node)?;
        }
        // An identical SLAVEOF is a silent no-op on Pika (even in a broken state): reset first.
        if current.role.is_replica() && current.master.as_ref() == Some(master) {
            self.fence().await?;
            nodes.promote(node).await.map_err(StepError::Node)?;
        }
        self.slaveof_with_detach_retry(node, master, force).await?;
        let t = Instant::now();
        match self
            .wait(node, p.link_timeout, Some(master), |s| {
                s.follows_with_link_up(master)
            })
            .await
        {
            Ok(w) => {
                notes.push(format!("link up after {w:.1}s"));
                return Ok(notes.join("; "));
            }
            Err(WaitEnd::Gone(why)) => return Err(StepError::ClusterChanged(why)),
            Err(WaitEnd::Timeout) => {}
        }
        // Pika never retries a failed handshake: re-issue the whole sequence once, forced on Pika.
        let retry_force = engine == Engine::Pika;
        notes.push(format!(
            "link not up after {:.1}s; retrying with SLAVEOF NO ONE + SLAVEOF{}",
            t.elapsed().as_secs_f64(),
            if retry_force { " force" } else { "" }
        ));
        self.fence().await?;
        nodes.promote(node).await.map_err(StepError::Node)?;
        self.slaveof_with_detach_retry(node, master, retry_force)
            .await?;
        match self
            .wait(node, p.link_timeout, Some(master), |s| {
                s.follows_with_link_up(master)
            })
            .await
        {
            Ok(w) => {
                notes.push(format!("link up after {w:.1}s"));
                Ok(notes.join("; "))
            }
            Err(WaitEnd::Gone(why)) => Err(StepError::ClusterChanged(why)),
            Err(WaitEnd::Timeout) => {
                let state = match nodes.status(node).await {
                    Ok(s) => format!(
                        "role={} master={} link={}",
                        s.role.as_str(),
                        s.master
                            .map(|m| m.to_string())
                            .unwrap_or_else(|| "-".into()),
                        s.link.map(|l| l.as_str()).unwrap_or("-")
                    ),
                    Err(e) => format!("unreachable: {e}"),
                };
                Err(StepError::Timeout(format!(
                    "{node} link to {master} not up after retry ({state}); {}",
                    notes.join("; ")
                )))
            }
        }
    }

    /// `SLAVEOF`, retrying Pika's transient `already master of others` (a stale slave entry
    /// lingers 1–4 s after its slave left) with backoff, bounded by `detach_timeout`.
    async fn slaveof_with_detach_retry(
        &self,
        node: &Addr,
        master: &Addr,
        force: bool,
    ) -> Result<(), StepError> {
        let t = Instant::now();
        let mut backoff = Duration::from_millis(200);
        loop {
            self.fence().await?;
            match self.ctx.nodes.follow(node, master, force).await {
                Ok(()) => return Ok(()),
                Err(NodeError::Node(msg)) if msg.contains("already master of others") => {
                    if t.elapsed() >= self.ctx.policy.detach_timeout {
                        return Err(StepError::Node(NodeError::Node(msg)));
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                Err(e) => return Err(StepError::Node(e)),
            }
        }
    }

    /// Write-ahead intent: same record, plus `pending = promote`, compare-and-set.
    async fn intent(&mut self, promote: &Addr) -> Result<String, StepError> {
        let Some(current) = self.record.clone() else {
            return Err(StepError::Record(
                "no record to attach the failover intent to".into(),
            ));
        };
        let mut rec = current.value.clone();
        rec.pending = Some(promote.clone());
        self.fence().await?;
        let cluster = &self.ctx.cluster.name;
        match self
            .ctx
            .coord
            .write_record(cluster, &rec, Some(current.version))
            .await
        {
            Ok(CasOutcome::Written(version)) => {
                self.record = Some(Versioned {
                    value: rec,
                    version,
                });
                Ok(format!("intent recorded: failover to {promote}"))
            }
            Ok(CasOutcome::Conflict) => Err(StepError::Record(
                "the record changed since it was read (compare-and-set conflict)".into(),
            )),
            Err(e) => Err(StepError::Record(format!("cannot write the intent: {e}"))),
        }
    }

    async fn record(
        &mut self,
        master: &Addr,
        replicas: &[Addr],
        automatic: bool,
        reason: &str,
    ) -> Result<String, StepError> {
        let coord = self.ctx.coord;
        let cluster = &self.ctx.cluster.name;
        let now = now_unix();
        let epoch = TopologyRecord::next_epoch(self.record.as_ref().map(|v| &v.value), master);
        let (last_failover_at, expected) = match &self.record {
            Some(v) => {
                let last = if automatic {
                    Some(now)
                } else {
                    v.value.last_failover_at
                };
                (last, Some(v.version))
            }
            None => (if automatic { Some(now) } else { None }, None),
        };
        let rec = TopologyRecord {
            master: master.clone(),
            replicas: replicas.to_vec(),
            epoch,
            updated_at: now,
            last_failover_at,
            reason: reason.to_string(),
            pending: None,
        };
        // A stale holder must not rewrite the truth either.
        self.fence().await?;
        match coord.write_record(cluster, &rec, expected).await {
            Ok(CasOutcome::Written(version)) => {
                if let Err(e) = coord.publish_roles(cluster, master, replicas).await {
                    warn!(cluster = %cluster, error = %e, "publishing roles for discovery failed");
                }
                self.record = Some(Versioned {
                    value: rec,
                    version,
                });
                Ok(format!("recorded master {master} at epoch {epoch}"))
            }
            Ok(CasOutcome::Conflict) => Err(StepError::Record(
                "the record changed since it was read (compare-and-set conflict)".into(),
            )),
            Err(e) => Err(StepError::Record(format!("cannot write the record: {e}"))),
        }
    }
}

/// The node a step acts on (none for coordinator steps).
fn step_node(step: &Step) -> Option<&Addr> {
    match step {
        Step::PauseWrites { node, .. }
        | Step::WaitCatchUp { node, .. }
        | Step::Promote { node }
        | Step::Follow { node, .. }
        | Step::Persist { node }
        | Step::Unpause { node }
        | Step::FenceWrites { node }
        | Step::UnfenceWrites { node } => Some(node),
        Step::Intent { .. } | Step::Record { .. } => None,
    }
}

#[derive(Debug, thiserror::Error)]
enum StepError {
    #[error("{0}")]
    Node(NodeError),
    #[error("{0}")]
    Timeout(String),
    #[error("lock lost: {0}")]
    LockLost(String),
    #[error("{0}")]
    Persist(String),
    #[error("{0}")]
    Record(String),
    /// The cluster changed under the plan (a master it depends on stopped answering): the plan
    /// stops so the next reconcile decides afresh (e.g. fails over).
    #[error("the cluster changed: {0}; plan stopped")]
    ClusterChanged(String),
}
