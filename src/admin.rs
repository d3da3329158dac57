//! The admin port's policy: who may use it, what each request means, and what it answered.
//!
//! The port ([`crate::server`]) only moves bytes and finds the caller's uid; everything else is
//! decided here. A caller whose uid is not allowed, a request it cannot parse, and anything
//! browser-shaped (an `Origin` or `Sec-Fetch-*` header, or a `Host` that is not a loopback name,
//! so no web page can drive this port) are refused through the same rate-limited refusal log
//! as the API port's refusals, each counted under its own status. The rest is routed once:
//! `/health`, `/key`, `/key/replace`, `/key/clients`, `/key/check` and `/key/record` (changes
//! go through [`crate::keys::KeyManager`], which keeps the order that makes them safe and writes
//! their audit lines), `/reload`,
//! `/metrics`, and the snapshot routes in `snapshots`. Every failure is an [`AdminError`], whose `status` and `code` are this port's
//! one mapping to what the client sees, and every change writes one [`crate::audit`] line.

mod snapshots;

use std::fmt;
use std::io::Read;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use serde_json::json;
use zeroize::Zeroizing;

use crate::app::{App, ReloadError};
use crate::audit;
use crate::http::{HeaderValue, Method, ParseError, Request, Response, Status};
use crate::keys::record::{self, RecordError};
use crate::keys::usage::MAX_CLIENTS;
use crate::keys::{Asked, ChangeError, Installed, KeyCheck};
use crate::keystore::{KeyRecord, rfc3339};
use crate::metrics::{AdminRoute, Reason};
use crate::peer::PeerError;
use crate::refusals::{Peer, Refused};
use crate::snapshot::history::HistoryError;
use crate::snapshot::render::RenderError;
use crate::snapshot::store::{DeleteError, ImportError, ServeError};
use crate::snapshot::{Date, ExportError};

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
        "/key/clients" => (AdminRoute::KeyClients, None),
        "/key/check" => (AdminRoute::KeyCheck, None),
        "/key/record" => (AdminRoute::KeyRecord, None),
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
    /// Every worker this uid may use is busy, and enough others wait already.
    Busy,
    /// The request's head or body (`what`) came slower than the port allows.
    TooSlow(&'static str),
    /// Anything a browser could send.
    BrowserShaped(&'static str),
    NotFound,
    MethodNotAllowed(&'static str),
    /// A request body that is not what the route takes.
    BadBody(String),
    /// A request body longer than the route takes.
    BodyTooLarge {
        limit: u64,
    },
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
    /// `GET /snapshots/<date>` for a date that is not served.
    NotServed(Date),
    /// A served snapshot could not be written back as a document (a bug, or a damaged piece).
    Export(Date, ExportError),
    /// The history store could not be read for a date.
    Read(ServeError),
    /// The history store's dates could not be sized for the listing.
    Sizes(HistoryError),
}

impl AdminError {
    pub fn status(&self) -> Status {
        match self {
            Self::UnknownUid(_) | Self::UidNotAllowed(_) | Self::BrowserShaped(_) => {
                Status::FORBIDDEN
            }
            Self::Malformed(e) => e.status(),
            Self::Busy => Status::SERVICE_UNAVAILABLE,
            Self::TooSlow(_) => Status::REQUEST_TIMEOUT,
            Self::NotFound | Self::Delete(_, DeleteError::NotFound) | Self::NotServed(_) => {
                Status::NOT_FOUND
            }
            Self::MethodNotAllowed(_) => Status::METHOD_NOT_ALLOWED,
            Self::BadBody(_)
            | Self::KeyChange(ChangeError::LifetimeTooLong { .. } | ChangeError::GraceTooLong(_)) => {
                Status::BAD_REQUEST
            }
            Self::KeyChange(ChangeError::Record(
                RecordError::Rollback { .. } | RecordError::Diverged { .. },
            )) => Status::CONFLICT,
            Self::KeyChange(ChangeError::Record(
                RecordError::Json { .. }
                | RecordError::Malformed(_)
                | RecordError::Inconsistent(_)
                | RecordError::CodeMismatch,
            )) => Status::UNPROCESSABLE,
            Self::BodyTooLarge { .. } => Status::PAYLOAD_TOO_LARGE,
            Self::KeyChange(ChangeError::Conflict(_)) => Status::CONFLICT,
            Self::KeyChange(
                ChangeError::Random(_)
                | ChangeError::Store(_)
                | ChangeError::RevokedInMemoryOnly(_),
            )
            | Self::KeyNotRecorded
            | Self::Export(..)
            | Self::Read(_)
            | Self::Sizes(_)
            | Self::Import(
                _,
                ImportError::History(_)
                | ImportError::Serve(_)
                | ImportError::Render(RenderError::Unresolved(_)),
            )
            | Self::Delete(_, DeleteError::History(_) | DeleteError::Write(_)) => {
                Status::INTERNAL_SERVER_ERROR
            }
            Self::Reload(_)
            | Self::Import(
                _,
                ImportError::Invalid(_) | ImportError::Render(RenderError::TooLarge(_)),
            ) => Status::UNPROCESSABLE,
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
            Self::Busy => "busy",
            Self::TooSlow(_) => "too_slow",
            Self::NotFound | Self::Delete(_, DeleteError::NotFound) | Self::NotServed(_) => {
                "not_found"
            }
            Self::MethodNotAllowed(_) => "method_not_allowed",
            Self::BadBody(_) => "invalid_body",
            Self::BodyTooLarge { .. } => "body_too_large",
            Self::KeyChange(ChangeError::LifetimeTooLong { .. }) => "lifetime_too_long",
            Self::KeyChange(ChangeError::GraceTooLong(_)) => "grace_too_long",
            Self::KeyChange(ChangeError::Conflict(_)) => "conflict",
            Self::KeyChange(ChangeError::Record(RecordError::Rollback { .. })) => "rollback",
            Self::KeyChange(ChangeError::Record(RecordError::Diverged { .. })) => "diverged",
            Self::KeyChange(ChangeError::Record(RecordError::CodeMismatch)) => {
                "activation_code_mismatch"
            }
            Self::KeyChange(ChangeError::Record(
                RecordError::Json { .. } | RecordError::Malformed(_) | RecordError::Inconsistent(_),
            )) => "invalid_record",
            Self::KeyChange(ChangeError::Random(_)) => "random",
            Self::KeyChange(ChangeError::Store(_) | ChangeError::RevokedInMemoryOnly(_)) => {
                "store_write"
            }
            Self::KeyNotRecorded | Self::Export(..) => "internal",
            Self::Reload(ReloadError::Config(_)) => "invalid_config",
            Self::Reload(_) => "reload_refused",
            Self::BadDate { .. } => "invalid_date",
            Self::Import(_, ImportError::Empty) => "empty_body",
            Self::Import(_, ImportError::Body(_)) => "body",
            Self::Import(_, ImportError::Invalid(_)) => "invalid_snapshot",
            Self::Import(_, ImportError::Render(RenderError::TooLarge(_))) => "snapshot_too_large",
            Self::Import(_, ImportError::Render(RenderError::Unresolved(_))) => "internal",
            Self::Import(_, ImportError::History(_) | ImportError::Serve(_))
            | Self::Read(_)
            | Self::Sizes(_)
            | Self::Delete(_, DeleteError::History(_) | DeleteError::Write(Io { .. })) => "storage",
            Self::Delete(_, DeleteError::Write(NotDurable { .. })) => "not_durable",
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
            Self::Busy => f.write_str(
                "every admin worker this uid may use is busy: try again in a moment (root is \
                 always served)",
            ),
            Self::TooSlow(what) => write!(
                f,
                "the request {what} arrived too slowly (admin.header_timeout_secs, then \
                 admin.min_bytes_per_sec on average): the connection is closed"
            ),
            Self::BrowserShaped(why) => f.write_str(why),
            Self::NotFound => f.write_str(
                "no such admin resource (there are /health, /key, /key/replace, /key/clients, \
                 /key/check, /key/record, /reload, /metrics, /snapshots)",
            ),
            Self::MethodNotAllowed(allow) => write!(f, "allowed methods: {allow}"),
            Self::BadBody(why) => f.write_str(why),
            Self::BodyTooLarge { limit } => {
                write!(f, "the request body is larger than this route takes ({limit} bytes)")
            }
            Self::KeyChange(e) => e.fmt(f),
            Self::KeyNotRecorded => f.write_str("the new key was not recorded"),
            Self::Reload(e) => e.fmt(f),
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
            Self::NotServed(date) => write!(
                f,
                "no snapshot for {date} is served: aims-api snapshot list shows the dates there are"
            ),
            Self::Export(date, e) => write!(f, "cannot export the snapshot of {date}: {e}"),
            Self::Read(e) => e.fmt(f),
            Self::Sizes(e) => write!(f, "cannot size the snapshot history: {e}"),
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

/// The answer to a Unix-socket caller whose credentials cannot be read. Fails closed.
pub fn refuse_unknown_unix_uid(app: &App, e: PeerError) -> Response {
    let response = refused(app, Peer::Everyone, AdminError::UnknownUid(e), Reason::AdminUid);
    app.metrics.admin().admin_request(AdminRoute::Refused, response.status.0);
    response
}

/// The answer to an allowed caller when no worker it may use is free (`503`); it may retry.
pub fn refuse_busy(app: &App, client: Client) -> Response {
    let response = refused(app, Peer::Uid(client.uid), AdminError::Busy, Reason::AdminBusy);
    app.metrics.admin().admin_request(AdminRoute::Refused, response.status.0);
    response.header("retry-after", "1").closing()
}

/// The answer to a request whose head or body (`what`) came too slowly (`408`).
pub fn refuse_slow(app: &App, client: Client, what: &'static str) -> Response {
    let response = refused(app, Peer::Uid(client.uid), AdminError::TooSlow(what), Reason::TooSlow);
    app.metrics.admin().admin_request(AdminRoute::Refused, response.status.0);
    response.closing()
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
        (AdminRoute::KeyCheck, _) if method == Method::Post => check_key(app, request, body),
        (AdminRoute::Snapshots, Some(date)) => {
            snapshots::one(app, date, method, request.query, request.content_length, body, client)
        }
        (AdminRoute::Health, _) if read => {
            let body = json!({ "status": "ok", "uid_lookup": app.uid_lookup.method().label() });
            Ok(Response::json(Status::OK, body.to_string().into_bytes()))
        }
        (AdminRoute::Metrics, _) if read => Ok(metrics(app)),
        (AdminRoute::Snapshots, _) if read => snapshots::list(app),
        (AdminRoute::Health | AdminRoute::Metrics | AdminRoute::Snapshots, _) => {
            Err(AdminError::MethodNotAllowed("GET, HEAD"))
        }
        (AdminRoute::Key, _) if read => Ok(key_status(app)),
        (AdminRoute::Key, _) if method == Method::Post => generate(app, request, body, client),
        (AdminRoute::Key, _) if method == Method::Delete => revoke(app, client),
        (AdminRoute::Key, _) => Err(AdminError::MethodNotAllowed("GET, HEAD, POST, DELETE")),
        (AdminRoute::KeyReplace, _) if method == Method::Post => {
            replace(app, request, body, client)
        }
        (AdminRoute::KeyReplace | AdminRoute::KeyCheck, _) => {
            Err(AdminError::MethodNotAllowed("POST"))
        }
        (AdminRoute::KeyClients, _) if read => Ok(key_clients(app)),
        (AdminRoute::KeyRecord, _) if read => Ok(key_record(app)),
        (AdminRoute::KeyRecord, _) if method == Method::Put => {
            install_record(app, request, body, client)
        }
        (AdminRoute::KeyRecord, _) => Err(AdminError::MethodNotAllowed("GET, HEAD, PUT")),
        (AdminRoute::KeyClients, _) => Err(AdminError::MethodNotAllowed("GET, HEAD")),
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
    Response::json(Status::OK, status_json(app, &record, persisted).into_bytes())
}

/// How a key has been used, as `GET /key` shows it.
#[derive(Serialize)]
struct Use {
    last_used_at: Option<String>,
    last_used_from: Option<String>,
    admitted: u64,
}

impl Use {
    fn of(app: &App, generation: u64) -> Self {
        let usage = app.keys.usage_of(generation);
        Self {
            last_used_at: usage.last_used.map(|(at, _)| rfc3339(at)),
            last_used_from: usage.last_used.map(|(_, from)| from.to_string()),
            admitted: usage.admitted,
        }
    }
}

/// The key's state as `GET /key` and `DELETE /key` show it, fields in this order.
#[derive(Serialize)]
struct KeyStatus<'r> {
    state: &'static str,
    fingerprint: Option<&'r str>,
    created_at: Option<String>,
    revoked_at: Option<String>,
    expires_at: Option<String>,
    generation: u64,
    /// False while a revoke is in force in memory but not yet in the store.
    persisted: bool,
    #[serde(flatten)]
    usage: Use,
    /// The replaced key while its grace lasts.
    previous: Option<PreviousStatus<'r>>,
    /// The key seen in clear text (until it is replaced).
    exposed: Option<serde_json::Value>,
}

#[derive(Serialize)]
struct PreviousStatus<'r> {
    fingerprint: &'r str,
    generation: u64,
    valid_until: String,
    #[serde(flatten)]
    usage: Use,
}

fn status_json(app: &App, record: &KeyRecord, persisted: bool) -> String {
    let key = record.key.as_ref();
    let previous = record.grace_at(SystemTime::now()).map(|g| PreviousStatus {
        fingerprint: g.fingerprint.as_str(),
        generation: g.generation,
        valid_until: rfc3339(g.valid_until),
        usage: Use::of(app, g.generation),
    });
    let exposed = app.keys.exposure().map(
        |e| json!({ "at": rfc3339(e.at), "from": e.from.to_string(), "generation": e.generation }),
    );
    let status = KeyStatus {
        state: record.state().as_str(),
        fingerprint: key.map(|k| k.fingerprint.as_str()),
        created_at: key.map(|k| rfc3339(k.created_at)),
        revoked_at: key.and_then(|k| k.revoked_at).map(rfc3339),
        expires_at: key.and_then(|k| k.expires_at).map(rfc3339),
        generation: record.generation,
        persisted,
        usage: key.map_or(Use { last_used_at: None, last_used_from: None, admitted: 0 }, |k| {
            Use::of(app, k.generation)
        }),
        previous,
        exposed,
    };
    serde_json::to_string(&status).unwrap_or_default()
}

/// `GET /key/clients`: the addresses that used the current key, most recent first.
fn key_clients(app: &App) -> Response {
    let record = app.keys.record();
    let usage = record.key.as_ref().map(|k| (k, app.keys.usage_of(k.generation)));
    let clients: Vec<serde_json::Value> = usage
        .as_ref()
        .map(|(_, usage)| usage.clients())
        .unwrap_or_default()
        .into_iter()
        .map(|c| {
            json!({
                "address": c.address.to_string(),
                "first_seen": rfc3339(c.first_seen),
                "last_seen": rfc3339(c.last_seen),
                "admitted": c.admitted,
            })
        })
        .collect();
    let body = json!({
        "fingerprint": usage.as_ref().map(|(k, _)| k.fingerprint.as_str()),
        "generation": usage.as_ref().map(|(k, _)| k.generation),
        "clients": clients,
        "limit": MAX_CLIENTS,
        "dropped": usage.as_ref().map_or(0, |(_, u)| u.dropped),
        "note": format!(
            "at most {MAX_CLIENTS} addresses are kept, the least recently seen dropped first; \
             usage is saved once a minute, so a crash loses at most the last minute"
        ),
    });
    Response::json(Status::OK, body.to_string().into_bytes())
}

/// The longest body of `POST /key`, `/key/replace` and `/key/check`.
const MAX_SMALL_BODY: u64 = 4096;

/// Reads a small request body whole, into a buffer wiped on drop (it may hold a key).
fn read_small_body(
    request: &Request<'_>,
    body: &mut dyn Read,
) -> Result<Zeroizing<Vec<u8>>, AdminError> {
    if request.content_length > MAX_SMALL_BODY {
        return Err(AdminError::BodyTooLarge { limit: MAX_SMALL_BODY });
    }
    // Sized once: a buffer that grew would leave a copy of a key in the memory it gave back.
    let mut bytes = Zeroizing::new(vec![0u8; request.content_length as usize]);
    body.read_exact(&mut bytes)
        .map_err(|e| AdminError::BadBody(format!("the request body could not be read: {e}")))?;
    Ok(bytes)
}

/// The optional JSON body of `POST /key` and `POST /key/replace`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TermsBody {
    #[serde(default)]
    grace_secs: Option<u64>,
    #[serde(default)]
    expires_in_secs: Option<u64>,
}

/// What the operator asked of a new key. `replace` says whether a grace may be asked for.
fn asked(request: &Request<'_>, body: &mut dyn Read, replace: bool) -> Result<Asked, AdminError> {
    let bytes = read_small_body(request, body)?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Asked::default());
    }
    let terms: TermsBody = serde_json::from_slice(&bytes).map_err(|e| {
        let fields = if replace { "grace_secs, expires_in_secs" } else { "expires_in_secs" };
        AdminError::BadBody(format!(
            "the body must be a JSON object with the optional fields {fields}: {e}"
        ))
    })?;
    if terms.grace_secs.is_some() && !replace {
        return Err(AdminError::BadBody(
            "grace_secs is for POST /key/replace: a new key has no previous key to keep valid"
                .to_owned(),
        ));
    }
    if terms.expires_in_secs == Some(0) {
        return Err(AdminError::BadBody("expires_in_secs must be at least 1".to_owned()));
    }
    Ok(Asked {
        expires_in: terms.expires_in_secs.map(Duration::from_secs),
        grace: Duration::from_secs(terms.grace_secs.unwrap_or(0)),
    })
}

