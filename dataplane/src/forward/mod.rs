//! The forwarding core: sans-IO, no sockets, no clock of its own.
//!
//! Publishers' tracks come in as decrypted RTP packets with the time they
//! arrived; subscribers' downtracks go out as RTP packets rewritten for each
//! subscriber (SSRC, payload type, sequence number, timestamp), plus keyframe
//! requests for the publishers. Feedback from subscribers (PLI/FIR, NACK)
//! comes in as calls and comes out as actions. The I/O layer (the node's
//! event loop) owns the peer connections and carries the actions out.
//!
//! Rules it keeps:
//! - A downtrack's output sequence numbers and timestamps are continuous
//!   across source switches: a subscriber never sees a jump backwards or a
//!   repeated number, so switching sources never confuses its jitter buffer.
//! - A video downtrack forwards nothing until a keyframe arrives from its
//!   current source, and asks the publisher for one (throttled per track).
//! - NACKs are answered from one bounded cache per publisher track (shared
//!   by all its subscribers), mapped back through each downtrack's offsets;
//!   a packet older than the cache is simply not answered. The cache is
//!   sized by time (`cache.rs`) and copies payloads, so a publisher's
//!   buffers are released once forwarded; a retransmission rewrites exactly
//!   the fields the first send carried, so its bytes are identical.
//! - Header extensions are not forwarded (the subscriber's own session adds
//!   what it negotiated), except audio level, re-numbered per subscriber.

use rustc_hash::FxHashMap;
use std::time::{Duration, Instant};

use rtc::rtp::Packet;

mod cache;
pub mod codec;
pub mod reception;
pub mod speech;

pub use cache::CacheConfig;
use cache::{Cached, PacketCache};
pub use codec::Codec;

/// A publisher's track, node-local.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrackKey(pub u32);

/// One subscriber's outgoing stream, node-local.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DownKey(pub u32);

/// Tunables.
#[derive(Debug, Clone)]
pub struct ForwardConfig {
    /// Least time between two keyframe requests sent to one publisher track.
    pub keyframe_request_interval: Duration,
    /// Retransmission cache of each video track.
    pub video_cache: CacheConfig,
    /// Retransmission cache of each audio track (none by default: Opus
    /// conceals a lost packet better than a late one arrives).
    pub audio_cache: CacheConfig,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        Self {
            keyframe_request_interval: Duration::from_millis(500),
            // Half a second back (a NACK answered later than that misses
            // its frame anyway); 512 entries cover 1,000 packets/s.
            video_cache: CacheConfig {
                packets: 512,
                history: Duration::from_millis(500),
                min_bytes: 32 * 1024,
                max_bytes: 2 * 1024 * 1024,
            },
            audio_cache: CacheConfig::NONE,
        }
    }
}

/// What a publisher's track is.
#[derive(Debug, Clone)]
pub struct TrackSpec {
    pub codec: Codec,
    /// The publisher's id for the audio-level header extension, if negotiated.
    pub audio_level_ext: Option<u8>,
}

/// How a subscriber's stream must look on the wire.
#[derive(Debug, Clone)]
pub struct DownSpec {
    /// The SSRC this subscriber's session announced for the stream.
    pub ssrc: u32,
    /// The payload type the subscriber negotiated for the source's codec.
    pub payload_type: u8,
    /// The subscriber's id for the audio-level extension, if negotiated.
    pub audio_level_ext: Option<u8>,
    /// The RTX stream (RFC 4588) paired with this one, if the subscriber
    /// negotiated one: retransmissions go there, each under its own
    /// sequence number, so the subscriber tells a repair from a duplicate.
    pub rtx: Option<RtxStream>,
}

/// A subscriber stream's retransmission stream (RFC 4588).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RtxStream {
    pub ssrc: u32,
    /// Its first sequence number (random, as RFC 3550 asks of any stream).
    pub first_seq: u16,
}

/// What the I/O layer must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send this (rewritten) packet on the subscriber's stream, with what
    /// `wire` adds where it is written.
    Send { down: DownKey, packet: Packet, wire: Wire },
    /// Ask the publisher of this track for a keyframe (PLI).
    RequestKeyframe { track: TrackKey },
}

/// Counters the node reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ForwardStats {
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
    /// Packets dropped while a downtrack waited for a keyframe.
    pub dropped_waiting_keyframe: u64,
    /// Packets from before a switch, dropped.
    pub dropped_stale: u64,
    pub nacks_answered: u64,
    pub nacks_missed: u64,
    /// Of the NACKs answered, those answered on an RTX stream.
    pub rtx_sent: u64,
    /// Padding packets sent for bandwidth probes.
    pub padding_sent: u64,
    pub keyframe_requests: u64,
    /// RED packets whose blocks ran past their end, not forwarded to
    /// subscribers that take the primary block alone.
    pub dropped_malformed_red: u64,
    /// Packets that came as redundant audio (`audio/red`).
    pub red_in: u64,
    /// Of the packets sent, redundant ones sent as their newest frame alone.
    pub red_stripped: u64,
}

