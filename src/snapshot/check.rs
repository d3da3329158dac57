//! Validation: everything a parsed snapshot can still get wrong, found before any of it is used.
//!
//! `serde` has checked the shape; this checks the meaning. Every string is bounded and clean: no
//! longer than its field allows ([`super::format`] declares the limits and says why) and free of
//! control characters, line separators and bidirectional controls, which no name needs and which
//! would otherwise reach clients, logs and terminals as they are. Identifiers are unique within their
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

use super::format::strict::{Category, Document, Finding, Named};
use super::format::{
    FORMAT_VERSION, Invalid, Kind, MAX_IDENTIFIER_BYTES, MAX_NAME_BYTES, MAX_TIMESTAMP_BYTES,
    Problem, echo,
};

/// Checks `file` and resolves its references. Returns the analysis time.
pub fn check(file: &mut Document) -> Result<SystemTime, Invalid> {
    if let Some(version) = file.format_version.filter(|&v| v != FORMAT_VERSION) {
        return Err(Invalid::at("$.FormatVersion".into(), Problem::FormatVersion(version)));
    }
    text(&file.last_analyzed_on, MAX_TIMESTAMP_BYTES, &|| "$.LastAnalyzedOn".into())?;
    let analyzed_on = humantime::parse_rfc3339(&file.last_analyzed_on).map_err(|_| {
        let text = echo(&file.last_analyzed_on);
        Invalid::at("$.LastAnalyzedOn".into(), Problem::Timestamp { text })
    })?;
    check_strings(file)?;
    let Document { levels, categories, teams, applications, .. } = file;

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

/// Every string of the document, in document order, within its field's limit and clean.
fn check_strings(file: &Document) -> Result<(), Invalid> {
    let id = |value: &str, path: &dyn Fn() -> String| text(value, MAX_IDENTIFIER_BYTES, path);
    let name = |value: &str, path: &dyn Fn() -> String| text(value, MAX_NAME_BYTES, path);
    let named = |items: &[Named], at: &dyn Fn(usize) -> String| -> Result<(), Invalid> {
        for (i, item) in items.iter().enumerate() {
            id(&item.guid, &|| format!("{}.GUID", at(i)))?;
            name(&item.name, &|| format!("{}.Name", at(i)))?;
        }
        Ok(())
    };
    let findings = |list: &[Finding], owner: &dyn Fn() -> String| -> Result<(), Invalid> {
        for (f, finding) in list.iter().enumerate() {
            id(&finding.category_guid, &|| format!("{}.Findings[{f}].CategoryGUID", owner()))?;
            id(&finding.pattern_guid, &|| format!("{}.Findings[{f}].PatternGUID", owner()))?;
        }
        Ok(())
    };
    named(&file.levels, &|l| format!("$.Levels[{l}]"))?;
    for (c, category) in file.categories.iter().enumerate() {
        id(&category.guid, &|| format!("$.Categories[{c}].GUID"))?;
        name(&category.name, &|| format!("$.Categories[{c}].Name"))?;
        named(&category.patterns, &|p| format!("$.Categories[{c}].Patterns[{p}]"))?;
    }
    for (t, team) in file.teams.iter().enumerate() {
        id(&team.external_id, &|| format!("$.Teams[{t}].ExternalId"))?;
        name(&team.name, &|| format!("$.Teams[{t}].Name"))?;
        for (a, member) in team.applications.iter().enumerate() {
            id(&member.guid, &|| format!("$.Teams[{t}].Applications[{a}].GUID"))?;
        }
    }
    for (a, app) in file.applications.iter().enumerate() {
        let at = || format!("$.Applications[{a}]");
        id(&app.guid, &|| format!("{}.GUID", at()))?;
        name(&app.name, &|| format!("{}.Name", at()))?;
        id(&app.level_guid, &|| format!("{}.LevelGUID", at()))?;
        findings(&app.findings, &at)?;
        for (m, module) in app.modules.iter().enumerate() {
            let at = || format!("$.Applications[{a}].Modules[{m}]");
            id(&module.guid, &|| format!("{}.GUID", at()))?;
            name(&module.name, &|| format!("{}.Name", at()))?;
            id(&module.level_guid, &|| format!("{}.LevelGUID", at()))?;
            findings(&module.findings, &at)?;
        }
    }
    Ok(())
}

/// One string: at most `max` bytes, and no character a name or identifier never needs. `path`
/// is made only for a refusal, never for the hundreds of thousands of strings that are fine.
fn text(value: &str, max: usize, path: &dyn Fn() -> String) -> Result<(), Invalid> {
    if value.len() > max {
        return Err(Invalid::at(path(), Problem::TooLong { bytes: value.len(), max }));
    }
    // Almost every string is printable ASCII: one pass over its bytes says so.
    if value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Ok(());
    }
    match value.chars().enumerate().find(|(_, c)| forbidden(*c)) {
        Some((at, c)) => {
            Err(Invalid::at(path(), Problem::ControlCharacter { at, code_point: c.into() }))
        }
        None => Ok(()),
    }
}