fn generate(
    app: &App,
    request: &Request<'_>,
    body: &mut dyn Read,
    client: Client,
) -> Result<Response, AdminError> {
    let asked = asked(request, body, false)?;
    let outcome = app.keys.generate(asked, Peer::Uid(client.uid));
    key_shown_once(Status::CREATED, outcome)
}

fn replace(
    app: &App,
    request: &Request<'_>,
    body: &mut dyn Read,
    client: Client,
) -> Result<Response, AdminError> {
    let asked = asked(request, body, true)?;
    let outcome = app.keys.replace(asked, Peer::Uid(client.uid));
    key_shown_once(Status::OK, outcome)
}

fn revoke(app: &App, client: Client) -> Result<Response, AdminError> {
    let record = app.keys.revoke(Peer::Uid(client.uid)).map_err(AdminError::KeyChange)?;
    Ok(Response::json(Status::OK, status_json(app, &record, true).into_bytes()))
}

/// The longest body of `PUT /key/record`: a record holds at most 18 keys' hashes and times.
const MAX_RECORD_BODY: u64 = 64 * 1024;

/// `GET /key/record`: the key's state for the other appliance of a pair, without the key.
fn key_record(app: &App) -> Response {
    Response::json(Status::OK, app.keys.export_record().into_bytes())
}

