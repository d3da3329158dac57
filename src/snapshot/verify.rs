//! `aims-api snapshot verify`: the history store and the inbox checked offline, read-only.
//!
//! The store: every date is read, and every piece it names is read back, decompressed and
//! checked against its key (an application's SHA-256, a run's members, a list's SHA-256), so a
//! bit flipped on disk is named with the date and the piece, before a request meets it. Each
//! piece is checked once, however many dates share it. The database is opened read-only beside
//! a running `serve` (its single writer), so the check needs no downtime.
//!
//! The inbox (`<state_dir>/snapshots/`): every dated file is put through the same checks as an
//! import (read and checked as an import reads and checks it): one that passes is pending (the server takes it
//! over at its next start or reload), one that fails is named with its JSON path and reason.
//! Temporary files left by an interrupted write are named too. Files that are not snapshots are
//! listed as ignored, as `serve` ignores them; they are not problems.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::check;
use super::date::Date;
use super::format::{self, Invalid, Problem, ReadError};
use super::history::tables::{self, PieceKind, Reading};
use super::history::{self, HistoryError, ReadOnly};
use super::inbox;
use super::piece::codec;
use super::piece::record::{Header, hex};
use super::piece::{Digest, RUN_APPS, run_key, sha256};
use crate::durable;

/// What one file in the folder is.
#[derive(Debug)]
pub enum State {
    /// A dated snapshot that would load: the server takes it over at its next start or reload.
    Ok { bytes: u64 },
    /// A dated snapshot that would be refused: where and why.
    Invalid(Invalid),
    /// A dated name that cannot be read as a file.
    Unreadable(String),
    /// A temporary file of an interrupted import or delete.
    Leftover,
    /// Not a snapshot's name: `serve` ignores it too.
    Ignored,
}

#[derive(Debug)]
pub struct FileCheck {
    pub name: String,
    pub date: Option<Date>,
    pub state: State,
}

impl FileCheck {
    pub fn is_problem(&self) -> bool {
        match self.state {
            State::Ok { .. } | State::Ignored => false,
            State::Invalid(_) | State::Unreadable(_) | State::Leftover => true,
        }
    }

    fn status(&self) -> &'static str {
        match self.state {
            State::Ok { .. } => "pending",
            State::Invalid(_) => "invalid",
            State::Unreadable(_) => "unreadable",
            State::Leftover => "leftover",
            State::Ignored => "ignored",
        }
    }

    /// Why it is what it is, for people.
    pub fn reason(&self) -> String {
        match &self.state {
            State::Ok { bytes } => format!(
                "loads ({bytes} bytes); serve takes it into the history store at its next start \
                 or reload"
            ),
            State::Invalid(invalid) => invalid.to_string(),
            State::Unreadable(reason) => reason.clone(),
            State::Leftover => "a temporary file left by an interrupted write; serve removes it \
                                at its next start, or remove it by hand"
                .to_owned(),
            State::Ignored => "not a snapshot file name (YYYY-MM-DD.json); ignored".to_owned(),
        }
    }
}

/// One date of the store.
#[derive(Debug)]
pub struct DateCheck {
    pub date: Date,
    /// `Ok(pieces named)`, or what is wrong.
    pub outcome: Result<usize, String>,
}

/// The store as a whole.
#[derive(Debug)]
pub enum StoreCheck {
    /// No store yet (nothing imported since the upgrade): not a problem.
    Absent,
    /// It could not be opened or read at all.
    Unreadable(String),
    Read {
        dates: Vec<DateCheck>,
        /// Distinct pieces checked.
        pieces: usize,
        /// Pieces no date names (a removal always takes them with it, so normally 0).
        unnamed: usize,
    },
}

/// The store's dates, then the inbox's files in name order.
#[derive(Debug)]
pub struct Report {
    pub store_path: PathBuf,
    pub store: StoreCheck,
    pub folder: PathBuf,
    pub files: Vec<FileCheck>,
}

impl Report {
    pub fn problems(&self) -> usize {
        let store = match &self.store {
            StoreCheck::Absent => 0,
            StoreCheck::Unreadable(_) => 1,
            StoreCheck::Read { dates, .. } => dates.iter().filter(|d| d.outcome.is_err()).count(),
        };
        store + self.files.iter().filter(|f| f.is_problem()).count()
    }

