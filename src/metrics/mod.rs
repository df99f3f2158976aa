//! The `/metrics` exporter: one [`Metrics`] value over a prometheus-client [`Registry`] (no
//! globals). The poller ([`crate::service::poller`]) feeds it observations; the HTTP layer calls
//! [`Metrics::encode`] (OpenMetrics) or [`Metrics::encode_for_accept`] (content negotiation).
//!
//! # Series lifecycle
//! Per-node and per-cluster gauges are written as a *complete set per cluster* on every
//! [`Metrics::observe_cluster`]: every series emitted for that cluster last time and not emitted
//! this time is removed. So a node that becomes unreachable keeps only `node_up 0` and
//! `node_promotion_eligible 0`; its role, link, offsets and info series disappear instead of
//! lingering with stale values. A reachable node always has all three role series
//! (`master`, `slave`, `master&&slave`) with exactly one of them at 1.
//!
//! # Why there is a classic text encoding too
//! prometheus-client writes OpenMetrics only: a counter family `x` is announced as
//! `# TYPE x counter` and sampled as `x_total`. The classic text parser used by
//! `promtool check metrics` sees the sample `x_total` as a *different*, untyped family without
//! HELP, so it reports `no help text` for every counter; better HELP text or units cannot fix
//! that, because the mismatch is in the family name. Prometheus itself scrapes the OpenMetrics
//! text fine. So, like the Go client, we negotiate: Prometheus (which asks for
//! `application/openmetrics-text`) gets OpenMetrics; anything else (curl, promtool, old
//! scrapers) gets the classic 0.0.4 text, produced from the same encoding by renaming counter
//! families to their `_total` sample name and dropping the OpenMetrics-only `# UNIT`/`# EOF`
//! lines. Both are checked in `tests/metrics.rs`.
//!
//! # Files
//! Here: the registration table ([`Metrics`]: one line per series: field, type, name, unit,
//! help), the event counters and the encoders. `series`: label sets and `Tracked` families;
//! `project`: observation → per-node and per-cluster series; `classic`: the 0.0.4 re-encoder.

mod classic;
mod project;
mod series;

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use series::{
    AsMetric, BuildLabels, ClusterLabels, ControlLabels, DbLabels, HistogramFamily, HookLabels,
    LagLabels, LinkStateLabels, LockRefusalLabels, MaintenanceLabels, NodeInfoLabels, NodeLabels,
    ObservationLabels, OutcomeLabels, ReconcileLabels, RecordedMasterLabels, RemediationLabels,
    RoleLabels, SnapshotLabels, Tracked,
};

pub use classic::openmetrics_to_classic;

/// Content type of [`Metrics::encode`] (OpenMetrics 1.0 text).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// Content type of [`Metrics::encode_classic`] (Prometheus text format 0.0.4).
pub const CLASSIC_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `outcome` of a remediation whose steps all applied and were recorded.
pub const REMEDIATION_APPLIED: &str = "applied";
/// `outcome` of a remediation that failed part-way (alerted on by `PikaRemediationFailed`).
pub const REMEDIATION_FAILED: &str = "failed";
/// The `Action::label()`s that mutate nodes, pre-created per cluster.
const REMEDIATION_KINDS: [&str; 4] = ["failover", "switchover", "demote", "repoint"];

/// `holder` of `lock_refusals_total` when the lock was held by this very instance (a bug or a
/// lock left behind by a failed release: alerted on by `PikaRemedyLockRefusals`).
pub const LOCK_HOLDER_SELF: &str = "this_instance";
/// `holder` of `lock_refusals_total` when another instance (or an unreadable value) held it.
pub const LOCK_HOLDER_OTHER: &str = "other_instance";

/// Every metric name starts with this (plus `_`).
pub const PREFIX: &str = "pika_remedy";

/// `default` unless an initialiser is given.
macro_rules! init_or_default {
    () => {
        Default::default()
    };
    ($e:expr) => {
        $e
    };
}

