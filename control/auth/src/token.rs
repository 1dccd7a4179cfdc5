//! Access tokens: JWT (RFC 7519) with HS256 only, signed with the app secret.
//!
//! Verification pins the algorithm: the header's `alg` must be exactly
//! `HS256` (`none`, `HS512`, `RS256`, … are refused before anything else is
//! looked at), the signature is checked before any claim, and times allow a
//! configurable leeway. JWT encoding is a few lines of base64url and JSON;
//! the cryptography is RustCrypto's HMAC-SHA256, compared in constant time.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use thiserror::Error;

use crate::secret::AppSecret;

/// Lifetime of a minted token when the request names none (6 h).
pub const DEFAULT_TTL_S: u32 = 6 * 3600;
/// Longest room name, in bytes.
pub const ROOM_LEN_MAX: usize = 256;
/// Longest display name, in bytes.
pub const NAME_LEN_MAX: usize = 256;
/// Largest metadata, in bytes.
pub const METADATA_LEN_MAX: usize = 16 * 1024;

/// What the token's holder may do in its room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct Grants {
    /// Enter the room.
    #[serde(default)]
    pub join: bool,
    /// Send media.
    #[serde(default)]
    pub publish: bool,
    /// Receive media.
    #[serde(default)]
    pub subscribe: bool,
    /// Send data messages.
    #[serde(default)]
    pub publish_data: bool,
    /// Moderate the room: kick, mute, change permissions and metadata.
    #[serde(default)]
    pub admin: bool,
    /// Start and stop recordings.
    #[serde(default)]
    pub record: bool,
}

impl Grants {
    /// What a token grants when its minter names nothing.
    pub const fn participant() -> Self {
        Self { join: true, publish: true, subscribe: true, publish_data: true, admin: false, record: false }
    }
}

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The app key.
    pub iss: String,
    /// The participant identity.
    pub sub: String,
    pub exp: i64,
    pub nbf: i64,
    pub iat: i64,
    /// Unique token id (`tk_` + UUIDv7).
    pub jti: String,
    /// The room name.
    pub room: String,
    #[serde(default)]
    pub grants: Grants,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<String>,
}

/// What an app server asks for when minting.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
pub struct MintRequest {
    /// Participant identity, `[A-Za-z0-9_-]{1,64}`.
    pub identity: String,
    /// Room name, 1..=256 bytes.
    pub room: String,
    /// Defaults to join + publish + subscribe + publish_data.
    #[serde(default)]
    pub grants: Option<Grants>,
    /// Lifetime in seconds; defaults to 6 h, at most the server's limit.
    #[serde(default)]
    pub ttl_s: Option<u32>,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Free-form metadata.
    #[serde(default)]
    pub metadata: Option<String>,
    /// Seconds before the token becomes valid (default 0).
    #[serde(default)]
    pub not_before_s: Option<u32>,
}

/// Limits applied when minting and verifying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenPolicy {
    pub max_ttl_s: u32,
    pub leeway_s: u32,
    pub max_token_bytes: usize,
}

impl Default for TokenPolicy {
    fn default() -> Self {
        Self { max_ttl_s: 86_400, leeway_s: 30, max_token_bytes: 8192 }
    }
}

/// Why a token was refused or could not be minted.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TokenError {
    #[error("malformed token: {0}")]
    Malformed(String),
    #[error("token is {len} bytes; at most {max} are accepted")]
    TooLarge { len: usize, max: usize },
    #[error("token algorithm {0:?} is not allowed; only HS256 is")]
    AlgorithmNotAllowed(String),
    #[error("token signature does not verify")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet")]
    NotYetValid,
    #[error("token lifetime {ttl_s} s exceeds the limit of {max_s} s")]
    TtlTooLong { ttl_s: i64, max_s: i64 },
    #[error("token lacks the {0:?} claim")]
    MissingClaim(&'static str),
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

impl TokenError {
    /// Stable code for API error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "token_malformed",
            Self::TooLarge { .. } => "token_too_large",
            Self::AlgorithmNotAllowed(_) => "token_algorithm_not_allowed",
            Self::BadSignature => "token_bad_signature",
            Self::Expired => "token_expired",
            Self::NotYetValid => "token_not_yet_valid",
            Self::TtlTooLong { .. } => "token_ttl_too_long",
            Self::MissingClaim(_) => "token_missing_claim",
            Self::Invalid { .. } => "invalid_argument",
        }
    }
}

const HEADER_B64: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9"; // {"alg":"HS256","typ":"JWT"}

fn hmac(secret: &AppSecret, signing_input: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable!());
    mac.update(signing_input);
    mac.finalize().into_bytes().into()
}

