use super::*;
use bytes::Bytes;

const VP8_KEY: &[u8] = &[0x10, 0x00, 0x9d, 0x01, 0x2a];
const VP8_DELTA: &[u8] = &[0x10, 0x01, 0x00];
const VP8_CONT: &[u8] = &[0x00, 0x00, 0x00];

fn pkt(seq: u16, ts: u32, payload: &'static [u8]) -> Packet {
    Packet {
        header: rtc::rtp::Header {
            version: 2,
            payload_type: 96,
            sequence_number: seq,
            timestamp: ts,
            ssrc: 0xdead,
            ..Default::default()
        },
        payload: Bytes::from_static(payload),
    }
}

fn down_spec(ssrc: u32) -> DownSpec {
    DownSpec { ssrc, payload_type: 100, audio_level_ext: None, rtx: None }
}

fn sends(actions: &[Action]) -> Vec<(DownKey, u16, u32)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { down, packet, .. } => Some((*down, packet.header.sequence_number, packet.header.timestamp)),
            Action::RequestKeyframe { .. } => None,
        })
        .collect()
}

/// The packets `actions` send.
fn packets(actions: &[Action]) -> Vec<&Packet> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { packet, .. } => Some(packet),
            Action::RequestKeyframe { .. } => None,
        })
        .collect()
}

fn keyframe_requests(actions: &[Action]) -> usize {
    actions.iter().filter(|a| matches!(a, Action::RequestKeyframe { .. })).count()
}

fn video() -> TrackSpec {
    TrackSpec { codec: Codec::Vp8, audio_level_ext: None }
}

#[test]
fn waits_for_a_keyframe_then_rewrites_ssrc_and_payload_type() {
    let t0 = Instant::now();
    let mut f = Forwarder::new(ForwardConfig::default());
    f.add_track(TrackKey(1), video()).expect("test setup");
    let mut out = Vec::new();
    f.add_down(t0, DownKey(1), down_spec(77), Some(TrackKey(1)), &mut out).expect("test setup");
    assert_eq!(keyframe_requests(&out), 1, "subscribing asks the publisher for a keyframe");
    out.clear();
    f.on_rtp(t0, TrackKey(1), &pkt(10, 1000, VP8_DELTA), &mut out);
    f.on_rtp(t0, TrackKey(1), &pkt(11, 1000, VP8_CONT), &mut out);
    assert!(sends(&out).is_empty(), "nothing before a keyframe");
    f.on_rtp(t0, TrackKey(1), &pkt(12, 4000, VP8_KEY), &mut out);
    f.on_rtp(t0, TrackKey(1), &pkt(13, 4000, VP8_CONT), &mut out);
    let s = sends(&out);
    assert_eq!(s, vec![(DownKey(1), 12, 4000), (DownKey(1), 13, 4000)]);
    let Action::Send { packet, .. } = out.iter().find(|a| matches!(a, Action::Send { .. })).expect("test setup") else {
        unreachable!()
    };
    assert_eq!(packet.header.ssrc, 77);
    assert_eq!(packet.header.payload_type, 100);
    assert!(packet.header.extensions.is_empty());
    assert_eq!(f.stats().dropped_waiting_keyframe, 2);
}

#[test]
fn switching_sources_keeps_output_continuous() {
    let t0 = Instant::now();
    let mut f = Forwarder::new(ForwardConfig::default());
    f.add_track(TrackKey(1), video()).expect("test setup");
    f.add_track(TrackKey(2), video()).expect("test setup");
    let mut out = Vec::new();
    f.add_down(t0, DownKey(1), down_spec(5), Some(TrackKey(1)), &mut out).expect("test setup");
    f.on_rtp(t0, TrackKey(1), &pkt(65534, 1000, VP8_KEY), &mut out);
    f.on_rtp(t0, TrackKey(1), &pkt(65535, 1000, VP8_CONT), &mut out);
    f.on_rtp(t0, TrackKey(1), &pkt(0, 4000, VP8_DELTA), &mut out);
    out.clear();
    let t1 = t0 + Duration::from_millis(100);
    f.switch(t1, DownKey(1), TrackKey(2), &mut out).expect("test setup");
    assert_eq!(keyframe_requests(&out), 1);
    // The old source's packets no longer reach this subscriber.
    f.on_rtp(t1, TrackKey(1), &pkt(1, 7000, VP8_KEY), &mut out);
    // The new source starts somewhere else entirely.
    f.on_rtp(t1, TrackKey(2), &pkt(500, 900_000, VP8_DELTA), &mut out);
    f.on_rtp(t1, TrackKey(2), &pkt(501, 903_000, VP8_KEY), &mut out);
    f.on_rtp(t1, TrackKey(2), &pkt(502, 903_000, VP8_CONT), &mut out);
    // A late packet from before the switch point is dropped.
    f.on_rtp(t1, TrackKey(2), &pkt(499, 897_000, VP8_CONT), &mut out);
    let s = sends(&out);
    // Output continues at 1 (after 0), timestamp advanced by 100 ms of 90 kHz.
    assert_eq!(s, vec![(DownKey(1), 1, 4000 + 9000), (DownKey(1), 2, 4000 + 9000)]);
    assert_eq!(f.stats().dropped_stale, 1);
}

