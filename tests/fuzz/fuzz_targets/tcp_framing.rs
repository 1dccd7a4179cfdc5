//! RFC 4571 framing of ICE-TCP connections (the decoder the media driver
//! feeds a connection's bytes to).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut decoder = rtc::shared::tcp_framing::TcpFrameDecoder::new();
    // In two reads, as a stream arrives.
    let (a, b) = data.split_at(data.len() / 2);
    for part in [a, b] {
        decoder.extend_from_slice(part);
        while let Some(frame) = decoder.next_packet() {
            let _ = arc_media::engine::demux::classify(&frame);
        }
    }
});
