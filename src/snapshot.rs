//! Snapshots: one analysis of the whole infrastructure, the data every API answer comes from.
//!
//! A snapshot file goes through three stages, one submodule each: `file` reads the documented
//! JSON format (docs/snapshot-format.md) with `serde`; `check` validates everything a
//! reference can get wrong and resolves each reference to an index, failing with the JSON path
//! of the first problem; `render` turns the result into the API's JSON once, one object per
//! application, so that answering a request is copying bytes that already exist. A snapshot
//! that fails any stage is refused whole: there is no half-loaded data.
//!
//! [`history`] keeps every date, each unchanged application once, compressed; [`prepare`]
//! turns a rendered file into the pieces it stores, compressing only the new ones; [`served`]
//! is a date as the API serves it, assembled from those pieces; [`store`] owns the history,
//! the set the API serves (swapped whole on import, delete or prune, so a request never waits
//! for an import and never sees one half done) and the inbox folder that older releases kept
//! their files in. [`document`] writes a served snapshot back out in the file format
//! (`snapshot export`), and [`verify`] checks the store offline (`snapshot verify`).

mod check;
mod codec;
mod date;
pub mod document;
mod file;
pub mod history;
mod prepare;
mod render;
pub mod served;
pub mod store;
pub mod verify;

use std::fmt;
use std::sync::Arc;

pub use date::{Date, DateError};
pub use document::{ExportError, export};
pub use served::{Snapshot, Stats, Whole};
pub use store::{Catalog, Snapshots};

/// Reads, checks and renders a snapshot for `date` from the bytes of a file, with every piece
/// compressed and all of it in memory, outside any store (for `diagnose`, the benchmarks and
/// the tests). `activation_code` goes into every `InfrastructureInfo` rendered.
pub fn load(bytes: &[u8], date: Date, activation_code: &str) -> Result<Snapshot, Invalid> {
    // Over the bytes as stored (a byte-order mark included): what `GET /snapshots` reports,
    // and what `snapshot pull` compares its own rendering with to find nothing changed.
    let file_sha256 = served::sha256(bytes);
    let rendered = render_file(bytes, &mut keep_each)?;
    let mut no_apps =
        |keys: &[served::Digest]| -> Result<Vec<Option<_>>, Invalid> { Ok(vec![None; keys.len()]) };
    let mut no_runs =
        |keys: &[served::Digest]| -> Result<Vec<Option<_>>, Invalid> { Ok(vec![None; keys.len()]) };
    let prepared = prepare::prepare(rendered, date, file_sha256, &mut no_apps, &mut no_runs)?;
    let plain = served::Plain::Pinned(prepared.plain);
    Ok(Snapshot::assemble(prepared.parts, activation_code, plain))
}

/// Keys an application's rendered JSON and keeps it in an allocation of its own size.
pub(crate) fn keep_each(json: Vec<u8>) -> (served::Digest, Arc<[u8]>) {
    (served::sha256(&json), Arc::from(json))
}

/// Reads, checks and renders the bytes of a snapshot file; `keep` keys each application and
/// says which bytes to keep for it (see [`render::Keep`]).
pub(crate) fn render_file(
    bytes: &[u8],
    keep: render::Keep<'_>,
) -> Result<render::Rendered, Invalid> {
    // Editors on some systems start UTF-8 files with a byte-order mark that JSON forbids; it
    // carries no data, so it is skipped rather than refused.
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut parsed = parse(bytes)?;
    let analyzed_on = check::check(&mut parsed)?;
    Ok(render::render(parsed, analyzed_on, bytes.len(), keep))
}

/// Runs every check of [`load`] without rendering: for `snapshot pull`, which validates what it
/// is about to send and has no use for the rendered answers (a third of `load`'s memory).
pub fn validate(bytes: &[u8]) -> Result<(), Invalid> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut parsed = parse(bytes)?;
    check::check(&mut parsed).map(|_| ())
}

fn parse(bytes: &[u8]) -> Result<file::SnapshotFile<'_>, Invalid> {
    // serde would read a struct from an array too, by position; a snapshot is an object, and
    // an error about "6 elements" would only confuse.
    if let Some(at) = bytes.iter().position(|b| !b.is_ascii_whitespace())
        && bytes[at] != b'{'
    {
        let line = 1 + bytes[..at].iter().filter(|&&b| b == b'\n').count();
        let column = at - bytes[..at].iter().rposition(|&b| b == b'\n').map_or(0, |n| n + 1) + 1;
        let message = "a snapshot is a JSON object, {…}".to_owned();
        return Err(Invalid::at("$".into(), Problem::Syntax { message, line, column }));
    }
    match serde_json::from_slice(bytes) {
        Ok(parsed) => Ok(parsed),
        // The fast parse does not track where it is; only a failure pays for a second,
        // path-tracking parse, which stops at the same place.
        Err(e) => Err(locate(bytes, e)),
    }
}

