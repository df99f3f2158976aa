//! THE PURE CORE: `decide(trigger, observation, record, policy, gate) -> Plan`, and
//! `Plan::steps()` → ordered `Step`s. No async, no clock (the caller passes `now`), no I/O.
//! Every plan carries a stable reason sentence: it is logged, returned over HTTP, and asserted
//! in tests, so change wording only on purpose.

use serde::{Deserialize, Serialize};

use crate::config::Policy;
use crate::model::{Addr, Engine, Observation, TopologyRecord};

/// What woke us up. Alerts are hints: the trigger only selects which rules apply
/// (e.g. manual triggers ignore the cooldown); the decision comes from the observation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Trigger {
    /// Alert: the master looks down.
    MasterDown,
    /// Alert: some node's role differs from the recorded one, or two masters.
    RoleMismatch,
    /// Periodic check (no alert).
    Periodic,
    /// Operator: fail over now (master dead or not), optionally to a given node. Ignores cooldown.
    Failover { to: Option<Addr> },
    /// Operator: planned switchover of a healthy master to `to` (or the best replica).
    Switchover { to: Option<Addr> },
    /// Operator: make `node` follow the recorded master.
    Demote { node: Addr },
}

impl Trigger {
    pub fn is_manual(&self) -> bool {
        matches!(
            self,
            Trigger::Failover { .. } | Trigger::Switchover { .. } | Trigger::Demote { .. }
        )
    }
    /// Short label for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Trigger::MasterDown => "master_down",
            Trigger::RoleMismatch => "role_mismatch",
            Trigger::Periodic => "periodic",
            Trigger::Failover { .. } => "manual_failover",
            Trigger::Switchover { .. } => "switchover",
            Trigger::Demote { .. } => "manual_demote",
        }
    }
}

/// Inputs that are not observations: the clock and the switches.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Gate {
    /// Unix seconds, passed in (decide never reads a clock).
    pub now: u64,
    /// Global or per-cluster pause: no automatic action (manual triggers still run).
    pub paused: bool,
}

/// Why each replica was or was not a promotion candidate, best first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    pub addr: Addr,
    /// `None` if eligible; otherwise why it was excluded (a stable phrase, e.g. "unreachable",
    /// "in full sync", "link error", "not eligible for master election", "never_promote",
    /// "priority 0", "behind the best by N bytes (limit M)", "DB db1 not connected").
    pub excluded: Option<String>,
    pub priority: u32,
    pub offset: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    NoAction,
    /// Not safe to act. `retryable`: a retry may help (e.g. not enough observations) → HTTP 503.
    Refuse {
        retryable: bool,
    },
    /// Write the first record (no mutating node command).
    Bootstrap {
        master: Addr,
        replicas: Vec<Addr>,
    },
    /// Promote `promote`, repoint `repoint` (reachable nodes) to it. `old_master` is the recorded
    /// master (dead or not); it is demoted when it comes back.
    Failover {
        promote: Addr,
        repoint: Vec<Addr>,
        old_master: Addr,
        /// True for automatic (alert/periodic) failovers: starts the cooldown.
        automatic: bool,
    },
    /// Planned: pause writes on the healthy master, wait for `promote` to catch up, promote,
    /// repoint the others, demote the old master, unpause.
    Switchover {
        promote: Addr,
        repoint: Vec<Addr>,
        old_master: Addr,
    },
    /// A node claiming master that is not the recorded master: make it follow `to`.
    Demote {
        node: Addr,
        to: Addr,
    },
    /// Replicas following the wrong master (or none): repoint them to `to`.
    Repoint {
        nodes: Vec<Addr>,
        to: Addr,
    },
}

