//! The set of dates being served: what the store holds, the newest held whole, and the inbox
//! files refused. Replaced whole on every change, so a request sees the old set or the new one.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use super::date::Date;
use super::piece::codec::Damaged;
use super::piece::record::{Arrival, Header};
use super::piece::{Digest, Stats};
use super::serve::Pinned;

/// One date as listed: what the store says of it, without reading its applications.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub date: Date,
    pub analyzed_on: SystemTime,
    pub stats: Stats,
    pub file_sha256: Digest,
    /// When and how it came; `None` for a date stored before arrivals were kept.
    pub arrival: Option<Arrival>,
    /// Which version of the date this is, in this process: a new one for every commit that
    /// writes the date, so what was read of a replaced or deleted version is never taken for
    /// the version now served.
    pub generation: u64,
}

/// Generations are unique in the process.
static GENERATIONS: AtomicU64 = AtomicU64::new(1);

impl Entry {
    pub fn new(
        date: Date,
        analyzed_on: SystemTime,
        stats: Stats,
        file_sha256: Digest,
        arrival: Option<Arrival>,
    ) -> Self {
        let generation = GENERATIONS.fetch_add(1, Ordering::Relaxed);
        Self { date, analyzed_on, stats, file_sha256, arrival, generation }
    }

    /// The entry a stored header describes.
    pub fn of(date: Date, header: &Header) -> Result<Self, Damaged> {
        let file_sha256 = header.file_sha256()?;
        Ok(Self::new(date, header.analyzed_on(), header.stats(), file_sha256, header.arrival))
    }

    /// Whether `header` (read from the store) is this version of the date.
    pub fn describes(&self, header: &Header) -> bool {
        header.file_sha256().is_ok_and(|sha| sha == self.file_sha256)
            && header.arrival == self.arrival
    }
}

/// The dates being served, the newest held whole, and the files refused from the inbox.
#[derive(Clone, Default)]
pub struct Catalog {
    pub(super) entries: BTreeMap<Date, Entry>,
    pub(super) newest: Option<Arc<Pinned>>,
    /// Inbox files that failed to load, with the reason; until imported or deleted.
    pub(super) refused: BTreeMap<Date, Arc<str>>,
}

impl Catalog {
    /// The date that answers requests without `Date`.
    pub fn newest(&self) -> Option<&Arc<Pinned>> {
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

    pub fn is_refused(&self, date: Date) -> bool {
        self.refused.contains_key(&date)
    }
}
