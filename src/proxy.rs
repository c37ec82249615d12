//! The per-request pipeline. A request passes, in order:
//! Host check → protected resource metadata → route → Origin (and CORS preflight) →
//! authentication (client certificate, bearer token, scopes) → method → body limit →
//! endpoint choice (sealed, principal-bound session or round-robin) → MCP inspection of POST
//! bodies (envelope, protocol headers) → policy (methods, scopes, tools, resources; audit
//! records) → upstream request (headers rewritten, identity set, client token removed) →
//! response (session id sealed, `tools/list` filtered, body relayed by [`RelayBody`]) →
//! access log and audit lines.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use base64::Engine as _;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use crate::audit::{AuditEntry, AuditLog, Decision};
use crate::auth::bearer::{self, BearerError, SharedIssuers};
use crate::auth::jwt::Claims;
use crate::auth::mtls::ClientIdentity;
use crate::auth::origin::{self, OriginCheck};
use crate::auth::upstream_token::{UpstreamIdentity, UpstreamSigner};
use crate::config::{Config, RequireAuth, Route, Transport};
use crate::http::Body;
use crate::http::error::ProxyError;
use crate::http::headers::{self, MCP_METHOD, MCP_SESSION_ID, X_ACCEL_BUFFERING, X_REQUEST_ID};
use crate::mcp::{self, ProtocolVersion};
use crate::policy::{Grants, Principal, Verdict};
use crate::session::{self, PrincipalHash, SessionClaims, SessionSealer};
use crate::shutdown::Shutdown;
use crate::sse::legacy::{EndpointRewriter, LegacySessions};
use crate::sse::{RelayBody, SseOptions};
use crate::telemetry::AccessLog;
use crate::upstream::{SendError, UpstreamSetupError, Upstreams};

/// One route, ready to serve.
#[derive(Debug)]
struct RouteState {
    /// Shared with access-log records and legacy session tokens.
    path: Arc<str>,
    config: Route,
    upstreams: Upstreams,
}

/// An upstream client for one route could not be built.
#[derive(Debug, thiserror::Error)]
#[error("routes[{index}] (path {path}): {error}")]
pub struct RouteSetupError {
    /// Position of the route in the config.
    pub index: usize,
    /// The route's path.
    pub path: String,
    /// What failed.
    pub error: UpstreamSetupError,
}

/// An immutable snapshot of everything requests need; replaced as a whole on reload.
#[derive(Debug)]
pub struct Gateway {
    config: Arc<Config>,
    issuers: SharedIssuers,
    sealer: Arc<SessionSealer>,
    signer: Option<UpstreamSigner>,
    routes: Vec<RouteState>,
}

impl Gateway {
    /// Builds clients and routes from a validated config, with the issuer validators built
    /// from its `[auth]` section and the sealer of its `[sessions]` section.
    pub fn new(
        config: Arc<Config>,
        issuers: SharedIssuers,
        sealer: Arc<SessionSealer>,
        signer: Option<UpstreamSigner>,
    ) -> Result<Self, RouteSetupError> {
        let routes = config
            .routes
            .iter()
            .enumerate()
            .map(|(index, r)| {
                let upstreams = Upstreams::new(r).map_err(|error| RouteSetupError {
                    index,
                    path: r.path.clone(),
                    error,
                })?;
                Ok(RouteState {
                    path: Arc::from(r.path.as_str()),
                    config: r.clone(),
                    upstreams,
                })
            })
            .collect::<Result<_, RouteSetupError>>()?;
        Ok(Gateway {
            config,
            issuers,
            sealer,
            signer,
            routes,
        })
    }

    /// The same snapshot with fresh upstream clients (their certificate files changed).
    pub fn rebuild(&self) -> Result<Gateway, RouteSetupError> {
        Gateway::new(
            self.config.clone(),
            self.issuers.clone(),
            self.sealer.clone(),
            self.signer.clone(),
        )
    }

    /// The JWKS document of the upstream token signing key, when one is configured.
    pub fn upstream_jwks(&self) -> Option<String> {
        self.signer.as_ref().map(UpstreamSigner::jwks)
    }

