//! OTLP export of request spans (`--features otel`, `[telemetry.otlp]`; docs/tracing.md).
//!
//! [`OtlpSink`] is the [`SpanSink`] the proxy hands each sampled request's [`RequestSpans`]
//! to when its answer ends. The spans are written straight into the SDK's `SpanData` rather
//! than opened through a tracer: their ids must be the ones already chosen (the upstream
//! call's id went upstream in `traceparent` while it ran) and their times are the recorded
//! ones, and the SDK's tracer picks its own ids. The SDK's batch span processor then queues
//! them (bounded: a full queue drops spans, it never blocks a request) and its own thread
//! exports them with the OTLP exporter, over HTTP/protobuf or gRPC.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceContextExt as _, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{Context, InstrumentationScope, KeyValue};
use opentelemetry_otlp::{
    Protocol, WithExportConfig as _, WithHttpConfig as _, WithTonicConfig as _,
};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SamplingDecision, ShouldSample as _, SpanData,
    SpanEvents, SpanExporter as _, SpanLinks, SpanProcessor as _,
};

use crate::config::{OtlpProtocol, OtlpSettings, Sampling};
use crate::telemetry::trace::{Phase, RequestSpans, SpanSink, TraceContext, UpstreamCall};

/// Spans held for export at most: with up to four spans a request, about 500 requests'
/// worth. Beyond it (the collector is down or slow) new spans are dropped.
pub const MAX_QUEUED_SPANS: usize = 2048;
/// Spans sent in one export request.
const MAX_BATCH: usize = 512;
/// How long a span may wait for a batch to fill before it is sent anyway.
const BATCH_DELAY: Duration = Duration::from_secs(2);
/// The most of a client-supplied string (tool name, JSON-RPC id, path) put in a span: the
/// body may be up to `max_request_body_bytes`, and a span is no place for a megabyte.
const MAX_CLIENT_VALUE: usize = 256;

/// Why the exporter could not be set up or flushed.
#[derive(Debug, thiserror::Error)]
pub enum OtelError {
    /// The OTLP exporter refused its settings.
    #[error("telemetry.otlp: cannot set up the {protocol} exporter for {endpoint}: {error}")]
    Exporter {
        /// `http/protobuf` or `grpc`.
        protocol: &'static str,
        /// The collector URL (validated: no credentials in it).
        endpoint: String,
        /// The exporter's message (in the text, not chained, so it is printed once).
        error: String,
    },
    /// gRPC export was set up outside a Tokio runtime.
    #[error("telemetry.otlp: the gRPC exporter must be built inside the Tokio runtime")]
    NoRuntime,
    /// A flush or the final export at shutdown did not complete.
    #[error("telemetry.otlp: {what} did not complete: {error}")]
    Flush {
        /// `flush` or `shutdown`.
        what: &'static str,
        /// Why.
        error: String,
    },
}

/// Exports sampled requests' spans over OTLP.
pub struct OtlpSink {
    processor: BatchSpanProcessor,
    sampler: Sampler,
    scope: InstrumentationScope,
    timeout: Duration,
}

impl std::fmt::Debug for OtlpSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpSink")
            .field("sampler", &self.sampler)
            .finish_non_exhaustive()
    }
}

