//! The node-report reactor against a real (embedded) log and read database:
//! a node's reports become the track's and room's events, with the node as
//! actor and the report as cause; a report about a session on another node
//! changes nothing; and a reactor that starts again from an older
//! checkpoint (its instance died after applying, before storing how far it
//! got) applies nothing twice.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_control::readdb::ReadDb;
use arc_control::reports;
use arc_eventlog::{EventLog, Position, Repository};
use arc_events::aggregate::node::{Node, NodeCommand, NodeReport};
use arc_events::aggregate::room::{Room, RoomCommand};
use arc_events::aggregate::track::Track;
use arc_events::node::{
    NodeRegistered, NodeSessionEnded, NodeSubscriptionEnded, NodeSubscriptionStarted, NodeTrackPublished,
    NodeTrackUnpublished,
};
use arc_events::room::{LeaveReason, ParticipantJoined};
use arc_events::track::{MediaKind, TrackPublished, TrackSource};
use arc_events::{
    Actor, AggregateRef, AppId, CommandMeta, NodeId, ParticipantIdentity, ParticipantSid, RoomId, TrackId,
};

fn meta(actor: Actor) -> CommandMeta {
    CommandMeta::new(actor, chrono::Utc::now())
}

fn id<T>(r: Result<T, arc_events::IdError>) -> T {
    r.expect("a valid id")
}

async fn events_of(log: &dyn EventLog, aggregate: &AggregateRef) -> Vec<(String, Option<uuid::Uuid>)> {
    let events = log.read_aggregate(aggregate, 0).await.expect("read");
    events.into_iter().map(|e| (e.raw.event_type, e.raw.causation_id)).collect()
}

