//! `arc-media` on the command line: version, and bad arguments end with a
//! clear one-line error and a non-zero exit, before anything is connected.
//! (Building this test also builds the `arc-media` binary with the rest of the
//! workspace's test build, which the media tests in `control/tests` start.)

use std::process::{Command, Output};

fn arc_media(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_arc-media"))
        .args(args)
        .env_remove("ARC_NATS_URL")
        .env_remove("ARC_NODE_ID")
        .env_remove("ARC_MEDIA_UDP")
        .output()
        .expect("run arc-media")
}

#[test]
fn version_and_help() {
    let out = arc_media(&["--version"]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.trim(), format!("arc-media {}", env!("CARGO_PKG_VERSION")));

    let out = arc_media(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in ["--nats", "--media-udp", "--public-ip", "--drain-timeout-s", "--node-id"] {
        assert!(help.contains(flag), "--help mentions {flag}: {help}");
    }
}

#[test]
fn bad_arguments_are_refused_clearly() {
    // No NATS URL at all.
    let out = arc_media(&[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--nats"));

    // A media address that is not host:port.
    let out = arc_media(&["--nats", "nats://127.0.0.1:1", "--media-udp", "not-an-address"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--media-udp"));

    // A node id with characters the subjects cannot carry: refused before connecting.
    let out = arc_media(&["--nats", "nats://127.0.0.1:1", "--node-id", "bad id.with*dots"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("error: --node-id"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line, no backtrace: {stderr}");
}

#[test]
fn a_bad_log_format_is_refused_by_name() {
    let out = Command::new(env!("CARGO_BIN_EXE_arc-media"))
        .args(["--nats", "nats://127.0.0.1:1"])
        .env("ARC_LOG_FORMAT", "xml")
        .output()
        .expect("run arc-media");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("error: ARC_LOG_FORMAT=\"xml\""), "{stderr}");
}
