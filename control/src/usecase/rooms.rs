//! Rooms, participants, tracks and media sessions: what a client, an app
//! server or a moderator can ask, whatever the entry point.
//!
//! Every function takes the [`Actor`] the log records and typed inputs the
//! entry point has already authorized; it returns where its writes went in
//! the log (so the entry point can wait for its read models, or tell the
//! client where to read from).

use arc_auth::token::Claims;
use arc_eventlog::{ExecuteError, Position};
use arc_events::aggregate::participant::ParticipantCommand;
use arc_events::aggregate::room::{RoomCommand, RoomError, RoomStatus};
use arc_events::aggregate::track::TrackCommand;
use arc_events::participant::Permissions;
use arc_events::room::{LeaveReason, ParticipantJoined};
use arc_events::track::MutedBy;
use arc_events::{
    Actor, AggregateKind, AggregateRef, AppId, CommandMeta, MediaSessionId, NodeId, ParticipantIdentity,
    ParticipantSid, RoomId, TrackId,
};
use arc_nodeproto::{NodeReply, NodeRequest, OpenSession, Role};
use sha2::{Digest, Sha256};

use super::queries;
use super::{Services, UseCaseError, UseCaseResult};
use crate::projection::apps::AppRow;
use crate::projection::participants::ParticipantRow;
use crate::projection::tracks::TrackRow;

fn meta(actor: &Actor) -> CommandMeta {
    super::command_meta(actor)
}

/// The room id of an app's room name: rooms are addressed by name within
/// their app, so the id is derived (`rm_` + 32 hex of SHA-256), never stored
/// in a lookup table.
pub fn room_id_for(app_id: &AppId, name: &str) -> RoomId {
    let digest = Sha256::new().chain_update(app_id.as_str()).chain_update([0u8]).chain_update(name).finalize();
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    // INVARIANT: "rm_" + 32 hex digits is a valid token id.
    RoomId::parse(&format!("rm_{hex}")).unwrap_or_else(|_| RoomId::generate())
}

/// A room's aggregate from an id given by a caller.
pub fn room_ref(room_id: &str) -> UseCaseResult<AggregateRef> {
    AggregateRef::new(AggregateKind::Room, room_id).map_err(|e| UseCaseError::invalid("room_id", e))
}

fn quota_of(v: Option<i64>) -> Option<i64> {
    v.filter(|v| *v > 0)
}

pub(crate) fn app_id_of(app: &AppRow) -> UseCaseResult<AppId> {
    AppId::parse(&app.app_id).map_err(|_| UseCaseError::internal("bad app id in the read model"))
}

/// The app if it may act (exists, not deleted, not disabled).
pub async fn active_app(s: &Services, app_id: &AppId) -> UseCaseResult<AppRow> {
    let app = queries::app(&s.db, app_id.as_str())
        .await?
        .filter(|a| a.state != "deleted")
        .ok_or_else(|| UseCaseError::not_found("app_not_found", "app not found"))?;
    if app.state == "disabled" {
        return Err(UseCaseError::forbidden("app_disabled", "the app is disabled"));
    }
    Ok(app)
}

/// A room to open.
#[derive(Debug, Clone)]
pub struct NewRoom {
    pub name: String,
    pub max_participants: Option<u32>,
    pub empty_timeout_s: Option<u32>,
    pub metadata: Option<String>,
}

