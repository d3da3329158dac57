//! aims-api: an on-premises appliance that serves the AI Mentor Studio API over HTTPS, guarded
//! by one API key, with a root-only admin port on loopback to generate, replace and revoke it.
//!
//! Data flows one way: [`config`] → [`server`] (listeners, workers, timeouts) → [`http`]
//! (parse, limits, respond) → [`gate`] (credentials) → [`api`] and [`admin`] (handlers) →
//! [`snapshot`] (the dated analysis data, validated and pre-rendered), [`keystore`] (the RON
//! file, its lock, atomic writes) and [`key`] (generate, checksum, hash). [`tls`], [`peer`]
//! (uid of a loopback client), [`hardening`], [`throttle`] (failed-auth limits per address),
//! [`metrics`] and [`log`] (with the audit lines) serve them.
//! `main.rs` only parses the command line ([`cli`]) and runs it ([`commands`]).

pub mod admin;
pub mod api;
pub mod app;
pub mod cli;
pub mod client;
pub mod commands;
pub mod config;
pub mod gate;
pub mod gzip;
pub mod hardening;
pub mod http;
pub mod key;
pub mod keystore;
pub mod log;
pub mod metrics;
pub mod peer;
pub mod server;
pub mod snapshot;
pub mod systemd;
pub mod throttle;
pub mod tls;
