//! What every Arc role (arc-control, arc-media, and the roles to come)
//! exposes to operators the same way.
//!
//! # Layout
//! - [`process_cpu_ticks`], [`process_figures`]: this process's CPU time
//!   and resident memory from `/proc/self` (the media node's load figure
//!   uses them too).
//! - [`ProcessMetrics`]: the process's CPU seconds and resident memory as
//!   Prometheus metrics (`<prefix>_process_cpu_seconds_total`,
//!   `<prefix>_process_resident_memory_bytes`), read from `/proc/self` at
//!   scrape time.
//! - [`init`]: structured logs on stderr, `ARC_LOG_FORMAT=pretty`
//!   (default; colours only on a terminal) or `json` (one object per line),
//!   the level from `ARC_LOG`, else `RUST_LOG`, else the role's default; and
//!   OpenTelemetry traces over OTLP/HTTP or HTTPS when `ARC_OTLP_ENDPOINT` (or
//!   `OTEL_EXPORTER_OTLP_ENDPOINT`) names a collector (`ARC_OTLP_CA_FILE`
//!   adds a private CA).
//! - [`exposition`]: a registry as OpenMetrics for scrapers that ask for it,
//!   else the Prometheus text format ([`openmetrics_to_text`]).
//! - [`current_context_headers`], [`set_parent_from_headers`],
//!   [`current_trace_id`], [`current_traceparent`]: W3C trace context across a
//!   request to another process (NATS headers, HTTP), and the trace id and
//!   `traceparent` for event envelopes; [`link_to`] and
//!   [`set_parent_traceparent`] tie the log's readers (projection batches,
//!   webhook deliveries) back to the request.

use std::io::IsTerminal;
use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

/// Clock ticks per second in `/proc` (USER_HZ: 100 on every Linux
/// architecture Arc runs on, x86_64 and arm64).
pub const TICKS_PER_S: f64 = 100.0;

/// utime + stime of a `/proc/<pid>/stat` line, in ticks.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) may hold spaces and parentheses; the fields
    // after its last ')' are plain: state is field 3, so utime (14) and
    // stime (15) are at 11 and 12.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// utime + stime of this process, in ticks.
pub fn process_cpu_ticks() -> Option<u64> {
    parse_cpu_ticks(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

/// CPU seconds and resident bytes of this process, if `/proc/self` is readable.
pub fn process_figures() -> Option<(f64, i64)> {
    let cpu = process_cpu_ticks()? as f64 / TICKS_PER_S;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let rss_kib: i64 =
        status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.split_whitespace().next()?.parse().ok()?;
    Some((cpu, rss_kib.saturating_mul(1024)))
}

/// The process's CPU and memory, registered once, updated at each scrape.
#[derive(Debug, Clone, Default)]
pub struct ProcessMetrics {
    cpu_seconds: Counter<f64, AtomicU64>,
    resident_bytes: Gauge,
}

impl ProcessMetrics {
    /// Registers the two metrics in `registry` (under its prefix).
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register_with_unit("process_cpu", "CPU time this process used", Unit::Seconds, m.cpu_seconds.clone());
        registry.register_with_unit(
            "process_resident_memory",
            "Resident memory",
            Unit::Bytes,
            m.resident_bytes.clone(),
        );
        m
    }

    /// Reads `/proc/self` into the metrics (the counter moves up to the process's total).
    pub fn update(&self) {
        if let Some((cpu, rss)) = process_figures() {
            let seen = self.cpu_seconds.get();
            if cpu > seen {
                self.cpu_seconds.inc_by(cpu - seen);
            }
            self.resident_bytes.set(rss);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_stat_even_with_odd_command_names() {
        let stat = "42 (arc (media) x) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 100 0 0";
        assert_eq!(parse_cpu_ticks(stat), Some(300));
        assert_eq!(parse_cpu_ticks("garbage"), None);
        assert!(process_cpu_ticks().is_some());
    }

    #[test]
    fn this_process_has_figures_and_they_encode() {
        let (cpu, rss) = process_figures().expect("/proc/self is readable on Linux");
        assert!(cpu >= 0.0 && rss > 0);
        let mut registry = Registry::with_prefix("t");
        let m = ProcessMetrics::register(&mut registry);
        m.update();
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        assert!(text.contains("t_process_cpu_seconds_total "), "{text}");
        assert!(text.contains("t_process_resident_memory_bytes "), "{text}");
    }
}

/// How log lines look (`ARC_LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// For people: one line per event, colours only when stderr is a terminal.
    Pretty,
    /// For log shippers: one JSON object per line (`timestamp`, `level`,
    /// `target`, `fields`, and the current `span` and `spans`).
    Json,
}

impl LogFormat {
    /// Parses `ARC_LOG_FORMAT`'s value; unset or empty is [`LogFormat::Pretty`].
    pub fn parse(value: Option<&str>) -> Result<Self, String> {
        match value.map(str::trim) {
            None | Some("") | Some("pretty") => Ok(Self::Pretty),
            Some("json") => Ok(Self::Json),
            Some(other) => Err(format!("ARC_LOG_FORMAT={other:?}: expected pretty or json")),
        }
    }
}

/// What [`init`] installed; dropping it flushes and stops the trace
/// exporter (keep it alive for the whole `main`).
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported (an OTLP endpoint was configured).
    pub fn tracing(&self) -> bool {
        self.provider.is_some()
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            // Sends what is still queued; an unreachable collector costs at
            // most the exporter's timeout.
            let _ = p.shutdown();
        }
    }
}

