//! What every integration test needs: a real `aims-api serve` on free loopback ports in a
//! temporary folder, and real clients for it (rustls over TCP, raw sockets, curl, the CLI).
//!
//! Servers listen on port 0 and the test learns the ports from the server's own "listening"
//! log lines, so tests never race each other for a port. Every server is killed on drop.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

pub const ACTIVATION_CODE: &str = "TEST-ACTIVATION-CODE";
pub const BIN: &str = env!("CARGO_BIN_EXE_aims-api");
pub const BASE: &str = "/ArchitectureDashboardAPI/rest/V1";

/// Extra lines for the config's `api: ( … )` and `admin: ( … )` sections and its top level.
#[derive(Default, Clone)]
pub struct Options {
    pub api: String,
    pub admin: String,
    pub top: String,
    /// Extra environment for the server process.
    pub env: Vec<(String, String)>,
    /// A program (and its arguments) that runs the server: it gets the server's path and
    /// arguments after its own, as `setpriv` or `systemd-socket-activate` would.
    pub wrapper: Vec<String>,
}

pub struct Server {
    child: Child,
    pub dir: tempfile::TempDir,
    pub api: SocketAddr,
    pub admin: SocketAddr,
    pub config: PathBuf,
    log: Arc<Mutex<String>>,
}

/// The config text for a server in `dir` (ports 0 unless `options` say otherwise).
pub fn config_text(dir: &Path, options: &Options) -> String {
    format!(
        r#"(
    activation_code: "{ACTIVATION_CODE}",
    state_dir: "{state}",
    log_level: "debug",
    {top}
    api: (
        listen: "127.0.0.1:0",
        workers: 2,
        {api}
    ),
    admin: (
        listen: "127.0.0.1:0",
        {admin}
    ),
)
"#,
        state = dir.join("state").display(),
        top = options.top,
        api = options.api,
        admin = options.admin,
    )
}

impl Server {
    pub fn start() -> Self {
        Self::start_with(&Options::default())
    }

    pub fn start_with(options: &Options) -> Self {
        let dir = tempfile::tempdir().expect("temporary folder");
        let config = dir.path().join("config.ron");
        std::fs::write(&config, config_text(dir.path(), options)).expect("write config");
        Self::launch(dir, config, options)
            .unwrap_or_else(|log| panic!("server did not start:\n{log}"))
    }

    /// Starts `serve` on an existing folder and config; on failure returns what it logged.
    pub fn start_in(dir: tempfile::TempDir, config: PathBuf) -> Result<Self, String> {
        Self::launch(dir, config, &Options::default())
    }

    /// The same, with `options`' environment and wrapper (its config lines are not used: the
    /// config file exists already).
    pub fn start_in_with(
        dir: tempfile::TempDir,
        config: PathBuf,
        options: &Options,
    ) -> Result<Self, String> {
        Self::launch(dir, config, options)
    }

