//! Phase `respond`: the answer head is cleaned and the backend's session id sealed; JSON
//! answers that carry lists are filtered whole, event streams are set up to be relayed
//! unbuffered (heartbeats, idle limit, the stop signal of their kind, the legacy endpoint
//! rewrite and the answer filter).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Response};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use super::ctx::RequestCtx;
use super::error::ProxyError;
use super::gateway::{Gateway, RouteState};
use super::transport::Target;
use super::{Proxy, legacy, streamable};
use crate::config::Transport;
use crate::http::headers::{self, X_ACCEL_BUFFERING};
use crate::http::{Body, BoxError};
use crate::mcp::{self, SseAnswerFilter};
use crate::policy::Grants;
use crate::sse::{EventTransform, SseOptions};

use super::authorize::Authorized;

/// Largest JSON list answer the proxy buffers to filter.
const MAX_FILTERED_ANSWER: usize = 16 * 1024 * 1024;

/// What the pipeline produced for a request that was not refused.
pub(crate) enum Reply {
    /// The upstream's answer, its body idle limit, and SSE options for event streams (boxed:
    /// they are large and only event streams have them).
    Relayed(Response<Incoming>, Duration, Option<Box<SseOptions>>),
    /// An answer the proxy gives itself (CORS preflight, metadata, a filtered JSON answer).
    Local(Response<Body>),
}

/// Prepares the upstream's answer for the client.
pub(crate) async fn respond(
    proxy: &Proxy,
    gw: &Gateway,
    route: &RouteState,
    ctx: &mut RequestCtx<'_>,
    target: Target,
    authorized: Authorized,
    mut resp: Response<Incoming>,
) -> Result<Reply, ProxyError> {
    let transport = route.config.transport;
    let binding = ctx.identity.session_binding();
    let h = resp.headers_mut();
    headers::strip_hop_by_hop(h);
    if transport == Transport::StreamableHttp {
        streamable::seal_answer_session(gw, route, &target, binding, h, ctx.log.request_id());
    }
    if !is_type(h, "text/event-stream") {
        // Legacy POSTs are answered 202 and their answers come on the GET stream, which has
        // its own filter.
        if let Some(grants) = authorized.filter
            && authorized.lists_requested
            && is_type(h, "application/json")
        {
            return filter_json_answer(resp, &grants, route, ctx)
                .await
                .map(Reply::Local);
        }
        return Ok(Reply::Relayed(
            resp,
            route.config.upstream.body_idle_timeout,
            None,
        ));
    }
    h.remove(header::CONTENT_LENGTH);
    h.insert(X_ACCEL_BUFFERING, HeaderValue::from_static("no"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    // Standalone GET streams are resumable elsewhere, so they end as soon as draining starts;
    // answers to POSTs (calls in flight) and legacy streams (which carry the replies of their
    // session) get the whole drain window.
    let get = ctx.method == Method::GET;
    let stop = if transport == Transport::StreamableHttp && get {
        proxy.shutdown.drain().clone().cancelled_owned()
    } else {
        proxy.shutdown.deadline().clone().cancelled_owned()
    };
    let mut transforms: Vec<Box<dyn EventTransform>> = Vec::new();
    if transport == Transport::Sse && get {
        transforms.push(Box::new(legacy::rewriter(
            gw,
            proxy.legacy.clone(),
            route,
            &target,
            binding,
        )));
    }
    if let Some(grants) = authorized.filter {
        transforms.push(Box::new(SseAnswerFilter::new(grants)));
    }
    let sse = &gw.config.sse;
    Ok(Reply::Relayed(
        resp,
        sse.idle_timeout,
        Some(Box::new(SseOptions {
            heartbeat_interval: sse.heartbeat_interval,
            stop,
            transforms,
        })),
    ))
}

impl EventTransform for SseAnswerFilter<Arc<Grants>> {
    fn feed(&mut self, chunk: &[u8]) -> Result<Bytes, BoxError> {
        SseAnswerFilter::feed(self, chunk).map_err(Into::into)
    }
    fn finish(&mut self) -> Result<Bytes, BoxError> {
        SseAnswerFilter::finish(self).map_err(Into::into)
    }
    fn name(&self) -> &'static str {
        // Passing an answer on unfiltered would show forbidden tools or resources.
        "answer filter"
    }
}

/// Whether the `Content-Type` is `media` (any case, parameters ignored).
fn is_type(h: &http::HeaderMap, media: &str) -> bool {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .get(..media.len())
                .is_some_and(|t| t.eq_ignore_ascii_case(media))
        })
}

/// Reads a JSON answer to a list request (capped, within the body idle limit) and removes the
/// tools and resources `grants` do not allow. Fails closed: an answer that cannot be filtered
/// is a 502.
async fn filter_json_answer(
    resp: Response<Incoming>,
    grants: &Grants,
    route: &RouteState,
    ctx: &mut RequestCtx<'_>,
) -> Result<Response<Body>, ProxyError> {
    let (mut parts, body) = resp.into_parts();
    let read = tokio::time::timeout(
        route.config.upstream.body_idle_timeout,
        Limited::new(body, MAX_FILTERED_ANSWER).collect(),
    )
    .await;
    let bytes = match read {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(e)) => {
            tracing::warn!(request_id = %ctx.request_id(), error = %e, "list answer unreadable");
            return Err(ProxyError::UpstreamUnavailable);
        }
        Err(_) => return Err(ProxyError::UpstreamTimeout),
    };
    let filtered = mcp::filter_json(&bytes, grants).map_err(|e| {
        tracing::warn!(request_id = %ctx.request_id(), error = %e, "list answer cannot be filtered");
        ProxyError::UpstreamUnavailable
    })?;
    parts.headers.remove(header::CONTENT_LENGTH);
    ctx.log.add_bytes(filtered.len());
    Ok(Response::from_parts(parts, crate::http::full(filtered)))
}
