//! The signalling WebSocket (`/v1/rtc`) against a running arc-control,
//! embedded and on NATS + PostgreSQL, with a real WebSocket client
//! (tokio-tungstenite): joining shows the room; data messages between
//! participants (over NATS in cluster mode); others' joins, metadata,
//! leaves, the room's metadata and a WHIP publisher's tracks are pushed;
//! ping/pong; bad messages answer an error and keep the socket; a kick ends
//! the kicked socket (`removed`) and tells the others; `leave`, a dropped
//! connection and a silent client end their sessions with their reasons;
//! closing the room ends every socket; bad tokens are refused before the
//! upgrade; a socket whose arc-control was SIGKILLed leaves no ghost (the
//! janitor ends its session after the restart).

mod common;

use std::time::{Duration, Instant};

use common::rtc_client::{Client, flow};
use common::{ADMIN_KEY, Mode, create_app, mint_token, start_with};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// A client socket: a task reads it all the time (so pings are answered,
/// as a browser does) and hands the JSON messages over; `None` once closed.
struct Socket {
    sink: futures::stream::SplitSink<
        tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
        Message,
    >,
    messages: tokio::sync::mpsc::UnboundedReceiver<Option<Value>>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Socket {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Longest wait for a pushed message.
const PUSH_MAX: Duration = Duration::from_secs(10);

fn ws_url(base: &str, token: &str) -> String {
    format!("{}/v1/rtc?access_token={token}", base.replacen("http://", "ws://", 1))
}

async fn connect(base: &str, token: &str) -> Socket {
    let (socket, response) = tokio_tungstenite::connect_async(ws_url(base, token)).await.expect("the WebSocket opens");
    assert_eq!(response.status().as_u16(), 101);
    let (sink, mut stream) = socket.split();
    let (tx, messages) = tokio::sync::mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        loop {
            match stream.next().await {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(t.as_str()).expect("JSON text");
                    assert_eq!(v["v"], 1, "every message carries the version: {v}");
                    if tx.send(Some(v)).is_err() {
                        return;
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    let _ = tx.send(None);
                    return;
                }
                Some(Ok(_)) => {}
            }
        }
    });
    Socket { sink, messages, reader }
}

/// A client that connects and then neither reads nor writes (its pings go unanswered).
async fn connect_silent(
    base: &str,
    token: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    tokio_tungstenite::connect_async(ws_url(base, token)).await.expect("the WebSocket opens").0
}

/// The next JSON message of `socket`, or `None` once it closed.
async fn next(socket: &mut Socket) -> Option<Value> {
    tokio::time::timeout(PUSH_MAX, socket.messages.recv()).await.expect("a message within 10 s").flatten()
}

/// Reads until a message of `kind` (others are skipped), returning it.
async fn until(socket: &mut Socket, kind: &str) -> Value {
    loop {
        match next(socket).await {
            Some(v) if v["type"] == kind => return v,
            Some(_) => {}
            None => panic!("the socket closed before a {kind} message"),
        }
    }
}

async fn send(socket: &mut Socket, v: Value) {
    socket.sink.send(Message::Text(v.to_string().into())).await.expect("send");
}

async fn participant(base: &str, room: &str, identity: &str) -> Value {
    common::admin_get(base, &format!("/v1/rooms/{room}/participants/{identity}")).await
}

