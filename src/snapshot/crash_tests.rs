//! Deterministic crash consistency: every sync of an import, a replacement, a delete, a prune
//! and an inbox take-over is a crash point, and each one is tried.
//!
//! As redb's own `tests/crash_consistency.rs`: the store runs on [`CrashBackend`], which applies
//! every write at once (what the process sees) and makes the file's content durable only at a
//! sync, up to a chosen one: everything written after sync N is lost, as a power cut there
//! would lose it. Each operation is run once to count its syncs, then once per sync point. The
//! image each run leaves is written to a file and opened as `serve` opens it after a crash
//! (repair included), and checked: every date is wholly its version before or its version
//! after (its export is one of the two, byte for byte), a single-commit operation left all its
//! dates on the same side, no date names a piece the store lacks and the store holds no piece
//! that no date names (`snapshot verify`'s check, run on the file). The take-over is checked
//! again once the next start has taken the files over: every date is then the file's.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use std::ops::Bound;

use redb::{BackendError, StorageBackend};

use super::date::Date;
use super::history::{self, History};
use super::hold::Holds;
use super::inbox;
use super::retention::Retention;
use super::sample::document;
use super::serve::Memory;
use super::store::{Compaction, Snapshots, Source};
use super::verify::{self, StoreCheck};
use crate::locks;

#[derive(Debug, Default)]
struct CrashState {
    /// The file as the process sees it: every write applied at once.
    live: Vec<u8>,
    /// The file as a crash leaves it: what the last sync that counted made durable.
    durable: Vec<u8>,
    syncs: u64,
    /// Syncs after this many make nothing durable: the crash point.
    last_durable_sync: Option<u64>,
    /// The first write to the header (offset 0) after the crash point, with what it wrote:
    /// a disk may put it down before the pages written with it (redb's own crash test does
    /// the same).
    header_after: Option<Vec<u8>>,
}

/// A store's file that keeps only what was synced, up to a chosen sync.
#[derive(Debug, Clone, Default)]
struct CrashBackend(Arc<Mutex<CrashState>>);

impl CrashBackend {
    /// A file whose durable content is `image`, that loses what is written after `crash_at`
    /// syncs (never, when `None`).
    fn new(image: &[u8], crash_at: Option<u64>) -> Self {
        let state = CrashState {
            live: image.to_vec(),
            durable: image.to_vec(),
            syncs: 0,
            last_durable_sync: crash_at,
            header_after: None,
        };
        Self(Arc::new(Mutex::new(state)))
    }

    fn syncs(&self) -> u64 {
        locks::lock(&self.0).syncs
    }

    fn durable(&self) -> Vec<u8> {
        locks::lock(&self.0).durable.clone()
    }

    /// The durable file with the first header write after the crash point on it, if that
    /// makes another file.
    fn with_header_after(&self) -> Option<Vec<u8>> {
        let state = locks::lock(&self.0);
        let header = state.header_after.as_ref()?;
        let mut image = state.durable.clone();
        let target = image.get_mut(..header.len())?;
        if target == header.as_slice() {
            return None;
        }
        target.copy_from_slice(header);
        Some(image)
    }
}

