//! The newest date, held whole: every answer it gives is bytes in memory.
//!
//! The newest date answers every request without `Date`, so all of it is kept: each
//! application's JSON (a page costs a copy), its compressed segment and its run's (a gzip page
//! costs a copy too), the whole answers with their gzip members, and the indexes by GUID. It is
//! made when the date is committed or at start, never on a request's path, and replaced whole.
//!
//! The whole answers (LastAnalysisDate, Level, Category, Team) carry the configured activation
//! code, so they are built here from the stored list items.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::SystemTime;

use crate::gzip::{self, Segment};
use crate::snapshot::date::Date;
use crate::snapshot::piece::{
    AppMeta, AppPiece, Digest, Items, Pieces, RUN_APPS, RunPiece, Stats, TeamsPiece,
};
use crate::snapshot::render::{APP_TAIL, string};

/// The answers rendered whole, for [`Pinned::whole`] and [`Pinned::whole_gzip`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whole {
    /// `/TechnicalDebt_LastAnalysisDate`: the bare `InfrastructureInfo` object.
    LastAnalysisDate = 0,
    Levels = 1,
    Categories = 2,
    Teams = 3,
}

pub struct Pinned {
    date: Date,
    analyzed_on: SystemTime,
    stats: Stats,
    /// SHA-256 of the imported file's bytes, so a pull can tell it would change nothing.
    file_sha256: Digest,
    /// `{"InfrastructureInfo":…}`'s value and the LastAnalysisDate answer, then the Level,
    /// Category and Team answers, by [`Whole`]'s discriminant.
    wholes: [Arc<[u8]>; 4],
    /// Their gzip members, in the same order.
    wholes_gzip: [Arc<[u8]>; 4],
    teams: Arc<TeamsPiece>,
    /// Lower-case `ExternalId` → team position.
    team_index: HashMap<Box<str>, usize>,
    apps: Box<[Arc<AppPiece>]>,
    runs: Box<[Arc<RunPiece>]>,
    /// Each application's JSON, by position: as many as `apps`.
    plain: Box<[Arc<[u8]>]>,
    /// Lower-case GUID → application position.
    app_index: HashMap<Box<str>, usize>,
    /// Lower-case GUID → (application position, module position within it).
    module_index: HashMap<Box<str>, (usize, usize)>,
    lists: [Arc<Items>; 2],
}

/// What a date is, besides its pieces.
pub struct About {
    pub date: Date,
    pub analyzed_on: SystemTime,
    pub file_bytes: u64,
    pub file_sha256: Digest,
}

/// Pieces that do not make a date: a bug, or a damaged store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch(pub &'static str);

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Mismatch {}

/// An application cut to one module: its head, the module, then [`APP_TAIL`]. Both ranges are
/// within the bytes (checked where it is made).
pub struct WithModule {
    plain: Arc<[u8]>,
    head: Range<usize>,
    module: Range<usize>,
}

impl WithModule {
    /// `meta`'s module at `module`, cut out of the application's bytes `plain`.
    pub fn new(plain: Arc<[u8]>, meta: &AppMeta, module: usize) -> Option<Result<Self, Mismatch>> {
        let span = meta.modules.get(module)?;
        let head = 0..meta.modules_at as usize;
        let module = span.span.start as usize..span.span.end as usize;
        let fits =
            head.end <= plain.len() && module.start <= module.end && module.end <= plain.len();
        Some(match fits {
            true => Ok(Self { plain, head, module }),
            false => Err(Mismatch("a module's span is outside its application")),
        })
    }

    pub fn parts(&self) -> [&[u8]; 3] {
        // Within `plain`: checked by `new`, the only way to make one.
        [&self.plain[self.head.clone()], &self.plain[self.module.clone()], APP_TAIL]
    }
}

