//! Apps (AppKey/AppSecret, quotas, webhook endpoints), token minting and
//! revocation, and webhook delivery records over HTTP: parse, authorize,
//! call `crate::usecase::apps`, map.

use std::sync::Arc;

use arc_auth::token::{self, MintRequest};
use arc_events::app::Quotas;
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::auth::{Principal, authenticate, load_app};
use super::error::{ApiError, ApiResult, ErrorBody, PendingBody};
use super::{ApiState, check_limit, iso, parse_body};
use crate::projection::apps::AppRow;
use crate::usecase::apps as uc;

/// An app as the API shows it (never its secret).
#[derive(Debug, Serialize, ToSchema)]
pub struct AppDto {
    pub app_id: String,
    /// The AppKey: the same as `app_id`.
    pub app_key: String,
    pub name: String,
    pub state: String,
    pub disabled_reason: Option<String>,
    pub quotas: Quotas,
    /// Webhook endpoint URLs.
    pub webhooks: Vec<String>,
    /// Until when the previous secret still works, after a rotation.
    pub previous_secret_valid_until: Option<String>,
    pub usage: Usage,
    pub created_at: String,
    pub updated_at: String,
}

/// What an app uses now (from the read models).
#[derive(Debug, Serialize, Default, ToSchema)]
pub struct Usage {
    pub rooms_open: i64,
    pub participants: i64,
}

fn quotas_of(r: &AppRow) -> Quotas {
    let q = |v: Option<i64>| v.and_then(|v| u32::try_from(v).ok());
    Quotas {
        max_rooms: q(r.max_rooms),
        max_participants_per_room: q(r.max_participants_per_room),
        max_participants: q(r.max_participants),
    }
}

/// Open rooms and participants of an app, from the rooms read model.
pub(crate) async fn usage(state: &ApiState, app_id: &str) -> ApiResult<Usage> {
    let u = crate::usecase::queries::usage(&state.db, app_id).await?;
    Ok(Usage { rooms_open: u.rooms_open, participants: u.participants })
}

async fn dto(state: &ApiState, r: AppRow) -> ApiResult<AppDto> {
    let usage = usage(state, &r.app_id).await?;
    let now = chrono::Utc::now().timestamp_millis();
    Ok(AppDto {
        quotas: quotas_of(&r),
        webhooks: serde_json::from_str(&r.webhooks).unwrap_or_default(),
        previous_secret_valid_until: r.previous_valid_until_ms.filter(|t| *t > now).map(iso),
        app_key: r.app_id.clone(),
        app_id: r.app_id,
        name: r.name,
        state: r.state,
        disabled_reason: r.disabled_reason,
        usage,
        created_at: iso(r.created_at_ms),
        updated_at: iso(r.updated_at_ms),
    })
}

async fn existing_app(state: &ApiState, app_id: &str) -> ApiResult<AppRow> {
    Ok(uc::existing_app(state, app_id).await?)
}

/// A new app.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateApp {
    /// Display name, 1..=128 characters.
    name: String,
    #[serde(default)]
    quotas: Quotas,
    /// Webhook endpoint URLs (`http://` or `https://`, at most 8).
    #[serde(default)]
    webhooks: Vec<String>,
}

/// The created app with its credentials (the secret is shown only here).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CreatedApp {
    app: AppDto,
    /// The AppKey (HTTP Basic user name; the tokens' `iss`).
    app_key: String,
    /// The AppSecret (HTTP Basic password; signs tokens and webhooks). Shown once.
    app_secret: String,
    note: &'static str,
}

/// A page of apps.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AppList {
    apps: Vec<AppDto>,
    /// Pass as `after` for the next page; `null` on the last page.
    next_after: Option<String>,
}

/// The app after a rotation, and its new secret (shown once).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RotatedSecret {
    app: AppDto,
    app_secret: String,
    /// Until when the previous secret keeps working (RFC 3339).
    previous_secret_valid_until: Option<String>,
}

