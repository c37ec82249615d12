//! Bearer tokens on the request path, over real TLS sockets: every rejection answers with the
//! right status, `WWW-Authenticate` challenge and JSON-RPC body, and the backend receives
//! nothing; accepted requests reach the backend with identity headers and no `Authorization`.

mod support;

use std::time::Duration;

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use support::clock::now;
use support::idp::{ISSUER, Idp};
use support::{TestProxy, raw, recording, start_proxy_with};
use tokio::sync::mpsc;

const RESOURCE: &str = "https://localhost:8443/mcp";
const PRM: &str = "https://localhost:8443/.well-known/oauth-protected-resource/mcp";

fn claims(overrides: serde_json::Value) -> serde_json::Value {
    support::idp::merged(
        serde_json::json!({
            "iss": ISSUER, "sub": "agent-7", "aud": RESOURCE, "exp": now() + 600,
            "iat": now(), "scope": "mcp:tools mcp:read", "client_id": "partner-a",
        }),
        overrides,
    )
}

struct Setup {
    proxy: TestProxy,
    idp: Idp,
    _backend: raw::RawBackend,
    seen: mpsc::UnboundedReceiver<recording::Received>,
}

async fn setup() -> Setup {
    let (backend, seen) = recording::ok().await;
    let idp = Idp::new();
    let pki = support::Pki::new();
    std::fs::write(pki.dir.path().join("idp.pem"), &idp.public_pem).unwrap();
    let proxy = start_proxy_with(
        pki,
        &format!(
            r#"[auth]
[[auth.issuers]]
issuer = "{ISSUER}"
algorithms = ["ES256"]
leeway = "5s"
max_token_bytes = 4096
pem_keys = ["idp.pem"]
[[routes]]
path = "/mcp"
upstream = "http://{0}/mcp"
[routes.auth]
require = "token"
scopes = ["mcp:tools"]
[[routes]]
path = "/other"
upstream = "http://{0}/mcp"
[routes.auth]
require = "token"
"#,
            backend.addr
        ),
    )
    .await;
    Setup {
        proxy,
        idp,
        _backend: backend,
        seen,
    }
}

async fn send(
    s: &Setup,
    method: http::Method,
    auth: Option<&str>,
    path: &str,
) -> reqwest::Response {
    let mut req = s.proxy.client(false).request(method, s.proxy.url(path));
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    req.body(support::PING).send().await.unwrap()
}

/// Asserts a refusal: status, challenge parameters, JSON-RPC body.
async fn refused(resp: reqwest::Response, status: u16, error: Option<&str>) {
    assert_eq!(resp.status(), status);
    let challenge = resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(challenge.starts_with("Bearer "), "{challenge}");
    assert!(
        challenge.contains(&format!("resource_metadata=\"{PRM}\"")),
        "{challenge}"
    );
    assert!(challenge.contains("scope=\"mcp:tools\""), "{challenge}");
    match error {
        Some(e) => assert!(challenge.contains(&format!("error=\"{e}\"")), "{challenge}"),
        None => assert!(!challenge.contains("error="), "{challenge}"),
    }
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["jsonrpc"], "2.0");
    assert!(body.get("id").is_none());
}

