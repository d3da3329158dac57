//! The key store: `<state_dir>/key.ron`, the one file that says which key is valid.
//!
//! It holds the key's SHA-256 and metadata, never the key. `serve` takes an exclusive lock on
//! `key.lock` beside it for as long as it runs (the store itself is replaced by rename, so its
//! inode changes and cannot carry the lock), which also keeps a second `serve` off the same
//! folder. Every change is written to a temporary file in the same folder, fsync'd, renamed
//! over the store, and the folder fsync'd: a crash at any instant leaves the old store or the
//! new one, never a torn, empty or missing one. A store that does not parse is never
//! overwritten: `serve` refuses to start and names the file and the position.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use fs2::FileExt;
use serde::{Deserialize, Serialize};

use crate::durable::{self, Disk, WriteError};
use crate::key::{ApiKey, Fingerprint, KeyHash};

const STORE_FILE: &str = "key.ron";
const LOCK_FILE: &str = "key.lock";
const LEGACY_TEMP_FILE: &str = "key.ron.tmp";
/// Version 2 added expiry, the grace key and the retired keys; version 1 stores are read as
/// they are (a key with no expiry, no grace, nothing retired) and written as version 2.
const FORMAT_VERSION: u32 = 2;
const OLDEST_READABLE_VERSION: u32 = 1;
const HEADER: &str = "// aims-api key store, written by `aims-api serve`: change it with `aims-api key`.\n\
                      // It holds the SHA-256 of the API key, never the key itself.\n";

/// How many retired keys the store remembers, for the tripwire that names a retired key when
/// a client still presents it.
pub const MAX_RETIRED: usize = 16;

/// What the store says: which key, if any, the previous key during a rotation's grace, the keys
/// retired before them, and how many changes it has seen.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyRecord {
    /// Counts every change since the store was first written.
    pub generation: u64,
    pub key: Option<StoredKey>,
    /// The key a replace with a grace window replaced, admitted until its `valid_until`.
    pub previous: Option<GraceKey>,
    /// The last [`MAX_RETIRED`] keys replaced, revoked or expired, oldest first.
    pub retired: Vec<RetiredKey>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    pub hash: KeyHash,
    pub fingerprint: Fingerprint,
    /// The store's generation when this key was made.
    pub generation: u64,
    pub created_at: SystemTime,
    pub revoked_at: Option<SystemTime>,
    /// Refused from this instant on; `None`: no expiry.
    pub expires_at: Option<SystemTime>,
}

/// The replaced key during a rotation's grace window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraceKey {
    pub hash: KeyHash,
    pub fingerprint: Fingerprint,
    pub generation: u64,
    /// Admitted until this instant, never after. Never later than the key's own expiry.
    pub valid_until: SystemTime,
}

/// A key that is no longer valid, kept (as its hash) so that a client still presenting it is
/// named in the refusal log instead of lost among wrong keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetiredKey {
    pub hash: KeyHash,
    pub fingerprint: Fingerprint,
    pub generation: u64,
    pub retired_at: SystemTime,
    pub how: Retirement,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retirement {
    Replaced,
    Revoked,
    Expired,
}

impl Retirement {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Replaced => "replaced",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    None,
    Active,
    Revoked,
    /// Past its `expires_at`: refused as if revoked, and a new key can be generated.
    Expired,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Active => "active",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
        }
    }
}

/// A change that does not apply to the current state (the admin port answers 409).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conflict {
    AlreadyActive,
    NotActive,
    NoGrace,
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::AlreadyActive => {
                "a key is already active: replace it (POST /key/replace) or revoke it first"
            }
            Self::NotActive => "no key is active: generate one first (POST /key)",
            Self::NoGrace => "no previous key is in a grace window",
        })
    }
}

/// What a new key is given: its expiry, and (replace only) how long the key it replaces stays
/// valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Terms {
    pub expires_at: Option<SystemTime>,
    pub grace: Duration,
}

impl KeyRecord {
    /// The state now.
    pub fn state(&self) -> KeyState {
        self.state_at(SystemTime::now())
    }

    pub fn state_at(&self, now: SystemTime) -> KeyState {
        match &self.key {
            None => KeyState::None,
            Some(k) if k.revoked_at.is_some() => KeyState::Revoked,
            Some(k) if k.expires_at.is_some_and(|at| at <= now) => KeyState::Expired,
            Some(_) => KeyState::Active,
        }
    }

