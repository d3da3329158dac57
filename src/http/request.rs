//! Request heads: bytes in, a borrowed [`Request`] or a precise [`ParseError`] out.
//!
//! Strictness is deliberate (RFC 9112): CRLF line ends only, origin-form targets only, one Host
//! for HTTP/1.1, `Content-Length` as plain digits and never twice, no `Transfer-Encoding`. Where
//! two parsers could read a request differently (the root of request smuggling) the request is
//! refused instead of guessed at.

use std::fmt;
use std::mem::MaybeUninit;

use httparse::Header;

use super::{HttpLimits, Status};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Other,
}

impl Method {
    fn parse(text: &str) -> Self {
        match text {
            "GET" => Self::Get,
            "HEAD" => Self::Head,
            "POST" => Self::Post,
            "PUT" => Self::Put,
            "DELETE" => Self::Delete,
            _ => Self::Other,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

/// One header looked up by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderValue<'b> {
    Absent,
    One(&'b [u8]),
    /// Present more than once: for credentials that is an error, never a choice.
    Repeated,
}

/// A parsed request head. Borrows the connection's buffer; nothing is copied.
#[derive(Debug)]
pub struct Request<'b> {
    pub method: Method,
    /// The target's path, before any `?`.
    pub path: &'b str,
    /// The raw query string after `?`, if any.
    pub query: Option<&'b str>,
    pub version: Version,
    pub headers: &'b [Header<'b>],
    /// Body length from `Content-Length` (0 without it).
    pub content_length: u64,
    /// Whether the client asked for, or the version implies, a persistent connection.
    pub keep_alive: bool,
    /// Whether the client waits for `100 Continue` before sending its body.
    pub expects_continue: bool,
}

impl<'b> Request<'b> {
    /// Looks a header up by name, case-insensitively.
    pub fn header(&self, name: &str) -> HeaderValue<'b> {
        let mut found = HeaderValue::Absent;
        for h in self.headers.iter().filter(|h| h.name.eq_ignore_ascii_case(name)) {
            found = match found {
                HeaderValue::Absent => HeaderValue::One(h.value),
                _ => HeaderValue::Repeated,
            };
        }
        found
    }

    /// Whether any header has this name.
    pub fn has_header(&self, name: &str) -> bool {
        self.headers.iter().any(|h| h.name.eq_ignore_ascii_case(name))
    }
}

/// What [`parse`] found in the buffer.
#[derive(Debug)]
pub enum Parsed<'b> {
    /// The head is not all there yet; read more (the size limit is already checked).
    Partial,
    /// A whole head, and how many bytes of the buffer it used. The body, if any, follows.
    Complete(Request<'b>, usize),
}

/// Why a request was refused before reaching any handler. Each maps to one status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    HeadTooLarge,
    TooManyHeaders,
    BareLf,
    Malformed(&'static str),
    Version,
    NotOriginForm,
    MissingHost,
    RepeatedHost,
    /// A Host that is not `uri-host [ ":" port ]` (RFC 9112 §3.2, RFC 3986 §3.2.2).
    InvalidHost,
    InvalidContentLength,
    RepeatedContentLength,
    BodyTooLarge,
    TransferEncoding,
    TransferEncodingWithLength,
    UnsupportedExpectation,
}

impl ParseError {
    /// The one mapping from a refusal to its status (both ports use it).
    pub fn status(self) -> Status {
        match self {
            Self::HeadTooLarge | Self::TooManyHeaders => Status::HEADER_FIELDS_TOO_LARGE,
            Self::BodyTooLarge => Status::PAYLOAD_TOO_LARGE,
            Self::TransferEncoding => Status::NOT_IMPLEMENTED,
            Self::Version => Status::HTTP_VERSION_NOT_SUPPORTED,
            Self::UnsupportedExpectation => Status::EXPECTATION_FAILED,
            Self::BareLf
            | Self::Malformed(_)
            | Self::NotOriginForm
            | Self::MissingHost
            | Self::RepeatedHost
            | Self::InvalidHost
            | Self::InvalidContentLength
            | Self::RepeatedContentLength
            | Self::TransferEncodingWithLength => Status::BAD_REQUEST,
        }
    }

