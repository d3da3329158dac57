//! The API port's policy, and the AI Mentor Studio API, version 1, behind the gate.
//!
//! The port ([`crate::server`]) only moves bytes: it hands every parsed request to [`handle`],
//! and every request it cannot parse, or plain HTTP, to [`refuse_malformed`] and
//! [`refuse_plain_http`]. What a request means is decided here: the credentials (the gate, in
//! [`crate::keys`]), failed-auth throttling, the refusal log, the counters, and the answer.
//!
//! Only requests with valid credentials are routed. [`answer`] finds the method under
//! either base path (`/ArchitectureDashboardAPI/rest/V1`, the documented one, and
//! `/AIMentorStudioAPI/rest/v1`, the official client's), ignoring letter case and one trailing
//! slash; only `GET` and `HEAD` are served. Every answer comes from one date taken at the start
//! of the request ([`crate::snapshot::serve::Dated`]), so an import that lands meanwhile cannot
//! mix two snapshots in one answer.
//!
//! The store is asked through [`Source`] alone, in a [`Mode`]: [`answer_in`] with
//! [`Mode::MemoryOnly`] answers from the bytes in memory or says [`Answer::Cold`] at once (an
//! older date, or pieces of one, not in memory), never reading a disk, decompressing, or waiting
//! on a lock held across either; with [`Mode::Blocking`] it reads what it needs. The workers
//! ask in the blocking mode today; a worker that must never wait can ask from memory and hand
//! a cold request to a thread that may. Bodies are pre-rendered by [`crate::snapshot`]: the Level, Category, Team and
//! LastAnalysisDate answers are shared bytes, an application page is a concatenation. Each has
//! a gzip form made at load too, chosen by the request's `Accept-Encoding`
//! ([`crate::http::encoding`]); what has none (one team, one module, an error) is compressed
//! per request when it is large enough to be worth it.
//!
//! Errors are the API's `Exception` body, `{"Errors":["…"],"StatusCode":N}`, which the
//! official clients parse on every non-200 answer; `ApiError` is the one place that decides
//! each status. The behaviours the documentation leaves open (pagination edges, combined
//! filters, unknown parameters, ordering) are decided in the README ("How the API behaves
//! where the documentation is silent") and in the Swagger document at `<base>/swagger.json`.

mod applications;
// Public only for the fuzz target `query_parse` (the network reaches this parser); not an API.
#[doc(hidden)]
pub mod query;
mod swagger;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use serde_json::json;

use crate::app::App;
use crate::config::OnKeyExposure;
use crate::http::encoding::{self, Coding};
use crate::http::{Method, ParseError, Request, Response, Status};
use crate::key::Fingerprint;
use crate::keys::{self, Admitted, Refusal};
use crate::metrics::{ApiRoute, Reason, Shard};
use crate::refusals::{Kind, Peer, Refused};
use crate::snapshot::{Date, Mode, Pinned, ServeError, Snapshots, Whole};
use crate::throttle::Verdict;
use query::{Param, Query, QueryError};

/// The base paths, canonical spelling. Index 0 is the documented one.
pub const BASES: [&str; 2] = ["/ArchitectureDashboardAPI/rest/V1", "/AIMentorStudioAPI/rest/v1"];

/// The methods served under each base.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Application,
    Category,
    LastAnalysisDate,
    Level,
    Team,
    Swagger,
}

const ENDPOINTS: [(&str, Endpoint); 6] = [
    ("/TechnicalDebt_Application", Endpoint::Application),
    ("/TechnicalDebt_Category", Endpoint::Category),
    ("/TechnicalDebt_LastAnalysisDate", Endpoint::LastAnalysisDate),
    ("/TechnicalDebt_Level", Endpoint::Level),
    ("/TechnicalDebt_Team", Endpoint::Team),
    ("/swagger.json", Endpoint::Swagger),
];

