//! THE PURE CORE: `decide(trigger, observation, record, policy, gate) -> Plan`, and
//! [`Plan::steps`] → ordered [`Step`]s. No async, no clock (the caller passes `now` in the
//! [`Gate`]), no I/O. Every plan carries a stable reason sentence: it is logged, returned over
//! HTTP, and asserted in `tests/decide_table.rs`, so change wording only on purpose. Reasons
//! never contain secrets or timestamps (durations such as the cooldown are fine).
//!
//! # The rules, in the order they are applied
//!
//! **Preconditions.** If fewer nodes answered than `policy.min_observed`, refuse (retryable:
//! a later observation may do better). If the cluster is paused, automatic triggers do nothing;
//! manual ones (failover, switchover, demote) still run.
//!
//! **No record yet.** Manual triggers are refused: they need to know who the master is, and
//! the operator must say so with `pika-remedy record --cluster C --master host:port`. Automatic
//! triggers bootstrap the record only from a *clean* picture: exactly one reachable node claims
//! master and every other reachable node is a replica of exactly that address. The record then
//! names that master and all other configured nodes as replicas. Anything else (no master, two
//! masters, a replica of some other node) is refused with what was seen: we never guess.
//!
//! **With a record naming master M at epoch E.** M must be a configured node, else refuse.
//!
//! *Demote `node`* (manual): never the recorded master (that is a switchover). M must be
//! reachable and report master. A node already following M with its link up needs nothing;
//! an unreachable node is refused as retryable; otherwise it follows M (forced on Pika).
//!
//! *Switchover to `to`* (manual, planned): M must be reachable and report master (if it is dead
//! use failover). A named target must be a reachable replica following M with link up, not in
//! full sync or link error and eligible; the operator's choice overrides the soft exclusions
//! (never_promote, priority 0, lag: we wait for catch-up anyway) and the reason says so. Without a target the best candidate is
//! ranked as for a failover, but only replicas with link up qualify. `to == M` is a no-op.
//!
//! *Repair or fail over* (MasterDown, RoleMismatch, Periodic, and manual Failover):
//! - M reachable and master: the record is right and the cluster is repaired towards it (a flat
//!   topology: every replica follows M directly; chains are flattened), one
//!   action per reconcile. First any other node claiming master is demoted (the first in config
//!   order; the next reconcile takes the next): this is the restarted old master, which Pika
//!   cannot tell apart from the real one. Else replicas following another master (or none), and
//!   replicas of M whose link is in `Error` (Pika never leaves it by itself), are repointed.
//!   Else nothing to do: a MasterDown alert was a false alarm, other triggers see a converged
//!   topology, and a manual failover is refused (the master is healthy: use switchover).
//! - M reachable but a replica: someone changed the topology outside pika-remedy; refuse.
//! - M unreachable: if another node claims master, refuse (we cannot tell a split brain from a
//!   failover done by someone else). For automatic triggers only: if any replica still reports
//!   its link to M up, M is alive and only our view is broken, so do nothing; if the last
//!   automatic failover is more recent than the cooldown, refuse. Then rank the candidates.
//!
//! # Candidates
//! Every configured node except M is assessed. The first matching exclusion names it:
//! "unreachable"; "never_promote"; "priority 0" (config priority 0 or `slave_priority:0`);
//! "claims master"; "follows X, not the recorded master"; "not eligible for master election"
//! (Pika's `is_eligible_for_master_election:false`); "in full sync" (overall or any DB);
//! "link error" (overall or any DB); "missing DB dbN" (a Pika node lacking a DB that another
//! reachable Pika node has: promoting it would lose that DB and break the others' handshake).
//! Among the nodes left, the best offset is the maximum; a node further behind than
//! `policy.max_lag_bytes` is "behind the best by N bytes (limit L)", and a node without an
//! offset while others have one is "offset unknown". With the master dead, links are down:
//! a down link is *not* an exclusion (for a switchover it is: "link down"). The rest are ranked
//! by config priority (lower first), then offset (higher first), then address.
//! `Plan::candidates` lists the ranked ones first, then the excluded ones in config order.
//!
//! A manual failover to a named node overrides the soft exclusions (never_promote, priority 0,
//! lag, missing DB, unknown offset) and says so in the reason; it never overrides the hard ones
//! (unreachable, claims master, follows another master, not eligible, full sync, link error).
//! Without a candidate the plan is a refusal listing every node with its phrase. Otherwise the
//! best candidate is promoted and *all* other reachable nodes except M follow it, including the
//! excluded ones: they must not stay attached to nothing.
//!
//! # Steps
//! The record is written right after the promotion (and its `CONFIG REWRITE`), before any
//! repointing: if we crash mid-plan, the next reconcile sees the new record, finds the other
//! replicas following the old master, and repoints them (roll forward, never back).
//! - Failover: promote P, persist P, record P, then follow + persist for every repointed node.
//! - Switchover on Redis: `CLIENT PAUSE … WRITE` on M, wait for P to catch up, promote P,
//!   persist, record, M follows P, persist M, `CLIENT UNPAUSE` M, then the other replicas.
//! - Switchover on Pika: Pika has no write pause. We wait for P to catch up with M's offset,
//!   promote P, record, then demote M with `SLAVEOF P force` (its binlog may be ahead of P's).
//!   Writes M accepted between the catch-up and its demotion may be discarded by the forced
//!   full sync; operators should stop writers (or move the VIP) first.
//! - Demote: reachable replicas still attached to the node are repointed first (Pika refuses
//!   `SLAVEOF` on a node with connected slaves: "already master of others"), then the node
//!   follows the master, forced on Pika (an old master's binlog may be ahead or diverged).
//! - Repoint: each node follows, forced on Pika only when its link is in error, it claims
//!   master, or its binlog position is ahead of the new master's in some DB (an incremental
//!   sync would then end in `Error` or silently diverge). Chained replicas (`master&&slave`)
//!   are repointed after plain ones, so their children have left them first.
//! - `force` is never set for Redis (it rejects the extra argument), nor for unknown engines.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use std::time::Duration;

