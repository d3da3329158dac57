//! The snapshot folder, `<state_dir>/snapshots/`, and the set of snapshots the API serves.
//!
//! The folder holds one `<YYYY-MM-DD>.json` per analysis date (mode 0600, folder 0700). At
//! start every such file is loaded, on all cores; a file that fails to load is logged with its
//! path, JSON path and reason, listed as refused, and skipped, but never deleted or changed:
//! it may be the operator's only copy. Leftover temporary files of an interrupted import are
//! removed; any other file is left alone with a warning.
//!
//! The served set is a [`Catalog`] behind an `RwLock<Arc<…>>`. Readers clone the `Arc` and let
//! go of the lock at once; an import or delete builds a new catalog and swaps it in whole. So
//! an API request never waits for an import (only for a pointer swap) and sees the old set or
//! the new one, never a mix. An import streams the body to a temporary file in the same
//! folder, fsyncs it, loads it from disk (so what is served is what was made durable), and
//! only then renames it into place, fsyncs the folder and swaps. Imports and deletes take one
//! commit lock for their rename-and-swap step, so two of them cannot lose each other's change.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use super::{Date, Invalid, Snapshot, Stats, load};
use crate::durable::{self, Staged, WriteError};
use crate::keystore::tighten_mode;
use crate::locks;

pub(super) const FOLDER: &str = "snapshots";

/// The snapshots being served, by date, and the files at start that could not be.
#[derive(Clone, Default)]
pub struct Catalog {
    by_date: BTreeMap<Date, Arc<Snapshot>>,
    /// Files found at start that failed to load, with the reason; until imported or deleted.
    refused: BTreeMap<Date, Arc<str>>,
}

impl Catalog {
    /// A catalog of these snapshots (for tests and benchmarks; `serve` loads a folder).
    pub fn of(snapshots: impl IntoIterator<Item = Snapshot>) -> Self {
        let by_date = snapshots.into_iter().map(|s| (s.date(), Arc::new(s))).collect();
        Self { by_date, refused: BTreeMap::new() }
    }

    /// The snapshot that answers requests without `Date`.
    pub fn newest(&self) -> Option<&Arc<Snapshot>> {
        self.by_date.values().next_back()
    }

    pub fn on(&self, date: Date) -> Option<&Arc<Snapshot>> {
        self.by_date.get(&date)
    }

    /// Served snapshots, newest first.
    pub fn newest_first(&self) -> impl Iterator<Item = &Arc<Snapshot>> {
        self.by_date.values().rev()
    }

    /// Files that failed to load at start, with why.
    pub fn refused(&self) -> impl Iterator<Item = (Date, &str)> {
        self.refused.iter().map(|(date, reason)| (*date, &**reason))
    }
}

/// The folder and the live catalog.
pub struct Snapshots {
    dir: PathBuf,
    activation_code: String,
    live: RwLock<Arc<Catalog>>,
    /// Held for the rename-and-swap of an import and for a delete.
    commit: Mutex<()>,
}

/// An import that is live.
pub struct Imported {
    pub snapshot: Arc<Snapshot>,
    /// A file for that date was already there (and is now replaced).
    pub replaced: bool,
    /// From the first byte received to live.
    pub took: Duration,
}

/// What a reload of the folder found.
#[derive(Debug, Clone, Copy)]
pub struct Reloaded {
    pub served: usize,
    /// Files that did not load (their dates are still served if they were before).
    pub refused: usize,
}

/// A delete that happened.
pub struct Deleted {
    /// What was being served for the date, if anything (a refused file is not served).
    pub served: Option<Stats>,
}

/// The config's `snapshots` section: which dates to keep. Both limits may be set; a date
/// either of them rules out is pruned. The newest date is never pruned, and files refused at
/// start are never pruned (they are not served; fix or delete them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Keep the dates from this many days before today (UTC) on, today and later included.
    pub keep_days: Option<u32>,
    /// Keep at most this many dates, the newest.
    pub keep_count: Option<usize>,
}

/// Which limit of [`Retention`] pruned a date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    KeepDays(u32),
    KeepCount(usize),
}

impl Retention {
    pub fn keeps_all(&self) -> bool {
        self.keep_days.is_none() && self.keep_count.is_none()
    }

