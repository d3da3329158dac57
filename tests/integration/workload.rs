//! The load behind the race, crash and flood proofs, shared by `cargo test` (small, fast) and
//! `bench/stress.rs` (large): the same code, so what the bench measures is what the tests hold.
//!
//! Everything is loopback-only and every loop is bounded twice, by a count and by a time.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use aims_api::key::KeyHash;
use aims_api::keystore::{self, KeyRecord, KeyState};

use crate::util::{ACTIVATION_CODE, Response, Server, TlsStream, read_response};

/// A small xorshift generator: the tests need spread, not secrecy, and a printed seed makes a
/// failure reproducible.
pub struct Rng(u64);

impl Rng {
    pub fn seeded() -> Self {
        let seed =
            std::env::var("AIMS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64);
                nanos | 1
            });
        eprintln!("workload seed {seed} (set AIMS_SEED to repeat)");
        Self(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

// ---------------------------------------------------------------------------------------------
// Replace and revoke under load.

pub struct RaceSettings {
    pub clients: usize,
    pub cycles: usize,
    pub max_time: Duration,
}

#[derive(Debug, Default)]
pub struct RaceReport {
    pub clients: usize,
    pub cycles: usize,
    pub requests: u64,
    pub admitted: u64,
    pub refused: u64,
    /// Admitted with a key whose replace or revoke response had arrived before the request
    /// was sent. Must be 0.
    pub stale_admits: u64,
    pub server_errors: u64,
    /// Any other answer (or none): must be 0.
    pub unexpected: u64,
    pub admin_failures: u64,
    pub elapsed: Duration,
}

impl RaceReport {
    pub fn holds(&self) -> bool {
        self.stale_admits == 0
            && self.server_errors == 0
            && self.unexpected == 0
            && self.admin_failures == 0
    }
}

impl std::fmt::Display for RaceReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "races: {} clients, {} cycles (replace, revoke, generate), {} requests in {:.1?} \
             ({} admitted, {} refused): {} stale admits, {} 5xx, {} unexpected, {} admin failures",
            self.clients,
            self.cycles,
            self.requests,
            self.elapsed,
            self.admitted,
            self.refused,
            self.stale_admits,
            self.server_errors,
            self.unexpected,
            self.admin_failures
        )
    }
}

/// The grace race: rounds of `replace` with a grace window while HTTPS clients keep using the
/// replaced key across its deadline.
pub struct GraceSettings {
    pub clients: usize,
    pub rounds: usize,
    /// Whole seconds (the admin port takes `grace_secs`).
    pub grace_secs: u64,
}

#[derive(Debug, Default)]
pub struct GraceReport {
    pub clients: usize,
    pub rounds: usize,
    pub grace_secs: u64,
    /// Requests with the replaced key sent before its `valid_until`, and admitted.
    pub admitted_before: u64,
    /// Sent after `valid_until`, and refused.
    pub refused_after: u64,
    /// Sent after `valid_until`, and admitted. Must be 0.
    pub stale_admits: u64,
    /// Any answer but 404 (admitted) or 401 (refused), or none. Must be 0.
    pub unexpected: u64,
    pub elapsed: Duration,
}

impl GraceReport {
    pub fn holds(&self) -> bool {
        self.stale_admits == 0 && self.unexpected == 0 && self.rounds > 0
    }
}

impl std::fmt::Display for GraceReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "grace: {} clients, {} rotations with a {} s grace, in {:.1?}: {} admitted before \
             valid_until, {} refused after, {} stale admits, {} unexpected",
            self.clients,
            self.rounds,
            self.grace_secs,
            self.elapsed,
            self.admitted_before,
            self.refused_after,
            self.stale_admits,
            self.unexpected
        )
    }
}

