//! The OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]`
//! annotations and the DTOs' `ToSchema` derives. Served at
//! `/v1/openapi.json`; `/docs` is a self-contained page that renders it and
//! sends requests. `schemas/openapi.json` is the checked-in copy
//! (`control/tests/openapi.rs` fails when it drifts).

use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{apps, dev, events, rooms, rtc, whip};

const DESCRIPTION: &str = r#"Arc's control plane: apps (AppKey/AppSecret), access tokens, rooms,
participants, moderation, quotas and webhooks. Every change is an event in
Arc's log; reads come from projections of it, and a write answers once this
server's projections show it.

## Credentials
- `admin`: `Authorization: Bearer <admin key>` (`arc-control dev` saves one in
  its data dir). May do everything, for every app; bodies then name `app_id`.
  Several named keys may be configured (`--admin-keys name=key,…`); the log
  names the key in every event it causes.
- `app`: HTTP Basic `<app_key>:<app_secret>`. An app server manages its own
  rooms, participants, tokens and webhooks.
- `participant`: `Authorization: Bearer <access token>` (a JWT minted with
  `POST /v1/tokens`). Joins its room; with the `admin` grant it moderates it.

## Errors
Every error is `{"error": {"code": "...", "message": "..."}}` with a fitting
status: 400 `invalid_argument` (the message starts with the field), 401
(`unauthenticated`, `token_expired`, `token_not_yet_valid`,
`token_bad_signature`, `token_algorithm_not_allowed`, `token_malformed`,
`token_too_large`, `token_revoked`, …), 403, 404, 409 (`conflict` after
retries, or a state conflict), 413 `body_too_large` (over 256 KiB), 429
`quota_exceeded` (with `limit` naming the quota) or `room_full`, 503
(`log_unavailable`, `read_model_unavailable`, with `Retry-After`).

## Quotas
An app's `max_rooms` and `max_participants` are strict, across instances too:
the creates and joins they apply to are decided one at a time per app (each
waits until this server's read models have applied the log's head, then
checks and appends), so concurrent requests never pass the limit together.
Such a request may answer `503 behind` (with `Retry-After`) when the read
models lag by more than 2 s. `max_participants_per_room` is decided by the
room itself.

## When the log is unreachable
While the event log (NATS) cannot be reached, writes fail at once with 503
`log_unavailable` and `Retry-After: 1` (within the log's operation timeout,
2 s, when a cluster is electing a stream leader); a 503 write may or may not
have been recorded, so retry it. Reads of read models keep answering (they
may be stale: `/v1/status` and `/readyz` say so). When the log is back,
writes succeed again within a second, and the read models catch up.

## 202 Accepted
A write whose answer shows its result, made while this server's read models
lag the log, answers `202` with `{"pending": {"position", "location",
"message"}}`, `Location` and `Arc-Position`: the write is in the log; poll
`Location`. A write never answers 404 or 500 for something it created. App
creation and secret rotation always answer with the new secret.

## Arc-Position (read what you wrote, on any instance)
Every answer to a write that appended events carries `Arc-Position: <P>`, the
log position of its last event. Send it back on a later request (any method,
any instance) as `Arc-Position: <P>` and that request is served only once the
instance's read models have applied P: at most 2 s, else `503 behind` with
`Retry-After: 1`. A value that is not an unsigned integer is `400
invalid_argument`.

## Media (WHIP and WHEP, RFC 9725)
`POST /v1/whip/{room}` (grant `publish`) and `POST /v1/whep/{room}` (grant
`subscribe`) take an SDP offer (`application/sdp`) with `Authorization: Bearer
<access token>` and answer `201` with the SDP answer and `Location` of the
session; `PATCH` it with `application/trickle-ice-sdpfrag`, `DELETE` it to
leave. Bad SDP is 400 `bad_sdp`, no codec in common 406 `no_common_codec`, no
media node 503 `no_media_node`.

