//! TLS for the public port: the certificate, and the rustls configuration built on it.
//!
//! The operator's certificate and key are read as PEM through `rustls-pki-types`. Without them,
//! a self-signed ECDSA P-256 certificate for `localhost`, `127.0.0.1` and `::1` is made once in
//! `<state_dir>/tls/` and reused, so curl users can pin it with `--cacert`. The configuration
//! is rustls' defaults on the `ring` provider (TLS 1.3 and 1.2, no older), ALPN `http/1.1`, and
//! session resumption by tickets and by a bounded session cache, so returning clients skip the
//! expensive half of the handshake.

use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ring::digest;
use rustls::ServerConfig;
use rustls::server::ServerSessionMemoryCache;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::Config;
use crate::durable::{self, WriteError};

/// Sessions remembered for resumption by id (TLS 1.2). Each costs a few hundred bytes.
const SESSION_CACHE_ENTRIES: usize = 4096;

/// The certificate in service, as the log and `/reload` describe it.
#[derive(Debug, Clone)]
pub struct CertInfo {
    pub cert_path: PathBuf,
    /// SHA-256 of the leaf certificate's DER, as colon-separated upper-case hex (OpenSSL's
    /// `x509 -fingerprint -sha256` form).
    pub sha256: String,
    pub self_signed: bool,
}

#[derive(Debug)]
pub enum TlsError {
    Read { path: PathBuf, message: String },
    NoCertificate { path: PathBuf },
    Rejected { cert: PathBuf, key: PathBuf, source: rustls::Error },
    Generate(rcgen::Error),
    Folder { path: PathBuf, source: io::Error },
    Write(WriteError),
    Provider(rustls::Error),
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
        }
    }
}

impl std::error::Error for TlsError {}

/// Reads (or on first start makes) the certificate and builds the server configuration.
///
/// On a reload, `previous` is the configuration in service: its session cache and ticket keys
/// carry over, so clients resume their sessions across a certificate rotation.
pub fn load(
    config: &Config,
    previous: Option<&ServerConfig>,
) -> Result<(Arc<ServerConfig>, CertInfo), TlsError> {
    let (cert, key, self_signed) = match &config.api.tls {
        Some(files) => (files.cert.clone(), files.key.clone(), false),
        None => {
            let dir = config.state_dir.join("tls");
            let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
            if !cert.exists() || !key.exists() {
                make_self_signed(&dir, &cert, &key)?;
                log::info!("made a self-signed certificate for localhost, 127.0.0.1 and ::1");
            }
            (cert, key, true)
        }
    };
    let chain = read_chain(&cert)?;
    let sha256 = fingerprint(&chain[0]);
    let private_key = PrivateKeyDer::from_pem_file(&key)
        .map_err(|e| TlsError::Read { path: key.clone(), message: e.to_string() })?;
    let server_config = build(chain, private_key, previous)
        .map_err(|source| TlsError::Rejected { cert: cert.clone(), key: key.clone(), source })?;
    Ok((server_config, CertInfo { cert_path: cert, sha256, self_signed }))
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

fn make_self_signed(dir: &Path, cert_path: &Path, key_path: &Path) -> Result<(), TlsError> {
    let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), "::1".to_owned()];
    let mut params = rcgen::CertificateParams::new(names).map_err(TlsError::Generate)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::CommonName, "aims-api self-signed");
    let key =
        rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(TlsError::Generate)?;
    let cert = params.self_signed(&key).map_err(TlsError::Generate)?;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| TlsError::Folder { path: dir.to_owned(), source })?;
    // The key first: a crash between the two leaves no certificate, and the next start makes
    // a fresh pair rather than pairing a new certificate with a stale key.
    durable::write(key_path, key.serialize_pem().as_bytes(), 0o600).map_err(TlsError::Write)?;
    durable::write(cert_path, cert.pem().as_bytes(), 0o644).map_err(TlsError::Write)
}

fn fingerprint(cert: &CertificateDer<'_>) -> String {
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

    #[test]
    fn a_missing_operator_certificate_names_the_file() {
        let text = r#"(activation_code: "C", state_dir: "s", api: (listen: "127.0.0.1:1",
            tls_cert: Some("/nonexistent/c.pem"), tls_key: Some("/nonexistent/k.pem")), admin: (listen: "127.0.0.1:2"))"#;
        let config = Config::parse(Path::new("c.ron"), text).unwrap();
        let err = load(&config, None).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/c.pem"), "{err}");
    }
}