/// A minted access token.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct MintedToken {
    /// The JWT (HS256).
    token: String,
    /// The token id (revoke it with this).
    jti: String,
    app_id: String,
    identity: String,
    room: String,
    grants: token::Grants,
    /// RFC 3339.
    expires_at: Option<String>,
}

/// A revoked token id.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Revoked {
    jti: String,
    revoked: bool,
}

/// A page of webhook deliveries.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DeliveryList {
    deliveries: Vec<arc_webhooks::Delivery>,
    /// Pass as `after` for the next page; `null` on the last page.
    next_after: Option<String>,
}

/// Create an app.
///
/// Returns its AppKey and AppSecret; the secret is shown only in this answer
/// (it is stored sealed with the master key).
#[utoipa::path(post, path = "/v1/apps", tag = "apps", request_body = CreateApp,
    security(("admin" = [])),
    responses(
        (status = 201, description = "Created", body = CreatedApp),
        (status = 400, description = "Bad input (the field is named)", body = ErrorBody),
        (status = 401, description = "No or wrong credentials", body = ErrorBody),
        (status = 403, description = "Not the admin key", body = ErrorBody),
        (status = 503, description = "The event log or read models are unreachable", body = ErrorBody),
    ))]
pub(crate) async fn create_app(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let who = authenticate(&state, &headers).await?;
    who.require_admin()?;
    let req: CreateApp = parse_body(&body)?;
    let uc::Created { app_id, secret, at, position } =
        uc::create_app(&state, &who.actor(), req.name.clone(), req.quotas, req.webhooks.clone()).await?;
    let app = if state.settle(position).await {
        dto(&state, existing_app(&state, app_id.as_str()).await?).await?
    } else {
        // The read models lag (e.g. just after a log outage): the secret is
        // shown only now, so answer from what this command created.
        let at = at.to_rfc3339();
        AppDto {
            app_id: app_id.to_string(),
            app_key: app_id.to_string(),
            name: req.name,
            state: "active".into(),
            disabled_reason: None,
            quotas: req.quotas,
            webhooks: req.webhooks,
            previous_secret_valid_until: None,
            usage: Usage::default(),
            created_at: at.clone(),
            updated_at: at,
        }
    };
    let body = CreatedApp {
        app,
        app_key: app_id.to_string(),
        app_secret: secret.expose().to_owned(),
        note: "the app secret is shown only now; store it safely",
    };
    Ok((StatusCode::CREATED, [(header::LOCATION, format!("/v1/apps/{app_id}"))], Json(body)).into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListApps {
    /// `active`, `disabled` or `deleted`.
    state: Option<String>,
    /// Page size, 1..=500 (default 100).
    limit: Option<i64>,
    /// The last `app_id` of the previous page.
    after: Option<String>,
}

/// List apps.
#[utoipa::path(get, path = "/v1/apps", tag = "apps", params(ListApps),
    security(("admin" = [])),
    responses(
        (status = 200, description = "A page of apps, ordered by id", body = AppList),
        (status = 400, description = "Bad query parameter", body = ErrorBody),
        (status = 401, description = "No or wrong credentials", body = ErrorBody),
        (status = 403, description = "Not the admin key", body = ErrorBody),
    ))]
pub(crate) async fn list_apps(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Query(q): Query<ListApps>,
) -> ApiResult<Json<AppList>> {
    authenticate(&state, &headers).await?.require_admin()?;
    let limit = check_limit(q.limit)?;
    if let Some(s) = &q.state
        && !["active", "disabled", "deleted"].contains(&s.as_str())
    {
        return Err(ApiError::bad_request("state", "must be active, disabled or deleted"));
    }
    let rows = crate::usecase::queries::apps(
        &state.db,
        q.state.as_deref().unwrap_or_default(),
        q.after.as_deref().unwrap_or_default(),
        limit,
    )
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        out.push(dto(&state, row).await?);
    }
    let next = (out.len() as i64 == limit).then(|| out.last().map(|a| a.app_id.clone())).flatten();
    Ok(Json(AppList { apps: out, next_after: next }))
}

