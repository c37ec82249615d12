//! Typed configuration: the TOML file is parsed into these structs (unknown keys rejected),
//! then [`validate`] checks every value and resolves it into a [`Config`] snapshot that the
//! data path shares through an `Arc`. Nothing here touches the network.

mod cert_sources;
mod file;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Uri;

pub use file::{
    AdminFile, AuthFile, ClientAuthMode, ConfigFile, HttpFile, IssuerFile, ListenerFile, LogFile,
    LogFormat, RequireAuth, RouteFile, ShutdownFile, SniCertFile, SseFile, TlsFile, Transport,
    UpstreamDefaultsFile, UpstreamTlsFile,
};

// Settings types live with the modules that use them; config builds them and re-exports them
// under their historical paths.
pub use crate::auth::bearer::{AuthSettings, IssuerSettings};
pub use crate::auth::mtls::ClientAuth;
pub use crate::auth::upstream_token::UpstreamTokenSettings;
pub use crate::certs::alerts::CertsSettings;
pub use crate::certs::alerts::WebhookSettings;
pub use crate::http::server::HttpLimits;
pub use crate::session::SessionSettings;
pub use crate::tls::ServerTls;
pub use crate::tls::SniCert;
pub use crate::upstream::UpstreamSettings;
pub use crate::upstream::UpstreamTls;

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
    /// Token issuers and identity headers.
    pub auth: AuthSettings,
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

