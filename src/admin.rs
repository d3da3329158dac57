//! The admin port's policy: who may use it, what each request means, and what it answered.
//!
//! The port ([`crate::server`]) only moves bytes and finds the caller's uid; everything else is
//! decided here. A caller whose uid is not allowed, a request it cannot parse, and anything
//! browser-shaped (an `Origin` or `Sec-Fetch-*` header, or a `Host` that is not a loopback name,
//! so no web page can drive this port) are refused through the same rate-limited refusal log
//! as the API port's refusals, each counted under its own status. The rest is routed once:
//! `/health`, `/key` and `/key/replace` (changes go through [`crate::keys::KeyManager`], which
//! keeps the order that makes them safe), `/reload`, `/metrics`, and the snapshot routes in
//! `snapshots`. Every failure is an [`AdminError`], whose `status` and `code` are this port's
//! one mapping to what the client sees, and every change writes one [`crate::audit`] line.

mod snapshots;

use std::fmt;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use serde::Serialize;
use serde_json::json;

use crate::app::{App, ReloadError};
use crate::audit::{self, KeyAction, KeyOutcome};
use crate::http::{HeaderValue, Method, ParseError, Request, Response, Status};
use crate::keys::{ChangeError, Installed};
use crate::keystore::{KeyRecord, rfc3339};
use crate::metrics::{AdminRoute, Gauges, Reason};
use crate::peer::PeerError;
use crate::refusals::{Peer, Refused};
use crate::snapshot::Date;
use crate::snapshot::store::{DeleteError, ImportError};

/// Who is calling, as the socket table says.
#[derive(Debug, Clone, Copy)]
pub struct Client {
    pub uid: u32,
}

/// Resolves the path once: the resource (also the metrics' `route` label), and for
/// `/snapshots/<date>` the date as written.
fn resolve(path: &str) -> (AdminRoute, Option<&str>) {
    match path {
        "/health" => (AdminRoute::Health, None),
        "/key" => (AdminRoute::Key, None),
        "/key/replace" => (AdminRoute::KeyReplace, None),
        "/reload" => (AdminRoute::Reload, None),
        "/metrics" => (AdminRoute::Metrics, None),
        "/snapshots" => (AdminRoute::Snapshots, None),
        p => match p.strip_prefix("/snapshots/") {
            Some(date) => (AdminRoute::Snapshots, Some(date)),
            None => (AdminRoute::Other, None),
        },
    }
}

