//! Operator controls shared by every instance, stored in the coordinator (one document, updated
//! by compare-and-set): pauses (global or per cluster), per-node maintenance (`no-promote`,
//! `hands-off`) and cooldown acknowledgements. Pure data and rules here; the store is the
//! [`Coordinator`]'s `read_controls`/`write_controls`, and [`update`] retries the CAS.
//!
//! Times are Unix seconds in memory and RFC 3339 (UTC, seconds) in JSON, in the store and in
//! every output. An entry whose `until` has passed no longer applies; it stays stored until it
//! is cleared, so "maintenance expired without being cleared" can be seen (and alerted on).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::coord::{CasOutcome, CoordError, Coordinator};
use crate::decide::NodeHold;
use crate::model::Addr;

/// RFC 3339 (UTC, whole seconds) for Unix seconds.
pub fn rfc3339(secs: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(secs)).to_string()
}

/// Unix seconds from an RFC 3339 time.
pub fn parse_rfc3339(s: &str) -> Result<u64, String> {
    humantime::parse_rfc3339_weak(s)
        .map_err(|e| format!("{s:?} is not an RFC 3339 time: {e}"))?
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .map_err(|_| format!("{s:?} is before 1970"))
}

/// serde: `u64` Unix seconds as an RFC 3339 string.
pub mod time_rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::rfc3339(*v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_rfc3339(&s).map_err(serde::de::Error::custom)
    }
}

/// serde: `Option<u64>` Unix seconds as an RFC 3339 string or null.
pub mod opt_time_rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(t) => s.serialize_some(&super::rfc3339(*t)),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        match Option::<String>::deserialize(d)? {
            Some(s) => super::parse_rfc3339(&s)
                .map(Some)
                .map_err(serde::de::Error::custom),
            None => Ok(None),
        }
    }
}

/// No automatic action (manual triggers still run) for one cluster or, with `cluster: null`, all.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pause {
    /// `None`: every cluster.
    pub cluster: Option<String>,
    pub reason: String,
    pub who: String,
    #[serde(with = "time_rfc3339")]
    pub since: u64,
    /// Lifts itself at this time.
    #[serde(default, with = "opt_time_rfc3339")]
    pub until: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MaintenanceMode {
    /// Never a promotion candidate (commands such as `SLAVEOF` may still be sent to it).
    NoPromote,
    /// No command at all is sent to it; a plan that would need it is refused.
    HandsOff,
}

impl MaintenanceMode {
    pub fn as_str(self) -> &'static str {
        match self {
            MaintenanceMode::NoPromote => "no-promote",
            MaintenanceMode::HandsOff => "hands-off",
        }
    }
}

impl std::str::FromStr for MaintenanceMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "no-promote" => Ok(MaintenanceMode::NoPromote),
            "hands-off" => Ok(MaintenanceMode::HandsOff),
            _ => Err(format!(
                "unknown maintenance mode {s:?} (no-promote or hands-off)"
            )),
        }
    }
}

/// Planned work on one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Maintenance {
    pub cluster: String,
    pub node: Addr,
    pub mode: MaintenanceMode,
    pub reason: String,
    pub who: String,
    #[serde(with = "time_rfc3339")]
    pub since: u64,
    #[serde(default, with = "opt_time_rfc3339")]
    pub until: Option<u64>,
}

/// An operator lifted the cooldown after the automatic failover recorded at `failover_at`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub cluster: String,
    #[serde(with = "time_rfc3339")]
    pub failover_at: u64,
    pub reason: String,
    pub who: String,
    #[serde(with = "time_rfc3339")]
    pub at: u64,
}

