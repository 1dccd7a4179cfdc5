//! SRTP egress done by Arc (RFC 3711, RFC 7714): forwarded RTP is written
//! into a reused buffer and protected in place, one cipher call per packet,
//! instead of through `rtc`'s sender, interceptor chain and SRTP context
//! (≈ 3.2 µs, 7–10 allocations and three copies per packet per subscriber).
//!
//! **Where the keys come from.** `rtc` 0.21 derives a connection's SRTP
//! master keys inside its DTLS handler and keeps them private. Every piece of
//! cryptography it does goes through the connection's crypto provider (a
//! public seam: [`RTCCryptoProvider`]), so each leg gets a [`KeyCapture`]: a
//! provider that hands every call to the real one (ring) and notes the
//! calls of the SRTP key derivation (RFC 3711 §4.3: one AES block per label,
//! keyed with the master key, over the master salt with the label mixed in).
//! `rtc` builds the local (our sending) context before the remote one, so the
//! first master key seen is ours. [`KeyCapture::egress`] then derives the
//! session keys itself and **checks** them against the session key the real
//! context was given (`new_aead` / `new_stream_cipher`): a capture that does
//! not verify is refused, and that leg stays on `rtc`'s own egress (slower,
//! never wrong).
//!
//! **One path per SSRC.** A leg's path is chosen once, when it connects, and
//! never changes: its streams' packets all go through [`SrtpEgress`] or all
//! through `rtc`. Two paths would mean two rollover counters for one SSRC,
//! and under AES-GCM a reused (SSRC, ROC, SEQ) is a reused nonce.
//!
//! SRTCP (our sender reports, receiver feedback) stays with `rtc`: it has
//! its own keys and index, so nothing here shares a nonce with it.

use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use rtc::crypto::{
    ActiveKeyExchange, AeadAlgorithm, AeadCipher, BlockCipherAlgorithm, CbcAlgorithm, CbcCipher, CryptoAlgorithm,
    CryptoError, HashAlgorithm, HmacAlgorithm, KeyExchangeAlgorithm, Mac, PublicKey, RTCCrypto, RTCCryptoProvider,
    RTCRandom, SignatureScheme, SigningKey, StreamCipher, StreamCipherAlgorithm,
};

use crate::forward::Wire;

/// Calls a [`KeyCapture`] notes at most (a handshake makes about a dozen).
const RECORDS_MAX: usize = 64;
/// The largest RTP header [`SrtpEgress::write`] builds (12 bytes, 15 CSRCs,
/// extensions).
pub const HEADER_BYTES_MAX: usize = 256;

const LABEL_SRTP_ENCRYPTION: u8 = 0x00;
const LABEL_SRTP_AUTHENTICATION: u8 = 0x01;
const LABEL_SRTP_SALT: u8 = 0x02;

/// The SRTP protection profile of a leg's outgoing media (the ones a node
/// offers, `peer::build`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    AeadAes128Gcm,
    AeadAes256Gcm,
    Aes128CmHmacSha1_80,
}

impl Profile {
    fn salt_len(self) -> usize {
        match self {
            Self::AeadAes128Gcm | Self::AeadAes256Gcm => 12,
            Self::Aes128CmHmacSha1_80 => 14,
        }
    }

    /// Bytes the protection adds to a packet.
    pub fn overhead(self) -> usize {
        match self {
            Self::AeadAes128Gcm | Self::AeadAes256Gcm => 16,
            Self::Aes128CmHmacSha1_80 => 10,
        }
    }

    /// The profile's name in RFC 5764 / RFC 7714.
    pub fn name(self) -> &'static str {
        match self {
            Self::AeadAes128Gcm => "SRTP_AEAD_AES_128_GCM",
            Self::AeadAes256Gcm => "SRTP_AEAD_AES_256_GCM",
            Self::Aes128CmHmacSha1_80 => "SRTP_AES128_CM_HMAC_SHA1_80",
        }
    }
}

/// Why Arc's egress could not be used or a packet not protected.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    /// The connection's SRTP key derivation was not seen.
    #[error("the SRTP key derivation of this connection was not seen")]
    NotSeen,
    /// What was seen did not give the key the connection's own context uses.
    #[error("the captured SRTP keys did not verify against the connection's context")]
    Unverified,
    /// The crypto provider refused.
    #[error("SRTP: {0}")]
    Crypto(#[from] CryptoError),
    /// The packet could not be written.
    #[error("RTP packet: {0}")]
    Packet(String),
}

