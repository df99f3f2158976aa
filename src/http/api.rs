//! The operator API under `/v1/`: cluster views, manual failover / switchover / demote (through
//! the same single-flight path as alerts), pause and resume, and the audit trail.

use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::body::{api_body, parse_api_body, read_body};
use super::{error, App};
use crate::controls::{Change, Controls, ControlsError};
use crate::decide::Trigger;
use crate::model::Addr;
use crate::reconcile::now_unix;
use crate::service::events::{EventKind, NewEvent, TriggerSource};
use crate::service::ownership::OwnerView;
use crate::service::supervisor::{
    ClusterSnapshot, ClusterState, Reconciler, Request as Work, SubmitError,
};

#[derive(Serialize)]
struct ClusterView {
    #[serde(flatten)]
    state: ClusterState,
    #[serde(flatten)]
    snapshot: ClusterSnapshot,
    /// The shared pause in force for this cluster (its own or the global one), if any.
    pause: Option<crate::controls::Pause>,
    /// Maintenance entries of this cluster's nodes (expired ones too, until cleared).
    maintenance: Vec<crate::controls::Maintenance>,
    /// Which instance polls this cluster (scale-out), as this instance sees it.
    owner: OwnerView,
}

async fn view<R: Reconciler>(app: &App<R>, cluster: &str) -> Option<ClusterView> {
    let mut state = app.supervisor.cluster_state(cluster)?;
    let snapshot = app.supervisor.reconciler().snapshot(cluster).await;
    let now = now_unix();
    let doc = app
        .supervisor
        .reconciler()
        .controls()
        .await
        .unwrap_or_default();
    let pause = doc.pause_for(cluster, now).cloned();
    state.effectively_paused |= pause.is_some();
    // `paused`: this cluster's own pause (the page's pause/resume button acts on it).
    state.paused |= pause
        .as_ref()
        .is_some_and(|p| p.cluster.as_deref() == Some(cluster));
    let maintenance = doc
        .maintenance
        .into_iter()
        .filter(|m| m.cluster == cluster)
        .collect();
    Some(ClusterView {
        state,
        snapshot,
        pause,
        maintenance,
        owner: app.ownership().view(cluster),
    })
}

pub(super) async fn list_clusters<R: Reconciler>(State(app): State<Arc<App<R>>>) -> Response {
    let mut out = Vec::new();
    for c in app.supervisor.clusters() {
        if let Some(v) = view(&app, &c).await {
            out.push(v);
        }
    }
    let shared_global = app.supervisor.reconciler().controls().await.is_ok_and(|d| {
        d.pauses
            .iter()
            .any(|p| p.cluster.is_none() && p.until.is_none_or(|u| now_unix() < u))
    });
    let paused = app.supervisor.globally_paused() || shared_global;
    let names: Vec<String> = app.supervisor.clusters().into_iter().collect();
    let scale_out = app.ownership().members_view(&names);
    Json(json!({
        "paused": paused,
        "dry_run": app.supervisor.dry_run(),
        "scale_out": scale_out,
        "clusters": out,
    }))
    .into_response()
}

/// `GET /v1/members`: the live scale-out members and their shares, as this instance sees them
/// (with scale-out off: this instance alone, polling every cluster).
pub(super) async fn members<R: Reconciler>(State(app): State<Arc<App<R>>>) -> Response {
    let names: Vec<String> = app.supervisor.clusters().into_iter().collect();
    Json(app.ownership().members_view(&names)).into_response()
}

