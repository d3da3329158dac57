//! The history store: every dated snapshot, each piece kept once, in one redb database.
//!
//! From one day to the next a factory changes a few applications out of thousands, so a date
//! is stored as the list of its applications' keys (the SHA-256 of each one's JSON) and an
//! application is stored once for all the dates that have it, compressed: the deflate segment
//! served to gzip clients, so a stored piece is served without compressing again. Runs of ten
//! applications (compressed together for gzip pages) are keyed by their members' keys; the
//! level, category and team lists by their bytes' SHA-256.
//!
//! Why redb: a well-kept, pure-Rust embedded database with atomic, durable transactions
//! across tables, so an import (its new pieces and the date that names them) or a delete or a
//! prune (the dates and the pieces no date names any more) is one commit: a SIGKILL at any
//! point leaves every date as it was or as it became, never half of either. Its commits save
//! the allocator state (quick repair), so the first start after a crash opens at once instead
//! of walking the whole file. The process that serves holds it as its single writer; `snapshot
//! verify` reads it beside the running server.
//!
//! Tables: `dates` (date → [`Header`], small, read at start), `date_apps` (date → keys),
//! `applications` and `runs` (key → piece), `lists` (key → levels, categories or teams).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, Weak};

use redb::{
    Builder, ConcurrencyMode, Database, Durability, ReadOnlyDatabase, ReadTransaction,
    ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};

use super::Date;
use super::codec::{self, DatePieces, Header};
use super::served::{AppPiece, Digest, Items, Parts, RunPiece, TeamsPiece, run_keys};
use crate::locks;

pub const FILE: &str = "history.redb";

// One key type for every table (a date's `YYYY-MM-DD` or a piece's SHA-256, as bytes): redb is
// generic over it, and each key type is another copy of its B-tree code (measured: 50 KiB of
// the 1.1 MiB redb adds to the stripped binary, now 5.5 MiB of the 6 MiB budget).
type Table = TableDefinition<'static, &'static [u8], &'static [u8]>;
const DATES: Table = TableDefinition::new("dates");
const DATE_APPS: Table = TableDefinition::new("date_apps");
const APPS: Table = TableDefinition::new("applications");
const RUNS: Table = TableDefinition::new("runs");
const LISTS: Table = TableDefinition::new("lists");

/// What went wrong with the store, and where.
#[derive(Debug)]
pub enum HistoryError {
    /// The database could not be opened, read or written.
    Db { step: &'static str, path: PathBuf, source: Box<redb::Error> },
    /// A date names a piece the store does not have, or a piece does not read back.
    Damaged { date: Option<Date>, what: String },
    /// The server is stopping and has closed the store.
    Closed,
    /// The file was not closed cleanly, and a read-only open cannot repair it.
    NeedsRepair(PathBuf),
}

impl fmt::Display for HistoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Db { step, path, source } => {
                write!(f, "cannot {step} the snapshot history {}: {source}", path.display())
            }
            Self::Damaged { date: Some(date), what } => {
                write!(
                    f,
                    "the snapshot history is damaged at {date}: {what}; run `aims-api snapshot verify`"
                )
            }
            Self::Damaged { date: None, what } => {
                write!(f, "the snapshot history is damaged: {what}; run `aims-api snapshot verify`")
            }
            Self::Closed => f.write_str("the snapshot history is closed: the server is stopping"),
            Self::NeedsRepair(path) => write!(
                f,
                "{} was not closed cleanly (the server was killed or crashed): `serve` repairs it \
                 in a moment at its next start; check again after that",
                path.display()
            ),
        }
    }
}

impl std::error::Error for HistoryError {}

/// The database file, opened by the one process that writes it.
pub struct History {
    /// `None` once closed: redb marks the file clean only when the database is dropped, and
    /// the server's threads that hold the store end with the process, so [`History::close`]
    /// drops it explicitly at shutdown.
    db: RwLock<Option<Database>>,
    path: PathBuf,
}

/// A date's pieces to commit: the date's own records and the pieces the store lacks.
pub struct NewDate<'a> {
    pub date: Date,
    pub header: &'a Header,
    pub pieces: &'a DatePieces,
    pub apps: &'a [Arc<AppPiece>],
    pub runs: &'a [Arc<RunPiece>],
    /// Levels and categories items, and the encoded teams, by their SHA-256.
    pub lists: &'a [(Digest, Vec<u8>)],
}

