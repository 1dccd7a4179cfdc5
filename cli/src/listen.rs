//! `arcctl webhooks listen`: a local receiver that checks each delivery the
//! way a real receiver should (signature, timestamp window, duplicates by
//! `arc-webhook-id`) and prints one line per request.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, Result};
use arc_auth::secret::AppSecret;
use arc_auth::webhook::{self, DEFAULT_TOLERANCE_S};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;

#[derive(Debug)]
struct Receiver {
    secret: AppSecret,
    print_body: bool,
    seen: Mutex<HashSet<String>>,
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> &'h str {
    headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

async fn receive(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let now = chrono::Utc::now();
    let id = header(&headers, webhook::ID_HEADER).to_owned();
    let verdict = webhook::verify(
        &r.secret,
        header(&headers, webhook::TIMESTAMP_HEADER),
        header(&headers, webhook::SIGNATURE_HEADER),
        &body,
        now.timestamp(),
        DEFAULT_TOLERANCE_S,
    );
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let kind = json["type"].as_str().unwrap_or("?");
    let room = json["room_id"].as_str().unwrap_or("-");
    let attempt = header(&headers, "arc-webhook-attempt");
    let time = now.format("%H:%M:%S");
    match verdict {
        Ok(()) => {
            let first = r.seen.lock().map(|mut s| s.insert(id.clone())).unwrap_or(true);
            let dup = if first { "" } else { "  (duplicate: already received, ignore)" };
            println!("{time}  signature ok   {kind:<28} room {room}  id {id}  attempt {attempt}{dup}");
            if r.print_body {
                println!("{}", serde_json::to_string_pretty(&json).unwrap_or_default());
            }
            StatusCode::OK
        }
        Err(e) => {
            println!("{time}  REJECTED ({e})  {kind}  id {id:?}");
            StatusCode::UNAUTHORIZED
        }
    }
}

/// Serves until Ctrl-C.
pub(crate) async fn run(listen: SocketAddr, secret: &str, print_body: bool) -> Result<()> {
    if !secret.starts_with("sk_") {
        anyhow::bail!("--app-secret: expected the app secret (sk_…) printed when the app was created");
    }
    let secret = AppSecret::from_string(secret.to_owned());
    let receiver = Arc::new(Receiver { secret, print_body, seen: Mutex::new(HashSet::new()) });
    let app = axum::Router::new().fallback(axum::routing::post(receive)).with_state(receiver);
    let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| format!("listen on {listen}"))?;
    eprintln!(
        "arcctl: receiving webhooks at http://{listen}/ (Ctrl-C stops); answers 200 when the signature verifies, 401 otherwise"
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("serve")?;
    Ok(())
}