/// Rotates the key `settings.rounds` times with a grace; during each, every client sends the
/// replaced key in a loop until 700 ms past its `valid_until` (by the same wall clock the
/// server uses). A request sent after `valid_until` must never be admitted.
pub fn grace_race(server: &Arc<Server>, settings: &GraceSettings) -> GraceReport {
    let started = Instant::now();
    let mut report = GraceReport {
        clients: settings.clients,
        grace_secs: settings.grace_secs,
        ..GraceReport::default()
    };
    let (status, body) = server.admin("POST", "/key");
    let mut old = match status {
        201 => body["api_key"].as_str().unwrap().to_owned(),
        _ => panic!("generate: {status} {body}"),
    };
    let grace = format!("{{\"grace_secs\": {}}}", settings.grace_secs);
    for _ in 0..settings.rounds {
        let (status, body) = server.admin_with("POST", "/key/replace", &grace);
        assert_eq!(status, 200, "{body}");
        let valid_until =
            humantime::parse_rfc3339(body["previous"]["valid_until"].as_str().unwrap()).unwrap();
        let threads: Vec<_> = (0..settings.clients)
            .map(|_| {
                let (server, old) = (Arc::clone(server), old.clone());
                std::thread::spawn(move || hammer_until(&server, &old, valid_until))
            })
            .collect();
        for thread in threads {
            let (before, after, stale, unexpected) = thread.join().unwrap();
            report.admitted_before += before;
            report.refused_after += after;
            report.stale_admits += stale;
            report.unexpected += unexpected;
        }
        report.rounds += 1;
        old = body["api_key"].as_str().unwrap().to_owned();
    }
    report.elapsed = started.elapsed();
    report
}

/// One client's requests with `old` until 700 ms past `valid_until`: (admitted before, refused
/// after, stale admits, unexpected answers).
fn hammer_until(server: &Server, old: &str, valid_until: SystemTime) -> (u64, u64, u64, u64) {
    let (mut before, mut after, mut stale, mut unexpected) = (0, 0, 0, 0);
    let request = format!(
        "GET /grace/load HTTP/1.1\r\nHost: localhost\r\nx-api-key: {old}\r\n\
         x-activation-code: {ACTIVATION_CODE}\r\n\r\n"
    );
    let stop = valid_until + Duration::from_millis(700);
    let mut stream = server.connect();
    // Bounded: at most 200,000 requests, and until `stop`.
    for _ in 0..200_000 {
        let sent = SystemTime::now();
        if sent > stop {
            break;
        }
        if stream.write_all(request.as_bytes()).is_err() {
            unexpected += 1;
            stream = server.connect();
            continue;
        }
        let Some(answer) = read_response(&mut stream) else {
            unexpected += 1;
            stream = server.connect();
            continue;
        };
        match (answer.status, sent > valid_until) {
            (404, true) => stale += 1,
            (404, false) => before += 1,
            (401, true) => after += 1,
            (401, false) => {}
            _ => unexpected += 1,
        }
        if answer.header("connection") == Some("close") {
            stream = server.connect();
        }
    }
    (before, after, stale, unexpected)
}

/// The keys issued so far, in order, and how many of them are retired. Keys are retired in
/// the order they were issued (only the newest is ever active), so one counter says it all:
/// key `i` is retired once `retired > i`, which is stored only after the admin response that
/// retired it has arrived.
#[derive(Default)]
struct Ledger {
    keys: RwLock<Vec<String>>,
    /// The index of the active key, if one is.
    active: RwLock<Option<usize>>,
    retired: AtomicUsize,
}

impl Ledger {
    fn issue(&self, key: String) {
        let mut keys = self.keys.write().unwrap();
        keys.push(key);
        *self.active.write().unwrap() = Some(keys.len() - 1);
    }

    fn retire_active(&self) {
        let mut active = self.active.write().unwrap();
        if let Some(index) = active.take() {
            self.retired.store(index + 1, Ordering::SeqCst);
        }
    }

    fn current(&self) -> Option<(usize, String)> {
        let index = (*self.active.read().unwrap())?;
        Some((index, self.keys.read().unwrap()[index].clone()))
    }
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    admitted: AtomicU64,
    refused: AtomicU64,
    stale: AtomicU64,
    server_errors: AtomicU64,
    unexpected: AtomicU64,
}

