//! Send-side bandwidth estimation for one player leg (pure: what was sent,
//! the player's feedback and time in; a bitrate, and when to probe, out).
//!
//! A player that negotiates transport-wide congestion control (the
//! `transport-wide-cc` header extension, draft-holmer-rmcat-transport-wide-
//! cc-extensions-01) gets a transport-wide sequence number on every packet
//! Arc's own SRTP egress sends it ([`super::srtp::SrtpEgress::write_with_twcc`]
//! writes it into the packet's header in place). Each number is noted here
//! with the packet's size and when it left, in a fixed ring ([`HISTORY`]
//! slots of 8 bytes, no allocation per packet). The player's TWCC feedback
//! (RTCP transport layer feedback: which numbers arrived, and when on its
//! clock) is joined with that ring and handed to `rtc-interceptor`'s GCC
//! estimator ([`Gcc`]: a delay-based half that watches the arrival spacing
//! widen against the send spacing, and a loss-based half; the lower wins).
//!
//! **The estimate.** It starts high ([`INITIAL_BPS`]): a player gets what it
//! asks for until its link shows congestion (queueing delay or loss); then
//! GCC brings it to about what arrives. From the first congestion on, the
//! estimate is also held to [`ACKED_HEADROOM`] times what the player's
//! feedback says arrived (GCC as ported here grows its target by time
//! alone, whatever is sent: unchecked, it would climb past a link that only
//! a low layer crosses, and send the player into congestion at every
//! climb). The engine gives each player's video streams the simulcast
//! layers that fit in the estimate ([`super::layers::allocate`]).
//!
//! **Climbing back: probes.** A player held below what it asked for climbs
//! back by probing, once its link has been calm (no decrease) for a while
//! ([`PROBE_WAIT_MIN`], doubling after each probe that congestion answered,
//! up to [`PROBE_WAIT_MAX`]): [`SendSide::probe`] with a target (what its
//! streams want, at most twice the estimate).
//! - A player with RTX is probed with padding ([`ProbeKind::Padding`]): for
//!   [`PROBE_PADDING`] the engine adds padding-only packets on its RTX
//!   stream ([`SendSide::padding_owed`]) until it sends at the target; if no
//!   congestion answers by [`PROBE_JUDGE`] after that, in feedback that
//!   reports past the padding (a late feedback from a busy player is not
//!   taken for calm; none within another [`PROBE_JUDGE`]: no result), the
//!   estimate becomes the target and its streams move up. The media is not touched: a
//!   probe that fails delays packets for a moment, and the estimate goes
//!   back to where it started (the padding filled the link, not the media).
//! - A player without RTX (padding needs a stream of its own) is probed by
//!   switching up ([`ProbeKind::Switch`]): the estimate becomes the target
//!   at once, and congestion brings it down again if the link cannot carry
//!   it.

use std::time::{Duration, Instant};

use rtc::interceptor::{ArrivalGroupAccumulator, BandwidthEstimator, Gcc, PacketReport, convert_twcc};
use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;

/// Packets remembered (at 1,000 packets/s, 1 s of sending; feedback comes
/// every 50–100 ms). 8 bytes each: 8 KiB per player leg.
pub const HISTORY: usize = 1024;
/// Where an estimate starts (bits per second).
pub const INITIAL_BPS: f64 = 4_000_000.0;
/// The lowest estimate.
pub const MIN_BPS: f64 = 100_000.0;
/// The highest estimate.
pub const MAX_BPS: f64 = 50_000_000.0;
/// The estimate is at most this many times what arrives (before the link
/// showed congestion, at most that or [`INITIAL_BPS`], the higher).
pub const ACKED_HEADROOM: f64 = 1.5;
/// How often what arrives is measured.
const ACKED_WINDOW: Duration = Duration::from_millis(500);
/// Calm (no decrease) a probe waits for at least.
pub const PROBE_WAIT_MIN: Duration = Duration::from_secs(3);
/// The longest wait between probes that failed.
pub const PROBE_WAIT_MAX: Duration = Duration::from_secs(30);
/// How long a padding probe pads.
pub const PROBE_PADDING: Duration = Duration::from_millis(500);
/// How long after its padding a probe waits for congestion to answer it
/// (its last packets' feedback comes within a round trip and 100 ms); a
/// switch probe waits [`PROBE_WAIT_MIN`].
pub const PROBE_JUDGE: Duration = Duration::from_millis(700);
/// How long a probe's result holds the estimate up while the streams move
/// up to use it (a keyframe away).
const PROVEN_FOR: Duration = Duration::from_secs(4);

