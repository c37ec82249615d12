//! `[limits]` and `[routes.limits]` as written.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

pub use crate::limits::OnStoreFailure;

/// Where rate buckets live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitStoreKind {
    /// In each instance's memory.
    #[default]
    Local,
    /// In Redis, shared by every instance.
    Redis,
}

/// `[limits]`: the store, and defaults for every route's `[routes.limits]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    /// `local` (default) or `redis`.
    #[serde(default)]
    pub store: LimitStoreKind,
    /// `redis://[:password@]host:port[/db]` or `rediss://…`, with `store = "redis"`.
    pub redis_url: Option<String>,
    /// Longest wait for one check (default 5ms).
    #[serde(default, with = "humantime_serde")]
    pub redis_timeout: Option<Duration>,
    /// Longest wait for a new connection (default 250ms).
    #[serde(default, with = "humantime_serde")]
    pub redis_connect_timeout: Option<Duration>,
    /// Connections to Redis (default 2).
    pub redis_pool_size: Option<usize>,
    /// Prefix of the keys written to Redis (default `mcp-edge:`).
    pub redis_key_prefix: Option<String>,
    /// How often an unreachable Redis is tried again (default 1s).
    #[serde(default, with = "humantime_serde")]
    pub redis_probe_interval: Option<Duration>,
    /// `local` (default), `open` or `closed`.
    #[serde(default)]
    pub on_store_failure: OnStoreFailure,
    /// Callers tracked per local bucket before idle ones are swept (default 100000).
    pub max_tracked_keys: Option<usize>,
    /// Default request rate per caller.
    pub requests_per_second: Option<f64>,
    /// Default burst (default: one second's worth, at least 1).
    pub burst: Option<u32>,
    /// Default requests in flight per caller.
    pub max_concurrent_requests: Option<usize>,
    /// Default GET event streams per caller.
    pub max_open_streams: Option<usize>,
    /// Default rates per tool (`[limits.tools]`).
    #[serde(default)]
    pub tools: BTreeMap<String, ToolLimitFile>,
}

/// `[routes.limits]`: any key set here replaces the `[limits]` default for this route.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteLimitsFile {
    /// Request rate per caller.
    pub requests_per_second: Option<f64>,
    /// Burst.
    pub burst: Option<u32>,
    /// Requests in flight per caller.
    pub max_concurrent_requests: Option<usize>,
    /// GET event streams per caller.
    pub max_open_streams: Option<usize>,
    /// Rates per tool, added to (and replacing same-named) `[limits.tools]` entries.
    #[serde(default)]
    pub tools: BTreeMap<String, ToolLimitFile>,
}

/// One `tools` entry: `"name-or-pattern" = { requests_per_second = 1, burst = 5 }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolLimitFile {
    /// Calls per second per caller.
    pub requests_per_second: f64,
    /// Calls at once (default: one second's worth, at least 1).
    pub burst: Option<u32>,
}