/// Checks every value of a parsed file and resolves it into a [`Config`].
pub fn validate(file: ConfigFile, base_dir: &Path) -> Result<Config, ConfigError> {
    let resolve = |p: &Path| -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            base_dir.join(p)
        }
    };

    let l = file.listener;
    let bind: SocketAddr = l.bind.parse().map_err(|_| {
        ConfigError::invalid(
            "listener.bind",
            format!("`{}` is not a socket address", l.bind),
            "write it as IP:PORT, e.g. \"0.0.0.0:8443\" or \"[::]:8443\"",
        )
    })?;
    let public_url = parse_public_url(&l.public_url)?;
    if l.max_connections == 0 {
        return Err(ConfigError::invalid(
            "listener.max_connections",
            "must be at least 1",
            "set a positive number (default 10000)",
        ));
    }
    let max_connections_per_ip = match l.max_connections_per_ip {
        None => default_per_ip(l.max_connections),
        Some(0) => {
            return Err(ConfigError::invalid(
                "listener.max_connections_per_ip",
                "must be at least 1",
                "set a positive number, or remove the key for the default (a quarter of \
                 max_connections, at most 256); to turn the per-address cap off set it \
                 equal to max_connections",
            ));
        }
        Some(n) if n > l.max_connections => {
            return Err(ConfigError::invalid(
                "listener.max_connections_per_ip",
                format!(
                    "{n} is larger than listener.max_connections ({})",
                    l.max_connections
                ),
                "set it at most equal to max_connections (equal turns the per-address cap off)",
            ));
        }
        Some(n) => n,
    };
    nonzero("listener.handshake_timeout", l.handshake_timeout)?;

    let mut sni = Vec::with_capacity(l.tls.sni.len());
    for (i, s) in l.tls.sni.iter().enumerate() {
        let key = format!("listener.tls.sni[{i}].names");
        if s.names.is_empty() {
            return Err(ConfigError::invalid(
                key,
                "is empty",
                "list the DNS names this certificate serves, e.g. [\"mcp.example.com\"]",
            ));
        }
        let mut names = Vec::with_capacity(s.names.len());
        for n in &s.names {
            let n = n.trim().trim_end_matches('.').to_ascii_lowercase();
            let bare = n.strip_prefix("*.").unwrap_or(&n);
            if !is_dns_name(bare) {
                return Err(ConfigError::invalid(
                    key,
                    format!("`{n}` is not a DNS name"),
                    "use exact names or a leading wildcard such as \"*.example.com\"",
                ));
            }
            names.push(n);
        }
        for n in &names {
            if let Some(prev) = sni.iter().position(|p: &SniCert| p.names.contains(n)) {
                return Err(ConfigError::invalid(
                    key,
                    format!("`{n}` is already listed in listener.tls.sni[{prev}]"),
                    "list each name under one certificate only",
                ));
            }
        }
        sni.push(SniCert {
            names,
            cert: resolve(&s.cert),
            key: resolve(&s.key),
        });
    }
    let allow_tls12 = match l.tls.min_version.as_str() {
        "1.2" => true,
        "1.3" => false,
        other => {
            return Err(ConfigError::invalid(
                "listener.tls.min_version",
                format!("`{other}` is not supported"),
                "use \"1.2\" (default) or \"1.3\"",
            ));
        }
    };
    let allowed_hosts = validate_hosts(&l.allowed_hosts, &public_url)?;
    let client_auth = ClientAuth {
        mode: l.tls.client_auth,
        ca: l.tls.client_ca.as_deref().map(resolve),
        crls: l.tls.client_crls.iter().map(|p| resolve(p)).collect(),
    };
    match (client_auth.mode, &client_auth.ca) {
        (ClientAuthMode::Off, Some(_)) | (ClientAuthMode::Off, None)
            if !client_auth.crls.is_empty() =>
        {
            return Err(ConfigError::invalid(
                "listener.tls.client_crls",
                "is set while client_auth is off",
                "set client_auth = \"optional\" or \"required\", or remove the CRLs",
            ));
        }
        (ClientAuthMode::Optional | ClientAuthMode::Required, None) => {
            return Err(ConfigError::invalid(
                "listener.tls.client_ca",
                "is missing while client_auth is on",
                "set client_ca to the PEM bundle of the CA that issues client certificates",
            ));
        }
        _ => {}
    }
    let listener = Listener {
        bind,
        public_url,
        allowed_hosts,
        max_connections: l.max_connections,
        max_connections_per_ip,
        handshake_timeout: l.handshake_timeout,
        tls: ServerTls {
            cert: resolve(&l.tls.cert),
            key: resolve(&l.tls.key),
            sni,
            allow_tls12,
            client_auth,
        },
    };

    let h = file.http;
    nonzero("http.header_read_timeout", h.header_read_timeout)?;
    nonzero("http.h2_keepalive_interval", h.h2_keepalive_interval)?;
    nonzero("http.h2_keepalive_timeout", h.h2_keepalive_timeout)?;
    nonzero("http.first_request_timeout", h.first_request_timeout)?;
    nonzero("http.idle_timeout", h.idle_timeout)?;
    if !(8192..=1024 * 1024).contains(&h.max_header_bytes) {
        return Err(ConfigError::invalid(
            "http.max_header_bytes",
            format!("{} is outside 8192..=1048576", h.max_header_bytes),
            "keep the default 65536 unless clients send unusually large headers",
        ));
    }
    if !(8..=1000).contains(&h.max_headers) {
        return Err(ConfigError::invalid(
            "http.max_headers",
            format!("{} is outside 8..=1000", h.max_headers),
            "keep the default 100",
        ));
    }
    if h.max_request_body_bytes == 0 {
        return Err(ConfigError::invalid(
            "http.max_request_body_bytes",
            "must be at least 1",
            "set a byte count such as 4194304 (4 MiB)",
        ));
    }
    if h.h2_max_concurrent_streams == 0 {
        return Err(ConfigError::invalid(
            "http.h2_max_concurrent_streams",
            "must be at least 1",
            "keep the default 200",
        ));
    }
    let http = HttpLimits {
        header_read_timeout: h.header_read_timeout,
        max_header_bytes: h.max_header_bytes,
        max_headers: h.max_headers,
        max_request_body_bytes: h.max_request_body_bytes,
        h2_keepalive_interval: h.h2_keepalive_interval,
        h2_keepalive_timeout: h.h2_keepalive_timeout,
        h2_max_concurrent_streams: h.h2_max_concurrent_streams,
        first_request_timeout: h.first_request_timeout,
        idle_timeout: h.idle_timeout,
    };

    nonzero("sse.heartbeat_interval", file.sse.heartbeat_interval)?;
    nonzero("sse.idle_timeout", file.sse.idle_timeout)?;
    if file.sse.idle_timeout <= file.sse.heartbeat_interval {
        return Err(ConfigError::invalid(
            "sse.idle_timeout",
            "is not longer than sse.heartbeat_interval",
            "make the idle limit several heartbeats long (defaults: 15s heartbeat, 30m idle)",
        ));
    }
    let sse = SseSettings {
        heartbeat_interval: file.sse.heartbeat_interval,
        idle_timeout: file.sse.idle_timeout,
    };

    let admin = match file.admin {
        Some(a) => Some(Admin {
            bind: a.bind.parse().map_err(|_| {
                ConfigError::invalid(
                    "admin.bind",
                    format!("`{}` is not a socket address", a.bind),
                    "write it as IP:PORT, e.g. \"127.0.0.1:9901\"",
                )
            })?,
        }),
        None => None,
    };

    let u = &file.upstream;
    nonzero("upstream.connect_timeout", u.connect_timeout)?;
    nonzero(
        "upstream.response_header_timeout",
        u.response_header_timeout,
    )?;
    nonzero("upstream.body_idle_timeout", u.body_idle_timeout)?;

    if file.sessions.key_file.is_none() && !file.sessions.previous_key_files.is_empty() {
        return Err(ConfigError::invalid(
            "sessions.previous_key_files",
            "is set without sessions.key_file",
            "set `key_file` to the current key; previous keys only open ids sealed before a rotation",
        ));
    }
    nonzero("sessions.max_lifetime", file.sessions.max_lifetime)?;
    let auth = validate_auth(file.auth, &listener.public_url, &resolve)?;

    if file.routes.is_empty() {
        return Err(ConfigError::invalid(
            "routes",
            "no route is configured",
            "add a [[routes]] table with `path` and `upstream`",
        ));
    }
    let mut routes: Vec<Route> = Vec::with_capacity(file.routes.len());
    for (i, r) in file.routes.into_iter().enumerate() {
        let mut route = validate_route(i, r, u, &resolve)?;
        if route.upstream_token_audience.is_some() && auth.upstream_token.is_none() {
            return Err(ConfigError::invalid(
                format!("routes[{i}].upstream_token_audience"),
                "is set but [auth.upstream_token] is not configured",
                "add [auth.upstream_token] with `signing_key = \"/etc/mcp-edge/upstream-signing.pem\"`",
            ));
        }
        route.resource = crate::auth::jwt::canonical_resource(&format!(
            "{}{}",
            listener.public_url.to_string().trim_end_matches('/'),
            route.path
        ))
        .ok_or_else(|| {
            ConfigError::invalid(
                format!("routes[{i}].path"),
                "does not form a resource URI with listener.public_url",
                "use a plain path such as \"/mcp\"",
            )
        })?;
        let needs_token = matches!(
            route.require,
            RequireAuth::Token | RequireAuth::Either | RequireAuth::Both
        );
        if needs_token && auth.issuers.is_empty() {
            return Err(ConfigError::invalid(
                format!("routes[{i}].auth.require"),
                "asks for tokens but no [[auth.issuers]] is configured",
                "add an [[auth.issuers]] table, or require \"certificate\" or \"none\"",
            ));
        }
        if route.issuers.is_empty() && needs_token {
            // With several issuers a default of "all of them" lets any one vouch for users and
            // organisations that belong to another (a partner's IdP can mint any claim), so
            // the route must say whose tokens it takes.
            if let [first, _, ..] = auth.issuers.as_slice() {
                return Err(ConfigError::invalid(
                    format!("routes[{i}].auth.issuers"),
                    format!(
                        "is required: {} [[auth.issuers]] are configured and without a list every one of them would be trusted for every user and organisation on this route",
                        auth.issuers.len()
                    ),
                    format!(
                        "list the issuers whose tokens the route accepts, e.g. issuers = [\"{}\"]",
                        first.issuer
                    ),
                ));
            }
            route.issuers = auth.issuers.iter().map(|s| s.issuer.clone()).collect();
        }
        for (j, iss) in route.issuers.iter().enumerate() {
            if !auth.issuers.iter().any(|s| &s.issuer == iss) {
                return Err(ConfigError::invalid(
                    format!("routes[{i}].auth.issuers[{j}]"),
                    format!("`{iss}` is not an [[auth.issuers]] issuer"),
                    "use the exact `issuer` value of a configured issuer",
                ));
            }
        }
        if !needs_token && (!route.issuers.is_empty() || !route.scopes.is_empty()) {
            return Err(ConfigError::invalid(
                format!("routes[{i}].auth"),
                "issuers or scopes are set but the route does not take tokens",
                "set require = \"token\", \"either\" or \"both\", or remove them",
            ));
        }
        if matches!(route.require, RequireAuth::Certificate | RequireAuth::Both)
            && listener.tls.client_auth.mode == ClientAuthMode::Off
        {
            return Err(ConfigError::invalid(
                format!("routes[{i}].auth.require"),
                "asks for a client certificate but listener.tls.client_auth is off",
                "set listener.tls.client_auth = \"optional\" (or \"required\") with client_ca",
            ));
        }
        if let Some(prev) = routes.iter().position(|p| p.path == route.path) {
            return Err(ConfigError::invalid(
                format!("routes[{i}].path"),
                format!("`{}` is already used by routes[{prev}]", route.path),
                "give every route its own path",
            ));
        }
        routes.push(route);
    }

    if let Err(e) = valid_log_filter(&file.log.level) {
        return Err(ConfigError::invalid(
            "log.level",
            format!("`{}` is not a log filter: {e}", file.log.level),
            "use a level (error, warn, info, debug, trace) or directives like \"info,mcp_edge=debug\"",
        ));
    }

    Ok(Config {
        source: None,
        listener,
        http,
        sse,
        certs: validate_certs(file.certs, &resolve)?,
        audit: file.audit.map(|a| AuditSettings {
            file: resolve(&a.file),
            hmac_key_file: a.hmac_key_file.as_deref().map(resolve),
            fsync: match a.fsync {
                crate::config::file::AuditFsync::Batch => crate::audit::FsyncPolicy::EveryBatch,
                crate::config::file::AuditFsync::Never => crate::audit::FsyncPolicy::Never,
            },
        }),
        sessions: SessionSettings {
            previous_key_files: file
                .sessions
                .previous_key_files
                .iter()
                .map(|p| resolve(p))
                .collect(),
            key_file: file.sessions.key_file.as_deref().map(resolve),
            max_lifetime: file.sessions.max_lifetime,
        },
        shutdown: ShutdownSettings {
            drain_timeout: file.shutdown.drain_timeout,
        },
        admin,
        auth,
        log: LogSettings {
            format: file.log.format,
            level: file.log.level,
        },
        routes,
    })
}

