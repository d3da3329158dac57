//! Running under systemd: readiness and watchdog notifications, socket activation, reloads on
//! SIGHUP and `POST /reload`, and a graceful SIGTERM.

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::process::Signal;
use serde_json::json;

use crate::util::{
    ACTIVATION_CODE, Options, Response, Server, no_method, read_response, tls_client_trusting,
};

/// A notify socket like systemd's, collecting what the server sends.
struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl NotifySocket {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        Self { socket, path, _dir: dir }
    }

    fn env(&self) -> (String, String) {
        ("NOTIFY_SOCKET".into(), self.path.display().to_string())
    }

    /// Waits for a message containing `needle`; returns it.
    fn expect(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            let mut buf = [0u8; 4096];
            if let Ok(n) = self.socket.recv(&mut buf) {
                let message = String::from_utf8_lossy(&buf[..n]).into_owned();
                if message.contains(needle) {
                    return message;
                }
                seen.push(message);
            }
        }
        panic!("no notification with {needle:?}; got {seen:?}");
    }
}

#[test]
fn a_key_expiring_within_14_days_is_announced_at_start_in_the_log_and_the_status() {
    let server = Server::start();
    let (status, body) = server.admin_with("POST", "/key", r#"{"expires_in_secs": 259200}"#);
    assert_eq!(status, 201, "{body}");
    let fingerprint = body["fingerprint"].as_str().unwrap().to_owned();
    let expires_at = body["expires_at"].as_str().unwrap().to_owned();
    let (dir, config) = server.stop();
    let notify = NotifySocket::new();
    let options = Options { env: vec![notify.env()], ..Options::default() };
    let server = Server::start_in_with(dir, config, &options).unwrap();
    let ready = notify.expect("READY=1");
    assert_eq!(
        ready,
        format!("READY=1\nSTATUS=key active ({fingerprint}, generation 1, EXPIRES in 2 days)\n")
    );
    let log = server.wait_for_log("expires at");
    let line = log.lines().find(|l| l.contains("expires at")).unwrap();
    assert!(line.contains(" WARN "), "{line}");
    assert!(
        line.ends_with(&format!(
            "the API key {fingerprint} expires at {expires_at} (in 2 days): replace it before \
             then (aims-api key replace --grace 1h), or every client is refused"
        )),
        "{line}"
    );
}

#[test]
fn readiness_status_and_stopping_reach_the_notify_socket() {
    let notify = NotifySocket::new();
    let mut server = Server::start_with(&Options { env: vec![notify.env()], ..Options::default() });
    let ready = notify.expect("READY=1");
    assert_eq!(ready, "READY=1\nSTATUS=key none\n");
    // READY=1 comes only once both ports listen.
    assert_eq!(server.admin("GET", "/health").0, 200);
    let key = server.generate_key();
    let status = notify.expect("STATUS=key active");
    let fingerprint = format!("aims_...{}", &key[key.len() - 4..]);
    assert_eq!(status, format!("STATUS=key active ({fingerprint}, generation 1)\n"));
    server.signal(Signal::TERM);
    notify.expect("STOPPING=1");
    assert_eq!(server.wait_exit(Duration::from_secs(10)).map(|s| s.code()), Some(Some(0)));
}

#[test]
fn the_watchdog_is_pinged_while_workers_turn() {
    let notify = NotifySocket::new();
    let env = vec![notify.env(), ("WATCHDOG_USEC".into(), "400000".into())];
    let server = Server::start_with(&Options { env, ..Options::default() });
    notify.expect("READY=1");
    notify.expect("WATCHDOG=1");
    notify.expect("WATCHDOG=1");
    assert!(server.log().contains("systemd watchdog every"));
}

/// Runs the server with a listening socket on fd 3 and LISTEN_FDS/LISTEN_PID set, as systemd
/// does for `aims-api.socket` (python3 makes the socket and execs the server in place).
const SOCKET_ACTIVATE: &str = r#"
import os, socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.bind(("127.0.0.1", 0))
s.listen(128)
if s.fileno() != 3:
    os.dup2(s.fileno(), 3)
os.set_inheritable(3, True)
os.environ.update(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()), LISTEN_FDNAMES="api")
os.execv(sys.argv[1], sys.argv[1:])
"#;

