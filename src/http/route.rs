//! Per-node health endpoints for proxies (Patroni's `/primary` style), checked by HAProxy per
//! server: `GET /v1/route/{cluster}/{node}/master` and `GET /v1/route/{cluster}/{node}/replica`.
//!
//! `master` answers 200 only when, **at the time of the request**:
//! - the topology record names `node` master and carries no write-ahead failover intent
//!   (`pending`: a promotion may be under way, so no node is a safe write target), and
//! - `node` itself answers `INFO` now with `role:master`.
//!
//! `replica` answers 200 only when the record exists, `node` is not the recorded master, and
//! `node` answers `INFO` now as a replica of the recorded master with its link up.
//!
//! Everything else is 503 with a one-line reason (404 for a cluster or node not in the config).
//! Both facts are read per request (the record from the coordinator, `INFO` from the node, in
//! parallel and bounded), never from the poller's last observation: a restarted old master is
//! refused from its first check on, because the record already names the new master, and a
//! master killed a moment ago is refused because it does not answer, whatever the last poll saw.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::App;
use crate::config::ClusterConfig;
use crate::coord::Coordinator;
use crate::model::{Addr, NodeStatus, Role, TopologyRecord};
use crate::node::Nodes;
use crate::service::supervisor::Reconciler;

/// Which route a proxy asks about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteRole {
    Master,
    Replica,
}

impl RouteRole {
    fn parse(s: &str) -> Option<RouteRole> {
        match s {
            "master" | "primary" => Some(RouteRole::Master),
            "replica" => Some(RouteRole::Replica),
            _ => None,
        }
    }
}

/// The answer for one check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouteAnswer {
    /// 200: send traffic of this role to the node.
    Up(String),
    /// 503: do not.
    Down(String),
    /// 404: the cluster or node is not configured.
    Unknown(String),
}

/// Answers a check: (cluster, node, role). Set by the service's wiring (`App::with_route`).
pub type RouteFn = Arc<
    dyn Fn(String, Addr, RouteRole) -> Pin<Box<dyn Future<Output = RouteAnswer> + Send>>
        + Send
        + Sync,
>;

/// The pure rule: the record as read now and the node's `INFO` as answered now.
pub fn evaluate(
    record: Option<&TopologyRecord>,
    node: &Addr,
    live: Result<&NodeStatus, &str>,
    role: RouteRole,
) -> RouteAnswer {
    let Some(rec) = record else {
        return RouteAnswer::Down("no topology record".into());
    };
    if let Some(p) = &rec.pending {
        return RouteAnswer::Down(format!(
            "a failover to {p} is in progress (epoch {})",
            rec.epoch
        ));
    }
    let status = match live {
        Ok(s) => s,
        Err(e) => return RouteAnswer::Down(format!("{node} does not answer: {e}")),
    };
    match role {
        RouteRole::Master => {
            if rec.master != *node {
                RouteAnswer::Down(format!(
                    "the record names {} master at epoch {}",
                    rec.master, rec.epoch
                ))
            } else if status.role != Role::Master {
                RouteAnswer::Down(format!(
                    "{node} is the recorded master but reports role:{}",
                    status.role.as_str()
                ))
            } else {
                RouteAnswer::Up(format!("master at epoch {}", rec.epoch))
            }
        }
        RouteRole::Replica => {
            if rec.master == *node {
                RouteAnswer::Down(format!(
                    "{node} is the recorded master at epoch {}",
                    rec.epoch
                ))
            } else if !status.role.is_replica() {
                RouteAnswer::Down(format!(
                    "{node} reports role:{} (not a replica)",
                    status.role.as_str()
                ))
            } else if !status.follows_with_link_up(&rec.master) {
                RouteAnswer::Down(format!(
                    "{node} does not follow the recorded master {} with its link up",
                    rec.master
                ))
            } else {
                RouteAnswer::Up(format!("replica of {} at epoch {}", rec.master, rec.epoch))
            }
        }
    }
}

/// The live checker: reads the record and the node's `INFO` per request, both within `bound`.
pub fn checker<N, C>(
    coord: Arc<C>,
    nodes: BTreeMap<String, Arc<N>>,
    clusters: Vec<ClusterConfig>,
    bound: Duration,
) -> RouteFn
where
    N: Nodes + 'static,
    C: Coordinator + 'static,
{
    let clusters = Arc::new(clusters);
    let nodes = Arc::new(nodes);
    Arc::new(move |cluster: String, node: Addr, role: RouteRole| {
        let (coord, nodes, clusters) = (
            Arc::clone(&coord),
            Arc::clone(&nodes),
            Arc::clone(&clusters),
        );
        Box::pin(async move {
            let Some(cfg) = clusters.iter().find(|c| c.name == cluster) else {
                return RouteAnswer::Unknown(format!("unknown cluster {cluster}"));
            };
            if !cfg.nodes.iter().any(|n| n.addr == node) {
                return RouteAnswer::Unknown(format!("{node} is not a node of cluster {cluster}"));
            }
            let Some(client) = nodes.get(&cluster) else {
                return RouteAnswer::Unknown(format!("unknown cluster {cluster}"));
            };
            let work = async { tokio::join!(coord.read_record(&cluster), client.status(&node)) };
            let Ok((record, status)) = tokio::time::timeout(bound, work).await else {
                return RouteAnswer::Down(format!(
                    "no answer within {}",
                    humantime::format_duration(bound)
                ));
            };
            let record = match record {
                Ok(r) => r.map(|v| v.value),
                Err(e) => return RouteAnswer::Down(format!("cannot read the record: {e}")),
            };
            let err = status.as_ref().err().map(|e| e.to_string());
            let live = match (&status, &err) {
                (Ok(s), _) => Ok(s),
                (Err(_), Some(e)) => Err(e.as_str()),
                (Err(_), None) => Err("error"),
            };
            evaluate(record.as_ref(), &node, live, role)
        })
    })
}

