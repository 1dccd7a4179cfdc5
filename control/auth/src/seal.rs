//! AES-256-GCM sealing of app secrets under a master key.

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use rand::RngCore;
use sha2::{Digest, Sha256};
use thiserror::Error;
use zeroize::{Zeroize, Zeroizing};

/// The sealed form, as stored in events (`app.secret_rotated`).
pub use arc_events::app::SealedSecret;

/// The one algorithm this build seals with.
pub const ALG: &str = "A256GCM";

/// Why a key or a sealed value is unusable.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SealError {
    #[error("bad master key: {0}")]
    BadKey(String),
    #[error("unknown sealing algorithm {0:?}")]
    UnknownAlg(String),
    #[error("sealed with master key {sealed_with}, but this process has {have}")]
    WrongKey { sealed_with: String, have: String },
    #[error("malformed sealed value: {0}")]
    Malformed(&'static str),
    #[error("the sealed value was tampered with or belongs to another owner")]
    Tampered,
}

/// The 256-bit master key. Zeroed on drop; `Debug` shows only its id.
pub struct MasterKey([u8; 32]);

impl Drop for MasterKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey({})", self.key_id())
    }
}

impl MasterKey {
    /// 32 random bytes from the OS-seeded generator.
    pub fn generate() -> Self {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        Self(key)
    }

    /// Parses 64 hex characters, or base64 of 32 bytes in either alphabet
    /// (standard or url-safe), padded or not. Surrounding whitespace is ignored.
    /// Errors never repeat the input.
    pub fn parse(s: &str) -> Result<Self, SealError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(SealError::BadKey("empty; expected 64 hex characters or base64 of 32 bytes".into()));
        }
        let bytes = Zeroizing::new(if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(s).map_err(|_| SealError::BadKey("not hex".into()))?
        } else {
            let unpadded = s.trim_end_matches('=');
            let engine = if unpadded.contains(['+', '/']) { &STANDARD_NO_PAD } else { &URL_SAFE_NO_PAD };
            engine
                .decode(unpadded)
                .map_err(|_| SealError::BadKey("expected 64 hex characters or base64 of 32 bytes".into()))?
        });
        let key: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| SealError::BadKey(format!("expected 32 bytes, got {}", bytes.len())))?;
        Ok(Self(key))
    }

    /// 64 lowercase hex characters.
    pub fn encode(&self) -> String {
        hex::encode(self.0)
    }

    /// `mk_` + 16 hex characters of SHA-256 of the key: names the key without revealing it.
    pub fn key_id(&self) -> String {
        let digest = Sha256::digest(self.0);
        format!("mk_{}", hex::encode(&digest[..8]))
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new((&self.0).into())
    }
}

/// Seals `plaintext` bound to `aad` (the owner's id) with a fresh random 96-bit nonce.
///
/// `aad` is authenticated, not stored: [`open`] must be given the same bytes.
pub fn seal(key: &MasterKey, plaintext: &[u8], aad: &[u8]) -> SealedSecret {
    let mut nonce = [0u8; 12];
    rand::rng().fill_bytes(&mut nonce);
    // AES-GCM refuses only plaintexts over 64 GiB; such a value would come out
    // empty and fail to open as `Malformed` rather than panic here.
    let ciphertext =
        key.cipher().encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad }).unwrap_or_default();
    SealedSecret {
        alg: ALG.into(),
        key_id: key.key_id(),
        nonce: URL_SAFE_NO_PAD.encode(nonce),
        ciphertext: URL_SAFE_NO_PAD.encode(ciphertext),
    }
}

