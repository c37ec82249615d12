//! The series of one route, resolved ahead of the requests that record into them.

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use super::labels::{self, METHOD_COUNT};
use super::{Histogram, Labels, Metrics, label, owned};
use crate::glob::Glob;

/// Which tool label a call gets: index 0 is no tool (empty label), 1 is `other`, then the
/// names and patterns of the route's policy and `metrics.tool_labels`.
#[derive(Debug, Default)]
pub struct ToolIndex {
    /// Literal names, sorted for binary search.
    names: Vec<(Box<str>, u16)>,
    /// Patterns with wildcards: a call matching one is labelled with the pattern.
    patterns: Vec<(Glob, u16)>,
    labels: Vec<Arc<str>>,
}

impl ToolIndex {
    fn new<'a>(tools: impl Iterator<Item = &'a str>) -> Self {
        let mut labels: Vec<Arc<str>> = vec![Arc::from(""), Arc::from("other")];
        let mut names = Vec::new();
        let mut patterns = Vec::new();
        for t in tools {
            if labels.iter().any(|l| &**l == t) {
                continue;
            }
            let i = labels.len() as u16;
            labels.push(Arc::from(t));
            if t.contains('*') {
                patterns.push((Glob::new(t), i));
            } else {
                names.push((Box::from(t), i));
            }
        }
        names.sort();
        ToolIndex {
            names,
            patterns,
            labels,
        }
    }

    /// The index of a called tool's label.
    pub fn index(&self, tool: &str) -> u16 {
        if let Ok(i) = self.names.binary_search_by(|(n, _)| (**n).cmp(tool)) {
            return self.names[i].1;
        }
        self.patterns
            .iter()
            .find(|(g, _)| g.matches(tool))
            .map_or(1, |(_, i)| *i)
    }

    fn len(&self) -> usize {
        self.labels.len()
    }

    fn label(&self, i: u16) -> &str {
        self.labels.get(usize::from(i)).map_or("other", |l| l)
    }
}

/// The operation of a request, as labels see it: MCP method and tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Op {
    /// Index into [`labels::MCP_METHODS`] (or a pseudo-method).
    pub method: u8,
    /// Index from the route's [`ToolIndex`].
    pub tool: u16,
}

impl Op {
    /// An operation without a tool.
    pub fn method(method: u8) -> Self {
        Op { method, tool: 0 }
    }
}

/// Why an authentication decision went the way it did (the `reason` label; each reason has
/// one `result`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum AuthReason {
    Ok,
    NotRequired,
    NoToken,
    Malformed,
    TokenInQuery,
    Invalid,
    Expired,
    Audience,
    Issuer,
    Organisation,
    Inactive,
    Scope,
    CertificateRequired,
    CertificateBinding,
    KeysUnavailable,
}

const AUTH_REASONS: [AuthReason; 15] = [
    AuthReason::Ok,
    AuthReason::NotRequired,
    AuthReason::NoToken,
    AuthReason::Malformed,
    AuthReason::TokenInQuery,
    AuthReason::Invalid,
    AuthReason::Expired,
    AuthReason::Audience,
    AuthReason::Issuer,
    AuthReason::Organisation,
    AuthReason::Inactive,
    AuthReason::Scope,
    AuthReason::CertificateRequired,
    AuthReason::CertificateBinding,
    AuthReason::KeysUnavailable,
];

impl AuthReason {
    /// The `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthReason::Ok => "ok",
            AuthReason::NotRequired => "not_required",
            AuthReason::NoToken => "no_token",
            AuthReason::Malformed => "malformed",
            AuthReason::TokenInQuery => "token_in_query",
            AuthReason::Invalid => "invalid",
            AuthReason::Expired => "expired",
            AuthReason::Audience => "audience",
            AuthReason::Issuer => "issuer",
            AuthReason::Organisation => "organisation",
            AuthReason::Inactive => "inactive",
            AuthReason::Scope => "scope",
            AuthReason::CertificateRequired => "certificate_required",
            AuthReason::CertificateBinding => "certificate_binding",
            AuthReason::KeysUnavailable => "keys_unavailable",
        }
    }

    fn result(self) -> &'static str {
        match self {
            AuthReason::Ok | AuthReason::NotRequired => "allowed",
            AuthReason::KeysUnavailable => "error",
            _ => "refused",
        }
    }
}

