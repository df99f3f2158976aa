//! Failover and demotion end to end against REAL `redis-server` processes: `reconcile` with
//! `RedisNodes` and a coordinator, short policy timeouts, every wait bounded. The core tests
//! (failover, demotion + persistence, auth, idempotency, two instances racing) run on every
//! backend: `local` in a temp dir, a real `etcd`, and the Consul API test server. Redis stands in for Pika here (same SLAVEOF / CONFIG REWRITE / INFO surface); the
//! Pika-only paths are in `tests/pika_paths.rs`.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};
use support::fixtures::{holder, real_policy};

use pika_remedy::config::{
    ClusterConfig, ConsulConfig, EtcdConfig, NodeConfig, Policy, Secret, Timeouts,
};
use pika_remedy::coord::consul::Consul;
use pika_remedy::coord::etcd::Etcd;
use pika_remedy::coord::local::Local;
use pika_remedy::coord::{AnyCoord, Coordinator, Holder};
use pika_remedy::decide::{Action, MasterSeen, Trigger};
use pika_remedy::model::{Addr, TopologyRecord};
use pika_remedy::node::redis::RedisNodes;
use pika_remedy::reconcile::{reconcile, Ctx, Outcome, Result_};
use support::etcd::EtcdServer;
use support::fake_consul::FakeConsul;
use support::fakes::ctx;
use support::redis::{info_field, wait_for, wait_until, RedisCluster, RedisNode};

/// Which coordinator a test runs on.
#[derive(Clone, Copy, Debug)]
enum Backend {
    Local,
    Etcd,
    Consul,
}

/// The store behind the coordinator, kept alive for the test.
enum Store {
    Local(tempfile::TempDir),
    Etcd(EtcdServer),
    Consul(FakeConsul),
}

/// Run an `async fn(Backend)` test on every backend.
macro_rules! on_every_backend {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn local() {
                super::$name(super::Backend::Local).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn etcd() {
                super::$name(super::Backend::Etcd).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn consul() {
                super::$name(super::Backend::Consul).await
            }
        }
    };
}

async fn etcd_client(server: &EtcdServer) -> AnyCoord {
    let cfg = EtcdConfig {
        endpoints: vec![server.endpoint()],
        ..EtcdConfig::default()
    };
    AnyCoord::Etcd(
        Etcd::connect(&cfg, None, &timeouts())
            .await
            .expect("etcd client"),
    )
}

fn consul_client(fake: &FakeConsul) -> AnyCoord {
    let cfg = ConsulConfig {
        address: fake.url(),
        ..ConsulConfig::default()
    };
    AnyCoord::Consul(Consul::new(&cfg, None, &timeouts()).expect("consul client"))
}

/// Upper bound for one reconcile in these tests (the policy bounds are far below it).
const RECONCILE_BOUND: Duration = Duration::from_secs(30);
const CLUSTER: &str = "c";

fn timeouts() -> Timeouts {
    Timeouts {
        connect: Duration::from_millis(300),
        command: Duration::from_secs(2),
    }
}

/// A real cluster plus everything `reconcile` needs.
struct Env {
    rc: RedisCluster,
    cfg: ClusterConfig,
    nodes: RedisNodes,
    coord: AnyCoord,
    policy: Policy,
    holder: Holder,
    has_password: bool,
    store: Store,
}

impl Env {
    /// On the local coordinator.
    fn new(replicas: usize, password: Option<&str>) -> Env {
        let dir = tempfile::Builder::new()
            .prefix("pika-remedy-failover-")
            .tempdir()
            .expect("temp dir");
        let coord = AnyCoord::Local(Local::new(dir.path()).expect("local coordinator"));
        Env::assemble(replicas, password, coord, Store::Local(dir))
    }

