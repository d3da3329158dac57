//! What the API is answered from, and the two ways a question may be asked of it.
//!
//! The newest date, which answers every request without `Date`, is held whole ([`Pinned`]).
//! An older date is kept as its index ([`older::Older`]) among the `cached_dates` most recently
//! used, and the pieces requests ask for (an application's or a run of ten's JSON or compressed
//! segment: a page reads whole runs where it covers them) are kept in one cache of `cache_mib`,
//! by content, shared by every older date; redb's own page cache holds the records they were
//! read from. Memory is bounded by the
//! configuration, not by the number of dates, and start-up reads the newest date only.
//!
//! Every question is asked in a [`Mode`]. [`Mode::MemoryOnly`] answers from the ready bytes or
//! says [`ServeError::Cold`] at once: no disk read, no decompression, and no lock that another
//! thread holds across either (the catalog's lock is held to clone an `Arc`, the caches' to look
//! up and insert). [`Mode::Blocking`] reads and decompresses what is missing in one read
//! transaction of the store, fills the caches, and answers. A thread that must never wait asks
//! in the first mode and hands what is cold to one that may, which asks in the second.
//!
//! A read is of one version of a date: it checks in its own transaction that the store still
//! holds the version the catalog named ([`catalog::Entry::describes`]), and says
//! [`ServeError::Changed`] when a delete or a replacement came between, so the question is asked
//! again of what is served now. An index read from a version no longer served is never kept:
//! it is kept only while the catalog still names its generation, checked under the same lock
//! that the catalog's replacement takes to forget the versions it replaced.

mod ask;
mod cache;
mod older;
mod pinned;

use std::ops::Range;
use std::sync::{Arc, Mutex, RwLock};

pub use ask::{Mode, ServeError};
pub use pinned::{About, Mismatch, Pinned, Whole, WithModule};

use self::cache::{Form, Kept, Lru};
use self::older::Older;
use self::pinned::{Covered, cover};
use super::catalog::{Catalog, Entry};
use super::date::Date;
use super::history::History;
use super::history::tables::{self, APPS, PieceKind, RUNS};
use super::hold::{self, Holds};
use super::piece::{Digest, Items, Pieces, TeamsPiece};
use crate::gzip::{self, Compressed, Segment};
use crate::locks;

/// How much of the history memory keeps besides the newest date (the config's `snapshots`
/// section).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    /// Older dates whose index is kept, most recently used.
    pub cached_dates: usize,
    /// Pieces of older dates requests asked for, in bytes.
    pub cache_bytes: usize,
}

impl Default for Memory {
    fn default() -> Self {
        Self { cached_dates: 4, cache_bytes: 64 << 20 }
    }
}

/// The catalog in force, and what memory keeps of the older dates.
pub struct Serving {
    live: RwLock<Arc<Catalog>>,
    /// Older dates' indexes, by date and generation.
    dates: Mutex<Lru<(Date, u64), Arc<Older>>>,
    pieces: Mutex<cache::Pieces>,
    activation_code: String,
    holds: Holds,
}

impl Serving {
    pub fn new(activation_code: &str, memory: Memory, holds: Holds) -> Self {
        Self {
            live: RwLock::new(Arc::new(Catalog::default())),
            dates: Mutex::new(Lru::new(memory.cached_dates)),
            pieces: Mutex::new(Lru::new(memory.cache_bytes)),
            activation_code: activation_code.to_owned(),
            holds,
        }
    }

    pub fn activation_code(&self) -> &str {
        &self.activation_code
    }

    /// The catalog in force now. Cheap: one `Arc` clone under a read lock.
    pub fn catalog(&self) -> Arc<Catalog> {
        Arc::clone(&locks::read(&self.live))
    }

    /// Replaces the catalog by a changed copy, then forgets the indexes of the versions it no
    /// longer names. Called only under the store's commit lock.
    pub fn swap(&self, change: impl FnOnce(&mut Catalog)) {
        let mut next = (*self.catalog()).clone();
        change(&mut next);
        let next = Arc::new(next);
        *locks::write(&self.live) = Arc::clone(&next);
        locks::lock(&self.dates).remove_where(|(date, generation)| {
            next.entry(*date).is_none_or(|entry| entry.generation != *generation)
        });
    }

