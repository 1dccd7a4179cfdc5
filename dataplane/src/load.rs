//! The node process's own CPU use, from `/proc/self/stat` (read by
//! `arc-telemetry`, which `/metrics` uses too).

use std::time::Instant;

use arc_telemetry::{TICKS_PER_S, process_cpu_ticks};

/// Measures CPU use between calls.
#[derive(Debug)]
pub struct CpuMeter {
    last: Option<(Instant, u64)>,
}

impl Default for CpuMeter {
    fn default() -> Self {
        Self::new()
    }
}

impl CpuMeter {
    /// A meter whose first sample reads 0.
    pub fn new() -> Self {
        Self { last: None }
    }

    /// CPU percent (100 = one core) since the previous call.
    pub fn sample(&mut self) -> f32 {
        let Some(ticks) = process_cpu_ticks() else { return 0.0 };
        let now = Instant::now();
        let percent = match self.last {
            Some((then, before)) => {
                let secs = now.duration_since(then).as_secs_f64();
                if secs > 0.0 { (ticks.saturating_sub(before) as f64 / TICKS_PER_S / secs * 100.0) as f32 } else { 0.0 }
            }
            None => 0.0,
        };
        self.last = Some((now, ticks));
        percent
    }
}
