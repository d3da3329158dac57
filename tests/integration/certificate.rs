//! The certificate's life (issue 14): a self-signed certificate valid for 397 days with
//! `digitalSignature` and `serverAuth` only, renewed by `serve` itself 30 days before it
//! expires (at start and while running), an operator's certificate only warned about, the
//! server's cipher order, and the expiry as a metric.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};

use crate::util::{Options, Server, read_response, tls_client_trusting};

const DAY_SECS: u64 = 86_400;

/// What a test reads from a certificate file: validity and names by the server's own reader,
/// the usages as OpenSSL prints them (an independent witness).
struct Parsed {
    der: Vec<u8>,
    not_before: i64,
    not_after: i64,
    names: Vec<String>,
    usages: String,
}

fn parse(pem: &Path) -> Parsed {
    let der = CertificateDer::from_pem_file(pem).unwrap().as_ref().to_vec();
    let leaf = aims_api::x509::Leaf::parse(&der).unwrap();
    let unix = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64;
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-ext", "keyUsage,extendedKeyUsage,basicConstraints", "-in"])
        .arg(pem)
        .output()
        .expect("openssl runs");
    assert!(out.status.success(), "{out:?}");
    Parsed {
        not_before: unix(leaf.not_before),
        not_after: unix(leaf.not_after),
        names: leaf.names,
        usages: String::from_utf8_lossy(&out.stdout).into_owned(),
        der,
    }
}

fn now_secs() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64
}

fn sha256_colons(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    digest.as_ref().iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

/// The fingerprint of the certificate the port presents, as OpenSSL sees it (without verifying
/// it: an expired certificate is still presented).
fn served_sha256(addr: std::net::SocketAddr) -> String {
    let script = format!(
        "openssl s_client -connect {addr} -servername localhost </dev/null 2>/dev/null \
         | openssl x509 -noout -fingerprint -sha256"
    );
    let out = Command::new("sh").args(["-c", &script]).output().expect("openssl runs");
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim().rsplit('=').next().unwrap_or("").to_owned()
}

fn peer_der(stream: &crate::util::TlsStream) -> Vec<u8> {
    stream.conn.peer_certificates().unwrap()[0].as_ref().to_vec()
}

fn ask(stream: &mut crate::util::TlsStream, key: &str) -> u16 {
    let request = format!(
        "GET /nothing HTTP/1.1\r\nHost: localhost\r\nx-api-key: {key}\r\n\
         x-activation-code: {}\r\n\r\n",
        crate::util::ACTIVATION_CODE
    );
    stream.write_all(request.as_bytes()).unwrap();
    read_response(stream).expect("an answer").status
}

#[test]
fn a_fresh_self_signed_certificate_lives_397_days_for_server_auth_only() {
    let server = Server::start();
    let cert = server.state_dir().join("tls/cert.pem");
    let parsed = parse(&cert);
    let now = now_secs();
    // notBefore an hour back (clock skew), notAfter 397 days after it: the hour back counts
    // (issue 19: it used to be 397 days and an hour). A minute of slack for the time between
    // the server making it and this test reading it.
    assert!((parsed.not_before - (now - 3600)).abs() < 60, "notBefore {}", parsed.not_before);
    assert_eq!(parsed.not_after - parsed.not_before, 397 * DAY_SECS as i64, "397 days in all");
    assert_eq!(
        parsed.usages,
        "X509v3 Key Usage: critical\n    Digital Signature\n\
         X509v3 Extended Key Usage: \n    TLS Web Server Authentication\n",
        "digitalSignature and serverAuth only"
    );
    assert_eq!(parsed.names, ["localhost", "127.0.0.1", "::1"]);

    // curl (OpenSSL) accepts it as pinned with --cacert, as the README shows.
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(&cert)
        .arg(format!("https://localhost:{}/x", server.api.port()))
        .output()
        .expect("curl runs");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "400", "{out:?}");

    // The metric names the same notAfter, and the build.
    let metrics = crate::util::raw_exchange(
        server.admin,
        b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    );
    let text = String::from_utf8_lossy(&metrics);
    let expiry = format!("\naims_tls_certificate_expiry_timestamp_seconds {}\n", parsed.not_after);
    assert!(text.contains(&expiry), "{expiry} in\n{text}");
    let build = format!("\naims_build_info{{version=\"{}\"}} 1\n", env!("CARGO_PKG_VERSION"));
    assert!(text.contains(&build), "{build} in\n{text}");
}

