//! One budget for everything strangers make the server say (issue 19): TLS trouble, refusals,
//! keys seen in clear text and new client addresses, each flooded, each counted line by line.

use std::net::IpAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::{ACTIVATION_CODE, Options, Server, poll, tcp_exchange};

/// Lines a kind may write per window in these tests, and the window.
const LINES: usize = 5;
const WINDOW_SECS: u64 = 2;

/// One kind of line about traffic, as the log and the metrics show it.
struct Kind {
    /// The `kind` label of `aims_log_events_total`.
    label: &'static str,
    /// What each of its lines contains.
    line: &'static str,
}

const TLS: Kind = Kind { label: "tls", line: " tls port=api client=127.0.0.1 event=" };
const EXPOSURE: Kind = Kind { label: "key_exposure", line: " key exposure: the live key " };
const REFUSED: Kind = Kind { label: "refused", line: " refused port=api client=" };
const NEW_ADDRESS: Kind =
    Kind { label: "new_address", line: " audit action=key.new_address client=127.0.2." };

/// The lines written of `kind`, and the lines its summaries say were held back.
fn written_and_held_back(log: &str, kind: &Kind) -> (usize, u64) {
    let written = log.lines().filter(|l| l.contains(kind.line)).count();
    let held_back = log
        .lines()
        .filter_map(|l| {
            if kind.label == "new_address" {
                l.split(" audit action=key.new_address client=* ").nth(1)?.split(" count=").nth(1)
            } else {
                l.split(&format!("log budget: kind={} suppressed=", kind.label)).nth(1)
            }
        })
        .map(|rest| rest.split(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    (written, held_back)
}

/// Waits until every event of `kind` is accounted for in the log (a line written, or counted
/// in a summary once its window ended), and checks the lines kept within the budget of each
/// window the flood touched.
fn assert_within_budget(server: &Server, kind: &Kind, at_least: u64, flood_took: Duration) {
    let events = server.metric(&format!("aims_log_events_total{{kind=\"{}\"}}", kind.label));
    let events = events.unwrap_or_else(|| panic!("no events counted for {}", kind.label)) as u64;
    assert!(events >= at_least, "{}: {events} events, not at least {at_least}", kind.label);
    let log = poll(
        &format!("waiting for every {} event in the log or its summary", kind.label),
        Duration::from_secs(20),
        || server.log(),
        |log| {
            let (written, held_back) = written_and_held_back(log, kind);
            written as u64 + held_back == events
        },
    );
    let (written, held_back) = written_and_held_back(&log, kind);
    let windows = (flood_took.as_secs() / WINDOW_SECS + 2) as usize;
    assert!(written <= LINES * windows, "{}: {written} lines in {windows} windows", kind.label);
    assert!(held_back > 0, "{}: the flood was held back", kind.label);
    let suppressed =
        server.metric(&format!("aims_log_suppressed_total{{kind=\"{}\"}}", kind.label));
    assert_eq!(
        suppressed,
        Some(held_back as f64),
        "{}: the metric counts what was held back",
        kind.label
    );
}

fn budget_server() -> Server {
    Server::start_with(&Options {
        top: format!("refusal_log_lines: {LINES}, refusal_log_window_secs: {WINDOW_SECS},"),
        api: "max_refusals_per_address: 1000000,".into(),
        ..Options::default()
    })
}

#[test]
fn a_flood_of_bad_sni_handshakes_stays_within_the_budget_and_echoes_nothing() {
    let server = budget_server();
    let started = Instant::now();
    // The repro: an IP address, and a name that is no DNS name, as SNI.
    let script = format!(
        "for i in $(seq 40); do for name in 127.0.0.1 a..b; do \
         openssl s_client -connect {} -servername $name </dev/null >/dev/null 2>&1; done; done",
        server.api
    );
    // Each run's own status is openssl's view of a handshake it ended itself: not the point.
    Command::new("sh").args(["-c", &script]).status().expect("openssl runs");
    assert_within_budget(&server, &TLS, 80, started.elapsed());
    let log = server.log();
    assert!(!log.contains("a..b") && !log.contains("Illegal SNI"), "echoed:\n{log}");
    assert!(log.contains("event=sni_ip_address") && log.contains("event=sni_invalid"), "{log}");
}

#[test]
fn floods_of_exposures_refusals_and_new_addresses_each_stay_within_their_budget() {
    let server = budget_server();
    let key = server.generate_key();
    let started = Instant::now();
    // The live key over plain HTTP: an exposure (and a refusal) each time.
    let plain = format!("GET / HTTP/1.1\r\nHost: localhost\r\nx-api-key: {key}\r\n\r\n");
    for _ in 0..60 {
        let exchange = tcp_exchange(server.api, plain.as_bytes(), Duration::from_secs(5));
        assert!(exchange.raw.starts_with(b"HTTP/1.1 400 "), "{exchange:?}");
    }
    // Wrong credentials from one address.
    for _ in 0..60 {
        assert_eq!(server.get("/budget", &[("x-api-key", "aims_wrong")]).status, 400);
    }
    // The key, from 60 addresses it has never been used from.
    let valid = [("x-api-key", key.as_str()), ("x-activation-code", ACTIVATION_CODE)];
    for i in 1..=60u8 {
        let from: IpAddr = format!("127.0.2.{i}").parse().unwrap();
        assert_eq!(server.get_from(from, "/budget", &valid).status, 404);
    }
    let took = started.elapsed();
    assert_within_budget(&server, &EXPOSURE, 60, took);
    assert_within_budget(&server, &REFUSED, 120, took);
    assert_within_budget(&server, &NEW_ADDRESS, 60, took);
    // The exposure still says what to do, at ERROR, and its summary is an ERROR too.
    let log = server.log();
    let summary = log.lines().find(|l| l.contains("log budget: kind=key_exposure")).unwrap();
    assert!(summary.contains(" ERROR "), "{summary}");
}
