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

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use common::{ADMIN_KEY, Mode, create_app, mint_token, start};
use serde_json::{Value, json};

/// Runs a script of `tests/browser` with `envs`; its last output line (one
/// JSON object, `ok` among it), printed under `label` without the pages' views.
fn browser(script: &str, label: &str, envs: &[(&str, &str)]) -> Value {
    let out = Command::new("node")
        .arg(script)
        .current_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/browser"))
        .envs(envs.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("run node tests/browser/{script} (is Node.js installed?): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or("{}");
    eprintln!("{label}: {}", last.split("\"views\"").next().unwrap_or(last));
    if !out.stderr.is_empty() {
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    }
    serde_json::from_str(last).unwrap_or_else(|_| json!({"ok": false, "raw": stdout}))
}

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
    let tokens = tokens.join(",");
    let shot_path = shot.display().to_string();
    let r = browser(
        "meet.mjs",
        "meet",
        &[
            ("ARC_URL", &base),
            ("TOKENS", &tokens),
            ("NAMES", "Ann,Bob,Cy"),
            ("SCREEN", "1"),
            ("MODERATE", "1"),
            ("SPEAK", "1"),
            ("QUALITY", "1"),
            ("RESUME", "1"),
            ("SCREENSHOT", &shot_path),
        ],
    );
    assert_eq!(r["ok"], true, "three pages met: {r}");
    assert!(shot.exists(), "the screenshot was kept");

    // The log saw a meeting like any other: three joins, their tracks.
    let events = common::admin_get(&base, "/v1/events?tail=200&type=track.published").await;
    let published: Vec<&Value> = events["events"].as_array().into_iter().flatten().collect();
    assert!(published.len() >= 7, "audio and video of three people and a screen: {} tracks", published.len());
    assert!(published.iter().any(|e| e["data"]["source"] == "screen_share"), "the screen share is one: {events}");
}

/// Simulcast (`tests/browser/simulcast.mjs`): a Chromium page publishes its
/// camera at 960x540 as the SDK's three layers; another receives it, gets
/// the top layer, then asks for the low one, for a 480x270 tile's size, and
/// for the best again — each time the frames it decodes change size to that
/// layer's (as the publisher sends it then: Chromium scales layers down and
/// turns them off when its CPU is short), and the picture does not stop for
/// a second around the change. While the player asks for the low layer
/// alone, the node has the publisher pause the other two (dynacast: the
/// publisher's SDK turns those encodings off) and the picture goes on; they
/// resume when asked for. The node saw the layers as one track (one
/// `track.published` for the camera's video). Runs alone (`.config/nextest.toml`):
/// beside another browser test, Chromium's CPU adaptation left it one layer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulcast_camera_reaches_each_player_at_the_layer_it_asks_for() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(&Mode::Embedded { data_dir: dir.path().to_path_buf() });
    let base = server.base.clone();
    let app = create_app(&base, ADMIN_KEY, "layers").await;
    let grants = json!({"join": true, "publish": true, "subscribe": true});
    let cam = mint_token(&base, &app, "cam", "layers", grants.clone()).await;
    let viewer = mint_token(&base, &app, "viewer", "layers", grants).await;
    let tokens = format!("{cam},{viewer}");
    let r = browser("simulcast.mjs", "simulcast", &[("ARC_URL", &base), ("TOKENS", &tokens), ("PUBLISHER", "cam")]);
    assert_eq!(r["ok"], true, "the player got each layer it asked for, without a freeze: {r}");

    let events = common::admin_get(&base, "/v1/events?tail=200&type=track.published").await;
    let videos: Vec<&Value> =
        events["events"].as_array().into_iter().flatten().filter(|e| e["data"]["kind"] == "video").collect();
    assert_eq!(videos.len(), 1, "three layers, one published video track: {videos:?}");
    assert_eq!(videos[0]["data"]["simulcast"], true, "the track says it has layers: {videos:?}");
    let samples = common::media_metrics(&base).await;
    let told = samples.get("arc_media_dynacast_messages_total").copied().unwrap_or(0.0);
    assert!(told >= 3.0, "the publisher was told to pause, then twice to resume: {told} dynacast messages");
}

