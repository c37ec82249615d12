//! `[auth]`, `[[auth.issuers]]` and `[auth.upstream_token]`: key sources, algorithms,
//! organisations and introspection per issuer.

use std::time::Duration;

use http::Uri;

use super::{Resolve, has_user_info, nonzero};
use crate::config::{AuthFile, AuthSettings, ConfigError, IssuerSettings, UpstreamTokenSettings};

/// Most tokens `auth.token_cache_entries` may keep (about 2 GiB at ~2 KiB each).
const MAX_TOKEN_CACHE_ENTRIES: usize = 1_000_000;

/// Checks `[auth]` and every issuer in it.
pub(super) fn auth(
    a: AuthFile,
    public_url: &Uri,
    resolve: Resolve<'_>,
) -> Result<AuthSettings, ConfigError> {
    use crate::auth::jwks::{JwksUrlConfig, KeySource};
    let prefix = a.identity_header_prefix.to_ascii_lowercase();
    if prefix.is_empty()
        || !prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(ConfigError::invalid(
            "auth.identity_header_prefix",
            format!("`{prefix}` cannot start a header name"),
            "use letters, digits and `-`, e.g. \"x-mcp-edge-\"",
        ));
    }
    if let Some(c) = &a.organisation_claim
        && c.trim().is_empty()
    {
        return Err(ConfigError::invalid(
            "auth.organisation_claim",
            "is empty",
            "name the token claim that carries the organisation, e.g. \"org_id\"",
        ));
    }
    if a.token_cache_entries > MAX_TOKEN_CACHE_ENTRIES {
        return Err(ConfigError::invalid(
            "auth.token_cache_entries",
            format!(
                "{} is above {MAX_TOKEN_CACHE_ENTRIES}",
                a.token_cache_entries
            ),
            "keep the default 10000 (about 2 KiB per cached token), or 0 to verify every request",
        ));
    }
    let mut issuers: Vec<IssuerSettings> = Vec::with_capacity(a.issuers.len());
    for (i, f) in a.issuers.into_iter().enumerate() {
        let key = |k: &str| format!("auth.issuers[{i}].{k}");
        if f.issuer.is_empty() {
            return Err(ConfigError::invalid(
                key("issuer"),
                "is empty",
                "set the exact `iss` value of the tokens",
            ));
        }
        if issuers.iter().any(|p| p.issuer == f.issuer) {
            return Err(ConfigError::invalid(
                key("issuer"),
                format!("`{}` is configured twice", f.issuer),
                "configure each issuer once",
            ));
        }
        let key_sources = usize::from(f.jwks_url.is_some())
            + usize::from(f.jwks_file.is_some())
            + usize::from(!f.pem_keys.is_empty())
            + usize::from(f.hmac_secret_file.is_some());
        if key_sources == 0 && f.introspection.is_none() {
            return Err(ConfigError::invalid(
                key("jwks_url"),
                "no key source is set",
                "set one of jwks_url, jwks_file, pem_keys, hmac_secret_file, or [auth.issuers.introspection] for opaque tokens",
            ));
        }
        if f.algorithms.is_empty() && f.introspection.is_none() {
            return Err(ConfigError::invalid(
                key("algorithms"),
                "is empty",
                "list the algorithms the issuer signs with, e.g. [\"ES256\"]",
            ));
        }
        let mut algorithms = Vec::with_capacity(f.algorithms.len());
        for (j, name) in f.algorithms.iter().enumerate() {
            let alg: jsonwebtoken::Algorithm = name.parse().map_err(|_| {
                ConfigError::invalid(
                    key(&format!("algorithms[{j}]")),
                    format!("`{name}` is not a supported algorithm"),
                    "use RS256/384/512, PS256/384/512, ES256/384, EdDSA, or HS256/384/512 with hmac_secret_file",
                )
            })?;
            algorithms.push(alg);
        }
        if f.max_token_bytes < 256 {
            return Err(ConfigError::invalid(
                key("max_token_bytes"),
                format!("{} is too small for any JWT", f.max_token_bytes),
                "keep the default 8192",
            ));
        }
        let sources = usize::from(f.jwks_url.is_some())
            + usize::from(f.jwks_file.is_some())
            + usize::from(!f.pem_keys.is_empty())
            + usize::from(f.hmac_secret_file.is_some());
        let introspection = match &f.introspection {
            None => None,
            Some(i) => Some(introspection_config(i, &f, &key, resolve)?),
        };
        if sources > 1 || (sources == 0 && introspection.is_none()) {
            return Err(ConfigError::invalid(
                key("jwks_url"),
                format!("{sources} key sources are set"),
                "set exactly one of jwks_url, jwks_file, pem_keys, hmac_secret_file (or only [auth.issuers.introspection] for opaque tokens)",
            ));
        }
        if sources == 1 && f.algorithms.is_empty() {
            return Err(ConfigError::invalid(
                key("algorithms"),
                "is empty",
                "list the algorithms the issuer signs with, e.g. [\"ES256\"]",
            ));
        }
        let keys = if sources == 0 {
            None
        } else if let Some(url) = &f.jwks_url {
            let uri: Uri = url.parse().map_err(|_| {
                ConfigError::invalid(
                    key("jwks_url"),
                    format!("`{url}` is not a URL"),
                    "write the https:// URL of the JWKS document",
                )
            })?;
            if uri.scheme_str() != Some("https") || has_user_info(&uri) {
                return Err(ConfigError::invalid(
                    key("jwks_url"),
                    "must be an https:// URL without user info",
                    "keys fetched over plain HTTP could be forged in transit",
                ));
            }
            if f.jwks_refresh < Duration::from_secs(60)
                || f.jwks_min_refetch_interval < Duration::from_secs(1)
            {
                return Err(ConfigError::invalid(
                    key("jwks_refresh"),
                    "jwks_refresh under 1m or jwks_min_refetch_interval under 1s",
                    "keep the defaults (10m, 30s): a short interval hammers the IdP",
                ));
            }
            let mut c = JwksUrlConfig::new(uri);
            c.ca = f.jwks_ca.as_deref().map(resolve);
            c.refresh = f.jwks_refresh;
            c.min_refetch_interval = f.jwks_min_refetch_interval;
            c.cache_file = f.jwks_cache_file.as_deref().map(resolve);
            Some(KeySource::JwksUrl(c))
        } else if let Some(p) = &f.jwks_file {
            Some(KeySource::JwksFile(resolve(p)))
        } else if let Some(p) = &f.hmac_secret_file {
            Some(KeySource::HmacSecretFile(resolve(p)))
        } else {
            Some(KeySource::PemKeys(
                f.pem_keys.iter().map(|p| resolve(p)).collect(),
            ))
        };
        let hmac = algorithms.iter().any(|a| {
            matches!(
                a,
                jsonwebtoken::Algorithm::HS256
                    | jsonwebtoken::Algorithm::HS384
                    | jsonwebtoken::Algorithm::HS512
            )
        });
        if hmac != matches!(keys, Some(KeySource::HmacSecretFile(_)))
            || (hmac
                && algorithms.iter().any(|a| {
                    !matches!(
                        a,
                        jsonwebtoken::Algorithm::HS256
                            | jsonwebtoken::Algorithm::HS384
                            | jsonwebtoken::Algorithm::HS512
                    )
                }))
        {
            return Err(ConfigError::invalid(
                key("algorithms"),
                "HS* algorithms and hmac_secret_file must go together, without asymmetric algorithms",
                "an HMAC secret is never derived from a public key: use one or the other",
            ));
        }
        if let Some(c) = &f.organisation_claim
            && c.trim().is_empty()
        {
            return Err(ConfigError::invalid(
                key("organisation_claim"),
                "is empty",
                "name the claim that carries the organisation in this issuer's tokens, e.g. \"org_id\", or remove the key to use auth.organisation_claim",
            ));
        }
        let organisation_claim = f
            .organisation_claim
            .clone()
            .or_else(|| a.organisation_claim.clone());
        if let Some(orgs) = &f.organisations {
            if orgs.is_empty() {
                return Err(ConfigError::invalid(
                    key("organisations"),
                    "is empty, so the issuer could vouch for no token at all",
                    "list the organisations the issuer may vouch for, e.g. [\"partner-a\"], or remove the issuer",
                ));
            }
            if let Some(j) = orgs.iter().position(|o| o.trim().is_empty()) {
                return Err(ConfigError::invalid(
                    key(&format!("organisations[{j}]")),
                    "is empty",
                    "write the organisation exactly as the token's organisation claim carries it",
                ));
            }
            if organisation_claim.is_none() {
                return Err(ConfigError::invalid(
                    key("organisations"),
                    "is set but no claim names the organisation",
                    "set organisation_claim on this issuer (or auth.organisation_claim), e.g. \"org_id\"",
                ));
            }
        }
        issuers.push(IssuerSettings {
            authorization_server: f.authorization_server.unwrap_or_else(|| f.issuer.clone()),
            issuer: f.issuer,
            algorithms,
            leeway: f.leeway,
            max_token_bytes: f.max_token_bytes,
            keys,
            introspection,
            organisation_claim,
            organisations: f.organisations,
        });
    }
    let upstream_token = match a.upstream_token {
        None => None,
        Some(u) => {
            if u.lifetime < Duration::from_secs(1) || u.lifetime > Duration::from_secs(3600) {
                return Err(ConfigError::invalid(
                    "auth.upstream_token.lifetime",
                    format!(
                        "{} is outside 1s..=1h",
                        humantime::format_duration(u.lifetime)
                    ),
                    "keep the default 60s: the token only has to cover one request",
                ));
            }
            Some(UpstreamTokenSettings {
                signing_key: resolve(&u.signing_key),
                issuer: u
                    .issuer
                    .unwrap_or_else(|| public_url.to_string().trim_end_matches('/').to_owned()),
                key_id: u.key_id,
                lifetime: u.lifetime,
            })
        }
    };
    Ok(AuthSettings {
        issuers,
        identity_header_prefix: prefix,
        organisation_claim: a.organisation_claim,
        upstream_token,
        token_cache_entries: a.token_cache_entries,
    })
}

