//! No leaks: publish/subscribe/leave cycles against the embedded media node
//! of `arc-control dev`, with `rtc` clients over real UDP (fast enough for
//! hundreds of cycles; Chromium covers interop elsewhere). After the first 10
//! cycles the process's RSS and open file descriptors are the baseline; after
//! all of them they must be within 10 %, and the node must report no sessions
//! and no tracks left.
//!
//! `ARC_LEAK_CYCLES` sets the number of cycles (default 200).

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rtc::interceptor::Registry;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_VP8, MediaEngine};
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind};
use rtc::rtp_transceiver::{RTCRtpSenderId, RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use serde_json::{Value, json};
use tokio::net::UdpSocket;

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

fn vp8() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_VP8.into(),
        clock_rate: 90_000,
        channels: 0,
        sdp_fmtp_line: String::new(),
        rtcp_feedback: vec![],
    }
}

/// A WebRTC client on its own UDP socket.
struct Client {
    pc: RTCPeerConnection,
    sock: UdpSocket,
    local: SocketAddr,
    sender: Option<(RTCRtpSenderId, u32)>,
    connected: bool,
    received: usize,
    location: Option<String>,
}

impl Client {
    async fn new(publish: bool) -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let local = sock.local_addr().expect("addr");
        let now = Instant::now();
        let mut me = MediaEngine::default();
        me.register_default_codecs().expect("codecs");
        let registry = register_default_interceptors(Registry::new(), &mut me).expect("interceptors");
        let mut pc = RTCPeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_media_engine(me)
            .with_interceptor_registry(registry)
            .build(now)
            .expect("pc");
        let mut sender = None;
        if publish {
            let ssrc = rand_ssrc();
            let track = MediaStreamTrack::new(
                "leak".into(),
                "leak-video".into(),
                "video".into(),
                RtpCodecKind::Video,
                vec![RTCRtpEncodingParameters {
                    rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(ssrc), ..Default::default() },
                    codec: vp8(),
                    ..Default::default()
                }],
            );
            sender = Some((pc.add_track(track).expect("track"), ssrc));
        } else {
            pc.add_transceiver_from_kind(
                RtpCodecKind::Video,
                Some(RTCRtpTransceiverInit { direction: RTCRtpTransceiverDirection::Recvonly, ..Default::default() }),
            )
            .expect("transceiver");
        }
        let offer = pc.create_offer(None).expect("offer");
        pc.set_local_description(now, offer).expect("local");
        let cand = CandidateHostConfig {
            base_config: CandidateConfig {
                network: "udp".into(),
                address: local.ip().to_string(),
                port: local.port(),
                component: 1,
                ..Default::default()
            },
            ..Default::default()
        }
        .new_candidate_host()
        .expect("candidate");
        pc.add_local_candidate(RTCIceCandidate::from(&cand).to_json().expect("json")).expect("add candidate");
        Self { pc, sock, local, sender, connected: false, received: 0, location: None }
    }

    fn offer(&self) -> String {
        self.pc.local_description().map(|d| d.sdp.clone()).expect("offer sdp")
    }

    /// Moves packets and timers for up to `for_`.
    async fn drive(&mut self, for_: Duration) {
        let until = Instant::now() + for_;
        let mut buf = vec![0u8; 1500];
        while Instant::now() < until {
            while let Some(m) = self.pc.poll_write() {
                let _ = self.sock.send_to(&m.message, m.transport.peer_addr).await;
            }
            while let Some(ev) = self.pc.poll_event() {
                if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(RTCPeerConnectionState::Connected) = ev {
                    self.connected = true;
                }
            }
            while let Some(m) = self.pc.poll_read() {
                if let RTCMessage::RtpPacket(..) = m.message {
                    self.received += 1;
                }
            }
            let now = Instant::now();
            if self.pc.poll_timeout().is_some_and(|t| t <= now) {
                let _ = self.pc.handle_timeout(now);
                continue;
            }
            let wait = self.pc.poll_timeout().map_or(Duration::from_millis(5), |t| t.saturating_duration_since(now));
            let wait = wait.min(Duration::from_millis(5)).max(Duration::from_micros(200));
            if let Ok(Ok((n, from))) = tokio::time::timeout(wait, self.sock.recv_from(&mut buf)).await {
                let msg = TaggedBytesMut {
                    now: Instant::now(),
                    transport: TransportContext {
                        local_addr: self.local,
                        peer_addr: from,
                        ecn: None,
                        transport_protocol: TransportProtocol::UDP,
                    },
                    message: BytesMut::from(&buf[..n]),
                };
                let _ = self.pc.handle_read(msg);
            }
        }
    }

    fn send_frame(&mut self, seq: u16, keyframe: bool) {
        let Some((id, ssrc)) = self.sender else { return };
        let mut payload = vec![0u8; 800];
        payload[0] = 0x10;
        payload[1] = if keyframe { 0x00 } else { 0x01 };
        let Some(mut s) = self.pc.rtp_sender(id) else { return };
        let pt = s.get_parameters().rtp_parameters.codecs.first().map_or(96, |c| c.payload_type);
        let packet = rtc::rtp::Packet {
            header: rtc::rtp::Header {
                version: 2,
                marker: true,
                payload_type: pt,
                sequence_number: seq,
                timestamp: u32::from(seq) * 3000,
                ssrc,
                ..Default::default()
            },
            payload: Bytes::from(payload),
        };
        let _ = s.write_rtp(Instant::now(), packet);
    }
}

fn rand_ssrc() -> u32 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(7);
    t.wrapping_mul(2_654_435_761) | 1
}

async fn post(http: &reqwest::Client, url: &str, token: &str, sdp: String) -> (String, String) {
    let resp = http
        .post(url)
        .bearer_auth(token)
        .header("content-type", "application/sdp")
        .body(sdp)
        .send()
        .await
        .expect("post");
    let status = resp.status().as_u16();
    let location = resp.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let body = resp.text().await.unwrap_or_default();
    assert_eq!(status, 201, "{url}: {body}");
    (body, location)
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
