//! Opaque OAuth access tokens: RFC 7662 token introspection.
//!
//! For issuers that do not issue JWTs, an [`Introspector`] asks the authorization server's
//! introspection endpoint about each token and turns an `active` answer into the same
//! [`Claims`] a JWT yields, so route policy treats both alike.
//!
//! - **The call**: `POST` to an `https://` endpoint (never plain HTTP, never a URL taken from a
//!   token), `application/x-www-form-urlencoded` body `token=…&token_type_hint=access_token`,
//!   with client authentication `client_secret_basic` (RFC 6749 §2.3.1: id and secret
//!   form-encoded, then Basic) or `client_secret_post`. The secret is read from a file at
//!   construction (trailing line breaks removed), kept out of `Debug` output, sent as a
//!   sensitive header value, and never logged. The HTTPS client trusts only the configured CA
//!   bundle, or the system bundle when none is set; redirects are not followed; the whole
//!   exchange (queueing, connect, TLS, answer, body) has one deadline; the body is capped.
//! - **The answer**: `active: false` → [`IntrospectionError::Inactive`] (401 `invalid_token`).
//!   `active: true` → `exp` (if present; beyond the leeway → expired), `nbf`, `iss` (must equal
//!   `expected_issuer` when both are present), and `aud`: when present it must contain the
//!   route's resource URI compared in RFC 8707 canonical form ([`canonical_resource`]); when
//!   absent the token is refused unless `require_audience` is off (many authorization servers
//!   omit `aud` from introspection answers; without it a token meant for another resource
//!   would be accepted here, so turning the check off is an explicit decision).
//! - **Failures never succeed**: endpoint unreachable, TLS failure, timeout, any status other
//!   than 200 (including the endpoint refusing the proxy's own client credentials), a body
//!   over the cap, not JSON, or members of the wrong type → [`IntrospectionError::Unavailable`]
//!   (503). These are logged (endpoint, client id, reason: never the token or the secret) and
//!   not cached.
//! - **Cache**: keyed by the SHA-256 of the token (raw tokens are never stored beyond the one
//!   call). Active answers are kept until the token's `exp` or `cache_max`, whichever comes
//!   first; inactive answers for `negative_cache` (absorbs floods of the same bad token).
//!   Route-specific checks (`aud`, and the time checks) run on every use, so one cached answer
//!   serves every route. At most `cache_entries` answers; when full, expired entries go first,
//!   then the ones closest to expiry. Concurrent requests with the same token share one call
//!   (single-flight); the call runs in its own task, so a client hanging up does not cancel it
//!   for the others. At most `max_in_flight` calls run at once (a flood of distinct tokens
//!   queues rather than hammering the authorization server; queueing counts toward the
//!   deadline).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{HeaderValue, Uri};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Map, Value};
use tokio::sync::{Semaphore, watch};
use tracing::Instrument as _;

use super::jwks::{self, KeySourceError};
use super::jwt::{Claims, DEFAULT_LEEWAY, DEFAULT_MAX_TOKEN_BYTES, canonical_resource};
use crate::certs::{self, CertError};

/// Default longest time an active answer is relied on.
pub const DEFAULT_CACHE_MAX: Duration = Duration::from_secs(60);
/// Default time an inactive answer is remembered.
pub const DEFAULT_NEGATIVE_CACHE: Duration = Duration::from_secs(10);
/// Default maximum number of cached answers.
pub const DEFAULT_CACHE_ENTRIES: usize = 10_000;
/// Default deadline for one introspection call (queueing, connect, TLS, answer and body).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default cap on an introspection response body.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024;
/// Default maximum number of concurrent calls to the introspection endpoint.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 64;

/// How the proxy authenticates to the introspection endpoint (RFC 6749 §2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAuthMethod {
    /// `Authorization: Basic base64(urlencode(client_id) ":" urlencode(secret))`.
    #[default]
    ClientSecretBasic,
    /// `client_id` and `client_secret` in the form body.
    ClientSecretPost,
}

impl ClientAuthMethod {
    /// The RFC 7591 name: `client_secret_basic` or `client_secret_post`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ClientAuthMethod::ClientSecretBasic => "client_secret_basic",
            ClientAuthMethod::ClientSecretPost => "client_secret_post",
        }
    }
}

/// Settings of one introspection endpoint.
#[derive(Debug, Clone)]
pub struct IntrospectionConfig {
    /// `https://` URL of the introspection endpoint.
    pub endpoint: Uri,
    /// PEM CA bundle trusted for the endpoint. `None`: the system bundle file.
    pub ca: Option<PathBuf>,
    /// The proxy's client id at the authorization server.
    pub client_id: String,
    /// File holding the client secret (trailing line breaks removed). Read at construction.
    pub client_secret_file: PathBuf,
    /// How the client credentials are sent.
    pub auth_method: ClientAuthMethod,
    /// When set, an answer's `iss` (if present) must equal it exactly; it is also the
    /// [`Claims::issuer`] of tokens whose answer has no `iss`.
    pub expected_issuer: Option<String>,
    /// Refuse active tokens whose answer carries no `aud` (default `true`). With `false`,
    /// such tokens are accepted for every route of this issuer.
    pub require_audience: bool,
    /// Clock-skew allowance for `exp` and `nbf`.
    pub leeway: Duration,
    /// Longest time an active answer is relied on (also when it has no `exp`). Zero disables
    /// caching of active answers.
    pub cache_max: Duration,
    /// How long an inactive answer is remembered. Zero disables negative caching.
    pub negative_cache: Duration,
    /// Maximum number of cached answers. Zero disables the cache.
    pub cache_entries: usize,
    /// Deadline for one call.
    pub timeout: Duration,
    /// Largest accepted response body.
    pub max_body_bytes: usize,
    /// Longer tokens are refused without a call.
    pub max_token_bytes: usize,
    /// Maximum concurrent calls to the endpoint.
    pub max_in_flight: usize,
}

