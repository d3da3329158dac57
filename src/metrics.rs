//! What the server counts, and `GET /metrics` in the Prometheus text format.
//!
//! Counting must cost the hot path nothing it can feel: each API worker owns a cache-line
//! aligned [`Shard`] of relaxed atomics that only it writes, and a scrape sums the shards. Every
//! label value comes from a closed set (routes, status codes, refusal reasons), never from the
//! request: no raw paths, no addresses, so no scrape can be made to grow without bound.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use crate::keystore::KeyRecord;

/// What a request on the public port was, for its `route` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiRoute {
    Application,
    Category,
    Level,
    Team,
    LastAnalysisDate,
    Swagger,
    /// Authenticated, but no such API method.
    Other,
    /// Refused by the gate (400/401/429).
    Refused,
    /// Refused by the HTTP layer before the gate (malformed, oversized, plain HTTP).
    Invalid,
}

impl ApiRoute {
    const ALL: [Self; 9] = [
        Self::Application,
        Self::Category,
        Self::Level,
        Self::Team,
        Self::LastAnalysisDate,
        Self::Swagger,
        Self::Other,
        Self::Refused,
        Self::Invalid,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Application => "application",
            Self::Category => "category",
            Self::Level => "level",
            Self::Team => "team",
            Self::LastAnalysisDate => "last_analysis_date",
            Self::Swagger => "swagger",
            Self::Other => "other",
            Self::Refused => "refused",
            Self::Invalid => "invalid",
        }
    }
}

/// What a request on the admin port was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminRoute {
    Health,
    Key,
    KeyReplace,
    KeyClients,
    KeyCheck,
    KeyRecord,
    Reload,
    Metrics,
    Snapshots,
    Other,
    /// Refused before routing: uid not allowed, browser-shaped, malformed.
    Refused,
}

impl AdminRoute {
    const ALL: [Self; 11] = [
        Self::Health,
        Self::Key,
        Self::KeyReplace,
        Self::KeyClients,
        Self::KeyCheck,
        Self::KeyRecord,
        Self::Reload,
        Self::Metrics,
        Self::Snapshots,
        Self::Other,
        Self::Refused,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Health => "health",
            Self::Key => "key",
            Self::KeyReplace => "key_replace",
            Self::KeyClients => "key_clients",
            Self::KeyCheck => "key_check",
            Self::KeyRecord => "key_record",
            Self::Reload => "reload",
            Self::Metrics => "metrics",
            Self::Snapshots => "snapshots",
            Self::Other => "other",
            Self::Refused => "refused",
        }
    }

    pub fn of_path(path: &str) -> Self {
        match path {
            "/health" => Self::Health,
            "/key" => Self::Key,
            "/key/replace" => Self::KeyReplace,
            "/reload" => Self::Reload,
            "/metrics" => Self::Metrics,
            p if p == "/snapshots" || p.starts_with("/snapshots/") => Self::Snapshots,
            _ => Self::Other,
        }
    }
}

/// What a request on the scrape port (`metrics.listen`) was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScrapeRoute {
    Metrics,
    /// Any other path or method: the port serves nothing else.
    Other,
    /// Refused before routing: no or a wrong bearer token, throttled, malformed.
    Refused,
}

impl ScrapeRoute {
    const ALL: [Self; 3] = [Self::Metrics, Self::Other, Self::Refused];

    fn label(self) -> &'static str {
        match self {
            Self::Metrics => "metrics",
            Self::Other => "other",
            Self::Refused => "refused",
        }
    }
}

/// Why a request was refused, for `aims_refusals_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    MissingHeader,
    EmptyHeader,
    RepeatedHeader,
    MalformedKey,
    WrongKey,
    WrongActivationCode,
    NoKey,
    RevokedKey,
    ExpiredKey,
    RetiredKey,
    Throttled,
    PlainHttp,
    BadRequest,
    AdminUid,
    AdminBrowser,
    /// A connection closed at once: its address held `api.max_connections_per_address`.
    ConnectionCap,
    /// The scrape port: no bearer token, or not the one in `metrics.bearer_token_file`.
    MetricsToken,
    /// An allowed uid found no admin worker it may use free (`503`).
    AdminBusy,
    /// A request's head or body came slower than the port allows (`408`).
    TooSlow,
}

