//! Streamable HTTP (2025-03-26 and later, including the stateless 2026-07-28 era): endpoint
//! choice from the sealed `Mcp-Session-Id`, and the sealing of the backend's session id in
//! answers. The client only ever sees sealed ids, bound to whoever opened the session.

use http::HeaderValue;

use super::error::ProxyError;
use super::gateway::{Gateway, RouteState};
use super::transport::{Target, with_query};
use crate::http::headers::MCP_SESSION_ID;
use crate::session::{self, PrincipalHash, SessionClaims};

/// The endpoint of the session the request names (its sealed id replaced by the backend's),
/// else the next endpoint round-robin.
pub(crate) fn pick_endpoint(
    gw: &Gateway,
    route: &RouteState,
    parts: &mut http::request::Parts,
    binding: &PrincipalHash,
) -> Result<Target, ProxyError> {
    let ups = &route.upstreams;
    let mut ids = parts.headers.get_all(MCP_SESSION_ID).iter();
    let (first, second) = (ids.next(), ids.next());
    if second.is_some() {
        return Err(ProxyError::BadRequest(
            "more than one Mcp-Session-Id header",
        ));
    }
    let mut session = None;
    let endpoint = match first {
        Some(sealed) => {
            let claims = sealed
                .to_str()
                .ok()
                .and_then(|s| gw.sealer.open(s).ok())
                .ok_or(ProxyError::UnknownSession)?;
            if !session::verify_principal(&claims, binding) {
                tracing::info!(route = %route.path, "session id presented by another principal");
                return Err(ProxyError::UnknownSession);
            }
            if claims.expired(gw.config.sessions.max_lifetime) {
                tracing::info!(route = %route.path, "session id past sessions.max_lifetime");
                return Err(ProxyError::UnknownSession);
            }
            let idx = ups
                .by_tag(&claims.endpoint_tag)
                .ok_or(ProxyError::UnknownSession)?;
            let backend_id = HeaderValue::from_bytes(&claims.backend_session_id)
                .map_err(|_| ProxyError::UnknownSession)?;
            let client_id = parts.headers.insert(MCP_SESSION_ID, backend_id);
            session = client_id.map(|sealed| (claims.backend_session_id, sealed));
            idx
        }
        None => ups.pick(),
    };
    let uri = with_query(&ups.endpoints()[endpoint].uri, parts.uri.query())?;
    Ok(Target {
        endpoint,
        uri,
        session,
    })
}

/// Replaces the backend's `Mcp-Session-Id` in an answer by the sealed id: the one the client
/// sent when the backend names the same session, else a new one bound to `binding`.
pub(crate) fn seal_answer_session(
    gw: &Gateway,
    route: &RouteState,
    target: &Target,
    binding: PrincipalHash,
    headers: &mut http::HeaderMap,
    request_id: &str,
) {
    let Some(id) = headers.get(MCP_SESSION_ID) else {
        return;
    };
    let same_session = target
        .session
        .as_ref()
        .filter(|(backend, _)| backend.as_slice() == id.as_bytes())
        .map(|(_, sealed)| sealed.clone());
    let tag = route.upstreams.endpoints()[target.endpoint].tag;
    match same_session.or_else(|| {
        let claims = SessionClaims::new(tag, id.as_bytes(), binding);
        gw.sealer
            .seal(&claims)
            .ok()
            .and_then(|t| HeaderValue::from_str(&t).ok())
    }) {
        Some(sealed) => {
            headers.insert(MCP_SESSION_ID, sealed);
        }
        None => {
            tracing::warn!(%request_id, "backend session id cannot be sealed (too long?); dropped");
            headers.remove(MCP_SESSION_ID);
        }
    }
}
