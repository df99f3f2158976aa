//! The status page: `GET /` (every cluster at a glance) and `GET /clusters/{name}` (topology,
//! record, pause, cooldown, timeline, current plan), plus the one JSON endpoint the page needs
//! beyond the operator API: `GET /v1/clusters/{name}/plan` ("what would happen now").
//!
//! The HTML, CSS and JS are embedded in the binary (no CDN, no build step). The page holds no
//! data: its script polls the JSON API every 2 s with the browser's own credentials, and
//! builds the DOM with `textContent` only (no HTML from data). Actions (pause/resume) call the
//! existing `POST /v1/pause` and `/v1/resume`, so they are audited exactly like API calls.
//!
//! Access ([`access`]): the full webhook/API credentials may do everything; the read-only token
//! (`webhook.read_only_token`, as `Bearer` or as basic auth with user [`READ_ONLY_USER`], which
//! is what a browser's login prompt sends) may only `GET`/`HEAD`. A `POST` whose `Origin`
//! names another host than the request's `Host` is refused: a browser sends basic credentials
//! with cross-site form posts, so without this another site could pause a cluster.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine as _;
use serde::Serialize;
use subtle::ConstantTimeEq;

use super::{error, App, Auth};
use crate::config::{Loaded, Policy};
use crate::decide::{decide, Candidate, Gate, Plan, Trigger};
use crate::model::{Addr, Observation, Role, TopologyRecord};
use crate::reconcile::now_unix;
use crate::service::supervisor::Reconciler;

/// The basic-auth user name under which a browser presents the read-only token.
pub const READ_ONLY_USER: &str = "read-only";

/// How the page polls the API (documented on the page and in the README).
pub const REFRESH: Duration = Duration::from_secs(2);

const INDEX_HTML: &str = include_str!("page/index.html");
const APP_JS: &str = include_str!("page/app.js");
const STYLE_CSS: &str = include_str!("page/style.css");

/// What a request's credentials allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Granted,
    /// No or wrong credentials: 401.
    Denied,
    /// Valid credentials that may not do this: 403 with the reason.
    Forbidden(&'static str),
}

/// Decide access for one request (used by the `/v1/*` and page auth middleware).
pub fn access(auth: &Auth, method: &Method, headers: &HeaderMap) -> Access {
    let reads = method == Method::GET || method == Method::HEAD;
    if !reads && cross_site(headers) {
        return Access::Forbidden("cross-site request refused (Origin does not match Host)");
    }
    if auth.check(headers) {
        return Access::Granted;
    }
    if read_only_ok(auth, headers) {
        return if reads {
            Access::Granted
        } else {
            Access::Forbidden("read-only credentials may only read (GET)")
        };
    }
    Access::Denied
}

/// The challenge for a 401: a browser only prompts for (and only re-sends cached) `Basic`
/// credentials, so the page's paths and the browser's own API calls (`Sec-Fetch-Mode` is sent
/// by browsers only) ask for it whenever basic credentials (full or read-only) can be used.
/// Other API clients keep the `Bearer` challenge.
pub fn prompts_for_basic(auth: &Auth, path: &str, headers: &HeaderMap) -> bool {
    let page_path = path == "/" || path.starts_with("/clusters/") || path.starts_with("/page/");
    let browser = headers.contains_key("sec-fetch-mode");
    (page_path || browser) && (auth.basic.is_some() || auth.read_only.is_some())
}

/// True if the read-only token is presented (bearer, or basic with [`READ_ONLY_USER`]).
fn read_only_ok(auth: &Auth, headers: &HeaderMap) -> bool {
    let Some(tok) = &auth.read_only else {
        return false;
    };
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let (scheme, cred) = value.trim().split_once(' ').unwrap_or((value, ""));
    let cred = cred.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return bool::from(cred.as_bytes().ct_eq(tok.expose().as_bytes()));
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(cred) else {
            return false;
        };
        let Some(colon) = raw.iter().position(|&b| b == b':') else {
            return false;
        };
        let ok_u = raw[..colon].ct_eq(READ_ONLY_USER.as_bytes());
        let ok_p = raw[colon + 1..].ct_eq(tok.expose().as_bytes());
        return bool::from(ok_u & ok_p);
    }
    false
}