impl Endpoint {
    /// The `route` label of the metrics.
    fn metrics_route(self) -> ApiRoute {
        match self {
            Self::Application => ApiRoute::Application,
            Self::Category => ApiRoute::Category,
            Self::LastAnalysisDate => ApiRoute::LastAnalysisDate,
            Self::Level => ApiRoute::Level,
            Self::Team => ApiRoute::Team,
            Self::Swagger => ApiRoute::Swagger,
        }
    }
}

/// What plain HTTP on the HTTPS port is told, in the clear, before the connection closes.
const PLAIN_HTTP_MESSAGE: &str = "this port speaks HTTPS only: send the request with https://";

/// What became of a request: answered from memory, or waiting for the store.
pub enum Handled {
    Now(Response),
    /// Admitted, but its answer needs what is not in memory (an older date read from the
    /// store): the port parks the connection and runs [`Deferred::answer`] on a blocking
    /// thread, so its worker goes on serving everyone else.
    Later(Deferred),
}

/// Answers one request on the API port: gate, then route; counted in `shard`. A refused request
/// is counted against its address, and past the limit answered 429 instead (see
/// [`crate::throttle`]); valid credentials are never throttled. Only memory is read here: this
/// runs on an API worker (`worker`), which must never wait for a disk.
pub fn handle(
    app: &Arc<App>,
    shard: &Shard,
    worker: usize,
    request: &Request<'_>,
    peer: SocketAddr,
) -> Handled {
    let started = Instant::now();
    if let Err(refusal) = app.keys.check(worker, request, peer.ip()) {
        let response = vary(refuse(app, shard, request, peer, refusal));
        let label = ApiRoute::Refused;
        return Handled::Now(count(shard, response, label, started, peer, request.path));
    }
    let asked = Asked::from(request);
    match route(Source { snapshots: &app.snapshots, mode: Mode::MemoryOnly }, &asked) {
        (Answer::Ready(response), label) => {
            Handled::Now(count(shard, response, label, started, peer, request.path))
        }
        (Answer::Cold, _) => Handled::Later(Deferred {
            app: Arc::clone(app),
            asked: asked.to_owned(),
            started,
            peer,
        }),
    }
}

/// Counts an answer in `shard` (and logs a 500, which is the operator's to look into).
fn count(
    shard: &Shard,
    response: Response,
    label: ApiRoute,
    started: Instant,
    peer: SocketAddr,
    path: &str,
) -> Response {
    if response.status == Status::INTERNAL_SERVER_ERROR {
        log::error!("api answered 500 to {} {path}", peer.ip());
    }
    shard.api_request(label, response.status.0, started.elapsed());
    response
}

/// An admitted request waiting for the store. It holds what routing needs (method, path,
/// query, content coding) and nothing of the credentials, which stay in the connection's
/// buffer and are wiped with it.
pub struct Deferred {
    app: Arc<App>,
    asked: OwnedAsked,
    started: Instant,
    peer: SocketAddr,
}

impl Deferred {
    /// Answers the request, reading the store as needed. Blocks: for the port's blocking
    /// threads, never an API worker.
    pub fn answer(self) -> Finished {
        let Self { app, asked: owned, started, peer } = self;
        let asked = owned.borrowed();
        // A panic here would be a bug; it must not leave the client waiting for an answer
        // that never comes, nor take the blocking thread with it.
        let routed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            route(Source { snapshots: &app.snapshots, mode: Mode::Blocking }, &asked)
        }));
        let (response, label) = match routed {
            Ok((Answer::Ready(response), label)) => (response, label),
            // A blocking question never comes back cold: one that did is a bug, answered as
            // one.
            Ok((Answer::Cold, label)) => {
                log::error!("api: a blocking read for {} came back cold (a bug)", asked.path);
                (failed(), label)
            }
            Err(_) => {
                log::error!("api: answering {} panicked (a bug)", asked.path);
                (failed(), ApiRoute::Other)
            }
        };
        Finished { response, label, started, peer, path: owned.path }
    }

    /// The answer when no blocking thread can take the request now: a 503 the client may
    /// retry after a second (the port's queue of cold reads is full).
    pub fn overloaded(self, shard: &Shard) -> Response {
        let message = "the server is busy reading older dates from its store: retry in a second";
        let response =
            vary(error(Status::SERVICE_UNAVAILABLE, message)).header("retry-after", "1".to_owned());
        count(shard, response, ApiRoute::Other, self.started, self.peer, &self.asked.path)
    }
}

