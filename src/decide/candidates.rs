//! Candidate ranking: every configured node but the recorded master is assessed (its
//! exclusions, in rule order), then the eligible ones are ranked. See the module docs of
//! [`super`] for the phrases and the order.

use std::collections::{BTreeMap, BTreeSet};

use super::{has_link_error, in_full_sync, master_of, Candidate, Gate};
use crate::config::Policy;
use crate::model::{Addr, Engine, LinkState, NodeObservation, NodeStatus, Observation, Role};

/// Why a node may not be promoted. Hard exclusions are never overridden; soft ones yield to an
/// operator who names the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Exclusion {
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
    /// Failover with history: in error, in full sync or detached while the master lived.
    NotLinkedBefore(String),
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
        /// The estimated loss if it were promoted anyway (per DB on Pika).
        loss: super::ExpectedLoss,
    },
    OffsetUnknown,
    /// Operator maintenance (shared controls); the text says which and why.
    Maintenance(String),
}

impl Exclusion {
    pub(super) fn phrase(&self) -> String {
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
            Exclusion::NotLinkedBefore(why) => {
                format!("was not linked to the master before it died: {why}")
            }
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
            Exclusion::BehindMaster { by, limit, loss } => {
                format!("behind the master's last seen offset by {by} bytes (limit {limit}); estimated loss if promoted: {loss}")
            }
            Exclusion::OffsetUnknown => "offset unknown".into(),
            Exclusion::Maintenance(why) => why.clone(),
        }
    }

    pub(super) fn is_hard(&self) -> bool {
        matches!(
            self,
            Exclusion::Unreachable
                | Exclusion::ClaimsMaster
                | Exclusion::FollowsOther(_)
                | Exclusion::NotEligible
                | Exclusion::FullSync
                | Exclusion::LinkError
                | Exclusion::LinkNotUp(_)
                | Exclusion::Maintenance(_)
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
pub(super) struct Assessed<'a> {
    pub(super) node: &'a NodeObservation,
    pub(super) offset: Option<u64>,
    /// Evidence that it has replicated from the master: its link is up now, or the polls
    /// while the master lived last saw it linked ([`Gate::links_before`]). Breaks offset ties
    /// ([`rank`]).
    pub(super) synced: bool,
    pub(super) exclusions: Vec<Exclusion>,
}

impl Assessed<'_> {
    pub(super) fn candidate(&self) -> Candidate {
        Candidate {
            addr: self.node.addr.clone(),
            excluded: self.exclusions.first().map(Exclusion::phrase),
            priority: self.node.priority,
            offset: self.offset,
        }
    }
}

/// What the whole cluster says about each candidate: the DBs present anywhere (Pika only;
/// Redis has no per-DB view) and the ReplicationID the Pika nodes share.
struct ClusterView<'a> {
    all_dbs: BTreeSet<&'a String>,
    shared_replid: Option<String>,
}

impl<'a> ClusterView<'a> {
    fn of(obs: &'a Observation) -> ClusterView<'a> {
        ClusterView {
            all_dbs: obs
                .nodes
                .iter()
                .filter_map(NodeObservation::reachable)
                .filter(|s| s.engine == Engine::Pika)
                .flat_map(|s| s.db_offsets.keys().chain(s.db_links.keys()))
                .collect(),
            shared_replid: shared_pika_replid(obs),
        }
    }
}

/// Assess and rank every configured node except `master`. Returns the assessments in the
/// `Plan::candidates` order: eligible ones best first, then excluded ones in config order.
pub(super) fn assess<'a>(
    obs: &'a Observation,
    master: &Addr,
    policy: &Policy,
    need_link_up: bool,
    history: Option<&Gate>,
    holds: &BTreeMap<Addr, super::NodeHold>,
) -> Vec<Assessed<'a>> {
    let view = ClusterView::of(obs);
    let no_links = BTreeMap::new();
    let links_before = history.map_or(&no_links, |g| &g.links_before);
    let mut assessed: Vec<Assessed> = obs
        .nodes
        .iter()
        .filter(|n| &n.addr != master)
        .map(|node| match node.reachable() {
            None => Assessed {
                node,
                offset: None,
                synced: false,
                exclusions: vec![Exclusion::Unreachable],
            },
            Some(s) => {
                let mut exclusions = exclusions_of(node, s, master, need_link_up, &view);
                if let Some(why) = links_before
                    .get(&node.addr)
                    .and_then(|p| p.bars_promotion(master))
                {
                    let at = exclusions
                        .iter()
                        .position(|e| {
                            matches!(
                                e,
                                Exclusion::MissingDb(_)
                                    | Exclusion::ReplidDiffers(_)
                                    | Exclusion::ReplidEmpty
                            )
                        })
                        .unwrap_or(exclusions.len());
                    exclusions.insert(at, Exclusion::NotLinkedBefore(why));
                }
                let synced = s.link == Some(LinkState::Up)
                    || links_before
                        .get(&node.addr)
                        .is_some_and(|p| p.last.linked_to(master));
                Assessed {
                    node,
                    offset: s.offset,
                    synced,
                    exclusions,
                }
            }
        })
        .collect();
    for a in &mut assessed {
        if let Some(h) = holds.get(&a.node.addr) {
            a.exclusions.push(Exclusion::Maintenance(h.reason.clone()));
        }
    }
    exclude_laggards(&mut assessed, policy, history);
    rank(assessed)
}