/// Control characters (Unicode's Cc: C0, DEL, C1), the line and paragraph separators (which end
/// a line in JavaScript and in some terminals), and the bidirectional embeddings, overrides and
/// isolates (which make text display in another order than it is stored: "Trojan Source").
fn forbidden(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
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
    categories: &'r [Category],
    /// Per pattern number: the last `Findings` list that counted it, and where in that list.
    /// A stamp instead of a set per list: 22,000 lists cost no allocation.
    seen: Vec<(u32, u32)>,
    list: u32,
}

impl Patterns<'_, '_> {
    /// Resolves every finding of one `Findings` list; `owner` is the path of its application
    /// or module.
    fn resolve(&mut self, findings: &mut [Finding], owner: &str) -> Result<(), Invalid> {
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
            // Numbers are positions in `at`, given as each pattern was declared.
            let pattern = self.at[number];
            if pattern.0 as usize != category {
                return Err(Invalid::at(
                    at(".CategoryGUID"),
                    Problem::WrongCategory {
                        pattern: finding.pattern_guid.to_string(),
                        category: finding.category_guid.to_string(),
                        // `pattern.0` was recorded as an index into these categories.
                        declared_in: self.categories[pattern.0 as usize].guid.to_string(),
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
                        id: finding.pattern_guid.to_string(),
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

#[cfg(test)]
mod tests {
    use crate::snapshot::format::{Invalid, Kind, Problem, ReadError};
    use crate::snapshot::sample::{VALID, date, load_text, with};
    use crate::snapshot::{LoadError, load};

    #[test]
    fn each_broken_reference_is_named_with_its_path() {
        let dup = |id: &str, first: &str| Problem::Duplicate { id: id.into(), first: first.into() };
        let unresolved = |kind, guid: &str| Problem::Unresolved { kind, guid: guid.into() };
        let cases: Vec<(String, &str, Problem)> = vec![
            (
                with("\"Count\": 2", "\"Count\": -2"),
                "$.Applications[0].Findings[0].Count",
                Problem::NegativeCount(-2),
            ),
            (
                with("\"LevelGUID\": \"l2\"", "\"LevelGUID\": \"L9\""),
                "$.Applications[0].LevelGUID",
                unresolved(Kind::Level, "L9"),
            ),
            (
                with(
                    "\"GUID\": \"M2\", \"Name\": \"Zeta_CS\", \"LevelGUID\": \"L2\"",
                    "\"GUID\": \"M2\", \"Name\": \"Zeta_CS\", \"LevelGUID\": \"\"",
                ),
                "$.Applications[0].Modules[0].LevelGUID",
                unresolved(Kind::Level, ""),
            ),
            (
                with(
                    "\"CategoryGUID\": \"C2\", \"PatternGUID\": \"P3\"",
                    "\"CategoryGUID\": \"C9\", \"PatternGUID\": \"P3\"",
                ),
                "$.Applications[0].Findings[0].CategoryGUID",
                unresolved(Kind::Category, "C9"),
            ),
            (
                with(
                    "\"CategoryGUID\": \"C2\", \"PatternGUID\": \"P3\"",
                    "\"CategoryGUID\": \"C2\", \"PatternGUID\": \"P9\"",
                ),
                "$.Applications[0].Findings[0].PatternGUID",
                unresolved(Kind::Pattern, "P9"),
            ),
            (
                with(
                    "\"CategoryGUID\": \"C2\", \"PatternGUID\": \"P3\"",
                    "\"CategoryGUID\": \"C1\", \"PatternGUID\": \"P3\"",
                ),
                "$.Applications[0].Findings[0].CategoryGUID",
                Problem::WrongCategory {
                    pattern: "P3".into(),
                    category: "C1".into(),
                    declared_in: "C2".into(),
                },
            ),
            (
                with(
                    "\"CategoryGUID\": \"C1\", \"PatternGUID\": \"P1\"",
                    "\"CategoryGUID\": \"C2\", \"PatternGUID\": \"p3\"",
                ),
                "$.Applications[0].Findings[1].PatternGUID",
                dup("p3", "$.Applications[0].Findings[0].PatternGUID"),
            ),
            (
                with("\"GUID\": \"A1\", \"Name\"", "\"GUID\": \"a2\", \"Name\""),
                "$.Applications[1].GUID",
                dup("a2", "$.Applications[0].GUID"),
            ),
            (
                with(
                    "{\"GUID\": \"A1\", \"Name\": \"Alpha \\\"quoted\\\"\", \"LevelGUID\": \"L1\"}",
                    "{\"GUID\": \"A1\", \"Name\": \"A\", \"LevelGUID\": \"L1\",
                    \"Modules\": [{\"GUID\": \"m1\", \"Name\": \"x\", \"LevelGUID\": \"L1\"}]}",
                ),
                "$.Applications[1].Modules[0].GUID",
                dup("m1", "$.Applications[0].Modules[1].GUID"),
            ),
            (
                with(
                    "{\"GUID\": \"L2\", \"Name\": \"High\"}",
                    "{\"GUID\": \"l1\", \"Name\": \"High\"}",
                ),
                "$.Levels[1].GUID",
                dup("l1", "$.Levels[0].GUID"),
            ),
            (
                with("{\"GUID\": \"C2\", \"Name\"", "{\"GUID\": \"c1\", \"Name\""),
                "$.Categories[1].GUID",
                dup("c1", "$.Categories[0].GUID"),
            ),
            (
                with("{\"GUID\": \"P3\", \"Name\"", "{\"GUID\": \"P2\", \"Name\""),
                "$.Categories[1].Patterns[0].GUID",
                dup("P2", "$.Categories[0].Patterns[1].GUID"),
            ),
            (
                with(
                    "{\"GUID\": \"L1\", \"Name\": \"Low\"}",
                    "{\"GUID\": \"\", \"Name\": \"Low\"}",
                ),
                "$.Levels[0].GUID",
                Problem::EmptyIdentifier,
            ),
            (
                with("{\"GUID\": \"a2\"}", "{\"GUID\": \"A3\"}"),
                "$.Teams[0].Applications[0].GUID",
                unresolved(Kind::Application, "A3"),
            ),
            (
                with("{\"GUID\": \"A1\"}]", "{\"GUID\": \"A2\"}]"),
                "$.Teams[0].Applications[1].GUID",
                dup("A2", "$.Teams[0].Applications[0].GUID"),
            ),
            (
                with(
                    "\"Teams\": [{\"ExternalId\": \"T1\", \"Name\": \"Sales\",",
                    "\"Teams\": [{\"ExternalId\": \"t1\", \"Name\": \"S\"}, \
                   {\"ExternalId\": \"T1\", \"Name\": \"Sales\",",
                ),
                "$.Teams[1].ExternalId",
                dup("T1", "$.Teams[0].ExternalId"),
            ),
            (
                with("\"2024-05-14T06:00:00.5Z\"", "\"2024-05-14 06:00\""),
                "$.LastAnalyzedOn",
                Problem::Timestamp { text: "2024-05-14 06:00".into() },
            ),
            (
                with("\"2024-05-14T06:00:00.5Z\"", "\"2024-05-14T08:00:00+02:00\""),
                "$.LastAnalyzedOn",
                Problem::Timestamp { text: "2024-05-14T08:00:00+02:00".into() },
            ),
            (
                with("{\n  \"LastAnalyzedOn\"", "{\"FormatVersion\": 2, \"LastAnalyzedOn\""),
                "$.FormatVersion",
                Problem::FormatVersion(2),
            ),
        ];
        for (text, path, problem) in cases {
            let invalid = load_text(&text).err().unwrap_or_else(|| panic!("accepted: {path}"));
            assert_eq!(invalid, Invalid { path: path.into(), problem }, "{text}");
        }
        let version_1 = load_text(&with(
            "{\n  \"LastAnalyzedOn\"",
            "{\"FormatVersion\": 1, \"LastAnalyzedOn\"",
        ));
        assert_eq!(version_1.map(|s| s.application_count()), Ok(2), "version 1 is read");
    }

    #[test]
    fn shape_errors_name_the_path_line_and_column() {
        let syntax = |text: &str| match load_text(text) {
            Err(Invalid { path, problem: Problem::Syntax { message, line, column } }) => {
                (path, message, line, column)
            }
            other => panic!("{:?}", other.map(|s| s.stats())),
        };
        let (path, message, line, _) = syntax(&with("\"Count\": 2", "\"Count\": \"2\""));
        assert_eq!(path, "$.Applications[0].Findings[0].Count");
        assert!(message.starts_with("invalid type: string \"2\", expected i64"), "{message}");
        assert_eq!(line, 13);
        let (path, message, ..) = syntax(&with("\"Count\": 2", "\"Count\": 2.5"));
        assert_eq!(path, "$.Applications[0].Findings[0].Count");
        assert!(message.starts_with("invalid type: floating point `2.5`"), "{message}");
        let (path, message, ..) = syntax(&with(
            "\"GUID\": \"A1\", \"Name\"",
            "\"GUID\": \"A1\", \"Finding\": [], \"Name\"",
        ));
        assert_eq!(path, "$.Applications[1].Finding");
        assert!(message.starts_with("unknown field `Finding`"), "{message}");
        let (path, message, ..) = syntax(&with(", \"LevelGUID\": \"L1\"}", "}"));
        assert_eq!(
            (path.as_str(), message.as_str()),
            ("$.Applications[1]", "missing field `LevelGUID`")
        );
        let (path, message, line, column) = syntax("{\"LastAnalyzedOn\": ");
        assert_eq!(
            (path.as_str(), message.as_str()),
            ("$.LastAnalyzedOn", "EOF while parsing a value")
        );
        assert_eq!((line, column), (1, 19));
        let (path, message, ..) = syntax(&format!("{VALID} x"));
        assert_eq!((path.as_str(), message.as_str()), ("$", "trailing characters"));
        let (path, message, line, column) =
            syntax("\n  [\"2024-05-14T06:00:00Z\", [], [], [], []]");
        assert_eq!((path.as_str(), message.as_str()), ("$", "a snapshot is a JSON object, {…}"));
        assert_eq!((line, column), (2, 3));
        assert!(matches!(load(b"", date(), "C"), Err(LoadError::Read(ReadError::Empty))));
        let shown = load_text(&with("\"Count\": 2", "\"Count\": -2")).err().unwrap().to_string();
        assert_eq!(
            shown,
            "$.Applications[0].Findings[0].Count: Count is -2; a count cannot be negative"
        );
    }

    #[test]
    fn every_string_is_bounded_and_clean_and_a_violation_names_its_path() {
        let long_name = "n".repeat(1025);
        let long_id = "i".repeat(257);
        let cases: Vec<(String, &str, Problem)> = vec![
            (
                with("\"Name\": \"Low\"", "\"Name\": \"L\\u0000w\""),
                "$.Levels[0].Name",
                Problem::ControlCharacter { at: 1, code_point: 0 },
            ),
            (
                with("\"Name\": \"Low\"", &format!("\"Name\": \"{long_name}\"")),
                "$.Levels[0].Name",
                Problem::TooLong { bytes: 1025, max: 1024 },
            ),
            (
                with("\"GUID\": \"A1\", \"Name\"", &format!("\"GUID\": \"{long_id}\", \"Name\"")),
                "$.Applications[1].GUID",
                Problem::TooLong { bytes: 257, max: 256 },
            ),
            (
                with("\"Name\": \"Sales\"", "\"Name\": \"Sa\\tles\""),
                "$.Teams[0].Name",
                Problem::ControlCharacter { at: 2, code_point: 9 },
            ),
            (
                with("\"A2\", \"Name\": \"zeta\"", "\"A2\", \"Name\": \"z\u{202E}eta\""),
                "$.Applications[0].Name",
                Problem::ControlCharacter { at: 1, code_point: 0x202E },
            ),
            (
                with("\"Name\": \"Zeta_CS\"", "\"Name\": \"Zeta\\u0085CS\""),
                "$.Applications[0].Modules[0].Name",
                Problem::ControlCharacter { at: 4, code_point: 0x85 },
            ),
            (
                with("\"PatternGUID\": \"P3\"", "\"PatternGUID\": \"P\\u2028\""),
                "$.Applications[0].Findings[0].PatternGUID",
                Problem::ControlCharacter { at: 1, code_point: 0x2028 },
            ),
            (
                with("{\"GUID\": \"a2\"}", "{\"GUID\": \"a\\n2\"}"),
                "$.Teams[0].Applications[0].GUID",
                Problem::ControlCharacter { at: 1, code_point: 10 },
            ),
            (
                with("\"2024-05-14T06:00:00.5Z\"", &format!("\"{}\"", "9".repeat(65))),
                "$.LastAnalyzedOn",
                Problem::TooLong { bytes: 65, max: 64 },
            ),
        ];
        for (text, path, problem) in cases {
            let invalid = load_text(&text).err().unwrap_or_else(|| panic!("accepted: {path}"));
            assert_eq!(invalid, Invalid { path: path.into(), problem }, "{text}");
        }
        // At the limits, and with the characters names do have, all is well.
        let fine =
            with("\"Name\": \"Low\"", &format!("\"Name\": \"é😀 \\\"{}\"", "n".repeat(1014)));
        assert!(load_text(&fine).is_ok());
        let shown = load_text(&with("\"Name\": \"Low\"", &format!("\"Name\": \"{long_name}\"")))
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            shown.as_deref().unwrap_or_default(),
            "$.Levels[0].Name: the string is 1025 bytes long; this field takes at most 1024 bytes \
             of UTF-8"
        );
    }
}
