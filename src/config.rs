//! The configuration file: `config.ron`, read once at start.
//!
//! Parse, don't validate: the file is deserialized straight into types that cannot hold a bad
//! value (a loopback-only admin address, bounded limits, an activation code that fits in a
//! header), so every mistake is reported by `ron` with the file, line and column where it is.
//! Unknown fields are errors, every optional field has a documented default, and relative
//! paths are resolved against the folder that holds the file, never the working directory.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer};

mod changes;
mod metrics;
mod upstream;

pub use crate::http::HttpLimits;
pub use crate::snapshot::store::{Compaction, Memory, Retention};
pub use crate::throttle::ThrottleSettings;
pub use changes::{Change, changes};
pub use metrics::Metrics;
use metrics::MetricsFile;
use upstream::UpstreamFile;
pub use upstream::{PinSha256, Upstream};

/// Where `serve` and the CLI look for the configuration when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/aims-api/config.ron";

/// A configuration that has been read and checked, with paths made absolute.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from, for messages.
    pub path: PathBuf,
    pub activation_code: ActivationCode,
    pub state_dir: PathBuf,
    pub log_level: LogLevel,
    pub refusal_log: RefusalLogSettings,
    /// `key_max_lifetime_days`: every key expires within this; `None`: keys need not expire.
    pub key_max_lifetime: Option<Duration>,
    /// What to do when the live key is seen in a plain-HTTP request.
    pub on_key_exposure: OnKeyExposure,
    pub api: Api,
    pub admin: Admin,
    /// Where `snapshot pull` fetches from; `None` when the appliance is fed by imports only.
    pub upstream: Option<Upstream>,
    /// The `snapshots` section: which dates are kept (default: all).
    pub retention: Retention,
    /// The `snapshots` section: how much of the history is kept in memory.
    pub snapshot_memory: Memory,
    /// The `metrics` section: the scrape port (off by default).
    pub metrics: Metrics,
    /// The `snapshots` section: when the store gives freed space back.
    pub snapshot_compaction: Compaction,
}

/// How refused requests are logged: one line each up to `lines` per `window`, then only
/// counted, with one audit line per client and window (see `docs/audit.md`).
#[derive(Debug, Clone, Copy)]
pub struct RefusalLogSettings {
    pub lines: u32,
    pub window: Duration,
}

/// What the server does when the live (or grace) key arrives over plain HTTP, i.e. has
/// crossed the network in clear text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnKeyExposure {
    /// Log an ERROR line, count it, and show it in `GET /key` until the key is replaced.
    Alert,
    /// All of that, and revoke the key at once.
    Revoke,
}

/// The public HTTPS port.
#[derive(Debug, Clone)]
pub struct Api {
    pub listen: SocketAddr,
    /// Both `Some` (operator's certificate) or both `None` (self-signed, made on first start).
    pub tls: Option<TlsFiles>,
    /// Event-loop threads; 0 in the file means one per CPU.
    pub workers: usize,
    pub max_connections: usize,
    /// Open connections one client address (an IPv6 client: its /64) may hold.
    pub max_connections_per_address: usize,
    pub handshake_timeout: Duration,
    /// On SIGTERM, how long requests in flight may take to finish.
    pub shutdown_timeout: Duration,
    pub limits: HttpLimits,
    pub throttle: ThrottleSettings,
}

#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The loopback-only admin port, and its optional Unix socket.
#[derive(Debug, Clone)]
pub struct Admin {
    pub listen: SocketAddr,
    /// Where to serve the same routes on a Unix socket too (identity from `SO_PEERCRED`).
    pub unix_socket: Option<PathBuf>,
    pub allowed_uids: Vec<u32>,
    pub workers: usize,
    pub limits: HttpLimits,
    /// The slowest average a request body may arrive, and an answer be read, after a first
    /// `header_timeout`: slower is cut with a `408`.
    pub min_bytes_per_sec: u64,
}

/// The infrastructure's activation code, as clients send it in `x-activation-code`.
#[derive(Clone, PartialEq, Eq)]
pub struct ActivationCode(String);

impl ActivationCode {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ActivationCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ActivationCode(..)")
    }
}

impl<'de> Deserialize<'de> for ActivationCode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text.is_empty() || text.len() > 256 || !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(de::Error::custom(
                "activation_code must be 1 to 256 printable ASCII characters without spaces \
                 (it travels in the x-activation-code header)",
            ));
        }
        Ok(Self(text))
    }
}