#[test]
fn keyframe_requests_are_throttled_and_owed_requests_go_out_later() {
    let t0 = Instant::now();
    let mut f = Forwarder::new(ForwardConfig::default());
    f.add_track(TrackKey(1), video()).expect("test setup");
    let mut out = Vec::new();
    for d in 0..10 {
        f.add_down(t0, DownKey(d), down_spec(d), Some(TrackKey(1)), &mut out).expect("test setup");
    }
    for _ in 0..10 {
        f.on_keyframe_request(t0 + Duration::from_millis(10), DownKey(3), &mut out);
    }
    assert_eq!(keyframe_requests(&out), 1, "one request for 10 joins and 10 PLIs within 500 ms");
    out.clear();
    f.on_rtp(t0 + Duration::from_millis(100), TrackKey(1), &pkt(1, 1, VP8_DELTA), &mut out);
    assert_eq!(keyframe_requests(&out), 0, "still throttled");
    f.on_rtp(t0 + Duration::from_millis(600), TrackKey(1), &pkt(2, 2, VP8_DELTA), &mut out);
    assert_eq!(keyframe_requests(&out), 1, "the owed request goes out once allowed");
    out.clear();
    f.on_rtp(t0 + Duration::from_millis(1200), TrackKey(1), &pkt(3, 3, VP8_DELTA), &mut out);
    assert_eq!(keyframe_requests(&out), 0, "and only once");
}

#[test]
fn nacks_are_answered_from_the_shared_cache_through_each_subscribers_offsets() {
    let t0 = Instant::now();
    let mut f = Forwarder::new(ForwardConfig::default());
    f.add_track(TrackKey(1), video()).expect("test setup");
    f.add_track(TrackKey(2), video()).expect("test setup");
    let mut out = Vec::new();
    f.add_down(t0, DownKey(1), down_spec(1), Some(TrackKey(2)), &mut out).expect("test setup");
    f.on_rtp(t0, TrackKey(2), &pkt(9, 0, VP8_KEY), &mut out);
    f.switch(t0, DownKey(1), TrackKey(1), &mut out).expect("test setup");
    f.add_down(t0, DownKey(2), down_spec(2), Some(TrackKey(1)), &mut out).expect("test setup");
    for seq in 100..110 {
        let payload = if seq == 100 { VP8_KEY } else { VP8_CONT };
        f.on_rtp(t0, TrackKey(1), &pkt(seq, 1000, payload), &mut out);
    }
    // Down 1 maps 100.. to 10.. (after its 9); down 2 passes 100.. through.
    out.clear();
    f.on_nack(DownKey(1), [12, 13], &mut out);
    f.on_nack(DownKey(2), [105], &mut out);
    let s = sends(&out);
    // Down 1 switched at the same instant: its timestamps continue one tick after its last (0).
    assert_eq!(s, vec![(DownKey(1), 12, 1), (DownKey(1), 13, 1), (DownKey(2), 105, 1000)]);
    // A sequence number never sent, and one from before the switch, go unanswered.
    out.clear();
    f.on_nack(DownKey(1), [9, 200], &mut out);
    f.on_nack(DownKey(99), [1], &mut out);
    assert!(out.is_empty());
    assert_eq!(f.stats().nacks_answered, 3);
    assert_eq!(f.stats().nacks_missed, 2);
}