    /// On the given backend (etcd and Consul get a store of their own).
    async fn on(backend: Backend, replicas: usize, password: Option<&str>) -> Env {
        match backend {
            Backend::Local => Env::new(replicas, password),
            Backend::Etcd => {
                let server = EtcdServer::start_new();
                let coord = etcd_client(&server).await;
                Env::assemble(replicas, password, coord, Store::Etcd(server))
            }
            Backend::Consul => {
                let fake = FakeConsul::start().await;
                let coord = consul_client(&fake);
                Env::assemble(replicas, password, coord, Store::Consul(fake))
            }
        }
    }

    /// A second, independent client of the same store (another process's view).
    async fn second_coord(&self) -> AnyCoord {
        match &self.store {
            Store::Local(dir) => AnyCoord::Local(Local::new(dir.path()).expect("second local")),
            Store::Etcd(server) => etcd_client(server).await,
            Store::Consul(fake) => consul_client(fake),
        }
    }

    fn assemble(replicas: usize, password: Option<&str>, coord: AnyCoord, store: Store) -> Env {
        let rc = RedisCluster::start(replicas, password);
        let cfg = ClusterConfig {
            name: CLUSTER.into(),
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
        Env {
            nodes: RedisNodes::new(&timeouts(), password.map(Secret::new)),
            has_password: password.is_some(),
            rc,
            cfg,
            coord,
            policy: real_policy(),
            holder: holder("test-a"),
            store,
        }
    }

    fn ctx(&self) -> Ctx<'_, RedisNodes, AnyCoord> {
        Ctx {
            has_password: self.has_password,
            ..ctx(
                &self.cfg,
                &self.nodes,
                &self.coord,
                &self.policy,
                &self.holder,
            )
        }
    }

    async fn run(&self, trigger: Trigger) -> Outcome {
        self.run_ctx(&self.ctx(), trigger).await
    }

    async fn run_ctx(&self, ctx: &Ctx<'_, RedisNodes, AnyCoord>, trigger: Trigger) -> Outcome {
        tokio::time::timeout(RECONCILE_BOUND, reconcile(ctx, trigger))
            .await
            .expect("reconcile is bounded")
    }

    async fn record(&self) -> Option<TopologyRecord> {
        self.coord
            .read_record(CLUSTER)
            .await
            .expect("read record")
            .map(|v| v.value)
    }

    /// Bootstrap the record with the periodic check on the clean cluster (epoch 1).
    async fn bootstrap(&self) {
        let out = self.run(Trigger::Periodic).await;
        assert_eq!(out.result, Result_::Applied, "{out:#?}");
        assert!(
            matches!(out.plan.action, Action::Bootstrap { .. }),
            "{out:#?}"
        );
        let rec = self.record().await.expect("record");
        assert_eq!((rec.master, rec.epoch), (self.rc.master.addr(), 1));
    }

    /// The node with this address.
    fn node(&self, addr: &Addr) -> &RedisNode {
        self.rc
            .nodes()
            .into_iter()
            .find(|n| &n.addr() == addr)
            .unwrap_or_else(|| panic!("no node {addr}"))
    }

    /// kill -9 the master and wait until no replica reports its link up any more (what the
    /// alert rule's `for:` would wait for; decide ignores a MasterDown while a replica sees it).
    fn kill_master(&mut self) {
        self.rc.master.kill9();
        let ports: Vec<u16> = self.rc.replicas.iter().map(RedisNode::port).collect();
        let mport = self.rc.master.port();
        wait_for(Duration::from_secs(5), "replica links down", || {
            self.rc.replicas.iter().all(|r| !r.is_linked_to(mport))
        });
        assert_eq!(ports.len(), self.rc.replicas.len());
    }
}

fn promoted(out: &Outcome) -> Addr {
    match &out.plan.action {
        Action::Failover { promote, .. } | Action::Switchover { promote, .. } => promote.clone(),
        other => panic!("expected a failover, got {other:?}: {out:#?}"),
    }
}

/// `replicaof`/`slaveof` lines of a config file.
fn replicaof_lines(conf: &str) -> Vec<String> {
    conf.lines()
        .map(str::trim)
        .filter(|l| l.starts_with("replicaof ") || l.starts_with("slaveof "))
        .map(str::to_string)
        .collect()
}

