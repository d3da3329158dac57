//! The scrape port's policy: `GET /metrics` for a Prometheus on another host, and nothing else.
//!
//! The admin port's `/metrics` is loopback-only and root-only, so a Prometheus elsewhere needed
//! a local agent running as root or an SSH tunnel. `metrics.listen` opens a port of its own
//! instead, as every exporter does. What it may cost is bounded like the other ports: the
//! transport ([`crate::server`]) caps connections in total and per address and times every
//! read out; here, a bearer token (when `metrics.bearer_token_file` is set) is judged before
//! anything is routed, so without it no path, method or error says anything about the server;
//! refusals are logged through the shared refusal log (bounded lines) and counted, and past
//! `api.max_refusals_per_address` in `api.refusal_window_secs` an address gets `429` with
//! `Retry-After` and its connection closes, as on the API port.
//!
//! The token is read from its file at start (a bad file stops `serve`) and again at every
//! request, so a rotated token takes effect at once, as Prometheus' `credentials_file` does on
//! its side; a file that can no longer be read fails closed (`503`). The token is compared in
//! constant time by its SHA-256 and never logged. [`exposition`] is the text both `/metrics`
//! serve, so the two can never differ.

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Instant;

use serde_json::json;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::app::App;
use crate::config::{Metrics as Settings, ThrottleSettings};
use crate::http::{HeaderValue, Method, ParseError, Request, Response, Status};
use crate::metrics::{Gauges, Reason, ScrapeRoute};
use crate::refusals::{Kind, Peer, Refused};
use crate::throttle::{Throttle, Verdict};

/// The most a token file may hold: a token is short, and a wrong path must not read a disk.
const MAX_TOKEN_FILE_BYTES: u64 = 4096;

/// Where `systemctl enable aims-api-pull.timer` puts its link: the timer is enabled while the
/// link is there (see [`pull_timer_enabled`]).
const PULL_TIMER_LINK: &str = "/etc/systemd/system/timers.target.wants/aims-api-pull.timer";

/// The scrape port's state: where the token is, and the failed-auth counts per address.
pub struct Scrape {
    token_file: Option<PathBuf>,
    throttle: Throttle,
}

/// Why the bearer token file cannot be used. Names the file and the fix, never the content.
#[derive(Debug)]
pub struct TokenFileError {
    pub path: PathBuf,
    pub reason: String,
    pub source: Option<io::Error>,
}

impl fmt::Display for TokenFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "metrics.bearer_token_file {}: {}", self.path.display(), self.reason)
    }
}

impl std::error::Error for TokenFileError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| e as _)
    }
}

impl Scrape {
    /// Checks the token file once (a scrape port that would refuse everyone must not start).
    pub fn new(settings: &Settings, throttle: ThrottleSettings) -> Result<Self, TokenFileError> {
        if let Some(path) = &settings.bearer_token_file {
            read_token(path)?;
        }
        Ok(Self {
            token_file: settings.bearer_token_file.clone(),
            throttle: Throttle::new(throttle),
        })
    }

    /// Answers one request from `peer`: the token first, then the one route.
    pub fn handle(&self, app: &App, request: &Request<'_>, peer: SocketAddr) -> Response {
        let shard = app.metrics.scrape();
        if let Err(response) = self.authorize(app, request, peer) {
            shard.scrape_request(ScrapeRoute::Refused, response.status.0);
            return response;
        }
        let (route, response) = match (request.path, request.method) {
            (_, _) if request.content_length > 0 => (
                ScrapeRoute::Other,
                error(Status::BAD_REQUEST, "body", "the scrape port takes no request body")
                    .closing(),
            ),
            ("/metrics", Method::Get | Method::Head) => (ScrapeRoute::Metrics, exposition(app)),
            ("/metrics", _) => (
                ScrapeRoute::Other,
                error(Status::METHOD_NOT_ALLOWED, "method_not_allowed", "GET or HEAD /metrics")
                    .header("Allow", "GET, HEAD"),
            ),
            (_, _) => (
                ScrapeRoute::Other,
                error(Status::NOT_FOUND, "not_found", "this port serves GET /metrics only"),
            ),
        };
        shard.scrape_request(route, response.status.0);
        response
    }

    /// The answer to a request the HTTP layer refused; the connection closes.
    pub fn refuse_malformed(&self, app: &App, peer: SocketAddr, e: ParseError) -> Response {
        let status = e.status();
        note(app, peer, e.code(), status.0, Reason::BadRequest);
        app.metrics.scrape().scrape_request(ScrapeRoute::Refused, status.0);
        error(status, e.code(), &e.to_string()).closing()
    }