/// Why a request was refused before authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdmissionRefusal {
    /// Host not served, ambiguous or disagreeing with the authority.
    Host,
    /// Origin refused or missing where required.
    Origin,
    /// No route at this path.
    NotFound,
    /// The route does not take this method.
    Method,
}

const ADMISSIONS: [(AdmissionRefusal, &str); 4] = [
    (AdmissionRefusal::Host, "host"),
    (AdmissionRefusal::Origin, "origin"),
    (AdmissionRefusal::NotFound, "not_found"),
    (AdmissionRefusal::Method, "method"),
];

/// How an event stream ended (`cause` label).
pub const STREAM_CAUSES: [&str; 8] = [
    "client_gone",
    "upstream_ended",
    "idle",
    "drain",
    "lifetime",
    "client_write_timeout",
    "error",
    "filter_refusal",
];

/// Limit kinds (`kind` label), as [`crate::proxy::ProxyError::kind`] names them.
pub const LIMIT_KINDS: [&str; 5] = [
    "rate_limited",
    "tool_rate_limited",
    "concurrency_limited",
    "stream_limited",
    "limit_store_unavailable",
];

/// Upstream failure kinds (`kind` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// The connection could not be made or broke before the answer.
    Connect,
    /// No answer head in time.
    Timeout,
    /// The answer's body failed.
    Body,
    /// Refused at once: the endpoint's circuit is open.
    CircuitOpen,
}

const UPSTREAM_FAILURES: [(UpstreamFailure, &str); 4] = [
    (UpstreamFailure::Connect, "connect"),
    (UpstreamFailure::Timeout, "timeout"),
    (UpstreamFailure::Body, "body"),
    (UpstreamFailure::CircuitOpen, "circuit_open"),
];

/// What a finished request records.
#[derive(Debug, Clone, Copy)]
pub struct Finished {
    /// Method and tool.
    pub op: Op,
    /// Index from [`labels::http_method_index`].
    pub http_method: usize,
    /// Status sent to the client (0: none was).
    pub status: u16,
    /// Index of the outcome label.
    pub outcome: usize,
    /// The outcome label.
    pub outcome_label: &'static str,
    /// Index from [`labels::version_index`].
    pub version: u8,
    /// The refusal's kind, when the proxy refused.
    pub error: Option<&'static str>,
    /// Whether the POST carried a request (an MCP operation, for the convention's histogram).
    pub operation: bool,
    /// From the request head to the end of the answer.
    pub duration: Duration,
    /// From sending upstream to the upstream's answer head.
    pub ttfb: Option<Duration>,
    /// Index into `metrics.organisations` + 2 (0: none, 1: other), when labelled.
    pub organisation: u16,
}

/// The series of one route; a disabled one records nothing.
#[derive(Debug, Default)]
pub struct RouteMetrics {
    inner: Option<Box<Inner>>,
}

#[derive(Debug)]
struct Inner {
    metrics: Arc<Metrics>,
    route: Arc<str>,
    tools: ToolIndex,
    /// `METHOD_COUNT × tools` operations, each created the first time it is seen.
    ops: Box<[OnceLock<Box<OpSeries>>]>,
    sse_open: Gauge,
    sse_events: Counter,
    sse_heartbeats: Counter,
    sse_ended: [Counter; STREAM_CAUSES.len()],
    sse_injected: Counter,
    auth: [Counter; AUTH_REASONS.len()],
    policy_allow: Counter,
    policy_deny: Counter,
    admission: [Counter; ADMISSIONS.len()],
    limits: [Counter; LIMIT_KINDS.len()],
    /// Per endpoint index: answers by status class, failures by kind.
    endpoints: Vec<EndpointSeries>,
}

#[derive(Debug)]
struct EndpointSeries {
    answers: [Counter; 5],
    failures: [Counter; UPSTREAM_FAILURES.len()],
}