/// Every way an admin request can fail. [`AdminError::status`] and [`AdminError::code`] are the
/// port's one mapping to what the client sees; both are exhaustive, so a new failure cannot
/// slip through as a silent 500.
#[derive(Debug)]
pub enum AdminError {
    /// The socket table does not say who the caller is.
    UnknownUid(PeerError),
    /// The caller's uid may not use the port.
    UidNotAllowed(u32),
    /// A request the HTTP layer refused.
    Malformed(ParseError),
    /// Anything a browser could send.
    BrowserShaped(&'static str),
    NotFound,
    MethodNotAllowed(&'static str),
    KeyChange(ChangeError),
    /// A new key was installed but is missing from its own record (a bug).
    KeyNotRecorded,
    Reload(ReloadError),
    BadDate {
        text: String,
        reason: String,
    },
    Import(Date, ImportError),
    Delete(Date, DeleteError),
}

impl AdminError {
    pub fn status(&self) -> Status {
        match self {
            Self::UnknownUid(_) | Self::UidNotAllowed(_) | Self::BrowserShaped(_) => {
                Status::FORBIDDEN
            }
            Self::Malformed(e) => e.status(),
            Self::NotFound | Self::Delete(_, DeleteError::NotFound) => Status::NOT_FOUND,
            Self::MethodNotAllowed(_) => Status::METHOD_NOT_ALLOWED,
            Self::KeyChange(ChangeError::Conflict(_)) => Status::CONFLICT,
            Self::KeyChange(
                ChangeError::Random(_)
                | ChangeError::Store(_)
                | ChangeError::RevokedInMemoryOnly(_),
            )
            | Self::KeyNotRecorded
            | Self::Import(_, ImportError::Write(_))
            | Self::Delete(_, DeleteError::Write(_)) => Status::INTERNAL_SERVER_ERROR,
            Self::Reload(_) | Self::Import(_, ImportError::Invalid(_)) => Status::UNPROCESSABLE,
            Self::BadDate { .. } | Self::Import(_, ImportError::Empty | ImportError::Body(_)) => {
                Status::BAD_REQUEST
            }
        }
    }

    /// The `error` field of the body: a stable word a script can match.
    pub fn code(&self) -> &'static str {
        use crate::durable::WriteError::{Io, NotDurable};
        match self {
            Self::UnknownUid(_) | Self::UidNotAllowed(_) | Self::BrowserShaped(_) => "forbidden",
            Self::Malformed(e) => e.code(),
            Self::NotFound | Self::Delete(_, DeleteError::NotFound) => "not_found",
            Self::MethodNotAllowed(_) => "method_not_allowed",
            Self::KeyChange(ChangeError::Conflict(_)) => "conflict",
            Self::KeyChange(ChangeError::Random(_)) => "random",
            Self::KeyChange(ChangeError::Store(_) | ChangeError::RevokedInMemoryOnly(_)) => {
                "store_write"
            }
            Self::KeyNotRecorded => "internal",
            Self::Reload(_) => "reload_refused",
            Self::BadDate { .. } => "invalid_date",
            Self::Import(_, ImportError::Empty) => "empty_body",
            Self::Import(_, ImportError::Body(_)) => "body",
            Self::Import(_, ImportError::Invalid(_)) => "invalid_snapshot",
            Self::Import(_, ImportError::Write(Io { .. }))
            | Self::Delete(_, DeleteError::Write(Io { .. })) => "storage",
            Self::Import(_, ImportError::Write(NotDurable { .. }))
            | Self::Delete(_, DeleteError::Write(NotDurable { .. })) => "not_durable",
        }
    }

    /// The answer: `{"error":"<code>","message":"…"}`, plus where an invalid snapshot is wrong.
    fn response(&self) -> Response {
        let mut body = json!({ "error": self.code(), "message": self.to_string() });
        if let Self::Import(_, ImportError::Invalid(invalid)) = self {
            let (line, column) = invalid.problem.line_column().unzip();
            body["path"] = json!(invalid.path);
            body["reason"] = json!(invalid.problem.to_string());
            body["line"] = json!(line);
            body["column"] = json!(column);
        }
        let response = Response::json(self.status(), body.to_string().into_bytes());
        match self {
            Self::MethodNotAllowed(allow) => response.header("allow", *allow),
            _ => response,
        }
    }
}

impl fmt::Display for AdminError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownUid(_) => f.write_str("the client's uid could not be determined"),
            Self::UidNotAllowed(uid) => write!(
                f,
                "uid {uid} may not use the admin port: run the command as root, or add the uid \
                 to admin.allowed_uids"
            ),
            Self::Malformed(e) => e.fmt(f),
            Self::BrowserShaped(why) => f.write_str(why),
            Self::NotFound => f.write_str(
                "no such admin resource (there are /health, /key, /key/replace, /reload, \
                 /metrics, /snapshots)",
            ),
            Self::MethodNotAllowed(allow) => write!(f, "allowed methods: {allow}"),
            Self::KeyChange(e) => e.fmt(f),
            Self::KeyNotRecorded => f.write_str("the new key was not recorded"),
            Self::Reload(e) => write!(f, "{e}; the certificate in service is unchanged"),
            Self::BadDate { text, reason } => write!(
                f,
                "`{text}` is not a date ({reason}): snapshots are named by their date, YYYY-MM-DD"
            ),
            Self::Import(date, ImportError::Invalid(invalid)) => {
                write!(f, "the snapshot for {date} is invalid, nothing changed: {invalid}")
            }
            Self::Import(_, e) => e.fmt(f),
            Self::Delete(date, DeleteError::NotFound) => write!(f, "no snapshot for {date}"),
            Self::Delete(_, e) => e.fmt(f),
        }
    }
}

