//! Step compilation: a [`Plan`] becomes ordered [`Step`]s (force, the children of a Pika node
//! moved first, the record right after the promotion), and each step renders the commands it
//! sends, built by [`Dialect`] (the same functions the sender uses).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::diverged::{estimate, Divergence};
use super::{followers_of, has_link_error, join, replid_conflict, Action, Plan, Step};
use crate::config::{DivergedPolicy, Policy};
use crate::model::{Addr, Engine, NodeObservation, NodeStatus, Observation, Role};
use crate::node::commands::{Command, Dialect};

impl Step {
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

    /// A Pika follow that is a full sync (forced, or planned as one) first refreshes the
    /// master's dump (`BGSAVE`, waited for): Pika serves a full sync from its last dump while
    /// that dump's binlog file exists, even after the master's own data was replaced by a full
    /// sync (e.g. after a snapshot of its diverged writes), and the replica's `TrySync` then
    /// fails for good (`Slave offset is not a start point of cur log`).
    pub fn refreshes_dump(&self) -> bool {
        matches!(self, Step::Follow { engine: Engine::Pika, force, full_sync, .. }
            if *force || full_sync.is_some())
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
                full_sync,
                ..
            } => {
                match full_sync {
                    Some(why) => {
                        v.push(format!("{node}: {why}"));
                        v.push(poll(
                            node,
                            "master_link_status:up (a full sync still copying at the link timeout is not restarted)".into(),
                        ));
                    }
                    None => v.push(poll(node, "master_link_status:up".into())),
                }
                // The one retry is forced on Pika even when the first try was not: an identical
                // SLAVEOF is a no-op there, and a link that did not come up usually means Error.
                // A forced Pika retry is a full sync: the master's dump is refreshed first
                // (unless the first try did).
                let refresh = if *engine == Engine::Pika && !self.refreshes_dump() {
                    format!(
                        "{master}: {} (a fresh dump for the full sync); ",
                        d.bgsave()
                    )
                } else {
                    String::new()
                };
                v.push(format!(
                    "{node}: on link timeout, once: {refresh}{}; {}",
                    d.promote(),
                    d.follow(master, *engine == Engine::Pika)
                ));
            }
            Step::ClearReplicationId { node, master, why } => v.push(format!(
                "{node}: {why}: the follow below copies all data from {master}"
            )),
            Step::WaitSynced { node, master, .. } => v.push(poll(
                node,
                format!("master_link_status:up from {master} (its full sync is done)"),
            )),
            Step::KillClients {
                node,
                unsupported: Some(why),
            } => v.push(format!("{node}: not sent: {} ({why})", d.kill_clients())),
            Step::Diverged {
                node,
                engine,
                estimate,
                snapshot,
            } => {
                v.insert(0, format!("{node}: diverged: {}", estimate.summary()));
                if *snapshot {
                    let (section, until, key) = snapshot_words(*engine);
                    v.insert(
                        1,
                        format!(
                            "{node}: {}, {}, then {} (a name of its own)",
                            d.config_get(dir_key(*engine)),
                            d.config_get(key),
                            d.config_set(key, &snapshot_name(*engine, "<unix time>"))
                        ),
                    );
                    v.push(poll(
                        node,
                        format!("{until} ({} {section})", d.name("INFO")),
                    ));
                    v.push(format!(
                        "{node}: {}; on failure or after policy.snapshot_timeout: stop, nothing discarded",
                        d.config_set(key, "<previous value>")
                    ));
                } else {
                    v.push(format!(
                        "{node}: no snapshot (policy.diverged = report, or the loss was accepted)"
                    ));
                }
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
                if self.refreshes_dump() {
                    v.push((master.clone(), d.bgsave()));
                }
                v.push((node.clone(), d.follow(master, *force)));
                v
            }
            Step::Persist { node } => on(node, d.rewrite()),
            Step::Unpause { node } => on(node, d.unpause()),
            Step::FenceWrites { node } => on(node, d.fence(true)),
            Step::UnfenceWrites { node } => on(node, d.fence(false)),
            // Pika refuses CLEARREPLICATIONID on a slave (READONLY): detach first.
            Step::ClearReplicationId { node, .. } => vec![
                (node.clone(), d.promote()),
                (node.clone(), d.clear_replication_id()),
            ],
            Step::KillClients {
                node,
                unsupported: None,
            } => on(node, d.kill_clients()),
            Step::KillClients {
                unsupported: Some(_),
                ..
            } => Vec::new(),
            Step::Diverged {
                node,
                snapshot: true,
                ..
            } => on(node, d.bgsave()),
            Step::Diverged { .. }
            | Step::WaitCatchUp { .. }
            | Step::WaitSynced { .. }
            | Step::Intent { .. }
            | Step::Record { .. } => Vec::new(),
        }
    }
}

