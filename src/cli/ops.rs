//! Operator commands (`plan`, `failover`, `switchover`, `demote`, `record`): thin wrappers that
//! go through the same `reconcile` code as the webhook, and render readable text.

use crate::coord::Coordinator;
use crate::decide::Trigger;
use crate::error::{Error, Exit};
use crate::model::Addr;
use crate::node::Nodes;
use crate::reconcile::handle::ClusterHandle;
use crate::reconcile::{self, look, Ctx, Outcome};
use crate::service::events::{EventKind, EventLog, FileCap, NewEvent, TriggerSource};

use super::render::{render_outcome, render_plan};

/// What a command prints on stdout and how it exits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub text: String,
    pub exit: Exit,
}

impl Reply {
    pub fn new(text: String, exit: Exit) -> Reply {
        Reply { text, exit }
    }

    /// An error that ended the command, as CLI output: its own text (which names the kind
    /// once) and its place in the exit-code table.
    pub fn error(e: &Error) -> Reply {
        Reply::new(format!("{e}\n"), e.exit())
    }

    pub fn code(&self) -> i32 {
        self.exit.code()
    }
}

/// `plan`: observation, record, the plan with the ranked candidates, and the exact commands.
pub async fn plan<N: Nodes, C: Coordinator>(
    ctx: &Ctx<'_, N, C>,
    trigger: &Trigger,
    json: bool,
) -> Reply {
    match look(ctx, trigger).await {
        Err(e) => error_reply(&e.into(), json),
        Ok((obs, record, plan)) if json => {
            let steps: Vec<String> = plan
                .steps(&obs, ctx.policy)
                .iter()
                .map(ToString::to_string)
                .collect();
            let v = serde_json::json!({
                "cluster": ctx.cluster.name,
                "trigger": trigger,
                "observation": reconcile::summarize(&obs),
                "record": record.as_ref().map(|r| record_json(&r.value)),
                "plan": plan,
                "steps": steps,
            });
            Reply::new(json_text(&v), Exit::of_plan(&plan))
        }
        Ok((obs, record, plan)) => Reply::new(
            render_plan(&obs, record.as_ref(), &plan, ctx),
            Exit::of_plan(&plan),
        ),
    }
}

/// Pretty JSON plus a newline.
pub fn json_text(v: &serde_json::Value) -> String {
    format!("{}\n", serde_json::to_string_pretty(v).unwrap_or_default())
}

/// An error as `{"error": "...", "retryable": bool}` (with `json`) or text.
pub fn error_reply(e: &Error, json: bool) -> Reply {
    if !json {
        return Reply::error(e);
    }
    let exit = e.exit();
    let v = serde_json::json!({ "error": e.to_string(), "retryable": exit == Exit::Retry });
    Reply::new(json_text(&v), exit)
}

/// The record in the documented JSON shape (times RFC 3339).
pub fn record_json(r: &crate::model::TopologyRecord) -> serde_json::Value {
    use crate::controls::rfc3339;
    serde_json::json!({
        "master": r.master,
        "replicas": r.replicas,
        "epoch": r.epoch,
        "updated": rfc3339(r.updated_at),
        "last_failover": r.last_failover_at.map(rfc3339),
        "reason": r.reason,
    })
}

/// Run a reconcile for an operator trigger (with the cluster's hooks) and render the outcome.
pub async fn act<N: Nodes, C: Coordinator>(
    handle: &ClusterHandle<N, C>,
    mode: &crate::reconcile::handle::Mode,
    trigger: Trigger,
    json: bool,
) -> (Reply, Outcome) {
    let out = handle.reconcile(trigger, mode).await;
    let text = if json {
        json_text(&serde_json::to_value(&out).unwrap_or_default())
    } else {
        render_outcome(&out)
    };
    (Reply::new(text, Exit::of_outcome(&out)), out)
}

/// `record --master X`: write the topology by hand (bootstrap or after an operator's fix),
/// through the cluster's handle, under its lock.
pub async fn record<N: Nodes, C: Coordinator>(
    handle: &ClusterHandle<N, C>,
    master: &Addr,
    force: bool,
    json: bool,
) -> Reply {
    match handle.record(master, force).await {
        Ok(r) if json => Reply::new(
            json_text(&serde_json::json!({
                "cluster": handle.name(),
                "master": r.master,
                "epoch": r.epoch,
                "forced": force,
            })),
            Exit::Ok,
        ),
        Err(e) if json => error_reply(&e, true),
        Ok(r) => Reply::new(
            format!(
                "cluster {}: recorded master {} at epoch {}\n",
                handle.name(),
                r.master,
                r.epoch
            ),
            Exit::Ok,
        ),
        Err(e) => Reply::error(&e),
    }
}

/// Record an operator command's outcome in the same audit trail as the service (the JSON-lines
/// file, and the coordinator's bounded event list), so `history` shows CLI actions too.
pub async fn audit_cli<C: Coordinator>(loaded: &crate::config::Loaded, coord: &C, out: &Outcome) {
    let ev = NewEvent {
        kind: EventKind::Reconcile,
        cluster: Some(out.cluster.clone()),
        source: TriggerSource::Cli,
        trigger: Some(out.trigger.clone()),
        alerts: Vec::new(),
        alerts_omitted: 0,
        reason: out.plan.reason.clone(),
        outcome: Some(out.clone()),
    };
    let log = match EventLog::open_capped(
        1,
        loaded.config.service.events_file.as_deref(),
        FileCap::of(&loaded.config.service),
    ) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "cannot open the events file; CLI action not recorded there");
            EventLog::in_memory(1)
        }
    };
    let recorded = log.record(ev);
    if let Ok(json) = serde_json::to_string(&recorded) {
        if let Err(e) = coord.append_event(&out.cluster, &json).await {
            tracing::warn!(error = %e, "CLI action not copied to the coordinator's event list");
        }
    }
}
