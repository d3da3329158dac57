//! The HTTP layer through TLS on the public port: keep-alive, pipelining, HEAD and limits.

use std::io::Write;

use crate::util::{
    ACTIVATION_CODE, BASE, Options, Response, Server, no_method, read_response, snapshot_json,
};

fn request(path: &str, key: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nx-api-key: {key}\r\nx-activation-code: {ACTIVATION_CODE}\r\n{extra}\r\n"
    )
}

#[test]
fn keep_alive_pipelining_and_head_on_one_tls_connection() {
    let server = Server::start();
    let key = server.generate_key();
    let mut stream = server.connect();
    // Three requests in one write; answered in order on the same connection.
    let batch = format!(
        "{}{}{}",
        request("/a", &key, ""),
        request("/b", &key, "").replacen("GET", "HEAD", 1),
        request("/c", &key, "Connection: close\r\n"),
    );
    stream.write_all(batch.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let _ = std::io::Read::read_to_end(&mut stream, &mut raw);
    let (first, used) = Response::parse_prefix(&raw, false).unwrap();
    assert_eq!((first.status, first.exception()), (404, no_method("/a")));
    let (head, used2) = Response::parse_prefix(&raw[used..], true).unwrap();
    assert_eq!(head.status, 404);
    assert!(head.header("content-length").unwrap().parse::<usize>().unwrap() > 0);
    let third = Response::parse(&raw[used + used2..]).unwrap();
    assert_eq!((third.status, third.exception()), (404, no_method("/c")));
    assert_eq!(third.header("connection"), Some("close"));
}

#[test]
fn limits_answer_with_their_status_and_close() {
    let server = Server::start_with(&Options {
        api: "max_header_bytes: 1024, max_body_bytes: 10,".into(),
        ..Options::default()
    });
    let key = server.generate_key();
    let big_header = format!("X-Filler: {}\r\n", "a".repeat(2000));
    let cases = [
        (request("/x", &key, &big_header), 431),
        (request("/x", &key, "Content-Length: 11\r\n"), 413),
        (request("/x", &key, "Transfer-Encoding: chunked\r\n"), 501),
        (request("/x", &key, "Transfer-Encoding: chunked\r\nContent-Length: 1\r\n"), 400),
        ("GET http://localhost/x HTTP/1.1\r\nHost: localhost\r\n\r\n".to_owned(), 400),
    ];
    for (bytes, status) in cases {
        let mut stream = server.connect();
        stream.write_all(bytes.as_bytes()).unwrap();
        let response = read_response(&mut stream).expect("an answer");
        assert_eq!(response.status, status, "{}", &bytes[..40]);
        assert_eq!(response.header("connection"), Some("close"));
        response.exception();
    }
}

#[test]
fn a_small_body_is_read_and_the_connection_kept() {
    let server = Server::start();
    let key = server.generate_key();
    let mut stream = server.connect();
    let with_body = format!("{}hello", request("/x", &key, "Content-Length: 5\r\n"));
    stream.write_all(with_body.as_bytes()).unwrap();
    assert_eq!(read_response(&mut stream).unwrap().status, 404);
    stream.write_all(request("/y", &key, "").as_bytes()).unwrap();
    let second = read_response(&mut stream).unwrap();
    assert_eq!(second.exception(), no_method("/y"));
}

#[test]
fn a_syntactically_invalid_host_gets_400_and_an_empty_one_is_served() {
    let server = Server::start();
    let key = server.generate_key();
    let with_host = |host: &str| request("/x", &key, "").replacen("localhost", host, 1);
    for host in ["a b", "a:b:c", "h:99999", "[::1", "[::1]x", "h:8x"] {
        let mut stream = server.connect();
        stream.write_all(with_host(host).as_bytes()).unwrap();
        let response = read_response(&mut stream).expect("an answer");
        assert_eq!(response.status, 400, "Host: {host}");
        assert_eq!(response.header("connection"), Some("close"), "Host: {host}");
        assert!(response.exception().contains("Host header"), "{}", response.exception());
    }
    // RFC 9112 §3.2: an empty Host is what a client sends for a target without authority.
    for host in ["", "localhost:8443", "[::1]:8443", "127.0.0.1"] {
        let mut stream = server.connect();
        stream.write_all(with_host(host).as_bytes()).unwrap();
        let response = read_response(&mut stream).expect("an answer");
        assert_eq!(response.status, 404, "Host: {host}");
    }
}

/// A body larger than what one connection may send in one turn (512 KiB) goes out a chunk
/// (256 KiB) at a time between the worker's other clients: it must still arrive whole, in
/// order with the requests pipelined behind it, and a close asked for after it must follow it
/// (the TLS `close_notify` only once the last byte of the body is out).
#[test]
fn a_large_body_arrives_whole_before_the_pipelined_answers_and_the_close() {
    let server = Server::start();
    let key = server.generate_key();
    let mut snapshot = snapshot_json(200, 1, "2024-05-14T04:00:00Z");
    // Long names (the store's limit is 1,024 characters) make the page over half a MiB: more
    // than one turn, and three chunks.
    let long = |name: &serde_json::Value| {
        let name = name.as_str().unwrap();
        serde_json::Value::from(format!("{name}{}", "x".repeat(1000 - name.len())))
    };
    for app in snapshot["Applications"].as_array_mut().unwrap() {
        app["Name"] = long(&app["Name"]);
        for module in app["Modules"].as_array_mut().unwrap() {
            module["Name"] = long(&module["Name"]);
        }
    }
    server.import("2024-05-14", &snapshot);
    let page = format!("{BASE}/TechnicalDebt_Application?Limit=200");
    let batch = format!(
        "{}{}{}",
        request(&page, &key, ""),
        request("/b", &key, ""),
        request(&page, &key, "Connection: close\r\n"),
    );
    let mut stream = server.connect();
    stream.write_all(batch.as_bytes()).unwrap();
    let mut raw = Vec::new();
    // Ends cleanly only on the server's close_notify: a close before the body's end fails.
    std::io::Read::read_to_end(&mut stream, &mut raw).expect("the answers, then close_notify");
    let (first, used) = Response::parse_prefix(&raw, false).unwrap();
    let (second, used2) = Response::parse_prefix(&raw[used..], false).unwrap();
    let (third, used3) = Response::parse_prefix(&raw[used + used2..], false).unwrap();
    assert_eq!(used + used2 + used3, raw.len(), "nothing after the third answer");
    assert_eq!((first.status, second.status, third.status), (200, 404, 200));
    assert_eq!(second.exception(), no_method("/b"));
    assert!(first.body.len() > 2 * 256 * 1024, "a page of {} bytes", first.body.len());
    assert_eq!(first.body, third.body);
    let names = |document: &serde_json::Value| -> Vec<String> {
        let applications = document["Applications"].as_array().unwrap();
        applications.iter().map(|app| app["Name"].as_str().unwrap().to_owned()).collect()
    };
    let page: serde_json::Value = serde_json::from_slice(&first.body).unwrap();
    let mut expected = names(&snapshot);
    expected.sort_by(|a, b| a.to_lowercase().cmp(&b.to_lowercase()).then(a.cmp(b)));
    assert_eq!(names(&page), expected);
    assert_eq!(third.header("connection"), Some("close"));
}
