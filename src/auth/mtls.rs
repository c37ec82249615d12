//! Client certificates: the rustls verifier built from the listener's client CA bundle and
//! CRLs, and the identity the proxy reads from a verified certificate.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate, X509Name};

use crate::certs::{self, CertError};

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
    /// Subject distinguished name: RDNs in certificate order joined by `, ` (multi-valued
    /// RDNs by ` + `), values escaped as RFC 4514 says (see [`escaped_dn`]).
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
            subject: escaped_dn(cert.subject()),
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

/// The subject DN with every value escaped (RFC 4514 §2.4, plus `=`), so the text of a value
/// can never look like an RDN boundary: a `CN` of `bot, O=Acme` reads `CN=bot\, O\=Acme`, which
/// `*, O=Acme` does not match. Values that are not strings are written as `#` and the hex of
/// their DER, as RFC 4514 does for unknown types.
pub fn escaped_dn(name: &X509Name<'_>) -> String {
    let registry = x509_parser::objects::oid_registry();
    let mut out = String::new();
    for (i, rdn) in name.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        for (j, attr) in rdn.iter().enumerate() {
            if j > 0 {
                out.push_str(" + ");
            }
            match x509_parser::objects::oid2abbrev(attr.attr_type(), registry) {
                Ok(abbrev) => out.push_str(abbrev),
                Err(_) => out.push_str(&attr.attr_type().to_id_string()),
            }
            out.push('=');
            match attr.as_str() {
                Ok(value) => escape_value(value, &mut out),
                Err(_) => {
                    out.push('#');
                    for b in attr.attr_value().as_bytes() {
                        out.push_str(&format!("{b:02x}"));
                    }
                }
            }
        }
    }
    out
}

/// Appends `value` escaped for a DN string.
fn escape_value(value: &str, out: &mut String) {
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            '"' | '+' | ',' | ';' | '<' | '>' | '\\' | '=' => {
                out.push('\\');
                out.push(c);
            }
            '#' | ' ' if i == 0 => {
                out.push('\\');
                out.push(c);
            }
            ' ' if i == last => out.push_str("\\ "),
            c if c.is_control() => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("\\{b:02x}"));
                }
            }
            c => out.push(c),
        }
    }
}

/// Client certificate settings of the listener.
#[derive(Debug, Clone)]
pub struct ClientAuth {
    /// Off, optional or required.
    pub mode: ClientAuthMode,
    /// CA bundle; present unless `mode` is off.
    pub ca: Option<PathBuf>,
    /// CRL files.
    pub crls: Vec<PathBuf>,
}

/// Whether the TLS handshake asks for a client certificate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuthMode {
    /// Never asked for.
    #[default]
    Off,
    /// Asked for; clients without one still connect (routes decide).
    Optional,
    /// Every connection must present a valid certificate.
    Required,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dn_of(params: rcgen::CertificateParams) -> String {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("cert");
        let (_, parsed) = X509Certificate::from_der(cert.der()).expect("parse");
        escaped_dn(parsed.subject())
    }

    #[test]
    fn dn_values_cannot_forge_rdn_boundaries() {
        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, "bot, O=Acme");
        let dn = dn_of(p);
        assert_eq!(dn, "CN=bot\\, O\\=Acme");
        assert!(!crate::policy::Glob::new("*, O=Acme").matches(&dn));
        assert!(!crate::policy::Glob::new("*O=Acme").matches(&dn));

        let mut p = rcgen::CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(rcgen::DnType::CommonName, "bot");
        p.distinguished_name
            .push(rcgen::DnType::OrganizationName, "Acme");
        assert_eq!(dn_of(p), "CN=bot, O=Acme");
    }

    #[test]
    fn dn_escapes_leading_trailing_and_specials() {
        let mut out = String::new();
        escape_value("#a b ", &mut out);
        assert_eq!(out, "\\#a b\\ ");
        let mut out = String::new();
        escape_value(" x\"<>;+\\\u{1}", &mut out);
        assert_eq!(out, "\\ x\\\"\\<\\>\\;\\+\\\\\\01");
    }
}
