//! Settings: a TOML file, then `ARC_*` environment variables, then flags —
//! each overriding the one before. (Flags and environment are read by clap in
//! the binary; this module merges them over the file and the defaults.)

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::ControlError;

/// Default HTTP listen address (loopback: expose it deliberately).
pub const LISTEN_DEFAULT: &str = "127.0.0.1:7880";
/// Default longest token lifetime (24 h).
pub const TOKEN_MAX_TTL_S_DEFAULT: u32 = 24 * 3600;
/// Largest `token_max_ttl_s` accepted (30 days).
pub const TOKEN_MAX_TTL_S_LIMIT: u32 = 30 * 24 * 3600;
/// Default grace period of a rotated-out app secret (1 h).
pub const SECRET_GRACE_S_DEFAULT: u32 = 3600;
/// Default UDP address of the embedded media node's media port.
pub const MEDIA_UDP_DEFAULT: &str = "0.0.0.0:7882";
/// Default data directory of `arc-control dev`.
pub const DATA_DIR_DEFAULT: &str = "./arc-data";

/// Settings as they may appear in the TOML file or arrive from flags/env.
/// Every field is optional; [`Settings::resolve`] fills in defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Directory for the embedded log, read models and generated keys.
    pub data_dir: Option<PathBuf>,
    /// HTTP listen address.
    pub listen: Option<String>,
    /// NATS server URL(s), comma-separated; selects the JetStream log.
    pub nats_url: Option<String>,
    /// JetStream stream replicas (1, or 3 for a three-node cluster).
    pub nats_replicas: Option<usize>,
    /// JetStream stream name (default `ARC_EVENTS`).
    pub nats_stream: Option<String>,
    /// Subject prefix of the stream (default `arc.evt`).
    pub nats_subject_prefix: Option<String>,
    /// TLS to NATS: the CA that signed the servers' certificates (PEM).
    pub nats_ca_file: Option<PathBuf>,
    /// TLS to NATS: this client's certificate (PEM), for servers that verify clients.
    pub nats_cert_file: Option<PathBuf>,
    /// TLS to NATS: this client's key (PEM).
    pub nats_key_file: Option<PathBuf>,
    /// Read-model database URL (`postgres://…` or `sqlite://…`).
    pub database_url: Option<String>,
    /// Admin API key. `dev` generates one into the data dir when unset.
    pub admin_key: Option<String>,
    /// More admin keys, each with a name the log records as the actor of
    /// what it does: `name=key,name=key`.
    pub admin_keys: Option<String>,
    /// HTTPS: the certificate chain (PEM) …
    pub tls_cert: Option<PathBuf>,
    /// … and its private key (PEM). Both reloaded on SIGHUP.
    pub tls_key: Option<PathBuf>,
    /// `dev`: HTTPS with a self-signed pair made into `<data_dir>/tls/`.
    pub tls_self_signed: Option<bool>,
    /// Seconds between janitor sweeps (idle rooms, silent nodes).
    pub janitor_interval_s: Option<u64>,
    /// Seconds a signalling socket may stay silent (no message, no pong)
    /// before its participant is removed (`connection_lost`; default 20).
    pub signal_timeout_s: Option<u64>,
    /// STUN servers handed to clients in `join`, comma-separated `stun:` URLs.
    pub stun_urls: Option<String>,
    /// TURN servers handed to clients in `join` with time-limited
    /// credentials, comma-separated `turn:`/`turns:` URLs (needs `turn_secret`).
    pub turn_urls: Option<String>,
    /// The secret shared with the TURN servers (coturn `static-auth-secret`).
    pub turn_secret: Option<String>,
    /// Lifetime of a participant's TURN credentials, in seconds (default 21600).
    pub turn_ttl_s: Option<u64>,
    /// Failed authentications a minute from one address before it gets `429`s (default 30).
    pub auth_failures_per_addr: Option<u32>,
    /// Failed authentications a minute naming one app key before it gets `429`s (default 100).
    pub auth_failures_per_key: Option<u32>,
    /// Requests a minute naming one app key (Basic, or its tokens) before `429` (default 6000).
    pub app_requests_per_minute: Option<u32>,
    /// Media sessions (WHIP, WHEP, signalling sockets) one token may open a minute (default 30).
    pub sessions_per_token_per_minute: Option<u32>,
    /// Master key sealing app secrets (64 hex chars). `dev` generates one into
    /// the data dir when unset; `serve` requires it.
    pub master_key: Option<String>,
    /// Longest token lifetime accepted, in seconds (default 86400).
    pub token_max_ttl_s: Option<u32>,
    /// Default grace period of a rotated-out app secret, in seconds (default 3600).
    pub secret_grace_s: Option<u32>,
    /// Webhook attempts before a delivery is dead-lettered (default 10).
    pub webhook_attempts_max: Option<u32>,
    /// Delay before the first webhook retry, in milliseconds; doubles per attempt (default 1000).
    pub webhook_backoff_base_ms: Option<u64>,
    /// Longest delay between webhook retries, in seconds (default 600).
    pub webhook_backoff_max_s: Option<u64>,
    /// Timeout of one webhook request, in seconds (default 10).
    pub webhook_timeout_s: Option<u64>,
    /// PEM file of extra CA certificates trusted for `https://` webhook
    /// endpoints (besides the system's and the Mozilla roots).
    pub webhook_ca_file: Option<PathBuf>,
    /// Non-public address ranges webhooks may reach, comma-separated CIDRs
    /// (loopback, private, link-local … are refused otherwise; `dev`
    /// allows loopback when this is unset).
    pub webhook_allow_nets: Option<String>,
    /// `dev`: UDP address of the embedded media node's one media port
    /// (default `0.0.0.0:7882`; port 0 picks a free one).
    pub media_udp: Option<String>,
    /// `dev`: IP addresses the embedded media node announces to clients,
    /// comma-separated (default `127.0.0.1`; give the host's LAN or public IP
    /// for clients on other machines).
    pub media_announce: Option<String>,
    /// `dev`: worker threads of the embedded media node (default 0: one per CPU).
    pub media_workers: Option<usize>,
    /// `dev`: sessions the embedded media node takes at most (default 500).
    pub media_capacity: Option<u32>,
    /// `dev`: who protects forwarded media, `arc` (in place, default) or `rtc`.
    pub media_srtp_egress: Option<String>,
}

