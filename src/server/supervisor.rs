//! The main thread once the workers run: signals, the watchdog, reloads, and the shutdown.
//!
//! Signal handlers only set a flag and write a byte to a socket pair (signal-hook's safe
//! primitives); the main thread sleeps on the other end and does the real work in normal
//! context. `SIGHUP` reloads the certificate, `SIGTERM` and `SIGINT` start a graceful shutdown:
//! the workers stop accepting and finish requests in flight within `api.shutdown_timeout_secs`.
//! Under `WatchdogSec=` the main thread pings systemd only while every API worker keeps turning
//! its loop, so a wedged worker gets the service restarted instead of silently stuck. Once a day
//! it has the certificate's expiry checked (a self-signed one is renewed 30 days ahead).

use std::io::{self, Read};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use crate::app::App;
use crate::systemd;

/// How often [`App::housekeeping`] runs (it decides itself what is due).
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(60);

/// The signals the server acts on, as flags plus a wake-up socket.
pub struct Signals {
    reload: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    wake: UnixStream,
}

impl Signals {
    pub fn install() -> io::Result<Self> {
        let reload = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let (wake, waker) = UnixStream::pair()?;
        waker.set_nonblocking(true)?;
        signal_hook::flag::register(SIGHUP, Arc::clone(&reload))?;
        for signal in [SIGTERM, SIGINT] {
            signal_hook::flag::register(signal, Arc::clone(&stop))?;
        }
        for signal in [SIGHUP, SIGTERM, SIGINT] {
            signal_hook::low_level::pipe::register(signal, waker.try_clone()?)?;
        }
        Ok(Self { reload, stop, wake })
    }

    /// Sleeps until a signal arrives or `timeout` passes.
    fn wait(&mut self, timeout: Duration) {
        let _ = self.wake.set_read_timeout(Some(timeout));
        let mut drain = [0u8; 64];
        let _ = self.wake.read(&mut drain);
    }
}

/// Runs until SIGTERM or SIGINT.
pub fn supervise(app: &App, signals: &mut Signals) {
    let watchdog = systemd::watchdog_interval();
    if let Some(interval) = watchdog {
        log::info!("systemd watchdog every {interval:?}");
    }
    // Half the watchdog's interval, as sd_watchdog_enabled(3) advises, at least once a minute
    // for the housekeeping, and as often as the certificate's expiry is checked.
    let cert_check = crate::tls::expiry_check_interval();
    let tick =
        watchdog.map_or(HOUSEKEEPING_EVERY, |w| (w / 2).min(HOUSEKEEPING_EVERY)).min(cert_check);
    let mut cert_checked = Instant::now();
    app.housekeeping();
    loop {
        signals.wait(tick);
        app.housekeeping();
        if cert_checked.elapsed() >= cert_check {
            cert_checked = Instant::now();
            app.check_certificate();
        }
        if signals.stop.swap(false, Ordering::SeqCst) {
            return;
        }
        if signals.reload.swap(false, Ordering::SeqCst) {
            // The outcome is logged inside; a refused reload keeps the old certificate.
            let _ = app.reload("SIGHUP");
        }
        if let Some(interval) = watchdog {
            if app.workers_alive(interval) {
                systemd::ping_watchdog();
            } else {
                log::error!(
                    "an api worker has not turned its loop in {interval:?}: withholding the watchdog ping"
                );
            }
        }
    }
}
