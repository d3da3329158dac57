//! `Accept-Encoding` on arbitrary field lines, through the request parser as the server reads
//! them: never a panic, and gzip only when a line names it or `*`.
#![no_main]

use std::time::Duration;

use aims_api::config::HttpLimits;
use aims_api::http::encoding::Coding;
use aims_api::http::{HeaderTable, MAX_HEADERS, Parsed, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut head = b"GET / HTTP/1.1\r\nHost: x\r\n".to_vec();
    for line in data.split(|&b| b == b'\n') {
        head.extend_from_slice(b"Accept-Encoding: ");
        head.extend_from_slice(line);
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    let limits = HttpLimits {
        max_header_bytes: 1 << 16,
        max_headers: MAX_HEADERS,
        max_body_bytes: 0,
        header_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(1),
    };
    let mut headers = HeaderTable::new();
    if let Ok(Parsed::Complete(request, _)) = parse(&head, &mut headers, &limits) {
        let named =
            data.to_ascii_lowercase().windows(4).any(|w| w == b"gzip") || data.contains(&b'*');
        let coding = Coding::accepted_by(&request);
        assert!(named || coding == Coding::Identity, "gzip chosen though not named");
    }
});
