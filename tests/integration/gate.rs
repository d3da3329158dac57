//! The public port's gate: HTTPS only, both headers, the right key, immediate replace/revoke.

use std::process::Command;

use crate::util::{ACTIVATION_CODE, BASE, Server, no_method, raw_exchange};

#[test]
fn plain_http_gets_400_in_plain_http_and_is_closed() {
    let server = Server::start();
    let raw = raw_exchange(
        server.api,
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\nGET / HTTP/1.1\r\n\r\n",
    );
    let text = String::from_utf8(raw).unwrap();
    assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text}");
    assert!(text.contains("connection: close\r\n"), "{text}");
    // One answer only: the second request was never processed.
    assert_eq!(text.matches("HTTP/1.1").count(), 1, "{text}");
    let body = text.split("\r\n\r\n").nth(1).unwrap();
    let json: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(json["StatusCode"], 400);
    assert_eq!(json["Errors"][0], "this port speaks HTTPS only: send the request with https://");
}

#[test]
fn missing_empty_and_repeated_headers_are_400_naming_the_header() {
    let server = Server::start();
    let key = server.generate_key();
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![], "the x-api-key header is required"),
        (vec![("x-activation-code", ACTIVATION_CODE)], "the x-api-key header is required"),
        (vec![("x-api-key", &key)], "the x-activation-code header is required"),
        (
            vec![("x-api-key", ""), ("x-activation-code", ACTIVATION_CODE)],
            "the x-api-key header is empty",
        ),
        (
            vec![("x-api-key", &key), ("x-activation-code", " ")],
            "the x-activation-code header is empty",
        ),
        (
            vec![("x-api-key", &key), ("X-API-KEY", &key), ("x-activation-code", ACTIVATION_CODE)],
            "the x-api-key header must be sent once",
        ),
        (
            vec![
                ("x-api-key", &key),
                ("x-activation-code", ACTIVATION_CODE),
                ("X-Activation-Code", ACTIVATION_CODE),
            ],
            "the x-activation-code header must be sent once",
        ),
    ];
    for (headers, message) in cases {
        let response = server.get(&format!("{BASE}/TechnicalDebt_Level"), &headers);
        assert_eq!(response.status, 400, "{headers:?}");
        assert_eq!(response.header("content-type"), Some("application/json"));
        assert_eq!(response.exception(), message, "{headers:?}");
    }
}

#[test]
fn every_invalid_credential_is_the_same_401() {
    let server = Server::start();
    let path = format!("{BASE}/TechnicalDebt_Level");
    // A well-formed key from another server, before this one has any key.
    let other_server_key = Server::start().generate_key();
    let none = server.get_with_key(&path, &other_server_key);
    assert_eq!(none.status, 401);
    let key = server.generate_key();
    let mut typo = key.clone().into_bytes();
    typo[10] = if typo[10] == b'a' { b'b' } else { b'a' };
    let typo = String::from_utf8(typo).unwrap();
    let answers = [
        server.get_with_key(&path, &typo),
        server.get_with_key(&path, &other_server_key),
        server.get_with_key(&path, "not-a-key"),
        server.get(&path, &[("x-api-key", &key), ("x-activation-code", "WRONG-CODE")]),
    ];
    for answer in &answers {
        assert_eq!(answer.status, 401);
        assert_eq!(answer.body, none.body, "401 bodies must not differ");
    }
    // The precise reasons are in the log, never the presented values.
    let log = server.wait_for_log("wrong activation code");
    for reason in [
        "no key has been generated",
        "checksum does not match",
        "wrong key",
        "wrong activation code",
    ] {
        assert!(log.contains(reason), "missing {reason:?} in:\n{log}");
    }
    assert!(!log.contains(&typo) && !log.contains(&key) && !log.contains(&other_server_key));
}

#[test]
fn authentication_comes_before_routing() {
    let server = Server::start();
    let key = server.generate_key();
    let unknown = "/no/such/path";
    assert_eq!(server.get(unknown, &[]).status, 400);
    assert_eq!(server.get_with_key(unknown, "aims_wrong").status, 401);
    let found = server.get_with_key(unknown, &key);
    assert_eq!(found.status, 404);
    assert_eq!(found.exception(), no_method(unknown));
}

