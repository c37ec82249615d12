//! Streams that die answer their callers: when the upstream's event stream for a POST ends
//! (dropped, reset, broken, silent, or closed) before every request in the POST is answered,
//! the client gets one JSON-RPC error per unanswered id and the stream ends; a clean close
//! after an event id and `retry:` is left to the client to resume. Real sockets, real TLS.

mod support;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use support::dying::{self, Conn, RawRequest, error_ids, event};
use support::{TestProxy, route, start_proxy};
use tokio::sync::Notify;

/// Bound for things that should happen "promptly": generous, so a loaded box never flakes;
/// the behaviour under test fails by never happening, not by being slow.
const PROMPTLY: Duration = Duration::from_secs(15);

fn call(id: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": "echo", "arguments": {"text": "hi"}}})
}

fn progress() -> Value {
    json!({"jsonrpc": "2.0", "method": "notifications/progress",
           "params": {"progressToken": "p", "progress": 1}})
}

/// POSTs `body` (protocol 2025-03-26, so batches are allowed) and returns the status and the
/// JSON messages of the answer stream, read to its end within [`PROMPTLY`].
async fn post(proxy: &TestProxy, h1: bool, body: &Value) -> (u16, Vec<Value>, String) {
    let resp = tokio::time::timeout(
        PROMPTLY,
        proxy
            .client(h1)
            .post(proxy.url("/mcp"))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .json(body)
            .send(),
    )
    .await
    .expect("answer head in time")
    .expect("request sent");
    let status = resp.status().as_u16();
    let text = tokio::time::timeout(PROMPTLY, resp.text())
        .await
        .expect("the stream must end, not hang")
        .expect("the stream ends cleanly for the client");
    let messages = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| serde_json::from_str(d).expect("every data line is JSON"))
        .collect();
    (status, messages, text)
}

