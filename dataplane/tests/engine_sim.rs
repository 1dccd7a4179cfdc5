//! The engine on a simulated network, in virtual time: `rtc` client peers
//! (publishers and players, sans-IO like the engine) exchange datagrams with
//! one [`Engine`] through an in-memory network that can lose, reorder,
//! duplicate and delay them. No socket, no sleep, no wall clock: a run is
//! deterministic for its seed, and a minute of media takes a fraction of a
//! second.
//!
//! Covered: connect and forward; NACK and retransmission under loss with
//! reordering and duplicates (on the RTX stream for players that offer RTX,
//! on the stream itself for the others and on `rtc`'s egress); keyframe requests (PLI); mute and unmute; leave
//! and its events; the session cap; garbage and forged STUN from unknown
//! addresses; a client whose address changes (NAT rebinding); a DTLS
//! ServerHello flight lost on its way to the client; no allocation
//! per forwarded packet (a counting allocator).

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use arc_events::room::LeaveReason;
use arc_events::{MediaSessionId, ParticipantIdentity, ParticipantSid, RoomId, TrackId};
use arc_media::engine::{Engine, EngineConfig, MediaEvent, SubscriptionEnd, Transport, trickle};
use arc_nodeproto::{NodeReply, NodeRequest, OpenSession, Role, SessionError};
use bytes::{Bytes, BytesMut};
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::event::RTCPeerConnectionEvent;
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::RTCPeerConnectionState;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::{RTCRtpReceiverId, RTCRtpSenderId};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};

const NODE: &str = "10.0.0.1:7882";

/// A small deterministic PRNG (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn chance(&mut self, p: f64) -> bool {
        (self.next() % 1_000_000) as f64 / 1_000_000.0 < p
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

/// How the network treats datagrams towards one address.
#[derive(Debug, Clone, Copy, Default)]
struct Link {
    loss: f64,
    duplicate: f64,
    delay: Duration,
    /// Extra random delay up to this much (reorders datagrams).
    jitter: Duration,
}

/// A datagram in flight: (deliver at, order, from, to, bytes).
type InFlight = (Instant, u64, SocketAddr, SocketAddr, Vec<u8>);

/// In-flight datagrams, delivered in time order.
struct Net {
    rng: Rng,
    queue: BinaryHeap<Reverse<InFlight>>,
    seq: u64,
    /// Link towards an address (default: 1 ms, no loss).
    links: HashMap<SocketAddr, Link>,
    /// Addresses whose traffic is dropped (a client that vanished).
    dead: BTreeSet<SocketAddr>,
    /// NAT: a client's own address → the address the node sees.
    nat: HashMap<SocketAddr, SocketAddr>,
    /// Addresses whose first datagram carrying a DTLS ServerHello is lost.
    lose_server_hello: BTreeSet<SocketAddr>,
    /// A datagram of a client's DTLS ClientHello (the one with the cookie)
    /// arrives a second time this much later, with the next record sequence
    /// number: a client repeating its hello sooner than `rtc`'s one second,
    /// as Chromium does (from 100 ms, doubling).
    repeat_client_hello: Option<Duration>,
}

/// An epoch-0 DTLS handshake record of `msg_type` at the start of `b`
/// (RFC 6347 §4.1: a 13-byte record header, then the handshake header),
/// with its handshake message sequence.
fn dtls_handshake(b: &[u8], msg_type: u8) -> Option<u16> {
    (b.len() > 25 && b[0] == 22 && b[3..5] == [0, 0] && b[13] == msg_type).then(|| u16::from_be_bytes([b[17], b[18]]))
}

impl Net {
    fn new(seed: u64) -> Self {
        Self {
            rng: Rng(seed),
            queue: BinaryHeap::new(),
            seq: 0,
            links: HashMap::new(),
            dead: BTreeSet::new(),
            nat: HashMap::new(),
            lose_server_hello: BTreeSet::new(),
            repeat_client_hello: None,
        }
    }

    fn send(&mut self, now: Instant, from: SocketAddr, to: SocketAddr, bytes: &[u8]) {
        let from = self.nat.get(&from).copied().unwrap_or(from);
        if self.dead.contains(&from) || self.dead.contains(&to) {
            return;
        }
        let link = self.links.get(&to).copied().unwrap_or(Link { delay: Duration::from_millis(1), ..Link::default() });
        if self.rng.chance(link.loss) {
            return;
        }
        if dtls_handshake(bytes, 2).is_some() && self.lose_server_hello.remove(&to) {
            return;
        }
        if let Some(after) = self.repeat_client_hello
            && dtls_handshake(bytes, 1).is_some_and(|seq| seq > 0)
        {
            let mut again = bytes.to_vec();
            // The record sequence number (48 bits, bytes 5..11) goes up by one.
            let mut n = [0; 8];
            n[2..].copy_from_slice(&again[5..11]);
            again[5..11].copy_from_slice(&(u64::from_be_bytes(n) + 1).to_be_bytes()[2..]);
            self.seq += 1;
            self.queue.push(Reverse((now + link.delay + after, self.seq, from, to, again)));
        }
        let copies = if self.rng.chance(link.duplicate) { 2 } else { 1 };
        for _ in 0..copies {
            let jitter = Duration::from_micros(self.rng.below(link.jitter.as_micros() as u64 + 1));
            self.seq += 1;
            self.queue.push(Reverse((now + link.delay + jitter, self.seq, from, to, bytes.to_vec())));
        }
    }

