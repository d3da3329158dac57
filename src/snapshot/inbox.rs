//! The inbox, `<state_dir>/snapshots/`: snapshot files dropped there (by hand, or the whole
//! folder of a release that kept one file per date) are taken into the store at start and
//! reload, and removed only once all of them are in.
//!
//! This module reads the folder and its files; the store imports them one commit each, oldest
//! first, then has them removed: a crash half-way leaves every file, and the next start
//! resumes, skipping those the store holds already from the same bytes. A file that does not
//! load is logged, listed as refused and left untouched: it may be the operator's only copy.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::date::Date;
use super::piece::Digest;
use crate::durable;

/// The inbox folder, under the state folder.
pub const FOLDER: &str = "snapshots";

/// The snapshot files in the inbox, oldest first, after removing leftover temporary files.
pub fn scan(dir: &Path) -> io::Result<Vec<(Date, PathBuf)>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            log::warn!("snapshots: ignoring {}: not a snapshot file name", path.display());
            continue;
        };
        if durable::is_temp_name(name) {
            // Only a write interrupted by a crash leaves one (an older release's import).
            match fs::remove_file(&path) {
                Ok(()) => log::info!("snapshots: removed {name}, left by an interrupted write"),
                Err(e) => log::warn!("snapshots: cannot remove {}: {e}", path.display()),
            }
            continue;
        }
        match name.strip_suffix(".json").map(Date::parse) {
            Some(Ok(date)) if entry.file_type()?.is_file() => files.push((date, path)),
            _ => log::warn!(
                "snapshots: ignoring {}: snapshot files are named YYYY-MM-DD.json",
                path.display()
            ),
        }
    }
    files.sort();
    Ok(files)
}

/// The SHA-256 of a file's bytes, read as a stream: whether the store holds it already is
/// decided before it is parsed.
pub fn sha256(path: &Path) -> io::Result<Digest> {
    let mut file = fs::File::open(path)?;
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buffer = vec![0u8; 256 << 10];
    loop {
        match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => context.update(&buffer[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(context.finish().as_ref());
    Ok(out)
}

/// When the file was written: the release that kept files wrote it when it imported it, so
/// that is when the date arrived. A file system that keeps no modification time gives now.
pub fn written(path: &Path) -> SystemTime {
    fs::metadata(path).and_then(|m| m.modified()).unwrap_or_else(|_| SystemTime::now())
}

/// The path of `date`'s file in the inbox `dir`.
pub fn path_of(dir: &Path, date: Date) -> PathBuf {
    dir.join(format!("{date}.json"))
}
