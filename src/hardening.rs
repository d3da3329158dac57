//! What the server does to its own process before it touches a secret or a socket.
//!
//! It turns core dumps off (`PR_SET_DUMPABLE` 0), so a crash or a debugger attach by another
//! user cannot copy a freshly generated key out of memory, and it raises the soft limit on open
//! files to the hard limit, because every connection is a descriptor and the default soft
//! limit of 1024 would cap the server below its configured `max_connections`.

use rustix::process::{DumpableBehavior, Resource, getrlimit, set_dumpable_behavior, setrlimit};

/// Applies both settings; failures are logged, not fatal (neither weakens authentication).
pub fn apply() {
    if let Err(e) = set_dumpable_behavior(DumpableBehavior::NotDumpable) {
        log::warn!("cannot turn core dumps off (prctl PR_SET_DUMPABLE): {e}");
    }
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            log::warn!("cannot raise the open-file limit: {e}");
        }
    }
}

/// How many files this process may open, for the startup check against `max_connections`.
pub fn open_file_limit() -> Option<u64> {
    getrlimit(Resource::Nofile).current
}
