//! W3C trace context and the spans of a request.
//!
//! Every request gets a [`TraceContext`]: the caller's, from a valid `traceparent` header or,
//! failing that, from `params._meta.traceparent` of its JSON-RPC request (the MCP convention's
//! propagation), else a new random trace id. Its trace id goes into every log line made while
//! serving the request, and the context goes upstream in `traceparent`.
//!
//! When a [`SpanSink`] is configured (OTLP export, `otel` feature) and samples the request,
//! the request also carries [`RequestSpans`]: the timings of the phases (the whole request,
//! `authenticate`, `authorize`, the upstream call) taken as they run, exported when the answer
//! ends. Spans are built from recorded timings rather than opened as the request goes, because
//! the parent context of a POST is only known once its body is read, after authentication; the
//! span ids are chosen up front so the upstream call's id can go upstream before it ends.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::HeaderValue;

use crate::http::headers::valid_traceparent;

/// The sampled bit of `trace-flags`.
const SAMPLED: u8 = 0x01;

/// A request's W3C trace context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace id (never all zero).
    pub trace_id: [u8; 16],
    /// The caller's span, parent of the proxy's; `None` when the proxy started the trace.
    pub parent_id: Option<[u8; 8]>,
    /// `trace-flags` (bit 0: the caller sampled it).
    pub flags: u8,
}

impl TraceContext {
    /// The context of a `traceparent` value; `None` unless it is valid W3C trace context.
    pub fn parse(v: &[u8]) -> Option<Self> {
        if !valid_traceparent(v) {
            return None;
        }
        let mut trace_id = [0u8; 16];
        let mut parent = [0u8; 8];
        let mut flags = [0u8; 1];
        hex_decode(&v[3..35], &mut trace_id)?;
        hex_decode(&v[36..52], &mut parent)?;
        hex_decode(&v[53..55], &mut flags)?;
        Some(TraceContext {
            trace_id,
            parent_id: Some(parent),
            flags: flags[0],
        })
    }

    /// A new trace, started by the proxy (unsampled until a sink decides otherwise).
    pub fn root() -> Self {
        let mut trace_id = rand::random::<[u8; 16]>();
        if trace_id == [0; 16] {
            trace_id[15] = 1;
        }
        TraceContext {
            trace_id,
            parent_id: None,
            flags: 0,
        }
    }

    /// Whether the caller asked for this trace to be recorded.
    pub fn sampled(&self) -> bool {
        self.flags & SAMPLED != 0
    }

    /// Whether the context came from the caller (header or `_meta`).
    pub fn is_remote(&self) -> bool {
        self.parent_id.is_some()
    }

    /// The trace id as 32 lower-case hex digits, for logs.
    pub fn trace_id_hex(&self) -> Hex<16> {
        Hex(self.trace_id)
    }

    /// `traceparent` naming `span_id` as the parent, with `flags`.
    pub fn traceparent(&self, span_id: [u8; 8], flags: u8) -> HeaderValue {
        // Written into a stack buffer: `format!` with a `{:02x}` per byte was 1.8% of a
        // traced request's CPU (perf, bench/RESULTS.md 2026-12-02).
        let mut v = [0u8; 55];
        v[..3].copy_from_slice(b"00-");
        hex_encode(&self.trace_id, &mut v[3..35]);
        v[35] = b'-';
        hex_encode(&span_id, &mut v[36..52]);
        v[52] = b'-';
        hex_encode(&[flags], &mut v[53..55]);
        // Hex digits and dashes only: always a valid header value.
        HeaderValue::from_bytes(&v).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

/// Writes `src` as lower-case hex into `out` (twice its length).
fn hex_encode(src: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, b) in out.chunks_exact_mut(2).zip(src) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0x0f)];
    }
}

/// Bytes shown as lower-case hex.
#[derive(Clone, Copy)]
pub struct Hex<const N: usize>(pub [u8; N]);

impl<const N: usize> fmt::Display for Hex<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // One write of the whole string (every request's log span shows its trace id).
        let mut buf = [0u8; 64];
        let out = &mut buf[..(2 * N).min(64)];
        hex_encode(&self.0, out);
        f.write_str(std::str::from_utf8(out).unwrap_or_default())
    }
}

fn hex_decode(src: &[u8], out: &mut [u8]) -> Option<()> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    if src.len() != out.len() * 2 {
        return None;
    }
    for (o, pair) in out.iter_mut().zip(src.chunks_exact(2)) {
        *o = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Some(())
}

/// A new random span id (never all zero).
pub fn span_id() -> [u8; 8] {
    let mut id = rand::random::<[u8; 8]>();
    if id == [0; 8] {
        id[7] = 1;
    }
    id
}

/// What became of the spans handed to a sink (counters since start).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SpanCounts {
    /// Spans the collector accepted.
    pub exported: u64,
    /// Spans dropped because the export queue was full.
    pub dropped: u64,
    /// Spans in exports that failed (after retries) or that the collector rejected.
    pub failed: u64,
}

/// Where sampled requests' spans go.
pub trait SpanSink: Send + Sync + 'static {
    /// Whether to record a request with this context (parent-based sampling: a caller's
    /// sampled flag is followed, new traces are sampled at the configured ratio).
    fn sample(&self, context: &TraceContext) -> bool;
    /// Takes the spans of a finished request (must not block: exporters batch).
    fn export(&self, spans: RequestSpans);
    /// What became of the spans so far.
    fn counts(&self) -> SpanCounts;
}

