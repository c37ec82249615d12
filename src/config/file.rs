//! The config file's shape, exactly as operators write it. Every table rejects unknown keys so
//! a typo is an error at load time rather than a silently ignored setting.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

mod limits;
mod metrics;
mod telemetry;

pub use crate::auth::identity::RequireAuth;
pub use crate::auth::mtls::ClientAuthMode;
pub use limits::{LimitStoreKind, LimitsFile, RouteLimitsFile, ToolLimitFile};
pub use metrics::MetricsFile;
pub use telemetry::{OtlpFile, TelemetryFile};

/// Top level of `mcp-edge.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// `[listener]`
    pub listener: ListenerFile,
    /// `[http]`
    #[serde(default)]
    pub http: HttpFile,
    /// `[sse]`
    #[serde(default)]
    pub sse: SseFile,
    /// `[shutdown]`
    #[serde(default)]
    pub shutdown: ShutdownFile,
    /// `[sessions]`: the key that seals session ids.
    #[serde(default)]
    pub sessions: SessionsFile,
    /// `[audit]`: the hash-chained log of MCP calls.
    pub audit: Option<AuditFile>,
    /// `[certs]`: reload on change and expiry alerts.
    #[serde(default)]
    pub certs: CertsFile,
    /// `[upstream]`: defaults for every route's upstream connections.
    #[serde(default)]
    pub upstream: UpstreamDefaultsFile,
    /// `[limits]`: rate and concurrency limits per caller, and where they are kept.
    #[serde(default)]
    pub limits: LimitsFile,
    /// `[admin]`
    pub admin: Option<AdminFile>,
    /// `[log]`
    #[serde(default)]
    pub log: LogFile,
    /// `[telemetry]`: OpenTelemetry trace export.
    #[serde(default)]
    pub telemetry: TelemetryFile,
    /// `[metrics]`: which series are recorded and how they are labelled.
    #[serde(default)]
    pub metrics: MetricsFile,
    /// `[auth]`
    #[serde(default)]
    pub auth: AuthFile,
    /// `[[routes]]`
    #[serde(default)]
    pub routes: Vec<RouteFile>,
}

/// `[listener]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerFile {
    /// IP:PORT to bind.
    pub bind: String,
    /// Base URL clients use.
    pub public_url: String,
    /// Host names clients may address (DNS-rebinding defence); default: `public_url`'s host.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Connection cap.
    #[serde(default = "defaults::max_connections")]
    pub max_connections: usize,
    /// Connection cap per client address; default derived from `max_connections`.
    pub max_connections_per_ip: Option<usize>,
    /// TLS handshake deadline.
    #[serde(default = "defaults::handshake_timeout", with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// TLS handshakes run at once; further connections wait for a slot.
    #[serde(default = "defaults::max_handshakes_in_flight")]
    pub max_handshakes_in_flight: usize,
    /// `[listener.tls]`
    pub tls: TlsFile,
}

/// `[listener.tls]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    /// Default certificate chain.
    pub cert: PathBuf,
    /// Default private key.
    pub key: PathBuf,
    /// `"1.2"` or `"1.3"`.
    #[serde(default = "defaults::min_version")]
    pub min_version: String,
    /// `[[listener.tls.sni]]`
    #[serde(default)]
    pub sni: Vec<SniCertFile>,
    /// Client certificates: `off`, `optional` or `required`.
    #[serde(default)]
    pub client_auth: ClientAuthMode,
    /// CA bundle that issues client certificates.
    pub client_ca: Option<PathBuf>,
    /// PEM CRLs for client certificates.
    #[serde(default)]
    pub client_crls: Vec<PathBuf>,
}

/// `[[listener.tls.sni]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SniCertFile {
    /// Names served by this certificate.
    pub names: Vec<String>,
    /// Certificate chain.
    pub cert: PathBuf,
    /// Private key.
    pub key: PathBuf,
}

