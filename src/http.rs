//! The HTTP side: Alertmanager webhook, operator API, health and metrics, on one axum router.
//!
//! Status codes follow Alertmanager's retry rules (it retries 5xx and transport errors, never
//! 4xx): 4xx means "this request can never succeed", 503 means "a retry could help", 200 means
//! "handled" (acted on, or recorded in the audit trail with the reason we did not act).
//!
//! No secret is ever logged or echoed: we never log headers, and auth failures say only
//! "missing or wrong credentials".

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::alert::{self, Classified};
use crate::config::{Loaded, Secret, WebhookConfig};
use crate::decide::Trigger;
use crate::events::{EventKind, EventLog, NewEvent, TriggerSource};
use crate::model::Addr;
use crate::reconcile::{Outcome, Result_};
use crate::supervisor::{
    Answer, ClusterSnapshot, ClusterState, Reconciler, Request as Work, SubmitError, Supervisor,
};
use crate::throttle::Throttle;

pub mod page;

/// Renders the metrics exposition for the request's `Accept` header: (content type, body).
/// Prometheus asks for OpenMetrics; anything else (curl, promtool) gets the classic text.
pub type MetricsFn = Arc<dyn Fn(Option<&str>) -> (&'static str, String) + Send + Sync>;

/// Counts webhook answers by outcome (`handled`, `retry`, `bad_request`, …) for `/metrics`.
pub type WebhookCounter = Arc<dyn Fn(&str) + Send + Sync>;

pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

static REJECTED_AUTH: Throttle = Throttle::new();
static REJECTED_SIZE: Throttle = Throttle::new();
static REJECTED_TYPE: Throttle = Throttle::new();
static REJECTED_PAYLOAD: Throttle = Throttle::new();
static TRUNCATED: Throttle = Throttle::new();
static SLOW_BODY: Throttle = Throttle::new();
static RECEIVED: Throttle = Throttle::new();
/// "webhook received" lines: at most one per second (`suppressed` counts the others).
const RECEIVED_EVERY: Duration = Duration::from_secs(1);

/// After shutdown is signalled and in-flight reconciles drained (or `shutdown_grace` passed),
/// open connections get this long to finish before `serve` returns anyway.
pub const CLOSE_MARGIN: Duration = Duration::from_secs(1);

/// How incoming webhook and API calls authenticate (Alertmanager `http_config`).
#[derive(Clone, Default)]
pub struct Auth {
    pub bearer: Option<Secret>,
    pub basic: Option<(String, Secret)>,
    pub allow_unauthenticated: bool,
    /// `webhook.read_only_token`: may `GET` the page and the API, never `POST` (see [`page::access`]).
    pub read_only: Option<Secret>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("bearer", &self.bearer.is_some())
            .field("basic_user", &self.basic.as_ref().map(|b| &b.0))
            .field("allow_unauthenticated", &self.allow_unauthenticated)
            .field("read_only", &self.read_only.is_some())
            .finish()
    }
}

impl Auth {
    pub fn from_loaded(l: &Loaded) -> Auth {
        let w = &l.config.webhook;
        Auth {
            bearer: l.webhook_bearer.clone(),
            basic: match (&w.basic_user, &l.webhook_basic_password) {
                (Some(u), Some(p)) => Some((u.clone(), p.clone())),
                _ => None,
            },
            allow_unauthenticated: w.allow_unauthenticated,
            read_only: l.read_only_token.clone(),
        }
    }

