//! `[limits]` and `[routes.limits]`: the store, and each route's limits resolved over the
//! defaults.

use std::collections::BTreeMap;
use std::time::Duration;

use super::nonzero;
use crate::config::ConfigError;
use crate::config::file::{LimitStoreKind, LimitsFile, RouteLimitsFile, ToolLimitFile};
use crate::glob::Glob;
use crate::limits::{LimitSettings, Rate, RedisSettings, RouteLimits, Store, ToolRate};

/// The largest rate accepted: beyond it a limit protects nothing and intervals round to 0.
const MAX_RATE: f64 = 1_000_000.0;

/// Checks `[limits]` (store and defaults).
pub(super) fn limits(l: &LimitsFile) -> Result<LimitSettings, ConfigError> {
    let store = match (l.store, &l.redis_url) {
        (LimitStoreKind::Local, None) => Store::Local,
        (LimitStoreKind::Local, Some(_)) => {
            return Err(ConfigError::invalid(
                "limits.redis_url",
                "is set while limits.store is \"local\"",
                "set store = \"redis\" to share limits through it, or remove redis_url",
            ));
        }
        (LimitStoreKind::Redis, None) => {
            return Err(ConfigError::invalid(
                "limits.redis_url",
                "is missing while limits.store is \"redis\"",
                "set redis_url = \"redis://127.0.0.1:6379\" (rediss:// for TLS)",
            ));
        }
        (LimitStoreKind::Redis, Some(url)) => Store::Redis(redis(l, url)?),
    };
    if l.store == LimitStoreKind::Local
        && (l.redis_timeout.is_some()
            || l.redis_connect_timeout.is_some()
            || l.redis_pool_size.is_some()
            || l.redis_key_prefix.is_some()
            || l.redis_probe_interval.is_some())
    {
        return Err(ConfigError::invalid(
            "limits.store",
            "redis_* settings are set but the store is \"local\"",
            "set store = \"redis\" with redis_url, or remove the redis_* keys",
        ));
    }
    let max_tracked_keys = l.max_tracked_keys.unwrap_or(100_000);
    if max_tracked_keys == 0 {
        return Err(ConfigError::invalid(
            "limits.max_tracked_keys",
            "must be at least 1",
            "keep the default 100000",
        ));
    }
    // The defaults are checked here once, so an error names `limits.…`, not a route.
    route_limits("limits", None, l)?;
    Ok(LimitSettings {
        store,
        on_store_failure: l.on_store_failure,
        max_tracked_keys,
    })
}

/// The Redis settings, with their defaults.
fn redis(l: &LimitsFile, url: &str) -> Result<RedisSettings, ConfigError> {
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) || redis_client_refuses(url) {
        return Err(ConfigError::invalid(
            "limits.redis_url",
            "is not a redis:// or rediss:// URL",
            "write it as redis://HOST:PORT[/DB], e.g. \"redis://127.0.0.1:6379\"",
        ));
    }
    let timeout = l.redis_timeout.unwrap_or(Duration::from_millis(5));
    nonzero("limits.redis_timeout", timeout)?;
    if timeout > Duration::from_secs(1) {
        return Err(ConfigError::invalid(
            "limits.redis_timeout",
            "is longer than 1s",
            "every limited request waits for it: keep it in single-digit milliseconds (default 5ms)",
        ));
    }
    let connect_timeout = l
        .redis_connect_timeout
        .unwrap_or(Duration::from_millis(250));
    nonzero("limits.redis_connect_timeout", connect_timeout)?;
    let probe_interval = l.redis_probe_interval.unwrap_or(Duration::from_secs(1));
    nonzero("limits.redis_probe_interval", probe_interval)?;
    let pool_size = l.redis_pool_size.unwrap_or(2);
    if !(1..=64).contains(&pool_size) {
        return Err(ConfigError::invalid(
            "limits.redis_pool_size",
            format!("{pool_size} is outside 1..=64"),
            "keep the default 2: each connection multiplexes many checks",
        ));
    }
    let key_prefix = l
        .redis_key_prefix
        .clone()
        .unwrap_or_else(|| "mcp-edge:".to_owned());
    if key_prefix.len() > 64 || key_prefix.chars().any(|c| c.is_control() || c == ' ') {
        return Err(ConfigError::invalid(
            "limits.redis_key_prefix",
            "is longer than 64 bytes or has spaces or control characters",
            "use a short tag such as \"mcp-edge:\" (the same on every instance that shares limits)",
        ));
    }
    Ok(RedisSettings {
        url: url.to_owned(),
        timeout,
        connect_timeout,
        pool_size,
        key_prefix,
        probe_interval,
    })
}

