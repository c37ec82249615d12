//! Client certificates at the listener: required and optional modes, unknown CAs, revocation
//! through CRLs, expired CRLs refused at load, and routes that demand a certificate.

mod support;

use mcp_edge::demo::pki::{DevCa, IssuedCert};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use support::tls::{self, status};
use support::{Pki, TestProxy, raw, recording, start_proxy_with};
use tokio::sync::mpsc;

struct Setup {
    proxy: TestProxy,
    _backend: raw::RawBackend,
    hits: mpsc::UnboundedReceiver<recording::Received>,
    good: IssuedCert,
    revoked: IssuedCert,
    stranger: IssuedCert,
}

async fn setup(mode: &str) -> Setup {
    let (backend, hits) = recording::ok().await;
    let pki = Pki::new();
    let good = pki
        .ca
        .issue_client("partner-a", Some("spiffe://partner-a.example/agent"))
        .unwrap();
    let revoked = pki.ca.issue_client("partner-b", None).unwrap();
    let stranger = DevCa::new("someone else")
        .unwrap()
        .issue_client("intruder", None)
        .unwrap();
    let dir = pki.dir.path();
    std::fs::write(dir.join("clients-ca.pem"), &pki.ca.cert_pem).unwrap();
    std::fs::write(
        dir.join("clients.crl"),
        pki.ca.crl(&[revoked.serial], 2099).unwrap(),
    )
    .unwrap();
    let text = format!(
        r#"client_auth = "{mode}"
client_ca = "clients-ca.pem"
client_crls = ["clients.crl"]
[[routes]]
path = "/open"
upstream = "http://{0}/mcp"
[[routes]]
path = "/partners"
upstream = "http://{0}/mcp"
[routes.auth]
require = "certificate"
"#,
        backend.addr
    );
    let proxy = start_proxy_with(pki, &text).await;
    Setup {
        proxy,
        _backend: backend,
        hits,
        good,
        revoked,
        stranger,
    }
}

/// One HTTP/1.1 request over TLS, optionally presenting `cert`; returns the response text, or
/// the error (in TLS 1.3 a refused client certificate shows up on the first read).
async fn request(
    proxy: &TestProxy,
    cert: Option<&IssuedCert>,
    path: &str,
) -> Result<String, String> {
    request_with(proxy, cert, path, "").await
}

/// Like [`request`], with extra header lines (each ending in CRLF).
async fn request_with(
    proxy: &TestProxy,
    cert: Option<&IssuedCert>,
    path: &str,
    headers: &str,
) -> Result<String, String> {
    tls::post_ping(proxy.addr, &proxy.pki.ca.cert_pem, cert, path, headers).await
}

#[tokio::test]
async fn required_mode_admits_only_valid_unrevoked_certificates() {
    let mut s = setup("required").await;
    let ok = request(&s.proxy, Some(&s.good), "/partners").await.unwrap();
    assert_eq!(status(&ok), "200", "{ok}");
    assert!(
        request(&s.proxy, None, "/open").await.is_err(),
        "no certificate"
    );
    let e = request(&s.proxy, Some(&s.stranger), "/open")
        .await
        .unwrap_err();
    assert!(
        e.contains("UnknownCA") || e.contains("BadCertificate") || e.contains("alert"),
        "{e}"
    );
    let e = request(&s.proxy, Some(&s.revoked), "/open")
        .await
        .unwrap_err();
    assert!(e.contains("Revoked") || e.contains("alert"), "{e}");
    assert!(s.hits.recv().await.is_some());
    assert!(
        s.hits.try_recv().is_err(),
        "refused clients never reach the backend"
    );
}

#[tokio::test]
async fn optional_mode_lets_routes_decide() {
    let mut s = setup("optional").await;
    let open = request(&s.proxy, None, "/open").await.unwrap();
    assert_eq!(status(&open), "200", "anonymous client on an open route");
    let refused = request(&s.proxy, None, "/partners").await.unwrap();
    assert_eq!(status(&refused), "403", "{refused}");
    assert!(
        refused.contains("client certificate required") && refused.contains("\"jsonrpc\":\"2.0\"")
    );
    let ok = request(&s.proxy, Some(&s.good), "/partners").await.unwrap();
    assert_eq!(status(&ok), "200");
    // Even when optional, a presented certificate must verify: revoked or foreign is refused.
    assert!(request(&s.proxy, Some(&s.revoked), "/open").await.is_err());
    assert!(request(&s.proxy, Some(&s.stranger), "/open").await.is_err());
    assert!(s.hits.recv().await.is_some());
    assert!(s.hits.recv().await.is_some());
    assert!(s.hits.try_recv().is_err());
}

#[tokio::test]
async fn client_identity_is_read_from_the_certificate() {
    let c = DevCa::new("ca")
        .unwrap()
        .issue_client("partner-a", Some("spiffe://partner-a.example/agent"))
        .unwrap();
    let der = CertificateDer::from_pem_slice(c.cert_pem.as_bytes()).unwrap();
    let id = mcp_edge::auth::mtls::ClientIdentity::from_der(der.as_ref()).unwrap();
    assert_eq!(id.principal(), "spiffe://partner-a.example/agent");
    assert_eq!(id.subject, "CN=partner-a");
    assert_eq!(id.sha256_hex.len(), 64);
    let plain = DevCa::new("ca")
        .unwrap()
        .issue_client("partner-b", None)
        .unwrap();
    let der = CertificateDer::from_pem_slice(plain.cert_pem.as_bytes()).unwrap();
    assert_eq!(
        mcp_edge::auth::mtls::ClientIdentity::from_der(der.as_ref())
            .unwrap()
            .principal(),
        "CN=partner-b"
    );
}