/// The 500 for an answer that failed where it cannot (the log says why).
fn failed() -> Response {
    vary(error(Status::INTERNAL_SERVER_ERROR, &ApiError::Unavailable(None).to_string()))
}

/// A deferred request's answer, to be counted and sent by the worker that owns its connection.
pub struct Finished {
    response: Response,
    label: ApiRoute,
    started: Instant,
    peer: SocketAddr,
    path: String,
}

impl Finished {
    /// Counts the answer in the worker's `shard` and gives it back to be sent.
    pub fn into_response(self, shard: &Shard) -> Response {
        count(shard, self.response, self.label, self.started, self.peer, &self.path)
    }
}

/// The answer to a request the HTTP layer refused (malformed, oversized, unsupported). The
/// connection closes after it.
pub fn refuse_malformed(app: &App, shard: &Shard, peer: SocketAddr, e: ParseError) -> Response {
    let status = e.status();
    note_refusal(app, shard, peer, Reason::BadRequest, e.code(), status.0, None);
    shard.api_request(ApiRoute::Invalid, status.0, std::time::Duration::ZERO);
    vary(error(status, &e.to_string())).closing()
}

/// A new connection from an address that already holds `api.max_connections_per_address`: it
/// is closed at once, unanswered (nothing was read yet), and logged and counted like a refusal.
pub fn refuse_connection(app: &App, shard: &Shard, peer: SocketAddr) {
    let reason = "too many connections from this address (api.max_connections_per_address)";
    // Status 0: no answer, the connection is closed before a byte is read.
    note_refusal(app, shard, peer, Reason::ConnectionCap, reason, 0, None);
}

/// The answer to plain HTTP on the HTTPS port, sent in the clear before the connection closes.
/// `head` is what the client sent (bounded, read briefly): nothing of it is parsed as a request
/// or reaches a handler, but if it carries the live or grace key, that key has crossed the
/// network in clear text, and the tripwire goes off (see [`key_exposed`]).
pub fn refuse_plain_http(app: &App, shard: &Shard, peer: SocketAddr, head: &[u8]) -> Response {
    let status = Status::BAD_REQUEST;
    note_refusal(
        app,
        shard,
        peer,
        Reason::PlainHttp,
        "plain HTTP on the HTTPS port",
        status.0,
        None,
    );
    shard.api_request(ApiRoute::Invalid, status.0, std::time::Duration::ZERO);
    let revoke = app.config.on_key_exposure == OnKeyExposure::Revoke;
    for presented in presented_keys(head) {
        if let Some((admitted, fingerprint)) = app.keys.note_exposure(presented, peer.ip(), revoke)
        {
            key_exposed(app, admitted, &fingerprint, peer);
            break;
        }
    }
    vary(error(status, PLAIN_HTTP_MESSAGE)).closing()
}

/// `Vary: Accept-Encoding` on an answer that did not go through [`encoding::encode`] (which
/// adds it): every answer of this API says it, as the README promises, refusals included.
fn vary(response: Response) -> Response {
    response.header("vary", "accept-encoding")
}

/// The values of the `x-api-key` lines of a plain-HTTP head, read leniently (a head that is not
/// well-formed HTTP may still carry a key), at most a few.
fn presented_keys(head: &[u8]) -> impl Iterator<Item = &[u8]> {
    head.split(|&b| b == b'\n')
        .filter_map(|line| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let colon = line.iter().position(|&b| b == b':')?;
            let (name, value) = line.split_at(colon);
            name.trim_ascii()
                .eq_ignore_ascii_case(keys::KEY_HEADER.as_bytes())
                .then(|| value[1..].trim_ascii())
        })
        .take(4)
}

