//! The executor: runs exactly the steps of the plan under a held lease, the lock checked
//! (fencing) before every mutating command. Reality that differs from the plan stops it
//! (`ClusterChanged`) instead of being worked around; the next reconcile decides afresh.

use std::time::{Duration, Instant};

use tracing::warn;

use super::{now_unix, Ctx, Result_, StepReport};
use crate::coord::{CasOutcome, Coordinator, Lease};
use crate::decide::{Action, Plan, Step};
use crate::model::{Addr, Engine, Observation, TopologyRecord, Versioned};
use crate::node::{NodeError, Nodes, SnapshotInfo};

/// Applies one plan's steps under a held lease.
pub(super) struct Exec<'a, 'c, N: Nodes, C: Coordinator> {
    pub(super) ctx: &'a Ctx<'c, N, C>,
    pub(super) lease: &'a Lease,
    pub(super) obs: &'a Observation,
    pub(super) record: Option<Versioned<TopologyRecord>>,
    /// The snapshot the last [`Step::Diverged`] took, for its report.
    pub(super) snapshot: Option<SnapshotInfo>,
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
        super::step_started(step);
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
            snapshot: self.snapshot.take(),
        });
        if let Some(last) = reports.last() {
            super::step_done(last);
        }
        r
    }

    /// Runs exactly the plan's steps. Before the new master is recorded, a failed step stops
    /// the plan and a switchover is put back as it was (the promoted node follows the old
    /// master again, the old master's writes are unfenced). After the record, the plan goes
    /// on: a node whose follow step failed is skipped (a fenced old master stays fenced, so it
    /// cannot acknowledge writes it would lose), the others still converge.
    pub(super) async fn apply(mut self, plan: &Plan, reports: &mut Vec<StepReport>) -> Result_ {
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
                // So is a failed client fence: the topology is right, only stale clients stay.
                Err(StepError::Persist(e) | StepError::Fence(e)) => soft_failures.push(e),
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
                reset: false,
                full_sync: None,
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
    pub(super) async fn fence(&self) -> Result<(), StepError> {
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
            Step::ClearReplicationId { node, master, why } => {
                self.clear_replid(node, master, why).await
            }
            Step::KillClients {
                unsupported: Some(why),
                ..
            } => Ok(format!("not sent: {why}")),
            Step::KillClients {
                node,
                unsupported: None,
            } => {
                self.fence().await?;
                match nodes.kill_clients(node).await {
                    Ok(Some(n)) => Ok(format!("{n} normal client connections closed")),
                    Ok(None) => Ok("normal client connections closed".into()),
                    // The version check let it through but the node does not know it (e.g. a
                    // genuine 4.0.0): nothing was closed; said so, not a failure of the plan.
                    Err(e @ NodeError::Unsupported(_)) => Ok(format!(
                        "not closed: {e}; clients pinned to {node} keep their connections"
                    )),
                    Err(e) => Err(StepError::Fence(format!(
                        "closing the client connections of {node} failed: {e}"
                    ))),
                }
            }
            Step::Diverged {
                node,
                estimate,
                snapshot: false,
                ..
            } => Ok(format!(
                "no snapshot; diverged writes of {node} are discarded: {}",
                estimate.summary()
            )),
            Step::Diverged {
                node,
                engine,
                estimate,
                snapshot: true,
            } => {
                self.fence().await?;
                let tag = now_unix().to_string();
                let timeout = self.ctx.policy.snapshot_timeout;
                match nodes.snapshot(node, *engine, &tag, timeout).await {
                    Ok(info) => {
                        let text = format!(
                            "snapshot of {node} at {}{} in {} ms; diverged: {}",
                            info.path,
                            info.size_bytes
                                .map(|b| format!(" ({b} bytes)"))
                                .unwrap_or_default(),
                            info.millis,
                            estimate.summary()
                        );
                        self.snapshot = Some(info);
                        Ok(text)
                    }
                    Err(e) => Err(StepError::Snapshot(format!(
                        "snapshot of {node} failed: {e}; not demoted, nothing discarded \
                         (policy.diverged = \"report\" demotes without a snapshot)"
                    ))),
                }
            }
            Step::WaitCatchUp { node, of } => self.catch_up(node, of).await,
            Step::Promote { node } => self.promote(node).await,
            Step::Follow {
                node,
                master,
                force,
                engine,
                reset,
                full_sync,
            } => {
                self.follow(node, master, *force, *engine, *reset, full_sync.is_some())
                    .await
            }
            Step::WaitSynced { node, master, .. } => self.full_sync_done(node, master).await,
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
        | Step::WaitSynced { node, .. }
        | Step::Promote { node }
        | Step::Follow { node, .. }
        | Step::Persist { node }
        | Step::Unpause { node }
        | Step::FenceWrites { node }
        | Step::UnfenceWrites { node }
        | Step::ClearReplicationId { node, .. }
        | Step::Diverged { node, .. }
        | Step::KillClients { node, .. } => Some(node),
        Step::Intent { .. } | Step::Record { .. } => None,
    }
}

#[derive(Debug, thiserror::Error)]
pub(super) enum StepError {
    #[error("{0}")]
    Node(NodeError),
    #[error("{0}")]
    Timeout(String),
    #[error("lock lost: {0}")]
    LockLost(String),
    #[error("{0}")]
    Persist(String),
    /// Closing stale clients failed: reported, the plan goes on (the topology is right).
    #[error("{0}")]
    Fence(String),
    /// `node`'s ReplicationID still conflicts with its master's after the recovery.
    #[error("{node}: replication id {have} still differs from {master}'s {want}")]
    ReplidMismatch {
        node: Addr,
        master: Addr,
        have: String,
        want: String,
    },
    #[error("{0}")]
    Record(String),
    /// The snapshot before a demotion failed or timed out: the plan stops (fail safe).
    #[error("{0}")]
    Snapshot(String),
    /// The cluster changed under the plan (a master it depends on stopped answering): the plan
    /// stops so the next reconcile decides afresh (e.g. fails over).
    #[error("the cluster changed: {0}; plan stopped")]
    ClusterChanged(String),
}