/// `GET /v1/route/{cluster}/{node}/{role}`: 200 / 503 / 404 with a one-line reason.
pub(super) async fn check<R: Reconciler>(
    State(app): State<Arc<App<R>>>,
    Path((cluster, node, role)): Path<(String, String, String)>,
) -> Response {
    let Some(role) = RouteRole::parse(&role) else {
        return (
            StatusCode::NOT_FOUND,
            "unknown role (master, primary or replica)\n",
        )
            .into_response();
    };
    let Ok(addr) = node.parse::<Addr>() else {
        return (StatusCode::NOT_FOUND, "node must be host:port\n").into_response();
    };
    let Some(route) = app.route.get() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "routing checks are not wired in this process\n",
        )
            .into_response();
    };
    match route(cluster, addr, role).await {
        RouteAnswer::Up(why) => (StatusCode::OK, format!("{why}\n")).into_response(),
        RouteAnswer::Down(why) => {
            (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")).into_response()
        }
        RouteAnswer::Unknown(why) => (StatusCode::NOT_FOUND, format!("{why}\n")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Engine, LinkState};

    fn a(p: u16) -> Addr {
        Addr::new("127.0.0.1", p)
    }

    fn rec(master: u16, pending: Option<u16>) -> TopologyRecord {
        TopologyRecord {
            master: a(master),
            replicas: vec![],
            epoch: 3,
            updated_at: 1,
            last_failover_at: None,
            reason: String::new(),
            pending: pending.map(a),
        }
    }

    fn status(role: Role, master: Option<u16>, link: Option<LinkState>) -> NodeStatus {
        NodeStatus {
            engine: Engine::Redis,
            version: None,
            role,
            master: master.map(a),
            link,
            db_links: Default::default(),
            db_offsets: Default::default(),
            offset: None,
            replid: None,
            eligible: None,
            priority: None,
            connected_replicas: 0,
            replicas: vec![],
            psync: None,
        }
    }

    fn up(x: &RouteAnswer) -> bool {
        matches!(x, RouteAnswer::Up(_))
    }

    #[test]
    fn master_needs_record_and_live_role() {
        let m = status(Role::Master, None, None);
        let r = rec(1, None);
        assert!(up(&evaluate(Some(&r), &a(1), Ok(&m), RouteRole::Master)));
        // A restarted old master says role:master, but the record names another node.
        let x = evaluate(Some(&r), &a(2), Ok(&m), RouteRole::Master);
        assert_eq!(
            x,
            RouteAnswer::Down("the record names 127.0.0.1:1 master at epoch 3".into())
        );
        // The recorded master does not answer (killed a moment ago).
        assert!(!up(&evaluate(
            Some(&r),
            &a(1),
            Err("connection refused"),
            RouteRole::Master
        )));
        // No record, or a failover intent: nobody is a write target.
        assert!(!up(&evaluate(None, &a(1), Ok(&m), RouteRole::Master)));
        let p = rec(1, Some(2));
        assert!(!up(&evaluate(Some(&p), &a(1), Ok(&m), RouteRole::Master)));
        // Recorded master that demoted itself (or was repointed by hand).
        let s = status(Role::Slave, Some(2), Some(LinkState::Up));
        assert!(!up(&evaluate(Some(&r), &a(1), Ok(&s), RouteRole::Master)));
    }

    #[test]
    fn replica_needs_a_link_to_the_recorded_master() {
        let r = rec(1, None);
        let good = status(Role::Slave, Some(1), Some(LinkState::Up));
        assert!(up(&evaluate(
            Some(&r),
            &a(2),
            Ok(&good),
            RouteRole::Replica
        )));
        let down = status(Role::Slave, Some(1), Some(LinkState::Down));
        assert!(!up(&evaluate(
            Some(&r),
            &a(2),
            Ok(&down),
            RouteRole::Replica
        )));
        let wrong = status(Role::Slave, Some(3), Some(LinkState::Up));
        assert!(!up(&evaluate(
            Some(&r),
            &a(2),
            Ok(&wrong),
            RouteRole::Replica
        )));
        let claims = status(Role::Master, None, None);
        assert!(!up(&evaluate(
            Some(&r),
            &a(2),
            Ok(&claims),
            RouteRole::Replica
        )));
        // The recorded master is never a replica target.
        assert!(!up(&evaluate(
            Some(&r),
            &a(1),
            Ok(&good),
            RouteRole::Replica
        )));
    }

    #[test]
    fn roles_parse() {
        assert_eq!(RouteRole::parse("master"), Some(RouteRole::Master));
        assert_eq!(RouteRole::parse("primary"), Some(RouteRole::Master));
        assert_eq!(RouteRole::parse("replica"), Some(RouteRole::Replica));
        assert_eq!(RouteRole::parse("slave"), None);
    }
}
