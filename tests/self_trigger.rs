//! Self-triggered reconciles (`service.self_trigger`): the poller submits a reconcile through
//! the supervisor when it sees the recorded master in trouble. The real poller, supervisor and
//! reconcile run against in-memory nodes and coordinator: transient poll failures of a live
//! master never fail over; a dead master is failed over without any alert.

mod support;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pika_remedy::config::{ClusterConfig, NodeConfig, Policy};
use pika_remedy::coord::Holder;
use pika_remedy::decide::{Action, Trigger};
use pika_remedy::metrics::Metrics;
use pika_remedy::model::{Addr, Engine, NodeStatus};
use pika_remedy::node::{NodeError, Nodes};
use pika_remedy::reconcile::handle::{ClusterHandle, Mode};
use pika_remedy::reconcile::{Outcome, Result_};
use pika_remedy::service::events::{EventLog, TriggerSource};
use pika_remedy::service::poller::{
    poll_loop, ClusterCache, PollSettings, PollShared, PollTarget, SelfTrigger,
};
use pika_remedy::service::supervisor::{
    ClusterSnapshot, Control, Reconciler, Request, Supervisor, SupervisorConfig,
};
use support::fakes::{a, FakeCoord, FakeNodes};

const M: &str = "10.0.0.1:9221";
const R1: &str = "10.0.0.2:9221";
const R2: &str = "10.0.0.3:9221";

/// The fake nodes, with the master's `INFO` failing on demand: the next `fail_next` calls
/// fail, alternately as a refused connection and as a timeout (the master stays alive, so its
/// replicas keep their links up).
struct Flaky {
    inner: FakeNodes,
    master: Addr,
    fail_next: AtomicU64,
    failed: AtomicU64,
}

impl Flaky {
    fn failed(&self) -> u64 {
        self.failed.load(Ordering::SeqCst)
    }
}

impl Nodes for Flaky {
    async fn status(&self, node: &Addr) -> Result<NodeStatus, NodeError> {
        if *node == self.master
            && self
                .fail_next
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            let n = self.failed.fetch_add(1, Ordering::SeqCst);
            return Err(if n.is_multiple_of(2) {
                NodeError::Refused
            } else {
                NodeError::Timeout
            });
        }
        self.inner.status(node).await
    }
    async fn promote(&self, node: &Addr) -> Result<(), NodeError> {
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
}

fn cluster() -> ClusterConfig {
    ClusterConfig {
        name: "c".into(),
        password: None,
        paused: false,
        rename_commands: Default::default(),
        nodes: [M, R1, R2]
            .iter()
            .map(|n| NodeConfig {
                addr: a(n),
                priority: 100,
                never_promote: false,
            })
            .collect(),
    }
}

/// The service's reconciler, over the fakes: the real `reconcile` with the poller's history.
struct Real {
    handle: ClusterHandle<Flaky, FakeCoord>,
    cache: ClusterCache,
    calls: AtomicUsize,
    outcomes: Mutex<Vec<Outcome>>,
    sources: Mutex<Vec<TriggerSource>>,
}

impl Reconciler for Real {
    async fn reconcile(&self, _cluster: &str, trigger: Trigger, ctl: Control) -> Outcome {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.sources.lock().unwrap().push(ctl.source);
        let mode = Mode {
            dry_run: ctl.dry_run,
            paused: ctl.paused,
            last_seen_master: self.cache.master_seen("c"),
            ..Mode::default()
        };
        let out = self.handle.reconcile(trigger, &mode).await;
        self.outcomes.lock().unwrap().push(out.clone());
        out
    }
    fn clusters(&self) -> Vec<String> {
        vec!["c".into()]
    }
    async fn snapshot(&self, _cluster: &str) -> ClusterSnapshot {
        ClusterSnapshot::default()
    }
    async fn ready(&self) -> Result<(), String> {
        Ok(())
    }
}

struct Running {
    real: Arc<Real>,
    nodes: Arc<Flaky>,
    coord: FakeCoord,
    stop: tokio::sync::watch::Sender<bool>,
    poller: tokio::task::JoinHandle<()>,
}

