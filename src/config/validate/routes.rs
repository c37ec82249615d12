//! `[[routes]]` and `[upstream]`: paths, upstream endpoints, Origin policy, and how each
//! route's authentication fits the listener and the configured issuers (circuit, retry and
//! health-check settings: [`super::upstream`]).

use http::Uri;

use super::{Resolve, has_user_info, is_scope_token, nonzero};
use crate::config::file::{RouteFile, UpstreamDefaultsFile};
use crate::config::{
    AuthSettings, ClientAuthMode, ConfigError, Listener, RequireAuth, Route, UpstreamSettings,
    UpstreamTls,
};

/// Checks `[upstream]`, the defaults every route's upstream connections use.
pub(super) fn upstream_defaults(u: &UpstreamDefaultsFile) -> Result<(), ConfigError> {
    nonzero("upstream.connect_timeout", u.connect_timeout)?;
    nonzero(
        "upstream.response_header_timeout",
        u.response_header_timeout,
    )?;
    nonzero("upstream.body_idle_timeout", u.body_idle_timeout)?;
    Ok(())
}

/// Checks every `[[routes]]` table on its own, then against the listener and `[auth]`.
pub(super) fn routes(
    files: Vec<RouteFile>,
    u: &UpstreamDefaultsFile,
    listener: &Listener,
    auth: &AuthSettings,
    resolve: Resolve<'_>,
) -> Result<Vec<Route>, ConfigError> {
    if files.is_empty() {
        return Err(ConfigError::invalid(
            "routes",
            "no route is configured",
            "add a [[routes]] table with `path` and `upstream`",
        ));
    }
    let mut routes: Vec<Route> = Vec::with_capacity(files.len());
    for (i, r) in files.into_iter().enumerate() {
        let mut route = route(i, r, u, resolve)?;
        if route.upstream_token_audience.is_some() && auth.upstream_token.is_none() {
            return Err(ConfigError::invalid(
                format!("routes[{i}].upstream_token_audience"),
                "is set but [auth.upstream_token] is not configured",
                "add [auth.upstream_token] with `signing_key = \"/etc/mcp-edge/upstream-signing.pem\"`",
            ));
        }
        route.resource = crate::auth::jwt::canonical_resource(&format!(
            "{}{}",
            listener.public_url.to_string().trim_end_matches('/'),
            route.path
        ))
        .ok_or_else(|| {
            ConfigError::invalid(
                format!("routes[{i}].path"),
                "does not form a resource URI with listener.public_url",
                "use a plain path such as \"/mcp\"",
            )
        })?;
        let needs_token = matches!(
            route.require,
            RequireAuth::Token | RequireAuth::Either | RequireAuth::Both
        );
        if needs_token && auth.issuers.is_empty() {
            return Err(ConfigError::invalid(
                format!("routes[{i}].auth.require"),
                "asks for tokens but no [[auth.issuers]] is configured",
                "add an [[auth.issuers]] table, or require \"certificate\" or \"none\"",
            ));
        }
        if route.issuers.is_empty() && needs_token {
            // With several issuers a default of "all of them" lets any one vouch for users and
            // organisations that belong to another (a partner's IdP can mint any claim), so
            // the route must say whose tokens it takes.
            if let [first, _, ..] = auth.issuers.as_slice() {
                return Err(ConfigError::invalid(
                    format!("routes[{i}].auth.issuers"),
                    format!(
                        "is required: {} [[auth.issuers]] are configured and without a list every one of them would be trusted for every user and organisation on this route",
                        auth.issuers.len()
                    ),
                    format!(
                        "list the issuers whose tokens the route accepts, e.g. issuers = [\"{}\"]",
                        first.issuer
                    ),
                ));
            }
            route.issuers = auth.issuers.iter().map(|s| s.issuer.clone()).collect();
        }
        for (j, iss) in route.issuers.iter().enumerate() {
            if !auth.issuers.iter().any(|s| &s.issuer == iss) {
                return Err(ConfigError::invalid(
                    format!("routes[{i}].auth.issuers[{j}]"),
                    format!("`{iss}` is not an [[auth.issuers]] issuer"),
                    "use the exact `issuer` value of a configured issuer",
                ));
            }
        }
        if !needs_token && (!route.issuers.is_empty() || !route.scopes.is_empty()) {
            return Err(ConfigError::invalid(
                format!("routes[{i}].auth"),
                "issuers or scopes are set but the route does not take tokens",
                "set require = \"token\", \"either\" or \"both\", or remove them",
            ));
        }
        if matches!(route.require, RequireAuth::Certificate | RequireAuth::Both)
            && listener.tls.client_auth.mode == ClientAuthMode::Off
        {
            return Err(ConfigError::invalid(
                format!("routes[{i}].auth.require"),
                "asks for a client certificate but listener.tls.client_auth is off",
                "set listener.tls.client_auth = \"optional\" (or \"required\") with client_ca",
            ));
        }
        if let Some(prev) = routes.iter().position(|p| p.path == route.path) {
            return Err(ConfigError::invalid(
                format!("routes[{i}].path"),
                format!("`{}` is already used by routes[{prev}]", route.path),
                "give every route its own path",
            ));
        }
        routes.push(route);
    }
    Ok(routes)
}

