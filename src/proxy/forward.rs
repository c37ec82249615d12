//! Phase `forward`: the upstream request. Hop-by-hop and forwarding headers are replaced by
//! the proxy's own view, the client's credentials stop here (the backend gets the identity
//! the proxy proved, as headers and, where the route asks, a token the proxy signs), and the
//! request goes to the chosen endpoint (or, when it never reached that one, to another: see
//! [`crate::upstream::retry`]).

use http::header::{self, HeaderValue};
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
    set_identity_headers(h, &gw.config.auth.identity_header_prefix, &ctx.identity);
    h.insert(X_REQUEST_ID, ctx.log.request_id_header().clone());
    if let (Some(aud), Some(signer)) = (&route.config.upstream_token_audience, &gw.signer) {
        let rid = ctx.request_id().to_owned();
        let identity = UpstreamIdentity::new(
            ctx.identity.claims.as_ref(),
            ctx.identity.cert.as_deref(),
            ctx.identity.organisation.as_deref(),
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

/// Replaces every client-sent header with the identity prefix (or one a backend could fold
/// into it) by what the proxy proved.
fn set_identity_headers(h: &mut http::HeaderMap, prefix: &str, identity: &Identity) {
    headers::strip_lookalikes(h, prefix);
    let mut put = |suffix: &str, value: &str| {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(format!("{prefix}{suffix}").as_bytes()),
            HeaderValue::from_str(value),
        ) {
            h.insert(name, value);
        }
    };
    if let Some(c) = &identity.claims {
        put("issuer", &c.issuer);
        // `<iss>#<sub>` when several issuers are configured: two IdPs' `alice` differ.
        if let Some(sub) = &c.backend_subject {
            put("subject", sub);
        }
        if let Some(client) = &c.client_id {
            put("client-id", client);
        }
        let scopes: Vec<&str> = c.scopes.iter().map(String::as_str).collect();
        put("scopes", &scopes.join(" "));
    }
    if let Some(id) = &identity.cert {
        put("cert-subject", &id.subject);
        if let Some(uri) = id.uris.first() {
            put("cert-uri", uri);
        }
        put("cert-sha256", &id.sha256_hex);
    }
}
