//! The admin port's snapshot routes: `GET /snapshots`, `PUT` and `DELETE /snapshots/<date>`.
//!
//! Thin handlers over [`crate::snapshot::store`]: they parse the date in the path, hand the
//! request body over as a stream, and turn the outcome into the admin port's JSON and one
//! `audit` line for each import or delete, whatever its result. An invalid snapshot is a 422
//! whose body names the JSON path and the reason, so a script can show the operator exactly
//! what to fix; nothing served changes.

use serde::Serialize;
use serde_json::json;

use super::{Client, error, method_not_allowed};
use crate::app::App;
use crate::http::{Method, Response, Status};
use crate::keystore::rfc3339;
use crate::server::admin_port::Body;
use crate::snapshot::store::{DeleteError, ImportError, Imported};
use crate::snapshot::{Date, Problem, Snapshot};

/// One served snapshot as `GET /snapshots` and `PUT` show it.
#[derive(Serialize)]
struct Entry {
    date: String,
    last_analyzed_on: String,
    applications: usize,
    modules: usize,
    findings: usize,
    file_bytes: usize,
    memory_bytes: usize,
}

impl Entry {
    fn of(snapshot: &Snapshot) -> Self {
        let stats = snapshot.stats();
        Self {
            date: snapshot.date().to_string(),
            last_analyzed_on: rfc3339(snapshot.analyzed_on()),
            applications: stats.applications,
            modules: stats.modules,
            findings: stats.findings,
            file_bytes: stats.file_bytes,
            memory_bytes: stats.rendered_bytes + stats.compressed_bytes,
        }
    }
}

/// `GET /snapshots`: the served snapshots, newest first, and the files refused at start.
pub(super) fn list(app: &App) -> Response {
    let catalog = app.snapshots.catalog();
    let snapshots: Vec<Entry> = catalog.newest_first().map(|s| Entry::of(s)).collect();
    let refused: Vec<_> = catalog
        .refused()
        .map(|(date, reason)| json!({ "date": date.to_string(), "reason": reason }))
        .collect();
    let body = json!({
        "newest": catalog.newest().map(|s| s.date().to_string()),
        "snapshots": snapshots,
        "refused": refused,
    });
    Response::json(Status::OK, body.to_string().into_bytes())
}

/// `/snapshots/<date>`.
pub(super) fn one(
    app: &App,
    date_text: &str,
    method: Method,
    body: &mut Body<'_>,
    client: &Client,
) -> Response {
    let date = match Date::parse(date_text) {
        Ok(date) => date,
        Err(reason) => {
            let message = format!(
                "`{}` is not a date ({reason}): snapshots are named by their date, YYYY-MM-DD",
                date_text.chars().take(40).collect::<String>()
            );
            return error(Status::BAD_REQUEST, "invalid_date", &message);
        }
    };
    match method {
        Method::Put => import(app, date, body, client),
        Method::Delete => delete(app, date, client),
        _ => method_not_allowed("PUT, DELETE"),
    }
}

fn import(app: &App, date: Date, body: &mut Body<'_>, client: &Client) -> Response {
    let action = "snapshot.import";
    let uid = client.uid;
    let bytes = body.remaining();
    match app.snapshots.import(date, body) {
        Ok(imported) => imported_response(&imported, action, uid),
        Err(ImportError::Invalid(invalid)) => {
            log::info!(
                "audit action={action} client=uid:{uid} date={date} bytes={bytes} result=invalid \
                 reason={:?}",
                invalid.to_string()
            );
            let (line, column) = match &invalid.problem {
                Problem::Syntax { line, column, .. } => (Some(*line), Some(*column)),
                _ => (None, None),
            };
            let message = format!("the snapshot for {date} is invalid, nothing changed: {invalid}");
            let body = json!({
                "error": "invalid_snapshot",
                "message": message,
                "path": invalid.path,
                "reason": invalid.problem.to_string(),
                "line": line,
                "column": column,
            });
            Response::json(Status::UNPROCESSABLE, body.to_string().into_bytes())
        }
        Err(e) => {
            let (status, code) = match &e {
                ImportError::Empty => (Status::BAD_REQUEST, "empty_body"),
                ImportError::Body(_) => (Status::BAD_REQUEST, "body"),
                ImportError::NotDurable { .. } => (Status::INTERNAL_SERVER_ERROR, "not_durable"),
                _ => (Status::INTERNAL_SERVER_ERROR, "storage"),
            };
            let level = if status.is_server_error() { log::Level::Error } else { log::Level::Info };
            log::log!(
                level,
                "audit action={action} client=uid:{uid} date={date} result={code} cause={:?}",
                e.to_string()
            );
            error(status, code, &e.to_string())
        }
    }
}

fn imported_response(imported: &Imported, action: &str, uid: u32) -> Response {
    let entry = Entry::of(&imported.snapshot);
    let (status, result) =
        if imported.replaced { (Status::OK, "replaced") } else { (Status::CREATED, "created") };
    let took_ms = imported.took.as_millis();
    log::info!(
        "audit action={action} client=uid:{uid} date={} result={result} applications={} \
         modules={} findings={} bytes={} ms={took_ms}",
        entry.date,
        entry.applications,
        entry.modules,
        entry.findings,
        entry.file_bytes
    );
    let body = json!({ "result": result, "snapshot": entry, "took_ms": took_ms });
    Response::json(status, body.to_string().into_bytes())
}

fn delete(app: &App, date: Date, client: &Client) -> Response {
    let action = "snapshot.delete";
    let uid = client.uid;
    match app.snapshots.delete(date) {
        Ok(deleted) => {
            log::info!(
                "audit action={action} client=uid:{uid} date={date} result=deleted was_served={}",
                deleted.served.is_some()
            );
            let body = json!({
                "result": "deleted",
                "date": date.to_string(),
                "was_served": deleted.served.is_some(),
                "newest": app.snapshots.catalog().newest().map(|s| s.date().to_string()),
            });
            Response::json(Status::OK, body.to_string().into_bytes())
        }
        Err(DeleteError::NotFound) => {
            log::info!("audit action={action} client=uid:{uid} date={date} result=not_found");
            error(Status::NOT_FOUND, "not_found", &format!("no snapshot for {date}"))
        }
        Err(e) => {
            let code = match e {
                DeleteError::NotDurable { .. } => "not_durable",
                _ => "storage",
            };
            log::error!(
                "audit action={action} client=uid:{uid} date={date} result={code} cause={:?}",
                e.to_string()
            );
            error(Status::INTERNAL_SERVER_ERROR, code, &e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_counts_the_compressed_forms_too() {
        let sample = include_bytes!("../../examples/snapshot-2024-05-14.json");
        let date = Date::parse("2024-05-14").unwrap();
        let snapshot = crate::snapshot::load(sample, date, "CODE").unwrap();
        let stats = snapshot.stats();
        assert!(stats.compressed_bytes > 0 && stats.rendered_bytes > 0);
        let entry = Entry::of(&snapshot);
        assert_eq!(entry.memory_bytes, stats.rendered_bytes + stats.compressed_bytes);
    }
}
