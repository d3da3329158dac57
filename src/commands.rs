//! What each command of the command line does, once [`crate::cli`] has parsed it.
//!
//! `serve` hands over to [`crate::server`]; `key` and `snapshot` are thin clients of the admin
//! port that print its answers for people (or as JSON with `--json`); `check-config` loads the
//! file; `diagnose` runs [`crate::diagnose`]; `completions` prints [`crate::manual`]'s scripts.
//! A command ends with an [`Exit`]: a check's answer (`key check`) is one, and every failure is
//! one [`Error`], which [`Error::exit`] maps to its status: the one place that does.

use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use zeroize::Zeroizing;

use crate::admin_client::{self, ClientError};
use crate::cli::{Command, Exit, KeyAction, SnapshotAction};
use crate::config::{Config, ConfigError};
use crate::server::{self, ServeError};
use crate::snapshot::Date;

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
    /// `diagnose` found failures (or, with `--strict`, warnings); the report says which.
    Diagnosed {
        failures: usize,
        warnings: usize,
    },
    Pull(crate::pull::PullError),
    /// `snapshot export` or `key export-record` with `--output FILE` could not write FILE (it
    /// is as it was).
    Export(crate::durable::WriteError),
    /// `snapshot verify` found problems; the report names them.
    Verify {
        problems: usize,
    },
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
            Self::Diagnosed { failures, warnings } => write!(
                f,
                "diagnose found {failures} failure(s) and {warnings} warning(s): each says \
                 what to do"
            ),
            Self::Pull(e) => write!(f, "snapshot pull failed: {e}"),
            Self::Export(e) => write!(f, "export failed: {e}"),
            Self::Verify { problems } => write!(
                f,
                "snapshot verify found {problems} problem(s): each line above names the date or file \
                 and what is wrong"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Config(e) => Some(e),
            Self::Serve(e) => Some(e),
            Self::Client(e) => Some(e),
            Self::Output(e) => Some(e),
            Self::Pull(e) => Some(e),
            Self::Export(e) => Some(e),
            Self::Refused { .. }
            | Self::Input { .. }
            | Self::Diagnosed { .. }
            | Self::Verify { .. } => None,
        }
    }
}

impl Error {
    /// The exit status this failure ends the command with (`aims-api(8)`, EXIT STATUS).
    pub fn exit(&self) -> Exit {
        use crate::pull::PullError as P;
        match self {
            Self::Config(_) => Exit::Config,
            Self::Serve(_) => Exit::Serve,
            Self::Client(_) | Self::Pull(P::Admin(_)) => Exit::Unreachable,
            Self::Refused { .. } | Self::Pull(P::AdminRefused { .. }) => Exit::Refused,
            Self::Output(_) | Self::Input { .. } | Self::Export(_) => Exit::Local,
            Self::Diagnosed { .. } | Self::Verify { .. } => Exit::No,
            Self::Pull(
                P::NoUpstream { .. }
                | P::KeyFile(_)
                | P::CaFile { .. }
                | P::Setup(_)
                | P::TooBig { .. },
            ) => Exit::Config,
            Self::Pull(
                P::Refused { .. }
                | P::Tls { .. }
                | P::GaveUp { .. }
                | P::Deadline { .. }
                | P::TooLarge { .. }
                | P::Malformed { .. }
                | P::Unstable { .. }
                | P::Invalid(_),
            ) => Exit::Upstream,
        }
    }
}

/// Runs a parsed command; what it ended with.
pub fn run(command: Command) -> Result<Exit, Error> {
    let done = |()| Exit::Success;
    match command {
        Command::Help(text) => print(text).map(done),
        Command::Version => print(&format!("aims-api {}\n", env!("CARGO_PKG_VERSION"))).map(done),
        Command::CheckConfig { config } => {
            Config::load(&config).map_err(Error::Config)?;
            print(&format!("{}: ok\n", config.display())).map(done)
        }
        Command::Serve { config } => {
            let config = Config::load(&config).map_err(Error::Config)?;
            crate::logging::init(config.log_level.0);
            log::info!(
                "aims-api {} starting with {}",
                env!("CARGO_PKG_VERSION"),
                config.path.display()
            );
            server::serve(config).map_err(Error::Serve).map(done)
        }
        Command::Key { action, config, json } => key(action, &config, json),
        Command::Diagnose { config, json, strict } => {
            let report = crate::diagnose::run(&config);
            if json {
                print(&format!("{:#}\n", report.to_json(strict)))?;
            } else {
                print(&report.render())?;
            }
            if report.passed(strict) {
                Ok(Exit::Success)
            } else {
                Err(Error::Diagnosed {
                    failures: report.count(crate::diagnose::Status::Failure),
                    warnings: report.count(crate::diagnose::Status::Warning),
                })
            }
        }
        Command::Completions(shell) => print(&crate::manual::completions(shell)).map(done),
        Command::Snapshot { action, config, json } => snapshot(&action, &config, json).map(done),
    }
}