fn validate_route(
    i: usize,
    r: RouteFile,
    defaults: &UpstreamDefaultsFile,
    resolve: &dyn Fn(&Path) -> PathBuf,
) -> Result<Route, ConfigError> {
    let key = |k: &str| format!("routes[{i}].{k}");
    if !r.path.starts_with('/')
        || r.path.contains(['?', '#', ' '])
        || r.path.contains("//")
        || (r.path.len() > 1 && r.path.ends_with('/'))
        || r.path.starts_with("/.well-known/")
    {
        return Err(ConfigError::invalid(
            key("path"),
            format!("`{}` is not a usable route path", r.path),
            "use an absolute path without query, fragment or trailing slash, e.g. \"/mcp\"",
        ));
    }
    let (field, raw): (&str, Vec<String>) = match (r.upstream, r.upstreams) {
        (Some(one), None) => ("upstream", vec![one]),
        (None, Some(many)) if !many.is_empty() => ("upstreams", many),
        (None, Some(_)) => {
            return Err(ConfigError::invalid(
                key("upstreams"),
                "is empty",
                "list at least one upstream URL, or use `upstream = \"http://HOST:PORT/mcp\"`",
            ));
        }
        (None, None) => {
            return Err(ConfigError::invalid(
                key("upstream"),
                "is missing",
                "set `upstream = \"http://HOST:PORT/mcp\"` or `upstreams = [..]`",
            ));
        }
        (Some(_), Some(_)) => {
            return Err(ConfigError::invalid(
                key("upstreams"),
                "both `upstream` and `upstreams` are set",
                "keep only one of them",
            ));
        }
    };
    let mut upstreams = Vec::with_capacity(raw.len());
    let mut any_https = false;
    for (j, s) in raw.iter().enumerate() {
        let k = if field == "upstream" {
            key("upstream")
        } else {
            key(&format!("upstreams[{j}]"))
        };
        let uri: Uri = s.parse().map_err(|_| {
            ConfigError::invalid(
                &k,
                format!("`{s}` is not a URL"),
                "write an absolute URL such as \"http://127.0.0.1:9000/mcp\"",
            )
        })?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => any_https = true,
            _ => {
                return Err(ConfigError::invalid(
                    &k,
                    format!("`{s}` has no http:// or https:// scheme"),
                    "write an absolute URL such as \"http://127.0.0.1:9000/mcp\"",
                ));
            }
        }
        if uri.authority().is_none_or(|a| a.host().is_empty()) {
            return Err(ConfigError::invalid(
                &k,
                format!("`{s}` has no host"),
                "write an absolute URL such as \"http://127.0.0.1:9000/mcp\"",
            ));
        }
        if has_user_info(&uri) {
            // They would end up in the Host header, in logs and in `check` output.
            return Err(ConfigError::invalid(
                &k,
                "the URL carries user info (`user:password@`)",
                "remove it; credentials in URLs are not supported",
            ));
        }
        if uri.query().is_some() {
            return Err(ConfigError::invalid(
                &k,
                format!("`{s}` has a query string"),
                "remove the query; the client's query is forwarded as sent",
            ));
        }
        if upstreams.contains(&uri) {
            return Err(ConfigError::invalid(
                &k,
                format!("`{s}` is listed twice"),
                "list each upstream endpoint once",
            ));
        }
        upstreams.push(uri);
    }

    let tls = match r.upstream_tls {
        Some(t) => {
            if t.client_cert.is_some() != t.client_key.is_some() {
                return Err(ConfigError::invalid(
                    key("upstream_tls.client_key"),
                    "`client_cert` and `client_key` must be given together",
                    "set both, or neither",
                ));
            }
            Some(UpstreamTls {
                ca: resolve(&t.ca),
                client_cert: t.client_cert.as_deref().map(resolve),
                client_key: t.client_key.as_deref().map(resolve),
            })
        }
        None if any_https => {
            return Err(ConfigError::invalid(
                key("upstream_tls"),
                "an https:// upstream needs a CA to verify it",
                "add [routes.upstream_tls] with `ca = \"/path/to/upstream-ca.pem\"`",
            ));
        }
        None => None,
    };

    let mut origins = crate::auth::origin::OriginPolicy {
        require_origin: r.require_origin,
        forward: r.forward_origin,
        ..Default::default()
    };
    for (j, o) in r.allowed_origins.iter().enumerate() {
        if o == "null" {
            origins.allow_null = true;
            continue;
        }
        let parsed = crate::auth::origin::Origin::parse(o).ok_or_else(|| {
            ConfigError::invalid(
                key(&format!("allowed_origins[{j}]")),
                format!("`{o}` is not an origin"),
                "write scheme://host[:port] without a path, e.g. \"https://app.example.com\", or \"null\"",
            )
        })?;
        origins.allowed.push(parsed);
    }

    for (j, s) in r.auth.scopes.iter().enumerate() {
        if !is_scope_token(s) {
            return Err(ConfigError::invalid(
                key(&format!("auth.scopes[{j}]")),
                format!("`{s}` is not a scope token"),
                "use one scope per list entry, without spaces or quotes",
            ));
        }
    }

    let policy = match r.policy {
        Some(p) => validate_policy(p, &key)?,
        None => crate::policy::RoutePolicy::default(),
    };

    if r.auth.certificate_bound_tokens && r.auth.require != RequireAuth::Both {
        return Err(ConfigError::invalid(
            key("auth.certificate_bound_tokens"),
            "needs both a token and a client certificate",
            "set `require = \"both\"` on the route (and listener.tls.client_auth to optional or required)",
        ));
    }

    if r.upstream_token_audience
        .as_ref()
        .is_some_and(|a| a.trim().is_empty())
    {
        return Err(ConfigError::invalid(
            key("upstream_token_audience"),
            "is empty",
            "set the audience the backend expects, e.g. \"https://backend.internal/mcp\", or remove the key",
        ));
    }

    Ok(Route {
        upstream_token_audience: r.upstream_token_audience,
        certificate_bound_tokens: r.auth.certificate_bound_tokens,
        policy: std::sync::Arc::new(policy),
        path: r.path,
        transport: r.transport,
        origins,
        require: r.auth.require,
        issuers: r.auth.issuers,
        scopes: r.auth.scopes,
        resource: String::new(),
        upstreams,
        upstream: UpstreamSettings {
            connect_timeout: defaults.connect_timeout,
            response_header_timeout: defaults.response_header_timeout,
            body_idle_timeout: defaults.body_idle_timeout,
            pool_idle_timeout: defaults.pool_idle_timeout,
            pool_max_idle_per_host: defaults.pool_max_idle_per_host,
            tls,
        },
    })
}