/// One packet sent: when (microseconds since [`SendSide::base`], wrapping
/// every 71 minutes), its number and its size; size 0 once reported (or
/// never sent).
#[derive(Debug, Clone, Copy, Default)]
struct Sent {
    at_us: u32,
    seq: u16,
    size: u16,
}

/// How a probe tests the link (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    Padding,
    Switch,
}

#[derive(Debug, Clone, Copy)]
struct Probe {
    kind: ProbeKind,
    target: u64,
    /// The estimate when it started.
    from: u64,
    started: Instant,
    /// Bytes sent while it pads (media and padding).
    sent: u64,
    /// The first number sent after its padding: a padding probe is judged
    /// only once feedback reported that far (a late feedback, from a busy
    /// receiver, is not taken for calm).
    after: Option<u16>,
}

impl Probe {
    fn pads_until(&self) -> Instant {
        match self.kind {
            ProbeKind::Padding => self.started + PROBE_PADDING,
            ProbeKind::Switch => self.started,
        }
    }

    fn judged_at(&self) -> Instant {
        match self.kind {
            ProbeKind::Padding => self.started + PROBE_PADDING + PROBE_JUDGE,
            ProbeKind::Switch => self.started + PROBE_WAIT_MIN,
        }
    }
}

/// Packet groups in a [`Trendline`]'s window.
const TREND_WINDOW: usize = 20;
/// A decrease is not made again within this (the queue it answers needs a
/// moment to drain).
const DECREASE_EVERY: Duration = Duration::from_millis(300);

/// The delay-based overuse detector of libwebrtc's GCC (its trendline
/// estimator; draft-ietf-rmcat-gcc-02 §5): packets grouped by when they left
/// (5-ms bursts), each group's delay change against the one before
/// accumulated and smoothed, a least-squares slope over the last
/// [`TREND_WINDOW`] groups, scaled by how many deltas it rests on, against
/// an adaptive threshold. `rtc-interceptor`'s [`Gcc`] compares its filtered
/// delay change with the threshold directly, without the scaling: it saw no
/// overuse on a 400 kb/s link that a probe filled (its loss half did, once
/// the link dropped packets).
#[derive(Debug, Clone)]
struct Trendline {
    groups: ArrivalGroupAccumulator,
    /// (departure ms since the first group, smoothed accumulated delay ms).
    window: [(f64, f64); TREND_WINDOW],
    len: usize,
    first: Option<Instant>,
    previous_at_ms: Option<f64>,
    accumulated: f64,
    smoothed: f64,
    deltas: u32,
    trend: f64,
    threshold: f64,
    threshold_updated_ms: Option<f64>,
    over_ms: Option<f64>,
    over_count: u32,
}

impl Default for Trendline {
    fn default() -> Self {
        Self {
            groups: ArrivalGroupAccumulator::default(),
            window: [(0.0, 0.0); TREND_WINDOW],
            len: 0,
            first: None,
            previous_at_ms: None,
            accumulated: 0.0,
            smoothed: 0.0,
            deltas: 0,
            trend: 0.0,
            threshold: 12.5,
            threshold_updated_ms: None,
            over_ms: None,
            over_count: 0,
        }
    }
}

impl Trendline {
    /// One reported packet; true when the link is found overused.
    fn on_report(&mut self, report: &PacketReport) -> bool {
        let Some(delay) = self.groups.accumulate(report) else { return false };
        let first = *self.first.get_or_insert(delay.at);
        let at_ms = delay.at.saturating_duration_since(first).as_secs_f64() * 1000.0;
        let send_delta_ms = self.previous_at_ms.map_or(0.0, |p| at_ms - p);
        self.previous_at_ms = Some(at_ms);
        self.deltas = (self.deltas + 1).min(1000);
        self.accumulated += delay.delta_ms;
        self.smoothed = 0.9 * self.smoothed + 0.1 * self.accumulated;
        if self.len == TREND_WINDOW {
            self.window.copy_within(1.., 0);
            self.len -= 1;
        }
        self.window[self.len] = (at_ms, self.smoothed);
        self.len += 1;
        let mut trend = self.trend;
        if self.len == TREND_WINDOW
            && let Some(slope) = slope(&self.window)
        {
            trend = slope;
        }
        let overused = self.detect(trend, send_delta_ms, at_ms);
        self.trend = trend;
        overused
    }

