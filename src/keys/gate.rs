//! The gate: whether a request on the API port carries valid credentials.
//!
//! Every API request passes here before routing, so an unknown path without credentials is a
//! 400 or 401, never a 404 that would map the API for a stranger. The gate holds the live key
//! state; only its parent, [`super::KeyManager`], switches it, in the order that makes a change
//! safe. A switch is visible to every request parsed after it, which is what makes a replace or
//! revoke take effect "from this response on". It compares the key's SHA-256 and the activation
//! code's SHA-256 in constant time and tells the client only "invalid", keeping the precise
//! reason for the log.

use std::fmt;
use std::sync::RwLock;

use crate::config::ActivationCode;
use crate::http::{HeaderValue, Request, Status};
use crate::key::{self, Fingerprint, FormatError, KeyHash};
use crate::keystore::KeyRecord;
use crate::locks;
use crate::metrics::Reason;

pub const KEY_HEADER: &str = "x-api-key";
pub const CODE_HEADER: &str = "x-activation-code";

/// The key state the gate judges by.
#[derive(Debug, Clone, Copy)]
enum Live {
    NoKey,
    Active(KeyHash),
    Revoked(KeyHash),
}

impl From<&KeyRecord> for Live {
    fn from(record: &KeyRecord) -> Self {
        match &record.key {
            None => Self::NoKey,
            Some(k) if k.revoked_at.is_some() => Self::Revoked(k.hash),
            Some(k) => Self::Active(k.hash),
        }
    }
}

pub struct Gate {
    activation_code: KeyHash,
    live: RwLock<Live>,
}

/// Why a request was refused. The client sees [`Refusal::client_message`]; the log sees
/// [`Refusal::reason`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Missing(&'static str),
    Empty(&'static str),
    Repeated(&'static str),
    MalformedKey(FormatError),
    WrongKey,
    WrongActivationCode,
    NoKey,
    RevokedKey,
}

impl Refusal {
    /// The one mapping from a refusal to its status.
    pub fn status(self) -> Status {
        match self {
            Self::Missing(_) | Self::Empty(_) | Self::Repeated(_) => Status::BAD_REQUEST,
            Self::MalformedKey(_)
            | Self::WrongKey
            | Self::WrongActivationCode
            | Self::NoKey
            | Self::RevokedKey => Status::UNAUTHORIZED,
        }
    }

    /// What the client is told. Every 401 reads the same, so a prober learns nothing about
    /// which half was wrong or whether a key exists.
    pub fn client_message(self) -> String {
        match self {
            Self::Missing(h) => format!("the {h} header is required"),
            Self::Empty(h) => format!("the {h} header is empty"),
            Self::Repeated(h) => format!("the {h} header must be sent once"),
            Self::MalformedKey(_)
            | Self::WrongKey
            | Self::WrongActivationCode
            | Self::NoKey
            | Self::RevokedKey => "the API key or the activation code is not valid".to_owned(),
        }
    }

    /// What the log is told: the precise reason, never the presented value.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Missing(KEY_HEADER) => "missing x-api-key",
            Self::Missing(_) => "missing x-activation-code",
            Self::Empty(KEY_HEADER) => "empty x-api-key",
            Self::Empty(_) => "empty x-activation-code",
            Self::Repeated(KEY_HEADER) => "repeated x-api-key",
            Self::Repeated(_) => "repeated x-activation-code",
            Self::MalformedKey(e) => e.as_str(),
            Self::WrongKey => "wrong key",
            Self::WrongActivationCode => "wrong activation code",
            Self::NoKey => "no key has been generated",
            Self::RevokedKey => "revoked key",
        }
    }
}

