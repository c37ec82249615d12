//! A deadline on blocked writes: a client that stops reading is cut off.
//!
//! hyper writes a response as fast as the socket takes it and polls the response body only
//! when it has room, so a client that stops reading stalls the body where it is: nothing
//! grows without bound, but the connection, the relayed upstream stream and the buffers in
//! between stay pinned for as long as the client likes. This wrapper times every write that
//! cannot make progress; when one stays blocked for the timeout it fails with `TimedOut`,
//! hyper gives up on the connection, and dropping it drops the response bodies and their
//! upstream streams. Progress of any size re-arms the clock, so a slow reader is never cut,
//! only a stopped one; an idle connection (nothing to write) is never timed here.
//!
//! It sits under hyper, over TLS, so it sees HTTP/1.1 and HTTP/2 alike: with HTTP/2 it
//! fires when the whole connection stops draining. One HTTP/2 stream whose flow-control
//! window the client keeps closed while it reads others holds only its window's worth.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// An IO whose writes fail once blocked for longer than the timeout; see the module docs.
pub struct WriteDeadline<IO> {
    inner: IO,
    timeout: Duration,
    /// Allocated once; reset each time a blocked write arms it.
    timer: Pin<Box<Sleep>>,
    armed: bool,
    /// Set when the deadline fired, for the bodies and the log to tell why they ended.
    fired: Arc<AtomicBool>,
}

impl<IO> WriteDeadline<IO> {
    /// Wraps `inner`; `fired` is set when a write stayed blocked for `timeout`.
    pub fn new(inner: IO, timeout: Duration, fired: Arc<AtomicBool>) -> Self {
        WriteDeadline {
            inner,
            timeout,
            timer: Box::pin(tokio::time::sleep(timeout)),
            armed: false,
            fired,
        }
    }

    /// What a write that returned `poll` means once the deadline is taken into account.
    fn check<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.armed = false;
            return poll;
        }
        if !self.armed {
            self.armed = true;
            self.timer.as_mut().reset(Instant::now() + self.timeout);
        }
        // Polling the timer registers this task, so it is woken to fail the write even if
        // the socket never becomes writable again.
        if self.timer.as_mut().poll(cx).is_ready() {
            self.fired.store(true, Ordering::Relaxed);
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "client stopped reading (sse.client_write_timeout)",
            )));
        }
        Poll::Pending
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for WriteDeadline<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.check(cx, poll)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.check(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_flush(cx);
        this.check(cx, poll)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.check(cx, poll)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn a_blocked_write_fails_after_the_timeout() {
        // A 16-byte pipe nobody reads: the second write blocks for good.
        let (a, _b) = tokio::io::duplex(16);
        let fired = Arc::new(AtomicBool::new(false));
        let mut w = WriteDeadline::new(a, Duration::from_millis(100), fired.clone());
        w.write_all(&[0; 16]).await.unwrap();
        let err = w.write_all(&[0; 16]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(fired.load(Ordering::Relaxed));
    }

    #[tokio::test]
    async fn a_slow_reader_is_not_cut() {
        let (a, mut b) = tokio::io::duplex(16);
        let fired = Arc::new(AtomicBool::new(false));
        // Reads every 20ms against a 5s deadline: progress, however slow, re-arms it.
        let mut w = WriteDeadline::new(a, Duration::from_secs(5), fired.clone());
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 16];
            for _ in 0..8 {
                tokio::time::sleep(Duration::from_millis(20)).await;
                tokio::io::AsyncReadExt::read_exact(&mut b, &mut buf)
                    .await
                    .unwrap();
            }
        });
        for _ in 0..8 {
            w.write_all(&[1; 16]).await.unwrap();
        }
        reader.await.unwrap();
        assert!(!fired.load(Ordering::Relaxed));
    }
}
