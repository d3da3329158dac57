//! The dated snapshots: the history store, the set the API serves, and the folder an operator
//! (or an older release) drops snapshot files in.
//!
//! Every date lives in the history store ([`super::history`], `<state_dir>/history.redb`),
//! where an application that did not change is kept once. Serving needs far less than all of
//! it in memory: the newest date, which answers every request without `Date`, is held whole
//! (its pages cost a copy); an older date is read when a request first names it, kept among the
//! `cached_dates` most recently used, and its applications decompressed through a cache of
//! `cache_mib`. So memory is bounded by the configuration, and start-up reads the newest date
//! only, whatever the number of dates kept.
//!
//! The set served is a [`Catalog`] behind an `RwLock<Arc<…>>`: readers clone the `Arc` and
//! let go at once; an import, delete or prune commits to the store first and then swaps a new
//! catalog in whole, so a request sees the old set or the new one, never a mix, and never
//! waits for an import. Those three take one commit lock, so two of them cannot lose each
//! other's change.
//!
//! `<state_dir>/snapshots/` is the inbox: a `YYYY-MM-DD.json` found there at start or reload
//! (a file placed by hand, or the whole folder of a release that kept one file per date) is
//! imported into the store, and the files are removed once all of them are in, never before:
//! a crash half-way leaves them all, and the next start resumes. A file that does not load is
//! logged, listed as refused and left untouched; it may be the operator's only copy.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use super::codec;
pub use super::codec::{Arrival, Source};
use super::history::{History, HistoryError, NewDate, PieceKind, Shared};
use super::prepare::{Prepared, prepare};
use super::served::{Digest, Plain, PlainCache, Snapshot, Stats, sha256};
use super::{Date, Invalid};
use crate::durable::{self, WriteError};
use crate::gzip::{self, Corrupt};
use crate::keystore::tighten_mode;
use crate::locks;

/// The inbox folder, under the state folder.
pub(super) const FOLDER: &str = "snapshots";

/// How much of the history `serve` keeps in memory besides the newest date (the config's
/// `snapshots` section).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    /// Older dates kept ready (their index and compressed applications), most recently used.
    pub cached_dates: usize,
    /// Decompressed applications of older dates, in bytes.
    pub cache_bytes: usize,
}

impl Default for Memory {
    fn default() -> Self {
        Self { cached_dates: 4, cache_bytes: 64 << 20 }
    }
}

/// The page cache redb itself keeps: the pieces an older date is read from pass through it.
const DB_CACHE_BYTES: usize = 16 << 20;

/// One date as listed: what the store says of it, without reading its applications.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub date: Date,
    pub analyzed_on: SystemTime,
    pub stats: Stats,
    pub file_sha256: Digest,
    /// When and how it came; `None` for a date stored before arrivals were kept.
    pub arrival: Option<Arrival>,
}

/// The dates being served, the newest held whole, and the files refused from the inbox.
#[derive(Clone, Default)]
pub struct Catalog {
    entries: BTreeMap<Date, Entry>,
    newest: Option<Arc<Snapshot>>,
    /// Inbox files that failed to load, with the reason; until imported or deleted.
    refused: BTreeMap<Date, Arc<str>>,
}

impl Catalog {
    /// The snapshot that answers requests without `Date`.
    pub fn newest(&self) -> Option<&Arc<Snapshot>> {
        self.newest.as_ref()
    }

    pub fn entry(&self, date: Date) -> Option<&Entry> {
        self.entries.get(&date)
    }

    /// Served dates, newest first.
    pub fn newest_first(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values().rev()
    }

