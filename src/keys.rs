//! The key's life: the store on disk and the live state the gate judges by, changed together.
//!
//! [`KeyManager`] owns the [`KeyStore`], the [`Gate`] and the key's [`Usage`], so a key change
//! is one call that does everything, in one order: write the store durably, switch the gate,
//! tell usage which keys to count, write the audit line, tell systemd the new state. Changes
//! are serialized under one mutex, and the caller answers only once the new state is both
//! durable and in force. Revoke disables the key in the gate first (fail closed), then writes.
//! So no request is admitted by a key after the response that replaced or revoked it, and a
//! failed write never leaves a key in force that the store does not know, nor a store that
//! names a key its caller was never shown (a folder fsync that fails puts the old store back).
//!
//! The API workers never wait on that mutex, nor on a disk: each judges requests against its
//! own copy of the gate's state (refreshed when a change moves the gate's version) and counts
//! usage in its own shard ([`usage::Shard`]), both behind a lock of its own that only the
//! housekeeping thread ([`KeyManager::run_housekeeping`]) shares, to merge the shard about once
//! a second. A key seen in clear text with `on_key_exposure: revoke` is refused by the gate at
//! once, on the worker, and the durable revoke follows on the housekeeping thread.
//!
//! The key's whole life is here: its expiry (and the configured longest lifetime), judged on
//! two clocks ([`clock`]), the grace window in which a replaced key is still admitted, the
//! retired keys a client may still present (named in the refusal log, never admitted), who
//! uses the key ([`usage`]), the record of a key seen in clear text, and the key's record as
//! another appliance installs it ([`record`]).

mod clock;
mod gate;
pub mod record;
pub mod usage;

use std::collections::VecDeque;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use ring::rand::SystemRandom;

pub use clock::{Clock, ManualClock, Now, SystemClock};
pub use gate::{Admitted, CODE_HEADER, KEY_HEADER, Refusal, presented_fingerprint};

use crate::audit::{self, InstallOutcome, KeyAction, KeyOutcome, Peer};
use crate::config::ActivationCode;
use crate::durable::WriteError;
use crate::http::Request;
use crate::key::{self, ApiKey, Fingerprint, FormatError, KeyError};
use crate::keystore::{
    Conflict, KeyRecord, KeyState, KeyStore, RetiredKey, StoreError, Terms, rfc3339,
};
use crate::locks;
use crate::systemd;
use gate::{Gate, View};
use record::{Installation, RecordError};
use usage::{Exposure, KeyUsage, Shard, Usage};

/// The longest grace a replace may give the key it replaces.
pub const MAX_GRACE: Duration = Duration::from_secs(86_400);
/// How long before a key's expiry the daily warnings begin (and systemd's status says so).
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 86_400);
/// How often the housekeeping thread merges the workers' usage shards: the longest a new
/// address waits for its audit line, give or take a busy worker.
pub const MERGE_EVERY: Duration = Duration::from_secs(1);
/// Exposed keys whose durable revoke may wait at once. Each generation is queued once at most
/// (the gate condemns it once), and only a key change makes a generation: never reached.
const MAX_QUEUED: usize = 8;

/// What an operator asks of a new key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Asked {
    /// `None`: the configured longest lifetime, or no expiry without one.
    pub expires_in: Option<Duration>,
    /// Replace only: how long the replaced key stays valid (at most [`MAX_GRACE`]).
    pub grace: Duration,
}

/// The key store, the record it holds, the gate that enforces it, and who uses it.
pub struct KeyManager {
    changes: Mutex<Keys>,
    gate: Gate,
    usage: Usage,
    /// One per API worker, and a last one for any other caller.
    workers: Vec<Worker>,
    /// Durable revokes of exposed keys, for the housekeeping thread.
    queue: Queue,
    clock: Arc<dyn Clock>,
    /// `key_max_lifetime_days`: every key expires within it.
    max_lifetime: Option<Duration>,
    /// The activation code's digest as a key record names it.
    code_digest: String,
    rng: SystemRandom,
}

/// One API worker's view of the gate and its usage shard. Aligned so that two workers never
/// write the same cache line; the lock is only ever shared with the merge, for a moment.
#[repr(align(128))]
struct Worker(Mutex<WorkerState>);

struct WorkerState {
    view: View,
    usage: Shard,
}

struct Keys {
    store: KeyStore,
    /// What the store file holds.
    record: KeyRecord,
    /// A change in force in memory that could not be written (a revoke, or the end of an
    /// exposed key's grace): the store still holds `record`, and the next change retries.
    unwritten: Option<KeyRecord>,
}

