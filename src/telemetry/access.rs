//! The request record: one per request, carried with the answer and written when the answer
//! has been fully sent, failed, or been abandoned by the client. Its end is the `log` phase:
//! the access-log line, the request's metrics (one place, so every request is counted once,
//! however it ended) and its spans.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::HeaderValue;

use super::trace::{Phase, RequestSpans, SpanSink, TraceContext, UpstreamCall};
use crate::metrics::labels::{self, METHOD_NONE, METHOD_SESSION_END, METHOD_STREAM};
use crate::metrics::{Op, RouteMetrics};

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Response fully sent.
    Complete,
    /// Client went away before the response was complete.
    ClientClosed,
    /// Upstream failed after the response head.
    UpstreamError,
    /// SSE stream ended after upstream silence.
    IdleTimeout,
    /// Stream ended by shutdown.
    Drained,
    /// Stream closed at `sse.max_stream_lifetime` (with `retry:`, so the client reconnects).
    Lifetime,
    /// The client stopped reading; its connection was closed after `sse.client_write_timeout`.
    ClientWriteTimeout,
    /// The proxy answered itself (see `error`).
    Refused,
}

impl Outcome {
    /// Label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Complete => "complete",
            Outcome::ClientClosed => "client_closed",
            Outcome::UpstreamError => "upstream_error",
            Outcome::IdleTimeout => "idle_timeout",
            Outcome::Drained => "drained",
            Outcome::Lifetime => "lifetime",
            Outcome::ClientWriteTimeout => "client_write_timeout",
            Outcome::Refused => "refused",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Record of one request; written once, when dropped.
pub struct AccessLog {
    start: Instant,
    request_id: HeaderValue,
    client: SocketAddr,
    method: http::Method,
    path: String,
    route: Option<Arc<str>>,
    principal: Option<String>,
    upstream: Option<String>,
    mcp_method: Option<HeaderValue>,
    tool: Option<Box<str>>,
    status: u16,
    bytes: u64,
    bytes_in: u64,
    outcome: Option<Outcome>,
    error: Option<&'static str>,
    /// Runs when the record is written (the proxy completes its audit records here).
    on_end: Option<EndHook>,
    /// Dropped with the record, when the answer ends: what the request holds until then
    /// (its concurrency slots).
    held: Option<Box<dyn std::any::Any + Send>>,
    /// The route's series (the `unmatched` ones until a route is known).
    series: Arc<RouteMetrics>,
    op: Op,
    version: u8,
    organisation: u16,
    /// Whether the POST carried a request: an MCP operation.
    operation: bool,
    upstream_sent: Option<Instant>,
    upstream_head: Option<Instant>,
    trace: TraceContext,
    /// Where spans go, when tracing is configured.
    sink: Option<Arc<dyn SpanSink>>,
    /// The spans of a sampled request: what only they need (span ids, the upstream call, the
    /// JSON-RPC id). Attributes and phase timings are kept in this record and copied in when
    /// they are exported, so a sampling decision made late (a `_meta` context) loses nothing.
    spans: Option<Box<RequestSpans>>,
    /// `authenticate` and `authorize`, timed.
    auth_phase: Option<Phase>,
    policy_phase: Option<Phase>,
    /// `MCP-Protocol-Version` as sent.
    protocol_version: Option<HeaderValue>,
    /// The span log lines made while serving the request are made in (request id, trace id).
    span: tracing::Span,
}

/// What a request's end hook learns.
#[derive(Debug, Clone, Copy)]
pub struct Ended {
    /// The upstream's status, when the answer was the upstream's (not a refusal or a 502
    /// the proxy made itself).
    pub upstream_status: Option<u16>,
    /// Time from the start of the request to its end.
    pub duration: std::time::Duration,
}

/// A callback run once when the request ends.
pub type EndHook = Box<dyn FnOnce(Ended) + Send>;

impl AccessLog {
    /// Starts a record for a request under `trace`, counted in `series` until a route is
    /// known; its spans go to `sink` if it samples the request.
    pub fn new(
        request_id: HeaderValue,
        client: SocketAddr,
        method: http::Method,
        path: &str,
        series: Arc<RouteMetrics>,
        trace: TraceContext,
        sink: Option<&Arc<dyn SpanSink>>,
    ) -> Self {
        let start = Instant::now();
        let op = Op::method(match method {
            http::Method::GET => METHOD_STREAM,
            http::Method::DELETE => METHOD_SESSION_END,
            http::Method::POST => labels::METHOD_UNKNOWN,
            _ => METHOD_NONE,
        });
        let span = tracing::info_span!(
            target: "mcp_edge::request",
            "request",
            request_id = request_id.to_str().unwrap_or("-"),
            trace_id = %trace.trace_id_hex(),
        );
        let mut log = AccessLog {
            start,
            request_id,
            client,
            method,
            path: path.to_owned(),
            route: None,
            principal: None,
            upstream: None,
            mcp_method: None,
            tool: None,
            status: 0,
            bytes: 0,
            bytes_in: 0,
            outcome: None,
            error: None,
            on_end: None,
            held: None,
            series,
            op,
            version: 0,
            organisation: 0,
            operation: false,
            upstream_sent: None,
            upstream_head: None,
            trace,
            sink: sink.cloned(),
            spans: None,
            auth_phase: None,
            policy_phase: None,
            protocol_version: None,
            span,
        };
        log.sample();
        log
    }

