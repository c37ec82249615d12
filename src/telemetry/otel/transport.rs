//! Sending one export request to the collector: OTLP/HTTP (`POST`, protobuf body) or
//! OTLP/gRPC (`TraceService/Export` over h2), retried while the collector says "later".
//!
//! The client is the proxy's own hyper client with rustls: for `https://` collectors the
//! system's trust store, for `http://` none (plain TCP, h2 with prior knowledge for gRPC).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::Instant;

use super::OtelError;
use super::wire;
use crate::config::{OtlpProtocol, OtlpSettings};

/// The gRPC method of OTLP trace export.
const GRPC_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
/// Most of a collector's answer read (its body is an `ExportTraceServiceResponse`, at most a
/// short message).
const MAX_RESPONSE: usize = 64 * 1024;
/// First wait before a retry; doubled each time up to [`MAX_BACKOFF`], within the timeout.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Longest a connection to the collector may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why an export did not land.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// No connection, or it broke (`retryable`).
    #[error("cannot reach the collector: {0}")]
    Connect(String),
    /// The collector answered an HTTP status other than 2xx.
    #[error("the collector answered {status}{}", detail(.message))]
    Status {
        /// The status.
        status: StatusCode,
        /// The start of its body, when it is text.
        message: String,
    },
    /// The gRPC call ended with a status other than OK.
    #[error("the collector answered gRPC status {code}{}", detail(.message))]
    Grpc {
        /// The `grpc-status` code.
        code: u32,
        /// `grpc-message`.
        message: String,
    },
    /// The export (retries included) ran past its timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

