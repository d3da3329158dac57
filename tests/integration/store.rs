//! The history store under stress: the take-over of a folder of snapshot files (the upgrade
//! from the release that kept one file per date), and SIGKILLs at any moment of an import, a
//! delete, a prune and a take-over. After each, every date is whole, old or new, never a mix:
//! its export is one of the two expected documents, and `snapshot verify` finds every piece
//! sound and none that no date names.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::util::{BASE, Server, snapshot_json};

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

/// SIGKILLs at spread-out moments of imports, deletes and prunes: after each, every date is
/// its old or its new version, whole, and the store holds no piece that no date names.
#[test]
fn kills_during_imports_deletes_and_prunes_leave_every_date_old_or_new() {
    let (a, b) = ("2024-05-01", "2024-05-02");
    let doc = |apps: usize, seed: u64, date: &str| {
        snapshot_json(apps, seed, &format!("{date}T06:00:00.000Z")).to_string().into_bytes()
    };
    let (doc_a, doc_b, doc_b2) = (doc(600, 1, a), doc(600, 2, b), doc(700, 3, b));

    let mut server = Server::start();
    let started = Instant::now();
    assert_eq!(server.put_snapshot(a, &doc_a).0, 201);
    let import_took = started.elapsed();
    assert_eq!(server.put_snapshot(b, &doc_b).0, 201);
    let (export_a, export_b) = (export(&server, a), export(&server, b));
    assert_eq!(server.put_snapshot(b, &doc_b2).0, 200);
    let export_b2 = export(&server, b);
    assert_eq!(server.put_snapshot(b, &doc_b).0, 200);

    let rounds = 12;
    let mut outcomes = std::collections::BTreeMap::new();
    for round in 0..rounds {
        // From at once to well past the operation's own time.
        let delay = import_took * (round / 3) as u32 / 2;
        let operation = round % 3;
        let (dir, config) = match operation {
            0 => {
                let _pending =
                    send_without_waiting(&server, "PUT", &format!("/snapshots/{b}"), &doc_b2);
                std::thread::sleep(delay);
                server.kill();
                server.stop()
            }
            1 => {
                let _pending =
                    send_without_waiting(&server, "DELETE", &format!("/snapshots/{a}"), b"");
                std::thread::sleep(delay);
                server.kill();
                server.stop()
            }
            _ => {
                // A prune at start: keep_count 1 removes `a`.
                let (dir, config) = server.shut_down();
                let plain = std::fs::read_to_string(&config).unwrap();
                let pruning = plain.replacen(
                    "    api: (",
                    "    snapshots: (keep_count: Some(1)),\n    api: (",
                    1,
                );
                std::fs::write(&config, pruning).unwrap();
                let mut pruner = Server::start_in(dir, config.clone()).unwrap();
                std::thread::sleep(delay);
                pruner.kill();
                let (dir, _) = pruner.stop();
                std::fs::write(&config, plain).unwrap();
                (dir, config)
            }
        };
        server = Server::start_in(dir, config).unwrap();
        let (got_a, got_b) = (export(&server, a), export(&server, b));
        assert!(got_a == export_a || got_a.is_none(), "round {round}: {a} is neither old nor gone");
        assert!(
            got_b == export_b || got_b == export_b2,
            "round {round}: {b} is neither old nor new"
        );
        let mut expected: Vec<String> = Vec::new();
        if got_a.is_some() {
            expected.push(a.into());
        }
        expected.push(b.into());
        assert_eq!(verified_dates(&server), expected, "round {round}");
        let outcome = match operation {
            0 => {
                if got_b == export_b2 {
                    "import done"
                } else {
                    "import undone"
                }
            }
            _ => {
                if got_a.is_none() {
                    "removal done"
                } else {
                    "removal undone"
                }
            }
        };
        *outcomes.entry(outcome).or_insert(0) += 1;
        // Back to a and b, for the next round.
        if got_a.is_none() {
            assert_eq!(server.put_snapshot(a, &doc_a).0, 201);
        }
        if got_b != export_b {
            assert_eq!(server.put_snapshot(b, &doc_b).0, 200);
        }
    }
    // The spread of delays kills both before and after the commit: both outcomes are seen.
    assert!(outcomes.len() >= 2, "{outcomes:?}");
}
