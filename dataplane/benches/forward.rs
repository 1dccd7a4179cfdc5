//! The forwarding core's cost per forwarded packet, and what `rtc` adds on
//! the way out.
//!
//! - `forward/fanout/N`: one VP8 publisher, N subscribers; one 1,100-byte packet in,
//!   N rewritten packets out (`Forwarder::on_rtp`). Reported per output packet.
//! - `forward/audio_levels/10`: one Opus publisher whose packets carry an
//!   audio level (RFC 6464), 10 subscribers that negotiated the extension.
//! - `forward/vp8_switched/10`: one VP8 publisher with picture IDs, 10
//!   subscribers that came to it from another layer (their picture IDs are
//!   renumbered).
//! - `rtc_egress`: one subscriber's `rtc` peer connection, connected over an
//!   in-memory wire to a plain `rtc` client: `write_rtp` of one packet and
//!   draining its datagram (interceptors, SRTP AEAD-AES-128-GCM encryption,
//!   marshalling): what the node paid after the forwarding core before it
//!   protected its media itself, and still pays on a leg whose keys did not
//!   verify.
//! - `arc_egress/<profile>`: Arc's own egress (`engine::srtp`), per SRTP
//!   profile: one packet written and protected in place into a reused
//!   buffer, as the engine does now.
//!
//! `cargo bench -p arc-media --bench forward` (add `-- --quick` for the short
//! form) prints the figures and writes the "Forwarding core" section of
//! BENCHMARKS.md (or `target/BENCHMARKS.forward.quick.md` with `--quick`).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use arc_media::engine::peer;
use arc_media::engine::srtp::{Profile, Rollover, SrtpEgress};
use arc_media::forward::{Action, Codec, DownKey, DownSpec, ForwardConfig, Forwarder, TrackKey, TrackSpec};
use bytes::{Bytes, BytesMut};
use criterion::{BenchmarkId, Criterion, Throughput};
use rtc::interceptor::Registry;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::transport::{CandidateConfig, CandidateHostConfig, RTCIceCandidate};
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp::Packet;
use rtc::rtp_transceiver::RTCRtpTransceiverDirection;
use rtc::rtp_transceiver::RTCRtpTransceiverInit;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};

const PAYLOAD: usize = 1100;

fn packet(seq: u16, keyframe: bool) -> Packet {
    let mut payload = vec![0u8; PAYLOAD];
    payload[0] = 0x10;
    payload[1] = if keyframe { 0x00 } else { 0x01 };
    Packet {
        header: rtc::rtp::Header {
            version: 2,
            payload_type: 96,
            sequence_number: seq,
            timestamp: u32::from(seq) * 3000,
            ssrc: 0x1234,
            ..Default::default()
        },
        payload: Bytes::from(payload),
    }
}

fn forwarder(n: u32) -> Forwarder {
    let now = Instant::now();
    let mut f = Forwarder::new(ForwardConfig::default());
    let mut out = Vec::new();
    f.add_track(TrackKey(1), TrackSpec { codec: Codec::Vp8, audio_level_ext: None }).expect("track");
    for d in 0..n {
        let spec = DownSpec { ssrc: 1000 + d, payload_type: 96, audio_level_ext: None, rtx: None };
        f.add_down(now, DownKey(d), spec, Some(TrackKey(1)), &mut out).expect("down");
    }
    f.on_rtp(now, TrackKey(1), &packet(0, true), &mut out);
    f
}

/// Times `f.on_rtp` of `p` on `track`, one sequence number further each
/// time. The payload is made shared first, as one from the network is (its
/// clones then only count references).
fn forward_each(b: &mut criterion::Bencher<'_>, f: &mut Forwarder, track: TrackKey, p: &Packet, out: &mut Vec<Action>) {
    let now = Instant::now();
    let _ = p.payload.clone();
    let mut seq = p.header.sequence_number;
    b.iter(|| {
        out.clear();
        let mut p = p.clone();
        seq = seq.wrapping_add(1);
        p.header.sequence_number = seq;
        f.on_rtp(now, track, &p, out);
        std::hint::black_box(&out);
    });
}

