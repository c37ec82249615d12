//! Verification keys for bearer tokens: where they come from and the cache in front of a remote
//! JWKS.
//!
//! A [`KeySource`] names one source per issuer:
//!
//! - [`KeySource::JwksUrl`]: a JWKS document fetched over HTTPS (never plain HTTP, never a URL
//!   taken from a token), through a hyper-util client that trusts only the configured CA bundle
//!   (or the system bundle file when none is configured). The set is cached, refreshed in the
//!   background every `refresh`, and refetched when a token names an unknown `kid`. Those
//!   refetches are single-flight (concurrent misses wait for one fetch) and rate-limited
//!   (`min_refetch_interval`), so tokens with made-up key ids cannot make the proxy hammer the
//!   identity provider. When the provider is unreachable the last good set keeps being served;
//!   optionally the last good document is persisted to `cache_file` and used at start when the
//!   provider cannot be reached.
//! - [`KeySource::JwksFile`]: a JWKS document on disk.
//! - [`KeySource::PemKeys`]: PEM public keys (or certificates), one per file, without key ids.
//! - [`KeySource::HmacSecretFile`]: a shared secret for HS256/384/512. Never mixed with
//!   asymmetric keys (the issuer policy enforces that).
//!
//! Only signature keys are kept: `use` other than `sig`, `key_ops` without `verify`, symmetric
//! (`oct`) JWKs, unknown key types and curves (P-521, X25519, …) and RSA keys under 2048 bits are
//! skipped. Each key is tied to the algorithms its type allows (RSA → RS*/PS*, P-256 → ES256,
//! P-384 → ES384, Ed25519 → EdDSA), narrowed to the key's own `alg` when it has one.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::Uri;
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};

use crate::certs::{self, CertError};

/// Default interval between scheduled JWKS refreshes.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(600);
/// Default minimum time between two JWKS fetches triggered by unknown key ids.
pub const DEFAULT_MIN_REFETCH_INTERVAL: Duration = Duration::from_secs(30);
/// Default deadline for one JWKS fetch (connect, TLS, response and body).
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Default cap on a JWKS response body.
pub const DEFAULT_MAX_JWKS_BYTES: usize = 256 * 1024;
/// Keys beyond this many in one JWKS document are ignored.
pub const MAX_KEYS: usize = 100;
/// Shortest accepted HMAC secret (RFC 7518 §3.2: at least the hash size; 32 bytes for HS256).
pub const MIN_HMAC_SECRET_BYTES: usize = 32;
/// Smallest accepted RSA modulus.
pub const MIN_RSA_BITS: usize = 2048;

/// Settings of a remote JWKS.
#[derive(Debug, Clone)]
pub struct JwksUrlConfig {
    /// `https://` URL of the JWKS document.
    pub url: Uri,
    /// PEM CA bundle trusted for the JWKS server. `None`: the system bundle file
    /// (`SSL_CERT_FILE`, else the usual distribution paths).
    pub ca: Option<PathBuf>,
    /// Interval between scheduled refreshes.
    pub refresh: Duration,
    /// Minimum time between two fetches caused by unknown key ids, and the retry interval
    /// while the provider is failing.
    pub min_refetch_interval: Duration,
    /// Where the last good document is persisted (write-then-rename), and read at start when
    /// the provider cannot be reached. Should live in a directory only the proxy can write.
    pub cache_file: Option<PathBuf>,
    /// Deadline for one fetch.
    pub timeout: Duration,
    /// Largest accepted response body.
    pub max_body_bytes: usize,
}

impl JwksUrlConfig {
    /// Settings for `url` with the defaults above, the system CA bundle and no cache file.
    pub fn new(url: Uri) -> Self {
        JwksUrlConfig {
            url,
            ca: None,
            refresh: DEFAULT_REFRESH,
            min_refetch_interval: DEFAULT_MIN_REFETCH_INTERVAL,
            cache_file: None,
            timeout: DEFAULT_FETCH_TIMEOUT,
            max_body_bytes: DEFAULT_MAX_JWKS_BYTES,
        }
    }
}

/// Where an issuer's verification keys come from.
#[derive(Debug, Clone)]
pub enum KeySource {
    /// A JWKS fetched over HTTPS, cached and refreshed.
    JwksUrl(JwksUrlConfig),
    /// A JWKS document on disk, read at start and on [`KeyStore::refresh`].
    JwksFile(PathBuf),
    /// PEM public keys (`PUBLIC KEY`, `RSA PUBLIC KEY` or `CERTIFICATE`), one per file. These
    /// keys have no key id: they are candidates for every token of the issuer.
    PemKeys(Vec<PathBuf>),
    /// A shared HMAC secret: the file's raw bytes, trailing line breaks removed, at least
    /// [`MIN_HMAC_SECRET_BYTES`] long. Only for HS256/HS384/HS512.
    HmacSecretFile(PathBuf),
}

impl KeySource {
    /// Whether this source holds a shared secret (HS* algorithms) rather than public keys.
    pub fn is_symmetric(&self) -> bool {
        matches!(self, KeySource::HmacSecretFile(_))
    }
}

/// Why no key could be chosen for a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// No key carries the token's `kid` (after a refetch, for remote sets), or no key fits the
    /// token's algorithm.
    #[error("no verification key matches the token")]
    UnknownKey,
    /// The key named by `kid` exists but cannot verify the token's algorithm.
    #[error("the token's key is not usable with the token's algorithm")]
    AlgorithmMismatch,
    /// The token names no `kid` and several keys fit ([`KeyStore::key_for`] only).
    #[error("the token names no key id and several keys fit")]
    Ambiguous,
    /// No key is loaded at all: the provider has not been reachable since start and there is no
    /// cache file. Server-side condition (503 rather than 401).
    #[error("no verification keys are loaded")]
    NoKeys,
}

