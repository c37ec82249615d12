//! OTLP trace export (`--features otel`): spans reach a receiver on loopback over HTTP/protobuf
//! and over gRPC with their ids, parentage, times, attributes and resource; a dead collector
//! neither slows requests nor holds up a stop; `check` prints the settings without secrets; a
//! reload that changes `[telemetry]` says it needs a restart.
//!
//! Run: `cargo test --features otel --test otel`.
#![cfg(feature = "otel")]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mcp_edge::config::{OtlpHeader, OtlpProtocol, OtlpSettings, Sampling};
use mcp_edge::telemetry::otel::{MAX_QUEUED_SPANS, OtlpSink};
use mcp_edge::telemetry::trace::{
    Phase, RequestSpans, SpanCounts, SpanSink, TraceContext, UpstreamCall,
};
use support::otlp::{Answer, Collector, Received};

/// The caller's context in every hand-made request: trace 4bf9…, caller span 00f0…, sampled.
const CALLER: &[u8] = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACE_ID: [u8; 16] = [
    0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36,
];
const CALLER_SPAN: [u8; 8] = [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7];
const UPSTREAM_SPAN: [u8; 8] = [0x07, 0x07, 0x07, 0x07, 0x07, 0x07, 0x07, 0x07];

/// OTLP span kinds.
const KIND_INTERNAL: i32 = 1;
const KIND_SERVER: i32 = 2;
const KIND_CLIENT: i32 = 3;
/// OTLP status code ERROR.
const STATUS_ERROR: i32 = 2;
/// OTLP span flags: the parent's remoteness is known / the parent is remote.
const HAS_IS_REMOTE: u32 = 0x100;
const IS_REMOTE: u32 = 0x200;

fn settings(endpoint: String, protocol: OtlpProtocol) -> OtlpSettings {
    OtlpSettings {
        endpoint,
        endpoint_source: "test",
        protocol,
        sampling: Sampling {
            parent_based: true,
            ratio: 1.0,
        },
        service_name: "edge-test".to_owned(),
        timeout: Duration::from_secs(5),
        headers: vec![OtlpHeader {
            name: "x-api-key".to_owned(),
            value: "k%1".to_owned(),
            from_env: false,
        }],
    }
}

/// A sink exporting over OTLP/HTTP to `collector`, with [`settings`].
fn http_sink(collector: &Collector) -> Arc<OtlpSink> {
    Arc::new(
        OtlpSink::new(&settings(
            format!("{}/v1/traces", collector.endpoint()),
            OtlpProtocol::HttpProtobuf,
        ))
        .expect("sink"),
    )
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A `tools/call get_weather` that went through authentication, policy and the upstream in
/// 10 ms, as the proxy records it.
fn tool_call() -> RequestSpans {
    let ctx = TraceContext::parse(CALLER).expect("valid traceparent");
    let mut s = RequestSpans::new(
        ctx,
        http::Method::POST,
        "/mcp",
        "127.0.0.1:50123".parse().expect("addr"),
        "req-1",
    );
    let t0 = s.started;
    s.auth = Some(Phase {
        start: t0 + ms(1),
        end: t0 + ms(2),
        error: None,
    });
    s.policy = Some(Phase {
        start: t0 + ms(2),
        end: t0 + ms(3),
        error: None,
    });
    s.upstream = Some(UpstreamCall {
        span_id: UPSTREAM_SPAN,
        start: t0 + ms(3),
        head: Some(t0 + ms(8)),
        endpoint: Some("http://127.0.0.1:9000/mcp".to_owned()),
        status: Some(200),
        error: None,
    });
    s.route = Some(Arc::from("/mcp"));
    s.mcp_method = Some("tools/call".to_owned());
    s.tool = Some("get_weather".to_owned());
    s.jsonrpc_id = Some("7".to_owned());
    s.protocol_version = Some("2025-06-18".to_owned());
    s.status = 200;
    s.ended = Some(t0 + ms(10));
    s
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).expect("after 1970").as_nanos() as u64
}

fn named<'a>(spans: &'a [Received], name: &str) -> &'a Received {
    spans
        .iter()
        .find(|s| s.name() == name)
        .unwrap_or_else(|| panic!("no span {name:?} among {:?}", names(spans)))
}

fn names(spans: &[Received]) -> Vec<&str> {
    spans.iter().map(Received::name).collect()
}