impl History {
    /// Opens `path`, creating it (mode 0600) when missing. `cache_bytes` bounds redb's own
    /// page cache, which counts against the server's memory like everything else.
    pub fn open(path: &Path, cache_bytes: usize) -> Result<Self, HistoryError> {
        // Made here with its mode, before redb opens it (redb initialises an empty file): it
        // holds the data, and is never readable by others, not even for a moment.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| db_error("create", path, redb::Error::Io(e)))?;
        let db = Builder::new()
            .set_cache_size(cache_bytes)
            .set_concurrency_mode(ConcurrencyMode::SingleWriter)
            .create(path)
            .map_err(|e| db_error("open", path, e))?;
        crate::keystore::tighten_mode(path, 0o600);
        Self::with_tables(db, path)
    }

    /// A store in memory only: for the benchmarks and tests that answer pages without a
    /// server.
    pub fn in_memory() -> Result<Self, HistoryError> {
        let path = Path::new("(in memory)");
        let db = Builder::new()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(|e| db_error("open", path, e))?;
        Self::with_tables(db, path)
    }

    fn with_tables(db: Database, path: &Path) -> Result<Self, HistoryError> {
        let history = Self { db: RwLock::new(Some(db)), path: path.to_owned() };
        // Every table exists from the first commit on, so a reader never meets a missing one.
        let txn = history.begin_write()?;
        for table in [DATES, DATE_APPS] {
            txn.open_table(table).map_err(|e| history.error("create the tables of", e))?;
        }
        for table in [APPS, RUNS, LISTS] {
            txn.open_table(table).map_err(|e| history.error("create the tables of", e))?;
        }
        txn.commit().map_err(|e| history.error("create the tables of", e))?;
        Ok(history)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every date with its header, oldest first.
    pub fn dates(&self) -> Result<Vec<(Date, Header)>, HistoryError> {
        let txn = self.begin_read()?;
        read_dates(&txn, &self.path)
    }

    /// The pieces of `date`, sharing what `shared` already holds in memory.
    pub fn read(&self, date: Date, shared: &Shared) -> Result<Option<Parts>, HistoryError> {
        let txn = self.begin_read()?;
        read_parts(&txn, &self.path, date, shared)
    }

    /// The pieces among `keys` that memory (`interned`) or the store already holds, `None`
    /// for the others: what an import need not compress again.
    pub fn known<T>(
        &self,
        kind: PieceKind,
        keys: &[Digest],
        interned: &Interned<T>,
        decode: fn(Digest, &[u8]) -> Result<T, codec::Damaged>,
    ) -> Result<Vec<Option<Arc<T>>>, HistoryError> {
        let txn = self.begin_read()?;
        let table = txn.open_table(kind.table()).map_err(|e| self.error("read", e))?;
        read_known(&table, keys, interned, decode).map_err(|failure| match failure {
            ReadFailure::Db(e) => self.error("read", e),
            ReadFailure::Damaged(e) => HistoryError::Damaged { date: None, what: e.0 },
            ReadFailure::Missing(key) => HistoryError::Damaged {
                date: None,
                what: format!("{} {} is missing", kind.name(), codec::hex(&key)),
            },
        })
    }

    /// Commits a date and the pieces it adds, in one transaction, and returns the bytes of the
    /// records it wrote for them (the lists, a few KiB stored again each time, are not
    /// counted). A date replaced may leave pieces that no date names any more: they go in the
    /// same transaction.
    pub fn put(&self, new: &NewDate<'_>, replaces: bool) -> Result<u64, HistoryError> {
        let txn = self.begin_write()?;
        let fail = |e: redb::Error| self.error("write", e);
        let mut added = 0;
        {
            let mut apps = txn.open_table(APPS).map_err(|e| fail(e.into()))?;
            for app in new.apps {
                let record = codec::encode_app(app);
                apps.insert(app.hash.as_slice(), record.as_slice()).map_err(|e| fail(e.into()))?;
                added += record.len();
            }
            let mut runs = txn.open_table(RUNS).map_err(|e| fail(e.into()))?;
            for run in new.runs {
                let record = codec::encode_run(run);
                runs.insert(run.key.as_slice(), record.as_slice()).map_err(|e| fail(e.into()))?;
                added += record.len();
            }
            let mut lists = txn.open_table(LISTS).map_err(|e| fail(e.into()))?;
            for (key, bytes) in new.lists {
                lists.insert(key.as_slice(), bytes.as_slice()).map_err(|e| fail(e.into()))?;
            }
            let day = new.date.to_string();
            let (pieces, header) = (new.pieces.encode(), new.header.encode());
            let mut date_apps = txn.open_table(DATE_APPS).map_err(|e| fail(e.into()))?;
            date_apps.insert(day.as_bytes(), pieces.as_slice()).map_err(|e| fail(e.into()))?;
            let mut dates = txn.open_table(DATES).map_err(|e| fail(e.into()))?;
            dates.insert(day.as_bytes(), header.as_slice()).map_err(|e| fail(e.into()))?;
            added += pieces.len() + header.len();
        }
        if replaces {
            self.collect(&txn)?;
        }
        txn.commit().map_err(|e| self.error("commit to", e))?;
        Ok(added as u64)
    }

    /// Removes `dates` and every piece no remaining date names, in one transaction.
    pub fn remove(&self, dates: &[Date]) -> Result<(), HistoryError> {
        let txn = self.begin_write()?;
        let fail = |e: redb::Error| self.error("remove from", e);
        {
            let mut headers = txn.open_table(DATES).map_err(|e| fail(e.into()))?;
            let mut date_apps = txn.open_table(DATE_APPS).map_err(|e| fail(e.into()))?;
            for date in dates {
                let day = date.to_string();
                headers.remove(day.as_bytes()).map_err(|e| fail(e.into()))?;
                date_apps.remove(day.as_bytes()).map_err(|e| fail(e.into()))?;
            }
        }
        self.collect(&txn)?;
        txn.commit().map_err(|e| self.error("commit to", e))
    }

    /// Removes, within `txn`, every piece no date names any more: after a removal, or a
    /// replacement that dropped some of the date's pieces.
    fn collect(&self, txn: &WriteTransaction) -> Result<(), HistoryError> {
        let fail = |e: redb::Error| self.error("remove from", e);
        let named = {
            let headers = txn.open_table(DATES).map_err(|e| fail(e.into()))?;
            let date_apps = txn.open_table(DATE_APPS).map_err(|e| fail(e.into()))?;
            named_pieces(&headers, &date_apps)?
        };
        for (table, keep) in [(APPS, &named.apps), (RUNS, &named.runs), (LISTS, &named.lists)] {
            let mut table = txn.open_table(table).map_err(|e| fail(e.into()))?;
            table
                .retain(|key, _| digest(key).is_some_and(|key| keep.contains(&key)))
                .map_err(|e| fail(e.into()))?;
        }
        Ok(())
    }

    /// Each date's share of the disk: its own records, and each piece it names divided among
    /// the dates that name it, so the shares add up to what the pieces take. Read from the
    /// dates' records alone (they carry every piece's size), never from the pieces.
    pub fn disk_shares(&self) -> Result<BTreeMap<Date, u64>, HistoryError> {
        let txn = self.begin_read()?;
        let fail = |e: redb::Error| self.error("read", e);
        let damaged = |date, what| HistoryError::Damaged { date: Some(date), what };
        let headers = read_dates(&txn, &self.path)?;
        let date_apps = txn.open_table(DATE_APPS).map_err(|e| fail(e.into()))?;
        // Every piece each date names, with its size; then how many dates name each.
        let mut per_date: Vec<(Date, u64, Sized)> = Vec::with_capacity(headers.len());
        for (date, header) in &headers {
            let Some(record) =
                date_apps.get(date.to_string().as_bytes()).map_err(|e| fail(e.into()))?
            else {
                continue;
            };
            let own = (record.value().len() + header.encode().len()) as u64;
            let pieces = DatePieces::decode(record.value()).map_err(|e| damaged(*date, e.0))?;
            let mut named: Sized =
                pieces.keys.iter().zip(&pieces.sizes).map(|(k, s)| (*k, u64::from(*s))).collect();
            let runs = run_keys(&pieces.keys).into_iter();
            named.extend(runs.zip(pieces.run_sizes.iter().map(|s| u64::from(*s))));
            if let Ok(lists) = header.list_keys() {
                named.extend(lists.into_iter().zip(header.lists_bytes));
            }
            named.sort_unstable();
            named.dedup_by_key(|(key, _)| *key);
            per_date.push((*date, own, named));
        }
        let mut uses: HashMap<Digest, u64> = HashMap::new();
        for (_, _, named) in &per_date {
            named.iter().for_each(|(key, _)| *uses.entry(*key).or_default() += 1);
        }
        Ok(per_date
            .into_iter()
            .map(|(date, own, named)| {
                let shared: u64 = named
                    .iter()
                    .map(|(key, size)| size / uses.get(key).copied().unwrap_or(1).max(1))
                    .sum();
                (date, own + shared)
            })
            .collect())
    }

    /// The size of the database file.
    pub fn file_bytes(&self) -> u64 {
        std::fs::metadata(&self.path).map_or(0, |m| m.len())
    }

    /// Closes the database cleanly (at shutdown, after the last write): the next open, and
    /// `snapshot verify` meanwhile, find it clean. Reads and writes after it fail.
    pub fn close(&self) {
        drop(locks::write(&self.db).take());
    }

    fn begin_read(&self) -> Result<ReadTransaction, HistoryError> {
        let db = locks::read(&self.db);
        let db = db.as_ref().ok_or_else(|| self.closed())?;
        db.begin_read().map_err(|e| self.error("read", e))
    }

    fn begin_write(&self) -> Result<WriteTransaction, HistoryError> {
        let db = locks::read(&self.db);
        let db = db.as_ref().ok_or_else(|| self.closed())?;
        let mut txn = db.begin_write().map_err(|e| self.error("write", e))?;
        txn.set_durability(Durability::Immediate).map_err(|e| self.error("write", e))?;
        // Saves the allocator state with each commit: a restart after a crash need not walk
        // the whole file to rebuild it.
        txn.set_quick_repair(true);
        Ok(txn)
    }

    fn closed(&self) -> HistoryError {
        HistoryError::Closed
    }

    fn error(&self, step: &'static str, source: impl Into<redb::Error>) -> HistoryError {
        db_error(step, &self.path, source)
    }
}

fn db_error(step: &'static str, path: &Path, source: impl Into<redb::Error>) -> HistoryError {
    HistoryError::Db { step, path: path.to_owned(), source: Box::new(source.into()) }
}

/// A stored key as a SHA-256 (a key of another length is no piece of ours).
fn digest(key: &[u8]) -> Option<Digest> {
    key.try_into().ok()
}

/// The pieces a date names, each with its stored size.
type Sized = Vec<(Digest, u64)>;

/// The database opened read-only beside the server, for `snapshot verify`.
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
                e => db_error("open", path, e),
            })?;
        Ok(Self { db, path: path.to_owned() })
    }

    pub fn transaction(&self) -> Result<ReadTransaction, HistoryError> {
        self.db.begin_read().map_err(|e| db_error("read", &self.path, e))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Every date with its header, oldest first.
pub fn read_dates(txn: &ReadTransaction, path: &Path) -> Result<Vec<(Date, Header)>, HistoryError> {
    let fail = |e: redb::Error| db_error("read", path, e);
    let table = txn.open_table(DATES).map_err(|e| fail(e.into()))?;
    let mut dates = Vec::new();
    for row in table.iter().map_err(|e| fail(e.into()))? {
        let (day, header) = row.map_err(|e| fail(e.into()))?;
        let day = String::from_utf8_lossy(day.value());
        let date = Date::parse(&day).map_err(|e| HistoryError::Damaged {
            date: None,
            what: format!("date `{day}`: {e}"),
        })?;
        let header = Header::decode(header.value())
            .map_err(|e| HistoryError::Damaged { date: Some(date), what: e.0 })?;
        dates.push((date, header));
    }
    Ok(dates)
}

/// A date's record: its applications' keys, in serving order, and its pieces' sizes.
pub fn read_pieces(
    txn: &ReadTransaction,
    path: &Path,
    date: Date,
) -> Result<Option<DatePieces>, HistoryError> {
    let table = txn.open_table(DATE_APPS).map_err(|e| db_error("read", path, e))?;
    let Some(record) =
        table.get(date.to_string().as_bytes()).map_err(|e| db_error("read", path, e))?
    else {
        return Ok(None);
    };
    DatePieces::decode(record.value())
        .map(Some)
        .map_err(|e| HistoryError::Damaged { date: Some(date), what: e.0 })
}

/// The raw bytes of a piece, for verify.
pub fn read_raw(
    txn: &ReadTransaction,
    path: &Path,
    kind: PieceKind,
    key: &Digest,
) -> Result<Option<Vec<u8>>, HistoryError> {
    let table = txn.open_table(kind.table()).map_err(|e| db_error("read", path, e))?;
    let value = table.get(key.as_slice()).map_err(|e| db_error("read", path, e))?;
    Ok(value.map(|v| v.value().to_vec()))
}

/// The kinds of stored piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PieceKind {
    Application,
    Run,
    List,
}

