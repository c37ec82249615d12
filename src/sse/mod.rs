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
//! - ends GET and `subscriptions/listen` streams after their lifetime (when one is set), at an
//!   event boundary, with a `retry:` field and the last event id the upstream gave, so the
//!   client reconnects and resumes;
//! - passes the bytes through the stream's [`EventTransform`]s in order (the legacy endpoint
//!   rewrite, the answer filter, the pending-call tracker), ending the stream cleanly when one
//!   cannot go on: passing an event through untransformed could leak a backend address or a
//!   hidden tool;
//! - whatever ends it (but the client), lets each transform append a last word before the
//!   end ([`EventTransform::end`]): the pending-call tracker answers the calls the upstream
//!   left unanswered with JSON-RPC errors.
//!
//! Non-SSE bodies are passed through untouched; an upstream failure or an upstream that stalls
//! for `body_idle_timeout` aborts them, so a client can never take a truncated JSON answer for
//! a complete one, and a stalled backend cannot hold a request open forever.
//!
//! Every body reports how it ended, once, as a [`StreamEnd`] to its [`StreamEndHook`] (when
//! one is set) and as the access log's outcome.

pub mod frame;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::WaitForCancellationFutureOwned;

use crate::http::BoxError;
use crate::metrics::StreamSeries;
use crate::telemetry::{AccessLog, Outcome};

const HEARTBEAT_AT_EVENT_BOUNDARY: &[u8] = b": keep-alive\n\n";
const HEARTBEAT_IN_EVENT: &[u8] = b": keep-alive\n";

/// The `retry:` (milliseconds) sent when a stream reaches its lifetime: soon enough that the
/// client does not notice, late enough that a reconnect is not a busy loop.
pub const LIFETIME_RETRY_MS: u32 = 1000;

/// [`EventTransform::name`] of the answer filter: a stream it ends counts as a filter refusal.
pub const ANSWER_FILTER: &str = "answer filter";

/// Why a relayed body ended. The access log records it as its outcome; metrics and upstream
/// health read it from [`StreamEnd`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndCause {
    /// The client went away (hyper dropped the body before its end).
    ClientGone,
    /// The upstream ended its body cleanly.
    UpstreamEnded,
    /// The upstream failed mid-body: reset, truncated, unreadable, or bytes a transform could
    /// not use.
    UpstreamError,
    /// The upstream sent nothing for the idle limit.
    UpstreamIdle,
    /// `sse.max_stream_lifetime` was reached.
    Lifetime,
    /// The client stopped reading: a write stayed blocked for `sse.client_write_timeout`.
    ClientWriteTimeout,
    /// Shutdown ended the stream.
    Drained,
}

impl EndCause {
    /// The `cause` label of `mcp_edge_sse_streams_ended_total`.
    pub fn metric_label(self) -> &'static str {
        match self {
            EndCause::ClientGone => "client_gone",
            EndCause::UpstreamEnded => "upstream_ended",
            EndCause::UpstreamError => "error",
            EndCause::UpstreamIdle => "idle",
            EndCause::Lifetime => "lifetime",
            EndCause::ClientWriteTimeout => "client_write_timeout",
            EndCause::Drained => "drain",
        }
    }

    /// Label for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            EndCause::ClientGone => "client_gone",
            EndCause::UpstreamEnded => "upstream_ended",
            EndCause::UpstreamError => "upstream_error",
            EndCause::UpstreamIdle => "upstream_idle",
            EndCause::Lifetime => "lifetime",
            EndCause::ClientWriteTimeout => "client_write_timeout",
            EndCause::Drained => "drained",
        }
    }

    /// The access log's outcome for it.
    pub fn outcome(self) -> Outcome {
        match self {
            EndCause::ClientGone => Outcome::ClientClosed,
            EndCause::UpstreamEnded => Outcome::Complete,
            EndCause::UpstreamError => Outcome::UpstreamError,
            EndCause::UpstreamIdle => Outcome::IdleTimeout,
            EndCause::Lifetime => Outcome::Lifetime,
            EndCause::ClientWriteTimeout => Outcome::ClientWriteTimeout,
            EndCause::Drained => Outcome::Drained,
        }
    }
}

