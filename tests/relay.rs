//! The relay's behaviour at its edges, over real TLS sockets: headers, errors the proxy makes
//! itself, SSE streaming without buffering, heartbeats, idle limits, upstream failure and
//! client disconnect.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::Response;
use support::raw;
use support::{route, start_proxy};
use tokio::sync::{mpsc, oneshot};

/// Bound for things that should happen "promptly": generous, so a loaded CI box never flakes;
/// the behaviour under test fails by never happening, not by being slow.
const PROMPTLY: Duration = Duration::from_secs(10);

/// Next non-empty chunk; `None` at a clean end of stream. HTTP/2 ends a body with an empty
/// DATA frame carrying END_STREAM, which clients see as an empty chunk: skip it.
async fn next_chunk(resp: &mut reqwest::Response) -> Option<Bytes> {
    loop {
        let chunk = tokio::time::timeout(PROMPTLY, resp.chunk())
            .await
            .expect("chunk within bound")
            .expect("stream not broken");
        match chunk {
            Some(c) if c.is_empty() => continue,
            other => return other,
        }
    }
}

/// Senders that feed the bodies of a scripted SSE backend's responses, one per request.
type StreamFeeds = mpsc::UnboundedReceiver<mpsc::Sender<Result<Bytes, std::io::Error>>>;

/// A backend answering every request with an SSE stream whose bytes the test sends itself:
/// each request hands the test the sender for its body.
async fn scripted_sse_backend() -> (raw::RawBackend, StreamFeeds) {
    let (streams_tx, streams) = mpsc::unbounded_channel();
    let backend = raw::serve(move |_req| {
        let streams_tx = streams_tx.clone();
        async move {
            let (tx, body) = raw::channel_body();
            let _ = streams_tx.send(tx);
            raw::sse(body)
        }
    })
    .await;
    (backend, streams)
}

