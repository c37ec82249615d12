//! Live reload of certificates and configuration, validated before anything is swapped.
//!
//! Two paths share one lock, so reloads never interleave:
//! - [`Reloader::reload_tls`]: the listener's TLS material from the current config — server
//!   certificates and keys, client CA bundle and CRLs — and the upstream client certificates.
//!   Triggered by file changes ([`spawn_watcher`]), the periodic rescan, SIGHUP and
//!   `POST /reload`. A digest of every file's bytes makes it a no-op when nothing changed.
//! - [`Reloader::reload_config`]: SIGHUP and `POST /reload` also re-read the config file and
//!   swap routes, policies, issuers and limits as one snapshot, together with TLS material
//!   built from the new file.
//!
//! Every candidate is loaded and checked in full (parses, key matches certificate, not
//! expired, covers the configured names, CRLs current) before one atomic swap. On any failure
//! the last good state keeps serving and the error names the file and the reason. Existing
//! connections keep the configuration they were accepted with, so open SSE streams are never
//! cut; new handshakes get the new certificate. Client CA or CRL changes build a new rustls
//! `ServerConfig` with a fresh ticketer, so a revoked client cannot resume an old session.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use aws_lc_rs::digest;
use rustls::ServerConfig;
use tokio_util::sync::CancellationToken;

use crate::certs::{CertError, LoadedCert};
use crate::config::{Config, ConfigError};
use crate::proxy::{Gateway, Proxy};

/// Why a reload was refused (the previous state stays in service).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// A certificate, key, CA bundle or CRL is unusable.
    #[error(transparent)]
    Cert(#[from] CertError),
    /// A replacement certificate has already expired.
    #[error("{path}: certificate expired at {not_after}; install a current certificate")]
    Expired {
        /// The file.
        path: PathBuf,
        /// Its not-after date (RFC 3339).
        not_after: String,
    },
    /// The default certificate does not cover the host clients use.
    #[error("{path}: certificate does not cover `{host}` (listener.public_url); it names [{sans}]")]
    HostNotCovered {
        /// The file.
        path: PathBuf,
        /// Host of `listener.public_url`.
        host: String,
        /// The certificate's DNS names.
        sans: String,
    },
    /// The listener TLS configuration could not be built.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsSetupError),
    /// The config file is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The new config's components could not be built (keys, upstream clients, issuers).
    #[error(transparent)]
    Start(#[from] crate::app::StartError),
}

/// Counters of reload attempts, for logs, `/metrics` and the systemd status line.
#[derive(Debug, Default)]
pub struct ReloadStats {
    /// TLS reloads that swapped new material in.
    pub tls_applied: AtomicU64,
    /// TLS reloads refused.
    pub tls_failed: AtomicU64,
    /// Config reloads applied.
    pub config_applied: AtomicU64,
    /// Config reloads refused.
    pub config_failed: AtomicU64,
    /// The last refusal, for `/certs` and status lines.
    pub last_error: Mutex<Option<String>>,
}

impl ReloadStats {
    fn failed(&self, counter: &AtomicU64, e: &ReloadError) {
        counter.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut last) = self.last_error.lock() {
            *last = Some(e.to_string());
        }
    }
}

/// TLS material built from one config, ready to swap in.
pub struct TlsMaterial {
    /// The listener configuration.
    pub config: Arc<ServerConfig>,
    /// The server certificates in it.
    pub certs: Vec<LoadedCert>,
    listener_digest: [u8; 32],
    upstream_digest: [u8; 32],
}

/// Every listener-side TLS file of `cfg`: server certificates and keys, client CA, CRLs.
pub fn listener_files(cfg: &Config) -> Vec<PathBuf> {
    let tls = &cfg.listener.tls;
    let mut files = vec![tls.cert.clone(), tls.key.clone()];
    for s in &tls.sni {
        files.push(s.cert.clone());
        files.push(s.key.clone());
    }
    files.extend(tls.client_auth.ca.iter().cloned());
    files.extend(tls.client_auth.crls.iter().cloned());
    files
}

/// Every upstream TLS file of `cfg` (CA bundles, client certificates and keys).
pub fn upstream_files(cfg: &Config) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for r in &cfg.routes {
        if let Some(t) = &r.upstream.tls {
            files.push(t.ca.clone());
            files.extend(t.client_cert.iter().cloned());
            files.extend(t.client_key.iter().cloned());
        }
    }
    files
}

