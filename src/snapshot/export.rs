//! A served date written back as a document (`GET /snapshots/<date>`, `snapshot export`).
//!
//! The export is rendered from what the date serves, never copied from a file (a store that
//! keeps pieces by content keeps no files), through [`format::Writer`], the same writer as
//! `snapshot pull`: its bytes depend only on the data, so export, import, export gives the same
//! bytes. The newest date is written from memory. An older one is read in one transaction of
//! the store, which must still hold that version of it, each application decompressed as it is
//! written and never kept, so an export does not push out of the cache what requests use.

use std::fmt;

use serde::Deserialize;

use super::catalog::Entry;
use super::format::{Application, Category, FORMAT_VERSION, Head, Named, Team, Writer};
use super::history::tables::{self, APPS, PieceKind};
use super::history::{History, HistoryError};
use super::hold::{self, Holds};
use super::piece::codec::{self, Damaged};
use super::serve::{Pinned, ServeError};
use crate::gzip::Corrupt;

/// Why a served snapshot could not be written back as a document.
#[derive(Debug)]
pub enum ExportError {
    /// The store could not give the date (or the date changed while it was read).
    Read(ServeError),
    /// A stored application does not decompress.
    Corrupt(Corrupt),
    /// A piece does not read back as the document's: only a bug can cause it, the pieces being
    /// rendered by this program from a snapshot that passed every check.
    Render { piece: &'static str, source: serde_json::Error },
}

impl fmt::Display for ExportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Read(e) => e.fmt(f),
            Self::Corrupt(e) => write!(f, "a stored application is damaged: {e}"),
            Self::Render { piece, source } => {
                write!(f, "cannot render the {piece} of the snapshot as a document: {source}")
            }
        }
    }
}

impl std::error::Error for ExportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Read(e) => Some(e),
            Self::Corrupt(e) => Some(e),
            Self::Render { source, .. } => Some(source),
        }
    }
}

impl From<HistoryError> for ExportError {
    fn from(e: HistoryError) -> Self {
        Self::Read(ServeError::History(e))
    }
}

/// The newest date as a document, from memory.
pub fn newest(pinned: &Pinned, holds: &Holds) -> Result<Vec<u8>, ExportError> {
    let (levels, categories, teams) = pinned.lists();
    let stamp = humantime::format_rfc3339_millis(pinned.analyzed_on()).to_string();
    let mut writer = start(&stamp, levels, categories, teams.teams.objects())?;
    for (i, plain) in pinned.each_application().enumerate() {
        application(&mut writer, plain)?;
        if i == 0 {
            holds.at(hold::EXPORT_READ);
        }
    }
    Ok(writer.finish())
}

/// An older date as a document, read in one transaction that still holds `entry`'s version.
pub fn older(history: &History, entry: &Entry, holds: &Holds) -> Result<Vec<u8>, ExportError> {
    let date = entry.date;
    history.read(|reading| match reading.header(date)? {
        Some(header) if entry.describes(&header) => {
            let [levels, categories, teams] =
                header.list_keys().map_err(|e| HistoryError::damaged(date, e))?;
            let (levels, categories) =
                (reading.list(date, &levels)?, reading.list(date, &categories)?);
            let teams = codec::decode_teams(&reading.list(date, &teams)?)
                .map_err(|e| HistoryError::damaged(date, e))?;
            let stamp = humantime::format_rfc3339_millis(entry.analyzed_on).to_string();
            let mut writer = start(&stamp, &levels, &categories, teams.objects())?;
            let keys = reading
                .date_pieces(date)?
                .ok_or_else(|| {
                    HistoryError::damaged(date, Damaged("its application list is missing".into()))
                })?
                .keys;
            let table = reading.open(APPS)?;
            for (i, key) in keys.iter().enumerate() {
                let found = tables::pieces(
                    &table,
                    std::slice::from_ref(key),
                    reading.path,
                    tables::decode_app_segment,
                )
                .map_err(|e| e.at(date))?;
                let segment = tables::required(
                    found,
                    std::slice::from_ref(key),
                    date,
                    PieceKind::Application,
                )?;
                for segment in segment {
                    let plain = segment.inflate().map_err(ExportError::Corrupt)?;
                    application(&mut writer, &plain)?;
                }
                if i == 0 {
                    holds.at(hold::EXPORT_READ);
                }
            }
            Ok(writer.finish())
        }
        _ => Err(ExportError::Read(ServeError::Changed(date))),
    })
}

