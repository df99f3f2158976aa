//! `rename-command` end to end against REAL `redis-server` processes whose SLAVEOF, REPLICAOF
//! and CONFIG are renamed (so nothing can fall back to the original names): with the cluster's
//! `rename_commands` map a failover, a demotion and their CONFIG REWRITEs succeed; without it
//! they fail with the node's "unknown command". Local coordinator, every wait bounded.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;
use support::fixtures::real_policy;

use pika_remedy::config::{ClusterConfig, NodeConfig, Policy, Secret, Timeouts};
use pika_remedy::coord::local::Local;
use pika_remedy::coord::{AnyCoord, Coordinator, Holder};
use pika_remedy::decide::{Action, Trigger};
use pika_remedy::model::{Addr, TopologyRecord};
use pika_remedy::node::redis::RedisNodes;
use pika_remedy::reconcile::{reconcile, Ctx, Outcome, Result_};
use support::fakes::ctx;
use support::redis::{wait_for, NodeOptions, RedisNode, LINK_TIMEOUT};

const CLUSTER: &str = "r";
const PASSWORD: &str = "rename-test-pw";
const SLAVEOF: &str = "sl4ve0f-x";
const CONFIG: &str = "c0nf1g-x";
/// Renamed on the servers too (Redis's alias of SLAVEOF), but never in our map: we must not use it.
const REPLICAOF: &str = "r3pl1ca0f-x";
/// Upper bound for one reconcile (the policy bounds are far below it).
const RECONCILE_BOUND: Duration = Duration::from_secs(30);

fn server_renames() -> Vec<String> {
    vec![
        format!("rename-command SLAVEOF {SLAVEOF}"),
        format!("rename-command REPLICAOF {REPLICAOF}"),
        format!("rename-command CONFIG {CONFIG}"),
    ]
}

/// The map as the config would give it (mixed case on purpose: keys are case-insensitive).
fn rename_map() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("slaveof".to_string(), SLAVEOF.to_string()),
        ("CONFIG".to_string(), CONFIG.to_string()),
    ])
}

fn timeouts() -> Timeouts {
    Timeouts {
        connect: Duration::from_millis(300),
        command: Duration::from_secs(2),
    }
}

