//! Phase `respond`: the answer head is cleaned and the backend's session id sealed; JSON
//! answers that carry lists are filtered whole, other JSON answers to POSTs are read whole
//! (capped) so that one cut short is a 502 rather than a truncated 200; event streams are set
//! up to be relayed unbuffered (heartbeats, idle limit, the stop signal of their kind, the
//! lifetime of GET and listen streams, the legacy endpoint rewrite, the answer filter, and
//! the pending-call tracker that answers the calls a dying stream leaves unanswered).

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
use crate::mcp::pending::{Close, PendingCalls, SharedCalls};
use crate::mcp::{self, Envelope, Id, SseAnswerFilter};
use crate::metrics::UpstreamFailure;
use crate::policy::Grants;
use crate::sse::{EndCause, Epilogue, EventTransform, SseOptions, StreamEnd, StreamEndHook};

use super::authorize::Authorized;

/// Largest JSON list answer the proxy buffers to filter.
const MAX_FILTERED_ANSWER: usize = 16 * 1024 * 1024;

/// Largest JSON answer to a POST read whole before its head is sent; larger ones are relayed
/// as they come (and a failure past this point can only abort them). Small, because every
/// request in flight may hold this much: tool answers are mostly a few KiB, and 10,000 of
/// them at 1 MiB is still a bounded 10 GiB worst case, where 16 MiB would not be.
const MAX_BUFFERED_ANSWER: usize = 1024 * 1024;

/// What the pipeline produced for a request that was not refused.
pub(crate) enum Reply {
    /// The upstream's answer, relayed (boxed: it is large).
    Relayed(Box<Relay>),
    /// An answer the proxy gives itself (CORS preflight, metadata, a filtered or buffered
    /// JSON answer).
    Local(Response<Body>),
}

/// An upstream answer to relay, and how.
pub(crate) struct Relay {
    /// The answer; its body is relayed.
    pub(crate) resp: Response<Incoming>,
    /// Longest upstream silence inside the body.
    pub(crate) idle: Duration,
    /// SSE options, for event streams.
    pub(crate) sse: Option<SseOptions>,
    /// Body bytes already read, sent first.
    pub(crate) prefix: Option<Bytes>,
    /// Told how the body ended.
    pub(crate) on_end: Option<StreamEndHook>,
}

impl Relay {
    fn plain(resp: Response<Incoming>, idle: Duration, on_end: Option<StreamEndHook>) -> Self {
        Relay {
            resp,
            idle,
            sse: None,
            prefix: None,
            on_end,
        }
    }
}

/// The calls a POST carries: what the proxy owes their callers if the stream that should
/// answer them dies.
#[derive(Debug, Default)]
pub(crate) struct Calls {
    /// Ids of its requests (not notifications), as the client wrote them.
    pub(crate) ids: Vec<Id>,
    /// Whether it is a `subscriptions/listen`: a long-lived stream, bounded like GET streams.
    pub(crate) listen: bool,
}

impl Calls {
    /// The calls of `envelope` (none for GET and DELETE).
    pub(crate) fn of(envelope: Option<&Envelope>) -> Self {
        let Some(envelope) = envelope else {
            return Calls::default();
        };
        let messages = envelope.messages();
        Calls {
            ids: messages
                .iter()
                .filter(|m| m.is_request())
                .filter_map(|m| m.id.clone())
                .collect(),
            listen: messages
                .iter()
                .any(|m| m.method.as_deref() == Some("subscriptions/listen")),
        }
    }
}

/// The hook told how the answer to a request on `route` sent to `target` ended (see
/// [`StreamEnd`]): an answer that failed in its body counts toward the endpoint's circuit, one
/// that ended well ends a run of such failures.
fn end_hook(route: &RouteState, target: &Target) -> Option<StreamEndHook> {
    let endpoint = route.upstreams.endpoints().get(target.endpoint)?;
    let health = endpoint.health.clone();
    let circuit = route.upstreams.settings().circuit.clone();
    let series = route.metrics.clone();
    let index = target.endpoint;
    Some(Arc::new(move |end: &StreamEnd| {
        if end.upstream_failed {
            series.upstream_failure(index, UpstreamFailure::Body);
            health.report_body_failure(&circuit);
        } else {
            health.report_body_success();
        }
    }))
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
    let on_end = end_hook(route, &target);
    let calls = authorized.calls;
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
        let idle = route.config.upstream.body_idle_timeout;
        if ctx.method == Method::POST && is_type(h, "application/json") {
            return read_json_answer(resp, idle, ctx, on_end).await;
        }
        return Ok(Reply::Relayed(Box::new(Relay::plain(resp, idle, on_end))));
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
    // The legacy stream carries the answers to its session's POSTs, which register here.
    let session_calls = (transport == Transport::Sse && get).then(Arc::<SharedCalls>::default);
    if let Some(shared) = &session_calls {
        transforms.push(Box::new(
            legacy::rewriter(gw, proxy.legacy.clone(), route, &target, binding)
                .with_calls(shared.clone()),
        ));
    }
    if let Some(grants) = authorized.filter {
        transforms.push(Box::new(SseAnswerFilter::new(grants)));
    }
    // Last, so it sees what the client sees (answers after filtering).
    let pending = match session_calls {
        Some(shared) => Some(PendingCalls::for_session(shared)),
        None if !calls.ids.is_empty() => Some(PendingCalls::for_post(calls.ids)),
        None => None,
    };
    if let Some(p) = pending {
        transforms.push(Box::new(Unanswered(p)));
    }
    let sse = &gw.config.sse;
    // GET and listen streams only: they exist to be open, and clients reconnect to them.
    // Answers to other POSTs end by themselves; cutting one would cancel a call. Legacy
    // streams are their session, which a reconnect cannot resume.
    let bounded = (transport == Transport::StreamableHttp && get) || calls.listen;
    Ok(Reply::Relayed(Box::new(Relay {
        resp,
        idle: sse.idle_timeout,
        sse: Some(SseOptions {
            heartbeat_interval: sse.heartbeat_interval,
            stop,
            transforms,
            lifetime: sse.max_stream_lifetime.filter(|_| bounded),
        }),
        prefix: None,
        on_end,
    })))
}