#[tokio::test]
async fn every_rejection_path_answers_correctly_and_reaches_nothing() {
    let mut s = setup().await;
    let idp2 = Idp::new();
    let t = |c: serde_json::Value| s.idp.sign_es256(&claims(c));
    let none_alg = format!(
        "{}.{}.",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(claims(serde_json::json!({})).to_string())
    );
    let hs_confusion = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(serde_json::json!({})),
        &EncodingKey::from_secret(s.idp.public_pem.as_bytes()),
    )
    .unwrap();
    let cases: Vec<(&str, Option<String>, u16, Option<&str>)> = vec![
        ("no token", None, 401, None),
        ("Basic scheme", Some("Basic dXNlcjpwYXNz".into()), 401, None),
        (
            "empty bearer",
            Some("Bearer ".into()),
            401,
            Some("invalid_token"),
        ),
        (
            "expired",
            Some(format!(
                "Bearer {}",
                t(serde_json::json!({"exp": now() - 60}))
            )),
            401,
            Some("invalid_token"),
        ),
        (
            "not yet valid",
            Some(format!(
                "Bearer {}",
                t(serde_json::json!({"nbf": now() + 600}))
            )),
            401,
            Some("invalid_token"),
        ),
        (
            "bad signature",
            Some(format!(
                "Bearer {}",
                idp2.sign_es256(&claims(serde_json::json!({})))
            )),
            401,
            Some("invalid_token"),
        ),
        (
            "alg none",
            Some(format!("Bearer {none_alg}")),
            401,
            Some("invalid_token"),
        ),
        (
            "HS256 keyed with the public key",
            Some(format!("Bearer {hs_confusion}")),
            401,
            Some("invalid_token"),
        ),
        (
            "wrong iss",
            Some(format!(
                "Bearer {}",
                t(serde_json::json!({"iss": "https://evil.example"}))
            )),
            401,
            Some("invalid_token"),
        ),
        (
            "wrong aud",
            Some(format!(
                "Bearer {}",
                t(serde_json::json!({"aud": "https://evil.example/mcp"}))
            )),
            401,
            Some("invalid_token"),
        ),
        (
            "token for another route",
            Some(format!(
                "Bearer {}",
                t(serde_json::json!({"aud": "https://localhost:8443/other"}))
            )),
            401,
            Some("invalid_token"),
        ),
        (
            "oversized",
            Some(format!(
                "Bearer {}",
                t(serde_json::json!({"pad": "x".repeat(5000)}))
            )),
            401,
            Some("invalid_token"),
        ),
        (
            "garbage",
            Some("Bearer not.a.jwt".into()),
            401,
            Some("invalid_token"),
        ),
        (
            "missing scope",
            Some(format!(
                "Bearer {}",
                t(serde_json::json!({"scope": "mcp:read"}))
            )),
            403,
            Some("insufficient_scope"),
        ),
    ];
    for (name, auth, status, error) in cases {
        let resp = send(&s, http::Method::POST, auth.as_deref(), "/mcp").await;
        assert_eq!(resp.status().as_u16(), status, "{name}");
        refused(resp, status, error).await;
    }
    // Token in the query string: refused even with a valid token.
    let good = t(serde_json::json!({}));
    let resp = send(
        &s,
        http::Method::POST,
        None,
        &format!("/mcp?access_token={good}"),
    )
    .await;
    assert_eq!(resp.status(), 400);
    assert!(
        resp.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_request")
    );
    // The same challenge on GET and DELETE.
    for m in [http::Method::GET, http::Method::DELETE] {
        refused(send(&s, m, None, "/mcp").await, 401, None).await;
    }
    assert!(
        s.seen.try_recv().is_err(),
        "a refused request reached the backend"
    );
}

#[tokio::test]
async fn valid_token_reaches_backend_as_identity_without_authorization() {
    let mut s = setup().await;
    let token = s.idp.sign_es256(&claims(serde_json::json!({})));
    let resp = s
        .proxy
        .client(true)
        .post(s.proxy.url("/mcp"))
        .header("authorization", format!("Bearer {token}"))
        .header("x-mcp-edge-subject", "forged-admin")
        .header("x-mcp-edge-scopes", "everything")
        .body(support::PING)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let h = s.seen.recv().await.unwrap().headers;
    assert!(
        h.get("authorization").is_none(),
        "the client's token must never reach the backend"
    );
    assert_eq!(h["x-mcp-edge-subject"], "agent-7");
    assert_eq!(h["x-mcp-edge-issuer"], ISSUER);
    assert_eq!(h["x-mcp-edge-client-id"], "partner-a");
    assert_eq!(h["x-mcp-edge-scopes"], "mcp:read mcp:tools");
    assert_eq!(h.get_all("x-mcp-edge-subject").iter().count(), 1);
}

