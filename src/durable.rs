//! Durable replacement of a file: the one way any state file is written.
//!
//! The key store, the snapshots, the self-signed certificate and its key all change the same
//! way, so that a crash or a power loss at any instant leaves the old file or the new one, never
//! a torn, empty or missing one: write a temporary file in the same folder (so the rename cannot
//! cross a file system), fsync it, rename it over the target, then fsync the folder (so the
//! rename itself survives a power loss). The temporary file is removed on every error path, and
//! its name is hidden and unique (`.<name>.<pid>.<n>.tmp`), so two writers never share one and a
//! folder scan can tell a leftover of a crash from real data.
//!
//! [`Staged`] is the general form, for a writer that streams into the file and reads it back
//! before it commits (a snapshot import); [`write`] is the whole cycle for bytes in hand.
//!
//! A [`Disk`] is the same cycle with a hook before each step ([`Faults`]): the key store and the
//! usage file write through one, so a test can fail any step (create, write, fsync, rename,
//! folder fsync) with any error and check what is left, deterministically, instead of killing
//! a process after a tuned sleep. The real disk has no hook and costs nothing for it.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The suffix of every temporary file this module makes.
pub const TEMP_SUFFIX: &str = ".tmp";

/// Why a durable write did not happen, or happened without its last step.
#[derive(Debug)]
pub enum WriteError {
    /// Nothing changed: the target is as it was, and no temporary file is left.
    Io { step: &'static str, path: PathBuf, source: io::Error },
    /// The new file is in place, but the folder's fsync failed: a power loss could undo it.
    NotDurable { path: PathBuf, source: io::Error },
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { step, path, source } => {
                write!(f, "cannot {step} {}: {source}", path.display())
            }
            Self::NotDurable { path, source } => write!(
                f,
                "{} is in place, but its folder could not be fsync'd ({source}): a power loss \
                 could undo the change",
                path.display()
            ),
        }
    }
}

impl std::error::Error for WriteError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } | Self::NotDurable { source, .. } => Some(source),
        }
    }
}

/// The steps of a durable write, in order: where a [`Faults`] hook is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Create,
    Write,
    Fsync,
    Rename,
    FolderFsync,
}

impl Step {
    pub const ALL: [Self; 5] =
        [Self::Create, Self::Write, Self::Fsync, Self::Rename, Self::FolderFsync];
}

/// A hook asked before each step of a write through a [`Disk`]: an error it returns is the
/// step's error, as if the system call had failed (the step is not done). Tests use it to fail
/// each step in turn; the slow-disk benchmark build uses it to hold an fsync.
pub trait Faults: Send + Sync {
    fn before(&self, step: Step, target: &Path) -> io::Result<()>;
}

/// Where durable writes go: the real disk, or the real disk behind a [`Faults`] hook.
#[derive(Clone, Default)]
pub struct Disk {
    faults: Option<Arc<dyn Faults>>,
}

impl fmt::Debug for Disk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.faults.is_some() { "Disk(hooked)" } else { "Disk" })
    }
}

impl Disk {
    /// The disk with `faults` asked before every step.
    pub fn with_faults(faults: Arc<dyn Faults>) -> Self {
        Self { faults: Some(faults) }
    }

    /// Replaces `path` by `contents` (with `mode`), durably, or leaves it as it was.
    pub fn write(&self, path: &Path, contents: &[u8], mode: u32) -> Result<(), WriteError> {
        let mut staged = Staged::create_on(self.clone(), path, mode)?;
        staged.write_all(contents)?;
        staged.commit()
    }

    fn before(&self, step: Step, target: &Path) -> io::Result<()> {
        match &self.faults {
            Some(faults) => faults.before(step, target),
            None => Ok(()),
        }
    }
}

/// Replaces `path` by `contents` (with `mode`), durably, or leaves it as it was.
pub fn write(path: &Path, contents: &[u8], mode: u32) -> Result<(), WriteError> {
    Disk::default().write(path, contents, mode)
}

/// Removes `path` and fsyncs its folder. `Ok(false)`: there was no such file.
pub fn remove(path: &Path) -> Result<bool, WriteError> {
    match fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(source) => {
            return Err(WriteError::Io { step: "remove", path: path.to_owned(), source });
        }
    }
    sync_folder_of(path)
        .map_err(|source| WriteError::NotDurable { path: path.to_owned(), source })?;
    Ok(true)
}

/// Whether `name` is one of our temporary files: only a crash mid-write leaves one behind.
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(TEMP_SUFFIX)
}

/// Removes what a crash left of earlier writes of `path` (its temporary files). The target
/// itself is untouched: it is still the old, whole file. Returns how many were removed.
pub fn remove_leftovers(path: &Path) -> usize {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return 0;
    };
    let prefix = format!(".{name}.");
    let Ok(entries) = fs::read_dir(dir) else { return 0 };
    let mut removed = 0;
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(file_name) = file_name.to_str() else { continue };
        if file_name.starts_with(&prefix)
            && is_temp_name(file_name)
            && fs::remove_file(entry.path()).is_ok()
        {
            removed += 1;
        }
    }
    removed
}

