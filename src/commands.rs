//! What each command of the command line does, once [`crate::cli`] has parsed it.
//!
//! `serve` hands over to [`crate::server`]; `key` and `snapshot` are thin clients of the admin
//! port that print its answers for people (or as JSON with `--json`); `check-config` loads the
//! file.
//! Errors come back as one [`Error`], which `main` turns into the exit code.

use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use zeroize::Zeroizing;

use crate::cli::{Command, KeyAction, SnapshotAction};
use crate::client::{self, ClientError};
use crate::config::{Config, ConfigError};
use crate::server::{self, ServeError};

#[derive(Debug)]
pub enum Error {
    Config(ConfigError),
    Serve(ServeError),
    Client(ClientError),
    /// The admin port answered, and said no.
    Refused {
        status: u16,
        code: String,
        message: String,
    },
    Output(io::Error),
    /// A file named on the command line cannot be sent.
    Input {
        path: PathBuf,
        reason: String,
    },
    Pull(crate::pull::PullError),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config(e) => e.fmt(f),
            Self::Serve(e) => e.fmt(f),
            Self::Client(e) => e.fmt(f),
            Self::Refused { status, code, message } => {
                write!(f, "the admin port refused ({status} {code}): {message}")
            }
            Self::Output(e) => write!(f, "cannot write the output: {e}"),
            Self::Input { path, reason } => write!(f, "{}: {reason}", path.display()),
            Self::Pull(e) => write!(f, "snapshot pull failed: {e}"),
        }
    }
}

impl std::error::Error for Error {}

/// Runs a parsed command.
pub fn run(command: Command) -> Result<(), Error> {
    match command {
        Command::Help(text) => print(text),
        Command::Version => print(&format!("aims-api {}\n", env!("CARGO_PKG_VERSION"))),
        Command::CheckConfig { config } => {
            Config::load(&config).map_err(Error::Config)?;
            print(&format!("{}: ok\n", config.display()))
        }
        Command::Serve { config } => {
            let config = Config::load(&config).map_err(Error::Config)?;
            crate::log::init(config.log_level.0);
            log::info!(
                "aims-api {} starting with {}",
                env!("CARGO_PKG_VERSION"),
                config.path.display()
            );
            server::serve(config).map_err(Error::Serve)
        }
        Command::Key { action, config, json } => key(action, &config, json),
        Command::Snapshot { action, config, json } => snapshot(&action, &config, json),
    }
}

fn print(text: &str) -> Result<(), Error> {
    io::stdout().write_all(text.as_bytes()).map_err(Error::Output)
}

fn key(action: KeyAction, config: &Path, json: bool) -> Result<(), Error> {
    // This process is about to hold a key in clear: no core dump may carry it off.
    crate::hardening::no_core_dumps();
    let config = Config::load(config).map_err(Error::Config)?;
    let (method, path) = match action {
        KeyAction::Status => ("GET", "/key"),
        KeyAction::Generate => ("POST", "/key"),
        KeyAction::Replace => ("POST", "/key/replace"),
        KeyAction::Revoke => ("DELETE", "/key"),
    };
    let answer = client::call(
        config.admin.listen,
        method,
        path,
        &mut io::empty(),
        0,
        Duration::from_secs(30),
    )
    .map_err(Error::Client)?;
    let Some(answer) = accepted(answer, json)? else { return Ok(()) };
    match action {
        KeyAction::Status | KeyAction::Revoke => {
            let body: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
            print(&describe_status(&body))
        }
        KeyAction::Generate | KeyAction::Replace => {
            let shown: NewKey = serde_json::from_slice(&answer.body)
                .map_err(|_| Error::Client(ClientError::Malformed { addr: config.admin.listen }))?;
            show_new_key(shown, action)
        }
    }
}

/// How long the CLI waits for an import: the server validates the whole file before it answers.
const IMPORT_TIMEOUT: Duration = Duration::from_secs(600);

fn snapshot(action: &SnapshotAction, config: &Path, json: bool) -> Result<(), Error> {
    let config = Config::load(config).map_err(Error::Config)?;
    let addr = config.admin.listen;
    let answer = match action {
        SnapshotAction::Pull { date } => return pull(&config, *date, json),
        SnapshotAction::Import { file, date } => {
            let input = |reason: String| Error::Input { path: file.clone(), reason };
            let mut opened = File::open(file).map_err(|e| input(format!("cannot open: {e}")))?;
            let len = opened.metadata().map_err(|e| input(format!("cannot read: {e}")))?.len();
            let limit = config.admin.limits.max_body_bytes;
            if len > limit {
                return Err(input(format!(
                    "{len} bytes is more than the admin port accepts (admin.max_body_bytes is \
                     {limit}): raise it in the configuration and restart the server"
                )));
            }
            let path = format!("/snapshots/{date}");
            client::call(addr, "PUT", &path, &mut opened, len, IMPORT_TIMEOUT)
        }
        SnapshotAction::List => {
            client::call(addr, "GET", "/snapshots", &mut io::empty(), 0, Duration::from_secs(30))
        }
        SnapshotAction::Delete { date } => {
            let path = format!("/snapshots/{date}");
            client::call(addr, "DELETE", &path, &mut io::empty(), 0, Duration::from_secs(30))
        }
    }
    .map_err(Error::Client)?;
    let Some(answer) = accepted(answer, json)? else { return Ok(()) };
    let body: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
    print(&match action {
        SnapshotAction::Import { .. } => describe_import(&body),
        SnapshotAction::List => describe_list(&body),
        SnapshotAction::Delete { .. } => describe_delete(&body),
        SnapshotAction::Pull { .. } => String::new(),
    })
}