#[test]
#[ignore = "needs python3 (it passes the socket as systemd would), which .ci/run installs"]
fn a_socket_passed_by_systemd_is_used() {
    let wrapper = vec!["python3".to_owned(), "-c".to_owned(), SOCKET_ACTIVATE.to_owned()];
    // api.listen names a port that is never bound: the inherited socket is used instead.
    let options = Options { wrapper, api: String::new(), ..Options::default() };
    let server = Server::start_with(&options);
    assert!(server.log().contains("using the socket passed by systemd"), "{}", server.log());
    let key = server.generate_key();
    let response = server.get_with_key("/ArchitectureDashboardAPI/rest/V1/nothing", &key);
    assert_eq!(response.status, 404, "served over the inherited socket");
}

fn write_cert(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    let (cert_path, key_path) = (dir.join(format!("{name}.pem")), dir.join(format!("{name}.key")));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (cert_path, key_path)
}

fn peer_cert(stream: &crate::util::TlsStream) -> Vec<u8> {
    stream.conn.peer_certificates().unwrap()[0].as_ref().to_vec()
}

fn der_of(pem: &Path) -> Vec<u8> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    CertificateDer::from_pem_file(pem).unwrap().as_ref().to_vec()
}

fn ask(stream: &mut crate::util::TlsStream, key: &str) -> Response {
    let request = format!(
        "GET /x HTTP/1.1\r\nHost: localhost\r\nx-api-key: {key}\r\nx-activation-code: {ACTIVATION_CODE}\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).unwrap();
    read_response(stream).expect("an answer")
}

#[test]
fn sighup_and_post_reload_rotate_the_certificate_without_dropping_connections() {
    let files = tempfile::tempdir().unwrap();
    let (live_cert, live_key) = (files.path().join("live.pem"), files.path().join("live.key"));
    let (a_cert, a_key) = write_cert(files.path(), "a");
    let (b_cert, b_key) = write_cert(files.path(), "b");
    std::fs::copy(&a_cert, &live_cert).unwrap();
    std::fs::copy(&a_key, &live_key).unwrap();
    let api = format!("tls_cert: Some({:?}), tls_key: Some({:?}),", live_cert, live_key);
    let server = Server::start_with(&Options { api, ..Options::default() });
    // A fresh client configuration for each connection: a shared one would resume the first
    // session (tickets survive a reload), and a resumed session shows no new certificate.
    let trust = || tls_client_trusting(&[a_cert.clone(), b_cert.clone()]);
    let key = server.generate_key();

    let mut old = server.connect_with(trust());
    assert_eq!(ask(&mut old, &key).status, 404);
    assert_eq!(peer_cert(&old), der_of(&a_cert));

    std::fs::copy(&b_cert, &live_cert).unwrap();
    std::fs::copy(&b_key, &live_key).unwrap();
    server.signal(Signal::HUP);
    server.wait_for_log("reload (SIGHUP)");
    let mut new = server.connect_with(trust());
    assert_eq!(ask(&mut new, &key).status, 404);
    assert_eq!(peer_cert(&new), der_of(&b_cert), "a new client sees the new certificate");
    assert_eq!(ask(&mut old, &key).status, 404, "the old connection keeps working");
    assert_eq!(peer_cert(&old), der_of(&a_cert));

    // A broken certificate is refused and the one in service stays.
    std::fs::write(
        &live_cert,
        "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    server.signal(Signal::HUP);
    let log = server.wait_for_log("the certificate in service stays");
    assert!(log.contains("live.pem"), "the error names the file:\n{log}");
    let mut after = server.connect_with(trust());
    assert_eq!(ask(&mut after, &key).status, 404);
    assert_eq!(peer_cert(&after), der_of(&b_cert));

    let (status, body) = server.admin("POST", "/reload");
    assert_eq!((status, body["error"].as_str()), (422, Some("reload_refused")), "{body}");
    std::fs::copy(&a_cert, &live_cert).unwrap();
    std::fs::copy(&a_key, &live_key).unwrap();
    let (status, body) = server.admin("POST", "/reload");
    assert_eq!((status, body["changed"].as_bool()), (200, Some(true)), "{body}");
    let mut last = server.connect_with(trust());
    assert_eq!(ask(&mut last, &key).status, 404);
    assert_eq!(peer_cert(&last), der_of(&a_cert));
}

#[test]
fn sigterm_finishes_the_request_in_flight_then_exits_0() {
    let mut server = Server::start();
    let key = server.generate_key();
    let mut busy = server.connect();
    assert_eq!(ask(&mut busy, &key).status, 404);
    let mut idle = server.connect();
    assert_eq!(ask(&mut idle, &key).status, 404);
    // Half a request is in flight when the signal arrives.
    let request = format!(
        "GET /in-flight HTTP/1.1\r\nHost: localhost\r\nx-api-key: {key}\r\nx-activation-code: {ACTIVATION_CODE}\r\n\r\n"
    );
    let (first, rest) = request.split_at(20);
    busy.write_all(first.as_bytes()).unwrap();
    busy.flush().unwrap();
    // The server must have read that half before the signal, or it would rightly close the
    // connection as idle; nothing outside the server shows when it has, so this one wait is
    // a fixed time, far above the microseconds a loopback read takes.
    std::thread::sleep(Duration::from_millis(100));
    server.signal(Signal::TERM);
    server.wait_for_log("shutting down");
    // The idle connection is closed (read_response blocks until it is, 10 s at most): the
    // server is draining when the rest of the request in flight arrives.
    assert!(closed_by_server(&mut idle), "the idle connection is closed");
    busy.write_all(rest.as_bytes()).unwrap();
    let answer = read_response(&mut busy).expect("the request in flight is answered");
    assert_eq!((answer.status, answer.exception()), (404, no_method("/in-flight")));
    assert_eq!(answer.header("connection"), Some("close"));
    // The port no longer accepts.
    assert_eq!(server.wait_exit(Duration::from_secs(10)).map(|s| s.code()), Some(Some(0)));
    let refused = std::net::TcpStream::connect(server.api).map(|_| ());
    assert_eq!(refused.map_err(|e| e.kind()), Err(std::io::ErrorKind::ConnectionRefused));
    assert!(server.log().contains("stopped"));
}

/// Whether the server closes `stream` (EOF, a reset, or TLS cut short) before its read
/// timeout, rather than leaving it open.
fn closed_by_server(stream: &mut crate::util::TlsStream) -> bool {
    match std::io::Read::read(stream, &mut [0u8; 1]) {
        Ok(n) => n == 0,
        Err(e) => {
            !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
        }
    }
}

/// Checks the Prometheus text exposition format (0.0.4) line by line and returns the samples
/// as (series, value). Fails on anything a Prometheus scraper would refuse.
fn parse_prometheus(text: &str) -> Vec<(String, f64)> {
    let mut typed = std::collections::HashSet::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            assert!(typed.insert(name.to_owned()), "family typed twice: {line}");
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value: {line}"));
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad name: {line}"
        );
        let family =
            ["_bucket", "_sum", "_count"].iter().fold(name, |n, s| n.strip_suffix(s).unwrap_or(n));
        assert!(typed.contains(name) || typed.contains(family), "sample before its TYPE: {line}");
        let labels = &series[name.len()..];
        if !labels.is_empty() {
            let inner = labels.strip_prefix('{').and_then(|l| l.strip_suffix('}')).unwrap();
            for pair in inner.split(',') {
                let (k, v) = pair.split_once('=').unwrap_or_else(|| panic!("bad label: {line}"));
                assert!(k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "{line}");
                assert!(v.starts_with('"') && v.ends_with('"') && v.len() >= 2, "{line}");
            }
        }
        samples.push((series.to_owned(), value));
    }
    samples
}

