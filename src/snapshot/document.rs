//! The snapshot document written out: one deterministic rendering of docs/snapshot-format.md.
//!
//! Two writers need the same bytes for the same data: `snapshot pull`, which copies the
//! upstream's answers into a document and compares its digest with the stored file's to find
//! that nothing changed, and `snapshot export` (`GET /snapshots/<date>`), which renders a
//! served snapshot back into a document from what is held in memory, never from its file (a
//! store that keeps pieces by content keeps no files). Both go through [`Writer`]: fields in
//! the documented order, compact, `FormatVersion` first, every list written even when empty,
//! counts as plain integers, strings escaped by `serde_json` (raw UTF-8, only what RFC 8259
//! requires escaped). So export → import → export gives the same bytes.
//!
//! The types read leniently (unknown fields ignored: the upstream may add some) and write
//! strictly (only the documented fields).

use serde::{Deserialize, Serialize};

use super::Snapshot;
use super::file::FORMAT_VERSION;

/// The document up to its applications, which [`Writer::application`] appends one by one.
#[derive(Serialize)]
pub struct Head<'a> {
    #[serde(rename = "FormatVersion")]
    pub format_version: u32,
    #[serde(rename = "LastAnalyzedOn")]
    pub last_analyzed_on: &'a str,
    #[serde(rename = "Levels")]
    pub levels: &'a [Named],
    #[serde(rename = "Categories")]
    pub categories: &'a [Category],
    #[serde(rename = "Teams")]
    pub teams: &'a [Team],
}

#[derive(Deserialize, Serialize)]
pub struct Named {
    #[serde(rename = "GUID")]
    pub guid: String,
    #[serde(rename = "Name")]
    pub name: String,
}

#[derive(Deserialize, Serialize)]
pub struct Category {
    #[serde(rename = "GUID")]
    pub guid: String,
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Patterns", default)]
    pub patterns: Vec<Named>,
}

#[derive(Deserialize, Serialize)]
pub struct Team {
    #[serde(rename = "ExternalId")]
    pub external_id: String,
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Applications", default)]
    pub applications: Vec<TeamApplication>,
}

#[derive(Deserialize, Serialize)]
pub struct TeamApplication {
    #[serde(rename = "GUID")]
    pub guid: String,
}

#[derive(Deserialize, Serialize)]
pub struct Application {
    #[serde(rename = "GUID")]
    pub guid: String,
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "LevelGUID")]
    pub level_guid: String,
    #[serde(rename = "Findings", default)]
    pub findings: Vec<Finding>,
    #[serde(rename = "Modules", default)]
    pub modules: Vec<Module>,
}

#[derive(Deserialize, Serialize)]
pub struct Module {
    #[serde(rename = "GUID")]
    pub guid: String,
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "LevelGUID")]
    pub level_guid: String,
    #[serde(rename = "Findings", default)]
    pub findings: Vec<Finding>,
}

#[derive(Deserialize, Serialize)]
pub struct Finding {
    #[serde(rename = "CategoryGUID")]
    pub category_guid: String,
    #[serde(rename = "PatternGUID")]
    pub pattern_guid: String,
    #[serde(rename = "Count")]
    pub count: i64,
}

/// A document being written: the head, then the applications as they come.
pub struct Writer {
    out: Vec<u8>,
    applications: usize,
}

impl Writer {
    pub fn start(head: &Head<'_>, capacity: usize) -> Result<Self, serde_json::Error> {
        let mut out = Vec::with_capacity(capacity);
        serde_json::to_writer(&mut out, head)?;
        // The head is an object; reopen it to append the applications.
        out.pop();
        out.extend_from_slice(b",\"Applications\":[");
        Ok(Self { out, applications: 0 })
    }

    pub fn application(&mut self, application: &Application) -> Result<(), serde_json::Error> {
        if self.applications > 0 {
            self.out.push(b',');
        }
        serde_json::to_writer(&mut self.out, application)?;
        self.applications += 1;
        Ok(())
    }

    /// The bytes written so far.
    pub fn len(&self) -> usize {
        self.out.len()
    }

    pub fn is_empty(&self) -> bool {
        self.out.is_empty()
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.out.extend_from_slice(b"]}");
        self.out
    }
}

/// Why a served snapshot could not be written back as a document. Only a bug can cause it:
/// the pieces read here were rendered by this program from a snapshot that passed every check.
#[derive(Debug)]
pub struct ExportError {
    pub piece: &'static str,
    pub reason: String,
}