/// Redundant audio (`tests/browser/red.mjs`): a Chromium page publishes its
/// microphone as `audio/red` (the SDK puts RED first); a receiver that
/// negotiated RED gets it as it comes, one that did not (`red: false`) gets
/// each packet's newest frame as plain Opus — both play it with under a
/// quarter of the samples concealed (1–2 % alone; 11 % for one of them in a
/// full parallel run). The node saw one audio track, `audio/red`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn red_audio_reaches_a_red_receiver_as_red_and_another_as_plain_opus() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(&Mode::Embedded { data_dir: dir.path().to_path_buf() });
    let base = server.base.clone();
    let app = create_app(&base, ADMIN_KEY, "red").await;
    let grants = json!({"join": true, "publish": true, "subscribe": true});
    let mut tokens = Vec::new();
    for who in ["mic", "red", "plain"] {
        tokens.push(mint_token(&base, &app, who, "red", grants.clone()).await);
    }
    let tokens = tokens.join(",");
    let r = browser("red.mjs", "red", &[("ARC_URL", &base), ("TOKENS", &tokens)]);
    assert_eq!(r["ok"], true, "RED to the one that takes it, Opus to the other, both heard: {r}");
    let events = common::admin_get(&base, "/v1/events?tail=200&type=track.published").await;
    let audio: Vec<&Value> =
        events["events"].as_array().into_iter().flatten().filter(|e| e["data"]["kind"] == "audio").collect();
    assert_eq!(audio.len(), 1, "one published audio track: {audio:?}");
    assert_eq!(audio[0]["data"]["codec"], "audio/red", "{audio:?}");
    let samples = common::media_metrics(&base).await;
    let red = samples.get("arc_media_red_packets_total").copied().unwrap_or(0.0);
    let stripped = samples.get("arc_media_red_stripped_packets_total").copied().unwrap_or(0.0);
    eprintln!("node: {red} RED packets in, {stripped} sent as plain Opus");
    assert!(red > 100.0, "the publisher sent RED: {red} packets");
    assert!(stripped > 100.0, "the receiver without RED got plain Opus: {stripped} packets");
}

/// Per-player bandwidth estimation: a simulcast publisher (its browser on
/// this machine's network) and a player (its browser in a network
/// namespace) whose downlink the test narrows to 400 kb/s (`tc
/// tbf`, 300 ms of queue) once the player decodes the top layer
/// (`tests/browser/bwe.mjs`). The node's estimate of the player's link
/// (its transport-wide congestion control feedback) falls, and the player
/// gets a lower layer without its picture stopping; when the limit is
/// lifted it climbs back to the top layer (the node probes the link with
/// padding on the player's RTX stream before moving it up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulcast_player_behind_a_narrow_downlink_gets_a_lower_layer_and_climbs_back_when_it_widens() {
    let ns = common::Netns::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start_for_namespace(&ns, dir.path());
    let base = server.base.clone();
    let app = create_app(&base, ADMIN_KEY, "narrow").await;
    let grants = json!({"join": true, "publish": true, "subscribe": true});
    let cam = mint_token(&base, &app, "cam", "narrow", grants.clone()).await;
    let viewer = mint_token(&base, &app, "viewer", "narrow", grants).await;
    // The player's browser runs in the namespace, the publisher's outside it.
    let mut node_js = Command::new("node")
        .arg("bwe.mjs")
        .current_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/browser"))
        .env("ARC_URL", &base)
        .env("TOKENS", format!("{cam},{viewer}"))
        .env("NETNS", &ns.name)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run node tests/browser/bwe.mjs in the namespace");
    let mut stdin = node_js.stdin.take().expect("stdin");
    let mut last = String::new();
    for line in BufReader::new(node_js.stdout.take().expect("stdout")).lines().map_while(Result::ok) {
        if line.contains("\"phase\":\"limit\"") {
            ns.limit_downlink("400kbit", 300);
            let _ = stdin.write_all(b"limited\n");
        } else if line.contains("\"phase\":\"lift\"") {
            ns.lift_downlink_limit();
            let _ = stdin.write_all(b"lifted\n");
        }
        last = line;
    }
    let _ = node_js.wait();
    eprintln!("narrow downlink: {last}");
    let r: Value = serde_json::from_str(&last).unwrap_or_else(|_| json!({"ok": false, "raw": last}));
    let samples = common::media_metrics(&base).await;
    let probes = samples.get("arc_media_bandwidth_probes_total").copied().unwrap_or(0.0);
    let padding = samples.get("arc_media_padding_packets_total").copied().unwrap_or(0.0);
    eprintln!("node: {probes} bandwidth probes, {padding} padding packets");
    assert_eq!(r["ok"], true, "a lower layer behind the narrow link without a freeze, the top one after: {r}");
    assert!(
        probes >= 1.0 && padding > 0.0,
        "it climbed back by probing with padding: {probes} probes, {padding} padding"
    );
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
    let r = browser(
        "meet.mjs",
        "meet (dev tokens)",
        &[("ARC_URL", &server.base), ("NAMES", "Dana,Eli"), ("ROOM", "retro")],
    );
    assert_eq!(r["ok"], true, "two windows met on development tokens: {r}");

    // What the page says when things go wrong: a refused token, a denied
    // camera (it still joins and chats), its right to publish taken away
    // (its tracks end), the room closed under it.
    let app = create_app(&server.base, ADMIN_KEY, "errors").await;
    let token = mint_token(
        &server.base,
        &app,
        "fay",
        "oops",
        json!({"join": true, "publish": true, "subscribe": true, "publish_data": true}),
    )
    .await;
    let pat =
        mint_token(&server.base, &app, "pat", "oops", json!({"join": true, "publish": true, "subscribe": true})).await;
    let r = browser(
        "meet_errors.mjs",
        "meet (errors)",
        &[("ARC_URL", &server.base), ("TOKEN", &token), ("TOKEN_PUB", &pat), ("ADMIN_KEY", ADMIN_KEY)],
    );
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