impl StorageBackend for CrashBackend {
    fn len(&self) -> Result<u64, std::io::Error> {
        Ok(locks::lock(&self.0).live.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        let state = locks::lock(&self.0);
        let at = usize::try_from(offset).map_err(|_| ErrorKind::InvalidInput)?;
        let bytes = state.live.get(at..at + out.len()).ok_or(ErrorKind::UnexpectedEof)?;
        out.copy_from_slice(bytes);
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        let len = usize::try_from(len).map_err(|_| ErrorKind::InvalidInput)?;
        locks::lock(&self.0).live.resize(len, 0);
        Ok(())
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        let mut state = locks::lock(&self.0);
        state.syncs += 1;
        if state.last_durable_sync.is_none_or(|last| state.syncs <= last) {
            state.durable = state.live.clone();
        }
        Ok(())
    }

    // One process, as the server: every lock redb asks for is granted (its single-writer mode,
    // the server's, locks byte ranges to keep other processes out).
    fn try_lock_range(&self, _: Bound<u64>, _: Bound<u64>) -> Result<bool, BackendError> {
        Ok(true)
    }

    fn try_lock_shared_range(&self, _: Bound<u64>, _: Bound<u64>) -> Result<bool, BackendError> {
        Ok(true)
    }

    fn lock_range(&self, _: Bound<u64>, _: Bound<u64>) -> Result<(), BackendError> {
        Ok(())
    }

    fn lock_shared_range(&self, _: Bound<u64>, _: Bound<u64>) -> Result<(), BackendError> {
        Ok(())
    }

    fn unlock_range(&self, _: Bound<u64>, _: Bound<u64>) -> Result<(), BackendError> {
        Ok(())
    }

    fn query_lock_range(&self, _: Bound<u64>, _: Bound<u64>) -> Result<bool, BackendError> {
        Ok(false)
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        let mut state = locks::lock(&self.0);
        let at = usize::try_from(offset).map_err(|_| ErrorKind::InvalidInput)?;
        if state.live.len() < at + data.len() {
            state.live.resize(at + data.len(), 0);
        }
        state.live[at..at + data.len()].copy_from_slice(data);
        let crashed = state.last_durable_sync.is_some_and(|last| state.syncs >= last);
        if at == 0 && crashed && state.header_after.is_none() {
            state.header_after = Some(data.to_vec());
        }
        Ok(())
    }
}

const CODE: &str = "CRASH-TEST";

fn day(text: &str) -> Date {
    Date::parse(text).unwrap()
}

/// Every date's export, by date.
type Exports = BTreeMap<Date, Vec<u8>>;

fn exports(snapshots: &Snapshots) -> Exports {
    let dates: Vec<Date> = snapshots.catalog().newest_first().map(|e| e.date).collect();
    dates.into_iter().map(|d| (d, snapshots.export(d).unwrap().unwrap())).collect()
}

/// A store with compaction on at the least free space, so the removals and replacements swept
/// compact too, and every sync of the compaction is a crash point as well.
fn store_on(backend: CrashBackend, inbox: &Path) -> Snapshots {
    let history =
        History::with_backend(backend, Path::new("(crash test)"), 1 << 20, Holds::default())
            .unwrap();
    let compaction = Compaction { free_percent: 1 };
    Snapshots::with_history(
        inbox.to_owned(),
        history,
        CODE,
        Memory::default(),
        compaction,
        Holds::default(),
    )
    .unwrap()
}

fn import(snapshots: &Snapshots, date: &str, document: &str) {
    snapshots.import(day(date), &mut document.as_bytes(), Source::Import).unwrap();
}

/// A store's file made by `setup`, closed cleanly.
fn image_of(setup: impl Fn(&Snapshots)) -> Vec<u8> {
    let backend = CrashBackend::new(&[], None);
    let inbox = tempfile::tempdir().unwrap();
    let snapshots = store_on(backend.clone(), inbox.path());
    setup(&snapshots);
    snapshots.close();
    drop(snapshots);
    backend.durable()
}

/// What one operation did to the store at every crash point.
struct Swept {
    points: u64,
    old: usize,
    new: usize,
}

/// What a sweep compares each crash with.
struct Sides<'a> {
    old: Exports,
    new: Exports,
    /// Every date on the same side (an operation of one commit).
    single_commit: bool,
    /// In the inbox when the operation started (a take-over).
    inbox_files: &'a [(Date, String)],
}

fn put_files(dir: &Path, files: &[(Date, String)]) {
    for (date, text) in files {
        std::fs::write(inbox::path_of(dir, *date), text).unwrap();
    }
}

/// Runs `operation` on the store `before` once to count its syncs, then once per sync point,
/// each crashed there, and checks what each crash leaves (see [`check_image`]): the durable
/// file, and the durable file with the header write that came after it, when there is one.
/// `inbox_files` are in the inbox when the operation starts.
fn sweep(
    before: &[u8],
    inbox_files: &[(Date, String)],
    single_commit: bool,
    operation: &dyn Fn(&Snapshots),
) -> Swept {
    let inbox = tempfile::tempdir().unwrap();
    let old = exports(&store_on(CrashBackend::new(before, None), inbox.path()));
    put_files(inbox.path(), inbox_files);
    let probe = CrashBackend::new(before, None);
    let new = {
        let snapshots = store_on(probe.clone(), inbox.path());
        operation(&snapshots);
        let new = exports(&snapshots);
        snapshots.close();
        new
    };
    let total = probe.syncs();
    assert!(total > 2, "the operation synced {total} time(s): nothing to sweep");
    let sides = Sides { old, new, single_commit, inbox_files };
    let mut swept = Swept { points: 0, old: 0, new: 0 };
    for crash_at in 0..=total {
        let inbox = tempfile::tempdir().unwrap();
        put_files(inbox.path(), inbox_files);
        let backend = CrashBackend::new(before, Some(crash_at));
        {
            let snapshots = store_on(backend.clone(), inbox.path());
            operation(&snapshots);
            snapshots.close();
        }
        let mut images = vec![backend.durable()];
        images.extend(backend.with_header_after());
        for image in images {
            let at = format!("crash at sync {crash_at} of {total}");
            let (on_old, on_new) = check_image(&image, &sides, &at);
            swept.old += usize::from(on_new == 0);
            swept.new += usize::from(on_new > 0 && on_old == 0);
            swept.points += 1;
        }
    }
    // The sweep spans the operation: some crash points leave it undone, some done.
    assert!(swept.old > 0 && swept.new > 0, "{} old, {} new", swept.old, swept.new);
    eprintln!(
        "{} crash image(s) at {} sync point(s): {} left the store as before, {} as after, every \
         one whole",
        swept.points,
        total + 1,
        swept.old,
        swept.new
    );
    swept
}

