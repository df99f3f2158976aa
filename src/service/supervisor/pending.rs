//! A queued reconcile (with the alerts it coalesced, deduplicated and bounded) and the
//! ordering helpers of the queue.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::{oneshot, watch};

use super::super::events::{AlertInfo, TriggerSource, MAX_ALERTS_PER_EVENT};
use super::Request;
use crate::decide::{Plan, Trigger};
use crate::reconcile::Outcome;

/// A queued reconcile and everyone waiting for it.
pub(super) struct Pending {
    pub(super) trigger: Trigger,
    pub(super) source: TriggerSource,
    pub(super) alerts: Vec<AlertInfo>,
    pub(super) alert_keys: HashSet<(String, String)>,
    pub(super) alerts_omitted: usize,
    pub(super) waiters: Vec<oneshot::Sender<Outcome>>,
    /// The plan once the reconcile decided it under the lock and started its steps.
    pub(super) progress: Arc<watch::Sender<Option<Plan>>>,
}

impl Pending {
    pub(super) fn new(req: Request, tx: oneshot::Sender<Outcome>) -> Pending {
        let mut p = Pending {
            trigger: req.trigger,
            source: req.source,
            alerts: Vec::new(),
            alert_keys: HashSet::new(),
            alerts_omitted: 0,
            waiters: vec![tx],
            progress: Arc::new(watch::channel(None).0),
        };
        p.add_alerts(req.alerts);
        p
    }

    /// Alerts only (source `alertmanager`): the latest `startsAt` of every alert coalesced
    /// into this request. An observation taken before it may predate what an alert is about,
    /// so only a later one may be reused by the first look. `None` (always observe afresh)
    /// for any other source, without alerts, or when a `startsAt` does not parse.
    pub(super) fn reuse_after(&self) -> Option<std::time::SystemTime> {
        if self.source != TriggerSource::Alertmanager || self.alert_keys.is_empty() {
            return None;
        }
        let mut latest = std::time::UNIX_EPOCH;
        for (_, starts_at) in &self.alert_keys {
            latest = latest.max(humantime::parse_rfc3339_weak(starts_at).ok()?);
        }
        Some(latest)
    }

    pub(super) fn add_alerts(&mut self, alerts: Vec<AlertInfo>) {
        for a in alerts {
            if !self
                .alert_keys
                .insert((a.fingerprint.clone(), a.starts_at.clone()))
            {
                continue;
            }
            if self.alerts.len() < MAX_ALERTS_PER_EVENT {
                self.alerts.push(a);
            } else {
                self.alerts_omitted += 1;
            }
        }
    }
}

/// How a preceding applied plan is described to the callers of the run right after it.
pub(super) fn describe_applied(a: &crate::decide::Action) -> Option<String> {
    use crate::decide::Action;
    Some(match a {
        Action::Failover {
            promote,
            old_master,
            ..
        } => format!("a failover from {old_master} to {promote}"),
        Action::Switchover {
            promote,
            old_master,
            ..
        } => format!("a switchover from {old_master} to {promote}"),
        Action::Demote { node, to } => format!("the demotion of {node} to a replica of {to}"),
        Action::Repoint { nodes, to } => {
            let n: Vec<String> = nodes.iter().map(|n| n.to_string()).collect();
            format!("the repoint of {} to {to}", n.join(", "))
        }
        _ => return None,
    })
}

pub(super) fn auto_rank(t: &Trigger) -> u8 {
    match t {
        Trigger::MasterDown => 3,
        Trigger::RoleMismatch => 2,
        Trigger::Periodic => 1,
        _ => 0,
    }
}
