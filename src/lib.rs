//! aims-api: an on-premises appliance that serves the AI Mentor Studio API over HTTPS, guarded
//! by one API key, with a root-only admin port on loopback to generate, replace and revoke it.
//!
//! Data flows one way, and no module names one above it (`.ci/run` checks the graph):
//!
//! ```text
//! main → commands → server → {api, admin, scrape} → app → domain modules
//! ```
//!
//! - [`commands`] runs what [`cli`] parsed: `serve` hands over to [`server`]; the key and
//!   snapshot commands are thin clients of the admin port ([`admin_client`]).
//! - [`server`] moves bytes: listeners, workers, TLS connections, timeouts, signals.
//! - [`api`] and [`admin`] are each port's policy: what a request means, who may make it, and
//!   what is logged ([`audit`], [`refusals`]) and counted ([`metrics`]); [`scrape`] is the
//!   scrape port's (`metrics.listen`: `GET /metrics` for a Prometheus elsewhere).
//! - [`app`] is the live state they share, built from [`config`].
//! - The domain: [`keys`] (the key store and the gate, changed together) over [`keystore`]
//!   (the RON file and its lock) and [`key`] (generate, checksum, hash); [`snapshot`] (the dated
//!   analysis data); [`tls`] (with [`x509`]); [`throttle`]; [`connections`] (per address); [`http`] (the wire format); [`peer`] (uid of a
//!   loopback client); [`durable`] (the one way a state file is written); [`locks`];
//!   [`hardening`], [`systemd`] and [`logging`].
//! - [`diagnose`] checks an installation; [`manual`] makes the man pages and shell completions
//!   from the command table in [`cli`].
//! - [`pull`] copies an upstream V1 API into a snapshot and imports it through the admin
//!   port, as the CLI does.

pub mod admin;
pub mod admin_client;
pub mod api;
pub mod app;
pub mod audit;
pub mod cli;
pub mod commands;
pub mod config;
pub mod connections;
pub mod diagnose;
pub mod durable;
pub mod gzip;
pub mod hardening;
pub mod http;
pub mod key;
pub mod keys;
pub mod keystore;
pub mod locks;
pub mod logging;
pub mod manual;
pub mod metrics;
pub mod peer;
pub mod pull;
pub mod refusals;
pub mod scrape;
pub mod server;
pub mod snapshot;
pub mod systemd;
pub mod throttle;
pub mod tls;
pub mod x509;
