//! The stress run behind issue 4's figures: the race, crash and flood workloads of the
//! integration tests, at sizes too large for `cargo test`.
//!
//! ```text
//! cargo bench --bench stress                 # everything, default sizes
//! cargo bench --bench stress -- races crash  # some of it (races, grace, crash, flood)
//! AIMS_SEED=42 cargo bench --bench stress    # repeat a run's random choices
//! ```
//!
//! Loopback only; every phase is bounded by a count and a time. Exits 1 if any property broke.

// The shared modules carry helpers that only the test binary uses.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/integration/util.rs"]
mod util;
#[path = "../tests/integration/workload.rs"]
mod workload;

use std::process::ExitCode;
use std::time::Duration;

use util::{Options, Server};
use workload::{CrashSettings, FloodSettings, GraceSettings, RaceSettings};

fn main() -> ExitCode {
    // `cargo bench` passes `--bench`; anything else names a phase.
    let phases: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let wants = |phase: &str| phases.is_empty() || phases.iter().any(|p| p == phase);
    let mut ok = true;
    if wants("races") {
        let server = Server::start();
        let report = workload::race(
            &server,
            &RaceSettings { clients: 64, cycles: 1000, max_time: Duration::from_secs(120) },
        );
        println!("{report}");
        ok &= report.holds();
    }
    if wants("grace") {
        // The grace deadline under load: 64 clients keep using the replaced key across it.
        let server = std::sync::Arc::new(Server::start_with(&Options {
            api: "max_refusals_per_address: 1000000,".into(),
            ..Options::default()
        }));
        let report = workload::grace_race(
            &server,
            &GraceSettings { clients: 64, rounds: 20, grace_secs: 1 },
        );
        println!("{report}");
        ok &= report.holds();
    }
    if wants("crash") {
        let report = workload::crash_torture(&CrashSettings {
            kills: 300,
            max_time: Duration::from_secs(300),
        });
        println!("{report}");
        for failure in &report.failures {
            println!("  FAILED: {failure}");
        }
        ok &= report.failures.is_empty();
    }
    if wants("flood") {
        util::raise_file_limit();
        // Long deadlines: every slow connection is still held when the last probe is timed.
        let server = Server::start_with(&Options {
            api: "handshake_timeout_secs: 120, header_timeout_secs: 120,".into(),
            ..Options::default()
        });
        let key = server.generate_key();
        let report = workload::slowloris(
            &server,
            &key,
            &FloodSettings { slow: 1000, hold: Duration::from_secs(10) },
        );
        println!("{report}");
        ok &= report.probe_failures == 0
            && report.slow_open_at_end == report.slow_opened
            && report.probe_worst < Duration::from_secs(1);
    }
    if ok {
        println!("stress: every property held");
        ExitCode::SUCCESS
    } else {
        println!("stress: a property broke (see above)");
        ExitCode::FAILURE
    }
}
