//! `arc-load`: a load generator for Arc's media path. It creates P
//! publishers and S subscribers in each of R rooms through WHIP/WHEP (real
//! ICE and DTLS-SRTP, `rtc` clients), sends synthetic media at real sizes and
//! rates (720p30-like video, ≈ 1.5 Mbps, a keyframe burst every 2 s; Opus-like
//! audio, 50 packets/s of ≈ 100 B), and measures at every subscriber what
//! arrives: packets per second, loss, duplicates and added latency (each
//! payload carries its publisher, a sequence number and its send time). It
//! reads the node's CPU time from `/proc` to report CPU per forwarded packet,
//! and its own, so a run says when the tool was the bottleneck.
//!
//! One thread drives every client (sans-IO peer connections, one UDP socket
//! each). With `--ramp`, subscribers are added step by step until loss
//! exceeds 0.5 % or p99 latency 50 ms (the knee). A table is printed at the
//! end and `--json` writes the figures.
//!
//! `--target janus` runs the same workload through Janus's VideoRoom (a
//! small adapter, [`janus`]), for a side-by-side comparison;
//! `--write-janus-config DIR` writes a configuration for a Janus serving it
//! on loopback.

mod janus;

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use arc_media::loadgen::{Histogram, Reception, STAMP_LEN, Stamp, Totals, process_cpu_us, process_rss_kib};
use bytes::{Bytes, BytesMut};
use clap::Parser;
use rtc::interceptor::Registry;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::{MIME_TYPE_OPUS, MIME_TYPE_VP8, MediaEngine};
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::peer_connection::{RTCPeerConnection, RTCPeerConnectionBuilder};
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodec, RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind};
use rtc::rtp_transceiver::{RTCRtpSenderId, RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use serde_json::json;
use tokio::net::UdpSocket;

#[derive(Debug, Parser)]
#[command(
    name = "arc-load",
    version,
    about = "Load generator for Arc's media path (WHIP/WHEP, real ICE and DTLS-SRTP)"
)]
struct Args {
    /// arc-control's base URL
    #[arg(long, default_value = "http://127.0.0.1:7880")]
    url: String,
    /// The admin key (an app is created for the run; --target arc)
    #[arg(long, env = "ARC_ADMIN_KEY", hide_env_values = true)]
    admin_key: Option<String>,
    /// Rooms
    #[arg(long, default_value_t = 1)]
    rooms: usize,
    /// Publishers per room
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// Subscribers per room (the start of a ramp)
    #[arg(long, default_value_t = 10)]
    subscribers: usize,
    /// Seconds measured (per ramp step)
    #[arg(long, default_value_t = 10)]
    duration_s: u64,
    /// Seconds before measuring (connections settle, first keyframes)
    #[arg(long, default_value_t = 3)]
    warmup_s: u64,
    /// Video bit rate per publisher, kbit/s
    #[arg(long, default_value_t = 1500)]
    video_kbps: u32,
    /// Video packet size, bytes
    #[arg(long, default_value_t = 1200)]
    packet_bytes: usize,
    /// Video frames per second
    #[arg(long, default_value_t = 30)]
    fps: u32,
    /// Seconds between keyframe bursts (a burst is 3 frames' worth of packets)
    #[arg(long, default_value_t = 2)]
    keyframe_interval_s: u32,
    /// Also send and receive audio (50 packets/s of 100 B per publisher)
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    audio: bool,
    /// The media node's process id, for its CPU time and memory
    #[arg(long)]
    node_pid: Option<u32>,
    /// Add subscribers step by step until loss > 0.5 % or p99 > 50 ms
    #[arg(long)]
    ramp: bool,
    /// Subscribers added per room at each ramp step
    #[arg(long, default_value_t = 10)]
    ramp_step: usize,
    /// Most subscribers per room in a ramp
    #[arg(long, default_value_t = 500)]
    ramp_max: usize,
    /// Write the figures as JSON to this file
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// A label for the run (in the JSON)
    #[arg(long, default_value = "arc")]
    label: String,
    /// No progress bar (for logs)
    #[arg(long)]
    quiet: bool,
    /// What to load: arc (WHIP/WHEP through arc-control) or janus (VideoRoom)
    #[arg(long, default_value = "arc", value_parser = ["arc", "janus"])]
    target: String,
    /// Janus's HTTP API (with --target janus)
    #[arg(long, default_value = "http://127.0.0.1:8088/janus")]
    janus_url: String,
    /// Write a Janus configuration for this test into DIR and exit
    #[arg(long, value_name = "DIR")]
    write_janus_config: Option<std::path::PathBuf>,
    /// The HTTP port of that Janus configuration
    #[arg(long, default_value_t = 8088)]
    janus_http_port: u16,
    /// The IP the clients bind (Janus gathers candidates on the host's
    /// interfaces, not on loopback: give the host's IP for --target janus)
    #[arg(long, default_value = "127.0.0.1")]
    client_ip: std::net::IpAddr,
}

