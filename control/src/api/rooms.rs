//! Rooms, participants and tracks over HTTP: create, list, close, join with
//! a token, kick, permissions, metadata, mute. Each handler authenticates,
//! parses, authorizes, calls its use case (`crate::usecase::rooms`) and maps
//! the outcome; reads go through `crate::usecase::queries`.

use std::sync::Arc;

use arc_events::participant::Permissions;
use arc_events::room::LeaveReason;
use arc_events::{AppId, ParticipantIdentity, RoomId};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::{Principal, authenticate, bearer_token, verify_token};
use super::error::{ApiError, ApiResult, ErrorBody, PendingBody};
use super::{ApiState, check_limit, iso, parse_body};
use crate::projection::participants::ParticipantRow;
use crate::projection::rooms::RoomRow;
use crate::projection::tracks::TrackRow;
use crate::usecase::queries;
use crate::usecase::rooms as uc;

pub use crate::usecase::rooms::room_id_for;

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
    uc::room_ref(room_id)?;
    Ok(queries::room(&state.db, room_id).await?)
}

/// The room, if it exists and the caller may moderate it (404 otherwise, so
/// other apps' room ids are not disclosed).
async fn moderated_room(state: &ApiState, who: &Principal, room_id: &str) -> ApiResult<RoomRow> {
    let room =
        load_room(state, room_id).await?.ok_or_else(|| ApiError::not_found("room_not_found", "room not found"))?;
    who.require_moderator(&room)?;
    Ok(room)
}

async fn tracks_of(state: &ApiState, sid: &str) -> ApiResult<Vec<TrackDto>> {
    Ok(queries::published_tracks(&state.db, sid).await?.into_iter().map(Into::into).collect())
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
    let app = uc::active_app(&state, &app_id).await?;
    let room = uc::NewRoom {
        name: req.name,
        max_participants: req.max_participants,
        empty_timeout_s: req.empty_timeout_s,
        metadata: req.metadata,
    };
    let (room_id, position) = uc::create_room(&state, &who.actor(), &app, room).await?;
    state.settled(position, &format!("/v1/rooms/{room_id}")).await?;
    let room = load_room(&state, room_id.as_str()).await?.map(RoomDto::from);
    Ok((StatusCode::CREATED, [(header::LOCATION, format!("/v1/rooms/{room_id}"))], Json(room)).into_response())
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
        Principal::Admin(_) => q.app_id.clone().unwrap_or_default(),
        _ => who.app_scope(q.app_id.as_deref())?.to_string(),
    };
    if let Some(s) = &q.state
        && s != "open"
        && s != "closed"
    {
        return Err(ApiError::bad_request("state", "must be open or closed"));
    }
    let limit = check_limit(q.limit)?;
    let filter = queries::RoomFilter {
        app_id: app_filter,
        state: q.state.unwrap_or_default(),
        name: q.name.unwrap_or_default(),
        after: q.after.unwrap_or_default(),
        limit,
    };
    let rooms: Vec<RoomDto> = queries::rooms(&state.db, &filter).await?.into_iter().map(Into::into).collect();
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
    let position = uc::close_room(&state, &who.actor(), &room_id).await?;
    state.settled(position, &format!("/v1/rooms/{room_id}")).await?;
    Ok(Json(moderated_room(&state, &who, &room_id).await?.into()))
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
    let position = uc::set_room_metadata(&state, &who.actor(), &room_id, req.metadata).await?;
    state.settled(position, &format!("/v1/rooms/{room_id}")).await?;
    Ok(Json(moderated_room(&state, &who, &room_id).await?.into()))
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
    let done = uc::join_with_token(&state, &app, &claims, uc::Placement::None).await?;
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
    let app = uc::active_app(&state, &app_id).await?;
    let admit = uc::Admit {
        identity: ParticipantIdentity::parse(&req.identity).map_err(|e| ApiError::bad_request("identity", e))?,
        name: req.name,
        node_id: req
            .node_id
            .as_deref()
            .map(arc_events::NodeId::parse)
            .transpose()
            .map_err(|e| ApiError::bad_request("node_id", e))?,
        metadata: req.metadata,
    };
    let rid = RoomId::parse(&room_id).map_err(|e| ApiError::bad_request("room_id", e))?;
    let identity = admit.identity.to_string();
    let (sid, done) = uc::admit(&state, &who.actor(), &app, &rid, admit).await?;
    state.settle(done.position).await;
    let body = ParticipantAdded { room_id, identity, sid: sid.to_string(), seq: done.seq };
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
    let left = uc::remove(&state, &who.actor(), &room_id, &identity, q.sid.as_deref(), LeaveReason::Removed).await?;
    if let Some((_, _, position)) = &left {
        state.settle(*position).await;
    }
    Ok(Json(Left { room_id, identity, left: left.is_some() }))
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
    let kick = uc::kick(&state, &who.actor(), &room.app_id, &room_id, &identity).await?;
    state.settle(kick.position).await;
    Ok(Json(Kicked { room_id, identity, sid: kick.sid, kicked: true, token_revoked: kick.token_revoked }))
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
    let rows = queries::active_participants(&state.db, &room_id).await?;
    let mut out = Vec::with_capacity(rows.len());
    for p in rows {
        let tracks = tracks_of(&state, &p.sid).await?;
        out.push(participant_dto(p, tracks));
    }
    Ok(Json(ParticipantList { participants: out }))
}

async fn participant_in(state: &ApiState, room_id: &str, identity: &str) -> ApiResult<ParticipantDto> {
    let p = uc::participant_in(state, room_id, identity).await?;
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
    let change = uc::ParticipantChange::Permissions(permissions);
    let position = uc::change_participant(&state, &who.actor(), &room_id, &identity, change).await?;
    let location = format!("/v1/rooms/{room_id}/participants/{identity}");
    state.settled(position, &location).await?;
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
    let change = uc::ParticipantChange::Metadata { name: req.name, metadata: req.metadata };
    let position = uc::change_participant(&state, &who.actor(), &room_id, &identity, change).await?;
    let location = format!("/v1/rooms/{room_id}/participants/{identity}");
    state.settled(position, &location).await?;
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
    let position = uc::mute_track(&state, &who.actor(), &room_id, &track_id, req.muted).await?;
    state.settled(position, &format!("/v1/rooms/{room_id}/participants")).await?;
    let row = queries::track(&state.db, &track_id)
        .await?
        .ok_or_else(|| ApiError::not_found("track_not_found", "no such track in the room"))?;
    Ok(Json(row.into()))
}