/// Whether `s` is an RFC 6749 scope-token: printable ASCII except space, `"` and `\\`.
fn is_scope_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b > 0x20 && b < 0x7f && b != b'"' && b != b'\\')
}

fn validate_policy(
    p: crate::config::file::PolicyFile,
    route_key: &dyn Fn(&str) -> String,
) -> Result<crate::policy::RoutePolicy, ConfigError> {
    use crate::policy::{Glob, Matcher, RoutePolicy, Rule, check_prefix_template};
    let key = |k: &str| route_key(&format!("policy.{k}"));
    let glob = |k: String, v: &str| -> Result<Glob, ConfigError> {
        if v.is_empty() || v.chars().any(char::is_control) {
            return Err(ConfigError::invalid(
                k,
                format!("`{v}` is not a usable pattern"),
                "write a name, or a pattern where `*` stands for any run of characters",
            ));
        }
        Ok(Glob::new(v))
    };
    let scopes = |k: String, v: &[String]| -> Result<Vec<String>, ConfigError> {
        for (j, s) in v.iter().enumerate() {
            if !is_scope_token(s) {
                return Err(ConfigError::invalid(
                    format!("{k}[{j}]"),
                    format!("`{s}` is not a scope token"),
                    "use one scope per list entry, without spaces or quotes",
                ));
            }
        }
        Ok(v.to_vec())
    };
    let methods = match p.methods {
        None => Vec::new(),
        Some(m) if m.is_empty() => {
            return Err(ConfigError::invalid(
                key("methods"),
                "is empty, which would refuse every message",
                "list the allowed methods (e.g. [\"initialize\", \"notifications/*\", \"tools/*\"]) or remove the key to allow all",
            ));
        }
        Some(m) => m
            .iter()
            .enumerate()
            .map(|(j, v)| glob(key(&format!("methods[{j}]")), v))
            .collect::<Result<_, _>>()?,
    };
    let mut method_scopes = Vec::new();
    for (m, s) in &p.method_scopes {
        let k = key(&format!("method_scopes.\"{m}\""));
        method_scopes.push((glob(k.clone(), m)?, scopes(k, s)?));
    }
    let mut tool_scopes = Vec::new();
    for (t, s) in &p.tool_scopes {
        let k = key(&format!("tool_scopes.\"{t}\""));
        tool_scopes.push((glob(k.clone(), t)?, scopes(k, s)?));
    }
    let mut rules = Vec::with_capacity(p.rules.len());
    for (i, r) in p.rules.into_iter().enumerate() {
        let rk = |k: &str| key(&format!("rules[{i}].{k}"));
        let opt = |k: &str, v: Option<String>| -> Result<Option<Glob>, ConfigError> {
            v.map(|v| glob(rk(&format!("match.{k}")), &v)).transpose()
        };
        let m = r.when;
        let mut claims = Vec::new();
        for (name, values) in m.claims {
            let values = match values {
                crate::config::file::OneOrMany::One(v) => vec![v],
                crate::config::file::OneOrMany::Many(v) => v,
            };
            let ck = rk(&format!("match.claims.{name}"));
            if name.is_empty() || values.is_empty() {
                return Err(ConfigError::invalid(
                    ck,
                    "needs a claim name and at least one value",
                    "write e.g. claims = { org_id = \"acme\" }",
                ));
            }
            let globs = values
                .iter()
                .map(|v| glob(ck.clone(), v))
                .collect::<Result<_, _>>()?;
            claims.push((name, globs));
        }
        let cert_sha256 = match m.cert_sha256 {
            None => None,
            Some(f) => {
                let hex: String = f
                    .chars()
                    .filter(|c| *c != ':')
                    .collect::<String>()
                    .to_ascii_lowercase();
                if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(ConfigError::invalid(
                        rk("match.cert_sha256"),
                        format!("`{f}` is not a SHA-256 fingerprint"),
                        "write 64 hex digits (colons allowed), e.g. from `openssl x509 -noout -fingerprint -sha256`",
                    ));
                }
                Some(hex)
            }
        };
        let when = Matcher {
            issuer: opt("issuer", m.issuer)?,
            subject: opt("subject", m.subject)?,
            client_id: opt("client_id", m.client_id)?,
            organisation: opt("organisation", m.organisation)?,
            scopes: scopes(rk("match.scopes"), &m.scopes)?,
            claims,
            cert_uri: opt("cert_uri", m.cert_uri)?,
            cert_dns: opt("cert_dns", m.cert_dns)?,
            cert_subject: opt("cert_subject", m.cert_subject)?,
            cert_sha256,
        };
        let globs = |k: &str, v: &[String]| -> Result<Vec<Glob>, ConfigError> {
            v.iter()
                .enumerate()
                .map(|(j, t)| glob(rk(&format!("{k}[{j}]")), t))
                .collect()
        };
        for (j, t) in r.resource_prefixes.iter().enumerate() {
            check_prefix_template(t).map_err(|problem| {
                ConfigError::invalid(
                    rk(&format!("resource_prefixes[{j}]")),
                    problem,
                    "write a URI prefix ending in `/` or `:`, e.g. \"memory://{org}/\"",
                )
            })?;
        }
        if r.allow_tools.is_empty() && r.deny_tools.is_empty() && r.resource_prefixes.is_empty() {
            return Err(ConfigError::invalid(
                rk("allow_tools"),
                "the rule grants and denies nothing",
                "add allow_tools, deny_tools or resource_prefixes, or remove the rule",
            ));
        }
        rules.push(Rule {
            name: r.name.unwrap_or_else(|| format!("rules[{i}]")),
            when,
            allow_tools: globs("allow_tools", &r.allow_tools)?,
            deny_tools: globs("deny_tools", &r.deny_tools)?,
            resource_prefixes: r.resource_prefixes,
        });
    }
    Ok(RoutePolicy {
        methods,
        method_scopes,
        tool_scopes,
        rules,
    })
}

