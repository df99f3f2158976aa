//! In-memory doubles for executor tests: `FakeNodes` simulates replication roles the way
//! Pika/Redis behave at the level reconcile sees them; `FakeCoord` is a coordinator whose
//! lease can be revoked or whose store can go unreachable on demand.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pika_remedy::config::{ClusterConfig, Policy};
use pika_remedy::coord::{CasOutcome, CoordError, Coordinator, Holder, Lease, LockOutcome};
use pika_remedy::model::{
    Addr, BinlogPos, Engine, LinkState, NodeStatus, Role, TopologyRecord, Versioned,
};
use pika_remedy::node::{NodeError, Nodes};
use pika_remedy::reconcile::Ctx;

#[derive(Clone, Debug)]
pub struct FakeNode {
    pub up: bool,
    pub engine: Engine,
    pub role: Role,
    pub master: Option<Addr>,
    pub offset: u64,
    /// The link never comes up (Pika's handshake that never retries) until a forced SLAVEOF.
    pub stuck_until_force: bool,
    /// Answer `already master of others` this many more times.
    pub linger_others: u32,
    pub fail_rewrite: bool,
    /// Fail this many more `CONFIG REWRITE`s, then succeed (a transient error).
    pub fail_rewrite_times: u32,
    /// `INFO server` version (Pika 4.x can fence writes with ACL).
    pub version: String,
    /// ReplicationID. On Pika a slave whose ID is set and differs from its master's never
    /// links (the MetaSync is refused); a slave without one takes the master's.
    pub replid: Option<String>,
    /// Normal client connections open on it (`CLIENT KILL TYPE normal` closes them).
    pub clients: u64,
    /// `BGSAVE` (the snapshot before a demotion) fails.
    pub fail_snapshot: bool,
}

impl FakeNode {
    pub fn new(engine: Engine) -> FakeNode {
        FakeNode {
            up: true,
            engine,
            role: Role::Master,
            master: None,
            offset: 1000,
            stuck_until_force: false,
            linger_others: 0,
            fail_rewrite: false,
            fail_rewrite_times: 0,
            version: "test".into(),
            replid: Some("r".into()),
            clients: 0,
            fail_snapshot: false,
        }
    }
}

type Hook = Box<dyn Fn(&str) + Send + Sync>;

#[derive(Default)]
pub struct FakeNodes {
    pub nodes: Mutex<BTreeMap<Addr, FakeNode>>,
    /// Every mutating command, as "addr: COMMAND args".
    pub log: Mutex<Vec<String>>,
    pub status_calls: AtomicU64,
    /// Called after each mutating command is applied (e.g. to revoke the lock mid-plan).
    pub on_command: Mutex<Option<Hook>>,
    /// (node, n): the node comes back up when the n-th status call (1-based) starts.
    pub up_at_status_call: Mutex<Option<(Addr, u64)>>,
    /// (node, n): the node goes down (a kill -9) when the n-th status call (1-based) starts.
    pub down_at_status_call: Mutex<Option<(Addr, u64)>>,
}

pub fn a(s: &str) -> Addr {
    s.parse().expect("addr")
}

impl FakeNodes {
    /// Master `m` with replicas following it, all up with link up.
    pub fn cluster(engine: Engine, master: &str, replicas: &[&str]) -> FakeNodes {
        let f = FakeNodes::default();
        {
            let mut n = f.nodes.lock().expect("lock");
            n.insert(a(master), FakeNode::new(engine));
            for (i, r) in replicas.iter().enumerate() {
                let mut node = FakeNode::new(engine);
                node.role = Role::Slave;
                node.master = Some(a(master));
                node.offset = 1000 - i as u64;
                n.insert(a(r), node);
            }
        }
        f
    }
    pub fn set(&self, addr: &str, f: impl FnOnce(&mut FakeNode)) {
        let mut n = self.nodes.lock().expect("lock");
        f(n.get_mut(&a(addr)).expect("known node"));
    }
    pub fn get(&self, addr: &str) -> FakeNode {
        self.nodes.lock().expect("lock")[&a(addr)].clone()
    }
    pub fn commands(&self) -> Vec<String> {
        self.log.lock().expect("lock").clone()
    }
    pub fn on_command(&self, h: impl Fn(&str) + Send + Sync + 'static) {
        *self.on_command.lock().expect("lock") = Some(Box::new(h));
    }
    fn record(&self, line: String) {
        self.log.lock().expect("lock").push(line.clone());
        if let Some(h) = self.on_command.lock().expect("lock").as_ref() {
            h(&line);
        }
    }
    fn with_up<T>(
        &self,
        addr: &Addr,
        f: impl FnOnce(&mut BTreeMap<Addr, FakeNode>) -> Result<T, NodeError>,
    ) -> Result<T, NodeError> {
        let mut n = self.nodes.lock().expect("lock");
        match n.get(addr) {
            Some(x) if x.up => f(&mut n),
            _ => Err(NodeError::Refused),
        }
    }
}