/// How one relayed body ended, reported once to its [`StreamEndHook`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamEnd {
    /// Why it ended.
    pub cause: EndCause,
    /// Whether the upstream failed mid-body: an error, a reset or truncated body, unusable
    /// bytes, or silence past the idle limit while an answer was still owed (a non-SSE body,
    /// or an SSE stream with calls unanswered). What upstream health should count against the
    /// endpoint; a quiet GET stream that idles out is not a failure.
    pub upstream_failed: bool,
    /// Whether the body was an event stream.
    pub sse: bool,
    /// JSON-RPC error answers the proxy appended for calls left unanswered.
    pub injected: usize,
}

/// Called once when a relayed body ends (see [`StreamEnd`]); it runs on the connection's task,
/// so it must be quick and must not block.
pub type StreamEndHook = Arc<dyn Fn(&StreamEnd) + Send + Sync>;

/// SSE-specific state of a relayed stream.
pub struct SseOptions {
    /// Upstream silence before a heartbeat.
    pub heartbeat_interval: Duration,
    /// Fires when this stream must end for shutdown.
    pub stop: WaitForCancellationFutureOwned,
    /// Rewrites applied to the events, in order.
    pub transforms: Vec<Box<dyn EventTransform>>,
    /// When set, the stream is closed (with `retry:`) after this long.
    pub lifetime: Option<Duration>,
}

/// What a transform appends when its stream ends.
#[derive(Debug, Default)]
pub struct Epilogue {
    /// Complete events to send before the stream closes.
    pub bytes: Bytes,
    /// How many of them answer a call the upstream left unanswered.
    pub answers: usize,
}

/// A rewrite of an event stream, fed the upstream's bytes in order. It may hold back an
/// incomplete event until its end arrives.
pub trait EventTransform: Send {
    /// Takes upstream bytes, returns what can be sent on now (`chunk` itself when nothing
    /// changes, so passing through costs no copy).
    fn feed(&mut self, chunk: Bytes) -> Result<Bytes, BoxError>;
    /// The upstream ended: what is still held back and complete.
    fn finish(&mut self) -> Result<Bytes, BoxError>;
    /// The stream is ending for `cause` (never called when the client is gone, as nothing
    /// can reach it): complete events to append first. Called at most once.
    fn end(&mut self, cause: EndCause) -> Epilogue {
        let _ = cause;
        Epilogue::default()
    }
    /// What the transform does, for the log line when it has to end the stream.
    fn name(&self) -> &'static str;
}

