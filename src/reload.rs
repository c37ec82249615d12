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
//! Every candidate is built and checked in full by [`crate::prepare`], the path start-up and
//! `check` take too (parses, key matches certificate, within its validity window unless
//! already in service, covers the configured names and `public_url`'s host, CRLs current),
//! before one atomic swap. On any failure
//! the last good state keeps serving and the error names the file and the reason. Existing
//! connections keep the configuration they were accepted with, so open SSE streams are never
//! cut; new handshakes get the new certificate. Client CA or CRL changes build a new rustls
//! `ServerConfig` with a fresh ticketer, so a revoked client cannot resume an old session.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use tokio_util::sync::CancellationToken;

use crate::certs::LoadedCert;
use crate::config::{Config, ConfigError};
use crate::prepare::{
    PrepareError, Purpose, TlsError, TlsMaterial, digest_files, listener_files, upstream_files,
};
use crate::proxy::{Gateway, Proxy};

mod links;

/// Why a reload was refused (the previous state stays in service).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The config file is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// What the config names could not be built or failed a check (TLS files, keys,
    /// issuers, upstream clients): the same errors start-up and `check` report.
    #[error(transparent)]
    Prepare(#[from] PrepareError),
}

impl From<TlsError> for ReloadError {
    fn from(e: TlsError) -> Self {
        ReloadError::Prepare(e.into())
    }
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
        let new = crate::config::load(path)?;
        let needs_restart = fixed_at_start(&self.started, &new);
        // Build everything before touching anything: the same path start-up takes.
        let serving = self.serving();
        let prepared = crate::prepare::prepare(new, Purpose::Reload { serving: &serving }).await?;
        for w in &prepared.warnings {
            w.log();
        }
        let tls_changed = self
            .applied
            .lock()
            .map(|a| a.0 != prepared.tls.listener_digest)
            .unwrap_or(true);
        // The alerter was built only to check `[certs]`: the monitor builds its own when it
        // sees the new config, carrying over what was already sent.
        self.tls.store(prepared.tls.config.clone());
        self.proxy.swap(prepared.gateway);
        self.remember(&prepared.tls, tls_changed);
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
            let serving = self.serving();
            let (material, warnings) = crate::prepare::tls(
                cfg,
                SystemTime::now(),
                Purpose::Reload { serving: &serving },
            )?;
            for w in &warnings {
                w.log();
            }
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
            let rebuilt = g.rebuild().map_err(|e| ReloadError::Prepare(e.into()))?;
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
/// to sockets, the connection builder, the logger, the span exporter or open files).
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
    // The exporter (and its connection, headers and sampler) is built once, at start; the
    // `OTEL_*` variables are part of it, but cannot change under a running process.
    check("[telemetry]", new.telemetry != started.telemetry);
    // Series are per process: which are recorded and how they are labelled is set at start.
    check("[metrics]", new.metrics != started.metrics);
    check(
        "certs.watch / certs.rescan_interval",
        new.certs.watch != started.certs.watch
            || new.certs.rescan_interval != started.certs.rescan_interval,
    );
    out
}

/// A debouncer over the platform's file watcher.
type Debouncer = notify_debouncer_full::Debouncer<
    notify::RecommendedWatcher,
    notify_debouncer_full::RecommendedCache,
>;

/// Identity of a directory (device, inode): a directory deleted and created again under the
/// same name is a new one, and the kernel dropped the watch on the old one.
#[cfg(unix)]
fn dir_identity(dir: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(dir).ok().map(|m| (m.dev(), m.ino()))
}

/// Without inode numbers, a directory is identified by its existence only.
#[cfg(not(unix))]
fn dir_identity(dir: &Path) -> Option<(u64, u64)> {
    dir.is_dir().then_some((0, 0))
}

/// What the watcher watches, kept in step with the link chains of the TLS files.
#[derive(Default)]
struct Watches {
    /// Every directory asked for, with its identity then and whether the watch was taken.
    dirs: std::collections::HashMap<PathBuf, (Option<(u64, u64)>, bool)>,
    /// Broken link chains already logged (file, problem), so each is logged once.
    reported: std::collections::HashSet<(PathBuf, String)>,
}

impl Watches {
    /// Re-resolves the link chain of every file and brings the watches in line: new
    /// directories watched, ones no longer on any chain unwatched, and a directory that was
    /// replaced (or that an event named itself, e.g. deleted) watched again. Called before
    /// each reload, so a change made after the new watch is in place raises an event and one
    /// made before it is seen by the reload that follows.
    fn refresh(&mut self, d: &mut Debouncer, files: &[PathBuf], touched: &[PathBuf]) {
        use notify::RecursiveMode;
        let mut wanted = std::collections::BTreeSet::new();
        let mut problems = std::collections::HashSet::new();
        for file in files {
            let chain = links::resolve(file);
            wanted.extend(chain.dirs);
            if let Some(broken) = chain.broken {
                problems.insert((file.clone(), broken.to_string()));
            }
        }
        for (file, problem) in problems.difference(&self.reported) {
            tracing::warn!(file = %file.display(), problem = %problem, "cannot follow this TLS file's links to the end; watching the directories reached, and the next change there is checked again");
        }
        // Forget problems that went away, so a recurrence is logged again.
        self.reported = problems;
        self.dirs.retain(|dir, (_, ok)| {
            let keep = wanted.contains(dir);
            if !keep && *ok {
                // Already gone when its directory was deleted: nothing to undo then.
                let _ = d.unwatch(dir);
            }
            keep
        });
        for dir in wanted {
            let id = dir_identity(&dir);
            let renew = touched.contains(&dir);
            if let Some((was, ok)) = self.dirs.get(&dir) {
                if *was == id && !renew {
                    continue;
                }
                if *ok {
                    let _ = d.unwatch(&dir);
                }
            }
            let ok = match d.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => true,
                Err(e) => {
                    // Logged once per directory identity: retried only when it changes.
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot watch directory; relying on the periodic rescan");
                    false
                }
            };
            self.dirs.insert(dir, (id, ok));
        }
    }
}

