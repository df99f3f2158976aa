//! One [`ClusterHandle`] per cluster: its node client, the coordinator, the policy, who we are
//! and whether the cluster has a node password. Built once (by [`Handles::connect`] from the
//! config, or by [`ClusterHandle::redis`] for the demo) and used by the CLI commands, the
//! service and the demo. Every write goes through it: `reconcile`, and the operator's
//! `record`, which takes the cluster's lock like a reconcile does.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::{ClusterConfig, CoordinatorKind, Loaded, Policy, Secret, Timeouts};
use crate::coord::{AnyCoord, CasOutcome, CoordError, Coordinator, Holder, LockOutcome};
use crate::decide::{Plan, Trigger};
use crate::error::Error;
use crate::model::{Addr, Observation, Role, TopologyRecord, Versioned};
use crate::node::redis::RedisNodes;
use crate::node::Nodes;

use super::{look, now_unix, reconcile_with, Ctx, Outcome};
use crate::hooks::HookSet;

/// How one reconcile runs; set per call, not per cluster.
#[derive(Clone, Debug, Default)]
pub struct Mode {
    /// Decide and report, send nothing, take no lock.
    pub dry_run: bool,
    /// Global or per-cluster pause.
    pub paused: bool,
    /// What the service's poller last saw of a live master (see [`Ctx::last_seen_master`]).
    pub last_seen_master: Option<crate::decide::MasterSeen>,
    /// The poller's observation for the first look (see [`super::reconcile_with`]);
    /// `None`: the first look asks the nodes.
    pub first_look: Option<Observation>,
}

/// Everything that acts on one cluster.
pub struct ClusterHandle<N: Nodes = RedisNodes, C: Coordinator = AnyCoord> {
    pub cluster: ClusterConfig,
    pub nodes: Arc<N>,
    pub coord: Arc<C>,
    pub policy: Policy,
    pub holder: Arc<Holder>,
    /// The cluster has a node password (so `CONFIG SET masterauth` is sent before `SLAVEOF`).
    pub has_password: bool,
    /// The cluster's hooks (`[hooks]`, or its `[hooks.cluster.NAME]`); none by default.
    pub hooks: Arc<HookSet>,
}

/// What `record` wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    pub master: Addr,
    pub epoch: u64,
}

/// The one place a cluster's node client is built (password, renamed commands).
pub fn node_client(
    timeouts: &Timeouts,
    cluster: &ClusterConfig,
    password: Option<&Secret>,
) -> RedisNodes {
    RedisNodes::new(timeouts, password.cloned()).with_renames(cluster.renames())
}

/// An empty password is no password (no `CONFIG SET masterauth`).
pub fn has_password(password: Option<&Secret>) -> bool {
    password.is_some_and(|p| !p.expose().is_empty())
}

impl<C: Coordinator> ClusterHandle<RedisNodes, C> {
    /// A handle over real nodes (RESP via the `redis` crate).
    pub fn redis(
        cluster: ClusterConfig,
        timeouts: &Timeouts,
        password: Option<&Secret>,
        coord: Arc<C>,
        policy: Policy,
        holder: Arc<Holder>,
    ) -> Self {
        ClusterHandle {
            nodes: Arc::new(node_client(timeouts, &cluster, password)),
            has_password: has_password(password),
            cluster,
            coord,
            policy,
            holder,
            hooks: Arc::default(),
        }
    }
}

impl<N: Nodes, C: Coordinator> ClusterHandle<N, C> {
    pub fn name(&self) -> &str {
        &self.cluster.name
    }

    /// The same handle running `hooks` around its reconciles.
    pub fn with_hooks(mut self, hooks: HookSet) -> Self {
        self.hooks = Arc::new(hooks);
        self
    }

