//! The key's whole life: rotation with a grace window, expiry, last use and clients, and the
//! tripwires for a retired key and for the live key sent in clear text.

use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::util::{ACTIVATION_CODE, BIN, Options, Server, poll, tcp_exchange};
use crate::workload::{GraceSettings, grace_race};

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn time(text: &str) -> SystemTime {
    humantime::parse_rfc3339(text).unwrap()
}

/// The fingerprint the server shows for `key`.
fn fingerprint(key: &str) -> String {
    format!("aims_...{}", &key[key.len() - 4..])
}

impl Server {
    pub(crate) fn status_with(&self, key: &str) -> u16 {
        self.get_with_key("/life/probe", key).status
    }
}

#[test]
fn a_replace_with_grace_admits_the_old_key_until_valid_until_and_never_after() {
    // No throttling: every refusal of the old key must be a 401 to count.
    let server = Server::start_with(&Options {
        api: "max_refusals_per_address: 1000000,".into(),
        ..Options::default()
    });
    let first = server.generate_key();
    let (status, body) = server.admin_with("POST", "/key/replace", r#"{"grace_secs": 2}"#);
    assert_eq!(status, 200, "{body}");
    let second = body["api_key"].as_str().unwrap().to_owned();
    assert_eq!(body["previous"]["fingerprint"], fingerprint(&first));
    assert_eq!(body["previous"]["generation"], 1);
    let valid_until = time(body["previous"]["valid_until"].as_str().unwrap());
    let (_, status_body) = server.admin("GET", "/key");
    assert_eq!(status_body["previous"]["fingerprint"], fingerprint(&first), "{status_body}");
    assert_eq!(status_body["previous"]["valid_until"], body["previous"]["valid_until"]);
    let unix = valid_until.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs_f64();
    assert_eq!(server.metric("aims_key_grace_until_timestamp_seconds"), Some(unix));

    // Both keys are admitted (404: no such method, past the gate) until valid_until; after it,
    // a request sent with the old key is never admitted.
    let deadline = valid_until + Duration::from_secs(1);
    let (mut before, mut after, mut refused) = (0, 0, 0);
    while SystemTime::now() < deadline {
        let sent = SystemTime::now();
        let status = server.status_with(&first);
        if sent > valid_until {
            assert_eq!(status, 401, "a request sent after valid_until was admitted");
            after += 1;
        } else if status == 404 {
            before += 1;
        }
        // One sent just before the deadline may be read just after it: refused, rightly.
        refused += u64::from(status == 401);
        assert_eq!(server.status_with(&second), 404);
    }
    assert!(before > 0 && after > 0, "{before} admitted before, {after} refused after");
    let (_, status_body) = server.admin("GET", "/key");
    assert!(status_body["previous"].is_null(), "{status_body}");
    assert_eq!(server.metric("aims_key_grace_until_timestamp_seconds"), None);

    // The refusal log names the retired key, and the counter counts it.
    let log = server.wait_for_log("reason=\"retired key");
    let named = format!("reason=\"retired key {} (generation 1, replaced ", fingerprint(&first));
    assert!(log.contains(&named), "{log}");
    let retired = server.metric("aims_refusals_total{reason=\"retired_key\"}");
    assert_eq!(retired, Some(refused as f64));
}

#[test]
fn a_second_replace_ends_the_first_grace_and_a_revoke_ends_both_keys() {
    let server = Server::start();
    let first = server.generate_key();
    let replace = |grace: &str| {
        let (status, body) = server.admin_with("POST", "/key/replace", grace);
        assert_eq!(status, 200, "{body}");
        body["api_key"].as_str().unwrap().to_owned()
    };
    let second = replace(r#"{"grace_secs": 600}"#);
    assert_eq!((server.status_with(&first), server.status_with(&second)), (404, 404));
    let third = replace(r#"{"grace_secs": 600}"#);
    assert_eq!(server.status_with(&first), 401, "the first grace ended with the second replace");
    assert_eq!((server.status_with(&second), server.status_with(&third)), (404, 404));
    let (status, body) = server.admin("DELETE", "/key");
    assert_eq!(status, 200, "{body}");
    assert!(body["previous"].is_null(), "{body}");
    for key in [&first, &second, &third] {
        assert_eq!(server.status_with(key), 401);
    }
    // Beyond the limits: a grace longer than a day, a grace on generate, unknown fields.
    let fresh = server.admin_with("POST", "/key", r#"{"grace_secs": 5}"#);
    assert_eq!((fresh.0, fresh.1["error"].as_str()), (400, Some("invalid_body")));
    let fourth = server.generate_key();
    // After a revoke, a new key takes over from no key: the revoked one is not its previous.
    let log = server.wait_for_log(&format!("fingerprint={} previous=", fingerprint(&fourth)));
    let line = format!("fingerprint={} previous=- generation=5 result=ok", fingerprint(&fourth));
    assert!(log.contains(&line), "{line}:\n{log}");
    let long = server.admin_with("POST", "/key/replace", r#"{"grace_secs": 86401}"#);
    assert_eq!((long.0, long.1["error"].as_str()), (400, Some("grace_too_long")), "{}", long.1);
    let odd = server.admin_with("POST", "/key/replace", r#"{"grace": 5}"#);
    assert_eq!((odd.0, odd.1["error"].as_str()), (400, Some("invalid_body")), "{}", odd.1);
    let log = server.wait_for_log("result=refused");
    assert!(log.contains("audit action=key.replace client=uid:"), "{log}");
}

#[test]
fn the_grace_deadline_under_load_admits_nothing_stale() {
    let server = Arc::new(Server::start_with(&Options {
        api: "max_refusals_per_address: 1000000,".into(),
        ..Options::default()
    }));
    let report = grace_race(&server, &GraceSettings { clients: 8, rounds: 2, grace_secs: 1 });
    println!("{report}");
    assert!(report.holds(), "{report}");
    assert_eq!((report.stale_admits, report.unexpected, report.rounds), (0, 0, 2), "{report}");
    assert!(report.admitted_before > 100 && report.refused_after > 100, "{report}");
}

#[test]
fn a_crash_during_a_grace_keeps_its_deadline_and_never_extends_it() {
    let server = Server::start();
    let first = server.generate_key();
    let (status, body) = server.admin_with("POST", "/key/replace", r#"{"grace_secs": 3}"#);
    assert_eq!(status, 200, "{body}");
    let second = body["api_key"].as_str().unwrap().to_owned();
    let valid_until = body["previous"]["valid_until"].as_str().unwrap().to_owned();
    let (dir, config) = server.stop(); // SIGKILL
    let server = Server::start_in(dir, config).unwrap();
    let (_, status_body) = server.admin("GET", "/key");
    assert_eq!(status_body["previous"]["valid_until"], valid_until.as_str(), "{status_body}");
    assert_eq!((server.status_with(&first), server.status_with(&second)), (404, 404));
    // Past the deadline (which the restart did not move), the old key is refused.
    let deadline = time(&valid_until);
    let poll_until = Instant::now() + Duration::from_secs(10);
    while SystemTime::now() <= deadline && Instant::now() < poll_until {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(server.status_with(&first), 401);
    assert_eq!(server.status_with(&second), 404);
}

#[test]
fn keys_expire_and_the_configured_lifetime_bounds_them() {
    let server = Server::start_with(&Options {
        top: "key_max_lifetime_days: Some(30),".into(),
        ..Options::default()
    });
    let (status, body) = server.admin_with("POST", "/key", r#"{"expires_in_secs": 2678400}"#);
    assert_eq!((status, body["error"].as_str()), (400, Some("lifetime_too_long")), "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("key_max_lifetime_days allows (30 days"), "{message}");
    // Without asking, a key gets the longest lifetime.
    let (status, body) = server.admin_with("POST", "/key", "");
    assert_eq!(status, 201, "{body}");
    let expires = time(body["expires_at"].as_str().unwrap());
    let created = time(body["created_at"].as_str().unwrap());
    assert_eq!(expires.duration_since(created).unwrap(), Duration::from_secs(30 * 86_400));
    let expiry = server.metric("aims_key_expiry_timestamp_seconds").unwrap();
    let unix = expires.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!((expiry - unix).abs() < 0.001, "{expiry} vs {unix}");

    // A key that expires in a second: admitted, then refused as expired.
    let (status, body) = server.admin_with("POST", "/key/replace", r#"{"expires_in_secs": 1}"#);
    assert_eq!(status, 200, "{body}");
    let short = body["api_key"].as_str().unwrap().to_owned();
    let expires = time(body["expires_at"].as_str().unwrap());
    assert_eq!(server.status_with(&short), 404);
    while SystemTime::now() <= expires {
        std::thread::sleep(Duration::from_millis(20));
    }
    let refused = server.get_with_key("/life/probe", &short);
    assert_eq!(refused.status, 401);
    assert_eq!(refused.exception(), "the API key or the activation code is not valid");
    let log = server.wait_for_log("reason=\"expired key\"");
    assert!(log.contains("reason=\"expired key\""), "{log}");
    let (_, status_body) = server.admin("GET", "/key");
    assert_eq!(status_body["state"], "expired", "{status_body}");
    assert_eq!(server.metric("aims_refusals_total{reason=\"expired_key\"}"), Some(1.0));
    assert_eq!(server.metric("aims_key_state{state=\"expired\"}"), Some(1.0));
    // An expired key can be replaced (or a new one generated).
    let (status, _) = server.admin_with("POST", "/key/replace", "");
    assert_eq!(status, 200);
}

#[test]
fn last_use_and_clients_are_kept_and_survive_a_clean_restart() {
    let mut server = Server::start();
    assert_eq!(server.metric("aims_key_last_used_timestamp_seconds"), None);
    let key = server.generate_key();
    let headers = [("x-api-key", key.as_str()), ("x-activation-code", ACTIVATION_CODE)];
    for source in ["127.0.0.2", "127.0.0.2", "127.0.0.3", "127.0.0.2", "127.0.0.3"] {
        assert_eq!(server.get_from(ip(source), "/life/use", &headers).status, 404);
    }
    let (_, status_body) = server.admin("GET", "/key");
    assert_eq!(status_body["admitted"], 5, "{status_body}");
    assert_eq!(status_body["last_used_from"], "127.0.0.3");
    assert!(status_body["last_used_at"].as_str().unwrap().ends_with('Z'));
    assert!(server.metric("aims_key_last_used_timestamp_seconds").is_some());
    let (_, clients) = server.admin("GET", "/key/clients");
    let seen: Vec<(String, u64)> = clients["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["address"].as_str().unwrap().to_owned(), c["admitted"].as_u64().unwrap()))
        .collect();
    assert_eq!(seen, [("127.0.0.3".to_owned(), 2), ("127.0.0.2".to_owned(), 3)]);
    assert_eq!((clients["limit"].as_u64(), clients["dropped"].as_u64()), (Some(256), Some(0)));
    let log = server.wait_for_log("key.new_address client=127.0.0.3");
    for source in ["127.0.0.2", "127.0.0.3"] {
        let line = format!(
            "audit action=key.new_address client={source} fingerprint={} generation=1",
            fingerprint(&key)
        );
        assert_eq!(log.matches(&line).count(), 1, "{line} once:\n{log}");
    }
    let cli = server.cli(&["key", "clients"]);
    let shown = String::from_utf8_lossy(&cli.stdout);
    assert!(cli.status.success(), "{cli:?}");
    assert!(shown.starts_with("2 address(es) used key aims_..."), "{shown}");
    assert!(shown.contains("127.0.0.3") && shown.contains("127.0.0.2"), "{shown}");

    // A clean stop writes the usage; the restarted server still knows it.
    server.signal(rustix::process::Signal::TERM);
    assert!(server.wait_exit(Duration::from_secs(10)).is_some_and(|s| s.success()));
    let (dir, config) = server.stop();
    let server = Server::start_in(dir, config).unwrap();
    let (_, status_body) = server.admin("GET", "/key");
    assert_eq!(
        (status_body["admitted"].as_u64(), status_body["last_used_from"].as_str()),
        (Some(5), Some("127.0.0.3"))
    );
    let usage = std::fs::metadata(server.state_dir().join("usage.ron")).unwrap();
    assert_eq!(std::os::unix::fs::PermissionsExt::mode(&usage.permissions()) & 0o777, 0o600);
}

#[test]
fn the_live_key_over_plain_http_trips_the_wire() {
    let server = Server::start();
    let key = server.generate_key();
    assert_eq!(server.metric("aims_key_exposures_total"), Some(0.0));
    let plain = format!(
        "GET /life HTTP/1.1\r\nHost: localhost\r\nx-api-key: {key}\r\nx-activation-code: {ACTIVATION_CODE}\r\n\r\n"
    );
    let got = tcp_exchange(server.api, plain.as_bytes(), Duration::from_secs(5));
    assert!(got.raw.starts_with(b"HTTP/1.1 400 "), "{}", String::from_utf8_lossy(&got.raw));
    let log = server.wait_for_log("key exposure");
    let line = log.lines().find(|l| l.contains("key exposure")).unwrap();
    assert!(line.contains(&format!("the live key {} (generation 1)", fingerprint(&key))), "{line}");
    assert!(line.contains("from 127.0.0.1") && line.contains("ERROR"), "{line}");
    assert!(!line.contains(&key));
    assert_eq!(server.metric("aims_key_exposures_total"), Some(1.0));
    let (_, status_body) = server.admin("GET", "/key");
    assert_eq!(status_body["exposed"]["from"], "127.0.0.1", "{status_body}");
    // Alert only (the default): the key still works; a replace clears the record.
    assert_eq!(server.status_with(&key), 404);
    let (status, _) = server.admin("POST", "/key/replace");
    assert_eq!(status, 200);
    let (_, status_body) = server.admin("GET", "/key");
    assert!(status_body["exposed"].is_null(), "{status_body}");
    // A wrong key in clear text is not an exposure.
    let _ = tcp_exchange(server.api, plain.as_bytes(), Duration::from_secs(5));
    assert_eq!(server.metric("aims_key_exposures_total"), Some(1.0));
}

#[test]
fn with_on_key_exposure_revoke_an_exposed_key_is_revoked_at_once() {
    let server = Server::start_with(&Options {
        top: "on_key_exposure: revoke,".into(),
        ..Options::default()
    });
    let key = server.generate_key();
    let plain = format!("GET / HTTP/1.1\r\nHost: localhost\r\nx-api-key: {key}\r\n\r\n");
    let _ = tcp_exchange(server.api, plain.as_bytes(), Duration::from_secs(5));
    let log = server.wait_for_log("audit action=key.revoke client=server");
    let audit = format!(
        "audit action=key.revoke client=server fingerprint={} generation=2 result=ok",
        fingerprint(&key)
    );
    assert!(log.contains(&audit), "{log}");
    assert_eq!(server.status_with(&key), 401);
    let (_, status_body) = server.admin("GET", "/key");
    assert_eq!(status_body["state"], "revoked", "{status_body}");
}

/// Runs `aims-api key check` with `input` on standard input; returns (success, stdout).
fn key_check(server: &Server, input: &str) -> (bool, String) {
    let mut child = Command::new(BIN)
        .args(["key", "check", "--config"])
        .arg(server.cli_config())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(!stdout.contains(input.trim()) || input.trim().is_empty());
    assert!(
        !String::from_utf8_lossy(&output.stderr).contains(input.trim()) || input.trim().len() < 8
    );
    (output.status.success(), stdout)
}

#[test]
fn key_check_says_what_a_key_is_and_never_echoes_it() {
    let server = Server::start();
    let first = server.generate_key();
    let (_, body) = server.admin("POST", "/key/replace");
    let second = body["api_key"].as_str().unwrap().to_owned();
    let (_, body) = server.admin_with("POST", "/key/replace", r#"{"grace_secs": 600}"#);
    let third = body["api_key"].as_str().unwrap().to_owned();
    let stranger = Server::start().generate_key();
    let mut typo = third.clone().into_bytes();
    typo[20] = if typo[20] == b'a' { b'b' } else { b'a' };
    let typo = String::from_utf8(typo).unwrap();

    let (ok, out) = key_check(&server, &format!("{third}\n"));
    assert!(ok, "{out}");
    assert_eq!(
        out,
        format!(
            "format:      well-formed, checksum matches\nfingerprint: {}\nstatus:      live: the \
             current key (generation 3)\n",
            fingerprint(&third)
        )
    );
    let (_, out) = key_check(&server, &format!("{second}\n"));
    assert!(out.contains("status:      grace: the previous key, still admitted until "), "{out}");
    let (_, out) = key_check(&server, &format!("{first}\n"));
    assert!(out.contains("status:      retired: refused since "), "{out}");
    assert!(out.contains("(replaced; generation 1)"), "{out}");
    let (_, out) = key_check(&server, &stranger);
    assert!(out.ends_with("status:      unknown: not a key this server knows (neither in force nor among the last 16 retired)\n"), "{out}");
    let (ok, out) = key_check(&server, &typo);
    assert!(!ok, "a malformed key is not admitted (exit 2: tests/integration/cli.rs)");
    assert_eq!(
        out,
        "format:      malformed: key checksum does not match (a typo or a truncated key)\n"
    );
    let (_, out) = key_check(&server, "hello\n");
    assert!(out.starts_with("format:      malformed: "), "{out}");
    let (ok, _) = key_check(&server, "");
    assert!(!ok, "no key on standard input is an error");
}

#[test]
fn an_exposed_grace_key_ends_its_grace_and_the_live_key_stays() {
    let server = Server::start_with(&Options {
        top: "on_key_exposure: revoke,".into(),
        ..Options::default()
    });
    let old = server.generate_key();
    let (status, body) = server.admin_with("POST", "/key/replace", r#"{"grace_secs": 600}"#);
    assert_eq!(status, 200, "{body}");
    let live = body["api_key"].as_str().unwrap().to_owned();
    assert_eq!(server.status_with(&old), 404, "admitted during its grace");
    let plain = format!("GET / HTTP/1.1\r\nHost: localhost\r\nx-api-key: {old}\r\n\r\n");
    let _ = tcp_exchange(server.api, plain.as_bytes(), Duration::from_secs(5));
    let log = server.wait_for_log("audit action=key.end_grace client=server");
    let line = log.lines().find(|l| l.contains("key exposure")).unwrap();
    let which = format!("the previous key (still in its grace window) {}", fingerprint(&old));
    assert!(line.contains(&which), "{line}");
    assert_eq!(server.status_with(&old), 401, "the grace ended");
    assert_eq!(server.status_with(&live), 404, "the live key was not exposed: it stays");
    let (_, status_body) = server.admin("GET", "/key");
    assert!(status_body["previous"].is_null(), "{status_body}");
    assert_eq!(status_body["state"], "active");
}

/// Issue 19, item 5: `exposed` names a key only while that key is admitted. It used to outlive
/// the exposed key's grace and show on the new, never-exposed key.
#[test]
fn exposed_is_cleared_once_the_exposed_key_is_no_longer_admitted() {
    let server = Server::start();
    let old = server.generate_key();
    let plain = format!("GET / HTTP/1.1\r\nHost: localhost\r\nx-api-key: {old}\r\n\r\n");
    let _ = tcp_exchange(server.api, plain.as_bytes(), Duration::from_secs(5));
    let (_, body) = server.admin("GET", "/key");
    assert_eq!(body["exposed"]["generation"], 1, "{body}");
    let (status, body) = server.admin_with("POST", "/key/replace", r#"{"grace_secs": 2}"#);
    assert_eq!(status, 200, "{body}");
    // Still admitted during its grace: still shown.
    let (_, body) = server.admin("GET", "/key");
    assert_eq!(body["exposed"]["generation"], 1, "{body}");
    assert_eq!(server.status_with(&old), 404);
    let body = poll(
        "the grace to end",
        Duration::from_secs(30),
        || server.admin("GET", "/key").1,
        |body| body["previous"].is_null(),
    );
    assert!(body["exposed"].is_null(), "the new key was never exposed: {body}");
    assert_eq!(server.status_with(&old), 401);
}
