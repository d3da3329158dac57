//! The key's life: the store on disk and the live state the gate judges by, changed together.
//!
//! [`KeyManager`] owns both the [`KeyStore`] and the [`Gate`], so the rule that makes a key change
//! safe lives in one type: every change is serialized under one mutex; generate and replace write
//! the store durably, then switch the gate, then return (so the caller answers only once the new
//! key is both durable and in force); revoke disables the key in the gate first (fail closed),
//! then writes, then returns. So no request is admitted by a key after the response that replaced
//! or revoked it, and a failed write never leaves a key in force that the store does not know.
//!
//! Nothing else can switch the gate: its `switch` and `disable` are visible to this module only.
//!
//! The key's whole life is here: its expiry (and the configured longest lifetime), the grace
//! window in which a replaced key is still admitted, the retired keys a client may still
//! present (named in the refusal log, never admitted), who uses the key ([`usage`]), and the
//! record of a key seen in clear text.

mod gate;
pub mod usage;

use std::fmt;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use ring::rand::SystemRandom;

pub use gate::{Admitted, CODE_HEADER, KEY_HEADER, Refusal, presented_fingerprint};

use crate::config::ActivationCode;
use crate::http::Request;
use crate::key::{self, ApiKey, Fingerprint, FormatError, KeyError};
use crate::keystore::{Conflict, KeyRecord, KeyStore, RetiredKey, StoreError, Terms, rfc3339};
use crate::locks;
use gate::Gate;
use usage::{Exposure, KeyUsage, Usage};

/// The longest grace a replace may give the key it replaces.
pub const MAX_GRACE: Duration = Duration::from_secs(86_400);

/// What an operator asks of a new key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Asked {
    /// `None`: the configured longest lifetime, or no expiry without one.
    pub expires_in: Option<Duration>,
    /// Replace only: how long the replaced key stays valid (at most [`MAX_GRACE`]).
    pub grace: Duration,
}

/// The key store, the record it holds, and the gate that enforces it.
pub struct KeyManager {
    state: Mutex<Keys>,
    gate: Gate,
    usage: Usage,
    /// `key_max_lifetime_days`: every key expires within it.
    max_lifetime: Option<Duration>,
    rng: SystemRandom,
}

struct Keys {
    store: KeyStore,
    /// What the store file holds.
    record: KeyRecord,
    /// A revoke that is in force in memory but could not be written: the store still names
    /// the key as active, and another revoke retries the write.
    unwritten_revoke: Option<KeyRecord>,
}

impl Keys {
    /// The state in force: an unwritten revoke counts.
    fn effective(&self) -> &KeyRecord {
        self.unwritten_revoke.as_ref().unwrap_or(&self.record)
    }
}

/// A key just made, the record that now holds it, and the key it replaced.
pub struct Installed {
    pub key: ApiKey,
    pub record: KeyRecord,
    pub previous: Option<Fingerprint>,
}

/// Why a key change did not happen (or happened only in memory).
#[derive(Debug)]
pub enum ChangeError {
    Conflict(Conflict),
    /// The asked lifetime is longer than `key_max_lifetime_days` allows.
    LifetimeTooLong {
        asked: Duration,
        max: Duration,
    },
    GraceTooLong(Duration),
    Random(KeyError),
    Store(StoreError),
    /// The key is refused from now on, but the store could not record it.
    RevokedInMemoryOnly(StoreError),
}

impl fmt::Display for ChangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Conflict(c) => c.fmt(f),
            Self::LifetimeTooLong { asked, max } => write!(
                f,
                "expires_in_secs {} is longer than key_max_lifetime_days allows ({} days = {} \
                 seconds): ask for a shorter lifetime, or leave it out to get the longest",
                asked.as_secs(),
                max.as_secs() / 86_400,
                max.as_secs()
            ),
            Self::GraceTooLong(grace) => write!(
                f,
                "grace_secs {} is longer than the longest grace, {} seconds (24 hours)",
                grace.as_secs(),
                MAX_GRACE.as_secs()
            ),
            Self::Random(e) => e.fmt(f),
            Self::Store(e) => write!(f, "nothing changed: {e}"),
            Self::RevokedInMemoryOnly(e) => write!(
                f,
                "the key is refused from now on, but the store could not be updated ({e}): \
                 it would be accepted again after a restart; fix the cause and revoke again"
            ),
        }
    }
}

impl std::error::Error for ChangeError {}