/// How a client's session is negotiated.
enum Signal<'a> {
    /// WHIP or WHEP through arc-control: the client offers.
    Arc { http: &'a reqwest::Client, url: String, token: String },
    /// A Janus VideoRoom publisher: the client offers.
    JanusPublish { janus: &'a janus::Janus, room: u64, display: String },
    /// A Janus VideoRoom subscriber: Janus offers, the client answers.
    JanusSubscribe { janus: &'a janus::Janus, room: u64, feeds: Vec<u64> },
}

fn codec(mime: &str, clock_rate: u32, channels: u16) -> RTCRtpCodec {
    RTCRtpCodec { mime_type: mime.into(), clock_rate, channels, sdp_fmtp_line: String::new(), rtcp_feedback: vec![] }
}

enum Role {
    Publisher {
        id: u32,
        video: (RTCRtpSenderId, u32),
        audio: Option<(RTCRtpSenderId, u32)>,
        seq: u32,
        rtp_seq: u16,
        audio_seq: u16,
        frame: u64,
        next_frame: Instant,
        next_audio: Instant,
    },
    Subscriber {
        rx: Reception,
    },
}

struct Client {
    pc: RTCPeerConnection,
    socket: Rc<UdpSocket>,
    local: SocketAddr,
    role: Role,
    connected: bool,
    failed: bool,
}

struct Shared {
    clients: Vec<Client>,
    started: Instant,
    send_errors: u64,
}

type State = Rc<RefCell<Shared>>;

/// Where the stamp sits in a synthetic payload (after VP8's payload
/// descriptor and first header byte; audio keeps the same offset).
const STAMP_OFFSET: usize = 2;

fn new_pc(now: Instant) -> Result<RTCPeerConnection> {
    let mut me = MediaEngine::default();
    me.register_default_codecs()?;
    let registry = register_default_interceptors(Registry::new(), &mut me)?;
    Ok(RTCPeerConnectionBuilder::new()
        .with_configuration(RTCConfigurationBuilder::new().build())
        .with_media_engine(me)
        .with_interceptor_registry(registry)
        .build(now)?)
}

fn add_candidate(pc: &mut RTCPeerConnection, local: SocketAddr) -> Result<()> {
    arc_media::engine::peer::add_host_candidates(pc, &[local], &[])?;
    Ok(())
}

async fn post(http: &reqwest::Client, url: &str, token: &str, sdp: String) -> Result<String> {
    let resp = http
        .post(url)
        .bearer_auth(token)
        .header("content-type", "application/sdp")
        .body(sdp)
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    if !status.is_success() {
        bail!("POST {url}: {status}: {body}");
    }
    Ok(body)
}

async fn mint(
    http: &reqwest::Client,
    base: &str,
    app: &(String, String),
    identity: &str,
    room: &str,
    publish: bool,
) -> Result<String> {
    let grants = if publish { json!({"publish": true}) } else { json!({"subscribe": true}) };
    let r: serde_json::Value = http
        .post(format!("{base}/v1/tokens"))
        .basic_auth(&app.0, Some(&app.1))
        .json(&json!({"identity": identity, "room": room, "grants": grants, "ttl_s": 86_400}))
        .send()
        .await?
        .json()
        .await?;
    r["token"].as_str().map(str::to_owned).with_context(|| format!("minting a token: {r}"))
}

/// Opens one client (negotiated as `signal` says) and starts its reader;
/// answers the Janus feed id of a Janus publisher.
async fn open(
    state: &State,
    signal: Signal<'_>,
    publisher: Option<u32>,
    audio: bool,
    ip: std::net::IpAddr,
) -> Result<Option<u64>> {
    let socket = Rc::new(UdpSocket::bind(SocketAddr::new(ip, 0)).await?);
    let local = socket.local_addr()?;
    let now = Instant::now();
    let mut pc = new_pc(now)?;
    let role = match publisher {
        Some(id) => {
            let ssrc = 0x4000_0000 | id;
            let track = MediaStreamTrack::new(
                format!("load-{id}"),
                format!("load-{id}-video"),
                "video".into(),
                RtpCodecKind::Video,
                vec![RTCRtpEncodingParameters {
                    rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(ssrc), ..Default::default() },
                    codec: codec(MIME_TYPE_VP8, 90_000, 0),
                    ..Default::default()
                }],
            );
            let video = (pc.add_track(track)?, ssrc);
            let audio = if audio {
                let assrc = 0x5000_0000 | id;
                let track = MediaStreamTrack::new(
                    format!("load-{id}"),
                    format!("load-{id}-audio"),
                    "audio".into(),
                    RtpCodecKind::Audio,
                    vec![RTCRtpEncodingParameters {
                        rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(assrc), ..Default::default() },
                        codec: codec(MIME_TYPE_OPUS, 48_000, 2),
                        ..Default::default()
                    }],
                );
                Some((pc.add_track(track)?, assrc))
            } else {
                None
            };
            Role::Publisher {
                id,
                video,
                audio,
                seq: 0,
                rtp_seq: 1,
                audio_seq: 1,
                frame: 0,
                next_frame: now,
                next_audio: now,
            }
        }
        None => {
            if !matches!(signal, Signal::JanusSubscribe { .. }) {
                let recv =
                    || RTCRtpTransceiverInit { direction: RTCRtpTransceiverDirection::Recvonly, ..Default::default() };
                pc.add_transceiver_from_kind(RtpCodecKind::Video, Some(recv()))?;
                if audio {
                    pc.add_transceiver_from_kind(RtpCodecKind::Audio, Some(recv()))?;
                }
            }
            Role::Subscriber { rx: Reception::default() }
        }
    };
    let mut feed = None;
    match signal {
        Signal::JanusSubscribe { janus, room, feeds } => {
            let (offer, handle) = janus.subscribe(room, &feeds).await?;
            pc.set_remote_description(now, RTCSessionDescription::offer(offer)?)?;
            let answer = pc.create_answer(None)?;
            pc.set_local_description(now, answer)?;
            add_candidate(&mut pc, local)?;
            let sdp = pc.local_description().map(|d| d.sdp.clone()).context("no answer")?;
            janus.start(handle, sdp).await?;
        }
        offering => {
            let offer = pc.create_offer(None)?;
            pc.set_local_description(now, offer)?;
            add_candidate(&mut pc, local)?;
            let sdp = pc.local_description().map(|d| d.sdp.clone()).context("no offer")?;
            let answer = match offering {
                Signal::Arc { http, url, token } => post(http, &url, &token, sdp).await?,
                Signal::JanusPublish { janus, room, display } => {
                    let (answer, id) = janus.publish(room, &display, sdp).await?;
                    feed = Some(id);
                    answer
                }
                Signal::JanusSubscribe { .. } => unreachable!("handled above"),
            };
            pc.set_remote_description(Instant::now(), RTCSessionDescription::answer(answer)?)?;
        }
    }
    let index = {
        let mut s = state.borrow_mut();
        s.clients.push(Client { pc, socket: socket.clone(), local, role, connected: false, failed: false });
        s.clients.len() - 1
    };
    tokio::task::spawn_local(read(state.clone(), index, socket));
    drain(state, index);
    Ok(feed)
}

