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
//! - [`init_logs`]: structured logs on stderr, `ARC_LOG_FORMAT=pretty`
//!   (default; colours only on a terminal) or `json` (one object per line),
//!   the level from `ARC_LOG`, else `RUST_LOG`, else the role's default.

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

/// Installs the global log subscriber: the filter from `ARC_LOG`, else
/// `RUST_LOG`, else `default_filter`; the format from `ARC_LOG_FORMAT`.
/// A bad filter or format is an error for the caller to print (the process
/// should not start with logs it did not ask for).
pub fn init_logs(default_filter: &str) -> Result<(), String> {
    use tracing_subscriber::EnvFilter;
    let format = LogFormat::parse(std::env::var("ARC_LOG_FORMAT").ok().as_deref())?;
    let (var, directives) = match (std::env::var("ARC_LOG"), std::env::var("RUST_LOG")) {
        (Ok(v), _) if !v.trim().is_empty() => ("ARC_LOG", v),
        (_, Ok(v)) if !v.trim().is_empty() => ("RUST_LOG", v),
        _ => ("the default", default_filter.to_owned()),
    };
    let filter = EnvFilter::builder().parse(&directives).map_err(|e| format!("{var} {directives:?}: {e}"))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Pretty => builder.with_ansi(std::io::stderr().is_terminal()).try_init(),
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(true).try_init(),
    };
    installed.map_err(|e| format!("installing the log subscriber: {e}"))
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
