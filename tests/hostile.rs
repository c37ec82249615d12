//! Hostile and malformed input over real TLS sockets: every case gets a clear refusal or a
//! closed connection, nothing reaches the backend, and the proxy keeps serving afterwards.

mod support;

use std::time::Duration;

use support::tls::{self, status as status_of};
use support::{TestProxy, raw, recording, route, start_proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// A valid JSON-RPC request body (40 bytes); the proxy now reads every POST as JSON-RPC.
const PING: &[u8] = br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;

/// Writes `request` raw and returns whatever comes back before the server closes or 5 s pass.
async fn raw_exchange(proxy: &TestProxy, request: &[u8]) -> String {
    tls::exchange(proxy, None, request, Duration::from_secs(5)).await
}

async fn setup(
    extra: &str,
) -> (
    TestProxy,
    raw::RawBackend,
    mpsc::UnboundedReceiver<recording::Received>,
) {
    let (backend, hits) = recording::ok().await;
    let proxy = start_proxy(&format!(
        "{extra}{}",
        route("/mcp", &format!("http://{}/mcp", backend.addr))
    ))
    .await;
    (proxy, backend, hits)
}

#[tokio::test]
async fn malformed_http_is_refused_before_the_backend() {
    let (proxy, _backend, mut hits) = setup("[http]\nmax_headers = 20\n").await;
    let many_headers: String = (0..40).map(|i| format!("X-H{i}: v\r\n")).collect();
    let huge_header = format!("X-Big: {}\r\n", "a".repeat(80 * 1024));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage request line", b"\x16\x03\x01 NOT HTTP AT ALL\r\n\r\n".to_vec()),
        (
            "too many headers",
            format!("POST /mcp HTTP/1.1\r\nHost: localhost\r\n{many_headers}\r\n").into_bytes(),
        ),
        (
            "header larger than the limit",
            format!("POST /mcp HTTP/1.1\r\nHost: localhost\r\n{huge_header}\r\n").into_bytes(),
        ),
        (
            "non-numeric Content-Length",
            b"POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Length: abc\r\n\r\n".to_vec(),
        ),
        (
            "conflicting Content-Length",
            b"POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\nContent-Length: 5\r\n\r\n{}"
                .to_vec(),
        ),
        (
            "duplicate Mcp-Session-Id",
            b"POST /mcp HTTP/1.1\r\nHost: localhost\r\nMcp-Session-Id: a\r\nMcp-Session-Id: b\r\nContent-Length: 40\r\nConnection: close\r\n\r\n{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}"
                .to_vec(),
        ),
        (
            "non-ASCII session id",
            b"POST /mcp HTTP/1.1\r\nHost: localhost\r\nMcp-Session-Id: \xff\xfe.\xfd\r\nContent-Length: 40\r\nConnection: close\r\n\r\n{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}"
                .to_vec(),
        ),
        (
            "path traversal",
            b"GET /mcp/../admin HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".to_vec(),
        ),
        (
            "absolute-form request to another host",
            b"GET http://evil.example/mcp2 HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n".to_vec(),
        ),
    ];
    for (name, request) in cases {
        let response = raw_exchange(&proxy, &request).await;
        let status = status_of(&response);
        assert!(
            response.is_empty() || status.starts_with('4'),
            "{name}: expected a 4xx or a closed connection, got {response:?}"
        );
    }
    assert!(
        hits.try_recv().is_err(),
        "a malformed request reached the backend"
    );

    // The proxy still serves well-formed requests.
    let ok = raw_exchange(
        &proxy,
        b"POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Length: 40\r\nConnection: close\r\n\r\n{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}",
    )
    .await;
    assert_eq!(status_of(&ok), "200", "{ok}");
}

