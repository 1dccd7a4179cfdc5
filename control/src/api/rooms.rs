//! Rooms, participants and tracks: create, list, close, join with a token,
//! kick, permissions, metadata, mute.

use std::sync::Arc;

use arc_auth::token::Claims;
use arc_eventlog::ExecuteError;
use arc_events::aggregate::app::AppCommand;
use arc_events::aggregate::participant::ParticipantCommand;
use arc_events::aggregate::room::{RoomCommand, RoomError, RoomStatus};
use arc_events::aggregate::track::TrackCommand;
use arc_events::participant::Permissions;
use arc_events::room::{LeaveReason, ParticipantJoined};
use arc_events::track::MutedBy;
use arc_events::{AggregateKind, AggregateRef, AppId, NodeId, ParticipantIdentity, ParticipantSid, RoomId};
use arc_nodeproto::NodeRequest;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};

use super::apps::usage;
use super::auth::{Principal, authenticate, bearer_token, load_app, verify_token};
use super::error::{ApiError, ApiResult, ErrorBody, PendingBody};
use super::{ApiState, check_limit, iso, meta, parse_body};
use crate::projection::apps::AppRow;
use crate::projection::participants::{self, ParticipantRow};
use crate::projection::rooms::{self, RoomRow};
use crate::projection::tracks::{self, TrackRow};

/// The room id of an app's room name: rooms are addressed by name within
/// their app, so the id is derived (`rm_` + 32 hex of SHA-256), never stored
/// in a lookup table.
pub fn room_id_for(app_id: &AppId, name: &str) -> RoomId {
    let digest = Sha256::new().chain_update(app_id.as_str()).chain_update([0u8]).chain_update(name).finalize();
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    // INVARIANT: "rm_" + 32 hex digits is a valid token id.
    RoomId::parse(&format!("rm_{hex}")).unwrap_or_else(|_| RoomId::generate())
}

fn room_ref(room_id: &str) -> ApiResult<AggregateRef> {
    AggregateRef::new(AggregateKind::Room, room_id).map_err(|e| ApiError::bad_request("room_id", e))
}

/// A room as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct RoomDto {
    pub room_id: String,
    pub app_id: String,
    /// Unique among the app's rooms.
    pub name: String,
    /// `open` or `closed`.
    pub state: String,
    pub max_participants: Option<i64>,
    pub empty_timeout_s: i64,
    pub metadata: Option<String>,
    pub participant_count: i64,
    pub created_at: String,
    pub closed_at: Option<String>,
    pub close_reason: Option<String>,
    /// The room's event sequence number the read model reflects.
    pub seq: i64,
}

impl From<RoomRow> for RoomDto {
    fn from(r: RoomRow) -> Self {
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
            seq: r.last_seq,
        }
    }
}

/// A participant session as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ParticipantDto {
    pub sid: String,
    pub room_id: String,
    pub identity: String,
    pub name: Option<String>,
    pub metadata: Option<String>,
    pub permissions: Option<Permissions>,
    pub node_id: Option<String>,
    pub state: String,
    pub left_reason: Option<String>,
    pub joined_at: String,
    pub left_at: Option<String>,
    pub tracks: Vec<TrackDto>,
}

/// A track as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct TrackDto {
    pub track_id: String,
    pub kind: String,
    pub source: String,
    pub codec: String,
    pub simulcast: bool,
    pub muted: bool,
    pub muted_by: Option<String>,
    pub state: String,
    pub published_at: String,
}

impl From<TrackRow> for TrackDto {
    fn from(t: TrackRow) -> Self {
        Self {
            track_id: t.track_id,
            kind: t.kind,
            source: t.source,
            codec: t.codec,
            simulcast: t.simulcast,
            muted: t.muted,
            muted_by: t.muted_by,
            state: t.state,
            published_at: iso(t.published_at_ms),
        }
    }
}

fn participant_dto(p: ParticipantRow, tracks: Vec<TrackDto>) -> ParticipantDto {
    ParticipantDto {
        permissions: p.permissions.as_deref().and_then(|s| serde_json::from_str(s).ok()),
        sid: p.sid,
        room_id: p.room_id,
        identity: p.identity,
        name: p.name,
        metadata: p.metadata,
        node_id: p.node_id,
        state: p.state,
        left_reason: p.left_reason,
        joined_at: iso(p.joined_at_ms),
        left_at: p.left_at_ms.map(iso),
        tracks,
    }
}

async fn load_room(state: &ApiState, room_id: &str) -> ApiResult<Option<RoomRow>> {
    room_ref(room_id)?;
    let sql = format!("SELECT {} FROM rooms WHERE room_id = $1", rooms::COLUMNS.join(", "));
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(room_id).fetch_optional(&state.db.pool).await?;
    Ok(row.map(|r| rooms::from_row(&r)).transpose()?)
}

/// The room, if it exists and the caller may moderate it (404 otherwise, so
/// other apps' room ids are not disclosed).
async fn moderated_room(state: &ApiState, who: &Principal, room_id: &str) -> ApiResult<RoomRow> {
    let room =
        load_room(state, room_id).await?.ok_or_else(|| ApiError::not_found("room_not_found", "room not found"))?;
    who.require_moderator(&room)?;
    Ok(room)
}

