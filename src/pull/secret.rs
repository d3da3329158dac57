//! The upstream's API key: read once, checked, held in memory that is wiped on drop.
//!
//! The key opens the hosted service for the whole infrastructure, so the file that holds it
//! must be as private as our own key store: owned by root or by the user the pull runs as,
//! and readable by nobody else. A file that is not is refused with the reason, before a byte
//! of it is read. Under systemd the key comes instead from `$CREDENTIALS_DIRECTORY`
//! (`LoadCredential=`), a private per-service folder that systemd itself keeps to the service.
//! The key never goes into a log line, an error, an argument or a `Debug` output.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// The name of the credential under `$CREDENTIALS_DIRECTORY` (`LoadCredential=upstream-key:…`).
pub const CREDENTIAL_NAME: &str = "upstream-key";

/// The most a key file may hold: keys are short, and a wrong path must not read a disk image.
const MAX_KEY_FILE_BYTES: u64 = 4096;

/// The upstream key. Its bytes are wiped when it is dropped; `Debug` shows `[redacted]`.
pub struct UpstreamKey(Zeroizing<String>);

impl UpstreamKey {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for UpstreamKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("UpstreamKey([redacted])")
    }
}

/// Why the key could not be read. Names the file and the fix, never the content.
#[derive(Debug)]
pub struct KeyFileError {
    pub path: PathBuf,
    pub reason: String,
    /// The I/O error behind `reason`, when there is one.
    pub source: Option<std::io::Error>,
}

impl fmt::Display for KeyFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "upstream key file {}: {}", self.path.display(), self.reason)
    }
}

impl std::error::Error for KeyFileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| e as _)
    }
}

/// Reads the key from `$CREDENTIALS_DIRECTORY/upstream-key` when systemd set that folder and
/// the credential is in it, else from `configured` after checking its owner and mode.
pub fn read(configured: &Path) -> Result<UpstreamKey, KeyFileError> {
    if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
        let path = Path::new(&dir).join(CREDENTIAL_NAME);
        if path.exists() {
            // systemd made this file for this service alone, in a folder no one else can
            // see; its owner and mode are systemd's business, not the operator's.
            return read_from(&path, false);
        }
    }
    read_from(configured, true)
}

fn read_from(path: &Path, check_owner_and_mode: bool) -> Result<UpstreamKey, KeyFileError> {
    let fail = |reason: String| KeyFileError { path: path.to_owned(), reason, source: None };
    let io_fail = |what: &str, e: std::io::Error| KeyFileError {
        path: path.to_owned(),
        reason: format!("{what}: {e}"),
        source: Some(e),
    };
    let mut file = File::open(path).map_err(|e| io_fail("cannot open", e))?;
    // The checks look at the file that is open, not at a path that could be swapped between.
    let meta = file.metadata().map_err(|e| io_fail("cannot read its metadata", e))?;
    if !meta.is_file() {
        return Err(fail("is not a regular file".into()));
    }
    if check_owner_and_mode {
        let me = rustix::process::geteuid().as_raw();
        if meta.uid() != 0 && meta.uid() != me {
            return Err(fail(format!(
                "is owned by uid {}, not by root or by uid {me} that runs the pull: another \
                 user could change the key; chown root {} (or to the service user)",
                meta.uid(),
                path.display()
            )));
        }
        let mode = meta.mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(fail(format!(
                "has mode {mode:04o}, readable or writable by group or others: the key opens the \
                 hosted service; chmod 600 {}",
                path.display()
            )));
        }
    }
    if meta.len() > MAX_KEY_FILE_BYTES {
        return Err(fail(format!(
            "holds {} bytes; a key file holds one key (at most {MAX_KEY_FILE_BYTES} bytes)",
            meta.len()
        )));
    }
    // Sized once so that reading never reallocates and leaves a copy in freed memory.
    let mut text = Zeroizing::new(String::with_capacity(MAX_KEY_FILE_BYTES as usize + 1));
    (&mut file)
        .take(MAX_KEY_FILE_BYTES)
        .read_to_string(&mut text)
        .map_err(|e| io_fail("cannot read it as UTF-8 text", e))?;
    let key = text.trim();
    if key.is_empty() {
        return Err(fail("is empty: write the upstream's API key in it, alone on one line".into()));
    }
    // The key travels in a header: it must be one visible token.
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(fail(
            "holds more than one line or a character that cannot travel in an HTTP header: \
             write the key alone on one line"
                .into(),
        ));
    }
    let mut exact = Zeroizing::new(String::with_capacity(key.len()));
    exact.push_str(key);
    Ok(UpstreamKey(exact))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn key_file(text: &str, mode: u32) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("upstream-key");
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        (dir, path)
    }

    #[test]
    fn a_private_file_gives_its_key_without_the_newline() {
        let (_dir, path) = key_file("aims_secret\n", 0o600);
        let key = read_from(&path, true).unwrap();
        assert_eq!(key.expose(), "aims_secret");
        assert_eq!(format!("{key:?}"), "UpstreamKey([redacted])");
    }

    #[test]
    fn a_file_others_can_read_is_refused_with_the_fix() {
        let (_dir, path) = key_file("aims_secret\n", 0o644);
        let error = read_from(&path, true).unwrap_err();
        assert!(error.reason.contains("has mode 0644"), "{error}");
        assert!(error.reason.contains("chmod 600"), "{error}");
        assert!(!error.to_string().contains("aims_secret"), "{error}");
    }

    #[test]
    fn empty_and_two_line_files_are_refused() {
        let (_dir, path) = key_file("\n", 0o600);
        assert!(read_from(&path, true).unwrap_err().reason.starts_with("is empty"));
        let (_dir, path) = key_file("one\ntwo\n", 0o600);
        let error = read_from(&path, true).unwrap_err();
        assert!(error.reason.contains("more than one line"), "{error}");
        assert!(!error.to_string().contains("one".repeat(2).as_str()));
    }

    #[test]
    fn a_missing_file_names_the_path() {
        let error = read_from(Path::new("/nonexistent/upstream-key"), true).unwrap_err();
        assert_eq!(error.path, Path::new("/nonexistent/upstream-key"));
        assert!(error.reason.starts_with("cannot open"), "{error}");
    }
}
