//! No leaks: publish/subscribe/leave cycles against the embedded media node
//! of `arc-control dev`, with `rtc` clients over real UDP (fast enough for
//! hundreds of cycles; Chromium covers interop elsewhere). After the first 10
//! cycles the process's RSS and open file descriptors are the baseline; after
//! all of them they must be within 10 %, and the node must report no sessions
//! and no tracks left.
//!
//! `ARC_LEAK_CYCLES` sets the number of cycles (default 200).

mod common;

use std::time::{Duration, Instant};

use common::rtc_client::{Client, post};
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::sansio::Protocol;
use serde_json::{Value, json};

/// (RSS in KiB, open file descriptors) of a process.
fn usage(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0);
    (rss, fds)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_subscribe_leave_cycles_leak_nothing() {
    let cycles: usize = std::env::var("ARC_LEAK_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(200);
    let dir = tempfile::tempdir().expect("tempdir");
    let dev = common::start(&common::Mode::Embedded { data_dir: dir.path().to_path_buf() });
    let pid = dev.child.id();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(20)).build().expect("client");
    let app = common::create_app(&dev.base, common::ADMIN_KEY, "leak").await;
    let pub_token = common::mint_token(&dev.base, &app, "pub", "leak", json!({"publish": true})).await;
    let sub_token = common::mint_token(&dev.base, &app, "sub", "leak", json!({"subscribe": true})).await;
    let started = Instant::now();
    let mut baseline = (0, 0);
    let mut cycle_ms = Vec::with_capacity(cycles);
    for cycle in 0..cycles {
        let t = Instant::now();
        let mut publisher = Client::new(true).await;
        let (answer, pub_loc) = post(&http, &format!("{}/v1/whip/leak", dev.base), &pub_token, publisher.offer()).await;
        publisher
            .pc
            .set_remote_description(Instant::now(), RTCSessionDescription::answer(answer).expect("answer"))
            .expect("remote");
        publisher.location = Some(pub_loc);
        let mut subscriber = Client::new(false).await;
        let (answer, sub_loc) =
            post(&http, &format!("{}/v1/whep/leak", dev.base), &sub_token, subscriber.offer()).await;
        subscriber
            .pc
            .set_remote_description(Instant::now(), RTCSessionDescription::answer(answer).expect("answer"))
            .expect("remote");
        subscriber.location = Some(sub_loc);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seq = 0u16;
        while subscriber.received < 10 {
            assert!(
                Instant::now() < deadline,
                "cycle {cycle}: media flowed within 10 s ({} packets)",
                subscriber.received
            );
            if publisher.connected {
                seq = seq.wrapping_add(1);
                publisher.send_frame(seq, seq % 5 == 1);
            }
            publisher.drive(Duration::from_millis(3)).await;
            subscriber.drive(Duration::from_millis(3)).await;
        }
        for c in [&publisher, &subscriber] {
            let url = format!("{}{}", dev.base, c.location.as_deref().unwrap_or_default());
            let token = if c.sender.is_some() { &pub_token } else { &sub_token };
            let r = http.delete(url).bearer_auth(token).send().await.expect("delete");
            assert_eq!(r.status().as_u16(), 200, "cycle {cycle}: DELETE");
        }
        let _ = publisher.pc.close();
        let _ = subscriber.pc.close();
        cycle_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        if cycle + 1 == 10 {
            baseline = usage(pid);
        }
    }
    // Let the reporter and the heartbeat catch up, then read the node's own view.
    let deadline = Instant::now() + Duration::from_secs(10);
    let node = loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let nodes: Value = http
            .get(format!("{}/v1/nodes", dev.base))
            .bearer_auth(common::ADMIN_KEY)
            .send()
            .await
            .expect("nodes")
            .json()
            .await
            .expect("json");
        let n = nodes["nodes"][0].clone();
        if (n["sessions"] == 0 && n["tracks"] == 0) || Instant::now() > deadline {
            break n;
        }
    };
    let after = usage(pid);
    cycle_ms.sort_by(f64::total_cmp);
    let median = cycle_ms.get(cycle_ms.len() / 2).copied().unwrap_or(0.0);
    eprintln!(
        "{cycles} cycles in {:.1} s (median {median:.0} ms): RSS {} KiB after 10 → {} KiB after {cycles} ({:+.1} %), fds {} → {}",
        started.elapsed().as_secs_f64(),
        baseline.0,
        after.0,
        (after.0 as f64 - baseline.0 as f64) / baseline.0.max(1) as f64 * 100.0,
        baseline.1,
        after.1
    );
    assert_eq!((node["sessions"].clone(), node["tracks"].clone()), (json!(0), json!(0)), "every session ended: {node}");
    assert!(after.0 as f64 <= baseline.0 as f64 * 1.10, "RSS within 10 %: {} → {} KiB", baseline.0, after.0);
    assert!(after.1 as f64 <= baseline.1 as f64 * 1.10, "open fds within 10 %: {} → {}", baseline.1, after.1);
}