/// `[http]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpFile {
    /// Request head deadline.
    #[serde(default = "defaults::header_read_timeout", with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// Request head size cap.
    #[serde(default = "defaults::max_header_bytes")]
    pub max_header_bytes: usize,
    /// Request header count cap.
    #[serde(default = "defaults::max_headers")]
    pub max_headers: usize,
    /// Request body size cap.
    #[serde(default = "defaults::max_request_body_bytes")]
    pub max_request_body_bytes: u64,
    /// HTTP/2 PING interval.
    #[serde(default = "defaults::h2_keepalive", with = "humantime_serde")]
    pub h2_keepalive_interval: Duration,
    /// HTTP/2 PING ack deadline.
    #[serde(default = "defaults::h2_keepalive", with = "humantime_serde")]
    pub h2_keepalive_timeout: Duration,
    /// HTTP/2 streams per connection.
    #[serde(default = "defaults::h2_max_concurrent_streams")]
    pub h2_max_concurrent_streams: u32,
    /// Deadline from accept to the first complete request head.
    #[serde(default = "defaults::first_request_timeout", with = "humantime_serde")]
    pub first_request_timeout: Duration,
    /// Time a connection with no request in progress is kept open.
    #[serde(
        default = "defaults::connection_idle_timeout",
        with = "humantime_serde"
    )]
    pub idle_timeout: Duration,
}

impl Default for HttpFile {
    fn default() -> Self {
        HttpFile {
            header_read_timeout: defaults::header_read_timeout(),
            max_header_bytes: defaults::max_header_bytes(),
            max_headers: defaults::max_headers(),
            max_request_body_bytes: defaults::max_request_body_bytes(),
            h2_keepalive_interval: defaults::h2_keepalive(),
            h2_keepalive_timeout: defaults::h2_keepalive(),
            h2_max_concurrent_streams: defaults::h2_max_concurrent_streams(),
            first_request_timeout: defaults::first_request_timeout(),
            idle_timeout: defaults::connection_idle_timeout(),
        }
    }
}

/// `[sse]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SseFile {
    /// Silence before a heartbeat comment.
    #[serde(default = "defaults::heartbeat_interval", with = "humantime_serde")]
    pub heartbeat_interval: Duration,
    /// Upstream silence that ends a stream.
    #[serde(default = "defaults::idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Longest life of a GET or `subscriptions/listen` stream; unset: no limit.
    #[serde(default, with = "humantime_serde")]
    pub max_stream_lifetime: Option<Duration>,
    /// Longest time a write to a client may stay blocked before its connection is closed.
    #[serde(default = "defaults::client_write_timeout", with = "humantime_serde")]
    pub client_write_timeout: Duration,
}

impl Default for SseFile {
    fn default() -> Self {
        SseFile {
            heartbeat_interval: defaults::heartbeat_interval(),
            idle_timeout: defaults::idle_timeout(),
            max_stream_lifetime: None,
            client_write_timeout: defaults::client_write_timeout(),
        }
    }
}

/// `[shutdown]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownFile {
    /// Drain deadline.
    #[serde(default = "defaults::drain_timeout", with = "humantime_serde")]
    pub drain_timeout: Duration,
}

impl Default for ShutdownFile {
    fn default() -> Self {
        ShutdownFile {
            drain_timeout: defaults::drain_timeout(),
        }
    }
}

/// `[upstream]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamDefaultsFile {
    /// TCP connect deadline.
    #[serde(default = "defaults::connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Response head deadline.
    #[serde(
        default = "defaults::response_header_timeout",
        with = "humantime_serde"
    )]
    pub response_header_timeout: Duration,
    /// Longest upstream silence inside a non-SSE response body.
    #[serde(default = "defaults::body_idle_timeout", with = "humantime_serde")]
    pub body_idle_timeout: Duration,
    /// Idle pooled connection lifetime.
    #[serde(default = "defaults::pool_idle_timeout", with = "humantime_serde")]
    pub pool_idle_timeout: Duration,
    /// Idle pooled connections per host.
    #[serde(default = "defaults::pool_max_idle_per_host")]
    pub pool_max_idle_per_host: usize,
    /// `[upstream.circuit]`: circuit breaker and passive ejection of every endpoint.
    #[serde(default)]
    pub circuit: CircuitFile,
    /// `[upstream.retry]`: safe retries and their budget.
    #[serde(default)]
    pub retry: RetryFile,
    /// `[upstream.health_check]`: active health checks (off unless enabled).
    #[serde(default)]
    pub health_check: HealthCheckFile,
}

