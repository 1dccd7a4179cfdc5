//! Media with real clients: `arc-control dev` (embedded media node), Debian's
//! Chromium with a fake camera and microphone driven by playwright-core
//! (`tests/browser/publish_play.mjs`), and aiortc as a second WebRTC stack
//! (`tests/browser/aiortc_play.py`). Also the WHIP/WHEP error paths, and
//! garbage thrown at the media port while a real session flows.
//!
//! `scripts/test` installs Chromium, Node.js, playwright-core and aiortc.

mod common;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

struct Dev {
    child: Child,
    base: String,
    media: SocketAddr,
    admin: String,
    _dir: tempfile::TempDir,
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_dev() -> Dev {
    start_dev_on("127.0.0.1:0")
}

/// `arc-control dev` with its media port bound to `media_udp`. `0.0.0.0:0`
/// binds every interface as `dev` does by default (the node then announces
/// 127.0.0.1, an address the socket was not bound to).
fn start_dev_on(media_udp: &str) -> Dev {
    start_dev_with(&["--listen", "127.0.0.1:0", "--media-udp", media_udp])
}

/// `arc-control dev` with these listen, media and other options (its log
/// filter is `ARC_TEST_LOG` when set, e.g. `info,rtc_dtls=debug`).
fn start_dev_with(args: &[&str]) -> Dev {
    let dir = tempfile::tempdir().expect("tempdir");
    let admin = "media-test-admin-key-0123456789".to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_arc-control"))
        .arg("dev")
        .args(args)
        .args(["--admin-key", &admin])
        .arg("--data-dir")
        .arg(dir.path())
        .envs(common::SERVER_TEST_ENV.iter().copied())
        .env("ARC_LOG", common::test_log_filter())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn arc-control");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut base = None;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let line = line.trim().to_string();
            if let Some(rest) = line.strip_prefix("status page") {
                base = Some(rest.trim().trim_end_matches('/').to_string());
            }
            if let Some(rest) = line.strip_prefix("media node")
                && let Some(addr) = rest.split_whitespace().skip_while(|w| *w != "udp").nth(1)
                && let (Some(b), Ok(a)) = (base.clone(), addr.parse::<SocketAddr>())
            {
                let _ = tx.send((b, a));
            }
        }
    });
    let (base, media) = rx.recv_timeout(Duration::from_secs(60)).expect("arc-control dev printed its addresses");
    Dev { child, base, media, admin, _dir: dir }
}

/// How many events of this type the embedded log holds.
async fn events_of_type(dev: &Dev, event_type: &str) -> i64 {
    use sqlx::ConnectOptions as _;
    let path = dev._dir.path().join("events.db");
    let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(path).read_only(true);
    let mut conn = opts.connect().await.expect("open events.db");
    sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE event_type = ?")
        .bind(event_type)
        .fetch_one(&mut conn)
        .await
        .expect("count")
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(20)).build().expect("client")
}

/// Creates an app; returns (app_key, app_secret).
async fn app(dev: &Dev) -> (String, String) {
    common::create_app(&dev.base, &dev.admin, "media").await
}

async fn token(dev: &Dev, app: &(String, String), identity: &str, room: &str, grants: Value) -> String {
    common::mint_token(&dev.base, app, identity, room, grants).await
}

fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/browser")
}

/// Runs the Chromium driver; returns its last JSON line.
fn chromium(dev: &Dev, room: &str, codec: &str, pub_token: &str, sub_token: &str, extra: &[(&str, &str)]) -> Value {
    let mut cmd = Command::new("node");
    cmd.arg("publish_play.mjs")
        .current_dir(browser_dir())
        .env("ARC_URL", &dev.base)
        .env("ROOM", room)
        .env("CODEC", codec)
        .env("PUB_TOKEN", pub_token)
        .env("SUB_TOKEN", sub_token);
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run node tests/browser/publish_play.mjs (is Node.js installed?)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or("{}");
    eprintln!("chromium {codec}: {last}");
    if !out.stderr.is_empty() {
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    }
    serde_json::from_str(last).unwrap_or_else(|_| json!({"ok": false, "raw": stdout}))
}