async fn active_participant(state: &ApiState, room_id: &str, identity: &str) -> ApiResult<Option<ParticipantRow>> {
    let sql = format!(
        "SELECT {} FROM participants WHERE room_id = $1 AND identity = $2 AND state = 'active' \
         ORDER BY joined_at_ms DESC LIMIT 1",
        participants::COLUMNS.join(", ")
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(room_id).bind(identity).fetch_optional(&state.db.pool).await?;
    Ok(row.map(|r| participants::from_row(&r)).transpose()?)
}

async fn tracks_of(state: &ApiState, sid: &str) -> ApiResult<Vec<TrackDto>> {
    let sql = format!(
        "SELECT {} FROM tracks WHERE sid = $1 AND state = 'published' ORDER BY track_id",
        tracks::COLUMNS.join(", ")
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(sid).fetch_all(&state.db.pool).await?;
    rows.iter().map(|r| tracks::from_row(r).map(Into::into).map_err(Into::into)).collect()
}

fn quota_of(v: Option<i64>) -> Option<i64> {
    v.filter(|v| *v > 0)
}

/// Opens the app's room `name` unless it is open already, within the app's room quota.
pub(crate) async fn ensure_room(
    state: &ApiState,
    who: &Principal,
    app: &AppRow,
    app_id: &AppId,
    create: RoomCommand,
    name: &str,
) -> ApiResult<(RoomId, bool, Option<arc_eventlog::Position>)> {
    let room_id = room_id_for(app_id, name);
    let aggregate = room_ref(room_id.as_str())?;
    // Under `max_rooms`, the app's quota turn (strict across instances),
    // taken before anything is read.
    let _turn = match quota_of(app.max_rooms) {
        Some(_) => Some(super::quota::turn(state, &app.app_id).await?),
        None => None,
    };
    let (current, _) = state.rooms.load(&aggregate).await?;
    if current.status == RoomStatus::Open {
        return Ok((room_id, false, None));
    }
    // Bad input is reported before any quota (decide is pure: this only validates).
    if let Err(e) = arc_events::Aggregate::decide(&current, &create, &arc_events::Context { now: chrono::Utc::now() }) {
        use super::error::Rejection;
        return Err(e.to_api());
    }
    if let Some(max) = quota_of(app.max_rooms)
        && usage(state, &app.app_id).await?.rooms_open >= max
    {
        return Err(ApiError::quota("max_rooms", max));
    }
    match state.rooms.execute(&aggregate, &create, &meta(who.actor())).await {
        Ok(done) => Ok((room_id, true, done.appended.map(|a| a.last))),
        // Someone opened it at the same moment: that is what we wanted.
        Err(ExecuteError::Rejected(RoomError::AlreadyExists)) => Ok((room_id, false, None)),
        Err(e) => Err(e.into()),
    }
}

async fn active_app(state: &ApiState, app_id: &AppId) -> ApiResult<AppRow> {
    let app = load_app(state, app_id.as_str())
        .await?
        .filter(|a| a.state != "deleted")
        .ok_or_else(|| ApiError::not_found("app_not_found", "app not found"))?;
    if app.state == "disabled" {
        return Err(ApiError::forbidden("app_disabled", "the app is disabled"));
    }
    Ok(app)
}

/// A room to open.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateRoom {
    /// Only with the admin key: whose room.
    #[serde(default)]
    app_id: Option<String>,
    /// Unique among the app's open rooms; the room id is derived from it.
    name: String,
    #[serde(default)]
    max_participants: Option<u32>,
    #[serde(default)]
    empty_timeout_s: Option<u32>,
    #[serde(default)]
    metadata: Option<String>,
}

/// Open a room (rooms are also opened by the first join).
#[utoipa::path(post, path = "/v1/rooms", tag = "rooms", request_body = CreateRoom,
    security(("app" = []), ("admin" = [])),
    responses(
        (status = 202, description = "Accepted into the log, but this instance's read models have not applied it yet (e.g. just after a log outage): poll `Location` (the position is in `Arc-Position`)", body = PendingBody),
        (status = 201, description = "Opened", body = RoomDto),
        (status = 400, description = "Bad input (named)", body = ErrorBody),
        (status = 401, description = "No or wrong credentials", body = ErrorBody),
        (status = 403, description = "The app is disabled, or an access token was used", body = ErrorBody),
        (status = 409, description = "A room of that name is open already", body = ErrorBody),
        (status = 429, description = "The app's `max_rooms` quota is reached", body = ErrorBody),
    ))]
pub(crate) async fn create_room(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let who = authenticate(&state, &headers).await?;
    let req: CreateRoom = parse_body(&body)?;
    let app_id = who.app_scope(req.app_id.as_deref())?;
    let app = active_app(&state, &app_id).await?;
    let command = RoomCommand::Create {
        app_id: app_id.clone(),
        name: req.name.clone(),
        max_participants: req.max_participants,
        empty_timeout_s: req.empty_timeout_s,
        metadata: req.metadata,
    };
    let room_id = room_id_for(&app_id, &req.name);
    let (current, _) = state.rooms.load(&room_ref(room_id.as_str())?).await?;
    if current.status == RoomStatus::Open {
        return Err(RoomError::AlreadyExists.into_api());
    }
    let (room_id, _, position) = ensure_room(&state, &who, &app, &app_id, command, &req.name).await?;
    state.settled(position, &format!("/v1/rooms/{room_id}")).await?;
    let room = load_room(&state, room_id.as_str()).await?.map(RoomDto::from);
    Ok((StatusCode::CREATED, [(header::LOCATION, format!("/v1/rooms/{room_id}"))], Json(room)).into_response())
}

trait IntoApi {
    fn into_api(self) -> ApiError;
}
impl IntoApi for RoomError {
    fn into_api(self) -> ApiError {
        use super::error::Rejection;
        self.to_api()
    }
}

