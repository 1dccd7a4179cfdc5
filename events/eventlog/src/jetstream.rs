//! The NATS JetStream backend: the log for clusters.
//!
//! - One stream, [`STREAM_NAME`] by default, file storage, capturing
//!   `arc.evt.>`; each aggregate has its own subject `arc.evt.<kind>.<id>`.
//! - One append is one message whose payload is the JSON array of its events,
//!   so a command's events are stored atomically.
//! - Optimistic concurrency: `Nats-Expected-Last-Subject-Sequence` carries the
//!   stream sequence of the aggregate's last message (`0` for "no events yet").
//!   The backend remembers, per aggregate, the last seq and the stream
//!   sequence holding it; when it cannot vouch for the caller's expected seq it
//!   sends an impossible sequence so the server refuses the write (or answers
//!   it as a duplicate), and the actual seq is read back for the conflict.
//! - Idempotency: `Nats-Msg-Id` is the batch's first event id; the server
//!   drops re-sends within the stream's duplicate window.
//! - Positions: `stream_sequence << 16 | index_in_batch`, so every event has
//!   its own totally ordered position.
//! - The stream is created or updated at start with explicit limits; it never
//!   discards old events (`discard: new`, no age or count limit). A cluster
//!   still forming (no meta leader yet, too few peers known for the replicas)
//!   is waited for, up to [`JetStreamConfig::startup_wait`], with a warning
//!   per attempt; a setting the servers can never meet fails at once.
//! - Outages: while the connection is down every call fails at once
//!   ([`LogError::Unavailable`], the API's 503); the client reconnects within
//!   [`RECONNECT_DELAY_MAX`] of a server answering again, and each reconnect
//!   ends live subscriptions (with an error) so their owners resubscribe from
//!   their own position at once. Subscriptions read through an ephemeral pull
//!   consumer with a [`SUBSCRIBE_HEARTBEAT`] idle heartbeat, and check the
//!   consumer sequence for gaps: a stalled or gapped consumer ends the
//!   subscription with an error rather than going quiet.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_events::{AggregateRef, RawEvent};
use async_nats::jetstream::{self, consumer, context::PublishErrorKind, stream};
use async_trait::async_trait;
use futures::StreamExt;

use crate::error::LogError;
use crate::log::{
    APPEND_BYTES_MAX, AppendRequest, Appended, EventLog, Expected, Position, RecordedEvent, Subscription, prepare,
    validate,
};

/// Default stream name.
pub const STREAM_NAME: &str = "ARC_EVENTS";
/// Subject prefix; an aggregate's subject is `arc.evt.<kind>.<id>`.
pub const SUBJECT_PREFIX: &str = "arc.evt";
/// Bits of a position that hold the index inside a message.
const INDEX_BITS: u32 = 16;
/// Aggregates whose last sequence the backend remembers.
const SEQ_CACHE_MAX: usize = 100_000;
/// Attempts of an `Expected::Any` append under contention from other processes.
const ANY_RETRIES_MAX: u32 = 32;
/// Locks that serialise this process's `Expected::Any` appends per aggregate
/// (striped by hash), so local appenders queue instead of racing.
const ANY_LOCK_STRIPES: usize = 64;
/// Largest message the stream accepts (the payload limit plus room for headers).
const MESSAGE_BYTES_MAX: i32 = 1024 * 1024;
/// Longest wait between two reconnect attempts (the client's default backs
/// off to 4 s, which kept writes failing for seconds after NATS was back).
pub const RECONNECT_DELAY_MAX: Duration = Duration::from_millis(250);
/// Idle heartbeat asked of a subscription's consumer; two missed ones end
/// the subscription.
pub const SUBSCRIBE_HEARTBEAT: Duration = Duration::from_millis(500);
/// Messages pulled per request by a subscription.
const SUBSCRIBE_BATCH: usize = 1000;

/// Direct gets `read_all` keeps in flight (one round trip each, answered in order).
const READ_AHEAD: usize = 128;

/// How to reach JetStream and how the stream is configured.
#[derive(Debug, Clone)]
pub struct JetStreamConfig {
    /// One or more server URLs, comma-separated (`nats://a:4222,nats://b:4222`).
    pub url: String,
    /// Stream name.
    pub stream: String,
    /// Subject prefix: aggregates live at `<prefix>.<kind>.<id>` (tests use their own).
    pub subject_prefix: String,
    /// Replicas: 1 for a single server, 3 for a three-node cluster.
    pub replicas: usize,
    /// Window in which a re-sent batch is recognised as a duplicate.
    pub duplicate_window: Duration,
    /// Largest size of the stream in bytes; `-1` for no limit. Appends are
    /// refused (never old events deleted) when it is reached.
    pub max_bytes: i64,
    /// How long to wait for the server while connecting and setting up the stream.
    pub request_timeout: Duration,
    /// How long one operation (an append, a read) waits for its answer once
    /// connected: the bound on a write's 503 while a cluster elects a new
    /// stream leader.
    pub op_timeout: Duration,
    /// How long `connect` waits for a cluster that is still forming (no
    /// meta leader yet, too few peers known for the replicas) before it
    /// gives up.
    pub startup_wait: Duration,
    /// What this connection does beyond reading and appending: the control
    /// plane manages the stream; a media node opens what it finds.
    pub access: Access,
    /// TLS to the servers.
    pub tls: NatsTls,
}