/// Many HTTPS clients use the key they hold until it is refused, then take the current one,
/// while one thread cycles replace, revoke and generate on the admin port.
pub fn race(server: &Server, settings: &RaceSettings) -> RaceReport {
    let ledger = Arc::new(Ledger::default());
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    ledger.issue(server.generate_key());
    let started = Instant::now();
    let deadline = started + settings.max_time;
    let clients: Vec<_> = (0..settings.clients)
        .map(|id| {
            let (ledger, counters, stop) = (ledger.clone(), counters.clone(), stop.clone());
            let connect = {
                let config = server.tls_config();
                let addr = server.api;
                move || tls_stream(addr, config.clone())
            };
            thread::spawn(move || race_client(id, &connect, &ledger, &counters, &stop, deadline))
        })
        .collect();
    let mut admin_failures = 0;
    let mut cycles = 0;
    while cycles < settings.cycles && Instant::now() < deadline {
        // One cycle: replace, let the clients work, revoke, let them be refused, generate.
        // Each new key is used before the next change, however fast the changes are: the race
        // is between admitted traffic and the changes, and a cycle faster than the clients
        // would test only refusals.
        let (status, body) = server.admin("POST", "/key/replace");
        match body["api_key"].as_str() {
            Some(key) if status == 200 => {
                let key = key.to_owned();
                // The replace response has arrived: the old key is retired from this instant.
                ledger.retire_active();
                let admitted = counters.admitted.load(Ordering::SeqCst);
                ledger.issue(key);
                until_admitted(&counters, admitted, deadline);
            }
            _ => admin_failures += 1,
        }
        thread::sleep(Duration::from_millis(2));
        match server.admin("DELETE", "/key").0 {
            200 => ledger.retire_active(),
            _ => admin_failures += 1,
        }
        thread::sleep(Duration::from_millis(1));
        let key = server.generate_key();
        let admitted = counters.admitted.load(Ordering::SeqCst);
        ledger.issue(key);
        until_admitted(&counters, admitted, deadline);
        thread::sleep(Duration::from_millis(2));
        cycles += 1;
    }
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.join().unwrap();
    }
    let get = |c: &AtomicU64| c.load(Ordering::SeqCst);
    RaceReport {
        clients: settings.clients,
        cycles,
        requests: get(&counters.requests),
        admitted: get(&counters.admitted),
        refused: get(&counters.refused),
        stale_admits: get(&counters.stale),
        server_errors: get(&counters.server_errors),
        unexpected: get(&counters.unexpected),
        admin_failures,
        elapsed: started.elapsed(),
    }
}

/// Waits until the clients have been admitted a few times more than `since`, or until
/// `deadline`: with the key just issued, since the one before it is retired (an admission with
/// that one would be a stale admit, which the report counts and the test refuses).
fn until_admitted(counters: &Counters, since: u64, deadline: Instant) {
    while counters.admitted.load(Ordering::SeqCst) < since + 3 && Instant::now() < deadline {
        thread::yield_now();
    }
}

fn tls_stream(addr: std::net::SocketAddr, config: Arc<rustls::ClientConfig>) -> Option<TlsStream> {
    let socket = TcpStream::connect(addr).ok()?;
    socket.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let name = rustls::pki_types::ServerName::try_from("localhost").ok()?;
    let conn = rustls::ClientConnection::new(config, name).ok()?;
    Some(rustls::StreamOwned::new(conn, socket))
}

