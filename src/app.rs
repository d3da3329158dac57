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
use crate::config::{Change, Config, ConfigError};
use crate::connections::PerAddress;
use crate::keys::KeyManager;
use crate::keystore::rfc3339;
use crate::locks;
use crate::metrics::Metrics;
use crate::peer::PeerLookup;
use crate::refusals::RefusalLog;
use crate::snapshot::history::HistoryError;
use crate::snapshot::store::Rule;
use crate::snapshot::{Date, Snapshots, store};
use crate::systemd;
use crate::throttle::Throttle;
use crate::tls::{self, CertInfo, TlsError};

pub struct App {
    /// The configuration the server started with: what only a restart changes is read here.
    pub config: Config,
    /// The configuration as of the last reload: what a reload applies live is read here.
    live: RwLock<Arc<Config>>,
    /// The key store and the gate, changed together.
    pub keys: KeyManager,
    /// The dated snapshots on disk and the set the API serves, swapped whole on a change.
    pub snapshots: Snapshots,
    tls: RwLock<(Arc<ServerConfig>, CertInfo)>,
    /// How the admin port finds a TCP client's uid (decided once at start).
    pub uid_lookup: PeerLookup,
    /// Everything traffic makes the server say, within one budget (shared with key usage).
    pub refusals: Arc<RefusalLog>,
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
    /// The fields of `config.ron` that changed, each applied now or at the next restart.
    pub config_changes: Vec<Change>,
    /// `log_level` changed but `RUST_LOG` decides the levels, so it was not applied.
    pub log_level_overridden: bool,
}

/// Why a reload was refused. Nothing in service changed (a snapshot folder that cannot be
/// read is found after the certificate was switched: that stays switched).
#[derive(Debug)]
pub enum ReloadError {
    /// `config.ron` does not parse: the server keeps running as it is, but cannot restart.
    Config(ConfigError),
    Tls(TlsError),
    Snapshots(HistoryError),
}

impl fmt::Display for ReloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Config(e) => write!(
                f,
                "the configuration is invalid: {e}; nothing was reloaded and the server runs on \
                 as it was, but the next restart would fail: fix the file (aims-api \
                 check-config) and reload again"
            ),
            Self::Tls(e) => write!(f, "{e}; the certificate in service stays"),
            Self::Snapshots(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for ReloadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Config(e) => Some(e),
            Self::Tls(e) => Some(e),
            Self::Snapshots(e) => Some(e),
        }
    }
}

