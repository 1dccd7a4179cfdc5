//! The media node's engine: sans-IO. It owns every session (its `rtc` peer
//! connections), the tracks they publish, the streams they play, and the
//! [`Forwarder`] between them. It has no sockets, no tasks and never reads the
//! clock: time comes in with every call.
//!
//! Inputs ([`Engine::handle_datagram`], [`Engine::handle_request`],
//! [`Engine::handle_timeout`], [`Engine::handle_tcp_closed`],
//! [`Engine::shutdown`]) do all the work; outputs are only taken:
//! [`Engine::poll_transmit`] (datagrams to send), [`Engine::poll_event`]
//! (facts for the log), [`Engine::poll_route`] (which ufrags and client
//! addresses it owns, for the driver's routing) and [`Engine::poll_timeout`]
//! (when to call `handle_timeout` next).
//!
//! **Order (an invariant of the driver):** after every `handle_*` call, drain
//! `poll_transmit` until `None`, then `poll_route` and `poll_event` until
//! `None`, then ask `poll_timeout` — a call may change the next deadline.
//!
//! Rules it keeps:
//! - A new client address is learned only from a STUN binding request for
//!   one of our ufrags whose MESSAGE-INTEGRITY verifies under that session's
//!   password ([`demux`]); nothing else from an unknown address reaches a
//!   connection. Media moves to a new address (NAT rebinding) only when the
//!   old one has been silent for [`ADDRESS_SILENT_SWITCH`] and the new one
//!   passed such a check, or at once when the client nominates the new one
//!   (a verified check with USE-CANDIDATE: after an ICE restart, say).
//! - A leg's ICE credentials are `rtc`'s own (read from its local
//!   description), new ones on every ICE restart (a PATCH whose fragment
//!   names new client credentials, [`trickle`]); DTLS, SRTP, the session,
//!   its tracks and subscriptions are kept across a restart.
//! - At most [`EngineConfig::sessions_max`] sessions at once; a full node
//!   answers [`SessionError::Full`].
//! - A session is one or more legs: one `rtc` peer connection per transport
//!   of its offer ([`offer`]). The legs end together.
//! - A subscriber's stream starts only once its leg is connected, and on a
//!   video source only at a keyframe ([`Forwarder`]).
//! - A leg's outgoing media is protected by Arc ([`srtp`]) or by `rtc`,
//!   chosen once when it connects and never changed (one rollover counter
//!   per SSRC); Arc sends the sender reports of the streams it protects.
//! - Malformed input is counted and dropped; a failing connection ends alone;
//!   nothing here panics on network input.
//!
//! # Layout
//! - this file: [`Engine`], its inputs and outputs.
//! - [`session`]: one leg's state (peer connection, published and played tracks).
//! - [`offer`]: an SDP offer split into transports, answers merged (pure).
//! - [`peer`]: how a leg's `rtc` peer connection is configured.
//! - [`layers`]: simulcast layers of a track and the one each player gets,
//!   within its downlink estimate (pure).
//! - [`bwe`]: a player's send-side bandwidth estimate from its transport-wide
//!   congestion feedback, and when to probe its link (pure).
//! - [`quality`]: histograms, receiver-report arithmetic and connection
//!   quality (pure).
//! - [`demux`]: packet classes, STUN USERNAME, USE-CANDIDATE and MESSAGE-INTEGRITY.
//! - [`trickle`]: trickle ICE fragments, ICE-restart offers and answers (pure).
//! - [`srtp`]: Arc's own SRTP egress (keys from each leg's `KeyCapture`,
//!   forwarded RTP protected in place); `rtc` keeps SRTCP and ingress.

use rustc_hash::FxHashMap;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

use arc_events::room::LeaveReason;
use arc_events::{MediaSessionId, ParticipantIdentity, ParticipantSid, RoomId, TrackId};
use arc_nodeproto::{
    LayerState, NodeReply, NodeRequest, OpenSession, Role, SESSIONS_PAGE_MAX, SessionError, SessionInfo, SessionOpened,
    SpeakerLevel,
};
use bytes::BytesMut;
use quality::ConnectionQuality;
use rtc::media_stream::{MediaStreamTrack, MediaStreamTrackId};
use rtc::peer_connection::certificate::RTCCertificate;
use rtc::peer_connection::configuration::media_engine::MIME_TYPE_RTX;
use rtc::peer_connection::event::{RTCPeerConnectionEvent, RTCTrackEvent};
use rtc::peer_connection::message::RTCMessage;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::state::{RTCIceConnectionState, RTCPeerConnectionState};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;
use rtc::rtp_transceiver::rtp_sender::{
    RTCRtpCodecParameters, RTCRtpCodingParameters, RTCRtpEncodingParameters, RTCRtpRtxParameters, RtpCodecKind,
};
use rtc::sansio::Protocol;
use rtc::shared::{TaggedBytesMut, TransportContext, TransportProtocol};

use crate::forward::{
    Action, Codec, DownKey, DownSpec, ForwardConfig, Forwarder, RedOut, RtxStream, TrackKey, TrackSpec,
};

pub mod bwe;
pub mod demux;
pub mod layers;
pub mod offer;
pub mod peer;
pub mod quality;
pub mod session;
pub mod srtp;
pub mod trickle;

use session::{InTrack, Key, OutTrack, SentCounters, Session};
use srtp::{KeyCapture, Rollover};

/// How long a session may take to connect before it is dropped.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a disconnected session may stay before it is dropped.
pub const DISCONNECTED_TIMEOUT: Duration = Duration::from_secs(10);
/// How often an outgoing stream sends an RTCP sender report.
pub const SENDER_REPORT_INTERVAL: Duration = Duration::from_secs(1);
/// How often each incoming track's jitter is sampled for `/metrics`.
pub const QUALITY_INTERVAL: Duration = Duration::from_secs(5);
/// Bytes of the buffer Arc's own SRTP egress writes into. At least half of
/// it is free when an input starts, so one input's output (a packet to
/// every subscriber: ≈ 450 of 1,200 bytes) fits, and it is reclaimed once
/// the driver has sent that output (no allocation per packet).
const EGRESS_BUFFER_BYTES: usize = 1 << 20;
/// Seconds from 1900 (NTP) to 1970 (Unix).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;
/// How often sessions are checked for those timeouts.
pub const HOUSEKEEPING_INTERVAL: Duration = Duration::from_millis(500);
/// How often a bandwidth probe's padding goes out, and at most how many
/// packets of it a leg at a time ([`Engine::pad`]).
pub const PADDING_INTERVAL: Duration = Duration::from_millis(10);
pub const PADDING_BURST: u64 = 16;
/// About what one padding packet takes on the wire (RTP header with the
/// transport-wide number, the padding, SRTP's tag).
const PADDING_WIRE_BYTES: u64 = crate::forward::PADDING_BYTES as u64 + 36;
/// The share of a player's downlink estimate its media may take (the rest:
/// RTP and SRTP overhead the layers' payload bitrates do not count, RTCP,
/// retransmissions).
pub const BWE_SHARE: f64 = 0.85;
/// How often each participant's connection quality is evaluated.
pub const LINK_CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// A participant's unchanged connection quality is told again this often.
pub const QUALITY_REPEAT: Duration = Duration::from_secs(10);
/// Sessions (legs) a node carries at most unless configured otherwise.
pub const SESSIONS_MAX_DEFAULT: u32 = 5000;
/// A client is taken to have moved (NAT rebinding) when an authenticated
/// check arrives from a new address and its media address has been silent
/// this long: consent checks come every few seconds, media and reports more
/// often, so a live address is never this quiet.
pub const ADDRESS_SILENT_SWITCH: Duration = Duration::from_secs(2);
/// A new DTLS certificate is made this long before the current one expires.
const CERTIFICATE_RENEW_MARGIN: Duration = Duration::from_secs(24 * 3600);

/// Over which transport a datagram came or goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    /// ICE-TCP (RFC 6544), framed by the driver (RFC 4571).
    Tcp,
}

/// A change the driver's routing must follow: which ufrags and client
/// addresses this engine owns (so datagrams reach it, and a flow can get its
/// own socket).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteChange {
    /// A leg with this ICE ufrag was opened (`true`) or ended (`false`).
    Ufrag { ufrag: String, owned: bool },
    /// A client address was learned from an authenticated check (`true`), or
    /// its leg ended (`false`).
    Addr { addr: SocketAddr, transport: Transport, owned: bool },
}

/// A datagram to send.
#[derive(Debug)]
pub struct Transmit {
    pub to: SocketAddr,
    pub transport: Transport,
    pub payload: BytesMut,
}

/// Something the log must hear about (the node's reporter appends it), or
/// the rooms' signalling (speakers).
#[derive(Debug, Clone, PartialEq)]
pub enum MediaEvent {
    TrackPublished {
        room_id: RoomId,
        identity: ParticipantIdentity,
        sid: ParticipantSid,
        track: TrackId,
        kind: RtpKind,
        codec: String,
        /// From a session sharing a screen.
        screen: bool,
        /// The publisher sends simulcast layers (`a=rid`s) of it.
        simulcast: bool,
    },
    TrackUnpublished {
        track: TrackId,
        reason: LeaveReason,
    },
    /// A participant's session started receiving a track.
    SubscriptionStarted {
        track: TrackId,
        identity: ParticipantIdentity,
        sid: ParticipantSid,
    },
    /// It stopped.
    SubscriptionEnded {
        track: TrackId,
        identity: ParticipantIdentity,
        sid: ParticipantSid,
        reason: SubscriptionEnd,
    },
    /// A room's active speakers changed (loudest first; empty: nobody
    /// speaks). Not for the log: the node hands it to the rooms' signalling.
    Speakers {
        room_id: RoomId,
        speakers: Vec<SpeakerLevel>,
    },
    /// A participant's connection quality changed. Not for the log either.
    Quality {
        room_id: RoomId,
        sid: ParticipantSid,
        quality: ConnectionQuality,
    },
    /// Dynacast: which simulcast layers of a published track its publisher
    /// should send (smallest first; [`layers::Layers::dynacast`]). Not for
    /// the log: the node hands it to the publisher's signalling socket.
    Layers {
        room_id: RoomId,
        sid: ParticipantSid,
        session_id: MediaSessionId,
        track: TrackId,
        layers: Vec<LayerState>,
    },
    /// A session ended.
    SessionEnded {
        room_id: RoomId,
        identity: ParticipantIdentity,
        sid: ParticipantSid,
        session_id: MediaSessionId,
        reason: LeaveReason,
        /// Its participant outlives it: no leave to record.
        attached: bool,
    },
}

/// Why a subscription ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionEnd {
    /// The subscriber moved to a newer publisher's track.
    Switched,
    /// The track's publisher stopped.
    Unpublished,
    /// The subscriber's session ended.
    Left(LeaveReason),
}

impl SubscriptionEnd {
    /// The wire name recorded in the log.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Switched => "switched",
            Self::Unpublished => "unpublished",
            Self::Left(r) => r.as_str(),
        }
    }
}

/// Audio or video (kept free of `rtc` types for the reporter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtpKind {
    Audio,
    Video,
}

