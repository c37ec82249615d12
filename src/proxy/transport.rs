//! What differs between the two MCP transports, behind one small set of calls: the methods a
//! route takes, how the protocol version is read, how a request finds its endpoint, and what
//! an event stream needs besides relaying. Each transport's details live in its own module:
//! [`super::streamable`] (Streamable HTTP, every era since 2025-03-26) and [`super::legacy`]
//! (HTTP+SSE, 2024-11-05; deleting that file and its arm here retires it).

use http::{HeaderValue, Method, Uri};

use super::error::ProxyError;
use super::gateway::{Gateway, RouteState};
use super::{legacy, streamable};
use crate::config::Transport;
use crate::mcp::{McpHeaderError, ProtocolVersion};
use crate::session::PrincipalHash;

/// Where a request goes upstream.
pub(crate) struct Target {
    /// Index of the endpoint in the route's upstreams.
    pub(crate) endpoint: usize,
    /// The upstream URI (query included).
    pub(crate) uri: Uri,
    /// The backend session id inside the sealed id the client sent, and that sealed id:
    /// answers naming the same backend session hand the client the same id back, so the id
    /// (and the issue time `sessions.max_lifetime` counts from) is stable for the session.
    pub(crate) session: Option<(Vec<u8>, HeaderValue)>,
}

impl Transport {
    /// Value of the `Allow` header.
    pub(crate) fn allow_header(self) -> &'static str {
        match self {
            Transport::StreamableHttp => "GET, POST, DELETE",
            Transport::Sse => "GET, POST",
        }
    }

    /// Whether a route of this transport takes `method`.
    pub(crate) fn allows(self, method: &Method) -> bool {
        match self {
            Transport::StreamableHttp => {
                matches!(*method, Method::POST | Method::GET | Method::DELETE)
            }
            Transport::Sse => matches!(*method, Method::POST | Method::GET),
        }
    }

    /// The protocol version a POST is read in. Legacy routes speak 2024-11-05 only.
    pub(crate) fn protocol_version(
        self,
        headers: &http::HeaderMap,
    ) -> Result<ProtocolVersion, McpHeaderError> {
        match self {
            Transport::StreamableHttp => crate::mcp::protocol_version(headers),
            Transport::Sse => Ok(ProtocolVersion::V2024_11_05),
        }
    }

    /// Whether `Mcp-Method` / `Mcp-Name` are checked against the body (2026-07-28 era headers
    /// exist on Streamable HTTP only).
    pub(crate) fn checks_mcp_headers(self) -> bool {
        self == Transport::StreamableHttp
    }
}

/// Phase `pick_endpoint`: the endpoint a sealed, principal-bound session names (refused as
/// unknown when it does not open, is another principal's or has expired, and when that
/// endpoint is ejected or unhealthy, so the client starts a new session instead of waiting on
/// a dead one), else the next available endpoint round-robin.
pub(crate) fn pick_endpoint(
    gw: &Gateway,
    route: &RouteState,
    method: &Method,
    parts: &mut http::request::Parts,
    binding: &PrincipalHash,
) -> Result<Target, ProxyError> {
    let transport = route.config.transport;
    let target = match transport {
        Transport::StreamableHttp => streamable::pick_endpoint(gw, route, parts, binding)?,
        Transport::Sse => legacy::pick_endpoint(gw, route, method, parts, binding)?,
    };
    if is_pinned(transport, method, &target) && !route.upstreams.serves_sessions(target.endpoint) {
        tracing::info!(route = %route.path, "session pinned to an ejected or unhealthy endpoint; answered as unknown");
        return Err(ProxyError::UnknownSession);
    }
    Ok(target)
}

/// Whether the request belongs to a session and so to its endpoint: a Streamable HTTP request
/// with a session id, every legacy POST (its `sessionId` names the stream's endpoint).
pub(crate) fn is_pinned(transport: Transport, method: &Method, target: &Target) -> bool {
    match transport {
        Transport::StreamableHttp => target.session.is_some(),
        Transport::Sse => *method != Method::GET,
    }
}

/// `base` with the client's query string appended.
pub(crate) fn with_query(base: &Uri, query: Option<&str>) -> Result<Uri, ProxyError> {
    match query {
        None => Ok(base.clone()),
        Some(q) => format!("{base}?{q}")
            .parse()
            .map_err(|_| ProxyError::BadRequest("invalid query string")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_transport_takes_its_methods_and_version() {
        let s = Transport::StreamableHttp;
        let l = Transport::Sse;
        assert!(s.allows(&Method::DELETE) && !l.allows(&Method::DELETE));
        for m in [Method::GET, Method::POST] {
            assert!(s.allows(&m) && l.allows(&m));
        }
        assert!(!s.allows(&Method::PUT) && !l.allows(&Method::PATCH));
        assert_eq!(s.allow_header(), "GET, POST, DELETE");
        assert_eq!(l.allow_header(), "GET, POST");
        let mut h = http::HeaderMap::new();
        h.insert(
            "mcp-protocol-version",
            HeaderValue::from_static("2026-07-28"),
        );
        assert_eq!(s.protocol_version(&h), Ok(ProtocolVersion::V2026_07_28));
        // Legacy routes speak 2024-11-05 whatever the header says.
        assert_eq!(l.protocol_version(&h), Ok(ProtocolVersion::V2024_11_05));
        assert!(s.checks_mcp_headers() && !l.checks_mcp_headers());
    }

    #[test]
    fn query_strings_are_appended_to_the_endpoint() {
        let base: Uri = "http://127.0.0.1:9/mcp".parse().unwrap();
        assert_eq!(with_query(&base, None).unwrap(), base);
        assert_eq!(
            with_query(&base, Some("a=1&b=2")).unwrap().to_string(),
            "http://127.0.0.1:9/mcp?a=1&b=2"
        );
    }
}
