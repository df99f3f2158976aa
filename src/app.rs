//! Wiring for `pika-remedy serve`: builds the node clients, the coordinator, metrics, the
//! audit log and the supervisor from the config, then runs the HTTP server, the poller and
//! the optional periodic check until shutdown.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::config::{ClusterConfig, CoordinatorKind, Loaded};
use crate::coord::{AnyCoord, CoordError, Coordinator, Holder};
use crate::decide::{Action, Trigger};
use crate::events::EventLog;
use crate::events::TriggerSource;
use crate::http;
use crate::metrics::{LatestObservations, Metrics};
use crate::node::redis::RedisNodes;
use crate::poller::{poll_loop, PollSettings, PollShared, PollTarget};
use crate::reconcile::{reconcile, Ctx, Outcome, Result_};
use crate::supervisor::{
    ClusterSnapshot, Control, Reconciler, Request, Supervisor, SupervisorConfig,
};

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

static COPY_FAILED: crate::throttle::Throttle = crate::throttle::Throttle::new();

/// The events file's size cap and rotation from `[service]`.
pub fn events_cap(c: &crate::config::Config) -> crate::events::FileCap {
    crate::events::FileCap {
        max_bytes: c.service.events_file_max_bytes,
        keep: c.service.events_file_keep,
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
        since: crate::reconcile::now_unix(),
    }
}

/// Node clients, one per cluster (one password per cluster).
pub fn node_clients(loaded: &Loaded) -> BTreeMap<String, Arc<RedisNodes>> {
    loaded
        .config
        .clusters
        .iter()
        .map(|c| {
            (
                c.name.clone(),
                Arc::new(
                    RedisNodes::new(&loaded.config.timeouts, loaded.password(&c.name).cloned())
                        .with_renames(c.renames()),
                ),
            )
        })
        .collect()
}

/// The service's `Reconciler`: the real `reconcile`, bounded, with metrics.
pub struct Service {
    loaded: Loaded,
    coord: Arc<AnyCoord>,
    nodes: BTreeMap<String, Arc<RedisNodes>>,
    holder: Holder,
    metrics: Arc<Metrics>,
    latest: LatestObservations,
    master_offsets: crate::poller::MasterOffsets,
    /// Alertmanager notifications (`[notify]`), if configured.
    notifier: Option<Arc<crate::notify::Notifier>>,
}

impl Service {
    fn cluster(&self, name: &str) -> Option<&ClusterConfig> {
        self.loaded.cluster(name)
    }

    /// An upper bound for one reconcile, so a webhook never waits forever: two looks, the
    /// confirmation window, and the steps of the biggest plan.
    fn bound(&self, nodes: usize) -> Duration {
        let c = &self.loaded.config;
        let per_cmd = c.timeouts.connect + c.timeouts.command;
        c.policy.worst_case_action(&c.timeouts) * (nodes as u32 + 2) + per_cmd * 4
    }
}

