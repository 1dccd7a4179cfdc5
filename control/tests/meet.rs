//! The meeting page (`/meet`) with three headless Chromium pages (fake
//! camera and microphone) on `arc-control dev`: each publishes over the
//! signalling socket and receives the other two (video frames decoded,
//! audio packets received, read with `getStats`), a chat message from one
//! reaches the others, everyone is seen as an active speaker (the fake
//! microphones play a tone) and, once two mute their microphones, the third
//! alone, everyone is told everyone's connection quality (none poor on
//! loopback), the second's socket drops and it resumes its session (same
//! participant, nobody sees it leave, media flows on), and a screen one shares reaches the others as its own
//! video and goes when the sharing stops, and the moderator's buttons mute
//! one person (who is told) and remove another (whom everyone sees go). A screenshot of the second page
//! while the screen is shared is kept in `target/tmp/meet-three.png`.
//!
//! `scripts/test` installs Chromium, Node.js and playwright-core.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{ADMIN_KEY, Mode, create_app, mint_token, start};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_people_meet_see_and_hear_each_other_chat_share_a_screen_and_are_moderated() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(&Mode::Embedded { data_dir: dir.path().to_path_buf() });
    let base = server.base.clone();
    let app = create_app(&base, ADMIN_KEY, "meet").await;
    let grants = json!({"join": true, "publish": true, "subscribe": true, "publish_data": true});
    // Ann moderates.
    let host = json!({"join": true, "publish": true, "subscribe": true, "publish_data": true, "admin": true});
    let mut tokens = Vec::new();
    for who in ["ann", "bob", "cy"] {
        let g = if who == "ann" { host.clone() } else { grants.clone() };
        tokens.push(mint_token(&base, &app, who, "standup", g).await);
    }
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("meet-three.png");
    let out = Command::new("node")
        .arg("meet.mjs")
        .current_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/browser"))
        .env("ARC_URL", &base)
        .env("TOKENS", tokens.join(","))
        .env("NAMES", "Ann,Bob,Cy")
        .env("SCREEN", "1")
        .env("MODERATE", "1")
        .env("SPEAK", "1")
        .env("QUALITY", "1")
        .env("RESUME", "1")
        .env("SCREENSHOT", &shot)
        .output()
        .expect("run node tests/browser/meet.mjs (is Node.js installed?)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or("{}");
    eprintln!("meet: {last}");
    if !out.stderr.is_empty() {
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    }
    let r: Value = serde_json::from_str(last).unwrap_or_else(|_| json!({"ok": false, "raw": stdout}));
    assert_eq!(r["ok"], true, "three pages met: {r}");
    assert!(shot.exists(), "the screenshot was kept");

    // The log saw a meeting like any other: three joins, their tracks.
    let events = common::admin_get(&base, "/v1/events?tail=200&type=track.published").await;
    let published: Vec<&Value> = events["events"].as_array().into_iter().flatten().collect();
    assert!(published.len() >= 7, "audio and video of three people and a screen: {} tracks", published.len());
    assert!(published.iter().any(|e| e["data"]["source"] == "screen_share"), "the screen share is one: {events}");
}

/// What the README promises: `arc-control dev` and two browser windows on
/// the printed `/meet` address, a room and a name typed, no token minted by
/// hand (the page gets development tokens), make a meeting. `serve` mints
/// none. And what the page says when a token is refused, the camera is
/// denied, or the room closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_windows_on_dev_meet_without_minting_tokens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(&Mode::Embedded { data_dir: dir.path().to_path_buf() });
    let out = Command::new("node")
        .arg("meet.mjs")
        .current_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/browser"))
        .env("ARC_URL", &server.base)
        .env("NAMES", "Dana,Eli")
        .env("ROOM", "retro")
        .output()
        .expect("run node tests/browser/meet.mjs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or("{}");
    eprintln!("meet (dev tokens): {last}");
    let r: Value = serde_json::from_str(last).unwrap_or_else(|_| json!({"ok": false, "raw": stdout}));
    assert_eq!(r["ok"], true, "two windows met on development tokens: {r}");

    // What the page says when things go wrong: a refused token, a denied
    // camera (it still joins and chats), the room closed under it.
    let app = create_app(&server.base, ADMIN_KEY, "errors").await;
    let token = mint_token(
        &server.base,
        &app,
        "fay",
        "oops",
        json!({"join": true, "publish": true, "subscribe": true, "publish_data": true}),
    )
    .await;
    let out = Command::new("node")
        .arg("meet_errors.mjs")
        .current_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/browser"))
        .env("ARC_URL", &server.base)
        .env("TOKEN", &token)
        .env("ADMIN_KEY", ADMIN_KEY)
        .output()
        .expect("run node tests/browser/meet_errors.mjs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or("{}");
    eprintln!("meet (errors): {last}");
    let r: Value = serde_json::from_str(last).unwrap_or_else(|_| json!({"ok": false, "raw": stdout}));
    assert_eq!(r["ok"], true, "the page said what went wrong: {r}");

    let http = reqwest::Client::new();
    let refused = http
        .post(format!("{}/v1/dev/token", server.base))
        .json(&json!({"room": "retro", "identity": "bad identity!"}))
        .send()
        .await
        .expect("dev token");
    assert_eq!(refused.status(), 400, "a bad identity is named");
    drop(server);

    let (_, _, _, _dir, mode) = common::cluster("MEET", "meet").await;
    let serve = start(&mode);
    let none =
        http.post(format!("{}/v1/dev/token", serve.base)).json(&json!({"room": "retro"})).send().await.expect("post");
    assert_eq!(none.status(), 404, "serve mints no development tokens");
}
