//! Failed authentications are limited, against guessing keys, secrets and
//! tokens: per source address and per app key, at most so many `401`s in a
//! minute; past that, requests from that address (or naming that app key,
//! in Basic credentials or as a token's issuer) get `429` with
//! `Retry-After` until the minute is over — before any credential is
//! checked, so guessing stops. Successful requests are never counted.
//!
//! Each instance counts on its own (in memory): behind a load balancer
//! spreading requests over N instances, an address gets at most N times the
//! limit. The per-key limit also means someone failing on purpose with an
//! app's key can hold that app's API calls up for the rest of a minute; it
//! is set well above what a misconfigured client produces.
//!
//! Two budgets ride on the same counters: every request naming an app key
//! counts against that app's requests a minute (`--app-requests-per-minute`:
//! past it, `429` `app_rate_limited`), and each access token may open at
//! most so many media sessions a minute (`POST /v1/whip/…`, `/v1/whep/…`,
//! and signalling sockets, `GET /v1/rtc`; `--sessions-per-token-per-minute`:
//! past it, `429` `too_many_sessions`). Same per-instance caveat.
//!
//! The address is the TCP peer's: behind a reverse proxy every caller shares
//! the proxy's address (`X-Forwarded-For` is not trusted), so raise
//! `--auth-failures-per-addr` there or let the proxy limit.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;

use super::ApiState;
use super::error::ApiError;

/// The counting period.
pub const PERIOD: Duration = Duration::from_secs(60);
/// Entries kept before expired ones are swept.
const ENTRIES_SWEEP_AT: usize = 10_000;

/// Failures per key in fixed periods.
#[derive(Debug)]
struct Window<K> {
    max: u32,
    period: Duration,
    counts: Mutex<HashMap<K, (Instant, u32)>>,
}

impl<K: Eq + Hash + Clone> Window<K> {
    fn new(max: u32, period: Duration) -> Self {
        Self { max, period, counts: Mutex::new(HashMap::new()) }
    }

    /// How long `k` must wait, if it used up its failures this period.
    fn blocked(&self, k: &K, now: Instant) -> Option<Duration> {
        let counts = self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (start, n) = counts.get(k)?;
        let end = *start + self.period;
        (*n >= self.max && now < end).then(|| end - now)
    }

