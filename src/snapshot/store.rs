//! The dated snapshots as one thing to change: import, delete, prune and the inbox take-over,
//! each one commit of the history store and one swap of what is served.
//!
//! [`Snapshots`] holds the history store ([`super::history`]), what is served from it
//! ([`super::serve`]) and the inbox ([`super::inbox`]). A change commits to the store first and
//! then swaps a new catalog in whole, so a request sees the old set or the new one, never a mix,
//! and never waits for an import. Changes take one commit lock, so two of them cannot lose each
//! other's change, and the catalog always says what the store's last commit holds. Which pieces
//! a change writes or removes is decided inside its transaction, from the store (see
//! [`super::history`]): never from what memory holds, which a request in flight may keep of a
//! date being deleted.

mod errors;
mod outcome;

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufReader, Read};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

pub use super::catalog::{Catalog, Entry};
pub use super::piece::record::{Arrival, Source};
pub use super::retention::{Retention, Rule};
pub use super::serve::{Memory, ServeError};
pub use errors::{DeleteError, ImportError, OpenError};
pub use outcome::{Deleted, Imported, Pruned, Reloaded};

use super::date::Date;
use super::export::{self, ExportError};
use super::format::{self, Received};
use super::history::{self, History, HistoryError};
use super::hold::{self, Holds};
use super::inbox;
use super::piece::sha256;
use super::serve::{About, Dated, Mode, Pinned, Serving};
use super::{check, render};
use crate::durable;
use crate::keystore::tighten_mode;
use crate::locks;

/// The page cache redb itself keeps: the records an older date is read from pass through it.
const DB_CACHE_BYTES: usize = 16 << 20;

/// When the store gives space back: compacted after a removal or a replacement that leaves
/// more than this share of the file free (the config's `snapshots.compact_free_percent`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compaction {
    pub free_percent: u8,
}

impl Default for Compaction {
    fn default() -> Self {
        Self { free_percent: 25 }
    }
}

/// The store, what is served from it, and the inbox.
pub struct Snapshots {
    dir: PathBuf,
    history: History,
    serving: Serving,
    compaction: Compaction,
    holds: Holds,
    /// Held for the commit-and-swap of an import, a delete, a prune and a take-over.
    commit: Mutex<()>,
    /// Each date's share of the disk, computed on the first listing after a change.
    disk: Mutex<Option<Arc<BTreeMap<Date, u64>>>>,
    /// What the removals and replacements since the free space was last measured held.
    freed: Mutex<u64>,
}

impl Snapshots {
    /// Opens the history store under `state_dir`, serves its newest date, and takes over any
    /// snapshot file in the inbox (`progress` hears of each one, for the service manager).
    pub fn open(
        state_dir: &Path,
        activation_code: &str,
        memory: Memory,
        compaction: Compaction,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self, OpenError> {
        let dir = state_dir.join(inbox::FOLDER);
        let fail = |source| OpenError::Folder { path: dir.clone(), source };
        fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir).map_err(fail)?;
        tighten_mode(&dir, 0o700);
        let holds = Holds::from_env(state_dir.to_owned());
        let started = Instant::now();
        let path = state_dir.join(history::FILE);
        let history =
            History::open(&path, DB_CACHE_BYTES, holds.clone()).map_err(OpenError::History)?;
        let snapshots =
            Self::with_history(dir, history, activation_code, memory, compaction, holds)?;
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
        let (compaction, holds) = (Compaction::default(), Holds::default());
        Self::with_history(PathBuf::new(), history, activation_code, memory, compaction, holds)
    }

    /// The store over `history`, serving what it holds; `dir` is the inbox.
    pub(crate) fn with_history(
        dir: PathBuf,
        history: History,
        activation_code: &str,
        memory: Memory,
        compaction: Compaction,
        holds: Holds,
    ) -> Result<Self, OpenError> {
        let snapshots = Self {
            dir,
            history,
            serving: Serving::new(activation_code, memory, holds.clone()),
            compaction,
            holds,
            commit: Mutex::new(()),
            disk: Mutex::new(None),
            freed: Mutex::new(0),
        };
        let _commit = snapshots.lock_commit();
        let entries = snapshots.read_entries().map_err(OpenError::History)?;
        let newest = snapshots.pin_newest(&entries);
        snapshots.serving.swap(|next| {
            next.entries = entries;
            next.newest = newest;
        });
        drop(_commit);
        Ok(snapshots)
    }

