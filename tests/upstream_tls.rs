//! HTTPS upstreams: the proxy verifies the upstream against the route's CA and presents the
//! route's client certificate; a wrong CA or a missing client certificate fails closed (502).

mod support;

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use support::raw;
use support::{Pki, start_proxy_with};

fn upstream_server_config(pki: &Pki) -> Arc<rustls::ServerConfig> {
    let server = pki.ca.issue_server(&["127.0.0.1"]).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(pki.ca.cert_pem.as_bytes()).unwrap())
        .unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .unwrap();
    let mut cfg = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            vec![CertificateDer::from_pem_slice(server.cert_pem.as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(server.key_pem.as_bytes()).unwrap(),
        )
        .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(cfg)
}

#[tokio::test]
async fn https_upstream_with_ca_and_client_certificate() {
    let pki = Pki::new();
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let backend = raw::serve_tls(upstream_server_config(&pki), move |req, peer| {
        let seen_tx = seen_tx.clone();
        async move {
            let _ = seen_tx.send((peer, req.version(), req.headers()["host"].clone()));
            http::Response::new(raw::full("secure"))
        }
    })
    .await;

    let dir = pki.dir.path();
    std::fs::write(dir.join("upstream-ca.pem"), &pki.ca.cert_pem).unwrap();
    let client = pki
        .ca
        .issue_client("mcp-edge", Some("spiffe://edge.test/proxy"))
        .unwrap();
    std::fs::write(dir.join("edge-client.pem"), &client.cert_pem).unwrap();
    std::fs::write(dir.join("edge-client.key"), &client.key_pem).unwrap();
    let other_ca = mcp_edge::demo::pki::DevCa::new("someone else").unwrap();
    std::fs::write(dir.join("other-ca.pem"), &other_ca.cert_pem).unwrap();

    let up = format!("https://127.0.0.1:{}/mcp", backend.addr.port());
    let proxy = start_proxy_with(
        pki,
        &format!(
            r#"[[routes]]
path = "/mcp"
upstream = "{up}"
[routes.upstream_tls]
ca = "upstream-ca.pem"
client_cert = "edge-client.pem"
client_key = "edge-client.key"
[[routes]]
path = "/no-client-cert"
upstream = "{up}"
[routes.upstream_tls]
ca = "upstream-ca.pem"
[[routes]]
path = "/wrong-ca"
upstream = "{up}"
[routes.upstream_tls]
ca = "other-ca.pem"
client_cert = "edge-client.pem"
client_key = "edge-client.key"
"#
        ),
    )
    .await;
    let c = proxy.client(false);

    let r = c
        .post(proxy.url("/mcp"))
        .body(support::PING)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "secure");
    let (peer, version, host) = seen.recv().await.unwrap();
    let presented = peer.expect("proxy presented a client certificate");
    let expected = CertificateDer::from_pem_slice(client.cert_pem.as_bytes()).unwrap();
    assert_eq!(presented, expected.as_ref());
    assert_eq!(
        version,
        http::Version::HTTP_2,
        "ALPN h2 negotiated with the upstream"
    );
    assert_eq!(host, format!("127.0.0.1:{}", backend.addr.port()));

    // Without a client certificate the upstream refuses the handshake: fail closed.
    let r = c
        .post(proxy.url("/no-client-cert"))
        .body(support::PING)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    // An upstream the configured CA does not vouch for is never talked to.
    let r = c
        .post(proxy.url("/wrong-ca"))
        .body(support::PING)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert!(
        seen.try_recv().is_err(),
        "no request reached the upstream on failed routes"
    );
}
