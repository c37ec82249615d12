//! The response body the proxy hands to hyper for every relayed answer.
//!
//! Frames are forwarded as they arrive, one poll at a time, so nothing is buffered and
//! backpressure is the client's: the upstream is read only as fast as the client takes data.
//! For `text/event-stream` answers the body also
//! - sends a comment heartbeat after `heartbeat_interval` of upstream silence, only at a line
//!   boundary so an event is never split;
//! - ends the stream after `idle_timeout` of upstream silence (heartbeats do not count);
//! - ends the stream cleanly if the upstream fails mid-stream, so the client sees a closed
//!   stream it can resume with `Last-Event-ID` rather than a hung or corrupt one;
//! - ends the stream when its shutdown signal fires;
//! - passes the bytes through the stream's [`EventTransform`]s in order (the legacy endpoint
//!   rewrite, the answer filter), ending the stream cleanly when one cannot go on: passing an
//!   event through untransformed could leak a backend address or a hidden tool.
//!
//! Non-SSE bodies are passed through untouched; an upstream failure or an upstream that stalls
//! for `body_idle_timeout` aborts them, so a client can never take a truncated JSON answer for
//! a complete one, and a stalled backend cannot hold a request open forever.

pub mod frame;

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::WaitForCancellationFutureOwned;

use crate::http::BoxError;
use crate::telemetry::{AccessLog, Outcome};

const HEARTBEAT_AT_EVENT_BOUNDARY: &[u8] = b": keep-alive\n\n";
const HEARTBEAT_IN_EVENT: &[u8] = b": keep-alive\n";

/// SSE-specific state of a relayed stream.
pub struct SseOptions {
    /// Upstream silence before a heartbeat.
    pub heartbeat_interval: Duration,
    /// Fires when this stream must end for shutdown.
    pub stop: WaitForCancellationFutureOwned,
    /// Rewrites applied to the events, in order.
    pub transforms: Vec<Box<dyn EventTransform>>,
}

/// A rewrite of an event stream, fed the upstream's bytes in order. It may hold back an
/// incomplete event until its end arrives.
pub trait EventTransform: Send {
    /// Takes upstream bytes, returns what can be sent on now.
    fn feed(&mut self, chunk: &[u8]) -> Result<Bytes, BoxError>;
    /// The upstream ended: what is still held back and complete.
    fn finish(&mut self) -> Result<Bytes, BoxError>;
    /// What the transform does, for the log line when it has to end the stream.
    fn name(&self) -> &'static str;
}

struct SseState {
    heartbeat_interval: Duration,
    heartbeat: Pin<Box<Sleep>>,
    stop: Pin<Box<WaitForCancellationFutureOwned>>,
    transforms: Vec<Box<dyn EventTransform>>,
    tail: Tail,
}

/// Where the bytes sent so far end, relative to SSE syntax.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tail {
    /// At the start of an event (nothing sent, or after a blank line).
    EventBoundary,
    /// After a line terminator inside an event.
    LineBoundary,
    /// In the middle of a line.
    MidLine,
}

impl Tail {
    fn after(self, chunk: &[u8]) -> Tail {
        let n = chunk.len();
        if n == 0 {
            return self;
        }
        let last = chunk[n - 1];
        if last != b'\n' && last != b'\r' {
            return Tail::MidLine;
        }
        // Look at the terminator before the final one (CRLF counts as one terminator).
        let before = if last == b'\n' && n >= 2 && chunk[n - 2] == b'\r' {
            n - 2
        } else {
            n - 1
        };
        let prev = if before == 0 {
            match self {
                Tail::EventBoundary | Tail::LineBoundary => Some(b'\n'),
                Tail::MidLine => None,
            }
        } else {
            Some(chunk[before - 1])
        };
        match prev {
            Some(b'\n' | b'\r') => Tail::EventBoundary,
            _ => Tail::LineBoundary,
        }
    }
}

impl SseState {
    /// `data` through every transform.
    fn feed(&mut self, data: Bytes) -> Result<Bytes, (&'static str, BoxError)> {
        let mut out = data;
        for t in &mut self.transforms {
            if out.is_empty() {
                break;
            }
            out = t.feed(&out).map_err(|e| (t.name(), e))?;
        }
        Ok(out)
    }