impl Action {
    pub fn label(&self) -> &'static str {
        match self {
            Action::NoAction => "no_action",
            Action::Refuse { .. } => "refuse",
            Action::Bootstrap { .. } => "bootstrap",
            Action::Failover { .. } => "failover",
            Action::Switchover { .. } => "switchover",
            Action::Demote { .. } => "demote",
            Action::Repoint { .. } => "repoint",
        }
    }
    /// True if applying it sends mutating commands to nodes.
    pub fn mutates_nodes(&self) -> bool {
        !matches!(
            self,
            Action::NoAction | Action::Refuse { .. } | Action::Bootstrap { .. }
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub action: Action,
    /// Stable, human sentence; no secrets, no timestamps.
    pub reason: String,
    /// Candidate ranking when one was computed (failover/switchover/refusals for lack of one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<Candidate>,
}

/// One ordered, verifiable step. `reconcile` checks the lock before each mutating step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// Redis: `CLIENT PAUSE <ms> WRITE` on the old master.
    PauseWrites { node: Addr, millis: u64 },
    /// Wait (bounded) until `node`'s offset reaches `of`'s offset.
    WaitCatchUp { node: Addr, of: Addr },
    /// `SLAVEOF NO ONE`, then poll until role is master (bounded).
    Promote { node: Addr },
    /// `CONFIG SET masterauth` (when the cluster has a password), `SLAVEOF master port [force]`,
    /// poll until link up (bounded); on timeout `SLAVEOF NO ONE` + `SLAVEOF … [force on Pika]` once.
    /// On Pika, `already master of others` is retried with backoff (bounded).
    Follow {
        node: Addr,
        master: Addr,
        force: bool,
        engine: Engine,
    },
    /// `CONFIG REWRITE`, so a restart keeps the new role. A failure is reported.
    Persist { node: Addr },
    /// Redis: `CLIENT UNPAUSE` on the old master (also done on failure paths).
    Unpause { node: Addr },
    /// Compare-and-set the new topology (epoch + 1 when the master changes).
    Record {
        master: Addr,
        replicas: Vec<Addr>,
        /// True when this is an automatic failover (sets `last_failover_at`).
        automatic_failover: bool,
    },
}

impl Step {
    /// Steps that send a mutating command to a node (the lock is checked before each).
    pub fn mutates(&self) -> bool {
        !matches!(self, Step::WaitCatchUp { .. } | Step::Record { .. })
    }
    /// The exact commands this step may send, for `plan` output (passwords shown as `<password>`).
    pub fn commands(&self, has_password: bool) -> Vec<String> {
        let _ = has_password;
        todo_commands(self, has_password)
    }
}

fn todo_commands(step: &Step, has_password: bool) -> Vec<String> {
    match step {
        Step::PauseWrites { node, millis } => vec![format!("{node}: CLIENT PAUSE {millis} WRITE")],
        Step::WaitCatchUp { node, of } => {
            vec![format!("{node}: poll INFO until offset >= offset of {of}")]
        }
        Step::Promote { node } => vec![
            format!("{node}: SLAVEOF NO ONE"),
            format!("{node}: poll INFO until role:master"),
        ],
        Step::Follow {
            node,
            master,
            force,
            engine,
        } => {
            let mut v = Vec::new();
            if has_password {
                v.push(format!("{node}: CONFIG SET masterauth <password>"));
            }
            let f = if *force { " force" } else { "" };
            v.push(format!(
                "{node}: SLAVEOF {} {}{f}",
                master.host, master.port
            ));
            v.push(format!("{node}: poll INFO until master_link_status:up"));
            let retry_force = if *engine == Engine::Pika {
                " force"
            } else {
                ""
            };
            v.push(format!(
                "{node}: on link timeout, once: SLAVEOF NO ONE; SLAVEOF {} {}{retry_force}",
                master.host, master.port
            ));
            v
        }
        Step::Persist { node } => vec![format!("{node}: CONFIG REWRITE")],
        Step::Unpause { node } => vec![format!("{node}: CLIENT UNPAUSE")],
        Step::Record { master, .. } => vec![format!(
            "coordinator: record master {master} (compare-and-set)"
        )],
    }
}

impl Plan {
    pub fn no_action(reason: impl Into<String>) -> Plan {
        Plan {
            action: Action::NoAction,
            reason: reason.into(),
            candidates: Vec::new(),
        }
    }
    pub fn refuse(reason: impl Into<String>, retryable: bool) -> Plan {
        Plan {
            action: Action::Refuse { retryable },
            reason: reason.into(),
            candidates: Vec::new(),
        }
    }
    /// Compile to ordered steps. `obs` supplies each node's engine (for `force`).
    pub fn steps(&self, obs: &Observation) -> Vec<Step> {
        let _ = obs;
        unimplemented_steps(self)
    }
}

fn unimplemented_steps(_plan: &Plan) -> Vec<Step> {
    Vec::new()
}

/// The decision. See the module docs and the table test for the rules.
pub fn decide(
    trigger: &Trigger,
    obs: &Observation,
    record: Option<&TopologyRecord>,
    policy: &Policy,
    gate: &Gate,
) -> Plan {
    let _ = (trigger, obs, record, policy, gate);
    Plan::refuse("decision rules not implemented yet", false)
}
