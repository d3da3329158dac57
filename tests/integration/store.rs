//! The history store under stress, end to end: the take-over of a folder of snapshot files (the
//! upgrade from the release that kept one file per date), SIGKILLs of the real binary held at
//! the moments that decide an import, a delete and a take-over, and the reported race of issue
//! 18. After each, every date is whole, old or new as the kill's moment says, never a mix: its
//! export is the one expected document, and `snapshot verify` finds every piece sound and none
//! that no date names. (Every sync point between those moments is swept in process by
//! `snapshot::crash_tests`.)

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use crate::util::{BASE, Options, Server, snapshot_json};

/// The export of `date`, or `None` when the store has no such date.
fn export(server: &Server, date: &str) -> Option<Vec<u8>> {
    match server.export(date) {
        (200, body) => Some(body),
        (404, _) => None,
        (other, body) => panic!("export of {date}: {other} {}", String::from_utf8_lossy(&body)),
    }
}

/// The dates of the store, each sound (see `Server::verified_history`).
fn verified_dates(server: &Server) -> Vec<String> {
    server.verified_history().1
}

/// Sends a request and does not wait for the answer: the server is about to be killed.
fn send_without_waiting(server: &Server, method: &str, path: &str, body: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(server.admin).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    // The server may die while this is written: that is the point.
    let _ = stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(body));
    stream
}

/// Upgrade in place: a state folder of the release that kept `snapshots/<date>.json` is taken
/// over at the first start, and every date answers exactly as it did when imported directly;
/// the files are removed once all are in the store, and a bad one is left where it was.
#[test]
fn a_folder_of_snapshot_files_is_taken_over_at_the_first_start() {
    let reference = Server::start();
    let key_reference = reference.generate_key();
    let dates = ["2024-05-12", "2024-05-13", "2024-05-14"];
    let documents: Vec<Vec<u8>> = dates
        .iter()
        .enumerate()
        .map(|(i, date)| {
            let stamp = format!("{date}T06:00:00.000Z");
            // Pretty-printed, as people and older tools wrote them.
            serde_json::to_vec_pretty(&snapshot_json(40 + i, i as u64 % 2, &stamp)).unwrap()
        })
        .collect();
    for (date, document) in dates.iter().zip(&documents) {
        assert_eq!(reference.put_snapshot(date, document).0, 201);
    }

    let old = Server::start();
    let (dir, config) = old.shut_down();
    let folder = dir.path().join("state/snapshots");
    for (date, document) in dates.iter().zip(&documents) {
        let path = folder.join(format!("{date}.json"));
        std::fs::write(&path, document).unwrap();
        // Written by the old release's import, at 08:30 on its date.
        let stamp = format!("{date}T08:30:00.000Z");
        let written = humantime::parse_rfc3339(&stamp).unwrap();
        std::fs::File::options().write(true).open(&path).unwrap().set_modified(written).unwrap();
    }
    std::fs::write(folder.join("2024-05-15.json"), "{\"LastAnalyzedOn\": 5}").unwrap();
    std::fs::write(folder.join("README"), "the operator's notes").unwrap();
    std::fs::remove_file(dir.path().join("state/history.redb")).unwrap();

    let server = Server::start_in(dir, config).unwrap();
    let key = server.generate_key();
    let log = server.wait_for_log("api listening");
    assert!(log.contains("snapshots: taking over 4 file(s) from "), "{log}");
    for date in dates {
        assert!(log.contains(&format!("snapshot {date}: taken over from ")), "{log}");
    }
    assert_eq!(server.snapshot_files(), ["2024-05-15.json", "README"], "the bad one is left");
    assert_eq!(verified_dates(&server), dates);
    let (_, list) = server.admin("GET", "/snapshots");
    assert_eq!(list["refused"][0]["date"], "2024-05-15", "{list}");
    // Each date says it came from the inbox, at the time its file was written.
    let arrivals: Vec<(&str, &str)> = list["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["imported_at"].as_str().unwrap(), e["source"].as_str().unwrap()))
        .collect();
    assert_eq!(
        arrivals,
        [
            ("2024-05-14T08:30:00.000Z", "inbox"),
            ("2024-05-13T08:30:00.000Z", "inbox"),
            ("2024-05-12T08:30:00.000Z", "inbox"),
        ]
    );
    for date in dates {
        assert_eq!(export(&server, date), export(&reference, date), "{date}");
        for query in ["Limit=200", "Limit=7&Offset=3"] {
            let path = format!("{BASE}/TechnicalDebt_Application?{query}&Date={date}");
            let (ours, theirs) =
                (server.get_with_key(&path, &key), reference.get_with_key(&path, &key_reference));
            assert_eq!((ours.status, ours.body), (theirs.status, theirs.body), "{path}");
        }
    }
    // The going-back path the README gives: an export per date is the file format.
    let (_, body) = server.admin("GET", "/snapshots/2024-05-13");
    assert_eq!(body["LastAnalyzedOn"], "2024-05-13T06:00:00.000Z");
}

/// A kill at any moment of a take-over: the files stay until every one is in the store, the
/// next start finishes the work, and nothing is imported twice or lost.
#[test]
fn a_kill_during_the_take_over_leaves_the_files_until_the_next_start_finishes() {
    let server = Server::start();
    let (dir, config) = server.shut_down();
    let folder = dir.path().join("state/snapshots");
    let dates: Vec<String> = (1..=6).map(|day| format!("2024-05-{day:02}")).collect();
    for (i, date) in dates.iter().enumerate() {
        let stamp = format!("{date}T06:00:00.000Z");
        let document = snapshot_json(1500, i as u64, &stamp).to_string();
        std::fs::write(folder.join(format!("{date}.json")), document).unwrap();
    }
    let files: Vec<String> = dates.iter().map(|d| format!("{d}.json")).collect();
    // The take-over runs before the ports open, so this start is watched through its log and
    // killed right after the first file is in.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_aims-api"))
        .args(["serve", "--config"])
        .arg(&config)
        .env_remove("NOTIFY_SOCKET")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok) {
            if line.contains("snapshot 2024-05-01: taken over from") {
                let _ = tx.send(());
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(60)).expect("the first file taken over");
    child.kill().unwrap();
    child.wait().unwrap();
    let mut left: Vec<String> = std::fs::read_dir(&folder)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, files, "every file is kept until all are in the store");

    let server = Server::start_in(dir, config).unwrap();
    let log = server.wait_for_log("api listening");
    assert_eq!(server.snapshot_files(), Vec::<String>::new(), "{log}");
    assert_eq!(verified_dates(&server), dates);
}

