//! Wiring: open the log and the read-model database, start the projection
//! runners and janitors, and serve HTTP until told to stop.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use arc_eventlog::jetstream::{JetStreamConfig, JetStreamLog};
use arc_eventlog::sqlite::SqliteLog;
use arc_eventlog::{EventLog, Position, Repository};
use tokio::task::JoinSet;

use crate::api::{ApiState, router};
use crate::config::{Config, LogConfig};
use crate::error::ControlError;
use crate::projection::apps::AppsProjection;
use crate::projection::participants::ParticipantsProjection;
use crate::projection::revoked::RevokedProjection;
use crate::projection::tracks::TracksProjection;
use crate::projection::{
    self, Checkpoint, Projection, Runner, nodes::NodesProjection, notified, rooms::RoomsProjection,
};
use crate::readdb::ReadDb;

/// Node id of the media node embedded in `dev`.
pub const DEV_NODE_ID: &str = "node-dev";

/// Opens the configured event log (and, for JetStream, the NATS connection
/// media nodes are reached over).
pub async fn open_log(config: &Config) -> Result<Arc<dyn EventLog>, ControlError> {
    Ok(open_log_and_nats(config).await?.0)
}

async fn open_log_and_nats(config: &Config) -> Result<(Arc<dyn EventLog>, Option<async_nats::Client>), ControlError> {
    Ok(match &config.log {
        LogConfig::Embedded => (Arc::new(SqliteLog::open(&config.events_path()).await?), None),
        LogConfig::JetStream { url, replicas, stream, subject_prefix, tls } => {
            let mut js = JetStreamConfig::new(url);
            js.tls = tls.clone();
            js.replicas = *replicas;
            js.stream = stream.clone();
            js.subject_prefix = subject_prefix.clone();
            let log = JetStreamLog::connect(&js).await?;
            let client = log.client();
            (Arc::new(log), Some(client))
        }
    })
}

/// The admin key: from the config, or (embedded mode) read from or generated
/// into `<data_dir>/admin.key`. Returns the key and whether it was just made.
/// What HTTPS serves with.
#[derive(Debug, Clone)]
pub struct Https {
    pub cert: std::path::PathBuf,
    /// SHA-256 of the certificate, `AB:CD:…`.
    pub fingerprint: String,
}

/// `serve` may have named keys only (`admin_keys`): then there is none.
pub fn admin_key(config: &Config) -> Result<Option<(String, bool)>, ControlError> {
    if let Some(key) = &config.admin_key {
        if key.len() < crate::config::ADMIN_KEY_LEN_MIN {
            return Err(ControlError::Config(format!(
                "admin_key must be at least {} characters",
                crate::config::ADMIN_KEY_LEN_MIN
            )));
        }
        return Ok(Some((key.clone(), false)));
    }
    if config.log != LogConfig::Embedded {
        if !config.admin_keys.is_empty() {
            return Ok(None);
        }
        return Err(ControlError::Config(
            "serve needs --admin-key or --admin-keys (or ARC_ADMIN_KEY / ARC_ADMIN_KEYS, or admin_key / admin_keys)"
                .into(),
        ));
    }
    let path = config.data_dir.join("admin.key");
    if let Ok(key) = std::fs::read_to_string(&path) {
        return Ok(Some((key.trim().to_owned(), false)));
    }
    let key = format!("arcadm_{}", random_hex(24));
    write_secret(&path, &key)?;
    Ok(Some((key, true)))
}

