//! Everything the server writes about strangers, within one budget: refusals, TLS trouble, keys
//! seen in clear text, and new client addresses.
//!
//! A line caused by traffic is a line an attacker can make the server write. So every such line
//! goes through [`RefusalLog`]: per [`Kind`], at most `refusal_log_lines` lines a window of
//! `refusal_log_window_secs`; past it the lines are only counted, and when the window ends
//! each kind that was held back writes one line with how many it held back. Every event and
//! every line held back is counted for `/metrics` too, so nothing goes unseen. Nothing a peer
//! sent is written as it was sent: reasons are the server's own words, and quoted values are
//! escaped, so a crafted value cannot forge a line or a field.
//!
//! Refusals also form bursts per client, and when the window ends each burst becomes one
//! `audit action=refused` line through [`crate::audit`].

use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

pub use crate::audit::Peer;
use crate::audit::{self, RefusedBurst};
use crate::key::Fingerprint;
use crate::locks;

/// Clients whose refusals one window keeps apart; the rest share one overflow line.
pub const MAX_BURSTS_PER_WINDOW: usize = 64;

/// What a line about traffic is about. Each kind has its own budget, so a flood of one cannot
/// silence another (a TLS flood must not hide a key exposure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A refused request or connection (`refused port=…`).
    Refused,
    /// A TLS handshake that failed, or that rustls warned about (`tls port=api …`).
    Tls,
    /// The live or grace key seen in a plain-HTTP request (`key exposure: …`, ERROR).
    Exposure,
    /// The first request a key admitted from an address (`audit action=key.new_address`).
    NewAddress,
}

impl Kind {
    pub const ALL: [Self; 4] = [Self::Refused, Self::Tls, Self::Exposure, Self::NewAddress];

    /// The `kind` label of the metrics and of the summary lines.
    pub fn label(self) -> &'static str {
        match self {
            Self::Refused => "refused",
            Self::Tls => "tls",
            Self::Exposure => "key_exposure",
            Self::NewAddress => "new_address",
        }
    }

    fn level(self) -> log::Level {
        match self {
            Self::Refused | Self::Tls => log::Level::Warn,
            Self::Exposure => log::Level::Error,
            Self::NewAddress => log::Level::Info,
        }
    }
}

/// Events and held-back lines per kind, since start, for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KindCounts {
    pub events: u64,
    pub suppressed: u64,
}

/// The log of everything traffic makes the server say; see the module doc.
///
/// For refusals, each gets its own `refused` line while the window's budget lasts (the live
/// view, with the precise reason), and every refusal is also counted in its client's burst:
/// when the window ends each burst becomes one `audit action=refused` line (who, on which port,
/// how many, when the first and last came, the last status and reason, the fingerprint of the
/// last well-formed key presented). At most [`MAX_BURSTS_PER_WINDOW`] clients are kept apart
/// per window; beyond them refusals are summed in one `client=*` line. So a window writes at
/// most `4 × (budget + 1) + MAX_BURSTS_PER_WINDOW + 1` lines, whatever comes in.
pub struct RefusalLog {
    state: Mutex<WindowState>,
    events: [AtomicU64; Kind::ALL.len()],
    suppressed: [AtomicU64; Kind::ALL.len()],
}

struct WindowState {
    window: Duration,
    budget: u32,
    started: Instant,
    logged: [u32; Kind::ALL.len()],
    held_back: [u64; Kind::ALL.len()],
    bursts: Vec<Burst>,
    overflow: Option<Burst>,
    /// The key of the last new address held back, for the summary's `fingerprint`.
    last_new_key: Option<(Fingerprint, u64)>,
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
    /// The server's own words (never bytes the peer sent).
    pub reason: &'a str,
    pub status: u16,
    /// The fingerprint of the key presented, if it was well-formed.
    pub fingerprint: Option<Fingerprint>,
}

impl RefusalLog {
    pub fn new(window: Duration, budget: u32) -> Self {
        Self {
            state: Mutex::new(WindowState {
                window,
                budget,
                started: Instant::now(),
                logged: [0; Kind::ALL.len()],
                held_back: [0; Kind::ALL.len()],
                bursts: Vec::new(),
                overflow: None,
                last_new_key: None,
            }),
            events: Default::default(),
            suppressed: Default::default(),
        }
    }

    /// A reload's new budget, from the next window on.
    pub fn set_budget(&self, window: Duration, budget: u32) {
        let mut state = locks::lock(&self.state);
        state.window = window;
        state.budget = budget;
    }

    /// Counts one event of `kind` and says whether its line may be written: the caller writes
    /// it only then. Every line about traffic is asked for here.
    pub fn may_log(&self, kind: Kind) -> bool {
        let mut state = locks::lock(&self.state);
        self.roll(&mut state);
        self.spend(&mut state, kind)
    }