impl Default for UpstreamDefaultsFile {
    fn default() -> Self {
        UpstreamDefaultsFile {
            connect_timeout: defaults::connect_timeout(),
            response_header_timeout: defaults::response_header_timeout(),
            body_idle_timeout: defaults::body_idle_timeout(),
            pool_idle_timeout: defaults::pool_idle_timeout(),
            pool_max_idle_per_host: defaults::pool_max_idle_per_host(),
            circuit: CircuitFile::default(),
            retry: RetryFile::default(),
            health_check: HealthCheckFile::default(),
        }
    }
}

/// `[upstream.circuit]` and `[routes.circuit]`. Every key is optional: a route's table
/// overrides `[upstream.circuit]` key by key, which overrides the built-in defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitFile {
    /// Consecutive failures that open an endpoint's circuit (0: never).
    pub failures: Option<u32>,
    /// First open period.
    #[serde(default, with = "humantime_serde")]
    pub open_for: Option<Duration>,
    /// Longest open period (each reopening doubles it).
    #[serde(default, with = "humantime_serde")]
    pub max_open_for: Option<Duration>,
    /// Probe requests let through at once while half-open.
    pub half_open_requests: Option<u32>,
}

/// `[upstream.retry]` and `[routes.retry]`, merged like [`CircuitFile`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryFile {
    /// Most retries of one request (0: off).
    pub max_retries: Option<u32>,
    /// Retries as a share of requests over 10 s, in percent.
    pub budget_percent: Option<u32>,
    /// Retries allowed per second regardless of the share.
    pub min_per_second: Option<u32>,
    /// Base of the jittered exponential backoff.
    #[serde(default, with = "humantime_serde")]
    pub backoff: Option<Duration>,
    /// Longest backoff.
    #[serde(default, with = "humantime_serde")]
    pub max_backoff: Option<Duration>,
}

/// `[upstream.health_check]` and `[routes.health_check]`, merged like [`CircuitFile`].
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckFile {
    /// Probe the endpoints (default: false).
    pub enabled: Option<bool>,
    /// Path probed on each endpoint's host, e.g. `/healthz` (required when enabled).
    pub path: Option<String>,
    /// Time between probes.
    #[serde(default, with = "humantime_serde")]
    pub interval: Option<Duration>,
    /// Longest wait for a probe's answer.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Passing probes in a row that mark an endpoint healthy.
    pub healthy_threshold: Option<u32>,
    /// Failing probes in a row that mark an endpoint unhealthy.
    pub unhealthy_threshold: Option<u32>,
}

/// `[admin]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    /// IP:PORT to bind.
    pub bind: String,
}

/// `[log]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogFile {
    /// Output format.
    #[serde(default)]
    pub format: LogFormat,
    /// Default filter.
    #[serde(default = "defaults::log_level")]
    pub level: String,
}

