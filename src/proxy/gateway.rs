//! The snapshot requests run against: the validated config, the issuers, the session sealer,
//! the upstream signer and one [`RouteState`] per route. Built whole, replaced whole on reload
//! (requests already running keep the one they started with).

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Method, Response};

use super::error::ProxyError;
use crate::auth::bearer::{self, SharedIssuers};
use crate::auth::upstream_token::UpstreamSigner;
use crate::config::{Config, Route};
use crate::http::Body;
use crate::metrics::{Metrics, RouteMetrics};
use crate::session::SessionSealer;
use crate::upstream::{UpstreamSetupError, Upstreams};

/// One route, ready to serve.
#[derive(Debug)]
pub(crate) struct RouteState {
    /// Shared with access-log records and legacy session tokens.
    pub(crate) path: Arc<str>,
    pub(crate) config: Route,
    pub(crate) upstreams: Upstreams,
    /// The route's metric series (no-op until the proxy attaches its own).
    pub(crate) metrics: Arc<RouteMetrics>,
}

/// An upstream client for one route could not be built.
#[derive(Debug, thiserror::Error)]
#[error("routes[{index}] (path {path}): {error}")]
pub struct RouteSetupError {
    /// Position of the route in the config.
    pub index: usize,
    /// The route's path.
    pub path: String,
    /// What failed.
    pub error: UpstreamSetupError,
}

/// An immutable snapshot of everything requests need; replaced as a whole on reload.
#[derive(Debug)]
pub struct Gateway {
    pub(crate) config: Arc<Config>,
    pub(crate) issuers: SharedIssuers,
    pub(crate) sealer: Arc<SessionSealer>,
    pub(crate) signer: Option<UpstreamSigner>,
    pub(crate) identity_headers: super::forward::IdentityHeaderNames,
    routes: Vec<RouteState>,
}

impl Gateway {
    /// Builds clients and routes from a validated config, with the issuer validators built
    /// from its `[auth]` section and the sealer of its `[sessions]` section.
    pub fn new(
        config: Arc<Config>,
        issuers: SharedIssuers,
        sealer: Arc<SessionSealer>,
        signer: Option<UpstreamSigner>,
    ) -> Result<Self, RouteSetupError> {
        let routes = config
            .routes
            .iter()
            .enumerate()
            .map(|(index, r)| {
                let upstreams =
                    Upstreams::new(&r.upstreams, &r.upstream).map_err(|error| RouteSetupError {
                        index,
                        path: r.path.clone(),
                        error,
                    })?;
                Ok(RouteState {
                    path: Arc::from(r.path.as_str()),
                    config: r.clone(),
                    upstreams,
                    metrics: Arc::new(RouteMetrics::default()),
                })
            })
            .collect::<Result<_, RouteSetupError>>()?;
        Ok(Gateway {
            identity_headers: super::forward::IdentityHeaderNames::new(
                &config.auth.identity_header_prefix,
            ),
            config,
            issuers,
            sealer,
            signer,
            routes,
        })
    }

    /// The same snapshot with fresh upstream clients (their certificate files changed).
    pub fn rebuild(&self) -> Result<Gateway, RouteSetupError> {
        Gateway::new(
            self.config.clone(),
            self.issuers.clone(),
            self.sealer.clone(),
            self.signer.clone(),
        )
    }

    /// The JWKS document of the upstream token signing key, when one is configured.
    pub fn upstream_jwks(&self) -> Option<String> {
        self.signer.as_ref().map(UpstreamSigner::jwks)
    }

    /// The configuration this snapshot was built from.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// Every route's path and upstreams, for the health registry to adopt.
    pub(crate) fn upstreams_mut(&mut self) -> impl Iterator<Item = (&str, &mut Upstreams)> {
        self.routes.iter_mut().map(|r| (&*r.path, &mut r.upstreams))
    }

    /// Gives every route its series in `metrics`, labelled with the tools its policy and
    /// limits name.
    pub(crate) fn attach_metrics(&mut self, metrics: &Arc<Metrics>) {
        for r in &mut self.routes {
            let policy = &r.config.policy;
            let tools: Vec<&str> = policy
                .rules
                .iter()
                .flat_map(|rule| rule.allow_tools.iter().chain(rule.deny_tools.iter()))
                .map(|g| g.as_str())
                .chain(r.config.limits.tools.iter().map(|t| t.pattern.as_str()))
                .collect();
            let endpoints: Vec<String> = r
                .upstreams
                .endpoints()
                .iter()
                .map(|e| e.uri.to_string())
                .collect();
            r.metrics = Arc::new(RouteMetrics::new(metrics, &r.path, &tools, &endpoints));
        }
    }

    /// Upstream connections open now and made so far, over every route's pool.
    pub fn upstream_pool(&self) -> (u64, u64) {
        self.routes.iter().fold((0, 0), |(open, made), r| {
            let (o, m) = r.upstreams.pool_counts();
            (open + o, made + m)
        })
    }

    pub(crate) fn route(&self, path: &str) -> Option<&RouteState> {
        self.routes.iter().find(|r| &*r.path == path)
    }

    /// Answers `GET /.well-known/oauth-protected-resource<suffix>`: the document of the
    /// token-protected route at `<suffix>`, or of the first such route for the bare path.
    pub(crate) fn metadata(
        &self,
        suffix: &str,
        method: &Method,
    ) -> Result<Response<Body>, ProxyError> {
        if method != Method::GET {
            return Err(ProxyError::MethodNotAllowed { allow: "GET" });
        }
        let protected = |r: &&RouteState| !r.config.issuers.is_empty();
        let route = if suffix.is_empty() || suffix == "/" {
            self.routes.iter().find(protected)
        } else {
            self.routes
                .iter()
                .filter(protected)
                .find(|r| *r.path == *suffix)
        }
        .ok_or(ProxyError::NotFound)?;
        let doc = bearer::metadata_document(&route.config.auth(), &self.config.auth);
        let mut resp = Response::new(crate::http::full(doc.to_string()));
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=300"),
        );
        // Browser-based clients fetch it cross-origin before they have any credentials.
        h.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        Ok(resp)
    }
}