/// Get a room.
#[utoipa::path(get, path = "/v1/rooms/{room_id}", tag = "rooms", params(("room_id" = String, Path, description = "The room id (`rm_…`)")), security(("admin" = []), ("app" = []), ("participant" = [])),
    responses(
        (status = 200, description = "The room", body = RoomDto),
        (status = 401, description = "No or wrong credentials, or a rejected token", body = ErrorBody),
        (status = 403, description = "The token lacks the `admin` grant for this room", body = ErrorBody),
        (status = 404, description = "No such room (or not yours)", body = ErrorBody),
    ))]
pub(crate) async fn get_room(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(room_id): Path<String>,
) -> ApiResult<Json<RoomDto>> {
    let who = authenticate(&state, &headers).await?;
    Ok(Json(moderated_room(&state, &who, &room_id).await?.into()))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListRooms {
    /// Only this app's rooms (an app sees only its own anyway).
    app_id: Option<String>,
    /// Only rooms of this name.
    name: Option<String>,
    /// `open` or `closed`.
    state: Option<String>,
    /// Page size, 1..=500 (default 100).
    limit: Option<i64>,
    /// The last `room_id` of the previous page.
    after: Option<String>,
}

/// A page of rooms.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RoomList {
    rooms: Vec<RoomDto>,
    /// Pass as `after` for the next page; `null` on the last page.
    next_after: Option<String>,
}

/// List rooms (the admin key: every app's; an app: its own), ordered by id.
#[utoipa::path(get, path = "/v1/rooms", tag = "rooms", params(ListRooms),
    security(("admin" = []), ("app" = [])),
    responses(
        (status = 200, description = "A page of rooms", body = RoomList),
        (status = 400, description = "Bad query parameter", body = ErrorBody),
        (status = 401, description = "No or wrong credentials", body = ErrorBody),
        (status = 403, description = "Another app's rooms, or an access token", body = ErrorBody),
    ))]
pub(crate) async fn list_rooms(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Query(q): Query<ListRooms>,
) -> ApiResult<Json<RoomList>> {
    let who = authenticate(&state, &headers).await?;
    let app_filter = match &who {
        Principal::Admin => q.app_id.clone().unwrap_or_default(),
        _ => who.app_scope(q.app_id.as_deref())?.to_string(),
    };
    if let Some(s) = &q.state
        && s != "open"
        && s != "closed"
    {
        return Err(ApiError::bad_request("state", "must be open or closed"));
    }
    let limit = check_limit(q.limit)?;
    let sql = format!(
        "SELECT {} FROM rooms WHERE ($1 = '' OR app_id = $1) AND ($2 = '' OR state = $2) AND ($3 = '' OR name = $3) \
         AND room_id > $4 ORDER BY room_id LIMIT $5",
        rooms::COLUMNS.join(", ")
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(app_filter)
        .bind(q.state.unwrap_or_default())
        .bind(q.name.unwrap_or_default())
        .bind(q.after.unwrap_or_default())
        .bind(limit)
        .fetch_all(&state.db.pool)
        .await?;
    let rooms: Vec<RoomDto> =
        rows.iter().map(rooms::from_row).collect::<Result<Vec<_>, _>>()?.into_iter().map(Into::into).collect();
    let next = (rooms.len() as i64 == limit).then(|| rooms.last().map(|r| r.room_id.clone())).flatten();
    Ok(Json(RoomList { rooms, next_after: next }))
}

/// Close a room: every participant leaves, and the media nodes end its sessions.
#[utoipa::path(post, path = "/v1/rooms/{room_id}/close", tag = "rooms", params(("room_id" = String, Path, description = "The room id (`rm_…`)")), security(("admin" = []), ("app" = []), ("participant" = [])),
    responses(
        (status = 202, description = "Accepted into the log, but this instance's read models have not applied it yet (e.g. just after a log outage): poll `Location` (the position is in `Arc-Position`)", body = PendingBody),
        (status = 200, description = "The closed room", body = RoomDto),
        (status = 401, description = "No or wrong credentials, or a rejected token", body = ErrorBody),
        (status = 403, description = "The token lacks the `admin` grant for this room", body = ErrorBody),
        (status = 404, description = "No such room", body = ErrorBody),
        (status = 409, description = "Changed concurrently too often; retry", body = ErrorBody),
    ))]
pub(crate) async fn close_room(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(room_id): Path<String>,
) -> ApiResult<Json<RoomDto>> {
    let who = authenticate(&state, &headers).await?;
    moderated_room(&state, &who, &room_id).await?;
    // The nodes carrying the room's media, read before the participants leave.
    let nodes: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT node_id FROM participants WHERE room_id = $1 AND state = 'active' AND node_id IS NOT NULL",
    )
    .bind(&room_id)
    .fetch_all(&state.db.pool)
    .await?;
    let done = state.rooms.execute(&room_ref(&room_id)?, &RoomCommand::Close, &meta(who.actor())).await?;
    let settled = state.settled(done.appended.map(|a| a.last), &format!("/v1/rooms/{room_id}")).await;
    for node in &nodes {
        end_media(&state, node, &room_id, None, LeaveReason::RoomClosed).await;
    }
    settled?;
    Ok(Json(moderated_room(&state, &who, &room_id).await?.into()))
}

