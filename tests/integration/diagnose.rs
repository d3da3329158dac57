//! `aims-api diagnose` (issue 14) against real servers and real files: every check in its ok
//! state on a healthy server, then each one made to fail (or warn) by the fault it exists to
//! find, with the exit status and `--strict`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::util::{BIN, Options, Server, snapshot_json};

/// A config naming the ports this server really listens on (its own file says port 0).
fn real_config(server: &Server) -> PathBuf {
    let text = std::fs::read_to_string(&server.config).unwrap();
    let text = text.replacen("127.0.0.1:0", &server.api.to_string(), 1).replacen(
        "127.0.0.1:0",
        &server.admin.to_string(),
        1,
    );
    let path = server.dir.path().join("diagnose.ron");
    std::fs::write(&path, text).unwrap();
    path
}

struct Diagnosis {
    code: i32,
    json: Value,
}

impl Diagnosis {
    /// What `diagnose --json` printed, and its exit status.
    fn of(out: &std::process::Output) -> Self {
        let json = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)));
        Diagnosis { code: out.status.code().unwrap(), json }
    }

    /// The check at `path` ("state folder/key store"), whole.
    fn node(&self, path: &str) -> &Value {
        let mut level = &self.json["checks"];
        let mut found = &Value::Null;
        for name in path.split('/') {
            found = level
                .as_array()
                .and_then(|a| a.iter().find(|c| c["name"] == name))
                .unwrap_or_else(|| panic!("no check {path} in {:#}", self.json));
            level = &found["checks"];
        }
        found
    }

    /// The leaf check at `path`: its status and reason.
    fn check(&self, path: &str) -> (String, String) {
        let found = self.node(path);
        let text = |field: &str| found[field].as_str().unwrap_or("").to_owned();
        (text("status"), text("reason"))
    }

    fn status(&self, path: &str) -> String {
        self.check(path).0
    }
}

fn diagnose(config: &Path, extra: &[&str], env: &[(&str, &str)]) -> Diagnosis {
    diagnose_via(&[], config, extra, env)
}

fn diagnose_via(
    wrapper: &[&str],
    config: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Diagnosis {
    let mut command = match wrapper.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(BIN);
            c
        }
        None => Command::new(BIN),
    };
    let out = command
        .args(["diagnose", "--json", "--config"])
        .arg(config)
        .args(extra)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    Diagnosis::of(&out)
}

/// An analysis date `days` ago, as the snapshot format writes it.
fn days_ago(days: u64) -> String {
    let time = SystemTime::now() - Duration::from_secs(days * 86_400);
    humantime::format_rfc3339_millis(time).to_string()
}

const LEAVES: [&str; 13] = [
    "configuration",
    "state folder/ownership and modes",
    "state folder/key store",
    "state folder/snapshots",
    "state folder/disk space",
    "server/lock",
    "server/admin port",
    "server/admin client uids",
    "certificate/key",
    "certificate/names",
    "certificate/validity",
    "certificate/api port",
    "system/open-file limit",
];

#[test]
fn a_healthy_server_passes_every_check_even_strictly() {
    let server = Server::start();
    server.generate_key();
    server.import("2024-05-14", &snapshot_json(3, 1, &days_ago(1)));
    let config = real_config(&server);
    let report = diagnose(&config, &["--strict"], &[]);
    for leaf in LEAVES.iter().chain(&["system/clock"]) {
        assert_eq!(report.status(leaf), "ok", "{leaf}: {:#}", report.json);
    }
    assert_eq!(report.code, 0, "{:#}", report.json);
    assert_eq!(
        report.json["counts"],
        serde_json::json!({"ok": 14, "warning": 0, "unknown": 0, "failure": 0})
    );
    let (_, reason) = report.check("certificate/api port");
    assert!(reason.contains("presents the certificate on disk"), "{reason}");
    let (_, reason) = report.check("server/lock");
    assert_eq!(reason, format!("held by aims-api serve, pid {}", server.pid()));

    // The text form: the tree, and the counts.
    let out = Command::new(BIN).args(["diagnose", "--config"]).arg(&config).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("├─ ok       server: a running serve\n"), "{text}");
    assert!(text.ends_with("\n14 ok, 0 warning(s), 0 failure(s)\n"), "{text}");
    // How the server finds an admin client's uid (issue 19): one sock_diag query.
    let (_, reason) = report.check("server/admin client uids");
    assert_eq!(reason, "found by one netlink sock_diag query per connection");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn warnings_pass_unless_strict() {
    let server = Server::start();
    // No key and no snapshot: two warnings.
    let config = real_config(&server);
    let report = diagnose(&config, &[], &[]);
    assert_eq!(report.check("state folder/key store").0, "warning");
    assert_eq!(report.check("state folder/snapshots").0, "warning");
    assert_eq!(report.code, 0, "{:#}", report.json);
    assert_eq!(diagnose(&config, &["--strict"], &[]).code, 1);

    // A stale analysis warns too.
    server.generate_key();
    server.import("2024-05-14", &snapshot_json(3, 1, &days_ago(20)));
    let report = diagnose(&config, &[], &[]);
    let (status, reason) = report.check("state folder/snapshots");
    assert_eq!(status, "warning");
    assert!(reason.contains("(20 days ago): stale"), "{reason}");
    assert_eq!(report.json["counts"]["warning"], 1);
}

