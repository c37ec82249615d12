//! Logs, request records and traces.
//!
//! - [`access`]: the per-request record ([`AccessLog`]), written as the access-log line when
//!   the answer ends; it also records the request's metrics and hands its trace to the span
//!   sink.
//! - [`trace`]: W3C trace context (`traceparent` from headers or `params._meta`), the timings
//!   a request's spans are made of, and the [`trace::SpanSink`] that exports them (OTLP with
//!   the `otel` feature).
//! - `otel` (`otel` feature only): the OTLP exporter behind that sink.

pub mod access;
#[cfg(feature = "otel")]
pub mod otel;
pub mod trace;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

pub use access::{AccessLog, EndHook, Ended, Outcome, TimedPhase};

/// Installs the global subscriber. `RUST_LOG` overrides `level`.
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // try_init: a second call (tests, demo) keeps the first subscriber instead of panicking.
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            // Lines made while serving a request carry its `request` span: request and
            // trace ids, under `span`.
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
