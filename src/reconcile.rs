//! The only place that locks and acts: observe → decide → lock → re-observe → re-decide →
//! apply steps (lock checked before each mutating step) → record → release.

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