/// A TURN server (coturn, started here on loopback and stopped by pid).
struct Turn {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Turn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()).map(|a| a.port()).expect("a free port")
}

fn start_turn(secret: &str) -> Turn {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_udp_port();
    let relay_from = 40_000 + (port % 20_000);
    let child = Command::new("turnserver")
        .args(["-n", "--no-cli", "--no-tls", "--no-dtls", "--fingerprint", "--log-file=stdout", "--simple-log"])
        .args(["--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1", "--allow-loopback-peers"])
        .arg(format!("--listening-port={port}"))
        .arg(format!("--min-port={relay_from}"))
        .arg(format!("--max-port={}", relay_from + 200))
        .args(["--use-auth-secret", &format!("--static-auth-secret={secret}"), "--realm=arc.test"])
        .arg(format!("--pidfile={}", dir.path().join("turn.pid").display()))
        .arg(format!("--userdb={}", dir.path().join("turn.db").display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("turnserver (coturn; scripts/test installs it)");
    // Ready when it answers a STUN binding request.
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    sock.set_read_timeout(Some(std::time::Duration::from_millis(200))).expect("timeout");
    let mut request = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
    request.extend_from_slice(b"arc-turn-tst");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let _ = sock.send_to(&request, ("127.0.0.1", port));
        let mut buf = [0u8; 512];
        if sock.recv_from(&mut buf).is_ok_and(|(n, _)| n >= 20 && buf[0] == 0x01 && buf[1] == 0x01) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "coturn answered on 127.0.0.1:{port}");
    }
    Turn { child, port, _dir: dir }
}

/// With `--turn-urls` and `--turn-secret`, `join` hands each participant
/// the TURN server with credentials of its own (time-limited, the TURN REST
/// API convention coturn checks), and two pages forced to relay
/// (`iceTransportPolicy: "relay"`) meet through coturn: every stream they
/// receive comes over a relay candidate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meeting_relayed_through_turn() {
    let secret = "turn-shared-secret-for-tests";
    let turn = start_turn(secret);
    let dir = tempfile::tempdir().expect("tempdir");
    let turn_url = format!("turn:127.0.0.1:{}?transport=udp", turn.port);
    let server = common::start_with(
        &Mode::Embedded { data_dir: dir.path().to_path_buf() },
        &["--turn-urls", &turn_url, "--turn-secret", secret, "--stun-urls", &format!("stun:127.0.0.1:{}", turn.port)],
    );
    let r = browser(
        "meet.mjs",
        "meet (relayed)",
        &[("ARC_URL", &server.base), ("NAMES", "Gus,Hal"), ("ROOM", "relayed"), ("RELAY", "1")],
    );
    assert_eq!(r["ok"], true, "two pages met through TURN only: {r}");
    assert_eq!(r["relayed"], true, "{r}");
}

/// arc-control (embedded, its data in `dir`) listening and announcing its
/// media on the host's end of `ns`'s veth, the address the namespace reaches.
fn start_for_namespace(ns: &common::Netns, dir: &std::path::Path) -> common::Server {
    let listen = format!("{}:0", ns.host_ip);
    common::start_with(
        &Mode::Embedded { data_dir: dir.to_path_buf() },
        &["--listen", &listen, "--media-udp", "0.0.0.0:0", "--media-announce", &ns.host_ip],
    )
}