fn parse_public_url(s: &str) -> Result<Uri, ConfigError> {
    let bad = |problem: String| {
        ConfigError::invalid(
            "listener.public_url",
            problem,
            "write the URL clients use, scheme and host only, e.g. \"https://mcp.example.com\"",
        )
    };
    let uri: Uri = s.parse().map_err(|_| bad(format!("`{s}` is not a URL")))?;
    if uri.scheme_str() != Some("https") {
        return Err(bad(format!("`{s}` is not an https:// URL")));
    }
    if uri.authority().is_none_or(|a| a.host().is_empty()) {
        return Err(bad(format!("`{s}` has no host")));
    }
    if has_user_info(&uri) {
        return Err(bad(
            "the URL carries user info (`user:password@`)".to_owned()
        ));
    }
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err(bad(format!("`{s}` has a path or query")));
    }
    Ok(uri)
}

fn validate_auth(
    a: AuthFile,
    public_url: &Uri,
    resolve: &dyn Fn(&Path) -> PathBuf,
) -> Result<AuthSettings, ConfigError> {
    use crate::auth::jwks::{JwksUrlConfig, KeySource};
    let prefix = a.identity_header_prefix.to_ascii_lowercase();
    if prefix.is_empty()
        || !prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(ConfigError::invalid(
            "auth.identity_header_prefix",
            format!("`{prefix}` cannot start a header name"),
            "use letters, digits and `-`, e.g. \"x-mcp-edge-\"",
        ));
    }
    if let Some(c) = &a.organisation_claim
        && c.trim().is_empty()
    {
        return Err(ConfigError::invalid(
            "auth.organisation_claim",
            "is empty",
            "name the token claim that carries the organisation, e.g. \"org_id\"",
        ));
    }
    let mut issuers: Vec<IssuerSettings> = Vec::with_capacity(a.issuers.len());
    for (i, f) in a.issuers.into_iter().enumerate() {
        let key = |k: &str| format!("auth.issuers[{i}].{k}");
        if f.issuer.is_empty() {
            return Err(ConfigError::invalid(
                key("issuer"),
                "is empty",
                "set the exact `iss` value of the tokens",
            ));
        }
        if issuers.iter().any(|p| p.issuer == f.issuer) {
            return Err(ConfigError::invalid(
                key("issuer"),
                format!("`{}` is configured twice", f.issuer),
                "configure each issuer once",
            ));
        }
        let key_sources = usize::from(f.jwks_url.is_some())
            + usize::from(f.jwks_file.is_some())
            + usize::from(!f.pem_keys.is_empty())
            + usize::from(f.hmac_secret_file.is_some());
        if key_sources == 0 && f.introspection.is_none() {
            return Err(ConfigError::invalid(
                key("jwks_url"),
                "no key source is set",
                "set one of jwks_url, jwks_file, pem_keys, hmac_secret_file, or [auth.issuers.introspection] for opaque tokens",
            ));
        }
        if f.algorithms.is_empty() && f.introspection.is_none() {
            return Err(ConfigError::invalid(
                key("algorithms"),
                "is empty",
                "list the algorithms the issuer signs with, e.g. [\"ES256\"]",
            ));
        }
        let mut algorithms = Vec::with_capacity(f.algorithms.len());
        for (j, name) in f.algorithms.iter().enumerate() {
            let alg: jsonwebtoken::Algorithm = name.parse().map_err(|_| {
                ConfigError::invalid(
                    key(&format!("algorithms[{j}]")),
                    format!("`{name}` is not a supported algorithm"),
                    "use RS256/384/512, PS256/384/512, ES256/384, EdDSA, or HS256/384/512 with hmac_secret_file",
                )
            })?;
            algorithms.push(alg);
        }
        if f.max_token_bytes < 256 {
            return Err(ConfigError::invalid(
                key("max_token_bytes"),
                format!("{} is too small for any JWT", f.max_token_bytes),
                "keep the default 8192",
            ));
        }
        let sources = usize::from(f.jwks_url.is_some())
            + usize::from(f.jwks_file.is_some())
            + usize::from(!f.pem_keys.is_empty())
            + usize::from(f.hmac_secret_file.is_some());
        let introspection = match &f.introspection {
            None => None,
            Some(i) => Some(introspection_config(i, &f, &key, resolve)?),
        };
        if sources > 1 || (sources == 0 && introspection.is_none()) {
            return Err(ConfigError::invalid(
                key("jwks_url"),
                format!("{sources} key sources are set"),
                "set exactly one of jwks_url, jwks_file, pem_keys, hmac_secret_file (or only [auth.issuers.introspection] for opaque tokens)",
            ));
        }
        if sources == 1 && f.algorithms.is_empty() {
            return Err(ConfigError::invalid(
                key("algorithms"),
                "is empty",
                "list the algorithms the issuer signs with, e.g. [\"ES256\"]",
            ));
        }
        let keys = if sources == 0 {
            None
        } else if let Some(url) = &f.jwks_url {
            let uri: Uri = url.parse().map_err(|_| {
                ConfigError::invalid(
                    key("jwks_url"),
                    format!("`{url}` is not a URL"),
                    "write the https:// URL of the JWKS document",
                )
            })?;
            if uri.scheme_str() != Some("https") || has_user_info(&uri) {
                return Err(ConfigError::invalid(
                    key("jwks_url"),
                    "must be an https:// URL without user info",
                    "keys fetched over plain HTTP could be forged in transit",
                ));
            }
            if f.jwks_refresh < Duration::from_secs(60)
                || f.jwks_min_refetch_interval < Duration::from_secs(1)
            {
                return Err(ConfigError::invalid(
                    key("jwks_refresh"),
                    "jwks_refresh under 1m or jwks_min_refetch_interval under 1s",
                    "keep the defaults (10m, 30s): a short interval hammers the IdP",
                ));
            }
            let mut c = JwksUrlConfig::new(uri);
            c.ca = f.jwks_ca.as_deref().map(resolve);
            c.refresh = f.jwks_refresh;
            c.min_refetch_interval = f.jwks_min_refetch_interval;
            c.cache_file = f.jwks_cache_file.as_deref().map(resolve);
            Some(KeySource::JwksUrl(c))
        } else if let Some(p) = &f.jwks_file {
            Some(KeySource::JwksFile(resolve(p)))
        } else if let Some(p) = &f.hmac_secret_file {
            Some(KeySource::HmacSecretFile(resolve(p)))
        } else {
            Some(KeySource::PemKeys(
                f.pem_keys.iter().map(|p| resolve(p)).collect(),
            ))
        };
        let hmac = algorithms.iter().any(|a| {
            matches!(
                a,
                jsonwebtoken::Algorithm::HS256
                    | jsonwebtoken::Algorithm::HS384
                    | jsonwebtoken::Algorithm::HS512
            )
        });
        if hmac != matches!(keys, Some(KeySource::HmacSecretFile(_)))
            || (hmac
                && algorithms.iter().any(|a| {
                    !matches!(
                        a,
                        jsonwebtoken::Algorithm::HS256
                            | jsonwebtoken::Algorithm::HS384
                            | jsonwebtoken::Algorithm::HS512
                    )
                }))
        {
            return Err(ConfigError::invalid(
                key("algorithms"),
                "HS* algorithms and hmac_secret_file must go together, without asymmetric algorithms",
                "an HMAC secret is never derived from a public key: use one or the other",
            ));
        }
        if let Some(c) = &f.organisation_claim
            && c.trim().is_empty()
        {
            return Err(ConfigError::invalid(
                key("organisation_claim"),
                "is empty",
                "name the claim that carries the organisation in this issuer's tokens, e.g. \"org_id\", or remove the key to use auth.organisation_claim",
            ));
        }
        let organisation_claim = f
            .organisation_claim
            .clone()
            .or_else(|| a.organisation_claim.clone());
        if let Some(orgs) = &f.organisations {
            if orgs.is_empty() {
                return Err(ConfigError::invalid(
                    key("organisations"),
                    "is empty, so the issuer could vouch for no token at all",
                    "list the organisations the issuer may vouch for, e.g. [\"partner-a\"], or remove the issuer",
                ));
            }
            if let Some(j) = orgs.iter().position(|o| o.trim().is_empty()) {
                return Err(ConfigError::invalid(
                    key(&format!("organisations[{j}]")),
                    "is empty",
                    "write the organisation exactly as the token's organisation claim carries it",
                ));
            }
            if organisation_claim.is_none() {
                return Err(ConfigError::invalid(
                    key("organisations"),
                    "is set but no claim names the organisation",
                    "set organisation_claim on this issuer (or auth.organisation_claim), e.g. \"org_id\"",
                ));
            }
        }
        issuers.push(IssuerSettings {
            authorization_server: f.authorization_server.unwrap_or_else(|| f.issuer.clone()),
            issuer: f.issuer,
            algorithms,
            leeway: f.leeway,
            max_token_bytes: f.max_token_bytes,
            keys,
            introspection,
            organisation_claim,
            organisations: f.organisations,
        });
    }
    let upstream_token = match a.upstream_token {
        None => None,
        Some(u) => {
            if u.lifetime < Duration::from_secs(1) || u.lifetime > Duration::from_secs(3600) {
                return Err(ConfigError::invalid(
                    "auth.upstream_token.lifetime",
                    format!(
                        "{} is outside 1s..=1h",
                        humantime::format_duration(u.lifetime)
                    ),
                    "keep the default 60s: the token only has to cover one request",
                ));
            }
            Some(UpstreamTokenSettings {
                signing_key: resolve(&u.signing_key),
                issuer: u
                    .issuer
                    .unwrap_or_else(|| public_url.to_string().trim_end_matches('/').to_owned()),
                key_id: u.key_id,
                lifetime: u.lifetime,
            })
        }
    };
    Ok(AuthSettings {
        issuers,
        identity_header_prefix: prefix,
        organisation_claim: a.organisation_claim,
        upstream_token,
    })
}