impl Pinned {
    /// The served form of `pieces`, with `activation_code` in its `InfrastructureInfo`.
    pub fn assemble(
        about: About,
        pieces: Pieces,
        plain: Box<[Arc<[u8]>]>,
        activation_code: &str,
    ) -> Result<Self, Mismatch> {
        if plain.len() != pieces.apps.len()
            || pieces.runs.len() != pieces.apps.len().div_ceil(RUN_APPS)
        {
            return Err(Mismatch("the pieces of a date do not match its applications"));
        }
        let infrastructure = infrastructure(activation_code, about.analyzed_on);
        let levels = envelope(&infrastructure, "Levels", &[&pieces.levels.json]);
        let categories = envelope(&infrastructure, "Categories", &[&pieces.categories.json]);
        let team_items: Vec<&[u8]> = pieces.teams.teams.objects().collect();
        let teams = envelope(&infrastructure, "Teams", &team_items);
        let wholes: [Arc<[u8]>; 4] =
            [infrastructure.into(), levels.into(), categories.into(), teams.into()];
        let wholes_gzip: [Arc<[u8]>; 4] =
            wholes.clone().map(|w| Arc::from(gzip::compress(&w, gzip::LOAD_LEVEL)));

        let team_index = pieces.teams.teams.ids().iter().cloned().zip(0..).collect();
        let mut app_index = HashMap::with_capacity(pieces.apps.len());
        let modules: usize = pieces.apps.iter().map(|app| app.meta.modules.len()).sum();
        let mut module_index = HashMap::with_capacity(modules);
        for (position, app) in pieces.apps.iter().enumerate() {
            app_index.insert(app.meta.guid.clone(), position);
            for (m, module) in app.meta.modules.iter().enumerate() {
                module_index.insert(module.guid.clone(), (position, m));
            }
        }
        let whole_bytes: usize = wholes.iter().map(|w| w.len()).sum();
        let stats = Stats {
            applications: pieces.apps.len(),
            modules,
            findings: pieces.apps.iter().map(|app| app.meta.findings as usize).sum(),
            file_bytes: about.file_bytes as usize,
            rendered_bytes: plain.iter().map(|p| p.len()).sum::<usize>() + whole_bytes,
            compressed_bytes: wholes_gzip.iter().map(|m| m.len()).sum::<usize>()
                + pieces.compressed_bytes(),
        };
        Ok(Self {
            date: about.date,
            analyzed_on: about.analyzed_on,
            stats,
            file_sha256: about.file_sha256,
            wholes,
            wholes_gzip,
            teams: pieces.teams,
            team_index,
            apps: pieces.apps.into(),
            runs: pieces.runs.into(),
            plain,
            app_index,
            module_index,
            lists: [pieces.levels, pieces.categories],
        })
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

    /// Its applications' bytes by key, for an import to share what did not change.
    pub fn plain_by_key(&self) -> HashMap<Digest, Arc<[u8]>> {
        self.apps.iter().zip(self.plain.iter()).map(|(a, p)| (a.hash, Arc::clone(p))).collect()
    }

    /// What it holds in memory: the plaintext, the compressed forms, the indexes and the
    /// lists.
    pub fn memory_bytes(&self) -> usize {
        let index_entry = size_of::<(Box<str>, (usize, usize))>() + 48;
        let indexes = (self.app_index.len() + self.module_index.len()) * index_entry;
        let metas: usize = self.apps.iter().map(|a| a.meta.modules.len() * 64 + 96).sum();
        let lists: usize = self.lists.iter().map(|items| items.json.len()).sum();
        self.stats.rendered_bytes
            + self.stats.compressed_bytes
            + indexes
            + metas
            + lists
            + self.teams.teams.json().len()
    }

    /// The bare `InfrastructureInfo` object.
    pub fn infrastructure(&self) -> &Arc<[u8]> {
        &self.wholes[Whole::LastAnalysisDate as usize]
    }

    /// An answer rendered whole.
    pub fn whole(&self, answer: Whole) -> &Arc<[u8]> {
        &self.wholes[answer as usize]
    }

    /// The gzip member of an answer rendered whole: [`Pinned::whole`] compressed.
    pub fn whole_gzip(&self, answer: Whole) -> &Arc<[u8]> {
        &self.wholes_gzip[answer as usize]
    }

    /// The level and category lists' items, and the teams: what an export writes.
    pub fn lists(&self) -> (&[u8], &[u8], &TeamsPiece) {
        (&self.lists[0].json, &self.lists[1].json, &self.teams)
    }

    /// One team's object, by `ExternalId` (letter case ignored).
    pub fn team(&self, external_id: &str) -> Option<&[u8]> {
        let position = *self.team_index.get(external_id.to_ascii_lowercase().as_str())?;
        self.teams.teams.object(position)
    }

    pub fn application_count(&self) -> usize {
        self.apps.len()
    }

    /// The applications at `positions` in serving order (those that exist), each a whole JSON
    /// object.
    pub fn applications(&self, positions: Range<usize>) -> Vec<Arc<[u8]>> {
        let end = positions.end.min(self.plain.len());
        self.plain[positions.start.min(end)..end].to_vec()
    }

    /// Every application in serving order.
    pub fn each_application(&self) -> impl Iterator<Item = &[u8]> {
        self.plain.iter().map(|p| &**p)
    }

    /// The applications at `positions` as deflate segments for a [`gzip::Member`], to be
    /// joined by commas: the runs of `RUN_APPS` the range covers whole, and each other
    /// application alone. Their plaintext joined by commas is that of
    /// [`Pinned::applications`] joined by commas.
    pub fn application_segments(&self, positions: Range<usize>) -> Vec<Segment<'_>> {
        // `cover` names positions below the count, and there is a run per ten applications
        // (checked by `assemble`).
        cover(positions, self.apps.len())
            .into_iter()
            .map(|covered| match covered {
                Covered::Run(r) => self.runs[r].compressed.segment(),
                Covered::App(a) => self.apps[a].compressed.segment(),
            })
            .collect()
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
    ) -> Option<Result<WithModule, Mismatch>> {
        let (piece, plain) = (self.apps.get(app)?, self.plain.get(app)?);
        WithModule::new(Arc::clone(plain), &piece.meta, module)
    }
}