#[tokio::test]
async fn request_and_response_headers_are_rewritten() {
    let backend = raw::serve(|req: http::Request<hyper::body::Incoming>| async move {
        let mut seen = serde_json::Map::new();
        for (k, v) in req.headers() {
            seen.insert(k.as_str().to_owned(), v.to_str().unwrap_or("?").into());
        }
        seen.insert("uri".into(), req.uri().to_string().into());
        Response::builder()
            .header("content-type", "application/json")
            .header("connection", "x-internal")
            .header("x-internal", "secret")
            .header("mcp-session-id", "backend-session-1")
            .body(raw::full(serde_json::Value::Object(seen).to_string()))
            .unwrap()
    })
    .await;
    let upstream = format!("http://{}/internal/mcp", backend.addr);
    let proxy = start_proxy(&route("/mcp", &upstream)).await;

    for h1 in [true, false] {
        let resp = proxy
            .client(h1)
            .post(format!("{}?trace=1", proxy.url("/mcp")))
            .header("x-forwarded-for", "6.6.6.6")
            .header("forwarded", "for=6.6.6.6")
            .header("x-request-id", "req-42")
            .header(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", "tools/call")
            .header("mcp-name", "add")
            .header("mcp-param-region", "eu")
            .header("last-event-id", "ev-7")
            .header("accept", "application/json, text/event-stream")
            .header("accept-encoding", "gzip")
            .body(
                r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add","arguments":{}}}"#,
            )
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(
            resp.version(),
            if h1 {
                http::Version::HTTP_11
            } else {
                http::Version::HTTP_2
            }
        );
        assert_eq!(resp.headers()["x-request-id"], "req-42");
        assert!(
            resp.headers().get("x-internal").is_none(),
            "Connection-listed header leaked"
        );
        let sid = resp.headers()["mcp-session-id"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            !sid.contains("backend-session-1") && sid.len() > 60,
            "the backend's session id is sealed: {sid}"
        );

        let seen: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(
            seen["host"],
            backend.addr.to_string(),
            "Host rewritten to upstream"
        );
        assert_eq!(seen["uri"], "/internal/mcp?trace=1");
        assert_eq!(seen["x-forwarded-for"], "127.0.0.1", "client XFF replaced");
        assert_eq!(seen["x-forwarded-proto"], "https");
        assert_eq!(
            seen["x-forwarded-host"],
            format!("localhost:{}", proxy.addr.port())
        );
        assert!(seen.get("forwarded").is_none());
        assert_eq!(seen["x-request-id"], "req-42");
        assert_eq!(
            seen["traceparent"],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        for (k, v) in [
            ("mcp-protocol-version", "2026-07-28"),
            ("mcp-method", "tools/call"),
            ("mcp-name", "add"),
            ("mcp-param-region", "eu"),
            ("last-event-id", "ev-7"),
            ("accept", "application/json, text/event-stream"),
        ] {
            assert_eq!(seen[k], v, "{k} must pass through");
        }
        assert!(seen.get("accept-encoding").is_none());
    }
}

#[tokio::test]
async fn generated_request_id_when_absent_and_session_id_untagged_back() {
    let backend = raw::serve(|req: http::Request<hyper::body::Incoming>| async move {
        let sid = req
            .headers()
            .get("mcp-session-id")
            .map(|v| v.to_str().unwrap().to_owned());
        let rid = req.headers()["x-request-id"].to_str().unwrap().to_owned();
        Response::builder()
            .header("mcp-session-id", "s-1")
            .body(raw::full(format!("{}|{rid}", sid.unwrap_or_default())))
            .unwrap()
    })
    .await;
    let proxy = start_proxy(&route("/mcp", &format!("http://{}/mcp", backend.addr))).await;
    let client = proxy.client(false);
    let first = client
        .post(proxy.url("/mcp"))
        .body(support::PING)
        .send()
        .await
        .unwrap();
    let rid = first.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(rid.len(), 32);
    let sid = first.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(first.text().await.unwrap(), format!("|{rid}"));

    let second = client
        .post(proxy.url("/mcp"))
        .header("mcp-session-id", &sid)
        .body(support::PING)
        .send()
        .await
        .unwrap();
    let body = second.text().await.unwrap();
    assert!(
        body.starts_with("s-1|"),
        "backend must see its own session id, got {body}"
    );
}

async fn assert_json_rpc_error(resp: reqwest::Response, status: u16) -> serde_json::Value {
    assert_eq!(resp.status(), status);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["jsonrpc"], "2.0");
    assert!(body.get("id").is_none(), "proxy errors carry no id: {body}");
    assert!(body["error"]["code"].is_i64());
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty())
    );
    body
}

#[tokio::test]
async fn backend_down_is_502_json() {
    let dead = raw::dead_address().await;
    let proxy = start_proxy(&route("/mcp", &format!("http://{dead}/mcp"))).await;
    let resp = proxy
        .client(false)
        .post(proxy.url("/mcp"))
        .body(support::PING)
        .send()
        .await
        .unwrap();
    let body = assert_json_rpc_error(resp, 502).await;
    assert!(
        !body.to_string().contains(&dead.to_string()),
        "backend address leaked: {body}"
    );
}

#[tokio::test]
async fn backend_that_never_answers_is_504_json() {
    let hole = raw::black_hole().await;
    let proxy = start_proxy(&format!(
        "[upstream]\nresponse_header_timeout = \"300ms\"\n{}",
        route("/mcp", &format!("http://{}/mcp", hole.addr))
    ))
    .await;
    let resp = proxy
        .client(true)
        .post(proxy.url("/mcp"))
        .body(support::PING)
        .send()
        .await
        .unwrap();
    assert_json_rpc_error(resp, 504).await;
}

