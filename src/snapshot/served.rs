//! The served form of one date: its pieces, shared with every other date that has them, and
//! the indexes that find a piece.
//!
//! A date is a list of applications in serving order, each an [`AppPiece`]: the application's
//! compressed JSON (a [`gzip`] segment, served as is to a client that accepts gzip) and what
//! the filters need to know of it, content-addressed by the SHA-256 of its JSON. Dates that
//! share an application share the one `Arc`. Runs of `RUN_APPS` applications are compressed
//! together as well ([`RunPiece`]), since a page that covers a run compresses better as one.
//!
//! The plaintext of an application is held in one of two ways ([`Plain`]): the newest date,
//! which answers every request without `Date`, keeps all of it (pinned: its pages cost a copy);
//! an older date decompresses what a request needs through a shared [`PlainCache`] bounded by
//! the configuration, so the memory of a year of history does not grow with the dates touched.
//!
//! The whole answers (LastAnalysisDate, Level, Category, Team) carry the configured activation
//! code, so they are built here, when a date is served, from the stored list items.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use super::Date;
use super::render::{APP_TAIL, AppMeta, Teams, string};
use crate::gzip::{self, Compressed, Corrupt, Segment};
use crate::locks;

/// A SHA-256: the address of a stored piece.
pub type Digest = [u8; 32];

pub fn sha256(bytes: &[u8]) -> Digest {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
    out
}

/// The key of a run: the SHA-256 of its members' keys, so a run is stored once for as long
/// as the same applications sit together in serving order.
pub fn run_key(members: &[Digest]) -> Digest {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    context.update(b"run:");
    members.iter().for_each(|member| context.update(member));
    let mut out = [0u8; 32];
    out.copy_from_slice(context.finish().as_ref());
    out
}

/// The keys of the runs that applications with these keys form, in serving order.
pub fn run_keys(apps: &[Digest]) -> Vec<Digest> {
    apps.chunks(RUN_APPS).map(run_key).collect()
}

/// Applications per compressed run. Compressed alone, an application of a few KiB shrinks
/// 3-4x (the sample's: 27,664 bytes -> 7,169 for its 12); in runs of ten the repeated GUIDs
/// and keys of its neighbours are in the window too. Ten divides the page sizes clients use
/// (10, 20, 50, 100, 200), so a client walking pages from offset 0 only ever gets runs.
pub const RUN_APPS: usize = 10;

/// One application as stored and served: its compressed JSON and its index entries.
#[derive(Debug, PartialEq, Eq)]
pub struct AppPiece {
    /// SHA-256 of the plaintext JSON.
    pub hash: Digest,
    pub meta: AppMeta,
    pub compressed: Compressed,
}

/// Ten applications (fewer at the end) with the commas between them, compressed together.
#[derive(Debug, PartialEq, Eq)]
pub struct RunPiece {
    pub key: Digest,
    pub compressed: Compressed,
}

/// A stored list of levels or categories (its items), by the SHA-256 of its bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct Items {
    pub hash: Digest,
    pub json: Box<[u8]>,
}

/// The stored teams, by the SHA-256 of their encoding.
#[derive(Debug, PartialEq, Eq)]
pub struct TeamsPiece {
    pub hash: Digest,
    pub teams: Teams,
}

/// What one date is made of: its own few fields and the shared pieces.
pub struct Parts {
    pub date: Date,
    pub analyzed_on: SystemTime,
    pub file_bytes: usize,
    pub file_sha256: Digest,
    pub levels: Arc<Items>,
    pub categories: Arc<Items>,
    pub teams: Arc<TeamsPiece>,
    pub apps: Vec<Arc<AppPiece>>,
    pub runs: Vec<Arc<RunPiece>>,
}

/// Where a date's plaintext comes from.
pub enum Plain {
    /// All of it in memory, by position: the newest date.
    Pinned(Box<[Arc<[u8]>]>),
    /// Decompressed on demand, through the cache the older dates share.
    Cached(Arc<PlainCache>),
}