    /// The active key's hash, if a key is active.
    pub fn active_hash(&self) -> Option<KeyHash> {
        match &self.key {
            Some(k) if self.state() == KeyState::Active => Some(k.hash),
            _ => None,
        }
    }

    /// The grace key, if its window is still open at `now`.
    pub fn grace_at(&self, now: SystemTime) -> Option<&GraceKey> {
        self.previous.as_ref().filter(|g| g.valid_until > now)
    }

    /// The record after generating `key`: allowed when no key is active.
    pub fn generated(&self, key: &ApiKey, now: SystemTime, terms: Terms) -> Result<Self, Conflict> {
        let now = whole_millis(now);
        match self.state_at(now) {
            KeyState::Active => Err(Conflict::AlreadyActive),
            KeyState::None | KeyState::Revoked | KeyState::Expired => {
                Ok(self.with_key(key, now, Terms { grace: Duration::ZERO, ..terms }))
            }
        }
    }

    /// The record after replacing the active (or expired) key by `key`. With a grace, the
    /// replaced key stays valid until `now + grace` (never past its own expiry); a grace still
    /// running from an earlier replace ends here.
    pub fn replaced(&self, key: &ApiKey, now: SystemTime, terms: Terms) -> Result<Self, Conflict> {
        let now = whole_millis(now);
        match self.state_at(now) {
            KeyState::Active | KeyState::Expired => Ok(self.with_key(key, now, terms)),
            KeyState::None | KeyState::Revoked => Err(Conflict::NotActive),
        }
    }

    /// The record after revoking the active key. A grace in progress ends too.
    pub fn revoked(&self, now: SystemTime) -> Result<Self, Conflict> {
        let now = whole_millis(now);
        match &self.key {
            Some(k) if self.state_at(now) == KeyState::Active => {
                let mut next = self.clone();
                next.generation += 1;
                next.end_grace(now);
                next.retire(k, now, Retirement::Revoked);
                next.key = Some(StoredKey { revoked_at: Some(now), ..k.clone() });
                Ok(next)
            }
            _ => Err(Conflict::NotActive),
        }
    }

    /// The record after ending the previous key's grace early: it is refused from now on.
    pub fn grace_ended(&self, now: SystemTime) -> Result<Self, Conflict> {
        let now = whole_millis(now);
        if self.grace_at(now).is_none() {
            return Err(Conflict::NoGrace);
        }
        let mut next = self.clone();
        next.generation += 1;
        next.end_grace(now);
        Ok(next)
    }

    fn with_key(&self, key: &ApiKey, now: SystemTime, terms: Terms) -> Self {
        let mut next = self.clone();
        next.generation += 1;
        next.end_grace(now);
        if let Some(old) = &self.key {
            match self.state_at(now) {
                KeyState::Active if terms.grace.is_zero() => {
                    next.retire(old, now, Retirement::Replaced);
                }
                KeyState::Active => {
                    let until = now + terms.grace;
                    let valid_until = old.expires_at.map_or(until, |at| at.min(until));
                    // Refused from the end of its grace: that is when it retires.
                    next.retire(old, valid_until, Retirement::Replaced);
                    next.previous = Some(GraceKey {
                        hash: old.hash,
                        fingerprint: old.fingerprint.clone(),
                        generation: old.generation,
                        valid_until,
                    });
                }
                KeyState::Expired => {
                    let expired_at = old.expires_at.unwrap_or(now);
                    next.retire(old, expired_at, Retirement::Expired);
                }
                // Retired when it was revoked.
                KeyState::Revoked | KeyState::None => {}
            }
        }
        next.key = Some(StoredKey {
            hash: key.hash(),
            fingerprint: key.fingerprint(),
            generation: next.generation,
            created_at: now,
            revoked_at: None,
            expires_at: terms.expires_at,
        });
        next
    }

    /// Ends a grace still running at `now`: its key is refused from now on, so that is when it
    /// retired (not the end of the grace it was given).
    fn end_grace(&mut self, now: SystemTime) {
        if let Some(grace) = self.previous.take().filter(|g| g.valid_until > now)
            && let Some(retired) = self.retired.iter_mut().find(|r| r.hash.ct_eq(&grace.hash))
        {
            retired.retired_at = now;
        }
    }

