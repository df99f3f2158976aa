//! Who may call `/v1/*`: bearer token or basic auth (Alertmanager `http_config`), compared in
//! constant time. Failures say only "missing or wrong credentials" and never log headers.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine as _;
use subtle::ConstantTimeEq;

use super::{error, App};
use crate::config::{Loaded, Secret};
use crate::service::supervisor::Reconciler;
use crate::throttle::Throttle;

static REJECTED_AUTH: Throttle = Throttle::new();

/// How incoming webhook and API calls authenticate (Alertmanager `http_config`).
#[derive(Clone, Default)]
pub struct Auth {
    pub bearer: Option<Secret>,
    pub basic: Option<(String, Secret)>,
    pub allow_unauthenticated: bool,
    /// `webhook.read_only_token`: may `GET` the page and the API, never `POST` (see [`super::page::access`]).
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

pub(super) async fn authenticate<R: Reconciler>(
    State(app): State<Arc<App<R>>>,
    req: Request,
    next: Next,
) -> Response {
    let access = super::page::access(&app.auth, req.method(), req.headers());
    if let super::page::Access::Forbidden(why) = access {
        return error(StatusCode::FORBIDDEN, why);
    }
    if access == super::page::Access::Denied {
        if let Some(suppressed) = REJECTED_AUTH.check() {
            tracing::warn!(path = %req.uri().path(), suppressed, "rejected request: missing or wrong credentials");
        }
        let mut r = error(StatusCode::UNAUTHORIZED, "missing or wrong credentials");
        let challenge = if app.auth.bearer.is_some()
            && !super::page::prompts_for_basic(&app.auth, req.uri().path(), req.headers())
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

#[cfg(test)]
mod tests {
    use super::*;

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
