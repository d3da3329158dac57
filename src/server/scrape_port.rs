//! The scrape port (`metrics.listen`): plain HTTP or TLS, one thread per connection, capped.
//!
//! A scraper asks once every few seconds, so a blocking thread per connection is the simplest
//! design that fits; what must be bounded is what a stranger on the network can hold. The port
//! shares nothing with the API port's workers (no thread, queue or slot) and its threads never
//! touch theirs. Connections are capped at `metrics.max_connections` in total and at
//! [`PER_ADDRESS`] per client address (an IPv6 client by its /64); every read is timed out with
//! the API port's limits (handshake, header, idle). At the cap a new client takes the place of
//! the connection that has been quiet longest (idle between requests, or still in its
//! handshake), so connections that send nothing cannot lock a real scraper out; if every one
//! is mid-request, the newcomer is closed. This file only moves bytes: what a request means,
//! and every refusal's answer, log line and count, is [`crate::scrape`]'s.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::{ServerConnection, StreamOwned};
use zeroize::Zeroizing;

use crate::app::App;
use crate::connections::PerAddress;
use crate::http::{self, DateCache, HeaderTable, HttpLimits, Method, Parsed};
use crate::locks;
use crate::scrape::Scrape;

/// Connections one client address may hold: a Prometheus pair behind one NAT needs two.
pub const PER_ADDRESS: usize = 4;

/// How long a closing connection's last bytes from the client are read and dropped, so the
/// answer is not lost to a reset.
const LINGER: Duration = Duration::from_millis(250);

/// Starts the thread that accepts scrape connections; each connection gets a thread of its own.
pub fn start(app: Arc<App>, listener: TcpListener, scrape: Scrape) -> io::Result<()> {
    let port = Arc::new(Port {
        app,
        scrape,
        slots: Mutex::new(Vec::new()),
        per_address: PerAddress::new(PER_ADDRESS),
        next_id: AtomicU64::new(0),
    });
    std::thread::Builder::new()
        .name("metrics-accept".into())
        .spawn(move || accept(&port, &listener))?;
    Ok(())
}

struct Port {
    app: Arc<App>,
    scrape: Scrape,
    slots: Mutex<Vec<Slot>>,
    per_address: PerAddress,
    next_id: AtomicU64,
}

/// One open connection, as the cap sees it.
struct Slot {
    id: u64,
    /// A handle on the socket, to close it under its thread when it must make room.
    socket: TcpStream,
    quiet: Quiet,
}

/// Since when a connection has owed nobody an answer (in its handshake, or idle between
/// requests); `None` while a request is in flight. Its thread sets it, the cap reads it.
type Quiet = Arc<Mutex<Option<Instant>>>;

fn accept(port: &Arc<Port>, listener: &TcpListener) {
    loop {
        let (socket, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                log::warn!("accept on the scrape port failed: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if port.app.shutting_down.load(Ordering::Relaxed) {
            return;
        }
        if !port.per_address.admit(peer.ip()) {
            port.scrape.refuse_connection(&port.app, peer);
            continue;
        }
        let Some((id, quiet)) = port.take_slot(&socket) else {
            log::debug!("scrape port: every connection is mid-request; closing {peer}");
            port.per_address.release(peer.ip());
            continue;
        };
        let handle = Arc::clone(port);
        let spawned = std::thread::Builder::new().name("metrics-conn".into()).spawn(move || {
            Conn { port: &handle, peer, quiet }.serve(socket);
            handle.give_back(id, peer);
        });
        if let Err(e) = spawned {
            log::warn!("scrape port: cannot start a thread for {peer}: {e}");
            port.give_back(id, peer);
        }
    }
}

impl Port {
    /// A slot for a new connection (its id, and the quiet mark its thread keeps), making room
    /// at the cap by closing the connection quiet longest; `None` if every one is busy.
    fn take_slot(&self, socket: &TcpStream) -> Option<(u64, Quiet)> {
        let handle = socket.try_clone().ok()?;
        let mut slots = locks::lock(&self.slots);
        if slots.len() >= self.app.config.metrics.max_connections {
            let quietest = slots
                .iter()
                .enumerate()
                .filter_map(|(i, s)| Some((i, (*locks::lock(&s.quiet))?)))
                .min_by_key(|(_, since)| *since)
                .map(|(i, _)| i)?;
            // Its thread wakes with an error, gives back its address's share, and ends.
            let evicted = slots.swap_remove(quietest);
            let _ = evicted.socket.shutdown(Shutdown::Both);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let quiet: Quiet = Arc::new(Mutex::new(Some(Instant::now())));
        slots.push(Slot { id, socket: handle, quiet: Arc::clone(&quiet) });
        Some((id, quiet))
    }

    fn give_back(&self, id: u64, peer: SocketAddr) {
        locks::lock(&self.slots).retain(|s| s.id != id);
        self.per_address.release(peer.ip());
    }
}

/// The stream a request travels on: the socket, or TLS over it.
enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ServerConnection, TcpStream>>),
}

impl Stream {
    fn socket(&self) -> &TcpStream {
        match self {
            Self::Plain(socket) => socket,
            Self::Tls(tls) => &tls.sock,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Plain(socket) => socket.read(buf),
            Self::Tls(tls) => tls.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Plain(socket) => socket.write(buf),
            Self::Tls(tls) => tls.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Plain(socket) => socket.flush(),
            Self::Tls(tls) => tls.flush(),
        }
    }
}

struct Conn<'p> {
    port: &'p Port,
    peer: SocketAddr,
    quiet: Quiet,
}