/// SHA-256 over the names and contents of `files`. An unreadable file counts as a change
/// (marked, not an error here): the loaders that run next report it with its config key.
fn digest_files(files: &[PathBuf]) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for path in files {
        ctx.update(path.as_os_str().as_encoded_bytes());
        match std::fs::read(path) {
            Ok(bytes) => {
                ctx.update(&[1]);
                ctx.update(&(bytes.len() as u64).to_be_bytes());
                ctx.update(&bytes);
            }
            Err(_) => ctx.update(&[0]),
        }
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// Loads and checks the listener TLS material of `cfg`. `strict` (reloads) also refuses
/// expired certificates and a default certificate that does not cover `public_url`'s host;
/// at start-up those are logged instead, so one bad certificate does not stop every route.
///
/// An expired certificate that is already in service (same bytes) does not block a reload:
/// otherwise one forgotten SNI certificate would stop every other renewal.
pub fn build_tls(
    cfg: &Config,
    now: SystemTime,
    strict: bool,
    serving: &[LoadedCert],
) -> Result<TlsMaterial, ReloadError> {
    // Digest first: if a file is being rewritten while we read it, the next event or rescan
    // sees a different digest and loads again.
    let listener_digest = digest_files(&listener_files(cfg));
    let upstream_digest = digest_files(&upstream_files(cfg));
    let (resolver, certs) = crate::tls::load_resolver(&cfg.listener.tls)?;
    if strict {
        let served = |c: &LoadedCert| {
            serving
                .iter()
                .any(|s| s.certified.cert.first() == c.certified.cert.first())
        };
        if let Some(c) = certs
            .iter()
            .find(|c| c.info.time_left(now).is_none() && !served(c))
        {
            return Err(ReloadError::Expired {
                path: c.path.clone(),
                not_after: humantime::format_rfc3339_seconds(c.info.not_after).to_string(),
            });
        }
        if let (Some(default), Some(host)) = (certs.first(), cfg.listener.public_url.host()) {
            let ip = host
                .trim_matches(['[', ']'])
                .parse::<std::net::IpAddr>()
                .ok();
            let covered = match ip {
                Some(ip) => default.info.ip_names.contains(&ip),
                None => default.info.covers(host),
            };
            if !covered {
                return Err(ReloadError::HostNotCovered {
                    path: default.path.clone(),
                    host: host.to_owned(),
                    sans: default.info.dns_names.join(", "),
                });
            }
        }
    }
    let verifier = crate::auth::mtls::verifier(&cfg.listener.tls.client_auth, now)
        .map_err(crate::tls::TlsSetupError::from)?;
    let config =
        crate::tls::server_config(Arc::new(resolver), cfg.listener.tls.allow_tls12, verifier)?;
    Ok(TlsMaterial {
        config,
        certs,
        listener_digest,
        upstream_digest,
    })
}

/// What a reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadOutcome {
    /// New listener TLS material was swapped in.
    pub tls_changed: bool,
    /// Upstream clients were rebuilt (their certificates changed).
    pub upstreams_rebuilt: bool,
    /// A new config snapshot was swapped in.
    pub config_changed: bool,
    /// Settings that changed in the file but only take effect after a restart.
    pub needs_restart: Vec<&'static str>,
}

impl std::fmt::Display for ReloadOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "config {}, listener TLS {}, upstream clients {}",
            if self.config_changed {
                "reloaded"
            } else {
                "unchanged"
            },
            if self.tls_changed {
                "reloaded"
            } else {
                "unchanged"
            },
            if self.upstreams_rebuilt {
                "rebuilt"
            } else {
                "unchanged"
            },
        )?;
        if !self.needs_restart.is_empty() {
            write!(f, "; restart needed for {}", self.needs_restart.join(", "))?;
        }
        Ok(())
    }
}

/// Applies reloads to a running proxy.
pub struct Reloader {
    config_path: Option<PathBuf>,
    tls: Arc<ArcSwap<ServerConfig>>,
    proxy: Arc<Proxy>,
    applied: Mutex<([u8; 32], [u8; 32])>,
    serving: Mutex<Vec<LoadedCert>>,
    one_at_a_time: tokio::sync::Mutex<()>,
    /// The config the process started with: sockets, limits and files bound then.
    started: Arc<Config>,
    /// Counters.
    pub stats: ReloadStats,
    /// Woken whenever new material or config went into service (the expiry monitor
    /// re-reads the inventory then).
    pub applied_signal: tokio::sync::Notify,
}

