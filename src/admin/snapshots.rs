//! The admin port's snapshot routes: `GET /snapshots`, and `GET` (export), `PUT` (import) and
//! `DELETE /snapshots/<date>`.
//!
//! Thin handlers over [`crate::snapshot::store`]: they parse the date in the path, hand the
//! request body over as a stream, and turn the outcome into the admin port's JSON and one
//! `audit` line for each import or delete, whatever its result. After an import the dates the
//! retention settings no longer keep are pruned (see [`App::prune_snapshots`]). An export is
//! the snapshot rendered back from what it serves ([`crate::snapshot::Snapshots::export`]), not
//! its file. The body of an import is parsed as it arrives, so a body that cannot be a snapshot
//! is refused after its first KiB and never read further. An invalid snapshot is a 422
//! whose body names the JSON path and the reason (see [`super::AdminError`]), so a script can
//! show the operator exactly what to fix; nothing served changes.

use std::io::Read;

use serde::Serialize;
use serde_json::json;

use super::{AdminError, Client};
use crate::app::App;
use crate::audit::{self, DeleteOutcome, ImportOutcome};
use crate::http::{Method, Response, Status};
use crate::keystore::rfc3339;
use crate::snapshot::Date;
use crate::snapshot::store::{self, DeleteError, ImportError, Imported, Source};

/// One served date as `GET /snapshots` and `PUT` show it.
#[derive(Serialize)]
struct Entry {
    date: String,
    last_analyzed_on: String,
    applications: usize,
    modules: usize,
    findings: usize,
    file_bytes: usize,
    /// Its share of the history store on disk: its own records, and each piece it names
    /// divided among the dates that name it (so the shares add up to the store). Listed only:
    /// an import's answer gives what it added instead (`added_bytes`).
    #[serde(skip_serializing_if = "Option::is_none")]
    disk_bytes: Option<u64>,
    /// What it holds in memory now: the newest date all of it, an older one while cached
    /// (its index and compressed applications), else nothing.
    memory_bytes: usize,
    /// SHA-256 of the imported file, hex: equal digests are equal data.
    sha256: String,
    /// When it went live, and how it came (`pull`, `import`, or `inbox` for a file taken
    /// over from the release that kept files); `null` for a date stored before they were kept.
    imported_at: Option<String>,
    source: Option<&'static str>,
}

impl Entry {
    fn of(entry: &store::Entry, disk_bytes: Option<u64>, memory_bytes: usize) -> Self {
        let stats = entry.stats;
        Self {
            date: entry.date.to_string(),
            last_analyzed_on: rfc3339(entry.analyzed_on),
            applications: stats.applications,
            modules: stats.modules,
            findings: stats.findings,
            file_bytes: stats.file_bytes,
            disk_bytes,
            memory_bytes,
            sha256: hex(&entry.file_sha256),
            imported_at: entry.arrival.map(|a| rfc3339(a.time())),
            source: entry.arrival.map(|a| a.source.label()),
        }
    }
}