    /// The latest arrival among the dates served: when the last import still in the store
    /// went live, and how it came.
    pub fn last_arrival(&self) -> Option<Arrival> {
        self.entries.values().filter_map(|e| e.arrival).max_by_key(|a| a.at_ms)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Inbox files that failed to load, with why.
    pub fn refused(&self) -> impl Iterator<Item = (Date, &str)> {
        self.refused.iter().map(|(date, reason)| (*date, &**reason))
    }
}

/// The store, the live catalog and the caches.
pub struct Snapshots {
    dir: PathBuf,
    history: History,
    activation_code: String,
    memory: Memory,
    live: RwLock<Arc<Catalog>>,
    /// Held for the commit-and-swap of an import, a delete, a prune and an inbox take-over.
    commit: Mutex<()>,
    /// Pieces some served date holds, so the next one read shares them.
    shared: Shared,
    /// Older dates read recently, least recently used first.
    views: Mutex<Vec<Arc<Snapshot>>>,
    plain: Arc<PlainCache>,
    /// Each date's share of the disk, computed on the first listing after a change.
    disk: Mutex<Option<Arc<BTreeMap<Date, u64>>>>,
}

/// An import that is live.
pub struct Imported {
    pub date: Date,
    pub stats: Stats,
    pub file_sha256: Digest,
    pub analyzed_on: SystemTime,
    pub arrival: Arrival,
    /// The date was already in the store (and is now replaced).
    pub replaced: bool,
    /// From the first byte received to live.
    pub took: Duration,
    /// Applications and runs the store did not have (the rest were shared with other dates).
    pub new_pieces: usize,
    /// What the import added to the store: those pieces and the date's own records.
    pub added_bytes: u64,
}

/// What a take-over of the inbox found.
#[derive(Debug, Clone, Copy, Default)]
pub struct Reloaded {
    pub served: usize,
    /// Files imported into the store (and removed from the inbox).
    pub imported: usize,
    /// Files that did not load (left in the inbox).
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
    /// One commit removes every date due, so they share its outcome.
    pub outcome: Result<Deleted, Arc<HistoryError>>,
}

/// Why the store could not be opened at start.
#[derive(Debug)]
pub enum OpenError {
    Folder { path: PathBuf, source: io::Error },
    History(HistoryError),
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Folder { path, source } => {
                write!(f, "cannot use the snapshot folder {}: {source}", path.display())
            }
            Self::History(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for OpenError {}

/// Why an import did not happen.
#[derive(Debug)]
pub enum ImportError {
    /// The request had no body.
    Empty,
    /// The body could not be read from the client.
    Body(io::Error),
    Invalid(Invalid),
    /// The store could not be read or written; nothing changed.
    History(HistoryError),
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str(
                "the request has no body: send the snapshot JSON (curl --data-binary @FILE)",
            ),
            Self::Body(e) => write!(f, "the request body could not be read: {e}"),
            Self::Invalid(e) => write!(f, "the snapshot is invalid, nothing changed: {e}"),
            Self::History(e) => write!(f, "{e}; nothing changed"),
        }
    }
}

impl std::error::Error for ImportError {}

#[derive(Debug)]
pub enum DeleteError {
    NotFound,
    /// The store could not be written; nothing changed.
    History(HistoryError),
    /// Removing a refused inbox file failed (nothing changed), or its folder's fsync did.
    Write(WriteError),
}

impl fmt::Display for DeleteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotFound => f.write_str("no snapshot has that date"),
            Self::History(e) => write!(f, "{e}; nothing changed"),
            Self::Write(e @ WriteError::Io { .. }) => write!(f, "{e}; nothing changed"),
            Self::Write(e) => write!(f, "{e}; the file is no longer listed"),
        }
    }
}

impl std::error::Error for DeleteError {}

/// Whether a read may wait for the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Only what memory holds: for an API worker, which must never wait for a disk. What is
    /// not there is [`ServeError::Cold`], at once.
    MemoryOnly,
    /// Read the store as needed: for a blocking thread.
    Blocking,
}

/// A date that could not be served: the store could not be read, or a piece is damaged.
#[derive(Debug)]
pub enum ServeError {
    History(HistoryError),
    Corrupt(Date, Corrupt),
    /// Not in memory, and the read was [`Access::MemoryOnly`]: nothing was read.
    Cold,
}