/// Series of one (route, method, tool).
#[derive(Debug)]
struct OpSeries {
    duration: Histogram,
    ttfb: Histogram,
    /// Counters by (HTTP method, status class, outcome, organisation), found by probing.
    counts: SmallCache<u32, Counter>,
    /// The convention's histogram by (error type, protocol version).
    operations: SmallCache<(&'static str, u8), Histogram>,
}

/// A fixed number of lazily filled slots searched in order: lock-free once filled (each slot
/// is a `OnceLock`). Returns `None` when every slot holds another key; callers then use the
/// family's own (locked) lookup.
#[derive(Debug)]
struct SmallCache<K, V> {
    slots: Box<[OnceLock<(K, V)>]>,
}

impl<K: PartialEq + Copy, V> SmallCache<K, V> {
    fn new(n: usize) -> Self {
        SmallCache {
            slots: (0..n).map(|_| OnceLock::new()).collect(),
        }
    }

    fn get_or_create(&self, key: K, make: impl Fn() -> V) -> Option<&V> {
        for slot in self.slots.iter() {
            // Another thread may fill an empty slot with its own key first: then look on.
            let (k, v) = slot.get_or_init(|| (key, make()));
            if *k == key {
                return Some(v);
            }
        }
        None
    }
}

/// Slots per operation for request counters: a route's steady traffic uses a handful of
/// (method, status, outcome) combinations.
const COUNT_SLOTS: usize = 48;
/// Slots per operation for the convention's histogram.
const OPERATION_SLOTS: usize = 16;

impl RouteMetrics {
    /// The series of `route` (endpoints in configuration order), labelled with the tools
    /// `policy` names, the route's per-tool limits and `metrics.tool_labels`.
    pub(crate) fn new(
        metrics: &Arc<Metrics>,
        route: &Arc<str>,
        tools: &[&str],
        endpoints: &[String],
    ) -> Self {
        if !metrics.enabled() {
            return RouteMetrics { inner: None };
        }
        let r = || owned("route", route);
        let with = |extra: Vec<(&'static str, Cow<'static, str>)>| {
            let mut l: Labels = vec![r()];
            l.extend(extra);
            l
        };
        let m = metrics;
        let tools = ToolIndex::new(
            tools
                .iter()
                .copied()
                .chain(m.settings.tool_labels.iter().map(String::as_str)),
        );
        let ops = (0..METHOD_COUNT * tools.len())
            .map(|_| OnceLock::new())
            .collect();
        let endpoints = endpoints
            .iter()
            .map(|e| {
                let ep = || owned("endpoint", e);
                EndpointSeries {
                    answers: labels::STATUS_CLASSES.map(|c| {
                        m.upstream_requests
                            .get_or_create_owned(&with(vec![ep(), label("status_class", c)]))
                    }),
                    failures: UPSTREAM_FAILURES.map(|(_, k)| {
                        m.upstream_errors
                            .get_or_create_owned(&with(vec![ep(), label("kind", k)]))
                    }),
                }
            })
            .collect();
        RouteMetrics {
            inner: Some(Box::new(Inner {
                sse_open: m.sse_open.get_or_create_owned(&with(vec![])),
                sse_events: m.sse_events.get_or_create_owned(&with(vec![])),
                sse_heartbeats: m.sse_heartbeats.get_or_create_owned(&with(vec![])),
                sse_ended: STREAM_CAUSES.map(|c| {
                    m.sse_ended
                        .get_or_create_owned(&with(vec![label("cause", c)]))
                }),
                sse_injected: m.sse_injected.get_or_create_owned(&with(vec![])),
                auth: AUTH_REASONS.map(|a| {
                    m.auth.get_or_create_owned(&with(vec![
                        label("result", a.result()),
                        label("reason", a.as_str()),
                    ]))
                }),
                policy_allow: m
                    .policy
                    .get_or_create_owned(&with(vec![label("decision", "allow")])),
                policy_deny: m
                    .policy
                    .get_or_create_owned(&with(vec![label("decision", "deny")])),
                admission: ADMISSIONS.map(|(_, a)| {
                    m.admission
                        .get_or_create_owned(&with(vec![label("reason", a)]))
                }),
                limits: LIMIT_KINDS.map(|k| {
                    m.limit_rejections
                        .get_or_create_owned(&with(vec![label("kind", k)]))
                }),
                endpoints,
                ops,
                tools,
                route: route.clone(),
                metrics: m.clone(),
            })),
        }
    }

