//! The history store: every dated snapshot, each piece kept once, in one redb database.
//! Persistence only: what is served, and what memory holds, is [`super::serve`]'s.
//!
//! From one day to the next a factory changes a few applications out of thousands, so a date
//! is stored as the list of its applications' keys and each piece once for all the dates that
//! name it (see [`super::piece`]). The store keeps one rule: **no committed date names a piece
//! the store lacks**. Every change keeps it inside one write transaction, deciding from the
//! transaction's own tables and nothing else: an import writes every piece its date names that
//! the transaction does not find (whatever memory holds: a reader may keep pieces of a date that
//! is being deleted), and a delete, a prune or a replacement removes a piece only when no date
//! left in the transaction names it. A piece found stored is taken only if it decompresses to
//! exactly the bytes being imported; one that does not is written again, so importing a date
//! repairs its damaged pieces.
//!
//! Why redb: a well-kept, pure-Rust embedded database with atomic, durable transactions
//! across tables, so an import (its new pieces and the date that names them) or a delete or a
//! prune (the dates and the pieces no date names any more) is one commit: a crash at any point
//! leaves every date as it was or as it became, never half of either (the crash tests stop the
//! file at every sync of each operation). Its commits save the allocator state (quick repair),
//! so the first start after a crash opens at once instead of walking the whole file. The
//! process that serves holds it as its single writer; `snapshot verify` reads it beside the
//! running server. When a removal leaves more than a configured share of the file free, the
//! file is compacted: redb moves the pages down and gives the rest back.

mod backend;
mod error;
pub mod shares;
pub mod tables;

use std::collections::HashSet;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use redb::backends::{FileBackend, InMemoryBackend};
use redb::{
    Builder, ConcurrencyMode, Database, Durability, ReadOnlyDatabase, ReadableDatabase,
    ReadableTable, StorageBackend, WriteTransaction,
};

use backend::{Length, Measured};
pub use error::HistoryError;
use tables::{APPS, DATE_APPS, DATES, LISTS, RUNS};
pub use tables::{PieceKind, Reading};

use super::date::Date;
use super::hold::{self, Holds};
use super::piece::build::{self, BuildError, Built};
use super::piece::codec;
use super::piece::record::{Arrival, DatePieces, Header};
use super::piece::{Digest, run_keys};
use super::render::Rendered;
use crate::locks;

pub const FILE: &str = "history.redb";

/// The database file, opened by the one process that writes it.
pub struct History {
    /// `None` once closed: redb marks the file clean only when the database is dropped, and
    /// the server's threads that hold the store end with the process, so [`History::close`]
    /// drops it explicitly at shutdown. Reads hold it shared for their transaction's life, so a
    /// compaction (which needs it alone) never meets a reader.
    db: RwLock<Option<Database>>,
    path: PathBuf,
    length: Length,
    holds: Holds,
}

/// A date committed.
pub struct Stored {
    pub built: Built,
    /// The date was in the store before (and is now replaced).
    pub replaced: bool,
    /// Applications and runs the store did not hold (the rest were found stored).
    pub new_pieces: usize,
    /// What the commit added: those pieces and the date's own records.
    pub added_bytes: u64,
    /// What it removed: the pieces of the version replaced that no date names any more.
    pub freed_bytes: u64,
}

/// Dates removed.
pub struct Removed {
    /// The dates the store held (and no longer does).
    pub dates: Vec<Date>,
    /// The bytes of the records removed with them: theirs, and the pieces no date names any
    /// more.
    pub freed_bytes: u64,
}

/// The file's size and how much of it is free, as redb counts its pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    pub file_bytes: u64,
    pub free_bytes: u64,
}

impl History {
    /// Opens `path`, creating it (mode 0600) when missing. `cache_bytes` bounds redb's own
    /// page cache, which counts against the server's memory like everything else.
    pub fn open(path: &Path, cache_bytes: usize, holds: Holds) -> Result<Self, HistoryError> {
        // Made here with its mode: it holds the data, and is never readable by others, not even
        // for a moment.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(|e| HistoryError::db("create", path, redb::Error::Io(e)))?;
        crate::keystore::tighten_mode(path, 0o600);
        let backend = FileBackend::new(file).map_err(|e| HistoryError::db("open", path, e))?;
        Self::with_backend(backend, path, cache_bytes, holds)
    }

