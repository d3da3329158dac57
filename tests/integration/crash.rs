//! Crash torture of the key store (SIGKILL at random moments during key changes), and the
//! state folder on a full disk.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::util::{Options, Server, config_text};
use crate::workload::{CrashSettings, crash_torture};

#[test]
fn kills_during_key_changes_leave_the_old_or_the_new_state() {
    let report = crash_torture(&CrashSettings { kills: 30, max_time: Duration::from_secs(60) });
    eprintln!("{report}");
    assert!(report.failures.is_empty(), "{report:#?}");
    assert!(report.kills >= 10, "too few kills: {report:?}");
}

/// A tmpfs mounted for the life of the value (root only; unmounted on drop).
struct Tmpfs {
    at: PathBuf,
}

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Result<Self, String> {
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(at)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).trim().to_owned());
        }
        Ok(Self { at: at.to_owned() })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let done = Command::new("umount").arg(&self.at).status().is_ok_and(|s| s.success());
        if !done {
            let _ = Command::new("umount").arg("-l").arg(&self.at).status();
        }
        if let Some(parent) = self.at.parent() {
            let _ = std::fs::remove_dir_all(parent);
        }
    }
}

/// Fills the file system holding `dir` until a write fails.
fn fill(dir: &Path) {
    let mut filler = std::fs::File::create(dir.join("filler")).unwrap();
    let block = [0u8; 4096];
    while filler.write_all(&block).is_ok() {}
    let _ = filler.sync_all();
}

/// The temporary files in `dir`: a durable write names them `.<file>.<pid>.<n>.tmp`.
fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".tmp"))
        .collect()
}

#[test]
#[ignore = "needs root: mounts a 256 KiB tmpfs as the state folder"]
fn a_full_disk_changes_nothing_and_revoke_still_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let _tmpfs = Tmpfs::mount(&state, "256k").unwrap_or_else(|e| {
        panic!(
            "a_full_disk_changes_nothing needs root with CAP_SYS_ADMIN to mount a 256 KiB tmpfs \
             as the state folder, and mount said: {e}; run the tests as root (CI does)"
        )
    });
    let config = dir.path().join("config.ron");
    std::fs::write(&config, config_text(dir.path(), &Options::default())).unwrap();
    let server = Server::start_in(dir, config).unwrap();
    let key = server.generate_key();
    let probe = "/full-disk/probe";
    let store = std::fs::read(state.join("key.ron")).unwrap();
    fill(&state);

    // Replace cannot be written: 500 with the cause, nothing changed, the old key still works.
    let (status, body) = server.admin("POST", "/key/replace");
    assert_eq!((status, body["error"].as_str()), (500, Some("store_write")), "{body}");
    // The cause, whole, around the name of the temporary file (which the store chooses).
    let message = body["message"].as_str().unwrap();
    assert!(message.starts_with("nothing changed: cannot write "), "{message}");
    assert!(message.ends_with(": No space left on device (os error 28)"), "{message}");
    assert_eq!(std::fs::read(state.join("key.ron")).unwrap(), store, "the store is intact");
    assert_eq!(temp_files(&state), Vec::<String>::new(), "no temporary file is left behind");
    assert_eq!(server.get_with_key(probe, &key).status, 404, "the old key still works");
    let (_, status_body) = server.admin("GET", "/key");
    assert_eq!(
        (status_body["state"].as_str(), status_body["persisted"].as_bool()),
        (Some("active"), Some(true))
    );

    // Revoke cannot be written either: it fails closed, in memory, and says so.
    let (status, body) = server.admin("DELETE", "/key");
    assert_eq!((status, body["error"].as_str()), (500, Some("store_write")), "{body}");
    let message = body["message"].as_str().unwrap();
    let (head, tail) = message.split_once("(cannot write ").unwrap_or(("", ""));
    assert_eq!(head, "the key is refused from now on, but the store could not be updated ");
    assert!(
        tail.ends_with(
            ": No space left on device (os error 28)): it would be accepted again after a \
             restart; fix the cause and revoke again"
        ),
        "{message}"
    );
    assert_eq!(server.get_with_key(probe, &key).status, 401, "revoked in memory at once");
    let (_, status_body) = server.admin("GET", "/key");
    assert_eq!(
        (status_body["state"].as_str(), status_body["persisted"].as_bool()),
        (Some("revoked"), Some(false)),
        "{status_body}"
    );
    assert_eq!(std::fs::read(state.join("key.ron")).unwrap(), store, "the store is intact");
    // Nor can a new key be made while the disk is full; the old one stays refused.
    assert_eq!(server.admin("POST", "/key").0, 500);
    assert_eq!(server.get_with_key(probe, &key).status, 401);
    let log = server.wait_for_log("result=memory-only");
    let fingerprint = format!("fingerprint=aims_...{}", &key[key.len() - 4..]);
    // The audit lines name the key and the generation in force after the failure: the
    // revoke's, in memory, is one ahead of the store.
    for (action, generation, result) in
        [("key.replace", 1, "error"), ("key.revoke", 2, "memory-only")]
    {
        let line = format!(
            "audit action={action} client=uid:0 {fingerprint} generation={generation} \
             result={result} cause=\"cannot write "
        );
        assert!(log.contains(&line), "{line}\n{log}");
    }

    // Room again: the retried revoke is written, and survives a restart.
    std::fs::remove_file(state.join("filler")).unwrap();
    let (status, body) = server.admin("DELETE", "/key");
    assert_eq!((status, body["persisted"].as_bool()), (200, Some(true)), "{body}");
    let (dir, config) = server.stop();
    let again = Server::start_in(dir, config).unwrap();
    assert_eq!(again.get_with_key(probe, &key).status, 401, "still revoked after a restart");
    assert_eq!(again.admin("GET", "/key").1["state"], "revoked");
}