    /// The borrowed context `reconcile` and `look` run with.
    pub fn ctx(&self, mode: &Mode) -> Ctx<'_, N, C> {
        Ctx {
            cluster: &self.cluster,
            nodes: self.nodes.as_ref(),
            coord: self.coord.as_ref(),
            policy: &self.policy,
            holder: &self.holder,
            has_password: self.has_password,
            dry_run: mode.dry_run,
            paused: mode.paused,
            last_seen_master: mode.last_seen_master.clone(),
        }
    }

    pub async fn reconcile(&self, trigger: Trigger, mode: &Mode) -> Outcome {
        reconcile_with(
            &self.ctx(mode),
            &self.hooks,
            trigger,
            mode.first_look.clone(),
        )
        .await
    }

    /// Observe, read the record and decide: no lock, nothing sent but `INFO`.
    pub async fn look(
        &self,
        trigger: &Trigger,
    ) -> Result<(Observation, Option<Versioned<TopologyRecord>>, Plan), CoordError> {
        look(&self.ctx(&Mode::default()), trigger).await
    }

    /// Record `master` by hand (bootstrap, or after an operator's repair), under the cluster's
    /// lock. Refuses unless `master` is configured and answers as master, or `force` is set.
    pub async fn record(&self, master: &Addr, force: bool) -> Result<Recorded, Error> {
        let name = &self.cluster.name;
        if !self.cluster.nodes.iter().any(|n| &n.addr == master) {
            return Err(Error::Usage(format!(
                "{master} is not a node of cluster {name}"
            )));
        }
        if !force {
            match self.nodes.status(master).await {
                Ok(s) if s.role == Role::Master => {}
                Ok(s) => {
                    return Err(Error::Refused(format!(
                        "{master} reports role {}; refusing (use --force to record it anyway)",
                        s.role.as_str()
                    )))
                }
                Err(e) => {
                    return Err(Error::Refused(format!(
                        "{master} is unreachable ({e}); refusing (use --force to record it anyway)"
                    )))
                }
            }
        }
        let lease = match self
            .coord
            .try_lock(name, &self.holder, self.policy.lock_ttl)
            .await?
        {
            LockOutcome::Acquired(l) => l,
            LockOutcome::HeldBy(h) => {
                return Err(Error::LockHeld(
                    h.map(|h| h.to_string())
                        .unwrap_or_else(|| "another instance".into()),
                ))
            }
        };
        let written = self.record_locked(master, &lease).await;
        if let Err(e) = self.coord.release(lease).await {
            tracing::warn!(cluster = %name, error = %e, "releasing the lock failed; retrying in the background");
        }
        written
    }

    /// The write itself; the caller holds `lease`.
    async fn record_locked(
        &self,
        master: &Addr,
        lease: &crate::coord::Lease,
    ) -> Result<Recorded, Error> {
        let name = &self.cluster.name;
        let current = self.coord.read_record(name).await?;
        let epoch = TopologyRecord::next_epoch(current.as_ref().map(|c| &c.value), master);
        let replicas: Vec<Addr> = self
            .cluster
            .nodes
            .iter()
            .map(|n| n.addr.clone())
            .filter(|a| a != master)
            .collect();
        let rec = TopologyRecord {
            master: master.clone(),
            replicas: replicas.clone(),
            epoch,
            updated_at: now_unix(),
            last_failover_at: current.as_ref().and_then(|c| c.value.last_failover_at),
            pending: None,
            reason: format!("recorded by operator: master {master}"),
        };
        if !self.coord.still_held(lease).await? {
            return Err(Error::LockLost);
        }
        match self
            .coord
            .write_record(name, &rec, current.as_ref().map(|c| c.version))
            .await?
        {
            CasOutcome::Written(_) => {
                let _ = self.coord.publish_roles(name, master, &replicas).await;
                Ok(Recorded {
                    master: master.clone(),
                    epoch,
                })
            }
            CasOutcome::Conflict => Err(Error::Conflict),
        }
    }
}

/// Build the configured coordinator. The error keeps its kind: a store that cannot be reached
/// yet (e.g. the local directory cannot be created) is retryable (CLI exit 3), a bad setting is not.
pub async fn coordinator(loaded: &Loaded) -> Result<AnyCoord, CoordError> {
    let c = &loaded.config;
    match c.coordinator.kind {
        CoordinatorKind::Local => {
            crate::coord::local::Local::new(&c.coordinator.local.dir).map(AnyCoord::Local)
        }
        CoordinatorKind::Consul => crate::coord::consul::Consul::new(
            &c.coordinator.consul,
            loaded.consul_token.clone(),
            &c.timeouts,
        )
        .map(AnyCoord::Consul),
        #[cfg(feature = "etcd")]
        CoordinatorKind::Etcd => crate::coord::etcd::Etcd::connect(
            &c.coordinator.etcd,
            loaded.etcd_password.clone(),
            &c.timeouts,
        )
        .await
        .map(AnyCoord::Etcd),
        #[cfg(not(feature = "etcd"))]
        CoordinatorKind::Etcd => Err(CoordError::Backend(
            "this build has no etcd support (cargo feature `etcd`)".into(),
        )),
    }
}

/// Who we are, written into lock values.
pub fn holder(loaded: &Loaded) -> Holder {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|s| s.trim().to_string())
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into());
    let pid = std::process::id();
    Holder {
        instance: loaded
            .config
            .service
            .instance_id
            .clone()
            .unwrap_or_else(|| format!("{host}-{pid}")),
        host,
        pid,
        since: now_unix(),
    }
}

