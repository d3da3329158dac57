//! `aims-api diagnose`: what `vault operator diagnose` is to Vault, for this appliance.
//!
//! One command an operator (or support) runs when something is off. It reads the configuration,
//! the state folder, the certificate and the system, and asks a running `serve` what it can, then
//! prints a tree of checks, each `ok`, `warning` or `failure` with a one-line reason and, when not
//! ok, what to do. It never changes anything: the key store is read without its lock, modes are
//! reported and not narrowed, the history store is opened read-only, and waiting snapshot files
//! are parsed in memory. Checks that need no server run
//! without one; those that talk to it fail with the reason when it is down.
//!
//! Exit status (mapped in `commands`): 0 when nothing failed, 1 otherwise; `--strict` counts
//! warnings as failures.

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde_json::{Value, json};

use crate::admin_client;
use crate::config::Config;
use crate::keystore::{self, KeyState, rfc3339};
use crate::snapshot::history;
use crate::snapshot::verify::{State, waiting_files};
use crate::tls::{self, Leaf};

/// A newest analysis older than this is stale: the factory's analyses are daily or weekly.
const STALE_ANALYSIS: Duration = Duration::from_secs(8 * 86_400);

/// Below this much free space an import of a default-sized snapshot (256 MiB) can fail.
const MIN_FREE_BYTES: u64 = 256 * 1024 * 1024;

/// Below this much free space, a warning: a few imports away from the failure above.
const LOW_FREE_BYTES: u64 = 1024 * 1024 * 1024;

/// File descriptors `serve` needs beyond one per API connection: listeners, admin workers,
/// the store, the log, snapshot files being imported (as the start-up check counts them).
const FD_OVERHEAD: u64 = 64;

/// For tests only: the free bytes below which the disk check fails, instead of 256 MiB, so the
/// failing state can be shown on any disk. Not documented for operators.
const TEST_MIN_FREE_ENV: &str = "AIMS_API_TEST_DIAGNOSE_MIN_FREE_BYTES";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    Ok,
    Warning,
    /// The check could not be made as this user (a file it may not read, a port that refuses
    /// it): said so, with what to do, instead of a verdict it cannot back.
    Unknown,
    Failure,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Warning => "warning",
            Self::Unknown => "unknown",
            Self::Failure => "failure",
        }
    }
}

/// One check, or a group of checks whose status is the worst of its children.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub reason: String,
    /// What to do, for a warning or a failure.
    pub fix: Option<String>,
    pub children: Vec<Check>,
}

impl Check {
    fn ok(name: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::new(name, Status::Ok, reason, None)
    }

    fn warning(name: impl Into<String>, reason: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::new(name, Status::Warning, reason, Some(fix.into()))
    }

    fn failure(name: impl Into<String>, reason: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::new(name, Status::Failure, reason, Some(fix.into()))
    }

    /// A check this user may not make: `path` cannot be read (or asked) as its uid.
    fn unknown(name: impl Into<String>, what: impl std::fmt::Display) -> Self {
        let reason = format!("cannot read {what} as uid {}: run as root", own_uid());
        Self::new(name, Status::Unknown, reason, Some(run_as_root().to_owned()))
    }

    fn new(
        name: impl Into<String>,
        status: Status,
        reason: impl Into<String>,
        fix: Option<String>,
    ) -> Self {
        Self { name: name.into(), status, reason: reason.into(), fix, children: Vec::new() }
    }

    fn group(name: impl Into<String>, reason: impl Into<String>, children: Vec<Check>) -> Self {
        let status = children.iter().map(|c| c.status).max().unwrap_or(Status::Ok);
        Self { name: name.into(), status, reason: reason.into(), fix: None, children }
    }

    fn count(&self, status: Status) -> usize {
        let own = usize::from(self.children.is_empty() && self.status == status);
        own + self.children.iter().map(|c| c.count(status)).sum::<usize>()
    }

    fn to_json(&self) -> Value {
        let mut value = json!({
            "name": self.name,
            "status": self.status.label(),
            "reason": self.reason,
        });
        if let Some(fix) = &self.fix {
            value["fix"] = json!(fix);
        }
        if !self.children.is_empty() {
            value["checks"] = Value::Array(self.children.iter().map(Check::to_json).collect());
        }
        value
    }
}