impl fmt::Display for ServeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::History(e) => e.fmt(f),
            Self::Corrupt(date, e) => write!(
                f,
                "the snapshot history is damaged at {date}: an application does not decompress \
                 ({e}); run `aims-api snapshot verify`"
            ),
            Self::Cold => f.write_str("the date is not in memory"),
        }
    }
}

impl std::error::Error for ServeError {}

impl Snapshots {
    /// Opens the history store under `state_dir`, serves its newest date, and takes over any
    /// snapshot file in the inbox (`progress` hears of each one, for the service manager).
    pub fn open(
        state_dir: &Path,
        activation_code: &str,
        memory: Memory,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self, OpenError> {
        let dir = state_dir.join(FOLDER);
        let fail = |source| OpenError::Folder { path: dir.clone(), source };
        fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir).map_err(fail)?;
        tighten_mode(&dir, 0o700);
        let started = Instant::now();
        let history = History::open(&state_dir.join(super::history::FILE), DB_CACHE_BYTES)
            .map_err(OpenError::History)?;
        let snapshots = Self::with_history(dir, history, activation_code, memory)?;
        let catalog = snapshots.catalog();
        if !catalog.is_empty() {
            log::info!(
                "snapshots: {} date(s) in {}, the newest ready in {} ms",
                catalog.len(),
                snapshots.history.path().display(),
                started.elapsed().as_millis()
            );
        }
        snapshots.take_over(progress).map_err(OpenError::History)?;
        Ok(snapshots)
    }

    /// A store in memory, without an inbox: for benchmarks and tests that answer requests
    /// through [`crate::api::answer`] without a server. Fill it with [`Snapshots::import`].
    pub fn in_memory(activation_code: &str, memory: Memory) -> Result<Self, OpenError> {
        let history = History::in_memory().map_err(OpenError::History)?;
        Self::with_history(PathBuf::new(), history, activation_code, memory)
    }

    fn with_history(
        dir: PathBuf,
        history: History,
        activation_code: &str,
        memory: Memory,
    ) -> Result<Self, OpenError> {
        let snapshots = Self {
            dir,
            history,
            activation_code: activation_code.to_owned(),
            memory,
            live: RwLock::new(Arc::new(Catalog::default())),
            commit: Mutex::new(()),
            shared: Shared::default(),
            views: Mutex::new(Vec::new()),
            plain: Arc::new(PlainCache::new(memory.cache_bytes)),
            disk: Mutex::new(None),
        };
        let _commit = snapshots.lock_commit();
        let entries = snapshots.read_entries().map_err(OpenError::History)?;
        let newest = snapshots.pin_newest(&entries);
        *locks::write(&snapshots.live) =
            Arc::new(Catalog { entries, newest, refused: BTreeMap::new() });
        drop(_commit);
        Ok(snapshots)
    }

    /// The catalog in force now. Cheap: one `Arc` clone under a read lock.
    pub fn catalog(&self) -> Arc<Catalog> {
        Arc::clone(&locks::read(&self.live))
    }

    /// The snapshot of `date` (the newest when `None`), if the store has that date. An older
    /// date is read from the store on first use and then kept among the recently used.
    pub fn snapshot(
        &self,
        date: Option<Date>,
        access: Access,
    ) -> Result<Option<Arc<Snapshot>>, ServeError> {
        let catalog = self.catalog();
        let Some(newest) = catalog.newest() else { return Ok(None) };
        let date = match date {
            None => return Ok(Some(Arc::clone(newest))),
            Some(date) if date == newest.date() => return Ok(Some(Arc::clone(newest))),
            Some(date) => date,
        };
        let Some(entry) = catalog.entry(date) else { return Ok(None) };
        if let Some(view) = self.cached_view(entry) {
            return Ok(Some(view));
        }
        if access == Access::MemoryOnly {
            return Err(ServeError::Cold);
        }
        let Some(parts) = self.history.read(date, &self.shared).map_err(ServeError::History)?
        else {
            return Ok(None);
        };
        let view = Arc::new(Snapshot::assemble(
            parts,
            &self.activation_code,
            Plain::Cached(Arc::clone(&self.plain)),
        ));
        if view.file_sha256() != &entry.file_sha256 {
            // Re-imported between the catalog read and the store read: serve what was read
            // (it is that date's data, one version or the other) but do not keep it.
            return Ok(Some(view));
        }
        self.keep_view(&view);
        Ok(Some(view))
    }

