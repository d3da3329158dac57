//! What a reload found changed in `config.ron`, and which of it takes effect at once.
//!
//! A reload (SIGHUP, `POST /reload`) reads the file again. What the running server can take
//! live it takes (the log level, the request and connection limits, the admin port's policy,
//! the certificate files, retention); the rest (addresses, thread counts, the state folder,
//! the activation code, …) needs a restart, and the reload names it so the operator is not
//! left believing it applied. Every field of [`Config`] is destructured below, so a new field
//! cannot be added without deciding which it is.

use std::fmt::Debug;

use super::{Admin, Api, Config};

/// One field that differs between the configuration in force and the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    /// As the file spells it: `api.max_header_bytes`.
    pub field: &'static str,
    /// Whether the running server applies it now (else at the next restart).
    pub live: bool,
}

/// The fields of `new` that differ from `old`, in the file's order.
pub fn changes(old: &Config, new: &Config) -> Vec<Change> {
    let mut out = Vec::new();
    let mut note = |field: &'static str, live: bool, differs: bool| {
        if differs {
            out.push(Change { field, live });
        }
    };
    let Config {
        path: _,
        activation_code,
        state_dir,
        log_level,
        refusal_log,
        key_max_lifetime,
        on_key_exposure,
        api,
        admin,
        metrics,
        upstream,
        retention,
        snapshot_memory,
        snapshot_compaction,
    } = new;
    note("activation_code", false, activation_code.as_str() != old.activation_code.as_str());
    note("state_dir", false, differs(state_dir, &old.state_dir));
    note("log_level", true, differs(log_level, &old.log_level));
    note("refusal_log_lines", true, refusal_log.lines != old.refusal_log.lines);
    note("refusal_log_window_secs", true, refusal_log.window != old.refusal_log.window);
    note("key_max_lifetime_days", false, differs(key_max_lifetime, &old.key_max_lifetime));
    note("on_key_exposure", false, differs(on_key_exposure, &old.on_key_exposure));
    api_changes(&old.api, api, &mut note);
    admin_changes(&old.admin, admin, &mut note);
    // The scrape port is bound, and its token file's path taken, at start.
    note("metrics", false, differs(metrics, &old.metrics));
    // Not used by `serve`: the next `snapshot pull` reads it from the file.
    note("upstream", true, differs(upstream, &old.upstream));
    note("snapshots.keep_days / keep_count", true, differs(retention, &old.retention));
    note(
        "snapshots.cached_dates / cache_mib",
        false,
        differs(snapshot_memory, &old.snapshot_memory),
    );
    // The store is opened with it, at start.
    note(
        "snapshots.compact_free_percent",
        false,
        differs(snapshot_compaction, &old.snapshot_compaction),
    );
    out
}

fn api_changes(old: &Api, new: &Api, note: &mut impl FnMut(&'static str, bool, bool)) {
    let Api {
        listen,
        tls,
        workers,
        max_connections,
        max_connections_per_address,
        handshake_timeout,
        shutdown_timeout,
        limits,
        throttle,
    } = new;
    note("api.listen", false, listen != &old.listen);
    note("api.tls_cert / tls_key", true, differs(tls, &old.tls));
    note("api.workers", false, workers != &old.workers);
    note("api.max_connections", true, max_connections != &old.max_connections);
    note(
        "api.max_connections_per_address",
        true,
        max_connections_per_address != &old.max_connections_per_address,
    );
    note("api.handshake_timeout_secs", true, handshake_timeout != &old.handshake_timeout);
    note("api.shutdown_timeout_secs", true, shutdown_timeout != &old.shutdown_timeout);
    note("api.max_header_bytes", true, limits.max_header_bytes != old.limits.max_header_bytes);
    note("api.max_headers", true, limits.max_headers != old.limits.max_headers);
    note("api.max_body_bytes", true, limits.max_body_bytes != old.limits.max_body_bytes);
    note("api.header_timeout_secs", true, limits.header_timeout != old.limits.header_timeout);
    note("api.idle_timeout_secs", true, limits.idle_timeout != old.limits.idle_timeout);
    // The throttle's table is sized and judged by these; it is rebuilt only at start.
    note(
        "api.max_refusals_per_address / refusal_window_secs / throttle_addresses",
        false,
        differs(throttle, &old.throttle),
    );
}

fn admin_changes(old: &Admin, new: &Admin, note: &mut impl FnMut(&'static str, bool, bool)) {
    let Admin { listen, unix_socket, allowed_uids, workers, limits, min_bytes_per_sec } = new;
    note("admin.listen", false, listen != &old.listen);
    note("admin.unix_socket", false, unix_socket != &old.unix_socket);
    note("admin.allowed_uids", true, allowed_uids != &old.allowed_uids);
    note("admin.workers", false, workers != &old.workers);
    note("admin.header_timeout_secs", true, limits.header_timeout != old.limits.header_timeout);
    note("admin.idle_timeout_secs", true, limits.idle_timeout != old.limits.idle_timeout);
    note("admin.max_header_bytes", true, limits.max_header_bytes != old.limits.max_header_bytes);
    note("admin.max_headers", true, limits.max_headers != old.limits.max_headers);
    note("admin.max_body_bytes", true, limits.max_body_bytes != old.limits.max_body_bytes);
    note("admin.min_bytes_per_sec", true, min_bytes_per_sec != &old.min_bytes_per_sec);
}

/// Whether two values differ, by their `Debug` text: every field type prints every value it
/// holds, and not all of them are `PartialEq`.
fn differs<T: Debug>(a: &T, b: &T) -> bool {
    format!("{a:?}") != format!("{b:?}")
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn parse(text: &str) -> Config {
        Config::parse(Path::new("/etc/aims-api/config.ron"), text).unwrap()
    }

    #[test]
    fn each_changed_field_is_named_live_or_not() {
        let old = parse(
            r#"(activation_code: "A", state_dir: "s", api: (listen: "127.0.0.1:1"), admin: (listen: "127.0.0.1:2"))"#,
        );
        assert_eq!(changes(&old, &old), []);
        let new = parse(
            r#"(activation_code: "A", state_dir: "s", log_level: "debug",
                api: (listen: "127.0.0.1:3", max_header_bytes: 4096),
                admin: (listen: "127.0.0.1:2", allowed_uids: [0, 1000]))"#,
        );
        assert_eq!(
            changes(&old, &new),
            [
                Change { field: "log_level", live: true },
                Change { field: "api.listen", live: false },
                Change { field: "api.max_header_bytes", live: true },
                Change { field: "admin.allowed_uids", live: true },
            ]
        );
    }
}
