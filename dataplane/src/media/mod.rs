//! The media node's I/O: one UDP socket for every peer, the `rtc` peer
//! connections (sans-IO) of every session, and the forwarding core, all owned
//! by one task. Nothing here is shared behind a lock: commands arrive on a
//! channel ([`MediaHandle`]), datagrams on the socket, and timers from each
//! connection's `poll_timeout`.
//!
//! Per datagram: find the session (5-tuple, or STUN USERNAME for a new
//! address), hand the bytes to its connection, then drain what it produced —
//! datagrams to send, state changes, decrypted RTP and feedback. Publisher RTP
//! goes through the [`Forwarder`](crate::forward::Forwarder), whose actions
//! write RTP into subscribers' connections or PLIs into publishers'. Malformed
//! input is counted and dropped; a connection that errors is closed alone.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rtc::media_stream::{MediaStreamTrack, MediaStreamTrackId};
use rtc::peer_connection::RTCPeerConnection;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::{RTCIceConnectionState, RTCPeerConnectionState};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp_transceiver::rtp_sender::{RTCRtpCodingParameters, RTCRtpEncodingParameters, RtpCodecKind};
use rtc::rtp_transceiver::{RTCRtpReceiverId, RTCRtpSenderId};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use crate::forward::{Action, Codec, DownKey, DownSpec, ForwardConfig, Forwarder, TrackKey, TrackSpec};

pub mod demux;
pub mod offer;
pub mod peer;
pub mod signal;

pub use signal::{NodeReply, NodeRequest, OpenSession, Role, SessionError, SessionInfo, SessionOpened};

/// How long a session may take to connect before it is dropped.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a disconnected session may stay before it is dropped.
pub const DISCONNECTED_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest datagram read.
const DATAGRAM_MAX: usize = 1500;

/// Where the node's media port listens and what it announces.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// Local address of the one UDP port.
    pub udp_listen: SocketAddr,
    /// IPs announced as host candidates, with the bound port; empty means
    /// the bound address (loopback if it is unspecified).
    pub announce: Vec<std::net::IpAddr>,
}

/// Most ICE-TCP connections open at once.
pub const TCP_CONNECTIONS_MAX: usize = 4096;
/// Frames queued towards one ICE-TCP connection before new ones are dropped
/// (media over TCP that cannot keep up is dropped, never buffered without bound).
pub const TCP_QUEUE_MAX: usize = 512;
/// Largest RFC 4571 frame accepted from a client.
const TCP_FRAME_MAX: usize = 1500;

/// Something the log must hear about (the node's reporter appends it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaEvent {
    TrackPublished {
        room_id: String,
        identity: String,
        sid: String,
        track: String,
        kind: RtpKind,
        codec: String,
    },
    TrackUnpublished {
        track: String,
        reason: String,
    },
    /// A participant's session started receiving a track.
    SubscriptionStarted {
        track: String,
        identity: String,
        sid: String,
    },
    /// It stopped (`client_left`, `unpublished`, `switched`, …).
    SubscriptionEnded {
        track: String,
        identity: String,
        sid: String,
        reason: String,
    },
    /// A session ended.
    SessionEnded {
        room_id: String,
        identity: String,
        sid: String,
        session_id: String,
        reason: EndReason,
    },
}

/// Audio or video (kept free of `rtc` types for the reporter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtpKind {
    Audio,
    Video,
}

/// Why a session ended: the log's own reasons (one closed list, shared with
/// the room aggregate, the API and webhooks).
pub use arc_events::room::LeaveReason as EndReason;

/// Live figures of the node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MediaStats {
    pub sessions: u64,
    pub tracks: u64,
    pub packets_in: u64,
    pub packets_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Datagrams from unknown addresses that were not a STUN request for us.
    pub dropped_unknown: u64,
    /// Datagrams a connection refused (malformed, bad auth, replay).
    pub dropped_malformed: u64,
    pub nacks_answered: u64,
    pub keyframe_requests: u64,
    /// Frames dropped because an ICE-TCP connection could not keep up.
    pub dropped_tcp: u64,
}

enum Command {
    Open(OpenSession, oneshot::Sender<Result<SessionOpened, SessionError>>),
    Patch(String, String, oneshot::Sender<Result<Option<String>, SessionError>>),
    Close(String, EndReason, oneshot::Sender<Result<(), SessionError>>),
    /// End the sessions of this participant session (or of everyone) in this room.
    End(String, Option<String>, EndReason, oneshot::Sender<usize>),
    /// A page of the sessions held, after this session id.
    Sessions(Option<String>, oneshot::Sender<(Vec<SessionInfo>, bool)>),
    Mute(String, bool, oneshot::Sender<bool>),
    Stats(oneshot::Sender<MediaStats>),
    /// Draining: refuse sessions for rooms this node does not already carry.
    SetDraining(bool),
    Shutdown(oneshot::Sender<()>),
}

/// A cheap, cloneable way to talk to the node's media task.
#[derive(Debug, Clone)]
pub struct MediaHandle {
    tx: mpsc::Sender<Command>,
    local: SocketAddr,
    sessions: Arc<AtomicU64>,
}

impl MediaHandle {
    /// The UDP address the media port is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Live sessions (cheap; no round trip).
    pub fn session_count(&self) -> u64 {
        self.sessions.load(Ordering::Relaxed)
    }

