//! An instance never blocks itself on its own lock: a lease whose release failed (store down),
//! or that was dropped without a release (a cancelled reconcile), is this instance's orphan.
//! It is released in the background once the store answers, and `try_lock` releases it before
//! locking again, so the next trigger after a store outage acts at once instead of answering
//! "lock held by" this very instance until the lease lapses (etcd restarts a lease's TTL when
//! it restarts from its data dir; Consul keeps a session for up to 2×TTL).
//!
//! Real etcd (Debian `etcd-server`), the Consul API test server, the local backend in a temp
//! dir, real `redis-server` for the end-to-end failover. Every wait is bounded.
#![cfg(feature = "etcd")]

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::fixtures::real_policy;

use pika_remedy::config::{ClusterConfig, ConsulConfig, EtcdConfig, NodeConfig, Policy, Timeouts};
use pika_remedy::coord::consul::Consul;
use pika_remedy::coord::etcd::Etcd;
use pika_remedy::coord::local::Local;
use pika_remedy::coord::{Coordinator, Holder, Lease, LockOutcome};
use pika_remedy::decide::{Action, Trigger};
use pika_remedy::metrics::Metrics;
use pika_remedy::model::{Addr, Engine, NodeStatus};
use pika_remedy::node::redis::RedisNodes;
use pika_remedy::node::{NodeError, Nodes, SnapshotInfo};
use pika_remedy::reconcile::{reconcile, Ctx, Outcome, Result_};
use support::contract::holder;
use support::etcd::EtcdServer;
use support::fake_consul::FakeConsul;
use support::fakes::ctx;
use support::redis::{wait_for, RedisCluster, RedisNode};

const PREFIX: &str = "/pr-faults";

fn timeouts() -> Timeouts {
    Timeouts {
        connect: Duration::from_millis(300),
        command: Duration::from_millis(700),
    }
}

async fn etcd_coord(server: &EtcdServer) -> Etcd {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let cfg = EtcdConfig {
        endpoints: vec![server.endpoint()],
        prefix: PREFIX.into(),
        ..EtcdConfig::default()
    };
    Etcd::connect(&cfg, None, &timeouts())
        .await
        .expect("etcd client")
}

fn consul_coord(fake: &FakeConsul) -> Consul {
    let cfg = ConsulConfig {
        address: fake.url(),
        prefix: "pr-faults".into(),
        ..ConsulConfig::default()
    };
    Consul::new(&cfg, None, &timeouts()).expect("consul client")
}

async fn acquire<C: Coordinator>(c: &C, cluster: &str, h: &Holder, ttl: Duration) -> Lease {
    match c.try_lock(cluster, h, ttl).await.expect("try_lock") {
        LockOutcome::Acquired(l) => l,
        other => panic!("expected to acquire {cluster}, got {other:?}"),
    }
}

/// The first `try_lock` by the same instance after the store is back must acquire, with a
/// new fencing token; a second instance must then see the new lock.
async fn relock_at_once<C: Coordinator>(a: &C, b: &C, cluster: &str, old_token: &str) -> Lease {
    let me = holder("instance-a");
    let got = tokio::time::timeout(Duration::from_secs(10), a.try_lock(cluster, &me, ttl()))
        .await
        .expect("try_lock is bounded")
        .expect("store is back");
    let lease = match got {
        LockOutcome::Acquired(l) => l,
        LockOutcome::HeldBy(h) => panic!(
            "the instance blocked itself: lock held by {h:?} right after the store came back"
        ),
    };
    assert_ne!(lease.token, old_token, "a fresh fencing token");
    assert!(a.still_held(&lease).await.expect("still_held"));
    match b
        .try_lock(cluster, &holder("instance-b"), ttl())
        .await
        .expect("b")
    {
        LockOutcome::HeldBy(Some(h)) => assert_eq!(h.instance, "instance-a"),
        other => panic!("b must see a's new lock, got {other:?}"),
    }
    let pending: Vec<_> = a
        .held_locks()
        .into_iter()
        .filter(|h| h.release_pending)
        .collect();
    assert!(pending.is_empty(), "orphan still listed: {pending:?}");
    lease
}

/// Long compared with the waits below: anything that clears only by TTL fails these tests.
fn ttl() -> Duration {
    Duration::from_secs(20)
}

