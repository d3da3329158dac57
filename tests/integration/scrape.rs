//! The scrape port (issue 21): `GET /metrics` for a Prometheus on another host, off by default,
//! over TLS with the API's certificate or plain HTTP, behind an optional bearer token read from
//! a file, throttled and capped like the other ports, and nothing else reachable. The last test
//! has a real Prometheus scrape it (ignored: it needs Debian's `prometheus`, which `.ci/run`
//! installs).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};

use crate::util::{BIN, Options, Response, Server, config_text, poll, read_response};

const TOKEN: &str = "s3cret-scrape-token";

/// A server with a scrape port on a free loopback port, `metrics` being the section's fields.
fn start(metrics: &str, api: &str) -> (Server, SocketAddr) {
    let server = Server::start_with(&Options {
        top: format!("metrics: (listen: Some(\"127.0.0.1:0\"), {metrics}),"),
        api: api.into(),
        ..Options::default()
    });
    let addr = scrape_addr(&server);
    (server, addr)
}

/// Where the scrape port listens, from the server's log line.
fn scrape_addr(server: &Server) -> SocketAddr {
    let log = server.wait_for_log("metrics listening on ");
    let line = log.lines().find(|l| l.contains("metrics listening on ")).unwrap();
    let url = line.split("metrics listening on ").nth(1).unwrap();
    let host = url.split("://").nth(1).unwrap().split('/').next().unwrap();
    host.parse().unwrap()
}