/// The whole diagnosis.
#[derive(Debug, Clone)]
pub struct Report {
    pub config: PathBuf,
    pub checks: Vec<Check>,
}

impl Report {
    /// Leaf checks with `status`.
    pub fn count(&self, status: Status) -> usize {
        self.checks.iter().map(|c| c.count(status)).sum()
    }

    /// Whether the diagnosis passes: no failure and no check left unmade (a diagnosis that
    /// could not look cannot vouch), and with `strict` no warning either.
    pub fn passed(&self, strict: bool) -> bool {
        self.count(Status::Failure) == 0
            && self.count(Status::Unknown) == 0
            && !(strict && self.count(Status::Warning) > 0)
    }

    pub fn to_json(&self, strict: bool) -> Value {
        json!({
            "config": self.config.display().to_string(),
            "passed": self.passed(strict),
            "strict": strict,
            "counts": {
                "ok": self.count(Status::Ok),
                "warning": self.count(Status::Warning),
                "unknown": self.count(Status::Unknown),
                "failure": self.count(Status::Failure),
            },
            "checks": self.checks.iter().map(Check::to_json).collect::<Vec<_>>(),
        })
    }

    /// The tree for people: one line per check, a `fix:` line under each that is not ok.
    pub fn render(&self) -> String {
        let mut out = format!("aims-api diagnose: {}\n", self.config.display());
        for (i, check) in self.checks.iter().enumerate() {
            render_check(&mut out, check, "", i + 1 == self.checks.len());
        }
        let _ = write!(
            out,
            "\n{} ok, {} warning(s), {} failure(s)",
            self.count(Status::Ok),
            self.count(Status::Warning),
            self.count(Status::Failure)
        );
        match self.count(Status::Unknown) {
            0 => out.push('\n'),
            n => {
                let _ = writeln!(out, ", {n} unknown (run as root to check them)");
            }
        }
        out
    }
}

fn render_check(out: &mut String, check: &Check, indent: &str, last: bool) {
    let (branch, next) = if last { ("└─ ", "   ") } else { ("├─ ", "│  ") };
    let _ = writeln!(
        out,
        "{indent}{branch}{:<8} {}: {}",
        check.status.label(),
        check.name,
        check.reason
    );
    let inner = format!("{indent}{next}");
    if let Some(fix) = &check.fix {
        let bar = if check.children.is_empty() { " " } else { "│" };
        let _ = writeln!(out, "{inner}{bar}{:<7} fix: {fix}", "");
    }
    for (i, child) in check.children.iter().enumerate() {
        render_check(out, child, &inner, i + 1 == check.children.len());
    }
}

/// Runs every check for the configuration at `config_path`.
pub fn run(config_path: &Path) -> Report {
    let config = match Config::load(config_path) {
        Ok(config) => config,
        Err(e) => {
            let check = Check::failure(
                "configuration",
                e.to_string(),
                "fix the file (aims-api check-config says the same), or pass --config PATH",
            );
            return Report { config: config_path.to_owned(), checks: vec![check] };
        }
    };
    let now = SystemTime::now();
    let lock = lock_state(&config.state_dir);
    let server = lock.as_ref().ok().copied().flatten();
    let checks = vec![
        Check::ok("configuration", "parses"),
        state_folder(&config, server, now),
        server_checks(&config, lock),
        certificate(&config, server, now),
        system(&config, server, now),
    ];
    Report { config: config_path.to_owned(), checks }
}

// The state folder.

fn state_folder(config: &Config, server: Option<u32>, now: SystemTime) -> Check {
    let dir = &config.state_dir;
    let children =
        vec![ownership(dir, server), key_store(dir, now), snapshots(config, now), disk_space(dir)];
    Check::group("state folder", dir.display().to_string(), children)
}

