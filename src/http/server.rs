//! Serves HTTP/1.1 and HTTP/2 on an accepted (already TLS-terminated) connection with the
//! configured limits, closes connections that send no request in time or sit idle, and shuts
//! them down gracefully when draining starts.

mod activity;
mod write_deadline;

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

use crate::shutdown::Shutdown;

use activity::{Activity, Tracked};
pub use write_deadline::WriteDeadline;

/// Connection server: the HTTP/1.1 + HTTP/2 builder plus the per-connection deadlines.
pub struct Server {
    builder: auto::Builder<TokioExecutor>,
    first_request_timeout: Duration,
    idle_timeout: Duration,
}

/// Why [`Server::serve`] closed a connection itself; `Ok` from a normal close is `Client`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// The client (or hyper, on a protocol error already reported) ended the connection.
    Client,
    /// No complete request head within `http.first_request_timeout` of the accept.
    FirstRequestTimeout,
    /// No request in progress for `http.idle_timeout`.
    IdleTimeout,
    /// Closed by shutdown.
    Drained,
}

impl Closed {
    /// Short name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Closed::Client => "client",
            Closed::FirstRequestTimeout => "first_request_timeout",
            Closed::IdleTimeout => "idle_timeout",
            Closed::Drained => "drained",
        }
    }
}

impl Server {
    /// Builds the connection server from the configured limits.
    pub fn new(limits: &HttpLimits) -> Self {
        Server {
            builder: builder(limits),
            first_request_timeout: limits.first_request_timeout,
            idle_timeout: limits.idle_timeout,
        }
    }

    /// Serves one connection accepted at `accepted` until it closes. It is closed when no
    /// complete request head arrives within `first_request_timeout` of the accept (this
    /// covers hyper's protocol sniffing and the HTTP/2 preface, which have no deadline of
    /// their own), and when no request has been in progress for `idle_timeout`. A request
    /// counts as in progress until its response body has been sent, so a silent SSE stream
    /// keeps its connection. On shutdown it drains gracefully and is closed outright at the
    /// drain deadline.
    pub async fn serve<IO, S, B>(
        &self,
        io: IO,
        service: S,
        shutdown: &Shutdown,
        accepted: Instant,
    ) -> Result<Closed, super::BoxError>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        S: Service<http::Request<Incoming>, Response = http::Response<B>> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<super::BoxError>,
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<super::BoxError>,
    {
        let activity = Arc::new(Activity::new(accepted));
        let service = Tracked::new(service, activity.clone());
        let mut conn = pin!(self.builder.serve_connection(TokioIo::new(io), service));
        // At the deadline every relayed stream ends itself cleanly; the grace lets the
        // connection flush that orderly end (and TLS close_notify) before it is dropped.
        let mut hard_stop = pin!(async {
            shutdown.deadline().cancelled().await;
            tokio::time::sleep(CLOSE_GRACE).await;
        });
        let mut check = pin!(tokio::time::sleep_until(
            accepted + self.first_request_timeout.min(self.idle_timeout)
        ));
        // Set once graceful shutdown has been asked for, with the reason and when.
        let mut closing: Option<(Closed, Instant)> = None;
        loop {
            tokio::select! {
                res = conn.as_mut() => {
                    return match closing {
                        // An error while being closed (e.g. the sniffing cut short) is the
                        // close itself, not a fault worth reporting.
                        Some((reason, _)) => Ok(reason),
                        None => res.map(|()| Closed::Client),
                    };
                }
                () = shutdown.drain().cancelled(), if closing.is_none() => {
                    conn.as_mut().graceful_shutdown();
                    let now = Instant::now();
                    closing = Some((Closed::Drained, now));
                    check.as_mut().reset(now + CLOSE_GRACE);
                }
                () = &mut hard_stop => return Ok(Closed::Drained),
                () = &mut check => {
                    let now = Instant::now();
                    match (self.next_check(&activity, closing, now), closing) {
                        (Some(at), _) => check.as_mut().reset(at),
                        // Asked to close, idle for the whole grace, yet still open: the peer
                        // is not cooperating (no GOAWAY/PING answer, no FIN); drop it.
                        (None, Some((reason, _))) => return Ok(reason),
                        (None, None) => {
                            let reason = if activity.seen_request() {
                                Closed::IdleTimeout
                            } else {
                                Closed::FirstRequestTimeout
                            };
                            // h1: closes now; h2: GOAWAY; still sniffing: stops at once.
                            conn.as_mut().graceful_shutdown();
                            closing = Some((reason, now));
                            check.as_mut().reset(now + CLOSE_GRACE);
                        }
                    }
                }
            }
        }
    }

    /// When to look at the connection next, or `None` if it has been idle long enough to
    /// close (or, when already closing, to drop).
    fn next_check(
        &self,
        activity: &Activity,
        closing: Option<(Closed, Instant)>,
        now: Instant,
    ) -> Option<Instant> {
        // `busy` first: having seen zero in flight, the idle stamp read next is current.
        let busy = activity.busy();
        let (due, period) = match closing {
            Some((_, since)) => (activity.idle_since().max(since) + CLOSE_GRACE, CLOSE_GRACE),
            None if activity.seen_request() => {
                (activity.idle_since() + self.idle_timeout, self.idle_timeout)
            }
            // Before the first request `idle_since` is the accept time. Checking at least
            // every idle period means a first request that arrives and ends before the
            // first-request deadline still gets its idle deadline on time.
            None => (
                activity.idle_since() + self.first_request_timeout,
                self.idle_timeout,
            ),
        };
        if busy {
            // Busy connections are looked at once per period: cheap, and a request ending
            // just after this check is not idle for a whole period before the next one.
            return Some(now + period);
        }
        (due > now).then(|| due.min(now + period))
    }
}

/// Builds the HTTP/1.1 + HTTP/2 connection builder from the configured limits.
fn builder(limits: &HttpLimits) -> auto::Builder<TokioExecutor> {
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

/// How long a connection may take to close after it was asked to (drain deadline, idle or
/// first-request timeout) before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// HTTP server limits applied to every client connection.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Time allowed to receive a full request head (HTTP/1.1).
    pub header_read_timeout: Duration,
    /// Maximum size of a request head in bytes (HTTP/1.1 buffer, HTTP/2 header list).
    pub max_header_bytes: usize,
    /// Maximum number of request headers (HTTP/1.1).
    pub max_headers: usize,
    /// Maximum request body size in bytes.
    pub max_request_body_bytes: u64,
    /// HTTP/2 PING interval.
    pub h2_keepalive_interval: Duration,
    /// HTTP/2 PING acknowledgement timeout.
    pub h2_keepalive_timeout: Duration,
    /// HTTP/2 concurrent streams per connection.
    pub h2_max_concurrent_streams: u32,
    /// Deadline from TCP accept (TLS handshake included) to the first complete request head,
    /// HTTP/1.1 or HTTP/2; a connection that has not sent one by then is closed.
    pub first_request_timeout: Duration,
    /// A connection with no request in progress (no request being handled, no response
    /// still streaming) for this long is closed; HTTP/1.1 keep-alive and HTTP/2 alike.
    pub idle_timeout: Duration,
}
