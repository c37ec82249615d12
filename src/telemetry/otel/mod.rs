//! OTLP export of request spans (`--features otel`, `[telemetry.otlp]`; docs/tracing.md).
//!
//! [`OtlpSink`] is the [`SpanSink`] the proxy hands each sampled request's [`RequestSpans`]
//! to when its answer ends. The request's spans are encoded there and then, as OTLP protobuf
//! ([`wire`]), into the batch being filled; one export task on the runtime sends full batches
//! as they fill and whatever is queued every [`BATCH_DELAY`] ([`transport`]: OTLP/HTTP or
//! OTLP/gRPC). The queue is bounded in spans: when the collector is slow or down, new spans
//! are dropped (and counted), a request never waits for the collector.
//!
//! Layout:
//! - `mod.rs` (here): the sampler, the queue, the export task, flush and shutdown;
//! - [`wire`]: the protobuf encoding;
//! - [`transport`]: the HTTP/gRPC client and its retries.

pub mod transport;
pub mod wire;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;

use crate::config::{OtlpSettings, Sampling};
use crate::telemetry::trace::{RequestSpans, SpanCounts, SpanSink, TraceContext};
use transport::Transport;

pub use transport::ExportError;

/// Spans held for export at most (besides the batch being sent): with up to four spans a
/// request, about 500 requests' worth. Beyond it (the collector is down or slow) new spans
/// are dropped.
pub const MAX_QUEUED_SPANS: usize = 2048;
/// Spans sent in one export request.
pub const MAX_BATCH: usize = 512;
/// How long a span may wait for a batch to fill before it is sent anyway.
pub const BATCH_DELAY: Duration = Duration::from_secs(2);
/// The most spans one request has (server, authenticate, authorize, upstream).
const SPANS_PER_REQUEST: usize = 4;
/// Emptied batch buffers kept for reuse (their capacity is what is worth keeping: a batch is
/// about 100 KiB, and freeing chunks that size makes glibc consolidate its free lists, which
/// was 1.9% of a traced request's CPU).
const SPARE_BUFFERS: usize = 2;
/// Room a new batch buffer starts with: 512 spans of about 250 bytes, so it is not grown by
/// doubling as it fills.
const BATCH_CAPACITY: usize = MAX_BATCH * 256;

/// Why the exporter could not be set up or flushed.
#[derive(Debug, thiserror::Error)]
pub enum OtelError {
    /// The exporter refused its settings.
    #[error("telemetry.otlp: cannot set up the {protocol} exporter for {endpoint}: {error}")]
    Exporter {
        /// `http/protobuf` or `grpc`.
        protocol: &'static str,
        /// The collector URL (validated: no credentials in it).
        endpoint: String,
        /// Why.
        error: String,
    },
    /// The exporter was set up outside a Tokio runtime (its export task runs there).
    #[error("telemetry.otlp: the exporter must be built inside the Tokio runtime")]
    NoRuntime,
    /// A flush or the final export at shutdown did not complete.
    #[error("telemetry.otlp: {what} did not complete: {error}")]
    Flush {
        /// `flush` or `shutdown`.
        what: &'static str,
        /// Why.
        error: String,
    },
}

/// Exports sampled requests' spans over OTLP.
pub struct OtlpSink {
    shared: Arc<Shared>,
    sampler: Sampler,
    timeout: Duration,
    /// To the export task: flush and shutdown requests. Dropping the sink closes it, which
    /// ends the task.
    commands: mpsc::UnboundedSender<Command>,
}

impl std::fmt::Debug for OtlpSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpSink")
            .field("sampler", &self.sampler)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

/// What request threads and the export task share.
struct Shared {
    /// The spans waiting for export. A plain mutex: it is held for encoding one request's
    /// spans (about a microsecond) or for swapping a batch out, never across an await.
    queue: Mutex<Queue>,
    /// Wakes the export task when a batch is full.
    full: Notify,
    exported: AtomicU64,
    dropped: AtomicU64,
    failed: AtomicU64,
    /// Whether the first drop since the last landed export was logged (one line per outage,
    /// not one per request).
    drop_logged: AtomicBool,
}

