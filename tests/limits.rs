//! Limits per caller over real TLS: rates per principal and per tool, requests in flight, open
//! streams, and rates shared by two instances through a real Redis, including what happens
//! while Redis is down.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::Response;
use support::idp::Idp;
use support::raw::{self, BoxBody, RawBackend};
use support::redis::Redis;
use support::{TestProxy, start_proxy_with};

/// A JSON backend that counts the POSTs it answered, and keeps GET streams open.
struct Counting {
    backend: RawBackend,
    calls: Arc<AtomicUsize>,
}

async fn counting_backend() -> Counting {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let backend = raw::serve(move |req: http::Request<hyper::body::Incoming>| {
        let seen = seen.clone();
        async move {
            if req.method() == http::Method::GET {
                return raw::sse(open_stream());
            }
            use http_body_util::BodyExt;
            let body = req.into_body().collect().await.expect("body").to_bytes();
            let msg: serde_json::Value = serde_json::from_slice(&body).expect("json");
            seen.fetch_add(1, Ordering::SeqCst);
            json(format!(
                r#"{{"jsonrpc":"2.0","id":{},"result":{{}}}}"#,
                msg["id"]
            ))
        }
    })
    .await;
    Counting { backend, calls }
}

/// An event stream that sends one comment and then nothing until the client leaves.
fn open_stream() -> BoxBody {
    use http_body_util::BodyExt;
    let (tx, rx) =
        tokio::sync::mpsc::channel::<Result<hyper::body::Frame<bytes::Bytes>, std::io::Error>>(1);
    tokio::spawn(async move {
        let _ = tx
            .send(Ok(hyper::body::Frame::data(bytes::Bytes::from_static(
                b": open\n\n",
            ))))
            .await;
        tx.closed().await;
    });
    http_body_util::StreamBody::new(tokio_stream_from(rx)).boxed_unsync()
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

fn json(body: String) -> Response<BoxBody> {
    Response::builder()
        .header("content-type", "application/json")
        .body(raw::full(body))
        .expect("response")
}

fn call(id: u64, tool: &str) -> String {
    serde_json::json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":tool,"arguments":{}}})
        .to_string()
}

/// A proxy with one token route to `backend`; `extra` is appended (limits tables).
async fn proxy_with(backend: &RawBackend, idp: &Idp, top: &str, route_extra: &str) -> TestProxy {
    let pki = support::Pki::new();
    let issuer = idp.issuer_toml(pki.dir.path());
    start_proxy_with(
        pki,
        &format!(
            "{top}\n{issuer}{}[routes.auth]\nrequire = \"token\"\n{route_extra}\n",
            support::route("/mcp", &format!("http://{}/mcp", backend.addr))
        ),
    )
    .await
}

async fn post(proxy: &TestProxy, token: &str, body: String) -> reqwest::Response {
    proxy
        .client(false)
        .post(proxy.url("/mcp"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body)
        .send()
        .await
        .expect("request sent")
}

/// Asserts a limit refusal: 429, `Retry-After`, a JSON-RPC error answering `id`.
async fn assert_limited(
    r: reqwest::Response,
    id: impl Into<serde_json::Value>,
    limit: &str,
) -> serde_json::Value {
    let id = id.into();
    assert_eq!(r.status(), 429, "expected a limit refusal");
    let retry: u64 = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in whole seconds");
    assert!(retry >= 1, "Retry-After {retry}");
    let body: serde_json::Value = r.json().await.expect("JSON-RPC error body");
    assert_eq!(body["id"], id, "{body}");
    assert_eq!(body["error"]["code"], -32029, "{body}");
    assert_eq!(body["error"]["data"]["limit"], limit, "{body}");
    assert_eq!(body["error"]["data"]["retryAfterSeconds"], retry, "{body}");
    body
}

#[tokio::test]
async fn one_principal_past_its_rate_gets_429_while_another_is_served() {
    let b = counting_backend().await;
    let idp = Idp::new();
    let audit_dir = tempfile::tempdir().expect("tempdir");
    let audit_file = audit_dir.path().join("audit.jsonl");
    let proxy = proxy_with(
        &b.backend,
        &idp,
        &format!(
            "[audit]\nfile = \"{}\"\nfsync = \"never\"",
            audit_file.display()
        ),
        "[routes.limits]\nrequests_per_second = 0.2\nburst = 3\n",
    )
    .await;
    let alice = idp.token("/mcp", serde_json::json!({"sub": "alice"}));
    let bob = idp.token("/mcp", serde_json::json!({"sub": "bob"}));
    let mut served = 0;
    for id in 1..=10 {
        let r = post(&proxy, &alice, call(id, "echo")).await;
        if id <= 3 {
            assert_eq!(r.status(), 200, "call {id} is within alice's burst");
            served += 1;
            let _ = r.bytes().await;
        } else {
            assert_limited(r, id, "rate").await;
        }
    }
    for id in 1..=3 {
        let r = post(&proxy, &bob, call(id, "echo")).await;
        assert_eq!(r.status(), 200, "bob's call {id} is his own");
        served += 1;
        let _ = r.bytes().await;
    }
    assert_eq!(
        b.calls.load(Ordering::SeqCst),
        served,
        "refused calls never reach the backend"
    );
    proxy.stop().await;

    let text = std::fs::read_to_string(&audit_file).expect("audit log");
    let denied: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("audit line"))
        .filter(|l| l["decision"] == "deny")
        .collect();
    assert_eq!(denied.len(), 7, "every limited call is audited: {text}");
    for d in &denied {
        assert_eq!(d["principal"], format!("{}#alice", support::idp::ISSUER));
        assert!(
            d["reason"]
                .as_str()
                .is_some_and(|r| r.contains("rate limit")),
            "{d}"
        );
    }
}

#[tokio::test]
async fn a_tool_rate_bites_on_the_tool_the_body_names() {
    let b = counting_backend().await;
    let idp = Idp::new();
    let proxy = proxy_with(
        &b.backend,
        &idp,
        "[limits.tools]\n\"search*\" = { requests_per_second = 0.1, burst = 2 }",
        "",
    )
    .await;
    let alice = idp.token("/mcp", serde_json::json!({"sub": "alice"}));
    for id in 1..=2 {
        let r = post(&proxy, &alice, call(id, "search_web")).await;
        assert_eq!(r.status(), 200);
        let _ = r.bytes().await;
    }
    // No `Mcp-Name` header: the limit reads the body.
    let body = assert_limited(
        post(&proxy, &alice, call(3, "search_docs")).await,
        3,
        "tool_rate",
    )
    .await;
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("search_docs")),
        "{body}"
    );
    // In a batch, the refusal answers the limited call.
    let batch = format!("[{},{}]", call(4, "echo"), call(5, "search_web"));
    assert_limited(post(&proxy, &alice, batch).await, 5, "tool_rate").await;
    for id in 6..=9 {
        let r = post(&proxy, &alice, call(id, "echo")).await;
        assert_eq!(r.status(), 200, "other tools are not limited");
        let _ = r.bytes().await;
    }
    assert_eq!(b.calls.load(Ordering::SeqCst), 6);
    proxy.stop().await;
}