impl Plan {
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
                let mut paused = false;
                let mut fenced = false;
                if let Some(estimate) = estimate(obs, node, to).filter(Divergence::diverged) {
                    let snapshot = policy.diverged == DivergedPolicy::Snapshot;
                    let engine = engine_of(obs, node);
                    // Redis: the node's writes are paused from before the snapshot until it
                    // follows (`CLIENT PAUSE … WRITE`), so nothing it acknowledges after the
                    // BGSAVE's fork is discarded outside the snapshot. The pause expires by
                    // itself after the snapshot's bound plus one link wait. Redis before 6.2
                    // has no `WRITE` pause: there the window stays open.
                    if snapshot && can_pause_writes(obs, node) {
                        let millis = (policy.snapshot_timeout + policy.link_timeout).as_millis();
                        steps.push(Step::PauseWrites {
                            node: node.clone(),
                            millis: u64::try_from(millis).unwrap_or(u64::MAX),
                        });
                        paused = true;
                    }
                    // Pika 4.x: the same window closed by the write fence (`ACL SETUSER default
                    // -@write`, open connections included) from before the BGSAVE until the
                    // node follows; lifted once it does. Older Pika has no fence.
                    if snapshot && engine == Engine::Pika && can_fence_writes(obs, node) {
                        steps.push(Step::FenceWrites { node: node.clone() });
                        fenced = true;
                    }
                    steps.push(Step::Diverged {
                        node: node.clone(),
                        engine,
                        estimate,
                        snapshot,
                    });
                }
                for child in followers_of(obs, node) {
                    let force = needs_force(obs, child, to);
                    follow_and_persist(&mut steps, obs, child, to, force);
                }
                follow_and_persist(&mut steps, obs, node, to, true);
                steps.push(kill_clients(obs, node));
                if paused {
                    steps.push(Step::Unpause { node: node.clone() });
                }
                if fenced {
                    steps.push(Step::UnfenceWrites { node: node.clone() });
                }
            }
            Action::Repoint { nodes, to } => {
                for node in nodes {
                    let force = needs_force(obs, node, to);
                    follow_and_persist(&mut steps, obs, node, to, force);
                }
            }
        }
        let steps = budget_full_syncs(children_first(steps, obs), obs, policy);
        match &self.action {
            Action::Failover { .. } | Action::Repoint { .. } => {
                snapshot_ahead_followers(steps, obs, policy)
            }
            _ => steps,
        }
    }
}

/// Redis 6.2+ (`CLIENT PAUSE <ms> WRITE`), from the observed version.
/// Pika 4.x: writes can be fenced by ACL ([`NodeStatus::can_fence_writes`]).
fn can_fence_writes(obs: &Observation, node: &Addr) -> bool {
    obs.node(node)
        .and_then(NodeObservation::reachable)
        .is_some_and(NodeStatus::can_fence_writes)
}

fn can_pause_writes(obs: &Observation, node: &Addr) -> bool {
    let Some(s) = obs.node(node).and_then(NodeObservation::reachable) else {
        return false;
    };
    let mut v = s
        .version
        .as_deref()
        .unwrap_or("")
        .trim()
        .split('.')
        .map(|p| p.parse::<u32>().ok());
    let (major, minor) = (v.next().flatten(), v.next().flatten().unwrap_or(0));
    s.engine == Engine::Redis && major.is_some_and(|m| (m, minor) >= (6, 2))
}

