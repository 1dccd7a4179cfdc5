//! Who is calling: an operator (admin key), an app server (HTTP Basic with its
//! AppKey/AppSecret) or a participant (Bearer access token), and what each may do.

use arc_auth::secret::AppSecret;
use arc_auth::token::{self, Claims, TokenError};
use arc_events::{Actor, AppId, ParticipantIdentity};
use axum::http::{HeaderMap, header};
use base64::Engine as _;

use super::ApiState;
use super::error::{ApiError, ApiResult};
use crate::projection::apps::AppRow;
use crate::projection::rooms::RoomRow;

/// An authenticated caller.
#[derive(Debug, Clone)]
pub(crate) enum Principal {
    /// Holds an admin key (its name): may do anything.
    Admin(String),
    /// An app server: may manage its own app's rooms, tokens and webhooks.
    App(AppId),
    /// A participant with a verified access token.
    Participant { app: Box<AppRow>, claims: Box<Claims> },
}

impl Principal {
    /// Who the log records as having done it.
    pub(crate) fn actor(&self) -> Actor {
        match self {
            Self::Admin(name) => Actor::Admin { name: Some(name.clone()) },
            Self::App(app_id) => Actor::App { app_id: app_id.clone() },
            Self::Participant { app, claims } => {
                match (AppId::parse(&app.app_id), ParticipantIdentity::parse(&claims.sub)) {
                    (Ok(app_id), Ok(identity)) => Actor::Participant { app_id, identity },
                    _ => Actor::Unknown,
                }
            }
        }
    }

    /// The app whose resources this caller manages: its own, or (admin) the one named.
    pub(crate) fn app_scope(&self, named: Option<&str>) -> ApiResult<AppId> {
        let parse = |s: &str| AppId::parse(s).map_err(|e| ApiError::bad_request("app_id", e));
        match (self, named) {
            (Self::Admin(_), Some(id)) => parse(id),
            (Self::Admin(_), None) => Err(ApiError::bad_request("app_id", "required with the admin key")),
            (Self::App(own), None) => Ok(own.clone()),
            (Self::App(own), Some(id)) if id == own.as_str() => Ok(own.clone()),
            (Self::App(_), Some(_)) => Err(ApiError::forbidden("forbidden", "an app may only act on itself")),
            (Self::Participant { .. }, _) => {
                Err(ApiError::forbidden("forbidden", "this needs the app's credentials, not an access token"))
            }
        }
    }

    /// Whether the caller may moderate `room` (see and change it and its participants).
    pub(crate) fn require_moderator(&self, room: &RoomRow) -> ApiResult<()> {
        let ok = match self {
            Self::Admin(_) => true,
            Self::App(own) => own.as_str() == room.app_id,
            Self::Participant { app, claims } => {
                claims.grants.admin && app.app_id == room.app_id && claims.room == room.name
            }
        };
        if ok {
            Ok(())
        } else if matches!(self, Self::Participant { .. }) {
            Err(ApiError::forbidden("permission_denied", "the token has no admin grant for this room"))
        } else {
            Err(ApiError::not_found("room_not_found", "room not found"))
        }
    }

    pub(crate) fn require_admin(&self) -> ApiResult<()> {
        match self {
            Self::Admin(_) => Ok(()),
            _ => Err(ApiError::forbidden("forbidden", "this needs the admin key")),
        }
    }

