//! The polling task behind `/metrics`: every `interval`, observe each cluster (clusters in
//! parallel, nodes in parallel inside [`crate::observe::observe`]), read the recorded topology,
//! and update [`Metrics`] and the one per-cluster [`ClusterCache`] (last observation, last
//! record read, and what was seen of the recorded master and its replicas while it was alive).
//!
//! - **Kept connections:** nodes are polled with [`Nodes::status_pooled`] (one connection per
//!   node, reconnected on error), so an idle poll costs one `INFO replication` and no
//!   handshake.
//! - **Record:** read with [`Coordinator::poll_record`]: the same answer as `read_record`,
//!   which a backend may give from a copy it can prove current (local: one `stat` of the
//!   record file while it is unchanged). Another instance's write reaches the next poll.
//! - **No overlap per cluster:** a tick whose cluster poll is still running is skipped and
//!   counted (`pika_remedy_polls_skipped_total`); a slow cluster never delays the others.
//! - **Work proportional to change:** a poll whose observation, record and pause flag equal
//!   the last poll's does not project the series again (only the last-failover age moves).
//! - **Bounded:** each node call is bounded by the node client's timeouts, and the whole cluster
//!   poll (INFO of every node plus the record read) by `PollSettings::timeout`. A poll that hits
//!   that bound counts every node as an error and leaves the gauges as they were.
//! - **Coordinator blips:** if the record cannot be read, the last record read successfully is
//!   used, so `node_expected_role` does not vanish (and role alerts do not flap) while the
//!   coordinator is briefly away; `coordinator_up` goes to 0.
//! - **Self-triggered reconciles** (`service.self_trigger`, [`SelfTrigger`]): a poll that finds
//!   the recorded master unreachable (or not a master), or another node claiming master,
//!   submits a reconcile at once through the supervisor (source `self`), without waiting for
//!   Prometheus and Alertmanager. Nothing is decided here: the reconcile applies the same
//!   holistic check and confirmation as for an alert, so a transient poll failure of a live
//!   master ends in "no action". A timeout is confirmed first by quick re-probes
//!   ([`REPROBE_EVERY`], at most [`REPROBES`]; the first answer cancels it); a refused
//!   connection is taken as it is (a stronger signal: nothing listens). One self-triggered
//!   reconcile per cluster at a time; while the same condition persists after one that did not
//!   act, the next waits [`SelfTrigger::quiet`]; a clean poll clears it.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::config::ClusterConfig;
use crate::coord::Coordinator;
use crate::decide::{LinkSnapshot, MasterSeen, PriorLink, Trigger};
use crate::metrics::Metrics;
use crate::model::{Addr, Observation, Role, TopologyRecord};
use crate::node::{NodeError, Nodes};
use crate::observe::observe_pooled;
use crate::reconcile::{Outcome, Result_};

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
    /// What the polls saw, per cluster.
    pub cache: ClusterCache,
    /// Is automatic remediation paused for this cluster (global or per-cluster switch)?
    pub paused: P,
    pub settings: PollSettings,
    /// Submit a reconcile when a poll finds the master in trouble (`None`: alerts only).
    pub self_trigger: Option<SelfTrigger>,
}

/// Time between quick re-probes of a master whose poll failed with something else than a
/// refused connection.
pub const REPROBE_EVERY: Duration = Duration::from_millis(50);
/// Re-probes at most (each bounded by the node client's timeouts).
pub const REPROBES: u32 = 3;

/// The future of one submitted reconcile: its outcome, or `None` if it was not accepted
/// (shutting down, unknown cluster).
pub type Submitted = Pin<Box<dyn Future<Output = Option<Outcome>> + Send>>;

/// How the poller starts reconciles on its own (see the module docs), and their per-cluster
/// state. Cheap to clone (shared).
#[derive(Clone)]
pub struct SelfTrigger {
    submit: Arc<dyn Fn(String, Trigger) -> Submitted + Send + Sync>,
    /// After a self-triggered reconcile that did not act, how long the same condition waits
    /// before the next one.
    quiet: Duration,
    state: Arc<Mutex<BTreeMap<String, Suspect>>>,
}

