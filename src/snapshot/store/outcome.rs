//! What a change to the store did, for the admin port's answers and the audit lines.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::snapshot::date::Date;
use crate::snapshot::history::HistoryError;
use crate::snapshot::piece::record::Arrival;
use crate::snapshot::piece::{Digest, Stats};
use crate::snapshot::retention::Rule;

/// An import that is live.
pub struct Imported {
    pub date: Date,
    pub stats: Stats,
    pub file_sha256: Digest,
    pub analyzed_on: SystemTime,
    pub arrival: Arrival,
    /// The date was already in the store (and is now replaced), or a refused file was.
    pub replaced: bool,
    /// From the first byte received to live.
    pub took: Duration,
    /// Applications and runs the store did not hold (the rest were found stored).
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

/// One date that retention removed, or tried to.
pub struct Pruned {
    pub date: Date,
    pub rule: Rule,
    /// One commit removes every date due, so they share its outcome.
    pub outcome: Result<Deleted, Arc<HistoryError>>,
}