fn route(
    i: usize,
    r: RouteFile,
    defaults: &UpstreamDefaultsFile,
    resolve: Resolve<'_>,
) -> Result<Route, ConfigError> {
    let key = |k: &str| format!("routes[{i}].{k}");
    if !r.path.starts_with('/')
        || r.path.contains(['?', '#', ' '])
        || r.path.contains("//")
        || (r.path.len() > 1 && r.path.ends_with('/'))
        || r.path.starts_with("/.well-known/")
    {
        return Err(ConfigError::invalid(
            key("path"),
            format!("`{}` is not a usable route path", r.path),
            "use an absolute path without query, fragment or trailing slash, e.g. \"/mcp\"",
        ));
    }
    let (field, raw): (&str, Vec<String>) = match (r.upstream, r.upstreams) {
        (Some(one), None) => ("upstream", vec![one]),
        (None, Some(many)) if !many.is_empty() => ("upstreams", many),
        (None, Some(_)) => {
            return Err(ConfigError::invalid(
                key("upstreams"),
                "is empty",
                "list at least one upstream URL, or use `upstream = \"http://HOST:PORT/mcp\"`",
            ));
        }
        (None, None) => {
            return Err(ConfigError::invalid(
                key("upstream"),
                "is missing",
                "set `upstream = \"http://HOST:PORT/mcp\"` or `upstreams = [..]`",
            ));
        }
        (Some(_), Some(_)) => {
            return Err(ConfigError::invalid(
                key("upstreams"),
                "both `upstream` and `upstreams` are set",
                "keep only one of them",
            ));
        }
    };
    let mut upstreams = Vec::with_capacity(raw.len());
    let mut any_https = false;
    for (j, s) in raw.iter().enumerate() {
        let k = if field == "upstream" {
            key("upstream")
        } else {
            key(&format!("upstreams[{j}]"))
        };
        let uri: Uri = s.parse().map_err(|_| {
            ConfigError::invalid(
                &k,
                format!("`{s}` is not a URL"),
                "write an absolute URL such as \"http://127.0.0.1:9000/mcp\"",
            )
        })?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => any_https = true,
            _ => {
                return Err(ConfigError::invalid(
                    &k,
                    format!("`{s}` has no http:// or https:// scheme"),
                    "write an absolute URL such as \"http://127.0.0.1:9000/mcp\"",
                ));
            }
        }
        if uri.authority().is_none_or(|a| a.host().is_empty()) {
            return Err(ConfigError::invalid(
                &k,
                format!("`{s}` has no host"),
                "write an absolute URL such as \"http://127.0.0.1:9000/mcp\"",
            ));
        }
        if has_user_info(&uri) {
            // They would end up in the Host header, in logs and in `check` output.
            return Err(ConfigError::invalid(
                &k,
                "the URL carries user info (`user:password@`)",
                "remove it; credentials in URLs are not supported",
            ));
        }
        if uri.query().is_some() {
            return Err(ConfigError::invalid(
                &k,
                format!("`{s}` has a query string"),
                "remove the query; the client's query is forwarded as sent",
            ));
        }
        if upstreams.contains(&uri) {
            return Err(ConfigError::invalid(
                &k,
                format!("`{s}` is listed twice"),
                "list each upstream endpoint once",
            ));
        }
        upstreams.push(uri);
    }

    let tls = match r.upstream_tls {
        Some(t) => {
            if t.client_cert.is_some() != t.client_key.is_some() {
                return Err(ConfigError::invalid(
                    key("upstream_tls.client_key"),
                    "`client_cert` and `client_key` must be given together",
                    "set both, or neither",
                ));
            }
            Some(UpstreamTls {
                ca: resolve(&t.ca),
                client_cert: t.client_cert.as_deref().map(resolve),
                client_key: t.client_key.as_deref().map(resolve),
            })
        }
        None if any_https => {
            return Err(ConfigError::invalid(
                key("upstream_tls"),
                "an https:// upstream needs a CA to verify it",
                "add [routes.upstream_tls] with `ca = \"/path/to/upstream-ca.pem\"`",
            ));
        }
        None => None,
    };

    let mut origins = crate::auth::origin::OriginPolicy {
        require_origin: r.require_origin,
        forward: r.forward_origin,
        ..Default::default()
    };
    for (j, o) in r.allowed_origins.iter().enumerate() {
        if o == "null" {
            origins.allow_null = true;
            continue;
        }
        let parsed = crate::auth::origin::Origin::parse(o).ok_or_else(|| {
            ConfigError::invalid(
                key(&format!("allowed_origins[{j}]")),
                format!("`{o}` is not an origin"),
                "write scheme://host[:port] without a path, e.g. \"https://app.example.com\", or \"null\"",
            )
        })?;
        origins.allowed.push(parsed);
    }

    for (j, s) in r.auth.scopes.iter().enumerate() {
        if !is_scope_token(s) {
            return Err(ConfigError::invalid(
                key(&format!("auth.scopes[{j}]")),
                format!("`{s}` is not a scope token"),
                "use one scope per list entry, without spaces or quotes",
            ));
        }
    }

    let policy = match r.policy {
        Some(p) => super::policy::policy(p, &key)?,
        None => crate::policy::RoutePolicy::default(),
    };

    if r.auth.certificate_bound_tokens && r.auth.require != RequireAuth::Both {
        return Err(ConfigError::invalid(
            key("auth.certificate_bound_tokens"),
            "needs both a token and a client certificate",
            "set `require = \"both\"` on the route (and listener.tls.client_auth to optional or required)",
        ));
    }

    if r.upstream_token_audience
        .as_ref()
        .is_some_and(|a| a.trim().is_empty())
    {
        return Err(ConfigError::invalid(
            key("upstream_token_audience"),
            "is empty",
            "set the audience the backend expects, e.g. \"https://backend.internal/mcp\", or remove the key",
        ));
    }

    let circuit = super::upstream::circuit(i, r.circuit.as_ref(), &defaults.circuit)?;
    let retry = super::upstream::retry(i, r.retry.as_ref(), &defaults.retry)?;
    let health_check = super::upstream::health_check(
        i,
        r.health_check.as_ref(),
        &defaults.health_check,
        &upstreams,
    )?;

    Ok(Route {
        upstream_token_audience: r.upstream_token_audience,
        // Resolved over the `[limits]` defaults by `validate`.
        limits: Default::default(),
        certificate_bound_tokens: r.auth.certificate_bound_tokens,
        policy: std::sync::Arc::new(policy),
        path: r.path,
        transport: r.transport,
        origins,
        require: r.auth.require,
        issuers: r.auth.issuers,
        scopes: r.auth.scopes,
        resource: String::new(),
        upstreams,
        upstream: UpstreamSettings {
            connect_timeout: defaults.connect_timeout,
            response_header_timeout: defaults.response_header_timeout,
            body_idle_timeout: defaults.body_idle_timeout,
            pool_idle_timeout: defaults.pool_idle_timeout,
            pool_max_idle_per_host: defaults.pool_max_idle_per_host,
            tls,
            circuit,
            retry,
            health_check,
        },
    })
}