fn print(text: &str) -> Result<(), Error> {
    io::stdout().write_all(text.as_bytes()).map_err(Error::Output)
}

fn key(action: KeyAction, config: &Path, json: bool) -> Result<Exit, Error> {
    // This process is about to hold a key in clear: no core dump may carry it off.
    crate::hardening::no_core_dumps();
    let config = Config::load(config).map_err(Error::Config)?;
    let terms = match &action {
        KeyAction::Check => return check_key(&config, json),
        KeyAction::ExportRecord { output } => {
            return export_record(&config, output.as_deref()).map(|()| Exit::Success);
        }
        KeyAction::InstallRecord { file, force } => {
            return install_record(&config, file, *force, json).map(|()| Exit::Success);
        }
        KeyAction::Generate { expires_in } => terms_body(None, *expires_in),
        KeyAction::Replace { grace, expires_in } => terms_body(*grace, *expires_in),
        KeyAction::Status | KeyAction::Revoke | KeyAction::Clients => String::new(),
    };
    let (method, path) = match action {
        KeyAction::Status => ("GET", "/key"),
        KeyAction::Generate { .. } => ("POST", "/key"),
        KeyAction::Replace { .. } => ("POST", "/key/replace"),
        KeyAction::Revoke => ("DELETE", "/key"),
        KeyAction::Clients => ("GET", "/key/clients"),
        KeyAction::Check | KeyAction::ExportRecord { .. } | KeyAction::InstallRecord { .. } => {
            ("POST", "/key/check")
        }
    };
    let answer = admin_client::call(
        &config.admin,
        method,
        path,
        &mut terms.as_bytes(),
        terms.len() as u64,
        Duration::from_secs(30),
    )
    .map_err(Error::Client)?;
    let Some(answer) = accepted(answer, json)? else { return Ok(Exit::Success) };
    let body = || -> Value { serde_json::from_slice(&answer.body).unwrap_or(Value::Null) };
    match action {
        KeyAction::Status | KeyAction::Revoke => print(&describe_status(&body())),
        KeyAction::Clients => print(&describe_clients(&body())),
        KeyAction::Generate { .. } | KeyAction::Replace { .. } => {
            let shown: NewKey = serde_json::from_slice(&answer.body).map_err(|_| {
                Error::Client(ClientError::Malformed { addr: (&config.admin).into() })
            })?;
            show_new_key(shown, &action)
        }
        KeyAction::Check | KeyAction::ExportRecord { .. } | KeyAction::InstallRecord { .. } => {
            Ok(())
        }
    }
    .map(|()| Exit::Success)
}

/// The longest key record read or installed: 18 keys' hashes and times are a few KiB.
const MAX_RECORD_BYTES: u64 = 64 * 1024;

/// `key export-record [--output FILE]`: the admin port's record, byte for byte, on standard
/// output or durably in FILE (0600: it names the key's hash).
fn export_record(config: &Config, output: Option<&Path>) -> Result<(), Error> {
    let body = fetch(&config.admin, "/key/record", Duration::from_secs(30), MAX_RECORD_BYTES)?;
    deliver(&body, output)?;
    if let Some(file) = output {
        let _ = writeln!(io::stderr(), "wrote the key record to {}", file.display());
    }
    Ok(())
}

/// `GET path` on the admin port, at most `cap` bytes of answer: its body, or the refusal.
fn fetch(
    addr: &crate::config::Admin,
    path: &str,
    timeout: Duration,
    cap: u64,
) -> Result<Zeroizing<Vec<u8>>, Error> {
    let answer = admin_client::call_capped(addr, "GET", path, &mut io::empty(), 0, timeout, cap)
        .map_err(Error::Client)?;
    if !(200..300).contains(&answer.status) {
        return Err(refused(answer.status, &answer.body));
    }
    Ok(answer.body)
}