// --- etcd ------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_failed_release_then_restart_relocks_at_once() {
    let mut server = EtcdServer::start_new();
    let a = etcd_coord(&server).await;
    let b = etcd_coord(&server).await;
    let la = acquire(&a, "c", &holder("instance-a"), ttl()).await;
    let old = la.token.clone();
    assert_eq!(a.held_locks().len(), 1);
    server.stop();
    let e = a.release(la).await.expect_err("etcd is down");
    assert!(e.is_retryable(), "{e}");
    let held = a.held_locks();
    assert!(
        held.len() == 1 && held[0].release_pending && held[0].cluster == "c",
        "the unreleased lease is listed as pending: {held:?}"
    );
    // `pika_remedy_lock_held` says what the coordinator still holds for this instance.
    let m = Metrics::new();
    let clusters = vec!["c".to_string(), "other".to_string()];
    m.locks(&clusters, &a.held_locks(), ttl());
    let text = m.encode_classic();
    assert_eq!(
        metric(&text, "pika_remedy_lock_held{cluster=\"c\"}"),
        1.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, "pika_remedy_lock_release_pending{cluster=\"c\"}"),
        1.0
    );
    assert_eq!(
        metric(&text, "pika_remedy_lock_held{cluster=\"other\"}"),
        0.0
    );
    assert_eq!(metric(&text, "pika_remedy_lock_ttl_seconds"), 20.0);
    server.start();
    let lease = relock_at_once(&a, &b, "c", &old).await;
    m.locks(&clusters, &a.held_locks(), ttl());
    let text = m.encode_classic();
    assert_eq!(metric(&text, "pika_remedy_lock_held{cluster=\"c\"}"), 1.0);
    assert_eq!(
        metric(&text, "pika_remedy_lock_release_pending{cluster=\"c\"}"),
        0.0
    );
    a.release(lease).await.expect("release");
    assert!(a.held_locks().is_empty());
    m.locks(&clusters, &a.held_locks(), ttl());
    m.lock_refused("c", true);
    let text = m.encode_classic();
    assert_eq!(metric(&text, "pika_remedy_lock_held{cluster=\"c\"}"), 0.0);
    assert_eq!(
        metric(&text, "pika_remedy_lock_held_seconds{cluster=\"c\"}"),
        0.0
    );
    assert_eq!(
        metric(
            &text,
            "pika_remedy_lock_refusals_total{cluster=\"c\",holder=\"this_instance\"}"
        ),
        1.0
    );
}