#[tokio::test]
async fn only_access_tokens_pass_whatever_else_the_idp_signs() {
    let mut s = setup().await;
    let typed = |typ: Option<&str>| {
        let mut h = Header::new(Algorithm::ES256);
        h.typ = typ.map(str::to_owned);
        format!("Bearer {}", s.idp.sign(h, &claims(serde_json::json!({}))))
    };
    // RFC 9068 access tokens, plain JWTs, and tokens without `typ`; the media-type forms too.
    for typ in [
        None,
        Some("JWT"),
        Some("at+jwt"),
        Some("AT+JWT"),
        Some("application/at+jwt"),
    ] {
        let resp = send(&s, http::Method::POST, Some(&typed(typ)), "/mcp").await;
        assert_eq!(resp.status(), 200, "{typ:?}");
        s.seen.recv().await.unwrap();
    }
    // Other tokens the same IdP signs with the same keys.
    for typ in [
        "dpop+jwt",
        "application/dpop+jwt",
        "logout+jwt",
        "secevent+jwt",
        "id_token+jwt",
    ] {
        let resp = send(&s, http::Method::POST, Some(&typed(Some(typ))), "/mcp").await;
        assert_eq!(resp.status(), 401, "{typ}");
        let challenge = resp.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            challenge.contains("token type not accepted"),
            "{typ}: {challenge}"
        );
        refused(resp, 401, Some("invalid_token")).await;
    }
    assert!(
        s.seen.try_recv().is_err(),
        "a refused token reached the backend"
    );
}

#[tokio::test]
async fn jku_header_is_never_followed() {
    let mut s = setup().await;
    let trap = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let trap_addr = trap.local_addr().unwrap();
    let mut header = Header::new(Algorithm::ES256);
    header.jku = Some(format!("https://{trap_addr}/jwks.json"));
    header.kid = Some("attacker-key".into());
    let token = Idp::new().sign(header, &claims(serde_json::json!({})));
    let resp = send(
        &s,
        http::Method::POST,
        Some(&format!("Bearer {token}")),
        "/mcp",
    )
    .await;
    refused(resp, 401, Some("invalid_token")).await;
    let connected = tokio::time::timeout(Duration::from_millis(300), trap.accept()).await;
    assert!(connected.is_err(), "the proxy connected to the token's jku");
    assert!(s.seen.try_recv().is_err());
}

