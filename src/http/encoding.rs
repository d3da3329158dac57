//! Content codings: whether an answer may go out gzip-coded (RFC 9110 §12.5.3), and the last
//! step that makes it so.
//!
//! [`Coding::accepted_by`] reads the request's `Accept-Encoding` (every field line of it, as one
//! list). gzip is chosen when its weight (as `gzip` or `x-gzip`, else through `*`) is above zero
//! and not below the weight the list gives identity (as `identity`, else through `*`), so
//! `identity;q=1, gzip;q=0.5` keeps identity and `gzip;q=0.001` alone still gets gzip.
//! Identity stays acceptable unless `identity;q=0`, or `*;q=0` without an `identity` entry,
//! says otherwise. A coding named twice keeps its first weight. No header means identity (the
//! RFC allows any coding then, but a client that does not ask is likely one that cannot
//! decode), and so does a header this module cannot read: a malformed one is treated as
//! absent, so a strange header never costs a client its answer.
//! When nothing is acceptable (`identity;q=0` alone) the answer goes out in identity rather
//! than as a 406: the RFC permits that, and the client is better served by data it can
//! inspect than by none.
//!
//! [`encode`] is applied to every answer of the API: one that a handler did not already make
//! from pre-compressed pieces is compressed here if the client accepts gzip and it is at least
//! [`MIN_GZIP_BYTES`]; every such answer carries `Vary: Accept-Encoding`. It never compresses a
//! response marked secret: a compressed copy would escape the wiping of the body on drop.

use super::response::Body;
use super::{Request, Response};
use crate::gzip;

/// Answers smaller than this go out as they are: gzip's 18 bytes of framing and the client's
/// inflate cost more than the few hundred bytes a small answer could save.
pub const MIN_GZIP_BYTES: usize = 1024;

/// The coding an answer goes out in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Identity,
    Gzip,
}

impl Coding {
    /// The coding `request`'s `Accept-Encoding` prefers among those this server makes.
    pub fn accepted_by(request: &Request<'_>) -> Self {
        let lines = request
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("accept-encoding"))
            .map(|h| h.value);
        preferred(lines)
    }

    /// The coding for a body of `plain_len` bytes: gzip only if accepted and worth it.
    pub fn for_body(self, plain_len: usize) -> Self {
        match self {
            Self::Gzip if plain_len >= MIN_GZIP_BYTES => Self::Gzip,
            _ => Self::Identity,
        }
    }
}

/// Marks `response`, whose body a handler already made gzip-coded, as such.
pub fn gzipped(response: Response) -> Response {
    response.header("content-encoding", "gzip")
}

/// The last step of an API answer: compressed if `coding` allows and it is not already, and
/// `Vary: Accept-Encoding` in any case (the same request with another `Accept-Encoding` could
/// get other bytes).
pub fn encode(mut response: Response, coding: Coding) -> Response {
    let encoded = response.headers.iter().any(|(name, _)| *name == "content-encoding");
    if !encoded && !response.secret && coding.for_body(response.body().len()) == Coding::Gzip {
        let member = gzip::compress(response.body(), gzip::REQUEST_LEVEL);
        response.body = Body::Owned(member);
        response = gzipped(response);
    }
    response.header("vary", "accept-encoding")
}

/// A weight in thousandths: `q=0.5` is 500 (RFC 9110 §12.4.2 allows three decimals).
type Weight = u16;

#[derive(Debug, Default, PartialEq, Eq)]
struct Weights {
    gzip: Option<Weight>,
    identity: Option<Weight>,
    any: Option<Weight>,
}