/// One timed step of a request.
#[derive(Debug, Clone, Copy)]
pub struct Phase {
    /// When it started.
    pub start: Instant,
    /// When it ended.
    pub end: Instant,
    /// Why it failed (the refusal's kind), if it did.
    pub error: Option<&'static str>,
}

/// The call to the upstream (a client span).
#[derive(Debug, Clone)]
pub struct UpstreamCall {
    /// The span id sent upstream as the parent in `traceparent`.
    pub span_id: [u8; 8],
    /// When the request went out.
    pub start: Instant,
    /// When the upstream's response head arrived.
    pub head: Option<Instant>,
    /// The endpoint it went to (after retries, the one that answered).
    pub endpoint: Option<String>,
    /// The upstream's status.
    pub status: Option<u16>,
    /// Why it failed, if it did.
    pub error: Option<&'static str>,
}

/// The spans of one sampled request: its timings and the MCP convention's attributes.
#[derive(Debug, Clone)]
pub struct RequestSpans {
    /// The context: the parent when remote, and the trace id.
    pub context: TraceContext,
    /// The proxy's server span.
    pub server_span_id: [u8; 8],
    /// Wall-clock start (exporters need epoch times; the phases are offsets from `started`).
    pub start_time: SystemTime,
    /// Monotonic start.
    pub started: Instant,
    /// Monotonic end (when the answer ended).
    pub ended: Option<Instant>,
    /// Phase `authenticate`.
    pub auth: Option<Phase>,
    /// Phase `authorize` (the policy).
    pub policy: Option<Phase>,
    /// The upstream call.
    pub upstream: Option<UpstreamCall>,
    /// `http.request.method`.
    pub http_method: http::Method,
    /// `http.route`: the matched route.
    pub route: Option<Arc<str>>,
    /// `url.path`.
    pub path: String,
    /// `client.address` / `client.port`.
    pub client: SocketAddr,
    /// `mcp.method.name`.
    pub mcp_method: Option<String>,
    /// `gen_ai.tool.name` (`tools/call`) or `gen_ai.prompt.name` (`prompts/get`): the name
    /// the call carries.
    pub tool: Option<String>,
    /// `jsonrpc.request.id`.
    pub jsonrpc_id: Option<String>,
    /// `mcp.protocol.version`.
    pub protocol_version: Option<String>,
    // `mcp.session.id` is deliberately absent: sealed session ids are bearer secrets.
    /// The proxy's request id (`x-request-id`).
    pub request_id: String,
    /// `http.response.status_code`.
    pub status: u16,
    /// `error.type`: the refusal kind, or the status of a failed answer.
    pub error_type: Option<String>,
}

impl RequestSpans {
    /// Spans for a request starting now under `context`.
    pub fn new(
        context: TraceContext,
        http_method: http::Method,
        path: &str,
        client: SocketAddr,
        request_id: &str,
    ) -> Self {
        RequestSpans {
            context,
            server_span_id: span_id(),
            start_time: SystemTime::now(),
            started: Instant::now(),
            ended: None,
            auth: None,
            policy: None,
            upstream: None,
            http_method,
            route: None,
            path: path.to_owned(),
            client,
            mcp_method: None,
            tool: None,
            jsonrpc_id: None,
            protocol_version: None,
            request_id: request_id.to_owned(),
            status: 0,
            error_type: None,
        }
    }

    /// How many spans the request has: the server span, and each phase that ran.
    pub fn span_count(&self) -> usize {
        1 + usize::from(self.auth.is_some())
            + usize::from(self.policy.is_some())
            + usize::from(self.upstream.is_some())
    }

    /// Wall-clock time of a monotonic instant of this request.
    pub fn wall(&self, at: Instant) -> SystemTime {
        self.start_time + at.saturating_duration_since(self.started)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats_traceparent() {
        let v = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let c = TraceContext::parse(v).expect("valid");
        assert!(c.sampled());
        assert!(c.is_remote());
        assert_eq!(
            c.trace_id_hex().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        let out = c.traceparent([0xab; 8], 0x01);
        assert_eq!(
            out.to_str().unwrap(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-abababababababab-01"
        );
        let round = TraceContext::parse(c.traceparent([0x0f; 8], 0x00).as_bytes()).expect("valid");
        assert_eq!(round.trace_id, c.trace_id);
        assert_eq!(round.parent_id, Some([0x0f; 8]));
        assert_eq!(round.flags, 0);
        assert_eq!(Hex([0x00, 0xff, 0x5a]).to_string(), "00ff5a");
    }

    #[test]
    fn refuses_hostile_traceparents() {
        for bad in [
            &b""[..],
            b"garbage",
            b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
        ] {
            assert!(TraceContext::parse(bad).is_none(), "{bad:?}");
        }
        // A later version may append fields; the known ones are read.
        let c = TraceContext::parse(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-x")
            .expect("future version");
        assert!(!c.sampled());
    }

    #[test]
    fn root_contexts_are_fresh_and_unsampled() {
        let a = TraceContext::root();
        let b = TraceContext::root();
        assert_ne!(a.trace_id, b.trace_id);
        assert!(!a.is_remote());
        assert!(!a.sampled());
        assert_ne!(span_id(), [0; 8]);
    }
}