use crate::config::Policy;
use crate::model::{
    Addr, Engine, LinkState, NodeObservation, NodeStatus, Observation, Role, TopologyRecord,
};
use crate::node::commands::{Command, Dialect};

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
    /// The recorded master's replication offset the last time we saw it alive (the service's
    /// poller remembers it). With it, the lag limit is absolute, like Patroni's
    /// `maximum_lag_on_failover`: a candidate further than `max_lag_bytes` behind what the
    /// master had is excluded, so a failover can be refused for lag. `None` (e.g. the CLI,
    /// which has no history): lag is only measured against the best candidate.
    pub last_master_offset: Option<u64>,
}

/// Why each replica was or was not a promotion candidate, best first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    pub addr: Addr,
    /// `None` if eligible; otherwise why it was excluded (a stable phrase, e.g. "unreachable",
    /// "in full sync", "link error", "not eligible for master election", "never_promote",
    /// "priority 0", "behind the best by N bytes (limit M)", "missing DB db1"; see the module docs).
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
        /// `SLAVEOF NO ONE` first: the node already names `master` (an identical `SLAVEOF` is a
        /// silent no-op on Pika, even in a broken state).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        reset: bool,
    },
    /// `CONFIG REWRITE`, so a restart keeps the new role. A failure is reported.
    Persist { node: Addr },
    /// Redis: `CLIENT UNPAUSE` on the old master (also done on failure paths).
    Unpause { node: Addr },
    /// Pika 4.x switchover: `ACL SETUSER default -@write` on the old master, so no write is
    /// acknowledged by a node that is about to follow another (open connections included).
    FenceWrites { node: Addr },
    /// Pika 4.x: `ACL SETUSER default +@write`, once the fenced node follows the new master
    /// (or on the failure path, once the cluster is put back as it was).
    UnfenceWrites { node: Addr },
    /// Write-ahead: record (compare-and-set) that a failover to `promote` is starting, so a
    /// crash between the promotion and the final record rolls forward instead of needing an operator.
    Intent { promote: Addr },
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
        !matches!(
            self,
            Step::WaitCatchUp { .. } | Step::Record { .. } | Step::Intent { .. }
        )
    }

    /// The exact commands this step may send, for `plan` output (passwords shown as `<password>`).
    pub fn commands(&self, has_password: bool) -> Vec<String> {
        self.commands_in(has_password, &Dialect::default())
    }

    /// Like [`Step::commands`], with command names as the nodes know them under
    /// `rename-command` (`renames`: original -> renamed, see `ClusterConfig::renames`), so the
    /// plan shows what is really sent.
    pub fn commands_renamed(
        &self,
        has_password: bool,
        renames: &BTreeMap<String, String>,
    ) -> Vec<String> {
        self.commands_in(has_password, &Dialect::new(renames.clone()))
    }

    /// The plan's lines for this step: every command of [`Step::wire`], plus the polls and
    /// the one conditional retry the executor may add, all built by [`Dialect`].
    pub fn commands_in(&self, has_password: bool, d: &Dialect) -> Vec<String> {
        let mut v: Vec<String> = self
            .wire(has_password, d)
            .iter()
            .map(|(node, c)| format!("{node}: {c}"))
            .collect();
        let poll =
            |node: &Addr, what: String| format!("{node}: poll {} until {what}", d.name("INFO"));
        match self {
            Step::WaitCatchUp { node, of } => {
                v.push(poll(node, format!("offset >= offset of {of}")))
            }
            Step::Promote { node } => v.push(poll(node, "role:master".into())),
            Step::Follow {
                node,
                master,
                engine,
                ..
            } => {
                v.push(poll(node, "master_link_status:up".into()));
                // The one retry is forced on Pika even when the first try was not: an identical
                // SLAVEOF is a no-op there, and a link that did not come up usually means Error.
                v.push(format!(
                    "{node}: on link timeout, once: {}; {}",
                    d.promote(),
                    d.follow(master, *engine == Engine::Pika)
                ));
            }
            Step::Intent { promote } => v.push(format!(
                "coordinator: record intent \"failover to {promote} in progress\" (compare-and-set)"
            )),
            Step::Record {
                master, replicas, ..
            } => v.push(format!(
                "coordinator: record master {master}, replicas {} (compare-and-set)",
                join(replicas)
            )),
            _ => {}
        }
        v
    }

    /// The node commands this step sends when everything answers as planned, in order. The
    /// executor sends exactly these (plus, on a link timeout, the retry `commands` shows).
    pub fn wire(&self, has_password: bool, d: &Dialect) -> Vec<(Addr, Command)> {
        let on = |node: &Addr, c: Command| vec![(node.clone(), c)];
        match self {
            Step::PauseWrites { node, millis } => on(node, d.pause(Duration::from_millis(*millis))),
            Step::Promote { node } => on(node, d.promote()),
            Step::Follow {
                node,
                master,
                force,
                reset,
                ..
            } => {
                let mut v = Vec::new();
                if has_password {
                    v.push((node.clone(), d.masterauth()));
                }
                if *reset {
                    v.push((node.clone(), d.promote()));
                }
                v.push((node.clone(), d.follow(master, *force)));
                v
            }
            Step::Persist { node } => on(node, d.rewrite()),
            Step::Unpause { node } => on(node, d.unpause()),
            Step::FenceWrites { node } => on(node, d.fence(true)),
            Step::UnfenceWrites { node } => on(node, d.fence(false)),
            Step::WaitCatchUp { .. } | Step::Intent { .. } | Step::Record { .. } => Vec::new(),
        }
    }
}