/// A browser's `Origin` naming another host:port than `Host`. No `Origin` (curl,
/// Alertmanager, the CLI) is not cross-site.
fn cross_site(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let authority = origin.split_once("://").map_or(origin, |(_, rest)| rest);
    !authority.eq_ignore_ascii_case(host)
}

/// What the page needs from the config.
#[derive(Clone, Debug)]
pub struct PageConfig {
    policy: Policy,
    /// Per cluster: (has a node password, `rename_commands` normalised).
    clusters: BTreeMap<String, (bool, BTreeMap<String, String>)>,
}

impl PageConfig {
    pub fn from_loaded(l: &Loaded) -> PageConfig {
        let clusters = l
            .config
            .clusters
            .iter()
            .map(|c| {
                let has_password = l.password(&c.name).is_some_and(|p| !p.expose().is_empty());
                (c.name.clone(), (has_password, c.renames()))
            })
            .collect();
        PageConfig {
            policy: l.config.policy.clone(),
            clusters,
        }
    }
}

/// The page's routes (merged into the authenticated `/v1` router).
pub fn routes<R: Reconciler>() -> Router<Arc<App<R>>> {
    Router::new()
        .route("/", get(html))
        .route("/clusters/{cluster}", get(html))
        .route("/page/app.js", get(js))
        .route("/page/style.css", get(css))
        .route("/v1/clusters/{cluster}/plan", get(plan::<R>))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut r = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

async fn html() -> Response {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn css() -> Response {
    asset("text/css; charset=utf-8", STYLE_CSS)
}

/// One step of the current plan with the exact commands it may send.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct StepView {
    pub text: String,
    pub commands: Vec<String>,
}

/// One configured node as the page draws it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct NodeView {
    pub addr: Addr,
    /// Lag in bytes behind its master (the one lag rule, [`Observation::lag_of`]).
    pub lag_bytes: Option<u64>,
    /// Could be promoted right now, from its own status ([`crate::model::NodeObservation::promotion_eligible`]).
    pub promotion_eligible: bool,
    /// Position among the ranked candidates (1 = would be promoted), if it is one.
    pub rank: Option<usize>,
    /// Why it would not be promoted (from the ranking), if excluded.
    pub excluded: Option<String>,
    /// Reachable, says `role:master`, and is not the recorded master: the split brain.
    pub claims_master_against_record: bool,
    /// How it disagrees with the record, as a sentence (none if it agrees or is unknown).
    pub disagrees: Option<String>,
}

/// `GET /v1/clusters/{name}/plan`.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct PlanView {
    pub cluster: String,
    /// Unix seconds when this was computed.
    pub now: u64,
    /// The plan a periodic check would make now from the last observation; `None` before the
    /// first observation.
    pub plan: Option<Plan>,
    pub steps: Vec<StepView>,
    /// The promotion ranking: the plan's own candidates, or (when the plan ranks none) the
    /// ranking a switchover to the best replica would use.
    pub ranking: Vec<Candidate>,
    pub ranking_basis: &'static str,
    pub nodes: Vec<NodeView>,
    /// Unix seconds until which automatic failovers are blocked (`policy.cooldown`), if now.
    pub cooldown_until: Option<u64>,
    pub note: &'static str,
}

const NOTE: &str = "computed from the poller's last observation as a periodic check would; the service's own reconcile observes again and also measures lag against the master's last seen offset";

