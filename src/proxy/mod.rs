//! The request path: every request passes the same named phases, in order, over one
//! [`RequestCtx`](ctx::RequestCtx). This is the one description of the pipeline; the rest of
//! the documentation links here.
//!
//! ```text
//!            ┌──────────────────────────── RequestCtx ──────────────────────────────────────────┐
//!            │ access log · CORS origin · validated host · Identity · audit records · permits   │
//!            └──────────────────────────────────────────────────────────────────────────────────┘
//! request ─▶ admit ─▶ authenticate ─▶ pick_endpoint ─▶ inspect ─▶ authorize ─▶ limits ─▶ forward ─▶ respond ─▶ log
//!              │            │               │              │           │          │          │          │        │
//!           route       Identity         Target       Inspected   Authorized   Permits   upstream    Reply   access +
//!                                                                                          answer              audit lines
//! ```
//!
//! | phase | file | what it does | refuses with |
//! |---|---|---|---|
//! | `admit` | [`admit`] | Host (one, agreeing with the authority, in `allowed_hosts`); OAuth metadata documents; route; Origin and CORS preflights; method; declared body size | 400, 403, 404, 405, 413 |
//! | `authenticate` | [`crate::auth::identity`] | client certificate, bearer token (JWT or introspection), certificate binding, route scopes → one [`Identity`](crate::auth::Identity) | 400, 401, 403, 503 |
//! | `pick_endpoint` | [`transport`], [`streamable`], [`legacy`] | the endpoint of the sealed, principal-bound, unexpired session the request names (404 when it is ejected or unhealthy), else the next available endpoint round-robin | 400, 404 |
//! | `inspect` | [`inspect`] | no body on GET/DELETE; POST media type (UTF-8 JSON, unencoded); POST bodies read whole (capped, timed) and parsed as JSON-RPC; `MCP-Protocol-Version`; `Mcp-Method`/`Mcp-Name` against the body | 400, 408, 413, 415 |
//! | `authorize` | [`authorize`] | route policy per message (methods, scopes, tools, resources); audit records | 403 |
//! | `limits` | [`limit`] ([`crate::limits`]) | the caller's request rate, per-tool rates (tool read from the body), requests in flight, open GET streams; local or shared through Redis; slots held until the answer ends | 429, 503 |
//! | `forward` | [`forward`] | upstream headers (forwarding, identity, no client credentials), the signed upstream token, the endpoint's circuit, send, safe retries on another endpoint ([`crate::upstream`]) | 500, 502, 503, 504 |
//! | `respond` | [`respond`] | session id sealed; list answers filtered; other JSON answers to POSTs read whole; event streams set up (heartbeats, idle limit, stop signal, lifetime, legacy rewrite, answer filter, answers for calls a dying stream leaves unanswered) | 502, 504 |
//! | `log` | [`Proxy::handle`] | the access-log line and the audit lines, when the answer has ended | — |
//!
//! Every refusal is a [`ProxyError`]: phases return their own error types and `?` turns them
//! into it; [`error`] is the one place that chooses status codes.

mod admit;
mod authorize;
mod ctx;
pub mod error;
mod forward;
mod gateway;
mod inspect;
pub mod legacy;
mod limit;
mod respond;
mod streamable;
mod transport;

use std::sync::Arc;

use arc_swap::ArcSwap;
use http::{Request, Response};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use tracing::Instrument;

use crate::audit::AuditLog;
use crate::config::RequireAuth;
use crate::http::Body;
use crate::http::headers::X_REQUEST_ID;
use crate::limits::{Limits, StoreStatus};
use crate::metrics::{AdmissionRefusal, AuthReason, Metrics, RouteMetrics};
use crate::shutdown::Shutdown;
use crate::sse::RelayBody;
use crate::telemetry::trace::SpanSink;
use crate::telemetry::{Outcome, TimedPhase};
use crate::upstream::{EndpointSnapshot, HealthRegistry};
use admit::Admission;
use ctx::RequestCtx;
use legacy::LegacySessions;
use respond::Reply;

pub use ctx::ConnInfo;
pub use error::{POLICY_DENIED, ProxyError, Source};
pub use gateway::{Gateway, RouteSetupError};

