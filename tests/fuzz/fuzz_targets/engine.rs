//! The media engine as the network reaches it: a node with one published
//! session (a GStreamer offer), then the input as a datagram from an unknown
//! address, as a datagram from the session's transport once a check named
//! it, as a trickle-ICE sdpfrag for the session (WHIP PATCH), or as an offer.
#![no_main]

use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::Instant;

use arc_events::{MediaSessionId, ParticipantIdentity, ParticipantSid, RoomId};
use arc_media::engine::{Engine, EngineConfig, Transport};
use arc_nodeproto::{NodeReply, NodeRequest, OpenSession, Role};
use libfuzzer_sys::fuzz_target;

const OFFER: &str = include_str!("../../../dataplane/tests/fixtures/sdp/webrtcbin-publish-max-bundle.sdp");

struct Node {
    engine: Engine,
    session: Option<MediaSessionId>,
}

thread_local! {
    static NODE: RefCell<Option<Node>> = const { RefCell::new(None) };
}

fn node() -> Node {
    let now = Instant::now();
    let addr: SocketAddr = "10.0.0.1:7882".parse().unwrap_or_else(|_| unreachable!());
    let config = EngineConfig {
        local_udp: addr,
        local_tcp: addr,
        announce_udp: vec![addr],
        announce_tcp: vec![addr],
        sessions_max: 64,
        worker: 0,
        wall_clock: std::time::SystemTime::now(),
        own_srtp_egress: true,
    };
    let Ok(mut engine) = Engine::new(config, now) else { panic!("an engine") };
    let open = |identity: &str| OpenSession {
        room_id: RoomId::parse("rm_fuzz").unwrap_or_else(|_| unreachable!()),
        identity: ParticipantIdentity::parse(identity).unwrap_or_else(|_| unreachable!()),
        sid: ParticipantSid::parse(&format!("pa_{identity}")).unwrap_or_else(|_| unreachable!()),
        role: Role::Publish,
        offer: OFFER.to_owned(),
        attached: false,
        screen: false,
    };
    let session = match engine.handle_request(now, NodeRequest::Open(open("cam"))) {
        NodeReply::Opened(o) => Some(o.session_id),
        _ => None,
    };
    Node { engine, session }
}

fuzz_target!(|data: &[u8]| {
    let Some((&how, rest)) = data.split_first() else { return };
    NODE.with(|cell| {
        let mut cell = cell.borrow_mut();
        let n = cell.get_or_insert_with(node);
        let now = Instant::now();
        let from: SocketAddr = "10.9.9.9:5000".parse().unwrap_or_else(|_| unreachable!());
        match how % 4 {
            0 | 1 => n.engine.handle_datagram(now, from, Transport::Udp, rest),
            2 => {
                if let (Some(id), Ok(fragment)) = (n.session.clone(), std::str::from_utf8(rest)) {
                    let _ = n.engine.handle_request(now, NodeRequest::Patch { session_id: id, fragment: fragment.to_owned(), if_match: None });
                }
            }
            _ => {
                if let Ok(offer) = std::str::from_utf8(rest) {
                    let open = OpenSession {
                        room_id: RoomId::parse("rm_fuzz").unwrap_or_else(|_| unreachable!()),
                        identity: ParticipantIdentity::parse("any").unwrap_or_else(|_| unreachable!()),
                        sid: ParticipantSid::parse("pa_any").unwrap_or_else(|_| unreachable!()),
                        role: Role::Subscribe { participant: None, screen: false },
                        offer: offer.to_owned(),
                        attached: false,
                        screen: false,
                    };
                    if let NodeReply::Opened(o) = n.engine.handle_request(now, NodeRequest::Open(open)) {
                        let _ = n.engine.handle_request(now, NodeRequest::Close { session_id: o.session_id });
                    }
                }
            }
        }
        n.engine.handle_timeout(now);
        while n.engine.poll_transmit().is_some() {}
        while n.engine.poll_event().is_some() {}
        while n.engine.poll_route().is_some() {}
    });
});