/// One stream's SRTP rollover counter, kept as a sender keeps it (RFC 3711
/// §3.3.1): a sequence number that wraps past the highest sent starts the
/// next roll; an older one (a retransmission) is sent under the roll it
/// first went out in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rollover {
    highest: u16,
    roc: u32,
    started: bool,
}

impl Rollover {
    /// The rollover counter to protect `seq` with (and notes it as sent).
    pub fn roc_for(&mut self, seq: u16) -> u32 {
        if !self.started {
            self.started = true;
            self.highest = seq;
            return self.roc;
        }
        let ahead = seq.wrapping_sub(self.highest) as i16;
        if ahead > 0 {
            if seq < self.highest {
                self.roc = self.roc.wrapping_add(1);
            }
            self.highest = seq;
            self.roc
        } else if seq > self.highest && self.roc > 0 {
            // Behind the highest, yet numerically above it: from the roll before.
            self.roc - 1
        } else {
            self.roc
        }
    }
}

enum Cipher {
    Gcm(Box<dyn AeadCipher>),
    Cm { stream: Box<dyn StreamCipher>, mac: Box<dyn Mac> },
}

/// A leg's outgoing SRTP: its session keys and ciphers (see the module docs).
pub struct SrtpEgress {
    profile: Profile,
    salt: [u8; 14],
    cipher: Cipher,
}

impl std::fmt::Debug for SrtpEgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SrtpEgress").field("profile", &self.profile).finish_non_exhaustive()
    }
}

/// One block of the AES-CM key derivation (RFC 3711 §4.3.3, RFC 6188 §7.2):
/// the master salt with `label` mixed into byte 7 and the block number in
/// the last two bytes, encrypted under the master key.
fn kdf_block(
    crypto: &dyn RTCCrypto,
    master_key: &[u8],
    salted: &[u8; 16],
    label: u8,
    n: u16,
) -> Result<[u8; 16], CryptoError> {
    let alg = if master_key.len() == 32 { BlockCipherAlgorithm::Aes256 } else { BlockCipherAlgorithm::Aes128 };
    let mut b = *salted;
    b[7] ^= label;
    b[14..16].copy_from_slice(&n.to_be_bytes());
    crypto.block_encrypt(alg, master_key, &mut b)?;
    Ok(b)
}