/// Restarts `server` (cleanly) with its test holds armed at `point`: the thread that reaches
/// it logs `test hold: <point>` and waits for `<state>/release-<point>`.
pub fn restart_holding(server: Server, point: &str) -> Server {
    let (dir, config) = server.shut_down();
    let options =
        Options { env: vec![("AIMS_API_TEST_HOLD".into(), point.into())], ..Options::default() };
    Server::start_in_with(dir, config, &options).unwrap()
}

/// Lets the threads held at `point` go on.
pub fn release(server: &Server, point: &str) {
    std::fs::write(server.state_dir().join(format!("release-{point}")), b"").unwrap();
}

/// SIGKILL of the real binary at the two moments that decide a change: its transaction written
/// but not committed (the old version must survive, whole), and committed but not yet served or
/// answered (the new one must, whole). Each kill lands exactly there: the server is held at
/// that point until it is killed. (Every other point in between, down to each sync of the
/// file, is swept in process by `snapshot::crash_tests`.)
#[test]
fn kills_before_and_after_each_commit_leave_exactly_the_old_or_the_new_version() {
    let (a, b) = ("2024-05-01", "2024-05-02");
    let doc = |apps: usize, seed: u64, date: &str| {
        snapshot_json(apps, seed, &format!("{date}T06:00:00.000Z")).to_string().into_bytes()
    };
    let (doc_a, doc_b, doc_b2) = (doc(300, 1, a), doc(300, 2, b), doc(350, 3, b));
    let mut server = Server::start();
    assert_eq!(server.put_snapshot(a, &doc_a).0, 201);
    assert_eq!(server.put_snapshot(b, &doc_b).0, 201);
    let (export_a, export_b) = (export(&server, a), export(&server, b));
    assert!(export_a.is_some() && export_b.is_some());
    assert_eq!(server.put_snapshot(b, &doc_b2).0, 200);
    let export_b2 = export(&server, b);
    assert_eq!(server.put_snapshot(b, &doc_b).0, 200);
    let rounds = [
        ("replace b", "import:commit", (&export_a, &export_b)),
        ("replace b", "import:committed", (&export_a, &export_b2)),
        ("delete a", "remove:commit", (&export_a, &export_b)),
        ("delete a", "remove:committed", (&None, &export_b)),
    ];
    for (operation, point, (want_a, want_b)) in rounds {
        let mut held = restart_holding(server, point);
        let _pending = match operation {
            "replace b" => send_without_waiting(&held, "PUT", &format!("/snapshots/{b}"), &doc_b2),
            _ => send_without_waiting(&held, "DELETE", &format!("/snapshots/{a}"), b""),
        };
        held.wait_for_log(&format!("test hold: {point}"));
        held.kill();
        let (dir, config) = held.stop();
        server = Server::start_in(dir, config).unwrap();
        let (got_a, got_b) = (export(&server, a), export(&server, b));
        assert!(got_a == *want_a, "{operation}, killed at {point}: {a} is not as expected");
        assert!(got_b == *want_b, "{operation}, killed at {point}: {b} is not as expected");
        let expected: Vec<String> = [(a, want_a), (b, want_b)]
            .iter()
            .filter(|(_, w)| w.is_some())
            .map(|(d, _)| d.to_string())
            .collect();
        assert_eq!(verified_dates(&server), expected, "{operation}, killed at {point}");
        // Back to a and b, for the next round.
        if got_a.is_none() {
            assert_eq!(server.put_snapshot(a, &doc_a).0, 201);
        }
        if got_b != export_b {
            assert_eq!(server.put_snapshot(b, &doc_b).0, 200);
        }
    }
}