/// The introspection client of issuer `f`, checked like the rest of the config.
fn introspection_config(
    i: &crate::config::file::IntrospectionFile,
    f: &crate::config::file::IssuerFile,
    key: &dyn Fn(&str) -> String,
    resolve: Resolve<'_>,
) -> Result<crate::auth::introspection::IntrospectionConfig, ConfigError> {
    use crate::auth::introspection::{ClientAuthMethod, IntrospectionConfig};
    let endpoint: Uri = i
        .endpoint
        .parse()
        .ok()
        .filter(|u: &Uri| u.scheme_str() == Some("https") && u.host().is_some() && !has_user_info(u))
        .ok_or_else(|| {
            ConfigError::invalid(
                key("introspection.endpoint"),
                format!("`{}` is not an https:// URL without user info", i.endpoint),
                "write the authorization server's introspection URL, e.g. \"https://as.example.com/oauth2/introspect\"",
            )
        })?;
    if i.client_id.trim().is_empty() {
        return Err(ConfigError::invalid(
            key("introspection.client_id"),
            "is empty",
            "set the client id the proxy was registered with at the authorization server",
        ));
    }
    let mut c = IntrospectionConfig::new(
        endpoint,
        i.client_id.clone(),
        resolve(&i.client_secret_file),
    );
    c.ca = i.ca.as_deref().map(resolve);
    c.auth_method = match i.auth_method {
        crate::config::file::IntrospectionAuthMethod::ClientSecretBasic => {
            ClientAuthMethod::ClientSecretBasic
        }
        crate::config::file::IntrospectionAuthMethod::ClientSecretPost => {
            ClientAuthMethod::ClientSecretPost
        }
    };
    c.expected_issuer = Some(f.issuer.clone());
    c.require_audience = i.require_audience;
    c.leeway = f.leeway;
    c.max_token_bytes = f.max_token_bytes;
    if let Some(d) = i.cache_max {
        c.cache_max = d;
    }
    if let Some(d) = i.negative_cache {
        c.negative_cache = d;
    }
    if let Some(d) = i.timeout {
        nonzero(&key("introspection.timeout"), d)?;
        c.timeout = d;
    }
    Ok(c)
}