/// Why a key source could not be loaded or refreshed.
#[derive(Debug, thiserror::Error)]
pub enum KeySourceError {
    /// A key file could not be read.
    #[error("cannot read {path}: {error}")]
    Read {
        /// File that failed.
        path: PathBuf,
        /// Underlying error.
        error: std::io::Error,
    },
    /// A PEM key or secret file is unusable.
    #[error("{path}: {reason}")]
    InvalidKeyFile {
        /// File that failed.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A JWKS document is unusable.
    #[error("JWKS from {origin}: {reason}")]
    InvalidJwks {
        /// URL or file.
        origin: String,
        /// What is wrong.
        reason: String,
    },
    /// `jwks_url` is not an absolute `https://` URL without credentials.
    #[error("jwks_url `{0}` must be an absolute https:// URL without user info")]
    BadUrl(String),
    /// The CA bundle is unusable.
    #[error(transparent)]
    Ca(#[from] CertError),
    /// No CA bundle configured and no system bundle found.
    #[error(
        "no `ca` configured for jwks_url and no system CA bundle found (SSL_CERT_FILE or /etc/ssl/certs/ca-certificates.crt …); set `ca`"
    )]
    NoSystemRoots,
    /// rustls rejected the client configuration.
    #[error("JWKS client TLS configuration rejected: {0}")]
    Tls(#[from] rustls::Error),
    /// The fetch failed (connection, TLS, status, size, timeout).
    #[error("fetching JWKS from {url} failed: {reason}")]
    Fetch {
        /// JWKS URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
}

/// One usable verification key.
struct KeyEntry {
    kid: Option<String>,
    algs: Vec<Algorithm>,
    key: Arc<DecodingKey>,
}

/// An immutable set of keys; swapped whole on refresh.
#[derive(Default)]
struct KeySet {
    entries: Vec<KeyEntry>,
}

impl KeySet {
    /// Keys for `kid`/`alg`. With `anonymous_fallback`, keys without a key id are candidates
    /// for a token whose `kid` no key carries.
    fn lookup(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
        anonymous_fallback: bool,
    ) -> Result<Vec<Arc<DecodingKey>>, KeyError> {
        if self.entries.is_empty() {
            return Err(KeyError::NoKeys);
        }
        let fits = |e: &&KeyEntry| e.algs.contains(&alg);
        let pick = |it: &mut dyn Iterator<Item = &KeyEntry>| -> Vec<Arc<DecodingKey>> {
            it.filter(fits).map(|e| e.key.clone()).collect()
        };
        match kid {
            Some(kid) => {
                let named: Vec<&KeyEntry> = self
                    .entries
                    .iter()
                    .filter(|e| e.kid.as_deref() == Some(kid))
                    .collect();
                if !named.is_empty() {
                    let keys = pick(&mut named.into_iter());
                    return if keys.is_empty() {
                        Err(KeyError::AlgorithmMismatch)
                    } else {
                        Ok(keys)
                    };
                }
                if anonymous_fallback {
                    let keys = pick(&mut self.entries.iter().filter(|e| e.kid.is_none()));
                    if !keys.is_empty() {
                        return Ok(keys);
                    }
                }
                Err(KeyError::UnknownKey)
            }
            None => {
                let keys = pick(&mut self.entries.iter());
                if keys.is_empty() {
                    Err(KeyError::UnknownKey)
                } else {
                    Ok(keys)
                }
            }
        }
    }
}

/// What operators (health endpoints, logs) want to know about a key store.
#[derive(Debug, Clone)]
pub struct KeyStoreStatus {
    /// Usable keys currently loaded.
    pub keys: usize,
    /// Remote sets: completed fetch attempts since start (successful or not).
    pub fetches: u64,
    /// Remote sets: fetch attempts that failed.
    pub failures: u64,
    /// Remote sets: when the last fetch succeeded.
    pub last_success: Option<SystemTime>,
    /// Remote sets: why the last fetch failed, if it did.
    pub last_error: Option<String>,
}

type JwksClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

#[derive(Default)]
struct FetchState {
    last_attempt: Option<Instant>,
    last_success: Option<(Instant, SystemTime)>,
    last_error: Option<String>,
    /// Bytes last written to the cache file, to skip identical rewrites.
    cached: Option<Bytes>,
}

struct Remote {
    cfg: JwksUrlConfig,
    client: JwksClient,
    /// Held for the duration of one fetch: concurrent misses queue here (single-flight).
    fetch_lock: tokio::sync::Mutex<()>,
    /// Completed fetch attempts; a waiter that sees it change skips its own fetch.
    completed: AtomicU64,
    /// Failed fetch attempts.
    failed: AtomicU64,
    state: Mutex<FetchState>,
}

enum Kind {
    Static(KeySource),
    Remote(Box<Remote>),
}

struct Inner {
    kind: Kind,
    symmetric: bool,
    set: ArcSwap<KeySet>,
    /// Bumped after every change of `set` (never before: a reader that sees the old value may
    /// have verified with the old keys, and must find its cached result retired).
    generation: AtomicU64,
    refresher: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(h) = self.refresher.lock().ok().and_then(|mut g| g.take()) {
            h.abort();
        }
    }
}

/// The verification keys of one issuer. Cheap to clone (shared).
#[derive(Clone)]
pub struct KeyStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for KeyStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let source = match &self.inner.kind {
            Kind::Static(s) => format!("{s:?}"),
            Kind::Remote(r) => r.cfg.url.to_string(),
        };
        f.debug_struct("KeyStore")
            .field("source", &source)
            .field("keys", &self.inner.set.load().entries.len())
            .finish()
    }
}