/// Errors from misuse by the I/O layer (never from network input).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ForwardError {
    #[error("unknown track {0:?}")]
    UnknownTrack(TrackKey),
    #[error("unknown downtrack {0:?}")]
    UnknownDown(DownKey),
    #[error("{0:?} already exists")]
    DuplicateTrack(TrackKey),
    #[error("{0:?} already exists")]
    DuplicateDown(DownKey),
}

#[derive(Debug)]
struct Source {
    spec: TrackSpec,
    cache: PacketCache,
    downs: Vec<DownKey>,
    last_keyframe_request: Option<Instant>,
    /// A keyframe request is owed (asked while throttled).
    keyframe_owed: bool,
    /// Latest audio level (-dBov) and when it was seen.
    level: Option<(u8, Instant)>,
    /// Voice activity in the current observation interval.
    speech: speech::Speech,
    /// Muted by a moderator: nothing of it is forwarded.
    muted: bool,
    /// What its packets say about the path from the publisher.
    reception: reception::Reception,
    /// Downtracks that switch to this track at its next keyframe (a
    /// simulcast layer change: they keep their current source until then).
    pending_downs: Vec<DownKey>,
    /// An `audio/red` track: the payload type its redundant packets come
    /// with (others are plain Opus).
    red_payload_type: Option<u8>,
}

#[derive(Debug)]
struct Down {
    spec: DownSpec,
    source: Option<TrackKey>,
    munger: Munger,
    /// Video only: forwarding waits for a keyframe from the current source.
    waiting_keyframe: bool,
    paused: bool,
    /// The RTX payload type paired with the current payload type (`None`:
    /// retransmit on the stream itself).
    rtx_payload_type: Option<u8>,
    /// The next RTX sequence number.
    rtx_seq: u16,
    /// A source it switches to at that source's next keyframe
    /// ([`Forwarder::switch_at_keyframe`]).
    pending: Option<TrackKey>,
    /// From an `audio/red` source ([`Forwarder::set_red`]): the payload
    /// type its plain Opus packets go out with, and whether its redundant
    /// packets go out as their primary block alone (the subscriber did not
    /// negotiate RED).
    red: Option<RedOut>,
}

/// How a downtrack forwards an `audio/red` source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedOut {
    /// The subscriber's payload type for Opus.
    pub opus_payload_type: u8,
    /// Send redundant packets as their primary block, with that payload
    /// type (RFC 2198: the newest frame is the last block).
    pub strip: bool,
}

/// The per-subscriber rewriting of sequence numbers and timestamps.
#[derive(Debug, Clone, Default)]
struct Munger {
    /// Whether any packet went out yet.
    started: bool,
    /// Whether the current source's first packet has been seen.
    epoch_started: bool,
    seq_offset: u16,
    ts_offset: u32,
    /// First input sequence number of the current epoch.
    epoch_first_in: u16,
    last_out_seq: u16,
    last_out_ts: u32,
    last_out_at: Option<Instant>,
    /// Highest output sequence number sent (for NACK sanity).
    highest_out_seq: u16,
    /// Output sequence numbers from the epoch's first to the highest sent
    /// (saturating): 16-bit distances from the epoch's start stop meaning
    /// anything after 32,768 packets (≈ 3.6 minutes of 720p video).
    epoch_len: u32,
    /// VP8 only: the payload descriptor's picture ID and TL0PICIDX, kept
    /// continuous across source switches as sequence numbers are (a
    /// receiver finds a frame's references by picture ID: a simulcast layer
    /// whose IDs lag the previous layer's would have every frame after its
    /// keyframe taken as old and dropped — the picture froze).
    vp8: Vp8Munger,
}

#[derive(Debug, Clone, Copy, Default)]
struct Vp8Munger {
    started: bool,
    epoch_started: bool,
    pid_offset: u16,
    tl0_offset: u8,
    last_pid: u16,
    last_tl0: u8,
}

/// Picture IDs are 15-bit.
const PID_MASK: u16 = 0x7fff;

impl Vp8Munger {
    /// Maps a forwarded packet's ids (the first of an epoch sets the offsets).
    fn map(&mut self, ids: &codec::Vp8Ids) -> (Option<u16>, Option<u8>) {
        if !self.epoch_started {
            self.epoch_started = true;
            if self.started {
                if let Some((pid, _, _)) = ids.picture_id {
                    self.pid_offset = pid.wrapping_sub(self.last_pid.wrapping_add(1)) & PID_MASK;
                }
                if let Some((tl0, _)) = ids.tl0 {
                    self.tl0_offset = tl0.wrapping_sub(self.last_tl0.wrapping_add(1));
                }
            }
            self.started = true;
        }
        let (pid, tl0) = self.apply(ids);
        if let Some(p) = pid {
            // Newer (15-bit serial arithmetic) or the first.
            let ahead = p.wrapping_sub(self.last_pid) & PID_MASK;
            if ahead < 0x4000 {
                self.last_pid = p;
            }
        }
        if let Some(t) = tl0
            && (t.wrapping_sub(self.last_tl0) as i8) >= 0
        {
            self.last_tl0 = t;
        }
        (pid, tl0)
    }

