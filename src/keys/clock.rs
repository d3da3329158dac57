//! The two clocks a key's deadlines are judged by, read together.
//!
//! A deadline (an expiry, the end of a grace) is written in the store as a wall-clock instant,
//! and the gate keeps it twice: as that wall-clock instant, and as a monotonic instant taken
//! when the state was switched in. A key is refused once *either* clock says its deadline
//! passed. The monotonic clock (`CLOCK_MONOTONIC`) cannot be stepped back, so an operator's
//! clock change cannot extend a key; but it stops while a VM or its host is suspended, and the
//! wall clock, which keeps counting through a suspend, catches what it misses. Neither clock can
//! stretch a deadline the other says has passed.
//!
//! [`Clock`] is a trait so that a test can move one clock without the other ([`ManualClock`]);
//! the server uses [`SystemClock`].

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use crate::locks;

/// Both clocks, read at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    pub instant: Instant,
    pub wall: SystemTime,
}

/// Where the key manager reads the time.
pub trait Clock: Send + Sync {
    fn now(&self) -> Now;
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> Now {
        (**self).now()
    }
}

/// The real clocks.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Now {
        Now { instant: Instant::now(), wall: SystemTime::now() }
    }
}

/// A deadline kept on both clocks: passed when either says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    instant: Instant,
    wall: SystemTime,
}

impl Deadline {
    /// The wall-clock instant `at`, also as a monotonic instant counted from `now`. An instant
    /// already past is past on both.
    pub fn at(at: SystemTime, now: Now) -> Self {
        let left = at.duration_since(now.wall).unwrap_or(Duration::ZERO);
        Self { instant: now.instant + left, wall: at }
    }

    pub fn passed(&self, now: Now) -> bool {
        now.instant >= self.instant || now.wall >= self.wall
    }
}

/// A clock a test drives: each of the two clocks moves only when told.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<Now>,
}

impl ManualClock {
    pub fn new() -> Self {
        Self { now: Mutex::new(SystemClock.now()) }
    }

    /// Moves the wall clock only (a host that was suspended, as the monotonic clock sees it;
    /// or a clock stepped forward).
    pub fn advance_wall(&self, by: Duration) {
        locks::lock(&self.now).wall += by;
    }

    /// Moves the wall clock back only (an operator's clock change).
    pub fn rewind_wall(&self, by: Duration) {
        let mut now = locks::lock(&self.now);
        now.wall = now.wall.checked_sub(by).unwrap_or(SystemTime::UNIX_EPOCH);
    }

    /// Moves the monotonic clock only.
    pub fn advance_monotonic(&self, by: Duration) {
        locks::lock(&self.now).instant += by;
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Now {
        *locks::lock(&self.now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_passes_when_either_clock_says_so() {
        let clock = ManualClock::new();
        let deadline = Deadline::at(clock.now().wall + Duration::from_secs(60), clock.now());
        assert!(!deadline.passed(clock.now()));
        // A suspend: the wall clock moved on, the monotonic one did not.
        clock.advance_wall(Duration::from_secs(61));
        assert!(deadline.passed(clock.now()));
        // A clock stepped back cannot bring it back once the monotonic clock got there.
        clock.rewind_wall(Duration::from_secs(3600));
        assert!(!deadline.passed(clock.now()));
        clock.advance_monotonic(Duration::from_secs(60));
        assert!(deadline.passed(clock.now()));
    }
}