impl KeyStore {
    /// Loads `source`. File sources must be valid. A remote JWKS is fetched once; when that
    /// fails the cache file (if any) is used, else the store starts empty (every token is
    /// refused with [`KeyError::NoKeys`]) and keeps retrying in the background. Must be called
    /// inside a Tokio runtime; remote stores spawn a refresh task that ends when the last clone
    /// of the store is dropped.
    pub async fn new(source: KeySource) -> Result<KeyStore, KeySourceError> {
        let symmetric = source.is_symmetric();
        match source {
            KeySource::JwksUrl(cfg) => Self::new_remote(cfg).await,
            other => {
                let set = load_static(&other)?;
                Ok(KeyStore {
                    inner: Arc::new(Inner {
                        kind: Kind::Static(other),
                        symmetric,
                        set: ArcSwap::from_pointee(set),
                        generation: AtomicU64::new(0),
                        refresher: Mutex::new(None),
                    }),
                })
            }
        }
    }

    async fn new_remote(cfg: JwksUrlConfig) -> Result<KeyStore, KeySourceError> {
        check_url(&cfg.url)?;
        let client = build_client(cfg.ca.as_deref(), cfg.timeout)?;
        let remote = Remote {
            cfg,
            client,
            fetch_lock: tokio::sync::Mutex::new(()),
            completed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            state: Mutex::new(FetchState::default()),
        };
        let store = KeyStore {
            inner: Arc::new(Inner {
                kind: Kind::Remote(Box::new(remote)),
                symmetric: false,
                set: ArcSwap::from_pointee(KeySet::default()),
                generation: AtomicU64::new(0),
                refresher: Mutex::new(None),
            }),
        };
        let Kind::Remote(remote) = &store.inner.kind else {
            unreachable!("constructed as remote above")
        };
        {
            let _guard = remote.fetch_lock.lock().await;
            if store.fetch_now(remote).await.is_err() {
                if let Some(path) = &remote.cfg.cache_file {
                    match load_cache_file(path) {
                        Ok((bytes, set)) => {
                            tracing::warn!(
                                jwks_url = %remote.cfg.url,
                                cache_file = %path.display(),
                                keys = set.entries.len(),
                                "identity provider unreachable at start; using the cached JWKS"
                            );
                            store.install(set);
                            lock(&remote.state).cached = Some(bytes);
                        }
                        Err(e) => tracing::warn!(
                            error = %e,
                            "JWKS cache file unusable; no keys until the identity provider answers"
                        ),
                    }
                } else {
                    tracing::warn!(
                        jwks_url = %remote.cfg.url,
                        "no keys until the identity provider answers; tokens are refused meanwhile"
                    );
                }
            }
        }
        let weak = Arc::downgrade(&store.inner);
        let task = tokio::spawn(refresh_loop(weak));
        *lock(&store.inner.refresher) = Some(task.abort_handle());
        Ok(store)
    }

    /// Replaces the key set and retires every verification made with the old one.
    fn install(&self, set: KeySet) {
        self.inner.set.store(Arc::new(set));
        self.inner.generation.fetch_add(1, Ordering::Release);
    }

    /// Changes whenever the key set changes: a verification cached at one generation is good
    /// only while the store is still at it (see [`crate::auth::token_cache`]).
    pub fn generation(&self) -> u64 {
        self.inner.generation.load(Ordering::Acquire)
    }

    /// Whether this store holds an HMAC secret (HS* algorithms) rather than public keys.
    pub fn is_symmetric(&self) -> bool {
        self.inner.symmetric
    }