/// The preferred coding given the field lines of `Accept-Encoding`; identity when there are
/// none or any is malformed.
fn preferred<'a>(lines: impl IntoIterator<Item = &'a [u8]>) -> Coding {
    let mut weights = Weights::default();
    let mut present = false;
    for line in lines {
        present = true;
        if parse_into(line, &mut weights).is_none() {
            return Coding::Identity;
        }
    }
    if !present {
        return Coding::Identity;
    }
    let gzip = weights.gzip.or(weights.any).unwrap_or(0);
    // Identity competes with its own weight only when the list gives it one.
    let identity = weights.identity.or(weights.any).unwrap_or(0);
    if gzip > 0 && gzip >= identity { Coding::Gzip } else { Coding::Identity }
}

/// Adds one field line's `#( codings [ weight ] )` to `weights`; `None` if it is malformed.
fn parse_into(line: &[u8], weights: &mut Weights) -> Option<()> {
    for element in line.split(|&b| b == b',') {
        let element = trim_ows(element);
        // The list syntax allows empty elements (RFC 9110 §5.6.1): `gzip, , br`.
        if element.is_empty() {
            continue;
        }
        let (coding, weight) = match element.iter().position(|&b| b == b';') {
            None => (element, 1000),
            Some(at) => (trim_ows(&element[..at]), weight(trim_ows(&element[at + 1..]))?),
        };
        if coding.is_empty() || !coding.iter().all(|&b| is_tchar(b)) {
            return None;
        }
        let slot = if coding.eq_ignore_ascii_case(b"gzip") || coding.eq_ignore_ascii_case(b"x-gzip")
        {
            &mut weights.gzip
        } else if coding.eq_ignore_ascii_case(b"identity") {
            &mut weights.identity
        } else if coding == b"*" {
            &mut weights.any
        } else {
            continue; // a coding this server does not make (br, deflate, zstd, …)
        };
        slot.get_or_insert(weight);
    }
    Some(())
}

