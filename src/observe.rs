//! Build an `Observation`: ask every configured node concurrently (each call bounded by the
//! node client's own timeouts). Unreachable nodes are kept, with a short error text.

use futures_util::future::join_all;

use crate::config::ClusterConfig;
use crate::model::{NodeObservation, Observation};
use crate::node::Nodes;

pub async fn observe<N: Nodes>(nodes: &N, cluster: &ClusterConfig) -> Observation {
    let calls = cluster.nodes.iter().map(|n| async move {
        let status = nodes.status(&n.addr).await.map_err(|e| e.to_string());
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
