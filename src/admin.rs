//! Loopback admin endpoint: `/healthz`, `/readyz` (not ready while draining, when a serving
//! certificate has expired, or when limits fail closed and their store is down), `/metrics` (Prometheus), `/certs` (the `certs status` document),
//! `POST /reload` (same as SIGHUP) and `/upstream-jwks.json`. Plain HTTP, because it is bound
//! to loopback by default and carries no secrets.

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::http::{Body, full};
use crate::limits::OnStoreFailure;
use crate::monitor::Monitor;
use crate::proxy::Proxy;
use crate::reload::Reloader;
use crate::shutdown::Shutdown;

/// Serves `/healthz` and `/readyz` until `stop` fires. It outlives draining on purpose, so
/// load balancers see `/readyz` answer 503 while connections drain.
pub async fn run(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    shutdown: Shutdown,
    stop: CancellationToken,
    tasks: TaskTracker,
    reloader: Option<Arc<Reloader>>,
    monitor: Option<Arc<Monitor>>,
) {
    let builder = Arc::new(hyper_util::server::conn::auto::Builder::new(
        TokioExecutor::new(),
    ));
    loop {
        let (tcp, _) = tokio::select! {
            () = stop.cancelled() => break,
            res = listener.accept() => match res {
                Ok(c) => c,
                Err(_) => continue,
            },
        };
        let proxy = proxy.clone();
        let shutdown_c = shutdown.clone();
        let reloader = reloader.clone();
        let monitor = monitor.clone();
        let builder = builder.clone();
        tasks.spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let proxy = proxy.clone();
                let shutdown = shutdown_c.clone();
                let reloader = reloader.clone();
                let monitor = monitor.clone();
                async move {
                    let resp = if req.method() == Method::POST && req.uri().path() == "/reload" {
                        reload(reloader.as_deref()).await
                    } else {
                        answer(&req, &proxy, &shutdown, monitor.as_deref())
                    };
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
        });
    }
}

/// `POST /reload`: the same path as SIGHUP. 200 with what changed, or 500 with why nothing did.
async fn reload(reloader: Option<&Reloader>) -> Response<Body> {
    let (status, body) = match reloader {
        None => (StatusCode::NOT_FOUND, "reload not available\n".to_owned()),
        Some(r) => match r.reload_config().await {
            Ok(outcome) => (StatusCode::OK, format!("{outcome}\n")),
            Err(e) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("reload refused, previous state kept: {e}\n"),
            ),
        },
    };
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp
}

fn answer(
    req: &Request<Incoming>,
    proxy: &Proxy,
    shutdown: &Shutdown,
    monitor: Option<&Monitor>,
) -> Response<Body> {
    let typed = |ct: &'static str, body: String| {
        let mut resp = Response::new(full(body));
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(ct),
        );
        resp
    };
    match (req.method(), req.uri().path(), monitor) {
        (&Method::GET, "/metrics", Some(m)) => {
            // Prometheus asks for OpenMetrics; anything else gets the classic text format.
            let accept = req
                .headers()
                .get(http::header::ACCEPT)
                .map(|v| v.as_bytes());
            return if crate::metrics::text::wants_openmetrics(accept) {
                typed(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    m.metrics(),
                )
            } else {
                typed(
                    crate::metrics::text::CONTENT_TYPE,
                    crate::metrics::text::prometheus_text(&m.metrics()),
                )
            };
        }
        (&Method::GET, "/certs", Some(m)) => return typed("application/json", m.certs_json()),
        _ => {}
    }
    let (status, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => (StatusCode::OK, "ok\n".to_owned()),
        (&Method::GET, "/upstream-jwks.json") => match proxy.gateway().upstream_jwks() {
            Some(jwks) => {
                let mut resp = Response::new(full(jwks));
                resp.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/jwk-set+json"),
                );
                return resp;
            }
            None => (
                StatusCode::NOT_FOUND,
                "no [auth.upstream_token] configured\n".to_owned(),
            ),
        },
        (&Method::GET, "/readyz") if shutdown.drain().is_cancelled() => {
            (StatusCode::SERVICE_UNAVAILABLE, "draining\n".to_owned())
        }
        (&Method::GET, "/readyz") if monitor.is_some_and(Monitor::serving_expired) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "a serving certificate has expired; see /certs\n".to_owned(),
        ),
        (&Method::GET, "/readyz") => match proxy.limits_store() {
            // Every rate-limited request is refused until the store answers.
            Some(s) if !s.up && s.on_failure == OnStoreFailure::Closed => (
                StatusCode::SERVICE_UNAVAILABLE,
                "rate-limit store unreachable and limits.on_store_failure = \"closed\"\n"
                    .to_owned(),
            ),
            store => (
                StatusCode::OK,
                format!(
                    "ready; routes={}{}\n",
                    proxy.gateway().config().routes.len(),
                    match store {
                        None => String::new(),
                        Some(s) if s.up => "; limits store=redis up".to_owned(),
                        Some(s) => format!(
                            "; limits store=redis down (fallback {})",
                            s.on_failure.as_str()
                        ),
                    }
                ),
            ),
        },
        _ => (StatusCode::NOT_FOUND, "not found\n".to_owned()),
    };
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp
}