    /// The client address a datagram to `to` (as the node sees it) reaches.
    fn inside(&self, to: SocketAddr) -> SocketAddr {
        self.nat.iter().find(|(_, outer)| **outer == to).map_or(to, |(inner, _)| *inner)
    }

    fn next_at(&self) -> Option<Instant> {
        self.queue.peek().map(|Reverse((t, ..))| *t)
    }
}

/// A client peer (sans-IO), at one simulated address.
struct Peer {
    pc: RTCPeerConnection,
    addr: SocketAddr,
    sender: Option<(RTCRtpSenderId, u32)>,
    receiver: Option<RTCRtpReceiverId>,
    connected: bool,
    /// RTP packets received (all, and distinct sequence numbers).
    received: usize,
    seqs: BTreeSet<u16>,
    /// SSRC of the last RTP packet received (what a PLI names).
    last_ssrc: u32,
    session: Option<MediaSessionId>,
    seq: u16,
}

impl Peer {
    fn new(addr: SocketAddr, publish: bool, now: Instant) -> Self {
        let (pc, sender) =
            arc_tests::rtc_client::offering_peer(addr, publish, 0x1234_0000 | u32::from(addr.port()), now);
        Self {
            pc,
            addr,
            sender,
            receiver: None,
            connected: false,
            received: 0,
            seqs: BTreeSet::new(),
            last_ssrc: 0,
            session: None,
            seq: 0,
        }
    }

    fn offer(&self) -> String {
        self.pc.local_description().map(|d| d.sdp.clone()).expect("offer sdp")
    }

    fn answer(&mut self, now: Instant, sdp: String) {
        self.pc.set_remote_description(now, RTCSessionDescription::answer(sdp).expect("answer")).expect("remote");
    }

    fn handle(&mut self, now: Instant, from: SocketAddr, bytes: &[u8]) {
        let msg = TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr: self.addr,
                peer_addr: from,
                ecn: None,
                transport_protocol: TransportProtocol::UDP,
            },
            message: BytesMut::from(bytes),
        };
        let _ = self.pc.handle_read(msg);
    }

    /// Takes what the connection produced: datagrams into the network, events, media.
    fn drain(&mut self, now: Instant, net: &mut Net) {
        while let Some(m) = self.pc.poll_write() {
            net.send(now, self.addr, m.transport.peer_addr, &m.message);
        }
        while let Some(ev) = self.pc.poll_event() {
            match ev {
                RTCPeerConnectionEvent::OnConnectionStateChangeEvent(RTCPeerConnectionState::Connected) => {
                    self.connected = true;
                }
                RTCPeerConnectionEvent::OnTrack(rtc::peer_connection::event::RTCTrackEvent::OnOpen(init)) => {
                    self.receiver = Some(init.receiver_id);
                }
                _ => {}
            }
        }
        while let Some(m) = self.pc.poll_read() {
            if let RTCMessage::RtpPacket(_, p) = m.message {
                self.received += 1;
                self.seqs.insert(p.header.sequence_number);
                self.last_ssrc = p.header.ssrc;
            }
        }
        while let Some(m) = self.pc.poll_write() {
            net.send(now, self.addr, m.transport.peer_addr, &m.message);
        }
    }

    /// Sends one VP8 frame (a keyframe every 30th) of `packets` packets.
    fn send_frame(&mut self, now: Instant, packets: usize) {
        let Some((id, ssrc)) = self.sender else { return };
        let Some(mut s) = self.pc.rtp_sender(id) else { return };
        let pt = s.get_parameters().rtp_parameters.codecs.first().map_or(96, |c| c.payload_type);
        let keyframe = self.seq.is_multiple_of(90);
        for i in 0..packets {
            self.seq = self.seq.wrapping_add(1);
            let mut payload = vec![0u8; 1000];
            payload[0] = if i == 0 { 0x10 } else { 0x00 }; // VP8 descriptor: start of partition
            payload[1] = if keyframe { 0x00 } else { 0x01 }; // VP8 header: P bit clear = keyframe
            let packet = rtc::rtp::Packet {
                header: rtc::rtp::Header {
                    version: 2,
                    marker: i + 1 == packets,
                    payload_type: pt,
                    sequence_number: self.seq,
                    timestamp: u32::from(self.seq / 3) * 3000,
                    ssrc,
                    ..Default::default()
                },
                payload: Bytes::from(payload),
            };
            let _ = s.write_rtp(now, packet);
        }
    }

    fn send_pli(&mut self, now: Instant) {
        let Some(id) = self.receiver else { return };
        if let Some(mut r) = self.pc.rtp_receiver(id) {
            let pli = PictureLossIndication { sender_ssrc: 1, media_ssrc: self.last_ssrc };
            let _ = r.write_rtcp(now, vec![Box::new(pli)]);
        }
    }
}

/// The engine, its clients, the network and the clock.
struct Sim {
    now: Instant,
    engine: Engine,
    node: SocketAddr,
    net: Net,
    peers: Vec<Peer>,
    events: Vec<MediaEvent>,
    room: RoomId,
    /// Datagrams from this address are handled with their allocations
    /// counted (the engine's only: the simulated clients and network
    /// allocate freely).
    count_from: Option<SocketAddr>,
    /// How many were, and the allocations the engine made for them.
    counted: u64,
    allocations: u64,
}

impl Sim {
    fn new(seed: u64, sessions_max: u32) -> Self {
        Self::with_egress(seed, sessions_max, true)
    }

