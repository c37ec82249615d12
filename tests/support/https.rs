//! The TLS side of a local HTTPS endpoint the proxy calls out to (JWKS, introspection, alert
//! webhooks): a fresh CA, a `localhost`/`127.0.0.1` certificate from it, and the CA written where
//! the code under test is told to find it.

use std::path::Path;
use std::sync::Arc;

use mcp_edge::demo::pki::DevCa;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// A TLS acceptor offering `alpn`, with a certificate from a new CA named `ca_name` whose PEM is
/// written to `ca_path`.
pub fn acceptor(ca_name: &str, ca_path: &Path, alpn: &[&[u8]]) -> tokio_rustls::TlsAcceptor {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let ca = DevCa::new(ca_name).expect("CA");
    let server = ca
        .issue_server(&["localhost", "127.0.0.1"])
        .expect("server cert");
    std::fs::write(ca_path, &ca.cert_pem).expect("write CA");
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(server.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .expect("cert");
    let key = PrivateKeyDer::from_pem_slice(server.key_pem.as_bytes()).expect("key");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server config");
    tls.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsAcceptor::from(Arc::new(tls))
}
