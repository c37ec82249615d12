//! The upstream side of a route: a pooled HTTP(S) client, the route's endpoints, round-robin
//! selection, and session affinity.
//!
//! Affinity is carried in the session id itself rather than in a table: the proxy prefixes the
//! backend's `Mcp-Session-Id` with a short tag naming the endpoint that issued it. Any proxy
//! instance can then route the session without shared memory, and reordering endpoints in the
//! config does not break live sessions because the tag is derived from the endpoint's URL.
//!
//! Each endpoint carries its health ([`breaker`]: circuit breaker and passive ejection, and
//! the verdict of the active checks of [`health`]); round-robin skips endpoints that are not
//! available, and [`Upstreams::send`] retries only what [`retry`] calls safe. The health state
//! lives in the proxy's [`HealthRegistry`] so that it survives reloads.

pub mod breaker;
pub mod health;
pub mod pool;
pub mod registry;
pub mod retry;
mod send;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{HeaderValue, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::certs::{self, CertError};
use crate::http::Body;

pub use breaker::{CircuitSettings, CircuitState, EndpointHealth, EndpointSnapshot};
pub use health::HealthCheckSettings;
pub use registry::HealthRegistry;
pub use retry::RetrySettings;
pub use send::{Outbound, Sent};

/// The pooled client every route (and its health checks) uses.
pub(crate) type Client =
    hyper_util::client::legacy::Client<HttpsConnector<pool::Counting<HttpConnector>>, Body>;

/// One upstream endpoint of a route.
#[derive(Debug)]
pub struct Endpoint {
    /// Full upstream URL of the MCP endpoint.
    pub uri: Uri,
    /// `Host` value sent upstream (the endpoint's authority).
    pub host: HeaderValue,
    /// Stable affinity tag: 8 hex digits derived from the URL.
    pub tag: [u8; 8],
    /// Circuit, ejection and health-check state (shared across reloads by the registry).
    pub health: Arc<EndpointHealth>,
}

/// Why an upstream client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamSetupError {
    /// CA or client certificate unusable.
    #[error(transparent)]
    Cert(#[from] CertError),
    /// rustls rejected the client configuration.
    #[error("upstream TLS configuration rejected: {0}")]
    Rustls(#[from] rustls::Error),
    /// Two endpoints hash to the same affinity tag (astronomically unlikely, but checked).
    #[error(
        "upstreams {0} and {1} share an affinity tag; change one URL (e.g. add a trailing path segment)"
    )]
    TagCollision(String, String),
}

/// Client, endpoints and selection state for one route.
pub struct Upstreams {
    client: Client,
    endpoints: Vec<Endpoint>,
    next: AtomicUsize,
    settings: UpstreamSettings,
    /// The route's retry budget (kept across reloads by the registry).
    budget: Arc<retry::RetryBudget>,
    /// Connections the pool made and holds.
    pool: Arc<pool::PoolCounts>,
}

impl std::fmt::Debug for Upstreams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstreams")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

impl Upstreams {
    /// Connections this pool holds now, and has made since it was built.
    pub fn pool_counts(&self) -> (u64, u64) {
        (self.pool.open(), self.pool.opened())
    }

    /// Builds the pooled client and endpoint list for `route`.
    pub fn new(uris: &[Uri], settings: &UpstreamSettings) -> Result<Self, UpstreamSetupError> {
        let pool = Arc::new(pool::PoolCounts::default());
        let client = build_client(settings, pool.clone())?;
        let mut endpoints: Vec<Endpoint> = Vec::with_capacity(uris.len());
        for uri in uris {
            let tag = affinity_tag(uri);
            if let Some(other) = endpoints.iter().find(|e| e.tag == tag) {
                return Err(UpstreamSetupError::TagCollision(
                    other.uri.to_string(),
                    uri.to_string(),
                ));
            }
            let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
            endpoints.push(Endpoint {
                uri: uri.clone(),
                // Validated as part of a parsed URI, so always a legal header value.
                host: HeaderValue::from_str(authority)
                    .unwrap_or_else(|_| HeaderValue::from_static("localhost")),
                tag,
                health: Arc::new(EndpointHealth::new(uri)),
            });
        }
        Ok(Upstreams {
            client,
            endpoints,
            next: AtomicUsize::new(0),
            settings: settings.clone(),
            budget: Arc::default(),
            pool,
        })
    }

    /// The endpoints, in configured order.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// Next available endpoint in round-robin order (healthy, circuit not open). When none is
    /// available, the plain round-robin choice: its circuit then answers 503 without
    /// contacting it, rather than the proxy guessing which dead endpoint to try.
    pub fn pick(&self) -> usize {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.endpoints.len();
        (0..n)
            .map(|k| start.wrapping_add(k) % n)
            .find(|&i| self.endpoints[i].health.available(&self.settings.circuit))
            .unwrap_or(start % n)
    }