    /// Adds `key` to the retired keys, once, keeping the newest [`MAX_RETIRED`].
    fn retire(&mut self, key: &StoredKey, at: SystemTime, how: Retirement) {
        self.retired.retain(|r| !r.hash.ct_eq(&key.hash));
        self.retired.push(RetiredKey {
            hash: key.hash,
            fingerprint: key.fingerprint.clone(),
            generation: key.generation,
            retired_at: at,
            how,
        });
        let excess = self.retired.len().saturating_sub(MAX_RETIRED);
        self.retired.drain(..excess);
    }
}

/// Why the store could not be opened, read or written.
#[derive(Debug)]
pub enum StoreError {
    Folder {
        path: PathBuf,
        source: io::Error,
    },
    Lock {
        path: PathBuf,
        source: io::Error,
    },
    /// Another process holds the lock: a second `serve` on the same state folder.
    Locked {
        path: PathBuf,
        holder: Option<u32>,
    },
    Read {
        path: PathBuf,
        source: io::Error,
    },
    Corrupt {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    Write(WriteError),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Folder { path, source } => {
                write!(f, "cannot prepare the state folder {}: {source}", path.display())
            }
            Self::Lock { path, source } => write!(f, "cannot lock {}: {source}", path.display()),
            Self::Locked { path, holder } => {
                write!(f, "{} is locked by another aims-api serve", path.display())?;
                if let Some(pid) = holder {
                    write!(f, " (pid {pid})")?;
                }
                f.write_str(
                    ": one server per state folder; stop the other one or use another state_dir",
                )
            }
            Self::Read { path, source } => write!(f, "cannot read {}: {source}", path.display()),
            Self::Corrupt { path, line, column, message } => write!(
                f,
                "{}:{line}:{column}: {message}; the key store is damaged and was left untouched: \
                 restore it from a backup, or move it away to start with no key",
                path.display()
            ),
            Self::Write(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Folder { source, .. } | Self::Lock { source, .. } | Self::Read { source, .. } => {
                Some(source)
            }
            Self::Write(e) => Some(e),
            Self::Locked { .. } | Self::Corrupt { .. } => None,
        }
    }
}

/// The open store: its folder, and the lock held for the life of the value.
#[derive(Debug)]
pub struct KeyStore {
    dir: PathBuf,
    path: PathBuf,
    disk: Disk,
    /// Held, never read: dropping it releases the lock.
    _lock: File,
}

impl KeyStore {
    /// Creates the state folder if needed (mode 0700), takes the lock and reads the store.
    /// No store file means no key yet.
    pub fn open(state_dir: &Path) -> Result<(Self, KeyRecord), StoreError> {
        Self::open_on(state_dir, store_disk())
    }

    /// [`KeyStore::open`], with every later write going through `disk`.
    pub fn open_on(state_dir: &Path, disk: Disk) -> Result<(Self, KeyRecord), StoreError> {
        prepare_folder(state_dir)?;
        let lock = take_lock(&state_dir.join(LOCK_FILE))?;
        let path = state_dir.join(STORE_FILE);
        let store = Self { dir: state_dir.to_owned(), path, disk, _lock: lock };
        // A temporary file can only be left by a crash between its creation and the rename;
        // the store itself is still the old, whole one. (`key.ron.tmp` is the name releases
        // before the shared durable write used.)
        durable::remove_leftovers(&store.path);
        let _ = fs::remove_file(store.dir.join(LEGACY_TEMP_FILE));
        let record = store.read()?;
        Ok((store, record))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read(&self) -> Result<KeyRecord, StoreError> {
        let text = match fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(KeyRecord::default()),
            Err(source) => return Err(StoreError::Read { path: self.path.clone(), source }),
        };
        tighten_mode(&self.path, 0o600);
        parse(&text).map_err(|e| StoreError::Corrupt {
            path: self.path.clone(),
            line: e.span.start.line,
            column: e.span.start.col,
            message: e.code.to_string(),
        })
    }

    /// Replaces the store with `record`, durably, or leaves it as it was.
    pub fn write(&self, record: &KeyRecord) -> Result<(), StoreError> {
        self.disk.write(&self.path, render(record).as_bytes(), 0o600).map_err(StoreError::Write)
    }
}

