//! Hostile input on both ports, case by case, each with its exact expected answer.
//!
//! Every HTTP case carries valid credentials (on the API port) or asks for `POST /key` (on the
//! admin port), so that a request the parser wrongly let through would reach a handler and say
//! so: a 404 "no API method" where a 400 was expected, or a key generated where none may be.
//! Timeouts are short here (2 s for handshakes and heads, 3 s idle) so the cases that must be
//! cut off by a deadline prove it quickly; those run side by side on threads.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConnection, StreamOwned};

use crate::util::{Exchange, Options, Server, tcp_exchange};

const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);
const IDLE_TIMEOUT: Duration = Duration::from_secs(3);
/// Deadlines are checked every 250 ms; allow that and a loaded machine on top.
const SLACK: Duration = Duration::from_millis(1500);
/// How long a case waits for an answer that should be immediate.
const PATIENCE: Duration = Duration::from_secs(8);

fn hostile_server() -> Server {
    Server::start_with(&Options {
        api: "handshake_timeout_secs: 2, header_timeout_secs: 2, idle_timeout_secs: 3,".into(),
        admin: "header_timeout_secs: 2, idle_timeout_secs: 3,".into(),
        ..Options::default()
    })
}

/// What a case must get back.
#[derive(Debug, Clone)]
enum Expect {
    /// These answers in this order (status, and the exact error message where one is given),
    /// then the server closes the connection.
    Answers(Vec<(u16, Option<&'static str>)>),
    /// Nothing at all, and the connection closed by the deadline that applies.
    Cut { after: Duration },
    /// One fatal TLS alert record with this description, then the close.
    Alert(u8),
    /// Closed at once without a byte.
    Dropped,
}

struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    expect: Expect,
}

fn refused(status: u16, message: &'static str) -> Expect {
    Expect::Answers(vec![(status, Some(message))])
}

const MALFORMED_LINE: &str = "malformed request line";
const BARE_LF: &str = "request line or header ends in a bare LF; HTTP requires CRLF";
const BAD_VALUE: &str = "invalid byte in a header value";
const NON_ASCII: &str = "a header value has a byte outside ASCII";
const BAD_NAME: &str = "invalid header name";
const HEAD_TOO_LARGE: &str = "request head exceeds the size limit";
const TOO_MANY: &str = "request has more headers than the limit";
const BODY_TOO_LARGE: &str = "request body exceeds the size limit";
const BAD_LENGTH: &str = "Content-Length must be a non-negative decimal number";
const TWO_LENGTHS: &str = "request has more than one Content-Length header";
const LENGTH_AND_TE: &str = "request has both Transfer-Encoding and Content-Length";
const TE: &str = "Transfer-Encoding is not supported; send Content-Length";
const NOT_ORIGIN: &str = "request target must be a path starting with /";
const VERSION: &str = "only HTTP/1.0 and HTTP/1.1 are served";
const NO_HOST: &str = "HTTP/1.1 request without a Host header";
const TWO_HOSTS: &str = "request has more than one Host header";
const EXPECTATION: &str = "only the expectation 100-continue is supported";

/// The HTTP-level cases, shared by both ports. `line` is the request line's method and target
/// that would do something if admitted; `auth` the header lines that would admit it; `ok` the
/// status an admitted harmless request gets (for the pipelining cases).
fn http_cases(line: &str, auth: &str, harmless: &str, ok: u16, max_body: u64) -> Vec<Case> {
    let head = |extra: &str| format!("{line} HTTP/1.1\r\nHost: localhost\r\n{auth}{extra}\r\n");
    let bytes = |text: String| text.into_bytes();
    let with = |extra: &[u8]| {
        let mut out = format!("{line} HTTP/1.1\r\nHost: localhost\r\n{auth}").into_bytes();
        out.extend_from_slice(extra);
        out.extend_from_slice(b"\r\n");
        out
    };
    let filler = format!("X-Filler: {}\r\n", "a".repeat(10_000));
    let many: String = (0..70).map(|i| format!("X-H{i}: v\r\n")).collect();
    let harmless_head = format!("GET {harmless} HTTP/1.1\r\nHost: localhost\r\n{auth}\r\n");
    let (method, target) = line.split_once(' ').unwrap();
    vec![
        Case {
            name: "two spaces in the request line",
            bytes: bytes(head("").replacen(' ', "  ", 1)),
            expect: refused(400, MALFORMED_LINE),
        },
        Case {
            name: "HTTP/0.9 request line (no version, no headers)",
            bytes: bytes(format!("{line}\r\n")),
            expect: refused(400, MALFORMED_LINE),
        },
        Case {
            name: "lower-case version",
            bytes: bytes(head("").replacen("HTTP/1.1", "http/1.1", 1)),
            expect: refused(505, VERSION),
        },
        Case {
            name: "bare LF line ends",
            bytes: bytes(head("").replace("\r\n", "\n")),
            expect: refused(400, BARE_LF),
        },
        Case {
            name: "bare LF after the headers only",
            bytes: bytes(format!("{line} HTTP/1.1\r\nHost: localhost\r\n{auth}\n")),
            expect: refused(400, BARE_LF),
        },
        Case {
            name: "bare CR inside a header value",
            bytes: with(b"X-Junk: a\rb\r\n"),
            expect: refused(400, BAD_VALUE),
        },
        Case {
            name: "NUL in a header value",
            bytes: with(b"X-Junk: a\0b\r\n"),
            expect: refused(400, BAD_VALUE),
        },
        Case {
            name: "non-UTF-8 bytes in a header value",
            bytes: with(b"X-Junk: \xff\xfe\xc3\r\n"),
            expect: refused(400, NON_ASCII),
        },
        Case {
            name: "UTF-8 (non-ASCII) header value",
            bytes: with("User-Agent: caf\u{e9}\r\n".as_bytes()),
            expect: refused(400, NON_ASCII),
        },
        Case {
            name: "non-UTF-8 bytes in a header name",
            bytes: with(b"X-\xffJunk: a\r\n"),
            expect: refused(400, BAD_NAME),
        },
        Case {
            name: "obs-folded header",
            bytes: with(b"X-Junk: a\r\n b\r\n"),
            expect: refused(400, BAD_NAME),
        },
        Case {
            name: "space before the colon",
            bytes: with(b"X-Junk : a\r\n"),
            expect: refused(400, BAD_NAME),
        },
        Case {
            name: "oversized head",
            bytes: bytes(head(&filler)),
            expect: refused(431, HEAD_TOO_LARGE),
        },
        Case { name: "70 headers", bytes: bytes(head(&many)), expect: refused(431, TOO_MANY) },
        Case {
            name: "Content-Length over the body limit",
            bytes: bytes(head(&format!("Content-Length: {}\r\n", max_body + 1))),
            expect: refused(413, BODY_TOO_LARGE),
        },
        Case {
            name: "Content-Length beyond 64 bits",
            bytes: bytes(head("Content-Length: 99999999999999999999999\r\n")),
            expect: refused(400, BAD_LENGTH),
        },
        Case {
            name: "negative Content-Length",
            bytes: bytes(head("Content-Length: -1\r\n")),
            expect: refused(400, BAD_LENGTH),
        },
        Case {
            name: "signed Content-Length",
            bytes: bytes(head("Content-Length: +0\r\n")),
            expect: refused(400, BAD_LENGTH),
        },
        Case {
            name: "Content-Length as a list",
            bytes: bytes(head("Content-Length: 0, 0\r\n")),
            expect: refused(400, BAD_LENGTH),
        },
        Case {
            name: "duplicate Content-Length (same value)",
            bytes: bytes(head("Content-Length: 0\r\nContent-Length: 0\r\n")),
            expect: refused(400, TWO_LENGTHS),
        },
        Case {
            name: "Content-Length plus Transfer-Encoding",
            bytes: bytes(head("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n")),
            expect: refused(400, LENGTH_AND_TE),
        },
        Case {
            name: "Transfer-Encoding alone",
            bytes: bytes(head("Transfer-Encoding: chunked\r\n")),
            expect: refused(501, TE),
        },
        Case {
            name: "absolute-form target",
            bytes: bytes(head("").replacen(target, &format!("http://localhost{target}"), 1)),
            expect: refused(400, NOT_ORIGIN),
        },
        Case {
            name: "asterisk-form target",
            bytes: bytes(format!("OPTIONS * HTTP/1.1\r\nHost: localhost\r\n{auth}\r\n")),
            expect: refused(400, NOT_ORIGIN),
        },
        Case {
            name: "HTTP/2 connection preface",
            bytes: b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
            expect: refused(505, VERSION),
        },
        Case {
            name: "HTTP/1.2",
            bytes: bytes(head("").replacen("HTTP/1.1", "HTTP/1.2", 1)),
            expect: refused(505, VERSION),
        },
        Case {
            name: "HTTP/1.1 without Host",
            bytes: bytes(format!("{line} HTTP/1.1\r\n{auth}\r\n")),
            expect: refused(400, NO_HOST),
        },
        Case {
            name: "two Host headers",
            bytes: bytes(head("Host: localhost\r\n")),
            expect: refused(400, TWO_HOSTS),
        },
        Case {
            name: "unsupported Expect",
            bytes: bytes(head("Expect: 200-ok\r\n")),
            expect: refused(417, EXPECTATION),
        },
        Case {
            name: "pipelined: a good request, then garbage",
            bytes: bytes(format!("{harmless_head}{method}  {target} HTTP/1.1\r\n\r\n")),
            expect: Expect::Answers(vec![(ok, None), (400, Some(MALFORMED_LINE))]),
        },
        Case {
            name: "pipelined: nothing is read after Connection: close",
            bytes: bytes(format!(
                "{}{}",
                harmless_head.replacen("\r\n\r\n", "\r\nConnection: close\r\n\r\n", 1),
                head("")
            )),
            expect: Expect::Answers(vec![(ok, None)]),
        },
        Case {
            name: "pipelined: a request hidden in a body is only a body",
            bytes: {
                let hidden = head("");
                let carrier = harmless_head.replacen(
                    "\r\n\r\n",
                    &format!("\r\nConnection: close\r\nContent-Length: {}\r\n\r\n", hidden.len()),
                    1,
                );
                bytes(format!("{carrier}{hidden}"))
            },
            expect: Expect::Answers(vec![(ok, None)]),
        },
    ]
}

/// Checks one exchange against its expectation; `message` pulls the error text from a body.
fn judge(case: &str, got: &Exchange, expect: &Expect, message: fn(&[u8]) -> String) {
    assert!(got.closed, "{case}: the server must close the connection, it fell silent: {got:?}");
    match expect {
        Expect::Answers(answers) => {
            let responses = got.responses();
            let statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
            let wanted: Vec<u16> = answers.iter().map(|a| a.0).collect();
            assert_eq!(statuses, wanted, "{case}: {}", String::from_utf8_lossy(&got.raw));
            for (response, (_, text)) in responses.iter().zip(answers) {
                if let Some(text) = text {
                    assert_eq!(message(&response.body), *text, "{case}");
                }
            }
            let last = responses.last().unwrap();
            assert_eq!(last.header("connection"), Some("close"), "{case}");
            assert!(got.elapsed < SLACK, "{case}: answered after {:?}", got.elapsed);
        }
        Expect::Cut { after } => {
            assert!(got.raw.is_empty(), "{case}: expected no answer, got {:?}", got.raw);
            assert!(
                got.elapsed + Duration::from_millis(300) >= *after && got.elapsed <= *after + SLACK,
                "{case}: cut after {:?}, the deadline is {after:?}",
                got.elapsed
            );
        }
        Expect::Alert(description) => {
            // One record and nothing else: ContentType alert(21), any record version, length 2,
            // level fatal(2).
            assert_eq!(got.raw.len(), 7, "{case}: expected one TLS alert, got {:?}", got.raw);
            assert_eq!(
                (got.raw[0], got.raw[3], got.raw[4], got.raw[5], got.raw[6]),
                (21, 0, 2, 2, *description),
                "{case}: {:?}",
                got.raw
            );
            assert!(got.elapsed < SLACK, "{case}: alert after {:?}", got.elapsed);
        }
        Expect::Dropped => {
            assert!(got.raw.is_empty(), "{case}: expected no answer, got {:?}", got.raw);
            assert!(got.elapsed < SLACK, "{case}: closed after {:?}", got.elapsed);
        }
    }
}

fn exception_message(body: &[u8]) -> String {
    let json: serde_json::Value = serde_json::from_slice(body).unwrap();
    json["Errors"][0].as_str().unwrap().to_owned()
}

fn admin_message(body: &[u8]) -> String {
    let json: serde_json::Value = serde_json::from_slice(body).unwrap();
    json["message"].as_str().unwrap().to_owned()
}

/// A valid key works and is answered at once: no worker is stuck.
fn assert_still_serving(server: &mut Server, key: &str) {
    assert!(server.is_running(), "the server died:\n{}", server.log());
    let started = Instant::now();
    let response = server.get_with_key("/HOSTILE/after", key);
    assert_eq!(response.status, 404, "an admitted request reaches the API");
    assert!(started.elapsed() < Duration::from_secs(1), "served after {:?}", started.elapsed());
    assert_eq!(server.admin("GET", "/health").0, 200);
    assert!(!server.log().contains("panicked"), "{}", server.log());
}

#[test]
fn hostile_http_on_the_api_port_never_reaches_a_handler() {
    let mut server = hostile_server();
    let key = server.generate_key();
    let auth = Server::credentials(&key);
    for case in http_cases("GET /HOSTILE", &auth, "/HOSTILE/harmless", 404, 16384) {
        let got = server.tls_exchange(&case.bytes, PATIENCE);
        judge(case.name, &got, &case.expect, exception_message);
    }
    assert_still_serving(&mut server, &key);
}

#[test]
fn hostile_http_on_the_admin_port_never_reaches_a_handler() {
    let mut server = hostile_server();
    let max_body = 256 * 1024 * 1024;
    for case in http_cases("POST /key", "User-Agent: hostile\r\n", "/health", 200, max_body) {
        let got = tcp_exchange(server.admin, &case.bytes, PATIENCE);
        judge(case.name, &got, &case.expect, admin_message);
    }
    // Had any of them reached the handler, a key would exist now.
    assert_eq!(server.admin("GET", "/key").1["state"], "none");
    let key = server.generate_key();
    assert_still_serving(&mut server, &key);
}

/// Cipher suites a TLS 1.0 client offers (ECDHE and RSA with AES-CBC and SHA-1).
const OLD_SUITES: &[u16] = &[0xc013, 0xc009, 0x002f, 0x0035];
/// TLS 1.2 suites rustls serves (ECDHE with AES-128-GCM), to isolate the version.
const MODERN_SUITES: &[u16] = &[0xc02f, 0xc02b];

/// A ClientHello offering only `version` (0x0301 TLS 1.0, 0x0302 TLS 1.1, 0x0303 TLS 1.2)
/// and `suites`, without a `supported_versions` extension, as an old client sends it.
pub fn client_hello(version: u16, suites: &[u16]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&version.to_be_bytes());
    body.extend_from_slice(&[7u8; 32]); // random
    body.push(0); // session id
    body.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
    for suite in suites {
        body.extend_from_slice(&suite.to_be_bytes());
    }
    body.extend_from_slice(&[1, 0]); // compression: null
    let extensions: &[u8] = &[
        0x00, 0x0a, 0x00, 0x04, 0x00, 0x02, 0x00, 0x17, // supported_groups: secp256r1
        0x00, 0x0b, 0x00, 0x02, 0x01, 0x00, // ec_point_formats: uncompressed
        0x00, 0x0d, 0x00, 0x04, 0x00, 0x02, 0x04, 0x03, // signature_algorithms: ecdsa p256
    ];
    body.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
    body.extend_from_slice(extensions);
    let mut handshake = vec![1u8]; // client_hello
    handshake.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&body);
    let mut record = vec![22u8, 0x03, 0x01];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

