//! Wires a validated config into running listeners: [`prepare`]s it (certificates, issuers,
//! upstream clients, keys, before binding anything, so a bad file never leaves a
//! half-started proxy), binds, spawns the accept loops, and runs until a signal asks it to
//! stop.

use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::listener::PublicListener;
use crate::prepare::{PrepareError, Prepared, Purpose, prepare};
use crate::proxy::Proxy;
use crate::shutdown::Shutdown;

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The config names something unusable (certificates, keys, issuers, upstream clients):
    /// the same errors a reload and `check` report.
    #[error(transparent)]
    Prepare(#[from] PrepareError),
    /// The audit log cannot be opened.
    #[error("audit: {0}")]
    Audit(#[from] crate::audit::AuditError),
    /// Socket activation unusable.
    #[error(transparent)]
    Activation(#[from] crate::systemd::ActivationError),
    /// The OTLP exporter of `[telemetry.otlp]` could not be set up.
    #[cfg(feature = "otel")]
    #[error(transparent)]
    Telemetry(#[from] crate::telemetry::otel::OtelError),
    /// A socket could not be bound.
    #[error("cannot bind {what} on {addr}: {error}; is another process using the port?")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// Requested address.
        addr: SocketAddr,
        /// OS error (in the message, not chained, so it is printed once).
        error: std::io::Error,
    },
}

/// A started proxy.
pub struct Running {
    /// Address the public listener is bound to.
    pub addr: SocketAddr,
    /// Address of the admin listener, if configured.
    pub admin_addr: Option<SocketAddr>,
    /// The request pipeline (for reloads and introspection).
    pub proxy: Arc<Proxy>,
    /// Shutdown signals.
    pub shutdown: Shutdown,
    drain_timeout: std::time::Duration,
    tasks: TaskTracker,
    admin_stop: CancellationToken,
    admin_tasks: TaskTracker,
    audit: Option<Arc<crate::audit::AuditLog>>,
    /// Where sampled requests' spans go; flushed when the last request has ended.
    #[cfg(feature = "otel")]
    spans: Option<Arc<crate::telemetry::otel::OtlpSink>>,
    /// Certificate inventory, expiry alerts and metrics.
    pub monitor: Arc<crate::monitor::Monitor>,
    /// Applies certificate and config reloads.
    pub reloader: Arc<crate::reload::Reloader>,
    watcher_stop: CancellationToken,
}

impl Running {
    /// Starts graceful shutdown.
    pub fn begin_shutdown(&self) {
        self.shutdown.trigger(self.drain_timeout);
    }

    /// Waits until every listener and connection has finished, then stops the admin listener.
    pub async fn wait(self) {
        self.watcher_stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        self.admin_stop.cancel();
        self.admin_tasks.close();
        self.admin_tasks.wait().await;
        if let Some(audit) = &self.audit
            && let Err(e) = audit.flush().await
        {
            tracing::error!(error = %e, "audit log not flushed at exit");
        }
        // After every connection has ended, so the last requests' spans are queued too.
        #[cfg(feature = "otel")]
        if let Some(spans) = &self.spans
            && let Err(e) = spans.shutdown().await
        {
            tracing::warn!(error = %e, "spans still queued at exit were not exported");
        }
    }
}

/// Builds everything from `config` ([`prepare`]), binds the listeners and starts serving.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let Prepared {
        config,
        tls: material,
        gateway,
        audit,
        alerter,
        warnings,
    } = prepare(config, Purpose::Start).await?;
    for w in &warnings {
        w.log();
    }
    #[cfg(feature = "otel")]
    let spans = span_sink(&config.telemetry)?;
    #[cfg(not(feature = "otel"))]
    if let Some(v) = config.telemetry.ignored_variable {
        tracing::warn!(
            variable = v,
            "set, but this build has no `otel` feature: no traces are exported"
        );
    }

    let bind = |what: &'static str, addr: SocketAddr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|error| StartError::Bind { what, addr, error })
    };
    let mut activated = crate::systemd::activated_listeners()?;
    let passed = activated
        .iter()
        .position(|(n, _)| n.as_deref() == Some("https") || n.is_none())
        .map(|i| activated.remove(i).1);
    let public = match passed {
        Some(l) => TcpListener::from_std(l).map_err(|error| StartError::Bind {
            what: "listener.bind",
            addr: config.listener.bind,
            error,
        })?,
        None => bind("listener.bind", config.listener.bind).await?,
    };
    let admin = match &config.admin {
        Some(a) => Some(bind("admin.bind", a.bind).await?),
        None => None,
    };
    let local = |l: &TcpListener, what, addr| {
        l.local_addr()
            .map_err(|error| StartError::Bind { what, addr, error })
    };
    let addr = local(&public, "listener.bind", config.listener.bind)?;
    let admin_addr = match (&admin, &config.admin) {
        (Some(l), Some(a)) => Some(local(l, "admin.bind", a.bind)?),
        _ => None,
    };

    let shutdown = Shutdown::new();
    let tasks = TaskTracker::new();
    let audit = match audit {
        None => None,
        Some(a) => Some(Arc::new(crate::audit::AuditLog::open(&a.file, a.options)?)),
    };
    #[allow(unused_mut)] // only the `otel` feature adds to it
    let mut proxy = Proxy::new(gateway, shutdown.clone(), audit.clone());
    #[cfg(feature = "otel")]
    if let Some(s) = &spans {
        proxy = proxy.with_span_sink(s.clone());
    }
    let proxy = Arc::new(proxy);
    let tls = Arc::new(ArcSwap::new(material.config.clone()));
    let reloader = Arc::new(crate::reload::Reloader::new(
        config.source.clone(),
        tls.clone(),
        proxy.clone(),
        &material,
    ));
    let watcher_stop = CancellationToken::new();
    crate::reload::spawn_watcher(
        reloader.clone(),
        config.certs.rescan_interval,
        config.certs.watch,
        watcher_stop.clone(),
    );
    let monitor = Arc::new(crate::monitor::Monitor::new(
        proxy.clone(),
        reloader.clone(),
        alerter,
    ));
    monitor.clone().spawn(watcher_stop.clone());
    let listener = PublicListener {
        listener: public,
        tls: tls.clone(),
        proxy: proxy.clone(),
        http: config.http.clone(),
        handshake_timeout: config.listener.handshake_timeout,
        connections: Arc::new(Semaphore::new(config.listener.max_connections)),
        handshakes: Arc::new(Semaphore::new(config.listener.max_handshakes_in_flight)),
        per_ip: Arc::new(crate::listener::PerIpLimit::new(
            config.listener.max_connections_per_ip,
        )),
    };
    tasks.spawn(listener.run(shutdown.clone(), tasks.clone()));
    let admin_stop = CancellationToken::new();
    let admin_tasks = TaskTracker::new();
    if let Some(admin) = admin {
        admin_tasks.spawn(crate::admin::run(
            admin,
            proxy.clone(),
            shutdown.clone(),
            admin_stop.clone(),
            admin_tasks.clone(),
            Some(reloader.clone()),
            Some(monitor.clone()),
        ));
    }
    tracing::info!(%addr, admin = ?admin_addr, routes = config.routes.len(), "mcp-edge listening");
    Ok(Running {
        addr,
        admin_addr,
        proxy,
        shutdown,
        drain_timeout: config.shutdown.drain_timeout,
        tasks,
        admin_stop,
        admin_tasks,
        audit,
        #[cfg(feature = "otel")]
        spans,
        reloader,
        monitor,
        watcher_stop,
    })
}

