//! `aims-api snapshot pull` against real servers: the upstream is a second `aims-api serve`
//! with the sample snapshots imported (its own key, activation code and self-signed
//! certificate, given as `ca_file`), and faults come from the relay in `relay.rs` in front of
//! it. After a pull every V1 answer of the two servers is the same; after a failed one nothing
//! served has changed.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::relay::{Fault, Relay};
use crate::util::{
    ACTIVATION_CODE, BIN, CLIENT_BASE, Options, SAMPLE, Server, config_text, snapshot_json,
    tls_client_trusting,
};

const UPSTREAM_CODE: &str = "UPSTREAM-ACTIVATION-CODE";
const SAMPLE_13: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/snapshot-2024-05-13.json");

/// A second appliance playing the hosted service.
struct Upstream {
    server: Server,
    key: String,
}

impl Upstream {
    /// With the two sample snapshots imported.
    fn start() -> Self {
        let upstream = Self::empty();
        for (date, file) in [("2024-05-13", SAMPLE_13), ("2024-05-14", SAMPLE)] {
            let (status, body) = upstream.server.put_snapshot(date, &std::fs::read(file).unwrap());
            assert_eq!(status, 201, "{body}");
        }
        upstream
    }

    fn empty() -> Self {
        Self::empty_with(&Options::default())
    }

    fn empty_with(options: &Options) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.ron");
        let text = config_text(dir.path(), options).replace(ACTIVATION_CODE, UPSTREAM_CODE);
        std::fs::write(&config, text).unwrap();
        let server = Server::start_in(dir, config).unwrap();
        let key = server.generate_key();
        Self { server, key }
    }

    fn url(&self) -> String {
        format!("https://localhost:{}{CLIENT_BASE}", self.server.api.port())
    }

    fn cert(&self) -> PathBuf {
        self.server.state_dir().join("tls/cert.pem")
    }

    fn get(&self, path: &str) -> crate::util::Response {
        self.server.get(path, &[("x-api-key", &self.key), ("x-activation-code", UPSTREAM_CODE)])
    }

    fn relay(&self, fault: Fault) -> Relay {
        Relay::start(self.server.api, tls_client_trusting(&[self.cert()]), fault)
    }
}

/// How a pull is configured.
struct Pull<'a> {
    url: String,
    key: String,
    ca_file: Option<PathBuf>,
    /// More fields of the `upstream` section.
    extra: &'a str,
    timeout_secs: u32,
    env: Vec<(&'a str, PathBuf)>,
}

impl<'a> Pull<'a> {
    fn of(upstream: &Upstream) -> Self {
        Self {
            url: upstream.url(),
            key: upstream.key.clone(),
            ca_file: Some(upstream.cert()),
            extra: "",
            timeout_secs: 5,
            env: Vec::new(),
        }
    }

    fn through(relay: &Relay, upstream: &Upstream) -> Self {
        Self { url: relay.url(), ca_file: Some(relay.cert.clone()), ..Self::of(upstream) }
    }

    /// Writes the key file (0600) and a config naming `down`'s admin port; returns its path.
    fn config(&self, down: &Server) -> PathBuf {
        let key_file = down.dir.path().join("upstream-key");
        std::fs::write(&key_file, format!("{}\n", self.key)).unwrap();
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let ca = match &self.ca_file {
            Some(path) => format!("Some({:?})", path.display().to_string()),
            None => "None".to_owned(),
        };
        let text = std::fs::read_to_string(down.cli_config()).unwrap();
        let end = text.rfind(')').unwrap();
        let upstream = format!(
            "    upstream: Some((url: {:?}, api_key_file: {:?}, activation_code: \
             Some({UPSTREAM_CODE:?}), ca_file: {ca}, timeout_secs: {}, {})),\n",
            self.url,
            key_file.display().to_string(),
            self.timeout_secs,
            self.extra
        );
        let path = down.dir.path().join("pull.ron");
        std::fs::write(&path, format!("{}{upstream}{}", &text[..end], &text[end..])).unwrap();
        path
    }

