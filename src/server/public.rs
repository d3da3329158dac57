//! The public port: a readiness-based event loop per worker thread, HTTPS only.
//!
//! Each worker owns a `mio` poll, a clone of the listening socket and the connections it
//! accepted, and runs every connection to completion on its own thread: TLS through rustls'
//! `ServerConnection`, requests through [`crate::http`], credentials through the gate, answers
//! through [`crate::api`]. Handlers are in-memory and short, so no hand-off is needed, and an
//! idle connection costs its buffers, not a thread; that is how 1,000 idle TLS clients fit in a
//! few tens of MiB and how a slowloris client costs nothing but a slot until its deadline.
//!
//! Every connection has one deadline, set by its stage: the handshake timeout from accept, the
//! header timeout from a request's first byte (never extended by a trickle), the idle timeout
//! between requests or while the client does not read. At `max_connections` the quietest
//! connection that owes nobody an answer (idle between requests, or still in its handshake) is
//! closed to make room; if every connection is mid-request, new clients wait in the listen
//! backlog. Plain HTTP on this port gets one `400` in plain HTTP and the connection is
//! closed before anything else is read.

use std::io::{self, BufRead, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use rustls::{HandshakeKind, ServerConnection};
use slab::Slab;
use zeroize::{Zeroize, Zeroizing};

use crate::api;
use crate::app::App;
use crate::config::HttpLimits;
use crate::gate;
use crate::http::{self, DateCache, MAX_HEADERS, Method, Parsed, Response, Status};
use crate::log::{Peer, Refused};
use crate::metrics::{ApiRoute, Reason, Shard};
use crate::throttle::Verdict;

const LISTENER: Token = Token(usize::MAX);
/// The first byte of every TLS handshake record (RFC 8446 §5.1, `handshake(22)`).
const TLS_HANDSHAKE: u8 = 0x16;
/// How long to drain a closing connection so the kernel does not reset it under the last
/// response (a "lingering close").
const LINGER: Duration = Duration::from_secs(2);
/// Stop answering pipelined requests while this much output waits for the client.
const MAX_PENDING_OUTPUT: usize = 256 * 1024;
/// How often deadlines are checked.
const SWEEP_EVERY: Duration = Duration::from_millis(250);

const PLAIN_HTTP_MESSAGE: &str = "this port speaks HTTPS only: send the request with https://";

/// Runs one worker until the server shuts down.
pub fn run_worker(app: Arc<App>, listener: std::net::TcpListener, id: usize) -> io::Result<()> {
    let mut worker = Worker::new(app, listener, id)?;
    log::debug!("api worker {id} running");
    worker.run()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Accepted; waiting for the first byte to tell TLS from plain HTTP.
    Sniff,
    Handshake,
    /// Between requests on a keep-alive connection.
    Idle,
    /// Part of a request has arrived.
    Request,
    /// The last response is going out; then the write side is shut.
    Closing,
    /// Write side shut; reading and discarding until EOF or the deadline.
    Lingering,
}

struct Conn {
    socket: TcpStream,
    peer: SocketAddr,
    stage: Stage,
    tls: Option<Box<ServerConnection>>,
    /// Plaintext received and not yet answered. It holds the API key of every request, so it is
    /// wiped as requests are consumed, when it grows, and when the connection goes.
    inbuf: Zeroizing<Vec<u8>>,
    deadline: Instant,
    /// When the connection was accepted or last became idle, for choosing whom to close at
    /// the cap.
    idle_since: Instant,
    write_interest: bool,
    /// Whether the socket may hold bytes not yet read. Readiness is edge-triggered: a read
    /// that came back short (or would block) drained the socket, and anything arriving later
    /// raises a new event, so until then another read would only return `EAGAIN`. Skipping
    /// it saves a system call per request.
    unread: bool,
}

/// Why a connection ends.
enum End {
    /// Drop it now (errors, timeouts, EOF).
    Now,
    /// Shut the write side and linger.
    Linger,
}

struct Worker {
    id: usize,
    app: Arc<App>,
    poll: Poll,
    /// `None` once draining: the port is closed to new clients.
    listener: Option<TcpListener>,
    /// Set when shutdown began: the time by which in-flight requests must be done.
    drain_deadline: Option<Instant>,
    conns: Slab<Conn>,
    date: DateCache,
    out: Vec<u8>,
    accept_paused: bool,
    limits: HttpLimits,
}

impl Worker {
    fn new(app: Arc<App>, listener: std::net::TcpListener, id: usize) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        let mut listener = TcpListener::from_std(listener);
        let poll = Poll::new()?;
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        let limits = app.config.api.limits;
        Ok(Self {
            id,
            app,
            poll,
            listener: Some(listener),
            drain_deadline: None,
            conns: Slab::with_capacity(64),
            date: DateCache::default(),
            out: Vec::with_capacity(16 * 1024),
            accept_paused: false,
            limits,
        })
    }

    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(256);
        let mut next_sweep = Instant::now() + SWEEP_EVERY;
        loop {
            let timeout = next_sweep.saturating_duration_since(Instant::now());
            if let Err(e) = self.poll.poll(&mut events, Some(timeout))
                && e.kind() != io::ErrorKind::Interrupted
            {
                return Err(e);
            }
            for event in &events {
                match event.token() {
                    LISTENER => self.accept(),
                    Token(key) => {
                        // A peer's FIN may have come with the data that a short read took: then
                        // the event says so, and the next read must happen to see the EOF.
                        if let Some(conn) = self.conns.get_mut(key)
                            && (event.is_readable() || event.is_read_closed() || event.is_error())
                        {
                            conn.unread = true;
                        }
                        self.drive(key);
                    }
                }
            }
            let now = Instant::now();
            if now >= next_sweep {
                self.sweep(now);
                next_sweep = now + SWEEP_EVERY;
            }
            self.app.heartbeat(self.id);
            if self.drain_deadline.is_none() && self.app.shutting_down.load(Ordering::Relaxed) {
                self.begin_drain(now);
            }
            if let Some(deadline) = self.drain_deadline {
                if self.conns.is_empty() {
                    return Ok(());
                }
                if now >= deadline {
                    log::warn!(
                        "api worker {}: {} connection(s) still busy at the shutdown deadline",
                        self.id,
                        self.conns.len()
                    );
                    return Ok(());
                }
            }
        }
    }

    /// Stops accepting and closes every connection with no request in flight. The rest
    /// finish their current request, answered with `Connection: close`.
    fn begin_drain(&mut self, now: Instant) {
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        self.drain_deadline = Some(now + self.app.config.api.shutdown_timeout);
        let idle: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| matches!(c.stage, Stage::Sniff | Stage::Handshake | Stage::Idle))
            .map(|(key, _)| key)
            .collect();
        for key in idle {
            self.close(key);
        }
    }

    fn accept(&mut self) {
        loop {
            if self.listener.is_none() {
                return;
            }
            if self.at_capacity() && self.quietest().is_none() {
                // Everyone is busy: leave the rest in the backlog until a slot frees.
                self.accept_paused = true;
                return;
            }
            let Some(listener) = self.listener.as_ref() else { return };
            match listener.accept() {
                Ok((socket, peer)) => {
                    // Only now, with a client really waiting, is a slot worth freeing: making
                    // room before the accept would close a connection whenever the cap is
                    // merely reached, the just-admitted one included.
                    if self.at_capacity()
                        && let Some(key) = self.quietest()
                    {
                        self.evict(key);
                    }
                    self.admit(socket, peer);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: the backlog keeps the client; try again on the next
                    // sweep rather than spin.
                    log::warn!("accept on the api port failed: {e}");
                    self.accept_paused = true;
                    return;
                }
            }
        }
        self.accept_paused = false;
    }

    fn at_capacity(&self) -> bool {
        self.app.open_connections.load(Ordering::Relaxed) >= self.app.config.api.max_connections
    }

    /// This worker's quietest connection that owes nobody an answer: a keep-alive connection
    /// between requests, or one still in its handshake, whichever has waited longest (since it
    /// went idle, or since it was accepted). Closing it costs its client nothing but a
    /// reconnect, as its timeout would. Counting handshakes matters: otherwise a few thousand
    /// half-open connections, which cost an attacker nothing, would hold every slot until the
    /// handshake timeout while real clients waited in the backlog.
    fn quietest(&self) -> Option<usize> {
        self.conns
            .iter()
            .filter(|(_, c)| matches!(c.stage, Stage::Sniff | Stage::Handshake | Stage::Idle))
            .min_by_key(|(_, c)| c.idle_since)
            .map(|(key, _)| key)
    }

    fn evict(&mut self, key: usize) {
        if let Some(conn) = self.conns.get(key) {
            log::debug!("closing {} ({:?}) to make room at the cap", conn.peer, conn.stage);
        }
        self.discard(key);
    }

    fn admit(&mut self, mut socket: TcpStream, peer: SocketAddr) {
        let _ = socket.set_nodelay(true);
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if let Err(e) = self.poll.registry().register(&mut socket, Token(key), Interest::READABLE) {
            log::warn!("cannot watch a connection from {peer}: {e}");
            return;
        }
        let now = Instant::now();
        entry.insert(Conn {
            socket,
            peer,
            stage: Stage::Sniff,
            tls: None,
            inbuf: Zeroizing::new(Vec::new()),
            deadline: now + self.app.config.api.handshake_timeout,
            idle_since: now,
            write_interest: false,
            unread: true,
        });
        self.app.open_connections.fetch_add(1, Ordering::Relaxed);
        // The client may have written already; with edge-triggered readiness that first edge
        // could predate the registration, so look now.
        self.drive(key);
    }

    /// Closes a connection and, if new clients were left waiting for a slot, takes them in.
    fn close(&mut self, key: usize) {
        self.discard(key);
        if self.accept_paused {
            self.accept();
        }
    }

    fn discard(&mut self, key: usize) {
        if let Some(mut conn) = self.conns.try_remove(key) {
            // Errors, timeouts and clients giving up all end a handshake here.
            if conn.stage == Stage::Handshake {
                self.app.metrics.api(self.id).handshake_failure();
            }
            let _ = self.poll.registry().deregister(&mut conn.socket);
            self.app.open_connections.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn sweep(&mut self, now: Instant) {
        let expired: Vec<usize> =
            self.conns.iter().filter(|(_, c)| c.deadline <= now).map(|(key, _)| key).collect();
        for key in expired {
            if let Some(conn) = self.conns.get(key) {
                log::debug!("closing {} at its {:?} deadline", conn.peer, conn.stage);
            }
            self.close(key);
        }
        self.app.refusals.flush();
        if self.accept_paused {
            self.accept();
        }
    }

    /// Moves one connection as far as it can go without blocking.
    fn drive(&mut self, key: usize) {
        let outcome = match self.conns.get_mut(key) {
            Some(conn) => {
                let mut turn = Turn {
                    app: &self.app,
                    shard: self.app.metrics.api(self.id),
                    limits: &self.limits,
                    date: &mut self.date,
                    out: &mut self.out,
                };
                step(conn, &mut turn)
            }
            None => return,
        };
        match outcome {
            Ok(()) => self.update_interest(key),
            Err(End::Now) => self.close(key),
            Err(End::Linger) => {
                let Some(conn) = self.conns.get_mut(key) else { return };
                let _ = conn.socket.shutdown(Shutdown::Write);
                conn.stage = Stage::Lingering;
                conn.deadline = Instant::now() + LINGER;
                self.drive(key);
            }
        }
    }

    fn update_interest(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else { return };
        let wants_write = conn.tls.as_ref().is_some_and(|t| t.wants_write());
        if wants_write == conn.write_interest {
            return;
        }
        let interest =
            if wants_write { Interest::READABLE | Interest::WRITABLE } else { Interest::READABLE };
        conn.write_interest = wants_write;
        if self.poll.registry().reregister(&mut conn.socket, Token(key), interest).is_err() {
            self.close(key);
        }
    }
}

/// What a worker lends a connection for one turn.
struct Turn<'w> {
    app: &'w App,
    shard: &'w Shard,
    limits: &'w HttpLimits,
    date: &'w mut DateCache,
    out: &'w mut Vec<u8>,
}

