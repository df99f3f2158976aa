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
//! - [`ops`]: operator commands (plan, failover, switchover, demote, record) over `reconcile`.
//! - [`demo`]: `make demo`: 3 local redis-servers, a writer, kill -9 and restart, with a timeline.
//! - [`app`]: wiring for `serve`: coordinator, node clients, poller, periodic check, HTTP.
//! - [`status`]: the `status` command: observe every cluster once, render a table or JSON.
//! - [`alert`]: Alertmanager webhook payloads (v4): parsing, mapping alerts to cluster triggers, `AlertInfo`.
//! - [`supervisor`]: single-flight per cluster, coalesced follow-ups, pause, the `Reconciler` seam.
//! - [`events`]: the audit trail (ring + JSON-lines file + coordinator sink).
//! - [`http`]: the axum router and `serve` (accept loop, shutdown); [`http::auth`] credentials;
//!   [`http::webhook`] `POST /v1/alerts`; `api` the operator API; `health` `/healthz` `/readyz`
//!   `/metrics`; `body` content type and body limits; `conn` one connection (timeouts, linger);
//!   [`http::route`] the per-node health checks for HAProxy (`/v1/route/…`).
//! - [`metrics`]: the `/metrics` exporter: the registration table (`Metrics`), event counters,
//!   encoders; `series` label sets and per-cluster series sets; `project` observation → series;
//!   `classic` the text 0.0.4 re-encoder.
//! - [`poller`]: the polling task that feeds `metrics` and keeps the last observation per cluster.
//! - [`notify`]: alerts to the operator's Alertmanager (API v2) after remediations and refusals.
//! - [`error`]: the top-level error with `is_retryable`.
//! - [`throttle`]: rate-limited log lines for messages that can repeat at request rate.
//! - [`tls`]: the one TLS stack (rustls + ring) for etcd and Consul.

pub mod alert;
pub mod app;
pub mod config;
pub mod coord;
pub mod decide;
pub mod demo;
pub mod error;
pub mod events;
pub mod http;
pub mod metrics;
pub mod model;
pub mod node;
pub mod notify;
pub mod observe;
pub mod ops;
pub mod poller;
pub mod reconcile;
pub mod status;
pub mod supervisor;
pub mod throttle;
pub mod tls;
