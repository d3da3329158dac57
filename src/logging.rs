//! Logging: `log` over `env_logger`, to stderr, with a level a reload can change, and rustls'
//! warnings about peers taken off the API workers' log.
//!
//! Under systemd (`JOURNAL_STREAM` set) each line starts with its syslog priority (`<3>` ...
//! `<7>`) so journald records levels and adds its own timestamp; elsewhere each line carries an
//! RFC 3339 timestamp and the level. `RUST_LOG` overrides the configured level (and a reload
//! then leaves it alone).
//!
//! rustls logs a WARN line for some things a peer does (an IP address or an invalid name as
//! SNI, warning alerts), with what the peer sent in it, and outside any budget: 2,000 canned
//! handshakes wrote 2,000 lines. On a thread that asked for it ([`divert_tls_warnings`], the API
//! workers) such a line is not written: it is classified into a fixed event and kept until the
//! worker takes it ([`take_tls_warnings`]) and gives it, with the client's address, to the
//! refusal log's budget ([`crate::refusals`]). What the peer sent is never written.
//!
//! Lines are plain `key=value` text so an operator can grep or ship them; the ones that start
//! with `audit ` form the audit trail, rendered by [`crate::audit`] and documented in
//! `docs/audit.md`.

use std::cell::{Cell, RefCell};
use std::fmt::Write as _;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

/// The configured level, as `LevelFilter as usize`; only used without `RUST_LOG`.
static LEVEL: AtomicUsize = AtomicUsize::new(log::LevelFilter::Info as usize);
/// Whether `RUST_LOG` decides the levels.
static FROM_ENV: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Warnings a thread holds for its caller at most; more are dropped (each connection's turn
/// takes them, and one turn cannot make many).
const MAX_HELD: usize = 16;

thread_local! {
    static DIVERT: Cell<bool> = const { Cell::new(false) };
    static HELD: RefCell<Vec<TlsWarning>> = const { RefCell::new(Vec::new()) };
}

/// A rustls warning about a peer, in the server's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlsWarning {
    /// A fixed word for the `event=` field.
    pub event: &'static str,
    /// What it means, without anything the peer sent.
    pub detail: &'static str,
}

/// Starts the logger. Safe to call more than once (later calls do nothing).
pub fn init(level: log::LevelFilter) {
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let mut builder = env_logger::Builder::new();
    // The level is ours to check (a reload changes it); env_logger keeps the module filters.
    builder.filter_level(log::LevelFilter::Trace);
    // Connection-level chatter from rustls (and from ureq, the pull's client) stays out unless
    // asked for by RUST_LOG.
    builder.filter_module("rustls", log::LevelFilter::Warn);
    builder.filter_module("ureq", log::LevelFilter::Warn);
    builder.filter_module("ureq_proto", log::LevelFilter::Warn);
    let from_env = match std::env::var("RUST_LOG") {
        Ok(spec) => {
            builder.filter_level(log::LevelFilter::Info);
            builder.parse_filters(&spec);
            true
        }
        Err(_) => false,
    };
    builder.target(env_logger::Target::Stderr);
    builder.format(move |out, record| {
        if journald {
            writeln!(out, "<{}>{}", syslog_priority(record.level()), record.args())
        } else {
            let now = humantime::format_rfc3339_millis(SystemTime::now());
            writeln!(out, "{now} {:<5} {}", record.level(), record.args())
        }
    });
    let inner = builder.build();
    let env_max = inner.filter();
    if log::set_boxed_logger(Box::new(Logger { inner })).is_err() {
        return;
    }
    FROM_ENV.store(from_env, Ordering::Relaxed);
    LEVEL.store(level as usize, Ordering::Relaxed);
    // Warnings always reach the logger, whatever the level: rustls' must be diverted and
    // counted even when the log shows errors only.
    let max = if from_env { env_max } else { level };
    log::set_max_level(max.max(log::LevelFilter::Warn));
}

/// Changes the level (a reload). Returns false, changing nothing, when `RUST_LOG` decides.
pub fn set_level(level: log::LevelFilter) -> bool {
    if FROM_ENV.load(Ordering::Relaxed) {
        return false;
    }
    LEVEL.store(level as usize, Ordering::Relaxed);
    log::set_max_level(level.max(log::LevelFilter::Warn));
    true
}

