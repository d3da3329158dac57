//! `serve`: from a checked configuration to two listening ports; the transport of both.
//!
//! Everything under `server` moves bytes: sockets, TLS, timeouts, the connection cap, signals.
//! What a request means is decided by the handlers it calls, [`crate::api`] and
//! [`crate::admin`], which change the shared [`App`]; nothing below this module names it.
//!
//! Start-up is ordered so that nothing listens before everything it needs is ready: harden the
//! process, take the key store's lock and read it, load the snapshots (a bad one is logged and
//! skipped, never fatal: the others still deserve to be served), load or make the certificate,
//! bind both ports, and only then start the workers. Any failure on the way stops the start with a
//! [`ServeError`] that names what failed and on what.

mod admin_port;
mod api_conn;
mod api_port;
mod blocking;
mod scrape_port;
mod supervisor;

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use crate::app::App;
use crate::config::Config;
use crate::hardening;
use crate::keys::KeyManager;
use crate::keys::usage::Usage;
use crate::keystore::{KeyStore, StoreError};
use crate::peer::{Method, PeerLookup};
use crate::refusals::RefusalLog;
use crate::snapshot::Snapshots;
use crate::snapshot::store::OpenError;
use crate::systemd;
use crate::tls::{self, TlsError};

/// Pending connections the kernel holds for us while every slot is busy.
const LISTEN_BACKLOG: i32 = 1024;

#[derive(Debug)]
pub enum ServeError {
    Store(StoreError),
    Snapshots(OpenError),
    Tls(TlsError),
    /// `metrics.bearer_token_file` cannot be used: the scrape port would refuse everyone.
    Scrape(crate::scrape::TokenFileError),
    Bind {
        port: &'static str,
        addr: SocketAddr,
        source: io::Error,
    },
    BindUnix {
        path: PathBuf,
        source: io::Error,
    },
    /// `admin.unix_socket` names something that is not a socket: it is not ours to remove.
    NotASocket(PathBuf),
    Activation(io::Error),
    Signals(io::Error),
    Thread(io::Error),
    /// An API worker panicked (a bug): the server stopped, and says so with its exit status.
    WorkerPanicked {
        worker: String,
        message: String,
    },
}

impl fmt::Display for ServeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Store(e) => e.fmt(f),
            Self::Snapshots(e) => e.fmt(f),
            Self::Tls(e) => e.fmt(f),
            Self::Scrape(e) => e.fmt(f),
            Self::Bind { port, addr, source } => {
                write!(f, "cannot listen on {addr} for the {port} port: {source}")
            }
            Self::BindUnix { path, source } => write!(
                f,
                "cannot listen on the admin socket {} ({source}): its folder must exist and be \
                 writable (under systemd, RuntimeDirectory= makes it)",
                path.display()
            ),
            Self::NotASocket(path) => write!(
                f,
                "admin.unix_socket {} exists and is not a socket: move it away, or name \
                 another path",
                path.display()
            ),
            Self::Activation(e) => write!(f, "cannot use the socket passed by systemd: {e}"),
            Self::Signals(e) => write!(f, "cannot install the signal handlers: {e}"),
            Self::Thread(e) => write!(f, "cannot start a worker thread: {e}"),
            Self::WorkerPanicked { worker, message } => write!(
                f,
                "{worker} panicked ({message}); the server stopped: please report it with the log"
            ),
        }
    }
}

impl std::error::Error for ServeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Store(e) => Some(e),
            Self::Snapshots(e) => Some(e),
            Self::Tls(e) => Some(e),
            Self::Scrape(e) => Some(e),
            Self::Bind { source, .. } | Self::BindUnix { source, .. } => Some(source),
            Self::Activation(e) | Self::Signals(e) | Self::Thread(e) => Some(e),
            Self::NotASocket(_) | Self::WorkerPanicked { .. } => None,
        }
    }
}

