//! Bounded streams: GET streams end at `sse.max_stream_lifetime` with `retry:` (and resume),
//! answers to POSTs are not cut by it, a client that stops reading is cut off after
//! `sse.client_write_timeout` (and the upstream with it), and TLS handshakes beyond
//! `listener.max_handshakes_in_flight` wait for a slot. Real sockets, real TLS.

mod support;

use std::time::Duration;

use serde_json::json;
use support::dying::{self, event};
use support::{route, start_proxy, tls};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// Bound for things that should happen "promptly": generous, so a loaded box never flakes.
const PROMPTLY: Duration = Duration::from_secs(20);

#[tokio::test]
async fn lifetime_closes_get_streams_with_retry_and_the_client_resumes() {
    let (seen_tx, mut seen) = mpsc::unbounded_channel::<Option<String>>();
    let backend = dying::serve(move |req, mut conn| {
        let seen_tx = seen_tx.clone();
        async move {
            if req.method == "GET" {
                let _ = seen_tx.send(req.header("last-event-id").map(str::to_owned));
                conn.sse_head("").await;
                conn.chunk(b"id: 7\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"n\"}\n\n")
                    .await;
                std::future::pending::<()>().await;
                return None;
            }
            // A POST answered after the lifetime: its stream is not cut.
            conn.sse_head("").await;
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let id = req.json()["id"].clone();
            conn.chunk(&event(&json!({"jsonrpc": "2.0", "id": id, "result": {}})))
                .await;
            conn.end().await;
            None
        }
    })
    .await;
    let proxy = start_proxy(&format!(
        "[sse]\nheartbeat_interval = \"100ms\"\nmax_stream_lifetime = \"1s\"\n{}",
        route("/mcp", &format!("http://{}/mcp", backend.addr))
    ))
    .await;
    let client = proxy.client(false);
    let open = |last: Option<&'static str>| {
        let mut req = client
            .get(proxy.url("/mcp"))
            .header("accept", "text/event-stream");
        if let Some(last) = last {
            req = req.header("last-event-id", last);
        }
        req.send()
    };
    let first = open(None).await.unwrap();
    assert_eq!(first.status(), 200);
    let text = tokio::time::timeout(PROMPTLY, first.text())
        .await
        .expect("the stream ends at its lifetime")
        .expect("cleanly");
    assert!(
        text.ends_with("id: 7\nretry: 1000\n\n"),
        "the last event id and retry before the close: {text:?}"
    );
    assert_eq!(seen.recv().await.unwrap(), None);
    // The client reconnects as told, resuming after the last id.
    let mut second = open(Some("7")).await.unwrap();
    assert_eq!(second.status(), 200);
    assert_eq!(seen.recv().await.unwrap().as_deref(), Some("7"));
    let chunk = tokio::time::timeout(PROMPTLY, second.chunk())
        .await
        .expect("resumed stream relays")
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&chunk).contains("id: 7"));
    drop(second);

    let answer = client
        .post(proxy.url("/mcp"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 11, "method": "tools/call",
                      "params": {"name": "echo", "arguments": {}}}))
        .send()
        .await
        .unwrap();
    let text = tokio::time::timeout(PROMPTLY, answer.text())
        .await
        .expect("answer in time")
        .unwrap();
    assert!(
        text.contains("\"id\":11") && text.contains("\"result\""),
        "{text}"
    );
    assert!(
        !text.contains("retry:") && !text.contains("error"),
        "{text}"
    );
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off_and_the_upstream_dropped() {
    let (dropped_tx, mut dropped) = mpsc::unbounded_channel::<usize>();
    let backend = dying::serve(move |_req, mut conn| {
        let dropped_tx = dropped_tx.clone();
        async move {
            conn.sse_head("").await;
            let payload = format!("data: {}\n\n", "x".repeat(16 * 1024));
            let mut sent = 0;
            // As fast as the proxy takes it, until the proxy hangs up.
            while conn.chunk(payload.as_bytes()).await {
                sent += 1;
            }
            let _ = dropped_tx.send(sent);
            None
        }
    })
    .await;
    let proxy = start_proxy(&format!(
        "[sse]\nclient_write_timeout = \"500ms\"\n{}",
        route("/mcp", &format!("http://{}/mcp", backend.addr))
    ))
    .await;
    // A real TLS client with a small receive buffer that reads the head and then stops.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    let tcp = socket.connect(proxy.addr).await.unwrap();
    let cfg = tls::client_config(&proxy.pki.ca.cert_pem, None, &[b"http/1.1"]);
    let mut stream = tls::handshake(tcp, cfg).await.unwrap();
    stream
        .write_all(b"GET /mcp HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 64];
    stream.read_exact(&mut head).await.unwrap();
    assert!(head.starts_with(b"HTTP/1.1 200"), "{head:?}");
    // Stop reading. The proxy's writes block; after the timeout it closes the connection and
    // drops the upstream stream, whose writes then fail.
    let sent = tokio::time::timeout(PROMPTLY, dropped.recv())
        .await
        .expect("the backend sees its connection dropped")
        .unwrap();
    assert!(sent > 0);
    // What was already in flight can still be read; then the connection is closed.
    let mut sink = Vec::new();
    let end = tokio::time::timeout(PROMPTLY, stream.read_to_end(&mut sink)).await;
    assert!(end.is_ok(), "the proxy closed the client connection");
}

#[tokio::test]
async fn handshakes_beyond_the_cap_wait_for_a_slot() {
    let pki = support::Pki::new();
    let text = support::listener_toml(&pki).replace(
        "[listener.tls]",
        "max_handshakes_in_flight = 2\nhandshake_timeout = \"2s\"\n[listener.tls]",
    ) + &route("/mcp", "http://127.0.0.1:9/mcp");
    let proxy = support::start_proxy_text(pki, &text).await;
    // Three connections that never send a ClientHello: two hold the slots, one waits.
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(tokio::net::TcpStream::connect(proxy.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let cfg = tls::client_config(&proxy.pki.ca.cert_pem, None, &[b"http/1.1"]);
    // While the slots are held (for the 2 s handshake deadline) a new handshake waits.
    let early = tokio::time::timeout(
        Duration::from_millis(500),
        tls::connect(proxy.addr, cfg.clone()),
    )
    .await;
    assert!(
        early.is_err(),
        "a handshake beyond the cap waits for a slot"
    );
    // The silent ones time out and give their slots back: a normal client is served.
    let resp = tokio::time::timeout(PROMPTLY, proxy.client(true).get(proxy.url("/nope")).send())
        .await
        .expect("served once slots free up")
        .expect("request answered");
    assert_eq!(resp.status(), 404);
    drop(silent);
}