/// The log level, as `log` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLevel(pub log::LevelFilter);

impl<'de> Deserialize<'de> for LogLevel {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map(LogLevel).map_err(|_| {
            de::Error::custom(format!(
                "log_level `{text}` is not one of off, error, warn, info, debug, trace"
            ))
        })
    }
}

/// Why a configuration could not be used.
#[derive(Debug)]
pub enum ConfigError {
    Read { path: PathBuf, source: std::io::Error },
    Syntax { path: PathBuf, line: usize, column: usize, message: String },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Read { path, source } => {
                write!(f, "cannot read config {}: {source}", path.display())
            }
            Self::Syntax { path, line, column, message } => {
                write!(f, "{}:{line}:{column}: {message}", path.display())
            }
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Read { source, .. } => Some(source),
            // ron's error is kept as its message with its position, the part an operator needs.
            Self::Syntax { .. } => None,
        }
    }
}

impl Config {
    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::parse(path, &text)
    }

    /// Checks `text` as if read from `path` (which anchors relative paths and names errors).
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let file: File =
            ron::Options::default().from_str(text).map_err(|e| ConfigError::Syntax {
                path: path.to_owned(),
                line: e.span.start.line,
                column: e.span.start.col,
                message: e.code.to_string(),
            })?;
        let base = path.parent().map(Path::to_owned).unwrap_or_default();
        let resolve = |p: &Path| if p.is_absolute() { p.to_owned() } else { base.join(p) };
        let api = file.api.0;
        let tls = match (api.tls_cert, api.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles { cert: resolve(&cert), key: resolve(&key) }),
            _ => None,
        };
        let workers = match api.workers.0 {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        Ok(Self {
            path: path.to_owned(),
            activation_code: file.activation_code,
            state_dir: resolve(&file.state_dir),
            log_level: file.log_level,
            refusal_log: RefusalLogSettings {
                lines: file.refusal_log_lines.0 as u32,
                window: secs(file.refusal_log_window_secs),
            },
            key_max_lifetime: file
                .key_max_lifetime_days
                .map(|days| Duration::from_secs(days.0 as u64 * 86_400)),
            on_key_exposure: file.on_key_exposure,
            api: Api {
                listen: api.listen,
                tls,
                workers,
                max_connections: api.max_connections.0,
                max_connections_per_address: api.max_connections_per_address.0,
                handshake_timeout: secs(api.handshake_timeout_secs),
                shutdown_timeout: secs(api.shutdown_timeout_secs),
                limits: HttpLimits {
                    max_header_bytes: api.max_header_bytes.0,
                    max_headers: api.max_headers.0,
                    max_body_bytes: api.max_body_bytes.0,
                    header_timeout: secs(api.header_timeout_secs),
                    idle_timeout: secs(api.idle_timeout_secs),
                },
                throttle: ThrottleSettings {
                    max_refusals: api.max_refusals_per_address.0 as u32,
                    window: secs(api.refusal_window_secs),
                    max_addresses: api.throttle_addresses.0,
                },
            },
            admin: Admin {
                listen: file.admin.listen.0,
                unix_socket: file.admin.unix_socket.map(|p| resolve(&p)),
                allowed_uids: file.admin.allowed_uids,
                workers: file.admin.workers.0,
                limits: HttpLimits {
                    max_header_bytes: file.admin.max_header_bytes.0,
                    max_headers: file.admin.max_headers.0,
                    max_body_bytes: file.admin.max_body_bytes.0,
                    header_timeout: secs(file.admin.header_timeout_secs),
                    idle_timeout: secs(file.admin.idle_timeout_secs),
                },
                min_bytes_per_sec: file.admin.min_bytes_per_sec.0,
            },
            upstream: file.upstream.map(|u| u.resolve(resolve)),
            retention: Retention {
                keep_days: file.snapshots.keep_days.map(|d| d.0 as u32),
                keep_count: file.snapshots.keep_count.map(|c| c.0),
            },
            snapshot_memory: Memory {
                cached_dates: file.snapshots.cached_dates.0,
                cache_bytes: file.snapshots.cache_mib.0 << 20,
            },
            metrics: file.metrics.resolve(resolve),
            snapshot_compaction: Compaction {
                // Bounded to 1..=99 where it is read: it fits.
                free_percent: file.snapshots.compact_free_percent.0 as u8,
            },
        })
    }
}