/// Runs the appliance until SIGTERM or SIGINT, then finishes what is in flight.
pub fn serve(config: Config) -> Result<(), ServeError> {
    hardening::apply();
    let (store, record) = KeyStore::open(&config.state_dir).map_err(ServeError::Store)?;
    log::info!(
        "key store {}: {} (generation {})",
        store.path().display(),
        record.state().as_str(),
        record.generation
    );
    // After the store's lock: no other server works in this state folder while we read it.
    // An upgrade from a release that kept one file per date imports them all before the
    // ports open: each file keeps the service manager's start timeout at bay.
    let mut progress = |done: usize, of: usize| {
        systemd::extend_start(
            Duration::from_secs(60),
            &format!("taking over snapshot files: {done} of {of} in the history store"),
        );
        if done.is_multiple_of(10) {
            log::info!("snapshots: taking over file {} of {of}", done + 1);
        }
    };
    let snapshots = Snapshots::open(
        &config.state_dir,
        config.activation_code.as_str(),
        config.snapshot_memory,
        config.snapshot_compaction,
        &mut progress,
    )
    .map_err(ServeError::Snapshots)?;
    match snapshots.catalog().newest() {
        Some(newest) => log::info!("serving the snapshot of {} by default", newest.date()),
        None => log::warn!(
            "no snapshot loaded: the API answers 404 until one is imported \
             (aims-api snapshot import FILE --date YYYY-MM-DD)"
        ),
    }
    let (tls_config, cert) = tls::load(&config, None).map_err(ServeError::Tls)?;
    log::info!(
        "certificate {} sha256={}{}",
        cert.cert_path.display(),
        cert.sha256,
        if cert.self_signed { " (self-signed: give it to clients with curl --cacert)" } else { "" }
    );
    let api_listener = match systemd::activated_listener().map_err(ServeError::Activation)? {
        Some(listener) => {
            log::info!("api port: using the socket passed by systemd (api.listen is not used)");
            listener
        }
        None => bind("api", config.api.listen)?,
    };
    let admin_listener = bind("admin", config.admin.listen)?;
    let scrape = match config.metrics.listen {
        Some(addr) => {
            let policy = crate::scrape::Scrape::new(&config.metrics, config.api.throttle)
                .map_err(ServeError::Scrape)?;
            Some((bind("metrics", addr)?, policy))
        }
        None => None,
    };
    let admin_socket = config.admin.unix_socket.as_deref().map(bind_unix).transpose()?;
    let api_addr = local_addr(&api_listener, config.api.listen);
    let admin_addr = local_addr(&admin_listener, config.admin.listen);
    check_file_limit(&config);
    let mut signals = supervisor::Signals::install().map_err(ServeError::Signals)?;
    let refusals = Arc::new(RefusalLog::new(config.refusal_log.window, config.refusal_log.lines));
    let usage = Usage::load(&config.state_dir, Arc::clone(&refusals));
    let workers = config.api.workers;
    let keys = KeyManager::new(
        store,
        record,
        &config.activation_code,
        usage,
        config.key_max_lifetime,
        workers,
        crate::keys::SystemClock,
    );
    let lookup = PeerLookup::probe();
    let app = Arc::new(App::new(config, keys, snapshots, (tls_config, cert), refusals, lookup));
    // The key's own thread: the durable half of an exposed key's revoke, and the usage merge.
    let keys_thread = {
        let app = Arc::clone(&app);
        spawn("keys".to_owned(), move || app.keys.run_housekeeping())?
    };

    match app.uid_lookup.method() {
        method @ Method::SockDiag => log::info!("admin port: client uids by {method}"),
        method @ Method::ProcNet(_) => log::warn!("admin port: client uids by {method}"),
    }
    admin_port::start(&app, admin_listener, admin_socket).map_err(ServeError::Thread)?;
    let cold = start_blocking_threads(app.config.api.workers)?;
    let mut api_workers = Vec::new();
    for id in 0..app.config.api.workers {
        let listener = api_listener.try_clone().map_err(ServeError::Thread)?;
        let app = Arc::clone(&app);
        let handoff = cold.handoff().ok_or_else(|| {
            ServeError::Thread(io::Error::other("the api blocking threads are already stopped"))
        })?;
        api_workers.push(spawn(format!("api-{id}"), move || {
            if let Err(e) = api_port::run_worker(app, listener, id, handoff) {
                log::error!("api worker {id} stopped: {e}");
            }
        })?);
    }
    // The workers hold the only other copies: when they let go at shutdown, the port closes
    // and new clients are refused at once instead of queueing for a server that is leaving.
    // One socket shared by all workers, not one each with SO_REUSEPORT: measured here (bench/run
    // on 2 cores), the kernel's even spread of connections over per-worker sockets wakes every
    // worker for a few events each and cost 10% more CPU per request, while a shared socket
    // lets a busy worker take a whole burst, as nginx's workers do.
    drop(api_listener);
    if let Some((listener, policy)) = scrape {
        let configured = app.config.metrics.listen.unwrap_or(admin_addr);
        let addr = local_addr(&listener, configured);
        scrape_port::start(Arc::clone(&app), listener, policy).map_err(ServeError::Thread)?;
        let scheme = if app.config.metrics.tls { "https" } else { "http" };
        let token = match &app.config.metrics.bearer_token_file {
            Some(path) => format!("bearer token from {}", path.display()),
            None => "no token".to_owned(),
        };
        log::info!("metrics listening on {scheme}://{addr}/metrics ({token})");
    }
    log::info!("admin listening on http://{admin_addr}");
    if let Some(path) = &app.config.admin.unix_socket {
        log::info!("admin listening on unix:{}", path.display());
    }
    log::info!("api listening on https://{api_addr} ({} workers)", app.config.api.workers);
    systemd::ready(&app.status_line());

    supervisor::supervise(&app, &mut signals);

    log::info!("shutting down: no new connections; finishing requests in flight");
    systemd::stopping();
    app.shutting_down.store(true, Ordering::SeqCst);
    // A worker that panicked is a bug: its panic is logged and the exit status says so, once
    // the rest of the shutdown is done (the key store and the history closed cleanly).
    let mut panicked = None;
    for worker in api_workers {
        let name = worker.thread().name().unwrap_or("an api worker").to_owned();
        if let Err(panic) = worker.join() {
            let message = panic_message(panic.as_ref());
            log::error!("{name} panicked: {message}");
            panicked.get_or_insert(ServeError::WorkerPanicked { worker: name, message });
        }
    }
    // The workers held the only other ways in: what is queued is answered to nobody, quickly.
    cold.finish();
    // The key thread finishes the write it is doing; quiesce does what it left, and waits for
    // an admin key change under way: once it returns, none is half done. The admin threads end
    // with the process.
    app.keys.stop_housekeeping();
    if keys_thread.join().is_err() {
        log::error!("the key thread panicked: queued revokes are written now");
    }
    app.keys.quiesce();
    if let Err(e) = app.keys.save_usage() {
        log::warn!("{e}: the key usage since the last minute is lost");
    }
    // Marks the history store clean, so `snapshot verify` can read it while the server is down
    // (an import still running on an admin thread finishes first).
    app.snapshots.close();
    if let Some(path) = &app.config.admin.unix_socket {
        let _ = std::fs::remove_file(path);
    }
    log::info!("stopped");
    panicked.map_or(Ok(()), Err)
}

