//! The admin port: plain HTTP on loopback, one blocking connection per worker thread.
//!
//! Admin traffic is rare and its handlers block on fsync, so a handful of threads each
//! accepting and serving one connection at a time is the simplest design that cannot be starved
//! by the API port: it shares no thread, queue or connection cap with it. Before a byte of the
//! request is read, the client socket's owner is looked up ([`crate::peer`]); anyone not in
//! `allowed_uids` (plus the server's own uid) gets one `403` and is gone. A connection that
//! closes after its answer is handed to one [`Closing`] thread, which waits for the client to
//! close too, so that the answer is not lost to a reset and no worker waits on a client. This
//! file only moves bytes: what a request means, and every refusal's answer, log line and count,
//! is [`crate::admin`]'s.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use zeroize::Zeroize;

use crate::admin::{self, Client};
use crate::app::App;
use crate::http::{self, DateCache, HttpLimits, MAX_HEADERS, Method, Parsed, Response};
use crate::peer;

/// Serves admin connections on `listener` until shutdown, handing the ones it answered and
/// closes to `closing`.
pub fn run_worker(app: Arc<App>, listener: TcpListener, closing: Closing) {
    let own_uid = rustix::process::getuid().as_raw();
    let mut date = DateCache::default();
    loop {
        match listener.accept() {
            Ok((stream, peer)) => {
                if app.shutting_down.load(Ordering::Relaxed) {
                    return;
                }
                serve(&app, stream, peer, own_uid, &mut date, &closing);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                log::warn!("accept on the admin port failed: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn serve(
    app: &App,
    mut stream: TcpStream,
    peer: SocketAddr,
    own_uid: u32,
    date: &mut DateCache,
    closing: &Closing,
) {
    let limits = app.config.admin.limits;
    let _ = stream.set_write_timeout(Some(limits.idle_timeout));
    let local = match stream.local_addr() {
        Ok(local) => local,
        Err(_) => return,
    };
    let uid = match peer::uid_of(peer, local) {
        Ok(uid) => uid,
        Err(e) => {
            send(&mut stream, &admin::refuse_unknown_uid(app, peer, e), date, false, false);
            closing.hand_over(stream);
            return;
        }
    };
    if uid != own_uid && !app.config.admin.allowed_uids.contains(&uid) {
        send(&mut stream, &admin::refuse_uid(app, uid), date, false, false);
        closing.hand_over(stream);
        return;
    }
    let client = Client { uid };
    let mut conn = Conn { stream, buf: Vec::with_capacity(4096), limits };
    loop {
        match conn.serve_one(app, client, date) {
            Ok(Next::KeepAlive) => {}
            Ok(Next::Answered) => {
                closing.hand_over(conn.stream);
                return;
            }
            Ok(Next::Closed) | Err(_) => return,
        }
    }
}

/// How long, and how much, a connection that was answered and is closing may still send; how
/// many such connections are held at once; how often they are looked at.
const LINGER_TIME: Duration = Duration::from_millis(250);
const LINGER_BYTES: usize = 64 * 1024;
const LINGER_MAX: usize = 256;
const LINGER_TICK: Duration = Duration::from_millis(10);

/// Closes connections whose answer is sent without losing that answer, on a thread of its own.
///
/// Closing with request bytes unread makes the kernel reset the connection, and the reset can
/// overtake the answer: a refused uid is answered before its request is read, and the client
/// then reports "connection reset" instead of the 403 that says what to do. So an answered
/// connection gets a FIN at once, and what the client still sends is read and dropped until it
/// closes too, for at most [`LINGER_TIME`] and [`LINGER_BYTES`] (nothing of it is parsed).
/// That wait is this thread's, not a worker's: a client that connects and sends nothing would
/// otherwise hold one of the few admin workers for the whole of it. Past [`LINGER_MAX`]
/// connections closing at once, a new one is closed at once.
#[derive(Clone)]
pub struct Closing {
    queue: mpsc::SyncSender<TcpStream>,
}

impl Closing {
    pub fn start() -> io::Result<Self> {
        let (queue, incoming) = mpsc::sync_channel(LINGER_MAX);
        std::thread::Builder::new()
            .name("admin-closing".into())
            .spawn(move || linger(&incoming))?;
        Ok(Self { queue })
    }

    fn hand_over(&self, stream: TcpStream) {
        if stream.shutdown(Shutdown::Write).is_err() || stream.set_nonblocking(true).is_err() {
            return;
        }
        // Full (or gone at shutdown): the stream is dropped, and closed, here.
        let _ = self.queue.try_send(stream);
    }
}

/// Holds each closing connection until its client closes, it sends too much, or its time is up.
fn linger(incoming: &mpsc::Receiver<TcpStream>) {
    let mut held: Vec<(TcpStream, Instant, usize)> = Vec::new();
    loop {
        let next = if held.is_empty() {
            incoming.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected)
        } else {
            incoming.recv_timeout(LINGER_TICK)
        };
        match next {
            Ok(stream) => hold(&mut held, stream),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
        while let Ok(stream) = incoming.try_recv() {
            hold(&mut held, stream);
        }
        let now = Instant::now();
        held.retain_mut(|(stream, deadline, left)| now < *deadline && drain(stream, left));
    }
}

fn hold(held: &mut Vec<(TcpStream, Instant, usize)>, stream: TcpStream) {
    if held.len() < LINGER_MAX {
        held.push((stream, Instant::now() + LINGER_TIME, LINGER_BYTES));
    }
}

/// Reads and drops what a closing client has sent; whether it is still open and within bounds.
fn drain(stream: &mut TcpStream, left: &mut usize) -> bool {
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return false,
            Ok(n) if n >= *left => return false,
            Ok(n) => *left -= n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

/// What follows an exchange on a connection.
enum Next {
    /// Answered; the connection carries the next request.
    KeepAlive,
    /// Answered, and the connection closes.
    Answered,
    /// The client closed, fell silent or broke the connection: nothing to answer.
    Closed,
}

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    limits: HttpLimits,
}

impl Conn {
    /// Reads, answers and consumes one request.
    fn serve_one(&mut self, app: &App, client: Client, date: &mut DateCache) -> io::Result<Next> {
        let head_len = match self.read_head()? {
            Head::Complete(n) => n,
            Head::Closed => return Ok(Next::Closed),
            Head::Invalid(e) => {
                let response = admin::refuse_malformed(app, client, e);
                send(&mut self.stream, &response, date, false, false);
                return Ok(Next::Answered);
            }
        };
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let (head, rest) = self.buf.split_at(head_len);
        let request = match http::parse(head, &mut headers, &self.limits) {
            Ok(Parsed::Complete(request, _)) => request,
            // read_head parsed this very head already.
            Ok(Parsed::Partial) | Err(_) => return Ok(Next::Closed),
        };
        if request.expects_continue && request.content_length > 0 {
            self.stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        let _ = self.stream.set_read_timeout(Some(self.limits.idle_timeout));
        let mut body = RequestBody {
            prefix: rest,
            prefix_used: 0,
            stream: &mut self.stream,
            remaining: request.content_length,
        };
        let response = admin::handle(app, &request, &mut body, client);
        let drained = body.drain_small();
        let (prefix_used, body_left) = (body.prefix_used, body.remaining);
        let keep_alive = request.keep_alive && !response.close && drained && body_left == 0;
        let head_only = request.method == Method::Head;
        send(&mut self.stream, &response, date, head_only, keep_alive);
        self.buf.drain(..head_len + prefix_used);
        Ok(if keep_alive { Next::KeepAlive } else { Next::Answered })
    }

    /// Reads until a whole head is buffered: the idle timeout for its first byte, then the
    /// header timeout for the rest, in total.
    fn read_head(&mut self) -> io::Result<Head> {
        let mut deadline = None;
        loop {
            if !self.buf.is_empty() {
                deadline.get_or_insert_with(|| Instant::now() + self.limits.header_timeout);
                let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                match http::parse(&self.buf, &mut headers, &self.limits) {
                    Ok(Parsed::Complete(_, n)) => return Ok(Head::Complete(n)),
                    Ok(Parsed::Partial) => {}
                    Err(e) => return Ok(Head::Invalid(e)),
                }
            }
            let wait = match deadline {
                None => self.limits.idle_timeout,
                Some(at) => at.saturating_duration_since(Instant::now()),
            };
            if wait.is_zero() {
                return Ok(Head::Closed);
            }
            self.stream.set_read_timeout(Some(wait))?;
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Ok(Head::Closed),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) =>
                {
                    return Ok(Head::Closed);
                }
                Err(e) => return Err(e),
            }
        }
    }
}

enum Head {
    Complete(usize),
    Closed,
    Invalid(http::ParseError),
}

/// A request body: what was read past the head, then the socket, `Content-Length` in all.
struct RequestBody<'a> {
    prefix: &'a [u8],
    prefix_used: usize,
    stream: &'a mut TcpStream,
    remaining: u64,
}

impl RequestBody<'_> {
    /// Reads and drops what the handler left of a small body, so the connection can carry the
    /// next request. A large leftover is not worth reading: the connection closes instead.
    fn drain_small(&mut self) -> bool {
        if self.remaining > 64 * 1024 {
            return false;
        }
        io::copy(self, &mut io::sink()).is_ok() && self.remaining == 0
    }
}

impl Read for RequestBody<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let want = out.len().min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let unread = &self.prefix[self.prefix_used..];
        let n = if unread.is_empty() {
            let n = self.stream.read(&mut out[..want])?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the client closed the connection mid-body",
                ));
            }
            n
        } else {
            let n = want.min(unread.len());
            out[..n].copy_from_slice(&unread[..n]);
            self.prefix_used += n;
            n
        };
        self.remaining -= n as u64;
        Ok(n)
    }
}

fn send(
    stream: &mut TcpStream,
    response: &Response,
    date: &mut DateCache,
    head_only: bool,
    keep_alive: bool,
) {
    // Room for the whole answer up front: a secret body copied into a buffer that then grew
    // would be left behind, unwiped, in the memory the buffer gave back.
    let mut out = Vec::with_capacity(response.encoded_len_bound());
    response.write_to(&mut out, date.now(), head_only, keep_alive);
    let _ = stream.write_all(&out);
    if response.secret {
        out.zeroize();
    }
}
