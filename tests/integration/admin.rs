//! The admin port: root only, loopback only, no browsers, and the key's life cycle.

use std::process::Command;

use crate::util::{Options, Response, Server, cli_as_nobody, raw_exchange, require_root};

fn admin_raw(server: &Server, request: &str) -> Response {
    Response::parse(&raw_exchange(server.admin, request.as_bytes())).expect("an HTTP answer")
}

#[test]
fn key_life_cycle_with_conflicts() {
    let server = Server::start();
    let health = serde_json::json!({"status": "ok", "uid_lookup": "sock_diag"});
    assert_eq!(server.admin("GET", "/health"), (200, health));
    let (status, none) = server.admin("GET", "/key");
    assert_eq!(status, 200);
    assert_eq!(none["state"], "none");
    assert!(
        none["fingerprint"].is_null()
            && none["created_at"].is_null()
            && none["revoked_at"].is_null()
    );
    assert_eq!(server.admin("POST", "/key/replace").0, 409);
    assert_eq!(server.admin("DELETE", "/key").0, 409);

    let (status, made) = server.admin("POST", "/key");
    assert_eq!(status, 201);
    let key = made["api_key"].as_str().unwrap();
    assert!(key.starts_with("aims_") && key.len() == 54, "{key}");
    let fingerprint = made["fingerprint"].as_str().unwrap();
    assert_eq!(fingerprint, format!("aims_...{}", &key[50..]));
    assert!(made["created_at"].as_str().unwrap().ends_with('Z'));
    let (status, conflict) = server.admin("POST", "/key");
    assert_eq!((status, conflict["error"].as_str()), (409, Some("conflict")), "{conflict}");

    let (_, active) = server.admin("GET", "/key");
    assert_eq!(
        (active["state"].as_str(), active["fingerprint"].as_str()),
        (Some("active"), Some(fingerprint))
    );
    assert!(active.get("api_key").is_none(), "status never shows the key");

    let (status, replaced) = server.admin("POST", "/key/replace");
    assert_eq!(status, 200);
    assert_ne!(replaced["api_key"], made["api_key"]);
    let (status, revoked) = server.admin("DELETE", "/key");
    assert_eq!(status, 200);
    assert_eq!(revoked["state"], "revoked");
    assert!(revoked["revoked_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(revoked["fingerprint"], replaced["fingerprint"]);
    assert_eq!(server.admin("DELETE", "/key").0, 409);
    assert_eq!(server.admin("POST", "/key/replace").0, 409);
    // After a revoke a new key may be generated.
    assert_eq!(server.admin("POST", "/key").0, 201);
    let (_, last) = server.admin("GET", "/key");
    assert_eq!(last["generation"], 4);
}

#[test]
fn the_key_response_is_not_cacheable_and_the_key_is_never_kept() {
    let server = Server::start();
    let raw = raw_exchange(
        server.admin,
        b"POST /key HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    let response = Response::parse(&raw).unwrap();
    assert_eq!(response.status, 201);
    assert_eq!(response.header("cache-control"), Some("no-store"));
    let key = response.json()["api_key"].as_str().unwrap().to_owned();
    let (_, replaced) = server.admin("POST", "/key/replace");
    let second = replaced["api_key"].as_str().unwrap().to_owned();
    server.admin("DELETE", "/key");

    let store = std::fs::read_to_string(server.state_dir().join("key.ron")).unwrap();
    let log = server.wait_for_log("action=key.revoke");
    for secret in [&key, &second] {
        assert!(!store.contains(secret.as_str()), "key in the store");
        assert!(!log.contains(secret.as_str()), "key in the log");
        // Nor its hash (the store holds the hash, the log must not).
        let hash = sha256_hex(secret);
        assert!(!log.contains(&hash), "key hash in the log");
    }
    assert!(store.contains(&sha256_hex(&second)), "the store holds the hash");
    for action in ["action=key.generate", "action=key.replace", "action=key.revoke"] {
        assert!(
            log.contains(action) && log.contains("client=uid:"),
            "audit line for {action}:\n{log}"
        );
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&server.state_dir().join("key.ron")), 0o600);
    assert_eq!(mode(&server.state_dir()), 0o700);
}

fn sha256_hex(text: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn unknown_paths_and_wrong_methods() {
    let server = Server::start();
    let (status, body) = server.admin("GET", "/nope");
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
    let response =
        admin_raw(&server, "PUT /key HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    assert_eq!(response.status, 405);
    assert_eq!(response.header("allow"), Some("GET, HEAD, POST, DELETE"));
    assert_eq!(response.json()["error"], "method_not_allowed");
    let response = admin_raw(
        &server,
        "GET /key/replace HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    assert_eq!((response.status, response.header("allow")), (405, Some("POST")));
}

#[test]
fn browsers_cannot_drive_the_admin_port() {
    let server = Server::start();
    let cases = [
        "POST /key HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
        "POST /key HTTP/1.1\r\nHost: 127.0.0.1.evil.example\r\nConnection: close\r\n\r\n",
        "POST /key HTTP/1.1\r\nHost: localhost\r\nOrigin: http://localhost\r\nConnection: close\r\n\r\n",
        "POST /key HTTP/1.1\r\nHost: localhost\r\nSec-Fetch-Site: same-origin\r\nConnection: close\r\n\r\n",
        "POST /key HTTP/1.0\r\n\r\n",
    ];
    for request in cases {
        let response = admin_raw(&server, request);
        assert_eq!(response.status, 403, "{request}");
        assert_eq!(response.json()["error"], "forbidden", "{request}");
    }
    assert_eq!(server.admin("GET", "/key").1["state"], "none", "nothing was generated");
    for host in ["localhost:1", "[::1]:8444", "127.0.0.1"] {
        let request = format!("GET /health HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        let response = admin_raw(&server, &request);
        assert_eq!(response.status, 200, "{host}");
    }
}

/// Runs `curl` as uid/gid 65534 against the admin port.
fn curl_as_nobody(server: &Server, method: &str, path: &str) -> (String, String) {
    let output = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "curl", "-sS", "-X", method])
        .arg(format!("http://{}{path}", server.admin))
        .args(["-w", "\n%{http_code}"])
        .output()
        .expect("setpriv and curl are installed");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", ""));
    (status.to_owned(), body.to_owned())
}

#[test]
#[ignore = "needs root: runs curl and the CLI as uid 65534 (setpriv); .ci/run runs it"]
fn another_uid_is_forbidden_and_an_allowed_one_is_served() {
    require_root(
        "another_uid_is_forbidden_and_an_allowed_one_is_served",
        "run curl as uid 65534 against the admin port",
    );
    let server = Server::start();
    let (status, body) = curl_as_nobody(&server, "POST", "/key");
    assert_eq!(status, "403", "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["error"], "forbidden");
    let message = "uid 65534 may not use the admin port: run the command as root, or add the uid \
                   to admin.allowed_uids";
    assert_eq!(json["message"], message);
    assert_eq!(server.admin("GET", "/key").1["state"], "none");
    assert!(server.wait_for_log("uid 65534 not allowed").contains("refused port=admin"));
    // The CLI shows the same answer: the refusal comes before the request is read, and the
    // server must not reset the connection under it.
    for _ in 0..5 {
        let out = cli_as_nobody(&server.cli_config(), &["key", "generate"]);
        assert_eq!(out.status.code(), Some(4));
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            format!("aims-api: the admin port refused (403 forbidden): {message}\n")
        );
    }
    assert_eq!(server.admin("GET", "/key").1["state"], "none");

    let allowed = Server::start_with(&Options {
        admin: "allowed_uids: [0, 65534],".into(),
        ..Options::default()
    });
    let (status, body) = curl_as_nobody(&allowed, "GET", "/key");
    assert_eq!(status, "200", "{body}");
}

/// Refused clients that connect and send nothing cost the admin workers nothing while their
/// connections close: root's request behind twelve of them, with one admin worker, waits only
/// for their uid lookups (on the acceptor, one sock_diag query each). Were each held for the
/// 250 ms a closing connection may wait, root would wait at least 3 s; the bound is 2 s.
#[test]
#[ignore = "needs root: connects as uid 65534 (setpriv); .ci/run runs it"]
fn silent_refused_clients_do_not_hold_the_admin_workers() {
    require_root(
        "silent_refused_clients_do_not_hold_the_admin_workers",
        "connect as uid 65534 to the admin port",
    );
    let server = Server::start_with(&Options { admin: "workers: 1,".into(), ..Options::default() });
    let port = server.admin.port();
    let script = format!(
        "for i in $(seq 12); do exec {{fd}}<>/dev/tcp/127.0.0.1/{port} || exit 1; done; \
         echo ready; sleep 5"
    );
    let mut flood = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "bash", "-c", &script])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("setpriv and bash are installed");
    let mut ready = String::new();
    let stdout = flood.stdout.take().unwrap();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut ready).unwrap();
    assert_eq!(ready, "ready\n");
    let started = std::time::Instant::now();
    let (status, _) = server.admin("GET", "/health");
    let took = started.elapsed();
    let _ = flood.kill();
    let _ = flood.wait();
    assert_eq!(status, 200);
    assert!(took < std::time::Duration::from_secs(2), "root waited {took:?} behind the flood");
}

#[test]
fn keep_alive_and_head_on_the_admin_port() {
    let server = Server::start();
    let raw = raw_exchange(
        server.admin,
        b"HEAD /health HTTP/1.1\r\nHost: localhost\r\n\r\nGET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    let (head, used) = Response::parse_prefix(&raw, true).unwrap();
    assert_eq!((head.status, head.header("content-length")), (200, Some("40")));
    let get = Response::parse(&raw[used..]).unwrap();
    assert_eq!(get.body, br#"{"status":"ok","uid_lookup":"sock_diag"}"#);
}
