//! Why a change to the store, or opening it, did not happen. Each keeps its cause.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::durable::WriteError;
use crate::snapshot::format::{Invalid, ReadError};
use crate::snapshot::history::HistoryError;
use crate::snapshot::render::RenderError;
use crate::snapshot::serve::ServeError;

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

impl std::error::Error for OpenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Folder { source, .. } => Some(source),
            Self::History(e) => Some(e),
        }
    }
}

/// Why an import did not happen.
#[derive(Debug)]
pub enum ImportError {
    /// The request had no body.
    Empty,
    /// The body could not be read from the client.
    Body(io::Error),
    Invalid(Invalid),
    /// A valid snapshot that this build cannot index (an object of 4 GiB or more), or a bug.
    Render(RenderError),
    /// The store could not be read or written; nothing changed.
    History(HistoryError),
    /// The date is stored, but could not be made the one served (a damaged store, or a bug).
    Serve(ServeError),
}

impl ImportError {
    pub(super) fn read(e: ReadError) -> Self {
        match e {
            ReadError::Empty => Self::Empty,
            ReadError::Body(e) => Self::Body(e),
            ReadError::Invalid(e) => Self::Invalid(e),
        }
    }
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str(
                "the request has no body: send the snapshot JSON (curl --data-binary @FILE)",
            ),
            Self::Body(e) => write!(f, "the request body could not be read: {e}"),
            Self::Invalid(e) => write!(f, "the snapshot is invalid, nothing changed: {e}"),
            Self::Render(e) => write!(f, "the snapshot cannot be stored, nothing changed: {e}"),
            Self::History(e) => write!(f, "{e}; nothing changed"),
            Self::Serve(e) => write!(f, "the snapshot is stored, but cannot be served: {e}"),
        }
    }
}

impl std::error::Error for ImportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Empty => None,
            Self::Body(e) => Some(e),
            Self::Invalid(e) => Some(e),
            Self::Render(e) => Some(e),
            Self::History(e) => Some(e),
            Self::Serve(e) => Some(e),
        }
    }
}

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

impl std::error::Error for DeleteError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::NotFound => None,
            Self::History(e) => Some(e),
            Self::Write(e) => Some(e),
        }
    }
}
