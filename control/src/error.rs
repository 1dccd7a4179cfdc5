//! Errors of the control plane library.

use thiserror::Error;

/// What can go wrong in the control plane.
#[derive(Debug, Error)]
pub enum ControlError {
    /// The configuration is unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// A backing service (log, database) cannot be reached.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The event log failed.
    #[error(transparent)]
    Log(#[from] arc_eventlog::LogError),
    /// A read-model query failed.
    #[error("read model: {0}")]
    Db(#[from] sqlx::Error),
}
