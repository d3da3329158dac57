//! The history store of issue 12: export (`GET /snapshots/<date>`, `snapshot export`), sizes in
//! the listing, retention (`snapshots.keep_days` / `keep_count`), `snapshot verify`, the
//! take-over of a folder of snapshot files (the upgrade from one file per date), and kills held
//! at the moments that decide a prune.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use aims_api::keystore;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use serde_json::{Value, json};

use crate::util::{BASE, Options, Server, snapshot_json};

/// Imports `body` for `date`, new or replacing.
fn put(server: &Server, date: &str, body: &[u8]) -> Value {
    let (status, answer) = server.put_snapshot(date, body);
    assert!(status == 200 || status == 201, "{status} {answer}");
    answer
}

fn served_dates(server: &Server) -> Vec<String> {
    let (status, list) = server.admin("GET", "/snapshots");
    assert_eq!(status, 200, "{list}");
    list["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["date"].as_str().unwrap().into())
        .collect()
}

/// Every V1 answer a snapshot gives, as raw bodies: the whole answers, each team, pages of
/// applications at several offsets, each application and each module by GUID.
fn every_answer(server: &Server, key: &str, snapshot: &Value) -> Vec<(String, u16, Vec<u8>)> {
    every_answer_on(server, key, snapshot, None)
}

/// As [`every_answer`], with `Date=` on every application request when `date` is given (the
/// other methods answer from the newest date only).
fn every_answer_on(
    server: &Server,
    key: &str,
    snapshot: &Value,
    date: Option<&str>,
) -> Vec<(String, u16, Vec<u8>)> {
    let mut paths: Vec<String> = ["LastAnalysisDate", "Level", "Category", "Team"]
        .iter()
        .map(|m| format!("{BASE}/TechnicalDebt_{m}"))
        .collect();
    let mut app_queries = vec![String::new()];
    for (limit, offset) in [(200, 0), (3, 0), (3, 2), (10, 5), (1, 1000)] {
        app_queries.push(format!("Limit={limit}&Offset={offset}"));
    }
    for team in snapshot["Teams"].as_array().unwrap() {
        paths.push(format!(
            "{BASE}/TechnicalDebt_Team?Team={}",
            team["ExternalId"].as_str().unwrap()
        ));
    }
    for app in snapshot["Applications"].as_array().unwrap() {
        let guid = app["GUID"].as_str().unwrap();
        app_queries.push(format!("ApplicationGUID={guid}"));
        for module in app["Modules"].as_array().into_iter().flatten() {
            let guid = module["GUID"].as_str().unwrap();
            app_queries.push(format!("ModuleGUID={guid}"));
        }
    }
    for query in app_queries {
        let query = match (date, query.is_empty()) {
            (None, true) => String::new(),
            (None, false) => format!("?{query}"),
            (Some(date), true) => format!("?Date={date}"),
            (Some(date), false) => format!("?{query}&Date={date}"),
        };
        paths.push(format!("{BASE}/TechnicalDebt_Application{query}"));
    }
    paths
        .into_iter()
        .map(|path| {
            let response = server.get_with_key(&path, key);
            (path, response.status, response.body)
        })
        .collect()
}

/// A snapshot from `snapshot_json`, written the ways people write files: names with quotes,
/// backslashes and non-ASCII, references in another letter case than declared, empty lists
/// left out, a timestamp with or without fractions, pretty-printed or compact.
#[derive(Debug, Clone)]
struct Variant {
    apps: usize,
    seed: u64,
    stamp: &'static str,
    suffix: String,
    shout_references: bool,
    drop_empty_lists: bool,
    pretty: bool,
}

impl Variant {
    fn document(&self) -> Value {
        let mut snapshot = snapshot_json(self.apps, self.seed, self.stamp);
        for app in snapshot["Applications"].as_array_mut().unwrap() {
            let name = format!("{}{}", app["Name"].as_str().unwrap(), self.suffix);
            app["Name"] = json!(name);
            if self.shout_references {
                let level = app["LevelGUID"].as_str().unwrap().to_uppercase();
                app["LevelGUID"] = json!(level);
            }
            if self.drop_empty_lists {
                let object = app.as_object_mut().unwrap();
                for list in ["Findings", "Modules"] {
                    if object[list].as_array().unwrap().is_empty() {
                        object.remove(list);
                    }
                }
            }
        }
        if self.shout_references {
            for team in snapshot["Teams"].as_array_mut().unwrap() {
                for member in team["Applications"].as_array_mut().unwrap() {
                    let guid = member["GUID"].as_str().unwrap().to_uppercase();
                    member["GUID"] = json!(guid);
                }
            }
        }
        snapshot
    }

    fn bytes(&self) -> Vec<u8> {
        let document = self.document();
        match self.pretty {
            true => serde_json::to_vec_pretty(&document).unwrap(),
            false => serde_json::to_vec(&document).unwrap(),
        }
    }
}

fn variants() -> impl Strategy<Value = Variant> {
    let stamps = prop_oneof![
        Just("2024-05-14T06:00:00Z"),
        Just("2024-05-14T06:00:00.5Z"),
        Just("2024-05-14T23:59:59.999Z"),
        Just("2023-12-31T00:00:00.000000Z"),
    ];
    (
        0usize..25,
        0u64..1000,
        stamps,
        "[ -~éü\u{1F600}]{0,6}",
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(apps, seed, stamp, suffix, shout_references, drop_empty_lists, pretty)| {
            Variant { apps, seed, stamp, suffix, shout_references, drop_empty_lists, pretty }
        })
}

/// export → import → export gives the same bytes, and the imported export answers every V1
/// method exactly as the original: two servers, one fed the original, one fed its export. The
/// original also keeps the same data under an older date, which is served from the store on
/// demand (not held whole like the newest): its export and its pages are the same bytes.
#[test]
fn export_import_export_is_byte_identical_and_answers_the_same() {
    let original = Server::start();
    let copy = Server::start();
    let (key_original, key_copy) = (original.generate_key(), copy.generate_key());
    let (date, older) = ("2024-05-14", "2024-01-01");
    let mut runner = TestRunner::new(ProptestConfig { cases: 24, ..ProptestConfig::default() });
    runner
        .run(&variants(), |variant| {
            put(&original, date, &variant.bytes());
            put(&original, older, &variant.bytes());
            let (status, first) = original.export(date);
            prop_assert_eq!(status, 200, "{}", String::from_utf8_lossy(&first));
            put(&copy, date, &first);
            let (status, second) = copy.export(date);
            prop_assert_eq!(status, 200);
            prop_assert_eq!(String::from_utf8_lossy(&first), String::from_utf8_lossy(&second));
            let (status, from_older) = original.export(older);
            prop_assert_eq!(status, 200);
            prop_assert_eq!(String::from_utf8_lossy(&first), String::from_utf8_lossy(&from_older));

            let document = variant.document();
            let answers = every_answer(&original, &key_original, &document);
            let again = every_answer(&copy, &key_copy, &document);
            let on_older = every_answer_on(&original, &key_original, &document, Some(older));
            let on_newest = every_answer_on(&copy, &key_copy, &document, Some(date));
            prop_assert_eq!(on_older.len(), on_newest.len());
            for ((path, status, body), (path_again, status_again, body_again)) in
                on_older.iter().zip(&on_newest)
            {
                prop_assert_eq!(
                    (path.replace(older, date), status),
                    (path_again.clone(), status_again)
                );
                prop_assert_eq!(
                    String::from_utf8_lossy(body),
                    String::from_utf8_lossy(body_again),
                    "{}",
                    path
                );
            }
            prop_assert_eq!(answers.len(), again.len());
            for ((path, status, body), (_, status_again, body_again)) in answers.iter().zip(&again)
            {
                prop_assert_eq!((path, status), (path, status_again));
                prop_assert_eq!(
                    String::from_utf8_lossy(body),
                    String::from_utf8_lossy(body_again),
                    "{}",
                    path
                );
            }
            Ok(())
        })
        .unwrap_or_else(|failure| panic!("{failure}"));
}

#[test]
fn export_on_the_admin_port_and_the_cli() {
    let server = Server::start();
    let snapshot = snapshot_json(12, 7, "2024-05-14T06:00:00Z");
    // Pretty-printed: the export is the canonical form, not the file as stored.
    let stored = serde_json::to_vec_pretty(&snapshot).unwrap();
    put(&server, "2024-05-14", &stored);
    let (status, exported) = server.export("2024-05-14");
    assert_eq!(status, 200);
    assert_ne!(exported, stored, "the export is rendered, not the stored file");
    let exported_json: Value = serde_json::from_slice(&exported).unwrap();
    assert_eq!(exported_json["FormatVersion"], 1);
    assert_eq!(exported_json["LastAnalyzedOn"], "2024-05-14T06:00:00.000Z");
    assert_eq!(exported_json["Applications"].as_array().unwrap().len(), 12);
    assert_eq!(exported_json["Teams"].as_array().unwrap().len(), 3);

    // No file takes part: the store keeps pieces, and the date exports the same after a
    // restart (read back from the store), and as an older date (read on demand).
    assert_eq!(server.snapshot_files(), Vec::<String>::new());
    let (dir, config) = server.shut_down();
    let server = Server::start_in(dir, config).unwrap();
    assert_eq!(server.export("2024-05-14"), (200, exported.clone()));
    put(&server, "2024-05-20", &stored);
    assert_eq!(server.export("2024-05-14"), (200, exported.clone()));

    let (status, body) = server.admin("GET", "/snapshots/2024-05-13");
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")), "{body}");
    assert_eq!(
        body["message"],
        "no snapshot for 2024-05-13 is served: aims-api snapshot list shows the dates there are"
    );
    let (status, body) = server.admin("GET", "/snapshots/2024-13-01");
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_date")), "{body}");
    let (status, body) = server.admin("POST", "/snapshots/2024-05-14");
    assert_eq!(
        (status, body["message"].as_str()),
        (405, Some("allowed methods: GET, HEAD, PUT, DELETE"))
    );

    // The CLI: standard output carries exactly the bytes; --output writes them durably.
    let out = server.cli(&["snapshot", "export", "2024-05-14"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.stdout, exported);
    let target = server.dir.path().join("exports/out.json");
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::write(&target, "an older export").unwrap();
    let out =
        server.cli(&["snapshot", "export", "2024-05-14", "--output", target.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!(
            "exported the snapshot of 2024-05-14 to {} ({} bytes)\n",
            target.display(),
            exported.len()
        )
    );
    assert_eq!(std::fs::read(&target).unwrap(), exported);
    assert_eq!(std::fs::metadata(&target).unwrap().permissions().mode() & 0o777, 0o600);
    let names: Vec<_> = std::fs::read_dir(target.parent().unwrap()).unwrap().collect();
    assert_eq!(names.len(), 1, "no temporary file is left beside the export");

    let out = server.cli(&["snapshot", "export", "2024-05-01", "-o", target.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "aims-api: the admin port refused (404 not_found): no snapshot for 2024-05-01 is \
         served: aims-api snapshot list shows the dates there are\n"
    );
    assert_eq!(std::fs::read(&target).unwrap(), exported, "a failed export leaves FILE as it was");
}

#[test]
fn the_listing_reports_disk_and_memory_per_date_and_in_total() {
    let server = Server::start_with(&Options {
        top: "snapshots: (cached_dates: 1, cache_mib: 1),".into(),
        ..Options::default()
    });
    let before = SystemTime::now();
    for (date, apps) in [("2024-05-12", 6), ("2024-05-13", 4), ("2024-05-14", 9)] {
        let stamp = format!("{date}T06:00:00.000Z");
        put(&server, date, snapshot_json(apps, 1, &stamp).to_string().as_bytes());
    }
    let after = SystemTime::now();
    let listing = || {
        let (status, list) = server.admin("GET", "/snapshots");
        assert_eq!(status, 200);
        let sizes: Vec<(String, u64, u64)> = list["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let date = e["date"].as_str().unwrap().to_owned();
                (date, e["disk_bytes"].as_u64().unwrap(), e["memory_bytes"].as_u64().unwrap())
            })
            .collect();
        (list, sizes)
    };
    let (list, sizes) = listing();
    let store = std::fs::metadata(server.state_dir().join("history.redb")).unwrap().len();
    // The newest is held whole; the older dates are on disk only until a request names one.
    let memory: Vec<u64> = sizes.iter().map(|s| s.2).collect();
    assert!(memory[0] > 0 && memory[1..] == [0, 0], "{list}");
    // Each date's share of the store; the shares add up to what the pieces take, within the
    // file (which also holds redb's own pages).
    let shares: u64 = sizes.iter().map(|s| s.1).sum();
    assert!(sizes.iter().all(|s| s.1 > 0) && shares <= store, "{list}");
    assert_eq!(list["total"]["dates"], 3);
    assert_eq!(list["total"]["store_bytes"], store);
    assert_eq!(list["total"]["disk_bytes"], store, "no refused file: the store is all");
    assert_eq!(list["total"]["memory_bytes"], memory[0], "{list}");
    // When each came in, in the order they were sent, and how.
    let arrivals: Vec<SystemTime> = list["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e["source"], "import", "{e}");
            humantime::parse_rfc3339(e["imported_at"].as_str().unwrap()).unwrap()
        })
        .collect();
    // Milliseconds in the listing: `before` is rounded down to compare.
    let before = keystore::whole_millis(before);
    assert!(arrivals.windows(2).all(|w| w[0] >= w[1]), "{list}");
    assert!(arrivals.iter().all(|at| (before..=after).contains(at)), "{list}");

    // A page of an older date reads it: it is in memory now, with its applications in the
    // cache. With cached_dates 1, reading a second older date lets the first go.
    let key = server.generate_key();
    let page = |date: &str| {
        let path = format!("{BASE}/TechnicalDebt_Application?Limit=200&Date={date}");
        let response = server.get_with_key(&path, &key);
        assert_eq!(response.status, 200, "{}", response.exception());
    };
    page("2024-05-13");
    let (list, sizes) = listing();
    assert!(sizes[1].2 > 0 && sizes[2].2 == 0, "{list}");
    let cache = list["total"]["cache_bytes"].as_u64().unwrap();
    assert!(cache > 0, "{list}");
    assert_eq!(list["total"]["memory_bytes"], sizes[0].2 + sizes[1].2 + cache);
    page("2024-05-12");
    let (list, sizes) = listing();
    assert!(sizes[1].2 == 0 && sizes[2].2 > 0, "{list}");

    let out = server.cli(&["snapshot", "list"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("DATE        LAST ANALYZED ON          APPLICATIONS  MODULES  FINDINGS       DISK     MEMORY  IMPORTED\n"), "{text}");
    let newest_imported = &list["snapshots"][0]["imported_at"].as_str().unwrap()[..16];
    assert!(text.contains(&format!("  {newest_imported}Z import  (newest: ")), "{text}");
    assert!(text.contains("\ntotal: 3 date(s), "), "{text}");
}

fn with_retention(section: &str) -> Options {
    Options { top: format!("snapshots: {section},"), ..Options::default() }
}

/// `YYYY-MM-DD` of the UTC day `days` before now.
fn days_ago(days: u64) -> String {
    let at = SystemTime::now() - Duration::from_secs(days * 86_400);
    humantime::format_rfc3339_seconds(at).to_string()[..10].to_owned()
}

#[test]
fn keep_count_prunes_the_oldest_after_each_import_audited_and_removed() {
    let server = Server::start_with(&with_retention("(keep_count: Some(3))"));
    let dates = ["2024-05-10", "2024-05-11", "2024-05-12", "2024-05-13", "2024-05-14"];
    let mut pruned_by = Vec::new();
    for date in dates {
        let stamp = format!("{date}T06:00:00.000Z");
        let answer = put(&server, date, snapshot_json(3, 1, &stamp).to_string().as_bytes());
        pruned_by.push(answer["pruned"].clone());
    }
    assert_eq!(
        pruned_by,
        [json!([]), json!([]), json!([]), json!(["2024-05-10"]), json!(["2024-05-11"])]
    );
    assert_eq!(served_dates(&server), ["2024-05-14", "2024-05-13", "2024-05-12"]);
    assert_eq!(stored_dates(&server), ["2024-05-12", "2024-05-13", "2024-05-14"]);
    let log = server.wait_for_log("date=2024-05-11 result=pruned");
    for date in ["2024-05-10", "2024-05-11"] {
        let line = format!(
            "audit action=snapshot.prune client=server date={date} result=pruned rule=keep_count \
             limit=3\n"
        );
        assert_eq!(log.matches(&line).count(), 1, "{line} once in\n{log}");
    }
    assert_eq!(log.matches("action=snapshot.prune").count(), 2, "{log}");

    // An import of an old date is served, then pruned at once: the rule is the rule.
    let answer = put(
        &server,
        "2024-01-01",
        snapshot_json(1, 1, "2024-01-01T06:00:00Z").to_string().as_bytes(),
    );
    assert_eq!(answer["pruned"], json!(["2024-01-01"]));
    assert_eq!(served_dates(&server), ["2024-05-14", "2024-05-13", "2024-05-12"]);
}

#[test]
fn keep_days_prunes_dates_older_than_the_window_but_never_the_newest() {
    let server = Server::start_with(&with_retention("(keep_days: Some(3))"));
    // Far from the window's edge, so a test that runs across midnight still holds.
    let (kept, pruned) = ([days_ago(0), days_ago(1)], [days_ago(30), days_ago(6)]);
    for date in pruned.iter().chain(&kept) {
        let stamp = format!("{date}T06:00:00.000Z");
        put(&server, date, snapshot_json(2, 1, &stamp).to_string().as_bytes());
    }
    // Imported oldest first: the first date was the newest until the next came, so kept.
    let log = server.wait_for_log(&format!("date={} result=pruned", pruned[1]));
    assert_eq!(served_dates(&server), [kept[0].clone(), kept[1].clone()]);
    assert_eq!(stored_dates(&server), [kept[1].clone(), kept[0].clone()]);
    for date in &pruned {
        let line = format!(
            "audit action=snapshot.prune client=server date={date} result=pruned rule=keep_days \
             limit=3\n"
        );
        assert_eq!(log.matches(&line).count(), 1, "{line} once in\n{log}");
    }
}

#[test]
fn retention_also_runs_at_start_and_daily() {
    let server = Server::start();
    for date in ["2024-05-11", "2024-05-12", "2024-05-13", "2024-05-14"] {
        let stamp = format!("{date}T06:00:00.000Z");
        put(&server, date, snapshot_json(2, 1, &stamp).to_string().as_bytes());
    }
    let (dir, config) = server.shut_down();
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text.replacen("    api: (", "    snapshots: (keep_count: Some(2)),\n    api: (", 1);
    std::fs::write(&config, text).unwrap();
    let server = Server::start_in(dir, config).unwrap();
    let log = server.wait_for_log("date=2024-05-12 result=pruned rule=keep_count limit=2");
    assert!(log.contains("date=2024-05-11 result=pruned rule=keep_count limit=2"), "{log}");
    assert_eq!(served_dates(&server), ["2024-05-14", "2024-05-13"]);
    assert_eq!(stored_dates(&server), ["2024-05-13", "2024-05-14"]);
}

fn verify(server: &Server, json: bool) -> (Option<i32>, String) {
    let mut args = vec!["snapshot", "verify"];
    if json {
        args.push("--json");
    }
    let out = server.cli(&args);
    let text = String::from_utf8(out.stdout).unwrap() + &String::from_utf8(out.stderr).unwrap();
    (out.status.code(), text)
}

/// The dates the history store holds, oldest first, from `snapshot verify --json`, which must
/// find every piece sound and none that no date names (a removal takes its pieces with it).
fn stored_dates(server: &Server) -> Vec<String> {
    let (code, dates) = server.verified_history();
    assert_eq!(code, Some(0), "verify finds no problem, waiting files included");
    dates
}

fn folder_files(folder: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(folder)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap())
        })
        .collect();
    files.sort();
    files
}