fn race_client(
    id: usize,
    connect: &dyn Fn() -> Option<TlsStream>,
    ledger: &Ledger,
    counters: &Counters,
    stop: &AtomicBool,
    deadline: Instant,
) {
    let mut held: Option<(usize, String)> = None;
    let mut stream: Option<TlsStream> = None;
    let mut sent_on_stream = 0u32;
    while !stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        let Some((index, key)) = held.clone().or_else(|| ledger.current()) else {
            thread::yield_now();
            continue;
        };
        held = Some((index, key.clone()));
        // Some clients reconnect now and then, so fresh connections race too.
        if stream.is_none() || sent_on_stream >= 25 + id as u32 % 7 {
            stream = connect();
            sent_on_stream = 0;
        }
        let Some(conn) = stream.as_mut() else {
            counters.unexpected.fetch_add(1, Ordering::SeqCst);
            continue;
        };
        let request = format!(
            "GET /race/{id} HTTP/1.1\r\nHost: localhost\r\n{}\r\n",
            Server::credentials(&key)
        );
        // Read the retirement line before the request leaves: if the key was already retired
        // then, the server must refuse it.
        let retired_before = ledger.retired.load(Ordering::SeqCst);
        let answer =
            conn.write_all(request.as_bytes()).ok().and_then(|()| crate::util::read_response(conn));
        sent_on_stream += 1;
        counters.requests.fetch_add(1, Ordering::SeqCst);
        let Some(answer) = answer else {
            counters.unexpected.fetch_add(1, Ordering::SeqCst);
            stream = None;
            continue;
        };
        if answer.header("connection") == Some("close") {
            stream = None;
        }
        match answer.status {
            401 | 429 => {
                counters.refused.fetch_add(1, Ordering::SeqCst);
                // Take whatever key is current now (maybe the same one, if its successor
                // has not been published yet).
                held = None;
            }
            s if s >= 500 => {
                counters.server_errors.fetch_add(1, Ordering::SeqCst);
            }
            200..=299 | 404 => {
                counters.admitted.fetch_add(1, Ordering::SeqCst);
                if index < retired_before {
                    counters.stale.fetch_add(1, Ordering::SeqCst);
                    eprintln!("STALE ADMIT: key #{index} after {retired_before} were retired");
                }
            }
            other => {
                counters.unexpected.fetch_add(1, Ordering::SeqCst);
                eprintln!("unexpected answer {other}: {}", String::from_utf8_lossy(&answer.body));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Crash torture.

pub struct CrashSettings {
    pub kills: usize,
    pub max_time: Duration,
}

#[derive(Debug, Default)]
pub struct CrashReport {
    pub kills: usize,
    /// Kills aimed at the moment the new store appears; the rest land at random moments.
    pub aimed: usize,
    /// The killed change had answered before the kill landed.
    pub acknowledged: usize,
    /// Unanswered, and the store held the last acknowledged state.
    pub old_state: usize,
    /// Unanswered, but already durable: the store held the in-flight change's result.
    pub new_state: usize,
    /// The kill found a temporary store file beside the store (cleaned at the next start).
    pub temp_files_left: usize,
    /// Anything else. Must be empty.
    pub failures: Vec<String>,
    pub elapsed: Duration,
}

impl std::fmt::Display for CrashReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "crash torture: {} SIGKILLs in {:.1?} ({} aimed at the rename, the rest at random): \
             {} after the answer, {} before the change was durable (old state), {} durable but \
             unanswered (new state); {} temporary files left and cleaned; {} failures",
            self.kills,
            self.elapsed,
            self.aimed,
            self.acknowledged,
            self.old_state,
            self.new_state,
            self.temp_files_left,
            self.failures.len()
        )
    }
}

/// What the test knows for certain about the key store: the last acknowledged change.
#[derive(Debug, Clone)]
struct Known {
    generation: u64,
    state: KeyState,
    /// The active or revoked key, if its text is known (a change that became durable without
    /// an answer leaves a key nobody has seen).
    key: Option<String>,
    fingerprint: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Generate,
    Replace,
    Revoke,
}

impl Change {
    fn request(self) -> &'static [u8] {
        match self {
            Self::Generate => b"POST /key HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
            Self::Replace => {
                b"POST /key/replace HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
            }
            Self::Revoke => b"DELETE /key HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
        }
    }

    fn possible(state: KeyState, rng: &mut Rng) -> Self {
        match state {
            KeyState::Active if rng.below(3) == 0 => Self::Revoke,
            KeyState::Active => Self::Replace,
            KeyState::None | KeyState::Revoked | KeyState::Expired => Self::Generate,
        }
    }

    /// The state after this change, as its answer tells it.
    fn acknowledged(self, known: &Known, body: &serde_json::Value) -> Known {
        let generation = body["generation"].as_u64().unwrap_or(0);
        let fingerprint = body["fingerprint"].as_str().map(str::to_owned);
        match self {
            Self::Revoke => Known { generation, state: KeyState::Revoked, ..known.clone() },
            _ => Known {
                generation,
                state: KeyState::Active,
                key: body["api_key"].as_str().map(str::to_owned),
                fingerprint,
            },
        }
    }
}