#[tokio::test]
async fn unknown_path_method_session_and_oversized_body_are_refused() {
    let (backend, mut hits) = support::recording::ok().await;
    let proxy = start_proxy(&format!(
        "[http]\nmax_request_body_bytes = 1024\n{}",
        route("/mcp", &format!("http://{}/mcp", backend.addr))
    ))
    .await;
    let c = proxy.client(false);

    assert_json_rpc_error(c.post(proxy.url("/other")).send().await.unwrap(), 404).await;
    assert_json_rpc_error(c.post(proxy.url("/mcp/")).send().await.unwrap(), 404).await;
    let resp = c.put(proxy.url("/mcp")).send().await.unwrap();
    assert_eq!(resp.headers()["allow"], "GET, POST, DELETE");
    assert_json_rpc_error(resp, 405).await;
    let resp = c
        .post(proxy.url("/mcp"))
        .header("mcp-session-id", "not-a-tagged-id")
        .send()
        .await
        .unwrap();
    assert_json_rpc_error(resp, 404).await;
    let resp = c
        .post(proxy.url("/mcp"))
        .header("mcp-session-id", "00000000.forged")
        .send()
        .await
        .unwrap();
    assert_json_rpc_error(resp, 404).await;
    let resp = c
        .post(proxy.url("/mcp"))
        .body(vec![b'x'; 2048])
        .send()
        .await
        .unwrap();
    assert_json_rpc_error(resp, 413).await;

    assert!(
        hits.try_recv().is_err(),
        "no refused request may reach the backend"
    );
    // And a normal request does.
    let resp = c
        .post(proxy.url("/mcp"))
        .body(support::PING)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(hits.try_recv().is_ok());
}

#[tokio::test]
async fn sse_events_are_relayed_one_by_one_without_buffering() {
    // The backend sends event N+1 only after the test confirms the client received event N:
    // if the proxy buffered anything, the test would wait forever (and fail at PROMPTLY).
    let (backend, mut streams) = scripted_sse_backend().await;
    let proxy = start_proxy(&route("/mcp", &format!("http://{}/mcp", backend.addr))).await;

    for h1 in [true, false] {
        let mut resp = proxy
            .client(h1)
            .get(proxy.url("/mcp"))
            .header("accept", "text/event-stream")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.headers()["content-type"], "text/event-stream");
        assert_eq!(resp.headers()["x-accel-buffering"], "no");
        assert_eq!(resp.headers()["cache-control"], "no-cache");
        assert!(resp.headers().get("content-encoding").is_none());
        let tx = streams.recv().await.unwrap();
        for i in 0..5 {
            let event = format!("id: {i}\ndata: {{\"n\":{i}}}\n\n");
            tx.send(Ok(Bytes::from(event.clone()))).await.unwrap();
            let got = next_chunk(&mut resp).await.expect("event arrives");
            assert_eq!(got, event.as_bytes());
        }
        drop(tx);
        assert_eq!(
            next_chunk(&mut resp).await,
            None,
            "stream ends when upstream ends"
        );
    }
}

#[tokio::test]
async fn heartbeat_fills_silence_without_splitting_events_and_idle_limit_ends_stream() {
    let (backend, mut streams) = scripted_sse_backend().await;
    let proxy = start_proxy(&format!(
        "[sse]\nheartbeat_interval = \"100ms\"\nidle_timeout = \"1500ms\"\n{}",
        route("/mcp", &format!("http://{}/mcp", backend.addr))
    ))
    .await;
    let mut resp = proxy
        .client(false)
        .get(proxy.url("/mcp"))
        .send()
        .await
        .unwrap();
    let tx = streams.recv().await.unwrap();

    // Silence at an event boundary: a full comment event.
    assert_eq!(next_chunk(&mut resp).await.unwrap(), ": keep-alive\n\n");
    // Half a line, then silence: no heartbeat may be inserted mid-line.
    tx.send(Ok(Bytes::from_static(b"data: {\"half")))
        .await
        .unwrap();
    assert_eq!(next_chunk(&mut resp).await.unwrap(), "data: {\"half");
    tx.send(Ok(Bytes::from_static(b"\":1}\n"))).await.unwrap();
    assert_eq!(next_chunk(&mut resp).await.unwrap(), "\":1}\n");
    // Inside an event at a line boundary: a single comment line, which keeps the event intact.
    assert_eq!(next_chunk(&mut resp).await.unwrap(), ": keep-alive\n");
    tx.send(Ok(Bytes::from_static(b"\n"))).await.unwrap();
    assert_eq!(next_chunk(&mut resp).await.unwrap(), "\n");

    // Heartbeats alone do not keep an upstream-silent stream open past the idle limit.
    let mut beats = 0;
    while let Some(chunk) = next_chunk(&mut resp).await {
        assert_eq!(chunk, ": keep-alive\n\n");
        beats += 1;
    }
    assert!(
        beats >= 2,
        "expected several heartbeats before the idle limit, got {beats}"
    );
    drop(tx);
}