    /// The configuration this snapshot was built from.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    fn route(&self, path: &str) -> Option<&RouteState> {
        self.routes.iter().find(|r| &*r.path == path)
    }

    /// Answers `GET /.well-known/oauth-protected-resource<suffix>`: the document of the
    /// token-protected route at `<suffix>`, or of the first such route for the bare path.
    fn metadata(&self, suffix: &str, method: &Method) -> Result<Response<Body>, ProxyError> {
        if method != Method::GET {
            return Err(ProxyError::MethodNotAllowed { allow: "GET" });
        }
        let protected = |r: &&RouteState| !r.config.issuers.is_empty();
        let route = if suffix.is_empty() || suffix == "/" {
            self.routes.iter().find(protected)
        } else {
            self.routes
                .iter()
                .filter(protected)
                .find(|r| *r.path == *suffix)
        }
        .ok_or(ProxyError::NotFound)?;
        let doc = bearer::metadata_document(&route.config, &self.config.auth);
        let mut resp = Response::new(crate::http::full(doc.to_string()));
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=300"),
        );
        // Browser-based clients fetch it cross-origin before they have any credentials.
        h.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        Ok(resp)
    }
}

/// What the proxy knows about the connection a request arrived on.
#[derive(Debug)]
pub struct ConnInfo {
    /// Client socket address.
    pub peer: SocketAddr,
    /// Identity from the client certificate, when one was presented and verified.
    pub client_cert: Option<Arc<ClientIdentity>>,
}

/// The proxy service shared by all connections.
pub struct Proxy {
    gateway: ArcSwap<Gateway>,
    audit: Option<Arc<AuditLog>>,
    legacy: Arc<LegacySessions>,
    shutdown: Shutdown,
}

/// What the pipeline produced for a request that was not refused.
enum Relayed {
    /// The upstream's answer, its body idle limit, and SSE options for event streams (boxed:
    /// they are large and only event streams have them).
    Upstream(Response<Incoming>, Duration, Option<Box<SseOptions>>),
    /// An answer the proxy gives itself (CORS preflight).
    Local(Response<Body>),
}

/// Where a request goes upstream.
struct Target {
    endpoint: usize,
    uri: Uri,
}

impl Proxy {
    /// A proxy serving `gateway` until `shutdown`, recording MCP calls in `audit` if given.
    pub fn new(gateway: Gateway, shutdown: Shutdown, audit: Option<Arc<AuditLog>>) -> Self {
        Proxy {
            gateway: ArcSwap::from_pointee(gateway),
            audit,
            legacy: Arc::new(LegacySessions::default()),
            shutdown,
        }
    }

    /// Replaces the snapshot; requests already running keep the one they started with.
    pub fn swap(&self, gateway: Gateway) {
        self.gateway.store(Arc::new(gateway));
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
        let client = conn.peer;
        let request_id = headers::request_id(req.headers());
        let mut log = AccessLog::new(
            request_id.clone(),
            client,
            req.method().clone(),
            req.uri().path(),
        );
        log.set_mcp_method(req.headers().get(MCP_METHOD));
        let gw = self.gateway.load_full();
        let mut cors = None;
        // The body stays here until the pipeline takes it, so a refusal can drain it.
        let (parts, body) = req.into_parts();
        let mut body = Some(body);

        if let Some(id) = &conn.client_cert {
            log.set_principal(id.principal());
        }
        let mut resp = match self
            .relay(&gw, parts, &mut body, conn, &mut cors, &mut log)
            .await
        {
            Ok(Relayed::Upstream(resp, idle, sse)) => {
                log.set_status(resp.status());
                resp.map(|body| RelayBody::new(body, idle, sse.map(|s| *s), log).boxed_unsync())
            }
            Ok(Relayed::Local(resp)) => {
                log.set_status(resp.status());
                log.set_outcome(crate::telemetry::Outcome::Complete);
                resp
            }
            Err(e) => {
                if let Some(b) = body.take() {
                    drain_refused_body(b).await;
                }
                let resp = e_response(e, &mut log);
                drop(log);
                resp
            }
        };
        resp.headers_mut().insert(X_REQUEST_ID, request_id);
        if let Some(origin) = cors {
            origin::add_cors_headers(resp.headers_mut(), origin);
        }
        resp
    }

