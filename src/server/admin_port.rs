//! The admin port: plain HTTP on loopback TCP and, if configured, a Unix socket; a small pool of
//! blocking workers that nobody but root can fill.
//!
//! Admin traffic is rare and its handlers block on fsync, so blocking threads serving one
//! connection at a time are the simplest design that the API port cannot starve: they share no
//! thread, queue or connection cap with it. What keeps them answering when others misbehave:
//!
//! - **Who, first.** An acceptor thread per listener takes each connection and finds its uid
//!   before a byte is read: one sock_diag query on TCP ([`crate::peer`]), `SO_PEERCRED` on the
//!   Unix socket. A uid that may not use the port is answered `403` there and then, without
//!   a worker, so a flood of refused connections costs one query each and never queues ahead of
//!   root.
//! - **Root always gets a worker.** There are `admin.workers` + 1 threads. Connections from
//!   uids other than root hold at most `admin.workers` of them together, and one uid at most
//!   `admin.workers - 1` (at least one), so another allowed uid still gets one; root's
//!   connections go first and can use them all. What waits beyond that waits in a short queue
//!   (a `503` when it is full or when the wait outlasts the header timeout).
//! - **No stalling.** A request's head must arrive within `header_timeout_secs` of the worker
//!   taking the connection (or of the previous answer, after `idle_timeout_secs` for its first
//!   byte), never extended by a trickle; its body, and the answer's reading by the client, must
//!   keep an average of `min_bytes_per_sec` after a first allowance of `header_timeout_secs`.
//!   A stalled or trickling upload gets `408` within seconds; a 256 MiB import over loopback
//!   takes a second.
//!
//! A connection that closes after its answer is handed to one [`Closing`] thread, which waits
//! for the client to close too, so that the answer is not lost to a reset and no worker waits
//! on a client. This file only moves bytes: what a request means, and every refusal's answer,
//! log line and count, is [`crate::admin`]'s.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::{Duration, Instant};

use zeroize::Zeroize;

use crate::admin::{self, Client};
use crate::app::App;
use crate::http::{self, DateCache, HeaderTable, HttpLimits, Method, Parsed, Response};
use crate::locks;
use crate::peer;

/// Connections from uids other than root that may wait for a worker at once; past it they get
/// a `503` at once.
const MAX_WAITING: usize = 64;
/// How long writing a refusal may take: it is a few hundred bytes into an empty socket buffer,
/// so this only bounds a client that shrank its window to nothing.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_millis(500);

/// One admin connection, over TCP or the Unix socket.
pub(super) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    fn set_read_timeout(&self, timeout: Duration) -> io::Result<()> {
        // A zero timeout means "block for ever" to the socket: never ask for one.
        let timeout = Some(timeout.max(Duration::from_millis(1)));
        match self {
            Self::Tcp(s) => s.set_read_timeout(timeout),
            Self::Unix(s) => s.set_read_timeout(timeout),
        }
    }

    fn set_write_timeout(&self, timeout: Duration) -> io::Result<()> {
        let timeout = Some(timeout.max(Duration::from_millis(1)));
        match self {
            Self::Tcp(s) => s.set_write_timeout(timeout),
            Self::Unix(s) => s.set_write_timeout(timeout),
        }
    }

    fn shutdown_write_nonblocking(&self) -> io::Result<()> {
        match self {
            Self::Tcp(s) => s.shutdown(Shutdown::Write).and_then(|()| s.set_nonblocking(true)),
            Self::Unix(s) => s.shutdown(Shutdown::Write).and_then(|()| s.set_nonblocking(true)),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.read(buf),
            Self::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Tcp(s) => s.write(buf),
            Self::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Starts the admin port: an acceptor per listener, the workers, and the closing thread.
pub(super) fn start(
    app: &Arc<App>,
    tcp: TcpListener,
    unix: Option<UnixListener>,
) -> io::Result<()> {
    let closing = Closing::start()?;
    let workers = app.config.admin.workers;
    let scheduler = Arc::new(Scheduler::new(workers));
    // One more thread than non-root connections may hold: root's.
    for id in 0..=workers {
        let (app, scheduler, closing) = (Arc::clone(app), Arc::clone(&scheduler), closing.clone());
        spawn(format!("admin-{id}"), move || work(&app, &scheduler, &closing))?;
    }
    let gate = Arc::new(Gate { app: Arc::clone(app), scheduler, closing });
    let tcp_gate = Arc::clone(&gate);
    spawn("admin-accept".into(), move || accept_tcp(&tcp_gate, &tcp))?;
    if let Some(unix) = unix {
        spawn("admin-accept-unix".into(), move || accept_unix(&gate, &unix))?;
    }
    Ok(())
}

fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> io::Result<()> {
    std::thread::Builder::new().name(name).spawn(f).map(drop)
}

/// What an acceptor needs to judge a new connection and pass it on.
struct Gate {
    app: Arc<App>,
    scheduler: Arc<Scheduler>,
    closing: Closing,
}

fn accept_tcp(gate: &Gate, listener: &TcpListener) {
    loop {
        match listener.accept() {
            Ok((stream, peer)) => {
                if gate.app.shutting_down.load(Ordering::Relaxed) {
                    return;
                }
                let uid = stream
                    .local_addr()
                    .map_err(peer::PeerError::Query)
                    .and_then(|local| gate.app.uid_lookup.uid_of(peer, local));
                let stream = Stream::Tcp(stream);
                match uid {
                    Ok(uid) => gate.admit(stream, uid),
                    Err(e) => gate.refuse(stream, &admin::refuse_unknown_uid(&gate.app, peer, e)),
                }
            }
            Err(e) => accept_failed(&e),
        }
    }
}

fn accept_unix(gate: &Gate, listener: &UnixListener) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                if gate.app.shutting_down.load(Ordering::Relaxed) {
                    return;
                }
                match peer::unix_uid(&stream) {
                    Ok(uid) => gate.admit(Stream::Unix(stream), uid),
                    Err(e) => {
                        let response = admin::refuse_unknown_unix_uid(&gate.app, e);
                        gate.refuse(Stream::Unix(stream), &response);
                    }
                }
            }
            Err(e) => accept_failed(&e),
        }
    }
}

