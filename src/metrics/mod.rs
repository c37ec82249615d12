//! Prometheus metrics: one [`Metrics`] per proxy holds every family; the admin listener's
//! `/metrics` encodes them with the families made from snapshots at scrape time
//! ([`crate::monitor`]). Names and labels are documented in `docs/metrics.md`.
//!
//! Recording is lock-free on the request path. `prometheus-client` families look series up
//! under a read-write lock, so the path never calls them per request: each route holds
//! [`RouteMetrics`], handles resolved once (when the route is built, or the first time a
//! combination of labels is seen) after which recording is an atomic add. Labels come from
//! fixed tables ([`labels`]) or the config (routes, endpoints, the tools a policy names), so
//! a caller cannot create series.

pub mod histogram;
pub mod labels;
pub mod route;
pub mod text;

use std::borrow::Cow;
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

pub use histogram::Histogram;
pub use route::{
    AdmissionRefusal, AuthReason, Op, RouteMetrics, StreamSeries, ToolIndex, UpstreamFailure,
};

/// Validated `[metrics]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsSettings {
    /// Whether request-path series are recorded (restart to change).
    pub enabled: bool,
    /// Tools labelled on every route beside those its policy and limits name.
    pub tool_labels: Vec<String>,
    /// Whether requests are labelled by organisation.
    pub organisation_label: bool,
    /// The organisations labelled by name.
    pub organisations: Vec<String>,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        MetricsSettings {
            enabled: true,
            tool_labels: Vec::new(),
            organisation_label: false,
            organisations: Vec::new(),
        }
    }
}

/// Labels of a series: names and values, built only when a series is first created.
pub type Labels = Vec<(&'static str, Cow<'static, str>)>;

type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

/// Every family the proxy records into, shared by all connections.
#[derive(Debug)]
pub struct Metrics {
    /// `[metrics]` as loaded at start (`enabled` needs a restart; labels follow reloads
    /// through [`RouteMetrics`]).
    pub(crate) settings: MetricsSettings,
    pub(crate) requests: Family<Labels, Counter>,
    pub(crate) request_duration: HistogramFamily,
    pub(crate) upstream_ttfb: HistogramFamily,
    pub(crate) operation_duration: HistogramFamily,
    pub(crate) sse_open: Family<Labels, Gauge>,
    pub(crate) sse_events: Family<Labels, Counter>,
    pub(crate) sse_heartbeats: Family<Labels, Counter>,
    pub(crate) sse_ended: Family<Labels, Counter>,
    pub(crate) sse_injected: Family<Labels, Counter>,
    pub(crate) auth: Family<Labels, Counter>,
    pub(crate) policy: Family<Labels, Counter>,
    pub(crate) admission: Family<Labels, Counter>,
    pub(crate) limit_rejections: Family<Labels, Counter>,
    pub(crate) upstream_requests: Family<Labels, Counter>,
    pub(crate) upstream_errors: Family<Labels, Counter>,
    /// Connections and handshakes of the public listener.
    pub conn: ConnMetrics,
}

/// Connection and TLS handshake series: fixed label sets, resolved at start.
#[derive(Debug, Clone)]
pub struct ConnMetrics {
    /// Open client connections.
    pub open: Gauge,
    /// Accepted TCP connections.
    pub accepted: Counter,
    /// Refused at `listener.max_connections`.
    pub refused_cap: Counter,
    /// Refused at `listener.max_connections_per_ip`.
    pub refused_per_ip: Counter,
    /// Closed waiting for a handshake slot (`listener.max_handshakes_in_flight`).
    pub refused_handshake_slot: Counter,
    handshakes: Family<Labels, Counter>,
    handshake_duration: HistogramFamily,
    ok13: Counter,
    ok12: Counter,
    ok_duration: Histogram,
    failed_duration: Histogram,
}

