//! Apps and their tokens: create, disable, enable, delete, rotate the
//! secret, quotas, webhook URLs; mint and revoke access tokens. The app
//! secret exists in plaintext only in memory: sealed under the master key
//! before it is written (`arc_auth::seal`), opened only to sign or verify.

use arc_auth::secret::AppSecret;
use arc_auth::token::{self, Claims, MintRequest};
use arc_eventlog::Position;
use arc_events::aggregate::app::AppCommand;
use arc_events::app::{Quotas, SealedSecret};
use arc_events::{Actor, AppId};
use chrono::{DateTime, Utc};

use super::queries;
use super::{Services, UseCaseError, UseCaseResult};
use crate::projection::apps::AppRow;

fn seal(s: &Services, app_id: &AppId, secret: &AppSecret) -> SealedSecret {
    arc_auth::seal::seal(&s.master_key, secret.as_bytes(), app_id.as_str().as_bytes())
}

fn parse_app_id(app_id: &str) -> UseCaseResult<AppId> {
    AppId::parse(app_id).map_err(|e| UseCaseError::invalid("app_id", e))
}

/// An app that exists and is not deleted (404 otherwise).
pub async fn existing_app(s: &Services, app_id: &str) -> UseCaseResult<AppRow> {
    queries::app(&s.db, app_id)
        .await?
        .filter(|a| a.state != "deleted")
        .ok_or_else(|| UseCaseError::not_found("app_not_found", "app not found"))
}

/// A new app, and its secret (shown once).
#[derive(Debug)]
pub struct Created {
    pub app_id: AppId,
    pub secret: AppSecret,
    pub at: DateTime<Utc>,
    pub position: Option<Position>,
}

/// Registers an app with a fresh secret, sealed before it reaches the log.
pub async fn create_app(
    s: &Services,
    actor: &Actor,
    name: String,
    quotas: Quotas,
    webhooks: Vec<String>,
) -> UseCaseResult<Created> {
    check_webhooks(s, &webhooks).await?;
    let app_id = AppId::generate();
    let secret = AppSecret::generate();
    let command = AppCommand::Create { name, secret: seal(s, &app_id, &secret), quotas, webhooks };
    let meta = super::command_meta(actor);
    let done = s.apps.execute(&(&app_id).into(), &command, &meta).await?;
    Ok(Created { app_id, secret, at: meta.occurred_at, position: done.appended.map(|a| a.last) })
}

/// Webhook URLs must not reach non-public addresses the operator has not
/// allowed (a tenant's server-side request forgery); deliveries check again.
async fn check_webhooks(s: &Services, urls: &[String]) -> UseCaseResult<()> {
    for url in urls {
        // The aggregate checks the form; this checks where it goes.
        if arc_events::aggregate::app::validate_webhook_url(url).is_err() {
            continue;
        }
        arc_webhooks::ssrf::check_url(&s.webhook_policy, url)
            .await
            .map_err(|why| UseCaseError::invalid("webhooks", format!("{url}: {why}")))?;
    }
    Ok(())
}

/// A change to an app's standing or settings.
#[derive(Debug, Clone)]
pub enum AppChange {
    Disable { reason: Option<String> },
    Enable,
    Delete,
    Quotas(Quotas),
    Webhooks(Vec<String>),
}

/// Applies one change to an app.
pub async fn change_app(
    s: &Services,
    actor: &Actor,
    app_id: &str,
    change: AppChange,
) -> UseCaseResult<Option<Position>> {
    let command = match change {
        AppChange::Disable { reason } => AppCommand::Disable { reason },
        AppChange::Enable => AppCommand::Enable,
        AppChange::Delete => AppCommand::Delete,
        AppChange::Quotas(quotas) => AppCommand::SetQuotas { quotas },
        AppChange::Webhooks(urls) => {
            check_webhooks(s, &urls).await?;
            AppCommand::SetWebhooks { urls }
        }
    };
    let meta = super::command_meta(actor);
    let done = s.apps.execute(&(&parse_app_id(app_id)?).into(), &command, &meta).await?;
    Ok(done.appended.map(|a| a.last))
}

/// A rotated secret (shown once) and how long the previous one keeps working.
#[derive(Debug)]
pub struct Rotated {
    pub secret: AppSecret,
    pub grace_s: u32,
    pub at: DateTime<Utc>,
    pub position: Option<Position>,
}

/// Gives an app a new secret; the previous one works for `grace_s` more
/// (the server's default when not given).
pub async fn rotate_secret(s: &Services, actor: &Actor, app_id: &str, grace_s: Option<u32>) -> UseCaseResult<Rotated> {
    let id = parse_app_id(app_id)?;
    let secret = AppSecret::generate();
    let grace_s = grace_s.unwrap_or(s.secret_grace_s);
    let command = AppCommand::RotateSecret { secret: seal(s, &id, &secret), grace_s };
    let meta = super::command_meta(actor);
    let done = s.apps.execute(&(&id).into(), &command, &meta).await?;
    Ok(Rotated { secret, grace_s, at: meta.occurred_at, position: done.appended.map(|a| a.last) })
}