#[tokio::test]
async fn protected_resource_metadata_documents() {
    let s = setup().await;
    let c = s.proxy.client(false);
    for path in [
        "/.well-known/oauth-protected-resource/mcp",
        "/.well-known/oauth-protected-resource",
    ] {
        let resp = c.get(s.proxy.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        assert_eq!(resp.headers()["content-type"], "application/json");
        let doc: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(doc["resource"], RESOURCE, "{path}");
        assert_eq!(doc["authorization_servers"], serde_json::json!([ISSUER]));
        assert_eq!(doc["scopes_supported"], serde_json::json!(["mcp:tools"]));
        assert_eq!(
            doc["bearer_methods_supported"],
            serde_json::json!(["header"])
        );
    }
    let doc: serde_json::Value = c
        .get(s.proxy.url("/.well-known/oauth-protected-resource/other"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["resource"], "https://localhost:8443/other");
    let resp = c
        .get(s.proxy.url("/.well-known/oauth-protected-resource/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn rmcp_client_with_a_bearer_token_end_to_end() {
    use rmcp::ServiceExt as _;
    use rmcp::transport::StreamableHttpClientTransport;
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
    let (addr, _backend) = support::backends::start_streamable_backend().await;
    let idp = Idp::new();
    let pki = support::Pki::new();
    std::fs::write(pki.dir.path().join("idp.pem"), &idp.public_pem).unwrap();
    let proxy = start_proxy_with(
        pki,
        &format!(
            "[[auth.issuers]]\nissuer = \"{ISSUER}\"\nalgorithms = [\"ES256\"]\npem_keys = [\"idp.pem\"]\n\
             [[routes]]\npath = \"/mcp\"\nupstream = \"http://{addr}/mcp\"\n[routes.auth]\nrequire = \"token\"\n"
        ),
    )
    .await;
    let token = idp.sign_es256(&claims(serde_json::json!({})));
    let transport = StreamableHttpClientTransport::with_client(
        proxy.client(false),
        StreamableHttpClientTransportConfig::with_uri(proxy.url("/mcp")).auth_header(token),
    );
    let client = ().serve(transport).await.expect("initialize with a token");
    let tools = client.list_all_tools().await.unwrap();
    assert_eq!(tools.len(), mcp_edge::demo::backend::TOOLS.len());
    let _ = client.cancel().await;

    // Without the token the same client cannot even initialize.
    let transport = StreamableHttpClientTransport::with_client(
        proxy.client(false),
        StreamableHttpClientTransportConfig::with_uri(proxy.url("/mcp")),
    );
    assert!(().serve(transport).await.is_err());
}

#[tokio::test]
async fn backend_gets_a_token_signed_by_the_proxy_not_the_clients() {
    use jsonwebtoken::{DecodingKey, Validation, jwk::JwkSet};
    let (backend, mut seen) = recording::ok().await;
    let client_idp = support::idp::Idp::new();
    let pki = support::Pki::new();
    let issuer = client_idp.issuer_toml(pki.dir.path());
    let signing = rcgen::KeyPair::generate().unwrap();
    std::fs::write(pki.dir.path().join("upstream.pem"), signing.serialize_pem()).unwrap();
    let proxy = start_proxy_with(
        pki,
        &format!(
            "[admin]\nbind = \"127.0.0.1:0\"\n[auth]\norganisation_claim = \"org_id\"\n{issuer}\
             [auth.upstream_token]\nsigning_key = \"upstream.pem\"\nlifetime = \"30s\"\n\
             [[routes]]\npath = \"/mcp\"\nupstream = \"http://{}/mcp\"\n\
             upstream_token_audience = \"https://backend.internal/mcp\"\n[routes.auth]\nrequire = \"token\"\n",
            backend.addr
        ),
    )
    .await;
    let client_token = client_idp.token("/mcp", serde_json::json!({"org_id": "acme"}));
    let resp = proxy
        .client(false)
        .post(proxy.url("/mcp"))
        .bearer_auth(&client_token)
        .header("x-request-id", "req-upstream-1")
        .body(support::PING)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let h = seen.recv().await.unwrap().headers;
    let upstream = h["authorization"]
        .to_str()
        .unwrap()
        .strip_prefix("Bearer ")
        .expect("a bearer token upstream")
        .to_owned();
    assert_ne!(
        upstream, client_token,
        "the client's token never goes upstream"
    );

    // The backend verifies it with the JWKS the admin listener publishes.
    let admin = proxy.running.as_ref().unwrap().admin_addr.unwrap();
    let jwks: JwkSet = reqwest::get(format!("http://{admin}/upstream-jwks.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut v = Validation::new(Algorithm::ES256);
    v.set_audience(&["https://backend.internal/mcp"]);
    v.set_issuer(&["https://localhost:8443"]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(
        &upstream,
        &DecodingKey::from_jwk(&jwks.keys[0]).unwrap(),
        &v,
    )
    .unwrap()
    .claims;
    assert_eq!(claims["sub"], "agent-7");
    assert_eq!(claims["client_iss"], support::idp::ISSUER);
    assert_eq!(claims["org"], "acme");
    assert_eq!(claims["scope"], "mcp:tools");
    assert_eq!(claims["request_id"], "req-upstream-1");
    let lifetime = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
    assert_eq!(lifetime, 30);
}

#[tokio::test]
async fn refusals_before_the_body_is_read_reach_http2_clients_intact() {
    // curl (7.88) reports a framing error instead of the answer when the server resets an h2
    // stream whose body it never read; the proxy drains small refused bodies first.
    if std::process::Command::new("curl")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("curl not installed; skipping");
        return;
    }
    let s = setup().await;
    let ca = s.proxy.pki.dir.path().join("ca.pem");
    std::fs::write(&ca, &s.proxy.pki.ca.cert_pem).unwrap();
    let port = s.proxy.addr.port();
    for i in 0..20 {
        let out = tokio::process::Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--http2",
                "--cacert",
            ])
            .arg(&ca)
            .args([
                "--resolve",
                &format!("localhost:{port}:127.0.0.1"),
                &format!("https://localhost:{port}/mcp"),
                "-H",
                "content-type: application/json",
                "-d",
                support::PING,
            ])
            .output()
            .await
            .unwrap();
        assert!(out.status.success(), "attempt {i}: curl failed: {out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "401", "attempt {i}");
    }
}