    /// A simulation whose engine protects media itself (`own_egress`) or leaves it to `rtc`.
    fn with_egress(seed: u64, sessions_max: u32, own_egress: bool) -> Self {
        let now = Instant::now();
        let node: SocketAddr = NODE.parse().expect("addr");
        let engine = Engine::new(
            EngineConfig {
                local_udp: node,
                local_tcp: node,
                announce_udp: vec![node],
                announce_tcp: vec![node],
                sessions_max,
                worker: 0,
                wall_clock: std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000),
                own_srtp_egress: own_egress,
            },
            now,
        )
        .expect("engine");
        Self {
            now,
            engine,
            node,
            net: Net::new(seed),
            peers: Vec::new(),
            events: Vec::new(),
            room: RoomId::parse("rm_sim").expect("id"),
            count_from: None,
            counted: 0,
            allocations: 0,
        }
    }

    fn drain_engine(&mut self) {
        while let Some(t) = self.engine.poll_transmit() {
            if std::env::var_os("SIM_TRACE").is_some() {
                eprintln!("{:?} node -> {} {} bytes first {:#x}", self.now, t.to, t.payload.len(), t.payload[0]);
            }
            assert_eq!(t.transport, Transport::Udp);
            self.net.send(self.now, self.node, t.to, &t.payload);
        }
        while let Some(e) = self.engine.poll_event() {
            self.events.push(e);
        }
    }

    /// Adds a client at `10.0.1.<n>:5000` and opens its session.
    fn join(&mut self, n: u8, identity: &str, publish: bool) -> Result<usize, SessionError> {
        self.join_offering(n, identity, publish, |offer| offer)
    }

    /// [`Sim::join`] with the client's offer changed on its way to the node
    /// (a client that offers less than `rtc` does).
    fn join_offering(
        &mut self,
        n: u8,
        identity: &str,
        publish: bool,
        edit: impl Fn(String) -> String,
    ) -> Result<usize, SessionError> {
        let addr: SocketAddr = format!("10.0.1.{n}:5000").parse().expect("addr");
        let mut peer = Peer::new(addr, publish, self.now);
        let req = NodeRequest::Open(OpenSession {
            room_id: self.room.clone(),
            identity: ParticipantIdentity::parse(identity).expect("id"),
            sid: ParticipantSid::parse(&format!("pa_{identity}")).expect("id"),
            role: if publish { Role::Publish } else { Role::Subscribe { participant: None, screen: false } },
            offer: edit(peer.offer()),
            attached: false,
            screen: false,
        });
        let reply = self.engine.handle_request(self.now, req);
        self.drain_engine();
        match reply {
            NodeReply::Opened(o) => {
                peer.answer(self.now, o.answer);
                peer.session = Some(o.session_id);
                peer.drain(self.now, &mut self.net);
                self.peers.push(peer);
                Ok(self.peers.len() - 1)
            }
            NodeReply::Error(e) => Err(e),
            other => panic!("unexpected reply {other:?}"),
        }
    }

    fn request(&mut self, req: NodeRequest) -> NodeReply {
        let reply = self.engine.handle_request(self.now, req);
        self.drain_engine();
        reply
    }

    /// Runs for `d` of virtual time; publishers send `fps` frames a second.
    fn run(&mut self, d: Duration, fps: u32) {
        let until = self.now + d;
        let frame = Duration::from_secs(1) / fps.max(1);
        let mut next_frame = self.now;
        loop {
            let mut next = self.engine.poll_timeout().min(next_frame);
            if let Some(t) = self.net.next_at() {
                next = next.min(t);
            }
            for p in &mut self.peers {
                if let Some(t) = p.pc.poll_timeout() {
                    next = next.min(t);
                }
            }
            if next > until {
                self.now = until;
                return;
            }
            self.now = next.max(self.now);
            let now = self.now;
            // Datagrams due now.
            while self.net.next_at().is_some_and(|t| t <= now) {
                let Some(Reverse((_, _, from, to, bytes))) = self.net.queue.pop() else { break };
                if to == self.node {
                    if std::env::var_os("SIM_TRACE").is_some() {
                        eprintln!("{now:?} {from} -> node {} bytes first {:#x}", bytes.len(), bytes[0]);
                    }
                    if self.count_from == Some(from) {
                        let engine = &mut self.engine;
                        let info = allocation_counter::measure(|| {
                            engine.handle_datagram(now, from, Transport::Udp, &bytes);
                        });
                        self.counted += 1;
                        self.allocations += info.count_total;
                    } else {
                        self.engine.handle_datagram(now, from, Transport::Udp, &bytes);
                    }
                    self.drain_engine();
                } else if let Some(p) = {
                    let inner = self.net.inside(to);
                    self.peers.iter_mut().find(|p| p.addr == inner)
                } {
                    p.handle(now, from, &bytes);
                    p.drain(now, &mut self.net);
                }
            }
            if self.engine.poll_timeout() <= now {
                self.engine.handle_timeout(now);
                self.drain_engine();
            }
            for p in &mut self.peers {
                if p.pc.poll_timeout().is_some_and(|t| t <= now) {
                    let _ = p.pc.handle_timeout(now);
                    p.drain(now, &mut self.net);
                }
            }
            if next_frame <= now {
                next_frame = now + frame;
                for p in &mut self.peers {
                    if p.connected && p.sender.is_some() {
                        p.send_frame(now, 3);
                        p.drain(now, &mut self.net);
                    }
                }
            }
        }
    }

    /// The client side of an ICE restart over WHIP/WHEP (RFC 9725 §4.3.2):
    /// peer `i` makes an offer with new credentials, PATCHes them, and takes
    /// the node's new ones from the answer fragment into its answer.
    fn restart_ice(&mut self, i: usize, if_match: Option<String>) -> NodeReply {
        let now = self.now;
        let p = &mut self.peers[i];
        let options = rtc::peer_connection::configuration::RTCOfferOptions { ice_restart: true };
        let offer = p.pc.create_offer(Some(options)).expect("restart offer");
        p.pc.set_local_description(now, offer).expect("local");
        let ours = trickle::credentials_of(&p.offer());
        let fragment = format!(
            "a=ice-ufrag:{}\r\na=ice-pwd:{}\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\n",
            ours.ufrag.expect("ufrag"),
            ours.pwd.expect("pwd")
        );
        let session_id = p.session.clone().expect("session");
        let reply = self.request(NodeRequest::Patch { session_id, fragment, if_match });
        if let NodeReply::Patched { fragment: Some(f), .. } = &reply {
            let theirs = trickle::parse(f).expect("answer fragment").session;
            let p = &mut self.peers[i];
            let previous = p.pc.remote_description().map(|d| d.sdp.clone()).expect("answer");
            let answer: String = previous
                .lines()
                .map(|l| match l {
                    l if l.starts_with("a=ice-ufrag:") => {
                        format!("a=ice-ufrag:{}\r\n", theirs.ufrag.as_deref().unwrap_or(""))
                    }
                    l if l.starts_with("a=ice-pwd:") => {
                        format!("a=ice-pwd:{}\r\n", theirs.pwd.as_deref().unwrap_or(""))
                    }
                    l => format!("{l}\r\n"),
                })
                .collect();
            p.answer(now, answer);
            p.drain(now, &mut self.net);
        }
        reply
    }

    fn count(&self, f: impl Fn(&MediaEvent) -> bool) -> usize {
        self.events.iter().filter(|e| f(e)).count()
    }
}