    /// The date to answer from: the newest when `date` is `None`, `None` when it is not served.
    pub fn date<'s>(
        &'s self,
        history: &'s History,
        date: Option<Date>,
        mode: Mode,
    ) -> Result<Option<Dated<'s>>, ServeError> {
        let catalog = self.catalog();
        let Some(newest) = catalog.newest() else { return Ok(None) };
        let view = match date {
            None => View::Newest(Arc::clone(newest)),
            Some(date) if date == newest.date() => View::Newest(Arc::clone(newest)),
            Some(date) => {
                let Some(entry) = catalog.entry(date) else { return Ok(None) };
                View::Older(self.older(history, entry, mode)?)
            }
        };
        Ok(Some(Dated { serving: self, history, view }))
    }

    /// An older date's index: kept, or (blocking) read from the store and kept.
    fn older(
        &self,
        history: &History,
        entry: &Entry,
        mode: Mode,
    ) -> Result<Arc<Older>, ServeError> {
        let key = (entry.date, entry.generation);
        if let Some(older) = locks::lock(&self.dates).get(&key) {
            return Ok(older);
        }
        if mode == Mode::MemoryOnly {
            return Err(ServeError::Cold);
        }
        let older =
            Arc::new(history.read(|reading| Older::read(reading, entry, &self.activation_code))?);
        self.holds.at(hold::SERVE_READ);
        let mut dates = locks::lock(&self.dates);
        // Kept only while this version is served: a delete or a replacement that came since
        // has swapped the catalog, and its forgetting (under this lock) is done or waits.
        let served = self.catalog().entry(entry.date).map(|e| e.generation);
        if served == Some(entry.generation) {
            dates.insert(key, Arc::clone(&older), 1);
        }
        Ok(older)
    }

    /// The memory a date holds now: the newest all of it, an older one its index while kept.
    pub fn memory_bytes(&self, date: Date) -> usize {
        let catalog = self.catalog();
        if let Some(newest) = catalog.newest().filter(|n| n.date() == date) {
            return newest.memory_bytes();
        }
        let Some(entry) = catalog.entry(date) else { return 0 };
        let dates = locks::lock(&self.dates);
        dates.peek(&(date, entry.generation)).map_or(0, |older| older.memory_bytes())
    }

    /// The pieces of older dates kept now.
    pub fn cache_bytes(&self) -> usize {
        locks::lock(&self.pieces).cost()
    }

    /// Everything served from memory: the newest date, the older dates' indexes, the pieces.
    pub fn resident_bytes(&self) -> usize {
        let newest = self.catalog().newest().map_or(0, |n| n.memory_bytes());
        let olders: usize = locks::lock(&self.dates).values().map(|o| o.memory_bytes()).sum();
        newest + olders + self.cache_bytes()
    }

    /// The pieces `wanted` that the cache holds, in order (`None` where it holds none): one
    /// lookup under the lock for a whole page.
    fn kept(&self, wanted: &[(Form, Digest)]) -> Vec<Option<Kept>> {
        let mut pieces = locks::lock(&self.pieces);
        wanted.iter().map(|key| pieces.get(key)).collect()
    }

    fn keep(&self, pieces: impl Iterator<Item = ((Form, Digest), Kept)>) {
        let mut cache = locks::lock(&self.pieces);
        for (key, kept) in pieces {
            let cost = kept.cost();
            cache.insert(key, kept, cost);
        }
    }
}

/// A date being answered from, in the state the catalog named it.
pub struct Dated<'s> {
    serving: &'s Serving,
    history: &'s History,
    view: View,
}

enum View {
    Newest(Arc<Pinned>),
    Older(Arc<Older>),
}