#[derive(Default)]
struct Queue {
    /// Batches ready to send, oldest first.
    ready: VecDeque<Batch>,
    /// The batch being filled.
    filling: Batch,
    /// Spans in `ready` and `filling`.
    spans: usize,
    spare: Vec<Vec<u8>>,
}

#[derive(Default)]
struct Batch {
    /// Encoded `ScopeSpans.spans` entries.
    body: Vec<u8>,
    spans: usize,
}

enum Command {
    Flush(oneshot::Sender<Result<(), String>>),
    /// Export what is queued by the deadline, then stop.
    Shutdown(oneshot::Sender<Result<(), String>>, Instant),
}

impl OtlpSink {
    /// A sink exporting to the collector of `settings`. Connects lazily: a collector that is
    /// down at start costs dropped spans, not a failed start. Must be called inside the Tokio
    /// runtime: the export task is spawned there.
    pub fn new(settings: &OtlpSettings) -> Result<Self, OtelError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| OtelError::NoRuntime)?;
        let transport = Transport::new(settings)?;
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            full: Notify::new(),
            exported: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            drop_logged: AtomicBool::new(false),
        });
        let (commands, rx) = mpsc::unbounded_channel();
        let exporter = Exporter {
            shared: shared.clone(),
            transport,
            resource: wire::resource(&settings.service_name),
            scope: wire::scope(),
            body: Vec::new(),
        };
        runtime.spawn(exporter.run(rx));
        Ok(OtlpSink {
            shared,
            sampler: Sampler::new(settings.sampling),
            timeout: settings.timeout,
            commands,
        })
    }

    /// What became of the spans so far.
    pub fn stats(&self) -> SpanCounts {
        SpanCounts {
            exported: self.shared.exported.load(Ordering::Relaxed),
            dropped: self.shared.dropped.load(Ordering::Relaxed),
            failed: self.shared.failed.load(Ordering::Relaxed),
        }
    }

    /// Exports everything queued now; waits up to the export timeout plus a second.
    pub async fn flush(&self) -> Result<(), OtelError> {
        self.ask("flush", Command::Flush).await
    }

    /// Exports what is queued (within the export timeout from now) and stops the export
    /// task; spans handed in afterwards are dropped.
    pub async fn shutdown(&self) -> Result<(), OtelError> {
        let deadline = Instant::now() + self.timeout;
        let result = self
            .ask("shutdown", |reply| Command::Shutdown(reply, deadline))
            .await;
        let s = self.stats();
        if s.dropped > 0 || s.failed > 0 {
            tracing::warn!(
                exported = s.exported,
                dropped = s.dropped,
                failed = s.failed,
                "spans were lost while exporting: dropped on a full queue, or in failed exports"
            );
        }
        result
    }

    async fn ask(
        &self,
        what: &'static str,
        command: impl FnOnce(oneshot::Sender<Result<(), String>>) -> Command,
    ) -> Result<(), OtelError> {
        let fail = |error: String| OtelError::Flush { what, error };
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(command(tx))
            .map_err(|_| fail("the exporter has stopped".to_owned()))?;
        // A second for the hand-over beyond the export's own bound.
        match tokio::time::timeout(self.timeout + Duration::from_secs(1), rx).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(fail(e)),
            Ok(Err(_)) => Err(fail("the exporter has stopped".to_owned())),
            Err(_) => Err(fail(format!(
                "no answer within {:?}",
                self.timeout + Duration::from_secs(1)
            ))),
        }
    }
}

impl SpanSink for OtlpSink {
    fn sample(&self, context: &TraceContext) -> bool {
        self.sampler.sample(context)
    }

    fn counts(&self) -> SpanCounts {
        self.stats()
    }

    fn export(&self, spans: RequestSpans) {
        let s = &self.shared;
        let mut q = s.queue.lock().unwrap_or_else(PoisonError::into_inner);
        if q.spans + SPANS_PER_REQUEST > MAX_QUEUED_SPANS {
            drop(q);
            s.dropped
                .fetch_add(spans.span_count() as u64, Ordering::Relaxed);
            if !s.drop_logged.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    queued = MAX_QUEUED_SPANS,
                    "OTLP export queue full (the collector is slow or down): dropping spans"
                );
            }
            return;
        }
        let n = wire::request_spans(&spans, &mut q.filling.body);
        q.filling.spans += n;
        q.spans += n;
        if q.filling.spans >= MAX_BATCH {
            let body = q
                .spare
                .pop()
                .unwrap_or_else(|| Vec::with_capacity(BATCH_CAPACITY));
            let full = std::mem::replace(&mut q.filling, Batch { body, spans: 0 });
            q.ready.push_back(full);
            drop(q);
            s.full.notify_one();
        }
    }
}

