//! Logging: `log` over `env_logger`, to stderr.
//!
//! Under systemd (`JOURNAL_STREAM` set) each line starts with its syslog priority (`<3>` ...
//! `<7>`) so journald records levels and adds its own timestamp; elsewhere each line carries an
//! RFC 3339 timestamp and the level. `RUST_LOG` overrides the configured level.
//!
//! Lines are plain `key=value` text so an operator can grep or ship them; the ones that start
//! with `audit ` form the audit trail, rendered by [`crate::audit`] and documented in
//! `docs/audit.md`. The rate limit on refusal lines is [`crate::refusals`].

use std::io::Write;
use std::time::SystemTime;

/// Starts the logger. Safe to call more than once (later calls do nothing).
pub fn init(level: log::LevelFilter) {
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let mut builder = env_logger::Builder::new();
    builder.filter_level(level);
    // Connection-level chatter from rustls (and from ureq, the pull's client) stays out unless
    // asked for by RUST_LOG.
    builder.filter_module("rustls", log::LevelFilter::Warn);
    builder.filter_module("ureq", log::LevelFilter::Warn);
    builder.filter_module("ureq_proto", log::LevelFilter::Warn);
    if let Ok(spec) = std::env::var("RUST_LOG") {
        builder.parse_filters(&spec);
    }
    builder.target(env_logger::Target::Stderr);
    builder.format(move |out, record| {
        if journald {
            writeln!(out, "<{}>{}", syslog_priority(record.level()), record.args())
        } else {
            let now = humantime::format_rfc3339_millis(SystemTime::now());
            writeln!(out, "{now} {:<5} {}", record.level(), record.args())
        }
    });
    let _ = builder.try_init();
}

fn syslog_priority(level: log::Level) -> u8 {
    match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}
