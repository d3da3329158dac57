//! The benchmark's own client, for what wrk cannot measure fairly, and the in-process
//! micro-benchmarks. Driven by `bench/run`; prints one JSON object per run.
//!
//! - `handshakes ADDR --cacert PEM [--resume] [--threads N] [--secs S] [--key K --code C]`:
//!   a new TLS connection per request. Without `--resume` every handshake is a full one
//!   (resumption disabled in the client: wrk would resume sessions on reconnect); with it the
//!   client resumes with tickets, as a returning client does.
//! - `hold ADDR --cacert PEM --conns N --secs S [--key K --code C --path P]`: opens N TLS
//!   keep-alive connections, makes one request on each, prints `holding N`, and keeps them
//!   open and idle for S seconds (the harness measures the server's memory meanwhile).
//! - `auth`: the cost of one authentication decision (header lookup, key format check,
//!   SHA-256 of key and activation code, constant-time compares), in nanoseconds.
//!
//! Loopback only: ADDR must be a loopback address. Every loop is bounded by `--secs`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use rustls::client::Resumption;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

struct Args {
    command: String,
    addr: Option<SocketAddr>,
    cacert: Option<PathBuf>,
    resume: bool,
    threads: usize,
    secs: u64,
    conns: usize,
    key: String,
    code: String,
    path: String,
}

fn parse_args() -> Args {
    let mut args = Args {
        command: String::new(),
        addr: None,
        cacert: None,
        resume: false,
        threads: 2,
        secs: 5,
        conns: 1000,
        key: String::new(),
        code: String::new(),
        path: "/ArchitectureDashboardAPI/rest/V1/TechnicalDebt_Level".into(),
    };
    let mut it = std::env::args().skip(1);
    args.command = it.next().unwrap_or_default();
    while let Some(arg) = it.next() {
        let mut value = || it.next().expect("a value after the flag");
        match arg.as_str() {
            "--cacert" => args.cacert = Some(value().into()),
            "--resume" => args.resume = true,
            "--threads" => args.threads = value().parse().unwrap(),
            "--secs" => args.secs = value().parse().unwrap(),
            "--conns" => args.conns = value().parse().unwrap(),
            "--key" => args.key = value(),
            "--code" => args.code = value(),
            "--path" => args.path = value(),
            "--bench" => {} // cargo passes this to bench targets; harmless here
            other if args.addr.is_none() => {
                args.addr = Some(other.parse().expect("ADDR as ip:port"))
            }
            other => panic!("unexpected argument {other}"),
        }
    }
    if let Some(addr) = args.addr {
        assert!(addr.ip().is_loopback(), "loopback only: {addr}");
    }
    args
}

fn main() {
    let args = parse_args();
    match args.command.as_str() {
        "handshakes" => handshakes(&args),
        "hold" => hold(&args),
        "auth" => auth(),
        _ => {
            eprintln!(
                "usage: loadgen handshakes|hold|auth … (see the module doc in bench/loadgen.rs)"
            );
            std::process::exit(2);
        }
    }
}

fn client_config(cacert: &Path, resume: bool) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(cacert).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    if !resume {
        config.resumption = Resumption::disabled();
    }
    Arc::new(config)
}

fn request(args: &Args, close: bool) -> String {
    format!(
        "GET {} HTTP/1.1\r\nHost: localhost\r\nx-api-key: {}\r\nx-activation-code: {}\r\n{}\r\n",
        args.path,
        args.key,
        args.code,
        if close { "Connection: close\r\n" } else { "" }
    )
}

fn connect(
    addr: SocketAddr,
    config: &Arc<ClientConfig>,
) -> StreamOwned<ClientConnection, TcpStream> {
    let socket = TcpStream::connect(addr).unwrap();
    socket.set_nodelay(true).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let conn =
        ClientConnection::new(Arc::clone(config), ServerName::try_from("localhost").unwrap())
            .unwrap();
    StreamOwned::new(conn, socket)
}

/// Reads one response (head and Content-Length body); returns its status.
fn read_one(stream: &mut impl Read) -> Option<u16> {
    let mut raw = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        if let Ok(httparse::Status::Complete(head)) = response.parse(&raw) {
            let length = response
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.parse::<usize>().ok())
                .unwrap_or(0);
            if raw.len() >= head + length {
                return response.code;
            }
        }
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
        }
    }
}