#[test]
fn a_nearly_expired_self_signed_certificate_is_renewed_at_start() {
    let validity = (29 * DAY_SECS).to_string();
    let env = vec![("AIMS_API_TEST_CERT_VALIDITY_SECS".to_owned(), validity)];
    let first = Server::start_with(&Options { env, ..Options::default() });
    let cert = first.state_dir().join("tls/cert.pem");
    let old = parse(&cert);
    assert!(old.not_after - now_secs() < 30 * DAY_SECS as i64);
    assert!(!first.log().contains("renewed"), "a fresh certificate is not renewed");
    let (dir, config) = first.stop();

    let second = Server::start_in(dir, config).unwrap();
    let new = parse(&cert);
    assert_ne!(new.der, old.der, "a new certificate");
    assert_eq!(new.not_after - new.not_before, 397 * DAY_SECS as i64);
    assert!((new.not_after - (now_secs() - 3600 + 397 * DAY_SECS as i64)).abs() < 60);
    let log = second.wait_for_log("renewed the self-signed certificate");
    let line = log.lines().find(|l| l.contains("renewed the self-signed")).expect(&log);
    assert!(line.contains("in less than 30 days"), "{line}");
    assert!(line.contains(&format!("new sha256={}", sha256_colons(&new.der))), "{line}");
    let mut stream = second.connect();
    assert_eq!(ask(&mut stream, "aims_x"), 401);
    assert_eq!(peer_der(&stream), new.der, "the new certificate is in service");
}

#[test]
fn a_self_signed_certificate_is_renewed_while_running_and_open_connections_keep_working() {
    // Valid for 30 days and 3 seconds, checked every second: due three seconds after start.
    let env = vec![
        ("AIMS_API_TEST_CERT_VALIDITY_SECS".to_owned(), (30 * DAY_SECS + 3).to_string()),
        ("AIMS_API_TEST_CERT_CHECK_SECS".to_owned(), "1".to_owned()),
    ];
    let server = Server::start_with(&Options { env, ..Options::default() });
    let key = server.generate_key();
    let cert = server.state_dir().join("tls/cert.pem");
    let old = parse(&cert);
    let mut open = server.connect();
    assert_eq!(ask(&mut open, &key), 404);
    assert_eq!(peer_der(&open), old.der);

    let deadline = Instant::now() + Duration::from_secs(20);
    let new = loop {
        let now = parse(&cert);
        if now.der != old.der {
            break now;
        }
        assert!(Instant::now() < deadline, "not renewed within 20 s:\n{}", server.log());
        std::thread::sleep(Duration::from_millis(100));
    };
    let log = server.wait_for_log(&format!("new sha256={}", sha256_colons(&new.der)));
    assert!(log.contains(&format!("new sha256={}", sha256_colons(&new.der))), "{log}");
    // A new client trusting only the new certificate is served with it (the file may have
    // moved on again by then: trust whatever is on disk at each attempt).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let on_disk = parse(&cert).der;
        let trust = tls_client_trusting(std::slice::from_ref(&cert));
        let mut fresh = server.connect_with(trust);
        if fresh.conn.complete_io(&mut fresh.sock).is_ok() && peer_der(&fresh) == on_disk {
            assert_ne!(on_disk, old.der);
            assert_eq!(ask(&mut fresh, &key), 404);
            break;
        }
        assert!(Instant::now() < deadline, "no handshake with the new certificate");
    }
    assert_eq!(ask(&mut open, &key), 404, "the connection opened before keeps working");
    assert_eq!(peer_der(&open), old.der);
}

