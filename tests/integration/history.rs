//! The history tools of issue 12 that do not depend on the storage engine: export
//! (`GET /snapshots/<date>`, `snapshot export`), sizes in the listing, retention
//! (`snapshots.keep_days` / `keep_count`) and the offline `snapshot verify`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use serde_json::{Value, json};

use crate::util::{BASE, Options, Server, admin_exchange, snapshot_json};

/// `GET /snapshots/<date>` on the admin port: status and the body's bytes as sent.
fn export_raw(server: &Server, date: &str) -> (u16, Vec<u8>) {
    let answer = admin_exchange(server.admin, "GET", &format!("/snapshots/{date}"), b"");
    (answer.status, answer.body)
}

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
    let mut paths: Vec<String> = ["LastAnalysisDate", "Level", "Category", "Team", "Application"]
        .iter()
        .map(|m| format!("{BASE}/TechnicalDebt_{m}"))
        .collect();
    for (limit, offset) in [(200, 0), (3, 0), (3, 2), (10, 5), (1, 1000)] {
        paths.push(format!("{BASE}/TechnicalDebt_Application?Limit={limit}&Offset={offset}"));
    }
    for team in snapshot["Teams"].as_array().unwrap() {
        paths.push(format!(
            "{BASE}/TechnicalDebt_Team?Team={}",
            team["ExternalId"].as_str().unwrap()
        ));
    }
    for app in snapshot["Applications"].as_array().unwrap() {
        let guid = app["GUID"].as_str().unwrap();
        paths.push(format!("{BASE}/TechnicalDebt_Application?ApplicationGUID={guid}"));
        for module in app["Modules"].as_array().into_iter().flatten() {
            let guid = module["GUID"].as_str().unwrap();
            paths.push(format!("{BASE}/TechnicalDebt_Application?ModuleGUID={guid}"));
        }
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
        "[ -~éü\u{1F600}\u{1}\t]{0,6}",
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(apps, seed, stamp, suffix, shout_references, drop_empty_lists, pretty)| {
            Variant { apps, seed, stamp, suffix, shout_references, drop_empty_lists, pretty }
        })
}

