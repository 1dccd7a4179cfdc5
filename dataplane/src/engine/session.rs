//! One leg of a media session: its `rtc` peer connection, the tracks it
//! publishes and the streams it plays. A session with several transports
//! (an offer without BUNDLE) has one leg per transport; they share the
//! session id and end together.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use arc_events::{MediaSessionId, ParticipantIdentity, ParticipantSid, RoomId, TrackId};
use arc_nodeproto::Role;
use rtc::media_stream::MediaStreamTrackId;
use rtc::peer_connection::RTCPeerConnection;
use rtc::rtp_transceiver::{RTCRtpReceiverId, RTCRtpSenderId};

use super::srtp::{KeyCapture, Rollover, SrtpEgress};
use super::{RtpKind, Transport};
use crate::forward::{Codec, DownKey, TrackKey};

/// A leg's key inside the engine.
pub(crate) type Key = u32;

/// One publisher track inside a leg.
#[derive(Debug)]
pub(crate) struct InTrack {
    /// The forwarder's key, once the first packet told the codec.
    pub(crate) key: Option<TrackKey>,
    pub(crate) receiver: RTCRtpReceiverId,
    pub(crate) kind: RtpKind,
    pub(crate) codec: Option<Codec>,
    pub(crate) media_ssrc: u32,
    /// The track's id in the log, once published.
    pub(crate) event_id: Option<TrackId>,
    /// Order of publication on this node (the latest is what players follow).
    pub(crate) published_at: u64,
    /// Simulcast: the RTP stream ids the offer announced, and the SSRC each
    /// came with (from `rtc`'s track events), for a publisher that sends
    /// layers; empty otherwise.
    pub(crate) rids: Vec<(u32, String)>,
    /// Simulcast: each layer heard so far, its own forwarder source (the
    /// first is `key`); empty for a track without layers.
    pub(crate) layers: super::layers::Layers,
    /// The payload type of the publisher's redundant audio (`audio/red`),
    /// if negotiated.
    pub(crate) red_payload_type: Option<u8>,
}

impl InTrack {
    /// The forwarder sources of this track: its layers, or its one key.
    pub(crate) fn keys(&self) -> impl Iterator<Item = TrackKey> + '_ {
        let single = if self.layers.is_empty() { self.key } else { None };
        single.into_iter().chain(self.layers.iter().map(|l| l.key))
    }
}

/// One subscriber stream inside a leg.
#[derive(Debug)]
pub(crate) struct OutTrack {
    pub(crate) down: DownKey,
    pub(crate) sender: RTCRtpSenderId,
    pub(crate) kind: RtpKind,
    pub(crate) ssrc: u32,
    /// Negotiated payload type per codec, and the RTX payload type the
    /// subscriber paired with it (RFC 4588 `apt`), if any.
    pub(crate) pts: Vec<(Codec, u8, Option<u8>)>,
    pub(crate) audio_level_ext: Option<u8>,
    /// The player's id for the transport-wide sequence number extension
    /// (send-side bandwidth estimation, `super::bwe`), if negotiated.
    pub(crate) twcc_ext: Option<u8>,
    /// The stream's RTX SSRC, if the subscriber negotiated RTX.
    pub(crate) rtx_ssrc: Option<u32>,
    /// Sender state when Arc protects the leg's media itself: the SRTP
    /// rollover counters (the stream's and its RTX stream's) and what
    /// sender reports tell.
    pub(crate) roll: Rollover,
    pub(crate) rtx_roll: Rollover,
    pub(crate) sent: SentCounters,
    /// Which simulcast layer the player wants (video; see [`super::layers`]).
    pub(crate) pref: super::layers::Preference,
    /// What it sent over the last housekeeping interval (bits per second),
    /// and its payload octet count when that was measured.
    pub(crate) bitrate: u64,
    pub(crate) octets_at_sample: u32,
}

/// What an outgoing stream has sent (for its RTCP sender reports).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SentCounters {
    pub(crate) packets: u32,
    pub(crate) octets: u32,
    /// The newest RTP timestamp sent, and when.
    pub(crate) last: Option<(u32, Instant)>,
    pub(crate) last_report: Option<Instant>,
    /// The cumulative loss the subscriber's last receiver report gave.
    pub(crate) reported_lost: Option<u32>,
}

/// One leg.
pub(crate) struct Session {
    pub(crate) id: MediaSessionId,
    pub(crate) room_id: RoomId,
    pub(crate) identity: ParticipantIdentity,
    pub(crate) sid: ParticipantSid,
    pub(crate) role: Role,
    /// It belongs to a participant that outlives it (see `OpenSession::attached`).
    pub(crate) attached: bool,
    /// A publish session sharing a screen (see `OpenSession::screen`).
    pub(crate) screen: bool,
    pub(crate) pc: RTCPeerConnection,
    /// Our ICE credentials for this leg.
    pub(crate) ufrag: String,
    pub(crate) pwd: String,
    /// Client addresses learned from authenticated checks.
    pub(crate) addrs: Vec<(SocketAddr, Transport)>,
    /// Where the client's media goes (the address `rtc` selected, until the
    /// client is heard only from another authenticated address: NAT
    /// rebinding), and when each known address was last heard from.
    pub(crate) remote: Option<(SocketAddr, Transport)>,
    pub(crate) heard: Vec<((SocketAddr, Transport), Instant)>,
    pub(crate) inbound: HashMap<MediaStreamTrackId, InTrack>,
    pub(crate) outbound: Vec<OutTrack>,
    pub(crate) created: Instant,
    pub(crate) connected: bool,
    /// The node's DTLS ServerHello flight went out: a datagram of nothing
    /// but ClientHello records from now on is the client repeating its
    /// hello because that flight was lost. It is dropped, not handed to
    /// `rtc`: rtc-dtls 0.21.1 clears its retransmission timer on any
    /// handshake record while it waits, and a repeated hello (which its
    /// fragment buffer discards as old) would leave it waiting for ever
    /// instead of sending the lost flight again a second later (a Chromium
    /// player behind 5 % loss never connected, about one run in four).
    pub(crate) server_hello_sent: bool,
    pub(crate) disconnected_since: Option<Instant>,
    pub(crate) next_timeout: Option<Instant>,
    pub(crate) dirty: bool,
    /// The leg's crypto provider, which saw its SRTP keys.
    pub(crate) capture: Arc<KeyCapture>,
    /// The current connection-quality window.
    pub(crate) link: super::quality::LinkWindow,
    /// How its outgoing media is protected, chosen once when it connects:
    /// `Some(Some(_))` by Arc, `Some(None)` by `rtc` (the keys did not verify).
    pub(crate) egress: Option<Option<SrtpEgress>>,
    /// Its ICE restarted: once the client nominates a path under the new
    /// credentials, its video streams ask their sources for a keyframe (what
    /// it lost while its path was down cannot be repaired).
    pub(crate) keyframe_on_nomination: bool,
    /// A player's send history and downlink estimate, when it negotiated
    /// transport-wide congestion control (`super::bwe`).
    pub(crate) bwe: Option<super::bwe::SendSide>,
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
