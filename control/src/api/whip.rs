//! WHIP and WHEP (RFC 9725 and its playback twin): SDP offer in, SDP answer
//! out, a session resource to PATCH (trickle ICE) and DELETE (leave).
//!
//! The handler authorizes the access token (grant `publish` for WHIP,
//! `subscribe` for WHEP, for the room named in the path) and checks the
//! offer's envelope; the use case (`usecase::rooms::open_media_session`)
//! opens the room if needed, places it on a media node, records the
//! participant's join with that node, and asks the node for the session.
//! Media never passes here.
//! The resource URL names the node, so any control-plane instance can route
//! a PATCH or DELETE without shared state.

use std::sync::Arc;

use arc_events::{MediaSessionId, NodeId, ParticipantIdentity};
use arc_nodeproto::{NodeReply, NodeRequest, Role};
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::IntoParams;

use super::ApiState;
use super::auth::{bearer_token, verify_token};
use super::error::{ApiError, ApiResult, ErrorBody, node_error, route_error};
use crate::usecase::rooms as uc;

/// Largest SDP offer accepted.
pub const SDP_BYTES_MAX: usize = arc_events::limits::SDP_OFFER_BYTES_MAX;

fn content_type_is(headers: &HeaderMap, want: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(want))
}

/// A session resource's id from the path (a malformed one names no session).
fn session_id(s: &str) -> ApiResult<MediaSessionId> {
    MediaSessionId::parse(s).map_err(|_| ApiError::not_found("session_not_found", "no such session"))
}

/// Which participant a WHEP player watches.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct PlayQuery {
    /// Play this participant's tracks instead of the room's latest publisher.
    #[serde(default)]
    participant: Option<String>,
}

/// Publish into a room (WHIP).
///
/// Body: the client's SDP offer (`application/sdp`). Answers `201` with the
/// SDP answer and the session resource in `Location`.
#[utoipa::path(post, path = "/v1/whip/{room}", tag = "media", security(("participant" = [])),
    params(("room" = String, Path, description = "The room's name (the token's `room`)")),
    request_body(content = String, content_type = "application/sdp", description = "SDP offer"),
    responses(
        (status = 201, description = "SDP answer; `Location` names the session, `ETag` its ICE state (send it as `If-Match` with trickle PATCHes; an ICE restart answers a new one)", body = String, content_type = "application/sdp"),
        (status = 400, description = "Bad SDP (the reason is given)", body = ErrorBody),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 403, description = "No `publish` grant, another room, or the app is disabled", body = ErrorBody),
        (status = 406, description = "No codec in common (offered and supported codecs are named)", body = ErrorBody),
        (status = 409, description = "`session_replaced`: a newer session of the same identity joined while this one was set up (one identity has one live session in a room)", body = ErrorBody),
        (status = 415, description = "Not application/sdp", body = ErrorBody),
        (status = 429, description = "A quota is reached", body = ErrorBody),
        (status = 503, description = "No media node is available", body = ErrorBody),
    ))]
pub(crate) async fn whip_post(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(room): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    open_session(&state, &headers, &room, body, Role::Publish, "whip").await
}

/// Play a room (WHEP).
///
/// Body: the client's SDP offer (receive-only). Plays the room's latest
/// publisher, or `?participant=<identity>`; a publisher who arrives later is
/// switched in without renegotiation when the codecs match.
#[utoipa::path(post, path = "/v1/whep/{room}", tag = "media", security(("participant" = [])),
    params(("room" = String, Path, description = "The room's name (the token's `room`)"), PlayQuery),
    request_body(content = String, content_type = "application/sdp", description = "SDP offer"),
    responses(
        (status = 201, description = "SDP answer; `Location` names the session, `ETag` its ICE state (send it as `If-Match` with trickle PATCHes; an ICE restart answers a new one)", body = String, content_type = "application/sdp"),
        (status = 400, description = "Bad SDP (the reason is given)", body = ErrorBody),
        (status = 401, description = "No or bad token", body = ErrorBody),
        (status = 403, description = "No `subscribe` grant, another room, or the app is disabled", body = ErrorBody),
        (status = 406, description = "No codec in common", body = ErrorBody),
        (status = 409, description = "`session_replaced`: a newer session of the same identity joined while this one was set up (one identity has one live session in a room)", body = ErrorBody),
        (status = 415, description = "Not application/sdp", body = ErrorBody),
        (status = 503, description = "No media node is available", body = ErrorBody),
    ))]
pub(crate) async fn whep_post(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(room): Path<String>,
    Query(q): Query<PlayQuery>,
    body: Bytes,
) -> ApiResult<Response> {
    let participant = q
        .participant
        .as_deref()
        .map(ParticipantIdentity::parse)
        .transpose()
        .map_err(|e| ApiError::bad_request("participant", e))?;
    open_session(&state, &headers, &room, body, Role::Subscribe { participant, screen: false }, "whep").await
}