/// The disk the store writes through: the real one.
#[cfg(not(feature = "bench-slow-key-fsync"))]
fn store_disk() -> Disk {
    Disk::default()
}

/// The disk the store writes through, in a build for benchmark (b) of issue 20 (feature
/// `bench-slow-key-fsync`, never in a release): each fsync of the store's new file first waits
/// `AIMS_API_BENCH_KEY_FSYNC_MS` milliseconds, a slow disk held in one place, so a benchmark can
/// show the API's latency does not follow it. (A real slow disk, device-mapper's `delay` target
/// over a loop device, needs a kernel module a container does not have.)
#[cfg(feature = "bench-slow-key-fsync")]
fn store_disk() -> Disk {
    struct SlowFsync(std::time::Duration);
    impl durable::Faults for SlowFsync {
        fn before(&self, step: durable::Step, _target: &Path) -> io::Result<()> {
            if step == durable::Step::Fsync {
                std::thread::sleep(self.0);
            }
            Ok(())
        }
    }
    let millis = std::env::var("AIMS_API_BENCH_KEY_FSYNC_MS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(0);
    log::warn!("benchmark build: every key store fsync waits {millis} ms first");
    Disk::with_faults(std::sync::Arc::new(SlowFsync(Duration::from_millis(millis))))
}

/// Reads the store in `state_dir` without taking the lock or changing anything, for
/// `diagnose`, which must not disturb a running server. No store file means no key yet.
pub fn peek(state_dir: &Path) -> Result<KeyRecord, StoreError> {
    let path = state_dir.join(STORE_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(KeyRecord::default()),
        Err(source) => return Err(StoreError::Read { path, source }),
    };
    parse(&text).map_err(|e| StoreError::Corrupt {
        path,
        line: e.span.start.line,
        column: e.span.start.col,
        message: e.code.to_string(),
    })
}

/// The pid of the process holding the lock in `state_dir`, from `/proc/locks`, without taking
/// it: taking the lock to test it could make a starting server fail, and a lock held even
/// briefly is shared with any child another thread forks meanwhile.
pub fn lock_holder(state_dir: &Path) -> Option<u32> {
    let meta = fs::metadata(lock_path(state_dir)).ok()?;
    // glibc's major()/minor() of st_dev, which /proc/locks prints as MAJ:MIN.
    let dev = meta.dev();
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let locks = procfs::locks().ok()?;
    let on_file = |lock: &&procfs::Lock| lock.inode == meta.ino();
    let same_device =
        |lock: &&procfs::Lock| u64::from(lock.devmaj) == major && u64::from(lock.devmin) == minor;
    // The device must match too, but overlay file systems may report another device in
    // /proc/locks than stat does: then the inode alone decides.
    let holder = locks.iter().filter(on_file).find(same_device);
    holder
        .or_else(|| locks.iter().find(on_file))
        .and_then(|lock| lock.pid)
        .and_then(|pid| u32::try_from(pid).ok())
}

/// The lock file `serve` holds in `state_dir`.
pub fn lock_path(state_dir: &Path) -> PathBuf {
    state_dir.join(LOCK_FILE)
}

fn prepare_folder(dir: &Path) -> Result<(), StoreError> {
    let folder_error = |source| StoreError::Folder { path: dir.to_owned(), source };
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(folder_error)?;
    tighten_mode(dir, 0o700);
    Ok(())
}

/// Narrows a file's permissions to `mode` if they are wider, saying so. The store holds only a
/// hash, but a hash of a weak secret is a guessing target, so nobody else should read it.
pub(crate) fn tighten_mode(path: &Path, mode: u32) {
    let Ok(meta) = fs::metadata(path) else { return };
    let current = meta.permissions().mode() & 0o777;
    if current & !mode != 0 {
        match fs::set_permissions(path, fs::Permissions::from_mode(mode)) {
            Ok(()) => log::warn!("{} had mode {current:o}; narrowed to {mode:o}", path.display()),
            Err(e) => {
                log::warn!("{} has mode {current:o} and cannot be narrowed: {e}", path.display())
            }
        }
    }
}

fn take_lock(path: &Path) -> Result<File, StoreError> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|source| StoreError::Lock { path: path.to_owned(), source })?;
    if let Err(e) = file.try_lock_exclusive() {
        if e.kind() == fs2::lock_contended_error().kind() {
            let mut text = String::new();
            let holder = file.read_to_string(&mut text).ok().and_then(|_| text.trim().parse().ok());
            return Err(StoreError::Locked { path: path.to_owned(), holder });
        }
        return Err(StoreError::Lock { path: path.to_owned(), source: e });
    }
    // The pid is only for the message a second server prints; failing to write it is harmless.
    let _ = file.set_len(0).and_then(|()| file.rewind());
    let _ = writeln!(file, "{}", std::process::id());
    Ok(file)
}