/// Writes an export as it came: on standard output, or durably in `output` (mode 0600).
/// Nothing is added, so `> FILE` and `--output FILE` agree.
fn deliver(body: &[u8], output: Option<&Path>) -> Result<(), Error> {
    match output {
        None => io::stdout().lock().write_all(body).map_err(Error::Output),
        Some(file) => crate::durable::write(file, body, 0o600).map_err(Error::Export),
    }
}

/// `key install-record FILE|- [--force]`: sends a record exported by the other appliance.
fn install_record(config: &Config, file: &Path, force: bool, json: bool) -> Result<(), Error> {
    use std::io::Read;

    let input_error = |reason: String| Error::Input { path: file.to_owned(), reason };
    let mut text = Vec::new();
    let read = if file == Path::new("-") {
        io::stdin().lock().take(MAX_RECORD_BYTES + 1).read_to_end(&mut text)
    } else {
        std::fs::File::open(file).and_then(|f| f.take(MAX_RECORD_BYTES + 1).read_to_end(&mut text))
    };
    read.map_err(|e| input_error(e.to_string()))?;
    if text.len() as u64 > MAX_RECORD_BYTES {
        return Err(input_error(format!("longer than a key record ({MAX_RECORD_BYTES} bytes)")));
    }
    if force {
        let mut value: Value = serde_json::from_slice(&text)
            .map_err(|e| input_error(format!("not a key record: {e}")))?;
        let Some(object) = value.as_object_mut() else {
            return Err(input_error("not a key record: not a JSON object".to_owned()));
        };
        object.insert("force".to_owned(), Value::Bool(true));
        text = value.to_string().into_bytes();
    }
    let answer = admin_client::call(
        &config.admin,
        "PUT",
        "/key/record",
        &mut text.as_slice(),
        text.len() as u64,
        Duration::from_secs(30),
    )
    .map_err(Error::Client)?;
    let Some(answer) = accepted(answer, json)? else { return Ok(()) };
    let value: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
    let generation = value.get("generation").and_then(Value::as_u64).unwrap_or(0);
    print(&format!(
        "{}: key {} ({}), generation {generation}\n",
        field(&value, "result"),
        field(&value, "fingerprint"),
        field(&value, "state"),
    ))
}

/// The JSON body of generate and replace: only what was asked for.
fn terms_body(grace: Option<Duration>, expires_in: Option<Duration>) -> String {
    let mut fields = Vec::new();
    if let Some(grace) = grace {
        fields.push(format!("\"grace_secs\":{}", grace.as_secs()));
    }
    if let Some(expires_in) = expires_in {
        fields.push(format!("\"expires_in_secs\":{}", expires_in.as_secs()));
    }
    if fields.is_empty() { String::new() } else { format!("{{{}}}", fields.join(",")) }
}

/// The longest line `key check` reads: a key is 54 characters.
const MAX_KEY_LINE: u64 = 1024;

/// `aims-api key check`: the key comes on standard input, never on the command line (where
/// `ps` and the shell history would see it), and is never printed back. Its verdict is the exit
/// status: admitted now, not admitted, or malformed.
fn check_key(config: &Config, json: bool) -> Result<Exit, Error> {
    use std::io::{IsTerminal, Read};

    if io::stdin().is_terminal() {
        let _ = writeln!(io::stderr(), "paste the key, then Enter (it is not shown again):");
    }
    // Sized once: a buffer that grew would leave a copy of the key in the memory it gave back.
    let mut line = Zeroizing::new(Vec::with_capacity(MAX_KEY_LINE as usize + 1));
    io::stdin()
        .lock()
        .take(MAX_KEY_LINE)
        .read_to_end(&mut line)
        .map_err(|e| Error::Input { path: "standard input".into(), reason: e.to_string() })?;
    let presented = line.split(|&b| b == b'\n').next().unwrap_or_default().trim_ascii();
    if presented.is_empty() {
        return Err(Error::Input {
            path: "standard input".into(),
            reason: "no key: give it on standard input, e.g. `aims-api key check < key.txt`".into(),
        });
    }
    if let Err(e) = crate::key::check_format(presented) {
        let text = if json {
            format!("{{\"status\":\"malformed\",\"reason\":\"{}\"}}\n", e.as_str())
        } else {
            format!("format:      malformed: {}\n", e.as_str())
        };
        return print(&text).map(|()| Exit::Malformed);
    }
    if !json {
        let fingerprint = crate::key::Fingerprint::of_presented(presented)
            .map_or_else(|| "-".to_owned(), |f| f.as_str().to_owned());
        print(&format!(
            "format:      well-formed, checksum matches\nfingerprint: {fingerprint}\n"
        ))?;
    }
    let answer = admin_client::call(
        &config.admin,
        "POST",
        "/key/check",
        &mut &presented[..],
        presented.len() as u64,
        Duration::from_secs(30),
    )
    .map_err(Error::Client)?;
    if !(200..300).contains(&answer.status) {
        return Err(refused(answer.status, &answer.body));
    }
    let value: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
    let verdict = match field(&value, "status") {
        "live" | "grace" => Exit::Success,
        "malformed" => Exit::Malformed,
        "retired" | "unknown" => Exit::No,
        // An answer this client does not know cannot be called admitted.
        _ => return Err(Error::Client(ClientError::Malformed { addr: (&config.admin).into() })),
    };
    let text = if json {
        format!("{}\n", String::from_utf8_lossy(&answer.body))
    } else {
        format!("status:      {}\n", describe_check(&value))
    };
    print(&text).map(|()| verdict)
}