/// The folder is 0700, the files holding hashes or keys 0600, and everything belongs to the
/// owner of the folder, who must be the uid `serve` runs as.
fn ownership(dir: &Path, server: Option<u32>) -> Check {
    let name = "ownership and modes";
    let meta = match fs::metadata(dir) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Check::failure(
                name,
                "the state folder does not exist",
                "start the service once (systemctl start aims-api): serve creates it",
            );
        }
        Err(e) if denied(&e) => return Check::unknown(name, dir.display()),
        Err(e) => return Check::failure(name, format!("cannot read it: {e}"), run_as_root()),
    };
    let owner = meta.uid();
    let mut problems = Vec::new();
    if meta.mode() & 0o077 != 0 {
        problems.push(format!("the folder has mode {:o}, not 700", meta.mode() & 0o777));
    }
    if let Some(pid) = server
        && let Some(uid) = process_uid(pid)
        && uid != owner
    {
        problems.push(format!("it belongs to uid {owner} but serve (pid {pid}) runs as {uid}"));
    }
    let mut private = vec![dir.join("key.ron"), keystore::lock_path(dir), dir.join(history::FILE)];
    private.push(tls::self_signed_paths(dir).1);
    let mut entries = Vec::new();
    for sub in ["", "tls", "snapshots"] {
        match fs::read_dir(dir.join(sub)) {
            Ok(read) => entries.extend(read.flatten().map(|e| e.path())),
            // A folder this user may not list: its entries were not checked, so no verdict.
            Err(e) if denied(&e) => return Check::unknown(name, dir.join(sub).display()),
            Err(_) => {}
        }
    }
    for path in &entries {
        let Ok(meta) = fs::symlink_metadata(path) else { continue };
        let shown = path.strip_prefix(dir).unwrap_or(path).display();
        if meta.uid() != owner {
            problems.push(format!("{shown} belongs to uid {}, not {owner}", meta.uid()));
        }
        let mode = meta.permissions().mode() & 0o777;
        let wide = if meta.is_dir() || !private.contains(path) {
            mode & 0o022 != 0
        } else {
            mode & 0o077 != 0
        };
        if wide {
            problems.push(format!("{shown} has mode {mode:o}"));
        }
    }
    match problems.first() {
        None => Check::ok(
            name,
            format!("owned by {}, mode 700, {} entries checked", user_name(owner), entries.len()),
        ),
        Some(first) => Check::failure(
            name,
            format!("{first}{}", more(problems.len())),
            format!(
                "chown -R <service user> {0} && chmod 700 {0}; key.ron, key.lock and \
                 tls/key.pem must be 600",
                dir.display()
            ),
        ),
    }
}

/// `name (uid N)` from /etc/passwd, or `uid N` for a uid it does not list.
fn user_name(uid: u32) -> String {
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    let name = passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        (fields.nth(1)?.parse::<u32>().ok()? == uid).then(|| name.to_owned())
    });
    match name {
        Some(name) => format!("{name} (uid {uid})"),
        None => format!("uid {uid}"),
    }
}

fn more(count: usize) -> String {
    if count > 1 { format!(" (and {} more)", count - 1) } else { String::new() }
}

fn key_store(dir: &Path, now: SystemTime) -> Check {
    let name = "key store";
    let file = dir.join("key.ron");
    if let Err(e) = fs::File::open(&file)
        && denied(&e)
    {
        return Check::unknown(name, file.display());
    }
    let record = match keystore::peek(dir) {
        Ok(record) => record,
        Err(e @ keystore::StoreError::Corrupt { .. }) => {
            return Check::failure(
                name,
                e.to_string(),
                "restore key.ron from a backup, or move it away and generate a new key",
            );
        }
        Err(e) => return Check::failure(name, e.to_string(), run_as_root()),
    };
    let Some(key) = &record.key else {
        return Check::warning(
            name,
            "no key yet: the API refuses every request",
            "aims-api key generate",
        );
    };
    let age = now.duration_since(key.created_at).unwrap_or_default().as_secs() / 86_400;
    let described = format!(
        "{} key {}, made {} ({age} days ago), generation {}; keys do not expire",
        record.state().as_str(),
        key.fingerprint,
        rfc3339(key.created_at),
        record.generation
    );
    match record.state() {
        KeyState::Active => Check::ok(name, described),
        _ => Check::warning(
            name,
            format!("{described}; the API refuses every request"),
            "aims-api key generate",
        ),
    }
}