    /// A short machine-readable name, for logs and the admin port's `error` field.
    pub fn code(self) -> &'static str {
        match self {
            Self::HeadTooLarge => "head_too_large",
            Self::TooManyHeaders => "too_many_headers",
            Self::BareLf => "bare_lf",
            Self::Malformed(_) => "malformed_request",
            Self::Version => "http_version",
            Self::NotOriginForm => "target_form",
            Self::MissingHost => "missing_host",
            Self::RepeatedHost => "repeated_host",
            Self::InvalidHost => "invalid_host",
            Self::InvalidContentLength => "invalid_content_length",
            Self::RepeatedContentLength => "repeated_content_length",
            Self::BodyTooLarge => "body_too_large",
            Self::TransferEncoding => "transfer_encoding",
            Self::TransferEncodingWithLength => "transfer_encoding_with_content_length",
            Self::UnsupportedExpectation => "expectation",
        }
    }
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::HeadTooLarge => "request head exceeds the size limit",
            Self::TooManyHeaders => "request has more headers than the limit",
            Self::BareLf => "request line or header ends in a bare LF; HTTP requires CRLF",
            Self::Malformed(what) => what,
            Self::Version => "only HTTP/1.0 and HTTP/1.1 are served",
            Self::NotOriginForm => "request target must be a path starting with /",
            Self::MissingHost => "HTTP/1.1 request without a Host header",
            Self::RepeatedHost => "request has more than one Host header",
            Self::InvalidHost => {
                "the Host header must be a host name or address with an optional port 0-65535"
            }
            Self::InvalidContentLength => "Content-Length must be a non-negative decimal number",
            Self::RepeatedContentLength => "request has more than one Content-Length header",
            Self::BodyTooLarge => "request body exceeds the size limit",
            Self::TransferEncoding => "Transfer-Encoding is not supported; send Content-Length",
            Self::TransferEncodingWithLength => {
                "request has both Transfer-Encoding and Content-Length"
            }
            Self::UnsupportedExpectation => "only the expectation 100-continue is supported",
        })
    }
}

/// Whether `value` is `uri-host [ ":" port ]` (RFC 9112 §3.2 via RFC 3986 §3.2.2-3): a
/// registered name of unreserved, sub-delim and %-encoded bytes, or a bracketed IPv6 address,
/// then an optional port that must fit 0-65535. An empty value is valid: RFC 9112 §3.2 asks for
/// an empty Host when the target has no authority.
fn valid_host(value: &[u8]) -> bool {
    let (host, port) = if let Some(rest) = value.strip_prefix(b"[") {
        let Some(close) = rest.iter().position(|&b| b == b']') else { return false };
        let literal = std::str::from_utf8(&rest[..close]).ok();
        if literal.and_then(|l| l.parse::<std::net::Ipv6Addr>().ok()).is_none() {
            return false;
        }
        match &rest[close + 1..] {
            [] => (&[][..], None),
            [b':', port @ ..] => (&[][..], Some(port)),
            _ => return false,
        }
    } else {
        match value.iter().position(|&b| b == b':') {
            Some(colon) => (&value[..colon], Some(&value[colon + 1..])),
            None => (value, None),
        }
    };
    let reg_name = host.iter().enumerate().all(|(i, &b)| {
        b.is_ascii_alphanumeric()
            || b"-._~!$&'()*+,;=".contains(&b)
            || (b == b'%'
                && host.get(i + 1..i + 3).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)))
    });
    // RFC 3986's `port = *DIGIT` allows an empty port ("h:"); a number must fit a TCP port.
    let port_ok = port.is_none_or(|p| {
        p.is_empty()
            || (p.iter().all(u8::is_ascii_digit)
                && std::str::from_utf8(p).is_ok_and(|t| t.parse::<u16>().is_ok()))
    });
    reg_name && port_ok
}

const NON_ASCII_VALUE: &str = "a header value has a byte outside ASCII";