#[test]
fn with_rtx_a_nack_is_answered_on_the_rtx_stream_with_the_original_sequence_number_first() {
    let t0 = Instant::now();
    let mut f = Forwarder::new(ForwardConfig::default());
    f.add_track(TrackKey(1), video()).expect("test setup");
    let mut out = Vec::new();
    let spec = DownSpec { rtx: Some(RtxStream { ssrc: 0x5151, first_seq: 65_535 }), ..down_spec(7) };
    f.add_down(t0, DownKey(1), spec, Some(TrackKey(1)), &mut out).expect("test setup");
    f.set_payload_type(DownKey(1), 100, Some(101));
    for seq in 100..110 {
        let payload = if seq == 100 { VP8_KEY } else { VP8_CONT };
        f.on_rtp(t0, TrackKey(1), &pkt(seq, 1000 + u32::from(seq), payload), &mut out);
    }
    out.clear();
    f.on_nack(DownKey(1), [103, 100], &mut out);
    let rtx = packets(&out);
    assert_eq!(rtx.len(), 2);
    // Own SSRC, payload type and numbering (from the random first, wrapping).
    assert!(rtx.iter().all(|p| p.header.ssrc == 0x5151 && p.header.payload_type == 101));
    assert_eq!(rtx.iter().map(|p| p.header.sequence_number).collect::<Vec<_>>(), vec![65_535, 0]);
    // The original timestamp and marker; the payload is OSN then the original payload.
    assert_eq!(rtx[0].header.timestamp, 1103);
    assert_eq!(&rtx[0].payload[..], &[0, 103, 0x00, 0x00, 0x00]);
    assert_eq!(&rtx[1].payload[..], &[0, 100, 0x10, 0x00, 0x9d, 0x01, 0x2a]);
    assert_eq!(f.stats().rtx_sent, 2);
    assert_eq!(f.stats().nacks_answered, 2);
    // A codec without RTX (no paired payload type), or RTX turned off:
    // retransmitted on the stream itself, under the lost sequence number.
    for off in [
        |f: &mut Forwarder| f.set_payload_type(DownKey(1), 100, None),
        |f: &mut Forwarder| {
            f.set_payload_type(DownKey(1), 100, Some(101));
            f.disable_rtx(DownKey(1));
        },
    ] {
        off(&mut f);
        out.clear();
        f.on_nack(DownKey(1), [104], &mut out);
        let Some(Action::Send { packet, .. }) = out.first() else { panic!("answered: {out:?}") };
        assert_eq!((packet.header.ssrc, packet.header.payload_type, packet.header.sequence_number), (7, 100, 104));
        assert_eq!(&packet.payload[..], VP8_CONT);
    }
    assert_eq!(f.stats().rtx_sent, 2);
}

#[test]
fn padding_goes_on_the_rtx_stream_only_once_media_went_out() {
    let t0 = Instant::now();
    let mut f = Forwarder::new(ForwardConfig::default());
    f.add_track(TrackKey(1), video()).expect("test setup");
    let mut out = Vec::new();
    let spec = DownSpec { rtx: Some(RtxStream { ssrc: 0x5151, first_seq: 9 }), ..down_spec(7) };
    f.add_down(t0, DownKey(1), spec, Some(TrackKey(1)), &mut out).expect("test setup");
    f.set_payload_type(DownKey(1), 100, Some(101));
    assert!(!f.padding(DownKey(1), &mut out), "nothing sent yet");
    f.on_rtp(t0, TrackKey(1), &pkt(100, 5000, VP8_KEY), &mut out);
    out.clear();
    assert!(f.padding(DownKey(1), &mut out));
    assert!(f.padding(DownKey(1), &mut out));
    let padded = packets(&out);
    assert_eq!(padded.len(), 2);
    for (p, seq) in padded.iter().zip([9u16, 10]) {
        assert_eq!((p.header.ssrc, p.header.payload_type, p.header.sequence_number), (0x5151, 101, seq));
        assert!(p.header.padding && !p.header.marker);
        assert_eq!(p.header.timestamp, 5000, "the stream's last timestamp");
        assert_eq!(p.payload.len(), PADDING_BYTES);
        assert_eq!(p.payload.last().copied(), Some(PADDING_BYTES as u8), "the last byte counts the padding");
    }
    assert_eq!(f.stats().padding_sent, 2);
    // The media stream's numbering is untouched; a NACK after it goes on.
    out.clear();
    f.on_rtp(t0, TrackKey(1), &pkt(101, 5000, VP8_CONT), &mut out);
    assert_eq!(sends(&out), vec![(DownKey(1), 101, 5000)]);
    // No RTX, no padding; nor for an unknown stream.
    f.disable_rtx(DownKey(1));
    assert!(!f.padding(DownKey(1), &mut out));
    assert!(!f.padding(DownKey(9), &mut out));
}

#[test]
fn cache_is_bounded() {
    let t0 = Instant::now();
    let cache = CacheConfig { packets: 16, history: Duration::ZERO, min_bytes: 4096, max_bytes: 4096 };
    let mut f = Forwarder::new(ForwardConfig { video_cache: cache, ..ForwardConfig::default() });
    f.add_track(TrackKey(1), video()).expect("test setup");
    let mut out = Vec::new();
    f.add_down(t0, DownKey(1), down_spec(1), Some(TrackKey(1)), &mut out).expect("test setup");
    for seq in 0..100u16 {
        f.on_rtp(t0, TrackKey(1), &pkt(seq, 0, if seq == 0 { VP8_KEY } else { VP8_CONT }), &mut out);
    }
    out.clear();
    f.on_nack(DownKey(1), [10, 90], &mut out);
    assert_eq!(sends(&out).len(), 1, "only the recent packet is still cached");
}

