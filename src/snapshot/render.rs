//! Rendering: a checked snapshot file turned into the API's JSON, once, at import.
//!
//! Answers are assembled, never serialized per request. Each application is rendered alone
//! into its own JSON object, with the offsets of its modules, so a page is the concatenation
//! of up to 200 objects and "the parent application with just this module" is a head, a module
//! and a tail; the history store keeps each object by the SHA-256 of its bytes, so an
//! application that did not change from one day to the next is stored once (see
//! [`super::history`]). The levels, categories and teams are rendered as the items of their
//! lists, without the `InfrastructureInfo` envelope, which carries the configured activation
//! code and is added when a date is served ([`super::serve`]).
//!
//! Serving order, documented in docs/snapshot-format.md: applications, modules and teams by
//! `Name` (letter case ignored, then exact), then by identifier; findings in the order of their
//! patterns in `Categories`; a team's applications in application order. Levels and
//! categories keep the file's order, which is meaningful (Low before High).

use std::fmt;
use std::io::Write;
use std::sync::Arc;
use std::time::SystemTime;

use super::format::strict::{Application, Document, Finding, Named};
use super::piece::{AppMeta, Digest, ModuleMeta, Teams};

/// One application rendered: its JSON object, and what the indexes need to know of it.
pub struct RenderedApp {
    /// The SHA-256 of `plain`: the application's key in the store.
    pub key: Digest,
    /// Exactly its bytes: a whole snapshot's applications are held at once, so no spare
    /// capacity is.
    pub plain: Arc<[u8]>,
    pub meta: AppMeta,
}

/// Turns an application's freshly rendered JSON into its key and the bytes to keep: the
/// caller hashes it, and may hand back bytes it already holds under that key instead (the
/// newest date's, for an import), so that an unchanged application is not held twice.
pub type Keep<'a> = &'a mut dyn FnMut(Vec<u8>) -> (Digest, Arc<[u8]>);

/// A snapshot file rendered, before it is stored or served.
pub struct Rendered {
    pub analyzed_on: SystemTime,
    /// The size of the file it was rendered from.
    pub file_bytes: u64,
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

/// Why a checked document could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenderError {
    /// One object would be 4 GiB or more: its offsets do not fit the index (a body limit
    /// raised that far lets such a file through).
    TooLarge(&'static str),
    /// A reference the check resolved points nowhere: a bug, never the file's fault.
    Unresolved(&'static str),
}

impl fmt::Display for RenderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge(what) => write!(f, "{what} is 4 GiB or more once rendered"),
            Self::Unresolved(what) => {
                write!(f, "a checked snapshot has an unresolved {what} (a bug: please report it)")
            }
        }
    }
}

impl std::error::Error for RenderError {}

/// Renders a checked snapshot. It is consumed: each application's parsed form is dropped as
/// soon as it is rendered, so the two are not both held whole at an import's peak.
pub fn render(
    mut file: Document,
    analyzed_on: SystemTime,
    file_bytes: u64,
    keep: Keep<'_>,
) -> Result<Rendered, RenderError> {
    let refs = Refs::new(&file);
    let order = serving_order(&file.applications);
    let teams = render_teams(&file, &order)?;
    let mut levels = Vec::with_capacity(128 * file.levels.len());
    named_items(&mut levels, &file.levels);
    let categories = render_categories(&file).into();
    let apps = render_applications(std::mem::take(&mut file.applications), &order, &refs, keep)?;
    Ok(Rendered { analyzed_on, file_bytes, levels: levels.into(), categories, teams, apps })
}

/// The JSON fragments every application repeats, escaped once instead of per use.
struct Refs {
    /// `"LevelGUID":"…"` per level.
    levels: Vec<Vec<u8>>,
    /// `{"CategoryGUID":"…","PatternGUID":"…","Count":` per (category, pattern).
    findings: Vec<Vec<Vec<u8>>>,
}

