//! `[telemetry]` and `[telemetry.otlp]` as written.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

/// `[telemetry]`: where the proxy's own telemetry goes (the access log is `[log]`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryFile {
    /// `[telemetry.otlp]`: OpenTelemetry trace export (`--features otel` builds only).
    pub otlp: Option<OtlpFile>,
}

/// `[telemetry.otlp]`: every key optional; the `OTEL_*` variables override them.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpFile {
    /// Collector URL (default `http://127.0.0.1:4318`, or `:4317` for gRPC).
    pub endpoint: Option<String>,
    /// `"http/protobuf"` (default) or `"grpc"`.
    pub protocol: Option<String>,
    /// Share of new traces recorded, 0.0 to 1.0 (default 1.0); callers' decisions are kept.
    pub sample_ratio: Option<f64>,
    /// `service.name` of the spans (default `mcp-edge`).
    pub service_name: Option<String>,
    /// Longest time one export may take, retries included (default 10s).
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Headers sent with every export (an API key, a tenant); never logged.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

// By hand, so the header values (credentials) never reach a log line or a panic message.
impl std::fmt::Debug for OtlpFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpFile")
            .field("endpoint", &self.endpoint)
            .field("protocol", &self.protocol)
            .field("sample_ratio", &self.sample_ratio)
            .field("service_name", &self.service_name)
            .field("timeout", &self.timeout)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .finish()
    }
}