/// One connection's work until it would block. `Ok` keeps it open.
fn step(conn: &mut Conn, turn: &mut Turn<'_>) -> Result<(), End> {
    let limits = turn.limits;
    match conn.stage {
        Stage::Sniff => sniff(conn, turn)?,
        Stage::Lingering => return linger(conn),
        _ => {}
    }
    loop {
        let Some(tls) = conn.tls.as_deref_mut() else { return Ok(()) };
        let wrote = flush(tls, &mut conn.socket)?;
        if tls.wants_write() {
            // The client is not reading: wait, but not forever. Only a write it takes buys it
            // more time; bytes it keeps sending while taking none do not (a slow reader that
            // trickles requests would otherwise hold its slot for ever). A handshake keeps the
            // deadline it was given at accept, however its flights go.
            if wrote && conn.stage != Stage::Handshake {
                conn.deadline = Instant::now() + limits.idle_timeout;
            }
            return Ok(());
        }
        if conn.stage == Stage::Closing {
            return Err(End::Linger);
        }
        if answer_buffered(conn, turn)? {
            continue;
        }
        let Some(tls) = conn.tls.as_deref_mut() else { return Ok(()) };
        match receive(tls, &mut conn.socket, &mut conn.unread, &mut conn.inbuf, limits)? {
            Received::Nothing => return Ok(()),
            Received::Data => note_progress(conn, turn),
        }
    }
}