    /// The ids a packet of the current epoch goes out with.
    fn apply(&self, ids: &codec::Vp8Ids) -> (Option<u16>, Option<u8>) {
        let pid = ids.picture_id.map(|(p, _, _)| p.wrapping_sub(self.pid_offset) & PID_MASK);
        let tl0 = ids.tl0.map(|(t, _)| t.wrapping_sub(self.tl0_offset));
        (pid, tl0)
    }
}

/// What a forwarded packet carries on the wire beyond its `Packet`, added
/// where it is written (Arc's egress writes both into its send buffer):
/// forwarding allocates nothing for them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wire {
    /// Its payload's renumbered VP8 ids.
    pub patch: Option<PayloadPatch>,
    /// The audio level (RFC 6464, the publisher's level without the voice
    /// flag) under the subscriber's extension id: `(id, level)`.
    pub audio_level: Option<(u8, u8)>,
}

/// Bytes of a forwarded payload that go out differently from how they
/// came: a VP8 descriptor's picture ID and TL0PICIDX, renumbered to stay
/// continuous across source switches. Applied where the packet is written
/// (Arc's egress copies the payload into its send buffer anyway and patches
/// it there): forwarding copies no payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadPatch {
    ids: codec::Vp8Ids,
    pid: Option<u16>,
    tl0: Option<u8>,
}

impl PayloadPatch {
    /// Writes the new ids into `payload` (the packet's payload as it came).
    pub fn apply(&self, payload: &mut [u8]) {
        write_vp8_ids(payload, &self.ids, self.pid, self.tl0);
    }
}

/// What a VP8 payload's descriptor needs rewritten to carry `pid` and
/// `tl0`; `None` when its ids are those already — always, for a subscriber
/// whose source never switched.
pub(crate) fn vp8_patch(ids: &codec::Vp8Ids, pid: Option<u16>, tl0: Option<u8>) -> Option<PayloadPatch> {
    let pid_same = match (ids.picture_id, pid) {
        (Some((old, _, long)), Some(new)) => {
            let mask = if long { PID_MASK } else { 0x7f };
            old & mask == new & mask
        }
        _ => true,
    };
    let tl0_same = match (ids.tl0, tl0) {
        (Some((old, _)), Some(new)) => old == new,
        _ => true,
    };
    (!(pid_same && tl0_same)).then_some(PayloadPatch { ids: *ids, pid, tl0 })
}

/// Writes a VP8 descriptor's picture ID and TL0PICIDX where `ids` found them.
fn write_vp8_ids(v: &mut [u8], ids: &codec::Vp8Ids, pid: Option<u16>, tl0: Option<u8>) {
    if let (Some((_, at, long)), Some(new)) = (ids.picture_id, pid) {
        if long {
            if let Some(b) = v.get_mut(at..at + 2) {
                b[0] = 0x80 | ((new >> 8) & 0x7f) as u8;
                b[1] = (new & 0xff) as u8;
            }
        } else if let Some(b) = v.get_mut(at) {
            *b = (new & 0x7f) as u8;
        }
    }
    if let (Some((_, at)), Some(new)) = (ids.tl0, tl0)
        && let Some(b) = v.get_mut(at)
    {
        *b = new;
    }
}

impl Munger {
    /// Starts a new epoch: the next packet is mapped right after the last one sent.
    fn switch(&mut self) {
        self.epoch_started = false;
        self.vp8.epoch_started = false;
    }

    /// Maps an input packet; `None` means drop it (from before the switch).
    fn map(&mut self, now: Instant, seq: u16, ts: u32, clock_rate: u32) -> Option<(u16, u32)> {
        if !self.epoch_started {
            let out_seq = if self.started { self.last_out_seq.wrapping_add(1) } else { seq };
            let out_ts = match (self.started, self.last_out_at) {
                (true, Some(at)) => {
                    let elapsed = now.saturating_duration_since(at);
                    let ticks = (elapsed.as_micros() * u128::from(clock_rate) / 1_000_000) as u32;
                    self.last_out_ts.wrapping_add(ticks.max(1))
                }
                _ => ts,
            };
            self.seq_offset = seq.wrapping_sub(out_seq);
            self.ts_offset = ts.wrapping_sub(out_ts);
            self.epoch_first_in = seq;
            self.epoch_started = true;
            self.started = true;
            self.highest_out_seq = out_seq.wrapping_sub(1);
            self.epoch_len = 0;
        }
        // From before the switch (a late packet of the old source's numbering);
        // once the epoch is long, nothing that old can still arrive.
        if self.epoch_len < 0x8000 && (seq.wrapping_sub(self.epoch_first_in) as i16) < 0 {
            return None;
        }
        let out_seq = seq.wrapping_sub(self.seq_offset);
        let out_ts = ts.wrapping_sub(self.ts_offset);
        let advance = out_seq.wrapping_sub(self.highest_out_seq);
        if (advance as i16) > 0 {
            self.epoch_len = self.epoch_len.saturating_add(u32::from(advance));
            self.highest_out_seq = out_seq;
            self.last_out_seq = out_seq;
            self.last_out_ts = out_ts;
            self.last_out_at = Some(now);
        }
        Some((out_seq, out_ts))
    }