impl Settings {
    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> Result<Self, ControlError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ControlError::Config(format!("cannot read {}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| ControlError::Config(format!("{}: {e}", path.display())))
    }

    /// `self` with every field that `over` sets replaced by `over`'s.
    #[must_use]
    pub fn overridden_by(self, over: Self) -> Self {
        Self {
            data_dir: over.data_dir.or(self.data_dir),
            listen: over.listen.or(self.listen),
            nats_url: over.nats_url.or(self.nats_url),
            nats_replicas: over.nats_replicas.or(self.nats_replicas),
            nats_stream: over.nats_stream.or(self.nats_stream),
            nats_subject_prefix: over.nats_subject_prefix.or(self.nats_subject_prefix),
            nats_ca_file: over.nats_ca_file.or(self.nats_ca_file),
            nats_cert_file: over.nats_cert_file.or(self.nats_cert_file),
            nats_key_file: over.nats_key_file.or(self.nats_key_file),
            database_url: over.database_url.or(self.database_url),
            admin_key: over.admin_key.or(self.admin_key),
            admin_keys: over.admin_keys.or(self.admin_keys),
            tls_cert: over.tls_cert.or(self.tls_cert),
            tls_key: over.tls_key.or(self.tls_key),
            tls_self_signed: over.tls_self_signed.or(self.tls_self_signed),
            janitor_interval_s: over.janitor_interval_s.or(self.janitor_interval_s),
            signal_timeout_s: over.signal_timeout_s.or(self.signal_timeout_s),
            stun_urls: over.stun_urls.or(self.stun_urls),
            auth_failures_per_addr: over.auth_failures_per_addr.or(self.auth_failures_per_addr),
            auth_failures_per_key: over.auth_failures_per_key.or(self.auth_failures_per_key),
            app_requests_per_minute: over.app_requests_per_minute.or(self.app_requests_per_minute),
            sessions_per_token_per_minute: over.sessions_per_token_per_minute.or(self.sessions_per_token_per_minute),
            turn_urls: over.turn_urls.or(self.turn_urls),
            turn_secret: over.turn_secret.or(self.turn_secret),
            turn_ttl_s: over.turn_ttl_s.or(self.turn_ttl_s),
            master_key: over.master_key.or(self.master_key),
            token_max_ttl_s: over.token_max_ttl_s.or(self.token_max_ttl_s),
            secret_grace_s: over.secret_grace_s.or(self.secret_grace_s),
            webhook_attempts_max: over.webhook_attempts_max.or(self.webhook_attempts_max),
            webhook_backoff_base_ms: over.webhook_backoff_base_ms.or(self.webhook_backoff_base_ms),
            webhook_backoff_max_s: over.webhook_backoff_max_s.or(self.webhook_backoff_max_s),
            webhook_timeout_s: over.webhook_timeout_s.or(self.webhook_timeout_s),
            webhook_ca_file: over.webhook_ca_file.or(self.webhook_ca_file),
            webhook_allow_nets: over.webhook_allow_nets.or(self.webhook_allow_nets),
            media_udp: over.media_udp.or(self.media_udp),
            media_announce: over.media_announce.or(self.media_announce),
            media_workers: over.media_workers.or(self.media_workers),
            media_capacity: over.media_capacity.or(self.media_capacity),
            media_srtp_egress: over.media_srtp_egress.or(self.media_srtp_egress),
        }
    }

    /// Checks and completes the settings for `mode`.
    pub fn resolve(self, mode: Mode) -> Result<Config, ControlError> {
        let data_dir = self.data_dir.unwrap_or_else(|| PathBuf::from(DATA_DIR_DEFAULT));
        let listen_text = self.listen.unwrap_or_else(|| LISTEN_DEFAULT.to_owned());
        let listen: SocketAddr =
            listen_text.parse().map_err(|e| ControlError::Config(format!("listen address {listen_text:?}: {e}")))?;
        let log = match (mode, self.nats_url) {
            (Mode::Dev, Some(_)) => {
                return Err(ControlError::Config(
                    "dev runs the embedded log; use `serve --nats URL` for NATS JetStream".into(),
                ));
            }
            (Mode::Dev, None) => LogConfig::Embedded,
            (Mode::Serve, None) => {
                return Err(ControlError::Config("serve needs --nats URL (or ARC_NATS_URL, or nats_url)".into()));
            }
            (_, Some(url)) => LogConfig::JetStream {
                url,
                replicas: self.nats_replicas.unwrap_or(1),
                stream: self.nats_stream.unwrap_or_else(|| arc_eventlog::jetstream::STREAM_NAME.to_owned()),
                subject_prefix: self
                    .nats_subject_prefix
                    .unwrap_or_else(|| arc_eventlog::jetstream::SUBJECT_PREFIX.to_owned()),
                tls: {
                    let tls = arc_eventlog::jetstream::NatsTls {
                        ca_file: self.nats_ca_file,
                        client: match (self.nats_cert_file, self.nats_key_file) {
                            (Some(cert), Some(key)) => Some((cert, key)),
                            (None, None) => None,
                            _ => {
                                return Err(ControlError::Config(
                                    "TLS to NATS needs both nats_cert_file and nats_key_file".into(),
                                ));
                            }
                        },
                    };
                    tls.check().map_err(|e| ControlError::Config(e.to_string()))?;
                    tls
                },
            },
            (Mode::Tool, None) => LogConfig::Embedded,
        };
        if let LogConfig::JetStream { replicas, .. } = &log
            && !(1..=5).contains(replicas)
        {
            return Err(ControlError::Config(format!("nats_replicas must be 1..=5, not {replicas}")));
        }
        let database_url = match (mode, self.database_url) {
            (Mode::Serve, None) => {
                return Err(ControlError::Config(
                    "serve needs --database URL (or ARC_DATABASE_URL, or database_url)".into(),
                ));
            }
            (_, Some(url)) => url,
            (_, None) => crate::readdb::ReadDb::sqlite_url(&data_dir),
        };
        let janitor_interval = Duration::from_secs(self.janitor_interval_s.unwrap_or(2).clamp(1, 3600));
        let signal_timeout_s = self.signal_timeout_s.unwrap_or(20);
        if !(2..=3600).contains(&signal_timeout_s) {
            return Err(ControlError::Config(format!("signal_timeout_s must be 2..=3600, not {signal_timeout_s}")));
        }
        let signal_timeout = Duration::from_secs(signal_timeout_s);
        let limits = crate::api::limits::LimitSettings {
            failures_per_addr: self.auth_failures_per_addr.unwrap_or(30),
            failures_per_key: self.auth_failures_per_key.unwrap_or(100),
            app_requests: self.app_requests_per_minute.unwrap_or(6000),
            sessions_per_token: self.sessions_per_token_per_minute.unwrap_or(30),
        };
        if limits.failures_per_addr == 0
            || limits.failures_per_key == 0
            || limits.app_requests == 0
            || limits.sessions_per_token == 0
        {
            return Err(ControlError::Config(
                "auth_failures_per_addr, auth_failures_per_key, app_requests_per_minute and \
                 sessions_per_token_per_minute must be at least 1"
                    .into(),
            ));
        }
        let ice = IceSettings::resolve(self.stun_urls, self.turn_urls, self.turn_secret, self.turn_ttl_s)?;
        let admin_keys = parse_admin_keys(self.admin_keys.as_deref().unwrap_or_default())?;
        let tls = match (self.tls_cert, self.tls_key, self.tls_self_signed.unwrap_or(false), mode) {
            (None, None, false, _) => None,
            (Some(cert), Some(key), false, _) => Some(Tls::Files(crate::tls::TlsFiles { cert, key })),
            (None, None, true, Mode::Dev) => Some(Tls::SelfSigned),
            (None, None, true, _) => {
                return Err(ControlError::Config(
                    "tls_self_signed is for dev; serve takes tls_cert and tls_key".into(),
                ));
            }
            (_, _, true, _) => {
                return Err(ControlError::Config("tls_self_signed or tls_cert and tls_key, not both".into()));
            }
            _ => return Err(ControlError::Config("HTTPS needs both tls_cert and tls_key".into())),
        };
        let token_max_ttl_s = self.token_max_ttl_s.unwrap_or(TOKEN_MAX_TTL_S_DEFAULT);
        if !(60..=TOKEN_MAX_TTL_S_LIMIT).contains(&token_max_ttl_s) {
            return Err(ControlError::Config(format!(
                "token_max_ttl_s must be 60..={TOKEN_MAX_TTL_S_LIMIT}, not {token_max_ttl_s}"
            )));
        }
        let secret_grace_s = self.secret_grace_s.unwrap_or(SECRET_GRACE_S_DEFAULT);
        let grace_max = arc_events::limits::SECRET_GRACE_S_MAX;
        if secret_grace_s > grace_max {
            return Err(ControlError::Config(format!("secret_grace_s must be at most {grace_max}")));
        }
        let webhook = WebhookSettings {
            attempts_max: self.webhook_attempts_max.unwrap_or(10).clamp(1, 100),
            backoff_base: Duration::from_millis(self.webhook_backoff_base_ms.unwrap_or(1000).clamp(10, 3_600_000)),
            backoff_max: Duration::from_secs(self.webhook_backoff_max_s.unwrap_or(600).clamp(1, 86_400)),
            timeout: Duration::from_secs(self.webhook_timeout_s.unwrap_or(10).clamp(1, 300)),
            ca_pem: match &self.webhook_ca_file {
                None => None,
                Some(path) => Some(
                    std::fs::read(path)
                        .map_err(|e| ControlError::Config(format!("webhook_ca_file {}: {e}", path.display())))?,
                ),
            },
            policy: match (&self.webhook_allow_nets, mode) {
                (None, Mode::Serve) => arc_webhooks::ssrf::AddressPolicy::default(),
                (None, _) => arc_webhooks::ssrf::AddressPolicy::loopback(),
                (Some(list), _) => {
                    let mut allow = Vec::new();
                    for net in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                        allow.push(net.parse().map_err(|e| ControlError::Config(format!("webhook_allow_nets: {e}")))?);
                    }
                    arc_webhooks::ssrf::AddressPolicy { allow }
                }
            },
        };
        let media_text = self.media_udp.unwrap_or_else(|| MEDIA_UDP_DEFAULT.to_owned());
        let media_udp: SocketAddr =
            media_text.parse().map_err(|e| ControlError::Config(format!("media_udp address {media_text:?}: {e}")))?;
        let announce_text = self.media_announce.unwrap_or_else(|| "127.0.0.1".to_owned());
        let mut media_announce = Vec::new();
        for ip in announce_text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let ip: std::net::IpAddr =
                ip.parse().map_err(|e| ControlError::Config(format!("media_announce address {ip:?}: {e}")))?;
            media_announce.push(ip);
        }
        let media_workers = self.media_workers.unwrap_or(0);
        if media_workers > 256 {
            return Err(ControlError::Config(format!("media_workers must be at most 256, not {media_workers}")));
        }
        let media_capacity = self.media_capacity.unwrap_or(MEDIA_CAPACITY_DEFAULT);
        if !(1..=MEDIA_CAPACITY_MAX).contains(&media_capacity) {
            return Err(ControlError::Config(format!(
                "media_capacity must be between 1 and {MEDIA_CAPACITY_MAX}, not {media_capacity}"
            )));
        }
        let media_own_srtp_egress = match self.media_srtp_egress.as_deref().map(str::trim) {
            None | Some("arc") => true,
            Some("rtc") => false,
            Some(other) => {
                return Err(ControlError::Config(format!("media_srtp_egress must be arc or rtc, not {other:?}")));
            }
        };
        Ok(Config {
            media_udp,
            media_announce,
            media_workers,
            media_capacity,
            media_own_srtp_egress,
            data_dir,
            listen,
            log,
            database_url,
            admin_key: self.admin_key,
            admin_keys,
            tls,
            janitor_interval,
            signal_timeout,
            ice,
            limits,
            master_key: self.master_key,
            token_max_ttl_s,
            secret_grace_s,
            webhook,
        })
    }
}