    /// The one key for a token with key id `kid` and algorithm `alg`. A token without `kid`
    /// gets [`KeyError::Ambiguous`] when several keys fit; [`KeyStore::candidates`] returns them
    /// all instead.
    pub async fn key_for(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Arc<DecodingKey>, KeyError> {
        let mut keys = self.candidates(kid, alg).await?;
        if keys.len() == 1 {
            Ok(keys.remove(0))
        } else {
            Err(KeyError::Ambiguous)
        }
    }

    /// Every key that may have signed a token with key id `kid` and algorithm `alg`:
    /// the keys carrying `kid`; else (after a single-flight, rate-limited refetch for remote
    /// sets) the keys without a key id; for a token without `kid`, every key that fits `alg`.
    pub async fn candidates(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Vec<Arc<DecodingKey>>, KeyError> {
        match &self.inner.kind {
            Kind::Static(_) => self.inner.set.load().lookup(kid, alg, true),
            Kind::Remote(remote) => {
                let seen = remote.completed.load(Ordering::Acquire);
                match self.inner.set.load().lookup(kid, alg, false) {
                    Err(KeyError::UnknownKey | KeyError::NoKeys) => {}
                    other => return other,
                }
                self.refetch_on_miss(remote, seen).await;
                self.inner.set.load().lookup(kid, alg, true)
            }
        }
    }

    /// A fetch caused by a key miss: skipped when another fetch completed since the miss was
    /// seen (its result is used instead) or when the last attempt is under
    /// `min_refetch_interval` old.
    async fn refetch_on_miss(&self, remote: &Remote, seen: u64) {
        let _guard = remote.fetch_lock.lock().await;
        if remote.completed.load(Ordering::Acquire) != seen {
            return;
        }
        let recent = lock(&remote.state)
            .last_attempt
            .is_some_and(|t| t.elapsed() < remote.cfg.min_refetch_interval);
        if recent {
            tracing::debug!(jwks_url = %remote.cfg.url, "unknown key id; refetch rate-limited");
            return;
        }
        tracing::info!(jwks_url = %remote.cfg.url, "unknown key id; refetching JWKS");
        let _ = self.fetch_now(remote).await;
    }

    /// Reloads now: refetches a remote JWKS (single-flight, not rate-limited) or re-reads the
    /// files. On failure the current keys stay in place. Returns the number of keys loaded.
    pub async fn refresh(&self) -> Result<usize, KeySourceError> {
        match &self.inner.kind {
            Kind::Static(source) => {
                let source = source.clone();
                let set = tokio::task::spawn_blocking(move || load_static(&source))
                    .await
                    .map_err(|e| KeySourceError::InvalidJwks {
                        origin: "reload".into(),
                        reason: e.to_string(),
                    })??;
                let n = set.entries.len();
                self.install(set);
                Ok(n)
            }
            Kind::Remote(remote) => {
                let _guard = remote.fetch_lock.lock().await;
                self.fetch_now(remote).await
            }
        }
    }

    /// Whether the keys are fetched from a JWKS URL.
    pub fn is_remote(&self) -> bool {
        matches!(self.inner.kind, Kind::Remote(_))
    }

    /// Key count and, for remote sets, fetch history.
    pub fn status(&self) -> KeyStoreStatus {
        let keys = self.inner.set.load().entries.len();
        match &self.inner.kind {
            Kind::Static(_) => KeyStoreStatus {
                keys,
                fetches: 0,
                failures: 0,
                last_success: None,
                last_error: None,
            },
            Kind::Remote(remote) => {
                let st = lock(&remote.state);
                KeyStoreStatus {
                    keys,
                    fetches: remote.completed.load(Ordering::Acquire),
                    failures: remote.failed.load(Ordering::Relaxed),
                    last_success: st.last_success.map(|(_, t)| t),
                    last_error: st.last_error.clone(),
                }
            }
        }
    }

    /// One fetch; the caller holds `fetch_lock`. Installs the new set on success; logs
    /// failures.
    async fn fetch_now(&self, remote: &Remote) -> Result<usize, KeySourceError> {
        lock(&remote.state).last_attempt = Some(Instant::now());
        let result = fetch(remote).await;
        // The rate limit counts from the end of an attempt, so a slow provider is not asked
        // again the moment it answers.
        lock(&remote.state).last_attempt = Some(Instant::now());
        remote.completed.fetch_add(1, Ordering::AcqRel);
        match result {
            Ok((bytes, set)) => {
                let n = set.entries.len();
                let changed = {
                    let mut st = lock(&remote.state);
                    st.last_success = Some((Instant::now(), SystemTime::now()));
                    st.last_error = None;
                    let changed = st.cached.as_ref() != Some(&bytes);
                    st.cached = Some(bytes.clone());
                    changed
                };
                // The same bytes are the same keys: the set in place, and the verifications
                // cached with it, stay.
                if changed {
                    self.install(set);
                    tracing::info!(jwks_url = %remote.cfg.url, keys = n, "JWKS loaded");
                    if let Some(path) = remote.cfg.cache_file.clone() {
                        let written = tokio::task::spawn_blocking(move || {
                            write_atomically(&path, &bytes).map_err(|e| (path, e))
                        })
                        .await;
                        if let Ok(Err((path, e))) = written {
                            tracing::warn!(cache_file = %path.display(), error = %e, "cannot write the JWKS cache file");
                        }
                    }
                } else {
                    tracing::debug!(jwks_url = %remote.cfg.url, keys = n, "JWKS unchanged");
                }
                Ok(n)
            }
            Err(e) => {
                remote.failed.fetch_add(1, Ordering::Relaxed);
                let mut st = lock(&remote.state);
                st.last_error = Some(e.to_string());
                let age = st.last_success.map(|(t, _)| t.elapsed());
                drop(st);
                match age {
                    Some(age) => tracing::warn!(
                        jwks_url = %remote.cfg.url, error = %e, stale_for = ?age,
                        "JWKS fetch failed; serving the last good key set"
                    ),
                    None => tracing::warn!(
                        jwks_url = %remote.cfg.url, error = %e,
                        "JWKS fetch failed; no fetched key set yet"
                    ),
                }
                Err(e)
            }
        }
    }
}

/// Shortest pause of the background refresh task, whatever the configuration says.
const MIN_REFRESH_PAUSE: Duration = Duration::from_millis(100);

/// Background refresh: every `refresh` after the last success, or every
/// `min_refetch_interval` while the provider fails. Ends when the store is dropped.
async fn refresh_loop(weak: Weak<Inner>) {
    loop {
        let delay = {
            let Some(inner) = weak.upgrade() else { return };
            let Kind::Remote(remote) = &inner.kind else {
                return;
            };
            let st = lock(&remote.state);
            match (st.last_success, st.last_error.is_some()) {
                (Some((t, _)), false) => remote.cfg.refresh.saturating_sub(t.elapsed()),
                _ => remote.cfg.min_refetch_interval,
            }
            .max(MIN_REFRESH_PAUSE)
        };
        tokio::time::sleep(delay).await;
        let Some(inner) = weak.upgrade() else { return };
        let store = KeyStore { inner };
        let Kind::Remote(remote) = &store.inner.kind else {
            return;
        };
        let _guard = remote.fetch_lock.lock().await;
        let due = {
            let st = lock(&remote.state);
            match st.last_success {
                Some((t, _)) if st.last_error.is_none() => t.elapsed() >= remote.cfg.refresh,
                _ => st
                    .last_attempt
                    .is_none_or(|t| t.elapsed() >= remote.cfg.min_refetch_interval),
            }
        };
        if due {
            let _ = store.fetch_now(remote).await;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn fetch(remote: &Remote) -> Result<(Bytes, KeySet), KeySourceError> {
    let url = &remote.cfg.url;
    let fail = |reason: String| KeySourceError::Fetch {
        url: url.to_string(),
        reason,
    };
    let req = http::Request::get(url.clone())
        .header(
            http::header::ACCEPT,
            "application/jwk-set+json, application/json",
        )
        .header(
            http::header::USER_AGENT,
            concat!("mcp-edge/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::<Bytes>::new())
        .map_err(|e| fail(e.to_string()))?;
    let max = remote.cfg.max_body_bytes;
    let exchange = async {
        let resp = remote
            .client
            .request(req)
            .await
            .map_err(|e| fail(crate::upstream::error_chain(&e)))?;
        if resp.status() != http::StatusCode::OK {
            return Err(fail(format!("HTTP status {}", resp.status())));
        }
        let body = Limited::new(resp.into_body(), max)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    fail(format!("response larger than {max} bytes"))
                } else {
                    fail(format!("reading the response: {e}"))
                }
            })?;
        Ok(body.to_bytes())
    };
    let bytes = tokio::time::timeout(remote.cfg.timeout, exchange)
        .await
        .map_err(|_| {
            fail(format!(
                "no complete answer within {:?}",
                remote.cfg.timeout
            ))
        })??;
    let set = parse_jwks(&bytes, &url.to_string())?;
    Ok((bytes, set))
}

fn check_url(url: &Uri) -> Result<(), KeySourceError> {
    let bad = || KeySourceError::BadUrl(url.to_string());
    let https = url
        .scheme_str()
        .is_some_and(|s| s.eq_ignore_ascii_case("https"));
    let authority = url.authority().ok_or_else(bad)?;
    if !https || authority.host().is_empty() || authority.as_str().contains('@') {
        return Err(bad());
    }
    Ok(())
}

/// The system trust store (see [`certs::system_roots`]), in this module's error.
pub(crate) fn system_roots() -> Result<rustls::RootCertStore, KeySourceError> {
    certs::system_roots().map_err(|e| match e {
        certs::SystemRootsError::NotFound => KeySourceError::NoSystemRoots,
        certs::SystemRootsError::Ca(e) => KeySourceError::Ca(e),
    })
}

fn build_client(ca: Option<&Path>, timeout: Duration) -> Result<JwksClient, KeySourceError> {
    let roots = match ca {
        Some(path) => certs::load_ca_bundle(path)?,
        None => system_roots()?,
    };
    Ok(crate::http::client::https_client(roots, timeout, 1)?)
}

fn read_file(path: &Path) -> Result<Vec<u8>, KeySourceError> {
    std::fs::read(path).map_err(|error| KeySourceError::Read {
        path: path.to_path_buf(),
        error,
    })
}

fn load_static(source: &KeySource) -> Result<KeySet, KeySourceError> {
    match source {
        KeySource::JwksUrl(_) => unreachable!("remote sources are not static"),
        KeySource::JwksFile(path) => {
            let bytes = read_file(path)?;
            parse_jwks(&bytes, &path.display().to_string())
        }
        KeySource::PemKeys(paths) => {
            if paths.is_empty() {
                return Err(KeySourceError::InvalidKeyFile {
                    path: PathBuf::new(),
                    reason: "no PEM key files configured".into(),
                });
            }
            let entries = paths
                .iter()
                .map(|p| load_pem_key(p))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(KeySet { entries })
        }
        KeySource::HmacSecretFile(path) => Ok(KeySet {
            entries: vec![load_hmac_secret(path)?],
        }),
    }
}

fn load_cache_file(path: &Path) -> Result<(Bytes, KeySet), KeySourceError> {
    let bytes = read_file(path)?;
    let set = parse_jwks(&bytes, &path.display().to_string())?;
    Ok((Bytes::from(bytes), set))
}

const RSA_ALGS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];
const HMAC_ALGS: &[Algorithm] = &[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];

fn load_pem_key(path: &Path) -> Result<KeyEntry, KeySourceError> {
    let pem = read_file(path)?;
    let invalid = |reason: &str| KeySourceError::InvalidKeyFile {
        path: path.to_path_buf(),
        reason: reason.to_owned(),
    };
    let (key, algs): (DecodingKey, Vec<Algorithm>) = if let Ok(key) =
        DecodingKey::from_rsa_pem(&pem)
    {
        let bits = key
            .try_get_as_bytes()
            .ok()
            .and_then(rsa_public_key_bits)
            .unwrap_or(0);
        if bits < MIN_RSA_BITS {
            return Err(invalid(&format!(
                "RSA key of {bits} bits; at least {MIN_RSA_BITS} are required"
            )));
        }
        (key, RSA_ALGS.to_vec())
    } else if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
        let alg = match key.try_get_as_bytes().map(<[u8]>::len) {
            Ok(65) => Algorithm::ES256,
            Ok(97) => Algorithm::ES384,
            _ => {
                return Err(invalid(
                    "EC key on an unsupported curve (P-256 and P-384 only)",
                ));
            }
        };
        (key, vec![alg])
    } else if let Ok(key) = DecodingKey::from_ed_pem(&pem) {
        if key.try_get_as_bytes().map(<[u8]>::len) != Ok(32) {
            return Err(invalid("EdDSA key that is not Ed25519"));
        }
        (key, vec![Algorithm::EdDSA])
    } else {
        return Err(invalid(
            "no usable public key; expected one PEM `PUBLIC KEY`, `RSA PUBLIC KEY` or `CERTIFICATE` block (RSA, P-256, P-384 or Ed25519)",
        ));
    };
    Ok(KeyEntry {
        kid: None,
        algs,
        key: Arc::new(key),
    })
}

fn load_hmac_secret(path: &Path) -> Result<KeyEntry, KeySourceError> {
    let mut secret = read_file(path)?;
    while secret.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        secret.pop();
    }
    let invalid = |reason: String| KeySourceError::InvalidKeyFile {
        path: path.to_path_buf(),
        reason,
    };
    if secret.starts_with(b"-----BEGIN") {
        // Never turn key material meant for asymmetric verification into an HMAC secret.
        return Err(invalid(
            "looks like a PEM key; an HMAC secret file holds random bytes, not a public key".into(),
        ));
    }
    if secret.len() < MIN_HMAC_SECRET_BYTES {
        return Err(invalid(format!(
            "HMAC secret is {} bytes; at least {MIN_HMAC_SECRET_BYTES} are required",
            secret.len()
        )));
    }
    Ok(KeyEntry {
        kid: None,
        algs: HMAC_ALGS.to_vec(),
        key: Arc::new(DecodingKey::from_secret(&secret)),
    })
}

/// Modulus size of a PKCS#1 `RSAPublicKey` (`SEQUENCE { INTEGER n, INTEGER e }`).
fn rsa_public_key_bits(der: &[u8]) -> Option<usize> {
    fn read_len(b: &[u8]) -> Option<(usize, &[u8])> {
        let (&first, rest) = b.split_first()?;
        if first < 0x80 {
            return Some((usize::from(first), rest));
        }
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        Some((len, &rest[n..]))
    }
    let (&tag, rest) = der.split_first()?;
    if tag != 0x30 {
        return None;
    }
    let (_, rest) = read_len(rest)?;
    let (&tag, rest) = rest.split_first()?;
    if tag != 0x02 {
        return None;
    }
    let (len, rest) = read_len(rest)?;
    let n = rest.get(..len)?;
    Some(modulus_bits(n))
}

fn modulus_bits(n: &[u8]) -> usize {
    let n = match n.iter().position(|b| *b != 0) {
        Some(i) => &n[i..],
        None => return 0,
    };
    n.len() * 8 - n[0].leading_zeros() as usize
}

/// Parses a JWKS document, keeping the usable signature keys. A document without any usable
/// key is an error, so a broken answer never replaces a good set.
fn parse_jwks(bytes: &[u8], origin: &str) -> Result<KeySet, KeySourceError> {
    let invalid = |reason: String| KeySourceError::InvalidJwks {
        origin: origin.to_owned(),
        reason,
    };
    let doc: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| invalid(format!("not JSON: {e}")))?;
    let keys = doc
        .get("keys")
        .and_then(|k| k.as_array())
        .ok_or_else(|| invalid("no `keys` array".into()))?;
    if keys.len() > MAX_KEYS {
        tracing::warn!(
            origin,
            keys = keys.len(),
            "JWKS has more than {MAX_KEYS} keys; the rest are ignored"
        );
    }
    let mut entries = Vec::new();
    for (i, value) in keys.iter().take(MAX_KEYS).enumerate() {
        match jwk_entry(value) {
            Ok(entry) => entries.push(entry),
            Err(why) => tracing::debug!(origin, index = i, reason = why, "JWKS key skipped"),
        }
    }
    if entries.is_empty() {
        return Err(invalid("no usable signature key".into()));
    }
    Ok(KeySet { entries })
}

