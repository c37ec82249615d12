//! The long-lived home of upstream health. The gateway (and every [`Upstreams`] in it) is
//! rebuilt on each reload, but an endpoint's circuit, ejection history and counters must not
//! reset because an unrelated key changed: the registry, owned by the proxy, hands each new
//! snapshot the state already known for its endpoint URLs (and each route its retry budget),
//! forgets endpoints no longer configured, and restarts the active health checks for the new
//! snapshot.
//!
//! An endpoint URL used by several routes has one health state; its active check is the one
//! of the first route that configures it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio_util::sync::CancellationToken;

use super::Upstreams;
use super::breaker::{EndpointHealth, EndpointSnapshot};
use super::retry::RetryBudget;

/// Health of every configured endpoint, kept across gateway snapshots.
#[derive(Debug)]
pub struct HealthRegistry {
    /// Cancelled at shutdown: every check task stops with it.
    stop: CancellationToken,
    /// Touched only when a snapshot is adopted and when a snapshot is read, never per
    /// request (requests hold the `Arc`s directly), so a plain mutex is enough.
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// By endpoint URL, in first-configured order.
    endpoints: Vec<(String, Arc<EndpointHealth>)>,
    /// By route path.
    budgets: HashMap<String, Arc<RetryBudget>>,
    /// Cancels the check tasks of the snapshot adopted last.
    checks: CancellationToken,
}

impl HealthRegistry {
    /// An empty registry whose check tasks stop when `stop` is cancelled.
    pub fn new(stop: CancellationToken) -> Self {
        HealthRegistry {
            stop,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The data stays consistent if a holder panicked: every update is a whole assignment.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Gives the routes of a new snapshot (`(route path, upstreams)`) the health state and
    /// budgets already known, drops what is no longer configured, and restarts the checks.
    pub fn adopt<'a>(&self, routes: impl IntoIterator<Item = (&'a str, &'a mut Upstreams)>) {
        let mut inner = self.lock();
        inner.checks.cancel();
        let checks = self.stop.child_token();
        let mut endpoints: Vec<(String, Arc<EndpointHealth>)> = Vec::new();
        let mut budgets = HashMap::new();
        for (path, ups) in routes {
            let budget = inner
                .budgets
                .get(path)
                .cloned()
                .unwrap_or_else(|| ups.budget.clone());
            ups.budget = budget.clone();
            budgets.insert(path.to_owned(), budget);
            let client = ups.client.clone();
            let check = ups.settings.health_check.clone();
            for ep in &mut ups.endpoints {
                let key = ep.uri.to_string();
                if let Some((_, h)) = endpoints.iter().find(|(k, _)| *k == key) {
                    ep.health = h.clone();
                    continue;
                }
                if let Some((_, h)) = inner.endpoints.iter().find(|(k, _)| *k == key) {
                    ep.health = h.clone();
                }
                match &check {
                    Some(s) => super::health::spawn(
                        client.clone(),
                        &ep.uri,
                        ep.health.clone(),
                        s.clone(),
                        checks.clone(),
                    ),
                    None => ep.health.clear_check(),
                }
                endpoints.push((key, ep.health.clone()));
            }
        }
        for (uri, _) in &inner.endpoints {
            if !endpoints.iter().any(|(k, _)| k == uri) {
                tracing::info!(upstream = %uri, "endpoint left the config; its health state is dropped");
            }
        }
        inner.endpoints = endpoints;
        inner.budgets = budgets;
        inner.checks = checks;
    }

    /// The health of every configured endpoint, in configured order.
    pub fn snapshot(&self) -> Vec<EndpointSnapshot> {
        self.lock()
            .endpoints
            .iter()
            .map(|(_, h)| h.snapshot())
            .collect()
    }
}