impl std::fmt::Display for Step {
    /// One short line per step, for operator output and failure messages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = match self {
            Step::PauseWrites { node, millis } => format!("pause writes on {node} for {millis} ms"),
            Step::WaitCatchUp { node, of } => format!("wait for {node} to catch up with {of}"),
            Step::Promote { node } => format!("promote {node}"),
            Step::Follow {
                node,
                master,
                force,
                ..
            } => {
                format!(
                    "{node} follows {master}{}",
                    if *force { " (force)" } else { "" }
                )
            }
            Step::Persist { node } => format!("CONFIG REWRITE {node}"),
            Step::Unpause { node } => format!("unpause {node}"),
            Step::FenceWrites { node } => format!("fence writes on {node}"),
            Step::UnfenceWrites { node } => format!("unfence writes on {node}"),
            Step::Record { master, .. } => format!("record master {master}"),
            Step::Intent { promote } => format!("record intent to promote {promote}"),
        };
        f.write_str(&text)
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

    fn with(action: Action, reason: impl Into<String>) -> Plan {
        Plan {
            action,
            reason: reason.into(),
            candidates: Vec::new(),
        }
    }

    fn ranked(mut self, candidates: Vec<Candidate>) -> Plan {
        self.candidates = candidates;
        self
    }

    /// Compile to ordered steps. `obs` supplies each node's engine and replication state (for
    /// `force` and for the children of a demoted node); `policy` the switchover pause.
    pub fn steps(&self, obs: &Observation, policy: &Policy) -> Vec<Step> {
        let mut steps = Vec::new();
        match &self.action {
            Action::NoAction | Action::Refuse { .. } => {}
            Action::Bootstrap { master, replicas } => steps.push(Step::Record {
                master: master.clone(),
                replicas: replicas.clone(),
                automatic_failover: false,
            }),
            Action::Failover {
                promote,
                repoint,
                automatic,
                ..
            } => {
                steps.push(Step::Intent {
                    promote: promote.clone(),
                });
                promote_and_record(&mut steps, obs, promote, *automatic);
                for node in repoint {
                    let force = needs_force(obs, node, promote);
                    follow_and_persist(&mut steps, obs, node, promote, force);
                }
            }
            Action::Switchover {
                promote,
                repoint,
                old_master,
            } => {
                if engine_of(obs, old_master) == Engine::Redis {
                    redis_switchover(&mut steps, obs, policy, promote, repoint, old_master);
                } else {
                    pika_switchover(&mut steps, obs, promote, repoint, old_master);
                }
            }
            Action::Demote { node, to } => {
                for child in followers_of(obs, node) {
                    let force = needs_force(obs, child, to);
                    follow_and_persist(&mut steps, obs, child, to, force);
                }
                follow_and_persist(&mut steps, obs, node, to, true);
            }
            Action::Repoint { nodes, to } => {
                for node in nodes {
                    let force = needs_force(obs, node, to);
                    follow_and_persist(&mut steps, obs, node, to, force);
                }
            }
        }
        children_first(steps, obs)
    }
}

/// Pika refuses `SLAVEOF` while slaves are attached (`already master of others`): before a
/// Pika node follows anyone, the reachable configured nodes that still follow it, and that the
/// plan has not moved or promoted yet, follow its new master first. Their own later follow of
/// that master (and its persist) is then dropped, so every move is one step of the plan.
fn children_first(steps: Vec<Step>, obs: &Observation) -> Vec<Step> {
    let mut out = Vec::with_capacity(steps.len());
    let mut handled: BTreeSet<Addr> = BTreeSet::new();
    let mut early: BTreeMap<Addr, Addr> = BTreeMap::new();
    let mut skip_persist_of: Option<Addr> = None;
    for step in steps {
        match &step {
            Step::Persist { node } if skip_persist_of.as_ref() == Some(node) => {
                skip_persist_of = None;
                continue;
            }
            Step::Follow { node, master, .. } if early.get(node) == Some(master) => {
                skip_persist_of = Some(node.clone());
                continue;
            }
            Step::Follow {
                node,
                master,
                engine: Engine::Pika,
                ..
            } => move_children(&mut out, obs, node, master, &mut handled, &mut early),
            _ => {}
        }
        skip_persist_of = None;
        if let Step::Follow { node, .. } | Step::Promote { node } = &step {
            handled.insert(node.clone());
        }
        out.push(step);
    }
    out
}

/// Move the unhandled reachable followers of `node` to `master`, each one's own followers
/// first (a chain `a <- b <- c` moves `c`, then `b`). Bounded by the node count.
fn move_children(
    out: &mut Vec<Step>,
    obs: &Observation,
    node: &Addr,
    master: &Addr,
    handled: &mut BTreeSet<Addr>,
    early: &mut BTreeMap<Addr, Addr>,
) {
    handled.insert(node.clone());
    for child in followers_of(obs, node) {
        if child == master || handled.contains(child) {
            continue;
        }
        if engine_of(obs, child) == Engine::Pika {
            move_children(out, obs, child, master, handled, early);
        }
        let force = needs_force(obs, child, master);
        follow_and_persist(out, obs, child, master, force);
        handled.insert(child.clone());
        early.insert(child.clone(), master.clone());
    }
}

/// Redis: writes paused (`CLIENT PAUSE … WRITE`, which lifts itself) while the target catches
/// up; the old master follows right after the record, then is unpaused.
fn redis_switchover(
    steps: &mut Vec<Step>,
    obs: &Observation,
    policy: &Policy,
    promote: &Addr,
    repoint: &[Addr],
    old_master: &Addr,
) {
    steps.push(Step::PauseWrites {
        node: old_master.clone(),
        millis: u64::try_from(policy.switchover_pause.as_millis()).unwrap_or(u64::MAX),
    });
    steps.push(Step::WaitCatchUp {
        node: promote.clone(),
        of: old_master.clone(),
    });
    promote_and_record(steps, obs, promote, false);
    follow_and_persist(steps, obs, old_master, promote, false);
    steps.push(Step::Unpause {
        node: old_master.clone(),
    });
    for node in repoint {
        let force = needs_force(obs, node, promote);
        follow_and_persist(steps, obs, node, promote, force);
    }
}

