//! Simulcast: the layers of one published video track, and which of them a
//! subscriber gets (pure: packets and time in, a choice out).
//!
//! A publisher that offers simulcast (`a=simulcast:send` with `a=rid`s)
//! sends each layer as its own RTP stream; each is its own source in the
//! [`crate::forward::Forwarder`] (its own numbering, keyframes and
//! retransmission cache), grouped here under the track. A subscriber's
//! stream follows one layer at a time and moves between them on the new
//! layer's keyframe ([`crate::forward::Forwarder::switch_at_keyframe`]).
//!
//! Layers are ranked by the picture size their keyframes announce (VP8's
//! frame header, H.264's SPS: [`crate::forward::Codec::frame_size`]); while
//! a layer's size is unknown, by the bitrate it sends. A subscriber gets the
//! best layer within what it asked for: its preferred quality (low, medium,
//! high) and the size it renders at (the smallest layer that covers it). A
//! layer that sent nothing for [`LAYER_SILENT`] (the publisher paused it:
//! its encoder's bandwidth estimate fell, or nobody watches it) is not
//! chosen; the next one down is, or the lowest one up when none is below.
//!
//! A player whose downlink is estimated (`super::bwe`) gets, for each of its
//! simulcast streams, the best of those layers that its link carries
//! ([`allocate`]): its estimate is shared among its streams, the lowest
//! layers first.
//!
//! Dynacast ([`Layers::dynacast`]): the publisher is asked to pause the
//! layers above the best one any player of the track asked for (by quality
//! and rendered size), [`PAUSE_AFTER`] after the last one wanting them
//! stopped, and to resume them as soon as one does. The lowest layer always
//! sends: a player that arrives sees the picture at once.

use std::time::{Duration, Instant};

use arc_nodeproto::VideoQuality;

use crate::forward::TrackKey;

/// Most layers of one track (RFC 8853 allows more; browsers send three).
pub const LAYERS_MAX: usize = 4;
/// A layer that sent nothing for this long is taken as paused.
pub const LAYER_SILENT: Duration = Duration::from_millis(1000);
/// Dynacast: a layer nobody asked for this long is paused (a tile that
/// shrinks for a moment does not stop its layer).
pub const PAUSE_AFTER: Duration = Duration::from_secs(3);
/// Dynacast: what the publisher was told is told again this often (the
/// message is best effort, and a socket that reconnected missed it).
pub const DYNACAST_REPEAT: Duration = Duration::from_secs(10);

/// What a subscriber asked for one video stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preference {
    pub quality: VideoQuality,
    /// The size it renders the video at (pixels), if it said.
    pub rendered: Option<(u32, u32)>,
}

impl Default for Preference {
    fn default() -> Self {
        Self { quality: VideoQuality::High, rendered: None }
    }
}

/// One layer of a simulcast track.
#[derive(Debug, Clone)]
pub struct Layer {
    pub key: TrackKey,
    /// Its RTP stream id (`a=rid`).
    pub rid: String,
    /// Its SSRC (what a keyframe request names).
    pub ssrc: u32,
    /// The size its last keyframe announced.
    pub size: Option<(u16, u16)>,
    /// When its last packet came.
    pub last_packet: Option<Instant>,
    /// Payload bytes received so far, and at the last rate sample.
    bytes: u64,
    bytes_at_sample: u64,
    sampled_at: Option<Instant>,
    /// Its bitrate over the last sample interval (bits per second).
    pub bitrate: u64,
    /// Dynacast: the publisher was asked to pause it.
    pub paused: bool,
    /// Dynacast: since when no player asked for it.
    unwanted_since: Option<Instant>,
}

impl Layer {
    pub fn new(key: TrackKey, rid: String, ssrc: u32) -> Self {
        Self {
            key,
            rid,
            ssrc,
            size: None,
            last_packet: None,
            bytes: 0,
            bytes_at_sample: 0,
            sampled_at: None,
            bitrate: 0,
            paused: false,
            unwanted_since: None,
        }
    }

