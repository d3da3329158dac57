//! The snapshot document (docs/snapshot-format.md), read and written in one place so the two
//! cannot drift.
//!
//! The fields are declared once, by [`document!`], and that one declaration is expanded twice:
//! in [`strict`], which refuses unknown fields (an import: a misspelt optional field, `Finding`
//! for `Findings`, would otherwise drop data without a word), and at this module's top, which
//! ignores them (`snapshot pull` reads the upstream's answers with these types, and the hosted
//! service may add fields). Both write the same bytes: the documented fields in the documented
//! order, every list even when empty.
//!
//! An import is read as it streams in ([`read`]): the first byte that cannot begin or continue
//! a snapshot ends it, so a body of zeros is refused at its first byte, whatever its length, and
//! nothing is buffered beyond what the parsed form holds. [`Writer`] writes a document with
//! `FormatVersion` first, compact, counts as plain integers and strings escaped only where
//! RFC 8259 requires: `snapshot pull` compares the digest of what it writes with the stored
//! file's to find that nothing changed, and `snapshot export` writes a served date back, so
//! export, import, export gives the same bytes.
//!
//! What the format allows in a string (its length, no control characters) is declared here,
//! beside the fields, and checked with every reference in [`super::check`].

mod id;
mod invalid;
mod read;

use serde::{Deserialize, Serialize};

pub use id::Id;
pub use invalid::{Invalid, Kind, Problem, echo};
pub use read::{ReadError, Received, json_path, read};

/// The one format version this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;

/// The longest identifier (`GUID`, `ExternalId` and every reference to one), in bytes of UTF-8.
/// A GUID is 36; LifeTime's team keys are GUIDs too, and an identity provider's key (an LDAP
/// distinguished name, say) fits in 256 with room to spare. Identifiers are looked up from query
/// strings on every request, so they stay short.
pub const MAX_IDENTIFIER_BYTES: usize = 256;
/// The longest `Name`, in bytes of UTF-8: OutSystems caps application and module names far
/// below it, and 1 KiB keeps a single name from making every answer that lists it large (a 50 MB
/// level name once made every `TechnicalDebt_Level` answer 52 MB).
pub const MAX_NAME_BYTES: usize = 1024;
/// The longest `LastAnalyzedOn`: an RFC 3339 timestamp with nanoseconds is 30 bytes.
pub const MAX_TIMESTAMP_BYTES: usize = 64;