/// Opens the file a crash left as `serve` opens it (redb repairs it), and checks it: every date
/// its old version or its new, all on one side for a single commit, `snapshot verify` finding
/// every piece and none unnamed; and for a take-over, that the next start finishes it. Returns
/// how many dates are on the old side and on the new one.
fn check_image(image: &[u8], sides: &Sides<'_>, at: &str) -> (usize, usize) {
    let state = tempfile::tempdir().unwrap();
    let file = state.path().join(history::FILE);
    std::fs::write(&file, image).unwrap();
    // Without taking over the inbox: what the crash left, as it left it.
    let empty = tempfile::tempdir().unwrap();
    let history = History::open(&file, 1 << 20, Holds::default()).unwrap();
    let (memory, compaction, holds) = (Memory::default(), Compaction::default(), Holds::default());
    let recovered =
        Snapshots::with_history(empty.path().to_owned(), history, CODE, memory, compaction, holds)
            .unwrap();
    let got = exports(&recovered);
    recovered.close();
    drop(recovered);
    let (old, new) = (&sides.old, &sides.new);
    let (mut on_old, mut on_new) = (0, 0);
    for date in old.keys().chain(new.keys()) {
        let (was, became, is) = (old.get(date), new.get(date), got.get(date));
        assert!(is == was || is == became, "{at}: {date} is neither its old version nor its new");
        on_old += usize::from(is == was && was != became);
        on_new += usize::from(is == became && was != became);
    }
    assert!(
        !sides.single_commit || on_old == 0 || on_new == 0,
        "{at}: {on_old} date(s) old and {on_new} new"
    );
    match &verify::verify(state.path()).unwrap().store {
        StoreCheck::Read { dates, unnamed, .. } => {
            let damaged: Vec<String> = dates
                .iter()
                .filter_map(|d| d.outcome.as_ref().err().map(|e| format!("{}: {e}", d.date)))
                .collect();
            assert!(damaged.is_empty(), "{at}: {damaged:?}");
            assert_eq!(*unnamed, 0, "{at}: pieces no date names");
        }
        other => panic!("{at}: {other:?}"),
    }
    if !sides.inbox_files.is_empty() {
        // The crash came before the files were removed (they go once all are in): the next
        // start takes them over, and every date is then the file's.
        let folder = state.path().join(inbox::FOLDER);
        std::fs::create_dir(&folder).unwrap();
        put_files(&folder, sides.inbox_files);
        let snapshots =
            Snapshots::open(state.path(), CODE, memory, compaction, &mut |_, _| {}).unwrap();
        assert_eq!(&exports(&snapshots), new, "{at}: after the take-over");
        assert_eq!(std::fs::read_dir(&folder).unwrap().count(), 0, "{at}: the files stay");
        snapshots.close();
    }
    (on_old, on_new)
}

fn two_dates() -> Vec<u8> {
    image_of(|s| {
        import(s, "2024-05-01", &document(30, 1, "2024-05-01"));
        import(s, "2024-05-02", &document(30, 2, "2024-05-02"));
    })
}

#[test]
fn an_import_crashed_at_every_sync_leaves_the_date_absent_or_whole() {
    let swept = sweep(&two_dates(), &[], true, &|s| {
        import(s, "2024-05-03", &document(30, 3, "2024-05-03"));
    });
    assert!(swept.points > 3);
}

#[test]
fn a_replacement_crashed_at_every_sync_leaves_the_old_version_or_the_new() {
    let swept = sweep(&two_dates(), &[], true, &|s| {
        import(s, "2024-05-02", &document(45, 7, "2024-05-02"));
    });
    assert!(swept.points > 3);
}

#[test]
fn a_delete_crashed_at_every_sync_leaves_the_date_whole_or_gone() {
    // The newest: the next one is pinned in its place.
    let swept = sweep(&two_dates(), &[], true, &|s| {
        s.delete(day("2024-05-02")).unwrap();
    });
    assert!(swept.points > 3);
}

#[test]
fn a_prune_crashed_at_every_sync_removes_every_date_due_or_none() {
    let four = image_of(|s| {
        for (d, seed) in
            [("2024-05-01", 1), ("2024-05-02", 2), ("2024-05-03", 3), ("2024-05-04", 4)]
        {
            import(s, d, &document(20, seed, d));
        }
    });
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_715_688_000);
    let swept = sweep(&four, &[], true, &|s| {
        let pruned = s.prune(Retention { keep_count: Some(2), keep_days: None }, now);
        assert_eq!(pruned.len(), 2);
    });
    assert!(swept.points > 3);
}

#[test]
fn an_inbox_take_over_crashed_at_every_sync_keeps_every_file_until_all_are_in() {
    let files: Vec<(Date, String)> = [("2024-05-02", 5), ("2024-05-03", 6), ("2024-05-04", 7)]
        .into_iter()
        .map(|(d, seed)| (day(d), document(25, seed, d)))
        .collect();
    let one = image_of(|s| import(s, "2024-05-01", &document(25, 1, "2024-05-01")));
    // The take-over is what a start does with the inbox: `reload` runs the same.
    let swept = sweep(&one, &files, false, &|s| {
        let reloaded = s.reload().unwrap();
        assert_eq!((reloaded.imported, reloaded.refused), (3, 0));
    });
    assert!(swept.points > 3);
}
