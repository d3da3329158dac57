//! The piece model: what a date is made of, each piece addressed by its content.
//!
//! A date is its applications in serving order. Each application is an [`AppPiece`]: the
//! SHA-256 of its JSON (its key), what the filters need to know of it ([`AppMeta`]), and its
//! JSON compressed alone as a [`gzip`] segment, served as is to a client that accepts gzip.
//! Runs of [`RUN_APPS`] applications are compressed together too ([`RunPiece`]), keyed by their
//! members' keys, since a page that covers a run compresses better as one; the level and
//! category lists ([`Items`]) and the teams ([`TeamsPiece`]) are keyed by their bytes. Because a
//! key says what the bytes are, a piece is the same whoever holds it: the store keeps it once
//! for every date that names it, and a cache may keep it without knowing which dates do.
//!
//! [`codec`] lays the pieces out as the store keeps them, [`record`] the records of a date,
//! and [`build`] makes the pieces of a rendered date, compressing only what is not stored.

pub mod build;
pub mod codec;
pub mod record;

use std::ops::Range;
use std::sync::Arc;

use crate::gzip::{self, Compressed};

/// A SHA-256: the address of a stored piece.
pub type Digest = [u8; 32];

pub fn sha256(bytes: &[u8]) -> Digest {
    let mut out = [0u8; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
    out
}

/// Applications per compressed run. Compressed alone, an application of a few KiB shrinks
/// 3-4x (the sample's: 27,664 bytes -> 7,169 for its 12); in runs of ten the repeated GUIDs
/// and keys of its neighbours are in the window too. Ten divides the page sizes clients use
/// (10, 20, 50, 100, 200), so a client walking pages from offset 0 only ever gets runs.
pub const RUN_APPS: usize = 10;

/// The key of a run: the SHA-256 of its members' keys, so a run is stored once for as long
/// as the same applications sit together in serving order.
pub fn run_key(members: &[Digest]) -> Digest {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    context.update(b"run:");
    members.iter().for_each(|member| context.update(member));
    let mut out = [0u8; 32];
    out.copy_from_slice(context.finish().as_ref());
    out
}

/// The keys of the runs that applications with these keys form, in serving order.
pub fn run_keys(apps: &[Digest]) -> Vec<Digest> {
    apps.chunks(RUN_APPS).map(run_key).collect()
}

/// What serving needs to know of an application besides its bytes: where its module list
/// starts, where each module is, and the identifiers the filters look up (lower-case).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppMeta {
    pub guid: Box<str>,
    /// Just past `"Modules":[`: the head of an answer that keeps only some modules.
    pub modules_at: u32,
    pub modules: Box<[ModuleMeta]>,
    /// `PatternFinding` entries, the application's and its modules'.
    pub findings: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleMeta {
    /// The module's object within the application's.
    pub span: Range<u32>,
    pub guid: Box<str>,
}

/// One application as stored and served: its compressed JSON and its index entries.
#[derive(Debug, PartialEq, Eq)]
pub struct AppPiece {
    /// SHA-256 of the plaintext JSON.
    pub hash: Digest,
    pub meta: AppMeta,
    pub compressed: Compressed,
}

/// Ten applications (fewer at the end) with the commas between them, compressed together.
#[derive(Debug, PartialEq, Eq)]
pub struct RunPiece {
    pub key: Digest,
    pub compressed: Compressed,
}

/// A stored list of levels or categories (its items), by the SHA-256 of its bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct Items {
    pub hash: Digest,
    pub json: Box<[u8]>,
}

/// The stored teams, by the SHA-256 of their encoding.
#[derive(Debug, PartialEq, Eq)]
pub struct TeamsPiece {
    pub hash: Digest,
    pub teams: Teams,
}

/// The teams rendered: each team's object back to back, and its lower-case `ExternalId`.
/// Every span is within `json` (checked where it is made), so each team's object is there.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Teams {
    json: Box<[u8]>,
    spans: Box<[Range<u32>]>,
    ids: Box<[Box<str>]>,
}

/// Teams whose spans do not fit their bytes, or whose lists differ in length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadSpans;

impl Teams {
    pub fn new(
        json: Box<[u8]>,
        spans: Box<[Range<u32>]>,
        ids: Box<[Box<str>]>,
    ) -> Result<Self, BadSpans> {
        let fits = |s: &Range<u32>| s.start <= s.end && s.end as usize <= json.len();
        if spans.len() != ids.len() || !spans.iter().all(fits) {
            return Err(BadSpans);
        }
        Ok(Self { json, spans, ids })
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Team `position`'s object.
    pub fn object(&self, position: usize) -> Option<&[u8]> {
        let span = self.spans.get(position)?;
        // Within `json`: checked by `new`, the only way to make one.
        Some(&self.json[span.start as usize..span.end as usize])
    }

    /// Each team's object, in serving order.
    pub fn objects(&self) -> impl Iterator<Item = &[u8]> {
        (0..self.len()).filter_map(|position| self.object(position))
    }

    /// Lower-case `ExternalId`s, in serving order.
    pub fn ids(&self) -> &[Box<str>] {
        &self.ids
    }

    pub fn spans(&self) -> &[Range<u32>] {
        &self.spans
    }

    /// Every team's object, back to back.
    pub fn json(&self) -> &[u8] {
        &self.json
    }
}

/// Sizes, for the admin port's listing and the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub applications: usize,
    pub modules: usize,
    /// `PatternFinding` entries, application and module level together.
    pub findings: usize,
    /// The size of the file it was imported from.
    pub file_bytes: usize,
    /// The size of its JSON, every application and whole answer.
    pub rendered_bytes: usize,
    /// The size of its compressed forms (gzip members and deflate segments).
    pub compressed_bytes: usize,
}

/// A date's pieces, shared by reference.
pub struct Pieces {
    pub levels: Arc<Items>,
    pub categories: Arc<Items>,
    pub teams: Arc<TeamsPiece>,
    pub apps: Vec<Arc<AppPiece>>,
    pub runs: Vec<Arc<RunPiece>>,
}

impl Pieces {
    /// What the compressed forms of the applications and runs take.
    pub fn compressed_bytes(&self) -> usize {
        self.apps.iter().map(|a| a.compressed.memory_bytes()).sum::<usize>()
            + self.runs.iter().map(|r| r.compressed.memory_bytes()).sum::<usize>()
    }
}

/// Compresses pieces for the store: each alone, on up to `threads` threads.
pub fn compress_each(pieces: &[Vec<&[u8]>], threads: usize) -> Vec<Compressed> {
    gzip::compress_each(pieces, gzip::LOAD_LEVEL, threads)
}