fn snapshots(config: &Config, now: SystemTime) -> Check {
    let name = "snapshots";
    let (pending, refused) = inbox(&config.state_dir);
    let store = config.state_dir.join(history::FILE);
    let dates = match fs::metadata(&store).and_then(|_| fs::File::open(&store)) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) if denied(&e) => return Check::unknown(name, store.display()),
        Err(e) => {
            return Check::failure(
                name,
                format!("cannot read {}: {e}", store.display()),
                run_as_root(),
            );
        }
        Ok(_) => match history::ReadOnly::open(&store).and_then(|db| db.read(|r| r.dates())) {
            Ok(dates) => dates,
            Err(e @ history::HistoryError::NeedsRepair(_)) => {
                return Check::warning(name, e.to_string(), "systemctl start aims-api");
            }
            Err(e) => {
                return Check::failure(name, e.to_string(), "aims-api snapshot verify");
            }
        },
    };
    let waiting = match pending {
        0 => String::new(),
        n => format!(", {n} file(s) in snapshots/ taken over at the next start or reload"),
    };
    if let Some(first) = refused.first() {
        return Check::failure(
            name,
            format!("{} stored, refused {first}{}{waiting}", dates.len(), more(refused.len())),
            "import a valid file for that date, or aims-api snapshot delete DATE",
        );
    }
    let Some((date, header)) = dates.last() else {
        return Check::warning(
            name,
            format!("none imported: the API answers 404{waiting}"),
            "aims-api snapshot import FILE --date YYYY-MM-DD",
        );
    };
    let analyzed = header.analyzed_on();
    let age = now.duration_since(analyzed).unwrap_or_default();
    let described = format!(
        "{} stored; the newest, {date}, was analysed {} ({} days ago){waiting}",
        dates.len(),
        rfc3339(analyzed),
        age.as_secs() / 86_400
    );
    if age > STALE_ANALYSIS {
        Check::warning(
            name,
            format!("{described}: stale"),
            "import the latest analysis: aims-api snapshot import FILE --date YYYY-MM-DD",
        )
    } else {
        Check::ok(name, described)
    }
}

/// The snapshot files waiting in the inbox: how many would load, and each one that would not.
fn inbox(state_dir: &Path) -> (usize, Vec<String>) {
    let Ok((_, files)) = waiting_files(state_dir) else { return (0, Vec::new()) };
    let pending = files.iter().filter(|f| matches!(f.state, State::Ok { .. })).count();
    let refused = files
        .iter()
        .filter(|f| matches!(f.state, State::Invalid(_) | State::Unreadable(_)))
        .map(|f| format!("{}: {}", f.name, f.reason()))
        .collect();
    (pending, refused)
}