    /// Starts or drops the spans as the sink samples the current context.
    fn sample(&mut self) {
        let Some(sink) = &self.sink else { return };
        if !sink.sample(&self.trace) {
            self.spans = None;
            return;
        }
        if let Some(s) = &mut self.spans {
            s.context = self.trace;
            return;
        }
        let mut spans = RequestSpans::new(
            self.trace,
            self.method.clone(),
            &self.path,
            self.client,
            self.request_id(),
        );
        // The request began before the decision (a `_meta` context is read after auth).
        let elapsed = spans.started.saturating_duration_since(self.start);
        spans.started = self.start;
        spans.start_time = spans
            .start_time
            .checked_sub(elapsed)
            .unwrap_or(spans.start_time);
        self.spans = Some(Box::new(spans));
    }

    /// The span to make log lines in while serving this request.
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// The request's trace context.
    pub fn trace(&self) -> &TraceContext {
        &self.trace
    }

    /// Adopts the context a JSON-RPC request carried in `params._meta.traceparent`, unless
    /// the request's headers already gave one (headers come first).
    pub fn adopt_meta_trace(&mut self, meta: TraceContext) {
        if self.trace.is_remote() {
            return;
        }
        self.trace = meta;
        self.span
            .record("trace_id", tracing::field::display(meta.trace_id_hex()));
        self.sample();
    }

    /// Keeps `guard` until the answer ends.
    pub fn hold(&mut self, guard: Box<dyn std::any::Any + Send>) {
        self.held = Some(guard);
    }

    /// Runs `hook` when the request ends, with its final status and duration.
    pub fn on_end(&mut self, hook: EndHook) {
        self.on_end = Some(hook);
    }

    /// The request id.
    pub fn request_id(&self) -> &str {
        self.request_id.to_str().unwrap_or("-")
    }

    /// The request id as the header value sent upstream and back.
    pub fn request_id_header(&self) -> &HeaderValue {
        &self.request_id
    }

    /// Records the matched route and its series.
    pub fn set_route(&mut self, route: Arc<str>, series: Arc<RouteMetrics>) {
        self.route = Some(route);
        self.series = series;
    }

    /// The series requests are counted in (the route's, once known).
    pub fn series(&self) -> &Arc<RouteMetrics> {
        &self.series
    }

    /// Records who the client proved to be (and their organisation, for a labelled one).
    pub fn set_principal(&mut self, principal: &str, organisation: Option<&str>) {
        self.principal = Some(principal.to_owned());
        self.organisation = self.series.organisation(organisation);
    }

    /// Records the chosen upstream endpoint.
    pub fn set_upstream(&mut self, upstream: &http::Uri) {
        self.upstream = Some(upstream.to_string());
    }

    /// Records the MCP method a request names in its header (before its body is read).
    pub fn set_mcp_method(&mut self, method: Option<&HeaderValue>) {
        // A copy: the record lives as long as a streamed answer (`headers::detached`).
        self.mcp_method = method.map(crate::http::headers::detached);
    }

    /// Records what the POST body carries: the MCP method (label index and name), the tool
    /// it calls, whether it is a request, the protocol version header and the body size.
    pub fn set_operation(
        &mut self,
        method: Option<&str>,
        op: Op,
        tool: Option<&str>,
        is_request: bool,
        version: Option<&HeaderValue>,
        body_len: usize,
    ) {
        // Usually the `Mcp-Method` header already named it: no second copy then.
        if let Some(m) = method
            && self.mcp_method.as_ref().map(HeaderValue::as_bytes) != Some(m.as_bytes())
            && let Ok(v) = HeaderValue::from_str(m)
        {
            self.mcp_method = Some(v);
        }
        self.op = op;
        self.tool = tool.map(Box::from);
        self.operation = is_request;
        self.version = labels::version_index(version.map(HeaderValue::as_bytes));
        self.bytes_in = body_len as u64;
        if self.sink.is_some() {
            self.protocol_version = version.map(crate::http::headers::detached);
        }
    }

    /// Records the JSON-RPC id of the request, for its span.
    pub fn set_jsonrpc_id(&mut self, id: impl FnOnce() -> String) {
        if let Some(s) = &mut self.spans {
            s.jsonrpc_id = Some(id());
        }
    }