impl Reconciler for Service {
    async fn reconcile(&self, cluster: &str, trigger: Trigger, ctl: Control) -> Outcome {
        let start = Instant::now();
        let (Some(cfg), Some(nodes)) = (self.cluster(cluster), self.nodes.get(cluster)) else {
            return unknown_cluster(cluster, trigger);
        };
        let ctx = Ctx {
            cluster: cfg,
            nodes: nodes.as_ref(),
            coord: self.coord.as_ref(),
            policy: &self.loaded.config.policy,
            holder: &self.holder,
            has_password: self
                .loaded
                .password(cluster)
                .is_some_and(|p| !p.expose().is_empty()),
            dry_run: ctl.dry_run,
            paused: ctl.paused,
            last_seen_master: self
                .master_offsets
                .lock()
                .ok()
                .and_then(|m| m.get(cluster).cloned()),
        };
        let bound = self.bound(cfg.nodes.len());
        let out = match tokio::time::timeout(bound, reconcile(&ctx, trigger.clone())).await {
            Ok(out) => out,
            Err(_) => {
                let mut out = unknown_cluster(cluster, trigger);
                out.plan = crate::decide::Plan::refuse(
                    format!(
                        "reconcile did not finish within {}",
                        humantime::format_duration(bound)
                    ),
                    true,
                );
                out.result = Result_::Failed {
                    error: "timed out".into(),
                };
                out.retryable = true;
                out
            }
        };
        let m = &self.metrics;
        let result = out.result.metric_label();
        m.reconcile(
            cluster,
            out.trigger.label(),
            out.plan.action.label(),
            result,
        );
        if out.plan.action.mutates_nodes()
            && matches!(out.result, Result_::Applied | Result_::Failed { .. })
        {
            let outcome = if out.result == Result_::Applied {
                crate::metrics::REMEDIATION_APPLIED
            } else {
                crate::metrics::REMEDIATION_FAILED
            };
            m.remediation(cluster, out.plan.action.label(), outcome, start.elapsed());
        }
        m.coordinator_up(!matches!(
            out.result,
            Result_::CoordinatorUnreachable { .. }
        ));
        if let Result_::LockHeld { holder } = &out.result {
            m.lock_refused(cluster, *holder == self.holder.to_string());
        }
        if let Some(n) = &self.notifier {
            n.outcome(&out);
        }
        out
    }

    fn clusters(&self) -> Vec<String> {
        self.loaded
            .config
            .clusters
            .iter()
            .map(|c| c.name.clone())
            .collect()
    }

    async fn snapshot(&self, cluster: &str) -> ClusterSnapshot {
        let observation = self
            .latest
            .read()
            .ok()
            .and_then(|m| m.get(cluster).cloned());
        match self.coord.read_record(cluster).await {
            Ok(r) => ClusterSnapshot {
                observation,
                record: r.map(|v| v.value),
                error: None,
            },
            Err(e) => ClusterSnapshot {
                observation,
                record: None,
                error: Some(e.to_string()),
            },
        }
    }

    async fn ready(&self) -> Result<(), String> {
        self.coord.ping().await.map_err(|e| e.to_string())
    }
}

fn unknown_cluster(cluster: &str, trigger: Trigger) -> Outcome {
    Outcome {
        cluster: cluster.to_string(),
        trigger,
        plan: crate::decide::Plan::refuse(format!("unknown cluster {cluster}"), false),
        result: Result_::Refused,
        steps: Vec::new(),
        observation: Vec::new(),
        millis: 0,
        retryable: false,
    }
}