    /// The memory a date holds now, if it is in memory: the newest always, an older one
    /// while cached. Decompressed applications of older dates are counted in
    /// [`Snapshots::cache_bytes`] instead.
    pub fn memory_bytes(&self, date: Date) -> usize {
        if let Some(newest) = self.catalog().newest().filter(|s| s.date() == date) {
            return newest.memory_bytes();
        }
        let views = locks::lock(&self.views);
        views.iter().find(|v| v.date() == date).map_or(0, |v| v.memory_bytes())
    }

    /// What every date in memory holds now, and the cache of decompressed applications.
    pub fn resident_bytes(&self) -> usize {
        let newest = self.catalog().newest().map_or(0, |s| s.memory_bytes());
        let views: usize = locks::lock(&self.views).iter().map(|v| v.memory_bytes()).sum();
        newest + views + self.plain.bytes()
    }

    /// The decompressed applications of older dates held now.
    pub fn cache_bytes(&self) -> usize {
        self.plain.bytes()
    }

    /// Each date's share of the store on disk (see [`History::disk_shares`]).
    pub fn disk_shares(&self) -> Arc<BTreeMap<Date, u64>> {
        let mut disk = locks::lock(&self.disk);
        if let Some(shares) = &*disk {
            return Arc::clone(shares);
        }
        let shares = match self.history.disk_shares() {
            Ok(shares) => Arc::new(shares),
            Err(e) => {
                log::warn!("snapshots: cannot size the dates on disk: {e}");
                return Arc::new(BTreeMap::new());
            }
        };
        *disk = Some(Arc::clone(&shares));
        shares
    }

    /// The size of the store's file.
    pub fn store_bytes(&self) -> u64 {
        self.history.file_bytes()
    }

    /// The size of a refused inbox file (0 if there is none).
    pub fn inbox_bytes(&self, date: Date) -> u64 {
        fs::metadata(self.inbox_path(date)).map_or(0, |m| m.len())
    }

    fn inbox_path(&self, date: Date) -> PathBuf {
        self.dir.join(format!("{date}.json"))
    }

    /// Imports the snapshot in `body` (`body_len` bytes, as announced) for `date`, replacing
    /// the one of that date if any; `source` says who sent it (a pull or anything else).
    pub fn import(
        &self,
        date: Date,
        body: &mut dyn Read,
        body_len: u64,
        source: Source,
    ) -> Result<Imported, ImportError> {
        let started = Instant::now();
        let bytes = receive(body, body_len)?;
        let file_sha256 = sha256(&bytes);
        self.import_bytes(date, bytes, file_sha256, started, source, None)
    }

