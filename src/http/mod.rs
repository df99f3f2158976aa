//! The HTTP side: Alertmanager webhook, operator API, health and metrics, on one axum router.
//!
//! Status codes follow Alertmanager's retry rules (it retries 5xx and transport errors, never
//! 4xx): 4xx means "this request can never succeed", 503 means "a retry could help", 200 means
//! "handled" (acted on, or recorded in the audit trail with the reason we did not act).
//!
//! No secret is ever logged or echoed: we never log headers, and auth failures say only
//! "missing or wrong credentials".
//!
//! Here: [`App`], the router, the accept loop and shutdown ([`serve`]). [`auth`]: credentials;
//! `body`: content type and body limits; [`webhook`]: `POST /v1/alerts`; `api`: the operator
//! API; `health`: `/healthz`, `/readyz`, `/metrics`; `conn`: one connection (timeouts, linger);
//! [`route`]: `/v1/route/{cluster}/{node}/{role}`, the proxies' per-node health checks.

mod api;
pub mod auth;
mod body;
mod conn;
mod health;
pub mod page;
pub mod route;
pub mod webhook;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde_json::json;

use crate::config::{Loaded, WebhookConfig};
use crate::service::events::EventLog;
use crate::service::ownership::Ownership;
use crate::service::supervisor::{Reconciler, Supervisor};
use crate::throttle::Throttle;

pub use auth::Auth;
pub use webhook::{ClusterAnswer, IgnoredAnswer, WebhookAnswer};

/// Renders the metrics exposition for the request's `Accept` header: (content type, body).
/// Prometheus asks for OpenMetrics; anything else (curl, promtool) gets the classic text.
pub type MetricsFn = Arc<dyn Fn(Option<&str>) -> (&'static str, String) + Send + Sync>;

/// Counts webhook answers by outcome (`handled`, `retry`, `bad_request`, …) for `/metrics`.
pub type WebhookCounter = Arc<dyn Fn(&str) + Send + Sync>;

pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// After shutdown is signalled and in-flight reconciles drained (or `shutdown_grace` passed),
/// open connections get this long to finish before `serve` returns anyway.
pub const CLOSE_MARGIN: Duration = Duration::from_secs(1);

/// Everything the router needs.
pub struct App<R: Reconciler> {
    pub supervisor: Arc<Supervisor<R>>,
    pub auth: Auth,
    pub webhook: WebhookConfig,
    pub metrics: MetricsFn,
    pub limits: ServerLimits,
    /// What the status page needs from the config (policy, per-cluster command renames).
    pub page: page::PageConfig,
    webhook_counter: std::sync::OnceLock<WebhookCounter>,
    /// Answers the proxies' per-node checks (`/v1/route/…`), set once at wiring time.
    route: std::sync::OnceLock<route::RouteFn>,
    reload: std::sync::OnceLock<ReloadFn>,
    /// Which instance polls which cluster (scale-out), set once at wiring time.
    ownership: std::sync::OnceLock<Ownership>,
}

/// Re-read and validate the config file; `Ok(summary)` once the service will switch to it,
/// `Err(error)` when the file was refused (the old config stays).
pub type ReloadFn = Arc<dyn Fn() -> Result<String, String> + Send + Sync>;

impl<R: Reconciler> App<R> {
    /// Build from the loaded config: auth and webhook mapping come from `[webhook]`.
    pub fn new(loaded: &Loaded, supervisor: Arc<Supervisor<R>>, metrics: MetricsFn) -> Arc<App<R>> {
        let auth = Auth::from_loaded(loaded);
        if auth.bearer.is_none() && auth.basic.is_none() {
            if auth.allow_unauthenticated {
                tracing::warn!("webhook and API accept UNAUTHENTICATED requests (webhook.allow_unauthenticated)");
            } else {
                tracing::warn!(
                    "no webhook credentials configured: every webhook/API call will get 401"
                );
            }
        }
        Arc::new(App {
            supervisor,
            auth,
            webhook: loaded.config.webhook.clone(),
            metrics,
            limits: ServerLimits::from_config(&loaded.config.service),
            page: page::PageConfig::from_loaded(loaded),
            webhook_counter: std::sync::OnceLock::new(),
            route: std::sync::OnceLock::new(),
            reload: std::sync::OnceLock::new(),
            ownership: std::sync::OnceLock::new(),
        })
    }

    /// Count every `/v1/alerts` answer by outcome (set once, at wiring time).
    pub fn with_webhook_counter(self: Arc<Self>, counter: WebhookCounter) -> Arc<Self> {
        let _ = self.webhook_counter.set(counter);
        self
    }

    /// Answer `/v1/route/{cluster}/{node}/{role}` with this checker (set once, at wiring time).
    pub fn with_route(self: Arc<Self>, route: route::RouteFn) -> Arc<Self> {
        let _ = self.route.set(route);
        self
    }

    /// What `POST /v1/reload` calls (set once, at wiring time).
    pub fn with_reload(self: Arc<Self>, reload: ReloadFn) -> Arc<Self> {
        let _ = self.reload.set(reload);
        self
    }

    /// Show who polls what (`owner`, `GET /v1/members`) from this view (set once, at wiring
    /// time; unset: scale-out off, this instance polls everything).
    pub fn with_ownership(self: Arc<Self>, own: Ownership) -> Arc<Self> {
        let _ = self.ownership.set(own);
        self
    }

    fn ownership(&self) -> Ownership {
        self.ownership.get().cloned().unwrap_or_else(Ownership::all)
    }

    fn events(&self) -> &Arc<EventLog> {
        self.supervisor.events()
    }

    /// `webhook.max_body_bytes` and `service.body_read_timeout`.
    fn body_limits(&self) -> (usize, Duration) {
        (self.webhook.max_body_bytes, self.limits.body_read_timeout)
    }
}

/// `POST /v1/reload`: 200 `{"reloaded": true, "message"}`, 422 `{"error"}` for a refused file.
async fn reload<R: Reconciler>(
    axum::extract::State(app): axum::extract::State<Arc<App<R>>>,
) -> Response {
    let Some(f) = app.reload.get() else {
        return error(
            StatusCode::NOT_IMPLEMENTED,
            "this server cannot reload its config",
        );
    };
    let f = Arc::clone(f);
    match tokio::task::spawn_blocking(move || f()).await {
        Ok(Ok(message)) => {
            axum::Json(serde_json::json!({ "reloaded": true, "message": message })).into_response()
        }
        Ok(Err(e)) => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("config refused, the old one stays: {e}"),
        ),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reload failed: {e}"),
        ),
    }
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    ApiError(status, msg.into()).into_response()
}

