//! Apps (AppKey/AppSecret, quotas, webhook endpoints), token minting and
//! revocation, and webhook delivery records.

use std::sync::Arc;

use arc_auth::secret::AppSecret;
use arc_auth::token::{self, MintRequest};
use arc_events::aggregate::app::AppCommand;
use arc_events::app::{Quotas, SealedSecret};
use arc_events::{AggregateKind, AggregateRef, AppId};
use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::auth::{Principal, app_secrets, authenticate, load_app};
use super::error::{ApiError, ApiResult};
use super::{ApiState, check_limit, iso, meta, parse_body};
use crate::projection::apps::{self, AppRow};

/// An app as the API shows it (never its secret).
#[derive(Debug, Serialize)]
pub struct AppDto {
    pub app_id: String,
    /// The AppKey: the same as `app_id`.
    pub app_key: String,
    pub name: String,
    pub state: String,
    pub disabled_reason: Option<String>,
    pub quotas: Quotas,
    pub webhooks: Vec<String>,
    /// Until when the previous secret still works, after a rotation.
    pub previous_secret_valid_until: Option<String>,
    pub usage: Usage,
    pub created_at: String,
    pub updated_at: String,
}

/// What an app uses now (from the read models).
#[derive(Debug, Serialize, Default)]
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
    let (rooms_open, participants): (i64, Option<i64>) = sqlx::query_as(
        "SELECT COUNT(*), CAST(COALESCE(SUM(participant_count), 0) AS BIGINT) FROM rooms WHERE app_id = $1 AND state = 'open'",
    )
    .bind(app_id)
    .fetch_one(&state.db.pool)
    .await?;
    Ok(Usage { rooms_open, participants: participants.unwrap_or(0) })
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

fn app_ref(app_id: &str) -> ApiResult<AggregateRef> {
    AggregateRef::new(AggregateKind::App, app_id).map_err(|e| ApiError::bad_request("app_id", e))
}

fn seal(state: &ApiState, app_id: &AppId, secret: &AppSecret) -> SealedSecret {
    arc_auth::seal::seal(&state.master_key, secret.as_bytes(), app_id.as_str().as_bytes())
}

