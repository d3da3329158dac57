//! Two appliances, one key (issue 22): the key's record moves from one to the other through
//! the admin port and the CLI, forward only; and a real pair behind a real HAProxy, running the
//! configuration shipped in `packaging/examples/`, rotates, revokes and fails over while clients
//! call it the whole time, and leaves a frozen appliance without cutting a request.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::ClientConfig;
use rustls::pki_types::ServerName;

use crate::util::{
    ACTIVATION_CODE, BASE, BIN, Options, Server, poll, read_response, tls_client_trusting,
};

/// `aims-api key export-record` on `from`, piped into `aims-api key install-record -` on `to`,
/// as `export-record | ssh standby install-record -` does. Returns what install printed.
fn move_record(from: &Server, to: &Server, extra: &[&str]) -> (bool, String) {
    let exported = from.cli(&["key", "export-record"]);
    assert!(exported.status.success(), "{}", String::from_utf8_lossy(&exported.stderr));
    let mut child = Command::new(BIN)
        .args(["key", "install-record", "-"])
        .args(extra)
        .arg("--config")
        .arg(to.cli_config())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&exported.stdout).unwrap();
    let output = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    (output.status.success(), text)
}

#[test]
fn a_key_record_moves_between_appliances_forward_only() {
    let (a, b) = (Server::start(), Server::start());
    let first = a.generate_key();
    let (status, record) = a.admin("GET", "/key/record");
    assert_eq!(status, 200);
    assert_eq!(record["format"], "aims-api key record", "{record}");
    assert!(!record.to_string().contains(&first), "a record never holds the key");
    let (ok, said) = move_record(&a, &b, &[]);
    assert!(ok, "{said}");
    assert!(said.starts_with("installed: key aims_..."), "{said}");
    assert_eq!(b.status_with(&first), 404, "B admits the key A made");
    b.wait_for_log("audit action=key.install client=uid:");
    assert!(b.log().contains("generation=1 previous_generation=0 result=ok"), "{}", b.log());
    // The same record again: nothing to do.
    let (ok, said) = move_record(&a, &b, &[]);
    assert!(ok && said.starts_with("unchanged: "), "{said}");
    // A replace with a grace, moved: both admit both keys.
    let (status, body) = a.admin_with("POST", "/key/replace", r#"{"grace_secs": 600}"#);
    assert_eq!(status, 200, "{body}");
    let second = body["api_key"].as_str().unwrap().to_owned();
    let older = a.cli(&["key", "export-record"]).stdout;
    assert!(move_record(&a, &b, &[]).0);
    let (_, b_key) = b.admin("GET", "/key");
    assert_eq!(
        (b_key["generation"].as_u64(), b_key["previous"]["generation"].as_u64()),
        (Some(2), Some(1))
    );
    for key in [&first, &second] {
        assert_eq!(b.status_with(key), 404);
    }
    // Rolled forward once more, then an older record is refused, unless forced.
    a.admin("DELETE", "/key");
    assert!(move_record(&a, &b, &[]).0);
    assert_eq!(b.status_with(&second), 401, "the revoke reached B");
    let older_text = String::from_utf8(older).unwrap();
    let (status, body) = b.admin_with("PUT", "/key/record", &older_text);
    assert_eq!((status, body["error"].as_str()), (409, Some("rollback")), "{body}");
    assert_eq!(b.status_with(&second), 401, "nothing changed");
    let forced = older_text.replacen('{', "{\"force\": true,", 1);
    let (status, body) = b.admin_with("PUT", "/key/record", &forced);
    assert_eq!((status, body["result"].as_str()), (200, Some("forced")), "{body}");
    b.wait_for_log("result=forced");
    assert_eq!(b.status_with(&second), 404, "rolled back, on purpose");
    // Another activation code: refused.
    let other = Server::start_with(&Options::default());
    let config = std::fs::read_to_string(&other.config).unwrap();
    let (dir, _) = other.stop();
    std::fs::write(dir.path().join("config.ron"), config.replace(ACTIVATION_CODE, "OTHER-CODE"))
        .unwrap();
    let path = dir.path().join("config.ron");
    let stranger = Server::start_in(dir, path).unwrap();
    let (status, body) = stranger.admin_with("PUT", "/key/record", &older_text);
    assert_eq!((status, body["error"].as_str()), (422, Some("activation_code_mismatch")), "{body}");
    let (status, body) = stranger.admin_with("PUT", "/key/record", "{\"format\": 1}");
    assert_eq!((status, body["error"].as_str()), (422, Some("invalid_record")), "{body}");
}

/// The repository's `packaging/examples/` folder.
fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/examples")
}