    /// Runs `aims-api snapshot pull --json` with `args`; returns its output and duration.
    fn run(&self, down: &Server, args: &[&str]) -> (Output, Duration) {
        let config = self.config(down);
        let started = Instant::now();
        let output = Command::new(BIN)
            .args(["snapshot", "pull", "--json", "--config"])
            .arg(&config)
            .args(args)
            .env_remove("JOURNAL_STREAM")
            .env_remove("CREDENTIALS_DIRECTORY")
            .env_remove("RUST_LOG")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap();
        (output, started.elapsed())
    }
}

/// A GET on the admin port, as text.
fn admin_text(server: &Server, path: &str) -> String {
    let response = crate::util::admin_exchange(server.admin, "GET", path, b"");
    assert_eq!(response.status, 200);
    String::from_utf8(response.body).unwrap()
}

fn summary(output: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "pull failed: {stderr}");
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// Exit status of a pull the upstream failed (`aims-api(8)`, EXIT STATUS).
const UPSTREAM_FAILED: i32 = 7;

/// The error a failed pull printed, after checking it failed with exit status `code`.
fn failure(output: &Output, code: i32) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(code), "{stderr}");
    assert!(output.stdout.is_empty(), "{}", String::from_utf8_lossy(&output.stdout));
    stderr.lines().rfind(|l| l.starts_with("aims-api: ")).unwrap_or_default().to_owned()
}

/// A downstream appliance already serving the 2024-05-13 sample, and what it serves.
fn downstream_serving_a_sample() -> (Server, Value) {
    let down = Server::start();
    let (status, body) = down.put_snapshot("2024-05-13", &std::fs::read(SAMPLE_13).unwrap());
    assert_eq!(status, 201, "{body}");
    let (_, served) = down.admin("GET", "/snapshots");
    (down, served)
}

/// Nothing served changed: the same list (digests and sizes included), and nothing left in the
/// inbox folder.
fn assert_nothing_changed(down: &Server, before: &Value) {
    let (_, now) = down.admin("GET", "/snapshots");
    assert_eq!(&now, before);
    assert_eq!(down.snapshot_files(), Vec::<String>::new());
}

/// Every V1 answer of `down` equals the upstream's, apart from the activation code: each
/// method, every page at several page sizes, every application, module and team filter, with
/// and without `Date`, and the misses.
fn assert_same_answers(up: &Upstream, down: &Server, date: &str, every_filter: bool) {
    let down_key = down.generate_key();
    let all = up.get(&format!("{CLIENT_BASE}/TechnicalDebt_Application?Limit=200"));
    let total = all.json()["Page"]["TotalResults"].as_u64().unwrap() as usize;
    let mut paths: Vec<String> = ["Level", "Category", "Team", "LastAnalysisDate"]
        .iter()
        .map(|m| format!("TechnicalDebt_{m}"))
        .collect();
    for limit in [1, 7, 200] {
        for offset in (0..=total).step_by(limit.max(total / 5)) {
            paths.push(format!("TechnicalDebt_Application?Limit={limit}&Offset={offset}"));
        }
    }
    paths.push("TechnicalDebt_Application".into());
    paths.push("TechnicalDebt_Application?ApplicationGUID=no-such-application".into());
    paths.push("TechnicalDebt_Team?Team=no-such-team".into());
    if every_filter {
        let teams = up.get(&format!("{CLIENT_BASE}/TechnicalDebt_Team")).json();
        for team in teams["Teams"].as_array().unwrap() {
            let id = team["ExternalId"].as_str().unwrap();
            paths.push(format!("TechnicalDebt_Team?Team={}", id.to_uppercase()));
        }
        for app in all.json()["Applications"].as_array().unwrap() {
            paths.push(format!(
                "TechnicalDebt_Application?ApplicationGUID={}",
                app["GUID"].as_str().unwrap()
            ));
            for module in app["Modules"].as_array().unwrap() {
                let guid = module["GUID"].as_str().unwrap();
                paths.push(format!("TechnicalDebt_Application?ModuleGUID={guid}&Limit=3"));
            }
        }
    }
    let dated: Vec<String> =
        paths
            .iter()
            .filter(|p| p.starts_with("TechnicalDebt_Application"))
            .map(|p| {
                if p.contains('?') {
                    format!("{p}&Date={date}")
                } else {
                    format!("{p}?Date={date}")
                }
            })
            .collect();
    paths.extend(dated);
    for path in &paths {
        let a = up.get(&format!("{CLIENT_BASE}/{path}"));
        let b = down.get(
            &format!("{CLIENT_BASE}/{path}"),
            &[("x-api-key", &down_key), ("x-activation-code", ACTIVATION_CODE)],
        );
        let a_body = String::from_utf8_lossy(&a.body).replace(UPSTREAM_CODE, ACTIVATION_CODE);
        assert_eq!(
            (a.status, a_body.as_str()),
            (b.status, &*String::from_utf8_lossy(&b.body)),
            "{path}"
        );
    }
}

