//! Test holds: named points in the store's operations where a test can stop the thread that
//! reaches them, to kill the process there or to act while it waits.
//!
//! A crash test that kills after a tuned sleep proves what the timing happens to hit; a hold
//! makes the moment exact: "killed while the prune's transaction is open", "a page read from
//! the store and not yet answered while the date is deleted". Unarmed (always, outside a test),
//! a hold is one branch on an empty `Option`.
//!
//! The real binary arms holds from `AIMS_API_TEST_HOLD` (points separated by commas); a held
//! thread logs `test hold: <point>` and waits until the file `<state_dir>/release-<point>`
//! exists. Unit tests arm them in the process and release them by name.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::locks;

/// The variable that arms holds in the binary.
pub const ENV: &str = "AIMS_API_TEST_HOLD";

/// Before an import's transaction commits.
pub const IMPORT_COMMIT: &str = "import:commit";
/// After an import's transaction committed, before the served set changes.
pub const IMPORT_COMMITTED: &str = "import:committed";
/// Before a delete's or a prune's transaction commits.
pub const REMOVE_COMMIT: &str = "remove:commit";
/// After a delete's or a prune's transaction committed, before the served set changes.
pub const REMOVE_COMMITTED: &str = "remove:committed";
/// A request's read of an older date from the store, done, before it is kept or answered.
pub const SERVE_READ: &str = "serve:read";
/// An export, its first application written, before the rest are read.
pub const EXPORT_READ: &str = "export:read";

#[derive(Clone, Default)]
pub struct Holds(Option<Arc<Armed>>);

struct Armed {
    points: HashSet<String>,
    /// Where the binary looks for `release-<point>` files; `None` in the process.
    release_dir: Option<PathBuf>,
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Default)]
struct State {
    arrived: HashSet<&'static str>,
    released: HashSet<String>,
}

impl Holds {
    /// Holds armed by [`ENV`], released by files in `state_dir`; none when it is not set.
    pub fn from_env(state_dir: PathBuf) -> Self {
        match std::env::var(ENV) {
            Ok(points) if !points.is_empty() => {
                let points: HashSet<String> = points.split(',').map(str::to_owned).collect();
                log::warn!("test holds armed ({ENV}): {points:?}");
                Self::armed(points, Some(state_dir))
            }
            _ => Self::default(),
        }
    }

    fn armed(points: HashSet<String>, release_dir: Option<PathBuf>) -> Self {
        Self(Some(Arc::new(Armed {
            points,
            release_dir,
            state: Mutex::default(),
            changed: Condvar::new(),
        })))
    }

    /// Holds armed at `points`, released by [`Holds::release`].
    #[cfg(test)]
    pub fn at_points(points: &[&str]) -> Self {
        Self::armed(points.iter().map(|p| (*p).to_owned()).collect(), None)
    }

    /// Stops here while `point` is armed and not released.
    pub fn at(&self, point: &'static str) {
        let Some(armed) = &self.0 else { return };
        if !armed.points.contains(point) {
            return;
        }
        log::warn!("test hold: {point}");
        let mut state = locks::lock(&armed.state);
        state.arrived.insert(point);
        armed.changed.notify_all();
        loop {
            if state.released.contains(point) {
                return;
            }
            if let Some(dir) = &armed.release_dir
                && dir.join(format!("release-{point}")).exists()
            {
                return;
            }
            let wait = armed.changed.wait_timeout(state, Duration::from_millis(10));
            state = wait.map_or_else(|poisoned| poisoned.into_inner().0, |(guard, _)| guard);
        }
    }

    /// Waits until a thread is held at `point` (or `timeout` passes): whether one is.
    #[cfg(test)]
    pub fn wait_arrival(&self, point: &str, timeout: Duration) -> bool {
        let Some(armed) = &self.0 else { return false };
        let deadline = std::time::Instant::now() + timeout;
        let mut state = locks::lock(&armed.state);
        while !state.arrived.contains(point) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            state =
                armed.changed.wait_timeout(state, left).map_or_else(|p| p.into_inner().0, |r| r.0);
        }
        true
    }

    /// Lets every thread held at `point` go on, and every one that reaches it later.
    #[cfg(test)]
    pub fn release(&self, point: &str) {
        if let Some(armed) = &self.0 {
            locks::lock(&armed.state).released.insert(point.to_owned());
            armed.changed.notify_all();
        }
    }
}