    /// The series of requests not matched to a route (`route="unmatched"`).
    pub(crate) fn unmatched(metrics: &Arc<Metrics>) -> Self {
        Self::new(metrics, &Arc::from("unmatched"), &[], &[])
    }

    /// The label index of a called tool.
    pub fn tool(&self, name: &str) -> u16 {
        self.inner.as_ref().map_or(0, |i| i.tools.index(name))
    }

    /// The organisation index (see [`Finished::organisation`]), when organisations are
    /// labelled.
    pub fn organisation(&self, org: Option<&str>) -> u16 {
        let Some(i) = &self.inner else { return 0 };
        if !i.metrics.settings.organisation_label {
            return 0;
        }
        match org {
            None => 0,
            Some(o) => i
                .metrics
                .settings
                .organisations
                .iter()
                .position(|x| x == o)
                .map_or(1, |p| (p + 2) as u16),
        }
    }

    /// Records a finished request.
    pub fn finished(&self, f: &Finished) {
        let Some(i) = &self.inner else { return };
        let slot = usize::from(f.op.method) * i.tools.len() + usize::from(f.op.tool);
        let Some(slot) = i.ops.get(slot) else { return };
        let op = slot.get_or_init(|| Box::new(i.op_series(f.op)));
        op.duration.observe(f.duration);
        if let Some(t) = f.ttfb {
            op.ttfb.observe(t);
        }
        let class = labels::status_class_index(f.status);
        let key = (f.http_method as u32)
            | ((class as u32) << 4)
            | ((f.outcome as u32) << 8)
            | (u32::from(f.organisation) << 16);
        let make = || {
            i.metrics
                .requests
                .get_or_create_owned(&i.request_labels(f, class))
        };
        match op.counts.get_or_create(key, make) {
            Some(c) => c.inc(),
            None => i
                .metrics
                .requests
                .get_or_create(&i.request_labels(f, class))
                .inc(),
        };
        if f.operation {
            let error = f.error.unwrap_or("");
            let make = || {
                i.metrics
                    .operation_duration
                    .get_or_create_owned(&i.operation_labels(f.op, error, f.version))
            };
            match op.operations.get_or_create((error, f.version), make) {
                Some(h) => h.observe(f.duration),
                None => i
                    .metrics
                    .operation_duration
                    .get_or_create(&i.operation_labels(f.op, error, f.version))
                    .observe(f.duration),
            }
        }
    }

    /// An authentication decision.
    pub fn auth(&self, reason: AuthReason) {
        if let Some(i) = &self.inner
            && let Some(p) = AUTH_REASONS.iter().position(|r| *r == reason)
        {
            i.auth[p].inc();
        }
    }

    /// A policy decision.
    pub fn policy(&self, allowed: bool) {
        if let Some(i) = &self.inner {
            if allowed {
                &i.policy_allow
            } else {
                &i.policy_deny
            }
            .inc();
        }
    }

    /// A refusal before authentication.
    pub fn admission(&self, why: AdmissionRefusal) {
        if let Some(i) = &self.inner
            && let Some(p) = ADMISSIONS.iter().position(|(a, _)| *a == why)
        {
            i.admission[p].inc();
        }
    }

    /// A refusal by a limit, by the refusal's kind.
    pub fn limited(&self, kind: &str) {
        if let Some(i) = &self.inner
            && let Some(p) = LIMIT_KINDS.iter().position(|k| *k == kind)
        {
            i.limits[p].inc();
        }
    }

    /// An upstream answer head from endpoint `e`.
    pub fn upstream_answer(&self, e: usize, status: u16) {
        if let Some(i) = &self.inner
            && let Some(s) = i.endpoints.get(e)
        {
            s.answers[labels::status_class_index(status)].inc();
        }
    }

    /// A failure talking to endpoint `e`.
    pub fn upstream_failure(&self, e: usize, kind: UpstreamFailure) {
        if let Some(i) = &self.inner
            && let Some(s) = i.endpoints.get(e)
            && let Some(p) = UPSTREAM_FAILURES.iter().position(|(k, _)| *k == kind)
        {
            s.failures[p].inc();
        }
    }

