//! The appliance's live state, shared by every thread of `serve`.
//!
//! Built once at start from the configuration and handed to the listeners as an `Arc`; the
//! handlers ([`crate::api`], [`crate::admin`]) read and change it, and it names none of them:
//! it only holds the domain types and the operations that span more than one (a reload). Only
//! these change while the server runs: the key (through [`KeyManager`], which owns the gate),
//! the set of served snapshots, the TLS configuration (by a reload), the workers' heartbeats,
//! the counters, and the refusal records (log and throttle).

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use rustls::ServerConfig;

use crate::audit::{self, PruneOutcome};
use crate::config::Config;
use crate::connections::PerAddress;
use crate::keys::KeyManager;
use crate::keystore::rfc3339;
use crate::locks;
use crate::metrics::Metrics;
use crate::refusals::RefusalLog;
use crate::snapshot::history::HistoryError;
use crate::snapshot::store::Rule;
use crate::snapshot::{Date, Snapshots, store};
use crate::systemd;
use crate::throttle::Throttle;
use crate::tls::{self, CertInfo, TlsError};

pub struct App {
    pub config: Config,
    /// The key store and the gate, changed together.
    pub keys: KeyManager,
    /// The dated snapshots on disk and the set the API serves, swapped whole on a change.
    pub snapshots: Snapshots,
    tls: RwLock<(Arc<ServerConfig>, CertInfo)>,
    pub refusals: RefusalLog,
    pub metrics: Metrics,
    /// Failed-auth counts per client address, for 429s.
    pub throttle: Throttle,
    /// Open connections on the public port, against `api.max_connections`.
    pub open_connections: AtomicUsize,
    /// The same, per client address, against `api.max_connections_per_address`.
    pub per_address: PerAddress,
    /// Set once: stop accepting, finish what is in flight, exit.
    pub shutting_down: AtomicBool,
    started: Instant,
    /// Per API worker: milliseconds since `started` at its last loop turn (for the watchdog).
    heartbeats: Vec<AtomicU64>,
    /// When the daily checks last ran.
    last_daily: Mutex<Option<Instant>>,
}

pub use crate::keys::EXPIRY_WARNING;
const DAY: Duration = Duration::from_secs(86_400);

/// What a reload changed.
#[derive(Debug, Clone)]
pub struct Reloaded {
    pub cert: CertInfo,
    pub cert_changed: bool,
    pub snapshots: store::Reloaded,
}

/// Why a reload was refused. Nothing in service changed.
#[derive(Debug)]
pub enum ReloadError {
    Tls(TlsError),
    Snapshots(HistoryError),
}