/// Answers one admin request from an allowed `client`. `body` is the request body, unread.
pub fn handle(app: &App, request: &Request<'_>, body: &mut dyn Read, client: Client) -> Response {
    let (route, date) = resolve(request.path);
    let (response, label) = match refuse_browsers(request) {
        Err(e) => {
            (refused(app, Peer::Uid(client.uid), e, Reason::AdminBrowser), AdminRoute::Refused)
        }
        Ok(()) => {
            let response = dispatch(app, (route, date), request, body, client)
                .unwrap_or_else(|e| e.response());
            (response, route)
        }
    };
    app.metrics.admin().admin_request(label, response.status.0);
    response
}

/// The answer to a caller whose uid the socket table does not give. Fails closed.
pub fn refuse_unknown_uid(app: &App, peer: SocketAddr, e: PeerError) -> Response {
    let response =
        refused(app, Peer::Address(peer.ip()), AdminError::UnknownUid(e), Reason::AdminUid);
    app.metrics.admin().admin_request(AdminRoute::Refused, response.status.0);
    response
}

/// The answer to a caller whose uid may not use the port.
pub fn refuse_uid(app: &App, uid: u32) -> Response {
    let response = refused(app, Peer::Uid(uid), AdminError::UidNotAllowed(uid), Reason::AdminUid);
    app.metrics.admin().admin_request(AdminRoute::Refused, response.status.0);
    response
}

/// The answer to a request from `client` that the HTTP layer refused; the connection closes.
pub fn refuse_malformed(app: &App, client: Client, e: ParseError) -> Response {
    let response =
        refused(app, Peer::Uid(client.uid), AdminError::Malformed(e), Reason::BadRequest);
    app.metrics.admin().admin_request(AdminRoute::Refused, response.status.0);
    response.closing()
}

/// Logs (within the refusal log's budget) and counts a refusal, and answers it.
fn refused(app: &App, peer: Peer, e: AdminError, reason: Reason) -> Response {
    let detail = match &e {
        AdminError::UnknownUid(cause) => cause.to_string(),
        AdminError::UidNotAllowed(uid) => format!("uid {uid} not allowed"),
        other => other.to_string(),
    };
    let response = e.response();
    app.refusals.refused(Refused {
        port: "admin",
        peer,
        reason: &detail,
        status: response.status.0,
        fingerprint: None,
    });
    app.metrics.admin().refusal(reason);
    response
}