/// The token file, mode 0600, in the server's folder.
fn token_file(dir: &Path, token: &str) -> PathBuf {
    let path = dir.join("metrics-token");
    std::fs::write(&path, format!("{token}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// A server whose scrape port speaks TLS and wants `TOKEN`.
fn start_with_token(api: &str) -> (Server, SocketAddr, tempfile::TempDir) {
    let files = tempfile::tempdir().unwrap();
    let token = token_file(files.path(), TOKEN);
    let (server, addr) = start(&format!("tls: true, bearer_token_file: Some({token:?})"), api);
    (server, addr, files)
}

/// One request on a new connection to the scrape port, over TLS trusting the server's
/// certificate when `tls`.
fn request(server: &Server, addr: SocketAddr, tls: bool, head: &str) -> Response {
    let socket = TcpStream::connect(addr).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let bytes = format!("{head}\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    if tls {
        let name = ServerName::try_from("localhost").unwrap();
        let conn = ClientConnection::new(server.tls_config(), name).unwrap();
        let mut stream = StreamOwned::new(conn, socket);
        stream.write_all(bytes.as_bytes()).unwrap();
        read_response(&mut stream).expect("a whole answer")
    } else {
        let mut socket = socket;
        socket.write_all(bytes.as_bytes()).unwrap();
        read_response(&mut socket).expect("a whole answer")
    }
}

/// A HEAD request over TLS: everything the server sent until it closed.
fn head_request(server: &Server, addr: SocketAddr, head: &str) -> String {
    let socket = TcpStream::connect(addr).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let conn = ClientConnection::new(server.tls_config(), name).unwrap();
    let mut stream = StreamOwned::new(conn, socket);
    let bytes = format!("{head}\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(bytes.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    String::from_utf8_lossy(&raw).into_owned()
}

fn bearer(token: &str) -> String {
    format!("\r\nAuthorization: Bearer {token}")
}

/// The metric names a `/metrics` text declares, in order.
fn declared(text: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(text)
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_scrape_port_is_off_by_default() {
    let server = Server::start();
    server.wait_for_log("api listening on");
    assert!(!server.log().contains("metrics listening"), "{}", server.log());
}

#[test]
fn with_the_token_it_serves_the_admin_ports_metrics_and_nothing_else() {
    let (server, addr, _files) = start_with_token("");
    let auth = bearer(TOKEN);
    let answer = request(&server, addr, true, &format!("GET /metrics HTTP/1.1{auth}"));
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    assert_eq!(answer.header("content-type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    let admin = crate::util::admin_exchange(server.admin, "GET", "/metrics", b"");
    assert_eq!(declared(&answer.body), declared(&admin.body), "the same metrics as the admin port");
    assert!(declared(&admin.body).contains(&"aims_pull_timer_enabled gauge".to_owned()));
    let head = head_request(&server, addr, &format!("HEAD /metrics HTTP/1.1{auth}"));
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("\r\n\r\n"), "{head}");

    // With the token: only /metrics, only GET and HEAD.
    for (line, status) in [
        ("GET /key HTTP/1.1", 404),
        ("GET /health HTTP/1.1", 404),
        ("GET /snapshots HTTP/1.1", 404),
        ("GET /metrics/ HTTP/1.1", 404),
        ("POST /metrics HTTP/1.1", 405),
        ("DELETE /key HTTP/1.1", 404),
    ] {
        let answer = request(&server, addr, true, &format!("{line}{auth}"));
        assert_eq!(answer.status, status, "{line}: {}", String::from_utf8_lossy(&answer.body));
    }
    // Without it, every path is the same 401: nothing says what else might be there.
    for line in ["GET /metrics HTTP/1.1", "GET /key HTTP/1.1", "POST /metrics HTTP/1.1"] {
        let answer = request(&server, addr, true, line);
        assert_eq!(answer.status, 401, "{line}");
        assert_eq!(answer.header("www-authenticate"), Some("Bearer realm=\"aims-api metrics\""));
        assert_eq!(answer.json()["error"], "unauthorized");
    }
    let wrong = request(&server, addr, true, &format!("GET /metrics HTTP/1.1{}", bearer("nope")));
    assert_eq!(wrong.status, 401);
    let log = server.wait_for_log("reason=\"wrong bearer token\"");
    assert!(log.contains("refused port=metrics client=127.0.0.1 status=401"), "{log}");
    assert!(!log.contains(TOKEN), "the token is never logged");
    assert_eq!(server.metric("aims_refusals_total{reason=\"metrics_token\"}"), Some(4.0));
    let served = "aims_requests_total{port=\"metrics\",route=\"metrics\",status=\"200\"}";
    assert_eq!(server.metric(served), Some(2.0));
}

#[test]
fn plain_http_without_a_token_when_so_configured() {
    let (server, addr) = start("", "");
    let answer = request(&server, addr, false, "GET /metrics HTTP/1.1");
    assert_eq!(answer.status, 200);
    assert!(String::from_utf8_lossy(&answer.body).contains("aims_build_info{version="));
    assert_eq!(request(&server, addr, false, "GET /key HTTP/1.1").status, 404);
}

#[test]
fn refused_tokens_are_throttled_like_the_api_ports_refusals() {
    let (server, addr, _files) =
        start_with_token("max_refusals_per_address: 3, refusal_window_secs: 60,");
    for _ in 0..3 {
        assert_eq!(request(&server, addr, true, "GET /metrics HTTP/1.1").status, 401);
    }
    let throttled = request(&server, addr, true, &format!("GET /metrics HTTP/1.1{}", bearer("x")));
    assert_eq!(throttled.status, 429);
    let retry: u64 = throttled.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(throttled.header("connection"), Some("close"));
    // The right token is always served, as on the API port.
    let ok = request(&server, addr, true, &format!("GET /metrics HTTP/1.1{}", bearer(TOKEN)));
    assert_eq!(ok.status, 200);
    assert_eq!(server.metric("aims_refusals_total{reason=\"throttled\"}"), Some(1.0));
}

#[test]
fn a_new_token_in_the_file_takes_effect_at_once() {
    let (server, addr, files) = start_with_token("");
    token_file(files.path(), "rotated-token");
    let old = request(&server, addr, true, &format!("GET /metrics HTTP/1.1{}", bearer(TOKEN)));
    assert_eq!(old.status, 401);
    let new =
        request(&server, addr, true, &format!("GET /metrics HTTP/1.1{}", bearer("rotated-token")));
    assert_eq!(new.status, 200);
    // A file that can no longer be read fails closed, and says so in the log.
    std::fs::remove_file(files.path().join("metrics-token")).unwrap();
    let gone =
        request(&server, addr, true, &format!("GET /metrics HTTP/1.1{}", bearer("rotated-token")));
    assert_eq!(gone.status, 503);
    server.wait_for_log("scrape port: metrics.bearer_token_file");
}

#[test]
fn a_token_file_others_may_read_stops_serve_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(dir.path(), TOKEN);
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let options = Options {
        top: format!(
            "metrics: (listen: Some(\"127.0.0.1:0\"), bearer_token_file: Some({token:?})),"
        ),
        ..Options::default()
    };
    let config = dir.path().join("config.ron");
    std::fs::write(&config, config_text(dir.path(), &options)).unwrap();
    let out = Command::new(BIN).args(["serve", "--config"]).arg(&config).output().unwrap();
    assert_eq!(out.status.code(), Some(8));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "aims-api: metrics.bearer_token_file {}: has mode 0644: others may read it",
            token.display()
        )),
        "{stderr}"
    );
}

/// Reads from `socket` until it closes (true) or 2 s pass (false).
fn closes(socket: &mut TcpStream) -> bool {
    socket.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut byte = [0u8; 64];
    loop {
        match socket.read(&mut byte) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return false,
            Err(_) => return true,
        }
    }
}

#[test]
fn connections_are_capped_per_address_and_the_quietest_makes_room() {
    let (server, addr) = start("max_connections: 4", "");
    // Four silent connections from 127.0.0.1: the address's share.
    let mut silent: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let mut fifth = TcpStream::connect(addr).unwrap();
    assert!(closes(&mut fifth), "a fifth connection from one address is closed at once");
    poll(
        "the refusal counted",
        Duration::from_secs(10),
        || server.metric("aims_refusals_total{reason=\"connection_cap\"}"),
        |n| *n == Some(1.0),
    );
    // From another loopback address, the total cap (4) is reached: the longest quiet
    // connection is closed to make room, and the scraper is served.
    let other = std::net::SocketAddr::new([127, 0, 0, 2].into(), 0);
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&other.into()).unwrap();
    socket.connect(&addr.into()).unwrap();
    let mut scraper: TcpStream = socket.into();
    scraper.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    scraper.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let answer = read_response(&mut scraper).expect("served");
    assert_eq!(answer.status, 200);
    assert!(closes(&mut silent[0]), "the quietest connection made room");
    assert!(!closes(&mut silent[3]), "the others stay");
}