#[test]
fn clients_connect_and_media_is_forwarded() {
    let mut sim = Sim::new(1, 100);
    let publisher = sim.join(1, "pub", true).expect("publisher");
    let player = sim.join(2, "sub", false).expect("player");
    sim.run(Duration::from_secs(3), 30);
    assert!(sim.peers[publisher].connected && sim.peers[player].connected, "both connected");
    let received = sim.peers[player].received;
    assert!(received > 100, "the player received the publisher's video: {received} packets");
    assert_eq!(sim.count(|e| matches!(e, MediaEvent::TrackPublished { .. })), 1);
    assert_eq!(sim.count(|e| matches!(e, MediaEvent::SubscriptionStarted { .. })), 1);
    let stats = sim.engine.stats();
    assert_eq!(stats.sessions, 2);
    assert!(stats.packets_in > 150, "{stats:?}");
    // The player's media was protected by Arc's own SRTP egress, and the
    // player's rtc stack opened it.
    assert_eq!(stats.srtp_rtc_legs, 0, "every leg's keys verified: {stats:?}");
    assert!(stats.srtp_own_packets >= received as u64, "{stats:?}");
    // The player negotiated transport-wide congestion control: the egress
    // numbered its packets and its feedback reported on them.
    assert!(stats.twcc_reported > 100, "{stats:?}");
}

#[test]
fn with_arcs_egress_turned_off_rtc_protects_the_media() {
    let mut sim = Sim::with_egress(5, 100, false);
    let publisher = sim.join(1, "pub", true).expect("publisher");
    let player = sim.join(2, "sub", false).expect("player");
    sim.run(Duration::from_secs(3), 30);
    let received = sim.peers[player].received;
    assert!(received > 100, "the player received the publisher's video: {received} packets");
    let stats = sim.engine.stats();
    assert_eq!(stats.srtp_own_packets, 0, "{stats:?}");
    assert_eq!(stats.srtp_rtc_legs, 2, "both legs on rtc's egress: {stats:?}");
    // rtc sends only the track's own SSRC: the player negotiated RTX, but
    // its losses are repaired on the stream itself.
    let (got, sent) = lossy_run(&mut sim, publisher, player);
    let stats = sim.engine.stats();
    assert!(stats.nacks_answered > 0, "{stats:?}");
    assert_eq!(stats.rtx_sent, 0, "{stats:?}");
    assert!(got as f64 >= sent as f64 * 0.99, "after repair the player has {got} of {sent} packets");
}

/// 10 s of 5 % loss, 20 ms ± 15 ms (reordering) and 2 % duplicates towards
/// the player; answers (packets the player lost and has again, packets sent).
fn lossy_run(sim: &mut Sim, publisher: usize, player: usize) -> (usize, usize) {
    sim.run(Duration::from_secs(2), 30);
    assert!(sim.peers[player].connected);
    let link =
        Link { loss: 0.05, duplicate: 0.02, delay: Duration::from_millis(20), jitter: Duration::from_millis(15) };
    sim.net.links.insert(sim.peers[player].addr, link);
    let sent_before = sim.peers[publisher].seq;
    let seqs_before = sim.peers[player].seqs.len();
    sim.run(Duration::from_secs(10), 30);
    sim.net.links.clear();
    sim.run(Duration::from_secs(1), 1);
    (sim.peers[player].seqs.len() - seqs_before, usize::from(sim.peers[publisher].seq - sent_before))
}

