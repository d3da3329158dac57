//! From a rendered date to its pieces, compressing only what the store does not hold.
//!
//! Each application is keyed by the SHA-256 of its JSON; `stored` says, for a list of keys,
//! which the store holds (with their compressed bytes), and only the others are compressed, on
//! every core. The history store calls this inside the write transaction that commits the date,
//! with `stored` reading that transaction's tables: which pieces are new is decided by what is
//! committed, never by what some reader happens to hold in memory. A day on which 1% of the
//! applications changed compresses those and the runs they sit in, not the other 99%.
//! `snapshot::load`, which has no store, says nothing is stored and compresses everything.

use std::sync::Arc;
use std::time::SystemTime;

use super::codec::{self, Damaged};
use super::record::{DatePieces, Header, hex, unix_ms};
use super::{AppPiece, Digest, Items, Pieces, RUN_APPS, RunPiece, TeamsPiece, run_keys, sha256};
use crate::gzip::{self, Compressed};
use crate::snapshot::render::Rendered;

/// Which pieces of a kind the store holds: for each key asked, its compressed bytes, or `None`.
pub type Stored<'a, E> = &'a mut dyn FnMut(&[Digest]) -> Result<Vec<Option<Compressed>>, E>;

/// A date ready to be stored and served.
pub struct Built {
    pub analyzed_on: SystemTime,
    pub file_bytes: u64,
    pub file_sha256: Digest,
    pub pieces: Pieces,
    /// Each application's JSON, in serving order: the newest date keeps it all.
    pub plain: Box<[Arc<[u8]>]>,
    pub header: Header,
    /// The date's record: its applications' keys and every piece's stored size.
    pub date_pieces: DatePieces,
    /// The pieces the store did not hold.
    pub new_apps: Vec<Arc<AppPiece>>,
    pub new_runs: Vec<Arc<RunPiece>>,
    /// The level, category and team lists, by key (stored again if present: a few KiB).
    pub lists: Vec<(Digest, Vec<u8>)>,
}

/// Why a date could not be built.
#[derive(Debug)]
pub enum BuildError<E> {
    /// The store could not say what it holds.
    Stored(E),
    /// A piece cannot be laid out for the store (a length past its field).
    Layout(Damaged),
}

pub fn build<E>(
    rendered: Rendered,
    file_sha256: Digest,
    stored_apps: Stored<'_, E>,
    stored_runs: Stored<'_, E>,
) -> Result<Built, BuildError<E>> {
    let Rendered { analyzed_on, file_bytes, levels, categories, teams, apps } = rendered;
    let mut keys = Vec::with_capacity(apps.len());
    let (plain, metas): (Vec<Arc<[u8]>>, Vec<_>) = apps
        .into_iter()
        .map(|app| {
            keys.push(app.key);
            (app.plain, app.meta)
        })
        .unzip();
    let threads = threads(plain.iter().map(|p| p.len()).sum());

    let known = stored_apps(&keys).map_err(BuildError::Stored)?;
    if known.len() != keys.len() {
        return Err(lost("application"));
    }
    let known = sound(known, |i| vec![&*plain[i]], threads);
    let to_compress = missing(&known).map(|i| vec![&*plain[i]]).collect::<Vec<_>>();
    let mut compressed = gzip::compress_each(&to_compress, gzip::LOAD_LEVEL, threads).into_iter();
    let mut new_apps = Vec::with_capacity(to_compress.len());
    let mut pieces_apps = Vec::with_capacity(keys.len());
    for ((key, meta), known) in keys.iter().zip(metas).zip(known) {
        // `compress_each` gives one result per piece, in order: one per `None` here.
        let (is_new, compressed) = match known {
            Some(stored) => (false, Some(stored)),
            None => (true, compressed.next()),
        };
        let compressed = compressed.ok_or_else(|| lost("application"))?;
        let piece = Arc::new(AppPiece { hash: *key, meta, compressed });
        if is_new {
            new_apps.push(Arc::clone(&piece));
        }
        pieces_apps.push(piece);
    }

    let run_keys = run_keys(&keys);
    let runs_plain: Vec<Vec<&[u8]>> = plain.chunks(RUN_APPS).map(joined).collect();
    let known = stored_runs(&run_keys).map_err(BuildError::Stored)?;
    if known.len() != run_keys.len() {
        return Err(lost("run"));
    }
    let known = sound(known, |r| runs_plain[r].clone(), threads);
    let to_compress = missing(&known).map(|r| runs_plain[r].clone()).collect::<Vec<_>>();
    let mut compressed = gzip::compress_each(&to_compress, gzip::LOAD_LEVEL, threads).into_iter();
    let mut new_runs = Vec::with_capacity(to_compress.len());
    let mut pieces_runs = Vec::with_capacity(run_keys.len());
    for (key, known) in run_keys.iter().zip(known) {
        let (is_new, compressed) = match known {
            Some(stored) => (false, Some(stored)),
            None => (true, compressed.next()),
        };
        let compressed = compressed.ok_or_else(|| lost("run"))?;
        let run = Arc::new(RunPiece { key: *key, compressed });
        if is_new {
            new_runs.push(Arc::clone(&run));
        }
        pieces_runs.push(run);
    }

    let levels = Arc::new(Items { hash: sha256(&levels), json: levels });
    let categories = Arc::new(Items { hash: sha256(&categories), json: categories });
    let teams_bytes = codec::encode_teams(&teams).map_err(BuildError::Layout)?;
    let teams = Arc::new(TeamsPiece { hash: sha256(&teams_bytes), teams });
    let lists_bytes =
        [levels.json.len(), categories.json.len(), teams_bytes.len()].map(|n| n as u64);
    let lists = vec![
        (levels.hash, levels.json.to_vec()),
        (categories.hash, categories.json.to_vec()),
        (teams.hash, teams_bytes),
    ];
    let sizes = pieces_apps.iter().map(|a| codec::app_len(a)).collect::<Result<_, _>>();
    let run_sizes = pieces_runs.iter().map(|r| codec::run_len(r)).collect::<Result<_, _>>();
    let date_pieces = DatePieces {
        keys,
        sizes: sizes.map_err(BuildError::Layout)?,
        run_sizes: run_sizes.map_err(BuildError::Layout)?,
    };
    let pieces = Pieces { levels, categories, teams, apps: pieces_apps, runs: pieces_runs };
    let app_plain: usize = plain.iter().map(|p| p.len()).sum();
    let header = Header {
        analyzed_on_ms: unix_ms(analyzed_on),
        file_bytes,
        file_sha256: hex(&file_sha256),
        levels: hex(&pieces.levels.hash),
        categories: hex(&pieces.categories.hash),
        teams: hex(&pieces.teams.hash),
        applications: pieces.apps.len() as u64,
        modules: pieces.apps.iter().map(|a| a.meta.modules.len() as u64).sum(),
        findings: pieces.apps.iter().map(|a| u64::from(a.meta.findings)).sum(),
        rendered_bytes: (app_plain
            + pieces.levels.json.len()
            + pieces.categories.json.len()
            + pieces.teams.teams.json().len()) as u64,
        compressed_bytes: pieces.compressed_bytes() as u64,
        lists_bytes,
        // The store says when it arrived; the data alone cannot.
        arrival: None,
    };
    Ok(Built {
        analyzed_on,
        file_bytes,
        file_sha256,
        pieces,
        plain: plain.into(),
        header,
        date_pieces,
        new_apps,
        new_runs,
        lists,
    })
}

