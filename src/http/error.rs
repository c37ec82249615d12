//! Answers the proxy gives on its own behalf. Bodies are JSON-RPC error objects without an `id`
//! so that MCP clients, which parse every answer as JSON-RPC, can show the reason.

use http::{HeaderValue, Response, StatusCode, header};

use super::{Body, full};

/// Something the proxy itself refuses or fails at, before or instead of the upstream's answer.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// No route has this path.
    #[error("no MCP endpoint at this path")]
    NotFound,
    /// The route does not take this method.
    #[error("method not allowed on this endpoint")]
    MethodNotAllowed {
        /// Value for the `Allow` header.
        allow: &'static str,
    },
    /// `Mcp-Session-Id` or legacy `sessionId` unknown to this proxy.
    #[error("session not found; start a new session")]
    UnknownSession,
    /// Declared or streamed request body exceeds the limit.
    #[error("request body exceeds {limit} bytes")]
    BodyTooLarge {
        /// The configured limit.
        limit: u64,
    },
    /// Host or Origin refused (the reason goes to the log, not to the client).
    #[error("{0}")]
    Forbidden(&'static str),
    /// Authentication failed or is missing: 401 (or 400/403/503) with a Bearer challenge.
    #[error("{message}")]
    Auth {
        /// 400 invalid_request, 401 no/invalid token, 403 insufficient scope, 503 keys down.
        status: StatusCode,
        /// The `WWW-Authenticate` value.
        challenge: HeaderValue,
        /// What the JSON-RPC body says.
        message: &'static str,
    },
    /// The MCP/JSON-RPC layer refused the request; the body is already the JSON-RPC error.
    #[error("{kind}")]
    Protocol {
        /// HTTP status (400, 404, 408, 413).
        status: StatusCode,
        /// Complete JSON-RPC error body.
        body: bytes::Bytes,
        /// Label for logs and metrics.
        kind: &'static str,
    },
    /// A POST body declared in a type, charset or encoding the proxy does not inspect.
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(#[from] crate::http::media::MediaTypeError),
    /// A header the proxy needs to read is malformed.
    #[error("malformed request: {0}")]
    BadRequest(&'static str),
    /// Connecting to the upstream failed.
    #[error("upstream unavailable")]
    UpstreamUnavailable,
    /// The upstream did not answer (connect or response head) in time.
    #[error("upstream timed out")]
    UpstreamTimeout,
}

impl ProxyError {
    /// HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NotFound | ProxyError::UnknownSession => StatusCode::NOT_FOUND,
            ProxyError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ProxyError::Forbidden(_) => StatusCode::FORBIDDEN,
            ProxyError::Auth { status, .. } => *status,
            ProxyError::Protocol { status, .. } => *status,
            ProxyError::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// JSON-RPC error code for the body.
    fn rpc_code(&self) -> i32 {
        match self {
            ProxyError::BadRequest(_) => -32600,
            ProxyError::NotFound | ProxyError::MethodNotAllowed { .. } => -32601,
            _ => -32000,
        }
    }

    /// Short label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ProxyError::NotFound => "not_found",
            ProxyError::MethodNotAllowed { .. } => "method_not_allowed",
            ProxyError::UnknownSession => "unknown_session",
            ProxyError::BodyTooLarge { .. } => "body_too_large",
            ProxyError::BadRequest(_) => "bad_request",
            ProxyError::UnsupportedMediaType(_) => "unsupported_media_type",
            ProxyError::Forbidden(_) => "forbidden",
            ProxyError::Protocol { kind, .. } => kind,
            ProxyError::Auth { status, .. } => match status.as_u16() {
                401 => "unauthorized",
                403 => "insufficient_scope",
                503 => "auth_unavailable",
                _ => "bad_auth_request",
            },
            ProxyError::UpstreamUnavailable => "upstream_unavailable",
            ProxyError::UpstreamTimeout => "upstream_timeout",
        }
    }

    /// The complete HTTP response.
    pub fn into_response(self) -> Response<Body> {
        if let ProxyError::Protocol { status, body, .. } = self {
            let mut resp = Response::new(full(body));
            *resp.status_mut() = status;
            let h = resp.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            return resp;
        }
        let body = serde_json::json!({
            "jsonrpc": "2.0",
            "error": { "code": self.rpc_code(), "message": self.to_string() },
        });
        let mut resp = Response::new(full(body.to_string()));
        *resp.status_mut() = self.status();
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        match self {
            ProxyError::MethodNotAllowed { allow } => {
                h.insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            ProxyError::Auth { challenge, .. } => {
                h.insert(header::WWW_AUTHENTICATE, challenge);
            }
            _ => {}
        }
        resp
    }
}