impl std::fmt::Display for ExportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot render the {} of the snapshot as a document: {}", self.piece, self.reason)
    }
}

impl std::error::Error for ExportError {}

#[derive(Deserialize)]
struct LevelsAnswer {
    #[serde(rename = "Levels")]
    levels: Vec<Named>,
}

#[derive(Deserialize)]
struct CategoriesAnswer {
    #[serde(rename = "Categories")]
    categories: Vec<Category>,
}

#[derive(Deserialize)]
struct TeamsAnswer {
    #[serde(rename = "Teams")]
    teams: Vec<Team>,
}

/// The snapshot as a document, from what it serves: its answers are the document's pieces in
/// serving order with identifiers as declared, so the result depends only on the data, not
/// on how the imported file was laid out (whitespace, field order, omitted empty lists,
/// escapes, fractions of a second beyond milliseconds).
pub fn export(snapshot: &Snapshot) -> Result<Vec<u8>, ExportError> {
    fn read<'a, T: Deserialize<'a>>(
        piece: &'static str,
        bytes: &'a [u8],
    ) -> Result<T, ExportError> {
        serde_json::from_slice(bytes).map_err(|e| ExportError { piece, reason: e.to_string() })
    }
    let written = |piece: &'static str| {
        move |e: serde_json::Error| ExportError { piece, reason: e.to_string() }
    };
    let levels: LevelsAnswer = read("levels", snapshot.levels())?;
    let categories: CategoriesAnswer = read("categories", snapshot.categories())?;
    let teams: TeamsAnswer = read("teams", snapshot.teams())?;
    let last_analyzed_on = humantime::format_rfc3339_millis(snapshot.analyzed_on()).to_string();
    let head = Head {
        format_version: FORMAT_VERSION,
        last_analyzed_on: &last_analyzed_on,
        levels: &levels.levels,
        categories: &categories.categories,
        teams: &teams.teams,
    };
    let capacity = snapshot.stats().rendered_bytes;
    let mut writer = Writer::start(&head, capacity).map_err(written("head"))?;
    // A piece that does not decompress stops the export; the error from the closure names it.
    let mut failed = None;
    let walked = snapshot.each_application(|bytes| {
        let outcome = read::<Application>("applications", bytes)
            .and_then(|app| writer.application(&app).map_err(written("applications")));
        outcome.map_err(|e| {
            failed = Some(e);
            crate::gzip::Corrupt("the export stopped")
        })
    });
    match (walked, failed) {
        (_, Some(e)) => Err(e),
        (Err(corrupt), None) => Err(ExportError {
            piece: "applications",
            reason: format!("a stored application is damaged: {corrupt}"),
        }),
        (Ok(()), None) => Ok(writer.finish()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{Date, load};

    #[test]
    fn an_export_loads_back_to_the_same_export() {
        let sample = include_bytes!("../../examples/snapshot-2024-05-14.json");
        let date = Date::parse("2024-05-14").unwrap();
        let first = export(&load(sample, date, "CODE").unwrap()).unwrap();
        assert!(first.starts_with(b"{\"FormatVersion\":1,\"LastAnalyzedOn\":\""), "{first:?}");
        let second = export(&load(&first, date, "OTHER").unwrap()).unwrap();
        assert_eq!(String::from_utf8(first).unwrap(), String::from_utf8(second).unwrap());
    }

    #[test]
    fn the_layout_of_the_file_does_not_show_in_the_export() {
        let date = Date::parse("2024-05-14").unwrap();
        let spread = r#"{ "Applications": [ {"Name": "b\u00e9", "GUID": "A", "LevelGUID": "l"} ],
            "Levels": [{"GUID": "L", "Name": "Low"}], "Categories": [],
            "LastAnalyzedOn": "2024-05-14T06:00:00.5Z" }"#;
        let exported = export(&load(spread.as_bytes(), date, "C").unwrap()).unwrap();
        assert_eq!(
            String::from_utf8(exported).unwrap(),
            "{\"FormatVersion\":1,\"LastAnalyzedOn\":\"2024-05-14T06:00:00.500Z\",\
             \"Levels\":[{\"GUID\":\"L\",\"Name\":\"Low\"}],\"Categories\":[],\"Teams\":[],\
             \"Applications\":[{\"GUID\":\"A\",\"Name\":\"bé\",\"LevelGUID\":\"L\",\
             \"Findings\":[],\"Modules\":[]}]}"
        );
    }
}