    async fn relay(
        &self,
        gw: &Gateway,
        req: http::request::Parts,
        req_body: &mut Option<Incoming>,
        conn: &ConnInfo,
        cors: &mut Option<HeaderValue>,
        log: &mut AccessLog,
    ) -> Result<Relayed, ProxyError> {
        let cfg = &gw.config;
        // 0. Host: a name this proxy does not serve means DNS rebinding or a misrouted client.
        if !origin::host_allowed(&cfg.listener.allowed_hosts, &req.uri, &req.headers) {
            tracing::info!(request_id = %log.request_id(), "refused: Host not in listener.allowed_hosts");
            return Err(ProxyError::Forbidden("host not allowed"));
        }

        // 0b. Protected Resource Metadata, which clients fetch before they have a token.
        if let Some(suffix) = req.uri.path().strip_prefix(bearer::PRM_PATH) {
            return gw.metadata(suffix, &req.method).map(Relayed::Local);
        }

        // 1. Route.
        let route = gw.route(req.uri.path()).ok_or(ProxyError::NotFound)?;
        log.set_route(route.path.clone());

        // 1b. Origin: browsers must come from a listed origin; CORS preflights end here.
        match route.config.origins.check(&req.headers) {
            OriginCheck::Absent => {}
            OriginCheck::Allowed(o) => *cors = Some(o),
            OriginCheck::Refused(why) => {
                tracing::info!(request_id = %log.request_id(), reason = why, "refused: Origin");
                return Err(ProxyError::Forbidden("origin not allowed"));
            }
        }
        let methods = match route.config.transport {
            Transport::StreamableHttp => "GET, POST, DELETE",
            Transport::Sse => "GET, POST",
        };
        if req.method == Method::OPTIONS
            && req
                .headers
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
            && let Some(o) = cors.take()
        {
            let mut resp = Response::new(crate::http::empty());
            *resp.status_mut() = http::StatusCode::NO_CONTENT;
            *resp.headers_mut() = origin::preflight_headers(o, &req.headers, methods);
            return Ok(Relayed::Local(resp));
        }

        // 1c. Identity the route demands.
        let claims = self.authenticate(gw, route, &req, conn).await?;
        if let Some(c) = &claims {
            log.set_principal(c.subject.as_deref().unwrap_or("-"));
        }

        // 2. Method.
        let method = req.method.clone();
        let allowed = match route.config.transport {
            Transport::StreamableHttp => {
                matches!(method, Method::POST | Method::GET | Method::DELETE)
            }
            Transport::Sse => matches!(method, Method::POST | Method::GET),
        };
        if !allowed {
            return Err(ProxyError::MethodNotAllowed { allow: methods });
        }

        // 3. Body limit, up front when the length is declared; streamed bodies are cut by `Limited`.
        let limit = cfg.http.max_request_body_bytes;
        if let Some(len) = &req.headers.get(header::CONTENT_LENGTH) {
            let len: u64 = len
                .to_str()
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or(ProxyError::BadRequest("invalid Content-Length"))?;
            if len > limit {
                return Err(ProxyError::BodyTooLarge { limit });
            }
        }

        // 4. Endpoint: session affinity first, then round-robin. An unknown session is
        // refused here, before its body is read.
        let mut parts = req;
        let body = req_body
            .take()
            .ok_or(ProxyError::BadRequest("request body already used"))?;
        let bound = session_principal(claims.as_ref(), conn.client_cert.as_deref());
        let target = choose_target(gw, route, &method, &mut parts, &bound)?;
        let endpoint = &route.upstreams.endpoints()[target.endpoint];
        log.set_upstream(&endpoint.uri);

        // 4b. MCP inspection of POSTs: the JSON-RPC envelope (capped, fully read so the
        // decision and the backend see the same bytes) and, in the 2026-07-28 era, the
        // Mcp-Method / Mcp-Name headers against it. GET and DELETE carry no JSON-RPC body.
        let envelope;
        let mut body_digest = None;
        let body: Body = if method == Method::POST {
            let (bytes, e) = self
                .inspect_post(route, &parts.headers, body, limit, cfg, log)
                .await?;
            envelope = Some(e);
            if self.audit.is_some() {
                body_digest = Some(crate::audit::args_digest(&bytes));
            }
            crate::http::full(bytes)
        } else {
            envelope = None;
            Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX)).boxed_unsync()
        };

        // 4c. Policy: methods, scopes per method and tool, tools and resources per principal.
        let organisation = organisation(claims.as_ref());
        let principal = Principal {
            claims: claims.as_ref(),
            cert: conn.client_cert.as_deref(),
            organisation: organisation.as_deref(),
        };
        let policy = &route.config.policy;
        let grants = (!policy.is_empty()).then(|| policy.grants(&principal));
        let mut tools_list_ids = Vec::new();
        let mut calls = Vec::new();
        for m in envelope.iter().flat_map(|e| e.messages()) {
            let reason = match &grants {
                Some(grants) => {
                    let verdict = policy.check(grants, &principal, &route.config.scopes, m);
                    if !matches!(verdict, Verdict::Allow(_)) {
                        self.audit_refusal(route, &principal, m, &verdict, body_digest, log);
                    }
                    let reason = self.enforce(cfg, route, &principal, m, verdict)?;
                    if grants.is_restricted()
                        && m.is_request()
                        && m.method.as_deref() == Some("tools/list")
                    {
                        tools_list_ids.extend(m.id.clone());
                    }
                    reason
                }
                None => "no policy on route".to_owned(),
            };
            if self.audit.is_some() && m.method.is_some() {
                calls.push(audit_entry(
                    route,
                    &principal,
                    m,
                    Decision::Allow,
                    reason,
                    body_digest,
                    log,
                ));
            }
        }
        if let Some(audit) = &self.audit {
            log.set_audit(audit.clone(), calls);
        }
        // Answers to `tools/list` shrink to the tools the principal may call. Streams the
        // proxy cannot pair with requests (legacy streams, GET streams that may replay
        // answers) are filtered on the shape of every answer.
        let tools_filter: Option<Arc<Grants>> = grants
            .filter(|g| g.is_restricted())
            .filter(|_| !tools_list_ids.is_empty() || method == Method::GET)
            .map(Arc::new);

        // 5. Upstream request.
        let original_host = parts.headers.get(header::HOST).cloned().or_else(|| {
            parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        let h = &mut parts.headers;
        headers::strip_hop_by_hop(h);
        headers::set_forwarded(h, conn.peer.ip(), original_host.as_ref());
        headers::sanitize_traceparent(h);
        h.insert(header::HOST, endpoint.host.clone());
        // The client's credentials stop here: the backend gets the identity the proxy proved.
        h.remove(header::AUTHORIZATION);
        set_identity_headers(
            h,
            &cfg.auth.identity_header_prefix,
            claims.as_ref(),
            conn.client_cert.as_deref(),
        );
        h.insert(X_REQUEST_ID, log.request_id_header().clone());
        if let (Some(aud), Some(signer)) = (&route.config.upstream_token_audience, &gw.signer) {
            let rid = log.request_id().to_owned();
            let identity = UpstreamIdentity::new(
                claims.as_ref(),
                conn.client_cert.as_deref(),
                organisation.as_deref(),
                &rid,
            );
            // Without its token the backend would see an unauthenticated call: fail closed.
            let token = signer.sign(aud, &identity).map_err(|e| {
                tracing::error!(request_id = %rid, error = %e, "cannot sign the upstream token");
                ProxyError::UpstreamUnavailable
            })?;
            let value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| ProxyError::UpstreamUnavailable)?;
            h.insert(header::AUTHORIZATION, value);
        }
        // Compressed SSE would be buffered by the compressor; upstream hops are internal anyway.
        h.remove(header::ACCEPT_ENCODING);
        parts.uri = target.uri;
        parts.version = http::Version::HTTP_11;
        let upstream_req = Request::from_parts(parts, body);

        let mut resp = route
            .upstreams
            .send(upstream_req)
            .await
            .map_err(|e| match e {
                SendError::Timeout => ProxyError::UpstreamTimeout,
                SendError::Unavailable => ProxyError::UpstreamUnavailable,
                SendError::BodyTooLarge => ProxyError::BodyTooLarge { limit },
            })?;

        // 6. Response head.
        let h = resp.headers_mut();
        headers::strip_hop_by_hop(h);
        if route.config.transport == Transport::StreamableHttp
            && let Some(id) = h.get(MCP_SESSION_ID)
        {
            // The client only ever sees the sealed id, bound to whoever opened the session.
            let claims = SessionClaims::new(endpoint.tag, id.as_bytes(), bound);
            match gw
                .sealer
                .seal(&claims)
                .ok()
                .and_then(|t| HeaderValue::from_str(&t).ok())
            {
                Some(sealed) => {
                    h.insert(MCP_SESSION_ID, sealed);
                }
                None => {
                    tracing::warn!(request_id = %log.request_id(), "backend session id cannot be sealed (too long?); dropped");
                    h.remove(MCP_SESSION_ID);
                }
            }
        }
        let is_sse = h
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("text/event-stream")
            });
        if !is_sse {
            let is_json = h
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| {
                    v.trim_start()
                        .to_ascii_lowercase()
                        .starts_with("application/json")
                });
            // Legacy POSTs are answered 202 and their answers come on the GET stream, which
            // has its own filter.
            if let Some(grants) = tools_filter
                && !tools_list_ids.is_empty()
                && is_json
            {
                return filter_json_answer(resp, &tools_list_ids, &grants, route, log)
                    .await
                    .map(Relayed::Local);
            }
            return Ok(Relayed::Upstream(
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
        // Standalone GET streams are resumable elsewhere, so they end as soon as draining
        // starts; answers to POSTs (calls in flight) and legacy streams (which carry the
        // replies of their session) get the whole drain window.
        let stop = if route.config.transport == Transport::StreamableHttp && method == Method::GET {
            self.shutdown.drain().clone().cancelled_owned()
        } else {
            self.shutdown.deadline().clone().cancelled_owned()
        };
        let rewriter =
            (route.config.transport == Transport::Sse && method == Method::GET).then(|| {
                let sealer = gw.sealer.clone();
                let tag = endpoint.tag;
                EndpointRewriter::new(
                    self.legacy.clone(),
                    route.path.clone(),
                    target.endpoint,
                    endpoint.uri.clone(),
                    Box::new(move |uri: &str| {
                        sealer
                            .seal_legacy(&session::LegacyClaims::new(tag, uri, bound))
                            .ok()
                    }),
                )
            });
        Ok(Relayed::Upstream(
            resp,
            cfg.sse.idle_timeout,
            Some(Box::new(SseOptions {
                heartbeat_interval: cfg.sse.heartbeat_interval,
                stop,
                rewriter,
                tools_filter: tools_filter.map(|g| {
                    let allow: Box<dyn Fn(&str) -> bool + Send + Sync> =
                        Box::new(move |tool: &str| g.tool_allowed(tool));
                    if tools_list_ids.is_empty() {
                        mcp::SseToolsFilter::any_id(allow)
                    } else {
                        mcp::SseToolsFilter::new(tools_list_ids, allow)
                    }
                }),
            })),
        ))
    }

    /// Writes the audit line of a call the policy refuses.
    fn audit_refusal(
        &self,
        route: &RouteState,
        principal: &Principal<'_>,
        m: &mcp::Message,
        verdict: &Verdict,
        digest: Option<[u8; 32]>,
        log: &AccessLog,
    ) {
        let Some(audit) = &self.audit else { return };
        let reason = match verdict {
            Verdict::Allow(r) | Verdict::Deny(r) => r.clone(),
            Verdict::InsufficientScope(needed) => {
                format!("insufficient scope: needs {}", needed.join(" "))
            }
        };
        audit.try_record(audit_entry(
            route,
            principal,
            m,
            Decision::Deny,
            reason,
            digest,
            log,
        ));
    }

    /// Turns a policy verdict into the request's fate: the allow reason, or the refusal that
    /// answers the whole request.
    fn enforce(
        &self,
        cfg: &Config,
        route: &RouteState,
        principal: &Principal<'_>,
        m: &mcp::Message,
        verdict: Verdict,
    ) -> Result<String, ProxyError> {
        match verdict {
            Verdict::Allow(reason) => Ok(reason),
            Verdict::Deny(reason) => {
                tracing::info!(route = %route.path, principal = %principal.label(), method = m.method.as_deref().unwrap_or("-"), %reason, "refused by policy");
                Err(ProxyError::Protocol {
                    status: StatusCode::FORBIDDEN,
                    body: mcp::json_rpc_error_for(m.id.as_ref(), POLICY_DENIED, &reason, None),
                    kind: "policy_denied",
                })
            }
            Verdict::InsufficientScope(needed) => {
                let metadata = bearer::metadata_url(&cfg.listener.public_url, &route.config.path);
                Err(ProxyError::Auth {
                    status: StatusCode::FORBIDDEN,
                    challenge: bearer::challenge(
                        &metadata,
                        &needed,
                        Some(("insufficient_scope", "the call needs more scopes")),
                    ),
                    message: "insufficient scope",
                })
            }
        }
    }

    /// Checks what the route demands (client certificate, bearer token, scopes) and returns
    /// the token's claims when one was validated.
    async fn authenticate(
        &self,
        gw: &Gateway,
        route: &RouteState,
        req: &http::request::Parts,
        conn: &ConnInfo,
    ) -> Result<Option<Claims>, ProxyError> {
        let has_cert = conn.client_cert.is_some();
        let (cert_needed, token_needed) = match route.config.require {
            RequireAuth::None => return Ok(None),
            RequireAuth::Certificate => (true, false),
            RequireAuth::Token => (false, true),
            RequireAuth::Either => (false, !has_cert),
            RequireAuth::Both => (true, true),
        };
        if cert_needed && !has_cert {
            return Err(ProxyError::Forbidden("client certificate required"));
        }
        let cfg = &gw.config;
        let metadata = bearer::metadata_url(&cfg.listener.public_url, &route.config.path);
        let scopes = &route.config.scopes;
        let refuse = |status: StatusCode, error: Option<(&str, &str)>, message: &'static str| {
            ProxyError::Auth {
                status,
                challenge: bearer::challenge(&metadata, scopes, error),
                message,
            }
        };
        let token = match bearer::extract(&req.headers, req.uri.query()) {
            Ok(t) => t,
            Err(BearerError::InQuery) => {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    Some((
                        "invalid_request",
                        "send the token in the Authorization header",
                    )),
                    "tokens in the query string are not accepted",
                ));
            }
            Err(BearerError::Malformed) => {
                return Err(refuse(
                    StatusCode::UNAUTHORIZED,
                    Some(("invalid_token", "malformed bearer credentials")),
                    "invalid token",
                ));
            }
        };
        let Some(token) = token else {
            if token_needed {
                return Err(refuse(
                    StatusCode::UNAUTHORIZED,
                    None,
                    "authentication required",
                ));
            }
            return Ok(None);
        };
        let claims = match gw.issuers.validate(token, &route.config).await {
            Ok(c) => c,
            Err(e) if e.is_server_side() => {
                tracing::warn!(route = %route.path, error = %e, "token keys unavailable");
                return Err(refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    Some(("temporarily_unavailable", e.description())),
                    "token validation unavailable",
                ));
            }
            Err(e) => {
                tracing::info!(route = %route.path, error = %e, "token refused");
                return Err(refuse(
                    StatusCode::UNAUTHORIZED,
                    Some(("invalid_token", e.description())),
                    "invalid token",
                ));
            }
        };
        // RFC 8705: a token bound to a certificate is only good with that certificate, whether
        // or not the route demands binding.
        let presented = conn
            .client_cert
            .as_ref()
            .map(|id| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id.sha256));
        let bound_ok = match (&claims.cnf_x5t_s256, &presented) {
            (Some(want), Some(have)) => want == have,
            (Some(_), None) => false,
            (None, _) => !route.config.certificate_bound_tokens,
        };
        if !bound_ok {
            tracing::info!(route = %route.path, "token refused: not bound to the presented client certificate");
            return Err(refuse(
                StatusCode::UNAUTHORIZED,
                Some((
                    "invalid_token",
                    "the token is not bound to the presented client certificate",
                )),
                "invalid token",
            ));
        }
        if !scopes.iter().all(|s| claims.scopes.contains(s)) {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                Some(("insufficient_scope", "the token lacks a required scope")),
                "insufficient scope",
            ));
        }
        Ok(Some(claims))
    }

    /// Reads and checks a POST body as JSON-RPC for `route`, returning the bytes to forward
    /// and what they say.
    async fn inspect_post(
        &self,
        route: &RouteState,
        headers: &http::HeaderMap,
        body: Incoming,
        limit: u64,
        cfg: &Config,
        log: &mut AccessLog,
    ) -> Result<(bytes::Bytes, mcp::Envelope), ProxyError> {
        let version = match route.config.transport {
            Transport::StreamableHttp => {
                mcp::protocol_version(headers).map_err(|e| ProxyError::Protocol {
                    status: e.status(),
                    body: e.body(),
                    kind: e.kind(),
                })?
            }
            Transport::Sse => ProtocolVersion::V2024_11_05,
        };
        let cap = usize::try_from(limit).unwrap_or(usize::MAX);
        // A client that trickles its body is cut off like one that trickles its head.
        let bytes =
            match tokio::time::timeout(cfg.http.header_read_timeout, mcp::read_capped(body, cap))
                .await
            {
                Ok(Ok(b)) => b,
                Ok(Err(e)) => return Err(envelope_error(&e)),
                Err(_) => {
                    return Err(ProxyError::Protocol {
                        status: StatusCode::REQUEST_TIMEOUT,
                        body: mcp::json_rpc_error_body(
                            -32000,
                            "request body not received in time",
                            None,
                        ),
                        kind: "body_timeout",
                    });
                }
            };
        let envelope = mcp::envelope::parse_for(&bytes, version).map_err(|e| envelope_error(&e))?;
        if let Some(m) = envelope.messages().iter().find_map(|m| m.method.as_deref())
            && let Ok(v) = HeaderValue::from_str(m)
        {
            log.set_mcp_method(Some(&v));
        }
        if route.config.transport == Transport::StreamableHttp {
            for m in envelope.messages() {
                mcp::check_consistency(headers, m, version).map_err(|e| ProxyError::Protocol {
                    status: e.status(),
                    body: e.body(),
                    kind: e.kind(),
                })?;
            }
        }
        Ok((bytes, envelope))
    }
}