/// The live (or grace) key arrived in clear text: say so loudly. With `on_key_exposure:
/// revoke` the key manager has already refused it from this instant on, and writes the revoke
/// (with its audit line) on its own thread: this worker never waits for the disk.
fn key_exposed(app: &App, admitted: Admitted, fingerprint: &Fingerprint, peer: SocketAddr) {
    let which = match admitted {
        Admitted::Current(_) => "the live key",
        Admitted::Grace(_) => "the previous key (still in its grace window)",
    };
    let revoke = app.config.on_key_exposure == OnKeyExposure::Revoke;
    // Within its own budget: a client replaying the live key over plain HTTP must not be able
    // to flood the log (every exposure is counted, in aims_key_exposures_total too).
    if app.refusals.may_log(Kind::Exposure) {
        log::error!(
            "key exposure: {which} {fingerprint} (generation {}) arrived over plain HTTP from {}: it \
         crossed the network in clear text{}; fix that client to use https://",
            admitted.generation(),
            peer.ip(),
            if revoke {
                ", so it is revoked now (on_key_exposure: revoke): generate a new key"
            } else {
                ": replace it (aims-api key replace)"
            },
        );
    }
}

fn refuse(
    app: &App,
    shard: &Shard,
    request: &Request<'_>,
    peer: SocketAddr,
    refusal: Refusal,
) -> Response {
    let response = match app.throttle.refused(peer.ip(), Instant::now()) {
        Verdict::Refuse => challenged(error(refusal.status(), &refusal.client_message())),
        Verdict::Throttle { retry_after_secs } => {
            shard.refusal(Reason::Throttled);
            throttled(retry_after_secs)
        }
    };
    // A retired key is named, so the operator finds the clients that were never updated.
    let retired = match refusal {
        Refusal::RetiredKey { generation } => app.keys.describe_retired(generation),
        _ => None,
    };
    let reason = match &retired {
        Some(which) => format!("retired key {which}"),
        None => refusal.reason().to_owned(),
    };
    let fingerprint = keys::presented_fingerprint(request);
    note_refusal(app, shard, peer, Reason::from(refusal), &reason, response.status.0, fingerprint);
    response
}

/// Logs a refusal on this port (within the refusal log's budget; every one is in its burst's
/// audit line) and counts it under `why`.
fn note_refusal(
    app: &App,
    shard: &Shard,
    peer: SocketAddr,
    why: Reason,
    reason: &str,
    status: u16,
    fingerprint: Option<Fingerprint>,
) {
    let peer = Peer::Address(peer.ip());
    app.refusals.refused(Refused { port: "api", peer, reason, status, fingerprint });
    shard.refusal(why);
}

/// A 401 says how to authenticate (RFC 9110 §11.6.1 requires `WWW-Authenticate` on it):
/// the scheme is this API's own, its key in the `x-api-key` header.
fn challenged(response: Response) -> Response {
    if response.status == Status::UNAUTHORIZED {
        response.header("www-authenticate", WWW_AUTHENTICATE)
    } else {
        response
    }
}

/// The challenge of every 401.
const WWW_AUTHENTICATE: &str = "ApiKey header=\"x-api-key\"";

/// The 429 for a throttled address. It closes the connection, so each further guess costs the
/// guesser a TLS handshake too.
fn throttled(retry_after_secs: u64) -> Response {
    let message = format!(
        "too many refused requests from this address: retry after {retry_after_secs} seconds \
         (requests with a valid API key and activation code are not affected)"
    );
    error(Status::TOO_MANY_REQUESTS, &message)
        .header("retry-after", retry_after_secs.to_string())
        .closing()
}

/// The store, as the handlers ask it: every question in one mode.
#[derive(Clone, Copy)]
pub struct Source<'a> {
    pub snapshots: &'a Snapshots,
    pub mode: Mode,
}

/// An authenticated request's answer, or, asked from memory only, that it needs the store.
pub enum Answer {
    Ready(Response),
    /// Not in memory: ask again with [`Mode::Blocking`] on a thread that may wait.
    Cold,
}

