//! Integration tests: every test starts the real `aims-api` binary on free loopback ports with
//! a temporary state folder and talks to it as its users do (TLS clients, raw sockets, curl,
//! the CLI). One test binary, one `util` module, one file per capability.

// Tests may unwrap: a panic is a failed test, not a crashed server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod admin;
mod admin_port;
mod api;
mod budget;
mod certificate;
mod cli;
mod cold_reads;
mod completions;
mod compression;
mod crash;
mod diagnose;
mod floods;
mod gate;
mod history;
mod hostile;
mod http;
mod key_life;
mod keystore;
mod ops;
mod pair;
mod properties;
mod pull;
mod races;
mod readme;
mod refusals;
mod relay;
mod scrape;
mod secrets;
mod snapshots;
mod store;
mod util;
mod workload;