impl Reason {
    const ALL: [Self; 19] = [
        Self::MissingHeader,
        Self::EmptyHeader,
        Self::RepeatedHeader,
        Self::MalformedKey,
        Self::WrongKey,
        Self::WrongActivationCode,
        Self::NoKey,
        Self::RevokedKey,
        Self::ExpiredKey,
        Self::RetiredKey,
        Self::Throttled,
        Self::PlainHttp,
        Self::BadRequest,
        Self::AdminUid,
        Self::AdminBrowser,
        Self::ConnectionCap,
        Self::MetricsToken,
        Self::AdminBusy,
        Self::TooSlow,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::MissingHeader => "missing_header",
            Self::EmptyHeader => "empty_header",
            Self::RepeatedHeader => "repeated_header",
            Self::MalformedKey => "malformed_key",
            Self::WrongKey => "wrong_key",
            Self::WrongActivationCode => "wrong_activation_code",
            Self::NoKey => "no_key",
            Self::RevokedKey => "revoked_key",
            Self::ExpiredKey => "expired_key",
            Self::RetiredKey => "retired_key",
            Self::Throttled => "throttled",
            Self::PlainHttp => "plain_http",
            Self::BadRequest => "bad_request",
            Self::AdminUid => "admin_uid",
            Self::AdminBrowser => "admin_browser",
            Self::ConnectionCap => "connection_cap",
            Self::MetricsToken => "metrics_token",
            Self::AdminBusy => "admin_busy",
            Self::TooSlow => "too_slow",
        }
    }
}

/// The status codes the server answers with; anything else counts as "other".
const STATUSES: [u16; 19] =
    [200, 201, 400, 401, 403, 404, 405, 408, 409, 413, 417, 422, 429, 431, 500, 501, 503, 505, 0];

fn status_slot(status: u16) -> usize {
    STATUSES.iter().position(|&s| s == status).unwrap_or(STATUSES.len() - 1)
}

/// Upper bounds of the latency histogram's buckets, in microseconds.
const LATENCY_BOUNDS_MICROS: [u64; 10] =
    [50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 100_000];

const ROUTES: usize = 11;
// Each shard's table has a row for every route of either port.
const _: () = assert!(ROUTES >= ApiRoute::ALL.len() && ROUTES >= AdminRoute::ALL.len());