fn validate_certs(
    c: crate::config::file::CertsFile,
    resolve: &dyn Fn(&Path) -> PathBuf,
) -> Result<CertsSettings, ConfigError> {
    nonzero("certs.rescan_interval", c.rescan_interval)?;
    nonzero("certs.alert_interval", c.alert_interval)?;
    if c.critical_before > c.warn_before {
        return Err(ConfigError::invalid(
            "certs.critical_before",
            "is longer than certs.warn_before",
            "the critical threshold must come after the warning, e.g. warn_before = \"30d\", critical_before = \"7d\"",
        ));
    }
    let webhook = match c.webhook {
        None => None,
        Some(w) => {
            let url: Uri = w
                .url
                .parse()
                .ok()
                .filter(|u: &Uri| u.scheme_str() == Some("https") && u.host().is_some())
                .ok_or_else(|| {
                    ConfigError::invalid(
                        "certs.webhook.url",
                        format!("`{}` is not an https:// URL", w.url),
                        "alerts carry certificate details: send them over https, e.g. \"https://alerts.example.com/hooks/mcp-edge\"",
                    )
                })?;
            nonzero("certs.webhook.timeout", w.timeout)?;
            Some(WebhookSettings {
                url,
                ca: w.ca.as_deref().map(resolve),
                timeout: w.timeout,
            })
        }
    };
    if c.command.first().is_some_and(|p| p.trim().is_empty()) {
        return Err(ConfigError::invalid(
            "certs.command",
            "the program name is empty",
            "write the program and its arguments, e.g. [\"/usr/local/bin/page-oncall\", \"mcp-edge\"]",
        ));
    }
    Ok(CertsSettings {
        watch: c.watch,
        rescan_interval: c.rescan_interval,
        warn_before: c.warn_before,
        critical_before: c.critical_before,
        alert_interval: c.alert_interval,
        webhook,
        command: c.command,
    })
}