fn sniff(conn: &mut Conn, turn: &Turn<'_>) -> Result<(), End> {
    let app = turn.app;
    let mut first = [0u8; 1];
    match conn.socket.peek(&mut first) {
        Ok(0) => Err(End::Now),
        Ok(_) if first[0] == TLS_HANDSHAKE => {
            let tls = ServerConnection::new(app.tls_config()).map_err(|_| End::Now)?;
            let mut tls = Box::new(tls);
            // Output is bounded by when requests are answered, not by rustls' buffer limit,
            // so a large response is queued whole and written out as the client reads.
            tls.set_buffer_limit(None);
            conn.tls = Some(tls);
            conn.stage = Stage::Handshake;
            Ok(())
        }
        Ok(_) => {
            // Plain HTTP (or anything else) on the TLS port: say so once, in the clear, and
            // close. Nothing of the request is parsed or reaches a handler.
            app.refusals.refused(Refused {
                port: "api",
                peer: Peer::Address(conn.peer.ip()),
                reason: "plain HTTP on the HTTPS port",
                status: 400,
                fingerprint: None,
            });
            turn.shard.refusal(Reason::PlainHttp);
            turn.shard.api_request(ApiRoute::Invalid, 400, Duration::ZERO);
            let mut out = Vec::with_capacity(256);
            let response = api::error(Status::BAD_REQUEST, PLAIN_HTTP_MESSAGE);
            response.write_to(
                &mut out,
                &httpdate::fmt_http_date(std::time::SystemTime::now()),
                false,
                false,
            );
            // One small write into an empty socket buffer; if even that fails, the client is
            // gone and there is nobody to tell.
            let _ = conn.socket.write(&out);
            Err(End::Linger)
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
        Err(_) => Err(End::Now),
    }
}

fn linger(conn: &mut Conn) -> Result<(), End> {
    let mut sink = [0u8; 4096];
    loop {
        match conn.socket.read(&mut sink) {
            Ok(0) => return Err(End::Now),
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(_) => return Err(End::Now),
        }
    }
}

/// Writes what rustls has queued until the socket takes no more. Returns whether it took any.
fn flush(tls: &mut ServerConnection, socket: &mut TcpStream) -> Result<bool, End> {
    let mut wrote = false;
    while tls.wants_write() {
        match tls.write_tls(socket) {
            Ok(n) => wrote |= n > 0,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(wrote),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(End::Now),
        }
    }
    Ok(wrote)
}

enum Received {
    Nothing,
    Data,
}

/// Reads what the socket has into rustls and what rustls decrypted into `inbuf`.
fn receive(
    tls: &mut ServerConnection,
    socket: &mut TcpStream,
    unread: &mut bool,
    inbuf: &mut Zeroizing<Vec<u8>>,
    limits: &HttpLimits,
) -> Result<Received, End> {
    // Leave room for one whole request; the parser refuses anything larger before this fills.
    let cap =
        limits.max_header_bytes + usize::try_from(limits.max_body_bytes).unwrap_or(usize::MAX);
    if drain_plaintext(tls, inbuf, cap)? {
        return Ok(Received::Data);
    }
    if !*unread {
        return Ok(Received::Nothing);
    }
    let mut source = ShortReads { socket, short: false };
    let read = tls.read_tls(&mut source);
    if source.short {
        *unread = false;
    }
    match read {
        Ok(0) => Err(End::Now),
        Ok(_) => {
            if let Err(e) = tls.process_new_packets() {
                log::debug!("tls error: {e}");
                // rustls queued an alert saying why; send it, then go.
                let _ = tls.write_tls(socket);
                return Err(End::Now);
            }
            drain_plaintext(tls, inbuf, cap)?;
            Ok(Received::Data)
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            *unread = false;
            Ok(Received::Nothing)
        }
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(Received::Data),
        Err(_) => Err(End::Now),
    }
}

/// The socket, noting whether its last read returned less than asked (so it is drained).
struct ShortReads<'s> {
    socket: &'s mut TcpStream,
    short: bool,
}

