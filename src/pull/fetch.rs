//! One GET of a V1 method on the upstream, with its timeouts, retries and size bound.
//!
//! `ureq` (on the same rustls and ring as the server) does the HTTPS; this module decides what
//! an answer means. A connection error, a timeout, a 5xx and the documented `429` (quota) and
//! `503` (analysis running) are retried with capped exponential backoff and full jitter,
//! honouring `Retry-After` up to the cap; `401`, `403`, any other 4xx, a certificate that is
//! not trusted or not for the host, and an answer larger than the bound fail at once, because
//! trying again cannot change them. Every wait is cut to what is left of the whole pull.
//!
//! The upstream key is set on each request as a sensitive header value (which `ureq` never
//! logs) and is removed from any upstream error text before that text is shown.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use ring::rand::{SecureRandom, SystemRandom};
use ureq::http::HeaderValue;
use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};

use super::secret::UpstreamKey;
use super::{Method, PullError};
use crate::config::Upstream;

/// The most one answer may be. A `Limit=200` page of the 2,000-application benchmark is
/// about 6 MiB; anything near this bound is not an answer we can use.
pub const MAX_ANSWER_BYTES: u64 = 64 * 1024 * 1024;

/// The first wait before a retry; each further one doubles, up to `max_backoff`.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

/// Counts the pull reports.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    pub requests: u64,
    pub retries: u64,
    pub bytes: u64,
}

pub struct Fetcher {
    agent: ureq::Agent,
    base: String,
    key: UpstreamKey,
    activation_code: String,
    settings: Upstream,
    deadline: Instant,
    random: SystemRandom,
    pub counts: Counts,
}

impl Fetcher {
    pub fn new(
        settings: &Upstream,
        key: UpstreamKey,
        activation_code: String,
        started: Instant,
    ) -> Result<Self, PullError> {
        let roots = match &settings.ca_file {
            Some(path) => RootCerts::Specific(Arc::new(read_ca_file(path)?)),
            None => RootCerts::PlatformVerifier,
        };
        let tls = TlsConfig::builder()
            .provider(TlsProvider::Rustls)
            .unversioned_rustls_crypto_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .root_certs(roots)
            .build();
        let config = ureq::Agent::config_builder()
            .tls_config(tls)
            .https_only(true)
            // Every status is an answer to judge here, not an error to unwrap.
            .http_status_as_error(false)
            // A redirect would carry the key to wherever it points.
            .max_redirects(0)
            .timeout_connect(Some(settings.request_timeout))
            .max_response_header_size(64 * 1024)
            .user_agent(format!("aims-api/{} (snapshot pull)", env!("CARGO_PKG_VERSION")))
            .build();
        let agent = match settings.pin_sha256 {
            // The pin replaces the chain check: see `pin` for why it needs a connector.
            Some(pin) => super::pin::agent(config, pin).map_err(|e| {
                PullError::Setup(format!("cannot set up TLS for upstream.pin_sha256: {e}"))
            })?,
            None => config.new_agent(),
        };
        Ok(Self {
            agent,
            base: settings.url.clone(),
            key,
            activation_code,
            settings: settings.clone(),
            deadline: started + settings.pull_timeout,
            random: SystemRandom::new(),
            counts: Counts::default(),
        })
    }

