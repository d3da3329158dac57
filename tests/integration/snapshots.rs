//! Snapshots on the admin port and the CLI: import, list, delete, refusal of bad data (which
//! leaves what is served as it was), restarts, and requests answered while an import runs.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::util::{
    BASE, CLIENT_BASE, Options, Response, SAMPLE, Server, raw_exchange, serving_order,
    snapshot_json,
};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn import_list_and_delete() {
    let server = Server::start();
    let key = server.generate_key();
    let first = snapshot_json(10, 1, "2024-05-14T06:00:00.000Z");
    let (status, body) = server.put_snapshot("2024-05-14", first.to_string().as_bytes());
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["result"], "created");
    let entry = &body["snapshot"];
    assert_eq!(entry["date"], "2024-05-14");
    assert_eq!(entry["last_analyzed_on"], "2024-05-14T06:00:00.000Z");
    assert_eq!(entry["applications"], 10);
    let modules: usize = (0..10).map(|i| i % 4).sum();
    assert_eq!(entry["modules"], modules);
    let findings = first["Applications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            a["Findings"].as_array().unwrap().len()
                + a["Modules"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| m["Findings"].as_array().unwrap().len())
                    .sum::<usize>()
        })
        .sum::<usize>();
    assert_eq!(entry["findings"], findings);

    // Live at once, without a restart.
    let level = server.get_with_key(&format!("{BASE}/TechnicalDebt_Level"), &key);
    assert_eq!(level.status, 200);

    // Into the history store (0600), not a file per date; the folder for hand-placed files
    // stays private and empty.
    let store = server.state_dir().join("history.redb");
    assert_eq!(mode(&store), 0o600);
    assert_eq!(mode(&server.state_dir().join("snapshots")), 0o700);
    assert_eq!(server.snapshot_files(), Vec::<String>::new());
    let (_, export) = server.admin("GET", "/snapshots/2024-05-14");
    assert_eq!(export["Applications"].as_array().map(Vec::len), Some(10));

    let second = snapshot_json(4, 2, "2024-05-14T18:00:00.000Z");
    let (status, body) = server.put_snapshot("2024-05-14", second.to_string().as_bytes());
    assert_eq!((status, body["result"].as_str()), (200, Some("replaced")), "{body}");
    let older = snapshot_json(2, 3, "2024-05-10T06:00:00.000Z");
    server.import("2024-05-10", &older);

    let (status, list) = server.admin("GET", "/snapshots");
    assert_eq!(status, 200);
    assert_eq!(list["newest"], "2024-05-14");
    let dates: Vec<&str> =
        list["snapshots"].as_array().unwrap().iter().map(|s| s["date"].as_str().unwrap()).collect();
    assert_eq!(dates, ["2024-05-14", "2024-05-10"]);
    assert_eq!(list["snapshots"][0]["applications"], 4);
    assert_eq!(list["snapshots"][1]["applications"], 2);
    assert_eq!(list["refused"], json!([]));

    let (status, body) = server.admin("DELETE", "/snapshots/2024-05-14");
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["was_served"].as_bool(), body["newest"].as_str()),
        (Some(true), Some("2024-05-10"))
    );
    assert_eq!(server.admin("GET", "/snapshots/2024-05-14").0, 404);
    let page = server.get_with_key(&format!("{BASE}/TechnicalDebt_Application"), &key).json();
    assert_eq!(page["Page"]["TotalResults"], 2, "the older snapshot answers now");
    assert_eq!(server.admin("DELETE", "/snapshots/2024-05-14").0, 404);
    assert_eq!(server.admin("DELETE", "/snapshots/2024-05-10").0, 200);
    assert_eq!(server.admin("GET", "/snapshots").1["snapshots"], json!([]));
    assert_eq!(server.get_with_key(&format!("{BASE}/TechnicalDebt_Level"), &key).status, 404);

    let log = server.wait_for_log("action=snapshot.delete client=uid:");
    for needle in [
        "audit action=snapshot.import client=uid:",
        "date=2024-05-14 result=created applications=10",
        "date=2024-05-14 result=replaced",
        "audit action=snapshot.delete client=uid:",
        "date=2024-05-14 result=not_found",
    ] {
        assert!(log.contains(needle), "{needle} in\n{log}");
    }
}