pub(super) async fn get_cluster<R: Reconciler>(
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

/// `POST /v1/clusters/{c}/failover`: `{"to": "host:port", "accept_data_loss": true}`, both optional.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct FailoverBody {
    #[serde(default)]
    to: Option<Addr>,
    #[serde(default)]
    accept_data_loss: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DemoteBody {
    node: Addr,
    #[serde(default)]
    accept_data_loss: bool,
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

pub(super) async fn failover<R: Reconciler>(
    State(app): State<Arc<App<R>>>,
    Path(cluster): Path<String>,
    req: Request,
) -> Response {
    match api_body::<FailoverBody>(req, app.body_limits()).await {
        Ok(b) => {
            let trigger = Trigger::Failover {
                to: b.to,
                accept_data_loss: b.accept_data_loss,
            };
            manual(&app, &cluster, trigger).await
        }
        Err(r) => r.into_response(),
    }
}

pub(super) async fn switchover<R: Reconciler>(
    State(app): State<Arc<App<R>>>,
    Path(cluster): Path<String>,
    req: Request,
) -> Response {
    match api_body::<ToBody>(req, app.body_limits()).await {
        Ok(b) => manual(&app, &cluster, Trigger::Switchover { to: b.to }).await,
        Err(r) => r.into_response(),
    }
}

pub(super) async fn demote<R: Reconciler>(
    State(app): State<Arc<App<R>>>,
    Path(cluster): Path<String>,
    req: Request,
) -> Response {
    let body = match read_body(req, app.body_limits()).await {
        Ok(b) => b,
        Err(r) => return r.into_response(),
    };
    match parse_api_body::<DemoteBody>(&body) {
        Ok(b) => {
            manual(
                &app,
                &cluster,
                Trigger::Demote {
                    node: b.node,
                    accept_data_loss: b.accept_data_loss,
                },
            )
            .await
        }
        Err(_) if body.iter().all(|b| b.is_ascii_whitespace()) => error(
            StatusCode::BAD_REQUEST,
            "body {\"node\": \"host:port\"} is required",
        ),
        Err(r) => r.into_response(),
    }
}

#[derive(Deserialize)]
pub(super) struct ClusterQuery {
    cluster: Option<String>,
}

/// Body of `POST /v1/pause` and `/v1/resume` (all optional; `cluster` may also be a query).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PauseBody {
    #[serde(default)]
    cluster: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    /// A duration such as "30m": the pause lifts itself then.
    #[serde(default, rename = "for")]
    expires_in: Option<String>,
    #[serde(default)]
    who: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MaintenanceBody {
    node: Addr,
    mode: String,
    reason: String,
    #[serde(default, rename = "for")]
    expires_in: Option<String>,
    #[serde(default)]
    who: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AckBody {
    reason: String,
    #[serde(default)]
    who: Option<String>,
}

/// An optional JSON body: empty (or whitespace) is the default.
async fn optional_body<T: serde::de::DeserializeOwned + Default, R: Reconciler>(
    app: &App<R>,
    req: Request,
) -> Result<T, Response> {
    let body = read_body(req, app.body_limits())
        .await
        .map_err(IntoResponse::into_response)?;
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(T::default());
    }
    parse_api_body::<T>(&body).map_err(IntoResponse::into_response)
}

/// A required JSON body.
async fn required_body<T: serde::de::DeserializeOwned, R: Reconciler>(
    app: &App<R>,
    req: Request,
) -> Result<T, Response> {
    let body = read_body(req, app.body_limits())
        .await
        .map_err(IntoResponse::into_response)?;
    parse_api_body::<T>(&body).map_err(IntoResponse::into_response)
}

fn duration(v: Option<&str>) -> Result<Option<std::time::Duration>, String> {
    v.map(|t| humantime::parse_duration(t).map_err(|e| format!("\"for\": {t:?}: {e}")))
        .transpose()
}

pub(super) async fn pause<R: Reconciler>(
    State(app): State<Arc<App<R>>>,
    Query(q): Query<ClusterQuery>,
    req: Request,
) -> Response {
    let b: PauseBody = match optional_body(&app, req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let expires_in = match duration(b.expires_in.as_deref()) {
        Ok(d) => d,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let cluster = q.cluster.or(b.cluster);
    let change = Change::Pause {
        cluster: cluster.clone(),
        reason: b.reason.unwrap_or_else(|| "paused through the API".into()),
        expires_in,
    };
    control(&app, change, b.who, true).await
}

pub(super) async fn resume<R: Reconciler>(
    State(app): State<Arc<App<R>>>,
    Query(q): Query<ClusterQuery>,
    req: Request,
) -> Response {
    let b: PauseBody = match optional_body(&app, req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let cluster = q.cluster.or(b.cluster);
    control(&app, Change::Resume { cluster }, b.who, false).await
}

pub(super) async fn set_maintenance<R: Reconciler>(
    State(app): State<Arc<App<R>>>,
    Path(cluster): Path<String>,
    req: Request,
) -> Response {
    let b = match required_body::<MaintenanceBody, R>(&app, req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let mode = match b.mode.parse() {
        Ok(m) => m,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let expires_in = match duration(b.expires_in.as_deref()) {
        Ok(d) => d,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let change = Change::SetMaintenance {
        cluster,
        node: b.node,
        mode,
        reason: b.reason,
        expires_in,
    };
    control(&app, change, b.who, false).await
}

pub(super) async fn clear_maintenance<R: Reconciler>(
    State(app): State<Arc<App<R>>>,
    Path((cluster, node)): Path<(String, String)>,
) -> Response {
    let node: Addr = match node.parse() {
        Ok(n) => n,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("node {node:?}: {e}")),
    };
    control(
        &app,
        Change::ClearMaintenance { cluster, node },
        None,
        false,
    )
    .await
}

pub(super) async fn ack<R: Reconciler>(
    State(app): State<Arc<App<R>>>,
    Path(cluster): Path<String>,
    req: Request,
) -> Response {
    let b = match required_body::<AckBody, R>(&app, req).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    control(
        &app,
        Change::Ack {
            cluster,
            reason: b.reason,
        },
        b.who,
        false,
    )
    .await
}

pub(super) async fn get_controls<R: Reconciler>(State(app): State<Arc<App<R>>>) -> Response {
    match app.supervisor.reconciler().controls().await {
        Ok(doc) => Json(crate::cli::controls::view(&doc, now_unix())).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

/// Check the names, apply the change in the shared store (or, for a reconciler without one,
/// the in-process pause), audit it, answer `{"change", "cluster", "paused", "controls"}`.
async fn control<R: Reconciler>(
    app: &App<R>,
    change: Change,
    who: Option<String>,
    pausing: bool,
) -> Response {
    let cluster = change.cluster().map(str::to_string);
    if let Some(c) = &cluster {
        if app.supervisor.cluster_state(c).is_none() {
            return error(StatusCode::NOT_FOUND, format!("unknown cluster {c}"));
        }
    }
    let who = who.unwrap_or_else(|| "api".into());
    let label = change.label();
    let (doc, text) = match app
        .supervisor
        .reconciler()
        .change_controls(change.clone(), who.clone())
        .await
    {
        Some(Ok(x)) => x,
        Some(Err(ControlsError::Refused(why))) => return error(StatusCode::CONFLICT, why),
        Some(Err(e)) if e.is_retryable() => {
            return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
        Some(Err(e)) => return error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        None => match change {
            Change::Pause { .. } | Change::Resume { .. } => {
                if let Err(e) = app.supervisor.set_paused(cluster.as_deref(), pausing) {
                    return error(StatusCode::NOT_FOUND, e.to_string());
                }
                let what = if pausing { "paused" } else { "resumed" };
                let scope = cluster
                    .as_deref()
                    .map(|c| format!("cluster {c}"))
                    .unwrap_or_else(|| "all clusters".into());
                (
                    Controls::default(),
                    format!("{what} by operator {who}: {scope} (this instance only)"),
                )
            }
            _ => {
                return error(
                    StatusCode::NOT_IMPLEMENTED,
                    "this service keeps no shared controls",
                )
            }
        },
    };
    app.events().record(NewEvent::not_acted(
        EventKind::Control,
        cluster.clone(),
        TriggerSource::Api,
        Vec::new(),
        text.clone(),
    ));
    let paused = match label {
        "pause" => Some(true),
        "resume" => Some(false),
        _ => None,
    };
    Json(json!({
        "change": label,
        "cluster": cluster,
        "paused": paused,
        "message": text,
        "controls": crate::cli::controls::view(&doc, now_unix()),
    }))
    .into_response()
}

#[derive(Deserialize)]
pub(super) struct EventsQuery {
    limit: Option<usize>,
    cluster: Option<String>,
}

pub(super) async fn events<R: Reconciler>(
    State(app): State<Arc<App<R>>>,
    Query(q): Query<EventsQuery>,
) -> Response {
    let limit = q.limit.unwrap_or(100);
    Json(app.events().recent(limit, q.cluster.as_deref())).into_response()
}