#[test]
fn without_a_server_the_file_checks_still_run_and_the_server_checks_fail() {
    // A cap that a normal user's default `ulimit -n` (1024) covers: only the server is missing.
    let server =
        Server::start_with(&Options { api: "max_connections: 512,".into(), ..Options::default() });
    server.generate_key();
    server.import("2024-05-14", &snapshot_json(3, 1, &days_ago(1)));
    let config = real_config(&server);
    let (_dir, _) = server.shut_down();
    let report = diagnose(&config, &[], &[]);
    for leaf in ["server/lock", "server/admin port", "certificate/api port"] {
        assert_eq!(report.status(leaf), "failure", "{leaf}: {:#}", report.json);
    }
    for leaf in ["state folder/key store", "state folder/snapshots", "certificate/validity"] {
        assert_eq!(report.status(leaf), "ok", "{leaf}: {:#}", report.json);
    }
    assert_eq!(report.json["counts"]["failure"], 3);
    assert_eq!(report.code, 1);

    // The open-file limit, against this process's when no server runs.
    let report = diagnose_via(&["prlimit", "--nofile=512:512", "--"], &config, &[], &[]);
    let (status, reason) = report.check("system/open-file limit");
    assert_eq!(status, "failure");
    assert!(reason.starts_with("512 for this shell"), "{reason}");
}

#[test]
#[ignore = "needs root: gives a file of the state folder to another uid"]
fn each_fault_in_the_state_folder_is_found() {
    let server = Server::start();
    server.generate_key();
    server.import("2024-05-14", &snapshot_json(3, 1, &days_ago(1)));
    let config = real_config(&server);
    let state = server.state_dir();
    use std::os::unix::fs::PermissionsExt;
    let chmod = |path: &Path, mode| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    };

    // Modes: a readable key store.
    chmod(&state.join("key.ron"), 0o644);
    let (status, reason) = diagnose(&config, &[], &[]).check("state folder/ownership and modes");
    assert_eq!((status.as_str(), reason.as_str()), ("failure", "key.ron has mode 644"));
    chmod(&state.join("key.ron"), 0o600);
    chmod(&state, 0o755);
    let (status, reason) = diagnose(&config, &[], &[]).check("state folder/ownership and modes");
    assert_eq!((status.as_str(), reason.as_str()), ("failure", "the folder has mode 755, not 700"));
    chmod(&state, 0o700);
    // An owner that is not the folder's (only root can give a file away: the tests run as root).
    {
        crate::util::require_root("the diagnose state-folder test", "give a file to another uid");
        let snapshot = state.join("history.redb");
        std::os::unix::fs::chown(&snapshot, Some(65534), None).unwrap();
        let report = diagnose(&config, &[], &[]);
        let (status, reason) = report.check("state folder/ownership and modes");
        assert_eq!(status, "failure");
        assert_eq!(reason, "history.redb belongs to uid 65534, not 0");
        std::os::unix::fs::chown(&snapshot, Some(0), None).unwrap();
    }

    // A damaged key store.
    let store = std::fs::read(state.join("key.ron")).unwrap();
    std::fs::write(state.join("key.ron"), "(version: 1, generation: oops)").unwrap();
    let (status, reason) = diagnose(&config, &[], &[]).check("state folder/key store");
    assert_eq!(status, "failure");
    assert!(reason.contains("key.ron:1:") && reason.contains("damaged"), "{reason}");
    std::fs::write(state.join("key.ron"), store).unwrap();

    // A snapshot file that does not load.
    std::fs::write(state.join("snapshots/2024-05-15.json"), "{\"Applications\": 5}").unwrap();
    let (status, reason) = diagnose(&config, &[], &[]).check("state folder/snapshots");
    assert_eq!(status, "failure");
    assert!(reason.starts_with("1 stored, refused 2024-05-15.json: $"), "{reason}");
    std::fs::remove_file(state.join("snapshots/2024-05-15.json")).unwrap();

    // Too little disk space (the threshold raised above any disk's free space).
    let report = diagnose(
        &config,
        &[],
        &[("AIMS_API_TEST_DIAGNOSE_MIN_FREE_BYTES", "18446744073709551615")],
    );
    let (status, reason) = report.check("state folder/disk space");
    assert_eq!(status, "failure");
    assert!(reason.ends_with("too little for an import"), "{reason}");

    // A clock behind what the state folder recorded.
    let future = std::fs::File::options().write(true).open(state.join("key.ron")).unwrap();
    future.set_modified(SystemTime::now() + Duration::from_secs(3 * 86_400)).unwrap();
    let (status, reason) = diagnose(&config, &[], &[]).check("system/clock");
    assert_eq!(status, "failure");
    assert!(reason.contains("before") && reason.contains("key.ron was written"), "{reason}");

    // A config that does not parse: one failure, nothing else attempted.
    let broken = server.dir.path().join("broken.ron");
    std::fs::write(&broken, "(activation_code: 5)").unwrap();
    let report = diagnose(&broken, &[], &[]);
    assert_eq!(report.status("configuration"), "failure");
    assert_eq!(report.json["checks"].as_array().unwrap().len(), 1);
    assert_eq!(report.code, 1);
}