fn disk_space(dir: &Path) -> Check {
    let name = "disk space";
    // A folder not made yet will be made on the file system of its nearest existing ancestor.
    let existing = dir.ancestors().find(|d| d.exists()).unwrap_or(dir);
    let stat = match rustix::fs::statvfs(existing) {
        Ok(stat) => stat,
        Err(e) => {
            return Check::failure(
                name,
                format!("cannot stat the file system: {e}"),
                run_as_root(),
            );
        }
    };
    let free = stat.f_bavail.saturating_mul(stat.f_frsize);
    let total = stat.f_blocks.saturating_mul(stat.f_frsize).max(1);
    let min_free = std::env::var(TEST_MIN_FREE_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(MIN_FREE_BYTES);
    let described = format!(
        "{} MiB free of {} MiB ({}%)",
        free / 1_048_576,
        total / 1_048_576,
        free.saturating_mul(100) / total
    );
    let fix = "free space on that file system: snapshot imports and key changes write there";
    if free < min_free {
        Check::failure(name, format!("{described}: too little for an import"), fix)
    } else if free < LOW_FREE_BYTES.max(min_free) {
        Check::warning(name, format!("{described}: running low"), fix)
    } else {
        Check::ok(name, described)
    }
}

// The running server.

fn server_checks(config: &Config, lock: Result<Option<u32>, PathBuf>) -> Check {
    let lock = match lock {
        Err(path) => Check::unknown("lock", path.display()),
        Ok(Some(pid)) => Check::ok("lock", format!("held by aims-api serve, pid {pid}")),
        Ok(None) => Check::failure(
            "lock",
            format!("no serve holds {}", keystore::lock_path(&config.state_dir).display()),
            "systemctl start aims-api (journalctl -u aims-api says why it stopped)",
        ),
    };
    let addr = config.admin.listen;
    let mut uid_lookup = None;
    let health = match admin_client::call(
        addr,
        "GET",
        "/health",
        &mut io::empty(),
        0,
        Duration::from_secs(5),
    ) {
        Ok(answer) if answer.status == 200 => {
            uid_lookup = Some(admin_uid_lookup(&answer.body));
            Check::ok("admin port", format!("http://{addr}/health answers 200"))
        }
        // It answers, so it runs; whether it is healthy it tells only root and allowed uids.
        Ok(answer) if answer.status == 403 => Check::new(
            "admin port",
            Status::Unknown,
            format!("http://{addr}/health refuses this user, uid {} (403)", own_uid()),
            Some(run_as_root().to_owned()),
        ),
        Ok(answer) => Check::failure(
            "admin port",
            format!("http://{addr}/health answers {}", answer.status),
            "journalctl -u aims-api says why",
        ),
        Err(e) => Check::failure(
            "admin port",
            e.to_string(),
            "systemctl start aims-api, and check admin.listen in the configuration",
        ),
    };
    Check::group(
        "server",
        "a running serve",
        [lock, health].into_iter().chain(uid_lookup).collect(),
    )
}

/// How the server finds an admin client's uid, as its `/health` says: one netlink sock_diag
/// query, or (where netlink is refused) the whole of `/proc/net/tcp`, whose cost grows with
/// every socket on the host.
fn admin_uid_lookup(health: &[u8]) -> Check {
    let name = "admin client uids";
    let body: serde_json::Value = serde_json::from_slice(health).unwrap_or_default();
    match body.get("uid_lookup").and_then(|v| v.as_str()) {
        Some("sock_diag") => Check::ok(name, "found by one netlink sock_diag query per connection"),
        Some("proc_net") => Check::warning(
            name,
            "found by reading /proc/net/tcp whole per connection, because netlink is refused to \
             the server: every socket on the host slows the admin port",
            "allow AF_NETLINK (systemd: RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 \
             AF_NETLINK, as the shipped unit has)",
        ),
        _ => Check::warning(
            name,
            "the server does not say how (an older version)",
            "upgrade aims-api",
        ),
    }
}

fn process_uid(pid: u32) -> Option<u32> {
    fs::metadata(format!("/proc/{pid}")).ok().map(|m| m.uid())
}

// The certificate.

fn certificate(config: &Config, server: Option<u32>, now: SystemTime) -> Check {
    let (cert_path, key_path, self_signed) = match &config.api.tls {
        Some(files) => (files.cert.clone(), files.key.clone(), false),
        None => {
            let (cert, key) = tls::self_signed_paths(&config.state_dir);
            (cert, key, true)
        }
    };
    let title = format!(
        "{}{}",
        cert_path.display(),
        if self_signed { " (self-signed)" } else { " (api.tls_cert)" }
    );
    if let Err(e) = fs::File::open(&cert_path)
        && denied(&e)
    {
        let check = Check::unknown("loads", cert_path.display());
        return Check::group("certificate", title, vec![check]);
    }
    let chain = match tls::read_pem_chain(&cert_path) {
        Ok(chain) => chain,
        Err(e) => {
            let fix = if self_signed {
                "start serve once: it makes the self-signed certificate".to_owned()
            } else {
                "point api.tls_cert at a readable PEM certificate".to_owned()
            };
            return Check::group(
                "certificate",
                title,
                vec![Check::failure("loads", e.to_string(), fix)],
            );
        }
    };
    let leaf = match Leaf::parse(chain[0].as_ref()) {
        Ok(leaf) => leaf,
        Err(e) => {
            let check = Check::failure("loads", e, "replace the certificate with a valid one");
            return Check::group("certificate", title, vec![check]);
        }
    };
    let children = vec![
        key_matches(chain.clone(), &key_path),
        names(config, &leaf, self_signed),
        validity(&leaf, self_signed, now),
        presented(config, server, &chain[0]),
    ];
    Check::group("certificate", title, children)
}

fn key_matches(chain: Vec<CertificateDer<'static>>, key_path: &Path) -> Check {
    let name = "key";
    if let Err(e) = fs::File::open(key_path)
        && denied(&e)
    {
        return Check::unknown(name, key_path.display());
    }
    let key = match PrivateKeyDer::from_pem_file(key_path) {
        Ok(key) => key,
        Err(e) => {
            return Check::failure(
                name,
                format!("cannot read {}: {e}", key_path.display()),
                run_as_root(),
            );
        }
    };
    let provider = rustls::crypto::ring::default_provider();
    match rustls::sign::CertifiedKey::from_der(chain, key, &provider) {
        Ok(_) => {
            Check::ok(name, format!("{} loads and matches the certificate", key_path.display()))
        }
        Err(e) => Check::failure(
            name,
            format!("{} cannot be used with the certificate: {e}", key_path.display()),
            "install the key the certificate was issued for",
        ),
    }
}

/// The names clients use: the self-signed certificate's own, or for an operator's the listen
/// address if it is a specific one, else this host's name.
fn names(config: &Config, leaf: &Leaf, self_signed: bool) -> Check {
    let name = "names";
    let wanted: Vec<String> = if self_signed {
        tls::SELF_SIGNED_NAMES.iter().map(|n| (*n).to_owned()).collect()
    } else if !config.api.listen.ip().is_unspecified() {
        vec![config.api.listen.ip().to_string()]
    } else {
        fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| vec![h.trim().to_owned()])
            .unwrap_or_default()
    };
    let missing: Vec<&String> = wanted.iter().filter(|n| !leaf.covers(n)).collect();
    if missing.is_empty() {
        Check::ok(name, format!("covers {}", wanted.join(", ")))
    } else {
        Check::warning(
            name,
            format!(
                "does not cover {} (it names {})",
                missing.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(", "),
                leaf.names.join(", ")
            ),
            "clients that connect by that name refuse it: issue one for the name they use",
        )
    }
}

