//! Reading request bodies: the JSON content-type check, the size and time limits, and the
//! optional JSON body of an operator call.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap, StatusCode};
use serde::Deserialize;

use super::ApiError;
use crate::throttle::Throttle;

static REJECTED_SIZE: Throttle = Throttle::new();
static SLOW_BODY: Throttle = Throttle::new();

/// `application/json`, optionally with `charset=utf-8` (any case); nothing else.
pub(super) fn is_json(headers: &HeaderMap) -> bool {
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
pub(super) async fn read_body(
    req: Request,
    (max, within): (usize, Duration),
) -> Result<Bytes, ApiError> {
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

/// Parse an optional JSON body of an API call (empty = default).
pub(super) async fn api_body<T: for<'de> Deserialize<'de> + Default>(
    req: Request,
    limits: (usize, Duration),
) -> Result<T, ApiError> {
    let body = read_body(req, limits).await?;
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(T::default());
    }
    parse_api_body(&body)
}

pub(super) fn parse_api_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

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
}
