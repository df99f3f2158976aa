//! pika-remedy: failover and old-master demotion for Pika (and Redis) master/replica
//! clusters. Alerts are hints; decisions come from our own observations.
//!
//! # Layout (one concept per module)
//! - [`model`]: plain data: `Addr`, `NodeStatus`, `Observation`, `TopologyRecord`.
//! - [`config`]: the strict TOML config: types here, private `validate` and `load` (secrets from env or file).
//! - [`node`]: the `Nodes` seam; [`node::commands`] builds every wire command (renames, `force`,
//!   password placeholder); [`node::info`] parses INFO; [`node::redis`] sends them over RESP;
//!   `node::kept` the poller's kept connections (plain RESP2 for `AUTH`/`INFO`).
//! - [`controls`]: shared operator controls (pause, node maintenance, cooldown ack), stored in
//!   the coordinator; pure rules plus the compare-and-set `update`.
//! - [`coord`]: the `Coordinator` seam (lock + fencing token + CAS record): `local`, `consul`, `etcd`.
//! - [`observe`]: query all nodes of a cluster concurrently into an `Observation`.
//! - [`decide`]: the pure core: trigger + observation + record + policy → `Plan` → `Step`s
//!   (`rules`: the rule tree, `candidates`: ranking, `steps`: compilation and rendering,
//!   `history`: what the poller saw while the master lived, `loss`: the expected data loss of
//!   a promotion, `sync`: full or partial sync of a follow, `diverged`: what a demotion would
//!   discard, and the snapshot step before it).
//! - [`reconcile`]: the only place that locks and acts; `exec` runs exactly the plan's steps,
//!   `follow` the bounded waits.
//! - [`reconcile::handle`]: `ClusterHandle` (nodes + coordinator + policy), built once for CLI, service, demo; `record` under the lock.
//! - [`cli`]: the binary's front end: clap commands, dispatch, printing (`main.rs` only calls it).
//! - [`cli::ops`]: operator commands (plan, failover, switchover, demote, record) over a `ClusterHandle`.
//! - [`cli::render`]: the text of plans and outcomes.
//! - [`cli::man`]: `pika-remedy man`, the manual page from the clap definitions (shipped by `make deb`).
//! - [`cli::progress`]: live step lines on stderr for failover/switchover/demote (the reconcile's progress hook).
//! - [`cli::status`]: the `status` command: observe every cluster once, render a table or JSON.
//! - [`cli::history`]: the `history` command: records and the events file, read as typed events.
//! - [`cli::demo`]: `make demo`: 3 local redis-servers, a writer, kill -9 and restart, with a timeline.
//! - [`service`]: the long-running `serve`.
//! - [`service::app`]: wiring for `serve`: handles, metrics, audit log, supervisor, poller, HTTP.
//! - [`service::supervisor`]: single-flight per cluster, coalesced follow-ups, pause, the `Reconciler` seam.
//! - [`service::poller`]: the polling task that feeds `metrics` and the one per-cluster cache.
//! - [`service::ownership`]: scale-out: membership in the coordinator, rendezvous ownership of clusters.
//! - [`service::checker`]: the periodic check and the flush of repeated events.
//! - [`service::schedule`]: scheduled switchovers (`switchover --at`): claimed by CAS, run through the supervisor.
//! - [`service::events`]: the audit trail (ring + JSON-lines file + coordinator sink).
//! - [`alert`]: Alertmanager webhook payloads (v4): parsing, mapping alerts to cluster triggers, `AlertInfo`.
//! - [`http`]: the axum router and `serve` (accept loop, shutdown); [`http::auth`] credentials;
//!   [`http::webhook`] `POST /v1/alerts`; `api` the operator API; [`http::page`] the status page;
//!   `health` `/healthz` `/readyz` `/metrics`; `body` content type and body limits; `conn` one
//!   connection (timeouts, linger); [`http::route`] the per-node health checks for HAProxy.
//! - [`metrics`]: the `/metrics` exporter: the registration table (`Metrics`), event counters,
//!   encoders; `series` label sets and per-cluster series sets; `project` observation → series;
//!   `classic` the text 0.0.4 re-encoder.
//! - [`hooks`]: operator commands around failover, switchover and demotion (`[hooks]`): clean
//!   env with `PIKA_REMEDY_*`, timeout, veto, every run in the outcome (so the audit trail).
//! - [`notify`]: alerts to the operator's Alertmanager (API v2) after remediations and refusals.
//! - [`error`]: the top-level error (`is_retryable`, `exit_code`, metric `label`) and the one exit-code table.
//! - [`throttle`]: rate-limited log lines for messages that can repeat at request rate.
//! - [`tls`]: the one TLS stack (rustls + ring) for etcd and Consul.

pub mod alert;
pub mod cli;
pub mod config;
pub mod controls;
pub mod coord;
pub mod decide;
pub mod error;
pub mod hooks;
pub mod http;
pub mod metrics;
pub mod model;
pub mod node;
pub mod notify;
pub mod observe;
pub mod reconcile;
pub mod service;
pub mod throttle;
pub mod tls;