impl Default for LogFile {
    fn default() -> Self {
        LogFile {
            format: LogFormat::default(),
            level: defaults::log_level(),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line.
    #[default]
    Json,
    /// Human-readable lines.
    Text,
}

/// `[[routes]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteFile {
    /// Public path.
    pub path: String,
    /// One upstream URL.
    pub upstream: Option<String>,
    /// Several upstream URLs (round-robin with session affinity).
    pub upstreams: Option<Vec<String>>,
    /// MCP transport.
    #[serde(default)]
    pub transport: Transport,
    /// Browser origins allowed to call this route (`"null"` allows `Origin: null`).
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Refuse requests that carry no `Origin` (browser-only routes).
    #[serde(default)]
    pub require_origin: bool,
    /// Pass a validated `Origin` on to the backend (default: removed).
    #[serde(default)]
    pub forward_origin: bool,
    /// `[routes.upstream_tls]`
    pub upstream_tls: Option<UpstreamTlsFile>,
    /// `[routes.auth]`
    #[serde(default)]
    pub auth: RouteAuthFile,
    /// `[routes.policy]`: MCP methods, tools and resources per principal.
    pub policy: Option<PolicyFile>,
    /// Audience of the identity token the proxy signs for this route's backend.
    pub upstream_token_audience: Option<String>,
    /// `[routes.limits]`: this route's limits over the `[limits]` defaults.
    pub limits: Option<RouteLimitsFile>,
    /// `[routes.circuit]`: overrides `[upstream.circuit]` for this route, key by key.
    pub circuit: Option<CircuitFile>,
    /// `[routes.retry]`: overrides `[upstream.retry]` for this route, key by key.
    pub retry: Option<RetryFile>,
    /// `[routes.health_check]`: overrides `[upstream.health_check]` for this route, key by key.
    pub health_check: Option<HealthCheckFile>,
}

/// `[certs]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertsFile {
    /// Watch certificate, key, CA and CRL files and reload when they change.
    #[serde(default = "defaults::yes")]
    pub watch: bool,
    /// Reload check even without change events (missed events, network filesystems).
    #[serde(default = "defaults::rescan_interval", with = "humantime_serde")]
    pub rescan_interval: Duration,
    /// Warning threshold before a certificate expires (or a CRL's nextUpdate passes).
    #[serde(default = "defaults::warn_before", with = "humantime_serde")]
    pub warn_before: Duration,
    /// Critical threshold.
    #[serde(default = "defaults::critical_before", with = "humantime_serde")]
    pub critical_before: Duration,
    /// Least time between two alerts about the same certificate at the same level.
    #[serde(default = "defaults::alert_interval", with = "humantime_serde")]
    pub alert_interval: Duration,
    /// `[certs.webhook]`: where alerts are POSTed as JSON.
    pub webhook: Option<WebhookFile>,
    /// Command run for each alert (program and arguments; details in environment variables).
    #[serde(default)]
    pub command: Vec<String>,
}

impl Default for CertsFile {
    fn default() -> Self {
        CertsFile {
            watch: true,
            rescan_interval: defaults::rescan_interval(),
            warn_before: defaults::warn_before(),
            critical_before: defaults::critical_before(),
            alert_interval: defaults::alert_interval(),
            webhook: None,
            command: Vec::new(),
        }
    }
}

/// `[certs.webhook]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookFile {
    /// `https://` URL.
    pub url: String,
    /// CA bundle for the receiver (default: the system bundle file).
    pub ca: Option<PathBuf>,
    /// Deadline of one delivery.
    #[serde(default = "defaults::webhook_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

/// `[audit]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditFile {
    /// JSON-lines file the calls are appended to.
    pub file: PathBuf,
    /// 32-byte key (raw or base64): lines then carry an HMAC instead of a plain hash.
    pub hmac_key_file: Option<PathBuf>,
    /// `batch` (fdatasync after every write batch, default) or `never`.
    #[serde(default)]
    pub fsync: AuditFsync,
}

/// When the audit writer syncs to disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditFsync {
    /// After every batch.
    #[default]
    Batch,
    /// Left to the OS.
    Never,
}

/// `[sessions]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionsFile {
    /// 32-byte key (raw or base64) shared by every instance; default: random per process.
    pub key_file: Option<PathBuf>,
    /// Keys that still open ids sealed before a rotation.
    #[serde(default)]
    pub previous_key_files: Vec<PathBuf>,
    /// How long a session id stays valid after the session opened.
    #[serde(default = "defaults::session_max_lifetime", with = "humantime_serde")]
    pub max_lifetime: Duration,
}

