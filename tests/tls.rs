//! TLS termination as a client sees it: certificate chosen by SNI, ALPN, protocol versions,
//! tickets, the handshake deadline and the connection cap.

mod support;

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use support::{Pki, raw, route, start_proxy_with};
use tokio::io::AsyncReadExt;
use tokio_rustls::TlsConnector;
use x509_parser::prelude::{FromDer, X509Certificate};

fn client_config(pki: &Pki, alpn: &[&[u8]], tls12_only: bool) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let ca = CertificateDer::from_pem_slice(pki.ca.cert_pem.as_bytes()).unwrap();
    roots.add(ca).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let versions: &[&'static rustls::SupportedProtocolVersion] = if tls12_only {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(cfg)
}

async fn handshake(
    addr: std::net::SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
    sni: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    TlsConnector::from(cfg)
        .connect(ServerName::try_from(sni.to_owned()).unwrap(), tcp)
        .await
}

fn peer_names(tls: &tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> Vec<String> {
    let (_, conn) = tls.get_ref();
    let der = &conn.peer_certificates().unwrap()[0];
    let (_, cert) = X509Certificate::from_der(der.as_ref()).unwrap();
    cert.subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|n| n.to_string())
        .collect()
}

async fn proxy_with_sni(extra: &str) -> (support::TestProxy, raw::RawBackend) {
    let backend = raw::serve(|_req| async { http::Response::new(raw::full("ok")) }).await;
    let pki = Pki::new();
    let (a_cert, a_key) = pki.issue("a", &["a.example.test"]);
    let (w_cert, w_key) = pki.issue("wild", &["*.tenants.example.test"]);
    let rest = format!(
        r#"[[listener.tls.sni]]
names = ["a.example.test"]
cert = "{}"
key = "{}"
[[listener.tls.sni]]
names = ["*.tenants.example.test"]
cert = "{}"
key = "{}"
{extra}{}"#,
        a_cert.display(),
        a_key.display(),
        w_cert.display(),
        w_key.display(),
        route("/mcp", &format!("http://{}/mcp", backend.addr))
    );
    let proxy = start_proxy_with(pki, &rest).await;
    (proxy, backend)
}

#[tokio::test]
async fn certificate_is_chosen_by_sni_with_default_fallback() {
    let (proxy, _backend) = proxy_with_sni("").await;
    let cfg = client_config(&proxy.pki, &[b"h2"], false);
    let tls = handshake(proxy.addr, cfg.clone(), "a.example.test")
        .await
        .unwrap();
    assert_eq!(peer_names(&tls), ["DNSName(a.example.test)"]);
    let tls = handshake(proxy.addr, cfg.clone(), "x.tenants.example.test")
        .await
        .unwrap();
    assert_eq!(peer_names(&tls), ["DNSName(*.tenants.example.test)"]);
    let tls = handshake(proxy.addr, cfg.clone(), "localhost")
        .await
        .unwrap();
    assert!(peer_names(&tls).contains(&"DNSName(localhost)".to_owned()));
    // Unknown names get the default certificate, which the client then rejects by name.
    assert!(
        handshake(proxy.addr, cfg, "unknown.example.test")
            .await
            .is_err()
    );
}

