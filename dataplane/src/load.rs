//! The node process's own CPU use, from `/proc/self/stat`.

use std::time::Instant;

/// Clock ticks per second in `/proc` (USER_HZ; 100 on Linux x86_64 and arm64).
const TICKS_PER_S: f64 = 100.0;

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
        let Some(ticks) = process_ticks() else { return 0.0 };
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

/// utime + stime of this process, in ticks.
fn process_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    parse_ticks(&stat)
}

fn parse_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) may hold spaces; fields after its ')' are plain.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_stat_even_with_odd_command_names() {
        let stat = "42 (arc (media) x) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0 100 0 0";
        assert_eq!(parse_ticks(stat), Some(300));
        assert_eq!(parse_ticks("garbage"), None);
        assert!(process_ticks().is_some());
    }
}