    fn import_bytes(
        &self,
        date: Date,
        bytes: Vec<u8>,
        file_sha256: Digest,
        started: Instant,
        source: Source,
        written: Option<SystemTime>,
    ) -> Result<Imported, ImportError> {
        // An application the newest date has too is kept as the newest holds it: the day's
        // import, which becomes the newest, then adds only what changed to what is pinned.
        let newest = self.catalog().newest().map(|s| s.pinned_by_key()).unwrap_or_default();
        let mut keep = |json: Vec<u8>| {
            let key = sha256(&json);
            match newest.get(&key) {
                Some(held) => (key, Arc::clone(held)),
                None => (key, Arc::<[u8]>::from(json)),
            }
        };
        let rendered = super::render_file(&bytes, &mut keep).map_err(ImportError::Invalid)?;
        drop(newest);
        // The file is all in the rendered form now; it goes before the compression, which
        // would otherwise hold both at the import's peak.
        drop(bytes);
        let _commit = self.lock_commit();
        let mut prepared =
            self.prepare(rendered, date, file_sha256).map_err(ImportError::History)?;
        // Stamped as it goes live, in the commit that makes it so; a file taken over keeps the
        // time its release wrote it (`written`).
        let arrival = Arrival::at(written.unwrap_or_else(SystemTime::now), source);
        prepared.header.arrival = Some(arrival);
        let new = NewDate {
            date,
            header: &prepared.header,
            pieces: &prepared.pieces,
            apps: &prepared.new_apps,
            runs: &prepared.new_runs,
            lists: &prepared.lists,
        };
        // Under the commit lock: the catalog cannot change until this import swaps it.
        let catalog = self.catalog();
        let added_bytes =
            self.history.put(&new, catalog.entry(date).is_some()).map_err(ImportError::History)?;
        let new_pieces = prepared.new_apps.len() + prepared.new_runs.len();
        // A file for this date that the inbox refused is superseded by this import: it goes,
        // or the next reload would try it again. (A take-over removes its files itself, once
        // all of them are in.)
        let refused_file = source != Source::Inbox
            && catalog.refused.contains_key(&date)
            && match durable::remove(&self.inbox_path(date)) {
                Ok(removed) => removed,
                Err(e) => {
                    log::warn!("snapshot {date}: {e}; remove it by hand, the import supersedes it");
                    false
                }
            };
        let replaced = catalog.entry(date).is_some() || refused_file;
        let analyzed_on = prepared.parts.analyzed_on;
        let entry = Entry {
            date,
            analyzed_on,
            stats: prepared.header.stats(),
            file_sha256,
            arrival: Some(arrival),
        };
        let becomes_newest = catalog.newest().is_none_or(|newest| date >= newest.date());
        let stats;
        if becomes_newest {
            let Prepared { parts, plain, .. } = prepared;
            let snapshot = Snapshot::assemble(parts, &self.activation_code, Plain::Pinned(plain));
            stats = snapshot.stats();
            let snapshot = Arc::new(snapshot);
            self.share_pieces(&snapshot);
            self.swap(|next| {
                next.entries.insert(date, entry);
                next.refused.remove(&date);
                next.newest = Some(snapshot);
            });
        } else {
            stats = entry.stats;
            self.forget_view(date);
            self.swap(|next| {
                next.entries.insert(date, entry);
                next.refused.remove(&date);
            });
        }
        Ok(Imported {
            date,
            stats,
            file_sha256,
            analyzed_on,
            arrival,
            replaced,
            took: started.elapsed(),
            new_pieces,
            added_bytes,
        })
    }

    /// The pieces of a rendered date, reusing what memory or the store already has.
    fn prepare(
        &self,
        rendered: super::render::Rendered,
        date: Date,
        file_sha256: Digest,
    ) -> Result<Prepared, HistoryError> {
        let (history, shared) = (&self.history, &self.shared);
        let mut known_apps = |keys: &[Digest]| {
            history.known(PieceKind::Application, keys, &shared.apps, codec::decode_app)
        };
        let mut known_runs =
            |keys: &[Digest]| history.known(PieceKind::Run, keys, &shared.runs, codec::decode_run);
        prepare(rendered, date, file_sha256, &mut known_apps, &mut known_runs)
    }

    /// Stops serving `date` and removes it from the store, with every piece no other date
    /// names. A file refused from the inbox can be deleted the same way.
    pub fn delete(&self, date: Date) -> Result<Deleted, DeleteError> {
        let _commit = self.lock_commit();
        let catalog = self.catalog();
        let served = catalog.entry(date).map(|e| e.stats);
        if served.is_some() {
            self.history.remove(&[date]).map_err(DeleteError::History)?;
        }
        let removed_file = if catalog.refused.contains_key(&date) {
            durable::remove(&self.inbox_path(date)).map_err(DeleteError::Write)?
        } else {
            false
        };
        if served.is_none() && !removed_file && !catalog.refused.contains_key(&date) {
            return Err(DeleteError::NotFound);
        }
        self.remove_from_catalog(&[date]);
        Ok(Deleted { served })
    }

