//! The command line: help, version, exit codes, config errors, and the key commands.

use std::process::Command;
use std::time::Duration;

use crate::util::{BIN, Options, Server, config_text};

fn run(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(BIN).args(args).output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn help_and_version_on_every_command_and_usage_errors_exit_64() {
    for args in [
        &["--help"][..],
        &["serve", "--help"],
        &["key", "-h"],
        &["snapshot", "--help"],
        &["check-config", "--help"],
    ] {
        let (code, out, _) = run(args);
        assert_eq!(code, 0, "{args:?}");
        assert!(out.contains("usage: aims-api"), "{args:?}: {out}");
    }
    for args in
        [&["--version"][..], &["serve", "-V"], &["key", "--version"], &["check-config", "-V"]]
    {
        let (code, out, _) = run(args);
        assert_eq!(
            (code, out.trim()),
            (0, concat!("aims-api ", env!("CARGO_PKG_VERSION"))),
            "{args:?}"
        );
    }
    for args in [
        &[][..],
        &["frobnicate"],
        &["key"],
        &["key", "rotate"],
        &["serve", "--bogus"],
        &["snapshot"],
        &["snapshot", "import", "x.json"],
        &["snapshot", "delete", "May 14"],
    ] {
        let (code, _, err) = run(args);
        assert_eq!(code, 64, "{args:?}");
        assert!(err.contains("usage:"), "{args:?}: {err}");
    }
}

#[test]
fn check_config_accepts_the_shipped_config_and_names_line_and_column() {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/config.ron");
    let (code, out, _) = run(&["check-config", "--config", shipped]);
    assert_eq!((code, out), (0, format!("{shipped}: ok\n")));

    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "unknown field",
            Options { top: "colour: \"blue\",".into(), ..Options::default() },
            "colour",
        ),
        ("non-loopback admin", Options::default(), "not a loopback address"),
    ];
    for (what, options, needle) in cases {
        let mut text = config_text(dir.path(), &options);
        if what == "non-loopback admin" {
            let at = text.find("admin: (").unwrap();
            text =
                format!("{}{}", &text[..at], text[at..].replacen("127.0.0.1:0", "0.0.0.0:8444", 1));
        }
        let path = dir.path().join("bad.ron");
        std::fs::write(&path, &text).unwrap();
        let line =
            text.lines().position(|l| l.contains("colour") || l.contains("0.0.0.0")).unwrap() + 1;
        let path_text = path.to_str().unwrap();
        let (code, _, err) = run(&["check-config", "--config", path_text]);
        assert_eq!(code, 5, "{what}");
        assert!(err.contains(&format!("bad.ron:{line}:")), "{what}: line {line} in {err}");
        assert!(err.contains(needle), "{what}: {err}");
        // serve refuses the same file the same way, before touching anything.
        let (code, _, err) = run(&["serve", "--config", path_text]);
        assert_eq!(code, 5, "{what}");
        assert!(err.contains(&format!("bad.ron:{line}:")), "{what}: {err}");
    }
    let (code, _, err) = run(&["check-config", "--config", "/nonexistent/aims.ron"]);
    assert_eq!(code, 5);
    assert!(err.contains("/nonexistent/aims.ron"), "{err}");
}

