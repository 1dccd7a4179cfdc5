//! `arcctl` without a server: help, usage errors and an unreachable server
//! exit with their documented codes and one line each. (This test also makes
//! the workspace's test build produce the binary that
//! `control/tests/arcctl.rs` runs against a live arc-control.)

use std::process::Command;

const ARCCTL: &str = env!("CARGO_BIN_EXE_arcctl");

fn run(args: &[&str]) -> std::process::Output {
    Command::new(ARCCTL)
        .args(args)
        .env_remove("ARC_URL")
        .env_remove("ARC_ADMIN_KEY")
        .env_remove("ARC_CONTEXT")
        .env("ARCCTL_CONFIG", "/nonexistent/arcctl.toml")
        .output()
        .expect("run arcctl")
}

#[test]
fn help_names_the_exit_codes_and_examples() {
    let out = run(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("3 arc-control unreachable") && help.contains("5 not found"), "{help}");
    let out = run(&["events", "tail", "--help"]);
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("Examples:") && help.contains("--follow"), "{help}");
}

#[test]
fn failures_exit_with_their_codes() {
    // Bad usage: 2 (clap).
    assert_eq!(run(&["events", "tail", "-n", "x"]).status.code(), Some(2));
    assert_eq!(run(&["nonsense"]).status.code(), Some(2));
    // Nothing listens there: 3, one line.
    let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let out = run(&["--url", &format!("http://127.0.0.1:{port}"), "status"]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: cannot reach arc-control at"), "{err}");
}

#[test]
fn completions_for_every_shell_and_formats_are_checked() {
    for shell in ["bash", "zsh", "fish"] {
        let out = run(&["completions", shell]);
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(script.contains("participants") && script.contains("context"), "{shell}: {script}");
    }
    assert_eq!(run(&["-o", "xml", "status"]).status.code(), Some(2));
    assert_eq!(run(&["completions", "tcsh"]).status.code(), Some(2));
}

#[test]
fn a_context_keeps_its_ca_file_and_a_bad_one_is_refused_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("arcctl.toml");
    let ctx = |args: &[&str]| {
        Command::new(ARCCTL)
            .args(args)
            .env("ARCCTL_CONFIG", &config)
            .env_remove("ARC_CA_FILE")
            .output()
            .expect("arcctl")
    };
    let add = |ca: &str| ctx(&["context", "add", "lab", "--url", "https://10.0.0.11:7880", "--ca-file", ca]);
    let missing = dir.path().join("missing.pem");
    let out = add(missing.to_str().expect("path"));
    assert_eq!(out.status.code(), Some(2), "a missing CA file is bad usage");
    assert!(String::from_utf8_lossy(&out.stderr).contains("reading the CA file"), "{out:?}");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").expect("write");
    let out = add(garbage.to_str().expect("path"));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds no PEM certificate"), "{out:?}");
    assert!(!config.exists(), "nothing saved after a refusal");

    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("a certificate");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, made.cert.pem()).expect("write");
    let out = add(ca.to_str().expect("path"));
    assert!(out.status.success(), "{out:?}");
    let out = ctx(&["context", "list", "-o", "json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(list["contexts"][0]["ca_file"], ca.to_str().expect("path"), "{list}");
}