    /// A new connection from an address that already holds its share: closed unanswered.
    pub fn refuse_connection(&self, app: &App, peer: SocketAddr) {
        let reason = "too many connections from this address to the scrape port";
        note(app, peer, reason, 0, Reason::ConnectionCap);
    }

    fn authorize(
        &self,
        app: &App,
        request: &Request<'_>,
        peer: SocketAddr,
    ) -> Result<(), Response> {
        let Some(path) = &self.token_file else { return Ok(()) };
        let expected = match read_token(path) {
            Ok(token) => token,
            Err(e) => {
                log::error!("scrape port: {e}; every scrape is refused until it is fixed");
                let message = "the scrape port's bearer token file cannot be read: see the log";
                return Err(error(Status::SERVICE_UNAVAILABLE, "token_file", message));
            }
        };
        let presented = match request.header("authorization") {
            HeaderValue::One(value) => bearer(value),
            HeaderValue::Absent | HeaderValue::Repeated => None,
        };
        let reason = match presented {
            Some(token) if same_secret(token, expected.as_bytes()) => return Ok(()),
            Some(_) => "wrong bearer token",
            None => "no bearer token (Authorization: Bearer …)",
        };
        let response = match self.throttle.refused(peer.ip(), Instant::now()) {
            Verdict::Refuse => {
                error(Status::UNAUTHORIZED, "unauthorized", "a valid bearer token is required")
                    .header("WWW-Authenticate", "Bearer realm=\"aims-api metrics\"")
            }
            Verdict::Throttle { retry_after_secs } => error(
                Status::TOO_MANY_REQUESTS,
                "throttled",
                "too many refused requests from this address: wait, then send the right token",
            )
            .header("Retry-After", retry_after_secs.to_string())
            .closing(),
        };
        let counted = if response.status == Status::TOO_MANY_REQUESTS {
            Reason::Throttled
        } else {
            Reason::MetricsToken
        };
        note(app, peer, reason, response.status.0, counted);
        Err(response)
    }
}

/// Logs (within the refusal log's budget) and counts one refusal on this port.
fn note(app: &App, peer: SocketAddr, reason: &str, status: u16, counted: Reason) {
    app.refusals.refused(Refused {
        port: "metrics",
        peer: Peer::Address(peer.ip()),
        reason,
        status,
        fingerprint: None,
    });
    app.metrics.scrape().refusal(counted);
}

/// The token of an `Authorization: Bearer TOKEN` value (the scheme in any letter case).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, token) = value.split_at_checked(7)?;
    let token = token.trim_ascii();
    (scheme.eq_ignore_ascii_case(b"bearer ") && !token.is_empty()).then_some(token)
}

/// Compares two secrets by their SHA-256 in constant time, so neither content nor length leaks.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    let digest = |s: &[u8]| ring::digest::digest(&ring::digest::SHA256, s);
    digest(a).as_ref().ct_eq(digest(b).as_ref()).into()
}

/// Reads the token: a regular file of at most 4 KiB, owned by root or this uid, that nobody
/// but its owner and group may read (root:aims-api 0640 under the package), one line.
fn read_token(path: &Path) -> Result<Zeroizing<String>, TokenFileError> {
    let fail = |reason: String, source| TokenFileError { path: path.to_owned(), reason, source };
    let file = File::open(path).map_err(|e| fail(format!("cannot open: {e}"), Some(e)))?;
    let meta = file.metadata().map_err(|e| fail(format!("cannot read it: {e}"), Some(e)))?;
    let me = rustix::process::geteuid().as_raw();
    if !meta.is_file() {
        return Err(fail("is not a regular file".into(), None));
    }
    if meta.uid() != 0 && meta.uid() != me {
        return Err(fail(
            format!("is owned by uid {}, not by root or by uid {me} that runs serve", meta.uid()),
            None,
        ));
    }
    if meta.mode() & 0o007 != 0 {
        return Err(fail(
            format!(
                "has mode {:04o}: others may read it; chmod 640 (root:aims-api) or 600",
                meta.mode() & 0o777
            ),
            None,
        ));
    }
    if meta.len() > MAX_TOKEN_FILE_BYTES {
        return Err(fail(format!("is larger than {MAX_TOKEN_FILE_BYTES} bytes"), None));
    }
    let mut text = Zeroizing::new(String::with_capacity(MAX_TOKEN_FILE_BYTES as usize + 1));
    file.take(MAX_TOKEN_FILE_BYTES)
        .read_to_string(&mut text)
        .map_err(|e| fail(format!("cannot read it as UTF-8 text: {e}"), Some(e)))?;
    // Prometheus trims the credentials file it sends: the same token, whatever line end.
    let token = text.trim();
    if token.is_empty() || token.contains(char::is_whitespace) {
        return Err(fail("must hold one token, alone on one line, without spaces".into(), None));
    }
    Ok(Zeroizing::new(token.to_owned()))
}

