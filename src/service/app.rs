//! Wiring for `pika-remedy serve`: the cluster handles (node clients + coordinator, built once),
//! metrics, the audit log and the supervisor, then the HTTP server, the poller and the optional
//! periodic check until shutdown.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::config::Loaded;
use crate::controls::{self, Change, Controls, ControlsError};
use crate::coord::{AnyCoord, Coordinator};
use crate::decide::Trigger;
use crate::error::Error;
use crate::http;
use crate::metrics::Metrics;
use crate::reconcile::handle::{Handles, Mode};
use crate::reconcile::{now_unix, Outcome, Result_};

use super::checker;
use super::events::TriggerSource;
use super::events::{EventLog, FileCap};
use super::ownership::{membership_loop, MemberSink, MemberTiming, OnRelease, Ownership};
use super::poller::{
    poll_loop_owned, ClusterCache, PollSettings, PollShared, PollTarget, SelfTrigger,
};
use super::schedule::{self, ScheduleShared};
use super::supervisor::{
    ClusterSnapshot, Control, Reconciler, Request, Supervisor, SupervisorConfig,
};

static COPY_FAILED: crate::throttle::Throttle = crate::throttle::Throttle::new();
static CONTROLS_FAILED: crate::throttle::Throttle = crate::throttle::Throttle::new();

/// The service's `Reconciler`: the real `reconcile`, bounded, with metrics.
pub struct Service {
    loaded: Loaded,
    handles: Arc<Handles>,
    metrics: Arc<Metrics>,
    cache: ClusterCache,
    /// Alertmanager notifications (`[notify]`), if configured.
    notifier: Option<Arc<crate::notify::Notifier>>,
    /// The shared controls as last read (refreshed every poll interval and after each change).
    controls: Arc<Mutex<Option<Controls>>>,
}

