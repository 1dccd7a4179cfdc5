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