fn secs(value: Bounded<1, 3600>) -> Duration {
    Duration::from_secs(value.0 as u64)
}

// The file's own shape. Kept private: the rest of the program sees only `Config`.

// Renamed for serde: its messages name the struct (`unknown field … in \`api\``), and an
// operator knows the file's sections, not our types.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename = "config")]
struct File {
    activation_code: ActivationCode,
    state_dir: PathBuf,
    #[serde(default = "default_log_level")]
    log_level: LogLevel,
    #[serde(default = "Bounded::default_refusal_log_lines")]
    refusal_log_lines: Bounded<0, 100_000>,
    #[serde(default = "Bounded::ten")]
    refusal_log_window_secs: Bounded<1, 3600>,
    #[serde(default)]
    key_max_lifetime_days: Option<Bounded<1, 3650>>,
    #[serde(default = "default_on_key_exposure")]
    on_key_exposure: OnKeyExposure,
    api: ApiFile,
    admin: AdminFile,
    #[serde(default)]
    upstream: Option<UpstreamFile>,
    #[serde(default)]
    snapshots: SnapshotsFile,
    #[serde(default)]
    metrics: MetricsFile,
}

/// The `snapshots` section: retention (neither limit set keeps every date) and memory.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename = "snapshots")]
struct SnapshotsFile {
    #[serde(default)]
    keep_days: Option<Bounded<1, 36_500>>,
    #[serde(default)]
    keep_count: Option<Bounded<1, 100_000>>,
    #[serde(default = "Bounded::default_cached_dates")]
    cached_dates: Bounded<0, 1000>,
    #[serde(default = "Bounded::default_cache_mib")]
    cache_mib: Bounded<1, 65_536>,
    #[serde(default = "Bounded::default_compact_free_percent")]
    compact_free_percent: Bounded<1, 99>,
}

impl Default for SnapshotsFile {
    fn default() -> Self {
        Self {
            keep_days: None,
            keep_count: None,
            cached_dates: Bounded::default_cached_dates(),
            cache_mib: Bounded::default_cache_mib(),
            compact_free_percent: Bounded::default_compact_free_percent(),
        }
    }
}

/// The `api` section. Wrapped so that the check needing two fields at once still fails inside
/// deserialization, where `ron` knows the position.
#[derive(Deserialize)]
#[serde(try_from = "ApiFields")]
struct ApiFile(ApiFields);

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename = "api")]
struct ApiFields {
    listen: SocketAddr,
    #[serde(default)]
    tls_cert: Option<PathBuf>,
    #[serde(default)]
    tls_key: Option<PathBuf>,
    #[serde(default = "Bounded::default_workers")]
    workers: Bounded<0, 64>,
    #[serde(default = "Bounded::default_max_connections")]
    max_connections: Bounded<1, 1_000_000>,
    #[serde(default = "Bounded::default_max_connections_per_address")]
    max_connections_per_address: Bounded<1, 1_000_000>,
    #[serde(default = "Bounded::ten")]
    handshake_timeout_secs: Bounded<1, 3600>,
    #[serde(default = "Bounded::ten")]
    shutdown_timeout_secs: Bounded<1, 3600>,
    #[serde(default = "Bounded::ten")]
    header_timeout_secs: Bounded<1, 3600>,
    #[serde(default = "Bounded::default_idle")]
    idle_timeout_secs: Bounded<1, 3600>,
    #[serde(default = "Bounded::default_header_bytes")]
    max_header_bytes: Bounded<1024, 1_048_576>,
    #[serde(default = "Bounded::default_headers")]
    max_headers: Bounded<8, { crate::http::MAX_HEADERS }>,
    #[serde(default = "BoundedU64::default_api_body")]
    max_body_bytes: BoundedU64<0, 1_073_741_824>,
    #[serde(default = "Bounded::default_max_refusals")]
    max_refusals_per_address: Bounded<1, 1_000_000>,
    #[serde(default = "Bounded::default_refusal_window")]
    refusal_window_secs: Bounded<1, 3600>,
    #[serde(default = "Bounded::default_throttle_addresses")]
    throttle_addresses: Bounded<16, 1_000_000>,
}

impl TryFrom<ApiFields> for ApiFile {
    type Error = &'static str;

