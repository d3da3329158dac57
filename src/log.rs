//! Logging: `log` over `env_logger`, to stderr, and the rate limit on refusal lines.
//!
//! Under systemd (`JOURNAL_STREAM` set) each line starts with its syslog priority (`<3>` ...
//! `<7>`) so journald records levels and adds its own timestamp; elsewhere each line carries an
//! RFC 3339 timestamp and the level. `RUST_LOG` overrides the configured level.
//!
//! Lines are plain `key=value` text so an operator can grep or ship them; the ones that start
//! with `audit ` form the audit trail, documented in `docs/audit.md`. Nothing here ever
//! receives a key or a key hash: callers pass fingerprints and reasons.

use std::fmt;
use std::io::Write;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use crate::key::Fingerprint;

/// Starts the logger. Safe to call more than once (later calls do nothing).
pub fn init(level: log::LevelFilter) {
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let mut builder = env_logger::Builder::new();
    builder.filter_level(level);
    // Connection-level chatter from rustls (and from ureq, the pull's client) stays out unless
    // asked for by RUST_LOG.
    builder.filter_module("rustls", log::LevelFilter::Warn);
    builder.filter_module("ureq", log::LevelFilter::Warn);
    builder.filter_module("ureq_proto", log::LevelFilter::Warn);
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

/// Who was refused, as audit lines name them: an address, or a local uid on the admin port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Address(IpAddr),
    Uid(u32),
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Address(ip) => ip.fmt(f),
            Self::Uid(uid) => write!(f, "uid:{uid}"),
        }
    }
}

/// Clients whose refusals one window keeps apart; the rest share one overflow line.
pub const MAX_BURSTS_PER_WINDOW: usize = 64;

/// Refused requests, logged so that a flood cannot fill the disk and none goes uncounted.
///
/// Each refusal gets its own `refused` line while the window's line budget lasts (the live
/// view, with the precise reason). Every refusal is also counted in its client's burst, and
/// when the window ends each burst becomes one `audit action=refused` line: who, on which
/// port, how many, when the first and last came, the last status and reason, and the
/// fingerprint of the last well-formed key presented. At most [`MAX_BURSTS_PER_WINDOW`]
/// clients are kept apart per window; beyond them refusals are summed in one `client=*` line.
/// So a window writes at most `budget + MAX_BURSTS_PER_WINDOW + 1` lines, whatever comes in.
pub struct RefusalLog {
    window: Duration,
    budget: u32,
    state: Mutex<WindowState>,
}

struct WindowState {
    started: Instant,
    logged: u32,
    bursts: Vec<Burst>,
    overflow: Option<Burst>,
}

/// One client's refusals in one window.
struct Burst {
    port: &'static str,
    peer: Option<Peer>,
    count: u64,
    throttled: u64,
    first: SystemTime,
    last: SystemTime,
    status: u16,
    reason: String,
    fingerprint: Option<Fingerprint>,
}

/// One refused request, as the log is told about it. Never a key, never a key hash.
pub struct Refused<'a> {
    pub port: &'static str,
    pub peer: Peer,
    pub reason: &'a str,
    pub status: u16,
    /// The fingerprint of the key presented, if it was well-formed.
    pub fingerprint: Option<Fingerprint>,
}

impl RefusalLog {
    pub fn new(window: Duration, budget: u32) -> Self {
        Self {
            window,
            budget,
            state: Mutex::new(WindowState {
                started: Instant::now(),
                logged: 0,
                bursts: Vec::new(),
                overflow: None,
            }),
        }
    }

    /// Records one refused request.
    pub fn refused(&self, refusal: Refused<'_>) {
        let Ok(mut state) = self.state.lock() else { return };
        self.roll(&mut state);
        let fingerprint = refusal.fingerprint.as_ref().map_or("-", Fingerprint::as_str);
        if state.logged < self.budget {
            state.logged += 1;
            log::warn!(
                "refused port={} client={} status={} reason=\"{}\" fingerprint={fingerprint}",
                refusal.port,
                refusal.peer,
                refusal.status,
                refusal.reason
            );
        }
        let now = SystemTime::now();
        let same = |b: &&mut Burst| b.port == refusal.port && b.peer == Some(refusal.peer);
        if let Some(burst) = state.bursts.iter_mut().find(same) {
            burst.add(&refusal, now);
        } else if state.bursts.len() < MAX_BURSTS_PER_WINDOW {
            state.bursts.push(Burst::start(&refusal, Some(refusal.peer), now));
        } else {
            match &mut state.overflow {
                Some(burst) => burst.add(&refusal, now),
                None => state.overflow = Some(Burst::start(&refusal, None, now)),
            }
        }
    }

    /// Emits the audit lines of a finished window, if one is due. Called from housekeeping.
    pub fn flush(&self) {
        if let Ok(mut state) = self.state.lock() {
            self.roll(&mut state);
        }
    }

    fn roll(&self, state: &mut WindowState) {
        if state.started.elapsed() < self.window {
            return;
        }
        for burst in state.bursts.drain(..).chain(state.overflow.take()) {
            burst.audit();
        }
        state.started = Instant::now();
        state.logged = 0;
    }
}

impl Burst {
    fn start(refusal: &Refused<'_>, peer: Option<Peer>, now: SystemTime) -> Self {
        let mut burst = Self {
            port: refusal.port,
            peer,
            count: 0,
            throttled: 0,
            first: now,
            last: now,
            status: refusal.status,
            reason: String::new(),
            fingerprint: None,
        };
        burst.add(refusal, now);
        burst
    }

    fn add(&mut self, refusal: &Refused<'_>, now: SystemTime) {
        self.count += 1;
        self.throttled += u64::from(refusal.status == 429);
        self.last = now;
        self.status = refusal.status;
        if self.reason != refusal.reason {
            self.reason.clear();
            self.reason.push_str(refusal.reason);
        }
        if refusal.fingerprint.is_some() {
            self.fingerprint.clone_from(&refusal.fingerprint);
        }
    }

    fn audit(&self) {
        let client = self.peer.map_or_else(|| "*".to_owned(), |p| p.to_string());
        let port = if self.peer.is_some() { self.port } else { "*" };
        log::warn!(
            "audit action=refused port={port} client={client} count={} throttled={} first={} \
             last={} status={} reason=\"{}\" fingerprint={}",
            self.count,
            self.throttled,
            humantime::format_rfc3339_millis(self.first),
            humantime::format_rfc3339_millis(self.last),
            self.status,
            self.reason,
            self.fingerprint.as_ref().map_or("-", Fingerprint::as_str),
        );
    }
}