    /// The input sequence number an output one came from, if it is of this epoch.
    fn unmap(&self, out_seq: u16) -> Option<u16> {
        if !self.epoch_started {
            return None;
        }
        // Sent already, and in this epoch.
        let behind = self.highest_out_seq.wrapping_sub(out_seq);
        ((behind as i16) >= 0 && u32::from(behind) < self.epoch_len).then(|| out_seq.wrapping_add(self.seq_offset))
    }
}

/// The forwarding core of one node (every room's tracks; rooms are the I/O
/// layer's grouping of who subscribes to what).
#[derive(Debug, Default)]
pub struct Forwarder {
    config: ForwardConfig,
    // Node-local integer keys, never chosen by a client: FxHash, not SipHash
    // (two lookups per forwarded packet).
    sources: FxHashMap<TrackKey, Source>,
    downs: FxHashMap<DownKey, Down>,
    stats: ForwardStats,
    /// Packets lost on their way from publishers, by tracks that ended.
    lost_in_ended: u64,
}

impl Forwarder {
    pub fn new(config: ForwardConfig) -> Self {
        Self { config, ..Self::default() }
    }

    pub fn stats(&self) -> ForwardStats {
        self.stats
    }

    pub fn track_count(&self) -> usize {
        self.sources.len()
    }

    /// Packets lost between publishers and this node, since it started
    /// (RFC 3550 expected minus received, over every track).
    pub fn lost_in(&self) -> u64 {
        self.lost_in_ended + self.sources.values().map(|s| s.reception.lost()).sum::<u64>()
    }