struct SseState {
    heartbeat_interval: Duration,
    heartbeat: Pin<Box<Sleep>>,
    stop: Pin<Box<WaitForCancellationFutureOwned>>,
    transforms: Vec<Box<dyn EventTransform>>,
    tail: Tail,
    /// Fires at the end of the stream's lifetime; `None` when it has none or it has fired.
    lifetime: Option<Pin<Box<Sleep>>>,
    /// The lifetime is over: the stream ends at the next event boundary.
    lifetime_due: bool,
    /// The last event id sent, tracked only for streams with a lifetime (to repeat it with
    /// the `retry:` field).
    last_id: Option<frame::LastEventId>,
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
    /// How many events `chunk` ends, sent after this tail (a blank line ends an event;
    /// CRLF counts as one line end). Comments, heartbeats included, end no event.
    fn event_ends(self, chunk: &[u8]) -> usize {
        let mut at_line_start = self != Tail::MidLine;
        let mut in_event = self != Tail::EventBoundary;
        let mut after_cr = false;
        let mut ends = 0;
        for &b in chunk {
            match b {
                b'\n' if after_cr => after_cr = false,
                b'\n' | b'\r' => {
                    after_cr = b == b'\r';
                    if at_line_start {
                        if in_event {
                            ends += 1;
                        }
                        in_event = false;
                    }
                    at_line_start = true;
                }
                _ => {
                    if at_line_start && b != b':' {
                        in_event = true;
                    }
                    after_cr = false;
                    at_line_start = false;
                }
            }
        }
        ends
    }

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
            out = t.feed(out).map_err(|e| (t.name(), e))?;
        }
        Ok(out)
    }

    /// What the transforms still hold, once the upstream has ended: each one's tail passes
    /// through the ones after it.
    fn finish_tail(&mut self) -> Result<Bytes, (&'static str, BoxError)> {
        let mut out = Bytes::new();
        for t in &mut self.transforms {
            let mut next = if out.is_empty() {
                BytesMut::new()
            } else {
                BytesMut::from(&t.feed(out).map_err(|e| (t.name(), e))?[..])
            };
            next.extend_from_slice(&t.finish().map_err(|e| (t.name(), e))?);
            out = next.freeze();
        }
        Ok(out)
    }

    /// The events sent before the stream closes for `cause`, and how many answer calls.
    fn epilogue(&mut self, cause: EndCause) -> (BytesMut, usize) {
        let mut out = BytesMut::new();
        if cause == EndCause::Lifetime {
            // Repeating the last id keeps it the client's Last-Event-ID whatever it did with
            // the events before; `retry:` asks it to come back.
            if let Some(id) = self.last_id.as_ref().and_then(|l| l.get()) {
                out.extend_from_slice(b"id: ");
                out.extend_from_slice(id);
                out.extend_from_slice(b"\n");
            }
            out.extend_from_slice(format!("retry: {LIFETIME_RETRY_MS}\n\n").as_bytes());
        }
        let mut answers = 0;
        for t in &mut self.transforms {
            let e = t.end(cause);
            answers += e.answers;
            out.extend_from_slice(&e.bytes);
        }
        if !out.is_empty() {
            // Added events must start at an event boundary. The tracker holds back
            // incomplete events, so the stream is normally at one; if it is not, closing
            // the unfinished event is the lesser harm (its data was cut anyway).
            let close: &[u8] = match self.tail {
                Tail::EventBoundary => b"",
                Tail::LineBoundary => b"\n",
                Tail::MidLine => b"\n\n",
            };
            if !close.is_empty() {
                let mut with = BytesMut::from(close);
                with.extend_from_slice(&out);
                out = with;
            }
        }
        (out, answers)
    }
}

