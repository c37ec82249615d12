//! Certificate material: reading PEM files, checking that a key belongs to its certificate,
//! and describing certificates (names, expiry) for operators. Everything that turns files into
//! rustls types goes through here so that `check`, start-up and reloads agree on what is valid.

pub mod alerts;
pub mod inventory;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::RootCertStore;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why certificate material could not be used.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The file could not be read.
    #[error("cannot read {path}: {error}")]
    Read {
        /// File that failed.
        path: PathBuf,
        /// Underlying error.
        error: std::io::Error,
    },
    /// No PEM `CERTIFICATE` block, or a block that is not valid base64/DER.
    #[error(
        "{path} holds no usable PEM certificate ({reason}); expected one or more `-----BEGIN CERTIFICATE-----` blocks"
    )]
    NoCertificate {
        /// File that failed.
        path: PathBuf,
        /// Parser detail.
        reason: String,
    },
    /// No private key block, or one that does not parse.
    #[error(
        "{path} holds no usable private key ({reason}); expected a PEM PKCS#8, PKCS#1 or SEC1 key"
    )]
    NoKey {
        /// File that failed.
        path: PathBuf,
        /// Parser detail.
        reason: String,
    },
    /// The key is of a type the crypto provider cannot sign with.
    #[error("private key {path} cannot be used: {reason}")]
    UnsupportedKey {
        /// File that failed.
        path: PathBuf,
        /// Provider detail.
        reason: String,
    },
    /// The key's public half differs from the certificate's.
    #[error(
        "private key {key} does not match certificate {cert}; install the key that was issued with this certificate"
    )]
    KeyMismatch {
        /// Certificate file.
        cert: PathBuf,
        /// Key file.
        key: PathBuf,
    },
    /// The DER inside a PEM block is not an X.509 certificate.
    #[error("{path}: certificate is not valid X.509: {reason}")]
    BadX509 {
        /// File that failed.
        path: PathBuf,
        /// Parser detail.
        reason: String,
    },
    /// The certificate does not name a host it is configured to serve.
    #[error(
        "certificate {path} does not cover `{name}` (its names: {sans}); issue a certificate that includes it or remove the name"
    )]
    NameNotCovered {
        /// Certificate file.
        path: PathBuf,
        /// The configured name.
        name: String,
        /// The certificate's DNS names.
        sans: String,
    },
    /// A CRL file is unusable.
    #[error(
        "{path} holds no usable PEM CRL ({reason}); expected `-----BEGIN X509 CRL-----` blocks"
    )]
    BadCrl {
        /// File that failed.
        path: PathBuf,
        /// Parser detail.
        reason: String,
    },
    /// A CRL's nextUpdate has passed: revocation data is stale, so the proxy fails closed.
    #[error("CRL {path} expired at {next_update}; fetch a current CRL from the CA")]
    CrlExpired {
        /// File that failed.
        path: PathBuf,
        /// Its nextUpdate (RFC 3339).
        next_update: String,
    },
    /// A CA bundle contained no usable trust anchor.
    #[error("CA bundle {path} has no usable certificate: {reason}")]
    BadCaBundle {
        /// File that failed.
        path: PathBuf,
        /// Detail.
        reason: String,
    },
}

/// What operators want to know about a certificate.
#[derive(Debug, Clone)]
pub struct CertInfo {
    /// Subject distinguished name.
    pub subject: String,
    /// Issuer distinguished name.
    pub issuer: String,
    /// DNS subject alternative names, lower case.
    pub dns_names: Vec<String>,
    /// IP subject alternative names.
    pub ip_names: Vec<std::net::IpAddr>,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
}

impl CertInfo {
    /// Time left until `not_after`, or `None` once it has passed.
    pub fn time_left(&self, now: SystemTime) -> Option<Duration> {
        self.not_after.duration_since(now).ok()
    }

    /// Whether the certificate's DNS names cover `name` (exact or single-label wildcard).
    pub fn covers(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        self.dns_names.iter().any(|san| {
            if let Some(suffix) = san.strip_prefix("*.") {
                name.split_once('.')
                    .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix)
            } else if let Some(suffix) = name.strip_prefix("*.") {
                // A configured wildcard is covered only by the same wildcard.
                san.strip_prefix("*.") == Some(suffix)
            } else {
                *san == name
            }
        })
    }
}

/// A certificate chain with its key, validated as a pair.
#[derive(Debug, Clone)]
pub struct LoadedCert {
    /// The certificate file.
    pub path: PathBuf,
    /// Ready for rustls.
    pub certified: Arc<CertifiedKey>,
    /// Description of the end-entity certificate.
    pub info: CertInfo,
}

fn read(path: &Path) -> Result<Vec<u8>, CertError> {
    std::fs::read(path).map_err(|error| CertError::Read {
        path: path.to_path_buf(),
        error,
    })
}

/// Reads every certificate in a PEM file; fails if there is none.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let bytes = read(path)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| CertError::NoCertificate {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(CertError::NoCertificate {
            path: path.to_path_buf(),
            reason: "no CERTIFICATE block found".into(),
        });
    }
    Ok(certs)
}

