//! The V1 API behind the gate: every method, parameter, filter, page and error, as a client
//! written for the hosted service sees them.

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::util::{
    ACTIVATION_CODE, BASE, CLIENT_BASE, Response, Server, no_method, serving_order, snapshot_json,
};

const ANALYZED: &str = "2024-05-14T06:00:00.123Z";

/// A server with a key and one imported snapshot of `apps` applications.
fn serving(apps: usize) -> (Server, String, Value) {
    let server = Server::start();
    let key = server.generate_key();
    let snapshot = snapshot_json(apps, 1, ANALYZED);
    server.import("2024-05-14", &snapshot);
    (server, key, snapshot)
}

fn get(server: &Server, key: &str, path: &str) -> Response {
    server.get_with_key(path, key)
}

fn ok(server: &Server, key: &str, path: &str) -> Value {
    let response = get(server, key, path);
    assert_eq!(response.status, 200, "{path}: {}", String::from_utf8_lossy(&response.body));
    assert_eq!(response.header("content-type"), Some("application/json"), "{path}");
    response.json()
}

fn infrastructure(analyzed: &str) -> Value {
    json!({"ActivationCode": ACTIVATION_CODE, "LastAnalyzedOn": analyzed})
}

/// What the Application method should answer for one application of `snapshot`: the input,
/// with findings in pattern order and modules by name.
fn expected_application(snapshot: &Value, guid: &str) -> Value {
    let app = snapshot["Applications"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["GUID"] == guid)
        .unwrap()
        .clone();
    let sort_findings = |findings: &Value| {
        let mut list = findings.as_array().unwrap().clone();
        list.sort_by_key(|f| f["PatternGUID"].as_str().unwrap().to_owned());
        Value::Array(list)
    };
    let mut modules = app["Modules"].as_array().unwrap().clone();
    modules.sort_by_key(|m| m["Name"].as_str().unwrap().to_lowercase());
    let modules: Vec<Value> = modules
        .into_iter()
        .map(|mut m| {
            m["Findings"] = sort_findings(&m["Findings"]);
            m
        })
        .collect();
    json!({
        "GUID": app["GUID"],
        "Name": app["Name"],
        "LevelGUID": app["LevelGUID"],
        "Findings": sort_findings(&app["Findings"]),
        "Modules": modules,
    })
}