    /// Records a timed phase (`authenticate` or `authorize`) for the spans.
    pub fn phase(&mut self, which: TimedPhase, start: Instant, error: Option<&'static str>) {
        if self.sink.is_none() {
            return;
        }
        let p = Some(Phase {
            start,
            end: Instant::now(),
            error,
        });
        match which {
            TimedPhase::Authenticate => self.auth_phase = p,
            TimedPhase::Authorize => self.policy_phase = p,
        }
    }

    /// The request goes upstream now; returns the `traceparent` to send with it: the
    /// upstream call's span as parent when traced, else the caller's context unchanged.
    pub fn upstream_started(&mut self) -> Option<HeaderValue> {
        let now = Instant::now();
        self.upstream_sent = Some(now);
        match &mut self.spans {
            Some(s) => {
                let call = UpstreamCall {
                    span_id: super::trace::span_id(),
                    start: now,
                    head: None,
                    endpoint: None,
                    status: None,
                    error: None,
                };
                let header = s.context.traceparent(call.span_id, 0x01);
                s.upstream = Some(call);
                Some(header)
            }
            None => {
                let parent = self.trace.parent_id?;
                Some(self.trace.traceparent(parent, self.trace.flags))
            }
        }
    }

    /// The upstream answered (`Ok(status)`) or failed (`Err(kind)`).
    pub fn upstream_ended(&mut self, result: Result<u16, &'static str>) {
        let now = Instant::now();
        if result.is_ok() {
            self.upstream_head = Some(now);
        }
        if let Some(s) = &mut self.spans
            && let Some(call) = &mut s.upstream
        {
            call.head = Some(now);
            call.endpoint = self.upstream.clone();
            match result {
                Ok(status) => call.status = Some(status),
                Err(kind) => call.error = Some(kind),
            }
        }
    }

    /// Records the status sent to the client.
    pub fn set_status(&mut self, status: http::StatusCode) {
        self.status = status.as_u16();
    }

    /// Records a refusal by the proxy itself.
    pub fn set_error(&mut self, kind: &'static str) {
        self.error = Some(kind);
        self.outcome = Some(Outcome::Refused);
    }

    /// Counts bytes sent to the client.
    pub fn add_bytes(&mut self, n: usize) {
        self.bytes += n as u64;
    }

    /// Records how the response ended.
    pub fn set_outcome(&mut self, outcome: Outcome) {
        self.outcome = Some(outcome);
    }

    fn ttfb(&self) -> Option<Duration> {
        Some(
            self.upstream_head?
                .saturating_duration_since(self.upstream_sent?),
        )
    }
}

/// The phases timed for spans besides the upstream call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimedPhase {
    /// `authenticate`.
    Authenticate,
    /// `authorize`.
    Authorize,
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        // No outcome recorded means hyper dropped the body early: the client left.
        let outcome = self.outcome.unwrap_or(Outcome::ClientClosed);
        let duration = self.start.elapsed();
        if let Some(hook) = self.on_end.take() {
            // A status the proxy made itself (502, 504, …) is not the upstream's.
            hook(Ended {
                upstream_status: (self.error.is_none() && self.status != 0).then_some(self.status),
                duration,
            });
        }
        // An answer that failed upstream is an error of the operation, by its status.
        let error = self.error.or_else(|| {
            (self.status >= 400 || outcome == Outcome::UpstreamError)
                .then(|| labels::http_error_type(self.status))
        });
        let ttfb = self.ttfb();
        self.series.finished(&crate::metrics::route::Finished {
            op: self.op,
            http_method: labels::http_method_index(&self.method),
            status: self.status,
            outcome: outcome.index(),
            outcome_label: outcome.as_str(),
            version: self.version,
            error,
            operation: self.operation,
            duration,
            ttfb,
            organisation: self.organisation,
        });
        if let (Some(sink), Some(mut spans)) = (&self.sink, self.spans.take()) {
            spans.ended = Some(Instant::now());
            spans.status = self.status;
            spans.error_type = error.map(str::to_owned);
            spans.route = self.route.clone();
            spans.mcp_method = self
                .mcp_method
                .as_ref()
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            spans.tool = self.tool.as_deref().map(str::to_owned);
            spans.protocol_version = self
                .protocol_version
                .as_ref()
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            spans.auth = self.auth_phase;
            spans.policy = self.policy_phase;
            sink.export(*spans);
        }
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        tracing::info!(
            target: "access",
            request_id = %self.request_id(),
            trace_id = %self.trace.trace_id_hex(),
            client = %self.client,
            method = %self.method,
            path = %self.path,
            route = self.route.as_deref().unwrap_or("-"),
            principal = self.principal.as_deref().unwrap_or("-"),
            upstream = self.upstream.as_deref().unwrap_or("-"),
            mcp_method = self.mcp_method.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("-"),
            tool = self.tool.as_deref().unwrap_or("-"),
            status = self.status,
            bytes_in = self.bytes_in,
            bytes = self.bytes,
            upstream_ms = ttfb.map(ms),
            duration_ms = ms(duration),
            outcome = outcome.as_str(),
            error = self.error.unwrap_or("-"),
        );
    }
}
