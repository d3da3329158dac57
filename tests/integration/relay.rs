//! A small fault-injecting TLS relay in front of a real upstream `aims-api serve`.
//!
//! It terminates TLS with its own self-signed certificate (the client under test trusts it
//! through `ca_file`), forwards each request to the real server over TLS, and can stop, answer
//! a status of its own instead, trickle the answer a byte at a time, or make a page repeat an
//! application. The data always comes from the real server: the relay only breaks delivery.
//! One request per connection (`connection: close` both ways), one thread per connection.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, ServerConfig, ServerConnection, StreamOwned};

#[derive(Clone, Debug)]
pub enum Fault {
    /// Forward everything.
    None,
    /// Forward `after` requests, then drop every connection at once: the upstream stopped.
    StopAfter(usize),
    /// Answer request number `nth` (from 0) with `status` and this `Retry-After`, unforwarded.
    Status { nth: usize, status: u16, retry_after: Option<&'static str> },
    /// Forward, but send each answer one byte every `delay`.
    Trickle(Duration),
    /// Forward, but in every application page make the second application a copy of the first.
    RepeatApplication,
    /// Forward, but in every application page write the first finding's count as a string.
    StringCount,
    /// Forward, but in every application page give the first application an unknown level.
    UnknownLevel,
    /// Answer every request with a `200` whose body never ends (whitespace, forever).
    Endless,
    /// Before forwarding request number `nth`, import `body` for `date` on the real server's
    /// admin port: a new analysis (or a changed one) arrives in the middle of a pull.
    ImportBefore { nth: usize, admin: SocketAddr, date: &'static str, body: Arc<Vec<u8>> },
}

pub struct Relay {
    pub addr: SocketAddr,
    /// The relay's certificate, PEM, for the client's `ca_file`.
    pub cert: PathBuf,
    /// Requests received (whatever was done with them).
    pub requests: Arc<AtomicUsize>,
    /// Request lines received, in order.
    pub seen: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Relay {
    pub fn start(upstream: SocketAddr, upstream_tls: Arc<ClientConfig>, fault: Fault) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .unwrap();
        let cert = params.self_signed(&key).unwrap();
        let cert_path = dir.path().join("relay.pem");
        std::fs::write(&cert_path, cert.pem()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(cert.der().to_vec())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap();
        let server = Arc::new(server);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (count, lines) = (Arc::clone(&requests), Arc::clone(&seen));
        std::thread::spawn(move || {
            for tcp in listener.incoming() {
                let Ok(tcp) = tcp else { continue };
                let (server, upstream_tls) = (Arc::clone(&server), Arc::clone(&upstream_tls));
                let (count, lines, fault) = (Arc::clone(&count), Arc::clone(&lines), fault.clone());
                std::thread::spawn(move || {
                    let _ = relay_one(tcp, server, upstream, upstream_tls, &fault, &count, &lines);
                });
            }
        });
        Self { addr, cert: cert_path, requests, seen, _dir: dir }
    }

    /// The base URL of the API through the relay.
    pub fn url(&self) -> String {
        format!("https://localhost:{}/AIMentorStudioAPI/rest/v1", self.addr.port())
    }
}

fn relay_one(
    tcp: TcpStream,
    server: Arc<ServerConfig>,
    upstream: SocketAddr,
    upstream_tls: Arc<ClientConfig>,
    fault: &Fault,
    count: &AtomicUsize,
    lines: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    if let Fault::StopAfter(after) = fault
        && count.load(Ordering::SeqCst) >= *after
    {
        // The upstream is gone: the connection dies before a handshake.
        drop(tcp);
        return Ok(());
    }
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let conn = ServerConnection::new(server).map_err(std::io::Error::other)?;
    let mut client = StreamOwned::new(conn, tcp);
    let head = read_head(&mut client)?;
    let nth = count.fetch_add(1, Ordering::SeqCst);
    let request_line = head.lines().next().unwrap_or("").to_owned();
    lines.lock().unwrap().push(request_line.clone());
    if let Fault::ImportBefore { nth: n, admin, date, body } = fault
        && *n == nth
    {
        let path = format!("/snapshots/{date}");
        let answer = crate::util::admin_exchange(*admin, "PUT", &path, body);
        assert!((200..300).contains(&answer.status), "{}", String::from_utf8_lossy(&answer.body));
    }
    if let Fault::Endless = fault {
        client.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n")?;
        let chunk = [b' '; 64 * 1024];
        // Until the client gives up; bounded by the client's own limit, and by 1 GiB here.
        for _ in 0..16 * 1024 {
            client.write_all(&chunk)?;
        }
        return Ok(());
    }
    let answer = match fault {
        Fault::Status { nth: n, status, retry_after } if *n == nth => {
            let body =
                format!(r#"{{"Errors":["injected by the test relay"],"StatusCode":{status}}}"#);
            let mut head =
                format!("HTTP/1.1 {status} Injected\r\ncontent-type: application/json\r\n");
            if let Some(after) = retry_after {
                head.push_str(&format!("retry-after: {after}\r\n"));
            }
            assemble(&head, body.as_bytes())
        }
        _ => {
            let raw = forward(&head, upstream, upstream_tls)?;
            let (status_and_headers, body) = split(&raw);
            let mut body = body.to_vec();
            if matches!(fault, Fault::RepeatApplication)
                && request_line.contains("TechnicalDebt_Application")
            {
                body = repeat_first_application(&body);
            }
            let pointer = match fault {
                Fault::StringCount => Some(("/Applications/0/Findings/0/Count", "7")),
                Fault::UnknownLevel => Some(("/Applications/0/LevelGUID", "no-such-level")),
                _ => None,
            };
            if let Some((pointer, value)) = pointer
                && request_line.contains("TechnicalDebt_Application")
            {
                let mut page: serde_json::Value = serde_json::from_slice(&body).unwrap();
                *page.pointer_mut(pointer).unwrap() = value.into();
                body = page.to_string().into_bytes();
            }
            assemble(&status_and_headers, &body)
        }
    };
    match fault {
        Fault::Trickle(delay) => {
            for byte in answer {
                client.write_all(&[byte])?;
                client.flush()?;
                std::thread::sleep(*delay);
            }
        }
        _ => client.write_all(&answer)?,
    }
    client.conn.send_close_notify();
    client.flush()
}

fn read_head(stream: &mut impl Read) -> std::io::Result<String> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if buf.len() > 64 * 1024 || stream.read(&mut byte)? == 0 {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        buf.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// Sends the request head to the real server, with `connection: close`, and reads it all.
fn forward(
    head: &str,
    upstream: SocketAddr,
    upstream_tls: Arc<ClientConfig>,
) -> std::io::Result<Vec<u8>> {
    let mut lines: Vec<&str> = head.trim_end().split("\r\n").collect();
    lines.retain(|l| !l.to_ascii_lowercase().starts_with("connection:"));
    let request = format!("{}\r\nconnection: close\r\n\r\n", lines.join("\r\n"));
    let tcp = TcpStream::connect(upstream)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let name = ServerName::try_from("localhost").unwrap();
    let conn = ClientConnection::new(upstream_tls, name).map_err(std::io::Error::other)?;
    let mut stream = StreamOwned::new(conn, tcp);
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    match stream.read_to_end(&mut raw) {
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => {}
        Err(e) => return Err(e),
    }
    Ok(raw)
}

/// The status line and headers (without length and connection ones), and the body.
fn split(raw: &[u8]) -> (String, &[u8]) {
    let at = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(raw.len());
    let head = String::from_utf8_lossy(&raw[..at]).into_owned();
    let body = raw.get(at + 4..).unwrap_or(&[]);
    let kept: Vec<&str> = head
        .split("\r\n")
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            !l.starts_with("content-length:") && !l.starts_with("connection:")
        })
        .collect();
    (format!("{}\r\n", kept.join("\r\n")), body)
}

fn assemble(status_and_headers: &str, body: &[u8]) -> Vec<u8> {
    let mut out =
        format!("{status_and_headers}content-length: {}\r\nconnection: close\r\n\r\n", body.len())
            .into_bytes();
    out.extend_from_slice(body);
    out
}

fn repeat_first_application(body: &[u8]) -> Vec<u8> {
    let mut page: serde_json::Value = serde_json::from_slice(body).unwrap();
    if let Some(apps) = page["Applications"].as_array_mut()
        && apps.len() >= 2
    {
        apps[1] = apps[0].clone();
    }
    page.to_string().into_bytes()
}