    fn detect(&mut self, trend: f64, send_delta_ms: f64, now_ms: f64) -> bool {
        if self.deltas < 2 {
            return false;
        }
        let modified = f64::from(self.deltas.min(60)) * trend * 4.0;
        let mut overused = false;
        if modified > self.threshold {
            let over = self.over_ms.map_or(send_delta_ms / 2.0, |t| t + send_delta_ms);
            self.over_ms = Some(over);
            self.over_count += 1;
            if over > 10.0 && self.over_count > 1 && trend >= self.trend {
                self.over_ms = Some(0.0);
                self.over_count = 0;
                overused = true;
            }
        } else {
            self.over_ms = None;
            self.over_count = 0;
        }
        // The adaptive threshold (k_up 0.0087, k_down 0.039, 6–600).
        let last = *self.threshold_updated_ms.get_or_insert(now_ms);
        if modified.abs() <= self.threshold + 15.0 {
            let k = if modified.abs() < self.threshold { 0.039 } else { 0.0087 };
            let dt = (now_ms - last).clamp(0.0, 100.0);
            self.threshold = (self.threshold + k * (modified.abs() - self.threshold) * dt).clamp(6.0, 600.0);
        }
        self.threshold_updated_ms = Some(now_ms);
        overused
    }
}

/// The least-squares slope of `points` (None when they share one x).
fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    let (sx, sy) = points.iter().fold((0.0, 0.0), |(a, b), (x, y)| (a + x, b + y));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) =
        points.iter().fold((0.0, 0.0), |(num, den), (x, y)| (num + (x - mx) * (y - my), den + (x - mx) * (x - mx)));
    (den != 0.0).then(|| num / den)
}

/// One leg's send history and estimator.
pub struct SendSide {
    base: Instant,
    next_seq: u16,
    sent: Box<[Sent]>,
    id: u64,
    gcc: Gcc,
    /// Reused for each feedback's reports.
    reports: Vec<PacketReport>,
    feedback_seen: bool,
    /// The link showed congestion once: the estimate is held to what arrives.
    congested: bool,
    /// What arrives (bits per second, smoothed), and the bytes reported
    /// arrived since it was last measured.
    acked_bps: Option<f64>,
    acked_bytes: u64,
    acked_since: Instant,
    /// A probe's target that held, and until when it holds the estimate up.
    proven: Option<(u64, Instant)>,
    probe: Option<Probe>,
    next_probe: Instant,
    probe_wait: Duration,
    probes: u64,
    /// Packets reported, and of them lost.
    reported: u64,
    lost: u64,
    trend: Trendline,
    last_decrease: Option<Instant>,
    /// The newest number feedback reported on (arrived or not).
    reported_through: Option<u16>,
}

impl std::fmt::Debug for SendSide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendSide")
            .field("next_seq", &self.next_seq)
            .field("estimate", &self.estimate())
            .field("probe", &self.probe)
            .finish_non_exhaustive()
    }
}

impl SendSide {
    pub fn new(now: Instant) -> Self {
        Self {
            base: now,
            next_seq: 0,
            sent: vec![Sent::default(); HISTORY].into_boxed_slice(),
            id: 0,
            gcc: Gcc::new(INITIAL_BPS, MIN_BPS, MAX_BPS),
            reports: Vec::with_capacity(64),
            feedback_seen: false,
            congested: false,
            acked_bps: None,
            acked_bytes: 0,
            acked_since: now,
            proven: None,
            probe: None,
            next_probe: now + PROBE_WAIT_MIN,
            probe_wait: PROBE_WAIT_MIN,
            probes: 0,
            reported: 0,
            lost: 0,
            trend: Trendline::default(),
            last_decrease: None,
            reported_through: None,
        }
    }

    fn micros(&self, now: Instant) -> u32 {
        now.saturating_duration_since(self.base).as_micros() as u32
    }

    /// The transport-wide sequence number the next packet carries.
    pub fn next_seq(&self) -> u16 {
        self.next_seq
    }

    /// The packet numbered [`Self::next_seq`] left at `now`, `size` bytes
    /// on the wire.
    pub fn on_sent(&mut self, now: Instant, size: usize) {
        let seq = self.next_seq;
        self.next_seq = seq.wrapping_add(1);
        if let Some(p) = self.probe.as_mut() {
            if now < p.pads_until() {
                p.sent += size as u64;
            } else if p.after.is_none() {
                p.after = Some(seq);
            }
        }
        let size = u16::try_from(size).unwrap_or(u16::MAX).max(1);
        self.sent[usize::from(seq) % HISTORY] = Sent { at_us: self.micros(now), seq, size };
    }

