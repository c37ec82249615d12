//! `/metrics` after real traffic: allowed calls, refusals by authentication, policy, Origin
//! and route, an event stream, a dead upstream. Asserts the families, their label values and
//! counts, that no principal ever becomes a label, and that `promtool check metrics` accepts
//! the exposition (skipped with a message only when promtool is absent outside CI).

mod support;

use std::process::Stdio;

use support::idp::Idp;
use support::{TestProxy, raw, start_proxy_with};
use tokio::io::AsyncWriteExt;

const POLICY: &str = r#"
allowed_origins = ["https://app.example"]
[routes.auth]
require = "token"
[routes.policy]
methods = ["initialize", "ping", "notifications/*", "tools/list", "tools/call"]
[[routes.policy.rules]]
name = "members"
match = { claims = { role = ["member"] } }
allow_tools = ["echo", "get_*"]
deny_tools = ["danger"]
"#;

struct Setup {
    proxy: TestProxy,
    idp: Idp,
    admin: String,
    _backend: raw::RawBackend,
}

/// A backend answering every POST with an empty result (as SSE when asked with `x-answer:
/// sse`) and GET with a stream of two events that then ends.
async fn setup(extra: &str) -> Setup {
    let backend = raw::serve(|req: http::Request<hyper::body::Incoming>| async move {
        use http_body_util::BodyExt;
        if req.method() == http::Method::GET {
            return raw::sse(raw::full(
                "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\"}\n\n: note\n\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\"}\n\n",
            ));
        }
        let sse = req.headers().get("x-answer").is_some_and(|v| v == "sse");
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let msg: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let answer = format!(r#"{{"jsonrpc":"2.0","id":{},"result":{{}}}}"#, msg["id"]);
        if sse {
            raw::sse(raw::full(format!("event: message\ndata: {answer}\n\n")))
        } else {
            http::Response::builder()
                .header("content-type", "application/json")
                .body(raw::full(answer))
                .unwrap()
        }
    })
    .await;
    let idp = Idp::new();
    let pki = support::Pki::new();
    let issuer = idp.issuer_toml(pki.dir.path());
    let proxy = start_proxy_with(
        pki,
        &format!(
            "[admin]\nbind = \"127.0.0.1:0\"\n{extra}\n{issuer}{}{POLICY}{}",
            support::route("/mcp", &format!("http://{}/mcp", backend.addr)),
            // Port 1 on loopback: nothing listens, the connect is refused at once.
            support::route("/dead", "http://127.0.0.1:1/mcp"),
        ),
    )
    .await;
    let admin = format!(
        "http://{}",
        proxy.running.as_ref().unwrap().admin_addr.unwrap()
    );
    Setup {
        proxy,
        idp,
        admin,
        _backend: backend,
    }
}

fn call(id: u64, tool: &str) -> String {
    serde_json::json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":tool,"arguments":{}}})
        .to_string()
}

async fn post(
    s: &Setup,
    path: &str,
    token: Option<&str>,
    body: String,
    headers: &[(&str, &str)],
) -> u16 {
    let mut req = s
        .proxy
        .client(false)
        .post(s.proxy.url(path))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.body(body).send().await.unwrap();
    let status = resp.status().as_u16();
    let _ = resp.bytes().await;
    status
}

/// `/metrics` as Prometheus asks for it (OpenMetrics).
async fn scrape(s: &Setup) -> String {
    fetch(
        s,
        Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
        "application/openmetrics-text",
    )
    .await
}

/// `/metrics` as curl asks for it (the classic text format, which promtool checks).
async fn scrape_classic(s: &Setup) -> String {
    fetch(s, None, "text/plain; version=0.0.4").await
}

async fn fetch(s: &Setup, accept: Option<&str>, want_type: &str) -> String {
    let mut req = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("{}/metrics", s.admin));
    if let Some(a) = accept {
        req = req.header("accept", a);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with(want_type), "{ct}");
    let text = resp.text().await.unwrap();
    assert_eq!(
        text.ends_with("# EOF\n"),
        want_type.starts_with("application/openmetrics")
    );
    text
}

/// The value of the series written exactly as `series` (name and labels).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split(' ').next()?.parse().ok())
}

#[track_caller]
fn expect(text: &str, series: &str, want: f64) {
    match value(text, series) {
        Some(v) => assert_eq!(v, want, "{series}\n{text}"),
        None => panic!("no series {series}\n{text}"),
    }
}

#[track_caller]
fn at_least(text: &str, series: &str, want: f64) {
    match value(text, series) {
        Some(v) => assert!(v >= want, "{series} = {v}, want ≥ {want}\n{text}"),
        None => panic!("no series {series}\n{text}"),
    }
}

