//! The projection of one observation (plus the recorded topology and the pause flag) onto the
//! per-node and per-cluster series: each family gets its complete set for the cluster (see the
//! "Series lifecycle" section of [`super`]).

use super::series::{
    ClusterLabels, DbLabels, LagLabels, LinkStateLabels, NodeInfoLabels, NodeLabels,
    RecordedMasterLabels, RoleLabels,
};
use super::Metrics;
use crate::model::{
    Addr, LinkState, NodeObservation, NodeStatus, Observation, Role, TopologyRecord,
};

/// The three roles, always exported together for a reachable node.
const ROLES: [Role; 3] = [Role::Master, Role::Slave, Role::MasterSlave];
const LINK_STATES: [LinkState; 5] = [
    LinkState::Up,
    LinkState::Down,
    LinkState::Connecting,
    LinkState::FullSync,
    LinkState::Error,
];

pub(super) fn clamp_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Every per-node series of one cluster, collected before any is written.
#[derive(Default)]
struct NodeSeries {
    up: Vec<(NodeLabels, i64)>,
    role: Vec<(RoleLabels, i64)>,
    expected: Vec<(RoleLabels, i64)>,
    link_up: Vec<(NodeLabels, i64)>,
    link_state: Vec<(LinkStateLabels, i64)>,
    offset: Vec<(NodeLabels, i64)>,
    binlog_file: Vec<(DbLabels, i64)>,
    binlog_offset: Vec<(DbLabels, i64)>,
    db_link: Vec<(DbLabels, i64)>,
    lag: Vec<(LagLabels, i64)>,
    connected: Vec<(NodeLabels, i64)>,
    eligible: Vec<(NodeLabels, i64)>,
    info: Vec<(NodeInfoLabels, i64)>,
}

impl NodeSeries {
    fn collect(obs: &Observation, record: Option<&TopologyRecord>) -> NodeSeries {
        let mut out = NodeSeries::default();
        for n in &obs.nodes {
            out.push_node(obs, record, n);
        }
        out
    }

    /// `node_up` and `node_promotion_eligible` always; the rest only while reachable.
    fn push_node(
        &mut self,
        obs: &Observation,
        record: Option<&TopologyRecord>,
        n: &NodeObservation,
    ) {
        let c = obs.cluster.as_str();
        let inst = n.addr.to_string();
        let nl = node_labels(c, &inst);
        self.up.push((nl.clone(), i64::from(n.status.is_ok())));
        self.eligible
            .push((nl.clone(), i64::from(n.promotion_eligible())));
        if let Some(want) = expected_role(record, &n.addr) {
            for r in ROLES {
                self.expected
                    .push((role_labels(c, &inst, r), i64::from(r == want)));
            }
        }
        let Ok(s) = &n.status else { return };
        for r in ROLES {
            self.role
                .push((role_labels(c, &inst, r), i64::from(r == s.role)));
        }
        self.info.push((
            NodeInfoLabels {
                cluster: c.to_string(),
                instance: inst.clone(),
                engine: s.engine.as_str().to_string(),
                version: s.version.clone().unwrap_or_default(),
            },
            1,
        ));
        self.connected
            .push((nl.clone(), i64::from(s.connected_replicas)));
        if let Some(o) = s.offset {
            self.offset.push((nl.clone(), clamp_i64(o)));
        }
        for (db, pos) in &s.db_offsets {
            let dl = db_labels(c, &inst, db);
            self.binlog_file.push((dl.clone(), clamp_i64(pos.filenum)));
            self.binlog_offset.push((dl, clamp_i64(pos.offset)));
        }
        self.push_replication(obs, &inst, nl, s);
    }

    /// A replica's link series; a master's replica lines (the lag it reports per replica).
    fn push_replication(&mut self, obs: &Observation, inst: &str, nl: NodeLabels, s: &NodeStatus) {
        let c = obs.cluster.as_str();
        if s.role.is_replica() {
            let state = s.link.unwrap_or(LinkState::Down);
            self.link_up.push((nl, i64::from(state == LinkState::Up)));
            for st in LINK_STATES {
                self.link_state.push((
                    LinkStateLabels {
                        cluster: c.to_string(),
                        instance: inst.to_string(),
                        state: st.as_str().to_string(),
                    },
                    i64::from(st == state),
                ));
            }
            for (db, st) in &s.db_links {
                self.db_link
                    .push((db_labels(c, inst, db), i64::from(*st == LinkState::Up)));
            }
        }
        for line in &s.replicas {
            if let Some(bytes) = line.lag_bytes {
                self.lag.push((
                    LagLabels {
                        cluster: c.to_string(),
                        instance: replica_instance(obs, &line.ip, line.port),
                        master: inst.to_string(),
                    },
                    clamp_i64(bytes),
                ));
            }
        }
    }
}

impl Metrics {
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
        self.set_nodes(c, NodeSeries::collect(obs, record));
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
        self.observe_record(c, record, now_unix);
    }

    /// Remove every per-node and per-cluster gauge of `c` that polls set (scale-out: the
    /// cluster moved to another instance, which exports them now; stale copies here would
    /// disagree with it). Counters and histograms stay (they only grow).
    pub fn forget_cluster(&self, c: &str) {
        self.set_nodes(c, NodeSeries::default());
        for t in [
            &self.cluster_nodes,
            &self.cluster_nodes_reachable,
            &self.cluster_masters_claimed,
            &self.cluster_paused,
            &self.cluster_record_present,
        ] {
            t.replace(c, Vec::new());
        }
        self.observe_record(c, None, 0);
    }

    /// A poll that changed nothing else: only `cluster_last_failover_age` moves with the clock.
    pub fn refresh_cluster_age(&self, c: &str, record: Option<&TopologyRecord>, now_unix: u64) {
        if let Some(at) = record.and_then(|r| r.last_failover_at) {
            let cl = ClusterLabels {
                cluster: c.to_string(),
            };
            self.cluster_last_failover_age
                .replace(c, vec![(cl, clamp_i64(now_unix.saturating_sub(at)))]);
        }
    }

    fn set_nodes(&self, c: &str, s: NodeSeries) {
        self.node_up.replace(c, s.up);
        self.node_role.replace(c, s.role);
        self.node_expected_role.replace(c, s.expected);
        self.node_link_up.replace(c, s.link_up);
        self.node_link_state.replace(c, s.link_state);
        self.node_offset.replace(c, s.offset);
        self.node_binlog_file.replace(c, s.binlog_file);
        self.node_binlog_offset.replace(c, s.binlog_offset);
        self.node_db_link_up.replace(c, s.db_link);
        self.node_replica_lag.replace(c, s.lag);
        self.node_connected_replicas.replace(c, s.connected);
        self.node_eligible.replace(c, s.eligible);
        self.node_info.replace(c, s.info);
    }

    /// The series of the recorded topology: absent while no record is known.
    fn observe_record(&self, c: &str, record: Option<&TopologyRecord>, now_unix: u64) {
        let cl = ClusterLabels {
            cluster: c.to_string(),
        };
        let one = |v: i64| vec![(cl.clone(), v)];
        let Some(rec) = record else {
            self.cluster_recorded_master.replace(c, Vec::new());
            self.cluster_epoch.replace(c, Vec::new());
            self.cluster_last_failover_ts.replace(c, Vec::new());
            self.cluster_last_failover_age.replace(c, Vec::new());
            return;
        };
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
}

fn node_labels(cluster: &str, instance: &str) -> NodeLabels {
    NodeLabels {
        cluster: cluster.to_string(),
        instance: instance.to_string(),
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