impl PieceKind {
    fn table(self) -> Table {
        match self {
            Self::Application => APPS,
            Self::Run => RUNS,
            Self::List => LISTS,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Application => "application",
            Self::Run => "run",
            Self::List => "list",
        }
    }
}

/// The keys every piece table holds, for verify's count of pieces no date names.
pub fn all_keys(
    txn: &ReadTransaction,
    path: &Path,
    kind: PieceKind,
) -> Result<Vec<Digest>, HistoryError> {
    let fail = |e: redb::Error| db_error("read", path, e);
    let table = txn.open_table(kind.table()).map_err(|e| fail(e.into()))?;
    let mut keys = Vec::new();
    for row in table.iter().map_err(|e| fail(e.into()))? {
        let (key, _) = row.map_err(|e| fail(e.into()))?;
        keys.extend(digest(key.value()));
    }
    Ok(keys)
}

fn read_parts(
    txn: &ReadTransaction,
    path: &Path,
    date: Date,
    shared: &Shared,
) -> Result<Option<Parts>, HistoryError> {
    let fail = |e: redb::Error| db_error("read", path, e);
    let damaged = |what: String| HistoryError::Damaged { date: Some(date), what };
    let headers = txn.open_table(DATES).map_err(|e| fail(e.into()))?;
    let Some(header) = headers.get(date.to_string().as_bytes()).map_err(|e| fail(e.into()))? else {
        return Ok(None);
    };
    let header = Header::decode(header.value()).map_err(|e| damaged(e.0))?;
    let keys = read_pieces(txn, path, date)?
        .map(|pieces| pieces.keys)
        .ok_or_else(|| damaged("its application list is missing".into()))?;

    let failed = |kind: PieceKind, failure: ReadFailure| match failure {
        ReadFailure::Db(e) => fail(e.into()),
        ReadFailure::Missing(key) => {
            damaged(format!("{} {} is missing", kind.name(), codec::hex(&key)))
        }
        ReadFailure::Damaged(e) => damaged(e.0),
    };
    let apps_table = txn.open_table(APPS).map_err(|e| fail(e.into()))?;
    let apps = read_shared(&apps_table, &keys, &shared.apps, codec::decode_app)
        .map_err(|e| failed(PieceKind::Application, e))?;
    let run_keys = run_keys(&keys);
    let runs_table = txn.open_table(RUNS).map_err(|e| fail(e.into()))?;
    let runs = read_shared(&runs_table, &run_keys, &shared.runs, codec::decode_run)
        .map_err(|e| failed(PieceKind::Run, e))?;
    let lists = txn.open_table(LISTS).map_err(|e| fail(e.into()))?;
    let list = |key: &Digest| -> Result<Vec<u8>, HistoryError> {
        let bytes = lists.get(key.as_slice()).map_err(|e| fail(e.into()))?;
        let bytes = bytes.ok_or_else(|| damaged(format!("list {} is missing", codec::hex(key))))?;
        Ok(bytes.value().to_vec())
    };
    let items = |key: Digest| -> Result<Arc<Items>, HistoryError> {
        if let Some(items) = shared.items.get(&key) {
            return Ok(items);
        }
        let json = list(&key)?;
        Ok(shared.items.insert(key, Items { hash: key, json: json.into() }))
    };
    let [levels_key, categories_key, teams_key] = header.list_keys().map_err(|e| damaged(e.0))?;
    let levels = items(levels_key)?;
    let categories = items(categories_key)?;
    let teams = match shared.teams.get(&teams_key) {
        Some(teams) => teams,
        None => {
            let teams = codec::decode_teams(&list(&teams_key)?).map_err(|e| damaged(e.0))?;
            shared.teams.insert(teams_key, TeamsPiece { hash: teams_key, teams })
        }
    };
    let file_sha256 = codec::unhex(&header.file_sha256).map_err(|e| damaged(e.0))?;
    Ok(Some(Parts {
        date,
        analyzed_on: header.analyzed_on(),
        file_bytes: header.stats().file_bytes,
        file_sha256,
        levels,
        categories,
        teams,
        apps,
        runs,
    }))
}

