//! The use cases of a signalling socket (`/v1/rtc`): join with a token (no
//! media node yet), the room as the read models hold it, the participant's
//! own metadata, and leaving.

use std::collections::BTreeMap;

use arc_auth::token::Claims;
use arc_eventlog::Position;
use arc_events::participant::Permissions;
use arc_events::room::LeaveReason;
use arc_events::track::{MediaKind, TrackSource};
use arc_events::{Actor, ParticipantIdentity, ParticipantSid, RoomId};

use super::rooms::{self, ParticipantChange, Placement, TokenJoin};
use super::{Services, UseCaseError, UseCaseResult, queries};
use crate::projection::apps::AppRow;
use crate::signal::protocol::{ParticipantInfo, RoomInfo, TrackInfo};
use crate::signal::view::RoomView;

/// A socket's participant session.
#[derive(Debug, Clone)]
pub struct Joined {
    pub room_id: RoomId,
    pub identity: ParticipantIdentity,
    pub sid: ParticipantSid,
    pub actor: Actor,
    /// The media node its sessions open on (none: no node was available, or
    /// its token may neither publish nor subscribe).
    pub node: Option<arc_events::NodeId>,
    /// Its token's `admin` grant: it may moderate the room.
    pub admin: bool,
    /// Where the join went in the log.
    pub position: Option<Position>,
}

/// A moderator's request through the socket.
#[derive(Debug, Clone)]
pub enum Moderation {
    MuteTrack { track_id: String, muted: bool },
    Remove { identity: String },
    Permissions { identity: String, permissions: Permissions },
    CloseRoom,
}

/// Does a moderator's request (the token's `admin` grant), as the REST API
/// does it for the app: the log records the socket's participant as the actor.
pub async fn moderate(s: &Services, joined: &Joined, request: Moderation) -> UseCaseResult<Option<Position>> {
    if !joined.admin {
        return Err(UseCaseError::forbidden("permission_denied", "moderation needs the admin grant"));
    }
    let room = joined.room_id.as_str();
    match request {
        Moderation::MuteTrack { track_id, muted } => rooms::mute_track(s, &joined.actor, room, &track_id, muted).await,
        Moderation::Remove { identity } => {
            let removed = rooms::remove(s, &joined.actor, room, &identity, None, LeaveReason::Removed).await?;
            match removed {
                Some((_, _, position)) => Ok(position),
                None => Err(UseCaseError::not_found("participant_not_found", "no such participant in the room")),
            }
        }
        Moderation::Permissions { identity, permissions } => {
            rooms::change_participant(s, &joined.actor, room, &identity, ParticipantChange::Permissions(permissions))
                .await
        }
        Moderation::CloseRoom => rooms::close_room(s, &joined.actor, room).await,
    }
}

/// Joins the token's room as a signalling participant (no media node yet):
/// the room opens if needed, quotas hold, a session of the same identity is
/// replaced.
/// A token that may publish or subscribe is placed on the room's media node
/// (where its sessions will open); without a node it joins all the same,
/// and its media requests answer `no_media_node`.
pub async fn join(s: &Services, app: &AppRow, claims: &Claims) -> UseCaseResult<Joined> {
    let media = claims.grants.publish || claims.grants.subscribe;
    let joined = if media {
        match rooms::join_with_token(s, app, claims, Placement::MediaNode).await {
            Err(UseCaseError::Route(crate::media::RouteError::NoNode)) => {
                rooms::join_with_token(s, app, claims, Placement::None).await
            }
            other => other,
        }
    } else {
        rooms::join_with_token(s, app, claims, Placement::None).await
    };
    let TokenJoin { room_id, identity, sid, actor, node, position, .. } = joined?;
    Ok(Joined { room_id, identity, sid, actor, node, admin: claims.grants.admin, position })
}

/// Sends a data message from the socket's participant to its room (or the
/// listed identities): needs `publish_data` now and fits the limits. Refusals
/// come with the protocol's error code (`permission_denied`, `too_large`,
/// `invalid`, `unavailable`).
pub async fn send_data(
    s: &Services,
    joined: &Joined,
    permissions: Permissions,
    payload: String,
    to: Vec<String>,
    topic: Option<String>,
) -> Result<(), (&'static str, String)> {
    if !permissions.publish_data {
        return Err(("permission_denied", "your token has no publish_data grant".to_owned()));
    }
    crate::signal::protocol::check_data(&payload, &to, topic.as_deref())?;
    let m = crate::signal::relay::DataMessage {
        room_id: joined.room_id.to_string(),
        from_sid: joined.sid.to_string(),
        from_identity: joined.identity.to_string(),
        to,
        topic,
        payload,
    };
    s.signal_relay.send(m).await.map_err(|e| ("unavailable", e.to_string()))
}