#[test]
fn audio_flows_at_once_and_audio_levels_rank_speakers() {
    let t0 = Instant::now();
    let mut f = Forwarder::new(ForwardConfig::default());
    f.add_track(TrackKey(1), TrackSpec { codec: Codec::Opus, audio_level_ext: Some(1) }).expect("test setup");
    f.add_track(TrackKey(2), TrackSpec { codec: Codec::Opus, audio_level_ext: Some(1) }).expect("test setup");
    let mut out = Vec::new();
    f.add_down(
        t0,
        DownKey(1),
        DownSpec { ssrc: 9, payload_type: 111, audio_level_ext: Some(3), rtx: None },
        Some(TrackKey(1)),
        &mut out,
    )
    .expect("test setup");
    assert_eq!(keyframe_requests(&out), 0);
    let mut loud = pkt(1, 960, &[0xfc]);
    loud.header.set_extension(1, Bytes::from_static(&[0x80 | 20])).expect("test setup");
    let mut quiet = pkt(1, 960, &[0xfc]);
    quiet.header.set_extension(1, Bytes::from_static(&[60])).expect("test setup");
    f.on_rtp(t0, TrackKey(1), &loud, &mut out);
    f.on_rtp(t0, TrackKey(2), &quiet, &mut out);
    let Some(Action::Send { packet, wire, .. }) = out.first() else { panic!("audio forwarded at once") };
    assert_eq!(wire.audio_level, Some((3, 20)), "level re-numbered, without the voice flag");
    assert!(packet.header.extensions.is_empty(), "the egress writes it");
    assert_eq!(f.active_speakers(t0, Duration::from_secs(1), 127), vec![(TrackKey(1), 20), (TrackKey(2), 60)]);
    assert_eq!(f.active_speakers(t0 + Duration::from_secs(2), Duration::from_secs(1), 127), vec![]);
}

#[test]
fn removing_tracks_and_downs_and_misuse() {
    let t0 = Instant::now();
    let mut f = Forwarder::new(ForwardConfig::default());
    f.add_track(TrackKey(1), video()).expect("test setup");
    assert_eq!(f.add_track(TrackKey(1), video()), Err(ForwardError::DuplicateTrack(TrackKey(1))));
    let mut out = Vec::new();
    assert_eq!(
        f.add_down(t0, DownKey(1), down_spec(1), Some(TrackKey(9)), &mut out),
        Err(ForwardError::UnknownTrack(TrackKey(9)))
    );
    f.add_down(t0, DownKey(1), down_spec(1), Some(TrackKey(1)), &mut out).expect("test setup");
    assert_eq!(f.remove_track(TrackKey(1)), vec![DownKey(1)]);
    assert_eq!(f.source_of(DownKey(1)), None);
    f.on_rtp(t0, TrackKey(1), &pkt(1, 1, VP8_KEY), &mut out);
    f.remove_down(DownKey(1));
    assert_eq!((f.track_count(), f.down_count()), (0, 0));
}

#[test]
fn pausing_a_downtrack_stops_it_and_resuming_waits_for_a_keyframe() {
    let t0 = Instant::now();
    let mut f = Forwarder::new(ForwardConfig::default());
    f.add_track(TrackKey(1), video()).expect("test setup");
    let mut out = Vec::new();
    f.add_down(t0, DownKey(1), down_spec(1), Some(TrackKey(1)), &mut out).expect("test setup");
    f.on_rtp(t0, TrackKey(1), &pkt(1, 0, VP8_KEY), &mut out);
    f.set_paused(t0, DownKey(1), true, &mut out);
    out.clear();
    f.on_rtp(t0, TrackKey(1), &pkt(2, 0, VP8_CONT), &mut out);
    assert!(out.is_empty());
    let t1 = t0 + Duration::from_secs(1);
    f.set_paused(t1, DownKey(1), false, &mut out);
    assert_eq!(keyframe_requests(&out), 1);
    out.clear();
    f.on_rtp(t1, TrackKey(1), &pkt(3, 90_000, VP8_DELTA), &mut out);
    f.on_rtp(t1, TrackKey(1), &pkt(4, 90_000, VP8_KEY), &mut out);
    assert_eq!(sends(&out), vec![(DownKey(1), 2, 90_000)], "continues right after the last sent");
}