/// Pika: the old master answers `already master of others` to `SLAVEOF` while any slave is
/// attached (and ~2.7 s after the last left), so every other slave moves to the new master
/// BEFORE the old master is demoted. On Pika 4.x the old master's writes are fenced (ACL) for
/// the whole switchover, so its binlog cannot get ahead of the new master's and it can follow
/// without `force` (no full resync; the follow step still forces once if the link stays down).
/// Older Pika has no fence: the old master may be ahead, so it is forced.
fn pika_switchover(
    steps: &mut Vec<Step>,
    obs: &Observation,
    promote: &Addr,
    repoint: &[Addr],
    old_master: &Addr,
) {
    let fence = obs
        .node(old_master)
        .and_then(NodeObservation::reachable)
        .is_some_and(NodeStatus::can_fence_writes);
    if fence {
        steps.push(Step::FenceWrites {
            node: old_master.clone(),
        });
    }
    steps.push(Step::WaitCatchUp {
        node: promote.clone(),
        of: old_master.clone(),
    });
    promote_and_record(steps, obs, promote, false);
    for node in repoint {
        let force = needs_force(obs, node, promote);
        follow_and_persist(steps, obs, node, promote, force);
    }
    follow_and_persist(steps, obs, old_master, promote, !fence);
    if fence {
        steps.push(Step::UnfenceWrites {
            node: old_master.clone(),
        });
    }
}

/// Promote, persist, and record right away, so a crash after this point rolls forward.
fn promote_and_record(steps: &mut Vec<Step>, obs: &Observation, promote: &Addr, automatic: bool) {
    steps.push(Step::Promote {
        node: promote.clone(),
    });
    steps.push(Step::Persist {
        node: promote.clone(),
    });
    steps.push(Step::Record {
        master: promote.clone(),
        replicas: obs
            .nodes
            .iter()
            .filter(|n| &n.addr != promote)
            .map(|n| n.addr.clone())
            .collect(),
        automatic_failover: automatic,
    });
}

/// `force` is only ever honoured for Pika: Redis rejects the extra argument.
fn follow_and_persist(
    steps: &mut Vec<Step>,
    obs: &Observation,
    node: &Addr,
    to: &Addr,
    force_on_pika: bool,
) {
    let engine = engine_of(obs, node);
    let reset = obs
        .node(node)
        .and_then(NodeObservation::reachable)
        .is_some_and(|s| s.role.is_replica() && s.master.as_ref() == Some(to));
    steps.push(Step::Follow {
        node: node.clone(),
        master: to.clone(),
        force: force_on_pika && engine == Engine::Pika,
        engine,
        reset,
    });
    steps.push(Step::Persist { node: node.clone() });
}

fn engine_of(obs: &Observation, addr: &Addr) -> Engine {
    obs.node(addr)
        .and_then(NodeObservation::reachable)
        .map(|s| s.engine)
        .unwrap_or(Engine::Unknown)
}

/// Whether a Pika node needs `SLAVEOF … force` to follow `to`: its link is in error (Pika never
/// retries), it claims master (diverged history), or some DB's binlog is ahead of `to`'s (an
/// incremental sync would fail with "offset larger" or silently diverge).
fn needs_force(obs: &Observation, node: &Addr, to: &Addr) -> bool {
    let Some(s) = obs.node(node).and_then(NodeObservation::reachable) else {
        return false;
    };
    if s.engine != Engine::Pika {
        return false;
    }
    if s.role == Role::Master || has_link_error(s) {
        return true;
    }
    let Some(target) = obs.node(to).and_then(NodeObservation::reachable) else {
        return false;
    };
    s.db_offsets
        .iter()
        .any(|(db, pos)| target.db_offsets.get(db).is_some_and(|t| pos > t))
}

/// Reachable replicas attached to `node`, plain replicas before chained ones.
fn followers_of<'a>(obs: &'a Observation, node: &Addr) -> Vec<&'a Addr> {
    let list: Vec<&NodeObservation> = obs
        .nodes
        .iter()
        .filter(|n| &n.addr != node)
        .filter(|n| matches!(n.reachable(), Some(s) if s.role.is_replica() && s.master.as_ref() == Some(node)))
        .collect();
    chained_last(list)
}

/// Plain replicas first, then chained (`master&&slave`) ones and anything else, each group in
/// config order: a chained node's children must leave it before Pika lets it follow anyone.
fn chained_last(nodes: Vec<&NodeObservation>) -> Vec<&Addr> {
    let (plain, rest): (Vec<_>, Vec<_>) = nodes
        .into_iter()
        .partition(|n| matches!(n.reachable(), Some(s) if s.role == Role::Slave));
    plain.into_iter().chain(rest).map(|n| &n.addr).collect()
}

fn has_link_error(s: &NodeStatus) -> bool {
    s.link == Some(LinkState::Error) || s.db_links.values().any(|l| *l == LinkState::Error)
}

fn in_full_sync(s: &NodeStatus) -> bool {
    s.link == Some(LinkState::FullSync) || s.db_links.values().any(|l| *l == LinkState::FullSync)
}

fn join<T: std::fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn master_of(s: &NodeStatus) -> String {
    s.master
        .as_ref()
        .map_or_else(|| "no master".to_string(), ToString::to_string)
}

fn offset_text(offset: Option<u64>) -> String {
    offset.map_or_else(|| "offset unknown".to_string(), |o| format!("offset {o}"))
}

fn record_command(cluster: &str) -> String {
    format!("pika-remedy record --cluster {cluster} --master host:port")
}