fn bench_forward(c: &mut Criterion) {
    let mut g = c.benchmark_group("forward");
    for n in [1u32, 10, 100] {
        g.throughput(Throughput::Elements(u64::from(n)));
        g.bench_with_input(BenchmarkId::new("fanout", n), &n, |b, &n| {
            let mut f = forwarder(n);
            let mut out: Vec<Action> = Vec::with_capacity(n as usize);
            forward_each(b, &mut f, TrackKey(1), &packet(1, false), &mut out);
        });
    }
    g.throughput(Throughput::Elements(10));
    g.bench_function(BenchmarkId::new("audio_levels", 10), |b| {
        let now = Instant::now();
        let mut f = Forwarder::new(ForwardConfig::default());
        let mut out: Vec<Action> = Vec::with_capacity(10);
        f.add_track(TrackKey(1), TrackSpec { codec: Codec::Opus, audio_level_ext: Some(1) }).expect("track");
        for d in 0..10 {
            let spec = DownSpec { ssrc: 1000 + d, payload_type: 111, audio_level_ext: Some(3), rtx: None };
            f.add_down(now, DownKey(d), spec, Some(TrackKey(1)), &mut out).expect("down");
        }
        let mut p = packet(1, false);
        p.payload = Bytes::from(vec![0xfc; 80]);
        p.header.set_extension(1, Bytes::from_static(&[0x80 | 30])).expect("level");
        forward_each(b, &mut f, TrackKey(1), &p, &mut out);
    });
    g.bench_function(BenchmarkId::new("vp8_switched", 10), |b| {
        let now = Instant::now();
        let mut f = Forwarder::new(ForwardConfig::default());
        let mut out: Vec<Action> = Vec::with_capacity(10);
        for t in [1, 2] {
            f.add_track(TrackKey(t), TrackSpec { codec: Codec::Vp8, audio_level_ext: None }).expect("track");
        }
        // VP8 with a 15-bit picture ID and TL0PICIDX (X, I, L; M).
        let vp8 = |seq: u16, pid: u16, key: bool| {
            let mut p = packet(seq, key);
            let mut v = vec![0u8; PAYLOAD];
            v[..5].copy_from_slice(&[0x90, 0xc0, 0x80 | (pid >> 8) as u8, pid as u8, 9]);
            v[5] = if key { 0x00 } else { 0x01 };
            p.payload = Bytes::from(v);
            p
        };
        for d in 0..10 {
            let spec = DownSpec { ssrc: 1000 + d, payload_type: 96, audio_level_ext: None, rtx: None };
            f.add_down(now, DownKey(d), spec, Some(TrackKey(1)), &mut out).expect("down");
        }
        f.on_rtp(now, TrackKey(1), &vp8(1, 4000, true), &mut out);
        for d in 0..10 {
            f.switch_at_keyframe(now, DownKey(d), TrackKey(2), &mut out).expect("switch");
        }
        f.on_rtp(now, TrackKey(2), &vp8(500, 10, true), &mut out);
        forward_each(b, &mut f, TrackKey(2), &vp8(501, 11, false), &mut out);
    });
    g.finish();
}

fn ctx(local: SocketAddr, peer: SocketAddr) -> TransportContext {
    TransportContext { local_addr: local, peer_addr: peer, ecn: None, transport_protocol: TransportProtocol::UDP }
}

/// A connected (node, client) pair over an in-memory wire; the node sends VP8.
struct Pair {
    node: RTCPeerConnection,
    client: RTCPeerConnection,
    node_addr: SocketAddr,
    client_addr: SocketAddr,
    ssrc: u32,
    sender: rtc::rtp_transceiver::RTCRtpSenderId,
}

fn pump(p: &mut Pair) -> bool {
    let now = Instant::now();
    let mut moved = false;
    while let Some(m) = p.node.poll_write() {
        moved = true;
        let _ = p.client.handle_read(TaggedBytesMut {
            now,
            transport: ctx(p.client_addr, p.node_addr),
            message: m.message,
        });
    }
    while let Some(m) = p.client.poll_write() {
        moved = true;
        let _ =
            p.node.handle_read(TaggedBytesMut { now, transport: ctx(p.node_addr, p.client_addr), message: m.message });
    }
    for pc in [&mut p.node, &mut p.client] {
        if pc.poll_timeout().is_some_and(|t| t <= now) {
            let _ = pc.handle_timeout(now);
        }
        while pc.poll_read().is_some() {}
    }
    moved
}