#[tokio::test]
async fn slow_request_heads_are_cut_off() {
    let (proxy, _backend, mut hits) = setup("[http]\nheader_read_timeout = \"500ms\"\n").await;
    let mut s = tls::stream(&proxy, None, b"http/1.1").await;
    s.write_all(b"POST /mcp HTTP/1.1\r\nHost: local")
        .await
        .unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    assert!(
        read.is_ok(),
        "connection with a stalled head must be closed"
    );
    let text = String::from_utf8_lossy(&out);
    assert!(text.is_empty() || status_of(&text) == "408", "{text}");
    assert!(hits.try_recv().is_err());
}

#[tokio::test]
async fn plaintext_http_on_the_tls_port_is_dropped() {
    let (proxy, _backend, mut hits) = setup("").await;
    let mut tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    tcp.write_all(b"GET /mcp HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut out)).await;
    assert!(
        !String::from_utf8_lossy(&out).contains("200"),
        "plaintext must never be served"
    );
    assert!(hits.try_recv().is_err());
}

#[tokio::test]
async fn streamed_body_over_the_limit_is_cut() {
    // Chunked bodies declare no length: the limit applies while streaming.
    let (tx, mut got) = mpsc::unbounded_channel();
    let backend = raw::serve(move |req: http::Request<hyper::body::Incoming>| {
        let tx = tx.clone();
        async move {
            use http_body_util::BodyExt;
            let _ = tx.send(
                req.into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes().len())
                    .ok(),
            );
            http::Response::new(raw::full("ok"))
        }
    })
    .await;
    let proxy = start_proxy(&format!(
        "[http]\nmax_request_body_bytes = 1000\n{}",
        route("/mcp", &format!("http://{}/mcp", backend.addr))
    ))
    .await;
    let chunks = futures_util::stream::iter(
        (0..10).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'x'; 500]))),
    );
    let resp = proxy
        .client(true)
        .post(proxy.url("/mcp"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await;
    // The client may still be sending when the answer comes; if it reads one, it is a 413.
    if let Ok(resp) = resp {
        assert_eq!(resp.status(), 413, "oversized streamed body");
    }
    // If the backend saw the request at all, it never received more than the limit.
    if let Ok(Some(seen)) = tokio::time::timeout(Duration::from_secs(2), got.recv()).await {
        assert!(
            seen.is_none_or(|n| n <= 1000),
            "backend received {seen:?} bytes"
        );
    }
}

#[tokio::test]
async fn content_length_with_transfer_encoding_cannot_smuggle() {
    // RFC 9112 §6.3: Transfer-Encoding wins, Content-Length is dropped, the connection closes.
    // What matters at the edge: the upstream sees one consistent framing, and the bytes after
    // the chunked body are never read as a second request.
    let (tx, mut seen) = mpsc::unbounded_channel();
    let backend = raw::serve(move |req: http::Request<hyper::body::Incoming>| {
        let tx = tx.clone();
        async move {
            use http_body_util::BodyExt;
            let cl = req.headers().get("content-length").cloned();
            let path = req.uri().path().to_owned();
            let body = req.into_body().collect().await.map(|b| b.to_bytes()).ok();
            let _ = tx.send((path, cl, body));
            http::Response::new(raw::full("ok"))
        }
    })
    .await;
    let proxy = start_proxy(&route("/mcp", &format!("http://{}/mcp", backend.addr))).await;
    let smuggle = b"POST /mcp HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n28\r\n{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}\r\n0\r\n\r\nGET /mcp HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let response = raw_exchange(&proxy, smuggle).await;
    assert!(
        status_of(&response).starts_with('4')
            || response.to_ascii_lowercase().contains("connection: close"),
        "{response}"
    );
    let (path, cl, body) = seen.recv().await.unwrap();
    assert_eq!(path, "/mcp");
    assert!(
        cl.as_ref().is_none_or(|v| v == "40"),
        "stale Content-Length forwarded: {cl:?}"
    );
    assert_eq!(body.as_deref(), Some(PING));
    assert!(
        tokio::time::timeout(Duration::from_millis(500), seen.recv())
            .await
            .is_err(),
        "the trailing bytes were treated as a second request"
    );
    assert_eq!(response.matches("HTTP/1.1").count(), 1, "{response}");
}