    fn try_from(fields: ApiFields) -> Result<Self, Self::Error> {
        if fields.tls_cert.is_some() != fields.tls_key.is_some() {
            return Err("api.tls_cert and api.tls_key go together: set both to Some(\"path\"), \
                        or both to None for a self-signed certificate");
        }
        Ok(Self(fields))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename = "admin")]
struct AdminFile {
    listen: LoopbackAddr,
    #[serde(default)]
    unix_socket: Option<PathBuf>,
    #[serde(default = "default_allowed_uids")]
    allowed_uids: Vec<u32>,
    #[serde(default = "Bounded::default_admin_workers")]
    workers: Bounded<1, 64>,
    #[serde(default = "Bounded::default_admin_header")]
    header_timeout_secs: Bounded<1, 3600>,
    #[serde(default = "Bounded::default_admin_idle")]
    idle_timeout_secs: Bounded<1, 3600>,
    #[serde(default = "Bounded::default_header_bytes")]
    max_header_bytes: Bounded<1024, 1_048_576>,
    #[serde(default = "Bounded::default_headers")]
    max_headers: Bounded<8, { crate::http::MAX_HEADERS }>,
    #[serde(default = "BoundedU64::default_admin_body")]
    max_body_bytes: BoundedU64<0, 17_179_869_184>,
    #[serde(default = "BoundedU64::default_admin_rate")]
    min_bytes_per_sec: BoundedU64<1, 1_073_741_824>,
}

fn default_on_key_exposure() -> OnKeyExposure {
    OnKeyExposure::Alert
}

fn default_log_level() -> LogLevel {
    LogLevel(log::LevelFilter::Info)
}

fn default_allowed_uids() -> Vec<u32> {
    vec![0]
}

/// An address on the loopback interface. Anything else would expose key management to the
/// network, so it is refused where it is written.
struct LoopbackAddr(SocketAddr);

impl<'de> Deserialize<'de> for LoopbackAddr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let addr = SocketAddr::deserialize(deserializer)?;
        if !addr.ip().is_loopback() {
            return Err(de::Error::custom(format!(
                "admin.listen {addr} is not a loopback address: the admin port must only be \
                 reachable from this host (use 127.0.0.1:PORT or [::1]:PORT)"
            )));
        }
        Ok(Self(addr))
    }
}

/// A count that must lie in `MIN..=MAX`; out-of-range values are refused where written.
#[derive(Clone, Copy)]
struct Bounded<const MIN: usize, const MAX: usize>(usize);

impl<const MIN: usize, const MAX: usize> Bounded<MIN, MAX> {
    fn default_workers() -> Self {
        Self(0)
    }
    fn default_max_connections() -> Self {
        Self(4096)
    }
    /// A sixteenth of the default cap: one address (a NAT of many BI clients, say) may hold
    /// plenty, and at least fifteen others still have as much room.
    fn default_max_connections_per_address() -> Self {
        Self(256)
    }
    fn ten() -> Self {
        Self(10)
    }
    fn default_idle() -> Self {
        Self(75)
    }
    fn default_admin_idle() -> Self {
        Self(30)
    }
    fn default_admin_workers() -> Self {
        Self(4)
    }
    /// An admin client is a tool on this host: its head arrives in microseconds, and a worker
    /// held by one that does not send it is a worker the next operator may need.
    fn default_admin_header() -> Self {
        Self(5)
    }
    fn default_header_bytes() -> Self {
        Self(8192)
    }
    fn default_headers() -> Self {
        Self(64)
    }
    fn default_max_refusals() -> Self {
        Self(20)
    }
    fn default_refusal_window() -> Self {
        Self(60)
    }
    fn default_throttle_addresses() -> Self {
        Self(4096)
    }
    fn default_refusal_log_lines() -> Self {
        Self(20)
    }
    fn default_cached_dates() -> Self {
        Self(Memory::default().cached_dates)
    }
    fn default_cache_mib() -> Self {
        Self(Memory::default().cache_bytes >> 20)
    }
    fn default_compact_free_percent() -> Self {
        Self(usize::from(Compaction::default().free_percent))
    }
}

impl<'de, const MIN: usize, const MAX: usize> Deserialize<'de> for Bounded<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = u64::deserialize(deserializer)?;
        match usize::try_from(value) {
            Ok(v) if (MIN..=MAX).contains(&v) => Ok(Self(v)),
            _ => Err(de::Error::custom(format!(
                "expected a number from {MIN} to {MAX}, found {value}"
            ))),
        }
    }
}

