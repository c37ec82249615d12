//! MCP inspection of POST bodies on the request path: every refusal is a JSON-RPC error the
//! client can read, and the backend receives nothing.

mod support;

use std::time::Duration;

use support::{TestProxy, raw, recording, route, start_proxy};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

async fn setup(
    extra: &str,
) -> (
    TestProxy,
    raw::RawBackend,
    mpsc::UnboundedReceiver<recording::Received>,
) {
    let (backend, hits) =
        recording::serve(|| http::Response::new(raw::full(recording::RESULT))).await;
    let proxy = start_proxy(&format!(
        "{extra}{}",
        route("/mcp", &format!("http://{}/mcp", backend.addr))
    ))
    .await;
    (proxy, backend, hits)
}

/// POSTs `body` with `headers` and returns status and parsed JSON body.
async fn post(
    proxy: &TestProxy,
    headers: &[(&str, &str)],
    body: &'static str,
) -> (u16, serde_json::Value) {
    let mut req = proxy
        .client(true)
        .post(proxy.url("/mcp"))
        .header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.body(body).send().await.unwrap();
    let status = resp.status().as_u16();
    if status != 200 {
        assert_eq!(
            resp.headers()["content-type"],
            "application/json",
            "refusals are JSON"
        );
    }
    let json = resp.json().await.unwrap_or(serde_json::Value::Null);
    (status, json)
}

const NEW: (&str, &str) = ("mcp-protocol-version", "2026-07-28");

/// Name, request headers, body, expected status, expected JSON-RPC error code.
type Case = (
    &'static str,
    Vec<(&'static str, &'static str)>,
    &'static str,
    u16,
    i64,
);

#[tokio::test]
async fn malformed_envelopes_and_header_mismatches_never_reach_the_backend() {
    let (proxy, _backend, mut hits) = setup("").await;
    let cases: Vec<Case> = vec![
        ("not JSON", vec![], "{nope", 400, -32700),
        ("empty body", vec![], "", 400, -32700),
        (
            "JSON but not JSON-RPC",
            vec![],
            r#"{"hello":1}"#,
            400,
            -32600,
        ),
        (
            "wrong jsonrpc version",
            vec![],
            r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#,
            400,
            -32600,
        ),
        (
            "unsupported protocol version",
            vec![("mcp-protocol-version", "1999-01-01")],
            r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
            400,
            -32022,
        ),
        (
            "Mcp-Method disagrees with the body",
            vec![NEW, ("mcp-method", "tools/list")],
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add"}}"#,
            400,
            -32020,
        ),
        (
            "Mcp-Name disagrees with the body",
            vec![NEW, ("mcp-method", "tools/call"), ("mcp-name", "echo")],
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_everything"}}"#,
            400,
            -32020,
        ),
        (
            "Mcp-Name missing for tools/call in 2026-07-28",
            vec![NEW, ("mcp-method", "tools/call")],
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add"}}"#,
            400,
            -32020,
        ),
        (
            "batch in 2026-07-28",
            vec![NEW, ("mcp-method", "ping")],
            r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#,
            400,
            -32600,
        ),
        (
            "duplicate method member",
            vec![],
            r#"{"jsonrpc":"2.0","id":1,"method":"ping","method":"tools/call"}"#,
            400,
            -32600,
        ),
    ];
    for (name, headers, body, status, code) in cases {
        let (got, json) = post(&proxy, &headers, body).await;
        assert_eq!(got, status, "{name}: {json}");
        assert_eq!(json["jsonrpc"], "2.0", "{name}: {json}");
        assert_eq!(json["error"]["code"], code, "{name}: {json}");
        assert!(
            json["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{name}: {json}"
        );
    }
    let (_, json) = post(
        &proxy,
        &[("mcp-protocol-version", "1999-01-01")],
        r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
    )
    .await;
    assert!(
        json["error"]["data"]["supported"]
            .as_array()
            .is_some_and(|v| v.iter().any(|s| s == "2026-07-28")),
        "-32022 lists the supported versions: {json}"
    );
    assert!(
        hits.try_recv().is_err(),
        "a refused body reached the backend"
    );

    // Matching headers and body pass.
    let (status, _) = post(
        &proxy,
        &[NEW, ("mcp-method", "tools/call"), ("mcp-name", "add")],
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add","arguments":{}}}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert!(hits.recv().await.is_some());
}

#[tokio::test]
async fn base64_encoded_mcp_name_is_compared_decoded() {
    let (proxy, _backend, mut hits) = setup("").await;
    // "add" in the RFC 2047-style encoding MCP allows for non-ASCII names.
    let (status, json) = post(
        &proxy,
        &[
            NEW,
            ("mcp-method", "tools/call"),
            ("mcp-name", "=?base64?YWRk?="),
        ],
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add"}}"#,
    )
    .await;
    assert_eq!(status, 200, "{json}");
    assert!(hits.recv().await.is_some());
}

#[tokio::test]
async fn body_that_never_finishes_is_408_and_never_forwarded() {
    let (proxy, _backend, mut hits) = setup("[http]\nheader_read_timeout = \"1s\"\n").await;
    let mut s = support::tls::stream(&proxy, None, b"http/1.1").await;
    s.write_all(
        b"POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{\"jsonrpc\":",
    )
    .await
    .unwrap();
    let out = support::tls::read_all(&mut s, Duration::from_secs(5)).await;
    assert!(out.starts_with("HTTP/1.1 408"), "{out}");
    assert!(out.contains("\"jsonrpc\":\"2.0\""), "{out}");
    assert!(hits.try_recv().is_err());
}
