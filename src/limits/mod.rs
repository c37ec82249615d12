//! Limits per caller: request rate, concurrent requests, open SSE streams, and request rate
//! per tool, each per route and keyed by the caller's identity label (the client address, by
//! /64 for IPv6, on anonymous routes).
//!
//! Rates are token buckets (GCRA: a rate and a burst). They are kept in this process
//! ([`local`]) or, with `[limits] store = "redis"`, in Redis ([`redis`]) so that every instance
//! behind a load balancer draws from the same bucket. Concurrency and stream caps are counted
//! per instance: they protect this process's memory and the backend connections it holds,
//! and a shared count would leak slots whenever an instance dies.
//!
//! State outlives config reloads: [`Limits::rebuild`] keeps the buckets of every limit whose
//! route and quota are unchanged, and the counters of requests still running.

pub mod local;
pub mod redis;

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::time::Duration;

use crate::glob::Glob;

pub use local::Permits;
use local::{Counters, LocalBuckets};
use redis::RedisStore;

/// A token bucket: `per_second` requests on average, up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Sustained requests per second (may be below 1).
    pub per_second: f64,
    /// Requests allowed at once after a quiet period.
    pub burst: u32,
}

impl Rate {
    /// Time one request's token takes to come back.
    pub fn interval(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.per_second)
    }
}

/// A rate for the `tools/call`s naming a matching tool.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolRate {
    /// Tool name or pattern (`*` for any run of characters); calls of every tool it matches
    /// share one bucket.
    pub pattern: Glob,
    /// The bucket.
    pub rate: Rate,
}

/// The limits of one route, resolved from `[routes.limits]` over the `[limits]` defaults.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RouteLimits {
    /// Requests per caller.
    pub requests: Option<Rate>,
    /// Requests per caller in flight at once (an SSE answer counts until it ends).
    pub max_concurrent_requests: Option<usize>,
    /// GET event streams per caller open at once.
    pub max_open_streams: Option<usize>,
    /// `tools/call` rates per caller, first matching pattern wins.
    pub tools: Vec<ToolRate>,
}

impl RouteLimits {
    /// Whether nothing is limited.
    pub fn is_empty(&self) -> bool {
        self.requests.is_none()
            && self.max_concurrent_requests.is_none()
            && self.max_open_streams.is_none()
            && self.tools.is_empty()
    }

    /// The first tool rate matching `tool`, with its index.
    fn tool(&self, tool: &str) -> Option<(usize, &ToolRate)> {
        self.tools
            .iter()
            .enumerate()
            .find(|(_, t)| t.pattern.matches(tool))
    }
}

/// One line for `mcp-edge check`: `20/s burst 40, 16 in flight, 4 streams, tool search_* 1/s burst 5`.
impl std::fmt::Display for RouteLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if let Some(r) = self.requests {
            parts.push(format!("{}/s burst {}", r.per_second, r.burst));
        }
        if let Some(n) = self.max_concurrent_requests {
            parts.push(format!("{n} in flight"));
        }
        if let Some(n) = self.max_open_streams {
            parts.push(format!("{n} streams"));
        }
        for t in &self.tools {
            parts.push(format!(
                "tool {} {}/s burst {}",
                t.pattern.as_str(),
                t.rate.per_second,
                t.rate.burst
            ));
        }
        if parts.is_empty() {
            return f.write_str("none");
        }
        f.write_str(&parts.join(", "))
    }
}

/// Where rate buckets live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Store {
    /// In this process.
    Local,
    /// In Redis, shared by every instance using it.
    Redis(RedisSettings),
}

/// Validated `[limits]` Redis settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// `redis://` or `rediss://` URL (may carry a password: never logged).
    pub url: String,
    /// Longest wait for one limit check before the store counts as failed.
    pub timeout: Duration,
    /// Longest wait for a new connection.
    pub connect_timeout: Duration,
    /// Connections kept open (each multiplexes many checks).
    pub pool_size: usize,
    /// Prefix of every key the proxy writes.
    pub key_prefix: String,
    /// How often an unreachable store is tried again.
    pub probe_interval: Duration,
}

impl RedisSettings {
    /// The URL without its password, for output.
    pub fn redacted_url(&self) -> String {
        match (self.url.find("://"), self.url.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                format!("{}://…@{}", &self.url[..scheme], &self.url[at + 1..])
            }
            _ => self.url.clone(),
        }
    }
}

