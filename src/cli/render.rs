//! Text rendering of plans and outcomes for the operator commands.

use std::fmt::Write as _;

use crate::coord::Coordinator;
use crate::decide::Plan;
use crate::model::{Observation, TopologyRecord, Versioned};
use crate::node::Nodes;
use crate::reconcile::{summarize, Ctx, Outcome, Result_};

/// `plan`: observation, record, the plan with the ranked candidates, and the exact commands.
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
    if let Some(loss) = &plan.expected_loss {
        let _ = writeln!(s, "expected loss: {loss}");
    }
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

pub fn render_outcome(out: &Outcome) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "cluster {}: {} — {}",
        out.cluster,
        out.plan.action.label(),
        out.plan.reason
    );
    if let Some(loss) = &out.plan.expected_loss {
        let _ = writeln!(s, "expected loss: {loss}");
    }
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
        Result_::Vetoed { hook, detail } => {
            format!("vetoed by the {hook} hook ({detail}); nothing was sent to any node")
        }
    };
    let _ = writeln!(s, "result: {result} ({} ms)", out.millis);
    s
}
