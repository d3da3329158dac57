//! TLS for the public port: the certificate, and the rustls configuration built on it.
//!
//! The operator's certificate and key are read as PEM through `rustls-pki-types`. Without them,
//! a self-signed ECDSA P-256 certificate for `localhost`, `127.0.0.1` and `::1` is made in
//! `<state_dir>/tls/` and reused, so curl users can pin it with `--cacert`. It is valid for 397
//! days (the CA/Browser Forum's ceiling; a leaked key must not live for ever), from an hour in
//! the past (clients whose clock lags still accept it), for `digitalSignature` and `serverAuth`
//! only. `serve` makes a new one when fewer than 30 days remain, at start and once a day; a
//! certificate the operator configured is never replaced, only warned about. The configuration
//! is rustls' defaults on the `ring` provider (TLS 1.3 and 1.2, no older), the server's cipher
//! order, ALPN `http/1.1`, and session resumption by tickets and by a bounded session cache, so
//! returning clients skip the expensive half of the handshake.

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ring::digest;
use rustls::ServerConfig;
use rustls::server::ServerSessionMemoryCache;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::Config;
use crate::durable::{self, WriteError};
pub use crate::x509::Leaf;

/// Sessions remembered for resumption by id (TLS 1.2). Each costs a few hundred bytes.
const SESSION_CACHE_ENTRIES: usize = 4096;

/// How long a self-signed certificate is valid, from `notBefore` (an hour back) to `notAfter`:
/// 397 days, the longest the CA/Browser Forum's baseline requirements allow a server
/// certificate since 2020.
pub const SELF_SIGNED_VALIDITY: Duration = Duration::from_secs(397 * 86_400);

/// How far in the past a self-signed certificate's `notBefore` lies, for clients whose clock
/// runs behind ours.
const CLOCK_SKEW_ALLOWANCE: Duration = Duration::from_secs(3600);

/// A self-signed certificate with less than this left is renewed; an operator's is warned about.
pub const RENEW_BEFORE: Duration = Duration::from_secs(30 * 86_400);

/// How often a running `serve` looks at the certificate's expiry.
const EXPIRY_CHECK_INTERVAL: Duration = Duration::from_secs(86_400);

/// For tests only, so renewal can be seen without waiting a year: the validity in seconds of a
/// self-signed certificate made from now on (instead of 397 days), and how often in seconds a
/// running server checks the expiry (instead of daily). Not documented for operators.
const TEST_VALIDITY_ENV: &str = "AIMS_API_TEST_CERT_VALIDITY_SECS";
const TEST_CHECK_ENV: &str = "AIMS_API_TEST_CERT_CHECK_SECS";

/// Held while the self-signed files are read, judged and (re)made.
static SELF_SIGNED_FILES: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The common name of the certificates this server makes, by which it knows its own.
pub const SELF_SIGNED_CN: &str = "aims-api self-signed";

/// The names a self-signed certificate is made for.
pub const SELF_SIGNED_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// The certificate in service, as the log, `/reload`, the metrics and `diagnose` describe it.
#[derive(Debug, Clone)]
pub struct CertInfo {
    pub cert_path: PathBuf,
    /// SHA-256 of the leaf certificate's DER, as colon-separated upper-case hex (OpenSSL's
    /// `x509 -fingerprint -sha256` form).
    pub sha256: String,
    pub self_signed: bool,
    /// Made by this server, so this server renews it. A certificate put in the self-signed
    /// folder by hand is served but never replaced.
    pub renewable: bool,
    pub leaf: Leaf,
}