/// The registration table: declares each field of [`Metrics`] and registers it under its name,
/// unit and help text, in table order (which is the exposition order).
macro_rules! metrics_table {
    ($( $field:ident : $ty:ty $(= $init:expr)? => $name:literal, $unit:expr, $help:literal; )*) => {
        /// All metrics of the service. Cheap to share behind an `Arc`; every method takes `&self`.
        pub struct Metrics {
            registry: Registry,
            $( $field: $ty, )*
        }

        impl Metrics {
            pub fn new() -> Self {
                let mut registry = Registry::with_prefix(PREFIX);
                $( let $field: $ty = init_or_default!($($init)?); )*
                $( register(&mut registry, $name, $help, $unit, &$field); )*
                let m = Metrics { registry, $( $field, )* };
                m.build_info
                    .get_or_create(&BuildLabels {
                        version: env!("CARGO_PKG_VERSION").to_string(),
                    })
                    .set(1);
                m
            }
        }
    };
}

fn register(r: &mut Registry, name: &str, help: &str, unit: Option<Unit>, m: &impl AsMetric) {
    match unit {
        Some(u) => r.register_with_unit(name, help, u, m.as_metric()),
        None => r.register(name, help, m.as_metric()),
    }
}

metrics_table! {
    node_up: Tracked<NodeLabels> => "node_up", None,
        "1 if the node answered INFO in the last poll, else 0";
    node_role: Tracked<RoleLabels> => "node_role", None,
        "Role the node reports (master, slave, master&&slave): 1 for the current role, 0 for the others. Absent while the node is unreachable";
    node_expected_role: Tracked<RoleLabels> => "node_expected_role", None,
        "Role the node should have according to the recorded topology: 1 for the expected role, 0 for the others. Absent for nodes not in the record";
    node_link_up: Tracked<NodeLabels> => "node_master_link_up", None,
        "For replicas: 1 if the link to the master (and every Pika DB link) is up, else 0. Absent for masters and unreachable nodes";
    node_link_state: Tracked<LinkStateLabels> => "node_master_link_state", None,
        "For replicas: 1 for the current replication link state (up, down, connecting, full_sync, error), 0 for the others";
    node_offset: Tracked<NodeLabels> => "node_replication_offset", Some(Unit::Bytes),
        "Replication offset: Redis master_repl_offset/slave_repl_offset; Pika slave_repl_offset or the binlog position summed over DBs";
    node_binlog_file: Tracked<DbLabels> => "node_binlog_file_number", None,
        "Pika: binlog file number of each DB (binlog_offset filenum)";
    node_binlog_offset: Tracked<DbLabels> => "node_binlog_file_offset", Some(Unit::Bytes),
        "Pika: offset inside the current binlog file of each DB";
    node_db_link_up: Tracked<DbLabels> => "node_db_link_up", None,
        "Pika replicas: 1 if the replication link of this DB is up, else 0";
    node_replica_lag: Tracked<LagLabels> => "node_replica_lag", Some(Unit::Bytes),
        "Replication lag of the replica `instance` as reported by its master `master` (Pika: binlog bytes summed over DBs; Redis: master offset minus acked offset). Absent while a DB is in full sync";
    node_connected_replicas: Tracked<NodeLabels> => "node_connected_replicas", None,
        "connected_slaves as reported by the node";
    node_eligible: Tracked<NodeLabels> => "node_promotion_eligible", None,
        "1 if the node is a reachable replica with its link up that may be promoted (not never_promote, priority not 0, Pika eligible for election), else 0";
    node_info: Tracked<NodeInfoLabels> => "node_info", None,
        "Engine (pika, redis, unknown) and version of the node; value always 1";
    cluster_nodes: Tracked<ClusterLabels> => "cluster_nodes", None,
        "Number of configured nodes in the cluster";
    cluster_nodes_reachable: Tracked<ClusterLabels> => "cluster_nodes_reachable", None,
        "Number of nodes that answered INFO in the last poll";
    cluster_masters_claimed: Tracked<ClusterLabels> => "cluster_masters_claimed", None,
        "Number of reachable nodes reporting role master";
    cluster_record_present: Tracked<ClusterLabels> => "cluster_record_present", None,
        "1 if a topology record for the cluster could be read from the coordinator (last known), else 0";
    cluster_recorded_master: Tracked<RecordedMasterLabels> => "cluster_recorded_master_info", None,
        "The master according to the recorded topology; value always 1";
    cluster_epoch: Tracked<ClusterLabels> => "cluster_epoch", None,
        "Epoch of the recorded topology (grows by one on every change of master)";
    cluster_last_failover_ts: Tracked<ClusterLabels> => "cluster_last_failover_timestamp", Some(Unit::Seconds),
        "Unix time of the last automatic failover recorded for the cluster";
    cluster_last_failover_age: Tracked<ClusterLabels> => "cluster_last_failover_age", Some(Unit::Seconds),
        "Seconds since the last automatic failover recorded for the cluster, at the last poll";
    cluster_paused: Tracked<ClusterLabels> => "cluster_paused", None,
        "1 if automatic remediation is paused for the cluster (globally or per cluster), else 0";
    cluster_paused_seconds: Family<ClusterLabels, Gauge> => "cluster_paused", Some(Unit::Seconds),
        "How long the shared pause in force for the cluster (its own or the global one) has been set, 0 when none";
    switchover_scheduled: Family<ClusterLabels, Gauge> => "switchover_scheduled_timestamp", Some(Unit::Seconds),
        "Unix time of the switchover scheduled for the cluster (switchover --at), 0 when none";
    node_maintenance: Family<MaintenanceLabels, Gauge> => "node_maintenance", None,
        "1 for a node under operator maintenance (mode no-promote or hands-off) that is in force; absent otherwise";
    node_maintenance_expired: Family<MaintenanceLabels, Gauge> => "node_maintenance_expired", None,
        "1 for a maintenance entry whose expiry passed but that was not cleared (it no longer applies); absent otherwise";
    controls_up: Gauge => "controls_read_ok", None,
        "1 if the last read of the shared controls from the coordinator succeeded, else 0";
    control_changes: Family<ControlLabels, Counter> => "control_changes", None,
        "Changes of the shared controls made through this instance's API, by change";
    webhooks: Family<OutcomeLabels, Counter> => "webhooks", None,
        "Alertmanager webhook requests handled, by outcome";
    notifications: Family<RemediationLabels, Counter> => "notifications", None,
        "Alertmanager notifications by cluster, kind (failover, demotion, refusal) and outcome (sent, failed, dropped), one per Alertmanager URL";
    hook_runs: Family<HookLabels, Counter> => "hook_runs", None,
        "Hook runs ([hooks]) by cluster, hook (pre_failover, post_failover, pre_switchover, post_switchover, post_demote) and result (ok, failed, timeout, spawn_error)";
    reconciles: Family<ReconcileLabels, Counter> => "reconciles", None,
        "Reconciles run, by trigger, planned action and result";
    observations: Family<ObservationLabels, Counter> => "observations", None,
        "Observations a reconcile's first look decided on, by source: poller (the poller's last one, reused: no INFO sent) or fresh (every node asked). The look under the lock is always fresh and not counted";
    remediations: Family<RemediationLabels, Counter> => "remediations", None,
        "Remediations (plans that sent commands to nodes) by kind and outcome";
    remediation_duration: HistogramFamily<RemediationLabels> = Family::new_with_constructor(remediation_histogram) => "remediation_duration", Some(Unit::Seconds),
        "Wall time of remediations from lock to release, by kind and outcome";
    snapshots: Family<SnapshotLabels, Counter> => "snapshots", None,
        "Snapshots (BGSAVE) of diverged nodes before their demotion, by result: ok, failed (the demotion was stopped), skipped (policy report or an accepted loss)";
    diverged_bytes: Family<NodeLabels, Gauge> => "diverged", Some(Unit::Bytes),
        "Estimated bytes a demoted node had beyond its new master (a lower bound for a node that claimed master), at its last demotion";
    lock_held: Family<ClusterLabels, Gauge> => "lock_held", None,
        "1 while the coordinator holds the cluster's failover lock for this instance (a live lease, or one whose release is still being retried), else 0";
    lock_held_seconds: Family<ClusterLabels, Gauge> => "lock_held", Some(Unit::Seconds),
        "How long this instance has held the cluster's failover lock (the oldest lease it may still hold), 0 when it holds none";
    lock_release_pending: Family<ClusterLabels, Gauge> => "lock_release_pending", None,
        "1 while a release of this instance's lock lease failed and is being retried (the store was unreachable), else 0";
    lock_ttl_seconds: Gauge => "lock_ttl", Some(Unit::Seconds),
        "The configured lock TTL (policy.lock_ttl)";
    lock_refusals: Family<LockRefusalLabels, Counter> => "lock_refusals", None,
        "Reconciles that did not act because the cluster's lock was held, by holder (this_instance, other_instance)";
    coordinator_up: Gauge => "coordinator_up", None,
        "1 if the last coordinator request succeeded, else 0";
    poll_duration: HistogramFamily<ClusterLabels> = Family::new_with_constructor(poll_histogram) => "poll_duration", Some(Unit::Seconds),
        "Wall time of one poll of all nodes of a cluster";
    poll_errors: Family<ClusterLabels, Counter> => "poll_errors", None,
        "Node queries that failed during polls (unreachable, timeout, auth, parse)";
    polls_skipped: Family<ClusterLabels, Counter> => "polls_skipped", None,
        "Poll ticks skipped because the previous poll of the cluster was still running";
    owned_clusters: Gauge => "owned_clusters", None,
        "Clusters this instance polls (scale-out: its share; otherwise all configured clusters)";
    members: Gauge => "members", None,
        "Live scale-out members as this instance last read them (1 with scale-out off)";
    cluster_owned: Family<ClusterLabels, Gauge> => "cluster_owned", None,
        "1 if this instance polls the cluster (owns it under scale-out), else 0";
    build_info: Family<BuildLabels, Gauge> => "build_info", None,
        "Version of pika-remedy; value always 1";
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn remediation_histogram() -> Histogram {
    // A remediation is a promotion plus link waits: sub-second on a healthy LAN, up to the
    // policy timeouts (tens of seconds) when a node is slow.
    Histogram::new([0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0])
}

fn poll_histogram() -> Histogram {
    // One poll is an INFO per node in parallel: milliseconds normally, up to the connect +
    // command timeouts (default 2.5 s) when a node hangs.
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    ])
}