    fn fail(&self, k: K, now: Instant) {
        let mut counts = self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if counts.len() >= ENTRIES_SWEEP_AT {
            let period = self.period;
            counts.retain(|_, (start, _)| now.saturating_duration_since(*start) < period);
        }
        let entry = counts.entry(k).or_insert((now, 0));
        if now.saturating_duration_since(entry.0) >= self.period {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

/// The instance's limits.
#[derive(Debug, Clone)]
pub struct AuthLimits {
    by_addr: Arc<Window<IpAddr>>,
    by_key: Arc<Window<String>>,
    requests_by_app: Arc<Window<String>>,
    sessions_by_token: Arc<Window<u64>>,
}

/// The limits' settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitSettings {
    /// Failed authentications a minute from one address.
    pub failures_per_addr: u32,
    /// Failed authentications a minute naming one app key.
    pub failures_per_key: u32,
    /// Requests a minute naming one app key.
    pub app_requests: u32,
    /// Media sessions (WHIP, WHEP, signalling sockets) a minute opened with one token.
    pub sessions_per_token: u32,
}

impl AuthLimits {
    /// At most `per_addr` failures a minute from one address, `per_key` naming one app key.
    pub fn new(per_addr: u32, per_key: u32) -> Self {
        Self::with(LimitSettings {
            failures_per_addr: per_addr,
            failures_per_key: per_key,
            app_requests: u32::MAX,
            sessions_per_token: u32::MAX,
        })
    }

    pub fn with(s: LimitSettings) -> Self {
        Self {
            by_addr: Arc::new(Window::new(s.failures_per_addr, PERIOD)),
            by_key: Arc::new(Window::new(s.failures_per_key, PERIOD)),
            requests_by_app: Arc::new(Window::new(s.app_requests, PERIOD)),
            sessions_by_token: Arc::new(Window::new(s.sessions_per_token, PERIOD)),
        }
    }

    fn blocked(&self, addr: Option<IpAddr>, key: Option<&String>, now: Instant) -> Option<Duration> {
        let a = addr.and_then(|a| self.by_addr.blocked(&a, now));
        let k = key.and_then(|k| self.by_key.blocked(k, now));
        a.into_iter().chain(k).max()
    }

    fn fail(&self, addr: Option<IpAddr>, key: Option<String>, now: Instant) {
        if let Some(a) = addr {
            self.by_addr.fail(a, now);
        }
        if let Some(k) = key {
            self.by_key.fail(k, now);
        }
    }
}

/// What a request presents: the app key it names (Basic credentials' user,
/// or an access token's issuer — unverified: it only picks the counter), and
/// the access token itself, if any.
fn presented(state: &ApiState, request: &Request) -> (Option<String>, Option<String>) {
    let auth = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let token = match auth {
        Some(v) if v.starts_with("Basic ") => {
            let key = base64::engine::general_purpose::STANDARD
                .decode(v[6..].trim())
                .ok()
                .and_then(|d| String::from_utf8(d).ok())
                .and_then(|t| t.split_once(':').map(|(k, _)| k.chars().take(64).collect()));
            return (key, None);
        }
        Some(v) if v.starts_with("Bearer ") => Some(v[7..].trim().to_owned()),
        _ => request
            .uri()
            .query()
            .and_then(|q| q.split('&').find_map(|p| p.strip_prefix("access_token=")))
            .map(str::to_owned),
    };
    let Some(token) = token.filter(|t| t.contains('.')) else { return (None, None) };
    let key = arc_auth::token::peek_issuer(&token, &state.token_policy).ok().map(|k| k.chars().take(64).collect());
    (key, Some(token))
}

/// Whether the request opens a media session (WHIP/WHEP resource creation, a signalling socket).
fn opens_session(request: &Request) -> bool {
    let path = request.uri().path();
    let method = request.method();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    (method == axum::http::Method::POST && matches!(segments.as_slice(), ["v1", "whip" | "whep", _]))
        || (method == axum::http::Method::GET && path == "/v1/rtc")
}

fn token_key(token: &str) -> u64 {
    use std::hash::Hasher;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    h.write(token.as_bytes());
    h.finish()
}

fn too_many(code: &'static str, message: String, wait: Duration) -> Response {
    let secs = wait.as_secs().max(1);
    let mut response =
        ApiError::new(StatusCode::TOO_MANY_REQUESTS, code, format!("{message}; retry in {secs} s")).into_response();
    if let Ok(v) = secs.to_string().parse() {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
    response
}

/// The middleware: refuses blocked callers and spent budgets, counts `401`s.
pub(crate) async fn layer(State(state): State<Arc<ApiState>>, request: Request, next: Next) -> Response {
    let addr = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let (key, token) = presented(&state, &request);
    let now = Instant::now();
    let limits = &state.auth_limits;
    if let Some(wait) = limits.blocked(addr, key.as_ref(), now) {
        return too_many("too_many_failures", "too many failed authentications".into(), wait);
    }
    if let Some(k) = &key {
        if let Some(wait) = limits.requests_by_app.blocked(k, now) {
            return too_many("app_rate_limited", format!("app {k} used its requests for this minute"), wait);
        }
        limits.requests_by_app.fail(k.clone(), now);
    }
    if let (Some(t), true) = (&token, opens_session(&request)) {
        let t = token_key(t);
        if let Some(wait) = limits.sessions_by_token.blocked(&t, now) {
            return too_many("too_many_sessions", "this token opened too many sessions this minute".into(), wait);
        }
        limits.sessions_by_token.fail(t, now);
    }
    let response = next.run(request).await;
    if response.status() == StatusCode::UNAUTHORIZED {
        state.auth_limits.fail(addr, key, now);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_past_the_limit_block_until_the_period_ends() {
        let w = Window::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        for i in 0..3 {
            assert_eq!(w.blocked(&"k", t0), None, "after {i} failures");
            w.fail("k", t0 + Duration::from_secs(i));
        }
        assert_eq!(w.blocked(&"k", t0 + Duration::from_secs(10)), Some(Duration::from_secs(50)));
        assert_eq!(w.blocked(&"other", t0), None, "per key");
        assert_eq!(w.blocked(&"k", t0 + Duration::from_secs(60)), None, "a new period");
        w.fail("k", t0 + Duration::from_secs(61));
        assert_eq!(w.blocked(&"k", t0 + Duration::from_secs(62)), None, "counting afresh");
    }

    #[test]
    fn session_creating_requests_are_recognised() {
        let req =
            |m: &str, p: &str| Request::builder().method(m).uri(p).body(axum::body::Body::empty()).expect("request");
        assert!(opens_session(&req("POST", "/v1/whip/room-1")));
        assert!(opens_session(&req("POST", "/v1/whep/room-1")));
        assert!(opens_session(&req("GET", "/v1/rtc?access_token=x")));
        assert!(!opens_session(&req("PATCH", "/v1/whip/room-1/sessions/n/s")));
        assert!(!opens_session(&req("DELETE", "/v1/whip/room-1/sessions/n/s")));
        assert!(!opens_session(&req("POST", "/v1/rooms")));
    }

    #[test]
    fn the_longer_wait_of_address_and_key_applies() {
        let limits = AuthLimits::new(2, 5);
        let t0 = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        for _ in 0..2 {
            limits.fail(Some(a), Some("ak_1".into()), t0);
        }
        assert!(limits.blocked(Some(a), None, t0).is_some(), "the address is over its limit");
        assert!(limits.blocked(None, Some(&"ak_1".to_owned()), t0).is_none(), "the key is not yet");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        for _ in 0..3 {
            limits.fail(Some(b), Some("ak_1".into()), t0);
        }
        assert!(limits.blocked(Some("192.0.2.3".parse().expect("ip")), Some(&"ak_1".to_owned()), t0).is_some());
        assert!(limits.blocked(None, None, t0).is_none());
    }
}