    /// The dates among `served` (any order) that are due for pruning at `now`, oldest first,
    /// each with the rule that prunes it (`keep_count` named first when both do).
    pub fn due(&self, served: &[Date], now: SystemTime) -> Vec<(Date, Rule)> {
        let mut dates = served.to_vec();
        dates.sort_unstable();
        dates.dedup();
        // The newest date answers every request without `Date`: never leave the API empty.
        let Some(newest) = dates.pop() else { return Vec::new() };
        let keep_from = self.keep_days.map(|days| {
            let back = Duration::from_secs(u64::from(days) * 86_400);
            Date::of(now.checked_sub(back).unwrap_or(SystemTime::UNIX_EPOCH))
        });
        // The count includes the newest date.
        let over = self.keep_count.map_or(0, |count| (dates.len() + 1).saturating_sub(count));
        let mut due = Vec::new();
        for (i, date) in dates.into_iter().enumerate() {
            debug_assert!(date < newest);
            match (self.keep_count, keep_from) {
                (Some(count), _) if i < over => due.push((date, Rule::KeepCount(count))),
                (_, Some(from)) if date < from => {
                    due.push((date, Rule::KeepDays(self.keep_days.unwrap_or(0))));
                }
                _ => {}
            }
        }
        due
    }
}

/// One date that retention removed, or tried to.
pub struct Pruned {
    pub date: Date,
    pub rule: Rule,
    pub outcome: Result<Deleted, DeleteError>,
}

/// Why the folder could not be used at start.
#[derive(Debug)]
pub struct OpenError {
    pub path: PathBuf,
    pub source: io::Error,
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot use the snapshot folder {}: {}", self.path.display(), self.source)
    }
}

impl std::error::Error for OpenError {}

/// Why an import did not happen (or, for `NotDurable`, happened without the last fsync).
#[derive(Debug)]
pub enum ImportError {
    /// The request had no body.
    Empty,
    /// The body could not be read from the client.
    Body(io::Error),
    Invalid(Invalid),
    /// Writing the file failed (nothing changed), or its last fsync did (it is served).
    Write(WriteError),
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str(
                "the request has no body: send the snapshot JSON (curl --data-binary @FILE)",
            ),
            Self::Body(e) => write!(f, "the request body could not be read: {e}"),
            Self::Invalid(e) => write!(f, "the snapshot is invalid, nothing changed: {e}"),
            Self::Write(e @ WriteError::Io { .. }) => write!(f, "{e}; nothing changed"),
            Self::Write(e) => write!(f, "{e}; the new snapshot is served"),
        }
    }
}

impl std::error::Error for ImportError {}

#[derive(Debug)]
pub enum DeleteError {
    NotFound,
    /// Removing the file failed (nothing changed), or its folder's fsync did (it is gone).
    Write(WriteError),
}

impl fmt::Display for DeleteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotFound => f.write_str("no snapshot has that date"),
            Self::Write(e @ WriteError::Io { .. }) => write!(f, "{e}; nothing changed"),
            Self::Write(e) => write!(f, "{e}; the snapshot is no longer served"),
        }
    }
}

impl std::error::Error for DeleteError {}