/// A switchover scheduled for later (`switchover --at`), one per cluster. A `serve` instance
/// runs it when `at` comes: it removes the entry by compare-and-set first (so exactly one
/// instance runs it), then submits an ordinary switchover to the cluster's single-flight
/// reconcile (lock, second look, steps). While the cluster is paused it is held; once more
/// than `max_delay_secs` late it expires without running. Both outcomes are audited.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduledSwitchover {
    pub cluster: String,
    /// The replica to promote; `None`: the best one at that time.
    #[serde(default)]
    pub to: Option<Addr>,
    #[serde(with = "time_rfc3339")]
    pub at: u64,
    pub who: String,
    /// When it was scheduled.
    #[serde(with = "time_rfc3339")]
    pub since: u64,
    /// Run at most this late (e.g. held by a pause or with no instance running); then it expires.
    #[serde(default = "default_max_delay")]
    pub max_delay_secs: u64,
    #[serde(default)]
    pub reason: String,
}

/// How late a scheduled switchover may still run by default (`--max-delay`).
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(300);

fn default_max_delay() -> u64 {
    DEFAULT_MAX_DELAY.as_secs()
}

/// Where a scheduled switchover stands at a given time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScheduleState {
    /// `at` has not come yet.
    Waiting,
    /// Due: a serve instance runs it now (unless paused).
    Due,
    /// More than `max_delay_secs` late: it will not run.
    Expired,
}

impl ScheduleState {
    pub fn as_str(self) -> &'static str {
        match self {
            ScheduleState::Waiting => "waiting",
            ScheduleState::Due => "due",
            ScheduleState::Expired => "expired",
        }
    }
}

impl ScheduledSwitchover {
    pub fn state(&self, now: u64) -> ScheduleState {
        if now < self.at {
            ScheduleState::Waiting
        } else if now > self.at.saturating_add(self.max_delay_secs) {
            ScheduleState::Expired
        } else {
            ScheduleState::Due
        }
    }

    /// "switchover of cluster c to n2 at 2026-…" (for audit lines and status).
    pub fn describe(&self) -> String {
        let to = self
            .to
            .as_ref()
            .map_or_else(|| "the best replica".to_string(), ToString::to_string);
        format!(
            "switchover of cluster {} to {to} at {}",
            self.cluster,
            rfc3339(self.at)
        )
    }
}

/// The whole controls document.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Controls {
    #[serde(default)]
    pub pauses: Vec<Pause>,
    #[serde(default)]
    pub maintenance: Vec<Maintenance>,
    #[serde(default)]
    pub acks: Vec<Ack>,
    /// Scheduled switchovers (at most one per cluster).
    #[serde(default)]
    pub switchovers: Vec<ScheduledSwitchover>,
}

fn live(until: Option<u64>, now: u64) -> bool {
    until.is_none_or(|u| now < u)
}

impl Controls {
    /// The pause in force for `cluster` at `now`: the cluster's own, else the global one.
    pub fn pause_for(&self, cluster: &str, now: u64) -> Option<&Pause> {
        let active = |p: &&Pause| live(p.until, now);
        self.pauses
            .iter()
            .filter(active)
            .find(|p| p.cluster.as_deref() == Some(cluster))
            .or_else(|| {
                self.pauses
                    .iter()
                    .filter(active)
                    .find(|p| p.cluster.is_none())
            })
    }

    /// Maintenance in force on `cluster`'s nodes at `now`, as decide's input.
    pub fn holds(&self, cluster: &str, now: u64) -> BTreeMap<Addr, NodeHold> {
        self.maintenance
            .iter()
            .filter(|m| m.cluster == cluster && live(m.until, now))
            .map(|m| {
                (
                    m.node.clone(),
                    NodeHold {
                        hands_off: m.mode == MaintenanceMode::HandsOff,
                        reason: format!("maintenance {} ({})", m.mode.as_str(), m.reason),
                    },
                )
            })
            .collect()
    }

    /// Has the cooldown of the automatic failover at `failover_at` been acknowledged?
    pub fn acked(&self, cluster: &str, failover_at: u64) -> bool {
        self.acks
            .iter()
            .any(|a| a.cluster == cluster && a.failover_at == failover_at)
    }

    /// Maintenance entries whose expiry passed but that were not cleared.
    pub fn expired_maintenance(&self, now: u64) -> Vec<&Maintenance> {
        self.maintenance
            .iter()
            .filter(|m| !live(m.until, now))
            .collect()
    }

