//! Real MCP peers through the proxy over TLS: the official Rust SDK (rmcp) as client and as
//! backend for Streamable HTTP, rmcp 0.10 for the legacy HTTP+SSE transport, and the demo's
//! printed command.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use futures_util::StreamExt as _;
use rmcp::model::{CallToolRequestParams, ProgressNotificationParam, RequestMetaObject};
use rmcp::service::NotificationContext;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::{ClientHandler, RoleClient, ServiceExt as _};
use support::backends::{self, LEGACY_SERVER_NAME};
use support::{TestProxy, route, start_proxy};
use tokio::sync::mpsc;

const PROMPTLY: Duration = Duration::from_secs(10);

fn args(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    match v {
        serde_json::Value::Object(m) => m,
        _ => panic!("arguments must be an object"),
    }
}

fn first_text(result: &rmcp::model::CallToolResult) -> String {
    let v = serde_json::to_value(&result.content).unwrap();
    v[0]["text"].as_str().unwrap().to_owned()
}

/// Forwards every progress notification to the test.
#[derive(Clone)]
struct ProgressClient {
    progress: mpsc::UnboundedSender<ProgressNotificationParam>,
}

impl ClientHandler for ProgressClient {
    async fn on_progress(
        &self,
        params: ProgressNotificationParam,
        _: NotificationContext<RoleClient>,
    ) {
        let _ = self.progress.send(params);
    }
}

async fn rmcp_client(
    proxy: &TestProxy,
    h1: bool,
) -> (
    rmcp::service::RunningService<RoleClient, ProgressClient>,
    mpsc::UnboundedReceiver<ProgressNotificationParam>,
) {
    let transport = StreamableHttpClientTransport::with_client(
        proxy.client(h1),
        StreamableHttpClientTransportConfig::with_uri(proxy.url("/mcp")),
    );
    let (tx, rx) = mpsc::unbounded_channel();
    let client = ProgressClient { progress: tx }
        .serve(transport)
        .await
        .expect("initialize through the proxy");
    (client, rx)
}

#[tokio::test]
async fn rmcp_client_and_backend_through_the_proxy_h1_and_h2() {
    let (addr, _backend) = backends::start_streamable_backend().await;
    let proxy = start_proxy(&route("/mcp", &format!("http://{addr}/mcp"))).await;
    for h1 in [true, false] {
        let (client, _) = rmcp_client(&proxy, h1).await;
        let info = client.peer_info().expect("server info");
        assert_eq!(
            info.server_info.as_ref().map(|i| i.name.as_str()),
            Some("mcp-edge-demo")
        );
        let mut names: Vec<String> = client
            .list_all_tools()
            .await
            .unwrap()
            .iter()
            .map(|t| t.name.to_string())
            .collect();
        names.sort();
        let mut expected: Vec<String> = mcp_edge::demo::backend::TOOLS
            .iter()
            .map(|s| s.to_string())
            .collect();
        expected.sort();
        assert_eq!(names, expected);
        let r = client
            .call_tool(
                CallToolRequestParams::new("add")
                    .with_arguments(args(serde_json::json!({"a": 2, "b": 3}))),
            )
            .await
            .unwrap();
        assert_eq!(first_text(&r), "5");
        let r = client
            .call_tool(
                CallToolRequestParams::new("echo")
                    .with_arguments(args(serde_json::json!({"text": "héllo ✓"}))),
            )
            .await
            .unwrap();
        assert_eq!(first_text(&r), "héllo ✓");
        client.cancel().await.unwrap();
    }
}

#[tokio::test]
async fn progress_reaches_the_client_while_the_tool_is_still_running() {
    let (addr, _backend) = backends::start_streamable_backend().await;
    let proxy = start_proxy(&route("/mcp", &format!("http://{addr}/mcp"))).await;
    let (client, mut progress) = rmcp_client(&proxy, false).await;
    let mut params = CallToolRequestParams::new("countdown")
        .with_arguments(args(serde_json::json!({"steps": 4, "interval_ms": 600})));
    params.meta = Some(RequestMetaObject::with_progress_token(
        rmcp::model::ProgressToken(rmcp::model::NumberOrString::String("edge-test".into())),
    ));
    let peer = client.peer().clone();
    let call = tokio::spawn(async move { peer.call_tool(params).await });

    let first = tokio::time::timeout(PROMPTLY, progress.recv())
        .await
        .expect("first progress notification")
        .unwrap();
    assert_eq!(first.progress, 1.0);
    // The backend has three more steps of 600 ms to go: the call cannot have finished, so the
    // notification was relayed as it was sent, not collected with the result.
    assert!(
        !call.is_finished(),
        "progress arrived only with the final result"
    );

    let result = tokio::time::timeout(PROMPTLY, call)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first_text(&result), "countdown finished after 4 steps");
    let mut rest = 0;
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(500), progress.recv()).await
    {
        rest += 1;
    }
    assert_eq!(rest, 3, "every progress notification arrives");
    client.cancel().await.unwrap();
}