/// A new version of a file, written beside it and not yet in place. Dropped without
/// [`Staged::commit`], it removes itself and the target stays as it was.
pub struct Staged {
    disk: Disk,
    target: PathBuf,
    temp: PathBuf,
    file: Option<File>,
}

impl Staged {
    /// Creates the temporary file (mode `mode`, never an existing file) beside `target`.
    pub fn create(target: &Path, mode: u32) -> Result<Self, WriteError> {
        Self::create_on(Disk::default(), target, mode)
    }

    /// [`Staged::create`] through `disk`.
    pub fn create_on(disk: Disk, target: &Path, mode: u32) -> Result<Self, WriteError> {
        let temp = temp_path(target);
        let file = disk
            .before(Step::Create, target)
            .and_then(|()| OpenOptions::new().write(true).create_new(true).mode(mode).open(&temp))
            .map_err(|source| WriteError::Io { step: "create", path: temp.clone(), source })?;
        Ok(Self { disk, target: target.to_owned(), temp, file: Some(file) })
    }

    /// The temporary file's path (to read back what was written before committing).
    pub fn temp_path(&self) -> &Path {
        &self.temp
    }

    pub fn write_all(&mut self, bytes: &[u8]) -> Result<(), WriteError> {
        let Some(file) = self.file.as_mut() else { return Ok(()) };
        let written =
            self.disk.before(Step::Write, &self.target).and_then(|()| file.write_all(bytes));
        written.map_err(|source| self.failed("write", source))
    }

    /// Flushes the file's contents to disk. [`Staged::commit`] does it too; a writer that
    /// reads the file back first calls it so that what it reads is what will survive.
    pub fn sync(&mut self) -> Result<(), WriteError> {
        let Some(file) = self.file.take() else { return Ok(()) };
        let synced = self.disk.before(Step::Fsync, &self.target).and_then(|()| file.sync_all());
        synced.map_err(|source| self.failed("fsync", source))
    }

    /// Puts the new version in place: fsync, rename over the target, fsync the folder.
    pub fn commit(mut self) -> Result<(), WriteError> {
        self.sync()?;
        let renamed = self
            .disk
            .before(Step::Rename, &self.target)
            .and_then(|()| fs::rename(&self.temp, &self.target));
        if let Err(source) = renamed {
            let step = "rename into place";
            return Err(WriteError::Io { step, path: self.target.clone(), source });
        }
        // In place: nothing left for Drop to remove.
        self.temp = PathBuf::new();
        self.disk
            .before(Step::FolderFsync, &self.target)
            .and_then(|()| sync_folder_of(&self.target))
            .map_err(|source| WriteError::NotDurable { path: self.target.clone(), source })
    }

    fn failed(&self, step: &'static str, source: io::Error) -> WriteError {
        WriteError::Io { step, path: self.temp.clone(), source }
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.temp.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

fn temp_path(target: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = target.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    target.with_file_name(format!(".{name}.{}.{n}{TEMP_SUFFIX}", std::process::id()))
}

fn sync_folder_of(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir).and_then(|dir| dir.sync_all())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_write_replaces_the_file_with_its_mode_and_leaves_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.ron");
        write(&path, b"one", 0o600).unwrap();
        write(&path, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(names(dir.path()), ["state.ron"]);
    }

    #[test]
    fn an_abandoned_stage_removes_itself_and_the_target_is_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.ron");
        write(&path, b"old", 0o600).unwrap();
        let mut staged = Staged::create(&path, 0o600).unwrap();
        staged.write_all(b"half").unwrap();
        assert_eq!(names(dir.path()).len(), 2, "the temporary file exists while staged");
        drop(staged);
        assert_eq!(names(dir.path()), ["state.ron"]);
        assert_eq!(fs::read(&path).unwrap(), b"old");
    }

    #[test]
    fn a_failed_rename_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        // A folder where the file should go: the rename fails.
        let path = dir.path().join("taken");
        fs::create_dir(path.join("x").parent().unwrap()).unwrap();
        fs::write(path.join("x"), b"").unwrap();
        let err = write(&path, b"new", 0o600).unwrap_err();
        assert!(matches!(err, WriteError::Io { step: "rename into place", .. }), "{err}");
        assert_eq!(names(dir.path()), ["taken"]);
    }

    #[test]
    fn leftovers_of_one_file_are_removed_and_others_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.ron");
        for name in [".key.ron.1.0.tmp", ".key.ron.9.3.tmp", ".other.1.0.tmp", "key.ron"] {
            fs::write(dir.path().join(name), b"x").unwrap();
        }
        assert_eq!(remove_leftovers(&path), 2);
        assert_eq!(names(dir.path()), [".other.1.0.tmp", "key.ron"]);
    }

    #[test]
    fn remove_says_whether_there_was_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gone");
        fs::write(&path, b"x").unwrap();
        assert!(remove(&path).unwrap());
        assert!(!remove(&path).unwrap());
    }
}
