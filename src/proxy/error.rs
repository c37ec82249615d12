//! Answers the proxy gives on its own behalf, and the one place that decides their status.
//!
//! Every failure on the request path becomes a [`ProxyError`], by `?` and the `From`
//! conversions below, from the error type of the phase that found it. Each knows its
//! [`Source`] (who is at fault: the client, the proxy itself, or the upstream), its status
//! code and its [`kind`](ProxyError::kind), the label logs and metrics use. Bodies are JSON-RPC
//! error objects so that MCP clients, which parse every answer as JSON-RPC, can show the
//! reason; they carry no `id`, except policy refusals, which answer the refused call's `id`.

use http::{HeaderValue, Response, StatusCode, header};

use crate::auth::identity::{AuthError, AuthRefusal};
use crate::auth::origin::HostError;
use crate::http::media::MediaTypeError;
use crate::http::{Body, full};
use crate::limits::{LimitKind, LimitRefusal};
use crate::mcp::{self, EnvelopeError, McpHeaderError};

/// Who a failure is to blame on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The request is refused: 4xx.
    Client,
    /// The proxy could not do its part (a key, a signer): 5xx.
    Proxy,
    /// The upstream failed, timed out or answered something unusable: 502/504.
    Upstream,
}

impl Source {
    /// Label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Client => "client",
            Source::Proxy => "proxy",
            Source::Upstream => "upstream",
        }
    }
}

/// JSON-RPC error code of a call the route policy refuses (server-defined range).
pub const POLICY_DENIED: i64 = -32003;