/// The proxy service shared by all connections.
pub struct Proxy {
    gateway: ArcSwap<Gateway>,
    /// Swapped with the gateway; kept apart because bucket and slot state outlives a
    /// snapshot (see [`Limits::rebuild`]).
    limits: ArcSwap<Limits>,
    /// Endpoint health outlives every gateway snapshot (reloads rebuild the gateway).
    health: HealthRegistry,
    audit: Option<Arc<AuditLog>>,
    legacy: Arc<LegacySessions>,
    shutdown: Shutdown,
    /// Every metric family; routes hold their series of it.
    metrics: Arc<Metrics>,
    /// Series of requests matched to no route.
    unmatched: Arc<RouteMetrics>,
    /// Where sampled requests' spans go (OTLP with the `otel` feature); `None`: no spans.
    spans: Option<Arc<dyn SpanSink>>,
}

impl Proxy {
    /// A proxy serving `gateway` until `shutdown`, recording MCP calls in `audit` if given.
    /// Starts the active health checks the gateway configures (call within a Tokio runtime).
    pub fn new(mut gateway: Gateway, shutdown: Shutdown, audit: Option<Arc<AuditLog>>) -> Self {
        // Checks stop when draining starts: no new traffic will need their verdict.
        let health = HealthRegistry::new(shutdown.drain().clone());
        health.adopt(gateway.upstreams_mut());
        // `[metrics]` is read once: series are per process, a reload keeps them.
        let metrics = Metrics::new(gateway.config().metrics.clone());
        gateway.attach_metrics(&metrics);
        let limits = build_limits(&gateway, None).unwrap_or_else(|e| {
            tracing::error!(error = %e, "limits could not be set up; requests are not limited");
            Limits::default()
        });
        Proxy {
            limits: ArcSwap::from_pointee(limits),
            gateway: ArcSwap::from_pointee(gateway),
            health,
            audit,
            legacy: Arc::new(LegacySessions::default()),
            shutdown,
            spans: None,
            unmatched: Arc::new(RouteMetrics::unmatched(&metrics)),
            metrics,
        }
    }

    /// Every metric family (the admin listener encodes them).
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Exports the spans of sampled requests to `sink`.
    pub fn with_span_sink(mut self, sink: Arc<dyn SpanSink>) -> Self {
        self.spans = Some(sink);
        self
    }

    /// Replaces the snapshot; requests already running keep the one they started with. The
    /// endpoint health known so far carries over to the endpoints still configured, and the
    /// limit state to the limits left unchanged.
    pub fn swap(&self, mut gateway: Gateway) {
        self.health.adopt(gateway.upstreams_mut());
        gateway.attach_metrics(&self.metrics);
        match build_limits(&gateway, Some(&self.limits.load())) {
            Ok(limits) => self.limits.store(Arc::new(limits)),
            // Validation makes this unreachable in practice; the old limits stay in force.
            Err(e) => {
                tracing::error!(error = %e, "new limits could not be set up; keeping the old ones")
            }
        }
        self.gateway.store(Arc::new(gateway));
    }

    /// The shared rate-limit store's state, when `limits.store = "redis"`.
    pub fn limits_store(&self) -> Option<StoreStatus> {
        self.limits.load().store_status()
    }

    /// What became of the exported spans, when a span sink is configured.
    pub fn span_counts(&self) -> Option<crate::telemetry::trace::SpanCounts> {
        self.spans.as_ref().map(|s| s.counts())
    }

    /// Health of every configured upstream endpoint (circuit, ejection, checks, retries).
    pub fn upstream_health(&self) -> Vec<EndpointSnapshot> {
        self.health.snapshot()
    }

    /// The current snapshot.
    pub fn gateway(&self) -> Arc<Gateway> {
        self.gateway.load_full()
    }

    /// Counters of the audit log, when one is configured.
    pub fn audit_stats(&self) -> Option<crate::audit::AuditStats> {
        self.audit.as_ref().map(|a| a.stats())
    }

    /// Number of open legacy HTTP+SSE sessions.
    pub fn legacy_sessions(&self) -> usize {
        self.legacy.len()
    }