/// `PUT /key/record`: installs a record exported by the other appliance of a pair.
fn install_record(
    app: &App,
    request: &Request<'_>,
    body: &mut dyn Read,
    client: Client,
) -> Result<Response, AdminError> {
    if request.content_length > MAX_RECORD_BODY {
        return Err(AdminError::BodyTooLarge { limit: MAX_RECORD_BODY });
    }
    let mut bytes = vec![0u8; request.content_length as usize];
    body.read_exact(&mut bytes)
        .map_err(|e| AdminError::BadBody(format!("the request body could not be read: {e}")))?;
    let by = Peer::Uid(client.uid);
    let offered = match record::parse(&bytes) {
        Ok(offered) => offered,
        Err(e) => {
            let (in_force, _) = app.keys.status();
            let cause = ChangeError::Record(e);
            let outcome = audit::InstallOutcome::Not(audit::KeyOutcome::Refused(&cause));
            audit::key_install(by, in_force.generation, &in_force, outcome).emit();
            return Err(AdminError::KeyChange(cause));
        }
    };
    let (installed, how) = app.keys.install_record(offered, by).map_err(AdminError::KeyChange)?;
    let body = json!({
        "result": how.as_str(),
        "generation": installed.generation,
        "fingerprint": installed.key.as_ref().map(|k| k.fingerprint.as_str()),
        "state": installed.state().as_str(),
    });
    Ok(Response::json(Status::OK, body.to_string().into_bytes()))
}

