//! Raw TLS clients for hand-written requests: trust a test CA, optionally present a client
//! certificate, offer chosen ALPN protocols, and read whatever the server sends back.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mcp_edge::demo::pki::IssuedCert;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::TestProxy;

/// The DER of the first certificate in `pem`.
pub fn der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

/// A client config trusting `ca_pem`, presenting `cert` when given and offering `alpn`.
pub fn client_config(
    ca_pem: &str,
    cert: Option<&IssuedCert>,
    alpn: &[&[u8]],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let mut cfg = match cert {
        Some(c) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(c.cert_pem.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(c.key_pem.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(cfg)
}

/// A TLS handshake for `localhost` over `tcp`, or the error that stopped it.
pub async fn handshake(
    tcp: TcpStream,
    cfg: Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    tokio_rustls::TlsConnector::from(cfg)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// A TLS connection to `addr` (as `localhost`), or the error that stopped it.
pub async fn connect(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    handshake(TcpStream::connect(addr).await?, cfg).await
}

/// A TLS connection to the proxy with ALPN `alpn`, presenting `cert` when given.
pub async fn stream(
    proxy: &TestProxy,
    cert: Option<&IssuedCert>,
    alpn: &[u8],
) -> TlsStream<TcpStream> {
    connect(
        proxy.addr,
        client_config(&proxy.pki.ca.cert_pem, cert, &[alpn]),
    )
    .await
    .unwrap()
}

/// Everything the peer sends until it closes or `limit` passes.
pub async fn read_all<S: tokio::io::AsyncRead + Unpin>(s: &mut S, limit: Duration) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(limit, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Writes hand-written HTTP/1.1 bytes on a fresh connection (presenting `cert` when given) and
/// returns whatever comes back before the server closes or `limit` passes. A write the server
/// cut short is not an error: what it answered is still read.
pub async fn exchange(
    proxy: &TestProxy,
    cert: Option<&IssuedCert>,
    request: &[u8],
    limit: Duration,
) -> String {
    let mut s = stream(proxy, cert, b"http/1.1").await;
    let _ = s.write_all(request).await;
    read_all(&mut s, limit).await
}

/// The status code of a raw HTTP/1.1 response (`""` when there is none).
pub fn status(response: &str) -> &str {
    response.get(9..12).unwrap_or("")
}

/// POSTs [`super::PING`] to `path` over a fresh HTTP/1.1 connection to `addr`, presenting
/// `cert` when given, with extra header lines `headers` (each ending in CRLF). Returns the
/// response text or the error (in TLS 1.3 a refused client certificate shows up on the first
/// read); `"timeout"` if the server has not closed within 10 s.
pub async fn post_ping(
    addr: SocketAddr,
    ca_pem: &str,
    cert: Option<&IssuedCert>,
    path: &str,
    headers: &str,
) -> Result<String, String> {
    let cfg = client_config(ca_pem, cert, &[b"http/1.1"]);
    let mut tls = connect(addr, cfg).await.map_err(|e| e.to_string())?;
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{}",
        super::PING.len(),
        super::PING
    );
    tls.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut out))
        .await
        .map_err(|_| "timeout".to_owned())?
        .map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// The DER of the leaf certificate a new handshake with `addr` is given.
pub async fn presented(addr: SocketAddr, ca_pem: &str) -> Vec<u8> {
    let tls = connect(addr, client_config(ca_pem, None, &[]))
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}