fn locate(bytes: &[u8], first: serde_json::Error) -> Invalid {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let tracked = serde_path_to_error::deserialize::<_, file::SnapshotFile<'_>>(&mut de);
    let (path, error) = match tracked {
        Err(e) => (json_path(e.path()), e.into_inner()),
        // Trailing characters after the document: the document itself was whole.
        Ok(_) => ("$".to_owned(), first),
    };
    Invalid { path, problem: Problem::syntax(&error) }
}

/// A JSON path in the `$.Applications[3].Modules[0].GUID` form.
pub(crate) fn json_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::from("$");
    for segment in path.iter() {
        match segment {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } if key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') => {
                out.push('.');
                out.push_str(key);
            }
            Segment::Map { key } => out.push_str(&format!("[{key:?}]")),
            Segment::Enum { variant } => out.push_str(&format!(".{variant}")),
            Segment::Unknown => out.push_str(".?"),
        }
    }
    out
}

/// Why a snapshot was refused: where in the document (a JSON path) and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// `$` is the whole document, `$.Applications[3].LevelGUID` one value in it.
    pub path: String,
    pub problem: Problem,
}

impl Invalid {
    pub(crate) fn at(path: String, problem: Problem) -> Self {
        Self { path, problem }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.problem)
    }
}

impl std::error::Error for Invalid {}

/// What kind of thing a GUID failed to name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Level,
    Category,
    Pattern,
    Application,
}

impl Kind {
    fn where_declared(self) -> &'static str {
        match self {
            Self::Level => "level in $.Levels",
            Self::Category => "category in $.Categories",
            Self::Pattern => "pattern in $.Categories[*].Patterns",
            Self::Application => "application in $.Applications",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Not JSON, or not the documented shape, in `serde`'s words, with the position.
    Syntax {
        message: String,
        line: usize,
        column: usize,
    },
    FormatVersion(u32),
    Timestamp {
        text: String,
    },
    EmptyIdentifier,
    /// An identifier used twice where it must be unique (letter case ignored).
    Duplicate {
        id: String,
        first: String,
    },
    /// A reference to something the snapshot does not declare.
    Unresolved {
        kind: Kind,
        guid: String,
    },
    /// A finding names a pattern and a category, and the pattern is in another category.
    WrongCategory {
        pattern: String,
        category: String,
        declared_in: String,
    },
    NegativeCount(i64),
}

impl Problem {
    /// Where in the file the problem is, when the parser could say (a syntax or shape error).
    pub fn line_column(&self) -> Option<(usize, usize)> {
        match self {
            Self::Syntax { line, column, .. } => Some((*line, *column)),
            Self::FormatVersion(_)
            | Self::Timestamp { .. }
            | Self::EmptyIdentifier
            | Self::Duplicate { .. }
            | Self::Unresolved { .. }
            | Self::WrongCategory { .. }
            | Self::NegativeCount(_) => None,
        }
    }

    fn syntax(error: &serde_json::Error) -> Self {
        let (line, column) = (error.line(), error.column());
        let text = error.to_string();
        // serde_json appends the position to its message; it is reported in its own fields.
        let suffix = format!(" at line {line} column {column}");
        let message = text.strip_suffix(&suffix).unwrap_or(&text).to_owned();
        Self::Syntax { message, line, column }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Syntax { message, line, column } => {
                write!(f, "{message} (line {line}, column {column})")
            }
            Self::FormatVersion(v) => write!(
                f,
                "format version {v} is not supported (this build reads version {})",
                file::FORMAT_VERSION
            ),
            Self::Timestamp { text } => write!(
                f,
                "`{text}` is not an RFC 3339 UTC timestamp; write it like 2024-05-14T06:00:00.000Z"
            ),
            Self::EmptyIdentifier => f.write_str("an identifier must not be empty"),
            Self::Duplicate { id, first } => write!(
                f,
                "`{id}` is already used at {first}; identifiers must be unique (letter case is \
                 ignored)"
            ),
            Self::Unresolved { kind, guid } => {
                write!(f, "`{guid}` names no {}", kind.where_declared())
            }
            Self::WrongCategory { pattern, category, declared_in } => write!(
                f,
                "pattern `{pattern}` belongs to category `{declared_in}`, not `{category}`"
            ),
            Self::NegativeCount(n) => write!(f, "Count is {n}; a count cannot be negative"),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    const VALID: &str = r#"{
  "LastAnalyzedOn": "2024-05-14T06:00:00.5Z",
  "Levels": [{"GUID": "L1", "Name": "Low"}, {"GUID": "L2", "Name": "High"}],
  "Categories": [
    {"GUID": "C1", "Name": "Performance",
     "Patterns": [{"GUID": "P1", "Name": "Query in a loop"}, {"GUID": "P2", "Name": "Big image"}]},
    {"GUID": "C2", "Name": "Security", "Patterns": [{"GUID": "P3", "Name": "SQL injection"}]}
  ],
  "Teams": [{"ExternalId": "T1", "Name": "Sales",
             "Applications": [{"GUID": "a2"}, {"GUID": "A1"}]}],
  "Applications": [
    {"GUID": "A2", "Name": "zeta", "LevelGUID": "l2",
     "Findings": [{"CategoryGUID": "C2", "PatternGUID": "P3", "Count": 2},
                  {"CategoryGUID": "C1", "PatternGUID": "P1", "Count": 1}],
     "Modules": [{"GUID": "M2", "Name": "Zeta_CS", "LevelGUID": "L2"},
                 {"GUID": "M1", "Name": "zeta", "LevelGUID": "L1",
                  "Findings": [{"CategoryGUID": "C1", "PatternGUID": "P2",
                                "Count": 9007199254740993}]}]},
    {"GUID": "A1", "Name": "Alpha \"quoted\"", "LevelGUID": "L1"}
  ]
}"#;

