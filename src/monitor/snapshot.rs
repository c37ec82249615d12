//! Families made at scrape time from snapshots the proxy keeps anyway (endpoint health, the
//! limit store, identity providers, the process): nothing on the request path records them.

use std::time::SystemTime;

use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::auth::bearer::IssuerStatus;
use crate::auth::token_cache::TokenCacheStatus;
use crate::limits::StoreStatus;
use crate::metrics::{Labels, label, owned};
use crate::telemetry::trace::SpanCounts;
use crate::upstream::{CircuitState, EndpointSnapshot};

/// The commit the binary was built from (`MCP_EDGE_COMMIT` at build time, else git's).
pub const COMMIT: &str = match option_env!("MCP_EDGE_COMMIT") {
    Some(c) => c,
    None => "unknown",
};

/// A family of gauges filled from `rows`.
fn gauges<T>(rows: impl IntoIterator<Item = (Labels, T)>) -> Family<Labels, Gauge>
where
    i64: TryFrom<T>,
{
    let f = Family::<Labels, Gauge>::default();
    for (labels, v) in rows {
        f.get_or_create(&labels)
            .set(i64::try_from(v).unwrap_or(i64::MAX));
    }
    f
}

/// One unlabelled gauge.
fn gauge(v: u64) -> Gauge {
    let g = Gauge::default();
    g.set(i64::try_from(v).unwrap_or(i64::MAX));
    g
}

/// Counters read from elsewhere, one series per row (registered under `name`, with
/// `_total` appended by the encoder).
fn counters(r: &mut Registry, name: &str, help: &str, rows: Vec<(Labels, u64)>) {
    let f = Family::<Labels, prometheus_client::metrics::counter::Counter>::default();
    for (labels, v) in rows {
        f.get_or_create(&labels).inc_by(v);
    }
    r.register(name, help, f);
}

/// `mcp_edge_build_info`.
pub fn build_info(r: &mut Registry) {
    let f = gauges([(
        vec![
            label("version", env!("CARGO_PKG_VERSION")),
            label("commit", COMMIT),
        ],
        1i64,
    )]);
    r.register(
        "mcp_edge_build_info",
        "Version and commit of this binary (always 1)",
        f,
    );
}

/// Endpoint health: verdicts, circuit state, ejections, retries.
pub fn upstream_health(r: &mut Registry, endpoints: &[EndpointSnapshot]) {
    let ep = |e: &EndpointSnapshot| vec![owned("endpoint", &e.uri)];
    r.register(
        "mcp_edge_upstream_endpoint_healthy",
        "1 when the endpoint's active health check passes (or checks are off)",
        gauges(endpoints.iter().map(|e| (ep(e), i64::from(e.healthy)))),
    );
    r.register(
        "mcp_edge_upstream_endpoint_ejected",
        "1 while sessionless traffic avoids the endpoint",
        gauges(endpoints.iter().map(|e| (ep(e), i64::from(e.ejected)))),
    );
    let states = [
        (CircuitState::Closed, "closed"),
        (CircuitState::Open, "open"),
        (CircuitState::HalfOpen, "half_open"),
    ];
    r.register(
        "mcp_edge_upstream_circuit_state",
        "1 for the endpoint's current circuit state",
        gauges(endpoints.iter().flat_map(|e| {
            states.iter().map(move |(s, name)| {
                let mut l = ep(e);
                l.push(label("state", name));
                (l, i64::from(e.circuit == *s))
            })
        })),
    );
    counters(
        r,
        "mcp_edge_upstream_ejections",
        "Times the endpoint's circuit opened",
        endpoints.iter().map(|e| (ep(e), e.ejections)).collect(),
    );
    counters(
        r,
        "mcp_edge_upstream_retries",
        "Retries made after a safe failure at the endpoint",
        endpoints.iter().map(|e| (ep(e), e.retries)).collect(),
    );
    counters(
        r,
        "mcp_edge_upstream_retry_budget_exhausted",
        "Retries the retry budget refused after a failure at the endpoint",
        endpoints
            .iter()
            .map(|e| (ep(e), e.retry_budget_exhausted))
            .collect(),
    );
}

/// The upstream pools: connections open now, and made by the current pools.
pub fn upstream_pool(r: &mut Registry, (open, opened): (u64, u64)) {
    r.register(
        "mcp_edge_upstream_connections_open",
        "Upstream connections open",
        gauge(open),
    );
    r.register(
        "mcp_edge_upstream_connections_opened",
        "Upstream connections made by the current pools (a reload starts new pools)",
        ConstCounter::new(opened),
    );
}

/// The shared limit store (only with `limits.store = "redis"`).
pub fn limit_store(r: &mut Registry, store: Option<StoreStatus>) {
    let Some(s) = store else { return };
    r.register(
        "mcp_edge_limit_store_up",
        "1 when the Redis limit store answered its last check",
        gauges([(
            vec![label("on_failure", s.on_failure.as_str())],
            i64::from(s.up),
        )]),
    );
    r.register(
        "mcp_edge_limit_store_fallbacks",
        "Limit checks answered by the fallback while the store was down",
        ConstCounter::new(s.fallbacks),
    );
    r.register(
        "mcp_edge_limit_store_transitions",
        "Limit store up/down changes",
        ConstCounter::new(s.transitions),
    );
}

