//! Property tests for the two codecs that face untrusted bytes: the request parser and the key
//! format. Arbitrary input never panics; anything valid goes through unchanged.

use std::time::Duration;

use aims_api::config::HttpLimits;
use aims_api::http::{HeaderTable, HeaderValue, MAX_HEADERS, Method, Parsed, Version, parse};
use aims_api::key::{self, ApiKey, Fingerprint, FormatError, KeyHash};
use proptest::prelude::*;
use ring::rand::SystemRandom;

fn limits(max_header_bytes: usize, max_headers: usize, max_body_bytes: u64) -> HttpLimits {
    HttpLimits {
        max_header_bytes,
        max_headers,
        max_body_bytes,
        header_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(1),
    }
}

/// A request as a client would build it, before it is rendered to bytes.
#[derive(Debug, Clone)]
struct Spec {
    method: &'static str,
    path: String,
    query: Option<String>,
    http10: bool,
    headers: Vec<(String, String)>,
    content_length: Option<u64>,
    close: bool,
}

impl Spec {
    fn render(&self) -> Vec<u8> {
        let mut text = format!("{} {}", self.method, self.path);
        if let Some(query) = &self.query {
            text.push('?');
            text.push_str(query);
        }
        text.push_str(if self.http10 { " HTTP/1.0\r\n" } else { " HTTP/1.1\r\nHost: h\r\n" });
        for (name, value) in &self.headers {
            text.push_str(&format!("{name}: {value}\r\n"));
        }
        if let Some(length) = self.content_length {
            text.push_str(&format!("Content-Length: {length}\r\n"));
        }
        if self.close {
            text.push_str("Connection: close\r\n");
        }
        text.push_str("\r\n");
        text.into_bytes()
    }
}