/// Whether the Redis client library cannot use `url` (it is never connected to here).
fn redis_client_refuses(url: &str) -> bool {
    redis::Client::open(url).is_err()
}

/// The limits of route `i`: each key of `[routes.limits]` over the `[limits]` default.
pub(super) fn route(
    i: usize,
    r: Option<&RouteLimitsFile>,
    defaults: &LimitsFile,
) -> Result<RouteLimits, ConfigError> {
    route_limits(&format!("routes[{i}].limits"), r, defaults)
}

/// Resolves and checks limits; `prefix` names the table for error messages.
fn route_limits(
    prefix: &str,
    r: Option<&RouteLimitsFile>,
    d: &LimitsFile,
) -> Result<RouteLimits, ConfigError> {
    let key = |k: &str| format!("{prefix}.{k}");
    // A route's rate and burst go together: a route rate with the default burst of another
    // rate would be a surprise.
    let (rps, burst, rate_key) = match r.and_then(|r| r.requests_per_second) {
        Some(rps) => (
            Some(rps),
            r.and_then(|r| r.burst),
            key("requests_per_second"),
        ),
        None => (
            d.requests_per_second,
            r.and_then(|r| r.burst).or(d.burst),
            if r.is_some_and(|r| r.burst.is_some()) {
                key("burst")
            } else {
                "limits.requests_per_second".to_owned()
            },
        ),
    };
    if rps.is_none() && burst.is_some() {
        return Err(ConfigError::invalid(
            rate_key.replace("requests_per_second", "burst"),
            "is set without requests_per_second",
            "set requests_per_second too (burst is the bucket size of that rate)",
        ));
    }
    let requests = rps.map(|rps| rate(&rate_key, rps, burst)).transpose()?;
    let max_concurrent_requests = r
        .and_then(|r| r.max_concurrent_requests)
        .or(d.max_concurrent_requests);
    positive(&key("max_concurrent_requests"), max_concurrent_requests)?;
    let max_open_streams = r.and_then(|r| r.max_open_streams).or(d.max_open_streams);
    positive(&key("max_open_streams"), max_open_streams)?;
    let mut merged: BTreeMap<&str, (&ToolLimitFile, String)> = d
        .tools
        .iter()
        .map(|(t, l)| (t.as_str(), (l, format!("limits.tools.\"{t}\""))))
        .collect();
    if let Some(r) = r {
        for (t, l) in &r.tools {
            merged.insert(t.as_str(), (l, key(&format!("tools.\"{t}\""))));
        }
    }
    let mut tools = Vec::with_capacity(merged.len());
    for (name, (l, k)) in merged {
        if name.is_empty() || name.chars().any(char::is_control) {
            return Err(ConfigError::invalid(
                k,
                "is not a usable tool name or pattern",
                "write a tool name, or a pattern where `*` stands for any run of characters",
            ));
        }
        tools.push(ToolRate {
            pattern: Glob::new(name),
            rate: rate(
                &format!("{k}.requests_per_second"),
                l.requests_per_second,
                l.burst,
            )?,
        });
    }
    // Exact names before patterns, so a named tool's own limit wins over a `*` group.
    tools.sort_by_key(|t| t.pattern.as_str().contains('*'));
    Ok(RouteLimits {
        requests,
        max_concurrent_requests,
        max_open_streams,
        tools,
    })
}

/// A checked rate; the burst defaults to one second's worth.
fn rate(key: &str, per_second: f64, burst: Option<u32>) -> Result<Rate, ConfigError> {
    if !per_second.is_finite() || per_second <= 0.0 || per_second > MAX_RATE {
        return Err(ConfigError::invalid(
            key,
            format!("{per_second} is not a rate above 0 and at most {MAX_RATE}"),
            "write requests per second, e.g. 10 or 0.5 (one every two seconds)",
        ));
    }
    let burst = match burst {
        Some(0) => {
            return Err(ConfigError::invalid(
                key.replace("requests_per_second", "burst"),
                "must be at least 1",
                "set how many requests may come at once, or remove it for one second's worth",
            ));
        }
        Some(b) => b,
        // Saturating float-to-int conversion: the rate is at most MAX_RATE.
        None => (per_second.ceil() as u32).max(1),
    };
    Ok(Rate { per_second, burst })
}

fn positive(key: &str, v: Option<usize>) -> Result<(), ConfigError> {
    if v == Some(0) {
        return Err(ConfigError::invalid(
            key,
            "must be at least 1",
            "set a positive cap, or remove the key for no cap",
        ));
    }
    Ok(())
}