impl Metrics {
    /// Create the counters alert rules take `increase()` of at 0, so the first failure is an
    /// increase (a series born at 1 shows no increase), and `lock_held` at 0.
    fn init_cluster_counters(&self, cluster: &str) {
        for kind in REMEDIATION_KINDS {
            for outcome in [REMEDIATION_APPLIED, REMEDIATION_FAILED] {
                let _ = self.remediations.get_or_create(&RemediationLabels {
                    cluster: cluster.to_string(),
                    kind: kind.to_string(),
                    outcome: outcome.to_string(),
                });
            }
        }
        let cl = ClusterLabels {
            cluster: cluster.to_string(),
        };
        let _ = self.lock_held.get_or_create(&cl);
        let _ = self.lock_held_seconds.get_or_create(&cl);
        let _ = self.lock_release_pending.get_or_create(&cl);
        for holder in [LOCK_HOLDER_SELF, LOCK_HOLDER_OTHER] {
            let _ = self.lock_refusals.get_or_create(&LockRefusalLabels {
                cluster: cluster.to_string(),
                holder: holder.to_string(),
            });
        }
        let _ = self.polls_skipped.get_or_create(&cl);
    }

    /// The shared controls as last read (`None`: the read failed; the last values stay).
    pub fn controls(&self, clusters: &[String], doc: Option<&crate::controls::Controls>, now: u64) {
        let Some(doc) = doc else {
            self.controls_up.set(0);
            return;
        };
        self.controls_up.set(1);
        for c in clusters {
            let age = doc
                .pause_for(c, now)
                .map_or(0, |p| now.saturating_sub(p.since));
            self.cluster_paused_seconds
                .get_or_create(&ClusterLabels { cluster: c.clone() })
                .set(age as i64);
            // The Unix time of the cluster's scheduled switchover, 0 when none.
            let at = doc.switchover_for(c).map_or(0, |s| s.at);
            self.switchover_scheduled
                .get_or_create(&ClusterLabels { cluster: c.clone() })
                .set(at as i64);
        }
        self.node_maintenance.clear();
        self.node_maintenance_expired.clear();
        let expired = doc.expired_maintenance(now);
        for m in &doc.maintenance {
            let l = MaintenanceLabels {
                cluster: m.cluster.clone(),
                instance: m.node.to_string(),
                mode: m.mode.as_str().to_string(),
            };
            if expired.iter().any(|e| std::ptr::eq(*e, m)) {
                self.node_maintenance_expired.get_or_create(&l).set(1);
            } else {
                self.node_maintenance.get_or_create(&l).set(1);
            }
        }
    }