fn link_of(all: &BTreeMap<Addr, FakeNode>, node: &FakeNode) -> LinkState {
    let Some(m) = &node.master else {
        return LinkState::Down;
    };
    if node.stuck_until_force {
        return LinkState::Down;
    }
    if node.engine == Engine::Pika {
        if let (Some(mine), Some(mm)) = (&node.replid, all.get(m)) {
            if mm.replid.as_ref() != Some(mine) {
                return LinkState::Down;
            }
        }
    }
    match all.get(m) {
        Some(mm) if mm.up && mm.role != Role::Slave => LinkState::Up,
        _ => LinkState::Down,
    }
}

impl Nodes for FakeNodes {
    async fn status(&self, node: &Addr) -> Result<NodeStatus, NodeError> {
        let call = self.status_calls.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some((addr, n)) = self.up_at_status_call.lock().expect("lock").clone() {
            if call == n {
                self.set(&addr.to_string(), |x| x.up = true);
            }
        }
        if let Some((addr, n)) = self.down_at_status_call.lock().expect("lock").clone() {
            if call == n {
                self.set(&addr.to_string(), |x| x.up = false);
            }
        }
        self.with_up(node, |all| {
            let me = &all[node];
            let followers: Vec<&Addr> = all
                .iter()
                .filter(|(_, f)| {
                    f.up && f.master.as_ref() == Some(node) && link_of(all, f) == LinkState::Up
                })
                .map(|(k, _)| k)
                .collect();
            let link = me.role.is_replica().then(|| link_of(all, me));
            let mut db_offsets = BTreeMap::new();
            if me.engine == Engine::Pika {
                db_offsets.insert(
                    "db0".to_string(),
                    BinlogPos {
                        filenum: 0,
                        offset: me.offset,
                    },
                );
            }
            Ok(NodeStatus {
                engine: me.engine,
                version: Some(me.version.clone()),
                role: if me.role == Role::Master && me.master.is_some() {
                    Role::MasterSlave
                } else {
                    me.role
                },
                master: me.master.clone(),
                link,
                db_links: BTreeMap::new(),
                db_offsets,
                offset: Some(me.offset),
                replid: me.replid.clone(),
                eligible: Some(true),
                priority: Some(100),
                connected_replicas: followers.len() as u32
                    + if me.linger_others > 0 { 1 } else { 0 },
                replicas: Vec::new(),
                psync: None,
            })
        })
    }

    async fn promote(&self, node: &Addr) -> Result<(), NodeError> {
        self.with_up(node, |all| {
            let me = all.get_mut(node).expect("present");
            me.role = Role::Master;
            me.master = None;
            Ok(())
        })?;
        self.record(format!("{node}: SLAVEOF NO ONE"));
        Ok(())
    }