/// Why a node may not be promoted. Hard exclusions are never overridden; soft ones yield to an
/// operator who names the node.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Exclusion {
    Unreachable,
    NeverPromote,
    PriorityZero,
    ClaimsMaster,
    FollowsOther(String),
    NotEligible,
    FullSync,
    LinkError,
    /// Switchover only: the candidate must be replicating now.
    LinkNotUp(&'static str),
    MissingDb(String),
    /// Pika: its ReplicationID differs from the one the other nodes share.
    ReplidDiffers(String),
    /// Pika: empty ReplicationID while the others have one.
    ReplidEmpty,
    Behind {
        by: u64,
        limit: u64,
    },
    BehindMaster {
        by: u64,
        limit: u64,
    },
    OffsetUnknown,
}

impl Exclusion {
    fn phrase(&self) -> String {
        match self {
            Exclusion::Unreachable => "unreachable".into(),
            Exclusion::NeverPromote => "never_promote".into(),
            Exclusion::PriorityZero => "priority 0".into(),
            Exclusion::ClaimsMaster => "claims master".into(),
            Exclusion::FollowsOther(x) => format!("follows {x}, not the recorded master"),
            Exclusion::NotEligible => "not eligible for master election".into(),
            Exclusion::FullSync => "in full sync".into(),
            Exclusion::LinkError => "link error".into(),
            Exclusion::LinkNotUp(state) => format!("link {state}"),
            Exclusion::MissingDb(db) => format!("missing DB {db}"),
            Exclusion::ReplidDiffers(id) => {
                format!(
                    "ReplicationID {} differs from the other nodes'",
                    short_id(id)
                )
            }
            Exclusion::ReplidEmpty => "empty ReplicationID while the other nodes have one".into(),
            Exclusion::Behind { by, limit } => {
                format!("behind the best by {by} bytes (limit {limit})")
            }
            Exclusion::BehindMaster { by, limit } => {
                format!("behind the master's last seen offset by {by} bytes (limit {limit})")
            }
            Exclusion::OffsetUnknown => "offset unknown".into(),
        }
    }

    fn is_hard(&self) -> bool {
        matches!(
            self,
            Exclusion::Unreachable
                | Exclusion::ClaimsMaster
                | Exclusion::FollowsOther(_)
                | Exclusion::NotEligible
                | Exclusion::FullSync
                | Exclusion::LinkError
                | Exclusion::LinkNotUp(_)
        )
    }
}

/// The ReplicationID that a strict plurality of reachable Pika nodes carry, if any. A tie
/// means we cannot tell which ID is the cluster's, so nothing is excluded for it. Redis is left
/// out: its `master_replid` changes on promotion by design.
fn shared_pika_replid(obs: &Observation) -> Option<String> {
    let mut counts: BTreeMap<&String, usize> = BTreeMap::new();
    for s in obs.nodes.iter().filter_map(NodeObservation::reachable) {
        if s.engine == Engine::Pika {
            if let Some(r) = &s.replid {
                *counts.entry(r).or_default() += 1;
            }
        }
    }
    let best = counts.values().copied().max()?;
    let mut leaders = counts.into_iter().filter(|(_, n)| *n == best);
    let leader = leaders.next()?;
    match leaders.next() {
        Some(_) => None,
        None => Some(leader.0.clone()),
    }
}

fn short_id(id: &str) -> String {
    if id.len() > 12 {
        format!("{}…", &id[..12])
    } else {
        id.to_string()
    }
}

/// One node other than the recorded master, with every exclusion that applies, in rule order.
struct Assessed<'a> {
    node: &'a NodeObservation,
    offset: Option<u64>,
    exclusions: Vec<Exclusion>,
}

impl Assessed<'_> {
    fn candidate(&self) -> Candidate {
        Candidate {
            addr: self.node.addr.clone(),
            excluded: self.exclusions.first().map(Exclusion::phrase),
            priority: self.node.priority,
            offset: self.offset,
        }
    }
}

