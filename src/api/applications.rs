//! `/TechnicalDebt_Application`: filters, pagination and the `Page` object.
//!
//! The result set is every application of the snapshot in serving order (name, then GUID), or
//! the one application an `ApplicationGUID` or `ModuleGUID` filter selects; with both, the
//! module must be in that application. A `ModuleGUID` answer is the parent application holding
//! just that module. Pages are cut from that set by `Offset` and `Limit`, and because the set
//! of one snapshot never changes, consecutive pages neither skip nor repeat an application.
//!
//! `Page.NextPageOffset` is `Offset` plus the number of applications returned, so on the last
//! page it equals `TotalResults`: a client that loops `while Offset < TotalResults` stops, and
//! one that asks for that offset gets an empty page, not an error. An `Offset` beyond
//! `TotalResults` is a 400, so a client that went wrong hears about it. `TotalPages` is
//! `ceil(TotalResults / Limit)`.
//!
//! A page of whole applications goes out gzip-coded, when the client accepts it, as one gzip
//! member stitched from segments compressed at load ([`crate::gzip`]): a run of ten
//! applications where the page covers one, else one application. The page's own few bytes
//! (head, commas between segments, `Page`) go in as stored blocks: no byte of an application
//! is compressed or hashed per request. A `ModuleGUID` answer cuts an application apart, so it
//! has no segment: it is one application's worth of bytes and is compressed per request like
//! any other answer.

use std::ops::Range;
use std::sync::Arc;

use super::query::{self, DEFAULT_LIMIT, MAX_LIMIT, MAX_OFFSET, Param, Query};
use super::{ApiError, Source, unavailable};
use crate::gzip::{Member, Segment};
use crate::http::encoding::{self, Coding};
use crate::http::{Response, Status};
use crate::snapshot::serve::{Dated, Mode, WithModule};
use crate::snapshot::{Date, ServeError};

/// What the filters selected.
enum Selection {
    All,
    Application(usize),
    /// (application position, module position within it)
    Module(usize, usize),
}

/// A delete or a replacement of the date between finding it and reading its pieces makes the
/// read ask again, of what is served then; this many times at most, and then it is a 500.
const ATTEMPTS: usize = 3;

pub(super) fn answer(
    source: Source<'_>,
    raw_query: Option<&str>,
    coding: Coding,
) -> Result<Response, ApiError> {
    let query = Query::parse(raw_query, query::APPLICATION)?;
    let date = query.date()?;
    let limit = query.integer(Param::Limit, DEFAULT_LIMIT, 1, MAX_LIMIT)?;
    let offset = query.integer(Param::Offset, 0, 0, MAX_OFFSET)?;
    for _ in 0..ATTEMPTS {
        match answer_once(source, &query, date, limit, offset, coding) {
            Err(ApiError::Changed(_)) => continue,
            other => return other,
        }
    }
    log::error!(
        "api: the snapshot of {} changed {ATTEMPTS} times while it was read",
        date.map_or("the newest date".into(), |d| d.to_string())
    );
    Err(ApiError::Unavailable(date))
}

fn answer_once(
    source: Source<'_>,
    query: &Query,
    date: Option<Date>,
    limit: u32,
    offset: u32,
    coding: Coding,
) -> Result<Response, ApiError> {
    let mode = source.mode;
    let dated = match source.snapshots.date(date, mode) {
        Ok(Some(dated)) => dated,
        Ok(None) => return Err(date.map_or(ApiError::NoData, ApiError::NoDataOn)),
        Err(e) => return Err(unavailable(date, e)),
    };
    let failed = |e: ServeError| unavailable(Some(dated.date()), e);
    let selection = select(&dated, query, mode).map_err(|e| e.map_serve(&failed))?;
    let total = match selection {
        Selection::All => dated.application_count(),
        _ => 1,
    };
    let start = offset as usize;
    if start > total {
        return Err(ApiError::PastTheEnd { offset, total });
    }
    let page = start..total.min(start + limit as usize);
    render(&dated, &selection, page, limit, total, coding, mode).map_err(failed)
}

/// A filter's failure: the client's (an unknown GUID) or the store's.
enum Failure {
    Api(ApiError),
    Serve(ServeError),
}

impl Failure {
    fn map_serve(self, failed: &impl Fn(ServeError) -> ApiError) -> ApiError {
        match self {
            Self::Api(e) => e,
            Self::Serve(e) => failed(e),
        }
    }
}

impl From<ServeError> for Failure {
    fn from(e: ServeError) -> Self {
        Self::Serve(e)
    }
}