fn describe_check(value: &Value) -> String {
    let generation = value.get("generation").and_then(Value::as_u64).unwrap_or(0);
    match field(value, "status") {
        "live" => match value.get("expires_at").and_then(Value::as_str) {
            Some(at) => format!("live: the current key (generation {generation}, expires {at})"),
            None => format!("live: the current key (generation {generation})"),
        },
        "grace" => format!(
            "grace: the previous key, still admitted until {} (generation {generation})",
            field(value, "valid_until")
        ),
        "retired" => format!(
            "retired: refused since {} ({}; generation {generation})",
            field(value, "retired_at"),
            field(value, "how")
        ),
        "unknown" => "unknown: not a key this server knows (neither in force nor among the \
                      last 16 retired)"
            .to_owned(),
        other => format!("{other}: {}", field(value, "reason")),
    }
}

/// How long the CLI waits for an import: the server validates the whole file before it answers.
const IMPORT_TIMEOUT: Duration = Duration::from_secs(600);

fn snapshot(action: &SnapshotAction, config: &Path, json: bool) -> Result<(), Error> {
    let config = Config::load(config).map_err(Error::Config)?;
    let addr = &config.admin;
    let answer = match action {
        SnapshotAction::Pull { date } => return pull(&config, *date, json),
        SnapshotAction::Export { date, output } => return export(addr, *date, output.as_deref()),
        SnapshotAction::Verify => return verify(&config, json),
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
            admin_client::call(addr, "PUT", &path, &mut opened, len, IMPORT_TIMEOUT)
        }
        SnapshotAction::List => admin_client::call(
            addr,
            "GET",
            "/snapshots",
            &mut io::empty(),
            0,
            Duration::from_secs(30),
        ),
        SnapshotAction::Delete { date } => {
            let path = format!("/snapshots/{date}");
            admin_client::call(addr, "DELETE", &path, &mut io::empty(), 0, Duration::from_secs(30))
        }
    }
    .map_err(Error::Client)?;
    let Some(answer) = accepted(answer, json)? else { return Ok(()) };
    let body: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
    print(&match action {
        SnapshotAction::Import { .. } => describe_import(&body),
        SnapshotAction::List => describe_list(&body),
        SnapshotAction::Delete { .. } => describe_delete(&body),
        SnapshotAction::Pull { .. } | SnapshotAction::Export { .. } | SnapshotAction::Verify => {
            String::new()
        }
    })
}

/// The most `snapshot export` reads: the server holds the snapshot in memory already, so this
/// only stops a runaway answer.
const EXPORT_MAX_BYTES: u64 = 16 * 1024 * 1024 * 1024;

/// `snapshot export DATE [--output FILE]`: the admin port's document, byte for byte, on
/// standard output or durably in FILE.
fn export(addr: &crate::config::Admin, date: Date, output: Option<&Path>) -> Result<(), Error> {
    let body = fetch(addr, &format!("/snapshots/{date}"), IMPORT_TIMEOUT, EXPORT_MAX_BYTES)?;
    deliver(&body, output)?;
    match output {
        None => Ok(()),
        Some(file) => print(&format!(
            "exported the snapshot of {date} to {} ({} bytes)\n",
            file.display(),
            body.len()
        )),
    }
}