#[test]
fn losses_are_repaired_on_the_rtx_stream_of_a_player_that_offers_rtx() {
    let mut sim = Sim::new(11, 100);
    let publisher = sim.join(1, "pub", true).expect("publisher");
    let player = sim.join(2, "sub", false).expect("player");
    let answer = sim.peers[player].pc.remote_description().map(|d| d.sdp.clone()).expect("answer");
    let fid = answer.lines().find(|l| l.starts_with("a=ssrc-group:FID ")).expect("an RTX stream in the answer");
    assert!(answer.lines().any(|l| l.starts_with("a=rtpmap:") && l.ends_with(" rtx/90000")), "{answer}");
    assert_eq!(fid.split_whitespace().count(), 3, "{fid}");
    let (got, sent) = lossy_run(&mut sim, publisher, player);
    let stats = sim.engine.stats();
    assert!(stats.rtx_sent > 0, "NACKs answered on the RTX stream: {stats:?}");
    assert_eq!(stats.rtx_sent, stats.nacks_answered, "every answer on the RTX stream: {stats:?}");
    assert_eq!(stats.srtp_rtc_legs, 0, "{stats:?}");
    // The player's rtc unwrapped them (RFC 4588) into the packets it had lost.
    assert!(got as f64 >= sent as f64 * 0.99, "after repair the player has {got} of {sent} packets");
}

#[test]
fn a_player_without_rtx_gets_plain_retransmissions() {
    let mut sim = Sim::new(12, 100);
    let publisher = sim.join(1, "pub", true).expect("publisher");
    let no_rtx = |offer: String| {
        let rtx_pts: Vec<String> = offer
            .lines()
            .filter_map(|l| l.strip_prefix("a=rtpmap:"))
            .filter(|l| l.ends_with(" rtx/90000"))
            .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
            .collect();
        let mut out = String::new();
        for line in offer.split_inclusive('\n') {
            let l = line.trim_end();
            let names_rtx = rtx_pts.iter().any(|pt| {
                l.strip_prefix("a=rtpmap:")
                    .or_else(|| l.strip_prefix("a=fmtp:"))
                    .or_else(|| l.strip_prefix("a=rtcp-fb:"))
                    .is_some_and(|rest| rest.split_whitespace().next() == Some(pt.as_str()))
            });
            if names_rtx || l.starts_with("a=ssrc-group:FID") {
                continue;
            }
            if let Some(m) = l.strip_prefix("m=video ") {
                let kept: Vec<&str> = m.split(' ').filter(|f| !rtx_pts.iter().any(|pt| pt == f)).collect();
                out.push_str(&format!("m=video {}\r\n", kept.join(" ")));
                continue;
            }
            out.push_str(line);
        }
        out
    };
    let player = sim.join_offering(2, "sub", false, no_rtx).expect("player");
    let answer = sim.peers[player].pc.remote_description().map(|d| d.sdp.clone()).expect("answer");
    assert!(!answer.contains("rtx/90000") && !answer.contains("FID"), "{answer}");
    let (got, sent) = lossy_run(&mut sim, publisher, player);
    let stats = sim.engine.stats();
    assert!(stats.nacks_answered > 0, "{stats:?}");
    assert_eq!(stats.rtx_sent, 0, "{stats:?}");
    assert!(got as f64 >= sent as f64 * 0.99, "after repair the player has {got} of {sent} packets");
}

#[test]
fn connection_quality_follows_loss_and_is_told_when_it_changes() {
    use arc_nodeproto::ConnectionQuality;
    let mut sim = Sim::new(11, 100);
    sim.join(1, "pub", true).expect("publisher");
    sim.join(2, "sub", false).expect("player");
    let latest = |sim: &Sim, who: &str| {
        sim.events.iter().rev().find_map(|e| match e {
            MediaEvent::Quality { sid, quality, .. } if sid.as_str() == who => Some(*quality),
            _ => None,
        })
    };
    let told =
        |sim: &Sim, who: &str| sim.count(|e| matches!(e, MediaEvent::Quality { sid, .. } if sid.as_str() == who));
    sim.run(Duration::from_secs(5), 30);
    assert_eq!(latest(&sim, "pa_pub"), Some(ConnectionQuality::Excellent));
    assert_eq!(latest(&sim, "pa_sub"), Some(ConnectionQuality::Excellent), "its receiver reports say so");
    // A third of what the publisher sends is lost on the way to the node.
    let node = sim.node;
    sim.net.links.insert(node, Link { loss: 0.35, ..Link::default() });
    sim.run(Duration::from_secs(6), 30);
    assert_eq!(latest(&sim, "pa_pub"), Some(ConnectionQuality::Poor));
    sim.net.links.clear();
    sim.run(Duration::from_secs(6), 30);
    assert_eq!(latest(&sim, "pa_pub"), Some(ConnectionQuality::Excellent), "and back");
    // Told when it changed (and again every 10 s), not every two seconds.
    let n = told(&sim, "pa_pub");
    assert!((3..=6).contains(&n), "{n} quality events for the publisher in 17 s");
    let before = told(&sim, "pa_pub");
    sim.run(Duration::from_secs(21), 30);
    let again = told(&sim, "pa_pub") - before;
    assert!((2..=3).contains(&again), "unchanged for 21 s: told {again} times");
}

#[test]
fn a_players_keyframe_request_reaches_the_publisher() {
    let mut sim = Sim::new(3, 100);
    sim.join(1, "pub", true).expect("publisher");
    let player = sim.join(2, "sub", false).expect("player");
    sim.run(Duration::from_secs(2), 30);
    let before = sim.engine.stats().keyframe_requests;
    let now = sim.now;
    sim.peers[player].send_pli(now);
    sim.peers[player].drain(now, &mut sim.net);
    sim.run(Duration::from_millis(200), 30);
    assert!(sim.engine.stats().keyframe_requests > before, "the PLI went upstream: {:?}", sim.engine.stats());
}

