//! The application (tenant) aggregate: lifecycle, secret rotation, quotas,
//! webhook endpoints and token revocations.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use thiserror::Error;

use super::{Aggregate, Context};
use crate::app::{
    AppCreated, AppDeleted, AppDisabled, AppEnabled, AppQuotasSet, AppSecretRotated, AppTokenRevoked, AppWebhooksSet,
    Quotas, SealedSecret,
};
use crate::envelope::AggregateKind;
use crate::event::{AppEvent, Event};

use crate::limits::{
    APP_NAME_BYTES_MAX, JTI_BYTES_MAX, REASON_BYTES_MAX, SECRET_GRACE_S_MAX, WEBHOOK_URL_BYTES_MAX, WEBHOOK_URLS_MAX,
};

/// Lifecycle of an application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum AppStatus {
    /// No `app.created` yet.
    #[default]
    Absent,
    Active,
    Disabled,
    /// Deleted for good; the id is never reused.
    Deleted,
}

/// The state `decide` needs.
///
/// Snapshotted (serde, `SNAPSHOT_VERSION`): long-lived, its history grows.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct App {
    pub status: AppStatus,
    pub name: String,
    /// The current secret, sealed.
    pub secret: Option<SealedSecret>,
    pub quotas: Quotas,
    pub webhooks: Vec<String>,
    /// Revoked token ids with their expiry; expired entries are forgotten.
    pub revoked: BTreeMap<String, DateTime<Utc>>,
}

/// What can be asked of an application.
#[derive(Debug, Clone, PartialEq)]
pub enum AppCommand {
    /// Register the app with its first (sealed) secret.
    Create {
        name: String,
        secret: SealedSecret,
        quotas: Quotas,
        webhooks: Vec<String>,
    },
    Disable {
        reason: Option<String>,
    },
    Enable,
    Delete,
    /// Replace the secret; the old one stays valid for `grace_s` seconds.
    RotateSecret {
        secret: SealedSecret,
        grace_s: u32,
    },
    SetQuotas {
        quotas: Quotas,
    },
    SetWebhooks {
        urls: Vec<String>,
    },
    /// Refuse a token from now on, until it would have expired anyway.
    RevokeToken {
        jti: String,
        expires_at: DateTime<Utc>,
        reason: Option<String>,
    },
}

/// Why an app command was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AppError {
    #[error("app already exists")]
    AlreadyExists,
    #[error("app not found")]
    NotFound,
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

fn invalid(field: &'static str, reason: impl Into<String>) -> AppError {
    AppError::Invalid { field, reason: reason.into() }
}

/// Checks a webhook endpoint: an absolute `http` or `https` URL with a host,
/// no whitespace or control characters.
pub fn validate_webhook_url(url: &str) -> Result<(), String> {
    if url.len() > WEBHOOK_URL_BYTES_MAX {
        return Err(format!("longer than {WEBHOOK_URL_BYTES_MAX} bytes"));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("contains whitespace or control characters".into());
    }
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("{url:?} is not an http:// or https:// URL"))?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    if host.is_empty() || host.starts_with(':') {
        return Err(format!("{url:?} has no host"));
    }
    Ok(())
}

fn validate_quotas(q: &Quotas) -> Result<(), AppError> {
    for (field, v) in [
        ("quotas.max_rooms", q.max_rooms),
        ("quotas.max_participants_per_room", q.max_participants_per_room),
        ("quotas.max_participants", q.max_participants),
    ] {
        if v == Some(0) {
            return Err(invalid(field, "must be at least 1 (leave it out for no limit)"));
        }
    }
    Ok(())
}

fn validate_urls(urls: &[String]) -> Result<(), AppError> {
    if urls.len() > WEBHOOK_URLS_MAX {
        return Err(invalid("urls", format!("at most {WEBHOOK_URLS_MAX} endpoints")));
    }
    for url in urls {
        validate_webhook_url(url).map_err(|r| invalid("urls", r))?;
    }
    Ok(())
}

impl App {
    fn require_exists(&self) -> Result<(), AppError> {
        match self.status {
            AppStatus::Absent | AppStatus::Deleted => Err(AppError::NotFound),
            AppStatus::Active | AppStatus::Disabled => Ok(()),
        }
    }
}

impl Aggregate for App {
    const KIND: AggregateKind = AggregateKind::App;
    type Event = AppEvent;
    type Command = AppCommand;
    type Error = AppError;