    pub fn to_json(&self) -> Value {
        let files: Vec<Value> = self
            .files
            .iter()
            .map(|f| {
                let mut entry = json!({
                    "file": f.name,
                    "date": f.date.map(|d| d.to_string()),
                    "status": f.status(),
                    "reason": f.reason(),
                });
                if let State::Invalid(invalid) = &f.state {
                    let (line, column) = invalid.problem.line_column().unzip();
                    entry["path"] = json!(invalid.path);
                    entry["reason"] = json!(invalid.problem.to_string());
                    entry["line"] = json!(line);
                    entry["column"] = json!(column);
                }
                if let State::Ok { bytes } = f.state {
                    entry["bytes"] = json!(bytes);
                }
                entry
            })
            .collect();
        let store = match &self.store {
            StoreCheck::Absent => json!({ "status": "absent" }),
            StoreCheck::Unreadable(reason) => json!({ "status": "unreadable", "reason": reason }),
            StoreCheck::Read { dates, pieces, unnamed } => {
                let dates: Vec<Value> = dates
                    .iter()
                    .map(|d| match &d.outcome {
                        Ok(pieces) => json!({
                            "date": d.date.to_string(), "status": "ok", "pieces": pieces,
                        }),
                        Err(reason) => json!({
                            "date": d.date.to_string(), "status": "damaged", "reason": reason,
                        }),
                    })
                    .collect();
                json!({ "status": "read", "dates": dates, "pieces": pieces, "unnamed_pieces": unnamed })
            }
        };
        json!({
            "store": self.store_path.display().to_string(),
            "folder": self.folder.display().to_string(),
            "ok": self.problems() == 0,
            "problems": self.problems(),
            "history": store,
            "files": files,
        })
    }

    /// One line per date and per file, then the verdict.
    pub fn render(&self) -> String {
        let mut text = String::new();
        let store = self.store_path.display();
        match &self.store {
            StoreCheck::Absent => {
                text.push_str(&format!("absent      {store}: no history store yet\n"));
            }
            StoreCheck::Unreadable(reason) => {
                text.push_str(&format!("unreadable  {store}: {reason}\n"));
            }
            StoreCheck::Read { dates, pieces, unnamed } => {
                for date in dates {
                    match &date.outcome {
                        Ok(named) => text.push_str(&format!(
                            "ok          {}: {named} piece(s), each matches its key\n",
                            date.date
                        )),
                        Err(reason) => {
                            text.push_str(&format!("damaged     {}: {reason}\n", date.date));
                        }
                    }
                }
                let unnamed = match unnamed {
                    0 => String::new(),
                    n => format!(", {n} piece(s) no date names"),
                };
                text.push_str(&format!(
                    "{store}: {} date(s), {pieces} distinct piece(s) checked{unnamed}\n",
                    dates.len()
                ));
            }
        }
        for file in &self.files {
            let status = file.status();
            text.push_str(&format!("{status:<10}  {}: {}\n", file.name, file.reason()));
        }
        match self.problems() {
            0 => text.push_str("no problem found\n"),
            n => text.push_str(&format!(
                "{n} problem(s): import a good snapshot for a damaged date or an invalid file, or \
                 delete it (aims-api snapshot delete DATE)\n"
            )),
        }
        text
    }
}

/// Checks `<state_dir>/history.redb` and `<state_dir>/snapshots/`. A folder that does not
/// exist yet holds no snapshots and is not a problem; one that cannot be read is an error.
pub fn verify(state_dir: &Path) -> io::Result<Report> {
    let store_path = state_dir.join(history::FILE);
    let store = check_store(&store_path);
    let (folder, files) = waiting_files(state_dir)?;
    Ok(Report { store_path, store, folder, files })
}

