//! The long-running service (`serve`): wiring, the per-cluster supervisor, the poller, the
//! periodic checker and the audit trail.

pub mod app;
pub mod checker;
pub mod events;
pub mod ownership;
pub mod poller;
pub mod schedule;
pub mod supervisor;