impl Read for ShortReads<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.socket.read(buf)?;
        self.short = n > 0 && n < buf.len();
        Ok(n)
    }
}

/// Moves decrypted bytes into `inbuf`, up to `cap`, straight from rustls' own buffer (no
/// intermediate copy). Returns whether any moved.
fn drain_plaintext(
    tls: &mut ServerConnection,
    inbuf: &mut Zeroizing<Vec<u8>>,
    cap: usize,
) -> Result<bool, End> {
    let mut moved = false;
    while inbuf.len() < cap {
        let mut reader = tls.reader();
        let chunk = match reader.fill_buf() {
            Ok([]) => return if moved { Ok(true) } else { Err(End::Now) },
            Ok(chunk) => chunk,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(_) => return Err(End::Now),
        };
        let n = chunk.len().min(cap - inbuf.len());
        extend_wiping(inbuf, &chunk[..n]);
        reader.consume(n);
        moved = true;
    }
    Ok(moved)
}

fn extend_wiping(buf: &mut Zeroizing<Vec<u8>>, data: &[u8]) {
    let needed = buf.len() + data.len();
    if needed > buf.capacity() {
        let mut bigger =
            Zeroizing::new(Vec::with_capacity(needed.max(buf.capacity() * 2).max(4096)));
        bigger.extend_from_slice(buf);
        *buf = bigger;
    }
    buf.extend_from_slice(data);
}

