//! Who uses the key: when it last admitted a request, from where, how often, and which
//! addresses use it — plus the record of a key seen in clear text.
//!
//! Counted on the hot path in a [`Shard`] that belongs to one API worker (nothing shared, no
//! I/O), merged into the table here by the key manager's housekeeping thread about once a
//! second ([`Usage::merge`]), and written to `<state_dir>/usage.ron` (mode 0600, through
//! [`crate::durable`]) at most once a minute and at a clean stop: never in the key store's write
//! path, and a request never waits for a disk or for another thread. After a crash, at most the
//! last minute of usage is lost. Usage is per key generation: a new key starts with none, and
//! the replaced key's usage is kept while its grace lasts, so an operator sees when the last
//! client moved over.
//!
//! The address table of each key is bounded ([`MAX_CLIENTS`]): the least recently seen address
//! is dropped first, and the count of dropped ones is kept. The first request from an address
//! never seen with a key writes one `audit action=key.new_address` line when its shard is
//! merged (so about a second after that request), through the refusal log's budget for new
//! addresses ([`crate::refusals`]), so a botnet cannot flood the log; past the budget they are
//! counted and summed in one line when the window ends. Lines are written after the table's
//! lock is let go.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::durable::{self, Disk};
use crate::key::Fingerprint;
use crate::keystore::rfc3339;
use crate::locks;
use crate::refusals::RefusalLog;

/// Addresses remembered per key.
pub const MAX_CLIENTS: usize = 256;
const FILE: &str = "usage.ron";
const FORMAT_VERSION: u32 = 1;

/// One address's use of one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientUsage {
    pub address: IpAddr,
    pub first_seen: SystemTime,
    pub last_seen: SystemTime,
    pub admitted: u64,
}

/// One key's use.
#[derive(Debug, Clone, Default)]
pub struct KeyUsage {
    pub admitted: u64,
    pub last_used: Option<(SystemTime, IpAddr)>,
    clients: HashMap<IpAddr, ClientUsage>,
    /// Addresses dropped from the table to keep it within [`MAX_CLIENTS`].
    pub dropped: u64,
}

impl KeyUsage {
    /// The addresses, most recently seen first.
    pub fn clients(&self) -> Vec<ClientUsage> {
        let mut clients: Vec<ClientUsage> = self.clients.values().copied().collect();
        clients.sort_by(|a, b| b.last_seen.cmp(&a.last_seen).then(a.address.cmp(&b.address)));
        clients
    }

    /// Adds what a shard saw of one address; returns whether the address is new for this key.
    fn merge_client(&mut self, seen: ClientUsage) -> bool {
        if let Some(client) = self.clients.get_mut(&seen.address) {
            client.first_seen = client.first_seen.min(seen.first_seen);
            client.last_seen = client.last_seen.max(seen.last_seen);
            client.admitted += seen.admitted;
            return false;
        }
        if self.clients.len() >= MAX_CLIENTS
            && let Some(oldest) =
                self.clients.values().min_by_key(|c| c.last_seen).map(|c| c.address)
        {
            self.clients.remove(&oldest);
            self.dropped += 1;
        }
        self.clients.insert(seen.address, seen);
        true
    }
}

/// One API worker's usage since its last merge: written by that worker only (under a lock only
/// the merge shares, for the moment it takes the shard away).
#[derive(Debug, Default)]
pub struct Shard {
    /// By generation; two at most in practice (the current key and the grace key).
    keys: Vec<(u64, Delta)>,
}

#[derive(Debug, Default)]
struct Delta {
    admitted: u64,
    last_used: Option<(SystemTime, IpAddr)>,
    /// The address of the last request, counted apart: a client on a kept-alive connection
    /// sends many requests in a row, and counting them costs no hash-map lookup.
    hot: Option<ClientUsage>,
    clients: HashMap<IpAddr, ClientUsage>,
    /// Addresses past [`MAX_CLIENTS`] in one merge interval: counted, not kept.
    overflow: u64,
}

impl Delta {
    fn stash(&mut self, seen: ClientUsage) {
        if let Some(client) = self.clients.get_mut(&seen.address) {
            client.last_seen = seen.last_seen;
            client.admitted += seen.admitted;
        } else if self.clients.len() < MAX_CLIENTS {
            self.clients.insert(seen.address, seen);
        } else {
            self.overflow += 1;
        }
    }
}