#[test]
fn a_pull_copies_every_answer_and_a_second_one_is_unchanged() {
    let up = Upstream::start();
    let down = Server::start();
    let pull = Pull::of(&up);
    let (output, _) = pull.run(&down, &[]);
    let first = summary(&output);
    assert_eq!(first["result"], "created", "{first}");
    assert_eq!(first["date"], "2024-05-14");
    assert_eq!(first["last_analyzed_on"], "2024-05-14T06:00:09.417Z");
    assert_eq!((first["applications"].as_u64(), first["modules"].as_u64()), (Some(12), Some(35)));
    assert_eq!(first["findings"], 174);
    // LastAnalysisDate, Level, Category, Team, one page, LastAnalysisDate.
    assert_eq!((first["requests"].as_u64(), first["retries"].as_u64()), (Some(6), Some(0)));
    assert_same_answers(&up, &down, "2024-05-14", true);

    // An unchanged pull writes nothing: the history store is not touched.
    let file = down.state_dir().join("history.redb");
    let written = std::fs::metadata(&file).unwrap().modified().unwrap();
    let (output, _) = pull.run(&down, &[]);
    let second = summary(&output);
    assert_eq!(second["result"], "unchanged", "{second}");
    assert_eq!(second["sha256"], first["sha256"]);
    assert_eq!(std::fs::metadata(&file).unwrap().modified().unwrap(), written);
    let (_, list) = down.admin("GET", "/snapshots");
    assert_eq!(list["snapshots"][0]["sha256"], first["sha256"], "{list}");

    assert_eq!(list["snapshots"][0]["source"], "pull", "{list}");
    let last_import = |server: &Server| {
        let metrics = admin_text(server, "/metrics");
        let line = metrics
            .lines()
            .find(|l| l.starts_with("aims_snapshot_last_import_timestamp_seconds{"))
            .unwrap_or_else(|| panic!("{metrics}"))
            .to_owned();
        let seconds: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        (line, seconds)
    };
    let (line, seconds) = last_import(&down);
    assert!(
        line.starts_with("aims_snapshot_last_import_timestamp_seconds{source=\"pull\"} "),
        "{line}"
    );
    // The listing's time and the metric's are the first pull's (the second changed nothing).
    let listed =
        humantime::parse_rfc3339(list["snapshots"][0]["imported_at"].as_str().unwrap()).unwrap();
    let listed = listed.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!((seconds - listed).abs() < 0.001, "{line} vs {list}");
    // Kept with the date: a restart does not lose it, so an alert on stale pulls does not fire
    // (or go blind) because the service restarted.
    let (dir, config) = down.shut_down();
    let down = Server::start_in(dir, config).unwrap();
    assert_eq!(last_import(&down).0, line);

    // --date files the same data under another date.
    let (output, _) = pull.run(&down, &["--date", "2024-06-01"]);
    let dated = summary(&output);
    assert_eq!(
        (dated["result"].as_str(), dated["date"].as_str()),
        (Some("created"), Some("2024-06-01"))
    );
}

