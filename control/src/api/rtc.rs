//! `GET /v1/rtc`: the signalling WebSocket of a room's participant
//! (protocol in `crate::signal::protocol`, schemas in `schemas/signal/`).
//!
//! Before the upgrade: the token is verified (`access_token` in the query,
//! as browsers cannot set headers on a WebSocket, or `Authorization:
//! Bearer`), the participant joins (a refusal is an HTTP status: 401, 403,
//! 409, 429), and the room is read from the read models once they hold the
//! join. After it: the first message is `join`; then each change of the
//! room that the log records is pushed, folded by the socket's `RoomView`;
//! the client's requests go through `usecase::signal`. The server pings
//! every quarter of `--signal-timeout-s`. A socket silent for that long, or
//! closed without `leave`, parks its session for the resume window (the
//! same time): a client that comes back with the `resume_token` of its
//! `join` (`?resume=`) takes the session over — same participant, its media
//! sessions untouched, nobody sees it leave; otherwise the janitor ends the
//! session (`connection_lost`) when the window runs out.

use std::sync::Arc;
use std::time::Instant;

use arc_events::room::LeaveReason;
use arc_events::{Envelope, ParticipantIdentity};
use arc_nodeproto::Role;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::sync::broadcast;

use super::ApiState;
use super::auth::{bearer_token, verify_token};
use super::error::{ApiError, ApiResult, ErrorBody};
use crate::signal::protocol::{self, ClientMessage, ServerEnvelope, ServerMessage};
use crate::signal::view::{After, RoomView};
use crate::usecase::signal::{self as uc, Holder, Joined};

/// Where the token may come from besides the `Authorization` header.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(crate) struct RtcQuery {
    /// The participant's access token (browsers cannot set headers on a WebSocket).
    access_token: Option<String>,
    /// The `resume_token` of an earlier `join`: take that session over
    /// (else, or when it cannot be resumed any more, join afresh).
    resume: Option<String>,
}

/// The signalling WebSocket: join the token's room and follow it live
/// (participants, their tracks and metadata, the room's metadata; removal
/// and closing), set your own metadata, keep alive, leave. Messages are
/// JSON text, `{"v": 1, "type": …}`, described by `schemas/signal/`.
#[utoipa::path(get, path = "/v1/rtc", tag = "rooms", params(RtcQuery),
    responses(
        (status = 101, description = "Switching protocols: the signalling WebSocket (schemas/signal/client.v1.json, server.v1.json)"),
        (status = 400, description = "Not a WebSocket upgrade", body = ErrorBody),
        (status = 401, description = "No token, or a bad, expired or revoked one", body = ErrorBody),
        (status = 403, description = "The token has no join grant, or its app is disabled", body = ErrorBody),
        (status = 409, description = "The room is closing; retry", body = ErrorBody),
        (status = 429, description = "A quota or the room's participant limit is reached", body = ErrorBody),
    ))]
pub(crate) async fn rtc(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Query(q): Query<RtcQuery>,
    ws: WebSocketUpgrade,
) -> ApiResult<Response> {
    let token = match q.access_token.as_deref() {
        Some(t) => t,
        None => bearer_token(&headers)?,
    };
    let (app, claims) = verify_token(&state, token).await?;
    if !claims.grants.join {
        return Err(ApiError::forbidden("permission_denied", "the token has no join grant"));
    }
    // Subscribed before the snapshot is read: what it misses arrives here.
    let events = state.signal.subscribe();
    let holder = Holder::new();
    let resumed = match q.resume.as_deref() {
        Some(token) => uc::resume(&state, &app, &claims, token, &holder, hold_for(&state)).await?,
        None => None,
    };
    let (joined, resume_token, resumed) = match resumed {
        Some((joined, token)) => (joined, token, true),
        None => {
            let joined = uc::join(&state, &app, &claims).await?;
            // Held from now: should this instance die with the socket open,
            // the janitor ends the session once the hold runs out.
            match uc::hold_socket(&state, &joined, &holder, hold_for(&state)).await {
                Ok(token) => (joined, token, false),
                Err(e) => {
                    leave_logged(&state, &joined, &holder, LeaveReason::ConnectionLost).await;
                    return Err(e.into());
                }
            }
        }
    };
    state.settle(joined.position).await;
    let view = match uc::snapshot(&state, joined.room_id.as_str(), joined.sid.as_str()).await {
        Ok(v) => v,
        Err(e) => {
            if !resumed {
                leave_logged(&state, &joined, &holder, LeaveReason::ConnectionLost).await;
            }
            return Err(e.into());
        }
    };
    // A resumed socket may close the media sessions its participant holds.
    let sessions = if resumed { uc::sessions_of(&state, &joined).await } else { Vec::new() };
    let failed = (state.clone(), joined.clone(), holder.clone());
    let socket = Socket { joined, holder, resume_token, resumed, sessions };
    Ok(ws
        .max_message_size(protocol::FRAME_BYTES_MAX)
        .on_failed_upgrade(move |e| {
            tracing::debug!(error = %e, "signalling upgrade failed");
            let (state, joined, holder) = failed;
            if !resumed {
                tokio::spawn(async move { leave_logged(&state, &joined, &holder, LeaveReason::ConnectionLost).await });
            }
        })
        .on_upgrade(move |ws| session(state, socket, view, events, ws)))
}