/// A 4xx/5xx answer with a JSON reason (small, so it can travel in `Result`s).
#[derive(Debug)]
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.0, Json(json!({ "status": "error", "error": self.1 }))).into_response();
        // After a body we did not (fully) read, the connection cannot carry another request.
        if matches!(
            self.0,
            StatusCode::PAYLOAD_TOO_LARGE | StatusCode::REQUEST_TIMEOUT
        ) {
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        r
    }
}

/// The router: `/v1/*` behind auth and the shutdown gate; health and metrics open.
pub fn router<R: Reconciler>(app: Arc<App<R>>) -> Router {
    let limit = app.webhook.max_body_bytes;
    let api = Router::new()
        .route("/v1/alerts", post(webhook::webhook::<R>))
        .route("/v1/clusters", get(api::list_clusters::<R>))
        .route("/v1/clusters/{cluster}", get(api::get_cluster::<R>))
        .route("/v1/members", get(api::members::<R>))
        .route("/v1/clusters/{cluster}/failover", post(api::failover::<R>))
        .route(
            "/v1/clusters/{cluster}/switchover",
            post(api::switchover::<R>),
        )
        .route("/v1/clusters/{cluster}/demote", post(api::demote::<R>))
        .route("/v1/pause", post(api::pause::<R>))
        .route("/v1/resume", post(api::resume::<R>))
        .route("/v1/controls", get(api::get_controls::<R>))
        .route("/v1/reload", post(reload::<R>))
        .route(
            "/v1/clusters/{cluster}/maintenance",
            post(api::set_maintenance::<R>),
        )
        .route(
            "/v1/clusters/{cluster}/maintenance/{node}",
            delete(api::clear_maintenance::<R>),
        )
        .route("/v1/clusters/{cluster}/ack", post(api::ack::<R>))
        .route("/v1/events", get(api::events::<R>))
        .route("/v1/route/{cluster}/{node}/{role}", get(route::check::<R>))
        .merge(page::routes::<R>())
        .route_layer(middleware::from_fn_with_state(
            app.clone(),
            auth::authenticate::<R>,
        ))
        .route_layer(middleware::from_fn_with_state(
            app.clone(),
            refuse_when_shutting_down::<R>,
        ))
        .route_layer(middleware::from_fn_with_state(
            app.clone(),
            webhook::count_webhooks::<R>,
        ));
    Router::new()
        .merge(api)
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz::<R>))
        .route("/metrics", get(health::metrics::<R>))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(app)
}

