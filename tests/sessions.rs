//! Sessions bound to principals: the client only ever sees a sealed session id; the same id
//! from another principal is answered exactly like an unknown session (404) and never reaches
//! the backend; instances sharing `[sessions] key_file` route each other's ids.

mod support;

use base64::Engine as _;
use support::idp::Idp;
use support::{TestProxy, raw, start_proxy_with};
use tokio::sync::mpsc;

/// What the backend saw: method, path and query, and the session id it was sent.
type Seen = (String, String, Option<String>);

struct Setup {
    proxies: Vec<TestProxy>,
    idp: Idp,
    _backend: raw::RawBackend,
    seen: mpsc::UnboundedReceiver<Seen>,
    /// Keeps the legacy stream's body open while the test runs.
    _streams: mpsc::Sender<Result<bytes::Bytes, std::io::Error>>,
}

/// A backend that mints `backend-sid-1` on `initialize`, serves a legacy SSE stream on
/// `GET /sse`, and records every request it gets.
async fn setup(keys: &[&[u8; 32]]) -> Setup {
    let (tx, seen) = mpsc::unbounded_channel();
    let (stream_tx, stream_body) = raw::channel_body();
    let stream_body = std::sync::Mutex::new(Some(stream_body));
    let stream_body = std::sync::Arc::new(stream_body);
    let backend = raw::serve(move |req: http::Request<hyper::body::Incoming>| {
        let tx = tx.clone();
        let stream_body = stream_body.clone();
        async move {
            let sid = req
                .headers()
                .get("mcp-session-id")
                .map(|v| v.to_str().unwrap().to_owned());
            let _ = tx.send((req.method().to_string(), req.uri().to_string(), sid.clone()));
            if req.method() == http::Method::GET && req.uri().path() == "/sse" {
                let body = stream_body.lock().unwrap().take().unwrap();
                return raw::sse(body);
            }
            if req.method() == http::Method::GET {
                return raw::sse(raw::full(
                    "id: 7\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\"}\n\n",
                ));
            }
            let mut resp = http::Response::builder().header("content-type", "application/json");
            if sid.is_none() {
                resp = resp.header("mcp-session-id", "backend-sid-1");
            }
            resp.body(raw::full(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#))
                .unwrap()
        }
    })
    .await;
    stream_tx
        .send(Ok(bytes::Bytes::from_static(
            b"event: endpoint\ndata: /message?sessionId=legacy-backend-42\n\n",
        )))
        .await
        .unwrap();
    let idp = Idp::new();
    let mut proxies = Vec::new();
    for key in keys {
        let pki = support::Pki::new();
        let issuer = idp.issuer_toml(pki.dir.path());
        std::fs::write(
            pki.dir.path().join("session.key"),
            base64::engine::general_purpose::STANDARD.encode(key),
        )
        .unwrap();
        let rest = format!(
            r#"[sessions]
key_file = "session.key"
{issuer}
[[routes]]
path = "/mcp"
upstream = "http://{addr}/mcp"
[routes.auth]
require = "token"
[[routes]]
path = "/sse"
upstream = "http://{addr}/sse"
transport = "sse"
[routes.auth]
require = "token"
"#,
            addr = backend.addr
        );
        proxies.push(start_proxy_with(pki, &rest).await);
    }
    Setup {
        proxies,
        idp,
        _backend: backend,
        seen,
        _streams: stream_tx,
    }
}

async fn send(
    proxy: &TestProxy,
    method: http::Method,
    path: &str,
    token: &str,
    sid: Option<&str>,
) -> reqwest::Response {
    let mut req = proxy
        .client(false)
        .request(method.clone(), proxy.url(path))
        .bearer_auth(token)
        .header("accept", "application/json, text/event-stream");
    if let Some(sid) = sid {
        req = req
            .header("mcp-session-id", sid)
            .header("last-event-id", "7");
    }
    if method == http::Method::POST {
        req = req.body(support::PING);
    }
    req.send().await.unwrap()
}

async fn assert_unknown_session(resp: reqwest::Response) {
    assert_eq!(resp.status(), 404);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["jsonrpc"], "2.0", "{body}");
    assert!(body["error"]["code"].is_i64(), "{body}");
}

#[tokio::test]
async fn a_session_id_replayed_by_another_principal_is_unknown() {
    let key = [7u8; 32];
    let mut s = setup(&[&key]).await;
    let p = &s.proxies[0];
    let alice = s.idp.token("/mcp", serde_json::json!({"sub": "alice"}));
    let mallory = s.idp.token("/mcp", serde_json::json!({"sub": "mallory"}));

    let init = send(p, http::Method::POST, "/mcp", &alice, None).await;
    assert_eq!(init.status(), 200);
    let sealed = init.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(!sealed.contains("backend-sid-1"), "{sealed}");
    assert_eq!(s.seen.recv().await.unwrap().2, None);

    // The owner's requests reach the backend with the backend's own id.
    for m in [http::Method::POST, http::Method::GET, http::Method::DELETE] {
        let r = send(p, m.clone(), "/mcp", &alice, Some(&sealed)).await;
        assert!(r.status().is_success(), "{m}: {}", r.status());
        let _ = r.bytes().await;
        let (method, _, sid) = s.seen.recv().await.unwrap();
        assert_eq!(
            (method.as_str(), sid.as_deref()),
            (m.as_str(), Some("backend-sid-1"))
        );
    }

    // Another principal, on every method (GET with Last-Event-ID included): 404.
    for m in [http::Method::POST, http::Method::GET, http::Method::DELETE] {
        assert_unknown_session(send(p, m, "/mcp", &mallory, Some(&sealed)).await).await;
    }
    // A forged or edited id, or the backend's raw id, is just as unknown.
    let mut edited = sealed.clone().into_bytes();
    let last = edited.len() - 5;
    edited[last] = if edited[last] == b'A' { b'B' } else { b'A' };
    for forged in [
        String::from_utf8(edited).unwrap(),
        "backend-sid-1".to_owned(),
        format!("{sealed}x"),
    ] {
        assert_unknown_session(send(p, http::Method::POST, "/mcp", &alice, Some(&forged)).await)
            .await;
    }
    assert!(
        s.seen.try_recv().is_err(),
        "a refused session reached the backend"
    );
}

#[tokio::test]
async fn instances_sharing_the_key_route_each_others_sessions() {
    let shared = [1u8; 32];
    let other = [2u8; 32];
    let mut s = setup(&[&shared, &shared, &other]).await;
    let alice = s.idp.token("/mcp", serde_json::json!({"sub": "alice"}));
    let init = send(&s.proxies[0], http::Method::POST, "/mcp", &alice, None).await;
    let sealed = init.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let _ = s.seen.recv().await;
    let r = send(
        &s.proxies[1],
        http::Method::POST,
        "/mcp",
        &alice,
        Some(&sealed),
    )
    .await;
    assert_eq!(
        r.status(),
        200,
        "a second instance with the same key opens the id"
    );
    assert_eq!(
        s.seen.recv().await.unwrap().2.as_deref(),
        Some("backend-sid-1")
    );
    assert_unknown_session(
        send(
            &s.proxies[2],
            http::Method::POST,
            "/mcp",
            &alice,
            Some(&sealed),
        )
        .await,
    )
    .await;
    assert!(s.seen.try_recv().is_err());
}

#[tokio::test]
async fn legacy_session_ids_are_bound_too() {
    let key = [9u8; 32];
    let mut s = setup(&[&key]).await;
    let p = &s.proxies[0];
    let alice = s.idp.token("/sse", serde_json::json!({"sub": "alice"}));
    let mallory = s.idp.token("/sse", serde_json::json!({"sub": "mallory"}));
    let mut stream = p
        .client(true)
        .get(p.url("/sse"))
        .bearer_auth(&alice)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let _ = s.seen.recv().await;
    let mut text = String::new();
    while !text.contains("\n\n") {
        let chunk = stream.chunk().await.unwrap().expect("endpoint event");
        text.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    let endpoint = text
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap()
        .to_owned();
    assert!(endpoint.starts_with("/sse?sessionId="), "{endpoint}");
    assert!(!endpoint.contains("legacy-backend-42"), "{endpoint}");

    let post = |token: String, path: String| {
        let c = p.client(true);
        let url = p.url(&path);
        async move {
            c.post(url)
                .bearer_auth(token)
                .body(support::PING)
                .send()
                .await
                .unwrap()
        }
    };
    assert_unknown_session(post(mallory, endpoint.clone()).await).await;
    assert!(
        s.seen.try_recv().is_err(),
        "mallory's POST reached the backend"
    );
    let ok = post(alice, endpoint).await;
    assert_eq!(ok.status(), 200);
    let (method, uri, _) = s.seen.recv().await.unwrap();
    assert_eq!(
        (method.as_str(), uri.as_str()),
        ("POST", "/message?sessionId=legacy-backend-42")
    );
}
