//! Tracks whether a connection is doing anything: a request counts from the moment hyper
//! hands its complete head to the service until its response body has been sent (or
//! abandoned). hyper has no "no open stream" hook, so the service and every response body
//! are wrapped to keep the count.
//!
//! Only requests count, not bytes: HTTP/2 PINGs, SETTINGS or a trickle of garbage must not
//! keep an otherwise idle connection alive, while a silent SSE stream between heartbeats is
//! an open response and so is never idle.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};

use http_body::{Body, Frame, SizeHint};
use hyper::service::Service;
use tokio::time::Instant;

/// Request activity of one connection, shared by the serve loop and the request tasks.
#[derive(Debug)]
pub struct Activity {
    /// Time zero for `idle_since_ms`: when the connection was accepted.
    origin: Instant,
    /// Requests whose response has not been fully sent yet.
    in_flight: AtomicUsize,
    /// Whether any request has arrived; before that the first-request deadline applies.
    seen_request: AtomicBool,
    /// When the last request ended, in ms since `origin`.
    idle_since_ms: AtomicU64,
}

impl Activity {
    /// No requests yet; idle since `accepted`.
    pub fn new(accepted: Instant) -> Self {
        Activity {
            origin: accepted,
            in_flight: AtomicUsize::new(0),
            seen_request: AtomicBool::new(false),
            idle_since_ms: AtomicU64::new(0),
        }
    }

    /// Whether a request is being handled or its response is still being sent.
    pub fn busy(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) > 0
    }

    /// Whether a request head has been received on this connection.
    pub fn seen_request(&self) -> bool {
        self.seen_request.load(Ordering::Acquire)
    }

    /// When the connection last became idle (its accept time if no request has ended yet).
    pub fn idle_since(&self) -> Instant {
        self.origin + std::time::Duration::from_millis(self.idle_since_ms.load(Ordering::Acquire))
    }

    fn begin(self: &Arc<Self>) -> RequestGuard {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        if !self.seen_request.load(Ordering::Relaxed) {
            self.seen_request.store(true, Ordering::Release);
        }
        RequestGuard(Some(self.clone()))
    }

    fn end(&self) {
        let ms = Instant::now()
            .saturating_duration_since(self.origin)
            .as_millis();
        // Stamp before the count drops: whoever then sees zero in flight also sees the stamp
        // (Release/Acquire), so a just-finished request never looks idle since long ago.
        self.idle_since_ms
            .fetch_max(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::Release);
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Holds one request in flight; ends it when dropped or released.
#[derive(Debug)]
struct RequestGuard(Option<Arc<Activity>>);

impl RequestGuard {
    fn release(&mut self) {
        if let Some(a) = self.0.take() {
            a.end();
        }
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.release();
    }
}

/// A service whose requests are counted in `activity`.
#[derive(Debug)]
pub struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Tracked<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, activity: Arc<Activity>) -> Self {
        Tracked { inner, activity }
    }
}

impl<S, Req, B> Service<Req> for Tracked<S>
where
    S: Service<Req, Response = http::Response<B>>,
{
    type Response = http::Response<TrackedBody<B>>;
    type Error = S::Error;
    type Future = TrackedFuture<S::Future>;

    fn call(&self, req: Req) -> Self::Future {
        // The guard is taken before the inner call so the request counts even while the
        // service future is being built.
        let guard = self.activity.begin();
        TrackedFuture {
            inner: self.inner.call(req),
            guard: Some(guard),
        }
    }
}

pin_project_lite::pin_project! {
    /// The response future of a [`Tracked`] service: hands the request's guard on to the
    /// response body, or drops it if the request fails or is abandoned.
    pub struct TrackedFuture<F> {
        #[pin]
        inner: F,
        guard: Option<RequestGuard>,
    }
}

impl<F, B, E> Future for TrackedFuture<F>
where
    F: Future<Output = Result<http::Response<B>, E>>,
{
    type Output = Result<http::Response<TrackedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let res = ready!(this.inner.poll(cx));
        let guard = this.guard.take().unwrap_or(RequestGuard(None));
        Poll::Ready(res.map(|resp| resp.map(|inner| TrackedBody { inner, guard })))
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request in flight until it ends or is dropped.
    pub struct TrackedBody<B> {
        #[pin]
        inner: B,
        guard: RequestGuard,
    }
}

impl<B: Body> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        // The end of the body is the end of the request: no need to wait for hyper to drop it.
        if !matches!(frame, Some(Ok(_))) {
            this.guard.release();
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn a_request_counts_until_its_body_ends() {
        let activity = Arc::new(Activity::new(Instant::now()));
        let svc = Tracked::new(
            hyper::service::service_fn(|_req: http::Request<crate::http::Body>| async {
                Ok::<_, std::convert::Infallible>(http::Response::new(crate::http::full("hi")))
            }),
            activity.clone(),
        );
        assert!(!activity.seen_request() && !activity.busy());
        let fut = svc.call(http::Request::new(crate::http::empty()));
        assert!(activity.busy(), "counts from the call on");
        let resp = fut.await.unwrap();
        assert!(activity.busy(), "still busy while the body is unsent");
        let before = activity.idle_since();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"hi");
        assert!(!activity.busy(), "idle once the body has ended");
        assert!(activity.seen_request());
        assert!(activity.idle_since() >= before);
    }

    #[tokio::test]
    async fn an_abandoned_request_stops_counting() {
        let activity = Arc::new(Activity::new(Instant::now()));
        let svc = Tracked::new(
            hyper::service::service_fn(|_req: http::Request<crate::http::Body>| async {
                std::future::pending::<Result<http::Response<crate::http::Body>, std::io::Error>>()
                    .await
            }),
            activity.clone(),
        );
        let fut = svc.call(http::Request::new(crate::http::empty()));
        assert!(activity.busy());
        drop(fut);
        assert!(!activity.busy());
    }
}
