//! The node's own HTTP endpoint for operators: Prometheus `/metrics`,
//! `/healthz` (alive) and `/readyz` (can take sessions: the log reachable and
//! the node not draining). Figures come from the workers' counters
//! (`MediaHandle::stats`, read at scrape time: nothing on the packet path).
//! Labels are bounded: worker index, drop reason, direction. Loss, jitter
//! and round trips are node-wide (histograms, no per-session labels).

use std::sync::Arc;

use arc_eventlog::EventLog;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use crate::engine::MediaStats;
use crate::engine::quality::{BOUNDS_S, Hist};
use crate::media::MediaHandle;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabels {
    worker: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// `in`: from publishers to the node; `out`: from the node to subscribers.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    direction: &'static str,
}

/// A histogram whose buckets are counted by the workers ([`Hist`]) and
/// copied in at scrape time.
#[derive(Clone, Debug, Default)]
struct CopiedHistogram(Arc<std::sync::Mutex<Hist>>);

impl CopiedHistogram {
    fn set(&self, h: Hist) {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = h;
    }
}

impl prometheus_client::metrics::TypedMetric for CopiedHistogram {
    const TYPE: prometheus_client::metrics::MetricType = prometheus_client::metrics::MetricType::Histogram;
}

impl prometheus_client::encoding::EncodeMetric for CopiedHistogram {
    fn encode(&self, mut encoder: prometheus_client::encoding::MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        let h = *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let buckets: Vec<(f64, u64)> =
            BOUNDS_S.iter().copied().chain([f64::INFINITY]).zip(h.counts.iter().copied()).collect();
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            h.sum_us as f64 / 1e6,
            h.count(),
            &buckets,
            None,
        )
    }

    fn metric_type(&self) -> prometheus_client::metrics::MetricType {
        prometheus_client::metrics::MetricType::Histogram
    }
}

/// A counter that follows a cumulative figure read elsewhere.
fn follow(counter: &Counter, total: u64) {
    let seen = counter.get();
    if total > seen {
        counter.inc_by(total - seen);
    }
}