#[test]
#[ignore = "needs haproxy and keepalived (.ci/run installs them)"]
fn the_shipped_haproxy_and_keepalived_configurations_are_valid() {
    let haproxy = Command::new("haproxy")
        .args(["-c", "-f"])
        .arg(examples().join("haproxy.cfg"))
        .output()
        .expect("haproxy is installed");
    assert!(haproxy.status.success(), "{}", String::from_utf8_lossy(&haproxy.stderr));
    let keepalived = Command::new("keepalived")
        .args(["--config-test", "-f"])
        .arg(examples().join("keepalived.conf"))
        .output()
        .expect("keepalived is installed");
    assert!(
        keepalived.status.success(),
        "{}{}",
        String::from_utf8_lossy(&keepalived.stdout),
        String::from_utf8_lossy(&keepalived.stderr)
    );
}

/// The shipped HAProxy configuration with only its addresses changed: it listens on `front`
/// and balances over `a` and `b`.
fn haproxy_config(front: SocketAddr, a: SocketAddr, b: SocketAddr) -> String {
    let shipped = std::fs::read_to_string(examples().join("haproxy.cfg")).unwrap();
    let rewritten = shipped
        .replace("bind :8443", &format!("bind {front}"))
        .replace("192.0.2.11:8443", &a.to_string())
        .replace("192.0.2.12:8443", &b.to_string())
        // No syslog in a test's sandbox: the log goes to stderr, which the test keeps.
        .replace("log /dev/log local0", "log stderr local0");
    assert_ne!(rewritten, shipped);
    rewritten
}

struct Haproxy(Child);

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One request as a client saw it.
#[derive(Debug, Clone, Copy)]
struct Outcome {
    /// Which key (its index in the test's list) the request carried.
    key: usize,
    started: Instant,
    ended: Instant,
    /// When its connection was opened.
    connected: Instant,
    /// The status, or `None` for a connection that broke.
    status: Option<u16>,
}

/// The key the clients use now (an index into `Keys::texts`), or none while the pair has none.
struct Keys {
    texts: Mutex<Vec<String>>,
    current: Mutex<Option<usize>>,
}

fn client_loop(
    front: SocketAddr,
    tls: Arc<ClientConfig>,
    keys: Arc<Keys>,
    stop: Arc<AtomicBool>,
    deadline: Instant,
) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    let mut stream: Option<(crate::util::TlsStream, Instant)> = None;
    let path = format!("{BASE}/TechnicalDebt_Level");
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        let Some(index) = *keys.current.lock().unwrap() else {
            std::thread::sleep(Duration::from_millis(2));
            continue;
        };
        let key = keys.texts.lock().unwrap()[index].clone();
        let started = Instant::now();
        if stream.is_none() {
            let Ok(socket) = TcpStream::connect(front) else {
                outcomes.push(Outcome {
                    key: index,
                    started,
                    ended: Instant::now(),
                    connected: started,
                    status: None,
                });
                continue;
            };
            socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let name = ServerName::try_from("localhost").unwrap();
            let conn = rustls::ClientConnection::new(Arc::clone(&tls), name).unwrap();
            stream = Some((rustls::StreamOwned::new(conn, socket), started));
        }
        let Some((tls_stream, connected)) = stream.as_mut() else { continue };
        let connected = *connected;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nx-api-key: {key}\r\n\
             x-activation-code: {ACTIVATION_CODE}\r\n\r\n"
        );
        let status = tls_stream
            .write_all(request.as_bytes())
            .ok()
            .and_then(|()| read_response(tls_stream))
            .map(|r| r.status);
        let ended = Instant::now();
        // A broken connection is dropped; and a client makes a new connection every 20
        // requests, as a CI job's few calls would, so new connections keep being balanced.
        if status.is_none_or(|s| s != 200) || outcomes.len() % 20 == 19 {
            stream = None;
        }
        outcomes.push(Outcome { key: index, started, ended, connected, status });
    }
    outcomes
}