/// Every admin key this instance takes: the unnamed one as `admin`, then the
/// named ones; a named `admin` or a key given twice is refused.
fn all_admin_keys(
    unnamed: Option<&str>,
    named: &[crate::config::AdminKey],
) -> Result<Vec<crate::config::AdminKey>, ControlError> {
    let mut keys = Vec::with_capacity(named.len() + 1);
    if let Some(key) = unnamed {
        if named.iter().any(|k| k.name == "admin") {
            return Err(ControlError::Config("admin_keys names a key admin, the name of admin_key: rename one".into()));
        }
        if let Some(same) = named.iter().find(|k| k.key == key) {
            return Err(ControlError::Config(format!("admin_keys: the key named {} is also admin_key", same.name)));
        }
        keys.push(crate::config::AdminKey { name: "admin".into(), key: key.to_owned() });
    }
    keys.extend(named.iter().cloned());
    Ok(keys)
}

/// The master key sealing app secrets: from the config, or (embedded mode)
/// read from or generated into `<data_dir>/master.key`. Losing it makes every
/// app secret unreadable, so `serve` never generates one.
pub fn master_key(config: &Config) -> Result<arc_auth::seal::MasterKey, ControlError> {
    let parse = |text: &str, from: &str| {
        arc_auth::seal::MasterKey::parse(text).map_err(|e| ControlError::Config(format!("master key from {from}: {e}")))
    };
    if let Some(key) = &config.master_key {
        return parse(key, "configuration");
    }
    if config.log != LogConfig::Embedded {
        return Err(ControlError::Config(
            "serve needs --master-key (or ARC_MASTER_KEY, or master_key): 64 hex characters, e.g. from \
             `openssl rand -hex 32`; keep it safe, it seals every app secret"
                .into(),
        ));
    }
    let path = config.data_dir.join("master.key");
    if let Ok(text) = std::fs::read_to_string(&path) {
        return parse(&text, &path.display().to_string());
    }
    let key = arc_auth::seal::MasterKey::generate();
    write_secret(&path, &key.encode())?;
    Ok(key)
}

fn random_hex(bytes: usize) -> String {
    use rand::RngCore;
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn write_secret(path: &Path, value: &str) -> Result<(), ControlError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| ControlError::Config(format!("creating {}: {e}", dir.display())))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| ControlError::Config(format!("writing {}: {e}", path.display())))?;
    f.write_all(value.as_bytes()).map_err(|e| ControlError::Config(format!("writing {}: {e}", path.display())))?;
    Ok(())
}

/// A running control plane.
#[derive(Debug)]
pub struct Running {
    /// Where HTTP listens.
    pub addr: SocketAddr,
    /// The log in use.
    pub log: Arc<dyn EventLog>,
    /// The admin key, and whether it was generated by this start.
    /// HTTPS, when configured: the certificate in use and its fingerprint.
    pub https: Option<Https>,
    /// The unnamed admin key (named `admin`), and whether it was just made.
    pub admin_key: Option<(String, bool)>,
    /// The master key's id (`mk_…`, safe to show).
    pub master_key_id: String,
    /// The embedded media node's UDP address (`dev` only).
    pub media_udp: Option<SocketAddr>,
    #[cfg(feature = "embedded-node")]
    media: Option<crate::embedded::EmbeddedNode>,
    tasks: JoinSet<()>,
}