/// Where spans go: the OTLP/HTTP traces URL and the CA certificates (PEM)
/// to trust for an https collector besides the system's.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OtlpTarget {
    url: String,
    ca_pem: Option<Vec<u8>>,
}

/// The OTLP/HTTP base URL: `ARC_OTLP_ENDPOINT`, else the standard
/// `OTEL_EXPORTER_OTLP_ENDPOINT`; spans go to `<base>/v1/traces`. An https
/// collector is verified against the system's roots plus `ARC_OTLP_CA_FILE`
/// (else the standard `OTEL_EXPORTER_OTLP_CERTIFICATE`) when set.
fn otlp_target() -> Result<Option<OtlpTarget>, String> {
    let (var, value) = match (std::env::var("ARC_OTLP_ENDPOINT"), std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")) {
        (Ok(v), _) if !v.trim().is_empty() => ("ARC_OTLP_ENDPOINT", v),
        (_, Ok(v)) if !v.trim().is_empty() => ("OTEL_EXPORTER_OTLP_ENDPOINT", v),
        _ => return Ok(None),
    };
    let base = value.trim().trim_end_matches('/');
    let url = match base.split_once("://") {
        Some(("http" | "https", rest)) if !rest.is_empty() => format!("{base}/v1/traces"),
        _ => {
            return Err(format!(
                "{var}={value:?}: expected http://host:port or https://host:port (OTLP/HTTP, protobuf)"
            ));
        }
    };
    let ca = match (std::env::var("ARC_OTLP_CA_FILE"), std::env::var("OTEL_EXPORTER_OTLP_CERTIFICATE")) {
        (Ok(v), _) if !v.trim().is_empty() => Some(("ARC_OTLP_CA_FILE", v)),
        (_, Ok(v)) if !v.trim().is_empty() => Some(("OTEL_EXPORTER_OTLP_CERTIFICATE", v)),
        _ => None,
    };
    let ca_pem = match ca {
        None => None,
        Some((ca_var, path)) => {
            let pem = std::fs::read(path.trim()).map_err(|e| format!("{ca_var}={path:?}: {e}"))?;
            if reqwest::Certificate::from_pem_bundle(&pem).map_or(true, |certs| certs.is_empty()) {
                return Err(format!("{ca_var}={path:?}: no PEM certificate in it"));
            }
            Some(pem)
        }
    };
    Ok(Some(OtlpTarget { url, ca_pem }))
}