/// The value of the sample line that starts with `series ` (classic text format).
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
        .trim()
        .parse()
        .expect("a number")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_failed_release_is_retried_in_the_background() {
    let mut server = EtcdServer::start_new();
    let a = etcd_coord(&server).await;
    let b = etcd_coord(&server).await;
    let la = acquire(&a, "c", &holder("instance-a"), ttl()).await;
    server.stop();
    a.release(la).await.expect_err("etcd is down");
    server.start();
    // Nobody calls `a` again: its background release must free the lock well within the TTL.
    let t = Instant::now();
    let lb = support::contract::lock_within(
        &b,
        "c",
        &holder("instance-b"),
        ttl(),
        Duration::from_secs(8),
    )
    .await;
    eprintln!(
        "lock free for another instance {:?} after etcd restart",
        t.elapsed()
    );
    // `a` forgets the lease just after etcd answers the revoke, so `b` may see the lock
    // free a moment before `a`'s book does.
    let forgot = Instant::now();
    while !a.held_locks().is_empty() {
        assert!(
            forgot.elapsed() < Duration::from_secs(2),
            "lock freed but still booked: {:?}",
            a.held_locks()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    b.release(lb).await.expect("release");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_dropped_lease_is_revoked_not_left_to_its_ttl() {
    let server = EtcdServer::start_new();
    let a = etcd_coord(&server).await;
    let b = etcd_coord(&server).await;
    let la = acquire(&a, "d", &holder("instance-a"), ttl()).await;
    let old = la.token.clone();
    // A reconcile cancelled by its time bound drops its lease without releasing it.
    drop(la);
    let lease = relock_at_once(&a, &b, "d", &old).await;
    a.release(lease).await.expect("release");
}

// --- Consul ----------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_failed_release_then_restart_relocks_at_once() {
    let fake = FakeConsul::start().await;
    let a = consul_coord(&fake);
    let b = consul_coord(&fake);
    let la = acquire(&a, "c", &holder("instance-a"), ttl()).await;
    let old = la.token.clone();
    fake.stop().await;
    let e = a.release(la).await.expect_err("consul is down");
    assert!(e.is_retryable(), "{e}");
    assert!(a.held_locks().iter().any(|h| h.release_pending));
    fake.restart().await;
    let lease = relock_at_once(&a, &b, "c", &old).await;
    a.release(lease).await.expect("release");
    assert!(a.held_locks().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_failed_release_is_retried_in_the_background() {
    let fake = FakeConsul::start().await;
    let a = consul_coord(&fake);
    let b = consul_coord(&fake);
    let la = acquire(&a, "c", &holder("instance-a"), ttl()).await;
    let session = la.token.split(':').next().expect("session").to_string();
    fake.stop().await;
    a.release(la).await.expect_err("consul is down");
    fake.restart().await;
    let lb = support::contract::lock_within(
        &b,
        "c",
        &holder("instance-b"),
        ttl(),
        Duration::from_secs(8),
    )
    .await;
    assert!(
        fake.sessions().iter().all(|s| s.id != session),
        "the orphaned session was destroyed, not left to lapse"
    );
    b.release(lb).await.expect("release");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_dropped_lease_is_freed_not_left_to_its_ttl() {
    let fake = FakeConsul::start().await;
    let a = consul_coord(&fake);
    let b = consul_coord(&fake);
    let la = acquire(&a, "d", &holder("instance-a"), ttl()).await;
    let old = la.token.clone();
    drop(la);
    let lease = relock_at_once(&a, &b, "d", &old).await;
    a.release(lease).await.expect("release");
}

// --- local -----------------------------------------------------------------------------------

/// The local backend has no orphans to begin with (release and drop only close the lock file),
/// checked here for both paths: the flock is free at once for this instance and another
/// process's view, and the generation moves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_release_and_drop_leave_no_lock_behind() {
    let dir = tempfile::tempdir().expect("temp dir");
    let a = Local::new(dir.path()).expect("local");
    let b = Local::new(dir.path()).expect("local (another process's view)");
    let la = acquire(&a, "c", &holder("instance-a"), ttl()).await;
    assert_eq!(a.held_locks().len(), 1);
    let old = la.token.clone();
    drop(la);
    assert!(a.held_locks().is_empty(), "{:?}", a.held_locks());
    let lease = relock_at_once(&a, &b, "c", &old).await;
    let old = lease.token.clone();
    a.release(lease).await.expect("release");
    assert!(a.held_locks().is_empty());
    // Another test of this binary spawning a process (etcd, redis) forks: between its fork
    // and exec the child briefly shares our open lock file, and with it the flock. So the
    // other instance may retry for a moment (bounded: 2 s, 20 tries); a lock that is never
    // freed still fails here.
    let mut lb = None;
    for _ in 0..20 {
        match b
            .try_lock("c", &holder("instance-b"), ttl())
            .await
            .expect("try_lock")
        {
            LockOutcome::Acquired(l) => {
                lb = Some(l);
                break;
            }
            LockOutcome::HeldBy(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let lb = lb.expect("instance-b acquires after instance-a released");
    assert_ne!(lb.token, old);
    b.release(lb).await.expect("release");
    let generation = std::fs::read_to_string(dir.path().join("c.generation")).expect("generation");
    assert_eq!(generation.trim(), "3", "one generation per acquisition");
}

// --- end to end: etcd killed during a failover -------------------------------------------------

/// `RedisNodes` with a hook that runs once, before the first `SLAVEOF NO ONE`.
struct HookNodes {
    inner: RedisNodes,
    before_promote: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl Nodes for HookNodes {
    async fn status(&self, node: &Addr) -> Result<NodeStatus, NodeError> {
        self.inner.status(node).await
    }
    async fn promote(&self, node: &Addr) -> Result<(), NodeError> {
        let hook = self.before_promote.lock().expect("hook").take();
        if let Some(h) = hook {
            h();
        }
        self.inner.promote(node).await
    }
    async fn follow(&self, node: &Addr, master: &Addr, force: bool) -> Result<(), NodeError> {
        self.inner.follow(node, master, force).await
    }
    async fn set_masterauth(&self, node: &Addr) -> Result<(), NodeError> {
        self.inner.set_masterauth(node).await
    }
    async fn config_rewrite(&self, node: &Addr) -> Result<(), NodeError> {
        self.inner.config_rewrite(node).await
    }
    async fn pause_writes(&self, node: &Addr, d: Duration) -> Result<(), NodeError> {
        self.inner.pause_writes(node, d).await
    }
    async fn unpause_writes(&self, node: &Addr) -> Result<(), NodeError> {
        self.inner.unpause_writes(node).await
    }
    async fn kill_clients(&self, node: &Addr) -> Result<Option<u64>, NodeError> {
        self.inner.kill_clients(node).await
    }
    async fn clear_replication_id(&self, node: &Addr) -> Result<(), NodeError> {
        self.inner.clear_replication_id(node).await
    }
    async fn snapshot(
        &self,
        node: &Addr,
        engine: Engine,
        tag: &str,
        timeout: Duration,
    ) -> Result<SnapshotInfo, NodeError> {
        self.inner.snapshot(node, engine, tag, timeout).await
    }
}

async fn run(ctx: &Ctx<'_, HookNodes, Etcd>, trigger: Trigger) -> Outcome {
    tokio::time::timeout(Duration::from_secs(40), reconcile(ctx, trigger))
        .await
        .expect("reconcile is bounded")
}

/// The scenario: etcd is killed -9 while a failover runs, restarted from its data dir;
/// the next trigger must act (finish the failover, then demote the old master) instead of
/// answering "lock held by" this instance until the lock lease lapses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_killed_during_failover_next_trigger_acts() {
    let server = EtcdServer::start_new();
    let coord = etcd_coord(&server).await;
    let server = Arc::new(Mutex::new(server));
    let mut rc = RedisCluster::start(2, None);
    let cfg = ClusterConfig {
        name: "e2e".into(),
        password: None,
        paused: false,
        rename_commands: Default::default(),
        nodes: rc
            .addrs()
            .into_iter()
            .map(|addr| NodeConfig {
                addr,
                priority: 100,
                never_promote: false,
            })
            .collect(),
    };
    let nodes = HookNodes {
        inner: RedisNodes::new(&timeouts(), None),
        before_promote: Mutex::new(None),
    };
    let policy = Policy {
        lock_ttl: ttl(),
        ..real_policy()
    };
    let me = holder("instance-a");
    let ctx = ctx(&cfg, &nodes, &coord, &policy, &me);
    let out = run(&ctx, Trigger::Periodic).await;
    assert_eq!(out.result, Result_::Applied, "bootstrap: {out:#?}");

    // kill -9 the master; etcd dies (SIGKILL) right when the failover promotes.
    rc.master.kill9();
    let mport = rc.master.port();
    wait_for(Duration::from_secs(5), "replica links down", || {
        rc.replicas.iter().all(|r| !r.is_linked_to(mport))
    });
    let s2 = Arc::clone(&server);
    *nodes.before_promote.lock().expect("hook") = Some(Box::new(move || {
        s2.lock().expect("etcd").stop();
    }));
    let out = run(&ctx, Trigger::MasterDown).await;
    assert!(
        matches!(out.result, Result_::Failed { .. }),
        "the failover cannot finish without etcd: {out:#?}"
    );
    assert!(
        coord.held_locks().iter().any(|h| h.release_pending),
        "the lock lease could not be released: {:?}",
        coord.held_locks()
    );

    server.lock().expect("etcd").start();
    let back = Instant::now();
    // The next trigger acts: it finishes the failover (the write-ahead intent names the node).
    let out = run(&ctx, Trigger::MasterDown).await;
    assert!(
        !matches!(out.result, Result_::LockHeld { .. }),
        "blocked on its own lock after etcd came back: {out:#?}"
    );
    assert_eq!(out.result, Result_::Applied, "{out:#?}");
    assert!(
        matches!(out.plan.action, Action::Failover { .. }),
        "{out:#?}"
    );
    // The old master comes back as master: the next trigger demotes it.
    rc.master.restart();
    let out = run(&ctx, Trigger::RoleMismatch).await;
    assert_eq!(out.result, Result_::Applied, "{out:#?}");
    assert!(matches!(out.plan.action, Action::Demote { .. }), "{out:#?}");
    let acted = back.elapsed();
    eprintln!(
        "etcd back → failover finished and old master demoted in {acted:?} (lock TTL {:?})",
        ttl()
    );
    assert!(acted < ttl(), "acted after {acted:?}, lock TTL {:?}", ttl());
    let old: &RedisNode = &rc.master;
    assert_eq!(old.role(), "slave");
}