/// Get an app, with its quotas and current usage.
#[utoipa::path(get, path = "/v1/apps/{app_id}", tag = "apps", params(("app_id" = String, Path, description = "The app id (= AppKey)")),
    security(("admin" = []), ("app" = [])),
    responses(
        (status = 200, description = "The app", body = AppDto),
        (status = 401, description = "No or wrong credentials", body = ErrorBody),
        (status = 404, description = "No such app (or not yours)", body = ErrorBody),
    ))]
pub(crate) async fn get_app(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(app_id): Path<String>,
) -> ApiResult<Json<AppDto>> {
    authenticate(&state, &headers).await?.require_app(&app_id)?;
    let row = load_app(&state, &app_id).await?.ok_or_else(|| ApiError::not_found("app_not_found", "app not found"))?;
    Ok(Json(dto(&state, row).await?))
}

async fn run_app_command(
    state: &ApiState,
    who: &Principal,
    app_id: &str,
    change: uc::AppChange,
) -> ApiResult<Json<AppDto>> {
    let position = uc::change_app(state, &who.actor(), app_id, change).await?;
    state.settled(position, &format!("/v1/apps/{app_id}")).await?;
    let row = load_app(state, app_id).await?.ok_or_else(|| ApiError::not_found("app_not_found", "app not found"))?;
    Ok(Json(dto(state, row).await?))
}

/// Why an app is disabled.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Disable {
    #[serde(default)]
    reason: Option<String>,
}

/// Disable an app: its credentials and tokens stop working.
#[utoipa::path(post, path = "/v1/apps/{app_id}/disable", tag = "apps", params(("app_id" = String, Path, description = "The app id (= AppKey)")),
    request_body(content = Option<Disable>, description = "Optional; an empty body reads as `{}`"),
    security(("admin" = [])),
    responses(
        (status = 202, description = "Accepted into the log, but this instance's read models have not applied it yet (e.g. just after a log outage): poll `Location` (the position is in `Arc-Position`)", body = PendingBody),
        (status = 200, description = "The app", body = AppDto),
        (status = 400, description = "Bad input", body = ErrorBody),
        (status = 401, description = "No or wrong credentials", body = ErrorBody),
        (status = 403, description = "Not the admin key", body = ErrorBody),
        (status = 404, description = "No such app", body = ErrorBody),
        (status = 409, description = "Not possible in the app's state (e.g. deleted)", body = ErrorBody),
    ))]
pub(crate) async fn disable_app(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(app_id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<AppDto>> {
    let who = authenticate(&state, &headers).await?;
    who.require_admin()?;
    let req: Disable = parse_body(&body)?;
    run_app_command(&state, &who, &app_id, uc::AppChange::Disable { reason: req.reason }).await
}

/// Enable a disabled app.
#[utoipa::path(post, path = "/v1/apps/{app_id}/enable", tag = "apps", params(("app_id" = String, Path, description = "The app id (= AppKey)")),
    security(("admin" = [])),
    responses(
        (status = 202, description = "Accepted into the log, but this instance's read models have not applied it yet (e.g. just after a log outage): poll `Location` (the position is in `Arc-Position`)", body = PendingBody),
        (status = 200, description = "The app", body = AppDto),
        (status = 401, description = "No or wrong credentials", body = ErrorBody),
        (status = 403, description = "Not the admin key", body = ErrorBody),
        (status = 404, description = "No such app", body = ErrorBody),
        (status = 409, description = "Not possible in the app's state", body = ErrorBody),
    ))]
pub(crate) async fn enable_app(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(app_id): Path<String>,
) -> ApiResult<Json<AppDto>> {
    let who = authenticate(&state, &headers).await?;
    who.require_admin()?;
    run_app_command(&state, &who, &app_id, uc::AppChange::Enable).await
}

/// Delete an app for good (its rooms stay in the log).
#[utoipa::path(delete, path = "/v1/apps/{app_id}", tag = "apps", params(("app_id" = String, Path, description = "The app id (= AppKey)")),
    security(("admin" = [])),
    responses(
        (status = 202, description = "Accepted into the log, but this instance's read models have not applied it yet (e.g. just after a log outage): poll `Location` (the position is in `Arc-Position`)", body = PendingBody),
        (status = 200, description = "The deleted app", body = AppDto),
        (status = 401, description = "No or wrong credentials", body = ErrorBody),
        (status = 403, description = "Not the admin key", body = ErrorBody),
        (status = 404, description = "No such app", body = ErrorBody),
        (status = 409, description = "Already deleted", body = ErrorBody),
    ))]
