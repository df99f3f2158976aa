//! Top-level error for the binary's commands.

use crate::config::ConfigError;
use crate::coord::CoordError;
use crate::node::NodeError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Coord(#[from] CoordError),
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// A retry may succeed (coordinator or node unreachable).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Coord(e) => e.is_retryable(),
            Error::Node(NodeError::Timeout | NodeError::Refused | NodeError::Io(_)) => true,
            _ => false,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
