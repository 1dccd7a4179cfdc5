//! The API's one error type and how every library error maps onto it.

use arc_eventlog::{ExecuteError, LogError};
use arc_events::aggregate::app::AppError;
use arc_events::aggregate::participant::ParticipantError;
use arc_events::aggregate::room::RoomError;
use arc_events::aggregate::track::TrackError;
use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An error as the API reports it: `{"error": {"code", "message"}}`.
#[derive(Debug)]
pub struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: &'static str,
    pub(crate) message: String,
    /// For 429: which quota was hit.
    pub(crate) limit: Option<&'static str>,
    /// For 202: the write is in the log at this position, and the resource
    /// to poll for it (see [`ApiError::pending`]).
    pub(crate) pending: Option<(u64, String)>,
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), limit: None, pending: None }
    }

    pub(crate) fn bad_request(field: &str, message: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_argument", format!("{field}: {message}"))
    }

    pub(crate) fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    pub(crate) fn unauthenticated(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }

    pub(crate) fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }

    pub(crate) fn quota(limit: &'static str, max: i64) -> Self {
        Self {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: "quota_exceeded",
            message: format!("the app's quota {limit} = {max} is reached"),
            limit: Some(limit),
            pending: None,
        }
    }

    /// Not an error: `202 Accepted`. The write is in the log (at `position`)
    /// but this instance's read models have not applied it yet, so the
    /// answer cannot show the result without guessing: poll `location`.
    /// Never a 404 or 500 for something the request created.
    pub(crate) fn pending(position: u64, location: &str) -> Self {
        Self {
            status: StatusCode::ACCEPTED,
            code: "pending",
            message: format!(
                "accepted at log position {position}; the read models here have not applied it yet: poll {location}"
            ),
            limit: None,
            pending: Some((position, location.to_owned())),
        }
    }

    pub(crate) fn internal(what: &str) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", what.to_owned())
    }
}

/// Every error answer: `{"error": {"code", "message"}}`.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorBody {
    pub(crate) error: ErrorDetail,
}

/// What went wrong.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ErrorDetail {
    /// Stable, machine-readable: e.g. `invalid_argument`, `unauthenticated`,
    /// `token_expired`, `permission_denied`, `room_not_found`, `conflict`,
    /// `quota_exceeded`, `log_unavailable`.
    pub(crate) code: &'static str,
    /// For people; a 400's message starts with the offending field.
    pub(crate) message: String,
    /// Only with `quota_exceeded`: which quota (`max_rooms`,
    /// `max_participants_per_room`, `max_participants`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) limit: Option<&'static str>,
}

/// The body of a `202 Accepted`: the write is in the log, not yet readable here.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct PendingBody {
    pub(crate) pending: PendingDetail,
}

/// Where the write is and where to look for its result.
#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct PendingDetail {
    /// The log position of the write (also in the `Arc-Position` header).
    pub(crate) position: u64,
    /// The resource to poll (also in `Location`).
    pub(crate) location: String,
    pub(crate) message: String,
}

/// The header carrying a write's log position.
pub(crate) const POSITION_HEADER: &str = "arc-position";

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Some((position, location)) = self.pending {
            let body =
                PendingBody { pending: PendingDetail { position, location: location.clone(), message: self.message } };
            let mut response = (StatusCode::ACCEPTED, Json(body)).into_response();
            let h = response.headers_mut();
            if let Ok(v) = header::HeaderValue::from_str(&location) {
                h.insert(header::LOCATION, v);
            }
            h.insert(POSITION_HEADER, header::HeaderValue::from(position));
            h.insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            return response;
        }
        let status = self.status;
        let body = ErrorBody { error: ErrorDetail { code: self.code, message: self.message, limit: self.limit } };
        let mut response = (status, Json(body)).into_response();
        if matches!(status, StatusCode::SERVICE_UNAVAILABLE | StatusCode::CONFLICT) {
            response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<LogError> for ApiError {
    fn from(e: LogError) -> Self {
        match e {
            LogError::Unavailable(_) => Self::new(StatusCode::SERVICE_UNAVAILABLE, "log_unavailable", e.to_string()),
            LogError::Conflict { .. } => Self::new(StatusCode::CONFLICT, "conflict", e.to_string()),
            LogError::Invalid(_) | LogError::TooLarge { .. } => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_argument", e.to_string())
            }
            LogError::Corrupt { .. } | LogError::Backend(_) => {
                tracing::error!(error = %e, "event log failure");
                Self::internal("the event log failed")
            }
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        tracing::error!(error = %e, "read model query failed");
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "read_model_unavailable", "the read-model database failed")
    }
}

/// How an aggregate's refusal maps onto HTTP.
pub(crate) trait Rejection: std::error::Error {
    fn to_api(&self) -> ApiError;
}

