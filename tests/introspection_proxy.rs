//! Opaque tokens on the request path: an issuer configured with
//! `[auth.issuers.introspection]` only, checked through a local HTTPS RFC 7662 endpoint.
//! Active → relayed with identity headers; inactive → 401; endpoint down → 503; answers
//! cached; the backend sees nothing of refused requests.

mod support;

use support::introspection_server::{ClientAuth, IntrospectionServer};
use support::{TestProxy, raw, recording, start_proxy_with};
use tokio::sync::mpsc;

const ISS: &str = "https://as.partner.example";
const SECRET: &str = "introspection-secret";

struct Setup {
    proxy: TestProxy,
    server: IntrospectionServer,
    _backend: raw::RawBackend,
    seen: mpsc::UnboundedReceiver<recording::Received>,
}

async fn setup() -> Setup {
    let (backend, seen) = recording::ok().await;
    let server = IntrospectionServer::start("mcp-edge", SECRET, ClientAuth::Basic).await;
    let pki = support::Pki::new();
    std::fs::write(pki.dir.path().join("as.secret"), format!("{SECRET}\n")).unwrap();
    let proxy = start_proxy_with(
        pki,
        &format!(
            r#"[auth]
organisation_claim = "org"
[[auth.issuers]]
issuer = "{ISS}"
[auth.issuers.introspection]
endpoint = "{url}"
client_id = "mcp-edge"
client_secret_file = "as.secret"
ca = "{ca}"
cache_max = "5m"
timeout = "2s"
[[routes]]
path = "/memory"
upstream = "http://{addr}/mcp"
[routes.auth]
require = "token"
scopes = ["memory:read"]
"#,
            url = server.url(),
            ca = server.ca_path.display(),
            addr = backend.addr
        ),
    )
    .await;
    Setup {
        proxy,
        server,
        _backend: backend,
        seen,
    }
}

fn active() -> serde_json::Value {
    let now = support::clock::now();
    serde_json::json!({
        "active": true, "iss": ISS, "sub": "partner-42", "client_id": "partner-app",
        "aud": "https://localhost:8443/memory", "scope": "memory:read", "exp": now + 300,
        "org": "acme",
    })
}

async fn call(s: &Setup, token: &str) -> reqwest::Response {
    s.proxy
        .client(false)
        .post(s.proxy.url("/memory"))
        .bearer_auth(token)
        .body(support::PING)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn opaque_tokens_are_introspected_cached_and_fail_closed() {
    let mut s = setup().await;
    s.server.set_answer("opaque-good", active());
    s.server
        .set_answer("opaque-revoked", serde_json::json!({"active": false}));

    let ok = call(&s, "opaque-good").await;
    assert_eq!(ok.status(), 200);
    let h = s.seen.recv().await.unwrap().headers;
    assert!(h.get("authorization").is_none());
    assert_eq!(h["x-mcp-edge-subject"], "partner-42");
    assert_eq!(h["x-mcp-edge-issuer"], ISS);
    let hits = s.server.hits();

    // Cached: the same token again costs no call, even with the endpoint down.
    s.server.set_down(true);
    assert_eq!(call(&s, "opaque-good").await.status(), 200);
    assert_eq!(s.server.hits(), hits, "answer served from the cache");
    let _ = s.seen.recv().await;

    // An uncached token while the endpoint is down: 503, never 200.
    let down = call(&s, "opaque-unknown").await;
    assert_eq!(down.status(), 503);
    let challenge = down.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(challenge.contains("temporarily_unavailable"), "{challenge}");
    s.server.set_down(false);

    let revoked = call(&s, "opaque-revoked").await;
    assert_eq!(revoked.status(), 401);
    let challenge = revoked.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        challenge.contains(r#"error="invalid_token""#),
        "{challenge}"
    );
    assert!(challenge.contains("token not active"), "{challenge}");
    assert!(
        challenge.contains(
            r#"resource_metadata="https://localhost:8443/.well-known/oauth-protected-resource/memory""#
        ),
        "{challenge}"
    );

    // Active, but for another resource, or without the route's scope.
    let mut other = active();
    other["aud"] = "https://localhost:8443/other".into();
    s.server.set_answer("opaque-other-aud", other);
    assert_eq!(call(&s, "opaque-other-aud").await.status(), 401);
    let mut narrow = active();
    narrow["scope"] = "memory:list".into();
    s.server.set_answer("opaque-narrow", narrow);
    assert_eq!(call(&s, "opaque-narrow").await.status(), 403);

    assert!(
        s.seen.try_recv().is_err(),
        "a refused token reached the backend"
    );

    // The PRM document names the issuer as authorization server.
    let prm: serde_json::Value = s
        .proxy
        .client(false)
        .get(s.proxy.url("/.well-known/oauth-protected-resource/memory"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(prm["authorization_servers"], serde_json::json!([ISS]));
}