    /// The player's TWCC feedback, received at `now`. Numbers it names that
    /// were not sent (or were reported before, or fell out of the history)
    /// are skipped.
    pub fn on_feedback(&mut self, now: Instant, feedback: &TransportLayerCc) {
        // At most HISTORY numbers can be open; more is not feedback on them.
        if usize::from(feedback.packet_status_count) > HISTORY {
            return;
        }
        self.reports.clear();
        let now_us = self.micros(now);
        for ack in convert_twcc(feedback) {
            let slot = usize::from(ack.sequence_number) % HISTORY;
            let sent = self.sent[slot];
            if sent.seq != ack.sequence_number || sent.size == 0 {
                continue;
            }
            self.sent[slot].size = 0;
            self.id += 1;
            let ago = Duration::from_micros(u64::from(now_us.wrapping_sub(sent.at_us)));
            self.reports.push(PacketReport {
                ssrc: 0,
                id: self.id,
                rtp_sequence_number: 0,
                is_twcc: true,
                twcc_sequence_number: sent.seq,
                size: usize::from(sent.size),
                arrived: ack.arrived,
                departure: now.checked_sub(ago).unwrap_or(self.base),
                arrival: ack.arrival,
                ecn: ack.ecn,
            });
        }
        if self.reports.is_empty() {
            return;
        }
        self.feedback_seen = true;
        if let Some(last) = self.reports.last() {
            let newer = self.reported_through.is_none_or(|r| (last.twcc_sequence_number.wrapping_sub(r) as i16) > 0);
            if newer {
                self.reported_through = Some(last.twcc_sequence_number);
            }
        }
        self.reported += self.reports.len() as u64;
        self.lost += self.reports.iter().filter(|r| !r.arrived).count() as u64;
        self.acked_bytes += self.reports.iter().filter(|r| r.arrived).map(|r| r.size as u64).sum::<u64>();
        let window = now.saturating_duration_since(self.acked_since);
        if window >= ACKED_WINDOW {
            let sample = self.acked_bytes as f64 * 8.0 / window.as_secs_f64();
            self.acked_bps = Some(self.acked_bps.map_or(sample, |a| 0.5 * a + 0.5 * sample));
            self.acked_bytes = 0;
            self.acked_since = now;
        }
        // Every report goes through the trend (no short circuit).
        let mut overused = false;
        for r in &self.reports {
            overused |= self.trend.on_report(r);
        }
        let before = self.gcc.target_bitrate();
        self.gcc.on_reports(now, &self.reports);
        let calm_since_decrease = self.last_decrease.is_none_or(|t| now.saturating_duration_since(t) >= DECREASE_EVERY);
        if overused && calm_since_decrease {
            // Delay-based overuse: back to a little under what arrives.
            // (Never up: what arrives may exceed an estimate being obeyed.)
            let arriving = self.acked_bps.unwrap_or(before);
            self.gcc = Gcc::new((arriving * 0.85).min(before), MIN_BPS, MAX_BPS);
        }
        if self.gcc.target_bitrate() < before * 0.95 {
            self.last_decrease = Some(now);
            // Congestion: a probe it answers failed; the calm starts again.
            self.congested = true;
            self.proven = None;
            if let Some(p) = self.probe.take() {
                self.probe_wait = (self.probe_wait * 2).min(PROBE_WAIT_MAX);
                if p.kind == ProbeKind::Padding && self.gcc.target_bitrate() < p.from as f64 {
                    // The padding filled the link, not the media: what the
                    // media took before the probe still fits (without this a
                    // failed probe sent a player a layer down for seconds).
                    self.gcc = Gcc::new(p.from as f64, MIN_BPS, MAX_BPS);
                }
            }
            self.next_probe = now + self.probe_wait;
        }
    }

    /// Ends a probe that congestion did not answer in time ([`Self::held`];
    /// a padding probe only once feedback reported past its padding, and
    /// with no result when none did [`PROBE_JUDGE`] later), and a held
    /// probe's hold on the estimate. Called every few hundred ms.
    pub fn tick(&mut self, now: Instant) {
        if let Some(p) = self.probe
            && now >= p.judged_at()
        {
            let reported = match (p.kind, p.after, self.reported_through) {
                (ProbeKind::Switch, _, _) => true,
                (ProbeKind::Padding, Some(after), Some(through)) => (through.wrapping_sub(after) as i16) >= 0,
                _ => false,
            };
            if !reported {
                if now >= p.judged_at() + PROBE_JUDGE {
                    // No feedback on it in time: no result; try again later.
                    self.probe = None;
                    self.probe_wait = (self.probe_wait * 2).min(PROBE_WAIT_MAX);
                    self.next_probe = now + self.probe_wait;
                }
            } else {
                self.held(now, p);
            }
        }
        if self.proven.is_some_and(|(_, until)| now >= until) {
            self.proven = None;
        }
    }

