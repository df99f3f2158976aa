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
//!   cannot tell apart from the real one. Else replicas following another master (or none),
//!   replicas of M whose link is in `Error` (Pika never leaves it by itself), and Pika replicas
//!   of M whose link is not up and whose ReplicationID conflicts with M's (Pika refuses their
//!   MetaSync for good and INFO shows only the link down), are repointed.
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
//! a down link is *not* an exclusion (for a switchover it is: "link down"). But Pika forgets a
//! link error once its master dies (`db0:error` becomes `db0:no_connect`), so a failover also
//! uses what the service saw while the master lived ([`Gate::links_before`], from its poller):
//! a node that was then in link error or full sync (in the last poll that saw the master
//! alive), or not linked to the master (down, connecting, following another node or none) in
//! the last two such polls in a row (one alone may be the poll that raced the death), is "was
//! not linked to the master before it died: db0 link error" (or "…: in full sync", "…: link
//! down", "…: followed X"). Without history (CLI) only the current observation counts. The rest are ranked
//! by config priority (lower first), then offset (higher first), then evidence of having synced
//! (link up now, or last seen linked to the master while it lived: such a node ranks above one
//! that never linked, e.g. a restarted old master made a replica, when their offsets tie), then
//! address.
//! `Plan::candidates` lists the ranked ones first, then the excluded ones in config order.
//!
//! A manual failover to a named node overrides the soft exclusions (never_promote, priority 0,
//! lag, missing DB, unknown offset, not linked before the master died) and says so in the reason; it never overrides the hard ones
//! (unreachable, claims master, follows another master, not eligible, full sync, link error).
//! Without a candidate the plan is a refusal listing every node with its phrase. A node too far
//! behind the master's last seen offset carries its estimated loss in its phrase ("…; estimated
//! loss if promoted: db0 N bytes, …"), and when such nodes are among those left the refusal
//! names `failover --accept-data-loss`: that trigger then ranks the nodes again without the
//! master as the lag reference and promotes the best, its reason stating the accepted estimate.
//! Failover and switchover plans carry [`Plan::expected_loss`] ([`ExpectedLoss`], see `loss`).
//! Otherwise the
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
//! - Diverged writes: a demotion of a node that may hold writes the master lacks (it claims
//!   master, or its binlog/offset is ahead of the master's) starts with [`Step::Diverged`],
//!   the estimate ([`Divergence`], `diverged.rs`) as data; per `policy.diverged` it takes a
//!   snapshot first (`snapshot`, the default: `BGSAVE` under a name of its own, bounded; a
//!   failure stops the plan, nothing discarded) or only records the estimate (`report`);
//!   `refuse` turns the demotion into a refusal unless the operator's `demote` says
//!   `accept_data_loss` (docs/recovery.md).
//! - Demote: reachable replicas still attached to the node are repointed first (Pika refuses
//!   `SLAVEOF` on a node with connected slaves: "already master of others"), then the node
//!   follows the master, forced on Pika (an old master's binlog may be ahead or diverged).
//! - Repoint: each node follows, forced on Pika only when its link is in error, it claims
//!   master, or its binlog position is ahead of the new master's in some DB (an incremental
//!   sync would then end in `Error` or silently diverge). Chained replicas (`master&&slave`)
//!   are repointed after plain ones, so their children have left them first.
//! - ReplicationID: before a Pika node follows a master whose ReplicationID differs from its
//!   own (or that has none yet, so it will mint one), the plan clears it
//!   ([`Step::ClearReplicationId`]: `SLAVEOF NO ONE`, `CLEARREPLICATIONID`); the follow is then a
//!   full sync, and the step carries that reason ("full sync: replication id differs …").
//!   Pika refuses a conflicting MetaSync for good and `force` does not help (pika.md §1.5).
//! - Stale clients: right after a demotion, and in a switchover right before the old master
//!   follows the new one, `CLIENT KILL TYPE normal` on the old master ([`Step::KillClients`]),
//!   so clients pinned to it reconnect and rediscover. Redis 2.8.12+ and Pika 3.5.5+/4.x only;
//!   otherwise the step says why and sends nothing. A failure is reported, the plan goes on.
//! - `force` is never set for Redis (it rejects the extra argument), nor for unknown engines.
//! - Full syncs: a follow that will copy all data ([`full_sync_reason`], see `sync`) carries the
//!   reason; at most `policy.max_parallel_full_syncs` run at once per master (one already seen
//!   in full sync from it counts), the next waits in plan order behind a [`Step::WaitSynced`]
//!   for the oldest one (before its `ClearReplicationId`, if any). A switchover's old master
//!   follows after the catch-up, so the offsets seen before the plan do not make it a full sync.
//! - Children first: before a Pika node follows anyone, the reachable nodes that still follow
//!   it (and that the plan has not moved or promoted yet) follow its new master, deepest first
//!   in a chain; their own later follow of that master is dropped. These are steps of the plan:
//!   the executor never moves a node the plan does not list (one still attached stops it).
//! - Reset: a node that already names its new master gets `SLAVEOF NO ONE` first (an identical
//!   `SLAVEOF` is a silent no-op on Pika, even in a broken state).
//! - Every command a step sends is built by `node::commands::Dialect`, the same functions
//!   the sender uses: [`Step::wire`] is what is sent, [`Step::commands`] what `plan` prints.

