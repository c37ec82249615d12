//! Active health checks: a GET to a configured path of each endpoint, on a timer. An endpoint
//! is marked unhealthy after `unhealthy_threshold` failed probes in a row (a non-2xx answer,
//! no answer within `timeout`, or no connection) and healthy again after `healthy_threshold`
//! passes. Unhealthy endpoints get no new sessionless requests and their sessions get 404.
//!
//! Checks are off unless configured: MCP has no standard health path, and probing the MCP
//! endpoint itself would open streams or sessions on the backend. Endpoints start healthy, so
//! a proxy that starts (or reloads) does not refuse traffic before the first probe.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Request, Uri, header};
use http_body_util::{BodyExt, Limited};
use tokio_util::sync::CancellationToken;

use super::Client;
use super::breaker::EndpointHealth;

/// Most of a probe answer read (then discarded), so the connection can be reused.
const PROBE_BODY_LIMIT: usize = 64 * 1024;

/// Settings of the active health check of every endpoint of a route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckSettings {
    /// Path (and query) probed on each endpoint's host, e.g. `/healthz`.
    pub path: String,
    /// Time between probes.
    pub interval: Duration,
    /// Longest wait for a probe's answer head.
    pub timeout: Duration,
    /// Passing probes in a row that mark an unhealthy endpoint healthy.
    pub healthy_threshold: u32,
    /// Failing probes in a row that mark a healthy endpoint unhealthy.
    pub unhealthy_threshold: u32,
}

/// The probe URL of `endpoint`: its scheme and authority with the check's path.
pub(crate) fn probe_uri(endpoint: &Uri, path: &str) -> Option<Uri> {
    let scheme = endpoint.scheme_str()?;
    let authority = endpoint.authority()?;
    format!("{scheme}://{authority}{path}").parse().ok()
}

/// Starts probing `endpoint` until `stop` is cancelled (a reload replaced the checks, the
/// endpoint left the config, or the proxy is shutting down).
pub(crate) fn spawn(
    client: Client,
    endpoint: &Uri,
    health: Arc<EndpointHealth>,
    s: HealthCheckSettings,
    stop: CancellationToken,
) {
    let Some(uri) = probe_uri(endpoint, &s.path) else {
        // Validation builds the same URL; an endpoint without one is simply not probed.
        tracing::warn!(upstream = %endpoint, path = %s.path, "health check URL cannot be built; not probing");
        return;
    };
    let host = endpoint
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(s.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let pass = tokio::select! {
                _ = stop.cancelled() => return,
                pass = probe(&client, &uri, host.as_ref(), s.timeout) => pass,
            };
            health.record_check(pass, s.healthy_threshold, s.unhealthy_threshold);
        }
    });
}

/// One probe: a 2xx head within `timeout` passes.
async fn probe(client: &Client, uri: &Uri, host: Option<&HeaderValue>, timeout: Duration) -> bool {
    let mut req = Request::new(crate::http::full(bytes::Bytes::new()));
    *req.uri_mut() = uri.clone();
    if let Some(h) = host {
        req.headers_mut().insert(header::HOST, h.clone());
    }
    req.headers_mut().insert(
        header::USER_AGENT,
        HeaderValue::from_static("mcp-edge-health-check"),
    );
    let answered = tokio::time::timeout(timeout, async {
        let resp = client.request(req).await.ok()?;
        let pass = resp.status().is_success();
        let _ = Limited::new(resp.into_body(), PROBE_BODY_LIMIT)
            .collect()
            .await;
        Some(pass)
    })
    .await;
    matches!(answered, Ok(Some(true)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_url_keeps_scheme_and_authority() {
        let e: Uri = "https://backend.internal:8443/mcp".parse().unwrap();
        assert_eq!(
            probe_uri(&e, "/healthz?deep=1").unwrap().to_string(),
            "https://backend.internal:8443/healthz?deep=1"
        );
    }
}
