//! `POST /v1/alerts`: the Alertmanager webhook. Each alert is classified on its own; every
//! cluster named by firing alerts gets one reconcile through the supervisor (waited for at most
//! `webhook.reply_within`); alerts we do not act on go to the audit trail with their reason.
//! 200 = handled (or in progress), 503 = a retry could help, 4xx = can never succeed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::body::{is_json, read_body};
use super::{error, ApiError, App};
use crate::alert::{self, Classified, ClusterWork, NotActed, Payload};
use crate::decide::Trigger;
use crate::reconcile::{Outcome, Result_};
use crate::service::events::{EventKind, NewEvent, TriggerSource};
use crate::service::supervisor::{Answer, Reconciler, Request as Work, SubmitError};
use crate::throttle::Throttle;

static REJECTED_TYPE: Throttle = Throttle::new();
static REJECTED_PAYLOAD: Throttle = Throttle::new();
static TRUNCATED: Throttle = Throttle::new();
static RECEIVED: Throttle = Throttle::new();
/// "webhook received" lines: at most one per second (`suppressed` counts the others).
const RECEIVED_EVERY: Duration = Duration::from_secs(1);

/// Outermost on `/v1/*`: counts each webhook answer (including 401 and 503) by outcome.
pub(super) async fn count_webhooks<R: Reconciler>(
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

pub(super) async fn webhook<R: Reconciler>(
    State(app): State<Arc<App<R>>>,
    req: Request,
) -> Response {
    let payload = match read_payload(&app, req).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let Classified { work, not_acted } =
        alert::classify(&payload, &app.webhook, &app.supervisor.clusters());
    let ignored = record_not_acted(&app, not_acted);
    let results = run_work(&app, work).await;
    match answer(
        results,
        ignored,
        payload.truncated_alerts,
        app.webhook.reply_within,
    ) {
        Ok(a) => {
            let status = if a.status == "retry" {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::OK
            };
            (status, Json(a)).into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// Content type, body limits and payload parsing (each rejection is a rate-limited warning),
/// then the "received" log lines.
async fn read_payload<R: Reconciler>(app: &App<R>, req: Request) -> Result<Payload, Response> {
    if !is_json(req.headers()) {
        if let Some(suppressed) = REJECTED_TYPE.check() {
            tracing::warn!(
                suppressed,
                "rejected webhook: content type is not application/json"
            );
        }
        return Err(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "content type must be application/json",
        ));
    }
    let body = read_body(req, app.body_limits())
        .await
        .map_err(IntoResponse::into_response)?;
    let payload = alert::parse(&body).map_err(|e| {
        if let Some(suppressed) = REJECTED_PAYLOAD.check() {
            tracing::warn!(error = %e, suppressed, "rejected webhook: unreadable payload");
        }
        error(StatusCode::BAD_REQUEST, e.to_string())
    })?;
    log_received(&payload);
    Ok(payload)
}

fn log_received(payload: &Payload) {
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
}

/// Every alert we do not act on becomes an audit entry and a line of the answer.
fn record_not_acted<R: Reconciler>(app: &App<R>, not_acted: Vec<NotActed>) -> Vec<IgnoredAnswer> {
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
    ignored
}

type WorkResult = (String, Trigger, Result<Answer, SubmitError>);

/// One reconcile per cluster, all at once, each waited for at most `webhook.reply_within`.
async fn run_work<R: Reconciler>(
    app: &App<R>,
    work: BTreeMap<String, ClusterWork>,
) -> Vec<WorkResult> {
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
    futures_util::future::join_all(runs).await
}

/// The answer body, or a 503 when some work was not accepted (shutting down).
fn answer(
    results: Vec<WorkResult>,
    ignored: Vec<IgnoredAnswer>,
    truncated_alerts: u64,
    within: Duration,
) -> Result<WebhookAnswer, ApiError> {
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
                return Err(ApiError(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "shutting down".into(),
                ))
            }
            Err(e) => {
                // Cannot happen for alert triggers (clusters were checked, autos never "busy");
                // answered as retryable so the alert is not lost.
                tracing::error!(cluster, error = %e, "webhook work not accepted");
                return Err(ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()));
            }
        }
    }
    let status = if retry {
        "retry"
    } else if in_progress {
        "in_progress"
    } else {
        "handled"
    };
    Ok(WebhookAnswer {
        status: status.into(),
        clusters,
        ignored,
        truncated_alerts,
    })
}
