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

mod gate;

use std::fmt;
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use ring::rand::SystemRandom;

pub use gate::{CODE_HEADER, KEY_HEADER, Refusal, presented_fingerprint};

use crate::config::ActivationCode;
use crate::http::Request;
use crate::key::{ApiKey, Fingerprint, KeyError};
use crate::keystore::{Conflict, KeyRecord, KeyStore, StoreError};
use crate::locks;
use gate::Gate;

/// The key store, the record it holds, and the gate that enforces it.
pub struct KeyManager {
    state: Mutex<Keys>,
    gate: Gate,
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
    Random(KeyError),
    Store(StoreError),
    /// The key is refused from now on, but the store could not record it.
    RevokedInMemoryOnly(StoreError),
}

impl fmt::Display for ChangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Conflict(c) => c.fmt(f),
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

impl KeyManager {
    pub fn new(store: KeyStore, record: KeyRecord, activation_code: &ActivationCode) -> Self {
        Self {
            gate: Gate::new(activation_code, &record),
            state: Mutex::new(Keys { store, record, unwritten_revoke: None }),
            rng: SystemRandom::new(),
        }
    }

    /// Judges a request's credentials against the key in force.
    pub fn check(&self, request: &Request<'_>) -> Result<(), Refusal> {
        self.gate.check(request)
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

    pub fn generate(&self) -> Result<Installed, ChangeError> {
        self.install(KeyRecord::generated)
    }

    pub fn replace(&self) -> Result<Installed, ChangeError> {
        self.install(KeyRecord::replaced)
    }

    fn install(
        &self,
        next: fn(&KeyRecord, &ApiKey, SystemTime) -> Result<KeyRecord, Conflict>,
    ) -> Result<Installed, ChangeError> {
        let mut keys = self.lock();
        let key = ApiKey::generate(&self.rng).map_err(ChangeError::Random)?;
        let current = keys.effective();
        let previous = current.key.as_ref().map(|k| k.fingerprint.clone());
        let record = next(current, &key, SystemTime::now()).map_err(ChangeError::Conflict)?;
        keys.store.write(&record).map_err(ChangeError::Store)?;
        self.gate.switch(&record);
        keys.record = record.clone();
        keys.unwritten_revoke = None;
        Ok(Installed { key, record, previous })
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