/// Run the service until `shutdown` resolves.
pub async fn run(
    loaded: Loaded,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let cfg = loaded.config.clone();
    let coord = Arc::new(coordinator(&loaded).await.map_err(|e| e.to_string())?);
    let metrics = Arc::new(Metrics::new());
    let latest: LatestObservations = Default::default();
    let master_offsets: crate::poller::MasterOffsets = Default::default();
    let nodes = node_clients(&loaded);
    let me = holder(&loaded);
    if cfg.webhook.allow_unauthenticated {
        warn!(
            "webhook.allow_unauthenticated = true: the webhook and the operator API accept anyone"
        );
    }
    info!(
        listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        coordinator = coord.kind(),
        instance = %me.instance,
        clusters = cfg.clusters.len(),
        dry_run = cfg.service.dry_run,
        "pika-remedy serving"
    );

    let sink_coord = Arc::clone(&coord);
    let events = EventLog::open_capped(
        cfg.service.events_capacity,
        cfg.service.events_file.as_deref(),
        events_cap(&cfg),
    )
    .map_err(|e| e.to_string())?;
    // Only a coordinator that keeps an event list gets the copy (the local one keeps none).
    let events = if coord.keeps_events() {
        events.with_sink(Arc::new(move |cluster: String, json: String| {
            let c = Arc::clone(&sink_coord);
            Box::pin(async move {
                if let Err(e) = c.append_event(&cluster, &json).await {
                    if let Some(suppressed) = COPY_FAILED.check() {
                        warn!(cluster = %cluster, error = %e, suppressed, "event not copied to the coordinator");
                    }
                }
            })
        }))
    } else {
        events
    };
    let service = Arc::new(Service {
        loaded: loaded.clone(),
        coord: Arc::clone(&coord),
        nodes: nodes.clone(),
        holder: me,
        metrics: Arc::clone(&metrics),
        latest: latest.clone(),
        master_offsets: master_offsets.clone(),
        notifier: crate::notify::Notifier::start(&loaded, Arc::clone(&coord), Arc::clone(&metrics))
            .map_err(|e| e.to_string())?,
    });
    let sup = Supervisor::new(
        service,
        Arc::new(events),
        SupervisorConfig::from_config(&cfg),
    );
    let m2 = Arc::clone(&metrics);
    let lock_coord = Arc::clone(&coord);
    let cluster_names: Vec<String> = cfg.clusters.iter().map(|c| c.name.clone()).collect();
    let lock_ttl = cfg.policy.lock_ttl;
    let app = http::App::new(
        &loaded,
        Arc::clone(&sup),
        Arc::new(move |accept: Option<&str>| {
            // What the coordinator holds for us, as of this scrape (in memory, no request).
            m2.locks(&cluster_names, &lock_coord.held_locks(), lock_ttl);
            m2.encode_for_accept(accept)
        }),
    )
    .with_webhook_counter({
        let m = Arc::clone(&metrics);
        Arc::new(move |outcome: &str| m.webhook(outcome))
    })
    .with_route(http::route::checker(
        Arc::clone(&coord),
        nodes.clone(),
        cfg.clusters.clone(),
        cfg.timeouts.connect + cfg.timeouts.command,
    ));

    // Poller: feeds /metrics and the API's last observation.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let targets = cfg
        .clusters
        .iter()
        .filter_map(|c| {
            nodes.get(&c.name).map(|n| PollTarget {
                cluster: c.clone(),
                nodes: Arc::clone(n),
            })
        })
        .collect();
    let sup_p = Arc::clone(&sup);
    let shared = Arc::new(PollShared {
        coord: Arc::clone(&coord),
        metrics: Arc::clone(&metrics),
        latest,
        master_offsets,
        paused: move |c: &str| {
            sup_p.globally_paused() || sup_p.cluster_state(c).is_some_and(|s| s.paused)
        },
        settings: PollSettings::new(cfg.service.poll_interval, &cfg.timeouts),
    });
    let poller = tokio::spawn(poll_loop(targets, shared, stop_rx.clone()));

    // Optional periodic check: the same reconcile without an alert (level-triggered repair).
    let checker = (!cfg.service.check_interval.is_zero()).then(|| {
        let sup = Arc::clone(&sup);
        let every = cfg.service.check_interval;
        let names: Vec<String> = cfg.clusters.iter().map(|c| c.name.clone()).collect();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = stop.changed() => return,
                }
                for c in &names {
                    let sup = Arc::clone(&sup);
                    let c = c.clone();
                    tokio::spawn(async move {
                        if let Ok(out) = sup.submit(&c, Request::new(Trigger::Periodic, TriggerSource::Periodic)).await {
                            if !matches!(out.plan.action, Action::NoAction) {
                                info!(cluster = %c, action = out.plan.action.label(), reason = %out.plan.reason, "periodic check");
                            }
                        }
                    });
                }
            }
        })
    });

    // A long run of repeated not-acted events gets its count written every REPEAT_FLUSH.
    let flusher = {
        let events = Arc::clone(sup.events());
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(crate::events::REPEAT_FLUSH);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    _ = tick.tick() => events.flush(),
                    _ = stop.changed() => return,
                }
            }
        })
    };
    let served = http::serve(listener, app, shutdown).await;
    let _ = stop_tx.send(true);
    let _ = poller.await;
    if let Some(c) = checker {
        let _ = c.await;
    }
    let _ = flusher.await;
    sup.events().flush();
    info!("pika-remedy stopped");
    served.map_err(|e| format!("http server: {e}"))
}