impl Shard {
    /// Counts a request admitted at `now` by the key of `generation`, from `address`.
    pub fn record(&mut self, generation: u64, address: IpAddr, now: SystemTime) {
        let index = match self.keys.iter().position(|(g, _)| *g == generation) {
            Some(index) => index,
            None => {
                self.keys.push((generation, Delta::default()));
                self.keys.len() - 1
            }
        };
        let Some((_, delta)) = self.keys.get_mut(index) else { return };
        delta.admitted += 1;
        delta.last_used = Some((now, address));
        match delta.hot.as_mut() {
            Some(hot) if hot.address == address => {
                hot.last_seen = now;
                hot.admitted += 1;
            }
            _ => {
                let seen = ClientUsage { address, first_seen: now, last_seen: now, admitted: 1 };
                if let Some(previous) = delta.hot.replace(seen) {
                    delta.stash(previous);
                }
            }
        }
    }
}

/// The live or grace key, seen in a plain-HTTP request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exposure {
    pub generation: u64,
    pub at: SystemTime,
    pub from: IpAddr,
}

/// The usage of the keys in force, the exposure record, and where new addresses are logged.
pub struct Usage {
    path: PathBuf,
    disk: Disk,
    /// Where a new address is logged: the refusal log, whose budget per kind keeps a botnet
    /// from flooding the log.
    log: Arc<RefusalLog>,
    /// Never held across I/O: a save renders under it and writes after, a merge logs after.
    state: Mutex<State>,
    exposures_total: AtomicU64,
}

struct State {
    by_generation: HashMap<u64, KeyUsage>,
    /// The keys whose use is recorded (the current key and the grace key), by generation.
    tracked: HashMap<u64, Fingerprint>,
    exposure: Option<Exposure>,
    dirty: bool,
}

/// Why the usage file could not be written.
#[derive(Debug)]
pub struct SaveError(durable::WriteError);

impl fmt::Display for SaveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot save the key usage: {}", self.0)
    }
}

impl std::error::Error for SaveError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

impl Usage {
    /// Reads `<state_dir>/usage.ron` if there is one. A file that does not parse is moved
    /// aside (never overwritten) and usage starts empty, with a warning.
    pub fn load(state_dir: &Path, log: Arc<RefusalLog>) -> Self {
        Self::load_on(state_dir, Disk::default(), log)
    }