pub(crate) async fn delete_app(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(app_id): Path<String>,
) -> ApiResult<Json<AppDto>> {
    let who = authenticate(&state, &headers).await?;
    who.require_admin()?;
    run_app_command(&state, &who, &app_id, uc::AppChange::Delete).await
}

/// How long the previous secret keeps working.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Rotate {
    /// Grace period in seconds (default: the server's `secret_grace_s`).
    #[serde(default)]
    grace_s: Option<u32>,
}

/// Rotate an app's secret.
///
/// Returns the new secret once; the previous one keeps working for the grace period.
#[utoipa::path(post, path = "/v1/apps/{app_id}/rotate-secret", tag = "apps", params(("app_id" = String, Path, description = "The app id (= AppKey)")),
    request_body(content = Option<Rotate>, description = "Optional"),
    security(("admin" = []), ("app" = [])),
    responses(
        (status = 200, description = "The new secret", body = RotatedSecret),
        (status = 400, description = "Bad input", body = ErrorBody),
        (status = 401, description = "No or wrong credentials", body = ErrorBody),
        (status = 404, description = "No such app", body = ErrorBody),
        (status = 409, description = "Not possible in the app's state", body = ErrorBody),
    ))]
pub(crate) async fn rotate_secret(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(app_id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<RotatedSecret>> {
    let who = authenticate(&state, &headers).await?;
    who.require_app(&app_id)?;
    let req: Rotate = parse_body(&body)?;
    let uc::Rotated { secret, grace_s, at, position } =
        uc::rotate_secret(&state, &who.actor(), &app_id, req.grace_s).await?;
    // The new secret is shown only now: even when the read models lag, answer
    // with it (and the grace as this command set it), never a 202 or 404.
    let settled = state.settle(position).await;
    let row = load_app(&state, &app_id).await?.ok_or_else(|| ApiError::not_found("app_not_found", "app not found"))?;
    let mut app = dto(&state, row).await?;
    if !settled {
        app.previous_secret_valid_until = Some((at + chrono::Duration::seconds(i64::from(grace_s))).to_rfc3339());
    }
    let previous_secret_valid_until = app.previous_secret_valid_until.clone();
    Ok(Json(RotatedSecret { app, app_secret: secret.expose().to_owned(), previous_secret_valid_until }))
}

/// Replace an app's quotas (a limit left out is no limit).
#[utoipa::path(put, path = "/v1/apps/{app_id}/quotas", tag = "apps", params(("app_id" = String, Path, description = "The app id (= AppKey)")), request_body = Quotas,
    security(("admin" = [])),
    responses(
        (status = 202, description = "Accepted into the log, but this instance's read models have not applied it yet (e.g. just after a log outage): poll `Location` (the position is in `Arc-Position`)", body = PendingBody),
        (status = 200, description = "The app", body = AppDto),
        (status = 400, description = "Bad input", body = ErrorBody),
        (status = 401, description = "No or wrong credentials", body = ErrorBody),
        (status = 403, description = "Not the admin key", body = ErrorBody),
        (status = 404, description = "No such app", body = ErrorBody),
    ))]
pub(crate) async fn set_quotas(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(app_id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<AppDto>> {
    let who = authenticate(&state, &headers).await?;
    who.require_admin()?;
    let quotas: Quotas = parse_body(&body)?;
    run_app_command(&state, &who, &app_id, uc::AppChange::Quotas(quotas)).await
}

/// An app's webhook endpoints.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Webhooks {
    /// `http://` or `https://` URLs, at most 8; empty removes all.
    urls: Vec<String>,
}

/// Replace an app's webhook endpoints.
#[utoipa::path(put, path = "/v1/apps/{app_id}/webhooks", tag = "webhooks", params(("app_id" = String, Path, description = "The app id (= AppKey)")), request_body = Webhooks,
    security(("admin" = []), ("app" = [])),
    responses(
        (status = 202, description = "Accepted into the log, but this instance's read models have not applied it yet (e.g. just after a log outage): poll `Location` (the position is in `Arc-Position`)", body = PendingBody),
        (status = 200, description = "The app", body = AppDto),
        (status = 400, description = "Bad URL (named)", body = ErrorBody),
        (status = 401, description = "No or wrong credentials", body = ErrorBody),
        (status = 404, description = "No such app", body = ErrorBody),
    ))]
