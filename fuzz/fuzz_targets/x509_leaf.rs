//! The certificate reader on arbitrary bytes: a validity and names, or an error, never a panic.
#![no_main]

use aims_api::x509::Leaf;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(leaf) = Leaf::parse(data) {
        let _ = leaf.covers("localhost");
    }
});