    fn decide(&self, command: &AppCommand, ctx: &Context) -> Result<Vec<AppEvent>, AppError> {
        match command {
            AppCommand::Create { name, secret, quotas, webhooks } => {
                if self.status != AppStatus::Absent {
                    return Err(AppError::AlreadyExists);
                }
                if name.trim().is_empty() || name.len() > APP_NAME_BYTES_MAX {
                    return Err(invalid("name", format!("must be 1..={APP_NAME_BYTES_MAX} bytes, not blank")));
                }
                validate_quotas(quotas)?;
                validate_urls(webhooks)?;
                let mut events: Vec<AppEvent> = vec![
                    AppCreated { name: name.clone() }.into(),
                    AppSecretRotated { secret: secret.clone(), previous_valid_until: None }.into(),
                ];
                if *quotas != Quotas::default() {
                    events.push(AppQuotasSet { quotas: *quotas }.into());
                }
                if !webhooks.is_empty() {
                    events.push(AppWebhooksSet { urls: webhooks.clone() }.into());
                }
                Ok(events)
            }
            AppCommand::Disable { reason } => {
                self.require_exists()?;
                if reason.as_ref().is_some_and(|r| r.len() > REASON_BYTES_MAX) {
                    return Err(invalid("reason", format!("must be at most {REASON_BYTES_MAX} bytes")));
                }
                Ok(match self.status {
                    AppStatus::Disabled => vec![],
                    _ => vec![AppDisabled { reason: reason.clone() }.into()],
                })
            }
            AppCommand::Enable => {
                self.require_exists()?;
                Ok(match self.status {
                    AppStatus::Disabled => vec![AppEnabled {}.into()],
                    _ => vec![],
                })
            }
            AppCommand::Delete => match self.status {
                AppStatus::Absent => Err(AppError::NotFound),
                AppStatus::Deleted => Ok(vec![]),
                AppStatus::Active | AppStatus::Disabled => Ok(vec![AppDeleted {}.into()]),
            },
            AppCommand::RotateSecret { secret, grace_s } => {
                self.require_exists()?;
                if *grace_s > SECRET_GRACE_S_MAX {
                    return Err(invalid("grace_s", format!("must be at most {SECRET_GRACE_S_MAX}")));
                }
                let previous_valid_until = (*grace_s > 0).then(|| ctx.now + Duration::seconds(i64::from(*grace_s)));
                Ok(vec![AppSecretRotated { secret: secret.clone(), previous_valid_until }.into()])
            }
            AppCommand::SetQuotas { quotas } => {
                self.require_exists()?;
                validate_quotas(quotas)?;
                Ok(if *quotas == self.quotas { vec![] } else { vec![AppQuotasSet { quotas: *quotas }.into()] })
            }
            AppCommand::SetWebhooks { urls } => {
                self.require_exists()?;
                validate_urls(urls)?;
                Ok(if *urls == self.webhooks { vec![] } else { vec![AppWebhooksSet { urls: urls.clone() }.into()] })
            }
            AppCommand::RevokeToken { jti, expires_at, reason } => {
                self.require_exists()?;
                if jti.is_empty() || jti.len() > JTI_BYTES_MAX {
                    return Err(invalid("jti", format!("must be 1..={JTI_BYTES_MAX} bytes")));
                }
                if reason.as_ref().is_some_and(|r| r.len() > REASON_BYTES_MAX) {
                    return Err(invalid("reason", format!("must be at most {REASON_BYTES_MAX} bytes")));
                }
                // Already revoked, or expired anyway: nothing to record.
                if self.revoked.contains_key(jti) || *expires_at < ctx.now {
                    return Ok(vec![]);
                }
                Ok(vec![AppTokenRevoked { jti: jti.clone(), expires_at: *expires_at, reason: reason.clone() }.into()])
            }
        }
    }

    fn evolve(mut self, event: &AppEvent, at: DateTime<Utc>) -> Self {
        match event {
            AppEvent::Created(e) => {
                self.status = AppStatus::Active;
                self.name = e.name.clone();
            }
            AppEvent::Disabled(_) => self.status = AppStatus::Disabled,
            AppEvent::Enabled(_) => self.status = AppStatus::Active,
            AppEvent::Deleted(_) => {
                self.status = AppStatus::Deleted;
                self.secret = None;
                self.revoked.clear();
            }
            AppEvent::SecretRotated(e) => self.secret = Some(e.secret.clone()),
            AppEvent::QuotasSet(e) => self.quotas = e.quotas,
            AppEvent::WebhooksSet(e) => self.webhooks = e.urls.clone(),
            AppEvent::TokenRevoked(e) => {
                self.revoked.retain(|_, exp| *exp >= at);
                self.revoked.insert(e.jti.clone(), e.expires_at);
            }
        }
        self
    }

    super::snapshot_with_serde!(1);

