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

use std::time::{Duration, Instant};

use arc_nodeproto::VideoQuality;

use crate::forward::TrackKey;

/// Most layers of one track (RFC 8853 allows more; browsers send three).
pub const LAYERS_MAX: usize = 4;
/// A layer that sent nothing for this long is taken as paused.
pub const LAYER_SILENT: Duration = Duration::from_millis(1000);

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

    /// The layer a subscriber with `pref` gets now; `None` when no layer
    /// sends (keep what it has).
    pub fn choose(&self, now: Instant, pref: Preference) -> Option<TrackKey> {
        let ranked = self.ranked();
        let n = ranked.len();
        if n == 0 {
            return None;
        }
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
        let target = by_quality.min(by_size);
        let below = ranked[..=target].iter().rev().find(|l| l.live(now));
        let above = || ranked[target + 1..].iter().find(|l| l.live(now));
        below.or_else(above).map(|l| l.key)
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