#[test]
fn a_pull_of_many_pages_copies_every_page() {
    let up = Upstream::empty();
    let big = snapshot_json(450, 11, "2024-05-14T06:00:00.000Z");
    up.server.import("2024-05-14", &big);
    let down = Server::start();
    let (output, _) = Pull::of(&up).run(&down, &[]);
    let pulled = summary(&output);
    assert_eq!(
        (pulled["result"].as_str(), pulled["applications"].as_u64()),
        (Some("created"), Some(450))
    );
    // Three pages of at most 200.
    assert_eq!(pulled["requests"], 8, "{pulled}");
    assert_same_answers(&up, &down, "2024-05-14", false);
}

#[test]
fn a_503_with_retry_after_is_waited_out_and_a_429_retried() {
    let up = Upstream::start();
    for (fault, least) in [
        // Request 3 is TechnicalDebt_Team.
        (Fault::Status { nth: 3, status: 503, retry_after: Some("1") }, Duration::from_secs(1)),
        (Fault::Status { nth: 0, status: 429, retry_after: None }, Duration::ZERO),
    ] {
        let relay = up.relay(fault.clone());
        let down = Server::start();
        let (output, took) = Pull::through(&relay, &up).run(&down, &[]);
        let pulled = summary(&output);
        assert_eq!(
            (pulled["result"].as_str(), pulled["retries"].as_u64()),
            (Some("created"), Some(1)),
            "{fault:?}"
        );
        assert_eq!(relay.requests.load(std::sync::atomic::Ordering::SeqCst), 7, "{fault:?}");
        assert!(took >= least, "{fault:?}: {took:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("try 2 of 5"), "{stderr}");
        assert_same_answers(&up, &down, "2024-05-14", false);
    }
}

#[test]
fn refusals_fail_at_once_and_change_nothing() {
    let up = Upstream::start();
    // 403: the infrastructure is inactive or not licensed. Not retried.
    let relay = up.relay(Fault::Status { nth: 0, status: 403, retry_after: None });
    let (down, before) = downstream_serving_a_sample();
    let (output, _) = Pull::through(&relay, &up).run(&down, &[]);
    let error = failure(&output, UPSTREAM_FAILED);
    assert!(
        error.contains(
            "inactive or not licensed for the AI Mentor Studio API (403 on \
             TechnicalDebt_LastAnalysisDate: injected by the test relay)"
        ),
        "{error}"
    );
    assert_eq!(relay.requests.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_nothing_changed(&down, &before);

    // 401: a wrong key. The key appears nowhere in what the pull says.
    let wrong = "aims_WrongKeyWrongKeyWrongKeyWrongKeyWrongKey1234567890";
    let pull = Pull { key: wrong.into(), ..Pull::of(&up) };
    let (output, _) = pull.run(&down, &[]);
    let error = failure(&output, UPSTREAM_FAILED);
    assert!(
        error.contains(
            "refused the key or the activation code (401 on TechnicalDebt_LastAnalysisDate"
        ),
        "{error}"
    );
    assert!(!String::from_utf8_lossy(&output.stderr).contains(wrong));
    assert!(!up.server.log().contains(wrong));
    assert_nothing_changed(&down, &before);
}

#[test]
fn an_untrusted_certificate_fails_at_once() {
    let up = Upstream::start();
    let (down, before) = downstream_serving_a_sample();
    // A CA that did not sign the upstream's certificate, and then the system's trust store.
    let relay = up.relay(Fault::None);
    for ca_file in [Some(relay.cert.clone()), None] {
        let pull = Pull { ca_file: ca_file.clone(), ..Pull::of(&up) };
        let (output, took) = pull.run(&down, &[]);
        let error = failure(&output, UPSTREAM_FAILED);
        assert!(error.contains("TLS with the upstream localhost:"), "{ca_file:?}: {error}");
        assert!(
            error.contains("failed on TechnicalDebt_LastAnalysisDate (invalid peer certificate"),
            "{ca_file:?}: {error}"
        );
        assert!(took < Duration::from_secs(3), "retried? {took:?}");
        assert_nothing_changed(&down, &before);
    }
}

#[test]
fn an_upstream_that_stops_or_trickles_ends_the_pull_in_bounded_time() {
    let up = Upstream::start();
    let (down, before) = downstream_serving_a_sample();

    // Stopped after three answers: the fourth method, Team, cannot be had.
    let relay = up.relay(Fault::StopAfter(3));
    let pull = Pull { extra: "max_attempts: 2", ..Pull::through(&relay, &up) };
    let (output, _) = pull.run(&down, &[]);
    let error = failure(&output, UPSTREAM_FAILED);
    assert!(
        error.contains("failed 2 tries of TechnicalDebt_Team (last: connection failed"),
        "{error}"
    );
    assert_nothing_changed(&down, &before);

    // One byte every 50 ms: each try is cut off at timeout_secs.
    let relay = up.relay(Fault::Trickle(Duration::from_millis(50)));
    let pull = Pull { extra: "max_attempts: 2", timeout_secs: 1, ..Pull::through(&relay, &up) };
    let (output, took) = pull.run(&down, &[]);
    let error = failure(&output, UPSTREAM_FAILED);
    assert!(
        error.contains(
            "failed 2 tries of TechnicalDebt_LastAnalysisDate (last: no complete answer within 1 s"
        ),
        "{error}"
    );
    assert!(took < Duration::from_secs(6), "two tries of 1 s: {took:?}");
    assert_nothing_changed(&down, &before);
}

#[test]
fn data_that_fails_the_snapshot_checks_is_never_sent() {
    let up = Upstream::start();
    let (down, before) = downstream_serving_a_sample();
    let relay = up.relay(Fault::UnknownLevel);
    let (output, _) = Pull::through(&relay, &up).run(&down, &[]);
    let error = failure(&output, UPSTREAM_FAILED);
    assert!(
        error.ends_with(
            "the upstream's data does not pass the snapshot checks, nothing changed: \
             $.Applications[0].LevelGUID: `no-such-level` names no level in $.Levels"
        ),
        "{error}"
    );
    assert_nothing_changed(&down, &before);
    // Refused before the admin port heard of it: the sample's import is its only one.
    let log = down.log();
    assert_eq!(log.matches("audit action=snapshot.import").count(), 1, "{log}");
}

#[test]
fn without_a_server_to_import_into_the_upstream_is_not_asked() {
    let up = Upstream::start();
    let relay = up.relay(Fault::None);
    let mut down = Server::start();
    down.kill();
    let (output, _) = Pull::through(&relay, &up).run(&down, &[]);
    let error = failure(&output, 3);
    assert!(error.contains(&format!("cannot reach the admin port at {}", down.admin)), "{error}");
    assert_eq!(relay.requests.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[test]
fn an_endless_answer_is_cut_off_at_the_bound() {
    let up = Upstream::start();
    let (down, before) = downstream_serving_a_sample();
    let relay = up.relay(Fault::Endless);
    let (output, took) = Pull::through(&relay, &up).run(&down, &[]);
    let error = failure(&output, UPSTREAM_FAILED);
    assert!(
        error.contains(
            "an answer of the upstream to TechnicalDebt_LastAnalysisDate is larger than 67108864 \
             bytes; refused, read no further"
        ),
        "{error}"
    );
    // Final at once: a bigger answer will not come out smaller the second time.
    assert_eq!(relay.requests.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_nothing_changed(&down, &before);
}

#[test]
fn a_page_that_repeats_an_application_is_never_served() {
    let up = Upstream::start();
    let (down, before) = downstream_serving_a_sample();
    let relay = up.relay(Fault::RepeatApplication);
    let (output, _) = Pull::through(&relay, &up).run(&down, &[]);
    let error = failure(&output, UPSTREAM_FAILED);
    assert!(error.contains("3 copies of the upstream in a row were not consistent"), "{error}");
    assert!(error.contains("the page at Offset=0 repeats application"), "{error}");
    // Each copy got as far as the first page: 5 requests, three times.
    assert_eq!(relay.requests.load(std::sync::atomic::Ordering::SeqCst), 15);
    // Pages are pinned to the analysis being copied.
    let pages: Vec<String> = relay
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("TechnicalDebt_Application"))
        .cloned()
        .collect();
    let pinned = format!(
        "GET {CLIENT_BASE}/TechnicalDebt_Application?Limit=200&Offset=0&Date=2024-05-14 HTTP/1.1"
    );
    assert_eq!(pages, [pinned.as_str(); 3]);
    assert_nothing_changed(&down, &before);
}

#[test]
fn the_key_file_must_be_private_or_come_from_systemd() {
    let up = Upstream::start();
    let (down, before) = downstream_serving_a_sample();
    let pull = Pull::of(&up);
    let config = pull.config(&down);
    let key_file = down.dir.path().join("upstream-key");
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o640)).unwrap();
    let output = Command::new(BIN)
        .args(["snapshot", "pull", "--config"])
        .arg(&config)
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .unwrap();
    let error = failure(&output, 5);
    assert!(
        error.contains(&format!("upstream key file {}: has mode 0640", key_file.display())),
        "{error}"
    );
    assert!(error.contains("chmod 600"), "{error}");
    assert_nothing_changed(&down, &before);

    // Under systemd (LoadCredential=) the key comes from $CREDENTIALS_DIRECTORY instead.
    let credentials = tempfile::tempdir().unwrap();
    std::fs::write(credentials.path().join("upstream-key"), &up.key).unwrap();
    std::fs::write(&key_file, "not-the-key\n").unwrap();
    let output = Command::new(BIN)
        .args(["snapshot", "pull", "--json", "--config"])
        .arg(&config)
        .env("CREDENTIALS_DIRECTORY", credentials.path())
        .output()
        .unwrap();
    assert_eq!(summary(&output)["result"], "created");
}

#[test]
fn an_answer_that_is_not_the_documented_json_is_named_by_method_offset_and_path() {
    let up = Upstream::start();
    let (down, before) = downstream_serving_a_sample();
    let relay = up.relay(Fault::StringCount);
    let (output, _) = Pull::through(&relay, &up).run(&down, &[]);
    let error = failure(&output, UPSTREAM_FAILED);
    assert!(
        error.contains(
            "the upstream's answer to TechnicalDebt_Application at Offset=0 is not the documented \
             JSON: $.Applications[0].Findings[0].Count: invalid type: string \"7\", expected i64"
        ),
        "{error}"
    );
    assert_nothing_changed(&down, &before);
}

#[test]
fn a_new_analysis_in_the_middle_of_a_pull_starts_it_over() {
    let up = Upstream::start();
    // Before request 2 (Category) a newer analysis lands: the answers stop agreing.
    let newer = snapshot_json(30, 5, "2024-05-15T06:00:00.000Z").to_string().into_bytes();
    let relay = up.relay(Fault::ImportBefore {
        nth: 2,
        admin: up.server.admin,
        date: "2024-05-15",
        body: Arc::new(newer),
    });
    let down = Server::start();
    let (output, _) = Pull::through(&relay, &up).run(&down, &[]);
    let pulled = summary(&output);
    assert_eq!(
        (pulled["result"].as_str(), pulled["date"].as_str(), pulled["applications"].as_u64()),
        (Some("created"), Some("2024-05-15"), Some(30)),
        "{pulled}"
    );
    // Three requests of the first copy, six of the second.
    assert_eq!((pulled["restarts"].as_u64(), pulled["requests"].as_u64()), (Some(1), Some(9)));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "the upstream moved (TechnicalDebt_Category answered for the analysis of \
             2024-05-15T06:00:00.000Z, not the one being copied); starting over, copy 2 of 3"
        ),
        "{stderr}"
    );
    assert_same_answers(&up, &down, "2024-05-15", false);
}