/// How the binary was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Everything embedded in one process.
    Dev,
    /// Against NATS JetStream and PostgreSQL.
    Serve,
    /// A maintenance command (rebuild): embedded unless a NATS URL is given.
    Tool,
}

/// Which event log to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogConfig {
    /// SQLite in the data dir.
    Embedded,
    /// NATS JetStream.
    JetStream {
        url: String,
        replicas: usize,
        stream: String,
        subject_prefix: String,
        /// TLS to the servers.
        tls: arc_eventlog::jetstream::NatsTls,
    },
}

/// Sessions the embedded media node takes at most unless configured.
pub const MEDIA_CAPACITY_DEFAULT: u32 = 500;
/// The most `media_capacity` may be.
pub const MEDIA_CAPACITY_MAX: u32 = 100_000;

/// Complete settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// `dev`: where the embedded media node's UDP port binds.
    pub media_udp: SocketAddr,
    /// `dev`: the IPs the embedded media node announces as host candidates.
    pub media_announce: Vec<std::net::IpAddr>,
    /// `dev`: the embedded media node's worker threads (0: one per CPU).
    pub media_workers: usize,
    /// `dev`: sessions the embedded media node takes at most (also its placement capacity).
    pub media_capacity: u32,
    /// `dev`: whether the embedded node protects forwarded media itself.
    pub media_own_srtp_egress: bool,
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub log: LogConfig,
    pub database_url: String,
    pub admin_key: Option<String>,
    /// The named admin keys (`admin_keys`); the unnamed one is named `admin`.
    pub admin_keys: Vec<AdminKey>,
    /// HTTPS, when configured.
    pub tls: Option<Tls>,
    pub janitor_interval: Duration,
    /// How long a signalling socket may stay silent before its participant is removed.
    pub signal_timeout: Duration,
    /// The STUN and TURN servers clients are told of.
    pub ice: IceSettings,
    /// Failed authentications, requests per app and sessions per token, a minute, before `429`.
    pub limits: crate::api::limits::LimitSettings,
    pub master_key: Option<String>,
    pub token_max_ttl_s: u32,
    pub secret_grace_s: u32,
    pub webhook: WebhookSettings,
}