    fn narrow(event: Event) -> Option<AppEvent> {
        match event {
            Event::App(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::testing::{given, t};

    fn sealed(n: &str) -> SealedSecret {
        SealedSecret { alg: "A256GCM".into(), key_id: "mk_1".into(), nonce: n.into(), ciphertext: "c".into() }
    }
    fn create() -> AppCommand {
        AppCommand::Create { name: "Acme".into(), secret: sealed("n1"), quotas: Quotas::default(), webhooks: vec![] }
    }
    fn history() -> Vec<(i64, AppEvent)> {
        vec![
            (0, AppCreated { name: "Acme".into() }.into()),
            (0, AppSecretRotated { secret: sealed("n1"), previous_valid_until: None }.into()),
        ]
    }

    #[test]
    fn create_records_the_app_and_its_first_secret_once() {
        assert_eq!(given::<App>(&[]).when(0, create()), Ok(history().into_iter().map(|(_, e)| e).collect()));
        assert_eq!(given::<App>(&history()).when(1, create()), Err(AppError::AlreadyExists));
        let mut deleted = history();
        deleted.push((1, AppDeleted {}.into()));
        assert_eq!(given::<App>(&deleted).when(2, create()), Err(AppError::AlreadyExists));
    }

    #[test]
    fn create_validates_name_quotas_and_urls() {
        let bad =
            AppCommand::Create { name: " ".into(), secret: sealed("n"), quotas: Quotas::default(), webhooks: vec![] };
        assert!(matches!(given::<App>(&[]).when(0, bad), Err(AppError::Invalid { field: "name", .. })));
        let bad = AppCommand::Create {
            name: "a".into(),
            secret: sealed("n"),
            quotas: Quotas { max_rooms: Some(0), ..Quotas::default() },
            webhooks: vec![],
        };
        assert!(matches!(given::<App>(&[]).when(0, bad), Err(AppError::Invalid { field: "quotas.max_rooms", .. })));
        for url in ["ftp://x", "http://", "https:// x", "localhost:80", "http://:80/"] {
            let bad = AppCommand::Create {
                name: "a".into(),
                secret: sealed("n"),
                quotas: Quotas::default(),
                webhooks: vec![url.into()],
            };
            assert!(matches!(given::<App>(&[]).when(0, bad), Err(AppError::Invalid { field: "urls", .. })), "{url}");
        }
        assert!(validate_webhook_url("http://127.0.0.1:8080/hook?x=1").is_ok());
        assert!(validate_webhook_url("https://user@example.com").is_ok());
    }

    #[test]
    fn rotation_keeps_the_old_secret_for_the_grace_period() {
        let cmd = AppCommand::RotateSecret { secret: sealed("n2"), grace_s: 60 };
        assert_eq!(
            given::<App>(&history()).when(10, cmd),
            Ok(vec![AppSecretRotated { secret: sealed("n2"), previous_valid_until: Some(t(70)) }.into()])
        );
        let cmd = AppCommand::RotateSecret { secret: sealed("n2"), grace_s: SECRET_GRACE_S_MAX + 1 };
        assert!(matches!(given::<App>(&history()).when(10, cmd), Err(AppError::Invalid { field: "grace_s", .. })));
    }

    #[test]
    fn disable_enable_delete_are_idempotent() {
        let g = || given::<App>(&history());
        assert_eq!(g().when(1, AppCommand::Enable), Ok(vec![]));
        assert_eq!(g().when(1, AppCommand::Disable { reason: None }), Ok(vec![AppDisabled { reason: None }.into()]));
        let mut disabled = history();
        disabled.push((1, AppDisabled { reason: None }.into()));
        assert_eq!(given::<App>(&disabled).when(2, AppCommand::Disable { reason: None }), Ok(vec![]));
        assert_eq!(given::<App>(&disabled).when(2, AppCommand::Enable), Ok(vec![AppEnabled {}.into()]));
        let mut deleted = history();
        deleted.push((1, AppDeleted {}.into()));
        assert_eq!(given::<App>(&deleted).when(2, AppCommand::Delete), Ok(vec![]));
        assert_eq!(given::<App>(&deleted).when(2, AppCommand::Enable), Err(AppError::NotFound));
        assert_eq!(given::<App>(&[]).when(0, AppCommand::Delete), Err(AppError::NotFound));
    }

    #[test]
    fn revocations_are_recorded_once_and_only_while_the_token_could_still_work() {
        let revoke = |exp: i64| AppCommand::RevokeToken { jti: "tk_1".into(), expires_at: t(exp), reason: None };
        let event: AppEvent = AppTokenRevoked { jti: "tk_1".into(), expires_at: t(100), reason: None }.into();
        assert_eq!(given::<App>(&history()).when(10, revoke(100)), Ok(vec![event.clone()]));
        assert_eq!(given::<App>(&history()).when(200, revoke(100)), Ok(vec![]));
        let mut revoked = history();
        revoked.push((10, event));
        assert_eq!(given::<App>(&revoked).when(20, revoke(100)), Ok(vec![]));
    }

    #[test]
    fn unchanged_quotas_and_webhooks_record_nothing() {
        assert_eq!(given::<App>(&history()).when(1, AppCommand::SetQuotas { quotas: Quotas::default() }), Ok(vec![]));
        assert_eq!(given::<App>(&history()).when(1, AppCommand::SetWebhooks { urls: vec![] }), Ok(vec![]));
        let urls = vec!["http://127.0.0.1:9/h".to_owned()];
        assert_eq!(
            given::<App>(&history()).when(1, AppCommand::SetWebhooks { urls: urls.clone() }),
            Ok(vec![AppWebhooksSet { urls }.into()])
        );
    }
}