#[tokio::test]
async fn alpn_and_versions() {
    let (proxy, _backend) = proxy_with_sni("").await;
    let tls = handshake(
        proxy.addr,
        client_config(&proxy.pki, &[b"h2", b"http/1.1"], false),
        "localhost",
    )
    .await
    .unwrap();
    let (_, conn) = tls.get_ref();
    assert_eq!(conn.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(
        conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    let tls = handshake(
        proxy.addr,
        client_config(&proxy.pki, &[b"http/1.1"], false),
        "localhost",
    )
    .await
    .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    // TLS 1.2 is offered by default ...
    let tls = handshake(
        proxy.addr,
        client_config(&proxy.pki, &[b"h2"], true),
        "localhost",
    )
    .await
    .unwrap();
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    // ... and unknown ALPN protocols are refused rather than silently downgraded.
    assert!(
        handshake(
            proxy.addr,
            client_config(&proxy.pki, &[b"spdy/3"], false),
            "localhost"
        )
        .await
        .is_err()
    );
}

#[tokio::test]
async fn tls12_can_be_turned_off() {
    let backend = raw::serve(|_req| async { http::Response::new(raw::full("ok")) }).await;
    let pki = Pki::new();
    let text = format!(
        "{}min_version = \"1.3\"\n{}",
        support::listener_toml(&pki),
        route("/mcp", &format!("http://{}/mcp", backend.addr))
    );
    let cfg =
        mcp_edge::config::parse(&text, std::path::Path::new("t.toml"), pki.dir.path()).unwrap();
    let running = mcp_edge::app::start(cfg).await.unwrap();
    assert!(
        handshake(
            running.addr,
            client_config(&pki, &[b"h2"], true),
            "localhost"
        )
        .await
        .is_err(),
        "TLS 1.2 client must be refused when min_version = 1.3"
    );
    assert!(
        handshake(
            running.addr,
            client_config(&pki, &[b"h2"], false),
            "localhost"
        )
        .await
        .is_ok()
    );
    running.shutdown.force();
}

#[tokio::test]
async fn session_tickets_allow_resumption() {
    let (proxy, _backend) = proxy_with_sni("").await;
    let cfg = client_config(&proxy.pki, &[b"h2"], false);
    for i in 0..2 {
        let mut tls = handshake(proxy.addr, cfg.clone(), "localhost")
            .await
            .unwrap();
        if i == 1 {
            assert_eq!(
                tls.get_ref().1.handshake_kind(),
                Some(rustls::HandshakeKind::Resumed),
                "second handshake should resume with a ticket"
            );
        }
        // Read until the server's tickets have arrived (TLS 1.3 sends them after the handshake).
        let mut buf = [0u8; 64];
        let _ = tokio::time::timeout(Duration::from_millis(300), tls.read(&mut buf)).await;
    }
}

#[tokio::test]
async fn handshake_deadline_and_connection_cap() {
    let backend = raw::serve(|_req| async { http::Response::new(raw::full("ok")) }).await;
    let pki = Pki::new();
    let text = format!(
        "{}{}",
        support::listener_toml(&pki).replace(
            "[listener.tls]",
            // Both connections come from 127.0.0.1: the per-address cap must not be what
            // refuses the third.
            "max_connections = 2\nmax_connections_per_ip = 2\nhandshake_timeout = \"300ms\"\n[listener.tls]"
        ),
        route("/mcp", &format!("http://{}/mcp", backend.addr))
    );
    let cfg =
        mcp_edge::config::parse(&text, std::path::Path::new("t.toml"), pki.dir.path()).unwrap();
    let running = mcp_edge::app::start(cfg).await.unwrap();

    // A client that connects and says nothing is dropped at the handshake deadline.
    let mut idle = tokio::net::TcpStream::connect(running.addr).await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(10), idle.read(&mut buf))
        .await
        .expect("server closes the silent connection")
        .unwrap_or(0);
    assert_eq!(n, 0);

    // Two open connections fill the cap; a third is closed without a handshake.
    let cfg_c = client_config(&pki, &[b"h2"], false);
    let _a = handshake(running.addr, cfg_c.clone(), "localhost")
        .await
        .unwrap();
    let _b = handshake(running.addr, cfg_c.clone(), "localhost")
        .await
        .unwrap();
    assert!(
        handshake(running.addr, cfg_c.clone(), "localhost")
            .await
            .is_err()
    );
    drop((_a, _b));
    // Permits come back when connections close.
    let mut ok = false;
    for _ in 0..50 {
        if handshake(running.addr, cfg_c.clone(), "localhost")
            .await
            .is_ok()
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "connection slots are released");
    running.shutdown.force();
}