/// `snapshot verify`: the folder checked offline; exit 1 if anything is wrong.
fn verify(config: &Config, json: bool) -> Result<(), Error> {
    let report = crate::snapshot::verify::verify(&config.state_dir).map_err(|e| Error::Input {
        path: config.state_dir.join("snapshots"),
        reason: format!("cannot read the snapshot folder: {e}"),
    })?;
    if json {
        print(&format!("{:#}\n", report.to_json()))?;
    } else {
        print(&report.render())?;
    }
    match report.problems() {
        0 => Ok(()),
        problems => Err(Error::Verify { problems }),
    }
}

/// `snapshot pull`: progress on stderr (log lines under systemd), one summary on stdout.
fn pull(config: &Config, date: Option<Date>, json: bool) -> Result<(), Error> {
    crate::logging::init(config.log_level.0);
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
    ) + &pruned_line(body)
}

/// After an import, the dates the retention settings removed, if any.
fn pruned_line(body: &Value) -> String {
    let pruned: Vec<&str> = body["pruned"]
        .as_array()
        .map(|dates| dates.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    match pruned.is_empty() {
        true => String::new(),
        false => format!("pruned (retention): {}\n", pruned.join(", ")),
    }
}

fn describe_list(body: &Value) -> String {
    let snapshots = body["snapshots"].as_array().map(Vec::as_slice).unwrap_or_default();
    let mut text = String::new();
    if snapshots.is_empty() {
        text.push_str("no snapshot is served: import one with aims-api snapshot import\n");
    } else {
        text.push_str(&format!(
            "{:<10}  {:<24}  {:>12}  {:>7}  {:>8}  {:>9}  {:>9}  {}\n",
            "DATE",
            "LAST ANALYZED ON",
            "APPLICATIONS",
            "MODULES",
            "FINDINGS",
            "DISK",
            "MEMORY",
            "IMPORTED"
        ));
    }
    for (i, s) in snapshots.iter().enumerate() {
        let row = format!(
            "{:<10}  {:<24}  {:>12}  {:>7}  {:>8}  {:>9}  {:>9}  {:<23}{}",
            field(s, "date"),
            field(s, "last_analyzed_on"),
            count(s, "applications"),
            count(s, "modules"),
            count(s, "findings"),
            size(count(s, "disk_bytes")),
            size(count(s, "memory_bytes")),
            imported(s),
            if i == 0 { "  (newest: answers requests without Date)" } else { "" },
        );
        text.push_str(row.trim_end());
        text.push('\n');
    }
    if !snapshots.is_empty() {
        let total = &body["total"];
        text.push_str(&format!(
            "total: {} date(s), {} on disk, {} in memory\n",
            count(total, "dates"),
            size(count(total, "disk_bytes")),
            size(count(total, "memory_bytes")),
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

/// When and how a date came in, to the minute: `2026-12-01T05:10Z pull`; `-` for a date
/// stored before the server kept it.
fn imported(entry: &Value) -> String {
    match (entry["imported_at"].as_str(), entry["source"].as_str()) {
        (Some(at), Some(source)) => format!("{}Z {source}", at.get(..16).unwrap_or(at)),
        _ => "-".to_owned(),
    }
}

/// Bytes for people: `812 B`, `57.5 KiB`, `48.9 MiB`, `1.5 GiB`.
fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{bytes} B"),
        _ => format!("{value:.1} {}", UNITS[unit]),
    }
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
fn accepted(
    answer: admin_client::Answer,
    json: bool,
) -> Result<Option<admin_client::Answer>, Error> {
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
    let number = |v: &Value, name: &str| v.get(name).and_then(Value::as_u64).unwrap_or(0);
    let mut text = format!(
        "state:       {}\nfingerprint: {}\ncreated_at:  {}\nrevoked_at:  {}\nexpires_at:  {}\n\
         generation:  {}\nlast_used:   {} from {} ({} requests admitted)\n",
        field(value, "state"),
        field(value, "fingerprint"),
        field(value, "created_at"),
        field(value, "revoked_at"),
        field(value, "expires_at"),
        number(value, "generation"),
        field(value, "last_used_at"),
        field(value, "last_used_from"),
        number(value, "admitted"),
    );
    if let Some(previous) = value.get("previous").filter(|p| !p.is_null()) {
        text.push_str(&format!(
            "previous:    {} valid until {}; last used {} from {} ({} requests admitted)\n",
            field(previous, "fingerprint"),
            field(previous, "valid_until"),
            field(previous, "last_used_at"),
            field(previous, "last_used_from"),
            number(previous, "admitted"),
        ));
    }
    if let Some(exposed) = value.get("exposed").filter(|e| !e.is_null()) {
        text.push_str(&format!(
            "EXPOSED:     the key arrived over plain HTTP from {} at {}: replace it\n",
            field(exposed, "from"),
            field(exposed, "at"),
        ));
    }
    if value.get("persisted").and_then(Value::as_bool) == Some(false) {
        text.push_str("warning:     the store could not record the last revoke; revoke again\n");
    }
    text
}

fn describe_clients(value: &Value) -> String {
    let clients = value.get("clients").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut text =
        format!("{} address(es) used key {}:\n", clients.len(), field(value, "fingerprint"));
    text.push_str("address                                  first_seen                last_seen                 admitted\n");
    for client in &clients {
        text.push_str(&format!(
            "{:<40} {:<25} {:<25} {}\n",
            field(client, "address"),
            field(client, "first_seen"),
            field(client, "last_seen"),
            client.get("admitted").and_then(Value::as_u64).unwrap_or(0),
        ));
    }
    let dropped = value.get("dropped").and_then(Value::as_u64).unwrap_or(0);
    if dropped > 0 {
        text.push_str(&format!(
            "({dropped} less recently seen address(es) dropped: at most {} are kept)\n",
            value.get("limit").and_then(Value::as_u64).unwrap_or(0)
        ));
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
    expires_at: Option<String>,
    previous: Option<PreviousKey>,
}

#[derive(serde::Deserialize)]
struct PreviousKey {
    fingerprint: String,
    valid_until: String,
}

/// The key goes alone on stdout (so `KEY=$(aims-api key generate)` works); the warning and
/// the details go to stderr, where a person sees them and a pipe does not take them.
fn show_new_key(shown: NewKey<'_>, action: &KeyAction) -> Result<(), Error> {
    // Sized once: a string that grew would leave a copy of the key in the memory it gave back.
    let mut line = Zeroizing::new(String::with_capacity(shown.api_key.len() + 1));
    line.push_str(shown.api_key);
    line.push('\n');
    let verb = match (action, &shown.previous) {
        (KeyAction::Replace { .. }, Some(previous)) => format!(
            "replaced the key; the old one ({}) is still admitted until {}, then refused",
            previous.fingerprint, previous.valid_until
        ),
        (KeyAction::Replace { .. }, None) => {
            "replaced the key; the old one is refused from now on".to_owned()
        }
        _ => "generated a key".to_owned(),
    };
    let expires = shown.expires_at.as_deref().unwrap_or("never");
    let _ = writeln!(
        io::stderr().lock(),
        "aims-api: {verb}\nfingerprint: {}\ncreated_at:  {}\nexpires_at:  {expires}\n\n\
         This key is shown once and cannot be shown again: store it in your secret manager now.\n",
        shown.fingerprint,
        shown.created_at,
    );
    print(&line)
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    /// Each failure keeps its cause down to the system's error, and maps to its exit status.
    #[test]
    fn errors_keep_their_cause_and_their_exit_status() {
        let missing = Error::Config(Config::load(Path::new("/nonexistent/c.ron")).unwrap_err());
        let io =
            missing.source().and_then(|e| e.source()).and_then(|e| e.downcast_ref::<io::Error>());
        assert_eq!(io.map(io::Error::kind), Some(io::ErrorKind::NotFound));
        assert_eq!(missing.exit(), Exit::Config);

        let addr: std::net::SocketAddr = "127.0.0.1:1".parse().unwrap();
        let unreachable =
            admin_client::call(addr, "GET", "/", &mut io::empty(), 0, Duration::from_secs(1))
                .map_err(Error::Client)
                .unwrap_err();
        let io = unreachable
            .source()
            .and_then(|e| e.source())
            .and_then(|e| e.downcast_ref::<io::Error>());
        assert_eq!(io.map(io::Error::kind), Some(io::ErrorKind::ConnectionRefused));
        assert_eq!(unreachable.exit(), Exit::Unreachable);

        let key = crate::pull::secret::read(Path::new("/nonexistent/key")).unwrap_err();
        let pull = Error::Pull(crate::pull::PullError::KeyFile(key));
        let mut chain = vec![pull.to_string()];
        let mut cause = pull.source();
        while let Some(e) = cause {
            chain.push(e.to_string());
            cause = e.source();
        }
        assert_eq!(chain.len(), 4, "{chain:?}");
        assert_eq!(chain[3], "No such file or directory (os error 2)");
        assert_eq!(pull.exit(), Exit::Config);
        assert_eq!(Error::Verify { problems: 1 }.exit(), Exit::No);
    }
}
