//! `aims-api snapshot pull`: copy the upstream AI Mentor Studio V1 API into a dated snapshot.
//!
//! The upstream is the hosted service (or any server of the same API, such as a second
//! aims-api); its key stays with the operations team in a private file, and every internal
//! consumer gets the appliance's key instead. A pull reads the upstream settings and key
//! (`settings`, [`secret`]), copies one analysis consistently (`assemble`, over `fetch`),
//! validates the document with the same checks as an import ([`crate::snapshot::validate`]),
//! and imports it through the admin port with the same client as `snapshot import`, so that
//! `serve` stays the only writer of the snapshot folder. If the snapshot served for that date
//! already has the same bytes (its SHA-256, which `GET /snapshots` reports), nothing is sent:
//! "unchanged". A pull that fails at any step changes nothing that is served.

mod assemble;
mod fetch;
mod pin;
mod progress;
pub mod secret;

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub use crate::config::Upstream;

use crate::admin_client::{self, ClientError};
use crate::config::Config;
use crate::snapshot::{self, Date, Invalid};

/// The V1 methods a pull reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    LastAnalysisDate,
    Level,
    Category,
    Team,
    Application,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Self::LastAnalysisDate => "TechnicalDebt_LastAnalysisDate",
            Self::Level => "TechnicalDebt_Level",
            Self::Category => "TechnicalDebt_Category",
            Self::Team => "TechnicalDebt_Team",
            Self::Application => "TechnicalDebt_Application",
        }
    }
}

/// Why a pull did not happen. Nothing served has changed in any of these cases.
#[derive(Debug)]
pub enum PullError {
    // The operator's configuration.
    NoUpstream { config: PathBuf },
    KeyFile(secret::KeyFileError),
    CaFile { path: PathBuf, reason: String, source: Option<io::Error> },
    Setup(String),
    // The upstream said no, in a way trying again cannot change.
    Refused { method: Method, status: u16, detail: String },
    Tls { method: Method, host: String, source: rustls::Error },
    // The upstream could not be reached or kept failing.
    GaveUp { method: Method, url: String, attempts: u32, last: String },
    Deadline { timeout: Duration, doing: String },
    // What the upstream sent.
    TooLarge { method: Method, limit: u64 },
    Malformed { method: Method, offset: Option<u64>, path: String, reason: String },
    Unstable { rounds: u32, last: String },
    Invalid(Invalid),
    TooBig { bytes: u64, max_bytes: u64 },
    // The appliance's own admin port.
    Admin(ClientError),
    AdminRefused { status: u16, code: String, message: String },
}