    /// Probe `p` held: the estimate becomes its target (a padding probe's;
    /// a switch probe's already is) for long enough to move up to it.
    fn held(&mut self, now: Instant, p: Probe) {
        self.probe = None;
        self.probe_wait = PROBE_WAIT_MIN;
        self.next_probe = now + PROBE_WAIT_MIN;
        let proven = match p.kind {
            // What it really sent (padding may fall short of the target).
            ProbeKind::Padding => {
                let sent = (p.sent as f64 * 8.0 / PROBE_PADDING.as_secs_f64()) as u64;
                let proven = p.target.min(sent.max(self.estimate().unwrap_or(0)));
                self.gcc = Gcc::new(proven as f64, MIN_BPS, MAX_BPS);
                proven
            }
            ProbeKind::Switch => p.target,
        };
        self.proven = Some((proven, now + PROVEN_FOR));
    }

    /// The estimate (bits per second), once the player's feedback came.
    pub fn estimate(&self) -> Option<u64> {
        if !self.feedback_seen {
            return None;
        }
        let target = self.gcc.target_bitrate();
        let switching = self.probe.is_some_and(|p| p.kind == ProbeKind::Switch);
        // `Gcc` raises its target with time alone, whatever is sent: a
        // player that took 1 Mb/s for a minute would be credited with tens.
        let held = match (switching, self.acked_bps) {
            (false, Some(acked)) => {
                let floor = self.proven.map_or(MIN_BPS, |(bps, _)| bps as f64);
                let ceiling =
                    if self.congested { acked * ACKED_HEADROOM } else { (acked * ACKED_HEADROOM).max(INITIAL_BPS) };
                target.min(ceiling.max(floor))
            }
            _ => target,
        };
        Some(held as u64)
    }

    /// The player's streams would take `wanted` bits per second: when the
    /// estimate is lower, no probe runs and the link has been calm long
    /// enough, starts a probe of `kind` towards `wanted` (at most twice the
    /// estimate) and returns true (see the module docs).
    pub fn probe(&mut self, now: Instant, wanted: u64, kind: ProbeKind) -> bool {
        let Some(estimate) = self.estimate() else { return false };
        if wanted <= estimate || now < self.next_probe || self.probe.is_some() {
            return false;
        }
        let target = (wanted.min(estimate.saturating_mul(2)) as f64).clamp(MIN_BPS, MAX_BPS) as u64;
        if kind == ProbeKind::Switch {
            self.gcc = Gcc::new(target as f64, MIN_BPS, MAX_BPS);
        }
        self.probe = Some(Probe { kind, target, from: estimate, started: now, sent: 0, after: None });
        self.next_probe = now + self.probe_wait;
        self.probes += 1;
        true
    }

    /// Bytes of padding a padding probe wants sent now (to bring what it
    /// sent since it started up to its target's pace); 0 when none pads.
    pub fn padding_owed(&self, now: Instant) -> u64 {
        match self.probe {
            Some(p) if p.kind == ProbeKind::Padding && now < p.pads_until() => {
                let due = p.target as f64 / 8.0 * now.saturating_duration_since(p.started).as_secs_f64();
                (due as u64).saturating_sub(p.sent)
            }
            _ => 0,
        }
    }

    /// Whether a padding probe pads now.
    pub fn padding(&self, now: Instant) -> bool {
        self.probe.is_some_and(|p| p.kind == ProbeKind::Padding && now < p.pads_until())
    }

    /// Probes made so far.
    pub fn probes(&self) -> u64 {
        self.probes
    }