/// The pending-call tracker as a stream transform: the relay's end cause decides whether
/// the calls left unanswered get an error, and its wording.
struct Unanswered(PendingCalls);

impl EventTransform for Unanswered {
    fn feed(&mut self, chunk: Bytes) -> Result<Bytes, BoxError> {
        self.0.feed(chunk).map_err(Into::into)
    }
    fn finish(&mut self) -> Result<Bytes, BoxError> {
        Ok(self.0.finish())
    }
    fn end(&mut self, cause: EndCause) -> Epilogue {
        let (how, message) = match cause {
            EndCause::UpstreamEnded => (Close::Clean, "upstream stream ended before answering"),
            EndCause::UpstreamError => (Close::Abrupt, "upstream stream failed before answering"),
            EndCause::UpstreamIdle => (Close::Abrupt, "upstream went silent before answering"),
            EndCause::Lifetime => (
                Close::Retry,
                "stream lifetime reached before the upstream answered",
            ),
            EndCause::Drained => (
                Close::Abrupt,
                "proxy shutting down before the upstream answered",
            ),
            // Nothing can reach the client any more.
            EndCause::ClientGone | EndCause::ClientWriteTimeout => return Epilogue::default(),
        };
        let (bytes, answers) = self.0.close(how, message, cause.as_str());
        Epilogue { bytes, answers }
    }
    fn name(&self) -> &'static str {
        "pending-call tracker"
    }
}

impl EventTransform for SseAnswerFilter<Arc<Grants>> {
    fn feed(&mut self, chunk: Bytes) -> Result<Bytes, BoxError> {
        SseAnswerFilter::feed(self, &chunk).map_err(Into::into)
    }
    fn finish(&mut self) -> Result<Bytes, BoxError> {
        SseAnswerFilter::finish(self).map_err(Into::into)
    }
    fn name(&self) -> &'static str {
        // Passing an answer on unfiltered would show forbidden tools or resources.
        crate::sse::ANSWER_FILTER
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

/// Reads a JSON answer to a POST whole (up to [`MAX_BUFFERED_ANSWER`], each frame within
/// `idle`) before its head is sent, so an upstream that dies mid-body is a 502 (504 when it
/// stalls) the client can read, not a truncated body after a 200. A larger answer is relayed
/// as it comes, starting with what was read; past that point a failure can only abort it.
async fn read_json_answer(
    resp: Response<Incoming>,
    idle: Duration,
    ctx: &mut RequestCtx<'_>,
    on_end: Option<StreamEndHook>,
) -> Result<Reply, ProxyError> {
    let (mut parts, mut body) = resp.into_parts();
    let tell = |cause: EndCause, upstream_failed: bool| {
        if let Some(hook) = &on_end {
            hook(&StreamEnd {
                cause,
                upstream_failed,
                sse: false,
                injected: 0,
            });
        }
    };
    let mut frames: Vec<Bytes> = Vec::new();
    let mut len = 0usize;
    loop {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Ok(Some(Ok(frame))) => frame,
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                tracing::warn!(request_id = %ctx.request_id(), error = %crate::upstream::error_chain(&e), "upstream failed mid-answer");
                tell(EndCause::UpstreamError, true);
                return Err(ProxyError::UpstreamUnavailable);
            }
            Err(_) => {
                tracing::warn!(request_id = %ctx.request_id(), "upstream stalled mid-answer");
                tell(EndCause::UpstreamIdle, true);
                return Err(ProxyError::UpstreamTimeout);
            }
        };
        // Trailers of a JSON answer carry nothing a client reads.
        let Ok(data) = frame.into_data() else {
            continue;
        };
        len = len.saturating_add(data.len());
        frames.push(data);
        if len > MAX_BUFFERED_ANSWER {
            let prefix = Bytes::from(frames.concat());
            return Ok(Reply::Relayed(Box::new(Relay {
                resp: Response::from_parts(parts, body),
                idle,
                sse: None,
                prefix: Some(prefix),
                on_end,
            })));
        }
    }
    tell(EndCause::UpstreamEnded, false);
    let bytes = match frames.len() {
        1 => frames.swap_remove(0),
        _ => Bytes::from(frames.concat()),
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    ctx.log.add_bytes(bytes.len());
    Ok(Reply::Local(Response::from_parts(
        parts,
        crate::http::full(bytes),
    )))
}