#[derive(Clone, Copy, Debug, Default)]
struct Suspect {
    in_flight: bool,
    quiet_until: Option<Instant>,
}

impl std::fmt::Debug for SelfTrigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SelfTrigger")
            .field("quiet", &self.quiet)
            .finish_non_exhaustive()
    }
}

impl SelfTrigger {
    /// `submit(cluster, trigger)` runs a reconcile (through the supervisor: single flight)
    /// and resolves with its outcome.
    pub fn new(
        quiet: Duration,
        submit: impl Fn(String, Trigger) -> Submitted + Send + Sync + 'static,
    ) -> SelfTrigger {
        SelfTrigger {
            submit: Arc::new(submit),
            quiet,
            state: Arc::default(),
        }
    }

    pub fn quiet(&self) -> Duration {
        self.quiet
    }

    fn with<T>(&self, cluster: &str, f: impl FnOnce(&mut Suspect) -> T) -> T {
        let mut m = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(m.entry(cluster.to_string()).or_default())
    }

    /// A clean poll: the next trouble triggers at once.
    fn clear(&self, cluster: &str) {
        self.with(cluster, |s| s.quiet_until = None);
    }

    /// Would a trigger now be submitted (none in flight, not quiet)?
    fn ready(&self, cluster: &str) -> bool {
        self.with(cluster, |s| {
            !s.in_flight && s.quiet_until.is_none_or(|t| Instant::now() >= t)
        })
    }

    /// Submit `trigger` for `cluster` unless one is in flight or the cluster is quiet.
    fn fire(&self, cluster: &str, trigger: Trigger, why: &str) {
        let go = self.with(cluster, |s| {
            let go = !s.in_flight && s.quiet_until.is_none_or(|t| Instant::now() >= t);
            if go {
                s.in_flight = true;
            }
            go
        });
        if !go {
            return;
        }
        tracing::info!(
            cluster,
            trigger = trigger.label(),
            why,
            "self-triggered reconcile"
        );
        let fut = (self.submit)(cluster.to_string(), trigger);
        let me = self.clone();
        let name = cluster.to_string();
        tokio::spawn(async move {
            let out = fut.await;
            // Acted (or may act on a retry): the next poll may trigger again at once.
            let again = out.as_ref().is_some_and(|o| {
                o.retryable || matches!(o.result, Result_::Applied | Result_::Failed { .. })
            });
            let quiet = me.quiet;
            me.with(&name, |s| {
                s.in_flight = false;
                s.quiet_until = (!again).then(|| Instant::now() + quiet);
            });
        });
    }
}

/// What a poll suggests, if anything: the trigger and why.
fn suspicion(obs: &Observation, rec: &TopologyRecord) -> Option<(Trigger, String)> {
    let m = &rec.master;
    match obs.node(m).map(|n| &n.status) {
        None => None,
        Some(Err(e)) => Some((
            Trigger::MasterDown,
            format!("recorded master {m} unreachable: {e}"),
        )),
        Some(Ok(s)) if s.role != Role::Master => Some((
            Trigger::RoleMismatch,
            format!("recorded master {m} reports role {}", s.role.as_str()),
        )),
        Some(Ok(_)) => obs
            .claiming_master()
            .into_iter()
            .find(|x| *x != m)
            .map(|x| {
                (
                    Trigger::RoleMismatch,
                    format!("{x} claims master against the record ({m})"),
                )
            }),
    }
}

/// A poll of `m` failed with `first`: is it gone? A refused connection says so at once;
/// otherwise up to [`REPROBES`] quick re-probes, and any answer says no.
async fn master_gone<N: Nodes>(nodes: &N, m: &Addr, first: &str) -> bool {
    let refused = NodeError::Refused.to_string();
    if first == refused {
        return true;
    }
    for _ in 0..REPROBES {
        tokio::time::sleep(REPROBE_EVERY).await;
        match nodes.status(m).await {
            Ok(_) => return false,
            Err(NodeError::Refused) => return true,
            Err(_) => {}
        }
    }
    true
}