## Webhooks
Arc POSTs JSON `{"id", "type", "occurred_at", "app_id", "room_id", "data"}` to
each of an app's webhook URLs, at least once, in log order per room and URL,
retrying with exponential backoff until a dead-letter state. Headers:
- `arc-webhook-id`: the event id, the same on every retry (drop duplicates by it);
- `arc-timestamp`: unix seconds when this attempt was signed;
- `arc-signature`: `v1=<hex HMAC-SHA256 under the app secret of "<arc-timestamp>.<raw body>">`;
  several comma-separated `v1=` values may appear while a secret rotates;
  accept when one matches, in constant time, and the timestamp is within 5 minutes;
- `arc-webhook-attempt`: 1, 2, ….
Answer 2xx to acknowledge."#;

#[derive(OpenApi)]
#[openapi(
    info(title = "Arc control plane API", description = DESCRIPTION, license(name = "Apache-2.0")),
    paths(
        super::healthz,
        super::metrics::metrics,
        super::readyz,
        super::status,
        super::list_nodes,
        super::drain_node,
        super::undrain_node,
        super::rebuild_projection,
        apps::create_app,
        apps::list_apps,
        apps::get_app,
        apps::delete_app,
        apps::disable_app,
        apps::enable_app,
        apps::rotate_secret,
        apps::set_quotas,
        apps::set_webhooks,
        apps::list_deliveries,
        apps::get_delivery,
        apps::redeliver,
        apps::mint_token,
        apps::revoke_token,
        rooms::join_with_token,
        rooms::create_room,
        rooms::list_rooms,
        rooms::get_room,
        rooms::close_room,
        rooms::set_room_metadata,
        rooms::list_participants,
        rooms::join_room,
        rooms::get_participant,
        rooms::leave_room,
        rooms::kick,
        rooms::set_permissions,
        rooms::set_participant_metadata,
        rooms::mute_track,
        whip::whip_post,
        whip::whip_patch,
        whip::whip_delete,
        whip::whep_post,
        rtc::rtc,
        dev::dev_token,
        whip::whep_patch,
        whip::whep_delete,
        events::list_events,
        events::get_event,
        events::follow_events,
    ),
    modifiers(&Security),
    tags(
        (name = "apps", description = "Applications: credentials, quotas (admin key; an app may read itself and rotate its secret)"),
        (name = "tokens", description = "Access tokens: JWT HS256 under the app secret"),
        (name = "rooms", description = "Rooms: open, list, close, metadata; joining with a token"),
        (name = "participants", description = "Participants: admit, leave, kick, permissions, metadata, mute"),
        (name = "webhooks", description = "Webhook endpoints and their deliveries"),
        (name = "nodes", description = "Media nodes"),
        (name = "events", description = "The event log, read-only (admin key): pages, tails, one event, a live follow"),
        (name = "media", description = "WHIP (publish) and WHEP (play): SDP offer in, SDP answer out; CORS enabled"),
        (name = "status", description = "Health and progress"),
    )
)]
struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut admin = Http::new(HttpAuthScheme::Bearer);
        admin.description = Some("The admin key".into());
        components.add_security_scheme("admin", SecurityScheme::Http(admin));
        let mut app = Http::new(HttpAuthScheme::Basic);
        app.description = Some("app_key:app_secret".into());
        components.add_security_scheme("app", SecurityScheme::Http(app));
        let mut participant = Http::new(HttpAuthScheme::Bearer);
        participant.bearer_format = Some("JWT".into());
        participant.description = Some("An access token from POST /v1/tokens".into());
        components.add_security_scheme("participant", SecurityScheme::Http(participant));
    }
}

/// The document.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    // The bounds on input, from the one table every check uses.
    let description = doc.info.description.take().unwrap_or_default();
    doc.info.description = Some(format!(
        "{description}\n\n## Limits\nInput beyond a bound is refused with 400 `invalid_argument` naming the field (unless said otherwise):\n\n{}",
        arc_events::limits::markdown().trim_end()
    ));
    doc
}

/// The document as pretty JSON (what `schemas/openapi.json` holds), with a final newline.
pub fn openapi_json() -> String {
    let mut text = document().to_pretty_json().unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    text.push('\n');
    text
}

/// `GET /v1/openapi.json`.
pub(crate) async fn serve_json() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], openapi_json()).into_response()
}

/// `GET /docs`: the interactive reference.
pub(crate) async fn serve_docs() -> Html<&'static str> {
    Html(include_str!("docs.html"))
}
