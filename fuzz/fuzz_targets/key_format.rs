//! The key codec on arbitrary bytes: format check, fingerprint of a presented key, hash hex.
#![no_main]

use aims_api::key::{self, Fingerprint, KeyHash};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let ok = key::check_format(data).is_ok();
    assert_eq!(Fingerprint::of_presented(data).is_some(), ok);
    if ok {
        assert_eq!(data.len(), key::KEY_LEN);
    }
    let text = String::from_utf8_lossy(data);
    if let Some(hash) = KeyHash::from_hex(&text) {
        assert_eq!(hash.to_hex(), text);
    }
    let _ = Fingerprint::parse(&text);
});