    /// True if the request may pass. Comparisons are constant-time in the secret's content.
    pub fn check(&self, headers: &HeaderMap) -> bool {
        if self.bearer.is_none() && self.basic.is_none() {
            return self.allow_unauthenticated;
        }
        let Some(value) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        let (scheme, cred) = value.trim().split_once(' ').unwrap_or((value, ""));
        let cred = cred.trim();
        if scheme.eq_ignore_ascii_case("bearer") {
            if let Some(tok) = &self.bearer {
                return bool::from(cred.as_bytes().ct_eq(tok.expose().as_bytes()));
            }
        } else if scheme.eq_ignore_ascii_case("basic") {
            if let Some((user, pass)) = &self.basic {
                let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(cred) else {
                    return false;
                };
                let Some(colon) = raw.iter().position(|&b| b == b':') else {
                    return false;
                };
                let (u, p) = (&raw[..colon], &raw[colon + 1..]);
                let ok_u = u.ct_eq(user.as_bytes());
                let ok_p = p.ct_eq(pass.expose().as_bytes());
                return bool::from(ok_u & ok_p);
            }
        }
        false
    }
}

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
}

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
        })
    }

    /// Count every `/v1/alerts` answer by outcome (set once, at wiring time).
    pub fn with_webhook_counter(self: Arc<Self>, counter: WebhookCounter) -> Arc<Self> {
        let _ = self.webhook_counter.set(counter);
        self
    }

    fn events(&self) -> &Arc<EventLog> {
        self.supervisor.events()
    }

    /// `webhook.max_body_bytes` and `service.body_read_timeout`.
    fn body_limits(&self) -> (usize, Duration) {
        (self.webhook.max_body_bytes, self.limits.body_read_timeout)
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
        .route("/v1/alerts", post(webhook::<R>))
        .route("/v1/clusters", get(list_clusters::<R>))
        .route("/v1/clusters/{cluster}", get(get_cluster::<R>))
        .route("/v1/clusters/{cluster}/failover", post(failover::<R>))
        .route("/v1/clusters/{cluster}/switchover", post(switchover::<R>))
        .route("/v1/clusters/{cluster}/demote", post(demote::<R>))
        .route("/v1/pause", post(pause::<R>))
        .route("/v1/resume", post(resume::<R>))
        .route("/v1/events", get(events::<R>))
        .merge(page::routes::<R>())
        .route_layer(middleware::from_fn_with_state(
            app.clone(),
            authenticate::<R>,
        ))
        .route_layer(middleware::from_fn_with_state(
            app.clone(),
            refuse_when_shutting_down::<R>,
        ))
        .route_layer(middleware::from_fn_with_state(
            app.clone(),
            count_webhooks::<R>,
        ));
    Router::new()
        .merge(api)
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz::<R>))
        .route("/metrics", get(metrics::<R>))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(app)
}

/// Outermost on `/v1/*`: counts each webhook answer (including 401 and 503) by outcome.
async fn count_webhooks<R: Reconciler>(
    State(app): State<Arc<App<R>>>,
    req: Request,
    next: Next,
) -> Response {
    let is_webhook = req.uri().path() == "/v1/alerts";
    let resp = next.run(req).await;
    if let (true, Some(count)) = (is_webhook, app.webhook_counter.get()) {
        let outcome = match resp.status() {
            StatusCode::OK => "handled",
            StatusCode::SERVICE_UNAVAILABLE => "retry",
            StatusCode::BAD_REQUEST => "bad_request",
            StatusCode::UNAUTHORIZED => "unauthorized",
            StatusCode::PAYLOAD_TOO_LARGE => "too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            _ => "other",
        };
        count(outcome);
    }
    resp
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

async fn authenticate<R: Reconciler>(
    State(app): State<Arc<App<R>>>,
    req: Request,
    next: Next,
) -> Response {
    let access = page::access(&app.auth, req.method(), req.headers());
    if let page::Access::Forbidden(why) = access {
        return error(StatusCode::FORBIDDEN, why);
    }
    if access == page::Access::Denied {
        if let Some(suppressed) = REJECTED_AUTH.check() {
            tracing::warn!(path = %req.uri().path(), suppressed, "rejected request: missing or wrong credentials");
        }
        let mut r = error(StatusCode::UNAUTHORIZED, "missing or wrong credentials");
        let challenge = if app.auth.bearer.is_some()
            && !page::prompts_for_basic(&app.auth, req.uri().path(), req.headers())
        {
            "Bearer"
        } else {
            "Basic realm=\"pika-remedy\""
        };
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        );
        return r;
    }
    next.run(req).await
}

/// `application/json`, optionally with `charset=utf-8` (any case); nothing else.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mut parts = ct.split(';');
    let mime = parts.next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("application/json") {
        return false;
    }
    parts.all(|p| match p.trim().split_once('=') {
        Some((k, v)) if k.trim().eq_ignore_ascii_case("charset") => {
            v.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
        }
        Some(_) => true,
        None => p.trim().is_empty(),
    })
}