    async fn follow(&self, node: &Addr, master: &Addr, force: bool) -> Result<(), NodeError> {
        self.with_up(node, |all| {
            let all_replid = all.get(master).and_then(|m| m.replid.clone());
            let has_followers = all
                .iter()
                .any(|(_, f)| f.up && f.master.as_ref() == Some(node));
            let me = all.get_mut(node).expect("present");
            if me.engine == Engine::Pika && me.linger_others > 0 {
                me.linger_others -= 1;
                return Err(NodeError::MasterOfOthers(
                    "ERR already master of others, invalid usage".into(),
                ));
            }
            if me.engine == Engine::Pika && has_followers {
                return Err(NodeError::MasterOfOthers(
                    "ERR already master of others, invalid usage".into(),
                ));
            }
            if force && me.engine != Engine::Pika {
                return Err(NodeError::Node("ERR syntax error".into()));
            }
            if force {
                me.stuck_until_force = false;
            }
            if me.replid.is_none() {
                me.replid = all_replid;
            }
            me.role = Role::Slave;
            me.master = Some(master.clone());
            Ok(())
        })?;
        self.record(format!(
            "{node}: SLAVEOF {} {}{}",
            master.host,
            master.port,
            if force { " force" } else { "" }
        ));
        Ok(())
    }

    async fn set_masterauth(&self, node: &Addr) -> Result<(), NodeError> {
        self.with_up(node, |_| Ok(()))?;
        self.record(format!("{node}: CONFIG SET masterauth <password>"));
        Ok(())
    }

    async fn config_rewrite(&self, node: &Addr) -> Result<(), NodeError> {
        self.with_up(node, |all| {
            let me = all.get_mut(node).expect("present");
            if me.fail_rewrite_times > 0 {
                me.fail_rewrite_times -= 1;
                return Err(NodeError::Node("ERR Rewire CONFIG fail".into()));
            }
            if me.fail_rewrite {
                Err(NodeError::Node("ERR Rewire CONFIG fail".into()))
            } else {
                Ok(())
            }
        })?;
        self.record(format!("{node}: CONFIG REWRITE"));
        Ok(())
    }

    async fn pause_writes(&self, node: &Addr, d: Duration) -> Result<(), NodeError> {
        self.with_up(node, |_| Ok(()))?;
        self.record(format!("{node}: CLIENT PAUSE {} WRITE", d.as_millis()));
        Ok(())
    }

    async fn unpause_writes(&self, node: &Addr) -> Result<(), NodeError> {
        self.with_up(node, |_| Ok(()))?;
        self.record(format!("{node}: CLIENT UNPAUSE"));
        Ok(())
    }

    async fn clear_replication_id(&self, node: &Addr) -> Result<(), NodeError> {
        self.with_up(node, |all| {
            let me = all.get_mut(node).expect("present");
            if me.role.is_replica() || me.master.is_some() {
                return Err(NodeError::ReadOnly(
                    "ERR READONLY You can't write against a read only replica.".into(),
                ));
            }
            me.replid = None;
            Ok(())
        })?;
        self.record(format!("{node}: CLEARREPLICATIONID"));
        Ok(())
    }

    async fn kill_clients(&self, node: &Addr) -> Result<Option<u64>, NodeError> {
        let (n, engine) = self.with_up(node, |all| {
            let me = all.get_mut(node).expect("present");
            let n = me.clients;
            me.clients = 0;
            Ok((n, me.engine))
        })?;
        self.record(format!("{node}: CLIENT KILL TYPE normal"));
        Ok((engine == Engine::Redis).then_some(n))
    }

    async fn refresh_dump(
        &self,
        node: &Addr,
        _engine: Engine,
        _timeout: Duration,
    ) -> Result<(), NodeError> {
        self.with_up(node, |_| Ok(()))?;
        self.record(format!("{node}: BGSAVE"));
        Ok(())
    }

    async fn snapshot(
        &self,
        node: &Addr,
        engine: Engine,
        tag: &str,
        _timeout: Duration,
    ) -> Result<pika_remedy::node::SnapshotInfo, NodeError> {
        self.with_up(node, |all| {
            let me = all.get_mut(node).expect("present");
            if me.fail_snapshot {
                return Err(NodeError::Node("BGSAVE did not finish within 1s".into()));
            }
            Ok(())
        })?;
        self.record(format!("{node}: BGSAVE"));
        Ok(pika_remedy::node::SnapshotInfo {
            path: format!("/fake/{}", pika_remedy::decide::snapshot_name(engine, tag)),
            size_bytes: Some(1),
            keys: None,
            millis: 1,
        })
    }

