//! One UDP port for every peer: which session a datagram belongs to.
//!
//! A known 5-tuple goes straight to its session. A new address is only
//! learned from a STUN binding request whose USERNAME names one of our
//! sessions' ICE ufrags (`<ours>:<theirs>`, RFC 8445 §7.2.2) **and** whose
//! MESSAGE-INTEGRITY verifies under that session's password: a forged check
//! from a spoofed source can neither steal a session's address nor reach its
//! connection. Everything else from an unknown address is dropped and
//! counted. Pure functions, no panics.

/// RFC 5389 magic cookie.
const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
const ATTR_USERNAME: u16 = 0x0006;
const ATTR_USE_CANDIDATE: u16 = 0x0025;
const BINDING_REQUEST: [u8; 2] = [0x00, 0x01];

/// What kind of packet a datagram is (RFC 7983 first-byte ranges).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketClass {
    Stun,
    Dtls,
    Rtp,
    Unknown,
}

pub fn classify(b: &[u8]) -> PacketClass {
    match b.first() {
        Some(0..=3) => PacketClass::Stun,
        Some(20..=63) => PacketClass::Dtls,
        Some(128..=191) => PacketClass::Rtp,
        _ => PacketClass::Unknown,
    }
}

/// The first attribute of type `want` of a well-formed STUN message.
fn stun_attribute(b: &[u8], want: u16) -> Option<&[u8]> {
    if b.len() < 20 || b.get(4..8)? != MAGIC_COOKIE || b[0] & 0xc0 != 0 {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([b[2], b[3]]));
    let body = b.get(20..20 + len)?;
    let mut i = 0;
    while i + 4 <= body.len() {
        let typ = u16::from_be_bytes([body[i], body[i + 1]]);
        let alen = usize::from(u16::from_be_bytes([body[i + 2], body[i + 3]]));
        let value = body.get(i + 4..i + 4 + alen)?;
        if typ == want {
            return Some(value);
        }
        i += 4 + alen.div_ceil(4) * 4;
    }
    None
}

/// The local (our) ufrag from a STUN message's USERNAME, if it is a
/// well-formed STUN message carrying one.
pub fn stun_local_ufrag(b: &[u8]) -> Option<&str> {
    let user = std::str::from_utf8(stun_attribute(b, ATTR_USERNAME)?).ok()?;
    user.split(':').next().filter(|s| !s.is_empty())
}

/// Whether a STUN message is a binding request that nominates its pair
/// (USE-CANDIDATE, RFC 8445 §7.1.2). Says nothing of its integrity.
pub fn stun_nominates(b: &[u8]) -> bool {
    b.get(..2) == Some(&BINDING_REQUEST[..]) && stun_attribute(b, ATTR_USE_CANDIDATE).is_some()
}

/// Whether a STUN message's MESSAGE-INTEGRITY verifies under `password`
/// (ICE short-term credentials, RFC 8445 §7.2.2). Malformed input: `false`.
pub fn stun_integrity_ok(b: &[u8], password: &str, crypto: &dyn rtc::crypto::RTCCrypto) -> bool {
    let mut m = rtc::stun::message::Message::new();
    if m.unmarshal_binary(b).is_err() {
        return false;
    }
    rtc::stun::integrity::MessageIntegrity::check(&mut m, password.as_bytes(), crypto).is_ok()
}

/// The DTLS record content type of handshake messages (RFC 6347 §4.1).
const DTLS_HANDSHAKE: u8 = 22;
/// DTLS handshake message types (RFC 6347 §4.2.2).
const DTLS_CLIENT_HELLO: u8 = 1;
const DTLS_SERVER_HELLO: u8 = 2;

/// Calls `each` with the handshake message type of every record of a
/// datagram of DTLS records (RFC 6347 §4.1), or `None` for a record that is
/// not an epoch-0 handshake record (a change of cipher spec, an alert,
/// application data, anything encrypted). Answers whether the datagram was
/// nothing but well-formed records, at least one.
fn dtls_records(mut b: &[u8], mut each: impl FnMut(Option<u8>)) -> bool {
    let mut any = false;
    while !b.is_empty() {
        // type(1) version(2) epoch(2) sequence(6) length(2), then the fragment.
        let Some(header) = b.get(..13) else { return false };
        let len = usize::from(u16::from_be_bytes([header[11], header[12]]));
        let Some(fragment) = b.get(13..13 + len) else { return false };
        let handshake = header[0] == DTLS_HANDSHAKE && header[3..5] == [0, 0];
        // A handshake fragment: msg_type(1) length(3) message_seq(2) offset(3) fragment length(3).
        each(if handshake && fragment.len() >= 12 { Some(fragment[0]) } else { None });
        any = true;
        b = &b[13 + len..];
    }
    any
}

