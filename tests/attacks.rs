//! Attacks found by a black-box run against the proxy (issue 8), each replayed over real TLS
//! against a backend that records exactly what it received and behaves like the SDK backends
//! the attacks were first seen with: it decodes declared charsets (as the TypeScript SDK's
//! legacy transport does), rewrites request ids to their canonical form (as the Python and
//! TypeScript SDKs do), refuses any `Origin` (as the Python SDK bound to loopback does) and
//! repeats its session id on every answer.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use support::idp::Idp;
use support::{Pki, TestProxy, raw, start_proxy_with};
use tokio::sync::mpsc;

/// One request as the backend received it.
#[derive(Debug)]
struct Seen {
    method: Method,
    headers: HeaderMap,
    /// The body as the backend decoded it (declared charset honoured).
    text: String,
}

const TOOLS: &str = r#"[{"name":"echo","inputSchema":{"type":"object"}},{"name":"get-env","inputSchema":{"type":"object"}}]"#;
const RESOURCES: &str = r#"[{"uri":"memory://partner-a/notes","name":"notes"},{"uri":"memory://partner-b/merger-plans","name":"merger plans"}]"#;
const TEMPLATES: &str = r#"[{"uriTemplate":"memory://partner-a/{id}","name":"a"},{"uriTemplate":"memory://partner-b/{id}","name":"b"}]"#;
const UPDATE_A: &str = r#"{"jsonrpc":"2.0","method":"notifications/resources/updated","params":{"uri":"memory://partner-a/notes"}}"#;
const UPDATE_B: &str = r#"{"jsonrpc":"2.0","method":"notifications/resources/updated","params":{"uri":"memory://partner-b/merger-plans"}}"#;
const BACKEND_SESSION: &str = "backend-session-1";

/// Decodes UTF-7 (RFC 2152) the way a charset-honouring backend would: `+…-` runs are
/// modified base64 of UTF-16BE.
fn utf7_decode(s: &str) -> String {
    use base64::Engine as _;
    let mut out = String::new();
    let mut rest = s;
    while let Some(at) = rest.find('+') {
        out.push_str(&rest[..at]);
        let run = &rest[at + 1..];
        let end = run.find(|c: char| !(c.is_ascii_alphanumeric() || c == '+' || c == '/'));
        let (b64, tail) = run.split_at(end.unwrap_or(run.len()));
        if b64.is_empty() {
            out.push('+');
        } else if let Ok(bytes) = base64::engine::general_purpose::STANDARD_NO_PAD.decode(b64) {
            let units: Vec<u16> = bytes
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            out.push_str(&String::from_utf16_lossy(&units));
        }
        rest = tail.strip_prefix('-').unwrap_or(tail);
    }
    out.push_str(rest);
    out
}

/// The body text as a backend honouring the declared charset reads it.
fn decode_declared(headers: &HeaderMap, body: &[u8]) -> String {
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let text = String::from_utf8_lossy(body).into_owned();
    if ct.contains("utf-7") {
        utf7_decode(&text)
    } else {
        text
    }
}

/// The id as an SDK backend writes it back: numbers through a float, as JavaScript does.
fn canonical_id(id: &Value) -> Value {
    match id.as_f64() {
        Some(f) if id.is_number() => json!(f as i64),
        _ => id.clone(),
    }
}

fn json_answer(id: &Value, result: &str) -> http::Response<raw::BoxBody> {
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":{},"result":{result}}}"#,
        canonical_id(id)
    );
    http::Response::builder()
        .header("content-type", "application/json")
        .header("mcp-session-id", BACKEND_SESSION)
        .body(raw::full(body))
        .unwrap()
}