#[test]
fn a_rejected_snapshot_leaves_the_served_data_as_it_was() {
    let server = Server::start();
    let key = server.generate_key();
    let good = snapshot_json(6, 1, "2024-05-14T06:00:00.000Z");
    server.import("2024-05-14", &good);
    let paths = [
        format!("{BASE}/TechnicalDebt_Level"),
        format!("{BASE}/TechnicalDebt_Application?Limit=200"),
        format!("{BASE}/TechnicalDebt_Team"),
    ];
    let before: Vec<Vec<u8>> = paths.iter().map(|p| server.get_with_key(p, &key).body).collect();
    let listed = server.admin("GET", "/snapshots").1;
    let files = server.snapshot_files();

    let mut dangling = snapshot_json(6, 9, "2024-05-15T06:00:00.000Z");
    dangling["Applications"][3]["Modules"][1]["LevelGUID"] = json!("no-such-level");
    let mut negative = snapshot_json(6, 9, "2024-05-15T06:00:00.000Z");
    negative["Applications"][4]["Findings"][2]["Count"] = json!(-3);
    let mut team = snapshot_json(6, 9, "2024-05-15T06:00:00.000Z");
    team["Teams"][0]["Applications"][1]["GUID"] = json!("ghost");
    let cases: Vec<(Vec<u8>, &str, &str)> = vec![
        (
            dangling.to_string().into_bytes(),
            "$.Applications[3].Modules[1].LevelGUID",
            "`no-such-level` names no level in $.Levels",
        ),
        (
            negative.to_string().into_bytes(),
            "$.Applications[4].Findings[2].Count",
            "Count is -3; a count cannot be negative",
        ),
        (
            team.to_string().into_bytes(),
            "$.Teams[0].Applications[1].GUID",
            "`ghost` names no application in $.Applications",
        ),
        (
            b"{\"LastAnalyzedOn\": \"2024-05-15T06:00:00Z\", \"Levels\": [".to_vec(),
            "$.Levels",
            "EOF while parsing a list (line 1, column 54)",
        ),
        (b"not json".to_vec(), "$", "a snapshot is a JSON object, {…} (line 1, column 1)"),
    ];
    for date in ["2024-05-14", "2024-05-15"] {
        for (body, path, reason) in &cases {
            let (status, answer) = server.put_snapshot(date, body);
            assert_eq!(status, 422, "{path}: {answer}");
            assert_eq!(answer["error"], "invalid_snapshot");
            assert_eq!(answer["path"], *path, "{answer}");
            assert_eq!(answer["reason"], *reason, "{answer}");
            let message =
                format!("the snapshot for {date} is invalid, nothing changed: {path}: {reason}");
            assert_eq!(answer["message"], message);
        }
    }
    let after: Vec<Vec<u8>> = paths.iter().map(|p| server.get_with_key(p, &key).body).collect();
    assert_eq!(after, before, "the same bytes are served");
    assert_eq!(server.admin("GET", "/snapshots").1, listed);
    assert_eq!(server.snapshot_files(), files, "no file added, none left behind");
    let log = server.wait_for_log("result=invalid");
    assert!(log.contains("$.Applications[3].Modules[1].LevelGUID"), "{log}");
}

#[test]
fn admin_mistakes_get_precise_errors() {
    let server = Server::start_with(&Options {
        admin: "max_body_bytes: 4096,".into(),
        ..Options::default()
    });
    let (status, body) = server.put_snapshot("2024-13-01", b"{}");
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_date")), "{body}");
    assert_eq!(
        body["message"],
        "`2024-13-01` is not a date (the month must be from 01 to 12): snapshots are named by \
         their date, YYYY-MM-DD"
    );
    let (status, body) = server.put_snapshot("2024-05-14", b"");
    assert_eq!((status, body["error"].as_str()), (400, Some("empty_body")), "{body}");
    // Refused on its Content-Length, before a byte of the body is read.
    let head =
        "PUT /snapshots/2024-05-14 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 4097\r\n\r\n";
    let response = Response::parse(&raw_exchange(server.admin, head.as_bytes())).unwrap();
    assert_eq!(response.status, 413);
    assert_eq!(server.admin("POST", "/snapshots").0, 405);
    assert_eq!(server.admin("POST", "/snapshots/2024-05-14").0, 405);
    // GET is the export now: of a date not served, a 404.
    assert_eq!(server.admin("GET", "/snapshots/2024-05-14").0, 404);
    assert_eq!(server.admin("DELETE", "/snapshots/yesterday").0, 400);
    assert_eq!(server.snapshot_files(), Vec::<String>::new());
}