fn is_identity(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn check_room(room: &str) -> Result<(), String> {
    if room.is_empty() || room.len() > ROOM_LEN_MAX {
        return Err(format!("must be 1..={ROOM_LEN_MAX} bytes"));
    }
    if room.chars().any(char::is_control) {
        return Err("contains control characters".into());
    }
    Ok(())
}

/// Mints a token for `req`, signed with `secret`, issued at `now`.
pub fn mint(
    app_key: &str,
    secret: &AppSecret,
    req: &MintRequest,
    policy: &TokenPolicy,
    now: DateTime<Utc>,
) -> Result<(String, Claims), TokenError> {
    let invalid = |field: &'static str, reason: String| TokenError::Invalid { field, reason };
    if !is_identity(&req.identity) {
        return Err(invalid("identity", "must match [A-Za-z0-9_-]{1,64}".into()));
    }
    check_room(&req.room).map_err(|r| invalid("room", r))?;
    if req.name.as_ref().is_some_and(|n| n.len() > NAME_LEN_MAX) {
        return Err(invalid("name", format!("must be at most {NAME_LEN_MAX} bytes")));
    }
    if req.metadata.as_ref().is_some_and(|m| m.len() > METADATA_LEN_MAX) {
        return Err(invalid("metadata", format!("must be at most {METADATA_LEN_MAX} bytes")));
    }
    let ttl = req.ttl_s.unwrap_or(DEFAULT_TTL_S.min(policy.max_ttl_s));
    if ttl == 0 || ttl > policy.max_ttl_s {
        return Err(invalid("ttl_s", format!("must be 1..={}", policy.max_ttl_s)));
    }
    let nbf_delay = req.not_before_s.unwrap_or(0);
    if nbf_delay >= ttl {
        return Err(invalid("not_before_s", "must be less than ttl_s".into()));
    }
    let iat = now.timestamp();
    let claims = Claims {
        iss: app_key.to_owned(),
        sub: req.identity.clone(),
        exp: iat + i64::from(ttl),
        nbf: iat + i64::from(nbf_delay),
        iat,
        jti: format!("tk_{}", uuid::Uuid::now_v7().simple()),
        room: req.room.clone(),
        grants: req.grants.unwrap_or(Grants::participant()),
        name: req.name.clone(),
        metadata: req.metadata.clone(),
    };
    let payload = serde_json::to_vec(&claims).map_err(|e| TokenError::Malformed(e.to_string()))?;
    let signing_input = format!("{HEADER_B64}.{}", URL_SAFE_NO_PAD.encode(payload));
    let signature = URL_SAFE_NO_PAD.encode(hmac(secret, signing_input.as_bytes()));
    let token = format!("{signing_input}.{signature}");
    if token.len() > policy.max_token_bytes {
        return Err(invalid("metadata", format!("the token would exceed {} bytes", policy.max_token_bytes)));
    }
    Ok((token, claims))
}

struct Parts<'a> {
    header: &'a str,
    payload: &'a str,
    signature: &'a str,
}

fn split<'a>(token: &'a str, policy: &TokenPolicy) -> Result<Parts<'a>, TokenError> {
    if token.len() > policy.max_token_bytes {
        return Err(TokenError::TooLarge { len: token.len(), max: policy.max_token_bytes });
    }
    let mut it = token.split('.');
    match (it.next(), it.next(), it.next(), it.next()) {
        (Some(header), Some(payload), Some(signature), None) if !header.is_empty() && !payload.is_empty() => {
            Ok(Parts { header, payload, signature })
        }
        _ => Err(TokenError::Malformed("expected three dot-separated base64url parts".into())),
    }
}

fn decode_json(part: &str, what: &str) -> Result<serde_json::Map<String, serde_json::Value>, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| TokenError::Malformed(format!("{what} is not base64url")))?;
    match serde_json::from_slice(&bytes) {
        Ok(serde_json::Value::Object(map)) => Ok(map),
        _ => Err(TokenError::Malformed(format!("{what} is not a JSON object"))),
    }
}

/// Reads `iss` without verifying anything, so the caller can find the app's secrets.
pub fn peek_issuer(token: &str, policy: &TokenPolicy) -> Result<String, TokenError> {
    let parts = split(token, policy)?;
    let payload = decode_json(parts.payload, "payload")?;
    match payload.get("iss") {
        Some(serde_json::Value::String(iss)) if !iss.is_empty() => Ok(iss.clone()),
        _ => Err(TokenError::MissingClaim("iss")),
    }
}