/// A relayed response body; see the module docs.
pub struct RelayBody {
    inner: Incoming,
    /// Bytes of the upstream body already read (a JSON answer too large to hold whole).
    prefix: Option<Bytes>,
    idle_timeout: Duration,
    idle: Pin<Box<Sleep>>,
    sse: Option<SseState>,
    log: AccessLog,
    on_end: Option<StreamEndHook>,
    /// Set by the connection when it gave up on a client that stopped reading.
    write_stalled: Option<Arc<AtomicBool>>,
    /// The end decided while its epilogue is being sent.
    ending: Option<EndCause>,
    /// Answers appended for unanswered calls.
    injected: usize,
    /// The route's stream series (event streams only; closes the gauge when dropped).
    stream: Option<StreamSeries>,
    /// A transform refused an event (the answer filter): the stream ends for that.
    refused: bool,
    /// A non-SSE body whose last frame has been handed over (HTTP/1.1 may stop polling
    /// once Content-Length is reached).
    complete: bool,
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
            lifetime: o
                .lifetime
                .map(|d| Box::pin(tokio::time::sleep(jittered(d)))),
            lifetime_due: false,
            last_id: o.lifetime.map(|_| frame::LastEventId::default()),
        });
        let stream = sse.as_ref().and_then(|_| log.series().stream_opened());
        RelayBody {
            stream,
            refused: false,
            inner,
            prefix: None,
            idle_timeout,
            idle: Box::pin(tokio::time::sleep(idle_timeout)),
            sse,
            log,
            on_end: None,
            write_stalled: None,
            ending: None,
            injected: 0,
            complete: false,
            done: false,
        }
    }

    /// Sends `prefix` (bytes already read from `inner`) first.
    pub fn with_prefix(mut self, prefix: Bytes) -> Self {
        self.prefix = Some(prefix).filter(|p| !p.is_empty());
        self
    }

    /// Reports the end to `hook`.
    pub fn on_end(mut self, hook: Option<StreamEndHook>) -> Self {
        self.on_end = hook;
        self
    }

    /// `flag` is set by the connection when it closed because the client stopped reading; a
    /// body dropped then ended with [`EndCause::ClientWriteTimeout`].
    pub fn write_stall_flag(mut self, flag: Arc<AtomicBool>) -> Self {
        self.write_stalled = Some(flag);
        self
    }

    /// Tells the hook, once.
    fn report(&mut self, cause: EndCause) {
        if let Some(s) = self.stream.take() {
            s.ended(if self.refused {
                "filter_refusal"
            } else {
                cause.metric_label()
            });
        }
        let Some(hook) = self.on_end.take() else {
            return;
        };
        let sse = self.sse.is_some();
        let upstream_failed = match cause {
            EndCause::UpstreamError => true,
            EndCause::UpstreamIdle => !sse || self.injected > 0,
            _ => false,
        };
        hook(&StreamEnd {
            cause,
            upstream_failed,
            sse,
            injected: self.injected,
        });
    }

    fn finish(&mut self, cause: EndCause) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.done = true;
        self.log.set_outcome(cause.outcome());
        self.report(cause);
        Poll::Ready(None)
    }

    /// Ends an event stream for `cause`: the epilogue first (if any), then the end.
    fn end_stream(&mut self, cause: EndCause) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let Some(s) = &mut self.sse else {
            return self.finish(cause);
        };
        let (out, answers) = s.epilogue(cause);
        self.injected += answers;
        if answers > 0 {
            self.log.series().injected_answers(answers);
            tracing::info!(
                request_id = %self.log.request_id(),
                cause = cause.as_str(),
                answers,
                "answering calls the upstream left unanswered"
            );
        }
        if out.is_empty() {
            return self.finish(cause);
        }
        self.ending = Some(cause);
        self.emit(out.freeze())
    }

    /// Aborts a non-SSE body: hyper resets the stream or closes the connection, so the
    /// client cannot take the truncated body for a complete one.
    fn abort(
        &mut self,
        cause: EndCause,
        error: BoxError,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.done = true;
        self.log.set_outcome(cause.outcome());
        self.report(cause);
        Poll::Ready(Some(Err(error)))
    }

    fn emit(&mut self, data: Bytes) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.log.add_bytes(data.len());
        // HTTP/1.1 stops polling once Content-Length is reached, so completion must be noted
        // here rather than when the upstream's end is polled.
        if self.sse.is_none() && self.inner.is_end_stream() {
            self.complete = true;
            self.log.set_outcome(Outcome::Complete);
        }
        if let Some(s) = &mut self.sse {
            if let Some(series) = &self.stream {
                for _ in 0..s.tail.event_ends(&data) {
                    series.event();
                }
            }
            s.tail = s.tail.after(&data);
            if let Some(l) = &mut s.last_id {
                l.track(&data);
            }
        }
        Poll::Ready(Some(Ok(Frame::data(data))))
    }

    /// Whether the stream must end now for its lifetime (only ever at an event boundary,
    /// so the `retry:` event is not glued onto an unfinished one).
    fn lifetime_over(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(s) = &mut self.sse else {
            return false;
        };
        if let Some(l) = &mut s.lifetime
            && l.as_mut().poll(cx).is_ready()
        {
            s.lifetime = None;
            s.lifetime_due = true;
        }
        s.lifetime_due && s.tail == Tail::EventBoundary
    }
}