impl OtlpSink {
    /// A sink exporting to the collector of `settings`. Connects lazily: a collector that is
    /// down at start costs dropped spans, not a failed start. gRPC needs to be called inside
    /// the Tokio runtime (its connection runs there).
    pub fn new(settings: &OtlpSettings) -> Result<Self, OtelError> {
        let fail = |e: opentelemetry_otlp::ExporterBuildError| OtelError::Exporter {
            protocol: settings.protocol.as_str(),
            endpoint: settings.endpoint.clone(),
            error: e.to_string(),
        };
        // Headers from OTEL_EXPORTER_OTLP_(TRACES_)HEADERS are left out: the exporter reads
        // those variables itself, and gRPC metadata given a name twice sends both values.
        let file_headers = settings.headers.iter().filter(|h| !h.from_env);
        let mut exporter = match settings.protocol {
            OtlpProtocol::HttpProtobuf => {
                // The HTTP exporter %-decodes the values it is given: escape `%` so a
                // literal one survives.
                let headers: HashMap<String, String> = file_headers
                    .map(|h| (h.name.clone(), h.value.replace('%', "%25")))
                    .collect();
                opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_protocol(Protocol::HttpBinary)
                    .with_endpoint(settings.endpoint.clone())
                    .with_timeout(settings.timeout)
                    .with_headers(headers)
                    .build()
                    .map_err(fail)?
            }
            OtlpProtocol::Grpc => {
                if tokio::runtime::Handle::try_current().is_err() {
                    return Err(OtelError::NoRuntime);
                }
                let mut metadata = http::HeaderMap::new();
                for h in file_headers {
                    // Validated as a header name and value when the config was loaded.
                    if let (Ok(n), Ok(v)) = (
                        http::HeaderName::from_bytes(h.name.as_bytes()),
                        http::HeaderValue::from_str(&h.value),
                    ) {
                        metadata.insert(n, v);
                    }
                }
                let mut builder = opentelemetry_otlp::SpanExporter::builder()
                    .with_tonic()
                    .with_protocol(Protocol::Grpc)
                    .with_endpoint(settings.endpoint.clone())
                    .with_timeout(settings.timeout)
                    .with_metadata(
                        opentelemetry_otlp::tonic_types::metadata::MetadataMap::from_headers(
                            metadata,
                        ),
                    );
                if settings.endpoint.starts_with("https://") {
                    // Left alone, the exporter would set up TLS with no trust anchors.
                    builder = builder.with_tls_config(
                        opentelemetry_otlp::tonic_types::transport::ClientTlsConfig::new()
                            .with_native_roots(),
                    );
                }
                builder.build().map_err(fail)?
            }
        };
        exporter.set_resource(
            &Resource::builder_empty()
                .with_service_name(settings.service_name.clone())
                .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
                .build(),
        );
        // Every value set here, so the `OTEL_BSP_*` variables the builder reads are not.
        let batch = BatchConfigBuilder::default()
            .with_max_queue_size(MAX_QUEUED_SPANS)
            .with_max_export_batch_size(MAX_BATCH)
            .with_scheduled_delay(BATCH_DELAY)
            .build();
        Ok(OtlpSink {
            processor: BatchSpanProcessor::builder(exporter)
                .with_batch_config(batch)
                .build(),
            sampler: sampler(settings.sampling),
            scope: InstrumentationScope::builder("mcp-edge")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
            timeout: settings.timeout,
        })
    }

    /// Exports everything queued now (waits up to 5 seconds).
    pub async fn flush(self: &Arc<Self>) -> Result<(), OtelError> {
        let me = self.clone();
        // The processor waits on its thread with a blocking call; with gRPC that thread
        // waits on this runtime in turn, so the wait must not hold a runtime thread.
        let done = tokio::task::spawn_blocking(move || me.processor.force_flush()).await;
        flatten("flush", done)
    }

    /// Exports what is queued (one more export, up to the configured timeout) and stops
    /// the exporter; spans handed in afterwards are dropped.
    pub async fn shutdown(self: &Arc<Self>) -> Result<(), OtelError> {
        let me = self.clone();
        // A second for the processor's own hand-over beyond the export's timeout.
        let wait = self.timeout + Duration::from_secs(1);
        let done =
            tokio::task::spawn_blocking(move || me.processor.shutdown_with_timeout(wait)).await;
        flatten("shutdown", done)
    }
}

fn flatten(
    what: &'static str,
    done: Result<opentelemetry_sdk::error::OTelSdkResult, tokio::task::JoinError>,
) -> Result<(), OtelError> {
    match done {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(OtelError::Flush {
            what,
            error: e.to_string(),
        }),
        Err(e) => Err(OtelError::Flush {
            what,
            error: e.to_string(),
        }),
    }
}