/// Declares the document's items, field for field, with the attributes given to each struct.
macro_rules! document {
    ($(#[$each:meta])*) => {
        /// A level or a pattern: a GUID and a name.
        #[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize, Serialize)]
        $(#[$each])*
        pub struct Named {
            #[serde(rename = "GUID")]
            pub guid: Id,
            #[serde(rename = "Name")]
            pub name: String,
        }

        #[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize, Serialize)]
        $(#[$each])*
        pub struct Category {
            #[serde(rename = "GUID")]
            pub guid: Id,
            #[serde(rename = "Name")]
            pub name: String,
            #[serde(rename = "Patterns", default)]
            pub patterns: Vec<Named>,
        }

        #[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize, Serialize)]
        $(#[$each])*
        pub struct Team {
            #[serde(rename = "ExternalId")]
            pub external_id: Id,
            #[serde(rename = "Name")]
            pub name: String,
            #[serde(rename = "Applications", default)]
            pub applications: Vec<TeamApplication>,
        }

        #[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize, Serialize)]
        $(#[$each])*
        pub struct TeamApplication {
            #[serde(rename = "GUID")]
            pub guid: Id,
            /// Index into the document's applications, resolved by the check (not in the file).
            #[serde(skip)]
            pub app: u32,
        }

        #[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize, Serialize)]
        $(#[$each])*
        pub struct Application {
            #[serde(rename = "GUID")]
            pub guid: Id,
            #[serde(rename = "Name")]
            pub name: String,
            #[serde(rename = "LevelGUID")]
            pub level_guid: Id,
            #[serde(rename = "Findings", default)]
            pub findings: Vec<Finding>,
            #[serde(rename = "Modules", default)]
            pub modules: Vec<Module>,
            /// Index into the document's levels, resolved by the check.
            #[serde(skip)]
            pub level: u32,
        }

        #[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize, Serialize)]
        $(#[$each])*
        pub struct Module {
            #[serde(rename = "GUID")]
            pub guid: Id,
            #[serde(rename = "Name")]
            pub name: String,
            #[serde(rename = "LevelGUID")]
            pub level_guid: Id,
            #[serde(rename = "Findings", default)]
            pub findings: Vec<Finding>,
            #[serde(skip)]
            pub level: u32,
        }

        #[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize, Serialize)]
        $(#[$each])*
        pub struct Finding {
            #[serde(rename = "CategoryGUID")]
            pub category_guid: Id,
            #[serde(rename = "PatternGUID")]
            pub pattern_guid: Id,
            /// Signed in the file so that a negative count is reported as one, not as a type
            /// error.
            #[serde(rename = "Count")]
            pub count: i64,
            /// (category index, pattern index within it), resolved by the check.
            #[serde(skip)]
            pub pattern: (u32, u32),
        }
    };
}

document!();

/// The items as an import reads them: unknown fields refused.
pub mod strict {
    use serde::{Deserialize, Serialize};

    use super::Id;

    document!(#[serde(deny_unknown_fields)]);

    /// A whole document, as imported.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Document {
        /// Optional; when present it must be [`super::FORMAT_VERSION`].
        #[serde(rename = "FormatVersion", default)]
        pub format_version: Option<u32>,
        #[serde(rename = "LastAnalyzedOn")]
        pub last_analyzed_on: String,
        #[serde(rename = "Levels")]
        pub levels: Vec<Named>,
        #[serde(rename = "Categories")]
        pub categories: Vec<Category>,
        #[serde(rename = "Teams", default)]
        pub teams: Vec<Team>,
        #[serde(rename = "Applications")]
        pub applications: Vec<Application>,
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn head_of(levels: &[Named]) -> Head<'_> {
        Head {
            format_version: FORMAT_VERSION,
            last_analyzed_on: "2024-05-14T06:00:00.000Z",
            levels,
            categories: &[],
            teams: &[],
        }
    }

    #[test]
    fn what_the_writer_writes_the_strict_reader_reads_back_field_for_field() {
        let levels = [Named { guid: "L".into(), name: "Lo\"w".into() }];
        let app = Application {
            guid: "A".into(),
            name: "bé".into(),
            level_guid: "L".into(),
            findings: vec![Finding {
                category_guid: "C".into(),
                pattern_guid: "P".into(),
                count: 3,
                ..Finding::default()
            }],
            modules: vec![Module { guid: "M".into(), ..Module::default() }],
            ..Application::default()
        };
        let mut writer = Writer::start(&head_of(&levels), 0).unwrap();
        writer.application(&app).unwrap();
        let bytes = writer.finish();
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            "{\"FormatVersion\":1,\"LastAnalyzedOn\":\"2024-05-14T06:00:00.000Z\",\"Levels\":[{\
             \"GUID\":\"L\",\"Name\":\"Lo\\\"w\"}],\"Categories\":[],\"Teams\":[],\
             \"Applications\":[{\"GUID\":\"A\",\"Name\":\"bé\",\"LevelGUID\":\"L\",\"Findings\":\
             [{\"CategoryGUID\":\"C\",\"PatternGUID\":\"P\",\"Count\":3}],\"Modules\":[{\"GUID\":\
             \"M\",\"Name\":\"\",\"LevelGUID\":\"\",\"Findings\":[]}]}]}"
        );
        let read = read(&mut &bytes[..]).unwrap();
        assert_eq!(read.document.levels[0].name, "Lo\"w");
        let back = &read.document.applications[0];
        assert_eq!((back.guid.as_str(), back.name.as_str()), ("A", "bé"));
        assert_eq!(back.findings[0].count, 3);
        assert_eq!(back.modules[0].guid.as_str(), "M");
        assert_eq!(read.bytes, bytes.len() as u64);
    }

    #[test]
    fn the_lenient_items_ignore_unknown_fields_and_the_strict_ones_name_them() {
        let text = r#"{"GUID":"A","Name":"n","LevelGUID":"L","Owner":"x"}"#;
        let lenient: Application = serde_json::from_str(text).unwrap();
        assert_eq!(lenient.guid.as_str(), "A");
        let strict = serde_json::from_str::<strict::Application>(text).unwrap_err();
        assert!(strict.to_string().starts_with("unknown field `Owner`"), "{strict}");
    }
}