/// Why a piece could not be read.
enum ReadFailure {
    Db(redb::StorageError),
    Missing(Digest),
    Damaged(codec::Damaged),
}

type PieceTable = redb::ReadOnlyTable<&'static [u8], &'static [u8]>;

/// The pieces `keys` names, in order, each one required: see [`read_known`].
fn read_shared<T>(
    table: &PieceTable,
    keys: &[Digest],
    interned: &Interned<T>,
    decode: fn(Digest, &[u8]) -> Result<T, codec::Damaged>,
) -> Result<Vec<Arc<T>>, ReadFailure> {
    let pieces = read_known(table, keys, interned, decode)?;
    pieces
        .into_iter()
        .zip(keys)
        .map(|(piece, key)| piece.ok_or(ReadFailure::Missing(*key)))
        .collect()
}

/// The pieces `keys` names, in order: those `interned` already holds in memory shared, the
/// others read from `table` and decoded (and shared from then on), `None` where the store has
/// none. Read in key order, which keeps the B-tree's pages near each other. One thread: reading
/// on two was measured no faster (redb serialises its page reads).
fn read_known<T>(
    table: &PieceTable,
    keys: &[Digest],
    interned: &Interned<T>,
    decode: fn(Digest, &[u8]) -> Result<T, codec::Damaged>,
) -> Result<Vec<Option<Arc<T>>>, ReadFailure> {
    let mut pieces: Vec<Option<Arc<T>>> = keys.iter().map(|key| interned.get(key)).collect();
    let mut missing: Vec<(Digest, usize)> =
        pieces.iter().enumerate().filter(|(_, p)| p.is_none()).map(|(i, _)| (keys[i], i)).collect();
    missing.sort_unstable();
    for (key, at) in missing {
        let Some(bytes) = table.get(key.as_slice()).map_err(ReadFailure::Db)? else { continue };
        let piece = decode(key, bytes.value()).map_err(ReadFailure::Damaged)?;
        if let Some(slot) = pieces.get_mut(at) {
            *slot = Some(interned.insert(key, piece));
        }
    }
    Ok(pieces)
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
) -> Result<Named, HistoryError> {
    let damaged = |what: String| HistoryError::Damaged { date: None, what };
    let io = |e: redb::StorageError| damaged(format!("cannot read the dates: {e}"));
    let mut named = Named { apps: HashSet::new(), runs: HashSet::new(), lists: HashSet::new() };
    for row in date_apps.iter().map_err(io)? {
        let (_, keys) = row.map_err(io)?;
        let keys = DatePieces::decode(keys.value()).map_err(|e| damaged(e.0))?.keys;
        named.runs.extend(run_keys(&keys));
        named.apps.extend(keys);
    }
    for row in headers.iter().map_err(io)? {
        let (_, header) = row.map_err(io)?;
        let header = Header::decode(header.value()).map_err(|e| damaged(e.0))?;
        named.lists.extend(header.list_keys().map_err(|e| damaged(e.0))?);
    }
    Ok(named)
}