#[test]
fn pages_stay_pinned_and_the_last_check_or_a_moved_total_starts_over() {
    for (date, apps, moved) in [
        // A new analysis while page 2 is asked for: pages stay on the pinned Date, and the
        // closing LastAnalysisDate sees the new one.
        ("2024-05-15", 300, "a new analysis (2024-05-15T06:00:00.000Z) finished while"),
        // The same analysis re-imported with fewer applications: TotalResults moves.
        ("2024-05-14", 250, "TotalResults moved from 450 to 250 at Offset=200"),
    ] {
        let up = Upstream::empty();
        up.server.import("2024-05-14", &snapshot_json(450, 11, "2024-05-14T06:00:00.000Z"));
        let changed = snapshot_json(apps, 12, &format!("{date}T06:00:00.000Z"));
        let relay = up.relay(Fault::ImportBefore {
            nth: 5,
            admin: up.server.admin,
            date,
            body: Arc::new(changed.to_string().into_bytes()),
        });
        let down = Server::start();
        let (output, _) = Pull::through(&relay, &up).run(&down, &[]);
        let pulled = summary(&output);
        assert_eq!(
            (pulled["date"].as_str(), pulled["applications"].as_u64(), pulled["restarts"].as_u64()),
            (Some(date), Some(apps as u64), Some(1)),
            "{pulled}"
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(moved), "{stderr}");
        assert_same_answers(&up, &down, date, false);
    }
}