/// What a socket starts with.
struct Socket {
    joined: Joined,
    holder: Holder,
    resume_token: String,
    resumed: bool,
    /// Media sessions it may close (a resumed socket's participant's).
    sessions: Vec<String>,
}

/// How long one refresh of a socket's hold lasts: two silent timeouts.
fn hold_for(state: &ApiState) -> std::time::Duration {
    state.signal_timeout * 2
}

/// Ends the session and releases its socket's hold (kept when the leave
/// could not be recorded: the janitor ends the session later).
async fn leave_logged(state: &ApiState, joined: &Joined, holder: &Holder, reason: LeaveReason) {
    match uc::leave(state, joined, reason).await {
        Ok(()) => release_logged(state, joined, holder).await,
        Err(e) => tracing::warn!(sid = %joined.sid, error = %e, "recording a signalling participant's leave failed"),
    }
}

async fn release_logged(state: &ApiState, joined: &Joined, holder: &Holder) {
    if let Err(e) = uc::release_socket(state, joined, holder).await {
        tracing::warn!(sid = %joined.sid, error = %e, "releasing a signalling socket's hold failed");
    }
}

/// Close code for a socket whose session another socket resumed.
const CLOSE_RESUMED_ELSEWHERE: u16 = 4001;

/// Close codes: 1000 normal (left, removed, room closed), 1011 server error.
const CLOSE_NORMAL: u16 = 1000;
const CLOSE_ERROR: u16 = 1011;

async fn send(tx: &mut futures::stream::SplitSink<WebSocket, Message>, m: ServerMessage) -> bool {
    tx.send(Message::Text(ServerEnvelope::text(m).into())).await.is_ok()
}