/// The principal a session is bound to: the token's issuer and subject (plus the
/// certificate when the token is bound to it), else the client certificate.
fn session_principal(claims: Option<&Claims>, cert: Option<&ClientIdentity>) -> PrincipalHash {
    match claims {
        Some(c) => session::principal_hash(
            Some(&c.issuer),
            c.subject.as_deref().or(c.client_id.as_deref()),
            c.cnf_x5t_s256
                .as_ref()
                .and(cert)
                .map(|id| id.sha256.as_slice()),
        ),
        None => session::principal_hash(None, None, cert.map(|id| id.sha256.as_slice())),
    }
}

/// Where a request goes: the endpoint its sealed session names (refused as unknown when it
/// does not open or belongs to another principal), else round-robin.
fn choose_target(
    gw: &Gateway,
    route: &RouteState,
    method: &Method,
    parts: &mut http::request::Parts,
    bound: &PrincipalHash,
) -> Result<Target, ProxyError> {
    let ups = &route.upstreams;
    match route.config.transport {
        Transport::StreamableHttp => {
            let mut ids = parts.headers.get_all(MCP_SESSION_ID).iter();
            let (first, second) = (ids.next(), ids.next());
            if second.is_some() {
                return Err(ProxyError::BadRequest(
                    "more than one Mcp-Session-Id header",
                ));
            }
            let endpoint = match first {
                Some(sealed) => {
                    let claims = sealed
                        .to_str()
                        .ok()
                        .and_then(|s| gw.sealer.open(s).ok())
                        .ok_or(ProxyError::UnknownSession)?;
                    if !session::verify_principal(&claims, bound) {
                        tracing::info!(route = %route.path, "session id presented by another principal");
                        return Err(ProxyError::UnknownSession);
                    }
                    let idx = ups
                        .by_tag(&claims.endpoint_tag)
                        .ok_or(ProxyError::UnknownSession)?;
                    let backend_id = HeaderValue::from_bytes(&claims.backend_session_id)
                        .map_err(|_| ProxyError::UnknownSession)?;
                    parts.headers.insert(MCP_SESSION_ID, backend_id);
                    idx
                }
                None => ups.pick(),
            };
            let uri = with_query(&ups.endpoints()[endpoint].uri, parts.uri.query())?;
            Ok(Target { endpoint, uri })
        }
        Transport::Sse if *method == Method::GET => {
            let endpoint = ups.pick();
            let uri = with_query(&ups.endpoints()[endpoint].uri, parts.uri.query())?;
            Ok(Target { endpoint, uri })
        }
        Transport::Sse => {
            let token = parts
                .uri
                .query()
                .and_then(|q| query_param(q, "sessionId"))
                .ok_or(ProxyError::BadRequest("missing sessionId query parameter"))?;
            let claims = gw
                .sealer
                .open_legacy(token)
                .map_err(|_| ProxyError::UnknownSession)?;
            if !claims.principal.matches(bound) {
                tracing::info!(route = %route.path, "legacy session id presented by another principal");
                return Err(ProxyError::UnknownSession);
            }
            // The tag must name one of this route's endpoints, so a token from another route
            // (or from before a config change) is unknown here.
            let endpoint = ups
                .by_tag(&claims.endpoint_tag)
                .ok_or(ProxyError::UnknownSession)?;
            let uri: Uri = claims
                .message_uri
                .parse()
                .map_err(|_| ProxyError::UnknownSession)?;
            if uri.authority() != ups.endpoints()[endpoint].uri.authority() {
                return Err(ProxyError::UnknownSession);
            }
            Ok(Target { endpoint, uri })
        }
    }
}

