//! The admin port cannot be stalled or slowed by others (issue 19): heads have a deadline,
//! bodies a minimum rate, root always gets a worker, and the optional Unix socket serves the
//! same routes under the same policy.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{BIN, Options, Response, Server, admin_exchange, config_text, require_root};

/// A `PUT` announcing 1,000 bytes of body and sending 16, as the issue's stalled uploads did.
const STALLED_UPLOAD: &[u8] = b"PUT /snapshots/2024-01-01 HTTP/1.1\r\nHost: 127.0.0.1\r\n\
    Content-Length: 1000\r\n\r\n0123456789abcdef";

/// Reads one answer until the server closes (or `patience` ends); its status and when it came.
fn answer_of(mut stream: TcpStream, started: Instant, patience: Duration) -> (u16, Duration) {
    stream.set_read_timeout(Some(patience)).unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let status = Response::parse(&raw).map_or(0, |r| r.status);
    (status, started.elapsed())
}

/// `GET /health` until it is answered 200 (a `503` says "retry", and is retried); how long it
/// took in all.
fn health_within(server: &Server, patience: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let answer = admin_exchange(server.admin, "GET", "/health", b"");
        match answer.status {
            200 => return started.elapsed(),
            503 => assert!(started.elapsed() < patience, "still busy after {patience:?}"),
            other => panic!("/health answered {other}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn stalled_and_trickling_uploads_are_cut_within_seconds() {
    let server = Server::start_with(&Options {
        admin: "header_timeout_secs: 2,".into(),
        ..Options::default()
    });
    // First (so that a worker takes it at once): one byte every half second, 2 bytes a
    // second, far below the minimum rate, yet each byte well within any per-read timeout.
    let mut trickler = TcpStream::connect(server.admin).unwrap();
    trickler.write_all(&STALLED_UPLOAD[..STALLED_UPLOAD.len() - 16]).unwrap();
    let trickle = std::thread::spawn(move || {
        let started = Instant::now();
        for _ in 0..40 {
            if trickler.write_all(b"x").is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        answer_of(trickler, started, Duration::from_secs(1))
    });
    let started = Instant::now();
    let stalled: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut stream = TcpStream::connect(server.admin).unwrap();
            stream.write_all(STALLED_UPLOAD).unwrap();
            stream
        })
        .collect();
    // The same uid's next request gets through once the stalls are cut, not a minute later.
    let health = health_within(&server, Duration::from_secs(10));
    assert!(health < Duration::from_secs(10), "/health took {health:?}");
    let mut timed_out = 0;
    for stream in stalled {
        let (status, at) = answer_of(stream, started, Duration::from_secs(10));
        // Cut when its allowance (2 s) ends, or, having waited that long for a worker, told
        // the port is busy.
        assert!(matches!(status, 408 | 503), "a stalled upload got {status} after {at:?}");
        assert!(at < Duration::from_secs(8), "a stalled upload was answered after {at:?}");
        timed_out += usize::from(status == 408);
    }
    // Each stalled upload a worker took is cut with 408; those still queued when their wait
    // outlasts the header timeout are told 503. How many workers one uid holds at once depends
    // on who runs the test (src/server/admin_port.rs, 4 workers by default): root all 4 + 1,
    // any other uid 4 - 1. The trickler holds one of them.
    let held_by_this_uid = if rustix::process::getuid().is_root() { 5 } else { 3 };
    let cut_by_a_worker = held_by_this_uid - 1;
    assert!(
        timed_out >= cut_by_a_worker,
        "only {timed_out} stalled uploads got their 408, not {cut_by_a_worker}"
    );
    let (status, at) = trickle.join().unwrap();
    assert_eq!(status, 408, "the trickle is cut");
    assert!(at < Duration::from_secs(8), "the trickle was cut after {at:?}");
    let log = server.wait_for_log("arrived too slowly");
    assert!(log.contains("refused port=admin client=uid:"), "{log}");
    let too_slow = server.metric("aims_refusals_total{reason=\"too_slow\"}").unwrap();
    assert!(too_slow >= (cut_by_a_worker + 1) as f64, "{too_slow} refused too slow");
}

#[test]
fn a_large_import_over_loopback_is_not_cut() {
    let server = Server::start();
    // 64 MiB of an object that is whitespace to its very end, where it turns out to lack every
    // field: the import parses as the body streams in, so only a body that stays valid is read
    // whole (at loopback speed, far above the minimum rate) before the answer.
    let mut body = vec![b' '; 64 << 20];
    body[0] = b'{';
    if let Some(last) = body.last_mut() {
        *last = b'}';
    }
    let started = Instant::now();
    let answer = admin_exchange(server.admin, "PUT", "/snapshots/2024-01-01", &body);
    assert_eq!(answer.status, 422, "{}", String::from_utf8_lossy(&answer.body));
    // Refused at its last byte: every one of the 64 MiB was read.
    let refusal: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(refusal["reason"], "missing field `LastAnalyzedOn` (line 1, column 67108864)");
    assert!(started.elapsed() < Duration::from_secs(60));
}

/// Runs `python3 -c script args…` as `uid` (root only), its output piped. The system's
/// python3 (.ci/run installs it): root's own (pyenv, say) may be out of another uid's reach.
fn python_as(uid: u32, script: &str, args: &[String]) -> Child {
    Command::new("setpriv")
        .args([format!("--reuid={uid}"), format!("--regid={uid}"), "--clear-groups".into()])
        .args(["/usr/bin/python3", "-c", script])
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("setpriv and python3 are installed")
}

/// Opens N stalled uploads, says `ready`, then prints each one's status and when it came.
const STALLER: &str = r#"
import socket, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
head = b"PUT /snapshots/2024-01-01 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n"
socks = []
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(head + b"0123456789abcdef")
    socks.append(s)
print("ready", flush=True)
t0 = time.time()
for s in socks:
    s.settimeout(30)
    data = b""
    try:
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    status = data.split(b" ")[1].decode() if data.startswith(b"HTTP/") else "none"
    print(status, round(time.time() - t0, 2), flush=True)
"#;

/// Asks `/health` in a loop for `seconds`, then prints how many answers of each status came.
const FLOODER: &str = r#"
import collections, socket, sys, time
port, seconds = int(sys.argv[1]), float(sys.argv[2])
counts = collections.Counter()
end = time.time() + seconds
print("ready", flush=True)
while time.time() < end:
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        data = s.recv(64)
        counts[data.split(b" ")[1].decode() if data.startswith(b"HTTP/") else "none"] += 1
        s.close()
    except OSError:
        counts["error"] += 1
print(dict(counts), flush=True)
"#;

fn wait_ready(child: &mut Child) -> BufReader<std::process::ChildStdout> {
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    out
}

#[test]
#[ignore = "needs root: runs the server, stalled uploads and a flood as other uids (setpriv); .ci/run runs it"]
fn root_is_answered_at_once_while_the_service_uid_stalls_and_another_uid_floods() {
    require_root("root_is_answered_at_once…", "run clients and the server as other uids");
    const SERVICE_UID: u32 = 65533;
    // The server runs as its own uid (as under systemd), which may always use the port; the
    // binary in target/ is readable by every uid.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.ron");
    std::fs::write(&config, config_text(dir.path(), &Options::default())).unwrap();
    let chown = Command::new("chown")
        .args(["-R", &format!("{SERVICE_UID}:{SERVICE_UID}")])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(chown.success());
    let options = Options {
        wrapper: vec![
            "setpriv".to_owned(),
            format!("--reuid={SERVICE_UID}"),
            format!("--regid={SERVICE_UID}"),
            "--clear-groups".to_owned(),
        ],
        ..Options::default()
    };
    let server = Server::start_in_with(dir, config, &options).unwrap_or_else(|log| panic!("{log}"));
    let port = server.admin.port().to_string();
    // Eight stalled uploads from the service's uid: more than every worker it may hold.
    let mut staller = python_as(SERVICE_UID, STALLER, &[port.clone(), "8".into()]);
    let mut stalled = wait_ready(&mut staller);
    // Eight loops of a uid that may not use the port.
    let mut flooders: Vec<Child> =
        (0..8).map(|_| python_as(65534, FLOODER, &[port.clone(), "6".into()])).collect();
    let mut floods: Vec<_> = flooders.iter_mut().map(wait_ready).collect();
    let mut slowest = Duration::ZERO;
    for _ in 0..40 {
        let started = Instant::now();
        let answer = admin_exchange(server.admin, "GET", "/health", b"");
        assert_eq!(answer.status, 200);
        slowest = slowest.max(started.elapsed());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(slowest < Duration::from_secs(1), "root's /health took up to {slowest:?}");
    for _ in 0..8 {
        let mut line = String::new();
        stalled.read_line(&mut line).unwrap();
        let (status, at) = line.trim().split_once(' ').unwrap();
        assert!(matches!(status, "408" | "503"), "a stalled upload got {line}");
        assert!(at.parse::<f64>().unwrap() < 20.0, "a stalled upload was answered at {at} s");
    }
    let _ = staller.wait();
    for (flood, mut flooder) in floods.iter_mut().zip(flooders) {
        let mut text = String::new();
        flood.read_line(&mut text).unwrap();
        let _ = flooder.wait();
        assert!(text.contains("'403'"), "the flood was refused: {text}");
    }
}

/// A server whose admin port also listens on `admin.sock` in its folder (of `mode`).
fn with_unix_socket(mode: u32) -> (Server, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(mode)).unwrap();
    let socket = dir.path().join("admin.sock");
    let options = Options {
        admin: format!("unix_socket: Some(\"{}\"),", socket.display()),
        ..Options::default()
    };
    let config = dir.path().join("config.ron");
    std::fs::write(&config, config_text(dir.path(), &options)).unwrap();
    let server = Server::start_in(dir, config).unwrap_or_else(|log| panic!("{log}"));
    (server, socket)
}

#[test]
fn the_unix_socket_serves_the_same_routes_and_the_cli_prefers_it() {
    let (server, socket) = with_unix_socket(0o700);
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o666, "who may use it is decided by uid, as on the TCP port");
    let out = Command::new("curl")
        .args(["-s", "-w", "\\n%{http_code}", "--unix-socket"])
        .arg(&socket)
        .arg("http://localhost/key")
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.ends_with("\n200"), "{text}");
    assert!(text.contains("\"state\":\"none\""), "{text}");
    // The CLI, with the TCP port pointing nowhere, goes through the socket.
    let cli = std::fs::read_to_string(server.cli_config()).unwrap();
    let nowhere = cli.replacen(&server.admin.to_string(), "127.0.0.1:1", 1);
    let cli_config = server.dir.path().join("cli-unix.ron");
    std::fs::write(&cli_config, nowhere).unwrap();
    let out =
        Command::new(BIN).args(["key", "generate", "--config"]).arg(&cli_config).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(server.admin("GET", "/key").1["state"], "active");
    assert!(server.wait_for_log("audit action=key.generate").contains("admin listening on unix:"));
}

#[test]
#[ignore = "needs root: connects to the admin socket as uid 65534 (setpriv); .ci/run runs it"]
fn the_unix_socket_refuses_a_uid_that_may_not_use_the_port() {
    require_root("the_unix_socket_refuses…", "connect as uid 65534");
    let (server, socket) = with_unix_socket(0o755);
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .args(["curl", "-s", "-w", "\\n%{http_code}", "-X", "POST", "--unix-socket"])
        .arg(&socket)
        .arg("http://localhost/key")
        .output()
        .expect("setpriv and curl run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.ends_with("\n403"), "{text}");
    assert!(text.contains("uid 65534 may not use the admin port"), "{text}");
    assert_eq!(server.admin("GET", "/key").1["state"], "none");
}