/// A node that is made to follow a master it is ahead of (a replica that got writes of the
/// dead master the promoted one never did, in some DB or by offset) loses them in the forced
/// or full resync: the same [`Step::Diverged`] as a demotion's (snapshot under `policy.diverged
/// = "snapshot"`, else the estimate recorded), right before its follow or the clearing of its
/// replication ID. A demotion's children are not included: what they have beyond the master
/// came from the demoted node, whose snapshot holds it.
fn snapshot_ahead_followers(steps: Vec<Step>, obs: &Observation, policy: &Policy) -> Vec<Step> {
    let mut out = Vec::with_capacity(steps.len());
    let mut seen: BTreeSet<Addr> = BTreeSet::new();
    for step in steps {
        if let Step::Follow { node, master, .. } | Step::ClearReplicationId { node, master, .. } =
            &step
        {
            let master_seen = obs
                .node(master)
                .and_then(NodeObservation::reachable)
                .is_some();
            if master_seen && seen.insert(node.clone()) {
                if let Some(estimate) = estimate(obs, node, master).filter(Divergence::diverged) {
                    out.push(Step::Diverged {
                        node: node.clone(),
                        engine: engine_of(obs, node),
                        estimate,
                        snapshot: policy.diverged == DivergedPolicy::Snapshot,
                    });
                }
            }
        }
        out.push(step);
    }
    out
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
            // Moved early (and cleared then, if it needed it): never detach it again.
            Step::ClearReplicationId { node, master, .. } if early.get(node) == Some(master) => {
                continue;
            }
            // A Pika node about to be detached and cleared: its children leave it first.
            Step::ClearReplicationId { node, master, .. }
                if engine_of(obs, node) == Engine::Pika =>
            {
                move_children(&mut out, obs, node, master, &mut handled, &mut early)
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

/// The full-sync budget: at most `policy.max_parallel_full_syncs` full syncs from one master
/// at a time. Walking the steps in order, a follow planned as a full sync that would exceed
/// the budget gets a [`Step::WaitSynced`] first, for the oldest full sync still running (in
/// this plan, or one already seen in progress from that master and not moved by the plan),
/// inserted before its [`Step::ClearReplicationId`] if it has one (the node keeps serving from
/// its old data until its turn). The others wait in plan order.
fn budget_full_syncs(steps: Vec<Step>, obs: &Observation, policy: &Policy) -> Vec<Step> {
    let limit = policy.max_parallel_full_syncs.max(1);
    let moved: BTreeSet<&Addr> = steps
        .iter()
        .filter_map(|s| match s {
            Step::Follow { node, .. } | Step::Promote { node } => Some(node),
            _ => None,
        })
        .collect();
    // Per master, the full syncs started and not yet waited for, oldest first.
    let mut running: BTreeMap<Addr, std::collections::VecDeque<Addr>> = BTreeMap::new();
    for n in &obs.nodes {
        if let Some(s) = n.reachable() {
            if let (true, Some(m)) = (super::in_full_sync(s), &s.master) {
                if !moved.contains(&n.addr) {
                    running
                        .entry(m.clone())
                        .or_default()
                        .push_back(n.addr.clone());
                }
            }
        }
    }
    let mut out: Vec<Step> = Vec::with_capacity(steps.len());
    for step in steps {
        if let Step::Follow {
            node,
            master,
            full_sync: Some(_),
            ..
        } = &step
        {
            let queue = running.entry(master.clone()).or_default();
            let at = match out.last() {
                Some(Step::ClearReplicationId { node: n, .. }) if n == node => out.len() - 1,
                _ => out.len(),
            };
            let mut waits = Vec::new();
            while queue.len() >= limit {
                let Some(first) = queue.pop_front() else {
                    break;
                };
                waits.push(Step::WaitSynced {
                    node: first,
                    master: master.clone(),
                    before: node.clone(),
                });
            }
            for (i, w) in waits.into_iter().enumerate() {
                out.insert(at + i, w);
            }
            queue.push_back(node.clone());
        }
        out.push(step);
    }
    out
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
    steps.push(kill_clients(obs, old_master));
    follow_and_persist(steps, obs, old_master, promote, false);
    caught_up(steps, old_master);
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
    let fence = can_fence_writes(obs, old_master);
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
    steps.push(kill_clients(obs, old_master));
    follow_and_persist(steps, obs, old_master, promote, !fence);
    caught_up(steps, old_master);
    if fence {
        steps.push(Step::UnfenceWrites {
            node: old_master.clone(),
        });
    }
}

/// A switchover's old master follows the new one only after the catch-up (writes paused or
/// fenced): the offsets seen before the plan (it was ahead then) say nothing about its sync,
/// which is partial unless it is forced or its ReplicationID is cleared first.
fn caught_up(steps: &mut [Step], old_master: &Addr) {
    let cleared = steps
        .iter()
        .any(|s| matches!(s, Step::ClearReplicationId { node, .. } if node == old_master));
    if let Some(Step::Follow {
        force: false,
        full_sync,
        ..
    }) = steps
        .iter_mut()
        .rev()
        .find(|s| matches!(s, Step::Follow { node, .. } if node == old_master))
    {
        if !cleared {
            *full_sync = None;
        }
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

/// Fence stale clients of an old master (after its demotion, or before it follows the new
/// master in a switchover): `CLIENT KILL TYPE normal` where the engine and version support it;
/// otherwise the step says why and sends nothing.
fn kill_clients(obs: &Observation, node: &Addr) -> Step {
    let unsupported = match obs.node(node).and_then(NodeObservation::reachable) {
        Some(s) if s.can_kill_clients() => None,
        Some(s) => Some(format!(
            "{} {} has no CLIENT KILL TYPE (Redis 2.8.12+, Pika 3.5.5+); clients pinned to {node} keep their connections",
            s.engine.as_str(),
            s.version.as_deref().unwrap_or("of unknown version")
        )),
        None => Some(format!("{node} was not observed; clients pinned to it keep their connections")),
    };
    Step::KillClients {
        node: node.clone(),
        unsupported,
    }
}

/// `force` is only ever honoured for Pika: Redis rejects the extra argument. A Pika node whose
/// ReplicationID conflicts with `to`'s is cleared first ([`Step::ClearReplicationId`], a full
/// sync), which also detaches it, so its follow needs no reset.
fn follow_and_persist(
    steps: &mut Vec<Step>,
    obs: &Observation,
    node: &Addr,
    to: &Addr,
    force_on_pika: bool,
) {
    let engine = engine_of(obs, node);
    let me = obs.node(node).and_then(NodeObservation::reachable);
    let conflict = me.and_then(|s| {
        let target = obs.node(to).and_then(NodeObservation::reachable)?;
        replid_conflict(s, target)
    });
    let reset = conflict.is_none()
        && me.is_some_and(|s| s.role.is_replica() && s.master.as_ref() == Some(to));
    let force = force_on_pika && engine == Engine::Pika;
    let full_sync = conflict.clone().or_else(|| {
        let target = obs.node(to).and_then(NodeObservation::reachable)?;
        super::full_sync_reason(me?, target, force)
    });
    if let Some(why) = conflict {
        steps.push(Step::ClearReplicationId {
            node: node.clone(),
            master: to.clone(),
            why,
        });
    }
    steps.push(Step::Follow {
        node: node.clone(),
        master: to.clone(),
        force,
        engine,
        reset,
        full_sync,
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

/// What a snapshot waits for and which setting names its file, per engine: (INFO section,
/// completion, name setting). Pika: `is_bgsaving:No` in `INFO stats`, the dump dir is
/// `dump-path` + `dump-prefix` + the date; Redis: `rdb_bgsave_in_progress:0` in
/// `INFO persistence`, the file `dir` + `dbfilename`.
pub(crate) fn snapshot_words(engine: Engine) -> (&'static str, &'static str, &'static str) {
    match engine {
        Engine::Pika => ("stats", "is_bgsaving:No", "dump-prefix"),
        _ => (
            "persistence",
            "rdb_bgsave_in_progress:0 and rdb_last_bgsave_status:ok",
            "dbfilename",
        ),
    }
}

/// The setting that names the snapshot's folder: Pika `dump-path`, Redis `dir`.
pub(crate) fn dir_key(engine: Engine) -> &'static str {
    match engine {
        Engine::Pika => "dump-path",
        _ => "dir",
    }
}

/// The name a snapshot is saved under, so the next `BGSAVE` (or a full sync, which writes
/// Redis' `dbfilename`) does not overwrite it: Pika's `dump-prefix` (the dump dir is then
/// `<dump-path>pika-remedy-<tag>-<YYYYMMDD>`), Redis' `dbfilename`.
pub fn snapshot_name(engine: Engine, tag: &str) -> String {
    match engine {
        Engine::Pika => format!("pika-remedy-{tag}-"),
        _ => format!("pika-remedy-{tag}.rdb"),
    }
}