impl Default for SessionsFile {
    fn default() -> Self {
        SessionsFile {
            key_file: None,
            previous_key_files: Vec::new(),
            max_lifetime: defaults::session_max_lifetime(),
        }
    }
}

/// `[routes.policy]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// Allowed JSON-RPC method patterns (default: all).
    pub methods: Option<Vec<String>>,
    /// Extra scopes per method pattern.
    #[serde(default)]
    pub method_scopes: std::collections::BTreeMap<String, Vec<String>>,
    /// Extra scopes per tool pattern.
    #[serde(default)]
    pub tool_scopes: std::collections::BTreeMap<String, Vec<String>>,
    /// `[[routes.policy.rules]]`
    #[serde(default)]
    pub rules: Vec<RuleFile>,
}

/// `[[routes.policy.rules]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    /// Name for audit reasons (default `rules[N]`).
    pub name: Option<String>,
    /// Who the rule applies to; all conditions must hold (empty: everyone admitted).
    #[serde(default, rename = "match")]
    pub when: MatchFile,
    /// Tool patterns granted.
    #[serde(default)]
    pub allow_tools: Vec<String>,
    /// Tool patterns denied whatever else grants them.
    #[serde(default)]
    pub deny_tools: Vec<String>,
    /// Resource URI prefixes readable; `{org}` and `{sub}` are filled from the principal.
    #[serde(default)]
    pub resource_prefixes: Vec<String>,
}

/// `match = { .. }` of a policy rule.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchFile {
    /// Token `iss` pattern.
    pub issuer: Option<String>,
    /// Token `sub` pattern.
    pub subject: Option<String>,
    /// Token `client_id` pattern.
    pub client_id: Option<String>,
    /// Organisation pattern (from `auth.organisation_claim`).
    pub organisation: Option<String>,
    /// Scopes the token must all carry.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Claim name → pattern or list of patterns.
    #[serde(default)]
    pub claims: std::collections::BTreeMap<String, OneOrMany>,
    /// Client certificate URI SAN pattern (e.g. SPIFFE id).
    pub cert_uri: Option<String>,
    /// Client certificate DNS SAN pattern.
    pub cert_dns: Option<String>,
    /// Client certificate subject DN pattern.
    pub cert_subject: Option<String>,
    /// Client certificate SHA-256 fingerprint (hex, colons allowed).
    pub cert_sha256: Option<String>,
}

/// A string or a list of strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One value.
    One(String),
    /// Several values.
    Many(Vec<String>),
}

/// `[routes.auth]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteAuthFile {
    /// What a request must prove.
    #[serde(default)]
    pub require: RequireAuth,
    /// Issuers whose tokens the route accepts (default, and only allowed with a single
    /// `[[auth.issuers]]`: that issuer).
    #[serde(default)]
    pub issuers: Vec<String>,
    /// Scopes every token must carry.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Tokens must be bound to the client certificate (RFC 8705 `cnf.x5t#S256`).
    #[serde(default)]
    pub certificate_bound_tokens: bool,
}

/// `[auth]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthFile {
    /// `[[auth.issuers]]`
    #[serde(default)]
    pub issuers: Vec<IssuerFile>,
    /// Prefix of the identity headers sent upstream (client copies are always removed).
    #[serde(default = "defaults::identity_header_prefix")]
    pub identity_header_prefix: String,
    /// Token claim naming the principal's organisation (audit log, `{org}` in policies).
    pub organisation_claim: Option<String>,
    /// `[auth.upstream_token]`: short-lived identity tokens the proxy signs for backends.
    pub upstream_token: Option<UpstreamTokenFile>,
    /// Most verified JWTs remembered between requests (0: verify every token every time).
    #[serde(default = "defaults::token_cache_entries")]
    pub token_cache_entries: usize,
}