/// STUN and TURN servers for clients (`join`'s `ice_servers`).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct IceSettings {
    pub stun: Vec<String>,
    pub turn: Vec<String>,
    /// Shared with the TURN servers; credentials are derived from it.
    pub turn_secret: Option<String>,
    pub turn_ttl: Duration,
}

impl std::fmt::Debug for IceSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IceSettings")
            .field("stun", &self.stun)
            .field("turn", &self.turn)
            .field("turn_secret", &self.turn_secret.as_ref().map(|_| "***"))
            .field("turn_ttl", &self.turn_ttl)
            .finish()
    }
}

/// Default lifetime of TURN credentials (6 h).
pub const TURN_TTL_S_DEFAULT: u64 = 6 * 3600;

impl IceSettings {
    fn resolve(
        stun: Option<String>,
        turn: Option<String>,
        secret: Option<String>,
        ttl_s: Option<u64>,
    ) -> Result<Self, ControlError> {
        let list = |text: Option<String>, schemes: &[&str], what: &str| -> Result<Vec<String>, ControlError> {
            let mut out = Vec::new();
            for url in text.unwrap_or_default().split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let ok = schemes.iter().any(|s| url.strip_prefix(s).is_some_and(|rest| !rest.is_empty()));
                if !ok || url.len() > 512 || url.chars().any(char::is_whitespace) {
                    return Err(ControlError::Config(format!("{what}: {url:?} is not a {} URL", schemes.join(" or "))));
                }
                out.push(url.to_owned());
            }
            Ok(out)
        };
        let stun = list(stun, &["stun:", "stuns:"], "stun_urls")?;
        let turn = list(turn, &["turn:", "turns:"], "turn_urls")?;
        let turn_secret = secret.filter(|s| !s.is_empty());
        if !turn.is_empty() && turn_secret.is_none() {
            return Err(ControlError::Config(
                "turn_urls needs turn_secret (the TURN servers' static-auth-secret)".into(),
            ));
        }
        let ttl_s = ttl_s.unwrap_or(TURN_TTL_S_DEFAULT);
        if !(60..=7 * 86_400).contains(&ttl_s) {
            return Err(ControlError::Config(format!("turn_ttl_s must be 60..=604800, not {ttl_s}")));
        }
        Ok(Self { stun, turn, turn_secret, turn_ttl: Duration::from_secs(ttl_s) })
    }
}