/// The export task's side.
struct Exporter {
    shared: Arc<Shared>,
    transport: Transport,
    /// Encoded once: they never change.
    resource: Vec<u8>,
    scope: Vec<u8>,
    /// The export request body, reused from one export to the next (see [`SPARE_BUFFERS`]).
    body: Vec<u8>,
}

/// An export body lent to the HTTP client as `Bytes` and taken back once it is done with it.
struct Lent(Arc<Vec<u8>>);

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Exporter {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut tick = tokio::time::interval(BATCH_DELAY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                () = self.shared.full.notified() => {
                    let _ = self.drain(false, None).await;
                }
                _ = tick.tick() => {
                    let _ = self.drain(true, None).await;
                }
                command = commands.recv() => match command {
                    // The sink is gone.
                    None => return,
                    Some(Command::Flush(reply)) => {
                        let _ = reply.send(self.drain(true, None).await);
                    }
                    Some(Command::Shutdown(reply, deadline)) => {
                        // One bound for everything still queued, counted from the request
                        // (an export running when it came counts against it): a dead
                        // collector must not hold the stop up once per batch.
                        let _ = reply.send(self.drain(true, Some(deadline)).await);
                        return;
                    }
                },
            }
        }
    }

    /// Sends the ready batches (with `everything`, the one being filled too) until one
    /// fails: the rest wait for the next round rather than each trying a collector that is
    /// down (and, with a `deadline`, a stop, are dropped). Returns that failure.
    async fn drain(&mut self, everything: bool, deadline: Option<Instant>) -> Result<(), String> {
        while let Some(batch) = self.take(everything) {
            let mut body = std::mem::take(&mut self.body);
            wire::request_body(
                &mut body,
                &self.resource,
                &self.scope,
                &batch.body,
                self.transport.grpc(),
            );
            let spans = batch.spans as u64;
            self.give_back(batch.body);
            let lent = Arc::new(body);
            let sent = self
                .transport
                .send(Bytes::from_owner(Lent(lent.clone())), deadline)
                .await;
            // The client has dropped its copies once the exchange is over; if one lingers
            // (a connection still writing), the buffer is simply not reused.
            self.body = Arc::try_unwrap(lent).unwrap_or_default();
            match sent {
                Ok(landed) => {
                    let mut accepted = spans;
                    if let Some((rejected, message)) = landed.rejected {
                        let rejected = u64::try_from(rejected).unwrap_or(0).min(spans);
                        accepted -= rejected;
                        self.shared.failed.fetch_add(rejected, Ordering::Relaxed);
                        tracing::warn!(rejected, message = %message, "the collector rejected spans");
                    }
                    self.shared.exported.fetch_add(accepted, Ordering::Relaxed);
                    self.shared.drop_logged.store(false, Ordering::Relaxed);
                }
                Err(e) => {
                    self.shared.failed.fetch_add(spans, Ordering::Relaxed);
                    tracing::warn!(error = %e, spans, "OTLP export failed; its spans are lost");
                    if deadline.is_some() {
                        let lost = self.discard();
                        self.shared.failed.fetch_add(lost, Ordering::Relaxed);
                    }
                    return Err(e.to_string());
                }
            }
        }
        Ok(())
    }

    fn take(&self, everything: bool) -> Option<Batch> {
        let mut q = self
            .shared
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let batch = match q.ready.pop_front() {
            Some(b) => b,
            None if everything && q.filling.spans > 0 => {
                let body = q
                    .spare
                    .pop()
                    .unwrap_or_else(|| Vec::with_capacity(BATCH_CAPACITY));
                std::mem::replace(&mut q.filling, Batch { body, spans: 0 })
            }
            None => return None,
        };
        q.spans -= batch.spans;
        Some(batch)
    }

    fn give_back(&self, mut body: Vec<u8>) {
        body.clear();
        let mut q = self
            .shared
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if q.spare.len() < SPARE_BUFFERS {
            q.spare.push(body);
        }
    }

    /// Empties the queue; returns how many spans were in it.
    fn discard(&self) -> u64 {
        let mut q = self
            .shared
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let n = q.spans as u64;
        q.ready.clear();
        q.filling.body.clear();
        q.filling.spans = 0;
        q.spans = 0;
        n
    }
}