fn scrape(server: &Server) -> Vec<(String, f64)> {
    let raw = crate::util::raw_exchange(
        server.admin,
        b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    let response = Response::parse(&raw).unwrap();
    assert_eq!(response.status, 200);
    assert!(response.header("content-type").unwrap().starts_with("text/plain; version=0.0.4"));
    parse_prometheus(std::str::from_utf8(&response.body).unwrap())
}

fn value(samples: &[(String, f64)], series: &str) -> f64 {
    samples.iter().filter(|(s, _)| s == series).map(|(_, v)| *v).sum()
}

/// Sum over every series whose text contains all of `parts`.
fn total(samples: &[(String, f64)], parts: &[&str]) -> f64 {
    samples.iter().filter(|(s, _)| parts.iter().all(|p| s.contains(p))).map(|(_, v)| *v).sum()
}

#[test]
fn metrics_parse_as_prometheus_text_and_move() {
    let server = Server::start();
    let before = scrape(&server);
    assert_eq!(value(&before, "aims_key_state{state=\"none\"}"), 1.0);
    assert_eq!(value(&before, "aims_key_age_seconds"), 0.0, "0 without a key");
    let generating = Instant::now();
    let key = server.generate_key();
    let level = "/ArchitectureDashboardAPI/rest/V1/TechnicalDebt_Level";
    for _ in 0..3 {
        server.get_with_key(level, &key);
    }
    server.get_with_key(level, "aims_not_a_key");
    server.get(level, &[]);
    crate::util::raw_exchange(server.api, b"GET / HTTP/1.1\r\n\r\n");
    let after = scrape(&server);
    assert_eq!(value(&after, "aims_key_state{state=\"active\"}"), 1.0);
    assert_eq!(value(&after, "aims_key_generation"), 1.0);
    assert_eq!(total(&after, &["aims_requests_total{", "port=\"api\"", "route=\"level\""]), 3.0);
    assert_eq!(value(&after, "aims_refusals_total{reason=\"malformed_key\"}"), 1.0);
    assert_eq!(value(&after, "aims_refusals_total{reason=\"missing_header\"}"), 1.0);
    assert_eq!(value(&after, "aims_refusals_total{reason=\"plain_http\"}"), 1.0);
    assert_eq!(total(&after, &["route=\"refused\"", "status=\"401\""]), 1.0);
    // Five TLS connections, each with a fresh client configuration: five full handshakes.
    assert_eq!(value(&after, "aims_tls_handshakes_total{kind=\"full\"}"), 5.0);
    assert_eq!(value(&after, "aims_request_duration_seconds_count{port=\"api\"}"), 6.0);
    assert_eq!(total(&after, &["port=\"admin\"", "route=\"key\"", "status=\"201\""]), 1.0);
    // Whole seconds since the key was made, which was after `generating`.
    let age = value(&after, "aims_key_age_seconds");
    let most = generating.elapsed().as_secs() as f64;
    assert!(age <= most, "key age {age} s, yet it was made at most {most} s ago");
    // No label carries a path or an address.
    assert!(after.iter().all(|(s, _)| !s.contains("TechnicalDebt") && !s.contains("127.0.0.1")));
}

#[test]
fn a_reload_picks_up_snapshot_files_placed_by_hand_and_keeps_a_date_whose_file_broke() {
    let server = Server::start();
    let key = server.generate_key();
    let level = "/ArchitectureDashboardAPI/rest/V1/TechnicalDebt_Level";
    assert_eq!(server.get_with_key(level, &key).status, 404, "no data yet");
    let folder = server.state_dir().join("snapshots");
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/snapshot-2024-05-14.json");
    std::fs::copy(example, folder.join("2024-05-14.json")).unwrap();
    let (status, body) = server.admin("POST", "/reload");
    assert_eq!(
        (status, &body["snapshots"]),
        (200, &json!({"served": 1, "imported": 1, "refused": 0})),
        "{body}"
    );
    // Taken into the history store, the file is gone from the folder.
    assert_eq!(server.snapshot_files(), Vec::<String>::new());
    let served = server.get_with_key(level, &key);
    assert_eq!(served.status, 200);
    let metrics = scrape(&server);
    assert_eq!(value(&metrics, "aims_snapshots"), 1.0);
    assert!(value(&metrics, "aims_snapshot_newest_analysis_timestamp_seconds") > 1.7e9);
    let store = std::fs::metadata(server.state_dir().join("history.redb")).unwrap().len();
    assert_eq!(value(&metrics, "aims_snapshot_store_bytes"), store as f64);
    let (_, list) = server.admin("GET", "/snapshots");
    let memory = list["total"]["memory_bytes"].as_f64().unwrap();
    assert_eq!(value(&metrics, "aims_snapshot_memory_bytes"), memory);

    // A broken file for the same date: SIGHUP reports it, leaves it, and the date keeps its data.
    std::fs::write(folder.join("2024-05-14.json"), "{ not json").unwrap();
    server.signal(Signal::HUP);
    let log = server.wait_for_log("snapshots served=1 imported=0 refused=1");
    assert!(log.contains("2024-05-14.json: $.?: key must be a string (line 1, column 3); not served, and left as it is"), "{log}");
    assert_eq!(server.get_with_key(level, &key).body, served.body);
    assert_eq!(server.snapshot_files(), ["2024-05-14.json"]);
}

/// A reload reads config.ron (issue 19: it never did, so a broken file showed only at the next
/// restart, which then failed).
#[test]
fn a_reload_refuses_an_invalid_config_loudly_and_applies_what_it_can_of_a_valid_one() {
    let server = Server::start();
    let key = server.generate_key();
    let good = std::fs::read_to_string(&server.config).unwrap();
    std::fs::write(&server.config, good.replace("state_dir:", "stat_dir:")).unwrap();
    let (status, body) = server.admin("POST", "/reload");
    assert_eq!((status, body["error"].as_str()), (422, Some("invalid_config")), "{body}");
    let message = body["message"].as_str().unwrap();
    let at = format!("{}:3:5: Unexpected field named `stat_dir`", server.config.display());
    assert!(message.contains(&at), "{message}");
    assert!(message.contains("the next restart would fail"), "{message}");
    let log = server.wait_for_log("ERROR reload (admin uid:");
    assert!(log.lines().any(|l| l.contains(" ERROR ") && l.contains(&at)), "{log}");
    server.signal(Signal::HUP);
    let log = server.wait_for_log("ERROR reload (SIGHUP) refused");
    assert!(log.contains("the next restart would fail"), "{log}");

    // Valid again, with a smaller head limit, another allowed uid, another level (all live)
    // and another worker count (at the next restart).
    let changed = good
        .replace("workers: 2,", "workers: 3, max_header_bytes: 2048,")
        .replace("log_level: \"debug\"", "log_level: \"info\"")
        .replace(
            "listen: \"127.0.0.1:0\",\n        \n",
            "listen: \"127.0.0.1:0\", allowed_uids: [0, 4242],\n",
        );
    std::fs::write(&server.config, &changed).unwrap();
    let (status, body) = server.admin("POST", "/reload");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["config"]["applied"],
        serde_json::json!(["log_level", "api.max_header_bytes", "admin.allowed_uids"]),
        "{body}\n{changed}"
    );
    assert_eq!(body["config"]["needs_restart"], serde_json::json!(["api.workers"]), "{body}");
    let log = server.wait_for_log("take effect only at the next restart: api.workers");
    assert!(log.contains("WARN"), "{log}");
    // The smaller limit holds from the next sweep of the API workers on (a quarter second).
    let big = "x".repeat(3000);
    let valid = [("x-api-key", key.as_str()), ("x-activation-code", crate::util::ACTIVATION_CODE)];
    crate::util::poll(
        "waiting for the new max_header_bytes",
        Duration::from_secs(10),
        || server.get("/reload/limits", &[valid[0], valid[1], ("x-big", &big)]).status,
        |status| *status == 431,
    );
}
