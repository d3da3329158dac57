//! The configuration parser on arbitrary text: an error with a position, never a panic.
#![no_main]

use std::path::Path;

use aims_api::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Config::parse(Path::new("/etc/aims-api/config.ron"), text);
    }
});