/// Applies a change and waits for its answer; returns the new known state.
fn acknowledged_change(server: &Server, change: Change, known: &Known) -> Result<Known, String> {
    let raw = crate::util::raw_exchange(server.admin, change.request());
    let response = Response::parse(&raw).ok_or("no answer to an admin change")?;
    if !(200..300).contains(&response.status) {
        return Err(format!("{change:?} answered {}", response.status));
    }
    Ok(change.acknowledged(known, &response.json()))
}

/// Starts the server in `dir`, kills it at random moments during changes, and checks the
/// store and the restarted server after each kill.
pub fn crash_torture(settings: &CrashSettings) -> CrashReport {
    let mut rng = Rng::seeded();
    let mut report = CrashReport::default();
    let started = Instant::now();
    let mut server = Server::start();
    let mut known = Known { generation: 0, state: KeyState::None, key: None, fingerprint: None };
    // How long a change takes, so the kills can be spread over it and a little beyond.
    let mut spread = Duration::ZERO;
    for _ in 0..5 {
        let t = Instant::now();
        let change = Change::possible(known.state, &mut rng);
        known = acknowledged_change(&server, change, &known).unwrap();
        spread = spread.max(t.elapsed());
    }
    let spread_micros = (spread.as_micros() as u64 * 3 / 2).max(200);
    while report.kills < settings.kills && started.elapsed() < settings.max_time {
        for _ in 0..rng.below(3) {
            let change = Change::possible(known.state, &mut rng);
            match acknowledged_change(&server, change, &known) {
                Ok(next) => known = next,
                Err(e) => report.failures.push(e),
            }
        }
        let change = Change::possible(known.state, &mut rng);
        let store_file = server.state_dir().join("key.ron");
        let inode_before = inode(&store_file);
        let mut socket = TcpStream::connect(server.admin).unwrap();
        socket.write_all(change.request()).unwrap();
        if rng.below(3) == 0 {
            // Aimed: the instant the new store is renamed into place, before the folder's
            // fsync and the answer, the one window where a change is durable but unanswered.
            let until = Instant::now() + spread * 4;
            while inode(&store_file) == inode_before && Instant::now() < until {
                std::hint::spin_loop();
            }
            report.aimed += 1;
        } else {
            spin_for(Duration::from_micros(rng.below(spread_micros)));
        }
        let (dir, config) = server.stop(); // SIGKILL, then reap
        report.kills += 1;
        socket.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut raw = Vec::new();
        let _ = socket.read_to_end(&mut raw);
        let answered = Response::parse(&raw).filter(|r| (200..300).contains(&r.status));
        if let Some(response) = &answered {
            known = change.acknowledged(&known, &response.json());
            report.acknowledged += 1;
        }
        let state_dir = dir.path().join("state");
        let is_store_temp = |name: &str| name.starts_with(".key.ron.") && name.ends_with(".tmp");
        if std::fs::read_dir(&state_dir)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.file_name().to_str().is_some_and(is_store_temp))
        {
            report.temp_files_left += 1;
        }
        // A change that became durable without answering retires the key the test knows;
        // the restarted server must refuse it.
        let mut retired = None;
        match check_store_after_kill(&state_dir, &known, change, answered.is_some()) {
            Ok(Outcome::Old) => report.old_state += 1,
            Ok(Outcome::New(next)) => {
                report.new_state += 1;
                retired = known.key.clone().filter(|_| change != Change::Revoke);
                known = next;
            }
            Ok(Outcome::Acknowledged) => {}
            Err(e) => report.failures.push(format!("kill {}: {e}", report.kills)),
        }
        server = match Server::start_in(dir, config) {
            Ok(server) => server,
            Err(log) => {
                report.failures.push(format!("no restart after kill {}:\n{log}", report.kills));
                break;
            }
        };
        if let Err(e) = check_server_after_restart(&server, &known, retired.as_deref()) {
            report.failures.push(format!("kill {}: {e}", report.kills));
        }
    }
    report.elapsed = started.elapsed();
    report
}

fn inode(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| m.ino())
}

