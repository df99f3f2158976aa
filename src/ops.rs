//! Operator commands (`plan`, `failover`, `switchover`, `demote`, `record`): thin wrappers that
//! go through the same `reconcile` code as the webhook, and render readable text.

use std::fmt::Write as _;

use crate::coord::{CasOutcome, Coordinator};
use crate::decide::{Action, Plan, Trigger};
use crate::model::{Addr, Observation, Role, TopologyRecord, Versioned};
use crate::node::Nodes;
use crate::reconcile::{self, look, now_unix, summarize, Ctx, Outcome, Result_};

/// Exit codes shared by the acting commands (documented in the README).
pub mod exit {
    /// Applied, or nothing to do.
    pub const OK: i32 = 0;
    /// Refused, failed, or the lock is held by another instance.
    pub const NOT_DONE: i32 = 1;
    /// Bad config or usage.
    pub const USAGE: i32 = 2;
    /// Coordinator unreachable or too few observations: retrying may help.
    pub const RETRY: i32 = 3;
}

/// A coordinator error as CLI output: its own text (which names the kind once) and exit 3 if a
/// retry may help, else 1.
fn coord_failed(e: &crate::coord::CoordError) -> (String, i32) {
    let code = if e.is_retryable() {
        exit::RETRY
    } else {
        exit::NOT_DONE
    };
    (format!("{e}\n"), code)
}

/// `plan`: observation, record, the plan with the ranked candidates, and the exact commands.
pub async fn plan<N: Nodes, C: Coordinator>(
    ctx: &Ctx<'_, N, C>,
    trigger: &Trigger,
) -> (String, i32) {
    match look(ctx, trigger).await {
        Err(e) => coord_failed(&e),
        Ok((obs, record, plan)) => {
            let text = render_plan(&obs, record.as_ref(), &plan, ctx);
            let code = match plan.action {
                Action::Refuse { retryable: true } => exit::RETRY,
                Action::Refuse { .. } => exit::NOT_DONE,
                _ => exit::OK,
            };
            (text, code)
        }
    }
}

pub fn render_plan<N: Nodes, C: Coordinator>(
    obs: &Observation,
    record: Option<&Versioned<TopologyRecord>>,
    plan: &Plan,
    ctx: &Ctx<'_, N, C>,
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "cluster {}", obs.cluster);
    let _ = writeln!(s, "observation:");
    for line in summarize(obs) {
        let _ = writeln!(s, "  {line}");
    }
    match record {
        Some(r) => {
            let _ = writeln!(
                s,
                "record: master {} epoch {} (updated {}; {})",
                r.value.master, r.value.epoch, r.value.updated_at, r.value.reason
            );
        }
        None => {
            let _ = writeln!(s, "record: none");
        }
    }
    let _ = writeln!(s, "plan: {} — {}", plan.action.label(), plan.reason);
    if !plan.candidates.is_empty() {
        let _ = writeln!(s, "candidates (best first):");
        for c in &plan.candidates {
            let offset = c
                .offset
                .map(|o| o.to_string())
                .unwrap_or_else(|| "-".into());
            match &c.excluded {
                None => {
                    let _ = writeln!(
                        s,
                        "  {:<22} eligible  priority {:<4} offset {offset}",
                        c.addr.to_string(),
                        c.priority
                    );
                }
                Some(why) => {
                    let _ = writeln!(s, "  {:<22} excluded  {why}", c.addr.to_string());
                }
            }
        }
    }
    let steps = plan.steps(obs, ctx.policy);
    let renames = ctx.cluster.renames();
    if !steps.is_empty() {
        let _ = writeln!(s, "steps:");
        for (i, st) in steps.iter().enumerate() {
            for (j, c) in st
                .commands_renamed(ctx.has_password, &renames)
                .iter()
                .enumerate()
            {
                if j == 0 {
                    let _ = writeln!(s, "  {:>2}. {c}", i + 1);
                } else {
                    let _ = writeln!(s, "      {c}");
                }
            }
        }
    }
    s
}