mod candidates;
mod diverged;
mod history;
mod loss;
mod rules;
mod steps;
mod sync;

pub use diverged::{estimate as estimate_divergence, DbDivergence, Divergence};
pub use steps::snapshot_name;

pub use history::{LinkSnapshot, MasterSeen, PriorLink};
pub use loss::ExpectedLoss;
pub use sync::full_sync_reason;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::Policy;
use crate::model::{
    Addr, Engine, LinkState, NodeObservation, NodeStatus, Observation, Role, TopologyRecord,
};

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
    /// `accept_data_loss`: when every candidate is too far behind the master's last seen
    /// offset (`policy.max_lag_bytes`), promote the best of them anyway; the plan states the
    /// estimated loss it accepts (`Plan::expected_loss`), and so does the audit event.
    Failover {
        to: Option<Addr>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        accept_data_loss: bool,
    },
    /// Operator: planned switchover of a healthy master to `to` (or the best replica).
    Switchover { to: Option<Addr> },
    /// Operator: make `node` follow the recorded master. `accept_data_loss`: also when the
    /// node diverged and `policy.diverged = "refuse"` (its own writes are then discarded).
    Demote {
        node: Addr,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        accept_data_loss: bool,
    },
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
    /// Pika: the recorded master's binlog position per DB the last time the poller saw it
    /// alive (empty on Redis and without history): the per-DB loss estimate of a failover.
    pub last_master_dbs: BTreeMap<String, crate::model::BinlogPos>,
    /// Unix seconds of that last sighting (carried into the loss estimate, never into a reason).
    pub last_master_seen_at: Option<u64>,
    /// Each other node's replication link as the service's poller last saw it in polls that
    /// also saw the recorded master alive (see [`PriorLink`]). Empty without history (CLI):
    /// only the current observation counts.
    pub links_before: BTreeMap<Addr, PriorLink>,
    /// Operator maintenance on nodes (from the shared controls): never a candidate; a
    /// `hands_off` node is sent no command, and a plan that would need one is refused.
    pub holds: std::collections::BTreeMap<Addr, NodeHold>,
    /// The cooldown of the recorded automatic failover was acknowledged by an operator.
    pub cooldown_acked: bool,
}

