//! `POST /v1/dev/token`: development tokens, so `arc-control dev` and two
//! browser windows make a meeting without minting tokens by hand. Served by
//! `dev` only (404 in `serve`), and only to requests from this machine
//! (loopback), under the app named `dev` (made on first use).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ApiState;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::parse_body;

/// Who and where.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DevTokenRequest {
    /// Room name.
    room: String,
    /// Participant identity (`[A-Za-z0-9_-]{1,64}`); a random `guest-…` when absent.
    #[serde(default)]
    identity: Option<String>,
    /// Display name.
    #[serde(default)]
    name: Option<String>,
}

/// A token with the join, publish, subscribe and publish_data grants.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DevToken {
    token: String,
    identity: String,
    room: String,
}

/// A development token for a room (`arc-control dev` only, requests from
/// this machine only): what `/meet` uses when it is opened without one.
#[utoipa::path(post, path = "/v1/dev/token", tag = "rooms", request_body = DevTokenRequest,
    responses(
        (status = 201, description = "Minted", body = DevToken),
        (status = 400, description = "Bad input (named)", body = ErrorBody),
        (status = 403, description = "The request did not come from this machine", body = ErrorBody),
        (status = 404, description = "Not `arc-control dev`", body = ErrorBody),
    ))]
pub(crate) async fn dev_token(
    State(state): State<Arc<ApiState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> ApiResult<Response> {
    if !state.dev_tokens {
        return Err(ApiError::not_found("not_found", "development tokens exist in arc-control dev only"));
    }
    if !peer.ip().is_loopback() {
        return Err(ApiError::forbidden("not_local", "development tokens are served to this machine only"));
    }
    let req: DevTokenRequest = parse_body(&body)?;
    let identity = match req.identity {
        Some(i) => i,
        None => {
            use rand::Rng;
            const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
            let mut rng = rand::rng();
            let tail: String = (0..6).map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())])).collect();
            format!("guest-{tail}")
        }
    };
    let token = crate::usecase::apps::mint_dev_token(&state, &req.room, &identity, req.name).await?;
    Ok((StatusCode::CREATED, Json(DevToken { token, identity, room: req.room })).into_response())
}