impl Running {
    /// Runs until `shutdown` completes, then stops every task.
    pub async fn serve_until(mut self, shutdown: impl std::future::Future<Output = ()> + Send + 'static) {
        tokio::select! {
            () = shutdown => tracing::info!("shutting down"),
            Some(done) = self.tasks.join_next() => tracing::error!(?done, "a control-plane task stopped"),
        }
        #[cfg(feature = "embedded-node")]
        if let Some(media) = &self.media {
            // Sessions end with reason node_shutdown; give the reporter a moment to record them.
            media.shutdown().await;
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        self.tasks.shutdown().await;
    }
}

/// Spawns a projection's runner, writing while it holds its lease.
async fn spawn_runner<P: Projection>(
    tasks: &mut JoinSet<()>,
    db: &ReadDb,
    log: &Arc<dyn EventLog>,
    leases: &arc_lease::Leases,
    progress: &mut Vec<crate::usecase::LocalProjection>,
    followers: &mut Followers,
) -> Result<(), ControlError> {
    let runner = Runner::<P>::new(db.clone(), log.clone()).await?.with_leases(leases);
    progress.push(crate::usecase::LocalProjection {
        name: P::NAME,
        progress: runner.progress(),
        failures: runner.failures(),
    });
    let sender = runner.progress_sender();
    followers.insert(P::NAME, Box::new(move |position, events| notified(&sender, Checkpoint { position, events })));
    tasks.spawn(runner.run());
    Ok(())
}

/// What moves each projection's progress when another instance's writer
/// commits (by projection name).
type Followers = HashMap<&'static str, Box<dyn Fn(Position, u64) + Send>>;

fn webhook_config(config: &Config) -> arc_webhooks::WebhookConfig {
    arc_webhooks::WebhookConfig {
        attempts_max: config.webhook.attempts_max,
        backoff_base: config.webhook.backoff_base,
        backoff_max: config.webhook.backoff_max,
        timeout: config.webhook.timeout,
        concurrency: 16,
        ca_pem: config.webhook.ca_pem.clone(),
        policy: config.webhook.policy.clone(),
    }
}

/// Opens everything and starts serving.
pub async fn start(config: &Config) -> Result<Running, ControlError> {
    let admin_key = admin_key(config)?;
    let admin_keys = all_admin_keys(admin_key.as_ref().map(|(k, _)| k.as_str()), &config.admin_keys)?;
    // HTTPS before anything starts: a pair that does not load stops here.
    let tls = match &config.tls {
        None => None,
        Some(crate::config::Tls::Files(files)) => Some(files.clone()),
        Some(crate::config::Tls::SelfSigned) => Some(crate::tls::self_signed(&config.data_dir.join("tls"))?),
    };
    let tls = match tls {
        Some(files) => {
            let fingerprint = crate::tls::fingerprint(&files.cert)?;
            let reloadable = crate::tls::Reloadable::new(files.clone())?;
            reloadable.reload_on_sighup();
            Some((files, fingerprint, reloadable))
        }
        None => None,
    };
    // The port next: a taken one stops the start before anything opens.
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| ControlError::Config(format!("cannot listen on {}: {e}", config.listen)))?;
    let addr = listener.local_addr().map_err(|e| ControlError::Config(e.to_string()))?;
    let master_key = Arc::new(master_key(config)?);
    let master_key_id = master_key.key_id();
    let (log, nats) = open_log_and_nats(config).await?;
    // Every append this instance makes is counted and timed for /metrics.
    let metrics = crate::api::metrics::Metrics::new();
    let log: Arc<dyn EventLog> = Arc::new(crate::metered::MeteredLog::new(log, metrics.log.clone()));
    let db = ReadDb::connect(&config.database_url).await?;
    arc_webhooks::migrate(&db.pool).await.map_err(|e| ControlError::Unavailable(format!("webhook tables: {e}")))?;
    let mut tasks = JoinSet::new();
    #[cfg_attr(not(feature = "embedded-node"), allow(unused_mut))]
    let mut media = crate::media::MediaRouter { local: None, nats, board: Some(log.load_board()) };
    #[cfg_attr(not(feature = "embedded-node"), allow(unused_mut))]
    let mut media_udp = None;
    #[cfg(feature = "embedded-node")]
    let mut media_handle = None;