impl From<Refusal> for Reason {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Missing(_) => Self::MissingHeader,
            Refusal::Empty(_) => Self::EmptyHeader,
            Refusal::Repeated(_) => Self::RepeatedHeader,
            Refusal::MalformedKey(_) => Self::MalformedKey,
            Refusal::WrongKey => Self::WrongKey,
            Refusal::WrongActivationCode => Self::WrongActivationCode,
            Refusal::NoKey => Self::NoKey,
            Refusal::RevokedKey => Self::RevokedKey,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl Gate {
    pub fn new(activation_code: &ActivationCode, record: &KeyRecord) -> Self {
        Self {
            activation_code: KeyHash::of(activation_code.as_str().as_bytes()),
            live: RwLock::new(Live::from(record)),
        }
    }

    /// Switches to `record`'s key state. Returns once every later [`Gate::check`] sees it.
    pub(super) fn switch(&self, record: &KeyRecord) {
        *locks::write(&self.live) = Live::from(record);
    }

    /// Disables whatever key is active, without touching the store: the fail-closed half of a
    /// revoke whose write failed.
    pub(super) fn disable(&self) {
        let mut guard = locks::write(&self.live);
        if let Live::Active(hash) = *guard {
            *guard = Live::Revoked(hash);
        }
    }

    /// Judges a request's credentials.
    pub fn check(&self, request: &Request<'_>) -> Result<(), Refusal> {
        let presented_key = required(request, KEY_HEADER)?;
        let presented_code = required(request, CODE_HEADER)?;
        key::check_format(presented_key).map_err(Refusal::MalformedKey)?;
        let key_hash = KeyHash::of(presented_key);
        let code_ok = KeyHash::of(presented_code).ct_eq(&self.activation_code);
        // `Live` is Copy and written in one store: see `locks`.
        let live = *locks::read(&self.live);
        match live {
            Live::NoKey => Err(Refusal::NoKey),
            Live::Revoked(hash) if hash.ct_eq(&key_hash) => Err(Refusal::RevokedKey),
            Live::Revoked(_) => Err(Refusal::WrongKey),
            Live::Active(hash) if !hash.ct_eq(&key_hash) => Err(Refusal::WrongKey),
            Live::Active(_) if !code_ok => Err(Refusal::WrongActivationCode),
            Live::Active(_) => Ok(()),
        }
    }
}

/// The fingerprint of the key a request presented, if it presented one well-formed key: what
/// the refusal log may say about it.
pub fn presented_fingerprint(request: &Request<'_>) -> Option<Fingerprint> {
    match request.header(KEY_HEADER) {
        HeaderValue::One(key) => Fingerprint::of_presented(key),
        _ => None,
    }
}

fn required<'b>(request: &Request<'b>, name: &'static str) -> Result<&'b [u8], Refusal> {
    match request.header(name) {
        HeaderValue::Absent => Err(Refusal::Missing(name)),
        HeaderValue::Repeated => Err(Refusal::Repeated(name)),
        HeaderValue::One(v) if v.trim_ascii().is_empty() => Err(Refusal::Empty(name)),
        HeaderValue::One(v) => Ok(v),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::SystemTime;

    use ring::rand::SystemRandom;

    use super::*;
    use crate::config::Config;
    use crate::http::{Parsed, parse};
    use crate::key::ApiKey;

    fn gate_with(record: &KeyRecord) -> Gate {
        let config = Config::parse(
            Path::new("c.ron"),
            r#"(activation_code: "CODE", state_dir: "s", api: (listen: "127.0.0.1:1"), admin: (listen: "127.0.0.1:2"))"#,
        )
        .unwrap();
        Gate::new(&config.activation_code, record)
    }

    fn judge(gate: &Gate, extra: &str) -> Result<(), Refusal> {
        let bytes = format!("GET /x HTTP/1.1\r\nHost: h\r\n{extra}\r\n");
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let limits = crate::http::HttpLimits {
            max_header_bytes: 4096,
            max_headers: 16,
            max_body_bytes: 0,
            header_timeout: std::time::Duration::from_secs(1),
            idle_timeout: std::time::Duration::from_secs(1),
        };
        let Ok(Parsed::Complete(request, _)) = parse(bytes.as_bytes(), &mut headers, &limits)
        else {
            panic!("test request did not parse")
        };
        gate.check(&request)
    }

    #[test]
    fn each_refusal_has_its_reason_and_status() {
        let k = ApiKey::generate(&SystemRandom::new()).unwrap();
        let other = ApiKey::generate(&SystemRandom::new()).unwrap();
        let record = KeyRecord::default().generated(&k, SystemTime::now()).unwrap();
        let gate = gate_with(&record);
        let key = k.expose();
        let good = format!("x-api-key: {key}\r\nx-activation-code: CODE\r\n");
        assert_eq!(judge(&gate, &good), Ok(()));
        let cases = [
            ("x-activation-code: CODE\r\n".to_owned(), Refusal::Missing(KEY_HEADER), 400),
            (format!("x-api-key: {key}\r\n"), Refusal::Missing(CODE_HEADER), 400),
            (
                "x-api-key: \r\nx-activation-code: CODE\r\n".to_owned(),
                Refusal::Empty(KEY_HEADER),
                400,
            ),
            (format!("{good}x-api-key: {key}\r\n"), Refusal::Repeated(KEY_HEADER), 400),
            (
                format!("x-api-key: {key}x\r\nx-activation-code: CODE\r\n"),
                Refusal::MalformedKey(FormatError::Length),
                401,
            ),
            (
                format!("x-api-key: {}\r\nx-activation-code: CODE\r\n", other.expose()),
                Refusal::WrongKey,
                401,
            ),
            (
                format!("x-api-key: {key}\r\nx-activation-code: CODE2\r\n"),
                Refusal::WrongActivationCode,
                401,
            ),
        ];
        for (headers, refusal, status) in cases {
            assert_eq!(judge(&gate, &headers), Err(refusal), "{headers}");
            assert_eq!(refusal.status().0, status);
        }
    }

    #[test]
    fn a_switch_takes_effect_at_once() {
        let k = ApiKey::generate(&SystemRandom::new()).unwrap();
        let gate = gate_with(&KeyRecord::default());
        let headers = format!("x-api-key: {}\r\nx-activation-code: CODE\r\n", k.expose());
        assert_eq!(judge(&gate, &headers), Err(Refusal::NoKey));
        let active = KeyRecord::default().generated(&k, SystemTime::now()).unwrap();
        gate.switch(&active);
        assert_eq!(judge(&gate, &headers), Ok(()));
        gate.disable();
        assert_eq!(judge(&gate, &headers), Err(Refusal::RevokedKey));
        gate.switch(&active.revoked(SystemTime::now()).unwrap());
        assert_eq!(judge(&gate, &headers), Err(Refusal::RevokedKey));
    }

    #[test]
    fn every_401_tells_the_client_the_same() {
        let messages: Vec<_> =
            [Refusal::WrongKey, Refusal::NoKey, Refusal::RevokedKey, Refusal::WrongActivationCode]
                .iter()
                .map(|r| r.client_message())
                .collect();
        assert!(messages.windows(2).all(|w| w[0] == w[1]));
    }
}