impl IntrospectionConfig {
    /// Settings for `endpoint` with the given client and the defaults above: system CA
    /// bundle, `client_secret_basic`, no expected issuer, audience required, the JWT leeway
    /// and token size limit.
    pub fn new(
        endpoint: Uri,
        client_id: impl Into<String>,
        client_secret_file: impl Into<PathBuf>,
    ) -> Self {
        IntrospectionConfig {
            endpoint,
            ca: None,
            client_id: client_id.into(),
            client_secret_file: client_secret_file.into(),
            auth_method: ClientAuthMethod::default(),
            expected_issuer: None,
            require_audience: true,
            leeway: DEFAULT_LEEWAY,
            cache_max: DEFAULT_CACHE_MAX,
            negative_cache: DEFAULT_NEGATIVE_CACHE,
            cache_entries: DEFAULT_CACHE_ENTRIES,
            timeout: DEFAULT_TIMEOUT,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            max_token_bytes: DEFAULT_MAX_TOKEN_BYTES,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
        }
    }
}

/// Why an introspected token was refused. Everything except
/// [`IntrospectionError::Unavailable`] is the token's fault (401 `invalid_token`);
/// [`IntrospectionError::description`] is safe for `error_description`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IntrospectionError {
    /// Longer than `max_token_bytes`; no call was made.
    #[error("token too large")]
    TooLarge,
    /// Empty, or characters outside the RFC 6750 `b64token` set; no call was made.
    #[error("malformed token")]
    Malformed,
    /// The authorization server says `active: false`.
    #[error("token not active")]
    Inactive,
    /// Active, but `exp` is past (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// Active, but `nbf` is in the future (beyond the leeway).
    #[error("token not yet valid")]
    NotYetValid,
    /// `iss` differs from the expected issuer.
    #[error("token issuer not accepted")]
    WrongIssuer,
    /// `aud` does not contain this resource, or is absent while required.
    #[error("token audience does not include this resource")]
    WrongAudience,
    /// No usable answer from the introspection endpoint (unreachable, timeout, non-200 status,
    /// oversized or malformed body). Server-side: answer 503, never let the request through.
    /// The reason is for logs; it never holds the token or the client secret.
    #[error("token introspection unavailable: {0}")]
    Unavailable(String),
}

impl IntrospectionError {
    /// Fixed text for `WWW-Authenticate: Bearer error="invalid_token", error_description="…"`.
    pub fn description(&self) -> &'static str {
        match self {
            IntrospectionError::TooLarge => "token too large",
            IntrospectionError::Malformed => "malformed token",
            IntrospectionError::Inactive => "token not active",
            IntrospectionError::Expired => "token expired",
            IntrospectionError::NotYetValid => "token not yet valid",
            IntrospectionError::WrongIssuer => "token issuer not accepted",
            IntrospectionError::WrongAudience => "token audience does not include this resource",
            IntrospectionError::Unavailable(_) => "token introspection unavailable",
        }
    }

    /// Whether the failure is on the proxy's side (503) rather than the token's (401).
    pub fn is_server_side(&self) -> bool {
        matches!(self, IntrospectionError::Unavailable(_))
    }
}

/// Why an [`Introspector`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum IntrospectionSetupError {
    /// The endpoint is not an absolute `https://` URL without user info.
    #[error("introspection endpoint `{0}` must be an absolute https:// URL without user info")]
    BadEndpoint(String),
    /// `client_id` is empty.
    #[error("introspection `client_id` must not be empty")]
    EmptyClientId,
    /// The secret file could not be read.
    #[error("cannot read client_secret_file {path}: {error}")]
    SecretFile {
        /// The file.
        path: PathBuf,
        /// Underlying error.
        error: std::io::Error,
    },
    /// The secret file is empty (after removing trailing line breaks) or not UTF-8.
    #[error("client_secret_file {0} must hold a non-empty UTF-8 secret")]
    BadSecret(PathBuf),
    /// A numeric setting is zero.
    #[error("introspection `{0}` must be greater than zero")]
    Zero(&'static str),
    /// The CA bundle is unusable.
    #[error(transparent)]
    Ca(#[from] CertError),
    /// No CA bundle configured and no system bundle found.
    #[error(
        "no `ca` configured for the introspection endpoint and no system CA bundle found (SSL_CERT_FILE or /etc/ssl/certs/ca-certificates.crt …); set `ca`"
    )]
    NoSystemRoots,
    /// rustls rejected the client configuration.
    #[error("introspection client TLS configuration rejected: {0}")]
    Tls(#[from] rustls::Error),
}

/// The client secret: never printed.
struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// SHA-256 of a token: the only form in which tokens are kept.
type Key = [u8; 32];