    /// A store in memory only: for the benchmarks and tests that answer pages without a
    /// server.
    pub fn in_memory() -> Result<Self, HistoryError> {
        let path = Path::new("(in memory)");
        // Nothing else can open it: redb's default mode, which needs no locks of the backend.
        let mode = ConcurrencyMode::ExclusiveWriter;
        Self::build(InMemoryBackend::new(), path, 16 << 20, Holds::default(), mode)
    }

    /// A store on any backend (the file, or the crash tests' own) as the server opens it: one
    /// writer, this process, and `snapshot verify` or `diagnose` reading beside it. `path` names
    /// it in messages.
    pub fn with_backend(
        backend: impl StorageBackend,
        path: &Path,
        cache_bytes: usize,
        holds: Holds,
    ) -> Result<Self, HistoryError> {
        Self::build(backend, path, cache_bytes, holds, ConcurrencyMode::SingleWriter)
    }

    fn build(
        backend: impl StorageBackend,
        path: &Path,
        cache_bytes: usize,
        holds: Holds,
        mode: ConcurrencyMode,
    ) -> Result<Self, HistoryError> {
        let (backend, length) = Measured::new(backend)
            .map_err(|e| HistoryError::db("open", path, redb::Error::Io(e)))?;
        let db = Builder::new()
            .set_cache_size(cache_bytes)
            .set_concurrency_mode(mode)
            .create_with_backend(backend)
            .map_err(|e| HistoryError::db("open", path, e))?;
        let history = Self { db: RwLock::new(Some(db)), path: path.to_owned(), length, holds };
        // Every table exists from the first commit on, so a reader never meets a missing one.
        let txn = history.begin_write()?;
        for table in [DATES, DATE_APPS, APPS, RUNS, LISTS] {
            txn.open_table(table).map_err(|e| history.error("create the tables of", e))?;
        }
        txn.commit().map_err(|e| history.error("create the tables of", e))?;
        Ok(history)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The size of the database file, as redb last left it.
    pub fn file_bytes(&self) -> u64 {
        self.length.bytes()
    }

    /// Runs `read` in one read transaction: everything it reads is of one committed state.
    pub fn read<T, E: From<HistoryError>>(
        &self,
        read: impl FnOnce(&Reading<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let db = locks::read(&self.db);
        let db = db.as_ref().ok_or(HistoryError::Closed)?;
        let txn = db.begin_read().map_err(|e| self.error("read", e))?;
        read(&Reading { txn: &txn, path: &self.path })
    }

    /// Commits `rendered` as `date` (replacing it if the store has it), in one transaction that
    /// decides from its own tables which pieces to write.
    pub fn put(
        &self,
        date: Date,
        rendered: Rendered,
        file_sha256: Digest,
        arrival: Arrival,
    ) -> Result<Stored, HistoryError> {
        let started = std::time::Instant::now();
        let txn = self.begin_write()?;
        let fail = |e: redb::Error| self.error("write", e);
        let mut built = {
            let apps = txn.open_table(APPS).map_err(|e| fail(e.into()))?;
            let runs = txn.open_table(RUNS).map_err(|e| fail(e.into()))?;
            let path = self.path.as_path();
            let mut stored_apps =
                |keys: &[Digest]| tables::pieces(&apps, keys, path, tables::decode_app_segment);
            let mut stored_runs =
                |keys: &[Digest]| tables::pieces(&runs, keys, path, tables::decode_run_segment);
            build::build(rendered, file_sha256, &mut stored_apps, &mut stored_runs).map_err(
                |e| match e {
                    BuildError::Stored(e) => e.at(date),
                    BuildError::Layout(source) => HistoryError::Unstorable { date, source },
                },
            )?
        };
        built.header.arrival = Some(arrival);
        let built_at = started.elapsed();
        let unstorable = |source| HistoryError::Unstorable { date, source };
        let mut added = 0;
        let replaced;
        {
            let mut apps = txn.open_table(APPS).map_err(|e| fail(e.into()))?;
            for app in &built.new_apps {
                let record = codec::encode_app(app).map_err(unstorable)?;
                apps.insert(app.hash.as_slice(), record.as_slice()).map_err(|e| fail(e.into()))?;
                added += record.len();
            }
            let mut runs = txn.open_table(RUNS).map_err(|e| fail(e.into()))?;
            for run in &built.new_runs {
                let record = codec::encode_run(run);
                runs.insert(run.key.as_slice(), record.as_slice()).map_err(|e| fail(e.into()))?;
                added += record.len();
            }
            let mut lists = txn.open_table(LISTS).map_err(|e| fail(e.into()))?;
            for (key, bytes) in &built.lists {
                lists.insert(key.as_slice(), bytes.as_slice()).map_err(|e| fail(e.into()))?;
            }
            let day = date.to_string();
            let pieces = built.date_pieces.encode().map_err(unstorable)?;
            let header = built.header.encode().map_err(unstorable)?;
            let mut date_apps = txn.open_table(DATE_APPS).map_err(|e| fail(e.into()))?;
            date_apps.insert(day.as_bytes(), pieces.as_slice()).map_err(|e| fail(e.into()))?;
            let mut dates = txn.open_table(DATES).map_err(|e| fail(e.into()))?;
            replaced = dates
                .insert(day.as_bytes(), header.as_slice())
                .map_err(|e| fail(e.into()))?
                .is_some();
            added += pieces.len() + header.len();
        }
        let freed_bytes = if replaced { self.collect(&txn)? } else { 0 };
        self.holds.at(hold::IMPORT_COMMIT);
        txn.commit().map_err(|e| self.error("commit to", e))?;
        log::debug!(
            "snapshot {date}: its pieces found or made in {} ms, written and committed in {} ms",
            built_at.as_millis(),
            (started.elapsed() - built_at).as_millis()
        );
        let new_pieces = built.new_apps.len() + built.new_runs.len();
        Ok(Stored { built, replaced, new_pieces, added_bytes: added as u64, freed_bytes })
    }

    /// Removes `dates` and every piece no remaining date names, in one transaction. Nothing
    /// is written when the store held none of them.
    pub fn remove(&self, dates: &[Date]) -> Result<Removed, HistoryError> {
        let txn = self.begin_write()?;
        let fail = |e: redb::Error| self.error("remove from", e);
        let mut removed = Removed { dates: Vec::with_capacity(dates.len()), freed_bytes: 0 };
        {
            let mut headers = txn.open_table(DATES).map_err(|e| fail(e.into()))?;
            let mut date_apps = txn.open_table(DATE_APPS).map_err(|e| fail(e.into()))?;
            for date in dates {
                let day = date.to_string();
                let header = headers.remove(day.as_bytes()).map_err(|e| fail(e.into()))?;
                let record = date_apps.remove(day.as_bytes()).map_err(|e| fail(e.into()))?;
                if let Some(header) = header {
                    let record = record.map_or(0, |r| r.value().len());
                    removed.freed_bytes += (header.value().len() + record) as u64;
                    removed.dates.push(*date);
                }
            }
        }
        if removed.dates.is_empty() {
            txn.abort().map_err(|e| self.error("remove from", e))?;
            return Ok(removed);
        }
        removed.freed_bytes += self.collect(&txn)?;
        self.holds.at(hold::REMOVE_COMMIT);
        txn.commit().map_err(|e| self.error("commit to", e))?;
        Ok(removed)
    }

    /// Removes, within `txn`, every piece no date in it names: after a removal, or a
    /// replacement that dropped some of the date's pieces.
    /// Returns the bytes of the records it removed.
    fn collect(&self, txn: &WriteTransaction) -> Result<u64, HistoryError> {
        let fail = |e: redb::Error| self.error("remove from", e);
        let named = {
            let headers = txn.open_table(DATES).map_err(|e| fail(e.into()))?;
            let date_apps = txn.open_table(DATE_APPS).map_err(|e| fail(e.into()))?;
            named_pieces(&headers, &date_apps, &self.path)?
        };
        let mut freed = 0;
        for (table, keep) in [(APPS, &named.apps), (RUNS, &named.runs), (LISTS, &named.lists)] {
            let mut table = txn.open_table(table).map_err(|e| fail(e.into()))?;
            table
                .retain(|key, value| {
                    let kept = tables::digest(key).is_some_and(|key| keep.contains(&key));
                    if !kept {
                        freed += value.len() as u64;
                    }
                    kept
                })
                .map_err(|e| fail(e.into()))?;
        }
        Ok(freed)
    }

    /// The file's size and its free pages: redb counts them walking every table, so this is
    /// asked after a removal or a replacement, not per request.
    pub fn space(&self) -> Result<Space, HistoryError> {
        let txn = self.begin_write()?;
        let stats = txn.stats().map_err(|e| self.error("measure", e))?;
        txn.abort().map_err(|e| self.error("measure", e))?;
        let file_bytes = self.file_bytes();
        let used = stats.allocated_pages().saturating_mul(stats.page_size() as u64);
        Ok(Space { file_bytes, free_bytes: file_bytes.saturating_sub(used) })
    }

    /// Compacts the file when more than `free_percent` of it is free. Waits for the reads in
    /// flight, and holds off new ones, while redb moves the pages; returns the space before
    /// and after, when it compacted.
    pub fn compact_if_free(
        &self,
        free_percent: u8,
    ) -> Result<Option<(Space, Space)>, HistoryError> {
        let before = self.space()?;
        if before.free_bytes.saturating_mul(100)
            <= before.file_bytes.saturating_mul(u64::from(free_percent))
        {
            return Ok(None);
        }
        {
            let mut db = locks::write(&self.db);
            let db = db.as_mut().ok_or(HistoryError::Closed)?;
            db.compact().map_err(|e| self.error("compact", e))?;
        }
        Ok(Some((before, self.space()?)))
    }

    /// Closes the database cleanly (at shutdown, after the last write): the next open, and
    /// `snapshot verify` meanwhile, find it clean. Reads and writes after it fail.
    pub fn close(&self) {
        drop(locks::write(&self.db).take());
    }

    fn begin_write(&self) -> Result<WriteTransaction, HistoryError> {
        let db = locks::read(&self.db);
        let db = db.as_ref().ok_or(HistoryError::Closed)?;
        let mut txn = db.begin_write().map_err(|e| self.error("write", e))?;
        txn.set_durability(Durability::Immediate).map_err(|e| self.error("write", e))?;
        // Saves the allocator state with each commit: a restart after a crash need not walk
        // the whole file to rebuild it.
        txn.set_quick_repair(true);
        Ok(txn)
    }

    fn error(&self, step: &'static str, source: impl Into<redb::Error>) -> HistoryError {
        HistoryError::db(step, &self.path, source)
    }
}

/// The pieces the remaining dates name.
struct Named {
    apps: HashSet<Digest>,
    runs: HashSet<Digest>,
    lists: HashSet<Digest>,
}

fn named_pieces(
    headers: &impl ReadableTable<&'static [u8], &'static [u8]>,
    date_apps: &impl ReadableTable<&'static [u8], &'static [u8]>,
    path: &Path,
) -> Result<Named, HistoryError> {
    let fail = |e: redb::StorageError| HistoryError::db("read", path, e);
    let mut named = Named { apps: HashSet::new(), runs: HashSet::new(), lists: HashSet::new() };
    for row in date_apps.iter().map_err(fail)? {
        let (day, keys) = row.map_err(fail)?;
        let date = tables::date_key(day.value())?;
        let keys =
            DatePieces::decode(keys.value()).map_err(|e| HistoryError::damaged(date, e))?.keys;
        named.runs.extend(run_keys(&keys));
        named.apps.extend(keys);
    }
    for row in headers.iter().map_err(fail)? {
        let (day, header) = row.map_err(fail)?;
        let date = tables::date_key(day.value())?;
        let header = Header::decode(header.value()).map_err(|e| HistoryError::damaged(date, e))?;
        named.lists.extend(header.list_keys().map_err(|e| HistoryError::damaged(date, e))?);
    }
    Ok(named)
}

/// The database opened read-only beside the server, for `snapshot verify` and `diagnose`.
pub struct ReadOnly {
    db: ReadOnlyDatabase,
    path: PathBuf,
}

impl ReadOnly {
    pub fn open(path: &Path) -> Result<Self, HistoryError> {
        let db = Builder::new()
            .set_cache_size(16 << 20)
            .set_concurrency_mode(ConcurrencyMode::SingleWriter)
            .open_read_only(path)
            .map_err(|e| match e {
                redb::DatabaseError::RepairAborted => HistoryError::NeedsRepair(path.to_owned()),
                e => HistoryError::db("open", path, e),
            })?;
        Ok(Self { db, path: path.to_owned() })
    }

    /// Runs `read` in one read transaction.
    pub fn read<T, E: From<HistoryError>>(
        &self,
        read: impl FnOnce(&Reading<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let txn = self.db.begin_read().map_err(|e| HistoryError::db("read", &self.path, e))?;
        read(&Reading { txn: &txn, path: &self.path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}