fn operator_cert(dir: &Path, valid_for: Duration, expired: bool) -> (std::path::PathBuf, Vec<u8>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    let now = SystemTime::now();
    let (from, until) = if expired {
        (now - valid_for - Duration::from_secs(DAY_SECS), now - valid_for)
    } else {
        (now - Duration::from_secs(DAY_SECS), now + valid_for)
    };
    params.not_before = time::OffsetDateTime::from(from);
    params.not_after = time::OffsetDateTime::from(until);
    let cert = params.self_signed(&key).unwrap();
    let (cert_path, key_path) = (dir.join("op.pem"), dir.join("op.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (cert_path, cert.der().to_vec())
}

#[test]
fn an_operator_certificate_is_warned_about_and_never_replaced() {
    for (expired, needle) in [(false, "in 9 days: install a new one"), (true, "expired at")] {
        let files = tempfile::tempdir().unwrap();
        let (cert, der) =
            operator_cert(files.path(), Duration::from_secs(9 * DAY_SECS + 3600), expired);
        let api = format!(
            "tls_cert: Some({:?}), tls_key: Some({:?}),",
            cert,
            files.path().join("op.key")
        );
        let env = vec![("AIMS_API_TEST_CERT_CHECK_SECS".to_owned(), "1".to_owned())];
        let server = Server::start_with(&Options { api, env, ..Options::default() });
        // Once at start, then again at the next check while running.
        let deadline = Instant::now() + Duration::from_secs(10);
        while server.log().matches(needle).count() < 2 {
            assert!(Instant::now() < deadline, "{needle} not logged twice:\n{}", server.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(CertificateDer::from_pem_file(&cert).unwrap().as_ref(), &der[..]);
        assert_eq!(
            served_sha256(server.api),
            sha256_colons(&der),
            "the operator's certificate stays in service"
        );
        assert!(!server.log().contains("renewed"), "{}", server.log());
    }
}

#[test]
fn the_server_chooses_the_cipher_suite_by_its_own_order() {
    let server = Server::start();
    let mut provider = rustls::crypto::ring::default_provider();
    // The client prefers ChaCha20; the server's order puts AES-GCM first.
    provider.cipher_suites = vec![
        rustls::crypto::ring::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256,
    ];
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(server.state_dir().join("tls/cert.pem")).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let socket = std::net::TcpStream::connect(server.api).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut stream = rustls::StreamOwned::new(conn, socket);
    stream.conn.complete_io(&mut stream.sock).unwrap();
    let suite = stream.conn.negotiated_cipher_suite().unwrap().suite();
    assert_eq!(suite, rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
}

/// In self-signed mode, `<state_dir>/tls/` holds what the server made; a certificate someone
/// put there by hand is theirs (issue 19: a reload used to replace one it did not like with a
/// new self-signed pair, with only a WARN).
#[test]
fn a_certificate_put_in_the_self_signed_folder_is_never_replaced_and_refused_if_unusable() {
    let server = Server::start();
    let (cert, key) =
        (server.state_dir().join("tls/cert.pem"), server.state_dir().join("tls/key.pem"));
    let ours = served_sha256(server.api);
    let placed = tempfile::tempdir().unwrap();
    let place = |valid_for: Duration, key_of: Option<&Path>| {
        let (pem, der) = operator_cert(placed.path(), valid_for, false);
        std::fs::copy(&pem, &cert).unwrap();
        let key_file = placed.path().join("op.key");
        std::fs::copy(key_of.unwrap_or(&key_file), &key).unwrap();
        (std::fs::read(&cert).unwrap(), std::fs::read(&key).unwrap(), der)
    };
    // Short-lived (9 days), and then long-lived but beside a key that is not its own.
    let spare = tempfile::tempdir().unwrap();
    let (_, _) = operator_cert(spare.path(), Duration::from_secs(DAY_SECS), false);
    let other_key = spare.path().join("op.key");
    for (valid_for, key_of, why) in [
        (Duration::from_secs(9 * DAY_SECS), None, "short-lived"),
        (Duration::from_secs(90 * DAY_SECS), Some(other_key.as_path()), "cannot be used together"),
    ] {
        let (cert_bytes, key_bytes, _) = place(valid_for, key_of);
        let (status, body) = server.admin("POST", "/reload");
        assert_eq!((status, body["error"].as_str()), (422, Some("reload_refused")), "{body}");
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains(why) && message.contains("was not made by this server"),
            "{message}"
        );
        assert_eq!(served_sha256(server.api), ours, "the certificate in service stays");
        assert_eq!(std::fs::read(&cert).unwrap(), cert_bytes, "never replaced");
        assert_eq!(std::fs::read(&key).unwrap(), key_bytes, "never replaced");
        let log = server.wait_for_log("was not made by this server");
        assert!(log.contains("ERROR reload (admin uid:"), "{log}");
    }
    // A usable one is served as it is, and still never replaced.
    let (cert_bytes, _, der) = place(Duration::from_secs(90 * DAY_SECS), None);
    let (status, body) = server.admin("POST", "/reload");
    assert_eq!((status, body["changed"].as_bool()), (200, Some(true)), "{body}");
    assert_eq!(served_sha256(server.api), sha256_colons(&der));
    assert_eq!(std::fs::read(&cert).unwrap(), cert_bytes);
    assert!(!server.log().contains("renewed") && !server.log().contains("making a new"));
}
