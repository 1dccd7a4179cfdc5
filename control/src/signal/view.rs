//! One socket's view of its room: seeded from the read models, then moved
//! by the log's events, each change turned into the messages the client
//! gets. Pure (`fold(view, event) → messages`): the same event twice, or an
//! event the seed already held, changes nothing and says nothing.

use std::collections::BTreeMap;

use arc_events::room::LeaveReason;
use arc_events::{Envelope, Event, ParticipantEvent, RoomEvent, TrackEvent};

use super::protocol::{ParticipantInfo, RoomInfo, ServerMessage, Speaker, TrackInfo};

/// What folding an event asks of the socket besides its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    /// Keep going.
    Continue,
    /// The client's session or its room ended: send the messages, then close.
    Close,
}

/// The room as one participant's socket knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomView {
    pub room: RoomInfo,
    /// The socket's own session.
    pub me: String,
    /// Everyone in the room (the socket's own session too), by sid.
    pub participants: BTreeMap<String, ParticipantInfo>,
    /// Which session published each known track.
    track_owner: BTreeMap<String, String>,
}

impl RoomView {
    /// A view of `room` with `participants` (each with its tracks), for the
    /// session `me` (which must be among them).
    pub fn new(room: RoomInfo, me: &str, participants: Vec<ParticipantInfo>) -> Self {
        let mut view = Self { room, me: me.to_owned(), participants: BTreeMap::new(), track_owner: BTreeMap::new() };
        for p in participants {
            for t in &p.tracks {
                view.track_owner.insert(t.track_id.clone(), p.sid.clone());
            }
            view.participants.insert(p.sid.clone(), p);
        }
        view
    }

    /// The client's own session, as the view holds it.
    pub fn own(&self) -> Option<&ParticipantInfo> {
        self.participants.get(&self.me)
    }

    /// Everyone but the client.
    pub fn others(&self) -> Vec<ParticipantInfo> {
        self.participants.values().filter(|p| p.sid != self.me).cloned().collect()
    }

    /// The first message (or a resync's): the room, the client, the others.
    pub fn state(&self, first: bool) -> Option<ServerMessage> {
        let participant = self.own()?.clone();
        Some(if first {
            ServerMessage::Join {
                room: self.room.clone(),
                participant,
                participants: self.others(),
                ice_servers: Vec::new(),
                moderator: false,
                resume_token: String::new(),
                resumed: false,
            }
        } else {
            ServerMessage::RoomState { room: self.room.clone(), participant, participants: self.others() }
        })
    }

    /// What the client is told of a node's room signal for its room, if
    /// anything (speakers it does not know yet are left out).
    pub fn signal(&self, s: &arc_nodeproto::RoomSignal) -> Option<ServerMessage> {
        match s {
            arc_nodeproto::RoomSignal::Speakers { room_id, speakers } => {
                if room_id.as_str() != self.room.room_id {
                    return None;
                }
                let speakers = speakers
                    .iter()
                    .filter_map(|x| {
                        let p = self.participants.get(x.sid.as_str())?;
                        Some(Speaker {
                            sid: p.sid.clone(),
                            identity: p.identity.clone(),
                            level: (x.level.clamp(0.0, 1.0) * 100.0).round() as u8,
                        })
                    })
                    .collect();
                Some(ServerMessage::ActiveSpeakers { speakers })
            }
            arc_nodeproto::RoomSignal::Quality { room_id, sid, quality } => {
                if room_id.as_str() != self.room.room_id {
                    return None;
                }
                let p = self.participants.get(sid.as_str())?;
                Some(ServerMessage::ConnectionQuality {
                    sid: p.sid.clone(),
                    identity: p.identity.clone(),
                    quality: *quality,
                })
            }
            arc_nodeproto::RoomSignal::Layers { room_id, sid, session_id, track, layers } => {
                if room_id.as_str() != self.room.room_id || sid.as_str() != self.me {
                    return None;
                }
                Some(ServerMessage::SendLayers {
                    session_id: session_id.to_string(),
                    track_id: track.to_string(),
                    layers: layers.clone(),
                })
            }
        }
    }