// The file format. Kept apart from `KeyRecord` so the format can evolve without the types.

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreFile {
    version: Version,
    generation: u64,
    key: Option<StoredKeyFile>,
    #[serde(default)]
    previous: Option<GraceKeyFile>,
    #[serde(default)]
    retired: Vec<RetiredKeyFile>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StoredKeyFile {
    pub(crate) sha256: HexHash,
    pub(crate) fingerprint: FingerprintText,
    /// Absent in version 1 stores.
    #[serde(default)]
    pub(crate) generation: Option<u64>,
    pub(crate) created_at: Timestamp,
    pub(crate) revoked_at: Option<Timestamp>,
    #[serde(default)]
    pub(crate) expires_at: Option<Timestamp>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GraceKeyFile {
    pub(crate) sha256: HexHash,
    pub(crate) fingerprint: FingerprintText,
    pub(crate) generation: u64,
    pub(crate) valid_until: Timestamp,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RetiredKeyFile {
    pub(crate) sha256: HexHash,
    pub(crate) fingerprint: FingerprintText,
    pub(crate) generation: u64,
    pub(crate) retired_at: Timestamp,
    pub(crate) how: RetirementText,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub(crate) struct RetirementText(Retirement);

impl TryFrom<String> for RetirementText {
    type Error = &'static str;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        match text.as_str() {
            "replaced" => Ok(Self(Retirement::Replaced)),
            "revoked" => Ok(Self(Retirement::Revoked)),
            "expired" => Ok(Self(Retirement::Expired)),
            _ => Err("how must be replaced, revoked or expired"),
        }
    }
}

impl From<RetirementText> for String {
    fn from(r: RetirementText) -> String {
        r.0.as_str().to_owned()
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
struct Version;

impl TryFrom<u32> for Version {
    type Error = String;
    fn try_from(v: u32) -> Result<Self, String> {
        if (OLDEST_READABLE_VERSION..=FORMAT_VERSION).contains(&v) {
            Ok(Self)
        } else {
            Err(format!(
                "store format version {v} is not supported (this build reads versions \
                 {OLDEST_READABLE_VERSION} to {FORMAT_VERSION})"
            ))
        }
    }
}

impl From<Version> for u32 {
    fn from(_: Version) -> u32 {
        FORMAT_VERSION
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub(crate) struct HexHash(KeyHash);

impl TryFrom<String> for HexHash {
    type Error = &'static str;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        KeyHash::from_hex(&text).map(Self).ok_or("sha256 must be 64 lower-case hex digits")
    }
}

impl From<HexHash> for String {
    fn from(h: HexHash) -> String {
        h.0.to_hex()
    }
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub(crate) struct FingerprintText(Fingerprint);

impl TryFrom<String> for FingerprintText {
    type Error = &'static str;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        Fingerprint::parse(&text).map(Self).ok_or("fingerprint must look like aims_...XXXX")
    }
}

impl From<FingerprintText> for String {
    fn from(f: FingerprintText) -> String {
        f.0.as_str().to_owned()
    }
}

/// An instant as RFC 3339 UTC with milliseconds, the form every timestamp here takes.
#[derive(Clone, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub(crate) struct Timestamp(SystemTime);

impl TryFrom<String> for Timestamp {
    type Error = String;
    fn try_from(text: String) -> Result<Self, String> {
        humantime::parse_rfc3339(&text)
            .map(Self)
            .map_err(|e| format!("`{text}` is not an RFC 3339 UTC timestamp: {e}"))
    }
}

impl From<Timestamp> for String {
    fn from(t: Timestamp) -> String {
        rfc3339(t.0)
    }
}

/// `time`, down to the whole millisecond. Every instant a key change records is taken so: the
/// store and the answers show milliseconds, so a deadline an operator (or a test) reads is then
/// exactly the deadline the gate enforces, not up to a millisecond earlier.
pub fn whole_millis(time: SystemTime) -> SystemTime {
    match time.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(since) => {
            let millis =
                Duration::from_millis(u64::try_from(since.as_millis()).unwrap_or(u64::MAX));
            SystemTime::UNIX_EPOCH + millis
        }
        Err(_) => time,
    }
}

/// Formats an instant as RFC 3339 UTC with milliseconds and `Z`.
pub fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

/// A record's fields in the store's forms and names: the store writes them after its
/// version, and the key record another appliance installs ([`crate::keys::record`]) after its
/// own header, so the two cannot drift.
pub(crate) struct RecordBody {
    pub(crate) generation: u64,
    pub(crate) key: Option<StoredKeyFile>,
    pub(crate) previous: Option<GraceKeyFile>,
    pub(crate) retired: Vec<RetiredKeyFile>,
}

impl RecordBody {
    pub(crate) fn of(record: &KeyRecord) -> Self {
        Self {
            generation: record.generation,
            key: record.key.as_ref().map(|k| StoredKeyFile {
                sha256: HexHash(k.hash),
                fingerprint: FingerprintText(k.fingerprint.clone()),
                generation: Some(k.generation),
                created_at: Timestamp(k.created_at),
                revoked_at: k.revoked_at.map(Timestamp),
                expires_at: k.expires_at.map(Timestamp),
            }),
            previous: record.previous.as_ref().map(|g| GraceKeyFile {
                sha256: HexHash(g.hash),
                fingerprint: FingerprintText(g.fingerprint.clone()),
                generation: g.generation,
                valid_until: Timestamp(g.valid_until),
            }),
            retired: record
                .retired
                .iter()
                .map(|r| RetiredKeyFile {
                    sha256: HexHash(r.hash),
                    fingerprint: FingerprintText(r.fingerprint.clone()),
                    generation: r.generation,
                    retired_at: Timestamp(r.retired_at),
                    how: RetirementText(r.how),
                })
                .collect(),
        }
    }

    pub(crate) fn into_record(self) -> KeyRecord {
        let generation = self.generation;
        KeyRecord {
            generation,
            key: self.key.map(|k| StoredKey {
                hash: k.sha256.0,
                fingerprint: k.fingerprint.0,
                // A version 1 store did not say: its key was made at the last change, or at
                // the one before if that change was its revoke.
                generation: k.generation.unwrap_or_else(|| {
                    generation.saturating_sub(u64::from(k.revoked_at.is_some()))
                }),
                created_at: k.created_at.0,
                revoked_at: k.revoked_at.map(|t| t.0),
                expires_at: k.expires_at.map(|t| t.0),
            }),
            previous: self.previous.map(|g| GraceKey {
                hash: g.sha256.0,
                fingerprint: g.fingerprint.0,
                generation: g.generation,
                valid_until: g.valid_until.0,
            }),
            retired: self
                .retired
                .into_iter()
                .map(|r| RetiredKey {
                    hash: r.sha256.0,
                    fingerprint: r.fingerprint.0,
                    generation: r.generation,
                    retired_at: r.retired_at.0,
                    how: r.how.0,
                })
                .collect(),
        }
    }
}

fn parse(text: &str) -> Result<KeyRecord, ron::error::SpannedError> {
    let file: StoreFile = ron::Options::default().from_str(text)?;
    let body = RecordBody {
        generation: file.generation,
        key: file.key,
        previous: file.previous,
        retired: file.retired,
    };
    Ok(body.into_record())
}

fn render(record: &KeyRecord) -> String {
    let RecordBody { generation, key, previous, retired } = RecordBody::of(record);
    let file = StoreFile { version: Version, generation, key, previous, retired };
    let pretty = ron::ser::PrettyConfig::new().struct_names(false);
    // Serializing plain strings and integers into a String cannot fail; an empty body would
    // still be refused by the parser on the next start, never mistaken for "no key".
    let body = ron::ser::to_string_pretty(&file, pretty).unwrap_or_default();
    format!("{HEADER}{body}\n")
}

#[cfg(test)]
mod tests {
    use ring::rand::SystemRandom;

    use super::*;

    fn key() -> ApiKey {
        ApiKey::generate(&SystemRandom::new()).unwrap()
    }

    #[test]
    fn lifecycle_transitions_and_conflicts() {
        let none = KeyRecord::default();
        let (a, b) = (key(), key());
        let now = SystemTime::now();
        assert_eq!(none.replaced(&a, now, Terms::default()), Err(Conflict::NotActive));
        assert_eq!(none.revoked(now), Err(Conflict::NotActive));
        let active = none.generated(&a, now, Terms::default()).unwrap();
        assert_eq!((active.state(), active.generation), (KeyState::Active, 1));
        assert_eq!(active.generated(&b, now, Terms::default()), Err(Conflict::AlreadyActive));
        let replaced = active.replaced(&b, now, Terms::default()).unwrap();
        assert_eq!(replaced.active_hash(), Some(b.hash()));
        let revoked = replaced.revoked(now).unwrap();
        assert_eq!(
            (revoked.state(), revoked.active_hash(), revoked.generation),
            (KeyState::Revoked, None, 3)
        );
        assert_eq!(revoked.generated(&a, now, Terms::default()).unwrap().state(), KeyState::Active);
    }

    #[test]
    fn write_then_reopen_round_trips_without_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let k = key();
        let record = {
            let (store, empty) = KeyStore::open(&state).unwrap();
            assert_eq!(empty, KeyRecord::default());
            let record = empty
                .generated(&k, SystemTime::now(), Terms::default())
                .unwrap()
                .revoked(SystemTime::now())
                .unwrap();
            store.write(&record).unwrap();
            record
        };
        let text = fs::read_to_string(state.join(STORE_FILE)).unwrap();
        assert!(!text.contains(k.expose()));
        assert!(text.contains(&k.hash().to_hex()));
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(&state.join(STORE_FILE)), 0o600);
        let (_store, reread) = KeyStore::open(&state).unwrap();
        // Milliseconds survive the text form; finer precision is not kept.
        assert_eq!(reread.generation, record.generation);
        assert_eq!(reread.active_hash(), None);
        assert_eq!(reread.key.unwrap().fingerprint, k.fingerprint());
    }

    #[test]
    fn a_version_1_store_is_read_and_rewritten_as_version_2() {
        let dir = tempfile::tempdir().unwrap();
        let k = key();
        let v1 = format!(
            "{HEADER}(\n    version: 1,\n    generation: 3,\n    key: Some((\n        sha256: \"{}\",\n        \
             fingerprint: \"{}\",\n        created_at: \"2026-11-29T03:44:44.412Z\",\n        \
             revoked_at: None,\n    )),\n)\n",
            k.hash().to_hex(),
            k.fingerprint()
        );
        fs::write(dir.path().join(STORE_FILE), v1).unwrap();
        let (store, record) = KeyStore::open(dir.path()).unwrap();
        let stored = record.key.clone().unwrap();
        // A version 1 store did not say: the key was made at the last change.
        assert_eq!((stored.generation, stored.expires_at), (3, None));
        assert_eq!((record.previous.clone(), record.retired.len()), (None, 0));
        assert_eq!(record.active_hash(), Some(k.hash()));
        store.write(&record).unwrap();
        let text = fs::read_to_string(dir.path().join(STORE_FILE)).unwrap();
        assert!(text.contains("version: 2"), "{text}");
        drop(store);
        assert_eq!(KeyStore::open(dir.path()).unwrap().1, record);
        // A store from the future is refused with the versions this build reads.
        let v9 = text.replace("version: 2", "version: 9");
        fs::write(dir.path().join(STORE_FILE), v9).unwrap();
        let err = KeyStore::open(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(
                "store format version 9 is not supported (this build reads versions 1 to 2)"
            ),
            "{err}"
        );
    }

    #[test]
    fn a_key_retires_when_it_is_last_admitted_even_if_its_grace_is_cut_short() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let (a, b, c) = (key(), key(), key());
        let grace = Terms { grace: Duration::from_secs(900), expires_at: None };
        let first = KeyRecord::default().generated(&a, start, Terms::default()).unwrap();
        let second = first.replaced(&b, start, grace).unwrap();
        let retired_at = |record: &KeyRecord, k: &ApiKey| {
            record.retired.iter().find(|r| r.hash == k.hash()).map(|r| r.retired_at)
        };
        // Given a grace, it retires at its end...
        assert_eq!(retired_at(&second, &a), Some(start + Duration::from_secs(900)));
        // ...unless a second replace (or a revoke) cuts the grace short: then, at that moment.
        let cut = start + Duration::from_secs(60);
        let third = second.replaced(&c, cut, Terms::default()).unwrap();
        assert_eq!(retired_at(&third, &a), Some(cut));
        assert_eq!(retired_at(&third, &b), Some(cut));
        assert_eq!(third.previous, None);
        let revoked = second.revoked(cut).unwrap();
        assert_eq!(retired_at(&revoked, &a), Some(cut));
        // A grace that ran its course keeps its end as the moment.
        let late = start + Duration::from_secs(1000);
        let after = second.replaced(&c, late, Terms::default()).unwrap();
        assert_eq!(retired_at(&after, &a), Some(start + Duration::from_secs(900)));
    }

    #[test]
    fn the_last_16_retired_keys_are_kept_and_each_once() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut record = KeyRecord::default().generated(&key(), now, Terms::default()).unwrap();
        let mut issued = vec![record.key.clone().unwrap().hash];
        for _ in 0..20 {
            record = record.replaced(&key(), now, Terms::default()).unwrap();
            issued.push(record.key.clone().unwrap().hash);
        }
        assert_eq!(record.retired.len(), MAX_RETIRED);
        // The newest sixteen before the current key, oldest first.
        let kept: Vec<KeyHash> = record.retired.iter().map(|r| r.hash).collect();
        assert_eq!(kept, issued[issued.len() - 17..issued.len() - 1]);
        assert!(record.retired.iter().all(|r| r.how == Retirement::Replaced));
        // A revoke retires the current key once, however often it is retried.
        let revoked = record.revoked(now).unwrap();
        assert_eq!(revoked.retired.last().unwrap().how, Retirement::Revoked);
        assert_eq!(revoked.retired.len(), MAX_RETIRED);
        let round_trip = parse(&render(&revoked)).unwrap();
        assert_eq!(round_trip, revoked);
    }

    #[test]
    fn a_second_open_is_refused_while_the_first_holds_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let _first = KeyStore::open(dir.path()).unwrap();
        match KeyStore::open(dir.path()) {
            Err(StoreError::Locked { holder, .. }) => assert_eq!(holder, Some(std::process::id())),
            other => panic!("expected Locked, got {other:?}"),
        }
        // /proc/locks names the holder without taking the lock.
        assert_eq!(lock_holder(dir.path()), Some(std::process::id()));
        assert_eq!(lock_holder(&dir.path().join("nowhere")), None);
    }

    #[test]
    fn a_corrupt_store_names_its_position_and_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STORE_FILE);
        let bad = "(\n    version: 1,\n    generation: x,\n)\n";
        fs::write(&path, bad).unwrap();
        match KeyStore::open(dir.path()) {
            Err(StoreError::Corrupt { line, .. }) => assert_eq!(line, 3),
            other => panic!("expected Corrupt, got {other:?}"),
        }
        assert_eq!(fs::read_to_string(&path).unwrap(), bad);
    }

    #[test]
    fn a_bad_hash_is_refused_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let text = "(version: 1, generation: 1, key: Some((sha256: \"zz\", \
                    fingerprint: \"aims_...abcd\", created_at: \"2026-01-01T00:00:00.000Z\", revoked_at: None)))";
        fs::write(dir.path().join(STORE_FILE), text).unwrap();
        let err = KeyStore::open(dir.path()).unwrap_err();
        assert!(err.to_string().contains("64 lower-case hex digits"), "{err}");
    }

    #[test]
    fn a_stale_temporary_file_is_removed_and_the_store_kept() {
        let dir = tempfile::tempdir().unwrap();
        let k = key();
        let record =
            KeyRecord::default().generated(&k, SystemTime::now(), Terms::default()).unwrap();
        KeyStore::open(dir.path()).unwrap().0.write(&record).unwrap();
        // One left by a crash of this release, and one by a crash of an older one.
        let leftovers = [".key.ron.4242.0.tmp", LEGACY_TEMP_FILE];
        for name in leftovers {
            fs::write(dir.path().join(name), "torn").unwrap();
        }
        let (_s, reread) = KeyStore::open(dir.path()).unwrap();
        assert_eq!(reread.active_hash(), Some(k.hash()));
        for name in leftovers {
            assert!(!dir.path().join(name).exists(), "{name} is removed");
        }
    }
}