/// Whether a datagram holds nothing but DTLS ClientHello records (or
/// fragments of one): once the node has answered with its ServerHello
/// flight, such a datagram is the client repeating its hello because that
/// flight was lost.
pub fn dtls_only_client_hellos(b: &[u8]) -> bool {
    // Media (RTP, SRTCP) and later DTLS records leave at the first byte.
    if b.first() != Some(&DTLS_HANDSHAKE) {
        return false;
    }
    let mut only = true;
    dtls_records(b, |t| only &= t == Some(DTLS_CLIENT_HELLO)) && only
}

/// Whether a datagram of DTLS records carries a ServerHello.
pub fn dtls_has_server_hello(b: &[u8]) -> bool {
    if b.first() != Some(&DTLS_HANDSHAKE) {
        return false;
    }
    let mut found = false;
    dtls_records(b, |t| found |= t == Some(DTLS_SERVER_HELLO));
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stun_with_username(user: &[u8]) -> Vec<u8> {
        let mut attrs = Vec::new();
        attrs.extend_from_slice(&ATTR_USERNAME.to_be_bytes());
        attrs.extend_from_slice(&(user.len() as u16).to_be_bytes());
        attrs.extend_from_slice(user);
        while attrs.len() % 4 != 0 {
            attrs.push(0);
        }
        let mut m = vec![0x00, 0x01];
        m.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        m.extend_from_slice(&MAGIC_COOKIE);
        m.extend_from_slice(&[7; 12]);
        m.extend_from_slice(&attrs);
        m
    }

    /// One DTLS record: `content` type, `epoch`, a fragment of `len` bytes
    /// whose first byte (a handshake's message type) is `msg_type`.
    fn record(content: u8, epoch: u16, msg_type: u8, len: usize) -> Vec<u8> {
        let mut r = vec![content, 0xfe, 0xfd];
        r.extend_from_slice(&epoch.to_be_bytes());
        r.extend_from_slice(&[0, 0, 0, 0, 0, 9]);
        r.extend_from_slice(&(len as u16).to_be_bytes());
        let mut fragment = vec![0; len];
        if let Some(first) = fragment.first_mut() {
            *first = msg_type;
        }
        r.extend_from_slice(&fragment);
        r
    }

    #[test]
    fn repeated_client_hellos_are_told_from_the_rest_of_dtls() {
        let hello = record(22, 0, 1, 200);
        assert!(dtls_only_client_hellos(&hello));
        // A hello in two fragments, two records in one datagram.
        let both = [record(22, 0, 1, 600), record(22, 0, 1, 600)].concat();
        assert!(dtls_only_client_hellos(&both));
        // A flight 5 (certificate, key exchange, change of cipher spec, encrypted finished).
        let flight5 =
            [record(22, 0, 11, 300), record(22, 0, 16, 40), record(20, 0, 1, 1), record(22, 1, 20, 40)].concat();
        assert!(!dtls_only_client_hellos(&flight5) && !dtls_has_server_hello(&flight5));
        // Encrypted epoch-1 records, alerts, truncated or trailing bytes, nothing.
        assert!(!dtls_only_client_hellos(&record(22, 1, 1, 40)));
        assert!(!dtls_only_client_hellos(&record(21, 0, 1, 2)));
        assert!(!dtls_only_client_hellos(&hello[..hello.len() - 1]));
        assert!(!dtls_only_client_hellos(&[hello.as_slice(), &[22, 0xfe]].concat()));
        assert!(!dtls_only_client_hellos(&record(22, 0, 1, 5)), "shorter than a handshake header");
        assert!(!dtls_only_client_hellos(&[]));
        // The server's flight 4 starts with its hello.
        let flight4 = [record(22, 0, 2, 80), record(22, 0, 11, 400), record(22, 0, 14, 12)].concat();
        assert!(dtls_has_server_hello(&flight4) && !dtls_only_client_hellos(&flight4));
        assert!(!dtls_has_server_hello(&hello));
        for cut in 0..flight4.len() {
            let _ = (dtls_has_server_hello(&flight4[..cut]), dtls_only_client_hellos(&flight4[..cut]));
        }
    }

    #[test]
    fn only_checks_signed_with_the_session_password_pass() {
        use rtc::stun::attributes::ATTR_USERNAME as USERNAME;
        use rtc::stun::integrity::MessageIntegrity;
        use rtc::stun::message::{BINDING_REQUEST, Message, Setter, TransactionId};
        use rtc::stun::textattrs::TextAttribute;
        let provider = rtc::crypto::default_provider().expect("crypto");
        let crypto = provider.crypto();
        let mut m = Message::new();
        let integrity = MessageIntegrity::new_short_term_integrity_with_provider("sessionpassword".into(), crypto);
        let setters: Vec<Box<dyn Setter + '_>> = vec![
            Box::new(BINDING_REQUEST),
            Box::new(TransactionId::new()),
            Box::new(TextAttribute::new(USERNAME, "ours:theirs".into())),
            Box::new(integrity),
        ];
        m.build(&setters).expect("build");
        let bytes = m.raw.clone();
        assert_eq!(stun_local_ufrag(&bytes), Some("ours"));
        assert!(!stun_nominates(&bytes), "no USE-CANDIDATE");
        assert!(stun_integrity_ok(&bytes, "sessionpassword", crypto));
        assert!(!stun_integrity_ok(&bytes, "another-password", crypto), "a forged check is refused");
        let mut tampered = bytes.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(!stun_integrity_ok(&tampered, "sessionpassword", crypto));
        assert!(!stun_integrity_ok(&stun_with_username(b"ours:theirs"), "sessionpassword", crypto), "no integrity");
        for n in 0..bytes.len() {
            assert!(!stun_integrity_ok(&bytes[..n], "sessionpassword", crypto));
        }
    }

    #[test]
    fn nominations_are_binding_requests_with_use_candidate() {
        let mut m = stun_with_username(b"abcd:ef");
        assert!(!stun_nominates(&m));
        m.extend_from_slice(&ATTR_USE_CANDIDATE.to_be_bytes());
        m.extend_from_slice(&[0, 0]);
        let len = u16::from_be_bytes([m[2], m[3]]) + 4;
        m[2..4].copy_from_slice(&len.to_be_bytes());
        assert!(stun_nominates(&m));
        assert_eq!(stun_local_ufrag(&m), Some("abcd"), "the attribute after USERNAME is found too");
        // A binding success response with the attribute nominates nothing.
        m[1] = 0x01;
        m[0] = 0x01;
        assert!(!stun_nominates(&m));
        for n in 0..m.len() {
            let _ = stun_nominates(&m[..n]);
        }
    }

    #[test]
    fn finds_our_ufrag() {
        let m = stun_with_username(b"abcd1234:zzzz");
        assert_eq!(classify(&m), PacketClass::Stun);
        assert_eq!(stun_local_ufrag(&m), Some("abcd1234"));
    }

    #[test]
    fn garbage_is_refused_without_panicking() {
        let good = stun_with_username(b"abcd:ef");
        for n in 0..good.len() {
            let _ = stun_local_ufrag(&good[..n]);
        }
        assert_eq!(stun_local_ufrag(&[0u8; 19]), None);
        let mut bad_cookie = good.clone();
        bad_cookie[4] = 0;
        assert_eq!(stun_local_ufrag(&bad_cookie), None);
        let mut lying_len = good.clone();
        lying_len[3] = 0xff;
        assert_eq!(stun_local_ufrag(&lying_len), None);
        assert_eq!(stun_local_ufrag(&stun_with_username(b":x")), None);
        assert_eq!(stun_local_ufrag(&stun_with_username(&[0xff, 0xfe])), None);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..10_000 {
            let mut buf = good.clone();
            for b in &mut buf {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if x.is_multiple_of(5) {
                    *b = x as u8;
                }
            }
            let _ = stun_local_ufrag(&buf);
        }
        assert_eq!(classify(&[]), PacketClass::Unknown);
        assert_eq!(classify(&[22]), PacketClass::Dtls);
        assert_eq!(classify(&[0x80]), PacketClass::Rtp);
    }
}