/// `d` less up to a tenth, at random, so streams opened together (after a restart or a
/// network blip) do not all end and reconnect together.
fn jittered(d: Duration) -> Duration {
    let tenth = u64::try_from(d.as_millis() / 10).unwrap_or(u64::MAX);
    if tenth == 0 {
        return d;
    }
    d.saturating_sub(Duration::from_millis(rand::random::<u64>() % tenth))
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
        if let Some(cause) = this.ending {
            // The epilogue has been handed over.
            return this.finish(cause);
        }
        if let Some(prefix) = this.prefix.take() {
            return this.emit(prefix);
        }
        if let Some(s) = &mut this.sse
            && s.stop.as_mut().poll(cx).is_ready()
        {
            return this.end_stream(EndCause::Drained);
        }
        if this.lifetime_over(cx) {
            tracing::debug!(request_id = %this.log.request_id(), "ending SSE stream: lifetime reached");
            return this.end_stream(EndCause::Lifetime);
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
                            this.refused = step == ANSWER_FILTER;
                            tracing::warn!(request_id = %this.log.request_id(), step, error = %e, "ending SSE stream");
                            return this.end_stream(EndCause::UpstreamError);
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
                        return this.end_stream(EndCause::UpstreamError);
                    }
                    return this.abort(EndCause::UpstreamError, Box::new(e));
                }
                Poll::Ready(None) => {
                    let rest = match this.sse.as_mut().map(SseState::finish_tail) {
                        Some(Ok(rest)) => rest,
                        Some(Err((step, e))) => {
                            tracing::warn!(request_id = %this.log.request_id(), step, error = %e, "dropping the last SSE event");
                            return this.end_stream(EndCause::UpstreamError);
                        }
                        None => Bytes::new(),
                    };
                    if !rest.is_empty() {
                        // Emit the tail now; the next poll sees `None` again and finishes
                        // (both finishers return nothing the second time).
                        return this.emit(rest);
                    }
                    return this.end_stream(EndCause::UpstreamEnded);
                }
                Poll::Pending => break,
            }
        }

        if this.idle.as_mut().poll(cx).is_ready() {
            if this.sse.is_some() {
                tracing::info!(request_id = %this.log.request_id(), "ending SSE stream: upstream idle");
                return this.end_stream(EndCause::UpstreamIdle);
            }
            tracing::warn!(request_id = %this.log.request_id(), "aborting response: upstream stalled mid-body");
            return this.abort(EndCause::UpstreamIdle, "upstream stalled mid-body".into());
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
        if let Some(series) = &this.stream {
            series.heartbeat();
        }
        this.emit(Bytes::from_static(beat))
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        // Heartbeats and rewrites change the length of SSE bodies.
        if self.sse.is_some() {
            return SizeHint::default();
        }
        let inner = self.inner.size_hint();
        let Some(prefix) = &self.prefix else {
            return inner;
        };
        let n = prefix.len() as u64;
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower().saturating_add(n));
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper.saturating_add(n));
        }
        hint
    }
}

impl Drop for RelayBody {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let cause = if let Some(cause) = self.ending {
            // Dropped while its epilogue was out: the end was decided already.
            self.log.set_outcome(cause.outcome());
            cause
        } else if self.complete {
            EndCause::UpstreamEnded
        } else if self
            .write_stalled
            .as_ref()
            .is_some_and(|f| f.load(Ordering::Relaxed))
        {
            self.log.set_outcome(Outcome::ClientWriteTimeout);
            EndCause::ClientWriteTimeout
        } else {
            EndCause::ClientGone
        };
        self.report(cause);
    }
}

#[cfg(test)]
mod tests {
    use super::Tail;

    #[test]
    fn counts_the_events_a_chunk_ends() {
        let t = Tail::EventBoundary;
        assert_eq!(t.event_ends(b"data: a\n\ndata: b\n\n"), 2);
        assert_eq!(t.event_ends(b"data: a\r\n\r\n"), 1);
        assert_eq!(t.event_ends(b"data: a\r\rdata: b\n"), 1);
        assert_eq!(t.event_ends(b": heartbeat\n\n"), 0);
        assert_eq!(t.event_ends(b"data: a\n"), 0);
        assert_eq!(Tail::LineBoundary.event_ends(b"\n"), 1);
        assert_eq!(Tail::MidLine.event_ends(b"tail\n\n"), 1);
        assert_eq!(t.event_ends(b"\n\n\n"), 0);
    }

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