#[derive(Clone, Copy)]
struct BoundedU64<const MIN: u64, const MAX: u64>(u64);

impl<const MIN: u64, const MAX: u64> BoundedU64<MIN, MAX> {
    fn default_api_body() -> Self {
        Self(16 * 1024)
    }
    fn default_admin_body() -> Self {
        Self(256 * 1024 * 1024)
    }
    /// 64 KiB/s: a loopback import moves hundreds of MiB/s, a pipe from a slow download still
    /// several times this; a trickle of a byte a second is cut when its first allowance ends.
    fn default_admin_rate() -> Self {
        Self(64 * 1024)
    }
}

impl<'de, const MIN: u64, const MAX: u64> Deserialize<'de> for BoundedU64<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = u64::deserialize(deserializer)?;
        if (MIN..=MAX).contains(&value) {
            Ok(Self(value))
        } else {
            Err(de::Error::custom(format!("expected a number from {MIN} to {MAX}, found {value}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"(
    activation_code: "ABC-123",
    state_dir: "var",
    api: ( listen: "127.0.0.1:8443" ),
    admin: ( listen: "127.0.0.1:8444" ),
)"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/aims-api/config.ron"), text)
    }

    fn syntax_error(text: &str) -> (usize, usize, String) {
        match parse(text) {
            Err(ConfigError::Syntax { line, column, message, .. }) => (line, column, message),
            other => panic!("expected a syntax error, got {other:?}"),
        }
    }

    #[test]
    fn minimal_file_gets_documented_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.state_dir, Path::new("/etc/aims-api/var"));
        assert_eq!(c.admin.allowed_uids, vec![0]);
        assert_eq!(c.api.max_connections, 4096);
        assert_eq!(c.api.limits.max_header_bytes, 8192);
        assert_eq!(c.admin.limits.max_body_bytes, 256 * 1024 * 1024);
        assert_eq!(c.log_level, LogLevel(log::LevelFilter::Info));
        assert_eq!(c.api.throttle.max_refusals, 20);
        assert_eq!(c.api.throttle.window, Duration::from_secs(60));
        assert_eq!(c.api.throttle.max_addresses, 4096);
        assert_eq!((c.refusal_log.lines, c.refusal_log.window), (20, Duration::from_secs(10)));
        assert!(c.api.tls.is_none());
        assert!(c.api.workers >= 1);
    }

    #[test]
    fn the_shipped_configs_parse() {
        parse(include_str!("../config.ron")).unwrap();
        let packaged = parse(include_str!("../packaging/config.ron")).unwrap();
        assert_eq!(packaged.state_dir, Path::new("/var/lib/aims-api"));
        let upstream = packaged.upstream.unwrap();
        assert_eq!(upstream.api_key_file, Path::new("/etc/aims-api/upstream-key"));
        assert_eq!((upstream.ca_file, upstream.activation_code), (None, None));
        assert_eq!(upstream.request_timeout, Duration::from_secs(30));
        assert_eq!((upstream.max_attempts, upstream.pull_timeout), (5, Duration::from_secs(900)));
    }

    /// The two shipped configs document the same fields in the same order, so a field added to
    /// one cannot be forgotten in the other. Only the field names are compared, never a value
    /// or a comment: `config.ron` is the developer's to edit (a port taken on a busy host), and
    /// an edit must not fail the tests.
    #[test]
    fn both_shipped_configs_document_the_same_fields() {
        fn fields(text: &str) -> Vec<&str> {
            text.lines()
                .map(str::trim_start)
                .filter(|line| !line.starts_with("//"))
                .filter_map(|line| line.split_once(':').map(|(name, _)| name))
                .filter(|name| {
                    !name.is_empty() && name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                })
                .collect()
        }
        let dev = fields(include_str!("../config.ron"));
        let packaged = fields(include_str!("../packaging/config.ron"));
        assert_eq!(dev, packaged);
        for field in ["activation_code", "listen", "upstream", "ca_file", "cache_mib"] {
            assert!(dev.contains(&field), "{field} is not in config.ron: {dev:?}");
        }
    }

    #[test]
    fn unknown_field_names_line_and_column() {
        let text = MINIMAL.replace("state_dir", "stat_dir");
        let (line, column, message) = syntax_error(&text);
        assert_eq!((line, column), (3, 5), "{message}");
        // The rest lists the accepted names, which grow with the config.
        assert!(
            message.starts_with("Unexpected field named `stat_dir` in `config`, "),
            "{message}"
        );
    }

    #[test]
    fn non_loopback_admin_is_refused_where_written() {
        let text = MINIMAL.replace("127.0.0.1:8444", "0.0.0.0:8444");
        let (line, _, message) = syntax_error(&text);
        assert_eq!(line, 5);
        assert_eq!(
            message,
            "admin.listen 0.0.0.0:8444 is not a loopback address: the admin port must only be \
             reachable from this host (use 127.0.0.1:PORT or [::1]:PORT)"
        );
    }

    #[test]
    fn out_of_range_limit_is_refused() {
        let text = MINIMAL.replace(
            r#"listen: "127.0.0.1:8443""#,
            r#"listen: "127.0.0.1:8443", max_header_bytes: 10"#,
        );
        let (line, _, message) = syntax_error(&text);
        assert_eq!(line, 4);
        assert_eq!(message, "expected a number from 1024 to 1048576, found 10");
    }

    #[test]
    fn cert_without_key_is_refused() {
        let text = MINIMAL.replace(
            r#"listen: "127.0.0.1:8443""#,
            r#"listen: "127.0.0.1:8443", tls_cert: Some("c.pem")"#,
        );
        let (_, _, message) = syntax_error(&text);
        assert_eq!(
            message,
            "api.tls_cert and api.tls_key go together: set both to Some(\"path\"), or both to \
             None for a self-signed certificate"
        );
    }

    #[test]
    fn bad_activation_code_is_refused() {
        let text = MINIMAL.replace("ABC-123", "has space");
        let (line, _, message) = syntax_error(&text);
        assert_eq!(line, 2);
        assert_eq!(
            message,
            "activation_code must be 1 to 256 printable ASCII characters without spaces (it \
             travels in the x-activation-code header)"
        );
    }

    #[test]
    fn upstream_is_https_only_and_its_paths_resolve_against_the_file() {
        let with =
            |upstream: &str| MINIMAL.replace("\n)", &format!("\n    upstream: {upstream},\n)"));
        let c = parse(&with(
            r#"Some((url: "https://h.example/AIMentorStudioAPI/rest/v1/", api_key_file: "k"))"#,
        ))
        .unwrap();
        let upstream = c.upstream.unwrap();
        assert_eq!(upstream.url, "https://h.example/AIMentorStudioAPI/rest/v1");
        assert_eq!(upstream.api_key_file, Path::new("/etc/aims-api/k"));
        assert!(parse(&with("None")).unwrap().upstream.is_none());
        let (line, _, message) =
            syntax_error(&with(r#"Some((url: "http://h.example/rest/v1", api_key_file: "k"))"#));
        assert_eq!(line, 6);
        assert!(message.contains("must start with https://"), "{message}");
        let (_, _, message) = syntax_error(&with(
            r#"Some((url: "https://h.example/v1", api_key_file: "k", timeout: 5))"#,
        ));
        assert!(message.contains("timeout"), "{message}");
    }

    #[test]
    fn retention_is_optional_and_bounded() {
        assert!(parse(MINIMAL).unwrap().retention.keeps_all());
        let with =
            |section: &str| MINIMAL.replace("\n)", &format!("\n    snapshots: {section},\n)"));
        let c = parse(&with("(keep_days: Some(30), keep_count: Some(3))")).unwrap();
        assert_eq!(c.retention, Retention { keep_days: Some(30), keep_count: Some(3) });
        let c = parse(&with("(keep_count: Some(7))")).unwrap();
        assert_eq!(c.retention, Retention { keep_days: None, keep_count: Some(7) });
        assert_eq!(c.snapshot_compaction, Compaction::default());
        let c = parse(&with("(compact_free_percent: 60)")).unwrap();
        assert_eq!(c.snapshot_compaction, Compaction { free_percent: 60 });
        let (_, _, message) = syntax_error(&with("(compact_free_percent: 100)"));
        assert_eq!(message, "expected a number from 1 to 99, found 100");
        let (line, _, message) = syntax_error(&with("(keep_count: Some(0))"));
        assert_eq!((line, message.as_str()), (6, "expected a number from 1 to 100000, found 0"));
        let (_, _, message) = syntax_error(&with("(keep: Some(1))"));
        assert!(message.contains("keep"), "{message}");
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = Config::load(Path::new("/nonexistent/config.ron")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot read config /nonexistent/config.ron: No such file or directory (os error 2)"
        );
    }
}