    /// Handles one client request; never fails (errors become responses).
    pub async fn handle(&self, req: Request<Incoming>, conn: &ConnInfo) -> Response<Body> {
        let gw = self.gateway.load_full();
        let mut ctx = RequestCtx::new(&req, conn, &self.unmatched, self.spans.as_ref());
        let span = ctx.log.span().clone();
        let (parts, body) = req.into_parts();
        // The body stays here until `inspect` takes it, so a refusal can drain it.
        let mut body = Some(body);
        // Boxed: hyper keeps one slot the size of this future per HTTP/1.1 connection (and
        // per h2 stream) for as long as it is open, and the phases' states (authentication,
        // inspection, the upstream call) made it 5 KiB; boxed, they exist only while they run
        // (massif, 300 open streams: bench/RESULTS.md 2026-12-02).
        let reply = Box::pin(
            self.phases(&gw, &mut ctx, parts, &mut body)
                .instrument(span),
        )
        .await;
        if reply.is_err()
            && let Some(b) = body.take()
        {
            drain_refused_body(b).await;
        }
        self.log(ctx, reply)
    }

    /// The phases, in order (see the module docs).
    async fn phases(
        &self,
        gw: &Gateway,
        ctx: &mut RequestCtx<'_>,
        mut parts: http::request::Parts,
        body: &mut Option<Incoming>,
    ) -> Result<Reply, ProxyError> {
        let route = match admit::admit(gw, ctx, &parts)? {
            Admission::Route(route) => route,
            Admission::Answer(resp) => return Ok(Reply::Local(resp)),
        };
        self.authenticate(gw, route, ctx, &parts).await?;
        let binding = ctx.identity.session_binding();
        let method = ctx.method.clone();
        let mut target = transport::pick_endpoint(gw, route, &method, &mut parts, &binding)?;
        let body = body
            .take()
            .ok_or(ProxyError::BadRequest("request body already used"))?;
        let inspected =
            inspect::inspect(gw, route, ctx, &parts.headers, body, self.audit.is_some()).await?;
        let started = std::time::Instant::now();
        let authorized = authorize::authorize(
            gw,
            route,
            ctx,
            inspected.envelope.as_ref(),
            inspected.digest,
            self.audit.as_deref(),
        );
        let error = authorized.as_ref().err().map(ProxyError::kind);
        ctx.log.phase(TimedPhase::Authorize, started, error);
        let authorized = authorized?;
        if inspected.envelope.is_some() && !route.config.policy.is_empty() {
            route.metrics.policy(true);
        }
        let limits = self.limits.load();
        let permits = limit::limit(
            &limits,
            route,
            ctx,
            inspected.envelope.as_ref(),
            self.audit.as_deref(),
        )
        .await?;
        if !permits.is_empty() {
            ctx.log.hold(Box::new(permits));
        }
        // Registered before forwarding, so the answer cannot reach the stream first.
        let registration =
            legacy::register_calls(&self.legacy, route, &parts, &authorized.calls.ids);
        let resp = forward::forward(gw, route, ctx, parts, &mut target, inspected).await?;
        if let Some(r) = registration
            && resp.status().is_success()
        {
            // Accepted: its answers will come on the session's stream (otherwise dropping
            // the registration takes the ids back).
            r.keep();
        }
        respond::respond(self, gw, route, ctx, target, authorized, resp).await
    }

    /// Phase `authenticate`: who the caller is, as the route demands.
    async fn authenticate(
        &self,
        gw: &Gateway,
        route: &gateway::RouteState,
        ctx: &mut RequestCtx<'_>,
        parts: &http::request::Parts,
    ) -> Result<(), ProxyError> {
        let started = std::time::Instant::now();
        let auth = route.config.auth();
        let result = crate::auth::authenticate(
            &auth,
            &gw.issuers,
            &parts.headers,
            parts.uri.query(),
            ctx.conn.client_cert.clone(),
        )
        .await;
        let identity = match result {
            Ok(identity) => identity,
            Err(e) => {
                route.metrics.auth(e.reason());
                ctx.log
                    .phase(TimedPhase::Authenticate, started, Some(e.kind()));
                return Err(e.challenged(&gw.config.listener.public_url, &auth).into());
            }
        };
        route.metrics.auth(if auth.require == RequireAuth::None {
            AuthReason::NotRequired
        } else {
            AuthReason::Ok
        });
        ctx.log.phase(TimedPhase::Authenticate, started, None);
        if identity.claims().is_some() || identity.cert.is_some() {
            ctx.log
                .set_principal(identity.label(), identity.organisation());
        }
        ctx.identity = identity;
        Ok(())
    }