/// Opens a sealed value; fails unless key, `aad` and bytes are exactly those sealed.
pub fn open(key: &MasterKey, sealed: &SealedSecret, aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
    if sealed.alg != ALG {
        return Err(SealError::UnknownAlg(sealed.alg.clone()));
    }
    let have = key.key_id();
    if sealed.key_id != have {
        return Err(SealError::WrongKey { sealed_with: sealed.key_id.clone(), have });
    }
    let nonce = URL_SAFE_NO_PAD.decode(&sealed.nonce).map_err(|_| SealError::Malformed("nonce is not base64url"))?;
    if nonce.len() != 12 {
        return Err(SealError::Malformed("nonce is not 96 bits"));
    }
    let ciphertext =
        URL_SAFE_NO_PAD.decode(&sealed.ciphertext).map_err(|_| SealError::Malformed("ciphertext is not base64url"))?;
    if ciphertext.len() < 16 {
        return Err(SealError::Malformed("ciphertext shorter than its tag"));
    }
    key.cipher()
        .decrypt(Nonce::from_slice(&nonce), Payload { msg: &ciphertext, aad })
        .map(Zeroizing::new)
        .map_err(|_| SealError::Tampered)
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE};

    use super::*;

    fn flip_first_byte(field: &str) -> String {
        let mut bytes = URL_SAFE_NO_PAD.decode(field).expect("b64");
        bytes[0] ^= 1;
        URL_SAFE_NO_PAD.encode(bytes)
    }

    #[test]
    fn round_trip() {
        let key = MasterKey::generate();
        let sealed = seal(&key, b"sk_secret", b"app_1");
        assert_eq!(sealed.alg, "A256GCM");
        assert_eq!(sealed.key_id, key.key_id());
        assert_eq!(URL_SAFE_NO_PAD.decode(&sealed.nonce).expect("nonce").len(), 12);
        assert_eq!(URL_SAFE_NO_PAD.decode(&sealed.ciphertext).expect("ct").len(), 9 + 16);
        assert!(!sealed.ciphertext.contains("sk_secret"));
        assert_eq!(open(&key, &sealed, b"app_1").expect("opens").as_slice(), b"sk_secret");
        // Empty plaintexts seal too.
        assert_eq!(open(&key, &seal(&key, b"", b"a"), b"a").expect("opens").as_slice(), b"");
        // Fresh nonce per call.
        assert_ne!(seal(&key, b"x", b"a").nonce, seal(&key, b"x", b"a").nonce);
        // Survives JSON (it is stored in events).
        let json = serde_json::to_string(&sealed).expect("json");
        let back: SealedSecret = serde_json::from_str(&json).expect("back");
        assert_eq!(open(&key, &back, b"app_1").expect("opens").as_slice(), b"sk_secret");
    }

    #[test]
    fn another_owner_is_tampered() {
        let key = MasterKey::generate();
        let sealed = seal(&key, b"sk_secret", b"app_1");
        assert_eq!(open(&key, &sealed, b"app_2"), Err(SealError::Tampered));
        assert_eq!(open(&key, &sealed, b""), Err(SealError::Tampered));
    }

    #[test]
    fn flipped_bytes_are_tampered() {
        let key = MasterKey::generate();
        let sealed = seal(&key, b"sk_secret", b"app_1");
        let flipped = SealedSecret { ciphertext: flip_first_byte(&sealed.ciphertext), ..sealed.clone() };
        assert_eq!(open(&key, &flipped, b"app_1"), Err(SealError::Tampered));
        let flipped = SealedSecret { nonce: flip_first_byte(&sealed.nonce), ..sealed.clone() };
        assert_eq!(open(&key, &flipped, b"app_1"), Err(SealError::Tampered));
        // The tag is the last 16 bytes.
        let mut bytes = URL_SAFE_NO_PAD.decode(&sealed.ciphertext).expect("b64");
        let last = bytes.len() - 1;
        bytes[last] ^= 0x80;
        let flipped = SealedSecret { ciphertext: URL_SAFE_NO_PAD.encode(bytes), ..sealed };
        assert_eq!(open(&key, &flipped, b"app_1"), Err(SealError::Tampered));
    }

    #[test]
    fn another_master_key_is_named() {
        let key = MasterKey::generate();
        let sealed = seal(&key, b"sk_secret", b"app_1");
        let other = MasterKey::generate();
        assert_eq!(
            open(&other, &sealed, b"app_1"),
            Err(SealError::WrongKey { sealed_with: key.key_id(), have: other.key_id() })
        );
        // A forged key id does not help: the tag still fails.
        let relabelled = SealedSecret { key_id: other.key_id(), ..sealed };
        assert_eq!(open(&other, &relabelled, b"app_1"), Err(SealError::Tampered));
    }

    #[test]
    fn malformed_values_are_refused() {
        let key = MasterKey::generate();
        let sealed = seal(&key, b"sk_secret", b"app_1");
        let bad = SealedSecret { alg: "none".into(), ..sealed.clone() };
        assert_eq!(open(&key, &bad, b"app_1"), Err(SealError::UnknownAlg("none".into())));
        for nonce in ["!!", "", "AAAA", &URL_SAFE_NO_PAD.encode([0u8; 16])] {
            let bad = SealedSecret { nonce: nonce.into(), ..sealed.clone() };
            assert!(matches!(open(&key, &bad, b"app_1"), Err(SealError::Malformed(_))), "{nonce:?}");
        }
        for ciphertext in ["!!", "", &URL_SAFE_NO_PAD.encode([0u8; 15])] {
            let bad = SealedSecret { ciphertext: ciphertext.into(), ..sealed.clone() };
            assert!(matches!(open(&key, &bad, b"app_1"), Err(SealError::Malformed(_))), "{ciphertext:?}");
        }
    }

    #[test]
    fn keys_parse_from_hex_and_base64() {
        let key = MasterKey::generate();
        let hex = key.encode();
        assert_eq!(hex.len(), 64);
        assert!(hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        let raw = hex::decode(&hex).expect("hex");
        let forms = [
            hex.clone(),
            hex.to_uppercase(),
            format!("  {hex}\n"),
            STANDARD.encode(&raw),
            STANDARD_NO_PAD.encode(&raw),
            URL_SAFE.encode(&raw),
            URL_SAFE_NO_PAD.encode(&raw),
            format!("\t{}\n", URL_SAFE_NO_PAD.encode(&raw)),
        ];
        for form in forms {
            let parsed = MasterKey::parse(&form).expect(&form);
            assert_eq!(parsed.encode(), hex, "{form:?}");
            assert_eq!(parsed.key_id(), key.key_id());
        }
        // A fixed key has a fixed id.
        let zero = MasterKey::parse(&"00".repeat(32)).expect("zero key");
        assert_eq!(zero.key_id(), "mk_66687aadf862bd77");
    }

    #[test]
    fn bad_keys_are_refused_without_echo() {
        let garbage = [
            "",
            "   ",
            "short",
            "not-a-key-at-all",
            &"zz".repeat(32),
            &"ab".repeat(31),
            &"ab".repeat(33),
            &STANDARD.encode([7u8; 31]),
            &STANDARD.encode([7u8; 33]),
            "c2VjcmV0LWtleS10aGF0LWlzLXRvby1zaG9ydA==",
            "p@ssw0rd-p@ssw0rd-p@ssw0rd-p@ssw0rd-p@ssw0rd",
        ];
        for g in garbage {
            let err = MasterKey::parse(g).expect_err(g);
            assert!(matches!(err, SealError::BadKey(_)), "{g:?}");
            let shown = format!("{err} {err:?}");
            assert!(g.trim().is_empty() || !shown.contains(g.trim()), "{shown}");
        }
    }

    #[test]
    fn keys_never_print() {
        let key = MasterKey::generate();
        let hex = key.encode();
        let b64 = STANDARD.encode(hex::decode(&hex).expect("hex"));
        let shown = format!("{key:?} {key:#?}");
        assert!(!shown.contains(&hex) && !shown.contains(&b64) && !shown.contains(&hex[..16]));
        assert_eq!(format!("{key:?}"), format!("MasterKey({})", key.key_id()));
        let id = key.key_id();
        assert!(id.starts_with("mk_") && id.len() == 19, "{id}");
    }
}