fn accept_failed(e: &io::Error) {
    if e.kind() != io::ErrorKind::Interrupted {
        // EMFILE and friends: the backlog keeps the client; do not spin.
        log::warn!("accept on the admin port failed: {e}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Gate {
    /// Refuses a uid that may not use the port, or queues the connection for a worker.
    fn admit(&self, stream: Stream, uid: u32) {
        let own_uid = rustix::process::getuid().as_raw();
        if uid != own_uid && !self.app.live().admin.allowed_uids.contains(&uid) {
            self.refuse(stream, &admin::refuse_uid(&self.app, uid));
            return;
        }
        let job = Job { stream, uid, queued: Instant::now() };
        if let Err(job) = self.scheduler.submit(job) {
            let response = admin::refuse_busy(&self.app, Client { uid });
            self.refuse(job.stream, &response);
        }
    }

    /// Answers on the acceptor's thread (a small write into an empty buffer) and lets go.
    fn refuse(&self, mut stream: Stream, response: &Response) {
        let _ = stream.set_write_timeout(REFUSAL_WRITE_TIMEOUT);
        let mut date = DateCache::default();
        send(&mut stream, response, &mut date, false, false);
        self.closing.hand_over(stream);
    }
}

/// A connection from an allowed uid, waiting for a worker.
struct Job {
    stream: Stream,
    uid: u32,
    queued: Instant,
}

/// Hands connections to workers so that root always finds one free: see the module doc.
struct Scheduler {
    state: Mutex<Waiting>,
    wake: Condvar,
    /// Workers the uids other than root may hold together.
    others_max: usize,
    /// Workers one uid other than root may hold.
    per_uid_max: usize,
}

#[derive(Default)]
struct Waiting {
    root: VecDeque<Job>,
    others: VecDeque<Job>,
    others_busy: usize,
    busy_by_uid: HashMap<u32, usize>,
}

impl Scheduler {
    fn new(workers: usize) -> Self {
        Self {
            state: Mutex::new(Waiting::default()),
            wake: Condvar::new(),
            others_max: workers,
            per_uid_max: workers.saturating_sub(1).max(1),
        }
    }

    /// Queues `job`, or gives it back when too many wait already.
    fn submit(&self, job: Job) -> Result<(), Job> {
        let mut waiting = locks::lock(&self.state);
        let queue = if job.uid == 0 { &mut waiting.root } else { &mut waiting.others };
        if queue.len() >= MAX_WAITING {
            return Err(job);
        }
        queue.push_back(job);
        drop(waiting);
        self.wake.notify_one();
        Ok(())
    }

    /// The next connection this worker may serve: root's first, then the oldest whose uid is
    /// within its share.
    fn take(&self) -> Job {
        let mut waiting = locks::lock(&self.state);
        loop {
            if let Some(job) = waiting.root.pop_front() {
                return job;
            }
            if waiting.others_busy < self.others_max {
                let per_uid_max = self.per_uid_max;
                let busy = &waiting.busy_by_uid;
                let eligible = waiting
                    .others
                    .iter()
                    .position(|j| busy.get(&j.uid).copied().unwrap_or(0) < per_uid_max);
                if let Some(job) = eligible.and_then(|i| waiting.others.remove(i)) {
                    waiting.others_busy += 1;
                    *waiting.busy_by_uid.entry(job.uid).or_default() += 1;
                    return job;
                }
            }
            waiting = self.wake.wait(waiting).unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    /// A worker is done with a connection of `uid`.
    fn done(&self, uid: u32) {
        if uid == 0 {
            return;
        }
        let mut waiting = locks::lock(&self.state);
        waiting.others_busy = waiting.others_busy.saturating_sub(1);
        if let Some(busy) = waiting.busy_by_uid.get_mut(&uid) {
            *busy -= 1;
            if *busy == 0 {
                waiting.busy_by_uid.remove(&uid);
            }
        }
        drop(waiting);
        // Whoever waits may be the uid that just got room: every worker looks.
        self.wake.notify_all();
    }
}

fn work(app: &App, scheduler: &Scheduler, closing: &Closing) {
    let mut date = DateCache::default();
    loop {
        let job = scheduler.take();
        let uid = job.uid;
        serve(app, job, &mut date, closing);
        scheduler.done(uid);
    }
}

fn serve(app: &App, job: Job, date: &mut DateCache, closing: &Closing) {
    let config = app.live();
    let client = Client { uid: job.uid };
    let mut stream = job.stream;
    // Waited longer than a whole head may take: the client has been kept waiting enough, and
    // a worker is better spent on whoever comes next.
    if job.queued.elapsed() > config.admin.limits.header_timeout {
        let response = admin::refuse_busy(app, client);
        let _ = stream.set_write_timeout(REFUSAL_WRITE_TIMEOUT);
        send(&mut stream, &response, date, false, false);
        closing.hand_over(stream);
        return;
    }
    let pace = Pacing {
        allowance: config.admin.limits.header_timeout,
        min_bytes_per_sec: config.admin.min_bytes_per_sec,
    };
    let mut conn =
        Conn { stream, buf: Vec::with_capacity(4096), limits: config.admin.limits, pace };
    let mut first = true;
    loop {
        match conn.serve_one(app, client, date, first) {
            Ok(Next::KeepAlive) => first = false,
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
pub(super) struct Closing {
    queue: mpsc::SyncSender<Stream>,
}

impl Closing {
    fn start() -> io::Result<Self> {
        let (queue, incoming) = mpsc::sync_channel(LINGER_MAX);
        spawn("admin-closing".into(), move || linger(&incoming))?;
        Ok(Self { queue })
    }

    fn hand_over(&self, stream: Stream) {
        if stream.shutdown_write_nonblocking().is_err() {
            return;
        }
        // Full (or gone at shutdown): the stream is dropped, and closed, here.
        let _ = self.queue.try_send(stream);
    }
}

/// Holds each closing connection until its client closes, it sends too much, or its time is up.
fn linger(incoming: &mpsc::Receiver<Stream>) {
    let mut held: Vec<(Stream, Instant, usize)> = Vec::new();
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

fn hold(held: &mut Vec<(Stream, Instant, usize)>, stream: Stream) {
    if held.len() < LINGER_MAX {
        held.push((stream, Instant::now() + LINGER_TIME, LINGER_BYTES));
    }
}

/// Reads and drops what a closing client has sent; whether it is still open and within bounds.
fn drain(stream: &mut Stream, left: &mut usize) -> bool {
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

/// The slowest a transfer may go: after `allowance`, an average of `min_bytes_per_sec`.
/// So a transfer of `n` bytes that began at `t` must be done by `t + allowance + n / rate`, and
/// a stall anywhere in it uses up what it had banked: a client that sent 16 bytes of a
/// 1,000-byte body and stopped is cut `allowance` after it began, whatever it sends later.
#[derive(Clone, Copy)]
struct Pacing {
    allowance: Duration,
    min_bytes_per_sec: u64,
}

/// One transfer under a [`Pacing`]: its start and the bytes moved so far.
struct Paced {
    pacing: Pacing,
    started: Instant,
    moved: u64,
}

impl Paced {
    fn new(pacing: Pacing) -> Self {
        Self { pacing, started: Instant::now(), moved: 0 }
    }

    /// What is left of the time the bytes moved so far have earned; zero once it is spent.
    fn left(&self) -> Duration {
        let rate = self.pacing.min_bytes_per_sec.max(1);
        let earned = Duration::from_secs_f64(self.moved as f64 / rate as f64);
        (self.started + self.pacing.allowance + earned).saturating_duration_since(Instant::now())
    }
}

fn too_slow() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "the client sends or reads too slowly")
}

struct Conn {
    stream: Stream,
    buf: Vec<u8>,
    limits: HttpLimits,
    pace: Pacing,
}

impl Conn {
    /// Reads, answers and consumes one request.
    fn serve_one(
        &mut self,
        app: &App,
        client: Client,
        date: &mut DateCache,
        first: bool,
    ) -> io::Result<Next> {
        let head_len = match self.read_head(first)? {
            Head::Complete(n) => n,
            Head::Closed => return Ok(Next::Closed),
            Head::TimedOut => {
                let response = admin::refuse_slow(app, client, "head");
                self.send_paced(&response, date, false, false);
                return Ok(Next::Answered);
            }
            Head::Invalid(e) => {
                let response = admin::refuse_malformed(app, client, e);
                self.send_paced(&response, date, false, false);
                return Ok(Next::Answered);
            }
        };
        let mut headers = HeaderTable::new();
        let (head, rest) = self.buf.split_at(head_len);
        let request = match http::parse(head, &mut headers, &self.limits) {
            Ok(Parsed::Complete(request, _)) => request,
            // read_head parsed this very head already.
            Ok(Parsed::Partial) | Err(_) => return Ok(Next::Closed),
        };
        if request.expects_continue && request.content_length > 0 {
            self.stream.set_write_timeout(self.pace.allowance)?;
            self.stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        let mut body = RequestBody {
            prefix: rest,
            prefix_used: 0,
            stream: &mut self.stream,
            remaining: request.content_length,
            paced: Paced::new(self.pace),
            too_slow: false,
        };
        let mut response = admin::handle(app, &request, &mut body, client);
        let drained = !body.too_slow && body.drain_small();
        if body.too_slow {
            response = admin::refuse_slow(app, client, "body");
        }
        let (prefix_used, body_left) = (body.prefix_used, body.remaining);
        let keep_alive = request.keep_alive && !response.close && drained && body_left == 0;
        let head_only = request.method == Method::Head;
        let sent = self.send_paced(&response, date, head_only, keep_alive);
        self.buf.drain(..head_len + prefix_used);
        Ok(if keep_alive && sent { Next::KeepAlive } else { Next::Answered })
    }

    /// Reads until a whole head is buffered. The first request's head has `header_timeout` in
    /// all from now; a later one gets `idle_timeout` for its first byte, then `header_timeout`
    /// from that byte. A trickle never extends either.
    fn read_head(&mut self, first: bool) -> io::Result<Head> {
        let mut deadline = first.then(|| Instant::now() + self.limits.header_timeout);
        let idle_until = Instant::now() + self.limits.idle_timeout;
        loop {
            if !self.buf.is_empty() {
                deadline.get_or_insert_with(|| Instant::now() + self.limits.header_timeout);
                let mut headers = HeaderTable::new();
                match http::parse(&self.buf, &mut headers, &self.limits) {
                    Ok(Parsed::Complete(_, n)) => return Ok(Head::Complete(n)),
                    Ok(Parsed::Partial) => {}
                    Err(e) => return Ok(Head::Invalid(e)),
                }
            }
            let wait = deadline.unwrap_or(idle_until).saturating_duration_since(Instant::now());
            if wait.is_zero() {
                return Ok(self.head_timed_out());
            }
            self.stream.set_read_timeout(wait)?;
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Ok(Head::Closed),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// A head that did not arrive in time: a silent connection is closed; one that began a
    /// request is told why (`408`).
    fn head_timed_out(&self) -> Head {
        if self.buf.is_empty() { Head::Closed } else { Head::TimedOut }
    }

    /// Writes `response` at no less than the minimum rate. Returns whether it all went out.
    fn send_paced(
        &mut self,
        response: &Response,
        date: &mut DateCache,
        head_only: bool,
        keep_alive: bool,
    ) -> bool {
        // Room for the whole answer up front: a secret body copied into a buffer that then grew
        // would be left behind, unwiped, in the memory the buffer gave back.
        let mut out = Vec::with_capacity(response.encoded_len_bound());
        response.write_to(&mut out, date.now(), head_only, keep_alive);
        let sent = write_paced(&mut self.stream, &out, Paced::new(self.pace)).is_ok();
        if response.secret {
            out.zeroize();
        }
        sent
    }
}

/// Writes all of `bytes`, each write given only what the transfer has earned.
fn write_paced(stream: &mut Stream, mut bytes: &[u8], mut paced: Paced) -> io::Result<()> {
    while !bytes.is_empty() {
        let left = paced.left();
        if left.is_zero() {
            return Err(too_slow());
        }
        stream.set_write_timeout(left)?;
        let chunk = bytes.len().min(256 * 1024);
        match stream.write(&bytes[..chunk]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                bytes = &bytes[n..];
                paced.moved += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return Err(too_slow());
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

enum Head {
    Complete(usize),
    Closed,
    TimedOut,
    Invalid(http::ParseError),
}

/// A request body: what was read past the head, then the socket, `Content-Length` in all, at
/// no less than the minimum rate.
struct RequestBody<'a> {
    prefix: &'a [u8],
    prefix_used: usize,
    stream: &'a mut Stream,
    remaining: u64,
    paced: Paced,
    /// The client fell below the minimum rate: the handler saw a read error, and the answer
    /// is a `408` instead of whatever it made of that.
    too_slow: bool,
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

    fn read_socket(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            let left = self.paced.left();
            if left.is_zero() {
                self.too_slow = true;
                return Err(too_slow());
            }
            self.stream.set_read_timeout(left)?;
            match self.stream.read(out) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the client closed the connection mid-body",
                    ));
                }
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // The timeout is what was left: the next turn finds it spent.
                Err(e)
                    if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                Err(e) => return Err(e),
            }
        }
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
            self.read_socket(&mut out[..want])?
        } else {
            let n = want.min(unread.len());
            out[..n].copy_from_slice(&unread[..n]);
            self.prefix_used += n;
            n
        };
        self.remaining -= n as u64;
        self.paced.moved += n as u64;
        Ok(n)
    }
}

fn send(
    stream: &mut Stream,
    response: &Response,
    date: &mut DateCache,
    head_only: bool,
    keep_alive: bool,
) {
    let mut out = Vec::with_capacity(response.encoded_len_bound());
    response.write_to(&mut out, date.now(), head_only, keep_alive);
    let _ = stream.write_all(&out);
    if response.secret {
        out.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacing_banks_time_for_bytes_moved_and_a_stall_spends_it() {
        let pacing = Pacing { allowance: Duration::from_secs(5), min_bytes_per_sec: 1000 };
        let mut paced = Paced::new(pacing);
        assert!(paced.left() > Duration::from_millis(4900));
        paced.moved = 10_000;
        assert!(paced.left() > Duration::from_millis(14_900));
        paced.started -= Duration::from_secs(16);
        assert_eq!(paced.left(), Duration::ZERO);
    }

    fn job(uid: u32) -> Job {
        let (a, _) = UnixStream::pair().unwrap();
        Job { stream: Stream::Unix(a), uid, queued: Instant::now() }
    }

    #[test]
    fn root_is_served_first_and_others_keep_within_their_share() {
        let scheduler = Scheduler::new(3);
        for _ in 0..4 {
            assert!(scheduler.submit(job(1000)).is_ok());
        }
        assert!(scheduler.submit(job(1001)).is_ok());
        assert!(scheduler.submit(job(0)).is_ok());
        assert_eq!(scheduler.take().uid, 0);
        // uid 1000 may hold 2 of the 3; the third goes to uid 1001, queued after it.
        assert_eq!(scheduler.take().uid, 1000);
        assert_eq!(scheduler.take().uid, 1000);
        assert_eq!(scheduler.take().uid, 1001);
        // Three others hold their three: only root would be taken now.
        assert!(scheduler.submit(job(0)).is_ok());
        assert_eq!(scheduler.take().uid, 0);
        // uid 1000 at its share: room freed by uid 1001 does not go to it...
        scheduler.done(1001);
        assert!(scheduler.submit(job(1001)).is_ok());
        assert_eq!(scheduler.take().uid, 1001);
        // ...room freed by itself does.
        scheduler.done(1000);
        assert_eq!(scheduler.take().uid, 1000);
        let waiting = locks::lock(&scheduler.state);
        assert_eq!((waiting.others.len(), waiting.others_busy), (1, 3));
    }

    #[test]
    fn the_queue_is_bounded() {
        let scheduler = Scheduler::new(1);
        for _ in 0..MAX_WAITING {
            assert!(scheduler.submit(job(7)).is_ok());
        }
        assert!(scheduler.submit(job(7)).is_err());
        assert!(scheduler.submit(job(0)).is_ok());
    }
}