#[tokio::test]
async fn the_open_stream_cap_bites_and_frees_when_a_stream_ends() {
    let b = counting_backend().await;
    let idp = Idp::new();
    let proxy = proxy_with(
        &b.backend,
        &idp,
        "",
        "[routes.limits]\nmax_open_streams = 2\n",
    )
    .await;
    let alice = idp.token("/mcp", serde_json::json!({"sub": "alice"}));
    let open = || async {
        proxy
            .client(true)
            .get(proxy.url("/mcp"))
            .bearer_auth(&alice)
            .header("accept", "text/event-stream")
            .send()
            .await
            .expect("GET sent")
    };
    let first = open().await;
    let second = open().await;
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    assert_limited(open().await, serde_json::Value::Null, "streams").await;
    // POSTs are not streams: they go on.
    let r = post(&proxy, &alice, call(1, "echo")).await;
    assert_eq!(r.status(), 200);
    let _ = r.bytes().await;
    drop(first);
    let mut reopened = None;
    for _ in 0..100 {
        let r = open().await;
        if r.status() == 200 {
            reopened = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reopened.is_some(), "a closed stream gives its slot back");
    drop((second, reopened));
    proxy.stop().await;
}

#[tokio::test]
async fn requests_in_flight_are_capped_per_caller() {
    let release = Arc::new(tokio::sync::Notify::new());
    let arrived = Arc::new(tokio::sync::Notify::new());
    let (gate, arrival) = (release.clone(), arrived.clone());
    let backend = raw::serve(move |req: http::Request<hyper::body::Incoming>| {
        let (gate, arrival) = (gate.clone(), arrival.clone());
        async move {
            use http_body_util::BodyExt;
            let body = req.into_body().collect().await.expect("body").to_bytes();
            let msg: serde_json::Value = serde_json::from_slice(&body).expect("json");
            if msg["params"]["name"] == "slow" {
                arrival.notify_one();
                gate.notified().await;
            }
            json(format!(
                r#"{{"jsonrpc":"2.0","id":{},"result":{{}}}}"#,
                msg["id"]
            ))
        }
    })
    .await;
    let idp = Idp::new();
    let proxy = proxy_with(&backend, &idp, "[limits]\nmax_concurrent_requests = 1", "").await;
    let alice = idp.token("/mcp", serde_json::json!({"sub": "alice"}));
    let bob = idp.token("/mcp", serde_json::json!({"sub": "bob"}));
    let slow = {
        let client = proxy.client(false);
        let url = proxy.url("/mcp");
        let alice = alice.clone();
        tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(alice)
                .header("content-type", "application/json")
                .header("accept", "application/json, text/event-stream")
                .body(call(1, "slow"))
                .send()
                .await
                .expect("slow call")
                .status()
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    if slow.is_finished() {
        eprintln!("slow: {:?}", slow.await);
        panic!();
    }
    // Until the slow call is in flight, a second one may still get in: wait for the refusal.
    let mut refused = None;
    for _ in 0..100 {
        let r = post(&proxy, &alice, call(2, "echo")).await;
        if r.status() == 429 {
            refused = Some(r);
            break;
        }
        let _ = r.bytes().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_limited(
        refused.expect("a second call in flight is refused"),
        2,
        "concurrency",
    )
    .await;
    let r = post(&proxy, &bob, call(3, "echo")).await;
    assert_eq!(r.status(), 200, "bob has his own slot");
    let _ = r.bytes().await;
    release.notify_one();
    assert_eq!(slow.await.expect("task"), 200);
    let r = post(&proxy, &alice, call(4, "echo")).await;
    assert_eq!(r.status(), 200, "the slot came back");
    proxy.stop().await;
}

/// `[limits]` with a Redis store on `redis`, and an admin listener on `admin`.
fn redis_limits(redis: &Redis, on_failure: &str, admin: u16) -> String {
    format!(
        "[admin]\nbind = \"127.0.0.1:{admin}\"\n[limits]\nstore = \"redis\"\nredis_url = \"{}\"\nredis_timeout = \"50ms\"\nredis_probe_interval = \"100ms\"\nredis_key_prefix = \"t:\"\non_store_failure = \"{on_failure}\"\n",
        redis.url()
    )
}

async fn readyz(admin: u16) -> (u16, String) {
    let r = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{admin}/readyz"))
        .send()
        .await
        .expect("admin answers");
    (r.status().as_u16(), r.text().await.expect("text"))
}

#[tokio::test]
async fn two_instances_share_one_limit_through_redis() {
    let redis = Redis::start().await;
    let b = counting_backend().await;
    let idp = Idp::new();
    let limits = "[routes.limits]\nrequests_per_second = 0.1\nburst = 4\n";
    let one = proxy_with(
        &b.backend,
        &idp,
        &redis_limits(&redis, "local", support::process::free_port()),
        limits,
    )
    .await;
    let two = proxy_with(
        &b.backend,
        &idp,
        &redis_limits(&redis, "local", support::process::free_port()),
        limits,
    )
    .await;
    let alice = idp.token("/mcp", serde_json::json!({"sub": "alice"}));
    let mut statuses = Vec::new();
    for id in 1..=8 {
        let proxy = if id % 2 == 0 { &two } else { &one };
        let r = post(proxy, &alice, call(id, "echo")).await;
        statuses.push(r.status().as_u16());
        let _ = r.bytes().await;
    }
    assert_eq!(
        statuses,
        [200, 200, 200, 200, 429, 429, 429, 429],
        "one bucket of 4 across both instances"
    );
    assert_eq!(b.calls.load(Ordering::SeqCst), 4);
    assert_eq!(
        redis.keys("t:").await,
        1,
        "one key per caller and bucket, hashed"
    );
    one.stop().await;
    two.stop().await;
}

#[tokio::test]
async fn redis_down_falls_back_to_local_limits_and_returns() {
    let mut redis = Redis::start().await;
    let b = counting_backend().await;
    let idp = Idp::new();
    let admin = support::process::free_port();
    let proxy = proxy_with(
        &b.backend,
        &idp,
        &redis_limits(&redis, "local", admin),
        "[routes.limits]\nrequests_per_second = 0.01\nburst = 2\n",
    )
    .await;
    let alice = idp.token("/mcp", serde_json::json!({"sub": "alice"}));
    let status = |id| {
        let (proxy, alice) = (&proxy, &alice);
        async move {
            let r = post(proxy, alice, call(id, "echo")).await;
            let s = r.status().as_u16();
            let _ = r.bytes().await;
            s
        }
    };
    assert_eq!(status(1).await, 200, "counted in Redis");
    assert!(readyz(admin).await.1.contains("limits store=redis up"));

    redis.kill();
    // The local buckets are fresh: two more calls, then the local limit bites. None fails
    // because the store is gone.
    assert_eq!(
        status(2).await,
        200,
        "store failure answered by the fallback"
    );
    assert_eq!(status(3).await, 200);
    assert_eq!(
        status(4).await,
        429,
        "the local limit holds while Redis is down"
    );
    let (code, text) = readyz(admin).await;
    assert_eq!(code, 200, "a local fallback is still ready");
    assert!(text.contains("down (fallback local)"), "{text}");
    let m = metrics(admin).await;
    assert!(
        m.contains("mcp_edge_limit_store_up{on_failure=\"local\"} 0\n"),
        "{m}"
    );
    assert!(
        m.contains("mcp_edge_limit_rejections_total{route=\"/mcp\",kind=\"rate_limited\"} 1\n"),
        "{m}"
    );
    assert!(
        m.lines()
            .any(|l| l.starts_with("mcp_edge_limit_store_fallbacks_total ")
                && l != "mcp_edge_limit_store_fallbacks_total 0"),
        "{m}"
    );

    redis.restart().await;
    let mut back = false;
    for _ in 0..100 {
        if readyz(admin).await.1.contains("store=redis up") {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(back, "the probe brings the store back");
    // The restarted Redis is empty while the local bucket is spent: a 200 proves Redis counts.
    assert_eq!(status(5).await, 200, "limits are counted in Redis again");
    assert_eq!(status(6).await, 200);
    assert_eq!(status(7).await, 429);
    let m = metrics(admin).await;
    assert!(
        m.contains("mcp_edge_limit_store_up{on_failure=\"local\"} 1\n"),
        "{m}"
    );
    assert!(
        m.contains("mcp_edge_limit_store_transitions_total 2\n"),
        "down and up again: {m}"
    );
    proxy.stop().await;
}

/// `/metrics` in the classic text format.
async fn metrics(admin: u16) -> String {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("http://127.0.0.1:{admin}/metrics"))
        .send()
        .await
        .expect("admin answers")
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn redis_down_with_closed_limits_refuses_with_503_and_open_lets_through() {
    let mut redis = Redis::start().await;
    let b = counting_backend().await;
    let idp = Idp::new();
    let limits = "[routes.limits]\nrequests_per_second = 0.01\nburst = 1\n";
    let closed_admin = support::process::free_port();
    let closed = proxy_with(
        &b.backend,
        &idp,
        &redis_limits(&redis, "closed", closed_admin),
        limits,
    )
    .await;
    let open = proxy_with(
        &b.backend,
        &idp,
        &redis_limits(&redis, "open", support::process::free_port()),
        limits,
    )
    .await;
    let alice = idp.token("/mcp", serde_json::json!({"sub": "alice"}));
    redis.kill();

    // The first check finds the store gone; it and every later one are refused.
    for id in 1..=3 {
        let r = post(&closed, &alice, call(id, "echo")).await;
        assert_eq!(r.status(), 503, "closed: refused while the store is down");
        assert!(r.headers().contains_key("retry-after"));
        let body: serde_json::Value = r.json().await.expect("JSON-RPC error");
        assert_eq!(body["id"], id);
        assert_eq!(body["error"]["data"]["limit"], "store_unavailable");
    }
    let (code, text) = readyz(closed_admin).await;
    assert_eq!(code, 503, "{text}");
    for id in 1..=5 {
        let r = post(&open, &alice, call(id, "echo")).await;
        assert_eq!(r.status(), 200, "open: not limited while the store is down");
        let _ = r.bytes().await;
    }
    assert_eq!(b.calls.load(Ordering::SeqCst), 5);
    closed.stop().await;
    open.stop().await;
}

#[tokio::test]
async fn anonymous_callers_are_limited_by_address() {
    let b = counting_backend().await;
    let proxy = support::start_proxy(&format!(
        "[limits]\nrequests_per_second = 0.1\nburst = 2\n{}",
        support::route("/mcp", &format!("http://{}/mcp", b.backend.addr))
    ))
    .await;
    let c = proxy.client(false);
    let mut statuses = Vec::new();
    for id in 1..=3 {
        let r = c
            .post(proxy.url("/mcp"))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(call(id, "echo"))
            .send()
            .await
            .expect("sent");
        statuses.push(r.status().as_u16());
        let _ = r.bytes().await;
    }
    assert_eq!(statuses, [200, 200, 429]);
    proxy.stop().await;
}
