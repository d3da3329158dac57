//! The service manager's side channels: readiness, status and watchdog notifications
//! (`sd_notify`), and socket activation (`LISTEN_FDS`).
//!
//! Both are no-ops outside systemd: without `NOTIFY_SOCKET` notifications go nowhere, and
//! without `LISTEN_FDS` the server binds its own sockets. Nothing here can stop the server:
//! a notification that cannot be sent is logged at debug level and forgotten.

use std::io;
use std::net::TcpListener;
use std::time::Duration;

use sd_notify::NotifyState;

/// Both ports listen: tell systemd (`Type=notify`) the service is up.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A one-line state for `systemctl status`.
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// Start-up is taking long but moving (the take-over of many snapshot files): give it
/// `more` again, so the start timeout only fires when it stops moving.
pub fn extend_start(more: Duration, status: &str) {
    let usec = u32::try_from(more.as_micros()).unwrap_or(u32::MAX);
    send(&[NotifyState::ExtendTimeoutUsec(usec), NotifyState::Status(status)]);
}

/// A reload has begun; [`ready`] ends it.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// Shutdown has begun.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping: finishing requests in flight")]);
}

/// The watchdog interval systemd expects pings within (`WatchdogSec=`), if any.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled()
}

pub fn ping_watchdog() {
    send(&[NotifyState::Watchdog]);
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        log::debug!("cannot notify the service manager: {e}");
    }
}

/// The public port's listening socket, if systemd passed one (`aims-api.socket`).
///
/// Exactly one TCP listener is accepted; anything else is an error rather than a guess, since
/// serving on the wrong socket would be worse than not starting.
pub fn activated_listener() -> io::Result<Option<TcpListener>> {
    let mut fds = listenfd::ListenFd::from_env();
    match fds.len() {
        0 => Ok(None),
        1 => fds.take_tcp_listener(0),
        n => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "systemd passed {n} sockets; aims-api.socket must pass exactly one (the api port)"
            ),
        )),
    }
}
