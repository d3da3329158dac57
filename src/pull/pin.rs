//! `upstream.pin_sha256`: trust exactly the upstream whose public key has this SHA-256.
//!
//! A self-signed certificate made the usual way (`openssl req -x509`) says `CA:TRUE`, and
//! webpki refuses a CA certificate as a server's own (`CaUsedAsEndEntity`) whatever
//! `ca_file` says. A pin sidesteps chains altogether, as curl's `--pinnedpubkey` and SSH's
//! known hosts do: the server must prove, in the handshake, that it holds the private key of
//! the pinned public key, and nothing else about its certificate is asked (chain, names and
//! dates). The handshake's signature is still checked with the provider's algorithms, so a
//! server that only copied the certificate fails.
//!
//! `ureq` has no hook for a verifier of our own, so when a pin is set this module supplies
//! the TLS step of its connector chain (its `unversioned` transport API): TCP (and a CONNECT
//! proxy) as `ureq` does them, then rustls with [`PinVerifier`]. Without a pin, nothing here
//! is used.

use std::fmt;
use std::io::{Read, Write};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{
    CertificateError, ClientConfig, ClientConnection, DigitallySignedStruct, OtherError,
    SignatureScheme, StreamOwned,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use ureq::unversioned::resolver::DefaultResolver;
use ureq::unversioned::transport::{
    Buffers, ConnectProxyConnector, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout,
    TcpConnector, Transport, TransportAdapter,
};

use crate::config::PinSha256;

/// A presented public key that is not the pinned one: the handshake fails with this inside.
#[derive(Debug)]
pub struct PinMismatch {
    pub presented: PinSha256,
    pub pinned: PinSha256,
}

impl fmt::Display for PinMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the server's public key is {}, not the pinned {}", self.presented, self.pinned)
    }
}

impl std::error::Error for PinMismatch {}

/// Whether `error` is webpki's refusal of a CA certificate presented as a server's own.
pub fn is_ca_used_as_end_entity(error: &rustls::Error) -> bool {
    other(error).and_then(|e| e.downcast_ref::<webpki::Error>())
        == Some(&webpki::Error::CaUsedAsEndEntity)
}

/// The pin mismatch inside `error`, if that is why the handshake failed.
pub fn mismatch(error: &rustls::Error) -> Option<&PinMismatch> {
    other(error)?.downcast_ref::<PinMismatch>()
}

fn other(error: &rustls::Error) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
    match error {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) => {
            Some(&**inner)
        }
        _ => None,
    }
}

/// Accepts the one server whose end-entity certificate carries the pinned public key.
#[derive(Debug)]
pub struct PinVerifier {
    pin: PinSha256,
    provider: Arc<CryptoProvider>,
}

impl PinVerifier {
    pub fn new(pin: PinSha256, provider: Arc<CryptoProvider>) -> Self {
        Self { pin, provider }
    }
}

/// The SHA-256 of `cert`'s public key, or the certificate error that says it cannot be read.
pub fn public_key_pin(cert: &CertificateDer<'_>) -> Result<PinSha256, rustls::Error> {
    let spki = crate::x509::subject_public_key_info(cert.as_ref())
        .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
    Ok(PinSha256::of_public_key(spki))
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented = public_key_pin(end_entity)?;
        // A public value against a public value: no need for a constant-time comparison.
        if presented == self.pin {
            return Ok(ServerCertVerified::assertion());
        }
        let mismatch = PinMismatch { presented, pinned: self.pin };
        Err(rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(
            mismatch,
        )))))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// An agent whose every HTTPS connection is verified by `pin` alone.
pub fn agent(config: ureq::config::Config, pin: PinSha256) -> Result<ureq::Agent, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinVerifier::new(pin, provider)))
        .with_no_client_auth();
    let connector =
        ().chain(ConnectProxyConnector::default())
            .chain(TcpConnector::default())
            .chain(PinnedTls { config: Arc::new(tls) });
    Ok(ureq::Agent::with_parts(config, connector, DefaultResolver::default()))
}

/// The TLS step of the connector chain, with the pinning configuration.
#[derive(Debug)]
struct PinnedTls {
    config: Arc<ClientConfig>,
}

impl<In: Transport> Connector<In> for PinnedTls {
    type Out = Either<In, PinnedTransport>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        let Some(transport) = chained else { return Ok(None) };
        if !details.needs_tls() || transport.is_tls() {
            return Ok(Some(Either::A(transport)));
        }
        let host = details.uri.host().unwrap_or("");
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host.to_owned())
            .map_err(|_| ureq::Error::Tls("the upstream's host is not a valid TLS server name"))?;
        let mut conn = ClientConnection::new(Arc::clone(&self.config), name)?;
        let mut sock = TransportAdapter::new(transport.boxed(), details.current_time.clone());
        sock.set_timeout(details.timeout);
        conn.complete_io(&mut sock)?;
        let buffers = LazyBuffers::new(
            details.config.input_buffer_size(),
            details.config.output_buffer_size(),
        );
        Ok(Some(Either::B(PinnedTransport { buffers, stream: StreamOwned { conn, sock } })))
    }
}

/// A connection verified by the pin: rustls over the chained transport.
pub struct PinnedTransport {
    buffers: LazyBuffers,
    stream: StreamOwned<ClientConnection, TransportAdapter>,
}

impl fmt::Debug for PinnedTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PinnedTransport").finish_non_exhaustive()
    }
}

impl Transport for PinnedTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let output = &self.buffers.output()[..amount];
        self.stream.write_all(output)?;
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let input = self.buffers.input_append_buf();
        let amount = self.stream.read(input)?;
        self.buffers.input_appended(amount);
        Ok(amount > 0)
    }

    fn is_open(&mut self) -> bool {
        self.stream.get_mut().get_mut().is_open()
    }

    fn is_tls(&self) -> bool {
        true
    }
}