/// After a poll: submit a self-triggered reconcile if the poll suggests one (see module docs).
async fn maybe_self_trigger<N: Nodes>(
    nodes: &N,
    name: &str,
    obs: &Observation,
    record: Option<&TopologyRecord>,
    paused: bool,
    st: &SelfTrigger,
) {
    let Some(rec) = record else { return };
    let Some((trigger, why)) = suspicion(obs, rec) else {
        st.clear(name);
        return;
    };
    if paused || !st.ready(name) {
        return;
    }
    if trigger == Trigger::MasterDown {
        let first = match obs.node(&rec.master).map(|n| &n.status) {
            Some(Err(e)) => e.as_str(),
            _ => "",
        };
        if !master_gone(nodes, &rec.master, first).await {
            tracing::debug!(
                cluster = name,
                "master answered a re-probe after a failed poll"
            );
            return;
        }
    }
    st.fire(name, trigger, &why);
}

/// What the poller last saw of one cluster.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    /// The last observation (for the API's `GET /v1/clusters/{c}`).
    pub observation: Option<Observation>,
    /// When the poll that made `observation` started (wall clock, monotonic): a reconcile's
    /// first look may reuse it ([`ClusterCache::reusable`]).
    pub observed_at: Option<(SystemTime, Instant)>,
    /// The pause flag the series were last projected with (with `observation` and `record`:
    /// a poll that finds all three unchanged does not project the series again).
    pub projected_paused: Option<bool>,
    /// The last record read successfully: used while the coordinator is briefly away, so
    /// `node_expected_role` does not vanish.
    pub record: Option<TopologyRecord>,
    /// The recorded master the last time a poll saw it alive as master: its offset (the lag
    /// reference of a failover, `decide::Gate::last_master_offset`) and the other nodes' links
    /// (`decide::Gate::links_before`).
    pub master_seen: Option<MasterSeen>,
}

/// The one per-cluster cache: the poller writes it, the service reads it. Cheap to clone
/// (shared).
#[derive(Clone, Debug, Default)]
pub struct ClusterCache(Arc<RwLock<BTreeMap<String, Seen>>>);

impl ClusterCache {
    /// What was last seen of `cluster` (all `None` before its first poll).
    pub fn get(&self, cluster: &str) -> Seen {
        let m = self.0.read().unwrap_or_else(|p| p.into_inner());
        m.get(cluster).cloned().unwrap_or_default()
    }

    pub fn observation(&self, cluster: &str) -> Option<Observation> {
        self.get(cluster).observation
    }

    pub fn master_seen(&self, cluster: &str) -> Option<MasterSeen> {
        self.get(cluster).master_seen
    }

    /// The last observation of `cluster` if the poll that made it started at or after `after`
    /// and at most `within` ago (`within` zero: never). A reconcile's first look may use it
    /// instead of asking every node again; the look under the lock never does.
    pub fn reusable(
        &self,
        cluster: &str,
        after: SystemTime,
        within: Duration,
    ) -> Option<Observation> {
        if within.is_zero() {
            return None;
        }
        let m = self.0.read().unwrap_or_else(|p| p.into_inner());
        let seen = m.get(cluster)?;
        let (wall, mono) = seen.observed_at?;
        (wall >= after && mono.elapsed() <= within)
            .then(|| seen.observation.clone())
            .flatten()
    }

    /// How many clusters have been seen.
    pub fn len(&self) -> usize {
        self.0.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drop what was seen of `cluster` (scale-out: another instance polls it now).
    pub fn forget(&self, cluster: &str) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(cluster);
    }

    fn update<T>(&self, cluster: &str, f: impl FnOnce(&mut Seen) -> T) -> T {
        let mut m = self.0.write().unwrap_or_else(|p| p.into_inner());
        // No allocation for a cluster seen before (every poll but its first).
        if let Some(seen) = m.get_mut(cluster) {
            return f(seen);
        }
        f(m.entry(cluster.to_string()).or_default())
    }
}