fn select(dated: &Dated<'_>, query: &Query, mode: Mode) -> Result<Selection, Failure> {
    let application = query.text(Param::ApplicationGuid);
    let module = query.text(Param::ModuleGuid);
    let find_app = |guid: &str| -> Result<usize, Failure> {
        dated
            .application_position(guid, mode)?
            .ok_or_else(|| Failure::Api(ApiError::UnknownApplication(guid.into())))
    };
    let find_module = |guid: &str| -> Result<(usize, usize), Failure> {
        dated
            .module_position(guid, mode)?
            .ok_or_else(|| Failure::Api(ApiError::UnknownModule(guid.into())))
    };
    Ok(match (application, module) {
        (None, None) => Selection::All,
        (Some(guid), None) => Selection::Application(find_app(guid)?),
        (None, Some(guid)) => {
            let (app, module) = find_module(guid)?;
            Selection::Module(app, module)
        }
        (Some(app_guid), Some(module_guid)) => {
            let app = find_app(app_guid)?;
            let (parent, module) = find_module(module_guid)?;
            if parent != app {
                return Err(Failure::Api(ApiError::ModuleNotInApplication {
                    module: module_guid.into(),
                    application: app_guid.into(),
                }));
            }
            Selection::Module(app, module)
        }
    })
}

/// The body, `{"InfrastructureInfo":…,"Applications":[…],"Page":{…}}`, in `coding` when the
/// page is large enough. A page of whole applications that goes out gzip-coded is made of
/// their segments alone: an older date's are never decompressed for it.
fn render(
    dated: &Dated<'_>,
    selection: &Selection,
    page: Range<usize>,
    limit: u32,
    total: usize,
    coding: Coding,
    mode: Mode,
) -> Result<Response, ServeError> {
    // The positions of the page's applications when each is whole, and so has a segment.
    let wholes = match *selection {
        _ if page.is_empty() => Some(0..0),
        Selection::All => Some(page.clone()),
        Selection::Application(app) => Some(app..app + 1),
        Selection::Module(..) => None,
    };
    let infra = dated.infrastructure();
    let head = [b"{\"InfrastructureInfo\":".as_slice(), infra, b",\"Applications\":["].concat();
    let limit = limit as usize;
    let tail = |returned: usize| {
        format!(
            "],\"Page\":{{\"Limit\":{limit},\"Offset\":{},\"NextPageOffset\":{},\
             \"TotalResults\":{total},\"TotalPages\":{}}}}}",
            page.start,
            page.start + returned,
            total.div_ceil(limit),
        )
    };
    if let (Coding::Gzip, Some(positions)) = (coding, wholes.clone()) {
        let segments = dated.segments(positions.clone(), mode)?;
        let segments = segments.each();
        let tail = tail(positions.len());
        let plain: usize = segments.iter().map(|s| s.plain_len as usize).sum::<usize>()
            + positions.len().saturating_sub(1)
            + head.len()
            + tail.len();
        if coding.for_body(plain) == Coding::Gzip {
            return Ok(gzipped(&head, &segments, &tail));
        }
    }
    let wholes_or_cut = match *selection {
        // A filtered set has one element: page 0..1 holds it, page 1..1 does not.
        _ if page.is_empty() => (Vec::new(), None),
        Selection::All => (dated.applications(page.clone(), mode)?, None),
        Selection::Application(app) => (dated.applications(app..app + 1, mode)?, None),
        Selection::Module(app, module) => {
            (Vec::new(), dated.application_with_module(app, module, mode)?)
        }
    };
    let (apps, cut): (Vec<Arc<[u8]>>, Option<WithModule>) = wholes_or_cut;
    // Each part is written as up to three slices: whole (an application, or a run of them with
    // its commas), or head, module and tail.
    let items: Vec<[&[u8]; 3]> = match &cut {
        Some(cut) => vec![cut.parts()],
        None => apps.iter().map(|app| whole(app)).collect(),
    };
    let returned = match *selection {
        _ if page.is_empty() => 0,
        Selection::All => page.len(),
        // One application, whole or cut, if it is there.
        _ => usize::from(!items.is_empty()),
    };
    let tail = tail(returned);
    let size: usize = items.iter().flatten().map(|part| part.len()).sum::<usize>()
        + items.len().saturating_sub(1)
        + head.len()
        + tail.len();
    let mut body = Vec::with_capacity(size);
    body.extend_from_slice(&head);
    for (i, parts) in items.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        parts.iter().for_each(|part| body.extend_from_slice(part));
    }
    body.extend_from_slice(tail.as_bytes());
    Ok(Response::json(Status::OK, body))
}

/// A page of whole applications as one gzip member: the head and tail as stored blocks, the
/// segments copied, the commas between them stored.
fn gzipped(head: &[u8], segments: &[Segment<'_>], tail: &str) -> Response {
    let compressed: usize = segments.iter().map(|s| s.deflate.len() + 6).sum();
    let mut member = Member::with_capacity(compressed + head.len() + tail.len() + 16);
    member.stored(head);
    for (i, segment) in segments.iter().enumerate() {
        if i > 0 {
            member.stored(b",");
        }
        member.segment(*segment);
    }
    member.stored(tail.as_bytes());
    encoding::gzipped(Response::json(Status::OK, member.finish()))
}

fn whole(app: &[u8]) -> [&[u8]; 3] {
    [app, &[], &[]]
}