#[derive(Debug)]
pub enum TlsError {
    Read {
        path: PathBuf,
        message: String,
    },
    NoCertificate {
        path: PathBuf,
    },
    Unparsable {
        path: PathBuf,
        message: String,
    },
    Rejected {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
    Generate(rcgen::Error),
    Folder {
        path: PathBuf,
        source: io::Error,
    },
    Write(WriteError),
    Provider(rustls::Error),
    /// A certificate put in the self-signed folder by hand expires within 30 days, or has.
    ShortLived {
        path: PathBuf,
        why: String,
    },
    /// A certificate put in the self-signed folder by hand cannot be served: never replaced.
    Placed {
        cert: PathBuf,
        cause: Box<TlsError>,
    },
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Read { path, message } => {
                write!(f, "cannot read PEM from {}: {message}", path.display())
            }
            Self::NoCertificate { path } => {
                write!(f, "{} holds no CERTIFICATE section", path.display())
            }
            Self::Unparsable { path, message } => {
                write!(f, "cannot read the certificate in {}: {message}", path.display())
            }
            Self::Rejected { cert, key, source } => write!(
                f,
                "the certificate {} and key {} cannot be used together: {source}",
                cert.display(),
                key.display()
            ),
            Self::Generate(e) => write!(f, "cannot make a self-signed certificate: {e}"),
            Self::Folder { path, source } => {
                write!(f, "cannot create the folder {}: {source}", path.display())
            }
            Self::Write(e) => e.fmt(f),
            Self::Provider(e) => write!(f, "cannot set up TLS: {e}"),
            Self::ShortLived { path, why } => {
                write!(f, "the certificate {} is short-lived: {why}", path.display())
            }
            Self::Placed { cert, cause } => write!(
                f,
                "{cause}; {} was not made by this server, so it is not replaced: put a usable \
                 certificate and key there, or remove both files to have a new self-signed \
                 pair made",
                cert.display()
            ),
        }
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Rejected { source, .. } | Self::Provider(source) => Some(source),
            Self::Generate(e) => Some(e),
            Self::Folder { source, .. } => Some(source),
            Self::Write(e) => Some(e),
            Self::Placed { cause, .. } => Some(cause.as_ref()),
            Self::Read { .. }
            | Self::NoCertificate { .. }
            | Self::Unparsable { .. }
            | Self::ShortLived { .. } => None,
        }
    }
}

/// What a TLS error caused by a peer was, in the server's words: a fixed event word and a
/// description. Nothing the peer sent is in either (only names of the protocol's own values).
/// `None` for a client that closed politely (`close_notify`) mid-handshake: scanners and
/// impatient clients do it all the time, and it is counted as a failed handshake anyway.
pub fn describe_peer_error(e: &rustls::Error) -> Option<(&'static str, String)> {
    use rustls::Error as E;
    if matches!(e, E::AlertReceived(rustls::AlertDescription::CloseNotify)) {
        return None;
    }
    Some(match e {
        E::InvalidMessage(m) => ("invalid_message", format!("malformed TLS message ({m:?})")),
        E::PeerIncompatible(p) => ("peer_incompatible", format!("nothing in common ({p:?})")),
        E::PeerMisbehaved(p) => ("peer_misbehaved", format!("protocol violation ({p:?})")),
        E::AlertReceived(a) => ("alert_received", format!("the client sent the alert {a:?}")),
        E::InappropriateMessage { .. } | E::InappropriateHandshakeMessage { .. } => {
            ("unexpected_message", "a TLS message out of order".to_owned())
        }
        E::DecryptError => ("decrypt_error", "a record that does not decrypt".to_owned()),
        E::PeerSentOversizedRecord => ("oversized_record", "a record over 16 KiB".to_owned()),
        E::NoApplicationProtocol => {
            ("no_alpn", "the client offers no protocol this server speaks (ALPN)".to_owned())
        }
        _ => ("handshake_failed", "another TLS error".to_owned()),
    })
}

/// Reads (or on first start makes) the certificate and builds the server configuration.
///
/// In self-signed mode the files in `<state_dir>/tls/` are ours only if we made them (a
/// self-issued certificate named [`SELF_SIGNED_CN`]): ours is replaced when fewer than
/// [`RENEW_BEFORE`] remain, when it is older than this version's longest life, or when it does
/// not match its key. A certificate someone else put there is never replaced: it is served if
/// it is usable and refused (the start fails, a reload is refused and the certificate in
/// service stays) if it is not, with an error that says what to do.
///
/// On a reload, `previous` is the configuration in service: its session cache and ticket keys
/// carry over, so clients resume their sessions across a certificate rotation.
pub fn load(
    config: &Config,
    previous: Option<&ServerConfig>,
) -> Result<(Arc<ServerConfig>, CertInfo), TlsError> {
    let now = SystemTime::now();
    let Some(files) = &config.api.tls else {
        return load_self_signed(&config.state_dir, previous, now);
    };
    let loaded = load_files(&files.cert, &files.key, false, previous)?;
    warn_if_expiring(&loaded.1, now);
    Ok(loaded)
}