fn connected_pair() -> Option<Pair> {
    let now = Instant::now();
    let node_addr: SocketAddr = "10.0.0.1:5000".parse().ok()?;
    let client_addr: SocketAddr = "10.0.0.2:6000".parse().ok()?;
    let mut me = MediaEngine::default();
    me.register_default_codecs().ok()?;
    let registry = register_default_interceptors(Registry::new(), &mut me).ok()?;
    let mut client = RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(me)
        .with_interceptor_registry(registry)
        .build(now)
        .ok()?;
    client
        .add_transceiver_from_kind(
            RtpCodecKind::Video,
            Some(RTCRtpTransceiverInit { direction: RTCRtpTransceiverDirection::Recvonly, ..Default::default() }),
        )
        .ok()?;
    let offer = client.create_offer(None).ok()?;
    client.set_local_description(now, offer.clone()).ok()?;
    let cand = CandidateHostConfig {
        base_config: CandidateConfig {
            network: "udp".into(),
            address: client_addr.ip().to_string(),
            port: client_addr.port(),
            component: 1,
            ..Default::default()
        },
        ..Default::default()
    }
    .new_candidate_host()
    .ok()?;
    client.add_local_candidate(RTCIceCandidate::from(&cand).to_json().ok()?).ok()?;

    let cert = peer::certificate().ok()?;
    let crypto = rtc::crypto::default_provider().ok()?;
    let mut node = peer::build(now, &cert, crypto, true).ok()?;
    let ssrc = 0xabcd;
    let vp8 = peer::codecs().into_iter().find(|(k, _)| *k == RtpCodecKind::Video).map(|(_, c)| c)?;
    let track = MediaStreamTrack::new(
        "s".into(),
        "t".into(),
        "video".into(),
        RtpCodecKind::Video,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(ssrc), ..Default::default() },
            codec: vp8.rtp_codec,
            ..Default::default()
        }],
    );
    let sender = node.add_track(track).ok()?;
    node.set_remote_description(now, offer).ok()?;
    peer::add_host_candidates(&mut node, &[node_addr], &[]).ok()?;
    let answer = node.create_answer(None).ok()?;
    node.set_local_description(now, answer.clone()).ok()?;
    client.set_remote_description(now, answer).ok()?;
    let mut pair = Pair { node, client, node_addr, client_addr, ssrc, sender };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut up = false;
    while Instant::now() < deadline && !up {
        if !pump(&mut pair) {
            std::thread::sleep(Duration::from_millis(2));
        }
        while let Some(ev) = pair.client.poll_event() {
            if std::env::var_os("ARC_BENCH_DEBUG").is_some() {
                eprintln!("client: {ev:?}");
            }
        }
        while let Some(ev) = pair.node.poll_event() {
            if std::env::var_os("ARC_BENCH_DEBUG").is_some() {
                eprintln!("node: {ev:?}");
            }
            if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(RTCPeerConnectionState::Connected) = ev {
                up = true;
            }
        }
    }
    up.then_some(pair)
}

fn bench_rtc_egress(c: &mut Criterion) -> bool {
    let Some(mut pair) = connected_pair() else {
        eprintln!("rtc_egress: the in-memory pair did not connect; skipped");
        return false;
    };
    let pt = pair
        .node
        .rtp_sender(pair.sender)
        .and_then(|mut s| s.get_parameters().rtp_parameters.codecs.first().map(|c| c.payload_type))
        .unwrap_or(96);
    let mut seq = 0u16;
    c.bench_function("rtc_egress", |b| {
        b.iter(|| {
            let mut p = packet(seq, false);
            seq = seq.wrapping_add(1);
            p.header.ssrc = pair.ssrc;
            p.header.payload_type = pt;
            let now = Instant::now();
            if let Some(mut s) = pair.node.rtp_sender(pair.sender) {
                let _ = s.write_rtp(now, p);
            }
            while let Some(m) = pair.node.poll_write() {
                std::hint::black_box::<BytesMut>(m.message);
            }
        });
    });
    true
}

/// Arc's own egress per SRTP profile: one packet written and protected in
/// place into a reused buffer, as the engine does (keys as the engine gets
/// them from a connection; that `rtc` clients open these packets is shown by
/// `dataplane/tests/engine_sim.rs` and the unit tests of `engine::srtp`).
fn bench_arc_egress(c: &mut Criterion) -> Vec<(&'static str, String)> {
    let Ok(provider) = rtc::crypto::default_provider() else { return Vec::new() };
    let mut done = Vec::new();
    let mut group = c.benchmark_group("arc_egress");
    for profile in [Profile::AeadAes128Gcm, Profile::AeadAes256Gcm, Profile::Aes128CmHmacSha1_80] {
        let key = vec![7u8; if profile == Profile::AeadAes256Gcm { 32 } else { 16 }];
        let salt = vec![9u8; if profile == Profile::Aes128CmHmacSha1_80 { 14 } else { 12 }];
        let Ok(mut egress) = SrtpEgress::from_master(provider.crypto(), profile, &key, &salt) else { continue };
        let mut roll = Rollover::default();
        let mut buf = BytesMut::with_capacity(1 << 20);
        let mut p = packet(1, false);
        let mut seq = 1u16;
        group.bench_function(profile.name(), |b| {
            b.iter(|| {
                p.header.sequence_number = seq;
                seq = seq.wrapping_add(1);
                let _ = egress.write(&mut roll, &p.header, &p.payload, &mut buf);
                std::hint::black_box::<BytesMut>(buf.split());
            });
        });
        done.push((profile.name(), format!("arc_egress/{}", profile.name())));
        if profile == Profile::AeadAes128Gcm {
            // With a player's transport-wide sequence number written into
            // the header (send-side bandwidth estimation) and noted in its
            // send history, as the engine does for a player that negotiated it.
            let mut bwe = arc_media::engine::bwe::SendSide::new(std::time::Instant::now());
            let now = std::time::Instant::now();
            group.bench_function("SRTP_AEAD_AES_128_GCM+twcc", |b| {
                b.iter(|| {
                    p.header.sequence_number = seq;
                    seq = seq.wrapping_add(1);
                    let twcc = Some((3, bwe.next_seq()));
                    if let Ok(true) = egress.write_with_twcc(&mut roll, &p.header, twcc, &p.payload, &mut buf) {
                        bwe.on_sent(now, buf.len());
                    }
                    std::hint::black_box::<BytesMut>(buf.split());
                });
            });
            done.push((
                "SRTP_AEAD_AES_128_GCM with a transport-wide number",
                "arc_egress/SRTP_AEAD_AES_128_GCM+twcc".into(),
            ));
        }
    }
    group.finish();
    done
}

