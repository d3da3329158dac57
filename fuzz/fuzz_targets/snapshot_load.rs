//! The snapshot loader on arbitrary bytes, as the admin port's `PUT /snapshots/<date>` and the
//! snapshot folder deliver them: a refusal with a JSON path, or a snapshot whose every
//! pre-rendered answer is valid JSON; never a panic.
#![no_main]

use aims_api::snapshot::{Date, LoadError, Whole, load};
use libfuzzer_sys::fuzz_target;

fn assert_json(what: &str, bytes: &[u8]) {
    if let Err(e) = serde_json::from_slice::<serde_json::Value>(bytes) {
        panic!("{what} is not JSON ({e}): {}", String::from_utf8_lossy(bytes));
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(date) = Date::parse("2024-05-14") else { panic!("a valid date is refused") };
    let snapshot = match load(data, date, "FUZZ-ACTIVATION-CODE") {
        Ok(snapshot) => snapshot,
        Err(LoadError::Invalid(invalid)) => {
            assert!(invalid.path.starts_with('$'), "{invalid}");
            return;
        }
        Err(_) => return,
    };
    assert_json("the infrastructure", snapshot.infrastructure());
    for whole in [Whole::Levels, Whole::Categories, Whole::Teams] {
        assert_json("a whole answer", snapshot.whole(whole));
    }
    let count = snapshot.application_count();
    assert_eq!(snapshot.stats().applications, count);
    for (position, application) in snapshot.applications(0..count).iter().enumerate() {
        assert_json("an application", application);
        if let Some(Ok(cut)) = snapshot.application_with_module(position, 0) {
            assert_json("an application with one module", &cut.parts().concat());
        }
    }
});
