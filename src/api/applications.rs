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
use super::{ApiError, pick};
use crate::gzip::{Member, Segment};
use crate::http::encoding::{self, Coding};
use crate::http::{Response, Status};
use crate::snapshot::served::WithModule;
use crate::snapshot::store::Access;
use crate::snapshot::{Snapshot, Snapshots};

/// What the filters selected.
enum Selection {
    All,
    Application(usize),
    /// (application position, module position within it)
    Module(usize, usize),
}

pub(super) fn answer(
    catalog: &Snapshots,
    raw_query: Option<&str>,
    coding: Coding,
    access: Access,
) -> Result<Response, ApiError> {
    let query = Query::parse(raw_query, query::APPLICATION)?;
    let date = query.date()?;
    let limit = query.integer(Param::Limit, DEFAULT_LIMIT, 1, MAX_LIMIT)?;
    let offset = query.integer(Param::Offset, 0, 0, MAX_OFFSET)?;
    let snapshot = pick(catalog, date, access)?;
    let selection = select(&snapshot, &query)?;
    let total = match selection {
        Selection::All => snapshot.application_count(),
        _ => 1,
    };
    let start = offset as usize;
    if start > total {
        return Err(ApiError::PastTheEnd { offset, total });
    }
    let page = start..total.min(start + limit as usize);
    render(&snapshot, &selection, page, limit, total, coding)
}

fn select(snapshot: &Snapshot, query: &Query) -> Result<Selection, ApiError> {
    let application = query.text(Param::ApplicationGuid);
    let module = query.text(Param::ModuleGuid);
    let find_app = |guid: &str| {
        snapshot.application_position(guid).ok_or_else(|| ApiError::UnknownApplication(guid.into()))
    };
    let find_module = |guid: &str| {
        snapshot.module_position(guid).ok_or_else(|| ApiError::UnknownModule(guid.into()))
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
                return Err(ApiError::ModuleNotInApplication {
                    module: module_guid.into(),
                    application: app_guid.into(),
                });
            }
            Selection::Module(app, module)
        }
    })
}

/// The body, `{"InfrastructureInfo":…,"Applications":[…],"Page":{…}}`, in `coding` when the
/// page is large enough.
fn render(
    snapshot: &Snapshot,
    selection: &Selection,
    page: Range<usize>,
    limit: u32,
    total: usize,
    coding: Coding,
) -> Result<Response, ApiError> {
    let wholes_or_cut = match *selection {
        // A filtered set has one element: page 0..1 holds it, page 1..1 does not.
        _ if page.is_empty() => Ok((Vec::new(), None)),
        Selection::All => snapshot.applications(page.clone()).map(|apps| (apps, None)),
        Selection::Application(app) => snapshot.applications(app..app + 1).map(|apps| (apps, None)),
        Selection::Module(app, module) => {
            snapshot.application_with_module(app, module).map(|cut| (Vec::new(), cut))
        }
    };
    let (apps, cut): (Vec<Arc<[u8]>>, Option<WithModule>) =
        wholes_or_cut.map_err(|e| super::unavailable(Some(snapshot.date()), &e))?;
    // Each application is written as up to three slices: whole, or head, module and tail.
    let items: Vec<[&[u8]; 3]> = match &cut {
        Some(cut) => vec![cut.parts()],
        None => apps.iter().map(|app| whole(app)).collect(),
    };
    // The positions of the page's applications when each is whole, and so has a segment.
    let wholes = match *selection {
        _ if page.is_empty() => Some(0..0),
        Selection::All => Some(page.clone()),
        Selection::Application(app) => Some(app..app + 1),
        Selection::Module(..) => None,
    };
    let infra = snapshot.infrastructure();
    let head = [b"{\"InfrastructureInfo\":".as_slice(), infra, b",\"Applications\":["].concat();
    let limit = limit as usize;
    let tail = format!(
        "],\"Page\":{{\"Limit\":{limit},\"Offset\":{},\"NextPageOffset\":{},\
         \"TotalResults\":{total},\"TotalPages\":{}}}}}",
        page.start,
        page.start + items.len(),
        total.div_ceil(limit),
    );
    let size: usize = items.iter().flatten().map(|part| part.len()).sum::<usize>()
        + items.len().saturating_sub(1)
        + head.len()
        + tail.len();
    if let (Coding::Gzip, Some(positions)) = (coding.for_body(size), wholes) {
        let segments: Vec<Segment<'_>> = snapshot.application_segments(positions);
        let compressed: usize = segments.iter().map(|s| s.deflate.len() + 6).sum();
        let mut member = Member::with_capacity(compressed + head.len() + tail.len() + 16);
        member.stored(&head);
        for (i, segment) in segments.into_iter().enumerate() {
            if i > 0 {
                member.stored(b",");
            }
            member.segment(segment);
        }
        member.stored(tail.as_bytes());
        return Ok(encoding::gzipped(Response::json(Status::OK, member.finish())));
    }
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

fn whole(app: &[u8]) -> [&[u8]; 3] {
    [app, &[], &[]]
}
