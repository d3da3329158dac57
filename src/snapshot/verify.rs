//! `aims-api snapshot verify`: the snapshot folder checked offline, read-only.
//!
//! Every dated file is read and put through the same checks as an import (the whole of
//! [`super::validate`]), and each one that fails is named with its JSON path and reason;
//! temporary files left by an interrupted import are named too (`serve` removes them at its
//! next start). Nothing is changed, nothing is locked, and no server is needed: it can run
//! beside a running `serve` (which only ever renames whole files into place) or with none,
//! before a start or after a restore. Files that are not snapshots are listed as ignored, as
//! `serve` ignores them; they are not problems.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::{Date, Invalid, validate};
use crate::durable;

/// What one file in the folder is.
#[derive(Debug)]
pub enum State {
    /// A dated snapshot that would load.
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
            State::Ok { .. } => "ok",
            State::Invalid(_) => "invalid",
            State::Unreadable(_) => "unreadable",
            State::Leftover => "leftover",
            State::Ignored => "ignored",
        }
    }

    /// Why it is what it is, for people.
    pub fn reason(&self) -> String {
        match &self.state {
            State::Ok { bytes } => format!("loads ({bytes} bytes)"),
            State::Invalid(invalid) => invalid.to_string(),
            State::Unreadable(reason) => reason.clone(),
            State::Leftover => "a temporary file left by an interrupted write; serve removes it \
                                at its next start, or remove it by hand"
                .to_owned(),
            State::Ignored => "not a snapshot file name (YYYY-MM-DD.json); ignored".to_owned(),
        }
    }
}

/// The folder's files, in name order.
#[derive(Debug)]
pub struct Report {
    pub folder: PathBuf,
    pub files: Vec<FileCheck>,
}

impl Report {
    pub fn problems(&self) -> usize {
        self.files.iter().filter(|f| f.is_problem()).count()
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
        json!({
            "folder": self.folder.display().to_string(),
            "ok": self.problems() == 0,
            "problems": self.problems(),
            "files": files,
        })
    }

    /// One line per file, then the verdict.
    pub fn render(&self) -> String {
        let mut text = String::new();
        for file in &self.files {
            let status = file.status();
            text.push_str(&format!("{status:<10}  {}: {}\n", file.name, file.reason()));
        }
        let dated = self.files.iter().filter(|f| f.date.is_some()).count();
        match self.problems() {
            0 => text.push_str(&format!(
                "{}: {dated} snapshot file(s), all load\n",
                self.folder.display()
            )),
            n => text.push_str(&format!(
                "{}: {n} problem(s) among {} file(s): import a good snapshot for a date, or \
                 delete it (aims-api snapshot delete DATE)\n",
                self.folder.display(),
                self.files.len()
            )),
        }
        text
    }
}

/// Checks `<state_dir>/snapshots/`. A folder that does not exist yet holds no snapshots and
/// is not a problem; one that cannot be read is an error.
pub fn verify(state_dir: &Path) -> io::Result<Report> {
    let folder = state_dir.join(super::store::FOLDER);
    let mut files = Vec::new();
    let entries = match fs::read_dir(&folder) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Report { folder, files }),
        Err(e) => return Err(e),
    };
    for entry in entries {
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
    Ok(Report { folder, files })
}

fn check(path: &Path) -> State {
    // `metadata` follows a symbolic link, as `serve`'s read does.
    match fs::metadata(path) {
        Ok(meta) if !meta.is_file() => return State::Unreadable("not a regular file".into()),
        Ok(_) => {}
        Err(e) => return State::Unreadable(format!("cannot read: {e}")),
    }
    match fs::read(path) {
        Ok(bytes) => match validate(&bytes) {
            Ok(()) => State::Ok { bytes: bytes.len() as u64 },
            Err(invalid) => State::Invalid(invalid),
        },
        Err(e) => State::Unreadable(format!("cannot read: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_file_is_told_apart_and_nothing_is_changed() {
        let state = tempfile::tempdir().unwrap();
        assert_eq!(verify(state.path()).unwrap().files.len(), 0, "no folder yet: nothing wrong");
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
                ("2024-05-14.json", "ok"),
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