    // One writer per cluster for each projection, the webhooks and the janitor.
    let leases = arc_lease::Leases::for_database(&config.database_url);
    let mut projections = Vec::new();
    let mut followers = Followers::new();
    let f = &mut followers;
    let p = &mut projections;
    spawn_runner::<RoomsProjection>(&mut tasks, &db, &log, &leases, p, f).await?;
    spawn_runner::<NodesProjection>(&mut tasks, &db, &log, &leases, p, f).await?;
    spawn_runner::<AppsProjection>(&mut tasks, &db, &log, &leases, p, f).await?;
    spawn_runner::<ParticipantsProjection>(&mut tasks, &db, &log, &leases, p, f).await?;
    spawn_runner::<TracksProjection>(&mut tasks, &db, &log, &leases, p, f).await?;
    spawn_runner::<RevokedProjection>(&mut tasks, &db, &log, &leases, p, f).await?;
    let webhooks = arc_webhooks::spawn(
        &mut tasks,
        db.pool.clone(),
        log.clone(),
        master_key.clone(),
        webhook_config(config),
        &leases,
    )
    .map_err(|e| ControlError::Config(format!("webhooks: {e}")))?;
    let webhook_progress = webhooks.clone();
    followers.insert(
        arc_webhooks::PROJECTION_NAME,
        Box::new(move |position, _| arc_webhooks::advance(&webhook_progress, position)),
    );
    if let Some(url) = leases.url() {
        // The writers' commits move this instance's progress at once, so
        // read-your-writes holds here too.
        let url = url.to_owned();
        tasks.spawn(arc_lease::listen(url, move |name, position, events| {
            if let Some(follow) = followers.get(name) {
                follow(Position(position), events);
            }
        }));
    }
    // Data messages: in process for one instance, over core NATS for several.
    let signal_relay = match (&media.nats, &config.log) {
        (Some(client), LogConfig::JetStream { stream, .. }) => {
            let relay = crate::signal::Relay::nats(client.clone(), stream);
            tasks.spawn(relay.clone().run());
            relay
        }
        _ => crate::signal::Relay::local(),
    };
    if config.log == LogConfig::Embedded {
        // `dev` carries its own media node, so one process is a whole platform.
        #[cfg(feature = "embedded-node")]
        {
            let node = crate::embedded::start(config, log.clone(), signal_relay.signal_sender(), &mut tasks).await?;
            media_udp = Some(node.local_addr());
            media.local = Some((DEV_NODE_ID.to_owned(), node.service()));
            media_handle = Some(node);
        }
        #[cfg(not(feature = "embedded-node"))]
        tracing::warn!("built without the embedded-node feature: dev has no media node");
    }