    /// Folds one event of the log into the view; returns what the client is
    /// told and whether the socket closes after.
    pub fn fold(&mut self, e: &Envelope) -> (Vec<ServerMessage>, After) {
        let mut out = Vec::new();
        let mut after = After::Continue;
        match &e.event {
            Event::Room(r) if e.aggregate.id() == self.room.room_id => match r {
                RoomEvent::ParticipantJoined(j) => {
                    let sid = j.sid.to_string();
                    if let std::collections::btree_map::Entry::Vacant(slot) = self.participants.entry(sid.clone()) {
                        let p = ParticipantInfo {
                            sid,
                            identity: j.identity.to_string(),
                            name: j.name.clone(),
                            metadata: j.metadata.clone(),
                            permissions: j.permissions.unwrap_or_default(),
                            tracks: Vec::new(),
                            joined_at_ms: e.occurred_at.timestamp_millis(),
                        };
                        slot.insert(p.clone());
                        out.push(ServerMessage::ParticipantJoined { participant: p });
                    }
                }
                RoomEvent::ParticipantLeft(l) => {
                    let sid = l.sid.to_string();
                    if let Some(p) = self.participants.remove(&sid) {
                        for t in &p.tracks {
                            self.track_owner.remove(&t.track_id);
                        }
                        if l.reason == LeaveReason::RoomClosed {
                            // Everyone leaves as the room closes: its
                            // `room_closed`, right after in the same batch, says it.
                        } else if sid == self.me {
                            match l.reason {
                                LeaveReason::ClientLeft => {}
                                LeaveReason::NodeLost | LeaveReason::NodeShutdown => {
                                    out.push(ServerMessage::Reconnect { reason: l.reason });
                                }
                                reason => out.push(ServerMessage::Removed { reason }),
                            }
                            after = After::Close;
                        } else {
                            out.push(ServerMessage::ParticipantLeft {
                                sid,
                                identity: l.identity.to_string(),
                                reason: l.reason,
                            });
                        }
                    }
                }
                RoomEvent::Closed(c) => {
                    let reason = serde_json::to_value(c.reason)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_else(|| "closed".into());
                    out.push(ServerMessage::RoomClosed { reason });
                    after = After::Close;
                }
                RoomEvent::MetadataUpdated(m) => {
                    if self.room.metadata != m.metadata {
                        self.room.metadata.clone_from(&m.metadata);
                        out.push(ServerMessage::RoomUpdated { metadata: m.metadata.clone() });
                    }
                }
                RoomEvent::Created(_) => {}
            },
            Event::Participant(pe) => {
                let sid = e.aggregate.id();
                if let Some(p) = self.participants.get_mut(sid) {
                    let before = p.clone();
                    match pe {
                        ParticipantEvent::PermissionsUpdated(u) => p.permissions = u.permissions,
                        ParticipantEvent::MetadataUpdated(u) => {
                            if u.name.is_some() {
                                p.name.clone_from(&u.name);
                            }
                            if u.metadata.is_some() {
                                p.metadata.clone_from(&u.metadata);
                            }
                        }
                    }
                    if *p != before {
                        out.push(ServerMessage::ParticipantUpdated { participant: p.clone() });
                    }
                }
            }
            Event::Track(te) => {
                let track_id = e.aggregate.id();
                match te {
                    TrackEvent::Published(t) if t.room_id.as_str() == self.room.room_id => {
                        let sid = t.sid.to_string();
                        if !self.track_owner.contains_key(track_id)
                            && let Some(p) = self.participants.get_mut(&sid)
                        {
                            let info = TrackInfo {
                                track_id: track_id.to_owned(),
                                sid: sid.clone(),
                                kind: t.kind,
                                source: t.source,
                                codec: t.codec.clone(),
                                simulcast: t.simulcast,
                                muted: false,
                            };
                            p.tracks.push(info.clone());
                            self.track_owner.insert(track_id.to_owned(), sid);
                            out.push(ServerMessage::TrackPublished { track: info });
                        }
                    }
                    TrackEvent::Unpublished(_) => {
                        if let Some(sid) = self.track_owner.remove(track_id) {
                            if let Some(p) = self.participants.get_mut(&sid) {
                                p.tracks.retain(|t| t.track_id != track_id);
                            }
                            out.push(ServerMessage::TrackUnpublished { track_id: track_id.to_owned(), sid });
                        }
                    }
                    TrackEvent::Muted(m) => self.mute(track_id, true, Some(m.by), &mut out),
                    TrackEvent::Unmuted(u) => self.mute(track_id, false, Some(u.by), &mut out),
                    _ => {}
                }
            }
            _ => {}
        }
        (out, after)
    }