fn kdf(
    crypto: &dyn RTCCrypto,
    master_key: &[u8],
    salted: &[u8; 16],
    label: u8,
    out: &mut [u8],
) -> Result<(), CryptoError> {
    for (n, chunk) in out.chunks_mut(16).enumerate() {
        let b = kdf_block(crypto, master_key, salted, label, n as u16)?;
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
    Ok(())
}

fn salted(master_salt: &[u8]) -> [u8; 16] {
    let mut s = [0u8; 16];
    let n = master_salt.len().min(14);
    s[..n].copy_from_slice(&master_salt[..n]);
    s
}

impl SrtpEgress {
    /// Keys for `profile` from a master key and salt (16/12, 32/12 or 16/14 bytes).
    pub fn from_master(
        crypto: &dyn RTCCrypto,
        profile: Profile,
        master_key: &[u8],
        master_salt: &[u8],
    ) -> Result<Self, EgressError> {
        let key_len = match profile {
            Profile::AeadAes256Gcm => 32,
            _ => 16,
        };
        if master_key.len() != key_len || master_salt.len() != profile.salt_len() {
            return Err(EgressError::Crypto(CryptoError::InvalidKeyLength {
                expected: key_len,
                actual: master_key.len(),
            }));
        }
        let s = salted(master_salt);
        let mut session_key = [0u8; 32];
        kdf(crypto, master_key, &s, LABEL_SRTP_ENCRYPTION, &mut session_key[..key_len])?;
        let mut salt = [0u8; 14];
        kdf(crypto, master_key, &s, LABEL_SRTP_SALT, &mut salt[..profile.salt_len()])?;
        let cipher = match profile {
            Profile::AeadAes128Gcm => Cipher::Gcm(crypto.new_aead(AeadAlgorithm::Aes128Gcm, &session_key[..16])?),
            Profile::AeadAes256Gcm => Cipher::Gcm(crypto.new_aead(AeadAlgorithm::Aes256Gcm, &session_key)?),
            Profile::Aes128CmHmacSha1_80 => {
                let mut auth = [0u8; 20];
                kdf(crypto, master_key, &s, LABEL_SRTP_AUTHENTICATION, &mut auth)?;
                let stream = crypto.new_stream_cipher(StreamCipherAlgorithm::Aes128Ctr, &session_key[..16])?;
                let mac = crypto.new_hmac(HmacAlgorithm::Sha1, &auth)?;
                auth.fill(0);
                Cipher::Cm { stream, mac }
            }
        };
        session_key.fill(0);
        Ok(Self { profile, salt, cipher })
    }

    /// The negotiated profile.
    pub fn profile(&self) -> Profile {
        self.profile
    }

    /// Writes `header` and `payload` at the end of `buf` and protects them
    /// in place. On error `buf` is as it was.
    pub fn write(
        &mut self,
        roll: &mut Rollover,
        header: &rtc::rtp::Header,
        payload: &[u8],
        buf: &mut BytesMut,
    ) -> Result<(), EgressError> {
        self.write_with_twcc(roll, header, None, payload, buf).map(|_| ())
    }

    /// [`Self::write`], with a transport-wide sequence number `(extension
    /// id, number)` added to the header's extensions (one-byte form, RFC
    /// 8285), written in the buffer (no allocation). Returns whether the
    /// number went in: not when the header uses the two-byte form or the id
    /// is not a one-byte one (1–14).
    pub fn write_with_twcc(
        &mut self,
        roll: &mut Rollover,
        header: &rtc::rtp::Header,
        twcc: Option<(u8, u16)>,
        payload: &[u8],
        buf: &mut BytesMut,
    ) -> Result<bool, EgressError> {
        self.write_forwarded(roll, header, twcc, payload, &Wire::default(), buf)
    }

    /// [`Self::write_with_twcc`] for a forwarded packet, with what its
    /// [`Wire`] adds: the audio level, as a one-byte extension before the
    /// transport-wide number, and the payload's patch (a forwarded VP8
    /// payload's renumbered ids), applied once the payload is in the buffer
    /// — copied once, here, as every payload is.
    pub fn write_forwarded(
        &mut self,
        roll: &mut Rollover,
        header: &rtc::rtp::Header,
        twcc: Option<(u8, u16)>,
        payload: &[u8],
        wire: &Wire,
        buf: &mut BytesMut,
    ) -> Result<bool, EgressError> {
        use rtc::shared::marshal::{Marshal, MarshalSize};
        let start = buf.len();
        let header_len = header.marshal_size();
        if header_len > HEADER_BYTES_MAX {
            return Err(EgressError::Packet(format!("a header of {header_len} bytes")));
        }
        buf.reserve(header_len + 8 + payload.len() + self.profile.overhead());
        buf.resize(start + header_len, 0);
        if let Err(e) = header.marshal_to(&mut buf[start..]) {
            buf.truncate(start);
            return Err(EgressError::Packet(e.to_string()));
        }
        let level = wire.audio_level.map(|(id, l)| (id, [l]));
        let number = twcc.map(|(id, seq)| (id, seq.to_be_bytes()));
        let mut elements: [(u8, &[u8]); 2] = [(0, &[]); 2];
        let mut n = 0;
        if let Some((id, l)) = &level {
            elements[n] = (*id, l);
            n += 1;
        }
        if let Some((id, s)) = &number {
            elements[n] = (*id, s);
            n += 1;
        }
        let written = n > 0 && append_one_byte_extensions(buf, start, header, &elements[..n]);
        let tagged = written && number.is_some_and(|(id, _)| one_byte_id(id));
        let header_len = buf.len() - start;
        buf.extend_from_slice(payload);
        if let Some(p) = &wire.patch {
            p.apply(&mut buf[start + header_len..]);
        }
        let seq = header.sequence_number;
        let roc = roll.roc_for(seq);
        let result = self.seal(roc, header.ssrc, seq, buf, start, start + header_len);
        if result.is_err() {
            buf.truncate(start);
        }
        result.map(|()| tagged)
    }

    /// Protects the packet at `buf[start..]` (header up to `payload_at`).
    fn seal(
        &mut self,
        roc: u32,
        ssrc: u32,
        seq: u16,
        buf: &mut BytesMut,
        start: usize,
        payload_at: usize,
    ) -> Result<(), EgressError> {
        match &mut self.cipher {
            Cipher::Gcm(aead) => {
                // RFC 7714 §8.1: 00 00 || SSRC || ROC || SEQ, xor the salt.
                let mut nonce = [0u8; 12];
                nonce[2..6].copy_from_slice(&ssrc.to_be_bytes());
                nonce[6..10].copy_from_slice(&roc.to_be_bytes());
                nonce[10..12].copy_from_slice(&seq.to_be_bytes());
                for (n, s) in nonce.iter_mut().zip(&self.salt) {
                    *n ^= s;
                }
                let mut tag = [0u8; 16];
                let (aad, body) = buf[start..].split_at_mut(payload_at - start);
                aead.seal_in_place(&nonce, aad, body, &mut tag)?;
                buf.extend_from_slice(&tag);
            }
            Cipher::Cm { stream, mac } => {
                // RFC 3711 §4.1.1: salt·2^16 xor SSRC·2^64 xor index·2^16.
                let mut iv = [0u8; 16];
                iv[4..8].copy_from_slice(&ssrc.to_be_bytes());
                iv[8..12].copy_from_slice(&roc.to_be_bytes());
                iv[12..14].copy_from_slice(&seq.to_be_bytes());
                for (v, s) in iv.iter_mut().zip(&self.salt) {
                    *v ^= s;
                }
                stream.apply_keystream(&iv, &mut buf[payload_at..])?;
                let mut tag = [0u8; 20];
                mac.sign(&[&buf[start..], &roc.to_be_bytes()], &mut tag)?;
                buf.extend_from_slice(&tag[..10]);
            }
        }
        Ok(())
    }
}

/// Whether `id` fits the one-byte extension form (RFC 8285: 1–14).
fn one_byte_id(id: u8) -> bool {
    (1..=14).contains(&id)
}

/// Appends one-byte-form extension elements (RFC 8285) to the header
/// `header` that was just written at `buf[start..]`: a new block when it
/// has none, else after its block's last element (its padding goes, and
/// the block is padded again). Elements whose id is not a one-byte one, or
/// whose data is empty or longer than 16 bytes, are left out. Returns
/// whether the others went in: not when the header's block is another form
/// (two-byte), then nothing changes.
fn append_one_byte_extensions(
    buf: &mut BytesMut,
    start: usize,
    header: &rtc::rtp::Header,
    elements: &[(u8, &[u8])],
) -> bool {
    const ONE_BYTE_PROFILE: u16 = 0xBEDE;
    let valid = |(id, data): &&(u8, &[u8])| one_byte_id(*id) && !data.is_empty() && data.len() <= 16;
    if !elements.iter().any(|e| valid(&e)) {
        return false;
    }
    let fixed = start + 12 + 4 * header.csrc.len();
    let used = if !header.extension {
        buf[start] |= 0x10;
        buf.extend_from_slice(&ONE_BYTE_PROFILE.to_be_bytes());
        buf.extend_from_slice(&[0, 0]);
        fixed + 4
    } else {
        if header.extension_profile != ONE_BYTE_PROFILE || buf.len() < fixed + 4 {
            return false;
        }
        let used = fixed + 4 + header.get_extension_payload_len();
        if used > buf.len() {
            return false;
        }
        used
    };
    buf.truncate(used);
    for (id, data) in elements.iter().filter(valid) {
        buf.extend_from_slice(&[(id << 4) | (data.len() as u8 - 1)]);
        buf.extend_from_slice(data);
    }
    let words = (buf.len() - fixed - 4).div_ceil(4);
    buf.resize(fixed + 4 + 4 * words, 0);
    buf[fixed + 2..fixed + 4].copy_from_slice(&(words as u16).to_be_bytes());
    true
}

enum Seen {
    /// An AES block encrypted under a 16- or 32-byte key.
    Block {
        key: Vec<u8>,
        input: [u8; 16],
    },
    /// A session key handed to a cipher.
    Aead {
        alg: AeadAlgorithm,
        key: Vec<u8>,
    },
    Stream {
        alg: StreamCipherAlgorithm,
        key: Vec<u8>,
    },
}

impl Drop for Seen {
    fn drop(&mut self) {
        match self {
            Self::Block { key, input } => {
                key.fill(0);
                input.fill(0);
            }
            Self::Aead { key, .. } | Self::Stream { key, .. } => key.fill(0),
        }
    }
}

/// A leg's crypto provider: the real one, plus a note of the SRTP key
/// derivation (see the module docs). Its packet path is the real
/// provider's: the ciphers it returns are the real ones.
pub struct KeyCapture {
    inner: Arc<dyn RTCCryptoProvider>,
    seen: Mutex<Vec<Seen>>,
}

impl std::fmt::Debug for KeyCapture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyCapture").field("provider", &self.inner.name()).finish_non_exhaustive()
    }
}

