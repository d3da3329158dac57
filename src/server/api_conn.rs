//! One API-port connection: TLS through rustls, requests through [`crate::http`], answers
//! from [`crate::api`].
//!
//! A connection is a small state machine ([`Stage`]) driven by its worker whenever its socket
//! is ready, until it would block. Every connection has one deadline, set by its stage: the
//! handshake timeout from accept, the header timeout from a request's first byte (never
//! extended by a trickle), the idle timeout between requests or while the client does not read.
//! Plain HTTP on this port gets one `400` in plain HTTP and the connection is closed before
//! anything else is read. This file moves bytes only: every request, refused or not, is judged,
//! logged and counted by [`crate::api`].

use std::io::{self, BufRead, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use rustls::{HandshakeKind, ServerConnection};
use zeroize::{Zeroize, Zeroizing};

use crate::api;
use crate::app::App;
use crate::http::{self, DateCache, HeaderTable, HttpLimits, Method, Parsed, Response};
use crate::metrics::Shard;
use crate::refusals::RefusalLog;

/// The first byte of every TLS handshake record (RFC 8446 §5.1, `handshake(22)`).
const TLS_HANDSHAKE: u8 = 0x16;
/// How long plain HTTP may take to send its head before it is answered anyway.
const PLAIN_HEAD_TIMEOUT: Duration = Duration::from_secs(2);
/// Stop answering pipelined requests while this much output waits for the client.
const MAX_PENDING_OUTPUT: usize = 256 * 1024;
/// How long a request may wait for a blocking thread's answer before its connection is
/// closed: a store that takes longer is broken, and the client is better off retrying.
const PARKED_TIMEOUT: Duration = Duration::from_secs(30);
/// How much of a large body is handed to rustls (and so encrypted) at a time: it is encrypted
/// as the client reads, never whole ahead of it.
const BODY_CHUNK: usize = 256 * 1024;
/// How much of a large body one connection may send in one turn before its worker serves
/// the others and comes back to it. A page of several MiB encrypted and written at once
/// held every other client of the worker for milliseconds.
const TURN_QUANTUM: usize = 512 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    /// Accepted; waiting for the first byte to tell TLS from plain HTTP.
    Sniff,
    /// Plain HTTP on the TLS port: reading its head (bounded, briefly) before the 400, so a
    /// key sent in clear text is noticed.
    Plain,
    Handshake,
    /// Between requests on a keep-alive connection.
    Idle,
    /// Part of a request has arrived.
    Request,
    /// A request is answered on a blocking thread (it needs the store); nothing more is read
    /// or answered until its answer is back.
    Waiting,
    /// The last response is going out; then the write side is shut.
    Closing,
    /// Write side shut; reading and discarding until EOF or the deadline.
    Lingering,
}

pub(super) struct Conn {
    pub(super) socket: TcpStream,
    pub(super) peer: SocketAddr,
    pub(super) stage: Stage,
    pub(super) tls: Option<Box<ServerConnection>>,
    /// Plaintext received and not yet answered. It holds the API key of every request, so it is
    /// wiped as requests are consumed, when it grows, and when the connection goes.
    pub(super) inbuf: Zeroizing<Vec<u8>>,
    pub(super) deadline: Instant,
    /// When the connection was accepted or last became idle, for choosing whom to close at
    /// the cap.
    pub(super) idle_since: Instant,
    pub(super) write_interest: bool,
    /// Whether the socket may hold bytes not yet read. Readiness is edge-triggered: a read
    /// that came back short (or would block) drained the socket, and anything arriving later
    /// raises a new event, so until then another read would only return `EAGAIN`. Skipping
    /// it saves a system call per request.
    pub(super) unread: bool,
    /// Told apart from a later connection in the same slot, for answers coming back from a
    /// blocking thread.
    pub(super) serial: u64,
    /// How the request being answered on a blocking thread is to be answered.
    pub(super) parked: Option<Parked>,
    /// The rest of a large body being sent: nothing else is answered until it is out.
    pub(super) outgoing: Option<Outgoing>,
}