/// How webhooks are delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSettings {
    /// Attempts before a delivery is dead-lettered.
    pub attempts_max: u32,
    /// Delay before the first retry; doubles per attempt up to `backoff_max`.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Timeout of one request.
    pub timeout: Duration,
    /// Extra trusted CA certificates (PEM) for `https://` endpoints.
    pub ca_pem: Option<Vec<u8>>,
    /// Which non-public addresses webhooks may reach.
    pub policy: arc_webhooks::ssrf::AddressPolicy,
}

impl Config {
    /// Where the embedded log lives.
    pub fn events_path(&self) -> PathBuf {
        self.data_dir.join("events.db")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ice_servers_are_checked() {
        let r = |stun: Option<&str>, turn: Option<&str>, secret: Option<&str>, ttl: Option<u64>| {
            IceSettings::resolve(stun.map(Into::into), turn.map(Into::into), secret.map(Into::into), ttl)
        };
        assert_eq!(r(None, None, None, None).map(|i| (i.stun.len(), i.turn.len())).ok(), Some((0, 0)));
        let ok = r(Some("stun:a:3478, stun:b"), Some("turn:t:3478?transport=udp,turns:t:5349"), Some("s"), None)
            .expect("valid");
        assert_eq!((ok.stun.len(), ok.turn.len(), ok.turn_ttl.as_secs()), (2, 2, TURN_TTL_S_DEFAULT));
        assert!(!format!("{ok:?}").contains("\"s\""), "the secret stays out of logs: {ok:?}");
        for (stun, turn, secret, ttl) in [
            (None, Some("turn:t:3478"), None, None),
            (Some("http://x"), None, None, None),
            (None, Some("stun:t"), Some("s"), None),
            (Some("stun:"), None, None, None),
            (None, Some("turn:t:3478"), Some("s"), Some(10)),
        ] {
            assert!(r(stun, turn, secret, ttl).is_err(), "{stun:?} {turn:?} {secret:?} {ttl:?}");
        }
    }

    #[test]
    fn flags_beat_env_beat_file() {
        let file: Settings =
            toml::from_str("listen = \"127.0.0.1:1\"\nnats_replicas = 3\ndata_dir = \"/f\"").expect("valid toml");
        let env = Settings { listen: Some("127.0.0.1:2".into()), ..Default::default() };
        let flags = Settings { data_dir: Some("/flag".into()), ..Default::default() };
        let s = file.overridden_by(env).overridden_by(flags);
        assert_eq!(s.listen.as_deref(), Some("127.0.0.1:2"));
        assert_eq!(s.data_dir, Some(PathBuf::from("/flag")));
        assert_eq!(s.nats_replicas, Some(3));
    }

    #[test]
    fn bad_settings_are_named() {
        assert!(toml::from_str::<Settings>("lisen = 1").is_err());
        let err = Settings { listen: Some("nowhere".into()), ..Default::default() }.resolve(Mode::Dev);
        assert!(matches!(err, Err(ControlError::Config(m)) if m.contains("nowhere")));
        let err = Settings::default().resolve(Mode::Serve);
        assert!(matches!(err, Err(ControlError::Config(m)) if m.contains("--nats")));
        let err = Settings { nats_url: Some("nats://x".into()), ..Default::default() }.resolve(Mode::Serve);
        assert!(matches!(err, Err(ControlError::Config(m)) if m.contains("--database")));
        let err = Settings { media_srtp_egress: Some("fast".into()), ..Default::default() }.resolve(Mode::Dev);
        assert!(matches!(err, Err(ControlError::Config(m)) if m.contains("media_srtp_egress")));
        let err = Settings { media_capacity: Some(0), ..Default::default() }.resolve(Mode::Dev);
        assert!(matches!(err, Err(ControlError::Config(m)) if m.contains("media_capacity")));
        let dev = Settings::default().resolve(Mode::Dev).expect("dev needs nothing");
        assert!(dev.media_own_srtp_egress);
        assert_eq!(dev.media_capacity, MEDIA_CAPACITY_DEFAULT);
        assert_eq!(dev.log, LogConfig::Embedded);
        assert!(dev.database_url.starts_with("sqlite://"));
    }
}

/// Where HTTPS gets its certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tls {
    /// The operator's PEM files (reloaded on SIGHUP).
    Files(crate::tls::TlsFiles),
    /// `dev`: a pair made into `<data_dir>/tls/` on first use.
    SelfSigned,
}