/// Asks a media node to end sessions the log already says have ended (one
/// participant session's, or the whole room's). A node that cannot be reached
/// is only logged: the log is already right, the node's reconciliation with
/// the log ends them later (janitor), and a lost node's sessions end with it.
pub(crate) async fn end_media(state: &ApiState, node: &str, room_id: &str, sid: Option<&str>, reason: LeaveReason) {
    if state.fault_skip_node_requests {
        tracing::warn!(%node, room_id, ?sid, ?reason, "fault injection: not telling the node (ARC_FAULT_SKIP_NODE_REQUESTS)");
        return;
    }
    let sid = match sid.map(ParticipantSid::parse).transpose() {
        Ok(sid) => sid,
        Err(e) => {
            tracing::warn!(%node, room_id, error = %e, "not a participant sid; nothing to end");
            return;
        }
    };
    let Ok(room) = RoomId::parse(room_id) else {
        tracing::warn!(%node, room_id, "not a room id; nothing to end");
        return;
    };
    let req = NodeRequest::End { room_id: room, sid: sid.clone(), reason };
    match state.media.request(node, req).await {
        Ok(reply) => tracing::debug!(%node, room_id, ?sid, ?reason, ?reply, "media sessions ended"),
        Err(e) => {
            tracing::warn!(%node, room_id, ?sid, ?reason, error = %e, "telling the media node to end sessions")
        }
    }
}

/// Free-form metadata (`null` clears it).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Metadata {
    #[serde(default)]
    metadata: Option<String>,
}

/// Replace a room's metadata.
#[utoipa::path(put, path = "/v1/rooms/{room_id}/metadata", tag = "rooms", params(("room_id" = String, Path, description = "The room id (`rm_…`)")), request_body = Metadata, security(("admin" = []), ("app" = []), ("participant" = [])),
    responses(
        (status = 202, description = "Accepted into the log, but this instance's read models have not applied it yet (e.g. just after a log outage): poll `Location` (the position is in `Arc-Position`)", body = PendingBody),
        (status = 200, description = "The room", body = RoomDto),
        (status = 400, description = "Bad input", body = ErrorBody),
        (status = 401, description = "No or wrong credentials, or a rejected token", body = ErrorBody),
        (status = 403, description = "The token lacks the `admin` grant for this room", body = ErrorBody),
        (status = 404, description = "No such room", body = ErrorBody),
        (status = 409, description = "The room is closed", body = ErrorBody),
    ))]
pub(crate) async fn set_room_metadata(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(room_id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<RoomDto>> {
    let who = authenticate(&state, &headers).await?;
    let req: Metadata = parse_body(&body)?;
    moderated_room(&state, &who, &room_id).await?;
    let command = RoomCommand::UpdateMetadata { metadata: req.metadata };
    let done = state.rooms.execute(&room_ref(&room_id)?, &command, &meta(who.actor())).await?;
    state.settled(done.appended.map(|a| a.last), &format!("/v1/rooms/{room_id}")).await?;
    Ok(Json(moderated_room(&state, &who, &room_id).await?.into()))
}

/// What a join did.
#[derive(Debug)]
pub(crate) struct JoinOutcome {
    /// Where the join went in the log (`None` if it was already so).
    pub(crate) position: Option<arc_eventlog::Position>,
    /// The room's seq after the join.
    pub(crate) seq: u64,
}

/// Joins `identity` to the room, within the app's quotas. An identity that is
/// in the room already is replaced: its older session leaves
/// (`duplicate_identity`) and its media node ends that session's media, so an
/// identity never has two live sessions in a room (a page refresh, or the
/// same token used twice).
pub(crate) async fn join(
    state: &ApiState,
    who: &Principal,
    app: &AppRow,
    room_id: &RoomId,
    joined: ParticipantJoined,
) -> ApiResult<JoinOutcome> {
    let aggregate = room_ref(room_id.as_str())?;
    // Under `max_participants`, the app's quota turn (strict across
    // instances), held until the join is in the log.
    let _turn = match quota_of(app.max_participants) {
        Some(_) => Some(super::quota::turn(state, &app.app_id).await?),
        None => None,
    };
    if let Some(max) = quota_of(app.max_participants) {
        let (room, _) = state.rooms.load(&aggregate).await?;
        if !room.participants.contains_key(&joined.identity) && usage(state, &app.app_id).await?.participants >= max {
            return Err(ApiError::quota("max_participants", max));
        }
    }
    let cap = quota_of(app.max_participants_per_room).and_then(|v| u32::try_from(v).ok());
    let new_node = joined.node_id.as_ref().map(ToString::to_string);
    let done = state.rooms.execute(&aggregate, &RoomCommand::Join { joined, cap }, &meta(who.actor())).await?;
    let replaced = done.events.iter().find_map(|e| match e {
        arc_events::RoomEvent::ParticipantLeft(l) if l.reason == LeaveReason::DuplicateIdentity => Some(l.sid.clone()),
        _ => None,
    });
    if let Some(old) = &replaced {
        // The older session's node: as the read model knows it, else the node
        // this join was placed on (placement keeps a room on one node).
        let node: Option<String> = sqlx::query_scalar("SELECT node_id FROM participants WHERE sid = $1")
            .bind(old.as_str())
            .fetch_optional(&state.db.pool)
            .await?
            .flatten()
            .or(new_node);
        if let Some(node) = node {
            end_media(state, &node, room_id.as_str(), Some(old.as_str()), LeaveReason::DuplicateIdentity).await;
        }
    }
    Ok(JoinOutcome { position: done.appended.map(|a| a.last), seq: done.seq })
}

/// What a token's join did.
pub(crate) struct TokenJoin {
    pub(crate) room_id: RoomId,
    /// Whether this join opened the room.
    pub(crate) room_created: bool,
    pub(crate) identity: ParticipantIdentity,
    pub(crate) sid: ParticipantSid,
    /// The token's holder, as a principal.
    pub(crate) who: Principal,
    /// The media node the session was placed on, if any.
    pub(crate) node: Option<NodeId>,
    /// Where the join went in the log (`None` if it was already so).
    pub(crate) position: Option<arc_eventlog::Position>,
}

/// The join of an access token's holder, for every entry point that joins
/// with a token (`POST /v1/join`, WHIP/WHEP): opens the token's room if
/// needed (within `max_rooms`), asks `place` for the session's media node
/// (or none), and records the participant's session with the token's name,
/// grants, metadata and `jti` (within `max_participants`).
pub(crate) async fn join_with_claims(
    state: &ApiState,
    app: &AppRow,
    claims: &Claims,
    place: impl AsyncFnOnce(&RoomId) -> ApiResult<Option<NodeId>>,
) -> ApiResult<TokenJoin> {
    let app_id = AppId::parse(&app.app_id).map_err(|_| ApiError::internal("bad app id in the read model"))?;
    let identity = ParticipantIdentity::parse(&claims.sub).map_err(|e| ApiError::bad_request("token sub", e))?;
    let who = Principal::Participant { app: Box::new(app.clone()), claims: Box::new(claims.clone()) };
    let create = RoomCommand::Create {
        app_id: app_id.clone(),
        name: claims.room.clone(),
        max_participants: None,
        empty_timeout_s: None,
        metadata: None,
    };
    let (room_id, room_created, _) = ensure_room(state, &who, app, &app_id, create, &claims.room).await?;
    let node = place(&room_id).await?;
    let sid = ParticipantSid::generate();
    let joined = ParticipantJoined {
        identity: identity.clone(),
        sid: sid.clone(),
        name: claims.name.clone(),
        node_id: node.clone(),
        jti: Some(claims.jti.clone()),
        permissions: Some(Permissions {
            publish: claims.grants.publish,
            subscribe: claims.grants.subscribe,
            publish_data: claims.grants.publish_data,
        }),
        metadata: claims.metadata.clone(),
    };
    let position = join(state, &who, app, &room_id, joined).await?.position;
    Ok(TokenJoin { room_id, room_created, identity, sid, who, node, position })
}

/// A participant's session, opened with an access token.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Joined {
    room_id: String,
    /// The room's name (the token's `room`).
    room: String,
    /// Whether this join opened the room.
    room_created: bool,
    identity: String,
    /// The session id (`pa_…`).
    sid: String,
    grants: arc_auth::token::Grants,
}

/// Join the token's room.
///
/// With `Authorization: Bearer <access token>` (grant `join`): opens the
/// token's room if needed and records the participant's session, within the
/// app's quotas. Rejected tokens answer 401 with a `token_…` code.
#[utoipa::path(post, path = "/v1/join", tag = "rooms", security(("participant" = [])),
    responses(
        (status = 201, description = "Joined", body = Joined),
        (status = 401, description = "No token, or it is expired, not yet valid, badly signed, of another alg, revoked or malformed", body = ErrorBody),
        (status = 403, description = "No `join` grant, or the app is disabled", body = ErrorBody),
        (status = 409, description = "The room is closing; retry", body = ErrorBody),
        (status = 429, description = "A quota or the room's participant limit is reached (`limit` names it)", body = ErrorBody),
    ))]