    /// Admin, or the app itself.
    pub(crate) fn require_app(&self, app_id: &str) -> ApiResult<()> {
        match self {
            Self::Admin(_) => Ok(()),
            Self::App(own) if own.as_str() == app_id => Ok(()),
            Self::App(_) => Err(ApiError::not_found("app_not_found", "app not found")),
            Self::Participant { .. } => Err(ApiError::forbidden("forbidden", "this needs the app's credentials")),
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The access token of `Authorization: Bearer <token>` (WHIP/WHEP and
/// `POST /v1/join`, where only a participant may call).
pub(crate) fn bearer_token(headers: &HeaderMap) -> ApiResult<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| ApiError::unauthenticated("unauthenticated", "send Authorization: Bearer <access token>"))
}

/// Authenticates the `Authorization` header.
pub(crate) async fn authenticate(state: &ApiState, headers: &HeaderMap) -> ApiResult<Principal> {
    let value = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).ok_or_else(|| {
        ApiError::unauthenticated(
            "unauthenticated",
            "send Authorization: Bearer <admin key or access token>, or Basic <app key:app secret>",
        )
    })?;
    if let Some(presented) = value.strip_prefix("Bearer ") {
        let presented = presented.trim();
        // Every key is compared, in constant time, whichever matches.
        let mut admin = None;
        for k in &state.admin_keys {
            if constant_time_eq(presented.as_bytes(), k.key.as_bytes()) {
                admin = Some(k.name.clone());
            }
        }
        if let Some(name) = admin {
            return Ok(Principal::Admin(name));
        }
        if presented.contains('.') {
            let (app, claims) = verify_token(state, presented).await?;
            return Ok(Principal::Participant { app: Box::new(app), claims: Box::new(claims) });
        }
        return Err(ApiError::unauthenticated("unauthenticated", "the admin key is wrong"));
    }
    if let Some(encoded) = value.strip_prefix("Basic ") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| ApiError::unauthenticated("unauthenticated", "Basic credentials are not base64 text"))?;
        let (key, secret) = decoded
            .split_once(':')
            .ok_or_else(|| ApiError::unauthenticated("unauthenticated", "Basic credentials need app_key:app_secret"))?;
        let app = load_app(state, key).await?.ok_or_else(bad_app_credentials)?;
        if app.state == "deleted" {
            return Err(bad_app_credentials());
        }
        let secrets = app_secrets(state, &app)?;
        if !secrets.iter().any(|s| s.matches(secret)) {
            return Err(bad_app_credentials());
        }
        if app.state == "disabled" {
            return Err(ApiError::forbidden("app_disabled", "the app is disabled"));
        }
        let app_id = AppId::parse(&app.app_id).map_err(|_| bad_app_credentials())?;
        return Ok(Principal::App(app_id));
    }
    Err(ApiError::unauthenticated("unauthenticated", "unsupported Authorization scheme; use Bearer or Basic"))
}

fn bad_app_credentials() -> ApiError {
    ApiError::unauthenticated("bad_credentials", "unknown app key or wrong app secret")
}

/// The apps read-model row of `app_id`.
pub(crate) async fn load_app(state: &ApiState, app_id: &str) -> ApiResult<Option<AppRow>> {
    Ok(crate::usecase::queries::app(&state.db, app_id).await?)
}

/// The app's valid secrets, current first, then the rotated-out one while in its grace period.
pub(crate) fn app_secrets(state: &ApiState, app: &AppRow) -> ApiResult<Vec<AppSecret>> {
    Ok(crate::usecase::apps::app_secrets(state, app)?)
}

fn token_error(e: &TokenError) -> ApiError {
    ApiError::unauthenticated(e.code(), e.to_string())
}

/// Verifies an access token: its app, signature, times, and that it was not revoked.
pub(crate) async fn verify_token(state: &ApiState, presented: &str) -> ApiResult<(AppRow, Claims)> {
    let issuer = token::peek_issuer(presented, &state.token_policy).map_err(|e| token_error(&e))?;
    let app = load_app(state, &issuer)
        .await?
        .filter(|a| a.state != "deleted")
        .ok_or_else(|| ApiError::unauthenticated("token_unknown_app", "the token's issuer is not a known app"))?;
    let secrets = app_secrets(state, &app)?;
    let refs: Vec<&AppSecret> = secrets.iter().collect();
    let claims =
        token::verify(presented, &refs, &state.token_policy, chrono::Utc::now()).map_err(|e| token_error(&e))?;
    if app.state == "disabled" {
        return Err(ApiError::forbidden("app_disabled", "the token's app is disabled"));
    }
    if crate::usecase::queries::token_revoked(&state.db, &app.app_id, &claims.jti).await? {
        return Err(ApiError::unauthenticated("token_revoked", "the token was revoked"));
    }
    Ok((app, claims))
}
