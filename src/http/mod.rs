//! A strict, small HTTP/1.1 layer over `httparse`, shared by both ports.
//!
//! It owns the wire format only: turning bytes into a [`Request`] under hard limits, and a
//! [`Response`] into bytes. It knows nothing of sockets, TLS, keys or routes, so the event loop
//! of the public port and the blocking loop of the admin port drive the same code, and the fuzz
//! and property tests reach it without a server. Every rejection is a [`ParseError`] that names
//! its status code; none of it can panic on input. [`encoding`] chooses an answer's content
//! coding from `Accept-Encoding`.

pub mod encoding;
mod request;
mod response;

pub use request::{HeaderTable, HeaderValue, Method, ParseError, Parsed, Request, Version, parse};
pub use response::{DateCache, Response, Status};

use std::time::Duration;

/// The most headers a request may carry, whatever the configuration says (it may say fewer):
/// the parser's header table lives on the stack.
pub const MAX_HEADERS: usize = 100;

/// The bounds on one connection's requests, for either port.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_body_bytes: u64,
    /// From the first byte of a request to the end of its head (and body): a slow sender is cut
    /// off here however steadily it trickles.
    pub header_timeout: Duration,
    /// How long a keep-alive connection may wait for its next request.
    pub idle_timeout: Duration,
}