fn hex(digest: &[u8; 32]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// `GET /snapshots`: the served dates, newest first, the inbox files refused, and the totals.
/// A store whose dates cannot be sized is a `500` (its cause is logged): a listing with
/// made-up sizes would be worse than none.
pub(super) fn list(app: &App) -> Result<Response, AdminError> {
    let catalog = app.snapshots.catalog();
    let shares = app.snapshots.disk_shares().map_err(AdminError::Sizes)?;
    let snapshots: Vec<Entry> = catalog
        .newest_first()
        .map(|e| {
            // The shares are read from the same store the catalog lists: every date has one.
            let disk = shares.get(&e.date).copied();
            Entry::of(e, disk, app.snapshots.memory_bytes(e.date))
        })
        .collect();
    let refused: Vec<_> = catalog
        .refused()
        .map(|(date, reason)| {
            // A refused file that cannot be sized (gone since, or unreadable) shows `null`.
            let disk_bytes = app.snapshots.inbox_bytes(date).ok();
            json!({ "date": date.to_string(), "reason": reason, "disk_bytes": disk_bytes })
        })
        .collect();
    // The store's file as a whole (free pages included), and the refused files beside it.
    let store_bytes = app.snapshots.store_bytes();
    let disk_bytes =
        store_bytes + refused.iter().filter_map(|r| r["disk_bytes"].as_u64()).sum::<u64>();
    let cache_bytes = app.snapshots.cache_bytes();
    let body = json!({
        "newest": catalog.newest().map(|s| s.date().to_string()),
        "snapshots": snapshots,
        "refused": refused,
        "total": {
            "dates": snapshots.len(),
            "disk_bytes": disk_bytes,
            "store_bytes": store_bytes,
            "memory_bytes": snapshots.iter().map(|e| e.memory_bytes).sum::<usize>() + cache_bytes,
            "cache_bytes": cache_bytes,
        },
    });
    Ok(Response::json(Status::OK, body.to_string().into_bytes()))
}

/// `/snapshots/<date>`. `bytes` is the body's announced length.
pub(super) fn one(
    app: &App,
    date_text: &str,
    method: Method,
    query: Option<&str>,
    bytes: u64,
    body: &mut dyn Read,
    client: Client,
) -> Result<Response, AdminError> {
    let date = Date::parse(date_text).map_err(|reason| AdminError::BadDate {
        text: date_text.chars().take(40).collect(),
        reason: reason.to_string(),
    })?;
    match method {
        // `?source=pull` marks an import made by `snapshot pull`, for the listing and the
        // metrics.
        Method::Put => {
            let source = match query {
                Some("source=pull") => Source::Pull,
                _ => Source::Import,
            };
            import(app, date, bytes, body, client, source)
        }
        Method::Delete => delete(app, date, client),
        Method::Get | Method::Head => export(app, date),
        _ => Err(AdminError::MethodNotAllowed("GET, HEAD, PUT, DELETE")),
    }
}

/// `GET /snapshots/<date>`: the served snapshot as a document, rendered from what it serves.
fn export(app: &App, date: Date) -> Result<Response, AdminError> {
    let document = app.snapshots.export(date).map_err(|e| AdminError::Export(date, e))?;
    Ok(Response::json(Status::OK, document.ok_or(AdminError::NotServed(date))?))
}

fn import(
    app: &App,
    date: Date,
    bytes: u64,
    body: &mut dyn Read,
    client: Client,
    source: Source,
) -> Result<Response, AdminError> {
    let uid = client.uid;
    match app.snapshots.import(date, body, source) {
        Ok(imported) => {
            let memory_bytes = app.snapshots.memory_bytes(date);
            let response =
                imported_response(&imported, uid, memory_bytes, || app.prune_snapshots());
            Ok(response)
        }
        Err(e) => {
            let failure = AdminError::Import(date, e);
            let outcome = match &failure {
                AdminError::Import(_, ImportError::Invalid(invalid)) => {
                    ImportOutcome::Invalid { bytes, reason: invalid }
                }
                other => ImportOutcome::Failed {
                    code: other.code(),
                    server_fault: other.status().is_server_error(),
                    cause: other,
                },
            };
            audit::snapshot_import(uid, date, outcome).emit();
            Err(failure)
        }
    }
}

/// The import's audit line, then the retention's (`prune`), then the answer.
fn imported_response(
    imported: &Imported,
    uid: u32,
    memory_bytes: usize,
    prune: impl FnOnce() -> Vec<Date>,
) -> Response {
    let stats = imported.stats;
    let took_ms = imported.took.as_millis();
    let outcome = ImportOutcome::Live { replaced: imported.replaced, stats: &stats, took_ms };
    audit::snapshot_import(uid, imported.date, outcome).emit();
    let pruned: Vec<String> = prune().iter().map(Date::to_string).collect();
    let (status, result) =
        if imported.replaced { (Status::OK, "replaced") } else { (Status::CREATED, "created") };
    let listed = store::Entry::new(
        imported.date,
        imported.analyzed_on,
        stats,
        imported.file_sha256,
        Some(imported.arrival),
    );
    let entry = Entry::of(&listed, None, memory_bytes);
    let body = json!({
        "result": result,
        "snapshot": entry,
        "took_ms": took_ms,
        "new_pieces": imported.new_pieces,
        "added_bytes": imported.added_bytes,
        "pruned": pruned,
    });
    Response::json(status, body.to_string().into_bytes())
}

fn delete(app: &App, date: Date, client: Client) -> Result<Response, AdminError> {
    let uid = client.uid;
    match app.snapshots.delete(date) {
        Ok(deleted) => {
            let was_served = deleted.served.is_some();
            audit::snapshot_delete(uid, date, DeleteOutcome::Deleted { was_served }).emit();
            let body = json!({
                "result": "deleted",
                "date": date.to_string(),
                "was_served": was_served,
                "newest": app.snapshots.catalog().newest().map(|s| s.date().to_string()),
            });
            Ok(Response::json(Status::OK, body.to_string().into_bytes()))
        }
        Err(e) => {
            let failure = AdminError::Delete(date, e);
            let outcome = match &failure {
                AdminError::Delete(_, DeleteError::NotFound) => DeleteOutcome::NotFound,
                other => DeleteOutcome::Failed { code: other.code(), cause: other },
            };
            audit::snapshot_delete(uid, date, outcome).emit();
            Err(failure)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_shows_the_stored_facts_and_the_sizes_it_is_given() {
        let sample = include_bytes!("../../examples/snapshot-2024-05-14.json");
        let date = Date::parse("2024-05-14").unwrap();
        let snapshot = crate::snapshot::load(sample, date, "CODE").unwrap();
        let stats = snapshot.stats();
        assert!(stats.compressed_bytes > 0 && stats.rendered_bytes > 0);
        let arrival = store::Arrival { at_ms: 1_800_000_000_250, source: Source::Inbox };
        let listed = store::Entry::new(
            date,
            snapshot.analyzed_on(),
            stats,
            *snapshot.file_sha256(),
            Some(arrival),
        );
        let entry = Entry::of(&listed, Some(7), 9);
        assert_eq!((entry.disk_bytes, entry.memory_bytes), (Some(7), 9));
        assert_eq!(entry.imported_at.as_deref(), Some("2027-01-15T08:00:00.250Z"));
        assert_eq!(entry.source, Some("inbox"));
        assert_eq!(entry.sha256, hex(snapshot.file_sha256()));
        assert_eq!(entry.sha256.len(), 64);
        assert!(snapshot.memory_bytes() > stats.rendered_bytes + stats.compressed_bytes);
    }
}