/// One request straight to an appliance (not through HAProxy), on a new connection.
fn direct_status(server: &Server, tls: &Arc<ClientConfig>, key: &str) -> u16 {
    one_request(server.api, tls, key)
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// Two appliances with the same certificate and the same snapshot, behind a real HAProxy
/// running the shipped configuration. Dropped in field order: HAProxy, the appliances, then
/// the folder its configuration is in.
struct Pair {
    haproxy: Haproxy,
    a: Server,
    b: Server,
    /// The appliances' options, for a restart.
    options: Options,
    /// HAProxy's frontend.
    front: SocketAddr,
    /// HAProxy's own account of each connection: its termination state says who cut one.
    haproxy_log: PathBuf,
    /// A client that trusts the pair's certificate.
    tls: Arc<ClientConfig>,
    /// Holds the certificate, HAProxy's configuration and its log.
    folder: tempfile::TempDir,
}

impl Pair {
    fn start() -> Self {
        // The certificate both appliances present, for the pair's name.
        let folder = tempfile::tempdir().unwrap();
        let key_pair = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key_pair)
            .unwrap();
        let (cert_path, key_path) =
            (folder.path().join("pair.pem"), folder.path().join("pair.key"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key_pair.serialize_pem()).unwrap();
        // Behind HAProxy in TCP mode every client comes from HAProxy's address: the in-flight
        // refusals of the rotation test would get that address throttled, and its checks want
        // to see each refusal's own status, so throttling is lifted.
        let options = Options {
            api: format!(
                "tls_cert: Some(\"{}\"), tls_key: Some(\"{}\"), max_refusals_per_address: 1000000,",
                cert_path.display(),
                key_path.display()
            ),
            ..Options::default()
        };
        let a = Server::start_with(&options);
        let b = Server::start_with(&options);
        let snapshot = std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/snapshot-2024-05-14.json"),
        )
        .unwrap();
        for server in [&a, &b] {
            let (status, body) = server.put_snapshot("2024-05-14", &snapshot);
            assert_eq!(status, 201, "{body}");
        }
        let front = free_port();
        let config = folder.path().join("haproxy.cfg");
        std::fs::write(&config, haproxy_config(front, a.api, b.api)).unwrap();
        let haproxy_log = folder.path().join("haproxy.log");
        let haproxy = Haproxy(
            Command::new("haproxy")
                .args(["-db", "-f"])
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&haproxy_log).unwrap())
                .spawn()
                .expect("haproxy is installed"),
        );
        let tls = tls_client_trusting(std::slice::from_ref(&cert_path));
        Self { haproxy, a, b, options, front, haproxy_log, tls, folder }
    }

    /// A key generated on A and its record installed on B, then HAProxy serving it: the key,
    /// and how long the record took to reach both appliances.
    fn first_key(&self) -> (String, Duration) {
        let key = self.a.generate_key();
        let changed = Instant::now();
        assert!(move_record(&self.a, &self.b, &[]).0);
        let propagation = changed.elapsed();
        poll(
            "haproxy to serve",
            Duration::from_secs(20),
            || one_request(self.front, &self.tls, &key),
            |s| *s == 200,
        );
        (key, propagation)
    }
}

/// Four clients calling through HAProxy, each in [`client_loop`], until told to stop.
struct Clients {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<Vec<Outcome>>>,
}

