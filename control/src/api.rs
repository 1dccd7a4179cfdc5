//! The HTTP API (axum): health, status, rooms and nodes, and the status page.
//!
//! Handlers parse input, send a command through a [`Repository`] (writes) or
//! query a read model (reads); no business rule lives here. Every error is
//! JSON `{"error": {"code", "message"}}` with a fitting status, mapped in one
//! place ([`ApiError`]).

use std::sync::Arc;
use std::time::Instant;

use arc_eventlog::{EventLog, ExecuteError, LogError, Repository};
use arc_events::aggregate::room::{Room, RoomCommand, RoomError};
use arc_events::room::LeaveReason;
use arc_events::{
    Actor, AggregateKind, AggregateRef, AppId, CommandMeta, NodeId, ParticipantIdentity, ParticipantSid, RoomId,
};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::projection::{Checkpoint, nodes, rooms};
use crate::readdb::ReadDb;

/// Largest request body accepted.
pub const BODY_BYTES_MAX: usize = 256 * 1024;
/// Most rooms returned by one list call.
pub const PAGE_MAX: i64 = 500;

/// What handlers share.
#[derive(Debug)]
pub struct ApiState {
    pub log: Arc<dyn EventLog>,
    pub db: ReadDb,
    pub rooms: Repository<Room>,
    pub admin_key: String,
    pub started: Instant,
    pub projections: Vec<(&'static str, watch::Receiver<Checkpoint>)>,
}

/// The router.
pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/", get(status_page))
        .route("/healthz", get(|| async { "ok" }))
        .route("/v1/status", get(status))
        .route("/v1/rooms", get(list_rooms).post(create_room))
        .route("/v1/rooms/{room_id}", get(get_room))
        .route("/v1/rooms/{room_id}/close", post(close_room))
        .route("/v1/rooms/{room_id}/participants", post(join_room))
        .route("/v1/rooms/{room_id}/participants/{identity}", delete(leave_room))
        .route("/v1/nodes", get(list_nodes))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint") })
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
        .with_state(state)
}

/// An error as the API reports it.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }

    fn bad_request(field: &str, message: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_argument", format!("{field}: {message}"))
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: ErrorDetail { code: self.code, message: &self.message } };
        let mut response = (self.status, Json(body)).into_response();
        if matches!(self.status, StatusCode::SERVICE_UNAVAILABLE | StatusCode::CONFLICT) {
            response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
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
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the event log failed")
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

impl From<ExecuteError<RoomError>> for ApiError {
    fn from(e: ExecuteError<RoomError>) -> Self {
        match e {
            ExecuteError::Rejected(r) => match r {
                RoomError::NotFound => Self::new(StatusCode::NOT_FOUND, "room_not_found", r.to_string()),
                RoomError::AlreadyExists => Self::new(StatusCode::CONFLICT, "room_exists", r.to_string()),
                RoomError::Closed => Self::new(StatusCode::CONFLICT, "room_closed", r.to_string()),
                RoomError::Full { .. } => Self::new(StatusCode::TOO_MANY_REQUESTS, "room_full", r.to_string()),
                RoomError::Invalid { field, reason } => Self::bad_request(field, reason),
            },
            ExecuteError::Contended { .. } => Self::new(StatusCode::CONFLICT, "contended", e.to_string()),
            ExecuteError::Log(l) => l.into(),
            ExecuteError::Encode(_) => {
                tracing::error!(error = %e, "encoding an event failed");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "could not encode the event")
            }
        }
    }
}

type ApiResult<T> = Result<T, ApiError>;

fn require_admin(state: &ApiState, headers: &HeaderMap) -> ApiResult<()> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", "send Authorization: Bearer <admin key>")
        })?;
    if !constant_time_eq(presented.as_bytes(), state.admin_key.as_bytes()) {
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", "the admin key is wrong"));
    }
    Ok(())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> ApiResult<T> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request("body", e))
}

fn meta() -> CommandMeta {
    CommandMeta::new(Actor::Admin, chrono::Utc::now())
}

fn room_ref(room_id: &str) -> ApiResult<AggregateRef> {
    AggregateRef::new(AggregateKind::Room, room_id).map_err(|e| ApiError::bad_request("room_id", e))
}

fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map(|t| t.to_rfc3339()).unwrap_or_default()
}

/// A room as the API shows it.
#[derive(Debug, Serialize)]
pub struct RoomDto {
    pub room_id: String,
    pub app_id: String,
    pub name: String,
    pub state: String,
    pub max_participants: Option<i64>,
    pub empty_timeout_s: i64,
    pub metadata: Option<String>,
    pub participant_count: i64,
    pub created_at: String,
    pub closed_at: Option<String>,
    pub close_reason: Option<String>,
}

