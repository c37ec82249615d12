//! Validation of a parsed file, one module per concern. Each function checks one section and
//! resolves it into the settings type of the module that uses it; errors name the exact key
//! and the fix. Checks that span sections (a route's auth against the listener and issuers)
//! live with the section that refers to the other.

mod auth;
mod certs;
mod limits;
mod listener;
mod metrics;
mod policy;
mod routes;
mod server;
pub(in crate::config) mod telemetry;
mod upstream;

pub use telemetry::{OtlpHeader, OtlpProtocol, OtlpSettings, Sampling, TelemetrySettings};

use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Uri;

use super::{Config, ConfigError, ConfigFile, ShutdownSettings};

/// Turns a path from the file into one relative to the config file's directory.
type Resolve<'a> = &'a dyn Fn(&Path) -> PathBuf;

/// Checks every value of a parsed file and resolves it into a [`Config`].
pub fn validate(file: ConfigFile, base_dir: &Path) -> Result<Config, ConfigError> {
    let resolve = |p: &Path| -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            base_dir.join(p)
        }
    };
    let listener = listener::listener(file.listener, &resolve)?;
    let http = server::http(file.http)?;
    let sse = server::sse(&file.sse)?;
    let admin = server::admin(file.admin)?;
    routes::upstream_defaults(&file.upstream)?;
    let sessions = server::sessions(&file.sessions, &resolve)?;
    let auth = auth::auth(file.auth, &listener.public_url, &resolve)?;
    let limits = limits::limits(&file.limits)?;
    let route_limits = file
        .routes
        .iter()
        .enumerate()
        .map(|(i, r)| limits::route(i, r.limits.as_ref(), &file.limits))
        .collect::<Result<Vec<_>, _>>()?;
    let mut routes = routes::routes(file.routes, &file.upstream, &listener, &auth, &resolve)?;
    for (route, l) in routes.iter_mut().zip(route_limits) {
        route.limits = l;
    }
    let log = server::log(file.log)?;
    // Each load reads the process environment; it does not change after start, so a reload
    // resolves the variables as start-up did.
    let telemetry = telemetry::telemetry(file.telemetry, &|name| {
        std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
    })?;
    let metrics = metrics::metrics(file.metrics)?;
    Ok(Config {
        source: None,
        listener,
        http,
        sse,
        certs: certs::certs(file.certs, &resolve)?,
        audit: server::audit(file.audit, &resolve),
        sessions,
        shutdown: ShutdownSettings {
            drain_timeout: file.shutdown.drain_timeout,
        },
        admin,
        auth,
        limits,
        log,
        telemetry,
        metrics,
        routes,
    })
}

/// Whether `s` is an RFC 6749 scope-token: printable ASCII except space, `"` and `\\`.
fn is_scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b > 0x20 && b < 0x7f && b != b'"' && b != b'\\')
}

fn has_user_info(uri: &Uri) -> bool {
    uri.authority().is_some_and(|a| a.as_str().contains('@'))
}

/// A DNS name in the LDH form certificates use: labels of letters, digits and inner hyphens,
/// and not an IP address (certificates name those as IP SANs, which SNI never carries).
fn is_dns_name(name: &str) -> bool {
    name.parse::<std::net::IpAddr>().is_err()
        && !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

fn nonzero(key: &str, d: Duration) -> Result<(), ConfigError> {
    if d.is_zero() {
        return Err(ConfigError::invalid(
            key,
            "must be longer than zero",
            "write a duration such as \"10s\" or \"5m\"",
        ));
    }
    Ok(())
}