impl App {
    pub fn new(
        config: Config,
        keys: KeyManager,
        snapshots: Snapshots,
        tls: (Arc<ServerConfig>, CertInfo),
        refusals: Arc<RefusalLog>,
        uid_lookup: PeerLookup,
    ) -> Self {
        let heartbeats = (0..config.api.workers).map(|_| AtomicU64::new(0)).collect();
        let metrics = Metrics::new(config.api.workers);
        let throttle = Throttle::new(config.api.throttle);
        let per_address = PerAddress::new(config.api.max_connections_per_address);
        Self {
            live: RwLock::new(Arc::new(config.clone())),
            config,
            keys,
            snapshots,
            uid_lookup,
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

    /// The configuration in force for what a reload applies live (limits, allowed uids, …).
    pub fn live(&self) -> Arc<Config> {
        Arc::clone(&locks::read(&self.live))
    }

    /// The TLS configuration for a new connection.
    pub fn tls_config(&self) -> Arc<ServerConfig> {
        Arc::clone(&locks::read(&self.tls).0)
    }

    /// The certificate in service.
    pub fn cert_info(&self) -> CertInfo {
        locks::read(&self.tls).1.clone()
    }

    /// Re-reads `config.ron`, the certificate and key, then the snapshot folder (SIGHUP,
    /// `POST /reload`), telling systemd and the log. A configuration that does not parse, or a
    /// certificate that does not load, changes nothing at all. Of a valid configuration, what
    /// can change live does (see [`crate::config::changes`]); the rest is named as waiting for
    /// a restart. New connections get the new certificate; open connections keep theirs.
    pub fn reload(&self, trigger: &str) -> Result<Reloaded, ReloadError> {
        systemd::reloading();
        let outcome = self.reload_quietly();
        match &outcome {
            Ok(done) => {
                log::info!(
                    "reload ({trigger}): certificate {} sha256={}{}; snapshots served={} \
                     imported={} refused={}; config: {}",
                    done.cert.cert_path.display(),
                    done.cert.sha256,
                    if done.cert_changed { " (new)" } else { " (unchanged)" },
                    done.snapshots.served,
                    done.snapshots.imported,
                    done.snapshots.refused,
                    ChangeList(&done.config_changes, true),
                );
                if done.config_changes.iter().any(|c| !c.live) {
                    log::warn!(
                        "reload ({trigger}): config.ron changes that take effect only at the next \
                         restart: {}",
                        ChangeList(&done.config_changes, false)
                    );
                }
                if done.log_level_overridden {
                    log::warn!("reload ({trigger}): log_level not applied: RUST_LOG decides");
                }
            }
            Err(e) => log::error!("reload ({trigger}) refused: {e}"),
        }
        match &outcome {
            // `systemctl status` says it too, until a reload with a valid file.
            Err(ReloadError::Config(_)) => systemd::ready(&format!(
                "{}; config.ron is INVALID: the next restart would fail (journalctl -u aims-api)",
                self.status_line()
            )),
            _ => systemd::ready(&self.status_line()),
        }
        outcome
    }

    fn reload_quietly(&self) -> Result<Reloaded, ReloadError> {
        let new = Config::load(&self.config.path).map_err(ReloadError::Config)?;
        let config_changes = crate::config::changes(&self.live(), &new);
        let (cert, cert_changed) = self.reload_tls(&new).map_err(ReloadError::Tls)?;
        let snapshots = self.snapshots.reload().map_err(ReloadError::Snapshots)?;
        let log_level_overridden = !crate::logging::set_level(new.log_level.0)
            && config_changes.iter().any(|c| c.field == "log_level");
        self.refusals.set_budget(new.refusal_log.window, new.refusal_log.lines);
        self.per_address.set_limit(new.api.max_connections_per_address);
        // The workers read the rest from here: the API port's at its next sweep, the admin
        // port at its next connection.
        *locks::write(&self.live) = Arc::new(new);
        Ok(Reloaded { cert, cert_changed, snapshots, config_changes, log_level_overridden })
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
        for pruned in self.snapshots.prune(self.live().retention, SystemTime::now()) {
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

    fn reload_tls(&self, config: &Config) -> Result<(CertInfo, bool), TlsError> {
        let current = self.tls_config();
        let (config, cert) = tls::load(config, Some(&current))?;
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
        if !info.renewable {
            tls::warn_if_expiring(&info, now);
        } else if tls::renewal_due(&info, now)
            && let Err(e) = self.reload_tls(&self.live())
        {
            log::error!("cannot renew the self-signed certificate, the old one stays: {e}");
        }
    }

    /// Worker `id` is alive: called at each deadline sweep of its loop, at least every 250 ms.
    pub fn heartbeat(&self, id: usize) {
        if let Some(beat) = self.heartbeats.get(id) {
            beat.store(self.millis(), Ordering::Relaxed);
        }
    }

    /// Whether every API worker turned its loop within `window`.
    pub fn workers_alive(&self, window: Duration) -> bool {
        // Beats come once a sweep: a shorter window would call a live worker stalled.
        let window = window.max(Duration::from_secs(1));
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

/// The changed fields that apply now (`live`), or that wait for a restart, comma-separated.
struct ChangeList<'a>(&'a [Change], bool);

impl fmt::Display for ChangeList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut fields = self.0.iter().filter(|c| c.live == self.1).map(|c| c.field).peekable();
        if fields.peek().is_none() {
            return f.write_str(if self.1 { "nothing changed live" } else { "none" });
        }
        if self.1 {
            f.write_str("applied ")?;
        }
        for (i, field) in fields.enumerate() {
            write!(f, "{}{field}", if i > 0 { ", " } else { "" })?;
        }
        Ok(())
    }
}