/// The introspection client of issuer `f`, checked like the rest of the config.
fn introspection_config(
    i: &crate::config::file::IntrospectionFile,
    f: &crate::config::file::IssuerFile,
    key: &dyn Fn(&str) -> String,
    resolve: &dyn Fn(&Path) -> PathBuf,
) -> Result<crate::auth::introspection::IntrospectionConfig, ConfigError> {
    use crate::auth::introspection::{ClientAuthMethod, IntrospectionConfig};
    let endpoint: Uri = i
        .endpoint
        .parse()
        .ok()
        .filter(|u: &Uri| u.scheme_str() == Some("https") && u.host().is_some() && !has_user_info(u))
        .ok_or_else(|| {
            ConfigError::invalid(
                key("introspection.endpoint"),
                format!("`{}` is not an https:// URL without user info", i.endpoint),
                "write the authorization server's introspection URL, e.g. \"https://as.example.com/oauth2/introspect\"",
            )
        })?;
    if i.client_id.trim().is_empty() {
        return Err(ConfigError::invalid(
            key("introspection.client_id"),
            "is empty",
            "set the client id the proxy was registered with at the authorization server",
        ));
    }
    let mut c = IntrospectionConfig::new(
        endpoint,
        i.client_id.clone(),
        resolve(&i.client_secret_file),
    );
    c.ca = i.ca.as_deref().map(resolve);
    c.auth_method = match i.auth_method {
        crate::config::file::IntrospectionAuthMethod::ClientSecretBasic => {
            ClientAuthMethod::ClientSecretBasic
        }
        crate::config::file::IntrospectionAuthMethod::ClientSecretPost => {
            ClientAuthMethod::ClientSecretPost
        }
    };
    c.expected_issuer = Some(f.issuer.clone());
    c.require_audience = i.require_audience;
    c.leeway = f.leeway;
    c.max_token_bytes = f.max_token_bytes;
    if let Some(d) = i.cache_max {
        c.cache_max = d;
    }
    if let Some(d) = i.negative_cache {
        c.negative_cache = d;
    }
    if let Some(d) = i.timeout {
        nonzero(&key("introspection.timeout"), d)?;
        c.timeout = d;
    }
    Ok(c)
}