/// Why a TLS handshake failed (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// Not finished within `listener.handshake_timeout`.
    Timeout,
    /// The client certificate was missing, unknown, revoked or expired.
    ClientCertificate,
    /// A TLS protocol error (bad version, no shared cipher, bad message).
    Protocol,
    /// The client closed the connection during the handshake.
    Eof,
    /// Anything else (an I/O error).
    Other,
}

impl HandshakeFailure {
    fn as_str(self) -> &'static str {
        match self {
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::ClientCertificate => "client_certificate",
            HandshakeFailure::Protocol => "protocol",
            HandshakeFailure::Eof => "eof",
            HandshakeFailure::Other => "other",
        }
    }

    /// The reason of a failed `accept` (the I/O error tokio-rustls gives).
    pub fn of(e: &std::io::Error) -> Self {
        use std::io::ErrorKind;
        if matches!(
            e.kind(),
            ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset | ErrorKind::BrokenPipe
        ) {
            return HandshakeFailure::Eof;
        }
        match e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            Some(
                rustls::Error::InvalidCertificate(_)
                | rustls::Error::NoCertificatesPresented
                | rustls::Error::InvalidCertRevocationList(_),
            ) => HandshakeFailure::ClientCertificate,
            Some(_) => HandshakeFailure::Protocol,
            None => HandshakeFailure::Other,
        }
    }
}

impl ConnMetrics {
    fn new(handshakes: Family<Labels, Counter>, handshake_duration: HistogramFamily) -> Self {
        let ok = |version: &'static str| {
            handshakes.get_or_create_owned(&vec![
                ("result", Cow::Borrowed("ok")),
                ("version", Cow::Borrowed(version)),
                ("reason", Cow::Borrowed("none")),
            ])
        };
        let dur = |result: &'static str| {
            handshake_duration.get_or_create_owned(&vec![("result", Cow::Borrowed(result))])
        };
        ConnMetrics {
            open: Gauge::default(),
            accepted: Counter::default(),
            refused_cap: Counter::default(),
            refused_per_ip: Counter::default(),
            refused_handshake_slot: Counter::default(),
            ok13: ok("TLSv1.3"),
            ok12: ok("TLSv1.2"),
            ok_duration: dur("ok"),
            failed_duration: dur("failed"),
            handshakes,
            handshake_duration,
        }
    }

    /// Records a completed handshake.
    pub fn handshake_ok(
        &self,
        version: Option<rustls::ProtocolVersion>,
        took: std::time::Duration,
    ) {
        match version {
            Some(rustls::ProtocolVersion::TLSv1_2) => self.ok12.inc(),
            _ => self.ok13.inc(),
        };
        self.ok_duration.observe(took);
    }

    /// Records a failed handshake (rare enough to look its series up).
    pub fn handshake_failed(&self, why: HandshakeFailure, took: std::time::Duration) {
        self.handshakes
            .get_or_create(&vec![
                ("result", Cow::Borrowed("failed")),
                ("version", Cow::Borrowed("none")),
                ("reason", Cow::Borrowed(why.as_str())),
            ])
            .inc();
        self.failed_duration.observe(took);
    }
}

impl Metrics {
    /// Empty families for a proxy with these settings.
    pub fn new(settings: MetricsSettings) -> Arc<Self> {
        let hist = |f: fn() -> Histogram| HistogramFamily::new_with_constructor(f);
        Arc::new(Metrics {
            settings,
            requests: Family::default(),
            request_duration: hist(histogram::durations),
            upstream_ttfb: hist(histogram::durations),
            operation_duration: hist(histogram::operations),
            sse_open: Family::default(),
            sse_events: Family::default(),
            sse_heartbeats: Family::default(),
            sse_ended: Family::default(),
            sse_injected: Family::default(),
            auth: Family::default(),
            policy: Family::default(),
            admission: Family::default(),
            limit_rejections: Family::default(),
            upstream_requests: Family::default(),
            upstream_errors: Family::default(),
            conn: ConnMetrics::new(Family::default(), hist(histogram::handshakes)),
        })
    }