    /// Set (or replace) the pause of `pause.cluster`.
    pub fn set_pause(&mut self, pause: Pause) {
        self.pauses.retain(|p| p.cluster != pause.cluster);
        self.pauses.push(pause);
    }

    /// Remove the pause of `cluster` (`None`: the global one). True if there was one.
    pub fn clear_pause(&mut self, cluster: Option<&str>) -> bool {
        let before = self.pauses.len();
        self.pauses.retain(|p| p.cluster.as_deref() != cluster);
        before != self.pauses.len()
    }

    pub fn set_maintenance(&mut self, m: Maintenance) {
        self.maintenance
            .retain(|x| !(x.cluster == m.cluster && x.node == m.node));
        self.maintenance.push(m);
    }

    pub fn clear_maintenance(&mut self, cluster: &str, node: &Addr) -> bool {
        let before = self.maintenance.len();
        self.maintenance
            .retain(|x| !(x.cluster == cluster && &x.node == node));
        before != self.maintenance.len()
    }

    /// The scheduled switchover of `cluster`, if any.
    pub fn switchover_for(&self, cluster: &str) -> Option<&ScheduledSwitchover> {
        self.switchovers.iter().find(|s| s.cluster == cluster)
    }

    /// Schedule a switchover; a cluster already having one is refused unless `replace`.
    pub fn schedule(&mut self, s: ScheduledSwitchover, replace: bool) -> Result<(), String> {
        if let Some(old) = self.switchover_for(&s.cluster) {
            if !replace {
                return Err(format!(
                    "cluster {}: a {} is already scheduled (by {}); cancel it or pass --replace",
                    s.cluster,
                    old.describe(),
                    old.who
                ));
            }
        }
        self.switchovers.retain(|x| x.cluster != s.cluster);
        self.switchovers.push(s);
        Ok(())
    }

    /// Remove `cluster`'s scheduled switchover; the removed entry.
    pub fn unschedule(&mut self, cluster: &str) -> Option<ScheduledSwitchover> {
        let i = self.switchovers.iter().position(|s| s.cluster == cluster)?;
        Some(self.switchovers.remove(i))
    }