/// What the admin port's key check says of a presented key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyCheck {
    Malformed(FormatError),
    /// The current key, in force.
    Live {
        fingerprint: Fingerprint,
        generation: u64,
        expires_at: Option<SystemTime>,
    },
    /// The replaced key, still admitted during its grace.
    Grace {
        fingerprint: Fingerprint,
        generation: u64,
        valid_until: SystemTime,
    },
    /// The current key, but revoked or expired; or a retired one.
    Retired(RetiredKey),
    /// Well-formed, and not a key this server knows.
    Unknown {
        fingerprint: Fingerprint,
    },
}

impl KeyManager {
    pub fn new(
        store: KeyStore,
        record: KeyRecord,
        activation_code: &ActivationCode,
        usage: Usage,
        max_lifetime: Option<Duration>,
    ) -> Self {
        usage.track(&tracked_keys(&record));
        Self {
            gate: Gate::new(activation_code, &record),
            state: Mutex::new(Keys { store, record, unwritten_revoke: None }),
            usage,
            max_lifetime,
            rng: SystemRandom::new(),
        }
    }

    /// Judges a request's credentials against the keys in force, and counts an admitted one
    /// against the key that admitted it.
    pub fn check(&self, request: &Request<'_>, from: IpAddr) -> Result<Admitted, Refusal> {
        let admitted = self.gate.check(request)?;
        self.usage.record(admitted.generation(), from);
        Ok(admitted)
    }