/// A busy wait: `thread::sleep` rounds short waits up, and the point is to land inside a
/// change that takes a millisecond or two.
fn spin_for(wait: Duration) {
    let until = Instant::now() + wait;
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

enum Outcome {
    Acknowledged,
    Old,
    New(Known),
}

/// The store parses, its lock is free, and it holds the acknowledged state or, for a change
/// that had not answered, exactly that change's result.
fn check_store_after_kill(
    state_dir: &Path,
    known: &Known,
    change: Change,
    answered: bool,
) -> Result<Outcome, String> {
    // The lock is checked without taking it: a lock this process held would be shared with
    // any child another test forks meanwhile, and the restart would find it still held.
    if let Some(holder) = keystore::lock_holder(state_dir) {
        return Err(format!("the store's lock is still held after the kill (pid {holder})"));
    }
    let record = keystore::peek(state_dir).map_err(|e| format!("store: {e}"))?;
    if record.generation == known.generation {
        matches_known(&record, known)?;
        return Ok(if answered { Outcome::Acknowledged } else { Outcome::Old });
    }
    if answered || record.generation != known.generation + 1 {
        return Err(format!(
            "store at generation {} after {change:?} (answered: {answered}), expected {}",
            record.generation, known.generation
        ));
    }
    // Durable but unanswered: the store must hold exactly the change's result.
    let stored = record.key.as_ref().ok_or("a change left no key")?;
    let fingerprint = Some(stored.fingerprint.as_str().to_owned());
    let next = match change {
        Change::Revoke => {
            if record.state() != KeyState::Revoked || fingerprint != known.fingerprint {
                return Err(format!("unanswered revoke left {:?}", record.state()));
            }
            Known { generation: record.generation, state: KeyState::Revoked, ..known.clone() }
        }
        Change::Generate | Change::Replace => {
            let old_hash = known.key.as_deref().map(|k| KeyHash::of(k.as_bytes()));
            if record.state() != KeyState::Active || Some(stored.hash) == old_hash {
                return Err(format!("unanswered {change:?} left {:?}", record.state()));
            }
            Known { generation: record.generation, state: KeyState::Active, key: None, fingerprint }
        }
    };
    Ok(Outcome::New(next))
}

fn matches_known(record: &KeyRecord, known: &Known) -> Result<(), String> {
    if record.state() != known.state {
        return Err(format!("store says {:?}, expected {:?}", record.state(), known.state));
    }
    let stored_fingerprint = record.key.as_ref().map(|k| k.fingerprint.as_str().to_owned());
    if stored_fingerprint != known.fingerprint {
        return Err(format!(
            "store holds {stored_fingerprint:?}, expected {:?}",
            known.fingerprint
        ));
    }
    if let (Some(key), Some(stored)) = (&known.key, &record.key)
        && stored.hash != KeyHash::of(key.as_bytes())
    {
        return Err("store holds another key with the same fingerprint".into());
    }
    Ok(())
}

/// The restarted server reports the store's generation, admits the known key exactly when it
/// is active, and refuses `retired`.
fn check_server_after_restart(
    server: &Server,
    known: &Known,
    retired: Option<&str>,
) -> Result<(), String> {
    let (status, body) = server.admin("GET", "/key");
    if status != 200 || body["generation"].as_u64() != Some(known.generation) {
        return Err(format!("after restart GET /key said {status} {body}"));
    }
    if let Some(old) = retired
        && server.get_with_key("/crash/probe", old).status != 401
    {
        return Err("the key retired by an unanswered but durable change was admitted".into());
    }
    let Some(key) = &known.key else { return Ok(()) };
    let answer = server.get_with_key("/crash/probe", key).status;
    let admitted = answer != 401;
    let should = known.state == KeyState::Active;
    if admitted != should {
        return Err(format!("key in state {:?} answered {answer} after restart", known.state));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Floods.

/// The first bytes of a ClientHello: a record header promising more than ever comes.
pub const HELLO_START: &[u8] = &[22, 3, 1, 2, 0, 1, 0, 1, 252, 3, 3];

/// A connection that sends as little as it can: a TLS handshake or a request head, a byte at
/// a time.
pub enum Slow {
    /// Handshake done; a request head is trickling in (the server's header deadline runs).
    Head(Box<TlsStream>),
    /// A ClientHello is trickling in (the server's handshake deadline runs).
    Hello(TcpStream),
}

impl Slow {
    pub fn head(server: &Server) -> Option<Self> {
        let mut stream = tls_stream(server.api, server.tls_config())?;
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock).ok()?;
        }
        stream.write_all(b"GET /slow HTTP/1.1\r\n").ok()?;
        Some(Self::Head(Box::new(stream)))
    }

    pub fn hello(server: &Server) -> Option<Self> {
        let mut socket = TcpStream::connect(server.api).ok()?;
        socket.write_all(HELLO_START).ok()?;
        Some(Self::Hello(socket))
    }

    /// Sends one more byte; false once the server has closed the connection.
    pub fn drip(&mut self) -> bool {
        match self {
            Self::Head(stream) => stream.write_all(b"a").and_then(|()| stream.flush()).is_ok(),
            Self::Hello(socket) => socket.write_all(&[0]).is_ok(),
        }
    }

    /// Whether the server still holds the connection open (no EOF, no reset).
    pub fn is_open(&self) -> bool {
        let socket = match self {
            Self::Head(stream) => &stream.sock,
            Self::Hello(socket) => socket,
        };
        let _ = socket.set_nonblocking(true);
        let mut probe = [0u8; 64];
        // Pending bytes (a TLS session ticket, say) or nothing yet: open. EOF or reset: closed.
        let open = match socket.peek(&mut probe) {
            Ok(n) => n > 0,
            Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
        };
        let _ = socket.set_nonblocking(false);
        open
    }
}

pub struct FloodSettings {
    /// Slow connections, half of each kind.
    pub slow: usize,
    /// How long they are held while legitimate clients are timed.
    pub hold: Duration,
}

#[derive(Debug, Default)]
pub struct FloodReport {
    pub slow_opened: usize,
    pub slow_open_at_end: usize,
    pub probes: usize,
    pub probe_failures: usize,
    pub probe_median: Duration,
    pub probe_worst: Duration,
    pub admin_worst: Duration,
}

impl std::fmt::Display for FloodReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "slowloris: {} slow connections opened, {} still open at the end; {} legitimate \
             requests on new TLS connections meanwhile ({} failed): median {:.1?}, worst {:.1?}; \
             admin port worst {:.1?}",
            self.slow_opened,
            self.slow_open_at_end,
            self.probes,
            self.probe_failures,
            self.probe_median,
            self.probe_worst,
            self.admin_worst
        )
    }
}