    /// The body of a `200` answer to `method` with `query` (`Name=value&…`, already encoded).
    pub fn get(&mut self, method: Method, query: &str) -> Result<Vec<u8>, PullError> {
        let url = match query {
            "" => format!("{}/{}", self.base, method.name()),
            q => format!("{}/{}?{q}", self.base, method.name()),
        };
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let outcome = self.try_once(method, &url);
            let (reason, retry_after) = match outcome {
                Ok(body) => return Ok(body),
                Err(Failure::Final(error)) => return Err(error),
                Err(Failure::Retry { reason, retry_after }) => (reason, retry_after),
            };
            if attempt >= self.settings.max_attempts {
                return Err(PullError::GaveUp {
                    method,
                    url: self.base.clone(),
                    attempts: attempt,
                    last: reason,
                });
            }
            let wait = self.backoff(attempt, retry_after);
            if Instant::now() + wait >= self.deadline {
                return Err(PullError::Deadline {
                    timeout: self.settings.pull_timeout,
                    doing: format!(
                        "waiting {} ms to retry {} after: {reason}",
                        wait.as_millis(),
                        method.name()
                    ),
                });
            }
            log::warn!(
                "upstream {}: {reason}; try {} of {} in {} ms",
                method.name(),
                attempt + 1,
                self.settings.max_attempts,
                wait.as_millis()
            );
            self.counts.retries += 1;
            std::thread::sleep(wait);
        }
    }

    fn try_once(&mut self, method: Method, url: &str) -> Result<Vec<u8>, Failure> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Failure::Final(PullError::Deadline {
                timeout: self.settings.pull_timeout,
                doing: format!("about to ask for {}", method.name()),
            }));
        }
        let mut key = HeaderValue::from_str(self.key.expose()).map_err(|_| {
            Failure::Final(PullError::Setup(
                "the upstream key cannot travel in an HTTP header".into(),
            ))
        })?;
        key.set_sensitive(true);
        self.counts.requests += 1;
        let sent = self
            .agent
            .get(url)
            .header("x-api-key", key)
            .header("x-activation-code", self.activation_code.as_str())
            .header("accept", "application/json")
            .config()
            .timeout_global(Some(self.settings.request_timeout.min(left)))
            .build()
            .call();
        let mut response = match sent {
            Ok(response) => response,
            Err(e) => return Err(self.transport_failure(method, e)),
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let body = response.body_mut().with_config().limit(MAX_ANSWER_BYTES).read_to_vec();
        let body = match body {
            Ok(body) => body,
            Err(ureq::Error::BodyExceedsLimit(_)) => {
                return Err(Failure::Final(PullError::TooLarge {
                    method,
                    limit: MAX_ANSWER_BYTES,
                }));
            }
            // A 200 whose body broke off is as retryable as a connection that broke.
            Err(e) => return Err(self.transport_failure(method, e)),
        };
        self.counts.bytes += body.len() as u64;
        let detail = || self.error_text(&body);
        match status {
            200 => Ok(body),
            429 => Err(Failure::Retry {
                reason: format!("429, the upstream's request quota is used up ({})", detail()),
                retry_after,
            }),
            503 => Err(Failure::Retry {
                reason: format!("503, the analysis is still running ({})", detail()),
                retry_after,
            }),
            500..=599 => {
                Err(Failure::Retry { reason: format!("{status} ({})", detail()), retry_after })
            }
            _ => Err(Failure::Final(PullError::Refused { method, status, detail: detail() })),
        }
    }

    /// What a failure below HTTP means: a certificate problem is final, the rest is retried.
    fn transport_failure(&self, method: Method, error: ureq::Error) -> Failure {
        if let Some(tls) = rustls_error(&error) {
            let host = self.base.split('/').nth(2).unwrap_or("").to_owned();
            return Failure::Final(PullError::Tls { method, host, source: tls.clone() });
        }
        let reason = match &error {
            ureq::Error::Timeout(what) => format!(
                "no complete answer within {} s ({what})",
                self.settings.request_timeout.as_secs()
            ),
            ureq::Error::Io(e) => format!("connection failed: {e}"),
            ureq::Error::HostNotFound => "the host name does not resolve".to_owned(),
            ureq::Error::ConnectionFailed => "cannot connect".to_owned(),
            other => other.to_string(),
        };
        Failure::Retry { reason, retry_after: None }
    }

    /// The upstream's `Exception.Errors`, or the start of its body, with the key removed.
    fn error_text(&self, body: &[u8]) -> String {
        let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
        let text = match parsed.as_ref().and_then(|v| v.get("Errors")).and_then(|e| e.as_array()) {
            Some(errors) => errors.iter().filter_map(|e| e.as_str()).collect::<Vec<_>>().join("; "),
            None => String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
        };
        let text: String =
            text.chars().take(300).map(|c| if c.is_control() { ' ' } else { c }).collect();
        let key = self.key.expose();
        if text.is_empty() {
            "no error text".to_owned()
        } else if key.len() >= 8 && text.contains(key) {
            text.replace(key, "[redacted]")
        } else {
            text
        }
    }

    fn backoff(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        let mut bytes = [0u8; 4];
        let fraction = match self.random.fill(&mut bytes) {
            Ok(()) => f64::from(u32::from_le_bytes(bytes)) / f64::from(u32::MAX),
            Err(_) => 1.0,
        };
        backoff(attempt, self.settings.max_backoff, fraction, retry_after)
    }
}