    tasks.spawn(crate::janitor::run(
        db.clone(),
        log.clone(),
        media.clone(),
        config.janitor_interval,
        leases.lease(crate::janitor::LEASE),
    ));
    // Media nodes' reports become room and track events (checked against
    // where each session is placed) in the instance holding this lease.
    tasks.spawn(crate::reports::run(
        db.clone(),
        log.clone(),
        leases.lease(crate::reports::LEASE),
        metrics.reports.clone(),
    ));
    // One follower of the log for every signalling socket of this instance.
    let signal_hub = crate::signal::Hub::new();
    tasks.spawn(signal_hub.clone().run(log.clone()));
    let services = Arc::new(crate::usecase::Services {
        log: log.clone(),
        db,
        rooms: Repository::new(log.clone()),
        apps: Repository::new(log.clone()),
        tracks: Repository::new(log.clone()),
        participants: Repository::new(log.clone()),
        nodes: Repository::new(log.clone()),
        token_policy: arc_auth::token::TokenPolicy { max_ttl_s: config.token_max_ttl_s, ..Default::default() },
        master_key,
        secret_grace_s: config.secret_grace_s,
        projections,
        media,
        fault_skip_node_requests: std::env::var("ARC_FAULT_SKIP_NODE_REQUESTS").is_ok_and(|v| v == "1"),
        quota: crate::usecase::quota::QuotaTurns::new(
            crate::readdb::lock_pool(&config.database_url, crate::usecase::quota::TURN_CONNECTIONS_MAX).await?,
        ),
        signal: signal_hub.clone(),
        signal_relay,
        signal_timeout: config.signal_timeout,
        webhook_policy: config.webhook.policy.clone(),
        ice: config.ice.clone(),
    });
    let state = Arc::new(ApiState {
        services,
        admin_keys,
        started: Instant::now(),
        webhooks: Some(webhooks.subscribe()),
        metrics,
        dev_tokens: config.log == LogConfig::Embedded,
        auth_limits: crate::api::limits::AuthLimits::with(config.limits),
    });
    #[cfg_attr(not(feature = "embedded-node"), allow(unused_mut))]
    let mut app = router(state);
    // `dev`: the embedded node's own metrics and probes, where a separate
    // arc-media would serve them (`/media/metrics` for the media scrape job).
    #[cfg(feature = "embedded-node")]
    if let Some(node) = &media_handle {
        app = app.nest("/media", node.operator_router(log.clone()));
    }
    let https = match tls {
        Some((files, fingerprint, reloadable)) => {
            let listener = crate::tls::TlsListener::new(listener, reloadable)
                .map_err(|e| ControlError::Config(format!("cannot listen on {}: {e}", config.listen)))?;
            tasks.spawn(async move {
                use axum::serve::ListenerExt as _;
                // The peer's address: development tokens go to this machine only.
                let app = app.into_make_service_with_connect_info::<SocketAddr>();
                if let Err(e) = axum::serve(listener.tap_io(|_| {}), app).await {
                    tracing::error!(error = %e, "https server stopped");
                }
            });
            Some(Https { cert: files.cert, fingerprint })
        }
        None => {
            tasks.spawn(async move {
                // The peer's address: development tokens go to this machine only.
                let app = app.into_make_service_with_connect_info::<SocketAddr>();
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!(error = %e, "http server stopped");
                }
            });
            None
        }
    };
    Ok(Running {
        addr,
        https,
        log,
        admin_key,
        master_key_id,
        media_udp,
        #[cfg(feature = "embedded-node")]
        media: media_handle,
        tasks,
    })
}

