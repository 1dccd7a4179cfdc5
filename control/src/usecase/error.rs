//! Why a use case failed, in the application's terms (no HTTP here: the API
//! maps each variant to a status in one place, `api/error.rs`).

use arc_eventlog::{ExecuteError, LogError};
use arc_events::aggregate::app::AppError;
use arc_events::aggregate::node::NodeError;
use arc_events::aggregate::participant::ParticipantError;
use arc_events::aggregate::room::RoomError;
use arc_events::aggregate::track::TrackError;
use arc_nodeproto::SessionError;

use crate::media::RouteError;

/// A use case's failure.
#[derive(Debug, thiserror::Error)]
pub enum UseCaseError {
    /// An input is malformed or out of bounds.
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// What was named does not exist (or is not the caller's to see).
    #[error("{message}")]
    NotFound { code: &'static str, message: String },
    /// Not allowed (a disabled app, a missing grant).
    #[error("{message}")]
    Forbidden { code: &'static str, message: String },
    /// An app quota is reached.
    #[error("the app's quota {limit} = {max} is reached")]
    Quota { limit: &'static str, max: i64 },
    /// The read models here lag the log, so a strict quota cannot be checked now.
    #[error(
        "the read models here have not reached log position {head} yet, so the app's quota cannot be checked; retry"
    )]
    Behind { head: u64 },
    /// A newer session of the same identity joined while this one was set up.
    #[error("a newer session of {identity:?} joined the room while this one was being set up")]
    SessionReplaced { identity: String },
    /// A room rule refused the command before anything was written.
    #[error(transparent)]
    RoomRefused(RoomError),
    #[error(transparent)]
    Room(#[from] ExecuteError<RoomError>),
    #[error(transparent)]
    App(#[from] ExecuteError<AppError>),
    #[error(transparent)]
    Participant(#[from] ExecuteError<ParticipantError>),
    #[error(transparent)]
    Track(#[from] ExecuteError<TrackError>),
    #[error(transparent)]
    NodeCommand(#[from] ExecuteError<NodeError>),
    /// No media node for the room, or it did not answer.
    #[error(transparent)]
    Route(#[from] RouteError),
    /// The media node refused the session.
    #[error(transparent)]
    Node(SessionError),
    #[error(transparent)]
    Log(#[from] LogError),
    /// The webhook deliveries' store refused or failed.
    #[error(transparent)]
    Webhook(#[from] arc_webhooks::WebhookError),
    #[error("read models: {0}")]
    Db(#[from] sqlx::Error),
    /// Something that cannot happen with consistent data (a stored id that does not parse).
    #[error("internal: {0}")]
    Internal(String),
}

impl UseCaseError {
    pub(crate) fn invalid(field: &'static str, reason: impl std::fmt::Display) -> Self {
        Self::Invalid { field, reason: reason.to_string() }
    }

    pub(crate) fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::NotFound { code, message: message.into() }
    }

    pub(crate) fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::Forbidden { code, message: message.into() }
    }

    pub(crate) fn internal(what: impl Into<String>) -> Self {
        Self::Internal(what.into())
    }
}

/// A use case's result.
pub type UseCaseResult<T> = Result<T, UseCaseError>;
