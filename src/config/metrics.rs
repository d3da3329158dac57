//! The `metrics` section of the configuration: the scrape port, for a Prometheus elsewhere.
//!
//! Off by default. When `listen` is set, `serve` opens a port that answers `GET /metrics` and
//! nothing else (see [`crate::scrape`]), optionally over TLS with the API's certificate and
//! behind a bearer token read from a file (Prometheus' `authorization: credentials_file`).
//! Read by [`crate::config`] like every other section: unknown fields are errors, and each
//! mistake is reported with its file, line and column.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::Bounded;

/// The checked `metrics` section.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// Where the scrape port listens; `None`: no scrape port (the admin port's `/metrics`
    /// stays, on loopback, for root).
    pub listen: Option<SocketAddr>,
    /// HTTPS with the API's certificate (reloaded with it) instead of plain HTTP.
    pub tls: bool,
    /// The file holding the bearer token a scraper must send (`Authorization: Bearer …`).
    pub bearer_token_file: Option<PathBuf>,
    /// Open connections at most; at the cap the longest idle one makes room.
    pub max_connections: usize,
}

/// The section as written in the file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename = "metrics")]
pub struct MetricsFile {
    #[serde(default)]
    listen: Option<SocketAddr>,
    #[serde(default)]
    tls: bool,
    #[serde(default)]
    bearer_token_file: Option<PathBuf>,
    #[serde(default = "Bounded::default_scrape_connections")]
    max_connections: Bounded<1, 1024>,
}

impl Default for MetricsFile {
    fn default() -> Self {
        Self {
            listen: None,
            tls: false,
            bearer_token_file: None,
            max_connections: Bounded::default_scrape_connections(),
        }
    }
}

impl MetricsFile {
    /// The settings, with a relative token path resolved by `resolve`.
    pub fn resolve(self, resolve: impl Fn(&Path) -> PathBuf) -> Metrics {
        Metrics {
            listen: self.listen,
            tls: self.tls,
            bearer_token_file: self.bearer_token_file.as_deref().map(resolve),
            max_connections: self.max_connections.0,
        }
    }
}

impl<const MIN: usize, const MAX: usize> Bounded<MIN, MAX> {
    /// A Prometheus pair keeps one connection each; sixteen leave room for a few more and
    /// for the ones a wrong scraper leaves behind, while bounding the threads.
    fn default_scrape_connections() -> Self {
        Self(16)
    }
}
