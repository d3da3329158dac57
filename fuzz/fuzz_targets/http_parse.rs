//! The request parser on arbitrary bytes and limits: it must never panic, and what it accepts
//! must be consistent with the limits it was given.
#![no_main]

use std::time::Duration;

use aims_api::config::HttpLimits;
use aims_api::http::{HeaderTable, MAX_HEADERS, Parsed, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&[a, b, c], buf)) = data.split_first_chunk::<3>() else { return };
    let limits = HttpLimits {
        max_header_bytes: 16 + usize::from(u16::from_le_bytes([a, b]) % 8192),
        max_headers: 1 + usize::from(c) % MAX_HEADERS,
        max_body_bytes: u64::from(c) * 100,
        header_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(1),
    };
    let mut headers = HeaderTable::new();
    match parse(buf, &mut headers, &limits) {
        Ok(Parsed::Complete(request, used)) => {
            assert!(used <= buf.len() && used <= limits.max_header_bytes);
            assert!(request.content_length <= limits.max_body_bytes);
            assert!(request.path.starts_with('/'));
            assert!(request.headers.iter().all(|h| h.value.is_ascii()));
        }
        Ok(Parsed::Partial) => assert!(buf.len() < limits.max_header_bytes),
        Err(e) => assert!((400..=505).contains(&e.status().0)),
    }
});