/// Answers an authenticated `request` from `snapshots`, reading the store if it must. Public so
/// benchmarks and tests reach it without a server.
pub fn answer(snapshots: &Snapshots, request: &Request<'_>) -> Response {
    match answer_in(Source { snapshots, mode: Mode::Blocking }, request) {
        Answer::Ready(response) => response,
        Answer::Cold => failed(),
    }
}

/// Answers an authenticated `request` in `source`'s mode.
pub fn answer_in(source: Source<'_>, request: &Request<'_>) -> Answer {
    route(source, &Asked::from(request)).0
}

/// What routing reads of a request: nothing of its credentials.
struct Asked<'r> {
    method: Method,
    path: &'r str,
    query: Option<&'r str>,
    coding: Coding,
}

impl<'r> From<&Request<'r>> for Asked<'r> {
    fn from(request: &Request<'r>) -> Self {
        let coding = Coding::accepted_by(request);
        Self { method: request.method, path: request.path, query: request.query, coding }
    }
}

impl Asked<'_> {
    fn to_owned(&self) -> OwnedAsked {
        OwnedAsked {
            method: self.method,
            path: self.path.to_owned(),
            query: self.query.map(str::to_owned),
            coding: self.coding,
        }
    }
}

/// [`Asked`], kept while the request waits for a blocking thread.
struct OwnedAsked {
    method: Method,
    path: String,
    query: Option<String>,
    coding: Coding,
}

impl OwnedAsked {
    fn borrowed(&self) -> Asked<'_> {
        Asked {
            method: self.method,
            path: &self.path,
            query: self.query.as_deref(),
            coding: self.coding,
        }
    }
}

/// Resolves the method once, and answers it in the content coding the request accepts: the
/// answer and its `route` label.
fn route(source: Source<'_>, asked: &Asked<'_>) -> (Answer, ApiRoute) {
    let (response, label) = match resolve(asked.path) {
        Some((base, endpoint)) => match answer_endpoint(source, asked, base, endpoint) {
            Some(response) => (response, endpoint.metrics_route()),
            None => return (Answer::Cold, endpoint.metrics_route()),
        },
        None => (no_such_method(asked.path), ApiRoute::Other),
    };
    (Answer::Ready(encoding::encode(response, asked.coding)), label)
}

fn no_such_method(path: &str) -> Response {
    error(
        Status::NOT_FOUND,
        &format!("no API method at {path}; the methods are listed in {}/swagger.json", BASES[0]),
    )
}

/// The answer, or `None` when it is cold (see [`Answer::Cold`]).
fn answer_endpoint(
    source: Source<'_>,
    asked: &Asked<'_>,
    base: usize,
    endpoint: Endpoint,
) -> Option<Response> {
    let (query, coding) = (asked.query, asked.coding);
    if !matches!(asked.method, Method::Get | Method::Head) {
        return Some(
            error(Status::METHOD_NOT_ALLOWED, "this API answers only GET and HEAD")
                .header("allow", "GET, HEAD"),
        );
    }
    let snapshots = source.snapshots;
    let outcome = match endpoint {
        Endpoint::Application => applications::answer(source, query, coding),
        Endpoint::Category => shared(snapshots, query, Whole::Categories, coding),
        Endpoint::LastAnalysisDate => shared(snapshots, query, Whole::LastAnalysisDate, coding),
        Endpoint::Level => shared(snapshots, query, Whole::Levels, coding),
        Endpoint::Team => teams(snapshots, query, coding),
        Endpoint::Swagger => Query::parse(query, query::NONE)
            .map(|_| swagger::response(base, coding))
            .map_err(Into::into),
    };
    match outcome {
        Ok(response) => Some(response),
        Err(ApiError::Cold) => None,
        Err(e) => Some(error(e.status(), &e.to_string())),
    }
}

