//! Errors of the event log.

use arc_events::AggregateRef;
use thiserror::Error;

/// Why an append or a read failed.
#[derive(Debug, Error)]
pub enum LogError {
    /// The aggregate moved on since the caller read it (optimistic concurrency).
    #[error("conflict on {aggregate}: expected last seq {expected}, actual {actual}")]
    Conflict { aggregate: AggregateRef, expected: u64, actual: u64 },
    /// The request is malformed (empty batch, events of another aggregate, …).
    #[error("invalid append: {0}")]
    Invalid(String),
    /// The batch exceeds the log's limits.
    #[error("append too large: {what} is {actual}, at most {max}")]
    TooLarge { what: &'static str, actual: usize, max: usize },
    /// The backend cannot be reached or timed out; retrying later may succeed.
    #[error("event log unavailable: {0}")]
    Unavailable(String),
    /// A stored record cannot be read back.
    #[error("corrupt record at {position}: {reason}")]
    Corrupt { position: u64, reason: String },
    /// The backend failed in a way that retrying will not fix.
    #[error("event log backend failed: {0}")]
    Backend(String),
}

impl From<sqlx::Error> for LogError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                Self::Unavailable(e.to_string())
            }
            other => Self::Backend(other.to_string()),
        }
    }
}

/// Why a command could not be executed.
#[derive(Debug, Error)]
pub enum ExecuteError<E: std::error::Error + 'static> {
    /// The aggregate refused the command.
    #[error(transparent)]
    Rejected(E),
    /// Other writers kept winning the race; give up for now.
    #[error("{aggregate} is contended: gave up after {attempts} conflicting attempts")]
    Contended { aggregate: AggregateRef, attempts: u32 },
    /// The log failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// An event could not be encoded (a bug).
    #[error(transparent)]
    Encode(#[from] arc_events::EncodeError),
}