/// Live figures of the node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MediaStats {
    /// Sessions open.
    pub sessions: u64,
    pub tracks: u64,
    /// Subscriber streams (one per player and track it receives).
    pub subscriptions: u64,
    pub packets_in: u64,
    pub packets_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Datagrams from unknown addresses that were not an authenticated STUN
    /// check for one of our sessions.
    pub dropped_unknown: u64,
    /// Datagrams a connection refused (malformed, bad auth, replay).
    pub dropped_malformed: u64,
    /// Repeated DTLS ClientHellos, dropped once the ServerHello flight went
    /// out (see `Session::server_hello_sent`); the flight goes again on
    /// rtc's one-second retransmission timer.
    pub dropped_dtls_repeat: u64,
    pub nacks_answered: u64,
    /// Of the NACKs answered, those answered on an RTX stream (RFC 4588).
    pub rtx_sent: u64,
    /// Padding packets sent to probe players' downlinks ([`bwe`]).
    pub padding_sent: u64,
    /// Bandwidth probes started ([`bwe::SendSide::probe`]).
    pub bwe_probes: u64,
    /// Packets players' transport-wide feedback reported on ([`bwe`]).
    pub twcc_reported: u64,
    /// Packets that came as redundant audio (`audio/red`), and of the
    /// packets sent, redundant ones sent as their newest frame alone (to
    /// players without RED).
    pub red_in: u64,
    pub red_stripped: u64,
    /// Dynacast messages to simulcast publishers (which layers to send;
    /// [`layers::Layers::dynacast`]).
    pub dynacast_changes: u64,
    pub keyframe_requests: u64,
    /// Frames dropped because an ICE-TCP connection could not keep up (counted by the driver).
    pub dropped_tcp: u64,
    /// Datagrams the kernel would not take (socket buffer full; counted by the driver).
    pub dropped_send: u64,
    /// System calls that sent UDP datagrams (counted by the driver; with
    /// `packets_out`, how well sends are batched).
    pub send_calls: u64,
    /// Datagrams handed to the worker owning their flow (counted by the driver).
    pub handed_off: u64,
    /// RTP packets Arc protected itself ([`srtp`]).
    pub srtp_own_packets: u64,
    /// Legs whose media `rtc` protects (their SRTP keys did not verify, or
    /// Arc's own egress is turned off).
    pub srtp_rtc_legs: u64,
    /// Packets lost between publishers and the node (RFC 3550 expected
    /// minus received, every incoming track).
    pub lost_in: u64,
    /// Packets lost between the node and subscribers, as their receiver
    /// reports count them.
    pub lost_out: u64,
    /// Incoming tracks' interarrival jitter, sampled every [`QUALITY_INTERVAL`].
    pub jitter_in: quality::Hist,
    /// Subscribers' interarrival jitter, one observation per receiver report block.
    pub jitter_out: quality::Hist,
    /// Round trips between the node and subscribers, from their receiver
    /// reports of Arc's sender reports.
    pub rtt: quality::Hist,
}

impl MediaStats {
    /// Adds another worker's figures to these.
    pub fn add(&mut self, o: &Self) {
        self.sessions += o.sessions;
        self.tracks += o.tracks;
        self.subscriptions += o.subscriptions;
        self.packets_in += o.packets_in;
        self.packets_out += o.packets_out;
        self.bytes_in += o.bytes_in;
        self.bytes_out += o.bytes_out;
        self.dropped_unknown += o.dropped_unknown;
        self.dropped_malformed += o.dropped_malformed;
        self.dropped_dtls_repeat += o.dropped_dtls_repeat;
        self.nacks_answered += o.nacks_answered;
        self.rtx_sent += o.rtx_sent;
        self.padding_sent += o.padding_sent;
        self.bwe_probes += o.bwe_probes;
        self.dynacast_changes += o.dynacast_changes;
        self.red_in += o.red_in;
        self.red_stripped += o.red_stripped;
        self.twcc_reported += o.twcc_reported;
        self.keyframe_requests += o.keyframe_requests;
        self.dropped_tcp += o.dropped_tcp;
        self.dropped_send += o.dropped_send;
        self.send_calls += o.send_calls;
        self.handed_off += o.handed_off;
        self.srtp_own_packets += o.srtp_own_packets;
        self.srtp_rtc_legs += o.srtp_rtc_legs;
        self.lost_in += o.lost_in;
        self.lost_out += o.lost_out;
        self.jitter_in.add(&o.jitter_in);
        self.jitter_out.add(&o.jitter_out);
        self.rtt.add(&o.rtt);
    }
}

/// What the engine needs to know of its surroundings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Where the driver's UDP socket is bound.
    pub local_udp: SocketAddr,
    /// Where the driver's ICE-TCP listener is bound.
    pub local_tcp: SocketAddr,
    /// Announced host candidates (UDP): the public addresses of the node.
    pub announce_udp: Vec<SocketAddr>,
    /// Announced passive ICE-TCP candidates.
    pub announce_tcp: Vec<SocketAddr>,
    /// Most sessions at once.
    pub sessions_max: u32,
    /// This engine's index among the node's workers (it prefixes the session
    /// ids it makes, `se_w<worker>_…`, so requests find their worker).
    pub worker: u16,
    /// The wall-clock time at the `now` given to [`Engine::new`] (sender
    /// reports carry wall-clock time; the engine never reads a clock).
    pub wall_clock: SystemTime,
    /// Whether Arc protects forwarded media itself ([`srtp`]); `false` leaves
    /// every leg on `rtc`'s egress (slower; an operator's way back).
    pub own_srtp_egress: bool,
}

/// The worker a session id was made by (see [`EngineConfig::worker`]).
pub fn worker_of(id: &MediaSessionId) -> Option<u16> {
    id.as_str().strip_prefix("se_w")?.split('_').next()?.parse().ok()
}

/// Why the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The DTLS certificate could not be made.
    #[error("DTLS certificate: {0}")]
    Certificate(String),
}

enum Feedback {
    Keyframe,
    Nack(Vec<u16>),
}

/// The engine (see the module docs).
pub struct Engine {
    config: EngineConfig,
    /// Boxed: a session is ~9 KiB (its `rtc` connection inline), and a
    /// map's empty slots would each cost that much. The maps keyed by
    /// node-local integers (never chosen by a client) hash with FxHash: they
    /// are looked up per forwarded packet. Maps keyed by what a client sends
    /// (addresses, ufrags) keep SipHash.
    sessions: FxHashMap<Key, Box<Session>>,
    /// (address, transport) → leg, learned from authenticated STUN checks.
    by_addr: HashMap<(SocketAddr, Transport), Key>,
    by_ufrag: HashMap<String, Key>,
    /// Session resource id → its legs.
    by_id: HashMap<MediaSessionId, Vec<Key>>,
    timers: BinaryHeap<Reverse<(Instant, Key)>>,
    dirty: Vec<Key>,
    outbox: VecDeque<Transmit>,
    events: VecDeque<MediaEvent>,
    routes: VecDeque<RouteChange>,
    forwarder: Forwarder,
    track_owner: FxHashMap<TrackKey, (Key, MediaStreamTrackId)>,
    down_owner: FxHashMap<DownKey, Key>,
    next_key: u32,
    next_track: u32,
    publish_order: u64,
    stats: MediaStats,
    draining: bool,
    next_housekeeping: Instant,
    /// When incoming tracks' jitter is sampled next.
    next_quality: Instant,
    /// Each room's active speakers as last told (loudest first).
    speaking: FxHashMap<RoomId, Vec<ParticipantSid>>,
    /// Each participant's connection quality as last told, and when.
    qualities: FxHashMap<ParticipantSid, (ConnectionQuality, Instant)>,
    /// When connection quality is evaluated next.
    next_link_check: Instant,
    certificate: RTCCertificate,
    crypto: std::sync::Arc<dyn rtc::crypto::RTCCryptoProvider>,
    /// The `now` of [`Engine::new`] (with [`EngineConfig::wall_clock`]).
    started: Instant,
    /// What Arc's own SRTP egress writes into ([`EGRESS_BUFFER_BYTES`]).
    egress_buf: BytesMut,
    /// The forwarder's action buffer, kept between drains.
    spare_actions: Vec<Action>,
    /// Player legs whose bandwidth probe pads now ([`bwe`]), and when
    /// padding is sent next.
    probing: Vec<Key>,
    next_padding: Option<Instant>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("sessions", &self.sessions.len()).field("draining", &self.draining).finish()
    }
}

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

/// How the forwarder takes a track whose first packet was `mime`: Opus
/// with RED negotiated (`red`: its payload type) is an `audio/red` track
/// whichever the first packet was (its players are set up for both kinds
/// of packet; the log says what came first).
fn forwarded_codec(mime: &str, red: Option<u8>) -> Codec {
    match (Codec::from_mime(mime), red) {
        (Codec::Opus, Some(_)) => Codec::Red,
        (c, _) => c,
    }
}

fn rtc_kind(k: RtpKind) -> RtpCodecKind {
    match k {
        RtpKind::Audio => RtpCodecKind::Audio,
        RtpKind::Video => RtpCodecKind::Video,
    }
}

fn transport_of(p: TransportProtocol) -> Transport {
    if p == TransportProtocol::TCP { Transport::Tcp } else { Transport::Udp }
}

