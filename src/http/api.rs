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
use crate::decide::Trigger;
use crate::model::Addr;
use crate::service::events::{EventKind, NewEvent, TriggerSource};
use crate::service::supervisor::{
    ClusterSnapshot, ClusterState, Reconciler, Request as Work, SubmitError,
};

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

pub(super) async fn list_clusters<R: Reconciler>(State(app): State<Arc<App<R>>>) -> Response {
    let mut out = Vec::new();
    for c in app.supervisor.clusters() {
        if let Some(v) = view(&app, &c).await {
            out.push(v);
        }
    }
    Json(json!({ "paused": app.supervisor.globally_paused(), "dry_run": app.supervisor.dry_run(), "clusters": out }))
        .into_response()
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DemoteBody {
    node: Addr,
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
    match api_body::<ToBody>(req, app.body_limits()).await {
        Ok(b) => manual(&app, &cluster, Trigger::Failover { to: b.to }).await,
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
        Ok(b) => manual(&app, &cluster, Trigger::Demote { node: b.node }).await,
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

pub(super) async fn pause<R: Reconciler>(
    State(app): State<Arc<App<R>>>,
    Query(q): Query<ClusterQuery>,
) -> Response {
    set_paused(&app, q.cluster, true)
}

pub(super) async fn resume<R: Reconciler>(
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
