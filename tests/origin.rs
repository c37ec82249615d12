//! Origin and Host validation and CORS, over real TLS sockets: every refusal is a 403 with a
//! JSON-RPC error body, and the backend receives nothing.

mod support;

use std::time::Duration;

use support::{TestProxy, raw, recording, start_proxy, tls};
use tokio::sync::mpsc;

async fn setup() -> (
    TestProxy,
    raw::RawBackend,
    mpsc::UnboundedReceiver<recording::Received>,
) {
    let (backend, hits) = recording::ok().await;
    let proxy = start_proxy(&format!(
        r#"[[routes]]
path = "/mcp"
upstream = "http://{0}/mcp"
allowed_origins = ["https://app.example.com", "http://localhost:3000"]
[[routes]]
path = "/browser-only"
upstream = "http://{0}/mcp"
allowed_origins = ["https://app.example.com", "null"]
require_origin = true
"#,
        backend.addr
    ))
    .await;
    (proxy, backend, hits)
}

async fn assert_forbidden(resp: reqwest::Response) {
    assert_eq!(resp.status(), 403);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["jsonrpc"], "2.0");
    assert!(body.get("id").is_none());
    assert!(body["error"]["code"].is_i64());
}

#[tokio::test]
async fn foreign_null_and_duplicate_origins_are_refused() {
    let (proxy, _backend, mut hits) = setup().await;
    for h1 in [true, false] {
        let c = proxy.client(h1);
        for origin in [
            "https://evil.example",
            "null",
            "https://app.example.com.evil.example",
            "https://app.example.com:8443",
            "not a url",
        ] {
            let resp = c
                .post(proxy.url("/mcp"))
                .header("origin", origin)
                .body(support::PING)
                .send()
                .await
                .unwrap();
            assert_forbidden(resp).await;
        }
        let resp = c
            .post(proxy.url("/mcp"))
            .header("origin", "https://app.example.com")
            .header("origin", "https://app.example.com")
            .body(support::PING)
            .send()
            .await
            .unwrap();
        assert_forbidden(resp).await;
        // A browser-only route refuses requests without Origin.
        assert_forbidden(
            c.post(proxy.url("/browser-only"))
                .body(support::PING)
                .send()
                .await
                .unwrap(),
        )
        .await;
    }
    assert!(
        hits.try_recv().is_err(),
        "a refused request reached the backend"
    );
}

#[tokio::test]
async fn allowed_and_absent_origins_pass_with_cors_headers() {
    let (proxy, _backend, mut hits) = setup().await;
    let c = proxy.client(false);
    let resp = c
        .post(proxy.url("/mcp"))
        .body(support::PING)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "server-side clients send no Origin");
    assert!(resp.headers().get("access-control-allow-origin").is_none());
    let resp = c
        .post(proxy.url("/mcp"))
        .header("origin", "HTTPS://APP.example.com:443")
        .body(support::PING)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "HTTPS://APP.example.com:443"
    );
    assert!(
        resp.headers()["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .contains("mcp-session-id")
    );
    assert_eq!(resp.headers()["vary"], "origin");
    let resp = c
        .post(proxy.url("/browser-only"))
        .header("origin", "null")
        .body(support::PING)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "null allowed where listed");
    // Proxy-made errors carry CORS headers too, so browser code can read them.
    let resp = c
        .put(proxy.url("/mcp"))
        .header("origin", "http://localhost:3000")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "http://localhost:3000"
    );
    assert_eq!((0..3).filter(|_| hits.try_recv().is_ok()).count(), 3);
}

#[tokio::test]
async fn cors_preflight() {
    let (proxy, _backend, mut hits) = setup().await;
    let c = proxy.client(false);
    let resp = c
        .request(http::Method::OPTIONS, proxy.url("/mcp"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "content-type, mcp-session-id, mcp-param-region",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let h = resp.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    assert_eq!(h["access-control-allow-methods"], "GET, POST, DELETE");
    let allow = h["access-control-allow-headers"].to_str().unwrap();
    for name in [
        "authorization",
        "content-type",
        "mcp-session-id",
        "mcp-protocol-version",
        "last-event-id",
        "mcp-param-region",
    ] {
        assert!(allow.contains(name), "{name} missing from {allow}");
    }
    let expose = h["access-control-expose-headers"].to_str().unwrap();
    for name in ["mcp-session-id", "mcp-protocol-version", "www-authenticate"] {
        assert!(expose.contains(name), "{name} not exposed: {expose}");
    }
    // Preflight from a foreign origin: 403. OPTIONS that is no preflight: 405.
    let resp = c
        .request(http::Method::OPTIONS, proxy.url("/mcp"))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_forbidden(resp).await;
    let resp = c
        .request(http::Method::OPTIONS, proxy.url("/mcp"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    assert!(
        hits.try_recv().is_err(),
        "preflights never reach the backend"
    );
}

#[tokio::test]
async fn foreign_host_is_refused_dns_rebinding() {
    let (proxy, _backend, mut hits) = setup().await;
    for host in ["evil.example", "localhost.evil.example", "127.0.0.1:1"] {
        let req = format!(
            "POST /mcp HTTP/1.1\r\nHost: {host}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
        );
        let text = tls::exchange(&proxy, None, req.as_bytes(), Duration::from_secs(5)).await;
        assert!(text.starts_with("HTTP/1.1 403"), "Host {host}: {text}");
        assert!(text.contains("\"jsonrpc\":\"2.0\""), "{text}");
    }
    assert!(
        hits.try_recv().is_err(),
        "a rebinding request reached the backend"
    );
}