/// Header names that the parser gives meaning to are generated on purpose, not by chance.
fn plain_header() -> impl Strategy<Value = (String, String)> {
    ("[A-Za-z][A-Za-z0-9-]{0,15}", "[!-~]([ -~]{0,30}[!-~])?").prop_filter(
        "a header the parser interprets",
        |(name, _)| {
            let name = name.to_ascii_lowercase();
            !["host", "content-length", "transfer-encoding", "connection", "expect"]
                .contains(&name.as_str())
        },
    )
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        prop::sample::select(vec!["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"]),
        "/[A-Za-z0-9._~!$&'()*+,;=:@%/-]{0,40}",
        prop::option::of("[A-Za-z0-9=&%._~-]{0,30}"),
        any::<bool>(),
        prop::collection::vec(plain_header(), 0..20),
        prop::option::of(0u64..=1000),
        any::<bool>(),
    )
        .prop_map(|(method, path, query, http10, headers, content_length, close)| Spec {
            method,
            path,
            query,
            http10,
            headers,
            content_length,
            close,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic_the_parser(
        bytes in prop::collection::vec(any::<u8>(), 0..3000),
        max_header_bytes in 1usize..4096,
        max_headers in 1usize..=MAX_HEADERS,
        max_body_bytes in 0u64..100_000,
    ) {
        let mut headers = HeaderTable::new();
        let limits = limits(max_header_bytes, max_headers, max_body_bytes);
        match parse(&bytes, &mut headers, &limits) {
            Ok(Parsed::Complete(request, used)) => {
                prop_assert!(used <= bytes.len() && used <= max_header_bytes);
                prop_assert!(request.content_length <= max_body_bytes);
                prop_assert!(request.path.starts_with('/'));
            }
            Ok(Parsed::Partial) => prop_assert!(bytes.len() < max_header_bytes),
            Err(e) => prop_assert!((400..=505).contains(&e.status().0), "{e:?}"),
        }
    }

    #[test]
    fn request_like_bytes_never_panic_the_parser(
        head in "[A-Z]{1,7} /[ -~]{0,20} HTTP/1\\.[01]\r\n([ -~\t]{0,40}\r?\n){0,8}\r?\n?",
        tail in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&tail);
        let mut headers = HeaderTable::new();
        let _ = parse(&bytes, &mut headers, &limits(8192, 64, 16384));
    }

    #[test]
    fn a_valid_request_round_trips(
        spec in spec(),
        body in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let head = spec.render();
        let mut bytes = head.clone();
        bytes.extend_from_slice(&body);
        let mut headers = HeaderTable::new();
        let parsed = parse(&bytes, &mut headers, &limits(8192, 64, 1000));
        let Ok(Parsed::Complete(request, used)) = parsed else {
            let head = String::from_utf8_lossy(&head);
            return Err(TestCaseError::fail(format!("{parsed:?} for {head:?}")));
        };
        prop_assert_eq!(used, head.len());
        let method = match spec.method {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            _ => Method::Other,
        };
        prop_assert_eq!(request.method, method);
        prop_assert_eq!(request.path, spec.path.as_str());
        prop_assert_eq!(request.query, spec.query.as_deref());
        let version = if spec.http10 { Version::Http10 } else { Version::Http11 };
        prop_assert_eq!(request.version, version);
        prop_assert_eq!(request.content_length, spec.content_length.unwrap_or(0));
        prop_assert_eq!(request.keep_alive, !spec.http10 && !spec.close);
        let plain: Vec<(String, Vec<u8>)> = request
            .headers
            .iter()
            .filter(|h| {
                !["host", "content-length", "connection"]
                    .iter()
                    .any(|n| h.name.eq_ignore_ascii_case(n))
            })
            .map(|h| (h.name.to_owned(), h.value.to_vec()))
            .collect();
        let expected: Vec<(String, Vec<u8>)> =
            spec.headers.iter().map(|(n, v)| (n.clone(), v.clone().into_bytes())).collect();
        prop_assert_eq!(plain, expected);
        if let Some((name, value)) = spec.headers.first() {
            let same = spec.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).count();
            let want =
                if same > 1 { HeaderValue::Repeated } else { HeaderValue::One(value.as_bytes()) };
            prop_assert_eq!(request.header(name), want);
        }
    }

    #[test]
    fn every_prefix_of_a_valid_request_is_unfinished_never_refused(
        spec in spec(),
        cut in any::<prop::sample::Index>(),
    ) {
        let head = spec.render();
        let end = cut.index(head.len());
        let mut headers = HeaderTable::new();
        let parsed = parse(&head[..end], &mut headers, &limits(8192, 64, 1000));
        let text = String::from_utf8_lossy(&head);
        prop_assert!(matches!(parsed, Ok(Parsed::Partial)), "{parsed:?} at {end} of {text:?}");
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_key_codec(
        bytes in prop::collection::vec(any::<u8>(), 0..80),
    ) {
        if key::check_format(&bytes).is_ok() {
            prop_assert_eq!(bytes.len(), key::KEY_LEN);
            prop_assert!(bytes.starts_with(key::PREFIX.as_bytes()));
            prop_assert!(bytes[key::PREFIX.len()..].iter().all(u8::is_ascii_alphanumeric));
        }
        let text = String::from_utf8_lossy(&bytes);
        let _ = KeyHash::from_hex(&text);
        let _ = Fingerprint::parse(&text);
    }

    #[test]
    fn generated_keys_check_and_any_one_changed_character_is_caught(
        at in key::PREFIX.len()..key::KEY_LEN,
        replacement in prop::sample::select(
            b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz-_+/=. ".to_vec()
        ),
    ) {
        let key = ApiKey::generate(&SystemRandom::new()).unwrap();
        let good = key.expose().as_bytes();
        prop_assert_eq!(key::check_format(good), Ok(()));
        let fingerprint = key.fingerprint();
        prop_assert_eq!(Fingerprint::parse(fingerprint.as_str()), Some(fingerprint.clone()));
        prop_assert!(key.hash().matches(good));
        prop_assume!(good[at] != replacement);
        let mut typo = good.to_vec();
        typo[at] = replacement;
        let expected = if replacement.is_ascii_alphanumeric() {
            FormatError::Checksum
        } else {
            FormatError::Character
        };
        prop_assert_eq!(key::check_format(&typo), Err(expected));
        prop_assert!(!key.hash().matches(&typo));
    }

    #[test]
    fn key_hashes_round_trip_through_hex(bytes in prop::collection::vec(any::<u8>(), 0..100)) {
        let hash = KeyHash::of(&bytes);
        let hex = hash.to_hex();
        prop_assert_eq!(hex.len(), 64);
        prop_assert_eq!(KeyHash::from_hex(&hex), Some(hash));
        // Only lower-case hex is the store's form.
        let upper = hex.to_ascii_uppercase();
        prop_assert_eq!(KeyHash::from_hex(&upper).is_some(), upper == hex);
    }
}

/// The expression `docs/secret-scanning.md` gives scanners, taken from the document itself.
fn documented_expression() -> regex::Regex {
    let doc = include_str!("../../docs/secret-scanning.md");
    let block = doc.split("```regex\n").nth(1).unwrap().split("\n```").next().unwrap();
    let gitleaks = doc.split("regex = '''").nth(1).unwrap().split("'''").next().unwrap();
    assert_eq!(block, gitleaks, "the gitleaks rule uses the documented expression");
    regex::Regex::new(block).unwrap()
}

#[test]
fn docs_secret_scanning_expression_matches_keys_only() {
    let expression = documented_expression();
    let rng = ring::rand::SystemRandom::new();
    for _ in 0..200 {
        let key = aims_api::key::ApiKey::generate(&rng).unwrap();
        let key = key.expose();
        for text in [
            key.to_owned(),
            format!("x-api-key: {key}\n"),
            format!("\"{key}\","),
            format!("KEY={key}"),
            format!("https://host/?k={key}&x=1"),
        ] {
            let found: Vec<&str> = expression.find_iter(&text).map(|m| m.as_str()).collect();
            assert_eq!(found, [key], "{text}");
        }
        let misses = [
            key[..53].to_owned(),
            format!("{key}a"),
            format!("x{key}"),
            format!("7{key}"),
            key.replacen("aims_", "aimz_", 1),
            key.replacen("aims_", "AIMS_", 1),
            format!("{}-{}", &key[..20], &key[21..]),
            format!("{}_{}", &key[..30], &key[31..]),
        ];
        for miss in misses {
            assert!(!expression.is_match(&miss), "{miss}");
        }
    }
}
