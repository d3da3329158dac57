//! Rendering: a checked snapshot file turned into the API's JSON, once, at import.
//!
//! Answers are assembled, never serialized per request. Each application is rendered alone
//! into its own JSON object, with the offsets of its modules, so a page is the concatenation
//! of up to 200 objects and "the parent application with just this module" is a head, a module
//! and a tail; the history store keeps each object by the SHA-256 of its bytes, so an
//! application that did not change from one day to the next is stored once (see
//! [`super::history`]). The levels, categories and teams are rendered as the items of their
//! lists, without the `InfrastructureInfo` envelope, which carries the configured activation
//! code and is added when a date is served ([`super::served`]).
//!
//! Serving order, documented in docs/snapshot-format.md: applications, modules and teams by
//! `Name` (letter case ignored, then exact), then by identifier; findings in the order of their
//! patterns in `Categories`; a team's applications in application order. Levels and
//! categories keep the file's order, which is meaningful (Low before High).

use std::io::Write;
use std::ops::Range;
use std::sync::Arc;
use std::time::SystemTime;

use super::file::{Application, Finding, Named, SnapshotFile};

/// One application rendered: its JSON object, and what the indexes need to know of it.
pub struct RenderedApp {
    /// The SHA-256 of `plain`: the application's key in the store.
    pub key: [u8; 32],
    /// Exactly its bytes: a whole snapshot's applications are held at once, so no spare
    /// capacity is.
    pub plain: Arc<[u8]>,
    pub meta: AppMeta,
}

/// Turns an application's freshly rendered JSON into its key and the bytes to keep: the
/// caller hashes it, and may hand back bytes it already holds under that key instead (the
/// newest date's, for an import), so that an unchanged application is not held twice.
pub type Keep<'a> = &'a mut dyn FnMut(Vec<u8>) -> ([u8; 32], Arc<[u8]>);

/// What serving needs to know of an application besides its bytes: where its module list
/// starts, where each module is, and the identifiers the filters look up (lower-case).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppMeta {
    pub guid: Box<str>,
    /// Just past `"Modules":[`: the head of an answer that keeps only some modules.
    pub modules_at: u32,
    pub modules: Box<[ModuleMeta]>,
    /// `PatternFinding` entries, the application's and its modules'.
    pub findings: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleMeta {
    /// The module's object within the application's.
    pub span: Range<u32>,
    pub guid: Box<str>,
}

/// The teams rendered: each team's object back to back, and its lower-case `ExternalId`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Teams {
    pub json: Box<[u8]>,
    pub spans: Box<[Range<u32>]>,
    pub ids: Box<[Box<str>]>,
}

/// A snapshot file rendered, before it is stored or served.
pub struct Rendered {
    pub analyzed_on: SystemTime,
    /// The size of the file it was rendered from.
    pub file_bytes: usize,
    /// The items of the `Levels` list, `{…},{…}`, without the brackets.
    pub levels: Box<[u8]>,
    /// The items of the `Categories` list.
    pub categories: Box<[u8]>,
    pub teams: Teams,
    /// In serving order.
    pub apps: Vec<RenderedApp>,
}

/// What closes an application object after its module list.
pub const APP_TAIL: &[u8] = b"]}";