    /// A change of the shared controls went through this instance.
    pub fn control_changed(&self, change: &str) {
        self.control_changes
            .get_or_create(&ControlLabels {
                change: change.to_string(),
            })
            .inc();
    }

    /// One poll of `cluster` finished after `duration` with `errors` failed node queries.
    pub fn poll_done(&self, cluster: &str, duration: Duration, errors: u64) {
        let l = ClusterLabels {
            cluster: cluster.to_string(),
        };
        self.poll_duration
            .get_or_create(&l)
            .observe(duration.as_secs_f64());
        // Touch the counter even for 0 so the series exists from the first poll on
        // (`rate()` and `increase()` need a starting sample).
        self.poll_errors.get_or_create(&l).inc_by(errors);
    }

    /// A poll tick of `cluster` was skipped because the previous poll was still running.
    pub fn poll_skipped(&self, cluster: &str) {
        self.polls_skipped
            .get_or_create(&ClusterLabels {
                cluster: cluster.to_string(),
            })
            .inc();
    }

    /// A reconcile's first look: on the poller's observation (`reused`) or a fresh one.
    pub fn observation(&self, reused: bool) {
        self.observations
            .get_or_create(&ObservationLabels {
                source: if reused { "poller" } else { "fresh" }.to_string(),
            })
            .inc();
    }