/// A media session opened for a socket.
#[derive(Debug, Clone)]
pub struct MediaOpened {
    pub session_id: String,
    pub answer: String,
}

/// Opens a media session for the socket's participant on its node: publish
/// (needs the `publish` permission now) or subscribe (`subscribe`), the
/// room's latest publisher or the named one. Its end does not end the
/// participant (`attached`).
pub async fn open_media(
    s: &Services,
    joined: &Joined,
    permissions: arc_events::participant::Permissions,
    role: arc_nodeproto::Role,
    screen: bool,
    offer: &str,
) -> UseCaseResult<MediaOpened> {
    let publish = role == arc_nodeproto::Role::Publish;
    if publish && !permissions.publish {
        return Err(UseCaseError::forbidden("permission_denied", "you may not publish in this room"));
    }
    if !publish && !permissions.subscribe {
        return Err(UseCaseError::forbidden("permission_denied", "you may not subscribe in this room"));
    }
    let Some(node) = &joined.node else {
        return Err(UseCaseError::Route(crate::media::RouteError::NoNode));
    };
    let req = arc_nodeproto::OpenSession {
        room_id: joined.room_id.clone(),
        identity: joined.identity.clone(),
        sid: joined.sid.clone(),
        role,
        offer: offer.to_owned(),
        attached: true,
        screen,
    };
    match s.media.request(node.as_str(), arc_nodeproto::NodeRequest::Open(req)).await? {
        arc_nodeproto::NodeReply::Opened(o) => {
            Ok(MediaOpened { session_id: o.session_id.to_string(), answer: o.answer })
        }
        arc_nodeproto::NodeReply::Error(e) => Err(UseCaseError::Node(e)),
        other => Err(UseCaseError::internal(format!("unexpected reply from the media node: {other:?}"))),
    }
}

/// The node of a socket's participant and one of its media sessions' ids,
/// for a request about that session.
fn placed_session<'a>(
    joined: &'a Joined,
    session_id: &str,
) -> UseCaseResult<(&'a arc_events::NodeId, arc_events::MediaSessionId)> {
    let Some(node) = &joined.node else {
        return Err(UseCaseError::Route(crate::media::RouteError::NoNode));
    };
    let session_id =
        arc_events::MediaSessionId::parse(session_id).map_err(|e| UseCaseError::invalid("session_id", e))?;
    Ok((node, session_id))
}

/// Restarts ICE on one of the socket's media sessions with the client's
/// new credentials; answers the node's new ones (`ufrag`, `pwd`).
pub async fn restart_ice(
    s: &Services,
    joined: &Joined,
    session_id: &str,
    ufrag: &str,
    pwd: &str,
) -> UseCaseResult<(String, String)> {
    let (node, session_id) = placed_session(joined, session_id)?;
    // One credential per line: nothing else may ride into the fragment.
    if [ufrag, pwd].iter().any(|v| v.is_empty() || v.contains(['\r', '\n'])) {
        return Err(UseCaseError::invalid("ufrag", "ufrag and pwd are one ICE credential each"));
    }
    let fragment = format!("a=ice-ufrag:{ufrag}\r\na=ice-pwd:{pwd}\r\n");
    let req = arc_nodeproto::NodeRequest::Patch { session_id, fragment, if_match: Some("*".into()) };
    match s.media.request(node.as_str(), req).await? {
        arc_nodeproto::NodeReply::Patched { fragment: Some(answer), .. } => {
            let value =
                |name: &str| answer.lines().find_map(|l| l.trim_end().strip_prefix(name)).map(|v| v.trim().to_owned());
            match (value("a=ice-ufrag:"), value("a=ice-pwd:")) {
                (Some(u), Some(p)) => Ok((u, p)),
                _ => Err(UseCaseError::internal("the node's ICE restart answer has no credentials")),
            }
        }
        arc_nodeproto::NodeReply::Patched { fragment: None, .. } => Err(UseCaseError::invalid(
            "ufrag",
            "those are the session's ICE credentials already: an ICE restart needs new ones",
        )),
        arc_nodeproto::NodeReply::Error(e) => Err(UseCaseError::Node(e)),
        other => Err(UseCaseError::internal(format!("unexpected reply from the media node: {other:?}"))),
    }
}