/// The id of the app's room with this name.
async fn room_id(dev: &Dev, app: &(String, String), room: &str) -> Option<String> {
    common::room_id(&dev.base, app, room).await
}

async fn room_participants(dev: &Dev, app: &(String, String), room: &str) -> Value {
    let Some(id) = room_id(dev, app, room).await else {
        return json!({"participants": [], "room": "not listed yet"});
    };
    http()
        .get(format!("{}/v1/rooms/{id}/participants", dev.base))
        .basic_auth(&app.0, Some(&app.1))
        .send()
        .await
        .expect("participants")
        .json()
        .await
        .expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_publishes_and_plays_vp8_and_h264() {
    let dev = start_dev_on("0.0.0.0:0");
    let app = app(&dev).await;
    for codec in ["VP8", "H264"] {
        let room = format!("room-{}", codec.to_lowercase());
        let publisher = token(&dev, &app, "cam", &room, json!({"publish": true, "subscribe": false})).await;
        let viewer = token(&dev, &app, "viewer", &room, json!({"publish": false, "subscribe": true})).await;
        let r = chromium(&dev, &room, codec, &publisher, &viewer, &[("HOLD_MS", "1500")]);
        assert_eq!(r["ok"], true, "{codec}: Chromium decoded ≥ 60 frames and got ≥ 100 audio packets in 15 s: {r}");
        assert_eq!(r["stats"]["videoCodec"], format!("video/{codec}"), "{r}");
        assert_eq!(r["stats"]["transport"], "udp", "{r}");
        assert!(r["stats"]["framesDecoded"].as_u64().unwrap_or(0) >= 60, "{r}");
        assert!(r["stats"]["audioPackets"].as_u64().unwrap_or(0) >= 100, "{r}");
        // The node recorded the publisher's tracks in the log.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let p = room_participants(&dev, &app, &room).await;
            let list = p["participants"].as_array().cloned().unwrap_or_default();
            let codecs: Vec<String> = list
                .iter()
                .filter(|x| x["identity"] == "cam")
                .flat_map(|x| x["tracks"].as_array().cloned().unwrap_or_default())
                .filter_map(|t| t["codec"].as_str().map(str::to_lowercase))
                .collect();
            if codecs.contains(&format!("video/{}", codec.to_lowercase())) && codecs.contains(&"audio/opus".to_string())
            {
                break;
            }
            assert!(Instant::now() < deadline, "{codec}: track.published events for cam's audio and video: {p}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // The viewer's subscriptions (audio and video, both runs) are in the log.
    let started = events_of_type(&dev, "track.subscription_started").await;
    assert!(started >= 4, "track.subscription_started events: {started}");
}

/// ICE restart through WHIP/WHEP PATCH (RFC 9725 §4.3.2) with real
/// browsers: once media flows, the /publish and /play pages both restart
/// ICE (new credentials both ways, `If-Match: *`); media keeps coming on
/// the same sessions — the log holds one join per identity, no leave and
/// each track published once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_publisher_and_player_restart_ice_and_keep_their_sessions() {
    let dev = start_dev_on("0.0.0.0:0");
    let app = app(&dev).await;
    let publisher = token(&dev, &app, "cam", "restart", json!({"publish": true, "subscribe": false})).await;
    let viewer = token(&dev, &app, "viewer", "restart", json!({"publish": false, "subscribe": true})).await;
    let r = chromium(&dev, "restart", "VP8", &publisher, &viewer, &[("RESTART_ICE", "both"), ("FRAMES", "30")]);
    assert_eq!(r["ok"], true, "both pages restarted ICE and the player decoded 30 more frames: {r}");
    eprintln!("ICE restart: {}", r["restart"]);
    assert_eq!(events_of_type(&dev, "room.participant_joined").await, 2, "one join each");
    assert_eq!(events_of_type(&dev, "track.published").await, 2, "cam's audio and video, published once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_without_udp_gets_media_over_ice_tcp() {
    let dev = start_dev_on("0.0.0.0:0");
    let app = app(&dev).await;
    let publisher = token(&dev, &app, "cam", "tcp-only", json!({"publish": true})).await;
    let viewer = token(&dev, &app, "viewer", "tcp-only", json!({"subscribe": true})).await;
    let r = chromium(&dev, "tcp-only", "VP8", &publisher, &viewer, &[("TRANSPORT", "tcp")]);
    assert_eq!(r["ok"], true, "media over ICE-TCP (RFC 4571 framing) when UDP is out of reach: {r}");
    assert_eq!(r["stats"]["transport"], "tcp", "the player's selected pair is TCP: {r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiortc_plays_what_chromium_publishes_while_garbage_hits_the_media_port() {
    let dev = start_dev();
    let app = app(&dev).await;
    let room = "interop";
    let publisher = token(&dev, &app, "cam", room, json!({"publish": true})).await;
    let viewer = token(&dev, &app, "py", room, json!({"subscribe": true})).await;
    // Chromium publishes (and plays) and holds the session for 25 s.
    let base = dev.base.clone();
    let (p2, v2) = (publisher.clone(), token(&dev, &app, "viewer", room, json!({"subscribe": true})).await);
    let chrome = std::thread::spawn(move || {
        let out = Command::new("node")
            .arg("publish_play.mjs")
            .current_dir(browser_dir())
            .env("ARC_URL", &base)
            .env("ROOM", "interop")
            .env("CODEC", "VP8")
            .env("PUB_TOKEN", &p2)
            .env("SUB_TOKEN", &v2)
            .env("FRAMES", "30")
            .env("HOLD_MS", "25000")
            .output()
            .expect("node");
        String::from_utf8_lossy(&out.stdout).to_string()
    });
    // Wait until the room has a publisher with video.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let ok = http()
            .get(format!("{}/v1/rooms?name={room}", dev.base))
            .basic_auth(&app.0, Some(&app.1))
            .send()
            .await
            .ok()
            .map(|r| r.status().is_success())
            .unwrap_or(false);
        if ok {
            let p = room_participants(&dev, &app, room).await;
            let has_video = p["participants"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|x| x["tracks"].as_array().cloned().unwrap_or_default())
                .any(|t| t["kind"] == "video");
            if has_video {
                break;
            }
        }
        assert!(Instant::now() < deadline, "Chromium's video track was published within 20 s");
    }
    // Garbage at the media port while the sessions run: random bytes, and
    // packets shaped like STUN, DTLS and RTP, from a socket no session knows.
    let media = dev.media;
    let garbage = std::thread::spawn(move || {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut sent = 0u32;
        let until = Instant::now() + Duration::from_secs(8);
        while Instant::now() < until {
            let len = (x % 1400) as usize + 1;
            let mut buf = Vec::with_capacity(len);
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                buf.push(x as u8);
            }
            buf[0] = match sent % 4 {
                0 => 0x00, // STUN range
                1 => 22,   // DTLS range
                2 => 0x80, // RTP range
                _ => buf[0],
            };
            if sent.is_multiple_of(4) && buf.len() >= 8 {
                buf[4..8].copy_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
            }
            let _ = sock.send_to(&buf, media);
            sent += 1;
            if sent.is_multiple_of(64) {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        sent
    });
    let out = Command::new("/usr/bin/python3")
        .arg("aiortc_play.py")
        .current_dir(browser_dir())
        .env("ARC_URL", &dev.base)
        .env("ROOM", room)
        .env("SUB_TOKEN", &viewer)
        .output()
        .expect("run /usr/bin/python3 tests/browser/aiortc_play.py (is python3-aiortc installed?)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("aiortc: {stdout}");
    if !out.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    }
    let sent = garbage.join().expect("garbage thread");
    eprintln!("garbage datagrams sent: {sent}");
    let r: Value = serde_json::from_str(stdout.lines().last().unwrap_or("{}")).unwrap_or(json!({}));
    assert_eq!(r["ok"], true, "aiortc decoded video and audio through WHEP while garbage flew: {r}");
    // aiortc DELETEd its two sessions: their subscriptions ended, in the log.
    let deadline = Instant::now() + Duration::from_secs(5);
    while events_of_type(&dev, "track.subscription_ended").await < 2 {
        assert!(Instant::now() < deadline, "track.subscription_ended after aiortc's DELETEs");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Chromium's own publish/play kept flowing through all of it.
    let chrome_out = chrome.join().expect("chromium thread");
    let first: Value = serde_json::from_str(chrome_out.lines().next().unwrap_or("{}")).unwrap_or(json!({}));
    assert_eq!(first["ok"], true, "Chromium publish+play: {chrome_out}");
    // And the node still answers new sessions.
    let r = chromium(
        &dev,
        "after-garbage",
        "VP8",
        &token(&dev, &app, "cam2", "after-garbage", json!({"publish": true})).await,
        &token(&dev, &app, "v2", "after-garbage", json!({"subscribe": true})).await,
        &[],
    );
    assert_eq!(r["ok"], true, "a new session after the garbage: {r}");
}

#[tokio::test]
async fn whip_and_whep_refuse_bad_input_with_clear_errors() {
    let dev = start_dev();
    let app = app(&dev).await;
    let c = http();
    let pubt = token(&dev, &app, "p", "errs", json!({"publish": true, "subscribe": false})).await;
    let subt = token(&dev, &app, "s", "errs", json!({"publish": false, "subscribe": true})).await;
    let url = format!("{}/v1/whip/errs", dev.base);
    let offer = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=rtpmap:96 VP8/90000\r\n";
    let post = |url: String, token: Option<String>, ct: &'static str, body: Vec<u8>| {
        let c = c.clone();
        async move {
            let mut r = c.post(url).header("content-type", ct).body(body);
            if let Some(t) = token {
                r = r.bearer_auth(t);
            }
            let resp = r.send().await.expect("send");
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap_or(json!(null));
            (status, body["error"]["code"].as_str().unwrap_or("").to_string(), body)
        }
    };
    let (s, code, _) = post(url.clone(), None, "application/sdp", offer.into()).await;
    assert_eq!((s, code.as_str()), (401, "unauthenticated"));
    let (s, code, _) = post(url.clone(), Some("garbage".into()), "application/sdp", offer.into()).await;
    assert_eq!(s, 401, "{code}");
    let (s, code, _) = post(url.clone(), Some(subt.clone()), "application/sdp", offer.into()).await;
    assert_eq!((s, code.as_str()), (403, "permission_denied"), "a subscribe-only token cannot publish");
    let (s, code, _) =
        post(format!("{}/v1/whep/errs", dev.base), Some(pubt.clone()), "application/sdp", offer.into()).await;
    assert_eq!((s, code.as_str()), (403, "permission_denied"), "a publish-only token cannot play");
    let (s, code, _) =
        post(format!("{}/v1/whip/other", dev.base), Some(pubt.clone()), "application/sdp", offer.into()).await;
    assert_eq!((s, code.as_str()), (403, "wrong_room"));
    let (s, code, _) = post(url.clone(), Some(pubt.clone()), "application/json", offer.into()).await;
    assert_eq!((s, code.as_str()), (415, "unsupported_media_type"));
    let (s, code, _) = post(url.clone(), Some(pubt.clone()), "application/sdp", b"hello".to_vec()).await;
    assert_eq!((s, code.as_str()), (400, "bad_sdp"));
    // Random bytes after a valid start, many times: always a clear 4xx, never a crash.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..40 {
        let mut body = b"v=0\r\n".to_vec();
        for _ in 0..(i * 37 % 900) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            body.push(x as u8);
        }
        let (s, code, b) = post(url.clone(), Some(pubt.clone()), "application/sdp", body).await;
        assert!((400..500).contains(&s), "random SDP #{i}: {s} {code} {b}");
    }
    // Only codecs the node does not forward.
    let g722 = offer
        .replace("m=video 9 UDP/TLS/RTP/SAVPF 96", "m=audio 9 UDP/TLS/RTP/SAVPF 9")
        .replace("a=rtpmap:96 VP8/90000", "a=rtpmap:9 G722/8000");
    let (s, code, b) = post(url.clone(), Some(pubt.clone()), "application/sdp", g722.into()).await;
    assert_eq!((s, code.as_str()), (406, "no_common_codec"), "{b}");
    assert!(b["error"]["message"].as_str().unwrap_or("").contains("G722"), "names the offered codecs: {b}");
    // Unknown session resources.
    let resp = c
        .delete(format!("{}/v1/whip/errs/sessions/node-dev/se_nope", dev.base))
        .bearer_auth(&pubt)
        .send()
        .await
        .expect("delete");
    assert_eq!(resp.status().as_u16(), 404);
    let resp = c
        .patch(format!("{}/v1/whip/errs/sessions/node-dev/se_nope", dev.base))
        .bearer_auth(&pubt)
        .header("content-type", "application/trickle-ice-sdpfrag")
        .body("a=ice-ufrag:x\r\n")
        .send()
        .await
        .expect("patch");
    assert_eq!(resp.status().as_u16(), 404);
    // A real session: its answer carries an ETag; a PATCH naming another
    // one is refused (412), and a fragment that is not ICE lines is 400.
    let recorded = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../dataplane/tests/fixtures/sdp/webrtcbin-publish-max-bundle.sdp"),
    )
    .expect("a recorded offer");
    let etag_token = token(&dev, &app, "p", "etag", json!({"publish": true, "subscribe": false})).await;
    let r = c
        .post(format!("{}/v1/whip/etag", dev.base))
        .bearer_auth(&etag_token)
        .header("content-type", "application/sdp")
        .body(recorded)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 201);
    let etag = r.headers().get("etag").and_then(|v| v.to_str().ok()).map(str::to_owned).expect("an ETag");
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    let location = r.headers()["location"].to_str().expect("location").to_owned();
    let patch = |if_match: &str, body: &'static str| {
        c.patch(format!("{}{location}", dev.base))
            .bearer_auth(&etag_token)
            .header("content-type", "application/trickle-ice-sdpfrag")
            .header("if-match", if_match)
            .body(body)
            .send()
    };
    let r = patch("\"stale\"", "a=end-of-candidates\r\n").await.expect("patch");
    assert_eq!(r.status().as_u16(), 412);
    let b: Value = r.json().await.expect("json");
    assert_eq!(b["error"]["code"], "ice_state_changed", "{b}");
    let r = patch(&etag, "a=end-of-candidates\r\n").await.expect("patch");
    assert_eq!(r.status().as_u16(), 204, "trickle with the current ETag");
    let r = patch("*", "a=setup:active\r\n").await.expect("patch");
    assert_eq!(r.status().as_u16(), 400);
    let r = c.delete(format!("{}{location}", dev.base)).bearer_auth(&etag_token).send().await.expect("delete");
    assert_eq!(r.status().as_u16(), 200);
    // CORS preflight.
    let resp = c
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", "https://example.org")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .expect("options");
    assert_eq!(resp.status().as_u16(), 204);
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");
    assert!(resp.headers()["access-control-allow-methods"].to_str().unwrap_or("").contains("PATCH"));
    // An operator drains the node: new rooms are refused (no node takes them);
    // undrained, the node takes them again.
    let r =
        c.post(format!("{}/v1/nodes/node-dev/drain", dev.base)).bearer_auth(&dev.admin).send().await.expect("drain");
    assert_eq!(r.status().as_u16(), 200);
    let (s, code, b) = post(url.clone(), Some(pubt.clone()), "application/sdp", offer.into()).await;
    assert_eq!((s, code.as_str()), (503, "no_media_node"), "a draining node takes no new room: {b}");
    let r = c
        .post(format!("{}/v1/nodes/node-dev/undrain", dev.base))
        .bearer_auth(&dev.admin)
        .send()
        .await
        .expect("undrain");
    assert_eq!(r.status().as_u16(), 200);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        // The fake offer reaches the node again (and is refused there as bad SDP).
        let (s, code, b) = post(url.clone(), Some(pubt.clone()), "application/sdp", offer.into()).await;
        if s == 400 {
            assert_eq!(code, "bad_sdp", "{b}");
            break;
        }
        assert!(Instant::now() < deadline, "undrained node takes rooms within 5 s: {s} {b}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r = c.post(format!("{}/v1/nodes/nope/drain", dev.base)).bearer_auth(&dev.admin).send().await.expect("drain");
    assert_eq!(r.status().as_u16(), 404);
    // The node is still healthy.
    let status: Value =
        c.get(format!("{}/v1/status", dev.base)).send().await.expect("status").json().await.expect("json");
    assert_eq!(status["nodes_up"], 1, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kick_mute_remove_and_close_reach_the_media_node_within_a_second() {
    let dev = start_dev();
    let app = app(&dev).await;
    let room = "moderated";
    let publisher = token(&dev, &app, "cam", room, json!({"publish": true})).await;
    let chrome = publish_in_background(&dev, room, &publisher, 10000);
    // Wait for both tracks.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (room_id, tracks) = loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let p = room_participants(&dev, &app, room).await;
        let tracks: Vec<Value> = p["participants"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|x| x["tracks"].as_array().cloned().unwrap_or_default())
            .collect();
        if tracks.len() == 2 {
            break (room_id(&dev, &app, room).await.unwrap_or_default(), tracks);
        }
        assert!(Instant::now() < deadline, "two tracks published within 20 s: {p}");
    };
    let video = tracks.iter().find(|t| t["kind"] == "video").expect("a video track");
    let track_id = video["track_id"].as_str().expect("track id");
    // Mute is recorded and the node confirms it holds the track.
    let r = http()
        .post(format!("{}/v1/rooms/{room_id}/tracks/{track_id}/mute", dev.base))
        .bearer_auth(&dev.admin)
        .json(&json!({"muted": true}))
        .send()
        .await
        .expect("mute");
    assert_eq!(r.status().as_u16(), 200, "{:?}", r.text().await);
    // Kick: within a second the node has ended the session and unpublished its tracks.
    let kicked_at = Instant::now();
    let r = http()
        .post(format!("{}/v1/rooms/{room_id}/participants/cam/kick", dev.base))
        .bearer_auth(&dev.admin)
        .send()
        .await
        .expect("kick");
    assert_eq!(r.status().as_u16(), 200, "{:?}", r.text().await);
    loop {
        let t: Value = http()
            .get(format!("{}/v1/rooms/{room_id}/participants/cam", dev.base))
            .bearer_auth(&dev.admin)
            .send()
            .await
            .expect("get")
            .json()
            .await
            .unwrap_or(json!({}));
        if t["error"]["code"] == "participant_not_found" {
            break;
        }
        assert!(kicked_at.elapsed() < Duration::from_secs(1), "kicked within 1 s: {t}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The node itself ended the session: its tracks are unpublished with reason `kicked`.
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let r = http()
            .post(format!("{}/v1/rooms/{room_id}/tracks/{track_id}/mute", dev.base))
            .bearer_auth(&dev.admin)
            .json(&json!({"muted": false}))
            .send()
            .await
            .expect("unmute");
        // An unpublished track can no longer be unmuted: the node's unpublish is in the log.
        if r.status().as_u16() == 409 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the node unpublished the kicked participant's tracks within 1 s: {}",
            r.status()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = chrome.join().expect("chromium thread").expect("node");
    eprintln!("publisher: {out}");

    // A moderator removes a participant, then closes the room: both times the
    // node ends the media within a second (its tracks are unpublished).
    for (identity, how) in [("cam2", "remove"), ("cam3", "close")] {
        let publisher = token(&dev, &app, identity, room, json!({"publish": true})).await;
        let chrome = publish_in_background(&dev, room, &publisher, 8000);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let p = room_participants(&dev, &app, room).await;
            let published = p["participants"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|x| x["identity"] == identity)
                .flat_map(|x| x["tracks"].as_array().cloned().unwrap_or_default())
                .count();
            if published == 2 {
                break;
            }
            assert!(Instant::now() < deadline, "{identity}: two tracks published within 20 s: {p}");
        }
        let before = events_of_type(&dev, "track.unpublished").await;
        let at = Instant::now();
        let r = match how {
            "remove" => http().delete(format!("{}/v1/rooms/{room_id}/participants/{identity}", dev.base)),
            _ => http().post(format!("{}/v1/rooms/{room_id}/close", dev.base)),
        }
        .bearer_auth(&dev.admin)
        .send()
        .await
        .expect("remove or close");
        assert_eq!(r.status().as_u16(), 200, "{how}: {:?}", r.text().await);
        loop {
            if events_of_type(&dev, "track.unpublished").await >= before + 2 {
                break;
            }
            assert!(
                at.elapsed() < Duration::from_secs(1),
                "{how}: the node unpublished {identity}'s tracks within 1 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let out = chrome.join().expect("chromium thread").expect("node");
        eprintln!("{identity} ({how}): {out}");
    }
}

/// `node publish_play.mjs` (given as `node`, which may run in a namespace)
/// against `dev`'s room `room`.
fn driver(mut node: Command, dev: &Dev, room: &str) -> Command {
    node.arg("publish_play.mjs").current_dir(browser_dir()).env("ARC_URL", &dev.base).env("ROOM", room);
    node
}

/// A counter of the embedded node's `/media/metrics` (scraped and parsed as
/// `metrics.rs` does).
async fn media_counter(dev: &Dev, name: &str) -> f64 {
    let samples = common::media_metrics(&dev.base).await;
    *samples.get(name).unwrap_or_else(|| panic!("{name} in /media/metrics: {samples:?}"))
}

/// RTX (RFC 4588) with a real browser on a lossy path: Chromium publishes on
/// loopback; a second Chromium plays in a network namespace of its own
/// whose incoming UDP loses 5 % at random. The player negotiates RTX, its
/// NACKs are answered on the RTX stream, it gets back every packet it lost,
/// and its video keeps its frame rate.
#[tokio::test(flavor = "multi_thread")]
async fn a_player_losing_five_percent_gets_its_repairs_over_rtx_and_keeps_its_frame_rate() {
    let ns = common::Netns::new();
    // ARC_TEST_LOSS=30 (percent) makes connection trouble show sooner when hunting it.
    ns.drop_incoming_udp(std::env::var("ARC_TEST_LOSS").ok().and_then(|v| v.parse().ok()).unwrap_or(5));
    let listen = format!("{}:0", ns.host_ip);
    let dev = start_dev_with(&["--listen", &listen, "--media-udp", "0.0.0.0:0", "--media-announce", &ns.host_ip]);
    let app = app(&dev).await;
    let pub_token = token(&dev, &app, "cam", "lossy", json!({"publish": true, "subscribe": false})).await;
    let sub_token = token(&dev, &app, "viewer", "lossy", json!({"publish": false, "subscribe": true})).await;
    // Publishes until stopped (SIGTERM below: playwright closes its Chromium on it).
    let publisher = driver(Command::new("node"), &dev, "lossy")
        .env("PUB_TOKEN", &pub_token)
        .env("PLAY", "0")
        .env("HOLD_MS", "120000")
        .stdout(Stdio::piped())
        .spawn()
        .expect("run publish_play.mjs");
    let before = media_counter(&dev, "arc_media_rtx_packets_total").await;
    let out = driver(ns.command("node"), &dev, "lossy")
        .env("SUB_TOKEN", &sub_token)
        .env("PUBLISH", "0")
        .env("FRAMES", "30")
        .env("AUDIO_PACKETS", "50")
        .env("TIMEOUT_MS", "30000")
        .env("WATCH_MS", "15000")
        .output()
        .expect("run publish_play.mjs in the namespace");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or("{}");
    eprintln!("player behind 5 % loss: {last}\n{}", String::from_utf8_lossy(&out.stderr));
    let result: Value = serde_json::from_str(last).unwrap_or_else(|_| json!({"ok": false, "raw": stdout}));
    let rtx = media_counter(&dev, "arc_media_rtx_packets_total").await - before;
    let answered = media_counter(&dev, "arc_media_nacks_answered_total").await;
    eprintln!("node: {rtx} RTX packets, {answered} NACKs answered");
    let _ = Command::new("kill").args(["-TERM", &publisher.id().to_string()]).status();
    let published = publisher.wait_with_output().map(|o| String::from_utf8_lossy(&o.stdout).to_string());
    eprintln!("publisher: {published:?}");
    assert_eq!(result["ok"], true, "the player decoded video and audio: {result}");
    let watch = &result["watch"];
    assert_eq!(watch["rtx"], true, "the player negotiated RTX: {result}");
    assert!(watch["videoLost"].as_f64().unwrap_or(0.0) > 0.0, "the path lost packets: {watch}");
    assert!(watch["nacksSent"].as_f64().unwrap_or(0.0) > 0.0, "the player sent NACKs: {watch}");
    assert!(rtx > 0.0, "the node answered on the RTX stream ({rtx} packets)");
    assert!(watch["retransmitted"].as_f64().unwrap_or(0.0) > 0.0, "the player received retransmissions: {watch}");
    // Every loss repaired: the player had back as many packets as it lost
    // (a few more: a retransmission lost on the way is asked for again).
    let (lost, back) = (watch["videoLost"].as_f64().unwrap_or(0.0), watch["retransmitted"].as_f64().unwrap_or(0.0));
    assert!(back >= lost, "the player got back every packet it lost: {watch}");
    // The fake camera makes 20 frames/s (300 in 15 s, with and without the
    // loss in runs here): frames kept coming. Chromium counts a freeze when a
    // frame comes more than three frame times late, and under this loss it
    // counted 1 to 3 in 15 s (0.22–0.65 s frozen in all) in runs here, none
    // without loss. Most likely (not confirmed by a capture) a retransmission
    // that is itself lost (5 % of them) is asked for again only after
    // Chromium's default 100 ms, as a receive-only peer has no round-trip
    // estimate. Unrepaired (while a bug had the
    // node drop most of the player's NACKs) it decoded 14 frames in 15 s.
    assert!(watch["framesDecoded"].as_f64().unwrap_or(0.0) >= 270.0, "frames kept coming: {watch}");
    assert!(watch["freezeSeconds"].as_f64().unwrap_or(f64::MAX) <= 1.0, "at most 1 s frozen in 15 s: {watch}");
}

/// Publishes the fake camera and microphone from Chromium for `hold_ms`.
fn publish_in_background(
    dev: &Dev,
    room: &str,
    token: &str,
    hold_ms: u64,
) -> std::thread::JoinHandle<std::io::Result<String>> {
    let (base, room, token) = (dev.base.clone(), room.to_owned(), token.to_owned());
    std::thread::spawn(move || {
        Command::new("node")
            .arg("publish_play.mjs")
            .current_dir(browser_dir())
            .env("ARC_URL", &base)
            .env("ROOM", &room)
            .env("PUB_TOKEN", &token)
            .env("PLAY", "0")
            .env("HOLD_MS", hold_ms.to_string())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
    })
}