/// Run by a user who may not read the state folder, diagnose says what it cannot know and
/// how to find out, instead of "no serve holds the lock" or "start serve once" (issue 21). As
/// root the test runs diagnose as uid 65534 (whom the admin port refuses too); as anyone else
/// it takes the folder's permissions away from its own uid while the server runs.
#[test]
fn a_user_who_may_not_read_the_state_folder_gets_unknown_not_a_wrong_verdict() {
    let server =
        Server::start_with(&Options { api: "max_connections: 512,".into(), ..Options::default() });
    server.generate_key();
    let config = real_config(&server);
    let state = server.state_dir();
    let root = rustix::process::getuid().is_root();
    let (report, uid) = if root {
        (Diagnosis::of(&crate::util::cli_as_nobody(&config, &["diagnose", "--json"])), 65534)
    } else {
        use std::os::unix::fs::PermissionsExt;
        let mode = |m| std::fs::set_permissions(&state, std::fs::Permissions::from_mode(m));
        mode(0o000).unwrap();
        let report = diagnose(&config, &[], &[]);
        mode(0o700).unwrap();
        (report, rustix::process::getuid().as_raw())
    };
    let cannot = |path: &Path| format!("cannot read {} as uid {uid}: run as root", path.display());
    let lock = report.node("server/lock");
    assert_eq!(lock["status"], "unknown", "{lock}");
    assert_eq!(lock["reason"].as_str().unwrap(), cannot(&state.join("key.lock")));
    assert!(lock["fix"].as_str().is_some_and(|fix| fix.contains("sudo aims-api diagnose")));
    assert_eq!(
        report.check("state folder/key store"),
        ("unknown".into(), cannot(&state.join("key.ron")))
    );
    let (status, reason) = report.check("certificate/loads");
    assert_eq!((status.as_str(), reason), ("unknown", cannot(&state.join("tls/cert.pem"))));
    let (status, reason) = report.check("state folder/ownership and modes");
    assert_eq!(status, "unknown", "{reason}");
    let admin = report.node("server/admin port");
    if root {
        assert_eq!(admin["status"], "unknown", "{admin}");
        assert_eq!(
            admin["reason"].as_str().unwrap(),
            format!("http://{}/health refuses this user, uid 65534 (403)", server.admin)
        );
        assert!(server.wait_for_log("uid 65534 not allowed").contains("refused port=admin"));
    } else {
        assert_eq!(admin["status"], "ok", "{admin}");
    }
    assert_eq!(report.json["counts"]["failure"], 0, "no wrong verdict: {:#}", report.json);
    assert_eq!(report.code, 1, "what could not be checked does not pass");
    assert_eq!(report.json["passed"], false);
}

