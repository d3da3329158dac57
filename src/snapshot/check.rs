//! Validation: everything a parsed snapshot can still get wrong, found before any of it is used.
//!
//! `serde` has checked the shape; this checks the meaning. Identifiers are unique within their
//! kind (levels, categories, patterns across all categories, applications, modules across all
//! applications, teams), every reference resolves (`LevelGUID`, `CategoryGUID`, `PatternGUID`,
//! a team's applications), a finding's pattern is in the category it names, a pattern is
//! counted once per `Findings` list, and no count is negative. Each failure names the JSON path
//! of the offending value, so the person who made the file can go straight to it.
//!
//! Identifiers are compared ignoring ASCII letter case, as the hosted service's database does;
//! two GUIDs that differ only in case would make a query ambiguous, so they count as one.
//! Resolution writes the indexes into the `#[serde(skip)]` fields for [`super::render`].

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::{Hash, Hasher};
use std::time::SystemTime;

use super::file::{FORMAT_VERSION, Finding, SnapshotFile};
use super::{Invalid, Kind, Problem};

/// Checks `file` and resolves its references. Returns the analysis time.
pub fn check(file: &mut SnapshotFile<'_>) -> Result<SystemTime, Invalid> {
    if let Some(version) = file.format_version.filter(|&v| v != FORMAT_VERSION) {
        return Err(Invalid::at("$.FormatVersion".into(), Problem::FormatVersion(version)));
    }
    let analyzed_on = humantime::parse_rfc3339(&file.last_analyzed_on).map_err(|_| {
        let text = file.last_analyzed_on.clone().into_owned();
        Invalid::at("$.LastAnalyzedOn".into(), Problem::Timestamp { text })
    })?;
    let SnapshotFile { levels, categories, teams, applications, .. } = file;

    let mut level_ids = Ids::new(levels.len());
    for (i, level) in levels.iter().enumerate() {
        level_ids.insert(&level.guid, i, |n| format!("$.Levels[{n}].GUID"))?;
    }
    let mut category_ids = Ids::new(categories.len());
    let mut pattern_ids = Ids::new(categories.iter().map(|c| c.patterns.len()).sum());
    let mut pattern_at = Vec::new();
    for (c, category) in categories.iter().enumerate() {
        category_ids.insert(&category.guid, c, |n| format!("$.Categories[{n}].GUID"))?;
        for (p, pattern) in category.patterns.iter().enumerate() {
            pattern_at.push((c as u32, p as u32));
            let at = &pattern_at;
            pattern_ids.insert(&pattern.guid, at.len() - 1, |n| {
                let (c, p) = at[n];
                format!("$.Categories[{c}].Patterns[{p}].GUID")
            })?;
        }
    }
    let refs = References { levels: &level_ids, categories: &category_ids, patterns: &pattern_ids };
    let mut patterns = Patterns {
        refs: &refs,
        at: &pattern_at,
        categories,
        seen: vec![(0, 0); pattern_at.len()],
        list: 0,
    };

    for (a, app) in applications.iter_mut().enumerate() {
        let at = format!("$.Applications[{a}]");
        app.level = refs.level(&app.level_guid, || format!("{at}.LevelGUID"))?;
        patterns.resolve(&mut app.findings, &at)?;
        for (m, module) in app.modules.iter_mut().enumerate() {
            let at = format!("{at}.Modules[{m}]");
            module.level = refs.level(&module.level_guid, || format!("{at}.LevelGUID"))?;
            patterns.resolve(&mut module.findings, &at)?;
        }
    }

    let mut app_ids = Ids::new(applications.len());
    let mut module_ids = Ids::new(applications.iter().map(|a| a.modules.len()).sum());
    let mut module_at = Vec::with_capacity(module_ids.map.capacity());
    for (a, app) in applications.iter().enumerate() {
        app_ids.insert(&app.guid, a, |n| format!("$.Applications[{n}].GUID"))?;
        for (m, module) in app.modules.iter().enumerate() {
            module_at.push((a, m));
            let at = &module_at;
            module_ids.insert(&module.guid, at.len() - 1, |n| {
                let (a, m) = at[n];
                format!("$.Applications[{a}].Modules[{m}].GUID")
            })?;
        }
    }

    let mut team_ids = Ids::new(teams.len());
    for (t, team) in teams.iter_mut().enumerate() {
        team_ids.insert(&team.external_id, t, |n| format!("$.Teams[{n}].ExternalId"))?;
        let mut members = Ids::new(team.applications.len());
        for (i, member) in team.applications.iter_mut().enumerate() {
            let path = |n: usize| format!("$.Teams[{t}].Applications[{n}].GUID");
            let app = app_ids.resolve(&member.guid, Kind::Application, || path(i))?;
            members.insert(&member.guid, i, path)?;
            member.app = app as u32;
        }
    }
    Ok(analyzed_on)
}