impl Service {
    fn cached_controls(&self) -> Option<Controls> {
        self.controls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_controls(&self, doc: Option<Controls>) {
        self.metrics
            .controls(self.handles.names(), doc.as_ref(), now_unix());
        if let Some(d) = doc {
            *self.controls.lock().unwrap_or_else(|p| p.into_inner()) = Some(d);
        }
    }

    /// Read the controls from the coordinator into the cache and the metrics.
    async fn refresh_controls(&self) -> Result<Controls, String> {
        match controls::read(self.handles.coord.as_ref()).await {
            Ok(doc) => {
                self.set_controls(Some(doc.clone()));
                Ok(doc)
            }
            Err(e) => {
                self.set_controls(None);
                Err(e.to_string())
            }
        }
    }
}

/// Re-read the shared controls every `every` until `stop` (metrics, the poller's pause view).
async fn controls_loop(
    service: Arc<Service>,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let every = every.max(Duration::from_millis(200));
    loop {
        if let Err(e) = service.refresh_controls().await {
            if let Some(suppressed) = CONTROLS_FAILED.check() {
                warn!(error = %e, suppressed, "cannot read the shared controls");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
    }
}

impl Service {
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
        let Some(h) = self.handles.get(cluster) else {
            return unknown_cluster(cluster, trigger);
        };
        let within = self.loaded.config.service.reuse_observation_within;
        let first_look = ctl
            .reuse_after
            .and_then(|after| self.cache.reusable(cluster, after, within));
        self.metrics.observation(first_look.is_some());
        let mode = Mode {
            dry_run: ctl.dry_run,
            paused: ctl.paused,
            last_seen_master: self.cache.master_seen(cluster),
            first_look,
        };
        let bound = self.bound(h.cluster.nodes.len()) + h.hooks.worst_case();
        let out = match tokio::time::timeout(bound, h.reconcile(trigger.clone(), &mode)).await {
            Ok(out) => out,
            Err(_) => timed_out(cluster, trigger, bound),
        };
        self.count(&out, start.elapsed());
        if let Some(n) = &self.notifier {
            n.outcome(&out);
        }
        out
    }

    fn clusters(&self) -> Vec<String> {
        self.handles.names().to_vec()
    }

    async fn snapshot(&self, cluster: &str) -> ClusterSnapshot {
        let observation = self.cache.observation(cluster);
        match self.handles.coord.read_record(cluster).await {
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
        self.handles.coord.ping().await.map_err(|e| e.to_string())
    }

    async fn controls(&self) -> Result<Controls, String> {
        self.refresh_controls().await
    }

    async fn change_controls(
        &self,
        change: Change,
        who: String,
    ) -> Option<Result<(Controls, String), ControlsError>> {
        let res = controls::apply(self.handles.coord.as_ref(), &change, &who, now_unix()).await;
        if let Ok((doc, _)) = &res {
            self.metrics.control_changed(change.label());
            self.set_controls(Some(doc.clone()));
        }
        Some(res)
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
        hooks: Vec::new(),
    }
}

/// The outcome of a reconcile that did not finish within `bound` (retryable).
fn timed_out(cluster: &str, trigger: Trigger, bound: Duration) -> Outcome {
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

impl Service {
    /// The metrics of one reconcile.
    fn count(&self, out: &Outcome, took: Duration) {
        let m = &self.metrics;
        let cluster = &out.cluster;
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
            m.remediation(cluster, out.plan.action.label(), outcome, took);
        }
        for h in &out.hooks {
            m.hook_run(cluster, &h.hook, h.result.as_str());
        }
        for r in &out.steps {
            if let crate::decide::Step::Diverged {
                node,
                estimate,
                snapshot,
                ..
            } = &r.step
            {
                let result = match (*snapshot, r.ok) {
                    (false, _) => "skipped",
                    (true, true) => "ok",
                    (true, false) => "failed",
                };
                m.snapshot(cluster, &node.to_string(), result, estimate.bytes_ahead);
            }
        }
        m.coordinator_up(!matches!(
            out.result,
            Result_::CoordinatorUnreachable { .. }
        ));
        if let Result_::LockHeld { holder } = &out.result {
            m.lock_refused(cluster, *holder == self.handles.holder.to_string());
        }
    }
}

/// Run the service until `shutdown` resolves. SIGHUP (or `POST /v1/reload`) re-reads the
/// config file: a valid one replaces the running generation (in-flight reconciles drain first,
/// the listening socket stays open, clusters added, removed or changed take effect); a bad one
/// is refused with its error logged (and answered) and the old config keeps running.
pub async fn run(
    loaded: Loaded,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let std_listener = listener
        .into_std()
        .map_err(|e| Error::io("cannot keep the listening socket", e))?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let (reload_tx, reload_rx) = tokio::sync::mpsc::channel::<Loaded>(4);
    let reload_rx = Arc::new(tokio::sync::Mutex::new(reload_rx));
    let path = loaded.path.clone();
    let reload: http::ReloadFn = {
        let tx = reload_tx.clone();
        let path = path.clone();
        Arc::new(move || try_reload(&path, &tx))
    };
    let hup = tokio::spawn(sighup_loop(
        path.clone(),
        reload_tx.clone(),
        stop_rx.clone(),
    ));
    let mut current = loaded;
    let mut previous: Option<Loaded> = None;
    let result = loop {
        let listener = std_listener
            .try_clone()
            .and_then(TcpListener::from_std)
            .map_err(|e| Error::io("cannot reuse the listening socket", e))?;
        let next: Arc<Mutex<Option<Loaded>>> = Arc::new(Mutex::new(None));
        let stop = {
            let mut stop_rx = stop_rx.clone();
            let rx = Arc::clone(&reload_rx);
            let next = Arc::clone(&next);
            async move {
                let mut rx = rx.lock().await;
                tokio::select! {
                    _ = stop_rx.wait_for(|s| *s) => {}
                    new = rx.recv() => {
                        *next.lock().unwrap_or_else(|p| p.into_inner()) = new;
                    }
                }
            }
        };
        let res = generation(current.clone(), listener, stop, Arc::clone(&reload)).await;
        let next = next.lock().unwrap_or_else(|p| p.into_inner()).take();
        match (res, next) {
            (Ok(()), Some(new)) => {
                info!(clusters = new.config.clusters.len(), "config reloaded");
                previous = Some(std::mem::replace(&mut current, new));
            }
            (Ok(()), None) => break Ok(()),
            // A reloaded config that cannot start (e.g. its coordinator is unusable): back to
            // the one that ran.
            (Err(e), _) if previous.is_some() && !*stop_rx.borrow() => {
                warn!(error = %e, "the reloaded config could not start; back to the previous one");
                if let Some(p) = previous.take() {
                    current = p;
                }
            }
            (Err(e), _) => break Err(e),
        }
    };
    hup.abort();
    result
}

/// Validate the file and hand a good config to the running service; the error text otherwise.
fn try_reload(
    path: &std::path::Path,
    tx: &tokio::sync::mpsc::Sender<Loaded>,
) -> Result<String, String> {
    match crate::config::load(path).and_then(|l| {
        l.config.check_serve(&path.display().to_string())?;
        Ok(l)
    }) {
        Err(e) => {
            warn!(path = %path.display(), error = %e, "config reload refused; keeping the old config");
            Err(e.to_string())
        }
        Ok(new) => {
            let names: Vec<String> = new.config.clusters.iter().map(|c| c.name.clone()).collect();
            tx.try_send(new)
                .map_err(|e| format!("a reload is already pending ({e})"))?;
            info!(path = %path.display(), clusters = %names.join(","), "config reload accepted");
            Ok(format!(
                "reloading {} cluster(s): {}",
                names.len(),
                names.join(", ")
            ))
        }
    }
}

async fn sighup_loop(
    path: std::path::PathBuf,
    tx: tokio::sync::mpsc::Sender<Loaded>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        warn!("cannot listen for SIGHUP; reload with POST /v1/reload");
        return;
    };
    loop {
        tokio::select! {
            _ = hup.recv() => {
                info!("SIGHUP: reloading the config");
                let _ = try_reload(&path, &tx);
            }
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// One generation of the service (one config) until `shutdown` resolves.
async fn generation(
    loaded: Loaded,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    reload: http::ReloadFn,
) -> Result<(), Error> {
    let handles = Arc::new(Handles::connect(&loaded).await?);
    let cfg = &loaded.config;
    if cfg.webhook.allow_unauthenticated {
        warn!(
            "webhook.allow_unauthenticated = true: the webhook and the operator API accept anyone"
        );
    }
    info!(
        listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        coordinator = handles.coord.kind(),
        instance = %handles.holder.instance,
        clusters = cfg.clusters.len(),
        dry_run = cfg.service.dry_run,
        "pika-remedy serving"
    );
    let events = audit_log(&loaded, &handles.coord)?;
    let metrics = Arc::new(Metrics::new());
    let notifier =
        crate::notify::Notifier::start(&loaded, Arc::clone(&handles.coord), Arc::clone(&metrics))?;
    let service = Arc::new(Service {
        loaded: loaded.clone(),
        handles: Arc::clone(&handles),
        metrics,
        cache: ClusterCache::default(),
        notifier,
        controls: Arc::new(Mutex::new(None)),
    });
    let sup = Supervisor::new(
        Arc::clone(&service),
        Arc::new(events),
        SupervisorConfig::from_config(cfg),
    );
    // Scale-out: which clusters this instance polls (all when off).
    let own = if cfg.service.scale_out {
        Ownership::shared(&member_id(&handles.holder.instance))
    } else {
        Ownership::all_as(&handles.holder.instance)
    };
    let app = http_app(&loaded, &service, &sup)
        .with_reload(reload)
        .with_ownership(own.clone());

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (first_tx, first_rx) = tokio::sync::oneshot::channel();
    let members = own.enabled().then(|| {
        tokio::spawn(membership_loop(
            Arc::clone(&handles.coord),
            own.clone(),
            MemberTiming::new(cfg.member_ttl(), cfg.service.poll_interval),
            MemberSink {
                clusters: handles.names().to_vec(),
                metrics: Arc::clone(&service.metrics),
                on_release: released(
                    &service,
                    &own,
                    PollSettings::new(cfg.service.poll_interval, &cfg.timeouts).timeout,
                ),
            },
            first_tx,
            stop_rx.clone(),
        ))
    });
    if own.enabled() {
        // Poll only once this instance has registered and read the members (bounded by one
        // member TTL): instances starting together must not each poll everything first.
        let _ = tokio::time::timeout(cfg.member_ttl(), first_rx).await;
    } else {
        let all = vec![true; handles.names().len()];
        service.metrics.ownership(handles.names(), &all, 1);
    }
    let poller = {
        let own = own.clone();
        tokio::spawn(poll_loop_owned(
            poll_targets(&handles),
            poll_shared(&loaded, &service, &sup),
            move |c: &str| own.owns(c),
            stop_rx.clone(),
        ))
    };
    // Optional periodic check: the same reconcile without an alert (level-triggered repair).
    let checker = (!cfg.service.check_interval.is_zero()).then(|| {
        let own = own.clone();
        tokio::spawn(checker::periodic(
            Arc::clone(&sup),
            cfg.service.check_interval,
            handles.names().to_vec(),
            move |c: &str| own.owns(c),
            stop_rx.clone(),
        ))
    });
    let controls_task = tokio::spawn(controls_loop(
        Arc::clone(&service),
        cfg.service.poll_interval,
        stop_rx.clone(),
    ));
    let scheduler = tokio::spawn(schedule::run(
        Arc::clone(&sup),
        schedule_shared(&service, &sup),
        cfg.service.poll_interval,
        stop_rx.clone(),
    ));
    let flusher = tokio::spawn(checker::flush_repeats(
        Arc::clone(sup.events()),
        stop_rx.clone(),
    ));
    let served = http::serve(listener, app, shutdown).await;
    let _ = stop_tx.send(true);
    let _ = poller.await;
    if let Some(m) = members {
        let _ = m.await;
    }
    if let Some(c) = checker {
        let _ = c.await;
    }
    let _ = flusher.await;
    let _ = controls_task.await;
    let _ = scheduler.await;
    sup.events().flush();
    info!("pika-remedy stopped");
    served.map_err(|e| Error::io("http server", e))
}

/// The audit trail; only a coordinator that keeps an event list gets a copy (the local one keeps none).
fn audit_log(loaded: &Loaded, coord: &Arc<AnyCoord>) -> Result<EventLog, Error> {
    let sv = &loaded.config.service;
    let events = EventLog::open_capped(
        sv.events_capacity,
        sv.events_file.as_deref(),
        FileCap::of(sv),
    )?;
    if !coord.keeps_events() {
        return Ok(events);
    }
    let sink_coord = Arc::clone(coord);
    Ok(events.with_sink(Arc::new(move |cluster: String, json: String| {
        let c = Arc::clone(&sink_coord);
        Box::pin(async move {
            if let Err(e) = c.append_event(&cluster, &json).await {
                if let Some(suppressed) = COPY_FAILED.check() {
                    warn!(cluster = %cluster, error = %e, suppressed, "event not copied to the coordinator");
                }
            }
        })
    })))
}

/// The HTTP app: webhook, operator API, health and `/metrics`.
fn http_app(
    loaded: &Loaded,
    service: &Arc<Service>,
    sup: &Arc<Supervisor<Service>>,
) -> Arc<http::App<Service>> {
    let m2 = Arc::clone(&service.metrics);
    let lock_coord = Arc::clone(&service.handles.coord);
    let cluster_names = service.handles.names().to_vec();
    let lock_ttl = loaded.config.policy.lock_ttl;
    http::App::new(
        loaded,
        Arc::clone(sup),
        Arc::new(move |accept: Option<&str>| {
            // What the coordinator holds for us, as of this scrape (in memory, no request).
            m2.locks(&cluster_names, &lock_coord.held_locks(), lock_ttl);
            m2.encode_for_accept(accept)
        }),
    )
    .with_webhook_counter({
        let m = Arc::clone(&service.metrics);
        Arc::new(move |outcome: &str| m.webhook(outcome))
    })
    .with_route(http::route::checker(
        Arc::clone(&service.handles.coord),
        service
            .handles
            .iter()
            .map(|h| (h.cluster.name.clone(), Arc::clone(&h.nodes)))
            .collect(),
        loaded.config.clusters.clone(),
        loaded.config.timeouts.connect + loaded.config.timeouts.command,
    ))
}

/// The scale-out member id of this instance: the lock holder's instance id, with anything a
/// key name cannot hold replaced by `-` (a configured id is validated instead).
fn member_id(instance: &str) -> String {
    let id: String = instance
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .take(128)
        .collect();
    let id = id.trim_start_matches('.');
    if id.is_empty() {
        format!("pid-{}", std::process::id())
    } else {
        id.to_string()
    }
}

/// When clusters move to another instance: drop their gauges and the poll cache here (the
/// new owner exports and remembers them now).
/// A poll that was in flight at the change may still write them: they are dropped once more
/// after `in_flight` (the poll bound), unless the cluster came back meanwhile.
fn released(service: &Arc<Service>, own: &Ownership, in_flight: Duration) -> OnRelease {
    let svc = Arc::clone(service);
    let own = own.clone();
    Arc::new(move |clusters: &[String]| {
        let forget = |svc: &Service, c: &str| {
            svc.metrics.forget_cluster(c);
            svc.cache.forget(c);
        };
        for c in clusters {
            forget(&svc, c);
        }
        let (svc, own, clusters) = (Arc::clone(&svc), own.clone(), clusters.to_vec());
        tokio::spawn(async move {
            tokio::time::sleep(in_flight).await;
            for c in clusters.iter().filter(|c| !own.owns(c)) {
                forget(&svc, c);
            }
        });
    })
}

/// The poller's clusters: each handle's config and node client.
fn poll_targets(handles: &Handles) -> Vec<PollTarget<crate::node::redis::RedisNodes>> {
    handles
        .iter()
        .map(|h| PollTarget {
            cluster: h.cluster.clone(),
            nodes: Arc::clone(&h.nodes),
        })
        .collect()
}

/// What every poll shares: the coordinator, metrics, the caches, and the pause switches.
fn poll_shared(
    loaded: &Loaded,
    service: &Arc<Service>,
    sup: &Arc<Supervisor<Service>>,
) -> Arc<PollShared<AnyCoord, impl Fn(&str) -> bool + Send + Sync + 'static>> {
    let sup_p = Arc::clone(sup);
    let svc_p = Arc::clone(service);
    let c = &loaded.config;
    Arc::new(PollShared {
        coord: Arc::clone(&service.handles.coord),
        metrics: Arc::clone(&service.metrics),
        cache: service.cache.clone(),
        paused: move |c: &str| {
            sup_p.globally_paused()
                || sup_p.cluster_state(c).is_some_and(|s| s.paused)
                || svc_p
                    .cached_controls()
                    .is_some_and(|d| d.pause_for(c, now_unix()).is_some())
        },
        settings: PollSettings::new(c.service.poll_interval, &c.timeouts),
        self_trigger: c
            .service
            .self_trigger
            .then(|| self_trigger(sup, c.service.poll_interval)),
    })
}

/// What the scheduled-switchover loop reads: the cached controls and the same pause view as the poller.
fn schedule_shared(
    service: &Arc<Service>,
    sup: &Arc<Supervisor<Service>>,
) -> ScheduleShared<
    AnyCoord,
    impl Fn() -> Option<Controls> + Send + Sync + 'static,
    impl Fn(&str) -> bool + Send + Sync + 'static,
> {
    let svc_c = Arc::clone(service);
    let svc_p = Arc::clone(service);
    let sup_p = Arc::clone(sup);
    ScheduleShared {
        coord: Arc::clone(&service.handles.coord),
        clusters: service.handles.names().to_vec(),
        controls: move || svc_c.cached_controls(),
        paused: move |c: &str| {
            sup_p.globally_paused()
                || sup_p.cluster_state(c).is_some_and(|s| s.paused)
                || svc_p
                    .cached_controls()
                    .is_some_and(|d| d.pause_for(c, now_unix()).is_some())
        },
        instance: service.handles.holder.instance.clone(),
    }
}

/// The poller's self-triggered reconciles go through the supervisor like webhooks do.
fn self_trigger(sup: &Arc<Supervisor<Service>>, interval: Duration) -> SelfTrigger {
    let sup = Arc::clone(sup);
    // While the same trouble persists after a reconcile that did not act (e.g. a refusal),
    // ask again at most this often.
    let quiet = (interval * 10).max(Duration::from_secs(1));
    SelfTrigger::new(quiet, move |cluster: String, trigger: Trigger| {
        let sup = Arc::clone(&sup);
        Box::pin(async move {
            sup.submit(&cluster, Request::new(trigger, TriggerSource::SelfTrigger))
                .await
                .ok()
        })
    })
}