pub(crate) async fn set_webhooks(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(app_id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<AppDto>> {
    let who = authenticate(&state, &headers).await?;
    who.require_app(&app_id)?;
    let req: Webhooks = parse_body(&body)?;
    run_app_command(&state, &who, &app_id, uc::AppChange::Webhooks(req.urls)).await
}

/// What to put in the token.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Mint {
    /// Only with the admin key: which app mints.
    #[serde(default)]
    app_id: Option<String>,
    #[serde(flatten)]
    request: MintRequest,
}

/// Mint an access token.
///
/// An app server authenticates with HTTP Basic `app_key:app_secret` (or the
/// admin key, naming `app_id`). The token is a JWT (HS256 under the app
/// secret) with `iss` = app key, `sub` = identity, `room`, `exp`, `nbf`,
/// `iat`, `jti` and `grants`.
#[utoipa::path(post, path = "/v1/tokens", tag = "tokens", request_body = Mint,
    security(("app" = []), ("admin" = [])),
    responses(
        (status = 201, description = "The token", body = MintedToken),
        (status = 400, description = "Bad input (e.g. ttl_s over the server's limit)", body = ErrorBody),
        (status = 401, description = "No or wrong credentials", body = ErrorBody),
        (status = 403, description = "The app is disabled, or an access token was used", body = ErrorBody),
        (status = 404, description = "No such app", body = ErrorBody),
    ))]
pub(crate) async fn mint_token(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let who = authenticate(&state, &headers).await?;
    let req: Mint = parse_body(&body)?;
    let app_id = who.app_scope(req.app_id.as_deref())?;
    let (token, claims) = uc::mint_token(&state, &who.actor(), &app_id, &req.request).await?;
    let body = MintedToken {
        token,
        expires_at: chrono::DateTime::from_timestamp(claims.exp, 0).map(|t| t.to_rfc3339()),
        jti: claims.jti,
        app_id: claims.iss,
        identity: claims.sub,
        room: claims.room,
        grants: claims.grants,
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// A token to refuse from now on.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Revoke {
    /// Only with the admin key: whose token.
    #[serde(default)]
    app_id: Option<String>,
    /// The token's `jti`.
    jti: String,
    /// When the token expires; defaults to the longest allowed lifetime from now.
    #[serde(default)]
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default)]
    reason: Option<String>,
}

/// Revoke a token by its `jti`: every later use is refused with `token_revoked`.
#[utoipa::path(post, path = "/v1/tokens/revoke", tag = "tokens", request_body = Revoke,
    security(("app" = []), ("admin" = [])),
    responses(
        (status = 200, description = "Revoked", body = Revoked),
        (status = 400, description = "Bad input", body = ErrorBody),
        (status = 401, description = "No or wrong credentials", body = ErrorBody),
        (status = 403, description = "Not the app's credentials", body = ErrorBody),
        (status = 409, description = "The app is deleted", body = ErrorBody),
    ))]