/// A large body on its way out, handed to rustls a chunk at a time as the client reads. The
/// response is kept whole: its own `Drop` wipes a secret body once the connection is done.
pub(super) struct Outgoing {
    response: Response,
    /// How much of its body rustls has taken.
    sent: usize,
}

impl Outgoing {
    /// Hands rustls `head` (the response head, with the first chunk; empty after) and the
    /// next chunk as one payload: records are cut across the two, so a head is never a record
    /// of its own. Returns the body bytes it took.
    fn feed(&mut self, tls: &mut ServerConnection, head: &[u8]) -> Result<usize, End> {
        let body = self.response.body_bytes();
        let (mut head, mut chunk) =
            (head, &body[self.sent..body.len().min(self.sent + BODY_CHUNK)]);
        let mut writer = tls.writer();
        let mut fed = 0;
        while !head.is_empty() || !chunk.is_empty() {
            let n = writer
                .write_vectored(&[io::IoSlice::new(head), io::IoSlice::new(chunk)])
                .map_err(|_| End::Now)?;
            if n == 0 {
                return Err(End::Now);
            }
            let from_head = n.min(head.len());
            head = &head[from_head..];
            chunk = &chunk[n - from_head..];
            fed += n - from_head;
        }
        self.sent += fed;
        Ok(fed)
    }

    fn is_done(&self) -> bool {
        self.sent >= self.response.body_bytes().len()
    }
}

/// What the answer to a parked request needs from the request, which is gone by then.
#[derive(Debug, Clone, Copy)]
pub(super) struct Parked {
    head_only: bool,
    keep_alive: bool,
}

/// Why a connection ends.
pub(super) enum End {
    /// Drop it now (errors, timeouts, EOF).
    Now,
    /// Shut the write side and linger.
    Linger,
}

impl Conn {
    /// A connection just accepted, to be sniffed for TLS until `deadline`.
    pub(super) fn new(socket: TcpStream, peer: SocketAddr, deadline: Instant, serial: u64) -> Self {
        let now = Instant::now();
        Self {
            socket,
            peer,
            stage: Stage::Sniff,
            tls: None,
            inbuf: Zeroizing::new(Vec::new()),
            deadline,
            idle_since: now,
            write_interest: false,
            unread: true,
            serial,
            parked: None,
            outgoing: None,
        }
    }

    /// Whether rustls has output queued for the client.
    pub(super) fn wants_write(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.wants_write())
    }

    /// Whether closing it now would cost its client nothing but a reconnect: it owes nobody
    /// an answer (between requests, or not yet through its handshake).
    pub(super) fn is_quiet(&self) -> bool {
        if self.outgoing.is_some() {
            return false;
        }
        match self.stage {
            Stage::Sniff | Stage::Handshake | Stage::Idle => true,
            Stage::Plain | Stage::Request | Stage::Waiting | Stage::Closing | Stage::Lingering => {
                false
            }
        }
    }
}

/// What a worker lends a connection for one turn.
pub(super) struct Turn<'w> {
    pub(super) app: &'w Arc<App>,
    pub(super) shard: &'w Shard,
    /// The worker's index: its shard of the key's usage.
    pub(super) worker: usize,
    pub(super) limits: &'w HttpLimits,
    pub(super) date: &'w mut DateCache,
    pub(super) out: &'w mut Vec<u8>,
    /// Where a request that must wait for the store is left for the worker to hand over.
    pub(super) deferred: &'w mut Option<api::Deferred>,
    /// Body bytes this connection sent in this turn (see [`TURN_QUANTUM`]).
    pub(super) body_sent: usize,
    /// Set when the connection stopped at [`TURN_QUANTUM`] with its socket still writable:
    /// no readiness event will come for it, so its worker must give it another turn.
    pub(super) yielded: bool,
}