    /// Packets the player's feedback reported on, and of them lost.
    pub fn reported(&self) -> (u64, u64) {
        (self.reported, self.lost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtcp::transport_feedbacks::transport_layer_cc::{
        PacketStatusChunk, RecvDelta, RunLengthChunk, StatusChunkTypeTcc, SymbolTypeTcc,
    };
    use std::time::Duration;

    /// Feedback on the `n` numbers from `base`, all `symbol` (received or
    /// not), with `deltas` (µs) for the received.
    fn feedback(base: u16, n: u16, symbol: SymbolTypeTcc, deltas: Vec<i64>) -> TransportLayerCc {
        TransportLayerCc {
            sender_ssrc: 1,
            media_ssrc: 2,
            base_sequence_number: base,
            packet_status_count: n,
            reference_time: 0,
            fb_pkt_count: 0,
            packet_chunks: vec![PacketStatusChunk::RunLengthChunk(RunLengthChunk {
                type_tcc: StatusChunkTypeTcc::RunLengthChunk,
                packet_status_symbol: symbol,
                run_length: n,
            })],
            recv_deltas: deltas
                .into_iter()
                .map(|delta| RecvDelta { type_tcc_packet: SymbolTypeTcc::PacketReceivedSmallDelta, delta })
                .collect(),
        }
    }

    /// Feedback that every number from `base` (count `n`) arrived,
    /// `spacing_us` apart, the first `first_us` after the reference time.
    fn all_arrived(base: u16, n: u16, first_us: i64, spacing_us: i64) -> TransportLayerCc {
        let deltas = (0..n).map(|i| if i == 0 { first_us } else { spacing_us }).collect();
        feedback(base, n, SymbolTypeTcc::PacketReceivedSmallDelta, deltas)
    }

    fn lost(base: u16, n: u16) -> TransportLayerCc {
        feedback(base, n, SymbolTypeTcc::PacketNotReceived, Vec::new())
    }

    /// A first-in first-out link that passes a packet every `link_us` µs
    /// (no loss, 20 ms on the way), and a receiver that reports every
    /// 100 ms what arrived by then.
    struct Link {
        t0: Instant,
        link_us: u64,
        /// A packet is sent every this many ms.
        every_ms: u64,
        free_us: u64,
        arrivals: Vec<u64>,
        reported: usize,
    }

    impl Link {
        fn new(t0: Instant, link_us: u64) -> Self {
            Self { t0, link_us, every_ms: 1, free_us: 0, arrivals: Vec::new(), reported: 0 }
        }

        /// Sends a 1,200-byte packet every millisecond (9.6 Mb/s) from
        /// `from_ms` to `to_ms` (since `t0`).
        fn run(&mut self, s: &mut SendSide, from_ms: u64, to_ms: u64) {
            for ms in from_ms + 1..=to_ms {
                if ms % self.every_ms == 0 {
                    s.on_sent(self.t0 + Duration::from_millis(ms), 1200);
                    let at = (ms * 1000).max(self.free_us) + self.link_us;
                    self.free_us = at;
                    self.arrivals.push(at + 20_000);
                }
                if ms % 100 == 0 {
                    let now_us = ms * 1000;
                    let n = self.arrivals[self.reported..].iter().take_while(|a| **a <= now_us).count();
                    if n > 0 {
                        let mut fb = all_arrived(self.reported as u16, n as u16, 0, 0);
                        let mut previous = 0i64;
                        for (d, a) in fb.recv_deltas.iter_mut().zip(&self.arrivals[self.reported..self.reported + n]) {
                            d.delta = *a as i64 - previous;
                            previous = *a as i64;
                        }
                        s.on_feedback(self.t0 + Duration::from_millis(ms), &fb);
                        self.reported += n;
                    }
                }
            }
        }
    }

    fn through_a_link(link_us: u64) -> u64 {
        let t0 = Instant::now();
        let mut s = SendSide::new(t0);
        Link::new(t0, link_us).run(&mut s, 0, 3000);
        s.estimate().expect("an estimate")
    }

    #[test]
    fn a_link_that_keeps_pace_keeps_a_high_estimate_and_one_that_queues_brings_it_down() {
        let high = through_a_link(500);
        assert!(high as f64 >= INITIAL_BPS * 0.9, "a path that keeps pace: {high}");
        // 1.92 Mb/s of capacity: the queue grows 4 ms a packet.
        let low = through_a_link(5000);
        assert!(low < 2_500_000, "a queueing path brings the estimate to about what arrives: {low} vs {high}");
    }

    #[test]
    fn a_link_overused_by_a_fifth_is_found_by_its_delay_trend() {
        let t0 = Instant::now();
        // 4.8 Mb/s sent (a 1,200-byte packet every 2 ms).
        let run = |link_us| {
            let mut s = SendSide::new(t0);
            let mut link = Link::new(t0, link_us);
            link.every_ms = 2;
            link.run(&mut s, 0, 3000);
            s.estimate().expect("an estimate")
        };
        let kept = run(1000);
        assert!(kept >= 4_000_000, "a link with room: {kept}");
        // 4 Mb/s of capacity: the queue grows 0.4 ms a packet, no loss.
        let overused = run(2400);
        assert!(overused <= 3_500_000, "a link a fifth short brings it under what arrives: {overused}");
        assert!(overused >= 2_000_000, "but not far under: {overused}");
    }

    #[test]
    fn a_calm_link_is_credited_with_no_more_than_it_carried_or_the_start() {
        let t0 = Instant::now();
        let mut s = SendSide::new(t0);
        // 0.96 Mb/s (a 1,200-byte packet every 10 ms) for 20 s on a path with room.
        let mut link = Link::new(t0, 500);
        link.every_ms = 10;
        link.run(&mut s, 0, 20_000);
        let e = s.estimate().expect("an estimate");
        assert!(e <= INITIAL_BPS as u64, "not beyond the start without evidence: {e}");
        assert!(e >= 1_400_000, "what arrives, with headroom: {e}");
    }

    #[test]
    fn the_slope_is_a_least_squares_fit() {
        let line: Vec<(f64, f64)> = (0..10).map(|i| (f64::from(i), 3.0 * f64::from(i) + 1.0)).collect();
        assert!((slope(&line).expect("slope") - 3.0).abs() < 1e-9);
        assert_eq!(slope(&[(1.0, 1.0), (1.0, 5.0)]), None);
    }

    #[test]
    fn a_switch_probe_waits_for_calm_and_a_failed_one_waits_twice_as_long() {
        let t0 = Instant::now();
        let mut s = SendSide::new(t0);
        let ms = |n| t0 + Duration::from_millis(n);
        assert!(!s.probe(ms(3000), 10_000_000, ProbeKind::Switch), "no estimate yet: nothing to probe from");
        // A 1.92 Mb/s link under 9.6 Mb/s: the estimate comes down.
        let mut link = Link::new(t0, 5000);
        link.run(&mut s, 0, 2000);
        let low = s.estimate().expect("an estimate");
        assert!(low < 2_500_000, "{low}");
        assert!(!s.probe(ms(2000), low / 2, ProbeKind::Switch), "it already has what it wants");
        assert!(!s.probe(ms(2000), 10_000_000, ProbeKind::Switch), "not calm for long enough");
        // Calm: nothing sent for the probe wait (the queue empties).
        let calm = 2000 + PROBE_WAIT_MIN.as_millis() as u64 + 1000;
        assert!(s.probe(ms(calm), 10_000_000, ProbeKind::Switch));
        assert_eq!(s.estimate(), Some(low * 2), "at most twice the estimate, at once");
        assert_eq!(s.probes(), 1);
        // The link answers it with congestion: the next waits twice as long.
        link.free_us = calm * 1000;
        link.run(&mut s, calm, calm + 2000);
        assert!(s.estimate().expect("estimate") < low * 2, "the probe was answered");
        assert_eq!(s.probe_wait, PROBE_WAIT_MIN * 2);
        // A probe that nothing answers holds, and the wait is short again.
        let later = calm + 2000 + 2 * PROBE_WAIT_MIN.as_millis() as u64;
        assert!(s.probe(ms(later), 10_000_000, ProbeKind::Switch));
        assert!(!s.probe(ms(later + 1000), 10_000_000, ProbeKind::Switch), "one probe at a time");
        s.tick(ms(later + PROBE_WAIT_MIN.as_millis() as u64));
        assert_eq!(s.probe_wait, PROBE_WAIT_MIN);
        assert!(s.probe.is_none());
    }

    #[test]
    fn a_padding_probe_pads_at_its_target_and_raises_the_estimate_when_nothing_answers() {
        let t0 = Instant::now();
        let mut s = SendSide::new(t0);
        let ms = |n| t0 + Duration::from_millis(n);
        let mut link = Link::new(t0, 5000);
        link.run(&mut s, 0, 2000);
        let low = s.estimate().expect("an estimate");
        let calm = 2000 + PROBE_WAIT_MIN.as_millis() as u64 + 1000;
        assert_eq!(s.padding_owed(ms(calm)), 0, "no probe, no padding");
        assert!(s.probe(ms(calm), 10_000_000, ProbeKind::Padding));
        assert_eq!(s.estimate(), Some(low), "padding does not move the estimate");
        assert!(s.padding(ms(calm + 1)));
        // 100 ms at twice the estimate is owed; what is sent counts against it.
        let owed = s.padding_owed(ms(calm + 100));
        let expected = low * 2 / 8 / 10;
        assert!(owed.abs_diff(expected) <= 1, "{owed} vs {expected}");
        s.on_sent(ms(calm + 100), 1000);
        assert_eq!(s.padding_owed(ms(calm + 100)), owed - 1000);
        // It pads what it owes, every 10 ms.
        for t in (calm + 110..calm + PROBE_PADDING.as_millis() as u64).step_by(10) {
            let owed = s.padding_owed(ms(t));
            s.on_sent(ms(t), owed as usize);
        }
        let padded_until = calm + PROBE_PADDING.as_millis() as u64;
        assert!(!s.padding(ms(padded_until)));
        assert_eq!(s.padding_owed(ms(padded_until)), 0);
        // Judged only once feedback reported past its padding.
        let judged = padded_until + PROBE_JUDGE.as_millis() as u64;
        let after = s.next_seq();
        s.on_sent(ms(padded_until), 1000);
        s.tick(ms(judged));
        assert!(s.probe.is_some(), "no feedback on it yet");
        s.on_feedback(ms(judged), &all_arrived(after, 1, 0, 0));
        // Nothing answered it: the estimate is the target (what it sent),
        // for as long as the streams need to move up.
        s.tick(ms(judged));
        let raised = s.estimate().expect("estimate");
        assert!(raised.abs_diff(low * 2) <= low / 20, "{raised} vs {}", low * 2);
        s.tick(ms(judged + PROVEN_FOR.as_millis() as u64));
        assert!(s.estimate().expect("estimate") < low * 2, "nothing used it: held to what arrives again");

        // A probe no feedback reports on gives no result, and the next waits longer.
        let next = judged + PROVEN_FOR.as_millis() as u64 + PROBE_WAIT_MIN.as_millis() as u64;
        assert!(s.probe(ms(next), 10_000_000, ProbeKind::Padding));
        let before = s.estimate();
        s.on_sent(ms(next + PROBE_PADDING.as_millis() as u64), 1000);
        s.tick(ms(next + (PROBE_PADDING + PROBE_JUDGE * 2).as_millis() as u64));
        assert!(s.probe.is_none());
        assert_eq!(s.estimate(), before);
        assert_eq!(s.probe_wait, PROBE_WAIT_MIN * 2);
    }

    #[test]
    fn a_padding_probe_that_congestion_answers_leaves_the_estimate_it_started_from() {
        let t0 = Instant::now();
        let mut s = SendSide::new(t0);
        let ms = |n| t0 + Duration::from_millis(n);
        // A 4.8 Mb/s link: overfilled at 9.6 Mb/s for 1 s (congestion),
        // then 2.4 Mb/s for 7 s (the queue drains: calm), then a probe.
        let mut link = Link::new(t0, 2000);
        link.run(&mut s, 0, 1000);
        link.every_ms = 4;
        link.run(&mut s, 1000, 8000);
        let from = s.estimate().expect("an estimate");
        assert!(s.probe(ms(8000), 20_000_000, ProbeKind::Padding));
        // Padding while the probe lasts, the media alone after.
        for t in (8000..10_000).step_by(100) {
            link.every_ms = if s.padding(ms(t)) { 1 } else { 4 };
            link.run(&mut s, t, t + 100);
        }
        assert!(s.probe.is_none(), "the probe failed");
        assert_eq!(s.probe_wait, PROBE_WAIT_MIN * 2);
        let after = s.estimate().expect("estimate");
        // (Without going back to where it started, the decrease took it to
        // 0.85 × what arrived before the probe: 2.0 Mb/s from 3.6.)
        assert!(after as f64 >= from as f64 * 0.9, "back to about where it started: {after} vs {from}");
    }

    #[test]
    fn losses_are_counted_once_and_a_malformed_count_is_ignored() {
        let now = Instant::now();
        let mut s = SendSide::new(now);
        for _ in 0..10 {
            s.on_sent(now, 1000);
        }
        s.on_feedback(now, &lost(0, 5));
        s.on_feedback(now, &lost(0, 5));
        assert_eq!(s.reported(), (5, 5), "reported once");
        let mut huge = lost(5, 5);
        huge.packet_status_count = u16::MAX;
        s.on_feedback(now, &huge);
        assert_eq!(s.reported(), (5, 5));
        // An old number whose slot was reused by a newer packet is skipped.
        for _ in 0..HISTORY {
            s.on_sent(now, 1000);
        }
        s.on_feedback(now, &lost(5, 5));
        assert_eq!(s.reported(), (5, 5), "slots 5..10 hold newer numbers");
    }
}