/// Criterion's median estimate (ns) of one benchmark.
fn median_ns(id: &str) -> Option<f64> {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/criterion");
    let text = std::fs::read_to_string(root.join(id).join("new/estimates.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["median"]["point_estimate"].as_f64()
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let mut c = Criterion::default().configure_from_args();
    bench_forward(&mut c);
    let egress = bench_rtc_egress(&mut c);
    let arc_egress = bench_arc_egress(&mut c);
    c.final_summary();

    let mut md = String::new();
    let _ = writeln!(md, "<!-- forward-bench:begin -->\n## Forwarding core (issue 6)\n");
    let _ = writeln!(
        md,
        "Measured by `dataplane/benches/forward.rs` (criterion{}; `cargo bench -p arc-media --bench forward`, or `scripts/bench`). Date: {}. Medians; one {PAYLOAD}-byte VP8 packet in.\n",
        if quick { ", --quick" } else { "" },
        chrono::Utc::now().format("%Y-%m-%d")
    );
    let _ = writeln!(md, "| case | ns per packet in | ns per forwarded packet |\n|---|---|---|");
    for n in [1u32, 10, 100] {
        if let Some(ns) = median_ns(&format!("forward/fanout/{n}")) {
            let line = format!("| forwarding core, 1 → {n} | {ns:.0} | {:.1} |", ns / f64::from(n));
            println!("{line}");
            let _ = writeln!(md, "{line}");
        }
    }
    for (id, what) in [
        ("forward/audio_levels/10", "forwarding core, Opus with audio levels, 1 → 10"),
        ("forward/vp8_switched/10", "forwarding core, VP8 renumbered after a layer switch, 1 → 10"),
    ] {
        if let Some(ns) = median_ns(id) {
            let line = format!("| {what} | {ns:.0} | {:.1} |", ns / 10.0);
            println!("{line}");
            let _ = writeln!(md, "{line}");
        }
    }
    if egress && let Some(ns) = median_ns("rtc_egress") {
        let line = format!("| rtc `write_rtp` + SRTP + marshal, one subscriber | {ns:.0} | {ns:.0} |");
        println!("{line}");
        let _ = writeln!(md, "{line}");
    }
    let rtc_ns = median_ns("rtc_egress");
    let mut own_gcm = None;
    for (profile, id) in &arc_egress {
        let Some(ns) = median_ns(id) else { continue };
        own_gcm = own_gcm.or(Some(ns));
        let ratio = rtc_ns.map(|r| format!(" ({:.2}× of `rtc`'s)", ns / r)).unwrap_or_default();
        let line = format!("| Arc's own egress, {profile} in place{ratio} | {ns:.0} | {ns:.0} |");
        println!("{line}");
        let _ = writeln!(md, "{line}");
    }
    // After the table, so it stays one table.
    if let (Some(core), Some(rtc), Some(own)) = (median_ns("forward/fanout/100"), rtc_ns, own_gcm) {
        let per = core / 100.0;
        let note = format!(
            "\nPer subscriber and packet the node pays {per:.0} ns in the forwarding core, then {own:.0} ns in Arc's own egress (AES-128-GCM), where `rtc`'s egress took {rtc:.0} ns (before the socket write)."
        );
        println!("{}", note.trim());
        let _ = writeln!(md, "{note}");
    }
    let _ = writeln!(md, "<!-- forward-bench:end -->");
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    match arc_tests::benchmarks::write_section(&root, "forward-bench", &md, quick) {
        Ok(path) => println!("wrote {}", path.display()),
        Err(e) => eprintln!("forward: cannot write the figures: {e}"),
    }
}