#[test]
fn snapshots_are_loaded_at_start_and_bad_files_are_skipped_untouched() {
    let server = Server::start();
    let key = server.generate_key();
    let good = snapshot_json(5, 1, "2024-05-14T06:00:00.000Z");
    server.import("2024-05-14", &good);
    let (dir, config) = server.stop();

    let folder = dir.path().join("state/snapshots");
    let bad = br#"{"LastAnalyzedOn": "2024-05-20T00:00:00Z", "Levels": [], "Categories": [],
        "Applications": [{"GUID": "a", "Name": "A", "LevelGUID": "missing"}]}"#;
    std::fs::write(folder.join("2024-05-20.json"), bad).unwrap();
    std::fs::write(folder.join(".2024-05-21.json.123.0.tmp"), b"half an import").unwrap();
    std::fs::write(folder.join("notes.txt"), b"the operator's").unwrap();

    let server = Server::start_in(dir, config).unwrap();
    let log = server.wait_for_log("serving the snapshot of");
    assert!(
        log.contains("2024-05-20.json: $.Applications[0].LevelGUID: `missing` names no level"),
        "{log}"
    );
    assert!(log.contains("serving the snapshot of 2024-05-14 by default"), "{log}");
    let page = server.get_with_key(&format!("{BASE}/TechnicalDebt_Application"), &key).json();
    assert_eq!(page["Page"]["TotalResults"], 5, "the good one is served");
    let (_, list) = server.admin("GET", "/snapshots");
    assert_eq!(list["refused"][0]["date"], "2024-05-20");
    let reason = "$.Applications[0].LevelGUID: `missing` names no level in $.Levels";
    assert_eq!(list["refused"][0]["reason"], reason);
    assert_eq!(std::fs::read(folder.join("2024-05-20.json")).unwrap(), bad, "left untouched");
    assert!(folder.join("notes.txt").exists());
    assert!(!folder.join(".2024-05-21.json.123.0.tmp").exists(), "a leftover import is removed");

    // The refused file can be replaced by a good import, or deleted.
    let good = snapshot_json(2, 2, "2024-05-20T06:00:00.000Z").to_string();
    let (status, body) = server.put_snapshot("2024-05-20", good.as_bytes());
    assert_eq!((status, body["result"].as_str()), (200, Some("replaced")), "{body}");
    let (_, list) = server.admin("GET", "/snapshots");
    assert_eq!((list["newest"].as_str(), list["refused"].clone()), (Some("2024-05-20"), json!([])));
    assert_eq!(server.admin("DELETE", "/snapshots/2024-05-20").0, 200);
}

#[test]
fn a_request_made_while_an_import_runs_is_answered() {
    let server = Server::start();
    let key = server.generate_key();
    let old = snapshot_json(3, 1, "2024-05-14T06:00:00.000Z");
    server.import("2024-05-14", &old);
    let path = format!("{BASE}/TechnicalDebt_LastAnalysisDate");

    // An import whose body is half sent: the admin side is busy receiving it.
    let new = snapshot_json(2000, 2, "2024-05-14T18:00:00.000Z").to_string().into_bytes();
    let mut admin = TcpStream::connect(server.admin).unwrap();
    admin.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let head = format!(
        "PUT /snapshots/2024-05-14 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        new.len()
    );
    admin.write_all(head.as_bytes()).unwrap();
    let (half, rest) = new.split_at(new.len() / 2);
    admin.write_all(half).unwrap();
    for _ in 0..5 {
        let started = Instant::now();
        let response = server.get_with_key(&path, &key);
        assert_eq!(response.status, 200);
        assert_eq!(response.json()["LastAnalyzedOn"], "2024-05-14T06:00:00.000Z");
        assert!(started.elapsed() < Duration::from_secs(2), "not held up by the import");
    }

    // The rest goes out while another thread keeps asking; every request is answered with
    // one snapshot or the other, never an error.
    let answers = std::thread::scope(|scope| {
        let asking = scope.spawn(|| {
            let mut seen = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let response = server.get_with_key(&path, &key);
                assert_eq!(response.status, 200);
                let at = response.json()["LastAnalyzedOn"].as_str().unwrap().to_owned();
                let done = at.starts_with("2024-05-14T18");
                seen.push(at);
                if done || Instant::now() > deadline {
                    return seen;
                }
            }
        });
        admin.write_all(rest).unwrap();
        let mut raw = Vec::new();
        admin.read_to_end(&mut raw).unwrap();
        let response = Response::parse(&raw).unwrap();
        assert_eq!(response.status, 200, "{}", String::from_utf8_lossy(&response.body));
        asking.join().unwrap()
    });
    assert_eq!(answers.last().map(String::as_str), Some("2024-05-14T18:00:00.000Z"));
    let page = server.get_with_key(&format!("{CLIENT_BASE}/TechnicalDebt_Application"), &key);
    assert_eq!(page.json()["Page"]["TotalResults"], 2000);
}