fn level() -> log::LevelFilter {
    match LEVEL.load(Ordering::Relaxed) {
        0 => log::LevelFilter::Off,
        1 => log::LevelFilter::Error,
        2 => log::LevelFilter::Warn,
        3 => log::LevelFilter::Info,
        4 => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    }
}

/// From now on, rustls' warnings on this thread are held for [`take_tls_warnings`] instead of
/// written.
pub fn divert_tls_warnings() {
    DIVERT.with(|d| d.set(true));
}

/// Hands each warning this thread holds to `note`, oldest first, and forgets them.
pub fn take_tls_warnings(mut note: impl FnMut(TlsWarning)) {
    let held = HELD.with(|h| std::mem::take(&mut *h.borrow_mut()));
    for warning in held {
        note(warning);
    }
}

struct Logger {
    inner: env_logger::Logger,
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.inner.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        if record.level() <= log::Level::Warn
            && record.target().starts_with("rustls")
            && DIVERT.with(Cell::get)
        {
            let warning = classify(record);
            HELD.with(|h| {
                let mut held = h.borrow_mut();
                if held.len() < MAX_HELD {
                    held.push(warning);
                }
            });
            return;
        }
        if !FROM_ENV.load(Ordering::Relaxed) && record.level() > level() {
            return;
        }
        self.inner.log(record);
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

/// Which rustls warning a record is, by the start of its text (read into a small buffer, so
/// what the peer sent is neither kept nor copied far).
fn classify(record: &log::Record<'_>) -> TlsWarning {
    let mut start = Prefix::default();
    let _ = write!(start, "{}", record.args());
    let text = start.as_str();
    let (event, detail) = if text.starts_with("Illegal SNI extension: duplicate") {
        ("sni_duplicate", "the ClientHello names more than one host (SNI): refused")
    } else if text.starts_with("Illegal SNI extension: ignoring IP address") {
        (
            "sni_ip_address",
            "the ClientHello names an IP address as its host (SNI), which RFC 6066 forbids: ignored",
        )
    } else if text.starts_with("Illegal SNI hostname") {
        ("sni_invalid", "the ClientHello names a host (SNI) that is not a valid DNS name: ignored")
    } else if text.starts_with("TLS alert warning received") {
        ("warning_alert_received", "the client sent a TLS warning alert")
    } else if text.starts_with("Sending warning alert") {
        ("warning_alert_sent", "the server sent the client a TLS warning alert")
    } else if text.starts_with("Received a ") {
        ("unexpected_message", "the client sent a TLS handshake message out of order")
    } else {
        (
            "rustls_warning",
            "rustls warned about this connection (its text is withheld: it may hold what the client sent)",
        )
    };
    TlsWarning { event, detail }
}

/// The first bytes written to it; the rest is dropped.
struct Prefix {
    bytes: [u8; 64],
    len: usize,
}

impl Default for Prefix {
    fn default() -> Self {
        Self { bytes: [0; 64], len: 0 }
    }
}

impl Prefix {
    fn as_str(&self) -> &str {
        // Cut on a character boundary by the writer; the check only guards that promise.
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or("")
    }
}

impl std::fmt::Write for Prefix {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        for c in s.chars() {
            let mut utf8 = [0u8; 4];
            let c = c.encode_utf8(&mut utf8).as_bytes();
            if self.len + c.len() > self.bytes.len() {
                return Err(std::fmt::Error);
            }
            self.bytes[self.len..self.len + c.len()].copy_from_slice(c);
            self.len += c.len();
        }
        Ok(())
    }
}

fn syslog_priority(level: log::Level) -> u8 {
    match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classified(text: std::fmt::Arguments<'_>) -> TlsWarning {
        let record = log::Record::builder().args(text).target("rustls::msgs").build();
        classify(&record)
    }

    #[test]
    fn rustls_warnings_are_classified_without_what_the_peer_sent() {
        let sent = "a..b\"\n forged=1";
        let warning = classified(format_args!("Illegal SNI hostname received {sent:?}"));
        assert_eq!(warning.event, "sni_invalid");
        assert!(!warning.detail.contains("a..b"));
        let ip = classified(format_args!(
            "Illegal SNI extension: ignoring IP address presented as hostname ({:?})",
            "127.0.0.1"
        ));
        assert_eq!(ip.event, "sni_ip_address");
        let long = "x".repeat(10_000);
        assert_eq!(classified(format_args!("{long}")).event, "rustls_warning");
    }
}