/// What happens to rate checks while Redis does not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnStoreFailure {
    /// Each instance enforces the limits alone (a caller may get up to N× across N instances).
    #[default]
    Local,
    /// Rates are not enforced.
    Open,
    /// Every request with a rate limit is refused with 503.
    Closed,
}

impl OnStoreFailure {
    /// The config value.
    pub fn as_str(self) -> &'static str {
        match self {
            OnStoreFailure::Local => "local",
            OnStoreFailure::Open => "open",
            OnStoreFailure::Closed => "closed",
        }
    }
}

/// Validated `[limits]` (route limits live on each route).
#[derive(Debug, Clone, PartialEq)]
pub struct LimitSettings {
    /// Where rate buckets live.
    pub store: Store,
    /// What a failing store means.
    pub on_store_failure: OnStoreFailure,
    /// Callers tracked per local bucket before idle ones are swept early.
    pub max_tracked_keys: usize,
}

impl Default for LimitSettings {
    fn default() -> Self {
        LimitSettings {
            store: Store::Local,
            on_store_failure: OnStoreFailure::Local,
            max_tracked_keys: 100_000,
        }
    }
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// The caller's request rate on the route.
    Rate,
    /// The caller's rate for one tool.
    ToolRate,
    /// The caller's requests in flight.
    Concurrency,
    /// The caller's open streams.
    Streams,
    /// The shared store is down and `on_store_failure = "closed"`.
    StoreUnavailable,
}

impl LimitKind {
    /// Label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::Rate => "rate",
            LimitKind::ToolRate => "tool_rate",
            LimitKind::Concurrency => "concurrency",
            LimitKind::Streams => "streams",
            LimitKind::StoreUnavailable => "store_unavailable",
        }
    }
}

/// A request refused by a limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.message())]
pub struct LimitRefusal {
    /// Which limit.
    pub kind: LimitKind,
    /// When trying again can succeed.
    pub retry_after: Duration,
    /// The tool, for [`LimitKind::ToolRate`].
    pub tool: Option<String>,
}

impl LimitRefusal {
    /// What the client is told (no key, no store address).
    fn message(&self) -> String {
        match (self.kind, &self.tool) {
            (LimitKind::ToolRate, Some(tool)) => format!("rate limit exceeded for tool `{tool}`"),
            (LimitKind::Rate, _) | (LimitKind::ToolRate, None) => "rate limit exceeded".to_owned(),
            (LimitKind::Concurrency, _) => "too many requests in flight".to_owned(),
            (LimitKind::Streams, _) => "too many open streams".to_owned(),
            (LimitKind::StoreUnavailable, _) => "rate limits cannot be checked now".to_owned(),
        }
    }

    /// Whole seconds for `Retry-After`, at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        let ms = u64::try_from(self.retry_after.as_millis()).unwrap_or(u64::MAX);
        ms.div_ceil(1000).max(1)
    }
}

/// What one request asks of the limits.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    /// The route's path (shared, so counting a request in flight copies no string).
    pub route: &'a Arc<str>,
    /// The caller's key (identity label, or client address on anonymous routes).
    pub key: &'a str,
    /// The tool of each `tools/call` in the request.
    pub tools: &'a [&'a str],
    /// Whether the request opens a GET event stream.
    pub stream: bool,
}

/// How the shared store is doing, for `/readyz` and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreStatus {
    /// Whether the last check reached Redis.
    pub up: bool,
    /// What checks do while it is down.
    pub on_failure: OnStoreFailure,
    /// Checks answered by the fallback since start.
    pub fallbacks: u64,
    /// Up→down and down→up changes since start.
    pub transitions: u64,
}

/// The limits of every route, with their state (shared by all connections).
#[derive(Default)]
pub struct Limits {
    /// Whether any route has a limit: most requests then skip the lookup.
    any: bool,
    routes: Vec<(Arc<str>, RouteLimits)>,
    local: LocalBuckets,
    counters: Arc<Counters>,
    store: Option<Arc<RedisStore>>,
    on_failure: OnStoreFailure,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("routes", &self.routes)
            .field("redis", &self.store.is_some())
            .finish_non_exhaustive()
    }
}

/// Why the shared store could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LimitsError {
    /// The Redis URL or client settings were refused by the client library.
    #[error("limits.redis_url: {0}")]
    Redis(String),
}

