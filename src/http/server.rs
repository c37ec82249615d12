//! Serves HTTP/1.1 and HTTP/2 on an accepted (already TLS-terminated) connection with the
//! configured limits, and shuts it down gracefully when draining starts.

use std::future::Future;
use std::pin::pin;

use hyper::body::Incoming;
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::config::HttpLimits;
use crate::shutdown::Shutdown;

use super::Body;

/// Builds the HTTP/1.1 + HTTP/2 connection builder from the configured limits.
pub fn builder(limits: &HttpLimits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        // Without a timer, hyper panics when header_read_timeout is set.
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes)
        .max_headers(limits.max_headers)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        // h2 keep-alive is off by default; PINGs find dead peers under idle SSE streams.
        .keep_alive_interval(limits.h2_keepalive_interval)
        .keep_alive_timeout(limits.h2_keepalive_timeout)
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    b
}

/// Serves one connection until it closes, draining gracefully on shutdown and closing it
/// outright at the drain deadline.
pub async fn serve<IO, S, F>(
    builder: &auto::Builder<TokioExecutor>,
    io: IO,
    service: S,
    shutdown: &Shutdown,
) -> Result<(), super::BoxError>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<http::Request<Incoming>, Response = http::Response<Body>, Future = F>
        + Send
        + 'static,
    S::Error: Into<super::BoxError>,
    F: Future<Output = Result<http::Response<Body>, S::Error>> + Send + 'static,
{
    let mut conn = pin!(builder.serve_connection(TokioIo::new(io), service));
    tokio::select! {
        res = conn.as_mut() => return res,
        () = shutdown.drain().cancelled() => {}
    }
    conn.as_mut().graceful_shutdown();
    // At the deadline every relayed stream ends itself cleanly; the grace lets the connection
    // flush that orderly end (and TLS close_notify) before it is dropped outright.
    let hard_stop = async {
        shutdown.deadline().cancelled().await;
        tokio::time::sleep(CLOSE_GRACE).await;
    };
    tokio::select! {
        res = conn.as_mut() => res,
        () = hard_stop => Ok(()),
    }
}

/// How long a connection may take to close after the drain deadline.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(1);
