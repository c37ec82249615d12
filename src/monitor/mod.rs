//! Certificate expiry monitoring and the Prometheus metrics of the admin listener.
//!
//! A background task takes the [`inventory`] of every certificate and CRL in use at start,
//! after every reload, and every `certs.rescan_interval` (at most five minutes), hands it to
//! the [`Alerter`] (logs, webhook, command, rate-limited), and keeps the latest copy for
//! `/metrics`, `/certs` and `/readyz`, so scrapes never touch the disk.

mod snapshot;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::certs::alerts::Alerter;
use crate::certs::inventory::{CertKind, CertStatus, Level, Report, inventory};
use crate::proxy::Proxy;
use crate::reload::Reloader;

/// Longest time between two expiry checks, whatever `rescan_interval` says.
const MAX_CHECK_INTERVAL: Duration = Duration::from_secs(300);

/// The latest certificate inventory and what was done with it.
pub struct Monitor {
    latest: ArcSwap<Vec<CertStatus>>,
    alerter: ArcSwap<Alerter>,
    proxy: Arc<Proxy>,
    reloader: Arc<Reloader>,
    wake: tokio::sync::Notify,
}

impl Monitor {
    /// A monitor for the running proxy; takes the first inventory at once.
    pub fn new(proxy: Arc<Proxy>, reloader: Arc<Reloader>, alerter: Alerter) -> Self {
        let statuses = inventory(proxy.gateway().config(), SystemTime::now());
        Monitor {
            latest: ArcSwap::from_pointee(statuses),
            alerter: ArcSwap::from_pointee(alerter),
            proxy,
            reloader,
            wake: tokio::sync::Notify::new(),
        }
    }

    /// Asks for a new inventory now (after a reload).
    pub fn refresh(&self) {
        self.wake.notify_one();
    }

    /// The latest inventory.
    pub fn statuses(&self) -> Arc<Vec<CertStatus>> {
        self.latest.load_full()
    }

    /// Whether a certificate the listener serves has expired (the proxy is then not ready).
    /// Judged on what is in service, not on the files: a refused replacement on disk does
    /// not make a proxy that still serves a valid certificate unready.
    pub fn serving_expired(&self) -> bool {
        let now = SystemTime::now();
        self.reloader
            .serving()
            .iter()
            .any(|c| c.info.time_left(now).is_none())
    }

    /// The `/certs` document: `{"certificates":[…],"worst":"…"}`.
    pub fn certs_json(&self) -> String {
        let statuses = self.statuses();
        serde_json::to_string_pretty(&Report::new(&statuses)).unwrap_or_else(|_| "{}".into())
    }

    /// One line for the systemd status: the certificate closest to expiry.
    pub fn status_line(&self) -> String {
        let statuses = self.statuses();
        let soonest = statuses
            .iter()
            .filter(|s| s.kind != CertKind::Crl)
            .min_by_key(|s| s.seconds_left);
        match soonest {
            Some(s) if s.level != Level::Ok => format!(
                "certificate {} {}: {} days left",
                s.source,
                s.level.as_str(),
                s.days_left()
            ),
            Some(s) => format!("certificates ok (next expiry in {} days)", s.days_left()),
            None => "no certificates".to_owned(),
        }
    }