impl Reloader {
    /// A reloader for the proxy started from `material`; `config_path` is `None` when the
    /// config did not come from a file (then only TLS material reloads).
    pub fn new(
        config_path: Option<PathBuf>,
        tls: Arc<ArcSwap<ServerConfig>>,
        proxy: Arc<Proxy>,
        material: &TlsMaterial,
    ) -> Self {
        Reloader {
            started: proxy.gateway().config().clone(),
            config_path,
            tls,
            proxy,
            applied: Mutex::new((material.listener_digest, material.upstream_digest)),
            serving: Mutex::new(material.certs.clone()),
            one_at_a_time: tokio::sync::Mutex::new(()),
            stats: ReloadStats::default(),
            applied_signal: tokio::sync::Notify::new(),
        }
    }

    /// The server certificates currently served.
    pub fn serving(&self) -> Vec<LoadedCert> {
        self.serving.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Reloads TLS material from the current config if any file changed.
    pub async fn reload_tls(&self) -> Result<ReloadOutcome, ReloadError> {
        let _one = self.one_at_a_time.lock().await;
        let gateway = self.proxy.gateway();
        let result = self.apply_tls(gateway.config(), Some(&gateway));
        match &result {
            Ok(o) if o.tls_changed || o.upstreams_rebuilt => {
                tracing::info!(outcome = %o, "certificates reloaded");
                self.applied_signal.notify_waiters();
            }
            Ok(_) => {}
            Err(e) => {
                self.stats.failed(&self.stats.tls_failed, e);
                tracing::error!(error = %e, "certificate reload refused; still serving the previous certificates");
            }
        }
        result
    }

    /// Re-reads the config file and applies it with its TLS material, or changes nothing.
    pub async fn reload_config(&self) -> Result<ReloadOutcome, ReloadError> {
        let Some(path) = &self.config_path else {
            return self.reload_tls().await;
        };
        let _one = self.one_at_a_time.lock().await;
        let result = self.apply_config(path).await;
        match &result {
            Ok(o) => {
                self.stats.config_applied.fetch_add(1, Ordering::Relaxed);
                self.applied_signal.notify_waiters();
                tracing::info!(outcome = %o, path = %path.display(), "configuration reloaded");
                for what in &o.needs_restart {
                    tracing::warn!(
                        setting = what,
                        "changed in the config file but only takes effect after a restart"
                    );
                }
            }
            Err(e) => {
                self.stats.failed(&self.stats.config_failed, e);
                tracing::error!(error = %e, path = %path.display(), "configuration reload refused; nothing changed");
            }
        }
        result
    }

    async fn apply_config(&self, path: &Path) -> Result<ReloadOutcome, ReloadError> {
        let new = Arc::new(crate::config::load(path)?);
        let needs_restart = fixed_at_start(&self.started, &new);
        // Build everything before touching anything.
        let material = build_tls(&new, SystemTime::now(), true, &self.serving())?;
        crate::certs::alerts::Alerter::new(&new.certs)
            .map_err(|e| ReloadError::Start(crate::app::StartError::Alerts(Box::new(e))))?;
        let tls_changed = self
            .applied
            .lock()
            .map(|a| a.0 != material.listener_digest)
            .unwrap_or(true);
        let gateway = crate::app::build_gateway(new.clone())
            .await
            .map_err(ReloadError::Start)?;
        self.tls.store(material.config.clone());
        self.proxy.swap(gateway);
        self.remember(&material, tls_changed);
        Ok(ReloadOutcome {
            tls_changed,
            upstreams_rebuilt: true,
            config_changed: true,
            needs_restart,
        })
    }

    fn apply_tls(
        &self,
        cfg: &Arc<Config>,
        gateway: Option<&Gateway>,
    ) -> Result<ReloadOutcome, ReloadError> {
        let (listener_now, upstream_now) = (
            digest_files(&listener_files(cfg)),
            digest_files(&upstream_files(cfg)),
        );
        let (listener_was, upstream_was) = self
            .applied
            .lock()
            .map(|a| *a)
            .unwrap_or(([0; 32], [0; 32]));
        let mut outcome = ReloadOutcome {
            tls_changed: false,
            upstreams_rebuilt: false,
            config_changed: false,
            needs_restart: Vec::new(),
        };
        if listener_now != listener_was {
            let material = build_tls(cfg, SystemTime::now(), true, &self.serving())?;
            self.tls.store(material.config.clone());
            if let Ok(mut s) = self.serving.lock() {
                *s = material.certs.clone();
            }
            if let Ok(mut a) = self.applied.lock() {
                a.0 = material.listener_digest;
            }
            self.stats.tls_applied.fetch_add(1, Ordering::Relaxed);
            outcome.tls_changed = true;
        }
        if upstream_now != upstream_was
            && let Some(g) = gateway
        {
            let rebuilt = g.rebuild().map_err(|e| ReloadError::Start(e.into()))?;
            self.proxy.swap(rebuilt);
            if let Ok(mut a) = self.applied.lock() {
                a.1 = upstream_now;
            }
            outcome.upstreams_rebuilt = true;
        }
        Ok(outcome)
    }

    fn remember(&self, material: &TlsMaterial, tls_changed: bool) {
        if let Ok(mut a) = self.applied.lock() {
            *a = (material.listener_digest, material.upstream_digest);
        }
        if let Ok(mut s) = self.serving.lock() {
            *s = material.certs.clone();
        }
        if tls_changed {
            self.stats.tls_applied.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Settings that changed since start but only take effect after a restart (they are bound
/// to sockets, the connection builder, the logger or open files).
fn fixed_at_start(started: &Config, new: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    let mut check = |name: &'static str, differs: bool| {
        if differs {
            out.push(name);
        }
    };
    check("listener.bind", new.listener.bind != started.listener.bind);
    check(
        "admin.bind",
        new.admin.as_ref().map(|a| a.bind) != started.admin.as_ref().map(|a| a.bind),
    );
    check(
        "listener.max_connections",
        new.listener.max_connections != started.listener.max_connections,
    );
    check(
        "listener.max_connections_per_ip",
        new.listener.max_connections_per_ip != started.listener.max_connections_per_ip,
    );
    check(
        "listener.handshake_timeout",
        new.listener.handshake_timeout != started.listener.handshake_timeout,
    );
    // Debug text compares whole tables without asking every settings type for PartialEq.
    check(
        "[http]",
        format!("{:?}", new.http) != format!("{:?}", started.http),
    );
    check(
        "shutdown.drain_timeout",
        new.shutdown.drain_timeout != started.shutdown.drain_timeout,
    );
    check(
        "[log]",
        format!("{:?}", new.log) != format!("{:?}", started.log),
    );
    check(
        "[audit]",
        format!("{:?}", new.audit) != format!("{:?}", started.audit),
    );
    check(
        "certs.watch / certs.rescan_interval",
        new.certs.watch != started.certs.watch
            || new.certs.rescan_interval != started.certs.rescan_interval,
    );
    out
}

/// Watches the parent directory of every TLS file (which catches in-place writes, renames,
/// certbot re-linking and Kubernetes `..data` swaps alike), debounces, and reloads; also
/// reloads every `rescan` in case an event was missed. Stops when `stop` fires.
pub fn spawn_watcher(
    reloader: Arc<Reloader>,
    rescan: Duration,
    watch: bool,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let mut debouncer = if watch {
            match notify_debouncer_full::new_debouncer(
                Duration::from_millis(500),
                None,
                move |res: notify_debouncer_full::DebounceEventResult| {
                    // inotify reports opens and reads too, including our own reads of these
                    // files: reacting to them would reload forever. A file closed after
                    // writing is a change (the debouncer may have folded the write into it).
                    use notify::event::{AccessKind, AccessMode, EventKind};
                    let changed = res.is_ok_and(|events| {
                        events.iter().any(|e| match e.kind {
                            EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
                            EventKind::Access(_) => false,
                            _ => true,
                        })
                    });
                    if changed {
                        let _ = tx.send(());
                    }
                },
            ) {
                Ok(d) => Some(d),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch certificate files; relying on the periodic rescan");
                    None
                }
            }
        } else {
            None
        };
        let mut watched: Vec<PathBuf> = Vec::new();
        let mut tick = tokio::time::interval(rescan);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            if let Some(d) = debouncer.as_mut() {
                let cfg = reloader.proxy.gateway().config().clone();
                let mut dirs: Vec<PathBuf> = listener_files(&cfg)
                    .into_iter()
                    .chain(upstream_files(&cfg))
                    .filter_map(|p| p.parent().map(Path::to_path_buf))
                    .collect();
                dirs.sort();
                dirs.dedup();
                if dirs != watched {
                    use notify::RecursiveMode;
                    for old in &watched {
                        let _ = d.unwatch(old);
                    }
                    for dir in &dirs {
                        if let Err(e) = d.watch(dir, RecursiveMode::NonRecursive) {
                            tracing::warn!(dir = %dir.display(), error = %e, "cannot watch directory; relying on the periodic rescan");
                        }
                    }
                    watched = dirs;
                }
            }
            tokio::select! {
                () = stop.cancelled() => break,
                Some(()) = rx.recv() => {
                    // Coalesce a burst (cert and key written one after the other).
                    while rx.try_recv().is_ok() {}
                }
                _ = tick.tick() => {}
                // A config reload may have moved the files: re-evaluate what to watch.
                () = reloader.applied_signal.notified() => continue,
            }
            let _ = reloader.reload_tls().await;
        }
    })
}