/// The segments of a page: borrowed from the newest date, or held from the cache.
pub enum Segments<'a> {
    Borrowed(Vec<Segment<'a>>),
    Held(Vec<Arc<Compressed>>),
}

impl Segments<'_> {
    pub fn each(&self) -> Vec<Segment<'_>> {
        match self {
            Self::Borrowed(segments) => segments.clone(),
            Self::Held(held) => held.iter().map(|c| c.segment()).collect(),
        }
    }
}

impl Dated<'_> {
    pub fn date(&self) -> Date {
        match &self.view {
            View::Newest(pinned) => pinned.date(),
            View::Older(older) => older.entry.date,
        }
    }

    /// The bare `InfrastructureInfo` object.
    pub fn infrastructure(&self) -> &[u8] {
        match &self.view {
            View::Newest(pinned) => pinned.infrastructure(),
            View::Older(older) => older.infrastructure(),
        }
    }

    pub fn application_count(&self) -> usize {
        match &self.view {
            View::Newest(pinned) => pinned.application_count(),
            View::Older(older) => older.keys().len(),
        }
    }

    /// The position of the application with this GUID (letter case ignored).
    pub fn application_position(
        &self,
        guid: &str,
        mode: Mode,
    ) -> Result<Option<usize>, ServeError> {
        match &self.view {
            View::Newest(pinned) => Ok(pinned.application_position(guid)),
            View::Older(older) => Ok(self.guids(older, mode)?.application(guid)),
        }
    }

    /// The (application position, module position) of the module with this GUID.
    pub fn module_position(
        &self,
        guid: &str,
        mode: Mode,
    ) -> Result<Option<(usize, usize)>, ServeError> {
        match &self.view {
            View::Newest(pinned) => Ok(pinned.module_position(guid)),
            View::Older(older) => Ok(self.guids(older, mode)?.module(guid)),
        }
    }

    fn guids(&self, older: &Older, mode: Mode) -> Result<Arc<older::Guids>, ServeError> {
        if let Some(guids) = older.guids() {
            return Ok(Arc::clone(guids));
        }
        if mode == Mode::MemoryOnly {
            return Err(ServeError::Cold);
        }
        self.history.read(|reading| older.read_guids(reading))
    }

    /// The applications at `positions` (those that exist) in serving order, as parts to be
    /// joined by commas: each application's JSON object, or, for an older date, where the
    /// range covers a whole run of ten, the run's (its ten objects and the commas between
    /// them), which is read and decompressed as one.
    pub fn applications(
        &self,
        positions: Range<usize>,
        mode: Mode,
    ) -> Result<Vec<Arc<[u8]>>, ServeError> {
        let older = match &self.view {
            View::Newest(pinned) => return Ok(pinned.applications(positions)),
            View::Older(older) => older,
        };
        let parts = self.covering(older, positions, true, mode)?;
        parts
            .into_iter()
            .map(|kept| match kept {
                Kept::Plain(plain) => Ok(plain),
                Kept::Deflate(_) => Err(lost(older)),
            })
            .collect()
    }

    /// The applications at `positions` as deflate segments for a [`gzip::Member`], to be
    /// joined by commas: the runs of ten the range covers whole, and each other application
    /// alone.
    pub fn segments(
        &self,
        positions: Range<usize>,
        mode: Mode,
    ) -> Result<Segments<'_>, ServeError> {
        let older = match &self.view {
            View::Newest(pinned) => {
                return Ok(Segments::Borrowed(pinned.application_segments(positions)));
            }
            View::Older(older) => older,
        };
        let parts = self.covering(older, positions, false, mode)?;
        let held = parts.into_iter().map(|kept| match kept {
            Kept::Deflate(segment) => Ok(segment),
            Kept::Plain(_) => Err(lost(older)),
        });
        held.collect::<Result<_, _>>().map(Segments::Held)
    }

    /// The pieces that cover `positions` of an older date (whole runs, and single
    /// applications), `plain` or compressed: from the cache, or (blocking) read in one
    /// transaction, decompressed if plain, and kept.
    fn covering(
        &self,
        older: &Older,
        positions: Range<usize>,
        plain: bool,
        mode: Mode,
    ) -> Result<Vec<Kept>, ServeError> {
        let (run, app) = match plain {
            true => (Form::RunPlain, Form::AppPlain),
            false => (Form::RunDeflate, Form::AppDeflate),
        };
        let wanted = cover(positions, older.keys().len())
            .into_iter()
            .map(|covered| {
                let key = match covered {
                    Covered::Run(r) => older.run_keys().get(r).map(|k| (run, *k)),
                    Covered::App(a) => older.keys().get(a).map(|k| (app, *k)),
                };
                key.ok_or_else(|| lost(older))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut kept = self.serving.kept(&wanted);
        let missing: Vec<usize> = (0..kept.len()).filter(|&i| kept[i].is_none()).collect();
        if missing.is_empty() {
            return kept.into_iter().map(|k| k.ok_or_else(|| lost(older))).collect();
        }
        if mode == Mode::MemoryOnly {
            return Err(ServeError::Cold);
        }
        let asked: Vec<(Form, Digest)> = missing.iter().map(|&i| wanted[i]).collect();
        let segments = self.read_segments(older, &asked)?;
        let fresh: Vec<Kept> = if plain {
            let pieces: Vec<&Compressed> = segments.iter().map(|s| &**s).collect();
            let inflated = gzip::inflate_each(&pieces, inflate_threads(&pieces))
                .map_err(|source| ServeError::Corrupt { date: older.entry.date, source })?;
            inflated.into_iter().map(|p| Kept::Plain(p.into())).collect()
        } else {
            segments.into_iter().map(Kept::Deflate).collect()
        };
        self.serving.holds.at(hold::SERVE_READ);
        self.serving.keep(asked.iter().copied().zip(fresh.iter().cloned()));
        for (i, piece) in missing.into_iter().zip(fresh) {
            kept[i] = Some(piece);
        }
        kept.into_iter().map(|k| k.ok_or_else(|| lost(older))).collect()
    }

    /// The application at `app` holding only its module at `module`.
    pub fn application_with_module(
        &self,
        app: usize,
        module: usize,
        mode: Mode,
    ) -> Result<Option<WithModule>, ServeError> {
        let date = self.date();
        let cut = match &self.view {
            View::Newest(pinned) => pinned.application_with_module(app, module),
            View::Older(older) => {
                let guids = self.guids(older, mode)?;
                let Some(meta) = guids.meta(app) else { return Ok(None) };
                let Some(plain) = self.applications(app..app + 1, mode)?.pop() else {
                    return Ok(None);
                };
                WithModule::new(plain, meta, module)
            }
        };
        cut.transpose().map_err(|source| ServeError::Mismatch { date, source })
    }

    /// The compressed segments of the applications and runs `asked` names, in its order, read
    /// in one transaction that still holds this version of the date.
    fn read_segments(
        &self,
        older: &Older,
        asked: &[(Form, Digest)],
    ) -> Result<Vec<Arc<Compressed>>, ServeError> {
        let date = older.entry.date;
        let (runs, apps): (Vec<usize>, Vec<usize>) = (0..asked.len())
            .partition(|&i| matches!(asked[i].0, Form::RunPlain | Form::RunDeflate));
        let keys = |at: &[usize]| at.iter().map(|&i| asked[i].1).collect::<Vec<_>>();
        let (run_keys, app_keys) = (keys(&runs), keys(&apps));
        let (found_runs, found_apps) = self.history.read(|reading| {
            older::check(reading, &older.entry)?;
            let at = |e: super::history::HistoryError| ServeError::History(e.at(date));
            let found_runs = tables::pieces(
                &reading.open(RUNS)?,
                &run_keys,
                reading.path,
                tables::decode_run_segment,
            )
            .map_err(at)?;
            let found_apps = tables::pieces(
                &reading.open(APPS)?,
                &app_keys,
                reading.path,
                tables::decode_app_segment,
            )
            .map_err(at)?;
            Ok::<_, ServeError>((found_runs, found_apps))
        })?;
        let found_runs = tables::required(found_runs, &run_keys, date, PieceKind::Run)?;
        let found_apps = tables::required(found_apps, &app_keys, date, PieceKind::Application)?;
        let mut segments: Vec<Option<Arc<Compressed>>> = vec![None; asked.len()];
        for (at, segment) in
            runs.into_iter().zip(found_runs).chain(apps.into_iter().zip(found_apps))
        {
            segments[at] = Some(Arc::new(segment));
        }
        segments.into_iter().map(|s| s.ok_or_else(|| lost(older))).collect()
    }
}

/// A page of an older date decompresses up to 200 applications (5 MiB for the benchmark's):
/// past 2 MiB the work is shared by the cores, which is what keeps its first touch within
/// 10 ms; a smaller read is not worth a thread.
fn inflate_threads(pieces: &[&Compressed]) -> usize {
    let plain: usize = pieces.iter().map(|p| p.plain_len as usize).sum();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    (plain >> 21).clamp(1, cores)
}

/// A piece that was found, then not: only a bug gets here.
fn lost(older: &Older) -> ServeError {
    ServeError::Mismatch {
        date: older.entry.date,
        source: Mismatch("a piece read for a page went missing (a bug: please report it)"),
    }
}

/// `entry`'s date read whole from the store and decompressed on every core, to be the newest.
pub fn pin(history: &History, entry: &Entry, activation_code: &str) -> Result<Pinned, ServeError> {
    let date = entry.date;
    let pieces = history.read(|reading| {
        older::check(reading, entry)?;
        let header = reading.header(date)?.ok_or(ServeError::Changed(date))?;
        let damaged = |e| ServeError::History(super::history::HistoryError::damaged(date, e));
        let [levels, categories, teams] = header.list_keys().map_err(damaged)?;
        let keys = reading
            .date_pieces(date)?
            .ok_or_else(|| {
                damaged(super::piece::codec::Damaged("its application list is missing".into()))
            })?
            .keys;
        let at = |e: super::history::HistoryError| ServeError::History(e.at(date));
        let apps = tables::pieces(&reading.open(APPS)?, &keys, reading.path, tables::decode_app)
            .map_err(at)?;
        let apps = tables::required(apps, &keys, date, PieceKind::Application)?;
        let run_keys = super::piece::run_keys(&keys);
        let runs =
            tables::pieces(&reading.open(RUNS)?, &run_keys, reading.path, tables::decode_run)
                .map_err(at)?;
        let runs = tables::required(runs, &run_keys, date, PieceKind::Run)?;
        let items = |key: &Digest| -> Result<Arc<Items>, ServeError> {
            let json = reading.list(date, key)?;
            Ok(Arc::new(Items { hash: *key, json: json.into() }))
        };
        let teams = TeamsPiece {
            hash: teams,
            teams: super::piece::codec::decode_teams(&reading.list(date, &teams)?)
                .map_err(damaged)?,
        };
        Ok::<_, ServeError>((
            header,
            Pieces {
                levels: items(&levels)?,
                categories: items(&categories)?,
                teams: Arc::new(teams),
                apps: apps.into_iter().map(Arc::new).collect(),
                runs: runs.into_iter().map(Arc::new).collect(),
            },
        ))
    });
    let (header, pieces) = pieces?;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let compressed: Vec<&Compressed> = pieces.apps.iter().map(|app| &app.compressed).collect();
    let plain = gzip::inflate_each(&compressed, cores)
        .map_err(|source| ServeError::Corrupt { date, source })?;
    drop(compressed);
    let plain: Box<[Arc<[u8]>]> = plain.into_iter().map(Arc::from).collect();
    let about = About {
        date,
        analyzed_on: header.analyzed_on(),
        file_bytes: header.file_bytes,
        file_sha256: entry.file_sha256,
    };
    Pinned::assemble(about, pieces, plain, activation_code)
        .map_err(|source| ServeError::Mismatch { date, source })
}
