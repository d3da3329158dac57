//! What the benchmark examples share (`snapshot-bench` and `history-bench` include this file as
//! a module): the generators' GUIDs, and answering a request in-process as the event loop does.

use std::time::{Duration, Instant};

use aims_api::api;
use aims_api::config::HttpLimits;
use aims_api::http::{self, Parsed};
use aims_api::snapshot::Snapshots;

/// GUID-shaped, distinct per kind and number, and not in name order.
pub fn guid(kind: u32, n: usize) -> String {
    let scrambled = (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 16;
    format!(
        "{kind:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        n >> 16 & 0xffff,
        n & 0xfff,
        kind,
        scrambled
    )
}

/// Parses a GET for `path`, with extra header lines (each ending in CRLF), and answers it as
/// the event loop does; returns the time and the body's size, or why it was not a 200.
pub fn timed_with(
    snapshots: &Snapshots,
    path: &str,
    headers: &str,
) -> Result<(Duration, usize), String> {
    let raw = format!("GET {path} HTTP/1.1\r\nHost: bench\r\n{headers}\r\n");
    let limits = HttpLimits {
        max_header_bytes: 8192,
        max_headers: 64,
        max_body_bytes: 0,
        header_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(1),
    };
    let mut headers = http::HeaderTable::new();
    let started = Instant::now();
    let Ok(Parsed::Complete(request, _)) = http::parse(raw.as_bytes(), &mut headers, &limits)
    else {
        return Err(format!("cannot parse a request for {path}"));
    };
    let response = api::answer(snapshots, &request);
    let elapsed = started.elapsed();
    if response.status.0 != 200 {
        return Err(format!(
            "{path}: {} {}",
            response.status.0,
            String::from_utf8_lossy(response.body())
        ));
    }
    Ok((elapsed, response.body().len()))
}

/// A `/proc/self/status` field in KiB (0 where there is none).
pub fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                let rest = line.strip_prefix(field)?.strip_prefix(':')?;
                rest.trim().trim_end_matches("kB").trim().parse().ok()
            })
        })
        .unwrap_or(0)
}
