//! W3C trace context without an exporter: the caller's `traceparent` (header first, then
//! `params._meta.traceparent`) reaches the backend as a header, a malformed one does not, and
//! every log line made while serving a request carries its request id and trace id (JSON logs
//! of the real binary).

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::process::{Spawned, free_port, signal, wait_listening};
use support::{Pki, raw};
use tokio::sync::mpsc;

const T_HEADER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const T_META: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
const T_REFUSED: &str = "00-11111111111111111111111111111111-2222222222222222-00";

fn call(id: u64, method: &str, meta: Option<&str>) -> String {
    let mut v = serde_json::json!({"jsonrpc":"2.0","id":id,"method":method,"params":{"name":"echo","arguments":{}}});
    if let Some(t) = meta {
        v["params"]["_meta"] = serde_json::json!({"traceparent": t});
    }
    v.to_string()
}

#[tokio::test]
async fn trace_context_reaches_the_backend_and_every_log_line() {
    let (tx, mut seen) = mpsc::unbounded_channel::<Option<String>>();
    let backend = raw::serve(move |req: http::Request<hyper::body::Incoming>| {
        let tx = tx.clone();
        async move {
            let tp = req
                .headers()
                .get("traceparent")
                .map(|v| v.to_str().unwrap().to_owned());
            let _ = tx.send(tp);
            http::Response::builder()
                .header("content-type", "application/json")
                .body(raw::full(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#))
                .unwrap()
        }
    })
    .await;
    let pki = Pki::new();
    let port = free_port();
    let config = pki.dir.path().join("mcp-edge.toml");
    std::fs::write(
        &config,
        format!(
            r#"[listener]
bind = "127.0.0.1:{port}"
public_url = "https://localhost:{port}"
[listener.tls]
cert = "server.pem"
key = "server.key"
[log]
format = "json"
level = "info"
[[routes]]
path = "/mcp"
upstream = "http://{}/mcp"
[routes.policy]
methods = ["tools/call"]
"#,
            backend.addr
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_mcp-edge"))
        .args(["run", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary starts");
    let mut proxy = Spawned { child };
    wait_listening(port).await;
    let client = support::trusting(&pki.ca.cert_pem).build().unwrap();
    let url = format!("https://localhost:{port}/mcp");
    let post = |body: String, tp: Option<&'static str>| {
        let mut req = client
            .post(&url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("x-request-id", "req-trace-test");
        if let Some(tp) = tp {
            req = req.header("traceparent", tp);
        }
        async move { req.body(body).send().await.unwrap().status().as_u16() }
    };

    // The header wins over `_meta`, and without an exporter it passes unchanged.
    assert_eq!(
        post(call(1, "tools/call", Some(T_META)), Some(T_HEADER)).await,
        200
    );
    assert_eq!(seen.recv().await.unwrap().as_deref(), Some(T_HEADER));
    // Without a header, `_meta.traceparent` is the context, sent upstream as a header.
    assert_eq!(post(call(2, "tools/call", Some(T_META)), None).await, 200);
    assert_eq!(seen.recv().await.unwrap().as_deref(), Some(T_META));
    // Malformed context (header or `_meta`) never propagates.
    assert_eq!(
        post(call(3, "tools/call", Some("00-zz")), Some("garbage")).await,
        200
    );
    assert_eq!(seen.recv().await.unwrap(), None);
    // A refused call: its log lines carry the caller's trace id.
    assert_eq!(
        post(call(4, "tools/list", None), Some(T_REFUSED)).await,
        403
    );

    signal(&proxy.child, "-TERM");
    let stderr = tokio::task::spawn_blocking(move || {
        let _ = proxy.child.wait();
        let mut stderr = String::new();
        if let Some(mut e) = proxy.child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut stderr);
        }
        stderr
    });
    let stderr = tokio::time::timeout(Duration::from_secs(15), stderr)
        .await
        .expect("exits")
        .unwrap();
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let refused = lines
        .iter()
        .find(|l| l["message"] == "refused by policy")
        .unwrap_or_else(|| panic!("no policy refusal logged:\n{stderr}"));
    assert_eq!(refused["span"]["request_id"], "req-trace-test", "{refused}");
    assert_eq!(
        refused["span"]["trace_id"], "11111111111111111111111111111111",
        "{refused}"
    );
    let access: Vec<&serde_json::Value> =
        lines.iter().filter(|l| l["target"] == "access").collect();
    assert_eq!(access.len(), 4, "{stderr}");
    let trace_ids: Vec<&str> = access
        .iter()
        .map(|l| l["trace_id"].as_str().unwrap())
        .collect();
    assert_eq!(trace_ids[0], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(trace_ids[1], "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(trace_ids[2].len(), 32, "a trace id of its own");
    assert_ne!(trace_ids[2], "00000000000000000000000000000000");
    assert_eq!(trace_ids[3], "11111111111111111111111111111111");
    let ok = access[0];
    for field in [
        "request_id",
        "route",
        "upstream",
        "principal",
        "mcp_method",
        "tool",
        "status",
        "outcome",
        "error",
        "bytes_in",
        "bytes",
        "upstream_ms",
        "duration_ms",
    ] {
        assert!(!ok[field].is_null(), "access line lacks {field}: {ok}");
    }
    assert_eq!(ok["tool"], "echo");
    assert_eq!(ok["mcp_method"], "tools/call");
    assert!(ok["bytes_in"].as_u64().unwrap() > 50, "{ok}");
    assert_eq!(access[3]["error"], "policy_denied");
    assert!(
        access[3]["upstream_ms"].is_null(),
        "never went upstream: {}",
        access[3]
    );
}
