//! Access tokens: JWT (RFC 7519) with HS256 only, signed with the app secret.
//!
//! Verification pins the algorithm: the header's `alg` must be exactly
//! `HS256` (`none`, `HS512`, `RS256`, … are refused before anything else is
//! looked at), the signature is checked before any claim, and times allow a
//! configurable leeway. JWT encoding is a few lines of base64url and JSON;
//! the cryptography is RustCrypto's HMAC-SHA256, compared in constant time.
//! (The `jsonwebtoken` crate is not used: its only pure-Rust backend pulls
//! in RSA, ECDSA and Ed25519 implementations that an HS256-only verifier
//! never calls.)
//!
//! A token is `base64url(header) "." base64url(claims) "." base64url(HMAC-SHA256(app secret, first two parts))`,
//! all without padding. The header Arc writes is `{"alg":"HS256","typ":"JWT"}`;
//! the claims are those of [`Claims`].
//!
//! Verification order: size, shape, `alg`, signature (against each offered
//! secret), required claims, `exp`, `nbf`/`iat`, lifetime cap, claim values.
//! So a token signed with the wrong secret reports
//! [`TokenError::BadSignature`] whatever its claims say.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use thiserror::Error;

use crate::mac::hmac_sha256;
use crate::secret::AppSecret;

/// Lifetime of a minted token when the request names none (6 h).
pub const DEFAULT_TTL_S: u32 = 6 * 3600;
use arc_events::limits::{
    APP_KEY_BYTES_MAX, DISPLAY_NAME_BYTES_MAX, ID_BYTES_MAX, JTI_BYTES_MAX, METADATA_BYTES_MAX, ROOM_NAME_BYTES_MAX,
    TOKEN_BYTES_DEFAULT_MAX,
};
/// The one algorithm accepted in a token header.
pub const ALG: &str = "HS256";
/// The claims every token must carry.
pub const REQUIRED_CLAIMS: [&str; 7] = ["iss", "sub", "exp", "nbf", "iat", "jti", "room"];

/// What the token's holder may do in its room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema, utoipa::ToSchema)]
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

/// The claims of an access token (the JWT payload).
///
/// ```json
/// {"iss":"app_…","sub":"ann","exp":1800021600,"nbf":1800000000,"iat":1800000000,
///  "jti":"tk_0193…","room":"standup",
///  "grants":{"join":true,"publish":true,"subscribe":true,"publish_data":true,"admin":false,"record":false},
///  "name":"Ann","metadata":"{…}"}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The app key.
    pub iss: String,
    /// The participant identity.
    pub sub: String,
    /// Expiry, unix seconds.
    pub exp: i64,
    /// Not valid before, unix seconds.
    pub nbf: i64,
    /// Issued at, unix seconds.
    pub iat: i64,
    /// Unique token id (`tk_` + UUIDv7).
    pub jti: String,
    /// The room name.
    pub room: String,
    /// What the holder may do; all `false` when absent.
    #[serde(default)]
    pub grants: Grants,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Free-form metadata set by the app server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<String>,
}

/// What an app server asks for when minting.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema, utoipa::ToSchema)]
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
    /// Longest lifetime (`exp - iat`) minted or accepted; default 86 400 (24 h).
    pub max_ttl_s: u32,
    /// Clock skew allowed on `exp`, `nbf` and `iat`; default 30.
    pub leeway_s: u32,
    /// Longest token accepted (and minted), in bytes; default 8192.
    pub max_token_bytes: usize,
}

