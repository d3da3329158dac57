//! The audit trail: every `audit …` log line, rendered by one type.
//!
//! An operator greps these lines and a log shipper parses them, so their shape is a contract,
//! written down in `docs/audit.md`. Each action has one constructor here that takes typed data,
//! and each action's fields come out in the order of one table ([`Action::fields`]), whatever
//! order a caller supplies them in: a field cannot drift from its documented place, and a test
//! checks the table against the document. Values are single words, or quoted (with `"` and `\`
//! escaped, so a crafted reason cannot forge a field) when they may hold spaces.
//!
//! Nothing here ever receives a key or a key hash: callers pass fingerprints and reasons.

use std::fmt::{self, Display};
use std::net::IpAddr;
use std::time::SystemTime;

use crate::key::Fingerprint;
use crate::keystore::KeyRecord;
use crate::snapshot::{Date, Stats};

/// Every action the audit trail records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    KeyGenerate,
    KeyReplace,
    KeyRevoke,
    KeyEndGrace,
    KeyInstall,
    KeyNewAddress,
    Reload,
    SnapshotImport,
    SnapshotDelete,
    SnapshotPrune,
    Refused,
}

impl Action {
    pub const ALL: [Self; 11] = [
        Self::KeyGenerate,
        Self::KeyReplace,
        Self::KeyRevoke,
        Self::KeyEndGrace,
        Self::KeyInstall,
        Self::KeyNewAddress,
        Self::Reload,
        Self::SnapshotImport,
        Self::SnapshotDelete,
        Self::SnapshotPrune,
        Self::Refused,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::KeyGenerate => "key.generate",
            Self::KeyReplace => "key.replace",
            Self::KeyRevoke => "key.revoke",
            Self::KeyEndGrace => "key.end_grace",
            Self::KeyInstall => "key.install",
            Self::KeyNewAddress => "key.new_address",
            Self::Reload => "reload",
            Self::SnapshotImport => "snapshot.import",
            Self::SnapshotDelete => "snapshot.delete",
            Self::SnapshotPrune => "snapshot.prune",
            Self::Refused => "refused",
        }
    }

    /// The fields this action's lines carry after `action=`, in order. Optional fields are
    /// left out of a line that has no value for them. `docs/audit.md` lists the same.
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            Self::KeyGenerate | Self::KeyReplace | Self::KeyRevoke | Self::KeyEndGrace => {
                &["client", "fingerprint", "previous", "generation", "result", "cause", "note"]
            }
            Self::KeyInstall => {
                &["client", "fingerprint", "generation", "previous_generation", "result", "cause"]
            }
            Self::KeyNewAddress => &["client", "fingerprint", "generation", "count"],
            Self::Reload => &["client", "result", "cause"],
            Self::SnapshotImport => &[
                "client",
                "date",
                "result",
                "applications",
                "modules",
                "findings",
                "bytes",
                "ms",
                "reason",
                "cause",
            ],
            Self::SnapshotDelete => &["client", "date", "result", "was_served", "cause"],
            Self::SnapshotPrune => &["client", "date", "result", "rule", "limit", "cause"],
            Self::Refused => &[
                "port",
                "client",
                "count",
                "throttled",
                "first",
                "last",
                "status",
                "reason",
                "fingerprint",
            ],
        }
    }
}

/// Who a line is about: an address on the API port, a local uid on the admin port, every
/// client past a window's budget at once, or the server itself acting on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Address(IpAddr),
    Uid(u32),
    Everyone,
    Server,
}

impl Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Address(ip) => ip.fmt(f),
            Self::Uid(uid) => write!(f, "uid:{uid}"),
            Self::Everyone => f.write_str("*"),
            Self::Server => f.write_str("server"),
        }
    }
}

/// One audit line, ready to be logged.
#[derive(Debug)]
pub struct Record {
    action: Action,
    level: log::Level,
    /// By field name; rendered in the order of [`Action::fields`].
    fields: Vec<(&'static str, String)>,
}

impl Record {
    fn new(action: Action, level: log::Level) -> Self {
        Self { action, level, fields: Vec::with_capacity(8) }
    }