    fn live(&self, now: Instant) -> bool {
        self.last_packet.is_some_and(|at| now.saturating_duration_since(at) < LAYER_SILENT)
    }
}

/// The layers of one track, in the order they first sent.
#[derive(Debug, Clone, Default)]
pub struct Layers {
    layers: Vec<Layer>,
    /// Dynacast: when the publisher was last told which layers to send.
    told_at: Option<Instant>,
}

impl Layers {
    pub fn push(&mut self, layer: Layer) {
        self.layers.push(layer);
    }

    pub fn len(&self) -> usize {
        self.layers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Layer> {
        self.layers.iter()
    }

    pub fn by_ssrc(&self, ssrc: u32) -> Option<&Layer> {
        self.layers.iter().find(|l| l.ssrc == ssrc)
    }

    pub fn by_key(&self, key: TrackKey) -> Option<&Layer> {
        self.layers.iter().find(|l| l.key == key)
    }

    pub fn contains(&self, key: TrackKey) -> bool {
        self.by_key(key).is_some()
    }

    /// One packet of layer `i` (an index from [`Self::index_of_ssrc`]);
    /// `size`: what it announced, if it starts a keyframe.
    pub fn on_packet(&mut self, now: Instant, i: usize, payload_len: usize, size: Option<(u16, u16)>) {
        let Some(l) = self.layers.get_mut(i) else { return };
        l.last_packet = Some(now);
        l.bytes = l.bytes.wrapping_add(payload_len as u64);
        if size.is_some() {
            l.size = size;
        }
    }

    /// A layer known by `rid` now comes on another SSRC: it follows it.
    pub fn rebind(&mut self, rid: &str, ssrc: u32) -> Option<usize> {
        let i = self.layers.iter().position(|l| !rid.is_empty() && l.rid == rid)?;
        self.layers[i].ssrc = ssrc;
        Some(i)
    }

    pub fn index_of_ssrc(&self, ssrc: u32) -> Option<usize> {
        self.layers.iter().position(|l| l.ssrc == ssrc)
    }

    /// Takes a bitrate sample of every layer (called every few hundred ms).
    pub fn sample(&mut self, now: Instant) {
        for l in &mut self.layers {
            if let Some(at) = l.sampled_at {
                let dt = now.saturating_duration_since(at).as_secs_f64();
                if dt > 0.0 {
                    l.bitrate = ((l.bytes.wrapping_sub(l.bytes_at_sample)) as f64 * 8.0 / dt) as u64;
                }
            }
            l.sampled_at = Some(now);
            l.bytes_at_sample = l.bytes;
        }
    }

    /// The layers from the smallest to the best.
    fn ranked(&self) -> Vec<&Layer> {
        let mut v: Vec<&Layer> = self.layers.iter().collect();
        if v.iter().all(|l| l.size.is_some()) {
            v.sort_by_key(|l| l.size.map(|(w, h)| u32::from(w) * u32::from(h)));
        } else {
            v.sort_by_key(|l| l.bitrate);
        }
        v
    }

    /// The best layer (an index into `ranked`, of `n` > 0) that `pref`
    /// asks for: its preferred quality, and the smallest layer that covers
    /// its rendered size (known only when every layer's size is).
    fn target(ranked: &[&Layer], pref: Preference) -> usize {
        let n = ranked.len();
        let by_quality = match pref.quality {
            VideoQuality::Low => 0,
            VideoQuality::Medium => 1.min(n - 1),
            VideoQuality::High => n - 1,
        };
        let by_size = match pref.rendered {
            Some((w, h)) if ranked.iter().all(|l| l.size.is_some()) => ranked
                .iter()
                .position(|l| l.size.is_some_and(|(lw, lh)| u32::from(lw) >= w && u32::from(lh) >= h))
                .unwrap_or(n - 1),
            _ => n - 1,
        };
        by_quality.min(by_size)
    }

    /// The layers a subscriber with `pref` may get now, from the lowest
    /// to the best it asked for, each with its bitrate: the live layers up
    /// to its preferred quality and rendered size; when none of those is
    /// live, the lowest live one above. Empty when no layer sends.
    pub fn options(&self, now: Instant, pref: Preference) -> Vec<(TrackKey, u64)> {
        let ranked = self.ranked();
        if ranked.is_empty() {
            return Vec::new();
        }
        let target = Self::target(&ranked, pref);
        let below: Vec<(TrackKey, u64)> =
            ranked[..=target].iter().filter(|l| l.live(now)).map(|l| (l.key, l.bitrate)).collect();
        if !below.is_empty() {
            return below;
        }
        ranked[target + 1..].iter().find(|l| l.live(now)).map(|l| vec![(l.key, l.bitrate)]).unwrap_or_default()
    }

    /// The layer a subscriber with `pref` gets now when its link is not
    /// the limit; `None` when no layer sends (keep what it has).
    pub fn choose(&self, now: Instant, pref: Preference) -> Option<TrackKey> {
        self.options(now, pref).last().map(|(k, _)| *k)
    }

    /// Dynacast, evaluated every housekeeping tick and when a preference
    /// changes, with the preferences of every player that follows one of
    /// this track's layers now (empty: nobody watches). A layer above the
    /// best any of them asks for is paused once nobody asked for it for
    /// [`PAUSE_AFTER`]; a paused layer one asks for resumes at once; the
    /// lowest always sends. Returns what the publisher is to be told — every
    /// layer by rid, and whether it should send — when that changed, and
    /// again every [`DYNACAST_REPEAT`] once it was told anything; `None`
    /// otherwise. Nothing is decided until every layer's picture size is
    /// known (a layer ranked by bitrate would rank low once paused), nor
    /// for layers without a rid (nothing to name them by).
    pub fn dynacast(&mut self, now: Instant, prefs: &[Preference]) -> Option<Vec<(String, bool)>> {
        if self.layers.len() < 2 || self.layers.iter().any(|l| l.size.is_none() || l.rid.is_empty()) {
            return None;
        }
        let mut order: Vec<usize> = (0..self.layers.len()).collect();
        order.sort_by_key(|&i| self.layers[i].size.map(|(w, h)| u32::from(w) * u32::from(h)));
        let best = {
            let ranked: Vec<&Layer> = order.iter().map(|&i| &self.layers[i]).collect();
            prefs.iter().map(|&p| Self::target(&ranked, p)).max().unwrap_or(0)
        };
        let mut changed = false;
        for (rank, &i) in order.iter().enumerate() {
            let l = &mut self.layers[i];
            if rank <= best {
                l.unwanted_since = None;
                changed |= std::mem::replace(&mut l.paused, false);
            } else {
                let since = *l.unwanted_since.get_or_insert(now);
                if !l.paused && now.saturating_duration_since(since) >= PAUSE_AFTER {
                    l.paused = true;
                    changed = true;
                }
            }
        }
        let repeat = self.told_at.is_some_and(|at| now.saturating_duration_since(at) >= DYNACAST_REPEAT);
        if !changed && !repeat {
            return None;
        }
        self.told_at = Some(now);
        Some(order.iter().map(|&i| (self.layers[i].rid.clone(), !self.layers[i].paused)).collect())
    }
}

/// A layer above the one a stream has now must fit with this much to
/// spare (its bitrate × this), so that a stream does not climb into a layer
/// its link carries only just (and fall back at the next congestion).
pub const UP_HEADROOM: f64 = 1.25;

/// One simulcast stream of a player, for [`allocate`].
#[derive(Debug, Clone)]
pub struct Wanted {
    /// What it may get ([`Layers::options`]), lowest first.
    pub options: Vec<(TrackKey, u64)>,
    /// The layer it follows now.
    pub current: TrackKey,
}

/// What `streams` take at the best each asked for (the last option), with
/// [`UP_HEADROOM`] on a step above the layer it has now.
pub fn cost_of_best(streams: &[Wanted]) -> u64 {
    streams
        .iter()
        .filter_map(|w| {
            let (best, bps) = *w.options.last()?;
            Some(if best == w.current { bps } else { (bps as f64 * UP_HEADROOM) as u64 })
        })
        .sum()
}

/// Shares a player's link among its simulcast streams: `budget` bits per
/// second (its estimate less what its other streams send). Every stream
/// gets at least its lowest option (a stream is never stopped for lack of
/// bandwidth); then, one step at a time and in turns, each climbs to its
/// next option while the sum fits (a step above the layer it has now must
/// fit [`UP_HEADROOM`] times over). Returns an index into each stream's
/// options.
pub fn allocate(budget: u64, streams: &[Wanted]) -> Vec<usize> {
    let mut picks = vec![0usize; streams.len()];
    let mut spent: u64 = streams.iter().filter_map(|w| w.options.first()).map(|(_, b)| *b).sum();
    loop {
        let mut climbed = false;
        for (w, pick) in streams.iter().zip(picks.iter_mut()) {
            let (Some(&(_, now_bps)), Some(&(_, next_bps))) = (w.options.get(*pick), w.options.get(*pick + 1)) else {
                continue;
            };
            let current_at = w.options.iter().position(|(k, _)| *k == w.current);
            let up = current_at.is_some_and(|c| *pick + 1 > c);
            let cost = if up { (next_bps as f64 * UP_HEADROOM) as u64 } else { next_bps };
            let without = spent.saturating_sub(now_bps);
            if without.saturating_add(cost) <= budget {
                *pick += 1;
                spent = without + next_bps;
                climbed = true;
            }
        }
        if !climbed {
            return picks;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three(now: Instant) -> Layers {
        let mut ls = Layers::default();
        // First to send is not the smallest: order comes from sizes.
        for (i, (rid, size)) in [("f", (1280, 720)), ("q", (320, 180)), ("h", (640, 360))].into_iter().enumerate() {
            ls.push(Layer::new(TrackKey(i as u32 + 1), rid.to_owned(), 100 + i as u32));
            ls.on_packet(now, i, 1000, Some(size));
        }
        ls
    }

    #[test]
    fn a_subscriber_gets_the_best_layer_within_its_quality_and_rendered_size() {
        let now = Instant::now();
        let ls = three(now);
        let pick = |quality, rendered| ls.choose(now, Preference { quality, rendered });
        assert_eq!(pick(VideoQuality::High, None), Some(TrackKey(1)));
        assert_eq!(pick(VideoQuality::Medium, None), Some(TrackKey(3)));
        assert_eq!(pick(VideoQuality::Low, None), Some(TrackKey(2)));
        assert_eq!(pick(VideoQuality::High, Some((320, 180))), Some(TrackKey(2)), "a thumbnail gets the small layer");
        assert_eq!(pick(VideoQuality::High, Some((400, 200))), Some(TrackKey(3)), "the smallest that covers it");
        assert_eq!(pick(VideoQuality::High, Some((4000, 3000))), Some(TrackKey(1)));
        assert_eq!(pick(VideoQuality::Low, Some((4000, 3000))), Some(TrackKey(2)), "both limits hold");
    }

    #[test]
    fn a_paused_layer_is_not_chosen() {
        let t0 = Instant::now();
        let mut ls = three(t0);
        let t1 = t0 + LAYER_SILENT + Duration::from_millis(1);
        // Only the middle layer goes on sending.
        ls.on_packet(t1, 2, 1000, None);
        let pref = Preference::default();
        assert_eq!(ls.choose(t1, pref), Some(TrackKey(3)), "the top one paused: the next one down");
        let low = Preference { quality: VideoQuality::Low, rendered: None };
        assert_eq!(ls.choose(t1, low), Some(TrackKey(3)), "nothing below: the lowest one up");
        let t2 = t1 + LAYER_SILENT;
        assert_eq!(ls.choose(t2, pref), None, "nothing sends: keep what it has");
    }

    #[test]
    fn dynacast_pauses_layers_nobody_asks_for_after_a_while_and_resumes_them_at_once() {
        let t0 = Instant::now();
        let mut ls = three(t0);
        let low = Preference { quality: VideoQuality::Low, rendered: None };
        let tile = Preference { quality: VideoQuality::High, rendered: Some((640, 360)) };
        let all = |v: &[(&str, bool)]| v.iter().map(|(r, a)| ((*r).to_owned(), *a)).collect::<Vec<_>>();
        // Everyone wants the best: nothing to tell.
        assert_eq!(ls.dynacast(t0, &[Preference::default(), low]), None);
        // A player that asks for the low layer alone: the others go after PAUSE_AFTER.
        assert_eq!(ls.dynacast(t0, &[low]), None);
        assert_eq!(ls.dynacast(t0 + PAUSE_AFTER - Duration::from_millis(1), &[low]), None, "not yet");
        let t1 = t0 + PAUSE_AFTER;
        assert_eq!(ls.dynacast(t1, &[low]), Some(all(&[("q", true), ("h", false), ("f", false)])), "smallest first");
        assert_eq!(ls.dynacast(t1 + Duration::from_secs(1), &[low]), None, "told once");
        // A tile of 640x360 wants the middle one back, at once.
        let t2 = t1 + Duration::from_secs(2);
        assert_eq!(ls.dynacast(t2, &[low, tile]), Some(all(&[("q", true), ("h", true), ("f", false)])));
        // Told again every DYNACAST_REPEAT.
        assert_eq!(ls.dynacast(t2 + Duration::from_secs(5), &[tile]), None);
        let t3 = t2 + DYNACAST_REPEAT;
        assert_eq!(ls.dynacast(t3, &[tile]), Some(all(&[("q", true), ("h", true), ("f", false)])));
        // Nobody watches: all but the lowest pause.
        assert_eq!(ls.dynacast(t3 + Duration::from_secs(1), &[]), None);
        let t4 = t3 + Duration::from_secs(1) + PAUSE_AFTER;
        assert_eq!(ls.dynacast(t4, &[]), Some(all(&[("q", true), ("h", false), ("f", false)])));
        // A player that wants the best: everything resumes.
        assert_eq!(ls.dynacast(t4, &[Preference::default()]), Some(all(&[("q", true), ("h", true), ("f", true)])));
        assert!(ls.iter().all(|l| !l.paused));
        // A layer that wanted comes back before PAUSE_AFTER is not paused: the wait starts again.
        assert_eq!(ls.dynacast(t4 + Duration::from_secs(1), &[low]), None);
        assert_eq!(ls.dynacast(t4 + Duration::from_secs(2), &[Preference::default()]), None);
        assert_eq!(ls.dynacast(t4 + Duration::from_secs(2) + PAUSE_AFTER - Duration::from_millis(1), &[low]), None);
    }

    #[test]
    fn dynacast_waits_for_every_layers_size_and_needs_rids() {
        let t0 = Instant::now();
        let mut ls = Layers::default();
        ls.push(Layer::new(TrackKey(1), "q".to_owned(), 1));
        ls.push(Layer::new(TrackKey(2), "f".to_owned(), 2));
        ls.on_packet(t0, 0, 100, Some((320, 180)));
        let low = Preference { quality: VideoQuality::Low, rendered: None };
        let later = t0 + PAUSE_AFTER * 2;
        assert_eq!(ls.dynacast(t0, &[low]), None);
        assert_eq!(ls.dynacast(later, &[low]), None, "the top layer's size is unknown: it could rank anywhere");
        ls.on_packet(later, 1, 100, Some((1280, 720)));
        assert_eq!(ls.dynacast(later, &[low]), None);
        assert_eq!(
            ls.dynacast(later + PAUSE_AFTER, &[low]),
            Some(vec![("q".to_owned(), true), ("f".to_owned(), false)])
        );
        let mut unnamed = Layers::default();
        unnamed.push(Layer::new(TrackKey(1), String::new(), 1));
        unnamed.push(Layer::new(TrackKey(2), String::new(), 2));
        unnamed.on_packet(t0, 0, 100, Some((320, 180)));
        unnamed.on_packet(t0, 1, 100, Some((1280, 720)));
        assert_eq!(unnamed.dynacast(t0, &[low]), None);
        assert_eq!(unnamed.dynacast(later, &[low]), None);
        let mut one = Layers::default();
        one.push(Layer::new(TrackKey(1), "f".to_owned(), 1));
        one.on_packet(t0, 0, 100, Some((320, 180)));
        assert_eq!(one.dynacast(later, &[]), None);
    }

    #[test]
    fn a_link_is_shared_lowest_layers_first_then_in_turns_with_headroom_to_climb() {
        let k = TrackKey;
        let stream = |current: u32| Wanted {
            options: vec![(k(1), 150_000), (k(2), 500_000), (k(3), 1_500_000)],
            current: k(current),
        };
        let other = |current: u32| Wanted { options: vec![(k(11), 100_000), (k(12), 400_000)], current: k(current) };
        // Plenty: everyone gets the best it asked for.
        assert_eq!(allocate(10_000_000, &[stream(3), other(12)]), vec![2, 1]);
        // Too little even for the lowest layers: the lowest anyway.
        assert_eq!(allocate(50_000, &[stream(1), other(11)]), vec![0, 0]);
        // 900 kb/s: both climb one step in turn (150+100 → 500+400 = 900).
        assert_eq!(allocate(900_000, &[stream(2), other(12)]), vec![1, 1]);
        // A step above what a stream has needs headroom: 500 kb/s × 1.25 does
        // not fit in 600 kb/s when it has the lowest layer now...
        assert_eq!(allocate(600_000, &[stream(1)]), vec![0]);
        // ...but keeping the layer it has needs none.
        assert_eq!(allocate(600_000, &[stream(2)]), vec![1]);
        // A layer the stream has now that no longer fits is left.
        assert_eq!(allocate(1_000_000, &[stream(3)]), vec![1]);
        assert!(allocate(1, &[]).is_empty());
        assert_eq!(cost_of_best(&[stream(3), other(11)]), 1_500_000 + 500_000);
        assert_eq!(allocate(1_000_000, &[Wanted { options: vec![], current: k(1) }]), vec![0]);
    }

    #[test]
    fn without_sizes_layers_rank_by_bitrate() {
        let t0 = Instant::now();
        let mut ls = Layers::default();
        for i in 0..3u32 {
            ls.push(Layer::new(TrackKey(i + 1), format!("r{i}"), i));
        }
        ls.sample(t0);
        let t1 = t0 + Duration::from_millis(500);
        for (i, bytes) in [(0, 60_000), (1, 5_000), (2, 20_000)] {
            ls.on_packet(t1, i, bytes, None);
        }
        ls.sample(t1);
        assert_eq!(ls.layers[0].bitrate, 960_000);
        assert_eq!(ls.choose(t1, Preference::default()), Some(TrackKey(1)));
        let low = Preference { quality: VideoQuality::Low, rendered: Some((10, 10)) };
        assert_eq!(ls.choose(t1, low), Some(TrackKey(2)), "a rendered size means nothing without sizes");
        assert_eq!(ls.index_of_ssrc(2), Some(2));
        assert_eq!(ls.rebind("r1", 77), Some(1), "a layer follows its rid to a new SSRC");
        assert_eq!(ls.by_ssrc(77).map(|l| l.key), Some(TrackKey(2)));
        assert_eq!(ls.rebind("", 78), None);
        assert_eq!(ls.rebind("zz", 78), None);
        assert!(ls.by_ssrc(9).is_none());
        assert!(Layers::default().choose(t1, Preference::default()).is_none());
    }
}
