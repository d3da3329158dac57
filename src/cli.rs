//! The command line: raw arguments in, a validated [`Command`] out (or a usage error).
//!
//! `lexopt` does the tokenizing; everything else is a small hand-written match, so the whole
//! grammar is readable in one screen and the help text is written for people, not generated.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::DEFAULT_PATH;
use crate::snapshot::Date;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Serve {
        config: PathBuf,
    },
    Key {
        action: KeyAction,
        config: PathBuf,
        json: bool,
    },
    Snapshot {
        action: SnapshotAction,
        config: PathBuf,
        json: bool,
    },
    CheckConfig {
        config: PathBuf,
    },
    Diagnose {
        config: PathBuf,
        json: bool,
        strict: bool,
    },
    /// Print the completion script for a shell.
    Completions(Shell),
    /// Print this help text and exit 0.
    Help(&'static str),
    Version,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyAction {
    Status,
    Generate {
        expires_in: Option<Duration>,
    },
    Replace {
        grace: Option<Duration>,
        expires_in: Option<Duration>,
    },
    Revoke,
    Clients,
    /// Reads a key on standard input and says what it is.
    Check,
    /// Writes the key's record (never the key) to `output` or standard output.
    ExportRecord {
        output: Option<PathBuf>,
    },
    /// Installs a record from `file` (`-`: standard input); `force` installs an older one.
    InstallRecord {
        file: PathBuf,
        force: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotAction {
    Import {
        file: PathBuf,
        date: Date,
    },
    List,
    Delete {
        date: Date,
    },
    /// Copy the configured upstream into the snapshot of `date` (default: the analysis's day).
    Pull {
        date: Option<Date>,
    },
    /// Write the served snapshot of `date` as a document, to `output` or standard output.
    Export {
        date: Date,
        output: Option<PathBuf>,
    },
    /// Check the history store and the waiting files, read-only.
    Verify,
}

/// A command line that does not fit the grammar ([`Exit::Usage`]).
#[derive(Debug, PartialEq, Eq)]
pub struct UsageError {
    pub message: String,
    pub help: &'static str,
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let usage = self.help.lines().find(|l| l.starts_with("usage:")).unwrap_or("");
        write!(f, "{}\n{usage}\n(see --help)", self.message)
    }
}

pub const MAIN_HELP: &str = "\
aims-api: the AI Mentor Studio API over HTTPS, guarded by one API key

usage: aims-api <command> [options]

commands:
  serve          run the appliance
  key            show, generate, replace or revoke the API key (via the admin port)
  snapshot       import, pull, list, export, delete or verify the dated analysis snapshots
  check-config   check a configuration file and exit
  diagnose       check the configuration, state, certificate, server and system; say what to do
  completions    print the shell completion script for bash, zsh or fish

options:
  -h, --help     print help (also after any command)
  -V, --version  print the version

The configuration is read from --config PATH, by default /etc/aims-api/config.ron.
";

const SERVE_HELP: &str = "\
aims-api serve: run the appliance (HTTPS API port and loopback admin port)

usage: aims-api serve [--config PATH]

options:
  -c, --config PATH  configuration file (default /etc/aims-api/config.ron)
  -h, --help         print this help
  -V, --version      print the version
";

const KEY_HELP: &str = "\
aims-api key: manage the API key through the admin port of a running server

usage: aims-api key <status|generate|replace|revoke|clients|check|export-record|
                    install-record FILE> [options]

actions:
  status    show the key's state, fingerprint, dates, expiry, last use and any exposure
  generate  make a key when none is active; it is printed once and never again
  replace   make a new key; the old one is refused from that moment on, or after --grace
  revoke    refuse the active key (and a previous key in its grace) from that moment on
  clients   list the addresses that used the current key, most recent first
  check     read a key on standard input and say what it is: malformed, or its fingerprint
            and whether it is the live key, the previous key in its grace, a retired key
            (which generation, when and how retired) or unknown; never echoes the key. Exit
            status 0 when the key is admitted now (live, or in its grace), 1 when it is not,
            2 when it is malformed, 3 when the server could not be asked (see EXIT STATUS)
  export-record
            print the key's record: its SHA-256, fingerprint, generation, dates, the grace
            key and the retired keys, never the key itself; for the other appliance of a
            pair: aims-api key export-record | ssh standby sudo aims-api key install-record -
  install-record FILE
            install a record exported by the other appliance of a pair, from FILE or standard
            input (-): at once and durably; an older record is refused (anti-rollback) unless
            --force, the same record again changes nothing, and both appliances must have the
            same activation code

options:
      --expires-in DURATION  generate, replace: the new key expires after DURATION
                             (e.g. 90d; at most key_max_lifetime_days, which is also the
                             default when it is set)
      --grace DURATION       replace: keep admitting the old key for DURATION (at most 24h,
                             e.g. 15m), so clients can move over without an outage
  -o, --output FILE          export-record: write the record to FILE (mode 0600, replaced
                             durably) instead of standard output
      --force                install-record: install even an older record, or one that
                             differs at the same generation (a rollback, audited as forced)
  -c, --config PATH          configuration file whose admin.listen to use (default
                             /etc/aims-api/config.ron)
      --json                 print the admin port's JSON answer as it is
  -h, --help                 print this help
  -V, --version              print the version

The admin port only serves root (and admin.allowed_uids): run these with sudo.
";

const SNAPSHOT_HELP: &str = "\
aims-api snapshot: manage the analysis snapshots that the API serves, through the admin port

usage: aims-api snapshot <import FILE --date YYYY-MM-DD | pull [--date YYYY-MM-DD] | list |
                         export DATE [--output FILE] | delete DATE | verify> [--config PATH]
                         [--json]

actions:
  import FILE --date YYYY-MM-DD
            validate FILE (snapshot JSON, see docs/snapshot-format.md) and serve it as the
            analysis of that date, at once; an existing snapshot of that date is replaced.
            An invalid file changes nothing, and the error names its JSON path and reason.
  pull [--date YYYY-MM-DD]
            copy the upstream of the config's `upstream` section (the hosted AI Mentor Studio
            API) into a snapshot, validate it and serve it, dated by the analysis's UTC day
            unless --date is given; says \"unchanged\" and writes nothing if the snapshot of that
            date already holds the same data. A failed pull changes nothing.
  list      show the snapshots served (newest first, the default answer) with their counts,
            each one's share of the history store on disk, what it holds in memory now and
            when and how it was imported (pull, import, or inbox for a file taken over), the
            totals, and any file refused from the snapshot folder
  export DATE [--output FILE]
            write the snapshot served for DATE as snapshot JSON, rendered from the served data
            in one canonical form (import it back to get the same data, and the same bytes
            when exported again); to standard output, or durably to FILE (mode 0600)
  delete DATE
            stop serving the snapshot of DATE and remove it from the history store, with
            every stored piece no other date uses
  verify    check the history store read-only, beside a running server or without one:
            every date loads and every stored piece matches its key (names the date and
            piece that does not); and every dated file waiting in the snapshot folder passes
            the checks of an import (names its JSON path and reason). Exit status 0 when all
            is well, 1 otherwise

options:
  -d, --date YYYY-MM-DD  the analysis date of the imported file (import), or of the pulled
                         data (pull)
  -o, --output FILE      export: write the snapshot to FILE instead of standard output
  -c, --config PATH      configuration file whose admin.listen (and, for verify,
                         state_dir) to use (default /etc/aims-api/config.ron)
      --json             print the admin port's JSON answer as it is (verify: its report)
  -h, --help             print this help
  -V, --version          print the version

The admin port only serves root (and admin.allowed_uids), and the state folder is readable
by the service's user only: run these with sudo.
";

const CHECK_HELP: &str = "\
aims-api check-config: check a configuration file; exit 0 if it is usable, 5 if not

usage: aims-api check-config [--config PATH]

options:
  -c, --config PATH  configuration file (default /etc/aims-api/config.ron)
  -h, --help         print this help
  -V, --version      print the version
";

const DIAGNOSE_HELP: &str = "\
aims-api diagnose: check everything an operator would, print what is wrong and what to do

usage: aims-api diagnose [--config PATH] [--json] [--strict]

Checks the configuration, the state folder (ownership and modes, key store, snapshots, disk
space), a running serve (its lock, the admin port's /health), the certificate (key, names,
validity, the one the API port presents) and the system (open-file limit, clock). Each check
is ok, warning or failure, with the reason and what to do. Checks that need no running server
work without one. Exit status 0 when nothing failed, 1 when a check failed or could not be
made (run as another user than root, some cannot).

options:
  -c, --config PATH  configuration file (default /etc/aims-api/config.ron)
      --json         print the checks as JSON
      --strict       warnings fail too (exit 1)
  -h, --help         print this help
  -V, --version      print the version

Run it as root: the state folder is readable by the service's user only.
";

const COMPLETIONS_HELP: &str = "\
aims-api completions: print the completion script for a shell

usage: aims-api completions <bash|zsh|fish>

The Debian package installs them; to load one by hand:
  bash: source <(aims-api completions bash)
  zsh:  aims-api completions zsh > ~/.zfunc/_aims-api   (with ~/.zfunc in fpath)
  fish: aims-api completions fish > ~/.config/fish/completions/aims-api.fish

options:
  -h, --help     print this help
  -V, --version  print the version
";

/// Every command with its help text, in the order `--help` lists them: the one table the man
/// page and the shell completions are generated from (see `crate::manual`).
pub const COMMANDS: [(&str, &str); 6] = [
    ("serve", SERVE_HELP),
    ("key", KEY_HELP),
    ("snapshot", SNAPSHOT_HELP),
    ("check-config", CHECK_HELP),
    ("diagnose", DIAGNOSE_HELP),
    ("completions", COMPLETIONS_HELP),
];

/// What an exit status means. `main` ends with one of these and nothing else; the man page's
/// EXIT STATUS section is made from [`EXIT_STATUS`], which says which command ends with which.
/// Scripts can tell "no" (1) from "could not ask" (3) from "asked, and refused" (4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Done; for a check, the answer is yes.
    Success = 0,
    /// A check's answer is no (`key check`, `diagnose`, `snapshot verify`).
    No = 1,
    /// `key check`: the key is malformed or fails its checksum.
    Malformed = 2,
    /// The server could not be asked: its admin port did not answer.
    Unreachable = 3,
    /// The server was asked and refused (its admin port answered with an error).
    Refused = 4,
    /// The configuration cannot be read or used.
    Config = 5,
    /// A local file or stream (input, output, a key file) cannot be read or written.
    Local = 6,
    /// `snapshot pull`: the upstream failed, or sent what cannot be used.
    Upstream = 7,
    /// `serve` could not start, or stopped on an error.
    Serve = 8,
    /// The command line does not parse (sysexits' `EX_USAGE`).
    Usage = 64,
}

