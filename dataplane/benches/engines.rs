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

/// Runs `f` without counting its allocations.
fn uncounted<R>(f: impl FnOnce() -> R) -> R {
    let mut out = None;
    allocation_counter::opt_out(|| out = Some(f()));
    // INVARIANT: `opt_out` runs its closure once.
    out.expect("the closure ran")
}

/// One engine and its room, connected.
struct Room {
    engine: Engine,
    node: SocketAddr,
    room_id: RoomId,
    index: u8,
    publisher: Option<Client>,
    sender: (RTCRtpSenderId, u32),
    players: Vec<Client>,
    now: Instant,
    /// When set, every engine call is measured and the heap bytes it keeps
    /// are added to `retained` (what the clients and this harness allocate
    /// is not counted).
    measuring: bool,
    retained: i64,
}

impl Room {
    /// A connected room: a publisher (if `publish`) and `players` players.
    fn new(index: u8, publish: bool, players: usize, measuring: bool) -> Result<Self, String> {
        let now = Instant::now();
        let node: SocketAddr = format!("10.9.{index}.1:7882").parse().map_err(|e| format!("{e}"))?;
        let config = EngineConfig {
            local_udp: node,
            local_tcp: node,
            announce_udp: vec![node],
            announce_tcp: vec![node],
            sessions_max: 1_000,
            worker: u16::from(index),
            wall_clock: SystemTime::now(),
            own_srtp_egress: true,
        };
        let mut made = None;
        let info = allocation_counter::measure(|| made = Some(Engine::new(config, now)));
        let engine = made.ok_or("no engine")?.map_err(|e| e.to_string())?;
        let room_id = RoomId::parse(&format!("rm_bench{index}")).map_err(|e| e.to_string())?;
        let mut room = Self {
            engine,
            node,
            room_id,
            index,
            publisher: None,
            sender: (RTCRtpSenderId::default(), 0),
            players: Vec::with_capacity(players),
            now,
            measuring,
            retained: if measuring { info.bytes_current } else { 0 },
        };
        if publish {
            let (c, sender) = room.open(0, true)?;
            room.sender = sender.ok_or("no sender")?;
            room.publisher = Some(c);
        }
        for n in 1..=players {
            let (c, _) = room.open(n, false)?;
            room.players.push(c);
        }
        room.connect()?;
        Ok(room)
    }

    /// Runs `f` on the engine, measured when the room is measuring.
    fn with_engine<R>(&mut self, f: impl FnOnce(&mut Engine) -> R) -> R {
        if !self.measuring {
            return f(&mut self.engine);
        }
        let engine = &mut self.engine;
        let mut out = None;
        let info = allocation_counter::measure(|| out = Some(f(engine)));
        self.retained += info.bytes_current;
        // INVARIANT: `measure` runs its closure once.
        out.expect("the closure ran")
    }

    /// The engine's datagrams, copied out (the copies are not counted) and
    /// dropped inside the measurement; its events dropped too.
    fn drain_engine(&mut self, into: &mut Vec<(SocketAddr, BytesMut)>) {
        self.with_engine(|e| {
            while let Some(t) = e.poll_transmit() {
                let copy = uncounted(|| BytesMut::from(&t.payload[..]));
                uncounted(|| into.push((t.to, copy)));
                drop(t);
            }
            while e.poll_event().is_some() {}
        });
    }