/// The media kinds an offer has m-lines for, and the codec names it offers.
pub(crate) fn offered(sdp: &str) -> (Vec<RtpKind>, Vec<String>) {
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

impl Engine {
    /// A new engine; `now` starts its housekeeping clock.
    pub fn new(config: EngineConfig, now: Instant) -> Result<Self, EngineError> {
        let crypto = rtc::crypto::default_provider().map_err(|e| EngineError::Certificate(e.to_string()))?;
        Ok(Self {
            config,
            sessions: FxHashMap::default(),
            by_addr: HashMap::new(),
            by_ufrag: HashMap::new(),
            by_id: HashMap::new(),
            timers: BinaryHeap::new(),
            dirty: Vec::new(),
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            routes: VecDeque::new(),
            forwarder: Forwarder::new(ForwardConfig::default()),
            track_owner: FxHashMap::default(),
            down_owner: FxHashMap::default(),
            next_key: 1,
            next_track: 1,
            publish_order: 0,
            stats: MediaStats::default(),
            draining: false,
            next_housekeeping: now + HOUSEKEEPING_INTERVAL,
            next_quality: now + QUALITY_INTERVAL,
            speaking: FxHashMap::default(),
            qualities: FxHashMap::default(),
            next_link_check: now + LINK_CHECK_INTERVAL,
            certificate: peer::certificate().map_err(|e| EngineError::Certificate(e.to_string()))?,
            crypto,
            started: now,
            egress_buf: BytesMut::with_capacity(EGRESS_BUFFER_BYTES),
            spare_actions: Vec::new(),
            probing: Vec::new(),
            next_padding: None,
        })
    }

    // ---- getters -------------------------------------------------------

    /// Sessions open now (a session with several transports counts once).
    pub fn session_count(&self) -> usize {
        self.by_id.len()
    }

    /// The node's figures now.
    pub fn stats(&self) -> MediaStats {
        let f = self.forwarder.stats();
        let mut s = self.stats;
        s.sessions = self.by_id.len() as u64;
        s.tracks = self.forwarder.track_count() as u64;
        s.subscriptions = self.forwarder.down_count() as u64;
        s.packets_in = f.packets_in;
        s.packets_out = f.packets_out;
        s.bytes_in = f.bytes_in;
        s.bytes_out = f.bytes_out;
        s.nacks_answered = f.nacks_answered;
        s.rtx_sent = f.rtx_sent;
        s.padding_sent = f.padding_sent;
        s.keyframe_requests = f.keyframe_requests;
        s.dropped_malformed += f.dropped_malformed_red;
        s.red_in = f.red_in;
        s.red_stripped = f.red_stripped;
        s.lost_in = self.forwarder.lost_in();
        s
    }

    /// Whether the node refuses new rooms.
    pub fn draining(&self) -> bool {
        self.draining
    }

    /// Whether one of this engine's legs has this ICE ufrag.
    pub fn owns_ufrag(&self, ufrag: &str) -> bool {
        self.by_ufrag.contains_key(ufrag)
    }

    /// Whether this client address belongs to one of this engine's legs.
    pub fn owns_addr(&self, addr: SocketAddr, transport: Transport) -> bool {
        self.by_addr.contains_key(&(addr, transport))
    }

    // ---- inputs --------------------------------------------------------

    /// Starts or stops draining: while draining, only rooms this node already
    /// carries get new sessions; new rooms are refused (`Draining`).
    pub fn set_draining(&mut self, draining: bool) {
        if draining != self.draining {
            tracing::info!(draining, sessions = self.sessions.len(), "drain state changed");
        }
        self.draining = draining;
    }

    /// Answers one control-plane request.
    pub fn handle_request(&mut self, now: Instant, req: NodeRequest) -> NodeReply {
        self.reclaim_egress();
        let reply = match req {
            NodeRequest::Open(open) => match self.open(now, open) {
                Ok(o) => NodeReply::Opened(o),
                Err(e) => NodeReply::Error(e),
            },
            NodeRequest::Patch { session_id, fragment, if_match } => {
                match self.patch(now, &session_id, &fragment, if_match.as_deref()) {
                    Ok((fragment, etag)) => NodeReply::Patched { fragment, etag },
                    Err(e) => NodeReply::Error(e),
                }
            }
            NodeRequest::Close { session_id } => match self.by_id.get(&session_id).and_then(|l| l.first()).copied() {
                Some(k) => {
                    self.end(now, k, LeaveReason::ClientLeft);
                    NodeReply::Closed
                }
                None => NodeReply::Error(SessionError::NotFound),
            },
            NodeRequest::End { room_id, sid, reason } => {
                let keys: Vec<Key> = self
                    .sessions
                    .iter()
                    .filter(|(_, s)| s.room_id == room_id && sid.as_ref().is_none_or(|i| *i == s.sid))
                    .map(|(k, _)| *k)
                    .collect();
                let ids: std::collections::HashSet<MediaSessionId> =
                    keys.iter().filter_map(|k| self.sessions.get(k)).map(|s| s.id.clone()).collect();
                for k in keys {
                    self.end(now, k, reason);
                }
                NodeReply::Ended { sessions: ids.len() }
            }
            NodeRequest::Mute { track_id, muted } => {
                let keys: Vec<TrackKey> = self
                    .sessions
                    .values()
                    .flat_map(|s| s.inbound.values())
                    .find(|t| t.event_id.as_ref() == Some(&track_id))
                    .map(|t| t.keys().collect())
                    .unwrap_or_default();
                let mut actions = Vec::new();
                for k in &keys {
                    self.forwarder.set_track_muted(now, *k, muted, &mut actions);
                }
                self.apply(now, actions);
                NodeReply::Muted { found: !keys.is_empty() }
            }
            NodeRequest::Sessions { after } => {
                let (sessions, more) = self.list(now, after.as_ref());
                NodeReply::Sessions { sessions, more }
            }
            NodeRequest::Restrict { room_id, sid, publish, subscribe } => {
                let keys: Vec<Key> = self
                    .sessions
                    .iter()
                    .filter(|(_, s)| s.room_id == room_id && s.sid == sid)
                    .filter(|(_, s)| if s.role.is_publish() { !publish } else { !subscribe })
                    .map(|(k, _)| *k)
                    .collect();
                let ids: std::collections::HashSet<MediaSessionId> =
                    keys.iter().filter_map(|k| self.sessions.get(k)).map(|s| s.id.clone()).collect();
                for k in keys {
                    self.end(now, k, LeaveReason::Removed);
                }
                NodeReply::Ended { sessions: ids.len() }
            }
            NodeRequest::Prefer { session_id, quality, width, height } => {
                let rendered = width.zip(height);
                let pref = layers::Preference { quality, rendered };
                let mut found = false;
                for k in self.by_id.get(&session_id).cloned().unwrap_or_default() {
                    let Some(s) = self.sessions.get_mut(&k) else { continue };
                    for o in s.outbound.iter_mut().filter(|o| o.kind == RtpKind::Video) {
                        o.pref = pref;
                        found = true;
                    }
                }
                if found {
                    let mut actions = Vec::new();
                    self.select_layers(now, &mut actions);
                    self.apply(now, actions);
                }
                NodeReply::Preferred { found }
            }
            NodeRequest::Ping => NodeReply::Pong,
        };
        self.flush(now);
        reply
    }

    /// One datagram from the network (or one RFC 4571 frame of an ICE-TCP
    /// connection), from `from`.
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, transport: Transport, data: &[u8]) {
        self.reclaim_egress();
        let key = match self.by_addr.get(&(from, transport)) {
            Some(k) => *k,
            None => match self.authenticate(data) {
                Some(k) => {
                    self.by_addr.insert((from, transport), k);
                    if let Some(s) = self.sessions.get_mut(&k) {
                        s.addrs.push((from, transport));
                    }
                    self.routes.push_back(RouteChange::Addr { addr: from, transport, owned: true });
                    k
                }
                None => {
                    self.stats.dropped_unknown += 1;
                    return;
                }
            },
        };
        let mut keyframes = false;
        if let Some(s) = self.sessions.get_mut(&key) {
            // A verified nomination (USE-CANDIDATE): of another address than
            // the media's, the client chose that path (an ICE restart, a new
            // network); after an ICE restart, its path is back.
            let nominated = (s.keyframe_on_nomination || s.remote.is_some_and(|r| r != (from, transport)))
                && demux::stun_nominates(data)
                && demux::stun_local_ufrag(data) == Some(s.ufrag.as_str())
                && demux::stun_integrity_ok(data, &s.pwd, self.crypto.crypto());
            keyframes = nominated && std::mem::take(&mut s.keyframe_on_nomination);
            heard(s, now, (from, transport), data, nominated && s.remote.is_some_and(|r| r != (from, transport)));
        }
        if keyframes {
            let downs: Vec<DownKey> = self
                .sessions
                .get(&key)
                .map(|s| s.outbound.iter().filter(|o| o.kind == RtpKind::Video).map(|o| o.down).collect())
                .unwrap_or_default();
            let mut actions = Vec::new();
            for down in downs {
                self.forwarder.on_keyframe_request(now, down, &mut actions);
            }
            self.apply(now, actions);
        }
        let local_addr = self.local_for(from, transport);
        let Some(session) = self.sessions.get_mut(&key) else {
            self.by_addr.remove(&(from, transport));
            self.stats.dropped_unknown += 1;
            return;
        };
        let msg = TaggedBytesMut {
            now,
            transport: TransportContext {
                local_addr,
                peer_addr: from,
                ecn: None,
                transport_protocol: if transport == Transport::Tcp {
                    TransportProtocol::TCP
                } else {
                    TransportProtocol::UDP
                },
            },
            message: BytesMut::from(data),
        };
        if session.server_hello_sent && demux::dtls_only_client_hellos(data) {
            self.stats.dropped_dtls_repeat += 1;
            return;
        }
        if let Err(e) = session.pc.handle_read(msg) {
            self.stats.dropped_malformed += 1;
            tracing::trace!(session = %session.id, error = %e, "datagram refused");
        }
        self.mark(key);
        self.flush(now);
    }

    /// Time passed: runs the connections' timers that are due and, every
    /// [`HOUSEKEEPING_INTERVAL`], drops sessions that never connected or
    /// stayed disconnected.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.reclaim_egress();
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
        if now >= self.next_housekeeping {
            self.next_housekeeping = now + HOUSEKEEPING_INTERVAL;
            self.housekeeping(now);
        }
        if self.next_padding.is_some_and(|t| now >= t) {
            self.pad(now);
        }
        self.flush(now);
    }

    /// An ICE-TCP connection closed: its address is forgotten.
    pub fn handle_tcp_closed(&mut self, peer: SocketAddr) {
        if let Some(k) = self.by_addr.remove(&(peer, Transport::Tcp))
            && let Some(s) = self.sessions.get_mut(&k)
        {
            s.addrs.retain(|a| *a != (peer, Transport::Tcp));
        }
    }

    /// Ends every session (reason `node_shutdown`).
    pub fn shutdown(&mut self, now: Instant) {
        let keys: Vec<Key> = self.sessions.keys().copied().collect();
        for k in keys {
            self.end(now, k, LeaveReason::NodeShutdown);
        }
        self.flush(now);
    }

    // ---- outputs -------------------------------------------------------

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.outbox.pop_front()
    }

    /// The next fact for the log.
    pub fn poll_event(&mut self) -> Option<MediaEvent> {
        self.events.pop_front()
    }

    /// The next change of what this engine owns (for the driver's routing).
    pub fn poll_route(&mut self) -> Option<RouteChange> {
        self.routes.pop_front()
    }

    /// When [`Self::handle_timeout`] is due next.
    pub fn poll_timeout(&self) -> Instant {
        let timer = self.timers.peek().map(|Reverse((t, _))| *t);
        let next = timer.map_or(self.next_housekeeping, |t| t.min(self.next_housekeeping));
        self.next_padding.map_or(next, |p| p.min(next))
    }

    // ---- internals -----------------------------------------------------

    /// The leg a STUN check from a new address is for, if its USERNAME names
    /// one of our ufrags and its MESSAGE-INTEGRITY verifies.
    fn authenticate(&self, data: &[u8]) -> Option<Key> {
        if demux::classify(data) != demux::PacketClass::Stun {
            return None;
        }
        let key = *self.by_ufrag.get(demux::stun_local_ufrag(data)?)?;
        let session = self.sessions.get(&key)?;
        demux::stun_integrity_ok(data, &session.pwd, self.crypto.crypto()).then_some(key)
    }

    /// The local address to tell `rtc` a datagram from `from` arrived at.
    /// `rtc` discards ICE checks whose local address is not one of its
    /// candidates, and the candidates are the announced addresses: a socket
    /// bound to every interface (`0.0.0.0`, the default) or to a private IP
    /// behind a 1:1 NAT is not among them. So: the bound address when it is
    /// announced, else the announced address of the sender's family.
    fn local_for(&self, from: SocketAddr, transport: Transport) -> SocketAddr {
        let (bound, announced) = match transport {
            Transport::Tcp => (self.config.local_tcp, &self.config.announce_tcp),
            Transport::Udp => (self.config.local_udp, &self.config.announce_udp),
        };
        if announced.contains(&bound) {
            return bound;
        }
        announced.iter().find(|a| a.is_ipv4() == from.is_ipv4()).or(announced.first()).copied().unwrap_or(bound)
    }

    /// Makes room in the egress buffer before an input. The driver has sent
    /// (and dropped) the last input's datagrams, so the whole buffer is
    /// reclaimed without allocating; only when a datagram is still held
    /// elsewhere is a new buffer made.
    fn reclaim_egress(&mut self) {
        if self.egress_buf.capacity() < EGRESS_BUFFER_BYTES / 2 && !self.egress_buf.try_reclaim(EGRESS_BUFFER_BYTES) {
            self.egress_buf = BytesMut::with_capacity(EGRESS_BUFFER_BYTES);
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

    /// Drains every leg that has something to say, until none has.
    fn flush(&mut self, now: Instant) {
        while let Some(key) = self.dirty.pop() {
            self.drain(now, key);
        }
    }

    fn list(&self, now: Instant, after: Option<&MediaSessionId>) -> (Vec<SessionInfo>, bool) {
        let mut page: Vec<&Session> =
            self.sessions.values().map(|s| &**s).filter(|s| after.is_none_or(|a| s.id.as_str() > a.as_str())).collect();
        page.sort_unstable_by(|a, b| a.id.as_str().cmp(b.id.as_str()));
        let more = page.len() > SESSIONS_PAGE_MAX;
        page.truncate(SESSIONS_PAGE_MAX);
        let infos = page
            .into_iter()
            .map(|s| SessionInfo {
                session_id: s.id.clone(),
                room_id: s.room_id.clone(),
                identity: s.identity.clone(),
                sid: s.sid.clone(),
                role: s.role.clone(),
                connected: s.connected,
                age_ms: u64::try_from(now.saturating_duration_since(s.created).as_millis()).unwrap_or(u64::MAX),
            })
            .collect();
        (infos, more)
    }

    fn open(&mut self, now: Instant, req: OpenSession) -> Result<SessionOpened, SessionError> {
        if self.draining && !self.sessions.values().any(|s| s.room_id == req.room_id) {
            return Err(SessionError::Draining);
        }
        if req.offer.len() > arc_nodeproto::OFFER_BYTES_MAX {
            return Err(SessionError::BadSdp { reason: "the offer is too large".into() });
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
        let limit = self.config.sessions_max;
        if self.by_id.len() >= limit as usize {
            return Err(SessionError::Full { limit });
        }
        if peer::expires_within(&self.certificate, CERTIFICATE_RENEW_MARGIN) {
            self.certificate = peer::certificate()
                .map_err(|e| SessionError::Internal { message: format!("DTLS certificate: {e}") })?;
        }
        let id = MediaSessionId::parse(&format!("se_w{}_{}", self.config.worker, random_token(20)))
            .map_err(|e| SessionError::Internal { message: e.to_string() })?;
        let mut legs = Vec::with_capacity(plan.parts.len());
        let mut answers = Vec::with_capacity(plan.parts.len());
        for part in &plan.parts {
            match self.open_leg(now, &req, &part.sdp, &id) {
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
        let answer = match plan.merge(&answers) {
            Ok(a) => a,
            Err(e) => {
                for key in legs {
                    self.discard(key);
                }
                return Err(SessionError::BadSdp { reason: e.to_string() });
            }
        };
        for key in &legs {
            self.mark(*key);
        }
        self.by_id.insert(id.clone(), legs.clone());
        tracing::info!(session = %id, legs = legs.len(), room = %req.room_id, identity = %req.identity, role = ?req.role, "session opened");
        Ok(SessionOpened { session_id: id, answer, etag: Some(self.etag(&legs)) })
    }

    /// Removes a leg that was never handed out (its sibling failed to open):
    /// nothing was published or reported for it.
    fn discard(&mut self, key: Key) {
        let Some(mut s) = self.sessions.remove(&key) else { return };
        let _ = s.pc.close();
        self.by_ufrag.remove(&s.ufrag);
        self.routes.push_back(RouteChange::Ufrag { ufrag: s.ufrag.clone(), owned: false });
        for o in &s.outbound {
            self.forwarder.remove_down(o.down);
            self.down_owner.remove(&o.down);
        }
    }

    /// Opens one peer connection for one transport's offer; answers its key
    /// and SDP answer.
    fn open_leg(
        &mut self,
        now: Instant,
        req: &OpenSession,
        offer: &str,
        id: &MediaSessionId,
    ) -> Result<(Key, String), SessionError> {
        let (kinds, offered_codecs) = offered(offer);
        if kinds.is_empty() {
            return Err(SessionError::BadSdp { reason: "the offer has no audio or video m-line".into() });
        }
        let supported = peer::codec_names();
        let internal = |e: rtc::shared::error::Error| SessionError::Internal { message: e.to_string() };
        let capture = KeyCapture::new(self.crypto.clone());
        let receives_media = matches!(req.role, Role::Publish);
        let mut pc = peer::build(now, &self.certificate, capture.clone(), receives_media).map_err(internal)?;
        let key = self.next_key;
        self.next_key = self.next_key.wrapping_add(1).max(1);
        let mut outbound = Vec::new();
        if let Role::Subscribe { .. } = &req.role {
            for kind in &kinds {
                let source_codec = self.source_for(&req.room_id, &req.role, *kind).and_then(|t| self.codec_of(t));
                // A RED source's player gets an Opus track (and RED beside it if it offers it).
                let codec = match source_codec {
                    Some(Codec::Red) | None if *kind == RtpKind::Audio => Codec::Opus,
                    None => Codec::Vp8,
                    Some(c) => c,
                };
                let Some(params) = peer::codecs()
                    .into_iter()
                    .find(|(k, c)| *k == rtc_kind(*kind) && Codec::from_mime(&c.rtp_codec.mime_type) == codec)
                    .map(|(_, c)| c)
                else {
                    continue;
                };
                let ssrc: u32 = rand::random();
                // Kept only if the subscriber negotiates RTX (`rtc` drops it otherwise).
                let rtx = (*kind == RtpKind::Video).then(|| RTCRtpRtxParameters { ssrc: rand::random() });
                let track = MediaStreamTrack::new(
                    format!("arc-{}", req.room_id),
                    format!("arc-{}-{}", if *kind == RtpKind::Video { "video" } else { "audio" }, key),
                    format!("{kind:?}").to_lowercase(),
                    rtc_kind(*kind),
                    vec![RTCRtpEncodingParameters {
                        rtp_coding_parameters: RTCRtpCodingParameters { ssrc: Some(ssrc), rtx, ..Default::default() },
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
                    twcc_ext: None,
                    rtx_ssrc: None,
                    roll: Rollover::default(),
                    rtx_roll: Rollover::default(),
                    pref: layers::Preference::default(),
                    sent: SentCounters::default(),
                    bitrate: 0,
                    octets_at_sample: 0,
                });
            }
        }
        let description = RTCSessionDescription::offer(offer.to_owned())
            .map_err(|e| SessionError::BadSdp { reason: e.to_string() })?;
        pc.set_remote_description(now, description).map_err(|e| SessionError::BadSdp { reason: e.to_string() })?;
        peer::add_host_candidates(&mut pc, &self.config.announce_udp, &self.config.announce_tcp).map_err(internal)?;
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
        // The leg's ICE credentials are the ones `rtc` drew (it draws new
        // ones on an ICE restart); checks are routed by the ufrag.
        let (ufrag, pwd) = match trickle::credentials_of(&answer) {
            trickle::Credentials { ufrag: Some(u), pwd: Some(p) } if !self.by_ufrag.contains_key(&u) => (u, p),
            _ => return Err(SessionError::Internal { message: "the answer has no fresh ICE credentials".into() }),
        };
        // What the subscriber negotiated, per stream.
        for out in &mut outbound {
            if let Some(mut sender) = pc.rtp_sender(out.sender) {
                let params = sender.get_parameters();
                let codecs = &params.rtp_parameters.codecs;
                let is_rtx = |c: &RTCRtpCodecParameters| c.rtp_codec.mime_type.eq_ignore_ascii_case(MIME_TYPE_RTX);
                out.pts = codecs
                    .iter()
                    .filter(|c| !is_rtx(c))
                    .map(|c| {
                        let rtx = codecs
                            .iter()
                            .find(|r| is_rtx(r) && peer::rtx_apt(&r.rtp_codec.sdp_fmtp_line) == Some(c.payload_type))
                            .map(|r| r.payload_type);
                        (Codec::from_mime(&c.rtp_codec.mime_type), c.payload_type, rtx)
                    })
                    .collect();
                out.rtx_ssrc = params
                    .encodings
                    .first()
                    .and_then(|e| e.rtp_coding_parameters.rtx.as_ref())
                    .map(|r| r.ssrc)
                    .filter(|_| out.pts.iter().any(|(_, _, rtx)| rtx.is_some()));
                let ext_id = |uri: &str| {
                    params
                        .rtp_parameters
                        .header_extensions
                        .iter()
                        .find(|h| h.uri == uri)
                        .and_then(|h| u8::try_from(h.id).ok())
                };
                out.audio_level_ext = ext_id(rtc::sdp::extmap::AUDIO_LEVEL_URI);
                out.twcc_ext = ext_id(rtc::sdp::extmap::TRANSPORT_CC_URI);
            }
        }
        outbound.retain(|o| !o.pts.is_empty());
        let bwe = outbound.iter().any(|o| o.twcc_ext.is_some()).then(|| bwe::SendSide::new(now));
        let session = Session {
            id: id.clone(),
            room_id: req.room_id.clone(),
            identity: req.identity.clone(),
            sid: req.sid.clone(),
            role: req.role.clone(),
            attached: req.attached,
            screen: req.screen && req.role == Role::Publish,
            pc,
            ufrag: ufrag.clone(),
            pwd,
            addrs: Vec::new(),
            remote: None,
            heard: Vec::new(),
            inbound: HashMap::new(),
            outbound,
            created: now,
            connected: false,
            server_hello_sent: false,
            disconnected_since: None,
            next_timeout: None,
            dirty: false,
            capture,
            link: quality::LinkWindow::default(),
            egress: None,
            keyframe_on_nomination: false,
            bwe,
        };
        self.sessions.insert(key, Box::new(session));
        self.routes.push_back(RouteChange::Ufrag { ufrag: ufrag.clone(), owned: true });
        self.by_ufrag.insert(ufrag, key);
        // Subscriber streams are registered now and start forwarding once the
        // session is connected (a keyframe sent before DTLS completes is lost).
        let downs: Vec<(DownKey, u32, Option<u8>, Option<u32>)> =
            self.sessions[&key].outbound.iter().map(|o| (o.down, o.ssrc, o.audio_level_ext, o.rtx_ssrc)).collect();
        let mut actions = Vec::new();
        for (down, ssrc, ext, rtx_ssrc) in downs {
            self.down_owner.insert(down, key);
            let rtx = rtx_ssrc.map(|ssrc| RtxStream { ssrc, first_seq: rand::random() });
            let spec = DownSpec { ssrc, payload_type: 0, audio_level_ext: ext, rtx };
            let _ = self.forwarder.add_down(now, down, spec, None, &mut actions);
        }
        Ok((key, answer))
    }

    /// Trickle ICE or an ICE restart (RFC 9725 §4.3). A fragment whose
    /// client credentials are a leg's current ones is trickle (an ICE-lite
    /// node needs no candidates: nothing to do); new ones restart that leg's
    /// ICE (every leg's, given session-wide): the client's offer is applied
    /// again with them, `rtc` draws the node's new credentials, and they are
    /// answered as a fragment with the session's new entity tag.
    fn patch(
        &mut self,
        now: Instant,
        id: &MediaSessionId,
        fragment: &str,
        if_match: Option<&str>,
    ) -> Result<(Option<String>, Option<String>), SessionError> {
        let legs = self.by_id.get(id).ok_or(SessionError::NotFound)?.clone();
        if fragment.len() > arc_nodeproto::FRAGMENT_BYTES_MAX {
            return Err(SessionError::BadSdp { reason: "the trickle-ice-sdpfrag is too large".into() });
        }
        let etag = self.etag(&legs);
        if let Some(m) = if_match.map(str::trim)
            && m != "*"
            && m != etag
        {
            return Err(SessionError::PreconditionFailed { etag });
        }
        let frag = trickle::parse(fragment).map_err(|reason| SessionError::BadSdp { reason })?;
        let mut restarts = Vec::new();
        for key in &legs {
            let Some(remote) = self.sessions.get(key).and_then(|s| s.pc.remote_description()).map(|d| d.sdp.clone())
            else {
                continue;
            };
            let Some(wanted) = frag.credentials_for(&trickle::mids_of(&remote)) else { continue };
            if wanted.ufrag == trickle::credentials_of(&remote).ufrag {
                continue;
            }
            let (Some(ufrag), Some(pwd)) = (wanted.ufrag, wanted.pwd) else {
                return Err(SessionError::BadSdp {
                    reason: "an ICE restart (a new a=ice-ufrag) needs its a=ice-pwd".into(),
                });
            };
            restarts.push((*key, trickle::restart_offer(&remote, &ufrag, &pwd)));
        }
        if restarts.is_empty() {
            return Ok((None, None));
        }
        // rtc 0.21.1 forgets which SSRC carries which simulcast layer when it
        // takes the restart offer (its receivers' rid codings start afresh),
        // and a browser names the layers (the rid header extension) only in
        // a stream's first packets: the layers would never be heard again.
        let simulcast = restarts
            .iter()
            .filter_map(|(k, _)| self.sessions.get(k))
            .any(|s| s.inbound.values().any(|t| !t.rids.is_empty()));
        if simulcast {
            return Err(SessionError::RestartUnsupported {
                reason: "this session publishes simulcast layers, which an ICE restart would lose; \
                         open a new session"
                    .into(),
            });
        }
        let mut answers = Vec::with_capacity(restarts.len());
        for (key, offer) in restarts {
            answers.push(self.restart_leg(now, key, offer)?);
        }
        let refs: Vec<&str> = answers.iter().map(String::as_str).collect();
        tracing::info!(session = %id, legs = answers.len(), "ICE restarted");
        Ok((Some(trickle::restart_answer(&refs)), Some(self.etag(&legs))))
    }

    /// Restarts one leg's ICE with the client's `offer` (its new
    /// credentials); answers the leg's new local description.
    fn restart_leg(&mut self, now: Instant, key: Key, offer: String) -> Result<String, SessionError> {
        let bad = |e: rtc::shared::error::Error| SessionError::BadSdp { reason: e.to_string() };
        let internal = |m: &str| SessionError::Internal { message: m.to_owned() };
        let s = self.sessions.get_mut(&key).ok_or(SessionError::NotFound)?;
        s.pc.set_remote_description(now, RTCSessionDescription::offer(offer).map_err(bad)?).map_err(bad)?;
        let answer = s.pc.create_answer(None).map_err(bad)?;
        s.pc.set_local_description(now, answer).map_err(bad)?;
        let local = s.pc.local_description().map(|d| d.sdp.clone()).ok_or_else(|| internal("no local description"))?;
        let (Some(ufrag), Some(pwd)) = (trickle::credentials_of(&local).ufrag, trickle::credentials_of(&local).pwd)
        else {
            return Err(internal("the restarted answer has no ICE credentials"));
        };
        if ufrag != s.ufrag {
            if self.by_ufrag.contains_key(&ufrag) {
                return Err(internal("the restarted answer's ufrag is another leg's"));
            }
            let old = std::mem::replace(&mut s.ufrag, ufrag.clone());
            self.by_ufrag.remove(&old);
            self.routes.push_back(RouteChange::Ufrag { ufrag: old, owned: false });
            self.routes.push_back(RouteChange::Ufrag { ufrag: ufrag.clone(), owned: true });
            self.by_ufrag.insert(ufrag, key);
        }
        s.pwd = pwd;
        s.keyframe_on_nomination = s.outbound.iter().any(|o| o.kind == RtpKind::Video);
        self.mark(key);
        Ok(local)
    }

    /// The entity tag of a session's ICE state: its legs' ufrags.
    fn etag(&self, legs: &[Key]) -> String {
        let ufrags: Vec<&str> = legs.iter().filter_map(|k| self.sessions.get(k)).map(|s| s.ufrag.as_str()).collect();
        format!("\"{}\"", ufrags.join("."))
    }

    fn codec_of(&self, track: TrackKey) -> Option<Codec> {
        let (k, tid) = self.track_owner.get(&track)?;
        self.sessions.get(k)?.inbound.get(tid)?.codec
    }

    /// The payload type subscriber leg `key` negotiated for `codec` on this
    /// stream, and its RTX payload type.
    fn pt_for(&self, key: Key, down: DownKey, codec: Codec) -> Option<(u8, Option<u8>)> {
        let s = self.sessions.get(&key)?;
        let o = s.outbound.iter().find(|o| o.down == down)?;
        o.pts.iter().find(|(c, ..)| *c == codec).map(|(_, pt, rtx)| (*pt, *rtx))
    }

    /// Sets the payload types `down` (of subscriber leg `key`) writes for a
    /// source of `codec`; false when the subscriber did not negotiate it.
    /// An `audio/red` source goes to a subscriber that negotiated RED as it
    /// comes, and to one that did not as the newest frame of each packet
    /// (both need Opus, for the source's plain packets).
    fn set_format(&mut self, key: Key, down: DownKey, codec: Codec) -> bool {
        if codec == Codec::Red {
            let Some((opus, _)) = self.pt_for(key, down, Codec::Opus) else { return false };
            let red = self.pt_for(key, down, Codec::Red).map(|(pt, _)| pt);
            self.forwarder.set_payload_type(down, red.unwrap_or(opus), None);
            self.forwarder.set_red(down, RedOut { opus_payload_type: opus, strip: red.is_none() });
            return true;
        }
        let Some((pt, rtx)) = self.pt_for(key, down, codec) else { return false };
        self.forwarder.set_payload_type(down, pt, rtx);
        true
    }

    /// The track a subscriber of `kind` in `room` should see: the latest
    /// published one, or the named participant's.
    fn source_for(&self, room: &RoomId, role: &Role, kind: RtpKind) -> Option<TrackKey> {
        let (want, screen) = match role {
            Role::Subscribe { participant, screen } => (participant.as_ref(), *screen),
            Role::Publish => return None,
        };
        self.sessions
            .values()
            .filter(|s| s.room_id == *room && s.role == Role::Publish && s.screen == screen)
            .filter(|s| want.is_none_or(|w| s.identity == *w))
            .flat_map(|s| s.inbound.values())
            .filter(|t| t.kind == kind && t.key.is_some())
            .max_by_key(|t| t.published_at)
            .and_then(|t| t.key)
    }

    /// The NTP time (RFC 3550 §4) at `now`.
    fn ntp(&self, now: Instant) -> u64 {
        let wall = self.config.wall_clock + now.saturating_duration_since(self.started);
        let since = wall.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        let secs = since.as_secs().wrapping_add(NTP_UNIX_OFFSET);
        let frac = (u64::from(since.subsec_nanos()) << 32) / 1_000_000_000;
        (secs << 32) | frac
    }

    /// Sender reports for the streams Arc protects itself (`rtc` reports
    /// only what went through it). The RTP time is the newest timestamp sent
    /// carried forward to `now` at the codec's clock rate.
    fn sender_reports(&mut self, now: Instant) {
        use rtc::rtcp::sender_report::SenderReport;
        let ntp_time = self.ntp(now);
        let mut touched = Vec::new();
        for (key, s) in &mut self.sessions {
            if !matches!(s.egress, Some(Some(_))) {
                continue;
            }
            for o in &mut s.outbound {
                let Some((ts, at)) = o.sent.last else { continue };
                if o.sent.last_report.is_some_and(|t| now.saturating_duration_since(t) < SENDER_REPORT_INTERVAL) {
                    continue;
                }
                o.sent.last_report = Some(now);
                let clock = if o.kind == RtpKind::Audio { 48_000.0 } else { 90_000.0 };
                let ahead = (now.saturating_duration_since(at).as_secs_f64() * clock) as u32;
                let sr = SenderReport {
                    ssrc: o.ssrc,
                    ntp_time,
                    rtp_time: ts.wrapping_add(ahead),
                    packet_count: o.sent.packets,
                    octet_count: o.sent.octets,
                    reports: Vec::new(),
                    profile_extensions: bytes::Bytes::new(),
                };
                if let Some(mut tx) = s.pc.rtp_sender(o.sender)
                    && let Err(e) = tx.write_rtcp(now, vec![Box::new(sr)])
                {
                    tracing::trace!(session = %s.id, error = %e, "sender report");
                }
                touched.push(*key);
            }
        }
        for key in touched {
            self.mark(key);
        }
    }

    fn housekeeping(&mut self, now: Instant) {
        self.sender_reports(now);
        let mut simulcast = false;
        let seconds = HOUSEKEEPING_INTERVAL.as_secs_f64();
        for s in self.sessions.values_mut() {
            for t in s.inbound.values_mut().filter(|t| t.layers.len() > 1) {
                t.layers.sample(now);
                simulcast = true;
            }
            for o in &mut s.outbound {
                o.bitrate = (f64::from(o.sent.octets.wrapping_sub(o.octets_at_sample)) * 8.0 / seconds) as u64;
                o.octets_at_sample = o.sent.octets;
            }
        }
        if simulcast {
            let mut actions = Vec::new();
            self.select_layers(now, &mut actions);
            self.apply(now, actions);
        }
        self.speakers();
        if now >= self.next_link_check {
            self.next_link_check = now + LINK_CHECK_INTERVAL;
            self.connection_quality(now);
        }
        if now >= self.next_quality {
            self.next_quality = now + QUALITY_INTERVAL;
            for j in self.forwarder.jitter_in() {
                self.stats.jitter_in.observe(j);
            }
        }
        let mut stale = Vec::new();
        for (k, s) in &self.sessions {
            let never_connected = !s.connected && now.saturating_duration_since(s.created) > CONNECT_TIMEOUT;
            let gone = s.disconnected_since.is_some_and(|t| now.saturating_duration_since(t) > DISCONNECTED_TIMEOUT);
            if never_connected || gone {
                stale.push(*k);
            }
        }
        for k in stale {
            self.end(now, k, LeaveReason::ConnectionLost);
        }
    }

    /// Ends the voice-activity interval (one housekeeping interval): each
    /// room whose speakers (by participant, loudest first) changed gets a
    /// [`MediaEvent::Speakers`]; a room whose speakers all went quiet or
    /// left gets an empty one.
    fn speakers(&mut self) {
        let mut heard = Vec::new();
        self.forwarder.take_speech(&mut heard);
        if heard.is_empty() && self.speaking.is_empty() {
            return;
        }
        let mut rooms: FxHashMap<RoomId, Vec<SpeakerLevel>> = FxHashMap::default();
        for (track, level) in heard {
            let Some(s) = self.track_owner.get(&track).and_then(|(k, _)| self.sessions.get(k)) else { continue };
            let speakers = rooms.entry(s.room_id.clone()).or_default();
            // A participant with two audio tracks (microphone, screen audio) speaks once, at its loudest.
            match speakers.iter_mut().find(|x| x.sid == s.sid) {
                Some(x) => x.level = x.level.max(level),
                None => speakers.push(SpeakerLevel { sid: s.sid.clone(), level }),
            }
        }
        for speakers in rooms.values_mut() {
            speakers.sort_by(|a, b| b.level.total_cmp(&a.level).then_with(|| a.sid.as_str().cmp(b.sid.as_str())));
        }
        let quiet: Vec<RoomId> = self.speaking.keys().filter(|r| !rooms.contains_key(*r)).cloned().collect();
        for room_id in quiet {
            self.speaking.remove(&room_id);
            self.events.push_back(MediaEvent::Speakers { room_id, speakers: Vec::new() });
        }
        for (room_id, speakers) in rooms {
            let sids: Vec<ParticipantSid> = speakers.iter().map(|x| x.sid.clone()).collect();
            if self.speaking.get(&room_id) != Some(&sids) {
                self.speaking.insert(room_id.clone(), sids);
                self.events.push_back(MediaEvent::Speakers { room_id, speakers });
            }
        }
    }

    /// Ends each leg's quality window: a participant's quality is its worst
    /// leg's (loss from its incoming tracks' sequence numbers or its
    /// subscriber's receiver reports, and round trips); a participant whose
    /// quality changed, or was last told [`QUALITY_REPEAT`] ago (for sockets
    /// that joined since), gets a [`MediaEvent::Quality`]. Legs with nothing
    /// measured in the window say nothing.
    fn connection_quality(&mut self, now: Instant) {
        let mut worst: FxHashMap<ParticipantSid, (RoomId, ConnectionQuality)> = FxHashMap::default();
        for s in self.sessions.values_mut() {
            let (mut lost, mut received) = (0u64, 0u64);
            for t in s.inbound.values() {
                if let Some((l, r)) = t.key.and_then(|k| self.forwarder.reception_counts(k)) {
                    lost += l;
                    received += r;
                }
            }
            let sent: u64 = s.outbound.iter().map(|o| u64::from(o.sent.packets)).sum();
            let window = std::mem::take(&mut s.link);
            s.link.inbound_at_start = (lost, received);
            s.link.sent_at_start = sent;
            let lost_now = lost.saturating_sub(window.inbound_at_start.0);
            let received_now = received.saturating_sub(window.inbound_at_start.1);
            let up = (received_now > 0).then(|| lost_now as f64 / (lost_now + received_now) as f64);
            let sent_now = sent.saturating_sub(window.sent_at_start);
            let nacked = (sent_now > 0).then(|| (window.nacked as f64 / sent_now as f64).min(1.0));
            let reported = window.down_fraction_lost.map(|f| f64::from(f) / 256.0);
            let down = match (nacked, reported) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            if up.is_none() && down.is_none() && window.rtt_s.is_none() {
                continue;
            }
            let q = quality::score(up.unwrap_or(0.0).max(down.unwrap_or(0.0)), window.rtt_s);
            let entry = worst.entry(s.sid.clone()).or_insert((s.room_id.clone(), q));
            entry.1 = entry.1.max(q);
        }
        self.qualities.retain(|sid, _| self.sessions.values().any(|s| s.sid == *sid));
        for (sid, (room_id, q)) in worst {
            let stale = self
                .qualities
                .get(&sid)
                .is_none_or(|(told, at)| *told != q || now.saturating_duration_since(*at) >= QUALITY_REPEAT);
            if stale {
                self.qualities.insert(sid.clone(), (q, now));
                self.events.push_back(MediaEvent::Quality { room_id, sid, quality: q });
            }
        }
    }

    fn push_writes(outbox: &mut VecDeque<Transmit>, s: &mut Session) {
        while let Some(msg) = s.pc.poll_write() {
            let mut to = (msg.transport.peer_addr, transport_of(msg.transport.transport_protocol));
            // Media and DTLS follow the client to where it moved; STUN
            // answers go where the check came from.
            let class = demux::classify(&msg.message);
            let stun = class == demux::PacketClass::Stun;
            if !s.server_hello_sent && class == demux::PacketClass::Dtls {
                s.server_hello_sent = demux::dtls_has_server_hello(&msg.message);
            }
            match s.remote {
                None if !stun => s.remote = Some(to),
                Some(r) if !stun && s.addrs.contains(&to) => to = r,
                _ => {}
            }
            outbox.push_back(Transmit { to: to.0, transport: to.1, payload: msg.message });
        }
    }

    fn drain(&mut self, now: Instant, key: Key) {
        let mut actions = std::mem::take(&mut self.spare_actions);
        let mut new_tracks = Vec::new();
        let mut new_layers: Vec<(TrackKey, MediaStreamTrackId, u32, String)> = Vec::new();
        let mut feedback: Vec<(DownKey, Feedback)> = Vec::new();
        // Receiver report blocks' (LSR, DLSR), for round trips.
        let mut reports: Vec<(u32, u32)> = Vec::new();
        let mut state_change = None;
        {
            let Some(s) = self.sessions.get_mut(&key) else { return };
            s.dirty = false;
            Self::push_writes(&mut self.outbox, s);
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
                    // An ICE restart's new answer announces the tracks again:
                    // they are the same ones, already known (and maybe published).
                    RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init))
                        if !s.inbound.contains_key(&init.track_id) =>
                    {
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
                                event_id: None,
                                published_at: 0,
                                rids: init.rid.iter().map(|r| (init.ssrc, r.clone())).collect(),
                                layers: layers::Layers::default(),
                                red_payload_type: None,
                            },
                        );
                    }
                    // Simulcast: each further layer of a known track.
                    RTCPeerConnectionEvent::OnTrack(RTCTrackEvent::OnOpen(init)) => {
                        // Keyed by rid (the offer's, so bounded): a client that
                        // moves a layer to new SSRCs over and over replaces it.
                        if let (Some(t), Some(rid)) = (s.inbound.get_mut(&init.track_id), init.rid) {
                            match t.rids.iter_mut().find(|(_, r)| *r == rid) {
                                Some(entry) => entry.0 = init.ssrc,
                                None => t.rids.push((init.ssrc, rid)),
                            }
                        }
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
                                        let codecs = &p.rtp_parameters.codecs;
                                        // With RED negotiated, its packets are told apart by
                                        // payload type (`Forwarder::set_red_payload_type`).
                                        t.red_payload_type = codecs
                                            .iter()
                                            .find(|c| Codec::from_mime(&c.rtp_codec.mime_type) == Codec::Red)
                                            .map(|c| c.payload_type);
                                        let codec = codecs
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
                                let tk = TrackKey(self.next_track);
                                self.next_track = self.next_track.wrapping_add(1).max(1);
                                let Some(t) = s.inbound.get_mut(&track_id) else { continue };
                                t.key = Some(tk);
                                t.codec = Some(forwarded_codec(&mime, t.red_payload_type));
                                t.media_ssrc = packet.header.ssrc;
                                self.publish_order += 1;
                                t.published_at = self.publish_order;
                                let event_id = TrackId::generate();
                                t.event_id = Some(event_id.clone());
                                if !t.rids.is_empty() {
                                    // Simulcast: this stream is its first layer.
                                    let ssrc = packet.header.ssrc;
                                    let rid = t.rids.iter().find(|(x, _)| *x == ssrc).map(|(_, r)| r.clone());
                                    t.layers.push(layers::Layer::new(tk, rid.unwrap_or_default(), ssrc));
                                }
                                new_tracks.push((tk, track_id.clone(), t.kind, mime, ext, event_id));
                                // Registered below, after this borrow; forwarded from the next packet.
                                continue;
                            }
                        };
                        if new_tracks.iter().any(|n| n.0 == tk) {
                            continue;
                        }
                        // A simulcast layer: its own source.
                        let tk = if t.layers.is_empty() {
                            tk
                        } else if let Some(i) = t.layers.index_of_ssrc(packet.header.ssrc) {
                            let size = t.codec.and_then(|c| c.frame_size(&packet.payload));
                            t.layers.on_packet(now, i, packet.payload.len(), size);
                            t.layers.iter().nth(i).map_or(tk, |l| l.key)
                        } else if let Some(i) = t
                            .rids
                            .iter()
                            .find(|(x, _)| *x == packet.header.ssrc)
                            .and_then(|(_, rid)| t.layers.rebind(rid, packet.header.ssrc))
                        {
                            // A known layer on a new SSRC (its rid says which).
                            t.layers.on_packet(now, i, packet.payload.len(), None);
                            t.layers.iter().nth(i).map_or(tk, |l| l.key)
                        } else {
                            let ssrc = packet.header.ssrc;
                            if let Some((_, rid)) = t.rids.iter().find(|(x, _)| *x == ssrc)
                                && t.layers.len() < layers::LAYERS_MAX
                                && !new_layers.iter().any(|(_, _, x, _)| *x == ssrc)
                            {
                                new_layers.push((tk, track_id.clone(), ssrc, rid.clone()));
                            }
                            continue;
                        };
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
                                s.link.nacked += lost.len() as u64;
                                (nack.media_ssrc, Feedback::Nack(lost))
                            } else if let Some(cc) = any.downcast_ref::<TransportLayerCc>() {
                                if let Some(b) = s.bwe.as_mut() {
                                    let before = b.reported().0;
                                    b.on_feedback(now, cc);
                                    self.stats.twcc_reported += b.reported().0 - before;
                                }
                                continue;
                            } else if let Some(rr) = any.downcast_ref::<ReceiverReport>() {
                                // How the subscriber receives what this node sends it.
                                for block in &rr.reports {
                                    let Some(o) = s.outbound.iter_mut().find(|o| o.ssrc == block.ssrc) else {
                                        continue;
                                    };
                                    s.link.down_fraction_lost =
                                        Some(s.link.down_fraction_lost.unwrap_or(0).max(block.fraction_lost));
                                    let previous = o.sent.reported_lost.replace(block.total_lost);
                                    self.stats.lost_out += quality::newly_lost(previous, block.total_lost);
                                    let clock = if o.kind == RtpKind::Audio { 48_000.0 } else { 90_000.0 };
                                    self.stats.jitter_out.observe(f64::from(block.jitter) / clock);
                                    reports.push((block.last_sender_report, block.delay));
                                }
                                continue;
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
        if !reports.is_empty() {
            let ntp_now = self.ntp(now);
            for (lsr, dlsr) in reports {
                if let Some(rtt) = quality::round_trip(ntp_now, lsr, dlsr) {
                    self.stats.rtt.observe(rtt);
                    if let Some(s) = self.sessions.get_mut(&key) {
                        s.link.rtt_s = Some(rtt);
                    }
                }
            }
        }
        if let Some(st) = state_change {
            self.on_state(now, key, st);
        }
        for (tk, track_id, kind, mime, ext, event_id) in new_tracks {
            self.add_source(now, key, tk, track_id, kind, mime, ext, event_id, &mut actions);
        }
        if !new_layers.is_empty() {
            for (main, track_id, ssrc, rid) in new_layers {
                self.add_layer(now, key, main, track_id, ssrc, rid);
            }
            self.select_layers(now, &mut actions);
        }
        for (down, fb) in feedback {
            match fb {
                Feedback::Keyframe => self.forwarder.on_keyframe_request(now, down, &mut actions),
                Feedback::Nack(lost) => self.forwarder.on_nack(down, lost, &mut actions),
            }
        }
        self.apply(now, actions);
        if let Some(s) = self.sessions.get_mut(&key) {
            // Anything the work above produced for this leg goes out too.
            Self::push_writes(&mut self.outbox, s);
            let t = s.pc.poll_timeout();
            if t != s.next_timeout {
                s.next_timeout = t;
                if let Some(t) = t {
                    self.timers.push(Reverse((t, key)));
                }
            }
        }
    }

    /// A further simulcast layer of published track `main` (leg `key`):
    /// its own forwarder source, with the track's codec.
    fn add_layer(
        &mut self,
        now: Instant,
        key: Key,
        main: TrackKey,
        track_id: MediaStreamTrackId,
        ssrc: u32,
        rid: String,
    ) {
        let Some(spec) = self.forwarder.track_spec(main) else { return };
        let lk = TrackKey(self.next_track);
        self.next_track = self.next_track.wrapping_add(1).max(1);
        if self.forwarder.add_track(lk, spec).is_err() {
            return;
        }
        if self.forwarder.is_muted(main) {
            // A layer that appears while its track is muted is muted too.
            self.forwarder.set_track_muted(now, lk, true, &mut Vec::new());
        }
        let Some(t) = self.sessions.get_mut(&key).and_then(|s| s.inbound.get_mut(&track_id)) else {
            self.forwarder.remove_track(lk);
            return;
        };
        tracing::debug!(?main, layer = ?lk, %rid, ssrc, "simulcast layer");
        t.layers.push(layers::Layer::new(lk, rid, ssrc));
        self.track_owner.insert(lk, (key, track_id));
    }

    /// Sends the padding that player legs' bandwidth probes owe now
    /// ([`bwe::SendSide::padding_owed`]): padding-only packets on one of
    /// their video streams' RTX streams, at most [`PADDING_BURST`] a leg
    /// each [`PADDING_INTERVAL`], for as long as a probe pads.
    fn pad(&mut self, now: Instant) {
        let mut actions = std::mem::take(&mut self.spare_actions);
        let sessions = &self.sessions;
        self.probing.retain(|k| sessions.get(k).and_then(|s| s.bwe.as_ref()).is_some_and(|b| b.padding(now)));
        for key in &self.probing {
            let Some(s) = self.sessions.get(key) else { continue };
            let owed = s.bwe.as_ref().map_or(0, |b| b.padding_owed(now));
            let down = s
                .outbound
                .iter()
                .find(|o| {
                    o.kind == RtpKind::Video && o.rtx_ssrc.is_some() && self.forwarder.source_of(o.down).is_some()
                })
                .map(|o| o.down);
            let Some(down) = down else { continue };
            let n = (owed / PADDING_WIRE_BYTES).min(PADDING_BURST);
            for _ in 0..n {
                if !self.forwarder.padding(down, &mut actions) {
                    break;
                }
            }
        }
        self.next_padding = (!self.probing.is_empty()).then(|| now + PADDING_INTERVAL);
        self.apply(now, actions);
    }

    /// Moves every player of a simulcast track to the layer it should get
    /// now, at that layer's next keyframe: the best it asked for
    /// ([`layers::Layers::options`]), within its downlink estimate when it
    /// has one ([`layers::allocate`]: the estimate, less what its other
    /// streams send, shared among its simulcast streams).
    fn select_layers(&mut self, now: Instant, actions: &mut Vec<Action>) {
        let mut moves: Vec<(DownKey, TrackKey)> = Vec::new();
        let mut streams: Vec<(DownKey, layers::Wanted)> = Vec::new();
        // Dynacast: what the players of each layered track ask for.
        let mut watched: FxHashMap<(Key, MediaStreamTrackId), Vec<layers::Preference>> = FxHashMap::default();
        let keys: Vec<Key> = self.sessions.keys().copied().collect();
        for key in keys {
            let Some(s) = self.sessions.get(&key) else { continue };
            streams.clear();
            let mut others: u64 = 0;
            for o in &s.outbound {
                let layered = (o.kind == RtpKind::Video).then(|| self.forwarder.source_of(o.down)).flatten().and_then(
                    |current| {
                        let (k, tid) = self.track_owner.get(&current)?;
                        let t = self.sessions.get(k)?.inbound.get(tid)?;
                        (t.layers.len() >= 2).then_some((current, t, (*k, tid.clone())))
                    },
                );
                match layered {
                    Some((current, t, track)) => {
                        watched.entry(track).or_default().push(o.pref);
                        let options = t.layers.options(now, o.pref);
                        if !options.is_empty() {
                            streams.push((o.down, layers::Wanted { options, current }));
                        }
                    }
                    None => others = others.saturating_add(o.bitrate),
                }
            }
            if streams.is_empty() {
                continue;
            }
            let wanted: Vec<layers::Wanted> = streams.iter().map(|(_, w)| w.clone()).collect();
            let share = |e: u64| (((e as f64) * BWE_SHARE) as u64).saturating_sub(others);
            // Padding goes on a video stream's RTX stream (`Forwarder::padding`).
            let paddable = s.outbound.iter().any(|o| o.kind == RtpKind::Video && o.rtx_ssrc.is_some());
            let mut picks: Option<Vec<usize>> = None;
            if let Some(b) = self.sessions.get_mut(&key).and_then(|s| s.bwe.as_mut()) {
                b.tick(now);
                if let Some(e) = b.estimate() {
                    let mut p = layers::allocate(share(e), &wanted);
                    if p.iter().zip(&wanted).any(|(i, w)| i + 1 < w.options.len()) {
                        // Held below what it asked for: probe when calm (`bwe`).
                        let best = layers::cost_of_best(&wanted);
                        let need = (best.saturating_add(others) as f64 / BWE_SHARE) as u64;
                        let kind = if paddable { bwe::ProbeKind::Padding } else { bwe::ProbeKind::Switch };
                        if b.probe(now, need, kind) {
                            self.stats.bwe_probes += 1;
                            tracing::debug!(session = key, estimate = e, need, ?kind, "bandwidth probe");
                            match kind {
                                bwe::ProbeKind::Padding => {
                                    self.probing.push(key);
                                    self.next_padding = Some(now);
                                }
                                bwe::ProbeKind::Switch => {
                                    p = layers::allocate(share(b.estimate().unwrap_or(e)), &wanted)
                                }
                            }
                        }
                    }
                    picks = Some(p);
                }
            }
            let picks = picks.unwrap_or_else(|| wanted.iter().map(|w| w.options.len() - 1).collect());
            for ((down, w), pick) in streams.iter().zip(picks) {
                let Some(&(target, _)) = w.options.get(pick) else { continue };
                if target != w.current || self.forwarder.pending_of(*down).is_some() {
                    if self.forwarder.pending_of(*down) != Some(target) && target != w.current {
                        tracing::debug!(down = ?down, from = ?w.current, to = ?target, "simulcast layer change");
                    }
                    moves.push((*down, target));
                }
            }
        }
        for (down, target) in moves {
            let _ = self.forwarder.switch_at_keyframe(now, down, target, actions);
        }
        self.dynacast(now, &watched);
    }

    /// Dynacast: tells each simulcast publisher which of its layers to send
    /// ([`layers::Layers::dynacast`], with the preferences of the players
    /// that follow its layers now), as a [`MediaEvent::Layers`].
    fn dynacast(&mut self, now: Instant, watched: &FxHashMap<(Key, MediaStreamTrackId), Vec<layers::Preference>>) {
        for (key, s) in &mut self.sessions {
            for (tid, t) in s.inbound.iter_mut().filter(|(_, t)| t.layers.len() >= 2) {
                let prefs = watched.get(&(*key, tid.clone())).map(Vec::as_slice).unwrap_or_default();
                let Some(told) = t.layers.dynacast(now, prefs) else { continue };
                let Some(track) = t.event_id.clone() else { continue };
                tracing::debug!(session = %s.id, ?told, "dynacast");
                self.stats.dynacast_changes += 1;
                self.events.push_back(MediaEvent::Layers {
                    room_id: s.room_id.clone(),
                    sid: s.sid.clone(),
                    session_id: s.id.clone(),
                    track,
                    layers: told.into_iter().map(|(rid, active)| LayerState { rid, active }).collect(),
                });
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
        event_id: TrackId,
        actions: &mut Vec<Action>,
    ) {
        let red = self.sessions.get(&key).and_then(|s| s.inbound.get(&track_id)).and_then(|t| t.red_payload_type);
        let codec = forwarded_codec(&mime, red);
        if self.forwarder.add_track(tk, TrackSpec { codec, audio_level_ext: ext }).is_err() {
            return;
        }
        if let Some(pt) = red {
            self.forwarder.set_red_payload_type(tk, pt);
        }
        let simulcast =
            self.sessions.get(&key).and_then(|s| s.inbound.get(&track_id)).is_some_and(|t| !t.rids.is_empty());
        self.track_owner.insert(tk, (key, track_id));
        let Some(s) = self.sessions.get(&key) else { return };
        let (room, identity, sid, screen) = (s.room_id.clone(), s.identity.clone(), s.sid.clone(), s.screen);
        self.events.push_back(MediaEvent::TrackPublished {
            room_id: room.clone(),
            identity: identity.clone(),
            sid,
            track: event_id,
            kind,
            codec: mime,
            screen,
            simulcast,
        });
        tracing::info!(room = %room, %identity, ?kind, ?codec, "track published");
        // Subscribers in the room that follow the latest publisher (or this one) switch to it.
        let subs: Vec<(Key, DownKey)> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.room_id == room && s.connected)
            .filter(|(_, s)| match &s.role {
                Role::Subscribe { participant, screen: wants_screen } => {
                    *wants_screen == screen && participant.as_ref().is_none_or(|p| *p == identity)
                }
                Role::Publish => false,
            })
            .flat_map(|(k, s)| s.outbound.iter().filter(|o| o.kind == kind).map(move |o| (*k, o.down)))
            .collect();
        for (sk, down) in subs {
            if !self.set_format(sk, down, codec) {
                tracing::debug!(?down, ?codec, "subscriber did not negotiate the new source's codec");
                continue;
            }
            let old = self.forwarder.source_of(down);
            if self.forwarder.switch(now, down, tk, actions).is_ok() && old != Some(tk) {
                if let Some(old) = old {
                    self.report_subscription(sk, self.track_event_id(old), Some(SubscriptionEnd::Switched));
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
                // The egress path is chosen once, before any media goes out,
                // and kept (see [`srtp`]: one path per SSRC).
                if s.egress.is_none() && !self.config.own_srtp_egress {
                    self.stats.srtp_rtc_legs += 1;
                    s.egress = Some(None);
                }
                if s.egress.is_none() {
                    match s.capture.egress() {
                        Ok(e) => {
                            tracing::debug!(session = %s.id, profile = e.profile().name(), "SRTP egress by Arc");
                            s.egress = Some(Some(e));
                        }
                        Err(e) => {
                            tracing::warn!(session = %s.id, error = %e, "SRTP egress left to rtc");
                            self.stats.srtp_rtc_legs += 1;
                            s.egress = Some(None);
                        }
                    }
                }
                if matches!(s.egress, Some(None)) {
                    // `rtc` sends only the SSRCs of the track it was given:
                    // retransmissions stay on the streams themselves.
                    for o in &s.outbound {
                        self.forwarder.disable_rtx(o.down);
                    }
                }
                tracing::info!(session = %s.id, "connected");
                self.attach_downs(now, key);
            }
            RTCPeerConnectionState::Disconnected => {
                s.disconnected_since.get_or_insert(now);
            }
            RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed => {
                self.end(now, key, LeaveReason::ConnectionLost);
            }
            _ => {}
        }
    }

    /// The log id (`tr_…`) of a source track.
    fn track_event_id(&self, track: TrackKey) -> Option<TrackId> {
        let (k, tid) = self.track_owner.get(&track)?;
        self.sessions.get(k)?.inbound.get(tid)?.event_id.clone()
    }

    /// Reports a subscription change of subscriber leg `key`.
    fn report_subscription(&mut self, key: Key, track_id: Option<TrackId>, ended: Option<SubscriptionEnd>) {
        let (Some(track), Some(s)) = (track_id, self.sessions.get(&key)) else { return };
        let (identity, sid) = (s.identity.clone(), s.sid.clone());
        self.events.push_back(match ended {
            None => MediaEvent::SubscriptionStarted { track, identity, sid },
            Some(reason) => MediaEvent::SubscriptionEnded { track, identity, sid, reason },
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
                && self.set_format(key, down, codec)
                && self.forwarder.switch(now, down, track, &mut actions).is_ok()
            {
                self.report_subscription(key, self.track_event_id(track), None);
            }
        }
        self.apply(now, actions);
    }

    /// Carries out the forwarder's actions. The vector's buffer is kept for
    /// the next drain (no allocation per packet in steady state).
    fn apply(&mut self, now: Instant, mut actions: Vec<Action>) {
        for a in actions.drain(..) {
            match a {
                Action::Send { down, packet, wire } => {
                    let Some(key) = self.down_owner.get(&down).copied() else { continue };
                    let Some(s) = self.sessions.get_mut(&key) else { continue };
                    let Some(out) = s.outbound.iter_mut().find(|o| o.down == down) else { continue };
                    // A retransmission on the RTX stream (only ever sent on Arc's egress).
                    let rtx = out.rtx_ssrc == Some(packet.header.ssrc);
                    if !rtx {
                        out.sent.packets = out.sent.packets.wrapping_add(1);
                        out.sent.octets = out.sent.octets.wrapping_add(packet.payload.len() as u32);
                        if out.sent.last.is_none_or(|(ts, _)| (packet.header.timestamp.wrapping_sub(ts) as i32) > 0) {
                            out.sent.last = Some((packet.header.timestamp, now));
                        }
                    }
                    if let Some(Some(egress)) = s.egress.as_mut() {
                        // Arc's own egress: written and protected in place.
                        let Some(to) = s.remote else { continue };
                        let roll = if rtx { &mut out.rtx_roll } else { &mut out.roll };
                        // A transport-wide number for the player's estimate.
                        let twcc = out.twcc_ext.zip(s.bwe.as_ref().map(|b| b.next_seq()));
                        let written = egress.write_forwarded(
                            roll,
                            &packet.header,
                            twcc,
                            &packet.payload,
                            &wire,
                            &mut self.egress_buf,
                        );
                        match written {
                            Ok(tagged) => {
                                self.stats.srtp_own_packets += 1;
                                let payload = self.egress_buf.split();
                                if tagged && let Some(b) = s.bwe.as_mut() {
                                    b.on_sent(now, payload.len());
                                }
                                self.outbox.push_back(Transmit { to: to.0, transport: to.1, payload });
                            }
                            Err(e) => tracing::trace!(session = %s.id, error = %e, "SRTP egress"),
                        }
                        continue;
                    }
                    let sender = out.sender;
                    // `rtc`'s egress (a leg whose keys did not verify) takes
                    // a payload and extensions of its own.
                    let mut packet = packet;
                    if let Some(p) = wire.patch {
                        let mut v = packet.payload.to_vec();
                        p.apply(&mut v);
                        packet.payload = v.into();
                    }
                    if let Some((id, l)) = wire.audio_level {
                        let _ = packet.header.set_extension(id, bytes::Bytes::copy_from_slice(&[l]));
                    }
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
                    // A simulcast layer is asked by its own SSRC.
                    let media_ssrc = t.layers.by_key(track).map_or(t.media_ssrc, |l| l.ssrc);
                    let receiver = t.receiver;
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
        if actions.capacity() > self.spare_actions.capacity() {
            self.spare_actions = actions;
        }
    }

    /// Ends a leg and its siblings: closes their connections, unpublishes
    /// their tracks (their subscribers move to another source if the room has
    /// one), reports them.
    fn end(&mut self, now: Instant, key: Key, reason: LeaveReason) {
        let Some(mut s) = self.sessions.remove(&key) else { return };
        let _ = s.pc.close();
        Self::push_writes(&mut self.outbox, &mut s);
        for a in &s.addrs {
            self.by_addr.remove(a);
            self.routes.push_back(RouteChange::Addr { addr: a.0, transport: a.1, owned: false });
        }
        self.by_ufrag.remove(&s.ufrag);
        self.routes.push_back(RouteChange::Ufrag { ufrag: s.ufrag.clone(), owned: false });
        // The session's other legs (other transports of its offer) end with it.
        let siblings: Vec<Key> =
            self.by_id.remove(&s.id).unwrap_or_default().into_iter().filter(|k| *k != key).collect();
        for o in &s.outbound {
            if let Some(track) = self.forwarder.source_of(o.down).and_then(|t| self.track_event_id(t)) {
                self.events.push_back(MediaEvent::SubscriptionEnded {
                    track,
                    identity: s.identity.clone(),
                    sid: s.sid.clone(),
                    reason: SubscriptionEnd::Left(reason),
                });
            }
            self.forwarder.remove_down(o.down);
            self.down_owner.remove(&o.down);
        }
        let mut actions = Vec::new();
        for t in s.inbound.values() {
            if t.key.is_none() {
                continue;
            }
            let mut orphans = Vec::new();
            for tk in t.keys() {
                self.track_owner.remove(&tk);
                orphans.extend(self.forwarder.remove_track(tk));
            }
            let Some(event_id) = t.event_id.clone() else { continue };
            self.events.push_back(MediaEvent::TrackUnpublished { track: event_id.clone(), reason });
            for down in orphans {
                let Some(sk) = self.down_owner.get(&down).copied() else { continue };
                self.report_subscription(sk, Some(event_id.clone()), Some(SubscriptionEnd::Unpublished));
                let Some(sub) = self.sessions.get(&sk) else { continue };
                let role = sub.role.clone();
                let room = sub.room_id.clone();
                if let Some(next) = self.source_for(&room, &role, t.kind)
                    && let Some(codec) = self.codec_of(next)
                    && self.set_format(sk, down, codec)
                    && self.forwarder.switch(now, down, next, &mut actions).is_ok()
                {
                    self.report_subscription(sk, self.track_event_id(next), None);
                }
            }
        }
        self.apply(now, actions);
        tracing::info!(session = %s.id, room = %s.room_id, identity = %s.identity, ?reason, "session ended");
        self.events.push_back(MediaEvent::SessionEnded {
            room_id: s.room_id,
            identity: s.identity,
            sid: s.sid,
            session_id: s.id,
            reason,
            attached: s.attached,
        });
        for k in siblings {
            self.end(now, k, reason);
        }
    }
}

/// Notes that a leg heard from `addr`; an authenticated check from a new
/// address while the media address is silent moves the media there, and so
/// does a verified nomination of it (`nominated`) at once.
fn heard(s: &mut Session, now: Instant, addr: (SocketAddr, Transport), data: &[u8], nominated: bool) {
    match s.heard.iter_mut().find(|(a, _)| *a == addr) {
        Some((_, t)) => *t = now,
        None => s.heard.push((addr, now)),
    }
    // Only addresses learned from an authenticated check are in `addrs`, and
    // a datagram from one is a check when it is STUN.
    let Some(current) = s.remote else { return };
    if current == addr || demux::classify(data) != demux::PacketClass::Stun || !s.connected {
        return;
    }
    let silent = s
        .heard
        .iter()
        .find(|(a, _)| *a == current)
        .is_none_or(|(_, t)| now.saturating_duration_since(*t) >= ADDRESS_SILENT_SWITCH);
    if silent || nominated {
        tracing::info!(session = %s.id, from = %current.0, to = %addr.0, nominated, "client moved; media follows");
        s.remote = Some(addr);
    }
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

    #[test]
    fn session_ids_name_their_worker() {
        assert_eq!(worker_of(&MediaSessionId::parse("se_w3_abc").expect("id")), Some(3));
        assert_eq!(worker_of(&MediaSessionId::parse("se_w12_x_y").expect("id")), Some(12));
        assert_eq!(worker_of(&MediaSessionId::parse("se_abc").expect("id")), None);
        assert_eq!(worker_of(&MediaSessionId::parse("se_wx_abc").expect("id")), None);
    }

    #[test]
    fn subscription_end_reasons_have_wire_names() {
        assert_eq!(SubscriptionEnd::Switched.as_str(), "switched");
        assert_eq!(SubscriptionEnd::Unpublished.as_str(), "unpublished");
        assert_eq!(SubscriptionEnd::Left(LeaveReason::Kicked).as_str(), "kicked");
    }
}