#[test]
fn muted_tracks_stop_and_resume_on_unmute() {
    let mut sim = Sim::new(4, 100);
    sim.join(1, "pub", true).expect("publisher");
    let player = sim.join(2, "sub", false).expect("player");
    sim.run(Duration::from_secs(2), 30);
    let track = sim
        .events
        .iter()
        .find_map(|e| match e {
            MediaEvent::TrackPublished { track, .. } => Some(track.clone()),
            _ => None,
        })
        .expect("published");
    assert_eq!(
        sim.request(NodeRequest::Mute { track_id: track.clone(), muted: true }),
        NodeReply::Muted { found: true }
    );
    sim.run(Duration::from_millis(200), 30);
    let muted_at = sim.peers[player].received;
    sim.run(Duration::from_secs(2), 30);
    assert_eq!(sim.peers[player].received, muted_at, "nothing forwarded while muted");
    sim.request(NodeRequest::Mute { track_id: track, muted: false });
    sim.run(Duration::from_secs(4), 30);
    assert!(sim.peers[player].received > muted_at + 30, "forwarding resumed (on a keyframe)");
    let unknown = TrackId::parse("tr_nope").expect("id");
    assert_eq!(sim.request(NodeRequest::Mute { track_id: unknown, muted: true }), NodeReply::Muted { found: false });
}

#[test]
fn leaving_ends_the_session_with_its_reason_and_unpublishes() {
    let mut sim = Sim::new(5, 100);
    let publisher = sim.join(1, "pub", true).expect("publisher");
    sim.join(2, "sub", false).expect("player");
    sim.run(Duration::from_secs(2), 30);
    let id = sim.peers[publisher].session.clone().expect("session");
    assert_eq!(sim.request(NodeRequest::Close { session_id: id.clone() }), NodeReply::Closed);
    assert_eq!(sim.request(NodeRequest::Close { session_id: id }), NodeReply::Error(SessionError::NotFound));
    assert_eq!(sim.count(|e| matches!(e, MediaEvent::TrackUnpublished { reason: LeaveReason::ClientLeft, .. })), 1);
    assert_eq!(
        sim.count(|e| matches!(e, MediaEvent::SessionEnded { reason: LeaveReason::ClientLeft, .. })),
        1,
        "{:?}",
        sim.events
    );
    assert_eq!(
        sim.count(|e| matches!(e, MediaEvent::SubscriptionEnded { reason: SubscriptionEnd::Unpublished, .. })),
        1
    );
    // The player is ended by sid, as the log would ask; the room empties.
    let sid = ParticipantSid::parse("pa_sub").expect("id");
    let reply =
        sim.request(NodeRequest::End { room_id: sim.room.clone(), sid: Some(sid), reason: LeaveReason::Kicked });
    assert_eq!(reply, NodeReply::Ended { sessions: 1 });
    assert_eq!(sim.engine.session_count(), 0);
    assert_eq!(sim.count(|e| matches!(e, MediaEvent::SessionEnded { reason: LeaveReason::Kicked, .. })), 1);
}

#[test]
fn a_vanished_client_is_dropped_after_the_disconnect_timeout() {
    let mut sim = Sim::new(6, 100);
    sim.join(1, "pub", true).expect("publisher");
    let player = sim.join(2, "sub", false).expect("player");
    sim.run(Duration::from_secs(2), 30);
    sim.net.dead.insert(sim.peers[player].addr);
    sim.run(Duration::from_secs(40), 30);
    assert_eq!(sim.engine.session_count(), 1, "only the publisher is left");
    assert_eq!(sim.count(|e| matches!(e, MediaEvent::SessionEnded { reason: LeaveReason::ConnectionLost, .. })), 1);
}

/// The node's DTLS ServerHello flight is lost on its way to a player that
/// repeats its hello sooner than the node would send the flight again (as
/// Chromium does): the node drops the repeated hello, sends the flight
/// again on its timer, and the player connects. Handed to rtc-dtls, the
/// repeated hello stopped that timer and the player never connected (a
/// Chromium player behind 5 % loss, about one run in four).
#[test]
fn a_server_hello_flight_lost_on_its_way_is_sent_again() {
    let mut sim = Sim::new(9, 100);
    sim.net.repeat_client_hello = Some(Duration::from_millis(100));
    sim.join(1, "pub", true).expect("publisher");
    let player_addr: SocketAddr = "10.0.1.2:5000".parse().expect("addr");
    sim.net.lose_server_hello.insert(player_addr);
    let player = sim.join(2, "sub", false).expect("player");
    sim.run(Duration::from_secs(4), 30);
    assert!(!sim.net.lose_server_hello.contains(&player_addr), "the player's first ServerHello flight was lost");
    assert!(sim.peers[player].connected, "the player connected");
    assert!(sim.peers[player].received > 30, "and got media: {} packets", sim.peers[player].received);
    let stats = sim.engine.stats();
    assert!(stats.dropped_dtls_repeat >= 1, "the repeated hello was dropped: {stats:?}");
}