/// Runs the exposition through `promtool check metrics`.
async fn promtool_check(text: &str) {
    let Ok(mut child) = tokio::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool is required in CI (.ci/run installs Debian's prometheus package)"
        );
        eprintln!("SKIPPED promtool check: promtool not installed (apt-get install prometheus)");
        return;
    };
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(text.as_bytes()).await.unwrap();
    drop(stdin);
    let out = child.wait_with_output().await.unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{report}\n{text}"
    );
    // Lint findings (names, help) are printed without failing: none are acceptable either.
    assert!(report.trim().is_empty(), "promtool findings:\n{report}");
}

#[tokio::test]
async fn traffic_shows_in_every_family() {
    let s = setup("").await;
    let member = s.idp.token("/mcp", serde_json::json!({"role": "member"}));
    let version = [("mcp-protocol-version", "2025-06-18")];

    assert_eq!(
        post(&s, "/mcp", Some(&member), call(1, "echo"), &version).await,
        200
    );
    assert_eq!(
        post(
            &s,
            "/mcp",
            Some(&member),
            call(2, "get_weather"),
            &[("x-answer", "sse")]
        )
        .await,
        200
    );
    assert_eq!(
        post(&s, "/mcp", Some(&member), call(3, "danger"), &[]).await,
        403
    );
    assert_eq!(
        post(&s, "/mcp", Some(&member), call(4, "rm_everything"), &[]).await,
        403
    );
    assert_eq!(post(&s, "/mcp", None, call(5, "echo"), &[]).await, 401);
    let expired = s.idp.token(
        "/mcp",
        serde_json::json!({"role": "member", "exp": support::clock::now() - 3600}),
    );
    assert_eq!(
        post(&s, "/mcp", Some(&expired), call(6, "echo"), &[]).await,
        401
    );
    assert_eq!(
        post(
            &s,
            "/mcp",
            Some(&member),
            call(7, "echo"),
            &[("origin", "https://evil.example")]
        )
        .await,
        403
    );
    assert_eq!(post(&s, "/nowhere", None, call(8, "echo"), &[]).await, 404);
    assert_eq!(post(&s, "/dead", None, call(9, "echo"), &[]).await, 502);
    // A GET event stream the upstream ends after two events.
    let stream = s
        .proxy
        .client(false)
        .get(s.proxy.url("/mcp"))
        .bearer_auth(&member)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let body = stream.text().await.unwrap();
    assert_eq!(body.matches("notifications/message").count(), 2, "{body}");

    // Requests are counted when their answer ends: give the last one a moment.
    let mut text = String::new();
    for _ in 0..50 {
        text = scrape(&s).await;
        if value(
            &text,
            "mcp_edge_sse_streams_ended_total{route=\"/mcp\",cause=\"upstream_ended\"}",
        )
        .is_some_and(|v| v >= 2.0)
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    let req = |route: &str, http: &str, method: &str, tool: &str, class: &str, outcome: &str| {
        format!(
            "mcp_edge_requests_total{{route=\"{route}\",http_method=\"{http}\",mcp_method=\"{method}\",tool=\"{tool}\",status_class=\"{class}\",outcome=\"{outcome}\"}}"
        )
    };
    expect(
        &text,
        &req("/mcp", "POST", "tools/call", "echo", "2xx", "complete"),
        1.0,
    );
    // A tool matching a policy pattern is labelled with the pattern; one the policy does not
    // name is `other`.
    expect(
        &text,
        &req("/mcp", "POST", "tools/call", "get_*", "2xx", "complete"),
        1.0,
    );
    expect(
        &text,
        &req("/mcp", "POST", "tools/call", "danger", "4xx", "refused"),
        1.0,
    );
    expect(
        &text,
        &req("/mcp", "POST", "tools/call", "other", "4xx", "refused"),
        1.0,
    );
    // Refused before the body was read: the method is not known.
    expect(
        &text,
        &req("/mcp", "POST", "unknown", "", "4xx", "refused"),
        3.0,
    );
    expect(
        &text,
        &req("unmatched", "POST", "unknown", "", "4xx", "refused"),
        1.0,
    );
    // No policy names tools on /dead: its calls are `other`.
    expect(
        &text,
        &req("/dead", "POST", "tools/call", "other", "5xx", "refused"),
        1.0,
    );
    expect(
        &text,
        &req("/mcp", "GET", "stream", "", "2xx", "complete"),
        1.0,
    );

    let op = "route=\"/mcp\",mcp_method=\"tools/call\",tool=\"echo\"";
    expect(
        &text,
        &format!("mcp_edge_request_duration_seconds_count{{{op}}}"),
        1.0,
    );
    expect(
        &text,
        &format!("mcp_edge_upstream_ttfb_seconds_count{{{op}}}"),
        1.0,
    );
    expect(
        &text,
        &format!("mcp_edge_request_duration_seconds_bucket{{le=\"+Inf\",{op}}}"),
        1.0,
    );
    expect(
        &text,
        "mcp_server_operation_duration_seconds_count{mcp_method_name=\"tools/call\",gen_ai_tool_name=\"echo\",error_type=\"\",mcp_protocol_version=\"2025-06-18\"}",
        1.0,
    );
    expect(
        &text,
        "mcp_server_operation_duration_seconds_count{mcp_method_name=\"tools/call\",gen_ai_tool_name=\"danger\",error_type=\"policy_denied\",mcp_protocol_version=\"\"}",
        1.0,
    );

    let auth = |result: &str, reason: &str| {
        format!(
            "mcp_edge_auth_decisions_total{{route=\"/mcp\",result=\"{result}\",reason=\"{reason}\"}}"
        )
    };
    expect(&text, &auth("allowed", "ok"), 5.0);
    expect(&text, &auth("refused", "no_token"), 1.0);
    expect(&text, &auth("refused", "expired"), 1.0);
    expect(&text, &auth("refused", "audience"), 0.0);
    expect(
        &text,
        "mcp_edge_auth_decisions_total{route=\"/dead\",result=\"allowed\",reason=\"not_required\"}",
        1.0,
    );
    expect(
        &text,
        "mcp_edge_policy_decisions_total{route=\"/mcp\",decision=\"allow\"}",
        2.0,
    );
    expect(
        &text,
        "mcp_edge_policy_decisions_total{route=\"/mcp\",decision=\"deny\"}",
        2.0,
    );
    expect(
        &text,
        "mcp_edge_admission_refusals_total{route=\"/mcp\",reason=\"origin\"}",
        1.0,
    );
    expect(
        &text,
        "mcp_edge_admission_refusals_total{route=\"unmatched\",reason=\"not_found\"}",
        1.0,
    );
    expect(
        &text,
        "mcp_edge_limit_rejections_total{route=\"/mcp\",kind=\"rate_limited\"}",
        0.0,
    );

    expect(&text, "mcp_edge_sse_events_total{route=\"/mcp\"}", 3.0);
    expect(&text, "mcp_edge_sse_streams_open{route=\"/mcp\"}", 0.0);
    expect(
        &text,
        "mcp_edge_sse_streams_ended_total{route=\"/mcp\",cause=\"upstream_ended\"}",
        2.0,
    );
    expect(
        &text,
        "mcp_edge_sse_injected_answers_total{route=\"/mcp\"}",
        0.0,
    );

    let backend = format!("http://{}/mcp", s._backend.addr);
    expect(
        &text,
        &format!(
            "mcp_edge_upstream_requests_total{{route=\"/mcp\",endpoint=\"{backend}\",status_class=\"2xx\"}}"
        ),
        3.0,
    );
    expect(
        &text,
        "mcp_edge_upstream_errors_total{route=\"/dead\",endpoint=\"http://127.0.0.1:1/mcp\",kind=\"connect\"}",
        1.0,
    );
    expect(
        &text,
        "mcp_edge_upstream_endpoint_healthy{endpoint=\"http://127.0.0.1:1/mcp\"}",
        1.0,
    );
    expect(
        &text,
        &format!("mcp_edge_upstream_circuit_state{{endpoint=\"{backend}\",state=\"closed\"}}"),
        1.0,
    );
    at_least(&text, "mcp_edge_upstream_connections_opened_total", 1.0);

    at_least(&text, "mcp_edge_connections_accepted_total", 1.0);
    at_least(&text, "mcp_edge_connections_open", 0.0);
    at_least(
        &text,
        "mcp_edge_tls_handshakes_total{result=\"ok\",version=\"TLSv1.3\",reason=\"none\"}",
        1.0,
    );
    at_least(
        &text,
        "mcp_edge_tls_handshake_duration_seconds_count{result=\"ok\"}",
        1.0,
    );
    expect(
        &text,
        "mcp_edge_connections_refused_total{reason=\"max_connections\"}",
        0.0,
    );
    assert!(
        text.contains(&format!(
            "mcp_edge_build_info{{version=\"{}\",commit=\"",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
    at_least(
        &text,
        "mcp_edge_jwks_keys{issuer=\"https://idp.test.example\"}",
        1.0,
    );
    at_least(&text, "process_resident_memory_bytes", 1.0);
    assert!(
        text.contains(
            "mcp_edge_cert_expiry_seconds{kind=\"server_leaf\",source=\"listener.tls.cert\""
        ),
        "{text}"
    );

    // The caller is never a label.
    assert!(
        !text.contains("agent-7"),
        "principal leaked into labels:\n{text}"
    );
    assert!(
        !text.contains("partner-a"),
        "client id leaked into labels:\n{text}"
    );
    assert!(
        !text.contains("rm_everything"),
        "an unnamed tool became a label:\n{text}"
    );

    promtool_check(&scrape_classic(&s).await).await;
    s.proxy.stop().await;
}

#[tokio::test]
async fn organisations_are_labelled_only_from_the_configured_list() {
    let s = setup("[metrics]\norganisation_label = true\norganisations = [\"acme\"]\n[auth]\norganisation_claim = \"org_id\"\n").await;
    for (org, n) in [("acme", 2), ("globex", 1)] {
        let token = s
            .idp
            .token("/mcp", serde_json::json!({"role": "member", "org_id": org}));
        for i in 0..n {
            assert_eq!(
                post(&s, "/mcp", Some(&token), call(i, "echo"), &[]).await,
                200
            );
        }
    }
    let text = scrape(&s).await;
    let series = |org: &str| {
        format!(
            "mcp_edge_requests_total{{route=\"/mcp\",http_method=\"POST\",mcp_method=\"tools/call\",tool=\"echo\",status_class=\"2xx\",outcome=\"complete\",organisation=\"{org}\"}}"
        )
    };
    expect(&text, &series("acme"), 2.0);
    expect(&text, &series("other"), 1.0);
    assert!(!text.contains("globex"), "{text}");
    promtool_check(&scrape_classic(&s).await).await;
    s.proxy.stop().await;
}

#[tokio::test]
async fn metrics_off_records_no_request_series() {
    let s = setup("[metrics]\nenabled = false\n").await;
    let member = s.idp.token("/mcp", serde_json::json!({"role": "member"}));
    assert_eq!(
        post(&s, "/mcp", Some(&member), call(1, "echo"), &[]).await,
        200
    );
    let text = scrape(&s).await;
    assert!(!text.contains("mcp_edge_requests_total{"), "{text}");
    assert!(!text.contains("mcp_edge_auth_decisions_total{"), "{text}");
    assert_eq!(
        value(&text, "mcp_edge_connections_accepted_total"),
        Some(0.0),
        "{text}"
    );
    // What the proxy knows from its snapshots is still served.
    assert!(text.contains("mcp_edge_cert_expiry_seconds{"), "{text}");
    assert!(text.contains("mcp_edge_build_info{"), "{text}");
    promtool_check(&scrape_classic(&s).await).await;
    s.proxy.stop().await;
}

/// Every family `docs/metrics.md` documents is served (those that exist only with an optional
/// feature are listed), and every family served is documented: the dashboard and alert rules
/// are checked against the same document by `.ci/check-ops-assets.py`.
#[tokio::test]
async fn documented_families_are_the_served_ones() {
    const CONDITIONAL: &[&str] = &[
        // `limits.store = "redis"`.
        "mcp_edge_limit_store_up",
        "mcp_edge_limit_store_fallbacks_total",
        "mcp_edge_limit_store_transitions_total",
        // Issuers with a JWKS URL, or with introspection.
        "mcp_edge_jwks_age_seconds",
        "mcp_edge_jwks_fetches_total",
        "mcp_edge_introspection_requests_total",
        "mcp_edge_introspection_cache_total",
        // `[audit]`.
        "mcp_edge_audit_entries_total",
        // `otel` builds with `[telemetry.otlp]` (tests/otel.rs).
        "mcp_edge_trace_spans_total",
    ];
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metrics.md"))
        .expect("docs/metrics.md");
    let mut documented = Vec::new();
    let families = doc.split_once("## Families").map_or("", |(_, f)| f);
    let families = families.split("\n## ").next().unwrap_or("");
    for line in families.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let kind = cells.get(2).copied().unwrap_or("");
        for name in cells[1].split(", ").map(|n| n.trim_matches('`')) {
            let name = if kind == "counter" && !name.ends_with("_total") {
                format!("{name}_total")
            } else {
                name.to_owned()
            };
            documented.push(name);
        }
    }
    let s = setup("").await;
    let member = s.idp.token("/mcp", serde_json::json!({"role": "member"}));
    assert_eq!(
        post(&s, "/mcp", Some(&member), call(1, "echo"), &[]).await,
        200
    );
    let text = scrape_classic(&s).await;
    let served: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next())
        .collect();
    for name in &documented {
        assert!(
            served.contains(&name.as_str()) || CONDITIONAL.contains(&name.as_str()),
            "documented but not served: {name}"
        );
    }
    for name in &served {
        assert!(
            documented.iter().any(|d| d == name),
            "served but not documented in docs/metrics.md: {name}"
        );
    }
    s.proxy.stop().await;
}