/// The pure part of the plan endpoint (unit-tested).
pub fn plan_view(
    cluster: &str,
    obs: Option<&Observation>,
    record: Option<&TopologyRecord>,
    policy: &Policy,
    paused: bool,
    now: u64,
    commands: &dyn Fn(&crate::decide::Step) -> Vec<String>,
) -> PlanView {
    let cooldown_until = record
        .and_then(|r| r.last_failover_at)
        .map(|t| t.saturating_add(policy.cooldown.as_secs()))
        .filter(|until| *until > now);
    let Some(obs) = obs else {
        return PlanView {
            cluster: cluster.to_string(),
            now,
            plan: None,
            steps: Vec::new(),
            ranking: Vec::new(),
            ranking_basis: "none",
            nodes: Vec::new(),
            cooldown_until,
            note: NOTE,
        };
    };
    let gate = Gate {
        now,
        paused,
        last_master_offset: None,
        ..Gate::default()
    };
    let plan = decide(&Trigger::Periodic, obs, record, policy, &gate);
    let steps = plan
        .steps(obs, policy)
        .iter()
        .map(|s| StepView {
            text: s.to_string(),
            commands: commands(s),
        })
        .collect();
    let (ranking, ranking_basis) = if !plan.candidates.is_empty() {
        (plan.candidates.clone(), "plan")
    } else {
        let sw = decide(
            &Trigger::Switchover { to: None },
            obs,
            record,
            policy,
            &gate,
        );
        (sw.candidates, "switchover")
    };
    let mut rank = 0;
    let ranks: BTreeMap<&Addr, (Option<usize>, Option<String>)> = ranking
        .iter()
        .map(|c| {
            let r = if c.excluded.is_none() {
                rank += 1;
                Some(rank)
            } else {
                None
            };
            (&c.addr, (r, c.excluded.clone()))
        })
        .collect();
    let nodes = obs
        .nodes
        .iter()
        .map(|n| {
            let s = n.reachable();
            let recorded = record.map(|r| &r.master);
            let is_recorded = recorded == Some(&n.addr);
            let claims = s.is_some_and(|s| s.role == Role::Master);
            let claims_against = claims && recorded.is_some() && !is_recorded;
            let disagrees = match (s, recorded) {
                (Some(_), Some(m)) if claims_against => Some(format!(
                    "claims master, but the record names {m} (epoch {})",
                    record.map_or(0, |r| r.epoch)
                )),
                (Some(s), Some(_)) if is_recorded && s.role != Role::Master => Some(format!(
                    "recorded master, but reports role {}",
                    s.role.as_str()
                )),
                (Some(s), Some(m)) if !is_recorded && s.role.is_replica() => match &s.master {
                    Some(x) if x != m => Some(format!("follows {x}, the record names {m}")),
                    None => Some(format!("replica of no master; the record names {m}")),
                    _ => None,
                },
                _ => None,
            };
            let (rank, excluded) = ranks.get(&n.addr).cloned().unwrap_or((None, None));
            NodeView {
                addr: n.addr.clone(),
                lag_bytes: s.and_then(|s| obs.lag_of(&n.addr, s)),
                promotion_eligible: n.promotion_eligible(),
                rank,
                excluded,
                claims_master_against_record: claims_against,
                disagrees,
            }
        })
        .collect();
    PlanView {
        cluster: cluster.to_string(),
        now,
        plan: Some(plan),
        steps,
        ranking,
        ranking_basis,
        nodes,
        cooldown_until,
        note: NOTE,
    }
}