/// Maintenance on one node, as decide's input.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct NodeHold {
    pub hands_off: bool,
    /// Shown as the exclusion and refusal reason, e.g. "maintenance hands-off (disk swap)".
    pub reason: String,
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
    /// Failover and switchover plans: what the chosen candidate is expected to lose of the
    /// master's acknowledged writes (none, bytes per DB, or unknown and why).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_loss: Option<ExpectedLoss>,
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
    /// `CONFIG SET masterauth` (when the cluster has a password), `SLAVEOF NO ONE` when
    /// `reset`, `SLAVEOF master port [force]`, poll until link up (bounded); on timeout
    /// `SLAVEOF NO ONE` + `SLAVEOF … [force on Pika]` once. On Pika, `already master of others`
    /// (a lingering stale slave entry) is retried with backoff (bounded).
    Follow {
        node: Addr,
        master: Addr,
        force: bool,
        engine: Engine,
        /// `SLAVEOF NO ONE` first: the node already names `master` (an identical `SLAVEOF` is a
        /// silent no-op on Pika, even in a broken state).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        reset: bool,
        /// This follow is a full sync (all data copied from `master`), and why (a stable
        /// phrase, e.g. "full sync: replication id differs …"). A full sync still copying when
        /// `link_timeout` ends is not restarted (no retry): [`Step::WaitSynced`] waits for its end.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        full_sync: Option<String>,
    },
    /// The full-sync budget (`policy.max_parallel_full_syncs`): wait (bounded by
    /// `policy.full_sync_timeout`) until `node`'s full sync from `master` is done (link up)
    /// before `before` starts its own. Sends nothing.
    WaitSynced {
        node: Addr,
        master: Addr,
        before: Addr,
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
    /// Pika: `node`'s ReplicationID is not the one `master` has (or will mint), so Pika refuses
    /// the MetaSync for good (`replicationid on both sides of the connection are
    /// inconsistent`; `force` does not help). `SLAVEOF NO ONE` (Pika refuses
    /// `CLEARREPLICATIONID` on a slave with `READONLY`), then `CLEARREPLICATIONID`; the
    /// [`Step::Follow`] right after is then a **full sync** from `master`. `why` is the
    /// stable reason shown in the plan ("full sync: replication id differs …").
    ClearReplicationId {
        node: Addr,
        master: Addr,
        why: String,
    },
    /// Before a demotion discards `node`'s own writes (`SLAVEOF … force` on Pika, a full
    /// resync of a Redis old master): `estimate` is what may be lost (see [`Divergence`]).
    /// `snapshot` (policy `snapshot`): `BGSAVE` first under a name of its own (Pika
    /// `dump-prefix`, Redis `dbfilename`, put back right after), waited for (bounded by
    /// `policy.snapshot_timeout`); a snapshot that fails or times out stops the plan, nothing
    /// is discarded. Without `snapshot` (policy `report`, or an accepted loss under `refuse`)
    /// the estimate is only recorded and nothing is sent.
    Diverged {
        node: Addr,
        engine: Engine,
        estimate: Divergence,
        snapshot: bool,
    },
    /// Fence stale clients: `CLIENT KILL TYPE normal` on a demoted (or about to be demoted)
    /// old master, so clients pinned to it reconnect and rediscover the master. When the
    /// engine or version cannot do it, `unsupported` says why and nothing is sent.
    KillClients {
        node: Addr,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        unsupported: Option<String>,
    },
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
            Step::WaitCatchUp { .. }
                | Step::WaitSynced { .. }
                | Step::Record { .. }
                | Step::Intent { .. }
                | Step::Diverged {
                    snapshot: false,
                    ..
                }
                | Step::KillClients {
                    unsupported: Some(_),
                    ..
                }
        )
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
                full_sync,
                ..
            } => {
                format!(
                    "{node} follows {master}{}{}",
                    if *force { " (force)" } else { "" },
                    if full_sync.is_some() {
                        " (full sync)"
                    } else {
                        ""
                    }
                )
            }
            Step::WaitSynced {
                node,
                master,
                before,
            } => {
                format!("wait for the full sync of {node} from {master} before repointing {before}")
            }
            Step::Persist { node } => format!("CONFIG REWRITE {node}"),
            Step::Unpause { node } => format!("unpause {node}"),
            Step::FenceWrites { node } => format!("fence writes on {node}"),
            Step::UnfenceWrites { node } => format!("unfence writes on {node}"),
            Step::ClearReplicationId { node, why, .. } => {
                format!("clear the replication id of {node} ({why})")
            }
            Step::KillClients {
                node,
                unsupported: None,
            } => format!("close the normal client connections of {node}"),
            Step::KillClients {
                node,
                unsupported: Some(why),
            } => format!("cannot close the client connections of {node}: {why}"),
            Step::Diverged {
                node,
                estimate,
                snapshot: true,
                ..
            } => format!(
                "snapshot {node} before its writes are discarded ({})",
                estimate.summary()
            ),
            Step::Diverged { node, estimate, .. } => format!(
                "{node} loses its diverged writes, no snapshot ({})",
                estimate.summary()
            ),
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
            expected_loss: None,
        }
    }

    pub fn refuse(reason: impl Into<String>, retryable: bool) -> Plan {
        Plan {
            action: Action::Refuse { retryable },
            reason: reason.into(),
            candidates: Vec::new(),
            expected_loss: None,
        }
    }

    fn with(action: Action, reason: impl Into<String>) -> Plan {
        Plan {
            action,
            reason: reason.into(),
            candidates: Vec::new(),
            expected_loss: None,
        }
    }

    fn ranked(mut self, candidates: Vec<Candidate>) -> Plan {
        self.candidates = candidates;
        self
    }

    fn losing(mut self, loss: ExpectedLoss) -> Plan {
        self.expected_loss = Some(loss);
        self
    }
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