impl Limits {
    /// Limits for `routes` (path and resolved limits), keeping the state of `previous` where
    /// a route's quota is unchanged.
    pub fn rebuild(
        settings: &LimitSettings,
        routes: Vec<(Arc<str>, RouteLimits)>,
        previous: Option<&Limits>,
    ) -> Result<Limits, LimitsError> {
        let local = LocalBuckets::build(
            &routes,
            settings.max_tracked_keys,
            previous.map(|p| &p.local),
        );
        let store = match &settings.store {
            Store::Local => None,
            Store::Redis(r) => match previous.and_then(|p| p.store.as_ref()) {
                Some(old) if old.settings() == r => Some(old.clone()),
                _ => Some(Arc::new(RedisStore::new(r.clone())?)),
            },
        };
        Ok(Limits {
            any: routes.iter().any(|(_, l)| !l.is_empty()),
            routes,
            local,
            counters: previous.map(|p| p.counters.clone()).unwrap_or_default(),
            store,
            on_failure: settings.on_store_failure,
        })
    }

    /// The limits of `route`, when it has any.
    pub fn route(&self, route: &str) -> Option<&RouteLimits> {
        if !self.any {
            return None;
        }
        self.routes
            .iter()
            .find(|(path, _)| &**path == route)
            .map(|(_, l)| l)
            .filter(|l| !l.is_empty())
    }

    /// Admits a request or says which limit refuses it. The permits hold the request's
    /// concurrency (and stream) slots until dropped, at the end of its answer.
    pub async fn admit(&self, ask: Ask<'_>) -> Result<Permits, LimitRefusal> {
        let Some(limits) = self.route(ask.route) else {
            return Ok(Permits::default());
        };
        // Slots first: they are local and given back on refusal, where a bucket's token is
        // spent once taken.
        let permits = self.counters.acquire(ask, limits)?;
        let buckets = buckets_of(limits, ask.tools);
        if buckets.is_empty() {
            return Ok(permits);
        }
        match &self.store {
            None => self.local.check(ask, &buckets)?,
            Some(store) => match store.check(ask, &buckets).await {
                Some(result) => result?,
                None => match self.on_failure {
                    OnStoreFailure::Local => self.local.check(ask, &buckets)?,
                    OnStoreFailure::Open => {}
                    OnStoreFailure::Closed => {
                        return Err(LimitRefusal {
                            kind: LimitKind::StoreUnavailable,
                            retry_after: store.settings().probe_interval,
                            tool: None,
                        });
                    }
                },
            },
        }
        Ok(permits)
    }

    /// The shared store's state, when one is configured.
    pub fn store_status(&self) -> Option<StoreStatus> {
        self.store.as_ref().map(|s| s.status(self.on_failure))
    }
}

/// One bucket a request draws from: which, and its quota.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct BucketRef<'a> {
    /// `None`: the route's request rate; `Some(i)`: tool rate `i`.
    pub(crate) tool: Option<usize>,
    /// The tool name that matched (for the refusal).
    pub(crate) tool_name: Option<&'a str>,
    /// The tool pattern, which names the bucket in a shared store.
    pub(crate) pattern: Option<&'a str>,
    /// The quota.
    pub(crate) rate: Rate,
}

/// The buckets a request draws from: the request rate, then one per distinct matching tool
/// rate (a batch calling one tool twice takes two tokens from it).
fn buckets_of<'a>(limits: &'a RouteLimits, tools: &[&'a str]) -> Vec<BucketRef<'a>> {
    let mut out = Vec::with_capacity(1 + tools.len());
    if let Some(rate) = limits.requests {
        out.push(BucketRef {
            tool: None,
            tool_name: None,
            pattern: None,
            rate,
        });
    }
    for tool in tools {
        if let Some((i, t)) = limits.tool(tool) {
            out.push(BucketRef {
                tool: Some(i),
                tool_name: Some(tool),
                pattern: Some(t.pattern.as_str()),
                rate: t.rate,
            });
        }
    }
    out
}

/// The key anonymous callers are limited under: IPv4 addresses as they are, IPv6 by /64 (one
/// host is routinely given a whole /64), IPv4-mapped IPv6 as IPv4.
pub fn client_address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
    }
}

#[cfg(test)]
mod tests;