/// Shortest admin key accepted.
pub const ADMIN_KEY_LEN_MIN: usize = 16;
/// Most named admin keys.
pub const ADMIN_KEYS_MAX: usize = 64;

/// A named admin key: the log records what it does as `Actor::Admin { name }`.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminKey {
    pub name: String,
    pub key: String,
}

impl std::fmt::Debug for AdminKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminKey").field("name", &self.name).field("key", &"***").finish()
    }
}

/// Whether `name` may name an admin key: 1 to 32 of `a-z 0-9 - _` (it is
/// the id of the key's `operator` aggregate, a subject token).
pub fn admin_key_name_ok(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_".contains(&b))
}

/// Parses `name=key,name=key` (empty: none). Names are unique and well
/// formed, keys at least [`ADMIN_KEY_LEN_MIN`] characters and unique; the
/// error never contains a key.
pub fn parse_admin_keys(text: &str) -> Result<Vec<AdminKey>, ControlError> {
    let mut keys: Vec<AdminKey> = Vec::new();
    for (i, entry) in text.split(',').map(str::trim).filter(|e| !e.is_empty()).enumerate() {
        let Some((name, key)) = entry.split_once('=') else {
            return Err(ControlError::Config(format!("admin_keys entry {} is not name=key", i + 1)));
        };
        let (name, key) = (name.trim(), key.trim());
        if !admin_key_name_ok(name) {
            return Err(ControlError::Config(format!(
                "admin_keys entry {}: the name must be 1 to 32 of a-z, 0-9, '-', '_'",
                i + 1
            )));
        }
        if key.len() < ADMIN_KEY_LEN_MIN {
            return Err(ControlError::Config(format!(
                "admin_keys: the key named {name} must be at least {ADMIN_KEY_LEN_MIN} characters"
            )));
        }
        if keys.iter().any(|k| k.name == name) {
            return Err(ControlError::Config(format!("admin_keys: the name {name} is given twice")));
        }
        if keys.iter().any(|k| k.key == key) {
            return Err(ControlError::Config(format!("admin_keys: the key named {name} is also another name's key")));
        }
        keys.push(AdminKey { name: name.to_owned(), key: key.to_owned() });
    }
    if keys.len() > ADMIN_KEYS_MAX {
        return Err(ControlError::Config(format!("admin_keys: at most {ADMIN_KEYS_MAX} keys")));
    }
    Ok(keys)
}