/// One connection's work until it would block. `Ok` keeps it open.
pub(super) fn step(conn: &mut Conn, turn: &mut Turn<'_>) -> Result<(), End> {
    let limits = turn.limits;
    match conn.stage {
        Stage::Sniff => sniff(conn, turn)?,
        Stage::Plain => return read_plain(conn, turn),
        Stage::Lingering => return linger(conn),
        Stage::Handshake | Stage::Idle | Stage::Request | Stage::Waiting | Stage::Closing => {}
    }
    loop {
        let Some(tls) = conn.tls.as_deref_mut() else { return Ok(()) };
        let wrote = flush(tls, &mut conn.socket)?;
        if tls.wants_write() {
            // The client is not reading: wait, but not forever. Only a write it takes buys it
            // more time; bytes it keeps sending while taking none do not (a slow reader that
            // trickles requests would otherwise hold its slot for ever). A handshake keeps the
            // deadline it was given at accept, however its flights go, and a request waiting
            // for the store the one it was parked with.
            if wrote && !matches!(conn.stage, Stage::Handshake | Stage::Waiting) {
                conn.deadline = Instant::now() + limits.idle_timeout;
            }
            return Ok(());
        }
        if let Some(outgoing) = conn.outgoing.as_mut() {
            if turn.body_sent >= TURN_QUANTUM {
                turn.yielded = true;
                return Ok(());
            }
            turn.body_sent += outgoing.feed(tls, &[])?;
            if outgoing.is_done() {
                conn.outgoing = None;
                if conn.stage == Stage::Closing {
                    tls.send_close_notify();
                }
            }
            continue;
        }
        match conn.stage {
            Stage::Closing => return Err(End::Linger),
            // Nothing is read while the answer is away: the buffer holds at most what came
            // with the request, and the readiness edge is kept (`unread`) for the resumption.
            Stage::Waiting => return Ok(()),
            _ => {}
        }
        if answer_buffered(conn, turn)? {
            continue;
        }
        let Some(tls) = conn.tls.as_deref_mut() else { return Ok(()) };
        let peer = conn.peer.ip();
        let log = &turn.app.refusals;
        match receive(tls, &mut conn.socket, peer, log, &mut conn.unread, &mut conn.inbuf, limits)?
        {
            Received::Nothing => return Ok(()),
            Received::Data => note_progress(conn, turn),
        }
    }
}

