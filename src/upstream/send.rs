//! Sending one request upstream: admission by the endpoint's circuit, the attempt within the
//! response-head deadline, the classification of what failed, and the safe retries of
//! [`super::retry`] on another endpoint.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, Uri, header};
use hyper::body::Incoming;

use super::breaker::Failure;
use super::{Endpoint, SendError, Upstreams, error_chain, has_cause, has_io_kind};

/// A request as it goes to any endpoint of the route: the `Host` header is set per endpoint.
#[derive(Debug)]
pub struct Outbound {
    /// Request method.
    pub method: Method,
    /// URI for the first endpoint (the target's, query included).
    pub uri: Uri,
    /// Headers, already rewritten for the upstream.
    pub headers: HeaderMap,
    /// The whole body (POST bodies are read whole by `inspect`; GET and DELETE have none), so
    /// a request the backend never saw can be sent again.
    pub body: Bytes,
    /// The request names a session: it goes to its endpoint or nowhere.
    pub pinned: bool,
}

/// The answer, and the endpoint that gave it (another one than asked for after a retry).
#[derive(Debug)]
pub struct Sent {
    /// Index of the endpoint that answered.
    pub endpoint: usize,
    /// The URI it was sent to.
    pub uri: Uri,
    /// The response head (and its streaming body).
    pub response: Response<Incoming>,
}

/// A failed attempt: what the caller is told, and what the circuit counts (`None`: not the
/// upstream's fault).
struct Failed {
    error: SendError,
    cause: Option<Failure>,
}

impl Upstreams {
    /// Sends `out` to endpoint `first`, retrying safe failures on other endpoints (see
    /// [`super::retry`]). Failures are logged here, with the request id and upstream URL, so a
    /// 502/503/504 can be traced.
    pub async fn send(&self, mut out: Outbound, first: usize) -> Result<Sent, SendError> {
        self.budget.record_request();
        let retry = &self.settings.retry;
        let circuit = &self.settings.circuit;
        let may_retry = !out.pinned && retry.max_retries > 0 && self.endpoints.len() > 1;
        let mut tried: Vec<usize> = Vec::new();
        let (mut endpoint, mut uri) = (first, out.uri.clone());
        loop {
            let ep = self.endpoint(endpoint)?;
            if !ep.health.healthy() {
                // Only a first attempt can land here (retries pick available endpoints): every
                // endpoint is failing its health check.
                let retry_after = (self.settings.health_check.as_ref())
                    .map_or(Duration::from_secs(1), |c| c.interval);
                return Err(SendError::CircuitOpen { retry_after });
            }
            let permit = match ep.health.admit(circuit) {
                Ok(p) => p,
                Err(wait) => {
                    tracing::debug!(upstream = %ep.uri, "circuit open; answered without contacting the upstream");
                    return Err(SendError::CircuitOpen { retry_after: wait });
                }
            };
            // Headers are copied only while a retry may still need them.
            let headers = if may_retry {
                out.headers.clone()
            } else {
                std::mem::take(&mut out.headers)
            };
            let failed = match self.attempt(&out, ep, &uri, headers).await {
                Ok(response) => {
                    let status = response.status();
                    if status.is_server_error() {
                        permit.failure(circuit, Failure::Status(status.as_u16()));
                    } else {
                        permit.success();
                    }
                    return Ok(Sent {
                        endpoint,
                        uri,
                        response,
                    });
                }
                Err(f) => f,
            };
            let Some(cause) = failed.cause else {
                return Err(failed.error);
            };
            permit.failure(circuit, cause);
            tried.push(endpoint);
            let safe = cause == Failure::Connect
                || (out.method == Method::GET && cause == Failure::Broken);
            let attempt = u32::try_from(tried.len() - 1).unwrap_or(u32::MAX);
            if !may_retry || !safe || attempt >= retry.max_retries {
                return Err(failed.error);
            }
            let Some(next) = self.pick_excluding(&tried) else {
                return Err(failed.error);
            };
            if !self.budget.try_withdraw(retry) {
                ep.health
                    .budget_exhausted
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(upstream = %ep.uri, cause = %cause, "retry budget exhausted; not retrying");
                return Err(failed.error);
            }
            let Ok(next_uri) = with_query(&self.endpoints[next].uri, out.uri.query()) else {
                return Err(failed.error);
            };
            ep.health
                .retries
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(upstream = %ep.uri, next = %next_uri, cause = %cause, "request never reached the upstream; retrying on another endpoint");
            tokio::time::sleep(super::retry::backoff(retry, attempt)).await;
            (endpoint, uri) = (next, next_uri);
        }
    }

    fn endpoint(&self, i: usize) -> Result<&Endpoint, SendError> {
        self.endpoints.get(i).ok_or(SendError::Unavailable)
    }

    /// One attempt: the request to `ep`, and its response head within the deadline.
    async fn attempt(
        &self,
        out: &Outbound,
        ep: &Endpoint,
        uri: &Uri,
        headers: HeaderMap,
    ) -> Result<Response<Incoming>, Failed> {
        let mut req = Request::new(crate::http::full(out.body.clone()));
        *req.method_mut() = out.method.clone();
        *req.uri_mut() = uri.clone();
        *req.version_mut() = http::Version::HTTP_11;
        *req.headers_mut() = headers;
        req.headers_mut().insert(header::HOST, ep.host.clone());
        let rid = req
            .headers()
            .get(crate::http::headers::X_REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_owned();
        let timeout = self.settings.response_header_timeout;
        let err = match tokio::time::timeout(timeout, self.client.request(req)).await {
            Ok(Ok(resp)) => return Ok(resp),
            Err(_) => {
                tracing::warn!(request_id = rid, upstream = %uri, ?timeout, "upstream response head timed out");
                return Err(Failed {
                    error: SendError::Timeout,
                    cause: Some(Failure::Timeout),
                });
            }
            Ok(Err(e)) => e,
        };
        if has_cause::<http_body_util::LengthLimitError>(&err) {
            return Err(Failed {
                error: SendError::BodyTooLarge,
                cause: None,
            });
        }
        let timed_out = has_io_kind(&err, std::io::ErrorKind::TimedOut);
        tracing::warn!(request_id = rid, upstream = %uri, connect = err.is_connect(), error = %error_chain(&err), "upstream request failed");
        let cause = if err.is_connect() {
            // Nothing was written: the connector (TCP, then TLS) failed.
            Failure::Connect
        } else if timed_out {
            Failure::Timeout
        } else {
            Failure::Broken
        };
        Err(Failed {
            error: if timed_out {
                SendError::Timeout
            } else {
                SendError::Unavailable
            },
            cause: Some(cause),
        })
    }
}

/// `base` with `query` appended.
fn with_query(base: &Uri, query: Option<&str>) -> Result<Uri, http::uri::InvalidUri> {
    match query {
        None => Ok(base.clone()),
        Some(q) => format!("{base}?{q}").parse(),
    }
}