impl Snapshots {
    /// Prepares `<state_dir>/snapshots/` and loads every snapshot in it.
    pub fn open(state_dir: &Path, activation_code: &str) -> Result<Self, OpenError> {
        let dir = state_dir.join(FOLDER);
        let fail = |source| OpenError { path: dir.clone(), source };
        fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir).map_err(fail)?;
        tighten_mode(&dir, 0o700);
        let files = scan(&dir).map_err(fail)?;
        let started = Instant::now();
        let count = files.len();
        let catalog = load_all(files, activation_code);
        if count > 0 {
            log::info!(
                "snapshots: {} of {count} loaded from {} in {} ms",
                catalog.by_date.len(),
                dir.display(),
                started.elapsed().as_millis()
            );
        }
        Ok(Self {
            dir,
            activation_code: activation_code.to_owned(),
            live: RwLock::new(Arc::new(catalog)),
            commit: Mutex::new(()),
        })
    }

    /// The catalog in force now. Cheap: one `Arc` clone under a read lock.
    pub fn catalog(&self) -> Arc<Catalog> {
        Arc::clone(&locks::read(&self.live))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path_of(&self, date: Date) -> PathBuf {
        self.dir.join(format!("{date}.json"))
    }

    /// Imports the snapshot in `body` for `date`, replacing the one of that date if any.
    pub fn import(&self, date: Date, body: &mut dyn Read) -> Result<Imported, ImportError> {
        let started = Instant::now();
        let path = self.path_of(date);
        let mut staged = Staged::create(&path, 0o600).map_err(ImportError::Write)?;
        receive(body, &mut staged)?;
        staged.sync().map_err(ImportError::Write)?;
        let temp = staged.temp_path();
        let bytes = fs::read(temp).map_err(|source| {
            ImportError::Write(WriteError::Io { step: "read back", path: temp.to_owned(), source })
        })?;
        let snapshot = load(&bytes, date, &self.activation_code).map_err(ImportError::Invalid)?;
        drop(bytes);
        let snapshot = Arc::new(snapshot);

        let _commit = self.lock_commit();
        let replaced = path.try_exists().map_err(|source| {
            ImportError::Write(WriteError::Io { step: "look for", path: path.clone(), source })
        })?;
        let durable = match staged.commit() {
            Ok(()) => Ok(()),
            // In place: it is what the next start serves, so it is what we serve now.
            Err(e @ WriteError::NotDurable { .. }) => Err(ImportError::Write(e)),
            Err(e) => return Err(ImportError::Write(e)),
        };
        self.swap(|catalog| {
            catalog.by_date.insert(date, Arc::clone(&snapshot));
            catalog.refused.remove(&date);
        });
        durable?;
        Ok(Imported { snapshot, replaced, took: started.elapsed() })
    }

    /// Stops serving the snapshot of `date` and removes its file. A file refused at start can
    /// be deleted the same way.
    pub fn delete(&self, date: Date) -> Result<Deleted, DeleteError> {
        let _commit = self.lock_commit();
        let path = self.path_of(date);
        let served = self.catalog().on(date).map(|s| s.stats());
        let durable = match durable::remove(&path) {
            Ok(true) => Ok(()),
            // Removed by hand while served: stop serving it.
            Ok(false) if served.is_some() => Ok(()),
            Ok(false) => return Err(DeleteError::NotFound),
            // Gone from the folder: the next start would not serve it, so neither do we.
            Err(e @ WriteError::NotDurable { .. }) => Err(DeleteError::Write(e)),
            Err(e) => return Err(DeleteError::Write(e)),
        };
        self.swap(|catalog| {
            catalog.by_date.remove(&date);
            catalog.refused.remove(&date);
        });
        durable?;
        Ok(Deleted { served })
    }

    /// The bytes the store holds on disk for `date`: its file's size (0 if there is none).
    pub fn disk_bytes(&self, date: Date) -> u64 {
        fs::metadata(self.path_of(date)).map_or(0, |m| m.len())
    }

    /// Removes the served dates that `retention` no longer keeps at `now`, each through
    /// [`Snapshots::delete`] (so each is durable, and a crash leaves a date whole or gone).
    pub fn prune(&self, retention: Retention, now: SystemTime) -> Vec<Pruned> {
        if retention.keeps_all() {
            return Vec::new();
        }
        let served: Vec<Date> = self.catalog().by_date.keys().copied().collect();
        retention
            .due(&served, now)
            .into_iter()
            .map(|(date, rule)| Pruned { date, rule, outcome: self.delete(date) })
            .collect()
    }

    /// Re-reads the folder (SIGHUP or `POST /reload`), for files an operator placed by hand.
    /// New and changed files are loaded, removed ones stop being served, and a date whose file
    /// no longer loads keeps being served from memory: a bad file never takes data away.
    pub fn reload(&self) -> Result<Reloaded, OpenError> {
        let _commit = self.lock_commit();
        let files =
            scan(&self.dir).map_err(|source| OpenError { path: self.dir.clone(), source })?;
        let mut fresh = load_all(files, &self.activation_code);
        let current = self.catalog();
        for date in fresh.refused.keys() {
            if let Some(kept) = current.on(*date) {
                log::warn!("snapshot {date}: keeping the version already served");
                fresh.by_date.insert(*date, Arc::clone(kept));
            }
        }
        let reloaded = Reloaded { served: fresh.by_date.len(), refused: fresh.refused.len() };
        let fresh = Arc::new(fresh);
        *locks::write(&self.live) = fresh;
        Ok(reloaded)
    }

    fn lock_commit(&self) -> MutexGuard<'_, ()> {
        // The guard protects no data, only the order of renames and swaps.
        locks::lock(&self.commit)
    }

    /// Replaces the catalog by a changed copy. Called only under the commit lock.
    fn swap(&self, change: impl FnOnce(&mut Catalog)) {
        let mut next = (*self.catalog()).clone();
        change(&mut next);
        let next = Arc::new(next);
        *locks::write(&self.live) = next;
    }
}

/// Streams `body` into the staged file.
fn receive(body: &mut dyn Read, staged: &mut Staged) -> Result<(), ImportError> {
    let mut chunk = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = match body.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ImportError::Body(e)),
        };
        staged.write_all(&chunk[..n]).map_err(ImportError::Write)?;
        total += n as u64;
    }
    if total == 0 {
        return Err(ImportError::Empty);
    }
    Ok(())
}