impl Rejection for RoomError {
    fn to_api(&self) -> ApiError {
        let m = self.to_string();
        match self {
            Self::NotFound => ApiError::not_found("room_not_found", m),
            Self::AlreadyExists => ApiError::new(StatusCode::CONFLICT, "room_exists", m),
            Self::Closed => ApiError::new(StatusCode::CONFLICT, "room_closed", m),
            Self::Full { .. } => ApiError::new(StatusCode::TOO_MANY_REQUESTS, "room_full", m),
            Self::QuotaReached { max } => ApiError::quota("max_participants_per_room", i64::from(*max)),
            Self::Invalid { field, reason } => ApiError::bad_request(field, reason),
        }
    }
}

impl Rejection for AppError {
    fn to_api(&self) -> ApiError {
        let m = self.to_string();
        match self {
            Self::NotFound => ApiError::not_found("app_not_found", m),
            Self::AlreadyExists => ApiError::new(StatusCode::CONFLICT, "app_exists", m),
            Self::Invalid { field, reason } => ApiError::bad_request(field, reason),
        }
    }
}

impl Rejection for TrackError {
    fn to_api(&self) -> ApiError {
        let m = self.to_string();
        match self {
            Self::NotFound => ApiError::not_found("track_not_found", m),
            Self::AlreadyPublished | Self::Unpublished => ApiError::new(StatusCode::CONFLICT, "track_unpublished", m),
        }
    }
}

impl Rejection for ParticipantError {
    fn to_api(&self) -> ApiError {
        match self {
            Self::Invalid { field, reason } => ApiError::bad_request(field, reason),
        }
    }
}

impl Rejection for arc_events::aggregate::node::NodeError {
    fn to_api(&self) -> ApiError {
        let m = self.to_string();
        match self {
            Self::NotRegistered => ApiError::not_found("node_not_found", m),
            Self::Lost => ApiError::new(StatusCode::CONFLICT, "node_lost", m),
            Self::Invalid { .. } => ApiError::new(StatusCode::BAD_REQUEST, "invalid_argument", m),
        }
    }
}

impl<E: Rejection> From<ExecuteError<E>> for ApiError {
    fn from(e: ExecuteError<E>) -> Self {
        match e {
            ExecuteError::Rejected(r) => r.to_api(),
            ExecuteError::Contended { .. } => Self::new(StatusCode::CONFLICT, "contended", e.to_string()),
            ExecuteError::Log(l) => l.into(),
            ExecuteError::Encode(_) => {
                tracing::error!(error = %e, "encoding an event failed");
                Self::internal("could not encode the event")
            }
        }
    }
}

/// Where a media node could not be reached, as HTTP.
pub(crate) fn route_error(e: crate::media::RouteError) -> ApiError {
    use crate::media::RouteError;
    match e {
        RouteError::NoNode => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "no_media_node", "no media node is available for this room")
        }
        RouteError::Unreachable(node, why) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "media_node_unreachable",
            format!("media node {node} did not answer: {why}"),
        ),
        RouteError::Db(e) => e.into(),
    }
}

/// A media node's refusal, as HTTP.
pub(crate) fn node_error(e: &arc_nodeproto::SessionError) -> ApiError {
    let (status, code) = crate::media::session_error_status(e);
    ApiError::new(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), code, e.to_string())
}

/// A webhook store failure, as HTTP.
fn webhook_error(e: arc_webhooks::WebhookError) -> ApiError {
    match e {
        arc_webhooks::WebhookError::NotFound => ApiError::not_found("delivery_not_found", "delivery not found"),
        arc_webhooks::WebhookError::NotDead => {
            ApiError::new(StatusCode::CONFLICT, "delivery_not_dead", "only dead-lettered deliveries can be redelivered")
        }
        arc_webhooks::WebhookError::Log(e) => e.into(),
        other => {
            tracing::error!(error = %other, "webhook store failed");
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "webhooks_unavailable", "the webhook store failed")
        }
    }
}

/// Every use case's failure, as HTTP (the one mapping).
impl From<crate::usecase::UseCaseError> for ApiError {
    fn from(e: crate::usecase::UseCaseError) -> Self {
        use crate::usecase::UseCaseError as E;
        match e {
            E::Invalid { field, reason } => Self::bad_request(field, reason),
            E::NotFound { code, message } => Self::not_found(code, message),
            E::Forbidden { code, message } => Self::forbidden(code, message),
            E::Quota { limit, max } => Self::quota(limit, max),
            e @ E::Behind { .. } => Self::new(StatusCode::SERVICE_UNAVAILABLE, "behind", e.to_string()),
            e @ E::SessionReplaced { .. } => Self::new(StatusCode::CONFLICT, "session_replaced", e.to_string()),
            E::RoomRefused(e) => e.to_api(),
            E::Room(e) => e.into(),
            E::App(e) => e.into(),
            E::Participant(e) => e.into(),
            E::Track(e) => e.into(),
            E::NodeCommand(e) => e.into(),
            E::Route(e) => route_error(e),
            E::Node(e) => node_error(&e),
            E::Log(e) => e.into(),
            E::Webhook(e) => webhook_error(e),
            E::Db(e) => e.into(),
            E::Internal(what) => {
                tracing::error!(what, "internal error");
                Self::internal(&what)
            }
        }
    }
}