const ALERT_DECODE_ERROR: u8 = 50;
const ALERT_PROTOCOL_VERSION: u8 = 70;

#[test]
fn hostile_bytes_on_the_tls_port() {
    let mut server = hostile_server();
    let key = server.generate_key();
    let plain_http = "this port speaks HTTPS only: send the request with https://";
    let cases = vec![
        Case {
            name: "plain HTTP on the TLS port",
            bytes: format!(
                "GET / HTTP/1.1\r\nHost: localhost\r\n{}\r\n",
                Server::credentials(&key)
            )
            .into_bytes(),
            expect: refused(400, plain_http),
        },
        Case {
            name: "HTTP/2 preface in the clear",
            bytes: b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
            expect: refused(400, plain_http),
        },
        Case {
            name: "an application-data record before any handshake",
            bytes: vec![23, 3, 3, 0, 5, 1, 2, 3, 4, 5],
            expect: refused(400, plain_http),
        },
        Case {
            name: "a handshake record too short for its message",
            bytes: vec![22, 3, 1, 0, 5, 1, 0, 0, 1, 0],
            expect: Expect::Alert(ALERT_DECODE_ERROR),
        },
        Case {
            // rustls drops these without an alert: there is nothing to tell a peer this broken.
            name: "a handshake message claiming 16 MiB",
            bytes: vec![22, 3, 1, 0, 5, 0xff, 0xff, 0xff, 0xff, 0xff],
            expect: Expect::Dropped,
        },
        Case {
            name: "a TLS 1.0 ClientHello with TLS 1.0 suites",
            bytes: client_hello(0x0301, OLD_SUITES),
            expect: Expect::Alert(ALERT_PROTOCOL_VERSION),
        },
        Case {
            name: "a TLS 1.0 ClientHello with TLS 1.2 suites",
            bytes: client_hello(0x0301, MODERN_SUITES),
            expect: Expect::Alert(ALERT_PROTOCOL_VERSION),
        },
        Case {
            name: "a TLS 1.1 ClientHello with TLS 1.2 suites",
            bytes: client_hello(0x0302, MODERN_SUITES),
            expect: Expect::Alert(ALERT_PROTOCOL_VERSION),
        },
    ];
    for case in cases {
        let got = tcp_exchange(server.api, &case.bytes, PATIENCE);
        judge(case.name, &got, &case.expect, exception_message);
    }
    // The control: the same hello offering TLS 1.2 gets a ServerHello, so the refusals above
    // are the versions' doing.
    let got =
        tcp_exchange(server.api, &client_hello(0x0303, MODERN_SUITES), Duration::from_secs(1));
    assert_eq!((got.raw.first(), got.raw.get(5)), (Some(&22), Some(&2)), "{got:?}");
    assert_still_serving(&mut server, &key);
}

