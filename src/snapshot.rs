//! Snapshots: one analysis of the whole infrastructure per date, the data every API answer
//! comes from.
//!
//! A snapshot comes in as a document ([`format`]: read as it streams in, and written back by the
//! same module), is checked ([`check`]: every string bounded and clean, every reference
//! resolved, failing with the JSON path of the first problem) and rendered once into the API's
//! JSON ([`render`]), so that answering a request is copying bytes that already exist. A
//! snapshot that fails any stage is refused whole: there is no half-loaded data.
//!
//! What a date is made of is [`piece`]: each application addressed by its content, kept once
//! for every date that has it. [`history`] persists the dates and pieces in one redb database,
//! and only that; [`serve`] is what the API is answered from (the newest date held whole, older
//! dates through caches), asked from memory only or allowed to block; [`store`] makes the
//! changes (import, delete, prune, the take-over of [`inbox`] files), each one commit and one
//! swap of what is served. [`export`] writes a served date back as a document, and [`verify`]
//! checks the store offline (`snapshot verify`).
//!
//! Data flows down this list: no submodule reaches back up into this one, which only gathers
//! what the rest of the crate uses.

mod catalog;
mod check;
pub mod date;
mod export;
pub mod format;
pub mod history;
mod hold;
mod inbox;
pub mod piece;
pub mod render;
mod retention;
pub mod serve;
pub mod store;
pub mod verify;

#[cfg(test)]
mod crash_tests;
#[cfg(test)]
mod race_tests;
#[cfg(test)]
mod sample;

use std::sync::Arc;

pub use date::{Date, DateError};
pub use export::ExportError;
pub use format::{Invalid, Kind, Problem, json_path};
pub use piece::Stats;
pub use serve::{Mode, Pinned, ServeError, Whole};
pub use store::{Catalog, Snapshots};

/// Reads, checks and renders a snapshot for `date` from the bytes of a file, with every piece
/// compressed and all of it in memory, outside any store (for the benchmarks, the tests and the
/// fuzz target). `activation_code` goes into every `InfrastructureInfo` rendered.
pub fn load(bytes: &[u8], date: Date, activation_code: &str) -> Result<Pinned, LoadError> {
    let received = format::read(&mut &bytes[..]).map_err(LoadError::Read)?;
    let format::Received { mut document, sha256: file_sha256, bytes: file_bytes } = received;
    let analyzed_on = check::check(&mut document).map_err(LoadError::Invalid)?;
    let mut keep = |json: Vec<u8>| (piece::sha256(&json), Arc::<[u8]>::from(json));
    let rendered =
        render::render(document, analyzed_on, file_bytes, &mut keep).map_err(LoadError::Render)?;
    let mut nothing_stored =
        |keys: &[piece::Digest]| Ok::<_, std::convert::Infallible>(vec![None; keys.len()]);
    let mut no_runs =
        |keys: &[piece::Digest]| Ok::<_, std::convert::Infallible>(vec![None; keys.len()]);
    let built = piece::build::build(rendered, file_sha256, &mut nothing_stored, &mut no_runs)
        .map_err(|e| match e {
            piece::build::BuildError::Layout(e) => LoadError::Layout(e),
            piece::build::BuildError::Stored(never) => match never {},
        })?;
    let about = serve::About { date, analyzed_on, file_bytes, file_sha256 };
    Pinned::assemble(about, built.pieces, built.plain, activation_code).map_err(LoadError::Mismatch)
}

/// Runs every check of [`load`] without rendering: for `snapshot pull`, which validates what it
/// is about to send and has no use for the rendered answers, and for `snapshot verify`.
pub fn validate(bytes: &[u8]) -> Result<(), Invalid> {
    let mut received = format::read(&mut &bytes[..]).map_err(|e| match e {
        format::ReadError::Invalid(invalid) => invalid,
        // Bytes in memory always read; an empty slice is a document that ends at once.
        format::ReadError::Empty | format::ReadError::Body(_) => Invalid::at(
            "$".into(),
            Problem::Syntax { message: "EOF while parsing a value".into(), line: 1, column: 0 },
        ),
    })?;
    check::check(&mut received.document).map(|_| ())
}

/// Why [`load`] gave no snapshot.
#[derive(Debug)]
pub enum LoadError {
    Read(format::ReadError),
    Invalid(Invalid),
    Render(render::RenderError),
    Layout(piece::codec::Damaged),
    Mismatch(serve::Mismatch),
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Read(e) => e.fmt(f),
            Self::Invalid(e) => e.fmt(f),
            Self::Render(e) => e.fmt(f),
            Self::Layout(e) => e.fmt(f),
            Self::Mismatch(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for LoadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Read(e) => Some(e),
            Self::Invalid(e) => Some(e),
            Self::Render(e) => Some(e),
            Self::Layout(e) => Some(e),
            Self::Mismatch(e) => Some(e),
        }
    }
}
