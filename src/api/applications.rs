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

use std::ops::Range;

use super::query::{self, DEFAULT_LIMIT, MAX_LIMIT, MAX_OFFSET, Param, Query};
use super::{ApiError, pick};
use crate::http::{Response, Status};
use crate::snapshot::{Catalog, Snapshot};

/// What the filters selected.
enum Selection {
    All,
    Application(usize),
    /// (application position, module position within it)
    Module(usize, usize),
}

pub(super) fn answer(catalog: &Catalog, raw_query: Option<&str>) -> Result<Response, ApiError> {
    let query = Query::parse(raw_query, query::APPLICATION)?;
    let date = query.date()?;
    let limit = query.integer(Param::Limit, DEFAULT_LIMIT, 1, MAX_LIMIT)?;
    let offset = query.integer(Param::Offset, 0, 0, MAX_OFFSET)?;
    let snapshot = pick(catalog, date)?;
    let selection = select(snapshot, &query)?;
    let total = match selection {
        Selection::All => snapshot.application_count(),
        _ => 1,
    };
    let start = offset as usize;
    if start > total {
        return Err(ApiError::PastTheEnd { offset, total });
    }
    let page = start..total.min(start + limit as usize);
    Ok(Response::json(Status::OK, render(snapshot, &selection, page, limit, total)))
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

/// The body: `{"InfrastructureInfo":…,"Applications":[…],"Page":{…}}`.
fn render(
    snapshot: &Snapshot,
    selection: &Selection,
    page: Range<usize>,
    limit: u32,
    total: usize,
) -> Vec<u8> {
    // Each application is written as up to three slices: whole, or head, module and tail.
    let items: Vec<[&[u8]; 3]> = match *selection {
        // A filtered set has one element: page 0..1 holds it, page 1..1 does not.
        _ if page.is_empty() => Vec::new(),
        Selection::All => snapshot.applications(page.clone()).map(whole).collect(),
        Selection::Application(app) => snapshot.applications(app..app + 1).map(whole).collect(),
        Selection::Module(app, module) => {
            snapshot.application_with_module(app, module).into_iter().collect()
        }
    };
    let infra = snapshot.infrastructure();
    let size: usize = items.iter().flatten().map(|part| part.len() + 1).sum();
    let mut body = Vec::with_capacity(size + infra.len() + 200);
    body.extend_from_slice(b"{\"InfrastructureInfo\":");
    body.extend_from_slice(infra);
    body.extend_from_slice(b",\"Applications\":[");
    for (i, parts) in items.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        parts.iter().for_each(|part| body.extend_from_slice(part));
    }
    let limit = limit as usize;
    let page_json = format!(
        "],\"Page\":{{\"Limit\":{limit},\"Offset\":{},\"NextPageOffset\":{},\
         \"TotalResults\":{total},\"TotalPages\":{}}}}}",
        page.start,
        page.start + items.len(),
        total.div_ceil(limit),
    );
    body.extend_from_slice(page_json.as_bytes());
    body
}

fn whole(app: &[u8]) -> [&[u8]; 3] {
    [app, &[], &[]]
}
