//! The admin port's handlers, and the one place the key changes.
//!
//! [`KeyManager`] serializes every change under one mutex and keeps the order that makes a
//! change safe: for generate and replace, write the store durably, then switch the gate, then
//! answer; for revoke, disable the key in the gate first (fail closed), then write, then
//! answer. So no request is admitted by a key after the response that replaced or revoked it,
//! and a failed write never leaves a key that the store does not know about.
//!
//! The snapshot routes (import, list, delete) are in `snapshots`; they share this module's
//! error body and browser refusal.
//!
//! Every admin action is logged as one `audit` line with the client's uid and the fingerprint.
//! Browsers are kept out entirely: a request with an `Origin` or `Sec-Fetch-*` header, or with
//! a `Host` that is not a loopback name, is refused, so no web page can drive this port.

mod snapshots;

use std::sync::atomic::Ordering;
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use ring::rand::SystemRandom;
use serde::Serialize;
use serde_json::json;

use crate::app::App;
use crate::gate::Gate;
use crate::http::{HeaderValue, Method, Request, Response, Status};
use crate::key::{ApiKey, Fingerprint, KeyError};
use crate::keystore::{Conflict, KeyRecord, KeyStore, StoreError, rfc3339};
use crate::metrics::{Gauges, Reason};
use crate::server::admin_port::Body;
use crate::server::supervisor;
use crate::systemd;

/// Who is calling, as the socket table says.
#[derive(Debug, Clone, Copy)]
pub struct Client {
    pub uid: u32,
}

/// The key store and the in-memory record, changed only under the lock.
pub struct KeyManager {
    state: Mutex<Keys>,
    rng: SystemRandom,
}

struct Keys {
    store: KeyStore,
    /// What the store file holds.
    record: KeyRecord,
    /// A revoke that is in force in memory but could not be written: the store still names
    /// the key as active, and another `DELETE /key` retries the write.
    unwritten_revoke: Option<KeyRecord>,
}

impl Keys {
    /// The state in force: an unwritten revoke counts.
    fn effective(&self) -> &KeyRecord {
        self.unwritten_revoke.as_ref().unwrap_or(&self.record)
    }
}

/// A key just made, the record that now holds it, and the key it replaced.
pub struct Installed {
    pub key: ApiKey,
    pub record: KeyRecord,
    pub previous: Option<Fingerprint>,
}

/// Why a key change did not happen (or happened only in memory).
#[derive(Debug)]
pub enum ChangeError {
    Conflict(Conflict),
    Random(KeyError),
    Store(StoreError),
    /// The key is refused from now on, but the store could not record it.
    RevokedInMemoryOnly(StoreError),
}