/// TLS to NATS: required when a CA or a client certificate is given (or a
/// URL says `tls://`); the servers' certificates are checked against the
/// CA file (else the system's roots) and the host names in the URLs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatsTls {
    /// PEM file of the CA that signed the servers' certificates.
    pub ca_file: Option<std::path::PathBuf>,
    /// PEM files of this client's certificate and key, for servers that
    /// verify clients (`verify: true`).
    pub client: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl NatsTls {
    /// Checks the files can be read, naming the one that cannot.
    pub fn check(&self) -> Result<(), LogError> {
        let files = self.ca_file.iter().chain(self.client.iter().flat_map(|(c, k)| [c, k]));
        for path in files {
            std::fs::metadata(path).map_err(|e| LogError::Invalid(format!("NATS TLS file {}: {e}", path.display())))?;
        }
        Ok(())
    }

    fn required(&self, url: &str) -> bool {
        self.ca_file.is_some() || self.client.is_some() || url.split(',').any(|u| u.trim().starts_with("tls://"))
    }
}

/// What a connection may do to the stream and its buckets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    /// The control plane: creates the stream and its buckets when missing,
    /// updates the stream's settings, stores snapshots.
    Manage,
    /// A role with scoped credentials (a media node): opens the stream and
    /// buckets the control plane made, waiting while they do not exist yet;
    /// never creates, updates or deletes them and stores no snapshots; its
    /// replies arrive under `inbox_prefix` (a subject only it may subscribe
    /// to, where the shared `_INBOX.>` would let it read everyone's replies).
    Scoped { inbox_prefix: String },
}

impl JetStreamConfig {
    /// Defaults for a single server at `url`.
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            stream: STREAM_NAME.to_owned(),
            subject_prefix: SUBJECT_PREFIX.to_owned(),
            replicas: 1,
            duplicate_window: Duration::from_secs(120),
            max_bytes: -1,
            request_timeout: Duration::from_secs(5),
            op_timeout: Duration::from_secs(2),
            startup_wait: Duration::from_secs(60),
            access: Access::Manage,
            tls: NatsTls::default(),
        }
    }
}

/// The JetStream log. Cheap to clone.
#[derive(Clone, Debug)]
pub struct JetStreamLog {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    js: jetstream::Context,
    prefix: String,
    stream: stream::Stream<()>,
    /// aggregate → (last seq, stream sequence of the message holding it).
    seqs: Mutex<HashMap<AggregateRef, (u64, u64)>>,
    any_locks: Vec<tokio::sync::Mutex<()>>,
    /// Counts connections established (see [`EventLog::reconnects`]).
    reconnects: tokio::sync::watch::Receiver<u64>,
    /// Nodes' load samples, in the bucket `<stream>_LOAD`.
    board: Arc<crate::load::KvBoard>,
    /// Aggregate snapshots, in the bucket `<stream>_SNAP`.
    snapshots: Arc<crate::snapshot::KvSnapshots>,
}

fn position(stream_seq: u64, index: usize) -> Position {
    Position((stream_seq << INDEX_BITS) | index as u64)
}

fn split(position: Position) -> (u64, u64) {
    (position.0 >> INDEX_BITS, position.0 & ((1 << INDEX_BITS) - 1))
}