    /// Each track's interarrival jitter now, in seconds (tracks that
    /// received something).
    pub fn jitter_in(&self) -> impl Iterator<Item = f64> + '_ {
        self.sources
            .values()
            .filter(|s| s.reception.started())
            .map(|s| f64::from(s.reception.jitter()) / f64::from(s.spec.codec.clock_rate().max(1)))
    }

    /// A track's packets found missing on arrival (before retransmission
    /// repaired them) and packets received, so far (for connection quality).
    pub fn reception_counts(&self, track: TrackKey) -> Option<(u64, u64)> {
        self.sources.get(&track).map(|s| (s.reception.gaps(), s.reception.received_total()))
    }

    pub fn down_count(&self) -> usize {
        self.downs.len()
    }

    /// The source a downtrack currently forwards.
    pub fn source_of(&self, down: DownKey) -> Option<TrackKey> {
        self.downs.get(&down).and_then(|d| d.source)
    }

    /// Whether a track is muted (by a moderator).
    pub fn is_muted(&self, track: TrackKey) -> bool {
        self.sources.get(&track).is_some_and(|s| s.muted)
    }

    /// What a track is (its codec and audio-level extension).
    pub fn track_spec(&self, track: TrackKey) -> Option<TrackSpec> {
        self.sources.get(&track).map(|s| s.spec.clone())
    }

    /// A publisher's new track.
    pub fn add_track(&mut self, track: TrackKey, spec: TrackSpec) -> Result<(), ForwardError> {
        if self.sources.contains_key(&track) {
            return Err(ForwardError::DuplicateTrack(track));
        }
        let cache = if spec.codec.is_video() { self.config.video_cache } else { self.config.audio_cache };
        self.sources.insert(
            track,
            Source {
                spec,
                cache: PacketCache::new(cache),
                downs: Vec::new(),
                last_keyframe_request: None,
                keyframe_owed: false,
                level: None,
                speech: speech::Speech::default(),
                muted: false,
                reception: reception::Reception::default(),
                pending_downs: Vec::new(),
                red_payload_type: None,
            },
        );
        Ok(())
    }

    /// A track ended; its downtracks stay, idle, until switched or removed.
    /// Returns them.
    pub fn remove_track(&mut self, track: TrackKey) -> Vec<DownKey> {
        let Some(source) = self.sources.remove(&track) else { return Vec::new() };
        self.lost_in_ended += source.reception.lost();
        for d in &source.downs {
            if let Some(down) = self.downs.get_mut(d) {
                down.source = None;
            }
        }
        for d in &source.pending_downs {
            if let Some(down) = self.downs.get_mut(d) {
                down.pending = None;
            }
        }
        source.downs
    }

    /// A subscriber's new stream, forwarding `source` (or nothing yet).
    pub fn add_down(
        &mut self,
        now: Instant,
        down: DownKey,
        spec: DownSpec,
        source: Option<TrackKey>,
        out: &mut Vec<Action>,
    ) -> Result<(), ForwardError> {
        if self.downs.contains_key(&down) {
            return Err(ForwardError::DuplicateDown(down));
        }
        if let Some(t) = source
            && !self.sources.contains_key(&t)
        {
            return Err(ForwardError::UnknownTrack(t));
        }
        self.downs.insert(
            down,
            Down {
                rtx_seq: spec.rtx.map_or(0, |r| r.first_seq),
                pending: None,
                spec,
                source: None,
                munger: Munger::default(),
                waiting_keyframe: false,
                paused: false,
                rtx_payload_type: None,
                red: None,
            },
        );
        if let Some(t) = source {
            self.switch(now, down, t, out)?;
        }
        Ok(())
    }

    /// Points a downtrack at another source; output stays continuous.
    pub fn switch(
        &mut self,
        now: Instant,
        down: DownKey,
        track: TrackKey,
        out: &mut Vec<Action>,
    ) -> Result<(), ForwardError> {
        if !self.sources.contains_key(&track) {
            return Err(ForwardError::UnknownTrack(track));
        }
        self.cancel_pending(down);
        let d = self.downs.get_mut(&down).ok_or(ForwardError::UnknownDown(down))?;
        if d.source == Some(track) {
            return Ok(());
        }
        if let Some(old) = d.source.take()
            && let Some(s) = self.sources.get_mut(&old)
        {
            s.downs.retain(|x| *x != down);
        }
        d.source = Some(track);
        d.munger.switch();
        let video = self.sources.get(&track).is_some_and(|s| s.spec.codec.is_video());
        d.waiting_keyframe = video;
        if let Some(s) = self.sources.get_mut(&track) {
            s.downs.push(down);
        }
        if video {
            self.request_keyframe(now, track, out);
        }
        Ok(())
    }

    /// Switches a downtrack to `track` at `track`'s next keyframe, forwarding
    /// its current source until then (a simulcast layer change: the
    /// subscriber's picture never stops). Asks `track` for a keyframe. A
    /// downtrack with nothing to show now (no source, or waiting for a
    /// keyframe, or paused) switches at once, as [`Self::switch`]. Asking
    /// again for the pending target only asks for its keyframe again
    /// (throttled); asking for the current source cancels a pending switch.
    pub fn switch_at_keyframe(
        &mut self,
        now: Instant,
        down: DownKey,
        track: TrackKey,
        out: &mut Vec<Action>,
    ) -> Result<(), ForwardError> {
        let target = self.sources.get(&track).ok_or(ForwardError::UnknownTrack(track))?;
        let video = target.spec.codec.is_video();
        let d = self.downs.get(&down).ok_or(ForwardError::UnknownDown(down))?;
        if d.source == Some(track) {
            self.cancel_pending(down);
            return Ok(());
        }
        if !video || d.source.is_none() || d.waiting_keyframe || d.paused {
            return self.switch(now, down, track, out);
        }
        if d.pending != Some(track) {
            self.cancel_pending(down);
            if let Some(d) = self.downs.get_mut(&down) {
                d.pending = Some(track);
            }
            if let Some(s) = self.sources.get_mut(&track) {
                s.pending_downs.push(down);
            }
        }
        self.request_keyframe(now, track, out);
        Ok(())
    }

    /// The source a downtrack switches to at that source's next keyframe.
    pub fn pending_of(&self, down: DownKey) -> Option<TrackKey> {
        self.downs.get(&down).and_then(|d| d.pending)
    }

    fn cancel_pending(&mut self, down: DownKey) {
        let Some(t) = self.downs.get_mut(&down).and_then(|d| d.pending.take()) else { return };
        if let Some(s) = self.sources.get_mut(&t) {
            s.pending_downs.retain(|x| *x != down);
        }
    }

    /// Moves the downtracks waiting for `track`'s keyframe onto it (called
    /// with the first packet of that keyframe, before it is forwarded).
    fn take_pending(&mut self, track: TrackKey) {
        let Some(s) = self.sources.get_mut(&track) else { return };
        let mut pending = std::mem::take(&mut s.pending_downs);
        for down in pending.drain(..) {
            let Some(d) = self.downs.get_mut(&down) else { continue };
            d.pending = None;
            if let Some(old) = d.source.replace(track)
                && let Some(o) = self.sources.get_mut(&old)
            {
                o.downs.retain(|x| *x != down);
            }
            d.munger.switch();
            d.waiting_keyframe = false;
            if let Some(s) = self.sources.get_mut(&track) {
                s.downs.push(down);
            }
        }
        // The (now empty) vector goes back: no allocation on the next switch.
        if let Some(s) = self.sources.get_mut(&track) {
            s.pending_downs = pending;
        }
    }

    /// Changes the payload type a downtrack writes (the subscriber's number
    /// for the codec of the source it is about to forward), and the RTX
    /// payload type the subscriber paired with it (`None`: that codec has
    /// no RTX, its retransmissions go on the stream itself).
    /// Forgets what [`Self::set_red`] said.
    pub fn set_payload_type(&mut self, down: DownKey, payload_type: u8, rtx_payload_type: Option<u8>) {
        if let Some(d) = self.downs.get_mut(&down) {
            d.spec.payload_type = payload_type;
            d.rtx_payload_type = rtx_payload_type;
            d.red = None;
        }
    }

    /// For a downtrack about to forward an `audio/red` source (after
    /// [`Self::set_payload_type`] with the subscriber's RED payload type,
    /// or its Opus one when it strips): how its packets go out.
    pub fn set_red(&mut self, down: DownKey, red: RedOut) {
        if let Some(d) = self.downs.get_mut(&down) {
            d.red = Some(red);
        }
    }

    /// Says which payload type an `audio/red` source's redundant packets
    /// come with (the publisher's RED payload type).
    pub fn set_red_payload_type(&mut self, track: TrackKey, payload_type: u8) {
        if let Some(s) = self.sources.get_mut(&track) {
            s.red_payload_type = Some(payload_type);
        }
    }

    /// Retransmits on the stream itself from now on (the I/O layer cannot
    /// send the RTX stream, e.g. when `rtc` protects the leg's media).
    pub fn disable_rtx(&mut self, down: DownKey) {
        if let Some(d) = self.downs.get_mut(&down) {
            d.spec.rtx = None;
        }
    }

    /// Stops a downtrack from forwarding without removing it (mute on the way out).
    pub fn set_paused(&mut self, now: Instant, down: DownKey, paused: bool, out: &mut Vec<Action>) {
        let Some(d) = self.downs.get_mut(&down) else { return };
        if d.paused == paused {
            return;
        }
        d.paused = paused;
        if !paused && let Some(track) = d.source {
            let video = self.sources.get(&track).is_some_and(|s| s.spec.codec.is_video());
            d.waiting_keyframe = video;
            d.munger.switch();
            if video {
                self.request_keyframe(now, track, out);
            }
        }
    }

    /// Mutes or unmutes a publisher's track for every subscriber. Unmuting
    /// video waits for (and asks for) a keyframe; output stays continuous.
    pub fn set_track_muted(&mut self, now: Instant, track: TrackKey, muted: bool, out: &mut Vec<Action>) {
        let Some(s) = self.sources.get_mut(&track) else { return };
        if s.muted == muted {
            return;
        }
        s.muted = muted;
        if muted {
            return;
        }
        let video = s.spec.codec.is_video();
        for d in s.downs.clone() {
            if let Some(down) = self.downs.get_mut(&d) {
                down.munger.switch();
                down.waiting_keyframe = video;
            }
        }
        if video {
            self.request_keyframe(now, track, out);
        }
    }

    /// Removes a downtrack.
    pub fn remove_down(&mut self, down: DownKey) {
        self.cancel_pending(down);
        if let Some(d) = self.downs.remove(&down)
            && let Some(t) = d.source
            && let Some(s) = self.sources.get_mut(&t)
        {
            s.downs.retain(|x| *x != down);
        }
    }

    /// One RTP packet from a publisher's track.
    pub fn on_rtp(&mut self, now: Instant, track: TrackKey, packet: &Packet, out: &mut Vec<Action>) {
        let Some(source) = self.sources.get(&track) else { return };
        let mut keyframe: Option<bool> = None;
        if !source.pending_downs.is_empty() && !source.muted {
            let k = source.spec.codec.is_keyframe_start(&packet.payload);
            keyframe = Some(k);
            if k {
                self.take_pending(track);
            }
        }
        let Some(source) = self.sources.get_mut(&track) else { return };
        self.stats.packets_in += 1;
        let clock = source.spec.codec.clock_rate();
        source.reception.on_packet(packet.header.sequence_number, packet.header.timestamp, now, clock);
        if source.muted {
            return;
        }
        self.stats.bytes_in += packet.payload.len() as u64;
        let codec = source.spec.codec;
        let level = source
            .spec
            .audio_level_ext
            .and_then(|id| packet.header.get_extension(id))
            .and_then(|b| codec::audio_level(&b));
        let mut csrc = [0u8; 15 * 4];
        let csrc_len = packet.header.csrc.len().min(15) * 4;
        for (chunk, c) in csrc.chunks_exact_mut(4).zip(&packet.header.csrc) {
            chunk.copy_from_slice(&c.to_be_bytes());
        }
        let red = source.red_payload_type == Some(packet.header.payload_type);
        if red {
            self.stats.red_in += 1;
        }
        source.cache.put(
            now,
            packet.header.sequence_number,
            Cached {
                marker: packet.header.marker,
                timestamp: packet.header.timestamp,
                level,
                csrc: &csrc[..csrc_len],
                payload: &packet.payload,
                red,
            },
        );
        // A redundant packet's newest frame, for subscribers without RED
        // (a slice of the payload: no copy). Malformed: they get nothing.
        let primary = red.then(|| codec::red_primary(&packet.payload).map(|r| packet.payload.slice(r))).flatten();
        if let Some(l) = level {
            source.level = Some((l, now));
            source.speech.on_level(l);
        }
        let vp8 = if codec == Codec::Vp8 { codec::vp8_ids(&packet.payload) } else { None };
        for down_key in &source.downs {
            let Some(d) = self.downs.get_mut(down_key) else { continue };
            if d.paused {
                continue;
            }
            if d.waiting_keyframe {
                let k = *keyframe.get_or_insert_with(|| codec.is_keyframe_start(&packet.payload));
                if !k {
                    self.stats.dropped_waiting_keyframe += 1;
                    continue;
                }
                d.waiting_keyframe = false;
            }
            let Some((seq, ts)) = d.munger.map(now, packet.header.sequence_number, packet.header.timestamp, clock)
            else {
                self.stats.dropped_stale += 1;
                continue;
            };
            let h = &packet.header;
            let mut pt = d.spec.payload_type;
            let mut patch = None;
            let payload = match (&vp8, d.red) {
                (Some(ids), _) => {
                    let (pid, tl0) = d.munger.vp8.map(ids);
                    patch = vp8_patch(ids, pid, tl0);
                    packet.payload.clone()
                }
                (None, Some(r)) if red && r.strip => match &primary {
                    Some(p) => {
                        self.stats.red_stripped += 1;
                        p.clone()
                    }
                    None => {
                        self.stats.dropped_malformed_red += 1;
                        continue;
                    }
                },
                (None, Some(r)) => {
                    if !red {
                        pt = r.opus_payload_type;
                    }
                    packet.payload.clone()
                }
                (None, None) => packet.payload.clone(),
            };
            let p = rewrite(h.marker, h.csrc.clone(), payload, &d.spec, pt, seq, ts);
            self.stats.packets_out += 1;
            self.stats.bytes_out += p.payload.len() as u64;
            let wire = Wire { patch, audio_level: d.spec.audio_level_ext.zip(level) };
            out.push(Action::Send { down: *down_key, packet: p, wire });
        }
        // A keyframe request asked for while throttled goes out once allowed.
        if source.keyframe_owed {
            self.request_keyframe(now, track, out);
        }
    }

    /// A subscriber lost a picture (PLI or FIR on its stream).
    pub fn on_keyframe_request(&mut self, now: Instant, down: DownKey, out: &mut Vec<Action>) {
        if let Some(track) = self.downs.get(&down).and_then(|d| d.source) {
            self.request_keyframe(now, track, out);
        }
    }

    /// A subscriber lost packets (NACK on its stream), by output sequence
    /// numbers. Each is resent as it first went out, on the RTX stream when
    /// the subscriber has one for the codec (RFC 4588: the original
    /// sequence number, then the payload), else on the stream itself.
    pub fn on_nack(&mut self, down: DownKey, lost: impl IntoIterator<Item = u16>, out: &mut Vec<Action>) {
        let Some(d) = self.downs.get_mut(&down) else { return };
        let Some(source) = d.source.and_then(|t| self.sources.get(&t)) else { return };
        let rtx = d.spec.rtx.zip(d.rtx_payload_type);
        for out_seq in lost {
            let cached = d.munger.unmap(out_seq).and_then(|in_seq| source.cache.get(in_seq));
            let Some(p) = cached else {
                self.stats.nacks_missed += 1;
                continue;
            };
            let ts = p.timestamp.wrapping_sub(d.munger.ts_offset);
            let csrc = p.csrc.chunks_exact(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]])).collect();
            // The VP8 ids it first went out with (this epoch's offsets).
            let vp8 = (source.spec.codec == Codec::Vp8).then(|| codec::vp8_ids(p.payload)).flatten();
            let mut body = Vec::with_capacity(2 + p.payload.len());
            if rtx.is_some() {
                body.extend_from_slice(&out_seq.to_be_bytes());
            }
            let at = body.len();
            // As it first went out: a redundant packet as its primary
            // block for a subscriber that strips, a plain one with Opus's number.
            let (payload, pt) = match d.red {
                Some(r) if p.red && r.strip => {
                    (codec::red_primary(p.payload).and_then(|x| p.payload.get(x)).unwrap_or(&[]), r.opus_payload_type)
                }
                Some(r) if !p.red => (p.payload, r.opus_payload_type),
                _ => (p.payload, d.spec.payload_type),
            };
            body.extend_from_slice(payload);
            if let (Some(ids), Some(rest)) = (vp8, body.get_mut(at..)) {
                let (pid, tl0) = d.munger.vp8.apply(&ids);
                write_vp8_ids(rest, &ids, pid, tl0);
            }
            let packet = match rtx {
                None => rewrite(p.marker, csrc, body.into(), &d.spec, pt, out_seq, ts),
                Some((stream, payload_type)) => {
                    let payload = body;
                    let seq = d.rtx_seq;
                    d.rtx_seq = d.rtx_seq.wrapping_add(1);
                    self.stats.rtx_sent += 1;
                    let spec = DownSpec { ssrc: stream.ssrc, payload_type, audio_level_ext: None, rtx: None };
                    rewrite(p.marker, csrc, payload.into(), &spec, payload_type, seq, ts)
                }
            };
            // The level its first send had (none on the RTX stream).
            let audio_level = if rtx.is_some() { None } else { d.spec.audio_level_ext.zip(p.level) };
            out.push(Action::Send { down, packet, wire: Wire { patch: None, audio_level } });
            self.stats.nacks_answered += 1;
        }
    }

    /// A padding-only packet (RFC 3550 §5.1: [`PADDING_BYTES`] bytes, all
    /// padding) on `down`'s RTX stream, for a bandwidth probe: the player
    /// discards it, and its transport-wide feedback tells how the path
    /// carried it. Only for a down that negotiated RTX and sent media (a
    /// padding packet on the media stream would take sequence numbers the
    /// player expects media on); returns whether one went into `out`.
    pub fn padding(&mut self, down: DownKey, out: &mut Vec<Action>) -> bool {
        let Some(d) = self.downs.get_mut(&down) else { return false };
        let Some((stream, payload_type)) = d.spec.rtx.zip(d.rtx_payload_type) else { return false };
        if !d.munger.started || d.paused {
            return false;
        }
        let seq = d.rtx_seq;
        d.rtx_seq = d.rtx_seq.wrapping_add(1);
        let spec = DownSpec { ssrc: stream.ssrc, payload_type, audio_level_ext: None, rtx: None };
        let mut packet = rewrite(
            false,
            Vec::new(),
            bytes::Bytes::from_static(&PADDING),
            &spec,
            payload_type,
            seq,
            d.munger.last_out_ts,
        );
        packet.header.padding = true;
        out.push(Action::Send { down, packet, wire: Wire::default() });
        self.stats.padding_sent += 1;
        true
    }

    /// Ends every track's voice-activity interval: the tracks that spoke in
    /// it and how loud (0..=1), into `out` (in no particular order).
    pub fn take_speech(&mut self, out: &mut Vec<(TrackKey, f32)>) {
        for (k, s) in &mut self.sources {
            if let Some(loud) = s.speech.take() {
                out.push((*k, loud));
            }
        }
    }

    /// Loudest tracks heard within `window`, loudest first (lower -dBov is louder).
    pub fn active_speakers(&self, now: Instant, window: Duration, max_level: u8) -> Vec<(TrackKey, u8)> {
        let mut v: Vec<_> = self
            .sources
            .iter()
            .filter_map(|(k, s)| s.level.map(|(l, at)| (*k, l, at)))
            .filter(|(_, l, at)| *l <= max_level && now.saturating_duration_since(*at) <= window)
            .map(|(k, l, _)| (k, l))
            .collect();
        v.sort_by_key(|(k, l)| (*l, *k));
        v
    }

    fn request_keyframe(&mut self, now: Instant, track: TrackKey, out: &mut Vec<Action>) {
        let Some(s) = self.sources.get_mut(&track) else { return };
        let allowed = s
            .last_keyframe_request
            .is_none_or(|at| now.saturating_duration_since(at) >= self.config.keyframe_request_interval);
        if allowed {
            s.last_keyframe_request = Some(now);
            s.keyframe_owed = false;
            self.stats.keyframe_requests += 1;
            out.push(Action::RequestKeyframe { track });
        } else {
            s.keyframe_owed = true;
        }
    }
}