/// The exporter's HTTP client: the workspace's reqwest (rustls), blocking,
/// because the batch span processor exports from its own thread.
#[derive(Debug)]
struct OtlpClient(reqwest::blocking::Client);

/// Largest collector answer read (it is a small protobuf or nothing).
const OTLP_ANSWER_BYTES_MAX: u64 = 1 << 20;

impl OtlpClient {
    fn new(target: &OtlpTarget, timeout: std::time::Duration) -> Result<Self, String> {
        let mut builder = reqwest::blocking::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("arc/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &target.ca_pem {
            for cert in reqwest::Certificate::from_pem_bundle(pem).map_err(|e| format!("the OTLP CA file: {e}"))? {
                builder = builder.add_root_certificate(cert);
            }
        }
        builder.build().map(Self).map_err(|e| format!("the OTLP client: {e}"))
    }
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for OtlpClient {
    async fn send_bytes(
        &self,
        request: opentelemetry_http::Request<opentelemetry_http::Bytes>,
    ) -> Result<opentelemetry_http::Response<opentelemetry_http::Bytes>, opentelemetry_http::HttpError> {
        use std::io::Read as _;
        let (parts, body) = request.into_parts();
        let mut req = self.0.request(parts.method, parts.uri.to_string()).body(body.to_vec());
        for (name, value) in &parts.headers {
            req = req.header(name, value);
        }
        let mut response = req.send()?;
        let status = response.status();
        let headers = std::mem::take(response.headers_mut());
        let mut body = Vec::new();
        response.take(OTLP_ANSWER_BYTES_MAX).read_to_end(&mut body)?;
        let mut answer = opentelemetry_http::Response::builder().status(status).body(body.into())?;
        *answer.headers_mut() = headers;
        Ok(answer)
    }
}

/// Installs logs (see [`LogFormat`]; the level from `ARC_LOG`, else
/// `RUST_LOG`, else `default_filter`) and, when an OTLP endpoint is
/// configured (`ARC_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT`),
/// traces: the spans of Arc's own crates at `info` and above, exported in
/// batches over OTLP/HTTP as `service` (or `OTEL_SERVICE_NAME`), with W3C
/// trace context as the propagator. A bad setting is an error for the caller
/// to print (the process should not start with telemetry it did not ask for).
pub fn init(service: &'static str, default_filter: &str) -> Result<Telemetry, String> {
    use tracing_subscriber::filter::{EnvFilter, LevelFilter, Targets};
    use tracing_subscriber::prelude::*;

    let format = LogFormat::parse(std::env::var("ARC_LOG_FORMAT").ok().as_deref())?;
    let (var, directives) = match (std::env::var("ARC_LOG"), std::env::var("RUST_LOG")) {
        (Ok(v), _) if !v.trim().is_empty() => ("ARC_LOG", v),
        (_, Ok(v)) if !v.trim().is_empty() => ("RUST_LOG", v),
        _ => ("the default", default_filter.to_owned()),
    };
    let filter = EnvFilter::builder().parse(&directives).map_err(|e| format!("{var} {directives:?}: {e}"))?;
    let logs = match format {
        LogFormat::Pretty => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .with_writer(std::io::stderr)
            .boxed(),
    };

    let target = otlp_target()?;
    let endpoint = target.as_ref().map(|t| t.url.clone());
    let provider = match target {
        None => None,
        Some(target) => {
            use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
            let timeout = std::time::Duration::from_secs(5);
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_http_client(OtlpClient::new(&target, timeout)?)
                .with_endpoint(target.url.clone())
                .with_timeout(timeout)
                .with_headers(std::collections::HashMap::new())
                .build()
                .map_err(|e| format!("the OTLP exporter for {}: {e}", target.url))?;
            let mut resource = opentelemetry_sdk::Resource::builder();
            if std::env::var("OTEL_SERVICE_NAME").map_or(true, |v| v.trim().is_empty()) {
                resource = resource.with_service_name(service);
            }
            let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_sampler(opentelemetry_sdk::trace::Sampler::ParentBased(Box::new(
                    opentelemetry_sdk::trace::Sampler::AlwaysOn,
                )))
                .with_resource(resource.build())
                .build();
            opentelemetry::global::set_text_map_propagator(
                opentelemetry_sdk::propagation::TraceContextPropagator::new(),
            );
            Some(provider)
        }
    };
    let traces = provider.as_ref().map(|p| {
        use opentelemetry::trace::TracerProvider as _;
        // Arc's own spans only: a log level of warn must not hide them, and
        // a dependency's spans (sqlx, hyper) would only add noise.
        let arc_spans = Targets::new().with_default(LevelFilter::OFF).with_targets(
            ["arc_control", "arc_media", "arc_eventlog", "arc_webhooks", "arc_nodeproto"]
                .map(|t| (t, LevelFilter::INFO)),
        );
        tracing_opentelemetry::layer().with_tracer(p.tracer(service)).with_filter(arc_spans)
    });
    tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(traces)
        .try_init()
        .map_err(|e| format!("installing the log subscriber: {e}"))?;
    if let Some(endpoint) = endpoint {
        tracing::info!(%endpoint, service, "exporting traces over OTLP/HTTP");
    }
    Ok(Telemetry { provider })
}

/// `Content-Type` of the OpenMetrics exposition.
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// `Content-Type` of the Prometheus text exposition (format 0.0.4).
pub const PROMETHEUS_TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Encodes `registry` for a scraper: OpenMetrics when its `Accept` asks for
/// it (Prometheus does), else the Prometheus text format 0.0.4 (curl,
/// `promtool check metrics`, older scrapers). Returns (content type, body).
pub fn exposition(
    registry: &prometheus_client::registry::Registry,
    accept: Option<&str>,
) -> Result<(&'static str, String), std::fmt::Error> {
    let mut body = String::new();
    prometheus_client::encoding::text::encode(&mut body, registry)?;
    if accept.is_some_and(|a| a.contains("application/openmetrics-text")) {
        Ok((OPENMETRICS_CONTENT_TYPE, body))
    } else {
        Ok((PROMETHEUS_TEXT_CONTENT_TYPE, openmetrics_to_text(&body)))
    }
}

/// The Prometheus text format (0.0.4) of an OpenMetrics exposition: a
/// counter's `HELP` and `TYPE` name its `_total` samples, `UNIT` lines and
/// `# EOF` go (the older format has neither), samples stay as they are.
pub fn openmetrics_to_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            counters.contains(name).then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(l) => out.push_str(l.trim_end()),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod exposition_tests {
    #[test]
    fn counters_are_named_by_their_samples_and_openmetrics_only_lines_go() {
        let om = "# HELP arc_requests Requests.\n# TYPE arc_requests counter\narc_requests_total{route=\"/\"} 3\n\
                  # HELP arc_up Up.\n# TYPE arc_up gauge\narc_up 1\n\
                  # HELP arc_wait_seconds Wait.\n# TYPE arc_wait_seconds histogram\n# UNIT arc_wait_seconds seconds\n\
                  arc_wait_seconds_sum 0.5\narc_wait_seconds_count 1\narc_wait_seconds_bucket{le=\"+Inf\"} 1\n# EOF\n";
        let text = super::openmetrics_to_text(om);
        assert_eq!(
            text,
            "# HELP arc_requests_total Requests.\n# TYPE arc_requests_total counter\narc_requests_total{route=\"/\"} 3\n\
             # HELP arc_up Up.\n# TYPE arc_up gauge\narc_up 1\n\
             # HELP arc_wait_seconds Wait.\n# TYPE arc_wait_seconds histogram\n\
             arc_wait_seconds_sum 0.5\narc_wait_seconds_count 1\narc_wait_seconds_bucket{le=\"+Inf\"} 1\n"
        );
    }
}

/// The W3C trace context of the current span (`traceparent`, and
/// `tracestate` when set), to send along with a request; empty when no
/// trace is being recorded.
pub fn current_context_headers() -> Vec<(String, String)> {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let cx = tracing::Span::current().context();
    let mut headers = Vec::new();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut HeaderSink(&mut headers)));
    headers
}