/// The parser's header table, on the caller's stack. Left uninitialised: the parser writes the
/// entries a request uses, so a request with a half-dozen headers no longer pays for zeroing
/// all [`super::MAX_HEADERS`] of them (about a sixth of the connection step's time in
/// `perf annotate` under keep-alive load).
pub struct HeaderTable<'b>([MaybeUninit<Header<'b>>; super::MAX_HEADERS]);

impl HeaderTable<'_> {
    pub const fn new() -> Self {
        Self([const { MaybeUninit::uninit() }; super::MAX_HEADERS])
    }
}

impl Default for HeaderTable<'_> {
    fn default() -> Self {
        Self::new()
    }
}

/// Parses one request head from the start of `buf` into `headers` (at most
/// `limits.max_headers` of its entries). Call again with more bytes on `Partial`.
pub fn parse<'b>(
    buf: &'b [u8],
    headers: &'b mut HeaderTable<'b>,
    limits: &HttpLimits,
) -> Result<Parsed<'b>, ParseError> {
    let headers = &mut headers.0;
    let window = &buf[..buf.len().min(limits.max_header_bytes)];
    let count = limits.max_headers.min(headers.len());
    let Some(head_len) = head_end(window)? else {
        reject_early(window, count)?;
        return if buf.len() >= limits.max_header_bytes {
            Err(ParseError::HeadTooLarge)
        } else {
            Ok(Parsed::Partial)
        };
    };
    let mut raw = httparse::Request::new(&mut []);
    match raw.parse_with_uninit_headers(&buf[..head_len], &mut headers[..count]) {
        Ok(httparse::Status::Complete(_)) => {}
        // head_end found the blank line, so httparse has the whole head: a partial answer
        // means a line it could not finish, which is malformed.
        Ok(httparse::Status::Partial) => return Err(ParseError::Malformed("malformed request")),
        Err(e) => return Err(map_httparse(e)),
    }
    let (Some(method), Some(target), Some(minor)) = (raw.method, raw.path, raw.version) else {
        return Err(ParseError::Malformed("malformed request line"));
    };
    let version = if minor == 0 { Version::Http10 } else { Version::Http11 };
    let headers: &'b [Header<'b>] = raw.headers;
    let request = build(Method::parse(method), target, version, headers, limits)?;
    Ok(Parsed::Complete(request, head_len))
}

/// Refuses an unfinished head that can already never become a request, so that an HTTP/0.9
/// line, a TLS record or other garbage gets its answer now rather than at the header timeout.
/// httparse reports an error only where the bytes so far break the grammar, so a prefix of a
/// valid request is never refused here (the property tests hold it to that).
fn reject_early(window: &[u8], count: usize) -> Result<(), ParseError> {
    let mut scratch = HeaderTable::new();
    let mut raw = httparse::Request::new(&mut []);
    match raw.parse_with_uninit_headers(window, &mut scratch.0[..count]) {
        Ok(_) => Ok(()),
        Err(e) => Err(map_httparse(e)),
    }
}

/// Finds the end of the head (just past the blank line), refusing bare LFs on the way.
/// Runs on every request: `memchr` looks at the line ends only, a word at a time.
fn head_end(buf: &[u8]) -> Result<Option<usize>, ParseError> {
    for i in memchr::memchr_iter(b'\n', buf) {
        if i == 0 || buf[i - 1] != b'\r' {
            return Err(ParseError::BareLf);
        }
        if i >= 3 && &buf[i - 3..=i] == b"\r\n\r\n" {
            return Ok(Some(i + 1));
        }
    }
    Ok(None)
}

fn map_httparse(e: httparse::Error) -> ParseError {
    match e {
        httparse::Error::TooManyHeaders => ParseError::TooManyHeaders,
        httparse::Error::Version => ParseError::Version,
        httparse::Error::HeaderName => ParseError::Malformed("invalid header name"),
        httparse::Error::HeaderValue => ParseError::Malformed("invalid byte in a header value"),
        httparse::Error::Token => ParseError::Malformed("malformed request line"),
        httparse::Error::NewLine => ParseError::Malformed("invalid line ending"),
        httparse::Error::Status => ParseError::Malformed("malformed request line"),
    }
}