impl Refs {
    fn new(file: &Document) -> Self {
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

    fn level(&self, level: u32) -> Result<&[u8], RenderError> {
        let fragment = self.levels.get(level as usize);
        fragment.map(Vec::as_slice).ok_or(RenderError::Unresolved("LevelGUID"))
    }

    fn finding(&self, (category, pattern): (u32, u32)) -> Result<&[u8], RenderError> {
        self.findings
            .get(category as usize)
            .and_then(|patterns| patterns.get(pattern as usize))
            .map(Vec::as_slice)
            .ok_or(RenderError::Unresolved("PatternGUID"))
    }
}

/// Indexes into `apps`, in serving order.
fn serving_order(apps: &[Application]) -> Vec<usize> {
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
    apps: Vec<Application>,
    order: &[usize],
    refs: &Refs,
    keep: Keep<'_>,
) -> Result<Vec<RenderedApp>, RenderError> {
    let mut apps: Vec<Option<Application>> = apps.into_iter().map(Some).collect();
    // `order` is a permutation of the indexes, so each is taken once.
    order
        .iter()
        .filter_map(|&i| apps[i].take())
        .map(|app| render_application(&app, refs, &mut *keep))
        .collect()
}

fn render_application(
    app: &Application,
    refs: &Refs,
    keep: Keep<'_>,
) -> Result<RenderedApp, RenderError> {
    let mut json = Vec::with_capacity(estimate(app));
    graded(&mut json, &app.guid, &app.name, app.level, &app.findings, refs)?;
    json.extend_from_slice(b",\"Modules\":[");
    let modules_at = offset(&json)?;
    let mut order: Vec<usize> = (0..app.modules.len()).collect();
    order.sort_by_cached_key(|&m| name_key(&app.modules[m].name, &app.modules[m].guid));
    let mut modules = Vec::with_capacity(order.len());
    for (position, &m) in order.iter().enumerate() {
        let module = &app.modules[m];
        if position > 0 {
            json.push(b',');
        }
        let start = offset(&json)?;
        graded(&mut json, &module.guid, &module.name, module.level, &module.findings, refs)?;
        json.push(b'}');
        modules.push(ModuleMeta { span: start..offset(&json)?, guid: lower(&module.guid) });
    }
    json.extend_from_slice(APP_TAIL);
    offset(&json)?;
    let findings = app.findings.len() + app.modules.iter().map(|m| m.findings.len()).sum::<usize>();
    let meta = AppMeta {
        guid: lower(&app.guid),
        modules_at,
        modules: modules.into(),
        findings: u32::try_from(findings).map_err(|_| RenderError::TooLarge("an application"))?,
    };
    // The buffer, with its spare room, goes now rather than after every application is
    // rendered: into an allocation of the exact size, or for bytes already held.
    let (key, plain) = keep(json);
    Ok(RenderedApp { key, plain, meta })
}

/// An offset within one application's object, or the teams' list: the index keeps them in 32
/// bits, and a larger object is refused rather than indexed wrong.
fn offset(json: &[u8]) -> Result<u32, RenderError> {
    u32::try_from(json.len()).map_err(|_| RenderError::TooLarge("an application or the teams"))
}

/// A guess at an application's rendered size, on the high side so that the buffer is
/// allocated once: a guess a little low would double it.
fn estimate(app: &Application) -> usize {
    // `{"CategoryGUID":"<36>","PatternGUID":"<36>","Count":N},` is 116 to 126 bytes.
    const PER_FINDING: usize = 128;
    const PER_ENTITY: usize = 160;
    let findings = app.findings.len() + app.modules.iter().map(|m| m.findings.len()).sum::<usize>();
    (1 + app.modules.len()) * PER_ENTITY + findings * PER_FINDING
}

/// A `Findings` array in pattern order.
fn findings(out: &mut Vec<u8>, findings: &[Finding], refs: &Refs) -> Result<(), RenderError> {
    let mut order: Vec<&Finding> = findings.iter().collect();
    // Patterns are unique within a list (checked), so the order is total.
    order.sort_unstable_by_key(|f| f.pattern);
    out.push(b'[');
    for (i, finding) in order.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(refs.finding(finding.pattern)?);
        // Writing into a Vec cannot fail.
        let _ = write!(out, "{}}}", finding.count);
    }
    out.push(b']');
    Ok(())
}

