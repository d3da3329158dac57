//! The served form of a snapshot: the API's JSON, rendered once at load, plus the indexes that
//! find a piece of it.
//!
//! Answers are assembled, never serialized per request. The Level, Category, Team and
//! LastAnalysisDate answers are whole bodies behind an `Arc`, shared by every response. The
//! applications are rendered back to back in serving order into one buffer, each with the
//! offsets of its modules, so a page is the concatenation of up to 200 slices, and "the parent
//! application with just this module" is a head, a module and a tail. The parsed file is
//! dropped after rendering: what stays in memory is close to the size of the JSON it serves.
//!
//! Serving order, documented in docs/snapshot-format.md: applications, modules and teams by
//! `Name` (letter case ignored, then exact), then by identifier; findings in the order of their
//! patterns in `Categories`; a team's applications in application order. Levels and
//! categories keep the file's order, which is meaningful (Low before High).
//!
//! Each piece also has its gzip form, made here once (see [`crate::gzip`]): the whole answers
//! as gzip members, each application object as a deflate segment compressed alone, and each
//! run of `RUN_APPS` applications as one segment, so a compressed page is the same
//! concatenation over the segments. A segment depends only on the bytes it compresses, so a
//! store that keeps pieces by content (issue 12) can keep each application's segment beside
//! it, and a run's under the hashes of its ten members, and reuse them across dates; a day on
//! which 1% of the applications change recompresses those and their runs.

use std::collections::HashMap;
use std::io::Write;
use std::ops::Range;
use std::sync::Arc;
use std::time::SystemTime;

use super::Date;
use super::file::{Application, Finding, Named, SnapshotFile};
use crate::gzip::{self, Segment, Segments};

/// Sizes, for the admin port's listing and the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub applications: usize,
    pub modules: usize,
    /// `PatternFinding` entries, application and module level together.
    pub findings: usize,
    /// The size of the file it was loaded from.
    pub file_bytes: usize,
    /// The size of the rendered JSON it holds in memory.
    pub rendered_bytes: usize,
    /// The size of its compressed forms in memory (gzip members and deflate segments).
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
    /// SHA-256 of the file's bytes, so a pull can tell it would change nothing.
    file_sha256: [u8; 32],
    /// `{"ActivationCode":…,"LastAnalyzedOn":…}`: the LastAnalysisDate answer, and the value of
    /// `InfrastructureInfo` in every other one.
    infrastructure: Arc<[u8]>,
    levels: Arc<[u8]>,
    categories: Arc<[u8]>,
    teams: Arc<[u8]>,
    /// Each team's object, back to back, for the `Team` filter.
    team_json: Box<[u8]>,
    team_spans: Box<[Range<usize>]>,
    /// Lower-case `ExternalId` → team position.
    team_index: HashMap<Box<str>, usize>,
    /// Each application's object, back to back, in serving order.
    app_json: Box<[u8]>,
    apps: Box<[AppSpan]>,
    /// Every module's object inside `app_json`; an application's are contiguous.
    module_spans: Box<[Range<usize>]>,
    /// Lower-case GUID → application position.
    app_index: HashMap<Box<str>, usize>,
    /// Lower-case GUID → (application position, module position within it).
    module_index: HashMap<Box<str>, (usize, usize)>,
    /// The gzip member of each [`Whole`] answer, by its discriminant.
    whole_gzip: [Arc<[u8]>; 4],
    /// Each application object compressed alone, in serving order.
    app_gzip: Segments,
    /// Runs of `RUN_APPS` application objects with their commas, compressed together: a
    /// page that covers a run uses it instead of its applications one by one.
    run_gzip: Segments,
}

/// Applications per compressed run. Compressed alone, an application of a few KiB shrinks
/// 3-4x (the sample's: 27,664 bytes -> 7,169 for its 12); in runs of ten the repeated GUIDs
/// and keys of its neighbours are in the window too. Ten divides the page sizes clients use
/// (10, 20, 50, 100, 200), so a client walking pages from offset 0 only ever gets runs.
pub const RUN_APPS: usize = 10;