impl Clients {
    /// Starts them; they stop by themselves after `at_most`, a bound on a test gone wrong.
    fn start(
        front: SocketAddr,
        tls: &Arc<ClientConfig>,
        keys: &Arc<Keys>,
        at_most: Duration,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let deadline = Instant::now() + at_most;
        let threads = (0..4)
            .map(|_| {
                let (tls, keys, stop) = (Arc::clone(tls), Arc::clone(keys), Arc::clone(&stop));
                std::thread::spawn(move || client_loop(front, tls, keys, stop, deadline))
            })
            .collect();
        Self { stop, threads }
    }

    /// Stops them, and returns every request each one made.
    fn finish(self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::SeqCst);
        self.threads.into_iter().flat_map(|c| c.join().unwrap()).collect()
    }
}

#[test]
#[ignore = "needs haproxy (.ci/run installs it)"]
fn a_pair_behind_haproxy_rotates_and_fails_over_without_a_failed_request() {
    // (1) A key generated on A, installed on B; clients move to it once both have it.
    let pair = Pair::start();
    let (k1, moved) = pair.first_key();
    let mut propagation = vec![moved];
    let Pair { haproxy, mut a, b, options, front, haproxy_log, tls, folder: _folder } = pair;
    let keys = Arc::new(Keys { texts: Mutex::new(vec![k1.clone()]), current: Mutex::new(Some(0)) });
    let clients = Clients::start(front, &tls, &keys, Duration::from_secs(300));
    let let_clients_run = || std::thread::sleep(Duration::from_millis(1500));
    let_clients_run();

    // (2) Replaced on A with a 30 s grace, installed on B; then clients move to the new key.
    let (status, body) = a.admin_with("POST", "/key/replace", r#"{"grace_secs": 30}"#);
    assert_eq!(status, 200, "{body}");
    let changed = Instant::now();
    let k2 = body["api_key"].as_str().unwrap().to_owned();
    assert!(move_record(&a, &b, &[]).0);
    propagation.push(changed.elapsed());
    keys.texts.lock().unwrap().push(k2.clone());
    *keys.current.lock().unwrap() = Some(1);
    let_clients_run();

    // (3) Revoked on A, installed on B: from the revoke on, K2 is not the pair's; once it has
    // reached both, both refuse it and the grace key. Then a new key, on both, for the clients.
    let revoked_at = Instant::now();
    let (status, _) = a.admin("DELETE", "/key");
    assert_eq!(status, 200);
    let changed = Instant::now();
    assert!(move_record(&a, &b, &[]).0);
    propagation.push(changed.elapsed());
    *keys.current.lock().unwrap() = None;
    for server in [&a, &b] {
        for key in [&k1, &k2] {
            assert_eq!(direct_status(server, &tls, key), 401, "refused by both once revoked");
        }
    }
    let k3 = a.generate_key();
    let changed = Instant::now();
    assert!(move_record(&a, &b, &[]).0);
    propagation.push(changed.elapsed());
    keys.texts.lock().unwrap().push(k3.clone());
    *keys.current.lock().unwrap() = Some(2);
    let_clients_run();

    // (4) A is SIGKILLed; HAProxy sends everyone to B. A restarts, and gets the latest record.
    let killed_at = Instant::now();
    a.kill();
    // Reaped: its sockets are closed. A connection opened before this may still have reached A
    // (the kernel completes a handshake into A's backlog until the listener closes), so it is
    // in flight on A like one opened before the signal.
    let died_at = Instant::now();
    let_clients_run();
    // It comes back on the same port: the one HAProxy knows it by.
    let api_at = a.api;
    let (dir, config_path) = a.stop();
    let text = std::fs::read_to_string(&config_path).unwrap();
    std::fs::write(&config_path, text.replacen("127.0.0.1:0", &api_at.to_string(), 1)).unwrap();
    let restarted = Instant::now();
    let a = Server::start_in_with(dir, config_path, &options).expect("A restarts");
    let restart_time = restarted.elapsed();
    let (ok, said) = move_record(&b, &a, &[]);
    assert!(ok && said.starts_with("unchanged: "), "A kept the record it made: {said}");
    // Back in rotation: A answers again through HAProxy (its own counter moves).
    let served_by_a = poll(
        "A to serve through haproxy again",
        Duration::from_secs(30),
        || a.metric("aims_requests_total{port=\"api\",route=\"level\",status=\"200\"}"),
        |n| n.is_some_and(|n| n > 0.0),
    );
    let back_in_rotation = restarted.elapsed();
    let_clients_run();
    let outcomes = clients.finish();
    drop(haproxy);

    // Every request with a key the pair admitted at that moment succeeded, but: a request with
    // K2 still in flight when the revoke reached A (refused: expected), and requests on a
    // connection to A that was open when A was killed (reported apart).
    let on_a_when_killed =
        |o: &Outcome| o.status.is_none() && o.connected < died_at && o.ended >= killed_at;
    let in_flight_at_kill: Vec<&Outcome> =
        outcomes.iter().filter(|o| on_a_when_killed(o)).collect();
    let refused_after_revoke = outcomes
        .iter()
        .filter(|o| o.key == 1 && o.status == Some(401) && o.ended >= revoked_at)
        .count();
    let failures: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.status != Some(200))
        .filter(|o| !on_a_when_killed(o))
        .filter(|o| !(o.key == 1 && o.status == Some(401) && o.ended >= revoked_at))
        .collect();
    let first_success_after_kill = outcomes
        .iter()
        .filter(|o| o.status == Some(200) && o.started >= killed_at)
        .map(|o| o.ended.duration_since(killed_at))
        .min();
    let last_failure_after_kill = in_flight_at_kill
        .iter()
        .map(|o| o.ended.duration_since(killed_at))
        .max()
        .unwrap_or_default();
    println!(
        "pair through haproxy: {} requests, {} failed (goal 0); {} in flight on A when it was \
         SIGKILLed (lost with it), last of them {:?} after the kill; {} refused with the \
         revoked key, sent before the clients were told to move off it; key change to both \
         appliances (export | install): {:?}; \
         failover: first answer on a new connection {:?} after the SIGKILL; A restarted in \
         {restart_time:?} and was serving through haproxy again {back_in_rotation:?} after its \
         restart ({served_by_a:?} requests when seen)",
        outcomes.len(),
        failures.len(),
        in_flight_at_kill.len(),
        last_failure_after_kill,
        refused_after_revoke,
        propagation,
        first_success_after_kill,
    );
    let since_kill: Vec<(Option<u16>, Duration, Duration)> = failures
        .iter()
        .map(|o| {
            (o.status, o.connected.duration_since(killed_at), o.ended.duration_since(killed_at))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "failed requests (status, connected and ended after the kill, 0 if before; A was reaped \
         {:?} after the signal): {since_kill:?}\n{failures:#?}\n\
         HAProxy's connections that did not end normally, and its server state changes:\n{}",
        died_at.duration_since(killed_at),
        unusual_haproxy_lines(&haproxy_log)
    );
    assert!(outcomes.len() > 100, "the clients ran: {}", outcomes.len());
    assert!(first_success_after_kill.is_some(), "B answered after A was killed");
    for server in [&a, &b] {
        assert_eq!(direct_status(server, &tls, &k2), 401);
        assert_eq!(direct_status(server, &tls, &k3), 200);
    }
}

#[test]
#[ignore = "needs haproxy (.ci/run installs it)"]
fn a_frozen_appliance_is_left_without_cutting_a_request_haproxy_retries_on_the_other() {
    let pair = Pair::start();
    let (key, _) = pair.first_key();
    // A freezes, as a hung process or a paused VM does: its kernel goes on completing handshakes
    // into the listen backlog until that is full, then drops new connections' SYNs. Filled here,
    // so that every connection HAProxy sends to A from now on waits for "timeout connect" and
    // is retried on B, and HAProxy's health checks mark A down while some still wait.
    pair.a.signal(rustix::process::Signal::STOP);
    let _held = fill_accept_queue(pair.a.api);
    let frozen_at = Instant::now();

    let keys =
        Arc::new(Keys { texts: Mutex::new(vec![key.clone()]), current: Mutex::new(Some(0)) });
    let clients = Clients::start(pair.front, &pair.tls, &keys, Duration::from_secs(120));
    poll(
        "haproxy to mark the frozen A down",
        Duration::from_secs(30),
        || std::fs::read_to_string(&pair.haproxy_log).unwrap_or_default(),
        |log| log.contains("appliance-a is DOWN"),
    );
    let marked_down_after = frozen_at.elapsed();
    // Long enough for the connections that were waiting on A when it was marked down to time
    // out (2 s) and be retried on B, and then some.
    std::thread::sleep(Duration::from_secs(4));
    let outcomes = clients.finish();

    let failures: Vec<&Outcome> = outcomes.iter().filter(|o| o.status != Some(200)).collect();
    let waited: Vec<Duration> = outcomes
        .iter()
        .map(|o| o.ended.duration_since(o.started))
        .filter(|took| *took >= Duration::from_millis(1500))
        .collect();
    println!(
        "frozen appliance: {} requests through haproxy, {} failed (goal 0); {} waited for \
         haproxy's connect timeout and retry on B, the longest {:?}; A marked down {:?} after \
         it froze",
        outcomes.len(),
        failures.len(),
        waited.len(),
        waited.iter().max(),
        marked_down_after,
    );
    assert!(
        failures.is_empty(),
        "{failures:#?}\nHAProxy's connections that did not end normally, and its server state \
         changes:\n{}",
        unusual_haproxy_lines(&pair.haproxy_log)
    );
    assert!(!waited.is_empty(), "no request was sent to the frozen A: the test tested nothing");
    assert_eq!(one_request(pair.b.api, &pair.tls, &key), 200);
}

/// Opens connections to `to`, and keeps them, until its accept queue is full: a connection's
/// SYN is then dropped, and its connect times out. At most the appliance's listen backlog
/// (1,024) and a margin.
fn fill_accept_queue(to: SocketAddr) -> Vec<TcpStream> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    const LIMIT: usize = 1024 + 256;
    // A test process may start with a soft limit of 1,024 descriptors; the hard one is its own.
    let mut files = getrlimit(Resource::Nofile);
    if files.current.is_some_and(|n| n < 8192) {
        files.current = files.maximum.map(|n| n.min(8192));
        setrlimit(Resource::Nofile, files).unwrap();
    }
    let mut held = Vec::with_capacity(LIMIT);
    let mut timed_out = 0;
    // Two timeouts in a row: one could be a SYN-ACK late on a loaded machine; on loopback, two
    // of 500 ms are a full queue.
    while held.len() < LIMIT && timed_out < 2 {
        match TcpStream::connect_timeout(&to, Duration::from_millis(500)) {
            Ok(stream) => {
                held.push(stream);
                timed_out = 0;
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => timed_out += 1,
            Err(e) => panic!("connecting to {to} with {} connections held: {e}", held.len()),
        }
    }
    assert_eq!(timed_out, 2, "{LIMIT} connections held and the accept queue of {to} is not full");
    held
}

/// HAProxy's log lines that are not a connection which ended normally (`--`): cut connections
/// with their termination state (`SD`, `D-`, `CC`...), and servers going up or down.
fn unusual_haproxy_lines(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_else(|e| format!("({}: {e})", log.display()));
    text.lines()
        .filter(|line| !line.contains(" -- ") && !line.trim().is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

/// One request to `to` on a new connection, with `key`: its status (0 if it broke).
fn one_request(to: SocketAddr, tls: &Arc<ClientConfig>, key: &str) -> u16 {
    let Ok(socket) = TcpStream::connect(to) else { return 0 };
    socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(Arc::clone(tls), name).unwrap();
    let mut stream = rustls::StreamOwned::new(conn, socket);
    let request = format!(
        "GET {BASE}/TechnicalDebt_Level HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         x-api-key: {key}\r\nx-activation-code: {ACTIVATION_CODE}\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).is_err() {
        return 0;
    }
    read_response(&mut stream).map_or(0, |r| r.status)
}