/// The exclusions a reachable node earns from its own status, in rule order.
fn exclusions_of(
    node: &NodeObservation,
    s: &NodeStatus,
    master: &Addr,
    need_link_up: bool,
    view: &ClusterView,
) -> Vec<Exclusion> {
    let mut exclusions = Vec::new();
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
        pika_exclusions(s, view, &mut exclusions);
    }
    exclusions
}

/// Pika only: a missing DB, and a ReplicationID that differs from the cluster's (or is empty).
fn pika_exclusions(s: &NodeStatus, view: &ClusterView, exclusions: &mut Vec<Exclusion>) {
    let has: BTreeSet<&String> = s.db_offsets.keys().chain(s.db_links.keys()).collect();
    if let Some(db) = view.all_dbs.iter().find(|db| !has.contains(*db)) {
        exclusions.push(Exclusion::MissingDb((*db).clone()));
    }
    // Pika refuses a slave whose ReplicationID differs from its master's, with no retry; and
    // a promoted node with an empty ID mints a new one at its first slave, locking out every
    // replica that still carries the cluster's ID.
    if let Some(shared) = &view.shared_replid {
        match &s.replid {
            Some(r) if r != shared => exclusions.push(Exclusion::ReplidDiffers(r.clone())),
            None => exclusions.push(Exclusion::ReplidEmpty),
            Some(_) => {}
        }
    }
}

/// Lag is measured against the best of the nodes still in the race, not against excluded
/// ones, and (when known) against the master's last seen offset.
fn exclude_laggards(assessed: &mut [Assessed], policy: &Policy, history: Option<&Gate>) {
    let last_master_offset = history.and_then(|g| g.last_master_offset);
    let best = assessed
        .iter()
        .filter(|a| a.exclusions.is_empty())
        .filter_map(|a| a.offset)
        .max();
    let Some(best) = best else {
        return;
    };
    let limit = policy.max_lag_bytes;
    for a in assessed.iter_mut().filter(|a| a.exclusions.is_empty()) {
        match a.offset {
            Some(o) if last_master_offset.is_some_and(|m| m.saturating_sub(o) > limit) => {
                a.exclusions.push(Exclusion::BehindMaster {
                    by: last_master_offset.unwrap_or(o).saturating_sub(o),
                    limit,
                    loss: history.map_or_else(
                        || super::ExpectedLoss::Unknown {
                            why: "no history".into(),
                        },
                        |g| super::loss::of_failover(a.node.reachable(), g),
                    ),
                })
            }
            Some(o) if best - o > limit => a.exclusions.push(Exclusion::Behind {
                by: best - o,
                limit,
            }),
            Some(_) => {}
            None => a.exclusions.push(Exclusion::OffsetUnknown),
        }
    }
}

/// Eligible ones by config priority (lower first), offset (higher first), then evidence of
/// having synced (first), address; then the excluded ones in config order.
///
/// The sync tie-break: among nodes of equal priority and offset (typically both at 0, or equal
/// after a quiet period), a node whose replication link is up now, or that the polls while the
/// master lived last saw linked to it, ranks above one with neither (e.g. a restarted old
/// master that was made a replica and never linked: its offset says nothing about its data).
/// It never overrides priority or offset.
fn rank(assessed: Vec<Assessed>) -> Vec<Assessed> {
    let (mut eligible, excluded): (Vec<_>, Vec<_>) =
        assessed.into_iter().partition(|a| a.exclusions.is_empty());
    eligible.sort_by(|a, b| {
        a.node
            .priority
            .cmp(&b.node.priority)
            .then_with(|| b.offset.cmp(&a.offset))
            .then_with(|| b.synced.cmp(&a.synced))
            .then_with(|| a.node.addr.cmp(&b.node.addr))
    });
    eligible.extend(excluded);
    eligible
}

pub(super) fn no_candidate_reason(assessed: &[Assessed]) -> String {
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