#[cfg(test)]
mod admin_key_tests {
    use super::*;

    #[test]
    fn named_admin_keys_parse_and_bad_ones_say_why_without_the_key() {
        let keys = parse_admin_keys(" ops=0123456789abcdef0123 , ci-bot=fedcba9876543210fedc ").expect("two keys");
        assert_eq!(keys.iter().map(|k| k.name.as_str()).collect::<Vec<_>>(), ["ops", "ci-bot"]);
        assert!(!format!("{keys:?}").contains("0123456789"), "Debug hides keys");
        assert!(parse_admin_keys("").expect("none").is_empty());
        for (bad, why) in [
            ("ops", "not name=key"),
            ("Ops=0123456789abcdef0123", "the name must be"),
            ("=0123456789abcdef0123", "the name must be"),
            ("ci.bot=0123456789abcdef0123", "the name must be"),
            ("ops=short", "at least 16"),
            ("ops=0123456789abcdef0123,ops=fedcba9876543210fedc", "given twice"),
            ("ops=0123456789abcdef0123,ci=0123456789abcdef0123", "also another name's key"),
        ] {
            let e = parse_admin_keys(bad).expect_err(bad).to_string();
            assert!(e.contains(why), "{bad}: {e}");
            assert!(!e.contains("0123456789abcdef"), "{bad}: the error shows a key: {e}");
        }
    }
}