/// An operator certificate for `names`, valid from `from` to `until` (relative to now, in days).
fn operator_pair(
    dir: &Path,
    tag: &str,
    names: &[&str],
    from: i64,
    until: i64,
) -> (PathBuf, PathBuf) {
    let key = rcgen::KeyPair::generate().unwrap();
    let names = names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
    let mut params = rcgen::CertificateParams::new(names).unwrap();
    let at = |days: i64| {
        let now = time::OffsetDateTime::now_utc();
        now + time::Duration::days(days)
    };
    params.not_before = at(from);
    params.not_after = at(until);
    let cert = params.self_signed(&key).unwrap();
    let (c, k) = (dir.join(format!("{tag}.pem")), dir.join(format!("{tag}.key")));
    std::fs::write(&c, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

#[test]
fn each_fault_in_the_certificate_is_found() {
    let files = tempfile::tempdir().unwrap();
    let (live_cert, live_key) = (files.path().join("live.pem"), files.path().join("live.key"));
    let (a_cert, a_key) = operator_pair(files.path(), "a", &["localhost", "127.0.0.1"], -1, 200);
    std::fs::copy(&a_cert, &live_cert).unwrap();
    std::fs::copy(&a_key, &live_key).unwrap();
    let api = format!("tls_cert: Some({live_cert:?}), tls_key: Some({live_key:?}),");
    let server = Server::start_with(&Options { api, ..Options::default() });
    let config = real_config(&server);
    let report = diagnose(&config, &[], &[]);
    for leaf in
        ["certificate/key", "certificate/names", "certificate/validity", "certificate/api port"]
    {
        assert_eq!(report.status(leaf), "ok", "{leaf}: {:#}", report.json);
    }
    let install = |cert: &Path, key: &Path| {
        std::fs::copy(cert, &live_cert).unwrap();
        std::fs::copy(key, &live_key).unwrap();
    };

    // A new certificate on disk without a reload: the port still presents the old one.
    let (b_cert, b_key) = operator_pair(files.path(), "b", &["127.0.0.1"], -1, 200);
    install(&b_cert, &b_key);
    let (status, reason) = diagnose(&config, &[], &[]).check("certificate/api port");
    assert_eq!(status, "failure");
    assert!(reason.contains("not the file's"), "{reason}");

    // A key that is not the certificate's.
    std::fs::copy(&a_key, &live_key).unwrap();
    let (status, reason) = diagnose(&config, &[], &[]).check("certificate/key");
    assert_eq!(status, "failure");
    assert!(reason.contains("cannot be used with the certificate"), "{reason}");

    // Names that do not cover api.listen (127.0.0.1 here).
    let (c, k) = operator_pair(files.path(), "c", &["example.com"], -1, 200);
    install(&c, &k);
    let (status, reason) = diagnose(&config, &[], &[]).check("certificate/names");
    assert_eq!(status, "warning");
    assert_eq!(reason, "does not cover 127.0.0.1 (it names example.com)");

    // Validity: expiring soon, expired, not yet valid.
    for (from, until, status, needle) in [
        (-1, 10, "warning", "expires in 9 days"),
        (-10, -1, "failure", "expired"),
        (2, 200, "failure", "not yet valid"),
    ] {
        let (c, k) = operator_pair(files.path(), "d", &["127.0.0.1"], from, until);
        install(&c, &k);
        let (found, reason) = diagnose(&config, &[], &[]).check("certificate/validity");
        assert_eq!(found, status, "{reason}");
        assert!(reason.starts_with(needle), "{reason}");
    }
}

#[test]
#[ignore = "needs root: only root reads the descriptors of a serve that may not dump core"]
fn the_api_port_check_finds_the_port_serve_really_holds() {
    // As under socket activation, where api.listen is not what serve listens on: the check
    // asks the kernel which port the running serve holds.
    let server = Server::start();
    let config = real_config(&server);
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, text.replacen(&server.api.to_string(), "127.0.0.1:1", 1)).unwrap();
    let (status, reason) = diagnose(&config, &[], &[]).check("certificate/api port");
    assert_eq!(status, "ok", "{reason}");
    assert!(reason.starts_with(&format!("{} presents the certificate on disk", server.api)));
}