#[test]
fn replace_and_revoke_take_effect_with_their_response() {
    let server = Server::start();
    let path = format!("{BASE}/TechnicalDebt_LastAnalysisDate");
    let first = server.generate_key();
    // Without data the method answers 404: the key was let through.
    assert_eq!(server.get_with_key(&path, &first).status, 404);

    let (status, replaced) = server.admin("POST", "/key/replace");
    assert_eq!(status, 200, "{replaced}");
    let second = replaced["api_key"].as_str().unwrap().to_owned();
    assert_eq!(server.get_with_key(&path, &first).status, 401, "old key refused after replace");
    assert_eq!(server.get_with_key(&path, &second).status, 404, "new key served");

    let (status, revoked) = server.admin("DELETE", "/key");
    assert_eq!((status, revoked["state"].as_str()), (200, Some("revoked")), "{revoked}");
    assert_eq!(server.get_with_key(&path, &second).status, 401, "revoked key refused");
    assert_eq!(server.get_with_key(&path, &first).status, 401);
    let log = server.wait_for_log("revoked key");
    assert!(log.contains("reason=\"revoked key\""), "{log}");
}

#[test]
fn curl_with_cacert_reaches_the_api() {
    let server = Server::start();
    let key = server.generate_key();
    let cacert = server.state_dir().join("tls/cert.pem");
    let url = format!("https://localhost:{}{BASE}/TechnicalDebt_Level", server.api.port());
    let output = Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(&cacert)
        .args(["-o", "/dev/null", "-w", "%{http_code} %{ssl_verify_result}", &url])
        .args([
            "-H",
            &format!("x-api-key: {key}"),
            "-H",
            &format!("x-activation-code: {ACTIVATION_CODE}"),
        ])
        .output()
        .expect("curl is installed");
    let answer = String::from_utf8_lossy(&output.stdout);
    // The certificate verifies (0) and the key is let through (404: no data yet).
    assert_eq!(answer, "404 0", "{}", String::from_utf8_lossy(&output.stderr));
    let ipv4 = format!("https://127.0.0.1:{}/", server.api.port());
    let status = Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(&cacert)
        .args(["-o", "/dev/null", "-w", "%{http_code}", &ipv4])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&status.stdout),
        "400",
        "SAN 127.0.0.1 verifies and the request is judged"
    );
}

#[test]
fn the_certificate_is_logged_with_its_fingerprint_and_reused() {
    let server = Server::start();
    let log = server.log();
    assert!(log.contains("made a self-signed certificate"), "{log}");
    let fingerprint = log.split("sha256=").nth(1).unwrap()[..95].to_owned();
    let (dir, config) = server.stop();
    let again = Server::start_in(dir, config).unwrap();
    let log = again.log();
    assert!(!log.contains("made a self-signed certificate"), "{log}");
    assert!(log.contains(&fingerprint), "same certificate after restart:\n{log}");
}

/// Issue 19: RFC 9110 §11.6.1 requires a challenge on every 401, and the README promises
/// `Vary` on every API answer, refusals included.
#[test]
fn a_401_says_how_to_authenticate_and_every_answer_says_vary() {
    let server = Server::start();
    let key = server.generate_key();
    let other_key = Server::start().generate_key();
    let vary = Some("accept-encoding");
    let wrong =
        server.get("/x", &[("x-api-key", &other_key), ("x-activation-code", ACTIVATION_CODE)]);
    assert_eq!(wrong.status, 401);
    assert_eq!(wrong.header("www-authenticate"), Some("ApiKey header=\"x-api-key\""));
    assert_eq!(wrong.header("vary"), vary);
    let missing = server.get("/x", &[]);
    assert_eq!((missing.status, missing.header("vary")), (400, vary));
    assert_eq!(missing.header("www-authenticate"), None, "a challenge is for 401s");
    let valid = server.get_with_key("/x", &key);
    assert_eq!((valid.status, valid.header("vary")), (404, vary));
    // Refused by the HTTP layer, inside TLS, and plain HTTP on the HTTPS port.
    let malformed =
        server.tls_exchange(b"GET / HTTP/1.1\r\n\r\n", std::time::Duration::from_secs(5));
    let malformed = &malformed.responses()[0];
    assert_eq!((malformed.status, malformed.header("vary")), (400, vary));
    let plain = raw_exchange(server.api, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let plain = crate::util::Response::parse(&plain).unwrap();
    assert_eq!((plain.status, plain.header("vary")), (400, vary));
}