    pub async fn open(&self, req: OpenSession) -> Result<SessionOpened, SessionError> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Command::Open(req, tx)).await.map_err(|_| SessionError::Unavailable)?;
        rx.await.map_err(|_| SessionError::Unavailable)?
    }

    /// Trickle ICE; answers a fragment to send back, if any.
    pub async fn patch(&self, session_id: &str, fragment: &str) -> Result<Option<String>, SessionError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Patch(session_id.to_owned(), fragment.to_owned(), tx))
            .await
            .map_err(|_| SessionError::Unavailable)?;
        rx.await.map_err(|_| SessionError::Unavailable)?
    }

    pub async fn close(&self, session_id: &str) -> Result<(), SessionError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Command::Close(session_id.to_owned(), EndReason::ClientLeft, tx))
            .await
            .map_err(|_| SessionError::Unavailable)?;
        rx.await.map_err(|_| SessionError::Unavailable)?
    }

    /// Ends the sessions of one participant session (`sid`) or of everyone
    /// in a room; answers how many ended.
    pub async fn end(&self, room_id: &str, sid: Option<&str>, reason: EndReason) -> usize {
        let (tx, rx) = oneshot::channel();
        let cmd = Command::End(room_id.to_owned(), sid.map(str::to_owned), reason, tx);
        if self.tx.send(cmd).await.is_err() {
            return 0;
        }
        rx.await.unwrap_or(0)
    }

    /// Mutes or unmutes a published track by its log id; answers whether it is here.
    pub async fn mute(&self, track_id: &str, muted: bool) -> bool {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Mute(track_id.to_owned(), muted, tx)).await.is_err() {
            return false;
        }
        rx.await.unwrap_or(false)
    }

    /// A page of the sessions held (ordered by session id, after `after`),
    /// and whether more follow.
    pub async fn sessions(&self, after: Option<&str>) -> (Vec<SessionInfo>, bool) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Sessions(after.map(str::to_owned), tx)).await.is_err() {
            return (Vec::new(), false);
        }
        rx.await.unwrap_or_default()
    }

    pub async fn stats(&self) -> MediaStats {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Stats(tx)).await.is_err() {
            return MediaStats::default();
        }
        rx.await.unwrap_or_default()
    }

    /// Starts or stops draining: while draining, only rooms this node already
    /// carries get new sessions; new rooms are refused (`Draining`).
    pub async fn set_draining(&self, draining: bool) {
        let _ = self.tx.send(Command::SetDraining(draining)).await;
    }

    /// Ends every session (reason `node_shutdown`) and stops the task.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Command::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Answers one request as it comes over NATS.
    pub async fn serve(&self, req: NodeRequest) -> NodeReply {
        match req {
            NodeRequest::Open(open) => match self.open(open).await {
                Ok(o) => NodeReply::Opened(o),
                Err(e) => NodeReply::Error(e),
            },
            NodeRequest::Patch { session_id, fragment } => match self.patch(&session_id, &fragment).await {
                Ok(fragment) => NodeReply::Patched { fragment },
                Err(e) => NodeReply::Error(e),
            },
            NodeRequest::Close { session_id } => match self.close(&session_id).await {
                Ok(()) => NodeReply::Closed,
                Err(e) => NodeReply::Error(e),
            },
            NodeRequest::End { room_id, sid, reason } => {
                NodeReply::Ended { sessions: self.end(&room_id, sid.as_ref().map(|s| s.as_str()), reason).await }
            }
            NodeRequest::Mute { track_id, muted } => NodeReply::Muted { found: self.mute(&track_id, muted).await },
            NodeRequest::Sessions { after } => {
                let (sessions, more) = self.sessions(after.as_deref()).await;
                NodeReply::Sessions { sessions, more }
            }
        }
    }
}

/// Binds the media port and starts the media task. Events for the log go to
/// `events` (unbounded: the log is the queue, nothing is dropped here).
pub async fn start(
    config: MediaConfig,
    events: mpsc::UnboundedSender<MediaEvent>,
) -> std::io::Result<(MediaHandle, tokio::task::JoinHandle<()>)> {
    // UDP, and ICE-TCP (RFC 6544, passive, RFC 4571 framing) on the same
    // port number. With port 0, try a few free UDP ports until TCP binds too.
    let mut attempt = 0;
    let (socket, local, tcp) = loop {
        let socket = UdpSocket::bind(config.udp_listen).await?;
        let local = socket.local_addr()?;
        match tokio::net::TcpListener::bind(local).await {
            Ok(tcp) => break (socket, local, tcp),
            Err(e) if config.udp_listen.port() != 0 || attempt >= 10 => return Err(e),
            Err(_) => attempt += 1,
        }
    };
    let tcp_local = tcp.local_addr()?;
    let (tcp_tx, tcp_rx) = mpsc::channel::<TcpIn>(1024);
    tokio::spawn(accept_tcp(tcp, tcp_tx));
    let announce: Vec<SocketAddr> = if config.announce.is_empty() {
        let ip = if local.ip().is_unspecified() { std::net::Ipv4Addr::LOCALHOST.into() } else { local.ip() };
        vec![SocketAddr::new(ip, local.port())]
    } else {
        config.announce.iter().map(|ip| SocketAddr::new(*ip, local.port())).collect()
    };
    let tcp_announce: Vec<SocketAddr> = announce.iter().map(|a| SocketAddr::new(a.ip(), tcp_local.port())).collect();
    let (tx, rx) = mpsc::channel(256);
    let sessions = Arc::new(AtomicU64::new(0));
    let node = Node {
        socket,
        local,
        tcp_local,
        announce,
        tcp_announce,
        tcp_writers: HashMap::new(),
        events,
        sessions: HashMap::new(),
        by_addr: HashMap::new(),
        by_ufrag: HashMap::new(),
        by_id: HashMap::new(),
        timers: BinaryHeap::new(),
        dirty: Vec::new(),
        outbox: Vec::new(),
        forwarder: Forwarder::new(ForwardConfig::default()),
        track_owner: HashMap::new(),
        down_owner: HashMap::new(),
        next_key: 1,
        publish_order: 0,
        stats: MediaStats::default(),
        session_gauge: sessions.clone(),
        draining: false,
        certificate: peer::certificate().map_err(|e| std::io::Error::other(format!("DTLS certificate: {e}")))?,
    };
    let task = tokio::spawn(node.run(rx, tcp_rx));
    Ok((MediaHandle { tx, local, sessions }, task))
}

/// One publisher track inside a session.
#[derive(Debug)]
struct InTrack {
    key: Option<TrackKey>,
    receiver: RTCRtpReceiverId,
    kind: RtpKind,
    codec: Option<Codec>,
    media_ssrc: u32,
    event_id: String,
    published_at: u64,
}

/// One subscriber stream inside a session.
#[derive(Debug)]
struct OutTrack {
    down: DownKey,
    sender: RTCRtpSenderId,
    kind: RtpKind,
    ssrc: u32,
    /// Negotiated payload type per codec.
    pts: Vec<(Codec, u8)>,
    audio_level_ext: Option<u8>,
}

struct Session {
    id: String,
    room_id: String,
    identity: String,
    sid: String,
    role: Role,
    pc: RTCPeerConnection,
    ufrag: String,
    addrs: Vec<(SocketAddr, bool)>,
    inbound: HashMap<MediaStreamTrackId, InTrack>,
    outbound: Vec<OutTrack>,
    created: Instant,
    connected: bool,
    disconnected_since: Option<Instant>,
    next_timeout: Option<Instant>,
    dirty: bool,
    ended: Option<EndReason>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.id)
            .field("room_id", &self.room_id)
            .field("identity", &self.identity)
            .finish()
    }
}

type Key = u32;

