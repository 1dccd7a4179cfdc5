//! The whole life of an app secret, through the public API only: generated,
//! sealed into an event, opened, used to mint and verify tokens, rotated, and
//! used to sign webhooks.

use arc_auth::{AppSecret, MasterKey, MintRequest, SealError, SealedSecret, TokenPolicy, seal, token, webhook};
use chrono::TimeZone;

fn request() -> MintRequest {
    MintRequest {
        identity: "ann".into(),
        room: "standup".into(),
        grants: None,
        ttl_s: None,
        name: None,
        metadata: None,
        not_before_s: None,
    }
}

#[test]
fn a_secret_from_creation_to_rotation() {
    let master = MasterKey::parse(&MasterKey::generate().encode()).expect("master key");
    let now = chrono::Utc.timestamp_opt(1_800_000_000, 0).single().expect("time");
    let policy = TokenPolicy::default();
    assert_eq!(policy, TokenPolicy { max_ttl_s: 86_400, leeway_s: 30, max_token_bytes: 8192 });

    // Created: sealed under the master key, bound to the app, stored as JSON.
    let first = AppSecret::generate();
    let stored = serde_json::to_string(&seal::seal(&master, first.as_bytes(), b"app_1")).expect("json");
    assert!(!stored.contains(first.expose()));
    let sealed: SealedSecret = serde_json::from_str(&stored).expect("json");
    assert_eq!(seal::open(&master, &sealed, b"app_2"), Err(SealError::Tampered));
    let opened = seal::open(&master, &sealed, b"app_1").expect("opens");
    let first_again = AppSecret::from_string(String::from_utf8(opened.to_vec()).expect("utf-8"));
    assert!(first_again.matches(first.expose()));

    // Used: the app server mints, Arc finds the app by `iss` and verifies.
    let (jwt, claims) = token::mint("app_1", &first_again, &request(), &policy, now).expect("mint");
    assert_eq!(token::peek_issuer(&jwt, &policy).expect("iss"), "app_1");
    assert_eq!(token::verify(&jwt, &[&first], &policy, now), Ok(claims.clone()));

    // Rotated: during the grace period both secrets verify, after it only the new one.
    let second = AppSecret::generate();
    assert_eq!(token::verify(&jwt, &[&second, &first], &policy, now), Ok(claims));
    let after = token::verify(&jwt, &[&second], &policy, now).expect_err("old secret retired");
    assert_eq!(after.code(), "token_bad_signature");

    // Webhooks during the rotation carry one signature per secret; a receiver
    // holding either accepts them.
    let body = br#"{"id":"evt_1","type":"participant.joined"}"#;
    let ts = now.timestamp();
    let header = format!("{}, {}", webhook::sign(&second, ts, body), webhook::sign(&first, ts, body));
    for receiver in [&first, &second] {
        assert_eq!(webhook::verify(receiver, &ts.to_string(), &header, body, ts + 5, 300), Ok(()));
    }
    assert_eq!(
        webhook::verify(&AppSecret::generate(), &ts.to_string(), &header, body, ts + 5, 300),
        Err(arc_auth::WebhookSignatureError::Mismatch)
    );
    assert_eq!(
        (webhook::SIGNATURE_HEADER, webhook::TIMESTAMP_HEADER, webhook::ID_HEADER),
        ("arc-signature", "arc-timestamp", "arc-webhook-id")
    );
}

#[test]
fn secrets_never_show_in_debug_output() {
    let master = MasterKey::generate();
    let secret = AppSecret::generate();
    let shown = format!("{master:?} {secret:?}");
    assert!(!shown.contains(&master.encode()));
    assert!(!shown.contains(secret.expose()));
    assert_eq!(shown, format!("MasterKey({}) AppSecret(**redacted**)", master.key_id()));
}