/// Read the body: 413 at once when `Content-Length` is above `max` (before reading any of it)
/// or when more than `max` arrives, 408 when it does not arrive within `within`. Both answers
/// close the connection (see [`ApiError`]).
async fn read_body(req: Request, (max, within): (usize, Duration)) -> Result<Bytes, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let too_large = || {
        if let Some(suppressed) = REJECTED_SIZE.check() {
            tracing::warn!(suppressed, "rejected request: body too large");
        }
        ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body too large (limit {max} bytes, webhook.max_body_bytes)"),
        )
    };
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    match tokio::time::timeout(within, Bytes::from_request(req, &())).await {
        Err(_) => {
            if let Some(suppressed) = SLOW_BODY.check() {
                tracing::warn!(suppressed, "rejected request: body not received in time");
            }
            Err(ApiError(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "body not received within {} (service.body_read_timeout)",
                    humantime::format_duration(within)
                ),
            ))
        }
        Ok(Ok(b)) => Ok(b),
        Ok(Err(rej)) if rej.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(too_large()),
        Ok(Err(rej)) => Err(ApiError(
            rej.status(),
            format!("cannot read body: {}", rej.body_text()),
        )),
    }
}

/// Per-cluster result in webhook and API answers.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClusterAnswer {
    pub trigger: Trigger,
    pub action: String,
    pub reason: String,
    pub result: Result_,
    pub retryable: bool,
    /// Absent only for a request still queued behind a running reconcile at answer time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<crate::decide::Plan>,
}

impl From<&Outcome> for ClusterAnswer {
    fn from(o: &Outcome) -> Self {
        ClusterAnswer {
            trigger: o.trigger.clone(),
            action: o.plan.action.label().to_string(),
            reason: o.plan.reason.clone(),
            result: o.result.clone(),
            retryable: o.retryable,
            plan: Some(o.plan.clone()),
        }
    }
}

impl ClusterAnswer {
    /// Still running when the answer was due: the plan if its steps started.
    fn in_progress(trigger: Trigger, plan: Option<crate::decide::Plan>, within: Duration) -> Self {
        let after = humantime::format_duration(within);
        match plan {
            Some(p) => ClusterAnswer {
                trigger,
                action: p.action.label().to_string(),
                reason: format!(
                    "{}; in progress after {after}: the outcome goes to the audit trail (GET /v1/events)",
                    p.reason
                ),
                result: Result_::InProgress,
                retryable: false,
                plan: Some(p),
            },
            None => ClusterAnswer {
                trigger,
                action: "pending".into(),
                reason: format!(
                    "accepted; not decided after {after} (queued behind a running reconcile of the cluster, or still observing): the outcome goes to the audit trail (GET /v1/events)"
                ),
                result: Result_::InProgress,
                retryable: false,
                plan: None,
            },
        }
    }
}

/// An alert we did not act on, in the webhook answer.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct IgnoredAnswer {
    pub alertname: String,
    pub fingerprint: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    pub reason: String,
}

/// The webhook's JSON answer (200 and 503).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct WebhookAnswer {
    /// `handled` (200) or `retry` (503).
    pub status: String,
    pub clusters: BTreeMap<String, ClusterAnswer>,
    pub ignored: Vec<IgnoredAnswer>,
    pub truncated_alerts: u64,
}

