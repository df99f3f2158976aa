//! Build an `Observation`: ask every configured node concurrently (each call bounded by the
//! node client's own timeouts). Unreachable nodes are kept, with a short error text.

use futures_util::future::join_all;

use crate::config::ClusterConfig;
use crate::model::{NodeObservation, Observation};
use crate::node::Nodes;

pub async fn observe<N: Nodes>(nodes: &N, cluster: &ClusterConfig) -> Observation {
    observe_with(nodes, cluster, false).await
}

/// [`observe`] on the nodes' kept connections ([`Nodes::status_pooled`]): the poller and a
/// reconcile's first look.
pub async fn observe_pooled<N: Nodes>(nodes: &N, cluster: &ClusterConfig) -> Observation {
    observe_with(nodes, cluster, true).await
}

async fn observe_with<N: Nodes>(nodes: &N, cluster: &ClusterConfig, pooled: bool) -> Observation {
    let calls = cluster.nodes.iter().map(|n| async move {
        let status = if pooled {
            nodes.status_pooled(&n.addr).await
        } else {
            nodes.status(&n.addr).await
        };
        let status = status.map_err(|e| e.to_string());
        NodeObservation {
            addr: n.addr.clone(),
            priority: n.priority,
            never_promote: n.never_promote,
            status,
        }
    });
    Observation {
        cluster: cluster.name.clone(),
        nodes: join_all(calls).await,
    }
}
