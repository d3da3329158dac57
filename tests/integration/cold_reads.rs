//! Older dates read from the store on a blocking thread, while the API worker goes on.
//!
//! A request for a date that is not in memory is parked and answered by the port's blocking
//! threads (docs/DESIGN.md, "The API workers never wait"). What a client must see is only that
//! its answers are right and in order: these tests send cold requests pipelined with others on
//! one connection, and compare every answer with the same request asked again once warm.

use std::io::Write;

use crate::util::{ACTIVATION_CODE, BASE, Response, Server, snapshot_json};

const OLDER: &str = "2024-05-13";
const NEWER: &str = "2024-05-14";

/// A server holding two dates, restarted so that the older one is only in the store.
fn server_with_a_cold_older_date() -> (Server, String) {
    let server = Server::start();
    let key = server.generate_key();
    server.import(OLDER, &snapshot_json(40, 1, "2024-05-13T04:00:00Z"));
    server.import(NEWER, &snapshot_json(40, 2, "2024-05-14T04:00:00Z"));
    let (dir, config) = server.shut_down();
    let server = Server::start_in(dir, config).unwrap_or_else(|log| panic!("restart:\n{log}"));
    (server, key)
}

fn request(method: &str, target: &str, key: &str, extra: &str) -> String {
    format!(
        "{method} {BASE}{target} HTTP/1.1\r\nHost: localhost\r\nx-api-key: {key}\r\n\
         x-activation-code: {ACTIVATION_CODE}\r\n{extra}\r\n"
    )
}

/// Reads `heads` answers in order from one connection (`true` where the request was a HEAD).
fn read_answers(stream: &mut impl std::io::Read, heads: &[bool]) -> Vec<Response> {
    let mut raw = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let mut answers = Vec::new();
    while answers.len() < heads.len() {
        match Response::parse_prefix(&raw, heads[answers.len()]) {
            Some((answer, used)) => {
                answers.push(answer);
                raw.drain(..used);
            }
            None => match stream.read(&mut chunk) {
                Ok(0) => panic!("the connection ended after {} answers", answers.len()),
                Ok(n) => raw.extend_from_slice(&chunk[..n]),
                Err(e) => panic!("reading answer {}: {e}", answers.len() + 1),
            },
        }
    }
    assert!(raw.is_empty(), "more bytes than answers: {}", String::from_utf8_lossy(&raw));
    answers
}

#[test]
fn a_cold_date_is_answered_in_order_with_the_requests_pipelined_behind_it() {
    let (server, key) = server_with_a_cold_older_date();
    let older_page = format!("/TechnicalDebt_Application?Date={OLDER}&Limit=7&Offset=3");
    let older_gzip = format!("/TechnicalDebt_Application?Date={OLDER}&Limit=30");
    let pipeline = [
        request("GET", &older_page, &key, ""),
        request("HEAD", &older_page, &key, ""),
        request("GET", "/TechnicalDebt_Level", &key, ""),
        request("GET", &older_gzip, &key, "Accept-Encoding: gzip\r\n"),
        request("GET", &format!("/TechnicalDebt_Application?Date={NEWER}&Limit=2"), &key, ""),
    ];
    let mut stream = server.connect();
    stream.write_all(pipeline.concat().as_bytes()).unwrap();
    let answers = read_answers(&mut stream, &[false, true, false, false, false]);

    // Each answer is the one its request asked for, as a warm server gives it.
    let warm = |target: &str, extra: &[(&str, &str)]| {
        let mut headers = vec![("x-api-key", key.as_str()), ("x-activation-code", ACTIVATION_CODE)];
        headers.extend_from_slice(extra);
        server.get(&format!("{BASE}{target}"), &headers)
    };
    let page = warm(&older_page, &[]);
    assert_eq!(page.status, 200);
    assert_eq!(page.json()["Page"]["Offset"], 3, "{}", page.json());
    assert_eq!(answers[0].status, 200);
    assert_eq!(answers[0].body, page.body, "the cold page differs from the warm one");
    assert_eq!(answers[1].status, 200);
    assert!(answers[1].body.is_empty(), "a HEAD answer has no body");
    assert_eq!(answers[1].header("content-length"), Some(page.body.len().to_string().as_str()));
    assert_eq!(answers[2].status, 200);
    assert!(answers[2].json()["Levels"].is_array(), "{}", answers[2].json());
    let gzipped = warm(&older_gzip, &[("accept-encoding", "gzip")]);
    assert_eq!(answers[3].header("content-encoding"), Some("gzip"));
    assert_eq!(answers[3].body, gzipped.body, "the cold gzip page differs from the warm one");
    assert_eq!(answers[4].status, 200);
    assert_eq!(
        answers[4].json()["InfrastructureInfo"]["LastAnalyzedOn"],
        "2024-05-14T04:00:00.000Z"
    );
    // The connection is still kept alive after the answers that came back from the store.
    assert!(answers.iter().all(|a| a.header("connection").is_none()));
    // Two went to a blocking thread: the first, which read the date's index and its page's
    // applications, and the gzip page, whose compressed runs were not in memory yet. The HEAD
    // of the first page and the newest date's answers came from memory.
    assert_eq!(server.metric("aims_cold_reads_total{outcome=\"answered\"}"), Some(2.0));
    assert_eq!(server.metric("aims_cold_reads_total{outcome=\"busy\"}"), Some(0.0));
}

#[test]
fn a_cold_request_for_a_date_the_store_lacks_is_a_404_at_once() {
    let (server, key) = server_with_a_cold_older_date();
    let answer = server
        .get_with_key(&format!("{BASE}/TechnicalDebt_Application?Date=2024-05-01&Limit=1"), &key);
    assert_eq!(answer.status, 404);
    assert_eq!(answer.exception(), "no data for Date 2024-05-01");
}