impl KeyManager {
    pub fn new(store: KeyStore, record: KeyRecord) -> Self {
        Self {
            state: Mutex::new(Keys { store, record, unwritten_revoke: None }),
            rng: SystemRandom::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Keys> {
        // A panic under this lock cannot leave `Keys` half-changed: each field is replaced
        // whole, after the store write it mirrors.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The state in force, and whether the store agrees with it.
    pub fn status(&self) -> (KeyRecord, bool) {
        let keys = self.lock();
        (keys.effective().clone(), keys.unwritten_revoke.is_none())
    }

    pub fn record(&self) -> KeyRecord {
        self.lock().effective().clone()
    }

    /// Waits for a key change in progress to finish (at shutdown).
    pub fn quiesce(&self) {
        drop(self.lock());
    }

    pub fn generate(&self, gate: &Gate) -> Result<Installed, ChangeError> {
        self.install(gate, KeyRecord::generated)
    }

    pub fn replace(&self, gate: &Gate) -> Result<Installed, ChangeError> {
        self.install(gate, KeyRecord::replaced)
    }

    fn install(
        &self,
        gate: &Gate,
        next: fn(&KeyRecord, &ApiKey, SystemTime) -> Result<KeyRecord, Conflict>,
    ) -> Result<Installed, ChangeError> {
        let mut keys = self.lock();
        let key = ApiKey::generate(&self.rng).map_err(ChangeError::Random)?;
        let current = keys.effective();
        let previous = current.key.as_ref().map(|k| k.fingerprint.clone());
        let record = next(current, &key, SystemTime::now()).map_err(ChangeError::Conflict)?;
        keys.store.write(&record).map_err(ChangeError::Store)?;
        gate.switch(&record);
        keys.record = record.clone();
        keys.unwritten_revoke = None;
        Ok(Installed { key, record, previous })
    }

    pub fn revoke(&self, gate: &Gate) -> Result<KeyRecord, ChangeError> {
        let mut keys = self.lock();
        let record = match keys.unwritten_revoke.take() {
            Some(pending) => pending,
            None => keys.record.revoked(SystemTime::now()).map_err(ChangeError::Conflict)?,
        };
        gate.disable();
        match keys.store.write(&record) {
            Ok(()) => {
                gate.switch(&record);
                keys.record = record.clone();
                Ok(record)
            }
            Err(e) => {
                keys.unwritten_revoke = Some(record);
                Err(ChangeError::RevokedInMemoryOnly(e))
            }
        }
    }
}

/// Answers one admin request. `body` is the request body, unread.
pub fn handle(app: &App, request: &Request<'_>, body: &mut Body<'_>, client: &Client) -> Response {
    if let Err(response) = refuse_browsers(request) {
        log::warn!("admin: refused a browser-shaped request from uid {}", client.uid);
        app.metrics.admin().refusal(Reason::AdminBrowser);
        return response;
    }
    match (request.path, request.method) {
        ("/health", Method::Get | Method::Head) => {
            Response::json(Status::OK, br#"{"status":"ok"}"#.to_vec())
        }
        ("/health", _) => method_not_allowed("GET, HEAD"),
        ("/key", Method::Get | Method::Head) => key_status(app),
        ("/key", Method::Post) => generate(app, client),
        ("/key", Method::Delete) => revoke(app, client),
        ("/key", _) => method_not_allowed("GET, HEAD, POST, DELETE"),
        ("/key/replace", Method::Post) => replace(app, client),
        ("/key/replace", _) => method_not_allowed("POST"),
        ("/reload", Method::Post) => reload(app, client),
        ("/reload", _) => method_not_allowed("POST"),
        ("/metrics", Method::Get | Method::Head) => metrics(app),
        ("/metrics", _) => method_not_allowed("GET, HEAD"),
        ("/snapshots", Method::Get | Method::Head) => snapshots::list(app),
        ("/snapshots", _) => method_not_allowed("GET, HEAD"),
        (path, method) if path.starts_with("/snapshots/") => {
            let date = &path["/snapshots/".len()..];
            snapshots::one(app, date, method, request.query, body, client)
        }
        _ => error(
            Status::NOT_FOUND,
            "not_found",
            "no such admin resource (there are /health, /key, /key/replace, /reload, /metrics, /snapshots)",
        ),
    }
}

/// The admin port's error body: `{"error":"<code>","message":"…"}`.
pub fn error(status: Status, code: &str, message: &str) -> Response {
    let body = json!({ "error": code, "message": message });
    Response::json(status, body.to_string().into_bytes())
}

fn method_not_allowed(allow: &'static str) -> Response {
    error(Status::METHOD_NOT_ALLOWED, "method_not_allowed", &format!("allowed methods: {allow}"))
        .header("allow", allow)
}

/// Refuses anything a browser could send: a DNS-rebinding page would carry a foreign Host,
/// and any cross-origin fetch carries Origin or Sec-Fetch-* headers. curl sends none of them.
fn refuse_browsers(request: &Request<'_>) -> Result<(), Response> {
    let forbidden = |message: &str| Err(error(Status::FORBIDDEN, "forbidden", message));
    if request.has_header("origin")
        || request
            .headers
            .iter()
            .any(|h| h.name.len() > 10 && h.name[..10].eq_ignore_ascii_case("sec-fetch-"))
    {
        return forbidden("browser requests are not accepted on the admin port");
    }
    match request.header("host") {
        HeaderValue::One(host) if is_loopback_host(host) => Ok(()),
        HeaderValue::One(_) => forbidden("the Host header must name a loopback address"),
        _ => forbidden("a Host header naming a loopback address is required"),
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

fn generate(app: &App, client: &Client) -> Response {
    let outcome = app.keys.generate(&app.gate);
    let response = key_shown_once(app, Status::CREATED, "key.generate", outcome, client);
    systemd::status(&app.status_line());
    response
}

fn replace(app: &App, client: &Client) -> Response {
    let outcome = app.keys.replace(&app.gate);
    let response = key_shown_once(app, Status::OK, "key.replace", outcome, client);
    systemd::status(&app.status_line());
    response
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

/// `POST /reload`: re-read the certificate, as SIGHUP does.
fn reload(app: &App, client: &Client) -> Response {
    let trigger = format!("admin uid:{}", client.uid);
    match supervisor::reload(app, &trigger) {
        Ok(done) => {
            log::info!("audit action=reload client=uid:{} result=ok", client.uid);
            let body = json!({
                "certificate": done.cert.cert_path.display().to_string(),
                "sha256": done.cert.sha256,
                "changed": done.cert_changed,
                "snapshots": { "served": done.snapshots.served, "refused": done.snapshots.refused },
            });
            Response::json(Status::OK, body.to_string().into_bytes())
        }
        Err(e) => {
            log::info!("audit action=reload client=uid:{} result=refused", client.uid);
            let message = format!("{e}; the certificate in service is unchanged");
            error(Status::UNPROCESSABLE, "reload_refused", &message)
        }
    }
}

/// The response that shows a new key: its only appearance anywhere.
fn key_shown_once(
    app: &App,
    status: Status,
    action: &str,
    outcome: Result<Installed, ChangeError>,
    client: &Client,
) -> Response {
    let Installed { key, record, previous } = match outcome {
        Ok(installed) => installed,
        Err(e) => return change_failed(app, action, e, client),
    };
    let Some(stored) = record.key.as_ref() else {
        return error(Status::INTERNAL_SERVER_ERROR, "internal", "the new key was not recorded");
    };
    let previous = previous.as_ref().map_or("-", Fingerprint::as_str);
    log::info!(
        "audit action={action} client=uid:{} fingerprint={} previous={previous} generation={} \
         result=ok",
        client.uid,
        stored.fingerprint,
        record.generation
    );
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
    response
}

fn revoke(app: &App, client: &Client) -> Response {
    let action = "key.revoke";
    let outcome = app.keys.revoke(&app.gate);
    systemd::status(&app.status_line());
    match outcome {
        Ok(record) => {
            let fingerprint = record.key.as_ref().map(|k| k.fingerprint.as_str()).unwrap_or("-");
            log::info!(
                "audit action={action} client=uid:{} fingerprint={fingerprint} generation={} result=ok",
                client.uid,
                record.generation
            );
            Response::json(Status::OK, status_json(&record, true).into_bytes())
        }
        Err(e) => change_failed(app, action, e, client),
    }
}

/// Answers a change that did not happen (or happened only in memory). Its audit line has the
/// same fields as a successful one, naming the key and generation in force afterwards.
fn change_failed(app: &App, action: &str, e: ChangeError, client: &Client) -> Response {
    let uid = client.uid;
    let (record, _) = app.keys.status();
    let fingerprint = record.key.as_ref().map_or("-", |k| k.fingerprint.as_str());
    let generation = record.generation;
    let audit = format!(
        "audit action={action} client=uid:{uid} fingerprint={fingerprint} generation={generation}"
    );
    match e {
        ChangeError::Conflict(c) => {
            log::info!("{audit} result=conflict");
            error(Status::CONFLICT, "conflict", &c.to_string())
        }
        ChangeError::Random(e) => {
            log::error!("{audit} result=error cause=\"{e}\"");
            error(Status::INTERNAL_SERVER_ERROR, "random", &e.to_string())
        }
        ChangeError::Store(e) => {
            log::error!("{audit} result=error cause=\"{e}\"");
            let message = format!("nothing changed: {e}");
            error(Status::INTERNAL_SERVER_ERROR, "store_write", &message)
        }
        ChangeError::RevokedInMemoryOnly(e) => {
            log::error!(
                "{audit} result=memory-only cause=\"{e}\" note=\"the key is refused until \
                 restart; the store still holds it as active\""
            );
            let message = format!(
                "the key is refused from now on, but the store could not be updated ({e}): \
                 it would be accepted again after a restart; fix the cause and revoke again"
            );
            error(Status::INTERNAL_SERVER_ERROR, "store_write", &message)
        }
    }
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