/// The base (index into [`BASES`]) and method that `path` names, if any.
fn resolve(path: &str) -> Option<(usize, Endpoint)> {
    let path = path.strip_suffix('/').unwrap_or(path);
    BASES.iter().enumerate().find_map(|(b, base)| {
        let head = path.get(..base.len())?;
        let rest = path.get(base.len()..)?;
        if !head.eq_ignore_ascii_case(base) {
            return None;
        }
        ENDPOINTS.iter().find(|(name, _)| rest.eq_ignore_ascii_case(name)).map(|&(_, e)| (b, e))
    })
}

/// A method without parameters whose answer is pre-rendered whole: the newest date's, always
/// in memory.
fn shared(
    snapshots: &Snapshots,
    raw_query: Option<&str>,
    answer: Whole,
    coding: Coding,
) -> Result<Response, ApiError> {
    Query::parse(raw_query, query::NONE)?;
    let newest = snapshots.newest().ok_or(ApiError::NoData)?;
    Ok(whole(&newest, answer, coding))
}

/// An answer rendered whole, in the coding chosen for it: both forms are shared bytes.
fn whole(snapshot: &Pinned, answer: Whole, coding: Coding) -> Response {
    let plain = snapshot.whole(answer);
    match coding.for_body(plain.len()) {
        Coding::Gzip => encoding::gzipped(Response::shared_json(
            Status::OK,
            Arc::clone(snapshot.whole_gzip(answer)),
        )),
        Coding::Identity => Response::shared_json(Status::OK, Arc::clone(plain)),
    }
}

/// `/TechnicalDebt_Team`: all teams, or the one whose `ExternalId` is `Team` (none is an empty
/// list, not a 404: the documentation lists no 404 for this method).
fn teams(
    snapshots: &Snapshots,
    raw_query: Option<&str>,
    coding: Coding,
) -> Result<Response, ApiError> {
    let query = Query::parse(raw_query, query::TEAM)?;
    let snapshot = snapshots.newest().ok_or(ApiError::NoData)?;
    let Some(external_id) = query.text(Param::Team) else {
        return Ok(whole(&snapshot, Whole::Teams, coding));
    };
    let team = snapshot.team(external_id).unwrap_or_default();
    let infra = snapshot.infrastructure();
    let mut body = Vec::with_capacity(team.len() + infra.len() + 40);
    body.extend_from_slice(b"{\"InfrastructureInfo\":");
    body.extend_from_slice(infra);
    body.extend_from_slice(b",\"Teams\":[");
    body.extend_from_slice(team);
    body.extend_from_slice(b"]}");
    Ok(Response::json(Status::OK, body))
}

/// What the store said, as the API says it: cold and changed go back to the caller; anything
/// else is the operator's to fix, so the client gets a 500 that says so and the log gets the
/// details, with their causes.
fn unavailable(date: Option<Date>, cause: ServeError) -> ApiError {
    match cause {
        ServeError::Cold => ApiError::Cold,
        ServeError::Changed(date) => ApiError::Changed(date),
        cause => {
            let mut reason = cause.to_string();
            let mut source = std::error::Error::source(&cause);
            while let Some(inner) = source {
                reason.push_str(&format!(": {inner}"));
                source = inner.source();
            }
            log::error!(
                "api: cannot serve the snapshot of {}: {reason}",
                date.map_or("the newest date".into(), |d| d.to_string())
            );
            ApiError::Unavailable(date)
        }
    }
}

/// Why a request got no data. [`ApiError::status`] is the only mapping to a status code.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ApiError {
    Query(QueryError),
    /// No snapshot at all.
    NoData,
    NoDataOn(Date),
    UnknownApplication(String),
    UnknownModule(String),
    ModuleNotInApplication {
        module: String,
        application: String,
    },
    /// `Offset` beyond the last result (equal to the count is an empty last-plus-one page).
    PastTheEnd {
        offset: u32,
        total: usize,
    },
    /// The store could not give the date's data (the log says why).
    Unavailable(Option<Date>),
    /// Asked from memory only, and the answer is not there: never sent, [`route`] hands it
    /// back as [`Answer::Cold`].
    Cold,
    /// The date changed while it was read: never sent, the Application method asks again.
    Changed(Date),
}