    fn date() -> Date {
        Date::parse("2024-05-14").unwrap()
    }

    fn load_text(text: &str) -> Result<Snapshot, Invalid> {
        load(text.as_bytes(), date(), "CODE-\"1\"")
    }

    /// VALID with `from` replaced by `to` (which must be there exactly once).
    fn with(from: &str, to: &str) -> String {
        assert_eq!(VALID.matches(from).count(), 1, "{from}");
        VALID.replacen(from, to, 1)
    }

    fn json_of(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn a_valid_snapshot_renders_in_serving_order_with_canonical_identifiers() {
        let snapshot = load_text(VALID).unwrap();
        let infra =
            json!({"ActivationCode": "CODE-\"1\"", "LastAnalyzedOn": "2024-05-14T06:00:00.500Z"});
        assert_eq!(json_of(snapshot.infrastructure()), infra);
        assert_eq!(
            json_of(snapshot.levels()),
            json!({"InfrastructureInfo": infra, "Levels": [
                {"GUID": "L1", "Name": "Low"}, {"GUID": "L2", "Name": "High"}]})
        );
        assert_eq!(json_of(snapshot.categories())["Categories"][0]["Patterns"][1]["GUID"], "P2");
        let apps: Vec<Value> =
            snapshot.applications(0..2).unwrap().iter().map(|a| json_of(a)).collect();
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
            json_of(snapshot.teams())["Teams"],
            json!([{"ExternalId": "T1", "Name": "Sales",
                    "Applications": [{"GUID": "A1"}, {"GUID": "A2"}]}])
        );
        assert_eq!(json_of(snapshot.team("t1").unwrap())["Name"], "Sales");
        assert!(snapshot.team("T2").is_none());
        assert_eq!(snapshot.application_position("a2"), Some(1));
        assert_eq!(snapshot.module_position("m2"), Some((1, 1)));
        let parts = snapshot.application_with_module(1, 1).unwrap();
        let only_m2 = json_of(&parts.unwrap().parts().concat());
        assert_eq!(only_m2["Modules"], json!([apps[1]["Modules"][1]]));
        assert_eq!(only_m2["Findings"], apps[1]["Findings"]);
        let stats = snapshot.stats();
        assert_eq!((stats.applications, stats.modules, stats.findings), (2, 2, 3));
        assert_eq!(stats.file_bytes, VALID.len());
        // A byte-order mark is tolerated, and changes nothing.
        let with_mark = load_text(&format!("\u{feff}{VALID}")).unwrap();
        assert_eq!(with_mark.levels(), snapshot.levels());
        assert_eq!(with_mark.teams(), snapshot.teams());
        assert_eq!(with_mark.applications(0..2).unwrap(), snapshot.applications(0..2).unwrap());
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
        assert_eq!(snapshot.whole(Whole::Levels), snapshot.levels());
        // Both applications are one run (the last, short one); each alone, in either order.
        let apps = snapshot.applications(0..2).unwrap();
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
        let (_, message, ..) = syntax("");
        assert_eq!(message, "EOF while parsing a value");
        let shown = load_text(&with("\"Count\": 2", "\"Count\": -2")).err().unwrap().to_string();
        assert_eq!(
            shown,
            "$.Applications[0].Findings[0].Count: Count is -2; a count cannot be negative"
        );
    }
}