fn load_self_signed(
    state_dir: &Path,
    previous: Option<&ServerConfig>,
    now: SystemTime,
) -> Result<(Arc<ServerConfig>, CertInfo), TlsError> {
    let (cert, key) = self_signed_paths(state_dir);
    // A SIGHUP, a POST /reload and the daily check may all load at once: one at a time decides
    // whether to make a new pair and writes it.
    let _making = SELF_SIGNED_FILES.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if !cert.exists() {
        // First start, or a first start cut short after the key was written.
        make_self_signed(&cert, &key, now)?;
        log::info!("made a self-signed certificate for localhost, 127.0.0.1 and ::1");
        return load_files(&cert, &key, true, previous);
    }
    let found = Leaf::parse(read_chain(&cert)?[0].as_ref())
        .map_err(|message| TlsError::Unparsable { path: cert.clone(), message })?;
    if !made_here(&found) {
        return load_placed(&cert, &key, &found, previous, now);
    }
    let renewed = renewal_reason(&found, now);
    if renewed.is_some() {
        make_self_signed(&cert, &key, now)?;
    }
    let loaded = match load_files(&cert, &key, true, previous) {
        Ok(loaded) => loaded,
        // A renewal cut short between its two renames leaves a new key beside our old
        // certificate. The pair is ours to remake, and clients must re-pin either way.
        Err(e @ (TlsError::Rejected { .. } | TlsError::Read { .. })) => {
            log::warn!("{e}: making a new self-signed certificate and key");
            make_self_signed(&cert, &key, now)?;
            load_files(&cert, &key, true, previous)?
        }
        Err(e) => return Err(e),
    };
    if let Some(why) = renewed {
        log::warn!(
            "renewed the self-signed certificate {} ({why}): new sha256={}, valid until {}; \
             clients that pin it (curl --cacert) need the new one",
            cert.display(),
            loaded.1.sha256,
            crate::keystore::rfc3339(loaded.1.leaf.not_after),
        );
    }
    Ok(loaded)
}

/// A certificate someone put in `<state_dir>/tls/` by hand: served as it is if usable, never
/// replaced. One about to expire is refused rather than served for a few days and then
/// silently left to lapse (nothing renews it).
fn load_placed(
    cert: &Path,
    key: &Path,
    found: &Leaf,
    previous: Option<&ServerConfig>,
    now: SystemTime,
) -> Result<(Arc<ServerConfig>, CertInfo), TlsError> {
    let placed = |e: TlsError| TlsError::Placed { cert: cert.to_owned(), cause: Box::new(e) };
    if let Some(why) = renewal_reason(found, now) {
        return Err(placed(TlsError::ShortLived { path: cert.to_owned(), why }));
    }
    let mut loaded = load_files(cert, key, false, previous).map_err(placed)?;
    loaded.1.self_signed = true;
    loaded.1.renewable = false;
    warn_if_expiring(&loaded.1, now);
    Ok(loaded)
}

/// Whether this server made the certificate: self-issued and named [`SELF_SIGNED_CN`].
fn made_here(leaf: &Leaf) -> bool {
    leaf.self_issued && leaf.subject_holds(SELF_SIGNED_CN)
}

fn load_files(
    cert: &Path,
    key: &Path,
    self_signed: bool,
    previous: Option<&ServerConfig>,
) -> Result<(Arc<ServerConfig>, CertInfo), TlsError> {
    let chain = read_chain(cert)?;
    let sha256 = fingerprint(&chain[0]);
    let leaf = Leaf::parse(chain[0].as_ref())
        .map_err(|message| TlsError::Unparsable { path: cert.to_owned(), message })?;
    let private_key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| TlsError::Read { path: key.to_owned(), message: e.to_string() })?;
    let server_config = build(chain, private_key, previous).map_err(|source| {
        TlsError::Rejected { cert: cert.to_owned(), key: key.to_owned(), source }
    })?;
    let info =
        CertInfo { cert_path: cert.to_owned(), sha256, self_signed, renewable: self_signed, leaf };
    Ok((server_config, info))
}