/// `[auth.upstream_token]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTokenFile {
    /// PKCS#8 PEM private key (P-256, P-384 or Ed25519).
    pub signing_key: PathBuf,
    /// `iss` of the tokens (default: `listener.public_url`).
    pub issuer: Option<String>,
    /// `kid` (default: the key's RFC 7638 thumbprint).
    pub key_id: Option<String>,
    /// Token lifetime.
    #[serde(
        default = "defaults::upstream_token_lifetime",
        with = "humantime_serde"
    )]
    pub lifetime: Duration,
}

impl Default for AuthFile {
    fn default() -> Self {
        AuthFile {
            issuers: Vec::new(),
            identity_header_prefix: defaults::identity_header_prefix(),
            organisation_claim: None,
            upstream_token: None,
            token_cache_entries: defaults::token_cache_entries(),
        }
    }
}

/// `[[auth.issuers]]`: one token issuer and where its verification keys come from.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerFile {
    /// Exact `iss` value.
    pub issuer: String,
    /// Accepted signature algorithms (e.g. `["ES256", "RS256"]`); optional with introspection only.
    #[serde(default)]
    pub algorithms: Vec<String>,
    /// Clock skew tolerated on `exp` / `nbf`.
    #[serde(default = "defaults::leeway", with = "humantime_serde")]
    pub leeway: Duration,
    /// Largest accepted token.
    #[serde(default = "defaults::max_token_bytes")]
    pub max_token_bytes: usize,
    /// Authorization server advertised in the protected resource metadata (default: `issuer`).
    pub authorization_server: Option<String>,
    /// Remote JWKS (https).
    pub jwks_url: Option<String>,
    /// CA bundle for `jwks_url` (default: the system bundle file).
    pub jwks_ca: Option<PathBuf>,
    /// Scheduled JWKS refresh.
    #[serde(default = "defaults::jwks_refresh", with = "humantime_serde")]
    pub jwks_refresh: Duration,
    /// Least time between fetches caused by unknown key ids.
    #[serde(default = "defaults::jwks_min_refetch", with = "humantime_serde")]
    pub jwks_min_refetch_interval: Duration,
    /// Last good JWKS persisted here and used when the IdP is down at start.
    pub jwks_cache_file: Option<PathBuf>,
    /// JWKS document on disk.
    pub jwks_file: Option<PathBuf>,
    /// PEM public keys.
    #[serde(default)]
    pub pem_keys: Vec<PathBuf>,
    /// Shared secret for HS* algorithms.
    pub hmac_secret_file: Option<PathBuf>,
    /// Claim naming the organisation in this issuer's tokens (default: `auth.organisation_claim`).
    pub organisation_claim: Option<String>,
    /// The only organisations this issuer may vouch for (default: any).
    pub organisations: Option<Vec<String>>,
    /// `[auth.issuers.introspection]`: RFC 7662 for opaque tokens.
    pub introspection: Option<IntrospectionFile>,
}

/// `[auth.issuers.introspection]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntrospectionFile {
    /// `https://` URL of the introspection endpoint.
    pub endpoint: String,
    /// The proxy's client id at the authorization server.
    pub client_id: String,
    /// File holding the client secret.
    pub client_secret_file: PathBuf,
    /// CA bundle for the endpoint (default: the system bundle file).
    pub ca: Option<PathBuf>,
    /// `client_secret_basic` (default) or `client_secret_post`.
    #[serde(default)]
    pub auth_method: IntrospectionAuthMethod,
    /// Refuse active tokens whose answer has no `aud`.
    #[serde(default = "defaults::yes")]
    pub require_audience: bool,
    /// Longest time an active answer is cached.
    #[serde(default, with = "humantime_serde")]
    pub cache_max: Option<Duration>,
    /// How long an inactive answer is cached.
    #[serde(default, with = "humantime_serde")]
    pub negative_cache: Option<Duration>,
    /// Deadline of one call.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
}

/// How the proxy authenticates to the introspection endpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntrospectionAuthMethod {
    /// HTTP Basic.
    #[default]
    ClientSecretBasic,
    /// Form body.
    ClientSecretPost,
}

