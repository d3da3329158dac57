//! What the server does to its own process before it touches a secret or a socket.
//!
//! It turns core dumps off (`PR_SET_DUMPABLE` 0 and a core size limit of 0), so a crash or a
//! debugger attach by another user cannot copy a freshly generated key out of memory, and it
//! raises the soft limit on open files to the hard limit, because every connection is a
//! descriptor and the default soft limit of 1024 would cap the server below its configured
//! `max_connections`.

use rustix::process::{
    DumpableBehavior, Resource, Rlimit, getrlimit, set_dumpable_behavior, setrlimit,
};

/// Applies both settings; failures are logged, not fatal (neither weakens authentication).
pub fn apply() {
    no_core_dumps();
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            log::warn!("cannot raise the open-file limit: {e}");
        }
    }
}

/// Keeps this process's memory out of core dumps and away from same-uid debuggers: the
/// process is marked not dumpable (which also makes its `/proc/<pid>` files root's), and its
/// core size limit is zero in case a later exec or setuid made it dumpable again. For `serve`
/// and for the CLI commands that receive a new key.
pub fn no_core_dumps() {
    if let Err(e) = set_dumpable_behavior(DumpableBehavior::NotDumpable) {
        log::warn!("cannot turn core dumps off (prctl PR_SET_DUMPABLE): {e}");
    }
    // Already 0 under systemd's LimitCORE=0, where the syscall filter may refuse setrlimit.
    let core = getrlimit(Resource::Core);
    if (core.current, core.maximum) == (Some(0), Some(0)) {
        return;
    }
    if let Err(e) = setrlimit(Resource::Core, Rlimit { current: Some(0), maximum: Some(0) }) {
        log::warn!("cannot set the core size limit to 0: {e}");
    }
}

/// How many files this process may open, for the startup check against `max_connections`.
pub fn open_file_limit() -> Option<u64> {
    getrlimit(Resource::Nofile).current
}

#[cfg(test)]
mod tests {
    use rustix::process::dumpable_behavior;

    use super::*;

    #[test]
    fn no_core_dumps_marks_the_process_undumpable_with_no_core_size() {
        no_core_dumps();
        assert_eq!(dumpable_behavior().unwrap(), DumpableBehavior::NotDumpable);
        let core = getrlimit(Resource::Core);
        assert_eq!((core.current, core.maximum), (Some(0), Some(0)));
    }
}