/// Verifies a token against the app's valid secrets (current first) at `now`.
pub fn verify(
    token: &str,
    secrets: &[&AppSecret],
    policy: &TokenPolicy,
    now: DateTime<Utc>,
) -> Result<Claims, TokenError> {
    let parts = split(token, policy)?;
    let header = decode_json(parts.header, "header")?;
    match header.get("alg") {
        Some(serde_json::Value::String(alg)) if alg == "HS256" => {}
        Some(serde_json::Value::String(alg)) => return Err(TokenError::AlgorithmNotAllowed(alg.clone())),
        _ => return Err(TokenError::AlgorithmNotAllowed("(missing)".into())),
    }
    if header.contains_key("crit") {
        return Err(TokenError::Malformed("critical header extensions are not supported".into()));
    }
    let signature = URL_SAFE_NO_PAD.decode(parts.signature).map_err(|_| TokenError::BadSignature)?;
    let signing_input_len = parts.header.len() + 1 + parts.payload.len();
    let signing_input = &token.as_bytes()[..signing_input_len];
    let signed = secrets.iter().any(|s| bool::from(hmac(s, signing_input).as_slice().ct_eq(&signature)));
    if !signed {
        return Err(TokenError::BadSignature);
    }
    let payload = decode_json(parts.payload, "payload")?;
    for claim in ["iss", "sub", "exp", "nbf", "iat", "jti", "room"] {
        if !payload.contains_key(claim) {
            return Err(TokenError::MissingClaim(claim));
        }
    }
    let claims: Claims = serde_json::from_value(serde_json::Value::Object(payload))
        .map_err(|e| TokenError::Malformed(format!("claims: {e}")))?;
    let now = now.timestamp();
    let leeway = i64::from(policy.leeway_s);
    let max = i64::from(policy.max_ttl_s);
    if claims.exp + leeway < now {
        return Err(TokenError::Expired);
    }
    if claims.nbf - leeway > now || claims.iat - leeway > now {
        return Err(TokenError::NotYetValid);
    }
    let ttl = claims.exp - claims.iat;
    if ttl > max || claims.exp > now + max + leeway {
        return Err(TokenError::TtlTooLong { ttl_s: ttl.max(claims.exp - now), max_s: max });
    }
    if !is_identity(&claims.sub) {
        return Err(TokenError::Malformed("sub is not a valid identity".into()));
    }
    if claims.jti.is_empty() || claims.jti.len() > 128 {
        return Err(TokenError::Malformed("jti must be 1..=128 bytes".into()));
    }
    check_room(&claims.room).map_err(|r| TokenError::Malformed(format!("room {r}")))?;
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000, 0).single().expect("valid")
    }
    fn req() -> MintRequest {
        MintRequest {
            identity: "ann".into(),
            room: "standup".into(),
            grants: None,
            ttl_s: Some(600),
            name: Some("Ann".into()),
            metadata: Some("{\"x\":1}".into()),
            not_before_s: None,
        }
    }
    fn at(offset: i64) -> DateTime<Utc> {
        now() + chrono::Duration::seconds(offset)
    }
    fn p() -> TokenPolicy {
        TokenPolicy::default()
    }
    fn b64(v: &serde_json::Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).expect("json"))
    }
    /// A correctly HS256-signed token of arbitrary header and claims.
    fn forge(secret: &AppSecret, header: &serde_json::Value, claims: &serde_json::Value) -> String {
        let input = format!("{}.{}", b64(header), b64(claims));
        let sig = URL_SAFE_NO_PAD.encode(hmac(secret, input.as_bytes()));
        format!("{input}.{sig}")
    }
    fn claims_json(secret: &AppSecret) -> serde_json::Value {
        let (token, _) = mint("app_1", secret, &req(), &p(), now()).expect("mint");
        let payload = token.split('.').nth(1).expect("payload");
        serde_json::Value::Object(decode_json(payload, "payload").expect("json"))
    }

    #[test]
    fn minted_tokens_verify_with_all_claims() {
        let s = AppSecret::generate();
        let (token, claims) = mint("app_1", &s, &req(), &p(), now()).expect("mint");
        assert_eq!(peek_issuer(&token, &p()), Ok("app_1".into()));
        let back = verify(&token, &[&s], &p(), at(10)).expect("verifies");
        assert_eq!(back, claims);
        assert_eq!(back.grants, Grants::participant());
        assert_eq!((back.exp - back.iat, back.sub.as_str(), back.room.as_str()), (600, "ann", "standup"));
        assert!(back.jti.starts_with("tk_"));
    }

    #[test]
    fn the_negative_suite_names_each_failure() {
        let s = AppSecret::generate();
        let (token, _) = mint("app_1", &s, &req(), &p(), now()).expect("mint");
        let code = |t: &str, secrets: &[&AppSecret], when: DateTime<Utc>| {
            verify(t, secrets, &p(), when).map(|_| ()).map_err(|e| e.code())
        };
        // Expired beyond the leeway; within it still fine.
        assert_eq!(code(&token, &[&s], at(600 + 31)), Err("token_expired"));
        assert_eq!(code(&token, &[&s], at(600 + 29)), Ok(()));
        // Not yet valid.
        let later = MintRequest { not_before_s: Some(120), ..req() };
        let (t, _) = mint("app_1", &s, &later, &p(), now()).expect("mint");
        assert_eq!(code(&t, &[&s], at(60)), Err("token_not_yet_valid"));
        assert_eq!(code(&t, &[&s], at(100)), Ok(()));
        // Wrong secret, also when expired (signature first).
        let other = AppSecret::generate();
        assert_eq!(code(&token, &[&other], at(10)), Err("token_bad_signature"));
        assert_eq!(code(&token, &[&other], at(10_000)), Err("token_bad_signature"));
        // Tampered payload.
        let mut c = claims_json(&s);
        c["room"] = "other".into();
        let parts: Vec<&str> = token.split('.').collect();
        let tampered = format!("{}.{}.{}", parts[0], b64(&c), parts[2]);
        assert_eq!(code(&tampered, &[&s], at(10)), Err("token_bad_signature"));
        // alg none, alg switched, RS256.
        let none = format!("{}.{}.", b64(&serde_json::json!({"alg": "none", "typ": "JWT"})), parts[1]);
        assert_eq!(code(&none, &[&s], at(10)), Err("token_algorithm_not_allowed"));
        let hs512 = {
            let h = b64(&serde_json::json!({"alg": "HS512", "typ": "JWT"}));
            let input = format!("{h}.{}", parts[1]);
            let mut mac = <Hmac<sha2::Sha512> as Mac>::new_from_slice(s.as_bytes()).expect("key");
            mac.update(input.as_bytes());
            format!("{input}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
        };
        assert_eq!(code(&hs512, &[&s], at(10)), Err("token_algorithm_not_allowed"));
        let rs = forge(&s, &serde_json::json!({"alg": "RS256"}), &claims_json(&s));
        assert_eq!(code(&rs, &[&s], at(10)), Err("token_algorithm_not_allowed"));
        let no_alg = forge(&s, &serde_json::json!({"typ": "JWT"}), &claims_json(&s));
        assert_eq!(code(&no_alg, &[&s], at(10)), Err("token_algorithm_not_allowed"));
        // TTL beyond the cap, correctly signed.
        let mut c = claims_json(&s);
        c["exp"] = (now().timestamp() + 90_000).into();
        assert_eq!(
            code(&forge(&s, &serde_json::json!({"alg": "HS256"}), &c), &[&s], at(10)),
            Err("token_ttl_too_long")
        );
        // Missing claims, correctly signed.
        for claim in ["jti", "room", "exp", "sub"] {
            let mut c = claims_json(&s);
            c.as_object_mut().expect("object").remove(claim);
            let t = forge(&s, &serde_json::json!({"alg": "HS256"}), &c);
            assert_eq!(code(&t, &[&s], at(10)), Err("token_missing_claim"), "{claim}");
        }
        // Oversized.
        let huge = format!("{}.{}.x", "a".repeat(5000), "b".repeat(5000));
        assert_eq!(code(&huge, &[&s], at(10)), Err("token_too_large"));
        assert_eq!(peek_issuer(&huge, &p()).map_err(|e| e.code()), Err("token_too_large"));
        // Garbage.
        let not_json = format!("{}.{}.x", URL_SAFE_NO_PAD.encode("nope"), URL_SAFE_NO_PAD.encode("nope"));
        for g in ["", "a.b", "....", "a.b.c.d", "%%%.%%%.%%%", "\u{0}\u{1}\u{2}", not_json.as_str()] {
            assert_eq!(code(g, &[&s], at(10)), Err("token_malformed"), "{g:?}");
            assert!(peek_issuer(g, &p()).is_err(), "{g:?}");
        }
    }

    #[test]
    fn a_rotated_out_secret_verifies_only_while_offered() {
        let old = AppSecret::generate();
        let new = AppSecret::generate();
        let (token, _) = mint("app_1", &old, &req(), &p(), now()).expect("mint");
        assert!(verify(&token, &[&new, &old], &p(), at(10)).is_ok());
        assert_eq!(verify(&token, &[&new], &p(), at(10)).map_err(|e| e.code()), Err("token_bad_signature"));
    }

    #[test]
    fn minting_validates_its_input() {
        let s = AppSecret::generate();
        let bad = |r: MintRequest| mint("app_1", &s, &r, &p(), now()).map(|_| ()).map_err(|e| e.code());
        assert_eq!(bad(MintRequest { identity: "a b".into(), ..req() }), Err("invalid_argument"));
        assert_eq!(bad(MintRequest { room: String::new(), ..req() }), Err("invalid_argument"));
        assert_eq!(bad(MintRequest { ttl_s: Some(90_000), ..req() }), Err("invalid_argument"));
        assert_eq!(bad(MintRequest { ttl_s: Some(0), ..req() }), Err("invalid_argument"));
        assert_eq!(bad(MintRequest { metadata: Some("x".repeat(20_000)), ..req() }), Err("invalid_argument"));
    }
}