struct Node {
    socket: UdpSocket,
    local: SocketAddr,
    tcp_local: SocketAddr,
    announce: Vec<SocketAddr>,
    tcp_announce: Vec<SocketAddr>,
    /// Writers of open ICE-TCP connections, by the client's address.
    tcp_writers: HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>,
    events: mpsc::UnboundedSender<MediaEvent>,
    sessions: HashMap<Key, Session>,
    /// (address, over TCP) → session.
    by_addr: HashMap<(SocketAddr, bool), Key>,
    by_ufrag: HashMap<String, Key>,
    /// Session resource id → its legs (one per transport of the offer; one
    /// for any bundled offer).
    by_id: HashMap<String, Vec<Key>>,
    timers: BinaryHeap<Reverse<(Instant, Key)>>,
    dirty: Vec<Key>,
    outbox: Vec<(SocketAddr, BytesMut, bool)>,
    forwarder: Forwarder,
    track_owner: HashMap<TrackKey, (Key, MediaStreamTrackId)>,
    down_owner: HashMap<DownKey, Key>,
    next_key: u32,
    publish_order: u64,
    stats: MediaStats,
    session_gauge: Arc<AtomicU64>,
    draining: bool,
    /// The DTLS certificate of every new session (see [`peer::certificate`]).
    certificate: rtc::peer_connection::certificate::RTCCertificate,
}

/// A new DTLS certificate is made this long before the current one expires.
const CERTIFICATE_RENEW_MARGIN: Duration = Duration::from_secs(24 * 3600);

fn random_token(n: usize) -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = rand::rng();
    (0..n).map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())])).collect()
}

fn kind_of(k: RtpCodecKind) -> Option<RtpKind> {
    match k {
        RtpCodecKind::Audio => Some(RtpKind::Audio),
        RtpCodecKind::Video => Some(RtpKind::Video),
        _ => None,
    }
}

fn rtc_kind(k: RtpKind) -> RtpCodecKind {
    match k {
        RtpKind::Audio => RtpCodecKind::Audio,
        RtpKind::Video => RtpCodecKind::Video,
    }
}

/// The media kinds an offer has m-lines for, and the codec names it offers.
fn offered(sdp: &str) -> (Vec<RtpKind>, Vec<String>) {
    let mut kinds = Vec::new();
    let mut codecs = Vec::new();
    for line in sdp.lines() {
        let line = line.trim_end();
        if let Some(m) = line.strip_prefix("m=") {
            let port_nonzero = m.split_whitespace().nth(1).is_some_and(|p| p != "0");
            if m.starts_with("audio ") && port_nonzero {
                kinds.push(RtpKind::Audio);
            } else if m.starts_with("video ") && port_nonzero {
                kinds.push(RtpKind::Video);
            }
        } else if let Some(r) = line.strip_prefix("a=rtpmap:")
            && let Some(name) = r.split_whitespace().nth(1).and_then(|n| n.split('/').next())
            && !codecs.iter().any(|c: &String| c.eq_ignore_ascii_case(name))
        {
            codecs.push(name.to_owned());
        }
    }
    (kinds, codecs)
}