    /// Removes the dates that `retention` no longer keeps at `now`, in one commit (so a crash
    /// leaves each date whole or gone, and the pieces only they named go with them).
    pub fn prune(&self, retention: Retention, now: SystemTime) -> Vec<Pruned> {
        if retention.keeps_all() {
            return Vec::new();
        }
        let _commit = self.lock_commit();
        let catalog = self.catalog();
        let served: Vec<Date> = catalog.entries.keys().copied().collect();
        let due = retention.due(&served, now);
        if due.is_empty() {
            return Vec::new();
        }
        let dates: Vec<Date> = due.iter().map(|(date, _)| *date).collect();
        let outcome = self.history.remove(&dates).map_err(Arc::new);
        if outcome.is_ok() {
            self.remove_from_catalog(&dates);
        }
        due.into_iter()
            .map(|(date, rule)| Pruned {
                date,
                rule,
                outcome: match &outcome {
                    Ok(_) => Ok(Deleted { served: catalog.entry(date).map(|e| e.stats) }),
                    Err(e) => Err(Arc::clone(e)),
                },
            })
            .collect()
    }

    /// At shutdown, once no request is served any more: waits for an import, delete or prune
    /// in flight, then closes the store cleanly.
    pub fn close(&self) {
        let _commit = self.lock_commit();
        self.history.close();
    }

    /// Takes over the snapshot files in the inbox (SIGHUP or `POST /reload`).
    pub fn reload(&self) -> Result<Reloaded, HistoryError> {
        self.take_over(&mut |_, _| {})
    }

    /// Imports each `YYYY-MM-DD.json` of the inbox, oldest first, then removes the ones that
    /// are in the store: only once all are, so a crash half-way leaves every file.
    fn take_over(&self, progress: &mut dyn FnMut(usize, usize)) -> Result<Reloaded, HistoryError> {
        let files = scan(&self.dir).map_err(|source| HistoryError::Damaged {
            date: None,
            what: format!("cannot read the inbox {}: {source}", self.dir.display()),
        })?;
        let mut reloaded = Reloaded::default();
        if !files.is_empty() {
            log::info!(
                "snapshots: taking over {} file(s) from {} into {}",
                files.len(),
                self.dir.display(),
                self.history.path().display()
            );
        }
        let mut done = Vec::new();
        let mut refused = BTreeMap::new();
        for (i, (date, path)) in files.iter().enumerate() {
            progress(i, files.len());
            let outcome = self.take_over_file(*date, path)?;
            match outcome {
                Ok(imported) => {
                    if let Some(imported) = imported {
                        log::info!(
                            "snapshot {date}: taken over from {}: {} applications, {} new \
                             piece(s), in {} ms",
                            path.display(),
                            imported.stats.applications,
                            imported.new_pieces,
                            imported.took.as_millis()
                        );
                    }
                    done.push(path.clone());
                }
                Err(reason) => {
                    log::error!(
                        "snapshot {}: {reason}; not served, and left as it is: fix it and \
                         reload, import that date, or delete it",
                        path.display()
                    );
                    refused.insert(*date, Arc::<str>::from(reason));
                }
            }
        }
        // Every file is in the store now (or refused): the copies can go.
        for path in &done {
            match durable::remove(path) {
                Ok(_) => reloaded.imported += 1,
                Err(e) => log::warn!("snapshots: {e}; it is in the store, remove it by hand"),
            }
        }
        reloaded.refused = refused.len();
        if !refused.is_empty() {
            let _commit = self.lock_commit();
            self.swap(|next| next.refused.extend(refused));
        }
        reloaded.served = self.catalog().len();
        Ok(reloaded)
    }