/// Sizes, for the admin port's listing and the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub applications: usize,
    pub modules: usize,
    /// `PatternFinding` entries, application and module level together.
    pub findings: usize,
    /// The size of the file it was imported from.
    pub file_bytes: usize,
    /// The size of its JSON, every application and whole answer.
    pub rendered_bytes: usize,
    /// The size of its compressed forms (gzip members and deflate segments).
    pub compressed_bytes: usize,
}

/// The answers rendered whole, for [`Snapshot::whole`] and [`Snapshot::whole_gzip`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whole {
    /// `/TechnicalDebt_LastAnalysisDate`: the bare `InfrastructureInfo` object.
    LastAnalysisDate = 0,
    Levels = 1,
    Categories = 2,
    Teams = 3,
}

pub struct Snapshot {
    date: Date,
    analyzed_on: SystemTime,
    stats: Stats,
    /// SHA-256 of the imported file's bytes, so a pull can tell it would change nothing.
    file_sha256: Digest,
    /// `{"ActivationCode":…,"LastAnalyzedOn":…}`: the LastAnalysisDate answer, and the value of
    /// `InfrastructureInfo` in every other one.
    infrastructure: Arc<[u8]>,
    levels: Arc<[u8]>,
    categories: Arc<[u8]>,
    teams: Arc<[u8]>,
    /// The gzip member of each [`Whole`] answer, by its discriminant: made at assembly for the
    /// newest date (which serves them), on first use for an older one (the whole answers are
    /// served from the newest date only; an older date's are read by an export, uncompressed).
    whole_gzip: OnceLock<[Arc<[u8]>; 4]>,
    team_part: Arc<TeamsPiece>,
    /// Lower-case `ExternalId` → team position.
    team_index: HashMap<Box<str>, usize>,
    apps: Box<[Arc<AppPiece>]>,
    runs: Box<[Arc<RunPiece>]>,
    /// Lower-case GUID → application position.
    app_index: HashMap<Box<str>, usize>,
    /// Lower-case GUID → (application position, module position within it).
    module_index: HashMap<Box<str>, (usize, usize)>,
    plain: Plain,
    /// The parts that are shared by reference: what the listing and the limits count.
    shared: Vec<Arc<Items>>,
}

/// An application cut to one module: `plain[head]`, `plain[module]`, then [`APP_TAIL`].
pub struct WithModule {
    pub plain: Arc<[u8]>,
    pub head: Range<usize>,
    pub module: Range<usize>,
}

impl WithModule {
    pub fn parts(&self) -> [&[u8]; 3] {
        let head = self.plain.get(self.head.clone()).unwrap_or_default();
        [head, self.plain.get(self.module.clone()).unwrap_or_default(), APP_TAIL]
    }
}

impl Snapshot {
    /// The served form of `parts`, with `activation_code` in its `InfrastructureInfo`.
    pub fn assemble(parts: Parts, activation_code: &str, plain: Plain) -> Self {
        let mut infrastructure = Vec::with_capacity(128);
        infrastructure.extend_from_slice(b"{\"ActivationCode\":");
        string(&mut infrastructure, activation_code);
        let stamp = humantime::format_rfc3339_millis(parts.analyzed_on).to_string();
        infrastructure.extend_from_slice(b",\"LastAnalyzedOn\":");
        string(&mut infrastructure, &stamp);
        infrastructure.push(b'}');

        let levels = envelope(&infrastructure, "Levels", &[&parts.levels.json]);
        let categories = envelope(&infrastructure, "Categories", &[&parts.categories.json]);
        let team_items: Vec<&[u8]> = team_objects(&parts.teams.teams).collect();
        let teams = envelope(&infrastructure, "Teams", &team_items);
        let whole_gzip = OnceLock::new();
        if matches!(plain, Plain::Pinned(_)) {
            let _ =
                whole_gzip.set(compress_wholes([&infrastructure, &levels, &categories, &teams]));
        }

        let team_index = parts.teams.teams.ids.iter().cloned().zip(0..).collect();
        let mut app_index = HashMap::with_capacity(parts.apps.len());
        let modules: usize = parts.apps.iter().map(|app| app.meta.modules.len()).sum();
        let mut module_index = HashMap::with_capacity(modules);
        for (position, app) in parts.apps.iter().enumerate() {
            app_index.insert(app.meta.guid.clone(), position);
            for (m, module) in app.meta.modules.iter().enumerate() {
                module_index.insert(module.guid.clone(), (position, m));
            }
        }

        let app_plain: usize = parts.apps.iter().map(|a| a.compressed.plain_len as usize).sum();
        let wholes = [&infrastructure, &levels, &categories, &teams];
        let stats = Stats {
            applications: parts.apps.len(),
            modules,
            findings: parts.apps.iter().map(|app| app.meta.findings as usize).sum(),
            file_bytes: parts.file_bytes,
            rendered_bytes: app_plain + wholes.iter().map(|w| w.len()).sum::<usize>(),
            compressed_bytes: whole_gzip
                .get()
                .map_or(0, |w| w.iter().map(|m| m.len()).sum::<usize>())
                + parts.apps.iter().map(|a| a.compressed.memory_bytes()).sum::<usize>()
                + parts.runs.iter().map(|r| r.compressed.memory_bytes()).sum::<usize>(),
        };
        Self {
            date: parts.date,
            analyzed_on: parts.analyzed_on,
            stats,
            file_sha256: parts.file_sha256,
            infrastructure: infrastructure.into(),
            levels: levels.into(),
            categories: categories.into(),
            teams: teams.into(),
            whole_gzip,
            team_part: parts.teams,
            team_index,
            apps: parts.apps.into(),
            runs: parts.runs.into(),
            app_index,
            module_index,
            plain,
            shared: vec![parts.levels, parts.categories],
        }
    }