/// Each team's object, for the whole Team answer and for the filter.
fn render_teams(file: &Document, app_order: &[usize]) -> Result<Teams, RenderError> {
    let unresolved = RenderError::Unresolved("team application");
    // `app_order` is a permutation of the applications' indexes: each gets its position.
    let mut position_of = vec![0usize; app_order.len()];
    for (position, &i) in app_order.iter().enumerate() {
        *position_of.get_mut(i).ok_or(unresolved.clone())? = position;
    }
    let teams = &file.teams;
    let mut order: Vec<usize> = (0..teams.len()).collect();
    order.sort_by_cached_key(|&t| name_key(&teams[t].name, &teams[t].external_id));

    let mut json = Vec::new();
    let mut spans = Vec::with_capacity(order.len());
    let mut ids = Vec::with_capacity(order.len());
    for &t in &order {
        let team = &teams[t];
        let start = offset(&json)?;
        json.extend_from_slice(b"{\"ExternalId\":");
        string(&mut json, &team.external_id);
        json.extend_from_slice(b",\"Name\":");
        string(&mut json, &team.name);
        json.extend_from_slice(b",\"Applications\":[");
        let mut members = team
            .applications
            .iter()
            .map(|m| position_of.get(m.app as usize).copied().ok_or(unresolved.clone()))
            .collect::<Result<Vec<usize>, _>>()?;
        members.sort_unstable();
        for (i, &position) in members.iter().enumerate() {
            if i > 0 {
                json.push(b',');
            }
            let app = app_order.get(position).and_then(|&a| file.applications.get(a));
            json.extend_from_slice(b"{\"GUID\":");
            string(&mut json, &app.ok_or(unresolved.clone())?.guid);
            json.push(b'}');
        }
        json.extend_from_slice(b"]}");
        spans.push(start..offset(&json)?);
        ids.push(lower(&team.external_id));
    }
    Teams::new(json.into(), spans.into(), ids.into()).map_err(|_| unresolved)
}

/// `{"GUID":…,"Name":…},…`: the items of a level or pattern list.
fn named_items(body: &mut Vec<u8>, items: &[Named]) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        named(body, &item.guid, &item.name);
        body.push(b'}');
    }
}