/// Opens the app's room `name` unless it is open already, within the app's
/// room quota: (its id, whether this call opened it, where it went in the log).
async fn ensure_room(
    s: &Services,
    actor: &Actor,
    app: &AppRow,
    room: NewRoom,
) -> UseCaseResult<(RoomId, bool, Option<Position>)> {
    let app_id = app_id_of(app)?;
    let room_id = room_id_for(&app_id, &room.name);
    let aggregate = AggregateRef::from(&room_id);
    let create = RoomCommand::Create {
        app_id,
        name: room.name,
        max_participants: room.max_participants,
        empty_timeout_s: room.empty_timeout_s,
        metadata: room.metadata,
    };
    // Under `max_rooms`, the app's quota turn (strict across instances),
    // taken before anything is read.
    let _turn = match quota_of(app.max_rooms) {
        Some(_) => Some(super::quota::turn(s, &app.app_id).await?),
        None => None,
    };
    let (current, _) = s.rooms.load(&aggregate).await?;
    if current.status == RoomStatus::Open {
        return Ok((room_id, false, None));
    }
    // Bad input is reported before any quota (decide is pure: this only validates).
    if let Err(e) = arc_events::Aggregate::decide(&current, &create, &arc_events::Context { now: chrono::Utc::now() }) {
        return Err(UseCaseError::RoomRefused(e));
    }
    if let Some(max) = quota_of(app.max_rooms)
        && queries::usage(&s.db, &app.app_id).await?.rooms_open >= max
    {
        return Err(UseCaseError::Quota { limit: "max_rooms", max });
    }
    match s.rooms.execute(&aggregate, &create, &meta(actor)).await {
        Ok(done) => Ok((room_id, true, done.appended.map(|a| a.last))),
        // Someone opened it at the same moment: that is what we wanted.
        Err(ExecuteError::Rejected(RoomError::AlreadyExists)) => Ok((room_id, false, None)),
        Err(e) => Err(e.into()),
    }
}

/// Opens a room (409 `room_exists` when a room of that name is open).
#[tracing::instrument(name = "usecase.create_room", skip_all)]
pub async fn create_room(
    s: &Services,
    actor: &Actor,
    app: &AppRow,
    room: NewRoom,
) -> UseCaseResult<(RoomId, Option<Position>)> {
    let room_id = room_id_for(&app_id_of(app)?, &room.name);
    let (current, _) = s.rooms.load(&AggregateRef::from(&room_id)).await?;
    if current.status == RoomStatus::Open {
        return Err(UseCaseError::RoomRefused(RoomError::AlreadyExists));
    }
    let (room_id, _, position) = ensure_room(s, actor, app, room).await?;
    Ok((room_id, position))
}

/// Closes a room: everyone in it leaves, and their media nodes end its sessions.
#[tracing::instrument(name = "usecase.close_room", skip_all)]
pub async fn close_room(s: &Services, actor: &Actor, room_id: &str) -> UseCaseResult<Option<Position>> {
    let aggregate = room_ref(room_id)?;
    // The nodes carrying the room's media, read before the participants leave.
    let nodes = queries::room_nodes(&s.db, room_id).await?;
    let done = s.rooms.execute(&aggregate, &RoomCommand::Close, &meta(actor)).await?;
    for node in &nodes {
        end_media(s, node, room_id, None, LeaveReason::RoomClosed).await;
    }
    Ok(done.appended.map(|a| a.last))
}

/// Replaces a room's metadata.
pub async fn set_room_metadata(
    s: &Services,
    actor: &Actor,
    room_id: &str,
    metadata: Option<String>,
) -> UseCaseResult<Option<Position>> {
    let command = RoomCommand::UpdateMetadata { metadata };
    let done = s.rooms.execute(&room_ref(room_id)?, &command, &meta(actor)).await?;
    Ok(done.appended.map(|a| a.last))
}