fn build<'b>(
    method: Method,
    target: &'b str,
    version: Version,
    headers: &'b [Header<'b>],
    limits: &HttpLimits,
) -> Result<Request<'b>, ParseError> {
    // Origin-form only (RFC 9112 §3.2.1). Absolute-form is for proxies, which this is not, and
    // asterisk-form only means something to OPTIONS, which nothing here serves.
    if !target.starts_with('/') || target.contains('#') {
        return Err(ParseError::NotOriginForm);
    }
    // httparse lets obs-text (bytes 0x80 to 0xFF) through in field values, as RFC 9110 §5.5
    // allows; no client of this API sends any, and bytes that two parts of a system could
    // decode differently are where header confusion starts, so they are refused.
    if headers.iter().any(|h| !h.value.is_ascii()) {
        return Err(ParseError::Malformed(NON_ASCII_VALUE));
    }
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    let mut request = Request {
        method,
        path,
        query,
        version,
        headers,
        content_length: 0,
        keep_alive: version == Version::Http11,
        expects_continue: false,
    };
    match request.header("host") {
        HeaderValue::Repeated => return Err(ParseError::RepeatedHost),
        HeaderValue::Absent if version == Version::Http11 => return Err(ParseError::MissingHost),
        HeaderValue::One(host) if !valid_host(host) => return Err(ParseError::InvalidHost),
        _ => {}
    }
    let length = request.header("content-length");
    if request.has_header("transfer-encoding") {
        return Err(if length == HeaderValue::Absent {
            ParseError::TransferEncoding
        } else {
            ParseError::TransferEncodingWithLength
        });
    }
    request.content_length = match length {
        HeaderValue::Absent => 0,
        HeaderValue::Repeated => return Err(ParseError::RepeatedContentLength),
        HeaderValue::One(value) => content_length(value)?,
    };
    if request.content_length > limits.max_body_bytes {
        return Err(ParseError::BodyTooLarge);
    }
    for h in headers.iter().filter(|h| h.name.eq_ignore_ascii_case("connection")) {
        for token in h.value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            if token.eq_ignore_ascii_case(b"close") {
                request.keep_alive = false;
            } else if token.eq_ignore_ascii_case(b"keep-alive") && version == Version::Http10 {
                request.keep_alive = true;
            }
        }
    }
    match request.header("expect") {
        HeaderValue::Absent => {}
        HeaderValue::One(v) if v.eq_ignore_ascii_case(b"100-continue") => {
            request.expects_continue = true;
        }
        _ => return Err(ParseError::UnsupportedExpectation),
    }
    Ok(request)
}