/// What a panic said, when it said it with a string (as `panic!` does).
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(text), _) => (*text).to_owned(),
        (_, Some(text)) => text.clone(),
        _ => "a panic without a message".to_owned(),
    }
}

/// The API port's blocking threads (see [`blocking`]): one for every two workers, at least one,
/// so on the 2-core machine that serves two workers, cold reads of older dates use at most one
/// core, at a lower priority, and clients of data in memory keep the other. A queue of 64
/// requests waiting for them (each holds a connection, not a thread) absorbs a burst; past it,
/// `503` with `Retry-After`.
fn start_blocking_threads(workers: usize) -> Result<api_port::ColdPool, ServeError> {
    api_port::ColdPool::start("api-blocking", workers.div_ceil(2).max(1), 64, api_port::answer_cold)
        .map_err(ServeError::Thread)
}

fn bind(port: &'static str, addr: SocketAddr) -> Result<TcpListener, ServeError> {
    let fail = |source| ServeError::Bind { port, addr, source };
    let socket =
        Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(fail)?;
    socket.set_reuse_address(true).map_err(fail)?;
    socket.bind(&addr.into()).map_err(fail)?;
    socket.listen(LISTEN_BACKLOG).map_err(fail)?;
    Ok(socket.into())
}

/// Listens on the admin Unix socket at `path`, mode 0666: who may use it is decided per
/// connection by its uid (`SO_PEERCRED`), as on the TCP port, which any local user can reach
/// too, so a refused user gets a 403 that says why rather than "permission denied". A socket
/// left by a server that is gone is replaced (the key store's lock, taken before this, shows
/// no other server runs here); anything else at `path` is refused.
fn bind_unix(path: &Path) -> Result<UnixListener, ServeError> {
    let fail = |source| ServeError::BindUnix { path: path.to_owned(), source };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path).map_err(fail)?,
        Ok(_) => return Err(ServeError::NotASocket(path.to_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(fail(e)),
    }
    let listener = UnixListener::bind(path).map_err(fail)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).map_err(fail)?;
    Ok(listener)
}

fn local_addr(listener: &TcpListener, configured: SocketAddr) -> SocketAddr {
    listener.local_addr().unwrap_or(configured)
}

fn spawn<F: FnOnce() + Send + 'static>(
    name: String,
    f: F,
) -> Result<thread::JoinHandle<()>, ServeError> {
    thread::Builder::new().name(name).spawn(f).map_err(ServeError::Thread)
}

/// Every connection is a file descriptor: warn when the limit is below the connection cap.
fn check_file_limit(config: &Config) {
    let needed = config.api.max_connections as u64 + config.admin.workers as u64 + 64;
    if let Some(limit) = hardening::open_file_limit()
        && limit < needed
    {
        log::warn!(
            "the open-file limit ({limit}) is below api.max_connections plus overhead ({needed}): \
                 raise LimitNOFILE or lower max_connections"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_panic_is_reported_with_its_message_and_errors_keep_their_cause() {
        let joined = thread::spawn(|| panic!("worker {} broke", 3)).join();
        let message = panic_message(joined.unwrap_err().as_ref());
        assert_eq!(message, "worker 3 broke");
        let joined = thread::spawn(|| std::panic::panic_any(7_u8)).join();
        assert_eq!(panic_message(joined.unwrap_err().as_ref()), "a panic without a message");
        let bind = ServeError::Bind {
            port: "api",
            addr: "127.0.0.1:1".parse().unwrap(),
            source: io::Error::from(io::ErrorKind::AddrInUse),
        };
        let cause = std::error::Error::source(&bind).map(|e| e.to_string());
        assert_eq!(cause, Some(io::Error::from(io::ErrorKind::AddrInUse).to_string()));
    }
}