async fn existing_app(state: &ApiState, app_id: &str) -> ApiResult<AppRow> {
    load_app(state, app_id)
        .await?
        .filter(|a| a.state != "deleted")
        .ok_or_else(|| ApiError::not_found("app_not_found", "app not found"))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateApp {
    name: String,
    #[serde(default)]
    quotas: Quotas,
    #[serde(default)]
    webhooks: Vec<String>,
}

/// `POST /v1/apps` (admin): returns the secret once.
pub(crate) async fn create_app(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let who = authenticate(&state, &headers).await?;
    who.require_admin()?;
    let req: CreateApp = parse_body(&body)?;
    let app_id = AppId::generate();
    let secret = AppSecret::generate();
    let command = AppCommand::Create {
        name: req.name,
        secret: seal(&state, &app_id, &secret),
        quotas: req.quotas,
        webhooks: req.webhooks,
    };
    let done = state.apps.execute(&app_ref(app_id.as_str())?, &command, &meta(who.actor())).await?;
    state.settle(done.appended.map(|a| a.last)).await;
    let app = dto(&state, existing_app(&state, app_id.as_str()).await?).await?;
    let body = serde_json::json!({
        "app": app,
        "app_key": app_id,
        "app_secret": secret.expose(),
        "note": "the app secret is shown only now; store it safely",
    });
    Ok((StatusCode::CREATED, [(header::LOCATION, format!("/v1/apps/{app_id}"))], Json(body)).into_response())
}

#[derive(Debug, Deserialize)]
pub(crate) struct ListApps {
    state: Option<String>,
    limit: Option<i64>,
    after: Option<String>,
}

/// `GET /v1/apps` (admin).
pub(crate) async fn list_apps(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Query(q): Query<ListApps>,
) -> ApiResult<Json<serde_json::Value>> {
    authenticate(&state, &headers).await?.require_admin()?;
    let limit = check_limit(q.limit)?;
    if let Some(s) = &q.state
        && !["active", "disabled", "deleted"].contains(&s.as_str())
    {
        return Err(ApiError::bad_request("state", "must be active, disabled or deleted"));
    }
    let sql = format!(
        "SELECT {} FROM apps WHERE ($1 = '' OR state = $1) AND app_id > $2 ORDER BY app_id LIMIT $3",
        apps::COLUMNS.join(", ")
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(q.state.unwrap_or_default())
        .bind(q.after.unwrap_or_default())
        .bind(limit)
        .fetch_all(&state.db.pool)
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        out.push(dto(&state, apps::from_row(row)?).await?);
    }
    let next = (out.len() as i64 == limit).then(|| out.last().map(|a| a.app_id.clone())).flatten();
    Ok(Json(serde_json::json!({ "apps": out, "next_after": next })))
}

/// `GET /v1/apps/{app_id}` (admin, or the app itself).
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
    command: AppCommand,
) -> ApiResult<Json<AppDto>> {
    let done = state.apps.execute(&app_ref(app_id)?, &command, &meta(who.actor())).await?;
    state.settle(done.appended.map(|a| a.last)).await;
    let row = load_app(state, app_id).await?.ok_or_else(|| ApiError::not_found("app_not_found", "app not found"))?;
    Ok(Json(dto(state, row).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Disable {
    #[serde(default)]
    reason: Option<String>,
}

/// `POST /v1/apps/{app_id}/disable` (admin): its tokens and credentials stop working.
pub(crate) async fn disable_app(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(app_id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<AppDto>> {
    let who = authenticate(&state, &headers).await?;
    who.require_admin()?;
    let req: Disable = parse_body(&body)?;
    run_app_command(&state, &who, &app_id, AppCommand::Disable { reason: req.reason }).await
}

/// `POST /v1/apps/{app_id}/enable` (admin).
pub(crate) async fn enable_app(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(app_id): Path<String>,
) -> ApiResult<Json<AppDto>> {
    let who = authenticate(&state, &headers).await?;
    who.require_admin()?;
    run_app_command(&state, &who, &app_id, AppCommand::Enable).await
}

/// `DELETE /v1/apps/{app_id}` (admin).
pub(crate) async fn delete_app(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(app_id): Path<String>,
) -> ApiResult<Json<AppDto>> {
    let who = authenticate(&state, &headers).await?;
    who.require_admin()?;
    run_app_command(&state, &who, &app_id, AppCommand::Delete).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rotate {
    #[serde(default)]
    grace_s: Option<u32>,
}

/// `POST /v1/apps/{app_id}/rotate-secret` (admin, or the app itself): returns the new secret once.
pub(crate) async fn rotate_secret(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(app_id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<serde_json::Value>> {
    let who = authenticate(&state, &headers).await?;
    who.require_app(&app_id)?;
    let req: Rotate = parse_body(&body)?;
    let id = AppId::parse(&app_id).map_err(|e| ApiError::bad_request("app_id", e))?;
    let secret = AppSecret::generate();
    let command = AppCommand::RotateSecret {
        secret: seal(&state, &id, &secret),
        grace_s: req.grace_s.unwrap_or(state.secret_grace_s),
    };
    let Json(app) = run_app_command(&state, &who, &app_id, command).await?;
    Ok(Json(serde_json::json!({
        "app": app,
        "app_secret": secret.expose(),
        "previous_secret_valid_until": app.previous_secret_valid_until,
    })))
}

/// `PUT /v1/apps/{app_id}/quotas` (admin): replaces the quotas.
pub(crate) async fn set_quotas(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(app_id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<AppDto>> {
    let who = authenticate(&state, &headers).await?;
    who.require_admin()?;
    let quotas: Quotas = parse_body(&body)?;
    run_app_command(&state, &who, &app_id, AppCommand::SetQuotas { quotas }).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Webhooks {
    urls: Vec<String>,
}

/// `PUT /v1/apps/{app_id}/webhooks` (admin, or the app itself): replaces the endpoints.
pub(crate) async fn set_webhooks(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(app_id): Path<String>,
    body: Bytes,
) -> ApiResult<Json<AppDto>> {
    let who = authenticate(&state, &headers).await?;
    who.require_app(&app_id)?;
    let req: Webhooks = parse_body(&body)?;
    run_app_command(&state, &who, &app_id, AppCommand::SetWebhooks { urls: req.urls }).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Mint {
    /// Only with the admin key: which app mints.
    #[serde(default)]
    app_id: Option<String>,
    #[serde(flatten)]
    request: MintRequest,
}

/// `POST /v1/tokens` (the app with HTTP Basic, or admin naming `app_id`): mints an access token.
pub(crate) async fn mint_token(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let who = authenticate(&state, &headers).await?;
    let req: Mint = parse_body(&body)?;
    let app_id = who.app_scope(req.app_id.as_deref())?;
    let app = existing_app(&state, app_id.as_str()).await?;
    if app.state == "disabled" {
        return Err(ApiError::forbidden("app_disabled", "the app is disabled"));
    }
    let secret =
        app_secrets(&state, &app)?.into_iter().next().ok_or_else(|| ApiError::internal("the app has no secret"))?;
    let (token, claims) = token::mint(app_id.as_str(), &secret, &req.request, &state.token_policy, chrono::Utc::now())
        .map_err(|e| match e {
            token::TokenError::Invalid { field, reason } => ApiError::bad_request(field, reason),
            other => ApiError::bad_request("token", other),
        })?;
    let body = serde_json::json!({
        "token": token,
        "jti": claims.jti,
        "app_id": claims.iss,
        "identity": claims.sub,
        "room": claims.room,
        "grants": claims.grants,
        "expires_at": chrono::DateTime::from_timestamp(claims.exp, 0).map(|t| t.to_rfc3339()),
    });
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Revoke {
    #[serde(default)]
    app_id: Option<String>,
    jti: String,
    /// When the token expires; defaults to the longest allowed lifetime from now.
    #[serde(default)]
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default)]
    reason: Option<String>,
}

/// `POST /v1/tokens/revoke` (the app, or admin naming `app_id`).
pub(crate) async fn revoke_token(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<serde_json::Value>> {
    let who = authenticate(&state, &headers).await?;
    let req: Revoke = parse_body(&body)?;
    let app_id = who.app_scope(req.app_id.as_deref())?;
    let expires_at = req.expires_at.unwrap_or_else(|| {
        chrono::Utc::now()
            + chrono::Duration::seconds(i64::from(state.token_policy.max_ttl_s + state.token_policy.leeway_s))
    });
    let command = AppCommand::RevokeToken { jti: req.jti.clone(), expires_at, reason: req.reason };
    let done = state.apps.execute(&app_ref(app_id.as_str())?, &command, &meta(who.actor())).await?;
    state.settle(done.appended.map(|a| a.last)).await;
    Ok(Json(serde_json::json!({ "jti": req.jti, "revoked": true })))
}

#[derive(Debug, Deserialize)]
pub(crate) struct ListDeliveries {
    state: Option<String>,
    limit: Option<i64>,
    after: Option<String>,
}

fn webhook_error(e: arc_webhooks::WebhookError) -> ApiError {
    match e {
        arc_webhooks::WebhookError::NotFound => ApiError::not_found("delivery_not_found", "delivery not found"),
        arc_webhooks::WebhookError::NotDead => {
            ApiError::new(StatusCode::CONFLICT, "delivery_not_dead", "only dead-lettered deliveries can be redelivered")
        }
        other => {
            tracing::error!(error = %other, "webhook store failed");
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "webhooks_unavailable", "the webhook store failed")
        }
    }
}

/// `GET /v1/apps/{app_id}/webhooks/deliveries` (admin, or the app itself).
pub(crate) async fn list_deliveries(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(app_id): Path<String>,
    Query(q): Query<ListDeliveries>,
) -> ApiResult<Json<serde_json::Value>> {
    authenticate(&state, &headers).await?.require_app(&app_id)?;
    let limit = check_limit(q.limit)?;
    if let Some(s) = &q.state
        && !["pending", "delivered", "dead"].contains(&s.as_str())
    {
        return Err(ApiError::bad_request("state", "must be pending, delivered or dead"));
    }
    let list = arc_webhooks::list(&state.db.pool, &app_id, q.state.as_deref(), limit, q.after.as_deref())
        .await
        .map_err(webhook_error)?;
    let next = (list.len() as i64 == limit).then(|| list.last().map(|d| d.delivery_id.clone())).flatten();
    Ok(Json(serde_json::json!({ "deliveries": list, "next_after": next })))
}

async fn delivery_for(state: &ApiState, who: &Principal, delivery_id: &str) -> ApiResult<arc_webhooks::Delivery> {
    let d = arc_webhooks::get(&state.db.pool, delivery_id)
        .await
        .map_err(webhook_error)?
        .ok_or_else(|| ApiError::not_found("delivery_not_found", "delivery not found"))?;
    who.require_app(&d.app_id).map_err(|_| ApiError::not_found("delivery_not_found", "delivery not found"))?;
    Ok(d)
}

/// `GET /v1/webhooks/deliveries/{delivery_id}`.
pub(crate) async fn get_delivery(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(delivery_id): Path<String>,
) -> ApiResult<Json<arc_webhooks::Delivery>> {
    let who = authenticate(&state, &headers).await?;
    Ok(Json(delivery_for(&state, &who, &delivery_id).await?))
}

/// `POST /v1/webhooks/deliveries/{delivery_id}/redeliver`: a dead-lettered delivery is tried again.
pub(crate) async fn redeliver(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(delivery_id): Path<String>,
) -> ApiResult<Json<arc_webhooks::Delivery>> {
    let who = authenticate(&state, &headers).await?;
    delivery_for(&state, &who, &delivery_id).await?;
    let position = arc_webhooks::redeliver(&state.db.pool, state.log.as_ref(), &delivery_id, who.actor())
        .await
        .map_err(webhook_error)?;
    if let Some(rx) = &state.webhooks {
        let mut rx = rx.clone();
        let _ = tokio::time::timeout(super::SETTLE_WAIT_MAX, rx.wait_for(|p| *p >= position)).await;
    }
    Ok(Json(delivery_for(&state, &who, &delivery_id).await?))
}
