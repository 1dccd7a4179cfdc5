//! The engines alone, on N threads: how forwarding scales with cores when
//! nothing is shared (issue 12's target: ≥ 1.8× the packets/s on 2 threads
//! as on 1).
//!
//! Each thread owns one [`Engine`] and one room: a publisher and
//! `SUBSCRIBERS` players, `rtc` client peers connected to the engine in
//! memory (no sockets). The publisher's SRTP packets (VP8-like, 1,200 bytes,
//! a keyframe every 30 frames of 3 packets) are made before the clock
//! starts; then the engine takes them one by one and forwards each to every
//! player (Arc's own SRTP egress); what it sends is dropped, as a socket
//! write would take it. The figure is forwarded packets per second of wall
//! time, all threads together, and CPU per forwarded packet.
//!
//! `cargo bench -p arc-media --bench engines` (add `-- --quick` for the
//! short form) prints the figures and writes the "Engines on N threads"
//! section of BENCHMARKS.md (or `target/BENCHMARKS.engines.quick.md`).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use arc_events::{ParticipantIdentity, ParticipantSid, RoomId};
use arc_media::engine::{Engine, EngineConfig, Transport};
use arc_nodeproto::{NodeReply, NodeRequest, OpenSession, Role};
use bytes::{Bytes, BytesMut};
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::rtp_transceiver::RTCRtpSenderId;
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};

const SUBSCRIBERS: usize = 25;
const PAYLOAD: usize = 1_200;

struct Client {
    pc: RTCPeerConnection,
    addr: SocketAddr,
    connected: bool,
}

fn tagged(now: Instant, local: SocketAddr, peer: SocketAddr, bytes: BytesMut) -> TaggedBytesMut {
    TaggedBytesMut {
        now,
        transport: TransportContext {
            local_addr: local,
            peer_addr: peer,
            ecn: None,
            transport_protocol: TransportProtocol::UDP,
        },
        message: bytes,
    }
}

/// One engine and its room, connected.
struct Room {
    engine: Engine,
    node: SocketAddr,
    publisher: Client,
    sender: (RTCRtpSenderId, u32),
    players: Vec<Client>,
    now: Instant,
}