pub(crate) async fn join_with_token(State(state): State<Arc<ApiState>>, headers: HeaderMap) -> ApiResult<Response> {
    let (app, claims) = verify_token(&state, bearer_token(&headers)?).await?;
    if !claims.grants.join {
        return Err(ApiError::forbidden("permission_denied", "the token has no join grant"));
    }
    let no_node = async |_: &RoomId| -> ApiResult<Option<NodeId>> { Ok(None) };
    let done = join_with_claims(&state, &app, &claims, no_node).await?;
    state.settle(done.position).await;
    let body = Joined {
        room_id: done.room_id.to_string(),
        room: claims.room,
        room_created: done.room_created,
        identity: done.identity.to_string(),
        sid: done.sid.to_string(),
        grants: claims.grants,
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// A participant a gateway admits.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct JoinRoom {
    identity: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    node_id: Option<String>,
    #[serde(default)]
    metadata: Option<String>,
}

/// A participant admitted by its app.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ParticipantAdded {
    room_id: String,
    identity: String,
    sid: String,
    /// The room's event sequence number after the join.
    seq: u64,
}

/// Admit a participant to an open room (for gateways that authenticate their users themselves).
#[utoipa::path(post, path = "/v1/rooms/{room_id}/participants", tag = "participants", params(("room_id" = String, Path, description = "The room id (`rm_…`)")), request_body = JoinRoom,
    security(("admin" = []), ("app" = [])),
    responses(
        (status = 201, description = "Joined", body = ParticipantAdded),
        (status = 400, description = "Bad input (named)", body = ErrorBody),
        (status = 401, description = "No or wrong credentials", body = ErrorBody),
        (status = 403, description = "An access token was used, or the app is disabled", body = ErrorBody),
        (status = 404, description = "No such room", body = ErrorBody),
        (status = 409, description = "The room is closed", body = ErrorBody),
        (status = 429, description = "A quota or the room's participant limit is reached", body = ErrorBody),
    ))]
