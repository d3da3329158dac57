//! The appliance's live state, shared by every thread of `serve`.
//!
//! Built once at start from the configuration and handed to the listeners as an `Arc`. Only
//! four things in it change while the server runs: the gate's key state and the set of served
//! snapshots (both by the admin port), the TLS configuration (by a reload), and the counters.

use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::ServerConfig;

use crate::admin::KeyManager;
use crate::config::Config;
use crate::gate::Gate;
use crate::log::RefusalLog;
use crate::snapshot::Snapshots;
use crate::tls::CertInfo;

pub struct App {
    pub config: Config,
    pub gate: Gate,
    pub keys: KeyManager,
    /// The dated snapshots on disk and the set the API serves, swapped whole on a change.
    pub snapshots: Snapshots,
    pub tls: RwLock<(Arc<ServerConfig>, CertInfo)>,
    pub refusals: RefusalLog,
    /// Open connections on the public port, against `api.max_connections`.
    pub open_connections: AtomicUsize,
    /// Set once: stop accepting, finish what is in flight, exit.
    pub shutting_down: AtomicBool,
}

impl App {
    pub fn new(
        config: Config,
        keys: KeyManager,
        snapshots: Snapshots,
        tls: (Arc<ServerConfig>, CertInfo),
    ) -> Self {
        let gate = Gate::new(&config.activation_code, &keys.record());
        Self {
            config,
            gate,
            keys,
            snapshots,
            tls: RwLock::new(tls),
            refusals: RefusalLog::new(Duration::from_secs(10), 20),
            open_connections: AtomicUsize::new(0),
            shutting_down: AtomicBool::new(false),
        }
    }

    /// The TLS configuration for a new connection.
    pub fn tls_config(&self) -> Arc<ServerConfig> {
        match self.tls.read() {
            Ok(guard) => Arc::clone(&guard.0),
            Err(poisoned) => Arc::clone(&poisoned.into_inner().0),
        }
    }
}
