//! The open endpoints: `/healthz`, `/readyz` (503 while shutting down or not ready) and
//! `/metrics` (content negotiation is the [`super::MetricsFn`]'s).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::App;
use crate::service::supervisor::Reconciler;

pub(super) async fn healthz() -> &'static str {
    "ok\n"
}

pub(super) async fn readyz<R: Reconciler>(State(app): State<Arc<App<R>>>) -> Response {
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

pub(super) async fn metrics<R: Reconciler>(
    State(app): State<Arc<App<R>>>,
    headers: HeaderMap,
) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let (content_type, text) = (app.metrics)(accept);
    ([(header::CONTENT_TYPE, content_type)], text).into_response()
}
