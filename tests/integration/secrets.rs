//! Secrets: no key, key hash or piece of a key in any log line, file, error answer or CLI
//! message of a full run; and no core dump of the server.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{
    ACTIVATION_CODE, BIN, Options, Server, config_text, poll, require_root, tcp_exchange,
};

fn sha256_hex(text: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Every way `text` could betray `key`: the key, its SHA-256 in either case, and any eight
/// characters of its secret part (the fingerprint shows only `aims_...` and the last four).
fn leaks(text: &str, key: &str) -> Vec<String> {
    let mut found = Vec::new();
    let hash = sha256_hex(key);
    for needle in [key.to_owned(), hash.clone(), hash.to_ascii_uppercase()] {
        if text.contains(&needle) {
            found.push(needle);
        }
    }
    let secret = &key[5..];
    for start in 0..=secret.len() - 8 {
        let piece = &secret[start..start + 8];
        if text.contains(piece) {
            found.push(piece.to_owned());
        }
    }
    found
}

fn assert_no_leak(what: &str, text: &str, keys: &[&str]) {
    for key in keys {
        let found = leaks(text, key);
        assert!(found.is_empty(), "{what} leaks {found:?} of a key:\n{text}");
    }
}

/// The key a CLI `generate` or `replace` printed on stdout (alone on its line).
fn cli_key(server: &Server, action: &str) -> (String, String) {
    let output = server.cli(&["key", action]);
    assert!(output.status.success(), "{output:?}");
    let key = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    (key, String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn no_log_line_file_or_answer_of_a_full_run_holds_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.ron");
    let options = Options {
        top: "refusal_log_lines: 1000, refusal_log_window_secs: 1,".into(),
        ..Options::default()
    };
    // The most talkative level the server has.
    let text =
        config_text(dir.path(), &options).replace("log_level: \"debug\"", "log_level: \"trace\"");
    std::fs::write(&config, text).unwrap();
    let server = Server::start_in(dir, config).unwrap();
    let mut answers = String::new();
    let mut cli_messages = String::new();

    let first = server.generate_key();
    let probe = |key: &str| server.get_with_key("/secrets/probe", key);
    assert_eq!(probe(&first).status, 404);
    let (second, stderr) = cli_key(&server, "replace");
    cli_messages.push_str(&stderr);
    assert_eq!(probe(&second).status, 404);
    let mut typo = second.clone().into_bytes();
    typo[20] = if typo[20] == b'a' { b'b' } else { b'a' };
    let typo = String::from_utf8(typo).unwrap();
    // Every refusal, every malformed request and every odd place a key can be put.
    let code = ACTIVATION_CODE;
    let refused = [
        (server.get_with_key("/secrets/probe", &first), 401),
        (server.get_with_key("/secrets/probe", &typo), 401),
        (server.get_with_key("/secrets/probe", &second[..40]), 401),
        (
            server.get("/secrets/probe", &[("x-api-key", &second), ("x-activation-code", "WRONG")]),
            401,
        ),
        (server.get("/secrets/probe", &[("x-api-key", &second), ("X-Api-Key", &second)]), 400),
        (server.get("/secrets/probe", &[("x-api-key", &second)]), 400),
        (
            server.get(&format!("/secrets/{second}?key={second}"), &[("x-activation-code", code)]),
            400,
        ),
        (server.get("/secrets/probe", &[("authorization", &format!("Bearer {second}"))]), 400),
    ];
    for (answer, status) in &refused {
        assert_eq!(answer.status, *status, "{answer:?}");
        answers.push_str(&String::from_utf8_lossy(&answer.body));
    }
    let long = "x".repeat(9000);
    for raw in [
        format!("GET /{second} HTTP/1.1\nHost: localhost\nx-api-key: {second}\n\n"),
        format!("GET / HTTP/1.1\r\nHost: localhost\r\nx-api-key: {second}\u{e9}\r\n\r\n"),
        format!("GET / HTTP/1.1\r\nHost: localhost\r\nx-api-key: {second}\r\nX: {long}\r\n\r\n"),
        format!("GET /{second} HTTP/1.1\r\nx-api-key: {second}\r\n\r\n"),
    ] {
        let got = server.tls_exchange(raw.as_bytes(), Duration::from_secs(5));
        answers.push_str(&String::from_utf8_lossy(&got.raw));
    }
    let plain = format!("GET /{second} HTTP/1.1\r\nHost: localhost\r\nx-api-key: {second}\r\n\r\n");
    answers.push_str(&String::from_utf8_lossy(
        &tcp_exchange(server.api, plain.as_bytes(), Duration::from_secs(5)).raw,
    ));
    let admin = format!(
        "POST /key/{second} HTTP/1.1\r\nHost: localhost\r\nx-api-key: {second}\r\n\
         Connection: close\r\n\r\n"
    );
    answers.push_str(&String::from_utf8_lossy(
        &tcp_exchange(server.admin, admin.as_bytes(), Duration::from_secs(5)).raw,
    ));

    let status = server.cli(&["key", "status"]);
    cli_messages.push_str(&String::from_utf8_lossy(&status.stdout));
    cli_messages.push_str(&String::from_utf8_lossy(&status.stderr));
    let revoke = server.cli(&["key", "revoke"]);
    assert!(revoke.status.success(), "{revoke:?}");
    cli_messages.push_str(&String::from_utf8_lossy(&revoke.stdout));
    assert_eq!(probe(&second).status, 401);
    let (third, stderr) = cli_key(&server, "generate");
    cli_messages.push_str(&stderr);
    assert_eq!(probe(&third).status, 404);
    let (_, body) = server.admin("POST", "/key/replace");
    let fourth = body["api_key"].as_str().unwrap().to_owned();
    assert_eq!(probe(&third).status, 401);

    // Every refusal has its own line (the budget is 1000) and, once its one-second window
    // has ended, is counted in an audit line: wait for all of them to be in the log.
    let log = poll(
        &format!("waiting for {REFUSALS} refusals to be audited"),
        Duration::from_secs(10),
        || server.log(),
        |log| audited(log) == REFUSALS,
    );
    let lines = log.lines().filter(|l| l.contains(" refused port=")).count();
    assert_eq!(lines, REFUSALS as usize, "one line for each refusal:\n{log}");
    assert!(log.contains("audit action=key.replace"), "{log}");
    let keys = [first.as_str(), second.as_str(), third.as_str(), fourth.as_str(), typo.as_str()];
    assert_no_leak("the log", &log, &keys);
    assert_no_leak("an error answer", &answers, &keys);
    assert_no_leak("a CLI message", &cli_messages, &keys);
    for file in walk(&server.state_dir()) {
        let content = String::from_utf8_lossy(&std::fs::read(&file).unwrap()).into_owned();
        // The store holds the current key's hash on purpose, and the retired keys' hashes (so a
        // client still presenting one is named), and nothing else of any key; no other file
        // holds even those.
        let mut content = content;
        if file.file_name() == Some(std::ffi::OsStr::new("key.ron")) {
            for key in [&first, &second, &third, &fourth] {
                content = content.replace(&sha256_hex(key), "");
            }
        }
        assert_no_leak(&file.display().to_string(), &content, &keys);
    }
}

/// The refusals of the run above: the 8 refused requests, the 4 malformed ones over TLS, the
/// one in plain HTTP, and the two keys presented after they were revoked or replaced.
const REFUSALS: u64 = 15;

/// The refusals counted by the `audit action=refused` lines of `log`.
fn audited(log: &str) -> u64 {
    log.lines()
        .filter(|l| l.contains(" audit action=refused "))
        .map(|l| {
            let count = l.split(" count=").nth(1).and_then(|c| c.split(' ').next());
            count.and_then(|c| c.parse::<u64>().ok()).unwrap_or_else(|| panic!("no count: {l}"))
        })
        .sum()
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// The uid owning `/proc/<pid>/status` (and `mem`, `maps`, ...): the process's own uid,
/// unless the process is not dumpable, in which case the kernel gives the files to root
/// (proc(5), PR_SET_DUMPABLE), so that not even its own uid can read its memory.
fn proc_owner(pid: u32) -> u32 {
    std::fs::metadata(format!("/proc/{pid}/status")).unwrap().uid()
}

#[test]
#[ignore = "needs root: starts the server as uid 65534 (setpriv)"]
fn the_server_cannot_dump_core_or_be_read_by_its_own_uid() {
    require_root(
        "the_server_cannot_dump_core_or_be_read_by_its_own_uid",
        "start the server as uid 65534 and see who owns its /proc files",
    );
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(dir.path(), Some(65534), Some(65534)).unwrap();
    let config = dir.path().join("config.ron");
    std::fs::write(&config, config_text(dir.path(), &Options::default())).unwrap();
    let as_nobody = ["--reuid=65534", "--regid=65534", "--clear-groups"];
    let mut server = Command::new("setpriv")
        .args(as_nobody)
        .arg(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = server.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut log = String::new();
    while !log.contains("api listening on") {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => log.push_str(&(line + "\n")),
            Err(_) => {
                let _ = server.kill();
                panic!("the server did not start as uid 65534:\n{log}");
            }
        }
    }
    // A control: the same uid's ordinary process owns its /proc entry.
    let mut control =
        Command::new("setpriv").args(as_nobody).args(["sleep", "30"]).spawn().unwrap();
    // Its /proc files tell once setpriv has changed uid and run `sleep` in its place.
    poll(
        "waiting for the control process to become `sleep`",
        Duration::from_secs(10),
        || std::fs::read_to_string(format!("/proc/{}/comm", control.id())).unwrap_or_default(),
        |comm| comm == "sleep\n",
    );
    let control_owner = proc_owner(control.id());
    let server_owner = proc_owner(server.id());
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.id())).unwrap();
    let _ = (control.kill(), server.kill());
    let _ = (control.wait(), server.wait());
    assert_eq!(control_owner, 65534, "the control process owns its /proc files");
    assert_eq!(server_owner, 0, "the server is not dumpable, so root owns its /proc files");
    let core = limits.lines().find(|l| l.starts_with("Max core file size")).unwrap();
    let fields: Vec<&str> = core.split_whitespace().collect();
    assert_eq!(&fields[4..6], &["0", "0"], "{core}");
    assert!(!log.contains("cannot turn core dumps off"), "{log}");
}
