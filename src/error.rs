//! The top-level error, the one exit-code table of the binary, and a metric label per error kind.

use crate::config::ConfigError;
use crate::coord::CoordError;
use crate::node::NodeError;

/// The process exit codes of every subcommand (documented in the README). The one table:
/// errors ([`Error::exit`]), reconcile outcomes and `status` reports all map into it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Applied, nothing to do, or all healthy.
    Ok,
    /// Refused, failed, the lock is held by another instance, or (`status`) needs attention.
    NotDone,
    /// Bad config or usage (clap also exits 2 on bad arguments).
    Usage,
    /// Coordinator unreachable or too few observations: retrying may help.
    Retry,
}

impl Exit {
    pub fn code(self) -> i32 {
        match self {
            Exit::Ok => 0,
            Exit::NotDone => 1,
            Exit::Usage => 2,
            Exit::Retry => 3,
        }
    }

    /// A reconcile's outcome: applied, nothing to do or a dry run is fine; a retryable outcome
    /// is `Retry`; anything else (refused, failed, lock held, plan changed) is `NotDone`.
    pub fn of_outcome(out: &crate::reconcile::Outcome) -> Exit {
        use crate::reconcile::Result_;
        if out.retryable {
            return Exit::Retry;
        }
        match out.result {
            Result_::NoAction | Result_::Applied | Result_::DryRun => Exit::Ok,
            _ => Exit::NotDone,
        }
    }

    /// A plan shown by `plan`: a refusal is `NotDone` (or `Retry`), anything else is fine.
    pub fn of_plan(plan: &crate::decide::Plan) -> Exit {
        match plan.action {
            crate::decide::Action::Refuse { retryable } => Exit::not_done(retryable),
            _ => Exit::Ok,
        }
    }

    /// `status`: healthy is `Ok`, anything that needs attention is `NotDone`.
    pub fn of_health(ok: bool) -> Exit {
        if ok {
            Exit::Ok
        } else {
            Exit::NotDone
        }
    }

    /// `Retry` if a retry may help, else `NotDone`.
    pub fn not_done(retryable: bool) -> Exit {
        if retryable {
            Exit::Retry
        } else {
            Exit::NotDone
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Coord(#[from] CoordError),
    #[error(transparent)]
    Node(#[from] NodeError),
    /// The command names something the config does not have (a cluster, a node).
    #[error("{0}")]
    Usage(String),
    /// The command ran and refused to act (the text says why and what to do).
    #[error("{0}")]
    Refused(String),
    /// Another instance holds the cluster's lock.
    #[error("not acting: the lock is held by {0}")]
    LockHeld(String),
    /// The lock was lost between taking it and writing.
    #[error("not acting: the lock is no longer held (fencing token changed or expired)")]
    LockLost,
    /// A compare-and-set found another version: someone wrote concurrently.
    #[error("the record changed concurrently; re-run")]
    Conflict,
    #[error(transparent)]
    Demo(#[from] crate::cli::demo::DemoError),
    #[error(transparent)]
    Events(#[from] crate::service::events::EventsError),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// A local resource (listener, runtime, file) could not be set up.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// A retry may succeed (coordinator or node unreachable, a concurrent write).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Coord(e) => e.is_retryable(),
            Error::Node(NodeError::Timeout | NodeError::Refused | NodeError::Io(_)) => true,
            Error::Conflict => true,
            _ => false,
        }
    }

    /// Where this error lands in the exit-code table.
    pub fn exit(&self) -> Exit {
        match self {
            Error::Config(_)
            | Error::Usage(_)
            | Error::Demo(_)
            | Error::Events(_)
            | Error::Io { .. } => Exit::Usage,
            _ => Exit::not_done(self.is_retryable()),
        }
    }

    pub fn exit_code(&self) -> i32 {
        self.exit().code()
    }

    /// A short, bounded label for metrics and logs (no text from the error itself).
    pub fn label(&self) -> &'static str {
        match self {
            Error::Config(_) => "config",
            Error::Coord(e) if e.is_retryable() => "coordinator_unreachable",
            Error::Coord(_) => "coordinator",
            Error::Node(_) => "node",
            Error::Usage(_) => "usage",
            Error::Refused(_) => "refused",
            Error::LockHeld(_) => "lock_held",
            Error::LockLost => "lock_lost",
            Error::Conflict => "conflict",
            Error::Demo(_) => "demo",
            Error::Events(_) => "events_file",
            Error::Json(_) => "json",
            Error::Io { .. } => "io",
        }
    }

    pub fn io(what: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_table() {
        assert_eq!(Error::Usage("x".into()).exit_code(), 2);
        assert_eq!(Error::Refused("x".into()).exit_code(), 1);
        assert_eq!(Error::LockHeld("b".into()).exit_code(), 1);
        assert_eq!(Error::Conflict.exit_code(), 3);
        assert_eq!(
            Error::Coord(CoordError::Unreachable("x".into())).exit_code(),
            3
        );
        assert_eq!(Error::Conflict.label(), "conflict");
    }
}
