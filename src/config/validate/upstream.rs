//! `[upstream.circuit]`, `[upstream.retry]`, `[upstream.health_check]` and their per-route
//! overrides `[routes.circuit]`, `[routes.retry]`, `[routes.health_check]`: each key is taken
//! from the route's table, else from `[upstream]`'s, else the built-in default, and an error
//! names the table the offending value came from.

use std::time::Duration;

use http::Uri;

use crate::config::ConfigError;
use crate::config::file::{CircuitFile, HealthCheckFile, RetryFile};
use crate::upstream::{CircuitSettings, HealthCheckSettings, RetrySettings};

/// A value and the key it was read from.
struct Picked<T> {
    value: Option<T>,
    key: String,
}

/// Where one route's values are read from: its own table (key prefix `routes[i].<table>`),
/// then `[upstream.<table>]`.
struct Layers<'a, F> {
    route: Option<&'a F>,
    route_prefix: String,
    defaults: &'a F,
    default_prefix: String,
}

impl<'a, F> Layers<'a, F> {
    fn new(i: usize, table: &str, route: Option<&'a F>, defaults: &'a F) -> Self {
        Layers {
            route,
            route_prefix: format!("routes[{i}].{table}"),
            defaults,
            default_prefix: format!("upstream.{table}"),
        }
    }

    fn pick<T: Clone>(&self, name: &str, get: impl Fn(&F) -> Option<T>) -> Picked<T> {
        if let Some(v) = self.route.and_then(&get) {
            return Picked {
                value: Some(v),
                key: format!("{}.{name}", self.route_prefix),
            };
        }
        Picked {
            value: get(self.defaults),
            key: format!("{}.{name}", self.default_prefix),
        }
    }
}

fn nonzero(p: &Picked<Duration>, default: Duration) -> Result<Duration, ConfigError> {
    let v = p.value.unwrap_or(default);
    super::nonzero(&p.key, v)?;
    Ok(v)
}

fn at_least_one(p: &Picked<u32>, default: u32) -> Result<u32, ConfigError> {
    let v = p.value.unwrap_or(default);
    if v == 0 {
        return Err(ConfigError::invalid(
            &p.key,
            "must be at least 1",
            "write a count such as 1 or 3",
        ));
    }
    Ok(v)
}

/// The circuit settings of route `i`.
pub(super) fn circuit(
    i: usize,
    route: Option<&CircuitFile>,
    defaults: &CircuitFile,
) -> Result<CircuitSettings, ConfigError> {
    let l = Layers::new(i, "circuit", route, defaults);
    let d = CircuitSettings::default();
    let open_for = nonzero(&l.pick("open_for", |f| f.open_for), d.open_for)?;
    let max = l.pick("max_open_for", |f| f.max_open_for);
    let max_open_for = nonzero(&max, d.max_open_for.max(open_for))?;
    if max_open_for < open_for {
        return Err(ConfigError::invalid(
            &max.key,
            format!("is shorter than open_for ({open_for:?})"),
            "set max_open_for to open_for or longer, e.g. \"60s\"",
        ));
    }
    Ok(CircuitSettings {
        failures: l
            .pick("failures", |f| f.failures)
            .value
            .unwrap_or(d.failures),
        open_for,
        max_open_for,
        half_open_requests: at_least_one(
            &l.pick("half_open_requests", |f| f.half_open_requests),
            d.half_open_requests,
        )?,
    })
}

/// Longest retry backoff accepted: longer ones hold the client's request for nothing.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// The retry settings of route `i`.
pub(super) fn retry(
    i: usize,
    route: Option<&RetryFile>,
    defaults: &RetryFile,
) -> Result<RetrySettings, ConfigError> {
    let l = Layers::new(i, "retry", route, defaults);
    let d = RetrySettings::default();
    let percent = l.pick("budget_percent", |f| f.budget_percent);
    let budget_percent = percent.value.unwrap_or(d.budget_percent);
    if budget_percent > 100 {
        return Err(ConfigError::invalid(
            &percent.key,
            format!("{budget_percent} is over 100"),
            "write a percentage from 0 to 100, e.g. 20",
        ));
    }
    let backoff = l.pick("backoff", |f| f.backoff).value.unwrap_or(d.backoff);
    let max = l.pick("max_backoff", |f| f.max_backoff);
    let max_backoff = max.value.unwrap_or(d.max_backoff.max(backoff));
    if max_backoff < backoff || max_backoff > MAX_BACKOFF {
        return Err(ConfigError::invalid(
            &max.key,
            format!("must be at least backoff ({backoff:?}) and at most {MAX_BACKOFF:?}"),
            "write a duration such as \"250ms\"",
        ));
    }
    Ok(RetrySettings {
        max_retries: l
            .pick("max_retries", |f| f.max_retries)
            .value
            .unwrap_or(d.max_retries),
        budget_percent,
        min_per_second: l
            .pick("min_per_second", |f| f.min_per_second)
            .value
            .unwrap_or(d.min_per_second),
        backoff,
        max_backoff,
    })
}

/// Default time between health probes.
const CHECK_INTERVAL: Duration = Duration::from_secs(10);
/// Default wait for a probe's answer.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// The active health check of route `i` (`None`: off), checked against its endpoints.
pub(super) fn health_check(
    i: usize,
    route: Option<&HealthCheckFile>,
    defaults: &HealthCheckFile,
    endpoints: &[Uri],
) -> Result<Option<HealthCheckSettings>, ConfigError> {
    let l = Layers::new(i, "health_check", route, defaults);
    let enabled = l.pick("enabled", |f| f.enabled);
    if !enabled.value.unwrap_or(false) {
        return Ok(None);
    }
    let path = l.pick("path", |f| f.path.clone());
    let Some(p) = path.value.clone() else {
        return Err(ConfigError::invalid(
            &path.key,
            format!("is required when {} is true", enabled.key),
            "set the path your backend answers 2xx on when healthy, e.g. path = \"/healthz\"",
        ));
    };
    if !p.starts_with('/')
        || endpoints
            .iter()
            .any(|e| crate::upstream::health::probe_uri(e, &p).is_none())
    {
        return Err(ConfigError::invalid(
            &path.key,
            format!("`{p}` is not a usable path"),
            "write an absolute path such as \"/healthz\" (a query is allowed)",
        ));
    }
    let interval = nonzero(&l.pick("interval", |f| f.interval), CHECK_INTERVAL)?;
    let t = l.pick("timeout", |f| f.timeout);
    let timeout = nonzero(&t, CHECK_TIMEOUT.min(interval))?;
    if timeout > interval {
        return Err(ConfigError::invalid(
            &t.key,
            format!("is longer than the interval ({interval:?})"),
            "make the timeout shorter than the interval, e.g. timeout = \"2s\" with interval = \"10s\"",
        ));
    }
    Ok(Some(HealthCheckSettings {
        path: p,
        interval,
        timeout,
        healthy_threshold: at_least_one(&l.pick("healthy_threshold", |f| f.healthy_threshold), 2)?,
        unhealthy_threshold: at_least_one(
            &l.pick("unhealthy_threshold", |f| f.unhealthy_threshold),
            3,
        )?,
    }))
}