fn error(status: Status, code: &str, message: &str) -> Response {
    let body = json!({ "error": code, "message": message });
    Response::json(status, body.to_string().into_bytes())
}

/// `/metrics` in the Prometheus text format, the same on the admin port and the scrape port.
pub fn exposition(app: &App) -> Response {
    let record = app.keys.record();
    let catalog = app.snapshots.catalog();
    let last_used = record.key.as_ref().and_then(|k| app.keys.usage_of(k.generation).last_used);
    let gauges = Gauges {
        key: &record,
        key_last_used: last_used.map(|(at, _)| at),
        key_exposures: app.keys.exposures_total(),
        key_exposed: app.keys.exposure().is_some(),
        open_connections: app.open_connections.load(Ordering::Relaxed),
        snapshots: catalog.newest_first().count(),
        newest_analysis: catalog.newest().map(|s| s.analyzed_on()),
        last_import: catalog.last_arrival().map(|a| (a.time(), a.source.label())),
        snapshot_store_bytes: app.snapshots.store_bytes(),
        snapshot_refused_files: catalog.refused().count(),
        snapshot_memory_bytes: app.snapshots.resident_bytes(),
        cert_not_after: app.cert_info().leaf.not_after,
        pull_timer_enabled: Some(pull_timer_enabled(Path::new(PULL_TIMER_LINK))),
        log_lines: Kind::ALL
            .iter()
            .zip(app.refusals.counts())
            .map(|(kind, counts)| (kind.label(), counts.events, counts.suppressed))
            .collect(),
    };
    let mut response = Response::json(Status::OK, app.metrics.render(&gauges).into_bytes());
    response.content_type = "text/plain; version=0.0.4; charset=utf-8";
    response
}

/// Whether the pull timer is enabled: `systemctl enable` links the timer into
/// `timers.target.wants`, and only that link says it will run. Read at each scrape (one
/// `lstat`), so the alert "no import for 36 h while the timer is enabled" follows an operator
/// who enables or disables it, without asking systemd over D-Bus from a hardened service.
fn pull_timer_enabled(link: &Path) -> bool {
    std::fs::symlink_metadata(link).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_bearer_token_is_taken() {
        assert_eq!(bearer(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"bearer  abc "), Some(&b"abc"[..]));
        assert_eq!(bearer(b"Basic abc"), None);
        assert_eq!(bearer(b"Bearer "), None);
        assert_eq!(bearer(b"Bear"), None);
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd") && !same_secret(b"abc", b"abcd"));
    }

    #[test]
    fn the_token_file_must_be_private_and_hold_one_token() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let write = |text: &str, mode| {
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        write("s3cret\n", 0o640);
        assert_eq!(read_token(&path).unwrap().as_str(), "s3cret");
        write("s3cret\n", 0o644);
        let e = read_token(&path).unwrap_err().to_string();
        assert!(
            e.ends_with("has mode 0644: others may read it; chmod 640 (root:aims-api) or 600"),
            "{e}"
        );
        write("two words\n", 0o600);
        assert!(read_token(&path).unwrap_err().to_string().contains("one token"));
        write("\n", 0o600);
        assert!(read_token(&path).unwrap_err().to_string().contains("one token"));
        let e = read_token(&dir.path().join("none")).unwrap_err();
        assert!(e.to_string().contains("cannot open"), "{e}");
        assert!(std::error::Error::source(&e).is_some());
    }

    #[test]
    fn the_pull_timer_is_enabled_while_its_link_is_there() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("aims-api-pull.timer");
        assert!(!pull_timer_enabled(&link));
        std::os::unix::fs::symlink("/nonexistent/aims-api-pull.timer", &link).unwrap();
        assert!(pull_timer_enabled(&link), "a dangling link still says enabled, as systemctl does");
    }
}