    fn launch(dir: tempfile::TempDir, config: PathBuf, options: &Options) -> Result<Self, String> {
        let mut command = match options.wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(BIN);
                command
            }
            None => Command::new(BIN),
        };
        let program = command.get_program().to_string_lossy().into_owned();
        let mut child = command
            .args(["serve", "--config"])
            .arg(&config)
            // Nothing of the test runner's own service environment leaks in.
            .env_remove("RUST_LOG")
            .env_remove("JOURNAL_STREAM")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .envs(options.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {program} (is it installed?): {e}"));
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = Arc::clone(&log);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                for (prefix, port) in
                    [("api listening on https://", "api"), ("admin listening on http://", "admin")]
                {
                    if let Some(rest) = line.split(prefix).nth(1) {
                        let addr = rest.split_whitespace().next().unwrap_or("").to_owned();
                        let _ = tx.send((port, addr));
                    }
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let (mut api, mut admin) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(20);
        while api.is_none() || admin.is_none() {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(("api", addr)) => api = addr.parse().ok(),
                Ok((_, addr)) => admin = addr.parse().ok(),
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    // The reader ends at the end of stderr: then the log is whole.
                    let deadline = Instant::now() + Duration::from_secs(5);
                    while !reader.is_finished() && Instant::now() < deadline {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    return Err(log.lock().unwrap().clone());
                }
            }
        }
        Ok(Self { child, dir, api: api.unwrap(), admin: admin.unwrap(), config, log })
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Everything the server has logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the log contains `needle` (the server logs asynchronously) and returns it;
    /// fails the test if `needle` has not appeared within 10 s.
    pub fn wait_for_log(&self, needle: &str) -> String {
        poll(
            &format!("waiting for {needle:?} in the log"),
            Duration::from_secs(10),
            || self.log(),
            |log| log.contains(needle),
        )
    }

    /// Kills the server (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM-free stop: kill and reap, returning the folder for a restart.
    pub fn stop(mut self) -> (tempfile::TempDir, PathBuf) {
        self.kill();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        (dir, self.config.clone())
    }

    /// Stops the server as systemd does (SIGTERM), waits for a clean exit, and returns the
    /// folder: its history store is then closed cleanly, as after `systemctl stop`.
    pub fn shut_down(mut self) -> (tempfile::TempDir, PathBuf) {
        self.signal(rustix::process::Signal::TERM);
        let status = self.wait_exit(Duration::from_secs(10));
        assert_eq!(status.and_then(|s| s.code()), Some(0), "a clean exit\n{}", self.log());
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        (dir, self.config.clone())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` to the server.
    pub fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).unwrap();
        rustix::process::kill_process(pid, signal).unwrap();
    }

    /// Waits up to `timeout` for the server to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// A config file for the CLI, naming the admin port this server really listens on.
    pub fn cli_config(&self) -> PathBuf {
        let text = std::fs::read_to_string(&self.config).unwrap();
        let admin_at = text.find("admin: (").expect("config has an admin section");
        let (head, tail) = text.split_at(admin_at);
        let tail = tail.replacen("127.0.0.1:0", &self.admin.to_string(), 1);
        let path = self.dir.path().join("cli.ron");
        std::fs::write(&path, format!("{head}{tail}")).unwrap();
        path
    }

    /// Runs the CLI with `args` against this server's admin port.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN).args(args).arg("--config").arg(self.cli_config()).output().unwrap()
    }

    /// One admin request; returns status and JSON body.
    pub fn admin(&self, method: &str, path: &str) -> (u16, serde_json::Value) {
        self.admin_with(method, path, "")
    }

    /// The files in the inbox folder (`<state>/snapshots/`): empty once every file placed
    /// there is in the history store.
    pub fn snapshot_files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.state_dir().join("snapshots"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// One admin request with a body; returns status and JSON body.
    pub fn admin_with(&self, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
        admin_json(admin_exchange(self.admin, method, path, body.as_bytes()))
    }

    /// Generates a key through the admin port and returns it.
    pub fn generate_key(&self) -> String {
        let (status, body) = self.admin("POST", "/key");
        assert_eq!(status, 201, "{body}");
        body["api_key"].as_str().unwrap().to_owned()
    }

    /// A TLS client that trusts this server's self-signed certificate.
    pub fn tls_config(&self) -> Arc<ClientConfig> {
        tls_client_trusting(&[self.state_dir().join("tls/cert.pem")])
    }

    /// Opens a TLS connection to the API port (handshake done lazily on first I/O).
    pub fn connect(&self) -> TlsStream {
        self.connect_with(self.tls_config())
    }

    pub fn connect_with(&self, config: Arc<ClientConfig>) -> TlsStream {
        let socket = TcpStream::connect(self.api).unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let conn = ClientConnection::new(config, name).unwrap();
        StreamOwned::new(conn, socket)
    }

    /// One API request with `headers` on a fresh TLS connection.
    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        let mut stream = self.connect();
        let mut request =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).unwrap();
        read_response(&mut stream).expect("a whole response")
    }

    /// An authenticated API GET with `key`.
    pub fn get_with_key(&self, path: &str, key: &str) -> Response {
        self.get(path, &[("x-api-key", key), ("x-activation-code", ACTIVATION_CODE)])
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

pub type TlsStream = StreamOwned<ClientConnection, TcpStream>;

/// A TLS client configuration trusting the certificates in these PEM files.
pub fn tls_client_trusting(pems: &[PathBuf]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for pem in pems {
        for cert in CertificateDer::pem_file_iter(pem).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// Parses one whole response from the start of `raw` (HEAD-less: uses Content-Length).
    pub fn parse(raw: &[u8]) -> Option<Self> {
        Self::parse_prefix(raw, false).map(|(r, _)| r)
    }

    /// Parses one response and says how many bytes it took. `head_only`: no body follows.
    pub fn parse_prefix(raw: &[u8], head_only: bool) -> Option<(Self, usize)> {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        let httparse::Status::Complete(head_len) = response.parse(raw).ok()? else { return None };
        let headers: Vec<(String, String)> = response
            .headers
            .iter()
            .map(|h| (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).into_owned()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map_or(0, |(_, v)| v.parse().unwrap());
        let body_len = if head_only { 0 } else { length };
        if raw.len() < head_len + body_len {
            return None;
        }
        let body = raw[head_len..head_len + body_len].to_vec();
        Some((Self { status: response.code?, headers, body }, head_len + body_len))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("body is not JSON ({e}): {}", String::from_utf8_lossy(&self.body))
        })
    }

    /// The first message of an AI Mentor Studio `Exception` body, checking its shape.
    pub fn exception(&self) -> String {
        let json = self.json();
        assert_eq!(json["StatusCode"].as_u64(), Some(u64::from(self.status)), "{json}");
        json["Errors"][0].as_str().unwrap().to_owned()
    }
}

/// Reads one response from a stream (blocking until it is whole or the stream ends).
pub fn read_response(stream: &mut impl Read) -> Option<Response> {
    let mut raw = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(r) = Response::parse(&raw) {
            return Some(r);
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return Response::parse(&raw),
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
        }
    }
}

/// One request with `body` to the admin port at `admin`, on its own connection; its answer.
pub fn admin_exchange(admin: SocketAddr, method: &str, path: &str, body: &[u8]) -> Response {
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    Response::parse(&raw_exchange(admin, &request)).expect("admin answered HTTP")
}

/// An admin answer's status and JSON body (`Null` when the body is not JSON).
fn admin_json(answer: Response) -> (u16, serde_json::Value) {
    let json = serde_json::from_slice(&answer.body).unwrap_or(serde_json::Value::Null);
    (answer.status, json)
}

/// Sends `bytes` on a new plain TCP connection and reads until the server closes (or 10 s).
pub fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut socket = TcpStream::connect(addr).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    socket.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let _ = socket.read_to_end(&mut out);
    out
}

/// Fails the calling test unless the tests run as root, saying what it needs root for. A few
/// properties (another uid refused, a full disk, no core dump) can only be shown as root; a
/// test that cannot show its property fails rather than passing unproven. CI runs as root.
pub fn require_root(test: &str, needs: &str) {
    assert!(
        rustix::process::getuid().is_root(),
        "{test} needs root to {needs}; run the tests as root (CI does)"
    );
}

/// Runs `aims-api args…` as uid/gid 65534 (root only), with `config` copied where that uid can
/// read it, as is the binary: the checkout may be private to root.
pub fn cli_as_nobody(config: &Path, args: &[&str]) -> Output {
    require_root("running aims-api as uid 65534", "switch to uid 65534");
    use std::os::unix::fs::PermissionsExt;
    let public = tempfile::tempdir().unwrap();
    let (bin, public_config) = (public.path().join("aims-api"), public.path().join("config.ron"));
    std::fs::copy(BIN, &bin).unwrap();
    std::fs::copy(config, &public_config).unwrap();
    for (path, mode) in [(public.path(), 0o755), (&bin, 0o755), (&public_config, 0o644)] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&bin)
        .args(args)
        .arg("--config")
        .arg(&public_config)
        .output()
        .expect("setpriv is installed")
}

/// The API's exact 404 message for a path that names no method.
pub fn no_method(path: &str) -> String {
    format!("no API method at {path}; the methods are listed in {BASE}/swagger.json")
}

/// The other base path, as the official client writes it.
pub const CLIENT_BASE: &str = "/AIMentorStudioAPI/rest/v1";

/// The sample snapshot shipped in `examples/`.
pub const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/snapshot-2024-05-14.json");

impl Server {
    /// `GET /snapshots/<date>` on the admin port (the export): status and the body's bytes.
    pub fn export(&self, date: &str) -> (u16, Vec<u8>) {
        let answer = admin_exchange(self.admin, "GET", &format!("/snapshots/{date}"), b"");
        (answer.status, answer.body)
    }

    /// `snapshot verify --json`'s exit code, and the dates of the history store, oldest first,
    /// asserting that every one is sound and that no piece is left that no date names (a
    /// removal takes its pieces with it). Files waiting in the folder are the caller's to judge.
    pub fn verified_history(&self) -> (Option<i32>, Vec<String>) {
        let out = self.cli(&["snapshot", "verify", "--json"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let report: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(report["history"]["status"], "read", "{text}");
        assert_eq!(report["history"]["unnamed_pieces"], 0, "{text}");
        let dates = report["history"]["dates"].as_array().unwrap();
        assert!(dates.iter().all(|d| d["status"] == "ok"), "{text}");
        let dates = dates.iter().map(|d| d["date"].as_str().unwrap().to_owned()).collect();
        (out.status.code(), dates)
    }

    /// `PUT /snapshots/<date>` with `body` on the admin port; returns status and JSON body.
    pub fn put_snapshot(&self, date: &str, body: &[u8]) -> (u16, serde_json::Value) {
        admin_json(admin_exchange(self.admin, "PUT", &format!("/snapshots/{date}"), body))
    }

    /// Imports `snapshot` for a `date` that has none yet, asserting it was created.
    pub fn import(&self, date: &str, snapshot: &serde_json::Value) {
        let (status, body) = self.put_snapshot(date, snapshot.to_string().as_bytes());
        assert_eq!((status, body["result"].as_str()), (201, Some("created")), "{body}");
    }
}

/// Names with repeats and mixed case, so that ordering by name, then GUID, is exercised.
const NAMES: [&str; 9] = [
    "Sales Portal",
    "billing",
    "Billing",
    "HR Self-Service",
    "claims",
    "Zeta",
    "alpha",
    "Alpha",
    "CRM",
];

/// A valid snapshot of `apps` applications (a few modules and findings each, three teams),
/// deterministic for a given `apps` and `seed`.
pub fn snapshot_json(apps: usize, seed: u64, analyzed_on: &str) -> serde_json::Value {
    use serde_json::json;
    let levels: Vec<_> = ["Low", "Medium", "High"]
        .iter()
        .enumerate()
        .map(|(i, name)| json!({"GUID": format!("lvl-{i}-{seed}"), "Name": name}))
        .collect();
    let categories: Vec<_> = ["Architecture", "Performance", "Security"]
        .iter()
        .enumerate()
        .map(|(c, name)| {
            let patterns: Vec<_> = (0..3)
                .map(
                    |p| json!({"GUID": format!("pat-{c}-{p}"), "Name": format!("{name} rule {p}")}),
                )
                .collect();
            json!({"GUID": format!("cat-{c}"), "Name": name, "Patterns": patterns})
        })
        .collect();
    let finding = |k: usize, count: u64| {
        let (c, p) = (k % 3, (k / 3) % 3);
        let (category, pattern) = (format!("cat-{c}"), format!("pat-{c}-{p}"));
        json!({"CategoryGUID": category, "PatternGUID": pattern, "Count": count})
    };
    let applications: Vec<_> = (0..apps)
        .map(|i| {
            let scrambled = (i as u64).wrapping_mul(2_654_435_761) % 0xffff_ffff;
            let name = NAMES[i % NAMES.len()];
            let modules: Vec<_> = (0..i % 4)
                .map(|m| {
                    let findings: Vec<_> = (0..(i + m) % 3)
                        .map(|k| finding(k + m, seed + (i * 10 + m) as u64))
                        .collect();
                    json!({
                        "GUID": format!("{scrambled:08x}-m{m}"),
                        "Name": format!("{}_M{m}", name.replace(' ', "")),
                        "LevelGUID": format!("lvl-{}-{seed}", (i + m) % 3),
                        "Findings": findings,
                    })
                })
                .collect();
            let findings: Vec<_> = (0..i % 5).map(|k| finding(k, seed + i as u64)).collect();
            json!({
                "GUID": format!("{scrambled:08x}-0000-4000-8000-{i:012}"),
                "Name": name,
                "LevelGUID": format!("lvl-{}-{seed}", i % 3),
                "Findings": findings,
                "Modules": modules,
            })
        })
        .collect();
    let teams: Vec<_> = (0..3)
        .map(|t| {
            let members: Vec<_> = applications
                .iter()
                .skip(t)
                .step_by(3)
                .map(|a| json!({"GUID": a["GUID"]}))
                .collect();
            let (id, name) = (format!("team-{t}"), format!("Team {}", 3 - t));
            json!({"ExternalId": id, "Name": name, "Applications": members})
        })
        .collect();
    json!({
        "LastAnalyzedOn": analyzed_on,
        "Levels": levels,
        "Categories": categories,
        "Teams": teams,
        "Applications": applications,
    })
}

/// The application GUIDs of `snapshot` in the documented serving order: name ignoring case,
/// then exact name, then GUID ignoring case.
pub fn serving_order(snapshot: &serde_json::Value) -> Vec<String> {
    let mut apps: Vec<(String, String, String)> = snapshot["Applications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let name = a["Name"].as_str().unwrap();
            let guid = a["GUID"].as_str().unwrap();
            (name.to_lowercase(), name.to_owned(), guid.to_owned())
        })
        .collect();
    apps.sort_by(|a, b| (&a.0, &a.1, a.2.to_lowercase()).cmp(&(&b.0, &b.1, b.2.to_lowercase())));
    apps.into_iter().map(|(_, _, guid)| guid).collect()
}

impl Server {
    /// Whether the server process is still running (it has not crashed).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The two credential header lines for `key`, CRLF-terminated.
    pub fn credentials(key: &str) -> String {
        format!("x-api-key: {key}\r\nx-activation-code: {ACTIVATION_CODE}\r\n")
    }
}

/// What a connection received before it closed or fell silent.
#[derive(Debug)]
pub struct Exchange {
    pub raw: Vec<u8>,
    /// The server closed the connection (EOF, TLS close or reset) rather than falling silent.
    pub closed: bool,
    /// From the first byte sent to the close (or to the silence that ended the wait).
    pub elapsed: Duration,
}

impl Exchange {
    /// Every whole response in `raw`, in order.
    pub fn responses(&self) -> Vec<Response> {
        let mut out = Vec::new();
        let mut rest = &self.raw[..];
        while let Some((response, used)) = Response::parse_prefix(rest, false) {
            out.push(response);
            rest = &rest[used..];
        }
        out
    }
}

/// Reads until the peer closes or nothing arrives for `patience`.
fn read_until_close(stream: &mut impl Read, started: Instant, patience: Duration) -> Exchange {
    let mut raw = Vec::new();
    let mut chunk = [0u8; 8192];
    let deadline = started + patience;
    let closed = loop {
        match stream.read(&mut chunk) {
            Ok(0) => break true,
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if Instant::now() >= deadline {
                    break false;
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            // A reset, or a TLS connection cut without close_notify: closed all the same.
            Err(_) => break true,
        }
    };
    Exchange { raw, closed, elapsed: started.elapsed() }
}

/// Sends `bytes` on a plain TCP connection and reads until the server closes (or `patience`).
pub fn tcp_exchange(addr: SocketAddr, bytes: &[u8], patience: Duration) -> Exchange {
    let mut socket = TcpStream::connect(addr).unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let started = Instant::now();
    // The server may close before taking everything (an oversized head): that is its answer.
    let _ = socket.write_all(bytes);
    read_until_close(&mut socket, started, patience)
}

impl Server {
    /// Sends `bytes` as plaintext inside a TLS connection and reads until the server closes.
    pub fn tls_exchange(&self, bytes: &[u8], patience: Duration) -> Exchange {
        let mut stream = self.connect();
        stream.sock.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        // Finish the handshake first, so its time is not counted against the request.
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock).unwrap();
        }
        let started = Instant::now();
        let _ = stream.write_all(bytes).and_then(|()| stream.flush());
        read_until_close(&mut stream, started, patience)
    }
}
/// Raises this process's soft open-file limit to its hard limit (flood tests open many
/// sockets; a fresh machine's soft limit may be 1024). Returns the limit now in force.
pub fn raise_file_limit() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        let _ = setrlimit(Resource::Nofile, limit);
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

impl Server {
    /// Opens a TLS connection to the API port from `source` (any 127.0.0.0/8 address works on
    /// Linux loopback, so tests can play many clients).
    pub fn connect_from(&self, source: std::net::IpAddr) -> TlsStream {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::for_address(self.api), Type::STREAM, None).unwrap();
        socket.bind(&SocketAddr::new(source, 0).into()).unwrap();
        socket.connect(&self.api.into()).unwrap();
        let socket: TcpStream = socket.into();
        socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let conn = ClientConnection::new(self.tls_config(), name).unwrap();
        StreamOwned::new(conn, socket)
    }

    /// One API GET from `source` with `headers`, on a fresh connection.
    pub fn get_from(
        &self,
        source: std::net::IpAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Response {
        let mut stream = self.connect_from(source);
        let mut request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        stream.write_all(request.as_bytes()).unwrap();
        read_response(&mut stream).expect("a whole response")
    }
}

/// Polls `probe` every 10 ms until `done` holds for what it returns, and returns that. Once
/// `timeout` has passed the test fails, naming `what` and the last value seen: a condition
/// is waited for, never a fixed time.
pub fn poll<T: std::fmt::Debug>(
    what: &str,
    timeout: Duration,
    mut probe: impl FnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let value = probe();
        if done(&value) {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: still {value:?} after {timeout:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Server {
    /// The value of one series (`aims_open_connections{port="api"}`) on the admin port's
    /// `/metrics`, or `None` if it is not there.
    pub fn metric(&self, series: &str) -> Option<f64> {
        let response = admin_exchange(self.admin, "GET", "/metrics", b"");
        assert_eq!(response.status, 200, "{}", String::from_utf8_lossy(&response.body));
        let text = String::from_utf8(response.body).expect("metrics are UTF-8");
        text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    /// Waits until the API port holds exactly `count` connections open (it accepts and closes
    /// them on its own workers, a moment after the client's connect or close).
    pub fn wait_for_open_connections(&self, count: usize) {
        let series = "aims_open_connections{port=\"api\"}";
        poll(
            &format!("waiting for {count} open connections on the api port"),
            Duration::from_secs(10),
            || self.metric(series),
            |open| *open == Some(count as f64),
        );
    }
}