/// `POST /key/check`: what a key (the body) is to this server. The answer names the key by its
/// fingerprint only, never the key or its hash.
fn check_key(
    app: &App,
    request: &Request<'_>,
    body: &mut dyn Read,
) -> Result<Response, AdminError> {
    let bytes = read_small_body(request, body)?;
    let presented = bytes.trim_ascii();
    let answer = match app.keys.check_key(presented) {
        KeyCheck::Malformed(e) => json!({ "status": "malformed", "reason": e.as_str() }),
        KeyCheck::Live { fingerprint, generation, expires_at } => json!({
            "status": "live",
            "fingerprint": fingerprint.as_str(),
            "generation": generation,
            "expires_at": expires_at.map(rfc3339),
        }),
        KeyCheck::Grace { fingerprint, generation, valid_until } => json!({
            "status": "grace",
            "fingerprint": fingerprint.as_str(),
            "generation": generation,
            "valid_until": rfc3339(valid_until),
        }),
        KeyCheck::Retired(retired) => json!({
            "status": "retired",
            "fingerprint": retired.fingerprint.as_str(),
            "generation": retired.generation,
            "how": retired.how.as_str(),
            "retired_at": rfc3339(retired.retired_at),
        }),
        KeyCheck::Unknown { fingerprint } => {
            json!({ "status": "unknown", "fingerprint": fingerprint.as_str() })
        }
    };
    Ok(Response::json(Status::OK, answer.to_string().into_bytes()))
}

