//! A second real WebRTC stack against `arc-control dev`: GStreamer's
//! `webrtcbin` (Debian's gstreamer1.0-plugins-bad, libnice, driven by
//! `tests/browser/gst_client.py`) publishes through WHIP and plays through
//! WHEP in each of its bundle policies — `max-bundle` (audio offered
//! `bundle-only` on port 0), `max-compat` (one BUNDLE group, every m-line
//! with its own port) and `balanced` (GStreamer 1.22 does not bundle then:
//! one ICE/DTLS transport per m-line) — with VP8 and H.264, and headless
//! Chromium on the other side counting decoded frames and audio packets.
//!
//! `scripts/test` installs GStreamer, Chromium and playwright-core.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{ADMIN_KEY, Mode, mint_token, start_with};
use serde_json::{Value, json};

fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/browser")
}

/// Runs `gst_client.py`; returns its last JSON line.
fn gst(base: &str, room: &str, token: &str, role: &str, bundle: &str, codec: &str, extra: &[(&str, &str)]) -> Value {
    let out = gst_command(base, room, token, role, bundle, codec, extra)
        .output()
        .expect("run /usr/bin/python3 tests/browser/gst_client.py (is python3-gst-1.0 installed?)");
    gst_result(role, bundle, codec, &out)
}

/// A GStreamer publisher that holds its session until [`gst_stop`] (at most a minute).
fn gst_publisher(base: &str, room: &str, token: &str, bundle: &str, codec: &str) -> std::process::Child {
    gst_command(base, room, token, "publish", bundle, codec, &[("HOLD_S", "60")])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run /usr/bin/python3 tests/browser/gst_client.py (is python3-gst-1.0 installed?)")
}

/// Stops a [`gst_publisher`] (SIGTERM: it succeeds if it had connected) and reads its result.
fn gst_stop(child: std::process::Child, bundle: &str, codec: &str) -> Value {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let out = child.wait_with_output().expect("gst publisher");
    gst_result("publish", bundle, codec, &out)
}

fn gst_result(role: &str, bundle: &str, codec: &str, out: &std::process::Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or("{}");
    if !out.status.success() {
        eprintln!("gst {role} {bundle} {codec} stderr: {}", String::from_utf8_lossy(&out.stderr));
    }
    serde_json::from_str(last).unwrap_or_else(|_| json!({"ok": false, "raw": stdout}))
}

fn gst_command(
    base: &str,
    room: &str,
    token: &str,
    role: &str,
    bundle: &str,
    codec: &str,
    extra: &[(&str, &str)],
) -> Command {
    let mut cmd = Command::new("/usr/bin/python3");
    cmd.arg("gst_client.py")
        .current_dir(browser_dir())
        .env("ARC_URL", base)
        .env("ROOM", room)
        .env("TOKEN", token)
        .env("ROLE", role)
        .env("BUNDLE", bundle)
        .env("CODEC", codec);
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd
}

/// Runs the Chromium driver; returns its last JSON line.
fn chromium(base: &str, room: &str, codec: &str, envs: &[(&str, &str)]) -> Value {
    let mut cmd = Command::new("node");
    cmd.arg("publish_play.mjs").current_dir(browser_dir()).env("ARC_URL", base).env("ROOM", room).env("CODEC", codec);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run node tests/browser/publish_play.mjs (is Node.js installed?)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or("{}");
    serde_json::from_str(last).unwrap_or_else(|_| json!({"ok": false, "raw": stdout}))
}

async fn tracks_published(base: &str, app: &(String, String), room: &str, identity: &str) -> usize {
    let http = reqwest::Client::new();
    let rooms: Value =
        match http.get(format!("{base}/v1/rooms?name={room}")).basic_auth(&app.0, Some(&app.1)).send().await {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(_) => return 0,
        };
    let Some(id) = rooms["rooms"][0]["room_id"].as_str() else { return 0 };
    let p: Value = match http.get(format!("{base}/v1/rooms/{id}/participants")).bearer_auth(ADMIN_KEY).send().await {
        Ok(r) => r.json().await.unwrap_or_default(),
        Err(_) => return 0,
    };
    p["participants"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|x| x["identity"] == identity)
        .flat_map(|x| x["tracks"].as_array().cloned().unwrap_or_default())
        .count()
}

async fn wait_tracks(base: &str, app: &(String, String), room: &str, identity: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while tracks_published(base, app, room, identity).await < 2 {
        assert!(Instant::now() < deadline, "{what}: the publisher's audio and video tracks were published");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gstreamer_webrtcbin_publishes_and_plays_in_every_bundle_policy() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mode = Mode::Embedded { data_dir: dir.path().to_path_buf() };
    let server = start_with(&mode, &[]);
    let base = server.base.clone();
    let app = common::create_app(&base, ADMIN_KEY, "interop").await;
    let mut failures = Vec::new();
    for codec in ["VP8", "H264"] {
        for bundle in ["max-bundle", "max-compat", "balanced"] {
            // webrtcbin publishes (WHIP); Chromium plays (WHEP).
            let room = format!("gst-pub-{}-{bundle}", codec.to_lowercase());
            let publisher = mint_token(&base, &app, "gst", &room, json!({"publish": true})).await;
            let viewer = mint_token(&base, &app, "chrome", &room, json!({"subscribe": true})).await;
            // The publisher holds its session until the player is done. With
            // a fixed 7 s hold, a CI rehearsal's first case (cold GStreamer
            // and Chromium, under load: the publisher connected 5 s later
            // than in the other cases) ended with a connected player that
            // had decoded nothing; the hold running out first is the likely
            // cause, not a confirmed one (the player's trace is printed now).
            let gst_pub = gst_publisher(&base, &room, &publisher, bundle, codec);
            wait_tracks(&base, &app, &room, "gst", &format!("{codec} {bundle} WHIP")).await;
            let play = chromium(
                &base,
                &room,
                codec,
                &[("PUBLISH", "0"), ("SUB_TOKEN", &viewer), ("FRAMES", "30"), ("AUDIO_PACKETS", "50")],
            );
            let published = gst_stop(gst_pub, bundle, codec);
            let what = format!("webrtcbin {bundle} publishes {codec}, Chromium plays");
            eprintln!("{what}: chromium {} / gst {}", play["stats"], published);
            if play["ok"] != true || play["stats"]["videoCodec"] != format!("video/{codec}") || published["ok"] != true
            {
                failures.push(format!("{what}: chromium {play}; gst {published}"));
            }

            // Chromium publishes (WHIP); webrtcbin plays (WHEP).
            let room = format!("gst-play-{}-{bundle}", codec.to_lowercase());
            let publisher = mint_token(&base, &app, "chrome", &room, json!({"publish": true})).await;
            let viewer = mint_token(&base, &app, "gst", &room, json!({"subscribe": true})).await;
            let (b, r) = (base.clone(), room.clone());
            let chrome_pub = std::thread::spawn(move || {
                chromium(&b, &r, codec, &[("PLAY", "0"), ("PUB_TOKEN", &publisher), ("HOLD_MS", "7000")])
            });
            wait_tracks(&base, &app, &room, "chrome", &format!("{codec} {bundle} WHEP")).await;
            let played = gst(&base, &room, &viewer, "play", bundle, codec, &[("TIMEOUT_S", "15")]);
            let what = format!("Chromium publishes {codec}, webrtcbin {bundle} plays");
            eprintln!("{what}: gst {played}");
            if played["ok"] != true {
                failures.push(format!("{what}: {played}"));
            }
            let _ = chrome_pub.join();
        }
    }
    assert!(failures.is_empty(), "interop failures:\n{}", failures.join("\n"));
}