/// Renders a checked snapshot. It is consumed: each application's parsed form is dropped as
/// soon as it is rendered, so the two are not both held whole at an import's peak.
pub fn render(
    mut file: SnapshotFile<'_>,
    analyzed_on: SystemTime,
    file_bytes: usize,
    keep: Keep<'_>,
) -> Rendered {
    let refs = Refs::new(&file);
    let order = serving_order(&file.applications);
    let teams = render_teams(&file, &order);
    let mut levels = Vec::with_capacity(128 * file.levels.len());
    named_items(&mut levels, &file.levels);
    let categories = render_categories(&file).into();
    let apps = render_applications(std::mem::take(&mut file.applications), &order, &refs, keep);
    Rendered { analyzed_on, file_bytes, levels: levels.into(), categories, teams, apps }
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

fn render_applications(
    apps: Vec<Application<'_>>,
    order: &[usize],
    refs: &Refs,
    keep: Keep<'_>,
) -> Vec<RenderedApp> {
    let mut apps: Vec<Option<Application<'_>>> = apps.into_iter().map(Some).collect();
    // `order` is a permutation of the indexes, so each is taken once.
    order
        .iter()
        .filter_map(|&i| apps[i].take())
        .map(|app| render_application(&app, refs, &mut *keep))
        .collect()
}

fn render_application(app: &Application<'_>, refs: &Refs, keep: Keep<'_>) -> RenderedApp {
    let mut json = Vec::with_capacity(estimate(app));
    graded(&mut json, &app.guid, &app.name, app.level, &app.findings, refs);
    json.extend_from_slice(b",\"Modules\":[");
    let modules_at = offset(&json);
    let mut order: Vec<usize> = (0..app.modules.len()).collect();
    order.sort_by_cached_key(|&m| name_key(&app.modules[m].name, &app.modules[m].guid));
    let mut modules = Vec::with_capacity(order.len());
    for (position, &m) in order.iter().enumerate() {
        let module = &app.modules[m];
        if position > 0 {
            json.push(b',');
        }
        let start = offset(&json);
        graded(&mut json, &module.guid, &module.name, module.level, &module.findings, refs);
        json.push(b'}');
        modules.push(ModuleMeta { span: start..offset(&json), guid: lower(&module.guid) });
    }
    json.extend_from_slice(APP_TAIL);
    let findings = app.findings.len() + app.modules.iter().map(|m| m.findings.len()).sum::<usize>();
    let meta = AppMeta {
        guid: lower(&app.guid),
        modules_at,
        modules: modules.into(),
        findings: u32::try_from(findings).unwrap_or(u32::MAX),
    };
    // The buffer, with its spare room, goes now rather than after every application is
    // rendered: into an allocation of the exact size, or for bytes already held.
    let (key, plain) = keep(json);
    RenderedApp { key, plain, meta }
}

/// An offset within one application's object. The format caps nothing, but an application
/// of 4 GiB is no application; the cap is the file size a server can be sent.
fn offset(json: &[u8]) -> u32 {
    u32::try_from(json.len()).unwrap_or(u32::MAX)
}

/// A guess at an application's rendered size, on the high side so that the buffer is
/// allocated once: a guess a little low would double it.
fn estimate(app: &Application<'_>) -> usize {
    // `{"CategoryGUID":"<36>","PatternGUID":"<36>","Count":N},` is 116 to 126 bytes.
    const PER_FINDING: usize = 128;
    const PER_ENTITY: usize = 160;
    let findings = app.findings.len() + app.modules.iter().map(|m| m.findings.len()).sum::<usize>();
    (1 + app.modules.len()) * PER_ENTITY + findings * PER_FINDING
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

/// Each team's object, for the whole Team answer and for the filter.
fn render_teams(file: &SnapshotFile<'_>, app_order: &[usize]) -> Teams {
    let mut position_of = vec![0usize; app_order.len()];
    for (position, &i) in app_order.iter().enumerate() {
        position_of[i] = position;
    }
    let teams = &file.teams;
    let mut order: Vec<usize> = (0..teams.len()).collect();
    order.sort_by_cached_key(|&t| name_key(&teams[t].name, &teams[t].external_id));

    let mut json = Vec::new();
    let mut spans = Vec::with_capacity(order.len());
    let mut ids = Vec::with_capacity(order.len());
    for &t in &order {
        let team = &teams[t];
        let start = offset(&json);
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
        spans.push(start..offset(&json));
        ids.push(lower(&team.external_id));
    }
    Teams { json: json.into(), spans: spans.into(), ids: ids.into() }
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

/// The items of the `Categories` list, each with its patterns.
fn render_categories(file: &SnapshotFile<'_>) -> Vec<u8> {
    let mut body = Vec::with_capacity(1024 * file.categories.len());
    for (i, category) in file.categories.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        named(&mut body, &category.guid, &category.name);
        body.extend_from_slice(b",\"Patterns\":[");
        named_items(&mut body, &category.patterns);
        body.extend_from_slice(b"]}");
    }
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
pub(super) fn string(out: &mut Vec<u8>, text: &str) {
    // Serializing a str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, text);
}

fn lower(id: &str) -> Box<str> {
    id.to_ascii_lowercase().into_boxed_str()
}