    fn mute(
        &mut self,
        track_id: &str,
        muted: bool,
        by: Option<arc_events::track::MutedBy>,
        out: &mut Vec<ServerMessage>,
    ) {
        let Some(sid) = self.track_owner.get(track_id) else { return };
        let Some(t) = self.participants.get_mut(sid).and_then(|p| p.tracks.iter_mut().find(|t| t.track_id == track_id))
        else {
            return;
        };
        if t.muted != muted {
            t.muted = muted;
            out.push(ServerMessage::TrackMuted { track_id: track_id.to_owned(), sid: sid.clone(), muted, by });
        }
    }
}

#[cfg(test)]
mod tests {
    use arc_events::participant::{MetadataUpdated, Permissions};
    use arc_events::room::{CloseReason, ParticipantJoined, ParticipantLeft, RoomClosed};
    use arc_events::track::{MediaKind, MutedBy, TrackMuted, TrackPublished, TrackSource, TrackUnpublished};
    use arc_events::{
        Actor, AggregateKind, AggregateRef, CommandMeta, Decoded, ParticipantIdentity, ParticipantSid, RawEvent, RoomId,
    };

    use super::*;

    const ROOM: &str = "rm_0123456789abcdef0123456789abcdef";

    fn env(kind: AggregateKind, id: &str, event: Event) -> Envelope {
        let meta = CommandMeta::new(Actor::system("test"), chrono::Utc::now());
        let raw = RawEvent::encode(&AggregateRef::new(kind, id).expect("id"), 1, &event, &meta).expect("encode");
        match raw.decode().expect("decode") {
            Decoded::Known(e) => *e,
            other => panic!("{other:?}"),
        }
    }

    fn sid(n: u8) -> ParticipantSid {
        ParticipantSid::parse(&format!("pa_{:032x}", n)).expect("sid")
    }

    fn joined(n: u8, who: &str) -> Envelope {
        let j = ParticipantJoined {
            identity: ParticipantIdentity::parse(who).expect("identity"),
            sid: sid(n),
            name: None,
            node_id: None,
            jti: None,
            permissions: Some(Permissions { publish: true, subscribe: true, publish_data: true }),
            metadata: None,
        };
        env(AggregateKind::Room, ROOM, RoomEvent::from(j).into())
    }

    fn left(n: u8, who: &str, reason: LeaveReason) -> Envelope {
        let l = ParticipantLeft { identity: ParticipantIdentity::parse(who).expect("identity"), sid: sid(n), reason };
        env(AggregateKind::Room, ROOM, RoomEvent::from(l).into())
    }

    fn view() -> RoomView {
        let room = RoomInfo { room_id: ROOM.into(), name: "demo".into(), metadata: None, max_participants: None };
        let me = ParticipantInfo {
            sid: sid(1).to_string(),
            identity: "ann".into(),
            name: None,
            metadata: None,
            permissions: Permissions::default(),
            tracks: Vec::new(),
            joined_at_ms: 0,
        };
        RoomView::new(room, &sid(1).to_string(), vec![me])
    }

