//! The API port's workers: a readiness-based event loop per thread, HTTPS only.
//!
//! Each worker owns a `mio` poll, a clone of the listening socket and the connections it
//! accepted ([`super::api_conn`] drives each one), and runs every connection to completion on
//! its own thread. An idle connection costs its buffers, not a thread; that is how 1,000 idle
//! TLS clients fit in a few tens of MiB and how a slowloris client costs nothing but a slot
//! until its deadline. A worker answers only from memory: a request whose answer needs the
//! store is parked and handed to the port's blocking threads ([`super::blocking`]), and its
//! answer comes back through a channel and the poll's `Waker`, so the worker never waits.
//!
//! This file owns the slots: accepting, the deadlines sweep, the drain at shutdown, the cap, and
//! the hand-over of cold requests.
//! At `max_connections` the quietest connection that owes nobody an answer (idle between
//! requests, or still in its handshake) is closed to make room; if every connection is
//! mid-request, new clients wait in the listen backlog.

use std::io;
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use super::api_conn::{Conn, End, Stage, Turn, expire, resume, step};
use super::blocking::{Handoff, Pool};
use crate::api;
use crate::app::App;
use crate::http::{DateCache, HttpLimits};
use crate::logging;

const LISTENER: Token = Token(usize::MAX);
/// Raised by a blocking thread when an answer it made is waiting in `answered`.
const ANSWERED: Token = Token(usize::MAX - 1);
/// How long to drain a closing connection so the kernel does not reset it under the last
/// response (a "lingering close").
const LINGER: Duration = Duration::from_secs(2);
/// How often deadlines are checked.
const SWEEP_EVERY: Duration = Duration::from_millis(250);

/// A request handed to the blocking threads, and the way back to the worker that parked it.
pub(super) struct Cold {
    deferred: api::Deferred,
    /// The connection's slot and serial at its worker.
    key: usize,
    serial: u64,
    answered: Sender<Answered>,
    waker: Arc<Waker>,
}

/// An answer made on a blocking thread, for the connection `key` with `serial`.
struct Answered {
    key: usize,
    serial: u64,
    finished: api::Finished,
}

/// The blocking threads' work: answer, send the answer to its worker, wake the worker.
pub(super) fn answer_cold(cold: Cold) {
    let finished = cold.deferred.answer();
    let answered = Answered { key: cold.key, serial: cold.serial, finished };
    // A worker that is gone (shut down) has nobody left to answer.
    if cold.answered.send(answered).is_ok()
        && let Err(e) = cold.waker.wake()
    {
        log::error!("cannot wake an api worker for an answer read from the store: {e}");
    }
}

/// The blocking threads of the API port: see [`super::blocking`].
pub(super) type ColdPool = Pool<Cold>;

/// Runs one worker until the server shuts down.
pub fn run_worker(
    app: Arc<App>,
    listener: std::net::TcpListener,
    id: usize,
    handoff: Handoff<Cold>,
) -> io::Result<()> {
    let mut worker = Worker::new(app, listener, id, handoff)?;
    // What rustls says about a peer goes to the refusal log's budget, with the peer's address.
    logging::divert_tls_warnings();
    log::debug!("api worker {id} running");
    worker.run()
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
    /// What a reload may change, refreshed from the live configuration at each sweep.
    limits: HttpLimits,
    max_connections: usize,
    handshake_timeout: Duration,
    shutdown_timeout: Duration,
    /// Where requests that need the store go, and how their answers come back.
    handoff: Handoff<Cold>,
    waker: Arc<Waker>,
    answers: Sender<Answered>,
    answered: Receiver<Answered>,
    /// A request the last turn left for the blocking threads.
    deferred: Option<api::Deferred>,
    /// Connections that stopped sending a large body to let the others have a turn, still
    /// writable: driven again after this round of events, since no event will come for them.
    again: Vec<usize>,
    /// The serial of the next connection accepted.
    next_serial: u64,
}