impl Exit {
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// For each command, the statuses it can end with and what each means there: the man page's
/// EXIT STATUS section, and what the CLI tests hold the binary to.
pub const EXIT_STATUS: [(&str, &[(Exit, &str)]); 11] = [
    (
        "serve",
        &[
            (Exit::Success, "stopped cleanly on SIGTERM or SIGINT"),
            (Exit::Config, "the configuration cannot be used"),
            (Exit::Serve, "could not start (key store, snapshots, certificate, a port) or failed"),
        ],
    ),
    (
        "key check",
        &[
            (
                Exit::Success,
                "the key is admitted now: the live key, or the previous one in its grace",
            ),
            (
                Exit::No,
                "well-formed but not admitted: retired (replaced, revoked, expired) or unknown",
            ),
            (Exit::Malformed, "malformed, or its checksum does not match"),
            (Exit::Unreachable, "could not ask the server: its admin port did not answer"),
            (Exit::Refused, "the admin port refused (403: run it as root)"),
            (Exit::Config, "the configuration cannot be used"),
            (Exit::Local, "no key on standard input, or it cannot be read"),
        ],
    ),
    (
        "key status, generate, replace, revoke, clients",
        &[
            (Exit::Success, "done"),
            (Exit::Unreachable, "could not ask the server: its admin port did not answer"),
            (Exit::Refused, "the admin port refused (409: a key is active; 403: run it as root)"),
            (Exit::Config, "the configuration cannot be used"),
            (Exit::Local, "the answer cannot be written to standard output"),
        ],
    ),
    (
        "key export-record, install-record",
        &[
            (Exit::Success, "exported; installed, or the same record was already installed"),
            (Exit::Unreachable, "could not ask the server: its admin port did not answer"),
            (
                Exit::Refused,
                "the admin port refused (409: an older or diverging record, --force overrides; \
                 422: another activation code or not a record; 403: run it as root)",
            ),
            (Exit::Config, "the configuration cannot be used"),
            (Exit::Local, "FILE or standard input cannot be read, or --output cannot be written"),
        ],
    ),
    (
        "snapshot import, list, export, delete",
        &[
            (Exit::Success, "done"),
            (Exit::Unreachable, "could not ask the server: its admin port did not answer"),
            (Exit::Refused, "the admin port refused (422: an invalid snapshot; 404: no such date)"),
            (Exit::Config, "the configuration cannot be used"),
            (Exit::Local, "FILE cannot be read, or the output cannot be written"),
        ],
    ),
    (
        "snapshot pull",
        &[
            (Exit::Success, "pulled, or unchanged"),
            (Exit::Unreachable, "could not ask this server: its admin port did not answer"),
            (Exit::Refused, "this server's admin port refused the import"),
            (Exit::Config, "the configuration, the upstream key file or ca_file cannot be used"),
            (Exit::Upstream, "the upstream failed, refused, or sent what cannot be served"),
        ],
    ),
    (
        "snapshot verify",
        &[
            (Exit::Success, "every date and waiting file is sound"),
            (Exit::No, "a problem was found; each is named"),
            (Exit::Config, "the configuration cannot be used"),
            (Exit::Local, "the state folder cannot be read"),
        ],
    ),
    (
        "check-config",
        &[
            (Exit::Success, "the configuration is usable"),
            (Exit::Config, "it is not; the error names file, line and column"),
        ],
    ),
    (
        "diagnose",
        &[
            (Exit::Success, "no check failed (with --strict: none warned either)"),
            (Exit::No, "a check failed, or could not be made as this user"),
            (Exit::Local, "the report cannot be written"),
        ],
    ),
    ("completions", &[(Exit::Success, "printed"), (Exit::Local, "it cannot be written")]),
    ("any command", &[(Exit::Usage, "the command line does not parse; the message says why")]),
];

/// Parses `args` (the program name first, as `std::env::args_os` gives them).
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, UsageError> {
    use lexopt::prelude::*;

    let mut parser = lexopt::Parser::from_iter(args);
    let usage = |message: String, help| UsageError { message, help };
    let command = match parser.next().map_err(|e| usage(e.to_string(), MAIN_HELP))? {
        None => return Err(usage("no command given".into(), MAIN_HELP)),
        Some(Short('h') | Long("help")) => return Ok(Command::Help(MAIN_HELP)),
        Some(Short('V') | Long("version")) => return Ok(Command::Version),
        Some(Value(word)) => word.string().map_err(|e| usage(e.to_string(), MAIN_HELP))?,
        Some(other) => return Err(usage(other.unexpected().to_string(), MAIN_HELP)),
    };
    let Some(&(_, help)) = COMMANDS.iter().find(|(name, _)| *name == command) else {
        return Err(usage(format!("unknown command `{command}`"), MAIN_HELP));
    };
    let mut config = PathBuf::from(DEFAULT_PATH);
    let mut json = false;
    let mut strict = false;
    let mut shell = None;
    let mut action = None;
    let mut words = Vec::new();
    let mut date = None;
    let mut output = None;
    let mut grace = None;
    let mut expires_in = None;
    let mut force = false;
    while let Some(arg) = parser.next().map_err(|e| usage(e.to_string(), help))? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help(help)),
            Short('V') | Long("version") => return Ok(Command::Version),
            Short('c') | Long("config") => {
                config = parser.value().map_err(|e| usage(e.to_string(), help))?.into();
            }
            Long("json") if matches!(command.as_str(), "key" | "snapshot" | "diagnose") => {
                json = true;
            }
            Long("strict") if command == "diagnose" => strict = true,
            Value(word) if command == "completions" && shell.is_none() => {
                shell = Some(match word.to_str() {
                    Some("bash") => Shell::Bash,
                    Some("zsh") => Shell::Zsh,
                    Some("fish") => Shell::Fish,
                    _ => {
                        let word = word.to_string_lossy();
                        return Err(usage(format!("no completions for `{word}`"), help));
                    }
                });
            }
            Short('d') | Long("date") if command == "snapshot" => {
                let value = parser.value().map_err(|e| usage(e.to_string(), help))?;
                date = Some(value.string().map_err(|e| usage(e.to_string(), help))?);
            }
            Short('o') | Long("output") if matches!(command.as_str(), "snapshot" | "key") => {
                output = Some(parser.value().map_err(|e| usage(e.to_string(), help))?.into());
            }
            Long("force") if command == "key" => force = true,
            Long("grace") if command == "key" => {
                grace = Some(duration(&mut parser, "--grace", help)?);
            }
            Long("expires-in") if command == "key" => {
                expires_in = Some(duration(&mut parser, "--expires-in", help)?);
            }
            Value(word) if command == "snapshot" => words.push(word),
            Value(word) if matches!(action, Some(KeyAction::InstallRecord { .. })) => {
                words.push(word);
            }
            Value(word) if command == "key" && action.is_none() => {
                action = Some(match word.to_str() {
                    Some("status") => KeyAction::Status,
                    Some("generate") => KeyAction::Generate { expires_in: None },
                    Some("replace") => KeyAction::Replace { grace: None, expires_in: None },
                    Some("revoke") => KeyAction::Revoke,
                    Some("clients") => KeyAction::Clients,
                    Some("check") => KeyAction::Check,
                    Some("export-record") => KeyAction::ExportRecord { output: None },
                    Some("install-record") => {
                        KeyAction::InstallRecord { file: PathBuf::new(), force: false }
                    }
                    _ => {
                        let word = word.to_string_lossy();
                        return Err(usage(format!("unknown key action `{word}`"), help));
                    }
                });
            }
            other => return Err(usage(other.unexpected().to_string(), help)),
        }
    }
    Ok(match command.as_str() {
        "serve" => Command::Serve { config },
        "check-config" => Command::CheckConfig { config },
        "diagnose" => Command::Diagnose { config, json, strict },
        "completions" => match shell {
            Some(shell) => Command::Completions(shell),
            None => return Err(usage("completions needs a shell: bash, zsh or fish".into(), help)),
        },
        "snapshot" => {
            Command::Snapshot { action: snapshot_action(words, date, output)?, config, json }
        }
        _ => match (key_action(action, words, output, force, help)?, grace, expires_in) {
            (Some(KeyAction::Replace { .. }), grace, expires_in) => {
                Command::Key { action: KeyAction::Replace { grace, expires_in }, config, json }
            }
            (Some(KeyAction::Generate { .. }), None, expires_in) => {
                Command::Key { action: KeyAction::Generate { expires_in }, config, json }
            }
            (Some(_), Some(_), _) => {
                return Err(usage("--grace is for key replace".into(), help));
            }
            (Some(_), None, Some(_)) => {
                return Err(usage("--expires-in is for key generate and key replace".into(), help));
            }
            (Some(action), None, None) => Command::Key { action, config, json },
            (None, _, _) => {
                return Err(usage(
                    "key needs an action: status, generate, replace, revoke, clients, check, \
                     export-record or install-record"
                        .into(),
                    help,
                ));
            }
        },
    })
}