fn detail(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

impl ExportError {
    /// Whether the OTLP specification says to try again (throttling, the collector
    /// unavailable or restarting); a refusal of the data itself is not retried.
    fn retryable(&self) -> bool {
        match self {
            ExportError::Connect(_) => true,
            ExportError::Status { status, .. } => matches!(status.as_u16(), 429 | 502 | 503 | 504),
            // CANCELLED, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED, OUT_OF_RANGE,
            // UNAVAILABLE, DATA_LOSS.
            ExportError::Grpc { code, .. } => matches!(code, 1 | 4 | 8 | 10 | 11 | 14 | 15),
            ExportError::Timeout(_) => false,
        }
    }
}

/// What a landed export reported back.
#[derive(Debug, Default)]
pub struct Landed {
    /// Spans the collector said it rejected (`partial_success`), and its message.
    pub rejected: Option<(i64, String)>,
}

/// The connection to one collector.
pub struct Transport {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    uri: Uri,
    grpc: bool,
    /// The configured headers (gRPC metadata), then the content type.
    headers: Arc<HeaderMap>,
    timeout: Duration,
}

impl Transport {
    /// A client for the collector of `settings` (nothing is connected yet).
    pub fn new(settings: &OtlpSettings) -> Result<Self, OtelError> {
        let fail = |error: String| OtelError::Exporter {
            protocol: settings.protocol.as_str(),
            endpoint: settings.endpoint.clone(),
            error,
        };
        let grpc = settings.protocol == OtlpProtocol::Grpc;
        let target = if grpc {
            format!("{}{GRPC_PATH}", settings.endpoint.trim_end_matches('/'))
        } else {
            settings.endpoint.clone()
        };
        let uri: Uri = target.parse().map_err(|e| fail(format!("{e}")))?;
        let roots = if uri.scheme_str() == Some("https") {
            crate::certs::system_roots().map_err(|e| fail(e.to_string()))?
        } else {
            rustls::RootCertStore::empty()
        };
        let tls = crate::http::client::tls_config(roots).map_err(|e| fail(e.to_string()))?;
        let http = crate::http::client::tcp_connector(CONNECT_TIMEOUT);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http();
        let connector = if grpc {
            connector.enable_http2().wrap_connector(http)
        } else {
            connector.enable_http1().enable_http2().wrap_connector(http)
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            // Exports go one at a time: one connection is all that is ever reused.
            .pool_max_idle_per_host(1)
            .http2_only(grpc)
            .build(connector);

        let mut headers = HeaderMap::new();
        for h in &settings.headers {
            // Validated as a header name and value when the config was loaded.
            let name =
                HeaderName::from_bytes(h.name.as_bytes()).map_err(|e| fail(e.to_string()))?;
            let value = HeaderValue::from_str(&h.value)
                .map_err(|_| fail(format!("header `{}`: not a valid value", h.name)))?;
            headers.insert(name, value);
        }
        let content_type = if grpc {
            headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
            "application/grpc"
        } else {
            "application/x-protobuf"
        };
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static(content_type),
        );
        headers.insert(
            http::header::USER_AGENT,
            HeaderValue::from_static(concat!("mcp-edge/", env!("CARGO_PKG_VERSION"))),
        );
        Ok(Transport {
            client,
            uri,
            grpc,
            headers: Arc::new(headers),
            timeout: settings.timeout,
        })
    }

    /// Whether bodies go in the gRPC message frame.
    pub fn grpc(&self) -> bool {
        self.grpc
    }

    /// Sends `body`, retrying what may succeed later, until it lands, fails for good, or
    /// `timeout` (capped at `deadline`) runs out.
    pub async fn send(
        &self,
        body: Bytes,
        deadline: Option<Instant>,
    ) -> Result<Landed, ExportError> {
        let own = Instant::now() + self.timeout;
        let deadline = deadline.map_or(own, |d| d.min(own));
        let mut backoff = FIRST_BACKOFF;
        loop {
            let attempt = tokio::time::timeout_at(deadline, self.once(body.clone())).await;
            let error = match attempt {
                Ok(Ok(landed)) => return Ok(landed),
                Ok(Err(e)) => e,
                Err(_) => return Err(ExportError::Timeout(self.timeout)),
            };
            let next = Instant::now() + backoff;
            if !error.retryable() || next >= deadline {
                return Err(error);
            }
            tracing::debug!(error = %error, retry_in = ?backoff, "OTLP export failed; retrying");
            tokio::time::sleep_until(next).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    async fn once(&self, body: Bytes) -> Result<Landed, ExportError> {
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(self.uri.clone())
            .body(Full::new(body))
            .map_err(|e| ExportError::Connect(e.to_string()))?;
        req.headers_mut().clone_from(&self.headers);
        let resp = self
            .client
            .request(req)
            .await
            .map_err(|e| ExportError::Connect(crate::upstream::error_chain(&e)))?;
        let (head, body) = resp.into_parts();
        let collected = Limited::new(body, MAX_RESPONSE)
            .collect()
            .await
            .map_err(|e| ExportError::Connect(format!("reading the answer: {e}")))?;
        let trailers = collected.trailers().cloned();
        let body = collected.to_bytes();
        if !head.status.is_success() {
            let message = std::str::from_utf8(&body[..body.len().min(256)])
                .unwrap_or("")
                .trim()
                .to_owned();
            return Err(ExportError::Status {
                status: head.status,
                message,
            });
        }
        if !self.grpc {
            return Ok(Landed {
                rejected: wire::partial_success(&body),
            });
        }
        // A failing call may answer "trailers-only": the status in the headers.
        let status_of = |h: &HeaderMap| {
            h.get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u32>().ok())
                .map(|code| {
                    let message = h
                        .get("grpc-message")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .chars()
                        .take(256)
                        .collect::<String>();
                    (code, message)
                })
        };
        let Some((code, message)) = trailers
            .as_ref()
            .and_then(status_of)
            .or_else(|| status_of(&head.headers))
        else {
            return Err(ExportError::Grpc {
                code: 2,
                message: "the answer had no grpc-status".to_owned(),
            });
        };
        if code != 0 {
            return Err(ExportError::Grpc { code, message });
        }
        // The gRPC frame: a flag byte, a 4-byte length, the message.
        Ok(Landed {
            rejected: body.get(5..).and_then(wire::partial_success),
        })
    }
}