fn b64_len(s: &str) -> Option<usize> {
    URL_SAFE_NO_PAD.decode(s).ok().map(|v| v.len())
}

/// One JWK → key entry, or why it is skipped.
fn jwk_entry(value: &serde_json::Value) -> Result<KeyEntry, &'static str> {
    let jwk: Jwk = serde_json::from_value(value.clone()).map_err(|_| "not a JWK")?;
    match &jwk.common.public_key_use {
        None | Some(PublicKeyUse::Signature) => {}
        Some(_) => return Err("`use` is not `sig`"),
    }
    if let Some(ops) = &jwk.common.key_operations
        && !ops.iter().any(|op| matches!(op, KeyOperations::Verify))
    {
        return Err("`key_ops` lacks `verify`");
    }
    let by_type: Vec<Algorithm> = match &jwk.algorithm {
        AlgorithmParameters::RSA(p) => {
            let n = URL_SAFE_NO_PAD
                .decode(&p.n)
                .map_err(|_| "bad RSA modulus")?;
            if modulus_bits(&n) < MIN_RSA_BITS {
                return Err("RSA key shorter than 2048 bits");
            }
            RSA_ALGS.to_vec()
        }
        AlgorithmParameters::EllipticCurve(p) => {
            let (alg, size) = match p.curve {
                EllipticCurve::P256 => (Algorithm::ES256, 32),
                EllipticCurve::P384 => (Algorithm::ES384, 48),
                _ => return Err("unsupported curve"),
            };
            if b64_len(&p.x) != Some(size) || b64_len(&p.y) != Some(size) {
                return Err("bad EC coordinates");
            }
            vec![alg]
        }
        AlgorithmParameters::OctetKeyPair(p) => {
            if p.curve != EllipticCurve::Ed25519 || b64_len(&p.x) != Some(32) {
                return Err("unsupported OKP key");
            }
            vec![Algorithm::EdDSA]
        }
        AlgorithmParameters::OctetKey(_) => {
            return Err("symmetric keys are never taken from a JWKS");
        }
        _ => return Err("unsupported key type"),
    };
    let algs = match &jwk.common.key_algorithm {
        None => by_type,
        Some(ka) => {
            let alg = Algorithm::from_str(&ka.to_string()).map_err(|_| "unsupported `alg`")?;
            if !by_type.contains(&alg) {
                return Err("`alg` does not fit the key type");
            }
            vec![alg]
        }
    };
    debug_assert!(algs.iter().all(|a| a.family() != AlgorithmFamily::Hmac));
    let key = DecodingKey::from_jwk(&jwk).map_err(|_| "unusable key parameters")?;
    Ok(KeyEntry {
        kid: jwk.common.key_id.clone(),
        algs,
        key: Arc::new(key),
    })
}