async fn post_json(
    c: &reqwest::Client,
    url: &str,
    session: Option<&str>,
    body: serde_json::Value,
) -> reqwest::Response {
    let mut req = c
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2025-06-18");
    if let Some(s) = session {
        req = req.header("mcp-session-id", s);
    }
    req.json(&body).send().await.unwrap()
}

#[tokio::test]
async fn session_era_get_stream_and_delete() {
    let (addr, _backend) = backends::start_streamable_backend().await;
    let proxy = start_proxy(&route("/mcp", &format!("http://{addr}/mcp"))).await;
    let c = proxy.client(false);
    let url = proxy.url("/mcp");

    let init = post_json(
        &c,
        &url,
        None,
        serde_json::json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
            "protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"edge-test","version":"0"}}}),
    )
    .await;
    assert_eq!(init.status(), 200);
    let sid = init.headers()["mcp-session-id"]
        .to_str()
        .unwrap()
        .to_owned();
    // The client sees the proxy's sealed id, never the backend's.
    assert!(
        sid.len() > 60
            && sid
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "sealed: {sid}"
    );
    let data = support::sse_data(init).await;
    assert_eq!(
        data.last().unwrap()["result"]["serverInfo"]["name"],
        "mcp-edge-demo"
    );

    let r = post_json(
        &c,
        &url,
        Some(&sid),
        serde_json::json!({"jsonrpc":"2.0","method":"notifications/initialized"}),
    )
    .await;
    assert_eq!(r.status(), 202);

    // The standalone GET stream opens and stays open through the proxy.
    let mut get = c
        .get(&url)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &sid)
        .header("mcp-protocol-version", "2025-06-18")
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 200);
    assert_eq!(get.headers()["content-type"], "text/event-stream");
    assert_eq!(get.headers()["x-accel-buffering"], "no");
    let first = tokio::time::timeout(PROMPTLY, get.chunk())
        .await
        .unwrap()
        .unwrap();
    assert!(first.is_some(), "priming event relayed");

    let r = post_json(
        &c,
        &url,
        Some(&sid),
        serde_json::json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"add","arguments":{"a":40,"b":2}}}),
    )
    .await;
    assert_eq!(r.status(), 200);
    let data = support::sse_data(r).await;
    assert_eq!(data.last().unwrap()["result"]["content"][0]["text"], "42");

    let del = c
        .delete(&url)
        .header("mcp-session-id", &sid)
        .header("mcp-protocol-version", "2025-06-18")
        .send()
        .await
        .unwrap();
    assert!(del.status().is_success(), "DELETE: {}", del.status());
    // The GET stream of a deleted session ends.
    let ended = tokio::time::timeout(PROMPTLY, async {
        while let Ok(Some(_)) = get.chunk().await {}
    })
    .await;
    assert!(ended.is_ok(), "GET stream ends after DELETE");
    let r = post_json(
        &c,
        &url,
        Some(&sid),
        serde_json::json!({"jsonrpc":"2.0","id":3,"method":"tools/list"}),
    )
    .await;
    assert_eq!(r.status(), 404, "deleted session is unknown");
}

/// Next SSE event with the given name from a raw response stream.
async fn next_event(
    events: &mut (impl futures_util::Stream<Item = Result<sse_stream::Sse, sse_stream::Error>> + Unpin),
    name: &str,
) -> sse_stream::Sse {
    loop {
        let e = tokio::time::timeout(PROMPTLY, events.next())
            .await
            .expect("event in time")
            .expect("stream open")
            .expect("valid SSE");
        if e.event.as_deref() == Some(name) {
            return e;
        }
    }
}

