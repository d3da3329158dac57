//! Readers that hold a date across its delete and its re-import (issue 18): deterministic, each
//! reader stopped at a hold the test releases.
//!
//! The reported loss: a first touch of an older date finished after the date's delete, kept the
//! date's pieces alive in memory, and the re-import of the same file trusted memory, wrote no
//! piece, and answered `201` with `"new_pieces": 0` over a store that named pieces it did not
//! have. Here a page and an export are held at the point where they have read the date (and,
//! for the export of the newest, hold every piece of it); the date is deleted and imported
//! again; the re-import must write every piece the delete removed, the held reader must not
//! put the deleted version back in a cache, the store must verify whole, and after a restart
//! every date must export exactly as before.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::date::Date;
use super::history::{self, History};
use super::hold::{self, Holds};
use super::sample::document;
use super::serve::{Memory, Mode, ServeError};
use super::store::{Compaction, Snapshots, Source};
use super::verify::{self, StoreCheck};

const CODE: &str = "RACE-TEST";
const OLDER: &str = "2024-05-01";
const NEWEST: &str = "2024-05-02";

fn day(text: &str) -> Date {
    Date::parse(text).unwrap()
}

/// The store in `state`, its holds armed at `points`.
fn open(state: &Path, points: &[&str]) -> Arc<Snapshots> {
    let holds = Holds::at_points(points);
    let inbox = state.join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    let file = state.join(history::FILE);
    let history = History::open(&file, 1 << 20, holds.clone()).unwrap();
    // A compaction waits for the reads in flight, and these are held: no compaction here (the
    // crash tests sweep it).
    let (memory, compaction) = (Memory::default(), Compaction { free_percent: 99 });
    Arc::new(Snapshots::with_history(inbox, history, CODE, memory, compaction, holds).unwrap())
}

/// Imports `text` as `date`: how many pieces the store did not hold.
fn import(snapshots: &Snapshots, date: &str, text: &str) -> usize {
    snapshots.import(day(date), &mut text.as_bytes(), Source::Import).unwrap().new_pieces
}

fn export(snapshots: &Snapshots, date: &str) -> Vec<u8> {
    snapshots.export(day(date)).unwrap().unwrap()
}

/// Every piece of every date present, none that no date names.
fn assert_whole(state: &Path) {
    match verify::verify(state).unwrap().store {
        StoreCheck::Read { dates, unnamed, .. } => {
            for date in &dates {
                assert!(date.outcome.is_ok(), "{}: {:?}", date.date, date.outcome);
            }
            assert_eq!(dates.len(), 2);
            assert_eq!(unnamed, 0);
        }
        other => panic!("{other:?}"),
    }
}

/// Two dates, the older imported second: what it added is what it alone names.
struct Two {
    state: tempfile::TempDir,
    older: String,
    newest: String,
    older_own: usize,
    newest_own: usize,
    exports: [Vec<u8>; 2],
}

fn two_dates() -> Two {
    let state = tempfile::tempdir().unwrap();
    let (older, newest) = (document(40, 1, OLDER), document(40, 2, NEWEST));
    let snapshots = open(state.path(), &[]);
    let all_newest = import(&snapshots, NEWEST, &newest);
    let older_own = import(&snapshots, OLDER, &older);
    let exports = [export(&snapshots, OLDER), export(&snapshots, NEWEST)];
    snapshots.close();
    // What the newest names that the older does not: all of it, less what they share.
    let shared = {
        let other = tempfile::tempdir().unwrap();
        let alone = open(other.path(), &[]);
        import(&alone, OLDER, &older);
        let with_older = import(&alone, NEWEST, &newest);
        alone.close();
        all_newest - with_older
    };
    assert!(older_own > 0 && shared > 0, "the dates share some pieces and not all");
    Two { state, older, newest, older_own, newest_own: all_newest - shared, exports }
}

/// After the race: every piece present, and after a restart every date exports as before.
fn assert_served_as_before(two: &Two) {
    assert_whole(two.state.path());
    let snapshots = open(two.state.path(), &[]);
    assert_eq!(export(&snapshots, OLDER), two.exports[0]);
    assert_eq!(export(&snapshots, NEWEST), two.exports[1]);
    let dated = snapshots.date(Some(day(OLDER)), Mode::Blocking).unwrap().unwrap();
    let count = dated.application_count();
    assert_eq!(applications(dated.applications(0..count, Mode::Blocking).unwrap()), 40);
    snapshots.close();
}