fn unseal(s: &Services, app_id: &str, sealed_json: &str) -> UseCaseResult<AppSecret> {
    let sealed: SealedSecret = serde_json::from_str(sealed_json).map_err(|e| {
        tracing::error!(app_id, error = %e, "a sealed app secret in the read model does not parse");
        UseCaseError::internal("the app's secret is unreadable")
    })?;
    let plain = arc_auth::seal::open(&s.master_key, &sealed, app_id.as_bytes()).map_err(|e| {
        tracing::error!(app_id, error = %e, "cannot open an app secret (is this the right master key?)");
        UseCaseError::internal("the app's secret cannot be opened with this master key")
    })?;
    let text = String::from_utf8(plain.to_vec()).map_err(|_| UseCaseError::internal("the app's secret is not text"))?;
    Ok(AppSecret::from_string(text))
}

/// The app's valid secrets, current first, then the rotated-out one while in its grace period.
pub fn app_secrets(s: &Services, app: &AppRow) -> UseCaseResult<Vec<AppSecret>> {
    let mut out = Vec::with_capacity(2);
    if let Some(current) = &app.secret_sealed {
        out.push(unseal(s, &app.app_id, current)?);
    }
    if let (Some(previous), Some(until)) = (&app.previous_sealed, app.previous_valid_until_ms)
        && until > Utc::now().timestamp_millis()
    {
        out.push(unseal(s, &app.app_id, previous)?);
    }
    Ok(out)
}

/// Mints an access token for an active app, signed with its current secret.
/// A token minted with an admin key is recorded (`operator.token_minted`,
/// never the token) before it is handed out.
pub async fn mint_token(
    s: &Services,
    actor: &Actor,
    app_id: &AppId,
    request: &MintRequest,
) -> UseCaseResult<(String, Claims)> {
    let app = existing_app(s, app_id.as_str()).await?;
    if app.state == "disabled" {
        return Err(UseCaseError::forbidden("app_disabled", "the app is disabled"));
    }
    let secret =
        app_secrets(s, &app)?.into_iter().next().ok_or_else(|| UseCaseError::internal("the app has no secret"))?;
    let (token, claims) =
        token::mint(app_id.as_str(), &secret, request, &s.token_policy, Utc::now()).map_err(|e| match e {
            token::TokenError::Invalid { field, reason } => UseCaseError::Invalid { field, reason },
            other => UseCaseError::invalid("token", other),
        })?;
    let minted = arc_events::operator::TokenMinted {
        app_id: app_id.clone(),
        room: claims.room.clone(),
        identity: claims.sub.clone(),
        jti: claims.jti.clone(),
        expires_at: DateTime::from_timestamp(claims.exp, 0).unwrap_or_else(Utc::now),
    };
    super::audit::record(s, actor, arc_events::OperatorEvent::TokenMinted(minted)).await?;
    Ok((token, claims))
}

/// When a revocation may be forgotten if the caller does not say: the
/// longest a token this server mints can live, from now.
pub fn default_revocation_expiry(s: &Services) -> DateTime<Utc> {
    Utc::now() + chrono::Duration::seconds(i64::from(s.token_policy.max_ttl_s + s.token_policy.leeway_s))
}

/// Refuses a token from now on (by its `jti`).
pub async fn revoke_token(
    s: &Services,
    actor: &Actor,
    app_id: &AppId,
    jti: String,
    expires_at: Option<DateTime<Utc>>,
    reason: Option<String>,
) -> UseCaseResult<Option<Position>> {
    let expires_at = expires_at.unwrap_or_else(|| default_revocation_expiry(s));
    let command = AppCommand::RevokeToken { jti, expires_at, reason };
    let meta = super::command_meta(actor);
    let done = s.apps.execute(&app_id.into(), &command, &meta).await?;
    Ok(done.appended.map(|a| a.last))
}

/// The name of the app `arc-control dev` mints development tokens under.
pub const DEV_APP_NAME: &str = "dev";

/// A development token (`arc-control dev` only): for `identity` in `room`,
/// with every grant but `admin` and `record`, under the app named
/// [`DEV_APP_NAME`] (made on first use).
pub async fn mint_dev_token(s: &Services, room: &str, identity: &str, name: Option<String>) -> UseCaseResult<String> {
    let mut found = None;
    let mut after = String::new();
    'pages: loop {
        let page = queries::apps(&s.db, "active", &after, 500).await?;
        for app in &page {
            if app.name == DEV_APP_NAME {
                found = Some(app.app_id.clone());
                break 'pages;
            }
        }
        match page.last() {
            Some(last) if page.len() == 500 => after.clone_from(&last.app_id),
            _ => break,
        }
    }
    let app_id = match found {
        Some(id) => AppId::parse(&id).map_err(|_| UseCaseError::internal("bad app id in the read model"))?,
        None => {
            let created =
                create_app(s, &Actor::system("dev-tokens"), DEV_APP_NAME.to_owned(), Quotas::default(), Vec::new())
                    .await?;
            if let Some(p) = created.position {
                s.settle_quietly(p).await;
            }
            created.app_id
        }
    };
    let request = MintRequest {
        identity: identity.to_owned(),
        room: room.to_owned(),
        grants: None,
        ttl_s: None,
        name,
        metadata: None,
        not_before_s: None,
    };
    Ok(mint_token(s, &Actor::system("dev_tokens"), &app_id, &request).await?.0)
}