/// Normalises `listener.allowed_hosts`, defaulting to the host of `public_url`.
fn validate_hosts(hosts: &[String], public_url: &Uri) -> Result<Vec<String>, ConfigError> {
    if hosts.is_empty() {
        return Ok(public_url
            .host()
            .map(|h| vec![h.to_ascii_lowercase()])
            .unwrap_or_default());
    }
    hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let h = h.trim().trim_end_matches('.').to_ascii_lowercase();
            let ipv6 = h.starts_with('[')
                && h.ends_with(']')
                && h[1..h.len() - 1].parse::<std::net::Ipv6Addr>().is_ok();
            if ipv6 || h.parse::<std::net::Ipv4Addr>().is_ok() || is_dns_name(&h) {
                Ok(h)
            } else {
                Err(ConfigError::invalid(
                    format!("listener.allowed_hosts[{i}]"),
                    format!("`{h}` is not a host name or IP address"),
                    "list bare host names without port, e.g. \"mcp.example.com\" or \"[::1]\"",
                ))
            }
        })
        .collect()
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

/// Whether `level` is a usable filter: `EnvFilter` reads a bare unknown word as a target name,
/// which would silently turn off all other logging, so bare words must be levels.
fn valid_log_filter(level: &str) -> Result<(), String> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    for directive in level.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        if !directive.contains('=') && !LEVELS.iter().any(|l| l.eq_ignore_ascii_case(directive)) {
            return Err(format!(
                "`{directive}` is neither a level nor `target=level`"
            ));
        }
    }
    tracing_subscriber::EnvFilter::try_new(level)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The per-address cap when none is configured: a quarter of the global cap, so at least
/// four addresses are needed to fill it, but never more than 256 (no single client needs
/// more, and with the default 10000 a quarter would still let 4 hosts lock everyone out).
fn default_per_ip(max_connections: usize) -> usize {
    (max_connections / 4).clamp(1, 256)
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

#[cfg(test)]
mod tests;