#[test]
fn every_method_answers_as_specified_under_both_bases() {
    let (server, key, snapshot) = serving(12);
    let infra = infrastructure(ANALYZED);
    for base in [BASE, CLIENT_BASE] {
        let levels = ok(&server, &key, &format!("{base}/TechnicalDebt_Level"));
        assert_eq!(levels, json!({"InfrastructureInfo": infra, "Levels": snapshot["Levels"]}));
        let categories = ok(&server, &key, &format!("{base}/TechnicalDebt_Category"));
        assert_eq!(
            categories,
            json!({"InfrastructureInfo": infra, "Categories": snapshot["Categories"]})
        );
        let last = ok(&server, &key, &format!("{base}/TechnicalDebt_LastAnalysisDate"));
        assert_eq!(last, infra, "a bare InfrastructureInfo");

        let teams = ok(&server, &key, &format!("{base}/TechnicalDebt_Team"));
        assert_eq!(teams["InfrastructureInfo"], infra);
        let names: Vec<&str> = teams["Teams"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["Name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["Team 1", "Team 2", "Team 3"], "teams by name");
        let order = serving_order(&snapshot);
        for team in teams["Teams"].as_array().unwrap() {
            let input = snapshot["Teams"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["ExternalId"] == team["ExternalId"])
                .unwrap();
            let mut members: Vec<&str> = input["Applications"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["GUID"].as_str().unwrap())
                .collect();
            members.sort_by_key(|guid| order.iter().position(|g| g == guid));
            let served: Vec<&str> = team["Applications"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["GUID"].as_str().unwrap())
                .collect();
            assert_eq!(served, members, "a team's applications in application order");
        }

        let page = ok(&server, &key, &format!("{base}/TechnicalDebt_Application"));
        assert_eq!(page["InfrastructureInfo"], infra);
        assert_eq!(
            page["Page"],
            json!({"Limit": 20, "Offset": 0, "NextPageOffset": 12, "TotalResults": 12,
                   "TotalPages": 1})
        );
        let apps = page["Applications"].as_array().unwrap();
        let guids: Vec<&str> = apps.iter().map(|a| a["GUID"].as_str().unwrap()).collect();
        assert_eq!(guids, order);
        for app in apps {
            assert_eq!(*app, expected_application(&snapshot, app["GUID"].as_str().unwrap()));
        }
    }
}

#[test]
fn counts_are_int64_numbers_and_timestamps_keep_milliseconds() {
    let server = Server::start();
    let key = server.generate_key();
    let mut snapshot = snapshot_json(3, 1, "2024-05-14T06:00:00Z");
    let big = 1_234_567_891_234_567_i64;
    snapshot["Applications"][1]["Findings"] =
        json!([{"CategoryGUID": "cat-0", "PatternGUID": "pat-0-0", "Count": big}]);
    server.import("2024-05-14", &snapshot);
    let body = get(&server, &key, &format!("{BASE}/TechnicalDebt_Application")).body;
    let text = String::from_utf8(body).unwrap();
    assert!(text.contains(&format!("\"Count\":{big}}}")), "a JSON number, not a string");
    let last = ok(&server, &key, &format!("{BASE}/TechnicalDebt_LastAnalysisDate"));
    assert_eq!(last["LastAnalyzedOn"], "2024-05-14T06:00:00.000Z");
}

#[test]
fn pagination_covers_every_application_exactly_once() {
    let (server, key, snapshot) = serving(47);
    let order = serving_order(&snapshot);
    for limit in [1, 7, 20, 46, 47, 200] {
        let mut seen = Vec::new();
        let mut offset = 0;
        let mut pages = 0;
        loop {
            let path = format!("{BASE}/TechnicalDebt_Application?Limit={limit}&Offset={offset}");
            let page = ok(&server, &key, &path);
            let meta = &page["Page"];
            let apps = page["Applications"].as_array().unwrap();
            assert_eq!(
                (meta["Limit"].as_u64(), meta["Offset"].as_u64()),
                (Some(limit), Some(offset))
            );
            assert_eq!(meta["TotalResults"], 47);
            assert_eq!(meta["TotalPages"].as_u64(), Some(47_u64.div_ceil(limit)));
            assert_eq!(meta["NextPageOffset"].as_u64(), Some(offset + apps.len() as u64));
            assert!(apps.len() as u64 <= limit);
            seen.extend(apps.iter().map(|a| a["GUID"].as_str().unwrap().to_owned()));
            pages += 1;
            offset = meta["NextPageOffset"].as_u64().unwrap();
            if offset == 47 {
                break;
            }
            assert!(pages < 100, "pagination does not end");
        }
        assert_eq!(pages, 47_u64.div_ceil(limit), "Limit={limit}");
        assert_eq!(seen, order, "Limit={limit}: every application once, in order");
        assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 47);
    }
    // Past the last page: at TotalResults an empty page, beyond it a 400.
    let at_end = ok(&server, &key, &format!("{BASE}/TechnicalDebt_Application?Offset=47"));
    assert_eq!(at_end["Applications"], json!([]));
    assert_eq!(at_end["Page"]["NextPageOffset"], 47);
    let beyond = get(&server, &key, &format!("{BASE}/TechnicalDebt_Application?Offset=48"));
    assert_eq!(beyond.status, 400);
    assert_eq!(beyond.exception(), "Offset 48 is past the end of the results (TotalResults is 47)");
}

#[test]
fn filters_select_one_application_or_one_module() {
    let (server, key, snapshot) = serving(12);
    let apps = snapshot["Applications"].as_array().unwrap();
    // Application 6 has 2 modules (6 % 4), application 7 has 3.
    let app = &apps[6];
    let guid = app["GUID"].as_str().unwrap();
    let expected = expected_application(&snapshot, guid);
    let one_page = json!({"Limit": 20, "Offset": 0, "NextPageOffset": 1, "TotalResults": 1,
                          "TotalPages": 1});

    for value in [guid.to_owned(), guid.to_uppercase()] {
        let path = format!("{BASE}/TechnicalDebt_Application?ApplicationGUID={value}");
        let page = ok(&server, &key, &path);
        assert_eq!(page["Applications"], json!([expected]));
        assert_eq!(page["Page"], one_page);
    }

    let module = &expected["Modules"][1];
    let module_guid = module["GUID"].as_str().unwrap();
    let mut parent = expected.clone();
    parent["Modules"] = json!([module]);
    for query in [
        format!("ModuleGUID={module_guid}"),
        format!("ModuleGUID={module_guid}&ApplicationGUID={guid}"),
        format!("moduleguid={}&applicationguid={guid}", module_guid.to_uppercase()),
    ] {
        let page = ok(&server, &key, &format!("{BASE}/TechnicalDebt_Application?{query}"));
        assert_eq!(page["Applications"], json!([parent]), "{query}");
        assert_eq!(page["Page"], one_page, "{query}");
    }
    // A filtered result is a one-element set: Offset=1 is its empty end, Offset=2 is past it.
    let path = format!("{BASE}/TechnicalDebt_Application?ApplicationGUID={guid}&Offset=1&Limit=5");
    let page = ok(&server, &key, &path);
    assert_eq!(page["Applications"], json!([]));
    assert_eq!(page["Page"]["NextPageOffset"], 1);
    let path = format!("{BASE}/TechnicalDebt_Application?ModuleGUID={module_guid}&Offset=2");
    assert_eq!(get(&server, &key, &path).status, 400);

    let other_module = apps[7]["Modules"][0]["GUID"].as_str().unwrap();
    let no_app = "no application has GUID `no-such-app`";
    let not_found = [
        ("ApplicationGUID=no-such-app".to_owned(), no_app.to_owned()),
        ("ModuleGUID=no-such-module".to_owned(), "no module has GUID `no-such-module`".into()),
        (format!("ApplicationGUID=no-such-app&ModuleGUID={module_guid}"), no_app.to_owned()),
        (format!("ApplicationGUID={guid}&ModuleGUID=nope"), "no module has GUID `nope`".into()),
        (
            format!("ApplicationGUID={guid}&ModuleGUID={other_module}"),
            format!("module `{other_module}` is not in application `{guid}`"),
        ),
    ];
    for (query, message) in not_found {
        let response = get(&server, &key, &format!("{BASE}/TechnicalDebt_Application?{query}"));
        assert_eq!(response.status, 404, "{query}");
        assert_eq!(response.exception(), message, "{query}");
    }

    let team = ok(&server, &key, &format!("{BASE}/TechnicalDebt_Team?Team=TEAM-1"));
    let teams = team["Teams"].as_array().unwrap();
    assert_eq!(teams.len(), 1);
    assert_eq!(teams[0]["ExternalId"], "team-1");
    assert_eq!(teams[0]["Applications"].as_array().unwrap().len(), 4);
    let none = ok(&server, &key, &format!("{BASE}/TechnicalDebt_Team?team=nobody"));
    assert_eq!(none, json!({"InfrastructureInfo": infrastructure(ANALYZED), "Teams": []}));
}

#[test]
fn date_selects_a_snapshot_and_the_newest_answers_without_it() {
    let server = Server::start();
    let key = server.generate_key();
    let older = snapshot_json(5, 1, "2024-05-13T06:00:00.000Z");
    let newer = snapshot_json(8, 2, "2024-05-14T18:30:00.250Z");
    server.import("2024-05-14", &newer);
    server.import("2024-05-13", &older);
    let page = ok(&server, &key, &format!("{BASE}/TechnicalDebt_Application"));
    assert_eq!(page["InfrastructureInfo"]["LastAnalyzedOn"], "2024-05-14T18:30:00.250Z");
    assert_eq!(page["Page"]["TotalResults"], 8);
    let page = ok(&server, &key, &format!("{BASE}/TechnicalDebt_Application?date=2024-05-13"));
    assert_eq!(page["InfrastructureInfo"]["LastAnalyzedOn"], "2024-05-13T06:00:00.000Z");
    assert_eq!(page["Page"]["TotalResults"], 5);
    // Reference data always comes from the newest.
    let levels = ok(&server, &key, &format!("{BASE}/TechnicalDebt_Level"));
    assert_eq!(levels["Levels"], newer["Levels"]);
    let missing = get(&server, &key, &format!("{BASE}/TechnicalDebt_Application?Date=2024-05-12"));
    assert_eq!(missing.status, 404);
    assert_eq!(missing.exception(), "no data for Date 2024-05-12");
}

#[test]
fn every_malformed_parameter_is_a_400_that_names_it() {
    let (server, key, _) = serving(3);
    let app = format!("{BASE}/TechnicalDebt_Application");
    let integer = |name: &str, range: &str, value: &str| {
        format!("{name} must be an integer {range}, not `{value}`")
    };
    let date = |value: &str, reason: &str| {
        format!("Date `{value}` is not a date ({reason}): write it YYYY-MM-DD")
    };
    let unknown = |name: &str, takes: &str| format!("unknown query parameter `{name}`: {takes}");
    let application = "this method takes ApplicationGUID, ModuleGUID, Date, Limit, Offset";
    let nothing = "this method takes no parameters";
    let limits = "from 1 to 200";
    let offsets = "from 0 to 2147483647";
    let cases = [
        (format!("{app}?Limit=0"), format!("Limit must be {limits}, not 0")),
        (format!("{app}?Limit=201"), format!("Limit must be {limits}, not 201")),
        (format!("{app}?Limit=-5"), format!("Limit must be {limits}, not -5")),
        (format!("{app}?Limit=ten"), integer("Limit", limits, "ten")),
        (format!("{app}?Limit=2.5"), integer("Limit", limits, "2.5")),
        (format!("{app}?Offset=-1"), format!("Offset must be {offsets}, not -1")),
        (format!("{app}?Offset=2147483648"), format!("Offset must be {offsets}, not 2147483648")),
        (format!("{app}?Offset=x"), integer("Offset", offsets, "x")),
        (format!("{app}?Date=2024-13-01"), date("2024-13-01", "the month must be from 01 to 12")),
        (format!("{app}?Date=14-05-2024"), date("14-05-2024", "a date is written YYYY-MM-DD")),
        (format!("{app}?Date=2024-02-30"), date("2024-02-30", "that month has no such day")),
        (format!("{app}?Limt=5"), unknown("Limt", application)),
        (format!("{app}?Team=x"), unknown("Team", application)),
        (format!("{app}?Limit=5&limit=6"), "Limit is given more than once".to_owned()),
        (
            format!("{app}?ApplicationGUID="),
            "ApplicationGUID is empty: give it a value, or leave it out".to_owned(),
        ),
        (
            format!("{app}?ModuleGUID"),
            "ModuleGUID is empty: give it a value, or leave it out".to_owned(),
        ),
        (format!("{BASE}/TechnicalDebt_Level?Date=2024-05-14"), unknown("Date", nothing)),
        (format!("{BASE}/TechnicalDebt_Category?x=1"), unknown("x", nothing)),
        (format!("{BASE}/TechnicalDebt_LastAnalysisDate?Limit=1"), unknown("Limit", nothing)),
        (format!("{BASE}/TechnicalDebt_Team?Limit=1"), unknown("Limit", "this method takes Team")),
        (
            format!("{BASE}/TechnicalDebt_Team?Team="),
            "Team is empty: give it a value, or leave it out".to_owned(),
        ),
        (format!("{BASE}/swagger.json?v=2"), unknown("v", nothing)),
    ];
    for (path, message) in cases {
        let response = get(&server, &key, &path);
        assert_eq!(response.status, 400, "{path}");
        assert_eq!(response.header("content-type"), Some("application/json"));
        assert_eq!(response.exception(), message, "{path}");
    }
}

#[test]
fn paths_and_parameter_names_match_in_any_case_with_a_trailing_slash() {
    let (server, key, _) = serving(5);
    for path in [
        "/ArchitectureDashboardAPI/rest/V1/TechnicalDebt_Level",
        "/ARCHITECTUREDASHBOARDAPI/REST/V1/TECHNICALDEBT_LEVEL/",
        "/architecturedashboardapi/rest/v1/technicaldebt_level",
        "/AIMentorStudioAPI/rest/v1/TechnicalDebt_Level/",
        "/aimentorstudioapi/rest/V1/TechnicalDebt_level",
    ] {
        assert_eq!(get(&server, &key, path).status, 200, "{path}");
    }
    let page = ok(
        &server,
        &key,
        "/aimentorstudioapi/rest/v1/technicaldebt_application/?LIMIT=2&offset=1&DaTe=2024-05-14",
    );
    assert_eq!(
        (page["Page"]["Limit"].as_u64(), page["Page"]["Offset"].as_u64()),
        (Some(2), Some(1))
    );
    for path in [
        format!("{BASE}/TechnicalDebt_Levels"),
        format!("{BASE}//TechnicalDebt_Level"),
        format!("{BASE}/TechnicalDebt_Level//"),
        BASE.to_owned(),
        "/ArchitectureDashboardAPI/rest/V2/TechnicalDebt_Level".to_owned(),
        "/TechnicalDebt_Level".to_owned(),
    ] {
        let response = get(&server, &key, &path);
        assert_eq!(response.status, 404, "{path}");
        assert_eq!(response.exception(), no_method(&path), "{path}");
    }
}

#[test]
fn only_get_and_head_are_served() {
    let (server, key, _) = serving(2);
    let path = format!("{BASE}/TechnicalDebt_Level");
    let full = get(&server, &key, &path);
    for method in ["HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        let mut stream = server.connect();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nx-api-key: {key}\r\n\
             x-activation-code: {ACTIVATION_CODE}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        std::io::Write::write_all(&mut stream, request.as_bytes()).unwrap();
        let mut raw = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stream, &mut raw);
        let (response, used) = Response::parse_prefix(&raw, method == "HEAD").unwrap();
        if method == "HEAD" {
            assert_eq!(response.status, 200);
            assert_eq!(
                response.header("content-length").unwrap(),
                full.body.len().to_string(),
                "HEAD announces the GET body's length"
            );
            assert_eq!(used, raw.len(), "and sends no body");
        } else {
            assert_eq!(response.status, 405, "{method}");
            assert_eq!(response.header("allow"), Some("GET, HEAD"), "{method}");
            let json: Value = serde_json::from_slice(&response.body).unwrap();
            assert_eq!(json["StatusCode"], 405, "{method}");
        }
    }
}