/// The poller (every 10 ms) with self-triggers on (`self_trigger`) through a real supervisor.
fn start(self_trigger: bool) -> Running {
    let nodes = Arc::new(Flaky {
        inner: FakeNodes::cluster(Engine::Redis, M, &[R1, R2]),
        master: a(M),
        fail_next: AtomicU64::new(0),
        failed: AtomicU64::new(0),
    });
    let coord = FakeCoord::with_record(M, &[R1, R2], 1);
    let cache = ClusterCache::default();
    let real = Arc::new(Real {
        handle: ClusterHandle {
            cluster: cluster(),
            nodes: Arc::clone(&nodes),
            coord: Arc::new(coord.clone()),
            policy: Policy {
                confirm_window: Duration::from_millis(20),
                promote_timeout: Duration::from_secs(2),
                link_timeout: Duration::from_millis(500),
                detach_timeout: Duration::from_secs(3),
                ..Policy::default()
            },
            holder: Arc::new(Holder {
                instance: "me".into(),
                host: "h".into(),
                pid: 1,
                since: 1,
            }),
            has_password: false,
            hooks: Default::default(),
        },
        cache: cache.clone(),
        calls: AtomicUsize::new(0),
        outcomes: Mutex::default(),
        sources: Mutex::default(),
    });
    let sup = Supervisor::new(
        Arc::clone(&real),
        Arc::new(EventLog::in_memory(100)),
        SupervisorConfig::default(),
    );
    // No quiet period: every failed poll that survives its re-probes submits a reconcile.
    let trigger = self_trigger.then(|| {
        SelfTrigger::new(Duration::ZERO, move |cluster: String, trigger: Trigger| {
            let sup = Arc::clone(&sup);
            Box::pin(async move {
                sup.submit(&cluster, Request::new(trigger, TriggerSource::SelfTrigger))
                    .await
                    .ok()
            })
        })
    });
    let shared = Arc::new(PollShared {
        coord: Arc::new(coord.clone()),
        metrics: Arc::new(Metrics::new()),
        cache,
        paused: |_: &str| false,
        settings: PollSettings {
            interval: Duration::from_millis(10),
            timeout: Duration::from_secs(5),
        },
        self_trigger: trigger,
    });
    let (stop, rx) = tokio::sync::watch::channel(false);
    let poller = tokio::spawn(poll_loop(
        vec![PollTarget {
            cluster: cluster(),
            nodes: Arc::clone(&nodes),
        }],
        shared,
        rx,
    ));
    Running {
        real,
        nodes,
        coord,
        stop,
        poller,
    }
}

impl Running {
    async fn stop(self) -> (Arc<Real>, Arc<Flaky>, FakeCoord) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.poller).await;
        (self.real, self.nodes, self.coord)
    }
}

async fn wait(what: &str, within: Duration, mut ok: impl FnMut() -> bool) {
    let t = Instant::now();
    while !ok() {
        assert!(t.elapsed() < within, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_transient_poll_failures_of_a_live_master_never_fail_over() {
    let run = start(true);
    // Let the poller see the healthy cluster first (the history of links).
    let cache = run.real.cache.clone();
    wait("a first poll", Duration::from_secs(10), || {
        cache.master_seen("c").is_some()
    })
    .await;
    // 100 failures of the master's INFO, a few at a time, seen by polls, re-probes and looks.
    for _ in 0..50 {
        run.nodes.fail_next.fetch_add(2, Ordering::SeqCst);
        let nodes = Arc::clone(&run.nodes);
        wait(
            "the failures were consumed",
            Duration::from_secs(10),
            || nodes.fail_next.load(Ordering::SeqCst) == 0,
        )
        .await;
    }
    // Let the last self-triggered reconciles finish.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (real, nodes, coord) = run.stop().await;
    assert_eq!(nodes.failed(), 100);
    let outcomes = real.outcomes.lock().unwrap().clone();
    assert!(
        !outcomes.is_empty(),
        "the failed polls triggered reconciles of their own"
    );
    assert!(real
        .sources
        .lock()
        .unwrap()
        .iter()
        .all(|s| *s == TriggerSource::SelfTrigger));
    for o in &outcomes {
        assert!(
            !o.plan.action.mutates_nodes(),
            "a transient failure acted: {o:#?}"
        );
        assert!(
            matches!(o.result, Result_::NoAction | Result_::Refused),
            "{o:#?}"
        );
    }
    assert_eq!(nodes.inner.commands(), Vec::<String>::new());
    let rec = coord.record().expect("record");
    assert_eq!((rec.master, rec.epoch), (a(M), 1));
    eprintln!(
        "100 transient failures: {} self-triggered reconciles, none acted",
        outcomes.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_master_is_failed_over_without_any_alert() {
    let run = start(true);
    let cache = run.real.cache.clone();
    wait("a first poll", Duration::from_secs(10), || {
        cache.master_seen("c").is_some()
    })
    .await;
    run.nodes.inner.set(M, |n| n.up = false);
    let coord = run.coord.clone();
    wait(
        "the record names a new master",
        Duration::from_secs(20),
        || coord.record().is_some_and(|r| r.master != a(M)),
    )
    .await;
    let (real, _, coord) = run.stop().await;
    let rec = coord.record().expect("record");
    assert_eq!(rec.epoch, 2);
    let outcomes = real.outcomes.lock().unwrap().clone();
    assert!(
        outcomes.iter().any(|o| o.trigger == Trigger::MasterDown
            && matches!(o.plan.action, Action::Failover { .. })
            && o.result == Result_::Applied),
        "{outcomes:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_self_trigger_the_poller_never_reconciles() {
    let run = start(false);
    let cache = run.real.cache.clone();
    wait("a first poll", Duration::from_secs(10), || {
        cache.master_seen("c").is_some()
    })
    .await;
    run.nodes.inner.set(M, |n| n.up = false);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (real, _, coord) = run.stop().await;
    assert_eq!(real.calls.load(Ordering::SeqCst), 0);
    assert_eq!(coord.record().expect("record").master, a(M));
}