    async fn fence_writes(&self, node: &Addr) -> Result<(), NodeError> {
        self.with_up(node, |_| Ok(()))?;
        self.record(format!("{node}: ACL SETUSER default -@write"));
        Ok(())
    }

    async fn unfence_writes(&self, node: &Addr) -> Result<(), NodeError> {
        self.with_up(node, |_| Ok(()))?;
        self.record(format!("{node}: ACL SETUSER default +@write"));
        Ok(())
    }
}

/// A coordinator in memory, with switches for failure injection.
#[derive(Default, Clone)]
pub struct FakeCoord {
    inner: Arc<FakeCoordInner>,
}

#[derive(Default)]
struct FakeCoordInner {
    record: Mutex<Option<Versioned<TopologyRecord>>>,
    lock: Mutex<Option<(String, Holder)>>,
    generation: AtomicU64,
    pub unreachable: AtomicBool,
    steal_after_write: AtomicBool,
}

impl FakeCoord {
    pub fn with_record(master: &str, replicas: &[&str], epoch: u64) -> FakeCoord {
        let c = FakeCoord::default();
        *c.inner.record.lock().expect("lock") = Some(Versioned {
            value: TopologyRecord {
                master: a(master),
                replicas: replicas.iter().map(|r| a(r)).collect(),
                epoch,
                updated_at: 1,
                last_failover_at: None,
                pending: None,
                reason: "test".into(),
            },
            version: 1,
        });
        c
    }
    pub fn record(&self) -> Option<TopologyRecord> {
        self.inner
            .record
            .lock()
            .expect("lock")
            .as_ref()
            .map(|v| v.value.clone())
    }
    /// Another instance takes over: the current lease becomes stale.
    pub fn steal_lock(&self, by: &str) {
        let g = self.inner.generation.fetch_add(1, Ordering::SeqCst) + 1;
        *self.inner.lock.lock().expect("lock") = Some((
            format!("g{g}"),
            Holder {
                instance: by.into(),
                host: "h".into(),
                pid: 1,
                since: 1,
            },
        ));
    }
    /// The next final record write (not an intent) is followed by a takeover (the writer crashes after it).
    pub fn steal_lock_after_record(&self) {
        self.inner.steal_after_write.store(true, Ordering::SeqCst);
    }
    /// The other instance's lease ends.
    pub fn release_stolen(&self) {
        *self.inner.lock.lock().expect("lock") = None;
    }
    pub fn set_unreachable(&self, v: bool) {
        self.inner.unreachable.store(v, Ordering::SeqCst);
    }
    fn check(&self) -> Result<(), CoordError> {
        if self.inner.unreachable.load(Ordering::SeqCst) {
            Err(CoordError::Unreachable("fake store down".into()))
        } else {
            Ok(())
        }
    }
}