#[test]
fn without_data_every_method_is_a_404_but_swagger_answers() {
    let server = Server::start();
    let key = server.generate_key();
    for method in [
        "TechnicalDebt_Application",
        "TechnicalDebt_Category",
        "TechnicalDebt_LastAnalysisDate",
        "TechnicalDebt_Level",
        "TechnicalDebt_Team",
    ] {
        let response = get(&server, &key, &format!("{CLIENT_BASE}/{method}"));
        assert_eq!(response.status, 404, "{method}");
        let message = "no data: no analysis has been imported yet";
        assert_eq!(response.exception(), message, "{method}");
    }
    assert_eq!(get(&server, &key, &format!("{BASE}/swagger.json")).status, 200);
}

#[test]
fn swagger_describes_exactly_what_is_served() {
    let (server, key, _) = serving(3);
    let served = [
        "/TechnicalDebt_Application",
        "/TechnicalDebt_Category",
        "/TechnicalDebt_LastAnalysisDate",
        "/TechnicalDebt_Level",
        "/TechnicalDebt_Team",
        "/swagger.json",
    ];
    for base in [BASE, CLIENT_BASE] {
        let doc = ok(&server, &key, &format!("{base}/swagger.json"));
        assert_eq!(doc["swagger"], "2.0");
        assert_eq!(doc["basePath"], base);
        assert_eq!(doc["schemes"], json!(["https"]));
        let schemes = &doc["securityDefinitions"];
        for (name, header) in [("ApiKey", "x-api-key"), ("ActivationCode", "x-activation-code")] {
            assert_eq!(
                schemes[name],
                json!({"type": "apiKey", "in": "header", "name": header,
                "description": schemes[name]["description"]})
            );
        }
        assert_eq!(doc["security"], json!([{"ApiKey": [], "ActivationCode": []}]));
        let paths: Vec<&String> = doc["paths"].as_object().unwrap().keys().collect();
        let mut listed: Vec<&str> = paths.iter().map(|p| p.as_str()).collect();
        listed.sort_unstable();
        let mut expected = served.to_vec();
        expected.sort_unstable();
        assert_eq!(listed, expected, "every served path, and nothing else");
        for path in served {
            let operation = &doc["paths"][path]["get"];
            assert!(operation.is_object(), "{path} has a GET");
            assert_eq!(get(&server, &key, &format!("{base}{path}")).status, 200, "{path}");
            // Every parameter documented is accepted, under its documented name.
            for parameter in operation["parameters"].as_array().unwrap() {
                let parameter = match parameter.get("$ref").and_then(Value::as_str) {
                    Some(reference) => doc.pointer(reference.trim_start_matches('#')).unwrap(),
                    None => parameter,
                };
                let name = parameter["name"].as_str().unwrap();
                let value = match name {
                    "Date" => "2024-05-14",
                    "Limit" | "Offset" => "1",
                    _ => "none",
                };
                let response = get(&server, &key, &format!("{base}{path}?{name}={value}"));
                // Accepted: a page, or for a GUID that names nothing, a 404 saying so.
                let status = if name.ends_with("GUID") { 404 } else { 200 };
                assert_eq!(response.status, status, "{path}?{name}: {:?}", response.json());
            }
        }
        assert_eq!(doc["parameters"]["Limit"]["maximum"], 200);
        assert_eq!(doc["definitions"]["PatternFinding"]["properties"]["Count"]["format"], "int64");
    }
}

#[test]
fn the_gate_guards_every_method_including_swagger() {
    let (server, _, _) = serving(1);
    let response = server.get(&format!("{BASE}/swagger.json"), &[]);
    assert_eq!(response.status, 400);
    let response = server.get(
        &format!("{CLIENT_BASE}/TechnicalDebt_Level"),
        &[("x-api-key", "aims_wrong"), ("x-activation-code", ACTIVATION_CODE)],
    );
    assert_eq!(response.status, 401);
}