async fn webhook<R: Reconciler>(State(app): State<Arc<App<R>>>, req: Request) -> Response {
    if !is_json(req.headers()) {
        if let Some(suppressed) = REJECTED_TYPE.check() {
            tracing::warn!(
                suppressed,
                "rejected webhook: content type is not application/json"
            );
        }
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content type must be application/json",
        );
    }
    let body = match read_body(req, app.body_limits()).await {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    let payload = match alert::parse(&body) {
        Ok(p) => p,
        Err(e) => {
            if let Some(suppressed) = REJECTED_PAYLOAD.check() {
                tracing::warn!(error = %e, suppressed, "rejected webhook: unreadable payload");
            }
            return error(StatusCode::BAD_REQUEST, e.to_string());
        }
    };
    if payload.truncated_alerts > 0 {
        if let Some(suppressed) = TRUNCATED.check() {
            tracing::warn!(
                group_key = %payload.group_key,
                truncated = payload.truncated_alerts,
                suppressed,
                "Alertmanager truncated this notification (max_alerts); acting on the alerts received"
            );
        }
    }
    // Every webhook is in the audit trail; the log gets one line per interval under a flood.
    if let Some(suppressed) = RECEIVED.check_every(RECEIVED_EVERY) {
        tracing::info!(
            receiver = %payload.receiver,
            group_key = %payload.group_key,
            status = %payload.status,
            alerts = payload.alerts.len(),
            suppressed,
            "webhook received"
        );
    }
    let Classified { work, not_acted } =
        alert::classify(&payload, &app.webhook, &app.supervisor.clusters());
    let mut ignored = Vec::with_capacity(not_acted.len());
    for n in not_acted {
        let kind = if n.resolved {
            EventKind::Resolved
        } else {
            EventKind::Ignored
        };
        ignored.push(IgnoredAnswer {
            alertname: n.alert.alertname.clone(),
            fingerprint: n.alert.fingerprint.clone(),
            cluster: n.cluster.clone(),
            reason: n.reason.clone(),
        });
        app.events().record(NewEvent::not_acted(
            kind,
            n.cluster,
            TriggerSource::Alertmanager,
            vec![n.alert],
            n.reason,
        ));
    }
    let within = app.webhook.reply_within;
    let runs = work.into_iter().map(|(cluster, w)| {
        let sup = Arc::clone(&app.supervisor);
        let trigger = w.trigger.clone();
        async move {
            let req = Work {
                trigger: w.trigger,
                source: TriggerSource::Alertmanager,
                alerts: w.alerts,
            };
            let r = sup.submit_within(&cluster, req, within).await;
            (cluster, trigger, r)
        }
    });
    let results = futures_util::future::join_all(runs).await;
    let mut clusters = BTreeMap::new();
    let mut retry = false;
    let mut in_progress = false;
    for (cluster, trigger, r) in results {
        match r {
            Ok(Answer::Done(o)) => {
                retry |= o.retryable;
                clusters.insert(cluster, ClusterAnswer::from(&o));
            }
            Ok(Answer::InProgress { plan }) => {
                in_progress = true;
                clusters.insert(cluster, ClusterAnswer::in_progress(trigger, plan, within));
            }
            // Not 2xx, so nothing is lost: Alertmanager re-sends to us or a peer.
            Err(SubmitError::ShuttingDown) => {
                return error(StatusCode::SERVICE_UNAVAILABLE, "shutting down")
            }
            Err(e) => {
                // Cannot happen for alert triggers (clusters were checked, autos never "busy");
                // answered as retryable so the alert is not lost.
                tracing::error!(cluster, error = %e, "webhook work not accepted");
                return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
            }
        }
    }
    let answer = WebhookAnswer {
        status: if retry {
            "retry"
        } else if in_progress {
            "in_progress"
        } else {
            "handled"
        }
        .into(),
        clusters,
        ignored,
        truncated_alerts: payload.truncated_alerts,
    };
    let status = if retry {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (status, Json(answer)).into_response()
}

#[derive(Serialize)]
struct ClusterView {
    #[serde(flatten)]
    state: ClusterState,
    #[serde(flatten)]
    snapshot: ClusterSnapshot,
}

async fn view<R: Reconciler>(app: &App<R>, cluster: &str) -> Option<ClusterView> {
    let state = app.supervisor.cluster_state(cluster)?;
    let snapshot = app.supervisor.reconciler().snapshot(cluster).await;
    Some(ClusterView { state, snapshot })
}

async fn list_clusters<R: Reconciler>(State(app): State<Arc<App<R>>>) -> Response {
    let mut out = Vec::new();
    for c in app.supervisor.clusters() {
        if let Some(v) = view(&app, &c).await {
            out.push(v);
        }
    }
    Json(json!({ "paused": app.supervisor.globally_paused(), "dry_run": app.supervisor.dry_run(), "clusters": out }))
        .into_response()
}

async fn get_cluster<R: Reconciler>(
    State(app): State<Arc<App<R>>>,
    Path(cluster): Path<String>,
) -> Response {
    match view(&app, &cluster).await {
        Some(v) => Json(v).into_response(),
        None => error(StatusCode::NOT_FOUND, format!("unknown cluster {cluster}")),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ToBody {
    #[serde(default)]
    to: Option<Addr>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DemoteBody {
    node: Addr,
}

/// Parse an optional JSON body of an API call (empty = default).
async fn api_body<T: for<'de> Deserialize<'de> + Default>(
    req: Request,
    limits: (usize, Duration),
) -> Result<T, ApiError> {
    let body = read_body(req, limits).await?;
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(T::default());
    }
    parse_api_body(&body)
}

fn parse_api_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))
}