#[tokio::test]
async fn upstream_death_mid_stream_ends_the_client_stream_cleanly() {
    let (backend, mut streams) = scripted_sse_backend().await;
    let proxy = start_proxy(&route("/mcp", &format!("http://{}/mcp", backend.addr))).await;
    for h1 in [true, false] {
        let mut resp = proxy
            .client(h1)
            .get(proxy.url("/mcp"))
            .send()
            .await
            .unwrap();
        let tx = streams.recv().await.unwrap();
        tx.send(Ok(Bytes::from_static(b"data: 1\n\n")))
            .await
            .unwrap();
        assert_eq!(next_chunk(&mut resp).await.unwrap(), "data: 1\n\n");
        // The backend's body fails: hyper aborts the upstream connection mid-stream.
        tx.send(Err(std::io::Error::other("backend crashed")))
            .await
            .unwrap();
        // The client sees an orderly end of stream, not an error and not a hang.
        assert_eq!(next_chunk(&mut resp).await, None);
    }
}

#[tokio::test]
async fn upstream_death_mid_json_body_is_a_502_not_a_short_answer() {
    let backend = raw::serve(|_req| async move {
        let (tx, body) = raw::channel_body();
        tokio::spawn(async move {
            let _ = tx
                .send(Ok(Bytes::from_static(b"{\"jsonrpc\":\"2.0\",")))
                .await;
            let _ = tx.send(Err(std::io::Error::other("backend crashed"))).await;
        });
        Response::builder()
            .header("content-type", "application/json")
            .body(body)
            .unwrap()
    })
    .await;
    let proxy = start_proxy(&route("/mcp", &format!("http://{}/mcp", backend.addr))).await;
    for h1 in [true, false] {
        // JSON answers to POSTs are read whole before the head is sent, so the client gets
        // a 502 it can read, never a short body that looks complete.
        let resp = proxy
            .client(h1)
            .post(proxy.url("/mcp"))
            .body(support::PING)
            .send()
            .await
            .expect("answered");
        assert_json_rpc_error(resp, 502).await;
    }
}

#[tokio::test]
async fn stalled_json_body_is_a_504_at_the_idle_limit() {
    let backend = raw::serve(|_req| async move {
        let (tx, body) = raw::channel_body();
        tokio::spawn(async move {
            let _ = tx.send(Ok(Bytes::from_static(b"{\"jsonrpc\":"))).await;
            // Hold the body open without sending more.
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(tx);
        });
        Response::builder()
            .header("content-type", "application/json")
            .body(body)
            .unwrap()
    })
    .await;
    let proxy = start_proxy(&format!(
        "[upstream]\nbody_idle_timeout = \"300ms\"\n{}",
        route("/mcp", &format!("http://{}/mcp", backend.addr))
    ))
    .await;
    for h1 in [true, false] {
        let resp = tokio::time::timeout(
            PROMPTLY,
            proxy
                .client(h1)
                .post(proxy.url("/mcp"))
                .body(support::PING)
                .send(),
        )
        .await
        .expect("stalled body must not hang the client")
        .expect("answered");
        assert_json_rpc_error(resp, 504).await;
    }
}

