//! Client certificates: the rustls verifier built from the listener's client CA bundle and
//! CRLs, and the identity the proxy reads from a verified certificate.

use std::sync::Arc;
use std::time::SystemTime;

use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::certs::{self, CertError};
use crate::config::{ClientAuth, ClientAuthMode};

/// Why the client verifier could not be built.
#[derive(Debug, thiserror::Error)]
pub enum VerifierError {
    /// CA bundle or CRL unusable.
    #[error(transparent)]
    Cert(#[from] CertError),
    /// rustls refused the verifier (e.g. no trust anchors).
    #[error("client certificate verifier: {0}")]
    Rustls(#[from] rustls::server::VerifierBuilderError),
}

/// The verifier for `client_auth`, or `None` when client certificates are off.
///
/// Revocation is checked for the whole chain, and an expired CRL makes verification fail:
/// stale revocation data must not silently let a revoked client in.
pub fn verifier(
    auth: &ClientAuth,
    now: SystemTime,
) -> Result<Option<Arc<dyn ClientCertVerifier>>, VerifierError> {
    let (ca, mode) = match (&auth.ca, auth.mode) {
        (_, ClientAuthMode::Off) | (None, _) => return Ok(None),
        (Some(ca), mode) => (ca, mode),
    };
    let roots = Arc::new(certs::load_ca_bundle(ca)?);
    let mut crls = Vec::new();
    for path in &auth.crls {
        crls.extend(certs::load_crls(path, now)?);
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut builder = WebPkiClientVerifier::builder_with_provider(roots, provider)
        .with_crls(crls)
        .enforce_revocation_expiration();
    if mode == ClientAuthMode::Optional {
        builder = builder.allow_unauthenticated();
    }
    Ok(Some(builder.build()?))
}

/// Who a verified client certificate says the client is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// Subject distinguished name.
    pub subject: String,
    /// URI SANs, e.g. SPIFFE ids.
    pub uris: Vec<String>,
    /// DNS SANs.
    pub dns: Vec<String>,
    /// SHA-256 of the certificate DER, lower-case hex (RFC 8705 `x5t#S256` uses its base64url).
    pub sha256_hex: String,
    /// The same digest, raw.
    pub sha256: [u8; 32],
}

impl ClientIdentity {
    /// Reads the identity from a certificate rustls has already verified.
    pub fn from_der(der: &[u8]) -> Option<ClientIdentity> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let mut uris = Vec::new();
        let mut dns = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::URI(u) => uris.push((*u).to_owned()),
                    GeneralName::DNSName(d) => dns.push(d.to_ascii_lowercase()),
                    _ => {}
                }
            }
        }
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
        let mut sha256 = [0u8; 32];
        sha256.copy_from_slice(digest.as_ref());
        Some(ClientIdentity {
            subject: cert.subject().to_string(),
            uris,
            dns,
            sha256_hex: sha256.iter().map(|b| format!("{b:02x}")).collect(),
            sha256,
        })
    }

    /// The most specific name: the first URI SAN (SPIFFE), else the first DNS SAN, else the
    /// subject.
    pub fn principal(&self) -> &str {
        self.uris
            .first()
            .or(self.dns.first())
            .map_or(self.subject.as_str(), String::as_str)
    }
}