#[tokio::test]
async fn expired_crl_and_bad_settings_refuse_to_start() {
    support::init();
    let pki = Pki::new();
    let dir = pki.dir.path();
    std::fs::write(dir.join("clients-ca.pem"), &pki.ca.cert_pem).unwrap();
    std::fs::write(dir.join("old.crl"), pki.ca.crl(&[], 2021).unwrap()).unwrap();
    std::fs::write(
        dir.join("garbage.crl"),
        "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
    )
    .unwrap();
    let cases = [
        (
            "client_auth = \"required\"\nclient_ca = \"clients-ca.pem\"\nclient_crls = [\"old.crl\"]\n",
            "expired",
        ),
        (
            "client_auth = \"required\"\nclient_ca = \"clients-ca.pem\"\nclient_crls = [\"garbage.crl\"]\n",
            "CRL",
        ),
        (
            "client_auth = \"required\"\nclient_ca = \"missing.pem\"\n",
            "missing.pem",
        ),
    ];
    for (tls, needle) in cases {
        let text = format!(
            "{}{tls}[[routes]]\npath = \"/mcp\"\nupstream = \"http://127.0.0.1:9/mcp\"\n",
            support::listener_toml(&pki)
        );
        let cfg = mcp_edge::config::parse(&text, std::path::Path::new("t.toml"), dir).unwrap();
        let err = match mcp_edge::app::start(cfg).await {
            Ok(_) => panic!("started with {tls}"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(needle), "{needle} not in: {err}");
    }
    for (tls, key) in [
        ("client_auth = \"required\"\n", "listener.tls.client_ca"),
        ("client_crls = [\"old.crl\"]\n", "listener.tls.client_crls"),
        (
            "[[routes]]\npath = \"/x\"\nupstream = \"http://127.0.0.1:9/mcp\"\n[routes.auth]\nrequire = \"certificate\"\n",
            "routes[0].auth.require",
        ),
    ] {
        let text = format!(
            "{}{tls}[[routes]]\npath = \"/mcp\"\nupstream = \"http://127.0.0.1:9/mcp\"\n",
            support::listener_toml(&pki)
        );
        let err = mcp_edge::config::parse(&text, std::path::Path::new("t.toml"), dir)
            .unwrap_err()
            .to_string();
        assert!(err.contains(key), "{key} not in: {err}");
    }
}

/// base64url SHA-256 of a certificate's DER: its RFC 8705 `x5t#S256`.
fn thumbprint(cert: &IssuedCert) -> String {
    use base64::Engine as _;
    let der = CertificateDer::from_pem_slice(cert.cert_pem.as_bytes()).unwrap();
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &der))
}

#[tokio::test]
async fn certificate_bound_tokens_must_come_with_their_certificate() {
    let (backend, mut hits) = recording::ok().await;
    let pki = Pki::new();
    let a = pki.ca.issue_client("partner-a", None).unwrap();
    let b = pki.ca.issue_client("partner-b", None).unwrap();
    let idp = support::idp::Idp::new();
    let dir = pki.dir.path();
    std::fs::write(dir.join("clients-ca.pem"), &pki.ca.cert_pem).unwrap();
    let issuer = idp.issuer_toml(dir);
    let text = format!(
        r#"client_auth = "optional"
client_ca = "clients-ca.pem"
{issuer}
[[routes]]
path = "/bound"
upstream = "http://{0}/mcp"
[routes.auth]
require = "both"
certificate_bound_tokens = true
[[routes]]
path = "/token"
upstream = "http://{0}/mcp"
[routes.auth]
require = "token"
"#,
        backend.addr
    );
    let proxy = start_proxy_with(pki, &text).await;
    let bound_to_a = |path: &str| {
        idp.token(
            path,
            serde_json::json!({"cnf": {"x5t#S256": thumbprint(&a)}}),
        )
    };
    let auth = |t: &str| format!("Authorization: Bearer {t}\r\n");

    let ok = request_with(&proxy, Some(&a), "/bound", &auth(&bound_to_a("/bound")))
        .await
        .unwrap();
    assert_eq!(status(&ok), "200", "{ok}");
    assert!(hits.recv().await.is_some());

    // Presented with another (valid) certificate, or with none, the token is refused.
    for (cert, path) in [(Some(&b), "/bound"), (Some(&b), "/token"), (None, "/token")] {
        let r = request_with(&proxy, cert, path, &auth(&bound_to_a(path)))
            .await
            .unwrap();
        assert_eq!(status(&r), "401", "{path}: {r}");
        assert!(r.contains("error=\"invalid_token\""), "{r}");
        assert!(
            r.contains("not bound to the presented client certificate"),
            "{r}"
        );
    }
    // The route demands binding: an unbound token is refused even with a certificate.
    let unbound = idp.token("/bound", serde_json::json!({}));
    let r = request_with(&proxy, Some(&a), "/bound", &auth(&unbound))
        .await
        .unwrap();
    assert_eq!(status(&r), "401", "{r}");
    assert!(
        hits.try_recv().is_err(),
        "a refused request reached the backend"
    );
}