/// Run a manual trigger through the same single-flight path as alerts.
async fn manual<R: Reconciler>(app: &Arc<App<R>>, cluster: &str, trigger: Trigger) -> Response {
    match app
        .supervisor
        .submit(cluster, Work::new(trigger, TriggerSource::Api))
        .await
    {
        Ok(o) => {
            let status = if o.retryable {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::OK
            };
            (status, Json(json!({ "cluster": cluster, "outcome": o }))).into_response()
        }
        Err(e @ SubmitError::UnknownCluster(_)) => error(StatusCode::NOT_FOUND, e.to_string()),
        Err(e @ SubmitError::Busy(_)) => error(StatusCode::TOO_MANY_REQUESTS, e.to_string()),
        Err(e @ SubmitError::ShuttingDown) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

async fn failover<R: Reconciler>(
    State(app): State<Arc<App<R>>>,
    Path(cluster): Path<String>,
    req: Request,
) -> Response {
    match api_body::<ToBody>(req, app.body_limits()).await {
        Ok(b) => manual(&app, &cluster, Trigger::Failover { to: b.to }).await,
        Err(r) => r.into_response(),
    }
}

async fn switchover<R: Reconciler>(
    State(app): State<Arc<App<R>>>,
    Path(cluster): Path<String>,
    req: Request,
) -> Response {
    match api_body::<ToBody>(req, app.body_limits()).await {
        Ok(b) => manual(&app, &cluster, Trigger::Switchover { to: b.to }).await,
        Err(r) => r.into_response(),
    }
}

async fn demote<R: Reconciler>(
    State(app): State<Arc<App<R>>>,
    Path(cluster): Path<String>,
    req: Request,
) -> Response {
    let body = match read_body(req, app.body_limits()).await {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    match parse_api_body::<DemoteBody>(&body) {
        Ok(b) => manual(&app, &cluster, Trigger::Demote { node: b.node }).await,
        Err(_) if body.iter().all(|b| b.is_ascii_whitespace()) => error(
            StatusCode::BAD_REQUEST,
            "body {\"node\": \"host:port\"} is required",
        ),
        Err(r) => r.into_response(),
    }
}

#[derive(Deserialize)]
struct ClusterQuery {
    cluster: Option<String>,
}

async fn pause<R: Reconciler>(
    State(app): State<Arc<App<R>>>,
    Query(q): Query<ClusterQuery>,
) -> Response {
    set_paused(&app, q.cluster, true)
}

async fn resume<R: Reconciler>(
    State(app): State<Arc<App<R>>>,
    Query(q): Query<ClusterQuery>,
) -> Response {
    set_paused(&app, q.cluster, false)
}

fn set_paused<R: Reconciler>(app: &App<R>, cluster: Option<String>, paused: bool) -> Response {
    if let Err(e) = app.supervisor.set_paused(cluster.as_deref(), paused) {
        return error(StatusCode::NOT_FOUND, e.to_string());
    }
    let what = if paused { "paused" } else { "resumed" };
    let scope = cluster
        .as_deref()
        .map(|c| format!("cluster {c}"))
        .unwrap_or_else(|| "all clusters".into());
    app.events().record(NewEvent::not_acted(
        EventKind::Control,
        cluster.clone(),
        TriggerSource::Api,
        Vec::new(),
        format!("{what} by operator: {scope}"),
    ));
    Json(json!({ "paused": paused, "cluster": cluster })).into_response()
}

#[derive(Deserialize)]
struct EventsQuery {
    limit: Option<usize>,
    cluster: Option<String>,
}

async fn events<R: Reconciler>(
    State(app): State<Arc<App<R>>>,
    Query(q): Query<EventsQuery>,
) -> Response {
    let limit = q.limit.unwrap_or(100);
    Json(app.events().recent(limit, q.cluster.as_deref())).into_response()
}

async fn readyz<R: Reconciler>(State(app): State<Arc<App<R>>>) -> Response {
    if app.supervisor.is_shutting_down() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    match app.supervisor.reconciler().ready().await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}

async fn metrics<R: Reconciler>(State(app): State<Arc<App<R>>>, headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let (content_type, text) = (app.metrics)(accept);
    ([(header::CONTENT_TYPE, content_type)], text).into_response()
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

/// After a connection ends, its unread input is read and discarded for at most this long (and
/// [`LINGER_BYTES`]) before the socket is closed: closing with unread data makes the kernel
/// send a reset, and a client still uploading an oversized body would then see a broken pipe
/// instead of our 413.
const LINGER: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 8 * 1024 * 1024;

static ACCEPT_FAILED: Throttle = Throttle::new();
static CONN_LIMIT: Throttle = Throttle::new();

/// The socket shared between hyper and the connection task, so the task can shut it down and
/// linger after hyper is done. Reads and writes go through `&TcpStream` (readiness + try_*);
/// hyper's shutdown is a no-op here (the task does it).
struct SharedIo(Arc<tokio::net::TcpStream>);

impl tokio::io::AsyncRead for SharedIo {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use std::task::Poll;
        loop {
            match self.0.poll_read_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {}
            }
            match self.0.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl tokio::io::AsyncWrite for SharedIo {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        use std::task::Poll;
        loop {
            match self.0.poll_write_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {}
            }
            match self.0.try_write(buf) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// One HTTP/1.1 connection: header read timeout, graceful shutdown on `close`, then a
/// lingering close (see [`LINGER`]).
async fn serve_connection(
    tcp: tokio::net::TcpStream,
    router: Router,
    limits: ServerLimits,
    mut close: tokio::sync::watch::Receiver<bool>,
) {
    let tcp = Arc::new(tcp);
    let io = hyper_util::rt::TokioIo::new(SharedIo(Arc::clone(&tcp)));
    let svc = hyper_util::service::TowerToHyperService::new(router);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    // Boxed so it can be dropped (releasing hyper's handle on the socket) before the linger.
    let mut conn = Box::pin(builder.serve_connection(io, svc));
    let closing = *close.borrow();
    if closing {
        conn.as_mut().graceful_shutdown();
    }
    let mut closing = closing;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "http connection ended with an error");
                }
                break;
            }
            changed = close.changed(), if !closing => {
                closing = true;
                if changed.is_err() || *close.borrow() {
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
    drop(conn);
    // hyper is done with the socket: send FIN, then read what the client still sends (an
    // oversized body we answered 413 to) so the close does not turn into a reset.
    let Ok(mut tcp) = Arc::try_unwrap(tcp) else {
        return;
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = tcp.shutdown().await;
    let _ = tokio::time::timeout(LINGER, async {
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0;
        while total < LINGER_BYTES {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    })
    .await;
}

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
                    serve_connection(tcp, router, limits, close).await;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::CONTENT_TYPE, HeaderValue::from_str(v).unwrap());
            is_json(&m)
        };
        assert!(h("application/json"));
        assert!(h("Application/JSON; charset=UTF-8"));
        assert!(h("application/json;charset=\"utf-8\""));
        assert!(!h("application/json; charset=latin1"));
        assert!(!h("text/plain"));
        assert!(!h("application/jsonx"));
        assert!(!is_json(&HeaderMap::new()));
    }

    fn auth_header(v: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        m
    }

    #[test]
    fn auth_bearer_and_basic() {
        let a = Auth {
            bearer: Some(Secret::new("tok")),
            basic: Some(("am".into(), Secret::new("pw:x"))),
            allow_unauthenticated: false,
            read_only: None,
        };
        assert!(a.check(&auth_header("Bearer tok")));
        assert!(a.check(&auth_header("bearer tok")));
        assert!(!a.check(&auth_header("Bearer tok2")));
        assert!(!a.check(&auth_header("Bearer ")));
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        assert!(a.check(&auth_header(&format!("Basic {}", b64("am:pw:x")))));
        assert!(!a.check(&auth_header(&format!("Basic {}", b64("am:pw")))));
        assert!(!a.check(&auth_header(&format!("Basic {}", b64("xx:pw:x")))));
        assert!(!a.check(&auth_header("Basic !!!")));
        assert!(!a.check(&HeaderMap::new()));
        assert!(!format!("{a:?}").contains("tok"));
        let open = Auth {
            allow_unauthenticated: true,
            ..Auth::default()
        };
        assert!(open.check(&HeaderMap::new()));
        assert!(!Auth::default().check(&HeaderMap::new()));
    }
}