/// export → import → export gives the same bytes, and the imported export answers every V1
/// method exactly as the original: two servers, one fed the original, one fed its export.
#[test]
fn export_import_export_is_byte_identical_and_answers_the_same() {
    let original = Server::start();
    let copy = Server::start();
    let (key_original, key_copy) = (original.generate_key(), copy.generate_key());
    let date = "2024-05-14";
    let mut runner = TestRunner::new(ProptestConfig { cases: 24, ..ProptestConfig::default() });
    runner
        .run(&variants(), |variant| {
            put(&original, date, &variant.bytes());
            let (status, first) = export_raw(&original, date);
            prop_assert_eq!(status, 200, "{}", String::from_utf8_lossy(&first));
            put(&copy, date, &first);
            let (status, second) = export_raw(&copy, date);
            prop_assert_eq!(status, 200);
            prop_assert_eq!(String::from_utf8_lossy(&first), String::from_utf8_lossy(&second));

            let document = variant.document();
            let answers = every_answer(&original, &key_original, &document);
            let again = every_answer(&copy, &key_copy, &document);
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
    let (status, exported) = export_raw(&server, "2024-05-14");
    assert_eq!(status, 200);
    assert_ne!(exported, stored, "the export is rendered, not the stored file");
    let exported_json: Value = serde_json::from_slice(&exported).unwrap();
    assert_eq!(exported_json["FormatVersion"], 1);
    assert_eq!(exported_json["LastAnalyzedOn"], "2024-05-14T06:00:00.000Z");
    assert_eq!(exported_json["Applications"].as_array().unwrap().len(), 12);
    assert_eq!(exported_json["Teams"].as_array().unwrap().len(), 3);

    // The file does not take part: remove it by hand, and the served data still exports.
    let file = server.state_dir().join("snapshots/2024-05-14.json");
    std::fs::remove_file(&file).unwrap();
    assert_eq!(export_raw(&server, "2024-05-14"), (200, exported.clone()));

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
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "aims-api: the admin port refused (404 not_found): no snapshot for 2024-05-01 is \
         served: aims-api snapshot list shows the dates there are\n"
    );
    assert_eq!(std::fs::read(&target).unwrap(), exported, "a failed export leaves FILE as it was");
}

#[test]
fn the_listing_reports_disk_and_memory_per_date_and_in_total() {
    let server = Server::start();
    for (date, apps) in [("2024-05-13", 4), ("2024-05-14", 9)] {
        let stamp = format!("{date}T06:00:00.000Z");
        put(&server, date, snapshot_json(apps, 1, &stamp).to_string().as_bytes());
    }
    let (status, list) = server.admin("GET", "/snapshots");
    assert_eq!(status, 200);
    let entries = list["snapshots"].as_array().unwrap();
    let mut disk_total = 0;
    let mut memory_total = 0;
    for entry in entries {
        let date = entry["date"].as_str().unwrap();
        let file = server.state_dir().join(format!("snapshots/{date}.json"));
        let on_disk = std::fs::metadata(&file).unwrap().len();
        assert_eq!(entry["disk_bytes"], on_disk, "{entry}");
        assert_eq!(entry["file_bytes"], on_disk, "the existing fields stay: {entry}");
        let memory = entry["memory_bytes"].as_u64().unwrap();
        assert!(memory > on_disk / 2, "rendered JSON and its gzip forms: {entry}");
        disk_total += on_disk;
        memory_total += memory;
    }
    assert_eq!(
        list["total"],
        json!({"dates": 2, "disk_bytes": disk_total, "memory_bytes": memory_total})
    );
    let out = server.cli(&["snapshot", "list"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("DATE        LAST ANALYZED ON          APPLICATIONS  MODULES  FINDINGS       DISK     MEMORY\n"), "{text}");
    assert!(text.contains("\ntotal: 2 date(s), "), "{text}");
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
    assert_eq!(server.snapshot_files(), ["2024-05-12.json", "2024-05-13.json", "2024-05-14.json"]);
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
    let files: Vec<String> = kept.iter().rev().map(|d| format!("{d}.json")).collect();
    assert_eq!(server.snapshot_files(), files);
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
    let (dir, config) = server.stop();
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text.replacen("    api: (", "    snapshots: (keep_count: Some(2)),\n    api: (", 1);
    std::fs::write(&config, text).unwrap();
    let server = Server::start_in(dir, config).unwrap();
    let log = server.wait_for_log("date=2024-05-12 result=pruned rule=keep_count limit=2");
    assert!(log.contains("date=2024-05-11 result=pruned rule=keep_count limit=2"), "{log}");
    assert_eq!(served_dates(&server), ["2024-05-14", "2024-05-13"]);
    assert_eq!(server.snapshot_files(), ["2024-05-13.json", "2024-05-14.json"]);
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

fn snapshot_files(folder: &Path) -> Vec<(String, Vec<u8>)> {
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
fn verify_passes_a_good_folder_and_names_each_problem_read_only() {
    let server = Server::start();
    for date in ["2024-05-13", "2024-05-14"] {
        let stamp = format!("{date}T06:00:00.000Z");
        put(&server, date, snapshot_json(5, 1, &stamp).to_string().as_bytes());
    }
    let folder = server.state_dir().join("snapshots");
    // Beside a running server (which holds the lock): verify needs neither.
    let (code, text) = verify(&server, false);
    assert_eq!(code, Some(0), "{text}");
    let bytes = |date: &str| std::fs::metadata(folder.join(format!("{date}.json"))).unwrap().len();
    assert_eq!(
        text,
        format!(
            "ok          2024-05-13.json: loads ({} bytes)\nok          2024-05-14.json: loads \
             ({} bytes)\n{}: 2 snapshot file(s), all load\n",
            bytes("2024-05-13"),
            bytes("2024-05-14"),
            folder.display()
        )
    );

    // Break it three ways, and add a file that is not a snapshot.
    let mut bad = snapshot_json(5, 1, "2024-05-15T06:00:00Z");
    bad["Applications"][3]["LevelGUID"] = json!("no-such-level");
    std::fs::write(folder.join("2024-05-15.json"), bad.to_string()).unwrap();
    std::fs::write(folder.join("2024-05-16.json"), "{\"LastAnalyzedOn\": 5}").unwrap();
    std::fs::write(folder.join(".2024-05-17.json.4242.0.tmp"), "half").unwrap();
    std::fs::write(folder.join("notes.txt"), "mine").unwrap();
    let before = snapshot_files(&folder);

    let (code, text) = verify(&server, false);
    assert_eq!(code, Some(1), "{text}");
    for line in [
        "leftover    .2024-05-17.json.4242.0.tmp: a temporary file left by an interrupted write",
        "invalid     2024-05-15.json: $.Applications[3].LevelGUID: `no-such-level` names no level in $.Levels\n",
        "invalid     2024-05-16.json: $.LastAnalyzedOn: invalid type: integer `5`, expected a string (line 1, column 20)\n",
        "ignored     notes.txt: not a snapshot file name (YYYY-MM-DD.json); ignored\n",
        ": 3 problem(s) among 6 file(s)",
        "\naims-api: snapshot verify found 3 problem(s): each line above names the file and what \
         is wrong\n",
    ] {
        assert!(text.contains(line), "{line:?} in\n{text}");
    }
    let (code, text) = verify(&server, true);
    assert_eq!(code, Some(1));
    let report: Value = serde_json::from_str(text.split("\naims-api:").next().unwrap()).unwrap();
    assert_eq!((report["ok"].as_bool(), report["problems"].as_u64()), (Some(false), Some(3)));
    let invalid = &report["files"][3];
    assert_eq!(
        (invalid["file"].as_str(), invalid["status"].as_str(), invalid["path"].as_str()),
        (Some("2024-05-15.json"), Some("invalid"), Some("$.Applications[3].LevelGUID"))
    );
    assert_eq!(report["files"][4]["line"], 1);
    assert_eq!(report["files"][0]["status"], "leftover");

    assert_eq!(snapshot_files(&folder), before, "verify changed nothing");
    assert_eq!(served_dates(&server), ["2024-05-14", "2024-05-13"]);
}

/// A SIGKILL while retention prunes at start: each date is left whole or gone (a prune is
/// one delete, an unlink and a folder fsync), the dates left are the newest ones (pruning goes
/// oldest first), and nothing half-done remains for the next start or for verify.
#[test]
fn a_kill_during_pruning_leaves_each_date_whole_or_gone() {
    let server = Server::start();
    let dates: Vec<String> = (1..=8).map(|day| format!("2024-05-{day:02}")).collect();
    for date in &dates {
        let stamp = format!("{date}T06:00:00.000Z");
        put(&server, date, snapshot_json(300, 1, &stamp).to_string().as_bytes());
    }
    let (dir, config) = server.stop();
    let plain = std::fs::read_to_string(&config).unwrap();
    let pruning =
        plain.replacen("    api: (", "    snapshots: (keep_count: Some(1)),\n    api: (", 1);
    std::fs::write(&config, pruning).unwrap();
    let mut server = Server::start_in(dir, config).unwrap();
    server.wait_for_log("audit action=snapshot.prune");
    server.kill();
    let (dir, config) = server.stop();
    std::fs::write(&config, plain).unwrap();

    let server = Server::start_in(dir, config).unwrap();
    let (status, list) = server.admin("GET", "/snapshots");
    assert_eq!((status, &list["refused"]), (200, &json!([])), "{list}");
    let served = served_dates(&server);
    assert!(!served.is_empty() && served.len() < dates.len(), "{served:?}");
    let newest_first: Vec<String> = dates.iter().rev().take(served.len()).cloned().collect();
    assert_eq!(served, newest_first, "the oldest go first");
    let mut files: Vec<String> = newest_first.iter().rev().map(|d| format!("{d}.json")).collect();
    files.sort();
    assert_eq!(server.snapshot_files(), files, "no file but the served ones, no temporary file");
    let (code, text) = verify(&server, false);
    assert_eq!(code, Some(0), "{text}");
}
