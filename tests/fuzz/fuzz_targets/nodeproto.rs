//! The control plane ↔ media node protocol off NATS: requests (the node
//! reads them), replies and room signals (the control plane reads them).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = arc_nodeproto::decode_request(data);
    let _ = arc_nodeproto::decode_reply(data);
    let _ = arc_nodeproto::decode_signal(data);
});