/// JSON-RPC error code of a call refused by a rate, concurrency or stream limit.
pub const LIMITED: i64 = -32029;

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
    /// `Mcp-Session-Id` or legacy `sessionId` unknown to this proxy (or expired, or another
    /// principal's).
    #[error("session not found; start a new session")]
    UnknownSession,
    /// Declared or streamed request body exceeds the limit.
    #[error("request body exceeds {limit} bytes")]
    BodyTooLarge {
        /// The configured limit.
        limit: u64,
    },
    /// A POST body did not arrive within `http.header_read_timeout`.
    #[error("request body not received in time")]
    BodyTimeout,
    /// Host not served here, Origin refused (the reason goes to the log, not to the client).
    #[error("{0}")]
    Forbidden(&'static str),
    /// The host the request names cannot be trusted.
    #[error("malformed request: {0}")]
    Host(#[from] HostError),
    /// Authentication failed or is missing (or the call needs more scopes).
    #[error(transparent)]
    Auth(#[from] AuthRefusal),
    /// The POST body is not an acceptable JSON-RPC message.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// `MCP-Protocol-Version`, `Mcp-Method` or `Mcp-Name` refused.
    #[error(transparent)]
    McpHeader(#[from] McpHeaderError),
    /// The route policy refuses a call; answered with the call's `id`.
    #[error("{reason}")]
    Policy {
        /// The refused message's id.
        id: Option<mcp::Id>,
        /// Why, for the client and the audit log.
        reason: String,
    },
    /// A POST body declared in a type, charset or encoding the proxy does not inspect.
    #[error("unsupported media type: {0}")]
    UnsupportedMediaType(#[from] MediaTypeError),
    /// A header or query the proxy needs to read is malformed or ambiguous.
    #[error("malformed request: {0}")]
    BadRequest(&'static str),
    /// The identity token for the backend could not be signed; forwarding without it would
    /// pass an unauthenticated call.
    #[error("cannot sign the upstream identity token")]
    UpstreamToken,
    /// Connecting to the upstream failed, or its answer could not be read or filtered.
    #[error("upstream unavailable")]
    UpstreamUnavailable,
    /// The upstream did not answer (connect or response head) in time.
    #[error("upstream timed out")]
    UpstreamTimeout,
    /// A limit of the caller's refuses the request; answered with the call's `id` and
    /// `Retry-After`.
    #[error("{refusal}")]
    Limited {
        /// The limited call's id.
        id: Option<mcp::Id>,
        /// Which limit, and when to try again.
        refusal: LimitRefusal,
    },
    /// Every endpoint that could take the request is ejected (circuit open) or unhealthy:
    /// answered at once, without contacting it, with the call's `id` where known.
    #[error("upstream temporarily unavailable; retry later")]
    UpstreamCircuitOpen {
        /// The id of the request, when the POST carried exactly one.
        id: Option<mcp::Id>,
        /// Seconds for the `Retry-After` header (at least 1).
        retry_after: u64,
    },
}

impl ProxyError {
    /// Who is to blame.
    pub fn source(&self) -> Source {
        match self {
            ProxyError::Auth(r) if r.error.is_server_side() => Source::Proxy,
            ProxyError::UpstreamToken => Source::Proxy,
            ProxyError::Limited { refusal, .. } if refusal.kind == LimitKind::StoreUnavailable => {
                Source::Proxy
            }
            ProxyError::UpstreamUnavailable
            | ProxyError::UpstreamTimeout
            | ProxyError::UpstreamCircuitOpen { .. } => Source::Upstream,
            _ => Source::Client,
        }
    }

    /// HTTP status for this error: the one place that chooses it.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NotFound | ProxyError::UnknownSession => StatusCode::NOT_FOUND,
            ProxyError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ProxyError::BadRequest(_) | ProxyError::Host(_) | ProxyError::McpHeader(_) => {
                StatusCode::BAD_REQUEST
            }
            ProxyError::Envelope(EnvelopeError::TooLarge { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::Envelope(_) => StatusCode::BAD_REQUEST,
            ProxyError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ProxyError::Forbidden(_) | ProxyError::Policy { .. } => StatusCode::FORBIDDEN,
            ProxyError::Auth(r) => match &r.error {
                AuthError::TokenInQuery => StatusCode::BAD_REQUEST,
                AuthError::CertificateRequired
                | AuthError::InsufficientScope { .. }
                | AuthError::CallNeedsScopes { .. } => StatusCode::FORBIDDEN,
                AuthError::KeysUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
                AuthError::Missing
                | AuthError::Malformed
                | AuthError::Invalid(_)
                | AuthError::NotBound => StatusCode::UNAUTHORIZED,
            },
            ProxyError::UpstreamToken => StatusCode::INTERNAL_SERVER_ERROR,
            ProxyError::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::Limited { refusal, .. } => match refusal.kind {
                LimitKind::StoreUnavailable => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::TOO_MANY_REQUESTS,
            },
            ProxyError::UpstreamCircuitOpen { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// JSON-RPC error code for the body.
    fn rpc_code(&self) -> i64 {
        match self {
            ProxyError::BadRequest(_) | ProxyError::Host(_) => -32600,
            ProxyError::NotFound | ProxyError::MethodNotAllowed { .. } => -32601,
            ProxyError::Envelope(e) => e.rpc_code(),
            ProxyError::McpHeader(e) => e.rpc_code(),
            ProxyError::Policy { .. } => POLICY_DENIED,
            ProxyError::Limited { .. } => LIMITED,
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
            ProxyError::BodyTimeout => "body_timeout",
            ProxyError::BadRequest(_) | ProxyError::Host(_) => "bad_request",
            ProxyError::UnsupportedMediaType(_) => "unsupported_media_type",
            ProxyError::Forbidden(_) => "forbidden",
            ProxyError::Envelope(e) => e.kind(),
            ProxyError::McpHeader(e) => e.kind(),
            ProxyError::Policy { .. } => "policy_denied",
            ProxyError::Auth(r) => r.error.kind(),
            ProxyError::UpstreamToken => "upstream_token_failed",
            ProxyError::UpstreamUnavailable => "upstream_unavailable",
            ProxyError::UpstreamTimeout => "upstream_timeout",
            ProxyError::Limited { refusal, .. } => match refusal.kind {
                LimitKind::Rate => "rate_limited",
                LimitKind::ToolRate => "tool_rate_limited",
                LimitKind::Concurrency => "concurrency_limited",
                LimitKind::Streams => "stream_limited",
                LimitKind::StoreUnavailable => "limit_store_unavailable",
            },
            ProxyError::UpstreamCircuitOpen { .. } => "upstream_circuit_open",
        }
    }

    /// The JSON-RPC error body.
    fn body(&self) -> bytes::Bytes {
        match self {
            ProxyError::Envelope(e) => e.body(),
            ProxyError::McpHeader(e) => e.body(),
            ProxyError::Policy { id, reason } => {
                mcp::json_rpc_error_for(id.as_ref(), POLICY_DENIED, reason, None)
            }
            ProxyError::Limited { id, refusal } => mcp::json_rpc_error_for(
                id.as_ref(),
                LIMITED,
                &refusal.to_string(),
                Some(serde_json::json!({
                    "limit": refusal.kind.as_str(),
                    "retryAfterSeconds": refusal.retry_after_secs(),
                })),
            ),
            ProxyError::UpstreamCircuitOpen { id, .. } => {
                mcp::json_rpc_error_for(id.as_ref(), self.rpc_code(), &self.to_string(), None)
            }
            // The legacy wording, kept for clients that show it.
            ProxyError::Auth(r) => {
                mcp::json_rpc_error_body(self.rpc_code(), r.error.message(), None)
            }
            _ => mcp::json_rpc_error_body(self.rpc_code(), &self.to_string(), None),
        }
    }

    /// The complete HTTP response.
    pub fn into_response(self) -> Response<Body> {
        let mut resp = Response::new(full(self.body()));
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
            ProxyError::Limited { refusal, .. } => {
                h.insert(header::RETRY_AFTER, refusal.retry_after_secs().into());
            }
            ProxyError::UpstreamCircuitOpen { retry_after, .. } => {
                h.insert(header::RETRY_AFTER, HeaderValue::from(retry_after.max(1)));
            }
            ProxyError::Auth(AuthRefusal {
                challenge: Some(challenge),
                ..
            }) => {
                h.insert(header::WWW_AUTHENTICATE, challenge);
            }
            _ => {}
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_decides_the_status_class() {
        for e in [
            ProxyError::NotFound,
            ProxyError::BadRequest("x"),
            ProxyError::BodyTimeout,
            ProxyError::UnknownSession,
            ProxyError::Auth(AuthRefusal {
                error: AuthError::Missing,
                challenge: None,
            }),
            ProxyError::Policy {
                id: None,
                reason: "no".into(),
            },
        ] {
            assert_eq!(e.source(), Source::Client, "{e}");
            assert!(e.status().is_client_error(), "{e}");
        }
        for e in [
            ProxyError::UpstreamToken,
            ProxyError::Auth(AuthRefusal {
                error: AuthError::KeysUnavailable("down"),
                challenge: None,
            }),
        ] {
            assert_eq!(e.source(), Source::Proxy, "{e}");
            assert!(e.status().is_server_error(), "{e}");
        }
        for e in [
            ProxyError::UpstreamUnavailable,
            ProxyError::UpstreamTimeout,
            ProxyError::UpstreamCircuitOpen {
                id: None,
                retry_after: 1,
            },
        ] {
            assert_eq!(e.source(), Source::Upstream, "{e}");
            assert!(e.status().is_server_error(), "{e}");
        }
    }

    #[test]
    fn open_circuit_answers_503_with_retry_after_and_the_call_id() {
        let e = ProxyError::UpstreamCircuitOpen {
            id: Some(mcp::Id::Number(7.into())),
            retry_after: 0,
        };
        assert_eq!(e.kind(), "upstream_circuit_open");
        let body = e.body();
        let resp = e.into_response();
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["id"], 7);
        assert_eq!(v["error"]["code"], -32000);
    }

    #[test]
    fn mcp_errors_are_answered_by_their_kind() {
        let e = ProxyError::from(EnvelopeError::TooLarge { limit: 10 });
        assert_eq!(e.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let e = ProxyError::from(EnvelopeError::EmptyBatch);
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        let e = ProxyError::from(McpHeaderError::MalformedProtocolVersion);
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert_eq!(e.kind(), "malformed_protocol_version");
    }
}