#[tokio::test]
async fn client_disconnect_cancels_the_upstream_request() {
    let (closed_tx, mut closed) = mpsc::unbounded_channel::<()>();
    let (started_tx, mut started) = mpsc::unbounded_channel::<()>();
    let backend = raw::serve(move |_req| {
        let closed_tx = closed_tx.clone();
        let started_tx = started_tx.clone();
        async move {
            let (tx, body) = raw::channel_body();
            tokio::spawn(async move {
                let _ = started_tx.send(());
                // Emit until the proxy drops the upstream body: that is the cancellation.
                loop {
                    if tx
                        .send(Ok(Bytes::from_static(b"data: tick\n\n")))
                        .await
                        .is_err()
                    {
                        let _ = closed_tx.send(());
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            });
            raw::sse(body)
        }
    })
    .await;
    let proxy = start_proxy(&route("/mcp", &format!("http://{}/mcp", backend.addr))).await;
    for h1 in [true, false] {
        let client = proxy.client(h1);
        let mut resp = client
            .post(proxy.url("/mcp"))
            .body(support::PING)
            .send()
            .await
            .unwrap();
        started.recv().await.unwrap();
        assert_eq!(next_chunk(&mut resp).await.unwrap(), "data: tick\n\n");
        drop(resp);
        drop(client);
        tokio::time::timeout(PROMPTLY, closed.recv())
            .await
            .expect("backend saw the request cancelled")
            .unwrap();
    }
}

#[tokio::test]
async fn round_robin_spreads_new_sessions_and_affinity_keeps_them() {
    let make = |name: &'static str| {
        raw::serve(
            move |req: http::Request<hyper::body::Incoming>| async move {
                let sid = req.headers().get("mcp-session-id").cloned();
                let mut b = Response::builder();
                match sid {
                    None => b = b.header("mcp-session-id", format!("{name}-session")),
                    Some(s) => assert_eq!(s.to_str().unwrap(), format!("{name}-session")),
                }
                b.body(raw::full(name)).unwrap()
            },
        )
    };
    let (a, b) = (make("a").await, make("b").await);
    let proxy = start_proxy(&format!(
        "[[routes]]\npath = \"/mcp\"\nupstreams = [\"http://{}/mcp\", \"http://{}/mcp\"]\n",
        a.addr, b.addr
    ))
    .await;
    let c = proxy.client(false);
    let mut sessions = Vec::new();
    for _ in 0..4 {
        let r = c
            .post(proxy.url("/mcp"))
            .body(support::PING)
            .send()
            .await
            .unwrap();
        let sid = r.headers()["mcp-session-id"].to_str().unwrap().to_owned();
        sessions.push((sid, r.text().await.unwrap()));
    }
    let names: std::collections::BTreeSet<_> = sessions.iter().map(|(_, n)| n.clone()).collect();
    assert_eq!(names.len(), 2, "new sessions go to both upstreams");
    for (sid, owner) in &sessions {
        for _ in 0..3 {
            let r = c
                .post(proxy.url("/mcp"))
                .header("mcp-session-id", sid)
                .body(support::PING)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            assert_eq!(
                &r.text().await.unwrap(),
                owner,
                "session stays on its upstream"
            );
        }
    }
}

#[tokio::test]
async fn drain_ends_get_streams_at_once_and_post_streams_at_the_deadline() {
    let backend = raw::serve(|_req| async move {
        let (tx, body) = raw::channel_body();
        tokio::spawn(async move {
            while tx
                .send(Ok(Bytes::from_static(b"data: tick\n\n")))
                .await
                .is_ok()
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        raw::sse(body)
    })
    .await;
    let proxy = start_proxy(&format!(
        "[shutdown]\ndrain_timeout = \"1500ms\"\n{}",
        route("/mcp", &format!("http://{}/mcp", backend.addr))
    ))
    .await;
    let client = proxy.client(true);
    let mut get = client.get(proxy.url("/mcp")).send().await.unwrap();
    let mut post = client
        .post(proxy.url("/mcp"))
        .body(support::PING)
        .send()
        .await
        .unwrap();
    next_chunk(&mut get).await.unwrap();
    next_chunk(&mut post).await.unwrap();

    let (done_tx, done_rx) = oneshot::channel();
    let addr = proxy.addr;
    tokio::spawn(async move {
        proxy.stop().await;
        let _ = done_tx.send(());
    });
    // The GET stream ends promptly once draining starts ...
    let mut get_chunks_after = 0;
    while next_chunk(&mut get).await.is_some() {
        get_chunks_after += 1;
    }
    // ... while the POST answer keeps flowing until the deadline.
    let mut post_chunks_after = 0;
    while next_chunk(&mut post).await.is_some() {
        post_chunks_after += 1;
    }
    assert!(
        post_chunks_after > get_chunks_after + 3,
        "POST stream should outlive the GET stream: get={get_chunks_after} post={post_chunks_after}"
    );
    tokio::time::timeout(PROMPTLY, done_rx)
        .await
        .unwrap()
        .unwrap();
    // No new connections after shutdown.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