impl KeyCapture {
    /// A capture in front of `inner`.
    pub fn new(inner: Arc<dyn RTCCryptoProvider>) -> Arc<Self> {
        Arc::new(Self { inner, seen: Mutex::new(Vec::new()) })
    }

    fn note(&self, s: Seen) {
        if let Ok(mut seen) = self.seen.lock()
            && seen.len() < RECORDS_MAX
        {
            seen.push(s);
        }
    }

    /// Our sending keys, derived from what was seen and verified; forgets
    /// what was seen. Call once the connection's DTLS handshake completed.
    pub fn egress(&self) -> Result<SrtpEgress, EgressError> {
        let seen = match self.seen.lock() {
            Ok(mut s) => std::mem::take(&mut *s),
            Err(_) => return Err(EgressError::NotSeen),
        };
        let crypto = self.inner.crypto();
        // The first key derivation is the local context's; its first block is
        // the SRTP encryption key's (label 0, block 0): the master salt itself.
        let Some((master_key, input)) = seen.iter().find_map(|s| match s {
            Seen::Block { key, input } => Some((key.as_slice(), *input)),
            _ => None,
        }) else {
            return Err(EgressError::NotSeen);
        };
        // Its session key's first block; the real context was given that key.
        let mut first = kdf_block(crypto, master_key, &input, LABEL_SRTP_ENCRYPTION, 0)?;
        let profile = seen.iter().find_map(|s| match s {
            Seen::Aead { alg: AeadAlgorithm::Aes128Gcm, key } if master_key.len() == 16 && key[..] == first[..] => {
                Some(Profile::AeadAes128Gcm)
            }
            Seen::Aead { alg: AeadAlgorithm::Aes256Gcm, key }
                if master_key.len() == 32 && key.len() == 32 && key[..16] == first[..] =>
            {
                Some(Profile::AeadAes256Gcm)
            }
            Seen::Stream { alg: StreamCipherAlgorithm::Aes128Ctr, key }
                if master_key.len() == 16 && key[..] == first[..] =>
            {
                Some(Profile::Aes128CmHmacSha1_80)
            }
            _ => None,
        });
        first.fill(0);
        let Some(profile) = profile else { return Err(EgressError::Unverified) };
        let salt_len = profile.salt_len();
        if input[salt_len..].iter().any(|b| *b != 0) {
            return Err(EgressError::Unverified);
        }
        let egress = SrtpEgress::from_master(crypto, profile, master_key, &input[..salt_len]);
        drop(seen);
        egress
    }
}