impl Default for TokenPolicy {
    fn default() -> Self {
        Self { max_ttl_s: 86_400, leeway_s: 30, max_token_bytes: TOKEN_BYTES_DEFAULT_MAX }
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
    hmac_sha256(secret.as_bytes(), &[signing_input])
}

/// `tk_` + a UUIDv7 (simple form) stamped with `now` rather than the clock.
fn token_id(now: DateTime<Utc>) -> String {
    let secs = u64::try_from(now.timestamp()).unwrap_or(0);
    let ts = uuid::Timestamp::from_unix(uuid::NoContext, secs, now.timestamp_subsec_nanos().min(999_999_999));
    format!("tk_{}", uuid::Uuid::new_v7(ts).simple())
}

fn is_identity(s: &str) -> bool {
    !s.is_empty() && s.len() <= ID_BYTES_MAX && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn check_room(room: &str) -> Result<(), String> {
    if room.is_empty() || room.len() > ROOM_NAME_BYTES_MAX {
        return Err(format!("must be 1..={ROOM_NAME_BYTES_MAX} bytes"));
    }
    if room.chars().any(char::is_control) {
        return Err("contains control characters".into());
    }
    Ok(())
}

/// Mints a token for `req`, signed with `secret`, issued at `now`.
///
/// Refuses ([`TokenError::Invalid`], code `invalid_argument`): an identity
/// outside `[A-Za-z0-9_-]{1,64}`; a room that is empty, over 256 bytes or has
/// control characters; a name over 256 bytes; metadata over 16 KiB; a TTL
/// outside `1..=policy.max_ttl_s`; a `not_before_s` not below the TTL; an
/// app key that is empty, over 256 bytes or has control characters; and a
/// token that would come out longer than `policy.max_token_bytes` (which,
/// at the default 8192, caps metadata well below 16 KiB).
pub fn mint(
    app_key: &str,
    secret: &AppSecret,
    req: &MintRequest,
    policy: &TokenPolicy,
    now: DateTime<Utc>,
) -> Result<(String, Claims), TokenError> {
    let invalid = |field: &'static str, reason: String| TokenError::Invalid { field, reason };
    if app_key.is_empty() || app_key.len() > APP_KEY_BYTES_MAX || app_key.chars().any(char::is_control) {
        return Err(invalid("app_key", format!("must be 1..={APP_KEY_BYTES_MAX} bytes without control characters")));
    }
    if !is_identity(&req.identity) {
        return Err(invalid("identity", "must match [A-Za-z0-9_-]{1,64}".into()));
    }
    check_room(&req.room).map_err(|r| invalid("room", r))?;
    if req.name.as_ref().is_some_and(|n| n.len() > DISPLAY_NAME_BYTES_MAX) {
        return Err(invalid("name", format!("must be at most {DISPLAY_NAME_BYTES_MAX} bytes")));
    }
    if req.metadata.as_ref().is_some_and(|m| m.len() > METADATA_BYTES_MAX) {
        return Err(invalid("metadata", format!("must be at most {METADATA_BYTES_MAX} bytes")));
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
        jti: token_id(now),
        room: req.room.clone(),
        grants: req.grants.unwrap_or(Grants::participant()),
        name: req.name.clone(),
        metadata: req.metadata.clone(),
    };
    let payload = serde_json::to_vec(&claims).map_err(|e| TokenError::Malformed(e.to_string()))?;
    let signing_input = format!("{HEADER_B64}.{}", URL_SAFE_NO_PAD.encode(payload));
    let signature = URL_SAFE_NO_PAD.encode(hmac(secret, signing_input.as_bytes()));
    let token = format!("{signing_input}.{signature}");
    // Never hand out a token that `verify` would refuse as too large.
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
///
/// Refuses tokens over `policy.max_token_bytes` ([`TokenError::TooLarge`]),
/// anything but three dot-separated parts whose second is base64url of a JSON
/// object ([`TokenError::Malformed`]), and a payload without a non-empty
/// string `iss` ([`TokenError::MissingClaim`]). The result is untrusted until
/// [`verify`] passes.
pub fn peek_issuer(token: &str, policy: &TokenPolicy) -> Result<String, TokenError> {
    let parts = split(token, policy)?;
    let payload = decode_json(parts.payload, "payload")?;
    match payload.get("iss") {
        Some(serde_json::Value::String(iss)) if !iss.is_empty() => Ok(iss.clone()),
        _ => Err(TokenError::MissingClaim("iss")),
    }
}

/// Verifies a token against the app's valid secrets (current first) at `now`.
///
/// Any of `secrets` may have signed it (a rotated-out secret is offered
/// while its grace period lasts). Checks, in order: size
/// ([`TokenError::TooLarge`]), shape ([`TokenError::Malformed`]), header
/// `alg` exactly `HS256` ([`TokenError::AlgorithmNotAllowed`]), signature
/// ([`TokenError::BadSignature`]), required claims
/// ([`TokenError::MissingClaim`]), `exp + leeway >= now`
/// ([`TokenError::Expired`]), `nbf - leeway <= now` and `iat - leeway <= now`
/// ([`TokenError::NotYetValid`]), `exp - iat <= max_ttl_s` and
/// `exp <= now + max_ttl_s + leeway` ([`TokenError::TtlTooLong`]), then the
/// claim values themselves (`sub` an identity, `room` a room name, `jti`
/// 1..=128 bytes; otherwise [`TokenError::Malformed`]).
pub fn verify(
    token: &str,
    secrets: &[&AppSecret],
    policy: &TokenPolicy,
    now: DateTime<Utc>,
) -> Result<Claims, TokenError> {
    let parts = split(token, policy)?;
    let header = decode_json(parts.header, "header")?;
    match header.get("alg") {
        Some(serde_json::Value::String(alg)) if alg == ALG => {}
        Some(serde_json::Value::String(alg)) => return Err(TokenError::AlgorithmNotAllowed(alg.clone())),
        Some(other) => return Err(TokenError::AlgorithmNotAllowed(other.to_string())),
        None => return Err(TokenError::AlgorithmNotAllowed("(missing)".into())),
    }
    if header.contains_key("crit") {
        return Err(TokenError::Malformed("critical header extensions are not supported".into()));
    }
    // Room for more than 32 bytes, so that a longer signature is refused by length, not by the decoder.
    let mut buf = [0u8; 48];
    let signature = match URL_SAFE_NO_PAD.decode_slice(parts.signature, &mut buf) {
        Ok(32) => &buf[..32],
        _ => return Err(TokenError::BadSignature),
    };
    let signing_input = &token.as_bytes()[..parts.header.len() + 1 + parts.payload.len()];
    let signed = secrets.iter().any(|s| bool::from(hmac(s, signing_input).ct_eq(signature)));
    if !signed {
        return Err(TokenError::BadSignature);
    }
    let payload = decode_json(parts.payload, "payload")?;
    for claim in REQUIRED_CLAIMS {
        if payload.get(claim).is_none_or(serde_json::Value::is_null) {
            return Err(TokenError::MissingClaim(claim));
        }
    }
    let claims: Claims = serde_json::from_value(serde_json::Value::Object(payload))
        .map_err(|e| TokenError::Malformed(format!("claims: {e}")))?;
    let now = now.timestamp();
    let leeway = i64::from(policy.leeway_s);
    let max = i64::from(policy.max_ttl_s);
    if claims.exp.saturating_add(leeway) < now {
        return Err(TokenError::Expired);
    }
    if claims.nbf.saturating_sub(leeway) > now || claims.iat.saturating_sub(leeway) > now {
        return Err(TokenError::NotYetValid);
    }
    let ttl = claims.exp.saturating_sub(claims.iat);
    if ttl > max || claims.exp > now.saturating_add(max).saturating_add(leeway) {
        return Err(TokenError::TtlTooLong { ttl_s: ttl.max(claims.exp.saturating_sub(now)), max_s: max });
    }
    if !is_identity(&claims.sub) {
        return Err(TokenError::Malformed("sub is not a valid identity".into()));
    }
    if claims.iss.is_empty() {
        return Err(TokenError::Malformed("iss is empty".into()));
    }
    if claims.jti.is_empty() || claims.jti.len() > JTI_BYTES_MAX {
        return Err(TokenError::Malformed(format!("jti must be 1..={JTI_BYTES_MAX} bytes")));
    }
    check_room(&claims.room).map_err(|r| TokenError::Malformed(format!("room {r}")))?;
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use hmac::{Hmac, Mac};
    use rand::RngCore;
    use serde_json::{Value, json};

    use super::*;

    const APP: &str = "app_0193c1d2e3f47a8b9c0d1e2f3a4b5c6d";

    fn now() -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000, 0).single().expect("valid")
    }
    fn at(offset: i64) -> DateTime<Utc> {
        now() + chrono::Duration::seconds(offset)
    }
    fn p() -> TokenPolicy {
        TokenPolicy::default()
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
    fn b64(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).expect("json"))
    }
    fn hs256() -> Value {
        json!({"alg": "HS256", "typ": "JWT"})
    }
    /// A correctly HS256-signed token of arbitrary header and claims.
    fn forge(secret: &AppSecret, header: &Value, claims: &Value) -> String {
        let input = format!("{}.{}", b64(header), b64(claims));
        let sig = URL_SAFE_NO_PAD.encode(hmac(secret, input.as_bytes()));
        format!("{input}.{sig}")
    }
    /// The claims `mint` writes for `req()` at `now()`.
    fn claims_json(secret: &AppSecret) -> Value {
        let (token, _) = mint(APP, secret, &req(), &p(), now()).expect("mint");
        let payload = token.split('.').nth(1).expect("payload");
        Value::Object(decode_json(payload, "payload").expect("json"))
    }
    fn code(token: &str, secrets: &[&AppSecret], when: DateTime<Utc>) -> Result<(), &'static str> {
        verify(token, secrets, &p(), when).map(|_| ()).map_err(|e| e.code())
    }

    #[test]
    fn the_header_constant_is_what_it_says() {
        let header = decode_json(HEADER_B64, "header").expect("json");
        assert_eq!(Value::Object(header), hs256());
    }

    #[test]
    fn interoperates_with_the_rfc_7519_style_example() {
        // The widely published HS256 example token (jwt.io), signed with "your-256-bit-secret".
        let token = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.\
                     eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.\
                     SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
        let secret = AppSecret::from_string("your-256-bit-secret".into());
        // The signature verifies (the claims then lack `iss`), and not under another secret.
        assert_eq!(verify(token, &[&secret], &p(), now()), Err(TokenError::MissingClaim("iss")));
        assert_eq!(verify(token, &[&AppSecret::generate()], &p(), now()), Err(TokenError::BadSignature));
    }

    #[test]
    fn minted_tokens_verify_with_all_claims() {
        let s = AppSecret::generate();
        let grants = Grants { join: true, subscribe: true, admin: true, record: true, ..Grants::default() };
        let r = MintRequest { grants: Some(grants), ..req() };
        let (token, claims) = mint(APP, &s, &r, &p(), now()).expect("mint");
        assert!(token.starts_with(HEADER_B64));
        assert_eq!(token.split('.').count(), 3);
        assert_eq!(peek_issuer(&token, &p()), Ok(APP.into()));
        let back = verify(&token, &[&s], &p(), at(10)).expect("verifies");
        assert_eq!(back, claims);
        let expected = Claims {
            iss: APP.into(),
            sub: "ann".into(),
            exp: now().timestamp() + 600,
            nbf: now().timestamp(),
            iat: now().timestamp(),
            jti: claims.jti.clone(),
            room: "standup".into(),
            grants,
            name: Some("Ann".into()),
            metadata: Some("{\"x\":1}".into()),
        };
        assert_eq!(back, expected);
        assert!(back.jti.starts_with("tk_") && back.jti.len() == 3 + 32, "{}", back.jti);
        let uuid = uuid::Uuid::parse_str(&back.jti[3..]).expect("uuid");
        assert_eq!(uuid.get_version_num(), 7);
        let (secs, _) = uuid.get_timestamp().expect("v7 timestamp").to_unix();
        assert_eq!(i64::try_from(secs).expect("fits"), now().timestamp(), "stamped with `now`, not the clock");
        // Fresh id per token.
        let (_, again) = mint(APP, &s, &r, &p(), now()).expect("mint");
        assert_ne!(again.jti, claims.jti);
    }

    #[test]
    fn mint_defaults() {
        let s = AppSecret::generate();
        let bare = MintRequest {
            identity: "bob".into(),
            room: "r".into(),
            grants: None,
            ttl_s: None,
            name: None,
            metadata: None,
            not_before_s: None,
        };
        let (token, claims) = mint(APP, &s, &bare, &p(), now()).expect("mint");
        assert_eq!(claims.exp - claims.iat, i64::from(DEFAULT_TTL_S));
        assert_eq!(claims.nbf, claims.iat);
        assert_eq!(
            claims.grants,
            Grants { join: true, publish: true, subscribe: true, publish_data: true, ..Grants::default() }
        );
        // Absent optional claims are not written at all.
        let payload = Value::Object(decode_json(token.split('.').nth(1).expect("payload"), "payload").expect("json"));
        assert!(payload.get("name").is_none() && payload.get("metadata").is_none());
        assert_eq!(verify(&token, &[&s], &p(), at(6 * 3600)), Ok(claims));
        // A policy shorter than the default TTL shortens the default.
        let short = TokenPolicy { max_ttl_s: 60, ..p() };
        let (_, claims) = mint(APP, &s, &bare, &short, now()).expect("mint");
        assert_eq!(claims.exp - claims.iat, 60);
        // Grants absent from a token mean nothing granted.
        let mut c = claims_json(&s);
        c.as_object_mut().expect("object").remove("grants");
        let t = forge(&s, &hs256(), &c);
        assert_eq!(verify(&t, &[&s], &p(), at(10)).expect("verifies").grants, Grants::default());
    }

    #[test]
    fn mint_request_json() {
        let r: MintRequest = serde_json::from_str(r#"{"identity":"ann","room":"standup"}"#).expect("json");
        assert_eq!((r.grants, r.ttl_s, r.not_before_s), (None, None, None));
        let r: MintRequest =
            serde_json::from_str(r#"{"identity":"ann","room":"r","grants":{"join":true},"ttl_s":60}"#).expect("json");
        assert_eq!(r.grants, Some(Grants { join: true, ..Grants::default() }));
    }

    #[test]
    fn expired_beyond_the_leeway() {
        let s = AppSecret::generate();
        let (token, _) = mint(APP, &s, &req(), &p(), now()).expect("mint");
        assert_eq!(code(&token, &[&s], at(600 + 31)), Err("token_expired"));
        assert_eq!(code(&token, &[&s], at(100_000)), Err("token_expired"));
        // Within the leeway it is still accepted.
        assert_eq!(code(&token, &[&s], at(600)), Ok(()));
        assert_eq!(code(&token, &[&s], at(600 + 30)), Ok(()));
        let strict = TokenPolicy { leeway_s: 0, ..p() };
        assert_eq!(verify(&token, &[&s], &strict, at(601)).map_err(|e| e.code()), Err("token_expired"));
    }

    #[test]
    fn not_yet_valid() {
        let s = AppSecret::generate();
        let later = MintRequest { not_before_s: Some(120), ..req() };
        let (t, _) = mint(APP, &s, &later, &p(), now()).expect("mint");
        assert_eq!(code(&t, &[&s], at(60)), Err("token_not_yet_valid"));
        assert_eq!(code(&t, &[&s], at(89)), Err("token_not_yet_valid"));
        assert_eq!(code(&t, &[&s], at(90)), Ok(()), "within the leeway");
        assert_eq!(code(&t, &[&s], at(120)), Ok(()));
        // Issued in the future (beyond the leeway) is not valid either.
        let mut c = claims_json(&s);
        c["iat"] = (now().timestamp() + 100).into();
        assert_eq!(code(&forge(&s, &hs256(), &c), &[&s], now()), Err("token_not_yet_valid"));
    }

    #[test]
    fn wrong_secret_is_a_bad_signature_whatever_the_claims() {
        let s = AppSecret::generate();
        let other = AppSecret::generate();
        let (token, _) = mint(APP, &s, &req(), &p(), now()).expect("mint");
        assert_eq!(code(&token, &[&other], at(10)), Err("token_bad_signature"));
        assert_eq!(code(&token, &[&other], at(10_000)), Err("token_bad_signature"), "expired, but signature first");
        assert_eq!(code(&token, &[&other], at(-10_000)), Err("token_bad_signature"), "not yet valid, ditto");
        assert_eq!(code(&token, &[], at(10)), Err("token_bad_signature"));
        let mut c = claims_json(&s);
        c.as_object_mut().expect("object").remove("jti");
        assert_eq!(code(&forge(&other, &hs256(), &c), &[&s], at(10)), Err("token_bad_signature"));
    }

    #[test]
    fn tampered_tokens_are_bad_signatures() {
        let s = AppSecret::generate();
        let (token, _) = mint(APP, &s, &req(), &p(), now()).expect("mint");
        let parts: Vec<&str> = token.split('.').collect();
        let mut c = claims_json(&s);
        c["room"] = "other".into();
        let tampered = format!("{}.{}.{}", parts[0], b64(&c), parts[2]);
        assert_eq!(code(&tampered, &[&s], at(10)), Err("token_bad_signature"));
        let mut c = claims_json(&s);
        c["grants"]["admin"] = true.into();
        let tampered = format!("{}.{}.{}", parts[0], b64(&c), parts[2]);
        assert_eq!(code(&tampered, &[&s], at(10)), Err("token_bad_signature"));
        // Signature missing, empty, truncated, extended, flipped, or not base64url.
        let sig = parts[2];
        let mut flipped = URL_SAFE_NO_PAD.decode(sig).expect("b64");
        flipped[31] ^= 1;
        let flipped = URL_SAFE_NO_PAD.encode(flipped);
        let longer = URL_SAFE_NO_PAD.encode([7u8; 48]);
        for bad in
            ["", &sig[..42], &format!("{sig}A"), &format!("{sig}AAAA"), &flipped, &longer, "%%%", &format!("{sig}=")]
        {
            let t = format!("{}.{}.{bad}", parts[0], parts[1]);
            assert_eq!(code(&t, &[&s], at(10)), Err("token_bad_signature"), "{bad:?}");
        }
        // A non-canonical encoding of the same signature (different trailing bits) is refused too.
        let last = sig.as_bytes()[42];
        let twin = format!("{}{}", &sig[..42], if last == b'A' { 'B' } else { 'A' });
        let t = format!("{}.{}.{twin}", parts[0], parts[1]);
        assert_eq!(code(&t, &[&s], at(10)), Err("token_bad_signature"));
    }

    #[test]
    fn only_hs256_is_allowed() {
        let s = AppSecret::generate();
        let (token, _) = mint(APP, &s, &req(), &p(), now()).expect("mint");
        let payload = token.split('.').nth(1).expect("payload");
        // alg none with an empty signature.
        let none = format!("{}.{payload}.", b64(&json!({"alg": "none", "typ": "JWT"})));
        assert_eq!(verify(&none, &[&s], &p(), at(10)), Err(TokenError::AlgorithmNotAllowed("none".into())));
        let none = format!("{}.{payload}.", b64(&json!({"alg": "None"})));
        assert_eq!(code(&none, &[&s], at(10)), Err("token_algorithm_not_allowed"));
        // alg switched to HS512 and correctly signed with HS512 under the same secret.
        let hs512 = {
            let input = format!("{}.{payload}", b64(&json!({"alg": "HS512", "typ": "JWT"})));
            let mut mac = <Hmac<sha2::Sha512> as Mac>::new_from_slice(s.as_bytes()).expect("key");
            mac.update(input.as_bytes());
            format!("{input}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
        };
        assert_eq!(verify(&hs512, &[&s], &p(), at(10)), Err(TokenError::AlgorithmNotAllowed("HS512".into())));
        // Other algorithms, even with a valid HS256 signature over the rest.
        for alg in
            [json!("RS256"), json!("ES256"), json!("HS384"), json!("hs256"), json!("HS256 "), json!(""), json!(null)]
        {
            let t = forge(&s, &json!({"alg": alg, "typ": "JWT"}), &claims_json(&s));
            assert_eq!(code(&t, &[&s], at(10)), Err("token_algorithm_not_allowed"), "{alg}");
        }
        let t = forge(&s, &json!({"typ": "JWT"}), &claims_json(&s));
        assert_eq!(code(&t, &[&s], at(10)), Err("token_algorithm_not_allowed"));
        // The algorithm is checked before the signature: an RS256 header with garbage still says so.
        let t = format!("{}.{payload}.c2lnbmF0dXJl", b64(&json!({"alg": "RS256"})));
        assert_eq!(code(&t, &[&s], at(10)), Err("token_algorithm_not_allowed"));
        // Critical extensions are not understood, so not accepted.
        let t = forge(&s, &json!({"alg": "HS256", "crit": ["exp"]}), &claims_json(&s));
        assert_eq!(code(&t, &[&s], at(10)), Err("token_malformed"));
    }

    #[test]
    fn lifetimes_beyond_the_cap() {
        let s = AppSecret::generate();
        let t0 = now().timestamp();
        let mut c = claims_json(&s);
        c["exp"] = (t0 + 86_401).into();
        let t = forge(&s, &hs256(), &c);
        assert_eq!(verify(&t, &[&s], &p(), at(10)), Err(TokenError::TtlTooLong { ttl_s: 86_401, max_s: 86_400 }));
        c["exp"] = (t0 + 86_400).into();
        assert_eq!(code(&forge(&s, &hs256(), &c), &[&s], at(10)), Ok(()));
        // Backdated iat does not help: exp is also capped against now.
        c["iat"] = (t0 - 1000).into();
        c["nbf"] = (t0 - 1000).into();
        c["exp"] = (t0 + 86_400 - 900).into();
        assert_eq!(code(&forge(&s, &hs256(), &c), &[&s], now()), Err("token_ttl_too_long"));
        // Extreme values neither overflow nor pass.
        for (iat, exp) in [(t0, i64::MAX), (i64::MIN, t0 + 10), (i64::MIN, i64::MAX)] {
            let mut c = claims_json(&s);
            c["iat"] = iat.into();
            c["nbf"] = iat.into();
            c["exp"] = exp.into();
            assert_eq!(code(&forge(&s, &hs256(), &c), &[&s], now()), Err("token_ttl_too_long"), "{iat} {exp}");
        }
        let mut c = claims_json(&s);
        c["exp"] = i64::MIN.into();
        assert_eq!(code(&forge(&s, &hs256(), &c), &[&s], now()), Err("token_expired"));
        let mut c = claims_json(&s);
        c["nbf"] = i64::MAX.into();
        assert_eq!(code(&forge(&s, &hs256(), &c), &[&s], now()), Err("token_not_yet_valid"));
    }

    #[test]
    fn missing_claims_are_named() {
        let s = AppSecret::generate();
        for claim in REQUIRED_CLAIMS {
            let mut c = claims_json(&s);
            c.as_object_mut().expect("object").remove(claim);
            let t = forge(&s, &hs256(), &c);
            assert_eq!(verify(&t, &[&s], &p(), at(10)), Err(TokenError::MissingClaim(claim)));
            c[claim] = Value::Null;
            let t = forge(&s, &hs256(), &c);
            assert_eq!(verify(&t, &[&s], &p(), at(10)), Err(TokenError::MissingClaim(claim)), "{claim}: null");
        }
    }

    #[test]
    fn signed_but_ill_typed_claims_are_malformed() {
        let s = AppSecret::generate();
        let cases: [(&str, Value); 9] = [
            ("exp", json!("1800000600")),
            ("exp", json!(1.8e9)),
            ("room", json!(7)),
            ("room", json!("")),
            ("room", json!("a\nb")),
            ("sub", json!("not an identity")),
            ("iss", json!("")),
            ("jti", json!("")),
            ("grants", json!("all")),
        ];
        for (claim, value) in cases {
            let mut c = claims_json(&s);
            c[claim] = value.clone();
            let t = forge(&s, &hs256(), &c);
            assert_eq!(code(&t, &[&s], at(10)), Err("token_malformed"), "{claim} = {value}");
        }
        // A payload that is not JSON, correctly signed.
        let input = format!("{}.{}", b64(&hs256()), URL_SAFE_NO_PAD.encode("not json"));
        let t = format!("{input}.{}", URL_SAFE_NO_PAD.encode(hmac(&s, input.as_bytes())));
        assert_eq!(code(&t, &[&s], at(10)), Err("token_malformed"));
    }

    #[test]
    fn oversized_tokens_are_refused_before_parsing() {
        let s = AppSecret::generate();
        let huge = format!("{}.{}.x", "a".repeat(5000), "b".repeat(5000));
        assert_eq!(verify(&huge, &[&s], &p(), at(10)), Err(TokenError::TooLarge { len: 10_003, max: 8192 }));
        assert_eq!(peek_issuer(&huge, &p()).map_err(|e| e.code()), Err("token_too_large"));
        // A real, signed token over a tighter limit.
        let (token, _) = mint(APP, &s, &req(), &p(), now()).expect("mint");
        let tight = TokenPolicy { max_token_bytes: token.len() - 1, ..p() };
        assert_eq!(verify(&token, &[&s], &tight, at(10)).map_err(|e| e.code()), Err("token_too_large"));
        let exact = TokenPolicy { max_token_bytes: token.len(), ..p() };
        assert!(verify(&token, &[&s], &exact, at(10)).is_ok());
    }

    #[test]
    fn garbage_is_malformed() {
        let s = AppSecret::generate();
        let mut rng = rand::rng();
        let mut random: Vec<String> = Vec::new();
        for len in [1, 16, 100, 1000] {
            let mut bytes = vec![0u8; len];
            rng.fill_bytes(&mut bytes);
            random.push(String::from_utf8_lossy(&bytes).into_owned());
            random.push(URL_SAFE_NO_PAD.encode(&bytes));
        }
        let not_json = format!("{}.{}.x", URL_SAFE_NO_PAD.encode("nope"), URL_SAFE_NO_PAD.encode("nope"));
        let array = format!("{}.{}.x", b64(&json!([1])), b64(&json!(["iss"])));
        let header_not_json = format!("{}.{}.x", URL_SAFE_NO_PAD.encode("nope"), b64(&claims_json(&s)));
        let fixed = [
            "",
            ".",
            "..",
            "...",
            "....",
            "a.b",
            "a.b.c.d",
            ".b.c",
            "a..c",
            "%%%.%%%.%%%",
            "\u{0}\u{1}\u{2}",
            "é.é.é",
            "Bearer x.y.z",
            not_json.as_str(),
            array.as_str(),
        ];
        for g in fixed.iter().copied().chain(random.iter().map(String::as_str)) {
            assert_eq!(code(g, &[&s], at(10)), Err("token_malformed"), "{g:?}");
            assert!(peek_issuer(g, &p()).is_err(), "{g:?}");
        }
        // `peek_issuer` reads only the payload; `verify` reads the header first.
        assert_eq!(code(&header_not_json, &[&s], at(10)), Err("token_malformed"));
        assert_eq!(peek_issuer(&header_not_json, &p()), Ok(APP.into()));
    }

    #[test]
    fn peek_reads_only_the_issuer() {
        let s = AppSecret::generate();
        let mut c = claims_json(&s);
        c["exp"] = 0.into();
        let t = forge(&AppSecret::generate(), &json!({"alg": "none"}), &c);
        assert_eq!(peek_issuer(&t, &p()), Ok(APP.into()), "nothing but iss is looked at");
        for iss in [json!(null), json!(7), json!(""), json!(["a"])] {
            c["iss"] = iss.clone();
            assert_eq!(peek_issuer(&forge(&s, &hs256(), &c), &p()), Err(TokenError::MissingClaim("iss")), "{iss}");
        }
        c.as_object_mut().expect("object").remove("iss");
        assert_eq!(peek_issuer(&forge(&s, &hs256(), &c), &p()).map_err(|e| e.code()), Err("token_missing_claim"));
    }

    #[test]
    fn a_rotated_out_secret_verifies_only_while_offered() {
        let old = AppSecret::generate();
        let new = AppSecret::generate();
        let (token, claims) = mint(APP, &old, &req(), &p(), now()).expect("mint");
        assert_eq!(verify(&token, &[&new, &old], &p(), at(10)), Ok(claims.clone()));
        assert_eq!(verify(&token, &[&old, &new], &p(), at(10)), Ok(claims));
        assert_eq!(verify(&token, &[&new], &p(), at(10)).map_err(|e| e.code()), Err("token_bad_signature"));
        let (fresh, _) = mint(APP, &new, &req(), &p(), now()).expect("mint");
        assert!(verify(&fresh, &[&new, &old], &p(), at(10)).is_ok());
        assert!(verify(&fresh, &[&new], &p(), at(10)).is_ok());
    }

    #[test]
    fn minting_validates_its_input() {
        let s = AppSecret::generate();
        let bad = |r: MintRequest| match mint(APP, &s, &r, &p(), now()) {
            Ok(_) => Ok(()),
            Err(TokenError::Invalid { field, .. }) => Err(field),
            Err(other) => panic!("unexpected {other:?}"),
        };
        assert_eq!(bad(req()), Ok(()));
        for identity in ["", "a b", "ann@example.com", "ü", &"a".repeat(65)] {
            assert_eq!(bad(MintRequest { identity: identity.into(), ..req() }), Err("identity"), "{identity:?}");
        }
        assert_eq!(bad(MintRequest { identity: "A-z_0".repeat(12), ..req() }), Ok(()));
        for room in ["", "a\u{0}b", "tab\t", &"r".repeat(257)] {
            assert_eq!(bad(MintRequest { room: room.into(), ..req() }), Err("room"), "{room:?}");
        }
        assert_eq!(bad(MintRequest { room: "Daily stand-up / 🎥".into(), ..req() }), Ok(()));
        assert_eq!(bad(MintRequest { room: "r".repeat(256), ..req() }), Ok(()));
        assert_eq!(bad(MintRequest { name: Some("n".repeat(257)), ..req() }), Err("name"));
        assert_eq!(bad(MintRequest { name: Some("n".repeat(256)), ..req() }), Ok(()));
        assert_eq!(bad(MintRequest { ttl_s: Some(86_401), ..req() }), Err("ttl_s"));
        assert_eq!(bad(MintRequest { ttl_s: Some(86_400), ..req() }), Ok(()));
        assert_eq!(bad(MintRequest { ttl_s: Some(0), ..req() }), Err("ttl_s"));
        assert_eq!(bad(MintRequest { not_before_s: Some(600), ..req() }), Err("not_before_s"));
        assert_eq!(bad(MintRequest { metadata: Some("x".repeat(16 * 1024 + 1)), ..req() }), Err("metadata"));
        // Within the metadata limit but over the token size limit.
        assert_eq!(bad(MintRequest { metadata: Some("x".repeat(7000)), ..req() }), Err("metadata"));
        let roomy = TokenPolicy { max_token_bytes: 64 * 1024, ..p() };
        let r = MintRequest { metadata: Some("x".repeat(16 * 1024)), ..req() };
        let (t, _) = mint(APP, &s, &r, &roomy, now()).expect("fits a larger limit");
        assert!(verify(&t, &[&s], &roomy, at(1)).is_ok());
        for app_key in ["", "a\nb", &"k".repeat(257)] {
            assert_eq!(
                mint(app_key, &s, &req(), &p(), now()).map(|_| ()).map_err(|e| e.code()),
                Err("invalid_argument")
            );
        }
    }

    #[test]
    fn codes_are_stable() {
        let all = [
            (TokenError::Malformed(String::new()), "token_malformed"),
            (TokenError::TooLarge { len: 2, max: 1 }, "token_too_large"),
            (TokenError::AlgorithmNotAllowed(String::new()), "token_algorithm_not_allowed"),
            (TokenError::BadSignature, "token_bad_signature"),
            (TokenError::Expired, "token_expired"),
            (TokenError::NotYetValid, "token_not_yet_valid"),
            (TokenError::TtlTooLong { ttl_s: 2, max_s: 1 }, "token_ttl_too_long"),
            (TokenError::MissingClaim("jti"), "token_missing_claim"),
            (TokenError::Invalid { field: "room", reason: String::new() }, "invalid_argument"),
        ];
        for (error, code) in all {
            assert_eq!(error.code(), code);
            assert!(!error.to_string().is_empty());
        }
    }
}