/// How many applications parts joined by commas hold.
fn applications(parts: Vec<Arc<[u8]>>) -> usize {
    let joined: Vec<&[u8]> = parts.iter().map(|p| &**p).collect();
    let list = [b"[".as_slice(), &joined.join(&b","[..]), b"]"].concat();
    serde_json::from_slice::<Vec<serde_json::Value>>(&list).unwrap().len()
}

#[test]
fn a_page_held_across_the_delete_and_reimport_of_its_date_changes_nothing_stored() {
    let two = two_dates();
    let snapshots = open(two.state.path(), &[hold::SERVE_READ]);
    // A first touch of the older date: its index read from the store, held before it is kept.
    let reader = {
        let snapshots = Arc::clone(&snapshots);
        std::thread::spawn(move || {
            let dated =
                snapshots.date(Some(day(OLDER)), Mode::Blocking)?.ok_or(ServeError::Cold)?;
            dated.applications(0..10, Mode::Blocking)
        })
    };
    assert!(snapshots.holds_for_test().wait_arrival(hold::SERVE_READ, Duration::from_secs(60)));
    snapshots.delete(day(OLDER)).unwrap();
    // The same file again: every piece the delete removed is written again.
    assert_eq!(import(&snapshots, OLDER, &two.older), two.older_own);
    snapshots.holds_for_test().release(hold::SERVE_READ);
    // The held read is of a version no longer stored: it says so, and is asked again.
    match reader.join().unwrap().map(applications) {
        Err(ServeError::Changed(date)) => assert_eq!(date, day(OLDER)),
        other => panic!("{other:?}"),
    }
    // Nothing of the deleted version was kept: the newest date is all memory holds.
    let newest = snapshots.newest().unwrap().memory_bytes();
    assert_eq!(snapshots.resident_bytes(), newest);
    // Asked again, the page comes from the version now stored.
    let dated = snapshots.date(Some(day(OLDER)), Mode::Blocking).unwrap().unwrap();
    assert_eq!(applications(dated.applications(0..10, Mode::Blocking).unwrap()), 10);
    snapshots.close();
    drop(dated);
    drop(snapshots);
    assert_served_as_before(&two);
}

#[test]
fn an_export_of_the_newest_held_across_its_delete_and_reimport_changes_nothing_stored() {
    let two = two_dates();
    let snapshots = open(two.state.path(), &[hold::EXPORT_READ]);
    // The export holds the newest date whole, every piece of it, while it is held.
    let exporter = {
        let snapshots = Arc::clone(&snapshots);
        std::thread::spawn(move || export(&snapshots, NEWEST))
    };
    assert!(snapshots.holds_for_test().wait_arrival(hold::EXPORT_READ, Duration::from_secs(60)));
    snapshots.delete(day(NEWEST)).unwrap();
    assert_eq!(snapshots.newest().unwrap().date(), day(OLDER));
    assert_eq!(import(&snapshots, NEWEST, &two.newest), two.newest_own);
    snapshots.holds_for_test().release(hold::EXPORT_READ);
    // It read one version, whole: the data is the same either way.
    assert_eq!(exporter.join().unwrap(), two.exports[1]);
    snapshots.close();
    drop(snapshots);
    assert_served_as_before(&two);
}

#[test]
fn an_export_of_an_older_date_held_across_its_delete_and_reimport_reads_one_version() {
    let two = two_dates();
    let snapshots = open(two.state.path(), &[hold::EXPORT_READ]);
    // An older date's export reads in one transaction of the store: it keeps the version it
    // started with, whatever commits meanwhile.
    let exporter = {
        let snapshots = Arc::clone(&snapshots);
        std::thread::spawn(move || export(&snapshots, OLDER))
    };
    assert!(snapshots.holds_for_test().wait_arrival(hold::EXPORT_READ, Duration::from_secs(60)));
    snapshots.delete(day(OLDER)).unwrap();
    assert_eq!(import(&snapshots, OLDER, &two.older), two.older_own);
    snapshots.holds_for_test().release(hold::EXPORT_READ);
    assert_eq!(exporter.join().unwrap(), two.exports[0]);
    snapshots.close();
    drop(snapshots);
    assert_served_as_before(&two);
}