/// The node's metrics.
struct Metrics {
    registry: Registry,
    packets_in: Counter,
    packets_out: Counter,
    bytes_in: Counter,
    bytes_out: Counter,
    nacks_answered: Counter,
    rtx_sent: Counter,
    padding_sent: Counter,
    bwe_probes: Counter,
    dynacast: Counter,
    red_in: Counter,
    red_stripped: Counter,
    twcc_reported: Counter,
    keyframe_requests: Counter,
    dropped: Family<ReasonLabels, Counter>,
    handed_off: Counter,
    send_calls: Counter,
    srtp_own: Counter,
    srtp_rtc_legs: Gauge,
    sessions: Gauge,
    tracks: Gauge,
    subscriptions: Gauge,
    worker_sessions: Family<WorkerLabels, Gauge>,
    draining: Gauge,
    lost: Family<DirectionLabels, Counter>,
    jitter: Family<DirectionLabels, CopiedHistogram>,
    round_trip: CopiedHistogram,
    process: arc_telemetry::ProcessMetrics,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("arc_media");
        let mut counter = |name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        };
        let packets_in = counter("packets_in", "RTP and RTCP packets received from clients");
        let packets_out = counter("packets_out", "Packets forwarded to subscribers");
        let nacks_answered = counter("nacks_answered", "Retransmissions sent for subscribers' NACKs");
        let rtx_sent = counter("rtx_packets", "Of those retransmissions, the ones sent on an RTX stream (RFC 4588)");
        let padding_sent = counter("padding_packets", "Padding-only packets sent to probe players' downlinks");
        let bwe_probes =
            counter("bandwidth_probes", "Probes of a player's downlink (padding, or a layer up without RTX)");
        let dynacast = counter(
            "dynacast_messages",
            "Messages to simulcast publishers saying which layers to send (layers nobody watches pause)",
        );
        let red_in = counter("red_packets", "Packets received as redundant audio (RFC 2198 audio/red)");
        let red_stripped = counter(
            "red_stripped_packets",
            "Redundant audio packets sent as their newest frame alone, to players without RED",
        );
        let twcc_reported =
            counter("twcc_reported_packets", "Packets players' transport-wide congestion feedback reported on");
        let keyframe_requests = counter("keyframe_requests", "Keyframe requests (PLI) sent to publishers");
        let handed_off = counter("handed_off_datagrams", "Datagrams handed to the worker that owns their flow");
        let send_calls =
            counter("send_syscalls", "System calls that sent UDP datagrams (sendmmsg batches, GSO runs, single sends)");
        let srtp_own = counter("srtp_own_packets", "RTP packets protected by Arc's own SRTP egress");
        let bytes_in = Counter::default();
        registry.register_with_unit("received", "Payload bytes received", Unit::Bytes, bytes_in.clone());
        let bytes_out = Counter::default();
        registry.register_with_unit("forwarded", "Payload bytes forwarded", Unit::Bytes, bytes_out.clone());
        let dropped = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "dropped_datagrams",
            "Datagrams dropped, by reason (unknown sender, malformed, a repeated DTLS ClientHello, ICE-TCP backlog, socket full)",
            dropped.clone(),
        );
        let mut gauge = |name: &str, help: &str| {
            let g = Gauge::default();
            registry.register(name, help, g.clone());
            g
        };
        let srtp_rtc_legs = gauge("srtp_rtc_legs", "Legs whose media rtc protects (not Arc's own egress)");
        let sessions = gauge("sessions", "Sessions open");
        let tracks = gauge("tracks", "Published tracks carried");
        let subscriptions = gauge("subscriptions", "Subscriber streams (one per player and track it receives)");
        let draining = gauge("draining", "1 while the node drains (takes no new rooms)");
        let worker_sessions = Family::<WorkerLabels, Gauge>::default();
        registry.register("worker_sessions", "Sessions open on each worker", worker_sessions.clone());
        let lost = Family::<DirectionLabels, Counter>::default();
        registry.register(
            "packets_lost",
            "RTP packets lost: in = publishers to the node (sequence gaps), out = the node to subscribers (their receiver reports)",
            lost.clone(),
        );
        let jitter = Family::<DirectionLabels, CopiedHistogram>::default();
        registry.register_with_unit(
            "jitter",
            "Interarrival jitter (RFC 3550): in = each incoming track every 5 s, out = each subscriber's receiver report",
            Unit::Seconds,
            jitter.clone(),
        );
        let round_trip = CopiedHistogram::default();
        registry.register_with_unit(
            "round_trip",
            "Round trips between the node and subscribers, from their receiver reports of the node's sender reports",
            Unit::Seconds,
            round_trip.clone(),
        );
        let process = arc_telemetry::ProcessMetrics::register(&mut registry);
        Self {
            registry,
            packets_in,
            packets_out,
            bytes_in,
            bytes_out,
            nacks_answered,
            rtx_sent,
            padding_sent,
            bwe_probes,
            dynacast,
            red_in,
            red_stripped,
            twcc_reported,
            keyframe_requests,
            dropped,
            handed_off,
            send_calls,
            srtp_own,
            srtp_rtc_legs,
            sessions,
            tracks,
            subscriptions,
            worker_sessions,
            draining,
            lost,
            jitter,
            round_trip,
            process,
        }
    }

    fn update(&self, s: &MediaStats, per_worker: &[u64], draining: bool) {
        follow(&self.packets_in, s.packets_in);
        follow(&self.packets_out, s.packets_out);
        follow(&self.bytes_in, s.bytes_in);
        follow(&self.bytes_out, s.bytes_out);
        follow(&self.nacks_answered, s.nacks_answered);
        follow(&self.rtx_sent, s.rtx_sent);
        follow(&self.padding_sent, s.padding_sent);
        follow(&self.bwe_probes, s.bwe_probes);
        follow(&self.dynacast, s.dynacast_changes);
        follow(&self.red_in, s.red_in);
        follow(&self.red_stripped, s.red_stripped);
        follow(&self.twcc_reported, s.twcc_reported);
        follow(&self.keyframe_requests, s.keyframe_requests);
        follow(&self.handed_off, s.handed_off);
        follow(&self.send_calls, s.send_calls);
        follow(&self.srtp_own, s.srtp_own_packets);
        for (reason, total) in [
            ("unknown_sender", s.dropped_unknown),
            ("malformed", s.dropped_malformed),
            ("dtls_hello_repeat", s.dropped_dtls_repeat),
            ("tcp_backlog", s.dropped_tcp),
            ("socket_full", s.dropped_send),
        ] {
            follow(&self.dropped.get_or_create(&ReasonLabels { reason }), total);
        }
        let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.srtp_rtc_legs.set(gauge(s.srtp_rtc_legs));
        self.sessions.set(gauge(s.sessions));
        self.tracks.set(gauge(s.tracks));
        self.subscriptions.set(gauge(s.subscriptions));
        for (w, n) in per_worker.iter().enumerate() {
            self.worker_sessions.get_or_create(&WorkerLabels { worker: w.to_string() }).set(gauge(*n));
        }
        self.draining.set(i64::from(draining));
        follow(&self.lost.get_or_create(&DirectionLabels { direction: "in" }), s.lost_in);
        follow(&self.lost.get_or_create(&DirectionLabels { direction: "out" }), s.lost_out);
        self.jitter.get_or_create(&DirectionLabels { direction: "in" }).set(s.jitter_in);
        self.jitter.get_or_create(&DirectionLabels { direction: "out" }).set(s.jitter_out);
        self.round_trip.set(s.rtt);
        self.process.update();
    }
}

struct Shared {
    metrics: Metrics,
    media: MediaHandle,
    log: Arc<dyn EventLog>,
}

/// OpenMetrics when the scraper's `Accept` asks for it (Prometheus does),
/// else the Prometheus text format 0.0.4 (curl, promtool).
async fn metrics(State(s): State<Arc<Shared>>, headers: axum::http::HeaderMap) -> Response {
    let stats = s.media.stats().await;
    s.metrics.update(&stats, &s.media.sessions_per_worker(), s.media.is_draining());
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let Ok((content_type, body)) = arc_telemetry::exposition(&s.metrics.registry, accept) else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "encoding the metrics failed").into_response();
    };
    let mut response = body.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(s): State<Arc<Shared>>) -> Response {
    if !s.log.connected() {
        (StatusCode::SERVICE_UNAVAILABLE, "log_unavailable: the event log is unreachable").into_response()
    } else if s.media.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining: the node takes no new rooms").into_response()
    } else {
        "ready".into_response()
    }
}

/// The router for the node's operator endpoint.
pub fn router(media: MediaHandle, log: Arc<dyn EventLog>) -> Router {
    let shared = Arc::new(Shared { metrics: Metrics::new(), media, log });
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(shared)
}