    fn spend(&self, state: &mut WindowState, kind: Kind) -> bool {
        let i = kind as usize;
        self.events[i].fetch_add(1, Ordering::Relaxed);
        if state.logged[i] < state.budget {
            state.logged[i] += 1;
            return true;
        }
        state.held_back[i] += 1;
        self.suppressed[i].fetch_add(1, Ordering::Relaxed);
        false
    }

    /// Records one refused request.
    pub fn refused(&self, refusal: Refused<'_>) {
        let mut state = locks::lock(&self.state);
        self.roll(&mut state);
        let fingerprint = refusal.fingerprint.as_ref().map_or("-", Fingerprint::as_str);
        if self.spend(&mut state, Kind::Refused) {
            log::warn!(
                "refused port={} client={} status={} reason={:?} fingerprint={fingerprint}",
                refusal.port,
                refusal.peer,
                refusal.status,
                refusal.reason,
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

    /// Records TLS trouble on the API port from `peer`: `event` is a fixed word, `detail` the
    /// server's description of it (never what the peer sent).
    pub fn tls(&self, peer: IpAddr, event: &str, detail: &str) {
        if self.may_log(Kind::Tls) {
            log::warn!("tls port=api client={peer} event={event} detail={detail:?}");
        }
    }

    /// Records the first request the key `fingerprint` admitted from `address`.
    pub fn new_address(&self, address: IpAddr, fingerprint: &Fingerprint, generation: u64) {
        let mut state = locks::lock(&self.state);
        self.roll(&mut state);
        if self.spend(&mut state, Kind::NewAddress) {
            drop(state);
            audit::key_new_address(Peer::Address(address), fingerprint, generation, None).emit();
        } else {
            state.last_new_key = Some((fingerprint.clone(), generation));
        }
    }

    /// Ends the window if it is over. Called from the API workers' sweep and housekeeping.
    pub fn flush(&self) {
        self.roll(&mut locks::lock(&self.state));
    }

    /// Events and held-back lines of each kind since start, in [`Kind::ALL`]'s order.
    pub fn counts(&self) -> [KindCounts; Kind::ALL.len()] {
        std::array::from_fn(|i| KindCounts {
            events: self.events[i].load(Ordering::Relaxed),
            suppressed: self.suppressed[i].load(Ordering::Relaxed),
        })
    }

    /// At the end of a window: the refusal bursts' audit lines, and one line per kind that was
    /// held back saying how much.
    fn roll(&self, state: &mut WindowState) {
        if state.started.elapsed() < state.window {
            return;
        }
        for burst in state.bursts.drain(..).chain(state.overflow.take()) {
            burst.audit();
        }
        for kind in Kind::ALL {
            let held_back = std::mem::take(&mut state.held_back[kind as usize]);
            if held_back == 0 {
                continue;
            }
            let new_key = if kind == Kind::NewAddress { state.last_new_key.take() } else { None };
            match new_key {
                // Its own audit line, as docs/audit.md has it.
                Some((fingerprint, generation)) => {
                    audit::key_new_address(
                        Peer::Everyone,
                        &fingerprint,
                        generation,
                        Some(held_back),
                    )
                    .emit();
                }
                None => log::log!(
                    kind.level(),
                    "log budget: kind={} suppressed={held_back} window_secs={} (counted in \
                     aims_log_suppressed_total)",
                    kind.label(),
                    state.window.as_secs()
                ),
            }
        }
        state.started = Instant::now();
        state.logged = [0; Kind::ALL.len()];
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_has_its_own_budget_and_every_event_is_counted() {
        let log = RefusalLog::new(Duration::from_secs(3600), 3);
        let allowed: Vec<bool> = (0..5).map(|_| log.may_log(Kind::Tls)).collect();
        assert_eq!(allowed, [true, true, true, false, false]);
        // A TLS flood leaves the exposure budget whole.
        assert!(log.may_log(Kind::Exposure));
        let counts = log.counts();
        assert_eq!(counts[Kind::Tls as usize], KindCounts { events: 5, suppressed: 2 });
        assert_eq!(counts[Kind::Exposure as usize], KindCounts { events: 1, suppressed: 0 });
    }

    #[test]
    fn a_new_window_restores_the_budget() {
        let log = RefusalLog::new(Duration::from_millis(1), 1);
        assert!(log.may_log(Kind::Refused));
        std::thread::sleep(Duration::from_millis(5));
        assert!(log.may_log(Kind::Refused));
        log.set_budget(Duration::from_secs(3600), 0);
        std::thread::sleep(Duration::from_millis(5));
        assert!(!log.may_log(Kind::Refused));
        assert_eq!(log.counts()[Kind::Refused as usize].suppressed, 1);
    }
}