async fn open_session(
    state: &ApiState,
    headers: &HeaderMap,
    room: &str,
    body: Bytes,
    role: Role,
    path: &str,
) -> ApiResult<Response> {
    let (app, claims) = verify_token(state, bearer_token(headers)?).await?;
    let publish = role == Role::Publish;
    if publish && !claims.grants.publish {
        return Err(ApiError::forbidden("permission_denied", "the token has no publish grant"));
    }
    if !publish && !claims.grants.subscribe {
        return Err(ApiError::forbidden("permission_denied", "the token has no subscribe grant"));
    }
    if claims.room != room {
        return Err(ApiError::forbidden(
            "wrong_room",
            format!("the token is for room {:?}, not {room:?}", claims.room),
        ));
    }
    if !content_type_is(headers, "application/sdp") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the SDP offer as Content-Type: application/sdp",
        ));
    }
    if body.len() > SDP_BYTES_MAX {
        return Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", "the SDP offer is too large"));
    }
    let offer = std::str::from_utf8(&body).map_err(|_| ApiError::bad_request("sdp", "not UTF-8"))?;
    if !offer.trim_start().starts_with("v=0") {
        return Err(ApiError::new(StatusCode::BAD_REQUEST, "bad_sdp", "bad SDP: an SDP offer starts with v=0"));
    }
    let uc::MediaSession { node, session_id, answer, etag, position, .. } =
        uc::open_media_session(state, &app, &claims, role, offer).await?;
    state.settle(position).await;
    let location = format!("/v1/{path}/{room}/sessions/{node}/{session_id}");
    let mut resp = (StatusCode::CREATED, answer).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/sdp"));
    if let Ok(v) = HeaderValue::from_str(&location) {
        h.insert(header::LOCATION, v);
    }
    h.insert("accept-patch", HeaderValue::from_static("application/trickle-ice-sdpfrag"));
    if let Some(v) = etag.and_then(|e| HeaderValue::from_str(&e).ok()) {
        h.insert(header::ETAG, v);
    }
    Ok(resp)
}

async fn session_request(
    state: &ApiState,
    headers: &HeaderMap,
    room: &str,
    node: &str,
    req: NodeRequest,
) -> ApiResult<NodeReply> {
    let (_, claims) = verify_token(state, bearer_token(headers)?).await?;
    if claims.room != room {
        return Err(ApiError::forbidden(
            "wrong_room",
            format!("the token is for room {:?}, not {room:?}", claims.room),
        ));
    }
    if NodeId::parse(node).is_err() {
        return Err(ApiError::not_found("session_not_found", "no such session"));
    }
    match state.media.request(node, req).await.map_err(route_error)? {
        NodeReply::Error(e) => Err(node_error(&e)),
        ok => Ok(ok),
    }
}

/// Trickle ICE or an ICE restart for a WHIP session
/// (`application/trickle-ice-sdpfrag`, RFC 9725 §4.3). A fragment with new
/// `a=ice-ufrag`/`a=ice-pwd` restarts ICE and is answered with the node's
/// new credentials; `If-Match` (`*` or the `ETag` the session was given) is
/// checked when sent.
#[utoipa::path(patch, path = "/v1/whip/{room}/sessions/{node_id}/{session_id}", tag = "media", security(("participant" = [])),
    params(("room" = String, Path, description = "Room name"), ("node_id" = String, Path, description = "Media node"), ("session_id" = String, Path, description = "Session (`se_…`)")),
    request_body(content = String, content_type = "application/trickle-ice-sdpfrag"),
    responses(
        (status = 200, description = "ICE restarted (the fragment named new ICE credentials): the node's new credentials and candidates, and the new `ETag`", body = String, content_type = "application/trickle-ice-sdpfrag"),
        (status = 204, description = "Trickle candidates accepted"),
        (status = 400, description = "Malformed fragment", body = ErrorBody),
        (status = 404, description = "No such session", body = ErrorBody),
        (status = 412, description = "`If-Match` names an ICE state the session no longer has (`ice_state_changed`)", body = ErrorBody),
        (status = 415, description = "Not application/trickle-ice-sdpfrag", body = ErrorBody),
        (status = 422, description = "The session publishes simulcast layers, which an ICE restart would lose (`ice_restart_unsupported`): open a new session", body = ErrorBody),
    ))]
