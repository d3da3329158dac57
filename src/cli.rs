//! The command line: raw arguments in, a validated [`Command`] out (or a usage error).
//!
//! `lexopt` does the tokenizing; everything else is a small hand-written match, so the whole
//! grammar is readable in one screen and the help text is written for people, not generated.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;

use crate::config::DEFAULT_PATH;

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
    CheckConfig {
        config: PathBuf,
    },
    /// Print this help text and exit 0.
    Help(&'static str),
    Version,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAction {
    Status,
    Generate,
    Replace,
    Revoke,
}

/// A command line that does not fit the grammar (exit code 2).
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
  check-config   check a configuration file and exit

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

usage: aims-api key <status|generate|replace|revoke> [--config PATH] [--json]

actions:
  status    show the key's state, fingerprint and dates
  generate  make a key when none is active; it is printed once and never again
  replace   make a new key and refuse the old one from that moment on
  revoke    refuse the active key from that moment on

options:
  -c, --config PATH  configuration file whose admin.listen to use (default /etc/aims-api/config.ron)
      --json         print the admin port's JSON answer as it is
  -h, --help         print this help
  -V, --version      print the version

The admin port only serves root (and admin.allowed_uids): run these with sudo.
";

const CHECK_HELP: &str = "\
aims-api check-config: check a configuration file; exit 0 if it is usable, 1 if not

usage: aims-api check-config [--config PATH]

options:
  -c, --config PATH  configuration file (default /etc/aims-api/config.ron)
  -h, --help         print this help
  -V, --version      print the version
";

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
    let help = match command.as_str() {
        "serve" => SERVE_HELP,
        "key" => KEY_HELP,
        "check-config" => CHECK_HELP,
        _ => return Err(usage(format!("unknown command `{command}`"), MAIN_HELP)),
    };
    let mut config = PathBuf::from(DEFAULT_PATH);
    let mut json = false;
    let mut action = None;
    while let Some(arg) = parser.next().map_err(|e| usage(e.to_string(), help))? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help(help)),
            Short('V') | Long("version") => return Ok(Command::Version),
            Short('c') | Long("config") => {
                config = parser.value().map_err(|e| usage(e.to_string(), help))?.into();
            }
            Long("json") if command == "key" => json = true,
            Value(word) if command == "key" && action.is_none() => {
                action = Some(match word.to_str() {
                    Some("status") => KeyAction::Status,
                    Some("generate") => KeyAction::Generate,
                    Some("replace") => KeyAction::Replace,
                    Some("revoke") => KeyAction::Revoke,
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
        _ => match action {
            Some(action) => Command::Key { action, config, json },
            None => {
                return Err(usage(
                    "key needs an action: status, generate, replace or revoke".into(),
                    help,
                ));
            }
        },
    })
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
            Command::Key { action: KeyAction::Replace, config: "c.ron".into(), json: true }
        );
        assert_eq!(
            parse_words("check-config --config=c.ron").unwrap(),
            Command::CheckConfig { config: "c.ron".into() }
        );
    }

    #[test]
    fn help_and_version_work_everywhere() {
        assert_eq!(parse_words("--help").unwrap(), Command::Help(MAIN_HELP));
        assert_eq!(parse_words("-V").unwrap(), Command::Version);
        assert_eq!(parse_words("key --help").unwrap(), Command::Help(KEY_HELP));
        assert_eq!(parse_words("serve -V").unwrap(), Command::Version);
        assert_eq!(parse_words("check-config -h").unwrap(), Command::Help(CHECK_HELP));
    }

    #[test]
    fn mistakes_are_usage_errors() {
        for words in [
            "",
            "launch",
            "key",
            "key open",
            "serve --json",
            "serve extra",
            "key status status",
            "serve --config",
        ] {
            assert!(parse_words(words).is_err(), "{words}");
        }
    }
}
