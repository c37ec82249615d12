//! TLS termination: the rustls server configuration (protocol versions, ALPN, tickets) and the
//! certificate resolver that picks a certificate by SNI name.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::certs::{self, CertError, LoadedCert};

/// ALPN protocols offered, most preferred first.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Picks the certificate for a handshake from the client's SNI name.
///
/// Lookup order: exact name, then `*.parent` wildcard, then the default certificate, so
/// clients that send no SNI (or an IP address) still get the default.
#[derive(Debug)]
pub struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl SniResolver {
    /// Builds a resolver from the default certificate and `(names, cert)` pairs.
    pub fn new(default: Arc<CertifiedKey>, named: Vec<(Vec<String>, Arc<CertifiedKey>)>) -> Self {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for (names, key) in named {
            for name in names {
                match name.strip_prefix("*.") {
                    Some(parent) => wildcard.insert(parent.to_owned(), key.clone()),
                    None => exact.insert(name, key.clone()),
                };
            }
        }
        SniResolver {
            exact,
            wildcard,
            default,
        }
    }

    /// The certificate served for `sni` (`None` = no SNI sent).
    pub fn pick(&self, sni: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = sni else {
            return self.default.clone();
        };
        // rustls hands us the name already lower-cased and without a trailing dot.
        if let Some(key) = self.exact.get(name) {
            return key.clone();
        }
        if let Some((_, parent)) = name.split_once('.')
            && let Some(key) = self.wildcard.get(parent)
        {
            return key.clone();
        }
        self.default.clone()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.pick(hello.server_name()))
    }
}

/// Loads every configured server certificate, checking each key and SNI name coverage.
pub fn load_resolver(tls: &ServerTls) -> Result<(SniResolver, Vec<LoadedCert>), CertError> {
    let default = certs::load_pair(&tls.cert, &tls.key)?;
    let mut loaded = vec![default.clone()];
    let mut named = Vec::with_capacity(tls.sni.len());
    for sni in &tls.sni {
        let cert = certs::load_pair(&sni.cert, &sni.key)?;
        for name in &sni.names {
            if !cert.info.covers(name) {
                return Err(CertError::NameNotCovered {
                    path: sni.cert.clone(),
                    name: name.clone(),
                    sans: cert.info.dns_names.join(", "),
                });
            }
        }
        named.push((sni.names.clone(), cert.certified.clone()));
        loaded.push(cert);
    }
    Ok((SniResolver::new(default.certified, named), loaded))
}

/// Why a server TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// A certificate or key was unusable.
    #[error(transparent)]
    Cert(#[from] CertError),
    /// Client CA or CRL unusable.
    #[error("listener.tls client certificates: {0}")]
    ClientAuth(#[from] crate::auth::mtls::VerifierError),
    /// rustls refused the configuration (should not happen with supported versions).
    #[error("TLS configuration rejected: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Builds the server configuration: TLS 1.3 (and 1.2 unless disabled), ALPN h2 + http/1.1,
/// stateless session tickets, and client certificates checked by `client_verifier` if given.
pub fn server_config(
    resolver: Arc<dyn ResolvesServerCert>,
    allow_tls12: bool,
    client_verifier: Option<Arc<dyn ClientCertVerifier>>,
) -> Result<Arc<ServerConfig>, TlsSetupError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let versions: &[&'static rustls::SupportedProtocolVersion] = if allow_tls12 {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13]
    };
    let config = ServerConfig::builder_with_provider(provider).with_protocol_versions(versions)?;
    let mut config = match client_verifier {
        Some(v) => config.with_client_cert_verifier(v),
        None => config.with_no_client_auth(),
    }
    .with_cert_resolver(resolver);
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    // The default produces no tickets; a fresh ticketer per config means a config built with a
    // different client verifier can never resume sessions made under this one.
    config.ticketer = rustls::crypto::aws_lc_rs::Ticketer::new()?;
    config.max_early_data_size = 0;
    Ok(Arc::new(config))
}

/// Server certificate files: one default plus optional per-SNI certificates.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// Default certificate chain (PEM).
    pub cert: PathBuf,
    /// Default private key (PEM).
    pub key: PathBuf,
    /// Additional certificates selected by SNI name.
    pub sni: Vec<SniCert>,
    /// Whether TLS 1.2 is offered in addition to 1.3.
    pub allow_tls12: bool,
    /// Client certificate authentication.
    pub client_auth: crate::auth::mtls::ClientAuth,
}

/// A certificate chosen when the client's SNI matches one of `names`.
#[derive(Debug, Clone)]
pub struct SniCert {
    /// Exact DNS names or `*.suffix` wildcards, lower case.
    pub names: Vec<String>,
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Private key (PEM).
    pub key: PathBuf,
}