/// What the endpoint said about an active token, parsed but not yet checked against a route.
#[derive(Debug)]
struct Active {
    exp: Option<f64>,
    nbf: Option<f64>,
    iss: Option<String>,
    aud: Option<Vec<String>>,
    /// Unix time until which an answer without `exp` is relied on (answer time + `cache_max`).
    relied_until: u64,
    raw: Map<String, Value>,
}

#[derive(Debug, Clone)]
enum Answer {
    Active(Arc<Active>),
    Inactive,
}

/// Result of one call, shared by everyone waiting on it. `Err` is always `Unavailable`.
type Outcome = Result<Answer, IntrospectionError>;

/// Bounded answer cache, evicting expired entries first, then those closest to expiry.
struct AnswerCache {
    cap: usize,
    map: HashMap<Key, (Answer, Instant, u64)>,
    by_expiry: BTreeMap<(Instant, u64), Key>,
    seq: u64,
}

impl AnswerCache {
    fn new(cap: usize) -> Self {
        AnswerCache {
            cap,
            map: HashMap::new(),
            by_expiry: BTreeMap::new(),
            seq: 0,
        }
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn remove(&mut self, key: &Key) {
        if let Some((_, at, seq)) = self.map.remove(key) {
            self.by_expiry.remove(&(at, seq));
        }
    }

    fn get(&mut self, key: &Key, now: Instant) -> Option<Answer> {
        let (answer, expires, _) = self.map.get(key)?;
        if *expires > now {
            return Some(answer.clone());
        }
        self.remove(key);
        None
    }

    fn insert(&mut self, key: Key, answer: Answer, expires: Instant, now: Instant) {
        self.remove(&key);
        if self.cap == 0 || expires <= now {
            return;
        }
        while let Some((&(at, seq), &old)) = self.by_expiry.first_key_value() {
            if at > now && self.map.len() < self.cap {
                break;
            }
            self.by_expiry.remove(&(at, seq));
            self.map.remove(&old);
        }
        self.seq += 1;
        self.map.insert(key, (answer, expires, self.seq));
        self.by_expiry.insert((expires, self.seq), key);
    }
}

struct State {
    cache: AnswerCache,
    /// Calls under way, by token hash; waiters clone the receiver.
    in_flight: HashMap<Key, watch::Receiver<Option<Outcome>>>,
}

type IntrospectionClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

struct Inner {
    cfg: IntrospectionConfig,
    /// Kept for `client_secret_post`.
    secret: Secret,
    /// `Authorization` value for `client_secret_basic` (marked sensitive).
    basic: Option<HeaderValue>,
    client: IntrospectionClient,
    permits: Semaphore,
    state: Mutex<State>,
    calls: AtomicU64,
    /// Calls by result, and cache lookups, for metrics.
    active: AtomicU64,
    inactive: AtomicU64,
    failed: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// Checks opaque tokens against one introspection endpoint, with a cache in front. Cheap to
/// clone (shared).
#[derive(Clone)]
pub struct Introspector {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Introspector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Introspector")
            .field("endpoint", &self.inner.cfg.endpoint.to_string())
            .field("client_id", &self.inner.cfg.client_id)
            .field("auth_method", &self.inner.cfg.auth_method)
            .field("client_secret", &self.inner.secret)
            .field("cached", &self.cached())
            .finish()
    }
}

/// Status numbers for health endpoints and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IntrospectorStatus {
    /// Answers currently cached (some may have expired but not yet been swept).
    pub cached: usize,
    /// Completed calls to the endpoint since start (successful or not).
    pub calls: u64,
    /// Calls answered `active: true`.
    pub active: u64,
    /// Calls answered `active: false`.
    pub inactive: u64,
    /// Calls without a usable answer.
    pub failed: u64,
    /// Tokens answered from the cache.
    pub cache_hits: u64,
    /// Tokens not in the cache (answered by a call, or joining one).
    pub cache_misses: u64,
}

impl Introspector {
    /// Validates `cfg`, reads the client secret and builds the HTTPS client. Does not contact
    /// the endpoint.
    pub fn new(cfg: IntrospectionConfig) -> Result<Introspector, IntrospectionSetupError> {
        check_endpoint(&cfg.endpoint)?;
        if cfg.client_id.is_empty() {
            return Err(IntrospectionSetupError::EmptyClientId);
        }
        for (name, zero) in [
            ("timeout", cfg.timeout.is_zero()),
            ("max_body_bytes", cfg.max_body_bytes == 0),
            ("max_token_bytes", cfg.max_token_bytes == 0),
            ("max_in_flight", cfg.max_in_flight == 0),
        ] {
            if zero {
                return Err(IntrospectionSetupError::Zero(name));
            }
        }
        let secret = read_secret(&cfg.client_secret_file)?;
        let basic = match cfg.auth_method {
            ClientAuthMethod::ClientSecretBasic => {
                let mut v = basic_authorization(&cfg.client_id, &secret.0);
                v.set_sensitive(true);
                Some(v)
            }
            ClientAuthMethod::ClientSecretPost => None,
        };
        let client = build_client(cfg.ca.as_deref(), cfg.timeout, cfg.max_in_flight.min(16))?;
        let state = State {
            cache: AnswerCache::new(cfg.cache_entries),
            in_flight: HashMap::new(),
        };
        Ok(Introspector {
            inner: Arc::new(Inner {
                permits: Semaphore::new(cfg.max_in_flight),
                cfg,
                secret,
                basic,
                client,
                state: Mutex::new(state),
                calls: AtomicU64::new(0),
                active: AtomicU64::new(0),
                inactive: AtomicU64::new(0),
                failed: AtomicU64::new(0),
                hits: AtomicU64::new(0),
                misses: AtomicU64::new(0),
            }),
        })
    }