fn validity(leaf: &Leaf, self_signed: bool, now: SystemTime) -> Check {
    let name = "validity";
    let range =
        format!("valid from {} until {}", rfc3339(leaf.not_before), rfc3339(leaf.not_after));
    let renew = if self_signed {
        "restart serve: it renews a self-signed certificate 30 days before it expires"
    } else {
        "install a new certificate, then systemctl reload aims-api"
    };
    if now < leaf.not_before {
        Check::failure(
            name,
            format!("not yet valid: {range}"),
            "check the clock, or the certificate's dates",
        )
    } else if now >= leaf.not_after {
        Check::failure(name, format!("expired: {range}"), renew)
    } else if leaf.remaining(now) < tls::RENEW_BEFORE {
        let days = leaf.remaining(now).as_secs() / 86_400;
        Check::warning(name, format!("expires in {days} days: {range}"), renew)
    } else {
        let days = leaf.remaining(now).as_secs() / 86_400;
        Check::ok(name, format!("{range} ({days} days left)"))
    }
}

/// The API port completes a handshake and presents the certificate on disk: a certificate
/// replaced without a reload shows here.
fn presented(config: &Config, server: Option<u32>, on_disk: &CertificateDer<'_>) -> Check {
    let name = "api port";
    // Under socket activation (aims-api.socket, port 443) api.listen is not what serve listens
    // on: ask the kernel which port the running serve really holds.
    let found = server.map(|pid| (pid, listening_api_port(pid, config.admin.listen)));
    let listen = match found {
        Some((_, Ok(Some(addr)))) => addr,
        _ => config.api.listen,
    };
    let addr = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), listen.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), listen.port())
        }
        _ => listen,
    };
    match handshake(addr) {
        // The port serve holds could not be looked up as this user (a serve that may not dump
        // core hides its descriptors from all but root), and the configured one did not answer:
        // the certificate served elsewhere is unknown, not absent.
        Err(_) if matches!(found, Some((_, Err(())))) => {
            Check::unknown(name, format_args!("/proc/{}/fd", server.unwrap_or_default()))
        }
        Err(e) => Check::failure(
            name,
            format!("no TLS handshake with {addr}: {e}"),
            "systemctl start aims-api, and check api.listen in the configuration",
        ),
        Ok(served) if served.as_ref() == on_disk.as_ref() => Check::ok(
            name,
            format!(
                "{addr} presents the certificate on disk (sha256 {})",
                tls::fingerprint(on_disk)
            ),
        ),
        Ok(served) => Check::failure(
            name,
            format!(
                "{addr} presents sha256 {}, not the file's {}",
                tls::fingerprint(&served),
                tls::fingerprint(on_disk)
            ),
            "the certificate changed without a reload: systemctl reload aims-api",
        ),
    }
}

