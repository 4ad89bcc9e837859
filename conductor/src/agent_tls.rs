//! HTTPS towards an agent whose self-signed certificate arrived in its
//! heartbeat (`agent_verify_ca`), as Ironic does with `verify=<that PEM>`.
//!
//! The certificate is pinned: the agent must present exactly it, valid for
//! the address dialled, and the handshake is then verified with its key.
//! Chain validation (webpki) is not used because IPA 13 signs its auto-TLS
//! certificate with ECDSA-SHA512, which rustls' ring provider cannot check
//! (found by running the real IPA against ferrite-conductor): the handshake
//! failed with `decrypt_error`. For a pinned self-signed certificate the
//! self-signature proves nothing anyway; what matters is the key's proof of
//! possession in the handshake, which is checked.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::{CertificateError, DigitallySignedStruct, Error, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

#[derive(Debug, thiserror::Error)]
pub enum AgentTlsError {
    #[error("the agent's PEM holds no certificate: {0}")]
    NoCertificate(String),
    #[error("TLS setup: {0}")]
    Setup(String),
}

/// Accepts only the pinned certificates.
#[derive(Debug)]
struct Pinned {
    certs: Vec<CertificateDer<'static>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        if !self.certs.iter().any(|c| c.as_ref() == end_entity.as_ref()) {
            return Err(Error::InvalidCertificate(CertificateError::UnknownIssuer));
        }
        let cert = webpki::EndEntityCert::try_from(end_entity).map_err(|e| {
            Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(e))))
        })?;
        cert.verify_is_valid_for_subject_name(server_name)
            .map_err(|_| Error::InvalidCertificate(CertificateError::NotValidForName))?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(
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
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A TLS 1.2+ client configuration that trusts exactly the certificates in
/// `pem`.
pub fn pinned_client_config(pem: &[u8]) -> Result<rustls::ClientConfig, AgentTlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| AgentTlsError::NoCertificate(e.to_string()))?;
    if certs.is_empty() {
        return Err(AgentTlsError::NoCertificate("no CERTIFICATE block".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| AgentTlsError::Setup(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned { certs, provider }))
        .with_no_client_auth();
    Ok(config)
}
