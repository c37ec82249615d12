//! Sending one request upstream: admission by the endpoint's circuit, the attempt within the
//! response-head deadline, the classification of what failed, and the safe retries of
//! [`super::retry`] on another endpoint.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, Uri, header};
use hyper::body::Incoming;

use super::breaker::Failure;
use super::{Endpoint, SendError, Upstreams, error_chain, has_cause, has_io_kind};
use crate::metrics::{RouteMetrics, UpstreamFailure};

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
    pub async fn send(
        &self,
        mut out: Outbound,
        first: usize,
        series: &RouteMetrics,
    ) -> Result<Sent, SendError> {
        self.budget.record_request();
        let retry = &self.settings.retry;
        let circuit = &self.settings.circuit;
        let may_retry = !out.pinned && retry.max_retries > 0 && self.endpoints.len() > 1;
        // Endpoints this request has been sent to, or passed over because their circuit or
        // health check refused it.
        let mut tried: Vec<usize> = Vec::new();
        let mut attempts = 0u32;
        let (mut endpoint, mut uri) = (first, out.uri.clone());
        loop {
            let ep = self.endpoint(endpoint)?;
            let admitted = if ep.health.healthy() {
                ep.health.admit(circuit)
            } else {
                Err((self.settings.health_check.as_ref())
                    .map_or(Duration::from_secs(1), |c| c.interval))
            };
            let permit = match admitted {
                Ok(permit) => permit,
                Err(retry_after) => {
                    // Nothing was sent: a sessionless request moves to another available
                    // endpoint (it was chosen before the body was read, and may have been
                    // ejected since); a pinned one has nowhere else to go.
                    series.upstream_failure(endpoint, UpstreamFailure::CircuitOpen);
                    tried.push(endpoint);
                    let next = (!out.pinned).then(|| self.pick_excluding(&tried)).flatten();
                    match next.map(|n| (n, with_query(&self.endpoints[n].uri, out.uri.query()))) {
                        Some((n, Ok(next_uri))) => {
                            tracing::debug!(upstream = %ep.uri, next = %next_uri, "endpoint unavailable; choosing another");
                            (endpoint, uri) = (n, next_uri);
                            continue;
                        }
                        _ => {
                            tracing::debug!(upstream = %ep.uri, "circuit open; answered without contacting the upstream");
                            return Err(SendError::CircuitOpen { retry_after });
                        }
                    }
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
                    series.upstream_answer(endpoint, status.as_u16());
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
            series.upstream_failure(
                endpoint,
                if cause == Failure::Timeout {
                    UpstreamFailure::Timeout
                } else {
                    UpstreamFailure::Connect
                },
            );
            permit.failure(circuit, cause);
            tried.push(endpoint);
            let safe = cause == Failure::Connect
                || (out.method == Method::GET && cause == Failure::Broken);
            let attempt = attempts;
            attempts = attempts.saturating_add(1);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::{CircuitSettings, RetrySettings, UpstreamSettings};

    fn settings() -> UpstreamSettings {
        UpstreamSettings {
            connect_timeout: Duration::from_secs(2),
            response_header_timeout: Duration::from_secs(2),
            body_idle_timeout: Duration::from_secs(2),
            pool_idle_timeout: Duration::from_secs(10),
            pool_max_idle_per_host: 4,
            tls: None,
            circuit: CircuitSettings {
                failures: 1,
                open_for: Duration::from_secs(60),
                ..CircuitSettings::default()
            },
            retry: RetrySettings {
                max_retries: 0,
                ..RetrySettings::default()
            },
            health_check: None,
        }
    }

    /// An HTTP/1.1 server on loopback answering every request `200 ok`.
    async fn ok_server() -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|_req| async {
                        Ok::<_, std::convert::Infallible>(Response::new(crate::http::full("ok")))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        addr
    }

    fn outbound(uri: &Uri, pinned: bool) -> Outbound {
        Outbound {
            method: Method::POST,
            uri: uri.clone(),
            headers: HeaderMap::new(),
            body: Bytes::from_static(b"{}"),
            pinned,
        }
    }

    #[tokio::test]
    async fn a_sessionless_request_chosen_for_an_endpoint_ejected_since_goes_to_another() {
        let ok = ok_server().await;
        let uris: Vec<Uri> = [
            "http://127.0.0.1:9/mcp".to_owned(),
            format!("http://{ok}/mcp"),
        ]
        .iter()
        .map(|u| u.parse().expect("uri"))
        .collect();
        let ups = Upstreams::new(&uris, &settings()).expect("upstreams");
        // Endpoint 0 was picked, then its circuit opened before the request was sent.
        ups.report_body_failure(0);
        assert!(!ups.endpoints()[0].health.serves_sessions(), "ejected");
        let sent = ups
            .send(outbound(&uris[0], false), 0, &RouteMetrics::default())
            .await
            .expect("sent to the other endpoint");
        assert_eq!(sent.endpoint, 1);
        assert_eq!(sent.uri, uris[1]);
        assert_eq!(sent.response.status(), 200);
        // A pinned request has nowhere else to go.
        let refused = ups
            .send(outbound(&uris[0], true), 0, &RouteMetrics::default())
            .await;
        assert!(
            matches!(refused, Err(SendError::CircuitOpen { .. })),
            "{refused:?}"
        );
    }
}
