//! TLS to PostgreSQL. When TLS is used, the server's certificate chain and
//! host name are always verified: stricter than libpq's `sslmode=require`,
//! which encrypts without checking whom it talks to. The database holds BMC
//! passwords and agent tokens, so an unverified server is no server.
//!
//! The URL's `sslmode` is read here rather than by tokio-postgres, which
//! knows only disable/prefer/require and would default to `prefer`:
//!
//! | `sslmode`                            | here                                   |
//! |--------------------------------------|----------------------------------------|
//! | absent, `require`, `verify-ca`, `verify-full` | TLS required, verified        |
//! | absent, on a Unix socket             | plaintext (PostgreSQL has no TLS there)|
//! | `prefer`                             | TLS, verified, if the server offers it |
//! | `disable`                            | plaintext                              |
//!
//! Trust anchors: `--database-ca-file` or libpq's `sslrootcert=` (a PEM
//! file; `sslrootcert=system` names the host's store), else the host's
//! trust store.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use percent_encoding::percent_decode_str;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::error_chain;
use crate::store::{StoreError, StoreResult};

/// Whose certificates may vouch for the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Trust {
    File(PathBuf),
    System,
}

impl std::fmt::Display for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::File(path) => write!(f, "the CA file {}", path.display()),
            Self::System => f.write_str("the system's trust store"),
        }
    }
}

/// A `--database` URL made ready for tokio-postgres.
pub(super) struct Target {
    pub config: tokio_postgres::Config,
    pub mode: SslMode,
    pub trust: Trust,
    /// Unix sockets only: plaintext there is no exposure.
    pub local: bool,
}

impl Target {
    /// Take `sslmode` and `sslrootcert` out of `url`'s query (libpq spells
    /// values tokio-postgres refuses), and parse the rest. Errors never
    /// repeat the URL: it may hold a password.
    pub fn parse(url: &str, ca_file: Option<&Path>) -> StoreResult<Self> {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut mode = None;
        let mut root_cert = None;
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decoded = || percent_decode_str(value).decode_utf8_lossy().into_owned();
            match key {
                "sslmode" => mode = Some(ssl_mode(&decoded())?),
                "sslrootcert" => root_cert = Some(decoded()),
                _ => kept.push(pair),
            }
        }
        let trust = match (ca_file, root_cert) {
            (Some(_), Some(_)) => {
                return Err(StoreError::Config(
                    "the PostgreSQL CA is given twice: use --database-ca-file or the URL's \
                     sslrootcert=, not both"
                        .into(),
                ))
            }
            (Some(path), None) => Trust::File(path.to_path_buf()),
            (None, Some(root)) if root == "system" => Trust::System,
            (None, Some(root)) => Trust::File(root.into()),
            (None, None) => Trust::System,
        };
        let rest = if kept.is_empty() {
            base.to_string()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        let mut config: tokio_postgres::Config = rest.parse().map_err(|e| {
            StoreError::Config(format!("invalid PostgreSQL URL: {}", error_chain(&e)))
        })?;
        // Secure by default: no sslmode is `require`, not tokio-postgres's
        // `prefer`; but a local socket has no wire to protect and no TLS.
        let hosts = config.get_hosts();
        let local = !hosts.is_empty()
            && config.get_hostaddrs().is_empty()
            && hosts
                .iter()
                .all(|h| matches!(h, tokio_postgres::config::Host::Unix(_)));
        let mode = mode.unwrap_or(if local {
            SslMode::Disable
        } else {
            SslMode::Require
        });
        config.ssl_mode(mode);
        Ok(Self {
            config,
            mode,
            trust,
            local,
        })
    }
}

fn ssl_mode(value: &str) -> StoreResult<SslMode> {
    match value {
        "disable" => Ok(SslMode::Disable),
        "prefer" => Ok(SslMode::Prefer),
        // verify-ca checks the chain only in libpq; here the host name too.
        "require" | "verify-ca" | "verify-full" => Ok(SslMode::Require),
        // libpq's `allow` tries plaintext first: an attacker's choice.
        other => Err(StoreError::Config(format!(
            "unsupported sslmode={other} in the PostgreSQL URL: expected disable, prefer, \
             require, verify-ca or verify-full"
        ))),
    }
}