/// `urls` with any password replaced by `***`, for messages and logs.
pub fn redact_urls(urls: &str) -> String {
    urls.split(',')
        .map(|u| {
            let u = u.trim();
            let Some((scheme, rest)) = u.split_once("://") else { return u.to_owned() };
            let host_start = rest.find('/').unwrap_or(rest.len());
            match rest[..host_start].rsplit_once('@') {
                Some((userinfo, host)) => {
                    let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
                    format!("{scheme}://{user}:***@{host}{}", &rest[host_start..])
                }
                None => u.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The user and password given in the server URLs (`nats://user:pass@host`),
/// if any; the first URL that carries them wins. async-nats reads servers'
/// addresses from URLs but not the credentials in them.
fn credentials(servers: &[async_nats::ServerAddr]) -> Option<(String, String)> {
    servers.iter().find_map(|s| Some((s.username()?.to_owned(), s.password().unwrap_or_default().to_owned())))
}

/// Parses `nats://a:4222,nats://b:4222` into server addresses.
fn servers(urls: &str) -> Result<Vec<async_nats::ServerAddr>, LogError> {
    let list: Vec<async_nats::ServerAddr> = urls
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| u.parse().map_err(|e| LogError::Invalid(format!("NATS server URL {:?}: {e}", redact_urls(u)))))
        .collect::<Result<_, _>>()?;
    if list.is_empty() {
        return Err(LogError::Invalid("no NATS server URL given".into()));
    }
    Ok(list)
}

fn unavailable(e: impl std::fmt::Display) -> LogError {
    LogError::Unavailable(e.to_string())
}

fn parse_message(stream_seq: u64, payload: &[u8]) -> Result<Vec<RawEvent>, LogError> {
    serde_json::from_slice(payload)
        .map_err(|e| LogError::Corrupt { position: position(stream_seq, 0).0, reason: e.to_string() })
}

/// Whether the stream's stored settings differ from Arc's in anything Arc sets.
fn settings_differ(current: &stream::Config, wanted: &stream::Config) -> bool {
    current.subjects != wanted.subjects
        || current.max_bytes != wanted.max_bytes
        || current.duplicate_window != wanted.duplicate_window
        || current.max_message_size != wanted.max_message_size
        || current.num_replicas != wanted.num_replicas
        || current.allow_direct != wanted.allow_direct
        || current.deny_delete != wanted.deny_delete
        || current.deny_purge != wanted.deny_purge
        || current.description != wanted.description
}

/// What `open_stream` opened: the stream and the two buckets beside it.
type Prepared = (stream::Stream<()>, crate::load::KvBoard, crate::snapshot::KvSnapshots);

/// Creates or updates the stream and opens it and its buckets. A failure a
/// forming cluster gives for a while is [`LogError::Unavailable`]; one that
/// waiting will not fix (JetStream off, a bad setting) is
/// [`LogError::Backend`].
async fn open_stream(
    js: &mut jetstream::Context,
    config: &JetStreamConfig,
    mut stream_config: stream::Config,
) -> Result<Prepared, LogError> {
    js.set_timeout(config.request_timeout);
    let existing = match js.get_stream(&config.stream).await {
        Ok(mut s) => Some(
            s.info()
                .await
                .map_err(|e| LogError::Unavailable(format!("reading stream {}: {e}", config.stream)))?
                .config
                .clone(),
        ),
        Err(e)
            if matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(ref j)
                if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) =>
        {
            if config.access != Access::Manage {
                // Scoped credentials cannot make it: arc-control will.
                return Err(LogError::Unavailable(format!(
                    "stream {} does not exist yet (arc-control creates it when it starts)",
                    config.stream
                )));
            }
            None
        }
        Err(e) => {
            let transient = match e.kind() {
                jetstream::context::GetStreamErrorKind::JetStream(j) => setup_code_transient(j.error_code()),
                _ => true,
            };
            return Err(setup_error(format!("looking up stream {}: {e}", config.stream), transient, config));
        }
    };
    match existing {
        // Scoped credentials use the stream as it is.
        Some(_) if config.access != Access::Manage => {}
        Some(current) => {
            // An existing stream keeps its replica count: a tool run
            // (`rebuild`, `catch-up`) or an instance started without
            // `--nats-replicas` must not quietly shrink an R3 log to R1 (or grow one).
            if current.num_replicas != config.replicas {
                tracing::warn!(
                    stream = %config.stream,
                    existing = current.num_replicas,
                    configured = config.replicas,
                    "the stream keeps its replica count; change it with the nats CLI if that is what you want"
                );
                stream_config.num_replicas = current.num_replicas;
            }
            if settings_differ(&current, &stream_config) {
                tracing::info!(stream = %config.stream, "updating the stream's settings");
                js.update_stream(stream_config).await.map_err(|e| {
                    let transient = create_transient(&e);
                    setup_error(format!("updating stream {}: {e}", config.stream), transient, config)
                })?;
            }
        }
        None => {
            if let Err(e) = js.create_stream(stream_config).await {
                // Another instance created it at the same moment: that is what we wanted.
                if js.get_stream_no_info(&config.stream).await.is_err() {
                    let transient = create_transient(&e);
                    return Err(setup_error(format!("creating stream {}: {e}", config.stream), transient, config));
                }
            }
        }
    }
    // From here on every operation is bounded by the shorter timeout (the
    // stream and the buckets keep a copy of the context).
    js.set_timeout(config.op_timeout);
    let stream = js
        .get_stream_no_info(&config.stream)
        .await
        .map_err(|e| LogError::Unavailable(format!("opening stream {}: {e}", config.stream)))?;
    let manage = config.access == Access::Manage;
    let board = crate::load::KvBoard::open(js, &format!("{}_LOAD", config.stream), config.replicas, manage)
        .await
        .map_err(|e| with_placement_hint(e, config))?;
    let snapshots = crate::snapshot::KvSnapshots::open(js, &format!("{}_SNAP", config.stream), config.replicas, manage)
        .await
        .map_err(|e| with_placement_hint(e, config))?;
    Ok((stream, board, snapshots))
}

/// Whether a JetStream API error code is one a forming or electing cluster
/// answers for a while (no meta leader yet, peers not yet known, …).
pub(crate) fn setup_code_transient(code: jetstream::ErrorCode) -> bool {
    use jetstream::ErrorCode as C;
    [
        C::CLUSTER_INCOMPLETE,
        C::CLUSTER_NO_PEERS,
        C::CLUSTER_NOT_ACTIVE,
        C::CLUSTER_NOT_ASSIGNED,
        C::CLUSTER_NOT_AVAILABLE,
        C::CLUSTER_NOT_LEADER,
        C::RAFT_GENERAL,
    ]
    .contains(&code)
}

/// Whether a stream creation or update failed in a way waiting may fix.
pub(crate) fn create_transient(e: &jetstream::context::CreateStreamError) -> bool {
    use jetstream::context::CreateStreamErrorKind as K;
    match e.kind() {
        K::JetStream(j) => setup_code_transient(j.error_code()),
        K::TimedOut | K::JetStreamUnavailable | K::Response => true,
        K::EmptyStreamName | K::InvalidStreamName | K::DomainAndExternalSet | K::NotFound | K::ResponseParse => false,
    }
}

fn setup_error(message: String, transient: bool, config: &JetStreamConfig) -> LogError {
    let e = if transient { LogError::Unavailable(message) } else { LogError::Backend(message) };
    with_placement_hint(e, config)
}

/// "No suitable peers" that lasts means fewer JetStream servers than replicas.
fn with_placement_hint(e: LogError, config: &JetStreamConfig) -> LogError {
    let hint = |m: String| {
        if m.contains("10005") && config.replicas > 1 {
            format!(
                "{m} (the log keeps {} replicas: that many JetStream servers must be up and in one cluster)",
                config.replicas
            )
        } else {
            m
        }
    };
    match e {
        LogError::Unavailable(m) => LogError::Unavailable(hint(m)),
        LogError::Backend(m) => LogError::Backend(hint(m)),
        other => other,
    }
}

impl JetStreamLog {
    /// Connects and creates or updates the stream.
    pub async fn connect(config: &JetStreamConfig) -> Result<Self, LogError> {
        let servers = servers(&config.url)?;
        let mut options = async_nats::ConnectOptions::new();
        if let Some((user, password)) = credentials(&servers) {
            options = options.user_and_password(user, password);
        }
        if let Access::Scoped { inbox_prefix } = &config.access {
            options = options.custom_inbox_prefix(inbox_prefix);
        }
        config.tls.check()?;
        if config.tls.required(&config.url) {
            options = options.require_tls(true);
        }
        if let Some(ca) = &config.tls.ca_file {
            options = options.add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &config.tls.client {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        let (connected_tx, reconnects) = tokio::sync::watch::channel(0u64);
        let client = options
            .name("arc")
            .retry_on_initial_connect()
            .connection_timeout(config.request_timeout)
            .request_timeout(Some(config.request_timeout))
            .reconnect_delay_callback(reconnect_delay)
            .event_callback(move |event| {
                let connected_tx = connected_tx.clone();
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            connected_tx.send_modify(|n| *n += 1);
                            tracing::info!("connected to NATS");
                        }
                        async_nats::Event::Disconnected => tracing::warn!("disconnected from NATS; reconnecting"),
                        // A permission violation (credentials scoped too
                        // tightly, or a subject outside them) is said here only.
                        async_nats::Event::ServerError(e) => tracing::warn!(error = %e, "the NATS server refused"),
                        other => tracing::debug!(event = %other, "NATS connection event"),
                    }
                }
            })
            .connect(servers)
            .await
            .map_err(|e| LogError::Unavailable(format!("connecting to {}: {e}", redact_urls(&config.url))))?;
        let mut js = jetstream::new(client);
        let stream_config = stream::Config {
            name: config.stream.clone(),
            description: Some("Arc's event log: every state transition, one subject per aggregate".into()),
            subjects: vec![format!("{}.>", config.subject_prefix)],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            discard: stream::DiscardPolicy::New,
            num_replicas: config.replicas,
            duplicate_window: config.duplicate_window,
            max_bytes: config.max_bytes,
            max_messages: -1,
            max_messages_per_subject: -1,
            max_age: Duration::ZERO,
            max_message_size: MESSAGE_BYTES_MAX,
            max_consumers: -1,
            allow_direct: true,
            deny_delete: true,
            deny_purge: true,
            ..Default::default()
        };
        // A cluster that is still forming (servers starting together, a meta
        // leader not yet elected, peers not yet known) refuses the setup for
        // a while: wait for it, up to `startup_wait`, saying why.
        let started = std::time::Instant::now();
        let mut attempt = 0u32;
        let (stream, board, snapshots) = loop {
            match open_stream(&mut js, config, stream_config.clone()).await {
                Ok(prepared) => break prepared,
                Err(LogError::Unavailable(why)) if started.elapsed() < config.startup_wait => {
                    attempt += 1;
                    let wait = Duration::from_millis(250u64 << attempt.min(3));
                    tracing::warn!(
                        stream = %config.stream,
                        attempt,
                        retry_in_ms = wait.as_millis() as u64,
                        "JetStream is not ready: {why}"
                    );
                    tokio::time::sleep(wait).await;
                }
                Err(LogError::Unavailable(why)) => {
                    return Err(LogError::Unavailable(format!(
                        "JetStream was not ready within {:?}: {why}",
                        config.startup_wait
                    )));
                }
                Err(e) => return Err(e),
            }
        };
        Ok(Self {
            inner: Arc::new(Inner {
                board: Arc::new(board),
                snapshots: Arc::new(snapshots),
                js,
                prefix: config.subject_prefix.clone(),
                stream,
                seqs: Mutex::new(HashMap::new()),
                any_locks: (0..ANY_LOCK_STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
                reconnects,
            }),
        })
    }

    /// Fails at once while the connection is down: a request sent now would
    /// wait in the client's buffer and might be written long after its
    /// caller was told it failed.
    fn ensure_connected(&self) -> Result<(), LogError> {
        match self.inner.js.client().connection_state() {
            async_nats::connection::State::Connected => Ok(()),
            state => Err(LogError::Unavailable(format!("not connected to NATS ({state})"))),
        }
    }

    /// The NATS connection, for request/reply beside the log (media nodes).
    pub fn client(&self) -> async_nats::Client {
        self.inner.js.client()
    }

    fn subject(&self, aggregate: &AggregateRef) -> String {
        format!("{}.{}.{}", self.inner.prefix, aggregate.kind(), aggregate.id())
    }

    fn remember(&self, aggregate: &AggregateRef, seq: u64, stream_seq: u64) {
        if let Ok(mut seqs) = self.inner.seqs.lock() {
            if seqs.len() >= SEQ_CACHE_MAX && !seqs.contains_key(aggregate) {
                seqs.clear();
            }
            seqs.insert(aggregate.clone(), (seq, stream_seq));
        }
    }

    fn recall(&self, aggregate: &AggregateRef) -> Option<(u64, u64)> {
        self.inner.seqs.lock().ok()?.get(aggregate).copied()
    }

    fn forget(&self, aggregate: &AggregateRef) {
        if let Ok(mut seqs) = self.inner.seqs.lock() {
            seqs.remove(aggregate);
        }
    }

    /// The aggregate's last (seq, stream sequence), asking the server; (0, 0) if it has none.
    async fn fetch_last(&self, aggregate: &AggregateRef) -> Result<(u64, u64), LogError> {
        Ok(self.fetch_last_batch(aggregate).await?.map(|b| (b.last_seq, b.stream_seq)).unwrap_or((0, 0)))
    }

    /// The aggregate's last stored batch, if any.
    async fn fetch_last_batch(&self, aggregate: &AggregateRef) -> Result<Option<StoredBatch>, LogError> {
        match self.inner.stream.direct_get_last_for_subject(self.subject(aggregate)).await {
            Ok(msg) => {
                let events = parse_message(msg.sequence, &msg.payload)?;
                let batch = StoredBatch::of(msg.sequence, &events);
                self.remember(aggregate, batch.last_seq, msg.sequence);
                Ok(Some(batch))
            }
            Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// If the aggregate's last stored batch is `request`'s (same first event
    /// id), the append already happened: a re-send after a lost answer.
    async fn already_stored(&self, request: &AppendRequest) -> Result<Option<Appended>, LogError> {
        Ok(self
            .fetch_last_batch(&request.aggregate)
            .await?
            .filter(|b| Some(b.first_id) == request.events.first().map(|e| e.id))
            .map(|b| b.appended()))
    }

    async fn publish(&self, request: &AppendRequest, expected_seq: u64) -> Result<Appended, LogError> {
        // The stream sequence the server must find as this subject's last.
        let subject_seq = if expected_seq == 0 {
            0
        } else {
            match self.recall(&request.aggregate) {
                Some((seq, stream_seq)) if seq == expected_seq => stream_seq,
                _ => match self.fetch_last_batch(&request.aggregate).await? {
                    Some(b) if b.last_seq == expected_seq => b.stream_seq,
                    Some(b) if Some(b.first_id) == request.events.first().map(|e| e.id) => {
                        return Ok(b.appended());
                    }
                    // We cannot vouch for it: an impossible sequence makes the
                    // server refuse, unless it is a re-send it de-duplicates.
                    _ => u64::MAX,
                },
            }
        };
        let events = prepare(request, expected_seq)?;
        let payload = serde_json::to_vec(&events).map_err(|e| LogError::Invalid(e.to_string()))?;
        if payload.len() > APPEND_BYTES_MAX {
            return Err(LogError::TooLarge { what: "encoded bytes", actual: payload.len(), max: APPEND_BYTES_MAX });
        }
        let n = events.len();
        let message = jetstream::message::PublishMessage::build()
            .payload(payload.into())
            .message_id(events[0].id.to_string())
            .expected_last_subject_sequence(subject_seq);
        let ack = match self.inner.js.send_publish(self.subject(&request.aggregate), message).await {
            Ok(future) => future.await,
            Err(e) => Err(e),
        };
        match ack {
            Ok(ack) if ack.duplicate => {
                // Stored before: report the original batch.
                let stored = self
                    .inner
                    .stream
                    .direct_get(ack.sequence)
                    .await
                    .map_err(unavailable)
                    .and_then(|m| parse_message(m.sequence, &m.payload))?;
                let last_seq = stored.last().map(|e| e.seq).unwrap_or(0);
                Ok(Appended {
                    first: position(ack.sequence, 0),
                    last: position(ack.sequence, stored.len().saturating_sub(1)),
                    last_seq,
                    duplicate: true,
                })
            }
            Ok(ack) => {
                let last_seq = expected_seq + n as u64;
                self.remember(&request.aggregate, last_seq, ack.sequence);
                Ok(Appended {
                    first: position(ack.sequence, 0),
                    last: position(ack.sequence, n - 1),
                    last_seq,
                    duplicate: false,
                })
            }
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                self.forget(&request.aggregate);
                // A re-send of a stored batch that the server's duplicate
                // window missed (e.g. across a leader change) is not a conflict.
                if let Some(done) = self.already_stored(request).await? {
                    return Ok(done);
                }
                let (actual, _) = self.fetch_last(&request.aggregate).await?;
                Err(LogError::Conflict { aggregate: request.aggregate.clone(), expected: expected_seq, actual })
            }
            Err(e) if e.kind() == PublishErrorKind::MaxPayloadExceeded => {
                Err(LogError::TooLarge { what: "message bytes", actual: n, max: MESSAGE_BYTES_MAX as usize })
            }
            Err(e) => {
                self.forget(&request.aggregate);
                Err(unavailable(e))
            }
        }
    }

    /// An ephemeral pull consumer from `start` (a stream sequence), without
    /// acks, pulling in batches with an idle heartbeat. Gaps are detected by
    /// the subscription (consumer sequences), stalls by the heartbeat.
    async fn consume(&self, filter: Option<String>, start: u64) -> Result<consumer::pull::Stream, LogError> {
        let config = consumer::pull::Config {
            filter_subject: filter.unwrap_or_default(),
            deliver_policy: if start <= 1 {
                consumer::DeliverPolicy::All
            } else {
                consumer::DeliverPolicy::ByStartSequence { start_sequence: start }
            },
            ack_policy: consumer::AckPolicy::None,
            max_deliver: 1,
            memory_storage: true,
            num_replicas: 1,
            inactive_threshold: Duration::from_secs(30),
            ..Default::default()
        };
        let consumer = self.inner.stream.create_consumer(config).await.map_err(unavailable)?;
        consumer
            .stream()
            .max_messages_per_batch(SUBSCRIBE_BATCH)
            .heartbeat(SUBSCRIBE_HEARTBEAT)
            .expires(SUBSCRIBE_HEARTBEAT * 4)
            .messages()
            .await
            .map_err(unavailable)
    }

    /// The stream sequence of the last message, 0 if the stream is empty.
    async fn last_stream_seq(&self) -> Result<u64, LogError> {
        let info = self.inner.stream.get_info().await.map_err(unavailable)?;
        Ok(info.state.last_sequence)
    }
}

/// What is known of one stored message (one batch).
#[derive(Debug, Clone, Copy)]
struct StoredBatch {
    stream_seq: u64,
    first_id: arc_events::EventId,
    last_seq: u64,
    len: usize,
}

impl StoredBatch {
    fn of(stream_seq: u64, events: &[RawEvent]) -> Self {
        Self {
            stream_seq,
            first_id: events.first().map(|e| e.id).unwrap_or_default(),
            last_seq: events.last().map(|e| e.seq).unwrap_or(0),
            len: events.len(),
        }
    }

    fn appended(self) -> Appended {
        Appended {
            first: position(self.stream_seq, 0),
            last: position(self.stream_seq, self.len.saturating_sub(1)),
            last_seq: self.last_seq,
            duplicate: true,
        }
    }
}

/// Events of one message that come after `after`.
fn events_after(stream_seq: u64, events: Vec<RawEvent>, after: Position) -> impl Iterator<Item = RecordedEvent> {
    events
        .into_iter()
        .enumerate()
        .map(move |(i, raw)| RecordedEvent { position: position(stream_seq, i), raw })
        .filter(move |e| e.position > after)
}

#[async_trait]
impl EventLog for JetStreamLog {
    async fn append(&self, request: AppendRequest) -> Result<Appended, LogError> {
        validate(&request)?;
        self.ensure_connected()?;
        match request.expected {
            Expected::Exact(n) => self.publish(&request, n).await,
            Expected::Any => {
                let stripe = {
                    use std::hash::{BuildHasher, BuildHasherDefault};
                    let h = BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default()
                        .hash_one(&request.aggregate);
                    (h % ANY_LOCK_STRIPES as u64) as usize
                };
                let _serialised = self.inner.any_locks[stripe].lock().await;
                for attempt in 0..ANY_RETRIES_MAX {
                    if attempt > 0 {
                        // Another process won the race: back off a little, with jitter.
                        let jitter = u64::from(uuid::Uuid::now_v7().as_u128() as u8 % 8);
                        tokio::time::sleep(Duration::from_millis(u64::from(attempt.min(8)) + jitter)).await;
                    }
                    let last = match self.recall(&request.aggregate) {
                        Some((seq, _)) => seq,
                        None => self.fetch_last(&request.aggregate).await?.0,
                    };
                    match self.publish(&request, last).await {
                        Err(LogError::Conflict { .. }) => continue,
                        other => return other,
                    }
                }
                Err(LogError::Unavailable(format!("{} stayed contended", request.aggregate)))
            }
        }
    }

    async fn read_aggregate(&self, aggregate: &AggregateRef, after_seq: u64) -> Result<Vec<RecordedEvent>, LogError> {
        self.read_aggregate_after(aggregate, after_seq, Position::START).await
    }

    async fn read_aggregate_after(
        &self,
        aggregate: &AggregateRef,
        after_seq: u64,
        at: Position,
    ) -> Result<Vec<RecordedEvent>, LogError> {
        self.ensure_connected()?;
        let (last_seq, last_stream_seq) = self.fetch_last(aggregate).await?;
        if last_seq <= after_seq {
            return Ok(Vec::new());
        }
        // Direct gets, message by message along the subject: no consumer is
        // created (they would linger on the server), and any replica answers.
        // From the message that held event `after_seq` when the caller knows
        // it (a hint past the subject's last message is ignored; events at
        // or before `after_seq` are skipped either way).
        let subject = self.subject(aggregate);
        let (hint, _) = split(at);
        let mut next = if after_seq > 0 && hint >= 1 && hint <= last_stream_seq { hint } else { 1 };
        let mut out: Vec<RecordedEvent> = Vec::new();
        while next <= last_stream_seq {
            let msg = match self.inner.stream.direct_get_next_for_subject(subject.as_str(), Some(next)).await {
                Ok(msg) => msg,
                Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => break,
                Err(e) => return Err(unavailable(e)),
            };
            let events = parse_message(msg.sequence, &msg.payload)?;
            let floor = out.last().map(|e| e.raw.seq).unwrap_or(after_seq);
            out.extend(events_after(msg.sequence, events, Position::START).filter(|e| e.raw.seq > floor));
            next = msg.sequence + 1;
        }
        // A hint past event `after_seq + 1` would have skipped events: read
        // again from the start (a wrong hint costs time, never events).
        if at != Position::START && out.first().map(|e| e.raw.seq) != Some(after_seq + 1) {
            return Box::pin(self.read_aggregate_after(aggregate, after_seq, Position::START)).await;
        }
        Ok(out)
    }

    async fn read_all(&self, after: Position, limit: usize) -> Result<Vec<RecordedEvent>, LogError> {
        self.ensure_connected()?;
        let last = self.last_stream_seq().await?;
        let (start, _) = split(after);
        let next = start.max(1);
        let mut out: Vec<RecordedEvent> = Vec::new();
        if next > last || limit == 0 {
            return Ok(out);
        }
        // Direct gets by sequence: no consumer to create (or to find on a
        // dead server after a failover); any replica answers. Up to
        // READ_AHEAD are in flight at once, answered in order. A message
        // holds at least one event, and the first one may hold none after
        // `after` (it ends there), so `limit + 1` messages are enough.
        let end = last.min(next.saturating_add(limit as u64));
        let stream = &self.inner.stream;
        let mut gets = futures::stream::iter(next..=end)
            .map(|seq| async move { (seq, stream.direct_get(seq).await) })
            .buffered(READ_AHEAD);
        while let Some((_, got)) = gets.next().await {
            match got {
                Ok(msg) => {
                    let events = parse_message(msg.sequence, &msg.payload)?;
                    let floor = out.last().map(|e| e.position).unwrap_or(after);
                    out.extend(events_after(msg.sequence, events, floor));
                }
                // Never the case with deny_delete, but a gap is not an error.
                Err(e) if e.kind() == stream::DirectGetErrorKind::NotFound => {}
                Err(e) => return Err(unavailable(e)),
            }
            if out.len() >= limit {
                break;
            }
        }
        out.truncate(limit);
        Ok(out)
    }

    async fn subscribe(&self, after: Position) -> Result<Subscription, LogError> {
        self.ensure_connected()?;
        let (start, _) = split(after);
        let messages = self.consume(None, start.max(1)).await?;
        let mut reconnects = self.inner.reconnects.clone();
        reconnects.mark_unchanged();
        struct State {
            messages: consumer::pull::Stream,
            reconnects: tokio::sync::watch::Receiver<u64>,
            buffer: VecDeque<RecordedEvent>,
            after: Position,
            /// The consumer sequence of the last message (0: none yet).
            consumer_seq: u64,
            failed: bool,
        }
        let state = State { messages, reconnects, buffer: VecDeque::new(), after, consumer_seq: 0, failed: false };
        Ok(Box::pin(futures::stream::unfold(state, |mut s| async move {
            if s.failed {
                return None;
            }
            loop {
                if let Some(e) = s.buffer.pop_front() {
                    // Never hand out a position twice, even if the consumer redelivers.
                    if e.position <= s.after {
                        continue;
                    }
                    s.after = e.position;
                    return Some((Ok(e), s));
                }
                let next = tokio::select! {
                    next = s.messages.next() => next,
                    changed = s.reconnects.changed() => {
                        // The connection came back: this consumer may be gone
                        // with the server that held it. The owner resubscribes.
                        s.failed = true;
                        let why = if changed.is_ok() { "reconnected to NATS" } else { "NATS connection closed" };
                        return Some((Err(LogError::Unavailable(format!("subscription ended: {why}"))), s));
                    }
                };
                let msg = match next? {
                    Ok(msg) => msg,
                    Err(e) => {
                        s.failed = true;
                        return Some((Err(unavailable(e)), s));
                    }
                };
                let (stream_seq, consumer_seq) = match msg.info() {
                    Ok(info) => (info.stream_sequence, info.consumer_sequence),
                    Err(e) => {
                        s.failed = true;
                        return Some((Err(unavailable(e)), s));
                    }
                };
                if s.consumer_seq != 0 && consumer_seq != s.consumer_seq + 1 {
                    s.failed = true;
                    let why =
                        format!("subscription skipped from consumer sequence {} to {consumer_seq}", s.consumer_seq);
                    return Some((Err(LogError::Unavailable(why)), s));
                }
                s.consumer_seq = consumer_seq;
                match parse_message(stream_seq, &msg.payload) {
                    Ok(events) => s.buffer.extend(events_after(stream_seq, events, s.after)),
                    // A foreign or damaged message: report it, keep going after it.
                    Err(e) => return Some((Err(e), s)),
                }
            }
        })))
    }

    async fn head(&self) -> Result<Position, LogError> {
        self.ensure_connected()?;
        let last = self.last_stream_seq().await?;
        if last == 0 {
            return Ok(Position::START);
        }
        let msg = self.inner.stream.direct_get(last).await.map_err(unavailable)?;
        let n = parse_message(last, &msg.payload)?.len();
        Ok(position(last, n.saturating_sub(1)))
    }

    fn backend(&self) -> &'static str {
        "jetstream"
    }

    /// `n` messages back: each message holds one event or more.
    fn position_back(&self, from: Position, n: u64) -> Position {
        let (seq, _) = split(from);
        match seq.checked_sub(n) {
            Some(before) if before > 0 => Position((before << INDEX_BITS) | ((1 << INDEX_BITS) - 1)),
            _ => Position::START,
        }
    }

    fn load_board(&self) -> Arc<dyn crate::load::LoadBoard> {
        self.inner.board.clone()
    }

    fn snapshots(&self) -> Arc<dyn crate::snapshot::SnapshotStore> {
        self.inner.snapshots.clone()
    }

    fn connected(&self) -> bool {
        self.ensure_connected().is_ok()
    }

    fn reconnects(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.inner.reconnects.clone())
    }
}

/// Delay before reconnect attempt `attempts` (1-based): at once, then a
/// short, capped back-off (a few attempts per second at most).
fn reconnect_delay(attempts: usize) -> Duration {
    let ms = 50u64.saturating_mul(u64::try_from(attempts.saturating_sub(1)).unwrap_or(u64::MAX));
    Duration::from_millis(ms).min(RECONNECT_DELAY_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_messages_and_credentials_come_from_urls() {
        assert_eq!(
            redact_urls("nats://arc:s3cret@10.0.0.1:4222, nats://10.0.0.2:4222,tls://u:p@h:1/x"),
            "nats://arc:***@10.0.0.1:4222,nats://10.0.0.2:4222,tls://u:***@h:1/x"
        );
        assert_eq!(redact_urls("localhost:4222"), "localhost:4222");
        let list = servers("nats://10.0.0.2:4222,nats://arc:s3cret@10.0.0.1:4222").expect("valid");
        assert_eq!(credentials(&list), Some(("arc".to_owned(), "s3cret".to_owned())));
        assert_eq!(credentials(&servers("nats://h:4222").expect("valid")), None);
        let err = servers("nats://arc:s3cret@[::1").map(|_| ()).expect_err("bad URL");
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }

    #[test]
    fn reconnects_are_quick_and_capped() {
        assert_eq!(reconnect_delay(1), Duration::ZERO);
        assert_eq!(reconnect_delay(2), Duration::from_millis(50));
        assert_eq!(reconnect_delay(100), RECONNECT_DELAY_MAX);
        assert_eq!(reconnect_delay(usize::MAX), RECONNECT_DELAY_MAX);
    }
}