impl Keys {
    /// The state in force: an unwritten change counts.
    fn effective(&self) -> &KeyRecord {
        self.unwritten.as_ref().unwrap_or(&self.record)
    }
}

#[derive(Default)]
struct Queue {
    jobs: Mutex<Pending>,
    wake: Condvar,
}

#[derive(Default)]
struct Pending {
    exposed: VecDeque<Admitted>,
    stop: bool,
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
    /// A key record from another appliance that this one must not install.
    Record(RecordError),
}

impl ChangeError {
    /// The one mapping from a failed change to its audit outcome.
    fn outcome(&self) -> KeyOutcome<'_> {
        match self {
            Self::Conflict(_) | Self::Record(RecordError::Rollback { .. }) => KeyOutcome::Conflict,
            Self::Record(RecordError::Diverged { .. }) => KeyOutcome::Conflict,
            Self::LifetimeTooLong { .. } | Self::GraceTooLong(_) | Self::Record(_) => {
                KeyOutcome::Refused(self)
            }
            Self::Random(cause) => KeyOutcome::Failed(cause),
            Self::Store(cause) => KeyOutcome::Failed(cause),
            Self::RevokedInMemoryOnly(cause) => KeyOutcome::MemoryOnly(cause),
        }
    }
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
            Self::Record(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ChangeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Random(e) => Some(e),
            Self::Store(e) | Self::RevokedInMemoryOnly(e) => Some(e),
            Self::Record(e) => Some(e),
            Self::Conflict(_) | Self::LifetimeTooLong { .. } | Self::GraceTooLong(_) => None,
        }
    }
}

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
    /// The manager of `store` (which holds `record`), for `workers` API workers, reading the
    /// time from `clock` ([`SystemClock`] but in tests).
    pub fn new(
        store: KeyStore,
        record: KeyRecord,
        activation_code: &ActivationCode,
        usage: Usage,
        max_lifetime: Option<Duration>,
        workers: usize,
        clock: impl Clock + 'static,
    ) -> Self {
        let clock: Arc<dyn Clock> = Arc::new(clock);
        usage.track(&tracked_keys(&record));
        let gate = Gate::new(activation_code, &record, clock.now());
        let workers = (0..=workers)
            .map(|_| Worker(Mutex::new(WorkerState { view: gate.view(), usage: Shard::default() })))
            .collect();
        Self {
            gate,
            changes: Mutex::new(Keys { store, record, unwritten: None }),
            usage,
            workers,
            queue: Queue::default(),
            clock,
            max_lifetime,
            code_digest: record::code_digest(activation_code),
            rng: SystemRandom::new(),
        }
    }

    fn worker(&self, id: usize) -> MutexGuard<'_, WorkerState> {
        // The last slot takes any caller that is not an API worker (never one in the server).
        let slot = self.workers.get(id).or(self.workers.last());
        match slot {
            Some(Worker(state)) => locks::lock(state),
            // `new` makes at least one slot.
            None => unreachable!("a key manager has at least one worker slot"),
        }
    }

    /// Judges a request's credentials against the keys in force, for API worker `worker`, and
    /// counts an admitted one against the key that admitted it in that worker's shard.
    pub fn check(
        &self,
        worker: usize,
        request: &Request<'_>,
        from: IpAddr,
    ) -> Result<Admitted, Refusal> {
        let now = self.clock.now();
        let mut state = self.worker(worker);
        let WorkerState { view, usage } = &mut *state;
        let admitted = self.gate.check(view, request, now)?;
        usage.record(admitted.generation(), from, now.wall);
        Ok(admitted)
    }

    /// [`KeyManager::check`] without counting usage: the micro-benchmark's baseline.
    #[doc(hidden)]
    pub fn judge(&self, worker: usize, request: &Request<'_>) -> Result<Admitted, Refusal> {
        let now = self.clock.now();
        self.gate.check(&mut self.worker(worker).view, request, now)
    }

    fn lock(&self) -> MutexGuard<'_, Keys> {
        // Each field of `Keys` is replaced whole, after the store write it mirrors.
        locks::lock(&self.changes)
    }

    /// The state in force, and whether the store agrees with it.
    pub fn status(&self) -> (KeyRecord, bool) {
        let keys = self.lock();
        (keys.effective().clone(), keys.unwritten.is_none())
    }

    pub fn record(&self) -> KeyRecord {
        self.lock().effective().clone()
    }

    /// One line for `systemctl status`.
    pub fn status_line(&self) -> String {
        KeySummary(&self.record(), self.clock.now().wall).to_string()
    }

    /// Tells systemd the key's state (a key change does it itself; the daily expiry warning
    /// calls this, as the days left change).
    pub fn announce(&self) {
        systemd::status(&self.status_line());
    }

    /// How the key of `generation` has been used, up to now: the workers' shards are merged
    /// first (a moment's lock on each, on the caller's thread: the admin port's).
    pub fn usage_of(&self, generation: u64) -> KeyUsage {
        self.merge_usage();
        self.usage.of(generation)
    }

    /// The exposure in clear text of a key still admitted, if one was seen.
    pub fn exposure(&self) -> Option<Exposure> {
        let now = self.clock.now();
        self.usage.exposure().filter(|e| self.gate.admits(e.generation, now))
    }

    pub fn exposures_total(&self) -> u64 {
        self.usage.exposures_total()
    }

    /// Merges every worker's usage shard into the table, and forgets an exposure whose key is
    /// no longer admitted.
    pub fn merge_usage(&self) {
        for worker in &self.workers {
            let Worker(state) = worker;
            let shard = std::mem::take(&mut locks::lock(state).usage);
            self.usage.merge(shard);
        }
        let now = self.clock.now();
        self.usage.forget_exposure_unless(|generation| self.gate.admits(generation, now));
    }

    /// Writes the usage file if it changed (the supervisor, once a minute, and at stop).
    pub fn save_usage(&self) -> Result<(), usage::SaveError> {
        self.merge_usage();
        self.usage.flush_log();
        self.usage.save()
    }

    /// Whether `presented` (a key read from a plain-HTTP request) is the current or grace key:
    /// if so, records the exposure and says which. With `revoke`, the gate refuses that key
    /// from this instant on, and its durable revoke is queued for the housekeeping thread:
    /// the caller, an API worker, never waits for the disk.
    pub fn note_exposure(
        &self,
        presented: &[u8],
        from: IpAddr,
        revoke: bool,
    ) -> Option<(Admitted, Fingerprint)> {
        let now = self.clock.now();
        let admitted = self.gate.recognise(presented, now)?;
        let fingerprint = Fingerprint::of_presented(presented)?;
        let generation = admitted.generation();
        self.usage.exposed(Exposure { generation, at: now.wall, from });
        if revoke && self.gate.condemn(generation) {
            let mut pending = locks::lock(&self.queue.jobs);
            if pending.exposed.len() < MAX_QUEUED {
                pending.exposed.push_back(admitted);
                self.queue.wake.notify_one();
            } else {
                log::error!(
                    "key exposure: {fingerprint} is refused until restart, but its revoke could \
                     not be queued for the store: revoke it (aims-api key revoke)"
                );
            }
        }
        Some((admitted, fingerprint))
    }

    /// The housekeeping thread's loop, until [`KeyManager::stop_housekeeping`]: the durable
    /// half of exposure revokes as they come, and the usage merge every [`MERGE_EVERY`].
    pub fn run_housekeeping(&self) {
        loop {
            let job = {
                let mut pending = locks::lock(&self.queue.jobs);
                if pending.exposed.is_empty() && !pending.stop {
                    pending = match self.queue.wake.wait_timeout(pending, MERGE_EVERY) {
                        Ok((guard, _)) => guard,
                        Err(poisoned) => poisoned.into_inner().0,
                    };
                }
                if pending.stop {
                    return;
                }
                pending.exposed.pop_front()
            };
            match job {
                Some(admitted) => self.persist_exposure(admitted),
                None => self.merge_usage(),
            }
        }
    }

    /// Ends [`KeyManager::run_housekeeping`] (at shutdown; [`KeyManager::quiesce`] then does
    /// what it left).
    pub fn stop_housekeeping(&self) {
        locks::lock(&self.queue.jobs).stop = true;
        self.queue.wake.notify_all();
    }

    /// Finishes the queued durable revokes and waits for a key change in progress (at
    /// shutdown, after the housekeeping thread stopped).
    pub fn quiesce(&self) {
        loop {
            let job = locks::lock(&self.queue.jobs).exposed.pop_front();
            match job {
                Some(admitted) => self.persist_exposure(admitted),
                None => break,
            }
        }
        drop(self.lock());
    }

    /// The durable half of an exposed key's revoke (or of the end of its grace): the gate
    /// refuses it already. Nothing to write if a change since made it no longer admitted.
    fn persist_exposure(&self, admitted: Admitted) {
        let mut keys = self.lock();
        let now = self.clock.now();
        let base = keys.effective();
        let (action, next) = match admitted {
            Admitted::Current(generation)
                if base.key.as_ref().is_some_and(|k| k.generation == generation) =>
            {
                (KeyAction::Revoke, base.revoked(now.wall))
            }
            Admitted::Grace(generation)
                if base.previous.as_ref().is_some_and(|g| g.generation == generation) =>
            {
                (KeyAction::EndGrace, base.grace_ended(now.wall))
            }
            _ => return,
        };
        // A conflict: no longer active, or its grace already over: nothing left to write.
        let Ok(next) = next else { return };
        let outcome = self.write_revoke(&mut keys, next, now);
        self.announce_change(&keys, action, Peer::Server, outcome.as_ref().map(|_| None));
    }

    /// What the refusal log says of a retired key a client presented: `aims_...wxyz
    /// (generation 3, replaced 2026-…)`. Read from the gate's state, never waits for a change.
    pub fn describe_retired(&self, generation: u64) -> Option<String> {
        self.gate.describe_retired(generation)
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
        let now = self.clock.now();
        match self.gate.recognise(presented, now) {
            Some(Admitted::Current(generation)) => {
                let expires_at = record.key.as_ref().and_then(|k| k.expires_at);
                return KeyCheck::Live { fingerprint, generation, expires_at };
            }
            Some(Admitted::Grace(generation)) => {
                let valid_until = record.grace_at(now.wall).map_or(now.wall, |g| g.valid_until);
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
                retired_at: current.expires_at.unwrap_or(now.wall),
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
        let now = self.clock.now().wall;
        let key = record.key.as_ref().filter(|_| record.state_at(now) == KeyState::Active)?;
        let at = key.expires_at?;
        let left = at.duration_since(now).ok()?;
        (left <= warn_within).then(|| (key.fingerprint.clone(), at))
    }

    pub fn generate(&self, asked: Asked, by: Peer) -> Result<Installed, ChangeError> {
        let asked = Asked { grace: Duration::ZERO, ..asked };
        self.install_new(KeyAction::Generate, KeyRecord::generated, asked, by)
    }

    pub fn replace(&self, asked: Asked, by: Peer) -> Result<Installed, ChangeError> {
        self.install_new(KeyAction::Replace, KeyRecord::replaced, asked, by)
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

    fn install_new(
        &self,
        action: KeyAction,
        next: fn(&KeyRecord, &ApiKey, SystemTime, Terms) -> Result<KeyRecord, Conflict>,
        asked: Asked,
        by: Peer,
    ) -> Result<Installed, ChangeError> {
        let mut keys = self.lock();
        let now = self.clock.now();
        let made = self.make_key(&keys, next, asked, now);
        let outcome = match made {
            Ok((key, record, previous)) => {
                self.commit(&mut keys, &record, now).map(|()| Installed { key, record, previous })
            }
            Err(e) => Err(e),
        };
        let previous = outcome.as_ref().map(|installed| installed.previous.as_ref());
        self.announce_change(&keys, action, by, previous);
        outcome
    }

    /// A new key and the record that would hold it, and the key it takes over from: the
    /// active (or expired) one, not a revoked one, whose life ended with its revoke
    /// (docs/audit.md: `previous`).
    fn make_key(
        &self,
        keys: &Keys,
        next: fn(&KeyRecord, &ApiKey, SystemTime, Terms) -> Result<KeyRecord, Conflict>,
        asked: Asked,
        now: Now,
    ) -> Result<(ApiKey, KeyRecord, Option<Fingerprint>), ChangeError> {
        let terms = self.terms(asked, now.wall)?;
        let key = ApiKey::generate(&self.rng).map_err(ChangeError::Random)?;
        let current = keys.effective();
        let previous =
            current.key.as_ref().filter(|k| k.revoked_at.is_none()).map(|k| k.fingerprint.clone());
        let record = next(current, &key, now.wall, terms).map_err(ChangeError::Conflict)?;
        Ok((key, record, previous))
    }

    /// Ends the previous key's grace now: written, then switched, like a replace.
    pub fn end_grace(&self, by: Peer) -> Result<KeyRecord, ChangeError> {
        let mut keys = self.lock();
        let now = self.clock.now();
        let outcome = keys
            .effective()
            .grace_ended(now.wall)
            .map_err(ChangeError::Conflict)
            .and_then(|record| self.commit(&mut keys, &record, now).map(|()| record));
        self.announce_change(&keys, KeyAction::EndGrace, by, outcome.as_ref().map(|_| None));
        outcome
    }

    pub fn revoke(&self, by: Peer) -> Result<KeyRecord, ChangeError> {
        let mut keys = self.lock();
        let now = self.clock.now();
        let base = keys.effective();
        // A revoke in force but unwritten is written again; otherwise the active key's.
        let next = match &keys.unwritten {
            Some(pending) if pending.key.as_ref().is_some_and(|k| k.revoked_at.is_some()) => {
                Ok(pending.clone())
            }
            _ => base.revoked(now.wall).map_err(ChangeError::Conflict),
        };
        let outcome = next.and_then(|next| self.write_revoke(&mut keys, next, now));
        self.announce_change(&keys, KeyAction::Revoke, by, outcome.as_ref().map(|_| None));
        outcome
    }

    /// The state in force as a key record for another appliance (`GET /key/record`).
    pub fn export_record(&self) -> String {
        record::export(&self.record(), &self.code_digest)
    }

    /// Installs `offered`, a key record exported by another appliance (see [`record`]).
    pub fn install_record(
        &self,
        offered: record::Offered,
        by: Peer,
    ) -> Result<(KeyRecord, Installation), ChangeError> {
        let mut keys = self.lock();
        let now = self.clock.now();
        let previous_generation = keys.effective().generation;
        let outcome = record::decide(&self.code_digest, keys.effective(), &offered)
            .map_err(ChangeError::Record)
            .and_then(|installation| match installation {
                Installation::Unchanged => Ok((offered.record.clone(), installation)),
                _ => self
                    .commit(&mut keys, &offered.record, now)
                    .map(|()| (offered.record.clone(), installation)),
            });
        let result = match &outcome {
            Ok((_, Installation::Unchanged)) => InstallOutcome::Unchanged,
            Ok((_, Installation::Installed)) => InstallOutcome::Installed { forced: false },
            Ok((_, Installation::Forced)) => InstallOutcome::Installed { forced: true },
            Err(e) => InstallOutcome::Not(e.outcome()),
        };
        audit::key_install(by, previous_generation, keys.effective(), result).emit();
        if matches!(outcome, Ok((_, Installation::Installed | Installation::Forced))) {
            systemd::status(&KeySummary(keys.effective(), now.wall).to_string());
        }
        outcome
    }

    /// Makes `record` the state: the store write, then the gate switch and the keys usage
    /// counts. The caller writes the audit line and tells systemd ([`Self::announce_change`]).
    fn commit(&self, keys: &mut Keys, record: &KeyRecord, now: Now) -> Result<(), ChangeError> {
        self.write(keys, record).map_err(ChangeError::Store)?;
        self.gate.switch(record, now);
        self.usage.track(&tracked_keys(record));
        keys.record = record.clone();
        keys.unwritten = None;
        Ok(())
    }

    /// A revoke (or the end of an exposed key's grace): the gate refuses first, then the store
    /// is written; a write that fails leaves it in force in memory only.
    fn write_revoke(
        &self,
        keys: &mut Keys,
        record: KeyRecord,
        now: Now,
    ) -> Result<KeyRecord, ChangeError> {
        let revoking = record.key.as_ref().is_some_and(|k| k.revoked_at.is_some());
        if revoking {
            self.gate.disable();
        }
        match self.write(keys, &record) {
            Ok(()) => {
                self.gate.switch(&record, now);
                self.usage.track(&tracked_keys(&record));
                keys.record = record.clone();
                keys.unwritten = None;
                Ok(record)
            }
            Err(e) => {
                if !revoking {
                    // The end of a grace: refused in memory, like a revoke.
                    self.gate.switch(&record, now);
                }
                keys.unwritten = Some(record);
                Err(ChangeError::RevokedInMemoryOnly(e))
            }
        }
    }

    /// Writes `record` to the store. When only the folder's fsync failed, the new file is in
    /// place but could vanish at a power loss: the change is refused, so the old record is put
    /// back, and the store never names a key its caller was not given.
    fn write(&self, keys: &Keys, record: &KeyRecord) -> Result<(), StoreError> {
        match keys.store.write(record) {
            Err(StoreError::Write(WriteError::NotDurable { path, source })) => {
                if let Err(again) = keys.store.write(&keys.record) {
                    log::error!(
                        "{}: a key change failed after its new record was in place, and the \
                         old record could not be put back ({again}): the store may hold either \
                         until the next change; check the disk and run aims-api key status",
                        path.display()
                    );
                }
                Err(StoreError::Write(WriteError::NotDurable { path, source }))
            }
            other => other,
        }
    }

    /// The audit line of a change (done, when `done` holds the key it replaced, if any) and
    /// systemd's status, after it.
    fn announce_change(
        &self,
        keys: &Keys,
        action: KeyAction,
        by: Peer,
        done: Result<Option<&Fingerprint>, &ChangeError>,
    ) {
        let in_force = keys.effective();
        let outcome = match &done {
            Ok(previous) => KeyOutcome::Done { previous: *previous },
            Err(e) => e.outcome(),
        };
        audit::key_change(action, by, in_force, outcome).emit();
        if done.is_ok() || keys.unwritten.is_some() {
            systemd::status(&KeySummary(in_force, self.clock.now().wall).to_string());
        }
    }
}

/// The keys whose use is worth recording: the current one, and the grace key.
fn tracked_keys(record: &KeyRecord) -> Vec<(u64, Fingerprint)> {
    let current = record.key.as_ref().map(|k| (k.generation, k.fingerprint.clone()));
    let grace = record.previous.as_ref().map(|g| (g.generation, g.fingerprint.clone()));
    current.into_iter().chain(grace).collect()
}

/// The key's state in one line, for `systemctl status`.
struct KeySummary<'a>(&'a KeyRecord, SystemTime);

impl fmt::Display for KeySummary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (record, now) = (self.0, self.1);
        write!(f, "key {}", record.state_at(now).as_str())?;
        if let Some(key) = &record.key {
            write!(f, " ({}, generation {}", key.fingerprint, record.generation)?;
            let left = key.expires_at.and_then(|at| at.duration_since(now).ok());
            match left {
                Some(left) if left <= EXPIRY_WARNING && key.revoked_at.is_none() => {
                    write!(f, ", EXPIRES in {} days", left.as_secs() / 86_400)?;
                }
                _ => {}
            }
            f.write_str(")")?;
        }
        if let Some(grace) = record.grace_at(now) {
            write!(
                f,
                "; previous {} valid until {}",
                grace.fingerprint,
                rfc3339(grace.valid_until)
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::path::Path;

    use super::*;
    use crate::config::Config;
    use crate::durable::{Disk, Faults, Step};
    use crate::keystore::peek;

    /// Fails one step of the next durable write that reaches it, once.
    #[derive(Default)]
    struct OneFault {
        armed: Mutex<Option<(Step, i32)>>,
    }

    impl OneFault {
        fn arm(&self, step: Step, errno: i32) {
            *locks::lock(&self.armed) = Some((step, errno));
        }

        fn fired(&self) -> bool {
            locks::lock(&self.armed).is_none()
        }
    }

    impl Faults for OneFault {
        fn before(&self, step: Step, _target: &Path) -> io::Result<()> {
            let mut armed = locks::lock(&self.armed);
            match *armed {
                Some((at, errno)) if at == step => {
                    *armed = None;
                    Err(io::Error::from_raw_os_error(errno))
                }
                _ => Ok(()),
            }
        }
    }

    fn code() -> ActivationCode {
        let text = r#"(activation_code: "CODE", state_dir: "s", api: (listen: "127.0.0.1:1"), admin: (listen: "127.0.0.1:2"))"#;
        Config::parse(Path::new("c.ron"), text).unwrap().activation_code
    }

    struct Fixture {
        dir: tempfile::TempDir,
        faults: Arc<OneFault>,
        clock: Arc<ManualClock>,
        keys: KeyManager,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let faults = Arc::new(OneFault::default());
        let disk = Disk::with_faults(Arc::clone(&faults) as Arc<dyn Faults>);
        let (store, record) = KeyStore::open_on(dir.path(), disk.clone()).unwrap();
        let usage = Usage::load_on(
            dir.path(),
            disk,
            Arc::new(crate::refusals::RefusalLog::new(Duration::from_secs(10), 20)),
        );
        let clock = Arc::new(ManualClock::new());
        let keys = KeyManager::new(store, record, &code(), usage, None, 2, Arc::clone(&clock));
        Fixture { dir, faults, clock, keys }
    }

    /// What the gate says of `key` on worker 0.
    fn judge(keys: &KeyManager, key: &str) -> Result<Admitted, Refusal> {
        let from = IpAddr::from([127, 0, 0, 1]);
        gate::tests::with_request(&gate::tests::credentials(key), |request| {
            keys.check(0, request, from)
        })
    }

    fn leftovers(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|name| crate::durable::is_temp_name(name))
            .collect()
    }

    type Change = fn(&KeyManager) -> Result<KeyRecord, ChangeError>;

    /// Every durable write of a key change, failed at each step with each error: a failed
    /// change leaves the store, the gate and the answers as they were (a revoke stays in force
    /// in memory, and says so), and the same change, retried, is kept as acknowledged.
    #[test]
    fn a_fault_at_any_step_of_any_key_change_leaves_the_old_state_or_the_acknowledged_one() {
        let by = Peer::Server;
        let changes: [(&str, Change); 5] = [
            ("generate", |k| k.generate(Asked::default(), Peer::Server).map(|i| i.record)),
            ("replace", |k| {
                let asked = Asked { grace: Duration::from_secs(60), ..Asked::default() };
                k.replace(asked, Peer::Server).map(|i| i.record)
            }),
            ("revoke", |k| k.revoke(Peer::Server)),
            ("end_grace", |k| k.end_grace(Peer::Server)),
            ("install_record", |k| {
                // A record one generation ahead, as the other appliance of a pair would send.
                let rng = SystemRandom::new();
                let key = ApiKey::generate(&rng).unwrap();
                let ahead = k.record().replaced(&key, SystemTime::now(), Terms::default()).unwrap();
                let text = record::export(&ahead, &record::code_digest(&code()));
                let offered = record::parse(text.as_bytes()).unwrap();
                k.install_record(offered, Peer::Server).map(|(r, _)| r)
            }),
        ];
        let mut tried = 0;
        for (name, change) in changes {
            for step in Step::ALL {
                for errno in [28 /* ENOSPC */, 5 /* EIO */] {
                    let f = fixture();
                    // The state each change starts from: a key, replaced with a grace (none for
                    // generate, which needs no active key).
                    let first = f.keys.generate(Asked::default(), by).unwrap();
                    let asked = Asked { grace: Duration::from_secs(600), ..Asked::default() };
                    let live = f.keys.replace(asked, by).unwrap();
                    if name == "generate" {
                        f.keys.revoke(by).unwrap();
                    }
                    let before = f.keys.record();
                    let verdicts = |k: &KeyManager| {
                        [first.key.expose(), live.key.expose()].map(|key| judge(k, key))
                    };
                    let judged_before = verdicts(&f.keys);
                    f.faults.arm(step, errno);
                    let failed = change(&f.keys);
                    let at = format!("{name} with errno {errno} at {step:?}");
                    assert!(f.faults.fired(), "{at}: the fault was not reached");
                    let err = failed.expect_err(&at);
                    tried += 1;
                    assert_eq!(peek(f.dir.path()).unwrap(), before, "{at}: the store changed");
                    assert_eq!(leftovers(f.dir.path()), Vec::<String>::new(), "{at}");
                    if name == "revoke" {
                        // Fail closed: refused at once, and said to be unwritten.
                        assert!(matches!(err, ChangeError::RevokedInMemoryOnly(_)), "{at}");
                        assert!(!f.keys.status().1, "{at}");
                        assert_eq!(judge(&f.keys, live.key.expose()), Err(Refusal::RevokedKey));
                    } else {
                        assert!(matches!(err, ChangeError::Store(_)), "{at}: {err}");
                        assert_eq!(f.keys.status(), (before.clone(), true), "{at}");
                        assert_eq!(verdicts(&f.keys), judged_before, "{at}");
                    }
                    // Retried without the fault: acknowledged, and kept.
                    let done = change(&f.keys).unwrap_or_else(|e| panic!("{at}, retried: {e}"));
                    assert_eq!(peek(f.dir.path()).unwrap(), done, "{at}: not kept");
                    assert_eq!(f.keys.status(), (done, true), "{at}");
                    assert_eq!(leftovers(f.dir.path()), Vec::<String>::new(), "{at}");
                }
            }
        }
        assert_eq!(tried, 5 * 5 * 2);
    }

    /// The same for the usage file: a failed save keeps the old file whole, leaves nothing
    /// behind, and the next save writes what the failed one could not.
    #[test]
    fn a_fault_at_any_step_of_a_usage_save_keeps_the_old_file() {
        let mut tried = 0;
        for step in Step::ALL {
            for errno in [28, 5] {
                let f = fixture();
                let key = f.keys.generate(Asked::default(), Peer::Server).unwrap().key;
                judge(&f.keys, key.expose()).unwrap();
                f.keys.save_usage().unwrap();
                let path = f.dir.path().join("usage.ron");
                let old = std::fs::read(&path).unwrap();
                judge(&f.keys, key.expose()).unwrap();
                f.faults.arm(step, errno);
                assert!(f.keys.save_usage().is_err(), "{step:?} {errno}");
                tried += 1;
                let now = std::fs::read_to_string(&path).unwrap();
                if step == Step::FolderFsync {
                    // In place, whole, not yet known durable: saved again next time.
                    assert!(now.contains("admitted: 2"), "{now}");
                } else {
                    assert_eq!(now.as_bytes(), old, "{step:?} {errno}");
                }
                assert_eq!(leftovers(f.dir.path()), Vec::<String>::new());
                f.keys.save_usage().unwrap();
                let saved = std::fs::read_to_string(&path).unwrap();
                assert!(saved.contains("admitted: 2"), "{saved}");
            }
        }
        assert_eq!(tried, 10);
    }

    #[test]
    fn a_deadline_passed_on_the_wall_clock_refuses_at_once_without_the_monotonic_clock() {
        let f = fixture();
        let asked = Asked { expires_in: Some(Duration::from_secs(60)), ..Asked::default() };
        let key = f.keys.generate(asked, Peer::Server).unwrap().key;
        assert!(judge(&f.keys, key.expose()).is_ok());
        // A suspended host: the wall clock moved past the expiry, the monotonic one did not.
        f.clock.advance_wall(Duration::from_secs(61));
        assert_eq!(judge(&f.keys, key.expose()), Err(Refusal::ExpiredKey));
        // A clock stepped back does not bring it back once the monotonic clock is there too.
        f.clock.rewind_wall(Duration::from_secs(3600));
        f.clock.advance_monotonic(Duration::from_secs(61));
        assert_eq!(judge(&f.keys, key.expose()), Err(Refusal::ExpiredKey));
        // The same for a grace.
        let g = fixture();
        let old = g.keys.generate(Asked::default(), Peer::Server).unwrap().key;
        let asked = Asked { grace: Duration::from_secs(30), ..Asked::default() };
        g.keys.replace(asked, Peer::Server).unwrap();
        assert_eq!(judge(&g.keys, old.expose()), Ok(Admitted::Grace(1)));
        g.clock.advance_wall(Duration::from_secs(31));
        assert!(judge(&g.keys, old.expose()).is_err());
    }

    #[test]
    fn an_exposed_key_is_refused_at_once_and_its_revoke_written_off_the_worker() {
        let f = fixture();
        let key = f.keys.generate(Asked::default(), Peer::Server).unwrap().key;
        let from = IpAddr::from([127, 0, 0, 9]);
        // The write will fail: the key must stay refused, and the store say so.
        f.faults.arm(Step::Fsync, 5);
        let (admitted, _) = f.keys.note_exposure(key.expose().as_bytes(), from, true).unwrap();
        assert_eq!(admitted, Admitted::Current(1));
        assert_eq!(judge(&f.keys, key.expose()), Err(Refusal::RevokedKey), "refused at once");
        assert!(!f.faults.fired(), "nothing was written on the caller's thread");
        assert_eq!(peek(f.dir.path()).unwrap().state(), KeyState::Active);
        f.keys.quiesce();
        assert!(f.faults.fired());
        assert!(!f.keys.status().1, "the revoke is in force, not written");
        assert_eq!(judge(&f.keys, key.expose()), Err(Refusal::RevokedKey));
        // Not even a later change that still names it (an end of grace, say) brings it back.
        let (record, _) = f.keys.status();
        f.keys.gate.switch(&f.keys.lock().record.clone(), f.clock.now());
        assert_eq!(judge(&f.keys, key.expose()), Err(Refusal::RevokedKey), "{record:?}");
        // The exposure is shown only while its key is admitted: no longer.
        assert_eq!(f.keys.exposure(), None);
        f.keys.revoke(Peer::Server).unwrap();
        assert_eq!(peek(f.dir.path()).unwrap().state(), KeyState::Revoked);
    }

    #[test]
    fn a_retired_key_is_named_while_a_change_holds_the_change_lock() {
        let f = fixture();
        f.keys.generate(Asked::default(), Peer::Server).unwrap();
        f.keys.replace(Asked::default(), Peer::Server).unwrap();
        let held = f.keys.lock();
        // A change in progress (its fsync, say): the refusal log's description does not wait.
        let named = f.keys.describe_retired(1).unwrap();
        assert!(named.contains("(generation 1, replaced "), "{named}");
        drop(held);
    }
}