fn sniff(conn: &mut Conn, turn: &Turn<'_>) -> Result<(), End> {
    let mut first = [0u8; 1];
    match conn.socket.peek(&mut first) {
        Ok(0) => Err(End::Now),
        Ok(_) if first[0] == TLS_HANDSHAKE => {
            let tls = ServerConnection::new(turn.app.tls_config()).map_err(|_| End::Now)?;
            let mut tls = Box::new(tls);
            // Output is bounded by when requests are answered, not by rustls' buffer limit,
            // so a large response is queued whole and written out as the client reads.
            tls.set_buffer_limit(None);
            conn.tls = Some(tls);
            conn.stage = Stage::Handshake;
            Ok(())
        }
        Ok(_) => {
            // Plain HTTP (or anything else) on the TLS port: read what the head holds, then
            // say so once, in the clear, and close. Nothing of it reaches a handler. Only what
            // starts like a request line (a method's capital letter) can carry a key worth the
            // wait; anything else is answered at once.
            conn.stage = Stage::Plain;
            if !first[0].is_ascii_uppercase() {
                return answer_plain(conn, turn);
            }
            conn.deadline = conn.deadline.min(Instant::now() + PLAIN_HEAD_TIMEOUT);
            read_plain(conn, turn)
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
        Err(_) => Err(End::Now),
    }
}

/// Reads a plain-HTTP head until its blank line, `max_header_bytes`, or the client's EOF, then
/// answers it.
fn read_plain(conn: &mut Conn, turn: &Turn<'_>) -> Result<(), End> {
    let cap = turn.limits.max_header_bytes;
    let mut chunk = Zeroizing::new([0u8; 4096]);
    loop {
        if conn.inbuf.len() >= cap || conn.inbuf.windows(4).any(|w| w == b"\r\n\r\n") {
            return answer_plain(conn, turn);
        }
        let want = chunk.len().min(cap - conn.inbuf.len());
        match conn.socket.read(&mut chunk[..want]) {
            Ok(0) => return answer_plain(conn, turn),
            Ok(n) => extend_wiping(&mut conn.inbuf, &chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(End::Now),
        }
    }
}

/// Answers plain HTTP with its 400 (and the key tripwire, in [`api::refuse_plain_http`]), then
/// wipes what was read.
fn answer_plain(conn: &mut Conn, turn: &Turn<'_>) -> Result<(), End> {
    let response = api::refuse_plain_http(turn.app, turn.shard, conn.peer, &conn.inbuf);
    let read = conn.inbuf.len();
    consume_wiping(&mut conn.inbuf, read);
    let mut out = Vec::with_capacity(256);
    response.write_to(
        &mut out,
        &httpdate::fmt_http_date(std::time::SystemTime::now()),
        false,
        false,
    );
    // One small write into an empty socket buffer; if even that fails, the client is gone and
    // there is nobody to tell.
    let _ = conn.socket.write(&out);
    Err(End::Linger)
}

/// A connection's deadline passed: what happens to it. Plain HTTP still gets its answer (and
/// its head the tripwire); everything else is closed.
pub(super) fn expire(conn: &mut Conn, turn: &mut Turn<'_>) -> Option<End> {
    Some(match conn.stage {
        Stage::Plain => answer_plain(conn, turn).err().unwrap_or(End::Now),
        Stage::Sniff
        | Stage::Handshake
        | Stage::Idle
        | Stage::Request
        | Stage::Waiting
        | Stage::Closing
        | Stage::Lingering => End::Now,
    })
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
    peer: IpAddr,
    log: &RefusalLog,
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
                if let Some((event, detail)) = crate::tls::describe_peer_error(&e) {
                    log.tls(peer, event, &detail);
                }
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
/// for this client reaches [`MAX_PENDING_OUTPUT`], or a request must wait for the store (then
/// it is left in `turn.deferred` and the connection waits). Returns whether anything was
/// answered or handed over.
fn answer_buffered(conn: &mut Conn, turn: &mut Turn<'_>) -> Result<bool, End> {
    let (app, limits) = (turn.app, turn.limits);
    if !matches!(conn.stage, Stage::Idle | Stage::Request) || conn.outgoing.is_some() {
        return Ok(false);
    }
    let Some(tls) = conn.tls.as_deref_mut() else { return Ok(false) };
    let outgoing = &mut conn.outgoing;
    let mut consumed = 0;
    let mut queued = 0;
    let mut close = false;
    while consumed < conn.inbuf.len() && queued < MAX_PENDING_OUTPUT && outgoing.is_none() {
        let buf = &conn.inbuf[consumed..];
        // The header table borrows the buffer it indexes, so each parse takes a fresh one
        // (uninitialised: it costs nothing to make).
        let mut headers = HeaderTable::new();
        let out = &mut *turn.out;
        let (used, sent) = match http::parse(buf, &mut headers, limits) {
            Ok(Parsed::Partial) => break,
            Ok(Parsed::Complete(request, head_len)) => {
                let body_len = usize::try_from(request.content_length).unwrap_or(usize::MAX);
                if buf.len() - head_len < body_len {
                    break; // the body is still on its way
                }
                let head_only = request.method == Method::Head;
                match api::handle(app, turn.shard, turn.worker, &request, conn.peer) {
                    api::Handled::Now(response) => {
                        let keep_alive = request.keep_alive
                            && !response.close
                            && !app.shutting_down.load(Ordering::Relaxed);
                        let date = turn.date.now();
                        let sent = send(tls, outgoing, out, response, date, head_only, keep_alive)?;
                        close = !keep_alive;
                        (head_len + body_len, sent)
                    }
                    api::Handled::Later(deferred) => {
                        conn.parked = Some(Parked { head_only, keep_alive: request.keep_alive });
                        *turn.deferred = Some(deferred);
                        consumed += head_len + body_len;
                        break;
                    }
                }
            }
            Err(e) => {
                let response = api::refuse_malformed(app, turn.shard, conn.peer, e);
                close = true;
                (buf.len(), send(tls, outgoing, out, response, turn.date.now(), false, false)?)
            }
        };
        queued += sent;
        consumed += used;
        if close {
            break;
        }
    }
    if consumed == 0 {
        return Ok(false);
    }
    consume_wiping(&mut conn.inbuf, consumed);
    if conn.parked.is_some() {
        conn.stage = Stage::Waiting;
        conn.deadline = Instant::now() + PARKED_TIMEOUT;
        return Ok(true);
    }
    after_answer(conn, close, limits);
    Ok(true)
}

/// Bodies up to this size are copied behind the head and go to rustls in one write; larger ones
/// are left in `outgoing`, to be handed over a chunk at a time as the client reads (see
/// [`step`]), so a page of several MiB is neither copied once more nor encrypted ahead of the
/// client, nor sent in one turn while the worker's other clients wait.
const COPY_BODY_BELOW: usize = 16 * 1024;

/// Queues `response` in rustls (encrypted as it is queued), its head built in `out`, and its
/// body, when large, in `outgoing`. Returns the bytes queued or to be sent.
fn send(
    tls: &mut ServerConnection,
    outgoing: &mut Option<Outgoing>,
    out: &mut Vec<u8>,
    response: Response,
    date: &str,
    head_only: bool,
    keep_alive: bool,
) -> Result<usize, End> {
    out.clear();
    response.write_head(out, date, keep_alive);
    let body = if head_only { &[][..] } else { response.body_bytes() };
    let body_len = body.len();
    if body_len < COPY_BODY_BELOW {
        out.extend_from_slice(body);
        tls.writer().write_all(out).map_err(|_| End::Now)?;
        return Ok(out.len());
    }
    // The head goes with the body's first chunk; the rest follows as the client reads.
    outgoing.insert(Outgoing { response, sent: 0 }).feed(tls, out)?;
    Ok(out.len() + body_len)
}

/// The stage after an answer: closing, idle, or the next (pipelined) request begun.
fn after_answer(conn: &mut Conn, close: bool, limits: &HttpLimits) {
    let now = Instant::now();
    if close {
        // After a body still going out, the close follows it (see [`step`]).
        if let (Some(tls), None) = (conn.tls.as_deref_mut(), &conn.outgoing) {
            tls.send_close_notify();
        }
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
}

/// Sends the answer to the request this connection was waiting for, then goes on with it as
/// after any answer (the requests pipelined behind it included).
pub(super) fn resume(conn: &mut Conn, turn: &mut Turn<'_>, response: Response) -> Result<(), End> {
    let (Stage::Waiting, Some(parked)) = (conn.stage, conn.parked.take()) else {
        // Only a waiting connection is resumed, once: anything else is a bug in the worker,
        // and the client cannot be told what its answer was.
        log::error!("api: an answer came back for {}, which was not waiting for one", conn.peer);
        return Err(End::Now);
    };
    let Some(tls) = conn.tls.as_deref_mut() else { return Err(End::Now) };
    let keep_alive =
        parked.keep_alive && !response.close && !turn.app.shutting_down.load(Ordering::Relaxed);
    let date = turn.date.now();
    send(tls, &mut conn.outgoing, turn.out, response, date, parked.head_only, keep_alive)?;
    after_answer(conn, !keep_alive, turn.limits);
    step(conn, turn)
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