/// The document's head, from a date's list items (`{…},{…}`) and team objects.
fn start<'t>(
    last_analyzed_on: &str,
    levels: &[u8],
    categories: &[u8],
    teams: impl Iterator<Item = &'t [u8]>,
) -> Result<Writer, ExportError> {
    let levels: Vec<Named> = items("levels", levels)?;
    let categories: Vec<Category> = items("categories", categories)?;
    let teams = teams.map(|team| read("teams", team)).collect::<Result<Vec<Team>, _>>()?;
    let head = Head {
        format_version: FORMAT_VERSION,
        last_analyzed_on,
        levels: &levels,
        categories: &categories,
        teams: &teams,
    };
    Writer::start(&head, 1 << 20).map_err(|source| ExportError::Render { piece: "head", source })
}

/// One application's JSON, read back and written in the document's form.
fn application(writer: &mut Writer, plain: &[u8]) -> Result<(), ExportError> {
    let app: Application = read("applications", plain)?;
    writer.application(&app).map_err(|source| ExportError::Render { piece: "applications", source })
}

/// A list's items, `{…},{…}` without the brackets, read as the list.
fn items<T: for<'de> Deserialize<'de>>(
    piece: &'static str,
    items: &[u8],
) -> Result<Vec<T>, ExportError> {
    let list = [b"[".as_slice(), items, b"]"].concat();
    read(piece, &list)
}

fn read<'a, T: Deserialize<'a>>(piece: &'static str, bytes: &'a [u8]) -> Result<T, ExportError> {
    serde_json::from_slice(bytes).map_err(|source| ExportError::Render { piece, source })
}

#[cfg(test)]
mod tests {
    use crate::snapshot::hold::Holds;
    use crate::snapshot::{Date, load};

    #[test]
    fn an_export_loads_back_to_the_same_export() {
        let sample = include_bytes!("../../examples/snapshot-2024-05-14.json");
        let date = Date::parse("2024-05-14").unwrap();
        let first = super::newest(&load(sample, date, "CODE").unwrap(), &Holds::default()).unwrap();
        assert!(first.starts_with(b"{\"FormatVersion\":1,\"LastAnalyzedOn\":\""), "{first:?}");
        let second =
            super::newest(&load(&first, date, "OTHER").unwrap(), &Holds::default()).unwrap();
        assert_eq!(String::from_utf8(first).unwrap(), String::from_utf8(second).unwrap());
    }

    #[test]
    fn the_layout_of_the_file_does_not_show_in_the_export() {
        let date = Date::parse("2024-05-14").unwrap();
        let spread = r#"{ "Applications": [ {"Name": "b\u00e9", "GUID": "A", "LevelGUID": "l"} ],
            "Levels": [{"GUID": "L", "Name": "Low"}], "Categories": [],
            "LastAnalyzedOn": "2024-05-14T06:00:00.5Z" }"#;
        let exported =
            super::newest(&load(spread.as_bytes(), date, "C").unwrap(), &Holds::default()).unwrap();
        assert_eq!(
            String::from_utf8(exported).unwrap(),
            "{\"FormatVersion\":1,\"LastAnalyzedOn\":\"2024-05-14T06:00:00.500Z\",\
             \"Levels\":[{\"GUID\":\"L\",\"Name\":\"Low\"}],\"Categories\":[],\"Teams\":[],\
             \"Applications\":[{\"GUID\":\"A\",\"Name\":\"bé\",\"LevelGUID\":\"L\",\
             \"Findings\":[],\"Modules\":[]}]}"
        );
    }
}