/// `snapshot pull`: progress on stderr (log lines under systemd), one summary on stdout.
fn pull(config: &Config, date: Option<crate::snapshot::Date>, json: bool) -> Result<(), Error> {
    crate::log::init(config.log_level.0);
    let summary = crate::pull::run(config, date).map_err(Error::Pull)?;
    if json {
        print(&format!("{}\n", summary.to_json()))
    } else {
        print(&format!("{}\n", summary.line()))
    }
}

fn count(value: &Value, name: &str) -> u64 {
    value.get(name).and_then(Value::as_u64).unwrap_or(0)
}

fn describe_import(body: &Value) -> String {
    let snapshot = &body["snapshot"];
    format!(
        "{} the snapshot of {}: {} applications, {} modules, {} findings, analysed {}; \
         served from now on\n",
        if field(body, "result") == "replaced" { "replaced" } else { "imported" },
        field(snapshot, "date"),
        count(snapshot, "applications"),
        count(snapshot, "modules"),
        count(snapshot, "findings"),
        field(snapshot, "last_analyzed_on"),
    )
}

fn describe_list(body: &Value) -> String {
    let snapshots = body["snapshots"].as_array().map(Vec::as_slice).unwrap_or_default();
    let mut text = String::new();
    if snapshots.is_empty() {
        text.push_str("no snapshot is served: import one with aims-api snapshot import\n");
    } else {
        text.push_str("DATE        LAST ANALYZED ON          APPLICATIONS  MODULES  FINDINGS\n");
    }
    for (i, s) in snapshots.iter().enumerate() {
        text.push_str(&format!(
            "{:<10}  {:<24}  {:>12}  {:>7}  {:>8}{}\n",
            field(s, "date"),
            field(s, "last_analyzed_on"),
            count(s, "applications"),
            count(s, "modules"),
            count(s, "findings"),
            if i == 0 { "  (newest: answers requests without Date)" } else { "" },
        ));
    }
    for refused in body["refused"].as_array().map(Vec::as_slice).unwrap_or_default() {
        text.push_str(&format!(
            "not served: {}.json was refused at start: {}\n",
            field(refused, "date"),
            field(refused, "reason"),
        ));
    }
    text
}

fn describe_delete(body: &Value) -> String {
    let mut text = format!("deleted the snapshot of {}", field(body, "date"));
    match body.get("newest").and_then(Value::as_str) {
        Some(newest) => text.push_str(&format!("; the newest is now {newest}\n")),
        None => text.push_str("; no snapshot is left: the API answers 404 until one is imported\n"),
    }
    text
}

/// The admin port's answer if it is a success left to describe: a refusal becomes the error,
/// and with `--json` the answer is printed as it came and there is nothing left to do.
fn accepted(answer: client::Answer, json: bool) -> Result<Option<client::Answer>, Error> {
    if !(200..300).contains(&answer.status) {
        return Err(refused(answer.status, &answer.body));
    }
    if json {
        let mut out = io::stdout().lock();
        out.write_all(&answer.body).and_then(|()| out.write_all(b"\n")).map_err(Error::Output)?;
        return Ok(None);
    }
    Ok(Some(answer))
}

fn refused(status: u16, body: &[u8]) -> Error {
    let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let text = |field: &str| value.get(field).and_then(Value::as_str).unwrap_or("").to_owned();
    Error::Refused { status, code: text("error"), message: text("message") }
}

fn field<'v>(value: &'v Value, name: &str) -> &'v str {
    value.get(name).and_then(Value::as_str).unwrap_or("-")
}

fn describe_status(value: &Value) -> String {
    let generation = value.get("generation").and_then(Value::as_u64).unwrap_or(0);
    let mut text = format!(
        "state:       {}\nfingerprint: {}\ncreated_at:  {}\nrevoked_at:  {}\ngeneration:  {generation}\n",
        field(value, "state"),
        field(value, "fingerprint"),
        field(value, "created_at"),
        field(value, "revoked_at"),
    );
    if value.get("persisted").and_then(Value::as_bool) == Some(false) {
        text.push_str("warning:     the store could not record the last revoke; revoke again\n");
    }
    text
}

/// The admin port's answer to generate and replace. The key is borrowed from the answer's
/// buffer (which is wiped on drop), never copied into a string of its own.
#[derive(serde::Deserialize)]
struct NewKey<'a> {
    api_key: &'a str,
    fingerprint: String,
    created_at: String,
}

/// The key goes alone on stdout (so `KEY=$(aims-api key generate)` works); the warning and
/// the details go to stderr, where a person sees them and a pipe does not take them.
fn show_new_key(shown: NewKey<'_>, action: KeyAction) -> Result<(), Error> {
    // Sized once: a string that grew would leave a copy of the key in the memory it gave back.
    let mut line = Zeroizing::new(String::with_capacity(shown.api_key.len() + 1));
    line.push_str(shown.api_key);
    line.push('\n');
    let verb = match action {
        KeyAction::Replace => "replaced the key; the old one is refused from now on",
        _ => "generated a key",
    };
    let _ = writeln!(
        io::stderr().lock(),
        "aims-api: {verb}\nfingerprint: {}\ncreated_at:  {}\n\n\
         This key is shown once and cannot be shown again: store it in your secret manager now.\n",
        shown.fingerprint,
        shown.created_at,
    );
    print(&line)
}
