//! The log is the truth for the media node: with the control plane's direct
//! requests to the node skipped (fault injection, `ARC_FAULT_SKIP_NODE_REQUESTS`),
//! a kicked publisher's media still stops within 2 s — the node follows the
//! log's `room.participant_left` and ends the session itself — and so does a
//! closed room's, and a publisher's whose `publish` permission is taken
//! away (the node follows `participant.permissions_updated`: the tracks are
//! unpublished, the WHIP participant leaves `removed`), and a moderator's
//! mute reaches the node through the log.

mod common;

use std::time::{Duration, Instant};

use common::rtc_client::{Client, flow};
use common::{ADMIN_KEY, Mode, mint_token, start_with_env};
use serde_json::{Value, json};

/// Drives both clients until the player has received nothing for `quiet`;
/// answers when its last packet arrived (or panics after `within`).
async fn until_media_stops(p: &mut Client, v: &mut Client, quiet: Duration, within: Duration) -> Instant {
    let started = Instant::now();
    let mut last_count = v.received;
    let mut last_at = Instant::now();
    loop {
        if p.connected {
            let keyframe = p.next_seq.is_multiple_of(5);
            p.send_next(keyframe);
        }
        p.drive(Duration::from_millis(3)).await;
        v.drive(Duration::from_millis(3)).await;
        if v.received != last_count {
            last_count = v.received;
            last_at = Instant::now();
        } else if last_at.elapsed() >= quiet {
            return last_at;
        }
        assert!(started.elapsed() < within, "media stopped within {within:?}");
    }
}

async fn room_id(base: &str, app: &(String, String), name: &str) -> String {
    common::room_id(base, app, name).await.expect("room id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_stops_from_the_log_when_the_direct_request_is_lost() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mode = Mode::Embedded { data_dir: dir.path().to_path_buf() };
    // Janitors (and so the reconciliation, the other safety net) only at start.
    let server = start_with_env(&mode, &["--janitor-interval-s", "3600"], &[("ARC_FAULT_SKIP_NODE_REQUESTS", "1")]);
    let base = server.base.clone();
    let app = common::create_app(&base, ADMIN_KEY, "follow").await;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client");

    // Mute and unmute reach the node through the log.
    {
        let room = "follow-mute";
        let pub_t = mint_token(&base, &app, "cam", room, json!({"publish": true})).await;
        let sub_t = mint_token(&base, &app, "viewer", room, json!({"subscribe": true})).await;
        let mut p = Client::open(&http, &base, room, &pub_t, true).await;
        let mut v = Client::open(&http, &base, room, &sub_t, false).await;
        flow(&mut p, &mut v, 20, Duration::from_secs(10)).await;
        let rid = room_id(&base, &app, room).await;
        let list: Value = http
            .get(format!("{base}/v1/rooms/{rid}/participants/cam"))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .expect("participant")
            .json()
            .await
            .expect("json");
        let track = list["tracks"][0]["track_id"].as_str().expect("a published track").to_owned();
        let mute = |muted: bool| {
            http.post(format!("{base}/v1/rooms/{rid}/tracks/{track}/mute"))
                .bearer_auth(ADMIN_KEY)
                .json(&json!({"muted": muted}))
                .send()
        };
        let at = Instant::now();
        assert_eq!(mute(true).await.expect("mute").status().as_u16(), 200);
        let last = until_media_stops(&mut p, &mut v, Duration::from_secs(1), Duration::from_secs(10)).await;
        let took = last.saturating_duration_since(at);
        eprintln!("mute: the player's last packet came {:.0} ms after the request", took.as_secs_f64() * 1000.0);
        assert!(took < Duration::from_secs(2), "mute took effect within 2 s ({took:?})");
        assert_eq!(mute(false).await.expect("unmute").status().as_u16(), 200);
        v.received = 0;
        flow(&mut p, &mut v, 10, Duration::from_secs(5)).await;
    }

    for how in ["kick", "close", "permissions"] {
        let room = format!("follow-{how}");
        let pub_t = mint_token(&base, &app, "cam", &room, json!({"publish": true})).await;
        let sub_t = mint_token(&base, &app, "viewer", &room, json!({"subscribe": true})).await;
        let mut p = Client::open(&http, &base, &room, &pub_t, true).await;
        let mut v = Client::open(&http, &base, &room, &sub_t, false).await;
        flow(&mut p, &mut v, 20, Duration::from_secs(10)).await;
        let rid = room_id(&base, &app, &room).await;
        let at = Instant::now();
        let r = match how {
            "kick" => http.post(format!("{base}/v1/rooms/{rid}/participants/cam/kick")),
            "close" => http.post(format!("{base}/v1/rooms/{rid}/close")),
            _ => http
                .put(format!("{base}/v1/rooms/{rid}/participants/cam/permissions"))
                .json(&json!({"publish": false, "subscribe": true, "publish_data": true})),
        };
        let r = r.bearer_auth(ADMIN_KEY).send().await.expect(how);
        assert_eq!(r.status().as_u16(), 200, "{how}");
        let last = until_media_stops(&mut p, &mut v, Duration::from_secs(1), Duration::from_secs(10)).await;
        let took = last.saturating_duration_since(at);
        eprintln!("{how}: the player's last packet came {:.0} ms after the request", took.as_secs_f64() * 1000.0);
        assert!(took < Duration::from_secs(2), "{how}: media stopped within 2 s of the log saying so ({took:?})");
        if how == "permissions" {
            // The node said why: its track went, and the WHIP publisher (whose only session that was) left `removed`.
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let left = common::admin_get(&base, "/v1/events?tail=50&type=room.participant_left").await;
                let gone = left["events"].as_array().into_iter().flatten().any(|e| {
                    e["aggregate_id"] == rid.as_str()
                        && e["data"]["identity"] == "cam"
                        && e["data"]["reason"] == "removed"
                });
                if gone {
                    break;
                }
                assert!(Instant::now() < deadline, "the publisher left with `removed`: {left}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
