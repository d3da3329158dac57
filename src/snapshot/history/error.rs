//! What can go wrong with the history store, and where: one error for every operation on it,
//! each keeping its cause.

use std::fmt;
use std::path::{Path, PathBuf};

use super::tables::PieceKind;
use crate::snapshot::date::Date;
use crate::snapshot::piece::codec::Damaged;
use crate::snapshot::piece::record::hex;

#[derive(Debug)]
pub enum HistoryError {
    /// The database could not be opened, read or written.
    Db { step: &'static str, path: PathBuf, source: Box<redb::Error> },
    /// A record does not read back (a date's, or a piece's).
    Damaged { date: Option<Date>, source: Damaged },
    /// A date names a piece the store does not hold.
    Missing { date: Option<Date>, kind: PieceKind, key: [u8; 32] },
    /// A date cannot be laid out for the store (a length past its field): nothing was written.
    Unstorable { date: Date, source: Damaged },
    /// The server is stopping and has closed the store.
    Closed,
    /// The file was not closed cleanly, and a read-only open cannot repair it.
    NeedsRepair(PathBuf),
}

impl HistoryError {
    pub fn db(step: &'static str, path: &Path, source: impl Into<redb::Error>) -> Self {
        Self::Db { step, path: path.to_owned(), source: Box::new(source.into()) }
    }

    pub fn damaged(date: Date, source: Damaged) -> Self {
        Self::Damaged { date: Some(date), source }
    }

    /// The same error, said of `date` when it did not say which.
    pub fn at(self, date: Date) -> Self {
        match self {
            Self::Damaged { date: None, source } => Self::Damaged { date: Some(date), source },
            Self::Missing { date: None, kind, key } => {
                Self::Missing { date: Some(date), kind, key }
            }
            other => other,
        }
    }
}

impl fmt::Display for HistoryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = |date: &Option<Date>| date.map_or_else(String::new, |d| format!(" at {d}"));
        match self {
            Self::Db { step, path, source } => {
                write!(f, "cannot {step} the snapshot history {}: {source}", path.display())
            }
            Self::Damaged { date, source } => write!(
                f,
                "the snapshot history is damaged{}: {source}; run `aims-api snapshot verify`",
                at(date)
            ),
            Self::Missing { date, kind, key } => write!(
                f,
                "the snapshot history is damaged{}: {} {} is missing; run `aims-api snapshot \
                 verify`",
                at(date),
                kind.name(),
                hex(key)
            ),
            Self::Unstorable { date, source } => {
                write!(f, "the snapshot of {date} cannot be stored: {source}")
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

impl std::error::Error for HistoryError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Db { source, .. } => Some(&**source),
            Self::Damaged { source, .. } | Self::Unstorable { source, .. } => Some(source),
            Self::Missing { .. } | Self::Closed | Self::NeedsRepair(_) => None,
        }
    }
}