/// The snapshot files in the folder, after removing leftover temporary files.
fn scan(dir: &Path) -> io::Result<Vec<(Date, PathBuf)>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            log::warn!("snapshots: ignoring {}: not a snapshot file name", path.display());
            continue;
        };
        if durable::is_temp_name(name) {
            // Only an import interrupted by a crash leaves one; its snapshot never went live.
            match fs::remove_file(&path) {
                Ok(()) => log::info!("snapshots: removed {}, left by an interrupted import", name),
                Err(e) => log::warn!("snapshots: cannot remove {}: {e}", path.display()),
            }
            continue;
        }
        match name.strip_suffix(".json").map(Date::parse) {
            Some(Ok(date)) if entry.file_type()?.is_file() => files.push((date, path)),
            _ => log::warn!(
                "snapshots: ignoring {}: snapshot files are named YYYY-MM-DD.json",
                path.display()
            ),
        }
    }
    Ok(files)
}

/// Loads `files` on every core. Failures are logged and listed, never fatal.
fn load_all(files: Vec<(Date, PathBuf)>, activation_code: &str) -> Catalog {
    let next = AtomicUsize::new(0);
    let loaded = Mutex::new(Catalog::default());
    let work = || {
        while let Some((date, path)) = files.get(next.fetch_add(1, Ordering::Relaxed)) {
            let outcome = load_file(*date, path, activation_code);
            let mut catalog = locks::lock(&loaded);
            match outcome {
                Ok(snapshot) => {
                    catalog.by_date.insert(*date, Arc::new(snapshot));
                }
                Err(reason) => {
                    log::error!(
                        "snapshot {}: {reason}; not served, and left as it is: fix it and \
                         restart, re-import that date, or delete it",
                        path.display()
                    );
                    catalog.refused.insert(*date, reason.into());
                }
            }
        }
    };
    let threads = thread::available_parallelism().map_or(1, usize::from).min(files.len());
    thread::scope(|scope| {
        for _ in 1..threads {
            // A thread that cannot start leaves its share to the others and to this one.
            let _ = thread::Builder::new().name("snapshot-load".into()).spawn_scoped(scope, work);
        }
        work();
    });
    locks::into_inner(loaded)
}

fn load_file(date: Date, path: &Path, activation_code: &str) -> Result<Snapshot, String> {
    tighten_mode(path, 0o600);
    let started = Instant::now();
    let bytes = fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    let snapshot = load(&bytes, date, activation_code).map_err(|e| e.to_string())?;
    let stats = snapshot.stats();
    log::info!(
        "snapshot {date}: {} applications, {} modules, {} findings, loaded in {} ms",
        stats.applications,
        stats.modules,
        stats.findings,
        started.elapsed().as_millis()
    );
    Ok(snapshot)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dates(texts: &[&str]) -> Vec<Date> {
        texts.iter().map(|t| Date::parse(t).unwrap()).collect()
    }

    /// 2024-05-14T12:00:00Z.
    fn noon() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_715_688_000)
    }

    fn due(retention: Retention, served: &[&str]) -> Vec<(String, Rule)> {
        let due = retention.due(&dates(served), noon());
        due.into_iter().map(|(d, rule)| (d.to_string(), rule)).collect()
    }

    #[test]
    fn keep_count_keeps_the_newest() {
        let five = ["2024-05-12", "2024-05-10", "2024-05-14", "2024-05-11", "2024-05-13"];
        let three = Retention { keep_count: Some(3), ..Retention::default() };
        assert_eq!(
            due(three, &five),
            [
                ("2024-05-10".to_owned(), Rule::KeepCount(3)),
                ("2024-05-11".to_owned(), Rule::KeepCount(3))
            ]
        );
        assert_eq!(due(three, &five[..3]), []);
        let one = Retention { keep_count: Some(1), ..Retention::default() };
        assert_eq!(due(one, &five).len(), 4);
        assert_eq!(due(Retention::default(), &five), []);
        assert_eq!(due(three, &[]), []);
    }

    #[test]
    fn keep_days_counts_back_from_today_and_never_prunes_the_newest() {
        let two = Retention { keep_days: Some(2), ..Retention::default() };
        // Today is 2024-05-14: 2024-05-12 is two days back and kept; a future date is kept.
        assert_eq!(
            due(two, &["2024-05-11", "2024-05-12", "2024-05-14", "2024-06-01", "2023-01-01"]),
            [
                ("2023-01-01".to_owned(), Rule::KeepDays(2)),
                ("2024-05-11".to_owned(), Rule::KeepDays(2))
            ]
        );
        // Only old dates: the newest of them stays, so the API still answers.
        assert_eq!(
            due(two, &["2024-01-01", "2024-01-02"]),
            [("2024-01-01".to_owned(), Rule::KeepDays(2))]
        );
        let both = Retention { keep_days: Some(2), keep_count: Some(2) };
        assert_eq!(
            due(both, &["2024-05-10", "2024-05-13", "2024-05-14"]),
            [("2024-05-10".to_owned(), Rule::KeepCount(2))]
        );
    }
}