impl Room {
    fn new(index: u8) -> Result<Self, String> {
        let now = Instant::now();
        let node: SocketAddr = format!("10.9.{index}.1:7882").parse().map_err(|e| format!("{e}"))?;
        let mut engine = Engine::new(
            EngineConfig {
                local_udp: node,
                local_tcp: node,
                announce_udp: vec![node],
                announce_tcp: vec![node],
                sessions_max: 1_000,
                worker: u16::from(index),
                wall_clock: SystemTime::now(),
            },
            now,
        )
        .map_err(|e| e.to_string())?;
        let room_id = RoomId::parse(&format!("rm_bench{index}")).map_err(|e| e.to_string())?;
        let mut open = |n: usize, publish: bool| -> Result<(Client, Option<(RTCRtpSenderId, u32)>), String> {
            let addr: SocketAddr =
                format!("10.9.{index}.{}:{}", 2 + n / 200, 5000 + n % 200).parse().map_err(|e| format!("{e}"))?;
            let (mut pc, sender) = arc_tests::rtc_client::offering_peer(addr, publish, 0x5000_0000 | n as u32, now);
            let offer = pc.local_description().map(|d| d.sdp.clone()).ok_or("no offer")?;
            let req = NodeRequest::Open(OpenSession {
                room_id: room_id.clone(),
                identity: ParticipantIdentity::parse(&format!("c{n}")).map_err(|e| e.to_string())?,
                sid: ParticipantSid::parse(&format!("pa_c{n}")).map_err(|e| e.to_string())?,
                role: if publish { Role::Publish } else { Role::Subscribe { participant: None } },
                offer,
            });
            let NodeReply::Opened(o) = engine.handle_request(now, req) else { return Err("the engine refused".into()) };
            pc.set_remote_description(now, RTCSessionDescription::answer(o.answer).map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
            while engine.poll_transmit().is_some() {}
            Ok((Client { pc, addr, connected: false }, sender))
        };
        let (publisher, sender) = open(0, true)?;
        let sender = sender.ok_or("no sender")?;
        let mut players = Vec::with_capacity(SUBSCRIBERS);
        for n in 1..=SUBSCRIBERS {
            players.push(open(n, false)?.0);
        }
        let mut room = Self { engine, node, publisher, sender, players, now };
        room.connect()?;
        Ok(room)
    }

    /// Exchanges datagrams in virtual time until every client is connected.
    fn connect(&mut self) -> Result<(), String> {
        let until = self.now + Duration::from_secs(20);
        while self.now < until {
            self.now += Duration::from_millis(1);
            let now = self.now;
            let mut to_node: Vec<(SocketAddr, BytesMut)> = Vec::new();
            for c in std::iter::once(&mut self.publisher).chain(self.players.iter_mut()) {
                if c.pc.poll_timeout().is_some_and(|t| t <= now) {
                    let _ = c.pc.handle_timeout(now);
                }
                while let Some(m) = c.pc.poll_write() {
                    to_node.push((c.addr, m.message));
                }
                while let Some(ev) = c.pc.poll_event() {
                    if let RTCPeerConnectionEvent::OnConnectionStateChangeEvent(RTCPeerConnectionState::Connected) = ev
                    {
                        c.connected = true;
                    }
                }
                while c.pc.poll_read().is_some() {}
            }
            for (from, bytes) in to_node {
                self.engine.handle_datagram(now, from, Transport::Udp, &bytes);
            }
            if self.engine.poll_timeout() <= now {
                self.engine.handle_timeout(now);
            }
            while let Some(t) = self.engine.poll_transmit() {
                let node = self.node;
                if let Some(c) =
                    std::iter::once(&mut self.publisher).chain(self.players.iter_mut()).find(|c| c.addr == t.to)
                {
                    let _ = c.pc.handle_read(tagged(now, c.addr, node, t.payload));
                }
            }
            while self.engine.poll_event().is_some() {}
            if self.publisher.connected && self.players.iter().all(|c| c.connected) {
                return Ok(());
            }
        }
        Err("the room did not connect".into())
    }

    /// The publisher's next `n` datagrams (SRTP), made now.
    fn publisher_datagrams(&mut self, n: usize, first_seq: u16) -> Vec<BytesMut> {
        let (id, ssrc) = self.sender;
        let pt = self
            .publisher
            .pc
            .rtp_sender(id)
            .and_then(|mut s| s.get_parameters().rtp_parameters.codecs.first().map(|c| c.payload_type))
            .unwrap_or(96);
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let seq = first_seq.wrapping_add(i as u16);
            let frame = i / 3;
            let mut payload = vec![0u8; PAYLOAD];
            payload[0] = if i % 3 == 0 { 0x10 } else { 0x00 };
            payload[1] = if frame % 30 == 0 { 0x00 } else { 0x01 };
            let packet = rtc::rtp::Packet {
                header: rtc::rtp::Header {
                    version: 2,
                    marker: i % 3 == 2,
                    payload_type: pt,
                    sequence_number: seq,
                    timestamp: (frame as u32).wrapping_mul(3_000),
                    ssrc,
                    ..Default::default()
                },
                payload: Bytes::from(payload),
            };
            if let Some(mut s) = self.publisher.pc.rtp_sender(id) {
                let _ = s.write_rtp(self.now, packet);
            }
            while let Some(m) = self.publisher.pc.poll_write() {
                out.push(m.message);
            }
        }
        out
    }
}

/// Runs `threads` rooms at once; answers (forwarded packets/s, CPU µs per forwarded packet).
fn run(threads: usize, packets: usize) -> Result<(f64, f64), String> {
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let barrier = barrier.clone();
            std::thread::spawn(move || -> Result<(u64, Duration, Duration), String> {
                let mut room = Room::new(t as u8)?;
                // Warm-up: the first keyframe reaches every player.
                let warm = room.publisher_datagrams(90, 1);
                let publisher = room.publisher.addr;
                for d in &warm {
                    room.engine.handle_datagram(room.now, publisher, Transport::Udp, d);
                    while room.engine.poll_transmit().is_some() {}
                }
                let datagrams = room.publisher_datagrams(packets, 91);
                let before = room.engine.stats().srtp_own_packets;
                barrier.wait();
                let cpu0 = thread_cpu();
                let start = Instant::now();
                let mut now = room.now;
                for d in &datagrams {
                    now += Duration::from_micros(200);
                    room.engine.handle_datagram(now, publisher, Transport::Udp, d);
                    while let Some(t) = room.engine.poll_transmit() {
                        std::hint::black_box(t);
                    }
                    if room.engine.poll_timeout() <= now {
                        room.engine.handle_timeout(now);
                        while room.engine.poll_transmit().is_some() {}
                    }
                }
                let wall = start.elapsed();
                let cpu = thread_cpu().saturating_sub(cpu0);
                Ok((room.engine.stats().srtp_own_packets - before, wall, cpu))
            })
        })
        .collect();
    let mut forwarded = 0u64;
    let mut longest = Duration::ZERO;
    let mut cpu = Duration::ZERO;
    for h in handles {
        let (f, wall, c) = h.join().map_err(|_| "a bench thread panicked".to_string())??;
        forwarded += f;
        longest = longest.max(wall);
        cpu += c;
    }
    if forwarded == 0 {
        return Err("nothing was forwarded".into());
    }
    Ok((forwarded as f64 / longest.as_secs_f64(), cpu.as_secs_f64() * 1e6 / forwarded as f64))
}