fn dispatch(
    app: &App,
    route: (AdminRoute, Option<&str>),
    request: &Request<'_>,
    body: &mut dyn Read,
    client: Client,
) -> Result<Response, AdminError> {
    let method = request.method;
    let read = matches!(method, Method::Get | Method::Head);
    match route {
        (AdminRoute::Snapshots, Some(date)) => {
            snapshots::one(app, date, method, request.content_length, body, client)
        }
        (AdminRoute::Health, _) if read => {
            Ok(Response::json(Status::OK, br#"{"status":"ok"}"#.to_vec()))
        }
        (AdminRoute::Metrics, _) if read => Ok(metrics(app)),
        (AdminRoute::Snapshots, _) if read => Ok(snapshots::list(app)),
        (AdminRoute::Health | AdminRoute::Metrics | AdminRoute::Snapshots, _) => {
            Err(AdminError::MethodNotAllowed("GET, HEAD"))
        }
        (AdminRoute::Key, _) if read => Ok(key_status(app)),
        (AdminRoute::Key, _) if method == Method::Post => generate(app, client),
        (AdminRoute::Key, _) if method == Method::Delete => revoke(app, client),
        (AdminRoute::Key, _) => Err(AdminError::MethodNotAllowed("GET, HEAD, POST, DELETE")),
        (AdminRoute::KeyReplace, _) if method == Method::Post => replace(app, client),
        (AdminRoute::KeyReplace, _) => Err(AdminError::MethodNotAllowed("POST")),
        (AdminRoute::Reload, _) if method == Method::Post => reload(app, client),
        (AdminRoute::Reload, _) => Err(AdminError::MethodNotAllowed("POST")),
        (AdminRoute::Other | AdminRoute::Refused, _) => Err(AdminError::NotFound),
    }
}

/// Refuses anything a browser could send: a DNS-rebinding page would carry a foreign Host,
/// and any cross-origin fetch carries Origin or Sec-Fetch-* headers. curl sends none of them.
fn refuse_browsers(request: &Request<'_>) -> Result<(), AdminError> {
    if request.has_header("origin")
        || request
            .headers
            .iter()
            .any(|h| h.name.len() > 10 && h.name[..10].eq_ignore_ascii_case("sec-fetch-"))
    {
        return Err(AdminError::BrowserShaped(
            "browser requests are not accepted on the admin port",
        ));
    }
    match request.header("host") {
        HeaderValue::One(host) if is_loopback_host(host) => Ok(()),
        HeaderValue::One(_) => {
            Err(AdminError::BrowserShaped("the Host header must name a loopback address"))
        }
        HeaderValue::Absent | HeaderValue::Repeated => {
            Err(AdminError::BrowserShaped("a Host header naming a loopback address is required"))
        }
    }
}

fn is_loopback_host(host: &[u8]) -> bool {
    let Ok(host) = std::str::from_utf8(host) else { return false };
    let name = match host.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((inside, port)) if port.is_empty() || valid_port(port) => inside,
            _ => return false,
        },
        None => match host.rsplit_once(':') {
            Some((name, port)) if valid_port(port) => name,
            Some(_) => return false,
            None => host,
        },
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn valid_port(text: &str) -> bool {
    text.strip_prefix(':').unwrap_or(text).parse::<u16>().is_ok()
}

fn key_status(app: &App) -> Response {
    let (record, persisted) = app.keys.status();
    Response::json(Status::OK, status_json(&record, persisted).into_bytes())
}

/// The key's state as `GET /key` and `DELETE /key` show it, fields in this order.
#[derive(Serialize)]
struct KeyStatus<'r> {
    state: &'static str,
    fingerprint: Option<&'r str>,
    created_at: Option<String>,
    revoked_at: Option<String>,
    generation: u64,
    /// False while a revoke is in force in memory but not yet in the store.
    persisted: bool,
}

fn status_json(record: &KeyRecord, persisted: bool) -> String {
    let key = record.key.as_ref();
    let status = KeyStatus {
        state: record.state().as_str(),
        fingerprint: key.map(|k| k.fingerprint.as_str()),
        created_at: key.map(|k| rfc3339(k.created_at)),
        revoked_at: key.and_then(|k| k.revoked_at).map(rfc3339),
        generation: record.generation,
        persisted,
    };
    serde_json::to_string(&status).unwrap_or_default()
}

fn generate(app: &App, client: Client) -> Result<Response, AdminError> {
    let outcome = app.keys.generate();
    app.announce_key_state();
    key_shown_once(app, Status::CREATED, KeyAction::Generate, outcome, client)
}

fn replace(app: &App, client: Client) -> Result<Response, AdminError> {
    let outcome = app.keys.replace();
    app.announce_key_state();
    key_shown_once(app, Status::OK, KeyAction::Replace, outcome, client)
}

fn revoke(app: &App, client: Client) -> Result<Response, AdminError> {
    let outcome = app.keys.revoke();
    app.announce_key_state();
    match outcome {
        Ok(record) => {
            let done = KeyOutcome::Done { previous: None };
            audit::key_change(KeyAction::Revoke, client.uid, &record, done).emit();
            Ok(Response::json(Status::OK, status_json(&record, true).into_bytes()))
        }
        Err(e) => Err(change_failed(app, KeyAction::Revoke, e, client)),
    }
}

/// `GET /metrics`: Prometheus text format.
fn metrics(app: &App) -> Response {
    let record = app.keys.record();
    let catalog = app.snapshots.catalog();
    let gauges = Gauges {
        key: &record,
        open_connections: app.open_connections.load(Ordering::Relaxed),
        snapshots: catalog.newest_first().count(),
        newest_analysis: catalog.newest().map(|s| s.analyzed_on()),
    };
    let mut response = Response::json(Status::OK, app.metrics.render(&gauges).into_bytes());
    response.content_type = "text/plain; version=0.0.4; charset=utf-8";
    response
}

/// `POST /reload`: re-read the certificate and the snapshots, as SIGHUP does.
fn reload(app: &App, client: Client) -> Result<Response, AdminError> {
    match app.reload(&format!("admin uid:{}", client.uid)) {
        Ok(done) => {
            audit::reload(client.uid, None).emit();
            let body = json!({
                "certificate": done.cert.cert_path.display().to_string(),
                "sha256": done.cert.sha256,
                "changed": done.cert_changed,
                "snapshots": { "served": done.snapshots.served, "refused": done.snapshots.refused },
            });
            Ok(Response::json(Status::OK, body.to_string().into_bytes()))
        }
        Err(e) => {
            audit::reload(client.uid, Some(&e)).emit();
            Err(AdminError::Reload(e))
        }
    }
}

/// The response that shows a new key: its only appearance anywhere.
fn key_shown_once(
    app: &App,
    status: Status,
    action: KeyAction,
    outcome: Result<Installed, ChangeError>,
    client: Client,
) -> Result<Response, AdminError> {
    let Installed { key, record, previous } = match outcome {
        Ok(installed) => installed,
        Err(e) => return Err(change_failed(app, action, e, client)),
    };
    let Some(stored) = record.key.as_ref() else {
        return Err(AdminError::KeyNotRecorded);
    };
    let done = KeyOutcome::Done { previous: previous.as_ref() };
    audit::key_change(action, client.uid, &record, done).emit();
    // Built by hand rather than through serde_json so that the only copies of the key are
    // this body and the ApiKey, both wiped on drop. Every part is plain ASCII without quotes.
    // The buffer is sized once, up front: a buffer that grew would leave the key behind in
    // the memory it gave back, unwiped.
    let created_at = rfc3339(stored.created_at);
    let generation = record.generation.to_string();
    let parts: [&[u8]; 9] = [
        b"{\"api_key\":\"",
        key.expose().as_bytes(),
        b"\",\"fingerprint\":\"",
        stored.fingerprint.as_str().as_bytes(),
        b"\",\"created_at\":\"",
        created_at.as_bytes(),
        b"\",\"generation\":",
        generation.as_bytes(),
        b",\"warning\":\"this key is shown once and cannot be shown again: store it now\"}",
    ];
    let mut body = Vec::with_capacity(parts.iter().map(|p| p.len()).sum());
    for part in parts {
        body.extend_from_slice(part);
    }
    let mut response = Response::json(status, body);
    response.secret = true;
    Ok(response)
}

/// A change that did not happen (or happened only in memory): its audit line names the key
/// and generation in force afterwards.
fn change_failed(app: &App, action: KeyAction, e: ChangeError, client: Client) -> AdminError {
    let (record, _) = app.keys.status();
    let outcome = match &e {
        ChangeError::Conflict(_) => KeyOutcome::Conflict,
        ChangeError::Random(cause) => KeyOutcome::Failed(cause),
        ChangeError::Store(cause) => KeyOutcome::Failed(cause),
        ChangeError::RevokedInMemoryOnly(cause) => KeyOutcome::MemoryOnly(cause),
    };
    audit::key_change(action, client.uid, &record, outcome).emit();
    AdminError::KeyChange(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_recognised() {
        for host in [
            "localhost",
            "LOCALHOST:8444",
            "127.0.0.1",
            "127.0.0.1:8444",
            "127.9.9.9:1",
            "[::1]",
            "[::1]:8444",
        ] {
            assert!(is_loopback_host(host.as_bytes()), "{host}");
        }
        for host in [
            "example.com",
            "10.0.0.1:8444",
            "localhost.evil.com",
            "127.0.0.1:x",
            "[::2]:1",
            "::1",
            "",
            "[::1]x",
        ] {
            assert!(!is_loopback_host(host.as_bytes()), "{host}");
        }
    }
}