fn handshakes(args: &Args) {
    let addr = args.addr.expect("ADDR");
    let config = client_config(args.cacert.as_deref().expect("--cacert"), args.resume);
    let done = Arc::new(AtomicU64::new(0));
    let resumed = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(args.secs);
    let started = Instant::now();
    let request = request(args, true);
    let workers: Vec<_> = (0..args.threads)
        .map(|_| {
            let (config, done, resumed, failed, request) = (
                Arc::clone(&config),
                Arc::clone(&done),
                Arc::clone(&resumed),
                Arc::clone(&failed),
                request.clone(),
            );
            std::thread::spawn(move || {
                while Instant::now() < deadline {
                    let mut stream = connect(addr, &config);
                    let ok = stream.write_all(request.as_bytes()).is_ok()
                        && read_one(&mut stream).is_some();
                    if ok {
                        done.fetch_add(1, Ordering::Relaxed);
                        if stream.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
                            resumed.fetch_add(1, Ordering::Relaxed);
                        }
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    let done = done.load(Ordering::Relaxed);
    println!(
        "{{\"handshakes_per_sec\":{:.1},\"handshakes\":{done},\"resumed\":{},\"failed\":{},\"secs\":{secs:.2}}}",
        done as f64 / secs,
        resumed.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
}

fn hold(args: &Args) {
    let addr = args.addr.expect("ADDR");
    let config = client_config(args.cacert.as_deref().expect("--cacert"), false);
    let request = request(args, false);
    let mut held = Vec::with_capacity(args.conns);
    let mut failed = 0;
    for _ in 0..args.conns {
        let mut stream = connect(addr, &config);
        if stream.write_all(request.as_bytes()).is_ok() && read_one(&mut stream).is_some() {
            held.push(stream);
        } else {
            failed += 1;
        }
    }
    println!("holding {} failed {failed}", held.len());
    std::io::stdout().flush().unwrap();
    std::thread::sleep(Duration::from_secs(args.secs));
    // Check the connections survived being idle: each still answers.
    let mut alive = 0;
    for stream in &mut held {
        if stream.write_all(request.as_bytes()).is_ok() && read_one(stream).is_some() {
            alive += 1;
        }
    }
    println!("{{\"held\":{},\"failed\":{failed},\"alive_after\":{alive}}}", held.len());
}

fn auth() {
    use aims_api::config::Config;
    use aims_api::http::{Parsed, parse};
    use aims_api::key::ApiKey;
    use aims_api::keys::KeyManager;
    use aims_api::keystore::{KeyRecord, KeyStore, Terms};

    let config = Config::parse(
        Path::new("bench.ron"),
        r#"(activation_code: "BENCH-CODE", state_dir: "x", api: (listen: "127.0.0.1:1"), admin: (listen: "127.0.0.1:2"))"#,
    )
    .unwrap();
    let key = ApiKey::generate(&ring::rand::SystemRandom::new()).unwrap();
    let record = KeyRecord::default().generated(&key, SystemTime::now(), Terms::default()).unwrap();
    // The gate is reached through the key manager, as the API port reaches it; its store sits
    // in a temporary folder and is never written.
    let state = tempfile::tempdir().unwrap();
    let (store, _) = KeyStore::open(state.path()).unwrap();
    let usage = aims_api::keys::usage::Usage::load(
        state.path(),
        std::sync::Arc::new(aims_api::refusals::RefusalLog::new(Duration::from_secs(10), 20)),
    );
    let gate = KeyManager::new(store, record, &config.activation_code, usage, None);
    // Every decision is counted against this address, as the API port counts it.
    let from = std::net::IpAddr::from([127, 0, 0, 1]);
    let bytes = format!(
        "GET /ArchitectureDashboardAPI/rest/V1/TechnicalDebt_Level HTTP/1.1\r\nHost: localhost\r\n\
         User-Agent: bench\r\nAccept: */*\r\nx-api-key: {}\r\nx-activation-code: BENCH-CODE\r\n\r\n",
        key.expose()
    );
    let mut headers = [httparse::EMPTY_HEADER; 100];
    let Ok(Parsed::Complete(request, _)) =
        parse(bytes.as_bytes(), &mut headers, &config.api.limits)
    else {
        panic!("the benchmark request does not parse")
    };
    assert!(gate.check(&request, from).is_ok());
    const BATCH: u32 = 200_000;
    let mut per_decision = Vec::new();
    for _ in 0..9 {
        let started = Instant::now();
        for _ in 0..BATCH {
            std::hint::black_box(gate.check(std::hint::black_box(&request), from)).unwrap();
        }
        per_decision.push(started.elapsed().as_nanos() as f64 / f64::from(BATCH));
    }
    per_decision.sort_by(f64::total_cmp);
    println!(
        "{{\"auth_decision_ns_median\":{:.1},\"min\":{:.1},\"max\":{:.1},\"batches\":9,\"batch\":{BATCH}}}",
        per_decision[4], per_decision[0], per_decision[8]
    );
}