/// What every transport must deliver for [`tool_call`].
fn assert_tool_call(spans: &[Received], request: &RequestSpans) {
    assert_eq!(spans.len(), 4, "{:?}", names(spans));
    for s in spans {
        assert_eq!(s.span.trace_id, TRACE_ID, "{}: one trace", s.name());
        assert_eq!(s.service_name.as_deref(), Some("edge-test"));
        assert_eq!(
            support::otlp::attr(&s.resource, "service.version").as_deref(),
            Some(env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(s.scope, "mcp-edge");
        assert_eq!(s.span.flags & 0xff, 0x01, "{}: sampled", s.name());
    }
    let server = named(spans, "tools/call get_weather");
    assert_eq!(server.span.kind, KIND_SERVER);
    assert_eq!(server.span.span_id, request.server_span_id);
    assert_eq!(server.span.parent_span_id, CALLER_SPAN, "the caller's span");
    assert_eq!(
        server.span.flags & (HAS_IS_REMOTE | IS_REMOTE),
        HAS_IS_REMOTE | IS_REMOTE,
        "the parent is remote"
    );
    let start = nanos(request.start_time);
    assert_eq!(server.span.start_time_unix_nano, start);
    assert_eq!(server.span.end_time_unix_nano, start + 10_000_000);
    for (key, want) in [
        ("mcp.method.name", "tools/call"),
        ("gen_ai.tool.name", "get_weather"),
        ("gen_ai.operation.name", "execute_tool"),
        ("jsonrpc.request.id", "7"),
        ("mcp.protocol.version", "2025-06-18"),
        ("http.request.method", "POST"),
        ("http.route", "/mcp"),
        ("url.path", "/mcp"),
        ("url.scheme", "https"),
        ("http.response.status_code", "200"),
        ("client.address", "127.0.0.1"),
        ("client.port", "50123"),
        ("mcp_edge.request_id", "req-1"),
    ] {
        assert_eq!(server.attr(key).as_deref(), Some(want), "server span {key}");
    }
    assert_eq!(server.attr("gen_ai.prompt.name"), None);
    assert_eq!(server.attr("error.type"), None);
    assert_ne!(
        server.span.status.as_ref().map_or(0, |s| s.code),
        STATUS_ERROR
    );

    let children = [
        ("authenticate", KIND_INTERNAL, 1, 2),
        ("authorize", KIND_INTERNAL, 2, 3),
        ("POST upstream", KIND_CLIENT, 3, 8),
    ];
    for (name, kind, from, to) in children {
        let c = named(spans, name);
        assert_eq!(c.span.kind, kind, "{name}");
        assert_eq!(c.span.parent_span_id, request.server_span_id, "{name}");
        assert_eq!(
            c.span.flags & (HAS_IS_REMOTE | IS_REMOTE),
            HAS_IS_REMOTE,
            "{name}: a local parent"
        );
        assert_eq!(
            c.span.start_time_unix_nano,
            start + from * 1_000_000,
            "{name}"
        );
        assert_eq!(c.span.end_time_unix_nano, start + to * 1_000_000, "{name}");
    }
    let up = named(spans, "POST upstream");
    assert_eq!(
        up.span.span_id, UPSTREAM_SPAN,
        "the id that went upstream in traceparent"
    );
    for (key, want) in [
        ("server.address", "127.0.0.1"),
        ("server.port", "9000"),
        ("url.full", "http://127.0.0.1:9000/mcp"),
        ("http.request.method", "POST"),
        ("http.response.status_code", "200"),
    ] {
        assert_eq!(up.attr(key).as_deref(), Some(want), "upstream span {key}");
    }
}

#[tokio::test]
async fn spans_reach_an_http_collector_with_ids_parentage_and_attributes() {
    support::init();
    let collector = Collector::http().await;
    let sink = http_sink(&collector);
    let request = tool_call();
    assert!(sink.sample(&request.context), "the caller sampled it");
    sink.export(request.clone());
    sink.flush().await.expect("flush");
    let spans = collector.wait_for(4, Duration::from_secs(5)).await;
    assert_tool_call(&spans, &request);
    let headers = collector.headers();
    assert_eq!(
        headers[0].get("x-api-key").map(|v| v.as_bytes()),
        Some(&b"k%1"[..]),
        "a file header arrives as written, `%` included"
    );
    sink.shutdown().await.expect("shutdown");
    collector.stop().await;
}

#[tokio::test]
async fn spans_reach_a_grpc_collector() {
    support::init();
    let collector = Collector::grpc().await;
    let sink =
        Arc::new(OtlpSink::new(&settings(collector.endpoint(), OtlpProtocol::Grpc)).expect("sink"));
    let request = tool_call();
    sink.export(request.clone());
    // Shutdown sends what is queued: no flush needed first.
    sink.shutdown().await.expect("shutdown");
    let spans = collector.wait_for(4, Duration::from_secs(5)).await;
    assert_tool_call(&spans, &request);
    assert_eq!(
        collector.headers()[0]
            .get("x-api-key")
            .map(|v| v.as_bytes()),
        Some(&b"k%1"[..]),
        "file headers go as gRPC metadata"
    );
    collector.stop().await;
}

#[tokio::test]
async fn refusals_prompts_and_plain_http_requests_are_named_and_marked() {
    support::init();
    let collector = Collector::http().await;
    let sink = http_sink(&collector);
    // Refused by the policy: the server span and `authorize` carry the refusal.
    let mut refused = RequestSpans::new(
        TraceContext::root(),
        http::Method::POST,
        "/mcp",
        "[::1]:4000".parse().expect("addr"),
        "req-2",
    );
    let t0 = refused.started;
    refused.policy = Some(Phase {
        start: t0,
        end: t0 + ms(1),
        error: Some("policy_denied"),
    });
    refused.mcp_method = Some("tools/call".to_owned());
    refused.tool = Some("x".repeat(1000));
    refused.status = 403;
    refused.error_type = Some("policy_denied".to_owned());
    refused.ended = Some(t0 + ms(2));
    sink.export(refused.clone());
    // A prompt.
    let mut prompt = refused.clone();
    prompt.server_span_id = [9; 8];
    prompt.policy = None;
    prompt.mcp_method = Some("prompts/get".to_owned());
    prompt.tool = Some("summary".to_owned());
    prompt.status = 200;
    prompt.error_type = None;
    sink.export(prompt);
    // Not an MCP call: a GET event stream on a route.
    let mut get = refused.clone();
    get.server_span_id = [10; 8];
    get.http_method = http::Method::GET;
    get.route = Some(Arc::from("/mcp"));
    get.policy = None;
    get.mcp_method = None;
    get.tool = None;
    get.error_type = None;
    get.status = 200;
    sink.export(get);
    sink.flush().await.expect("flush");
    let spans = collector.wait_for(4, Duration::from_secs(5)).await;

    let server = spans
        .iter()
        .find(|s| s.span.span_id == refused.server_span_id)
        .expect("refused server span");
    assert!(server.span.parent_span_id.is_empty(), "a root span");
    assert_eq!(
        server.span.flags & (HAS_IS_REMOTE | IS_REMOTE),
        HAS_IS_REMOTE
    );
    assert_eq!(server.attr("error.type").as_deref(), Some("policy_denied"));
    assert_eq!(
        server.attr("http.response.status_code").as_deref(),
        Some("403")
    );
    assert_eq!(server.attr("client.address").as_deref(), Some("::1"));
    assert_eq!(
        server.span.status.as_ref().map(|s| s.code),
        Some(STATUS_ERROR)
    );
    let tool = server.attr("gen_ai.tool.name").expect("tool name");
    assert_eq!(tool.len(), 256, "a client's long name is clipped");
    assert_eq!(server.name(), format!("tools/call {tool}"));
    let authorize = named(&spans, "authorize");
    assert_eq!(
        authorize.attr("error.type").as_deref(),
        Some("policy_denied")
    );
    assert_eq!(
        authorize.span.status.as_ref().map(|s| s.code),
        Some(STATUS_ERROR)
    );

    let p = named(&spans, "prompts/get summary");
    assert_eq!(p.attr("gen_ai.prompt.name").as_deref(), Some("summary"));
    assert_eq!(p.attr("gen_ai.tool.name"), None);
    let g = named(&spans, "GET /mcp");
    assert_eq!(g.attr("mcp.method.name"), None);
    sink.shutdown().await.expect("shutdown");
    collector.stop().await;
}

#[tokio::test]
async fn the_sampler_follows_the_caller_and_the_ratio() {
    support::init();
    let with = |parent_based, ratio| {
        let mut s = settings(
            "http://127.0.0.1:9/v1/traces".to_owned(),
            OtlpProtocol::HttpProtobuf,
        );
        s.sampling = Sampling {
            parent_based,
            ratio,
        };
        OtlpSink::new(&s).expect("sink")
    };
    let sampled = TraceContext::parse(CALLER).expect("valid");
    let unsampled = TraceContext::parse(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")
        .expect("valid");
    let none = with(true, 0.0);
    assert!(none.sample(&sampled), "a sampled caller is followed");
    assert!(!none.sample(&unsampled));
    assert!(!none.sample(&TraceContext::root()));
    let all = with(true, 1.0);
    assert!(!all.sample(&unsampled), "an unsampled caller is followed");
    assert!(all.sample(&TraceContext::root()));
    let always = with(false, 1.0);
    assert!(
        always.sample(&unsampled),
        "not parent based: the caller is ignored"
    );
    // A quarter of new traces, decided by trace id.
    let quarter = with(true, 0.25);
    let kept = (0..4000)
        .filter(|_| quarter.sample(&TraceContext::root()))
        .count();
    assert!((800..1200).contains(&kept), "{kept} of 4000");
    let ctx = TraceContext::root();
    let first = quarter.sample(&ctx);
    assert!(
        (0..10).all(|_| quarter.sample(&ctx) == first),
        "deterministic"
    );
}

/// A collector that is not there: export never blocks a request, the queue is bounded, and a
/// stop waits at most the export timeout (plus a second) for it.
#[tokio::test]
async fn a_dead_collector_costs_requests_nothing() {
    support::init();
    // A port nothing listens on any more.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = dead.local_addr().expect("addr").port();
    drop(dead);
    for protocol in [OtlpProtocol::HttpProtobuf, OtlpProtocol::Grpc] {
        let endpoint = match protocol {
            OtlpProtocol::HttpProtobuf => format!("http://127.0.0.1:{port}/v1/traces"),
            OtlpProtocol::Grpc => format!("http://127.0.0.1:{port}"),
        };
        let mut s = settings(endpoint, protocol);
        s.timeout = Duration::from_secs(1);
        let sink = Arc::new(OtlpSink::new(&s).expect("a dead collector is no start error"));
        let request = tool_call();
        let began = Instant::now();
        // Twice what the queue holds.
        for _ in 0..(MAX_QUEUED_SPANS / 2) {
            sink.export(request.clone());
        }
        let took = began.elapsed();
        assert!(
            took < Duration::from_secs(2),
            "{protocol:?}: {} exports took {took:?}",
            MAX_QUEUED_SPANS / 2
        );
        let began = Instant::now();
        let _ = sink.shutdown().await;
        let took = began.elapsed();
        assert!(
            took < Duration::from_secs(4),
            "{protocol:?}: stop waited {took:?}"
        );
        // Every span is accounted for: dropped on the full queue, or lost with its export.
        let stats = sink.stats();
        assert_eq!(stats.exported, 0, "{protocol:?}");
        assert!(
            stats.dropped >= MAX_QUEUED_SPANS as u64 / 2,
            "{protocol:?}: {stats:?}"
        );
        assert_eq!(
            stats.dropped + stats.failed,
            2 * MAX_QUEUED_SPANS as u64,
            "{protocol:?}: {stats:?}"
        );
    }
}

/// A collector that says "later" (HTTP 503 and 429, gRPC UNAVAILABLE) gets the same export
/// again after a backoff; one that refuses the data (HTTP 400, gRPC INVALID_ARGUMENT) does
/// not, and its spans are counted as failed; spans a collector rejects in `partial_success`
/// are counted as failed too.
#[tokio::test]
async fn transient_refusals_are_retried_and_rejections_counted() {
    support::init();
    for protocol in [OtlpProtocol::HttpProtobuf, OtlpProtocol::Grpc] {
        let grpc = protocol == OtlpProtocol::Grpc;
        let collector = if grpc {
            Collector::grpc().await
        } else {
            Collector::http().await
        };
        let endpoint = if grpc {
            collector.endpoint()
        } else {
            format!("{}/v1/traces", collector.endpoint())
        };
        let sink = Arc::new(OtlpSink::new(&settings(endpoint, protocol)).expect("sink"));
        let request = tool_call();

        let later = if grpc {
            vec![
                Answer::Grpc(tonic::Code::Unavailable),
                Answer::Grpc(tonic::Code::ResourceExhausted),
            ]
        } else {
            vec![
                Answer::Status(http::StatusCode::SERVICE_UNAVAILABLE),
                Answer::Status(http::StatusCode::TOO_MANY_REQUESTS),
            ]
        };
        collector.script(later);
        sink.export(request.clone());
        sink.flush().await.expect("lands on the third try");
        assert_eq!(collector.attempts(), 3, "{protocol:?}");
        assert_tool_call(
            &collector.wait_for(4, Duration::from_secs(5)).await,
            &request,
        );
        assert_eq!(
            sink.stats(),
            SpanCounts {
                exported: 4,
                dropped: 0,
                failed: 0
            }
        );

        collector.script([if grpc {
            Answer::Grpc(tonic::Code::InvalidArgument)
        } else {
            Answer::Status(http::StatusCode::BAD_REQUEST)
        }]);
        sink.export(request.clone());
        let err = sink.flush().await.expect_err("a refusal fails the export");
        let text = err.to_string();
        assert!(
            text.contains(if grpc { "gRPC status 3" } else { "400" }),
            "{protocol:?}: {text}"
        );
        assert_eq!(collector.attempts(), 4, "{protocol:?}: not retried");
        assert_eq!(sink.stats().failed, 4);

        collector.script([Answer::Partial(1, "one span too old")]);
        sink.export(request.clone());
        sink.flush().await.expect("a partial success is a success");
        assert_eq!(
            sink.stats(),
            SpanCounts {
                exported: 7,
                dropped: 0,
                failed: 5
            },
            "{protocol:?}"
        );
        sink.shutdown().await.expect("shutdown");
        collector.stop().await;
    }
}

/// A full batch goes out at once, without waiting for the batch delay.
#[tokio::test]
async fn a_full_batch_is_sent_without_waiting() {
    support::init();
    let collector = Collector::http().await;
    let sink = http_sink(&collector);
    let request = tool_call();
    let batch = mcp_edge::telemetry::otel::MAX_BATCH;
    for _ in 0..batch / 4 {
        sink.export(request.clone());
    }
    // Well under the batch delay (2 s).
    let spans = collector.wait_for(batch, Duration::from_millis(1500)).await;
    assert_eq!(spans.len(), batch);
    assert_eq!(collector.attempts(), 1, "one export request for the batch");
    sink.shutdown().await.expect("shutdown");
    collector.stop().await;
}

/// `mcp-edge check` prints the export settings, variables applied, header values never.
#[test]
fn check_prints_the_settings_without_header_values() {
    let fx = support::cli::Fixture::with_dev_ca("otel check CA");
    let config = fx.write(
        "edge.toml",
        r#"
[listener]
bind = "127.0.0.1:8443"
public_url = "https://localhost:8443"
[listener.tls]
cert = "server.pem"
key = "server.key"

[telemetry.otlp]
endpoint = "http://127.0.0.1:4318"
sample_ratio = 0.5
headers = { x-api-key = "file-s3cret" }

[[routes]]
path = "/mcp"
upstream = "http://127.0.0.1:9000/mcp"
"#,
    );
    let run: support::cli::Run = support::cli::command()
        .arg("check")
        .arg("--config")
        .arg(&config)
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_SDK_DISABLED")
        .env("OTEL_SERVICE_NAME", "edge-eu")
        .env("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "tenant=env-s3cret")
        .output()
        .expect("run mcp-edge")
        .into();
    assert_eq!(run.status, Some(0), "{}", run.stderr);
    let line = run
        .stdout
        .lines()
        .find(|l| l.starts_with("telemetry: "))
        .unwrap_or_else(|| panic!("no telemetry line: {}", run.stdout));
    assert_eq!(
        line,
        "telemetry: OTLP http/protobuf to http://127.0.0.1:4318/v1/traces (telemetry.otlp.endpoint), \
         sampler parentbased_traceidratio 0.5, service.name \"edge-eu\", timeout 10s, \
         headers [x-api-key=<redacted> (file), tenant=<redacted> (environment)]"
    );
    assert!(!run.stdout.contains("s3cret") && !run.stderr.contains("s3cret"));

    // A bad variable is a config error (exit 64) naming it.
    let run: support::cli::Run = support::cli::command()
        .arg("check")
        .arg("--config")
        .arg(&config)
        .env("OTEL_TRACES_SAMPLER", "sometimes")
        .output()
        .expect("run mcp-edge")
        .into();
    assert_eq!(
        run.status,
        Some(support::cli::EXIT_CONFIG),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr
            .contains("environment variable `OTEL_TRACES_SAMPLER`"),
        "{}",
        run.stderr
    );
}

/// A reload that changes `[telemetry]` applies the rest and says a restart is needed.
#[tokio::test]
async fn a_telemetry_change_needs_a_restart() {
    let collector = Collector::http().await;
    let pki = support::Pki::new();
    let text = |ratio: &str| {
        format!(
            "{}\n[telemetry.otlp]\nendpoint = \"{}\"\nsample_ratio = {ratio}\n{}",
            support::listener_toml(&pki),
            collector.endpoint(),
            support::route("/mcp", "http://127.0.0.1:9/mcp"),
        )
    };
    let path = pki.dir.path().join("edge.toml");
    std::fs::write(&path, text("1.0")).expect("write config");
    let cfg = mcp_edge::config::load(&path).expect("valid config");
    let running = mcp_edge::app::start(cfg).await.expect("proxy starts");
    std::fs::write(&path, text("0.5")).expect("write config");
    let outcome = running.reloader.reload_config().await.expect("reloaded");
    assert_eq!(outcome.needs_restart, ["[telemetry]"], "{outcome}");
    assert!(
        outcome
            .to_string()
            .contains("restart needed for [telemetry]"),
        "{outcome}"
    );
    running.begin_shutdown();
    running.wait().await;
    collector.stop().await;
}

// ── Through the proxy ───────────────────────────────────────────────────────────────────────

/// A JSON-RPC `tools/call` of `tool`; `meta` goes into `params._meta`.
fn call(id: u64, tool: &str, meta: serde_json::Value) -> String {
    serde_json::json!({
        "jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": tool, "arguments": {}, "_meta": meta}
    })
    .to_string()
}

/// A proxy with `[telemetry.otlp]` (`otlp` lines) exporting to `collector`, one token route
/// to `backend` whose policy allows only `get_weather`.
async fn traced_proxy(
    collector: &Collector,
    protocol: &str,
    otlp: &str,
    backend: &support::raw::RawBackend,
    idp: &support::idp::Idp,
) -> support::TestProxy {
    let pki = support::Pki::new();
    let issuer = idp.issuer_toml(pki.dir.path());
    support::start_proxy_with(
        pki,
        &format!(
            "[telemetry.otlp]\nendpoint = \"{}\"\nprotocol = \"{protocol}\"\n{otlp}\n{issuer}{}\
             [routes.auth]\nrequire = \"token\"\n\
             [routes.policy]\n[[routes.policy.rules]]\nname = \"weather\"\nallow_tools = [\"get_weather\"]\n",
            collector.endpoint(),
            support::route("/mcp", &format!("http://{}/mcp", backend.addr)),
        ),
    )
    .await
}

async fn post(
    proxy: &support::TestProxy,
    token: &str,
    traceparent: Option<&str>,
    body: String,
) -> reqwest::Response {
    let mut req = proxy
        .client(false)
        .post(proxy.url("/mcp"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    if let Some(tp) = traceparent {
        req = req.header("traceparent", tp);
    }
    req.body(body)
        .send()
        .await
        .expect("request reaches the proxy")
}

/// The `traceparent` the backend received: (trace id, parent span id, flags), hex.
fn upstream_traceparent(r: &support::recording::Received) -> (String, String, String) {
    let tp = r
        .headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .expect("the backend gets traceparent");
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "{tp}");
    assert_eq!(parts[0], "00", "{tp}");
    (
        parts[1].to_owned(),
        parts[2].to_owned(),
        parts[3].to_owned(),
    )
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

/// The spans of trace `trace_id` (hex).
fn trace<'a>(spans: &'a [Received], trace_id: &str) -> Vec<&'a Received> {
    spans
        .iter()
        .filter(|s| hex(&s.span.trace_id) == trace_id)
        .collect()
}

fn by_name<'a>(spans: &[&'a Received], name: &str) -> &'a Received {
    spans
        .iter()
        .find(|s| s.name() == name)
        .copied()
        .unwrap_or_else(|| {
            panic!(
                "no span {name:?} among {:?}",
                spans.iter().map(|s| s.name()).collect::<Vec<_>>()
            )
        })
}

