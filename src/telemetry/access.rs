//! The access log: one structured line per request, written when the response has been
//! fully sent, failed, or abandoned by the client.

use std::net::SocketAddr;
use std::time::Instant;

use http::HeaderValue;

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
    fn as_str(self) -> &'static str {
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
}

/// Access-log record of one request; written once, when dropped.
pub struct AccessLog {
    start: Instant,
    request_id: HeaderValue,
    client: SocketAddr,
    method: http::Method,
    path: String,
    route: Option<std::sync::Arc<str>>,
    principal: Option<String>,
    upstream: Option<String>,
    mcp_method: Option<HeaderValue>,
    status: u16,
    bytes: u64,
    outcome: Option<Outcome>,
    error: Option<&'static str>,
    /// Runs when the record is written (the proxy completes its audit records here).
    on_end: Option<EndHook>,
    /// Dropped with the record, when the answer ends: what the request holds until then
    /// (its concurrency slots).
    held: Option<Box<dyn std::any::Any + Send>>,
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
    /// Starts a record for a request.
    pub fn new(
        request_id: HeaderValue,
        client: SocketAddr,
        method: http::Method,
        path: &str,
    ) -> Self {
        AccessLog {
            start: Instant::now(),
            request_id,
            client,
            method,
            path: path.to_owned(),
            route: None,
            principal: None,
            upstream: None,
            mcp_method: None,
            status: 0,
            bytes: 0,
            outcome: None,
            error: None,
            on_end: None,
            held: None,
        }
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

    /// Records the matched route.
    pub fn set_route(&mut self, route: std::sync::Arc<str>) {
        self.route = Some(route);
    }

    /// Records who the client proved to be.
    pub fn set_principal(&mut self, principal: &str) {
        self.principal = Some(principal.to_owned());
    }

    /// Records the chosen upstream endpoint.
    pub fn set_upstream(&mut self, upstream: &http::Uri) {
        self.upstream = Some(upstream.to_string());
    }

    /// Records the MCP method, when the request names it.
    pub fn set_mcp_method(&mut self, method: Option<&HeaderValue>) {
        self.mcp_method = method.cloned();
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
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        // No outcome recorded means hyper dropped the body early: the client left.
        let outcome = self.outcome.unwrap_or(Outcome::ClientClosed);
        if let Some(hook) = self.on_end.take() {
            // A status the proxy made itself (502, 504, …) is not the upstream's.
            hook(Ended {
                upstream_status: (self.error.is_none() && self.status != 0).then_some(self.status),
                duration: self.start.elapsed(),
            });
        }
        tracing::info!(
            target: "access",
            request_id = %self.request_id(),
            client = %self.client,
            method = %self.method,
            path = %self.path,
            route = self.route.as_deref().unwrap_or("-"),
            principal = self.principal.as_deref().unwrap_or("-"),
            upstream = self.upstream.as_deref().unwrap_or("-"),
            mcp_method = self.mcp_method.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("-"),
            status = self.status,
            bytes = self.bytes,
            duration_ms = self.start.elapsed().as_secs_f64() * 1000.0,
            outcome = outcome.as_str(),
            error = self.error.unwrap_or("-"),
        );
    }
}