/// Reads the first private key in a PEM file.
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, CertError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| CertError::NoKey {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Parses the end-entity certificate into a [`CertInfo`].
pub fn describe(path: &Path, der: &CertificateDer<'_>) -> Result<CertInfo, CertError> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let bad = |reason: String| CertError::BadX509 {
        path: path.to_path_buf(),
        reason,
    };
    let (_, cert) = X509Certificate::from_der(der.as_ref()).map_err(|e| bad(e.to_string()))?;
    let mut dns_names = Vec::new();
    let mut ip_names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => dns_names.push(d.to_ascii_lowercase()),
                GeneralName::IPAddress(b) => {
                    if let Ok(v4) = <[u8; 4]>::try_from(*b) {
                        ip_names.push(std::net::IpAddr::from(v4));
                    } else if let Ok(v6) = <[u8; 16]>::try_from(*b) {
                        ip_names.push(std::net::IpAddr::from(v6));
                    }
                }
                _ => {}
            }
        }
    }
    let to_system = |t: x509_parser::time::ASN1Time| {
        let secs = t.timestamp();
        if secs >= 0 {
            SystemTime::UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
        } else {
            SystemTime::UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
        }
    };
    Ok(CertInfo {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        dns_names,
        ip_names,
        not_before: to_system(cert.validity().not_before),
        not_after: to_system(cert.validity().not_after),
    })
}

/// Loads a certificate chain and its key, and proves they belong together.
pub fn load_pair(cert_path: &Path, key_path: &Path) -> Result<LoadedCert, CertError> {
    let chain = read_certificates(cert_path)?;
    let info = describe(cert_path, &chain[0])?;
    let key = read_private_key(key_path)?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let signing_key =
        provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| CertError::UnsupportedKey {
                path: key_path.to_path_buf(),
                reason: e.to_string(),
            })?;
    let certified = CertifiedKey::new(chain, signing_key);
    // Unlike `CertifiedKey::from_der`, an "unknown" comparison is an error here: we only
    // accept pairs we could prove match, so a wrong key never reaches a handshake.
    if certified.keys_match().is_err() {
        return Err(CertError::KeyMismatch {
            cert: cert_path.to_path_buf(),
            key: key_path.to_path_buf(),
        });
    }
    Ok(LoadedCert {
        path: cert_path.to_path_buf(),
        certified: Arc::new(certified),
        info,
    })
}

/// Loads every CRL in a PEM file, refusing an empty file and any CRL past its nextUpdate.
pub fn load_crls(
    path: &Path,
    now: SystemTime,
) -> Result<Vec<rustls_pki_types::CertificateRevocationListDer<'static>>, CertError> {
    use rustls_pki_types::CertificateRevocationListDer;
    use x509_parser::prelude::FromDer;
    let bytes = read(path)?;
    let bad = |reason: String| CertError::BadCrl {
        path: path.to_path_buf(),
        reason,
    };
    let crls: Vec<CertificateRevocationListDer<'static>> =
        CertificateRevocationListDer::pem_slice_iter(&bytes)
            .collect::<Result<_, _>>()
            .map_err(|e| bad(e.to_string()))?;
    if crls.is_empty() {
        return Err(bad("no X509 CRL block found".into()));
    }
    for crl in &crls {
        let (_, parsed) =
            x509_parser::revocation_list::CertificateRevocationList::from_der(crl.as_ref())
                .map_err(|e| bad(e.to_string()))?;
        // A CRL without nextUpdate never expires by its own account; RFC 5280 requires the
        // field, so treat its absence as unusable rather than as "valid forever".
        let next = parsed
            .next_update()
            .ok_or_else(|| bad("CRL has no nextUpdate".into()))?;
        let next =
            SystemTime::UNIX_EPOCH + Duration::from_secs(next.timestamp().max(0).unsigned_abs());
        if next <= now {
            return Err(CertError::CrlExpired {
                path: path.to_path_buf(),
                next_update: humantime::format_rfc3339_seconds(next).to_string(),
            });
        }
    }
    Ok(crls)
}

/// Loads a PEM CA bundle into a root store; every block must be a usable trust anchor.
pub fn load_ca_bundle(path: &Path) -> Result<RootCertStore, CertError> {
    let certs = read_certificates(path)?;
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots.add(cert).map_err(|e| CertError::BadCaBundle {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// Why the system trust store could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SystemRootsError {
    /// No bundle at `SSL_CERT_FILE` or any well-known place, or none rustls can use.
    #[error("no system CA bundle found (set SSL_CERT_FILE or configure a CA file)")]
    NotFound,
    /// The bundle could not be read.
    #[error(transparent)]
    Ca(CertError),
}

/// Well-known locations of the system CA bundle (Debian/Ubuntu/Alpine, RHEL/Fedora, SUSE, BSD).
pub(crate) const SYSTEM_CA_FILES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// The system trust store, read from `SSL_CERT_FILE` or the first well-known bundle file.
/// Certificates rustls cannot use are skipped (system bundles carry a few odd ones).
pub fn system_roots() -> Result<rustls::RootCertStore, SystemRootsError> {
    let from_env = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
    let path = from_env
        .into_iter()
        .chain(SYSTEM_CA_FILES.iter().map(PathBuf::from))
        .find(|p| p.is_file())
        .ok_or(SystemRootsError::NotFound)?;
    let certs = read_certificates(&path).map_err(SystemRootsError::Ca)?;
    let mut roots = rustls::RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(SystemRootsError::NotFound);
    }
    Ok(roots)
}