/// The SDK sampler for `s`: the same decisions (by trace id, so every service that samples
/// by ratio keeps or drops a trace alike) the SDK makes for its own spans.
fn sampler(s: Sampling) -> Sampler {
    let root = if s.ratio >= 1.0 {
        Sampler::AlwaysOn
    } else if s.ratio <= 0.0 {
        Sampler::AlwaysOff
    } else {
        Sampler::TraceIdRatioBased(s.ratio)
    };
    if s.parent_based {
        Sampler::ParentBased(Box::new(root))
    } else {
        root
    }
}

impl SpanSink for OtlpSink {
    fn sample(&self, context: &TraceContext) -> bool {
        let trace_id = TraceId::from_bytes(context.trace_id);
        let parent = match context.parent_id {
            Some(p) => Context::new().with_remote_span_context(SpanContext::new(
                trace_id,
                SpanId::from_bytes(p),
                TraceFlags::new(context.flags),
                true,
                TraceState::NONE,
            )),
            None => Context::new(),
        };
        let result =
            self.sampler
                .should_sample(Some(&parent), trace_id, "", &SpanKind::Server, &[], &[]);
        result.decision == SamplingDecision::RecordAndSample
    }

    fn export(&self, spans: RequestSpans) {
        // `on_end` only queues (and drops when the queue is full): it never blocks.
        for span in span_data(&spans, &self.scope) {
            self.processor.on_end(span);
        }
    }
}

/// The spans of one request: the server span, then its children.
fn span_data(s: &RequestSpans, scope: &InstrumentationScope) -> Vec<SpanData> {
    let trace_id = TraceId::from_bytes(s.context.trace_id);
    let server_id = SpanId::from_bytes(s.server_span_id);
    let end = s.ended.map_or_else(SystemTime::now, |e| s.wall(e));
    let span = |id: SpanId, parent: SpanId, remote_parent: bool| SpanData {
        // The SDK's spans are marked sampled when recorded; so are these (they were sampled).
        span_context: SpanContext::new(trace_id, id, TraceFlags::SAMPLED, false, TraceState::NONE),
        parent_span_id: parent,
        parent_span_is_remote: remote_parent,
        span_kind: SpanKind::Internal,
        name: Cow::Borrowed(""),
        start_time: s.start_time,
        end_time: end,
        attributes: Vec::new(),
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: Status::Unset,
        instrumentation_scope: scope.clone(),
    };

    let mut out = Vec::with_capacity(4);
    let parent = s
        .context
        .parent_id
        .map_or(SpanId::INVALID, SpanId::from_bytes);
    let mut server = span(server_id, parent, s.context.is_remote());
    server.span_kind = SpanKind::Server;
    server.name = Cow::Owned(server_name(s));
    server.attributes = server_attributes(s);
    if let Some(e) = &s.error_type {
        server.status = Status::error(e.clone());
    }
    out.push(server);

    for (name, phase) in [("authenticate", &s.auth), ("authorize", &s.policy)] {
        if let Some(p) = phase {
            // The phases' ids are never sent anywhere, so they are drawn only now.
            let id = SpanId::from_bytes(crate::telemetry::trace::span_id());
            out.push(phase_span(span(id, server_id, false), name, p, s));
        }
    }
    if let Some(u) = &s.upstream {
        let mut up = span(SpanId::from_bytes(u.span_id), server_id, false);
        up.span_kind = SpanKind::Client;
        up.name = Cow::Owned(format!("{} upstream", s.http_method));
        up.start_time = s.wall(u.start);
        up.end_time = u.head.map_or(end, |h| s.wall(h));
        up.attributes = upstream_attributes(s, u);
        if let Some(e) = u.error {
            up.status = Status::error(e);
        }
        out.push(up);
    }
    out
}

fn phase_span(mut d: SpanData, name: &'static str, p: &Phase, s: &RequestSpans) -> SpanData {
    d.name = Cow::Borrowed(name);
    d.start_time = s.wall(p.start);
    d.end_time = s.wall(p.end);
    if let Some(e) = p.error {
        d.attributes.push(KeyValue::new("error.type", e));
        d.status = Status::error(e);
    }
    d
}

