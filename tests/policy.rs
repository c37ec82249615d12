//! MCP-aware policy on the request path: method allowlist, tools per principal, scopes per
//! tool, resource namespaces per organisation, and `tools/list` answers filtered in JSON and
//! SSE alike. Refused calls never reach the backend.

mod support;

use std::collections::BTreeSet;

use support::idp::Idp;
use support::{TestProxy, raw, start_proxy_with};
use tokio::sync::mpsc;

const TOOLS: &str = r#"[{"name":"echo","inputSchema":{"type":"object"}},{"name":"add","inputSchema":{"type":"object"}},{"name":"countdown","inputSchema":{"type":"object"}},{"name":"search","inputSchema":{"type":"object"}},{"name":"delete_note","inputSchema":{"type":"object"}}]"#;

const POLICY: &str = r#"
[routes.auth]
require = "token"
scopes = ["mcp:tools"]
[routes.policy]
methods = ["initialize", "ping", "notifications/*", "tools/list", "tools/call", "resources/read"]
tool_scopes = { "delete_*" = ["memory:write"] }
[[routes.policy.rules]]
name = "members"
match = { claims = { role = ["member", "admin"] } }
allow_tools = ["echo", "countdown", "search", "delete_*"]
resource_prefixes = ["memory://{org}/"]
[[routes.policy.rules]]
name = "no-countdown-for-globex"
match = { organisation = "globex" }
deny_tools = ["countdown"]
"#;

/// What the backend was asked: method and tool name or resource URI.
type Seen = (String, Option<String>);

struct Setup {
    proxy: TestProxy,
    idp: Idp,
    _backend: raw::RawBackend,
    seen: mpsc::UnboundedReceiver<Seen>,
}

