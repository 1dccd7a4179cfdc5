//! Least privilege on NATS: a nats-server whose clients log in, arc-control
//! with a user that may do everything, and a media node with the user
//! `arc_media::permissions::node` describes. The node works with it (it
//! registers, takes a WHIP and a WHEP session, reports the track, answers
//! the control plane's probes); the same credentials cannot append an app's
//! event or another node's, answer another node's requests, read other
//! clients' replies, delete the stream or write another node's load. A
//! node appends only to its own node aggregate (not to rooms or tracks), and
//! the reports another node appends there about sessions it does not carry
//! are refused by the control plane: nothing changes in the room.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_eventlog::jetstream::{Access, JetStreamConfig, JetStreamLog};
use arc_eventlog::{AppendRequest, EventLog, Expected};
use arc_events::node::{NodeSessionEnded, NodeTrackPublished};
use arc_events::room::LeaveReason;
use arc_events::track::{MediaKind, TrackPublished, TrackSource};
use arc_events::{
    Actor, AggregateRef, CommandMeta, Event, NodeEvent, NodeId, ParticipantIdentity, ParticipantSid, RawEvent, RoomId,
    TrackId,
};
use arc_media::permissions;
use arc_tests::nats::NatsServers;
use common::rtc_client::{Client, flow};
use common::{ADMIN_KEY, Mode, admin_get, create_app, mint_token, start_media, start_with};
use serde_json::json;

const CONTROL_PASSWORD: &str = "control-pw-0123456789";
const NODE_PASSWORD: &str = "node-pw-0123456789";

