//! The appliance's live state, shared by every thread of `serve`.
//!
//! Built once at start from the configuration and handed to the listeners as an `Arc`. Only
//! these change while the server runs: the gate's key state and the set of served snapshots
//! (both by the admin port), the TLS configuration (by a reload), the workers' heartbeats, the
//! counters, and the refusal records (log and throttle).

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rustls::ServerConfig;

use crate::admin::KeyManager;
use crate::config::Config;
use crate::gate::Gate;
use crate::log::RefusalLog;
use crate::metrics::Metrics;
use crate::snapshot::{Snapshots, store};
use crate::throttle::Throttle;
use crate::tls::{self, CertInfo, TlsError};

pub struct App {
    pub config: Config,
    pub gate: Gate,
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
    /// Set once: stop accepting, finish what is in flight, exit.
    pub shutting_down: AtomicBool,
    started: Instant,
    /// Per API worker: milliseconds since `started` at its last loop turn (for the watchdog).
    heartbeats: Vec<AtomicU64>,
}

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
    Snapshots(store::OpenError),
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
        let gate = Gate::new(&config.activation_code, &keys.record());
        let heartbeats = (0..config.api.workers).map(|_| AtomicU64::new(0)).collect();
        let metrics = Metrics::new(config.api.workers);
        let refusals = RefusalLog::new(config.refusal_log.window, config.refusal_log.lines);
        let throttle = Throttle::new(config.api.throttle);
        Self {
            config,
            gate,
            keys,
            snapshots,
            tls: RwLock::new(tls),
            refusals,
            throttle,
            metrics,
            open_connections: AtomicUsize::new(0),
            shutting_down: AtomicBool::new(false),
            started: Instant::now(),
            heartbeats,
        }
    }

    /// The TLS configuration for a new connection.
    pub fn tls_config(&self) -> Arc<ServerConfig> {
        match self.tls.read() {
            Ok(guard) => Arc::clone(&guard.0),
            Err(poisoned) => Arc::clone(&poisoned.into_inner().0),
        }
    }

    /// The certificate in service.
    pub fn cert_info(&self) -> CertInfo {
        match self.tls.read() {
            Ok(guard) => guard.1.clone(),
            Err(poisoned) => poisoned.into_inner().1.clone(),
        }
    }

    /// Re-reads the certificate and key, then the snapshot folder. New connections get the
    /// new certificate; open connections keep theirs. A certificate that does not load
    /// changes nothing at all.
    pub fn reload(&self) -> Result<Reloaded, ReloadError> {
        let (cert, cert_changed) = self.reload_tls().map_err(ReloadError::Tls)?;
        let snapshots = self.snapshots.reload().map_err(ReloadError::Snapshots)?;
        Ok(Reloaded { cert, cert_changed, snapshots })
    }

    fn reload_tls(&self) -> Result<(CertInfo, bool), TlsError> {
        let current = self.tls_config();
        let (config, cert) = tls::load(&self.config, Some(&current))?;
        let mut guard = self.tls.write().unwrap_or_else(|poisoned| poisoned.into_inner());
        let changed = guard.1.sha256 != cert.sha256;
        *guard = (config, cert.clone());
        Ok((cert, changed))
    }

    /// The daily expiry check: renews a self-signed certificate that is due (as a reload does:
    /// new connections get the new one, open ones keep theirs), warns about an operator's.
    pub fn check_certificate(&self) {
        let info = self.cert_info();
        let now = std::time::SystemTime::now();
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
        KeySummary(&self.keys.record()).to_string()
    }
}

struct KeySummary<'a>(&'a crate::keystore::KeyRecord);

impl fmt::Display for KeySummary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let record = self.0;
        write!(f, "key {}", record.state().as_str())?;
        if let Some(key) = &record.key {
            write!(f, " ({}, generation {})", key.fingerprint, record.generation)?;
        }
        Ok(())
    }
}