/// `{mcp.method.name} {target}` (the MCP semantic convention), the method alone when the
/// call names no tool or prompt, or `{http.request.method} {http.route}` for a request that
/// is not an MCP call.
fn server_name(s: &RequestSpans) -> String {
    match (&s.mcp_method, &s.tool) {
        (Some(m), Some(t)) => format!("{} {}", clip(m), clip(t)),
        (Some(m), None) => clip(m).to_owned(),
        (None, _) => match &s.route {
            Some(r) => format!("{} {r}", s.http_method),
            None => s.http_method.to_string(),
        },
    }
}

fn server_attributes(s: &RequestSpans) -> Vec<KeyValue> {
    let mut a = vec![
        KeyValue::new("http.request.method", s.http_method.to_string()),
        KeyValue::new("url.path", clip(&s.path).to_owned()),
        KeyValue::new("url.scheme", "https"),
        KeyValue::new("client.address", s.client.ip().to_string()),
        KeyValue::new("client.port", i64::from(s.client.port())),
        KeyValue::new("mcp_edge.request_id", s.request_id.clone()),
    ];
    if let Some(r) = &s.route {
        a.push(KeyValue::new("http.route", r.to_string()));
    }
    if s.status != 0 {
        a.push(KeyValue::new(
            "http.response.status_code",
            i64::from(s.status),
        ));
    }
    if let Some(m) = &s.mcp_method {
        a.push(KeyValue::new("mcp.method.name", clip(m).to_owned()));
        // `tool` holds the name the call carries: a tool's or a prompt's, by method.
        match (m.as_str(), &s.tool) {
            ("tools/call", Some(t)) => {
                a.push(KeyValue::new("gen_ai.operation.name", "execute_tool"));
                a.push(KeyValue::new("gen_ai.tool.name", clip(t).to_owned()));
            }
            ("prompts/get", Some(t)) => {
                a.push(KeyValue::new("gen_ai.prompt.name", clip(t).to_owned()));
            }
            _ => {}
        }
    }
    if let Some(id) = &s.jsonrpc_id {
        a.push(KeyValue::new("jsonrpc.request.id", clip(id).to_owned()));
    }
    if let Some(v) = &s.protocol_version {
        a.push(KeyValue::new("mcp.protocol.version", clip(v).to_owned()));
    }
    if let Some(e) = &s.error_type {
        a.push(KeyValue::new("error.type", e.clone()));
    }
    a
}

fn upstream_attributes(s: &RequestSpans, u: &UpstreamCall) -> Vec<KeyValue> {
    let mut a = vec![KeyValue::new(
        "http.request.method",
        s.http_method.to_string(),
    )];
    if let Some(e) = &u.endpoint {
        if let Ok(uri) = e.parse::<http::Uri>() {
            if let Some(host) = uri.host() {
                // `server.address` without the brackets of an IPv6 literal.
                let host = host.trim_start_matches('[').trim_end_matches(']');
                a.push(KeyValue::new("server.address", host.to_owned()));
            }
            let port = uri.port_u16().or(match uri.scheme_str() {
                Some("https") => Some(443),
                Some("http") => Some(80),
                _ => None,
            });
            if let Some(p) = port {
                a.push(KeyValue::new("server.port", i64::from(p)));
            }
        }
        // Configured upstream URLs carry no credentials (validation refuses user info).
        a.push(KeyValue::new("url.full", e.clone()));
    }
    if let Some(st) = u.status {
        a.push(KeyValue::new("http.response.status_code", i64::from(st)));
    }
    if let Some(e) = u.error {
        a.push(KeyValue::new("error.type", e));
    }
    a
}

/// At most [`MAX_CLIENT_VALUE`] bytes of `s`, cut at a character boundary.
fn clip(s: &str) -> &str {
    if s.len() <= MAX_CLIENT_VALUE {
        return s;
    }
    let mut end = MAX_CLIENT_VALUE;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