impl Coordinator for FakeCoord {
    fn kind(&self) -> &'static str {
        "fake"
    }
    async fn try_lock(
        &self,
        cluster: &str,
        holder: &Holder,
        _ttl: Duration,
    ) -> Result<LockOutcome, CoordError> {
        self.check()?;
        let mut l = self.inner.lock.lock().expect("lock");
        if let Some((_, h)) = &*l {
            return Ok(LockOutcome::HeldBy(Some(h.clone())));
        }
        let g = self.inner.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let token = format!("g{g}");
        *l = Some((token.clone(), holder.clone()));
        Ok(LockOutcome::Acquired(Lease::external(
            cluster,
            &token,
            holder.clone(),
        )))
    }
    async fn still_held(&self, lease: &Lease) -> Result<bool, CoordError> {
        self.check()?;
        Ok(matches!(&*self.inner.lock.lock().expect("lock"), Some((t, _)) if *t == lease.token))
    }
    async fn release(&self, lease: Lease) -> Result<(), CoordError> {
        self.check()?;
        let mut l = self.inner.lock.lock().expect("lock");
        if matches!(&*l, Some((t, _)) if *t == lease.token) {
            *l = None;
        }
        Ok(())
    }
    async fn read_record(
        &self,
        _cluster: &str,
    ) -> Result<Option<Versioned<TopologyRecord>>, CoordError> {
        self.check()?;
        Ok(self.inner.record.lock().expect("lock").clone())
    }
    async fn write_record(
        &self,
        _cluster: &str,
        record: &TopologyRecord,
        expected: Option<u64>,
    ) -> Result<CasOutcome, CoordError> {
        self.check()?;
        let mut r = self.inner.record.lock().expect("lock");
        if r.as_ref().map(|v| v.version) != expected {
            return Ok(CasOutcome::Conflict);
        }
        let version = expected.unwrap_or(0) + 1;
        *r = Some(Versioned {
            value: record.clone(),
            version,
        });
        drop(r);
        // Only a final record (not the write-ahead intent) triggers the takeover.
        if record.pending.is_none() && self.inner.steal_after_write.swap(false, Ordering::SeqCst) {
            self.steal_lock("instance-b");
        }
        Ok(CasOutcome::Written(version))
    }
    async fn ping(&self) -> Result<(), CoordError> {
        self.check()
    }
}

// ------------------------------------------------------------------ fake reconciler

#[allow(unused_imports)] // not every test binary uses the fake reconciler
pub use self::reconciler::{FakeReconciler, Script};

/// One configurable `Reconciler` for the supervisor and HTTP tests: records every call,
/// tracks concurrency, sleeps, and answers "no action" unless a switch or a script says
/// otherwise.
mod reconciler {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Mutex;
    use std::time::Duration;

    use pika_remedy::decide::{Plan, Trigger};
    use pika_remedy::reconcile::{plan_started, Outcome, Result_};
    use pika_remedy::service::supervisor::{ClusterSnapshot, Control, Reconciler};

    /// One scripted step per call: (delay, outcome builder given the 0-based call index).
    /// Past the script the switches and the idle answer apply.
    pub type Script = Vec<(Duration, fn(usize) -> (Plan, Result_))>;

    #[derive(Default)]
    pub struct FakeReconciler {
        pub clusters: Vec<String>,
        /// Sleep of an unscripted call.
        pub delay_ms: AtomicUsize,
        pub calls: AtomicUsize,
        pub in_flight: Mutex<HashMap<String, usize>>,
        pub max_same_cluster: AtomicUsize,
        pub total_in_flight: AtomicUsize,
        pub max_total: AtomicUsize,
        pub seen: Mutex<Vec<(String, Trigger, Control)>>,
        pub panic_next: AtomicBool,
        /// Answer "lock held by another instance" this many more times.
        pub lock_held_next: AtomicUsize,
        /// Answer "coordinator unreachable" (a refused, retryable plan) while set.
        pub retryable: AtomicBool,
        pub script: Mutex<Script>,
        /// Reason of the idle "no action" plan; `None`: "call N" (N counted from 1).
        pub idle_reason: Option<String>,
        pub observation: Vec<String>,
        pub millis: u64,
        /// `snapshot` says "no observation of <cluster> yet" instead of an empty snapshot.
        pub snapshot_error: bool,
    }

    impl FakeReconciler {
        pub fn new(clusters: &[&str]) -> FakeReconciler {
            FakeReconciler {
                clusters: clusters.iter().map(|s| s.to_string()).collect(),
                ..FakeReconciler::default()
            }
        }
        pub fn delay(self, d: Duration) -> FakeReconciler {
            self.delay_ms
                .store(d.as_millis() as usize, Ordering::SeqCst);
            self
        }
        pub fn script(self, script: Script) -> FakeReconciler {
            *self.script.lock().expect("script") = script;
            self
        }
        pub fn idle_reason(mut self, reason: &str) -> FakeReconciler {
            self.idle_reason = Some(reason.to_string());
            self
        }
        pub fn observation(mut self, lines: &[&str]) -> FakeReconciler {
            self.observation = lines.iter().map(|s| s.to_string()).collect();
            self
        }
        pub fn millis(mut self, millis: u64) -> FakeReconciler {
            self.millis = millis;
            self
        }
        pub fn snapshot_error(mut self) -> FakeReconciler {
            self.snapshot_error = true;
            self
        }
        pub fn calls(&self) -> usize {
            self.calls.load(Ordering::SeqCst)
        }
    }