impl From<rooms::RoomRow> for RoomDto {
    fn from(r: rooms::RoomRow) -> Self {
        Self {
            room_id: r.room_id,
            app_id: r.app_id,
            name: r.name,
            state: r.state,
            max_participants: r.max_participants,
            empty_timeout_s: r.empty_timeout_s,
            metadata: r.metadata,
            participant_count: r.participant_count,
            created_at: iso(r.created_at_ms),
            closed_at: r.closed_at_ms.map(iso),
            close_reason: r.close_reason,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRoom {
    app_id: String,
    name: String,
    #[serde(default)]
    room_id: Option<String>,
    #[serde(default)]
    max_participants: Option<u32>,
    #[serde(default)]
    empty_timeout_s: Option<u32>,
    #[serde(default)]
    metadata: Option<String>,
}

async fn create_room(State(state): State<Arc<ApiState>>, headers: HeaderMap, body: Bytes) -> ApiResult<Response> {
    require_admin(&state, &headers)?;
    let req: CreateRoom = parse_body(&body)?;
    let app_id = AppId::parse(&req.app_id).map_err(|e| ApiError::bad_request("app_id", e))?;
    let room_id = match &req.room_id {
        Some(id) => RoomId::parse(id).map_err(|e| ApiError::bad_request("room_id", e))?,
        None => RoomId::generate(),
    };
    let aggregate = room_ref(room_id.as_str())?;
    let command = RoomCommand::Create {
        app_id,
        name: req.name,
        max_participants: req.max_participants,
        empty_timeout_s: req.empty_timeout_s,
        metadata: req.metadata,
    };
    let done = state.rooms.execute(&aggregate, &command, &meta()).await?;
    let body = serde_json::json!({
        "room_id": room_id,
        "state": "open",
        "seq": done.seq,
        "position": done.appended.map(|a| a.last.0),
    });
    Ok((StatusCode::CREATED, [(header::LOCATION, format!("/v1/rooms/{room_id}"))], Json(body)).into_response())
}

async fn close_room(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(room_id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    require_admin(&state, &headers)?;
    let done = state.rooms.execute(&room_ref(&room_id)?, &RoomCommand::Close, &meta()).await?;
    Ok(Json(serde_json::json!({ "room_id": room_id, "state": "closed", "seq": done.seq })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JoinRoom {
    identity: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    node_id: Option<String>,
}

async fn join_room(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(room_id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    require_admin(&state, &headers)?;
    let req: JoinRoom = parse_body(&body)?;
    let identity = ParticipantIdentity::parse(&req.identity).map_err(|e| ApiError::bad_request("identity", e))?;
    let node_id =
        req.node_id.as_deref().map(NodeId::parse).transpose().map_err(|e| ApiError::bad_request("node_id", e))?;
    let sid = ParticipantSid::generate();
    let command = RoomCommand::Join { identity: identity.clone(), sid: sid.clone(), name: req.name, node_id };
    let done = state.rooms.execute(&room_ref(&room_id)?, &command, &meta()).await?;
    let body = serde_json::json!({ "room_id": room_id, "identity": identity, "sid": sid, "seq": done.seq });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

#[derive(Debug, Deserialize)]
struct LeaveQuery {
    sid: String,
}

async fn leave_room(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path((room_id, identity)): Path<(String, String)>,
    Query(q): Query<LeaveQuery>,
) -> ApiResult<Json<serde_json::Value>> {
    require_admin(&state, &headers)?;
    let identity = ParticipantIdentity::parse(&identity).map_err(|e| ApiError::bad_request("identity", e))?;
    let sid = ParticipantSid::parse(&q.sid).map_err(|e| ApiError::bad_request("sid", e))?;
    let command = RoomCommand::Leave { identity, sid, reason: LeaveReason::ClientLeft };
    let done = state.rooms.execute(&room_ref(&room_id)?, &command, &meta()).await?;
    Ok(Json(serde_json::json!({ "room_id": room_id, "seq": done.seq, "left": !done.events.is_empty() })))
}

async fn get_room(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(room_id): Path<String>,
) -> ApiResult<Json<RoomDto>> {
    require_admin(&state, &headers)?;
    room_ref(&room_id)?;
    let sql = format!("SELECT {} FROM rooms WHERE room_id = $1", rooms::COLUMNS.join(", "));
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(&room_id).fetch_optional(&state.db.pool).await?;
    let row = row.ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "room_not_found", "room not found"))?;
    Ok(Json(rooms::from_row(&row)?.into()))
}

#[derive(Debug, Deserialize)]
struct ListRooms {
    app_id: Option<String>,
    state: Option<String>,
    limit: Option<i64>,
    after: Option<String>,
}

async fn list_rooms(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Query(q): Query<ListRooms>,
) -> ApiResult<Json<serde_json::Value>> {
    require_admin(&state, &headers)?;
    if let Some(s) = &q.state
        && s != "open"
        && s != "closed"
    {
        return Err(ApiError::bad_request("state", "must be open or closed"));
    }
    let limit = q.limit.unwrap_or(100);
    if !(1..=PAGE_MAX).contains(&limit) {
        return Err(ApiError::bad_request("limit", format!("must be 1..={PAGE_MAX}")));
    }
    let sql = format!(
        "SELECT {} FROM rooms WHERE ($1 = '' OR app_id = $1) AND ($2 = '' OR state = $2) AND room_id > $3 \
         ORDER BY room_id LIMIT $4",
        rooms::COLUMNS.join(", ")
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(q.app_id.unwrap_or_default())
        .bind(q.state.unwrap_or_default())
        .bind(q.after.unwrap_or_default())
        .bind(limit)
        .fetch_all(&state.db.pool)
        .await?;
    let rooms: Vec<RoomDto> =
        rows.iter().map(rooms::from_row).collect::<Result<Vec<_>, _>>()?.into_iter().map(Into::into).collect();
    let next = (rooms.len() as i64 == limit).then(|| rooms.last().map(|r| r.room_id.clone())).flatten();
    Ok(Json(serde_json::json!({ "rooms": rooms, "next_after": next })))
}

/// A node as the API shows it.
#[derive(Debug, Serialize)]
pub struct NodeDto {
    pub node_id: String,
    pub address: String,
    pub public_ips: serde_json::Value,
    pub arch: String,
    pub cores: i64,
    pub capacity: i64,
    pub version: String,
    pub state: String,
    pub registered_at: String,
    pub last_seen_at: String,
    pub sessions: i64,
    pub tracks: i64,
    pub bits_in_per_s: i64,
    pub bits_out_per_s: i64,
    pub cpu_percent: f64,
}

async fn list_nodes(State(state): State<Arc<ApiState>>, headers: HeaderMap) -> ApiResult<Json<serde_json::Value>> {
    require_admin(&state, &headers)?;
    let sql = format!("SELECT {} FROM nodes ORDER BY node_id LIMIT 1000", nodes::COLUMNS.join(", "));
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(&state.db.pool).await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let n = nodes::from_row(row)?;
        out.push(NodeDto {
            public_ips: serde_json::from_str(&n.public_ips).unwrap_or(serde_json::Value::Null),
            node_id: n.node_id,
            address: n.address,
            arch: n.arch,
            cores: n.cores,
            capacity: n.capacity,
            version: n.version,
            state: n.state,
            registered_at: iso(n.registered_at_ms),
            last_seen_at: iso(n.last_seen_ms),
            sessions: n.sessions,
            tracks: n.tracks,
            bits_in_per_s: n.bits_in_per_s,
            bits_out_per_s: n.bits_out_per_s,
            cpu_percent: n.cpu_percent,
        });
    }
    Ok(Json(serde_json::json!({ "nodes": out })))
}

/// Public health and progress figures (no ids, no secrets).
#[derive(Debug, Serialize)]
pub struct StatusDto {
    pub version: &'static str,
    pub log_backend: &'static str,
    pub log_head: u64,
    pub uptime_s: u64,
    pub projections: Vec<ProjectionStatus>,
    pub rooms_open: i64,
    pub nodes_up: i64,
}

/// One projection's progress.
#[derive(Debug, Serialize)]
pub struct ProjectionStatus {
    pub name: &'static str,
    pub position: u64,
    pub events: u64,
    pub caught_up: bool,
}

async fn status(State(state): State<Arc<ApiState>>) -> ApiResult<Json<StatusDto>> {
    let head = state.log.head().await?;
    let rooms_open: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM rooms WHERE state = 'open'").fetch_one(&state.db.pool).await?;
    let nodes_up: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM nodes WHERE state IN ('up', 'draining')")
        .fetch_one(&state.db.pool)
        .await?;
    let projections = state
        .projections
        .iter()
        .map(|(name, rx)| {
            let c = *rx.borrow();
            ProjectionStatus { name, position: c.position.0, events: c.events, caught_up: c.position >= head }
        })
        .collect();
    Ok(Json(StatusDto {
        version: env!("CARGO_PKG_VERSION"),
        log_backend: state.log.backend(),
        log_head: head.0,
        uptime_s: state.started.elapsed().as_secs(),
        projections,
        rooms_open,
        nodes_up,
    }))
}

async fn status_page() -> Html<&'static str> {
    Html(include_str!("status.html"))
}
