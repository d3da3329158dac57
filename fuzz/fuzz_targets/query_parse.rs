//! The query-string parser on arbitrary text, as the network delivers it after the `?`: the
//! parameters of one method or a 400 whose message stays short, never a panic.
#![no_main]

use aims_api::api::query::{
    APPLICATION, DEFAULT_LIMIT, MAX_LIMIT, MAX_OFFSET, NONE, Param, Query, TEAM,
};
use libfuzzer_sys::fuzz_target;

/// The longest message an error may have: values are echoed shortened, so a huge query string
/// never comes back whole in an answer.
const MAX_MESSAGE_CHARS: usize = 256;

fuzz_target!(|data: &[u8]| {
    let Some((&method, rest)) = data.split_first() else { return };
    let Ok(raw) = std::str::from_utf8(rest) else { return };
    let accepted = [APPLICATION, TEAM, NONE][usize::from(method) % 3];
    let query = match Query::parse(Some(raw), accepted) {
        Ok(query) => query,
        Err(e) => {
            assert!(e.to_string().chars().count() <= MAX_MESSAGE_CHARS, "{e}");
            return;
        }
    };
    for param in [
        Param::ApplicationGuid,
        Param::ModuleGuid,
        Param::Date,
        Param::Limit,
        Param::Offset,
        Param::Team,
    ] {
        if let Some(value) = query.text(param) {
            assert!(accepted.contains(&param), "{param:?} is not taken, yet has a value");
            assert!(!value.is_empty(), "{param:?} is empty, yet accepted");
        }
    }
    for (param, default, min, max) in
        [(Param::Limit, DEFAULT_LIMIT, 1, MAX_LIMIT), (Param::Offset, 0, 0, MAX_OFFSET)]
    {
        match query.integer(param, default, min, max) {
            Ok(n) => assert!((min..=max).contains(&n), "{param:?} = {n}"),
            Err(e) => assert!(e.to_string().chars().count() <= MAX_MESSAGE_CHARS, "{e}"),
        }
    }
    match query.date() {
        Ok(Some(date)) => assert_eq!(Some(date.to_string().as_str()), query.text(Param::Date)),
        Ok(None) => assert_eq!(query.text(Param::Date), None),
        Err(e) => assert!(e.to_string().chars().count() <= MAX_MESSAGE_CHARS, "{e}"),
    }
});