impl Conn<'_> {
    fn serve(&self, socket: TcpStream) {
        let app = &self.port.app;
        let limits = app.config.api.limits;
        let _ = socket.set_write_timeout(Some(limits.idle_timeout));
        let _ = socket.set_nodelay(true);
        let mut stream = if app.config.metrics.tls {
            match self.handshake(socket) {
                Some(tls) => Stream::Tls(Box::new(tls)),
                None => return,
            }
        } else {
            Stream::Plain(socket)
        };
        // The head holds the bearer token: sized once and wiped when the connection goes.
        let mut buf = Zeroizing::new(Vec::with_capacity(limits.max_header_bytes + 4096));
        let mut date = DateCache::default();
        while let Some(head_len) = self.read_head(&mut stream, &mut buf, &limits) {
            let mut headers = HeaderTable::new();
            let (response, keep_alive, head_only) =
                match http::parse(&buf[..head_len], &mut headers, &limits) {
                    Ok(Parsed::Complete(request, _)) => {
                        let response = self.port.scrape.handle(app, &request, self.peer);
                        let keep_alive = request.keep_alive
                            && !response.close
                            && !app.shutting_down.load(Ordering::Relaxed);
                        (response, keep_alive, request.method == Method::Head)
                    }
                    Ok(Parsed::Partial) => return,
                    Err(e) => (self.port.scrape.refuse_malformed(app, self.peer, e), false, false),
                };
            let mut out = Vec::with_capacity(response.encoded_len_bound());
            response.write_to(&mut out, date.now(), head_only, keep_alive);
            if stream.write_all(&out).and_then(|()| stream.flush()).is_err() || !keep_alive {
                return self.close(stream);
            }
            // Pipelined bytes stay; the answered head goes, wiped.
            buf[..head_len].fill(0);
            buf.drain(..head_len);
        }
    }

    /// The TLS handshake with the API's certificate, within `api.handshake_timeout_secs`.
    fn handshake(&self, socket: TcpStream) -> Option<StreamOwned<ServerConnection, TcpStream>> {
        let app = &self.port.app;
        let deadline = Instant::now() + app.config.api.handshake_timeout;
        let mut tls = ServerConnection::new(app.tls_config()).ok()?;
        let mut socket = socket;
        while tls.is_handshaking() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || socket.set_read_timeout(Some(left)).is_err() {
                app.metrics.scrape().handshake_failure();
                return None;
            }
            if let Err(e) = tls.complete_io(&mut socket) {
                log::debug!("scrape port: TLS handshake with {} failed: {e}", self.peer);
                app.metrics.scrape().handshake_failure();
                return None;
            }
        }
        app.metrics
            .scrape()
            .handshake(tls.handshake_kind() == Some(rustls::HandshakeKind::Resumed));
        Some(StreamOwned::new(tls, socket))
    }

    /// Reads until `buf` holds a whole head: the idle timeout for its first byte, then the
    /// header timeout for the rest. `None` when the client closes, stalls or breaks off.
    fn read_head(
        &self,
        stream: &mut Stream,
        buf: &mut Zeroizing<Vec<u8>>,
        limits: &HttpLimits,
    ) -> Option<usize> {
        self.set_quiet(buf.is_empty());
        let mut deadline = (!buf.is_empty()).then(|| Instant::now() + limits.header_timeout);
        loop {
            if !buf.is_empty() {
                let mut headers = HeaderTable::new();
                match http::parse(buf, &mut headers, limits) {
                    Ok(Parsed::Complete(_, n)) => return Some(n),
                    // Refused at once with the reason, by the caller.
                    Err(_) => return Some(buf.len()),
                    Ok(Parsed::Partial) => {}
                }
            }
            let wait = match deadline {
                None => limits.idle_timeout,
                Some(at) => at.saturating_duration_since(Instant::now()),
            };
            if wait.is_zero() || stream.socket().set_read_timeout(Some(wait)).is_err() {
                return None;
            }
            let room = buf.capacity() - buf.len();
            let mut chunk = Zeroizing::new([0u8; 4096]);
            let want = room.min(chunk.len());
            if want == 0 {
                return Some(buf.len());
            }
            match stream.read(&mut chunk[..want]) {
                Ok(0) => return None,
                Ok(n) => {
                    buf.extend_from_slice(&chunk[..n]);
                    if deadline.is_none() {
                        self.set_quiet(false);
                        deadline = Some(Instant::now() + limits.header_timeout);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
    }

    /// Marks the connection quiet (keeping since when, if it already was) or busy.
    fn set_quiet(&self, quiet: bool) {
        let mut mark = locks::lock(&self.quiet);
        match (quiet, *mark) {
            (true, Some(_)) => {}
            (true, None) => *mark = Some(Instant::now()),
            (false, _) => *mark = None,
        }
    }

    /// Ends the connection without losing the last answer: a TLS close_notify, a FIN, then
    /// what the client still sends is read briefly and dropped.
    fn close(&self, mut stream: Stream) {
        self.set_quiet(false);
        if let Stream::Tls(tls) = &mut stream {
            tls.conn.send_close_notify();
            let _ = tls.conn.complete_io(&mut tls.sock);
        }
        let mut socket = stream.socket();
        let _ = socket.shutdown(Shutdown::Write);
        let deadline = Instant::now() + LINGER;
        let mut sink = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || socket.set_read_timeout(Some(left)).is_err() {
                return;
            }
            match socket.read(&mut sink) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }
}