struct AppSpan {
    /// The whole object in `app_json`.
    json: Range<usize>,
    /// Just past `"Modules":[`: the head of an answer that keeps only some modules.
    modules_at: usize,
    /// Its modules, in `module_spans`.
    modules: Range<usize>,
}

/// What closes an application object after its module list.
const APP_TAIL: &[u8] = b"]}";

impl Snapshot {
    pub fn date(&self) -> Date {
        self.date
    }

    pub fn analyzed_on(&self) -> SystemTime {
        self.analyzed_on
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// SHA-256 of the bytes it was loaded from (those of its file in the folder).
    pub fn file_sha256(&self) -> &[u8; 32] {
        &self.file_sha256
    }

    pub(super) fn set_file_sha256(&mut self, digest: [u8; 32]) {
        self.file_sha256 = digest;
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
        &self.whole_gzip[answer as usize]
    }

    /// One team's object, by `ExternalId` (letter case ignored).
    pub fn team(&self, external_id: &str) -> Option<&[u8]> {
        let position = *self.team_index.get(external_id.to_ascii_lowercase().as_str())?;
        self.team_json.get(self.team_spans.get(position)?.clone())
    }

    pub fn application_count(&self) -> usize {
        self.apps.len()
    }

    /// The applications at `positions` in serving order, each a whole JSON object.
    pub fn applications(&self, positions: Range<usize>) -> impl Iterator<Item = &[u8]> {
        let spans = self.apps.get(positions).unwrap_or_default();
        spans.iter().map(|span| self.app_json.get(span.json.clone()).unwrap_or_default())
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
            let run = self.run_gzip.get(at / RUN_APPS);
            match run {
                Some(run) if at.is_multiple_of(RUN_APPS) && run_end.min(self.apps.len()) <= end => {
                    segments.push(run);
                    at = run_end;
                }
                _ => {
                    segments.extend(self.app_gzip.get(at));
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

    /// The application at `app` holding only its module at `module`, as three slices to write
    /// one after the other.
    pub fn application_with_module(&self, app: usize, module: usize) -> Option<[&[u8]; 3]> {
        let span = self.apps.get(app)?;
        let head = self.app_json.get(span.json.start..span.modules_at)?;
        let module = self.module_spans.get(span.modules.start + module)?;
        Some([head, self.app_json.get(module.clone())?, APP_TAIL])
    }
}

/// Renders a checked snapshot.
pub fn render(
    file: &SnapshotFile<'_>,
    date: Date,
    analyzed_on: SystemTime,
    activation_code: &str,
    file_bytes: usize,
) -> Snapshot {
    let mut infrastructure = Vec::with_capacity(128);
    infrastructure.extend_from_slice(b"{\"ActivationCode\":");
    string(&mut infrastructure, activation_code);
    let stamp = humantime::format_rfc3339_millis(analyzed_on).to_string();
    infrastructure.extend_from_slice(b",\"LastAnalyzedOn\":");
    string(&mut infrastructure, &stamp);
    infrastructure.push(b'}');

    let refs = Refs::new(file);
    let order = serving_order(&file.applications);
    let apps = render_applications(file, &order, &refs);
    let (teams, team_json, team_spans, team_index) = render_teams(file, &order, &infrastructure);
    let levels = render_levels(file, &infrastructure);
    let categories = render_categories(file, &infrastructure);

    let modules = apps.module_spans.len();
    let findings = file
        .applications
        .iter()
        .map(|a| a.findings.len() + a.modules.iter().map(|m| m.findings.len()).sum::<usize>())
        .sum();
    let rendered_bytes = infrastructure.len()
        + levels.len()
        + categories.len()
        + teams.len()
        + team_json.len()
        + apps.json.len();
    let whole_gzip: [Arc<[u8]>; 4] = [&infrastructure, &levels, &categories, &teams]
        .map(|plain| Arc::from(gzip::compress(plain, gzip::LOAD_LEVEL)));
    let (app_gzip, run_gzip) = compress_applications(&apps);
    let compressed_bytes = whole_gzip.iter().map(|member| member.len()).sum::<usize>()
        + app_gzip.memory_bytes()
        + run_gzip.memory_bytes();
    let stats = Stats {
        applications: order.len(),
        modules,
        findings,
        file_bytes,
        rendered_bytes,
        compressed_bytes,
    };
    Snapshot {
        date,
        analyzed_on,
        stats,
        file_sha256: [0; 32],
        infrastructure: infrastructure.into(),
        levels: levels.into(),
        categories: categories.into(),
        teams: teams.into(),
        team_json: team_json.into(),
        team_spans: team_spans.into(),
        team_index,
        app_json: apps.json.into(),
        apps: apps.spans.into(),
        module_spans: apps.module_spans.into(),
        app_index: apps.app_index,
        module_index: apps.module_index,
        whole_gzip,
        app_gzip,
        run_gzip,
    }
}

/// Each application compressed alone, and each run of `RUN_APPS` from a multiple of it (the
/// last one possibly shorter), joined by commas as a page joins them.
fn compress_applications(apps: &RenderedApps) -> (Segments, Segments) {
    let slices: Vec<&[u8]> =
        apps.spans.iter().filter_map(|span| apps.json.get(span.json.clone())).collect();
    let singles: Vec<Vec<&[u8]>> = slices.iter().map(|&app| vec![app]).collect();
    let runs: Vec<Vec<&[u8]>> = slices
        .chunks(RUN_APPS)
        .map(|run| {
            let mut parts = Vec::with_capacity(2 * run.len());
            for (i, &app) in run.iter().enumerate() {
                if i > 0 {
                    parts.push(b",".as_slice());
                }
                parts.push(app);
            }
            parts
        })
        .collect();
    // Compressing is most of the load's time; the pieces are independent, so every core takes
    // a share of a large snapshot (the load runs at start or on the admin port, never on a
    // request). A small one is not worth a thread.
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let threads = (apps.json.len() >> 22).clamp(1, cores);
    let singles = Segments::of(&singles, gzip::LOAD_LEVEL, threads);
    let runs = Segments::of(&runs, gzip::LOAD_LEVEL, threads);
    (singles, runs)
}

/// The JSON fragments every application repeats, escaped once instead of per use.
struct Refs {
    /// `"LevelGUID":"…"` per level.
    levels: Vec<Vec<u8>>,
    /// `{"CategoryGUID":"…","PatternGUID":"…","Count":` per (category, pattern).
    findings: Vec<Vec<Vec<u8>>>,
}

impl Refs {
    fn new(file: &SnapshotFile<'_>) -> Self {
        let levels = file
            .levels
            .iter()
            .map(|level| {
                let mut out = b"\"LevelGUID\":".to_vec();
                string(&mut out, &level.guid);
                out
            })
            .collect();
        let findings = file
            .categories
            .iter()
            .map(|category| {
                category
                    .patterns
                    .iter()
                    .map(|pattern| {
                        let mut out = b"{\"CategoryGUID\":".to_vec();
                        string(&mut out, &category.guid);
                        out.extend_from_slice(b",\"PatternGUID\":");
                        string(&mut out, &pattern.guid);
                        out.extend_from_slice(b",\"Count\":");
                        out
                    })
                    .collect()
            })
            .collect();
        Self { levels, findings }
    }

    fn level(&self, level: u32) -> &[u8] {
        self.levels.get(level as usize).map_or(&[], Vec::as_slice)
    }

    fn finding(&self, (category, pattern): (u32, u32)) -> &[u8] {
        self.findings
            .get(category as usize)
            .and_then(|patterns| patterns.get(pattern as usize))
            .map_or(&[], Vec::as_slice)
    }
}

/// Indexes into `apps`, in serving order.
fn serving_order(apps: &[Application<'_>]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..apps.len()).collect();
    order.sort_by_cached_key(|&i| name_key(&apps[i].name, &apps[i].guid));
    order
}

/// Sorts by name ignoring case, then by exact name, then by identifier (unique ignoring ASCII
/// case, so the order is total).
fn name_key<'s>(name: &'s str, id: &str) -> (String, &'s str, String) {
    (name.to_lowercase(), name, id.to_ascii_lowercase())
}

struct RenderedApps {
    json: Vec<u8>,
    spans: Vec<AppSpan>,
    module_spans: Vec<Range<usize>>,
    app_index: HashMap<Box<str>, usize>,
    module_index: HashMap<Box<str>, (usize, usize)>,
}

fn render_applications(file: &SnapshotFile<'_>, order: &[usize], refs: &Refs) -> RenderedApps {
    let apps = &file.applications;
    let module_count = apps.iter().map(|a| a.modules.len()).sum();
    let mut out = RenderedApps {
        json: Vec::with_capacity(estimate(apps)),
        spans: Vec::with_capacity(order.len()),
        module_spans: Vec::with_capacity(module_count),
        app_index: HashMap::with_capacity(order.len()),
        module_index: HashMap::with_capacity(module_count),
    };
    for (position, &i) in order.iter().enumerate() {
        let app = &apps[i];
        let start = out.json.len();
        let json = &mut out.json;
        graded(json, &app.guid, &app.name, app.level, &app.findings, refs);
        json.extend_from_slice(b",\"Modules\":[");
        let modules_at = json.len();

        let mut modules: Vec<usize> = (0..app.modules.len()).collect();
        modules.sort_by_cached_key(|&m| name_key(&app.modules[m].name, &app.modules[m].guid));
        let first_module = out.module_spans.len();
        for (m_position, &m) in modules.iter().enumerate() {
            let module = &app.modules[m];
            let json = &mut out.json;
            if m_position > 0 {
                json.push(b',');
            }
            let module_start = json.len();
            graded(json, &module.guid, &module.name, module.level, &module.findings, refs);
            json.push(b'}');
            out.module_spans.push(module_start..json.len());
            out.module_index.insert(lower(&module.guid), (position, m_position));
        }
        out.json.extend_from_slice(APP_TAIL);
        out.spans.push(AppSpan {
            json: start..out.json.len(),
            modules_at,
            modules: first_module..out.module_spans.len(),
        });
        out.app_index.insert(lower(&app.guid), position);
    }
    out
}

/// A guess at the rendered size, to allocate the buffer once.
fn estimate(apps: &[Application<'_>]) -> usize {
    const PER_FINDING: usize = 110;
    const PER_ENTITY: usize = 160;
    apps.iter()
        .map(|a| {
            let findings: usize =
                a.findings.len() + a.modules.iter().map(|m| m.findings.len()).sum::<usize>();
            (1 + a.modules.len()) * PER_ENTITY + findings * PER_FINDING
        })
        .sum()
}

/// A `Findings` array in pattern order.
fn findings(out: &mut Vec<u8>, findings: &[Finding<'_>], refs: &Refs) {
    let mut order: Vec<&Finding<'_>> = findings.iter().collect();
    // Patterns are unique within a list (checked), so the order is total.
    order.sort_unstable_by_key(|f| f.pattern);
    out.push(b'[');
    for (i, finding) in order.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(refs.finding(finding.pattern));
        // Writing into a Vec cannot fail.
        let _ = write!(out, "{}}}", finding.count);
    }
    out.push(b']');
}

type RenderedTeams = (Vec<u8>, Vec<u8>, Vec<Range<usize>>, HashMap<Box<str>, usize>);

/// The whole Team answer, and each team's object for the filter.
fn render_teams(file: &SnapshotFile<'_>, app_order: &[usize], infra: &[u8]) -> RenderedTeams {
    let mut position_of = vec![0usize; app_order.len()];
    for (position, &i) in app_order.iter().enumerate() {
        position_of[i] = position;
    }
    let teams = &file.teams;
    let mut order: Vec<usize> = (0..teams.len()).collect();
    order.sort_by_cached_key(|&t| name_key(&teams[t].name, &teams[t].external_id));

    let mut json = Vec::new();
    let mut spans = Vec::with_capacity(order.len());
    let mut index = HashMap::with_capacity(order.len());
    for (position, &t) in order.iter().enumerate() {
        let team = &teams[t];
        let start = json.len();
        json.extend_from_slice(b"{\"ExternalId\":");
        string(&mut json, &team.external_id);
        json.extend_from_slice(b",\"Name\":");
        string(&mut json, &team.name);
        json.extend_from_slice(b",\"Applications\":[");
        let mut members: Vec<usize> =
            team.applications.iter().map(|m| position_of[m.app as usize]).collect();
        members.sort_unstable();
        for (i, &position) in members.iter().enumerate() {
            if i > 0 {
                json.push(b',');
            }
            let guid = app_order.get(position).map_or("", |&a| &*file.applications[a].guid);
            json.extend_from_slice(b"{\"GUID\":");
            string(&mut json, guid);
            json.push(b'}');
        }
        json.extend_from_slice(b"]}");
        spans.push(start..json.len());
        index.insert(lower(&team.external_id), position);
    }
    let mut body = envelope(infra, "Teams", json.len() + order.len());
    for (i, span) in spans.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&json[span.clone()]);
    }
    body.extend_from_slice(b"]}");
    (body, json, spans, index)
}

fn render_levels(file: &SnapshotFile<'_>, infra: &[u8]) -> Vec<u8> {
    let mut body = envelope(infra, "Levels", 128 * file.levels.len());
    named_items(&mut body, &file.levels);
    body.extend_from_slice(b"]}");
    body
}

/// `{"GUID":…,"Name":…},…`: the items of a level or pattern list.
fn named_items(body: &mut Vec<u8>, items: &[Named<'_>]) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        named(body, &item.guid, &item.name);
        body.push(b'}');
    }
}

fn render_categories(file: &SnapshotFile<'_>, infra: &[u8]) -> Vec<u8> {
    let mut body = envelope(infra, "Categories", 1024 * file.categories.len());
    for (i, category) in file.categories.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        named(&mut body, &category.guid, &category.name);
        body.extend_from_slice(b",\"Patterns\":[");
        named_items(&mut body, &category.patterns);
        body.extend_from_slice(b"]}");
    }
    body.extend_from_slice(b"]}");
    body
}

/// `{"InfrastructureInfo":{…},"<list>":[`, to be closed with `]}`.
fn envelope(infra: &[u8], list: &str, capacity: usize) -> Vec<u8> {
    let mut body = Vec::with_capacity(capacity + infra.len() + 48);
    body.extend_from_slice(b"{\"InfrastructureInfo\":");
    body.extend_from_slice(infra);
    body.extend_from_slice(b",\"");
    body.extend_from_slice(list.as_bytes());
    body.extend_from_slice(b"\":[");
    body
}

/// `{"GUID":…,"Name":…`, left open.
/// `{"GUID":…,"Name":…,"LevelGUID":…,"Findings":[…]`, unclosed: the part an application and
/// a module share.
fn graded(
    out: &mut Vec<u8>,
    guid: &str,
    name: &str,
    level: u32,
    found: &[Finding<'_>],
    refs: &Refs,
) {
    named(out, guid, name);
    out.push(b',');
    out.extend_from_slice(refs.level(level));
    out.extend_from_slice(b",\"Findings\":");
    findings(out, found, refs);
}

fn named(out: &mut Vec<u8>, guid: &str, name: &str) {
    out.extend_from_slice(b"{\"GUID\":");
    string(out, guid);
    out.extend_from_slice(b",\"Name\":");
    string(out, name);
}

/// A JSON string, escaped as RFC 8259 §7 requires.
fn string(out: &mut Vec<u8>, text: &str) {
    // Serializing a str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, text);
}

fn lower(id: &str) -> Box<str> {
    id.to_ascii_lowercase().into_boxed_str()
}