    /// The endpoint URL.
    pub fn endpoint(&self) -> &Uri {
        &self.inner.cfg.endpoint
    }

    /// Cache size and call count.
    pub fn status(&self) -> IntrospectorStatus {
        let i = &self.inner;
        IntrospectorStatus {
            cached: self.cached(),
            calls: i.calls.load(Ordering::Acquire),
            active: i.active.load(Ordering::Relaxed),
            inactive: i.inactive.load(Ordering::Relaxed),
            failed: i.failed.load(Ordering::Relaxed),
            cache_hits: i.hits.load(Ordering::Relaxed),
            cache_misses: i.misses.load(Ordering::Relaxed),
        }
    }

    fn cached(&self) -> usize {
        lock(&self.inner.state).cache.len()
    }

    /// Checks `token` for the resource `expected_audience` (the route's resource URI): from
    /// the cache, else by one call to the endpoint shared with concurrent requests for the
    /// same token. Must be called inside a Tokio runtime.
    pub async fn introspect(
        &self,
        token: &str,
        expected_audience: &str,
    ) -> Result<Claims, IntrospectionError> {
        check_token(token, self.inner.cfg.max_token_bytes)?;
        let key = token_key(token);
        let answer = self.answer(key, token).await?;
        evaluate(&self.inner.cfg, &answer, expected_audience, unix_now())
    }

    async fn answer(&self, key: Key, token: &str) -> Outcome {
        let mut rx = {
            let mut st = lock(&self.inner.state);
            if let Some(answer) = st.cache.get(&key, Instant::now()) {
                self.inner.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(answer);
            }
            self.inner.misses.fetch_add(1, Ordering::Relaxed);
            match st.in_flight.get(&key) {
                Some(rx) => rx.clone(),
                None => {
                    let (tx, rx) = watch::channel(None);
                    st.in_flight.insert(key, rx.clone());
                    let flight = Flight {
                        inner: self.inner.clone(),
                        key,
                        rx: rx.clone(),
                    };
                    let token = token.to_owned();
                    tokio::spawn(
                        async move {
                            let outcome = flight.inner.call(&token).await;
                            drop(token);
                            flight.finish(&outcome);
                            let _ = tx.send(Some(outcome));
                        }
                        .instrument(tracing::Span::current()),
                    );
                    rx
                }
            }
        };
        match rx.wait_for(Option::is_some).await {
            Ok(v) => match &*v {
                Some(outcome) => outcome.clone(),
                None => unreachable!("wait_for returns a Some"),
            },
            Err(_) => Err(IntrospectionError::Unavailable(
                "the introspection call was abandoned".into(),
            )),
        }
    }
}

/// One call under way. Dropping it (normally or when the task dies) unregisters the call, so
/// later requests start a new one instead of waiting forever.
struct Flight {
    inner: Arc<Inner>,
    key: Key,
    rx: watch::Receiver<Option<Outcome>>,
}

impl Flight {
    /// Caches a usable answer. The registration goes when `self` drops.
    fn finish(&self, outcome: &Outcome) {
        let counter = match outcome {
            Ok(Answer::Active(_)) => &self.inner.active,
            Ok(Answer::Inactive) => &self.inner.inactive,
            Err(_) => &self.inner.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let Ok(answer) = outcome else { return };
        let cfg = &self.inner.cfg;
        let now = Instant::now();
        let ttl = match answer {
            Answer::Inactive => Some(cfg.negative_cache),
            Answer::Active(a) => match a.exp {
                None => Some(cfg.cache_max),
                Some(exp) => {
                    let left = exp - unix_now();
                    (left > 0.0).then(|| {
                        Duration::try_from_secs_f64(left)
                            .unwrap_or(Duration::MAX)
                            .min(cfg.cache_max)
                    })
                }
            },
        };
        let expires = ttl
            .filter(|t| !t.is_zero())
            .and_then(|t| now.checked_add(t));
        if let Some(expires) = expires {
            lock(&self.inner.state)
                .cache
                .insert(self.key, answer.clone(), expires, now);
        }
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        let mut st = lock(&self.inner.state);
        if st
            .in_flight
            .get(&self.key)
            .is_some_and(|rx| rx.same_channel(&self.rx))
        {
            st.in_flight.remove(&self.key);
        }
    }
}

impl Inner {
    /// One call: waits for a permit, posts, parses. Failures are logged and become
    /// `Unavailable`.
    async fn call(&self, token: &str) -> Outcome {
        let timeout = self.cfg.timeout;
        let exchange = async {
            let _permit = self
                .permits
                .acquire()
                .await
                .map_err(|_| "introspector shut down".to_owned())?;
            self.exchange(token).await
        };
        let result = match tokio::time::timeout(timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(format!("no complete answer within {timeout:?}")),
        };
        self.calls.fetch_add(1, Ordering::AcqRel);
        let result = result.and_then(|body| parse_response(&body, &self.cfg));
        match &result {
            Ok(Answer::Active(a)) => tracing::debug!(
                endpoint = %self.cfg.endpoint, exp = ?a.exp, "token introspected: active"
            ),
            Ok(Answer::Inactive) => {
                tracing::debug!(endpoint = %self.cfg.endpoint, "token introspected: inactive")
            }
            Err(reason) => tracing::warn!(
                endpoint = %self.cfg.endpoint,
                client_id = %self.cfg.client_id,
                error = %reason,
                "token introspection failed; the request is refused with 503"
            ),
        }
        result.map_err(IntrospectionError::Unavailable)
    }