pub(crate) async fn join_room(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(room_id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let who = authenticate(&state, &headers).await?;
    if matches!(who, Principal::Participant { .. }) {
        return Err(ApiError::forbidden("forbidden", "use POST /v1/join with an access token"));
    }
    let req: JoinRoom = parse_body(&body)?;
    let room = moderated_room(&state, &who, &room_id).await?;
    let app_id = AppId::parse(&room.app_id).map_err(|_| ApiError::internal("bad app id in the read model"))?;
    let app = active_app(&state, &app_id).await?;
    let identity = ParticipantIdentity::parse(&req.identity).map_err(|e| ApiError::bad_request("identity", e))?;
    let node_id = req
        .node_id
        .as_deref()
        .map(arc_events::NodeId::parse)
        .transpose()
        .map_err(|e| ApiError::bad_request("node_id", e))?;
    let sid = ParticipantSid::generate();
    let joined = ParticipantJoined {
        identity: identity.clone(),
        sid: sid.clone(),
        name: req.name,
        node_id,
        jti: None,
        permissions: None,
        metadata: req.metadata,
    };
    let rid = RoomId::parse(&room_id).map_err(|e| ApiError::bad_request("room_id", e))?;
    let JoinOutcome { position, seq } = join(&state, &who, &app, &rid, joined).await?;
    state.settle(position).await;
    let body = ParticipantAdded { room_id, identity: identity.to_string(), sid: sid.to_string(), seq };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct LeaveQuery {
    /// End this session (default: the identity's current one).
    sid: Option<String>,
}

/// The outcome of a leave.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Left {
    room_id: String,
    identity: String,
    /// False when the participant was not in the room (nothing changed).
    left: bool,
}

/// A participant leaves (a moderator removes it, or a gateway reports it gone); its media sessions end.
#[utoipa::path(delete, path = "/v1/rooms/{room_id}/participants/{identity}", tag = "participants",
    params(("room_id" = String, Path, description = "The room id (`rm_…`)"), ("identity" = String, Path, description = "The participant's identity"), LeaveQuery), security(("admin" = []), ("app" = []), ("participant" = [])),
    responses(
        (status = 200, description = "Left (or was not there)", body = Left),
        (status = 400, description = "Bad identity or sid", body = ErrorBody),
        (status = 401, description = "No or wrong credentials, or a rejected token", body = ErrorBody),
        (status = 403, description = "The token lacks the `admin` grant for this room", body = ErrorBody),
        (status = 404, description = "No such room", body = ErrorBody),
    ))]
pub(crate) async fn leave_room(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path((room_id, identity)): Path<(String, String)>,
    Query(q): Query<LeaveQuery>,
) -> ApiResult<Json<Left>> {
    let who = authenticate(&state, &headers).await?;
    moderated_room(&state, &who, &room_id).await?;
    let left = remove(&state, &who, &room_id, &identity, q.sid.as_deref(), LeaveReason::Removed).await?;
    // Its media ends too (by sid: a newer session of the identity stays).
    if let Some((sid, Some(row))) = &left
        && let Some(node) = &row.node_id
    {
        end_media(&state, node, &room_id, Some(sid.as_str()), LeaveReason::Removed).await;
    }
    Ok(Json(Left { room_id, identity, left: left.is_some() }))
}

/// Ends the participant's session (the named one, or the current one).
async fn remove(
    state: &ApiState,
    who: &Principal,
    room_id: &str,
    identity: &str,
    sid: Option<&str>,
    reason: LeaveReason,
) -> ApiResult<Option<(ParticipantSid, Option<ParticipantRow>)>> {
    let identity = ParticipantIdentity::parse(identity).map_err(|e| ApiError::bad_request("identity", e))?;
    let aggregate = room_ref(room_id)?;
    let (room, _) = state.rooms.load(&aggregate).await?;
    let current = room.participants.get(&identity).cloned();
    let sid = match sid {
        Some(s) => ParticipantSid::parse(s).map_err(|e| ApiError::bad_request("sid", e))?,
        None => match current {
            Some(s) => s,
            None => return Ok(None),
        },
    };
    // The row of the session that ends (by sid: never another session of the identity).
    let sql = format!("SELECT {} FROM participants WHERE sid = $1", participants::COLUMNS.join(", "));
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(sid.as_str()).fetch_optional(&state.db.pool).await?;
    let row = row.map(|r| participants::from_row(&r)).transpose()?;
    let command = RoomCommand::Leave { identity, sid: sid.clone(), reason };
    let done = state.rooms.execute(&aggregate, &command, &meta(who.actor())).await?;
    state.settle(done.appended.map(|a| a.last)).await;
    Ok(if done.events.is_empty() { None } else { Some((sid, row)) })
}

/// The outcome of a kick.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Kicked {
    room_id: String,
    identity: String,
    sid: String,
    kicked: bool,
    /// Whether the token it joined with was revoked (false for gateway-admitted participants).
    token_revoked: bool,
}

/// Kick a participant: it leaves and the token it joined with is revoked.
#[utoipa::path(post, path = "/v1/rooms/{room_id}/participants/{identity}/kick", tag = "participants",
    params(("room_id" = String, Path, description = "The room id (`rm_…`)"), ("identity" = String, Path, description = "The participant's identity")), security(("admin" = []), ("app" = []), ("participant" = [])),
    responses(
        (status = 200, description = "Kicked", body = Kicked),
        (status = 401, description = "No or wrong credentials, or a rejected token", body = ErrorBody),
        (status = 403, description = "The token lacks the `admin` grant for this room", body = ErrorBody),
        (status = 404, description = "No such room or participant", body = ErrorBody),
    ))]