impl ApiError {
    fn status(&self) -> Status {
        match self {
            Self::Query(_) | Self::PastTheEnd { .. } => Status::BAD_REQUEST,
            Self::NoData
            | Self::NoDataOn(_)
            | Self::UnknownApplication(_)
            | Self::UnknownModule(_)
            | Self::ModuleNotInApplication { .. } => Status::NOT_FOUND,
            // Neither is ever answered (see their variants); were one to be, it is the server's
            // fault.
            Self::Unavailable(_) | Self::Cold | Self::Changed(_) => Status::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        Self::Query(e)
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Query(e) => e.fmt(f),
            Self::NoData => f.write_str("no data: no analysis has been imported yet"),
            Self::NoDataOn(date) => write!(f, "no data for Date {date}"),
            Self::UnknownApplication(guid) => write!(f, "no application has GUID `{guid}`"),
            Self::UnknownModule(guid) => write!(f, "no module has GUID `{guid}`"),
            Self::ModuleNotInApplication { module, application } => {
                write!(f, "module `{module}` is not in application `{application}`")
            }
            Self::PastTheEnd { offset, total } => write!(
                f,
                "Offset {offset} is past the end of the results (TotalResults is {total})"
            ),
            Self::Unavailable(date) => write!(
                f,
                "the data for {} cannot be read now; the server's log says why",
                date.map_or("the newest date".into(), |d| format!("Date {d}"))
            ),
            Self::Cold => f.write_str("the answer is not in memory"),
            Self::Changed(date) => write!(f, "the data for Date {date} changed while it was read"),
        }
    }
}

/// The API's error body for `status`.
pub fn error(status: Status, message: &str) -> Response {
    let body = json!({ "Errors": [message], "StatusCode": status.0 });
    Response::json(status, body.to_string().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_under_both_bases_in_any_case() {
        let cases = [
            ("/ArchitectureDashboardAPI/rest/V1/TechnicalDebt_Level", Some((0, Endpoint::Level))),
            ("/AIMentorStudioAPI/rest/v1/TechnicalDebt_Level/", Some((1, Endpoint::Level))),
            (
                "/aimentorstudioapi/REST/V1/technicaldebt_application",
                Some((1, Endpoint::Application)),
            ),
            ("/ArchitectureDashboardAPI/rest/v1/swagger.json", Some((0, Endpoint::Swagger))),
            ("/ArchitectureDashboardAPI/rest/V1/TechnicalDebt_Team//", None),
            ("/ArchitectureDashboardAPI/rest/V1", None),
            ("/ArchitectureDashboardAPI/rest/V2/TechnicalDebt_Level", None),
            ("/ArchitectureDashboardAPI/rest/V1/TechnicalDebt_Levels", None),
            ("/ArchitectureDashboardAPI/rest/V1TechnicalDebt_Level", None),
            ("/TechnicalDebt_Level", None),
            ("/", None),
            ("/ArchitectureDashboardAPI/rest/V\u{e9}/TechnicalDebt_Level", None),
        ];
        for (path, expected) in cases {
            assert_eq!(resolve(path), expected, "{path}");
        }
    }

    #[test]
    fn each_error_has_its_status() {
        let not_found = [
            ApiError::NoData,
            ApiError::UnknownApplication("a".into()),
            ApiError::UnknownModule("m".into()),
            ApiError::ModuleNotInApplication { module: "m".into(), application: "a".into() },
        ];
        for e in not_found {
            assert_eq!(e.status(), Status::NOT_FOUND, "{e}");
        }
        let bad = [
            ApiError::Query(QueryError::Repeated(Param::Limit)),
            ApiError::PastTheEnd { offset: 5, total: 2 },
        ];
        for e in bad {
            assert_eq!(e.status(), Status::BAD_REQUEST, "{e}");
        }
    }
}