/// The pieces some served date holds in memory, by key, so the next date read shares them
/// instead of reading and holding a second copy. Weak: a piece no date holds any more goes.
#[derive(Default)]
pub struct Shared {
    pub apps: Interned<AppPiece>,
    pub runs: Interned<RunPiece>,
    pub items: Interned<Items>,
    pub teams: Interned<TeamsPiece>,
}

impl Shared {
    /// Forgets the pieces nothing holds any more.
    pub fn sweep(&self) {
        self.apps.sweep();
        self.runs.sweep();
        self.items.sweep();
        self.teams.sweep();
    }
}

pub struct Interned<T> {
    map: Mutex<HashMap<Digest, Weak<T>>>,
}

impl<T> Default for Interned<T> {
    fn default() -> Self {
        Self { map: Mutex::new(HashMap::new()) }
    }
}

impl<T> Interned<T> {
    pub fn get(&self, key: &Digest) -> Option<Arc<T>> {
        locks::lock(&self.map).get(key).and_then(Weak::upgrade)
    }

    /// `value`, or the copy another reader put in first.
    pub fn insert(&self, key: Digest, value: T) -> Arc<T> {
        let mut map = locks::lock(&self.map);
        if let Some(existing) = map.get(&key).and_then(Weak::upgrade) {
            return existing;
        }
        let value = Arc::new(value);
        map.insert(key, Arc::downgrade(&value));
        value
    }

    /// Shares an `Arc` made elsewhere (an import's new pieces).
    pub fn share(&self, key: Digest, value: &Arc<T>) {
        locks::lock(&self.map).insert(key, Arc::downgrade(value));
    }

    fn sweep(&self) {
        locks::lock(&self.map).retain(|_, weak| weak.strong_count() > 0);
    }
}
