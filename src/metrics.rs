//! The `/metrics` exporter: one [`Metrics`] value over a prometheus-client [`Registry`] (no
//! globals). The poller ([`crate::poller`]) feeds it observations; the HTTP layer calls
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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::model::{Addr, LinkState, Observation, Role, TopologyRecord};
use crate::reconcile::Result_;

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

/// The three roles, always exported together for a reachable node.
const ROLES: [Role; 3] = [Role::Master, Role::Slave, Role::MasterSlave];
const LINK_STATES: [LinkState; 5] = [
    LinkState::Up,
    LinkState::Down,
    LinkState::Connecting,
    LinkState::FullSync,
    LinkState::Error,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeLabels {
    cluster: String,
    instance: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabels {
    cluster: String,
    instance: String,
    role: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LinkStateLabels {
    cluster: String,
    instance: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DbLabels {
    cluster: String,
    instance: String,
    db: String,
}

/// `instance` is the replica; `master` is the node that reported the lag.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LagLabels {
    cluster: String,
    instance: String,
    master: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NodeInfoLabels {
    cluster: String,
    instance: String,
    engine: String,
    version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClusterLabels {
    cluster: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RecordedMasterLabels {
    cluster: String,
    master: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReconcileLabels {
    cluster: String,
    trigger: String,
    action: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RemediationLabels {
    cluster: String,
    kind: String,
    outcome: String,
}

/// `holder` is [`LOCK_HOLDER_SELF`] or [`LOCK_HOLDER_OTHER`].
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LockRefusalLabels {
    cluster: String,
    holder: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// A gauge family whose series are replaced as a whole set per cluster (see module docs).
struct Tracked<L: Clone + Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static> {
    family: Family<L, Gauge>,
    emitted: Mutex<HashMap<String, HashSet<L>>>,
}

impl<L> Tracked<L>
where
    L: Clone + Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static,
{
    fn new() -> Self {
        Tracked {
            family: Family::default(),
            emitted: Mutex::new(HashMap::new()),
        }
    }

    /// Set exactly these series for `cluster`; remove the ones set last time and not now.
    fn replace(&self, cluster: &str, series: Vec<(L, i64)>) {
        let mut emitted = match self.emitted.lock() {
            Ok(g) => g,
            // A panic while holding this lock cannot leave the map inconsistent in a way that
            // matters more than losing metrics, so keep going with the inner value.
            Err(poisoned) => poisoned.into_inner(),
        };
        let now: HashSet<L> = series.iter().map(|(l, _)| l.clone()).collect();
        if let Some(before) = emitted.get(cluster) {
            for stale in before.difference(&now) {
                self.family.remove(stale);
            }
        }
        for (labels, value) in series {
            self.family.get_or_create(&labels).set(value);
        }
        emitted.insert(cluster.to_string(), now);
    }
}

fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn node_labels(cluster: &str, instance: &str) -> NodeLabels {
    NodeLabels {
        cluster: cluster.to_string(),
        instance: instance.to_string(),
    }
}

/// Label for [`Metrics::reconcile`]'s `result` from a reconcile result.
pub fn result_label(r: &Result_) -> &'static str {
    match r {
        Result_::NoAction => "no_action",
        Result_::Refused => "refused",
        Result_::DryRun => "dry_run",
        Result_::LockHeld { .. } => "lock_held",
        Result_::PlanChanged => "plan_changed",
        Result_::Applied => "applied",
        Result_::Failed { .. } => "failed",
        Result_::CoordinatorUnreachable { .. } => "coordinator_unreachable",
        Result_::InProgress => "in_progress",
    }
}

/// The name under which a master's replica line is exported: the configured address of the
/// node with that ip and port if there is one (so it joins with the node's other series),
/// otherwise `ip:port` as the master printed it.
fn replica_instance(obs: &Observation, ip: &str, port: u16) -> String {
    obs.nodes
        .iter()
        .find(|n| n.addr.host == ip && n.addr.port == port)
        .map(|n| n.addr.to_string())
        .unwrap_or_else(|| Addr::new(ip, port).to_string())
}

/// All metrics of the service. Cheap to share behind an `Arc`; every method takes `&self`.
pub struct Metrics {
    registry: Registry,
    // Per node.
    node_up: Tracked<NodeLabels>,
    node_role: Tracked<RoleLabels>,
    node_expected_role: Tracked<RoleLabels>,
    node_link_up: Tracked<NodeLabels>,
    node_link_state: Tracked<LinkStateLabels>,
    node_offset: Tracked<NodeLabels>,
    node_binlog_file: Tracked<DbLabels>,
    node_binlog_offset: Tracked<DbLabels>,
    node_db_link_up: Tracked<DbLabels>,
    node_replica_lag: Tracked<LagLabels>,
    node_connected_replicas: Tracked<NodeLabels>,
    node_eligible: Tracked<NodeLabels>,
    node_info: Tracked<NodeInfoLabels>,
    // Per cluster.
    cluster_nodes: Tracked<ClusterLabels>,
    cluster_nodes_reachable: Tracked<ClusterLabels>,
    cluster_masters_claimed: Tracked<ClusterLabels>,
    cluster_record_present: Tracked<ClusterLabels>,
    cluster_recorded_master: Tracked<RecordedMasterLabels>,
    cluster_epoch: Tracked<ClusterLabels>,
    cluster_last_failover_ts: Tracked<ClusterLabels>,
    cluster_last_failover_age: Tracked<ClusterLabels>,
    cluster_paused: Tracked<ClusterLabels>,
    // Service.
    webhooks: Family<OutcomeLabels, Counter>,
    reconciles: Family<ReconcileLabels, Counter>,
    remediations: Family<RemediationLabels, Counter>,
    remediation_duration: HistogramFamily<RemediationLabels>,
    lock_held: Family<ClusterLabels, Gauge>,
    lock_held_seconds: Family<ClusterLabels, Gauge>,
    lock_release_pending: Family<ClusterLabels, Gauge>,
    lock_ttl_seconds: Gauge,
    lock_refusals: Family<LockRefusalLabels, Counter>,
    coordinator_up: Gauge,
    poll_duration: HistogramFamily<ClusterLabels>,
    poll_errors: Family<ClusterLabels, Counter>,
    polls_skipped: Family<ClusterLabels, Counter>,
    build_info: Family<BuildLabels, Gauge>,
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
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        let m = Metrics {
            node_up: Tracked::new(),
            node_role: Tracked::new(),
            node_expected_role: Tracked::new(),
            node_link_up: Tracked::new(),
            node_link_state: Tracked::new(),
            node_offset: Tracked::new(),
            node_binlog_file: Tracked::new(),
            node_binlog_offset: Tracked::new(),
            node_db_link_up: Tracked::new(),
            node_replica_lag: Tracked::new(),
            node_connected_replicas: Tracked::new(),
            node_eligible: Tracked::new(),
            node_info: Tracked::new(),
            cluster_nodes: Tracked::new(),
            cluster_nodes_reachable: Tracked::new(),
            cluster_masters_claimed: Tracked::new(),
            cluster_record_present: Tracked::new(),
            cluster_recorded_master: Tracked::new(),
            cluster_epoch: Tracked::new(),
            cluster_last_failover_ts: Tracked::new(),
            cluster_last_failover_age: Tracked::new(),
            cluster_paused: Tracked::new(),
            webhooks: Family::default(),
            reconciles: Family::default(),
            remediations: Family::default(),
            remediation_duration: Family::new_with_constructor(remediation_histogram),
            lock_held: Family::default(),
            lock_held_seconds: Family::default(),
            lock_release_pending: Family::default(),
            lock_ttl_seconds: Gauge::default(),
            lock_refusals: Family::default(),
            coordinator_up: Gauge::default(),
            poll_duration: Family::new_with_constructor(poll_histogram),
            poll_errors: Family::default(),
            polls_skipped: Family::default(),
            build_info: Family::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "node_up",
            "1 if the node answered INFO in the last poll, else 0",
            m.node_up.family.clone(),
        );
        r.register(
            "node_role",
            "Role the node reports (master, slave, master&&slave): 1 for the current role, 0 for the others. Absent while the node is unreachable",
            m.node_role.family.clone(),
        );
        r.register(
            "node_expected_role",
            "Role the node should have according to the recorded topology: 1 for the expected role, 0 for the others. Absent for nodes not in the record",
            m.node_expected_role.family.clone(),
        );
        r.register(
            "node_master_link_up",
            "For replicas: 1 if the link to the master (and every Pika DB link) is up, else 0. Absent for masters and unreachable nodes",
            m.node_link_up.family.clone(),
        );
        r.register(
            "node_master_link_state",
            "For replicas: 1 for the current replication link state (up, down, connecting, full_sync, error), 0 for the others",
            m.node_link_state.family.clone(),
        );
        r.register_with_unit(
            "node_replication_offset",
            "Replication offset: Redis master_repl_offset/slave_repl_offset; Pika slave_repl_offset or the binlog position summed over DBs",
            Unit::Bytes,
            m.node_offset.family.clone(),
        );
        r.register(
            "node_binlog_file_number",
            "Pika: binlog file number of each DB (binlog_offset filenum)",
            m.node_binlog_file.family.clone(),
        );
        r.register_with_unit(
            "node_binlog_file_offset",
            "Pika: offset inside the current binlog file of each DB",
            Unit::Bytes,
            m.node_binlog_offset.family.clone(),
        );
        r.register(
            "node_db_link_up",
            "Pika replicas: 1 if the replication link of this DB is up, else 0",
            m.node_db_link_up.family.clone(),
        );
        r.register_with_unit(
            "node_replica_lag",
            "Replication lag of the replica `instance` as reported by its master `master` (Pika: binlog bytes summed over DBs; Redis: master offset minus acked offset). Absent while a DB is in full sync",
            Unit::Bytes,
            m.node_replica_lag.family.clone(),
        );
        r.register(
            "node_connected_replicas",
            "connected_slaves as reported by the node",
            m.node_connected_replicas.family.clone(),
        );
        r.register(
            "node_promotion_eligible",
            "1 if the node is a reachable replica with its link up that may be promoted (not never_promote, priority not 0, Pika eligible for election), else 0",
            m.node_eligible.family.clone(),
        );
        r.register(
            "node_info",
            "Engine (pika, redis, unknown) and version of the node; value always 1",
            m.node_info.family.clone(),
        );
        r.register(
            "cluster_nodes",
            "Number of configured nodes in the cluster",
            m.cluster_nodes.family.clone(),
        );
        r.register(
            "cluster_nodes_reachable",
            "Number of nodes that answered INFO in the last poll",
            m.cluster_nodes_reachable.family.clone(),
        );
        r.register(
            "cluster_masters_claimed",
            "Number of reachable nodes reporting role master",
            m.cluster_masters_claimed.family.clone(),
        );
        r.register(
            "cluster_record_present",
            "1 if a topology record for the cluster could be read from the coordinator (last known), else 0",
            m.cluster_record_present.family.clone(),
        );
        r.register(
            "cluster_recorded_master_info",
            "The master according to the recorded topology; value always 1",
            m.cluster_recorded_master.family.clone(),
        );
        r.register(
            "cluster_epoch",
            "Epoch of the recorded topology (grows by one on every change of master)",
            m.cluster_epoch.family.clone(),
        );
        r.register_with_unit(
            "cluster_last_failover_timestamp",
            "Unix time of the last automatic failover recorded for the cluster",
            Unit::Seconds,
            m.cluster_last_failover_ts.family.clone(),
        );
        r.register_with_unit(
            "cluster_last_failover_age",
            "Seconds since the last automatic failover recorded for the cluster, at the last poll",
            Unit::Seconds,
            m.cluster_last_failover_age.family.clone(),
        );
        r.register(
            "cluster_paused",
            "1 if automatic remediation is paused for the cluster (globally or per cluster), else 0",
            m.cluster_paused.family.clone(),
        );
        r.register(
            "webhooks",
            "Alertmanager webhook requests handled, by outcome",
            m.webhooks.clone(),
        );
        r.register(
            "reconciles",
            "Reconciles run, by trigger, planned action and result",
            m.reconciles.clone(),
        );
        r.register(
            "remediations",
            "Remediations (plans that sent commands to nodes) by kind and outcome",
            m.remediations.clone(),
        );
        r.register_with_unit(
            "remediation_duration",
            "Wall time of remediations from lock to release, by kind and outcome",
            Unit::Seconds,
            m.remediation_duration.clone(),
        );
        r.register(
            "lock_held",
            "1 while the coordinator holds the cluster's failover lock for this instance (a live lease, or one whose release is still being retried), else 0",
            m.lock_held.clone(),
        );
        r.register_with_unit(
            "lock_held",
            "How long this instance has held the cluster's failover lock (the oldest lease it may still hold), 0 when it holds none",
            Unit::Seconds,
            m.lock_held_seconds.clone(),
        );
        r.register(
            "lock_release_pending",
            "1 while a release of this instance's lock lease failed and is being retried (the store was unreachable), else 0",
            m.lock_release_pending.clone(),
        );
        r.register_with_unit(
            "lock_ttl",
            "The configured lock TTL (policy.lock_ttl)",
            Unit::Seconds,
            m.lock_ttl_seconds.clone(),
        );
        r.register(
            "lock_refusals",
            "Reconciles that did not act because the cluster's lock was held, by holder (this_instance, other_instance)",
            m.lock_refusals.clone(),
        );
        r.register(
            "coordinator_up",
            "1 if the last coordinator request succeeded, else 0",
            m.coordinator_up.clone(),
        );
        r.register_with_unit(
            "poll_duration",
            "Wall time of one poll of all nodes of a cluster",
            Unit::Seconds,
            m.poll_duration.clone(),
        );
        r.register(
            "poll_errors",
            "Node queries that failed during polls (unreachable, timeout, auth, parse)",
            m.poll_errors.clone(),
        );
        r.register(
            "polls_skipped",
            "Poll ticks skipped because the previous poll of the cluster was still running",
            m.polls_skipped.clone(),
        );
        r.register(
            "build_info",
            "Version of pika-remedy; value always 1",
            m.build_info.clone(),
        );
        m.build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_string(),
            })
            .set(1);
        Metrics { registry, ..m }
    }

    /// Set every per-node and per-cluster series of `obs.cluster` from one observation, the
    /// recorded topology (if known), and the pause flag. `now_unix` is used for the
    /// last-failover age only.
    pub fn observe_cluster(
        &self,
        obs: &Observation,
        record: Option<&TopologyRecord>,
        paused: bool,
        now_unix: u64,
    ) {
        let c = obs.cluster.as_str();
        let mut up = Vec::new();
        let mut role = Vec::new();
        let mut expected = Vec::new();
        let mut link_up = Vec::new();
        let mut link_state = Vec::new();
        let mut offset = Vec::new();
        let mut binlog_file = Vec::new();
        let mut binlog_offset = Vec::new();
        let mut db_link = Vec::new();
        let mut lag = Vec::new();
        let mut connected = Vec::new();
        let mut eligible = Vec::new();
        let mut info = Vec::new();

        for n in &obs.nodes {
            let inst = n.addr.to_string();
            let nl = node_labels(c, &inst);
            up.push((nl.clone(), i64::from(n.status.is_ok())));
            eligible.push((nl.clone(), i64::from(n.promotion_eligible())));
            if let Some(want) = expected_role(record, &n.addr) {
                for r in ROLES {
                    expected.push((role_labels(c, &inst, r), i64::from(r == want)));
                }
            }
            let Ok(s) = &n.status else { continue };
            for r in ROLES {
                role.push((role_labels(c, &inst, r), i64::from(r == s.role)));
            }
            info.push((
                NodeInfoLabels {
                    cluster: c.to_string(),
                    instance: inst.clone(),
                    engine: s.engine.as_str().to_string(),
                    version: s.version.clone().unwrap_or_default(),
                },
                1,
            ));
            connected.push((nl.clone(), i64::from(s.connected_replicas)));
            if let Some(o) = s.offset {
                offset.push((nl.clone(), clamp_i64(o)));
            }
            for (db, pos) in &s.db_offsets {
                let dl = db_labels(c, &inst, db);
                binlog_file.push((dl.clone(), clamp_i64(pos.filenum)));
                binlog_offset.push((dl, clamp_i64(pos.offset)));
            }
            if s.role.is_replica() {
                let state = s.link.unwrap_or(LinkState::Down);
                link_up.push((nl.clone(), i64::from(state == LinkState::Up)));
                for st in LINK_STATES {
                    link_state.push((
                        LinkStateLabels {
                            cluster: c.to_string(),
                            instance: inst.clone(),
                            state: st.as_str().to_string(),
                        },
                        i64::from(st == state),
                    ));
                }
                for (db, st) in &s.db_links {
                    db_link.push((db_labels(c, &inst, db), i64::from(*st == LinkState::Up)));
                }
            }
            for line in &s.replicas {
                if let Some(bytes) = line.lag_bytes {
                    lag.push((
                        LagLabels {
                            cluster: c.to_string(),
                            instance: replica_instance(obs, &line.ip, line.port),
                            master: inst.clone(),
                        },
                        clamp_i64(bytes),
                    ));
                }
            }
        }

        self.node_up.replace(c, up);
        self.node_role.replace(c, role);
        self.node_expected_role.replace(c, expected);
        self.node_link_up.replace(c, link_up);
        self.node_link_state.replace(c, link_state);
        self.node_offset.replace(c, offset);
        self.node_binlog_file.replace(c, binlog_file);
        self.node_binlog_offset.replace(c, binlog_offset);
        self.node_db_link_up.replace(c, db_link);
        self.node_replica_lag.replace(c, lag);
        self.node_connected_replicas.replace(c, connected);
        self.node_eligible.replace(c, eligible);
        self.node_info.replace(c, info);

        self.init_cluster_counters(c);
        let cl = ClusterLabels {
            cluster: c.to_string(),
        };
        let one = |v: i64| vec![(cl.clone(), v)];
        self.cluster_nodes.replace(c, one(obs.nodes.len() as i64));
        self.cluster_nodes_reachable
            .replace(c, one(obs.reachable_count() as i64));
        self.cluster_masters_claimed
            .replace(c, one(obs.claiming_master().len() as i64));
        self.cluster_paused.replace(c, one(i64::from(paused)));
        self.cluster_record_present
            .replace(c, one(i64::from(record.is_some())));
        match record {
            Some(rec) => {
                self.cluster_recorded_master.replace(
                    c,
                    vec![(
                        RecordedMasterLabels {
                            cluster: c.to_string(),
                            master: rec.master.to_string(),
                        },
                        1,
                    )],
                );
                self.cluster_epoch.replace(c, one(clamp_i64(rec.epoch)));
                match rec.last_failover_at {
                    Some(at) => {
                        self.cluster_last_failover_ts.replace(c, one(clamp_i64(at)));
                        self.cluster_last_failover_age
                            .replace(c, one(clamp_i64(now_unix.saturating_sub(at))));
                    }
                    None => {
                        self.cluster_last_failover_ts.replace(c, Vec::new());
                        self.cluster_last_failover_age.replace(c, Vec::new());
                    }
                }
            }
            None => {
                self.cluster_recorded_master.replace(c, Vec::new());
                self.cluster_epoch.replace(c, Vec::new());
                self.cluster_last_failover_ts.replace(c, Vec::new());
                self.cluster_last_failover_age.replace(c, Vec::new());
            }
        }
    }

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

    /// One webhook request handled, e.g. `accepted`, `unauthorized`, `bad_request`, `ignored`.
    pub fn webhook(&self, outcome: &str) {
        self.webhooks
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// One reconcile of `cluster`: `Trigger::label()`, `Action::label()`, [`result_label`].
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

fn role_labels(cluster: &str, instance: &str, role: Role) -> RoleLabels {
    RoleLabels {
        cluster: cluster.to_string(),
        instance: instance.to_string(),
        role: role.as_str().to_string(),
    }
}

fn db_labels(cluster: &str, instance: &str, db: &str) -> DbLabels {
    DbLabels {
        cluster: cluster.to_string(),
        instance: instance.to_string(),
        db: db.to_string(),
    }
}

/// The recorded master is expected to be `master`, recorded replicas `slave`. The record
/// describes a flat topology, so a chained replica (`master&&slave`) shows as a mismatch of
/// the `slave` series but not of the `master` series, which is what the alert rules compare.
fn expected_role(record: Option<&TopologyRecord>, addr: &Addr) -> Option<Role> {
    let rec = record?;
    if &rec.master == addr {
        Some(Role::Master)
    } else if rec.replicas.contains(addr) {
        Some(Role::Slave)
    } else {
        None
    }
}

/// Rewrite our own OpenMetrics output as classic text: counter families are announced under
/// their sample name (`x_total`), `# UNIT` and `# EOF` are dropped, and OpenMetrics-only types
/// become `untyped`. Only meant for prometheus-client's output (no exemplars, no `_created`).
pub fn openmetrics_to_classic(text: &str) -> String {
    // First pass: which families are counters.
    let counters: HashSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .filter(|(_, t)| *t == "counter")
        .map(|(name, _)| name)
        .collect();
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            let name = classic_name(name, &counters);
            out.push_str(&format!("# HELP {name} {help}\n"));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let ty = match ty {
                "counter" | "gauge" | "histogram" | "summary" => ty,
                _ => "untyped",
            };
            let name = classic_name(name, &counters);
            out.push_str(&format!("# TYPE {name} {ty}\n"));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

fn classic_name(name: &str, counters: &HashSet<&str>) -> String {
    if counters.contains(name) {
        format!("{name}_total")
    } else {
        name.to_string()
    }
}

/// Last observation per cluster, shared with the HTTP API.
pub type LatestObservations = std::sync::Arc<std::sync::RwLock<BTreeMap<String, Observation>>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_conversion_renames_counters_only() {
        let om = "# HELP p_x Xs.\n# TYPE p_x counter\np_x_total 1\n# HELP p_d_seconds D.\n# TYPE p_d_seconds gauge\n# UNIT p_d_seconds seconds\np_d_seconds 2\n# EOF\n";
        let classic = openmetrics_to_classic(om);
        assert_eq!(
            classic,
            "# HELP p_x_total Xs.\n# TYPE p_x_total counter\np_x_total 1\n# HELP p_d_seconds D.\n# TYPE p_d_seconds gauge\np_d_seconds 2\n"
        );
    }

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