    pub fn date(&self) -> Date {
        self.date
    }

    pub fn analyzed_on(&self) -> SystemTime {
        self.analyzed_on
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// SHA-256 of the bytes it was imported from.
    pub fn file_sha256(&self) -> &Digest {
        &self.file_sha256
    }

    /// Its applications' bytes by key when it holds them all (the newest date), for an import
    /// to share; empty otherwise.
    pub fn pinned_by_key(&self) -> HashMap<Digest, Arc<[u8]>> {
        match &self.plain {
            Plain::Pinned(plain) => {
                self.apps.iter().zip(plain.iter()).map(|(a, p)| (a.hash, Arc::clone(p))).collect()
            }
            Plain::Cached(_) => HashMap::new(),
        }
    }

    /// What it holds in memory of its own and through its pieces (pieces shared with other
    /// dates are counted in each): the compressed forms, the indexes and, when pinned, the
    /// plaintext. An older date's decompressed applications are in the shared cache instead.
    pub fn memory_bytes(&self) -> usize {
        let index_entry = size_of::<(Box<str>, (usize, usize))>() + 48;
        let indexes = (self.app_index.len() + self.module_index.len()) * index_entry;
        let metas: usize = self.apps.iter().map(|a| a.meta.modules.len() * 64 + 96).sum();
        let plain = match &self.plain {
            Plain::Pinned(_) => self.stats.rendered_bytes,
            Plain::Cached(_) => [&self.infrastructure, &self.levels, &self.categories, &self.teams]
                .iter()
                .map(|w| w.len())
                .sum(),
        };
        let shared: usize = self.shared.iter().map(|items| items.json.len()).sum();
        plain
            + self.stats.compressed_bytes
            + indexes
            + metas
            + shared
            + self.team_part.teams.json.len()
    }

    /// The bare `InfrastructureInfo` object.
    pub fn infrastructure(&self) -> &Arc<[u8]> {
        &self.infrastructure
    }

    pub fn levels(&self) -> &Arc<[u8]> {
        &self.levels
    }

    pub fn categories(&self) -> &Arc<[u8]> {
        &self.categories
    }

    /// The whole `/TechnicalDebt_Team` answer.
    pub fn teams(&self) -> &Arc<[u8]> {
        &self.teams
    }

    /// An answer rendered whole.
    pub fn whole(&self, answer: Whole) -> &Arc<[u8]> {
        match answer {
            Whole::LastAnalysisDate => &self.infrastructure,
            Whole::Levels => &self.levels,
            Whole::Categories => &self.categories,
            Whole::Teams => &self.teams,
        }
    }

    /// The gzip member of an answer rendered whole: [`Snapshot::whole`] compressed.
    pub fn whole_gzip(&self, answer: Whole) -> &Arc<[u8]> {
        let wholes = self.whole_gzip.get_or_init(|| {
            compress_wholes([&self.infrastructure, &self.levels, &self.categories, &self.teams])
        });
        &wholes[answer as usize]
    }

    /// One team's object, by `ExternalId` (letter case ignored).
    pub fn team(&self, external_id: &str) -> Option<&[u8]> {
        let position = *self.team_index.get(external_id.to_ascii_lowercase().as_str())?;
        let teams = &self.team_part.teams;
        let span = teams.spans.get(position)?;
        teams.json.get(span.start as usize..span.end as usize)
    }

    pub fn application_count(&self) -> usize {
        self.apps.len()
    }

    /// The applications at `positions` in serving order, each a whole JSON object. An older
    /// date's come through the shared cache; a piece that does not decompress to what it
    /// claims fails the whole answer rather than serve it wrong.
    pub fn applications(&self, positions: Range<usize>) -> Result<Vec<Arc<[u8]>>, Corrupt> {
        let end = positions.end.min(self.apps.len());
        (positions.start.min(end)..end).map(|position| self.application(position)).collect()
    }

    /// Each application in serving order, decompressed without going through the cache: for
    /// an export, which reads every one once and should not push out what requests use.
    pub fn each_application(
        &self,
        mut each: impl FnMut(&[u8]) -> Result<(), Corrupt>,
    ) -> Result<(), Corrupt> {
        for (position, app) in self.apps.iter().enumerate() {
            match &self.plain {
                Plain::Pinned(plain) => {
                    each(plain.get(position).map(|p| &**p).unwrap_or_default())?;
                }
                Plain::Cached(_) => each(&app.compressed.inflate()?)?,
            }
        }
        Ok(())
    }

    fn application(&self, position: usize) -> Result<Arc<[u8]>, Corrupt> {
        let app = self.apps.get(position).ok_or(Corrupt("no application at that position"))?;
        match &self.plain {
            Plain::Pinned(plain) => {
                plain.get(position).cloned().ok_or(Corrupt("no application at that position"))
            }
            Plain::Cached(cache) => cache.get(app),
        }
    }

    /// The applications at `positions` as deflate segments for a [`gzip::Member`], to be
    /// joined by commas: the runs of `RUN_APPS` the range covers whole, and each other
    /// application alone. Their plaintext joined by commas is that of
    /// [`Snapshot::applications`] joined by commas.
    pub fn application_segments(&self, positions: Range<usize>) -> Vec<Segment<'_>> {
        let end = positions.end.min(self.apps.len());
        let mut segments = Vec::with_capacity(positions.len().min(end) / RUN_APPS + RUN_APPS);
        let mut at = positions.start;
        while at < end {
            let run_end = (at / RUN_APPS + 1) * RUN_APPS;
            match self.runs.get(at / RUN_APPS) {
                Some(run) if at.is_multiple_of(RUN_APPS) && run_end.min(self.apps.len()) <= end => {
                    segments.push(run.compressed.segment());
                    at = run_end;
                }
                _ => {
                    segments.extend(self.apps.get(at).map(|app| app.compressed.segment()));
                    at += 1;
                }
            }
        }
        segments
    }