/// A master and two replicas with renamed commands, plus what `reconcile` needs. `cfg` carries
/// the rename map; `with_map` / `without_map` are node clients with and without it.
struct Env {
    master: RedisNode,
    replicas: Vec<RedisNode>,
    cfg: ClusterConfig,
    with_map: RedisNodes,
    without_map: RedisNodes,
    coord: AnyCoord,
    policy: Policy,
    holder: Holder,
    _dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let opts = |replicaof: Option<u16>| NodeOptions {
            password: Some(PASSWORD.into()),
            replicaof,
            extra: server_renames(),
            ..NodeOptions::default()
        };
        let master = RedisNode::start(opts(None));
        let replicas: Vec<RedisNode> = (0..2)
            .map(|_| RedisNode::start(opts(Some(master.port()))))
            .collect();
        wait_for(LINK_TIMEOUT, "replica links up", || {
            replicas.iter().all(|r| r.is_linked_to(master.port()))
        });
        let dir = tempfile::Builder::new()
            .prefix("pika-remedy-rename-")
            .tempdir()
            .expect("temp dir");
        let coord = AnyCoord::Local(Local::new(dir.path()).expect("local coordinator"));
        let cfg = ClusterConfig {
            name: CLUSTER.into(),
            password: None,
            paused: false,
            rename_commands: rename_map(),
            nodes: std::iter::once(&master)
                .chain(replicas.iter())
                .map(|n| NodeConfig {
                    addr: n.addr(),
                    priority: 100,
                    never_promote: false,
                })
                .collect(),
        };
        let secret = || Some(Secret::new(PASSWORD));
        Env {
            with_map: RedisNodes::new(&timeouts(), secret()).with_renames(cfg.renames()),
            without_map: RedisNodes::new(&timeouts(), secret()),
            master,
            replicas,
            cfg,
            coord,
            policy: real_policy(),
            holder: Holder {
                instance: "rename-test".into(),
                host: "test".into(),
                pid: std::process::id(),
                since: 1,
            },
            _dir: dir,
        }
    }

    fn ctx<'a>(&'a self, nodes: &'a RedisNodes) -> Ctx<'a, RedisNodes, AnyCoord> {
        Ctx {
            has_password: true,
            ..ctx(&self.cfg, nodes, &self.coord, &self.policy, &self.holder)
        }
    }

    async fn run(&self, nodes: &RedisNodes, trigger: Trigger) -> Outcome {
        tokio::time::timeout(RECONCILE_BOUND, reconcile(&self.ctx(nodes), trigger))
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

    fn node(&self, addr: &Addr) -> &RedisNode {
        std::iter::once(&self.master)
            .chain(self.replicas.iter())
            .find(|n| &n.addr() == addr)
            .unwrap_or_else(|| panic!("no node {addr}"))
    }

    /// Record the clean topology (epoch 1); needs only INFO, which is not renamed.
    async fn bootstrap(&self) {
        let out = self.run(&self.with_map, Trigger::Periodic).await;
        assert_eq!(out.result, Result_::Applied, "{out:#?}");
        assert!(
            matches!(out.plan.action, Action::Bootstrap { .. }),
            "{out:#?}"
        );
    }

    fn kill_master(&mut self) {
        self.master.kill9();
        let mport = self.master.port();
        wait_for(Duration::from_secs(5), "replica links down", || {
            self.replicas.iter().all(|r| !r.is_linked_to(mport))
        });
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

fn assert_all_steps_ok(out: &Outcome) {
    assert!(
        out.steps.iter().all(|s| s.ok),
        "every step ok: {:#?}",
        out.steps
    );
}

/// The failure names the node's "unknown command" for the original name.
fn assert_unknown_command(out: &Outcome, original: &str) {
    let Result_::Failed { error } = &out.result else {
        panic!("expected Failed, got {out:#?}");
    };
    let failed = out
        .steps
        .iter()
        .find(|s| !s.ok)
        .unwrap_or_else(|| panic!("a failed step: {out:#?}"));
    for text in [error.as_str(), failed.detail.as_str()] {
        assert!(
            text.contains("unknown command") && text.contains(original),
            "error names the unknown command {original}: {out:#?}"
        );
    }
    assert!(
        !format!("{out:?}").contains(PASSWORD),
        "password leaked: {out:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_really_reject_the_original_names() {
    let env = Env::new();
    for args in [
        &["SLAVEOF", "NO", "ONE"][..],
        &["REPLICAOF", "NO", "ONE"][..],
        &["CONFIG", "GET", "maxmemory"][..],
    ] {
        let e = env.replicas[0]
            .try_cmd(args)
            .expect_err("original name must be unknown");
        assert!(e.contains("unknown command"), "{args:?}: {e}");
    }
    // The raw diagnostic path goes through the map as well.
    let v = env
        .with_map
        .command(&env.master.addr(), &["config", "GET", "maxmemory"])
        .await
        .expect("renamed CONFIG GET");
    assert!(format!("{v:?}").contains("maxmemory"), "{v:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_and_demotion_succeed_with_the_rename_map() {
    let mut env = Env::new();
    env.bootstrap().await;
    let old = env.master.addr();
    env.kill_master();

    // The plan shows the names the nodes know.
    let reply =
        pika_remedy::cli::ops::plan(&env.ctx(&env.with_map), &Trigger::MasterDown, false).await;
    let code = reply.code();
    let text = reply.text;
    assert_eq!(code, 0, "{text}");
    for want in [
        format!("{SLAVEOF} NO ONE"),
        format!("{CONFIG} SET masterauth <password>"),
        format!("{CONFIG} REWRITE"),
    ] {
        assert!(text.contains(&want), "plan shows {want:?}:\n{text}");
    }
    assert!(!text.contains("SLAVEOF"), "no original SLAVEOF:\n{text}");
    assert!(!text.contains("CONFIG "), "no original CONFIG:\n{text}");

    // Failover.
    let out = env.run(&env.with_map, Trigger::MasterDown).await;
    assert_eq!(out.result, Result_::Applied, "{out:#?}");
    assert_all_steps_ok(&out);
    let p = match &out.plan.action {
        Action::Failover { promote, .. } => promote.clone(),
        other => panic!("expected a failover, got {other:?}"),
    };
    let other = env
        .replicas
        .iter()
        .map(RedisNode::addr)
        .find(|a| a != &p)
        .expect("a second replica");
    assert_eq!(env.node(&p).role(), "master");
    wait_for(Duration::from_secs(5), "the other replica linked", || {
        env.node(&other).is_linked_to(p.port)
    });
    // The renamed CONFIG REWRITE persisted both roles (and kept the rename lines).
    assert_eq!(
        replicaof_lines(&env.node(&p).conf_text()),
        Vec::<String>::new()
    );
    assert_eq!(
        replicaof_lines(&env.node(&other).conf_text()),
        vec![format!("replicaof 127.0.0.1 {}", p.port)]
    );
    let rec = env.record().await.expect("record");
    assert_eq!((rec.master.clone(), rec.epoch), (p.clone(), 2));

    // The old master comes back as a master (two masters now).
    env.master.restart();
    assert_eq!(env.master.role(), "master");

    // Without the map the demotion fails loudly and changes nothing.
    let out = env.run(&env.without_map, Trigger::RoleMismatch).await;
    assert_eq!(
        out.plan.action,
        Action::Demote {
            node: old.clone(),
            to: p.clone()
        },
        "{out:#?}"
    );
    // The first command of a demotion with a password is CONFIG SET masterauth.
    assert_unknown_command(&out, "CONFIG");
    assert_eq!(env.master.role(), "master");

    // With the map it succeeds and is persisted.
    let out = env.run(&env.with_map, Trigger::RoleMismatch).await;
    assert_eq!(out.result, Result_::Applied, "{out:#?}");
    assert_all_steps_ok(&out);
    wait_for(Duration::from_secs(10), "old master linked to new", || {
        env.master.is_linked_to(p.port)
    });
    assert_eq!(
        replicaof_lines(&env.master.conf_text()),
        vec![format!("replicaof 127.0.0.1 {}", p.port)]
    );
    // A restart comes back from the rewritten file: renamed, and a replica of the new master.
    env.master.restart();
    wait_for(
        Duration::from_secs(10),
        "old master back as a replica of the new one",
        || env.master.is_linked_to(p.port),
    );
    let e = env.master.try_cmd(&["SLAVEOF", "NO", "ONE"]).unwrap_err();
    assert!(
        e.contains("unknown command"),
        "rename survived CONFIG REWRITE: {e}"
    );
    let out = env.run(&env.with_map, Trigger::Periodic).await;
    assert_eq!(out.result, Result_::NoAction, "{out:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_without_the_map_fails_with_unknown_command() {
    let mut env = Env::new();
    env.bootstrap().await;
    env.kill_master();
    let out = env.run(&env.without_map, Trigger::MasterDown).await;
    assert!(
        matches!(out.plan.action, Action::Failover { .. }),
        "{out:#?}"
    );
    assert_unknown_command(&out, "SLAVEOF");
    // Nothing was promoted: every replica is still a replica.
    for r in &env.replicas {
        assert_eq!(r.role(), "slave", "{}", r.addr());
    }
}
