//! pika-remedy: failover and old-master demotion for Pika (and Redis) master/replica
//! clusters. Alerts are hints; decisions come from our own observations.
//!
//! # Layout (one concept per module)
//! - [`model`]: plain data: `Addr`, `NodeStatus`, `Observation`, `TopologyRecord`.
//! - [`config`]: the strict TOML config, validation, secrets from env or file.
//! - [`node`]: the `Nodes` seam; [`node::info`] parses INFO; [`node::redis`] talks RESP via the `redis` crate.
//! - [`coord`]: the `Coordinator` seam (lock + fencing token + CAS record): `local`, `consul`, `etcd`.
//! - [`observe`]: query all nodes of a cluster concurrently into an `Observation`.
//! - [`decide`]: the pure core: trigger + observation + record + policy → `Plan` → `Step`s.
//! - [`reconcile`]: the only place that locks and acts.
//! - [`reconcile::handle`]: `ClusterHandle` (nodes + coordinator + policy), built once for CLI, service, demo.
//! - [`cli`]: the binary's commands (clap) and exit codes; [`cli::ops`] (plan, failover,
//!   switchover, demote, record), [`cli::render`], [`cli::status`], [`cli::history`], [`cli::demo`].
//! - [`service`]: `serve`: [`service::app`] wiring, [`service::supervisor`], [`service::poller`],
//!   [`service::checker`] (periodic check), [`service::events`] (the audit trail).
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