#[test]
fn verify_checks_every_piece_and_the_waiting_files_read_only() {
    let server = Server::start();
    for date in ["2024-05-13", "2024-05-14"] {
        let stamp = format!("{date}T06:00:00.000Z");
        put(&server, date, snapshot_json(5, 1, &stamp).to_string().as_bytes());
    }
    let store = server.state_dir().join("history.redb");
    // Beside a running server: the store is opened read-only, next to its one writer.
    let (code, text) = verify(&server, false);
    assert_eq!(code, Some(0), "{text}");
    // Five applications, one run of them, the level, category and team lists: nine pieces a
    // date, and the same nine for both (only the analysis time differs).
    assert_eq!(
        text,
        format!(
            "ok          2024-05-13: 9 piece(s), each matches its key\n\
             ok          2024-05-14: 9 piece(s), each matches its key\n\
             {}: 2 date(s), 9 distinct piece(s) checked\n\
             no problem found\n",
            store.display()
        )
    );

    // Files waiting in the folder: one that will be taken over, three that will not, a
    // temporary file and a file that is not a snapshot.
    let folder = server.state_dir().join("snapshots");
    let good = snapshot_json(2, 3, "2024-05-18T06:00:00Z");
    std::fs::write(folder.join("2024-05-18.json"), good.to_string()).unwrap();
    let mut bad = snapshot_json(5, 1, "2024-05-15T06:00:00Z");
    bad["Applications"][3]["LevelGUID"] = json!("no-such-level");
    std::fs::write(folder.join("2024-05-15.json"), bad.to_string()).unwrap();
    std::fs::write(folder.join("2024-05-16.json"), "{\"LastAnalyzedOn\": 5}").unwrap();
    std::fs::write(folder.join(".2024-05-17.json.4242.0.tmp"), "half").unwrap();
    std::fs::write(folder.join("notes.txt"), "mine").unwrap();
    let before = folder_files(&folder);
    let (code, text) = verify(&server, false);
    assert_eq!(code, Some(1), "{text}");
    for line in [
        "leftover    .2024-05-17.json.4242.0.tmp: a temporary file left by an interrupted write",
        "invalid     2024-05-15.json: $.Applications[3].LevelGUID: `no-such-level` names no level in $.Levels\n",
        "invalid     2024-05-16.json: $.LastAnalyzedOn: invalid type: integer `5`, expected a string (line 1, column 21)\n",
        "pending     2024-05-18.json: loads (",
        "ignored     notes.txt: not a snapshot file name (YYYY-MM-DD.json); ignored\n",
        "\n3 problem(s): import a good snapshot for a damaged date or an invalid file, or delete it",
        "\naims-api: snapshot verify found 3 problem(s): each line above names",
    ] {
        assert!(text.contains(line), "{line:?} in\n{text}");
    }
    let (code, text) = verify(&server, true);
    assert_eq!(code, Some(1));
    let report: Value = serde_json::from_str(text.split("\naims-api:").next().unwrap()).unwrap();
    assert_eq!((report["ok"].as_bool(), report["problems"].as_u64()), (Some(false), Some(3)));
    let invalid = &report["files"][1];
    assert_eq!(
        (invalid["file"].as_str(), invalid["status"].as_str(), invalid["path"].as_str()),
        (Some("2024-05-15.json"), Some("invalid"), Some("$.Applications[3].LevelGUID"))
    );
    assert_eq!(report["files"][2]["line"], 1);
    assert_eq!(report["files"][0]["status"], "leftover");
    assert_eq!(report["history"]["pieces"], 9);
    assert_eq!(folder_files(&folder), before, "verify changed nothing");
    assert_eq!(served_dates(&server), ["2024-05-14", "2024-05-13"]);
    for (name, _) in &before {
        std::fs::remove_file(folder.join(name)).unwrap();
    }

    // A flipped byte in the store, where a stored list keeps a level's name: verify names the
    // date and the piece. (A stopped server: the file is closed cleanly, then damaged.)
    let (dir, config) = server.shut_down();
    let mut bytes = std::fs::read(&store).unwrap();
    let name = b"\"Name\":\"Medium\"";
    let at =
        bytes.windows(name.len()).position(|w| w == name).expect("a level's name in the store");
    bytes[at + 8] = b'X';
    std::fs::write(&store, &bytes).unwrap();
    let server = Server::start_in(dir, config).unwrap();
    let (code, text) = verify(&server, false);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("damaged     2024-05-13: list "), "{text}");
    assert!(text.contains("damaged     2024-05-14: list "), "{text}");
    assert!(text.contains("\n2 problem(s)"), "{text}");
}

