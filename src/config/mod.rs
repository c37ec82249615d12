//! Typed configuration: the TOML file is parsed into these structs (unknown keys rejected),
//! then [`validate`] checks every value and resolves it into a [`Config`] snapshot that the
//! data path shares through an `Arc`. Nothing here touches the network.

mod cert_sources;
mod file;
mod validate;

pub use validate::validate;
pub use validate::{OtlpHeader, OtlpProtocol, OtlpSettings, Sampling, TelemetrySettings};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Uri;

pub use file::{
    AdminFile, AuthFile, ClientAuthMode, ConfigFile, HttpFile, IssuerFile, ListenerFile, LogFile,
    LogFormat, OtlpFile, RequireAuth, RouteFile, ShutdownFile, SniCertFile, SseFile, TelemetryFile,
    TlsFile, Transport, UpstreamDefaultsFile, UpstreamTlsFile,
};

// Settings types live with the modules that use them; config builds them and re-exports them
// under their historical paths.
pub use crate::auth::bearer::{AuthSettings, IssuerSettings};
pub use crate::auth::mtls::ClientAuth;
pub use crate::auth::upstream_token::UpstreamTokenSettings;
pub use crate::certs::alerts::CertsSettings;
pub use crate::certs::alerts::WebhookSettings;
pub use crate::http::server::HttpLimits;
pub use crate::limits::LimitSettings;
pub use crate::metrics::MetricsSettings;
pub use crate::session::SessionSettings;
pub use crate::tls::ServerTls;
pub use crate::tls::SniCert;
pub use crate::upstream::UpstreamSettings;
pub use crate::upstream::UpstreamTls;
pub use crate::upstream::{CircuitSettings, HealthCheckSettings, RetrySettings};

/// Why a configuration could not be loaded; every message names the key and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("cannot read config file {path}: {error}")]
    Read {
        /// The file that failed.
        path: PathBuf,
        /// The underlying I/O error.
        error: std::io::Error,
    },
    /// The TOML did not parse or did not fit the schema (unknown key, wrong type).
    #[error("config file {path} is not valid: {message}")]
    Parse {
        /// The file that failed.
        path: PathBuf,
        /// The parser's message, which names the line and key.
        message: String,
    },
    /// A value parsed but is not acceptable.
    #[error("config key `{key}`: {problem}; {fix}")]
    Invalid {
        /// Dotted path of the offending key, e.g. `routes[1].upstream`.
        key: String,
        /// What is wrong with it.
        problem: String,
        /// What the operator should do.
        fix: String,
    },
    /// An environment variable the config reads (`OTEL_*`) has a value that is not acceptable.
    #[error("environment variable `{variable}`: {problem}; {fix}")]
    Env {
        /// The variable.
        variable: &'static str,
        /// What is wrong with it (never its value when that may be a secret).
        problem: String,
        /// What the operator should do.
        fix: String,
    },
    /// A section this build cannot honour.
    #[error("`{section}` needs a build with `--features {feature}`; rebuild or remove the section")]
    NeedsFeature {
        /// The section, e.g. `[telemetry.otlp]`.
        section: &'static str,
        /// The cargo feature that supports it.
        feature: &'static str,
    },
}

impl ConfigError {
    fn invalid(key: impl Into<String>, problem: impl Into<String>, fix: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            problem: problem.into(),
            fix: fix.into(),
        }
    }
}

/// A validated configuration, ready to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file this config was loaded from (SIGHUP re-reads it); `None` when parsed from text.
    pub source: Option<PathBuf>,
    /// Public listener.
    pub listener: Listener,
    /// HTTP server limits.
    pub http: HttpLimits,
    /// SSE relay behaviour.
    pub sse: SseSettings,
    /// Graceful shutdown.
    pub shutdown: ShutdownSettings,
    /// Session id sealing.
    pub sessions: SessionSettings,
    /// The audit log, when configured.
    pub audit: Option<AuditSettings>,
    /// Certificate reload and expiry alerts.
    pub certs: CertsSettings,
    /// Loopback admin listener, if enabled.
    pub admin: Option<Admin>,
    /// Logging.
    pub log: LogSettings,
    /// Trace export (`[telemetry]` and the `OTEL_*` variables); fixed at start.
    pub telemetry: TelemetrySettings,
    /// Metrics recording and labels.
    pub metrics: MetricsSettings,
    /// Token issuers and identity headers.
    pub auth: AuthSettings,
    /// Where rate limits are kept (each route has its own limits).
    pub limits: LimitSettings,
    /// Routes, in the order given.
    pub routes: Vec<Route>,
}