/// Tells the node what a player session wants of the video it plays
/// (simulcast layers: at most `quality`, no larger than the rendered size).
pub async fn prefer_quality(
    s: &Services,
    joined: &Joined,
    session_id: &str,
    quality: arc_nodeproto::VideoQuality,
    rendered: Option<(u32, u32)>,
) -> UseCaseResult<()> {
    let (node, session_id) = placed_session(joined, session_id)?;
    if rendered.is_some_and(|(w, h)| w == 0 || h == 0 || w > 16_384 || h > 16_384) {
        return Err(UseCaseError::invalid("width", "a rendered size is 1 to 16384 pixels each way"));
    }
    let (width, height) = rendered.unzip();
    let req = arc_nodeproto::NodeRequest::Prefer { session_id, quality, width, height };
    match s.media.request(node.as_str(), req).await? {
        arc_nodeproto::NodeReply::Preferred { found: true } => Ok(()),
        arc_nodeproto::NodeReply::Preferred { found: false } => {
            Err(UseCaseError::invalid("session_id", "that session plays no video"))
        }
        arc_nodeproto::NodeReply::Error(e) => Err(UseCaseError::Node(e)),
        other => Err(UseCaseError::internal(format!("unexpected reply from the media node: {other:?}"))),
    }
}

/// Closes one of the socket's media sessions (its tracks and subscriptions end).
pub async fn close_media(s: &Services, joined: &Joined, session_id: &str) -> UseCaseResult<()> {
    let Some(node) = &joined.node else { return Ok(()) };
    let session_id =
        arc_events::MediaSessionId::parse(session_id).map_err(|e| UseCaseError::invalid("session_id", e))?;
    match s.media.request(node.as_str(), arc_nodeproto::NodeRequest::Close { session_id }).await? {
        arc_nodeproto::NodeReply::Error(e) => Err(UseCaseError::Node(e)),
        _ => Ok(()),
    }
}

/// The room as the read models hold it, seen by the session `me`.
pub async fn snapshot(s: &Services, room_id: &str, me: &str) -> UseCaseResult<RoomView> {
    let room = queries::room(&s.db, room_id)
        .await?
        .ok_or_else(|| UseCaseError::internal("the room is not in the read model"))?;
    let info = RoomInfo {
        room_id: room.room_id.clone(),
        name: room.name.clone(),
        metadata: room.metadata.clone(),
        max_participants: room.max_participants.and_then(|m| u32::try_from(m).ok()),
    };
    let mut tracks: BTreeMap<String, Vec<TrackInfo>> = BTreeMap::new();
    for t in queries::room_tracks(&s.db, room_id).await? {
        let kind = if t.kind == "audio" { MediaKind::Audio } else { MediaKind::Video };
        let source = serde_json::from_value(serde_json::Value::String(t.source.clone())).unwrap_or(TrackSource::Other);
        tracks.entry(t.sid.clone()).or_default().push(TrackInfo {
            track_id: t.track_id,
            sid: t.sid,
            kind,
            source,
            codec: t.codec,
            simulcast: t.simulcast,
            muted: t.muted,
        });
    }
    let participants = queries::active_participants(&s.db, room_id)
        .await?
        .into_iter()
        .map(|p| ParticipantInfo {
            tracks: tracks.remove(&p.sid).unwrap_or_default(),
            permissions: p
                .permissions
                .as_deref()
                .and_then(|j| serde_json::from_str::<Permissions>(j).ok())
                .unwrap_or_default(),
            sid: p.sid,
            identity: p.identity,
            name: p.name,
            metadata: p.metadata,
            joined_at_ms: p.joined_at_ms,
        })
        .collect();
    Ok(RoomView::new(info, me, participants))
}

/// Sets the session's own display name and/or metadata.
pub async fn update_metadata(
    s: &Services,
    joined: &Joined,
    name: Option<String>,
    metadata: Option<String>,
) -> UseCaseResult<Option<Position>> {
    rooms::change_participant(
        s,
        &joined.actor,
        joined.room_id.as_str(),
        joined.identity.as_str(),
        ParticipantChange::Metadata { name, metadata },
    )
    .await
}

