//! AES-256-GCM sealing of app secrets under a master key.

use std::fmt;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
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

    /// Parses 64 hex characters or base64 (standard or url-safe) of 32 bytes.
    pub fn parse(s: &str) -> Result<Self, SealError> {
        let s = s.trim();
        let bytes = Zeroizing::new(if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(s).map_err(|_| SealError::BadKey("not hex".into()))?
        } else {
            STANDARD
                .decode(s)
                .or_else(|_| URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')))
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

/// Seals `plaintext` bound to `aad` (the owner's id) with a fresh random nonce.
pub fn seal(key: &MasterKey, plaintext: &[u8], aad: &[u8]) -> SealedSecret {
    let mut nonce = [0u8; 12];
    rand::rng().fill_bytes(&mut nonce);
    // AES-GCM encryption of an in-memory buffer cannot fail for inputs this small.
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
    use super::*;

    #[test]
    fn round_trip_and_binding() {
        let key = MasterKey::generate();
        let sealed = seal(&key, b"sk_secret", b"app_1");
        assert_eq!(open(&key, &sealed, b"app_1").expect("opens").as_slice(), b"sk_secret");
        assert_eq!(open(&key, &sealed, b"app_2"), Err(SealError::Tampered));
        let mut flipped = sealed.clone();
        let mut bytes = URL_SAFE_NO_PAD.decode(&flipped.ciphertext).expect("b64");
        bytes[0] ^= 1;
        flipped.ciphertext = URL_SAFE_NO_PAD.encode(bytes);
        assert_eq!(open(&key, &flipped, b"app_1"), Err(SealError::Tampered));
        let other = MasterKey::generate();
        assert!(matches!(open(&other, &sealed, b"app_1"), Err(SealError::WrongKey { .. })));
        let mut bad = sealed.clone();
        bad.alg = "none".into();
        assert!(matches!(open(&key, &bad, b"app_1"), Err(SealError::UnknownAlg(_))));
        let mut bad = sealed;
        bad.nonce = "!!".into();
        assert!(matches!(open(&key, &bad, b"app_1"), Err(SealError::Malformed(_))));
    }

    #[test]
    fn keys_parse_from_hex_and_base64_and_never_print() {
        let key = MasterKey::generate();
        let hex = key.encode();
        assert_eq!(MasterKey::parse(&hex).expect("hex").encode(), hex);
        let b64 = STANDARD.encode(hex::decode(&hex).expect("hex"));
        assert_eq!(MasterKey::parse(&b64).expect("b64").encode(), hex);
        assert!(MasterKey::parse("short").is_err());
        assert!(MasterKey::parse(&"zz".repeat(32)).is_err());
        let shown = format!("{key:?}");
        assert!(!shown.contains(&hex) && shown.starts_with("MasterKey(mk_"));
        let err = MasterKey::parse("not-a-key-at-all").expect_err("bad").to_string();
        assert!(!err.contains("not-a-key-at-all"));
    }
}
