//! `mcp-edge check`: loads the config and every file it names exactly as start-up would, and
//! describes what would run. Any problem is returned with the key or file at fault.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use crate::app::StartError;
use crate::config::{self, ConfigError, Transport};
use crate::proxy::Gateway;
use crate::tls::{self, TlsSetupError};

/// Why `check` failed.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The config file itself.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A certificate, key or upstream client setting.
    #[error(transparent)]
    Start(#[from] StartError),
    /// A serving certificate is past its not-after date.
    #[error(
        "listener.tls: certificate {path} expired at {not_after}; install a renewed certificate before starting"
    )]
    Expired {
        /// Certificate file.
        path: std::path::PathBuf,
        /// Its not-after date (RFC 3339).
        not_after: String,
    },
    /// A serving certificate is not valid yet (clients will reject it).
    #[error(
        "listener.tls: certificate {path} is not valid before {not_before}; check the issuer's clock or install the current certificate"
    )]
    NotYetValid {
        /// Certificate file.
        path: std::path::PathBuf,
        /// Its not-before date (RFC 3339).
        not_before: String,
    },
}

/// Validates the config at `path` and every file it names; returns a human summary.
pub fn run(path: &Path) -> Result<String, CheckError> {
    let cfg = config::load(path)?;
    let (_, certs) = tls::load_resolver(&cfg.listener.tls)
        .map_err(|e| StartError::Tls(TlsSetupError::Cert(e)))?;
    // The whole listener TLS setup as start-up builds it: client CA bundle and CRLs too.
    crate::reload::build_tls(&cfg, SystemTime::now(), false, &[]).map_err(|e| match e {
        crate::reload::ReloadError::Cert(c) => StartError::Tls(TlsSetupError::Cert(c)),
        crate::reload::ReloadError::Tls(t) => StartError::Tls(t),
        other => StartError::Reload(Box::new(other)),
    })?;
    crate::certs::alerts::Alerter::new(&cfg.certs).map_err(|e| StartError::Alerts(Box::new(e)))?;
    if let Some(a) = &cfg.audit
        && let Some(k) = &a.hmac_key_file
    {
        crate::session::load_key_file(k).map_err(StartError::AuditKey)?;
    }
    let cfg = Arc::new(cfg);
    // Issuer key sources are not contacted: `check` makes no network calls.
    let sealer = crate::session::SessionSealer::from_settings(&cfg.sessions)
        .map_err(StartError::SessionKey)?;
    let signer = crate::auth::upstream_token::UpstreamSigner::from_settings(
        cfg.auth.upstream_token.as_ref(),
    )
    .map_err(StartError::UpstreamToken)?;
    Gateway::new(cfg.clone(), Default::default(), Arc::new(sealer), signer)
        .map_err(StartError::Upstream)?;

    let now = SystemTime::now();
    if let Some(c) = certs.iter().find(|c| c.info.time_left(now).is_none()) {
        return Err(CheckError::Expired {
            path: c.path.clone(),
            not_after: humantime::format_rfc3339_seconds(c.info.not_after).to_string(),
        });
    }
    if let Some(c) = certs.iter().find(|c| c.info.not_before > now) {
        return Err(CheckError::NotYetValid {
            path: c.path.clone(),
            not_before: humantime::format_rfc3339_seconds(c.info.not_before).to_string(),
        });
    }
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
    for c in &certs {
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
    }
    if let Some(a) = &cfg.admin {
        let _ = writeln!(out, "admin: {}", a.bind);
    }
    Ok(out)
}