    async fn exchange(&self, token: &str) -> Result<Bytes, String> {
        let mut body = format!("token={}&token_type_hint=access_token", form_encode(token));
        if self.cfg.auth_method == ClientAuthMethod::ClientSecretPost {
            body.push_str("&client_id=");
            body.push_str(&form_encode(&self.cfg.client_id));
            body.push_str("&client_secret=");
            body.push_str(&form_encode(&self.secret.0));
        }
        let mut req = http::Request::post(self.cfg.endpoint.clone())
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(http::header::ACCEPT, "application/json")
            .header(
                http::header::USER_AGENT,
                concat!("mcp-edge/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| format!("building the request: {e}"))?;
        if let Some(basic) = &self.basic {
            req.headers_mut()
                .insert(http::header::AUTHORIZATION, basic.clone());
        }
        let resp = self
            .client
            .request(req)
            .await
            .map_err(|e| crate::upstream::error_chain(&e))?;
        let status = resp.status();
        if status == http::StatusCode::UNAUTHORIZED || status == http::StatusCode::FORBIDDEN {
            return Err(format!(
                "HTTP status {status}: the endpoint refused the proxy's client credentials \
                 (client_id `{}`, {}); check client_id and client_secret_file",
                self.cfg.client_id,
                self.cfg.auth_method.as_str()
            ));
        }
        if status != http::StatusCode::OK {
            return Err(format!("HTTP status {status}"));
        }
        let max = self.cfg.max_body_bytes;
        let body = Limited::new(resp.into_body(), max)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    format!("response larger than {max} bytes")
                } else {
                    format!("reading the response: {e}")
                }
            })?;
        Ok(body.to_bytes())
    }
}

/// Parses an RFC 7662 answer. Anything malformed is an error (→ `Unavailable`).
fn parse_response(bytes: &[u8], cfg: &IntrospectionConfig) -> Result<Answer, String> {
    let raw = match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => map,
        Ok(_) => return Err("response is not a JSON object".into()),
        Err(_) => return Err("response is not JSON".into()),
    };
    match raw.get("active") {
        Some(Value::Bool(true)) => {}
        Some(Value::Bool(false)) => return Ok(Answer::Inactive),
        _ => return Err("response has no boolean `active` member".into()),
    }
    let date = |name: &str| match raw.get(name) {
        None => Ok(None),
        Some(v) => numeric_date(v)
            .map(Some)
            .ok_or_else(|| format!("`{name}` in the response is not a NumericDate")),
    };
    let exp = date("exp")?;
    let nbf = date("nbf")?;
    let iss = match raw.get("iss") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err("`iss` in the response is not a string".into()),
    };
    let aud = match raw.get("aud") {
        None => None,
        Some(Value::String(a)) => Some(vec![a.clone()]),
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or("`aud` in the response is not a string or array of strings")?,
        ),
        Some(_) => return Err("`aud` in the response is not a string or array of strings".into()),
    };
    Ok(Answer::Active(Arc::new(Active {
        exp,
        nbf,
        iss,
        aud,
        relied_until: (unix_now() as u64).saturating_add(cfg.cache_max.as_secs()),
        raw,
    })))
}

