//! Phase `forward`: the upstream request. Hop-by-hop and forwarding headers are replaced by
//! the proxy's own view, the client's credentials stop here (the backend gets the identity
//! the proxy proved, as headers and, where the route asks, a token the proxy signs), and the
//! request goes to the chosen endpoint (or, when it never reached that one, to another: see
//! [`crate::upstream::retry`]).

use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Response};
use hyper::body::Incoming;

use super::ctx::RequestCtx;
use super::error::ProxyError;
use super::gateway::{Gateway, RouteState};
use super::inspect::Inspected;
use super::transport::{self, Target};
use crate::auth::Identity;
use crate::auth::upstream_token::UpstreamIdentity;
use crate::http::headers::{self, X_REQUEST_ID};
use crate::mcp::Envelope;
use crate::upstream::{Outbound, SendError};

/// Rewrites the request head for the upstream and sends it; `target` names the endpoint that
/// answered afterwards (the session it issues is sealed for that one).
pub(crate) async fn forward(
    gw: &Gateway,
    route: &RouteState,
    ctx: &mut RequestCtx<'_>,
    mut parts: http::request::Parts,
    target: &mut Target,
    inspected: Inspected,
) -> Result<Response<Incoming>, ProxyError> {
    let endpoint = route
        .upstreams
        .endpoints()
        .get(target.endpoint)
        .ok_or(ProxyError::UpstreamUnavailable)?;
    ctx.log.set_upstream(&endpoint.uri);
    let h = &mut parts.headers;
    headers::strip_hop_by_hop(h);
    headers::set_forwarded(h, ctx.conn.peer.ip(), ctx.forwarded_host.as_ref());
    // The request's context (header, or `params._meta`) goes upstream as a header; when the
    // request is traced, with the upstream call's span as parent.
    headers::sanitize_traceparent(h);
    match ctx.log.upstream_started() {
        Some(tp) => {
            h.insert(headers::TRACEPARENT, tp);
        }
        None => {
            h.remove(headers::TRACEPARENT);
        }
    }
    // The proxy is the Origin check; SDK backends bound to loopback refuse any Origin.
    if !route.config.origins.forward {
        h.remove(header::ORIGIN);
    }
    if ctx.method == Method::POST {
        crate::http::media::normalise_json_body(h);
    }
    // `Host` is set per attempt: a retry goes to another endpoint.
    h.remove(header::AUTHORIZATION);
    set_identity_headers(h, &gw.identity_headers, &ctx.identity);
    h.insert(X_REQUEST_ID, ctx.log.request_id_header().clone());
    if let (Some(aud), Some(signer)) = (&route.config.upstream_token_audience, &gw.signer) {
        let rid = ctx.request_id().to_owned();
        let identity = UpstreamIdentity::new(
            ctx.identity.claims(),
            ctx.identity.cert.as_deref(),
            ctx.identity.organisation(),
            &rid,
        );
        // Without its token the backend would see an unauthenticated call: fail closed.
        let token = signer.sign(aud, &identity).map_err(|e| {
            tracing::error!(request_id = %rid, error = %e, "cannot sign the upstream token");
            ProxyError::UpstreamToken
        })?;
        let value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| ProxyError::UpstreamToken)?;
        h.insert(header::AUTHORIZATION, value);
    }
    // Compressed SSE would be buffered by the compressor; upstream hops are internal anyway.
    h.remove(header::ACCEPT_ENCODING);
    let out = Outbound {
        method: parts.method,
        uri: target.uri.clone(),
        headers: parts.headers,
        body: inspected.body,
        pinned: transport::is_pinned(route.config.transport, &ctx.method, target),
    };
    let limit = gw.config.http.max_request_body_bytes;
    let sent = route
        .upstreams
        .send(out, target.endpoint, &route.metrics)
        .await;
    ctx.log.upstream_ended(match &sent {
        Ok(s) => Ok(s.response.status().as_u16()),
        Err(e) => Err(e.kind()),
    });
    let sent = sent.map_err(|e| match e {
        SendError::Timeout => ProxyError::UpstreamTimeout,
        SendError::Unavailable => ProxyError::UpstreamUnavailable,
        SendError::BodyTooLarge => ProxyError::BodyTooLarge { limit },
        SendError::CircuitOpen { retry_after } => ProxyError::UpstreamCircuitOpen {
            id: single_id(inspected.envelope.as_ref()),
            // Rounded up: a client that waits the whole seconds finds the period over.
            retry_after: retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0),
        },
    })?;
    if sent.endpoint != target.endpoint {
        target.endpoint = sent.endpoint;
        target.uri = sent.uri;
        if let Some(e) = route.upstreams.endpoints().get(sent.endpoint) {
            ctx.log.set_upstream(&e.uri);
        }
    }
    Ok(sent.response)
}

/// The id of a POST that carries exactly one message, for errors that answer it.
fn single_id(envelope: Option<&Envelope>) -> Option<crate::mcp::Id> {
    match envelope? {
        Envelope::Single(m) => m.id.clone(),
        Envelope::Batch(_) => None,
    }
}

/// The names of the identity headers (`auth.identity_header_prefix` + suffix), made once per
/// configuration rather than per request.
#[derive(Debug)]
pub(crate) struct IdentityHeaderNames {
    prefix: String,
    issuer: Option<HeaderName>,
    subject: Option<HeaderName>,
    client_id: Option<HeaderName>,
    scopes: Option<HeaderName>,
    cert_subject: Option<HeaderName>,
    cert_uri: Option<HeaderName>,
    cert_sha256: Option<HeaderName>,
}

impl IdentityHeaderNames {
    /// The names under `prefix` (validated at load: letters, digits and `-`).
    pub(crate) fn new(prefix: &str) -> Self {
        let name =
            |suffix: &str| HeaderName::from_bytes(format!("{prefix}{suffix}").as_bytes()).ok();
        IdentityHeaderNames {
            prefix: prefix.to_owned(),
            issuer: name("issuer"),
            subject: name("subject"),
            client_id: name("client-id"),
            scopes: name("scopes"),
            cert_subject: name("cert-subject"),
            cert_uri: name("cert-uri"),
            cert_sha256: name("cert-sha256"),
        }
    }
}

/// Replaces every client-sent header with the identity prefix (or one a backend could fold
/// into it) by what the proxy proved.
fn set_identity_headers(h: &mut http::HeaderMap, names: &IdentityHeaderNames, identity: &Identity) {
    headers::strip_lookalikes(h, &names.prefix);
    let mut put = |name: &Option<HeaderName>, value: Option<HeaderValue>| {
        if let (Some(name), Some(value)) = (name, value) {
            h.insert(name.clone(), value);
        }
    };
    if let Some(t) = identity.token() {
        // `subject` is `<iss>#<sub>` when several issuers are configured: two IdPs' `alice`
        // differ.
        put(&names.issuer, t.headers.issuer.clone());
        put(&names.subject, t.headers.subject.clone());
        put(&names.client_id, t.headers.client_id.clone());
        put(&names.scopes, t.headers.scopes.clone());
    }
    if let Some(id) = &identity.cert {
        let value = |v: &str| HeaderValue::from_str(v).ok();
        put(&names.cert_subject, value(&id.subject));
        put(&names.cert_uri, id.uris.first().and_then(|u| value(u)));
        put(&names.cert_sha256, value(&id.sha256_hex));
    }
}