async fn catch_up_one<P: Projection>(
    db: &ReadDb,
    log: &Arc<dyn EventLog>,
    head: arc_eventlog::Position,
    out: &mut Vec<(&'static str, u64)>,
) -> Result<(), ControlError> {
    let mut runner = Runner::<P>::new(db.clone(), log.clone()).await?;
    let before = runner.checkpoint().events;
    runner.follow(Some(head)).await?;
    out.push((P::NAME, runner.checkpoint().events - before));
    Ok(())
}

/// How long an offline tool waits for a lease (a just-killed instance's
/// database session may take a moment to end).
const TOOL_LEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Takes the leases of `names` for an offline tool (held until dropped), so
/// it never writes beside a running instance; says who holds one it cannot get.
async fn take_leases(config: &Config, names: &[&str]) -> Result<Vec<arc_lease::Lease>, ControlError> {
    let leases = arc_lease::Leases::for_database(&config.database_url);
    let mut held = Vec::new();
    for name in names {
        let mut lease = leases.lease(name);
        let deadline = Instant::now() + TOOL_LEASE_WAIT;
        while !lease.acquire().await {
            if Instant::now() >= deadline {
                return Err(ControlError::Unavailable(format!(
                    "{name} is being written by a running arc-control (its session shows in pg_stat_activity as \
                     'arc-lease {name} pid …'), or the database is unreachable: stop the instances first"
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        held.push(lease);
    }
    Ok(held)
}

/// Applies the log to every read model from its checkpoint up to the log's
/// current head, then returns the events applied per projection. The offline
/// twin of what a running arc-control does continuously; refuses while an
/// instance writes the read models.
pub async fn catch_up(config: &Config) -> Result<Vec<(&'static str, u64)>, ControlError> {
    let mut names = projection::ALL.to_vec();
    names.push(WEBHOOKS);
    let _leases = take_leases(config, &names).await?;
    let log = open_log(config).await?;
    let db = ReadDb::connect(&config.database_url).await?;
    let head = log.head().await?;
    let mut out = Vec::new();
    catch_up_one::<RoomsProjection>(&db, &log, head, &mut out).await?;
    catch_up_one::<NodesProjection>(&db, &log, head, &mut out).await?;
    catch_up_one::<AppsProjection>(&db, &log, head, &mut out).await?;
    catch_up_one::<ParticipantsProjection>(&db, &log, head, &mut out).await?;
    catch_up_one::<TracksProjection>(&db, &log, head, &mut out).await?;
    catch_up_one::<RevokedProjection>(&db, &log, head, &mut out).await?;
    arc_webhooks::migrate(&db.pool).await.map_err(|e| ControlError::Unavailable(format!("webhook tables: {e}")))?;
    let n = arc_webhooks::catch_up(&db.pool, log.clone(), head)
        .await
        .map_err(|e| ControlError::Unavailable(format!("webhook deliveries: {e}")))?;
    out.push((WEBHOOKS, n));
    Ok(out)
}

/// Name of the webhook delivery planner among the projections.
pub const WEBHOOKS: &str = arc_webhooks::PROJECTION_NAME;

async fn rebuild_one<P: Projection>(
    db: &ReadDb,
    log: &Arc<dyn EventLog>,
    progress: &mut impl FnMut(&str, u64, std::time::Duration),
) -> Result<(), ControlError> {
    let t = Instant::now();
    let n = projection::rebuild::<P>(db, log.clone()).await?;
    progress(P::NAME, n, t.elapsed());
    Ok(())
}

/// Rebuilds the named projections (or all) from the start of the log.
/// Calls `progress(name, events)` after each. Refuses while an instance
/// writes them (their leases).
pub async fn rebuild(
    config: &Config,
    names: &[String],
    mut progress: impl FnMut(&str, u64, std::time::Duration),
) -> Result<(), ControlError> {
    let log = open_log(config).await?;
    let db = ReadDb::connect(&config.database_url).await?;
    let all = names.is_empty() || names.iter().any(|n| n == "all");
    for name in names {
        if name != "all" && name != WEBHOOKS && !projection::ALL.contains(&name.as_str()) {
            return Err(ControlError::Config(format!(
                "unknown projection {name:?}; known: {}, {WEBHOOKS}",
                projection::ALL.join(", ")
            )));
        }
    }
    let wanted = |n: &str| all || names.iter().any(|x| x == n);
    let mut chosen: Vec<&str> = projection::ALL.iter().copied().filter(|n| wanted(n)).collect();
    if wanted(WEBHOOKS) {
        chosen.push(WEBHOOKS);
    }
    let _leases = take_leases(config, &chosen).await?;
    if wanted(RoomsProjection::NAME) {
        rebuild_one::<RoomsProjection>(&db, &log, &mut progress).await?;
    }
    if wanted(NodesProjection::NAME) {
        rebuild_one::<NodesProjection>(&db, &log, &mut progress).await?;
    }
    if wanted(AppsProjection::NAME) {
        rebuild_one::<AppsProjection>(&db, &log, &mut progress).await?;
    }
    if wanted(ParticipantsProjection::NAME) {
        rebuild_one::<ParticipantsProjection>(&db, &log, &mut progress).await?;
    }
    if wanted(TracksProjection::NAME) {
        rebuild_one::<TracksProjection>(&db, &log, &mut progress).await?;
    }
    if wanted(RevokedProjection::NAME) {
        rebuild_one::<RevokedProjection>(&db, &log, &mut progress).await?;
    }
    if wanted(WEBHOOKS) {
        let t = Instant::now();
        arc_webhooks::migrate(&db.pool).await.map_err(|e| ControlError::Unavailable(format!("webhook tables: {e}")))?;
        let n = arc_webhooks::rebuild(&db.pool, log.clone())
            .await
            .map_err(|e| ControlError::Unavailable(format!("webhook deliveries: {e}")))?;
        progress(WEBHOOKS, n, t.elapsed());
    }
    Ok(())
}