#[test]
fn a_muted_track_forwards_nothing_and_resumes_on_a_keyframe() {
    let t0 = Instant::now();
    let mut f = Forwarder::new(ForwardConfig::default());
    f.add_track(TrackKey(1), video()).expect("test setup");
    let mut out = Vec::new();
    f.add_down(t0, DownKey(1), down_spec(1), Some(TrackKey(1)), &mut out).expect("test setup");
    f.on_rtp(t0, TrackKey(1), &pkt(1, 0, VP8_KEY), &mut out);
    f.set_track_muted(t0, TrackKey(1), true, &mut out);
    out.clear();
    f.on_rtp(t0, TrackKey(1), &pkt(2, 0, VP8_CONT), &mut out);
    assert!(out.is_empty(), "muted");
    let t1 = t0 + Duration::from_secs(1);
    f.set_track_muted(t1, TrackKey(1), false, &mut out);
    assert_eq!(keyframe_requests(&out), 1);
    out.clear();
    f.on_rtp(t1, TrackKey(1), &pkt(3, 90_000, VP8_DELTA), &mut out);
    f.on_rtp(t1, TrackKey(1), &pkt(4, 90_000, VP8_KEY), &mut out);
    assert_eq!(sends(&out), vec![(DownKey(1), 2, 90_000)]);
}

#[test]
fn a_stream_keeps_flowing_and_repairable_past_a_sequence_wrap() {
    // 70,000 packets (8 minutes of 720p video): well past the 32,768 packets
    // after which a signed 16-bit distance from the epoch's start turns
    // negative, and past a wrap of the 16-bit sequence numbers.
    let t0 = Instant::now();
    let mut f = Forwarder::new(ForwardConfig::default());
    f.add_track(TrackKey(1), video()).expect("test setup");
    let mut out = Vec::new();
    f.add_down(t0, DownKey(1), down_spec(77), Some(TrackKey(1)), &mut out).expect("test setup");
    let first: u16 = 60_000;
    let mut forwarded = 0usize;
    let mut last_out = None;
    for i in 0..70_000u32 {
        out.clear();
        let seq = first.wrapping_add(i as u16);
        let payload = if i == 0 { VP8_KEY } else { VP8_CONT };
        f.on_rtp(t0, TrackKey(1), &pkt(seq, i * 3000, payload), &mut out);
        for (_, s, _) in sends(&out) {
            forwarded += 1;
            last_out = Some(s);
        }
        // A NACK for the packet just before this one is answered, all along.
        if i > 10 && i % 997 == 0 {
            let lost = last_out.expect("forwarded").wrapping_sub(1);
            out.clear();
            f.on_nack(DownKey(1), [lost], &mut out);
            assert_eq!(sends(&out).len(), 1, "the NACK at packet {i} is answered");
        }
    }
    assert_eq!(forwarded, 70_000, "every packet was forwarded");
}

#[test]
fn a_retransmission_is_the_first_send_byte_for_byte() {
    use rtc::shared::marshal::Marshal;
    // Same (SSRC, sequence number) under SRTP must mean the same bytes.
    let t0 = Instant::now();
    let mut f = Forwarder::new(ForwardConfig::default());
    f.add_track(TrackKey(1), video()).expect("test setup");
    let mut out = Vec::new();
    f.add_down(t0, DownKey(1), down_spec(1), Some(TrackKey(1)), &mut out).expect("test setup");
    out.clear();
    let mut first = Vec::new();
    for seq in 500..520u16 {
        let mut p = pkt(seq, u32::from(seq) * 3000, if seq == 500 { VP8_KEY } else { VP8_CONT });
        p.header.marker = seq % 4 == 3;
        p.header.csrc = if seq % 2 == 0 { vec![0x0102_0304, u32::from(seq)] } else { Vec::new() };
        // The publisher's extensions are never forwarded, first send or resend.
        p.header.extension = true;
        p.header.extensions = vec![rtc::rtp::header::Extension { id: 3, payload: Bytes::from_static(&[9, 9]) }];
        f.on_rtp(t0 + Duration::from_millis(u64::from(seq - 500) * 7), TrackKey(1), &p, &mut out);
        for a in out.drain(..) {
            if let Action::Send { packet, .. } = a {
                first.push(packet.marshal().expect("marshal"));
            }
        }
    }
    let out_seqs: Vec<u16> = first.iter().map(|b| u16::from_be_bytes([b[2], b[3]])).collect();
    f.on_nack(DownKey(1), out_seqs.iter().copied(), &mut out);
    let again: Vec<_> = out
        .iter()
        .filter_map(|a| match a {
            Action::Send { packet, .. } => Some(packet.marshal().expect("marshal")),
            Action::RequestKeyframe { .. } => None,
        })
        .collect();
    assert_eq!(again.len(), 20);
    assert_eq!(again, first);
}