/// A free loopback port (bound, read, released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Prometheus {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Starts Debian's `prometheus` on loopback with `scrape_configs`, scraping every second.
    fn start(scrape_configs: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n{scrape_configs}"),
        )
        .unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus is installed (Debian's prometheus package; .ci/run installs it)");
        Self { child, addr, _dir: dir }
    }

    /// `GET path` on Prometheus' HTTP API, as JSON (curl, which every test machine has).
    fn api(&self, path: &str) -> serde_json::Value {
        let out = Command::new("curl")
            .args(["-s", "--max-time", "5", &format!("http://{}{path}", self.addr)])
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    }

    /// The targets of `job`, as Prometheus sees them.
    fn target(&self, job: &str) -> serde_json::Value {
        let targets = self.api("/api/v1/targets");
        targets["data"]["activeTargets"]
            .as_array()
            .and_then(|all| all.iter().find(|t| t["labels"]["job"] == job).cloned())
            .unwrap_or(serde_json::Value::Null)
    }
}

#[test]
#[ignore = "needs Debian's prometheus (a real Prometheus scrapes the port), which .ci/run installs"]
fn a_real_prometheus_scrapes_the_port_over_tls_with_its_credentials_file() {
    let (server, addr, files) = start_with_token("");
    server.generate_key();
    let cert = server.state_dir().join("tls/cert.pem");
    let token = files.path().join("metrics-token");
    let wrong = files.path().join("wrong-token");
    std::fs::write(&wrong, "not-the-token\n").unwrap();
    let job = |name: &str, credentials: &Path| {
        format!(
            "  - job_name: {name}\n    scheme: https\n    tls_config:\n      ca_file: {}\n    \
             authorization:\n      credentials_file: {}\n    static_configs:\n      - targets: \
             ['{addr}']\n",
            cert.display(),
            credentials.display()
        )
    };
    let prometheus =
        Prometheus::start(&format!("{}{}", job("aims", &token), job("intruder", &wrong)));
    let up = poll(
        "Prometheus scraping the port",
        Duration::from_secs(60),
        || prometheus.target("aims"),
        |t| t["health"] == "up",
    );
    assert_eq!(up["scrapeUrl"], format!("https://{addr}/metrics"), "{up}");
    let value = poll(
        "aims_key_state in Prometheus",
        Duration::from_secs(30),
        || prometheus.api("/api/v1/query?query=aims_key_state%7Bstate%3D%22active%22%7D"),
        |v| v["data"]["result"].as_array().is_some_and(|r| !r.is_empty()),
    );
    assert_eq!(value["data"]["result"][0]["value"][1], "1", "{value}");
    let intruder = poll(
        "the wrong token refused",
        Duration::from_secs(60),
        || prometheus.target("intruder"),
        |t| t["health"] == "down",
    );
    assert!(
        intruder["lastError"].as_str().is_some_and(|e| e.contains("401 Unauthorized")),
        "{intruder}"
    );
    let served = "aims_requests_total{port=\"metrics\",route=\"metrics\",status=\"200\"}";
    assert!(server.metric(served).is_some_and(|n| n >= 1.0));
}

/// The shipped alert rules (`packaging/prometheus/`) pass `promtool check rules` and their unit
/// tests, `promtool test rules`: each rule fires for the series it is about, at the time it
/// should, and not for the others.
#[test]
#[ignore = "needs promtool (Debian's prometheus package), which .ci/run installs"]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/prometheus");
    for args in
        [["check", "rules", "aims-api-rules.yml"], ["test", "rules", "aims-api-rules.test.yml"]]
    {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("promtool is installed (Debian's prometheus package; .ci/run installs it)");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "promtool {args:?}:\n{text}");
        assert!(text.contains("SUCCESS"), "{text}");
    }
}