    fn lock(&self) -> MutexGuard<'_, Keys> {
        // Each field of `Keys` is replaced whole, after the store write it mirrors.
        locks::lock(&self.state)
    }

    /// The state in force, and whether the store agrees with it.
    pub fn status(&self) -> (KeyRecord, bool) {
        let keys = self.lock();
        (keys.effective().clone(), keys.unwritten_revoke.is_none())
    }

    pub fn record(&self) -> KeyRecord {
        self.lock().effective().clone()
    }

    /// Waits for a key change in progress to finish (at shutdown).
    pub fn quiesce(&self) {
        drop(self.lock());
    }

    /// How the key of `generation` has been used.
    pub fn usage_of(&self, generation: u64) -> KeyUsage {
        self.usage.of(generation)
    }

    /// The current or grace key's exposure in clear text, if one was seen.
    pub fn exposure(&self) -> Option<Exposure> {
        self.usage.exposure()
    }

    pub fn exposures_total(&self) -> u64 {
        self.usage.exposures_total()
    }

    /// Writes the usage file if it changed (the supervisor, once a minute, and at stop).
    pub fn save_usage(&self) -> Result<(), usage::SaveError> {
        self.usage.flush_log();
        self.usage.save()
    }

    /// Whether `presented` (a key read from a plain-HTTP request) is the current or grace key:
    /// if so, records the exposure and says which.
    pub fn note_exposure(&self, presented: &[u8], from: IpAddr) -> Option<(Admitted, Fingerprint)> {
        let admitted = self.gate.recognise(presented)?;
        let fingerprint = Fingerprint::of_presented(presented)?;
        let generation = admitted.generation();
        self.usage.exposed(Exposure { generation, at: SystemTime::now(), from });
        Some((admitted, fingerprint))
    }

    /// `aims_...wxyz (generation 3, replaced 2026-…)`: what the refusal log says of a retired
    /// key a client presented.
    pub fn describe_retired(&self, generation: u64) -> Option<String> {
        let keys = self.lock();
        let retired = keys.effective().retired.iter().find(|r| r.generation == generation)?;
        Some(format!(
            "{} (generation {}, {} {})",
            retired.fingerprint,
            retired.generation,
            retired.how.as_str(),
            rfc3339(retired.retired_at)
        ))
    }

    /// What `presented` is to this server. Never says more than the fingerprint of the key.
    pub fn check_key(&self, presented: &[u8]) -> KeyCheck {
        if let Err(e) = key::check_format(presented) {
            return KeyCheck::Malformed(e);
        }
        let Some(fingerprint) = Fingerprint::of_presented(presented) else {
            return KeyCheck::Malformed(FormatError::Length);
        };
        let record = self.record();
        let now = SystemTime::now();
        match self.gate.recognise(presented) {
            Some(Admitted::Current(generation)) => {
                let expires_at = record.key.as_ref().and_then(|k| k.expires_at);
                return KeyCheck::Live { fingerprint, generation, expires_at };
            }
            Some(Admitted::Grace(generation)) => {
                let valid_until = record.grace_at(now).map_or(now, |g| g.valid_until);
                return KeyCheck::Grace { fingerprint, generation, valid_until };
            }
            None => {}
        }
        let hash = crate::key::KeyHash::of(presented);
        if let Some(current) = record.key.as_ref().filter(|k| k.hash.ct_eq(&hash)) {
            // Revoked (also in the retired list) or past its expiry (not yet in it).
            let retired = record.retired.iter().find(|r| r.hash.ct_eq(&hash)).cloned();
            return KeyCheck::Retired(retired.unwrap_or(RetiredKey {
                hash,
                fingerprint,
                generation: current.generation,
                retired_at: current.expires_at.unwrap_or(now),
                how: crate::keystore::Retirement::Expired,
            }));
        }
        match record.retired.iter().find(|r| r.hash.ct_eq(&hash)) {
            Some(retired) => KeyCheck::Retired(retired.clone()),
            None => KeyCheck::Unknown { fingerprint },
        }
    }

    /// The key's expiry, if it is within `warn_within` and not yet past.
    pub fn expires_soon(&self, warn_within: Duration) -> Option<(Fingerprint, SystemTime)> {
        let record = self.record();
        let key =
            record.key.as_ref().filter(|_| record.state() == crate::keystore::KeyState::Active)?;
        let at = key.expires_at?;
        let left = at.duration_since(SystemTime::now()).ok()?;
        (left <= warn_within).then(|| (key.fingerprint.clone(), at))
    }

    pub fn generate(&self, asked: Asked) -> Result<Installed, ChangeError> {
        self.install(KeyRecord::generated, Asked { grace: Duration::ZERO, ..asked })
    }

    pub fn replace(&self, asked: Asked) -> Result<Installed, ChangeError> {
        self.install(KeyRecord::replaced, asked)
    }

    /// The terms of a new key made `now`, within the configured limits.
    fn terms(&self, asked: Asked, now: SystemTime) -> Result<Terms, ChangeError> {
        if asked.grace > MAX_GRACE {
            return Err(ChangeError::GraceTooLong(asked.grace));
        }
        let lifetime = match (asked.expires_in, self.max_lifetime) {
            (Some(asked), Some(max)) if asked > max => {
                return Err(ChangeError::LifetimeTooLong { asked, max });
            }
            (Some(asked), _) => Some(asked),
            (None, max) => max,
        };
        Ok(Terms { expires_at: lifetime.map(|l| now + l), grace: asked.grace })
    }

    fn install(
        &self,
        next: fn(&KeyRecord, &ApiKey, SystemTime, Terms) -> Result<KeyRecord, Conflict>,
        asked: Asked,
    ) -> Result<Installed, ChangeError> {
        let mut keys = self.lock();
        let now = SystemTime::now();
        let terms = self.terms(asked, now)?;
        let key = ApiKey::generate(&self.rng).map_err(ChangeError::Random)?;
        let current = keys.effective();
        // The key this one takes over from: the active (or expired) one, not a revoked one,
        // whose life ended with its revoke (docs/audit.md: `previous`).
        let previous =
            current.key.as_ref().filter(|k| k.revoked_at.is_none()).map(|k| k.fingerprint.clone());
        let record = next(current, &key, now, terms).map_err(ChangeError::Conflict)?;
        keys.store.write(&record).map_err(ChangeError::Store)?;
        self.gate.switch(&record);
        self.usage.track(&tracked_keys(&record));
        keys.record = record.clone();
        keys.unwritten_revoke = None;
        Ok(Installed { key, record, previous })
    }

    /// Ends the previous key's grace now: written, then switched, like a replace.
    pub fn end_grace(&self) -> Result<KeyRecord, ChangeError> {
        let mut keys = self.lock();
        let record =
            keys.effective().grace_ended(SystemTime::now()).map_err(ChangeError::Conflict)?;
        keys.store.write(&record).map_err(ChangeError::Store)?;
        self.gate.switch(&record);
        self.usage.track(&tracked_keys(&record));
        keys.record = record.clone();
        Ok(record)
    }

    pub fn revoke(&self) -> Result<KeyRecord, ChangeError> {
        let mut keys = self.lock();
        let record = match keys.unwritten_revoke.take() {
            Some(pending) => pending,
            None => keys.record.revoked(SystemTime::now()).map_err(ChangeError::Conflict)?,
        };
        self.gate.disable();
        match keys.store.write(&record) {
            Ok(()) => {
                self.gate.switch(&record);
                self.usage.track(&tracked_keys(&record));
                keys.record = record.clone();
                Ok(record)
            }
            Err(e) => {
                keys.unwritten_revoke = Some(record);
                Err(ChangeError::RevokedInMemoryOnly(e))
            }
        }
    }
}

/// The keys whose use is worth recording: the current one, and the grace key.
fn tracked_keys(record: &KeyRecord) -> Vec<(u64, Fingerprint)> {
    let current = record.key.as_ref().map(|k| (k.generation, k.fingerprint.clone()));
    let grace = record.previous.as_ref().map(|g| (g.generation, g.fingerprint.clone()));
    current.into_iter().chain(grace).collect()
}