async fn refuse_when_shutting_down<R: Reconciler>(
    State(app): State<Arc<App<R>>>,
    req: Request,
    next: Next,
) -> Response {
    if app.supervisor.is_shutting_down() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "shutting down");
    }
    next.run(req).await
}

/// Limits of the HTTP server (from `[service]`).
#[derive(Clone, Copy, Debug)]
pub struct ServerLimits {
    pub header_read_timeout: Duration,
    pub body_read_timeout: Duration,
    pub max_connections: usize,
}

impl ServerLimits {
    pub fn from_config(c: &crate::config::ServiceConfig) -> ServerLimits {
        ServerLimits {
            header_read_timeout: c.header_read_timeout,
            body_read_timeout: c.body_read_timeout,
            max_connections: c.max_connections,
        }
    }
}

static ACCEPT_FAILED: Throttle = Throttle::new();
static CONN_LIMIT: Throttle = Throttle::new();

/// Serve until `shutdown` completes, then: refuse new work with 503 "shutting down" (the
/// listener stays open meanwhile, so callers get an answer rather than a refused connection),
/// wait for in-flight reconciles at most `service.shutdown_grace`, stop accepting, give open
/// connections [`CLOSE_MARGIN`] to finish, return.
///
/// HTTP/1.1 only (Alertmanager and Prometheus speak it). Slow clients are bounded: headers
/// within `service.header_read_timeout`, bodies within `service.body_read_timeout`, at most
/// `service.max_connections` connections (more are closed at once), so a slowloris flood
/// cannot hold the service.
pub async fn serve<R: Reconciler>(
    listener: tokio::net::TcpListener,
    app: Arc<App<R>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let sup = Arc::clone(&app.supervisor);
    let grace = sup.shutdown_grace();
    let limits = app.limits;
    let signal = async move {
        shutdown.await;
        tracing::info!(
            grace_ms = grace.as_millis() as u64,
            "shutdown: refusing new work, waiting for in-flight reconciles"
        );
        sup.begin_shutdown();
        if sup.drain(grace).await {
            tracing::info!("shutdown: no reconcile in flight");
        } else {
            tracing::warn!("shutdown: a reconcile is still running after the grace period; the lock TTL covers it");
        }
    };
    let router = router(app);
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let (close_tx, close_rx) = tokio::sync::watch::channel(false);
    let mut conns = tokio::task::JoinSet::new();
    let mut signal = std::pin::pin!(signal);
    loop {
        tokio::select! {
            _ = &mut signal => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => {
                let tcp = match accepted {
                    Ok((tcp, _)) => tcp,
                    Err(e) => {
                        // E.g. out of file descriptors: back off instead of spinning.
                        if let Some(suppressed) = ACCEPT_FAILED.check() {
                            tracing::warn!(error = %e, suppressed, "accepting a connection failed");
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
                    if let Some(suppressed) = CONN_LIMIT.check() {
                        tracing::warn!(max = limits.max_connections, suppressed, "connection limit reached: closing a new connection");
                    }
                    drop(tcp);
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let (router, close) = (router.clone(), close_rx.clone());
                conns.spawn(async move {
                    conn::serve_connection(tcp, router, limits, close).await;
                    drop(permit);
                });
            }
        }
    }
    drop(listener);
    let _ = close_tx.send(true);
    let finished = tokio::time::timeout(CLOSE_MARGIN, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if finished.is_err() {
        tracing::warn!("shutdown: connections still open after the grace period; returning");
        conns.abort_all();
    }
    Ok(())
}
