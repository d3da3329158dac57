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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use super::clock::{Deadline, Now};
use crate::config::ActivationCode;
use crate::http::{HeaderValue, Request, Status};
use crate::key::{self, Fingerprint, FormatError, KeyHash};
use crate::keystore::{KeyRecord, rfc3339};
use crate::locks;
use crate::metrics::Reason;

pub const KEY_HEADER: &str = "x-api-key";
pub const CODE_HEADER: &str = "x-activation-code";

/// The key state the gate judges by, never changed once made: a switch makes a new one, and a
/// worker keeps the one it has until the gate's version moves (see [`View`]). Deadlines are
/// kept on both clocks ([`Deadline`]): a key is refused once either says it passed.
#[derive(Debug, Default)]
pub(super) struct Live {
    current: Option<LiveKey>,
    grace: Option<LiveGrace>,
    /// Retired keys, with their generation and how the refusal log names them.
    retired: Vec<(KeyHash, u64, String)>,
}

#[derive(Debug, Clone, Copy)]
struct LiveKey {
    hash: KeyHash,
    generation: u64,
    revoked: bool,
    expires: Option<Deadline>,
}

#[derive(Debug, Clone, Copy)]
struct LiveGrace {
    hash: KeyHash,
    generation: u64,
    until: Deadline,
}

impl Live {
    /// `record`'s state, less the `condemned` generations (keys seen in clear text).
    fn of(record: &KeyRecord, condemned: &[u64], now: Now) -> Self {
        let live = Self {
            current: record.key.as_ref().map(|k| LiveKey {
                hash: k.hash,
                generation: k.generation,
                revoked: k.revoked_at.is_some(),
                expires: k.expires_at.map(|at| Deadline::at(at, now)),
            }),
            grace: record.previous.as_ref().map(|g| LiveGrace {
                hash: g.hash,
                generation: g.generation,
                until: Deadline::at(g.valid_until, now),
            }),
            retired: record
                .retired
                .iter()
                .map(|r| {
                    let named = format!(
                        "{} (generation {}, {} {})",
                        r.fingerprint,
                        r.generation,
                        r.how.as_str(),
                        rfc3339(r.retired_at)
                    );
                    (r.hash, r.generation, named)
                })
                .collect(),
        };
        condemned.iter().fold(live, |live, &generation| live.without(generation))
    }

    /// The same state with the key of `generation` no longer admitted.
    fn without(&self, generation: u64) -> Self {
        let current =
            self.current.map(|k| LiveKey { revoked: k.revoked || k.generation == generation, ..k });
        let grace = self.grace.filter(|g| g.generation != generation);
        Self { current, grace, retired: self.retired.clone() }
    }

    /// The same state with the current key revoked and no grace (a revoke, in memory).
    fn disabled(&self) -> Self {
        let current = self.current.map(|k| LiveKey { revoked: true, ..k });
        Self { current, grace: None, retired: self.retired.clone() }
    }

    /// Which valid key `hash` is at `now`, if any.
    fn recognise(&self, hash: &KeyHash, now: Now) -> Option<Admitted> {
        let current = self.current.filter(|k| {
            k.hash.ct_eq(hash) && !k.revoked && !k.expires.is_some_and(|at| at.passed(now))
        });
        let grace = self.grace.filter(|g| g.hash.ct_eq(hash) && !g.until.passed(now));
        match (current, grace) {
            (Some(k), _) => Some(Admitted::Current(k.generation)),
            (None, Some(g)) => Some(Admitted::Grace(g.generation)),
            (None, None) => None,
        }
    }

    /// Whether the key of `generation` is admitted at `now`.
    fn admits(&self, generation: u64, now: Now) -> bool {
        let current = self.current.is_some_and(|k| {
            k.generation == generation && !k.revoked && !k.expires.is_some_and(|at| at.passed(now))
        });
        current || self.grace.is_some_and(|g| g.generation == generation && !g.until.passed(now))
    }
}

/// A worker's own copy of the gate's state: judging a request reads it without a lock, and
/// only when the gate's version has moved (a key change) does the worker take the gate's read
/// lock once to fetch the new state.
pub(super) struct View {
    live: Arc<Live>,
    version: u64,
}