/// What a page's segment covers: a whole run, or one application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Covered {
    Run(usize),
    App(usize),
}

/// The runs of [`RUN_APPS`] that `positions` covers whole, and each other application alone,
/// in order, of a date of `count` applications.
pub fn cover(positions: Range<usize>, count: usize) -> Vec<Covered> {
    let end = positions.end.min(count);
    let mut covered = Vec::with_capacity(end.saturating_sub(positions.start) / RUN_APPS + RUN_APPS);
    let mut at = positions.start;
    while at < end {
        let run_end = (at / RUN_APPS + 1) * RUN_APPS;
        if at.is_multiple_of(RUN_APPS) && run_end.min(count) <= end {
            covered.push(Covered::Run(at / RUN_APPS));
            at = run_end;
        } else {
            covered.push(Covered::App(at));
            at += 1;
        }
    }
    covered
}

/// `{"ActivationCode":…,"LastAnalyzedOn":…}`: the LastAnalysisDate answer, and the value of
/// `InfrastructureInfo` in every other one.
pub fn infrastructure(activation_code: &str, analyzed_on: SystemTime) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(b"{\"ActivationCode\":");
    string(&mut out, activation_code);
    let stamp = humantime::format_rfc3339_millis(analyzed_on).to_string();
    out.extend_from_slice(b",\"LastAnalyzedOn\":");
    string(&mut out, &stamp);
    out.push(b'}');
    out
}

/// `{"InfrastructureInfo":{…},"<list>":[<items joined by commas>]}`.
pub fn envelope(infra: &[u8], list: &str, items: &[&[u8]]) -> Vec<u8> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_is_covered_by_whole_runs_and_single_applications() {
        use Covered::{App, Run};
        assert_eq!(cover(0..20, 25), [Run(0), Run(1)]);
        assert_eq!(
            cover(5..22, 25),
            [App(5), App(6), App(7), App(8), App(9), Run(1), App(20), App(21)]
        );
        // The last run is short: a page to the end covers it whole.
        assert_eq!(cover(20..200, 25), [Run(2)]);
        assert_eq!(cover(20..24, 25), [App(20), App(21), App(22), App(23)]);
        assert_eq!(cover(30..40, 25), []);
        assert_eq!(cover(3..3, 25), []);
    }
}