/// The wait before try `attempt + 1`: exponential from [`FIRST_BACKOFF`], capped at `cap`,
/// with "equal jitter" (half fixed, half `fraction` of it random: never a zero wait, and
/// clients that failed together spread out). A `Retry-After` is honoured up to `cap`: the
/// server knows better than our guess, but not beyond what the operator allows.
fn backoff(attempt: u32, cap: Duration, fraction: f64, retry_after: Option<Duration>) -> Duration {
    let exponential = FIRST_BACKOFF.saturating_mul(1 << attempt.saturating_sub(1).min(16)).min(cap);
    let jittered = exponential.mul_f64(0.5 + fraction.clamp(0.0, 1.0) / 2.0);
    match retry_after {
        Some(asked) => asked.min(cap),
        None => jittered,
    }
}

enum Failure {
    Final(PullError),
    Retry { reason: String, retry_after: Option<Duration> },
}

/// The rustls error inside a ureq error, if the failure was TLS's.
fn rustls_error(error: &ureq::Error) -> Option<&rustls::Error> {
    match error {
        ureq::Error::Rustls(e) => Some(e),
        ureq::Error::Io(e) => inner_rustls(e),
        _ => None,
    }
}

fn inner_rustls(error: &io::Error) -> Option<&rustls::Error> {
    error.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>())
}

/// `Retry-After` as seconds or as an HTTP-date (RFC 9110 §10.2.3).
fn parse_retry_after(text: &str) -> Option<Duration> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(text).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO))
}

fn read_ca_file(path: &Path) -> Result<Vec<Certificate<'static>>, PullError> {
    let fail = |reason: String| PullError::CaFile { path: path.to_owned(), reason, source: None };
    let pem = std::fs::read(path).map_err(|e| PullError::CaFile {
        path: path.to_owned(),
        reason: format!("cannot read: {e}"),
        source: Some(e),
    })?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(ureq::tls::PemItem::Certificate(cert)) => certs.push(cert),
            Ok(_) => {}
            Err(e) => return Err(fail(format!("is not PEM: {e}"))),
        }
    }
    if certs.is_empty() {
        return Err(fail("holds no certificate (expected PEM `BEGIN CERTIFICATE` blocks)".into()));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_and_honours_retry_after() {
        let cap = Duration::from_secs(60);
        assert_eq!(backoff(1, cap, 0.0, None), Duration::from_millis(250));
        assert_eq!(backoff(1, cap, 1.0, None), Duration::from_millis(500));
        assert_eq!(backoff(3, cap, 1.0, None), Duration::from_secs(2));
        assert_eq!(backoff(30, cap, 1.0, None), cap);
        assert_eq!(backoff(30, cap, 0.0, None), cap / 2);
        assert_eq!(backoff(1, cap, 0.5, Some(Duration::from_secs(1))), Duration::from_secs(1));
        assert_eq!(backoff(1, cap, 0.5, Some(Duration::from_secs(3600))), cap);
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(parse_retry_after("1"), Some(Duration::from_secs(1)));
        assert_eq!(parse_retry_after(" 120 "), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO));
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
        let wait = parse_retry_after(&later).unwrap();
        assert!((28..=30).contains(&wait.as_secs()), "{wait:?}");
        assert_eq!(parse_retry_after("soon"), None);
    }
}