/// Calls of one command since the last `CONFIG RESETSTAT` (`INFO commandstats`).
fn calls(node: &RedisNode, command: &str) -> u64 {
    let info = node.cmd(&["INFO", "commandstats"]);
    info_field(&info, &format!("cmdstat_{command}"))
        .and_then(|v| {
            v.split(',')
                .find_map(|f| f.strip_prefix("calls=").map(str::to_string))
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn assert_all_steps_ok(out: &Outcome) {
    assert!(
        out.steps.iter().all(|s| s.ok),
        "every step ok: {:#?}",
        out.steps
    );
}

/// Failover, then check the whole post-failover state (shared by several tests).
async fn fail_over(env: &mut Env) -> (Addr, Addr) {
    env.kill_master();
    let out = env.run(Trigger::MasterDown).await;
    assert_eq!(out.result, Result_::Applied, "{out:#?}");
    assert_all_steps_ok(&out);
    let p = promoted(&out);
    let other = env
        .rc
        .replicas
        .iter()
        .map(RedisNode::addr)
        .find(|a| a != &p)
        .expect("a second replica");
    let (pn, on) = (env.node(&p), env.node(&other));
    assert_eq!(pn.role(), "master");
    wait_for(Duration::from_secs(5), "the other replica linked", || {
        on.is_linked_to(p.port)
    });
    let rec = env.record().await.expect("record");
    assert_eq!(rec.master, p);
    assert_eq!(rec.epoch, 2, "epoch + 1");
    assert!(rec.last_failover_at.is_some());
    assert_eq!(rec.pending, None);
    // CONFIG REWRITE persisted both roles.
    assert_eq!(replicaof_lines(&pn.conf_text()), Vec::<String>::new());
    assert_eq!(
        replicaof_lines(&on.conf_text()),
        vec![format!("replicaof 127.0.0.1 {}", p.port)]
    );
    (p, other)
}

on_every_backend!(kill9_master_promotes_a_replica_and_repoints_the_other);
async fn kill9_master_promotes_a_replica_and_repoints_the_other(backend: Backend) {
    let mut env = Env::on(backend, 2, None).await;
    env.bootstrap().await;
    let t = Instant::now();
    fail_over(&mut env).await;
    eprintln!("failover + checks took {:?}", t.elapsed());
}

on_every_backend!(restarted_old_master_is_demoted_and_stays_demoted_after_a_second_restart);
async fn restarted_old_master_is_demoted_and_stays_demoted_after_a_second_restart(
    backend: Backend,
) {
    let mut env = Env::on(backend, 2, None).await;
    env.bootstrap().await;
    let (p, other) = fail_over(&mut env).await;
    let old = env.rc.master.addr();

    // Back with its original config: a master without replicas (two masters now).
    env.rc.master.restart();
    assert_eq!(env.rc.master.role(), "master");
    let out = env.run(Trigger::RoleMismatch).await;
    assert_eq!(out.result, Result_::Applied, "{out:#?}");
    assert_eq!(
        out.plan.action,
        Action::Demote {
            node: old.clone(),
            to: p.clone()
        }
    );
    assert_all_steps_ok(&out);
    wait_for(Duration::from_secs(5), "old master linked to new", || {
        env.rc.master.is_linked_to(p.port)
    });
    assert_eq!(
        replicaof_lines(&env.rc.master.conf_text()),
        vec![format!("replicaof 127.0.0.1 {}", p.port)]
    );
    let rec = env.record().await.expect("record");
    assert_eq!((rec.master.clone(), rec.epoch), (p.clone(), 2));

    // A second restart: CONFIG REWRITE persisted the demotion.
    env.rc.master.restart();
    wait_for(
        Duration::from_secs(10),
        "old master back as a replica of the new one",
        || env.rc.master.is_linked_to(p.port),
    );
    let out = env.run(Trigger::Periodic).await;
    assert_eq!(out.result, Result_::NoAction, "{out:#?}");
    assert!(out.plan.reason.contains("converged"), "{}", out.plan.reason);
    assert!(env.node(&other).is_linked_to(p.port));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn false_alarm_changes_nothing() {
    let env = Env::new(2, None);
    env.bootstrap().await;
    let snapshot = |env: &Env| -> Vec<(String, Option<String>, String)> {
        env.rc
            .nodes()
            .iter()
            .map(|n| {
                let i = n.info_replication();
                (
                    info_field(&i, "role").unwrap_or_default(),
                    info_field(&i, "master_port"),
                    n.conf_text(),
                )
            })
            .collect()
    };
    let before = snapshot(&env);
    for n in env.rc.nodes() {
        n.cmd(&["CONFIG", "RESETSTAT"]);
    }
    let rec_before = env.record().await;

    let out = env.run(Trigger::MasterDown).await;
    assert_eq!(out.result, Result_::NoAction, "{out:#?}");
    assert!(
        out.plan.reason.contains("false alarm"),
        "{}",
        out.plan.reason
    );
    assert!(out.steps.is_empty());

    assert_eq!(snapshot(&env), before);
    assert_eq!(env.record().await, rec_before);
    for n in env.rc.nodes() {
        for c in [
            "slaveof",
            "replicaof",
            "config|rewrite",
            "config|set",
            "client|pause",
        ] {
            assert_eq!(calls(n, c), 0, "{c} sent to {}", n.addr());
        }
    }
}

/// SIGSTOP/SIGCONT by pid; continues the process on drop, so a failing test never leaves a
/// stopped redis-server behind (the harness only SIGKILLs on drop, which works either way).
struct Stopped(Vec<u32>);

fn signal(pid: u32, sig: &str) {
    let st = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("run kill (Debian package procps)");
    assert!(st.success(), "kill {sig} {pid}");
}

impl Stopped {
    fn stop(nodes: &[&RedisNode]) -> Stopped {
        let pids: Vec<u32> = nodes
            .iter()
            .map(|n| {
                info_field(&n.cmd(&["INFO", "server"]), "process_id")
                    .and_then(|p| p.parse().ok())
                    .expect("process_id")
            })
            .collect();
        for p in &pids {
            signal(*p, "-STOP");
        }
        Stopped(pids)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::process::Command::new("kill")
                .args(["-CONT", &p.to_string()])
                .status();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_replicas_are_refused_against_the_masters_last_seen_offset() {
    let mut env = Env::new(2, None);
    env.bootstrap().await;
    let stopped = Stopped::stop(&env.rc.replicas.iter().collect::<Vec<_>>());
    // 16 MB of writes the frozen replicas cannot read (more than the loopback socket buffers
    // can hold for them, less than the replica output buffer soft limit of 64 MB).
    let value = "x".repeat(1024 * 1024);
    for i in 0..16 {
        env.rc.master.cmd(&["SET", &format!("k{i}"), &value]);
    }
    let master_offset: u64 = info_field(&env.rc.master.info_replication(), "master_repl_offset")
        .and_then(|v| v.parse().ok())
        .expect("master_repl_offset");
    env.rc.master.kill9();
    drop(stopped);
    let mport = env.rc.master.port();
    wait_for(Duration::from_secs(10), "replica links down", || {
        env.rc.replicas.iter().all(|r| {
            r.try_cmd(&["INFO", "replication"]).is_ok_and(|i| {
                info_field(&i, "master_link_status").as_deref() == Some("down")
                    && info_field(&i, "master_port") == Some(mport.to_string())
            })
        })
    });

    let mut policy = env.policy.clone();
    policy.max_lag_bytes = 1024;
    let ctx = Ctx {
        policy: &policy,
        last_seen_master: Some(MasterSeen {
            master: env.rc.master.addr(),
            epoch: 1, // bootstrapped above
            offset: Some(master_offset),
            db_offsets: Default::default(),
            seen_at: 0,
            links: Default::default(),
        }),
        ..env.ctx()
    };
    let out = env.run_ctx(&ctx, Trigger::MasterDown).await;
    assert_eq!(out.result, Result_::Refused, "{out:#?}");
    assert!(
        out.plan
            .reason
            .contains("behind the master's last seen offset"),
        "{}",
        out.plan.reason
    );
    assert!(out.steps.is_empty());
    for r in &env.rc.replicas {
        assert_eq!(r.role(), "slave", "{} was promoted", r.addr());
    }
    let rec = env.record().await.expect("record");
    assert_eq!((rec.master, rec.epoch), (env.rc.master.addr(), 1));
}

on_every_backend!(password_cluster_fails_over_and_demotes_with_masterauth);
async fn password_cluster_fails_over_and_demotes_with_masterauth(backend: Backend) {
    let pw = "s3cret-pw";
    let mut env = Env::on(backend, 2, Some(pw)).await;
    env.bootstrap().await;
    // Clear masterauth on the replicas (their links stay up): the repointed replica can only
    // authenticate to the new master if pika-remedy sends `CONFIG SET masterauth` first.
    for r in &env.rc.replicas {
        r.cmd(&["CONFIG", "SET", "masterauth", ""]);
    }
    let (p, other) = fail_over(&mut env).await;
    assert!(
        env.node(&other).conf_text().contains("masterauth"),
        "masterauth persisted on the repointed replica"
    );

    env.rc.master.restart();
    env.rc.master.cmd(&["CONFIG", "SET", "masterauth", ""]);
    let out = env.run(Trigger::RoleMismatch).await;
    assert_eq!(out.result, Result_::Applied, "{out:#?}");
    assert!(matches!(out.plan.action, Action::Demote { .. }));
    wait_for(Duration::from_secs(5), "old master linked to new", || {
        env.rc.master.is_linked_to(p.port)
    });
    assert!(!format!("{out:?}").contains(pw), "secret in the outcome");
    assert!(
        env.rc.master.conf_text().contains("masterauth"),
        "masterauth persisted on the demoted node"
    );
}

on_every_backend!(the_same_trigger_twice_gives_one_failover);
async fn the_same_trigger_twice_gives_one_failover(backend: Backend) {
    let mut env = Env::on(backend, 2, None).await;
    env.bootstrap().await;
    for r in &env.rc.replicas {
        r.cmd(&["CONFIG", "RESETSTAT"]);
    }
    let (p, other) = fail_over(&mut env).await;
    let second = env.run(Trigger::MasterDown).await;
    assert_eq!(second.result, Result_::NoAction, "{second:#?}");
    assert_eq!(env.record().await.expect("record").epoch, 2);
    assert_eq!(calls(env.node(&p), "slaveof"), 1, "SLAVEOF NO ONE once");
    assert_eq!(calls(env.node(&other), "slaveof"), 1, "repointed once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_identical_triggers_give_one_failover() {
    let mut env = Env::new(2, None);
    env.bootstrap().await;
    for r in &env.rc.replicas {
        r.cmd(&["CONFIG", "RESETSTAT"]);
    }
    env.kill_master();
    let env = Arc::new(env);
    let tasks: Vec<_> = ["test-a", "test-b"]
        .into_iter()
        .map(|name| {
            let env = env.clone();
            tokio::spawn(async move {
                let h = holder(name);
                let ctx = Ctx {
                    holder: &h,
                    ..env.ctx()
                };
                env.run_ctx(&ctx, Trigger::MasterDown).await
            })
        })
        .collect();
    let mut outs = Vec::new();
    for t in tasks {
        outs.push(t.await.expect("task"));
    }
    let applied: Vec<&Outcome> = outs
        .iter()
        .filter(|o| o.result == Result_::Applied)
        .collect();
    assert_eq!(applied.len(), 1, "exactly one applied: {outs:#?}");
    let loser = outs
        .iter()
        .find(|o| o.result != Result_::Applied)
        .expect("a loser");
    assert!(
        matches!(
            loser.result,
            Result_::NoAction | Result_::LockHeld { .. } | Result_::PlanChanged
        ),
        "{loser:#?}"
    );
    let p = promoted(applied[0]);
    assert_eq!(env.record().await.expect("record").epoch, 2);
    let promoted_count = env
        .rc
        .replicas
        .iter()
        .filter(|r| r.role() == "master")
        .count();
    assert_eq!(promoted_count, 1);
    for r in &env.rc.replicas {
        assert_eq!(calls(r, "slaveof"), 1, "one SLAVEOF on {}", r.addr());
        if r.addr() != p {
            wait_for(Duration::from_secs(5), "repointed replica linked", || {
                r.is_linked_to(p.port)
            });
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_clean_records_and_messy_is_refused_with_a_hint() {
    let env = Env::new(1, None);
    env.bootstrap().await;

    let messy = Env::new(1, None);
    // Two masters: the replica was detached by hand.
    messy.rc.replicas[0].cmd(&["REPLICAOF", "NO", "ONE"]);
    let out = messy.run(Trigger::Periodic).await;
    assert_eq!(out.result, Result_::Refused, "{out:#?}");
    assert!(
        out.plan.reason.contains("pika-remedy record --cluster c"),
        "{}",
        out.plan.reason
    );
    assert!(out.plan.reason.contains("2 nodes claim master"));
    assert_eq!(messy.record().await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_on_redis_pauses_promotes_repoints_and_unpauses() {
    let env = Env::new(2, None);
    env.bootstrap().await;
    env.rc.master.cmd(&["SET", "before", "1"]);
    let to = env.rc.replicas[1].addr();
    let out = env
        .run(Trigger::Switchover {
            to: Some(to.clone()),
        })
        .await;
    assert_eq!(out.result, Result_::Applied, "{out:#?}");
    assert_all_steps_ok(&out);
    let kinds: Vec<&str> = out
        .steps
        .iter()
        .map(|s| match s.step {
            pika_remedy::decide::Step::PauseWrites { .. } => "pause",
            pika_remedy::decide::Step::Unpause { .. } => "unpause",
            pika_remedy::decide::Step::Promote { .. } => "promote",
            _ => "-",
        })
        .filter(|k| *k != "-")
        .collect();
    assert_eq!(kinds, vec!["pause", "promote", "unpause"]);

    let new = &env.rc.replicas[1];
    assert_eq!(new.role(), "master");
    wait_for(Duration::from_secs(5), "old master follows the new", || {
        env.rc.master.is_linked_to(to.port)
    });
    wait_for(
        Duration::from_secs(5),
        "other replica follows the new",
        || env.rc.replicas[0].is_linked_to(to.port),
    );
    // Writes resume: on the new master at once, and the old one is a (read-only) replica
    // that answers immediately, not a paused master.
    let t = Instant::now();
    assert_eq!(new.cmd(&["SET", "after", "2"]), "OK");
    let err = env
        .rc
        .master
        .try_cmd(&["SET", "x", "1"])
        .expect_err("old master is read-only");
    assert!(err.contains("READONLY"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(1), "not paused");
    assert!(wait_until(Duration::from_secs(5), || {
        env.rc.master.try_cmd(&["GET", "after"]).as_deref() == Ok("2")
    }));
    assert_eq!(env.rc.master.cmd(&["GET", "before"]), "1");
    let rec = env.record().await.expect("record");
    assert_eq!((rec.master, rec.epoch), (to, 2));
    assert_eq!(rec.last_failover_at, None, "a switchover is not automatic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_was_down_during_the_failover_is_repointed_when_it_returns() {
    let mut env = Env::new(2, None);
    env.bootstrap().await;
    // The second replica dies with the master; the first is the only candidate.
    env.rc.replicas[1].kill9();
    env.kill_master();
    let out = env.run(Trigger::MasterDown).await;
    assert_eq!(out.result, Result_::Applied, "{out:#?}");
    let p = promoted(&out);
    assert_eq!(p, env.rc.replicas[0].addr());

    // It comes back from its config: a replica of the dead old master.
    env.rc.replicas[1].restart();
    let back = &env.rc.replicas[1];
    assert_eq!(back.role(), "slave");
    let out = env.run(Trigger::Periodic).await;
    assert_eq!(out.result, Result_::Applied, "{out:#?}");
    assert!(
        matches!(&out.plan.action, Action::Repoint { nodes, to } if *nodes == vec![back.addr()] && *to == p),
        "{out:#?}"
    );
    wait_for(Duration::from_secs(5), "returned replica linked", || {
        back.is_linked_to(p.port)
    });
    assert_eq!(
        replicaof_lines(&back.conf_text()),
        vec![format!("replicaof 127.0.0.1 {}", p.port)]
    );
    assert_eq!(env.record().await.expect("record").epoch, 2);
    let out = env.run(Trigger::Periodic).await;
    assert_eq!(out.result, Result_::NoAction, "{out:#?}");
}

on_every_backend!(concurrent_triggers_from_two_coordinator_instances_give_one_failover);
async fn concurrent_triggers_from_two_coordinator_instances_give_one_failover(backend: Backend) {
    // Two independent coordinator clients on one store behave like two processes (two `Local`s
    // on one directory: CLI and serve on one host; two etcd/Consul clients: two instances):
    // only the lock and the compare-and-set stand between them.
    let mut env = Env::on(backend, 2, None).await;
    env.bootstrap().await;
    for r in &env.rc.replicas {
        r.cmd(&["CONFIG", "RESETSTAT"]);
    }
    env.kill_master();
    let second = env.second_coord().await;
    let env = Arc::new(env);
    let second = Arc::new(second);
    let a = {
        let env = env.clone();
        tokio::spawn(async move { env.run(Trigger::MasterDown).await })
    };
    let b = {
        let env = env.clone();
        let second = second.clone();
        tokio::spawn(async move {
            let h = holder("test-b");
            let ctx = Ctx {
                coord: &*second,
                holder: &h,
                ..env.ctx()
            };
            env.run_ctx(&ctx, Trigger::MasterDown).await
        })
    };
    let outs = [a.await.expect("task a"), b.await.expect("task b")];
    let applied = outs.iter().filter(|o| o.result == Result_::Applied).count();
    assert_eq!(applied, 1, "exactly one applied: {outs:#?}");
    assert_eq!(env.record().await.expect("record").epoch, 2);
    for r in &env.rc.replicas {
        assert_eq!(calls(r, "slaveof"), 1, "one SLAVEOF on {}", r.addr());
    }
}

/// Fence stale clients (redis-server): right after the demotion of a restarted old master, its
/// normal client connections are closed (`CLIENT KILL TYPE normal`, a step of the plan): an
/// idle client is disconnected, and a writer pinned to the old address stops getting
/// acknowledgements. The writes it got acknowledged by the restarted old master are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demotion_closes_the_old_masters_stale_clients() {
    use pika_remedy::decide::Step;
    use support::stale_client::{IdleClient, StaleClient};
    let mut env = Env::new(2, None);
    env.bootstrap().await;
    let (p, _) = fail_over(&mut env).await;
    env.rc.master.restart();
    assert_eq!(env.rc.master.role(), "master");
    let oport = env.rc.master.port();
    let mut idle = IdleClient::connect(oport, None);
    let stale = StaleClient::start(oport, None, "stale");
    wait_for(
        Duration::from_secs(5),
        "the pinned client writes to the restarted old master",
        || !stale.stats().acked.is_empty(),
    );
    let at_trigger = stale.now();
    let out = env.run(Trigger::RoleMismatch).await;
    let at_done = stale.now();
    assert_eq!(out.result, Result_::Applied, "{out:#?}");
    assert!(matches!(out.plan.action, Action::Demote { .. }), "{out:#?}");
    assert_all_steps_ok(&out);
    let kill = out
        .steps
        .iter()
        .find(|s| matches!(s.step, Step::KillClients { .. }))
        .expect("a client-kill step");
    assert!(
        kill.detail.contains("normal client connections closed"),
        "{kill:?}"
    );
    assert!(
        wait_until(Duration::from_secs(5), || {
            std::thread::sleep(Duration::from_millis(50));
            idle.is_closed()
        }),
        "the idle client was disconnected"
    );
    std::thread::sleep(Duration::from_millis(300));
    let st = stale.finish();
    let during = st.acked.iter().filter(|t| **t >= at_trigger).count();
    let after = st.acked.iter().filter(|t| **t > at_done).count();
    assert!(
        st.closed.iter().any(|t| *t >= at_trigger),
        "the pinned connection was closed under the client: {st:?}"
    );
    assert_eq!(after, 0, "no write acknowledged after the demotion");
    assert!(env.rc.master.is_linked_to(p.port));
    eprintln!(
        "redis stale pinned client: {} writes acknowledged by the restarted old master ({during} of them while the reconcile ran, {:.0} ms), {} refused, connection closed {} time(s), 0 after the demotion",
        st.acked.len(),
        (at_done - at_trigger).as_secs_f64() * 1000.0,
        st.refused,
        st.closed.len()
    );
}

/// A demotion sits in its link wait (the new master delays every full sync by 30 s) when the
/// master it was told to follow is killed: the wait must notice and stop early, so the next
/// trigger fails over at once instead of after `link_timeout` (it took ~25 s before the fix).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demotion_waiting_for_a_link_yields_to_the_failover_when_the_master_dies() {
    let mut env = Env::new(2, None);
    env.bootstrap().await;
    let (p, other) = fail_over(&mut env).await;
    env.policy.cooldown = Duration::ZERO;
    env.policy.link_timeout = Duration::from_secs(20);
    // The new master starts every full sync only after 30 s: the old master's link stays down.
    let pn = env.node(&p);
    pn.cmd(&["CONFIG", "SET", "repl-diskless-sync", "yes"]);
    pn.cmd(&["CONFIG", "SET", "repl-diskless-sync-delay", "30"]);
    let p_pid = info_field(&pn.cmd(&["INFO", "server"]), "process_id").expect("process_id");
    for i in 0..100 {
        pn.cmd(&["SET", &format!("k{i}"), "v"]);
    }
    let on = env.node(&other);
    let p_offset = info_field(&pn.info_replication(), "master_repl_offset").expect("offset");
    wait_for(
        Duration::from_secs(5),
        "the other replica caught up",
        || info_field(&on.info_replication(), "slave_repl_offset").as_deref() == Some(&p_offset),
    );
    env.rc.master.restart();
    let old = env.rc.master.addr();

    let started = Instant::now();
    let killed_at = std::sync::Mutex::new(None::<Instant>);
    let demote = env.run(Trigger::RoleMismatch);
    let killer = async {
        // Kill the new master once the old one has taken the SLAVEOF (its link is down).
        let deadline = Instant::now() + Duration::from_secs(10);
        while env.rc.master.role() != "slave" {
            assert!(Instant::now() < deadline, "the demotion never sent SLAVEOF");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        signal(p_pid.parse().expect("pid"), "-9");
        *killed_at.lock().expect("lock") = Some(Instant::now());
    };
    let (out, ()) = tokio::join!(demote, killer);
    let killed = killed_at.lock().expect("lock").expect("killed");
    let stopped_after = killed.elapsed();
    assert_eq!(
        out.plan.action,
        Action::Demote {
            node: old.clone(),
            to: p.clone()
        }
    );
    assert_ne!(
        out.result,
        Result_::Applied,
        "the link never came up: {out:#?}"
    );
    assert!(
        started.elapsed() < env.policy.link_timeout,
        "the demotion sat out its link wait ({:?}): {out:#?}",
        started.elapsed()
    );

    let trigger = Instant::now();
    let out = env.run(Trigger::MasterDown).await;
    let took = trigger.elapsed();
    assert_eq!(out.result, Result_::Applied, "{out:#?}");
    assert_eq!(
        promoted(&out),
        other,
        "{}\n{:#?}",
        out.plan.reason,
        out.plan
    );
    eprintln!(
        "demotion stopped {stopped_after:?} after the kill (link_timeout 20 s); \
         the next trigger failed over to {other} in {took:?} ({:?} after the kill)",
        killed.elapsed()
    );
}
