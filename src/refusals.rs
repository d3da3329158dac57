//! Refused requests, logged so that a flood cannot fill the disk and none goes uncounted.
//!
//! Both ports send every refusal here: bad credentials, unparseable requests and plain HTTP on
//! the API port; a uid that may not use it, browser-shaped requests and unparseable requests on
//! the admin port. A window writes a bounded number of lines whatever comes in (see
//! [`RefusalLog`]), and its bursts become `audit action=refused` lines through [`crate::audit`].

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

pub use crate::audit::Peer;
use crate::audit::{self, RefusedBurst};
use crate::key::Fingerprint;
use crate::locks;

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
        let mut state = locks::lock(&self.state);
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
        self.roll(&mut locks::lock(&self.state));
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
        audit::refused(&RefusedBurst {
            port: self.port,
            peer: self.peer,
            count: self.count,
            throttled: self.throttled,
            first: self.first,
            last: self.last,
            status: self.status,
            reason: &self.reason,
            fingerprint: self.fingerprint.as_ref(),
        })
        .emit();
    }
}
