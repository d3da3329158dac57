//! How a question to the served data may be answered, and why it was not.

use std::fmt;

use crate::gzip::Corrupt;
use crate::snapshot::date::Date;
use crate::snapshot::history::HistoryError;

use super::pinned::Mismatch;

/// How a question may be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// From memory only, for a thread that must never wait: ready bytes, or [`ServeError::Cold`]
    /// at once. No disk read, no decompression, and no lock that another thread holds across
    /// either (the caches' locks are held only to look up and insert).
    MemoryOnly,
    /// Whatever it takes, for a thread that may wait: reads the store, decompresses, fills the
    /// caches, and answers.
    Blocking,
}

/// Why a question got no answer.
#[derive(Debug)]
pub enum ServeError {
    /// Asked [`Mode::MemoryOnly`], and the answer needs the store or a decompression: ask
    /// again in [`Mode::Blocking`] on a thread that may wait.
    Cold,
    /// The date was deleted or replaced between finding it and reading its pieces: ask again,
    /// and the answer comes from what is served now.
    Changed(Date),
    /// The store could not be read.
    History(HistoryError),
    /// A piece does not decompress to what it claims.
    Corrupt { date: Date, source: Corrupt },
    /// The pieces of a date do not fit together.
    Mismatch { date: Date, source: Mismatch },
}

impl fmt::Display for ServeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cold => f.write_str("the answer is not in memory"),
            Self::Changed(date) => write!(f, "the snapshot of {date} changed while it was read"),
            Self::History(e) => e.fmt(f),
            Self::Corrupt { date, source } => write!(
                f,
                "the snapshot history is damaged at {date}: an application does not decompress \
                 ({source}); run `aims-api snapshot verify`"
            ),
            Self::Mismatch { date, source } => write!(
                f,
                "the snapshot of {date} cannot be served: {source}; run `aims-api snapshot \
                 verify`"
            ),
        }
    }
}

impl std::error::Error for ServeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Cold | Self::Changed(_) => None,
            Self::History(e) => Some(e),
            Self::Corrupt { source, .. } => Some(source),
            Self::Mismatch { source, .. } => Some(source),
        }
    }
}

impl From<HistoryError> for ServeError {
    fn from(e: HistoryError) -> Self {
        Self::History(e)
    }
}