/// Waits until `errors` holds a permission violation naming `subject`.
async fn violation(errors: &Mutex<Vec<String>>, kind: &str, subject: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let seen = errors.lock().expect("errors").clone();
        if seen.iter().any(|e| e.contains(&format!("Permissions Violation for {kind} to \"{subject}\""))) {
            return;
        }
        assert!(Instant::now() < deadline, "no violation for {kind} to {subject}; the server said: {seen:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_media_nodes_credentials_do_what_a_node_does_and_nothing_else() {
    let tag = uuid::Uuid::now_v7().simple().to_string();
    let (stream, prefix) = (format!("PERM_{tag}"), format!("p{tag}.evt"));
    let users = [
        format!("{{ user: \"control\", password: \"{CONTROL_PASSWORD}\" }}"),
        permissions::node(&stream, &prefix, "media-a").to_conf("media-a", NODE_PASSWORD),
        permissions::node(&stream, &prefix, "media-b").to_conf("media-b", NODE_PASSWORD),
    ];
    let nats = NatsServers::single_with_users(&users);
    let port = nats.servers[0].client_port;
    let control_url = format!("nats://control:{CONTROL_PASSWORD}@127.0.0.1:{port}");
    let node_url = format!("nats://media-a:{NODE_PASSWORD}@127.0.0.1:{port}");
    let dir = tempfile::tempdir().expect("tempdir");
    let mode = Mode::Cluster {
        nats: control_url.clone(),
        stream: stream.clone(),
        prefix: prefix.clone(),
        database: format!("sqlite://{}", dir.path().join("read.db").display()),
        data_dir: dir.path().to_path_buf(),
    };
    let control = start_with(&mode, &["--janitor-interval-s", "1"]);
    let base = control.base.clone();

    // The node, with its own scoped user: it registers and stays up (the
    // janitor probes it over its request subject every 250 ms).
    let _node = start_media(&node_url, &stream, &prefix, "media-a");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n = admin_get(&base, "/v1/nodes").await;
        if n["nodes"].as_array().is_some_and(|n| n.iter().any(|x| x["node_id"] == "media-a" && x["state"] == "up")) {
            break;
        }
        assert!(Instant::now() < deadline, "media-a registered with its scoped credentials: {n}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A publisher and a player through it: its RPC answers, its media, and
    // the track it reports on the room's and track's subjects.
    let app = create_app(&base, ADMIN_KEY, "perm").await;
    let http = reqwest::Client::new();
    let pub_t = mint_token(&base, &app, "cam", "scoped", json!({"publish": true})).await;
    let sub_t = mint_token(&base, &app, "viewer", "scoped", json!({"subscribe": true})).await;
    let mut p = Client::open(&http, &base, "scoped", &pub_t, true).await;
    let mut s = Client::open(&http, &base, "scoped", &sub_t, false).await;
    flow(&mut p, &mut s, 50, Duration::from_secs(20)).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let (room_id, cam_sid, cam_tracks) = loop {
        let rooms = admin_get(&base, "/v1/rooms?name=scoped").await;
        let room_id = rooms["rooms"][0]["room_id"].as_str().unwrap_or_default().to_owned();
        let p = admin_get(&base, &format!("/v1/rooms/{room_id}/participants")).await;
        let cam = p["participants"].as_array().into_iter().flatten().find(|x| x["identity"] == "cam").cloned();
        if let Some(cam) = cam.filter(|x| x["tracks"].as_array().is_some_and(|t| !t.is_empty())) {
            break (room_id, cam["sid"].as_str().unwrap_or_default().to_owned(), cam["tracks"].clone());
        }
        assert!(Instant::now() < deadline, "the node's track report became track.published: {p}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // What it reported went through its own aggregate, and the control plane
    // recorded the track with the node as actor and the report as cause.
    let events = admin_get(&base, "/v1/events?limit=1000").await;
    let all = events["events"].as_array().cloned().unwrap_or_default();
    let published = all.iter().find(|e| e["type"] == "track.published").expect("a track.published event");
    let report = all.iter().find(|e| e["type"] == "node.track_published").expect("the node's report");
    assert_eq!(report["aggregate_id"], "media-a", "{report}");
    assert_eq!(published["actor"], json!({"kind": "node", "node_id": "media-a"}), "{published}");
    assert_eq!(published["causation_id"], report["id"], "{published}");
    let n = admin_get(&base, "/v1/nodes").await;
    assert!(
        n["nodes"].as_array().is_some_and(|n| n.iter().any(|x| x["node_id"] == "media-a" && x["state"] == "up")),
        "media-a still up: {n}"
    );

    // The same credentials, used by hand.
    let errors = Arc::new(Mutex::new(Vec::new()));
    let seen = errors.clone();
    let impostor = async_nats::ConnectOptions::with_user_and_password("media-a".into(), NODE_PASSWORD.into())
        .custom_inbox_prefix(permissions::inbox_prefix("media-a"))
        .event_callback(move |event| {
            let seen = seen.clone();
            async move {
                if let async_nats::Event::ServerError(e) = event {
                    seen.lock().expect("errors").push(e.to_string());
                }
            }
        })
        .connect(format!("127.0.0.1:{port}"))
        .await
        .expect("connect with media-a's credentials");
    let admin = async_nats::ConnectOptions::with_user_and_password("control".into(), CONTROL_PASSWORD.into())
        .connect(format!("127.0.0.1:{port}"))
        .await
        .expect("connect as control");
    let js = async_nats::jetstream::new(admin.clone());
    let mut log = js.get_stream(&stream).await.expect("the stream");

    // Appends outside its scope: an app's event, another node's, a room's, a track's.
    let forged = bytes::Bytes::from_static(br#"[{"type":"app.created","forged":true}]"#);
    for subject in [
        format!("{prefix}.app.forged"),
        format!("{prefix}.node.media-b"),
        format!("{prefix}.webhook.x"),
        format!("{prefix}.room.{room_id}"),
        format!("{prefix}.track.TR_forged"),
    ] {
        // (The room has the control plane's events: the last one stays the last.)
        let before = log.direct_get_last_for_subject(subject.as_str()).await.ok().map(|m| m.sequence);
        impostor.publish(subject.clone(), forged.clone()).await.expect("publish");
        impostor.flush().await.expect("flush");
        violation(&errors, "Publish", &subject).await;
        let after = log.direct_get_last_for_subject(subject.as_str()).await.ok().map(|m| m.sequence);
        assert_eq!(after, before, "nothing stored on {subject}");
    }
    // The stream, the buckets and another node's load sample are not its to change.
    for subject in [
        format!("$JS.API.STREAM.DELETE.{stream}"),
        format!("$JS.API.STREAM.PURGE.{stream}"),
        format!("$JS.API.STREAM.UPDATE.{stream}"),
        format!("$JS.API.STREAM.CREATE.{stream}_EVIL"),
        format!("$KV.{stream}_LOAD.media-b"),
        format!("$KV.{stream}_SNAP.app.forged"),
    ] {
        impostor.publish(subject.clone(), "{}".into()).await.expect("publish");
        impostor.flush().await.expect("flush");
        violation(&errors, "Publish", &subject).await;
    }
    assert!(log.info().await.is_ok(), "the stream is still there");

    // Another node's request subject, and everyone's replies.
    for subject in ["arc.media.media-b.rpc", "_INBOX.>", "arc.media.*.rpc"] {
        let _sub = impostor.subscribe(subject).await.expect("subscribe");
        impostor.flush().await.expect("flush");
        violation(&errors, "Subscription", subject).await;
    }
    let probe = admin.request("arc.media.media-b.rpc", "{}".into()).await;
    assert!(
        matches!(&probe, Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders),
        "nobody answers media-b's subject: {probe:?}"
    );
    // Its own subject still reaches the real node (the impostor's extra
    // subscriptions changed nothing), and its own reads work.
    let reply = admin
        .request("arc.media.media-a.rpc", arc_nodeproto::encode_request(&arc_nodeproto::NodeRequest::Ping).into())
        .await
        .expect("media-a answers");
    assert!(!reply.payload.is_empty());
    let js_node = async_nats::jetstream::new(impostor.clone());
    let mine = js_node.get_stream(&stream).await.expect("a node reads the stream's info");
    mine.direct_get_last_for_subject(format!("{prefix}.node.media-a")).await.expect("a node reads its own aggregate");

    // Another node (media-b, with its own credentials) reports on its own
    // aggregate about sessions on media-a: it ends the publisher's session
    // and publishes a track for it. The control plane refuses both.
    let mut config = JetStreamConfig::new(&format!("nats://media-b:{NODE_PASSWORD}@127.0.0.1:{port}"));
    config.stream = stream.clone();
    config.subject_prefix = prefix.clone();
    config.access = Access::Scoped { inbox_prefix: permissions::inbox_prefix("media-b") };
    let other = JetStreamLog::connect(&config).await.expect("media-b opens the log");
    let node_b = NodeId::parse("media-b").expect("node id");
    let room = RoomId::parse(&room_id).expect("room id");
    let cam = ParticipantSid::parse(&cam_sid).expect("sid");
    let identity = ParticipantIdentity::parse("cam").expect("identity");
    let reports: [NodeEvent; 2] = [
        NodeTrackPublished {
            track_id: TrackId::parse("TR_forged").expect("track id"),
            track: TrackPublished {
                room_id: room.clone(),
                identity: identity.clone(),
                sid: cam.clone(),
                kind: MediaKind::Video,
                source: TrackSource::Camera,
                codec: "video/VP8".into(),
                simulcast: false,
            },
        }
        .into(),
        NodeSessionEnded { room_id: room, identity, sid: cam, reason: LeaveReason::Kicked }.into(),
    ];
    let aggregate = AggregateRef::from(&node_b);
    for (i, report) in reports.into_iter().enumerate() {
        let meta = CommandMeta::new(Actor::Node { node_id: node_b.clone() }, chrono::Utc::now());
        let raw = RawEvent::encode(&aggregate, i as u64 + 1, &Event::Node(report), &meta).expect("encode");
        let request = AppendRequest { aggregate: aggregate.clone(), expected: Expected::Any, events: vec![raw] };
        other.append(request).await.expect("media-b may append to its own aggregate");
    }
    // The viewer leaves through media-a: once that report is applied, the
    // earlier forged ones were judged (reports are applied in log order).
    assert_eq!(s.delete(&http, &base, &sub_t).await, 200, "the viewer hangs up");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let p = admin_get(&base, &format!("/v1/rooms/{room_id}/participants")).await;
        let list = p["participants"].as_array().cloned().unwrap_or_default();
        if !list.iter().any(|x| x["identity"] == "viewer") {
            let cam = list.iter().find(|x| x["identity"] == "cam");
            assert!(cam.is_some_and(|c| c["sid"] == cam_sid.as_str()), "the publisher is still in the room: {p}");
            assert_eq!(cam.map(|c| c["tracks"].clone()), Some(cam_tracks.clone()), "no forged track: {p}");
            break;
        }
        assert!(Instant::now() < deadline, "the viewer's leave was recorded: {p}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let events = admin_get(&base, "/v1/events?limit=1000").await;
    let forged: Vec<_> = events["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["actor"]["node_id"] == "media-b" && e["aggregate_type"] != "node")
        .collect();
    assert!(forged.is_empty(), "nothing recorded for media-b's reports: {forged:?}");
    // An operator sees them refused.
    let metrics = reqwest::get(format!("{base}/metrics")).await.expect("scrape").text().await.expect("body");
    assert!(
        metrics.lines().any(|l| l == r#"arc_node_reports_total{outcome="refused"} 2"#),
        "two refused reports in /metrics: {}",
        metrics.lines().filter(|l| l.contains("node_reports")).collect::<Vec<_>>().join("\n")
    );
    drop(nats);
}
