//! Logging: `log` over `env_logger`, to stderr, and the rate limit on refusal lines.
//!
//! Under systemd (`JOURNAL_STREAM` set) each line starts with its syslog priority (`<3>` ...
//! `<7>`) so journald records levels and adds its own timestamp; elsewhere each line carries an
//! RFC 3339 timestamp and the level. `RUST_LOG` overrides the configured level.
//!
//! Lines are plain `key=value` text so an operator can grep or ship them. Nothing here ever
//! receives a key or a key hash: callers pass fingerprints and reasons.

use std::io::Write;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// Starts the logger. Safe to call more than once (later calls do nothing).
pub fn init(level: log::LevelFilter) {
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let mut builder = env_logger::Builder::new();
    builder.filter_level(level);
    // Connection-level chatter from rustls stays out unless asked for by RUST_LOG.
    builder.filter_module("rustls", log::LevelFilter::Warn);
    if let Ok(spec) = std::env::var("RUST_LOG") {
        builder.parse_filters(&spec);
    }
    builder.target(env_logger::Target::Stderr);
    builder.format(move |out, record| {
        if journald {
            writeln!(out, "<{}>{}", syslog_priority(record.level()), record.args())
        } else {
            let now = humantime::format_rfc3339_millis(SystemTime::now());
            writeln!(out, "{now} {:<5} {}", record.level(), record.args())
        }
    });
    let _ = builder.try_init();
}

fn syslog_priority(level: log::Level) -> u8 {
    match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}

/// Refused requests are logged one line each up to a budget per window; beyond it they are
/// counted and summed up in one line, so a flood of bad requests cannot fill the disk.
pub struct RefusalLog {
    window: Duration,
    budget: u32,
    state: Mutex<WindowState>,
}

struct WindowState {
    started: Instant,
    logged: u32,
    suppressed: u64,
}

impl RefusalLog {
    pub fn new(window: Duration, budget: u32) -> Self {
        Self {
            window,
            budget,
            state: Mutex::new(WindowState { started: Instant::now(), logged: 0, suppressed: 0 }),
        }
    }

    /// Records one refused request from `peer`.
    pub fn refused(&self, port: &str, peer: IpAddr, reason: &str, status: u16) {
        let Ok(mut state) = self.state.lock() else { return };
        self.roll(&mut state);
        if state.logged < self.budget {
            state.logged += 1;
            log::warn!("refused port={port} peer={peer} status={status} reason=\"{reason}\"");
        } else {
            state.suppressed += 1;
        }
    }

    /// Emits the summary of a finished window, if one is due. Called from housekeeping.
    pub fn flush(&self) {
        if let Ok(mut state) = self.state.lock() {
            self.roll(&mut state);
        }
    }

    fn roll(&self, state: &mut WindowState) {
        let elapsed = state.started.elapsed();
        if elapsed < self.window {
            return;
        }
        if state.suppressed > 0 {
            log::warn!(
                "refused summary={} window_secs={} (lines beyond {} per window are not logged)",
                state.suppressed,
                elapsed.as_secs(),
                self.budget
            );
        }
        *state = WindowState { started: Instant::now(), logged: 0, suppressed: 0 };
    }
}