/// The record actions take what the others do not: a file (install-record), `--output`
/// (export-record) and `--force` (install-record). Refuses each where it does not belong.
fn key_action(
    action: Option<KeyAction>,
    mut words: Vec<OsString>,
    output: Option<PathBuf>,
    force: bool,
    help: &'static str,
) -> Result<Option<KeyAction>, UsageError> {
    let usage = |message: &str| UsageError { message: message.to_owned(), help };
    match action {
        Some(KeyAction::ExportRecord { .. }) if !force => {
            Ok(Some(KeyAction::ExportRecord { output }))
        }
        Some(KeyAction::InstallRecord { .. }) if output.is_none() => match words.len() {
            1 => Ok(Some(KeyAction::InstallRecord { file: words.remove(0).into(), force })),
            0 => Err(usage("key install-record needs a FILE, or - for standard input")),
            _ => Err(usage("key install-record takes one FILE")),
        },
        _ if output.is_some() => Err(usage("--output is for key export-record")),
        _ if force => Err(usage("--force is for key install-record")),
        other => Ok(other),
    }
}

/// The value of `flag` as a duration: `15m`, `90d`, `1h 30m` (humantime's forms).
fn duration(
    parser: &mut lexopt::Parser,
    flag: &str,
    help: &'static str,
) -> Result<Duration, UsageError> {
    use lexopt::ValueExt;

    let usage = |message: String| UsageError { message, help };
    let value = parser.value().map_err(|e| usage(e.to_string()))?;
    let text = value.string().map_err(|e| usage(e.to_string()))?;
    match humantime::parse_duration(&text) {
        Ok(d) if d >= Duration::from_secs(1) => Ok(d),
        Ok(_) => Err(usage(format!("{flag} `{text}` is shorter than one second"))),
        Err(e) => Err(usage(format!("{flag} `{text}` is not a duration (like 15m or 90d): {e}"))),
    }
}