#[test]
fn a_client_offering_only_h2_is_refused_in_the_handshake() {
    let server = hostile_server();
    let mut config = (*server.tls_config()).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let socket = TcpStream::connect(server.api).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let conn = ClientConnection::new(Arc::new(config), name).unwrap();
    let mut stream = StreamOwned::new(conn, socket);
    let err = stream.write_all(b"GET / HTTP/1.1\r\n\r\n").and_then(|()| stream.flush());
    let err = match err {
        Err(e) => e,
        Ok(()) => stream.read(&mut [0u8; 64]).unwrap_err(),
    };
    assert!(err.to_string().contains("NoApplicationProtocol"), "{err}");
}

/// Sends `bytes` one a second on `stream`, the slowloris way, until the server closes.
fn trickle(mut stream: impl Read + Write, bytes: &[u8], period: Duration) -> (bool, Duration) {
    let started = Instant::now();
    for &b in bytes.iter().cycle() {
        if stream.write_all(&[b]).and_then(|()| stream.flush()).is_err() {
            return (true, started.elapsed());
        }
        thread::sleep(period);
        if started.elapsed() > Duration::from_secs(15) {
            return (false, started.elapsed());
        }
        // A closed connection shows on the next read as EOF or an error, not as a timeout.
        let mut probe = [0u8; 1];
        match stream.read(&mut probe) {
            Ok(_) => return (true, started.elapsed()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return (true, started.elapsed()),
        }
    }
    (false, started.elapsed())
}

#[test]
fn silent_truncated_and_slow_clients_are_cut_off_at_their_deadlines() {
    let mut server = hostile_server();
    let key = server.generate_key();
    let api = server.api;
    let admin = server.admin;
    let mut checks = Vec::new();
    // Nothing at all, on both ports.
    checks.push(("api: a client that sends nothing", HANDSHAKE_TIMEOUT, {
        thread::spawn(move || tcp_exchange(api, b"", Duration::from_secs(10)))
    }));
    // The admin port gives a new connection its header timeout for a whole head (issue 19: a
    // silent client no longer holds an admin worker for the idle timeout).
    checks.push(("admin: a client that sends nothing", HEADER_TIMEOUT, {
        thread::spawn(move || tcp_exchange(admin, b"", Duration::from_secs(10)))
    }));
    // A TLS record header that promises 512 bytes and sends 10.
    checks.push(("api: a truncated TLS record", HANDSHAKE_TIMEOUT, {
        let bytes = [22, 3, 1, 2, 0, 1, 0, 1, 252, 3, 3, 0, 0, 0, 0];
        thread::spawn(move || tcp_exchange(api, &bytes, Duration::from_secs(10)))
    }));
    // An HTTP head cut short on the admin port is told why when its deadline comes (408).
    let unfinished = {
        let bytes = b"GET /health HTTP/1.1\r\nHost: localhost\r\n".to_vec();
        thread::spawn(move || tcp_exchange(admin, &bytes, Duration::from_secs(10)))
    };
    // After an answer, a keep-alive admin connection waits the idle timeout for its next head.
    let kept_alive = {
        let bytes = b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec();
        thread::spawn(move || tcp_exchange(admin, &bytes, Duration::from_secs(10)))
    };
    for (name, deadline, handle) in checks {
        let got = handle.join().unwrap();
        judge(name, &got, &Expect::Cut { after: deadline }, exception_message);
    }
    let got = kept_alive.join().unwrap();
    let statuses: Vec<u16> = got.responses().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200], "admin: kept alive: {got:?}");
    assert!(
        got.closed
            && got.elapsed + Duration::from_millis(300) >= IDLE_TIMEOUT
            && got.elapsed <= IDLE_TIMEOUT + SLACK,
        "admin: kept alive, closed after {:?}",
        got.elapsed
    );
    let got = unfinished.join().unwrap();
    let statuses: Vec<u16> = got.responses().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [408], "admin: an unfinished head: {got:?}");
    assert!(got.closed, "admin: an unfinished head: closed after its 408");
    assert!(
        got.elapsed + Duration::from_millis(300) >= HEADER_TIMEOUT
            && got.elapsed <= HEADER_TIMEOUT + SLACK,
        "admin: an unfinished head: answered after {:?}",
        got.elapsed
    );

    // A byte a second: a ClientHello on the API port, a request head inside TLS, and a head
    // on the admin port. The deadline runs from the first byte and is never extended.
    let hello = client_hello(0x0303, MODERN_SUITES);
    let slow_tls = {
        let socket = TcpStream::connect(api).unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
        thread::spawn(move || trickle(socket, &hello, Duration::from_secs(1)))
    };
    let slow_head = {
        let mut stream = server.connect();
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock).unwrap();
        }
        stream.sock.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
        let head = format!(
            "GET /HOSTILE HTTP/1.1\r\nHost: localhost\r\n{}\r\n",
            Server::credentials(&key)
        );
        thread::spawn(move || trickle(stream, head.as_bytes(), Duration::from_secs(1)))
    };
    let slow_admin = {
        let socket = TcpStream::connect(admin).unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
        let head = b"POST /key HTTP/1.1\r\nHost: localhost\r\n\r\n".to_vec();
        thread::spawn(move || trickle(socket, &head, Duration::from_secs(1)))
    };
    // Meanwhile everyone else is served at once.
    assert_still_serving(&mut server, &key);
    for (name, handle, deadline) in [
        ("api: a ClientHello a byte a second", slow_tls, HANDSHAKE_TIMEOUT),
        ("api: a request head a byte a second", slow_head, HEADER_TIMEOUT),
        ("admin: a request head a byte a second", slow_admin, HEADER_TIMEOUT),
    ] {
        let (closed, after) = handle.join().unwrap();
        assert!(closed, "{name}: still open after {after:?}");
        // Closing is noticed on the next byte, up to a second later.
        assert!(after <= deadline + SLACK + Duration::from_secs(1), "{name}: cut after {after:?}");
    }
    assert_eq!(server.admin("GET", "/key").1["generation"], 1, "the slow POST /key did nothing");
    assert_still_serving(&mut server, &key);
}