/// Issue 18's reported loss, as it was reproduced: after a restart (nothing of the older date
/// in memory) a first touch of the older date reads it from the store; while that read is held,
/// the date is deleted and the same file imported again. The import must write every piece the
/// delete removed (it answered `"new_pieces": 0` and left the store naming missing pieces),
/// the held request must answer the date's data, the store must verify whole, and after another
/// restart every answer must be the same bytes as before.
#[test]
fn a_first_touch_held_across_the_delete_and_reimport_of_its_date_loses_nothing() {
    let (older, newest) = ("2024-05-01", "2024-05-02");
    let doc = |seed: u64, date: &str| {
        snapshot_json(400, seed, &format!("{date}T06:00:00.000Z")).to_string().into_bytes()
    };
    let (doc_older, doc_newest) = (doc(1, older), doc(2, newest));
    let server = Server::start();
    let key = server.generate_key();
    assert_eq!(server.put_snapshot(newest, &doc_newest).0, 201);
    let (status, first) = server.put_snapshot(older, &doc_older);
    assert_eq!(status, 201, "{first}");
    // Every piece of the older date is its own (the two share none).
    let own_pieces = first["new_pieces"].as_u64().unwrap();
    assert_eq!(own_pieces, 400 + 40);
    let page = format!("{BASE}/TechnicalDebt_Application?Limit=200&Offset=100&Date={older}");
    let before = server.get_with_key(&page, &key);
    assert_eq!(before.status, 200, "{}", before.exception());
    let export_before = export(&server, older);

    let server = std::sync::Arc::new(restart_holding(server, "serve:read"));
    let reader = {
        let (server, page, key) = (std::sync::Arc::clone(&server), page.clone(), key.clone());
        std::thread::spawn(move || server.get_with_key(&page, &key))
    };
    server.wait_for_log("test hold: serve:read");
    assert_eq!(server.admin("DELETE", &format!("/snapshots/{older}")).0, 200);
    let (status, again) = server.put_snapshot(older, &doc_older);
    assert_eq!((status, again["new_pieces"].as_u64()), (201, Some(own_pieces)), "{again}");
    release(&server, "serve:read");
    let held = reader.join().unwrap();
    assert_eq!((held.status, &held.body), (200, &before.body), "{}", held.exception());
    assert_eq!(verified_dates(&server), [older, newest]);

    let server = std::sync::Arc::into_inner(server).unwrap();
    let (dir, config) = server.shut_down();
    let server = Server::start_in(dir, config).unwrap();
    let after = server.get_with_key(&page, &key);
    assert_eq!((after.status, after.body), (200, before.body));
    assert_eq!(export(&server, older), export_before);
}
