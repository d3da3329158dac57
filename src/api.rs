//! The AI Mentor Studio API, version 1, behind the gate.
//!
//! Requests reach this module only with valid credentials. [`route`] finds the method under
//! either base path (`/ArchitectureDashboardAPI/rest/V1`, the documented one, and
//! `/AIMentorStudioAPI/rest/v1`, the official client's), ignoring letter case and one trailing
//! slash; only `GET` and `HEAD` are served. Every answer comes from one [`Catalog`] taken at the
//! start of the request, so an import that lands meanwhile cannot mix two snapshots in one
//! answer. Bodies are pre-rendered by [`crate::snapshot`]: the Level, Category, Team and
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
mod query;
mod swagger;

use std::fmt;
use std::sync::Arc;

use serde_json::json;

use crate::app::App;
use crate::http::encoding::{self, Coding};
use crate::http::{Method, Request, Response, Status};
use crate::metrics::ApiRoute;
use crate::snapshot::{Catalog, Date, Snapshot, Whole};
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

/// The `route` label of an authenticated request, for the metrics: routed as [`route`] does.
pub fn metrics_route(path: &str) -> ApiRoute {
    match resolve(path) {
        Some((_, Endpoint::Application)) => ApiRoute::Application,
        Some((_, Endpoint::Category)) => ApiRoute::Category,
        Some((_, Endpoint::LastAnalysisDate)) => ApiRoute::LastAnalysisDate,
        Some((_, Endpoint::Level)) => ApiRoute::Level,
        Some((_, Endpoint::Team)) => ApiRoute::Team,
        Some((_, Endpoint::Swagger)) => ApiRoute::Swagger,
        None => ApiRoute::Other,
    }
}

/// Routes an authenticated request.
pub fn route(app: &App, request: &Request<'_>) -> Response {
    answer(&app.snapshots.catalog(), request)
}

/// Answers `request` from `catalog`, in the content coding it accepts. Public so benchmarks
/// and tests reach it without a server.
pub fn answer(catalog: &Catalog, request: &Request<'_>) -> Response {
    let coding = Coding::accepted_by(request);
    encoding::encode(answer_in(catalog, request, coding), coding)
}

fn answer_in(catalog: &Catalog, request: &Request<'_>, coding: Coding) -> Response {
    let Some((base, endpoint)) = resolve(request.path) else {
        return error(
            Status::NOT_FOUND,
            &format!(
                "no API method at {}; the methods are listed in {}/swagger.json",
                request.path, BASES[0]
            ),
        );
    };
    if !matches!(request.method, Method::Get | Method::Head) {
        return error(Status::METHOD_NOT_ALLOWED, "this API answers only GET and HEAD")
            .header("allow", "GET, HEAD");
    }
    let outcome = match endpoint {
        Endpoint::Application => applications::answer(catalog, request.query, coding),
        Endpoint::Category => shared(catalog, request.query, Whole::Categories, coding),
        Endpoint::LastAnalysisDate => {
            shared(catalog, request.query, Whole::LastAnalysisDate, coding)
        }
        Endpoint::Level => shared(catalog, request.query, Whole::Levels, coding),
        Endpoint::Team => teams(catalog, request.query, coding),
        Endpoint::Swagger => Query::parse(request.query, query::NONE)
            .map(|_| swagger::response(base, coding))
            .map_err(Into::into),
    };
    outcome.unwrap_or_else(|e| error(e.status(), &e.to_string()))
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

/// A method without parameters whose answer is pre-rendered whole.
fn shared(
    catalog: &Catalog,
    raw_query: Option<&str>,
    answer: Whole,
    coding: Coding,
) -> Result<Response, ApiError> {
    Query::parse(raw_query, query::NONE)?;
    let snapshot = pick(catalog, None)?;
    Ok(whole(snapshot, answer, coding))
}

/// An answer rendered whole, in the coding chosen for it: both forms are shared bytes.
fn whole(snapshot: &Snapshot, answer: Whole, coding: Coding) -> Response {
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
fn teams(catalog: &Catalog, raw_query: Option<&str>, coding: Coding) -> Result<Response, ApiError> {
    let query = Query::parse(raw_query, query::TEAM)?;
    let snapshot = pick(catalog, None)?;
    let Some(external_id) = query.text(Param::Team) else {
        return Ok(whole(snapshot, Whole::Teams, coding));
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

/// The snapshot for `date`, or the newest.
fn pick(catalog: &Catalog, date: Option<Date>) -> Result<&Arc<Snapshot>, ApiError> {
    match date {
        None => catalog.newest().ok_or(ApiError::NoData),
        Some(date) => catalog.on(date).ok_or(ApiError::NoDataOn(date)),
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