/// Asks a media node to end sessions the log already says have ended (one
/// participant session's, or the whole room's). A node that cannot be reached
/// is only logged: the log is already right, the node follows it and the
/// janitor's reconciliation ends them later, and a lost node's sessions end with it.
pub async fn end_media(s: &Services, node: &str, room_id: &str, sid: Option<&str>, reason: LeaveReason) {
    if s.fault_skip_node_requests {
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
    match s.media.request(node, req).await {
        Ok(reply) => tracing::debug!(%node, room_id, ?sid, ?reason, ?reply, "media sessions ended"),
        Err(e) => {
            tracing::warn!(%node, room_id, ?sid, ?reason, error = %e, "telling the media node to end sessions")
        }
    }
}

/// What a join did.
#[derive(Debug)]
pub struct JoinOutcome {
    /// Where the join went in the log (`None` if it was already so).
    pub position: Option<Position>,
    /// The room's seq after the join.
    pub seq: u64,
}

/// Joins `identity` to the room, within the app's quotas. An identity that is
/// in the room already is replaced: its older session leaves
/// (`duplicate_identity`) and its media node ends that session's media, so an
/// identity never has two live sessions in a room (a page refresh, or the
/// same token used twice).
#[tracing::instrument(name = "usecase.join", skip_all)]
pub async fn join(
    s: &Services,
    actor: &Actor,
    app: &AppRow,
    room_id: &RoomId,
    joined: ParticipantJoined,
) -> UseCaseResult<JoinOutcome> {
    let aggregate = AggregateRef::from(room_id);
    // Under `max_participants`, the app's quota turn (strict across
    // instances), held until the join is in the log.
    let _turn = match quota_of(app.max_participants) {
        Some(_) => Some(super::quota::turn(s, &app.app_id).await?),
        None => None,
    };
    if let Some(max) = quota_of(app.max_participants) {
        let (room, _) = s.rooms.load(&aggregate).await?;
        if !room.participants.contains_key(&joined.identity)
            && queries::usage(&s.db, &app.app_id).await?.participants >= max
        {
            return Err(UseCaseError::Quota { limit: "max_participants", max });
        }
    }
    let cap = quota_of(app.max_participants_per_room).and_then(|v| u32::try_from(v).ok());
    let new_node = joined.node_id.as_ref().map(ToString::to_string);
    let done = s.rooms.execute(&aggregate, &RoomCommand::Join { joined, cap }, &meta(actor)).await?;
    let replaced = done.events.iter().find_map(|e| match e {
        arc_events::RoomEvent::ParticipantLeft(l) if l.reason == LeaveReason::DuplicateIdentity => Some(l.sid.clone()),
        _ => None,
    });
    if let Some(old) = &replaced {
        // The older session's node: as the read model knows it, else the node
        // this join was placed on (placement keeps a room on one node).
        if let Some(node) = queries::node_of(&s.db, old.as_str()).await?.or(new_node) {
            end_media(s, &node, room_id.as_str(), Some(old.as_str()), LeaveReason::DuplicateIdentity).await;
        }
    }
    Ok(JoinOutcome { position: done.appended.map(|a| a.last), seq: done.seq })
}

/// A participant admitted by a gateway that authenticates its users itself.
#[derive(Debug, Clone)]
pub struct Admit {
    pub identity: ParticipantIdentity,
    pub name: Option<String>,
    pub node_id: Option<NodeId>,
    pub metadata: Option<String>,
}

/// Admits a participant to an open room: (its session id, the join's outcome).
#[tracing::instrument(name = "usecase.admit", skip_all)]
pub async fn admit(
    s: &Services,
    actor: &Actor,
    app: &AppRow,
    room_id: &RoomId,
    who: Admit,
) -> UseCaseResult<(ParticipantSid, JoinOutcome)> {
    let sid = ParticipantSid::generate();
    let joined = ParticipantJoined {
        identity: who.identity,
        sid: sid.clone(),
        name: who.name,
        node_id: who.node_id,
        jti: None,
        permissions: None,
        metadata: who.metadata,
    };
    Ok((sid, join(s, actor, app, room_id, joined).await?))
}

/// What a token's join did.
#[derive(Debug)]
pub struct TokenJoin {
    pub room_id: RoomId,
    /// Whether this join opened the room.
    pub room_created: bool,
    pub identity: ParticipantIdentity,
    pub sid: ParticipantSid,
    /// Who the log records: the token's holder.
    pub actor: Actor,
    /// The media node the session was placed on, if any.
    pub node: Option<NodeId>,
    /// Where the join went in the log (`None` if it was already so).
    pub position: Option<Position>,
}

/// Where a token's session goes: no media node (a signalling-only join), or
/// the node placement picks for the room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    None,
    MediaNode,
}