    /// One file of the inbox: `Ok(None)` when the store holds it already, `Ok(Some(…))` once
    /// imported, `Err(reason)` when it does not load. A store that cannot be written stops the
    /// take-over (the outer error).
    fn take_over_file(
        &self,
        date: Date,
        path: &Path,
    ) -> Result<Result<Option<Imported>, String>, HistoryError> {
        let started = Instant::now();
        tighten_mode(path, 0o600);
        let bytes = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) => return Ok(Err(format!("cannot read: {e}"))),
        };
        let digest = sha256(&bytes);
        if self.holds(date, &digest) {
            return Ok(Ok(None));
        }
        // The release that kept files wrote this one when it imported it.
        let written =
            fs::metadata(path).and_then(|m| m.modified()).unwrap_or_else(|_| SystemTime::now());
        match self.import_bytes(date, bytes, digest, started, Source::Inbox, Some(written)) {
            Ok(imported) => Ok(Ok(Some(imported))),
            Err(ImportError::History(e)) => Err(e),
            Err(ImportError::Invalid(invalid)) => Ok(Err(invalid.to_string())),
            Err(other) => Ok(Err(other.to_string())),
        }
    }

    /// Whether the store already holds `date` from exactly these bytes (a take-over that was
    /// interrupted before it removed the files).
    fn holds(&self, date: Date, file_sha256: &Digest) -> bool {
        self.catalog().entry(date).is_some_and(|e| &e.file_sha256 == file_sha256)
    }

    fn read_entries(&self) -> Result<BTreeMap<Date, Entry>, HistoryError> {
        Ok(self
            .history
            .dates()?
            .into_iter()
            .map(|(date, header)| {
                let file_sha256 = codec::unhex(&header.file_sha256).unwrap_or([0; 32]);
                let entry = Entry {
                    date,
                    analyzed_on: header.analyzed_on(),
                    stats: header.stats(),
                    file_sha256,
                    arrival: header.arrival,
                };
                (date, entry)
            })
            .collect())
    }

    /// Reads the newest date of `entries` and decompresses all of it. A newest date that
    /// cannot be read is logged and the next one tried: an older answer beats none.
    fn pin_newest(&self, entries: &BTreeMap<Date, Entry>) -> Option<Arc<Snapshot>> {
        for date in entries.keys().rev() {
            match self.read_pinned(*date) {
                Ok(Some(snapshot)) => return Some(snapshot),
                Ok(None) => {}
                Err(e) => log::error!("snapshot {date}: {e}; not served by default"),
            }
        }
        None
    }

    fn read_pinned(&self, date: Date) -> Result<Option<Arc<Snapshot>>, ServeError> {
        let Some(parts) = self.history.read(date, &self.shared).map_err(ServeError::History)?
        else {
            return Ok(None);
        };
        let plain = inflate_all(&parts).map_err(|e| ServeError::Corrupt(date, e))?;
        let snapshot = Snapshot::assemble(parts, &self.activation_code, Plain::Pinned(plain));
        Ok(Some(Arc::new(snapshot)))
    }

    /// Drops `dates` from the catalog; when the newest goes, the next one is read and pinned.
    fn remove_from_catalog(&self, dates: &[Date]) {
        let catalog = self.catalog();
        let mut entries = catalog.entries.clone();
        dates.iter().for_each(|date| {
            entries.remove(date);
        });
        let newest_gone = catalog.newest().is_some_and(|n| dates.contains(&n.date()));
        let newest = if newest_gone { self.pin_newest(&entries) } else { catalog.newest.clone() };
        dates.iter().for_each(|date| self.forget_view(*date));
        self.swap(|next| {
            next.entries = entries;
            next.newest = newest;
            dates.iter().for_each(|date| {
                next.refused.remove(date);
            });
        });
        self.shared.sweep();
    }

    fn cached_view(&self, entry: &Entry) -> Option<Arc<Snapshot>> {
        let mut views = locks::lock(&self.views);
        let at = views
            .iter()
            .position(|v| v.date() == entry.date && v.file_sha256() == &entry.file_sha256)?;
        let view = views.remove(at);
        views.push(Arc::clone(&view));
        Some(view)
    }

    fn keep_view(&self, view: &Arc<Snapshot>) {
        let mut views = locks::lock(&self.views);
        views.retain(|v| v.date() != view.date());
        views.push(Arc::clone(view));
        let over = views.len().saturating_sub(self.memory.cached_dates);
        let dropped = views.drain(..over).count();
        drop(views);
        if dropped > 0 {
            self.shared.sweep();
        }
    }

    fn forget_view(&self, date: Date) {
        locks::lock(&self.views).retain(|v| v.date() != date);
    }

    /// Lets later reads share the pieces of a snapshot made by an import.
    fn share_pieces(&self, snapshot: &Snapshot) {
        snapshot.pieces().for_each(|p| self.shared.apps.share(p.hash, p));
        snapshot.run_pieces().for_each(|r| self.shared.runs.share(r.key, r));
        let teams = snapshot.team_piece();
        self.shared.teams.share(teams.hash, teams);
    }

    fn lock_commit(&self) -> MutexGuard<'_, ()> {
        // The guard protects no data, only the order of commits and swaps.
        locks::lock(&self.commit)
    }

    /// Replaces the catalog by a changed copy. Called only under the commit lock.
    fn swap(&self, change: impl FnOnce(&mut Catalog)) {
        let mut next = (*self.catalog()).clone();
        change(&mut next);
        let next = Arc::new(next);
        *locks::write(&self.live) = next;
        *locks::lock(&self.disk) = None;
    }
}