    /// What the transforms still hold, once the upstream has ended: each one's tail passes
    /// through the ones after it.
    fn finish_tail(&mut self) -> Result<Bytes, (&'static str, BoxError)> {
        let mut out = Vec::new();
        for t in &mut self.transforms {
            let mut next = if out.is_empty() {
                Vec::new()
            } else {
                t.feed(&out).map_err(|e| (t.name(), e))?.to_vec()
            };
            next.extend_from_slice(&t.finish().map_err(|e| (t.name(), e))?);
            out = next;
        }
        Ok(Bytes::from(out))
    }
}

/// A relayed response body; see the module docs.
pub struct RelayBody {
    inner: Incoming,
    idle_timeout: Duration,
    idle: Pin<Box<Sleep>>,
    sse: Option<SseState>,
    log: AccessLog,
    done: bool,
}

impl RelayBody {
    /// Wraps an upstream body that may stay silent for at most `idle_timeout` between frames;
    /// `sse` is `Some` for `text/event-stream` answers.
    pub fn new(
        inner: Incoming,
        idle_timeout: Duration,
        sse: Option<SseOptions>,
        log: AccessLog,
    ) -> Self {
        let sse = sse.map(|o| SseState {
            heartbeat_interval: o.heartbeat_interval,
            heartbeat: Box::pin(tokio::time::sleep(o.heartbeat_interval)),
            stop: Box::pin(o.stop),
            transforms: o.transforms,
            tail: Tail::EventBoundary,
        });
        RelayBody {
            inner,
            idle_timeout,
            idle: Box::pin(tokio::time::sleep(idle_timeout)),
            sse,
            log,
            done: false,
        }
    }

    fn finish(&mut self, outcome: Outcome) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.done = true;
        self.log.set_outcome(outcome);
        Poll::Ready(None)
    }

    fn emit(&mut self, data: Bytes) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.log.add_bytes(data.len());
        // HTTP/1.1 stops polling once Content-Length is reached, so completion must be noted
        // here rather than when the upstream's end is polled.
        if self.inner.is_end_stream() {
            self.log.set_outcome(Outcome::Complete);
        }
        if let Some(s) = &mut self.sse {
            s.tail = s.tail.after(&data);
        }
        Poll::Ready(Some(Ok(Frame::data(data))))
    }
}

