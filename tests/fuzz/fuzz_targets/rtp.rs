//! RTP and RTCP as they arrive (rtc's parsers, as the engine uses them; a
//! player's transport-wide feedback into a send history and estimator that
//! numbered 300 packets), then the forwarding core with the packet: header
//! extensions, keyframe gating, the retransmission cache, a NACK for what it
//! holds (answered on an RTX stream for the VP8 subscriber, on the stream
//! itself for the others), padding.
#![no_main]

use std::time::{Duration, Instant};

use arc_media::engine::bwe::SendSide;
use arc_media::forward::codec::Codec;
use arc_media::forward::{DownKey, DownSpec, ForwardConfig, Forwarder, RtxStream, TrackKey, TrackSpec};
use libfuzzer_sys::fuzz_target;
use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;
use rtc::shared::marshal::Unmarshal;

fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    let mut buf = data;
    if let Ok(rtcp) = rtc::rtcp::packet::unmarshal(&mut buf) {
        let mut bwe = SendSide::new(t0);
        for i in 0..300u64 {
            bwe.on_sent(t0 + Duration::from_micros(i * 300), 1200);
        }
        for p in &rtcp {
            if let Some(cc) = p.as_any().downcast_ref::<TransportLayerCc>() {
                bwe.on_feedback(t0 + Duration::from_secs(1), cc);
                bwe.tick(t0 + Duration::from_secs(1));
                let _ = bwe.estimate();
            }
        }
    }
    let mut buf = data;
    let Ok(packet) = rtc::rtp::Packet::unmarshal(&mut buf) else { return };
    let mut f = Forwarder::new(ForwardConfig::default());
    let mut out = Vec::new();
    for (k, codec, ext) in [(1, Codec::Vp8, None), (2, Codec::Opus, Some(1)), (3, Codec::H264, Some(3))] {
        let _ = f.add_track(TrackKey(k), TrackSpec { codec, audio_level_ext: ext });
        // The VP8 subscriber has an RTX stream: its NACKs are answered there.
        let rtx = (k == 1).then_some(RtxStream { ssrc: 900, first_seq: 65_000 });
        let spec = DownSpec { ssrc: 100 + k, payload_type: 96, audio_level_ext: ext, rtx };
        let _ = f.add_down(t0, DownKey(k), spec, Some(TrackKey(k)), &mut out);
        f.set_payload_type(DownKey(k), 96, rtx.map(|_| 97));
    }
    for k in 1..=3 {
        f.on_rtp(t0 + Duration::from_millis(u64::from(k)), TrackKey(k), &packet, &mut out);
        f.on_nack(DownKey(k), [packet.header.sequence_number, packet.header.sequence_number.wrapping_sub(1)], &mut out);
        f.padding(DownKey(k), &mut out);
    }
});
