//! `mcp-edge check`: loads the config and every file it names exactly as start-up would, and
//! describes what would run. Any problem is returned with the key or file at fault.

use std::fmt::Write as _;
use std::path::Path;
use std::time::SystemTime;

use crate::config::{self, ConfigError, Transport};
use crate::prepare::{PrepareError, Prepared, Purpose, prepare};

/// Why `check` failed.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The config file itself.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A file or setting it names, as start-up and reloads report it.
    #[error(transparent)]
    Prepare(#[from] PrepareError),
}

/// Validates the config at `path` and every file it names; returns a human summary.
pub async fn run(path: &Path) -> Result<String, CheckError> {
    let cfg = config::load(path)?;
    // The path start-up takes, minus binding: issuer key sources are not contacted, and a
    // certificate outside its validity window fails the check rather than being served.
    let prepared = prepare(cfg, Purpose::Check).await?;
    Ok(summary(path, &prepared, SystemTime::now()))
}

/// The text `check` prints for a config that passed: what would run, then any warnings.
fn summary(path: &Path, prepared: &Prepared, now: SystemTime) -> String {
    let cfg = &prepared.config;
    let certs = &prepared.tls.certs;
    let mut out = String::new();
    let _ = writeln!(out, "config {} is valid", path.display());
    let _ = writeln!(
        out,
        "listener: {} (public URL {}), up to {} connections, {} per client address",
        cfg.listener.bind,
        cfg.listener.public_url,
        cfg.listener.max_connections,
        cfg.listener.max_connections_per_ip
    );
    for c in certs {
        let days = c.info.time_left(now).map_or_else(
            || "EXPIRED".to_owned(),
            |d| format!("{} days left", d.as_secs() / 86_400),
        );
        let _ = writeln!(
            out,
            "certificate: {} names=[{}] not_after={} ({days})",
            c.info.subject,
            c.info.dns_names.join(", "),
            humantime::format_rfc3339_seconds(c.info.not_after),
        );
    }
    for r in &cfg.routes {
        let transport = match r.transport {
            Transport::StreamableHttp => "streamable-http",
            Transport::Sse => "sse (legacy)",
        };
        let ups: Vec<String> = r.upstreams.iter().map(ToString::to_string).collect();
        let _ = writeln!(out, "route {} [{transport}] -> {}", r.path, ups.join(", "));
        if !r.limits.is_empty() {
            let _ = writeln!(out, "  limits per caller: {}", r.limits);
        }
    }
    if let crate::limits::Store::Redis(redis) = &cfg.limits.store {
        let _ = writeln!(
            out,
            "limits store: redis {} (while unreachable: {})",
            redis.redacted_url(),
            cfg.limits.on_store_failure.as_str()
        );
    }
    telemetry(&mut out, &cfg.telemetry);
    if let Some(a) = &cfg.admin {
        let _ = writeln!(out, "admin: {}", a.bind);
    }
    // On stdout with the summary: stderr is for the one error that makes the check fail.
    for w in &prepared.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    out
}

/// The trace export line, when `[telemetry.otlp]` or a variable asks for one. Header values
/// are credentials: only their names and where they came from are shown.
fn telemetry(out: &mut String, t: &config::TelemetrySettings) {
    if let Some(o) = &t.otlp {
        let headers: Vec<String> = o
            .headers
            .iter()
            .map(|h| {
                let from = if h.from_env { "environment" } else { "file" };
                format!("{}=<redacted> ({from})", h.name)
            })
            .collect();
        let _ = writeln!(
            out,
            "telemetry: OTLP {} to {} ({}), sampler {}, service.name {:?}, timeout {}, headers [{}]",
            o.protocol.as_str(),
            o.endpoint,
            o.endpoint_source,
            o.sampling,
            o.service_name,
            humantime::format_duration(o.timeout),
            headers.join(", ")
        );
    }
    if let Some(v) = t.disabled_by {
        let _ = writeln!(out, "telemetry: OTLP export turned off by {v}");
    }
    if let Some(v) = t.ignored_variable {
        let _ = writeln!(
            out,
            "warning: {v} is set, but this build has no `otel` feature: no traces are exported"
        );
    }
}