/// Validated `[audit]`.
#[derive(Debug, Clone)]
pub struct AuditSettings {
    /// The log file.
    pub file: PathBuf,
    /// HMAC key file.
    pub hmac_key_file: Option<PathBuf>,
    /// When to sync.
    pub fsync: crate::audit::FsyncPolicy,
}

/// Validated public listener settings.
#[derive(Debug, Clone)]
pub struct Listener {
    /// Socket address to bind.
    pub bind: SocketAddr,
    /// Public base URL (scheme + authority, no path) used in rewritten links and metadata.
    pub public_url: Uri,
    /// Lower-case host names (or IP literals, IPv6 in brackets) clients may address.
    pub allowed_hosts: Vec<String>,
    /// Maximum simultaneous client connections.
    pub max_connections: usize,
    /// Maximum simultaneous connections from one client address (IPv4 address or IPv6 /64).
    pub max_connections_per_ip: usize,
    /// Time allowed for the TLS handshake.
    pub handshake_timeout: Duration,
    /// TLS handshakes in progress at once; connections beyond wait for a slot.
    pub max_handshakes_in_flight: usize,
    /// Server certificates.
    pub tls: ServerTls,
}

/// How SSE streams are relayed.
#[derive(Debug, Clone)]
pub struct SseSettings {
    /// A comment line is sent after this much upstream silence.
    pub heartbeat_interval: Duration,
    /// A stream whose upstream sent nothing for this long is ended.
    pub idle_timeout: Duration,
    /// GET and `subscriptions/listen` streams are closed (with `retry:`) after this long.
    pub max_stream_lifetime: Option<Duration>,
    /// A connection whose writes stay blocked this long (the client stopped reading) is closed.
    pub client_write_timeout: Duration,
}

/// Graceful shutdown settings.
#[derive(Debug, Clone)]
pub struct ShutdownSettings {
    /// How long in-flight requests and streams may run after shutdown starts.
    pub drain_timeout: Duration,
}

/// Admin listener settings.
#[derive(Debug, Clone)]
pub struct Admin {
    /// Socket address to bind (loopback unless deliberately exposed).
    pub bind: SocketAddr,
}

/// Logging settings.
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// `json` or `text`.
    pub format: LogFormat,
    /// Default filter directive (overridden by `RUST_LOG`).
    pub level: String,
}

/// A validated route: one public path relayed to one or more upstream endpoints.
#[derive(Debug, Clone)]
pub struct Route {
    /// Exact public path, e.g. `/mcp`.
    pub path: String,
    /// MCP transport spoken on this route.
    pub transport: Transport,
    /// Upstream endpoints, in configured order.
    pub upstreams: Vec<Uri>,
    /// Upstream connection settings.
    pub upstream: UpstreamSettings,
    /// Which browser origins may call the route.
    pub origins: crate::auth::origin::OriginPolicy,
    /// What each request must prove.
    pub require: RequireAuth,
    /// Issuers whose tokens are accepted (listed; the only issuer when one is configured).
    pub issuers: Vec<String>,
    /// Scopes every token must carry.
    pub scopes: Vec<String>,
    /// Tokens must carry `cnf.x5t#S256` matching the client certificate (RFC 8705).
    pub certificate_bound_tokens: bool,
    /// The route's canonical resource URI (token audience, RFC 8707): `public_url` + `path`.
    pub resource: String,
    /// MCP methods, tools and resources per principal.
    pub policy: std::sync::Arc<crate::policy::RoutePolicy>,
    /// Audience of the identity token signed for the backend (`None`: no token).
    pub upstream_token_audience: Option<String>,
    /// Rate and concurrency limits per caller.
    pub limits: crate::limits::RouteLimits,
}

impl Route {
    /// What authentication reads of this route.
    pub fn auth(&self) -> crate::auth::identity::RouteAuth<'_> {
        crate::auth::identity::RouteAuth {
            path: &self.path,
            require: self.require,
            issuers: &self.issuers,
            scopes: &self.scopes,
            certificate_bound_tokens: self.certificate_bound_tokens,
            resource: &self.resource,
        }
    }
}

/// Reads, parses and validates the configuration file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    let base = path.parent().unwrap_or_else(|| Path::new("."));
    let mut cfg = parse(&text, path, base)?;
    // Absolute, so a reload finds the file whatever the working directory is by then.
    cfg.source = Some(std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()));
    Ok(cfg)
}

/// Parses and validates configuration text; relative file paths resolve against `base_dir`.
pub fn parse(text: &str, origin: &Path, base_dir: &Path) -> Result<Config, ConfigError> {
    let file: ConfigFile = toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: origin.to_path_buf(),
        message: e.to_string(),
    })?;
    validate(file, base_dir)
}

#[cfg(test)]
mod tests;
