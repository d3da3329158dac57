//! Refused requests: failed-auth throttling per address, and the rate-limited refusal log with
//! its audit lines.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::util::{ACTIVATION_CODE, Options, Server};

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

#[test]
fn a_throttled_address_gets_429_and_the_valid_key_is_still_served() {
    let server = Server::start_with(&Options {
        api: "max_refusals_per_address: 3, refusal_window_secs: 30,".into(),
        ..Options::default()
    });
    let key = server.generate_key();
    let other_key = Server::start().generate_key();
    let wrong = [("x-api-key", other_key.as_str()), ("x-activation-code", ACTIVATION_CODE)];
    let valid = [("x-api-key", key.as_str()), ("x-activation-code", ACTIVATION_CODE)];
    let (noisy, quiet) = (ip("127.0.0.2"), ip("127.0.0.3"));
    let window_opened = Instant::now();
    for _ in 0..3 {
        assert_eq!(server.get_from(noisy, "/t", &wrong).status, 401);
    }
    // The fourth refusal, and every one after it in the window, wrong key or no key.
    for headers in [&wrong[..], &[]] {
        let answer = server.get_from(noisy, "/t", headers);
        assert_eq!(answer.status, 429, "{}", String::from_utf8_lossy(&answer.body));
        let retry_after: u64 = answer.header("retry-after").unwrap().parse().unwrap();
        // What is left of the 30 s window opened by the first refusal, rounded up: 30 while
        // the test is under a second old, one less per second it has taken.
        let least = 30 - window_opened.elapsed().as_secs();
        assert!((least..=30).contains(&retry_after), "Retry-After {retry_after}, not {least}..=30");
        let message = format!(
            "too many refused requests from this address: retry after {retry_after} seconds \
             (requests with a valid API key and activation code are not affected)"
        );
        assert_eq!(answer.exception(), message);
        assert_eq!(answer.header("connection"), Some("close"));
    }
    // The valid key and code are always served from the throttled address, and serving them
    // does not lift the throttle for the guesser behind the same address.
    for _ in 0..5 {
        assert_eq!(server.get_from(noisy, "/t", &valid).status, 404);
    }
    assert_eq!(server.get_from(noisy, "/t", &wrong).status, 429);
    // Other addresses are judged on their own.
    assert_eq!(server.get_from(quiet, "/t", &wrong).status, 401);
    assert_eq!(server.get_from(quiet, "/t", &valid).status, 404);
    let log = server.wait_for_log("status=429");
    assert!(log.contains("refused port=api client=127.0.0.2 status=429"), "{log}");
}

/// Sums the `count=` of every audit line about refusals for `client`.
fn audited(log: &str, client: &str) -> u64 {
    log.lines()
        .filter(|l| l.contains("audit action=refused") && l.contains(&format!(" client={client} ")))
        .map(|l| {
            l.split(" count=").nth(1).unwrap().split(' ').next().unwrap().parse::<u64>().unwrap()
        })
        .sum()
}