/// The words after `snapshot`, `--date` and `--output`, as one action.
fn snapshot_action(
    words: Vec<OsString>,
    date: Option<String>,
    output: Option<PathBuf>,
) -> Result<SnapshotAction, UsageError> {
    let usage = |message: String| UsageError { message, help: SNAPSHOT_HELP };
    let is_export = words.first().is_some_and(|w| w == "export");
    if output.is_some() && !is_export {
        return Err(usage("--output is for export".into()));
    }
    let parse_date =
        |text: &str| Date::parse(text).map_err(|e| usage(format!("`{text}` is not a date: {e}")));
    let mut words = words.into_iter();
    let verb = words.next().map(|w| w.to_string_lossy().into_owned());
    let operand = words.next();
    if let Some(extra) = words.next() {
        return Err(usage(format!("unexpected argument `{}`", extra.to_string_lossy())));
    }
    match (verb.as_deref(), operand, date) {
        (Some("import"), Some(file), Some(date)) => {
            Ok(SnapshotAction::Import { file: file.into(), date: parse_date(&date)? })
        }
        (Some("import"), None, _) => Err(usage("import needs the snapshot FILE".into())),
        (Some("import"), Some(_), None) => {
            Err(usage("import needs the analysis date: --date YYYY-MM-DD".into()))
        }
        (Some("pull"), None, date) => {
            Ok(SnapshotAction::Pull { date: date.as_deref().map(parse_date).transpose()? })
        }
        (Some("pull"), Some(extra), _) => {
            Err(usage(format!("unexpected argument `{}`", extra.to_string_lossy())))
        }
        (Some("list"), None, None) => Ok(SnapshotAction::List),
        (Some("delete"), Some(date), None) => {
            Ok(SnapshotAction::Delete { date: parse_date(&date.to_string_lossy())? })
        }
        (Some("delete"), None, None) => Err(usage("delete needs the DATE to delete".into())),
        (Some("export"), Some(date), None) => {
            Ok(SnapshotAction::Export { date: parse_date(&date.to_string_lossy())?, output })
        }
        (Some("export"), None, None) => Err(usage("export needs the DATE to export".into())),
        (Some("verify"), None, None) => Ok(SnapshotAction::Verify),
        (Some("list" | "delete" | "export" | "verify"), _, Some(_)) => Err(usage(
            "--date is for import and pull; delete and export take the date as their argument"
                .into(),
        )),
        (Some("list" | "verify"), Some(extra), None) => {
            Err(usage(format!("unexpected argument `{}`", extra.to_string_lossy())))
        }
        (Some(other), _, _) => Err(usage(format!("unknown snapshot action `{other}`"))),
        (None, _, _) => Err(usage(
            "snapshot needs an action: import, pull, list, export, delete or verify".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_words(words: &str) -> Result<Command, UsageError> {
        parse(std::iter::once("aims-api").chain(words.split_whitespace()).map(OsString::from))
    }

    #[test]
    fn the_documented_commands_parse() {
        assert_eq!(parse_words("serve").unwrap(), Command::Serve { config: DEFAULT_PATH.into() });
        assert_eq!(
            parse_words("serve --config x.ron").unwrap(),
            Command::Serve { config: "x.ron".into() }
        );
        assert_eq!(
            parse_words("key replace --json -c c.ron").unwrap(),
            Command::Key {
                action: KeyAction::Replace { grace: None, expires_in: None },
                config: "c.ron".into(),
                json: true
            }
        );
        assert_eq!(
            parse_words("key replace --grace 15m --expires-in 90d").unwrap(),
            Command::Key {
                action: KeyAction::Replace {
                    grace: Some(Duration::from_secs(900)),
                    expires_in: Some(Duration::from_secs(90 * 86_400))
                },
                config: DEFAULT_PATH.into(),
                json: false
            }
        );
        assert_eq!(
            parse_words("key export-record -o rec.json").unwrap(),
            Command::Key {
                action: KeyAction::ExportRecord { output: Some("rec.json".into()) },
                config: DEFAULT_PATH.into(),
                json: false,
            }
        );
        assert_eq!(
            parse_words("key install-record - --force").unwrap(),
            Command::Key {
                action: KeyAction::InstallRecord { file: "-".into(), force: true },
                config: DEFAULT_PATH.into(),
                json: false,
            }
        );
        assert_eq!(
            parse_words("key generate --expires-in 1h").unwrap(),
            Command::Key {
                action: KeyAction::Generate { expires_in: Some(Duration::from_secs(3600)) },
                config: DEFAULT_PATH.into(),
                json: false
            }
        );
        for (words, action) in
            [("key clients", KeyAction::Clients), ("key check", KeyAction::Check)]
        {
            assert_eq!(
                parse_words(words).unwrap(),
                Command::Key { action, config: DEFAULT_PATH.into(), json: false }
            );
        }
        assert_eq!(
            parse_words("diagnose --strict --json").unwrap(),
            Command::Diagnose { config: DEFAULT_PATH.into(), json: true, strict: true }
        );
        assert_eq!(parse_words("completions zsh").unwrap(), Command::Completions(Shell::Zsh));
        assert_eq!(
            parse_words("check-config --config=c.ron").unwrap(),
            Command::CheckConfig { config: "c.ron".into() }
        );
        let date = Date::parse("2024-05-14").unwrap();
        let import = SnapshotAction::Import { file: "s.json".into(), date };
        for words in [
            "snapshot import s.json --date 2024-05-14",
            "snapshot --date=2024-05-14 import s.json",
            "snapshot import -d 2024-05-14 s.json",
        ] {
            assert_eq!(
                parse_words(words).unwrap(),
                Command::Snapshot {
                    action: import.clone(),
                    config: DEFAULT_PATH.into(),
                    json: false
                },
                "{words}"
            );
        }
        assert_eq!(
            parse_words("snapshot list --json -c c.ron").unwrap(),
            Command::Snapshot { action: SnapshotAction::List, config: "c.ron".into(), json: true }
        );
        assert_eq!(
            parse_words("snapshot delete 2024-05-14").unwrap(),
            Command::Snapshot {
                action: SnapshotAction::Delete { date },
                config: DEFAULT_PATH.into(),
                json: false
            }
        );
    }

    #[test]
    fn export_takes_a_date_and_an_optional_output_and_verify_nothing() {
        let date = Date::parse("2024-05-14").unwrap();
        for (words, output) in [
            ("snapshot export 2024-05-14", None),
            ("snapshot export 2024-05-14 --output out.json", Some("out.json")),
            ("snapshot -o out.json export 2024-05-14", Some("out.json")),
        ] {
            assert_eq!(
                parse_words(words).unwrap(),
                Command::Snapshot {
                    action: SnapshotAction::Export { date, output: output.map(PathBuf::from) },
                    config: DEFAULT_PATH.into(),
                    json: false
                },
                "{words}"
            );
        }
        assert_eq!(
            parse_words("snapshot verify --json -c c.ron").unwrap(),
            Command::Snapshot {
                action: SnapshotAction::Verify,
                config: "c.ron".into(),
                json: true
            }
        );
    }

    #[test]
    fn pull_takes_an_optional_date() {
        assert_eq!(
            parse_words("snapshot pull --json").unwrap(),
            Command::Snapshot {
                action: SnapshotAction::Pull { date: None },
                config: DEFAULT_PATH.into(),
                json: true
            }
        );
        let date = Date::parse("2024-05-14").ok();
        assert_eq!(
            parse_words("snapshot pull -d 2024-05-14 -c c.ron").unwrap(),
            Command::Snapshot {
                action: SnapshotAction::Pull { date },
                config: "c.ron".into(),
                json: false
            }
        );
    }

    #[test]
    fn help_and_version_work_everywhere() {
        assert_eq!(parse_words("--help").unwrap(), Command::Help(MAIN_HELP));
        assert_eq!(parse_words("-V").unwrap(), Command::Version);
        assert_eq!(parse_words("key --help").unwrap(), Command::Help(KEY_HELP));
        assert_eq!(parse_words("serve -V").unwrap(), Command::Version);
        assert_eq!(parse_words("check-config -h").unwrap(), Command::Help(CHECK_HELP));
        assert_eq!(parse_words("snapshot import --help").unwrap(), Command::Help(SNAPSHOT_HELP));
        assert_eq!(parse_words("snapshot -V").unwrap(), Command::Version);
    }

    #[test]
    fn mistakes_are_usage_errors() {
        for (words, message) in [
            ("", "no command given"),
            ("launch", "unknown command `launch`"),
            (
                "key",
                "key needs an action: status, generate, replace, revoke, clients, check, \
                 export-record or install-record",
            ),
            ("key open", "unknown key action `open`"),
            ("serve --json", "invalid option '--json'"),
            ("serve extra", "unexpected argument \"extra\""),
            ("key status status", "unexpected argument \"status\""),
            ("serve --config", "missing argument for option '--config'"),
            ("key status --date 2024-05-14", "invalid option '--date'"),
            ("completions", "completions needs a shell: bash, zsh or fish"),
            ("completions tcsh", "no completions for `tcsh`"),
            ("completions bash zsh", "unexpected argument \"zsh\""),
            ("serve --strict", "invalid option '--strict'"),
            ("diagnose extra", "unexpected argument \"extra\""),
        ] {
            assert_eq!(parse_words(words).unwrap_err().message, message, "{words}");
        }
        let cases = [
            ("key generate --grace 15m", "--grace is for key replace"),
            ("key install-record", "key install-record needs a FILE, or - for standard input"),
            ("key install-record a b", "key install-record takes one FILE"),
            ("key install-record - -o x", "--output is for key export-record"),
            ("key status -o x", "--output is for key export-record"),
            ("key export-record --force", "--force is for key install-record"),
            ("key revoke --expires-in 1d", "--expires-in is for key generate and key replace"),
            ("key replace --grace soon", "--grace `soon` is not a duration"),
            ("key replace --grace 0s", "--grace `0s` is shorter than one second"),
        ];
        for (words, needle) in cases {
            let error = parse_words(words).unwrap_err();
            assert!(error.message.contains(needle), "{words}: {}", error.message);
        }
    }

    #[test]
    fn snapshot_mistakes_say_what_is_missing() {
        let cases = [
            ("snapshot", "snapshot needs an action"),
            ("snapshot import", "import needs the snapshot FILE"),
            ("snapshot import s.json", "import needs the analysis date"),
            ("snapshot import s.json --date 2024-13-01", "`2024-13-01` is not a date"),
            ("snapshot import s.json --date", "missing argument"),
            ("snapshot import a.json b.json --date 2024-05-14", "unexpected argument `b.json`"),
            ("snapshot list x", "unexpected argument `x`"),
            ("snapshot list --date 2024-05-14", "--date is for import"),
            ("snapshot delete", "delete needs the DATE"),
            ("snapshot delete 14-05-2024", "`14-05-2024` is not a date"),
            ("snapshot delete 2024-05-14 --date 2024-05-14", "--date is for import"),
            ("snapshot export", "export needs the DATE"),
            ("snapshot export 2024-5-14", "`2024-5-14` is not a date"),
            ("snapshot export 2024-05-14 --date 2024-05-14", "--date is for import"),
            ("snapshot list --output x.json", "--output is for export"),
            ("snapshot verify now", "unexpected argument `now`"),
            ("snapshot check", "unknown snapshot action `check`"),
            ("snapshot pull now", "unexpected argument `now`"),
            ("snapshot pull --date 2024-02-30", "`2024-02-30` is not a date"),
        ];
        for (words, needle) in cases {
            let error = parse_words(words).unwrap_err();
            assert!(error.message.contains(needle), "{words}: {}", error.message);
            assert_eq!(error.help, SNAPSHOT_HELP, "{words}");
        }
    }
}
