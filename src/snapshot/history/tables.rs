//! The store's tables, and reading them in any transaction: the server's reads, the checks of its
//! own write transactions, and `snapshot verify`'s read-only open all go through these.
//!
//! Tables: `dates` (date → [`Header`], small, read at start), `date_apps` (date →
//! [`DatePieces`]: the keys in serving order), `applications` and `runs` (key → piece), `lists`
//! (key → levels, categories or teams).

use std::path::Path;

use redb::{ReadTransaction, ReadableTable, TableDefinition};

use super::error::HistoryError;
use crate::gzip::Compressed;
use crate::snapshot::date::Date;
use crate::snapshot::piece::codec::{self, Damaged};
use crate::snapshot::piece::record::{DatePieces, Header};
use crate::snapshot::piece::{AppPiece, Digest, RunPiece};

// One key type for every table (a date's `YYYY-MM-DD` or a piece's SHA-256, as bytes): redb is
// generic over it, and each key type is another copy of its B-tree code (measured: 50 KiB of
// the 1.1 MiB redb adds to the stripped binary).
pub type Table = TableDefinition<'static, &'static [u8], &'static [u8]>;
pub const DATES: Table = TableDefinition::new("dates");
pub const DATE_APPS: Table = TableDefinition::new("date_apps");
pub const APPS: Table = TableDefinition::new("applications");
pub const RUNS: Table = TableDefinition::new("runs");
pub const LISTS: Table = TableDefinition::new("lists");

/// A table open in some transaction.
pub trait Readable: ReadableTable<&'static [u8], &'static [u8]> {}
impl<T: ReadableTable<&'static [u8], &'static [u8]>> Readable for T {}

/// The kinds of stored piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PieceKind {
    Application,
    Run,
    List,
}

impl PieceKind {
    pub fn table(self) -> Table {
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

/// Reads in one transaction, naming the file in every error.
pub struct Reading<'t> {
    pub txn: &'t ReadTransaction,
    pub path: &'t Path,
}

impl Reading<'_> {
    pub fn open(
        &self,
        table: Table,
    ) -> Result<redb::ReadOnlyTable<&'static [u8], &'static [u8]>, HistoryError> {
        self.txn.open_table(table).map_err(|e| HistoryError::db("read", self.path, e))
    }

    /// Every date with its header, oldest first.
    pub fn dates(&self) -> Result<Vec<(Date, Header)>, HistoryError> {
        let table = self.open(DATES)?;
        let fail = |e: redb::StorageError| HistoryError::db("read", self.path, e);
        let mut dates = Vec::new();
        for row in table.iter().map_err(fail)? {
            let (day, header) = row.map_err(fail)?;
            let date = date_key(day.value())?;
            let header =
                Header::decode(header.value()).map_err(|e| HistoryError::damaged(date, e))?;
            dates.push((date, header));
        }
        Ok(dates)
    }

    pub fn header(&self, date: Date) -> Result<Option<Header>, HistoryError> {
        header(&self.open(DATES)?, date, self.path)
    }

    /// A date's record: its applications' keys, in serving order, and its pieces' sizes.
    pub fn date_pieces(&self, date: Date) -> Result<Option<DatePieces>, HistoryError> {
        date_pieces(&self.open(DATE_APPS)?, date, self.path)
    }

    /// A list's bytes, which the date names and the store must hold.
    pub fn list(&self, date: Date, key: &Digest) -> Result<Vec<u8>, HistoryError> {
        let table = self.open(LISTS)?;
        let bytes =
            table.get(key.as_slice()).map_err(|e| HistoryError::db("read", self.path, e))?;
        let bytes = bytes.ok_or(HistoryError::Missing {
            date: Some(date),
            kind: PieceKind::List,
            key: *key,
        })?;
        Ok(bytes.value().to_vec())
    }
}

/// A date's header in `table` (the `dates` table of any transaction).
pub fn header(
    table: &impl Readable,
    date: Date,
    path: &Path,
) -> Result<Option<Header>, HistoryError> {
    date_record(table, date, path, Header::decode)
}

/// A date's record in `table` (the `date_apps` table of any transaction).
pub fn date_pieces(
    table: &impl Readable,
    date: Date,
    path: &Path,
) -> Result<Option<DatePieces>, HistoryError> {
    date_record(table, date, path, DatePieces::decode)
}