/// The join of an access token's holder, for every entry point that joins
/// with a token (`POST /v1/join`, WHIP/WHEP, later WebSocket signalling):
/// opens the token's room if needed (within `max_rooms`), places the
/// session on a media node if asked, and records the participant's session
/// with the token's name, grants, metadata and `jti` (within `max_participants`).
#[tracing::instrument(name = "usecase.join_with_token", skip_all)]
pub async fn join_with_token(
    s: &Services,
    app: &AppRow,
    claims: &Claims,
    placement: Placement,
) -> UseCaseResult<TokenJoin> {
    let app_id = app_id_of(app)?;
    let identity = ParticipantIdentity::parse(&claims.sub).map_err(|e| UseCaseError::invalid("token sub", e))?;
    let actor = Actor::Participant { app_id, identity: identity.clone() };
    let room = NewRoom { name: claims.room.clone(), max_participants: None, empty_timeout_s: None, metadata: None };
    let (room_id, room_created, _) = ensure_room(s, &actor, app, room).await?;
    let node = match placement {
        Placement::None => None,
        Placement::MediaNode => {
            let node = s.media.place(&s.db, room_id.as_str()).await?;
            Some(NodeId::parse(&node).map_err(|_| UseCaseError::internal("bad node id in the read model"))?)
        }
    };
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
    let position = join(s, &actor, app, &room_id, joined).await?.position;
    Ok(TokenJoin { room_id, room_created, identity, sid, actor, node, position })
}

/// A media session a token's holder opened (WHIP publish, WHEP play).
#[derive(Debug)]
pub struct MediaSession {
    pub room_id: RoomId,
    pub node: NodeId,
    pub session_id: MediaSessionId,
    /// The SDP answer.
    pub answer: String,
    /// The entity tag of the session's ICE state (WHIP/WHEP `ETag`).
    pub etag: Option<String>,
    /// Where the join went in the log.
    pub position: Option<Position>,
}

/// Opens a media session for a token's holder: the join (room opened and
/// placed if needed), then the session on the room's media node. If the
/// node refuses or cannot be reached, the log records that the participant
/// left (`connection_lost`); if a newer session of the same identity joined
/// meanwhile, this one is ended and refused (`SessionReplaced`).
#[tracing::instrument(name = "usecase.open_media_session", skip_all)]
pub async fn open_media_session(
    s: &Services,
    app: &AppRow,
    claims: &Claims,
    role: Role,
    offer: &str,
) -> UseCaseResult<MediaSession> {
    let TokenJoin { room_id, identity, sid, actor, node, position, .. } =
        join_with_token(s, app, claims, Placement::MediaNode).await?;
    let node = node.ok_or_else(|| UseCaseError::internal("no media node was placed"))?;
    let req = OpenSession {
        room_id: room_id.clone(),
        identity: identity.clone(),
        sid: sid.clone(),
        role,
        offer: offer.to_owned(),
        attached: false,
        screen: false,
    };
    let outcome = s.media.request(node.as_str(), NodeRequest::Open(req)).await;
    let aggregate = AggregateRef::from(&room_id);
    let opened = match outcome {
        Ok(NodeReply::Opened(o)) => o,
        failed => {
            // The participant never got media: record that it left.
            let leave = RoomCommand::Leave { identity, sid, reason: LeaveReason::ConnectionLost };
            if let Err(e) = s.rooms.execute(&aggregate, &leave, &meta(&actor)).await {
                tracing::warn!(error = %e, "recording the leave of a failed session");
            }
            return Err(match failed {
                Ok(NodeReply::Error(e)) => UseCaseError::Node(e),
                Ok(other) => UseCaseError::internal(format!("unexpected reply from the media node: {other:?}")),
                Err(e) => e.into(),
            });
        }
    };
    // A newer join of the same identity may have replaced this one while the
    // node opened it; its end request may then have reached the node before
    // this session existed. Checked now that the session exists, one of the
    // two always sees the other: either the replacing join ends this session
    // on the node, or this check finds it replaced and ends it here.
    let (room_now, _) = s.rooms.load(&aggregate).await?;
    if room_now.participants.get(&identity) != Some(&sid) {
        end_media(s, node.as_str(), room_id.as_str(), Some(sid.as_str()), LeaveReason::DuplicateIdentity).await;
        return Err(UseCaseError::SessionReplaced { identity: identity.to_string() });
    }
    Ok(MediaSession {
        room_id,
        node,
        session_id: opened.session_id,
        answer: opened.answer,
        etag: opened.etag,
        position,
    })
}