#[test]
fn a_layer_switch_keeps_the_old_layer_until_the_new_one_sends_a_keyframe() {
    let t0 = Instant::now();
    let mut f = Forwarder::new(ForwardConfig::default());
    // Two simulcast layers of one camera: their own numbering.
    f.add_track(TrackKey(1), video()).expect("test setup");
    f.add_track(TrackKey(2), video()).expect("test setup");
    let mut out = Vec::new();
    f.add_down(t0, DownKey(1), down_spec(5), Some(TrackKey(1)), &mut out).expect("test setup");
    f.on_rtp(t0, TrackKey(1), &pkt(100, 1000, VP8_KEY), &mut out);
    f.on_rtp(t0, TrackKey(1), &pkt(101, 4000, VP8_DELTA), &mut out);
    out.clear();
    f.switch_at_keyframe(t0, DownKey(1), TrackKey(2), &mut out).expect("switch");
    assert_eq!(keyframe_requests(&out), 1, "the new layer is asked for a keyframe");
    assert_eq!(f.source_of(DownKey(1)), Some(TrackKey(1)), "the old layer goes on meanwhile");
    assert_eq!(f.pending_of(DownKey(1)), Some(TrackKey(2)));
    out.clear();
    let t1 = t0 + Duration::from_millis(33);
    f.on_rtp(t1, TrackKey(2), &pkt(7000, 90_000, VP8_DELTA), &mut out);
    f.on_rtp(t1, TrackKey(1), &pkt(102, 7000, VP8_DELTA), &mut out);
    assert_eq!(sends(&out), vec![(DownKey(1), 102, 7000)], "a delta frame of the new layer is not shown");
    out.clear();
    let t2 = t1 + Duration::from_millis(33);
    f.on_rtp(t2, TrackKey(2), &pkt(7001, 93_000, VP8_KEY), &mut out);
    f.on_rtp(t2, TrackKey(2), &pkt(7002, 93_000, VP8_CONT), &mut out);
    f.on_rtp(t2, TrackKey(1), &pkt(103, 10_000, VP8_DELTA), &mut out);
    let s = sends(&out);
    assert_eq!(s.len(), 2, "the keyframe and its next packet, nothing more of the old layer: {s:?}");
    assert_eq!((s[0].1, s[1].1), (103, 104), "sequence numbers go on where they were");
    assert_eq!(s[0].2, 7000 + 2970, "the timestamp advances by the 33 ms that passed");
    assert_eq!(f.source_of(DownKey(1)), Some(TrackKey(2)));
    assert_eq!(f.pending_of(DownKey(1)), None);

    // Asking for the current source cancels a pending switch; one with
    // nothing to show (waiting for a keyframe) switches at once.
    out.clear();
    f.switch_at_keyframe(t2, DownKey(1), TrackKey(1), &mut out).expect("switch");
    f.switch_at_keyframe(t2, DownKey(1), TrackKey(2), &mut out).expect("switch");
    assert_eq!(f.pending_of(DownKey(1)), None);
    f.add_down(t2, DownKey(2), down_spec(6), Some(TrackKey(2)), &mut out).expect("test setup");
    f.switch_at_keyframe(t2, DownKey(2), TrackKey(1), &mut out).expect("switch");
    assert_eq!(f.source_of(DownKey(2)), Some(TrackKey(1)), "nothing shown yet: no reason to wait");
    // A pending target that ends leaves the downtrack where it is.
    f.switch_at_keyframe(t2, DownKey(1), TrackKey(1), &mut out).expect("switch");
    assert_eq!(f.pending_of(DownKey(1)), Some(TrackKey(1)));
    f.remove_track(TrackKey(1));
    assert_eq!(f.pending_of(DownKey(1)), None);
    assert_eq!(f.source_of(DownKey(1)), Some(TrackKey(2)));
    f.remove_down(DownKey(1));
    assert_eq!(f.switch_at_keyframe(t2, DownKey(1), TrackKey(2), &mut out), Err(ForwardError::UnknownDown(DownKey(1))));
}

/// A VP8 packet with a 15-bit picture ID and a TL0PICIDX (keyframe or not).
fn vp8_pid(seq: u16, ts: u32, pid: u16, tl0: u8, key: bool) -> Packet {
    let payload = vec![0x90, 0xc0, 0x80 | (pid >> 8) as u8, pid as u8, tl0, if key { 0x00 } else { 0x01 }, 0x9d];
    Packet {
        header: rtc::rtp::Header {
            version: 2,
            payload_type: 96,
            sequence_number: seq,
            timestamp: ts,
            ..Default::default()
        },
        payload: Bytes::from(payload),
    }
}

fn sent_vp8_ids(actions: &[Action]) -> Vec<(u16, u16, u8)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send { packet, wire: w, .. } => {
                // As it goes on the wire: the patch applied.
                let mut wire = packet.payload.to_vec();
                if let Some(p) = w.patch {
                    p.apply(&mut wire);
                }
                let ids = codec::vp8_ids(&wire)?;
                Some((packet.header.sequence_number, ids.picture_id?.0, ids.tl0?.0))
            }
            Action::RequestKeyframe { .. } => None,
        })
        .collect()
}

