//! Responses: a status, a few headers and a body, written out in one piece.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use zeroize::Zeroize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status(pub u16);

impl Status {
    pub const CONTINUE: Self = Self(100);
    pub const OK: Self = Self(200);
    pub const CREATED: Self = Self(201);
    pub const BAD_REQUEST: Self = Self(400);
    pub const UNAUTHORIZED: Self = Self(401);
    pub const FORBIDDEN: Self = Self(403);
    pub const NOT_FOUND: Self = Self(404);
    pub const METHOD_NOT_ALLOWED: Self = Self(405);
    pub const REQUEST_TIMEOUT: Self = Self(408);
    pub const CONFLICT: Self = Self(409);
    pub const PAYLOAD_TOO_LARGE: Self = Self(413);
    pub const EXPECTATION_FAILED: Self = Self(417);
    pub const UNPROCESSABLE: Self = Self(422);
    pub const TOO_MANY_REQUESTS: Self = Self(429);
    pub const HEADER_FIELDS_TOO_LARGE: Self = Self(431);
    pub const INTERNAL_SERVER_ERROR: Self = Self(500);
    pub const NOT_IMPLEMENTED: Self = Self(501);
    pub const SERVICE_UNAVAILABLE: Self = Self(503);
    pub const HTTP_VERSION_NOT_SUPPORTED: Self = Self(505);

    pub fn reason(self) -> &'static str {
        match self.0 {
            100 => "Continue",
            200 => "OK",
            201 => "Created",
            204 => "No Content",
            400 => "Bad Request",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            409 => "Conflict",
            413 => "Content Too Large",
            417 => "Expectation Failed",
            422 => "Unprocessable Content",
            429 => "Too Many Requests",
            431 => "Request Header Fields Too Large",
            500 => "Internal Server Error",
            501 => "Not Implemented",
            503 => "Service Unavailable",
            505 => "HTTP Version Not Supported",
            _ => "Unknown",
        }
    }

    pub fn is_server_error(self) -> bool {
        self.0 >= 500
    }
}

/// A body owned by one response, or shared by many (pre-rendered data).
#[derive(Debug)]
pub enum Body {
    Owned(Vec<u8>),
    Shared(Arc<[u8]>),
}

impl Body {
    fn as_slice(&self) -> &[u8] {
        match self {
            Self::Owned(v) => v,
            Self::Shared(a) => a,
        }
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: Status,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Body,
    /// Close the connection after this response.
    pub close: bool,
    /// The body holds a secret (a new API key): wiped from memory when dropped.
    pub secret: bool,
}

impl Response {
    pub fn json(status: Status, body: Vec<u8>) -> Self {
        Self {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            body: Body::Owned(body),
            close: false,
            secret: false,
        }
    }

    pub fn shared_json(status: Status, body: Arc<[u8]>) -> Self {
        Self {
            status,
            content_type: "application/json",
            headers: Vec::new(),
            body: Body::Shared(body),
            close: false,
            secret: false,
        }
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn closing(mut self) -> Self {
        self.close = true;
        self
    }

    pub fn body(&self) -> &[u8] {
        self.body.as_slice()
    }

    /// At least as many bytes as [`Response::write_to`] writes: the fixed head is under 300
    /// bytes with the longest status line, date and content type.
    pub fn encoded_len_bound(&self) -> usize {
        let headers: usize = self.headers.iter().map(|(n, v)| n.len() + v.len() + 4).sum();
        512 + self.content_type.len() + headers + self.body.as_slice().len()
    }

    /// Serializes the response onto `out`. `head_only` answers a HEAD: the same headers,
    /// `Content-Length` included (RFC 9110 §9.3.2), and no body.
    pub fn write_to(&self, out: &mut Vec<u8>, date: &str, head_only: bool, keep_alive: bool) {
        self.write_head(out, date, keep_alive);
        if !head_only {
            out.extend_from_slice(self.body.as_slice());
        }
    }

    /// Serializes the status line and the headers, through the blank line, onto `out`: for a
    /// port that sends the body from where it is rather than copying it after the head. Built
    /// by appending, without `fmt`: this runs once per request on the API workers.
    pub fn write_head(&self, out: &mut Vec<u8>, date: &str, keep_alive: bool) {
        let mut number = itoa::Buffer::new();
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(number.format(self.status.0).as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.status.reason().as_bytes());
        out.extend_from_slice(b"\r\ndate: ");
        out.extend_from_slice(date.as_bytes());
        out.extend_from_slice(b"\r\ncontent-type: ");
        out.extend_from_slice(self.content_type.as_bytes());
        out.extend_from_slice(b"\r\ncontent-length: ");
        out.extend_from_slice(number.format(self.body.as_slice().len()).as_bytes());
        out.extend_from_slice(
            b"\r\ncache-control: no-store\r\nx-content-type-options: nosniff\r\n",
        );
        for (name, value) in &self.headers {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if !keep_alive || self.close {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }

    /// The body, as [`Response::write_to`] would send it.
    pub fn body_bytes(&self) -> &[u8] {
        self.body.as_slice()
    }
}

impl Drop for Response {
    fn drop(&mut self) {
        if let (true, Body::Owned(body)) = (self.secret, &mut self.body) {
            body.zeroize();
        }
    }
}

/// The `Date` header value (RFC 9110 §6.6.1), formatted at most once a second per thread.
#[derive(Default)]
pub struct DateCache {
    second: u64,
    text: String,
}

impl DateCache {
    pub fn now(&mut self) -> &str {
        let now = SystemTime::now();
        let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if second != self.second || self.text.is_empty() {
            self.second = second;
            self.text = httpdate::fmt_http_date(now);
        }
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_keeps_length_and_drops_body() {
        let r = Response::json(Status::OK, b"{}".to_vec()).header("allow", "GET");
        let mut full = Vec::new();
        r.write_to(&mut full, "D", false, true);
        let text = String::from_utf8(full).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(text.contains("content-length: 2\r\n"));
        assert!(text.contains("allow: GET\r\n"));
        assert!(text.ends_with("\r\n\r\n{}"));
        assert!(!text.contains("connection: close"));
        let mut head = Vec::new();
        r.write_to(&mut head, "D", true, false);
        let text = String::from_utf8(head).unwrap();
        assert!(text.contains("content-length: 2\r\n"));
        assert!(text.ends_with("connection: close\r\n\r\n"));
    }

    #[test]
    fn the_length_bound_holds_so_a_secret_buffer_never_grows() {
        let mut r = Response::json(Status::HTTP_VERSION_NOT_SUPPORTED, vec![b'x'; 300])
            .header("retry-after", "3600")
            .header("allow", "GET, HEAD, POST, DELETE");
        r.secret = true;
        let mut out = Vec::with_capacity(r.encoded_len_bound());
        let capacity = out.capacity();
        r.write_to(&mut out, "Sun, 29 Nov 2026 03:59:21 GMT", false, false);
        assert!(out.len() <= capacity && out.capacity() == capacity);
    }
}