/// Route-specific checks of a (possibly cached) answer, at unix time `now`.
fn evaluate(
    cfg: &IntrospectionConfig,
    answer: &Answer,
    expected_audience: &str,
    now: f64,
) -> Result<Claims, IntrospectionError> {
    let a = match answer {
        Answer::Inactive => return Err(IntrospectionError::Inactive),
        Answer::Active(a) => a,
    };
    let leeway = cfg.leeway.as_secs_f64();
    if a.exp.is_some_and(|exp| now > exp + leeway) {
        return Err(IntrospectionError::Expired);
    }
    if a.nbf.is_some_and(|nbf| now + leeway < nbf) {
        return Err(IntrospectionError::NotYetValid);
    }
    if let (Some(expected), Some(iss)) = (&cfg.expected_issuer, &a.iss)
        && expected != iss
    {
        return Err(IntrospectionError::WrongIssuer);
    }
    match &a.aud {
        Some(aud) if aud.iter().any(|x| same_resource(x, expected_audience)) => {}
        Some(_) => return Err(IntrospectionError::WrongAudience),
        None if cfg.require_audience => return Err(IntrospectionError::WrongAudience),
        None => {}
    }
    let issuer = a
        .iss
        .clone()
        .or_else(|| cfg.expected_issuer.clone())
        .unwrap_or_else(|| endpoint_origin(&cfg.endpoint));
    let raw = &a.raw;
    let subject = raw.get("sub").and_then(Value::as_str).map(str::to_owned);
    Ok(Claims {
        issuer,
        backend_subject: subject.clone(),
        subject,
        organisation: None,
        audience: a.aud.clone().unwrap_or_default(),
        scopes: scopes(raw),
        client_id: raw
            .get("client_id")
            .or_else(|| raw.get("azp"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        cnf_x5t_s256: raw
            .get("cnf")
            .and_then(|c| c.get("x5t#S256"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        expires_at: a.exp.map_or(a.relied_until, |e| e.max(0.0) as u64),
        key_id: None,
        algorithm: None,
        raw: raw.clone(),
    })
}

/// `https://host[:port]` of the endpoint: the issuer of answers that name none when no
/// issuer is configured.
fn endpoint_origin(uri: &Uri) -> String {
    match uri.authority() {
        Some(a) => format!("https://{a}"),
        None => uri.to_string(),
    }
}

/// Same rules as for JWTs: `scope` (space-separated string, or array) and `scp`.
fn scopes(claims: &Map<String, Value>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for name in ["scope", "scp"] {
        match claims.get(name) {
            Some(Value::String(s)) => out.extend(s.split_whitespace().map(str::to_owned)),
            Some(Value::Array(items)) => out.extend(
                items
                    .iter()
                    .filter_map(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
            ),
            _ => {}
        }
    }
    out
}

fn same_resource(aud: &str, expected: &str) -> bool {
    match (canonical_resource(aud), canonical_resource(expected)) {
        (Some(a), Some(b)) => a == b,
        _ => aud == expected,
    }
}

/// A JSON NumericDate: a finite, non-negative number of seconds.
fn numeric_date(v: &Value) -> Option<f64> {
    v.as_f64().filter(|n| n.is_finite() && *n >= 0.0)
}

/// Refuses tokens that are empty, too long, or not an RFC 6750 `b64token`.
fn check_token(token: &str, max: usize) -> Result<(), IntrospectionError> {
    if token.len() > max {
        return Err(IntrospectionError::TooLarge);
    }
    let body = token.trim_end_matches('=');
    let ok = !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(IntrospectionError::Malformed)
    }
}

fn token_key(token: &str) -> Key {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    let mut key = [0u8; 32];
    key.copy_from_slice(digest.as_ref());
    key
}

/// `application/x-www-form-urlencoded` encoding of one name or value (WHATWG URL standard):
/// `*-._` and alphanumerics kept, space as `+`, everything else percent-encoded as UTF-8.
fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                out.push(char::from(b));
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// `client_secret_basic` (RFC 6749 §2.3.1): id and secret form-encoded, joined by `:`, base64.
fn basic_authorization(client_id: &str, secret: &str) -> HeaderValue {
    let creds = format!("{}:{}", form_encode(client_id), form_encode(secret));
    HeaderValue::from_str(&format!("Basic {}", STANDARD.encode(creds)))
        .expect("base64 is a valid header value")
}

fn read_secret(path: &Path) -> Result<Secret, IntrospectionSetupError> {
    let mut bytes = std::fs::read(path).map_err(|error| IntrospectionSetupError::SecretFile {
        path: path.to_path_buf(),
        error,
    })?;
    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        bytes.pop();
    }
    match String::from_utf8(bytes) {
        Ok(s) if !s.is_empty() => Ok(Secret(s)),
        _ => Err(IntrospectionSetupError::BadSecret(path.to_path_buf())),
    }
}

fn check_endpoint(url: &Uri) -> Result<(), IntrospectionSetupError> {
    let bad = || IntrospectionSetupError::BadEndpoint(url.to_string());
    let https = url
        .scheme_str()
        .is_some_and(|s| s.eq_ignore_ascii_case("https"));
    let authority = url.authority().ok_or_else(bad)?;
    if !https || authority.host().is_empty() || authority.as_str().contains('@') {
        return Err(bad());
    }
    Ok(())
}

fn build_client(
    ca: Option<&Path>,
    timeout: Duration,
    max_idle: usize,
) -> Result<IntrospectionClient, IntrospectionSetupError> {
    let roots = match ca {
        Some(path) => certs::load_ca_bundle(path)?,
        None => jwks::system_roots().map_err(|e| match e {
            KeySourceError::Ca(e) => IntrospectionSetupError::Ca(e),
            _ => IntrospectionSetupError::NoSystemRoots,
        })?,
    };
    Ok(crate::http::client::https_client(roots, timeout, max_idle)?)
}

/// Seconds since the epoch, with fractions (the unit of `exp`).
pub(crate) fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const AUD: &str = "https://mcp.example/tools";
    const ISS: &str = "https://as.example";

    fn cfg() -> IntrospectionConfig {
        IntrospectionConfig::new(
            "https://as.example/introspect".parse().unwrap(),
            "proxy",
            "/nonexistent",
        )
    }

    fn parse(v: Value) -> Result<Answer, String> {
        parse_response(v.to_string().as_bytes(), &cfg())
    }

    fn active(v: Value) -> Answer {
        let a = parse(v).unwrap();
        assert!(matches!(a, Answer::Active(_)));
        a
    }

    #[test]
    fn form_and_basic_encoding() {
        assert_eq!(form_encode("a b+c/=é*-._~"), "a+b%2Bc%2F%3D%C3%A9*-._%7E");
        let v = basic_authorization("my client", "p:w%");
        let b64 = v.to_str().unwrap().strip_prefix("Basic ").unwrap();
        assert_eq!(
            STANDARD.decode(b64).unwrap(),
            b"my+client:p%3Aw%25".to_vec()
        );
    }

    #[test]
    fn token_syntax() {
        for ok in ["abc", "a-b.c_d~e+f/g==", "x="] {
            assert_eq!(check_token(ok, 100), Ok(()), "{ok}");
        }
        for bad in ["", "=", "a b", "a\"b", "a,b", "=a", "é"] {
            assert_eq!(
                check_token(bad, 100),
                Err(IntrospectionError::Malformed),
                "{bad}"
            );
        }
        assert_eq!(
            check_token(&"a".repeat(101), 100),
            Err(IntrospectionError::TooLarge)
        );
    }

    #[test]
    fn malformed_answers_are_errors() {
        for body in [
            "not json",
            "[]",
            "{}",
            r#"{"active":"true"}"#,
            r#"{"active":1}"#,
            r#"{"active":true,"exp":"tomorrow"}"#,
            r#"{"active":true,"nbf":-1}"#,
            r#"{"active":true,"iss":5}"#,
            r#"{"active":true,"aud":5}"#,
            r#"{"active":true,"aud":["a",5]}"#,
        ] {
            assert!(parse_response(body.as_bytes(), &cfg()).is_err(), "{body}");
        }
        // An inactive answer needs nothing else (RFC 7662 §2.2).
        assert!(matches!(
            parse(json!({"active": false, "exp": "junk"})),
            Ok(Answer::Inactive)
        ));
    }

    #[test]
    fn active_answer_yields_claims() {
        let now = unix_now();
        let a = active(json!({
            "active": true, "iss": ISS, "sub": "alice", "client_id": "partner-app",
            "aud": ["other", "HTTPS://MCP.example:443/tools/"], "scope": "read  write",
            "scp": ["admin"], "exp": now as u64 + 300, "nbf": now as u64 - 5,
            "cnf": { "x5t#S256": "thumb" }, "org": "acme", "token_type": "Bearer",
        }));
        let mut c = cfg();
        c.expected_issuer = Some(ISS.into());
        let claims = evaluate(&c, &a, AUD, now).unwrap();
        assert_eq!(claims.issuer, ISS);
        assert_eq!(claims.subject.as_deref(), Some("alice"));
        assert_eq!(claims.client_id.as_deref(), Some("partner-app"));
        assert_eq!(
            claims.scopes.iter().collect::<Vec<_>>(),
            ["admin", "read", "write"]
        );
        assert_eq!(claims.cnf_x5t_s256.as_deref(), Some("thumb"));
        assert_eq!(claims.audience.len(), 2);
        assert_eq!(claims.expires_at, now as u64 + 300);
        assert_eq!(claims.raw["org"], "acme");
        assert_eq!(claims.raw["active"], true);
        assert_eq!(claims.key_id, None);
        assert_eq!(claims.algorithm, None);
    }

    #[test]
    fn route_checks() {
        let now = unix_now();
        let mut c = cfg();
        c.leeway = Duration::from_secs(30);
        let ev = |c: &IntrospectionConfig, v: Value| evaluate(c, &active(v), AUD, now);
        assert_eq!(
            evaluate(&c, &Answer::Inactive, AUD, now),
            Err(IntrospectionError::Inactive)
        );
        assert_eq!(
            ev(&c, json!({"active": true, "aud": AUD, "exp": now - 60.0})),
            Err(IntrospectionError::Expired)
        );
        assert!(ev(&c, json!({"active": true, "aud": AUD, "exp": now - 10.0})).is_ok());
        assert_eq!(
            ev(&c, json!({"active": true, "aud": AUD, "nbf": now + 60.0})),
            Err(IntrospectionError::NotYetValid)
        );
        assert_eq!(
            ev(
                &c,
                json!({"active": true, "aud": "https://mcp.example/other"})
            ),
            Err(IntrospectionError::WrongAudience)
        );
        // No `aud`: refused unless the issuer is configured to accept that.
        assert_eq!(
            ev(&c, json!({"active": true})),
            Err(IntrospectionError::WrongAudience)
        );
        let mut lax = c.clone();
        lax.require_audience = false;
        let claims = ev(&lax, json!({"active": true})).unwrap();
        assert!(claims.audience.is_empty());
        // No `exp`: relied on for `cache_max`; issuer from the endpoint when none is known.
        assert!(claims.expires_at >= now as u64 + 59);
        assert_eq!(claims.issuer, "https://as.example");
        // `aud` present but wrong is refused even when absence would be tolerated.
        assert_eq!(
            ev(&lax, json!({"active": true, "aud": "x"})),
            Err(IntrospectionError::WrongAudience)
        );
        // Issuer: checked when configured and present; used when absent.
        c.expected_issuer = Some(ISS.into());
        assert_eq!(
            ev(
                &c,
                json!({"active": true, "aud": AUD, "iss": "https://evil.example"})
            ),
            Err(IntrospectionError::WrongIssuer)
        );
        assert_eq!(
            ev(&c, json!({"active": true, "aud": AUD})).unwrap().issuer,
            ISS
        );
    }

    fn key(n: u8) -> Key {
        [n; 32]
    }

    #[test]
    fn cache_expiry_and_bounds() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut c = AnswerCache::new(3);
        c.insert(key(1), Answer::Inactive, t0 + s(10), t0);
        assert!(c.get(&key(1), t0 + s(9)).is_some());
        assert!(c.get(&key(1), t0 + s(10)).is_none());
        assert_eq!((c.len(), c.by_expiry.len()), (0, 0));

        // Already expired: not stored.
        c.insert(key(1), Answer::Inactive, t0, t0);
        assert_eq!(c.len(), 0);

        // Full: the entry closest to expiry goes.
        c.insert(key(1), Answer::Inactive, t0 + s(30), t0);
        c.insert(key(2), Answer::Inactive, t0 + s(10), t0);
        c.insert(key(3), Answer::Inactive, t0 + s(20), t0);
        c.insert(key(4), Answer::Inactive, t0 + s(40), t0);
        assert!(c.get(&key(2), t0).is_none());
        assert!(c.get(&key(1), t0).is_some() && c.get(&key(4), t0).is_some());

        // Expired entries are swept before anything live is evicted.
        c.insert(key(5), Answer::Inactive, t0 + s(100), t0 + s(25));
        assert_eq!(c.len(), 3);
        assert!(c.get(&key(3), t0).is_none());

        // Replacing a key keeps one index entry per key.
        for i in 0..10 {
            c.insert(key(5), Answer::Inactive, t0 + s(200 + i), t0 + s(25));
        }
        assert_eq!(c.len(), c.by_expiry.len());

        let mut off = AnswerCache::new(0);
        off.insert(key(1), Answer::Inactive, t0 + s(10), t0);
        assert_eq!(off.len(), 0);
    }

    fn ca_file(dir: &Path) -> PathBuf {
        let ca = crate::demo::pki::DevCa::new("introspection unit CA").unwrap();
        let path = dir.join("ca.pem");
        std::fs::write(&path, &ca.cert_pem).unwrap();
        path
    }

    #[test]
    fn setup_checks_and_secret_handling() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "s3cr3t-value\r\n\n").unwrap();
        let mut c = cfg();
        c.ca = Some(ca_file(dir.path()));
        c.client_secret_file = secret.clone();

        let intro = Introspector::new(c.clone()).unwrap();
        assert_eq!(intro.inner.secret.0, "s3cr3t-value");
        let debug = format!("{intro:?}");
        assert!(!debug.contains("s3cr3t"), "{debug}");
        assert!(debug.contains("<redacted>"), "{debug}");
        let basic = intro.inner.basic.as_ref().unwrap();
        assert!(basic.is_sensitive());
        assert!(!format!("{basic:?}").contains("Basic"));
        let status = intro.status();
        assert_eq!((status.cached, status.calls, status.cache_hits), (0, 0, 0));

        let mut post = c.clone();
        post.auth_method = ClientAuthMethod::ClientSecretPost;
        assert!(Introspector::new(post).unwrap().inner.basic.is_none());

        for url in [
            "http://as.example/introspect",
            "https://user:pw@as.example/introspect",
            "/introspect",
        ] {
            let mut bad = c.clone();
            bad.endpoint = url.parse().unwrap();
            assert!(
                matches!(
                    Introspector::new(bad),
                    Err(IntrospectionSetupError::BadEndpoint(_))
                ),
                "{url}"
            );
        }
        let mut bad = c.clone();
        bad.client_id.clear();
        assert!(matches!(
            Introspector::new(bad),
            Err(IntrospectionSetupError::EmptyClientId)
        ));
        let mut bad = c.clone();
        bad.timeout = Duration::ZERO;
        assert!(matches!(
            Introspector::new(bad),
            Err(IntrospectionSetupError::Zero("timeout"))
        ));
        let mut bad = c.clone();
        bad.client_secret_file = dir.path().join("missing");
        let err = Introspector::new(bad).unwrap_err();
        assert!(matches!(err, IntrospectionSetupError::SecretFile { .. }));
        std::fs::write(&secret, "\n").unwrap();
        assert!(matches!(
            Introspector::new(c.clone()),
            Err(IntrospectionSetupError::BadSecret(_))
        ));
        std::fs::write(&secret, [0xff, 0xfe]).unwrap();
        assert!(matches!(
            Introspector::new(c.clone()),
            Err(IntrospectionSetupError::BadSecret(_))
        ));
        let mut bad = c;
        bad.ca = Some(dir.path().join("no-ca.pem"));
        std::fs::write(&secret, "x").unwrap();
        assert!(matches!(
            Introspector::new(bad),
            Err(IntrospectionSetupError::Ca(_))
        ));
    }

    #[test]
    fn error_classes() {
        for e in [
            IntrospectionError::TooLarge,
            IntrospectionError::Malformed,
            IntrospectionError::Inactive,
            IntrospectionError::Expired,
            IntrospectionError::NotYetValid,
            IntrospectionError::WrongIssuer,
            IntrospectionError::WrongAudience,
            IntrospectionError::Unavailable("x".into()),
        ] {
            assert!(!e.description().contains('"'));
            assert_eq!(
                e.is_server_side(),
                matches!(e, IntrospectionError::Unavailable(_))
            );
        }
    }

    #[tokio::test]
    async fn refused_tokens_make_no_call() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "s").unwrap();
        let mut c = cfg();
        c.ca = Some(ca_file(dir.path()));
        c.client_secret_file = secret;
        c.max_token_bytes = 16;
        let intro = Introspector::new(c).unwrap();
        assert_eq!(
            intro.introspect("a b", AUD).await,
            Err(IntrospectionError::Malformed)
        );
        assert_eq!(
            intro.introspect(&"a".repeat(17), AUD).await,
            Err(IntrospectionError::TooLarge)
        );
        assert_eq!(intro.status().calls, 0);
    }
}