    fn types(m: &[ServerMessage]) -> Vec<String> {
        m.iter()
            .map(|m| serde_json::to_value(m).expect("json")["type"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    #[test]
    fn joins_and_leaves_of_others_are_told_once() {
        let mut v = view();
        assert_eq!(types(&v.fold(&joined(2, "bob")).0), ["participant_joined"]);
        assert!(v.fold(&joined(2, "bob")).0.is_empty(), "the same join again says nothing");
        assert!(v.fold(&joined(1, "ann")).0.is_empty(), "the client's own join is in the first message");
        assert_eq!(v.others().len(), 1);
        let (m, after) = v.fold(&left(2, "bob", LeaveReason::Kicked));
        assert_eq!(
            m,
            vec![ServerMessage::ParticipantLeft {
                sid: sid(2).to_string(),
                identity: "bob".into(),
                reason: LeaveReason::Kicked
            }]
        );
        assert_eq!(after, After::Continue);
        assert!(v.fold(&left(2, "bob", LeaveReason::Kicked)).0.is_empty());
        // Another room's events are not this socket's.
        let mut other = joined(3, "cy");
        other.aggregate = AggregateRef::new(AggregateKind::Room, "rm_ffffffffffffffffffffffffffffffff").expect("id");
        assert!(v.fold(&other).0.is_empty());
    }

    #[test]
    fn node_signals_become_speakers_and_quality_of_known_participants() {
        use arc_nodeproto::{ConnectionQuality, RoomSignal, SpeakerLevel};
        let mut v = view();
        v.fold(&joined(2, "bob"));
        let room = RoomId::parse(ROOM).expect("room");
        let speakers = RoomSignal::Speakers {
            room_id: room.clone(),
            speakers: vec![
                SpeakerLevel { sid: sid(2), level: 0.755 },
                SpeakerLevel { sid: sid(9), level: 0.9 },
                SpeakerLevel { sid: sid(1), level: 2.0 },
            ],
        };
        // Someone it does not know (yet) is left out; levels become 0–100.
        assert_eq!(
            v.signal(&speakers),
            Some(ServerMessage::ActiveSpeakers {
                speakers: vec![
                    Speaker { sid: sid(2).to_string(), identity: "bob".into(), level: 76 },
                    Speaker { sid: sid(1).to_string(), identity: "ann".into(), level: 100 },
                ]
            })
        );
        let quality = RoomSignal::Quality { room_id: room, sid: sid(2), quality: ConnectionQuality::Poor };
        assert_eq!(
            v.signal(&quality),
            Some(ServerMessage::ConnectionQuality {
                sid: sid(2).to_string(),
                identity: "bob".into(),
                quality: ConnectionQuality::Poor
            })
        );
        // Another room's signals are not this socket's.
        let other = RoomId::parse("rm_ffffffffffffffffffffffffffffffff").expect("room");
        assert_eq!(v.signal(&RoomSignal::Speakers { room_id: other, speakers: Vec::new() }), None);
    }

    #[test]
    fn dynacast_reaches_the_publisher_alone() {
        use arc_events::{MediaSessionId, TrackId};
        use arc_nodeproto::{LayerState, RoomSignal};
        let mut v = view();
        v.fold(&joined(2, "bob"));
        let room = RoomId::parse(ROOM).expect("room");
        let layers = vec![LayerState { rid: "q".into(), active: true }, LayerState { rid: "f".into(), active: false }];
        let to = |n: u8| RoomSignal::Layers {
            room_id: room.clone(),
            sid: sid(n),
            session_id: MediaSessionId::parse("se_1").expect("id"),
            track: TrackId::parse("TR_a").expect("track"),
            layers: layers.clone(),
        };
        assert_eq!(
            v.signal(&to(1)),
            Some(ServerMessage::SendLayers {
                session_id: "se_1".into(),
                track_id: "TR_a".into(),
                layers: layers.clone()
            })
        );
        assert_eq!(v.signal(&to(2)), None, "another publisher's layers are its own business");
    }

    #[test]
    fn the_clients_own_end_closes_the_socket() {
        let mut v = view();
        let (m, after) = v.fold(&left(1, "ann", LeaveReason::DuplicateIdentity));
        assert_eq!(m, vec![ServerMessage::Removed { reason: LeaveReason::DuplicateIdentity }]);
        assert_eq!(after, After::Close);
        let mut v = view();
        let (m, after) = v.fold(&left(1, "ann", LeaveReason::ClientLeft));
        assert!(m.is_empty(), "its own leave request needs no message");
        assert_eq!(after, After::Close);
        // Its node died or shut down: it is told to join again, not that it was removed.
        for reason in [LeaveReason::NodeLost, LeaveReason::NodeShutdown] {
            let mut v = view();
            let (m, after) = v.fold(&left(1, "ann", reason));
            assert_eq!(m, vec![ServerMessage::Reconnect { reason }]);
            assert_eq!(after, After::Close);
        }
        let mut v = view();
        v.fold(&joined(2, "bob"));
        // Closing, the room's participants leave first, then it closes.
        for (n, who) in [(1, "ann"), (2, "bob")] {
            assert_eq!(v.fold(&left(n, who, LeaveReason::RoomClosed)), (Vec::new(), After::Continue));
        }
        let closed =
            env(AggregateKind::Room, ROOM, RoomEvent::from(RoomClosed { reason: CloseReason::Requested }).into());
        let (m, after) = v.fold(&closed);
        assert_eq!(m, vec![ServerMessage::RoomClosed { reason: "requested".into() }]);
        assert_eq!(after, After::Close);
    }

    #[test]
    fn tracks_and_metadata_move_with_the_log() {
        let mut v = view();
        v.fold(&joined(2, "bob"));
        let published = TrackPublished {
            room_id: RoomId::parse(ROOM).expect("room"),
            identity: ParticipantIdentity::parse("bob").expect("identity"),
            sid: sid(2),
            kind: MediaKind::Video,
            source: TrackSource::Camera,
            codec: "video/VP8".into(),
            simulcast: false,
        };
        let track = "tr_00000000000000000000000000000007";
        let e = env(AggregateKind::Track, track, TrackEvent::from(published).into());
        assert_eq!(types(&v.fold(&e).0), ["track_published"]);
        assert!(v.fold(&e).0.is_empty());
        let muted = env(AggregateKind::Track, track, TrackEvent::from(TrackMuted { by: MutedBy::Moderator }).into());
        assert_eq!(
            v.fold(&muted).0,
            vec![ServerMessage::TrackMuted {
                track_id: track.into(),
                sid: sid(2).to_string(),
                muted: true,
                by: Some(MutedBy::Moderator)
            }]
        );
        assert!(v.fold(&muted).0.is_empty(), "muted twice says it once");
        let meta = MetadataUpdated {
            room_id: RoomId::parse(ROOM).expect("room"),
            identity: ParticipantIdentity::parse("bob").expect("identity"),
            name: Some("Bob".into()),
            metadata: None,
        };
        let e = env(AggregateKind::Participant, &sid(2).to_string(), ParticipantEvent::from(meta).into());
        let (m, _) = v.fold(&e);
        assert!(
            matches!(&m[..], [ServerMessage::ParticipantUpdated { participant }] if participant.name.as_deref() == Some("Bob"))
        );
        let gone =
            env(AggregateKind::Track, track, TrackEvent::from(TrackUnpublished { reason: "client".into() }).into());
        assert_eq!(types(&v.fold(&gone).0), ["track_unpublished"]);
        assert!(v.participants[&sid(2).to_string()].tracks.is_empty());
        // Its leave forgets its tracks too.
        v.fold(&e);
        assert_eq!(types(&v.fold(&left(2, "bob", LeaveReason::ClientLeft)).0), ["participant_left"]);
    }
}