/// Assess and rank every configured node except `master`. Returns the assessments in the
/// `Plan::candidates` order: eligible ones best first, then excluded ones in config order.
fn assess<'a>(
    obs: &'a Observation,
    master: &Addr,
    policy: &Policy,
    need_link_up: bool,
    last_master_offset: Option<u64>,
) -> Vec<Assessed<'a>> {
    // DBs present anywhere in the cluster (Pika only; Redis has no per-DB view).
    let all_dbs: BTreeSet<&String> = obs
        .nodes
        .iter()
        .filter_map(NodeObservation::reachable)
        .filter(|s| s.engine == Engine::Pika)
        .flat_map(|s| s.db_offsets.keys().chain(s.db_links.keys()))
        .collect();

    let shared_replid = shared_pika_replid(obs);

    let mut assessed: Vec<Assessed> = obs
        .nodes
        .iter()
        .filter(|n| &n.addr != master)
        .map(|node| {
            let status = node.reachable();
            let mut exclusions = Vec::new();
            let Some(s) = status else {
                return Assessed {
                    node,
                    offset: None,
                    exclusions: vec![Exclusion::Unreachable],
                };
            };
            if node.never_promote {
                exclusions.push(Exclusion::NeverPromote);
            }
            if node.priority == 0 || s.priority == Some(0) {
                exclusions.push(Exclusion::PriorityZero);
            }
            if s.role == Role::Master {
                exclusions.push(Exclusion::ClaimsMaster);
            } else if s.master.as_ref() != Some(master) {
                exclusions.push(Exclusion::FollowsOther(master_of(s)));
            }
            if s.eligible == Some(false) {
                exclusions.push(Exclusion::NotEligible);
            }
            if in_full_sync(s) {
                exclusions.push(Exclusion::FullSync);
            }
            if has_link_error(s) {
                exclusions.push(Exclusion::LinkError);
            }
            if need_link_up && s.role != Role::Master && s.link != Some(LinkState::Up) {
                exclusions.push(Exclusion::LinkNotUp(
                    s.link.map_or("unknown", LinkState::as_str),
                ));
            }
            if s.engine == Engine::Pika {
                let has: BTreeSet<&String> = s.db_offsets.keys().chain(s.db_links.keys()).collect();
                if let Some(db) = all_dbs.iter().find(|db| !has.contains(*db)) {
                    exclusions.push(Exclusion::MissingDb((*db).clone()));
                }
                // Pika refuses a slave whose ReplicationID differs from its master's, with no
                // retry; and a promoted node with an empty ID mints a new one at its first
                // slave, locking out every replica that still carries the cluster's ID.
                if let Some(shared) = &shared_replid {
                    match &s.replid {
                        Some(r) if r != shared => {
                            exclusions.push(Exclusion::ReplidDiffers(r.clone()))
                        }
                        None => exclusions.push(Exclusion::ReplidEmpty),
                        Some(_) => {}
                    }
                }
            }
            Assessed {
                node,
                offset: s.offset,
                exclusions,
            }
        })
        .collect();

    // Lag is measured against the best of the nodes still in the race, not against excluded ones.
    let in_race = |a: &Assessed| a.exclusions.is_empty();
    let best = assessed
        .iter()
        .filter(|a| in_race(a))
        .filter_map(|a| a.offset)
        .max();
    if let Some(best) = best {
        for a in assessed.iter_mut().filter(|a| a.exclusions.is_empty()) {
            match a.offset {
                Some(o)
                    if last_master_offset
                        .is_some_and(|m| m.saturating_sub(o) > policy.max_lag_bytes) =>
                {
                    a.exclusions.push(Exclusion::BehindMaster {
                        by: last_master_offset.unwrap_or(o).saturating_sub(o),
                        limit: policy.max_lag_bytes,
                    })
                }
                Some(o) if best - o > policy.max_lag_bytes => {
                    a.exclusions.push(Exclusion::Behind {
                        by: best - o,
                        limit: policy.max_lag_bytes,
                    })
                }
                Some(_) => {}
                None => a.exclusions.push(Exclusion::OffsetUnknown),
            }
        }
    }

    let (mut eligible, excluded): (Vec<_>, Vec<_>) =
        assessed.into_iter().partition(|a| a.exclusions.is_empty());
    eligible.sort_by(|a, b| {
        a.node
            .priority
            .cmp(&b.node.priority)
            .then_with(|| b.offset.cmp(&a.offset))
            .then_with(|| a.node.addr.cmp(&b.node.addr))
    });
    eligible.extend(excluded);
    eligible
}

fn no_candidate_reason(assessed: &[Assessed]) -> String {
    let list = assessed
        .iter()
        .map(|a| {
            let why = a
                .exclusions
                .first()
                .map_or_else(String::new, Exclusion::phrase);
            format!("{}: {why}", a.node.addr)
        })
        .collect::<Vec<_>>()
        .join("; ");
    if list.is_empty() {
        "no promotable replica: no other node is configured".into()
    } else {
        format!("no promotable replica: {list}")
    }
}

/// The decision. See the module docs for the rules and the table test for examples.
pub fn decide(
    trigger: &Trigger,
    obs: &Observation,
    record: Option<&TopologyRecord>,
    policy: &Policy,
    gate: &Gate,
) -> Plan {
    let answered = obs.reachable_count();
    if answered < policy.min_observed {
        return Plan::refuse(
            format!(
                "not enough observations: {answered} of {} nodes answered (need {})",
                obs.nodes.len(),
                policy.min_observed
            ),
            true,
        );
    }
    if gate.paused && !trigger.is_manual() {
        return Plan::no_action("cluster is paused; no automatic action");
    }
    let Some(rec) = record else {
        return without_record(trigger, obs);
    };
    let Some(master) = obs.node(&rec.master) else {
        return Plan::refuse(
            format!(
                "recorded master {} is not a configured node of cluster {}; fix the config or re-record the master",
                rec.master, obs.cluster
            ),
            false,
        );
    };
    let ctx = Ctx {
        obs,
        rec,
        master,
        policy,
        gate,
    };
    match trigger {
        Trigger::Demote { node } => ctx.demote(node),
        Trigger::Switchover { to } => ctx.switchover(to.as_ref()),
        Trigger::Failover { to } => ctx.repair_or_failover(trigger, Some(to.as_ref())),
        Trigger::MasterDown | Trigger::RoleMismatch | Trigger::Periodic => {
            ctx.repair_or_failover(trigger, None)
        }
    }
}

/// No record: bootstrap only from an unambiguous picture; never guess.
fn without_record(trigger: &Trigger, obs: &Observation) -> Plan {
    let c = &obs.cluster;
    if trigger.is_manual() {
        return Plan::refuse(
            format!(
                "no topology record for cluster {c}; record the current master first: {}",
                record_command(c)
            ),
            false,
        );
    }
    let masters = obs.claiming_master();
    let seen = match masters.as_slice() {
        [] => "no node claims master".to_string(),
        [m] => {
            let stray = obs.nodes.iter().find(|n| {
                &&n.addr != m && matches!(n.reachable(), Some(s) if !(s.role.is_replica() && s.master.as_ref() == Some(*m)))
            });
            match stray.and_then(|n| n.reachable().map(|s| (&n.addr, s))) {
                None => {
                    let replicas: Vec<Addr> = obs
                        .nodes
                        .iter()
                        .filter(|n| &&n.addr != m)
                        .map(|n| n.addr.clone())
                        .collect();
                    return Plan::with(
                        Action::Bootstrap {
                            master: (*m).clone(),
                            replicas,
                        },
                        format!(
                            "no topology record for cluster {c}; {m} is the only node claiming master and every reachable replica follows it; recording it"
                        ),
                    );
                }
                Some((addr, s)) => format!("{m} claims master but {addr} follows {}", master_of(s)),
            }
        }
        many => format!("{} nodes claim master ({})", many.len(), join(many)),
    };
    Plan::refuse(
        format!(
            "no topology record for cluster {c} and {seen}; not guessing: record the master with {}",
            record_command(c)
        ),
        false,
    )
}