/// `q=` and a qvalue (RFC 9110 §12.4.2): `0`, `0.5`, `0.125`, `1`, `1.000`.
fn weight(param: &[u8]) -> Option<Weight> {
    let value = match param {
        [b'q' | b'Q', b'=', value @ ..] => value,
        _ => return None,
    };
    let (whole, fraction) = match value.iter().position(|&b| b == b'.') {
        Some(at) => (&value[..at], &value[at + 1..]),
        None => (value, &[][..]),
    };
    if fraction.len() > 3 || !fraction.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut thousandths: Weight = 0;
    for (i, digit) in fraction.iter().enumerate() {
        thousandths += Weight::from(digit - b'0') * [100, 10, 1][i];
    }
    match whole {
        b"0" => Some(thousandths),
        b"1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// Without the optional white space (SP, HTAB) around it.
fn trim_ows(mut bytes: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = bytes {
        bytes = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = bytes {
        bytes = rest;
    }
    bytes
}

/// RFC 9110 §5.6.2.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Status;

    fn choose(lines: &[&str]) -> Coding {
        preferred(lines.iter().map(|l| l.as_bytes()))
    }

    #[test]
    fn gzip_when_asked_for_in_any_spelling() {
        let gzip = [
            "gzip",
            "gzip, deflate",
            "gzip, deflate, br, zstd",
            "deflate, gzip;q=1.0, *;q=0.5",
            "GZIP",
            "x-gzip",
            "br;q=1, gzip;q=0.001",
            "gzip ; q=0.5",
            "gzip;Q=1",
            "identity;q=0.5, gzip;q=0.5",
            "*",
            "br, *;q=0.1",
            "identity;q=0, *",
            "gzip;q=1.000",
            ", gzip,,",
            "\tgzip\t",
        ];
        for line in gzip {
            assert_eq!(choose(&[line]), Coding::Gzip, "{line:?}");
        }
        // Two field lines are one list (RFC 9110 §5.3).
        assert_eq!(choose(&["br", "gzip"]), Coding::Gzip);
    }

    #[test]
    fn identity_when_gzip_is_refused_not_named_or_less_wanted() {
        let identity = [
            "gzip;q=0",
            "gzip;q=0.000",
            "identity",
            "",
            "br, deflate",
            "zstd",
            "identity;q=1, gzip;q=0.5",
            "gzip;q=0.5, *",
            "*;q=0",
            "gzip;q=0, *",
            "*, gzip;q=0",
            "identity;q=0",
            // The first weight of a coding named twice counts.
            "gzip;q=0, gzip",
        ];
        for line in identity {
            assert_eq!(choose(&[line]), Coding::Identity, "{line:?}");
        }
        assert_eq!(choose(&[]), Coding::Identity, "absent");
        assert_eq!(choose(&["gzip;q=0", "gzip"]), Coding::Identity);
    }

    #[test]
    fn a_malformed_header_counts_as_absent() {
        let malformed = [
            "gzip;q=2",
            "gzip;q=1.5",
            "gzip;q=1.001",
            "gzip;q=0.0001",
            "gzip;q=",
            "gzip;q=.5",
            "gzip;q=-1",
            "gzip;q=0.5x",
            "gzip;q = 0.5",
            "gzip;level=1",
            "gzip;q=0.5;q=1",
            "gzip;",
            ";q=1",
            "gz ip",
            "gzip\"",
            "gzip/1",
            "g\u{e9}zip",
        ];
        for line in malformed {
            assert_eq!(choose(&[line]), Coding::Identity, "{line:?}");
        }
        // One malformed line spoils the list, whatever the others say.
        assert_eq!(choose(&["gzip", "gzip;q=2"]), Coding::Identity);
    }

    #[test]
    fn weights_are_read_in_thousandths() {
        assert_eq!(weight(b"q=0"), Some(0));
        assert_eq!(weight(b"q=0."), Some(0));
        assert_eq!(weight(b"q=0.5"), Some(500));
        assert_eq!(weight(b"q=0.05"), Some(50));
        assert_eq!(weight(b"q=0.125"), Some(125));
        assert_eq!(weight(b"Q=1."), Some(1000));
        assert_eq!(weight(b"q=1.0"), Some(1000));
        assert_eq!(weight(b"q=1.01"), None);
        assert_eq!(weight(b"q=01"), None);
        assert_eq!(weight(b"r=1"), None);
    }

    #[test]
    fn small_answers_stay_identity() {
        assert_eq!(Coding::Gzip.for_body(MIN_GZIP_BYTES - 1), Coding::Identity);
        assert_eq!(Coding::Gzip.for_body(MIN_GZIP_BYTES), Coding::Gzip);
        assert_eq!(Coding::Identity.for_body(1 << 20), Coding::Identity);
    }

    #[test]
    fn encode_compresses_once_and_always_says_vary() {
        let big = vec![b'a'; 5000];
        let response = encode(Response::json(Status::OK, big.clone()), Coding::Gzip);
        assert_eq!(response.headers.iter().filter(|(n, _)| *n == "content-encoding").count(), 1);
        assert!(response.headers.contains(&("vary", "accept-encoding".into())));
        let mut plain = Vec::new();
        let mut decoder = flate2::read::GzDecoder::new(response.body());
        std::io::Read::read_to_end(&mut decoder, &mut plain).unwrap();
        assert_eq!(plain, big);

        let small = encode(Response::json(Status::OK, b"{}".to_vec()), Coding::Gzip);
        assert_eq!(small.body(), b"{}");
        assert_eq!(small.headers, vec![("vary", "accept-encoding".to_owned())]);

        let already = gzipped(Response::json(Status::OK, vec![1; 2000]));
        let already = encode(already, Coding::Gzip);
        assert_eq!(already.body(), &[1; 2000]);

        let mut secret = Response::json(Status::OK, big.clone());
        secret.secret = true;
        assert_eq!(encode(secret, Coding::Gzip).body(), big.as_slice());
        let identity = encode(Response::json(Status::OK, big.clone()), Coding::Identity);
        assert_eq!(identity.body(), big.as_slice());
    }
}
