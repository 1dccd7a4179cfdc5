//! Logs as operators configure them: `ARC_LOG_FORMAT=json` gives one JSON
//! object per stderr line (with level, target and fields), a bad format or
//! filter stops the process with one line naming the variable, and the
//! default format writes no colour codes when stderr is not a terminal.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::Mode;
use serde_json::Value;

/// Starts `arc-control dev` with `envs`; returns its first stderr lines
/// (up to `want`, or what came within 60 s) and stops it.
fn first_log_lines(envs: &[(&str, &str)], want: usize) -> Vec<String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let mode = Mode::Embedded { data_dir: dir.path().to_path_buf() };
    let mut child = Command::new(env!("CARGO_BIN_EXE_arc-control"))
        .arg("dev")
        .args(mode.args(None))
        .env_remove("ARC_LOG")
        .env_remove("RUST_LOG")
        .env_remove("ARC_LOG_FORMAT")
        .envs(common::SERVER_TEST_ENV.iter().copied())
        .envs(envs.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn arc-control");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    while lines.len() < want {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => lines.push(line),
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    lines
}

#[test]
fn json_logs_are_one_object_per_line() {
    // The embedded node logs its media port and its registration at info.
    let lines = first_log_lines(&[("ARC_LOG_FORMAT", "json"), ("ARC_LOG", "info")], 2);
    assert!(lines.len() >= 2, "two log lines: {lines:?}");
    for line in &lines {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("a JSON line {line:?}: {e}"));
        assert!(v["timestamp"].is_string() && v["level"] == "INFO", "{v}");
        assert!(v["target"].as_str().is_some_and(|t| t.starts_with("arc_")), "{v}");
        assert!(v["fields"]["message"].is_string(), "{v}");
    }
}

#[test]
fn pretty_logs_carry_no_colour_codes_off_a_terminal() {
    let lines = first_log_lines(&[("RUST_LOG", "info")], 1);
    assert!(!lines.is_empty(), "RUST_LOG is read when ARC_LOG is unset");
    assert!(lines.iter().all(|l| !l.contains('\u{1b}')), "no ANSI escapes: {lines:?}");
    assert!(lines[0].contains("INFO"), "{lines:?}");
}

#[test]
fn bad_log_settings_stop_the_process_with_their_name() {
    for (var, value) in [("ARC_LOG_FORMAT", "xml"), ("ARC_LOG", "info,=[")] {
        let out = Command::new(env!("CARGO_BIN_EXE_arc-control"))
            .args(["dev", "--data-dir", "/nonexistent/arc-logs-test"])
            .env_remove("ARC_LOG")
            .env_remove("RUST_LOG")
            .env_remove("ARC_LOG_FORMAT")
            .env(var, value)
            .output()
            .expect("run arc-control");
        assert_eq!(out.status.code(), Some(1), "{var}={value}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("error: ") && err.contains(var), "{var}={value}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
    }
}