pub(crate) async fn kick(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path((room_id, identity)): Path<(String, String)>,
) -> ApiResult<Json<Kicked>> {
    let who = authenticate(&state, &headers).await?;
    let room = moderated_room(&state, &who, &room_id).await?;
    let participant = active_participant(&state, &room_id, &identity)
        .await?
        .ok_or_else(|| ApiError::not_found("participant_not_found", "no such participant in the room"))?;
    // Revoke first: if the leave then fails, a retry finds the token already refused.
    let mut revoked = false;
    if let Some(jti) = &participant.jti {
        let app_ref =
            AggregateRef::new(AggregateKind::App, &room.app_id).map_err(|_| ApiError::internal("bad app id"))?;
        let expires_at = chrono::Utc::now()
            + chrono::Duration::seconds(i64::from(state.token_policy.max_ttl_s + state.token_policy.leeway_s));
        let command = AppCommand::RevokeToken { jti: jti.clone(), expires_at, reason: Some("kicked".into()) };
        let done = state.apps.execute(&app_ref, &command, &meta(who.actor())).await?;
        state.settle(done.appended.map(|a| a.last)).await;
        revoked = true;
    }
    remove(&state, &who, &room_id, &identity, Some(&participant.sid), LeaveReason::Kicked).await?;
    // The media node ends the participant's sessions now (the log already says it left).
    if let Some(node) = &participant.node_id {
        end_media(&state, node, &room_id, Some(&participant.sid), LeaveReason::Kicked).await;
    }
    Ok(Json(Kicked { room_id, identity, sid: participant.sid, kicked: true, token_revoked: revoked }))
}

/// Who is in a room.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ParticipantList {
    participants: Vec<ParticipantDto>,
}

/// List who is in a room now, with their tracks.
#[utoipa::path(get, path = "/v1/rooms/{room_id}/participants", tag = "participants", params(("room_id" = String, Path, description = "The room id (`rm_…`)")), security(("admin" = []), ("app" = []), ("participant" = [])),
    responses(
        (status = 200, description = "The active participants, by identity", body = ParticipantList),
        (status = 401, description = "No or wrong credentials, or a rejected token", body = ErrorBody),
        (status = 403, description = "The token lacks the `admin` grant for this room", body = ErrorBody),
        (status = 404, description = "No such room", body = ErrorBody),
    ))]
pub(crate) async fn list_participants(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(room_id): Path<String>,
) -> ApiResult<Json<ParticipantList>> {
    let who = authenticate(&state, &headers).await?;
    moderated_room(&state, &who, &room_id).await?;
    let sql = format!(
        "SELECT {} FROM participants WHERE room_id = $1 AND state = 'active' ORDER BY identity LIMIT 10000",
        participants::COLUMNS.join(", ")
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(&room_id).fetch_all(&state.db.pool).await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let p = participants::from_row(row)?;
        let tracks = tracks_of(&state, &p.sid).await?;
        out.push(participant_dto(p, tracks));
    }
    Ok(Json(ParticipantList { participants: out }))
}

async fn participant_in(state: &ApiState, room_id: &str, identity: &str) -> ApiResult<ParticipantDto> {
    let p = active_participant(state, room_id, identity)
        .await?
        .ok_or_else(|| ApiError::not_found("participant_not_found", "no such participant in the room"))?;
    let tracks = tracks_of(state, &p.sid).await?;
    Ok(participant_dto(p, tracks))
}

/// Get a participant in a room, with its tracks.
#[utoipa::path(get, path = "/v1/rooms/{room_id}/participants/{identity}", tag = "participants",
    params(("room_id" = String, Path, description = "The room id (`rm_…`)"), ("identity" = String, Path, description = "The participant's identity")), security(("admin" = []), ("app" = []), ("participant" = [])),
    responses(
        (status = 200, description = "The participant", body = ParticipantDto),
        (status = 401, description = "No or wrong credentials, or a rejected token", body = ErrorBody),
        (status = 403, description = "The token lacks the `admin` grant for this room", body = ErrorBody),
        (status = 404, description = "No such room or participant", body = ErrorBody),
    ))]
pub(crate) async fn get_participant(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path((room_id, identity)): Path<(String, String)>,
) -> ApiResult<Json<ParticipantDto>> {
    let who = authenticate(&state, &headers).await?;
    moderated_room(&state, &who, &room_id).await?;
    Ok(Json(participant_in(&state, &room_id, &identity).await?))
}

fn participant_ref(sid: &str) -> ApiResult<AggregateRef> {
    AggregateRef::new(AggregateKind::Participant, sid).map_err(|_| ApiError::internal("bad sid in the read model"))
}

/// Replace what a participant may do (publish, subscribe, publish data).
#[utoipa::path(put, path = "/v1/rooms/{room_id}/participants/{identity}/permissions", tag = "participants",
    params(("room_id" = String, Path, description = "The room id (`rm_…`)"), ("identity" = String, Path, description = "The participant's identity")), request_body = Permissions, security(("admin" = []), ("app" = []), ("participant" = [])),
    responses(
        (status = 202, description = "Accepted into the log, but this instance's read models have not applied it yet (e.g. just after a log outage): poll `Location` (the position is in `Arc-Position`)", body = PendingBody),
        (status = 200, description = "The participant", body = ParticipantDto),
        (status = 400, description = "Bad input", body = ErrorBody),
        (status = 401, description = "No or wrong credentials, or a rejected token", body = ErrorBody),
        (status = 403, description = "The token lacks the `admin` grant for this room", body = ErrorBody),
        (status = 404, description = "No such room or participant", body = ErrorBody),
    ))]