/// Plain decimal digits only: no sign, no spaces, no list (RFC 9110 §8.6).
fn content_length(value: &[u8]) -> Result<u64, ParseError> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return Err(ParseError::InvalidContentLength);
    }
    Ok(value.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const LIMITS: HttpLimits = HttpLimits {
        max_header_bytes: 1024,
        max_headers: 16,
        max_body_bytes: 100,
        header_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(1),
    };

    /// What a parse found, owned, for comparing.
    type Summary = (Method, String, Option<String>, u64, bool, usize);

    fn check(bytes: &[u8]) -> Result<Summary, ParseError> {
        let mut headers = HeaderTable::new();
        match parse(bytes, &mut headers, &LIMITS)? {
            Parsed::Partial => panic!("partial"),
            Parsed::Complete(r, n) => Ok((
                r.method,
                r.path.to_owned(),
                r.query.map(str::to_owned),
                r.content_length,
                r.keep_alive,
                n,
            )),
        }
    }

    fn error(bytes: &[u8]) -> ParseError {
        check(bytes).unwrap_err()
    }

    #[test]
    fn a_plain_get_parses() {
        let req = b"GET /a/b?x=1 HTTP/1.1\r\nHost: h\r\n\r\nrest";
        let (method, path, query, len, keep_alive, used) = check(req).unwrap();
        assert_eq!((method, path.as_str(), query.as_deref()), (Method::Get, "/a/b", Some("x=1")));
        assert_eq!((len, keep_alive, used), (0, true, req.len() - 4));
    }

    #[test]
    fn partial_until_the_blank_line() {
        let mut headers = HeaderTable::new();
        let r = parse(b"GET / HTTP/1.1\r\nHost: h\r\n", &mut headers, &LIMITS).unwrap();
        assert!(matches!(r, Parsed::Partial));
    }

    #[test]
    fn http10_closes_unless_asked_and_http11_closes_when_asked() {
        assert!(!check(b"GET / HTTP/1.0\r\n\r\n").unwrap().4);
        assert!(check(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").unwrap().4);
        assert!(!check(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").unwrap().4);
    }

    #[test]
    fn each_refusal_is_precise() {
        let cases: &[(&[u8], ParseError)] = &[
            (b"GET / HTTP/1.1\nHost: h\r\n\r\n", ParseError::BareLf),
            (b"GET / HTTP/1.1\r\nHost: h\n\n", ParseError::BareLf),
            (b"GET / HTTP/1.1\r\n\r\n", ParseError::MissingHost),
            (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", ParseError::RepeatedHost),
            (b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", ParseError::InvalidHost),
            (b"GET / HTTP/1.1\r\nHost: a\tb:80\r\n\r\n", ParseError::InvalidHost),
            (b"GET / HTTP/1.1\r\nHost: a:b:c\r\n\r\n", ParseError::InvalidHost),
            (b"GET / HTTP/1.1\r\nHost: h:99999\r\n\r\n", ParseError::InvalidHost),
            (b"GET / HTTP/1.1\r\nHost: h:80a\r\n\r\n", ParseError::InvalidHost),
            (b"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", ParseError::InvalidHost),
            (b"GET / HTTP/1.1\r\nHost: [::1]x\r\n\r\n", ParseError::InvalidHost),
            (b"GET / HTTP/1.1\r\nHost: [not-v6]:80\r\n\r\n", ParseError::InvalidHost),
            (b"GET / HTTP/1.1\r\nHost: ::1\r\n\r\n", ParseError::InvalidHost),
            (b"GET / HTTP/1.1\r\nHost: a%zz\r\n\r\n", ParseError::InvalidHost),
            (b"GET / HTTP/1.1\r\nHost: a%4\r\n\r\n", ParseError::InvalidHost),
            (b"GET / HTTP/1.1\r\nHost: [fe80::1%25eth0]\r\n\r\n", ParseError::InvalidHost),
            (b"GET / HTTP/1.1\r\nHost: user@h\r\n\r\n", ParseError::InvalidHost),
            (b"GET / HTTP/1.0\r\nHost: h/x\r\n\r\n", ParseError::InvalidHost),
            (b"GET http://x/ HTTP/1.1\r\nHost: h\r\n\r\n", ParseError::NotOriginForm),
            (b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", ParseError::NotOriginForm),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", ParseError::Version),
            (b"GET / HTTP/1.2\r\nHost: h\r\n\r\n", ParseError::Version),
            (b"GET /\r\n\r\n", ParseError::Malformed("malformed request line")),
            (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n", ParseError::InvalidContentLength),
            (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1, 1\r\n\r\n", ParseError::InvalidContentLength),
            (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999\r\n\r\n", ParseError::InvalidContentLength),
            (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", ParseError::RepeatedContentLength),
            (b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 101\r\n\r\n", ParseError::BodyTooLarge),
            (b"GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n", ParseError::TransferEncoding),
            (b"GET / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n", ParseError::TransferEncodingWithLength),
            (b"GET / HTTP/1.1\r\nHost: h\r\nExpect: magic\r\n\r\n", ParseError::UnsupportedExpectation),
            (b"GET / HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n", ParseError::Malformed("invalid header name")),
            (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\0b\r\n\r\n", ParseError::Malformed("invalid byte in a header value")),
            (b"G\xffT / HTTP/1.1\r\nHost: h\r\n\r\n", ParseError::Malformed("malformed request line")),
        ];
        for (bytes, expected) in cases {
            assert_eq!(error(bytes), *expected, "{}", String::from_utf8_lossy(bytes));
        }
    }

    #[test]
    fn valid_hosts_pass_including_the_empty_one() {
        for host in [
            "",
            "h",
            "localhost:8443",
            "h:",
            "h:0",
            "h:65535",
            "127.0.0.1:8443",
            "[::1]",
            "[::1]:8443",
            "xn--bcher-kva.example",
            "a%41b",
            "a_b~c!$&'()*+,;=",
        ] {
            let bytes = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
            let result = check(bytes.as_bytes());
            assert!(result.is_ok(), "{host}: {result:?}");
        }
    }

    #[test]
    fn oversized_heads_and_header_counts_get_431() {
        let mut big = b"GET / HTTP/1.1\r\nHost: h\r\nX: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', 2000));
        let mut headers = HeaderTable::new();
        assert_eq!(parse(&big, &mut headers, &LIMITS).unwrap_err(), ParseError::HeadTooLarge);
        assert_eq!(ParseError::HeadTooLarge.status(), Status::HEADER_FIELDS_TOO_LARGE);
        let mut many = b"GET / HTTP/1.1\r\nHost: h\r\n".to_vec();
        for i in 0..20 {
            many.extend(format!("X-{i}: v\r\n").bytes());
        }
        many.extend(b"\r\n");
        assert_eq!(error(&many), ParseError::TooManyHeaders);
    }

    #[test]
    fn non_ascii_header_values_are_refused() {
        let bytes = b"GET / HTTP/1.1\r\nHost: h\r\nX-Api-Key: \xfe\xff\r\n\r\n";
        assert_eq!(error(bytes), ParseError::Malformed(NON_ASCII_VALUE));
        let utf8 = "GET / HTTP/1.1\r\nHost: h\r\nUser-Agent: caf\u{e9}\r\n\r\n";
        assert_eq!(error(utf8.as_bytes()), ParseError::Malformed(NON_ASCII_VALUE));
    }

    #[test]
    fn a_head_that_cannot_become_a_request_is_refused_before_it_ends() {
        let cases: &[(&[u8], ParseError)] = &[
            // HTTP/0.9: no version, no blank line; it would otherwise wait for the timeout.
            (b"GET /\r\n", ParseError::Malformed("malformed request line")),
            // A TLS ClientHello on a plain-HTTP port.
            (b"\x16\x03\x01\x02\x00\x01", ParseError::Malformed("malformed request line")),
            (
                b"GET / HTTP/1.1\r\nHost: h\r\nX: a\0",
                ParseError::Malformed("invalid byte in a header value"),
            ),
        ];
        for (bytes, expected) in cases {
            let mut headers = HeaderTable::new();
            let got = parse(bytes, &mut headers, &LIMITS).map(|_| ());
            assert_eq!(got, Err(*expected), "{}", String::from_utf8_lossy(bytes));
        }
        // Every prefix of a good request is only unfinished.
        let good = b"GET /a?b HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n\r\n";
        for end in 0..good.len() {
            let mut headers = HeaderTable::new();
            let r = parse(&good[..end], &mut headers, &LIMITS);
            assert!(matches!(r, Ok(Parsed::Partial)), "prefix {end}: {r:?}");
        }
    }

    #[test]
    fn header_lookup_is_case_insensitive_and_sees_repeats() {
        let mut headers = HeaderTable::new();
        let bytes = b"GET / HTTP/1.1\r\nhost: h\r\nX-API-KEY: a\r\nx-api-key: b\r\n\r\n";
        let Parsed::Complete(r, _) = parse(bytes, &mut headers, &LIMITS).unwrap() else {
            panic!("partial")
        };
        assert_eq!(r.header("Host"), HeaderValue::One(b"h"));
        assert_eq!(r.header("x-api-key"), HeaderValue::Repeated);
        assert_eq!(r.header("x-activation-code"), HeaderValue::Absent);
    }
}