impl RTCCryptoProvider for KeyCapture {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn crypto(&self) -> &dyn RTCCrypto {
        self
    }
    fn random(&self) -> &dyn RTCRandom {
        self.inner.random()
    }
}

impl RTCCrypto for KeyCapture {
    fn supports(&self, algorithm: CryptoAlgorithm) -> bool {
        self.inner.crypto().supports(algorithm)
    }
    fn hash(&self, algorithm: HashAlgorithm, data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.inner.crypto().hash(algorithm, data)
    }
    fn block_encrypt(&self, algorithm: BlockCipherAlgorithm, key: &[u8], block: &mut [u8]) -> Result<(), CryptoError> {
        if let Ok(input) = <[u8; 16]>::try_from(&*block)
            && matches!(key.len(), 16 | 32)
        {
            self.note(Seen::Block { key: key.to_vec(), input });
        }
        self.inner.crypto().block_encrypt(algorithm, key, block)
    }
    fn new_hmac(&self, algorithm: HmacAlgorithm, key: &[u8]) -> Result<Box<dyn Mac>, CryptoError> {
        self.inner.crypto().new_hmac(algorithm, key)
    }
    fn new_stream_cipher(
        &self,
        algorithm: StreamCipherAlgorithm,
        key: &[u8],
    ) -> Result<Box<dyn StreamCipher>, CryptoError> {
        self.note(Seen::Stream { alg: algorithm, key: key.to_vec() });
        self.inner.crypto().new_stream_cipher(algorithm, key)
    }
    fn new_aead(&self, algorithm: AeadAlgorithm, key: &[u8]) -> Result<Box<dyn AeadCipher>, CryptoError> {
        if matches!(algorithm, AeadAlgorithm::Aes128Gcm | AeadAlgorithm::Aes256Gcm) {
            self.note(Seen::Aead { alg: algorithm, key: key.to_vec() });
        }
        self.inner.crypto().new_aead(algorithm, key)
    }
    fn new_cbc(&self, algorithm: CbcAlgorithm, key: &[u8]) -> Result<Box<dyn CbcCipher>, CryptoError> {
        self.inner.crypto().new_cbc(algorithm, key)
    }
    fn start_key_exchange(&self, algorithm: KeyExchangeAlgorithm) -> Result<Box<dyn ActiveKeyExchange>, CryptoError> {
        self.inner.crypto().start_key_exchange(algorithm)
    }
    fn generate_signing_key(&self, scheme: SignatureScheme) -> Result<Arc<dyn SigningKey>, CryptoError> {
        self.inner.crypto().generate_signing_key(scheme)
    }
    fn import_signing_key(
        &self,
        scheme: SignatureScheme,
        pkcs8_der: &[u8],
    ) -> Result<Arc<dyn SigningKey>, CryptoError> {
        self.inner.crypto().import_signing_key(scheme, pkcs8_der)
    }
    fn verify_signature(
        &self,
        scheme: SignatureScheme,
        public_key: PublicKey<'_>,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), CryptoError> {
        self.inner.crypto().verify_signature(scheme, public_key, message, signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::srtp::context::Context;
    use rtc::srtp::protection_profile::ProtectionProfile;

    const PROFILES: [(Profile, ProtectionProfile, usize); 3] = [
        (Profile::AeadAes128Gcm, ProtectionProfile::AeadAes128Gcm, 16),
        (Profile::AeadAes256Gcm, ProtectionProfile::AeadAes256Gcm, 32),
        (Profile::Aes128CmHmacSha1_80, ProtectionProfile::Aes128CmHmacSha1_80, 16),
    ];

    fn provider() -> Arc<dyn RTCCryptoProvider> {
        rtc::crypto::default_provider().expect("ring provider")
    }

    fn header(seq: u16, ssrc: u32) -> rtc::rtp::Header {
        let mut h = rtc::rtp::Header {
            version: 2,
            payload_type: 96,
            sequence_number: seq,
            timestamp: 90_000u32.wrapping_mul(u32::from(seq)),
            ssrc,
            marker: seq.is_multiple_of(3),
            ..Default::default()
        };
        if seq.is_multiple_of(2) {
            h.set_extension(1, bytes::Bytes::from_static(&[0x7f])).expect("extension");
        }
        h
    }

    fn keys(key_len: usize, salt_len: usize, seed: u8) -> (Vec<u8>, Vec<u8>) {
        let key = (0..key_len).map(|i| seed.wrapping_mul(31).wrapping_add(i as u8)).collect();
        let salt = (0..salt_len).map(|i| seed.wrapping_mul(7).wrapping_add(3 * i as u8)).collect();
        (key, salt)
    }

    /// Protects `seqs` in order and has `rtc`'s own SRTP context open them.
    fn round_trip(egress: &mut SrtpEgress, reference: &mut Context, seqs: &[u16]) {
        let mut roll = Rollover::default();
        let mut buf = BytesMut::new();
        for &seq in seqs {
            let payload: Vec<u8> = (0..1100u32).map(|i| (i as u8) ^ (seq as u8)).collect();
            let h = header(seq, 0x1234_5678);
            egress.write(&mut roll, &h, &payload, &mut buf).expect("protect");
            let wire = buf.split();
            let plain = reference.decrypt_rtp(&wire).expect("rtc opens what Arc protected");
            let (got_h, got_p) = split_packet(&plain);
            assert_eq!(got_h.sequence_number, seq);
            assert_eq!(got_p, &payload[..], "payload of seq {seq}");
        }
    }

    /// An RTP packet's header and payload.
    fn split_packet(b: &[u8]) -> (rtc::rtp::Header, &[u8]) {
        use rtc::shared::marshal::{MarshalSize, Unmarshal};
        let mut r = b;
        let h = rtc::rtp::Header::unmarshal(&mut r).expect("header");
        let n = h.marshal_size();
        (h, &b[n..])
    }

    #[test]
    fn every_profile_is_opened_by_rtc_across_a_rollover_and_a_retransmission() {
        let p = provider();
        for (profile, reference_profile, key_len) in PROFILES {
            let (key, salt) = keys(key_len, profile.salt_len(), 9);
            let mut egress = SrtpEgress::from_master(p.crypto(), profile, &key, &salt).expect("keys");
            let mut reference = Context::new(&key, &salt, reference_profile, None, None, p.crypto()).expect("ctx");
            // 65535 → 0 rolls over; 65534 after that is a retransmission from the roll before.
            round_trip(&mut egress, &mut reference, &[65_530, 65_531, 65_535, 0, 1, 65_534, 2, 3]);
        }
    }

    #[test]
    fn a_transport_wide_number_joins_the_header_with_or_without_other_extensions() {
        let p = provider();
        let (profile, reference_profile, key_len) = PROFILES[0];
        let (key, salt) = keys(key_len, profile.salt_len(), 5);
        let mut egress = SrtpEgress::from_master(p.crypto(), profile, &key, &salt).expect("keys");
        let mut reference = Context::new(&key, &salt, reference_profile, None, None, p.crypto()).expect("ctx");
        let mut roll = Rollover::default();
        let mut buf = BytesMut::new();
        let payload = [7u8; 300];
        // seq 10: an audio level (id 1) already; 11: no extension; 12 with CSRCs.
        for seq in [10u16, 11, 12] {
            let mut h = header(seq, 0x0bad_cafe);
            if seq == 12 {
                h.csrc = vec![1, 2];
            }
            let tagged =
                egress.write_with_twcc(&mut roll, &h, Some((3, 60_000 + seq)), &payload, &mut buf).expect("protect");
            assert!(tagged);
            let wire = buf.split();
            let plain = reference.decrypt_rtp(&wire).expect("rtc opens it");
            let (got, body) = split_packet(&plain);
            assert_eq!(body, &payload[..], "payload intact (seq {seq})");
            assert_eq!(got.get_extension(3).as_deref(), Some(&(60_000 + seq).to_be_bytes()[..]));
            assert_eq!(got.get_extension(1).as_deref(), h.get_extension(1).as_deref(), "the level kept");
            assert_eq!(got.csrc, h.csrc);
            assert_eq!((got.sequence_number, got.timestamp, got.marker), (seq, h.timestamp, h.marker));
        }
        // Ids a one-byte block cannot carry, and a two-byte block: untagged, still sent.
        for (seq, id, two_byte) in [(21u16, 0u8, false), (23, 15, false), (25, 3, true)] {
            let mut h = header(seq, 0x0bad_cafe);
            if two_byte {
                h.extension = true;
                h.extension_profile = 0x1000;
                h.extensions =
                    vec![rtc::rtp::header::Extension { id: 20, payload: bytes::Bytes::from_static(&[1, 2]) }];
            }
            let tagged = egress.write_with_twcc(&mut roll, &h, Some((id, 1)), &payload, &mut buf).expect("protect");
            assert!(!tagged);
            let wire = buf.split();
            let plain = reference.decrypt_rtp(&wire).expect("rtc opens it");
            assert_eq!(split_packet(&plain).1, &payload[..]);
        }
    }

    #[test]
    fn a_patch_renumbers_the_payload_in_the_buffer_and_leaves_the_source_as_it_came() {
        let p = provider();
        let (profile, reference_profile, key_len) = PROFILES[0];
        let (key, salt) = keys(key_len, profile.salt_len(), 6);
        let mut egress = SrtpEgress::from_master(p.crypto(), profile, &key, &salt).expect("keys");
        let mut reference = Context::new(&key, &salt, reference_profile, None, None, p.crypto()).expect("ctx");
        // VP8: X, S; I and L; a 15-bit picture ID 0x0123; TL0PICIDX 7; a frame.
        let payload = [0x90u8, 0xc0, 0x81, 0x23, 7, 0x10, 0x02, 0x9d];
        let ids = crate::forward::codec::vp8_ids(&payload).expect("ids");
        let patch = crate::forward::vp8_patch(&ids, Some(0x7001), Some(200)).expect("new ids");
        let mut buf = BytesMut::new();
        let mut roll = Rollover::default();
        let h = header(11, 0x0bad_cafe);
        let wire = Wire { patch: Some(patch), audio_level: None };
        let tagged = egress.write_forwarded(&mut roll, &h, Some((3, 9)), &payload, &wire, &mut buf).expect("protect");
        assert!(tagged);
        let plain = reference.decrypt_rtp(&buf.split()).expect("rtc opens it");
        let (got_h, body) = split_packet(&plain);
        assert_eq!(got_h.get_extension(3).as_deref(), Some(&9u16.to_be_bytes()[..]));
        let got = crate::forward::codec::vp8_ids(body).expect("ids");
        assert_eq!((got.picture_id.map(|p| p.0), got.tl0.map(|t| t.0)), (Some(0x7001), Some(200)));
        assert_eq!(&body[5..], &payload[5..], "the frame itself untouched");
        assert_eq!(payload[2..5], [0x81, 0x23, 7], "the source payload as it came");
    }

    #[test]
    fn an_audio_level_goes_in_the_buffer_before_the_transport_wide_number() {
        let p = provider();
        let (profile, reference_profile, key_len) = PROFILES[0];
        let (key, salt) = keys(key_len, profile.salt_len(), 8);
        let mut egress = SrtpEgress::from_master(p.crypto(), profile, &key, &salt).expect("keys");
        let mut reference = Context::new(&key, &salt, reference_profile, None, None, p.crypto()).expect("ctx");
        let mut roll = Rollover::default();
        let mut buf = BytesMut::new();
        let payload = [0xfcu8, 1, 2, 3];
        let wire = Wire { patch: None, audio_level: Some((2, 33)) };
        // Odd sequence numbers: a header without extensions of its own; with and without a number.
        for (seq, twcc, csrc) in [(11u16, Some((5, 700u16)), vec![]), (13, None, vec![7]), (15, Some((0, 1)), vec![])] {
            let mut h = header(seq, 0x0a0a_0a0a);
            h.csrc = csrc;
            let tagged = egress.write_forwarded(&mut roll, &h, twcc, &payload, &wire, &mut buf).expect("protect");
            assert_eq!(tagged, twcc.is_some_and(|(id, _)| id == 5), "seq {seq}");
            let plain = reference.decrypt_rtp(&buf.split()).expect("rtc opens it");
            let (got, body) = split_packet(&plain);
            assert_eq!(body, &payload[..]);
            assert_eq!(got.get_extension(2).as_deref(), Some(&[33u8][..]), "seq {seq}");
            assert_eq!(
                got.get_extension(5).map(|b| b.to_vec()),
                twcc.filter(|(id, _)| *id == 5).map(|(_, n)| n.to_be_bytes().to_vec())
            );
            assert_eq!(got.csrc, h.csrc);
        }
    }

    #[test]
    fn the_rollover_counter_follows_a_sender() {
        let mut r = Rollover::default();
        assert_eq!(r.roc_for(65_000), 0);
        assert_eq!(r.roc_for(65_535), 0);
        assert_eq!(r.roc_for(3), 1, "wrapped");
        assert_eq!(r.roc_for(65_534), 0, "a retransmission from before the wrap");
        assert_eq!(r.roc_for(2), 1, "a retransmission after it");
        assert_eq!(r.roc_for(20_000), 1);
        assert_eq!(r.roc_for(40_000), 1);
        assert_eq!(r.roc_for(60_000), 1);
        assert_eq!(r.roc_for(5), 2);
        let mut fresh = Rollover::default();
        assert_eq!(fresh.roc_for(10), 0);
        assert_eq!(fresh.roc_for(65_000), 0, "no roll before the first");
    }

    #[test]
    fn captured_keys_are_the_local_contexts_and_verified() {
        for (profile, reference_profile, key_len) in PROFILES {
            let capture = KeyCapture::new(provider());
            let (local_key, local_salt) = keys(key_len, profile.salt_len(), 1);
            let (remote_key, remote_salt) = keys(key_len, profile.salt_len(), 2);
            // What rtc's DTLS handler does on handshake completion: the local
            // context, then the remote one, through the connection's provider.
            let _local =
                Context::new(&local_key, &local_salt, reference_profile, None, None, capture.crypto()).expect("local");
            let _remote = Context::new(&remote_key, &remote_salt, reference_profile, None, None, capture.crypto())
                .expect("remote");
            let mut egress = capture.egress().expect("captured");
            assert_eq!(egress.profile(), profile);
            let p = provider();
            let mut reference =
                Context::new(&local_key, &local_salt, reference_profile, None, None, p.crypto()).expect("ctx");
            round_trip(&mut egress, &mut reference, &[100, 101, 102]);
            assert!(matches!(capture.egress(), Err(EgressError::NotSeen)), "what was seen is forgotten");
        }
    }

    #[test]
    fn a_capture_that_does_not_verify_is_refused() {
        let capture = KeyCapture::new(provider());
        assert!(matches!(capture.egress(), Err(EgressError::NotSeen)));
        // A block under some key, and no cipher keyed from it.
        let mut block = [7u8; 16];
        capture.crypto().block_encrypt(BlockCipherAlgorithm::Aes128, &[1u8; 16], &mut block).expect("aes");
        let _ = capture.crypto().new_aead(AeadAlgorithm::Aes128Gcm, &[2u8; 16]).expect("aead");
        assert!(matches!(capture.egress(), Err(EgressError::Unverified)));
    }
}