/// Pika only: `node` cannot attach to `target` because their ReplicationIDs conflict (Pika
/// refuses the MetaSync for good, pika.md §1.5): both have one and they differ, or `target`
/// has none yet and will mint a new one at its first slave's MetaSync. A node without an ID
/// takes the master's (a full sync) and needs nothing. `Some(reason)`, a stable phrase.
pub fn replid_conflict(node: &NodeStatus, target: &NodeStatus) -> Option<String> {
    if node.engine != Engine::Pika || target.engine != Engine::Pika {
        return None;
    }
    let mine = node.replid.as_ref()?;
    match &target.replid {
        Some(theirs) if theirs == mine => None,
        Some(theirs) => Some(format!(
            "full sync: replication id differs ({} here, {} on the master)",
            short_replid(mine),
            short_replid(theirs)
        )),
        None => Some(format!(
            "full sync: replication id differs ({} here, none yet on the master)",
            short_replid(mine)
        )),
    }
}

fn short_replid(id: &str) -> String {
    match id.get(..12) {
        Some(head) if id.len() > 12 => format!("{head}…"),
        _ => id.to_string(),
    }
}

fn has_link_error(s: &NodeStatus) -> bool {
    s.link == Some(LinkState::Error) || s.db_links.values().any(|l| *l == LinkState::Error)
}

/// In full sync, overall or in any DB.
pub fn in_full_sync(s: &NodeStatus) -> bool {
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
    let plan = match record {
        None => rules::without_record(trigger, obs),
        Some(rec) => rules::with_record(trigger, obs, rec, policy, gate),
    };
    let plan = diverged::refuse_check(plan, trigger, obs, policy);
    hands_off_check(plan, gate)
}

/// The nodes a plan sends commands to.
fn touched(action: &Action) -> Vec<&Addr> {
    match action {
        Action::NoAction | Action::Refuse { .. } | Action::Bootstrap { .. } => Vec::new(),
        Action::Failover {
            promote, repoint, ..
        } => std::iter::once(promote).chain(repoint).collect(),
        Action::Switchover {
            promote,
            repoint,
            old_master,
        } => std::iter::once(promote)
            .chain(repoint)
            .chain(std::iter::once(old_master))
            .collect(),
        Action::Demote { node, .. } => vec![node],
        Action::Repoint { nodes, .. } => nodes.iter().collect(),
    }
}

/// A plan that would send a command to a `hands_off` node is refused, naming it.
fn hands_off_check(plan: Plan, gate: &Gate) -> Plan {
    let blocked: Vec<String> = touched(&plan.action)
        .into_iter()
        .filter_map(|a| {
            gate.holds
                .get(a)
                .filter(|h| h.hands_off)
                .map(|h| format!("{a}: {}", h.reason))
        })
        .collect();
    if blocked.is_empty() {
        return plan;
    }
    Plan {
        action: Action::Refuse { retryable: false },
        reason: format!(
            "{} needs node(s) under maintenance: {}",
            plan.action.label(),
            blocked.join("; ")
        ),
        candidates: plan.candidates,
        expected_loss: None,
    }
}