#[test]
fn refusals_are_logged_within_a_budget_and_every_one_is_audited() {
    let server = Server::start_with(&Options {
        top: "refusal_log_lines: 5, refusal_log_window_secs: 2,".into(),
        api: "max_refusals_per_address: 1000000,".into(),
        ..Options::default()
    });
    let key = server.generate_key();
    let other_key = Server::start().generate_key();
    let wrong = [("x-api-key", other_key.as_str()), ("x-activation-code", ACTIVATION_CODE)];
    // 40 refusals from one address, 10 from another with a well-formed wrong key, and one
    // each from 70 more: more clients than one window keeps apart.
    let started = Instant::now();
    for _ in 0..40 {
        assert_eq!(server.get_from(ip("127.0.0.2"), "/r", &[]).status, 400);
    }
    for _ in 0..10 {
        assert_eq!(server.get_from(ip("127.0.0.3"), "/r", &wrong).status, 401);
    }
    for i in 0..70 {
        assert_eq!(server.get_from(ip(&format!("127.0.1.{}", i + 1)), "/r", &[]).status, 400);
    }
    let sending = started.elapsed();
    // Every refusal is in an audit line once its window has ended.
    let deadline = Instant::now() + Duration::from_secs(10);
    let log = loop {
        let log = server.log();
        let total = audited(&log, "127.0.0.2")
            + audited(&log, "127.0.0.3")
            + (1..=70).map(|i| audited(&log, &format!("127.0.1.{i}"))).sum::<u64>()
            + audited(&log, "*");
        if total == 120 || Instant::now() > deadline {
            assert_eq!(total, 120, "every refusal is counted in an audit line:\n{log}");
            break log;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(audited(&log, "127.0.0.2"), 40);
    assert_eq!(audited(&log, "127.0.0.3"), 10);
    let fingerprint = format!("fingerprint=aims_...{}", &other_key[other_key.len() - 4..]);
    let line = log
        .lines()
        .find(|l| l.contains("audit action=refused port=api client=127.0.0.3 "))
        .unwrap();
    assert!(line.contains(&fingerprint) && line.contains("reason=\"wrong key\""), "{line}");
    assert!(
        line.contains("status=401") && line.contains(" first=") && line.contains(" last="),
        "{line}"
    );
    // The per-request lines stayed within the budget of each window the run touched.
    let windows = (sending.as_secs() / 2 + 2) as usize;
    let lines = log.lines().filter(|l| l.contains(" refused port=api ")).count();
    assert!(lines <= 5 * windows, "{lines} refusal lines in {windows} windows");
    let audit_lines = log.lines().filter(|l| l.contains("audit action=refused")).count();
    assert!(audit_lines <= 65 * windows, "{audit_lines} audit lines in {windows} windows");
    if audit_lines - usize::from(log.contains("client=* ")) <= 64 {
        assert!(log.contains("audit action=refused port=* client=* "), "an overflow line:\n{log}");
    }
    assert!(!log.contains(&other_key) && !log.contains(&key));
}

/// Sends `count` copies of `request` (a head without a body) on one admin connection, the last
/// one asking to close, and returns how many answers had `status`.
fn pipeline_admin(server: &Server, request: &str, count: usize, status: u16) -> usize {
    let keep = request.replace("\r\n\r\n", "\r\nConnection: keep-alive\r\n\r\n");
    let last = request.replace("\r\n\r\n", "\r\nConnection: close\r\n\r\n");
    let mut bytes = keep.repeat(count - 1);
    bytes.push_str(&last);
    let raw = crate::util::raw_exchange(server.admin, bytes.as_bytes());
    let text = String::from_utf8_lossy(&raw);
    text.matches(&format!("HTTP/1.1 {status} ")).count()
}

/// The value of one counter, exactly as written, or 0 while the series is absent.
fn metric(server: &Server, series: &str) -> u64 {
    server.metric(series).map_or(0, |value| value as u64)
}

#[test]
fn admin_refusals_share_the_refusal_log_and_count_under_their_own_status() {
    let server = Server::start_with(&Options {
        top: "refusal_log_lines: 5, refusal_log_window_secs: 2,".into(),
        ..Options::default()
    });
    // A flood of browser-shaped requests: 2,000 with Origin, 1,000 with a foreign Host.
    let started = Instant::now();
    let origin = "GET /key HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: http://evil.example\r\n\r\n";
    let foreign = "GET /key HTTP/1.1\r\nHost: evil.example\r\n\r\n";
    let mut answered = 0;
    for _ in 0..20 {
        answered += pipeline_admin(&server, origin, 100, 403);
    }
    for _ in 0..10 {
        answered += pipeline_admin(&server, foreign, 100, 403);
    }
    assert_eq!(answered, 3000, "every browser-shaped request gets its 403");
    // One request the HTTP layer refuses (a Content-Length that is not digits): 400, counted
    // as a 400, not as a 403. (A head sent whole, so the server reads all of it.)
    let bad =
        "PUT /snapshots/2024-01-01 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 12x\r\n\r\n";
    let raw = crate::util::raw_exchange(server.admin, bad.as_bytes());
    assert!(raw.starts_with(b"HTTP/1.1 400 "), "{}", String::from_utf8_lossy(&raw));
    let sending = started.elapsed();

    // Every refusal is in an audit line of its burst once its window has ended, under uid 0
    // (the tests' own uid: the server's, so allowed).
    let uid = rustix::process::getuid().as_raw();
    let client = format!("uid:{uid}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let log = loop {
        let log = server.log();
        let total = audited(&log, &client);
        if total == 3001 || Instant::now() > deadline {
            assert_eq!(total, 3001, "every admin refusal is counted in an audit line:\n{log}");
            break log;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // The per-request lines stayed within the budget of each window the flood touched.
    let windows = (sending.as_secs() / 2 + 2) as usize;
    let lines = log.lines().filter(|l| l.contains(" refused port=admin ")).count();
    assert!(lines <= 5 * windows, "{lines} refusal lines in {windows} windows:\n{log}");
    assert!(!log.contains("browser-shaped request from"), "no unbudgeted line per request");

    // Each refusal counted once, under its own status and reason.
    let series = |route_status: &str| {
        metric(&server, &format!("aims_requests_total{{port=\"admin\",{route_status}}}"))
    };
    assert_eq!(series("route=\"refused\",status=\"403\""), 3000);
    assert_eq!(series("route=\"refused\",status=\"400\""), 1);
    assert_eq!(metric(&server, "aims_refusals_total{reason=\"admin_browser\"}"), 3000);
    assert_eq!(metric(&server, "aims_refusals_total{reason=\"bad_request\"}"), 1);
}