/// The local ports of what is open in a network namespace (`ss`): `-uanH`
/// UDP sockets, `-tanH` TCP connections (`except`: those to that port).
fn ports_in(ns: &common::Netns, ss: &str, except: Option<u16>) -> Vec<u16> {
    let out = ns.command("ss").args([ss]).output().expect("run ss (iproute2) in the namespace");
    let port = |a: &str| a.rsplit(':').next()?.parse::<u16>().ok();
    let mut ports: Vec<u16> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (local, peer) = (port(f.get(3)?)?, port(f.get(4)?));
            (peer != except || except.is_none()).then_some(local)
        })
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// Reconnection when the media path breaks: three pages meet from a
/// network namespace of their own; then every 5-tuple their media uses
/// (UDP, and ICE-TCP connections: everything but the signalling sockets) is
/// dropped there (nft, both ways), as a network change or a NAT that forgot
/// them would. Each page's connections restart their ICE on their sessions
/// (new credentials over the socket, new ports) and media flows again —
/// same participants, nobody sees a leave or a join.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meeting_whose_media_paths_break_restarts_ice_and_keeps_everyone() {
    let ns = common::Netns::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start_for_namespace(&ns, dir.path());
    let base = server.base.clone();
    let app = create_app(&base, ADMIN_KEY, "breaks").await;
    let grants = json!({"join": true, "publish": true, "subscribe": true, "publish_data": true});
    let mut tokens = Vec::new();
    for who in ["ann", "bob", "cy"] {
        tokens.push(mint_token(&base, &app, who, "rebind", grants.clone()).await);
    }
    let mut node_js = ns
        .command("node")
        .arg("meet.mjs")
        .current_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/browser"))
        .env("ARC_URL", &base)
        .env("TOKENS", tokens.join(","))
        .env("NAMES", "Ann,Bob,Cy")
        .env("BREAK_PATH", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run node tests/browser/meet.mjs in the namespace");
    let mut lines = BufReader::new(node_js.stdout.take().expect("stdout")).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    assert!(first.contains("\"phase\":\"media\""), "three pages met before the break: {first}");
    let http_port = base.rsplit(':').next().and_then(|p| p.parse::<u16>().ok());
    let udp = ports_in(&ns, "-uanH", None);
    let tcp = ports_in(&ns, "-tanH", http_port);
    assert!(!udp.is_empty(), "the pages' UDP sockets were found");
    let set = |ports: &[u16]| ports.iter().map(u16::to_string).collect::<Vec<_>>().join(", ");
    let mut input = format!("  udp dport {{ {} }} drop\n", set(&udp));
    let mut output = format!("  udp sport {{ {} }} drop\n", set(&udp));
    if !tcp.is_empty() {
        input.push_str(&format!("  tcp dport {{ {} }} drop\n", set(&tcp)));
        output.push_str(&format!("  tcp sport {{ {} }} drop\n", set(&tcp)));
    }
    let rules = format!(
        "table inet arc_break {{\n chain input {{\n  type filter hook input priority 0;\n{input} }}\n \
         chain output {{\n  type filter hook output priority 0;\n{output} }}\n}}\n"
    );
    let mut nft = ns.command("nft").args(["-f", "-"]).stdin(Stdio::piped()).spawn().expect("run nft");
    nft.stdin.take().expect("stdin").write_all(rules.as_bytes()).expect("write the rules");
    assert!(nft.wait().expect("nft").success(), "nft took the rules: {rules}");
    let mut stdin = node_js.stdin.take().expect("stdin");
    stdin.write_all(b"broken\n").expect("tell the pages");
    drop(stdin);
    let last = lines.map_while(Result::ok).last().unwrap_or_default();
    let _ = node_js.wait();
    let r: Value = serde_json::from_str(&last).unwrap_or_else(|_| json!({"ok": false, "raw": last}));
    let _ = std::fs::write(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("meet-break.json"), &last);
    let log = common::admin_get(&base, "/v1/events?tail=300").await;
    let _ = std::fs::write(PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("meet-break-log.json"), log.to_string());
    eprintln!(
        "{} UDP and {} TCP ports dropped; media back on every page after {} ms (ICE restarted after {} ms)",
        udp.len(),
        tcp.len(),
        r["restored_ms"],
        r["ice_restarted_ms"]
    );
    assert_eq!(r["ok"], true, "every page restarted ICE and has media from the other two, nobody left: {}", {
        let s = last.split("\"views\"").next().unwrap_or(&last);
        s.to_owned()
    });
    // The log saw three joins and no other (the leaves come when the browser closes).
    let joined = common::admin_get(&base, "/v1/events?tail=200&type=room.participant_joined").await;
    assert_eq!(joined["events"].as_array().map_or(0, Vec::len), 3, "no page joined again: {joined}");
}