    /// The catalog in force now. Cheap: one `Arc` clone under a read lock.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.serving.catalog()
    }

    /// The date that answers requests without `Date`: always in memory.
    pub fn newest(&self) -> Option<Arc<Pinned>> {
        self.catalog().newest().cloned()
    }

    /// The date to answer from (the newest when `None`), asked in `mode`: see
    /// [`super::serve`].
    pub fn date(&self, date: Option<Date>, mode: Mode) -> Result<Option<Dated<'_>>, ServeError> {
        self.serving.date(&self.history, date, mode)
    }

    /// `date` written back as a document, if it is served. Reads the store for an older date.
    pub fn export(&self, date: Date) -> Result<Option<Vec<u8>>, ExportError> {
        let catalog = self.catalog();
        if let Some(newest) = catalog.newest().filter(|n| n.date() == date) {
            return export::newest(newest, &self.holds).map(Some);
        }
        let Some(entry) = catalog.entry(date) else { return Ok(None) };
        export::older(&self.history, entry, &self.holds).map(Some)
    }

    /// The memory a date holds now: the newest all of it, an older one its index while kept.
    /// The pieces of older dates are counted in [`Snapshots::cache_bytes`] instead.
    pub fn memory_bytes(&self, date: Date) -> usize {
        self.serving.memory_bytes(date)
    }

    /// Everything served from memory: the newest date, the older dates' indexes, the pieces.
    pub fn resident_bytes(&self) -> usize {
        self.serving.resident_bytes()
    }

    /// The pieces of older dates kept now.
    pub fn cache_bytes(&self) -> usize {
        self.serving.cache_bytes()
    }

    /// Each date's share of the store on disk (see [`history::shares`]).
    pub fn disk_shares(&self) -> Result<Arc<BTreeMap<Date, u64>>, HistoryError> {
        let mut disk = locks::lock(&self.disk);
        if let Some(shares) = &*disk {
            return Ok(Arc::clone(shares));
        }
        let shares = Arc::new(self.history.read(history::shares::disk_shares)?);
        *disk = Some(Arc::clone(&shares));
        Ok(shares)
    }

    /// The size of the store's file, as redb last left it.
    pub fn store_bytes(&self) -> u64 {
        self.history.file_bytes()
    }

    /// The size of a refused inbox file.
    pub fn inbox_bytes(&self, date: Date) -> std::io::Result<u64> {
        fs::metadata(inbox::path_of(&self.dir, date)).map(|m| m.len())
    }

    /// Imports the snapshot in `body` for `date`, replacing the one of that date if any;
    /// `source` says who sent it (a pull or anything else). The body is parsed as it comes.
    pub fn import(
        &self,
        date: Date,
        body: &mut dyn Read,
        source: Source,
    ) -> Result<Imported, ImportError> {
        let started = Instant::now();
        let received = format::read(body).map_err(ImportError::read)?;
        self.import_received(date, received, started, source, None)
    }

    fn import_received(
        &self,
        date: Date,
        received: Received,
        started: Instant,
        source: Source,
        written: Option<SystemTime>,
    ) -> Result<Imported, ImportError> {
        let Received { mut document, sha256: file_sha256, bytes } = received;
        let read_at = started.elapsed();
        let analyzed_on = check::check(&mut document).map_err(ImportError::Invalid)?;
        let checked_at = started.elapsed();
        // An application the newest date has too is kept as the newest holds it: the day's
        // import, which becomes the newest, then adds only what changed to what is in memory.
        // (Sharing bytes in memory, never deciding what the store lacks.)
        let newest = self.newest().map(|n| n.plain_by_key()).unwrap_or_default();
        let mut keep = |json: Vec<u8>| {
            let key = sha256(&json);
            match newest.get(&key) {
                Some(held) => (key, Arc::clone(held)),
                None => (key, Arc::<[u8]>::from(json)),
            }
        };
        let rendered =
            render::render(document, analyzed_on, bytes, &mut keep).map_err(ImportError::Render)?;
        drop(newest);
        let rendered_at = started.elapsed();
        let _commit = self.lock_commit();
        // Stamped as it goes live, in the commit that makes it so; a file taken over keeps the
        // time its release wrote it (`written`).
        let arrival = Arrival::at(written.unwrap_or_else(SystemTime::now), source);
        let stored =
            self.history.put(date, rendered, file_sha256, arrival).map_err(ImportError::History)?;
        self.holds.at(hold::IMPORT_COMMITTED);
        let stored_at = started.elapsed();
        let catalog = self.catalog();
        // A file for this date that the inbox refused is superseded by this import: it goes,
        // or the next reload would try it again. (A take-over removes its files itself, once
        // all of them are in.)
        let refused_file = source != Source::Inbox
            && catalog.is_refused(date)
            && match durable::remove(&inbox::path_of(&self.dir, date)) {
                Ok(removed) => removed,
                Err(e) => {
                    log::warn!("snapshot {date}: {e}; remove it by hand, the import supersedes it");
                    false
                }
            };
        let built = stored.built;
        let header_stats = built.header.stats();
        let entry = Entry::new(date, analyzed_on, header_stats, file_sha256, Some(arrival));
        let becomes_newest = catalog.newest().is_none_or(|newest| date >= newest.date());
        let about = About { date, analyzed_on, file_bytes: bytes, file_sha256 };
        let (stats, outcome) = if becomes_newest {
            match Pinned::assemble(about, built.pieces, built.plain, self.serving.activation_code())
            {
                Ok(pinned) => {
                    let stats = pinned.stats();
                    let pinned = Arc::new(pinned);
                    self.serving.swap(|next| {
                        next.entries.insert(date, entry);
                        next.refused.remove(&date);
                        next.newest = Some(pinned);
                    });
                    (stats, Ok(()))
                }
                Err(source) => {
                    // Stored, yet not servable whole: list it, and serve what can be.
                    let mut entries = catalog.entries.clone();
                    entries.insert(date, entry);
                    let newest = self.pin_newest(&entries);
                    self.serving.swap(|next| {
                        next.entries = entries;
                        next.refused.remove(&date);
                        next.newest = newest;
                    });
                    (header_stats, Err(ImportError::Serve(ServeError::Mismatch { date, source })))
                }
            }
        } else {
            self.serving.swap(|next| {
                next.entries.insert(date, entry);
                next.refused.remove(&date);
            });
            (header_stats, Ok(()))
        };
        self.changed(stored.freed_bytes);
        let ms = |d: Duration| d.as_millis();
        log::debug!(
            "snapshot {date}: read and parsed in {} ms, checked in {} ms, rendered in {} ms, \
             stored in {} ms ({} new piece(s)), live at {} ms",
            ms(read_at),
            ms(checked_at - read_at),
            ms(rendered_at - checked_at),
            ms(stored_at - rendered_at),
            stored.new_pieces,
            ms(started.elapsed())
        );
        outcome?;
        Ok(Imported {
            date,
            stats,
            file_sha256,
            analyzed_on,
            arrival,
            replaced: stored.replaced || refused_file,
            took: started.elapsed(),
            new_pieces: stored.new_pieces,
            added_bytes: stored.added_bytes,
        })
    }

    /// Stops serving `date` and removes it from the store, with every piece no other date
    /// names. A file refused from the inbox can be deleted the same way.
    pub fn delete(&self, date: Date) -> Result<Deleted, DeleteError> {
        let _commit = self.lock_commit();
        let catalog = self.catalog();
        let removed = self.history.remove(&[date]).map_err(DeleteError::History)?;
        if !removed.dates.is_empty() {
            self.holds.at(hold::REMOVE_COMMITTED);
        }
        let removed_file = if catalog.is_refused(date) {
            durable::remove(&inbox::path_of(&self.dir, date)).map_err(DeleteError::Write)?
        } else {
            false
        };
        if removed.dates.is_empty() && !removed_file && !catalog.is_refused(date) {
            return Err(DeleteError::NotFound);
        }
        let served = catalog.entry(date).map(|e| e.stats);
        self.remove_from_catalog(&[date]);
        self.changed(removed.freed_bytes);
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
        if let Ok(removed) = &outcome {
            self.holds.at(hold::REMOVE_COMMITTED);
            self.remove_from_catalog(&dates);
            self.changed(removed.freed_bytes);
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
        let files = inbox::scan(&self.dir).map_err(|source| HistoryError::Damaged {
            date: None,
            source: super::piece::codec::Damaged(format!(
                "cannot read the inbox {}: {source}",
                self.dir.display()
            )),
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
            match self.take_over_file(*date, path)? {
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
            self.serving.swap(|next| next.refused.extend(refused));
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
        // Whether the store holds it already, from these very bytes (a take-over interrupted
        // before it removed the files), is known before a byte is parsed.
        match inbox::sha256(path) {
            Ok(digest) if self.catalog().entry(date).is_some_and(|e| e.file_sha256 == digest) => {
                return Ok(Ok(None));
            }
            Ok(_) => {}
            Err(e) => return Ok(Err(format!("cannot read: {e}"))),
        }
        let received = match fs::File::open(path) {
            Ok(file) => format::read(&mut BufReader::with_capacity(256 << 10, file)),
            Err(e) => return Ok(Err(format!("cannot read: {e}"))),
        };
        let written = Some(inbox::written(path));
        let imported = received
            .map_err(ImportError::read)
            .and_then(|r| self.import_received(date, r, started, Source::Inbox, written));
        match imported {
            Ok(imported) => Ok(Ok(Some(imported))),
            Err(ImportError::History(e)) => Err(e),
            Err(ImportError::Invalid(invalid)) => Ok(Err(invalid.to_string())),
            Err(other) => Ok(Err(other.to_string())),
        }
    }

    fn read_entries(&self) -> Result<BTreeMap<Date, Entry>, HistoryError> {
        let dates = self.history.read(|reading| reading.dates())?;
        dates
            .into_iter()
            .map(|(date, header)| {
                let entry = Entry::of(date, &header).map_err(|e| HistoryError::damaged(date, e))?;
                Ok((date, entry))
            })
            .collect()
    }

    /// Reads the newest date of `entries` and decompresses all of it. A newest date that
    /// cannot be read is logged and the next one tried: an older answer beats none.
    fn pin_newest(&self, entries: &BTreeMap<Date, Entry>) -> Option<Arc<Pinned>> {
        for entry in entries.values().rev() {
            match super::serve::pin(&self.history, entry, self.serving.activation_code()) {
                Ok(pinned) => return Some(Arc::new(pinned)),
                Err(e) => log::error!("snapshot {}: {e}; not served by default", entry.date),
            }
        }
        None
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
        self.serving.swap(|next| {
            next.entries = entries;
            next.newest = newest;
            dates.iter().for_each(|date| {
                next.refused.remove(date);
            });
        });
    }

    /// After a commit: the listing's shares are stale, and a commit that removed records
    /// (`freed` bytes of them) may leave enough of the file free to give back. Measuring the
    /// free space walks the whole file, so it waits until the records removed since the last
    /// measure are the compaction's share of what the dates hold now (their disk shares).
    fn changed(&self, freed: u64) {
        *locks::lock(&self.disk) = None;
        let mut since = locks::lock(&self.freed);
        *since += freed;
        if *since == 0 {
            return;
        }
        let held: u64 = match self.disk_shares() {
            Ok(shares) => shares.values().sum(),
            Err(e) => {
                log::error!("snapshots: {e}; the store keeps its free space until the next try");
                return;
            }
        };
        if since.saturating_mul(100) <= held.saturating_mul(u64::from(self.compaction.free_percent))
        {
            return;
        }
        *since = 0;
        drop(since);
        match self.history.compact_if_free(self.compaction.free_percent) {
            Ok(Some((before, after))) => log::info!(
                "snapshots: compacted {}: {} to {} bytes ({} were free)",
                self.history.path().display(),
                before.file_bytes,
                after.file_bytes,
                before.free_bytes
            ),
            Ok(None) => {}
            Err(e) => {
                log::error!("snapshots: {e}; the store keeps its free space until the next try");
            }
        }
    }

    /// The holds this store stops at, for a test to wait on and release.
    #[cfg(test)]
    pub(crate) fn holds_for_test(&self) -> &Holds {
        &self.holds
    }

    fn lock_commit(&self) -> MutexGuard<'_, ()> {
        // The guard protects no data, only the order of commits and swaps.
        locks::lock(&self.commit)
    }
}