impl fmt::Display for ReloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tls(e) => e.fmt(f),
            Self::Snapshots(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ReloadError {}

impl App {
    pub fn new(
        config: Config,
        keys: KeyManager,
        snapshots: Snapshots,
        tls: (Arc<ServerConfig>, CertInfo),
    ) -> Self {
        let heartbeats = (0..config.api.workers).map(|_| AtomicU64::new(0)).collect();
        let metrics = Metrics::new(config.api.workers);
        let refusals = RefusalLog::new(config.refusal_log.window, config.refusal_log.lines);
        let throttle = Throttle::new(config.api.throttle);
        let per_address = PerAddress::new(config.api.max_connections_per_address);
        Self {
            config,
            keys,
            snapshots,
            tls: RwLock::new(tls),
            refusals,
            throttle,
            metrics,
            open_connections: AtomicUsize::new(0),
            per_address,
            shutting_down: AtomicBool::new(false),
            started: Instant::now(),
            heartbeats,
            last_daily: Mutex::new(None),
        }
    }

    /// The TLS configuration for a new connection.
    pub fn tls_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&locks::read(&self.tls).0)
    }

    /// The certificate in service.
    pub fn cert_info(&self) -> CertInfo {
        locks::read(&self.tls).1.clone()
    }

    /// Re-reads the certificate and key, then the snapshot folder (SIGHUP, `POST /reload`),
    /// telling systemd and the log. New connections get the new certificate; open connections
    /// keep theirs. A certificate that does not load changes nothing at all.
    pub fn reload(&self, trigger: &str) -> Result<Reloaded, ReloadError> {
        systemd::reloading();
        let outcome = self.reload_quietly();
        match &outcome {
            Ok(done) => log::info!(
                "reload ({trigger}): certificate {} sha256={}{}; snapshots served={} imported={} \
                 refused={}",
                done.cert.cert_path.display(),
                done.cert.sha256,
                if done.cert_changed { " (new)" } else { " (unchanged)" },
                done.snapshots.served,
                done.snapshots.imported,
                done.snapshots.refused,
            ),
            Err(e) => {
                log::error!("reload ({trigger}) refused, the certificate in service stays: {e}")
            }
        }
        systemd::ready(&self.status_line());
        outcome
    }

    fn reload_quietly(&self) -> Result<Reloaded, ReloadError> {
        let (cert, cert_changed) = self.reload_tls().map_err(ReloadError::Tls)?;
        let snapshots = self.snapshots.reload().map_err(ReloadError::Snapshots)?;
        Ok(Reloaded { cert, cert_changed, snapshots })
    }

    /// What is due once a minute (the supervisor calls it at least that often): save the key
    /// usage, and once a day (and at start) prune the snapshots retention no longer keeps and
    /// warn of a key that expires within 14 days.
    pub fn housekeeping(&self) {
        if let Err(e) = self.keys.save_usage() {
            log::warn!("{e}; will try again in a minute");
        }
        let daily_due = {
            let mut last = locks::lock(&self.last_daily);
            let due = last.is_none_or(|at| at.elapsed() >= DAY);
            if due {
                *last = Some(Instant::now());
            }
            due
        };
        if daily_due {
            self.prune_snapshots();
        }
        if daily_due && let Some((fingerprint, at)) = self.keys.expires_soon(EXPIRY_WARNING) {
            let days = at.duration_since(SystemTime::now()).map_or(0, |d| d.as_secs() / 86_400);
            log::warn!(
                "the API key {fingerprint} expires at {} (in {days} days): replace it before \
                 then (aims-api key replace --grace 1h), or every client is refused",
                rfc3339(at)
            );
            self.keys.announce();
        }
    }

    /// Removes the dates the config's `snapshots` section no longer keeps (after an import,
    /// and daily), one audit line each. Returns the dates removed.
    pub fn prune_snapshots(&self) -> Vec<Date> {
        let mut removed = Vec::new();
        for pruned in self.snapshots.prune(self.config.retention, SystemTime::now()) {
            let (rule, limit) = match pruned.rule {
                Rule::KeepDays(days) => ("keep_days", u64::from(days)),
                Rule::KeepCount(count) => ("keep_count", count as u64),
            };
            let outcome = match &pruned.outcome {
                Ok(_) => PruneOutcome::Pruned,
                Err(e) => PruneOutcome::Failed { code: "storage", cause: &**e },
            };
            audit::snapshot_prune(pruned.date, rule, limit, outcome).emit();
            if pruned.outcome.is_ok() {
                removed.push(pruned.date);
            }
        }
        removed
    }

    fn reload_tls(&self) -> Result<(CertInfo, bool), TlsError> {
        let current = self.tls_config();
        let (config, cert) = tls::load(&self.config, Some(&current))?;
        let mut guard = locks::write(&self.tls);
        let changed = guard.1.sha256 != cert.sha256;
        *guard = (config, cert.clone());
        Ok((cert, changed))
    }

    /// The daily expiry check: renews a self-signed certificate that is due (as a reload does:
    /// new connections get the new one, open ones keep theirs), warns about an operator's.
    pub fn check_certificate(&self) {
        let info = self.cert_info();
        let now = SystemTime::now();
        if !info.self_signed {
            tls::warn_if_expiring(&info, now);
        } else if tls::renewal_due(&info, now)
            && let Err(e) = self.reload_tls()
        {
            log::error!("cannot renew the self-signed certificate, the old one stays: {e}");
        }
    }

    /// Worker `id` is alive: called at every turn of its loop.
    pub fn heartbeat(&self, id: usize) {
        if let Some(beat) = self.heartbeats.get(id) {
            beat.store(self.millis(), Ordering::Relaxed);
        }
    }

    /// Whether every API worker turned its loop within `window`.
    pub fn workers_alive(&self, window: Duration) -> bool {
        let now = self.millis();
        let window = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        self.heartbeats.iter().all(|b| now.saturating_sub(b.load(Ordering::Relaxed)) <= window)
    }

    fn millis(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// One line for `systemctl status`.
    pub fn status_line(&self) -> String {
        self.keys.status_line()
    }
}
