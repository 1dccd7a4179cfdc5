//! A node with two workers on one media port, with real UDP on loopback and
//! `rtc` clients: rooms land on both workers (each new room on the
//! least-loaded one),
//! every player gets its room's media whichever worker the kernel hands its
//! first datagrams to (hand-off, then a connected socket of its own), and the
//! requests find their worker (open by room, close by session id, end and
//! list on all).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use arc_events::room::LeaveReason;
use arc_events::{ParticipantIdentity, ParticipantSid, RoomId};
use arc_media::media::{MediaConfig, MediaHandle, start};
use arc_nodeproto::{NodeReply, NodeRequest, OpenSession, Role};
use arc_tests::rtc_client::{Client, flow};
use rtc::peer_connection::sdp::RTCSessionDescription;

async fn open(media: &MediaHandle, room: &RoomId, identity: &str, publish: bool) -> Client {
    let mut client = Client::new(publish).await;
    let req = NodeRequest::Open(OpenSession {
        room_id: room.clone(),
        identity: ParticipantIdentity::parse(identity).expect("id"),
        sid: ParticipantSid::parse(&format!("pa_{identity}_{}", room.as_str())).expect("id"),
        role: if publish { Role::Publish } else { Role::Subscribe { participant: None, screen: false } },
        offer: client.offer(),
        attached: false,
        screen: false,
    });
    match media.request(req).await {
        NodeReply::Opened(o) => {
            client
                .pc
                .set_remote_description(Instant::now(), RTCSessionDescription::answer(o.answer).expect("answer"))
                .expect("remote");
            client.location = Some(o.session_id.to_string());
            client
        }
        other => panic!("open: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_on_two_workers_share_one_port() {
    let (events, _rx) = tokio::sync::mpsc::unbounded_channel();
    let mut config = MediaConfig::new("127.0.0.1:0".parse().expect("addr"), vec![]);
    config.workers = 2;
    let (media, task) = start(config, events).await.expect("start");
    assert_eq!(media.workers(), 2);
    // Four rooms: each new one goes to the least-loaded worker.
    let rooms: Vec<RoomId> = (0..4).map(|i| RoomId::parse(&format!("rm_workers_{i}")).expect("id")).collect();
    let mut pairs = Vec::new();
    for room in &rooms {
        let publisher = open(&media, room, "cam", true).await;
        let player = open(&media, room, "viewer", false).await;
        pairs.push((publisher, player));
    }
    let on: BTreeSet<usize> = rooms.iter().filter_map(|r| media.worker_of_room(r)).collect();
    assert_eq!(on.len(), 2, "rooms on both workers");
    // The gauges follow each worker's flush; give them a moment.
    let deadline = Instant::now() + Duration::from_secs(2);
    while media.sessions_per_worker() != vec![4, 4] && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let per_worker = media.sessions_per_worker();
    assert_eq!(per_worker, vec![4, 4], "two rooms of two sessions on each worker");
    assert_eq!(media.session_count(), 2 * rooms.len() as u64);
    for (i, (p, v)) in pairs.iter_mut().enumerate() {
        flow(p, v, 20, Duration::from_secs(15)).await;
        eprintln!("room {i} on worker {:?}: {} packets", media.worker_of_room(&rooms[i]), v.received);
    }
    let stats = media.stats().await;
    eprintln!("{stats:?}");
    assert!(stats.packets_out >= 20 * rooms.len() as u64, "{stats:?}");
    // Requests find their worker: the list has every session, a close by id
    // reaches its worker, an end reaches the room's.
    let NodeReply::Sessions { sessions, more: false } = media.request(NodeRequest::Sessions { after: None }).await
    else {
        panic!("list")
    };
    assert_eq!(sessions.len(), 2 * rooms.len());
    let first = sessions[0].session_id.clone();
    assert_eq!(media.request(NodeRequest::Close { session_id: first.clone() }).await, NodeReply::Closed);
    assert!(matches!(media.request(NodeRequest::Close { session_id: first }).await, NodeReply::Error(_)));
    let reply =
        media.request(NodeRequest::End { room_id: rooms[0].clone(), sid: None, reason: LeaveReason::RoomClosed }).await;
    assert!(matches!(reply, NodeReply::Ended { sessions: 1 | 2 }), "{reply:?}");
    assert_eq!(media.worker_of_room(&rooms[0]), None, "a closed room is forgotten");
    media.shutdown().await;
    assert_eq!(media.session_count(), 0);
    let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
}