/// The handles of every configured cluster, sharing one coordinator client and one holder.
pub struct Handles {
    pub coord: Arc<AnyCoord>,
    pub holder: Arc<Holder>,
    clusters: BTreeMap<String, Arc<ClusterHandle>>,
    /// Config order.
    order: Vec<String>,
}

impl Handles {
    /// Connect the configured coordinator and build every cluster's handle.
    pub async fn connect(loaded: &Loaded) -> Result<Handles, CoordError> {
        let coord = Arc::new(coordinator(loaded).await?);
        Ok(Handles::new(loaded, coord, Arc::new(holder(loaded))))
    }

    pub fn new(loaded: &Loaded, coord: Arc<AnyCoord>, holder: Arc<Holder>) -> Handles {
        let c = &loaded.config;
        let clusters = c
            .clusters
            .iter()
            .map(|cl| {
                let h = ClusterHandle::redis(
                    cl.clone(),
                    &c.timeouts,
                    loaded.password(&cl.name),
                    Arc::clone(&coord),
                    c.policy.clone(),
                    Arc::clone(&holder),
                )
                .with_hooks(c.hooks.for_cluster(&cl.name));
                (cl.name.clone(), Arc::new(h))
            })
            .collect();
        Handles {
            coord,
            holder,
            clusters,
            order: c.clusters.iter().map(|cl| cl.name.clone()).collect(),
        }
    }

    pub fn get(&self, cluster: &str) -> Option<&Arc<ClusterHandle>> {
        self.clusters.get(cluster)
    }

    /// Cluster names in config order.
    pub fn names(&self) -> &[String] {
        &self.order
    }

    /// Handles in config order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<ClusterHandle>> {
        self.order.iter().filter_map(|n| self.clusters.get(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn loaded(dir: &std::path::Path) -> Loaded {
        let text = format!(
            r#"
[coordinator]
kind = "local"
[coordinator.local]
dir = "{}"
[webhook]
allow_unauthenticated = true
[[cluster]]
name = "b"
nodes = [{{ addr = "127.0.0.1:7001" }}, {{ addr = "127.0.0.1:7002" }}]
[[cluster]]
name = "a"
nodes = [{{ addr = "127.0.0.1:7003" }}, {{ addr = "127.0.0.1:7004" }}]
"#,
            dir.display()
        );
        let config = Config::parse(&text, "test.toml").expect("parse");
        config.validate("test.toml").expect("valid");
        Loaded {
            config,
            path: "test.toml".into(),
            cluster_passwords: [
                ("a".to_string(), Secret::new("pw")),
                ("b".to_string(), Secret::new("")),
            ]
            .into_iter()
            .collect(),
            consul_token: None,
            etcd_password: None,
            webhook_bearer: None,
            webhook_basic_password: None,
            read_only_token: None,
        }
    }

    #[test]
    fn an_empty_password_is_no_password() {
        assert!(!has_password(None));
        assert!(!has_password(Some(&Secret::new(""))));
        assert!(has_password(Some(&Secret::new("x"))));
    }

    #[test]
    fn one_handle_per_cluster_in_config_order_sharing_coordinator_and_holder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let l = loaded(dir.path());
        let coord = Arc::new(AnyCoord::Local(
            crate::coord::local::Local::new(dir.path()).expect("local"),
        ));
        let hs = Handles::new(&l, Arc::clone(&coord), Arc::new(holder(&l)));
        assert_eq!(hs.names(), ["b", "a"]);
        let order: Vec<&str> = hs.iter().map(|h| h.name()).collect();
        assert_eq!(order, ["b", "a"]);
        let (a, b) = (hs.get("a").expect("a"), hs.get("b").expect("b"));
        assert!(a.has_password);
        assert!(!b.has_password);
        assert!(Arc::ptr_eq(&a.coord, &coord) && Arc::ptr_eq(&b.coord, &coord));
        assert!(Arc::ptr_eq(&a.holder, &hs.holder));
        assert!(hs.get("c").is_none());
        let ctx = a.ctx(&Mode {
            dry_run: true,
            ..Mode::default()
        });
        assert!(ctx.dry_run && ctx.has_password && !ctx.paused);
        assert_eq!(ctx.cluster.name, "a");
    }

    #[tokio::test]
    async fn record_refuses_a_node_outside_the_cluster_before_any_io() {
        let dir = tempfile::tempdir().expect("tempdir");
        let l = loaded(dir.path());
        let hs = Handles::connect(&l).await.expect("connect");
        let h = hs.get("a").expect("a");
        let e = h
            .record(&Addr::new("127.0.0.1", 7001), false)
            .await
            .expect_err("not a node of a");
        assert_eq!(e.exit_code(), 2, "{e}");
        assert!(e.to_string().contains("is not a node of cluster a"), "{e}");
    }
}
