//! The operator CLI's side of the admin port: one request, one answer, over loopback, on the
//! admin Unix socket when the configuration has one (and it answers), else on the TCP port.
//!
//! Hand-written on `httparse` instead of pulling in an HTTP client crate: the peer is our own
//! server on loopback, the exchange is one request with `Connection: close`, and a general
//! client (redirects, proxies, TLS, pools) would be most of the binary's dependencies for
//! none of its features. Answers are read into a buffer that is wiped on drop, because the
//! answer to `generate` and `replace` holds the key.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use zeroize::Zeroizing;

/// The most the CLI reads of an answer.
const MAX_RESPONSE_BYTES: u64 = 16 * 1024 * 1024;

#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Zeroizing<Vec<u8>>,
}

/// Where the admin port is: its TCP address, and its Unix socket if configured (preferred:
/// its identity check is the kernel's own, and it needs no port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub tcp: SocketAddr,
    pub unix: Option<PathBuf>,
}

impl From<SocketAddr> for Endpoint {
    fn from(tcp: SocketAddr) -> Self {
        Self { tcp, unix: None }
    }
}

impl From<&crate::config::Admin> for Endpoint {
    fn from(admin: &crate::config::Admin) -> Self {
        Self { tcp: admin.listen, unix: admin.unix_socket.clone() }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.unix {
            Some(path) => write!(f, "{} (or unix:{})", self.tcp, path.display()),
            None => self.tcp.fmt(f),
        }
    }
}

#[derive(Debug)]
pub enum ClientError {
    Connect { addr: Endpoint, source: io::Error },
    Exchange { addr: Endpoint, source: io::Error },
    Malformed { addr: Endpoint },
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connect { addr, source } => write!(
                f,
                "cannot reach the admin port at {addr} ({source}): is `aims-api serve` running \
                 with this configuration?"
            ),
            Self::Exchange { addr, source } => {
                write!(f, "the admin port at {addr} did not answer properly: {source}")
            }
            Self::Malformed { addr } => {
                write!(f, "the admin port at {addr} sent an answer that is not HTTP")
            }
        }
    }
}

impl std::error::Error for ClientError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Connect { source, .. } | Self::Exchange { source, .. } => Some(source),
            Self::Malformed { .. } => None,
        }
    }
}

/// A connected admin socket of either kind.
trait Duplex: Read + Write {}
impl<T: Read + Write> Duplex for T {}

/// Connects on the Unix socket if there is one and it answers, else on TCP; with timeouts set.
/// Returns the stream and the `Host` to send.
fn connect(addr: &Endpoint, timeout: Duration) -> io::Result<(Box<dyn Duplex>, String)> {
    if let Some(path) = &addr.unix {
        // Not there, or nobody listening (a server without it, or older): the TCP port.
        if let Ok(stream) = UnixStream::connect(path) {
            stream.set_read_timeout(Some(timeout))?;
            stream.set_write_timeout(Some(timeout))?;
            return Ok((Box::new(stream), "localhost".to_owned()));
        }
    }
    let stream = TcpStream::connect_timeout(&addr.tcp, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    Ok((Box::new(stream), addr.tcp.to_string()))
}

/// Sends `method path` with `body` and reads the whole answer.
pub fn call(
    addr: impl Into<Endpoint>,
    method: &str,
    path: &str,
    body: &mut dyn Read,
    body_len: u64,
    timeout: Duration,
) -> Result<Answer, ClientError> {
    call_capped(addr, method, path, body, body_len, timeout, MAX_RESPONSE_BYTES)
}

/// [`call`] for an answer that may be larger than 16 MiB (a snapshot export): read up to
/// `max_response_bytes`. A longer answer is cut there and reported as malformed.
pub fn call_capped(
    addr: impl Into<Endpoint>,
    method: &str,
    path: &str,
    body: &mut dyn Read,
    body_len: u64,
    timeout: Duration,
    max_response_bytes: u64,
) -> Result<Answer, ClientError> {
    let addr = addr.into();
    let (mut stream, host) = connect(&addr, timeout)
        .map_err(|source| ClientError::Connect { addr: addr.clone(), source })?;
    let exchange = |source| ClientError::Exchange { addr: addr.clone(), source };
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {host}\r\ncontent-length: {body_len}\r\n\
         connection: close\r\nuser-agent: aims-api-cli\r\n\r\n"
    );
    let sent = stream
        .write_all(head.as_bytes())
        .and_then(|()| io::copy(&mut body.take(body_len), &mut stream).map(drop));
    let (raw, read) = read_wiping(&mut (&mut stream).take(max_response_bytes));
    // The server may answer and close before it has read the request (a refused uid, a body
    // too large): the connection is then reset under us, but a whole answer that arrived first
    // is the answer, and it says why far better than "connection reset".
    // Only an answer whose head says how long it is can be told whole when cut by a reset.
    let parsed = parse_answer(&raw);
    if sent.is_err() || read.is_err() {
        if let Some((answer, true)) = parsed {
            return Ok(answer);
        }
        sent.map_err(exchange)?;
        read.map_err(exchange)?;
    }
    parsed.map(|(answer, _)| answer).ok_or(ClientError::Malformed { addr })
}

/// Reads to the end into a buffer that is wiped on drop, and that grows by copying into a new
/// wiped buffer: `read_to_end` would grow it in place, and a reallocation leaves the old bytes
/// (the key, in an answer to generate or replace) in freed memory. What was read before an
/// error is returned with it.
fn read_wiping(reader: &mut impl Read) -> (Zeroizing<Vec<u8>>, io::Result<()>) {
    let mut buf = Zeroizing::new(vec![0u8; 16 * 1024]);
    let mut len = 0;
    loop {
        if len == buf.len() {
            let mut bigger = Zeroizing::new(vec![0u8; buf.len() * 2]);
            bigger[..len].copy_from_slice(&buf[..len]);
            buf = bigger;
        }
        match reader.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                buf.truncate(len);
                return (buf, Err(e));
            }
        }
    }
    buf.truncate(len);
    (buf, Ok(()))
}

/// The answer in `raw`, and whether its length was announced (`Content-Length`).
fn parse_answer(raw: &[u8]) -> Option<(Answer, bool)> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(head_len) = response.parse(raw).ok()? else { return None };
    let status = response.code?;
    let length = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok()?.parse::<usize>().ok());
    let rest = &raw[head_len..];
    let body = match length {
        Some(n) if n <= rest.len() => &rest[..n],
        Some(_) => return None,
        None => rest,
    };
    Some((Answer { status, body: Zeroizing::new(body.to_vec()) }, length.is_some()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_wiping_keeps_every_byte_across_growth() {
        let data: Vec<u8> = (0..40_000u32).map(|i| i as u8).collect();
        let (read, outcome) = read_wiping(&mut &data[..]);
        assert!(outcome.is_ok());
        assert_eq!(&read[..], &data[..]);
    }

    #[test]
    fn answers_parse_and_truncation_is_caught() {
        let (a, announced) =
            parse_answer(b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n{}").unwrap();
        assert!(announced);
        assert_eq!((a.status, a.body.as_slice()), (201, &b"{}"[..]));
        assert!(parse_answer(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n{}").is_none());
        assert!(parse_answer(b"garbage").is_none());
        // Without Content-Length the body runs to the end: a whole answer only at a clean close.
        let (a, announced) = parse_answer(b"HTTP/1.1 200 OK\r\n\r\n{}").unwrap();
        assert_eq!((a.body.as_slice(), announced), (&b"{}"[..], false));
    }
}