/// Holds `slow` connections open a byte a second while a legitimate client (with `key`) makes
/// a request on a fresh TLS connection every 100 ms, and the admin port is asked for /health.
pub fn slowloris(server: &Server, key: &str, settings: &FloodSettings) -> FloodReport {
    let mut slow: Vec<Slow> = (0..settings.slow)
        .filter_map(|i| if i % 2 == 0 { Slow::head(server) } else { Slow::hello(server) })
        .collect();
    let mut report = FloodReport { slow_opened: slow.len(), ..FloodReport::default() };
    let stop = Arc::new(AtomicBool::new(false));
    let dripper = {
        let stop = stop.clone();
        thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                for connection in &mut slow {
                    connection.drip();
                }
                for _ in 0..10 {
                    if !stop.load(Ordering::SeqCst) {
                        thread::sleep(Duration::from_millis(100));
                    }
                }
            }
            slow
        })
    };
    let mut times = Vec::new();
    let until = Instant::now() + settings.hold;
    while Instant::now() < until {
        let started = Instant::now();
        let status = server.get_with_key("/flood/probe", key).status;
        times.push(started.elapsed());
        if status != 404 {
            report.probe_failures += 1;
        }
        let started = Instant::now();
        if server.admin("GET", "/health").0 != 200 {
            report.probe_failures += 1;
        }
        report.admin_worst = report.admin_worst.max(started.elapsed());
        thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::SeqCst);
    let slow = dripper.join().unwrap();
    report.slow_open_at_end = slow.iter().filter(|c| c.is_open()).count();
    times.sort();
    report.probes = times.len();
    report.probe_median = times.get(times.len() / 2).copied().unwrap_or_default();
    report.probe_worst = times.last().copied().unwrap_or_default();
    report
}