/// Replaces every client-sent header with the identity prefix by what the proxy proved.
fn set_identity_headers(
    h: &mut http::HeaderMap,
    prefix: &str,
    claims: Option<&Claims>,
    cert: Option<&ClientIdentity>,
) {
    let forged: Vec<http::HeaderName> = h
        .keys()
        .filter(|k| k.as_str().starts_with(prefix))
        .cloned()
        .collect();
    for k in forged {
        h.remove(k);
    }
    let mut put = |suffix: &str, value: &str| {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(format!("{prefix}{suffix}").as_bytes()),
            HeaderValue::from_str(value),
        ) {
            h.insert(name, value);
        }
    };
    if let Some(c) = claims {
        put("issuer", &c.issuer);
        if let Some(sub) = &c.backend_subject {
            put("subject", sub);
        }
        if let Some(client) = &c.client_id {
            put("client-id", client);
        }
        let scopes: Vec<&str> = c.scopes.iter().map(String::as_str).collect();
        put("scopes", &scopes.join(" "));
    }
    if let Some(id) = cert {
        put("cert-subject", &id.subject);
        if let Some(uri) = id.uris.first() {
            put("cert-uri", uri);
        }
        put("cert-sha256", &id.sha256_hex);
    }
}

/// The audit record of one call (upstream status and duration are filled in at the end).
fn audit_entry(
    route: &RouteState,
    principal: &Principal<'_>,
    m: &mcp::Message,
    decision: Decision,
    reason: String,
    digest: Option<[u8; 32]>,
    log: &AccessLog,
) -> AuditEntry {
    AuditEntry {
        time: std::time::SystemTime::now(),
        request_id: log.request_id().to_owned(),
        principal: principal.label(),
        organisation: principal.organisation.map(str::to_owned),
        route: route.path.to_string(),
        method: m.method.clone().unwrap_or_default(),
        target: m.tool_name.clone().or_else(|| m.resource_uri.clone()),
        decision,
        reason,
        upstream_status: None,
        duration_ms: 0,
        args_sha256: digest,
    }
}

