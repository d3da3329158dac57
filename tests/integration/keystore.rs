//! The key store across restarts: kept, locked, and never overwritten when damaged.

use std::process::Command;

use crate::util::{BASE, BIN, Options, Server, config_text};

#[test]
fn the_key_survives_a_restart() {
    let server = Server::start();
    let key = server.generate_key();
    let (dir, config) = server.stop();
    let again = Server::start_in(dir, config).unwrap();
    assert_eq!(again.get_with_key(&format!("{BASE}/TechnicalDebt_Level"), &key).status, 404);
    assert_eq!(again.admin("GET", "/key").1["generation"], 1);
}

#[test]
fn a_second_serve_on_the_same_state_folder_is_refused() {
    let server = Server::start();
    let output =
        Command::new(BIN).args(["serve", "--config"]).arg(&server.config).output().unwrap();
    assert_eq!(output.status.code(), Some(8));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("key.lock is locked by another aims-api serve"), "{stderr}");
    assert!(stderr.contains(&format!("pid {}", server.pid())), "{stderr}");
    // The first one still serves.
    assert_eq!(server.admin("GET", "/health").0, 200);
}

#[test]
fn a_corrupt_store_refuses_start_and_is_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let damaged = "(\n    version: 1,\n    generation: 2,\n    key: Some((sha256: \"abc\n";
    std::fs::write(state.join("key.ron"), damaged).unwrap();
    let config = dir.path().join("config.ron");
    std::fs::write(&config, config_text(dir.path(), &Options::default())).unwrap();
    let output = Command::new(BIN).args(["serve", "--config"]).arg(&config).output().unwrap();
    assert_eq!(output.status.code(), Some(8));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("key.ron:4:"), "names file and position: {stderr}");
    assert!(stderr.contains("left untouched"), "{stderr}");
    assert_eq!(std::fs::read_to_string(state.join("key.ron")).unwrap(), damaged);
}

#[test]
fn no_store_means_no_key_and_every_request_is_refused() {
    let server = Server::start();
    assert!(!server.state_dir().join("key.ron").exists());
    // A well-formed key (another server's), so it is refused for there being no key, not for
    // its form.
    let key = Server::start().generate_key();
    let response = server.get_with_key(&format!("{BASE}/TechnicalDebt_Level"), &key);
    assert_eq!(response.status, 401);
    let fingerprint = format!("aims_...{}", &key[key.len() - 4..]);
    server.wait_for_log(&format!(
        "refused port=api client=127.0.0.1 status=401 reason=\"no key has been generated\" \
         fingerprint={fingerprint}"
    ));
}