/// What `obs` adds to `prev` (the last sighting) if the recorded master is reachable and
/// reports role master; `None` otherwise (the sighting stays as it was). For the same master
/// and epoch, a node that did not answer keeps its last link, and the count of polls in a row
/// that found a node not linked goes on; an offset not reported keeps the last one.
pub fn master_seen(
    obs: &Observation,
    record: Option<&TopologyRecord>,
    prev: Option<&MasterSeen>,
) -> Option<MasterSeen> {
    let rec = record?;
    let m = &rec.master;
    let s = obs.node(m)?.reachable()?;
    if s.role != Role::Master {
        return None;
    }
    let prev = prev.filter(|p| &p.master == m && p.epoch == rec.epoch);
    let mut links: BTreeMap<Addr, PriorLink> = BTreeMap::new();
    for n in obs.nodes.iter().filter(|n| &n.addr != m) {
        let before = prev.and_then(|p| p.links.get(&n.addr));
        let Some(ns) = n.reachable() else {
            if let Some(b) = before {
                links.insert(n.addr.clone(), b.clone());
            }
            continue;
        };
        let last = LinkSnapshot::of(ns);
        let unlinked_polls = if last.linked_to(m) {
            0
        } else {
            before.map_or(0, |b| b.unlinked_polls).saturating_add(1)
        };
        links.insert(
            n.addr.clone(),
            PriorLink {
                last,
                unlinked_polls,
            },
        );
    }
    Some(MasterSeen {
        master: m.clone(),
        epoch: rec.epoch,
        offset: s.offset.or_else(|| prev.and_then(|p| p.offset)),
        db_offsets: if s.db_offsets.is_empty() {
            prev.map(|p| p.db_offsets.clone()).unwrap_or_default()
        } else {
            s.db_offsets.clone()
        },
        seen_at: prev.map_or(0, |p| p.seen_at),
        links,
    })
}

/// Poll one cluster once: observe, read the record, update metrics and the cache.
/// Returns the number of failed node queries (all nodes if the poll hit its bound).
pub async fn poll_cluster<N, C, P>(
    nodes: &N,
    cluster: &ClusterConfig,
    shared: &PollShared<C, P>,
) -> u64
where
    N: Nodes,
    C: Coordinator,
    P: Fn(&str) -> bool,
{
    let started = Instant::now();
    let started_wall = SystemTime::now();
    let name = cluster.name.as_str();
    let work = async {
        tokio::join!(
            observe_pooled(nodes, cluster),
            shared.coord.poll_record(name)
        )
    };
    let Ok((obs, record)) = tokio::time::timeout(shared.settings.timeout, work).await else {
        let errors = cluster.nodes.len() as u64;
        tracing::warn!(cluster = name, timeout = ?shared.settings.timeout, "poll did not finish in time");
        shared.metrics.poll_done(name, started.elapsed(), errors);
        return errors;
    };
    shared.metrics.coordinator_up(record.is_ok());
    let record = match record {
        Ok(r) => Some(r.map(|v| v.value)),
        Err(e) => {
            tracing::warn!(cluster = name, error = %e, "poll: cannot read the topology record, using the last one read");
            None
        }
    };
    let errors = obs.nodes.iter().filter(|n| n.status.is_err()).count() as u64;
    let paused = (shared.paused)(name);
    // One pass over the cache entry: the record (the last one read if this read failed), the
    // master's sighting, and whether anything the series depend on changed since the last
    // projection (most polls of a healthy idle cluster: nothing).
    let (record, unchanged) = shared.cache.update(name, |seen| {
        let mut unchanged =
            seen.projected_paused == Some(paused) && seen.observation.as_ref() == Some(&obs);
        if let Some(r) = record {
            unchanged &= r == seen.record;
            seen.record = r;
        }
        if let Some(mut now) = master_seen(&obs, seen.record.as_ref(), seen.master_seen.as_ref()) {
            now.seen_at = crate::reconcile::now_unix();
            seen.master_seen = Some(now);
        }
        seen.projected_paused = Some(paused);
        (seen.record.clone(), unchanged)
    });
    let now = crate::reconcile::now_unix();
    if unchanged {
        shared
            .metrics
            .refresh_cluster_age(name, record.as_ref(), now);
    } else {
        shared
            .metrics
            .observe_cluster(&obs, record.as_ref(), paused, now);
    }
    shared.metrics.poll_done(name, started.elapsed(), errors);
    let Some(st) = &shared.self_trigger else {
        shared.cache.update(name, |seen| {
            seen.observation = Some(obs);
            seen.observed_at = Some((started_wall, started));
        });
        return errors;
    };
    shared.cache.update(name, |seen| {
        seen.observation = Some(obs.clone());
        seen.observed_at = Some((started_wall, started));
    });
    maybe_self_trigger(nodes, name, &obs, record.as_ref(), paused, st).await;
    errors
}