/// After a SIGKILL the store is not marked clean: verify says so and what to do, and the next
/// start repairs it at once, with every date as it was.
#[test]
fn after_a_kill_verify_waits_for_the_repair_that_the_next_start_makes() {
    let server = Server::start();
    put(&server, "2024-05-14", snapshot_json(5, 1, "2024-05-14T06:00:00Z").to_string().as_bytes());
    let (dir, config) = server.stop();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_aims-api"))
        .args(["snapshot", "verify", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("was not closed cleanly (the server was killed or crashed): `serve` repairs it in a moment at its next start; check again after that"),
        "{text}"
    );
    let server = Server::start_in(dir, config).unwrap();
    assert_eq!(stored_dates(&server), ["2024-05-14"]);
}

/// A SIGKILL while retention prunes at start, held at the two moments that decide it: with the
/// prune's one transaction written but not committed, every date is still there, whole; with it
/// committed (before the served set changes or a line is audited), every date due is gone and
/// the rest are whole. Nothing half-done is left for the next start or for verify.
#[test]
fn a_kill_during_pruning_leaves_every_date_due_whole_or_every_one_gone() {
    let server = Server::start();
    let dates: Vec<String> = (1..=8).map(|day| format!("2024-05-{day:02}")).collect();
    for date in &dates {
        let stamp = format!("{date}T06:00:00.000Z");
        put(&server, date, snapshot_json(300, 1, &stamp).to_string().as_bytes());
    }
    let exports: Vec<Vec<u8>> = dates.iter().map(|d| server.export(d).1).collect();
    let mut server = Some(server);
    for (point, left) in [("remove:commit", dates.len()), ("remove:committed", 1)] {
        let (dir, config) = server.take().unwrap().shut_down();
        let plain = std::fs::read_to_string(&config).unwrap();
        let pruning =
            plain.replacen("    api: (", "    snapshots: (keep_count: Some(1)),\n    api: (", 1);
        std::fs::write(&config, pruning).unwrap();
        let options = Options {
            env: vec![("AIMS_API_TEST_HOLD".into(), point.into())],
            ..Options::default()
        };
        let mut held = Server::start_in_with(dir, config, &options).unwrap();
        let log = held.wait_for_log(&format!("test hold: {point}"));
        assert!(!log.contains("action=snapshot.prune"), "killed before any is audited\n{log}");
        held.kill();
        let (dir, config) = held.stop();
        std::fs::write(&config, plain).unwrap();

        let restarted = Server::start_in(dir, config).unwrap();
        let (status, list) = restarted.admin("GET", "/snapshots");
        assert_eq!((status, &list["refused"]), (200, &json!([])), "{list}");
        let kept: Vec<String> = dates[dates.len() - left..].to_vec();
        let newest_first: Vec<String> = kept.iter().rev().cloned().collect();
        assert_eq!(served_dates(&restarted), newest_first, "killed at {point}");
        assert_eq!(stored_dates(&restarted), kept, "the store holds the served dates, whole");
        for (date, export) in dates.iter().zip(&exports) {
            if kept.contains(date) {
                assert_eq!(&restarted.export(date).1, export, "{date}, killed at {point}");
            }
        }
        server = Some(restarted);
    }
}