#[test]
fn an_upstream_without_data_for_the_pinned_date_is_copied_without_it() {
    const FIRST_PAGE: &str = "TechnicalDebt_Application?Limit=200&Offset=0";
    let up = Upstream::start();
    // Request 4 is the first page, with Date=2024-05-14.
    let relay = up.relay(Fault::Status { nth: 4, status: 404, retry_after: None });
    let down = Server::start();
    let (output, _) = Pull::through(&relay, &up).run(&down, &[]);
    let pulled = summary(&output);
    assert_eq!(
        (pulled["result"].as_str(), pulled["requests"].as_u64()),
        (Some("created"), Some(7))
    );
    let pages: Vec<String> =
        relay.seen.lock().unwrap().iter().filter(|l| l.contains("_Application")).cloned().collect();
    assert_eq!(
        pages,
        [
            format!("GET {CLIENT_BASE}/{FIRST_PAGE}&Date=2024-05-14 HTTP/1.1"),
            format!("GET {CLIENT_BASE}/{FIRST_PAGE} HTTP/1.1"),
        ]
    );
    assert_same_answers(&up, &down, "2024-05-14", true);
}

#[test]
fn a_terminal_gets_a_progress_bar_and_the_journal_plain_lines() {
    let up = Upstream::start();
    let down = Server::start();
    let config = Pull::of(&up).config(&down);
    // On a terminal (script(1) gives the pull a pseudo-terminal): a bar redrawn in place.
    let command = format!("{BIN} snapshot pull --config {}", config.display());
    let output = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env_remove("JOURNAL_STREAM")
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .expect("script(1), from util-linux, runs the pull on a pseudo-terminal");
    let seen = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{seen}");
    assert!(
        seen.contains("\r\x1b[2Kapplications [##############################] 12/12 "),
        "{seen}"
    );
    assert!(seen.contains("pulled the snapshot of 2024-05-14"), "{seen}");

    // Under systemd (JOURNAL_STREAM set): a few lines with syslog priorities, no bar.
    let output = Command::new(BIN)
        .args(["snapshot", "pull", "--config"])
        .arg(&config)
        .env("JOURNAL_STREAM", "8:12345")
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert_eq!(lines[0], format!("<6>pull: pulling from {}", Pull::of(&up).url));
    assert!(lines[1].starts_with("<6>pull: 12 of 12 applications ("), "{stderr}");
    assert!(!stderr.contains('\r'), "{stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.starts_with("unchanged: the snapshot served for 2024-05-14"), "{stdout}");
}

/// An upstream serving a self-signed certificate for localhost made as `openssl req -x509`
/// makes one (basicConstraints CA:TRUE), with the sample imported; the certificate's file and
/// its public key's pin in curl's form.
fn upstream_with_a_ca_certificate(files: &std::path::Path) -> (Upstream, PathBuf, String) {
    use base64::Engine as _;
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    let (cert_file, key_file) = (files.join("ca-true.pem"), files.join("ca-true.key"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    let api = format!("tls_cert: Some({cert_file:?}), tls_key: Some({key_file:?}),");
    let up = Upstream::empty_with(&Options { api, ..Options::default() });
    let (status, body) = up.server.put_snapshot("2024-05-14", &std::fs::read(SAMPLE).unwrap());
    assert_eq!(status, 201, "{body}");
    let digest = ring::digest::digest(
        &ring::digest::SHA256,
        &rcgen::PublicKeyData::subject_public_key_info(&key),
    );
    let pin = format!("sha256//{}", base64::engine::general_purpose::STANDARD.encode(digest));
    (up, cert_file, pin)
}

/// Issue 21: a certificate made the `openssl req -x509` way is a CA certificate, which no
/// `ca_file` can make a server's. The failure says so and offers the pin; the pin then accepts
/// exactly that server, whatever its chain or names (here reached as 127.0.0.1, a name the
/// certificate does not carry), and a wrong pin is refused before the key is sent.
#[test]
fn a_ca_certificate_is_explained_and_a_pinned_key_is_pulled_from() {
    let files = tempfile::tempdir().unwrap();
    let (up, cert_file, pin) = upstream_with_a_ca_certificate(files.path());
    let (down, before) = downstream_serving_a_sample();

    let pull = Pull { ca_file: Some(cert_file), ..Pull::of(&up) };
    let (output, _) = pull.run(&down, &[]);
    let error = failure(&output, UPSTREAM_FAILED);
    assert!(
        error.contains("(invalid peer certificate: Other(OtherError(CaUsedAsEndEntity)))"),
        "{error}"
    );
    assert!(
        error.contains("presents a CA certificate (basicConstraints CA:TRUE) as its own"),
        "{error}"
    );
    assert!(
        error.contains("upstream.pin_sha256: Some(\"sha256//…\") with ca_file: None"),
        "{error}"
    );
    assert_nothing_changed(&down, &before);

    let by_address = format!("https://127.0.0.1:{}{CLIENT_BASE}", up.server.api.port());
    let extra = format!("pin_sha256: Some({pin:?})");
    let wrong = "sha256//AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let wrong_extra = format!("pin_sha256: Some({wrong:?})");
    let pinned =
        Pull { url: by_address.clone(), ca_file: None, extra: &wrong_extra, ..Pull::of(&up) };
    let (output, _) = pinned.run(&down, &[]);
    let error = failure(&output, UPSTREAM_FAILED);
    assert!(
        error.contains(&format!("the server's public key is {pin}, not the pinned {wrong}")),
        "{error}"
    );
    // The handshake failed before a request: the upstream answered nothing.
    let asked = "aims_requests_total{port=\"api\",route=\"last_analysis_date\",status=\"200\"}";
    assert_eq!(up.server.metric(asked), None, "a server not pinned was asked nothing");
    assert_nothing_changed(&down, &before);

    let pinned = Pull { url: by_address, ca_file: None, extra: &extra, ..Pull::of(&up) };
    let (output, _) = pinned.run(&down, &[]);
    assert_eq!(summary(&output)["result"], "created", "{output:?}");
    assert_eq!(up.server.metric(asked), Some(2.0), "asked at the start and at the end");
}

/// A pin and a `ca_file` exclude each other, and a pin that is no SHA-256 is refused, both
/// where they are written.
#[test]
fn a_pin_is_checked_where_it_is_written() {
    let up = Upstream::empty();
    let down = Server::start();
    for (extra, needle) in [
        (
            "pin_sha256: Some(\"sha256//AAAA\")",
            "is not a SHA-256: give it as curl's --pinnedpubkey does",
        ),
        (
            "pin_sha256: Some(\"sha256//AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\")",
            "upstream.ca_file and upstream.pin_sha256 exclude each other",
        ),
    ] {
        let (output, _) = Pull { extra, ..Pull::of(&up) }.run(&down, &[]);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(5), "{stderr}");
        assert!(stderr.contains("pull.ron:"), "names the file and line: {stderr}");
        assert!(stderr.contains(needle), "{stderr}");
    }
}