impl Worker {
    fn new(
        app: Arc<App>,
        listener: std::net::TcpListener,
        id: usize,
        handoff: Handoff<Cold>,
    ) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        let mut listener = TcpListener::from_std(listener);
        let poll = Poll::new()?;
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), ANSWERED)?);
        let (answers, answered) = mpsc::channel();
        let api = &app.config.api;
        let (limits, max_connections) = (api.limits, api.max_connections);
        let (handshake_timeout, shutdown_timeout) = (api.handshake_timeout, api.shutdown_timeout);
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
            max_connections,
            handshake_timeout,
            shutdown_timeout,
            handoff,
            waker,
            answers,
            answered,
            deferred: None,
            again: Vec::new(),
            next_serial: 0,
        })
    }

    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(256);
        let mut next_sweep = Instant::now() + SWEEP_EVERY;
        // Whether the last poll found work. Then the next one only looks (a zero timeout):
        // under load, requests that came in while this round was served are taken at once
        // instead of after the worker sleeps and is woken again, and a sleep and a wake-up
        // cost more here than an empty look (about 40 % fewer context switches at 1x50 and
        // 6 % less CPU per request, see bench/README.md). Idle, the look is one extra
        // `epoll_wait` before the sleep.
        let mut busy = false;
        loop {
            let timeout = if busy || !self.again.is_empty() {
                // More may already be waiting, or others are owed a turn: only look.
                Duration::ZERO
            } else {
                next_sweep.saturating_duration_since(Instant::now())
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout))
                && e.kind() != io::ErrorKind::Interrupted
            {
                return Err(e);
            }
            busy = !events.is_empty();
            for event in &events {
                match event.token() {
                    LISTENER => self.accept(),
                    ANSWERED => self.deliver_answers(),
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
            for key in std::mem::take(&mut self.again) {
                self.drive(key);
            }
            let now = Instant::now();
            if now >= next_sweep {
                self.sweep(now);
                next_sweep = now + SWEEP_EVERY;
                // The watchdog's window is seconds (`WatchdogSec=30s`): a beat per sweep says as
                // much as one per turn did, without a store to a shared line per turn.
                self.app.heartbeat(self.id);
            }
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
        self.drain_deadline = Some(now + self.shutdown_timeout);
        let idle: Vec<usize> =
            self.conns.iter().filter(|(_, c)| c.is_quiet()).map(|(key, _)| key).collect();
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
                    if !self.app.per_address.admit(peer.ip()) {
                        // Closed at once (dropped), before any eviction on its behalf.
                        api::refuse_connection(&self.app, self.app.metrics.api(self.id), peer);
                        continue;
                    }
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
        self.app.open_connections.load(Ordering::Relaxed) >= self.max_connections
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
            .filter(|(_, c)| c.is_quiet())
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
            self.app.per_address.release(peer.ip());
            return;
        }
        let deadline = Instant::now() + self.handshake_timeout;
        let serial = self.next_serial;
        self.next_serial += 1;
        entry.insert(Conn::new(socket, peer, deadline, serial));
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
            self.app.per_address.release(conn.peer.ip());
        }
    }

    fn sweep(&mut self, now: Instant) {
        let live = self.app.live();
        self.limits = live.api.limits;
        self.max_connections = live.api.max_connections;
        self.handshake_timeout = live.api.handshake_timeout;
        self.shutdown_timeout = live.api.shutdown_timeout;
        let expired: Vec<usize> =
            self.conns.iter().filter(|(_, c)| c.deadline <= now).map(|(key, _)| key).collect();
        for key in expired {
            if let Some(conn) = self.conns.get(key) {
                log::debug!("closing {} at its {:?} deadline", conn.peer, conn.stage);
            }
            self.run_turn(key, expire);
        }
        self.app.refusals.flush();
        if self.accept_paused {
            self.accept();
        }
    }

    /// Moves one connection as far as it can go without blocking.
    fn drive(&mut self, key: usize) {
        self.run_turn(key, |conn, turn| step(conn, turn).err());
    }

    /// Hands the request connection `key` parked to the blocking threads; when none can take
    /// it now, answers it `503` at once (the worker never waits for room).
    fn hand_over(&mut self, key: usize, deferred: api::Deferred) {
        let Some(conn) = self.conns.get(key) else { return };
        let cold = Cold {
            deferred,
            key,
            serial: conn.serial,
            answered: self.answers.clone(),
            waker: Arc::clone(&self.waker),
        };
        let shard = self.app.metrics.api(self.id);
        match self.handoff.try_submit(cold) {
            Ok(()) => shard.cold_read(true),
            Err(cold) => {
                shard.cold_read(false);
                let response = cold.deferred.overloaded(shard);
                self.run_turn(key, |conn, turn| resume(conn, turn, response).err());
            }
        }
    }

    /// Sends each answer the blocking threads made to the connection still waiting for it.
    fn deliver_answers(&mut self) {
        while let Ok(Answered { key, serial, finished }) = self.answered.try_recv() {
            let response = finished.into_response(self.app.metrics.api(self.id));
            // The connection may have gone (its client left, or its deadline passed) and its
            // slot been taken by another: the serial tells.
            let waiting = self
                .conns
                .get(key)
                .is_some_and(|conn| conn.serial == serial && conn.stage == Stage::Waiting);
            if waiting {
                self.run_turn(key, |conn, turn| resume(conn, turn, response).err());
            }
        }
    }

    /// Lends connection `key` a turn of `work`, then acts on how it wants to end, if it does.
    fn run_turn(&mut self, key: usize, work: impl FnOnce(&mut Conn, &mut Turn<'_>) -> Option<End>) {
        let outcome = match self.conns.get_mut(key) {
            Some(conn) => {
                let mut turn = Turn {
                    app: &self.app,
                    shard: self.app.metrics.api(self.id),
                    worker: self.id,
                    limits: &self.limits,
                    date: &mut self.date,
                    out: &mut self.out,
                    deferred: &mut self.deferred,
                    body_sent: 0,
                    yielded: false,
                };
                let outcome = work(conn, &mut turn);
                if turn.yielded {
                    self.again.push(key);
                }
                let peer = conn.peer.ip();
                let log = &self.app.refusals;
                logging::take_tls_warnings(|w| log.tls(peer, w.event, w.detail));
                outcome
            }
            None => return,
        };
        // A connection that parked a request waits for its answer, unless it failed right
        // after (a write error): then there is nobody to answer, and the request is dropped.
        if let (Some(deferred), None) = (self.deferred.take(), &outcome) {
            self.hand_over(key, deferred);
            self.update_interest(key);
            return;
        }
        match outcome {
            None => self.update_interest(key),
            Some(End::Now) => self.close(key),
            Some(End::Linger) => {
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
        let wants_write = conn.wants_write();
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

#[cfg(test)]
mod tests {
    //! The worker and its blocking threads in one process, with a cold read the test holds at
    //! a point it controls: what the worker does meanwhile is then certain, not a matter of
    //! timing. (The integration tests drive the real binary; they cannot hold a read.)

    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::path::Path;
    use std::sync::{Condvar, Mutex};

    use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
    use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

    use super::*;
    use crate::audit::Peer;
    use crate::config::Config;
    use crate::keys::usage::Usage;
    use crate::keys::{Asked, KeyManager, SystemClock};
    use crate::keystore::KeyStore;
    use crate::peer::PeerLookup;
    use crate::refusals::RefusalLog;
    use crate::snapshot::store::{Memory, Source};
    use crate::snapshot::{Date, Snapshots};
    use crate::tls;

    const OLDER: &str = "2024-05-13";
    const CODE: &str = "TEST-CODE";

    /// Where the test holds every cold read: each job says it was taken, then waits until the
    /// gate opens.
    struct Gate {
        state: Mutex<(usize, bool)>,
        changed: Condvar,
    }

    static GATE: Gate = Gate { state: Mutex::new((0, false)), changed: Condvar::new() };

    fn held_then_answered(cold: Cold) {
        let mut state = GATE.state.lock().unwrap();
        state.0 += 1;
        GATE.changed.notify_all();
        while !state.1 {
            state = GATE.changed.wait(state).unwrap();
        }
        drop(state);
        answer_cold(cold);
    }

    fn wait_until_taken(jobs: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut state = GATE.state.lock().unwrap();
        while state.0 < jobs {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "the cold read never reached the blocking thread");
            state = GATE.changed.wait_timeout(state, left).unwrap().0;
        }
    }

    fn open_gate() {
        GATE.state.lock().unwrap().1 = true;
        GATE.changed.notify_all();
    }

    /// An app in `dir` serving both sample dates (the older one only in the store), with a key.
    fn app(dir: &Path) -> (Arc<App>, String) {
        let text = format!(
            r#"(activation_code: "{CODE}", state_dir: "{}", api: (listen: "127.0.0.1:0",
                workers: 1), admin: (listen: "127.0.0.1:0"))"#,
            dir.display()
        );
        let config = Config::parse(Path::new("test.ron"), &text).unwrap();
        let (store, record) = KeyStore::open(&config.state_dir).unwrap();
        let refusals =
            Arc::new(RefusalLog::new(config.refusal_log.window, config.refusal_log.lines));
        let usage = Usage::load(&config.state_dir, Arc::clone(&refusals));
        let keys =
            KeyManager::new(store, record, &config.activation_code, usage, None, 1, SystemClock);
        let asked = Asked { expires_in: None, grace: Duration::ZERO };
        let key = keys.generate(asked, Peer::Server).unwrap().key.expose().to_owned();
        let snapshots = Snapshots::in_memory(CODE, Memory::default()).unwrap();
        for date in [OLDER, "2024-05-14"] {
            let path = format!("{}/examples/snapshot-{date}.json", env!("CARGO_MANIFEST_DIR"));
            let bytes = std::fs::read(path).unwrap();
            let date = Date::parse(date).unwrap();
            snapshots.import(date, &mut bytes.as_slice(), Source::Import).unwrap();
        }
        let tls = tls::load(&config, None).unwrap();
        let lookup = PeerLookup::probe();
        (Arc::new(App::new(config, keys, snapshots, tls, refusals, lookup)), key)
    }

    fn client(addr: std::net::SocketAddr, cert: &Path) -> StreamOwned<ClientConnection, TcpStream> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(cert).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let socket = TcpStream::connect(addr).unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        StreamOwned::new(ClientConnection::new(Arc::new(config), name).unwrap(), socket)
    }

    /// Sends one request and reads one answer (head and `Content-Length` body): its status.
    fn ask(stream: &mut impl ReadWrite, target: &str, key: &str) -> u16 {
        ask_for(stream, target, key, "").0
    }

    /// [`ask`], and the value of the answer's header `header`, if any.
    fn ask_for(
        stream: &mut impl ReadWrite,
        target: &str,
        key: &str,
        header: &str,
    ) -> (u16, Option<String>) {
        let request = format!(
            "GET /ArchitectureDashboardAPI/rest/V1{target} HTTP/1.1\r\nHost: localhost\r\n\
             x-api-key: {key}\r\nx-activation-code: {CODE}\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).unwrap();
        let mut raw = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut response = httparse::Response::new(&mut headers);
            if let Ok(httparse::Status::Complete(head)) = response.parse(&raw) {
                let length: usize = response
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .map(|h| std::str::from_utf8(h.value).unwrap().parse().unwrap())
                    .unwrap();
                if raw.len() >= head + length {
                    let value = response
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(header))
                        .map(|h| String::from_utf8_lossy(h.value).into_owned());
                    return (response.code.unwrap(), value);
                }
            }
            let n = stream.read(&mut chunk).unwrap();
            assert!(n > 0, "the connection ended before the answer");
            raw.extend_from_slice(&chunk[..n]);
        }
    }

    /// Polls the metrics until `line` is among them.
    fn wait_for_metric(app: &App, line: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = String::from_utf8(crate::scrape::exposition(app).body_bytes().to_vec());
            let text = text.unwrap();
            if text.lines().any(|l| l == line) {
                return;
            }
            assert!(Instant::now() < deadline, "no `{line}` in the metrics:\n{text}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    trait ReadWrite: Read + Write {}
    impl<T: Read + Write> ReadWrite for T {}

    #[test]
    fn a_request_waiting_for_the_store_does_not_hold_up_its_worker() {
        let dir = tempfile::tempdir().unwrap();
        let (app, key) = app(dir.path());
        // One blocking thread and room for one more job behind it.
        let pool = ColdPool::start("test-blocking", 1, 1, held_then_answered).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let worker = {
            let (app, handoff) = (Arc::clone(&app), pool.handoff().unwrap());
            std::thread::spawn(move || run_worker(app, listener, 0, handoff))
        };
        let cert = dir.path().join("tls/cert.pem");

        // The older date is only in the store: its request is parked and its read held.
        let mut cold = client(addr, &cert);
        let older = format!("/TechnicalDebt_Application?Date={OLDER}&Limit=3");
        let cold_key = key.clone();
        let cold_asker = std::thread::spawn(move || {
            let status = ask(&mut cold, &older, &cold_key);
            (status, cold)
        });
        wait_until_taken(1);

        // Meanwhile the one worker answers other clients, new and kept-alive, from memory.
        let mut warm = client(addr, &cert);
        for _ in 0..20 {
            assert_eq!(ask(&mut warm, "/TechnicalDebt_Level", &key), 200);
            assert_eq!(ask(&mut warm, "/TechnicalDebt_Application?Limit=2", &key), 200);
        }
        assert_eq!(ask(&mut client(addr, &cert), "/TechnicalDebt_Category", &key), 200);
        assert!(!cold_asker.is_finished(), "the held read was answered before it was let go");

        // A second cold request waits in the queue; a third finds it full and is told so at
        // once, with when to retry, rather than making anyone wait.
        let mut queued = client(addr, &cert);
        let second = format!("/TechnicalDebt_Application?Date={OLDER}&Limit=1&Offset=1");
        let queued_key = key.clone();
        let queued_asker = std::thread::spawn(move || ask(&mut queued, &second, &queued_key));
        wait_for_metric(&app, "aims_cold_reads_total{outcome=\"answered\"} 2");
        let mut third = client(addr, &cert);
        let third_target = format!("/TechnicalDebt_Application?Date={OLDER}");
        let answer = ask_for(&mut third, &third_target, &key, "retry-after");
        assert_eq!(answer, (503, Some("1".to_owned())), "a full queue of cold reads is a 503");
        wait_for_metric(&app, "aims_cold_reads_total{outcome=\"busy\"} 1");

        // Let go, the parked request gets its answer, and its connection goes on.
        open_gate();
        let (status, mut cold) = cold_asker.join().unwrap();
        assert_eq!(status, 200);
        assert_eq!(queued_asker.join().unwrap(), 200);
        assert_eq!(ask(&mut cold, "/TechnicalDebt_Level", &key), 200);
        // Two reads went to the blocking thread (the one refused never did): the rest came from
        // memory.
        assert_eq!(GATE.state.lock().unwrap().0, 2);

        drop((cold, warm));
        app.shutting_down.store(true, Ordering::SeqCst);
        worker.join().unwrap().unwrap();
        pool.finish();
    }
}