    /// [`Usage::load`], with every save going through `disk`.
    pub fn load_on(state_dir: &Path, disk: Disk, log: Arc<RefusalLog>) -> Self {
        let path = state_dir.join(FILE);
        durable::remove_leftovers(&path);
        let (by_generation, exposure) = match fs::read_to_string(&path) {
            Ok(text) => match parse(&text) {
                Ok(loaded) => loaded,
                Err(e) => {
                    set_aside(&path, &e);
                    (HashMap::new(), None)
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => (HashMap::new(), None),
            Err(e) => {
                log::warn!("cannot read {}: {e}; key usage starts empty", path.display());
                (HashMap::new(), None)
            }
        };
        let state = State { by_generation, tracked: HashMap::new(), exposure, dirty: false };
        let state = Mutex::new(state);
        Self { path, disk, log, state, exposures_total: AtomicU64::new(0) }
    }

    /// Adds a worker's shard to the table. The first sight of an address with a key is logged
    /// (within the refusal log's budget for new addresses) once the table's lock is let go.
    pub fn merge(&self, shard: Shard) {
        if shard.keys.is_empty() {
            return;
        }
        let mut fresh_lines = Vec::new();
        {
            let mut state = locks::lock(&self.state);
            for (generation, mut delta) in shard.keys {
                // A key no longer in force: its late requests are not worth keeping.
                let Some(fingerprint) = state.tracked.get(&generation).cloned() else { continue };
                state.dirty = true;
                if let Some(hot) = delta.hot.take() {
                    delta.stash(hot);
                }
                let usage = state.by_generation.entry(generation).or_default();
                usage.admitted += delta.admitted;
                usage.last_used = usage.last_used.max(delta.last_used);
                usage.dropped += delta.overflow;
                let mut fresh: Vec<IpAddr> = delta
                    .clients
                    .into_values()
                    .filter(|seen| usage.merge_client(*seen))
                    .map(|seen| seen.address)
                    .collect();
                fresh.sort();
                fresh_lines.extend(fresh.into_iter().map(|a| (a, fingerprint.clone(), generation)));
            }
        }
        for (address, fingerprint, generation) in fresh_lines {
            self.log.new_address(address, &fingerprint, generation);
        }
    }

    /// Ends the log's window if it is over (housekeeping).
    pub fn flush_log(&self) {
        self.log.flush();
    }

    /// The usage of the key of `generation`.
    pub fn of(&self, generation: u64) -> KeyUsage {
        locks::lock(&self.state).by_generation.get(&generation).cloned().unwrap_or_default()
    }

    /// Records the use of these keys (generation and fingerprint) from now on, and forgets
    /// every other key's (after a key change, and at start).
    pub fn track(&self, keys: &[(u64, Fingerprint)]) {
        let mut state = locks::lock(&self.state);
        let keep = |g: &u64| keys.iter().any(|(k, _)| k == g);
        let before = state.by_generation.len();
        state.by_generation.retain(|g, _| keep(g));
        let mut changed = state.by_generation.len() != before;
        if state.exposure.is_some_and(|e| !keep(&e.generation)) {
            state.exposure = None;
            changed = true;
        }
        state.tracked = keys.iter().cloned().collect();
        state.dirty |= changed;
    }

    /// Records that the key of `generation` crossed the network in clear text.
    pub fn exposed(&self, exposure: Exposure) {
        self.exposures_total.fetch_add(1, Ordering::Relaxed);
        let mut state = locks::lock(&self.state);
        state.exposure = Some(exposure);
        state.dirty = true;
    }

    /// The last exposure recorded, if its key is still tracked.
    pub fn exposure(&self) -> Option<Exposure> {
        locks::lock(&self.state).exposure
    }

    /// Forgets the exposure record if `still_admitted` says its key no longer is.
    pub fn forget_exposure_unless(&self, still_admitted: impl Fn(u64) -> bool) {
        let mut state = locks::lock(&self.state);
        if state.exposure.is_some_and(|e| !still_admitted(e.generation)) {
            state.exposure = None;
            state.dirty = true;
        }
    }

    pub fn exposures_total(&self) -> u64 {
        self.exposures_total.load(Ordering::Relaxed)
    }

    /// Writes the usage file if anything changed since the last save.
    pub fn save(&self) -> Result<(), SaveError> {
        let text = {
            let mut state = locks::lock(&self.state);
            if !state.dirty {
                return Ok(());
            }
            state.dirty = false;
            render(&state)
        };
        self.disk.write(&self.path, text.as_bytes(), 0o600).map_err(|e| {
            locks::lock(&self.state).dirty = true;
            SaveError(e)
        })
    }
}

fn set_aside(path: &Path, error: &str) {
    let aside = path.with_extension(format!(
        "ron.broken-{}",
        SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
    ));
    match fs::rename(path, &aside) {
        Ok(()) => log::warn!(
            "{}: {error}; moved to {} and key usage starts empty",
            path.display(),
            aside.display()
        ),
        Err(e) => log::warn!(
            "{}: {error}; it cannot be moved aside ({e}), and key usage starts empty",
            path.display()
        ),
    }
}

// The file format.

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsageFile {
    version: u32,
    keys: Vec<KeyUsageFile>,
    exposure: Option<ExposureFile>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyUsageFile {
    generation: u64,
    admitted: u64,
    last_used_at: Option<String>,
    last_used_from: Option<IpAddr>,
    dropped: u64,
    clients: Vec<ClientFile>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientFile {
    address: IpAddr,
    first_seen: String,
    last_seen: String,
    admitted: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExposureFile {
    generation: u64,
    at: String,
    from: IpAddr,
}

type Loaded = (HashMap<u64, KeyUsage>, Option<Exposure>);

fn parse(text: &str) -> Result<Loaded, String> {
    let file: UsageFile = ron::Options::default()
        .from_str(text)
        .map_err(|e| format!("{}:{}: {}", e.span.start.line, e.span.start.col, e.code))?;
    if file.version != FORMAT_VERSION {
        return Err(format!("usage format version {} is not supported", file.version));
    }
    let time = |text: &str| {
        humantime::parse_rfc3339(text).map_err(|e| format!("`{text}` is not a timestamp: {e}"))
    };
    let mut by_generation = HashMap::new();
    for key in file.keys {
        let last_used = match (key.last_used_at, key.last_used_from) {
            (Some(at), Some(from)) => Some((time(&at)?, from)),
            _ => None,
        };
        let mut clients = HashMap::new();
        for c in key.clients.into_iter().take(MAX_CLIENTS) {
            let client = ClientUsage {
                address: c.address,
                first_seen: time(&c.first_seen)?,
                last_seen: time(&c.last_seen)?,
                admitted: c.admitted,
            };
            clients.insert(c.address, client);
        }
        let usage = KeyUsage { admitted: key.admitted, last_used, clients, dropped: key.dropped };
        by_generation.insert(key.generation, usage);
    }
    let exposure = match file.exposure {
        Some(e) => Some(Exposure { generation: e.generation, at: time(&e.at)?, from: e.from }),
        None => None,
    };
    Ok((by_generation, exposure))
}

fn render(state: &State) -> String {
    let mut generations: Vec<&u64> = state.by_generation.keys().collect();
    generations.sort();
    let keys = generations
        .into_iter()
        .filter_map(|g| state.by_generation.get(g).map(|u| (*g, u)))
        .map(|(generation, usage)| KeyUsageFile {
            generation,
            admitted: usage.admitted,
            last_used_at: usage.last_used.map(|(at, _)| rfc3339(at)),
            last_used_from: usage.last_used.map(|(_, from)| from),
            dropped: usage.dropped,
            clients: usage
                .clients()
                .into_iter()
                .map(|c| ClientFile {
                    address: c.address,
                    first_seen: rfc3339(c.first_seen),
                    last_seen: rfc3339(c.last_seen),
                    admitted: c.admitted,
                })
                .collect(),
        })
        .collect();
    let exposure = state.exposure.map(|e| ExposureFile {
        generation: e.generation,
        at: rfc3339(e.at),
        from: e.from,
    });
    let file = UsageFile { version: FORMAT_VERSION, keys, exposure };
    let pretty = ron::ser::PrettyConfig::new().struct_names(false);
    let body = ron::ser::to_string_pretty(&file, pretty).unwrap_or_default();
    format!(
        "// aims-api key usage, written by `aims-api serve` at most once a minute: see GET /key.\n\
         {body}\n"
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn test_log() -> Arc<RefusalLog> {
        Arc::new(RefusalLog::new(Duration::from_secs(10), 20))
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn the_table_keeps_the_most_recent_addresses_and_counts_the_dropped() {
        let mut usage = KeyUsage::default();
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let seen =
            |address, at| ClientUsage { address, first_seen: at, last_seen: at, admitted: 1 };
        for i in 0..(MAX_CLIENTS + 10) {
            let address = IpAddr::from([10, 0, (i / 256) as u8, (i % 256) as u8]);
            assert!(usage.merge_client(seen(address, start + Duration::from_secs(i as u64))));
        }
        assert_eq!(usage.clients().len(), MAX_CLIENTS);
        assert_eq!(usage.dropped, 10);
        // The ten oldest went; the newest is first.
        assert!(!usage.clients.contains_key(&IpAddr::from([10, 0, 0, 9])));
        assert_eq!(usage.clients()[0].address, IpAddr::from([10, 0, 1, 9]));
        assert!(!usage.merge_client(seen(IpAddr::from([10, 0, 1, 9]), start)));
        assert_eq!(usage.clients()[0].admitted, 2);
    }

    #[test]
    fn usage_survives_a_save_and_a_load() {
        let dir = tempfile::tempdir().unwrap();
        let usage = Usage::load(dir.path(), test_log());
        usage.track(&[(3, Fingerprint::parse("aims_...abcd").unwrap())]);
        let mut shard = Shard::default();
        let now = SystemTime::now();
        for address in [ip(2), ip(3), ip(2)] {
            shard.record(3, address, now);
        }
        // A key not tracked (no longer in force): forgotten at the merge.
        shard.record(2, ip(4), now);
        usage.merge(shard);
        assert_eq!(usage.of(2).admitted, 0);
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        usage.exposed(Exposure { generation: 3, at, from: ip(9) });
        usage.save().unwrap();
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &fs::metadata(dir.path().join(FILE)).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        let again = Usage::load(dir.path(), test_log());
        let key = again.of(3);
        assert_eq!(key.admitted, 3);
        assert_eq!(key.last_used.map(|(_, from)| from), Some(ip(2)));
        let clients: Vec<(IpAddr, u64)> =
            key.clients().iter().map(|c| (c.address, c.admitted)).collect();
        assert_eq!(clients, [(ip(2), 2), (ip(3), 1)]);
        assert_eq!(again.exposure(), Some(Exposure { generation: 3, at, from: ip(9) }));
    }

    #[test]
    fn shards_merge_into_one_table_and_each_new_address_is_new_once() {
        let dir = tempfile::tempdir().unwrap();
        let usage = Usage::load(dir.path(), test_log());
        usage.track(&[(1, Fingerprint::parse("aims_...abcd").unwrap())]);
        let t = |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        let (mut a, mut b) = (Shard::default(), Shard::default());
        a.record(1, ip(1), t(10));
        a.record(1, ip(2), t(11));
        a.record(1, ip(1), t(12));
        b.record(1, ip(1), t(5));
        b.record(1, ip(3), t(20));
        usage.merge(a);
        usage.merge(b);
        let key = usage.of(1);
        assert_eq!(key.admitted, 5);
        assert_eq!(key.last_used, Some((t(20), ip(3))));
        let clients: Vec<(IpAddr, u64, SystemTime, SystemTime)> = key
            .clients()
            .iter()
            .map(|c| (c.address, c.admitted, c.first_seen, c.last_seen))
            .collect();
        assert_eq!(
            clients,
            [(ip(3), 1, t(20), t(20)), (ip(1), 3, t(5), t(12)), (ip(2), 1, t(11), t(11))]
        );
    }

    #[test]
    fn a_broken_file_is_set_aside_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE), "(version: 1, keys: [oops").unwrap();
        let usage = Usage::load(dir.path(), test_log());
        assert_eq!(usage.of(1).admitted, 0);
        let names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 1);
        assert!(names[0].starts_with("usage.ron.broken-"), "{names:?}");
    }
}