/// CPU time of the calling thread (`/proc/thread-self/schedstat`, in ns).
fn thread_cpu() -> Duration {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    Duration::from_nanos(text.split_whitespace().next().and_then(|v| v.parse().ok()).unwrap_or(0))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (packets, runs) = if quick { (600, 1) } else { (20_000, 5) };
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mut rows = Vec::new();
    for threads in [1usize, 2] {
        let mut rates = Vec::new();
        let mut cpus = Vec::new();
        for _ in 0..runs {
            match run(threads, packets) {
                Ok((rate, cpu)) => {
                    rates.push(rate);
                    cpus.push(cpu);
                }
                Err(e) => {
                    eprintln!("engines: {threads} thread(s): {e}");
                    std::process::exit(1);
                }
            }
        }
        let (rate, cpu) = (median(rates), median(cpus));
        println!("engines: {threads} thread(s): {rate:.0} forwarded packets/s, {cpu:.2} µs CPU per forwarded packet");
        rows.push((threads, rate, cpu));
    }
    let ratio = match (rows.first(), rows.get(1)) {
        (Some(one), Some(two)) if one.1 > 0.0 => two.1 / one.1,
        _ => 0.0,
    };
    println!("engines: 2 threads give {ratio:.2}× the packets/s of 1 ({cores} cores here)");
    let mut md = String::new();
    let _ = writeln!(md, "<!-- engines-bench:begin -->\n## Engines on N threads (issue 12)\n");
    let _ = writeln!(
        md,
        "Measured by `dataplane/benches/engines.rs` (`cargo bench -p arc-media --bench engines`{}). Date: {}. {cores} cores. Each thread owns one engine and one room (1 publisher, {SUBSCRIBERS} players, `rtc` clients connected in memory); {packets} publisher packets of {PAYLOAD} bytes, made before the clock starts, are forwarded to every player through Arc's own SRTP egress; sends are dropped (no sockets). Median of {runs} run(s).\n",
        if quick { ", --quick" } else { "" },
        chrono::Utc::now().format("%Y-%m-%d")
    );
    let _ = writeln!(md, "| threads | forwarded packets/s | CPU µs per forwarded packet |\n|---|---|---|");
    for (threads, rate, cpu) in &rows {
        let _ = writeln!(md, "| {threads} | {rate:.0} | {cpu:.2} |");
    }
    let _ =
        writeln!(md, "\n2 threads give **{ratio:.2}×** the packets/s of 1 (target ≥ 1.8×): the engines share nothing.");
    let _ = writeln!(md, "<!-- engines-bench:end -->");
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    if quick {
        let _ = std::fs::write(root.join("target/BENCHMARKS.engines.quick.md"), &md);
        return;
    }
    let path = root.join("BENCHMARKS.md");
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    let new = match (old.find("<!-- engines-bench:begin -->"), old.find("<!-- engines-bench:end -->")) {
        (Some(a), Some(b)) => {
            let end = b + "<!-- engines-bench:end -->".len();
            format!("{}{}{}", &old[..a], md.trim_end(), &old[end..])
        }
        _ => format!("{}\n\n{}", old.trim_end(), md.trim_end()),
    };
    if let Err(e) = std::fs::write(&path, new + "\n") {
        eprintln!("engines: cannot write BENCHMARKS.md: {e}");
    }
}