/// What [`remove`] ended: the participant session, its read-model row as it
/// was, and the position of the leave (`None` when nothing was appended).
pub type Removed = (ParticipantSid, Option<ParticipantRow>, Option<Position>);

/// Ends the participant's session (the named one, or the identity's
/// current one) and its media: the session that left and its read-model row
/// as it was, or `None` when it was not in the room.
#[tracing::instrument(name = "usecase.remove", skip_all)]
pub async fn remove(
    s: &Services,
    actor: &Actor,
    room_id: &str,
    identity: &str,
    sid: Option<&str>,
    reason: LeaveReason,
) -> UseCaseResult<Option<Removed>> {
    let identity = ParticipantIdentity::parse(identity).map_err(|e| UseCaseError::invalid("identity", e))?;
    let aggregate = room_ref(room_id)?;
    let (room, _) = s.rooms.load(&aggregate).await?;
    let current = room.participants.get(&identity).cloned();
    let sid = match sid {
        Some(v) => ParticipantSid::parse(v).map_err(|e| UseCaseError::invalid("sid", e))?,
        None => match current {
            Some(v) => v,
            None => return Ok(None),
        },
    };
    // The row of the session that ends (by sid: never another session of the identity).
    let row = queries::participant(&s.db, sid.as_str()).await?;
    let command = RoomCommand::Leave { identity, sid: sid.clone(), reason };
    let done = s.rooms.execute(&aggregate, &command, &meta(actor)).await?;
    if done.events.is_empty() {
        return Ok(None);
    }
    // Its media ends too (by sid: a newer session of the identity stays).
    if let Some(node) = row.as_ref().and_then(|r| r.node_id.as_deref()) {
        end_media(s, node, room_id, Some(sid.as_str()), reason).await;
    }
    Ok(Some((sid, row, done.appended.map(|a| a.last))))
}

/// What a kick did.
#[derive(Debug)]
pub struct Kick {
    pub sid: String,
    /// Whether the token it joined with was revoked (false for gateway-admitted participants).
    pub token_revoked: bool,
    pub position: Option<Position>,
}

/// Kicks the identity out of the room: the token it joined with is revoked
/// first (a retry after a failed leave finds it refused already), then it
/// leaves (`kicked`) and its media ends.
#[tracing::instrument(name = "usecase.kick", skip_all)]
pub async fn kick(s: &Services, actor: &Actor, app_id: &str, room_id: &str, identity: &str) -> UseCaseResult<Kick> {
    let participant = queries::active_participant(&s.db, room_id, identity)
        .await?
        .ok_or_else(|| UseCaseError::not_found("participant_not_found", "no such participant in the room"))?;
    let mut token_revoked = false;
    let mut position = None;
    if let Some(jti) = &participant.jti {
        let app_id = AppId::parse(app_id).map_err(|_| UseCaseError::internal("bad app id in the read model"))?;
        position = super::apps::revoke_token(s, actor, &app_id, jti.clone(), None, Some("kicked".into())).await?;
        token_revoked = true;
    }
    if let Some((_, _, p)) = remove(s, actor, room_id, identity, Some(&participant.sid), LeaveReason::Kicked).await? {
        position = p.or(position);
    } else if let Some(node) = &participant.node_id {
        // Already gone from the log: make sure its media is too.
        end_media(s, node, room_id, Some(&participant.sid), LeaveReason::Kicked).await;
    }
    Ok(Kick { sid: participant.sid, token_revoked, position })
}