#[test]
fn vp8_picture_ids_stay_continuous_across_a_layer_switch_and_in_retransmissions() {
    let t0 = Instant::now();
    let mut f = Forwarder::new(ForwardConfig::default());
    f.add_track(TrackKey(1), video()).expect("test setup");
    f.add_track(TrackKey(2), video()).expect("test setup");
    let mut out = Vec::new();
    f.add_down(t0, DownKey(1), down_spec(5), Some(TrackKey(1)), &mut out).expect("test setup");
    out.clear();
    // The first layer's ids go out as they are (no copy needed).
    f.on_rtp(t0, TrackKey(1), &vp8_pid(10, 0, 5000, 20, true), &mut out);
    f.on_rtp(t0, TrackKey(1), &vp8_pid(11, 3000, 5001, 21, false), &mut out);
    assert_eq!(sent_vp8_ids(&out), vec![(10, 5000, 20), (11, 5001, 21)]);
    // The second layer's ids lag far behind; after the switch they follow on.
    f.switch_at_keyframe(t0, DownKey(1), TrackKey(2), &mut out).expect("switch");
    out.clear();
    f.on_rtp(t0, TrackKey(2), &vp8_pid(900, 6000, 12, 3, true), &mut out);
    f.on_rtp(t0, TrackKey(2), &vp8_pid(901, 9000, 13, 4, false), &mut out);
    assert_eq!(sent_vp8_ids(&out), vec![(12, 5002, 22), (13, 5003, 23)]);
    for a in &out {
        let Action::Send { packet, wire, .. } = a else { continue };
        assert!(wire.patch.is_some(), "renumbered where it is written");
        assert!(
            codec::vp8_ids(&packet.payload).is_some_and(|ids| ids.picture_id.is_some_and(|p| p.0 < 20)),
            "not copied"
        );
    }
    // A retransmission carries the ids its first send had.
    out.clear();
    f.on_nack(DownKey(1), [13], &mut out);
    assert_eq!(sent_vp8_ids(&out), vec![(13, 5003, 23)]);
    // Wrapping the 15-bit space.
    f.switch_at_keyframe(t0, DownKey(1), TrackKey(1), &mut out).expect("switch");
    out.clear();
    f.on_rtp(t0, TrackKey(1), &vp8_pid(12, 12_000, 0x7fff, 255, true), &mut out);
    f.on_rtp(t0, TrackKey(1), &vp8_pid(13, 15_000, 0, 0, false), &mut out);
    assert_eq!(sent_vp8_ids(&out), vec![(14, 5004, 24), (15, 5005, 25)]);
}

#[test]
fn red_audio_goes_as_it_comes_to_a_red_player_and_as_its_newest_frame_to_others() {
    let t0 = Instant::now();
    let config = ForwardConfig::default();
    let mut f = Forwarder::new(ForwardConfig { audio_cache: config.video_cache, ..config });
    f.add_track(TrackKey(1), TrackSpec { codec: Codec::Red, audio_level_ext: None }).expect("test setup");
    f.set_red_payload_type(TrackKey(1), 63);
    let mut out = Vec::new();
    for (down, red_pt, strip) in [(DownKey(1), 120u8, false), (DownKey(2), 110u8, true)] {
        f.add_down(
            t0,
            down,
            DownSpec { ssrc: down.0, payload_type: 0, audio_level_ext: None, rtx: None },
            None,
            &mut out,
        )
        .expect("test setup");
        f.set_payload_type(down, red_pt, None);
        f.set_red(down, RedOut { opus_payload_type: 110, strip });
        f.switch(t0, down, TrackKey(1), &mut out).expect("test setup");
    }
    let red = |seq: u16, payload: &'static [u8]| {
        let mut p = pkt(seq, u32::from(seq) * 960, payload);
        p.header.payload_type = 63;
        p
    };
    // One redundant block (the previous frame, 2 bytes) and the newest (3 bytes).
    const RED: &[u8] = &[0x80 | 111, 0x0f, 0x00, 2, 111, 0xaa, 0xbb, 1, 2, 3];
    out.clear();
    f.on_rtp(t0, TrackKey(1), &red(1, RED), &mut out);
    let by = |out: &[Action], d: DownKey| -> Vec<(u8, Vec<u8>)> {
        out.iter()
            .filter_map(|a| match a {
                Action::Send { down, packet, .. } if *down == d => {
                    Some((packet.header.payload_type, packet.payload.to_vec()))
                }
                _ => None,
            })
            .collect()
    };
    assert_eq!(by(&out, DownKey(1)), vec![(120, RED.to_vec())], "a RED player: as it came, its own RED number");
    assert_eq!(by(&out, DownKey(2)), vec![(110, vec![1, 2, 3])], "another: the newest frame as Opus");
    // A plain Opus packet of the same track: Opus's number for both.
    out.clear();
    f.on_rtp(t0, TrackKey(1), &pkt(2, 1920, &[0xfc, 9]), &mut out);
    assert_eq!(by(&out, DownKey(1)), vec![(110, vec![0xfc, 9])]);
    assert_eq!(by(&out, DownKey(2)), vec![(110, vec![0xfc, 9])]);
    // Blocks that run past the end: the RED player gets it as it came, the other nothing.
    out.clear();
    f.on_rtp(t0, TrackKey(1), &red(3, &[0x80 | 111, 0, 0, 40, 111, 1]), &mut out);
    assert_eq!(by(&out, DownKey(1)).len(), 1);
    assert!(by(&out, DownKey(2)).is_empty());
    assert_eq!(f.stats().dropped_malformed_red, 1);
    // A retransmission (with an audio cache) is what first went out.
    out.clear();
    let mut o = Vec::new();
    f.on_rtp(t0, TrackKey(1), &red(4, RED), &mut o);
    let seq_of = |d: DownKey| {
        o.iter()
            .find_map(|a| match a {
                Action::Send { down, packet, .. } if *down == d => Some(packet.header.sequence_number),
                _ => None,
            })
            .expect("sent")
    };
    let (s1, s2) = (seq_of(DownKey(1)), seq_of(DownKey(2)));
    f.on_nack(DownKey(1), [s1], &mut out);
    f.on_nack(DownKey(2), [s2], &mut out);
    assert_eq!(by(&out, DownKey(1)), vec![(120, RED.to_vec())]);
    assert_eq!(by(&out, DownKey(2)), vec![(110, vec![1, 2, 3])]);
    // Pointed at an Opus source, a down forgets RED.
    f.set_payload_type(DownKey(2), 110, None);
    out.clear();
    f.on_rtp(t0, TrackKey(1), &red(5, RED), &mut out);
    assert_eq!(by(&out, DownKey(2)), vec![(110, RED.to_vec())]);
}

