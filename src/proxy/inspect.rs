//! Phase `inspect`: GET and DELETE must carry no body; a POST must declare UTF-8 JSON without
//! encoding, and its body is read whole (capped, within `http.header_read_timeout`) and
//! parsed as the JSON-RPC envelope of the request's protocol version; in the 2026-07-28 era
//! its `Mcp-Method` / `Mcp-Name` headers are checked against it. The decision and the backend
//! see the same bytes. GET and DELETE carry no body at all.

use bytes::Bytes;
use http::Method;
use hyper::body::Incoming;

use super::ctx::RequestCtx;
use super::error::ProxyError;
use super::gateway::{Gateway, RouteState};
use crate::mcp::headers::MCP_PROTOCOL_VERSION;
use crate::mcp::{self, Envelope};
use crate::metrics::{Op, labels};
use crate::telemetry::trace::TraceContext;

/// What `inspect` found.
pub(crate) struct Inspected {
    /// The body to forward, whole (empty for GET and DELETE): a request the backend never
    /// saw can be sent again on a retry.
    pub(crate) body: Bytes,
    /// The JSON-RPC messages of a POST.
    pub(crate) envelope: Option<Envelope>,
    /// SHA-256 of a POST body, for the audit log (only computed when it is on).
    pub(crate) digest: Option<[u8; 32]>,
}

/// Tells the request record what the body carries: the labels its metrics get (method, tool,
/// protocol version), its span's attributes, and a trace context from `params._meta`.
fn record_operation(
    route: &RouteState,
    ctx: &mut RequestCtx<'_>,
    headers: &http::HeaderMap,
    envelope: &Envelope,
    body_len: usize,
) {
    let messages = envelope.messages();
    let named = messages.iter().find(|m| m.method.is_some());
    let method = named.and_then(|m| m.method.as_deref());
    let tool = named.and_then(|m| m.tool_name.as_deref());
    let op = Op {
        method: match (envelope.is_batch(), method) {
            (true, _) => labels::METHOD_BATCH,
            (false, Some(m)) => labels::method_index(m),
            (false, None) => labels::METHOD_RESPONSE,
        },
        tool: tool.map_or(0, |t| route.metrics.tool(t)),
    };
    let request = messages.iter().find(|m| m.is_request());
    ctx.log.set_operation(
        method,
        op,
        tool,
        request.is_some(),
        headers.get(MCP_PROTOCOL_VERSION),
        body_len,
    );
    if let Some(meta) = messages
        .iter()
        .find_map(|m| m.traceparent.as_deref())
        .and_then(|t| TraceContext::parse(t.as_bytes()))
    {
        ctx.log.adopt_meta_trace(meta);
    }
    if let Some(id) = request.and_then(|m| m.id.as_ref()) {
        ctx.log.set_jsonrpc_id(|| id.to_string());
    }
}

/// Reads and checks the body of a request to `route`.
pub(crate) async fn inspect(
    gw: &Gateway,
    route: &RouteState,
    ctx: &mut RequestCtx<'_>,
    headers: &http::HeaderMap,
    body: Incoming,
    digest: bool,
) -> Result<Inspected, ProxyError> {
    let cap = usize::try_from(gw.config.http.max_request_body_bytes).unwrap_or(usize::MAX);
    if ctx.method != Method::POST {
        // GET and DELETE carry no JSON-RPC body, so nothing in one would be inspected: refuse
        // it rather than relay bytes the policy never saw.
        if !http_body::Body::is_end_stream(&body) {
            return Err(ProxyError::BadRequest(
                "GET and DELETE requests carry no body",
            ));
        }
        return Ok(Inspected {
            body: Bytes::new(),
            envelope: None,
            digest: None,
        });
    }
    // The body is inspected as UTF-8 JSON: a declared charset or encoding would make the
    // backend decode other bytes than the ones the policy saw.
    crate::http::media::check_json_body(headers)?;
    let transport = route.config.transport;
    let version = transport.protocol_version(headers)?;
    // A client that trickles its body is cut off like one that trickles its head.
    let bytes: Bytes = tokio::time::timeout(
        gw.config.http.header_read_timeout,
        mcp::read_capped(body, cap),
    )
    .await
    .map_err(|_| ProxyError::BodyTimeout)??;
    let envelope = mcp::envelope::parse_for(&bytes, version)?;
    record_operation(route, ctx, headers, &envelope, bytes.len());
    if transport.checks_mcp_headers() {
        for m in envelope.messages() {
            mcp::check_consistency(headers, m, version)?;
        }
    }
    Ok(Inspected {
        digest: digest.then(|| crate::audit::args_digest(&bytes)),
        body: bytes,
        envelope: Some(envelope),
    })
}