    /// An event stream starts; the returned guard ends it.
    pub fn stream_opened(self: &Arc<Self>) -> Option<StreamSeries> {
        let i = self.inner.as_ref()?;
        i.sse_open.inc();
        Some(StreamSeries {
            route: self.clone(),
        })
    }

    /// Answers injected for calls a dying stream left unanswered.
    pub fn injected_answers(&self, n: usize) {
        if let Some(i) = &self.inner {
            i.sse_injected.inc_by(n as u64);
        }
    }
}

impl Inner {
    fn op_series(&self, op: Op) -> OpSeries {
        let labels = vec![
            owned("route", &self.route),
            label("mcp_method", labels::method_label(op.method)),
            owned("tool", self.tools.label(op.tool)),
        ];
        OpSeries {
            duration: self.metrics.request_duration.get_or_create_owned(&labels),
            ttfb: self.metrics.upstream_ttfb.get_or_create_owned(&labels),
            counts: SmallCache::new(COUNT_SLOTS),
            operations: SmallCache::new(OPERATION_SLOTS),
        }
    }

    fn request_labels(&self, f: &Finished, class: usize) -> Labels {
        let mut l = vec![
            owned("route", &self.route),
            label("http_method", labels::HTTP_METHODS[f.http_method.min(4)]),
            label("mcp_method", labels::method_label(f.op.method)),
            owned("tool", self.tools.label(f.op.tool)),
            label("status_class", labels::STATUS_CLASSES[class]),
            label("outcome", f.outcome_label),
        ];
        if self.metrics.settings.organisation_label {
            let org = match f.organisation {
                0 => "none",
                1 => "other",
                n => self
                    .metrics
                    .settings
                    .organisations
                    .get(usize::from(n) - 2)
                    .map_or("other", String::as_str),
            };
            l.push(owned("organisation", org));
        }
        l
    }

    fn operation_labels(&self, op: Op, error: &'static str, version: u8) -> Labels {
        let tool = if op.tool == 0 {
            ""
        } else {
            self.tools.label(op.tool)
        };
        vec![
            label("mcp_method_name", labels::method_label(op.method)),
            owned("gen_ai_tool_name", tool),
            label("error_type", error),
            label(
                "mcp_protocol_version",
                labels::PROTOCOL_VERSIONS
                    .get(usize::from(version))
                    .copied()
                    .unwrap_or("other"),
            ),
        ]
    }
}

/// An open event stream's series; dropping it closes the stream in the gauge.
#[derive(Debug)]
pub struct StreamSeries {
    route: Arc<RouteMetrics>,
}

impl StreamSeries {
    fn inner(&self) -> Option<&Inner> {
        self.route.inner.as_deref()
    }

    /// An event relayed.
    pub fn event(&self) {
        if let Some(i) = self.inner() {
            i.sse_events.inc();
        }
    }

    /// A heartbeat sent.
    pub fn heartbeat(&self) {
        if let Some(i) = self.inner() {
            i.sse_heartbeats.inc();
        }
    }

    /// The stream ended, for this `cause` (one of [`STREAM_CAUSES`]).
    pub fn ended(&self, cause: &str) {
        if let Some(i) = self.inner()
            && let Some(p) = STREAM_CAUSES.iter().position(|c| *c == cause)
        {
            i.sse_ended[p].inc();
        }
    }
}

impl Drop for StreamSeries {
    fn drop(&mut self) {
        if let Some(i) = self.inner() {
            i.sse_open.dec();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tools_are_bounded_to_configured_names_and_patterns() {
        let t = ToolIndex::new(["search", "get_*", "search"].into_iter());
        assert_eq!(t.label(t.index("search")), "search");
        assert_eq!(t.label(t.index("get_weather")), "get_*");
        assert_eq!(t.label(t.index("rm -rf")), "other");
        assert_eq!(t.len(), 4);
    }

    #[test]
    fn small_cache_fills_then_refuses() {
        let c: SmallCache<u32, u32> = SmallCache::new(2);
        assert_eq!(c.get_or_create(1, || 10), Some(&10));
        assert_eq!(c.get_or_create(1, || 99), Some(&10));
        assert_eq!(c.get_or_create(2, || 20), Some(&20));
        assert_eq!(c.get_or_create(3, || 30), None);
    }
}