/// Makes `span` a child of the trace context in `headers` (as
/// [`current_context_headers`] wrote them); no-op without one.
pub fn set_parent_from_headers<'a>(span: &tracing::Span, headers: impl IntoIterator<Item = (&'a str, &'a str)>) {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let found: Vec<(String, String)> =
        headers.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned())).collect();
    if !found.iter().any(|(k, _)| k == "traceparent") {
        return;
    }
    let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderSource(&found)));
    let _ = span.set_parent(cx);
}

/// The current span's W3C `traceparent`, when a trace is being recorded
/// (what an appended event carries so its readers can link to the request).
pub fn current_traceparent() -> Option<String> {
    current_context_headers().into_iter().find(|(k, _)| k == "traceparent").map(|(_, v)| v)
}

/// The span context a stored `traceparent` names; `None` when it does not
/// parse as one (the log is read defensively: a bad value only loses the link).
fn span_context(traceparent: &str) -> Option<opentelemetry::trace::SpanContext> {
    use opentelemetry::trace::TraceContextExt as _;
    let found = [("traceparent".to_owned(), traceparent.to_owned())];
    let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderSource(&found)));
    let sc = cx.span().span_context().clone();
    sc.is_valid().then_some(sc)
}

/// Links `span` to the spans named by `traceparents` (the requests whose
/// events a batch applies), at most `max` distinct ones; bad values are
/// skipped. No-op when `span` is not recorded.
pub fn link_to<'a>(span: &tracing::Span, traceparents: impl IntoIterator<Item = &'a str>, max: usize) {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    if span.is_disabled() {
        return;
    }
    let mut seen: Vec<&str> = Vec::new();
    for tp in traceparents {
        if seen.len() >= max {
            break;
        }
        if seen.contains(&tp) {
            continue;
        }
        seen.push(tp);
        if let Some(sc) = span_context(tp) {
            span.add_link(sc);
        }
    }
}