/// The rustls connector for `trust`, on the workspace's ring provider.
pub(super) fn connector(trust: &Trust) -> StoreResult<MakeRustlsConnect> {
    let mut roots = rustls::RootCertStore::empty();
    match trust {
        Trust::File(path) => {
            let pem = std::fs::read(path).map_err(|e| {
                StoreError::Config(format!(
                    "reading the PostgreSQL CA file {}: {e}",
                    path.display()
                ))
            })?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| {
                    StoreError::Config(format!("the PostgreSQL CA file {}: {e}", path.display()))
                })?;
                roots.add(cert).map_err(|e| {
                    StoreError::Config(format!(
                        "a certificate in the PostgreSQL CA file {}: {e}",
                        path.display()
                    ))
                })?;
            }
        }
        Trust::System => {
            let found = rustls_native_certs::load_native_certs();
            for error in &found.errors {
                tracing::warn!(%error, "reading the system's trust store");
            }
            roots.add_parsable_certificates(found.certs);
        }
    }
    if roots.is_empty() {
        return Err(StoreError::Config(format!(
            "no CA certificate in {trust} to verify the PostgreSQL server with \
             (give --database-ca-file, or sslmode=disable on a trusted link)"
        )));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| StoreError::Config(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// What to check when the handshake failed on the server's certificate.
pub(super) fn hint(error: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    use rustls::CertificateError as C;
    let mut next = Some(error);
    while let Some(e) = next {
        // tokio-rustls hands rustls' error over inside an io::Error, whose
        // source() skips it.
        let tls = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .or_else(|| e.downcast_ref::<rustls::Error>());
        if let Some(rustls::Error::InvalidCertificate(cert)) = tls {
            return Some(match cert {
                C::NotValidForName | C::NotValidForNameContext { .. } => {
                    "the host in the URL must be a name the server's certificate is issued for"
                }
                C::UnknownIssuer | C::BadSignature | C::UnhandledCriticalExtension => {
                    "the server's certificate must be issued by a CA in --database-ca-file \
                     (or sslrootcert=), else in the system's trust store"
                }
                _ => "the server's certificate was refused",
            });
        }
        next = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> StoreResult<Target> {
        Target::parse(url, None)
    }

    #[test]
    fn sslmode_defaults_to_require_and_libpq_spellings_map() {
        let t = parse("postgresql://u:pw@db.example:5432/f").unwrap();
        assert_eq!(t.mode, SslMode::Require);
        assert_eq!(t.config.get_ssl_mode(), SslMode::Require);
        assert_eq!(t.trust, Trust::System);
        let socket = parse("postgresql://u@%2Frun%2Fpostgresql/f").unwrap();
        assert_eq!(socket.mode, SslMode::Disable);
        let socket = parse("postgresql://u@%2Frun%2Fpostgresql/f?sslmode=require").unwrap();
        assert_eq!(socket.mode, SslMode::Require);
        let by_address = parse("postgresql://u@/f?hostaddr=192.0.2.7").unwrap();
        assert_eq!(by_address.mode, SslMode::Require);
        for (value, mode) in [
            ("disable", SslMode::Disable),
            ("prefer", SslMode::Prefer),
            ("require", SslMode::Require),
            ("verify-ca", SslMode::Require),
            ("verify-full", SslMode::Require),
        ] {
            let t = parse(&format!(
                "postgresql://u@h/f?application_name=x&sslmode={value}"
            ))
            .unwrap();
            assert_eq!(t.config.get_ssl_mode(), mode, "{value}");
            assert_eq!(t.config.get_application_name(), Some("x"));
        }
    }

    #[test]
    fn unknown_sslmode_is_named_and_the_password_is_not() {
        for value in ["allow", "verify_full", ""] {
            let e = parse(&format!("postgresql://u:s3cret@h/f?sslmode={value}"))
                .err()
                .unwrap()
                .to_string();
            assert!(e.contains(&format!("unsupported sslmode={value} ")), "{e}");
            assert!(!e.contains("s3cret"), "{e}");
        }
        let e = parse("postgresql://u:s3cret@h/f?bogus=1")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("bogus"), "{e}");
        assert!(!e.contains("s3cret"), "{e}");
    }

    #[test]
    fn the_ca_comes_from_the_flag_or_sslrootcert_not_both() {
        let t = parse("postgresql://u@h/f?sslrootcert=%2Fetc%2Fpg%20ca.pem&sslmode=verify-full")
            .unwrap();
        assert_eq!(t.trust, Trust::File("/etc/pg ca.pem".into()));
        assert_eq!(
            parse("postgresql://u@h/f?sslrootcert=system")
                .unwrap()
                .trust,
            Trust::System
        );
        let flag = Path::new("/ca.pem");
        assert_eq!(
            Target::parse("postgresql://u@h/f", Some(flag))
                .unwrap()
                .trust,
            Trust::File(flag.into())
        );
        assert!(Target::parse("postgresql://u@h/f?sslrootcert=/x", Some(flag)).is_err());
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("ca.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = connector(&Trust::File(empty.clone()))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("no CA certificate in the CA file"), "{e}");
        let e = connector(&Trust::File(dir.path().join("missing.pem")))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("reading the PostgreSQL CA file"), "{e}");
    }
}