#[test]
fn a_full_node_refuses_sessions_with_its_limit() {
    let mut sim = Sim::new(8, 2);
    sim.join(1, "a", true).expect("first");
    sim.join(2, "b", false).expect("second");
    assert_eq!(sim.join(3, "c", false).err(), Some(SessionError::Full { limit: 2 }));
    assert_eq!(sim.engine.session_count(), 2);
}

#[test]
fn garbage_and_forged_checks_from_unknown_addresses_change_nothing() {
    let mut sim = Sim::new(9, 100);
    sim.join(1, "pub", true).expect("publisher");
    let player = sim.join(2, "sub", false).expect("player");
    sim.run(Duration::from_secs(2), 30);
    let before = sim.peers[player].received;
    // Random bytes in every first-byte class, from strangers and from the
    // publisher's own address.
    let mut rng = Rng(99);
    let stranger: SocketAddr = "10.9.9.9:4444".parse().expect("addr");
    let publisher_addr = sim.peers[0].addr;
    for i in 0..5000u64 {
        let len = 1 + rng.below(1400) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        bytes[0] = [0x00, 0x01, 22, 0x80, 0x90, 0xff][(i % 6) as usize];
        let from = if i % 2 == 0 { stranger } else { publisher_addr };
        sim.engine.handle_datagram(sim.now, from, Transport::Udp, &bytes);
        sim.drain_engine();
    }
    // A STUN check naming a live session's ufrag, signed with the wrong
    // password, from a spoofed address: the address is not learned.
    let offer_ufrag = sim.peers[player]
        .pc
        .remote_description()
        .and_then(|d| d.sdp.lines().find_map(|l| l.strip_prefix("a=ice-ufrag:").map(str::to_owned)))
        .expect("our ufrag in the answer");
    let forged = forged_check(&offer_ufrag);
    let dropped = sim.engine.stats().dropped_unknown;
    sim.engine.handle_datagram(sim.now, stranger, Transport::Udp, &forged);
    sim.drain_engine();
    assert_eq!(sim.engine.stats().dropped_unknown, dropped + 1, "a forged check is dropped");
    sim.run(Duration::from_secs(2), 30);
    assert!(sim.peers[player].received > before + 100, "media kept flowing");
    assert_eq!(sim.engine.session_count(), 2);
}

fn forged_check(our_ufrag: &str) -> Vec<u8> {
    use rtc::stun::attributes::ATTR_USERNAME;
    use rtc::stun::integrity::MessageIntegrity;
    use rtc::stun::message::{BINDING_REQUEST, Message, Setter, TransactionId};
    use rtc::stun::textattrs::TextAttribute;
    let provider = rtc::crypto::default_provider().expect("crypto");
    let mut m = Message::new();
    let setters: Vec<Box<dyn Setter + '_>> = vec![
        Box::new(BINDING_REQUEST),
        Box::new(TransactionId::new()),
        Box::new(TextAttribute::new(ATTR_USERNAME, format!("{our_ufrag}:attacker"))),
        Box::new(MessageIntegrity::new_short_term_integrity_with_provider(
            "not-the-password".into(),
            provider.crypto(),
        )),
    ];
    m.build(&setters).expect("build");
    m.raw
}

#[test]
fn a_client_whose_address_changes_keeps_its_media() {
    let mut sim = Sim::new(10, 100);
    sim.join(1, "pub", true).expect("publisher");
    let player = sim.join(2, "sub", false).expect("player");
    sim.run(Duration::from_secs(2), 30);
    // NAT rebinding: the player's datagrams now come from another port, and
    // what is sent to the old one goes nowhere.
    let old = sim.peers[player].addr;
    let new: SocketAddr = "10.0.1.2:6000".parse().expect("addr");
    sim.net.nat.insert(old, new);
    sim.net.dead.insert(old);
    let before = sim.peers[player].received;
    sim.run(Duration::from_secs(8), 30);
    let after = sim.peers[player].received;
    eprintln!("after the address change the player received {} packets", after - before);
    assert!(after > before + 50, "media follows the new address ({} packets)", after - before);
}

