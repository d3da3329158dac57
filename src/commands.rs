//! What each command of the command line does, once [`crate::cli`] has parsed it.
//!
//! `serve` hands over to [`crate::server`]; `key` is a thin client of the admin port that
//! prints its answers for people (or as JSON with `--json`); `check-config` loads the file.
//! Errors come back as one [`Error`], which `main` turns into the exit code.

use std::fmt;
use std::io::{self, Write};
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use zeroize::Zeroizing;

use crate::cli::{Command, KeyAction};
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
    if !(200..300).contains(&answer.status) {
        return Err(refused(answer.status, &answer.body));
    }
    if json {
        let mut out = io::stdout().lock();
        return out
            .write_all(&answer.body)
            .and_then(|()| out.write_all(b"\n"))
            .map_err(Error::Output);
    }
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