/// Ends the session (and only it: a newer session of the identity stays).
pub async fn leave(s: &Services, joined: &Joined, reason: LeaveReason) -> UseCaseResult<()> {
    rooms::remove(
        s,
        &joined.actor,
        joined.room_id.as_str(),
        joined.identity.as_str(),
        Some(joined.sid.as_str()),
        reason,
    )
    .await?;
    Ok(())
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The STUN and TURN servers a participant's connections may use: the TURN
/// ones with credentials derived for its sid, good for the configured time
/// from `now`.
pub fn ice_servers(
    ice: &crate::config::IceSettings,
    sid: &ParticipantSid,
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<crate::signal::protocol::IceServer> {
    let mut out = Vec::new();
    if !ice.stun.is_empty() {
        out.push(crate::signal::protocol::IceServer { urls: ice.stun.clone(), username: None, credential: None });
    }
    if let (false, Some(secret)) = (ice.turn.is_empty(), &ice.turn_secret) {
        let expires = now.timestamp().saturating_add(i64::try_from(ice.turn_ttl.as_secs()).unwrap_or(i64::MAX));
        let (username, credential) = arc_auth::turn::credentials(secret, sid.as_str(), expires);
        out.push(crate::signal::protocol::IceServer {
            urls: ice.turn.clone(),
            username: Some(username),
            credential: Some(credential),
        });
    }
    out
}

/// A socket's hold on its session (`signal_sockets`): which socket holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder(pub String);

impl Holder {
    /// A fresh id for a new socket.
    pub fn new() -> Self {
        Self(random_hex(16))
    }
}

impl Default for Holder {
    fn default() -> Self {
        Self::new()
    }
}

fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut b = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn sha256_hex(s: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(s.as_bytes()).iter().map(|x| format!("{x:02x}")).collect()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A new resume token for a session: `<sid>.<secret>`, and the hash the
/// row keeps.
fn resume_token(sid: &ParticipantSid) -> (String, String) {
    let secret = random_hex(32);
    (format!("{sid}.{secret}"), sha256_hex(&secret))
}

/// Records that `holder` holds the session's socket until `for_` from now,
/// with a new resume token (returned: the client's to keep).
pub async fn hold_socket(
    s: &Services,
    joined: &Joined,
    holder: &Holder,
    for_: std::time::Duration,
) -> UseCaseResult<String> {
    let expires = now_ms().saturating_add(i64::try_from(for_.as_millis()).unwrap_or(i64::MAX));
    let (token, hash) = resume_token(&joined.sid);
    sqlx::query(
        "INSERT INTO signal_sockets (sid, room_id, identity, expires_at_ms, resume_hash, holder) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (sid) DO UPDATE SET expires_at_ms = excluded.expires_at_ms, resume_hash = excluded.resume_hash, holder = excluded.holder",
    )
    .bind(joined.sid.as_str())
    .bind(joined.room_id.as_str())
    .bind(joined.identity.as_str())
    .bind(expires)
    .bind(&hash)
    .bind(&holder.0)
    .execute(&s.db.pool)
    .await?;
    Ok(token)
}

/// Pushes the hold forward to `for_` from now — while the socket is open
/// (refresh), or once for the resume window after it dropped (park).
/// Answers whether `holder` still holds the session (`false`: a resumed
/// socket took it over, or it ended): then this socket stands down.
pub async fn refresh_socket(
    s: &Services,
    joined: &Joined,
    holder: &Holder,
    for_: std::time::Duration,
) -> UseCaseResult<bool> {
    let expires = now_ms().saturating_add(i64::try_from(for_.as_millis()).unwrap_or(i64::MAX));
    let done = sqlx::query("UPDATE signal_sockets SET expires_at_ms = $1 WHERE sid = $2 AND holder = $3")
        .bind(expires)
        .bind(joined.sid.as_str())
        .bind(&holder.0)
        .execute(&s.db.pool)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Takes over a signalling session from its resume token: the token's
/// holder (same app, identity and room), the secret matching, the
/// participant still active. The session gets a new holder and a new
/// resume token (returned with it). `None` when it cannot be resumed (then
/// the client joins afresh).
pub async fn resume(
    s: &Services,
    app: &AppRow,
    claims: &Claims,
    token: &str,
    holder: &Holder,
    for_: std::time::Duration,
) -> UseCaseResult<Option<(Joined, String)>> {
    let Some((sid, secret)) = token.split_once('.') else { return Ok(None) };
    let Ok(sid) = ParticipantSid::parse(sid) else { return Ok(None) };
    let app_id = rooms::app_id_of(app)?;
    let Ok(identity) = ParticipantIdentity::parse(&claims.sub) else { return Ok(None) };
    let room_id = rooms::room_id_for(&app_id, &claims.room);
    let row: Option<(String, String, Option<String>)> =
        sqlx::query_as("SELECT room_id, identity, resume_hash FROM signal_sockets WHERE sid = $1")
            .bind(sid.as_str())
            .fetch_optional(&s.db.pool)
            .await?;
    let Some((row_room, row_identity, Some(hash))) = row else { return Ok(None) };
    if row_room != room_id.as_str()
        || row_identity != identity.as_str()
        || !constant_time_eq(sha256_hex(secret).as_bytes(), hash.as_bytes())
    {
        return Ok(None);
    }
    let node: Option<Option<String>> =
        sqlx::query_scalar("SELECT node_id FROM participants WHERE sid = $1 AND state = 'active'")
            .bind(sid.as_str())
            .fetch_optional(&s.db.pool)
            .await?;
    let Some(node) = node else { return Ok(None) };
    let (new_token, new_hash) = resume_token(&sid);
    let expires = now_ms().saturating_add(i64::try_from(for_.as_millis()).unwrap_or(i64::MAX));
    // Only one taker: the row must still carry the hash that was checked.
    let took = sqlx::query(
        "UPDATE signal_sockets SET holder = $1, resume_hash = $2, expires_at_ms = $3 WHERE sid = $4 AND resume_hash = $5",
    )
    .bind(&holder.0)
    .bind(&new_hash)
    .bind(expires)
    .bind(sid.as_str())
    .bind(&hash)
    .execute(&s.db.pool)
    .await?;
    if took.rows_affected() != 1 {
        return Ok(None);
    }
    let joined = Joined {
        room_id,
        identity: identity.clone(),
        sid,
        actor: Actor::Participant { app_id, identity },
        node: node.and_then(|n| arc_events::NodeId::parse(&n).ok()),
        admin: claims.grants.admin,
        position: None,
    };
    Ok(Some((joined, new_token)))
}

/// The media sessions a participant holds on its node (a resumed socket may
/// close those).
pub async fn sessions_of(s: &Services, joined: &Joined) -> Vec<String> {
    let Some(node) = &joined.node else { return Vec::new() };
    let mut out = Vec::new();
    let mut after = None;
    for _ in 0..100 {
        match s.media.request(node.as_str(), arc_nodeproto::NodeRequest::Sessions { after: after.clone() }).await {
            Ok(arc_nodeproto::NodeReply::Sessions { sessions, more }) => {
                after = sessions.last().map(|x| x.session_id.clone());
                out.extend(sessions.into_iter().filter(|x| x.sid == joined.sid).map(|x| x.session_id.to_string()));
                if !more {
                    break;
                }
            }
            _ => break,
        }
    }
    out
}

/// The socket closed and its session was ended (or the log ended it): its
/// hold goes, unless another socket took the session over.
pub async fn release_socket(s: &Services, joined: &Joined, holder: &Holder) -> UseCaseResult<()> {
    sqlx::query("DELETE FROM signal_sockets WHERE sid = $1 AND holder = $2")
        .bind(joined.sid.as_str())
        .bind(&holder.0)
        .execute(&s.db.pool)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ice_servers_carry_turn_credentials_of_the_participant_until_the_ttl() {
        let sid = ParticipantSid::parse("pa_1").expect("sid");
        let now = chrono::DateTime::from_timestamp(1_700_000_000, 0).expect("time");
        assert!(ice_servers(&crate::config::IceSettings::default(), &sid, now).is_empty(), "none configured: none");
        let ice = crate::config::IceSettings {
            stun: vec!["stun:stun.example.net:3478".into()],
            turn: vec!["turn:turn.example.net:3478?transport=udp".into(), "turns:turn.example.net:5349".into()],
            turn_secret: Some("north".into()),
            turn_ttl: std::time::Duration::from_secs(3600),
        };
        let servers = ice_servers(&ice, &sid, now);
        assert_eq!(servers.len(), 2);
        assert_eq!((servers[0].urls.len(), servers[0].username.as_deref()), (1, None));
        let (user, credential) = arc_auth::turn::credentials("north", "pa_1", 1_700_003_600);
        assert_eq!(servers[1].username.as_deref(), Some(user.as_str()));
        assert_eq!(servers[1].credential.as_deref(), Some(credential.as_str()));
        assert_eq!(servers[1].username.as_deref(), Some("1700003600:pa_1"));
    }
}