fn assert_injected(m: &Value, id: &Value, says: &str) {
    assert_eq!(m["jsonrpc"], "2.0");
    assert_eq!(&m["id"], id, "{m}");
    assert_eq!(m["error"]["code"], -32000, "{m}");
    let message = m["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(says), "{message:?} should say {says:?}");
}

/// A backend that answers every POST with an event stream: the head, the events `answer`
/// picks for the request, then `end` decides how the connection ends.
async fn sse_backend<F, E, Fut>(answer: F, end: E) -> dying::DyingBackend
where
    F: Fn(&RawRequest) -> Vec<Vec<u8>> + Clone + Send + Sync + 'static,
    E: Fn(RawRequest, Conn) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Option<Conn>> + Send + 'static,
{
    dying::serve(move |req, mut conn| {
        let (answer, end) = (answer.clone(), end.clone());
        async move {
            conn.sse_head("").await;
            for e in answer(&req) {
                conn.chunk(&e).await;
            }
            end(req, conn).await
        }
    })
    .await
}

/// Closes the TCP connection mid-body (no last chunk): the upstream died.
async fn drop_connection(_: RawRequest, _: Conn) -> Option<Conn> {
    None
}

/// Ends the body cleanly, then closes.
async fn clean_end(_: RawRequest, mut conn: Conn) -> Option<Conn> {
    conn.end().await;
    None
}

async fn proxy_for(addr: std::net::SocketAddr, extra: &str) -> TestProxy {
    start_proxy(&format!(
        "{extra}{}",
        route("/mcp", &format!("http://{addr}/mcp"))
    ))
    .await
}

#[tokio::test]
async fn a_stream_dropped_mid_answer_gets_one_error_for_the_call() {
    let backend = sse_backend(|_| vec![event(&progress())], drop_connection).await;
    let proxy = proxy_for(backend.addr, "").await;
    for h1 in [true, false] {
        let (status, messages, text) = post(&proxy, h1, &call(json!(5))).await;
        assert_eq!(status, 200);
        assert_eq!(
            messages.len(),
            2,
            "the notification, then one error: {text}"
        );
        assert_eq!(messages[0]["method"], "notifications/progress");
        assert_injected(&messages[1], &json!(5), "upstream stream failed");
        assert_eq!(messages[1]["error"]["data"]["reason"], "upstream_error");
        assert!(
            !text.contains(&backend.addr.to_string()) && !text.contains("127.0.0.1"),
            "the backend address never reaches the client: {text}"
        );
    }
}

#[tokio::test]
async fn a_batch_gets_an_error_only_for_the_unanswered_id() {
    // The backend answers id 1 (writing it as 1.0, as some re-serialize) and dies.
    let backend = sse_backend(
        |_| {
            vec![event(
                &json!({"jsonrpc": "2.0", "id": 1.0, "result": {"content": []}}),
            )]
        },
        drop_connection,
    )
    .await;
    let proxy = proxy_for(backend.addr, "").await;
    let batch = json!([call(json!(1)), call(json!("two")), progress()]);
    let (_, messages, text) = post(&proxy, false, &batch).await;
    assert_eq!(error_ids(&messages), vec![json!("two")], "{text}");
    assert_eq!(messages.len(), 2, "{text}");
}

#[tokio::test]
async fn a_clean_close_after_an_id_and_retry_is_left_to_resume() {
    let backend = sse_backend(
        |req| {
            if req.json()["id"] == 1 {
                // The 2025-11-25 way to say "reconnect with Last-Event-ID".
                vec![b"id: ev-1\nretry: 500\ndata:\n\n".to_vec()]
            } else {
                vec![b"id: ev-2\ndata:\n\n".to_vec(), event(&progress())]
            }
        },
        clean_end,
    )
    .await;
    let proxy = proxy_for(backend.addr, "").await;
    let (_, messages, text) = post(&proxy, false, &call(json!(1))).await;
    assert!(messages.is_empty(), "nothing injected: {text}");
    assert!(text.contains("retry: 500"), "{text}");
    // Without `retry:` a clean close is no request to resume: the call is answered.
    let (_, messages, text) = post(&proxy, false, &call(json!(2))).await;
    assert_eq!(error_ids(&messages), vec![json!(2)], "{text}");
    assert_injected(&messages[1], &json!(2), "ended before answering");
}

#[tokio::test]
async fn a_backend_that_never_answers_is_a_json_rpc_timeout() {
    let hole = support::raw::black_hole().await;
    let proxy = proxy_for(
        hole.addr,
        "[upstream]\nresponse_header_timeout = \"300ms\"\n",
    )
    .await;
    let (status, messages, text) = post(&proxy, false, &call(json!(3))).await;
    assert_eq!(status, 504, "{text}");
    assert_eq!(messages.len(), 0, "not an event stream: {text}");
    let body: Value = serde_json::from_str(&text).expect("JSON-RPC error body");
    assert_eq!(body["jsonrpc"], "2.0");
    assert!(body["error"]["message"].is_string(), "{body}");
}

#[tokio::test]
async fn headers_then_silence_is_ended_by_the_idle_limit_with_an_answer() {
    let backend = sse_backend(
        |_| vec![event(&progress())],
        |_, conn| async move {
            // Hold the connection open and say nothing more.
            std::future::pending::<()>().await;
            Some(conn)
        },
    )
    .await;
    let proxy = proxy_for(
        backend.addr,
        "[sse]\nheartbeat_interval = \"100ms\"\nidle_timeout = \"600ms\"\n",
    )
    .await;
    let (_, messages, text) = post(&proxy, true, &call(json!("s"))).await;
    assert_eq!(error_ids(&messages), vec![json!("s")], "{text}");
    assert_injected(&messages[1], &json!("s"), "went silent");
}

#[tokio::test]
async fn garbage_after_the_head_is_answered() {
    // Broken chunk framing: the proxy's upstream client fails to read the body.
    let broken = sse_backend(
        |_| vec![],
        |_, mut conn| async move {
            conn.raw(b"zz not a chunk size\r\n\r\n").await;
            None
        },
    )
    .await;
    let proxy = proxy_for(broken.addr, "").await;
    let (_, messages, text) = post(&proxy, false, &call(json!(7))).await;
    assert_eq!(error_ids(&messages), vec![json!(7)], "{text}");
    // Valid framing, bytes that are no event stream, then a clean end: a truncated event.
    let junk = sse_backend(|_| vec![b"\x00\xff{{{ not sse".to_vec()], clean_end).await;
    let proxy = proxy_for(junk.addr, "").await;
    let (_, messages, text) = post(&proxy, false, &call(json!(8))).await;
    assert_eq!(error_ids(&messages), vec![json!(8)], "{text}");
}

#[tokio::test]
async fn a_json_answer_cut_short_is_a_502_the_client_can_read() {
    let backend = dying::serve(|_, mut conn| async move {
        conn.raw(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"jsonrpc\":",
        )
        .await;
        None
    })
    .await;
    let proxy = proxy_for(backend.addr, "").await;
    for h1 in [true, false] {
        let (status, _, text) = post(&proxy, h1, &call(json!(9))).await;
        assert_eq!(status, 502, "{text}");
        let body: Value = serde_json::from_str(&text).expect("JSON-RPC error body");
        assert_eq!(body["error"]["message"], "upstream unavailable");
    }
}

/// A minimal MCP server over raw HTTP/1.1: it completes the handshake, then its event stream
/// for `tools/call` sends a progress notification and dies.
async fn mcp_backend_dying_mid_call() -> dying::DyingBackend {
    dying::serve(|req, mut conn| async move {
        if req.method != "POST" {
            conn.empty(405).await;
            return Some(conn);
        }
        let msg = req.json();
        match msg["method"].as_str() {
            Some("initialize") => {
                let result = json!({"jsonrpc": "2.0", "id": msg["id"], "result": {
                    "protocolVersion": msg["params"]["protocolVersion"],
                    "capabilities": {"tools": {}},
                    "serverInfo": {"name": "dying", "version": "1"}}});
                conn.json(200, &result.to_string(), "").await;
                Some(conn)
            }
            Some("tools/call") => {
                conn.sse_head("").await;
                conn.chunk(&event(&progress())).await;
                None
            }
            _ => {
                conn.empty(202).await;
                Some(conn)
            }
        }
    })
    .await
}

#[tokio::test]
async fn an_rmcp_client_gets_an_error_not_a_hang_when_the_backend_dies_mid_call() {
    use rmcp::ServiceExt as _;
    use rmcp::transport::StreamableHttpClientTransport;
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;

    let backend = mcp_backend_dying_mid_call().await;
    let proxy = proxy_for(backend.addr, "").await;
    for h1 in [true, false] {
        let transport = StreamableHttpClientTransport::with_client(
            proxy.client(h1),
            StreamableHttpClientTransportConfig::with_uri(proxy.url("/mcp")),
        );
        let client = tokio::time::timeout(PROMPTLY, ().serve(transport))
            .await
            .expect("handshake in time")
            .expect("handshake through the proxy");
        let params = rmcp::model::CallToolRequestParams::new("echo")
            .with_arguments(serde_json::Map::from_iter([("text".into(), json!("hi"))]));
        let result = tokio::time::timeout(PROMPTLY, client.call_tool(params))
            .await
            .expect("the call must end with an error, not hang");
        let err = result.expect_err("the backend died before answering");
        let text = err.to_string();
        assert!(
            text.contains("upstream stream failed before answering"),
            "the proxy's JSON-RPC error reaches the caller: {text}"
        );
        let _ = client.cancel().await;
    }
}

/// A legacy HTTP+SSE backend: its stream announces the message endpoint, POSTs are accepted
/// (202) and never answered; the first accepted POST makes the stream's connection drop.
async fn legacy_backend_dying_after_a_post() -> dying::DyingBackend {
    let posted = Arc::new(Notify::new());
    dying::serve(move |req, mut conn| {
        let posted = posted.clone();
        async move {
            if req.method == "GET" {
                conn.sse_head("").await;
                conn.chunk(b"event: endpoint\ndata: /message?sessionId=abc\n\n")
                    .await;
                posted.notified().await;
                return None;
            }
            conn.empty(202).await;
            posted.notify_one();
            Some(conn)
        }
    })
    .await
}

#[tokio::test]
async fn a_legacy_stream_that_dies_answers_its_sessions_pending_posts() {
    let backend = legacy_backend_dying_after_a_post().await;
    let proxy = start_proxy(&format!(
        "[[routes]]\npath = \"/sse\"\ntransport = \"sse\"\nupstream = \"http://{}/sse\"\n",
        backend.addr
    ))
    .await;
    let client = proxy.client(true);
    let mut stream = client.get(proxy.url("/sse")).send().await.unwrap();
    assert_eq!(stream.status(), 200);
    let mut seen = String::new();
    let endpoint = loop {
        let chunk = tokio::time::timeout(PROMPTLY, stream.chunk())
            .await
            .expect("endpoint event in time")
            .expect("stream readable")
            .expect("stream open");
        seen.push_str(&String::from_utf8_lossy(&chunk));
        if let Some(line) = seen.lines().find_map(|l| l.strip_prefix("data: ")) {
            break line.trim().to_owned();
        }
    };
    assert!(endpoint.starts_with("/sse?sessionId="), "{endpoint}");
    let resp = client
        .post(proxy.url(&endpoint))
        .header("content-type", "application/json")
        .json(&call(json!(42)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let rest = tokio::time::timeout(PROMPTLY, stream.text())
        .await
        .expect("the legacy stream ends")
        .expect("cleanly");
    let messages: Vec<Value> = rest
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect();
    assert_eq!(error_ids(&messages), vec![json!(42)], "{rest}");
    assert!(rest.contains("event: message"), "{rest}");
    assert_injected(&messages[0], &json!(42), "upstream stream failed");
}

#[tokio::test]
async fn answers_that_keep_dying_mid_stream_open_the_circuit() {
    // Every head is good and every body dies: the body failures alone must eject it.
    let backend = sse_backend(|_| vec![event(&progress())], drop_connection).await;
    let proxy = proxy_for(
        backend.addr,
        "[upstream.circuit]\nfailures = 3\nopen_for = \"30s\"\n",
    )
    .await;
    for id in 1..=3 {
        let (status, messages, text) = post(&proxy, true, &call(json!(id))).await;
        assert_eq!(status, 200, "{text}");
        assert_injected(&messages[1], &json!(id), "upstream stream failed");
    }
    let (status, messages, text) = post(&proxy, true, &call(json!(4))).await;
    assert_eq!(
        status, 503,
        "the circuit is open after three dead streams: {text}"
    );
    assert_eq!(
        messages.len(),
        0,
        "a plain JSON refusal, not a stream: {text}"
    );
    let body: Value = serde_json::from_str(&text).expect("JSON-RPC error");
    assert_eq!(body["id"], 4, "{body}");
}

#[tokio::test]
async fn a_json_answer_larger_than_the_buffer_is_relayed_whole() {
    // 3 MiB in 64 KiB chunks: past the 1 MiB read-whole buffer it streams as it comes.
    let chunk = vec![b' '; 64 * 1024];
    let backend = dying::serve(move |_req, mut conn| {
        let chunk = chunk.clone();
        async move {
            conn.raw(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n",
            )
            .await;
            conn.chunk(br#"{"jsonrpc":"2.0","id":1,"result":{"pad":""#).await;
            for _ in 0..48 {
                conn.chunk(&chunk).await;
            }
            conn.chunk(br#""}}"#).await;
            conn.end().await;
            None
        }
    })
    .await;
    let proxy = proxy_for(backend.addr, "").await;
    let resp = proxy
        .client(true)
        .post(proxy.url("/mcp"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .json(&call(json!(1)))
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status(), 200);
    let body = tokio::time::timeout(PROMPTLY, resp.bytes())
        .await
        .expect("in time")
        .expect("whole body");
    let v: Value = serde_json::from_slice(&body).expect("the whole JSON answer");
    assert_eq!(v["id"], 1);
    assert_eq!(
        v["result"]["pad"].as_str().map(str::len),
        Some(48 * 64 * 1024)
    );
}