/// `GET /metrics`: Prometheus text format, the same as the scrape port's.
fn metrics(app: &App) -> Response {
    crate::scrape::exposition(app)
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
                "snapshots": {
                    "served": done.snapshots.served,
                    "imported": done.snapshots.imported,
                    "refused": done.snapshots.refused,
                },
                "config": {
                    "path": app.config.path.display().to_string(),
                    "applied": fields(&done.config_changes, true),
                    "needs_restart": fields(&done.config_changes, false),
                    "log_level_overridden_by_rust_log": done.log_level_overridden,
                },
            });
            Ok(Response::json(Status::OK, body.to_string().into_bytes()))
        }
        Err(e) => {
            audit::reload(client.uid, Some(&e)).emit();
            Err(AdminError::Reload(e))
        }
    }
}

/// The changed config fields a reload applied (`live`) or left for the next restart.
fn fields(changes: &[crate::config::Change], live: bool) -> Vec<&'static str> {
    changes.iter().filter(|c| c.live == live).map(|c| c.field).collect()
}

/// The response that shows a new key: its only appearance anywhere.
fn key_shown_once(
    status: Status,
    outcome: Result<Installed, ChangeError>,
) -> Result<Response, AdminError> {
    let Installed { key, record, previous: _ } = outcome.map_err(AdminError::KeyChange)?;
    let Some(stored) = record.key.as_ref() else {
        return Err(AdminError::KeyNotRecorded);
    };
    // Built by hand rather than through serde_json so that the only copies of the key are
    // this body and the ApiKey, both wiped on drop. Every part is plain ASCII without quotes.
    // The buffer is sized once, up front: a buffer that grew would leave the key behind in
    // the memory it gave back, unwiped.
    let created_at = rfc3339(stored.created_at);
    let generation = record.generation.to_string();
    // JSON values made of ASCII without quotes or backslashes (timestamps, fingerprints).
    let quoted = |text: String| format!("\"{text}\"");
    let expires_at = stored.expires_at.map(rfc3339).map_or("null".to_owned(), quoted);
    let grace = record.grace_at(SystemTime::now()).map_or("null".to_owned(), |g| {
        format!(
            "{{\"fingerprint\":\"{}\",\"generation\":{},\"valid_until\":\"{}\"}}",
            g.fingerprint,
            g.generation,
            rfc3339(g.valid_until)
        )
    });
    let parts: [&[u8]; 13] = [
        b"{\"api_key\":\"",
        key.expose().as_bytes(),
        b"\",\"fingerprint\":\"",
        stored.fingerprint.as_str().as_bytes(),
        b"\",\"created_at\":\"",
        created_at.as_bytes(),
        b"\",\"expires_at\":",
        expires_at.as_bytes(),
        b",\"generation\":",
        generation.as_bytes(),
        b",\"previous\":",
        grace.as_bytes(),
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