    /// The position of the application with this GUID (letter case ignored).
    pub fn application_position(&self, guid: &str) -> Option<usize> {
        self.app_index.get(guid.to_ascii_lowercase().as_str()).copied()
    }

    /// The (application position, module position) of the module with this GUID.
    pub fn module_position(&self, guid: &str) -> Option<(usize, usize)> {
        self.module_index.get(guid.to_ascii_lowercase().as_str()).copied()
    }

    /// The application at `app` holding only its module at `module`.
    pub fn application_with_module(
        &self,
        app: usize,
        module: usize,
    ) -> Result<Option<WithModule>, Corrupt> {
        let Some(piece) = self.apps.get(app) else { return Ok(None) };
        let Some(span) = piece.meta.modules.get(module) else { return Ok(None) };
        let plain = self.application(app)?;
        Ok(Some(WithModule {
            plain,
            head: 0..piece.meta.modules_at as usize,
            module: span.span.start as usize..span.span.end as usize,
        }))
    }

    /// The pieces, for the store (to share them with the next date it loads).
    pub(super) fn pieces(&self) -> impl Iterator<Item = &Arc<AppPiece>> {
        self.apps.iter()
    }

    pub(super) fn run_pieces(&self) -> impl Iterator<Item = &Arc<RunPiece>> {
        self.runs.iter()
    }

