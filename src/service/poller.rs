//! The polling task behind `/metrics`: every `interval`, observe each cluster (clusters in
//! parallel, nodes in parallel inside [`crate::observe::observe`]), read the recorded topology,
//! and update [`Metrics`] and the shared last-observation map.
//!
//! - **No overlap per cluster:** a tick whose cluster poll is still running is skipped and
//!   counted (`pika_remedy_polls_skipped_total`); a slow cluster never delays the others.
//! - **Bounded:** each node call is bounded by the node client's timeouts, and the whole cluster
//!   poll (INFO of every node plus the record read) by `PollSettings::timeout`. A poll that hits
//!   that bound counts every node as an error and leaves the gauges as they were.
//! - **Coordinator blips:** if the record cannot be read, the last record read successfully is
//!   used, so `node_expected_role` does not vanish (and role alerts do not flap) while the
//!   coordinator is briefly away; `coordinator_up` goes to 0.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::config::ClusterConfig;
use crate::coord::Coordinator;
use crate::metrics::{LatestObservations, Metrics};
use crate::model::TopologyRecord;
use crate::node::Nodes;
use crate::observe::observe;

/// One cluster to poll, with its node client (one per cluster: one password per cluster).
pub struct PollTarget<N> {
    pub cluster: ClusterConfig,
    pub nodes: Arc<N>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PollSettings {
    /// Time between ticks (config `service.poll_interval`, default 1 s).
    pub interval: Duration,
    /// Upper bound for one cluster poll. Should exceed connect + command timeout so a single
    /// slow node is reported by the node client (as that node's error), not by this bound.
    pub timeout: Duration,
}

impl PollSettings {
    /// `interval`, and a timeout of connect + command + 1 s.
    pub fn new(interval: Duration, timeouts: &crate::config::Timeouts) -> Self {
        PollSettings {
            interval,
            timeout: timeouts.connect + timeouts.command + Duration::from_secs(1),
        }
    }
}

/// Everything a single cluster poll needs, shared by all ticks.
pub struct PollShared<C, P> {
    pub coord: Arc<C>,
    pub metrics: Arc<Metrics>,
    pub latest: LatestObservations,
    /// Is automatic remediation paused for this cluster (global or per-cluster switch)?
    pub paused: P,
    /// Per cluster: the recorded master and its offset the last time a poll saw it alive as
    /// master. A failover uses it as the lag reference (see `decide::Gate::last_master_offset`).
    pub master_offsets: MasterOffsets,
    pub settings: PollSettings,
}

/// Per cluster: (recorded master, its last seen offset).
pub type MasterOffsets = Arc<Mutex<std::collections::BTreeMap<String, (crate::model::Addr, u64)>>>;

/// The recorded master's offset from `obs`, if it is reachable and reports role master.
pub fn master_offset(
    obs: &crate::model::Observation,
    record: Option<&TopologyRecord>,
) -> Option<(crate::model::Addr, u64)> {
    let m = &record?.master;
    let s = obs.node(m)?.reachable()?;
    (s.role == crate::model::Role::Master).then_some(())?;
    Some((m.clone(), s.offset?))
}

/// Last record read successfully, per cluster (see module docs).
type RecordCache = Arc<Mutex<Option<TopologyRecord>>>;

/// Poll one cluster once: observe, read the record, update metrics and the latest map.
/// Returns the number of failed node queries (all nodes if the poll hit its bound).
pub async fn poll_cluster<N, C, P>(
    nodes: &N,
    cluster: &ClusterConfig,
    shared: &PollShared<C, P>,
    cache: &Mutex<Option<TopologyRecord>>,
) -> u64
where
    N: Nodes,
    C: Coordinator,
    P: Fn(&str) -> bool,
{
    let started = Instant::now();
    let name = cluster.name.as_str();
    let work = async { tokio::join!(observe(nodes, cluster), shared.coord.read_record(name)) };
    let Ok((obs, record)) = tokio::time::timeout(shared.settings.timeout, work).await else {
        let errors = cluster.nodes.len() as u64;
        tracing::warn!(cluster = name, timeout = ?shared.settings.timeout, "poll did not finish in time");
        shared.metrics.poll_done(name, started.elapsed(), errors);
        return errors;
    };
    let record = match record {
        Ok(r) => {
            shared.metrics.coordinator_up(true);
            let r = r.map(|v| v.value);
            if let Ok(mut c) = cache.lock() {
                c.clone_from(&r);
            }
            r
        }
        Err(e) => {
            shared.metrics.coordinator_up(false);
            tracing::warn!(cluster = name, error = %e, "poll: cannot read the topology record, using the last one read");
            cache.lock().ok().and_then(|c| c.clone())
        }
    };
    if let Some(seen) = master_offset(&obs, record.as_ref()) {
        if let Ok(mut m) = shared.master_offsets.lock() {
            m.insert(name.to_string(), seen);
        }
    }
    let errors = obs.nodes.iter().filter(|n| n.status.is_err()).count() as u64;
    shared.metrics.observe_cluster(
        &obs,
        record.as_ref(),
        (shared.paused)(name),
        crate::reconcile::now_unix(),
    );
    shared.metrics.poll_done(name, started.elapsed(), errors);
    match shared.latest.write() {
        Ok(mut m) => {
            m.insert(obs.cluster.clone(), obs);
        }
        Err(poisoned) => {
            poisoned.into_inner().insert(obs.cluster.clone(), obs);
        }
    }
    errors
}

/// Poll every target each `settings.interval` until `shutdown` becomes `true` (or its sender
/// is dropped). In-flight polls are aborted on shutdown: they only read.
pub async fn poll_loop<N, C, P>(
    targets: Vec<PollTarget<N>>,
    shared: Arc<PollShared<C, P>>,
    mut shutdown: watch::Receiver<bool>,
) where
    N: Nodes + 'static,
    C: Coordinator + 'static,
    P: Fn(&str) -> bool + Send + Sync + 'static,
{
    let mut ticker = tokio::time::interval(shared.settings.interval.max(Duration::from_millis(10)));
    // A late tick is not made up with a burst: the next poll simply happens at the next slot.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let caches: HashMap<String, RecordCache> = targets
        .iter()
        .map(|t| (t.cluster.name.clone(), RecordCache::default()))
        .collect();
    let mut running: Vec<Option<JoinHandle<()>>> = targets.iter().map(|_| None).collect();
    if *shutdown.borrow() {
        return;
    }
    loop {
        tokio::select! {
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
            _ = ticker.tick() => {
                for (t, slot) in targets.iter().zip(running.iter_mut()) {
                    if slot.as_ref().is_some_and(|h| !h.is_finished()) {
                        shared.metrics.poll_skipped(&t.cluster.name);
                        continue;
                    }
                    let nodes = Arc::clone(&t.nodes);
                    let cluster = t.cluster.clone();
                    let shared = Arc::clone(&shared);
                    let cache = caches.get(&cluster.name).cloned().unwrap_or_default();
                    *slot = Some(tokio::spawn(async move {
                        poll_cluster(&*nodes, &cluster, &shared, &cache).await;
                    }));
                }
            }
        }
    }
    for h in running.into_iter().flatten() {
        h.abort();
    }
}