struct Ctx<'a> {
    obs: &'a Observation,
    rec: &'a TopologyRecord,
    /// The recorded master's observation (it is a configured node).
    master: &'a NodeObservation,
    policy: &'a Policy,
    gate: &'a Gate,
}

impl Ctx<'_> {
    fn m(&self) -> &Addr {
        &self.rec.master
    }

    /// The recorded master's status if it is reachable and reports master.
    fn healthy_master(&self) -> Option<&NodeStatus> {
        self.master.reachable().filter(|s| s.role == Role::Master)
    }

    /// Why the recorded master cannot serve as the master right now.
    fn master_problem(&self) -> String {
        match self.master.reachable() {
            None => format!("recorded master {} is unreachable", self.m()),
            Some(s) => format!(
                "recorded master {} reports role {} (of {})",
                self.m(),
                s.role.as_str(),
                master_of(s)
            ),
        }
    }

    fn not_configured(&self, node: &Addr) -> Plan {
        Plan::refuse(
            format!(
                "{node} is not a configured node of cluster {}",
                self.obs.cluster
            ),
            false,
        )
    }

    fn demote(&self, node: &Addr) -> Plan {
        let m = self.m();
        if node == m {
            return Plan::refuse(
                format!("cannot demote the recorded master {m}; use switchover"),
                false,
            );
        }
        let Some(target) = self.obs.node(node) else {
            return self.not_configured(node);
        };
        if self.healthy_master().is_none() {
            return Plan::refuse(
                format!("{}; cannot demote {node} to it", self.master_problem()),
                false,
            );
        }
        let Some(s) = target.reachable() else {
            return Plan::refuse(format!("{node} is unreachable; cannot demote it now"), true);
        };
        if s.follows_with_link_up(m) {
            return Plan::no_action(format!(
                "{node} already follows recorded master {m} with link up"
            ));
        }
        Plan::with(
            Action::Demote {
                node: node.clone(),
                to: m.clone(),
            },
            format!(
                "operator asked to demote {node}; it will follow recorded master {m} (epoch {})",
                self.rec.epoch
            ),
        )
    }

    fn switchover(&self, to: Option<&Addr>) -> Plan {
        let m = self.m();
        if self.healthy_master().is_none() {
            let hint = if self.master.reachable().is_none() {
                "switchover needs a healthy master; use failover"
            } else {
                "topology changed outside pika-remedy; operator needed"
            };
            return Plan::refuse(format!("{}; {hint}", self.master_problem()), false);
        }
        if to == Some(m) {
            return Plan::no_action(format!("{m} is already the recorded master"));
        }
        if let Some(to) = to {
            if self.obs.node(to).is_none() {
                return self.not_configured(to);
            }
        }
        let assessed = assess(self.obs, m, self.policy, true, None);
        let candidates: Vec<Candidate> = assessed.iter().map(Assessed::candidate).collect();
        let chosen = match to {
            Some(to) => {
                let Some(a) = assessed.iter().find(|a| &a.node.addr == to) else {
                    return self.not_configured(to);
                };
                if let Some(hard) = a.exclusions.iter().find(|e| e.is_hard()) {
                    return Plan::refuse(
                        format!("cannot switch over to {to}: {}", hard.phrase()),
                        false,
                    )
                    .ranked(candidates);
                }
                a
            }
            None => match assessed.first().filter(|a| a.exclusions.is_empty()) {
                Some(a) => a,
                None => {
                    return Plan::refuse(no_candidate_reason(&assessed), false).ranked(candidates)
                }
            },
        };
        let p = &chosen.node.addr;
        let mut reason = format!(
            "operator requested switchover from {m} to {p} (priority {}, {})",
            chosen.node.priority,
            offset_text(chosen.offset)
        );
        // Only a named target can carry (soft) exclusions here.
        if !chosen.exclusions.is_empty() {
            let phrases: Vec<String> = chosen.exclusions.iter().map(Exclusion::phrase).collect();
            reason.push_str(&format!("; operator override of: {}", phrases.join(", ")));
        }
        Plan::with(
            Action::Switchover {
                promote: p.clone(),
                repoint: self.others_reachable(p),
                old_master: m.clone(),
            },
            reason,
        )
        .ranked(candidates)
    }

    /// Reachable nodes other than the recorded master and `promote`, plain replicas first.
    fn others_reachable(&self, promote: &Addr) -> Vec<Addr> {
        let list: Vec<&NodeObservation> = self
            .obs
            .nodes
            .iter()
            .filter(|n| &n.addr != self.m() && &n.addr != promote && n.status.is_ok())
            .collect();
        chained_last(list).into_iter().cloned().collect()
    }

    /// `manual` is `Some(target)` for an operator failover, `None` for automatic triggers.
    fn repair_or_failover(&self, trigger: &Trigger, manual: Option<Option<&Addr>>) -> Plan {
        let m = self.m();
        match self.master.reachable() {
            Some(s) if s.role == Role::Master => self.repair(trigger, manual.is_some()),
            Some(_) => Plan::refuse(
                format!(
                    "{}; topology changed outside pika-remedy; operator needed",
                    self.master_problem()
                ),
                false,
            ),
            None => {
                let claiming = self.obs.claiming_master();
                if let (Some(p), [x]) = (&self.rec.pending, claiming.as_slice()) {
                    if p == *x {
                        return self.complete_failover(x, manual.is_none());
                    }
                }
                if let Some(x) = claiming.first() {
                    return Plan::refuse(
                        format!("recorded master {m} is unreachable while {x} claims master; operator needed"),
                        false,
                    );
                }
                if manual.is_none() {
                    let sees =
                        self.obs.nodes.iter().find(
                            |n| matches!(n.reachable(), Some(s) if s.follows_with_link_up(m)),
                        );
                    if let Some(r) = sees {
                        return Plan::no_action(format!(
                            "recorded master {m} is unreachable from here, but {} still reports its link up; not failing over on our own view",
                            r.addr
                        ));
                    }
                    if let Some(t) = self.rec.last_failover_at {
                        let cooldown = self.policy.cooldown.as_secs();
                        if self.gate.now < t.saturating_add(cooldown) {
                            return Plan::refuse(
                                format!(
                                    "cooldown: last automatic failover {}s ago, cooldown {cooldown}s",
                                    self.gate.now.saturating_sub(t)
                                ),
                                false,
                            );
                        }
                    }
                }
                self.failover(manual)
            }
        }
    }

    /// The recorded master is healthy: bring the rest of the cluster in line, one action at a time.
    fn repair(&self, trigger: &Trigger, manual: bool) -> Plan {
        let m = self.m();
        let epoch = self.rec.epoch;
        let others = || self.obs.nodes.iter().filter(move |n| &n.addr != m);

        if let Some(x) =
            others().find(|n| matches!(n.reachable(), Some(s) if s.role == Role::Master))
        {
            let x = &x.addr;
            let children = followers_of(self.obs, x);
            let mut reason = format!("{x} claims master while the record names {m} at epoch {epoch}; demoting {x} to follow {m}");
            if !children.is_empty() {
                reason.push_str(&format!(
                    "; its replicas {} are repointed first",
                    join(&children)
                ));
            }
            return Plan::with(
                Action::Demote {
                    node: x.clone(),
                    to: m.clone(),
                },
                reason,
            );
        }

        let stray: Vec<(&NodeObservation, String)> = others()
            .filter_map(|n| {
                let s = n.reachable()?;
                if !s.role.is_replica() {
                    return None;
                }
                if s.master.as_ref() != Some(m) {
                    Some((n, format!("{} follows {}", n.addr, master_of(s))))
                } else if has_link_error(s) {
                    Some((n, format!("{} has a replication link error", n.addr)))
                } else {
                    None
                }
            })
            .collect();
        if !stray.is_empty() {
            let why = stray
                .iter()
                .map(|(_, w)| w.as_str())
                .collect::<Vec<_>>()
                .join("; ");
            let nodes = chained_last(stray.iter().map(|(n, _)| *n).collect());
            return Plan::with(
                Action::Repoint {
                    nodes: nodes.into_iter().cloned().collect(),
                    to: m.clone(),
                },
                format!("repointing to recorded master {m} (epoch {epoch}): {why}"),
            );
        }

        if manual {
            Plan::refuse(
                format!("recorded master {m} is healthy; use switchover"),
                false,
            )
        } else if *trigger == Trigger::MasterDown {
            Plan::no_action(format!(
                "recorded master {m} is reachable and reports role master; no failover (false alarm)"
            ))
        } else if let Some(p) = &self.rec.pending {
            Plan::with(
                Action::Bootstrap {
                    master: m.clone(),
                    replicas: self.rec.replicas.clone(),
                },
                format!("recorded master {m} is healthy; clearing a stale failover intent to {p}"),
            )
        } else {
            Plan::no_action(format!("topology converged on {m} at epoch {epoch}"))
        }
    }

    /// A failover to `x` was started (its intent is recorded) and `x` claims master: the
    /// holder died between the promotion and the final record. Finish it (promotion is
    /// idempotent) instead of asking an operator.
    fn complete_failover(&self, x: &Addr, automatic: bool) -> Plan {
        let m = self.m();
        Plan::with(
            Action::Failover {
                promote: x.clone(),
                repoint: self.others_reachable(x),
                old_master: m.clone(),
                automatic,
            },
            format!(
                "a failover from {m} to {x} was started (intent recorded) and {x} claims master; completing it"
            ),
        )
    }

    /// The recorded master is unreachable and nothing vetoed a failover: pick and promote.
    fn failover(&self, manual: Option<Option<&Addr>>) -> Plan {
        let m = self.m();
        let assessed = assess(
            self.obs,
            m,
            self.policy,
            false,
            self.gate.last_master_offset,
        );
        let candidates: Vec<Candidate> = assessed.iter().map(Assessed::candidate).collect();
        let (chosen, overridden) = match manual.flatten() {
            Some(to) => {
                if to == m {
                    return Plan::refuse(
                        format!("cannot fail over to the recorded master {m}"),
                        false,
                    );
                }
                let Some(a) = assessed.iter().find(|a| &a.node.addr == to) else {
                    return self.not_configured(to);
                };
                if let Some(hard) = a.exclusions.iter().find(|e| e.is_hard()) {
                    return Plan::refuse(
                        format!("cannot fail over to {to}: {}", hard.phrase()),
                        false,
                    )
                    .ranked(candidates);
                }
                (
                    a,
                    a.exclusions
                        .iter()
                        .map(Exclusion::phrase)
                        .collect::<Vec<_>>(),
                )
            }
            None => match assessed.first().filter(|a| a.exclusions.is_empty()) {
                Some(a) => (a, Vec::new()),
                None => {
                    return Plan::refuse(no_candidate_reason(&assessed), false).ranked(candidates)
                }
            },
        };
        let p = &chosen.node.addr;
        let what = format!(
            "promoting {p} (priority {}, {})",
            chosen.node.priority,
            offset_text(chosen.offset)
        );
        let mut reason = if manual.is_some() {
            format!("operator requested failover; recorded master {m} is unreachable; {what}")
        } else {
            format!("recorded master {m} is unreachable and no replica sees it; {what}")
        };
        if !overridden.is_empty() {
            reason.push_str(&format!(
                "; operator override of: {}",
                overridden.join(", ")
            ));
        }
        Plan::with(
            Action::Failover {
                promote: p.clone(),
                repoint: self.others_reachable(p),
                old_master: m.clone(),
                automatic: manual.is_none(),
            },
            reason,
        )
        .ranked(candidates)
    }
}