async fn plan<R: Reconciler>(
    State(app): State<Arc<App<R>>>,
    Path(cluster): Path<String>,
) -> Response {
    let (Some(state), Some((has_password, renames))) = (
        app.supervisor.cluster_state(&cluster),
        app.page.clusters.get(&cluster),
    ) else {
        return error(StatusCode::NOT_FOUND, format!("unknown cluster {cluster}"));
    };
    let snap = app.supervisor.reconciler().snapshot(&cluster).await;
    let commands = |s: &crate::decide::Step| s.commands_renamed(*has_password, renames);
    // The shared pause (stored in the coordinator) counts as much as this instance's own.
    let shared_pause = app
        .supervisor
        .reconciler()
        .controls()
        .await
        .is_ok_and(|c| c.pause_for(&cluster, now_unix()).is_some());
    let view = plan_view(
        &cluster,
        snap.observation.as_ref(),
        snap.record.as_ref(),
        &app.page.policy,
        state.effectively_paused || shared_pause,
        now_unix(),
        &commands,
    );
    Json(view).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use crate::model::{Engine, LinkState, NodeObservation, NodeStatus};

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.insert(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        m
    }

    fn basic(u: &str, p: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
        )
    }

    #[test]
    fn read_only_token_reads_but_never_posts() {
        let auth = Auth {
            bearer: Some(Secret::new("full")),
            read_only: Some(Secret::new("viewer-tok")),
            ..Auth::default()
        };
        let ro = headers(&[(header::AUTHORIZATION, "Bearer viewer-tok")]);
        let ro_basic = headers(&[(header::AUTHORIZATION, &basic(READ_ONLY_USER, "viewer-tok"))]);
        let full = headers(&[(header::AUTHORIZATION, "Bearer full")]);
        assert_eq!(access(&auth, &Method::GET, &ro), Access::Granted);
        assert_eq!(access(&auth, &Method::GET, &ro_basic), Access::Granted);
        assert!(matches!(
            access(&auth, &Method::POST, &ro),
            Access::Forbidden(_)
        ));
        assert!(matches!(
            access(&auth, &Method::POST, &ro_basic),
            Access::Forbidden(_)
        ));
        assert_eq!(access(&auth, &Method::POST, &full), Access::Granted);
        let wrong_user = headers(&[(header::AUTHORIZATION, &basic("admin", "viewer-tok"))]);
        assert_eq!(access(&auth, &Method::GET, &wrong_user), Access::Denied);
        let wrong = headers(&[(header::AUTHORIZATION, "Bearer viewer-tok2")]);
        assert_eq!(access(&auth, &Method::GET, &wrong), Access::Denied);
        assert_eq!(
            access(&auth, &Method::GET, &HeaderMap::new()),
            Access::Denied
        );
        // Without a read-only token configured, nothing changes.
        let plain = Auth {
            bearer: Some(Secret::new("full")),
            ..Auth::default()
        };
        assert_eq!(access(&plain, &Method::GET, &ro), Access::Denied);
        assert!(!format!("{auth:?}").contains("viewer-tok"));
    }

    #[test]
    fn cross_site_posts_are_refused_same_origin_ones_pass() {
        let auth = Auth {
            bearer: Some(Secret::new("full")),
            ..Auth::default()
        };
        let post = |origin: Option<&str>| {
            let mut h = headers(&[
                (header::AUTHORIZATION, "Bearer full"),
                (header::HOST, "127.0.0.1:9655"),
            ]);
            if let Some(o) = origin {
                h.insert(header::ORIGIN, HeaderValue::from_str(o).unwrap());
            }
            access(&auth, &Method::POST, &h)
        };
        assert_eq!(post(None), Access::Granted);
        assert_eq!(post(Some("http://127.0.0.1:9655")), Access::Granted);
        assert!(matches!(
            post(Some("https://evil.example")),
            Access::Forbidden(_)
        ));
        assert!(matches!(
            post(Some("http://127.0.0.1:9656")),
            Access::Forbidden(_)
        ));
    }

    #[test]
    fn browsers_get_a_basic_challenge_other_clients_keep_bearer() {
        let with_ro = Auth {
            bearer: Some(Secret::new("full")),
            read_only: Some(Secret::new("ro")),
            ..Auth::default()
        };
        let none = HeaderMap::new();
        let browser = headers(&[(header::HeaderName::from_static("sec-fetch-mode"), "cors")]);
        assert!(prompts_for_basic(&with_ro, "/", &none));
        assert!(prompts_for_basic(&with_ro, "/clusters/main", &none));
        assert!(prompts_for_basic(&with_ro, "/v1/clusters", &browser));
        assert!(!prompts_for_basic(&with_ro, "/v1/clusters", &none));
        assert!(!prompts_for_basic(&with_ro, "/v1/alerts", &none));
        let bearer_only = Auth {
            bearer: Some(Secret::new("full")),
            ..Auth::default()
        };
        assert!(!prompts_for_basic(&bearer_only, "/", &browser));
    }

    #[test]
    fn unauthenticated_demo_mode_still_refuses_cross_site_posts() {
        let open = Auth {
            allow_unauthenticated: true,
            ..Auth::default()
        };
        let h = headers(&[
            (header::HOST, "127.0.0.1:9655"),
            (header::ORIGIN, "http://evil.invalid"),
        ]);
        assert!(matches!(
            access(&open, &Method::POST, &h),
            Access::Forbidden(_)
        ));
        assert_eq!(access(&open, &Method::GET, &h), Access::Granted);
    }

    fn status(role: Role, master: Option<&Addr>, offset: u64) -> NodeStatus {
        NodeStatus {
            engine: Engine::Redis,
            version: None,
            role,
            master: master.cloned(),
            link: master.map(|_| LinkState::Up),
            db_links: BTreeMap::new(),
            db_offsets: BTreeMap::new(),
            offset: Some(offset),
            replid: Some("r1".into()),
            eligible: None,
            priority: None,
            connected_replicas: 0,
            replicas: Vec::new(),
            psync: None,
        }
    }

    fn node(addr: &Addr, s: Result<NodeStatus, String>) -> NodeObservation {
        NodeObservation {
            addr: addr.clone(),
            priority: 100,
            never_promote: false,
            status: s,
        }
    }

    #[test]
    fn a_node_claiming_master_against_the_record_is_marked_and_the_plan_demotes_it() {
        let (a, b, c) = (
            Addr::new("127.0.0.1", 7000),
            Addr::new("127.0.0.1", 7001),
            Addr::new("127.0.0.1", 7002),
        );
        let obs = Observation {
            cluster: "main".into(),
            nodes: vec![
                node(&a, Ok(status(Role::Master, None, 100))),
                node(&b, Ok(status(Role::Master, None, 120))),
                node(&c, Ok(status(Role::Slave, Some(&b), 120))),
            ],
        };
        let rec = TopologyRecord {
            master: b.clone(),
            replicas: vec![a.clone(), c.clone()],
            epoch: 2,
            updated_at: 1000,
            last_failover_at: Some(1000),
            reason: "failover".into(),
            pending: None,
        };
        let policy = Policy::default();
        let cmds = |s: &crate::decide::Step| s.commands(false);
        let v = plan_view("main", Some(&obs), Some(&rec), &policy, false, 1010, &cmds);
        let plan = v.plan.as_ref().unwrap();
        assert_eq!(plan.action.label(), "demote", "{plan:?}");
        assert!(v.steps.iter().any(|s| s
            .commands
            .iter()
            .any(|c| c.contains("SLAVEOF 127.0.0.1 7001"))));
        let rogue = &v.nodes[0];
        assert!(rogue.claims_master_against_record);
        assert!(rogue.disagrees.as_deref().unwrap().contains("epoch 2"));
        assert!(!v.nodes[1].claims_master_against_record);
        assert_eq!(v.nodes[1].disagrees, None);
        assert_eq!(v.nodes[2].disagrees, None);
        assert_eq!(v.cooldown_until, Some(1000 + policy.cooldown.as_secs()));
        // Long after the cooldown: none.
        let later = plan_view(
            "main",
            Some(&obs),
            Some(&rec),
            &policy,
            false,
            u64::MAX / 2,
            &cmds,
        );
        assert_eq!(later.cooldown_until, None);
        // Paused: the plan says so and nothing would run.
        let paused = plan_view("main", Some(&obs), Some(&rec), &policy, true, 1010, &cmds);
        assert!(paused.steps.is_empty());
        assert!(paused.plan.unwrap().reason.contains("paused"));
    }

    #[test]
    fn converged_cluster_ranks_replicas_as_for_a_switchover() {
        let (a, b, c) = (
            Addr::new("127.0.0.1", 7000),
            Addr::new("127.0.0.1", 7001),
            Addr::new("127.0.0.1", 7002),
        );
        let obs = Observation {
            cluster: "main".into(),
            nodes: vec![
                node(&a, Ok(status(Role::Master, None, 100))),
                node(&b, Ok(status(Role::Slave, Some(&a), 100))),
                node(&c, Err("connection refused".into())),
            ],
        };
        let rec = TopologyRecord {
            master: a.clone(),
            replicas: vec![b.clone(), c.clone()],
            epoch: 1,
            updated_at: 1000,
            last_failover_at: None,
            reason: "bootstrap".into(),
            pending: None,
        };
        let cmds = |s: &crate::decide::Step| s.commands(false);
        let v = plan_view(
            "main",
            Some(&obs),
            Some(&rec),
            &Policy::default(),
            false,
            1010,
            &cmds,
        );
        assert_eq!(v.plan.as_ref().unwrap().action.label(), "no_action");
        assert_eq!(v.ranking_basis, "switchover");
        assert_eq!(v.nodes[1].rank, Some(1));
        assert_eq!(v.nodes[1].lag_bytes, Some(0));
        assert_eq!(v.nodes[2].rank, None);
        assert!(v.nodes[2]
            .excluded
            .as_deref()
            .unwrap()
            .contains("unreachable"));
        assert_eq!(v.cooldown_until, None);
        let none = plan_view(
            "main",
            None,
            Some(&rec),
            &Policy::default(),
            false,
            1,
            &cmds,
        );
        assert!(none.plan.is_none());
    }
}