    /// One notification to one Alertmanager: `kind` (`notify::Kind::label`), `outcome` sent/failed/dropped.
    pub fn notification(&self, cluster: &str, kind: &str, outcome: &str) {
        self.notifications
            .get_or_create(&RemediationLabels {
                cluster: cluster.to_string(),
                kind: kind.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// One webhook request handled, e.g. `accepted`, `unauthorized`, `bad_request`, `ignored`.
    pub fn webhook(&self, outcome: &str) {
        self.webhooks
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// One hook run: `hook` (`hooks::Hook::name`), `result` (`hooks::HookResult::as_str`).
    pub fn hook_run(&self, cluster: &str, hook: &str, result: &str) {
        self.hook_runs
            .get_or_create(&HookLabels {
                cluster: cluster.to_string(),
                hook: hook.to_string(),
                result: result.to_string(),
            })
            .inc();
    }

    /// One reconcile of `cluster`: `Trigger::label()`, `Action::label()`, and the result label (`Result_::metric_label()` in `reconcile`).
    pub fn reconcile(&self, cluster: &str, trigger: &str, action: &str, result: &str) {
        self.reconciles
            .get_or_create(&ReconcileLabels {
                cluster: cluster.to_string(),
                trigger: trigger.to_string(),
                action: action.to_string(),
                result: result.to_string(),
            })
            .inc();
    }

    /// One remediation of `cluster` (a plan that sent mutating commands): `kind` is
    /// `Action::label()`, `outcome` is [`REMEDIATION_APPLIED`] or [`REMEDIATION_FAILED`]
    /// (the alert rule `PikaRemediationFailed` matches `outcome="failed"`).
    pub fn remediation(&self, cluster: &str, kind: &str, outcome: &str, duration: Duration) {
        let l = RemediationLabels {
            cluster: cluster.to_string(),
            kind: kind.to_string(),
            outcome: outcome.to_string(),
        };
        self.remediations.get_or_create(&l).inc();
        self.remediation_duration
            .get_or_create(&l)
            .observe(duration.as_secs_f64());
    }

    /// A [`crate::decide::Step::Diverged`] ran: `result` is `ok`, `failed` or `skipped`;
    /// `bytes` the estimate for `node`.
    pub fn snapshot(&self, cluster: &str, node: &str, result: &str, bytes: Option<u64>) {
        self.snapshots
            .get_or_create(&SnapshotLabels {
                cluster: cluster.to_string(),
                result: result.to_string(),
            })
            .inc();
        if let Some(b) = bytes {
            self.diverged_bytes
                .get_or_create(&NodeLabels {
                    cluster: cluster.to_string(),
                    instance: node.to_string(),
                })
                .set(i64::try_from(b).unwrap_or(i64::MAX));
        }
    }

    pub fn lock_held(&self, cluster: &str, held: bool) {
        self.lock_held
            .get_or_create(&ClusterLabels {
                cluster: cluster.to_string(),
            })
            .set(i64::from(held));
    }

    /// Set `lock_held`, `lock_held_seconds` and `lock_release_pending` of every cluster in
    /// `clusters` from what the coordinator says it holds for this instance, and `lock_ttl`.
    pub fn locks(&self, clusters: &[String], held: &[crate::coord::HeldLock], ttl: Duration) {
        self.lock_ttl_seconds.set(ttl.as_secs() as i64);
        for c in clusters {
            let mine: Vec<_> = held.iter().filter(|h| &h.cluster == c).collect();
            let l = ClusterLabels { cluster: c.clone() };
            let age = mine.iter().map(|h| h.held_for).max().unwrap_or_default();
            self.lock_held
                .get_or_create(&l)
                .set(i64::from(!mine.is_empty()));
            self.lock_held_seconds
                .get_or_create(&l)
                .set(age.as_secs() as i64);
            self.lock_release_pending
                .get_or_create(&l)
                .set(i64::from(mine.iter().any(|h| h.release_pending)));
        }
    }

    /// A reconcile of `cluster` found the lock held; `by_self`: by this very instance.
    pub fn lock_refused(&self, cluster: &str, by_self: bool) {
        let holder = if by_self {
            LOCK_HOLDER_SELF
        } else {
            LOCK_HOLDER_OTHER
        };
        self.lock_refusals
            .get_or_create(&LockRefusalLabels {
                cluster: cluster.to_string(),
                holder: holder.to_string(),
            })
            .inc();
    }

    /// Which of `clusters` this instance polls (`owned`, same order) and how many members
    /// share them.
    pub fn ownership(&self, clusters: &[String], owned: &[bool], members: usize) {
        let mut n = 0;
        for (c, o) in clusters.iter().zip(owned) {
            n += usize::from(*o);
            self.cluster_owned
                .get_or_create(&ClusterLabels { cluster: c.clone() })
                .set(i64::from(*o));
        }
        self.owned_clusters.set(n as i64);
        self.members.set(members as i64);
    }

    pub fn coordinator_up(&self, up: bool) {
        self.coordinator_up.set(i64::from(up));
    }

    /// The OpenMetrics text (ends with `# EOF`). Serve with [`CONTENT_TYPE`].
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; an Err could only come from a broken label
        // encoder, and a scrape should then still get what was written so far.
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            tracing::warn!("metrics encoding failed part-way");
        }
        out
    }

    /// The classic Prometheus text format 0.0.4. Serve with [`CLASSIC_CONTENT_TYPE`].
    pub fn encode_classic(&self) -> String {
        openmetrics_to_classic(&self.encode())
    }

    /// Content negotiation for `GET /metrics`: OpenMetrics if the `Accept` header asks for
    /// `application/openmetrics-text` (Prometheus does), else the classic text format.
    pub fn encode_for_accept(&self, accept: Option<&str>) -> (&'static str, String) {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => (CONTENT_TYPE, self.encode()),
            _ => (CLASSIC_CONTENT_TYPE, self.encode_classic()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation() {
        let m = Metrics::new();
        let (ct, body) = m.encode_for_accept(Some(
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        ));
        assert_eq!(ct, CONTENT_TYPE);
        assert!(body.ends_with("# EOF\n"));
        let (ct, body) = m.encode_for_accept(None);
        assert_eq!(ct, CLASSIC_CONTENT_TYPE);
        assert!(!body.contains("# EOF"));
        assert!(body.contains("pika_remedy_build_info{version=\""));
    }
}
