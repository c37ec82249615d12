//! The per-request context: what the phases share and what each of them leaves for the ones
//! after it. Phase results that only the next phase needs (the route, the target, the
//! inspected body, the authorization) are returned by value instead, so they cannot be read
//! before they exist.

use std::net::SocketAddr;
use std::sync::Arc;

use http::HeaderValue;
use hyper::body::Incoming;

use crate::audit::AuditEntry;
use crate::auth::Identity;
use crate::auth::mtls::ClientIdentity;
use crate::http::headers::{self, MCP_METHOD, TRACEPARENT};
use crate::metrics::RouteMetrics;
use crate::telemetry::AccessLog;
use crate::telemetry::trace::{SpanSink, TraceContext};

/// What the proxy knows about the connection a request arrived on.
#[derive(Debug)]
pub struct ConnInfo {
    /// Client socket address.
    pub peer: SocketAddr,
    /// Identity from the client certificate, when one was presented and verified.
    pub client_cert: Option<Arc<ClientIdentity>>,
    /// Set when the connection is closed because the client stopped reading
    /// (`sse.client_write_timeout`), so the bodies it drops know why they ended.
    pub write_stalled: Arc<std::sync::atomic::AtomicBool>,
}

/// State of one request on its way through the phases.
pub(crate) struct RequestCtx<'c> {
    /// The connection it came on.
    pub(crate) conn: &'c ConnInfo,
    /// The client's method, kept after the request head is handed upstream.
    pub(crate) method: http::Method,
    /// The access-log record, written when the answer ends (the `log` phase).
    pub(crate) log: AccessLog,
    /// `admit`: the allowed `Origin` to echo in CORS headers.
    pub(crate) cors: Option<HeaderValue>,
    /// `admit`: the validated host, for `X-Forwarded-Host`.
    pub(crate) forwarded_host: Option<HeaderValue>,
    /// `authenticate`: who the caller is.
    pub(crate) identity: Identity,
    /// `authorize`: the audit records of the calls being forwarded, completed and written by
    /// the `log` phase.
    pub(crate) audit: Vec<AuditEntry>,
}

impl<'c> RequestCtx<'c> {
    /// A context for `req` on `conn`.
    pub(crate) fn new(
        req: &http::Request<Incoming>,
        conn: &'c ConnInfo,
        unmatched: &Arc<RouteMetrics>,
        sink: Option<&Arc<dyn SpanSink>>,
    ) -> Self {
        Self::from_head(
            req.method(),
            req.uri(),
            req.headers(),
            conn,
            unmatched,
            sink,
        )
    }

    /// A context for a request head alone (phase unit tests drive phases with one).
    #[cfg(test)]
    pub(crate) fn for_test(parts: &http::request::Parts, conn: &'c ConnInfo) -> Self {
        let unmatched = Arc::new(RouteMetrics::default());
        Self::from_head(
            &parts.method,
            &parts.uri,
            &parts.headers,
            conn,
            &unmatched,
            None,
        )
    }

    fn from_head(
        method: &http::Method,
        uri: &http::Uri,
        h: &http::HeaderMap,
        conn: &'c ConnInfo,
        unmatched: &Arc<RouteMetrics>,
        sink: Option<&Arc<dyn SpanSink>>,
    ) -> Self {
        // One valid `traceparent` is the caller's context; anything else starts a trace.
        let mut values = h.get_all(TRACEPARENT).iter();
        let trace = match (values.next(), values.next()) {
            (Some(one), None) => TraceContext::parse(one.as_bytes()),
            _ => None,
        }
        .unwrap_or_else(TraceContext::root);
        let mut log = AccessLog::new(
            headers::request_id(h),
            conn.peer,
            method.clone(),
            uri.path(),
            unmatched.clone(),
            trace,
            sink,
        );
        log.set_mcp_method(h.get(MCP_METHOD));
        // Until a route says otherwise, the caller is whoever its certificate names.
        let identity = Identity::new(None, conn.client_cert.clone());
        if conn.client_cert.is_some() {
            log.set_principal(identity.label(), None);
        }
        RequestCtx {
            conn,
            method: method.clone(),
            log,
            cors: None,
            forwarded_host: None,
            identity,
            audit: Vec::new(),
        }
    }

    /// The request id, for log lines.
    pub(crate) fn request_id(&self) -> &str {
        self.log.request_id()
    }
}