/// Run a reconcile for an operator trigger and render the outcome.
pub async fn act<N: Nodes, C: Coordinator>(
    ctx: &Ctx<'_, N, C>,
    trigger: Trigger,
) -> (String, Outcome, i32) {
    let out = reconcile::reconcile(ctx, trigger).await;
    let code = outcome_exit_code(&out);
    (render_outcome(&out), out, code)
}

pub fn outcome_exit_code(out: &Outcome) -> i32 {
    if out.retryable {
        return exit::RETRY;
    }
    match out.result {
        Result_::NoAction | Result_::Applied | Result_::DryRun => exit::OK,
        _ => exit::NOT_DONE,
    }
}

pub fn render_outcome(out: &Outcome) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "cluster {}: {} — {}",
        out.cluster,
        out.plan.action.label(),
        out.plan.reason
    );
    for st in &out.steps {
        let _ = writeln!(
            s,
            "  [{}] {:>6} ms  {}: {}",
            if st.ok { "ok" } else { "FAILED" },
            st.millis,
            st.step,
            st.detail
        );
    }
    let result = match &out.result {
        Result_::NoAction => "no action".to_string(),
        Result_::Refused => "refused".to_string(),
        Result_::DryRun => "dry run: nothing sent".to_string(),
        Result_::LockHeld { holder } => format!("not acting: the lock is held by {holder}"),
        Result_::PlanChanged => {
            "not acting: the plan changed under the lock (re-run to act on the new plan)"
                .to_string()
        }
        Result_::Applied => "applied".to_string(),
        Result_::Failed { error } => format!("FAILED: {error}"),
        // `error` already names it ("coordinator unreachable: …" or "coordinator error: …").
        Result_::CoordinatorUnreachable { error } => error.clone(),
        Result_::InProgress => "in progress".to_string(),
    };
    let _ = writeln!(s, "result: {result} ({} ms)", out.millis);
    s
}

/// `record --master X`: write the topology by hand (bootstrap or after an operator's fix).
/// Refuses unless X is configured and answers as master, or `force` is set.
pub async fn record<N: Nodes, C: Coordinator>(
    ctx: &Ctx<'_, N, C>,
    master: &Addr,
    force: bool,
) -> (String, i32) {
    if !ctx.cluster.nodes.iter().any(|n| &n.addr == master) {
        return (
            format!("{master} is not a node of cluster {}\n", ctx.cluster.name),
            exit::USAGE,
        );
    }
    if !force {
        match ctx.nodes.status(master).await {
            Ok(s) if s.role == Role::Master => {}
            Ok(s) => {
                return (
                    format!(
                        "{master} reports role {}; refusing (use --force to record it anyway)\n",
                        s.role.as_str()
                    ),
                    exit::NOT_DONE,
                )
            }
            Err(e) => {
                return (
                    format!(
                    "{master} is unreachable ({e}); refusing (use --force to record it anyway)\n"
                ),
                    exit::NOT_DONE,
                )
            }
        }
    }
    let cluster = &ctx.cluster.name;
    let current = match ctx.coord.read_record(cluster).await {
        Ok(c) => c,
        Err(e) => return coord_failed(&e),
    };
    let epoch = TopologyRecord::next_epoch(current.as_ref().map(|c| &c.value), master);
    let replicas: Vec<Addr> = ctx
        .cluster
        .nodes
        .iter()
        .map(|n| n.addr.clone())
        .filter(|a| a != master)
        .collect();
    let rec = TopologyRecord {
        master: master.clone(),
        replicas: replicas.clone(),
        epoch,
        updated_at: now_unix(),
        last_failover_at: current.as_ref().and_then(|c| c.value.last_failover_at),
        pending: None,
        reason: format!("recorded by operator: master {master}"),
    };
    match ctx
        .coord
        .write_record(cluster, &rec, current.as_ref().map(|c| c.version))
        .await
    {
        Ok(CasOutcome::Written(_)) => {
            let _ = ctx.coord.publish_roles(cluster, master, &replicas).await;
            (
                format!("cluster {cluster}: recorded master {master} at epoch {epoch}\n"),
                exit::OK,
            )
        }
        Ok(CasOutcome::Conflict) => (
            "the record changed concurrently; re-run\n".into(),
            exit::RETRY,
        ),
        Err(e) => coord_failed(&e),
    }
}