    /// Record an acknowledgement (one per cluster: the latest failover's).
    pub fn ack(&mut self, ack: Ack) {
        self.acks.retain(|a| a.cluster != ack.cluster);
        self.acks.push(ack);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ControlsError {
    #[error(transparent)]
    Coord(#[from] CoordError),
    /// The change itself was refused (e.g. nothing to clear).
    #[error("{0}")]
    Refused(String),
    #[error("controls: the compare-and-set kept conflicting ({0} attempts); try again")]
    Contended(u32),
}

impl ControlsError {
    pub fn is_retryable(&self) -> bool {
        match self {
            ControlsError::Coord(e) => e.is_retryable(),
            ControlsError::Refused(_) => false,
            ControlsError::Contended(_) => true,
        }
    }
}

/// Read the controls (an empty document when none were ever written).
pub async fn read<C: Coordinator>(coord: &C) -> Result<Controls, CoordError> {
    Ok(coord
        .read_controls()
        .await?
        .map(|v| v.value)
        .unwrap_or_default())
}

/// Read, change with `f`, compare-and-set; retried (bounded) on a concurrent change.
pub async fn update<C: Coordinator>(
    coord: &C,
    mut f: impl FnMut(&mut Controls) -> Result<(), String>,
) -> Result<Controls, ControlsError> {
    const ATTEMPTS: u32 = 10;
    for _ in 0..ATTEMPTS {
        let current = coord.read_controls().await?;
        let (mut doc, version) = match current {
            Some(v) => (v.value, Some(v.version)),
            None => (Controls::default(), None),
        };
        f(&mut doc).map_err(ControlsError::Refused)?;
        match coord.write_controls(&doc, version).await? {
            CasOutcome::Written(_) => return Ok(doc),
            CasOutcome::Conflict => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    Err(ControlsError::Contended(ATTEMPTS))
}

/// One operator change to the controls (CLI and API share it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Pause {
        cluster: Option<String>,
        reason: String,
        expires_in: Option<Duration>,
    },
    Resume {
        cluster: Option<String>,
    },
    SetMaintenance {
        cluster: String,
        node: Addr,
        mode: MaintenanceMode,
        reason: String,
        expires_in: Option<Duration>,
    },
    ClearMaintenance {
        cluster: String,
        node: Addr,
    },
    /// Lift the cooldown of the cluster's last automatic failover.
    Ack {
        cluster: String,
        reason: String,
    },
    /// Schedule a switchover at `at` (Unix seconds); `replace` an existing one.
    ScheduleSwitchover {
        cluster: String,
        to: Option<Addr>,
        at: u64,
        max_delay: Duration,
        reason: String,
        replace: bool,
    },
    /// Cancel the cluster's scheduled switchover.
    CancelSwitchover {
        cluster: String,
    },
}

fn scope(cluster: &Option<String>) -> String {
    cluster
        .as_deref()
        .map_or_else(|| "all clusters".to_string(), |c| format!("cluster {c}"))
}

fn until_text(until: Option<u64>) -> String {
    until.map_or_else(String::new, |u| format!(" until {}", rfc3339(u)))
}

impl Change {
    /// The clusters whose audit trail gets the event (`None`: every cluster).
    pub fn cluster(&self) -> Option<&str> {
        match self {
            Change::Pause { cluster, .. } | Change::Resume { cluster } => cluster.as_deref(),
            Change::SetMaintenance { cluster, .. }
            | Change::ClearMaintenance { cluster, .. }
            | Change::Ack { cluster, .. }
            | Change::ScheduleSwitchover { cluster, .. }
            | Change::CancelSwitchover { cluster } => Some(cluster),
        }
    }

    /// The label of the `control_changes_total` metric.
    pub fn label(&self) -> &'static str {
        match self {
            Change::Pause { .. } => "pause",
            Change::Resume { .. } => "resume",
            Change::SetMaintenance { .. } => "maintenance_set",
            Change::ClearMaintenance { .. } => "maintenance_clear",
            Change::Ack { .. } => "ack",
            Change::ScheduleSwitchover { .. } => "switchover_schedule",
            Change::CancelSwitchover { .. } => "switchover_cancel",
        }
    }
}

/// Apply `change` as `who` at `now` (compare-and-set, retried). Returns the new document and the
/// audit sentence ("paused by operator: cluster a until … (reason; by op)").
pub async fn apply<C: Coordinator>(
    coord: &C,
    change: &Change,
    who: &str,
    now: u64,
) -> Result<(Controls, String), ControlsError> {
    let secs = |d: &Option<Duration>| d.map(|d| now.saturating_add(d.as_secs().max(1)));
    let text = match change {
        Change::Pause {
            cluster,
            reason,
            expires_in,
        } => format!(
            "paused by operator: {}{} ({reason}; by {who})",
            scope(cluster),
            until_text(secs(expires_in))
        ),
        Change::Resume { cluster } => {
            format!("resumed by operator: {} (by {who})", scope(cluster))
        }
        Change::SetMaintenance {
            cluster,
            node,
            mode,
            reason,
            expires_in,
        } => format!(
            "maintenance {} on {node} (cluster {cluster}) by {who}{}: {reason}",
            mode.as_str(),
            until_text(secs(expires_in))
        ),
        Change::ClearMaintenance { cluster, node } => {
            format!("maintenance cleared on {node} (cluster {cluster}) by {who}")
        }
        Change::Ack { cluster, reason } => {
            format!("cooldown acknowledged on cluster {cluster} by {who}: {reason}")
        }
        Change::ScheduleSwitchover {
            cluster,
            to,
            at,
            reason,
            max_delay,
            ..
        } => format!(
            "switchover scheduled by {who}: {} (runs at most {} late){}",
            scheduled(cluster, to, *at, *max_delay, reason, who, now).describe(),
            humantime::format_duration(*max_delay),
            if reason.is_empty() {
                String::new()
            } else {
                format!(": {reason}")
            }
        ),
        Change::CancelSwitchover { cluster } => {
            format!("scheduled switchover of cluster {cluster} cancelled by {who}")
        }
    };
    // The failover an ack refers to comes from the record, read once.
    let failover_at = match change {
        Change::Ack { cluster, .. } => {
            let rec = coord.read_record(cluster).await?;
            match rec.and_then(|r| r.value.last_failover_at) {
                Some(t) => Some(t),
                None => {
                    return Err(ControlsError::Refused(format!(
                        "cluster {cluster}: no automatic failover recorded; nothing to acknowledge"
                    )))
                }
            }
        }
        _ => None,
    };
    let doc = update(coord, |doc| {
        match change {
            Change::Pause {
                cluster,
                reason,
                expires_in,
            } => doc.set_pause(Pause {
                cluster: cluster.clone(),
                reason: reason.clone(),
                who: who.to_string(),
                since: now,
                until: secs(expires_in),
            }),
            Change::Resume { cluster } => {
                if !doc.clear_pause(cluster.as_deref()) {
                    return Err(format!("{} is not paused", scope(cluster)));
                }
            }
            Change::SetMaintenance {
                cluster,
                node,
                mode,
                reason,
                expires_in,
            } => doc.set_maintenance(Maintenance {
                cluster: cluster.clone(),
                node: node.clone(),
                mode: *mode,
                reason: reason.clone(),
                who: who.to_string(),
                since: now,
                until: secs(expires_in),
            }),
            Change::ClearMaintenance { cluster, node } => {
                if !doc.clear_maintenance(cluster, node) {
                    return Err(format!(
                        "{node} (cluster {cluster}) is not under maintenance"
                    ));
                }
            }
            Change::Ack { cluster, reason } => doc.ack(Ack {
                cluster: cluster.clone(),
                failover_at: failover_at.unwrap_or(0),
                reason: reason.clone(),
                who: who.to_string(),
                at: now,
            }),
            Change::ScheduleSwitchover {
                cluster,
                to,
                at,
                max_delay,
                reason,
                replace,
            } => {
                if *at <= now {
                    return Err(format!(
                        "cluster {cluster}: {} is not in the future",
                        rfc3339(*at)
                    ));
                }
                doc.schedule(
                    scheduled(cluster, to, *at, *max_delay, reason, who, now),
                    *replace,
                )?
            }
            Change::CancelSwitchover { cluster } => {
                if doc.unschedule(cluster).is_none() {
                    return Err(format!("cluster {cluster}: no switchover is scheduled"));
                }
            }
        }
        Ok(())
    })
    .await?;
    Ok((doc, text))
}

fn scheduled(
    cluster: &str,
    to: &Option<Addr>,
    at: u64,
    max_delay: Duration,
    reason: &str,
    who: &str,
    now: u64,
) -> ScheduledSwitchover {
    ScheduledSwitchover {
        cluster: cluster.to_string(),
        to: to.clone(),
        at,
        who: who.to_string(),
        since: now,
        max_delay_secs: max_delay.as_secs(),
        reason: reason.to_string(),
    }
}

/// Take `expected` (a due or expired scheduled switchover) out of the document by
/// compare-and-set. `Ok(true)`: this caller removed it and alone may act on it; `Ok(false)`:
/// it is gone or was changed (another instance took it, or an operator cancelled or replaced it).
pub async fn claim_switchover<C: Coordinator>(
    coord: &C,
    expected: &ScheduledSwitchover,
) -> Result<bool, ControlsError> {
    match update(coord, |doc| {
        if doc.switchover_for(&expected.cluster) != Some(expected) {
            return Err("gone".into());
        }
        doc.unschedule(&expected.cluster);
        Ok(())
    })
    .await
    {
        Ok(_) => Ok(true),
        Err(ControlsError::Refused(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Who is acting, for the `who` fields: `$PIKA_REMEDY_OPERATOR`, else `$USER@host`.
pub fn operator() -> String {
    if let Ok(v) = std::env::var("PIKA_REMEDY_OPERATOR") {
        if !v.trim().is_empty() {
            return v;
        }
    }
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    if host.is_empty() {
        user
    } else {
        format!("{user}@{host}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Addr {
        s.parse().expect("addr")
    }

    #[test]
    fn pause_scope_and_expiry() {
        let mut c = Controls::default();
        c.set_pause(Pause {
            cluster: None,
            reason: "upgrade".into(),
            who: "op".into(),
            since: 100,
            until: Some(200),
        });
        assert!(c.pause_for("a", 150).is_some());
        assert!(c.pause_for("a", 200).is_none(), "expired at until");
        c.set_pause(Pause {
            cluster: Some("b".into()),
            reason: "b work".into(),
            who: "op".into(),
            since: 100,
            until: None,
        });
        assert_eq!(
            c.pause_for("b", 150).map(|p| p.reason.as_str()),
            Some("b work")
        );
        assert_eq!(
            c.pause_for("b", 500).map(|p| p.reason.as_str()),
            Some("b work")
        );
        assert!(c.clear_pause(None));
        assert!(c.pause_for("a", 150).is_none());
        assert!(!c.clear_pause(None));
    }

    #[test]
    fn maintenance_holds_and_expired() {
        let mut c = Controls::default();
        c.set_maintenance(Maintenance {
            cluster: "a".into(),
            node: addr("127.0.0.1:1"),
            mode: MaintenanceMode::HandsOff,
            reason: "disk".into(),
            who: "op".into(),
            since: 0,
            until: Some(10),
        });
        let h = c.holds("a", 5);
        assert!(h[&addr("127.0.0.1:1")].hands_off);
        assert!(h[&addr("127.0.0.1:1")].reason.contains("hands-off (disk)"));
        assert!(c.holds("b", 5).is_empty());
        assert!(c.holds("a", 10).is_empty());
        assert_eq!(c.expired_maintenance(10).len(), 1);
        assert!(c.clear_maintenance("a", &addr("127.0.0.1:1")));
        assert!(c.maintenance.is_empty());
    }

    #[test]
    fn one_scheduled_switchover_per_cluster_with_its_state() {
        let s = ScheduledSwitchover {
            cluster: "a".into(),
            to: None,
            at: 100,
            who: "op".into(),
            since: 50,
            max_delay_secs: 10,
            reason: String::new(),
        };
        assert_eq!(s.state(99), ScheduleState::Waiting);
        assert_eq!(s.state(100), ScheduleState::Due);
        assert_eq!(s.state(110), ScheduleState::Due);
        assert_eq!(s.state(111), ScheduleState::Expired);
        let mut c = Controls::default();
        c.schedule(s.clone(), false).expect("first");
        let later = ScheduledSwitchover {
            at: 200,
            ..s.clone()
        };
        assert!(c.schedule(later.clone(), false).is_err(), "one per cluster");
        c.schedule(later, true).expect("replaced");
        assert_eq!(c.switchover_for("a").map(|s| s.at), Some(200));
        c.schedule(
            ScheduledSwitchover {
                cluster: "b".into(),
                ..s
            },
            false,
        )
        .expect("another cluster");
        assert!(c.unschedule("a").is_some());
        assert!(c.unschedule("a").is_none());
        // Older documents (no `switchovers`) still parse.
        let old: Controls = serde_json::from_str(r#"{"pauses":[]}"#).expect("old doc");
        assert!(old.switchovers.is_empty());
    }

    #[test]
    fn json_uses_rfc3339() {
        let mut c = Controls::default();
        c.ack(Ack {
            cluster: "a".into(),
            failover_at: 1_700_000_000,
            reason: "checked".into(),
            who: "op".into(),
            at: 1_700_000_060,
        });
        let text = serde_json::to_string(&c).expect("json");
        assert!(text.contains("\"2023-11-14T22:13:20Z\""), "{text}");
        let back: Controls = serde_json::from_str(&text).expect("parse");
        assert_eq!(back, c);
        assert!(back.acked("a", 1_700_000_000));
        assert!(!back.acked("a", 1_700_000_001));
    }
}