/// ICE restart (RFC 9725 §4.3.2): a player whose path died comes back from
/// another address and restarts ICE with a PATCH. The node answers new
/// credentials (the old ufrag is no longer its), keeps the session, its
/// DTLS and its subscription, and media flows again; a stale `If-Match` and
/// a restart without a password are refused, and a fragment with the
/// current credentials is trickle.
#[test]
fn a_player_that_restarts_ice_keeps_its_session_and_gets_media_again() {
    let mut sim = Sim::new(12, 100);
    sim.join(1, "pub", true).expect("publisher");
    let player = sim.join(2, "sub", false).expect("player");
    sim.run(Duration::from_secs(2), 30);
    assert!(sim.peers[player].received > 30, "the player gets media first");
    let session = sim.peers[player].session.clone().expect("session");
    let node_ufrag = |sim: &Sim| {
        let answer = sim.peers[player].pc.remote_description().map(|d| d.sdp.clone()).expect("answer");
        trickle::credentials_of(&answer).ufrag.expect("ufrag")
    };
    let old_ufrag = node_ufrag(&sim);
    assert!(sim.engine.owns_ufrag(&old_ufrag));

    // Trickle with the current credentials: nothing to answer.
    let offer = sim.peers[player].offer();
    let current = trickle::credentials_of(&offer);
    let trickle_only = format!(
        "a=ice-ufrag:{}\r\na=ice-pwd:{}\r\na=candidate:1 1 udp 2130706431 10.0.1.2 5000 typ host\r\n",
        current.ufrag.clone().expect("ufrag"),
        current.pwd.clone().expect("pwd")
    );
    let etag = format!("\"{old_ufrag}\"");
    match sim.request(NodeRequest::Patch {
        session_id: session.clone(),
        fragment: trickle_only,
        if_match: Some(etag.clone()),
    }) {
        NodeReply::Patched { fragment: None, etag: None } => {}
        other => panic!("trickle: {other:?}"),
    }
    // A restart needs the password with the ufrag.
    match sim.request(NodeRequest::Patch {
        session_id: session.clone(),
        fragment: "a=ice-ufrag:abcdefgh\r\n".into(),
        if_match: None,
    }) {
        NodeReply::Error(SessionError::BadSdp { reason }) => assert!(reason.contains("a=ice-pwd"), "{reason}"),
        other => panic!("restart without a password: {other:?}"),
    }

    // The player's network changes: its old address is gone both ways, it
    // comes back from another one.
    let old = sim.peers[player].addr;
    sim.net.dead.insert(old);
    sim.run(Duration::from_secs(3), 30);
    sim.net.nat.insert(old, "10.0.1.2:7000".parse().expect("addr"));
    let before = sim.peers[player].received;
    let asked = sim.engine.stats().keyframe_requests;
    let reply = sim.restart_ice(player, Some("*".into()));
    let new_etag = match &reply {
        NodeReply::Patched { fragment: Some(f), etag: Some(e) } => {
            assert!(f.contains("a=ice-ufrag:") && f.contains("a=candidate:"), "{f}");
            e.clone()
        }
        other => panic!("restart: {other:?}"),
    };
    let new_ufrag = node_ufrag(&sim);
    assert_ne!(new_ufrag, old_ufrag, "new credentials");
    assert_eq!(new_etag, format!("\"{new_ufrag}\""));
    assert!(!sim.engine.owns_ufrag(&old_ufrag) && sim.engine.owns_ufrag(&new_ufrag));
    sim.run(Duration::from_secs(3), 30);
    let after = sim.peers[player].received;
    eprintln!("after the ICE restart the player received {} packets", after - before);
    // What the player missed while its path was down is beyond repair: once
    // it nominated its new path, its video source was asked for a keyframe.
    assert!(sim.engine.stats().keyframe_requests > asked, "a keyframe was asked for: {:?}", sim.engine.stats());
    assert!(after > before + 50, "media again after the restart ({} packets)", after - before);
    assert_eq!(sim.count(|e| matches!(e, MediaEvent::SessionEnded { .. })), 0, "the session never ended");

    // The publisher restarts too (same address): its track stays the one
    // published, and media keeps coming.
    match sim.restart_ice(0, None) {
        NodeReply::Patched { fragment: Some(_), etag: Some(_) } => {}
        other => panic!("publisher restart: {other:?}"),
    }
    let before = sim.peers[player].received;
    sim.run(Duration::from_secs(3), 30);
    let after = sim.peers[player].received;
    assert!(after > before + 50, "media after the publisher's restart ({} packets)", after - before);
    assert_eq!(sim.count(|e| matches!(e, MediaEvent::TrackPublished { .. })), 1, "published once");
    assert_eq!(sim.count(|e| matches!(e, MediaEvent::TrackUnpublished { .. })), 0, "never unpublished");
    assert_eq!(sim.count(|e| matches!(e, MediaEvent::SessionEnded { .. })), 0, "no session ended");

    // The old entity tag is stale now.
    match sim.request(NodeRequest::Patch { session_id: session, fragment: String::new(), if_match: Some(etag) }) {
        NodeReply::Error(SessionError::PreconditionFailed { etag }) => assert_eq!(etag, new_etag),
        other => panic!("stale If-Match: {other:?}"),
    }
}

/// Allocations the engine makes per publisher datagram with `players`
/// players, and packets it forwarded per publisher datagram (after warm-up).
fn allocations_with(players: u8) -> (f64, f64) {
    let mut sim = Sim::new(11, 100);
    let publisher = sim.join(1, "pub", true).expect("publisher");
    for i in 0..players {
        sim.join(10 + i, &format!("sub{i}"), false).expect("player");
    }
    // Warm-up: connections, the first keyframe, buffers at their size.
    sim.run(Duration::from_secs(3), 30);
    let forwarded = sim.engine.stats().srtp_own_packets;
    sim.count_from = Some(sim.peers[publisher].addr);
    sim.run(Duration::from_secs(5), 30);
    let allocs = sim.allocations;
    let datagrams = sim.counted as f64;
    let forwarded = (sim.engine.stats().srtp_own_packets - forwarded) as f64;
    assert!(datagrams > 300.0, "the publisher sent: {datagrams}");
    (allocs as f64 / datagrams, forwarded / datagrams)
}

#[test]
fn forwarding_allocates_nothing_per_forwarded_packet() {
    // Per publisher datagram the engine pays a fixed part (rtc's ingress:
    // decryption, its interceptors) and a part per player it forwards to.
    let (a1, f1) = allocations_with(1);
    let (a8, f8) = allocations_with(8);
    let per_forwarded = (a8 - a1) / (f8 - f1);
    eprintln!(
        "allocations per publisher datagram: {a1:.2} with 1 player ({f1:.2} forwarded), {a8:.2} with 8 ({f8:.2} forwarded); per forwarded packet: {per_forwarded:.4}"
    );
    assert!(f8 > f1 * 7.0, "8 players were fed: {f1} vs {f8}");
    assert!(per_forwarded < 0.001, "allocations per forwarded packet: {per_forwarded:.4}");
}