/// The TCP port `pid` listens on other than the admin port, from its descriptors and the
/// kernel's socket tables; `Err` when this user may not read its descriptors.
fn listening_api_port(pid: u32, admin: SocketAddr) -> Result<Option<SocketAddr>, ()> {
    let Some(process) = i32::try_from(pid).ok().and_then(|p| procfs::process::Process::new(p).ok())
    else {
        return Ok(None);
    };
    let fds = match process.fd() {
        Ok(fds) => fds,
        Err(procfs::ProcError::PermissionDenied(_)) => return Err(()),
        Err(_) => return Ok(None),
    };
    let inodes: Vec<u64> = fds
        .flatten()
        .filter_map(|fd| match fd.target {
            procfs::process::FDTarget::Socket(inode) => Some(inode),
            _ => None,
        })
        .collect();
    let mut sockets = procfs::net::tcp().unwrap_or_default();
    sockets.extend(procfs::net::tcp6().unwrap_or_default());
    Ok(sockets
        .into_iter()
        .filter(|s| s.state == procfs::net::TcpState::Listen && inodes.contains(&s.inode))
        .map(|s| s.local_address)
        .find(|addr| *addr != admin))
}

fn handshake(addr: SocketAddr) -> Result<CertificateDer<'static>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(AnyCertificate(provider.signature_verification_algorithms));
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    let name = ServerName::IpAddress(addr.ip().into());
    let mut conn =
        rustls::ClientConnection::new(Arc::new(config), name).map_err(|e| e.to_string())?;
    let mut socket =
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).map_err(|e| e.to_string())?;
    socket.set_read_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    socket.set_write_timeout(Some(Duration::from_secs(5))).map_err(|e| e.to_string())?;
    while conn.is_handshaking() {
        conn.complete_io(&mut socket).map_err(|e| e.to_string())?;
    }
    let served = conn.peer_certificates().and_then(|c| c.first()).cloned();
    conn.send_close_notify();
    let _ = conn.complete_io(&mut socket);
    served.map(CertificateDer::into_owned).ok_or_else(|| "no certificate presented".to_owned())
}

/// Accepts whatever certificate the port presents (it is compared with the file afterwards,
/// byte for byte), while still checking the handshake's signatures.
#[derive(Debug)]
struct AnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

// The system.

fn system(config: &Config, server: Option<u32>, now: SystemTime) -> Check {
    let children = vec![file_limit(config, server), clock(config, now)];
    Check::group("system", "limits and clock", children)
}

/// The running server's open-file limit (from `/proc/PID/limits`), or without one this
/// process's, against `api.max_connections` plus overhead.
fn file_limit(config: &Config, server: Option<u32>) -> Check {
    let name = "open-file limit";
    let needed = config.api.max_connections as u64 + config.admin.workers as u64 + FD_OVERHEAD;
    let own = crate::hardening::open_file_limit();
    let (limit, whose) = match server.map(|pid| (pid, served_limit(pid))) {
        Some((pid, Some(limit))) => (limit, format!("serve (pid {pid})")),
        Some((pid, None)) => {
            (own, format!("this shell (/proc/{pid}/limits of serve cannot be read)"))
        }
        None => (own, "this shell (no serve runs; the service's own is LimitNOFILE=)".to_owned()),
    };
    match limit {
        None => Check::ok(name, format!("unlimited for {whose}")),
        Some(limit) if limit >= needed => Check::ok(
            name,
            format!("{limit} for {whose}, at least the {needed} api.max_connections needs"),
        ),
        Some(limit) => Check::failure(
            name,
            format!("{limit} for {whose}, below the {needed} api.max_connections needs"),
            "raise LimitNOFILE= in the unit (or ulimit -n), or lower api.max_connections",
        ),
    }
}

fn served_limit(pid: u32) -> Option<Option<u64>> {
    let process = procfs::process::Process::new(i32::try_from(pid).ok()?).ok()?;
    let limits = process.limits().ok()?;
    Some(match limits.max_open_files.soft_limit {
        procfs::process::LimitValue::Value(v) => Some(v),
        procfs::process::LimitValue::Unlimited => None,
    })
}