/// Where the self-signed certificate and its key live.
pub fn self_signed_paths(state_dir: &Path) -> (PathBuf, PathBuf) {
    let dir = state_dir.join("tls");
    (dir.join("cert.pem"), dir.join("key.pem"))
}

/// Why a self-signed certificate must be replaced at `now`, if it must.
fn renewal_reason(leaf: &Leaf, now: SystemTime) -> Option<String> {
    let until = crate::keystore::rfc3339(leaf.not_after);
    if leaf.not_after <= now {
        return Some(format!("it expired at {until}"));
    }
    if leaf.remaining(now) < RENEW_BEFORE {
        return Some(format!("it expires at {until}, in less than 30 days"));
    }
    let lifetime = leaf.not_after.duration_since(leaf.not_before).unwrap_or(Duration::MAX);
    if lifetime > SELF_SIGNED_VALIDITY + CLOCK_SKEW_ALLOWANCE {
        return Some(format!(
            "it is valid until {until}, longer than 397 days (made by an older version)"
        ));
    }
    None
}

/// Whether the certificate in service must be renewed now: only one this server made ever is.
pub fn renewal_due(info: &CertInfo, now: SystemTime) -> bool {
    info.renewable && renewal_reason(&info.leaf, now).is_some()
}

/// Logs a warning when the operator's certificate expires within 30 days or has expired: it is
/// theirs to replace (then `systemctl reload aims-api`), never ours.
pub fn warn_if_expiring(info: &CertInfo, now: SystemTime) {
    let until = crate::keystore::rfc3339(info.leaf.not_after);
    let path = info.cert_path.display();
    if info.leaf.not_after <= now {
        log::error!(
            "the certificate {path} expired at {until}: clients refuse it; install a new one \
             and run systemctl reload aims-api"
        );
    } else if info.leaf.remaining(now) < RENEW_BEFORE {
        log::warn!(
            "the certificate {path} expires at {until}, in {} days: install a new one and run \
             systemctl reload aims-api",
            info.leaf.remaining(now).as_secs() / 86_400
        );
    }
}

/// How often a running server checks the certificate's expiry: daily (tests may shorten it).
pub fn expiry_check_interval() -> Duration {
    test_seconds(TEST_CHECK_ENV).unwrap_or(EXPIRY_CHECK_INTERVAL)
}

/// `notAfter` of a certificate made at `now`: 397 days after its `notBefore`, so the hour it
/// starts back counts against the 397 days (tests may ask for a validity from `now` instead).
fn self_signed_until(now: SystemTime) -> SystemTime {
    match test_seconds(TEST_VALIDITY_ENV) {
        Some(validity) => now + validity,
        None => now - CLOCK_SKEW_ALLOWANCE + SELF_SIGNED_VALIDITY,
    }
}

fn test_seconds(name: &str) -> Option<Duration> {
    let secs: u64 = std::env::var(name).ok()?.parse().ok()?;
    Some(Duration::from_secs(secs.max(1)))
}

/// Reads a PEM certificate chain (the leaf first), for `load` and `diagnose`.
pub fn read_pem_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    read_chain(path)
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read_error = |e: rustls_pki_types::pem::Error| TlsError::Read {
        path: path.to_owned(),
        message: e.to_string(),
    };
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(read_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(read_error)?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate { path: path.to_owned() });
    }
    Ok(chain)
}

fn build(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    previous: Option<&ServerConfig>,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Every suite rustls offers is strong, but its order (AES-GCM before ChaCha20, TLS 1.3 before
    // 1.2's ECDHE suites) is the better one; scanners flag a server that lets the client choose.
    config.ignore_client_order = true;
    match previous {
        Some(previous) => {
            config.session_storage = Arc::clone(&previous.session_storage);
            config.ticketer = Arc::clone(&previous.ticketer);
        }
        None => {
            config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES);
            config.ticketer = rustls::crypto::ring::Ticketer::new()?;
        }
    }
    Ok(Arc::new(config))
}