#[test]
fn a_switched_vp8_stream_is_forwarded_without_a_copy_or_an_allocation() {
    let t0 = Instant::now();
    let mut f = Forwarder::new(ForwardConfig::default());
    f.add_track(TrackKey(1), video()).expect("test setup");
    f.add_track(TrackKey(2), video()).expect("test setup");
    let mut out = Vec::with_capacity(64);
    f.add_down(t0, DownKey(1), down_spec(5), Some(TrackKey(1)), &mut out).expect("test setup");
    f.on_rtp(t0, TrackKey(1), &vp8_pid(10, 0, 5000, 20, true), &mut out);
    f.switch_at_keyframe(t0, DownKey(1), TrackKey(2), &mut out).expect("switch");
    f.on_rtp(t0, TrackKey(2), &vp8_pid(900, 6000, 12, 3, true), &mut out);
    let packets: Vec<Packet> = (0..100u16).map(|i| vp8_pid(901 + i, 9000, 13 + i, 4, false)).collect();
    // A payload from the network is a slice of a shared buffer: cloning it
    // counts a reference. These come from a Vec; their first clone makes
    // them shared (bytes allocates for that once), so it is done here.
    for p in &packets {
        drop(p.payload.clone());
    }
    out.clear();
    let counted = allocation_counter::measure(|| {
        for p in &packets {
            f.on_rtp(t0, TrackKey(2), p, &mut out);
            out.clear();
        }
    });
    assert_eq!(counted.count_total, 0, "allocations forwarding 100 renumbered VP8 packets: {counted:?}");
}

#[test]
fn audio_with_levels_is_forwarded_without_an_allocation() {
    let t0 = Instant::now();
    let mut f = Forwarder::new(ForwardConfig::default());
    f.add_track(TrackKey(1), TrackSpec { codec: Codec::Opus, audio_level_ext: Some(1) }).expect("test setup");
    let mut out = Vec::with_capacity(64);
    let spec = DownSpec { ssrc: 9, payload_type: 111, audio_level_ext: Some(3), rtx: None };
    f.add_down(t0, DownKey(1), spec, Some(TrackKey(1)), &mut out).expect("test setup");
    let packets: Vec<Packet> = (0..100u16)
        .map(|i| {
            let mut p = pkt(i, u32::from(i) * 960, &[0xfc, 1, 2]);
            p.header.set_extension(1, Bytes::from_static(&[0x80 | 30])).expect("test setup");
            p
        })
        .collect();
    f.on_rtp(t0, TrackKey(1), &packets[0], &mut out);
    out.clear();
    let counted = allocation_counter::measure(|| {
        for p in &packets[1..] {
            f.on_rtp(t0, TrackKey(1), p, &mut out);
            out.clear();
        }
    });
    assert_eq!(counted.count_total, 0, "allocations forwarding 99 audio packets with levels: {counted:?}");
}