/// Poll every target each `settings.interval` until `shutdown` becomes `true` (or its sender
/// is dropped). In-flight polls are aborted on shutdown: they only read.
pub async fn poll_loop<N, C, P>(
    targets: Vec<PollTarget<N>>,
    shared: Arc<PollShared<C, P>>,
    shutdown: watch::Receiver<bool>,
) where
    N: Nodes + 'static,
    C: Coordinator + 'static,
    P: Fn(&str) -> bool + Send + Sync + 'static,
{
    poll_loop_owned(targets, shared, |_: &str| true, shutdown).await;
}

/// [`poll_loop`] for the targets `owns` accepts at each tick (scale-out: this instance's
/// share, [`crate::service::ownership`]); the others are not polled (nor self-triggered).
pub async fn poll_loop_owned<N, C, P, O>(
    targets: Vec<PollTarget<N>>,
    shared: Arc<PollShared<C, P>>,
    owns: O,
    mut shutdown: watch::Receiver<bool>,
) where
    N: Nodes + 'static,
    C: Coordinator + 'static,
    P: Fn(&str) -> bool + Send + Sync + 'static,
    O: Fn(&str) -> bool + Send + Sync + 'static,
{
    let mut ticker = tokio::time::interval(shared.settings.interval.max(Duration::from_millis(10)));
    // A late tick is not made up with a burst: the next poll simply happens at the next slot.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
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
                    // Scale-out: another instance polls this one.
                    if !owns(&t.cluster.name) {
                        continue;
                    }
                    if slot.as_ref().is_some_and(|h| !h.is_finished()) {
                        shared.metrics.poll_skipped(&t.cluster.name);
                        continue;
                    }
                    let nodes = Arc::clone(&t.nodes);
                    let cluster = t.cluster.clone();
                    let shared = Arc::clone(&shared);
                    *slot = Some(tokio::spawn(async move {
                        poll_cluster(&*nodes, &cluster, &shared).await;
                    }));
                }
            }
        }
    }
    for h in running.into_iter().flatten() {
        h.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{LinkState, NodeObservation};

    fn node(addr: &str, status: Result<&str, &str>) -> NodeObservation {
        let status = match status {
            Ok(info) => Ok(crate::node::info::parse(info).expect("info parses")),
            Err(e) => Err(e.to_string()),
        };
        NodeObservation {
            addr: addr.parse().expect("addr"),
            priority: 100,
            never_promote: false,
            status,
        }
    }

    const MASTER: &str =
        "# Replication\r\nrole:master\r\nconnected_slaves:0\r\nmaster_repl_offset:100\r\n";
    const UP: &str = "# Replication\r\nrole:slave\r\nmaster_host:m\r\nmaster_port:1\r\nmaster_link_status:up\r\nslave_repl_offset:90\r\n";
    const DOWN: &str = "# Replication\r\nrole:slave\r\nmaster_host:m\r\nmaster_port:1\r\nmaster_link_status:down\r\nslave_repl_offset:90\r\n";

    fn obs(master: Result<&str, &str>, r: Result<&str, &str>) -> Observation {
        Observation {
            cluster: "c".into(),
            nodes: vec![node("m:1", master), node("r:1", r)],
        }
    }

    fn rec(epoch: u64) -> TopologyRecord {
        TopologyRecord {
            master: "m:1".parse().expect("addr"),
            replicas: vec!["r:1".parse().expect("addr")],
            epoch,
            updated_at: 0,
            last_failover_at: None,
            reason: String::new(),
            pending: None,
        }
    }

    #[test]
    fn the_sighting_counts_unlinked_polls_only_while_the_master_lives() {
        let r: Addr = "r:1".parse().expect("addr");
        let polls = |seen: Option<&MasterSeen>| {
            seen.and_then(|s| s.links.get(&r)).map(|p| p.unlinked_polls)
        };
        let one = master_seen(&obs(Ok(MASTER), Ok(DOWN)), Some(&rec(1)), None);
        assert_eq!(polls(one.as_ref()), Some(1));
        assert_eq!(one.as_ref().and_then(|s| s.offset), Some(100));
        let two = master_seen(&obs(Ok(MASTER), Ok(DOWN)), Some(&rec(1)), one.as_ref());
        assert_eq!(polls(two.as_ref()), Some(2));
        // The replica does not answer: its last link and count stay.
        let same = master_seen(
            &obs(Ok(MASTER), Err("timeout")),
            Some(&rec(1)),
            two.as_ref(),
        );
        assert_eq!(polls(same.as_ref()), Some(2));
        // The master does not answer: no new sighting (the caller keeps the last one).
        assert_eq!(
            master_seen(&obs(Err("refused"), Ok(DOWN)), Some(&rec(1)), two.as_ref()),
            None
        );
        // Linked again: the count restarts.
        let up = master_seen(&obs(Ok(MASTER), Ok(UP)), Some(&rec(1)), two.as_ref());
        assert_eq!(polls(up.as_ref()), Some(0));
        assert_eq!(
            up.as_ref()
                .and_then(|s| s.links.get(&r))
                .and_then(|p| p.last.link),
            Some(LinkState::Up)
        );
        // A new epoch starts a new count.
        let next = master_seen(&obs(Ok(MASTER), Ok(DOWN)), Some(&rec(2)), two.as_ref());
        assert_eq!(polls(next.as_ref()), Some(1));
    }

    #[test]
    fn the_sighting_keeps_the_pika_masters_binlog_per_db() {
        const PIKA_MASTER: &str = "# Replication(MASTER)\r\nrole:master\r\nReplicationID:abc\r\nconnected_slaves:0\r\ndb0:binlog_offset=2 300,safety_purge=none\r\ndb1:binlog_offset=0 70,safety_purge=none\r\n";
        let mut one =
            master_seen(&obs(Ok(PIKA_MASTER), Ok(DOWN)), Some(&rec(1)), None).expect("a sighting");
        let dbs: Vec<(String, u64, u64)> = one
            .db_offsets
            .iter()
            .map(|(d, p)| (d.clone(), p.filenum, p.offset))
            .collect();
        assert_eq!(dbs, vec![("db0".into(), 2, 300), ("db1".into(), 0, 70)]);
        // The poll stamps the time; a later sighting without binlog lines keeps both.
        one.seen_at = 42;
        let later =
            master_seen(&obs(Ok(MASTER), Ok(DOWN)), Some(&rec(1)), Some(&one)).expect("a sighting");
        assert_eq!(later.db_offsets, one.db_offsets);
        assert_eq!(later.seen_at, 42);
        assert_eq!(
            later.last_offsets(&rec(1)).map(|(d, t)| (d.len(), t)),
            Some((2, Some(42)))
        );
        // Another epoch: not this master's history.
        assert_eq!(later.last_offsets(&rec(2)), None);
    }

    /// Two fixed nodes: `m:1` a master, `r:1` its replica.
    struct Fixed;

    impl Nodes for Fixed {
        async fn status(&self, node: &Addr) -> Result<crate::model::NodeStatus, NodeError> {
            let text = if node.host == "m" { MASTER } else { UP };
            crate::node::info::parse(text).map_err(|e| NodeError::Protocol(e.to_string()))
        }
        async fn promote(&self, _: &Addr) -> Result<(), NodeError> {
            Ok(())
        }
        async fn follow(&self, _: &Addr, _: &Addr, _: bool) -> Result<(), NodeError> {
            Ok(())
        }
        async fn set_masterauth(&self, _: &Addr) -> Result<(), NodeError> {
            Ok(())
        }
        async fn config_rewrite(&self, _: &Addr) -> Result<(), NodeError> {
            Ok(())
        }
        async fn pause_writes(&self, _: &Addr, _: Duration) -> Result<(), NodeError> {
            Ok(())
        }
        async fn unpause_writes(&self, _: &Addr) -> Result<(), NodeError> {
            Ok(())
        }
    }

    /// The poller's record comes from a kept copy once the record file has settled (local
    /// coordinator). Another instance's write must reach the very next poll: its record in
    /// the cache and its self-trigger.
    #[tokio::test]
    async fn the_next_poll_sees_a_record_another_instance_wrote() {
        use crate::config::NodeConfig;
        use crate::coord::local::{Local, SETTLE};
        let dir = tempfile::tempdir().expect("tempdir");
        let ours = Local::new(dir.path()).expect("local");
        let theirs = Local::new(dir.path()).expect("local");
        theirs
            .write_record("c", &rec(1), None)
            .await
            .expect("write");
        let fired: Arc<Mutex<Vec<Trigger>>> = Arc::default();
        let log = Arc::clone(&fired);
        let st = SelfTrigger::new(Duration::ZERO, move |_c: String, t: Trigger| {
            log.lock().expect("log").push(t);
            Box::pin(async { None })
        });
        let shared = PollShared {
            coord: Arc::new(ours.clone()),
            metrics: Arc::new(Metrics::new()),
            cache: ClusterCache::default(),
            paused: |_: &str| false,
            settings: PollSettings {
                interval: Duration::from_millis(10),
                timeout: Duration::from_secs(5),
            },
            self_trigger: Some(st),
        };
        let cluster = ClusterConfig {
            name: "c".into(),
            password: None,
            paused: false,
            rename_commands: Default::default(),
            nodes: ["m:1", "r:1"]
                .iter()
                .map(|n| NodeConfig {
                    addr: n.parse().expect("addr"),
                    priority: 100,
                    never_promote: false,
                })
                .collect(),
        };
        tokio::time::sleep(SETTLE + Duration::from_millis(200)).await;
        for _ in 0..3 {
            assert_eq!(poll_cluster(&Fixed, &cluster, &shared).await, 0);
        }
        let reads = ours.poll_reads();
        assert_eq!(reads, 1, "the settled record is read once");
        assert_eq!(shared.cache.get("c").record.map(|r| r.epoch), Some(1));
        assert!(fired.lock().expect("log").is_empty());
        // Another instance records r:1 as the master (epoch 2): r:1 still says slave.
        let mut next = rec(2);
        next.master = "r:1".parse().expect("addr");
        next.replicas = vec!["m:1".parse().expect("addr")];
        theirs
            .write_record("c", &next, Some(1))
            .await
            .expect("write");
        poll_cluster(&Fixed, &cluster, &shared).await;
        assert_eq!(ours.poll_reads(), reads + 1);
        let seen = shared.cache.get("c").record.expect("a record");
        assert_eq!((seen.epoch, seen.master.to_string()), (2, "r:1".into()));
        // The self-trigger saw the new record (r:1 reports role slave against it).
        tokio::task::yield_now().await;
        assert_eq!(*fired.lock().expect("log"), [Trigger::RoleMismatch]);
    }
}