/// The configured sampler: OpenTelemetry's `ParentBased(TraceIdRatioBased)` (or the ratio
/// alone), the same decisions the SDK makes, by trace id, so every service that samples by
/// ratio keeps or drops a trace alike.
#[derive(Debug, Clone, Copy)]
struct Sampler {
    parent_based: bool,
    root: Root,
}

#[derive(Debug, Clone, Copy)]
enum Root {
    Always,
    Never,
    /// Sampled when the trace id's low 63 bits (of its last 8 bytes, big-endian, shifted
    /// right once) are below this: the SDK's `TraceIdRatioBased` rule.
    Below(u64),
}

impl Sampler {
    fn new(s: Sampling) -> Self {
        let root = if s.ratio >= 1.0 {
            Root::Always
        } else if s.ratio <= 0.0 {
            Root::Never
        } else {
            Root::Below((s.ratio * (1u64 << 63) as f64) as u64)
        };
        Sampler {
            parent_based: s.parent_based,
            root,
        }
    }

    fn sample(&self, c: &TraceContext) -> bool {
        if self.parent_based && c.is_remote() {
            return c.sampled();
        }
        match self.root {
            Root::Always => true,
            Root::Never => false,
            Root::Below(bound) => {
                let mut low = [0u8; 8];
                low.copy_from_slice(&c.trace_id[8..]);
                (u64::from_be_bytes(low) >> 1) < bound
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{
        SpanContext, SpanId, SpanKind, TraceContextExt as _, TraceFlags, TraceId, TraceState,
    };
    use opentelemetry::{Context, KeyValue};
    use opentelemetry_sdk::trace::{Sampler as SdkSampler, SamplingDecision, ShouldSample as _};

    use super::*;

    fn sdk(s: Sampling) -> SdkSampler {
        let root = if s.ratio >= 1.0 {
            SdkSampler::AlwaysOn
        } else if s.ratio <= 0.0 {
            SdkSampler::AlwaysOff
        } else {
            SdkSampler::TraceIdRatioBased(s.ratio)
        };
        if s.parent_based {
            SdkSampler::ParentBased(Box::new(root))
        } else {
            root
        }
    }

    fn sdk_decision(sampler: &SdkSampler, c: &TraceContext) -> bool {
        let trace_id = TraceId::from_bytes(c.trace_id);
        let parent = match c.parent_id {
            Some(p) => Context::new().with_remote_span_context(SpanContext::new(
                trace_id,
                SpanId::from_bytes(p),
                TraceFlags::new(c.flags),
                true,
                TraceState::NONE,
            )),
            None => Context::new(),
        };
        let no_attributes: &[KeyValue] = &[];
        let r = sampler.should_sample(
            Some(&parent),
            trace_id,
            "",
            &SpanKind::Server,
            no_attributes,
            &[],
        );
        r.decision == SamplingDecision::RecordAndSample
    }

    /// The sampler decides exactly as the OpenTelemetry SDK's does, for callers that sampled,
    /// callers that did not, and new traces, at every ratio.
    #[test]
    fn decisions_match_the_sdk_sampler() {
        for parent_based in [true, false] {
            for ratio in [0.0, 0.001, 0.1, 0.25, 0.5, 0.75, 0.999, 1.0] {
                let settings = Sampling {
                    parent_based,
                    ratio,
                };
                let (ours, theirs) = (Sampler::new(settings), sdk(settings));
                for i in 0..2000u32 {
                    let mut c = TraceContext::root();
                    match i % 3 {
                        0 => {}
                        1 => {
                            c.parent_id = Some([7; 8]);
                            c.flags = 1;
                        }
                        _ => c.parent_id = Some([7; 8]),
                    }
                    assert_eq!(
                        ours.sample(&c),
                        sdk_decision(&theirs, &c),
                        "{settings:?} {c:?}"
                    );
                }
            }
        }
    }
}