    /// Families that record nothing (`[metrics] enabled = false`, and unit tests).
    pub fn disabled() -> Arc<Self> {
        Self::new(MetricsSettings {
            enabled: false,
            ..MetricsSettings::default()
        })
    }

    /// Whether request-path series are recorded.
    pub fn enabled(&self) -> bool {
        self.settings.enabled
    }

    /// Registers every family in `r` (a scrape's registry; families are shared handles).
    pub fn register(&self, r: &mut Registry) {
        let c = &self.conn;
        r.register(
            "mcp_edge_requests",
            "Requests, counted when their answer ends",
            self.requests.clone(),
        );
        r.register(
            "mcp_edge_request_duration_seconds",
            "From the request head to the end of the answer",
            self.request_duration.clone(),
        );
        r.register(
            "mcp_edge_upstream_ttfb_seconds",
            "From sending upstream to the upstream's response head",
            self.upstream_ttfb.clone(),
        );
        r.register(
            "mcp_server_operation_duration_seconds",
            "MCP operation duration (OpenTelemetry MCP convention mcp.server.operation.duration)",
            self.operation_duration.clone(),
        );
        r.register(
            "mcp_edge_connections_open",
            "Client connections open",
            c.open.clone(),
        );
        r.register(
            "mcp_edge_connections_accepted",
            "TCP connections accepted",
            c.accepted.clone(),
        );
        let refused = Family::<Labels, Counter>::default();
        for (reason, v) in [
            ("max_connections", &c.refused_cap),
            ("max_connections_per_ip", &c.refused_per_ip),
            ("handshake_slot_timeout", &c.refused_handshake_slot),
        ] {
            refused
                .get_or_create(&vec![("reason", Cow::Borrowed(reason))])
                .inc_by(v.get());
        }
        r.register(
            "mcp_edge_connections_refused",
            "Connections closed before their TLS handshake began",
            refused,
        );
        r.register(
            "mcp_edge_tls_handshakes",
            "TLS handshakes by result",
            c.handshakes.clone(),
        );
        r.register(
            "mcp_edge_tls_handshake_duration_seconds",
            "TLS handshake time",
            c.handshake_duration.clone(),
        );
        r.register(
            "mcp_edge_sse_streams_open",
            "Event streams being relayed",
            self.sse_open.clone(),
        );
        r.register(
            "mcp_edge_sse_events",
            "Events relayed to clients",
            self.sse_events.clone(),
        );
        r.register(
            "mcp_edge_sse_heartbeats",
            "Heartbeat comments sent",
            self.sse_heartbeats.clone(),
        );
        r.register(
            "mcp_edge_sse_streams_ended",
            "Event streams ended, by cause",
            self.sse_ended.clone(),
        );
        r.register(
            "mcp_edge_sse_injected_answers",
            "Error answers sent for calls a dying stream left unanswered",
            self.sse_injected.clone(),
        );
        r.register(
            "mcp_edge_auth_decisions",
            "Authentication decisions",
            self.auth.clone(),
        );
        r.register(
            "mcp_edge_policy_decisions",
            "Policy decisions",
            self.policy.clone(),
        );
        r.register(
            "mcp_edge_admission_refusals",
            "Requests refused before authentication",
            self.admission.clone(),
        );
        r.register(
            "mcp_edge_limit_rejections",
            "Requests refused by a limit",
            self.limit_rejections.clone(),
        );
        r.register(
            "mcp_edge_upstream_requests",
            "Upstream answers (heads) received",
            self.upstream_requests.clone(),
        );
        r.register(
            "mcp_edge_upstream_errors",
            "Failures talking to an upstream endpoint",
            self.upstream_errors.clone(),
        );
    }
}

/// `(name, value)` with a borrowed value.
pub fn label(name: &'static str, value: &'static str) -> (&'static str, Cow<'static, str>) {
    (name, Cow::Borrowed(value))
}

/// `(name, value)` with an owned value.
pub fn owned(name: &'static str, value: &str) -> (&'static str, Cow<'static, str>) {
    (name, Cow::Owned(value.to_owned()))
}
