//! Phase `admit`: whether this proxy takes the request at all, before anyone is asked who
//! they are. Host (DNS rebinding, a `Host` that disagrees with the authority), the OAuth
//! metadata documents clients fetch before they have a token, the route, Origin (and CORS
//! preflights, answered here), the method and the declared body size.

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Method, Response};

use super::ctx::RequestCtx;
use super::error::ProxyError;
use super::gateway::{Gateway, RouteState};
use crate::auth::bearer;
use crate::auth::origin::{self, OriginCheck};
use crate::http::Body;

/// What `admit` decided.
pub(crate) enum Admission<'g> {
    /// Go on with this route.
    Route(&'g RouteState),
    /// The proxy answers itself (metadata document, CORS preflight).
    Answer(Response<Body>),
}

/// Runs the admission checks, in order.
pub(crate) fn admit<'g>(
    gw: &'g Gateway,
    ctx: &mut RequestCtx<'_>,
    req: &Parts,
) -> Result<Admission<'g>, ProxyError> {
    let cfg = &gw.config;
    // One host, named consistently (a `Host` that disagrees with `:authority` or an
    // absolute-form target would let the backend see another host than the one checked), and
    // one this proxy serves (anything else is DNS rebinding or a misrouted client).
    let host = origin::request_host(&req.uri, &req.headers).inspect_err(|e| {
        tracing::info!(request_id = %ctx.request_id(), reason = %e, "refused: Host");
    })?;
    if !origin::host_name_allowed(&cfg.listener.allowed_hosts, host) {
        tracing::info!(request_id = %ctx.request_id(), "refused: Host not in listener.allowed_hosts");
        return Err(ProxyError::Forbidden("host not allowed"));
    }
    // Only the validated value is forwarded (as `X-Forwarded-Host`).
    ctx.forwarded_host = HeaderValue::from_str(host).ok();

    if let Some(suffix) = req.uri.path().strip_prefix(bearer::PRM_PATH) {
        return gw.metadata(suffix, &req.method).map(Admission::Answer);
    }

    let route = gw.route(req.uri.path()).ok_or(ProxyError::NotFound)?;
    ctx.log.set_route(route.path.clone());

    let transport = route.config.transport;
    match route.config.origins.check(&req.headers) {
        OriginCheck::Absent => {}
        OriginCheck::Allowed(o) => ctx.cors = Some(o),
        OriginCheck::Refused(why) => {
            tracing::info!(request_id = %ctx.request_id(), reason = why, "refused: Origin");
            return Err(ProxyError::Forbidden("origin not allowed"));
        }
    }
    if req.method == Method::OPTIONS
        && req
            .headers
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
        && let Some(o) = ctx.cors.take()
    {
        let mut resp = Response::new(crate::http::empty());
        *resp.status_mut() = http::StatusCode::NO_CONTENT;
        *resp.headers_mut() = origin::preflight_headers(o, &req.headers, transport.allow_header());
        return Ok(Admission::Answer(resp));
    }

    if !transport.allows(&req.method) {
        return Err(ProxyError::MethodNotAllowed {
            allow: transport.allow_header(),
        });
    }
    // Declared lengths are refused up front; streamed bodies are cut where they are read.
    let limit = cfg.http.max_request_body_bytes;
    if let Some(len) = req.headers.get(header::CONTENT_LENGTH) {
        let len: u64 = len
            .to_str()
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(ProxyError::BadRequest("invalid Content-Length"))?;
        if len > limit {
            return Err(ProxyError::BodyTooLarge { limit });
        }
    }
    Ok(Admission::Route(route))
}