async fn close(tx: &mut futures::stream::SplitSink<WebSocket, Message>, code: u16, reason: &'static str) {
    let _ = tx.send(Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
}

/// After a write a socket asked for: waits for the read models (everyone,
/// this socket too, hears of the change from the log), or says why it was
/// refused.
async fn settled_or_error(
    state: &ApiState,
    done: crate::usecase::UseCaseResult<Option<arc_eventlog::Position>>,
) -> Option<ServerMessage> {
    match done {
        Ok(position) => {
            state.settle(position).await;
            None
        }
        Err(e) => {
            let e = ApiError::from(e);
            Some(ServerMessage::Error { code: e.code.to_owned(), message: e.message, id: None })
        }
    }
}

/// Opens a media session for the socket; the message to send back.
async fn open_media(
    state: &ApiState,
    joined: &Joined,
    view: &RoomView,
    (role, screen): (Role, bool),
    sdp: &str,
    id: u64,
    sessions: &mut std::collections::HashSet<String>,
) -> ServerMessage {
    if sdp.len() > arc_nodeproto::OFFER_BYTES_MAX || !sdp.trim_start().starts_with("v=0") {
        return ServerMessage::Error {
            code: "bad_sdp".into(),
            message: "an SDP offer starts with v=0 and fits the offer size limit".into(),
            id: Some(id),
        };
    }
    let permissions = view.own().map(|p| p.permissions).unwrap_or_default();
    match uc::open_media(state, joined, permissions, role, screen, sdp).await {
        Ok(opened) => {
            sessions.insert(opened.session_id.clone());
            ServerMessage::Answer { id, session_id: opened.session_id, sdp: opened.answer }
        }
        Err(e) => {
            let e = ApiError::from(e);
            ServerMessage::Error { code: e.code.to_owned(), message: e.message, id: Some(id) }
        }
    }
}

/// One socket's life; ends its session unless the log already did.
async fn session(
    state: Arc<ApiState>,
    socket: Socket,
    mut view: RoomView,
    mut events: broadcast::Receiver<Arc<Envelope>>,
    ws: WebSocket,
) {
    let Socket { joined, holder, resume_token, resumed, sessions: held } = socket;
    let (mut tx, mut rx) = ws.split();
    // Set when another socket resumed this session: stand down, leave nothing.
    let mut superseded = false;
    // Set when the client went silent for the timeout: it had its time; no resume window.
    let mut silent = false;
    let mut data = state.signal_relay.subscribe();
    let mut signals = state.signal_relay.signals();
    // The media sessions this socket opened (only those it may close).
    let mut sessions: std::collections::HashSet<String> = held.into_iter().collect();
    let timeout = state.signal_timeout;
    let mut ping = tokio::time::interval(timeout / 4);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    let mut heard = Instant::now();
    let greeted = match view.state(true) {
        Some(mut m) => {
            if let ServerMessage::Join { moderator, resume_token: token, resumed: r, ice_servers, .. } = &mut m {
                *ice_servers = uc::ice_servers(&state.ice, &joined.sid, chrono::Utc::now());
                *moderator = joined.admin;
                *token = resume_token;
                *r = resumed;
            }
            send(&mut tx, m).await
        }
        None => false,
    };
    let end = match greeted {
        true => loop {
            tokio::select! {
                event = events.recv() => match event {
                    Ok(e) => {
                        let (messages, after) = view.fold(&e);
                        let mut sent = true;
                        for m in messages {
                            if matches!(m, ServerMessage::Reconnect { .. }) {
                                // The client joins again at once: this
                                // instance's read models must know its node
                                // is gone first, or placement would pick it.
                                if let Ok(head) = state.log.head().await {
                                    state.settle_quietly(head).await;
                                }
                            }
                            sent &= send(&mut tx, m).await;
                        }
                        if after == After::Close {
                            close(&mut tx, CLOSE_NORMAL, "session ended").await;
                            break None;
                        }
                        if !sent {
                            break Some(LeaveReason::ConnectionLost);
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        // Fell behind the room's changes: send it all again.
                        tracing::debug!(sid = %joined.sid, missed, "signalling socket lagged; resyncing");
                        match uc::snapshot(&state, joined.room_id.as_str(), joined.sid.as_str()).await {
                            Ok(v) => {
                                view = v;
                                match view.state(false) {
                                    Some(m) => {
                                        if !send(&mut tx, m).await {
                                            break Some(LeaveReason::ConnectionLost);
                                        }
                                    }
                                    // Gone from the room meanwhile.
                                    None => {
                                        let _ = send(&mut tx, ServerMessage::Removed { reason: LeaveReason::Other }).await;
                                        close(&mut tx, CLOSE_NORMAL, "session ended").await;
                                        break None;
                                    }
                                }
                            }
                            Err(e) => {
                                tracing::warn!(sid = %joined.sid, error = %e, "signalling resync failed");
                                close(&mut tx, CLOSE_ERROR, "resync failed").await;
                                break Some(LeaveReason::ConnectionLost);
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        close(&mut tx, CLOSE_ERROR, "server stopping").await;
                        break Some(LeaveReason::ConnectionLost);
                    }
                },
                data = data.recv() => match data {
                    Ok(m) if m.is_for(joined.room_id.as_str(), joined.sid.as_str(), joined.identity.as_str()) => {
                        let m = ServerMessage::Data {
                            from_sid: m.from_sid.clone(),
                            from_identity: m.from_identity.clone(),
                            payload: m.payload.clone(),
                            topic: m.topic.clone(),
                        };
                        if !send(&mut tx, m).await {
                            break Some(LeaveReason::ConnectionLost);
                        }
                    }
                    Ok(_) => {}
                    // Data messages are best effort: a socket that fell behind misses some.
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::debug!(sid = %joined.sid, missed, "signalling socket missed data messages");
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        close(&mut tx, CLOSE_ERROR, "server stopping").await;
                        break Some(LeaveReason::ConnectionLost);
                    }
                },
                signal = signals.recv() => match signal {
                    Ok(s) => {
                        if let Some(m) = view.signal(&s)
                            && !send(&mut tx, m).await
                        {
                            break Some(LeaveReason::ConnectionLost);
                        }
                    }
                    // Room signals are best effort: speakers and quality are said again at the next
                    // change, dynacast's layers within ten seconds.
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => {
                        close(&mut tx, CLOSE_ERROR, "server stopping").await;
                        break Some(LeaveReason::ConnectionLost);
                    }
                },
                message = rx.next() => match message {
                    Some(Ok(Message::Text(text))) => {
                        heard = Instant::now();
                        match protocol::parse_client(text.as_str()) {
                            Ok(ClientMessage::Ping { id }) => {
                                if !send(&mut tx, ServerMessage::Pong { id }).await {
                                    break Some(LeaveReason::ConnectionLost);
                                }
                            }
                            Ok(ClientMessage::UpdateMetadata { name, metadata }) => {
                                let done = uc::update_metadata(&state, &joined, name, metadata).await;
                                if let Some(m) = settled_or_error(&state, done).await
                                    && !send(&mut tx, m).await
                                {
                                    break Some(LeaveReason::ConnectionLost);
                                }
                            }
                            Ok(ClientMessage::Data { payload, to, topic }) => {
                                let permissions = view.own().map(|p| p.permissions).unwrap_or_default();
                                let sent = uc::send_data(&state, &joined, permissions, payload, to, topic).await;
                                if let Err((code, message)) = sent
                                    && !send(&mut tx, ServerMessage::Error { code: code.to_owned(), message, id: None }).await
                                {
                                    break Some(LeaveReason::ConnectionLost);
                                }
                            }
                            Ok(ClientMessage::Publish { id, sdp, screen }) => {
                                let answer =
                                    open_media(&state, &joined, &view, (Role::Publish, screen), &sdp, id, &mut sessions).await;
                                if !send(&mut tx, answer).await {
                                    break Some(LeaveReason::ConnectionLost);
                                }
                            }
                            Ok(ClientMessage::Subscribe { id, sdp, participant, screen }) => {
                                let answer = match participant.as_deref().map(ParticipantIdentity::parse).transpose() {
                                    Ok(participant) => {
                                        let role = Role::Subscribe { participant, screen };
                                        open_media(&state, &joined, &view, (role, false), &sdp, id, &mut sessions).await
                                    }
                                    Err(e) => ServerMessage::Error {
                                        code: "invalid".into(),
                                        message: format!("participant: {e}"),
                                        id: Some(id),
                                    },
                                };
                                if !send(&mut tx, answer).await {
                                    break Some(LeaveReason::ConnectionLost);
                                }
                            }
                            Ok(ClientMessage::CloseMedia { session_id }) => {
                                let refused = if sessions.remove(&session_id) {
                                    uc::close_media(&state, &joined, &session_id).await.err().map(|e| {
                                        let e = ApiError::from(e);
                                        (e.code.to_owned(), e.message)
                                    })
                                } else {
                                    Some(("not_found".to_owned(), "no such media session on this socket".to_owned()))
                                };
                                if let Some((code, message)) = refused
                                    && !send(&mut tx, ServerMessage::Error { code, message, id: None }).await
                                {
                                    break Some(LeaveReason::ConnectionLost);
                                }
                            }
                            Ok(ClientMessage::SetPreferredQuality { session_id, quality, width, height }) => {
                                let refused = if sessions.contains(&session_id) {
                                    let rendered = width.zip(height);
                                    uc::prefer_quality(&state, &joined, &session_id, quality, rendered).await.err().map(|e| {
                                        let e = ApiError::from(e);
                                        (e.code.to_owned(), e.message)
                                    })
                                } else {
                                    Some(("not_found".to_owned(), "no such media session on this socket".to_owned()))
                                };
                                if let Some((code, message)) = refused
                                    && !send(&mut tx, ServerMessage::Error { code, message, id: None }).await
                                {
                                    break Some(LeaveReason::ConnectionLost);
                                }
                            }
                            Ok(ClientMessage::RestartIce { id, session_id, ufrag, pwd }) => {
                                let answer = if sessions.contains(&session_id) {
                                    match uc::restart_ice(&state, &joined, &session_id, &ufrag, &pwd).await {
                                        Ok((ufrag, pwd)) => ServerMessage::IceRestarted { id, session_id, ufrag, pwd },
                                        Err(e) => {
                                            let e = ApiError::from(e);
                                            ServerMessage::Error { code: e.code.to_owned(), message: e.message, id: Some(id) }
                                        }
                                    }
                                } else {
                                    ServerMessage::Error {
                                        code: "not_found".into(),
                                        message: "no such media session on this socket".into(),
                                        id: Some(id),
                                    }
                                };
                                if !send(&mut tx, answer).await {
                                    break Some(LeaveReason::ConnectionLost);
                                }
                            }
                            Ok(
                                m @ (ClientMessage::MuteTrack { .. }
                                | ClientMessage::RemoveParticipant { .. }
                                | ClientMessage::UpdatePermissions { .. }
                                | ClientMessage::CloseRoom),
                            ) => {
                                let request = match m {
                                    ClientMessage::MuteTrack { track_id, muted } => {
                                        uc::Moderation::MuteTrack { track_id, muted }
                                    }
                                    ClientMessage::RemoveParticipant { identity } => uc::Moderation::Remove { identity },
                                    ClientMessage::UpdatePermissions { identity, permissions } => {
                                        uc::Moderation::Permissions { identity, permissions }
                                    }
                                    _ => uc::Moderation::CloseRoom,
                                };
                                let done = uc::moderate(&state, &joined, request).await;
                                if let Some(m) = settled_or_error(&state, done).await
                                    && !send(&mut tx, m).await
                                {
                                    break Some(LeaveReason::ConnectionLost);
                                }
                            }
                            Ok(ClientMessage::Leave) => break Some(LeaveReason::ClientLeft),
                            Err((code, message)) => {
                                if !send(&mut tx, ServerMessage::Error { code: code.to_owned(), message, id: None }).await {
                                    break Some(LeaveReason::ConnectionLost);
                                }
                            }
                        }
                    }
                    Some(Ok(Message::Binary(_))) => {
                        heard = Instant::now();
                        let m = ServerMessage::Error {
                            code: "bad_message".into(),
                            message: "messages are JSON text, not binary".into(),
                            id: None,
                        };
                        if !send(&mut tx, m).await {
                            break Some(LeaveReason::ConnectionLost);
                        }
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => heard = Instant::now(),
                    // A close without `leave` is a lost connection too: a
                    // browser closes the socket when the page goes away.
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break Some(LeaveReason::ConnectionLost),
                },
                _ = ping.tick() => {
                    // Still the session's holder? (First: a socket that went
                    // silent because it was resumed elsewhere must not end it.)
                    match uc::refresh_socket(&state, &joined, &holder, hold_for(&state)).await {
                        Ok(true) => {}
                        Ok(false) => {
                            // Resumed on another socket (this one was half-open).
                            superseded = true;
                            close(&mut tx, CLOSE_RESUMED_ELSEWHERE, "resumed elsewhere").await;
                            break Some(LeaveReason::ConnectionLost);
                        }
                        Err(e) => tracing::warn!(sid = %joined.sid, error = %e, "refreshing a signalling socket's hold failed"),
                    }
                    if heard.elapsed() > timeout {
                        silent = true;
                        close(&mut tx, CLOSE_NORMAL, "silent for too long").await;
                        break Some(LeaveReason::ConnectionLost);
                    }
                    if tx.send(Message::Ping(Vec::new().into())).await.is_err() {
                        break Some(LeaveReason::ConnectionLost);
                    }
                }
            }
        },
        false => Some(LeaveReason::ConnectionLost),
    };
    match end {
        // The log ended the session (removed, replaced, room closed).
        None => release_logged(&state, &joined, &holder).await,
        Some(_) if superseded => {}
        // Dropped without `leave`: parked for the resume window; the janitor
        // ends it (`connection_lost`) unless a socket resumes it first.
        Some(LeaveReason::ConnectionLost) if !silent => {
            match uc::refresh_socket(&state, &joined, &holder, state.signal_timeout).await {
                Ok(_) => {
                    tracing::debug!(sid = %joined.sid, "signalling socket dropped; its session waits for a resume")
                }
                Err(e) => {
                    tracing::warn!(sid = %joined.sid, error = %e, "parking a dropped socket's session failed; ending it");
                    leave_logged(&state, &joined, &holder, LeaveReason::ConnectionLost).await;
                }
            }
        }
        Some(reason) => {
            leave_logged(&state, &joined, &holder, reason).await;
            if reason == LeaveReason::ClientLeft {
                close(&mut tx, CLOSE_NORMAL, "left").await;
            }
        }
    }
}