/// Waits until the identity's session in the room has left, with `reason`.
async fn left_with(base: &str, room: &str, sid: &str, reason: &str) {
    let deadline = Instant::now() + PUSH_MAX;
    loop {
        let events = common::admin_get(base, "/v1/events?tail=100&type=room.participant_left").await;
        let found = events["events"].as_array().into_iter().flatten().find(|e| e["data"]["sid"] == sid);
        if let Some(e) = found {
            assert_eq!(e["data"]["reason"], reason, "{e}");
            let _ = room;
            return;
        }
        assert!(Instant::now() < deadline, "{sid} left ({reason}) within 10 s: {events}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn signalling(mode: Mode) {
    let server = start_with(&mode, &["--signal-timeout-s", "2"]);
    let base = server.base.clone();
    let app = create_app(&base, ADMIN_KEY, "signal").await;
    let grants = json!({"join": true, "publish": true, "subscribe": true, "publish_data": true});
    let token = |who: &'static str| mint_token(&base, &app, who, "meet", grants.clone());

    // Bad tokens are refused before the upgrade, with the HTTP status.
    let ws = base.replacen("http://", "ws://", 1);
    match tokio_tungstenite::connect_async(format!("{ws}/v1/rtc?access_token=nope")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status().as_u16(), 401),
        other => panic!("a bad token is refused: {other:?}"),
    }
    let no_join = mint_token(&base, &app, "lurker", "meet", json!({"subscribe": true})).await;
    match tokio_tungstenite::connect_async(format!("{ws}/v1/rtc?access_token={no_join}")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status().as_u16(), 403),
        other => panic!("a token without join is refused: {other:?}"),
    }

    // Ann joins: the room, herself, nobody else.
    let mut ann = connect(&base, &token("ann").await).await;
    let join = until(&mut ann, "join").await;
    assert_eq!(join["room"]["name"], "meet", "{join}");
    assert_eq!(join["participant"]["identity"], "ann");
    assert_eq!(join["participant"]["permissions"]["publish"], true);
    assert_eq!(join["participants"], json!([]));
    let room = join["room"]["room_id"].as_str().expect("room id").to_owned();
    let ann_sid = join["participant"]["sid"].as_str().expect("sid").to_owned();

    // Bob joins: he sees Ann, Ann sees him.
    let mut bob = connect(&base, &token("bob").await).await;
    let join = until(&mut bob, "join").await;
    let others: Vec<&str> =
        join["participants"].as_array().expect("list").iter().filter_map(|p| p["identity"].as_str()).collect();
    assert_eq!(others, ["ann"], "{join}");
    let bob_sid = join["participant"]["sid"].as_str().expect("sid").to_owned();
    let joined = until(&mut ann, "participant_joined").await;
    assert_eq!(joined["participant"]["identity"], "bob");
    assert_eq!(joined["participant"]["sid"], bob_sid);

    // Keep-alive, and bad messages: an error, the socket stays.
    send(&mut bob, json!({"v": 1, "type": "ping", "id": 7})).await;
    assert_eq!(until(&mut bob, "pong").await["id"], 7);
    bob.sink.send(Message::Text("{".into())).await.expect("send");
    assert_eq!(until(&mut bob, "error").await["code"], "bad_json");
    send(&mut bob, json!({"v": 9, "type": "ping"})).await;
    assert_eq!(until(&mut bob, "error").await["code"], "unsupported_version");
    send(&mut bob, json!({"v": 1, "type": "fly"})).await;
    assert_eq!(until(&mut bob, "error").await["code"], "bad_message");

    // Bob's own metadata reaches Ann (and Bob).
    send(&mut bob, json!({"v": 1, "type": "update_metadata", "name": "Bob", "metadata": "{\"hand\":true}"})).await;
    let updated = until(&mut ann, "participant_updated").await;
    assert_eq!(updated["participant"]["name"], "Bob");
    assert_eq!(updated["participant"]["metadata"], "{\"hand\":true}");
    assert_eq!(until(&mut bob, "participant_updated").await["participant"]["sid"], bob_sid);
    send(&mut bob, json!({"v": 1, "type": "update_metadata", "metadata": "x".repeat(70_000)})).await;
    let refused = until(&mut bob, "error").await;
    assert!(refused["code"] == "too_large" || refused["code"] == "invalid", "{refused}");

    // Data messages: to the room (not back to the sender), or to listed
    // identities only; refused without the publish_data grant or when too large.
    send(&mut ann, json!({"v": 1, "type": "data", "payload": "only for zed", "to": ["zed"]})).await;
    send(&mut ann, json!({"v": 1, "type": "data", "payload": "hello", "topic": "chat"})).await;
    let data = until(&mut bob, "data").await;
    assert_eq!((data["payload"].as_str(), data["topic"].as_str()), (Some("hello"), Some("chat")), "{data}");
    assert_eq!((data["from_identity"].as_str(), data["from_sid"].as_str()), (Some("ann"), Some(ann_sid.as_str())));
    send(&mut ann, json!({"v": 1, "type": "data", "payload": "x".repeat(16 * 1024)})).await;
    assert_eq!(until(&mut ann, "error").await["code"], "too_large");
    let quiet = mint_token(&base, &app, "quiet", "meet", json!({"join": true})).await;
    let mut quiet = connect(&base, &quiet).await;
    until(&mut quiet, "join").await;
    send(&mut quiet, json!({"v": 1, "type": "data", "payload": "psst"})).await;
    assert_eq!(until(&mut quiet, "error").await["code"], "permission_denied");
    send(&mut quiet, json!({"v": 1, "type": "leave"})).await;
    assert!(next(&mut quiet).await.is_none());
    send(&mut bob, json!({"v": 1, "type": "data", "payload": "back at you"})).await;
    let data = until(&mut ann, "data").await;
    assert_eq!((data["payload"].as_str(), data["from_identity"].as_str()), (Some("back at you"), Some("bob")));

    // The room's metadata, set through the REST API.
    let r = reqwest::Client::new()
        .put(format!("{base}/v1/rooms/{room}/metadata"))
        .basic_auth(&app.0, Some(&app.1))
        .json(&json!({"metadata": "agenda"}))
        .send()
        .await
        .expect("room metadata");
    assert!(r.status().is_success(), "{:?}", r.text().await);
    assert_eq!(until(&mut ann, "room_updated").await["metadata"], "agenda");

    // A WHIP publisher in the room (embedded mode has a media node): Ann
    // sees it join and its tracks once media flows.
    if matches!(mode, Mode::Embedded { .. }) {
        let http = reqwest::Client::new();
        let cam = mint_token(&base, &app, "cam", "meet", json!({"publish": true})).await;
        let viewer = mint_token(&base, &app, "viewer", "meet", json!({"subscribe": true})).await;
        let mut p = Client::open(&http, &base, "meet", &cam, true).await;
        let mut v = Client::open(&http, &base, "meet", &viewer, false).await;
        flow(&mut p, &mut v, 10, Duration::from_secs(15)).await;
        let track = until(&mut ann, "track_published").await;
        assert_eq!(track["track"]["kind"], "video", "{track}");
        assert!(track["track"]["codec"].as_str().is_some_and(|c| c.eq_ignore_ascii_case("video/VP8")), "{track}");
    }

    // Kicked through the REST API: Bob is told and his socket closes; Ann sees him leave.
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/rooms/{room}/participants/bob/kick"))
        .basic_auth(&app.0, Some(&app.1))
        .send()
        .await
        .expect("kick");
    assert!(r.status().is_success(), "{:?}", r.text().await);
    assert_eq!(until(&mut bob, "removed").await["reason"], "kicked");
    assert!(next(&mut bob).await.is_none(), "the kicked socket closes");
    let gone = until(&mut ann, "participant_left").await;
    assert_eq!((gone["sid"].as_str(), gone["reason"].as_str()), (Some(bob_sid.as_str()), Some("kicked")));

    // Carol drops her connection without a word: her session waits the
    // resume window (2 s), then ends with connection_lost.
    let mut carol = connect(&base, &token("carol").await).await;
    let carol_sid = until(&mut carol, "join").await["participant"]["sid"].as_str().expect("sid").to_owned();
    let dropped = Instant::now();
    drop(carol);
    left_with(&base, &room, &carol_sid, "connection_lost").await;
    assert!(dropped.elapsed() >= Duration::from_secs(2), "not before the resume window ran out");
    assert_eq!(until(&mut ann, "participant_left").await["sid"], carol_sid);

    // Gina's connection drops and she comes back with her resume token: the
    // same session goes on, nobody saw her leave or join again; a new token
    // comes with it, and the old one no longer works.
    let gina_t = token("gina").await;
    let mut gina = connect(&base, &gina_t).await;
    let gina_join = until(&mut gina, "join").await;
    let gina_sid = gina_join["participant"]["sid"].as_str().expect("sid").to_owned();
    let resume = gina_join["resume_token"].as_str().expect("a resume token").to_owned();
    assert!(gina_join.get("resumed").is_none(), "a new session: {gina_join}");
    assert_eq!(until(&mut ann, "participant_joined").await["participant"]["sid"], gina_sid);
    drop(gina);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut gina = connect(&base, &format!("{gina_t}&resume={resume}")).await;
    let again = until(&mut gina, "join").await;
    assert_eq!(
        (again["resumed"].as_bool(), again["participant"]["sid"].as_str()),
        (Some(true), Some(gina_sid.as_str())),
        "{again}"
    );
    let resume2 = again["resume_token"].as_str().expect("a new resume token").to_owned();
    assert_ne!(resume2, resume);
    send(&mut gina, json!({"v": 1, "type": "ping", "id": 5})).await;
    until(&mut gina, "pong").await;
    // Past the resume window, still in: resumed sessions are held like new ones.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(participant(&base, &room, "gina").await["sid"], gina_sid.as_str());
    // A used (or forged) token starts a new session instead, which replaces the old one.
    drop(gina);
    let mut gina = connect(&base, &format!("{gina_t}&resume={resume}")).await;
    let fresh = until(&mut gina, "join").await;
    assert!(fresh.get("resumed").is_none(), "{fresh}");
    assert_ne!(fresh["participant"]["sid"], gina_sid.as_str());
    let replaced = until(&mut ann, "participant_left").await;
    assert_eq!(
        (replaced["sid"].as_str(), replaced["reason"].as_str()),
        (Some(gina_sid.as_str()), Some("duplicate_identity"))
    );
    send(&mut gina, json!({"v": 1, "type": "leave"})).await;
    assert!(next(&mut gina).await.is_none());
    until(&mut ann, "participant_left").await;

    // Dan goes silent (never reads, never answers a ping): removed after the 2 s timeout.
    let dan = connect_silent(&base, &token("dan").await).await;
    let started = Instant::now();
    let silent = until(&mut ann, "participant_joined").await;
    let dan_sid = silent["participant"]["sid"].as_str().expect("sid").to_owned();
    left_with(&base, &room, &dan_sid, "connection_lost").await;
    assert!(started.elapsed() >= Duration::from_secs(2), "not before the timeout");
    drop(dan);

    // A second socket of Ann's identity replaces the first.
    let mut ann2 = connect(&base, &token("ann").await).await;
    until(&mut ann2, "join").await;
    assert_eq!(until(&mut ann, "removed").await["reason"], "duplicate_identity");
    assert!(next(&mut ann).await.is_none());
    let _ = ann_sid;

    // Leaving: client_left, and the socket closes.
    let mut eve = connect(&base, &token("eve").await).await;
    let eve_sid = until(&mut eve, "join").await["participant"]["sid"].as_str().expect("sid").to_owned();
    send(&mut eve, json!({"v": 1, "type": "leave"})).await;
    assert!(next(&mut eve).await.is_none(), "the socket closes after leave");
    left_with(&base, &room, &eve_sid, "client_left").await;
    assert_eq!(participant(&base, &room, "eve").await["error"]["code"], "participant_not_found", "eve is gone");

    // Closing the room ends every socket.
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/rooms/{room}/close"))
        .basic_auth(&app.0, Some(&app.1))
        .send()
        .await
        .expect("close");
    assert!(r.status().is_success(), "{:?}", r.text().await);
    assert_eq!(until(&mut ann2, "room_closed").await["reason"], "requested");
    assert!(next(&mut ann2).await.is_none());

    // arc-control SIGKILLed with a socket open: after the restart the
    // janitor ends that session (its hold ran out), leaving no ghost.
    let frank = mint_token(&base, &app, "frank", "later", grants.clone()).await;
    let mut frank = connect(&base, &frank).await;
    let frank_join = until(&mut frank, "join").await;
    let frank_sid = frank_join["participant"]["sid"].as_str().expect("sid").to_owned();
    let later = frank_join["room"]["room_id"].as_str().expect("room").to_owned();
    drop(server);
    drop(frank);
    let server = start_with(&mode, &["--signal-timeout-s", "2", "--janitor-interval-s", "1"]);
    let base = server.base.clone();
    left_with(&base, &later, &frank_sid, "connection_lost").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signalling_embedded() {
    let dir = tempfile::tempdir().expect("tempdir");
    signalling(Mode::Embedded { data_dir: dir.path().to_path_buf() }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signalling_on_nats_and_postgres() {
    let (_, _, _, _dir, mode) = common::cluster("SIG", "sig").await;
    signalling(mode).await;
}

/// Media over the socket: a publisher's socket opens a publish session, a
/// player's socket a subscribe session (`rtc` clients, complete offers),
/// media flows; the others see the track; closing the publish session
/// unpublishes it without the publisher leaving; refused without the
/// permission; a session id the socket did not open cannot be closed; and
/// a moderator's socket (admin grant) mutes a track, changes permissions,
/// removes a participant and closes the room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_over_the_socket_embedded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mode = Mode::Embedded { data_dir: dir.path().to_path_buf() };
    let server = start_with(&mode, &[]);
    let base = server.base.clone();
    let app = create_app(&base, ADMIN_KEY, "media").await;
    let cam = mint_token(&base, &app, "cam", "show", json!({"join": true, "publish": true})).await;
    let fan = mint_token(&base, &app, "fan", "show", json!({"join": true, "subscribe": true})).await;
    let mut cam_ws = connect(&base, &cam).await;
    let cam_sid = until(&mut cam_ws, "join").await["participant"]["sid"].as_str().expect("sid").to_owned();
    let mut fan_ws = connect(&base, &fan).await;
    until(&mut fan_ws, "join").await;

    // The player may not publish.
    let denied = Client::new(true).await;
    send(&mut fan_ws, json!({"v": 1, "type": "publish", "id": 1, "sdp": denied.offer()})).await;
    let refused = until(&mut fan_ws, "error").await;
    assert_eq!((refused["code"].as_str(), refused["id"].as_u64()), (Some("permission_denied"), Some(1)), "{refused}");
    send(&mut fan_ws, json!({"v": 1, "type": "publish", "id": 2, "sdp": "not sdp"})).await;
    assert_eq!(until(&mut fan_ws, "error").await["code"], "bad_sdp");

    let mut publisher = Client::new(true).await;
    send(&mut cam_ws, json!({"v": 1, "type": "publish", "id": 7, "sdp": publisher.offer()})).await;
    let answer = until(&mut cam_ws, "answer").await;
    assert_eq!(answer["id"], 7);
    publisher.accept_answer(answer["sdp"].as_str().expect("sdp"));
    let session = answer["session_id"].as_str().expect("session id").to_owned();

    let mut player = Client::new(false).await;
    send(&mut fan_ws, json!({"v": 1, "type": "subscribe", "id": 8, "sdp": player.offer(), "participant": "cam"})).await;
    let answer = until(&mut fan_ws, "answer").await;
    player.accept_answer(answer["sdp"].as_str().expect("sdp"));
    flow(&mut publisher, &mut player, 20, Duration::from_secs(15)).await;
    let track = until(&mut fan_ws, "track_published").await;
    assert_eq!(track["track"]["sid"], cam_sid, "{track}");

    // ICE restart over the socket: on a session of its own, the node's new
    // credentials come back; on another's, or with a credential that is
    // not one, it is refused with the request's id.
    let played = answer["session_id"].as_str().expect("session id").to_owned();
    let old_ufrag = answer["sdp"].as_str().and_then(|s| s.lines().find_map(|l| l.strip_prefix("a=ice-ufrag:")));
    let (ufrag, pwd) = ("NewUfrag", "new+ice/password0123456789");
    send(
        &mut fan_ws,
        json!({"v": 1, "type": "restart_ice", "id": 20, "session_id": played, "ufrag": ufrag, "pwd": pwd}),
    )
    .await;
    let restarted = until(&mut fan_ws, "ice_restarted").await;
    assert_eq!((restarted["id"].as_u64(), restarted["session_id"].as_str()), (Some(20), Some(played.as_str())));
    assert!(restarted["pwd"].as_str().is_some_and(|p| p.len() >= 22), "{restarted}");
    assert_ne!(restarted["ufrag"].as_str(), old_ufrag.map(str::trim_end), "new credentials: {restarted}");
    send(
        &mut fan_ws,
        json!({"v": 1, "type": "restart_ice", "id": 21, "session_id": played, "ufrag": ufrag, "pwd": pwd}),
    )
    .await;
    let same = until(&mut fan_ws, "error").await;
    assert_eq!(
        (same["code"].as_str(), same["id"].as_u64()),
        (Some("invalid_argument"), Some(21)),
        "the same credentials: {same}"
    );
    let bad = json!({"v": 1, "type": "restart_ice", "id": 22, "session_id": played, "ufrag": "a\r\nb", "pwd": pwd});
    send(&mut fan_ws, bad).await;
    assert_eq!(until(&mut fan_ws, "error").await["id"], 22);
    send(
        &mut fan_ws,
        json!({"v": 1, "type": "restart_ice", "id": 23, "session_id": session, "ufrag": ufrag, "pwd": pwd}),
    )
    .await;
    let foreign = until(&mut fan_ws, "error").await;
    assert_eq!((foreign["code"].as_str(), foreign["id"].as_u64()), (Some("not_found"), Some(23)), "{foreign}");

    // A session this socket did not open cannot be closed through it.
    send(&mut fan_ws, json!({"v": 1, "type": "close_media", "session_id": session})).await;
    assert_eq!(until(&mut fan_ws, "error").await["code"], "not_found");
    // Closing the publish session unpublishes; the publisher stays in the room.
    send(&mut cam_ws, json!({"v": 1, "type": "close_media", "session_id": session})).await;
    let gone = until(&mut fan_ws, "track_unpublished").await;
    assert_eq!(gone["sid"], cam_sid);
    send(&mut cam_ws, json!({"v": 1, "type": "ping", "id": 1})).await;
    until(&mut cam_ws, "pong").await;
    let room = common::room_id(&base, &app, "show").await.expect("room");
    let cam_now = common::admin_get(&base, &format!("/v1/rooms/{room}/participants/cam")).await;
    assert_eq!(
        (cam_now["state"].as_str(), cam_now["sid"].as_str()),
        (Some("active"), Some(cam_sid.as_str())),
        "{cam_now}"
    );
    // And publishes again on the same participant.
    let mut again = Client::new(true).await;
    send(&mut cam_ws, json!({"v": 1, "type": "publish", "id": 9, "sdp": again.offer()})).await;
    again.accept_answer(until(&mut cam_ws, "answer").await["sdp"].as_str().expect("sdp"));
    let deadline = Instant::now() + Duration::from_secs(15);
    let republished = loop {
        if again.connected {
            again.send_next(true);
        }
        again.drive(Duration::from_millis(5)).await;
        if let Ok(Some(Some(m))) = tokio::time::timeout(Duration::from_millis(1), fan_ws.messages.recv()).await
            && m["type"] == "track_published"
        {
            break m;
        }
        assert!(Instant::now() < deadline, "the track was published again within 15 s");
    };
    assert_eq!(republished["track"]["sid"], cam_sid);
    let track = republished["track"]["track_id"].as_str().expect("track id").to_owned();

    // Moderation over the socket, for a token with the admin grant only.
    send(&mut fan_ws, json!({"v": 1, "type": "remove_participant", "identity": "cam"})).await;
    assert_eq!(until(&mut fan_ws, "error").await["code"], "permission_denied");
    let host = mint_token(&base, &app, "host", "show", json!({"join": true, "admin": true})).await;
    let mut host_ws = connect(&base, &host).await;
    assert_eq!(until(&mut host_ws, "join").await["moderator"], true, "the join says the host may moderate");
    send(&mut host_ws, json!({"v": 1, "type": "mute_track", "track_id": track, "muted": true})).await;
    let muted = until(&mut fan_ws, "track_muted").await;
    assert_eq!((muted["muted"].as_bool(), muted["by"].as_str()), (Some(true), Some("moderator")), "{muted}");
    send(
        &mut host_ws,
        json!({"v": 1, "type": "update_permissions", "identity": "fan",
        "permissions": {"publish": false, "subscribe": true, "publish_data": true}}),
    )
    .await;
    let updated = until(&mut fan_ws, "participant_updated").await;
    assert_eq!(updated["participant"]["identity"], "fan");
    assert_eq!(updated["participant"]["permissions"]["publish_data"], true, "{updated}");
    // Taking `publish` away stops the tracks (the node follows the log);
    // the participant stays, and may still watch.
    send(
        &mut host_ws,
        json!({"v": 1, "type": "update_permissions", "identity": "cam",
        "permissions": {"publish": false, "subscribe": true, "publish_data": true}}),
    )
    .await;
    let gone = until(&mut fan_ws, "track_unpublished").await;
    assert_eq!(
        (gone["sid"].as_str(), gone["track_id"].as_str()),
        (Some(cam_sid.as_str()), Some(track.as_str())),
        "{gone}"
    );
    let cam_now = common::admin_get(&base, &format!("/v1/rooms/{room}/participants/cam")).await;
    assert_eq!(cam_now["state"], "active", "{cam_now}");
    send(&mut host_ws, json!({"v": 1, "type": "remove_participant", "identity": "nobody"})).await;
    assert_eq!(until(&mut host_ws, "error").await["code"], "participant_not_found");
    send(&mut host_ws, json!({"v": 1, "type": "remove_participant", "identity": "fan"})).await;
    assert_eq!(until(&mut fan_ws, "removed").await["reason"], "removed");
    send(&mut host_ws, json!({"v": 1, "type": "close_room"})).await;
    assert_eq!(until(&mut cam_ws, "room_closed").await["reason"], "requested");
    assert!(next(&mut cam_ws).await.is_none(), "the room's sockets close");
}

/// Two arc-control instances on one NATS and PostgreSQL: a participant on
/// each. Data messages cross between them (core NATS), each sees the
/// other join, and a socket that drops from one instance resumes its
/// session through the other (the hold is in the shared database).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_relay_data_and_resume_each_others_sessions() {
    let (_nats, _stream, _prefix, _dir, mode) = common::cluster("SIX", "x").await;
    let other_dir = tempfile::tempdir().expect("tempdir");
    let Mode::Cluster { nats, stream, prefix, database, .. } = mode.clone() else { unreachable!("a cluster") };
    let mode_b = Mode::Cluster { nats, stream, prefix, database, data_dir: other_dir.path().to_path_buf() };
    let a = start_with(&mode, &["--signal-timeout-s", "5"]);
    let b = start_with(&mode_b, &["--signal-timeout-s", "5"]);
    let app = create_app(&a.base, ADMIN_KEY, "two").await;
    let grants = json!({"join": true, "publish_data": true});
    let ann_t = mint_token(&a.base, &app, "ann", "across", grants.clone()).await;
    let bob_t = mint_token(&a.base, &app, "bob", "across", grants.clone()).await;
    let mut ann = connect(&a.base, &ann_t).await;
    until(&mut ann, "join").await;
    let mut bob = connect(&b.base, &bob_t).await;
    let bob_join = until(&mut bob, "join").await;
    let bob_sid = bob_join["participant"]["sid"].as_str().expect("sid").to_owned();
    assert_eq!(bob_join["participants"][0]["identity"], "ann", "bob's instance knows ann is there: {bob_join}");
    assert_eq!(until(&mut ann, "participant_joined").await["participant"]["identity"], "bob");
    send(&mut ann, json!({"v": 1, "type": "data", "payload": "from a", "topic": "chat"})).await;
    let got = until(&mut bob, "data").await;
    assert_eq!((got["payload"].as_str(), got["from_identity"].as_str()), (Some("from a"), Some("ann")), "{got}");
    send(&mut bob, json!({"v": 1, "type": "data", "payload": "from b", "to": ["ann"]})).await;
    assert_eq!(until(&mut ann, "data").await["payload"], "from b");
    // Bob's connection to instance B drops; he comes back through A.
    let resume = bob_join["resume_token"].as_str().expect("resume token").to_owned();
    drop(bob);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut bob = connect(&a.base, &format!("{bob_t}&resume={resume}")).await;
    let again = until(&mut bob, "join").await;
    assert_eq!(
        (again["resumed"].as_bool(), again["participant"]["sid"].as_str()),
        (Some(true), Some(bob_sid.as_str()))
    );
    send(&mut ann, json!({"v": 1, "type": "data", "payload": "still here?"})).await;
    assert_eq!(until(&mut bob, "data").await["payload"], "still here?");
    // Nobody saw bob leave; he leaves now.
    send(&mut bob, json!({"v": 1, "type": "leave"})).await;
    let left = until(&mut ann, "participant_left").await;
    assert_eq!(
        (left["sid"].as_str(), left["reason"].as_str()),
        (Some(bob_sid.as_str()), Some("client_left")),
        "{left}"
    );
}
