//! From a rendered file to the pieces of a date, compressing only what is new.
//!
//! Each application is keyed by the SHA-256 of its JSON; the store is asked which keys it
//! already has, and only the others are compressed (on every core). A day on which 1% of the
//! applications changed compresses those and the runs they sit in, not the other 99%: that is
//! what keeps an import of a large snapshot within its two seconds. `snapshot::load`, which
//! has no store, passes "nothing known" and compresses everything.

use std::sync::Arc;

use super::Date;
use super::codec::{self, DatePieces, Header};
use super::render::Rendered;
use super::served::{
    AppPiece, Digest, Items, Parts, RUN_APPS, RunPiece, TeamsPiece, run_keys, sha256,
};
use crate::gzip;

/// A date ready to be stored and served.
pub struct Prepared {
    pub parts: Parts,
    /// Each application's JSON, in serving order: the newest date keeps it all.
    pub plain: Box<[Arc<[u8]>]>,
    pub header: Header,
    /// The date's record: its applications' keys and every piece's stored size.
    pub pieces: DatePieces,
    /// The pieces the store did not have.
    pub new_apps: Vec<Arc<AppPiece>>,
    pub new_runs: Vec<Arc<RunPiece>>,
    /// The level, category and team lists, by key (stored again if present: a few KiB).
    pub lists: Vec<(Digest, Vec<u8>)>,
}

/// What the store already holds, by key (`None` where it holds nothing).
pub type Known<'a, T, E> = &'a mut dyn FnMut(&[Digest]) -> Result<Vec<Option<Arc<T>>>, E>;

pub fn prepare<E>(
    rendered: Rendered,
    date: Date,
    file_sha256: Digest,
    known_apps: Known<'_, AppPiece, E>,
    known_runs: Known<'_, RunPiece, E>,
) -> Result<Prepared, E> {
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

    let known = known_apps(&keys)?;
    let missing: Vec<usize> =
        (0..keys.len()).filter(|&i| known.get(i).is_none_or(Option::is_none)).collect();
    let to_compress: Vec<Vec<&[u8]>> = missing.iter().map(|&i| vec![&*plain[i]]).collect();
    let mut compressed = gzip::compress_each(&to_compress, gzip::LOAD_LEVEL, threads).into_iter();
    let mut new_apps = Vec::with_capacity(missing.len());
    let mut apps = Vec::with_capacity(keys.len());
    for (i, (meta, known)) in
        metas.into_iter().zip(known.into_iter().chain(std::iter::repeat(None))).enumerate()
    {
        let piece = match known {
            Some(piece) => piece,
            None => {
                let compressed = compressed.next().unwrap_or_else(|| {
                    gzip::compress_each(&[vec![&*plain[i]]], gzip::LOAD_LEVEL, 1).remove(0)
                });
                let piece = Arc::new(AppPiece { hash: keys[i], meta, compressed });
                new_apps.push(Arc::clone(&piece));
                piece
            }
        };
        apps.push(piece);
    }

    let run_keys = run_keys(&keys);
    let known = known_runs(&run_keys)?;
    let missing: Vec<usize> =
        (0..run_keys.len()).filter(|&r| known.get(r).is_none_or(Option::is_none)).collect();
    let to_compress: Vec<Vec<&[u8]>> = missing.iter().map(|&r| joined(&plain, r)).collect();
    let mut compressed = gzip::compress_each(&to_compress, gzip::LOAD_LEVEL, threads).into_iter();
    let mut new_runs = Vec::with_capacity(missing.len());
    let mut runs = Vec::with_capacity(run_keys.len());
    for (r, known) in
        known.into_iter().chain(std::iter::repeat(None)).take(run_keys.len()).enumerate()
    {
        let run = match known {
            Some(run) => run,
            None => {
                let compressed = compressed.next().unwrap_or_else(|| {
                    gzip::compress_each(&[joined(&plain, r)], gzip::LOAD_LEVEL, 1).remove(0)
                });
                let run = Arc::new(RunPiece { key: run_keys[r], compressed });
                new_runs.push(Arc::clone(&run));
                run
            }
        };
        runs.push(run);
    }

    let levels = Arc::new(Items { hash: sha256(&levels), json: levels });
    let categories = Arc::new(Items { hash: sha256(&categories), json: categories });
    let teams_bytes = codec::encode_teams(&teams);
    let teams = Arc::new(TeamsPiece { hash: sha256(&teams_bytes), teams });
    let lists_bytes =
        [levels.json.len(), categories.json.len(), teams_bytes.len()].map(|n| n as u64);
    let lists = vec![
        (levels.hash, levels.json.to_vec()),
        (categories.hash, categories.json.to_vec()),
        (teams.hash, teams_bytes),
    ];
    let pieces = DatePieces {
        keys,
        sizes: apps.iter().map(|app| codec::app_len(app)).collect(),
        run_sizes: runs.iter().map(|run| codec::run_len(run)).collect(),
    };
    let app_plain: usize = plain.iter().map(|p| p.len()).sum();
    let header = Header {
        analyzed_on_ms: codec::unix_ms(analyzed_on),
        file_bytes: file_bytes as u64,
        file_sha256: codec::hex(&file_sha256),
        levels: codec::hex(&levels.hash),
        categories: codec::hex(&categories.hash),
        teams: codec::hex(&teams.hash),
        applications: apps.len() as u64,
        modules: apps.iter().map(|a| a.meta.modules.len() as u64).sum(),
        findings: apps.iter().map(|a| u64::from(a.meta.findings)).sum(),
        rendered_bytes: (app_plain
            + levels.json.len()
            + categories.json.len()
            + teams.teams.json.len()) as u64,
        compressed_bytes: (apps.iter().map(|a| a.compressed.memory_bytes()).sum::<usize>()
            + runs.iter().map(|r| r.compressed.memory_bytes()).sum::<usize>())
            as u64,
        lists_bytes,
        // The store says when it arrived; the data alone cannot.
        arrival: None,
    };
    let parts =
        Parts { date, analyzed_on, file_bytes, file_sha256, levels, categories, teams, apps, runs };
    Ok(Prepared { parts, plain: plain.into(), header, pieces, new_apps, new_runs, lists })
}

/// Run `r`'s applications with the commas a page puts between them.
fn joined(plain: &[Arc<[u8]>], r: usize) -> Vec<&[u8]> {
    let members =
        plain.get(r * RUN_APPS..((r + 1) * RUN_APPS).min(plain.len())).unwrap_or_default();
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