/// One writer's counters. Aligned so two workers never write the same cache line.
#[repr(align(128))]
#[derive(Default)]
pub struct Shard {
    requests: [[AtomicU64; STATUSES.len()]; ROUTES],
    refusals: [AtomicU64; Reason::ALL.len()],
    handshakes_full: AtomicU64,
    handshakes_resumed: AtomicU64,
    handshake_failures: AtomicU64,
    /// Requests handed to the blocking threads (their data was not in memory), and those
    /// answered 503 because the threads' queue was full.
    cold_reads: AtomicU64,
    cold_reads_refused: AtomicU64,
    latency: [AtomicU64; LATENCY_BOUNDS_MICROS.len() + 1],
    latency_sum_micros: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Shard {
    fn request(&self, route: usize, status: u16) {
        if let Some(row) = self.requests.get(route) {
            bump(&row[status_slot(status)]);
        }
    }

    pub fn api_request(&self, route: ApiRoute, status: u16, took: Duration) {
        self.request(route as usize, status);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let bucket = LATENCY_BOUNDS_MICROS
            .iter()
            .position(|&b| micros <= b)
            .unwrap_or(LATENCY_BOUNDS_MICROS.len());
        bump(&self.latency[bucket]);
        self.latency_sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    pub fn admin_request(&self, route: AdminRoute, status: u16) {
        self.request(route as usize, status);
    }

    pub fn scrape_request(&self, route: ScrapeRoute, status: u16) {
        self.request(route as usize, status);
    }

    pub fn refusal(&self, reason: Reason) {
        bump(&self.refusals[reason as usize]);
    }

    pub fn handshake(&self, resumed: bool) {
        bump(if resumed { &self.handshakes_resumed } else { &self.handshakes_full });
    }

    pub fn handshake_failure(&self) {
        bump(&self.handshake_failures);
    }

    /// A request handed to the blocking threads (`true`), or refused because they were full.
    pub fn cold_read(&self, handed_over: bool) {
        bump(if handed_over { &self.cold_reads } else { &self.cold_reads_refused });
    }
}

/// Every shard: one per API worker, one for the admin port, one for the scrape port.
pub struct Metrics {
    api: Vec<Shard>,
    admin: Shard,
    scrape: Shard,
}

/// The gauges a scrape reads from the rest of the server.
pub struct Gauges<'a> {
    pub key: &'a KeyRecord,
    /// When the current key last admitted a request.
    pub key_last_used: Option<SystemTime>,
    /// Requests that carried the live or grace key in clear text, since start.
    pub key_exposures: u64,
    /// Whether the live (or grace) key was seen in clear text and not replaced since.
    pub key_exposed: bool,
    pub open_connections: usize,
    pub snapshots: usize,
    pub newest_analysis: Option<SystemTime>,
    /// When the last import still in the store went live, and its source's label.
    pub last_import: Option<(SystemTime, &'static str)>,
    /// The history store's file.
    pub snapshot_store_bytes: u64,
    /// Files in the snapshot folder that did not load (listed as refused by `GET /snapshots`).
    pub snapshot_refused_files: usize,
    /// What the dates in memory hold, the decompressed-application cache included.
    pub snapshot_memory_bytes: usize,
    /// `notAfter` of the certificate in service.
    pub cert_not_after: SystemTime,
    /// Whether `aims-api-pull.timer` is enabled (`None`: this host does not say).
    pub pull_timer_enabled: Option<bool>,
    /// Per kind of line about traffic (its label): events, and lines the budget held back.
    pub log_lines: Vec<(&'static str, u64, u64)>,
}

impl Metrics {
    pub fn new(api_workers: usize) -> Self {
        Self {
            api: (0..api_workers).map(|_| Shard::default()).collect(),
            admin: Shard::default(),
            scrape: Shard::default(),
        }
    }

    /// The shard of API worker `id` (the admin shard if out of range, which never happens).
    pub fn api(&self, id: usize) -> &Shard {
        self.api.get(id).unwrap_or(&self.admin)
    }

    pub fn admin(&self) -> &Shard {
        &self.admin
    }

    /// The scrape port's shard (its threads share it: a scrape every few seconds).
    pub fn scrape(&self) -> &Shard {
        &self.scrape
    }

    /// Renders everything in the Prometheus text exposition format (version 0.0.4).
    pub fn render(&self, gauges: &Gauges<'_>) -> String {
        let mut out = String::with_capacity(8192);
        let sum = |pick: &dyn Fn(&Shard) -> &AtomicU64| -> u64 {
            let shards = self.api.iter().chain([&self.admin, &self.scrape]);
            shards.map(|s| pick(s).load(Ordering::Relaxed)).sum()
        };
        header(
            &mut out,
            "aims_requests_total",
            "counter",
            "Requests answered, by port, route and status.",
        );
        for (route, label) in ApiRoute::ALL.iter().map(|r| (*r as usize, r.label())) {
            for (slot, status) in STATUSES.iter().enumerate() {
                let n: u64 =
                    self.api.iter().map(|s| s.requests[route][slot].load(Ordering::Relaxed)).sum();
                series(
                    &mut out,
                    "aims_requests_total",
                    &[("port", "api"), ("route", label), ("status", &status_label(*status))],
                    n,
                    true,
                );
            }
        }
        for (route, label) in AdminRoute::ALL.iter().map(|r| (*r as usize, r.label())) {
            for (slot, status) in STATUSES.iter().enumerate() {
                let n = self.admin.requests[route][slot].load(Ordering::Relaxed);
                series(
                    &mut out,
                    "aims_requests_total",
                    &[("port", "admin"), ("route", label), ("status", &status_label(*status))],
                    n,
                    true,
                );
            }
        }
        for (route, label) in ScrapeRoute::ALL.iter().map(|r| (*r as usize, r.label())) {
            for (slot, status) in STATUSES.iter().enumerate() {
                let n = self.scrape.requests[route][slot].load(Ordering::Relaxed);
                series(
                    &mut out,
                    "aims_requests_total",
                    &[("port", "metrics"), ("route", label), ("status", &status_label(*status))],
                    n,
                    true,
                );
            }
        }
        header(&mut out, "aims_refusals_total", "counter", "Refused requests, by reason.");
        for reason in Reason::ALL {
            let n = sum(&|s| &s.refusals[reason as usize]);
            series(&mut out, "aims_refusals_total", &[("reason", reason.label())], n, false);
        }
        header(
            &mut out,
            "aims_tls_handshakes_total",
            "counter",
            "Completed TLS handshakes, by kind.",
        );
        series(
            &mut out,
            "aims_tls_handshakes_total",
            &[("kind", "full")],
            sum(&|s| &s.handshakes_full),
            false,
        );
        series(
            &mut out,
            "aims_tls_handshakes_total",
            &[("kind", "resumed")],
            sum(&|s| &s.handshakes_resumed),
            false,
        );
        header(
            &mut out,
            "aims_tls_handshake_failures_total",
            "counter",
            "TLS handshakes that failed or timed out.",
        );
        series(
            &mut out,
            "aims_tls_handshake_failures_total",
            &[],
            sum(&|s| &s.handshake_failures),
            false,
        );
        header(
            &mut out,
            "aims_cold_reads_total",
            "counter",
            "API requests whose data was not in memory, by outcome: answered on a blocking \
             thread, or refused with 503 because every blocking thread was busy and its queue \
             full.",
        );
        let answered = sum(&|s| &s.cold_reads);
        series(&mut out, "aims_cold_reads_total", &[("outcome", "answered")], answered, false);
        let busy = sum(&|s| &s.cold_reads_refused);
        series(&mut out, "aims_cold_reads_total", &[("outcome", "busy")], busy, false);
        self.render_latency(&mut out);
        render_log_budget(&mut out, &gauges.log_lines);
        render_gauges(&mut out, gauges);
        render_last_import(&mut out, gauges.last_import);
        out
    }

    fn render_latency(&self, out: &mut String) {
        let name = "aims_request_duration_seconds";
        header(
            out,
            name,
            "histogram",
            "Time from a whole request to its queued response, api port.",
        );
        let mut cumulative = 0;
        for (i, bound) in LATENCY_BOUNDS_MICROS.iter().map(Some).chain([None]).enumerate() {
            cumulative +=
                self.api.iter().map(|s| s.latency[i].load(Ordering::Relaxed)).sum::<u64>();
            let le = bound.map_or("+Inf".to_owned(), |b| format!("{}", *b as f64 / 1e6));
            let _ = writeln!(out, "{name}_bucket{{port=\"api\",le=\"{le}\"}} {cumulative}");
        }
        let micros: u64 =
            self.api.iter().map(|s| s.latency_sum_micros.load(Ordering::Relaxed)).sum();
        let _ = writeln!(out, "{name}_sum{{port=\"api\"}} {}", micros as f64 / 1e6);
        let _ = writeln!(out, "{name}_count{{port=\"api\"}} {cumulative}");
    }
}

fn render_gauges(out: &mut String, gauges: &Gauges<'_>) {
    if let Some(enabled) = gauges.pull_timer_enabled {
        header(
            out,
            "aims_pull_timer_enabled",
            "gauge",
            "1 while aims-api-pull.timer is enabled (snapshot pull runs twice a day), else 0.",
        );
        let _ = writeln!(out, "aims_pull_timer_enabled {}", u8::from(enabled));
    }
    // As blackbox_exporter's probe_ssl_earliest_cert_expiry: a gauge of Unix seconds, so an
    // alert reads `aims_tls_certificate_expiry_timestamp_seconds - time() < 14 * 86400`.
    header(
        out,
        "aims_tls_certificate_expiry_timestamp_seconds",
        "gauge",
        "NotAfter of the certificate in service on the api port, as Unix time.",
    );
    let expiry = unix_seconds(gauges.cert_not_after);
    let _ = writeln!(out, "aims_tls_certificate_expiry_timestamp_seconds {expiry}");
    header(out, "aims_build_info", "gauge", "Always 1; the version of the running binary.");
    let _ = writeln!(out, "aims_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"));
    header(out, "aims_open_connections", "gauge", "Open connections on the api port.");
    let _ = writeln!(out, "aims_open_connections{{port=\"api\"}} {}", gauges.open_connections);
    header(out, "aims_key_state", "gauge", "1 for the key's current state.");
    let state = gauges.key.state().as_str();
    for label in ["none", "active", "revoked", "expired"] {
        let _ = writeln!(out, "aims_key_state{{state=\"{label}\"}} {}", u8::from(label == state));
    }
    header(
        out,
        "aims_key_age_seconds",
        "gauge",
        "Seconds since the current key was made (0 without one).",
    );
    let age = gauges
        .key
        .key
        .as_ref()
        .and_then(|k| k.created_at.elapsed().ok())
        .map_or(0, |d| d.as_secs());
    let _ = writeln!(out, "aims_key_age_seconds {age}");
    header(out, "aims_key_generation", "gauge", "Key changes since the store was first written.");
    let _ = writeln!(out, "aims_key_generation {}", gauges.key.generation);
    let key = gauges.key.key.as_ref();
    timestamp(
        out,
        "aims_key_expiry_timestamp_seconds",
        "When the current key expires, as Unix time (absent without an expiry).",
        key.filter(|k| k.revoked_at.is_none()).and_then(|k| k.expires_at),
    );
    timestamp(
        out,
        "aims_key_last_used_timestamp_seconds",
        "When the current key last admitted a request, as Unix time (absent before its first).",
        gauges.key_last_used,
    );
    timestamp(
        out,
        "aims_key_grace_until_timestamp_seconds",
        "Until when the replaced key is still admitted, as Unix time (absent without a grace).",
        gauges.key.grace_at(SystemTime::now()).map(|g| g.valid_until),
    );
    header(
        out,
        "aims_key_exposures_total",
        "counter",
        "Requests that carried the live or grace key over plain HTTP (the key crossed the \
         network in clear text).",
    );
    let _ = writeln!(out, "aims_key_exposures_total {}", gauges.key_exposures);
    header(
        out,
        "aims_key_exposed",
        "gauge",
        "1 while the live (or grace) key has been seen in clear text and not replaced since.",
    );
    let _ = writeln!(out, "aims_key_exposed {}", u8::from(gauges.key_exposed));
    header(out, "aims_snapshots", "gauge", "Dated data snapshots being served.");
    let _ = writeln!(out, "aims_snapshots {}", gauges.snapshots);
    header(
        out,
        "aims_snapshot_newest_analysis_timestamp_seconds",
        "gauge",
        "LastAnalyzedOn of the newest snapshot, as Unix time (0 without data).",
    );
    let newest = gauges
        .newest_analysis
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0.0, |d| d.as_secs_f64());
    let _ = writeln!(out, "aims_snapshot_newest_analysis_timestamp_seconds {newest}");
    header(out, "aims_snapshot_store_bytes", "gauge", "Size of the history store's file.");
    let _ = writeln!(out, "aims_snapshot_store_bytes {}", gauges.snapshot_store_bytes);
    header(
        out,
        "aims_snapshot_refused_files",
        "gauge",
        "Files in the snapshot folder that did not load and are not served (damaged or \
         invalid): aims-api snapshot list names them.",
    );
    let _ = writeln!(out, "aims_snapshot_refused_files {}", gauges.snapshot_refused_files);
    header(
        out,
        "aims_snapshot_memory_bytes",
        "gauge",
        "Memory the snapshots hold: the newest date, the older dates cached, and their \
         decompressed applications (bounded by snapshots.cached_dates and cache_mib).",
    );
    let _ = writeln!(out, "aims_snapshot_memory_bytes {}", gauges.snapshot_memory_bytes);
}

/// What the log budget let through and held back: every event is counted, logged or not.
fn render_log_budget(out: &mut String, kinds: &[(&'static str, u64, u64)]) {
    header(
        out,
        "aims_log_events_total",
        "counter",
        "Events that write a line about traffic (refusals, TLS trouble, key exposures, new \
         addresses), by kind, whether the budget let the line through or not.",
    );
    for (kind, events, _) in kinds {
        series(out, "aims_log_events_total", &[("kind", kind)], *events, false);
    }
    header(
        out,
        "aims_log_suppressed_total",
        "counter",
        "Lines about traffic the log budget held back (refusal_log_lines per \
         refusal_log_window_secs and kind), by kind.",
    );
    for (kind, _, suppressed) in kinds {
        series(out, "aims_log_suppressed_total", &[("kind", kind)], *suppressed, false);
    }
}

/// A gauge holding a Unix time, or nothing at all when there is no such time (so an alert on
/// it never fires on a made-up 0).
fn timestamp(out: &mut String, name: &str, help: &str, value: Option<SystemTime>) {
    let Some(seconds) = value.map(unix_seconds) else { return };
    header(out, name, "gauge", help);
    let _ = writeln!(out, "{name} {seconds}");
}

/// Seconds since the Unix epoch (negative before it), as a Prometheus sample value.
fn unix_seconds(time: SystemTime) -> f64 {
    match time.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(after) => after.as_secs_f64(),
        Err(before) => -before.duration().as_secs_f64(),
    }
}

/// One series, labelled with the last import's source, so that an alert can fire when pulls
/// stop. Read from the store, so it survives a restart; absent while no date in the store has
/// a recorded import.
fn render_last_import(out: &mut String, last: Option<(SystemTime, &'static str)>) {
    let name = "aims_snapshot_last_import_timestamp_seconds";
    header(
        out,
        name,
        "gauge",
        "When the last snapshot import still in the store went live, as Unix time; source is \
         pull (aims-api snapshot pull), import (another PUT /snapshots/<date>) or inbox (a file \
         taken over from snapshots/, with the file's time).",
    );
    if let Some((at, source)) = last {
        let _ = writeln!(out, "{name}{{source=\"{source}\"}} {}", unix_seconds(at));
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn status_label(status: u16) -> String {
    if status == 0 { "other".to_owned() } else { status.to_string() }
}

/// One sample line; with `skip_zero`, series that never moved are left out to keep the
/// scrape short (they appear once they count).
fn series(out: &mut String, name: &str, labels: &[(&str, &str)], value: u64, skip_zero: bool) {
    if skip_zero && value == 0 {
        return;
    }
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            let _ = write!(out, "{}{k}=\"{v}\"", if i > 0 { "," } else { "" });
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every metric the shipped alert rules read is one this server exposes (with every
    /// optional gauge present): renaming a metric fails here, not silently in production.
    #[test]
    fn the_alert_rules_read_only_metrics_that_exist() {
        let record = KeyRecord::default();
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let gauges = Gauges {
            key: &record,
            key_last_used: Some(at),
            key_exposures: 0,
            key_exposed: false,
            open_connections: 0,
            snapshots: 0,
            newest_analysis: None,
            last_import: Some((at, "pull")),
            snapshot_store_bytes: 0,
            snapshot_refused_files: 0,
            snapshot_memory_bytes: 0,
            cert_not_after: at,
            pull_timer_enabled: Some(true),
            log_lines: vec![("tls", 0, 0)],
        };
        let text = Metrics::new(1).render(&gauges);
        let declared: Vec<&str> =
            text.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next()).collect();
        let rules = include_str!("../packaging/prometheus/aims-api-rules.yml");
        let mut used: Vec<&str> = rules
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|word| word.starts_with("aims_"))
            .collect();
        used.sort_unstable();
        used.dedup();
        // Only the key's expiry needs a key with one, which the default record has not.
        let absent_here = ["aims_key_expiry_timestamp_seconds"];
        for name in &used {
            assert!(
                declared.contains(name) || absent_here.contains(name),
                "the rules read {name}, which /metrics does not expose: {declared:?}"
            );
        }
        assert!(used.len() >= 10, "{used:?}");
    }

    #[test]
    fn admin_routes_are_recognised() {
        assert_eq!(AdminRoute::of_path("/snapshots/2024-01-01"), AdminRoute::Snapshots);
        assert_eq!(AdminRoute::of_path("/keys"), AdminRoute::Other);
    }

    #[test]
    fn counts_sum_across_shards_and_render_with_bounded_labels() {
        let metrics = Metrics::new(2);
        metrics.api(0).api_request(ApiRoute::Level, 200, Duration::from_micros(40));
        metrics.api(1).api_request(ApiRoute::Level, 200, Duration::from_micros(300));
        metrics.api(1).api_request(ApiRoute::Refused, 401, Duration::from_micros(10));
        metrics.api(1).api_request(ApiRoute::Other, 299, Duration::from_micros(10));
        metrics.api(0).refusal(Reason::WrongKey);
        metrics.api(0).handshake(true);
        metrics.admin().admin_request(AdminRoute::Key, 201);
        metrics.scrape().scrape_request(ScrapeRoute::Refused, 401);
        metrics.scrape().refusal(Reason::MetricsToken);
        let record = KeyRecord::default();
        let gauges = Gauges {
            key: &record,
            key_last_used: None,
            key_exposures: 0,
            key_exposed: false,
            open_connections: 3,
            snapshots: 0,
            newest_analysis: None,
            last_import: Some((
                SystemTime::UNIX_EPOCH + Duration::from_millis(1_800_000_000_500),
                "pull",
            )),
            snapshot_store_bytes: 4096,
            snapshot_refused_files: 0,
            snapshot_memory_bytes: 0,
            cert_not_after: SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
            pull_timer_enabled: Some(false),
            log_lines: vec![("tls", 7, 5)],
        };
        let text = metrics.render(&gauges);
        for line in [
            "aims_requests_total{port=\"api\",route=\"level\",status=\"200\"} 2",
            "aims_requests_total{port=\"api\",route=\"refused\",status=\"401\"} 1",
            "aims_requests_total{port=\"api\",route=\"other\",status=\"other\"} 1",
            "aims_requests_total{port=\"admin\",route=\"key\",status=\"201\"} 1",
            "aims_refusals_total{reason=\"wrong_key\"} 1",
            "aims_requests_total{port=\"metrics\",route=\"refused\",status=\"401\"} 1",
            "aims_refusals_total{reason=\"metrics_token\"} 1",
            "aims_pull_timer_enabled 0\n",
            "aims_tls_handshakes_total{kind=\"resumed\"} 1",
            "aims_request_duration_seconds_bucket{port=\"api\",le=\"0.00005\"} 3",
            "aims_request_duration_seconds_bucket{port=\"api\",le=\"+Inf\"} 4",
            "aims_open_connections{port=\"api\"} 3",
            "aims_key_state{state=\"none\"} 1",
            "aims_log_events_total{kind=\"tls\"} 7\n",
            "aims_log_suppressed_total{kind=\"tls\"} 5\n",
            "aims_tls_certificate_expiry_timestamp_seconds 1800000000\n",
            "aims_snapshot_last_import_timestamp_seconds{source=\"pull\"} 1800000000.5\n",
            concat!("aims_build_info{version=\"", env!("CARGO_PKG_VERSION"), "\"} 1\n"),
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        assert!(!text.contains("route=\"team\""), "untouched series are left out");
    }
}
