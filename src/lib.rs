//! pika-remedy: failover and old-master demotion for Pika (and Redis) master/replica
//! clusters. Alerts are hints; decisions come from our own observations.
//!
//! # Layout (one concept per module)
//! - [`model`]: plain data: `Addr`, `NodeStatus`, `Observation`, `TopologyRecord`.
//! - [`config`]: the strict TOML config: types here, private `validate` and `load` (secrets from env or file).
//! - [`node`]: the `Nodes` seam; [`node::info`] parses INFO; [`node::redis`] talks RESP via the `redis` crate.
//! - [`coord`]: the `Coordinator` seam (lock + fencing token + CAS record): `local`, `consul`, `etcd`.
//! - [`observe`]: query all nodes of a cluster concurrently into an `Observation`.
//! - [`decide`]: the pure core: trigger + observation + record + policy → `Plan` → `Step`s.
//! - [`reconcile`]: the only place that locks and acts.
//! - [`reconcile::handle`]: `ClusterHandle` (nodes + coordinator + policy), built once for CLI, service, demo; `record` under the lock.
//! - [`cli`]: the binary's front end: clap commands, dispatch, printing (`main.rs` only calls it).
//! - [`cli::ops`]: operator commands (plan, failover, switchover, demote, record) over a `ClusterHandle`.
//! - [`cli::render`]: the text of plans and outcomes.
//! - [`cli::status`]: the `status` command: observe every cluster once, render a table or JSON.
//! - [`cli::history`]: the `history` command: records and the events file, read as typed events.
//! - [`cli::demo`]: `make demo`: 3 local redis-servers, a writer, kill -9 and restart, with a timeline.
//! - [`service`]: the long-running `serve`.
//! - [`service::app`]: wiring for `serve`: handles, metrics, audit log, supervisor, poller, HTTP.
//! - [`service::supervisor`]: single-flight per cluster, coalesced follow-ups, pause, the `Reconciler` seam.
//! - [`service::poller`]: the polling task that feeds `metrics` and the one per-cluster cache.
//! - [`service::checker`]: the periodic check and the flush of repeated events.
//! - [`service::events`]: the audit trail (ring + JSON-lines file + coordinator sink).
//! - [`alert`]: Alertmanager webhook payloads (v4): parsing, mapping alerts to cluster triggers.
//! - [`http`]: the axum router (webhook, operator API, health, metrics) and `serve`.
//! - [`metrics`]: the `/metrics` exporter (`Metrics` over a prometheus-client registry).
//! - [`error`]: the top-level error (`is_retryable`, `exit_code`, metric `label`) and the one exit-code table.
//! - [`throttle`]: rate-limited log lines for messages that can repeat at request rate.
//! - [`tls`]: the one TLS stack (rustls + ring) for etcd and Consul.

pub mod alert;
pub mod cli;
pub mod config;
pub mod coord;
pub mod decide;
pub mod error;
pub mod http;
pub mod metrics;
pub mod model;
pub mod node;
pub mod observe;
pub mod reconcile;
pub mod service;
pub mod throttle;
pub mod tls;

// Old paths of the service's modules, kept while the other front ends move their imports.
pub use service::{events, poller, supervisor};