async fn recording_backend() -> (raw::RawBackend, mpsc::UnboundedReceiver<Seen>) {
    let (tx, seen) = mpsc::unbounded_channel();
    let backend = raw::serve(move |req: http::Request<hyper::body::Incoming>| {
        let tx = tx.clone();
        async move {
            let (parts, body) = req.into_parts();
            let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let text = decode_declared(&parts.headers, &bytes);
            let _ = tx.send(Seen {
                method: parts.method.clone(),
                headers: parts.headers.clone(),
                text: text.clone(),
            });
            // Loopback-bound SDK servers refuse any Origin (DNS-rebinding protection).
            if parts.headers.contains_key("origin") {
                return http::Response::builder()
                    .status(403)
                    .body(raw::full("Invalid Origin header"))
                    .unwrap();
            }
            if parts.method == Method::GET {
                if parts.uri.path() == "/legacy" {
                    let (tx, body) = raw::channel_body();
                    tokio::spawn(async move {
                        let _ = tx
                            .send(Ok(Bytes::from_static(
                                b"event: endpoint\ndata: /legacy/messages?sessionId=s1\n\n",
                            )))
                            .await;
                        tokio::time::sleep(Duration::from_secs(30)).await;
                    });
                    return raw::sse(body);
                }
                return raw::sse(raw::full(format!(
                    "id: 1\ndata: {{\"jsonrpc\":\"2.0\",\"id\":41,\"result\":{{\"resources\":{RESOURCES}}}}}\n\n\
                     id: 2\ndata: {UPDATE_B}\n\nid: 3\ndata: {UPDATE_A}\n\n"
                )));
            }
            if parts.method == Method::DELETE {
                return http::Response::new(raw::full(""));
            }
            if parts.uri.path() == "/legacy/messages" {
                return http::Response::builder()
                    .status(202)
                    .body(raw::full("Accepted"))
                    .unwrap();
            }
            let Ok(msg) = serde_json::from_str::<Value>(&text) else {
                return http::Response::builder()
                    .status(400)
                    .body(raw::full("not JSON"))
                    .unwrap();
            };
            let id = &msg["id"];
            let sse = parts.headers.get("x-answer").is_some_and(|v| v == "sse");
            match msg["method"].as_str().unwrap_or_default() {
                "tools/list" if sse => raw::sse(raw::full(format!(
                    "data: {{\"jsonrpc\":\"2.0\",\"id\":{},\"result\":{{\"tools\":{TOOLS}}}}}\n\n",
                    canonical_id(id)
                ))),
                "tools/list" => json_answer(id, &format!(r#"{{"tools":{TOOLS}}}"#)),
                "resources/list" => json_answer(id, &format!(r#"{{"resources":{RESOURCES}}}"#)),
                "resources/templates/list" => {
                    json_answer(id, &format!(r#"{{"resourceTemplates":{TEMPLATES}}}"#))
                }
                "subscriptions/listen" => raw::sse(raw::full(format!(
                    "id: 1\ndata: {UPDATE_B}\n\nid: 2\ndata: {UPDATE_A}\n\n"
                ))),
                "tools/call" => json_answer(
                    id,
                    &json!({"content":[{"type":"text","text":format!("ran {}", msg["params"]["name"].as_str().unwrap_or("?"))}]}).to_string(),
                ),
                _ => json_answer(id, "{}"),
            }
        }
    })
    .await;
    (backend, seen)
}

struct Setup {
    proxy: TestProxy,
    idp: Idp,
    seen: mpsc::UnboundedReceiver<Seen>,
    _backend: raw::RawBackend,
}

/// A token route `/mcp` with a policy (everyone: every tool but `get-env`, resources under
/// `memory://{org}/`), an open route `/open`, a legacy route `/legacy` and an `urn:` route,
/// all in front of the recording backend; `extra` is appended to the config.
async fn setup(extra: &str) -> Setup {
    let (backend, seen) = recording_backend().await;
    let idp = Idp::new();
    let pki = Pki::new();
    let issuer = idp.issuer_toml(pki.dir.path());
    let up = format!("http://{}", backend.addr);
    let text = format!(
        r#"[auth]
organisation_claim = "org"
{issuer}
[[routes]]
path = "/mcp"
upstream = "{up}/mcp"
allowed_origins = ["https://app.example.com"]
[routes.auth]
require = "token"
[[routes.policy.rules]]
name = "everyone"
allow_tools = ["*"]
deny_tools = ["get-env"]
resource_prefixes = ["memory://{{org}}/"]

[[routes]]
path = "/open"
upstream = "{up}/mcp"

[[routes]]
path = "/legacy"
transport = "sse"
upstream = "{up}/legacy"

[[routes]]
path = "/urn"
upstream = "{up}/mcp"
[routes.auth]
require = "token"
[[routes.policy.rules]]
name = "urn-namespaces"
allow_tools = ["*"]
resource_prefixes = ["urn:x:{{org}}:"]
{extra}"#
    );
    let proxy = start_proxy_with(pki, &text).await;
    Setup {
        proxy,
        idp,
        seen,
        _backend: backend,
    }
}

impl Setup {
    fn token(&self, org: &str) -> String {
        self.idp.token("/mcp", json!({ "org": org }))
    }

    /// POSTs `body` to `path` as org `partner-a` with extra `headers`, over h1 or h2.
    async fn post(
        &self,
        h1: bool,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<reqwest::Body>,
    ) -> (u16, HeaderMap, String) {
        let token = self.idp.token(path, json!({ "org": "partner-a" }));
        let mut req = self
            .proxy
            .client(h1)
            .post(self.proxy.url(path))
            .bearer_auth(token)
            .header("accept", "application/json, text/event-stream");
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        {
            req = req.header("content-type", "application/json");
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.body(body).send().await.expect("request sent");
        let status = resp.status().as_u16();
        let h = resp.headers().clone();
        (status, h, resp.text().await.unwrap_or_default())
    }

    fn drain(&mut self) -> Vec<Seen> {
        let mut out = Vec::new();
        while let Ok(s) = self.seen.try_recv() {
            out.push(s);
        }
        out
    }
}

fn call(id: u64, tool: &str) -> String {
    json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":tool,"arguments":{}}})
        .to_string()
}

/// JSON-RPC error code of a JSON answer body.
fn rpc_code(body: &str) -> i64 {
    serde_json::from_str::<Value>(body).map_or(0, |v| v["error"]["code"].as_i64().unwrap_or(0))
}

/// Data payloads of an SSE body.
fn sse_payloads(body: &str) -> Vec<Value> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .filter_map(|d| serde_json::from_str(d).ok())
        .collect()
}

// --- 1. Bodies the backend decodes differently than the proxy inspected ---------------------

#[tokio::test]
async fn declared_charsets_and_encodings_are_refused_before_the_backend() {
    let mut s = setup("").await;
    // The attack: UTF-7 `get+AC0-env` is `get-env` to a charset-honouring backend.
    assert_eq!(utf7_decode("get+AC0-env"), "get-env");
    let attack = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get+AC0-env","arguments":{}}}"#;
    for h1 in [true, false] {
        for (ct, ce) in [
            ("application/json; charset=utf-7", None),
            ("application/json; charset=\"UTF-7\"", None),
            ("application/json;charset=utf-16", None),
            ("application/json; charset=iso-8859-1", None),
            ("text/plain", None),
            ("application/json", Some("gzip")),
        ] {
            let mut headers = vec![("content-type", ct)];
            if let Some(ce) = ce {
                headers.push(("content-encoding", ce));
            }
            let (status, h, body) = s.post(h1, "/mcp", &headers, attack).await;
            assert_eq!(status, 415, "{ct} {ce:?} h1={h1}: {body}");
            assert_eq!(h["content-type"], "application/json");
            assert!(rpc_code(&body) < 0, "JSON-RPC error body: {body}");
        }
    }
    assert!(s.drain().is_empty(), "a refused body reached the backend");

    // What is relayed declares exactly what was inspected.
    let (status, _, body) = s
        .post(
            true,
            "/mcp",
            &[
                (
                    "content-type",
                    "Application/JSON; charset=\"UTF-8\"; profile=x",
                ),
                ("content-encoding", "identity"),
            ],
            call(2, "echo"),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let seen = s.drain();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].headers["content-type"], "application/json");
    assert!(!seen[0].headers.contains_key("content-encoding"));
}

#[tokio::test]
async fn legacy_posts_with_a_foreign_charset_are_refused() {
    let mut s = setup("").await;
    let client = s.proxy.client(true);
    let mut stream = client
        .get(s.proxy.url("/legacy"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), stream.chunk())
        .await
        .expect("endpoint event in time")
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&first).into_owned();
    let endpoint = text
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .expect("endpoint event")
        .trim()
        .to_owned();
    let url = s.proxy.url(&endpoint);
    let attack =
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"get+AC0-env"}}"#;
    let resp = client
        .post(&url)
        .header("content-type", "application/json; charset=utf-7")
        .body(attack)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 415);
    let resp = client
        .post(&url)
        .header("content-type", "application/json; charset=utf-8")
        .body(call(2, "echo"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let posts: Vec<Seen> = s
        .drain()
        .into_iter()
        .filter(|r| r.method == Method::POST)
        .collect();
    assert_eq!(posts.len(), 1, "only the UTF-8 POST reached the backend");
    assert_eq!(posts[0].headers["content-type"], "application/json");
    assert!(posts[0].text.contains("echo"));
    drop(stream);
}

// --- 2. tools/list answers with non-canonical ids ---------------------------------------------

#[tokio::test]
async fn tools_lists_are_filtered_whatever_the_request_id() {
    let mut s = setup("").await;
    for sse in [false, true] {
        for id in ["1.0", "-0", "1e0", "9007199254740993", "\"x\"", "7"] {
            let body = format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/list"}}"#);
            let headers: &[(&str, &str)] = if sse { &[("x-answer", "sse")] } else { &[] };
            let (status, _, answer) = s.post(false, "/mcp", headers, body).await;
            assert_eq!(status, 200, "id {id}: {answer}");
            assert!(answer.contains("echo"), "id {id}: {answer}");
            assert!(
                !answer.contains("get-env"),
                "id {id} (sse={sse}) leaked the hidden tool: {answer}"
            );
        }
    }
    assert_eq!(s.drain().len(), 12);
}

// --- 3. resources/list and subscriptions/listen ignore namespaces ---------------------------

#[tokio::test]
async fn resource_lists_and_templates_keep_only_the_principals_namespace() {
    let s = setup("").await;
    for (method, hidden) in [
        ("resources/list", "partner-b"),
        ("resources/templates/list", "partner-b"),
    ] {
        let body = format!(r#"{{"jsonrpc":"2.0","id":1.0,"method":"{method}"}}"#);
        let (status, _, answer) = s.post(false, "/mcp", &[], body).await;
        assert_eq!(status, 200, "{answer}");
        assert!(answer.contains("memory://partner-a/"), "{method}: {answer}");
        assert!(!answer.contains(hidden), "{method} leaked: {answer}");
    }
}

#[tokio::test]
async fn subscriptions_outside_the_namespace_are_refused_and_updates_dropped() {
    let mut s = setup("").await;
    let listen = |uris: Value| {
        json!({"jsonrpc":"2.0","id":5,"method":"subscriptions/listen",
               "params":{"notifications":{"resourceSubscriptions":uris}}})
        .to_string()
    };
    let v2026 = [
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "subscriptions/listen"),
    ];
    for uris in [
        json!(["secret://x"]),
        json!([
            "memory://partner-a/notes",
            "memory://partner-b/merger-plans"
        ]),
        json!(["memory://partner-a/../partner-b/x"]),
    ] {
        let (status, _, body) = s.post(false, "/mcp", &v2026, listen(uris.clone())).await;
        assert_eq!(status, 403, "{uris}: {body}");
        assert_eq!(rpc_code(&body), mcp_edge::proxy::POLICY_DENIED);
    }
    let (status, _, body) = s
        .post(false, "/mcp", &v2026, listen(json!("not a list")))
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        s.drain().is_empty(),
        "a refused subscription reached the backend"
    );

    // Allowed subscription: the stream carries only updates inside the namespace.
    let (status, _, body) = s
        .post(
            false,
            "/mcp",
            &v2026,
            listen(json!(["memory://partner-a/notes"])),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let payloads = sse_payloads(&body);
    assert_eq!(payloads.len(), 2, "{body}");
    assert_eq!(payloads[0]["params"]["uri"], "memory://partner-a/notes");
    // The backend closed the listen stream without answering the listen (and without `retry:`
    // to resume): the proxy answers it.
    assert_eq!(payloads[1]["id"], 5, "{body}");
    assert_eq!(payloads[1]["error"]["data"]["reason"], "upstream_ended");
    assert!(!body.contains("partner-b"), "{body}");
}

#[tokio::test]
async fn get_streams_drop_foreign_updates_and_filter_resource_lists() {
    let s = setup("").await;
    let resp = s
        .proxy
        .client(false)
        .get(s.proxy.url("/mcp"))
        .bearer_auth(s.token("partner-a"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.text().await.unwrap();
    assert!(!body.contains("partner-b"), "{body}");
    let payloads = sse_payloads(&body);
    assert_eq!(payloads.len(), 2, "{body}");
    assert_eq!(
        payloads[0]["result"]["resources"],
        json!([{"uri":"memory://partner-a/notes","name":"notes"}])
    );
    assert_eq!(payloads[1]["params"]["uri"], "memory://partner-a/notes");
    // The dropped event keeps its id, so resumption after it still works.
    assert!(body.contains("id: 2\n"), "{body}");
}

// --- 4. Namespace checks stop at `?` and `#` ----------------------------------------------------

#[tokio::test]
async fn query_and_fragment_cannot_climb_out_of_a_namespace() {
    let mut s = setup("").await;
    for uri in [
        "memory://partner-a/?/../../partner-b/secret",
        "memory://partner-a/x#/../../partner-b",
        "memory://partner-a/..?x",
    ] {
        let body = json!({"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":uri}});
        let (status, _, answer) = s.post(false, "/mcp", &[], body.to_string()).await;
        assert_eq!(status, 403, "{uri}: {answer}");
    }
    assert!(s.drain().is_empty(), "a climbing URI reached the backend");
    let ok = json!({"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"memory://partner-a/notes"}});
    let (status, _, _) = s.post(false, "/mcp", &[], ok.to_string()).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn organisations_with_separators_get_no_namespace() {
    let mut s = setup("").await;
    for (org, uri) in [
        ("acme:evil", "urn:x:acme:evil:doc"),
        ("acme@evil", "urn:x:acme@evil:doc"),
    ] {
        let token = s.idp.token("/urn", json!({ "org": org }));
        let body = json!({"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":uri}});
        let resp = s
            .proxy
            .client(false)
            .post(s.proxy.url("/urn"))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 403, "org {org}");
    }
    assert!(s.drain().is_empty());
    let (status, _, _) = s
        .post(
            false,
            "/urn",
            &[],
            json!({"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"urn:x:partner-a:doc"}})
                .to_string(),
        )
        .await;
    assert_eq!(status, 200, "a plain organisation keeps its namespace");
}

// --- 7. Spoofed identity headers --------------------------------------------------------------

#[tokio::test]
async fn underscore_lookalikes_of_identity_headers_never_reach_the_backend() {
    let mut s = setup("").await;
    let spoofs = [
        ("X_Mcp_Edge_Subject", "victim"),
        ("x-mcp-edge_client-id", "victim"),
        ("x_mcp_edge_organisation", "victim"),
        ("X_Forwarded_For", "6.6.6.6"),
        ("mcp_session_id", "stolen-backend-session"),
    ];
    for path in ["/mcp", "/open"] {
        let (status, _, body) = s.post(true, path, &spoofs, call(1, "echo")).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    let seen = s.drain();
    assert_eq!(seen.len(), 2);
    for r in &seen {
        for (name, value) in r.headers.iter() {
            let folded = name.as_str().replace('_', "-");
            assert!(
                !(name.as_str().contains('_')
                    && (folded.starts_with("x-mcp-edge-")
                        || folded.starts_with("x-forwarded-")
                        || folded.starts_with("mcp-"))),
                "{name} reached the backend"
            );
            assert_ne!(value, "victim", "{name}: victim reached the backend");
        }
    }
    // The token route still gets the identity the proxy proved.
    assert_eq!(seen[0].headers["x-mcp-edge-subject"], "agent-7");
}

#[tokio::test]
async fn underscore_lookalikes_are_stripped_on_certificate_routes() {
    let (backend, mut seen) = recording_backend().await;
    let pki = Pki::new();
    let client = pki.ca.issue_client("partner-a", None).unwrap();
    std::fs::write(pki.dir.path().join("clients-ca.pem"), &pki.ca.cert_pem).unwrap();
    let text = format!(
        "client_auth = \"required\"\nclient_ca = \"clients-ca.pem\"\n[[routes]]\npath = \"/partners\"\nupstream = \"http://{}/mcp\"\n[routes.auth]\nrequire = \"certificate\"\n",
        backend.addr
    );
    let proxy = start_proxy_with(pki, &text).await;
    let body = call(1, "echo");
    let req = format!(
        "POST /partners HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nX_Mcp_Edge_Cert_Subject: CN=victim\r\nx-mcp-edge_cert-uri: spiffe://victim\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let answer = raw_request(&proxy, Some(&client), req.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let r = seen.try_recv().expect("relayed");
    assert_eq!(r.headers["x-mcp-edge-cert-subject"], "CN=partner-a");
    for (name, value) in r.headers.iter() {
        assert!(!name.as_str().contains('_'), "{name} reached the backend");
        assert!(!value.to_str().unwrap_or("").contains("victim"), "{name}");
    }
}

// --- 8. X-Forwarded-Host is not the host that was checked -------------------------------------

#[tokio::test]
async fn host_that_disagrees_with_the_authority_is_refused_on_h1() {
    let mut s = setup("").await;
    let body = call(1, "echo");
    let token = s.token("partner-a");
    for target in ["https://localhost/open", "https://localhost:8443/open"] {
        let req = format!(
            "POST {target} HTTP/1.1\r\nHost: evil.example\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let answer = raw_request(&s.proxy, None, req.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{target}: {answer}");
    }
    assert!(
        s.drain().is_empty(),
        "a mismatched Host reached the backend"
    );
    // Agreeing values pass, and the backend is told the validated one.
    let port = s.proxy.addr.port();
    let req = format!(
        "POST https://localhost:{port}/open HTTP/1.1\r\nHost: LOCALHOST:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let answer = raw_request(&s.proxy, None, req.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let seen = s.drain();
    assert_eq!(
        seen[0].headers["x-forwarded-host"],
        format!("localhost:{port}").as_str()
    );
}

#[tokio::test]
async fn host_header_that_disagrees_with_h2_authority_is_refused() {
    let mut s = setup("").await;
    let tls = support::tls::stream(&s.proxy, None, b"h2").await;
    let (client, conn) = h2::client::handshake(tls).await.expect("h2 handshake");
    tokio::spawn(conn);
    let mut client = client.ready().await.unwrap();
    let port = s.proxy.addr.port();
    let send = |client: &mut h2::client::SendRequest<Bytes>, host: Option<&str>| {
        let mut req = http::Request::builder()
            .method("POST")
            .uri(format!("https://localhost:{port}/open"))
            .header("content-type", "application/json");
        if let Some(h) = host {
            req = req.header("host", h);
        }
        let (resp, mut body) = client.send_request(req.body(()).unwrap(), false).unwrap();
        body.send_data(Bytes::from(call(1, "echo")), true).unwrap();
        resp
    };
    let resp = send(&mut client, Some("evil.example")).await.unwrap();
    assert_eq!(resp.status(), 400);
    assert!(s.drain().is_empty(), "the backend saw a mismatched host");
    let resp = send(&mut client, None).await.unwrap();
    assert_eq!(resp.status(), 200);
    let seen = s.drain();
    assert_eq!(
        seen[0].headers["x-forwarded-host"],
        format!("localhost:{port}").as_str()
    );
}

// --- 9. Browser clients on SDK backends ---------------------------------------------------------

#[tokio::test]
async fn validated_origin_is_not_forwarded_unless_the_route_opts_in() {
    let mut s = setup("").await;
    let origin = [("origin", "https://app.example.com")];
    let (status, h, body) = s.post(false, "/mcp", &origin, call(1, "echo")).await;
    assert_eq!(
        status, 200,
        "an allowed browser client gets through: {body}"
    );
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    let seen = s.drain();
    assert!(!seen[0].headers.contains_key("origin"));
}

#[tokio::test]
async fn forward_origin_opt_in_passes_it_on() {
    let (backend, mut seen) = recording_backend().await;
    let pki = Pki::new();
    let text = format!(
        "[[routes]]\npath = \"/mcp\"\nupstream = \"http://{}/mcp\"\nallowed_origins = [\"https://app.example.com\"]\nforward_origin = true\n",
        backend.addr
    );
    let proxy = start_proxy_with(pki, &text).await;
    let resp = proxy
        .client(false)
        .post(proxy.url("/mcp"))
        .header("origin", "https://app.example.com")
        .header("content-type", "application/json")
        .body(call(1, "echo"))
        .send()
        .await
        .unwrap();
    // The backend refuses Origins; with the opt-in it sees (and refuses) this one.
    assert_eq!(resp.status(), 403);
    let r = seen.try_recv().unwrap();
    assert_eq!(r.headers["origin"], "https://app.example.com");
}

// --- 10. Sessions never expire, and their ids change on every answer --------------------------

#[tokio::test]
async fn session_ids_are_stable_and_expire_after_max_lifetime() {
    let mut s = setup("[sessions]\nmax_lifetime = \"2s\"\n").await;
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
    let (status, h, _) = s.post(false, "/mcp", &[], init).await;
    assert_eq!(status, 200);
    let sealed = h["mcp-session-id"].to_str().unwrap().to_owned();
    assert_ne!(sealed, BACKEND_SESSION, "the backend id is never shown");
    let with_session = [
        ("mcp-session-id", sealed.as_str()),
        ("mcp-protocol-version", "2025-06-18"),
    ];
    for id in 2..5 {
        let (status, h, body) = s.post(false, "/mcp", &with_session, call(id, "echo")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            h["mcp-session-id"],
            sealed.as_str(),
            "the id stays the same for the life of the session"
        );
    }
    let seen = s.drain();
    assert!(
        seen[1..]
            .iter()
            .all(|r| r.headers["mcp-session-id"] == BACKEND_SESSION)
    );
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let (status, _, _) = s.post(false, "/mcp", &with_session, call(9, "echo")).await;
    assert_eq!(status, 404, "past sessions.max_lifetime the id is unknown");
    assert!(s.drain().is_empty());
}

// --- 12. Smaller ----------------------------------------------------------------------------------

#[tokio::test]
async fn cert_subject_cannot_be_forged_inside_a_common_name() {
    let (backend, mut seen) = recording_backend().await;
    let pki = Pki::new();
    let forged = pki.ca.issue_client("bot, O=Acme", None).unwrap();
    // A certificate whose subject really has O=Acme.
    let real = pki
        .ca
        .issue_client_subject(&[
            (rcgen::DnType::CommonName, "bot"),
            (rcgen::DnType::OrganizationName, "Acme"),
        ])
        .unwrap();
    std::fs::write(pki.dir.path().join("clients-ca.pem"), &pki.ca.cert_pem).unwrap();
    let text = format!(
        r#"client_auth = "required"
client_ca = "clients-ca.pem"
[[routes]]
path = "/partners"
upstream = "http://{}/mcp"
[routes.auth]
require = "certificate"
[[routes.policy.rules]]
name = "acme"
match = {{ cert_subject = "*, O=Acme" }}
allow_tools = ["*"]
"#,
        backend.addr
    );
    let proxy = start_proxy_with(pki, &text).await;
    let body = call(1, "echo");
    let req = format!(
        "POST /partners HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let answer = raw_request(&proxy, Some(&forged), req.as_bytes()).await;
    assert!(
        answer.starts_with("HTTP/1.1 403"),
        "forged subject: {answer}"
    );
    assert!(seen.try_recv().is_err());
    let answer = raw_request(&proxy, Some(&real), req.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "real O=Acme: {answer}");
    assert!(seen.try_recv().is_ok());
}

#[tokio::test]
async fn get_and_delete_with_a_body_are_refused() {
    let mut s = setup("").await;
    for method in ["GET", "DELETE"] {
        for framing in ["Content-Length: 2\r\n", "Transfer-Encoding: chunked\r\n"] {
            let body = if framing.starts_with("Content") {
                "{}"
            } else {
                "2\r\n{}\r\n0\r\n\r\n"
            };
            let req = format!(
                "{method} /open HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n{framing}Connection: close\r\n\r\n{body}"
            );
            let answer = raw_request(&s.proxy, None, req.as_bytes()).await;
            assert!(
                answer.starts_with("HTTP/1.1 400"),
                "{method} {framing}: {answer}"
            );
        }
    }
    // h2: a DELETE whose HEADERS frame does not end the stream, followed by DATA.
    let resp = s
        .proxy
        .client(false)
        .delete(s.proxy.url("/open"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert!(
        s.drain().is_empty(),
        "a GET/DELETE body reached the backend"
    );
    // Without a body both still pass.
    let req = "DELETE /open HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    let answer = raw_request(&s.proxy, None, req.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(s.drain().len(), 1);
}

// --- helpers --------------------------------------------------------------------------------------

/// Sends hand-written HTTP/1.1 bytes and reads the answer until the server closes.
async fn raw_request(
    proxy: &TestProxy,
    cert: Option<&mcp_edge::demo::pki::IssuedCert>,
    request: &[u8],
) -> String {
    support::tls::exchange(proxy, cert, request, Duration::from_secs(10)).await
}