#[tokio::test]
async fn legacy_sse_endpoint_is_rewritten_and_messages_reach_the_same_backend() {
    let (addr, _backend) = backends::start_legacy_sse_backend().await;
    let proxy = start_proxy(&format!(
        "[[routes]]\npath = \"/sse\"\nupstream = \"http://{addr}/sse\"\ntransport = \"sse\"\n"
    ))
    .await;
    let c = proxy.client(false);
    let resp = c
        .get(proxy.url("/sse"))
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut events = sse_stream::SseStream::from_bytes_stream(resp.bytes_stream());
    let endpoint = next_event(&mut events, "endpoint").await.data.unwrap();
    assert!(
        endpoint.starts_with("/sse?sessionId="),
        "rewritten onto the public route: {endpoint}"
    );
    for leak in [
        addr.ip().to_string(),
        addr.port().to_string(),
        "/message".to_owned(),
    ] {
        assert!(
            !endpoint.contains(&leak),
            "backend detail {leak} leaked in {endpoint}"
        );
    }

    let post_url = proxy.url(&endpoint);
    let post = |body: serde_json::Value| {
        let c = c.clone();
        let url = post_url.clone();
        async move { c.post(url).json(&body).send().await.unwrap() }
    };
    let r = post(serde_json::json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
        "protocolVersion":"2024-11-05","capabilities":{},"clientInfo":{"name":"edge","version":"0"}}}))
    .await;
    assert_eq!(r.status(), 202);
    let init: serde_json::Value =
        serde_json::from_str(&next_event(&mut events, "message").await.data.unwrap()).unwrap();
    assert_eq!(init["result"]["serverInfo"]["name"], LEGACY_SERVER_NAME);
    assert_eq!(
        post(serde_json::json!({"jsonrpc":"2.0","method":"notifications/initialized"}))
            .await
            .status(),
        202
    );
    let r = post(serde_json::json!({"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"add","arguments":{"a":40,"b":2}}})).await;
    assert_eq!(r.status(), 202);
    let reply: serde_json::Value =
        serde_json::from_str(&next_event(&mut events, "message").await.data.unwrap()).unwrap();
    assert_eq!(reply["result"]["content"][0]["text"], "42");

    // Forged and missing tokens never reach the backend.
    let forged = c
        .post(proxy.url("/sse?sessionId=0123"))
        .body(support::PING)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 404);
    let missing = c
        .post(proxy.url("/sse"))
        .body(support::PING)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 400);

    // The token dies with its stream.
    drop(events);
    let mut gone = false;
    for _ in 0..100 {
        if post(serde_json::json!({"jsonrpc":"2.0","method":"notifications/initialized"}))
            .await
            .status()
            == 404
        {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "legacy session token outlived its stream");
}

#[tokio::test]
async fn legacy_sse_rmcp_client_through_the_proxy() {
    let (addr, _backend) = backends::start_legacy_sse_backend().await;
    let proxy = start_proxy(&format!(
        "[[routes]]\npath = \"/sse\"\nupstream = \"http://{addr}/sse\"\ntransport = \"sse\"\n"
    ))
    .await;
    let client = backends::legacy_sse_client(&proxy.url("/sse"), proxy.pki.ca.cert_pem.as_bytes())
        .await
        .expect("legacy client connects through the proxy");
    let tools = client.list_all_tools().await.unwrap();
    assert!(tools.iter().any(|t| t.name == "echo"));
    let r = client
        .call_tool(rmcp_legacy::model::CallToolRequestParam {
            name: "echo".into(),
            arguments: Some(args(serde_json::json!({"text": "legacy ok"}))),
        })
        .await
        .unwrap();
    let v = serde_json::to_value(&r.content).unwrap();
    assert_eq!(v[0]["text"], "legacy ok");
    let _ = client.cancel().await;
}

#[tokio::test]
async fn demo_prints_a_command_that_returns_a_tool_result() {
    support::init();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    /// Kills the demo even when an assertion fails first.
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_mcp-edge"))
            .args(["demo", "--bind", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let printed = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut text = String::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.unwrap();
            text.push_str(&line);
            text.push('\n');
            if line.starts_with("Press Ctrl-C") {
                break;
            }
        }
        text
    });
    let printed = tokio::time::timeout(Duration::from_secs(30), printed)
        .await
        .unwrap()
        .unwrap();

    // Take the first printed curl command apart and send exactly what it says.
    let block: String = printed
        .split("curl ")
        .nth(1)
        .expect("a curl command is printed")
        .split("\n\n")
        .next()
        .unwrap()
        .replace("\\\n", " ");
    let quoted: Vec<&str> = block.split('\'').collect();
    let words: Vec<&str> = quoted[0].split_whitespace().collect();
    assert_eq!(words[0], "--cacert");
    let ca = std::fs::read(words[1]).expect("printed CA path exists");
    let url = words[2];
    assert_eq!(url, format!("https://localhost:{port}/mcp"));
    let client = support::trusting(&ca)
        .resolve("localhost", ([127, 0, 0, 1], port).into())
        .build()
        .unwrap();
    let mut headers: Vec<(String, String)> = Vec::new();
    let mut body = None;
    // Odd segments are quoted values; the flag is the last word of the segment before.
    for i in (1..quoted.len()).step_by(2) {
        let flag = quoted[i - 1].split_whitespace().last().unwrap_or_default();
        let value = quoted[i];
        match flag {
            "-H" => {
                let (k, v) = value.split_once(':').unwrap();
                headers.push((k.trim().to_owned(), v.trim().to_owned()));
            }
            "-d" => body = Some(value.to_owned()),
            other => panic!("unexpected curl flag {other:?}"),
        }
    }
    let body = body.expect("-d body");
    let token = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        .and_then(|(_, v)| v.strip_prefix("Bearer "))
        .expect("the printed command carries a bearer token")
        .to_owned();
    // Sends the printed request with its Authorization header replaced (or dropped).
    let send = |authorization: Option<String>| {
        let mut req = client.post(url);
        for (k, v) in &headers {
            if !k.eq_ignore_ascii_case("authorization") {
                req = req.header(k, v);
            }
        }
        if let Some(a) = authorization {
            req = req.header("Authorization", a);
        }
        req.body(body.clone()).send()
    };

    // The token printed inline is the one in the printed token file, readable by the owner only.
    let token_file = dir.path().join("token.txt");
    assert!(
        printed.contains(&token_file.display().to_string()),
        "{printed}"
    );
    assert_eq!(std::fs::read_to_string(&token_file).unwrap().trim(), token);
    {
        use std::os::unix::fs::PermissionsExt as _;
        for name in ["token.txt", "token-signing.key"] {
            let mode = std::fs::metadata(dir.path().join(name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
    }

    let metadata_url = format!("https://localhost:{port}/.well-known/oauth-protected-resource/mcp");
    assert!(printed.contains(&metadata_url), "{printed}");
    let challenge = |resp: &reqwest::Response| {
        resp.headers()
            .get("www-authenticate")
            .expect("a WWW-Authenticate challenge")
            .to_str()
            .unwrap()
            .to_owned()
    };

    let resp = send(None).await.unwrap();
    assert_eq!(resp.status(), 401);
    let www = challenge(&resp);
    assert!(www.starts_with("Bearer "), "{www}");
    assert!(
        www.contains(&format!("resource_metadata=\"{metadata_url}\"")),
        "{www}"
    );
    assert!(!www.contains("error="), "{www}");

    // One character of the signature changed; not the last one, whose low bits carry no data.
    let sig_start = token.rfind('.').unwrap() + 1;
    let mut tampered = token.clone().into_bytes();
    tampered[sig_start + 10] = if tampered[sig_start + 10] == b'A' {
        b'B'
    } else {
        b'A'
    };
    let tampered = String::from_utf8(tampered).unwrap();
    assert_ne!(tampered, token);
    let resp = send(Some(format!("Bearer {tampered}"))).await.unwrap();
    assert_eq!(resp.status(), 401);
    let www = challenge(&resp);
    assert!(www.starts_with("Bearer "), "{www}");
    assert!(www.contains("error=\"invalid_token\""), "{www}");
    assert!(
        www.contains(&format!("resource_metadata=\"{metadata_url}\"")),
        "{www}"
    );

    // The metadata document names the route and the demo issuer.
    let doc: serde_json::Value = client
        .get(&metadata_url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["resource"], url, "{doc}");
    assert_eq!(
        doc["authorization_servers"],
        serde_json::json!([format!("https://localhost:{port}/demo-idp")]),
        "{doc}"
    );
    assert_eq!(
        doc["scopes_supported"],
        serde_json::json!(["mcp:tools"]),
        "{doc}"
    );

    let resp = send(Some(format!("Bearer {token}"))).await.unwrap();
    assert_eq!(resp.status(), 200);
    let data = support::sse_data(resp).await;
    drop(child);
    assert_eq!(
        data.last().unwrap()["result"]["content"][0]["text"],
        "5",
        "{data:?}"
    );
}
