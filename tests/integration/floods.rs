//! Floods: the connection cap, slow clients by the hundred, failed-auth throttling.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::util::{Options, Server, TlsStream, raise_file_limit};
use crate::workload::{FloodSettings, HELLO_START, Slow, slowloris};

/// What "promptly" means here: far below every timeout in play, with room for a loaded CI box.
const PROMPT: Duration = Duration::from_millis(1500);

fn timed_get(server: &Server, key: &str) -> (u16, Duration) {
    let started = Instant::now();
    let status = server.get_with_key("/flood/probe", key).status;
    (status, started.elapsed())
}

fn timed_health(server: &Server) -> Duration {
    let started = Instant::now();
    assert_eq!(server.admin("GET", "/health").0, 200);
    started.elapsed()
}

fn idle_tls(server: &Server) -> TlsStream {
    let mut stream = server.connect();
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock).unwrap();
    }
    stream
}

fn is_closed(stream: &mut TlsStream) -> bool {
    stream.sock.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
    match stream.read(&mut [0u8; 16]) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => {
            !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
        }
    }
}

#[test]
fn at_the_connection_cap_new_clients_are_served_promptly() {
    const CAP: usize = 24;
    let server = Server::start_with(&Options {
        api: "max_connections: 24, handshake_timeout_secs: 6, header_timeout_secs: 4, \
              idle_timeout_secs: 60,"
            .into(),
        ..Options::default()
    });
    let key = server.generate_key();

    // Every slot held by an idle keep-alive connection: the quietest makes room.
    let mut idle: Vec<TlsStream> = (0..CAP).map(|_| idle_tls(&server)).collect();
    server.wait_for_open_connections(CAP);
    let (status, took) = timed_get(&server, &key);
    assert_eq!(status, 404);
    assert!(took < PROMPT, "idle connections at the cap: served after {took:?}");
    let closed = idle.iter_mut().map(is_closed).filter(|&c| c).count();
    assert_eq!(closed, 1, "idle connections closed to make room for 1");
    assert!(timed_health(&server) < PROMPT);
    drop(idle);
    server.wait_for_open_connections(0);

    // Every slot held by a half-open connection (nothing sent, or half a ClientHello): they
    // owe nobody an answer either, and must not hold the door until the handshake timeout.
    let half_open: Vec<TcpStream> = (0..CAP)
        .map(|i| {
            let mut socket = TcpStream::connect(server.api).unwrap();
            if i % 2 == 0 {
                socket.write_all(HELLO_START).unwrap();
            }
            socket
        })
        .collect();
    server.wait_for_open_connections(CAP);
    let (status, took) = timed_get(&server, &key);
    assert_eq!(status, 404);
    assert!(took < PROMPT, "half-open handshakes at the cap: served after {took:?}");
    assert!(timed_health(&server) < PROMPT);
    drop(half_open);
    server.wait_for_open_connections(0);

    // Every slot mid-request: nothing may be dropped, so a new client waits in the backlog
    // until a header deadline frees a slot, and is then served; the admin port answers at once.
    let busy: Vec<Slow> = (0..CAP)
        .map(|_| Slow::head(&server).unwrap_or_else(|| panic!("{}", server.log())))
        .collect();
    server.wait_for_open_connections(CAP);
    assert!(timed_health(&server) < PROMPT, "the admin port answers at the cap");
    let (status, took) = timed_get(&server, &key);
    assert_eq!(status, 404, "the waiting client is served, not refused");
    assert!(
        took > Duration::from_secs(2) && took < Duration::from_secs(4) + PROMPT,
        "a client behind {CAP} requests in progress waits for the 4 s header deadline: {took:?}"
    );
    drop(busy);
}

#[test]
fn slow_connections_do_not_starve_a_legitimate_client() {
    raise_file_limit();
    let server = Server::start_with(&Options {
        api: "handshake_timeout_secs: 60, header_timeout_secs: 60,".into(),
        ..Options::default()
    });
    let key = server.generate_key();
    let report =
        slowloris(&server, &key, &FloodSettings { slow: 200, hold: Duration::from_secs(3) });
    eprintln!("{report}");
    assert_eq!(report.slow_open_at_end, report.slow_opened, "every slow connection was held");
    assert_eq!(report.probe_failures, 0, "{report}");
    assert!(report.probes >= 5, "{report}");
    assert!(report.probe_worst < PROMPT, "{report}");
}

/// A plain TCP connection to the API port from `source`.
fn tcp_from(server: &Server, source: &str) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(server.api), Type::STREAM, None).unwrap();
    let source: std::net::IpAddr = source.parse().unwrap();
    socket.bind(&std::net::SocketAddr::new(source, 0).into()).unwrap();
    socket.connect(&server.api.into()).unwrap();
    socket.into()
}

/// Whether the server closes `stream` without a word within `PROMPT`.
fn closed_at_once(stream: &mut TcpStream) -> bool {
    stream.set_read_timeout(Some(PROMPT)).unwrap();
    match stream.read(&mut [0u8; 16]) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

#[test]
fn one_address_cannot_take_the_slots_every_other_client_needs() {
    let server = Server::start_with(&Options {
        api: "max_connections: 64, max_connections_per_address: 8,".into(),
        ..Options::default()
    });
    let key = server.generate_key();
    let headers =
        [("x-api-key", key.as_str()), ("x-activation-code", crate::util::ACTIVATION_CODE)];
    // The flood: 127.0.0.2 holds its eight, then tries twenty more.
    let mut held: Vec<TcpStream> = (0..8).map(|_| tcp_from(&server, "127.0.0.2")).collect();
    server.wait_for_open_connections(8);
    for _ in 0..20 {
        let mut extra = tcp_from(&server, "127.0.0.2");
        assert!(closed_at_once(&mut extra), "a connection past the per-address cap is closed");
    }
    // Everyone else is served meanwhile, promptly.
    for _ in 0..10 {
        let (status, took) = timed_get(&server, &key);
        assert_eq!(status, 404);
        assert!(took < PROMPT, "127.0.0.1 waited {took:?}");
        assert_eq!(
            server.get_from("127.0.0.3".parse().unwrap(), "/flood/other", &headers).status,
            404
        );
    }
    assert_eq!(server.metric("aims_refusals_total{reason=\"connection_cap\"}"), Some(20.0));
    let log = server.wait_for_log("reason=\"too many connections from this address");
    assert!(log.contains("refused port=api client=127.0.0.2 status=0"), "{log}");
    // The eight held are still open, and once they close, the address gets its room back.
    for stream in &mut held {
        stream.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let open = matches!(
            stream.read(&mut [0u8; 1]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
        );
        assert!(open, "a held connection within the cap stays open");
    }
    drop(held);
    server.wait_for_open_connections(0);
    assert_eq!(server.get_from("127.0.0.2".parse().unwrap(), "/flood/back", &headers).status, 404);
}