pub(crate) async fn revoke_token(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<Revoked>> {
    let who = authenticate(&state, &headers).await?;
    let req: Revoke = parse_body(&body)?;
    let app_id = who.app_scope(req.app_id.as_deref())?;
    let position = uc::revoke_token(&state, &who.actor(), &app_id, req.jti.clone(), req.expires_at, req.reason).await?;
    state.settle(position).await;
    Ok(Json(Revoked { jti: req.jti, revoked: true }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListDeliveries {
    /// `pending`, `delivered` or `dead`.
    state: Option<String>,
    /// Page size, 1..=500 (default 100).
    limit: Option<i64>,
    /// The last `delivery_id` of the previous page.
    after: Option<String>,
}

/// List an app's webhook deliveries (each attempt is an event; this is their read model).
#[utoipa::path(get, path = "/v1/apps/{app_id}/webhooks/deliveries", tag = "webhooks", params(("app_id" = String, Path, description = "The app id (= AppKey)"), ListDeliveries),
    security(("admin" = []), ("app" = [])),
    responses(
        (status = 200, description = "A page of deliveries, oldest first", body = DeliveryList),
        (status = 400, description = "Bad query parameter", body = ErrorBody),
        (status = 401, description = "No or wrong credentials", body = ErrorBody),
        (status = 404, description = "No such app, or no such `after` delivery", body = ErrorBody),
    ))]
pub(crate) async fn list_deliveries(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(app_id): Path<String>,
    Query(q): Query<ListDeliveries>,
) -> ApiResult<Json<DeliveryList>> {
    authenticate(&state, &headers).await?.require_app(&app_id)?;
    let limit = check_limit(q.limit)?;
    let list =
        crate::usecase::webhooks::deliveries(&state, &app_id, q.state.as_deref(), limit, q.after.as_deref()).await?;
    let next = (list.len() as i64 == limit).then(|| list.last().map(|d| d.delivery_id.clone())).flatten();
    Ok(Json(DeliveryList { deliveries: list, next_after: next }))
}

async fn delivery_for(state: &ApiState, who: &Principal, delivery_id: &str) -> ApiResult<arc_webhooks::Delivery> {
    let d = crate::usecase::webhooks::delivery(state, delivery_id)
        .await?
        .ok_or_else(|| ApiError::not_found("delivery_not_found", "delivery not found"))?;
    who.require_app(&d.app_id).map_err(|_| ApiError::not_found("delivery_not_found", "delivery not found"))?;
    Ok(d)
}

/// Get one webhook delivery.
#[utoipa::path(get, path = "/v1/webhooks/deliveries/{delivery_id}", tag = "webhooks", params(("delivery_id" = String, Path, description = "The delivery id (`wd_…`)")),
    security(("admin" = []), ("app" = [])),
    responses(
        (status = 200, description = "The delivery", body = arc_webhooks::Delivery),
        (status = 401, description = "No or wrong credentials", body = ErrorBody),
        (status = 404, description = "No such delivery (or not yours)", body = ErrorBody),
    ))]
pub(crate) async fn get_delivery(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(delivery_id): Path<String>,
) -> ApiResult<Json<arc_webhooks::Delivery>> {
    let who = authenticate(&state, &headers).await?;
    Ok(Json(delivery_for(&state, &who, &delivery_id).await?))
}

/// Redeliver a dead-lettered delivery (its attempts start again from 1).
#[utoipa::path(post, path = "/v1/webhooks/deliveries/{delivery_id}/redeliver", tag = "webhooks", params(("delivery_id" = String, Path, description = "The delivery id (`wd_…`)")),
    security(("admin" = []), ("app" = [])),
    responses(
        (status = 200, description = "The delivery, pending again", body = arc_webhooks::Delivery),
        (status = 401, description = "No or wrong credentials", body = ErrorBody),
        (status = 404, description = "No such delivery", body = ErrorBody),
        (status = 409, description = "Only dead-lettered deliveries can be redelivered", body = ErrorBody),
    ))]
pub(crate) async fn redeliver(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(delivery_id): Path<String>,
) -> ApiResult<Json<arc_webhooks::Delivery>> {
    let who = authenticate(&state, &headers).await?;
    delivery_for(&state, &who, &delivery_id).await?;
    let position = crate::usecase::webhooks::redeliver(&state, &delivery_id, who.actor()).await?;
    if let Some(rx) = &state.webhooks {
        let mut rx = rx.clone();
        let _ = tokio::time::timeout(super::SETTLE_WAIT_MAX, rx.wait_for(|p| *p >= position)).await;
    }
    Ok(Json(delivery_for(&state, &who, &delivery_id).await?))
}