    /// The next available endpoint that is not in `tried`, for a retry.
    fn pick_excluding(&self, tried: &[usize]) -> Option<usize> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.endpoints.len();
        (0..n).map(|k| start.wrapping_add(k) % n).find(|i| {
            !tried.contains(i) && self.endpoints[*i].health.available(&self.settings.circuit)
        })
    }

    /// The endpoint with affinity tag `tag` (from a sealed session id).
    pub fn by_tag(&self, tag: &[u8; 8]) -> Option<usize> {
        self.endpoints.iter().position(|e| e.tag == *tag)
    }

    /// Whether sessions pinned to endpoint `i` are still served (not ejected, not unhealthy).
    pub fn serves_sessions(&self, i: usize) -> bool {
        self.endpoints
            .get(i)
            .is_some_and(|e| e.health.serves_sessions())
    }

    /// Reports that the answer of endpoint `i`, whose head was relayed, failed in its body (a
    /// stream that died mid-answer); counts toward its circuit. For the SSE relay.
    pub fn report_body_failure(&self, i: usize) {
        if let Some(e) = self.endpoints.get(i) {
            e.health.report_body_failure(&self.settings.circuit);
        }
    }

    /// The route's upstream settings.
    pub fn settings(&self) -> &UpstreamSettings {
        &self.settings
    }
}

/// Why an upstream request produced no response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// Connect or response head deadline passed.
    Timeout,
    /// The endpoint's circuit is open (or it is unhealthy): nothing was sent.
    CircuitOpen {
        /// How long until the circuit lets a request through again.
        retry_after: Duration,
    },
    /// Connection or TLS failed, or the upstream closed the connection.
    Unavailable,
    /// The client's streamed request body went over the configured limit.
    BodyTooLarge,
}

impl SendError {
    /// Label for spans (`error.type` of the upstream call).
    pub fn kind(&self) -> &'static str {
        match self {
            SendError::Timeout => "upstream_timeout",
            SendError::CircuitOpen { .. } => "upstream_circuit_open",
            SendError::Unavailable => "upstream_unavailable",
            SendError::BodyTooLarge => "body_too_large",
        }
    }
}

fn build_client(
    settings: &UpstreamSettings,
    counts: Arc<pool::PoolCounts>,
) -> Result<Client, UpstreamSetupError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?;
    let tls = match &settings.tls {
        Some(t) => {
            let roots = certs::load_ca_bundle(&t.ca)?;
            let b = builder.with_root_certificates(roots);
            match (&t.client_cert, &t.client_key) {
                (Some(cert), Some(key)) => {
                    let pair = certs::load_pair(cert, key)?;
                    b.with_client_auth_cert(
                        pair.certified.cert.clone(),
                        certs::read_private_key(key)?,
                    )?
                }
                _ => b.with_no_client_auth(),
            }
        }
        // Plain-HTTP routes never use TLS; an empty trust store makes any https:// slip fail closed.
        None => builder
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth(),
    };
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(settings.connect_timeout));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(pool::Counting::new(http, counts));
    Ok(
        hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(settings.pool_idle_timeout)
            .pool_max_idle_per_host(settings.pool_max_idle_per_host)
            .build(connector),
    )
}

/// 8 lower-case hex digits of FNV-1a over the URL: stable across processes and restarts,
/// unlike `std`'s randomly seeded hasher.
fn affinity_tag(uri: &Uri) -> [u8; 8] {
    let mut h: u32 = 0x811c_9dc5;
    for b in uri.to_string().bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    let mut out = [0u8; 8];
    for (i, slot) in out.iter_mut().enumerate() {
        let nibble = (h >> (28 - 4 * i)) & 0xf;
        *slot = b"0123456789abcdef"[nibble as usize];
    }
    out
}

fn causes<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(e), |err| err.source())
}

fn has_cause<T: std::error::Error + 'static>(e: &(dyn std::error::Error + 'static)) -> bool {
    causes(e).any(|err| err.is::<T>())
}

fn has_io_kind(e: &(dyn std::error::Error + 'static), kind: std::io::ErrorKind) -> bool {
    causes(e).any(|err| {
        err.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == kind)
    })
}

/// Renders an error with all its causes, for operators.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    causes(e)
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
}

/// Settings for the connections a route makes to its upstreams.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Time allowed until the upstream's response head arrives.
    pub response_header_timeout: Duration,
    /// Longest upstream silence inside a non-SSE response body before it is aborted.
    pub body_idle_timeout: Duration,
    /// Idle pooled connections are closed after this long.
    pub pool_idle_timeout: Duration,
    /// Idle pooled connections kept per upstream host.
    pub pool_max_idle_per_host: usize,
    /// TLS settings for `https://` upstreams.
    pub tls: Option<UpstreamTls>,
    /// Circuit breaker (and passive ejection) of each endpoint.
    pub circuit: CircuitSettings,
    /// Safe retries and their budget.
    pub retry: RetrySettings,
    /// Active health check of each endpoint; `None`: off.
    pub health_check: Option<HealthCheckSettings>,
}

/// TLS settings for HTTPS upstreams.
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    /// CA bundle (PEM) used to verify the upstream; required for `https://` upstreams.
    pub ca: PathBuf,
    /// Client certificate presented to the upstream (PEM), with `client_key`.
    pub client_cert: Option<PathBuf>,
    /// Private key for `client_cert`.
    pub client_key: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_is_stable_hex() {
        let uri: Uri = "http://127.0.0.1:9000/mcp".parse().unwrap();
        let a = affinity_tag(&uri);
        assert_eq!(a, affinity_tag(&uri));
        assert!(a.iter().all(|b| b.is_ascii_hexdigit()));
        let other: Uri = "http://127.0.0.1:9001/mcp".parse().unwrap();
        assert_ne!(a, affinity_tag(&other));
    }
}