/// Makes `span` a child of the span a stored `traceparent` names (a webhook
/// delivery of the request's event); no-op without a valid one.
pub fn set_parent_traceparent(span: &tracing::Span, traceparent: Option<&str>) {
    if let Some(tp) = traceparent
        && span_context(tp).is_some()
    {
        set_parent_from_headers(span, [("traceparent", tp)]);
    }
}

/// The current span's trace id (16 bytes), when a trace is being recorded.
pub fn current_trace_id() -> Option<[u8; 16]> {
    use opentelemetry::trace::TraceContextExt as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let cx = tracing::Span::current().context();
    let span = cx.span();
    let sc = span.span_context();
    sc.is_valid().then(|| sc.trace_id().to_bytes())
}

struct HeaderSink<'a>(&'a mut Vec<(String, String)>);

impl opentelemetry::propagation::Injector for HeaderSink<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.push((key.to_owned(), value));
    }
}

struct HeaderSource<'a>(&'a [(String, String)]);

impl opentelemetry::propagation::Extractor for HeaderSource<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        let key = key.to_ascii_lowercase();
        self.0.iter().find(|(k, _)| *k == key).map(|(_, v)| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_str()).collect()
    }
}

#[cfg(test)]
mod log_tests {
    use super::LogFormat;

    #[test]
    fn log_formats_parse_and_bad_ones_are_named() {
        assert_eq!(LogFormat::parse(None), Ok(LogFormat::Pretty));
        assert_eq!(LogFormat::parse(Some("")), Ok(LogFormat::Pretty));
        assert_eq!(LogFormat::parse(Some("json")), Ok(LogFormat::Json));
        assert_eq!(LogFormat::parse(Some(" pretty ")), Ok(LogFormat::Pretty));
        let e = LogFormat::parse(Some("xml")).expect_err("xml");
        assert!(e.contains("ARC_LOG_FORMAT") && e.contains("xml"), "{e}");
    }
}