/// The clock must not be behind what the state folder already recorded (a clock that jumped
/// back makes fresh certificates "not yet valid" and key ages negative), and should be
/// synchronised.
fn clock(config: &Config, now: SystemTime) -> Check {
    let name = "clock";
    let newest = newest_mtime(&config.state_dir);
    if let Some((path, written)) = &newest
        && *written > now + Duration::from_secs(60)
    {
        return Check::failure(
            name,
            format!(
                "reads {}, before {} was written ({})",
                rfc3339(now),
                path.display(),
                rfc3339(*written)
            ),
            "set the clock right (timedatectl set-ntp true)",
        );
    }
    match synchronised() {
        Some(false) => Check::warning(
            name,
            format!("reads {}, not synchronised", rfc3339(now)),
            "timedatectl set-ntp true: certificates and key ages depend on the clock",
        ),
        Some(true) => Check::ok(name, format!("reads {}, synchronised", rfc3339(now))),
        None => Check::ok(
            name,
            format!(
                "reads {}, not behind the state folder (synchronisation unknown)",
                rfc3339(now)
            ),
        ),
    }
}

fn newest_mtime(dir: &Path) -> Option<(PathBuf, SystemTime)> {
    let mut newest: Option<(PathBuf, SystemTime)> = None;
    for sub in ["", "tls", "snapshots"] {
        let Ok(read) = fs::read_dir(dir.join(sub)) else { continue };
        for entry in read.flatten() {
            let Ok(modified) = entry.metadata().and_then(|m| m.modified()) else { continue };
            if newest.as_ref().is_none_or(|(_, t)| modified > *t) {
                newest = Some((entry.path(), modified));
            }
        }
    }
    newest
}

/// Whether systemd says the clock is synchronised: `None` when it cannot tell.
fn synchronised() -> Option<bool> {
    if Path::new("/run/systemd/timesync/synchronized").exists() {
        return Some(true);
    }
    let out = std::process::Command::new("timedatectl")
        .args(["show", "--property=NTPSynchronized", "--value"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    match String::from_utf8_lossy(&out.stdout).trim() {
        "yes" => Some(true),
        "no" => Some(false),
        _ => None,
    }
}

/// Who holds the state folder's lock: a pid, nobody, or `Err(lock file)` when this user may
/// not look (the folder is the service's alone), which is not the same as nobody.
fn lock_state(state_dir: &Path) -> Result<Option<u32>, PathBuf> {
    let path = keystore::lock_path(state_dir);
    match fs::metadata(&path) {
        Err(e) if denied(&e) => Err(path),
        Err(_) => Ok(None),
        Ok(_) => Ok(keystore::lock_holder(state_dir)),
    }
}

/// Whether `e` says this user may not look: the answer is then unknown, not no.
fn denied(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::PermissionDenied
}

fn own_uid() -> u32 {
    rustix::process::getuid().as_raw()
}

fn run_as_root() -> &'static str {
    "run diagnose as root (sudo aims-api diagnose): the state folder is the service's alone"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf_check(status: Status) -> Check {
        Check::new("x", status, "why", (status != Status::Ok).then(|| "do".to_owned()))
    }

    #[test]
    fn a_group_is_as_bad_as_its_worst_child_and_counts_leaves_only() {
        let group = Check::group(
            "g",
            "r",
            vec![leaf_check(Status::Ok), leaf_check(Status::Warning), leaf_check(Status::Ok)],
        );
        assert_eq!(group.status, Status::Warning);
        let report = Report { config: "c.ron".into(), checks: vec![group] };
        assert_eq!(report.count(Status::Ok), 2);
        assert_eq!(report.count(Status::Warning), 1);
        assert!(report.passed(false));
        assert!(!report.passed(true), "--strict fails on a warning");
        let text = report.render();
        assert!(text.contains("└─ warning  g: r\n   ├─ ok       x: why\n"), "{text}");
        assert!(text.contains("   ├─ warning  x: why\n   │           fix: do\n"), "{text}");
        assert_eq!(report.to_json(true)["passed"], json!(false));
    }
}