/// The files in `<state_dir>/snapshots/`, in name order, each checked as an import would be
/// (`diagnose` counts them too). A folder that does not exist yet holds none.
pub fn waiting_files(state_dir: &Path) -> io::Result<(PathBuf, Vec<FileCheck>)> {
    let folder = state_dir.join(inbox::FOLDER);
    let mut files = Vec::new();
    let entries = match fs::read_dir(&folder) {
        Ok(entries) => Some(entries),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    for entry in entries.into_iter().flatten() {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let date = name.strip_suffix(".json").and_then(|d| Date::parse(d).ok());
        let state = if durable::is_temp_name(&name) {
            State::Leftover
        } else if date.is_some() {
            check(&entry.path())
        } else {
            State::Ignored
        };
        files.push(FileCheck { name, date, state });
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((folder, files))
}

fn check_store(path: &Path) -> StoreCheck {
    match fs::metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return StoreCheck::Absent,
        Err(e) => return StoreCheck::Unreadable(format!("cannot read: {e}")),
        Ok(_) => {}
    }
    let store = match ReadOnly::open(path) {
        Ok(store) => store,
        Err(e) => return StoreCheck::Unreadable(e.to_string()),
    };
    match store.read(read_store) {
        Ok(check) => check,
        Err(e) => StoreCheck::Unreadable(e.to_string()),
    }
}

/// Every date, every piece it names (each piece once), and the pieces no date names.
fn read_store(reading: &Reading<'_>) -> Result<StoreCheck, HistoryError> {
    let dates = reading.dates()?;
    let mut checked = Verdicts::new();
    let mut named: HashSet<(PieceKind, Digest)> = HashSet::new();
    let mut results = Vec::with_capacity(dates.len());
    for (date, header) in dates {
        let outcome = check_date(reading, date, &header, &mut checked, &mut named);
        results.push(DateCheck { date, outcome });
    }
    let mut unnamed = 0;
    for kind in [PieceKind::Application, PieceKind::Run, PieceKind::List] {
        let keys = tables::all_keys(reading, kind)?;
        unnamed += keys.iter().filter(|key| !named.contains(&(kind, **key))).count();
    }
    Ok(StoreCheck::Read { dates: results, pieces: checked.len(), unnamed })
}

/// Each piece checked so far and its verdict: for an application its plaintext length (which
/// the runs it sits in need), for the others 0.
type Verdicts = HashMap<(PieceKind, Digest), Result<u32, String>>;

/// One date: `Ok(pieces it names)` or the first thing wrong. `checked` remembers each
/// piece's verdict (and an application's plaintext length, which its runs need).
fn check_date(
    reading: &Reading<'_>,
    date: Date,
    header: &Header,
    checked: &mut Verdicts,
    named: &mut HashSet<(PieceKind, Digest)>,
) -> Result<usize, String> {
    let keys = reading
        .date_pieces(date)
        .map_err(|e| e.to_string())?
        .ok_or("its application list is missing")?
        .keys;
    let mut count = 0;
    let [levels, categories, teams] = header.list_keys().map_err(|e| e.0)?;
    for (key, is_teams) in [(levels, false), (categories, false), (teams, true)] {
        let verdict = checked
            .entry((PieceKind::List, key))
            .or_insert_with(|| check_list(reading, &key, is_teams).map(|()| 0));
        verdict.clone().map_err(|e| format!("list {}: {e}", hex(&key)))?;
        named.insert((PieceKind::List, key));
        count += 1;
    }
    let mut lengths = Vec::with_capacity(keys.len());
    for key in &keys {
        let verdict = checked
            .entry((PieceKind::Application, *key))
            .or_insert_with(|| check_app(reading, key));
        let len = verdict.clone().map_err(|e| format!("application {}: {e}", hex(key)))?;
        lengths.push(len);
        named.insert((PieceKind::Application, *key));
        count += 1;
    }
    for (members, lengths) in keys.chunks(RUN_APPS).zip(lengths.chunks(RUN_APPS)) {
        let key = run_key(members);
        let verdict = checked
            .entry((PieceKind::Run, key))
            .or_insert_with(|| check_run(reading, &key, members, lengths).map(|()| 0));
        verdict.clone().map_err(|e| format!("run {}: {e}", hex(&key)))?;
        named.insert((PieceKind::Run, key));
        count += 1;
    }
    Ok(count)
}

fn raw(reading: &Reading<'_>, kind: PieceKind, key: &Digest) -> Result<Vec<u8>, String> {
    tables::raw(reading, kind, key)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("the {} is missing from the store", kind.name()))
}

/// An application: it decodes, decompresses to its stored length and CRC-32, and its bytes'
/// SHA-256 is its key. Returns its plaintext length.
fn check_app(reading: &Reading<'_>, key: &Digest) -> Result<u32, String> {
    let app =
        codec::decode_app(*key, &raw(reading, PieceKind::Application, key)?).map_err(|e| e.0)?;
    let plain = app.compressed.inflate().map_err(|e| e.to_string())?;
    if &sha256(&plain) != key {
        return Err("its bytes do not match its SHA-256".into());
    }
    Ok(app.compressed.plain_len)
}