/// The stored pieces that decompress to exactly the bytes being imported (`parts` of each
/// position); a damaged one counts as not stored, and is written again.
fn sound<'p>(
    known: Vec<Option<Compressed>>,
    parts: impl Fn(usize) -> Vec<&'p [u8]>,
    threads: usize,
) -> Vec<Option<Compressed>> {
    let stored: Vec<usize> =
        known.iter().enumerate().filter(|(_, k)| k.is_some()).map(|(i, _)| i).collect();
    let checks: Vec<(&Compressed, Vec<&[u8]>)> =
        stored.iter().filter_map(|&i| Some((known[i].as_ref()?, parts(i)))).collect();
    let verdicts = gzip::each_inflates_to(&checks, threads);
    drop(checks);
    let mut known = known;
    for (&i, sound) in stored.iter().zip(verdicts) {
        if !sound {
            log::warn!("a stored piece does not give its bytes back: it is written again");
            known[i] = None;
        }
    }
    known
}

/// The positions the store holds nothing for.
fn missing(known: &[Option<Compressed>]) -> impl Iterator<Item = usize> + '_ {
    known.iter().enumerate().filter(|(_, k)| k.is_none()).map(|(i, _)| i)
}

/// A piece left without its bytes: the store and the compressor each give one answer per key
/// asked, so only a bug gets here, and the date is not stored rather than stored short.
fn lost<E>(what: &str) -> BuildError<E> {
    BuildError::Layout(Damaged(format!(
        "an {what} was left without bytes (a bug: please report it)"
    )))
}

impl<E> BuildError<E> {
    pub fn map<F>(self, f: impl FnOnce(E) -> F) -> BuildError<F> {
        match self {
            Self::Stored(e) => BuildError::Stored(f(e)),
            Self::Layout(e) => BuildError::Layout(e),
        }
    }
}

/// A run's applications with the commas a page puts between them.
fn joined(members: &[Arc<[u8]>]) -> Vec<&[u8]> {
    let mut parts = Vec::with_capacity(2 * members.len());
    for (i, app) in members.iter().enumerate() {
        if i > 0 {
            parts.push(b",".as_slice());
        }
        parts.push(&**app);
    }
    parts
}

/// Compressing is most of an import's time; the pieces are independent, so every core takes
/// a share of a large snapshot (imports never run on a request's thread). A small one is not
/// worth a thread.
fn threads(plain_bytes: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    (plain_bytes >> 22).clamp(1, cores)
}