    impl Reconciler for FakeReconciler {
        async fn reconcile(&self, cluster: &str, trigger: Trigger, ctl: Control) -> Outcome {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            self.seen
                .lock()
                .expect("seen")
                .push((cluster.to_string(), trigger.clone(), ctl));
            {
                let mut m = self.in_flight.lock().expect("in flight");
                let c = m.entry(cluster.to_string()).or_default();
                *c += 1;
                self.max_same_cluster.fetch_max(*c, Ordering::SeqCst);
            }
            let t = self.total_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_total.fetch_max(t, Ordering::SeqCst);
            let step = self.script.lock().expect("script").get(n - 1).cloned();
            let scripted = match step {
                Some((delay, f)) => {
                    let (plan, result) = f(n - 1);
                    if plan.action.mutates_nodes() {
                        // What `reconcile` does once the plan under the lock is final.
                        plan_started(&plan);
                    }
                    tokio::time::sleep(delay).await;
                    Some((plan, result))
                }
                None => {
                    let ms = self.delay_ms.load(Ordering::SeqCst) as u64;
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    None
                }
            };
            self.total_in_flight.fetch_sub(1, Ordering::SeqCst);
            *self
                .in_flight
                .lock()
                .expect("in flight")
                .get_mut(cluster)
                .expect("counted") -= 1;
            if self.panic_next.swap(false, Ordering::SeqCst) {
                panic!("scripted panic");
            }
            let held = self
                .lock_held_next
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |k| k.checked_sub(1))
                .is_ok();
            let retryable = scripted.is_none() && self.retryable.load(Ordering::SeqCst);
            let (plan, result) = match scripted {
                Some(s) => s,
                None if held => (
                    self.idle_plan(n),
                    Result_::LockHeld {
                        holder: "instance-b".into(),
                    },
                ),
                None if retryable => (
                    Plan::refuse("only 0 of 3 nodes answered", true),
                    Result_::CoordinatorUnreachable {
                        error: "connection refused".into(),
                    },
                ),
                None => (self.idle_plan(n), Result_::NoAction),
            };
            Outcome {
                cluster: cluster.to_string(),
                trigger,
                plan,
                result,
                steps: Vec::new(),
                observation: self.observation.clone(),
                millis: self.millis,
                retryable,
                hooks: Vec::new(),
            }
        }
        fn clusters(&self) -> Vec<String> {
            self.clusters.clone()
        }
        async fn snapshot(&self, cluster: &str) -> ClusterSnapshot {
            if self.snapshot_error {
                ClusterSnapshot {
                    observation: None,
                    record: None,
                    error: Some(format!("no observation of {cluster} yet")),
                }
            } else {
                ClusterSnapshot::default()
            }
        }
        async fn ready(&self) -> Result<(), String> {
            Ok(())
        }
    }

    impl FakeReconciler {
        fn idle_plan(&self, n: usize) -> Plan {
            match &self.idle_reason {
                Some(r) => Plan::no_action(r.clone()),
                None => Plan::no_action(format!("call {n}")),
            }
        }
    }
}

/// A reconcile context with the defaults of most tests: no node password, not a dry run, not
/// paused, no poller history. Override a field with `Ctx { dry_run: true, ..ctx(…) }`.
pub fn ctx<'a, N: Nodes, C: Coordinator>(
    cluster: &'a ClusterConfig,
    nodes: &'a N,
    coord: &'a C,
    policy: &'a Policy,
    holder: &'a Holder,
) -> Ctx<'a, N, C> {
    Ctx {
        cluster,
        nodes,
        coord,
        policy,
        holder,
        has_password: false,
        dry_run: false,
        paused: false,
        last_seen_master: None,
    }
}