/// A run: it decompresses to its members joined by commas, each matching its key.
fn check_run(
    reading: &Reading<'_>,
    key: &Digest,
    members: &[Digest],
    lengths: &[u32],
) -> Result<(), String> {
    let run = codec::decode_run(*key, &raw(reading, PieceKind::Run, key)?).map_err(|e| e.0)?;
    let plain = run.compressed.inflate().map_err(|e| e.to_string())?;
    let mut at = 0usize;
    for (i, (member, &len)) in members.iter().zip(lengths).enumerate() {
        if i > 0 {
            if plain.get(at) != Some(&b',') {
                return Err(format!("no comma before member {i}"));
            }
            at += 1;
        }
        let piece = plain.get(at..at + len as usize).ok_or("it is shorter than its members")?;
        if &sha256(piece) != member {
            return Err(format!("member {i} does not match its application"));
        }
        at += len as usize;
    }
    if at != plain.len() {
        return Err("it is longer than its members".into());
    }
    Ok(())
}

/// A list: its bytes' SHA-256 is its key, and the teams' encoding reads back.
fn check_list(reading: &Reading<'_>, key: &Digest, teams: bool) -> Result<(), String> {
    let bytes = raw(reading, PieceKind::List, key)?;
    if &sha256(&bytes) != key {
        return Err("its bytes do not match its SHA-256".into());
    }
    if teams {
        codec::decode_teams(&bytes).map_err(|e| e.0)?;
    }
    Ok(())
}

fn check(path: &Path) -> State {
    // `metadata` follows a symbolic link, as `serve`'s read does.
    match fs::metadata(path) {
        Ok(meta) if !meta.is_file() => return State::Unreadable("not a regular file".into()),
        Ok(_) => {}
        Err(e) => return State::Unreadable(format!("cannot read: {e}")),
    }
    let file = match fs::File::open(path) {
        Ok(file) => file,
        Err(e) => return State::Unreadable(format!("cannot read: {e}")),
    };
    match format::read(&mut io::BufReader::with_capacity(256 << 10, file)) {
        Ok(mut received) => match check::check(&mut received.document) {
            Ok(_) => State::Ok { bytes: received.bytes },
            Err(invalid) => State::Invalid(invalid),
        },
        Err(ReadError::Invalid(invalid)) => State::Invalid(invalid),
        Err(ReadError::Empty) => State::Invalid(Invalid::at(
            "$".into(),
            Problem::Syntax { message: "EOF while parsing a value".into(), line: 1, column: 0 },
        )),
        Err(ReadError::Body(e)) => State::Unreadable(format!("cannot read: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_file_is_told_apart_and_nothing_is_changed() {
        let state = tempfile::tempdir().unwrap();
        let empty = verify(state.path()).unwrap();
        assert_eq!(empty.files.len(), 0, "no folder yet: nothing wrong");
        assert!(matches!(empty.store, StoreCheck::Absent), "no store yet: nothing wrong");
        assert_eq!(empty.problems(), 0);
        let folder = state.path().join("snapshots");
        fs::create_dir(&folder).unwrap();
        let sample = include_bytes!("../../examples/snapshot-2024-05-14.json");
        fs::write(folder.join("2024-05-14.json"), sample).unwrap();
        fs::write(folder.join("2024-05-15.json"), b"[]").unwrap();
        fs::create_dir(folder.join("2024-05-16.json")).unwrap();
        fs::write(folder.join(".2024-05-17.json.1.0.tmp"), b"{").unwrap();
        fs::write(folder.join("2024-02-30.json"), b"{}").unwrap();
        let report = verify(state.path()).unwrap();
        let seen: Vec<(&str, &str)> =
            report.files.iter().map(|f| (f.name.as_str(), f.status())).collect();
        assert_eq!(
            seen,
            [
                (".2024-05-17.json.1.0.tmp", "leftover"),
                ("2024-02-30.json", "ignored"),
                ("2024-05-14.json", "pending"),
                ("2024-05-15.json", "invalid"),
                ("2024-05-16.json", "unreadable"),
            ]
        );
        assert_eq!(report.problems(), 3);
        assert_eq!(
            report.files[3].reason(),
            "$: a snapshot is a JSON object, {…} (line 1, column 1)"
        );
        assert_eq!(report.files[4].reason(), "not a regular file");
        assert!(folder.join(".2024-05-17.json.1.0.tmp").exists(), "verify removes nothing");
        assert_eq!(report.to_json()["files"][2]["bytes"], sample.len());
    }
}