/// Most of a refused request's body read (and discarded) before answering.
const DRAIN_LIMIT: usize = 64 * 1024;

/// Longest wait for that body.
const DRAIN_TIME: Duration = Duration::from_secs(1);

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

/// JSON-RPC error code of a call the route policy refuses (server-defined range).
pub const POLICY_DENIED: i64 = -32003;

/// Largest JSON `tools/list` answer the proxy buffers to filter.
const MAX_FILTERED_ANSWER: usize = 16 * 1024 * 1024;

/// The principal's organisation, as its token's issuer vouched for it at validation.
fn organisation(claims: Option<&Claims>) -> Option<String> {
    claims?.organisation.clone()
}

/// Reads a JSON answer to `tools/list` (capped, within the body idle limit) and removes the
/// tools `grants` do not allow. Fails closed: an answer that cannot be filtered is a 502.
async fn filter_json_answer(
    resp: Response<Incoming>,
    ids: &[mcp::Id],
    grants: &Grants,
    route: &RouteState,
    log: &mut AccessLog,
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
            tracing::warn!(request_id = %log.request_id(), error = %e, "tools/list answer unreadable");
            return Err(ProxyError::UpstreamUnavailable);
        }
        Err(_) => return Err(ProxyError::UpstreamTimeout),
    };
    let filtered = mcp::filter_json(&bytes, ids, |t| grants.tool_allowed(t)).map_err(|e| {
        tracing::warn!(request_id = %log.request_id(), error = %e, "tools/list answer cannot be filtered");
        ProxyError::UpstreamUnavailable
    })?;
    parts.headers.remove(header::CONTENT_LENGTH);
    log.add_bytes(filtered.len());
    Ok(Response::from_parts(parts, crate::http::full(filtered)))
}

fn envelope_error(e: &mcp::EnvelopeError) -> ProxyError {
    ProxyError::Protocol {
        status: e.status(),
        body: e.body(),
        kind: e.kind(),
    }
}

fn e_response(e: ProxyError, log: &mut AccessLog) -> Response<Body> {
    log.set_error(e.kind());
    log.set_status(e.status());
    e.into_response()
}

fn with_query(base: &Uri, query: Option<&str>) -> Result<Uri, ProxyError> {
    match query {
        None => Ok(base.clone()),
        Some(q) => format!("{base}?{q}")
            .parse()
            .map_err(|_| ProxyError::BadRequest("invalid query string")),
    }
}

fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name && !v.is_empty()).then_some(v)
    })
}