/// Which key admitted a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admitted {
    /// The current key, made at this generation.
    Current(u64),
    /// The replaced key, during its grace window.
    Grace(u64),
}

impl Admitted {
    pub fn generation(self) -> u64 {
        match self {
            Self::Current(g) | Self::Grace(g) => g,
        }
    }
}

pub struct Gate {
    activation_code: KeyHash,
    state: RwLock<Switched>,
    /// Moves (under the write lock) at every change of `state`, so a worker can tell that its
    /// [`View`] is stale from one atomic load.
    version: AtomicU64,
}

/// What the gate holds: the state in force, and the generations never to admit again in this
/// process (keys seen in clear text, refused from that instant, whatever a switch says).
struct Switched {
    live: Arc<Live>,
    condemned: Vec<u64>,
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
    /// The current key, past its expiry.
    ExpiredKey,
    /// One of the retired keys (replaced, revoked or expired), made at this generation.
    RetiredKey {
        generation: u64,
    },
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
            | Self::RevokedKey
            | Self::ExpiredKey
            | Self::RetiredKey { .. } => Status::UNAUTHORIZED,
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
            | Self::RevokedKey
            | Self::ExpiredKey
            | Self::RetiredKey { .. } => {
                "the API key or the activation code is not valid".to_owned()
            }
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
            Self::ExpiredKey => "expired key",
            Self::RetiredKey { .. } => "retired key",
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
            Refusal::ExpiredKey => Self::ExpiredKey,
            Refusal::RetiredKey { .. } => Self::RetiredKey,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl Gate {
    pub fn new(activation_code: &ActivationCode, record: &KeyRecord, now: Now) -> Self {
        let live = Arc::new(Live::of(record, &[], now));
        Self {
            activation_code: KeyHash::of(activation_code.as_str().as_bytes()),
            state: RwLock::new(Switched { live, condemned: Vec::new() }),
            version: AtomicU64::new(0),
        }
    }

    /// A worker's copy of the state in force.
    pub(super) fn view(&self) -> View {
        let state = locks::read(&self.state);
        View { live: Arc::clone(&state.live), version: self.version.load(Ordering::Acquire) }
    }

    /// Brings `view` up to date if the gate changed since it was taken.
    fn refresh(&self, view: &mut View) {
        if self.version.load(Ordering::Acquire) != view.version {
            *view = self.view();
        }
    }

    fn replace_live(&self, next: impl FnOnce(&Switched) -> Live) {
        let mut state = locks::write(&self.state);
        state.live = Arc::new(next(&state));
        self.version.fetch_add(1, Ordering::AcqRel);
    }

    /// Switches to `record`'s key state. Returns once every later [`Gate::check`] sees it.
    pub(super) fn switch(&self, record: &KeyRecord, now: Now) {
        self.replace_live(|state| Live::of(record, &state.condemned, now));
    }

    /// Revokes the current key and ends any grace in memory, without touching the store: the
    /// fail-closed half of a revoke, before its write.
    pub(super) fn disable(&self) {
        self.replace_live(|state| state.live.disabled());
    }

    /// Refuses the key of `generation` from now on, for the life of the process, whatever a
    /// later switch says (a key seen in clear text). Returns false if it already was.
    pub(super) fn condemn(&self, generation: u64) -> bool {
        let mut state = locks::write(&self.state);
        if state.condemned.contains(&generation) {
            return false;
        }
        state.condemned.push(generation);
        state.live = Arc::new(state.live.without(generation));
        self.version.fetch_add(1, Ordering::AcqRel);
        true
    }

    fn live(&self) -> Arc<Live> {
        Arc::clone(&locks::read(&self.state).live)
    }

    /// Judges a request's credentials at `now` (read after the request was read: a deadline
    /// that passed before it is past), against `view`, refreshed first if the gate changed.
    pub(super) fn check(
        &self,
        view: &mut View,
        request: &Request<'_>,
        now: Now,
    ) -> Result<Admitted, Refusal> {
        let presented_key = required(request, KEY_HEADER)?;
        let presented_code = required(request, CODE_HEADER)?;
        // The shape before any hashing; the checksum (a SHA-256 of its own) only for a key that
        // matches no hash below: one that matches was issued here, so its checksum is valid.
        key::check_shape(presented_key).map_err(Refusal::MalformedKey)?;
        let key_hash = KeyHash::of(presented_key);
        let code_ok = KeyHash::of(presented_code).ct_eq(&self.activation_code);
        self.refresh(view);
        let live = &view.live;
        let admitted = match (live.current, live.grace) {
            (Some(k), _) if k.hash.ct_eq(&key_hash) => {
                if k.revoked {
                    return Err(Refusal::RevokedKey);
                }
                if k.expires.is_some_and(|at| at.passed(now)) {
                    return Err(Refusal::ExpiredKey);
                }
                Admitted::Current(k.generation)
            }
            (_, Some(g)) if g.hash.ct_eq(&key_hash) && !g.until.passed(now) => {
                Admitted::Grace(g.generation)
            }
            (current, _) => {
                key::check_checksum(presented_key).map_err(Refusal::MalformedKey)?;
                // Every retired hash is compared (no early exit), so the time taken does not
                // say which one, if any, matched.
                let retired = live.retired.iter().fold(None, |found, (hash, generation, _)| {
                    if hash.ct_eq(&key_hash) { Some(*generation) } else { found }
                });
                return Err(match (current, retired) {
                    (_, Some(generation)) => Refusal::RetiredKey { generation },
                    (None, None) => Refusal::NoKey,
                    (Some(_), None) => Refusal::WrongKey,
                });
            }
        };
        if !code_ok {
            return Err(Refusal::WrongActivationCode);
        }
        Ok(admitted)
    }

    /// Which valid key `presented` is at `now`, if any, whatever came with it (for the
    /// plain-HTTP tripwire and the key check).
    pub fn recognise(&self, presented: &[u8], now: Now) -> Option<Admitted> {
        self.live().recognise(&KeyHash::of(presented), now)
    }

    /// Whether the key of `generation` is admitted at `now`.
    pub(super) fn admits(&self, generation: u64, now: Now) -> bool {
        self.live().admits(generation, now)
    }

    /// How the refusal log names the retired key of `generation`: read from the state in
    /// force, never from the store, so it never waits for a key change's write.
    pub(super) fn describe_retired(&self, generation: u64) -> Option<String> {
        let live = self.live();
        live.retired.iter().find(|(_, g, _)| *g == generation).map(|(_, _, named)| named.clone())
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
pub(super) mod tests {
    use std::path::Path;
    use std::time::{Duration, SystemTime};

    use ring::rand::SystemRandom;

    use super::super::clock::{Clock, SystemClock};

    use super::*;
    use crate::config::Config;
    use crate::http::{Parsed, parse};
    use crate::key::ApiKey;
    use crate::keystore::Terms;

    fn gate_with(record: &KeyRecord) -> Gate {
        let config = Config::parse(
            Path::new("c.ron"),
            r#"(activation_code: "CODE", state_dir: "s", api: (listen: "127.0.0.1:1"), admin: (listen: "127.0.0.1:2"))"#,
        )
        .unwrap();
        Gate::new(&config.activation_code, record, SystemClock.now())
    }

    fn judged(gate: &Gate, request: &Request<'_>) -> Result<Admitted, Refusal> {
        gate.check(&mut gate.view(), request, SystemClock.now())
    }

    /// Runs `judge` on a request carrying the `extra` header lines.
    pub(in crate::keys) fn with_request<T>(
        extra: &str,
        judge: impl FnOnce(&Request<'_>) -> T,
    ) -> T {
        let bytes = format!("GET /x HTTP/1.1\r\nHost: h\r\n{extra}\r\n");
        let mut headers = crate::http::HeaderTable::new();
        let limits = crate::http::HttpLimits {
            max_header_bytes: 4096,
            max_headers: 16,
            max_body_bytes: 0,
            header_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
        };
        let Ok(Parsed::Complete(request, _)) = parse(bytes.as_bytes(), &mut headers, &limits)
        else {
            panic!("test request did not parse")
        };
        judge(&request)
    }

    /// The headers of a request with `key` and the activation code `CODE`.
    pub(in crate::keys) fn credentials(key: &str) -> String {
        format!("x-api-key: {key}\r\nx-activation-code: CODE\r\n")
    }

    fn judge(gate: &Gate, extra: &str) -> Result<(), Refusal> {
        with_request(extra, |request| judged(gate, request).map(|_| ()))
    }

    fn admitted(gate: &Gate, key: &ApiKey) -> Result<Admitted, Refusal> {
        with_request(&credentials(key.expose()), |request| judged(gate, request))
    }

    #[test]
    fn the_grace_key_expired_keys_and_retired_keys_are_told_apart() {
        let rng = SystemRandom::new();
        let [a, b, c] = [(); 3].map(|()| ApiKey::generate(&rng).unwrap());
        let now = SystemTime::now();
        let first = KeyRecord::default().generated(&a, now, Terms::default()).unwrap();
        let grace = Terms { grace: Duration::from_secs(60), expires_at: None };
        let second = first.replaced(&b, now, grace).unwrap();
        let gate = gate_with(&second);
        assert_eq!(admitted(&gate, &a), Ok(Admitted::Grace(1)));
        assert_eq!(admitted(&gate, &b), Ok(Admitted::Current(2)));
        assert_eq!(
            gate.recognise(a.expose().as_bytes(), SystemClock.now()),
            Some(Admitted::Grace(1))
        );
        // A second replace ends the first grace: both earlier keys are retired.
        let third = second.replaced(&c, now, Terms::default()).unwrap();
        gate.switch(&third, SystemClock.now());
        assert_eq!(admitted(&gate, &a), Err(Refusal::RetiredKey { generation: 1 }));
        assert_eq!(admitted(&gate, &b), Err(Refusal::RetiredKey { generation: 2 }));
        assert_eq!(admitted(&gate, &c), Ok(Admitted::Current(3)));
        assert_eq!(gate.recognise(a.expose().as_bytes(), SystemClock.now()), None);
        // A key past its expiry.
        let past = now - Duration::from_secs(10);
        let expiring = Terms { expires_at: Some(now - Duration::from_secs(1)), ..Terms::default() };
        let expired = KeyRecord::default().generated(&a, past, expiring).unwrap();
        gate.switch(&expired, SystemClock.now());
        assert_eq!(admitted(&gate, &a), Err(Refusal::ExpiredKey));
        assert_eq!(admitted(&gate, &b), Err(Refusal::WrongKey));
        // A grace never outlives the replaced key's own expiry.
        let soon = Terms { expires_at: Some(now + Duration::from_secs(5)), ..Terms::default() };
        let short = KeyRecord::default().generated(&a, now, soon).unwrap();
        let rolled = short.replaced(&b, now, grace).unwrap();
        assert_eq!(rolled.previous.unwrap().valid_until, now + Duration::from_secs(5));
    }

    #[test]
    fn each_refusal_has_its_reason_and_status() {
        let k = ApiKey::generate(&SystemRandom::new()).unwrap();
        let other = ApiKey::generate(&SystemRandom::new()).unwrap();
        let record =
            KeyRecord::default().generated(&k, SystemTime::now(), Terms::default()).unwrap();
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
            // The live key with one checksum character changed: the shape is right, so it is
            // hashed, matches nothing, and only then is its checksum found wrong.
            (
                format!("x-api-key: {}\r\nx-activation-code: CODE\r\n", with_bad_checksum(key)),
                Refusal::MalformedKey(FormatError::Checksum),
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

    /// `key` with its last character (part of the checksum) changed to another base62 digit.
    fn with_bad_checksum(key: &str) -> String {
        let (body, last) = key.split_at(key.len() - 1);
        format!("{body}{}", if last == "0" { "1" } else { "0" })
    }

    #[test]
    fn a_switch_takes_effect_at_once() {
        let k = ApiKey::generate(&SystemRandom::new()).unwrap();
        let gate = gate_with(&KeyRecord::default());
        let headers = format!("x-api-key: {}\r\nx-activation-code: CODE\r\n", k.expose());
        assert_eq!(judge(&gate, &headers), Err(Refusal::NoKey));
        let active =
            KeyRecord::default().generated(&k, SystemTime::now(), Terms::default()).unwrap();
        gate.switch(&active, SystemClock.now());
        assert_eq!(judge(&gate, &headers), Ok(()));
        gate.disable();
        assert_eq!(judge(&gate, &headers), Err(Refusal::RevokedKey));
        gate.switch(&active.revoked(SystemTime::now()).unwrap(), SystemClock.now());
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