pub(crate) async fn whip_patch(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path((room, node, session)): Path<(String, String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    patch(&state, &headers, &room, &node, &session, &body).await
}

/// Trickle ICE or an ICE restart for a WHEP session (as for WHIP).
#[utoipa::path(patch, path = "/v1/whep/{room}/sessions/{node_id}/{session_id}", tag = "media", security(("participant" = [])),
    params(("room" = String, Path, description = "Room name"), ("node_id" = String, Path, description = "Media node"), ("session_id" = String, Path, description = "Session (`se_…`)")),
    request_body(content = String, content_type = "application/trickle-ice-sdpfrag"),
    responses(
        (status = 200, description = "ICE restarted (the fragment named new ICE credentials): the node's new credentials and candidates, and the new `ETag`", body = String, content_type = "application/trickle-ice-sdpfrag"),
        (status = 204, description = "Trickle candidates accepted"),
        (status = 400, description = "Malformed fragment", body = ErrorBody),
        (status = 404, description = "No such session", body = ErrorBody),
        (status = 412, description = "`If-Match` names an ICE state the session no longer has (`ice_state_changed`)", body = ErrorBody),
        (status = 415, description = "Not application/trickle-ice-sdpfrag", body = ErrorBody),
    ))]
pub(crate) async fn whep_patch(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path((room, node, session)): Path<(String, String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    patch(&state, &headers, &room, &node, &session, &body).await
}

async fn patch(
    state: &ApiState,
    headers: &HeaderMap,
    room: &str,
    node: &str,
    session: &str,
    body: &[u8],
) -> ApiResult<Response> {
    if !content_type_is(headers, "application/trickle-ice-sdpfrag") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send Content-Type: application/trickle-ice-sdpfrag",
        ));
    }
    let fragment = std::str::from_utf8(body).map_err(|_| ApiError::bad_request("sdpfrag", "not UTF-8"))?;
    let if_match = match headers.get(header::IF_MATCH).map(HeaderValue::to_str) {
        None => None,
        Some(Ok(v)) => Some(v.to_owned()),
        Some(Err(_)) => return Err(ApiError::bad_request("if_match", "If-Match is not visible ASCII")),
    };
    let req = NodeRequest::Patch { session_id: session_id(session)?, fragment: fragment.to_owned(), if_match };
    match session_request(state, headers, room, node, req).await? {
        NodeReply::Patched { fragment: Some(f), etag } => {
            let mut resp = (StatusCode::OK, f).into_response();
            let h = resp.headers_mut();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/trickle-ice-sdpfrag"));
            if let Some(v) = etag.and_then(|e| HeaderValue::from_str(&e).ok()) {
                h.insert(header::ETAG, v);
            }
            Ok(resp)
        }
        _ => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

/// End a WHIP session (the participant leaves).
#[utoipa::path(delete, path = "/v1/whip/{room}/sessions/{node_id}/{session_id}", tag = "media", security(("participant" = [])),
    params(("room" = String, Path, description = "Room name"), ("node_id" = String, Path, description = "Media node"), ("session_id" = String, Path, description = "Session (`se_…`)")),
    responses(
        (status = 200, description = "Ended"),
        (status = 404, description = "No such session", body = ErrorBody),
    ))]
pub(crate) async fn whip_delete(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path((room, node, session)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    let req = NodeRequest::Close { session_id: session_id(&session)? };
    session_request(&state, &headers, &room, &node, req).await?;
    Ok(StatusCode::OK.into_response())
}

/// End a WHEP session (the participant leaves).
#[utoipa::path(delete, path = "/v1/whep/{room}/sessions/{node_id}/{session_id}", tag = "media", security(("participant" = [])),
    params(("room" = String, Path, description = "Room name"), ("node_id" = String, Path, description = "Media node"), ("session_id" = String, Path, description = "Session (`se_…`)")),
    responses(
        (status = 200, description = "Ended"),
        (status = 404, description = "No such session", body = ErrorBody),
    ))]
pub(crate) async fn whep_delete(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path((room, node, session)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    let req = NodeRequest::Close { session_id: session_id(&session)? };
    session_request(&state, &headers, &room, &node, req).await?;
    Ok(StatusCode::OK.into_response())
}

/// CORS for the WHIP/WHEP endpoints, so a page on another origin can use
/// them: preflights are answered here, and answers expose `Location`.
pub(crate) async fn cors(req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let media = path.starts_with("/v1/whip/") || path.starts_with("/v1/whep/");
    if !media {
        return next.run(req).await;
    }
    let mut resp = if req.method() == Method::OPTIONS {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NO_CONTENT;
        let h = r.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("POST, PATCH, DELETE, OPTIONS"));
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("Authorization, Content-Type, If-Match"),
        );
        h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
        h.insert("accept-post", HeaderValue::from_static("application/sdp"));
        h.insert("accept-patch", HeaderValue::from_static("application/trickle-ice-sdpfrag"));
        r
    } else {
        next.run(req).await
    };
    let h = resp.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Location, ETag, Link, Accept-Patch, Accept-Post, Arc-Trace-Id"),
    );
    resp
}