    /// Phase `log`: the access-log record travels with the answer and is written when it
    /// ends, completing the audit records of the calls it carried.
    fn log(&self, mut ctx: RequestCtx<'_>, reply: Result<Reply, ProxyError>) -> Response<Body> {
        if let Some(audit) = self.audit.clone()
            && !ctx.audit.is_empty()
        {
            let mut entries = std::mem::take(&mut ctx.audit);
            ctx.log.on_end(Box::new(move |ended| {
                let duration_ms = u64::try_from(ended.duration.as_millis()).unwrap_or(u64::MAX);
                for mut e in entries.drain(..) {
                    e.upstream_status = ended.upstream_status;
                    e.duration_ms = duration_ms;
                    audit.try_record(e);
                }
            }));
        }
        let request_id = ctx.log.request_id_header().clone();
        let mut log = ctx.log;
        let mut resp = match reply {
            Ok(Reply::Relayed(relay)) => {
                let respond::Relay {
                    resp,
                    idle,
                    sse,
                    prefix,
                    on_end,
                } = *relay;
                log.set_status(resp.status());
                let stalled = ctx.conn.write_stalled.clone();
                resp.map(|body| {
                    let mut relay = RelayBody::new(body, idle, sse, log)
                        .on_end(on_end)
                        .write_stall_flag(stalled);
                    if let Some(prefix) = prefix {
                        relay = relay.with_prefix(prefix);
                    }
                    relay.boxed_unsync()
                })
            }
            Ok(Reply::Local(resp)) => {
                log.set_status(resp.status());
                log.set_outcome(Outcome::Complete);
                resp
            }
            Err(e) => {
                record_refusal(log.series(), &e);
                log.set_error(e.kind());
                log.set_status(e.status());
                e.into_response()
            }
        };
        resp.headers_mut().insert(X_REQUEST_ID, request_id);
        if let Some(origin) = ctx.cors {
            crate::auth::origin::add_cors_headers(resp.headers_mut(), origin);
        }
        resp
    }
}

/// Counts a refusal in the series of its concern (authentication refusals are counted where
/// they are decided, with their reason).
fn record_refusal(series: &RouteMetrics, e: &ProxyError) {
    match e {
        ProxyError::Host(_) | ProxyError::Forbidden("host not allowed") => {
            series.admission(AdmissionRefusal::Host)
        }
        ProxyError::Forbidden(_) => series.admission(AdmissionRefusal::Origin),
        ProxyError::NotFound => series.admission(AdmissionRefusal::NotFound),
        ProxyError::MethodNotAllowed { .. } => series.admission(AdmissionRefusal::Method),
        ProxyError::Policy { .. } => series.policy(false),
        // Scopes a call needs are the policy's to demand (`method_scopes`, `tool_scopes`).
        ProxyError::Auth(r)
            if matches!(r.error, crate::auth::AuthError::CallNeedsScopes { .. }) =>
        {
            series.policy(false)
        }
        ProxyError::Limited { .. } => series.limited(e.kind()),
        _ => {}
    }
}

/// The limits of `gw`'s routes, keeping the state of `previous`.
fn build_limits(
    gw: &Gateway,
    previous: Option<&Limits>,
) -> Result<Limits, crate::limits::LimitsError> {
    let config = gw.config();
    let routes = config
        .routes
        .iter()
        .map(|r| (Arc::from(r.path.as_str()), r.limits.clone()))
        .collect();
    Limits::rebuild(&config.limits, routes, previous)
}

/// Most of a refused request's body read (and discarded) before answering.
const DRAIN_LIMIT: usize = 64 * 1024;

/// Longest wait for that body.
const DRAIN_TIME: std::time::Duration = std::time::Duration::from_secs(1);

/// Reads a little of the body of a request refused before its body was read. Answering an
/// HTTP/2 request while its body is still arriving makes hyper reset the stream, and some
/// clients (curl) then report a framing error instead of the answer; a small body read to the
/// end avoids that. Anything larger or slower is abandoned: a refusal must stay cheap.
async fn drain_refused_body(body: Incoming) {
    use http_body::Body as _;
    if body.is_end_stream() {
        return;
    }
    let _ = tokio::time::timeout(DRAIN_TIME, Limited::new(body, DRAIN_LIMIT).collect()).await;
}