/// Writes `bytes` to a temporary file beside `path`, syncs it and renames it over `path`, so
/// readers see the old or the new document, never a torn one.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("cache_file has no file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::EncodingKey;
    use serde_json::json;

    fn ec_jwk(alg: Algorithm) -> (EncodingKey, serde_json::Value) {
        let ring = match alg {
            Algorithm::ES256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            _ => &rcgen::PKCS_ECDSA_P384_SHA384,
        };
        let kp = rcgen::KeyPair::generate_for(ring).unwrap();
        let enc = EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).unwrap();
        let jwk = Jwk::from_encoding_key(&enc, alg).unwrap();
        (enc, serde_json::to_value(jwk).unwrap())
    }

    fn with(mut v: serde_json::Value, k: &str, val: serde_json::Value) -> serde_json::Value {
        v[k] = val;
        v
    }

    fn without(mut v: serde_json::Value, k: &str) -> serde_json::Value {
        v.as_object_mut().unwrap().remove(k);
        v
    }

    #[test]
    fn jwks_keeps_only_signature_keys() {
        let (_, p256) = ec_jwk(Algorithm::ES256);
        let (_, p384) = ec_jwk(Algorithm::ES384);
        let doc = json!({ "keys": [
            with(p256.clone(), "kid", json!("a")),
            with(with(p256.clone(), "kid", json!("enc")), "use", json!("enc")),
            with(with(p256.clone(), "kid", json!("ops")), "key_ops", json!(["encrypt"])),
            with(with(p256.clone(), "kid", json!("wrongalg")), "alg", json!("ES384")),
            with(with(p256.clone(), "kid", json!("rsaoaep")), "alg", json!("RSA-OAEP")),
            with(without(p384.clone(), "alg"), "kid", json!("b")),
            { "kty": "oct", "kid": "hmac", "k": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0" },
            { "kty": "EC", "kid": "p521", "crv": "P-521", "x": "AA", "y": "AA" },
            { "kty": "RSA", "kid": "small", "n": URL_SAFE_NO_PAD.encode([0xffu8; 128]), "e": "AQAB" },
            { "kty": "weird", "kid": "w" },
            "not an object",
        ]});
        let set = parse_jwks(doc.to_string().as_bytes(), "test").unwrap();
        let kids: Vec<_> = set.entries.iter().map(|e| e.kid.clone().unwrap()).collect();
        assert_eq!(kids, ["a", "b"]);
        assert_eq!(set.entries[0].algs, [Algorithm::ES256]);
        assert_eq!(set.entries[1].algs, [Algorithm::ES384]);
    }

    #[test]
    fn jwks_without_usable_keys_is_an_error() {
        for doc in [
            "[]",
            "{}",
            r#"{"keys": []}"#,
            r#"{"keys": [{"kty":"oct","k":"AAAA"}]}"#,
            "not json",
        ] {
            assert!(parse_jwks(doc.as_bytes(), "t").is_err(), "{doc}");
        }
    }

    #[test]
    fn lookup_rules() {
        let (_, a) = ec_jwk(Algorithm::ES256);
        let (_, b) = ec_jwk(Algorithm::ES256);
        let (_, c) = ec_jwk(Algorithm::ES384);
        let doc = json!({ "keys": [
            with(a, "kid", json!("a")),
            without(b, "kid"),
            with(c, "kid", json!("c")),
        ]});
        let set = parse_jwks(doc.to_string().as_bytes(), "t").unwrap();
        assert_eq!(
            set.lookup(Some("a"), Algorithm::ES256, false)
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            set.lookup(Some("a"), Algorithm::ES384, true).unwrap_err(),
            KeyError::AlgorithmMismatch
        );
        assert_eq!(
            set.lookup(Some("zz"), Algorithm::ES256, false).unwrap_err(),
            KeyError::UnknownKey
        );
        // kid-less keys are candidates for an unknown kid only with the fallback.
        assert_eq!(
            set.lookup(Some("zz"), Algorithm::ES256, true)
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            set.lookup(Some("zz"), Algorithm::ES384, true).unwrap_err(),
            KeyError::UnknownKey
        );
        assert_eq!(set.lookup(None, Algorithm::ES256, true).unwrap().len(), 2);
        assert_eq!(
            set.lookup(None, Algorithm::HS256, true).unwrap_err(),
            KeyError::UnknownKey
        );
        assert_eq!(
            KeySet::default()
                .lookup(None, Algorithm::ES256, true)
                .unwrap_err(),
            KeyError::NoKeys
        );
    }

    #[test]
    fn rsa_modulus_size_from_pkcs1() {
        // SEQUENCE { INTEGER (257 bytes, leading 0) , INTEGER 65537 }
        let mut n = vec![0u8];
        n.extend([0xc0u8; 256]);
        let mut body = vec![0x02, 0x82, 0x01, 0x01];
        body.extend(&n);
        body.extend([0x02, 0x03, 0x01, 0x00, 0x01]);
        let mut der = vec![0x30, 0x82];
        der.extend((body.len() as u16).to_be_bytes());
        der.extend(body);
        assert_eq!(rsa_public_key_bits(&der), Some(2048));
        assert_eq!(rsa_public_key_bits(&[0x30]), None);
        assert_eq!(modulus_bits(&[0, 0, 1]), 1);
    }

    #[tokio::test]
    async fn pem_and_hmac_sources() {
        let dir = tempfile::tempdir().unwrap();
        let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let ed = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let ec_path = dir.path().join("ec.pem");
        let ed_path = dir.path().join("ed.pem");
        std::fs::write(&ec_path, ec.public_key_pem()).unwrap();
        std::fs::write(&ed_path, ed.public_key_pem()).unwrap();
        let store = KeyStore::new(KeySource::PemKeys(vec![ec_path.clone(), ed_path]))
            .await
            .unwrap();
        assert!(!store.is_symmetric());
        assert!(store.key_for(Some("any"), Algorithm::ES384).await.is_ok());
        assert!(store.key_for(None, Algorithm::EdDSA).await.is_ok());
        assert_eq!(
            store.key_for(None, Algorithm::ES256).await.unwrap_err(),
            KeyError::UnknownKey
        );
        assert_eq!(
            store.key_for(None, Algorithm::HS256).await.unwrap_err(),
            KeyError::UnknownKey
        );

        // A private key or garbage is not a public key file.
        let bad = dir.path().join("bad.pem");
        std::fs::write(&bad, "hello").unwrap();
        assert!(KeyStore::new(KeySource::PemKeys(vec![bad])).await.is_err());

        let secret = dir.path().join("secret");
        std::fs::write(&secret, "short\n").unwrap();
        let err = KeyStore::new(KeySource::HmacSecretFile(secret.clone()))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("at least 32"), "{err}");
        std::fs::write(&secret, std::fs::read(&ec_path).unwrap()).unwrap();
        let err = KeyStore::new(KeySource::HmacSecretFile(secret.clone()))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("PEM"), "{err}");
        std::fs::write(&secret, format!("{}\n", "k".repeat(40))).unwrap();
        let store = KeyStore::new(KeySource::HmacSecretFile(secret))
            .await
            .unwrap();
        assert!(store.is_symmetric());
        assert!(store.key_for(None, Algorithm::HS512).await.is_ok());
        assert!(store.key_for(None, Algorithm::ES256).await.is_err());
    }

    #[tokio::test]
    async fn jwks_file_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        let (_, a) = ec_jwk(Algorithm::ES256);
        let (_, b) = ec_jwk(Algorithm::ES256);
        std::fs::write(
            &path,
            json!({"keys": [with(a, "kid", json!("a"))]}).to_string(),
        )
        .unwrap();
        let store = KeyStore::new(KeySource::JwksFile(path.clone()))
            .await
            .unwrap();
        assert!(store.key_for(Some("a"), Algorithm::ES256).await.is_ok());
        assert!(store.key_for(Some("b"), Algorithm::ES256).await.is_err());
        std::fs::write(
            &path,
            json!({"keys": [with(b, "kid", json!("b"))]}).to_string(),
        )
        .unwrap();
        assert_eq!(store.refresh().await.unwrap(), 1);
        assert!(store.key_for(Some("b"), Algorithm::ES256).await.is_ok());
        // A broken file keeps the current keys.
        std::fs::write(&path, "{").unwrap();
        assert!(store.refresh().await.is_err());
        assert!(store.key_for(Some("b"), Algorithm::ES256).await.is_ok());
    }

    #[tokio::test]
    async fn jwks_url_must_be_https() {
        for url in [
            "http://127.0.0.1/jwks",
            "https://user:pw@idp.example/jwks",
            "/jwks",
        ] {
            let cfg = JwksUrlConfig::new(url.parse().unwrap());
            assert!(
                matches!(
                    KeyStore::new(KeySource::JwksUrl(cfg)).await,
                    Err(KeySourceError::BadUrl(_))
                ),
                "{url}"
            );
        }
    }

    #[test]
    fn system_bundle_is_found_when_present() {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        if crate::certs::SYSTEM_CA_FILES
            .iter()
            .any(|p| Path::new(p).is_file())
        {
            assert!(!system_roots().unwrap().is_empty());
        }
    }

    #[test]
    fn atomic_write_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.json");
        write_atomically(&path, b"one").unwrap();
        write_atomically(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