#[test]
fn the_snapshot_commands_drive_the_admin_port() {
    let server = Server::start();
    let key = server.generate_key();
    let text = |output: &std::process::Output| {
        (
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let imported = server.cli(&["snapshot", "import", SAMPLE, "--date", "2024-05-14"]);
    let (out, err) = text(&imported);
    assert!(imported.status.success(), "{out}{err}");
    assert!(out.starts_with("imported the snapshot of 2024-05-14: 12 applications"), "{out}");
    let again = server.cli(&["snapshot", "import", SAMPLE, "--date", "2024-05-14", "--json"]);
    let json: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(json["result"], "replaced");

    let sample: Value = serde_json::from_str(&std::fs::read_to_string(SAMPLE).unwrap()).unwrap();
    let page = server.get_with_key(&format!("{BASE}/TechnicalDebt_Application?Limit=200"), &key);
    let served: Vec<String> = page.json()["Applications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["GUID"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(served, serving_order(&sample));

    let listed = server.cli(&["snapshot", "list"]);
    let (out, _) = text(&listed);
    assert!(out.contains("DATE        LAST ANALYZED ON"), "{out}");
    assert!(out.contains("2024-05-14  2024-05-14T06:00:09.417Z"), "{out}");
    let listed = server.cli(&["snapshot", "list", "--json"]);
    let json: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(json["snapshots"][0]["applications"], 12);

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        std::fs::read_to_string(SAMPLE).unwrap().replacen("\"Count\": ", "\"Count\": -", 1),
    )
    .unwrap();
    let refused =
        server.cli(&["snapshot", "import", bad.to_str().unwrap(), "--date", "2024-05-15"]);
    let (_, err) = text(&refused);
    assert_eq!(refused.status.code(), Some(4));
    assert!(err.contains("422 invalid_snapshot"), "{err}");
    assert!(err.contains(".Findings[0].Count: Count is -"), "{err}");
    let missing = server.cli(&["snapshot", "import", "/nonexistent.json", "--date", "2024-05-15"]);
    assert_eq!(missing.status.code(), Some(6));
    assert!(text(&missing).1.contains("/nonexistent.json: cannot open"));
    let usage = server.cli(&["snapshot", "import", SAMPLE, "--date", "2024-5-15"]);
    assert_eq!(usage.status.code(), Some(64));

    let deleted = server.cli(&["snapshot", "delete", "2024-05-14"]);
    let (out, _) = text(&deleted);
    assert!(deleted.status.success());
    assert!(out.contains("deleted the snapshot of 2024-05-14; no snapshot is left"), "{out}");
    let gone = server.cli(&["snapshot", "delete", "2024-05-14"]);
    assert_eq!(gone.status.code(), Some(4));
    assert!(text(&gone).1.contains("404 not_found"));
    let (out, _) = text(&server.cli(&["snapshot", "list"]));
    assert!(out.contains("no snapshot is served"), "{out}");
}

#[test]
fn both_samples_import_and_date_selects_between_them() {
    let server = Server::start();
    let key = server.generate_key();
    let older = SAMPLE.replace("2024-05-14", "2024-05-13");
    for (file, date) in [(SAMPLE.to_owned(), "2024-05-14"), (older, "2024-05-13")] {
        let body = std::fs::read(&file).unwrap();
        let (status, answer) = server.put_snapshot(date, &body);
        assert_eq!(status, 201, "{file}: {answer}");
    }
    let day = |query: &str| {
        let page = server.get_with_key(&format!("{BASE}/TechnicalDebt_Application{query}"), &key);
        page.json()["InfrastructureInfo"]["LastAnalyzedOn"].as_str().unwrap().to_owned()
    };
    assert!(day("").starts_with("2024-05-14"));
    assert!(day("?Date=2024-05-13").starts_with("2024-05-13"));
}

/// Issue 18: a NUL in a name was accepted and served, and a 50 MB level name made every Level
/// answer 52 MB and left the store 268 MB after the good data came back. Each string is now
/// bounded and clean: a violation is a 422 that names its JSON path, and nothing changes.
#[test]
fn strings_are_bounded_and_clean_and_a_violation_changes_nothing() {
    let server = Server::start();
    let key = server.generate_key();
    let good = snapshot_json(6, 1, "2024-05-14T06:00:00.000Z");
    server.import("2024-05-14", &good);
    let level = format!("{BASE}/TechnicalDebt_Level");
    let before = server.get_with_key(&level, &key).body;
    let store_before = server.admin("GET", "/snapshots").1["total"]["store_bytes"].clone();
    type Change = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(Change, &str, String)> = vec![
        (
            Box::new(|s| s["Levels"][0]["Name"] = json!("L\u{0}w")),
            "$.Levels[0].Name",
            "character 1 is U+0000, a control character; strings may not hold control \
             characters, line separators or bidirectional controls"
                .into(),
        ),
        (
            Box::new(|s| s["Levels"][1]["Name"] = json!("x".repeat(50 << 20))),
            "$.Levels[1].Name",
            format!(
                "the string is {} bytes long; this field takes at most 1024 bytes of UTF-8",
                50 << 20
            ),
        ),
        (
            Box::new(|s| s["Applications"][2]["GUID"] = json!("g".repeat(257))),
            "$.Applications[2].GUID",
            "the string is 257 bytes long; this field takes at most 256 bytes of UTF-8".into(),
        ),
        (
            Box::new(|s| s["Teams"][1]["Name"] = json!("Team\u{202E}A")),
            "$.Teams[1].Name",
            "character 4 is U+202E, a control character; strings may not hold control \
             characters, line separators or bidirectional controls"
                .into(),
        ),
    ];
    for (change, path, reason) in cases {
        let mut bad = good.clone();
        bad["LastAnalyzedOn"] = json!("2024-05-15T06:00:00.000Z");
        change(&mut bad);
        let (status, answer) = server.put_snapshot("2024-05-15", bad.to_string().as_bytes());
        assert_eq!((status, answer["error"].as_str()), (422, Some("invalid_snapshot")), "{path}");
        assert_eq!(
            (answer["path"].as_str(), answer["reason"].as_str()),
            (Some(path), Some(&*reason))
        );
    }
    assert_eq!(server.get_with_key(&level, &key).body, before, "the same bytes are served");
    let listed = server.admin("GET", "/snapshots").1;
    assert_eq!(listed["total"]["store_bytes"], store_before, "nothing written: {listed}");
    assert_eq!(listed["total"]["dates"], 1);
}

/// The import is parsed as it arrives: a body that cannot be a snapshot is refused after its
/// first KiB, whatever length it announces, and the rest is never read (here it is never even
/// sent: the answer comes while the client still owes 200 MB).
#[test]
fn a_body_that_cannot_be_a_snapshot_is_refused_within_its_first_kib() {
    let server = Server::start();
    let mut stream = TcpStream::connect(server.admin).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = format!(
        "PUT /snapshots/2024-05-14 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n",
        200u64 << 20
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&[0u8; 1024]).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let response = Response::parse(&answer).expect("an answer before the rest of the body");
    assert_eq!(response.status, 422, "{}", String::from_utf8_lossy(&answer));
    let body = response.json();
    assert_eq!(
        (body["path"].as_str(), body["reason"].as_str()),
        (Some("$"), Some("a snapshot is a JSON object, {…} (line 1, column 1)"))
    );
    assert_eq!(server.admin("GET", "/snapshots").1["total"]["dates"], 0);
}

/// Space a replacement frees is given back: once more than `compact_free_percent` of the file
/// is free the store compacts, and `store_bytes` is the file's size, as it is on disk.
#[test]
fn a_replacement_that_frees_most_of_the_store_gives_the_space_back() {
    let server = Server::start();
    let stamp = "2024-05-14T06:00:00.000Z";
    let big = snapshot_json(3000, 1, stamp).to_string();
    assert_eq!(server.put_snapshot("2024-05-14", big.as_bytes()).0, 201);
    let store = server.state_dir().join("history.redb");
    let total = |server: &Server| server.admin("GET", "/snapshots").1["total"].clone();
    let grown = total(&server)["store_bytes"].as_u64().unwrap();
    assert_eq!(grown, std::fs::metadata(&store).unwrap().len());
    let small = snapshot_json(10, 2, stamp).to_string();
    assert_eq!(server.put_snapshot("2024-05-14", small.as_bytes()).0, 200);
    let log = server.wait_for_log("snapshots: compacted ");
    let shrunk = total(&server)["store_bytes"].as_u64().unwrap();
    assert_eq!(shrunk, std::fs::metadata(&store).unwrap().len(), "the size on disk");
    assert!(shrunk * 4 < grown, "{grown} bytes, then {shrunk}\n{log}");
    // What is left is the small date, whole.
    assert_eq!(server.verified_history().1, ["2024-05-14"]);
}