/// Reads one client's socket until the tool stops.
async fn read(state: State, index: usize, socket: Rc<UdpSocket>) {
    let mut buf = vec![0u8; 2048];
    loop {
        if socket.readable().await.is_err() {
            return;
        }
        loop {
            match socket.try_recv_from(&mut buf) {
                Ok((n, from)) => {
                    let mut s = state.borrow_mut();
                    let now = Instant::now();
                    let Some(c) = s.clients.get_mut(index) else { return };
                    let msg = TaggedBytesMut {
                        now,
                        transport: TransportContext {
                            local_addr: c.local,
                            peer_addr: from,
                            ecn: None,
                            transport_protocol: TransportProtocol::UDP,
                        },
                        message: BytesMut::from(&buf[..n]),
                    };
                    let _ = c.pc.handle_read(msg);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => return,
            }
        }
        drain(&state, index);
    }
}

/// Takes what a client's connection produced.
fn drain(state: &State, index: usize) {
    let mut s = state.borrow_mut();
    let started = s.started;
    let mut errors = 0;
    let Some(c) = s.clients.get_mut(index) else { return };
    while let Some(m) = c.pc.poll_write() {
        if c.socket.try_send_to(&m.message, m.transport.peer_addr).is_err() {
            errors += 1;
        }
    }
    while let Some(ev) = c.pc.poll_event() {
        match ev {
            RTCPeerConnectionEvent::OnConnectionStateChangeEvent(RTCPeerConnectionState::Connected) => {
                c.connected = true
            }
            RTCPeerConnectionEvent::OnConnectionStateChangeEvent(
                RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed,
            ) => c.failed = true,
            _ => {}
        }
    }
    let now_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    while let Some(m) = c.pc.poll_read() {
        if let (RTCMessage::RtpPacket(_, p), Role::Subscriber { rx }) = (m.message, &mut c.role)
            && let Some(stamp) = Stamp::read(&p.payload, STAMP_OFFSET)
        {
            rx.record(stamp, p.payload.len(), now_us);
        }
    }
    s.send_errors += errors;
}

/// Sends what publishers owe and runs the connections' timers, every millisecond.
async fn tick(state: State, args: Rc<Args>) {
    let mut interval = tokio::time::interval(Duration::from_millis(1));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let frame = Duration::from_secs(1) / args.fps.max(1);
    let per_frame =
        ((args.video_kbps as usize * 1000 / 8) / args.fps.max(1) as usize / args.packet_bytes.max(STAMP_LEN + 8))
            .max(1);
    let keyframe_every = u64::from(args.fps * args.keyframe_interval_s).max(1);
    loop {
        interval.tick().await;
        let now = Instant::now();
        let count = state.borrow().clients.len();
        for i in 0..count {
            {
                let mut s = state.borrow_mut();
                let started = s.started;
                let Some(c) = s.clients.get_mut(i) else { continue };
                if c.pc.poll_timeout().is_some_and(|t| t <= now) {
                    let _ = c.pc.handle_timeout(now);
                }
                if c.connected
                    && let Role::Publisher {
                        id,
                        video,
                        audio,
                        seq,
                        rtp_seq,
                        audio_seq,
                        frame: n,
                        next_frame,
                        next_audio,
                    } = &mut c.role
                {
                    let sent_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                    if *next_frame <= now {
                        *next_frame += frame;
                        if *next_frame < now {
                            *next_frame = now + frame;
                        }
                        let keyframe = n.is_multiple_of(keyframe_every);
                        let packets = if keyframe { per_frame * 3 } else { per_frame };
                        let ts = (*n as u32).wrapping_mul(90_000 / args.fps.max(1));
                        for k in 0..packets {
                            let mut payload = vec![0u8; args.packet_bytes.max(STAMP_LEN + 8)];
                            // VP8 payload descriptor (start of partition on the first
                            // packet) and header (P bit clear on a keyframe), then the stamp.
                            payload[0] = if k == 0 { 0x10 } else { 0x00 };
                            payload[1] = if keyframe { 0x00 } else { 0x01 };
                            Stamp { publisher: *id, seq: *seq, sent_us }.write(&mut payload[STAMP_OFFSET..]);
                            *seq = seq.wrapping_add(1);
                            write_rtp(&mut c.pc, *video, *rtp_seq, ts, k + 1 == packets, payload, now);
                            *rtp_seq = rtp_seq.wrapping_add(1);
                        }
                        *n += 1;
                    }
                    if let Some(a) = audio
                        && *next_audio <= now
                    {
                        *next_audio += Duration::from_millis(20);
                        if *next_audio < now {
                            *next_audio = now + Duration::from_millis(20);
                        }
                        // Two bytes before the stamp, as in video, so receivers read it at one offset.
                        let mut payload = vec![0u8; 100];
                        Stamp { publisher: *id | 0x8000_0000, seq: u32::from(*audio_seq), sent_us }
                            .write(&mut payload[STAMP_OFFSET..]);
                        let ts = u32::from(*audio_seq).wrapping_mul(960);
                        write_rtp(&mut c.pc, *a, *audio_seq, ts, true, payload, now);
                        *audio_seq = audio_seq.wrapping_add(1);
                    }
                }
            }
            drain(&state, i);
        }
    }
}

fn write_rtp(
    pc: &mut RTCPeerConnection,
    sender: (RTCRtpSenderId, u32),
    seq: u16,
    ts: u32,
    marker: bool,
    payload: Vec<u8>,
    now: Instant,
) {
    let Some(mut s) = pc.rtp_sender(sender.0) else { return };
    let pt = s.get_parameters().rtp_parameters.codecs.first().map_or(96, |c| c.payload_type);
    let packet = rtc::rtp::Packet {
        header: rtc::rtp::Header {
            version: 2,
            marker,
            payload_type: pt,
            sequence_number: seq,
            timestamp: ts,
            ssrc: sender.1,
            ..Default::default()
        },
        payload: Bytes::from(payload),
    };
    let _ = s.write_rtp(now, packet);
}

/// The figures of one measured window.
#[derive(Debug, Clone)]
struct Window {
    subscribers: usize,
    seconds: f64,
    packets: u64,
    bytes: u64,
    totals: Totals,
    latency: Histogram,
    node_cpu_us: Option<u64>,
    tool_cpu_us: Option<u64>,
    node_rss_kib: Option<u64>,
}

impl Window {
    fn pps(&self) -> f64 {
        self.packets as f64 / self.seconds.max(0.001)
    }

    fn json(&self) -> serde_json::Value {
        let per_packet = |cpu: Option<u64>| cpu.map(|us| us as f64 / self.packets.max(1) as f64);
        json!({
            "subscribers_per_room": self.subscribers,
            "seconds": self.seconds,
            "forwarded_packets": self.packets,
            "forwarded_packets_per_s": self.pps(),
            "forwarded_mbps": self.bytes as f64 * 8.0 / self.seconds.max(0.001) / 1e6,
            "loss_percent": self.totals.loss_percent(),
            "duplicates": self.totals.duplicates,
            "latency_p50_ms": self.latency.quantile_us(0.5) as f64 / 1000.0,
            "latency_p99_ms": self.latency.quantile_us(0.99) as f64 / 1000.0,
            "latency_max_ms": self.latency.max_us() as f64 / 1000.0,
            "node_cpu_us_per_forwarded_packet": per_packet(self.node_cpu_us),
            "node_cpu_percent": self.node_cpu_us.map(|us| us as f64 / 1e4 / self.seconds.max(0.001)),
            "tool_cpu_percent": self.tool_cpu_us.map(|us| us as f64 / 1e4 / self.seconds.max(0.001)),
            "node_rss_kib": self.node_rss_kib,
        })
    }
}

/// Measures `seconds` of traffic: what subscribers received, and CPU.
async fn measure(state: &State, args: &Args, subscribers: usize, bar: &indicatif::ProgressBar) -> Window {
    // Reset the receivers' counters: the window starts now.
    for c in &mut state.borrow_mut().clients {
        if let Role::Subscriber { rx } = &mut c.role {
            *rx = Reception::default();
        }
    }
    let node0 = args.node_pid.and_then(process_cpu_us);
    let tool0 = process_cpu_us(std::process::id());
    let t0 = Instant::now();
    let secs = args.duration_s.max(1);
    for i in 0..secs {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (packets, totals, p99) = snapshot(state);
        bar.set_position(i + 1);
        bar.set_message(format!(
            "{subscribers} subs/room · {:.0} pkt/s · loss {:.2} % · p99 {:.1} ms",
            packets as f64 / t0.elapsed().as_secs_f64(),
            totals.loss_percent(),
            p99 as f64 / 1000.0
        ));
    }
    let seconds = t0.elapsed().as_secs_f64();
    let mut latency = Histogram::default();
    let mut totals = Totals::default();
    let (mut packets, mut bytes) = (0, 0);
    for c in &state.borrow().clients {
        if let Role::Subscriber { rx } = &c.role {
            latency.merge(&rx.latency);
            totals.add(rx.totals());
            packets += rx.packets;
            bytes += rx.bytes;
        }
    }
    Window {
        subscribers,
        seconds,
        packets,
        bytes,
        totals,
        latency,
        node_cpu_us: args.node_pid.and_then(process_cpu_us).zip(node0).map(|(b, a)| b.saturating_sub(a)),
        tool_cpu_us: process_cpu_us(std::process::id()).zip(tool0).map(|(b, a)| b.saturating_sub(a)),
        node_rss_kib: args.node_pid.and_then(process_rss_kib),
    }
}

fn snapshot(state: &State) -> (u64, Totals, u64) {
    let mut latency = Histogram::default();
    let mut totals = Totals::default();
    let mut packets = 0;
    for c in &state.borrow().clients {
        if let Role::Subscriber { rx } = &c.role {
            latency.merge(&rx.latency);
            totals.add(rx.totals());
            packets += rx.packets;
        }
    }
    (packets, totals, latency.quantile_us(0.99))
}

/// Where the clients go: Arc (an app for the run) or a Janus session.
enum Target {
    Arc { app: (String, String) },
    Janus { janus: janus::Janus, feeds: Vec<Vec<u64>> },
}

async fn add_publishers(state: &State, http: &reqwest::Client, args: &Args, target: &mut Target) -> Result<()> {
    let mut next_id = 1u32;
    for r in 0..args.rooms {
        for p in 0..args.publishers {
            let signal = match &*target {
                Target::Arc { app } => {
                    let room = format!("load-{r}");
                    let token = mint(http, &args.url, app, &format!("pub-{p}"), &room, true).await?;
                    Signal::Arc { http, url: format!("{}/v1/whip/{room}", args.url), token }
                }
                Target::Janus { janus, .. } => {
                    Signal::JanusPublish { janus, room: 1000 + r as u64, display: format!("pub-{p}") }
                }
            };
            let feed = open(state, signal, Some(next_id), args.audio, args.client_ip).await?;
            if let (Target::Janus { feeds, .. }, Some(f)) = (&mut *target, feed) {
                feeds[r].push(f);
            }
            next_id += 1;
        }
    }
    Ok(())
}

async fn add_subscribers(
    state: &State,
    http: &reqwest::Client,
    args: &Args,
    target: &Target,
    from: usize,
    to: usize,
) -> Result<()> {
    for r in 0..args.rooms {
        for k in from..to {
            let signal = match target {
                Target::Arc { app } => {
                    let room = format!("load-{r}");
                    let token = mint(http, &args.url, app, &format!("sub-{k}"), &room, false).await?;
                    Signal::Arc { http, url: format!("{}/v1/whep/{room}", args.url), token }
                }
                Target::Janus { janus, feeds } => {
                    Signal::JanusSubscribe { janus, room: 1000 + r as u64, feeds: feeds[r].clone() }
                }
            };
            open(state, signal, None, args.audio, args.client_ip).await?;
        }
    }
    Ok(())
}

async fn run(args: Rc<Args>) -> Result<serde_json::Value> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(20)).build()?;
    let mut target = if args.target == "janus" {
        let janus = janus::Janus::connect(&http, &args.janus_url).await?;
        for r in 0..args.rooms {
            janus.create_room(1000 + r as u64, args.publishers).await?;
        }
        Target::Janus { janus, feeds: vec![Vec::new(); args.rooms] }
    } else {
        let admin = args.admin_key.as_deref().context("--admin-key (or ARC_ADMIN_KEY) is needed for --target arc")?;
        let created: serde_json::Value = http
            .post(format!("{}/v1/apps", args.url))
            .bearer_auth(admin)
            .json(&json!({"name": format!("arc-load {}", args.label)}))
            .send()
            .await
            .context("creating an app (is arc-control running at --url?)")?
            .json()
            .await?;
        Target::Arc {
            app: (
                created["app"]["app_key"].as_str().context("app_key (is --admin-key right?)")?.to_owned(),
                created["app_secret"].as_str().context("app_secret")?.to_owned(),
            ),
        }
    };
    let state: State = Rc::new(RefCell::new(Shared { clients: Vec::new(), started: Instant::now(), send_errors: 0 }));
    tokio::task::spawn_local(tick(state.clone(), args.clone()));
    add_publishers(&state, &http, &args, &mut target).await?;
    // Publishers connected before subscribers come (a Janus subscriber needs
    // the feeds, an Arc player the codec).
    let deadline = Instant::now() + Duration::from_secs(15);
    while state.borrow().clients.iter().any(|c| !c.connected) {
        if Instant::now() > deadline {
            bail!("publishers did not connect within 15 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    add_subscribers(&state, &http, &args, &target, 0, args.subscribers).await?;
    let mut subs = args.subscribers;
    let bar = if args.quiet { indicatif::ProgressBar::hidden() } else { indicatif::ProgressBar::new(args.duration_s) };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} s  {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message("warming up");
    tokio::time::sleep(Duration::from_secs(args.warmup_s)).await;
    let mut windows = Vec::new();
    loop {
        bar.set_position(0);
        let w = measure(&state, &args, subs, &bar).await;
        let knee = w.totals.loss_percent() > 0.5 || w.latency.quantile_us(0.99) > 50_000;
        windows.push(w);
        if !args.ramp || knee || subs + args.ramp_step > args.ramp_max {
            break;
        }
        add_subscribers(&state, &http, &args, &target, subs, subs + args.ramp_step).await?;
        subs += args.ramp_step;
        tokio::time::sleep(Duration::from_secs(args.warmup_s)).await;
    }
    bar.finish_and_clear();
    let (connected, failed, total) = {
        let s = state.borrow();
        (
            s.clients.iter().filter(|c| c.connected).count(),
            s.clients.iter().filter(|c| c.failed).count(),
            s.clients.len(),
        )
    };
    print_table(&args, &windows, connected, total);
    let knee = args.ramp.then(|| {
        windows
            .iter()
            .rev()
            .find(|w| w.totals.loss_percent() <= 0.5 && w.latency.quantile_us(0.99) <= 50_000)
            .map(|w| json!({"subscribers_per_room": w.subscribers, "forwarded_packets_per_s": w.pps()}))
    });
    Ok(json!({
        "label": args.label,
        "rooms": args.rooms,
        "publishers_per_room": args.publishers,
        "video_kbps": args.video_kbps,
        "fps": args.fps,
        "packet_bytes": args.packet_bytes,
        "audio": args.audio,
        "clients": total,
        "clients_connected": connected,
        "clients_failed": failed,
        "send_errors": state.borrow().send_errors,
        "windows": windows.iter().map(Window::json).collect::<Vec<_>>(),
        "knee": knee,
        // Whether the ramp ended because a window went past the limits (else
        // it ended at --ramp-max, and `knee` is only the last step measured).
        "knee_reached": args.ramp
            && windows.last().is_some_and(|w| w.totals.loss_percent() > 0.5 || w.latency.quantile_us(0.99) > 50_000),
    }))
}

fn print_table(args: &Args, windows: &[Window], connected: usize, total: usize) {
    println!(
        "arc-load {}: {} room(s) × {} publisher(s), {} kbit/s video{} — {connected}/{total} clients connected",
        args.label,
        args.rooms,
        args.publishers,
        args.video_kbps,
        if args.audio { " + audio" } else { "" }
    );
    println!(
        "{:>10} {:>10} {:>8} {:>8} {:>9} {:>9} {:>9} {:>12} {:>9} {:>9}",
        "subs/room", "pkt/s", "Mbit/s", "loss %", "p50 ms", "p99 ms", "max ms", "node µs/pkt", "node cpu", "tool cpu"
    );
    for w in windows {
        let j = w.json();
        let f = |k: &str| j[k].as_f64().map_or("-".to_owned(), |v| format!("{v:.2}"));
        println!(
            "{:>10} {:>10.0} {:>8.1} {:>8.3} {:>9} {:>9} {:>9} {:>12} {:>8}% {:>8}%",
            w.subscribers,
            w.pps(),
            j["forwarded_mbps"].as_f64().unwrap_or(0.0),
            w.totals.loss_percent(),
            f("latency_p50_ms"),
            f("latency_p99_ms"),
            f("latency_max_ms"),
            f("node_cpu_us_per_forwarded_packet"),
            f("node_cpu_percent"),
            f("tool_cpu_percent"),
        );
    }
}

fn main() -> std::process::ExitCode {
    let args = Rc::new(Args::parse());
    if let Some(dir) = &args.write_janus_config {
        let configs = dir.display().to_string();
        let written = std::fs::create_dir_all(dir).and_then(|()| {
            janus::config_files(&configs, args.janus_http_port, (40_000, 49_999))
                .into_iter()
                .try_for_each(|(name, text)| std::fs::write(dir.join(name), text))
        });
        return match written {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: writing the Janus configuration into {configs}: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let local = tokio::task::LocalSet::new();
    match local.block_on(&runtime, run(args.clone())) {
        Ok(report) => {
            if let Some(path) = &args.json
                && let Err(e) = std::fs::write(path, format!("{report:#}\n"))
            {
                eprintln!("error: writing {}: {e}", path.display());
                return std::process::ExitCode::FAILURE;
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