/// `[routes.upstream_tls]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsFile {
    /// CA bundle that verifies the upstream.
    pub ca: PathBuf,
    /// Client certificate to present.
    pub client_cert: Option<PathBuf>,
    /// Key for the client certificate.
    pub client_key: Option<PathBuf>,
}

/// The MCP transport a route speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    /// Streamable HTTP (2025-03-26 and later, including the stateless 2026-07-28 era).
    #[default]
    StreamableHttp,
    /// Legacy HTTP+SSE (2024-11-05): `GET` opens the stream, POSTs go to the announced endpoint.
    Sse,
}

mod defaults {
    use std::time::Duration;

    pub fn max_connections() -> usize {
        10_000
    }
    pub fn handshake_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn min_version() -> String {
        "1.2".to_owned()
    }
    pub fn header_read_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub fn max_header_bytes() -> usize {
        64 * 1024
    }
    pub fn max_headers() -> usize {
        100
    }
    pub fn max_request_body_bytes() -> u64 {
        4 * 1024 * 1024
    }
    pub fn h2_keepalive() -> Duration {
        Duration::from_secs(20)
    }
    pub fn h2_max_concurrent_streams() -> u32 {
        200
    }
    pub fn first_request_timeout() -> Duration {
        Duration::from_secs(15)
    }
    pub fn connection_idle_timeout() -> Duration {
        Duration::from_secs(60)
    }
    pub fn heartbeat_interval() -> Duration {
        Duration::from_secs(15)
    }
    pub fn idle_timeout() -> Duration {
        Duration::from_secs(30 * 60)
    }
    pub fn client_write_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub fn max_handshakes_in_flight() -> usize {
        // A handshake costs one signature and a few tens of KiB; 256 at once keeps a 2-core
        // host responsive while still far above what legitimate reconnect bursts need.
        256
    }
    pub fn drain_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub fn connect_timeout() -> Duration {
        Duration::from_secs(5)
    }
    pub fn response_header_timeout() -> Duration {
        Duration::from_secs(60)
    }
    pub fn body_idle_timeout() -> Duration {
        Duration::from_secs(60)
    }
    pub fn pool_idle_timeout() -> Duration {
        Duration::from_secs(90)
    }
    pub fn pool_max_idle_per_host() -> usize {
        // An h2 client may run 200 streams on one connection; with fewer idle upstream
        // connections than peak concurrency, the excess is reconnected per request
        // (measured: h2 throughput halves at 32). Idle ones still expire after 90 s.
        512
    }
    pub fn session_max_lifetime() -> Duration {
        Duration::from_secs(24 * 3600)
    }
    pub fn token_cache_entries() -> usize {
        crate::auth::token_cache::DEFAULT_ENTRIES
    }

    pub fn identity_header_prefix() -> String {
        "x-mcp-edge-".to_owned()
    }
    pub fn leeway() -> Duration {
        Duration::from_secs(60)
    }
    pub fn max_token_bytes() -> usize {
        8 * 1024
    }
    pub fn jwks_refresh() -> Duration {
        Duration::from_secs(600)
    }
    pub fn jwks_min_refetch() -> Duration {
        Duration::from_secs(30)
    }
    pub fn upstream_token_lifetime() -> Duration {
        Duration::from_secs(60)
    }
    pub fn rescan_interval() -> Duration {
        Duration::from_secs(300)
    }
    pub fn warn_before() -> Duration {
        Duration::from_secs(30 * 86_400)
    }
    pub fn critical_before() -> Duration {
        Duration::from_secs(7 * 86_400)
    }
    pub fn alert_interval() -> Duration {
        Duration::from_secs(86_400)
    }
    pub fn webhook_timeout() -> Duration {
        Duration::from_secs(10)
    }
    pub fn yes() -> bool {
        true
    }
    pub fn log_level() -> String {
        "info".to_owned()
    }
}