/// JWKS and introspection figures per issuer.
pub fn identity_providers(r: &mut Registry, issuers: &[IssuerStatus], now: SystemTime) {
    let iss = |s: &IssuerStatus| vec![owned("issuer", &s.issuer)];
    let with = |s: &IssuerStatus, name: &'static str, value: &'static str| {
        let mut l = iss(s);
        l.push(label(name, value));
        l
    };
    r.register(
        "mcp_edge_jwks_keys",
        "Verification keys held for the issuer",
        gauges(
            issuers
                .iter()
                .filter_map(|s| Some((iss(s), s.keys.as_ref()?.keys))),
        ),
    );
    r.register(
        "mcp_edge_jwks_age_seconds",
        "Seconds since the issuer's JWKS was last fetched successfully",
        gauges(issuers.iter().filter_map(|s| {
            let at = s.keys.as_ref()?.last_success?;
            Some((iss(s), now.duration_since(at).map_or(0, |d| d.as_secs())))
        })),
    );
    let remote: Vec<&IssuerStatus> = issuers.iter().filter(|s| s.remote_keys).collect();
    counters(
        r,
        "mcp_edge_jwks_fetches",
        "JWKS fetches by issuer and result",
        remote
            .iter()
            .filter_map(|s| {
                let k = s.keys.as_ref()?;
                Some([
                    (
                        with(s, "result", "ok"),
                        k.fetches.saturating_sub(k.failures),
                    ),
                    (with(s, "result", "failed"), k.failures),
                ])
            })
            .flatten()
            .collect(),
    );
    counters(
        r,
        "mcp_edge_introspection_requests",
        "Token introspection calls by issuer and result",
        issuers
            .iter()
            .filter_map(|s| {
                let i = s.introspection?;
                Some([
                    (with(s, "result", "active"), i.active),
                    (with(s, "result", "inactive"), i.inactive),
                    (with(s, "result", "failed"), i.failed),
                ])
            })
            .flatten()
            .collect(),
    );
    counters(
        r,
        "mcp_edge_introspection_cache",
        "Introspection cache lookups by issuer and result",
        issuers
            .iter()
            .filter_map(|s| {
                let i = s.introspection?;
                Some([
                    (with(s, "result", "hit"), i.cache_hits),
                    (with(s, "result", "miss"), i.cache_misses),
                ])
            })
            .flatten()
            .collect(),
    );
}

/// The verified-token cache (`auth.token_cache_entries`), when it is on.
pub fn token_cache(r: &mut Registry, status: Option<TokenCacheStatus>) {
    let Some(s) = status else { return };
    r.register(
        "mcp_edge_token_cache_entries",
        "Verified JWTs held in the token cache",
        gauge(s.entries as u64),
    );
    r.register(
        "mcp_edge_token_cache_capacity",
        "Most verified JWTs the token cache holds (auth.token_cache_entries)",
        gauge(s.capacity as u64),
    );
    counters(
        r,
        "mcp_edge_token_cache_lookups",
        "Token cache lookups by result (a miss verifies the token's signature)",
        vec![
            (vec![label("result", "hit")], s.hits),
            (vec![label("result", "miss")], s.misses),
        ],
    );
    r.register(
        "mcp_edge_token_cache_evictions",
        "Usable verified tokens dropped to make room for newer ones",
        ConstCounter::new(s.evictions),
    );
}

/// Spans exported over OTLP, by what became of them, when export is on.
pub fn span_export(r: &mut Registry, counts: Option<SpanCounts>) {
    let Some(c) = counts else { return };
    counters(
        r,
        "mcp_edge_trace_spans",
        "Spans handed to the OTLP exporter by result (exported, dropped on a full queue, failed)",
        vec![
            (vec![label("result", "exported")], c.exported),
            (vec![label("result", "dropped")], c.dropped),
            (vec![label("result", "failed")], c.failed),
        ],
    );
}

/// `process_*` from `/proc/self` (Linux; elsewhere nothing).
pub fn process(r: &mut Registry) {
    let Some(p) = read_process() else { return };
    r.register(
        "process_resident_memory_bytes",
        "Resident memory size in bytes",
        gauge(p.rss_bytes),
    );
    r.register(
        "process_open_fds",
        "Open file descriptors",
        gauge(p.open_fds),
    );
    r.register(
        "process_cpu_seconds",
        "User and system CPU time spent, in seconds",
        prometheus_client::metrics::counter::ConstCounter::new(p.cpu_seconds),
    );
    r.register(
        "process_start_time_seconds",
        "Start time of the process since the Unix epoch, in seconds",
        gauge(p.start_time),
    );
}

struct ProcessFigures {
    rss_bytes: u64,
    open_fds: u64,
    cpu_seconds: f64,
    start_time: u64,
}

fn read_process() -> Option<ProcessFigures> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let f: Vec<&str> = rest.split(' ').collect();
    // Field numbers per proc(5), counted from 1 with `pid` and `comm` first.
    let field = |n: usize| f.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    let ticks = clock_ticks();
    let page = 4096;
    let boot = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse::<u64>().ok())?;
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    Some(ProcessFigures {
        rss_bytes: field(24)? * page,
        open_fds,
        cpu_seconds: (field(14)? + field(15)?) as f64 / ticks as f64,
        start_time: boot + field(22)? / ticks,
    })
}

/// `sysconf(_SC_CLK_TCK)`: 100 on every Linux this runs on (the kernel's USER_HZ).
fn clock_ticks() -> u64 {
    100
}
