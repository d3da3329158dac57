//! The snapshot file format: what `serde` reads, field for field (see docs/snapshot-format.md).
//!
//! The names and nesting are the API's own (`GUID`, `LevelGUID`, `Findings`, …), so a snapshot
//! reads like the union of the API's answers and an export from the hosted service is one
//! reshuffle away. Unknown fields are errors: a misspelt optional field (`Finding` for
//! `Findings`) would otherwise drop data without a word. Strings borrow from the input where
//! they hold no escapes, which keeps a 400,000-finding load from making 800,000 allocations.
//!
//! The `#[serde(skip)]` fields are not in the file: [`super::check`] fills them with what the
//! references resolved to, so rendering needs no second lookup.

use std::borrow::Cow;

use serde::Deserialize;

/// The one format version this build reads.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotFile<'a> {
    /// Optional; when present it must be [`FORMAT_VERSION`].
    #[serde(rename = "FormatVersion", default)]
    pub format_version: Option<u32>,
    #[serde(rename = "LastAnalyzedOn", borrow)]
    pub last_analyzed_on: Cow<'a, str>,
    #[serde(rename = "Levels", borrow)]
    pub levels: Vec<Named<'a>>,
    #[serde(rename = "Categories", borrow)]
    pub categories: Vec<Category<'a>>,
    #[serde(rename = "Teams", default, borrow)]
    pub teams: Vec<Team<'a>>,
    #[serde(rename = "Applications", borrow)]
    pub applications: Vec<Application<'a>>,
}

/// A level or a pattern: the file gives both as just a GUID and a name.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Named<'a> {
    #[serde(rename = "GUID", borrow)]
    pub guid: Cow<'a, str>,
    #[serde(rename = "Name", borrow)]
    pub name: Cow<'a, str>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Category<'a> {
    #[serde(rename = "GUID", borrow)]
    pub guid: Cow<'a, str>,
    #[serde(rename = "Name", borrow)]
    pub name: Cow<'a, str>,
    #[serde(rename = "Patterns", default, borrow)]
    pub patterns: Vec<Named<'a>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Team<'a> {
    #[serde(rename = "ExternalId", borrow)]
    pub external_id: Cow<'a, str>,
    #[serde(rename = "Name", borrow)]
    pub name: Cow<'a, str>,
    #[serde(rename = "Applications", default, borrow)]
    pub applications: Vec<TeamApplication<'a>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamApplication<'a> {
    #[serde(rename = "GUID", borrow)]
    pub guid: Cow<'a, str>,
    /// Index into `SnapshotFile::applications`.
    #[serde(skip)]
    pub app: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Application<'a> {
    #[serde(rename = "GUID", borrow)]
    pub guid: Cow<'a, str>,
    #[serde(rename = "Name", borrow)]
    pub name: Cow<'a, str>,
    #[serde(rename = "LevelGUID", borrow)]
    pub level_guid: Cow<'a, str>,
    #[serde(rename = "Findings", default, borrow)]
    pub findings: Vec<Finding<'a>>,
    #[serde(rename = "Modules", default, borrow)]
    pub modules: Vec<Module<'a>>,
    /// Index into `SnapshotFile::levels`.
    #[serde(skip)]
    pub level: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Module<'a> {
    #[serde(rename = "GUID", borrow)]
    pub guid: Cow<'a, str>,
    #[serde(rename = "Name", borrow)]
    pub name: Cow<'a, str>,
    #[serde(rename = "LevelGUID", borrow)]
    pub level_guid: Cow<'a, str>,
    #[serde(rename = "Findings", default, borrow)]
    pub findings: Vec<Finding<'a>>,
    #[serde(skip)]
    pub level: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Finding<'a> {
    #[serde(rename = "CategoryGUID", borrow)]
    pub category_guid: Cow<'a, str>,
    #[serde(rename = "PatternGUID", borrow)]
    pub pattern_guid: Cow<'a, str>,
    /// Signed in the file so that a negative count is reported as one, not as a type error.
    #[serde(rename = "Count")]
    pub count: i64,
    /// (category index, pattern index within it): where the pattern is in `Categories`.
    #[serde(skip)]
    pub pattern: (u32, u32),
}
