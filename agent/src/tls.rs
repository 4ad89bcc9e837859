//! Auto-TLS as IPA does it: a fresh self-signed EC certificate whose only
//! SubjectAlternativeName is the advertised IP; its PEM goes to Ironic in
//! every heartbeat as `agent_verify_ca`.

use std::fs;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, KeyPair, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::config::TlsVersion;

/// IPA's `auto_tls_allowed_clock_skew`: ramdisk clocks are often off.
const CLOCK_SKEW: Duration = Duration::from_secs(3600);
/// IPA's certificate lifetime: 30 days.
const VALIDITY: Duration = Duration::from_secs(30 * 86_400);

pub struct AgentCertificate {
    pub cert_pem: String,
    pub key_pem: String,
    cert_der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

/// The agent's key: EC P-384, IPA's default curve.
pub fn generate_key() -> anyhow::Result<KeyPair> {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).context("generating the EC P-384 key")
}

impl AgentCertificate {
    /// EC P-384 key (IPA's default curve), CN = hostname, SAN = `ip`.
    pub fn generate(ip: IpAddr, hostname: &str) -> anyhow::Result<Self> {
        Self::sign(generate_key()?, ip, hostname)
    }

    /// The certificate for a key made earlier: the ramdisk makes its key
    /// while DHCP runs, and signs once it knows its address (and the clock
    /// is set: the validity starts now).
    pub fn sign(key: KeyPair, ip: IpAddr, hostname: &str) -> anyhow::Result<Self> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, hostname);
        params.distinguished_name = dn;
        params.subject_alt_names = vec![SanType::IpAddress(ip)];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(unix_now());
        params.not_before = now - CLOCK_SKEW;
        params.not_after = now + VALIDITY;
        let cert = params
            .self_signed(&key)
            .context("signing the agent certificate")?;
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().clone(),
            key_der: key.serialize_der(),
        })
    }

    /// The certificate an earlier agent process of this boot wrote with
    /// [`write_files`](Self::write_files): Ironic refuses a heartbeat whose
    /// `agent_verify_ca` changed, so a restarted agent must keep it.
    pub fn load(dir: &Path) -> anyhow::Result<Option<Self>> {
        use rustls::pki_types::pem::PemObject;
        let Some(key_pem) = crate::secret_file::read_private(&dir.join("agent.key"))? else {
            return Ok(None);
        };
        let cert_pem = match fs::read_to_string(dir.join("agent.crt")) {
            Ok(p) => p,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).context("reading agent.crt"),
        };
        let key_pem = String::from_utf8(key_pem).context("agent.key is not PEM")?;
        let key = KeyPair::from_pem(&key_pem).context("parsing agent.key")?;
        let cert_der =
            CertificateDer::from_pem_slice(cert_pem.as_bytes()).context("parsing agent.crt")?;
        Ok(Some(Self {
            cert_pem,
            key_pem,
            cert_der,
            key_der: key.serialize_der(),
        }))
    }

    /// Keep copies where IPA keeps them, for operators poking at a ramdisk.
    pub fn write_files(&self, dir: &Path) -> anyhow::Result<()> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        fs::write(dir.join("agent.crt"), &self.cert_pem).context("writing agent.crt")?;
        crate::secret_file::write_private(&dir.join("agent.key"), self.key_pem.as_bytes())
            .context("writing agent.key")?;
        Ok(())
    }

    /// A rustls server config with the TLS floor Ironic asked for.
    pub fn server_config(
        &self,
        min_version: TlsVersion,
    ) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let versions: &[&rustls::SupportedProtocolVersion] = match min_version {
            TlsVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
            TlsVersion::V1_3 => &[&rustls::version::TLS13],
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .context("choosing TLS versions")?
            .with_no_client_auth()
            .with_single_cert(
                vec![self.cert_der.clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone())),
            )
            .context("loading the agent certificate")?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The certificates of an `ipa-cafile` bundle.
pub fn read_cafile(path: &std::path::Path) -> anyhow::Result<Vec<reqwest::Certificate>> {
    let pem =
        std::fs::read(path).with_context(|| format!("reading ipa-cafile {}", path.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .with_context(|| format!("parsing ipa-cafile {}", path.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "no certificate in ipa-cafile {}",
        path.display()
    );
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_has_ip_san_and_loads() {
        let cert = AgentCertificate::generate("192.0.2.10".parse().unwrap(), "agent-host").unwrap();
        assert!(cert.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(cert.key_pem.contains("PRIVATE KEY"));
        cert.server_config(TlsVersion::V1_3).unwrap();
        let dir = tempfile::tempdir().unwrap();
        cert.write_files(dir.path()).unwrap();
        assert!(dir.path().join("agent.crt").exists());
    }
}