    /// A value that is one word (a number, a date, a fingerprint, a result).
    fn word(mut self, name: &'static str, value: impl Display) -> Self {
        debug_assert!(self.action.fields().contains(&name), "{name} is not a field of this action");
        self.fields.push((name, value.to_string()));
        self
    }

    /// A value that may hold spaces or quotes: quoted, with `"` and `\` escaped.
    fn quoted(self, name: &'static str, value: impl Display) -> Self {
        let text = value.to_string();
        self.word(name, format!("{text:?}"))
    }

    pub fn level(&self) -> log::Level {
        self.level
    }

    /// Writes the line to the log.
    pub fn emit(self) {
        log::log!(self.level, "{self}");
    }
}

impl Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "audit action={}", self.action.name())?;
        for name in self.action.fields() {
            if let Some((_, value)) = self.fields.iter().find(|(n, _)| n == name) {
                write!(f, " {name}={value}")?;
            }
        }
        Ok(())
    }
}

/// A key change requested on the admin port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAction {
    Generate,
    Replace,
    Revoke,
    /// The previous key's grace, ended early (its key exposed, with `on_key_exposure: revoke`).
    EndGrace,
}

/// How a key change ended.
pub enum KeyOutcome<'a> {
    /// Done. `previous` is the key that was active before (generate and replace only).
    Done { previous: Option<&'a Fingerprint> },
    /// The change does not apply to the current state (409).
    Conflict,
    /// The request's terms are not allowed (400): nothing changed.
    Refused(&'a dyn Display),
    /// Nothing changed (500).
    Failed(&'a dyn Display),
    /// A revoke in force but not written (500).
    MemoryOnly(&'a dyn Display),
}

/// `key.generate`, `key.replace`, `key.revoke`: one line per request, whatever its result.
/// `in_force` is the key state after it.
pub fn key_change(
    action: KeyAction,
    by: Peer,
    in_force: &KeyRecord,
    outcome: KeyOutcome<'_>,
) -> Record {
    let (name, shows_previous) = match action {
        KeyAction::Generate => (Action::KeyGenerate, true),
        KeyAction::Replace => (Action::KeyReplace, true),
        KeyAction::Revoke => (Action::KeyRevoke, false),
        KeyAction::EndGrace => (Action::KeyEndGrace, false),
    };
    let level = match outcome {
        KeyOutcome::Done { .. } | KeyOutcome::Conflict | KeyOutcome::Refused(_) => log::Level::Info,
        KeyOutcome::Failed(_) | KeyOutcome::MemoryOnly(_) => log::Level::Error,
    };
    let fingerprint = in_force.key.as_ref().map_or("-", |k| k.fingerprint.as_str());
    let record = Record::new(name, level)
        .word("client", by)
        .word("fingerprint", fingerprint)
        .word("generation", in_force.generation);
    match outcome {
        KeyOutcome::Done { previous } if shows_previous => {
            record.word("previous", previous.map_or("-", Fingerprint::as_str)).word("result", "ok")
        }
        KeyOutcome::Done { .. } => record.word("result", "ok"),
        KeyOutcome::Conflict => record.word("result", "conflict"),
        KeyOutcome::Refused(cause) => record.word("result", "refused").quoted("cause", cause),
        KeyOutcome::Failed(cause) => record.word("result", "error").quoted("cause", cause),
        KeyOutcome::MemoryOnly(cause) => record
            .word("result", "memory-only")
            .quoted("cause", cause)
            .quoted("note", "the key is refused until restart; the store still holds it as active"),
    }
}

/// How a key record's installation ended (`PUT /key/record`).
pub enum InstallOutcome<'a> {
    /// Written and in force; `forced`: older or diverged, installed on request.
    Installed { forced: bool },
    /// The same record was installed already.
    Unchanged,
    /// Not installed: a conflict, a refusal or an error, as for any key change.
    Not(KeyOutcome<'a>),
}

/// `key.install`: one line per `PUT /key/record`, whatever its result. `previous_generation` is
/// the generation installed before it; `in_force` the state after it.
pub fn key_install(
    by: Peer,
    previous_generation: u64,
    in_force: &KeyRecord,
    outcome: InstallOutcome<'_>,
) -> Record {
    let (level, result, cause) = match outcome {
        InstallOutcome::Installed { forced: false } => (log::Level::Info, "ok", None),
        // Rolling a key back or overriding the other side is worth an operator's attention.
        InstallOutcome::Installed { forced: true } => (log::Level::Warn, "forced", None),
        InstallOutcome::Unchanged => (log::Level::Info, "unchanged", None),
        InstallOutcome::Not(KeyOutcome::Done { .. }) => (log::Level::Info, "ok", None),
        InstallOutcome::Not(KeyOutcome::Conflict) => (log::Level::Info, "conflict", None),
        InstallOutcome::Not(KeyOutcome::Refused(cause)) => {
            (log::Level::Info, "refused", Some(cause.to_string()))
        }
        InstallOutcome::Not(KeyOutcome::Failed(cause) | KeyOutcome::MemoryOnly(cause)) => {
            (log::Level::Error, "error", Some(cause.to_string()))
        }
    };
    let fingerprint = in_force.key.as_ref().map_or("-", |k| k.fingerprint.as_str());
    let record = Record::new(Action::KeyInstall, level)
        .word("client", by)
        .word("fingerprint", fingerprint)
        .word("generation", in_force.generation)
        .word("previous_generation", previous_generation)
        .word("result", result);
    match cause {
        Some(cause) => record.quoted("cause", cause),
        None => record,
    }
}

/// `key.new_address`: the first request from an address never seen with this key; or, with
/// `count`, how many more such addresses a window's budget held back (`client` is then `*`).
pub fn key_new_address(
    client: Peer,
    fingerprint: &Fingerprint,
    generation: u64,
    count: Option<u64>,
) -> Record {
    let record = Record::new(Action::KeyNewAddress, log::Level::Info)
        .word("client", client)
        .word("fingerprint", fingerprint.as_str())
        .word("generation", generation);
    match count {
        Some(count) => record.word("count", count),
        None => record,
    }
}

/// `reload` requested on the admin port (`POST /reload`).
pub fn reload(uid: u32, refused: Option<&dyn Display>) -> Record {
    let record = Record::new(Action::Reload, log::Level::Info).word("client", Peer::Uid(uid));
    match refused {
        None => record.word("result", "ok"),
        Some(cause) => record.word("result", "refused").quoted("cause", cause),
    }
}

/// How a snapshot import ended.
pub enum ImportOutcome<'a> {
    /// Served from now on.
    Live { replaced: bool, stats: &'a Stats, took_ms: u128 },
    /// The body was not a valid snapshot (422); nothing changed.
    Invalid { bytes: u64, reason: &'a dyn Display },
    /// It could not be done; `code` is the error code of the answer.
    Failed { code: &'a str, server_fault: bool, cause: &'a dyn Display },
}

/// `snapshot.import`: one line per `PUT /snapshots/<date>`.
pub fn snapshot_import(uid: u32, date: Date, outcome: ImportOutcome<'_>) -> Record {
    let level = match outcome {
        ImportOutcome::Failed { server_fault: true, .. } => log::Level::Error,
        ImportOutcome::Live { .. }
        | ImportOutcome::Invalid { .. }
        | ImportOutcome::Failed { server_fault: false, .. } => log::Level::Info,
    };
    let record = Record::new(Action::SnapshotImport, level)
        .word("client", Peer::Uid(uid))
        .word("date", date);
    match outcome {
        ImportOutcome::Live { replaced, stats, took_ms } => record
            .word("result", if replaced { "replaced" } else { "created" })
            .word("applications", stats.applications)
            .word("modules", stats.modules)
            .word("findings", stats.findings)
            .word("bytes", stats.file_bytes)
            .word("ms", took_ms),
        ImportOutcome::Invalid { bytes, reason } => {
            record.word("result", "invalid").word("bytes", bytes).quoted("reason", reason)
        }
        ImportOutcome::Failed { code, cause, .. } => {
            record.word("result", code).quoted("cause", cause)
        }
    }
}

/// How a snapshot delete ended.
pub enum DeleteOutcome<'a> {
    Deleted { was_served: bool },
    NotFound,
    Failed { code: &'a str, cause: &'a dyn Display },
}

/// `snapshot.delete`: one line per `DELETE /snapshots/<date>`.
pub fn snapshot_delete(uid: u32, date: Date, outcome: DeleteOutcome<'_>) -> Record {
    let level = match outcome {
        DeleteOutcome::Failed { .. } => log::Level::Error,
        DeleteOutcome::Deleted { .. } | DeleteOutcome::NotFound => log::Level::Info,
    };
    let record = Record::new(Action::SnapshotDelete, level)
        .word("client", Peer::Uid(uid))
        .word("date", date);
    match outcome {
        DeleteOutcome::Deleted { was_served } => {
            record.word("result", "deleted").word("was_served", was_served)
        }
        DeleteOutcome::NotFound => record.word("result", "not_found"),
        DeleteOutcome::Failed { code, cause } => record.word("result", code).quoted("cause", cause),
    }
}

/// How the removal of one date by retention ended.
pub enum PruneOutcome<'a> {
    Pruned,
    /// `code`: `storage` (the store could not be written; nothing changed).
    Failed {
        code: &'a str,
        cause: &'a dyn Display,
    },
}

/// `snapshot.prune`: one line per date the retention settings removed (or failed to), with
/// the rule that removed it (`keep_days` or `keep_count`) and that rule's `limit`.
pub fn snapshot_prune(
    date: Date,
    rule: &'static str,
    limit: u64,
    outcome: PruneOutcome<'_>,
) -> Record {
    let level = match outcome {
        PruneOutcome::Pruned => log::Level::Info,
        PruneOutcome::Failed { .. } => log::Level::Error,
    };
    let record = Record::new(Action::SnapshotPrune, level)
        .word("client", Peer::Server)
        .word("date", date)
        .word("rule", rule)
        .word("limit", limit);
    match outcome {
        PruneOutcome::Pruned => record.word("result", "pruned"),
        PruneOutcome::Failed { code, cause } => record.word("result", code).quoted("cause", cause),
    }
}

/// One client's refused requests in one window of the refusal log.
pub struct RefusedBurst<'a> {
    pub port: &'static str,
    /// `None`: the overflow line that sums every client past the window's limit.
    pub peer: Option<Peer>,
    pub count: u64,
    pub throttled: u64,
    pub first: SystemTime,
    pub last: SystemTime,
    pub status: u16,
    pub reason: &'a str,
    pub fingerprint: Option<&'a Fingerprint>,
}

/// `refused`: one line per burst of refused requests.
pub fn refused(burst: &RefusedBurst<'_>) -> Record {
    let (port, client) = match burst.peer {
        Some(peer) => (burst.port, peer.to_string()),
        None => ("*", "*".to_owned()),
    };
    Record::new(Action::Refused, log::Level::Warn)
        .word("port", port)
        .word("client", client)
        .word("count", burst.count)
        .word("throttled", burst.throttled)
        .word("first", humantime::format_rfc3339_millis(burst.first))
        .word("last", humantime::format_rfc3339_millis(burst.last))
        .word("status", burst.status)
        .quoted("reason", burst.reason)
        .word("fingerprint", burst.fingerprint.map_or("-", Fingerprint::as_str))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::snapshot::Stats;

    /// Every action table of `docs/audit.md`: the actions its `action` row names, and the
    /// fields of its rows in order.
    fn documented() -> Vec<(Vec<String>, Vec<String>)> {
        let text = include_str!("../docs/audit.md");
        let ticked = |cell: &str| -> Vec<String> {
            cell.split('`').skip(1).step_by(2).map(str::to_owned).collect()
        };
        let mut tables = Vec::new();
        let (mut actions, mut fields) = (Vec::new(), Vec::new());
        for line in text.lines().chain([""]) {
            if !line.starts_with('|') {
                if !actions.is_empty() {
                    tables.push((std::mem::take(&mut actions), std::mem::take(&mut fields)));
                }
                fields.clear();
                continue;
            }
            let mut cells = line.split('|').skip(1);
            let (Some(names), Some(meaning)) = (cells.next(), cells.next()) else { continue };
            for name in ticked(names) {
                if name == "action" {
                    actions = ticked(meaning);
                } else {
                    fields.push(name);
                }
            }
        }
        tables
    }

    #[test]
    fn the_document_lists_every_action_with_its_fields_in_order() {
        let documented = documented();
        let mut seen = BTreeMap::new();
        for (actions, fields) in &documented {
            for action in actions {
                seen.insert(action.clone(), fields.clone());
            }
        }
        for action in Action::ALL {
            let fields = seen.remove(action.name()).unwrap_or_else(|| {
                panic!("docs/audit.md does not document action {}", action.name())
            });
            assert_eq!(fields, action.fields(), "the fields of {} in docs/audit.md", action.name());
        }
        assert!(seen.is_empty(), "docs/audit.md documents actions that do not exist: {seen:?}");
    }

    #[test]
    fn fields_come_out_in_the_documented_order_whatever_order_they_went_in() {
        let line = Record::new(Action::SnapshotDelete, log::Level::Info)
            .word("was_served", true)
            .word("result", "deleted")
            .word("date", "2024-05-14")
            .word("client", Peer::Uid(0));
        assert_eq!(
            line.to_string(),
            "audit action=snapshot.delete client=uid:0 date=2024-05-14 result=deleted \
             was_served=true"
        );
    }

    #[test]
    fn a_quoted_value_cannot_forge_a_field() {
        let line = reload(0, Some(&"bad\" result=ok"));
        assert_eq!(
            line.to_string(),
            r#"audit action=reload client=uid:0 result=refused cause="bad\" result=ok""#
        );
    }

    #[test]
    fn a_key_change_line_reads_as_documented() {
        let record = KeyRecord::default();
        let line = key_change(
            KeyAction::Revoke,
            Peer::Uid(0),
            &record,
            KeyOutcome::MemoryOnly(&"disk full"),
        );
        assert_eq!(line.level(), log::Level::Error);
        assert_eq!(
            line.to_string(),
            "audit action=key.revoke client=uid:0 fingerprint=- generation=0 \
             result=memory-only cause=\"disk full\" note=\"the key is refused until restart; \
             the store still holds it as active\""
        );
        let done = KeyOutcome::Done { previous: None };
        let line = key_change(KeyAction::Generate, Peer::Uid(7), &record, done);
        assert_eq!(
            line.to_string(),
            "audit action=key.generate client=uid:7 fingerprint=- previous=- generation=0 \
             result=ok"
        );
        let stats = Stats {
            applications: 1,
            modules: 2,
            findings: 3,
            file_bytes: 4,
            rendered_bytes: 5,
            compressed_bytes: 6,
        };
        let date = Date::parse("2024-05-14").unwrap();
        assert_eq!(
            snapshot_prune(date, "keep_count", 3, PruneOutcome::Pruned).to_string(),
            "audit action=snapshot.prune client=server date=2024-05-14 result=pruned \
             rule=keep_count limit=3"
        );
        let live = ImportOutcome::Live { replaced: false, stats: &stats, took_ms: 9 };
        assert_eq!(
            snapshot_import(0, date, live).to_string(),
            "audit action=snapshot.import client=uid:0 date=2024-05-14 result=created \
             applications=1 modules=2 findings=3 bytes=4 ms=9"
        );
    }
}