/// `history`: the recorded topology per cluster and the newest audit events from the
/// JSON-lines file (`service.events_file`).
pub async fn history(
    loaded: &crate::config::Loaded,
    cluster: Option<&str>,
    limit: usize,
) -> Result<(String, i32), crate::error::Error> {
    let mut s = String::new();
    let coord = match crate::app::coordinator(loaded).await {
        Ok(c) => c,
        Err(e) if e.is_retryable() => return Ok((format!("{e}\n"), exit::RETRY)),
        Err(e) => return Err(crate::error::Error::Other(e.to_string())),
    };
    let mut code = exit::OK;
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
                code = exit::RETRY;
            }
        }
    }
    match &loaded.config.service.events_file {
        None => {
            let _ = writeln!(s, "no service.events_file configured: the audit trail is only in the running service (GET /v1/events)");
        }
        Some(p) => {
            // Rotated files first (oldest first), then the current one. A folded event appears
            // again with a higher `count` (same `seq` and `at`): the later line supersedes.
            let keep = loaded.config.service.events_file_keep;
            let mut text = String::new();
            for n in (1..keep).rev() {
                text.push_str(
                    &std::fs::read_to_string(crate::events::rotated_path(p, n)).unwrap_or_default(),
                );
            }
            text.push_str(&std::fs::read_to_string(p).unwrap_or_default());
            let mut events: Vec<serde_json::Value> = Vec::new();
            let mut index: std::collections::HashMap<(u64, String), usize> = Default::default();
            for e in text
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|e| {
                    cluster.is_none_or(|c| e.get("cluster").and_then(|v| v.as_str()) == Some(c))
                })
            {
                let id = (
                    e.get("seq").and_then(|v| v.as_u64()).unwrap_or(0),
                    e.get("at")
                        .and_then(|v| v.as_str())
                        .unwrap_or("")
                        .to_string(),
                );
                match index.get(&id) {
                    Some(&i) => events[i] = e,
                    None => {
                        index.insert(id, events.len());
                        events.push(e);
                    }
                }
            }
            let skip = events.len().saturating_sub(limit);
            let _ = writeln!(
                s,
                "events ({} of {} in {}):",
                events.len() - skip,
                events.len(),
                p.display()
            );
            for e in &events[skip..] {
                let get = |k: &str| e.get(k).and_then(|v| v.as_str()).unwrap_or("-").to_string();
                let result = e
                    .pointer("/outcome/result/kind")
                    .and_then(|v| v.as_str())
                    .unwrap_or("-");
                let repeated = match e.get("count").and_then(|v| v.as_u64()) {
                    Some(n) if n > 1 => format!(" (×{n}, last {})", get("last_at")),
                    _ => String::new(),
                };
                let _ = writeln!(
                    s,
                    "  {} {} {} [{}] {} -> {}{}",
                    get("at"),
                    get("cluster"),
                    get("source"),
                    get("kind"),
                    get("reason"),
                    result,
                    repeated
                );
            }
        }
    }
    Ok((s, code))
}

/// Record an operator command's outcome in the same audit trail as the service (the JSON-lines
/// file, and the coordinator's bounded event list), so `history` shows CLI actions too.
pub async fn audit_cli<C: Coordinator>(loaded: &crate::config::Loaded, coord: &C, out: &Outcome) {
    use crate::events::{EventKind, EventLog, NewEvent, TriggerSource};
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
        crate::app::events_cap(&loaded.config),
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