/// A backend that answers `tools/list` with five tools (as SSE when asked with
/// `x-answer: sse`), every other call with an empty result, and GET with a stream that
/// replays a `tools/list` answer.
async fn setup() -> Setup {
    let (tx, seen) = mpsc::unbounded_channel();
    let backend = raw::serve(move |req: http::Request<hyper::body::Incoming>| {
        let tx = tx.clone();
        async move {
            use http_body_util::BodyExt;
            if req.method() == http::Method::GET {
                let body = format!(
                    "event: message\nid: 1\ndata: {{\"jsonrpc\":\"2.0\",\"id\":99,\"result\":{{\"tools\":{TOOLS}}}}}\n\n: comment\n\ndata: {{\"jsonrpc\":\"2.0\",\"method\":\"notifications/tools/list_changed\"}}\n\n"
                );
                return raw::sse(raw::full(body));
            }
            let sse = req.headers().get("x-answer").is_some_and(|v| v == "sse");
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let msg: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let method = msg["method"].as_str().unwrap_or_default().to_owned();
            let target = msg["params"]["name"]
                .as_str()
                .or(msg["params"]["uri"].as_str())
                .map(str::to_owned);
            let _ = tx.send((method.clone(), target));
            let id = msg["id"].clone();
            let result = if method == "tools/list" {
                format!(r#"{{"tools":{TOOLS},"nextCursor":"c2"}}"#)
            } else {
                "{}".to_owned()
            };
            let answer = format!(r#"{{"jsonrpc":"2.0","id":{id},"result":{result}}}"#);
            if sse {
                raw::sse(raw::full(format!(
                    "event: message\ndata: {{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{{\"progress\":1}}}}\n\nevent: message\ndata: {answer}\n\n"
                )))
            } else {
                http::Response::builder()
                    .header("content-type", "application/json")
                    .body(raw::full(answer))
                    .unwrap()
            }
        }
    })
    .await;
    let idp = Idp::new();
    let pki = support::Pki::new();
    let issuer = idp.issuer_toml(pki.dir.path());
    let proxy = start_proxy_with(
        pki,
        &format!(
            "[auth]\norganisation_claim = \"org_id\"\n{issuer}{}{POLICY}",
            support::route("/mcp", &format!("http://{}/mcp", backend.addr))
        ),
    )
    .await;
    Setup {
        proxy,
        idp,
        _backend: backend,
        seen,
    }
}

async fn call(
    s: &Setup,
    token: &str,
    body: serde_json::Value,
    sse: bool,
) -> (u16, http::HeaderMap, String) {
    let mut req = s
        .proxy
        .client(false)
        .post(s.proxy.url("/mcp"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    if sse {
        req = req.header("x-answer", "sse");
    }
    let resp = req.body(body.to_string()).send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.text().await.unwrap())
}

fn tools_call(id: u64, tool: &str) -> serde_json::Value {
    serde_json::json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":tool,"arguments":{"q":"x"}}})
}

fn read(id: u64, uri: &str) -> serde_json::Value {
    serde_json::json!({"jsonrpc":"2.0","id":id,"method":"resources/read","params":{"uri":uri}})
}

const LIST: &str = r#"{"jsonrpc":"2.0","id":"L1","method":"tools/list"}"#;

/// Tool names in a JSON answer or in the answer event of an SSE body.
fn tool_names(body: &str) -> BTreeSet<String> {
    let json = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .find(|d| d.contains("\"result\""))
        .unwrap_or(body);
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    v["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

fn names(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

fn assert_denied(status: u16, body: &str, id: serde_json::Value) {
    assert_eq!(status, 403, "{body}");
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["jsonrpc"], "2.0");
    assert_eq!(v["id"], id, "the error answers the refused call: {body}");
    assert_eq!(v["error"]["code"], -32003, "{body}");
}

#[tokio::test]
async fn member_sees_and_calls_only_granted_tools() {
    let mut s = setup().await;
    let acme = s.idp.token(
        "/mcp",
        serde_json::json!({"org_id": "acme", "role": "member"}),
    );
    let list: serde_json::Value = serde_json::from_str(LIST).unwrap();
    for sse in [false, true] {
        let (status, headers, body) = call(&s, &acme, list.clone(), sse).await;
        assert_eq!(status, 200, "{body}");
        assert!(
            headers.get("content-length").is_none()
                || headers["content-length"] == body.len().to_string().as_str()
        );
        assert_eq!(
            tool_names(&body),
            names(&["echo", "countdown", "search", "delete_note"]),
            "sse={sse}: {body}"
        );
        // Only the tools array changed: other members are as the backend wrote them.
        assert!(body.contains(r#""nextCursor":"c2""#), "{body}");
        if sse {
            assert!(body.contains("notifications/progress"), "{body}");
        }
        assert_eq!(s.seen.recv().await.unwrap().0, "tools/list");
    }

    let (status, _, body) = call(&s, &acme, tools_call(5, "echo"), false).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        s.seen.recv().await.unwrap(),
        ("tools/call".to_owned(), Some("echo".to_owned()))
    );

    let (status, _, body) = call(&s, &acme, tools_call(6, "add"), false).await;
    assert_denied(status, &body, serde_json::json!(6));
    assert!(body.contains("`add` is not allowed"), "{body}");

    // Method allowlist.
    let (status, _, body) = call(
        &s,
        &acme,
        serde_json::json!({"jsonrpc":"2.0","id":"p","method":"prompts/list"}),
        false,
    )
    .await;
    assert_denied(status, &body, serde_json::json!("p"));

    // A batch (2025-03-26) with one refused call is refused whole.
    let (status, _, body) = call(
        &s,
        &acme,
        serde_json::json!([tools_call(7, "echo"), tools_call(8, "add")]),
        false,
    )
    .await;
    assert_denied(status, &body, serde_json::json!(8));
    assert!(
        s.seen.try_recv().is_err(),
        "a refused call reached the backend"
    );
}

#[tokio::test]
async fn tool_scopes_answer_insufficient_scope_with_every_needed_scope() {
    let mut s = setup().await;
    let claims = serde_json::json!({"org_id": "acme", "role": "member"});
    let token = s.idp.token("/mcp", claims.clone());
    let (status, headers, _) = call(&s, &token, tools_call(1, "delete_note"), false).await;
    assert_eq!(status, 403);
    let challenge = headers["www-authenticate"].to_str().unwrap();
    assert!(challenge.starts_with("Bearer "), "{challenge}");
    assert!(
        challenge.contains(r#"error="insufficient_scope""#),
        "{challenge}"
    );
    assert!(
        challenge.contains(r#"scope="mcp:tools memory:write""#),
        "{challenge}"
    );
    assert!(
        challenge.contains(
            r#"resource_metadata="https://localhost:8443/.well-known/oauth-protected-resource/mcp""#
        ),
        "{challenge}"
    );
    assert!(s.seen.try_recv().is_err());

    let mut more = claims;
    more["scope"] = "mcp:tools memory:write".into();
    let token = s.idp.token("/mcp", more);
    let (status, _, body) = call(&s, &token, tools_call(2, "delete_note"), false).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        s.seen.recv().await.unwrap().1.as_deref(),
        Some("delete_note")
    );
}

#[tokio::test]
async fn organisations_read_only_their_own_namespace() {
    let mut s = setup().await;
    let acme = s.idp.token(
        "/mcp",
        serde_json::json!({"org_id": "acme", "role": "member"}),
    );
    let (status, _, body) = call(&s, &acme, read(1, "memory://acme/notes/1"), false).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        s.seen.recv().await.unwrap().1.as_deref(),
        Some("memory://acme/notes/1")
    );
    for (id, uri) in [
        (2, "memory://globex/notes/1"),
        (3, "memory://acme-evil/notes/1"),
        (4, "memory://acme/../globex/notes/1"),
        (5, "memory://acme/%2e%2e/globex/notes/1"),
        (6, "memory://ACME/notes/1"),
    ] {
        let (status, _, body) = call(&s, &acme, read(id, uri), false).await;
        assert_denied(status, &body, serde_json::json!(id));
    }
    // An organisation value that would escape its namespace fills no prefix.
    let sneaky = s.idp.token(
        "/mcp",
        serde_json::json!({"org_id": "acme/../globex", "role": "member"}),
    );
    let (status, _, body) = call(&s, &sneaky, read(7, "memory://acme/../globex/x"), false).await;
    assert_denied(status, &body, serde_json::json!(7));
    assert!(
        s.seen.try_recv().is_err(),
        "a refused read reached the backend"
    );
}

#[tokio::test]
async fn deny_rules_and_unmatched_principals() {
    let mut s = setup().await;
    let globex = s.idp.token(
        "/mcp",
        serde_json::json!({"org_id": "globex", "role": "member"}),
    );
    let list: serde_json::Value = serde_json::from_str(LIST).unwrap();
    let (_, _, body) = call(&s, &globex, list.clone(), true).await;
    assert_eq!(
        tool_names(&body),
        names(&["echo", "search", "delete_note"]),
        "{body}"
    );
    let (status, _, body) = call(&s, &globex, tools_call(1, "countdown"), false).await;
    assert_denied(status, &body, serde_json::json!(1));

    // No rule matches a principal without a role: nothing is granted.
    let stranger = s.idp.token("/mcp", serde_json::json!({"org_id": "acme"}));
    let (_, _, body) = call(&s, &stranger, list, false).await;
    assert!(tool_names(&body).is_empty(), "{body}");
    let (status, _, body) = call(&s, &stranger, tools_call(2, "echo"), false).await;
    assert_denied(status, &body, serde_json::json!(2));
    let (status, _, body) = call(&s, &stranger, read(3, "memory://acme/x"), false).await;
    assert_denied(status, &body, serde_json::json!(3));
    let mut seen = Vec::new();
    while let Ok(x) = s.seen.try_recv() {
        seen.push(x.0);
    }
    assert_eq!(
        seen,
        ["tools/list", "tools/list"],
        "only the lists reached the backend"
    );
}

#[tokio::test]
async fn get_streams_filter_replayed_tools_list_answers() {
    let s = setup().await;
    let acme = s.idp.token(
        "/mcp",
        serde_json::json!({"org_id": "globex", "role": "member"}),
    );
    let resp = s
        .proxy
        .client(true)
        .get(s.proxy.url("/mcp"))
        .bearer_auth(&acme)
        .header("accept", "text/event-stream")
        .header("last-event-id", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.text().await.unwrap();
    assert_eq!(
        tool_names(&body),
        names(&["echo", "search", "delete_note"]),
        "{body}"
    );
    assert!(body.contains("id: 1\n"), "event ids survive: {body}");
    assert!(body.contains("notifications/tools/list_changed"), "{body}");
}

#[tokio::test]
async fn rmcp_client_sees_the_filtered_list_and_cannot_call_the_rest() {
    use rmcp::ServiceExt as _;
    use rmcp::model::CallToolRequestParams;
    use rmcp::transport::StreamableHttpClientTransport;
    use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;

    support::init();
    let (backend, _guard) = support::backends::start_streamable_backend().await;
    let idp = Idp::new();
    let pki = support::Pki::new();
    let issuer = idp.issuer_toml(pki.dir.path());
    let proxy = start_proxy_with(
        pki,
        &format!(
            "[auth]\norganisation_claim = \"org_id\"\n{issuer}{}{POLICY}",
            support::route("/mcp", &format!("http://{backend}/mcp"))
        ),
    )
    .await;
    let token = idp.token(
        "/mcp",
        serde_json::json!({"org_id": "acme", "role": "member"}),
    );
    let transport = StreamableHttpClientTransport::with_client(
        proxy.client(false),
        StreamableHttpClientTransportConfig::with_uri(proxy.url("/mcp")).auth_header(token),
    );
    let client = ().serve(transport).await.expect("initialize through the proxy");
    let tools: BTreeSet<String> = client
        .list_all_tools()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name.to_string())
        .collect();
    assert_eq!(tools, names(&["echo", "countdown"]));
    let ok = client
        .call_tool(
            CallToolRequestParams::new("echo").with_arguments(
                serde_json::json!({"text": "hi"})
                    .as_object()
                    .unwrap()
                    .clone(),
            ),
        )
        .await
        .unwrap();
    assert_eq!(ok.content[0].as_text().unwrap().text, "hi");
    let refused = client
        .call_tool(
            CallToolRequestParams::new("add").with_arguments(
                serde_json::json!({"a": 1, "b": 2})
                    .as_object()
                    .unwrap()
                    .clone(),
            ),
        )
        .await;
    assert!(refused.is_err(), "{refused:?}");
    let _ = client.cancel().await;
}

#[tokio::test]
async fn every_call_is_audited_with_its_decision_and_the_chain_verifies() {
    let (backend, _seen) = support::recording::json_result().await;
    let idp = Idp::new();
    let pki = support::Pki::new();
    let issuer = idp.issuer_toml(pki.dir.path());
    let audit_dir = tempfile::tempdir().unwrap();
    let audit_file = audit_dir.path().join("audit.jsonl");
    let proxy = start_proxy_with(
        pki,
        &format!(
            "[audit]\nfile = \"{}\"\nfsync = \"never\"\n[auth]\norganisation_claim = \"org_id\"\n{issuer}{}{POLICY}",
            audit_file.display(),
            support::route("/mcp", &format!("http://{}/mcp", backend.addr))
        ),
    )
    .await;
    let token = idp.token(
        "/mcp",
        serde_json::json!({"sub": "alice", "org_id": "acme", "role": "member"}),
    );
    let c = proxy.client(false);
    for (body, status) in [
        (
            serde_json::json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"secret":"hunter2"}}}),
            200,
        ),
        (tools_call(2, "add"), 403),
    ] {
        let r = c
            .post(proxy.url("/mcp"))
            .bearer_auth(&token)
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status);
        let _ = r.bytes().await;
    }
    proxy.stop().await;

    let text = std::fs::read_to_string(&audit_file).unwrap();
    assert!(!text.contains("hunter2"), "arguments are never logged");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let find = |tool: &str| {
        lines
            .iter()
            .find(|l| l["target"] == tool)
            .unwrap_or_else(|| panic!("no audit line for {tool}: {text}"))
    };
    let echo = find("echo");
    assert_eq!(echo["decision"], "allow");
    assert_eq!(echo["principal"], format!("{}#alice", support::idp::ISSUER));
    assert_eq!(echo["organisation"], "acme");
    assert_eq!(echo["route"], "/mcp");
    assert_eq!(echo["method"], "tools/call");
    assert_eq!(echo["upstream_status"], 200);
    assert_eq!(echo["args_sha256"].as_str().map(str::len), Some(64));
    assert!(
        echo["reason"].as_str().unwrap().contains("members"),
        "{echo}"
    );
    let add = find("add");
    assert_eq!(add["decision"], "deny");
    assert!(add["upstream_status"].is_null());
    assert!(
        add["reason"].as_str().unwrap().contains("not allowed"),
        "{add}"
    );
    let report = mcp_edge::audit::verify_file(&audit_file, None).unwrap();
    assert!(report.is_ok(), "{report}");
}