/// Bytes of one padding packet ([`Forwarder::padding`]): the most RTP
/// padding can say (its last byte counts the padding, itself included).
pub const PADDING_BYTES: usize = 255;
static PADDING: [u8; PADDING_BYTES] = {
    let mut p = [0u8; PADDING_BYTES];
    p[PADDING_BYTES - 1] = PADDING_BYTES as u8;
    p
};

/// A subscriber's packet: its SSRC, payload type, sequence number and
/// timestamp, the publisher's marker, CSRCs and payload. Everything that
/// varies comes from the arguments, so a retransmission from the cache and
/// the first send agree byte for byte. Built field by field: the
/// publisher's extensions are not copied (the audio level goes in [`Wire`]).
fn rewrite(
    marker: bool,
    csrc: Vec<u32>,
    payload: bytes::Bytes,
    spec: &DownSpec,
    payload_type: u8,
    seq: u16,
    ts: u32,
) -> Packet {
    let header = rtc::rtp::Header {
        version: 2,
        padding: false,
        extension: false,
        marker,
        payload_type,
        sequence_number: seq,
        timestamp: ts,
        ssrc: spec.ssrc,
        csrc,
        extension_profile: 0,
        extensions: Vec::new(),
        extensions_padding: 0,
    };
    Packet { header, payload }
}

#[cfg(test)]
mod tests;