fn make_self_signed(cert_path: &Path, key_path: &Path, now: SystemTime) -> Result<(), TlsError> {
    let names: Vec<String> = SELF_SIGNED_NAMES.iter().map(|n| (*n).to_owned()).collect();
    let mut params = rcgen::CertificateParams::new(names).map_err(TlsError::Generate)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, SELF_SIGNED_CN);
    params.not_before = time::OffsetDateTime::from(now - CLOCK_SKEW_ALLOWANCE);
    params.not_after = time::OffsetDateTime::from(self_signed_until(now));
    params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let key =
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(TlsError::Generate)?;
    let cert = params.self_signed(&key).map_err(TlsError::Generate)?;
    let dir = cert_path.parent().unwrap_or(Path::new("."));
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| TlsError::Folder { path: dir.to_owned(), source })?;
    // The key first: a crash between the two leaves no certificate (first start) or the old
    // certificate with the new key (renewal); either way the next start makes a fresh pair.
    durable::write(key_path, key.serialize_pem().as_bytes(), 0o600).map_err(TlsError::Write)?;
    durable::write(cert_path, cert.pem().as_bytes(), 0o644).map_err(TlsError::Write)
}

pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    let digest = digest::digest(&digest::SHA256, cert.as_ref());
    let hex: Vec<String> = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
    hex.join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_material_is_made_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            r#"(activation_code: "C", state_dir: "{}", api: (listen: "127.0.0.1:1"), admin: (listen: "127.0.0.1:2"))"#,
            dir.path().display()
        );
        let config = Config::parse(Path::new("c.ron"), &text).unwrap();
        let (_, first) = load(&config, None).unwrap();
        let (_, second) = load(&config, None).unwrap();
        assert!(first.self_signed);
        assert_eq!(first.sha256, second.sha256);
        assert_eq!(first.sha256.len(), 32 * 3 - 1);
    }

    fn leaf(from_secs_ago: u64, valid_secs: u64, now: SystemTime) -> Leaf {
        let not_before = now - Duration::from_secs(from_secs_ago);
        let not_after = not_before + Duration::from_secs(valid_secs);
        Leaf { not_before, not_after, names: vec![], self_issued: true, subject: vec![] }
    }

    #[test]
    fn renewal_is_due_under_30_days_left_expired_or_made_too_long() {
        let now = SystemTime::now();
        let day = 86_400;
        let fresh = leaf(3600, SELF_SIGNED_VALIDITY.as_secs() + 3600, now);
        assert_eq!(renewal_reason(&fresh, now), None);
        assert_eq!(renewal_reason(&leaf(0, 31 * day, now), now), None);
        let soon = renewal_reason(&leaf(0, 29 * day, now), now).unwrap();
        assert!(soon.contains("in less than 30 days"), "{soon}");
        let gone = renewal_reason(&leaf(10 * day, 5 * day, now), now).unwrap();
        assert!(gone.starts_with("it expired at"), "{gone}");
        // Valid 1975 to 4096, as versions before this one made it.
        let legacy = leaf(51 * 365 * day, 2121 * 365 * day, now);
        assert!(renewal_reason(&legacy, now).unwrap().contains("longer than 397 days"));
    }

    #[test]
    fn a_made_certificate_is_valid_397_days_in_all_from_an_hour_ago_for_its_names() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = self_signed_paths(dir.path());
        let now = SystemTime::now();
        make_self_signed(&cert, &key, now).unwrap();
        let made = Leaf::parse(read_chain(&cert).unwrap()[0].as_ref()).unwrap();
        let secs = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
        // DER times have whole seconds.
        assert_eq!(secs(made.not_before), secs(now - CLOCK_SKEW_ALLOWANCE));
        assert_eq!(secs(made.not_after), secs(now - CLOCK_SKEW_ALLOWANCE + SELF_SIGNED_VALIDITY));
        assert_eq!(
            made.not_after.duration_since(made.not_before).unwrap(),
            SELF_SIGNED_VALIDITY,
            "397 days in all, the hour back included"
        );
        assert!(made_here(&made));
        assert_eq!(made.names, SELF_SIGNED_NAMES);
        assert_eq!(renewal_reason(&made, now), None);
    }

    #[test]
    fn a_missing_operator_certificate_names_the_file() {
        let text = r#"(activation_code: "C", state_dir: "s", api: (listen: "127.0.0.1:1",
            tls_cert: Some("/nonexistent/c.pem"), tls_key: Some("/nonexistent/k.pem")), admin: (listen: "127.0.0.1:2"))"#;
        let config = Config::parse(Path::new("c.ron"), text).unwrap();
        let err = load(&config, None).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/c.pem"), "{err}");
    }
}