    pub(super) fn team_piece(&self) -> &Arc<TeamsPiece> {
        &self.team_part
    }
}

/// The gzip members of the whole answers, in [`Whole`]'s order.
fn compress_wholes<T: AsRef<[u8]>>(plain: [&T; 4]) -> [Arc<[u8]>; 4] {
    plain.map(|plain| Arc::from(gzip::compress(plain.as_ref(), gzip::LOAD_LEVEL)))
}

/// Each team's object, in serving order.
fn team_objects(teams: &Teams) -> impl Iterator<Item = &[u8]> {
    teams
        .spans
        .iter()
        .map(|span| teams.json.get(span.start as usize..span.end as usize).unwrap_or_default())
}

/// `{"InfrastructureInfo":{…},"<list>":[<items joined by commas>]}`.
fn envelope(infra: &[u8], list: &str, items: &[&[u8]]) -> Vec<u8> {
    let size: usize = items.iter().map(|item| item.len() + 1).sum();
    let mut body = Vec::with_capacity(size + infra.len() + 48);
    body.extend_from_slice(b"{\"InfrastructureInfo\":");
    body.extend_from_slice(infra);
    body.extend_from_slice(b",\"");
    body.extend_from_slice(list.as_bytes());
    body.extend_from_slice(b"\":[");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(item);
    }
    body.extend_from_slice(b"]}");
    body
}

/// The decompressed applications of older dates, by content, the least recently used
/// dropped first once they pass the configured budget. Shared by every older date, so an
/// application two dates have in common is decompressed once.
pub struct PlainCache {
    budget_bytes: usize,
    inner: Mutex<CacheInner>,
}

#[derive(Default)]
struct CacheInner {
    entries: HashMap<Digest, (Arc<[u8]>, u64)>,
    bytes: usize,
    tick: u64,
}

impl PlainCache {
    pub fn new(budget_bytes: usize) -> Self {
        Self { budget_bytes, inner: Mutex::new(CacheInner::default()) }
    }

    /// The plaintext of `app`, from the cache or decompressed now.
    pub fn get(&self, app: &AppPiece) -> Result<Arc<[u8]>, Corrupt> {
        {
            let mut inner = locks::lock(&self.inner);
            inner.tick += 1;
            let tick = inner.tick;
            if let Some((plain, used)) = inner.entries.get_mut(&app.hash) {
                *used = tick;
                return Ok(Arc::clone(plain));
            }
        }
        // Outside the lock: other requests keep being served while this one decompresses.
        let plain: Arc<[u8]> = app.compressed.inflate()?.into();
        let mut inner = locks::lock(&self.inner);
        inner.tick += 1;
        let tick = inner.tick;
        if inner.entries.insert(app.hash, (Arc::clone(&plain), tick)).is_none() {
            inner.bytes += plain.len();
        }
        if inner.bytes > self.budget_bytes {
            inner.shrink_to(self.budget_bytes / 4 * 3);
        }
        Ok(plain)
    }

    /// The bytes it holds now.
    pub fn bytes(&self) -> usize {
        locks::lock(&self.inner).bytes
    }
}

impl CacheInner {
    /// Drops the least recently used entries until at most `target` bytes are held: in one
    /// sort for a quarter of the budget, not one scan per entry.
    fn shrink_to(&mut self, target: usize) {
        let mut by_age: Vec<(u64, Digest, usize)> =
            self.entries.iter().map(|(hash, (plain, used))| (*used, *hash, plain.len())).collect();
        by_age.sort_unstable();
        for (_, hash, len) in by_age {
            if self.bytes <= target {
                break;
            }
            self.entries.remove(&hash);
            self.bytes -= len;
        }
    }
}