/// The identity's current session in the room (404 when it is not in it).
pub async fn participant_in(s: &Services, room_id: &str, identity: &str) -> UseCaseResult<ParticipantRow> {
    queries::active_participant(&s.db, room_id, identity)
        .await?
        .ok_or_else(|| UseCaseError::not_found("participant_not_found", "no such participant in the room"))
}

fn participant_ref(sid: &str) -> UseCaseResult<AggregateRef> {
    AggregateRef::new(AggregateKind::Participant, sid).map_err(|_| UseCaseError::internal("bad sid in the read model"))
}

/// A participant's change of permissions, or of name and metadata.
#[derive(Debug, Clone)]
pub enum ParticipantChange {
    Permissions(Permissions),
    Metadata { name: Option<String>, metadata: Option<String> },
}

/// Changes what the identity's current session may do, or its name and metadata.
#[tracing::instrument(name = "usecase.change_participant", skip_all)]
pub async fn change_participant(
    s: &Services,
    actor: &Actor,
    room_id: &str,
    identity: &str,
    change: ParticipantChange,
) -> UseCaseResult<Option<Position>> {
    let p = participant_in(s, room_id, identity).await?;
    let room_id = RoomId::parse(room_id).map_err(|e| UseCaseError::invalid("room_id", e))?;
    let identity = ParticipantIdentity::parse(identity).map_err(|e| UseCaseError::invalid("identity", e))?;
    let command = match change {
        ParticipantChange::Permissions(permissions) => {
            ParticipantCommand::SetPermissions { room_id, identity, permissions }
        }
        ParticipantChange::Metadata { name, metadata } => {
            ParticipantCommand::UpdateMetadata { room_id, identity, name, metadata }
        }
    };
    let done = s.participants.execute(&participant_ref(&p.sid)?, &command, &meta(actor)).await?;
    Ok(done.appended.map(|a| a.last))
}

/// Mutes or unmutes a published track of the room (as a moderator), and
/// tells its media node at once (the node also follows the log).
#[tracing::instrument(name = "usecase.mute_track", skip_all)]
pub async fn mute_track(
    s: &Services,
    actor: &Actor,
    room_id: &str,
    track_id: &str,
    muted: bool,
) -> UseCaseResult<Option<Position>> {
    let not_found = || UseCaseError::not_found("track_not_found", "no such track in the room");
    let track = TrackId::parse(track_id).map_err(|e| UseCaseError::invalid("track_id", e))?;
    let aggregate = AggregateRef::from(&track);
    let (state, _) = s.tracks.load(&aggregate).await?;
    if state.room_id.as_ref().map(RoomId::as_str) != Some(room_id) {
        return Err(not_found());
    }
    let command = TrackCommand::SetMuted { muted, by: MutedBy::Moderator };
    let done = s.tracks.execute(&aggregate, &command, &meta(actor)).await?;
    // The media node stops (or resumes) forwarding the track now.
    let sid = queries::track(&s.db, track_id).await?.map(|t: TrackRow| t.sid);
    let node = match &sid {
        Some(sid) => queries::node_of(&s.db, sid).await?,
        None => None,
    };
    if let Some(node) = node.filter(|_| !s.fault_skip_node_requests) {
        let req = NodeRequest::Mute { track_id: track, muted };
        if let Err(e) = s.media.request(&node, req).await {
            tracing::warn!(%node, error = %e, "telling the media node about a mute");
        }
    }
    Ok(done.appended.map(|a| a.last))
}