    /// Runs checks until `stop`; a config reload that changes `[certs]` gets a new alerter
    /// that keeps the old one's memory of what was already sent.
    pub fn spawn(self: Arc<Self>, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                let cfg = self.proxy.gateway().config().clone();
                let now = SystemTime::now();
                let statuses = inventory(&cfg, now);
                self.latest.store(Arc::new(statuses.clone()));
                self.alerter.load().check(&statuses, now).await;
                let every = cfg.certs.rescan_interval.min(MAX_CHECK_INTERVAL);
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = self.wake.notified() => {}
                    () = self.reloader.applied_signal.notified() => {}
                    () = tokio::time::sleep(every) => {}
                }
                let cfg_now = self.proxy.gateway().config().clone();
                if !Arc::ptr_eq(&cfg, &cfg_now) {
                    match Alerter::new(&cfg_now.certs) {
                        Ok(new) => {
                            new.adopt_state(&self.alerter.load()).await;
                            self.alerter.store(Arc::new(new));
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "certs alerting not updated after reload; keeping the previous settings");
                        }
                    }
                }
            }
        })
    }

    /// The Prometheus text exposition of everything worth watching: the proxy's families,
    /// and those made from snapshots now (certificates, reloads, alerts, endpoint health, the
    /// limit store, identity providers, the process). Names: `docs/metrics.md`.
    pub fn metrics(&self) -> String {
        let mut root = Registry::default();
        self.proxy.metrics().register(&mut root);
        snapshot::build_info(&mut root);
        snapshot::upstream_health(&mut root, &self.proxy.upstream_health());
        snapshot::limit_store(&mut root, self.proxy.limits_store());
        snapshot::upstream_pool(&mut root, self.proxy.gateway().upstream_pool());
        snapshot::token_cache(&mut root, self.proxy.gateway().issuers.token_cache());
        snapshot::span_export(&mut root, self.proxy.span_counts());
        snapshot::identity_providers(
            &mut root,
            &self.proxy.gateway().issuers.statuses(),
            SystemTime::now(),
        );
        snapshot::process(&mut root);
        let registry = root.sub_registry_with_prefix("mcp_edge");

        let expiry = Family::<Vec<(String, String)>, Gauge>::default();
        for s in self.statuses().iter() {
            let labels = vec![
                ("kind".to_owned(), s.kind.as_str().to_owned()),
                ("source".to_owned(), s.source.clone()),
                ("path".to_owned(), s.path.display().to_string()),
                ("subject".to_owned(), s.subject.clone()),
            ];
            expiry.get_or_create(&labels).set(s.seconds_left);
        }
        registry.register(
            "cert_expiry_seconds",
            "Seconds until a certificate expires (CRLs: until nextUpdate); negative once past",
            expiry,
        );

        let stats = &self.reloader.stats;
        let reloads = Family::<Vec<(String, String)>, Counter>::default();
        for (what, result, value) in [
            ("certificates", "applied", &stats.tls_applied),
            ("certificates", "refused", &stats.tls_failed),
            ("config", "applied", &stats.config_applied),
            ("config", "refused", &stats.config_failed),
        ] {
            reloads
                .get_or_create(&vec![
                    ("what".to_owned(), what.to_owned()),
                    ("result".to_owned(), result.to_owned()),
                ])
                .inc_by(value.load(Ordering::Relaxed));
        }
        registry.register("reloads", "Reload attempts by outcome", reloads);

        let alerts = Family::<Vec<(String, String)>, Counter>::default();
        let a = self.alerter.load().stats();
        for (result, value) in [
            ("sent", a.sent),
            ("failed", a.failed),
            ("suppressed", a.suppressed),
        ] {
            alerts
                .get_or_create(&vec![("result".to_owned(), result.to_owned())])
                .inc_by(value);
        }
        registry.register("cert_alerts", "Certificate expiry alerts", alerts);

        let legacy = Gauge::<i64>::default();
        legacy.set(i64::try_from(self.proxy.legacy_sessions()).unwrap_or(i64::MAX));
        registry.register(
            "legacy_sse_sessions",
            "Legacy HTTP+SSE streams open on this instance",
            legacy,
        );

        if let Some(audit) = self.proxy.audit_stats() {
            let entries = Family::<Vec<(String, String)>, Counter>::default();
            for (result, value) in [
                ("written", audit.written),
                ("dropped", audit.dropped),
                ("failed", audit.failed),
            ] {
                entries
                    .get_or_create(&vec![("result".to_owned(), result.to_owned())])
                    .inc_by(value);
            }
            registry.register("audit_entries", "Audit log entries by outcome", entries);
        }

        let mut out = String::new();
        if encode(&mut out, &root).is_err() {
            return "# metrics could not be encoded\n".to_owned();
        }
        out
    }
}