/// Watches every directory that decides what a TLS file opens: the file's own directory and,
/// when it is reached through links (certbot's `live/` into `archive/`, Kubernetes' `..data`,
/// any link to a link), the directory of every hop, re-resolved after each change so a
/// re-pointed link is followed. That catches in-place writes, renames and re-linking alike.
/// Debounces, and reloads; also reloads every `rescan` in case an event was missed. Stops
/// when `stop` fires.
pub fn spawn_watcher(
    reloader: Arc<Reloader>,
    rescan: Duration,
    watch: bool,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // Each batch of change events, as the paths they name.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<PathBuf>>();
        let mut debouncer = if watch {
            match notify_debouncer_full::new_debouncer(
                Duration::from_millis(500),
                None,
                move |res: notify_debouncer_full::DebounceEventResult| {
                    // inotify reports opens too, including our own reads of these files (and
                    // of the watched directories): reacting to them would reload forever. A
                    // file closed after writing is a change (the debouncer may have folded
                    // the write into it).
                    use notify::event::{AccessKind, AccessMode, EventKind};
                    let Ok(events) = res else { return };
                    let mut changed = false;
                    let mut paths = Vec::new();
                    for e in events.iter().filter(|e| match e.kind {
                        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
                        EventKind::Access(_) => false,
                        _ => true,
                    }) {
                        changed = true;
                        paths.extend(e.paths.iter().cloned());
                    }
                    if changed {
                        let _ = tx.send(paths);
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
        let mut watches = Watches::default();
        let files = |r: &Reloader| {
            let cfg = r.proxy.gateway().config().clone();
            let mut f = listener_files(&cfg);
            f.extend(upstream_files(&cfg));
            f
        };
        if let Some(d) = debouncer.as_mut() {
            watches.refresh(d, &files(&reloader), &[]);
        }
        let mut tick = tokio::time::interval(rescan);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            let mut touched = Vec::new();
            tokio::select! {
                () = stop.cancelled() => break,
                Some(paths) = rx.recv() => {
                    touched = paths;
                    // Coalesce a burst (cert and key written one after the other).
                    while let Ok(more) = rx.try_recv() {
                        touched.extend(more);
                    }
                }
                _ = tick.tick() => {}
                // A config reload may have moved the files: re-evaluate what to watch, then
                // check for changes made since that reload read them.
                () = reloader.applied_signal.notified() => {}
            }
            // A link may point elsewhere now: watch its new target before reading it.
            if let Some(d) = debouncer.as_mut() {
                watches.refresh(d, &files(&reloader), &touched);
            }
            let _ = reloader.reload_tls().await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        let text = r#"
[listener]
bind = "127.0.0.1:8443"
public_url = "https://localhost:8443"
[listener.tls]
cert = "server.pem"
key = "server.key"
[[routes]]
path = "/mcp"
upstream = "http://127.0.0.1:9000/mcp"
"#;
        crate::config::parse(text, Path::new("edge.toml"), Path::new("/etc/mcp-edge"))
            .expect("valid config")
    }

    #[test]
    fn telemetry_changes_need_a_restart() {
        let started = config();
        assert!(fixed_at_start(&started, &config()).is_empty());
        let mut new = config();
        // As `[telemetry.otlp]` (or an `OTEL_*` variable) resolves in an `otel` build.
        new.telemetry.otlp = Some(crate::config::OtlpSettings {
            endpoint: "http://127.0.0.1:4318/v1/traces".to_owned(),
            endpoint_source: "default",
            protocol: crate::config::OtlpProtocol::HttpProtobuf,
            sampling: crate::config::Sampling {
                parent_based: true,
                ratio: 1.0,
            },
            service_name: "mcp-edge".to_owned(),
            timeout: Duration::from_secs(10),
            headers: Vec::new(),
        });
        assert_eq!(fixed_at_start(&started, &new), ["[telemetry]"]);
        let mut other = new.clone();
        if let Some(o) = other.telemetry.otlp.as_mut() {
            o.headers.push(crate::config::OtlpHeader {
                name: "x-api-key".to_owned(),
                value: "rotated".to_owned(),
                from_env: false,
            });
        }
        assert_eq!(
            fixed_at_start(&new, &other),
            ["[telemetry]"],
            "a new header value counts, though it is never shown"
        );
    }
}
