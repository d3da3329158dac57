//! A small snapshot that uses every feature of the format, and the helpers the unit tests of
//! the check and the rendering share.

use serde_json::Value;

use super::format::{Invalid, ReadError};
use super::{Date, LoadError, Pinned, load};

pub const VALID: &str = r#"{
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

pub fn date() -> Date {
    Date::parse("2024-05-14").unwrap()
}

pub fn load_text(text: &str) -> Result<Pinned, Invalid> {
    match load(text.as_bytes(), date(), "CODE-\"1\"") {
        Ok(pinned) => Ok(pinned),
        Err(LoadError::Invalid(invalid)) => Err(invalid),
        Err(LoadError::Read(ReadError::Invalid(invalid))) => Err(invalid),
        Err(other) => panic!("{other}"),
    }
}

/// VALID with `from` replaced by `to` (which must be there exactly once).
pub fn with(from: &str, to: &str) -> String {
    assert_eq!(VALID.matches(from).count(), 1, "{from}");
    VALID.replacen(from, to, 1)
}

pub fn json_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

/// A snapshot document of `apps` applications analysed on `day` (`YYYY-MM-DD`), with modules,
/// findings and teams. Two seeds share two applications in three (those whose position is not
/// a multiple of three are the same whatever the seed), so dates made with different seeds
/// share pieces and each has pieces of its own.
pub fn document(apps: usize, seed: u64, day: &str) -> String {
    let guid = |kind: &str, n: usize| format!("{kind}-{n:04}");
    let levels: Vec<String> =
        (0..4).map(|l| format!(r#"{{"GUID":"{}","Name":"Level {l}"}}"#, guid("L", l))).collect();
    let categories: Vec<String> = (0..3)
        .map(|c| {
            let patterns: Vec<String> = (0..3)
                .map(|p| {
                    format!(r#"{{"GUID":"{}","Name":"Pattern {c}.{p}"}}"#, guid("P", 3 * c + p))
                })
                .collect();
            format!(
                r#"{{"GUID":"{}","Name":"Category {c}","Patterns":[{}]}}"#,
                guid("C", c),
                patterns.join(",")
            )
        })
        .collect();
    let findings = |n: usize, version: u64| -> String {
        let list: Vec<String> = (0..n % 4)
            .map(|k| {
                let pattern = (n + k) % 9;
                format!(
                    r#"{{"CategoryGUID":"{}","PatternGUID":"{}","Count":{}}}"#,
                    guid("C", pattern / 3),
                    guid("P", pattern),
                    (n as u64 * 7 + k as u64 + version) % 50
                )
            })
            .collect();
        format!("[{}]", list.join(","))
    };
    let applications: Vec<String> = (0..apps)
        .map(|a| {
            let version = if a % 3 == 0 { seed } else { 0 };
            let modules: Vec<String> = (0..a % 4)
                .map(|m| {
                    format!(
                        r#"{{"GUID":"{}","Name":"App{a} module {m}","LevelGUID":"{}","Findings":{}}}"#,
                        guid("M", 10 * a + m),
                        guid("L", (a + m) % 4),
                        findings(a + m, version)
                    )
                })
                .collect();
            format!(
                r#"{{"GUID":"{}","Name":"Application {a:03}","LevelGUID":"{}","Findings":{},"Modules":[{}]}}"#,
                guid("A", a),
                guid("L", (a + version as usize) % 4),
                findings(a, version),
                modules.join(",")
            )
        })
        .collect();
    let teams: Vec<String> = (0..3)
        .map(|t| {
            let members: Vec<String> =
                (t..apps).step_by(3).map(|a| format!(r#"{{"GUID":"{}"}}"#, guid("A", a))).collect();
            format!(
                r#"{{"ExternalId":"{}","Name":"Team {t}","Applications":[{}]}}"#,
                guid("T", t),
                members.join(",")
            )
        })
        .collect();
    format!(
        r#"{{"LastAnalyzedOn":"{day}T06:00:00.000Z","Levels":[{}],"Categories":[{}],"Teams":[{}],"Applications":[{}]}}"#,
        levels.join(","),
        categories.join(","),
        teams.join(","),
        applications.join(",")
    )
}