impl HttpBody for RelayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if let Some(s) = &mut this.sse
            && s.stop.as_mut().poll(cx).is_ready()
        {
            return this.finish(Outcome::Drained);
        }

        loop {
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let data = match frame.into_data() {
                        Ok(data) => data,
                        // Trailers pass through as they are.
                        Err(frame) => return Poll::Ready(Some(Ok(frame))),
                    };
                    let now = Instant::now();
                    this.idle.as_mut().reset(now + this.idle_timeout);
                    let Some(s) = &mut this.sse else {
                        return this.emit(data);
                    };
                    s.heartbeat.as_mut().reset(now + s.heartbeat_interval);
                    let out = match s.feed(data) {
                        Ok(out) => out,
                        Err((step, e)) => {
                            tracing::warn!(request_id = %this.log.request_id(), step, error = %e, "ending SSE stream");
                            return this.finish(Outcome::UpstreamError);
                        }
                    };
                    if out.is_empty() {
                        continue;
                    }
                    return this.emit(out);
                }
                Poll::Ready(Some(Err(e))) => {
                    tracing::warn!(
                        request_id = %this.log.request_id(),
                        error = %crate::upstream::error_chain(&e),
                        "upstream failed mid-response"
                    );
                    if this.sse.is_some() {
                        return this.finish(Outcome::UpstreamError);
                    }
                    this.done = true;
                    this.log.set_outcome(Outcome::UpstreamError);
                    return Poll::Ready(Some(Err(Box::new(e))));
                }
                Poll::Ready(None) => {
                    let rest = match this.sse.as_mut().map(SseState::finish_tail) {
                        Some(Ok(rest)) => rest,
                        Some(Err((step, e))) => {
                            tracing::warn!(request_id = %this.log.request_id(), step, error = %e, "dropping the last SSE event");
                            Bytes::new()
                        }
                        None => Bytes::new(),
                    };
                    if !rest.is_empty() {
                        // Emit the tail now; the next poll sees `None` again and finishes
                        // (both finishers return nothing the second time).
                        return this.emit(rest);
                    }
                    return this.finish(Outcome::Complete);
                }
                Poll::Pending => break,
            }
        }

        if this.idle.as_mut().poll(cx).is_ready() {
            if this.sse.is_some() {
                tracing::info!(request_id = %this.log.request_id(), "ending SSE stream: upstream idle");
                return this.finish(Outcome::IdleTimeout);
            }
            tracing::warn!(request_id = %this.log.request_id(), "aborting response: upstream stalled mid-body");
            this.done = true;
            this.log.set_outcome(Outcome::IdleTimeout);
            return Poll::Ready(Some(Err("upstream stalled mid-body".into())));
        }
        let Some(s) = &mut this.sse else {
            return Poll::Pending;
        };
        ready!(s.heartbeat.as_mut().poll(cx));
        s.heartbeat
            .as_mut()
            .reset(Instant::now() + s.heartbeat_interval);
        // Register the renewed timer with this task before returning.
        let _ = s.heartbeat.as_mut().poll(cx);
        let beat = match s.tail {
            Tail::EventBoundary => HEARTBEAT_AT_EVENT_BOUNDARY,
            Tail::LineBoundary => HEARTBEAT_IN_EVENT,
            // Mid-line a comment would corrupt the event; wait for the next interval.
            Tail::MidLine => return Poll::Pending,
        };
        this.emit(Bytes::from_static(beat))
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        // Heartbeats and rewrites change the length of SSE bodies.
        if self.sse.is_some() {
            SizeHint::default()
        } else {
            self.inner.size_hint()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Tail;

    #[test]
    fn tail_tracks_sse_boundaries() {
        let t = Tail::EventBoundary;
        assert!(t.after(b"data: x") == Tail::MidLine);
        assert!(t.after(b"data: x\n") == Tail::LineBoundary);
        assert!(t.after(b"data: x\n\n") == Tail::EventBoundary);
        assert!(t.after(b"data: x\r\n\r\n") == Tail::EventBoundary);
        assert!(t.after(b"data: x\r\n") == Tail::LineBoundary);
        assert!(t.after(b"data: x\r\r") == Tail::EventBoundary);
        // A blank line split across chunks.
        assert!(Tail::LineBoundary.after(b"\n") == Tail::EventBoundary);
        assert!(Tail::LineBoundary.after(b"\r\n") == Tail::EventBoundary);
        assert!(Tail::MidLine.after(b"\n") == Tail::LineBoundary);
        assert!(t.after(b"") == Tail::EventBoundary);
    }
}

#[cfg(test)]
mod props {
    use super::Tail;
    use proptest::prelude::*;

    proptest! {
        /// Where a stream stands after a run of chunks depends only on its bytes.
        #[test]
        fn tail_does_not_depend_on_chunking(
            input in prop::collection::vec(prop_oneof![Just(b'\n'), Just(b'\r'), Just(b'a'), Just(b':')], 0..64),
            cuts in prop::collection::vec(any::<usize>(), 0..8),
        ) {
            let whole = Tail::EventBoundary.after(&input);
            let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
            points.sort_unstable();
            points.push(input.len());
            let (mut tail, mut at) = (Tail::EventBoundary, 0);
            for p in points {
                tail = tail.after(&input[at..p]);
                at = p;
            }
            // A CRLF split across chunks reads as CR then LF: the split view may only be more
            // conservative (never claim an event boundary the whole view does not see).
            if tail == Tail::EventBoundary {
                prop_assert!(whole == Tail::EventBoundary || input.ends_with(b"\r\n"));
            }
            prop_assert_eq!(tail == Tail::MidLine, whole == Tail::MidLine);
        }
    }
}