/// Every application of `parts` decompressed, on every core: the newest date's pages then
/// cost a copy.
fn inflate_all(parts: &super::served::Parts) -> Result<Box<[Arc<[u8]>]>, Corrupt> {
    let cores = thread::available_parallelism().map_or(1, usize::from);
    let pieces: Vec<&gzip::Compressed> = parts.apps.iter().map(|app| &app.compressed).collect();
    let plain = gzip::inflate_each(&pieces, cores)?;
    Ok(plain.into_iter().map(Arc::from).collect())
}

/// The request body, whole: a snapshot is parsed in one piece anyway. The admin port bounds
/// its size.
/// Reads the whole body into a buffer of the announced size: one grown by doubling would hold
/// up to twice the file through the import.
fn receive(body: &mut dyn Read, body_len: u64) -> Result<Vec<u8>, ImportError> {
    let mut bytes = Vec::new();
    // Only a hint: a buffer that cannot be had up front is grown as the bytes come.
    let _ = bytes.try_reserve_exact(usize::try_from(body_len).unwrap_or(0));
    body.read_to_end(&mut bytes).map_err(ImportError::Body)?;
    if bytes.is_empty() {
        return Err(ImportError::Empty);
    }
    Ok(bytes)
}

/// The snapshot files in the inbox, oldest first, after removing leftover temporary files.
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
            // Only a write interrupted by a crash leaves one (an older release's import).
            match fs::remove_file(&path) {
                Ok(()) => log::info!("snapshots: removed {name}, left by an interrupted write"),
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
    files.sort();
    Ok(files)
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

    #[test]
    fn an_import_shares_the_unchanged_applications_of_the_newest_date() {
        let sample = include_bytes!("../../examples/snapshot-2024-05-14.json");
        let changed = String::from_utf8_lossy(sample).replacen("\"Count\": 43", "\"Count\": 44", 1);
        let store = Snapshots::in_memory("CODE", Memory::default()).unwrap();
        let import = |date: &str, bytes: &[u8]| {
            let date = Date::parse(date).unwrap();
            store.import(date, &mut &bytes[..], bytes.len() as u64, Source::Import).unwrap();
        };
        import("2024-05-14", sample);
        let before = store.catalog().newest().unwrap().pinned_by_key();
        import("2024-05-15", changed.as_bytes());
        let after = store.catalog().newest().unwrap().pinned_by_key();
        let shared = after
            .iter()
            .filter(|(key, bytes)| before.get(*key).is_some_and(|held| Arc::ptr_eq(held, bytes)))
            .count();
        // Twelve applications, one changed: the other eleven are the bytes already held.
        assert_eq!((after.len(), shared), (12, 11));
    }
}