/// Removes the first `consumed` bytes, wiping them and the stale copies that shifting the rest
/// down leaves past the new end.
fn consume_wiping(buf: &mut Zeroizing<Vec<u8>>, consumed: usize) {
    if consumed == buf.len() {
        // The usual case (no pipelined bytes behind): nothing to shift. Only the bytes in
        // use: the spare capacity holds nothing (every shift below wipes what it leaves).
        buf.as_mut_slice().zeroize();
        buf.clear();
        return;
    }
    let old_len = buf.len();
    buf[..consumed].zeroize();
    buf.drain(..consumed);
    let new_len = buf.len();
    // Within capacity: zeros over the stale tail, no reallocation.
    buf.resize(old_len, 0);
    buf.truncate(new_len);
}

/// After bytes arrive: the handshake may be done, or a request may have begun.
fn note_progress(conn: &mut Conn, turn: &Turn<'_>) {
    let limits = turn.limits;
    let now = Instant::now();
    let handshaken = conn.tls.as_ref().filter(|t| !t.is_handshaking());
    if let (Stage::Handshake, Some(tls)) = (conn.stage, handshaken) {
        turn.shard.handshake(tls.handshake_kind() == Some(HandshakeKind::Resumed));
        conn.stage = Stage::Idle;
        conn.idle_since = now;
        conn.deadline = now + limits.idle_timeout;
    }
    if conn.stage == Stage::Idle && !conn.inbuf.is_empty() {
        conn.stage = Stage::Request;
        conn.deadline = now + limits.header_timeout;
    }
}