impl Node {
    /// The local address to tell `rtc` a datagram from `from` arrived at.
    /// `rtc` discards ICE checks whose local address is not one of its
    /// candidates, and the candidates are the announced addresses: a socket
    /// bound to every interface (`0.0.0.0`, the default) or to a private IP
    /// behind a 1:1 NAT is not among them. So: the bound address when it is
    /// announced, else the announced address of the sender's family.
    fn local_for(&self, from: SocketAddr, tcp: bool) -> SocketAddr {
        let (bound, announced) = if tcp { (self.tcp_local, &self.tcp_announce) } else { (self.local, &self.announce) };
        if announced.contains(&bound) {
            return bound;
        }
        announced.iter().find(|a| a.is_ipv4() == from.is_ipv4()).or(announced.first()).copied().unwrap_or(bound)
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Command>, mut tcp_rx: mpsc::Receiver<TcpIn>) {
        let mut buf = vec![0u8; DATAGRAM_MAX];
        let mut housekeeping = tokio::time::interval(Duration::from_millis(500));
        housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let deadline = self
                .timers
                .peek()
                .map(|Reverse((t, _))| *t)
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                biased;
                cmd = rx.recv() => match cmd {
                    None => { self.end_all(EndReason::NodeShutdown); self.flush().await; return; }
                    Some(Command::Shutdown(done)) => {
                        self.end_all(EndReason::NodeShutdown);
                        self.flush().await;
                        let _ = done.send(());
                        return;
                    }
                    Some(c) => self.on_command(c),
                },
                r = self.socket.recv_from(&mut buf) => match r {
                    Ok((n, from)) => self.on_datagram(Instant::now(), from, &buf[..n], false),
                    Err(e) => tracing::debug!(error = %e, "media socket read"),
                },
                Some(t) = tcp_rx.recv() => match t {
                    TcpIn::Open(peer, writer) => {
                        if self.tcp_writers.len() < TCP_CONNECTIONS_MAX {
                            self.tcp_writers.insert(peer, writer);
                        }
                    }
                    TcpIn::Frame(peer, frame) => {
                        if self.tcp_writers.contains_key(&peer) {
                            self.on_datagram(Instant::now(), peer, &frame, true);
                        }
                    }
                    TcpIn::Closed(peer) => {
                        self.tcp_writers.remove(&peer);
                        self.by_addr.remove(&(peer, true));
                    }
                },
                () = tokio::time::sleep_until(deadline.into()) => self.on_timers(Instant::now()),
                _ = housekeeping.tick() => self.housekeeping(Instant::now()),
            }
            self.flush().await;
        }
    }

    fn mark(&mut self, key: Key) {
        if let Some(s) = self.sessions.get_mut(&key)
            && !s.dirty
        {
            s.dirty = true;
            self.dirty.push(key);
        }
    }

    fn on_command(&mut self, cmd: Command) {
        match cmd {
            Command::Open(req, reply) => {
                let r = self.open(req);
                let _ = reply.send(r);
            }
            Command::Patch(id, frag, reply) => {
                let r = self.patch(&id, &frag);
                let _ = reply.send(r);
            }
            Command::Close(id, reason, reply) => {
                let r = match self.by_id.get(&id).and_then(|legs| legs.first()).copied() {
                    Some(k) => {
                        self.end(k, reason);
                        Ok(())
                    }
                    None => Err(SessionError::NotFound),
                };
                let _ = reply.send(r);
            }
            Command::End(room, sid, reason, reply) => {
                let keys: Vec<Key> = self
                    .sessions
                    .iter()
                    .filter(|(_, s)| s.room_id == room && sid.as_ref().is_none_or(|i| *i == s.sid))
                    .map(|(k, _)| *k)
                    .collect();
                for k in &keys {
                    self.end(*k, reason);
                }
                let _ = reply.send(keys.len());
            }
            Command::Mute(track_id, muted, reply) => {
                let now = Instant::now();
                let key = self
                    .sessions
                    .values()
                    .flat_map(|s| s.inbound.values())
                    .find(|t| t.event_id == track_id)
                    .and_then(|t| t.key);
                if let Some(k) = key {
                    let mut actions = Vec::new();
                    self.forwarder.set_track_muted(now, k, muted, &mut actions);
                    self.apply(now, actions);
                }
                let _ = reply.send(key.is_some());
            }
            Command::Sessions(after, reply) => {
                let now = Instant::now();
                let mut page: Vec<&Session> = self
                    .sessions
                    .values()
                    .filter(|s| after.as_ref().is_none_or(|a| s.id.as_str() > a.as_str()))
                    .collect();
                page.sort_unstable_by(|a, b| a.id.cmp(&b.id));
                let more = page.len() > signal::SESSIONS_PAGE_MAX;
                page.truncate(signal::SESSIONS_PAGE_MAX);
                let infos = page
                    .into_iter()
                    .filter_map(|s| {
                        Some(SessionInfo {
                            session_id: s.id.clone(),
                            room_id: s.room_id.clone(),
                            identity: s.identity.clone(),
                            sid: arc_events::ParticipantSid::parse(&s.sid).ok()?,
                            role: if s.role == Role::Publish { "publish" } else { "subscribe" }.to_owned(),
                            connected: s.connected,
                            age_ms: u64::try_from(now.saturating_duration_since(s.created).as_millis())
                                .unwrap_or(u64::MAX),
                        })
                    })
                    .collect();
                let _ = reply.send((infos, more));
            }
            Command::Stats(reply) => {
                let f = self.forwarder.stats();
                let mut s = self.stats;
                s.sessions = self.sessions.len() as u64;
                s.tracks = self.forwarder.track_count() as u64;
                s.packets_in = f.packets_in;
                s.packets_out = f.packets_out;
                s.bytes_in = f.bytes_in;
                s.bytes_out = f.bytes_out;
                s.nacks_answered = f.nacks_answered;
                s.keyframe_requests = f.keyframe_requests;
                let _ = reply.send(s);
            }
            Command::SetDraining(d) => {
                if d != self.draining {
                    tracing::info!(draining = d, sessions = self.sessions.len(), "drain state changed");
                }
                self.draining = d;
            }
            Command::Shutdown(_) => {}
        }
    }

    fn open(&mut self, req: OpenSession) -> Result<SessionOpened, SessionError> {
        if self.draining && !self.sessions.values().any(|s| s.room_id == req.room_id) {
            return Err(SessionError::Draining);
        }
        if !req.offer.trim_start().starts_with("v=0") {
            return Err(SessionError::BadSdp { reason: "an SDP offer starts with v=0".into() });
        }
        // No codec in common is the clearest thing to say first.
        let (_, offered_codecs) = offered(&req.offer);
        let supported = peer::codec_names();
        if !offered_codecs
            .iter()
            .any(|c| supported.iter().any(|s| s.rsplit('/').next().is_some_and(|s| s.eq_ignore_ascii_case(c))))
        {
            return Err(SessionError::NoCommonCodec { offered: offered_codecs, supported });
        }
        // One leg (peer connection) per transport of the offer: one for any
        // bundled offer, one per m-line for an offer without BUNDLE.
        let plan = offer::plan(&req.offer).map_err(|e| SessionError::BadSdp { reason: e.to_string() })?;
        let id = format!("se_{}", random_token(20));
        let mut legs = Vec::with_capacity(plan.parts.len());
        let mut answers = Vec::with_capacity(plan.parts.len());
        for part in &plan.parts {
            match self.open_leg(&req, &part.sdp, &id) {
                Ok((key, answer)) => {
                    legs.push(key);
                    answers.push(answer);
                }
                Err(e) => {
                    for key in legs {
                        self.discard(key);
                    }
                    return Err(e);
                }
            }
        }
        let answer = plan.merge(&answers).map_err(|e| SessionError::BadSdp { reason: e.to_string() })?;
        for key in &legs {
            self.mark(*key);
        }
        self.by_id.insert(id.clone(), legs.clone());
        self.session_gauge.store(self.sessions.len() as u64, Ordering::Relaxed);
        tracing::info!(session = %id, legs = legs.len(), room = %req.room_id, identity = %req.identity, role = ?req.role, "session opened");
        Ok(SessionOpened { session_id: id, answer })
    }

    /// Removes a leg that was never handed out (its sibling failed to open):
    /// nothing was published or reported for it.
    fn discard(&mut self, key: Key) {
        let Some(mut s) = self.sessions.remove(&key) else { return };
        let _ = s.pc.close();
        self.by_ufrag.remove(&s.ufrag);
        for o in &s.outbound {
            self.forwarder.remove_down(o.down);
            self.down_owner.remove(&o.down);
        }
    }

    /// Opens one peer connection for one transport's offer; answers its key
    /// and SDP answer.
    fn open_leg(&mut self, req: &OpenSession, offer: &str, id: &str) -> Result<(Key, String), SessionError> {
        let now = Instant::now();
        let (kinds, offered_codecs) = offered(offer);
        if kinds.is_empty() {
            return Err(SessionError::BadSdp { reason: "the offer has no audio or video m-line".into() });
        }
        let supported = peer::codec_names();
        if !offered_codecs
            .iter()
            .any(|c| supported.iter().any(|s| s.rsplit('/').next().is_some_and(|s| s.eq_ignore_ascii_case(c))))
        {
            return Err(SessionError::NoCommonCodec { offered: offered_codecs, supported });
        }
        let ufrag = loop {
            let u = random_token(16);
            if !self.by_ufrag.contains_key(&u) {
                break u;
            }
        };
        let pwd = random_token(32);
        let internal = |e: rtc::shared::error::Error| SessionError::Internal { message: e.to_string() };
        if peer::expires_within(&self.certificate, CERTIFICATE_RENEW_MARGIN) {
            self.certificate = peer::certificate().map_err(internal)?;
        }
        let mut pc = peer::build(&ufrag, &pwd, now, &self.certificate).map_err(internal)?;
        let key = self.next_key;
        self.next_key = self.next_key.wrapping_add(1).max(1);
        let mut outbound = Vec::new();
        if let Role::Subscribe { .. } = &req.role {
            for kind in &kinds {
                let source_codec = self.source_for(&req.room_id, &req.role, *kind).and_then(|t| self.codec_of(t));
                let codec = source_codec.unwrap_or(if *kind == RtpKind::Video { Codec::Vp8 } else { Codec::Opus });
                let Some(params) = peer::codecs()
                    .into_iter()
                    .find(|(k, c)| *k == rtc_kind(*kind) && Codec::from_mime(&c.rtp_codec.mime_type) == codec)
                    .map(|(_, c)| c)
                else {
                    continue;
                };
                let ssrc: u32 = rand::random();
                let track = MediaStreamTrack::new(
                    format!("arc-{}", req.room_id),
                    format!("arc-{}-{}", if *kind == RtpKind::Video { "video" } else { "audio" }, key),
                    format!("{kind:?}").to_lowercase(),
                    rtc_kind(*kind),
                    vec![RTCRtpEncodingParameters {
                        rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(ssrc), ..Default::default() },
                        codec: params.rtp_codec,
                        ..Default::default()
                    }],
                );
                let sender = pc.add_track(track).map_err(internal)?;
                outbound.push(OutTrack {
                    down: DownKey(key << 4 | outbound.len() as u32),
                    sender,
                    kind: *kind,
                    ssrc,
                    pts: Vec::new(),
                    audio_level_ext: None,
                });
            }
        }
        let offer = RTCSessionDescription::offer(offer.to_owned())
            .map_err(|e| SessionError::BadSdp { reason: e.to_string() })?;
        pc.set_remote_description(now, offer).map_err(|e| SessionError::BadSdp { reason: e.to_string() })?;
        peer::add_host_candidates(&mut pc, &self.announce, &self.tcp_announce).map_err(internal)?;
        let answer = pc.create_answer(None).map_err(|e| match e {
            rtc::shared::error::Error::ErrRTPTransceiverCodecUnsupported
            | rtc::shared::error::Error::ErrCodecNotFound => {
                SessionError::NoCommonCodec { offered: offered_codecs.clone(), supported: supported.clone() }
            }
            other => SessionError::BadSdp { reason: other.to_string() },
        })?;
        pc.set_local_description(now, answer).map_err(internal)?;
        let answer = pc
            .local_description()
            .map(|d| d.sdp.clone())
            .ok_or_else(|| SessionError::Internal { message: "no local description".into() })?;
        if !answer.lines().any(|l| l.starts_with("a=rtpmap:")) {
            return Err(SessionError::NoCommonCodec { offered: offered_codecs, supported });
        }
        // What the subscriber negotiated, per stream.
        for out in &mut outbound {
            if let Some(mut sender) = pc.rtp_sender(out.sender) {
                let params = sender.get_parameters();
                out.pts = params
                    .rtp_parameters
                    .codecs
                    .iter()
                    .map(|c| (Codec::from_mime(&c.rtp_codec.mime_type), c.payload_type))
                    .collect();
                out.audio_level_ext = params
                    .rtp_parameters
                    .header_extensions
                    .iter()
                    .find(|h| h.uri == rtc::sdp::extmap::AUDIO_LEVEL_URI)
                    .and_then(|h| u8::try_from(h.id).ok());
            }
        }
        outbound.retain(|o| !o.pts.is_empty());
        let session = Session {
            id: id.to_owned(),
            room_id: req.room_id.clone(),
            identity: req.identity.clone(),
            sid: req.sid.clone(),
            role: req.role.clone(),
            pc,
            ufrag: ufrag.clone(),
            addrs: Vec::new(),
            inbound: HashMap::new(),
            outbound,
            created: now,
            connected: false,
            disconnected_since: None,
            next_timeout: None,
            dirty: false,
            ended: None,
        };
        self.sessions.insert(key, session);
        self.by_ufrag.insert(ufrag, key);
        // Subscriber streams are registered now and start forwarding once the
        // session is connected (a keyframe sent before DTLS completes is lost).
        let downs: Vec<(DownKey, u32, Option<u8>)> =
            self.sessions[&key].outbound.iter().map(|o| (o.down, o.ssrc, o.audio_level_ext)).collect();
        let mut actions = Vec::new();
        for (down, ssrc, ext) in downs {
            self.down_owner.insert(down, key);
            let spec = DownSpec { ssrc, payload_type: 0, audio_level_ext: ext };
            let _ = self.forwarder.add_down(now, down, spec, None, &mut actions);
        }
        Ok((key, answer))
    }

    fn patch(&mut self, id: &str, fragment: &str) -> Result<Option<String>, SessionError> {
        let legs = self.by_id.get(id).ok_or(SessionError::NotFound)?;
        let mut ufrag = None;
        for line in fragment.lines().map(str::trim_end) {
            if let Some(u) = line.strip_prefix("a=ice-ufrag:") {
                ufrag = Some(u.to_owned());
            } else if let Some(c) = line.strip_prefix("a=candidate:") {
                // ICE-lite: the client's candidates are not needed (it checks us);
                // a malformed one is still refused.
                if c.split_whitespace().count() < 8 {
                    return Err(SessionError::BadSdp { reason: format!("malformed candidate line: a=candidate:{c}") });
                }
            } else if !(line.is_empty()
                || line.starts_with("a=ice-pwd:")
                || line.starts_with("a=mid:")
                || line.starts_with("m=")
                || line.starts_with("a=end-of-candidates")
                || line.starts_with("a=group:")
                || line.starts_with("a=ice-options:"))
            {
                return Err(SessionError::BadSdp {
                    reason: format!("unexpected line in a trickle-ice-sdpfrag: {line}"),
                });
            }
        }
        if let Some(u) = ufrag {
            // The ufrag of one of the session's transports: trickle, not a restart.
            let known = legs.iter().filter_map(|k| self.sessions.get(k)).any(|session| {
                session.pc.remote_description().is_some_and(|d| {
                    d.sdp.lines().any(|l| l.trim_end().strip_prefix("a=ice-ufrag:") == Some(u.as_str()))
                })
            });
            if !known {
                return Err(SessionError::BadSdp {
                    reason: "ICE restart is not supported by this node; DELETE the session and POST a new offer".into(),
                });
            }
        }
        Ok(None)
    }

    fn codec_of(&self, track: TrackKey) -> Option<Codec> {
        let (k, tid) = self.track_owner.get(&track)?;
        self.sessions.get(k)?.inbound.get(tid)?.codec
    }

    fn pt_for(&self, key: Key, down: DownKey, codec: Codec) -> Option<u8> {
        let s = self.sessions.get(&key)?;
        let o = s.outbound.iter().find(|o| o.down == down)?;
        o.pts.iter().find(|(c, _)| *c == codec).map(|(_, pt)| *pt)
    }

    /// The track a subscriber of `kind` in `room` should see: the latest
    /// published one, or the named participant's.
    fn source_for(&self, room: &str, role: &Role, kind: RtpKind) -> Option<TrackKey> {
        let want = match role {
            Role::Subscribe { participant } => participant.as_deref(),
            Role::Publish => return None,
        };
        self.sessions
            .values()
            .filter(|s| s.room_id == room && s.role == Role::Publish && s.ended.is_none())
            .filter(|s| want.is_none_or(|w| s.identity == w))
            .flat_map(|s| s.inbound.values())
            .filter(|t| t.kind == kind && t.key.is_some())
            .max_by_key(|t| t.published_at)
            .and_then(|t| t.key)
    }

    fn on_datagram(&mut self, now: Instant, from: SocketAddr, data: &[u8], tcp: bool) {
        let key = match self.by_addr.get(&(from, tcp)) {
            Some(k) => *k,
            None => {
                let found = match demux::classify(data) {
                    demux::PacketClass::Stun => {
                        demux::stun_local_ufrag(data).and_then(|u| self.by_ufrag.get(u)).copied()
                    }
                    _ => None,
                };
                let Some(k) = found else {
                    self.stats.dropped_unknown += 1;
                    return;
                };
                self.by_addr.insert((from, tcp), k);
                if let Some(s) = self.sessions.get_mut(&k) {
                    s.addrs.push((from, tcp));
                }
                k
            }
        };
        let local_addr = self.local_for(from, tcp);
        let Some(session) = self.sessions.get_mut(&key) else {
            self.by_addr.remove(&(from, tcp));
            self.stats.dropped_unknown += 1;
            return;
        };
        let msg = TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr,
                peer_addr: from,
                ecn: None,
                transport_protocol: if tcp { TransportProtocol::TCP } else { TransportProtocol::UDP },
            },
            message: BytesMut::from(data),
        };
        if let Err(e) = session.pc.handle_read(msg) {
            self.stats.dropped_malformed += 1;
            tracing::trace!(session = %session.id, error = %e, "datagram refused");
        }
        self.mark(key);
    }

    fn on_timers(&mut self, now: Instant) {
        while let Some(Reverse((t, key))) = self.timers.peek().copied() {
            if t > now {
                break;
            }
            self.timers.pop();
            let Some(s) = self.sessions.get_mut(&key) else { continue };
            if s.next_timeout != Some(t) {
                continue;
            }
            s.next_timeout = None;
            if let Err(e) = s.pc.handle_timeout(now) {
                tracing::debug!(session = %s.id, error = %e, "timeout handling failed");
            }
            self.mark(key);
        }
    }

    fn housekeeping(&mut self, now: Instant) {
        let mut stale = Vec::new();
        for (k, s) in &self.sessions {
            let never_connected = !s.connected && now.saturating_duration_since(s.created) > CONNECT_TIMEOUT;
            let gone = s.disconnected_since.is_some_and(|t| now.saturating_duration_since(t) > DISCONNECTED_TIMEOUT);
            if never_connected || gone {
                stale.push(*k);
            }
        }
        for k in stale {
            self.end(k, EndReason::ConnectionLost);
        }
    }

    /// Drains every session that has something to say, until none has.
    async fn flush(&mut self) {
        let now = Instant::now();
        while let Some(key) = self.dirty.pop() {
            self.drain(now, key);
        }
        for (to, bytes, tcp) in std::mem::take(&mut self.outbox) {
            if tcp {
                let Some(writer) = self.tcp_writers.get(&to) else { continue };
                if writer.try_send(rtc::shared::tcp_framing::frame_packet(&bytes)).is_err() {
                    self.stats.dropped_tcp += 1;
                }
            } else if let Err(e) = self.socket.send_to(&bytes, to).await {
                tracing::trace!(%to, error = %e, "media socket write");
            }
        }
    }

    fn drain(&mut self, now: Instant, key: Key) {
        let mut actions = Vec::new();
        let mut new_tracks = Vec::new();
        let mut feedback: Vec<(DownKey, Feedback)> = Vec::new();
        let mut state_change = None;
        {
            let Some(s) = self.sessions.get_mut(&key) else { return };
            s.dirty = false;
            while let Some(msg) = s.pc.poll_write() {
                self.outbox.push((
                    msg.transport.peer_addr,
                    msg.message,
                    msg.transport.transport_protocol == TransportProtocol::TCP,
                ));
            }
            while let Some(ev) = s.pc.poll_event() {
                match ev {
                    RTCPeerConnectionEvent::OnConnectionStateChangeEvent(st) => state_change = Some(st),
                    RTCPeerConnectionEvent::OnIceConnectionStateChangeEvent(st) => {
                        if st == RTCIceConnectionState::Disconnected {
                            s.disconnected_since.get_or_insert(now);
                        } else if st == RTCIceConnectionState::Connected {
                            s.disconnected_since = None;
                        }
                    }
                    RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                        let kind =
                            s.pc.rtp_receiver(init.receiver_id)
                                .and_then(|r| kind_of(r.track().kind()))
                                .unwrap_or(RtpKind::Video);
                        s.inbound.insert(
                            init.track_id.clone(),
                            InTrack {
                                key: None,
                                receiver: init.receiver_id,
                                kind,
                                codec: None,
                                media_ssrc: 0,
                                event_id: String::new(),
                                published_at: 0,
                            },
                        );
                    }
                    _ => {}
                }
            }
            while let Some(msg) = s.pc.poll_read() {
                match msg.message {
                    RTCMessage::RtpPacket(track_id, packet) => {
                        let Some(t) = s.inbound.get_mut(&track_id) else { continue };
                        let tk = match t.key {
                            Some(k) => k,
                            None => {
                                // First packet: learn the codec and publish the track.
                                let pt = packet.header.payload_type;
                                let (codec, ext) = match s.pc.rtp_receiver(t.receiver) {
                                    Some(mut r) => {
                                        let p = r.get_parameters();
                                        let codec = p
                                            .rtp_parameters
                                            .codecs
                                            .iter()
                                            .find(|c| c.payload_type == pt)
                                            .map(|c| c.rtp_codec.mime_type.clone());
                                        let ext = p
                                            .rtp_parameters
                                            .header_extensions
                                            .iter()
                                            .find(|h| h.uri == rtc::sdp::extmap::AUDIO_LEVEL_URI)
                                            .and_then(|h| u8::try_from(h.id).ok());
                                        (codec, ext)
                                    }
                                    None => (None, None),
                                };
                                let Some(mime) = codec else { continue };
                                let tk = TrackKey(key << 4 | (s.inbound.len() as u32 & 0xf));
                                let tk = if self.track_owner.contains_key(&tk) {
                                    TrackKey(self.next_key.wrapping_add(0x8000_0000))
                                } else {
                                    tk
                                };
                                let Some(t) = s.inbound.get_mut(&track_id) else { continue };
                                t.key = Some(tk);
                                t.codec = Some(Codec::from_mime(&mime));
                                t.media_ssrc = packet.header.ssrc;
                                self.publish_order += 1;
                                t.published_at = self.publish_order;
                                t.event_id = arc_events::TrackId::generate().to_string();
                                new_tracks.push((tk, track_id.clone(), t.kind, mime, ext, t.event_id.clone()));
                                tk
                            }
                        };
                        if new_tracks.iter().any(|n| n.0 == tk) {
                            // Registered below, after this borrow; forward from the next packet.
                            continue;
                        }
                        self.forwarder.on_rtp(now, tk, &packet, &mut actions);
                    }
                    RTCMessage::RtcpPacket(_, packets) => {
                        for p in packets {
                            let any = p.as_any();
                            let (media_ssrc, fb) = if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
                                (pli.media_ssrc, Feedback::Keyframe)
                            } else if let Some(fir) = any.downcast_ref::<FullIntraRequest>() {
                                (fir.fir.first().map_or(fir.media_ssrc, |e| e.ssrc), Feedback::Keyframe)
                            } else if let Some(nack) = any.downcast_ref::<TransportLayerNack>() {
                                let lost: Vec<u16> = nack.nacks.iter().flat_map(|n| n.packet_list()).collect();
                                (nack.media_ssrc, Feedback::Nack(lost))
                            } else {
                                continue;
                            };
                            if let Some(o) = s.outbound.iter().find(|o| o.ssrc == media_ssrc) {
                                feedback.push((o.down, fb));
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        if let Some(st) = state_change {
            self.on_state(now, key, st);
        }
        for (tk, track_id, kind, mime, ext, event_id) in new_tracks {
            self.add_source(now, key, tk, track_id, kind, mime, ext, event_id, &mut actions);
        }
        for (down, fb) in feedback {
            match fb {
                Feedback::Keyframe => self.forwarder.on_keyframe_request(now, down, &mut actions),
                Feedback::Nack(lost) => self.forwarder.on_nack(down, lost, &mut actions),
            }
        }
        self.apply(now, actions);
        if let Some(s) = self.sessions.get_mut(&key) {
            // Anything the work above produced for this session goes out too.
            while let Some(msg) = s.pc.poll_write() {
                self.outbox.push((
                    msg.transport.peer_addr,
                    msg.message,
                    msg.transport.transport_protocol == TransportProtocol::TCP,
                ));
            }
            let t = s.pc.poll_timeout();
            if t != s.next_timeout {
                s.next_timeout = t;
                if let Some(t) = t {
                    self.timers.push(Reverse((t, key)));
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn add_source(
        &mut self,
        now: Instant,
        key: Key,
        tk: TrackKey,
        track_id: MediaStreamTrackId,
        kind: RtpKind,
        mime: String,
        ext: Option<u8>,
        event_id: String,
        actions: &mut Vec<Action>,
    ) {
        let codec = Codec::from_mime(&mime);
        if self.forwarder.add_track(tk, TrackSpec { codec, audio_level_ext: ext }).is_err() {
            return;
        }
        self.track_owner.insert(tk, (key, track_id));
        let Some(s) = self.sessions.get(&key) else { return };
        let (room, identity, sid) = (s.room_id.clone(), s.identity.clone(), s.sid.clone());
        let _ = self.events.send(MediaEvent::TrackPublished {
            room_id: room.clone(),
            identity: identity.clone(),
            sid,
            track: event_id,
            kind,
            codec: mime,
        });
        tracing::info!(room = %room, %identity, ?kind, ?codec, "track published");
        // Subscribers in the room that follow the latest publisher (or this one) switch to it.
        let subs: Vec<(Key, DownKey)> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.room_id == room && s.ended.is_none() && s.connected)
            .filter(|(_, s)| match &s.role {
                Role::Subscribe { participant } => participant.as_deref().is_none_or(|p| p == identity),
                Role::Publish => false,
            })
            .flat_map(|(k, s)| s.outbound.iter().filter(|o| o.kind == kind).map(move |o| (*k, o.down)))
            .collect();
        for (sk, down) in subs {
            let Some(pt) = self.pt_for(sk, down, codec) else {
                tracing::debug!(?down, ?codec, "subscriber did not negotiate the new source's codec");
                continue;
            };
            let old = self.forwarder.source_of(down);
            self.forwarder.set_payload_type(down, pt);
            if self.forwarder.switch(now, down, tk, actions).is_ok() && old != Some(tk) {
                if let Some(old) = old {
                    self.report_subscription(sk, self.track_event_id(old), Some("switched"));
                }
                self.report_subscription(sk, self.track_event_id(tk), None);
            }
        }
    }

    fn on_state(&mut self, now: Instant, key: Key, st: RTCPeerConnectionState) {
        let Some(s) = self.sessions.get_mut(&key) else { return };
        match st {
            RTCPeerConnectionState::Connected => {
                s.connected = true;
                s.disconnected_since = None;
                tracing::info!(session = %s.id, "connected");
                self.attach_downs(now, key);
            }
            RTCPeerConnectionState::Disconnected => {
                s.disconnected_since.get_or_insert(now);
            }
            RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                self.end(key, EndReason::ConnectionLost);
            }
            _ => {}
        }
    }

    /// The log id (`tr_…`) of a source track.
    fn track_event_id(&self, track: TrackKey) -> Option<String> {
        let (k, tid) = self.track_owner.get(&track)?;
        Some(self.sessions.get(k)?.inbound.get(tid)?.event_id.clone())
    }

    /// Reports a subscription change of subscriber session `key`.
    fn report_subscription(&self, key: Key, track_id: Option<String>, ended: Option<&str>) {
        let (Some(track), Some(s)) = (track_id, self.sessions.get(&key)) else { return };
        let (identity, sid) = (s.identity.clone(), s.sid.clone());
        let _ = self.events.send(match ended {
            None => MediaEvent::SubscriptionStarted { track, identity, sid },
            Some(reason) => MediaEvent::SubscriptionEnded { track, identity, sid, reason: reason.to_owned() },
        });
    }

    /// Points a connected subscriber's idle streams at the room's current sources.
    fn attach_downs(&mut self, now: Instant, key: Key) {
        let Some(s) = self.sessions.get(&key) else { return };
        let (room, role) = (s.room_id.clone(), s.role.clone());
        let idle: Vec<(DownKey, RtpKind)> = s
            .outbound
            .iter()
            .filter(|o| self.forwarder.source_of(o.down).is_none())
            .map(|o| (o.down, o.kind))
            .collect();
        let mut actions = Vec::new();
        for (down, kind) in idle {
            if let Some(track) = self.source_for(&room, &role, kind)
                && let Some(codec) = self.codec_of(track)
                && let Some(pt) = self.pt_for(key, down, codec)
            {
                self.forwarder.set_payload_type(down, pt);
                if self.forwarder.switch(now, down, track, &mut actions).is_ok() {
                    self.report_subscription(key, self.track_event_id(track), None);
                }
            }
        }
        self.apply(now, actions);
    }

    fn apply(&mut self, now: Instant, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Send { down, packet } => {
                    let Some(key) = self.down_owner.get(&down).copied() else { continue };
                    let Some(s) = self.sessions.get_mut(&key) else { continue };
                    let Some(sender) = s.outbound.iter().find(|o| o.down == down).map(|o| o.sender) else { continue };
                    if let Some(mut tx) = s.pc.rtp_sender(sender)
                        && let Err(e) = tx.write_rtp(now, packet)
                    {
                        tracing::trace!(session = %s.id, error = %e, "write_rtp");
                    }
                    self.mark(key);
                }
                Action::RequestKeyframe { track } => {
                    let Some((key, tid)) = self.track_owner.get(&track).cloned() else { continue };
                    let Some(s) = self.sessions.get_mut(&key) else { continue };
                    let Some(t) = s.inbound.get(&tid) else { continue };
                    let (receiver, media_ssrc) = (t.receiver, t.media_ssrc);
                    if let Some(mut rx) = s.pc.rtp_receiver(receiver) {
                        let pli = PictureLossIndication { sender_ssrc: 0, media_ssrc };
                        if let Err(e) = rx.write_rtcp(now, vec![Box::new(pli)]) {
                            tracing::trace!(error = %e, "write_rtcp");
                        }
                    }
                    self.mark(key);
                }
            }
        }
    }

    fn end_all(&mut self, reason: EndReason) {
        let keys: Vec<Key> = self.sessions.keys().copied().collect();
        for k in keys {
            self.end(k, reason);
        }
    }

    /// Ends a session: closes its connection, unpublishes its tracks (its
    /// subscribers move to another source if the room has one), reports it.
    fn end(&mut self, key: Key, reason: EndReason) {
        let now = Instant::now();
        let Some(mut s) = self.sessions.remove(&key) else { return };
        s.ended = Some(reason);
        let _ = s.pc.close();
        while let Some(msg) = s.pc.poll_write() {
            self.outbox.push((
                msg.transport.peer_addr,
                msg.message,
                msg.transport.transport_protocol == TransportProtocol::TCP,
            ));
        }
        for a in &s.addrs {
            self.by_addr.remove(a);
        }
        self.by_ufrag.remove(&s.ufrag);
        // The session's other legs (other transports of its offer) end with it.
        let siblings: Vec<Key> =
            self.by_id.remove(&s.id).unwrap_or_default().into_iter().filter(|k| *k != key).collect();
        let ended_why = reason.as_str();
        for o in &s.outbound {
            if let Some(track) = self.forwarder.source_of(o.down).and_then(|t| self.track_event_id(t)) {
                let _ = self.events.send(MediaEvent::SubscriptionEnded {
                    track,
                    identity: s.identity.clone(),
                    sid: s.sid.clone(),
                    reason: ended_why.to_owned(),
                });
            }
            self.forwarder.remove_down(o.down);
            self.down_owner.remove(&o.down);
        }
        let mut actions = Vec::new();
        for t in s.inbound.values() {
            let Some(tk) = t.key else { continue };
            self.track_owner.remove(&tk);
            let orphans = self.forwarder.remove_track(tk);
            let _ = self
                .events
                .send(MediaEvent::TrackUnpublished { track: t.event_id.clone(), reason: reason.as_str().to_owned() });
            for down in orphans {
                let Some(sk) = self.down_owner.get(&down).copied() else { continue };
                self.report_subscription(sk, Some(t.event_id.clone()), Some("unpublished"));
                let Some(sub) = self.sessions.get(&sk) else { continue };
                let role = sub.role.clone();
                let room = sub.room_id.clone();
                if let Some(next) = self.source_for(&room, &role, t.kind)
                    && let Some(codec) = self.codec_of(next)
                    && let Some(pt) = self.pt_for(sk, down, codec)
                {
                    self.forwarder.set_payload_type(down, pt);
                    if self.forwarder.switch(now, down, next, &mut actions).is_ok() {
                        self.report_subscription(sk, self.track_event_id(next), None);
                    }
                }
            }
        }
        self.apply(now, actions);
        self.session_gauge.store(self.sessions.len() as u64, Ordering::Relaxed);
        tracing::info!(session = %s.id, room = %s.room_id, identity = %s.identity, ?reason, "session ended");
        let _ = self.events.send(MediaEvent::SessionEnded {
            room_id: s.room_id,
            identity: s.identity,
            sid: s.sid,
            session_id: s.id,
            reason,
        });
        for k in siblings {
            self.end(k, reason);
        }
    }
}

/// What ICE-TCP connection tasks tell the media task.
enum TcpIn {
    Open(SocketAddr, mpsc::Sender<Vec<u8>>),
    Frame(SocketAddr, Vec<u8>),
    Closed(SocketAddr),
}

/// Accepts ICE-TCP connections; each gets a reader (RFC 4571 frames in) and
/// a writer (frames out, bounded queue) task.
async fn accept_tcp(listener: tokio::net::TcpListener, to_node: mpsc::Sender<TcpIn>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "ICE-TCP accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (mut read, mut write) = stream.into_split();
        let (wtx, mut wrx) = mpsc::channel::<Vec<u8>>(TCP_QUEUE_MAX);
        if to_node.send(TcpIn::Open(peer, wtx)).await.is_err() {
            return;
        }
        tokio::spawn(async move {
            while let Some(frame) = wrx.recv().await {
                if write.write_all(&frame).await.is_err() {
                    break;
                }
            }
        });
        let to_node = to_node.clone();
        tokio::spawn(async move {
            let mut decoder = rtc::shared::tcp_framing::TcpFrameDecoder::new();
            let mut buf = vec![0u8; 4096];
            loop {
                match read.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        decoder.extend_from_slice(&buf[..n]);
                        while let Some(frame) = decoder.next_packet() {
                            if frame.len() > TCP_FRAME_MAX {
                                continue;
                            }
                            if to_node.send(TcpIn::Frame(peer, frame)).await.is_err() {
                                return;
                            }
                        }
                        // A client that sends a frame header promising more than a
                        // datagram's worth and never delivers is cut off.
                        if decoder.buffered_len() > 64 * 1024 {
                            break;
                        }
                    }
                }
            }
            let _ = to_node.send(TcpIn::Closed(peer)).await;
        });
    }
}

enum Feedback {
    Keyframe,
    Nack(Vec<u16>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers_are_read_for_kinds_and_codecs() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\nm=video 9 UDP/TLS/RTP/SAVPF 96 97\r\na=rtpmap:96 VP8/90000\r\na=rtpmap:97 rtx/90000\r\nm=video 0 UDP/TLS/RTP/SAVPF 96\r\n";
        let (kinds, codecs) = offered(sdp);
        assert_eq!(kinds, vec![RtpKind::Audio, RtpKind::Video]);
        assert_eq!(codecs, vec!["opus", "VP8", "rtx"]);
        assert_eq!(offered("garbage"), (vec![], vec![]));
    }
}