/// The identifiers a reference may name.
struct References<'r, 'a> {
    levels: &'r Ids<'a>,
    categories: &'r Ids<'a>,
    patterns: &'r Ids<'a>,
}

impl References<'_, '_> {
    fn level(&self, guid: &str, path: impl Fn() -> String) -> Result<u32, Invalid> {
        self.levels.resolve(guid, Kind::Level, path).map(|i| i as u32)
    }
}

/// Resolves findings to patterns.
struct Patterns<'r, 'a> {
    refs: &'r References<'r, 'a>,
    /// Pattern number → (category index, index within the category).
    at: &'r [(u32, u32)],
    categories: &'r [super::file::Category<'a>],
    /// Per pattern number: the last `Findings` list that counted it, and where in that list.
    /// A stamp instead of a set per list: 22,000 lists cost no allocation.
    seen: Vec<(u32, u32)>,
    list: u32,
}

impl Patterns<'_, '_> {
    /// Resolves every finding of one `Findings` list; `owner` is the path of its application
    /// or module.
    fn resolve(&mut self, findings: &mut [Finding<'_>], owner: &str) -> Result<(), Invalid> {
        self.list += 1;
        for (f, finding) in findings.iter_mut().enumerate() {
            let at = |field: &str| format!("{owner}.Findings[{f}]{field}");
            let category =
                self.refs
                    .categories
                    .resolve(&finding.category_guid, Kind::Category, || at(".CategoryGUID"))?;
            let number =
                self.refs
                    .patterns
                    .resolve(&finding.pattern_guid, Kind::Pattern, || at(".PatternGUID"))?;
            let pattern = self.at[number];
            if pattern.0 as usize != category {
                return Err(Invalid::at(
                    at(".CategoryGUID"),
                    Problem::WrongCategory {
                        pattern: finding.pattern_guid.clone().into_owned(),
                        category: finding.category_guid.clone().into_owned(),
                        declared_in: self.categories[pattern.0 as usize].guid.clone().into_owned(),
                    },
                ));
            }
            if finding.count < 0 {
                return Err(Invalid::at(at(".Count"), Problem::NegativeCount(finding.count)));
            }
            let seen = &mut self.seen[number];
            if seen.0 == self.list {
                let first = seen.1;
                return Err(Invalid::at(
                    at(".PatternGUID"),
                    Problem::Duplicate {
                        id: finding.pattern_guid.clone().into_owned(),
                        first: format!("{owner}.Findings[{first}].PatternGUID"),
                    },
                ));
            }
            *seen = (self.list, f as u32);
            finding.pattern = pattern;
        }
        Ok(())
    }
}

/// Identifiers of one kind, ignoring ASCII case, each with the number of what it identifies.
struct Ids<'a> {
    map: HashMap<Caseless<'a>, usize>,
}

impl<'a> Ids<'a> {
    fn new(capacity: usize) -> Self {
        Self { map: HashMap::with_capacity(capacity) }
    }

    /// Adds `id` for item `number`. `path_of` gives the JSON path of an item's identifier by
    /// number: paths are made only for an error, never for the hundreds of thousands of
    /// identifiers that are fine.
    fn insert(
        &mut self,
        id: &'a str,
        number: usize,
        path_of: impl Fn(usize) -> String,
    ) -> Result<(), Invalid> {
        if id.is_empty() {
            return Err(Invalid::at(path_of(number), Problem::EmptyIdentifier));
        }
        match self.map.entry(Caseless(id)) {
            Entry::Occupied(first) => {
                let first = path_of(*first.get());
                Err(Invalid::at(path_of(number), Problem::Duplicate { id: id.to_owned(), first }))
            }
            Entry::Vacant(slot) => {
                slot.insert(number);
                Ok(())
            }
        }
    }

    fn resolve(&self, id: &str, kind: Kind, path: impl Fn() -> String) -> Result<usize, Invalid> {
        match self.map.get(&Caseless(id)) {
            Some(&number) => Ok(number),
            None => Err(Invalid::at(path(), Problem::Unresolved { kind, guid: id.to_owned() })),
        }
    }
}

/// A string that hashes and compares ignoring ASCII case, without making a lower-case copy.
#[derive(Clone, Copy)]
struct Caseless<'a>(&'a str);

impl PartialEq for Caseless<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.0.eq_ignore_ascii_case(other.0)
    }
}

impl Eq for Caseless<'_> {}

impl Hash for Caseless<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let mut chunk = [0u8; 64];
        for part in self.0.as_bytes().chunks(chunk.len()) {
            let lower = &mut chunk[..part.len()];
            lower.copy_from_slice(part);
            lower.make_ascii_lowercase();
            state.write(lower);
        }
        // As `str` does: a terminator, so that ("ab","c") and ("a","bc") cannot collide.
        state.write_u8(0xff);
    }
}