/// Parentage within one traced request: the server span under `caller`, the phases and the
/// upstream call under it, the upstream span being the parent the backend was given.
fn assert_request_trace(spans: &[&Received], caller: &str, upstream_parent: Option<&str>) {
    let server = by_name(spans, "tools/call get_weather");
    assert_eq!(server.span.kind, KIND_SERVER);
    assert_eq!(
        hex(&server.span.parent_span_id),
        caller,
        "the caller's span is the parent"
    );
    assert_eq!(
        server.attr("mcp.method.name").as_deref(),
        Some("tools/call")
    );
    assert_eq!(
        server.attr("gen_ai.tool.name").as_deref(),
        Some("get_weather")
    );
    assert_eq!(server.attr("http.route").as_deref(), Some("/mcp"));
    assert_eq!(
        server.attr("http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(server.attr("client.address").as_deref(), Some("127.0.0.1"));
    assert!(server.attr("mcp_edge.request_id").is_some());
    assert!(server.attr("jsonrpc.request.id").is_some());
    for name in ["authenticate", "authorize", "POST upstream"] {
        let child = by_name(spans, name);
        assert_eq!(child.span.parent_span_id, server.span.span_id, "{name}");
        assert!(
            child.span.start_time_unix_nano >= server.span.start_time_unix_nano
                && child.span.end_time_unix_nano <= server.span.end_time_unix_nano,
            "{name} lies within the request"
        );
    }
    let up = by_name(spans, "POST upstream");
    assert_eq!(up.span.kind, KIND_CLIENT);
    assert_eq!(up.attr("http.response.status_code").as_deref(), Some("200"));
    assert_eq!(up.attr("server.address").as_deref(), Some("127.0.0.1"));
    if let Some(p) = upstream_parent {
        assert_eq!(
            hex(&up.span.span_id),
            p,
            "the backend's parent is the upstream span"
        );
    }
}

fn collector_for(protocol: &str) -> impl std::future::Future<Output = Collector> {
    let grpc = protocol == "grpc";
    async move {
        if grpc {
            Collector::grpc().await
        } else {
            Collector::http().await
        }
    }
}

/// A `tools/call` through the proxy with a sampled caller's `traceparent` header and one the
/// policy refuses: the spans' parentage, the `traceparent` the backend got, the refusal's
/// `error.type`.
async fn traced_calls(protocol: &str) {
    support::init();
    let collector = collector_for(protocol).await;
    let (backend, mut seen) = support::recording::json_result().await;
    let idp = support::idp::Idp::new();
    let proxy = traced_proxy(&collector, protocol, "", &backend, &idp).await;
    let token = idp.token("/mcp", serde_json::json!({}));

    // 1. A sampled caller's `traceparent` header.
    let t1 = "0af7651916cd43dd8448eb211c80319c";
    let p1 = "b7ad6b7169203331";
    let r = post(
        &proxy,
        &token,
        Some(&format!("00-{t1}-{p1}-01")),
        call(1, "get_weather", serde_json::json!({})),
    )
    .await;
    assert_eq!(r.status(), 200);
    let _ = r.bytes().await;
    let (trace_id, parent1, flags) = upstream_traceparent(&seen.recv().await.expect("forwarded"));
    assert_eq!(trace_id, t1, "the caller's trace goes on upstream");
    assert_ne!(parent1, p1, "upstream, the proxy's span is the parent");
    assert_eq!(flags, "01");

    // 2. Refused by the policy.
    let t3 = "11111111111111111111111111111111";
    let r = post(
        &proxy,
        &token,
        Some(&format!("00-{t3}-{p1}-01")),
        call(3, "delete_everything", serde_json::json!({})),
    )
    .await;
    assert_eq!(r.status(), 403);
    let _ = r.bytes().await;

    // Stopping flushes what is queued.
    let monitor = proxy.running.as_ref().expect("running").monitor.clone();
    proxy.stop().await;
    let spans = collector.spans();
    let text = monitor.metrics();
    let exported = format!(
        "mcp_edge_trace_spans_total{{result=\"exported\"}} {}",
        spans.len()
    );
    assert!(text.contains(&exported), "{exported} in:\n{text}");
    assert!(text.contains("mcp_edge_trace_spans_total{result=\"dropped\"} 0"));

    let one = trace(&spans, t1);
    assert_eq!(one.len(), 4, "{:?}", names(&spans));
    assert_request_trace(&one, p1, Some(&parent1));
    let three = trace(&spans, t3);
    let refused = by_name(&three, "tools/call delete_everything");
    assert_eq!(refused.span.kind, KIND_SERVER);
    assert_eq!(hex(&refused.span.parent_span_id), p1);
    assert_eq!(refused.attr("error.type").as_deref(), Some("policy_denied"));
    assert_eq!(
        refused.attr("http.response.status_code").as_deref(),
        Some("403")
    );
    assert_eq!(
        refused.span.status.as_ref().map(|s| s.code),
        Some(STATUS_ERROR)
    );
    let authorize = by_name(&three, "authorize");
    assert_eq!(
        authorize.attr("error.type").as_deref(),
        Some("policy_denied")
    );
    assert!(
        three.iter().all(|s| s.name() != "POST upstream"),
        "a refused call never went upstream"
    );
    assert_eq!(
        spans.len(),
        one.len() + three.len(),
        "nothing else was recorded: {:?}",
        names(&spans)
    );
    collector.stop().await;
}

#[tokio::test]
async fn calls_through_the_proxy_are_traced_over_http() {
    traced_calls("http/protobuf").await;
}

#[tokio::test]
async fn calls_through_the_proxy_are_traced_over_grpc() {
    traced_calls("grpc").await;
}

/// `sample_ratio = 0`: an unsampled caller and a request with no context record nothing; the
/// unsampled caller's context goes upstream unchanged, and a trace nobody records and nobody
/// started sends none.
#[tokio::test]
async fn ratio_zero_records_no_unsampled_trace() {
    support::init();
    let collector = Collector::http().await;
    let (backend, mut seen) = support::recording::json_result().await;
    let idp = support::idp::Idp::new();
    let proxy = traced_proxy(
        &collector,
        "http/protobuf",
        "sample_ratio = 0.0",
        &backend,
        &idp,
    )
    .await;
    let token = idp.token("/mcp", serde_json::json!({}));
    let (t, p) = ("22222222222222222222222222222222", "b7ad6b7169203331");
    for tp in [Some(format!("00-{t}-{p}-00")), None] {
        let r = post(
            &proxy,
            &token,
            tp.as_deref(),
            call(4, "get_weather", serde_json::json!({})),
        )
        .await;
        assert_eq!(r.status(), 200);
        let _ = r.bytes().await;
        let got = seen.recv().await.expect("forwarded");
        if tp.is_some() {
            assert_eq!(
                upstream_traceparent(&got),
                (t.to_owned(), p.to_owned(), "00".to_owned()),
                "an unsampled trace goes on upstream as the caller sent it"
            );
        } else {
            assert!(got.headers.get("traceparent").is_none());
        }
    }
    proxy.stop().await;
    assert!(
        collector.spans().is_empty(),
        "{:?}",
        names(&collector.spans())
    );
    collector.stop().await;
}

/// A sampled caller that can only use `params._meta.traceparent` (no header): that context is
/// the parent, with every span and attribute the header gives, whatever the ratio (the
/// caller's decision is kept, as with the header).
#[tokio::test]
async fn meta_traceparent_is_the_parent() {
    support::init();
    for ratio in ["1.0", "0.0"] {
        let collector = Collector::http().await;
        let (backend, mut seen) = support::recording::json_result().await;
        let idp = support::idp::Idp::new();
        let proxy = traced_proxy(
            &collector,
            "http/protobuf",
            &format!("sample_ratio = {ratio}"),
            &backend,
            &idp,
        )
        .await;
        let token = idp.token("/mcp", serde_json::json!({}));
        let (t, p) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
        let r = post(
            &proxy,
            &token,
            None,
            call(
                5,
                "get_weather",
                serde_json::json!({"traceparent": format!("00-{t}-{p}-01")}),
            ),
        )
        .await;
        assert_eq!(r.status(), 200);
        let _ = r.bytes().await;
        let (trace_id, parent, flags) =
            upstream_traceparent(&seen.recv().await.expect("forwarded"));
        assert_eq!(
            trace_id, t,
            "ratio {ratio}: the _meta trace goes on upstream"
        );
        assert_eq!(flags, "01");
        proxy.stop().await;
        let spans = collector.spans();
        let traced = trace(&spans, t);
        assert_eq!(traced.len(), 4, "ratio {ratio}: {:?}", names(&spans));
        assert_request_trace(&traced, p, Some(&parent));
        assert_eq!(spans.len(), 4, "ratio {ratio}: {:?}", names(&spans));
        collector.stop().await;
    }
}