/// `date`'s record in a table keyed by date, decoded.
fn date_record<T>(
    table: &impl Readable,
    date: Date,
    path: &Path,
    decode: fn(&[u8]) -> Result<T, Damaged>,
) -> Result<Option<T>, HistoryError> {
    let day = date.to_string();
    let Some(bytes) = table.get(day.as_bytes()).map_err(|e| HistoryError::db("read", path, e))?
    else {
        return Ok(None);
    };
    decode(bytes.value()).map(Some).map_err(|e| HistoryError::damaged(date, e))
}

/// A date named by a stored key.
pub fn date_key(key: &[u8]) -> Result<Date, HistoryError> {
    let day = String::from_utf8_lossy(key);
    Date::parse(&day).map_err(|e| HistoryError::Damaged {
        date: None,
        source: Damaged(format!("date `{}`: {e}", day.escape_debug())),
    })
}

/// Reads pieces out of a table, each decoded with `decode`: `None` where the store has none.
pub fn pieces<T>(
    table: &impl Readable,
    keys: &[Digest],
    path: &Path,
    decode: impl Fn(&Digest, &[u8]) -> Result<T, Damaged>,
) -> Result<Vec<Option<T>>, HistoryError> {
    // In key order, which keeps the B-tree's pages near each other; handed back in `keys`'.
    let mut order: Vec<usize> = (0..keys.len()).collect();
    order.sort_unstable_by_key(|&i| keys[i]);
    let mut out: Vec<Option<T>> = keys.iter().map(|_| None).collect();
    for i in order {
        let key = &keys[i];
        let Some(bytes) =
            table.get(key.as_slice()).map_err(|e| HistoryError::db("read", path, e))?
        else {
            continue;
        };
        out[i] = Some(
            decode(key, bytes.value())
                .map_err(|source| HistoryError::Damaged { date: None, source })?,
        );
    }
    Ok(out)
}

/// The pieces `keys` names, each one required: a date names only what the store holds.
pub fn required<T>(
    found: Vec<Option<T>>,
    keys: &[Digest],
    date: Date,
    kind: PieceKind,
) -> Result<Vec<T>, HistoryError> {
    found
        .into_iter()
        .zip(keys)
        .map(|(piece, key)| {
            piece.ok_or(HistoryError::Missing { date: Some(date), kind, key: *key })
        })
        .collect()
}

pub fn decode_app(key: &Digest, bytes: &[u8]) -> Result<AppPiece, Damaged> {
    codec::decode_app(*key, bytes)
}

pub fn decode_app_segment(_: &Digest, bytes: &[u8]) -> Result<Compressed, Damaged> {
    codec::decode_app_segment(bytes)
}

pub fn decode_run(key: &Digest, bytes: &[u8]) -> Result<RunPiece, Damaged> {
    codec::decode_run(*key, bytes)
}

pub fn decode_run_segment(key: &Digest, bytes: &[u8]) -> Result<Compressed, Damaged> {
    codec::decode_run(*key, bytes).map(|run| run.compressed)
}

/// The raw bytes of a piece, for verify.
pub fn raw(
    reading: &Reading<'_>,
    kind: PieceKind,
    key: &Digest,
) -> Result<Option<Vec<u8>>, HistoryError> {
    let table = reading.open(kind.table())?;
    let value = table.get(key.as_slice()).map_err(|e| HistoryError::db("read", reading.path, e))?;
    Ok(value.map(|v| v.value().to_vec()))
}

/// The keys a piece table holds, for verify's count of pieces no date names.
pub fn all_keys(reading: &Reading<'_>, kind: PieceKind) -> Result<Vec<Digest>, HistoryError> {
    let fail = |e: redb::StorageError| HistoryError::db("read", reading.path, e);
    let table = reading.open(kind.table())?;
    let mut keys = Vec::new();
    for row in table.iter().map_err(fail)? {
        let (key, _) = row.map_err(fail)?;
        match digest(key.value()) {
            Some(key) => keys.push(key),
            None => {
                let what = format!("a {} is stored under a key that is no SHA-256", kind.name());
                return Err(HistoryError::Damaged { date: None, source: Damaged(what) });
            }
        }
    }
    Ok(keys)
}

/// A stored key as a SHA-256 (a key of another length is no piece of ours).
pub fn digest(key: &[u8]) -> Option<Digest> {
    key.try_into().ok()
}