pub(crate) async fn set_permissions(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path((room_id, identity)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Json<ParticipantDto>> {
    let who = authenticate(&state, &headers).await?;
    moderated_room(&state, &who, &room_id).await?;
    let permissions: Permissions = parse_body(&body)?;
    let p = participant_in(&state, &room_id, &identity).await?;
    let command = ParticipantCommand::SetPermissions {
        room_id: RoomId::parse(&room_id).map_err(|e| ApiError::bad_request("room_id", e))?,
        identity: ParticipantIdentity::parse(&identity).map_err(|e| ApiError::bad_request("identity", e))?,
        permissions,
    };
    let done = state.participants.execute(&participant_ref(&p.sid)?, &command, &meta(who.actor())).await?;
    let location = format!("/v1/rooms/{room_id}/participants/{identity}");
    state.settled(done.appended.map(|a| a.last), &location).await?;
    Ok(Json(participant_in(&state, &room_id, &identity).await?))
}

/// A participant's display name and metadata (`null` clears).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ParticipantMetadata {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    metadata: Option<String>,
}

/// Replace a participant's name and metadata.
#[utoipa::path(put, path = "/v1/rooms/{room_id}/participants/{identity}/metadata", tag = "participants",
    params(("room_id" = String, Path, description = "The room id (`rm_…`)"), ("identity" = String, Path, description = "The participant's identity")), request_body = ParticipantMetadata, security(("admin" = []), ("app" = []), ("participant" = [])),
    responses(
        (status = 202, description = "Accepted into the log, but this instance's read models have not applied it yet (e.g. just after a log outage): poll `Location` (the position is in `Arc-Position`)", body = PendingBody),
        (status = 200, description = "The participant", body = ParticipantDto),
        (status = 400, description = "Bad input", body = ErrorBody),
        (status = 401, description = "No or wrong credentials, or a rejected token", body = ErrorBody),
        (status = 403, description = "The token lacks the `admin` grant for this room", body = ErrorBody),
        (status = 404, description = "No such room or participant", body = ErrorBody),
    ))]
pub(crate) async fn set_participant_metadata(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path((room_id, identity)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Json<ParticipantDto>> {
    let who = authenticate(&state, &headers).await?;
    moderated_room(&state, &who, &room_id).await?;
    let req: ParticipantMetadata = parse_body(&body)?;
    let p = participant_in(&state, &room_id, &identity).await?;
    let command = ParticipantCommand::UpdateMetadata {
        room_id: RoomId::parse(&room_id).map_err(|e| ApiError::bad_request("room_id", e))?,
        identity: ParticipantIdentity::parse(&identity).map_err(|e| ApiError::bad_request("identity", e))?,
        name: req.name,
        metadata: req.metadata,
    };
    let done = state.participants.execute(&participant_ref(&p.sid)?, &command, &meta(who.actor())).await?;
    let location = format!("/v1/rooms/{room_id}/participants/{identity}");
    state.settled(done.appended.map(|a| a.last), &location).await?;
    Ok(Json(participant_in(&state, &room_id, &identity).await?))
}

/// Mute or unmute.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Mute {
    muted: bool,
}

/// Mute or unmute a published track (as a moderator; the media node acts on the event).
#[utoipa::path(post, path = "/v1/rooms/{room_id}/tracks/{track_id}/mute", tag = "participants",
    params(("room_id" = String, Path, description = "The room id (`rm_…`)"), ("track_id" = String, Path, description = "The track id")), request_body = Mute, security(("admin" = []), ("app" = []), ("participant" = [])),
    responses(
        (status = 202, description = "Accepted into the log, but this instance's read models have not applied it yet (e.g. just after a log outage): poll `Location` (the position is in `Arc-Position`)", body = PendingBody),
        (status = 200, description = "The track", body = TrackDto),
        (status = 400, description = "Bad input", body = ErrorBody),
        (status = 401, description = "No or wrong credentials, or a rejected token", body = ErrorBody),
        (status = 403, description = "The token lacks the `admin` grant for this room", body = ErrorBody),
        (status = 404, description = "No such room or track", body = ErrorBody),
        (status = 409, description = "The track is unpublished", body = ErrorBody),
    ))]
pub(crate) async fn mute_track(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path((room_id, track_id)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Json<TrackDto>> {
    let who = authenticate(&state, &headers).await?;
    moderated_room(&state, &who, &room_id).await?;
    let req: Mute = parse_body(&body)?;
    let aggregate =
        AggregateRef::new(AggregateKind::Track, &track_id).map_err(|e| ApiError::bad_request("track_id", e))?;
    let (track, _) = state.tracks.load(&aggregate).await?;
    if track.room_id.as_ref().map(RoomId::as_str) != Some(room_id.as_str()) {
        return Err(ApiError::not_found("track_not_found", "no such track in the room"));
    }
    let command = TrackCommand::SetMuted { muted: req.muted, by: MutedBy::Moderator };
    let done = state.tracks.execute(&aggregate, &command, &meta(who.actor())).await?;
    let settled = state.settled(done.appended.map(|a| a.last), &format!("/v1/rooms/{room_id}/participants")).await;
    let sql = format!("SELECT {} FROM tracks WHERE track_id = $1", tracks::COLUMNS.join(", "));
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(&track_id).fetch_optional(&state.db.pool).await?;
    let row = row.ok_or_else(|| ApiError::not_found("track_not_found", "no such track in the room"))?;
    let row = tracks::from_row(&row)?;
    // The media node stops (or resumes) forwarding the track now.
    let node: Option<String> = sqlx::query_scalar("SELECT node_id FROM participants WHERE sid = $1")
        .bind(&row.sid)
        .fetch_optional(&state.db.pool)
        .await?
        .flatten();
    if let Some(node) = node.filter(|_| !state.fault_skip_node_requests) {
        let track = arc_events::TrackId::parse(&track_id).map_err(|e| ApiError::bad_request("track_id", e))?;
        let req = NodeRequest::Mute { track_id: track, muted: req.muted };
        if let Err(e) = state.media.request(&node, req).await {
            tracing::warn!(%node, error = %e, "telling the media node about a mute");
        }
    }
    settled?;
    Ok(Json(row.into()))
}