/// Answers every whole request in the buffer (pipelining), in order, until the output queued
/// for this client reaches [`MAX_PENDING_OUTPUT`]. Returns whether anything was answered.
fn answer_buffered(conn: &mut Conn, turn: &mut Turn<'_>) -> Result<bool, End> {
    let (app, limits) = (turn.app, turn.limits);
    if !matches!(conn.stage, Stage::Idle | Stage::Request) {
        return Ok(false);
    }
    let Some(tls) = conn.tls.as_deref_mut() else { return Ok(false) };
    let mut consumed = 0;
    let mut queued = 0;
    let mut close = false;
    while consumed < conn.inbuf.len() && queued < MAX_PENDING_OUTPUT {
        let buf = &conn.inbuf[consumed..];
        // The header table borrows the buffer it indexes, so each parse takes a fresh one;
        // 100 empty entries cost less to fill than a request costs to answer.
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let out = &mut *turn.out;
        out.clear();
        let used = match http::parse(buf, &mut headers, limits) {
            Ok(Parsed::Partial) => break,
            Ok(Parsed::Complete(request, head_len)) => {
                let body_len = usize::try_from(request.content_length).unwrap_or(usize::MAX);
                if buf.len() - head_len < body_len {
                    break; // the body is still on its way
                }
                let started = Instant::now();
                let (response, route) = respond(app, turn.shard, &request, conn.peer);
                let keep_alive = request.keep_alive
                    && !response.close
                    && !app.shutting_down.load(Ordering::Relaxed);
                let head_only = request.method == Method::Head;
                response.write_to(out, turn.date.now(), head_only, keep_alive);
                turn.shard.api_request(route, response.status.0, started.elapsed());
                close = !keep_alive;
                head_len + body_len
            }
            Err(e) => {
                app.refusals.refused(Refused {
                    port: "api",
                    peer: Peer::Address(conn.peer.ip()),
                    reason: e.code(),
                    status: e.status().0,
                    fingerprint: None,
                });
                turn.shard.refusal(Reason::BadRequest);
                turn.shard.api_request(ApiRoute::Invalid, e.status().0, Duration::ZERO);
                api::error(e.status(), &e.to_string()).write_to(out, turn.date.now(), false, false);
                close = true;
                buf.len()
            }
        };
        tls.writer().write_all(out).map_err(|_| End::Now)?;
        queued += out.len();
        consumed += used;
        if close {
            break;
        }
    }
    if consumed == 0 {
        return Ok(false);
    }
    consume_wiping(&mut conn.inbuf, consumed);
    let now = Instant::now();
    if close {
        tls.send_close_notify();
        conn.stage = Stage::Closing;
    } else if conn.inbuf.is_empty() {
        conn.stage = Stage::Idle;
        conn.idle_since = now;
        conn.deadline = now + limits.idle_timeout;
    } else {
        // The next request has begun: its clock starts now.
        conn.stage = Stage::Request;
        conn.deadline = now + limits.header_timeout;
    }
    Ok(true)
}

/// Gate, then route. A refused request is counted against its address, and past the limit
/// answered 429 instead (see [`crate::throttle`]); valid credentials are never throttled.
fn respond(
    app: &App,
    shard: &Shard,
    request: &http::Request<'_>,
    peer: SocketAddr,
) -> (Response, ApiRoute) {
    if let Err(refusal) = app.gate.check(request) {
        let verdict = app.throttle.refused(peer.ip(), Instant::now());
        let response = match verdict {
            Verdict::Refuse => api::error(refusal.status(), &refusal.client_message()),
            Verdict::Throttle { retry_after_secs } => {
                shard.refusal(Reason::Throttled);
                throttled(retry_after_secs)
            }
        };
        app.refusals.refused(Refused {
            port: "api",
            peer: Peer::Address(peer.ip()),
            reason: refusal.reason(),
            status: response.status.0,
            fingerprint: gate::presented_fingerprint(request),
        });
        shard.refusal(Reason::from(refusal));
        return (response, ApiRoute::Refused);
    }
    let response = api::route(app, request);
    if response.status == Status::INTERNAL_SERVER_ERROR {
        log::error!("api answered 500 to {} {}", peer.ip(), request.path);
    }
    (response, api::metrics_route(request.path))
}

/// The 429 for a throttled address. It closes the connection, so each further guess costs the
/// guesser a TLS handshake too.
fn throttled(retry_after_secs: u64) -> Response {
    let message = format!(
        "too many refused requests from this address: retry after {retry_after_secs} seconds \
         (requests with a valid API key and activation code are not affected)"
    );
    api::error(Status::TOO_MANY_REQUESTS, &message)
        .header("retry-after", retry_after_secs.to_string())
        .closing()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consuming_keeps_the_rest_in_place() {
        let mut buf = Zeroizing::new(Vec::new());
        extend_wiping(&mut buf, b"first-request|second");
        let capacity = buf.capacity();
        consume_wiping(&mut buf, 14);
        assert_eq!(&buf[..], b"second");
        // No reallocation (which would free the old bytes unwiped). That the spare capacity
        // holds zeros cannot be read back without unsafe code, which this crate forbids.
        assert_eq!(buf.capacity(), capacity);
    }

    #[test]
    fn growing_keeps_every_byte() {
        let mut buf = Zeroizing::new(Vec::new());
        let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        for piece in data.chunks(700) {
            extend_wiping(&mut buf, piece);
        }
        assert_eq!(&buf[..], &data[..]);
    }
}
