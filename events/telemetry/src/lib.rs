//! What every Arc role (arc-control, arc-media, and the roles to come)
//! exposes to operators the same way.
//!
//! # Layout
//! - [`ProcessMetrics`]: the process's CPU seconds and resident memory as
//!   Prometheus metrics (`<prefix>_process_cpu_seconds_total`,
//!   `<prefix>_process_resident_memory_bytes`), read from `/proc/self` at
//!   scrape time.

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

/// CPU seconds and resident bytes of this process, if `/proc/self` is readable.
pub fn process_figures() -> Option<(f64, i64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // After the command name (which may hold spaces and parentheses):
    // utime and stime are the 12th and 13th fields.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let rss_kib: i64 =
        status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.split_whitespace().next()?.parse().ok()?;
    // USER_HZ is 100 on every Linux architecture Arc runs on.
    Some((ticks / 100.0, rss_kib.saturating_mul(1024)))
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