/// The items of the `Categories` list, each with its patterns.
fn render_categories(file: &Document) -> Vec<u8> {
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

/// `{"GUID":…,"Name":…,"LevelGUID":…,"Findings":[…]`, unclosed: the part an application and
/// a module share.
fn graded(
    out: &mut Vec<u8>,
    guid: &str,
    name: &str,
    level: u32,
    found: &[Finding],
    refs: &Refs,
) -> Result<(), RenderError> {
    named(out, guid, name);
    out.push(b',');
    out.extend_from_slice(refs.level(level)?);
    out.extend_from_slice(b",\"Findings\":");
    findings(out, found, refs)
}

/// `{"GUID":…,"Name":…`, left open.
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

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use crate::snapshot::Whole;
    use crate::snapshot::sample::{VALID, json_of, load_text};

    #[test]
    fn a_valid_snapshot_renders_in_serving_order_with_canonical_identifiers() {
        let snapshot = load_text(VALID).unwrap();
        let infra =
            json!({"ActivationCode": "CODE-\"1\"", "LastAnalyzedOn": "2024-05-14T06:00:00.500Z"});
        assert_eq!(json_of(snapshot.infrastructure()), infra);
        assert_eq!(
            json_of(snapshot.whole(Whole::Levels)),
            json!({"InfrastructureInfo": infra, "Levels": [
                {"GUID": "L1", "Name": "Low"}, {"GUID": "L2", "Name": "High"}]})
        );
        assert_eq!(
            json_of(snapshot.whole(Whole::Categories))["Categories"][0]["Patterns"][1]["GUID"],
            "P2"
        );
        let apps: Vec<Value> = snapshot.applications(0..2).iter().map(|a| json_of(a)).collect();
        assert_eq!(
            apps[0],
            json!({"GUID": "A1", "Name": "Alpha \"quoted\"", "LevelGUID": "L1",
            "Findings": [], "Modules": []})
        );
        assert_eq!(
            apps[1],
            json!({"GUID": "A2", "Name": "zeta", "LevelGUID": "L2",
            "Findings": [
                {"CategoryGUID": "C1", "PatternGUID": "P1", "Count": 1},
                {"CategoryGUID": "C2", "PatternGUID": "P3", "Count": 2}],
            "Modules": [
                {"GUID": "M1", "Name": "zeta", "LevelGUID": "L1", "Findings": [
                    {"CategoryGUID": "C1", "PatternGUID": "P2", "Count": 9007199254740993_i64}]},
                {"GUID": "M2", "Name": "Zeta_CS", "LevelGUID": "L2", "Findings": []}]})
        );
        assert_eq!(
            json_of(snapshot.whole(Whole::Teams))["Teams"],
            json!([{"ExternalId": "T1", "Name": "Sales",
                    "Applications": [{"GUID": "A1"}, {"GUID": "A2"}]}])
        );
        assert_eq!(json_of(snapshot.team("t1").unwrap())["Name"], "Sales");
        assert!(snapshot.team("T2").is_none());
        assert_eq!(snapshot.application_position("a2"), Some(1));
        assert_eq!(snapshot.module_position("m2"), Some((1, 1)));
        let parts = snapshot.application_with_module(1, 1).unwrap().unwrap();
        let only_m2 = json_of(&parts.parts().concat());
        assert_eq!(only_m2["Modules"], json!([apps[1]["Modules"][1]]));
        assert_eq!(only_m2["Findings"], apps[1]["Findings"]);
        let stats = snapshot.stats();
        assert_eq!((stats.applications, stats.modules, stats.findings), (2, 2, 3));
        assert_eq!(stats.file_bytes, VALID.len());
        // A byte-order mark is tolerated, and changes nothing.
        let with_mark = load_text(&format!("\u{feff}{VALID}")).unwrap();
        assert_eq!(with_mark.whole(Whole::Levels), snapshot.whole(Whole::Levels));
        assert_eq!(with_mark.whole(Whole::Teams), snapshot.whole(Whole::Teams));
        assert_eq!(with_mark.applications(0..2), snapshot.applications(0..2));
    }

    fn gunzip(member: &[u8]) -> Vec<u8> {
        let mut plain = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(member), &mut plain).unwrap();
        plain
    }

    #[test]
    fn every_piece_has_its_compressed_form_and_memory_counts_it() {
        let snapshot = load_text(VALID).unwrap();
        let wholes = [Whole::LastAnalysisDate, Whole::Levels, Whole::Categories, Whole::Teams];
        for answer in wholes {
            assert_eq!(gunzip(snapshot.whole_gzip(answer)), &**snapshot.whole(answer));
        }
        assert_eq!(snapshot.whole(Whole::Levels), snapshot.whole(Whole::Levels));
        // Both applications are one run (the last, short one); each alone, in either order.
        let apps = snapshot.applications(0..2);
        let apps: Vec<&[u8]> = apps.iter().map(|a| &**a).collect();
        let run = snapshot.application_segments(0..2);
        assert_eq!(run.len(), 1);
        let mut member = crate::gzip::Member::with_capacity(0);
        member.segment(run[0]);
        assert_eq!(gunzip(&member.finish()), [apps[0], b",", apps[1]].concat());
        let singles = [snapshot.application_segments(0..1), snapshot.application_segments(1..2)];
        for order in [[0, 1], [1, 0]] {
            let mut member = crate::gzip::Member::with_capacity(0);
            order.iter().for_each(|&i| member.segment(singles[i][0]));
            assert_eq!(gunzip(&member.finish()), [apps[order[0]], apps[order[1]]].concat());
        }
        assert!(snapshot.application_segments(2..3).is_empty());
        let segments = [run[0], singles[0][0], singles[1][0]];
        let members: usize = wholes.iter().map(|&a| snapshot.whole_gzip(a).len()).sum();
        let deflate: usize = segments.iter().map(|s| s.deflate.len()).sum();
        let compressed = snapshot.stats().compressed_bytes;
        // The members, the segments and their index of a few words each.
        assert!(
            (members + deflate..members + deflate + 128).contains(&compressed),
            "{compressed} for {members} + {deflate}"
        );
    }
}