/// The OTLP sink of `[telemetry.otlp]`, when export is on.
#[cfg(feature = "otel")]
fn span_sink(
    t: &crate::config::TelemetrySettings,
) -> Result<Option<Arc<crate::telemetry::otel::OtlpSink>>, StartError> {
    if let Some(v) = t.disabled_by {
        tracing::info!(variable = v, "trace export turned off by the environment");
    }
    let Some(o) = &t.otlp else {
        return Ok(None);
    };
    let sink = crate::telemetry::otel::OtlpSink::new(o)?;
    // Header names only: their values are credentials.
    let headers: Vec<&str> = o.headers.iter().map(|h| h.name.as_str()).collect();
    tracing::info!(
        endpoint = %o.endpoint,
        protocol = o.protocol.as_str(),
        sampler = %o.sampling,
        service_name = %o.service_name,
        headers = ?headers,
        "exporting traces over OTLP"
    );
    Ok(Some(Arc::new(sink)))
}

/// Runs until SIGTERM or Ctrl-C, then drains; a second signal forces an immediate stop.
pub async fn run_until_signal(running: Running) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    // The status line follows certificate health, not just the last reload.
    let mut status_tick = tokio::time::interval(std::time::Duration::from_secs(60));
    status_tick.tick().await;
    let notifier = crate::systemd::Notifier::from_env();
    let watchdog_stop = CancellationToken::new();
    if let Some(every) = notifier.watchdog_interval() {
        crate::systemd::spawn_watchdog(notifier.clone(), every, watchdog_stop.clone());
    }
    notifier.ready(&format!(
        "serving on {}; {}",
        running.addr,
        running.monitor.status_line()
    ));
    loop {
        tokio::select! {
            _ = term.recv() => {
                tracing::info!("SIGTERM received; draining");
                break;
            }
            _ = tokio::signal::ctrl_c() => {
                tracing::info!("interrupt received; draining");
                break;
            }
            _ = status_tick.tick() => {
                notifier.status(&format!(
                    "serving on {}; {}",
                    running.addr,
                    running.monitor.status_line()
                ));
            }
            _ = hup.recv() => {
                tracing::info!("SIGHUP received; reloading configuration and certificates");
                // The outcome (or why nothing changed) is logged by the reloader.
                notifier.reloading();
                match running.reloader.reload_config().await {
                    Ok(o) => notifier.reloaded(&format!("serving on {}; config reloaded: {o}", running.addr)),
                    Err(e) => notifier.reloaded(&format!("serving on {}; reload refused: {e}", running.addr)),
                }
            }
        }
    }
    notifier.stopping("draining connections");
    running.begin_shutdown();
    let shutdown = running.shutdown.clone();
    let forced = async {
        tokio::select! {
            _ = term.recv() => {},
            _ = tokio::signal::ctrl_c() => {},
        }
        tracing::warn!("second signal; stopping now");
        shutdown.force();
    };
    tokio::select! {
        () = running.wait() => {},
        () = async { forced.await; std::future::pending::<()>().await } => {},
    }
    watchdog_stop.cancel();
    tracing::info!("mcp-edge stopped");
    Ok(())
}