impl fmt::Display for PullError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoUpstream { config } => write!(
                f,
                "{} has no upstream section: add upstream: Some((url: \"https://…/rest/v1\", \
                 api_key_file: \"…\")) (see the README, \"Pull from an upstream\")",
                config.display()
            ),
            Self::KeyFile(e) => e.fmt(f),
            Self::CaFile { path, reason, .. } => {
                write!(f, "upstream.ca_file {}: {reason}", path.display())
            }
            Self::Setup(reason) => f.write_str(reason),
            Self::Refused { method, status: 401, detail } => write!(
                f,
                "the upstream refused the key or the activation code (401 on {}: {detail}): \
                 check the key in upstream.api_key_file and upstream.activation_code",
                method.name()
            ),
            Self::Refused { method, status: 403, detail } => write!(
                f,
                "the upstream says the infrastructure is inactive or not licensed for the AI \
                 Mentor Studio API (403 on {}: {detail}): check the infrastructure's licence",
                method.name()
            ),
            Self::Refused { method, status: 404, detail } => write!(
                f,
                "the upstream has no data for the analysis being copied (404 on {}: {detail}); \
                 try again later",
                method.name()
            ),
            Self::Refused { method, status, detail } => {
                write!(f, "the upstream answered {status} to {} ({detail})", method.name())
            }
            Self::Tls { method, host, source } if pin::is_ca_used_as_end_entity(source) => write!(
                f,
                "TLS with the upstream {host} failed on {} ({source}): the upstream presents a CA \
                 certificate (basicConstraints CA:TRUE) as its own, as a self-signed certificate \
                 made with `openssl req -x509` does, and no chain can make a CA certificate a \
                 server's, whatever upstream.ca_file holds. Pin its public key instead: \
                 upstream.pin_sha256: Some(\"sha256//…\") with ca_file: None, the value from \
                 `openssl x509 -in cert.pem -pubkey -noout | openssl pkey -pubin -outform der | \
                 openssl dgst -sha256 -binary | base64` run on the upstream's certificate (or \
                 give it a certificate with CA:FALSE)",
                method.name()
            ),
            Self::Tls { method, host, source } if pin::mismatch(source).is_some() => write!(
                f,
                "TLS with the upstream {host} failed on {}: {}: the upstream's key changed, or \
                 this is not the upstream; if its key was replaced, check the new one on the \
                 upstream host and set upstream.pin_sha256 to it",
                method.name(),
                pin::mismatch(source).map(ToString::to_string).unwrap_or_default(),
            ),
            Self::Tls { method, host, source } => write!(
                f,
                "TLS with the upstream {host} failed on {} ({source}): if its certificate is \
                 not from a public CA, give its CA in upstream.ca_file (or pin its public key \
                 with upstream.pin_sha256); check that upstream.url names the host the \
                 certificate is for",
                method.name()
            ),
            Self::GaveUp { method, url, attempts, last } => write!(
                f,
                "the upstream at {url} failed {attempts} tries of {} (last: {last}); nothing \
                 changed: try again later, or raise upstream.max_attempts",
                method.name()
            ),
            Self::Deadline { timeout, doing } => write!(
                f,
                "the pull did not finish within upstream.pull_timeout_secs ({} s), {doing}; \
                 nothing changed",
                timeout.as_secs()
            ),
            Self::TooLarge { method, limit } => write!(
                f,
                "an answer of the upstream to {} is larger than {limit} bytes; refused, read no \
                 further",
                method.name()
            ),
            Self::Malformed { method, offset, path, reason } => {
                write!(f, "the upstream's answer to {}", method.name())?;
                if let Some(offset) = offset {
                    write!(f, " at Offset={offset}")?;
                }
                write!(f, " is not the documented JSON: {path}: {reason}")
            }
            Self::Unstable { rounds, last } => write!(
                f,
                "{rounds} copies of the upstream in a row were not consistent (last: {last}); \
                 nothing changed: try again later"
            ),
            Self::Invalid(invalid) => write!(
                f,
                "the upstream's data does not pass the snapshot checks, nothing changed: \
                 {invalid}"
            ),
            Self::TooBig { bytes, max_bytes } => write!(
                f,
                "the snapshot reached {bytes} bytes, more than admin.max_body_bytes \
                 ({max_bytes}) lets the admin port take: raise admin.max_body_bytes"
            ),
            Self::Admin(e) => e.fmt(f),
            Self::AdminRefused { status, code, message } => {
                write!(f, "the admin port refused ({status} {code}): {message}")
            }
        }
    }
}

impl std::error::Error for PullError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::KeyFile(e) => Some(e),
            Self::CaFile { source, .. } => source.as_ref().map(|e| e as _),
            Self::Tls { source, .. } => Some(source),
            Self::Invalid(e) => Some(e),
            Self::Admin(e) => Some(e),
            Self::NoUpstream { .. }
            | Self::Setup(_)
            | Self::Refused { .. }
            | Self::GaveUp { .. }
            | Self::Deadline { .. }
            | Self::TooLarge { .. }
            | Self::Malformed { .. }
            | Self::Unstable { .. }
            | Self::TooBig { .. }
            | Self::AdminRefused { .. } => None,
        }
    }
}

/// What a pull did.
#[derive(Debug)]
pub struct Summary {
    /// `created`, `replaced` or `unchanged`.
    pub result: String,
    pub date: Date,
    pub last_analyzed_on: String,
    pub applications: usize,
    pub modules: usize,
    pub findings: usize,
    pub bytes: usize,
    pub sha256: String,
    pub requests: u64,
    pub retries: u64,
    pub restarts: u32,
    /// Fetching and assembling; checking it as an import would; importing it (or the list).
    pub copy: Duration,
    pub check: Duration,
    pub import: Duration,
    pub took: Duration,
}

impl Summary {
    pub fn to_json(&self) -> Value {
        json!({
            "result": self.result,
            "date": self.date.to_string(),
            "last_analyzed_on": self.last_analyzed_on,
            "applications": self.applications,
            "modules": self.modules,
            "findings": self.findings,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "requests": self.requests,
            "retries": self.retries,
            "restarts": self.restarts,
            "copy_ms": self.copy.as_millis() as u64,
            "check_ms": self.check.as_millis() as u64,
            "import_ms": self.import.as_millis() as u64,
            "took_ms": self.took.as_millis() as u64,
        })
    }

    /// The one-line summary for people.
    pub fn line(&self) -> String {
        let what = match self.result.as_str() {
            "unchanged" => "unchanged: the snapshot served for",
            "replaced" => "replaced the snapshot of",
            _ => "pulled the snapshot of",
        };
        let tail = if self.result == "unchanged" {
            "already holds this data; nothing written"
        } else {
            "served from now on"
        };
        format!(
            "{what} {}: {} applications, {} modules, {} findings, analysed {}; {tail} \
             ({} requests, {} retries, {:.1} s)",
            self.date,
            self.applications,
            self.modules,
            self.findings,
            self.last_analyzed_on,
            self.requests,
            self.retries,
            self.took.as_secs_f64()
        )
    }
}