#[test]
fn the_key_commands_drive_the_admin_port() {
    let server = Server::start();
    let status = server.cli(&["key", "status"]);
    assert!(status.status.success());
    assert!(String::from_utf8_lossy(&status.stdout).contains("state:       none"));

    let generated = server.cli(&["key", "generate"]);
    assert!(generated.status.success(), "{generated:?}");
    let key = String::from_utf8(generated.stdout).unwrap();
    let key = key.trim();
    assert!(key.starts_with("aims_") && key.len() == 54, "stdout is the key alone: {key:?}");
    let warning = String::from_utf8_lossy(&generated.stderr);
    assert!(warning.contains("cannot be shown again"), "{warning}");

    let again = server.cli(&["key", "generate"]);
    assert_eq!(again.status.code(), Some(4), "refused by the server");
    assert!(String::from_utf8_lossy(&again.stderr).contains("409 conflict"));

    let replaced = server.cli(&["key", "replace", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&replaced.stdout).unwrap();
    assert_ne!(json["api_key"].as_str(), Some(key));

    let revoked = server.cli(&["key", "revoke"]);
    let text = String::from_utf8_lossy(&revoked.stdout);
    assert!(text.contains("state:       revoked"), "{text}");
    let status = server.cli(&["key", "status", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!((json["state"].as_str(), json["generation"].as_u64()), (Some("revoked"), Some(3)));
}

#[test]
fn the_key_command_says_when_no_server_listens() {
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(dir.path(), &Options::default());
    let at = text.find("admin: (").unwrap();
    // Port 1 on loopback: nothing listens there.
    let text = format!("{}{}", &text[..at], text[at..].replacen("127.0.0.1:0", "127.0.0.1:1", 1));
    let path = dir.path().join("c.ron");
    std::fs::write(&path, text).unwrap();
    let (code, _, err) = run(&["key", "status", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 3, "the server could not be asked");
    assert!(err.contains("cannot reach the admin port at 127.0.0.1:1"), "{err}");
}

/// Runs `aims-api key check [--json] --config CONFIG` with `input` on standard input: its
/// exit status and standard output.
fn key_check(config: &std::path::Path, input: &str, json: bool) -> (i32, String) {
    use std::io::Write;
    let mut command = Command::new(BIN);
    command.args(["key", "check", "--config"]).arg(config);
    if json {
        command.arg("--json");
    }
    let mut child = command
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A command that fails before it reads (no configuration) may have closed its end already.
    let _ = child.stdin.take().unwrap().write_all(input.as_bytes());
    let out = child.wait_with_output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `key check`'s exit status is its verdict (issue 21): 0 admitted now (live, or in its grace),
/// 1 not admitted (retired, expired, unknown), 2 malformed or a bad checksum, 3 the server could
/// not be asked, 5 an unusable configuration, 6 nothing on standard input; with `--json` too.
#[test]
fn key_check_exits_with_its_verdict() {
    let mut server = Server::start();
    let stranger = Server::start().generate_key();
    let retired = server.generate_key();
    let (_, body) = server.admin("POST", "/key/replace");
    let in_grace = body["api_key"].as_str().unwrap().to_owned();
    let (_, body) = server.admin_with("POST", "/key/replace", r#"{"grace_secs": 600}"#);
    let live = body["api_key"].as_str().unwrap().to_owned();
    let config = server.cli_config();
    for (what, key, code, status) in [
        ("the live key", &live, 0, "live"),
        ("the previous key in its grace", &in_grace, 0, "grace"),
        ("a replaced key", &retired, 1, "retired"),
        ("another server's key", &stranger, 1, "unknown"),
    ] {
        let (got, out) = key_check(&config, &format!("{key}\n"), false);
        assert_eq!(got, code, "{what}: {out}");
        assert!(out.contains(&format!("status:      {status}")), "{what}: {out}");
        let (got, out) = key_check(&config, key, true);
        assert_eq!(got, code, "{what} --json: {out}");
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(json["status"], status, "{what}: {out}");
    }
    let mut typo = live.clone().into_bytes();
    typo[20] = if typo[20] == b'a' { b'b' } else { b'a' };
    let typo = String::from_utf8(typo).unwrap();
    let (code, out) = key_check(&config, &typo, false);
    assert_eq!(
        (code, out.as_str()),
        (2, "format:      malformed: key checksum does not match (a typo or a truncated key)\n")
    );
    let (code, out) = key_check(&config, "hello\n", true);
    assert_eq!(code, 2, "{out}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&out).unwrap()["status"], "malformed");
    assert_eq!(key_check(&config, "", false).0, 6, "nothing on standard input");
    let missing = config.with_file_name("missing.ron");
    assert_eq!(key_check(&missing, &live, false).0, 5, "no configuration");
    server.kill();
    let (code, out) = key_check(&config, &live, false);
    assert_eq!(code, 3, "the server could not be asked: {out}");
}

/// An expired key is not admitted: `key check` says so with status 1.
#[test]
fn key_check_of_an_expired_key_exits_1() {
    let server = Server::start();
    let (status, body) = server.admin_with("POST", "/key", r#"{"expires_in_secs": 1}"#);
    assert_eq!(status, 201, "{body}");
    let key = body["api_key"].as_str().unwrap().to_owned();
    let config = server.cli_config();
    let (code, out) = crate::util::poll(
        "key check of a key past its expiry",
        Duration::from_secs(20),
        || key_check(&config, &key, false),
        |(code, _)| *code != 0,
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("status:      retired: refused since "), "{out}");
}
