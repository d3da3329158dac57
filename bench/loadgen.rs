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
//! - `pages ADDR --cacert PEM --threads N --secs S --path P [--dates D,…] [--offsets O,…]
//!   [--gzip] [--key K --code C]`: N clients, one kept-alive connection each, asking in a
//!   closed loop for `P`, where `{date}` and `{offset}` take each listed value in turn (each
//!   client starts at its own place in the list, so the clients spread over it). Prints the
//!   requests, their rate, and latency percentiles; any answer but 200 counts as a failure.
//! - `auth`: the cost of one authentication decision (header lookup, key format check,
//!   SHA-256 of key and activation code, constant-time compares, both clocks), in nanoseconds,
//!   alone and with usage recording (issue 20 (c)), the latter with 1, 64 and 256 client
//!   addresses taking turns.
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
    dates: Vec<String>,
    offsets: Vec<String>,
    gzip: bool,
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
        dates: Vec::new(),
        offsets: Vec::new(),
        gzip: false,
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
            "--dates" => args.dates = value().split(',').map(str::to_owned).collect(),
            "--offsets" => args.offsets = value().split(',').map(str::to_owned).collect(),
            "--gzip" => args.gzip = true,
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
        "pages" => pages(&args),
        "auth" => auth(),
        _ => {
            eprintln!(
                "usage: loadgen handshakes|hold|pages|auth … (see the module doc in \
                 bench/loadgen.rs)"
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

/// Each client's requests: every combination of `--dates` and `--offsets` in `--path`.
fn page_targets(args: &Args) -> Vec<String> {
    let dates = if args.dates.is_empty() { vec![String::new()] } else { args.dates.clone() };
    let offsets = if args.offsets.is_empty() { vec!["0".into()] } else { args.offsets.clone() };
    let mut targets = Vec::new();
    for date in &dates {
        for offset in &offsets {
            targets.push(args.path.replace("{date}", date).replace("{offset}", offset));
        }
    }
    targets
}

fn pages(args: &Args) {
    let addr = args.addr.expect("ADDR");
    let config = client_config(args.cacert.as_deref().expect("--cacert"), true);
    let targets = Arc::new(page_targets(args));
    let deadline = Instant::now() + Duration::from_secs(args.secs);
    let started = Instant::now();
    let clients: Vec<_> = (0..args.threads)
        .map(|client| {
            let (config, targets) = (Arc::clone(&config), Arc::clone(&targets));
            let (key, code, gzip) = (args.key.clone(), args.code.clone(), args.gzip);
            let clients = args.threads.max(1);
            std::thread::spawn(move || {
                let mut latencies = Vec::new();
                let mut failed = 0u64;
                let mut stream = connect(addr, &config);
                // Spread the clients over the targets, so two do not walk it in step.
                let mut next = client * targets.len() / clients;
                while Instant::now() < deadline {
                    let target = &targets[next % targets.len()];
                    next += 1;
                    let request = format!(
                        "GET {target} HTTP/1.1\r\nHost: localhost\r\nx-api-key: {key}\r\n\
                         x-activation-code: {code}\r\n{}\r\n",
                        if gzip { "Accept-Encoding: gzip\r\n" } else { "" }
                    );
                    let asked = Instant::now();
                    let status = stream
                        .write_all(request.as_bytes())
                        .ok()
                        .and_then(|()| read_one(&mut stream));
                    match status {
                        Some(200) => latencies.push(asked.elapsed()),
                        Some(_) => failed += 1,
                        None => {
                            failed += 1;
                            stream = connect(addr, &config);
                        }
                    }
                }
                (latencies, failed)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut failed = 0;
    for client in clients {
        let (mine, lost) = client.join().unwrap();
        latencies.extend(mine);
        failed += lost;
    }
    let secs = started.elapsed().as_secs_f64();
    latencies.sort();
    let ms = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "{{\"requests\":{},\"failed\":{failed},\"rps\":{:.1},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\
         \"max_ms\":{:.3},\"secs\":{secs:.2}}}",
        latencies.len(),
        latencies.len() as f64 / secs,
        ms(0.50),
        ms(0.99),
        latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
    );
}

fn auth() {
    use aims_api::config::Config;
    use aims_api::http::{Parsed, parse};
    use aims_api::key::ApiKey;
    use aims_api::keys::{KeyManager, SystemClock};
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
    let gate = KeyManager::new(store, record, &config.activation_code, usage, None, 1, SystemClock);
    let bytes = format!(
        "GET /ArchitectureDashboardAPI/rest/V1/TechnicalDebt_Level HTTP/1.1\r\nHost: localhost\r\n\
         User-Agent: bench\r\nAccept: */*\r\nx-api-key: {}\r\nx-activation-code: BENCH-CODE\r\n\r\n",
        key.expose()
    );
    let mut headers = aims_api::http::HeaderTable::new();
    let Ok(Parsed::Complete(request, _)) =
        parse(bytes.as_bytes(), &mut headers, &config.api.limits)
    else {
        panic!("the benchmark request does not parse")
    };
    // Every decision with usage is counted against one of `clients` addresses in turn, as the
    // API port counts it (worker 0); the merge runs between batches, as the key thread's would
    // (once a second), so a batch sees a shard as fresh as the server's.
    let addresses = |n: u32| -> Vec<std::net::IpAddr> {
        (0..n).map(|i| std::net::IpAddr::from((0x7f00_0001u32 + i).to_be_bytes())).collect()
    };
    assert!(gate.check(0, &request, addresses(1)[0]).is_ok());
    const BATCH: u32 = 200_000;
    const RUNS: usize = 9;
    let variants: [(&str, u32); 4] = [("none", 0), ("1", 1), ("64", 64), ("256", 256)];
    let mut per_decision: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    // Interleaved: each run measures every variant once, so a drift in the machine's speed
    // hits all of them.
    for _ in 0..RUNS {
        for (index, (_, clients)) in variants.iter().enumerate() {
            let from = addresses((*clients).max(1));
            let started = Instant::now();
            if *clients == 0 {
                for _ in 0..BATCH {
                    std::hint::black_box(gate.judge(0, std::hint::black_box(&request))).unwrap();
                }
            } else {
                for i in 0..BATCH as usize {
                    let address = from[i % from.len()];
                    std::hint::black_box(gate.check(0, std::hint::black_box(&request), address))
                        .unwrap();
                }
            }
            per_decision[index].push(started.elapsed().as_nanos() as f64 / f64::from(BATCH));
            gate.merge_usage();
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[RUNS / 2], v[0], v[RUNS - 1])
    };
    let stats: Vec<(f64, f64, f64)> = per_decision.iter_mut().map(median).collect();
    let (base, min, max) = stats[0];
    let with_usage: Vec<String> = variants
        .iter()
        .zip(&stats)
        .skip(1)
        .map(|((name, _), (m, lo, hi))| {
            format!(
                "\"{name}\":{{\"ns_median\":{m:.1},\"min\":{lo:.1},\"max\":{hi:.1},\"ratio\":{:.3}}}",
                m / base
            )
        })
        .collect();
    println!(
        "{{\"auth_decision_ns_median\":{:.1},\"min\":{min:.1},\"max\":{max:.1},\"with_usage_ns_median\":{:.1},\"usage_ratio\":{:.3},\"with_usage_by_clients\":{{{}}},\"runs\":{RUNS},\"batch\":{BATCH}}}",
        base,
        stats[1].0,
        stats[1].0 / base,
        with_usage.join(",")
    );
}
