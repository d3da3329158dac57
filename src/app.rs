//! The appliance's live state, shared by every thread of `serve`.
//!
//! Built once at start from the configuration and handed to the listeners as an `Arc`. Only
//! these change while the server runs: the gate's key state (by the admin port), the TLS
//! configuration (by a reload), the counters, and the refusal records (log and throttle).

use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, RwLock};

use rustls::ServerConfig;

use crate::admin::KeyManager;
use crate::config::Config;
use crate::gate::Gate;
use crate::log::RefusalLog;
use crate::throttle::Throttle;
use crate::tls::CertInfo;

pub struct App {
    pub config: Config,
    pub gate: Gate,
    pub keys: KeyManager,
    pub tls: RwLock<(Arc<ServerConfig>, CertInfo)>,
    pub refusals: RefusalLog,
    /// Failed-auth counts per client address, for 429s.
    pub throttle: Throttle,
    /// Open connections on the public port, against `api.max_connections`.
    pub open_connections: AtomicUsize,
    /// Set once: stop accepting, finish what is in flight, exit.
    pub shutting_down: AtomicBool,
}

impl App {
    pub fn new(config: Config, keys: KeyManager, tls: (Arc<ServerConfig>, CertInfo)) -> Self {
        let gate = Gate::new(&config.activation_code, &keys.record());
        let refusals = RefusalLog::new(config.refusal_log.window, config.refusal_log.lines);
        let throttle = Throttle::new(config.api.throttle);
        Self {
            config,
            gate,
            keys,
            tls: RwLock::new(tls),
            refusals,
            throttle,
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