/// How long the admin port may take to validate and store the import.
const IMPORT_TIMEOUT: Duration = Duration::from_secs(600);

/// Runs one pull with `config`'s upstream, dated `date` or by the analysis's UTC day.
pub fn run(config: &Config, date: Option<Date>) -> Result<Summary, PullError> {
    // The process is about to hold the upstream key: no core dump may carry it off.
    crate::hardening::no_core_dumps();
    let started = Instant::now();
    let upstream =
        config.upstream.as_ref().ok_or(PullError::NoUpstream { config: config.path.clone() })?;
    let key = secret::read(&upstream.api_key_file).map_err(PullError::KeyFile)?;
    // Before spending the upstream's quota: is there a server to import into, serving us?
    admin_get(config, "/health")?;
    let activation_code =
        upstream.activation_code.as_ref().unwrap_or(&config.activation_code).as_str().to_owned();
    let mut fetcher = fetch::Fetcher::new(upstream, key, activation_code, started)?;
    let mut progress = progress::Progress::new(false);
    progress.start(&upstream.url);
    let max_bytes = config.admin.limits.max_body_bytes;
    let pulled = assemble::pull(&mut fetcher, &mut progress, max_bytes);
    progress.finish();
    let pulled = pulled?;
    let copied = Instant::now();
    // The day of an RFC 3339 UTC timestamp is its first ten characters; `Pinned` checked it.
    let date = match date {
        Some(date) => date,
        None => Date::parse(pulled.last_analyzed_on.get(..10).unwrap_or(""))
            .map_err(|e| PullError::Setup(format!("cannot date the analysis: {e}")))?,
    };
    // The same checks as an import, before anything is sent; the server checks again.
    snapshot::validate(&pulled.bytes).map_err(PullError::Invalid)?;
    let sha256 = hex(ring::digest::digest(&ring::digest::SHA256, &pulled.bytes).as_ref());
    let checked_at = Instant::now();
    let mut summary = Summary {
        result: String::new(),
        date,
        last_analyzed_on: pulled.last_analyzed_on.clone(),
        applications: pulled.applications,
        modules: pulled.modules,
        findings: pulled.findings,
        bytes: pulled.bytes.len(),
        sha256,
        requests: fetcher.counts.requests,
        retries: fetcher.counts.retries,
        restarts: pulled.restarts,
        copy: copied - started,
        check: checked_at - copied,
        import: Duration::ZERO,
        took: Duration::ZERO,
    };
    let addr = &config.admin;
    if served_digest(config, date)?.as_deref() == Some(summary.sha256.as_str()) {
        summary.result = "unchanged".into();
    } else {
        let path = format!("/snapshots/{date}?source=pull");
        let len = pulled.bytes.len() as u64;
        let answer =
            admin_client::call(addr, "PUT", &path, &mut &pulled.bytes[..], len, IMPORT_TIMEOUT)
                .map_err(PullError::Admin)?;
        let body: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
        if !(200..300).contains(&answer.status) {
            let text =
                |field: &str| body.get(field).and_then(Value::as_str).unwrap_or("").to_owned();
            return Err(PullError::AdminRefused {
                status: answer.status,
                code: text("error"),
                message: text("message"),
            });
        }
        summary.result = body.get("result").and_then(Value::as_str).unwrap_or("created").into();
    }
    summary.import = checked_at.elapsed();
    summary.took = started.elapsed();
    Ok(summary)
}

/// A GET on the admin port that must answer 200 with JSON.
fn admin_get(config: &Config, path: &str) -> Result<Value, PullError> {
    let addr = &config.admin;
    let answer =
        admin_client::call(addr, "GET", path, &mut io::empty(), 0, Duration::from_secs(30))
            .map_err(PullError::Admin)?;
    let body: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
    if answer.status != 200 {
        let text = |field: &str| body.get(field).and_then(Value::as_str).unwrap_or("").to_owned();
        return Err(PullError::AdminRefused {
            status: answer.status,
            code: text("error"),
            message: text("message"),
        });
    }
    match body {
        Value::Null => Err(PullError::Admin(ClientError::Malformed { addr: addr.into() })),
        body => Ok(body),
    }
}

/// The SHA-256 the admin port reports for the snapshot served on `date`, if any.
fn served_digest(config: &Config, date: Date) -> Result<Option<String>, PullError> {
    let list = admin_get(config, "/snapshots")?;
    let date = date.to_string();
    Ok(list["snapshots"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["date"].as_str() == Some(date.as_str()))
        .and_then(|s| s["sha256"].as_str())
        .map(str::to_owned))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