    fn open(&mut self, n: usize, publish: bool) -> Result<(Client, Option<(RTCRtpSenderId, u32)>), String> {
        let (now, index) = (self.now, self.index);
        let addr: SocketAddr =
            format!("10.9.{index}.{}:{}", 2 + n / 200, 5000 + n % 200).parse().map_err(|e| format!("{e}"))?;
        let (mut pc, sender) = arc_tests::rtc_client::offering_peer(addr, publish, 0x5000_0000 | n as u32, now);
        let offer = pc.local_description().map(|d| d.sdp.clone()).ok_or("no offer")?;
        let req = NodeRequest::Open(OpenSession {
            room_id: self.room_id.clone(),
            identity: ParticipantIdentity::parse(&format!("c{n}")).map_err(|e| e.to_string())?,
            sid: ParticipantSid::parse(&format!("pa_c{n}")).map_err(|e| e.to_string())?,
            role: if publish { Role::Publish } else { Role::Subscribe { participant: None, screen: false } },
            offer,
            attached: false,
            screen: false,
        });
        let reply = self.with_engine(|e| {
            let reply = e.handle_request(now, req);
            // The answer is the client's; its bytes leave with it.
            match reply {
                NodeReply::Opened(o) => Ok(uncounted(|| o.answer.clone())),
                other => Err(format!("the engine refused: {other:?}")),
            }
        })?;
        pc.set_remote_description(now, RTCSessionDescription::answer(reply).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        let mut sink = Vec::with_capacity(4096);
        self.drain_engine(&mut sink);
        Ok((Client { pc, addr, connected: false }, sender))
    }

    fn clients(&mut self) -> impl Iterator<Item = &mut Client> {
        self.publisher.iter_mut().chain(self.players.iter_mut())
    }

    /// Exchanges datagrams in virtual time until every client is connected.
    fn connect(&mut self) -> Result<(), String> {
        let until = self.now + Duration::from_secs(20);
        let mut to_node: Vec<(SocketAddr, BytesMut)> = Vec::new();
        let mut from_node: Vec<(SocketAddr, BytesMut)> = Vec::with_capacity(1 << 14);
        while self.now < until {
            self.now += Duration::from_millis(1);
            let now = self.now;
            for c in self.clients() {
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
            for (from, bytes) in to_node.drain(..) {
                self.with_engine(|e| e.handle_datagram(now, from, Transport::Udp, &bytes));
            }
            if self.engine.poll_timeout() <= now {
                self.with_engine(|e| e.handle_timeout(now));
            }
            self.drain_engine(&mut from_node);
            let node = self.node;
            for (to, payload) in from_node.drain(..) {
                if let Some(c) = self.clients().find(|c| c.addr == to) {
                    let _ = c.pc.handle_read(tagged(now, c.addr, node, payload));
                }
            }
            if self.clients().all(|c| c.connected) {
                return Ok(());
            }
        }
        Err("the room did not connect".into())
    }

    /// Feeds the engine `datagrams` from the publisher, one every `every`
    /// of virtual time; what it sends is dropped.
    fn forward(&mut self, datagrams: &[BytesMut], every: Duration) {
        let Some(publisher) = self.publisher.as_ref().map(|c| c.addr) else { return };
        let mut sink = Vec::with_capacity(1 << 14);
        for d in datagrams {
            self.now += every;
            let now = self.now;
            self.with_engine(|e| {
                e.handle_datagram(now, publisher, Transport::Udp, d);
                while let Some(t) = e.poll_transmit() {
                    std::hint::black_box(t);
                }
                if e.poll_timeout() <= now {
                    e.handle_timeout(now);
                }
            });
            self.drain_engine(&mut sink);
            sink.clear();
        }
    }

    /// The publisher's next `n` datagrams (SRTP), made now.
    fn publisher_datagrams(&mut self, n: usize, first_seq: u16) -> Vec<BytesMut> {
        let (id, ssrc) = self.sender;
        let Some(publisher) = self.publisher.as_mut() else { return Vec::new() };
        let pt = publisher
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
            if let Some(mut s) = publisher.pc.rtp_sender(id) {
                let _ = s.write_rtp(self.now, packet);
            }
            while let Some(m) = publisher.pc.poll_write() {
                out.push(m.message);
            }
        }
        out
    }
}

/// Virtual time between two publisher packets in the speed runs.
const FAST: Duration = Duration::from_micros(200);

/// Runs `threads` rooms at once; answers (forwarded packets/s, CPU µs per forwarded packet).
fn run(threads: usize, packets: usize) -> Result<(f64, f64), String> {
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let barrier = barrier.clone();
            std::thread::spawn(move || -> Result<(u64, Duration, Duration), String> {
                let mut room = Room::new(t as u8, true, SUBSCRIBERS, false)?;
                // Warm-up: the first keyframe reaches every player.
                let warm = room.publisher_datagrams(90, 1);
                room.forward(&warm, FAST);
                let datagrams = room.publisher_datagrams(packets, 91);
                let before = room.engine.stats().srtp_own_packets;
                barrier.wait();
                let cpu0 = thread_cpu();
                let start = Instant::now();
                room.forward(&datagrams, FAST);
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

/// Heap bytes the engine keeps (counted per engine call, net): per
/// publisher session with one video track after 2,000 packets at 150
/// packets/s (its retransmission cache settled), and per player session (one video
/// subscription, forwarding).
fn memory() -> Result<(f64, f64), String> {
    let retained = |publish: bool, players: usize| -> Result<i64, String> {
        let mut room = Room::new(0, publish, players, true)?;
        let datagrams = room.publisher_datagrams(2_000, 1);
        // At the workload's 150 packets/s (the cache is sized by time).
        room.forward(&datagrams, Duration::from_micros(6_667));
        Ok(room.retained)
    };
    let base = retained(false, 0)?;
    let publisher = retained(true, 0)?;
    let few = retained(true, 10)?;
    let many = retained(true, 60)?;
    Ok(((publisher - base) as f64, (many - few) as f64 / 50.0))
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
    let (per_publisher, per_player) = match memory() {
        Ok(m) => m,
        Err(e) => {
            eprintln!("engines: memory: {e}");
            std::process::exit(1);
        }
    };
    println!(
        "engines: heap kept per publisher session (1 video track): {:.0} KiB; per player session (1 video subscription): {:.1} KiB",
        per_publisher / 1024.0,
        per_player / 1024.0
    );
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
    let _ = writeln!(
        md,
        "\nHeap the engine keeps (allocations counted per engine call, net, with `allocation-counter`): **{:.0} KiB per publisher session** with one video track after 2,000 packets of {PAYLOAD} bytes at 150 packets/s, its retransmission cache settled (target ≤ 256 KiB RSS per published video track: {}), and **{:.1} KiB per player session** with one video subscription (from 10 to 60 players; target ≤ 32 KiB per subscription: {}). A session is a whole `rtc` peer connection (ICE, DTLS, SRTP, SCTP, interceptors); the publisher's includes the forwarding core's retransmission cache, sized by time (half a second of the track: a 128 KiB ring here).",
        per_publisher / 1024.0,
        if per_publisher <= 256.0 * 1024.0 { "met" } else { "**not met**" },
        per_player / 1024.0,
        if per_player <= 32.0 * 1024.0 { "met" } else { "**not met**" }
    );
    let _ = writeln!(md, "<!-- engines-bench:end -->");
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    match arc_tests::benchmarks::write_section(&root, "engines-bench", &md, quick) {
        Ok(path) => println!("wrote {}", path.display()),
        Err(e) => eprintln!("engines: cannot write the figures: {e}"),
    }
}
