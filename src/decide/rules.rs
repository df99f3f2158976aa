//! The rule tree: what to do given the record, the observation and the trigger. See the
//! module docs of [`super`] for the rules in the order they are applied.

use super::candidates::{assess, no_candidate_reason, Assessed, Exclusion};
use super::{
    chained_last, followers_of, has_link_error, join, loss, master_of, offset_text, record_command,
    replid_conflict, Action, Candidate, Gate, Plan, Trigger,
};
use crate::config::Policy;
use crate::model::{Addr, NodeObservation, NodeStatus, Observation, Role, TopologyRecord};

/// No record: bootstrap only from an unambiguous picture; never guess.
pub(super) fn without_record(trigger: &Trigger, obs: &Observation) -> Plan {
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

/// Who asked for a failover (or a repair): the operator may name a node and is not held to
/// the cooldown or to a replica still seeing the master.
#[derive(Clone, Copy, Debug)]
enum Intent<'a> {
    Automatic,
    Operator {
        to: Option<&'a Addr>,
        accept_data_loss: bool,
    },
}

impl<'a> Intent<'a> {
    fn is_manual(self) -> bool {
        matches!(self, Intent::Operator { .. })
    }
    fn target(self) -> Option<&'a Addr> {
        match self {
            Intent::Automatic => None,
            Intent::Operator { to, .. } => to,
        }
    }
    fn accepts_data_loss(self) -> bool {
        matches!(
            self,
            Intent::Operator {
                accept_data_loss: true,
                ..
            }
        )
    }
}

/// With a record: the recorded master must be configured, then the trigger picks the rules.
pub(super) fn with_record(
    trigger: &Trigger,
    obs: &Observation,
    rec: &TopologyRecord,
    policy: &Policy,
    gate: &Gate,
) -> Plan {
    let Some(master) = obs.node(&rec.master) else {
        return Plan::refuse(
            format!(
                "recorded master {} is not a configured node of cluster {}; fix the config or re-record the master",
                rec.master, obs.cluster
            ),
            false,
        );
    };
    let rules = Rules {
        obs,
        rec,
        master,
        policy,
        gate,
    };
    match trigger {
        Trigger::Demote { node, .. } => rules.demote(node),
        Trigger::Switchover { to } => rules.switchover(to.as_ref()),
        Trigger::Failover {
            to,
            accept_data_loss,
        } => rules.repair_or_failover(
            trigger,
            Intent::Operator {
                to: to.as_ref(),
                accept_data_loss: *accept_data_loss,
            },
        ),
        Trigger::MasterDown | Trigger::RoleMismatch | Trigger::Periodic => {
            rules.repair_or_failover(trigger, Intent::Automatic)
        }
    }
}

/// One decision's inputs once a record exists (not `reconcile::Ctx`, which is the executor's).
struct Rules<'a> {
    obs: &'a Observation,
    rec: &'a TopologyRecord,
    /// The recorded master's observation (it is a configured node).
    master: &'a NodeObservation,
    policy: &'a Policy,
    gate: &'a Gate,
}

impl Rules<'_> {
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
        let assessed = assess(self.obs, m, self.policy, true, None, &self.gate.holds);
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
        .losing(loss::of_switchover(self.master.reachable()))
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

    fn repair_or_failover(&self, trigger: &Trigger, intent: Intent) -> Plan {
        let m = self.m();
        match self.master.reachable() {
            Some(s) if s.role == Role::Master => self.repair(trigger, intent.is_manual()),
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
                        return self.complete_failover(x, !intent.is_manual());
                    }
                }
                if let Some(x) = claiming.first() {
                    return Plan::refuse(
                        format!("recorded master {m} is unreachable while {x} claims master; operator needed"),
                        false,
                    );
                }
                if !intent.is_manual() {
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
                    if let Some(t) = self
                        .rec
                        .last_failover_at
                        .filter(|_| !self.gate.cooldown_acked)
                    {
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
                self.failover(intent)
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

        let master_status = self.healthy_master();
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
                } else if !s.follows_with_link_up(m)
                    && master_status.is_some_and(|ms| replid_conflict(s, ms).is_some())
                {
                    // Pika refuses its MetaSync for good; INFO only shows the link down.
                    Some((
                        n,
                        format!(
                            "{}'s replication id differs from {m}'s (it needs a full sync)",
                            n.addr
                        ),
                    ))
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
        .losing(loss::of_failover(
            self.obs.node(x).and_then(NodeObservation::reachable),
            self.gate,
        ))
    }

    /// The recorded master is unreachable and nothing vetoed a failover: pick and promote.
    fn failover(&self, intent: Intent) -> Plan {
        let m = self.m();
        let assessed = assess(
            self.obs,
            m,
            self.policy,
            false,
            Some(self.gate),
            &self.gate.holds,
        );
        let candidates: Vec<Candidate> = assessed.iter().map(Assessed::candidate).collect();
        // Every candidate too far behind the master's last seen offset (and nothing else):
        // the operator may accept the loss; the best of them, by the usual ranking without the
        // master as the lag reference, is promoted.
        let lag_only = |a: &&Assessed| {
            !a.exclusions.is_empty()
                && a.exclusions
                    .iter()
                    .all(|e| matches!(e, Exclusion::BehindMaster { .. } | Exclusion::Behind { .. }))
        };
        let none_eligible = assessed.first().is_none_or(|a| !a.exclusions.is_empty());
        let lossy =
            none_eligible && intent.target().is_none() && assessed.iter().any(|a| lag_only(&a));
        let relaxed_gate;
        let relaxed;
        let assessed = if lossy && intent.accepts_data_loss() {
            relaxed_gate = Gate {
                last_master_offset: None,
                ..self.gate.clone()
            };
            relaxed = assess(
                self.obs,
                m,
                self.policy,
                false,
                Some(&relaxed_gate),
                &self.gate.holds,
            );
            &relaxed
        } else {
            &assessed
        };
        let (chosen, overridden) = match intent.target() {
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
                    let mut why = no_candidate_reason(assessed);
                    if lossy {
                        why.push_str(&format!(
                            "; to promote the best of them anyway, accepting that loss: pika-remedy failover --cluster {} --accept-data-loss",
                            self.obs.cluster
                        ));
                    }
                    return Plan::refuse(why, false).ranked(candidates);
                }
            },
        };
        let p = &chosen.node.addr;
        let expected = loss::of_failover(chosen.node.reachable(), self.gate);
        let what = format!(
            "promoting {p} (priority {}, {})",
            chosen.node.priority,
            offset_text(chosen.offset)
        );
        let mut reason = if lossy && intent.accepts_data_loss() {
            format!("operator requested failover accepting data loss; recorded master {m} is unreachable and every candidate is more than {} bytes behind its last seen offset; {what}; accepted estimated loss: {expected}", self.policy.max_lag_bytes)
        } else if intent.is_manual() {
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
                automatic: !intent.is_manual(),
            },
            reason,
        )
        .ranked(candidates)
        .losing(expected)
    }
}