/// Waits until the reactor's stored checkpoint reached `head`.
async fn reached(db: &ReadDb, head: Position) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let c = arc_control::projection::checkpoint(db, reports::LEASE).await.expect("checkpoint");
        if c.position >= head {
            return;
        }
        assert!(Instant::now() < deadline, "the reactor reached {head}: it is at {}", c.position);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_become_room_and_track_events_once_and_only_for_sessions_on_their_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log: Arc<dyn EventLog> =
        Arc::new(arc_eventlog::sqlite::SqliteLog::open(&dir.path().join("events.db")).await.expect("open log"));
    let db = ReadDb::connect(&ReadDb::sqlite_url(dir.path())).await.expect("read db");
    let (n1, n2) = (id(NodeId::parse("n1")), id(NodeId::parse("n2")));
    let room_id = id(RoomId::parse("rm_reports"));
    let (ann, bob) = (id(ParticipantIdentity::parse("ann")), id(ParticipantIdentity::parse("bob")));
    let (s1, s2) = (id(ParticipantSid::parse("PA_s1")), id(ParticipantSid::parse("PA_s2")));
    let track_id = id(TrackId::parse("TR_cam"));
    let forged_track = id(TrackId::parse("TR_forged"));

    // A room with ann on n1 and bob on n2; both nodes registered.
    let rooms = Repository::<Room>::new(log.clone());
    let room = AggregateRef::from(&room_id);
    let admin = meta(Actor::Admin { name: None });
    let create = RoomCommand::Create {
        app_id: id(AppId::parse("app_reports")),
        name: "reports".into(),
        max_participants: None,
        empty_timeout_s: Some(60),
        metadata: None,
    };
    rooms.execute(&room, &create, &admin).await.expect("create");
    for (who, sid, node) in [(&ann, &s1, &n1), (&bob, &s2, &n2)] {
        let joined = ParticipantJoined {
            identity: who.clone(),
            sid: sid.clone(),
            name: None,
            node_id: Some(node.clone()),
            jti: None,
            permissions: None,
            metadata: None,
        };
        rooms.execute(&room, &RoomCommand::Join { joined, cap: None }, &admin).await.expect("join");
    }
    let nodes = Repository::<Node>::new(log.clone());
    let report = |node: &NodeId, r: NodeReport| {
        let (nodes, node) = (&nodes, node.clone());
        async move {
            let m = meta(Actor::Node { node_id: node.clone() });
            nodes.execute(&AggregateRef::from(&node), &NodeCommand::Report(r), &m).await.expect("report");
        }
    };
    for node in [&n1, &n2] {
        let registered = NodeRegistered {
            address: "127.0.0.1:1".into(),
            public_ips: vec![],
            arch: "x86_64".into(),
            cores: 2,
            capacity: 10,
            version: "test".into(),
        };
        let m = meta(Actor::Node { node_id: node.clone() });
        nodes.execute(&AggregateRef::from(node), &NodeCommand::Register(registered), &m).await.expect("register");
    }
    let published = |track: &TrackId, sid: &ParticipantSid| {
        NodeReport::TrackPublished(NodeTrackPublished {
            track_id: track.clone(),
            track: TrackPublished {
                room_id: room_id.clone(),
                identity: ann.clone(),
                sid: sid.clone(),
                kind: MediaKind::Video,
                source: TrackSource::Camera,
                codec: "video/VP8".into(),
                simulcast: false,
            },
        })
    };
    // n1 publishes ann's camera; bob (on n2) subscribes, then stops.
    report(&n1, published(&track_id, &s1)).await;
    let sub =
        NodeSubscriptionStarted { track_id: track_id.clone(), subscriber: bob.clone(), subscriber_sid: s2.clone() };
    report(&n2, NodeReport::SubscriptionStarted(sub)).await;
    let end = NodeSubscriptionEnded {
        track_id: track_id.clone(),
        subscriber: bob.clone(),
        subscriber_sid: s2.clone(),
        reason: "client_left".into(),
    };
    report(&n2, NodeReport::SubscriptionEnded(end)).await;
    // n2 speaks for ann, who is on n1: a track for her and her leave.
    report(&n2, published(&forged_track, &s1)).await;
    let ended = NodeSessionEnded {
        room_id: room_id.clone(),
        identity: ann.clone(),
        sid: s1.clone(),
        reason: LeaveReason::Kicked,
    };
    report(&n2, NodeReport::SessionEnded(ended)).await;
    let unpublished = NodeTrackUnpublished { track_id: track_id.clone(), reason: "client_left".into() };
    report(&n2, NodeReport::TrackUnpublished(unpublished)).await;

    let metrics = reports::ReportMetrics::default();
    let leases = arc_lease::Leases::embedded();
    let reactor = tokio::spawn(reports::run(db.clone(), log.clone(), leases.lease(reports::LEASE), metrics.clone()));
    let head = log.head().await.expect("head");
    reached(&db, head).await;

    let track = AggregateRef::from(&track_id);
    let track_events = events_of(log.as_ref(), &track).await;
    let types: Vec<&str> = track_events.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        types,
        ["track.published", "track.subscription_started", "track.subscription_ended"],
        "n2 could not unpublish ann's track"
    );
    assert!(track_events.iter().all(|(_, cause)| cause.is_some()), "every event names its report: {track_events:?}");
    let n1_events = log.read_aggregate(&AggregateRef::from(&n1), 0).await.expect("read n1");
    let report_id = n1_events.iter().find(|e| e.raw.event_type == "node.track_published").map(|e| e.raw.id.0);
    assert_eq!(track_events[0].1, report_id, "track.published names n1's report as its cause");
    let published_raw = log.read_aggregate(&track, 0).await.expect("read track");
    assert_eq!(published_raw[0].raw.actor, Actor::Node { node_id: n1.clone() });
    assert!(
        log.read_aggregate(&AggregateRef::from(&forged_track), 0).await.expect("read").is_empty(),
        "no forged track"
    );
    let (state, _) = rooms.load(&room).await.expect("room");
    assert_eq!(state.participants.get(&ann), Some(&s1), "ann is still in the room");
    assert_eq!(state.participants.get(&bob), Some(&s2), "bob is still in the room");
    let (t, _) = Repository::<Track>::new(log.clone()).load(&track).await.expect("track");
    assert_eq!(t.status, arc_events::aggregate::track::TrackStatus::Published);
    let room_events = events_of(log.as_ref(), &room).await;

    // The instance dies having applied everything but stored nothing: the
    // next one starts from the start of the log and applies nothing again
    // (bob is still there, so his subscription's start, applied again, would
    // start it again).
    reactor.abort();
    let _ = reactor.await;
    sqlx::query("UPDATE projection_checkpoints SET position = 0, events = 0 WHERE name = $1")
        .bind(reports::LEASE)
        .execute(&db.pool)
        .await
        .expect("reset the checkpoint");
    let again = tokio::spawn(reports::run(db.clone(), log.clone(), leases.lease(reports::LEASE), metrics));
    reached(&db, head).await;
    // A later report still goes through (the reactor is live, not stuck).
    let ended = NodeSessionEnded {
        room_id: room_id.clone(),
        identity: ann.clone(),
        sid: s1.clone(),
        reason: LeaveReason::ClientLeft,
    };
    let sent = Instant::now();
    report(&n1, NodeReport::SessionEnded(ended)).await;
    while events_of(log.as_ref(), &room).await.len() == room_events.len() {
        assert!(sent.elapsed() < Duration::from_secs(10), "ann's leave was applied");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    eprintln!("a report became the room's event {:?} after it was appended (embedded log)", sent.elapsed());
    reached(&db, log.head().await.expect("head")).await;
    again.abort();
    assert_eq!(events_of(log.as_ref(), &track).await, track_events, "nothing applied twice to the track");
    let after = events_of(log.as_ref(), &room).await;
    assert_eq!(after[..room_events.len()], room_events[..], "the room's history is as it was");
    assert_eq!(after.len(), room_events.len() + 1, "then ann's leave: {after:?}");
    assert_eq!(after.last().map(|(t, _)| t.as_str()), Some("room.participant_left"));
}
