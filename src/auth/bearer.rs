//! Bearer tokens on the request path: taking the token from the request (header only, never
//! the query string), choosing and running the issuer's validator, and the answers clients use
//! to discover how to authenticate: `WWW-Authenticate` challenges (RFC 6750, RFC 9728) and the
//! OAuth Protected Resource Metadata document.

use std::collections::HashMap;
use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderValue};

use super::identity::RouteAuth;
use super::token_cache::{Slot, TokenCache, VerifiedToken};
use crate::auth::introspection::{
    IntrospectionError, IntrospectionSetupError, Introspector, unix_now,
};
use crate::auth::jwks::{KeySourceError, KeyStore};
use crate::auth::jwt::{Claims, IssuerPolicy, PolicyError, TokenError, unverified_issuer};

/// Path prefix of the Protected Resource Metadata documents (RFC 9728 §3).
pub const PRM_PATH: &str = "/.well-known/oauth-protected-resource";

/// Why no usable bearer token could be taken from a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BearerError {
    /// `Authorization` present but not a single well-formed `Bearer` credential.
    Malformed,
    /// A token in the query string (`access_token=`), which is refused: URLs end up in logs.
    InQuery,
}

/// The bearer token of a request, if any; only the `Authorization` header is considered.
pub fn extract<'h>(
    headers: &'h HeaderMap,
    query: Option<&str>,
) -> Result<Option<&'h str>, BearerError> {
    if query.is_some_and(|q| {
        q.split('&')
            .any(|p| p.split('=').next() == Some("access_token"))
    }) {
        return Err(BearerError::InQuery);
    }
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = match (values.next(), values.next()) {
        (None, _) => return Ok(None),
        (Some(v), None) => v,
        (Some(_), Some(_)) => return Err(BearerError::Malformed),
    };
    let text = value.to_str().map_err(|_| BearerError::Malformed)?;
    let (scheme, token) = text.split_once(' ').unwrap_or((text, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        // Another scheme (Basic, …) is no bearer credential at all: RFC 6750 §3 answers it
        // like a request without credentials.
        return Ok(None);
    }
    let token = token.trim_start_matches(' ');
    // RFC 6750 b64token: letters, digits, "-._~+/" and trailing "=".
    let body = token.trim_end_matches('=');
    if body.is_empty()
        || !body.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        })
    {
        return Err(BearerError::Malformed);
    }
    Ok(Some(token))
}

/// Why the issuer validators could not be built.
#[derive(Debug, thiserror::Error)]
pub enum IssuerSetupError {
    /// A key source failed.
    #[error("auth.issuers `{issuer}`: {error}")]
    Keys {
        /// The issuer.
        issuer: String,
        /// What failed.
        error: KeySourceError,
    },
    /// The policy was refused.
    #[error("auth.issuers: {0}")]
    Policy(#[from] PolicyError),
    /// The introspection client could not be set up (secret file, CA).
    #[error("auth.issuers `{issuer}`.introspection: {error}")]
    Introspection {
        /// The issuer.
        issuer: String,
        /// What failed.
        error: IntrospectionSetupError,
    },
}

/// How one issuer's tokens are checked: signature (JWT), introspection, or both; and what
/// the issuer may vouch for.
#[derive(Debug, Clone, Default)]
struct IssuerCheck {
    jwt: Option<IssuerPolicy>,
    introspector: Option<Introspector>,
    /// Claim naming the organisation in this issuer's tokens.
    organisation_claim: Option<String>,
    /// The only organisations the issuer may vouch for (`None`: any).
    organisations: Option<Vec<String>>,
}

/// Validators for every configured issuer.
#[derive(Debug, Clone, Default)]
pub struct Issuers {
    by_issuer: HashMap<String, IssuerCheck>,
    largest_token: usize,
    /// Several issuers are configured: subjects shown to backends carry their issuer.
    qualify_subjects: bool,
    /// Verified JWTs (`auth.token_cache_entries`; `None`: every token verified every time).
    cache: Option<Arc<TokenCache>>,
}

/// One issuer's key store and introspection figures, for metrics.
#[derive(Debug, Clone)]
pub struct IssuerStatus {
    /// The issuer.
    pub issuer: String,
    /// Its JWT keys, when it has any.
    pub keys: Option<super::jwks::KeyStoreStatus>,
    /// Whether the keys are fetched (JWKS URL) rather than static.
    pub remote_keys: bool,
    /// Its introspection endpoint's figures, when it has one.
    pub introspection: Option<super::introspection::IntrospectorStatus>,
}

impl Issuers {
    /// The figures of every issuer, sorted by issuer.
    pub fn statuses(&self) -> Vec<IssuerStatus> {
        let mut out: Vec<IssuerStatus> = self
            .by_issuer
            .iter()
            .map(|(issuer, check)| IssuerStatus {
                issuer: issuer.clone(),
                keys: check.jwt.as_ref().map(|p| p.keys().status()),
                remote_keys: check.jwt.as_ref().is_some_and(|p| p.keys().is_remote()),
                introspection: check.introspector.as_ref().map(Introspector::status),
            })
            .collect();
        out.sort_by(|a, b| a.issuer.cmp(&b.issuer));
        out
    }

    /// Builds each issuer's key store (remote JWKS are fetched in the background) and policy.
    pub async fn build(auth: &AuthSettings) -> Result<Issuers, IssuerSetupError> {
        let mut by_issuer = HashMap::with_capacity(auth.issuers.len());
        let mut largest_token = 0;
        for s in &auth.issuers {
            let mut check = IssuerCheck {
                organisation_claim: s.organisation_claim.clone(),
                organisations: s.organisations.clone(),
                ..IssuerCheck::default()
            };
            if let Some(source) = &s.keys {
                let keys = KeyStore::new(source.clone()).await.map_err(|error| {
                    IssuerSetupError::Keys {
                        issuer: s.issuer.clone(),
                        error,
                    }
                })?;
                check.jwt = Some(IssuerPolicy::new(
                    s.issuer.clone(),
                    s.algorithms.clone(),
                    s.leeway,
                    s.max_token_bytes,
                    keys,
                )?);
            }
            if let Some(c) = &s.introspection {
                check.introspector = Some(Introspector::new(c.clone()).map_err(|error| {
                    IssuerSetupError::Introspection {
                        issuer: s.issuer.clone(),
                        error,
                    }
                })?);
            }
            largest_token = largest_token.max(s.max_token_bytes);
            by_issuer.insert(s.issuer.clone(), check);
        }
        Ok(Issuers {
            by_issuer,
            largest_token,
            qualify_subjects: auth.issuers.len() > 1,
            cache: TokenCache::new(auth.token_cache_entries).map(Arc::new),
        })
    }

    /// The verified-token cache's figures, when it is on.
    pub fn token_cache(&self) -> Option<super::token_cache::TokenCacheStatus> {
        self.cache.as_deref().map(TokenCache::status)
    }

    /// Validates `token` for `route`: its issuer must be one the route accepts, and the token
    /// must be meant for the route's resource.
    ///
    /// A JWT naming a configured issuer is checked by that issuer (its signature, or by
    /// introspection when the issuer has no keys). Any other token (opaque, or a JWT naming no
    /// configured issuer) goes to the route's introspection issuer when it has exactly one;
    /// with none or several it is refused, as nothing could tell which server to ask.
    ///
    /// The claims come back with the organisation the issuer vouches for (from the issuer's
    /// organisation claim; with an `organisations` allowlist, a token claiming another one, or
    /// none, is refused) and the subject backends are shown.
    ///
    /// A JWT verified by its issuer's keys is remembered (see [`crate::auth::token_cache`]):
    /// the same token for the same resource is then accepted without verifying it again, until
    /// its `exp` or a change of the issuer's keys.
    pub async fn validate(
        &self,
        token: &str,
        route: &RouteAuth<'_>,
    ) -> Result<Arc<VerifiedToken>, TokenError> {
        let cached = self
            .cache
            .as_deref()
            .map(|c| (c, TokenCache::slot(token, route.resource)));
        if let Some((cache, slot)) = &cached
            && let Some(hit) = cache.get(slot, unix_now())
        {
            return if route.issuers.contains(&hit.claims.issuer) {
                Ok(hit)
            } else {
                Err(TokenError::WrongIssuer)
            };
        }
        let parsed = unverified_issuer(token, self.largest_token.max(1));
        if let Ok(iss) = &parsed
            && let Some(check) = self.by_issuer.get(iss)
        {
            if !route.issuers.contains(iss) {
                return Err(TokenError::WrongIssuer);
            }
            return match (&check.jwt, &check.introspector) {
                (Some(policy), _) => self.verify(check, policy, token, route, cached).await,
                (None, Some(i)) => {
                    let claims = introspect(i, token, route).await?;
                    Ok(Arc::new(VerifiedToken::new(self.vouch(check, claims)?)))
                }
                (None, None) => Err(TokenError::WrongIssuer),
            };
        }
        let mut introspectors = route.issuers.iter().filter_map(|iss| {
            let check = self.by_issuer.get(iss)?;
            check.introspector.as_ref().map(|i| (check, i))
        });
        match (introspectors.next(), introspectors.next()) {
            (Some((check, i)), None) => {
                let claims = introspect(i, token, route).await?;
                Ok(Arc::new(VerifiedToken::new(self.vouch(check, claims)?)))
            }
            _ => Err(parsed.err().unwrap_or(TokenError::WrongIssuer)),
        }
    }

    /// A full validation of a JWT by `policy`, remembered in the cache when it passes.
    async fn verify(
        &self,
        check: &IssuerCheck,
        policy: &IssuerPolicy,
        token: &str,
        route: &RouteAuth<'_>,
        cached: Option<(&TokenCache, Slot)>,
    ) -> Result<Arc<VerifiedToken>, TokenError> {
        // Read before verifying: keys that change meanwhile retire the entry at once.
        let generation = policy.keys().generation();
        let claims = policy.validate(token, route.resource).await?;
        let valid_until = claims.expires_at as f64 + policy.leeway().as_secs_f64();
        let verified = Arc::new(VerifiedToken::new(self.vouch(check, claims)?));
        if let Some((cache, slot)) = cached {
            cache.insert(
                &slot,
                verified.clone(),
                valid_until,
                policy.keys(),
                generation,
                unix_now(),
            );
        }
        Ok(verified)
    }

    /// What `check`'s issuer vouches for in `claims`: the organisation from its own claim,
    /// refused when outside its allowlist, and the subject as backends see it.
    fn vouch(&self, check: &IssuerCheck, mut claims: Claims) -> Result<Claims, TokenError> {
        claims.organisation =
            check
                .organisation_claim
                .as_deref()
                .and_then(|name| match claims.raw.get(name)? {
                    serde_json::Value::String(s) => Some(s.clone()),
                    serde_json::Value::Number(n) => Some(n.to_string()),
                    _ => None,
                });
        if let Some(allowed) = &check.organisations {
            // A token without an organisation is refused too: it would otherwise become a
            // principal of no organisation, which rules not naming one still match.
            match &claims.organisation {
                Some(org) if allowed.contains(org) => {}
                _ => return Err(TokenError::OrganisationNotAccepted),
            }
        }
        claims.backend_subject = claims.subject.as_ref().map(|sub| {
            if self.qualify_subjects {
                format!("{}#{sub}", claims.issuer)
            } else {
                sub.clone()
            }
        });
        Ok(claims)
    }
}

async fn introspect(
    i: &Introspector,
    token: &str,
    route: &RouteAuth<'_>,
) -> Result<Claims, TokenError> {
    i.introspect(token, route.resource).await.map_err(|e| {
        if e.is_server_side() {
            tracing::warn!(endpoint = %i.endpoint(), error = %e, "token introspection failed");
        }
        match e {
            IntrospectionError::TooLarge => TokenError::TooLarge,
            IntrospectionError::Malformed => TokenError::Malformed("not a bearer token"),
            IntrospectionError::Inactive => TokenError::Inactive,
            IntrospectionError::Expired => TokenError::Expired,
            IntrospectionError::NotYetValid => TokenError::NotYetValid,
            IntrospectionError::WrongIssuer => TokenError::WrongIssuer,
            IntrospectionError::WrongAudience => TokenError::WrongAudience,
            IntrospectionError::Unavailable(_) => TokenError::IntrospectionUnavailable,
        }
    })
}

/// The URL of a route's Protected Resource Metadata document.
pub fn metadata_url(public_url: &http::Uri, route_path: &str) -> String {
    format!(
        "{}{PRM_PATH}{route_path}",
        public_url.to_string().trim_end_matches('/')
    )
}

/// The Protected Resource Metadata document (RFC 9728) for a token-protected route.
pub fn metadata_document(route: &RouteAuth<'_>, auth: &AuthSettings) -> serde_json::Value {
    let servers: Vec<&str> = auth
        .issuers
        .iter()
        .filter(|s| route.issuers.contains(&s.issuer))
        .map(|s| s.authorization_server.as_str())
        .collect();
    serde_json::json!({
        "resource": route.resource,
        "authorization_servers": servers,
        "scopes_supported": route.scopes,
        "bearer_methods_supported": ["header"],
    })
}

/// A `WWW-Authenticate: Bearer …` challenge; `error` is `invalid_token`,
/// `insufficient_scope`, `invalid_request` or none (no credentials were presented).
pub fn challenge(
    resource_metadata: &str,
    scopes: &[String],
    error: Option<(&str, &str)>,
) -> HeaderValue {
    let mut v = format!("Bearer resource_metadata=\"{resource_metadata}\"");
    if !scopes.is_empty() {
        v.push_str(&format!(", scope=\"{}\"", scopes.join(" ")));
    }
    if let Some((code, description)) = error {
        v.push_str(&format!(
            ", error=\"{code}\", error_description=\"{description}\""
        ));
    }
    // Every part is config-validated or a fixed string: always a valid header value.
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static("Bearer"))
}

/// Shared, immutable issuer validators.
pub type SharedIssuers = Arc<Issuers>;

/// Validated `[auth]`.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// Token issuers, in configured order.
    pub issuers: Vec<IssuerSettings>,
    /// Prefix of identity headers sent upstream; client-sent headers with it are removed.
    pub identity_header_prefix: String,
    /// Token claim naming the principal's organisation.
    pub organisation_claim: Option<String>,
    /// Signing of identity tokens for backends.
    pub upstream_token: Option<super::upstream_token::UpstreamTokenSettings>,
    /// Most verified JWTs remembered (0: verify every request).
    pub token_cache_entries: usize,
}

/// One token issuer.
#[derive(Debug, Clone)]
pub struct IssuerSettings {
    /// Exact `iss`.
    pub issuer: String,
    /// Accepted algorithms.
    pub algorithms: Vec<jsonwebtoken::Algorithm>,
    /// Clock skew tolerated.
    pub leeway: std::time::Duration,
    /// Largest accepted token.
    pub max_token_bytes: usize,
    /// Authorization server URL for the protected resource metadata.
    pub authorization_server: String,
    /// Where the JWT verification keys come from (`None`: introspection only).
    pub keys: Option<crate::auth::jwks::KeySource>,
    /// RFC 7662 introspection for opaque tokens.
    pub introspection: Option<crate::auth::introspection::IntrospectionConfig>,
    /// Claim naming the organisation in this issuer's tokens (its own, else the global one).
    pub organisation_claim: Option<String>,
    /// The only organisations this issuer may vouch for; `None`: any.
    pub organisations: Option<Vec<String>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(values: &[&str]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for v in values {
            m.append(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        m
    }

    #[test]
    fn bearer_extraction() {
        assert_eq!(extract(&h(&[]), None), Ok(None));
        assert_eq!(
            extract(&h(&["Bearer abc.def-ghi_~+/=="]), None),
            Ok(Some("abc.def-ghi_~+/=="))
        );
        assert_eq!(extract(&h(&["bearer abc"]), None), Ok(Some("abc")));
        assert_eq!(extract(&h(&["Basic dXNlcjpwYXNz"]), None), Ok(None));
        assert_eq!(extract(&h(&["Token abc"]), None), Ok(None));
        for bad in [
            "Bearer",
            "Bearer ",
            "Bearer a b",
            "Bearer a\"b",
            "Bearer ====",
        ] {
            assert_eq!(
                extract(&h(&[bad]), None),
                Err(BearerError::Malformed),
                "{bad}"
            );
        }
        assert_eq!(
            extract(&h(&["Bearer a", "Bearer b"]), None),
            Err(BearerError::Malformed)
        );
        assert_eq!(
            extract(&h(&[]), Some("x=1&access_token=abc")),
            Err(BearerError::InQuery)
        );
        assert_eq!(
            extract(&h(&["Bearer a"]), Some("access_token")),
            Err(BearerError::InQuery)
        );
        assert_eq!(extract(&h(&[]), Some("not_access_token=1")), Ok(None));
    }

    fn claims(iss: &str, sub: &str, raw: serde_json::Value) -> Claims {
        Claims {
            issuer: iss.to_owned(),
            subject: Some(sub.to_owned()),
            audience: vec![],
            scopes: Default::default(),
            client_id: None,
            cnf_x5t_s256: None,
            expires_at: 0,
            key_id: None,
            algorithm: None,
            raw: raw.as_object().cloned().unwrap_or_default(),
            organisation: None,
            backend_subject: Some(sub.to_owned()),
        }
    }

    #[test]
    fn issuers_vouch_only_for_their_organisations() {
        let partner = IssuerCheck {
            organisation_claim: Some("tenant".into()),
            organisations: Some(vec!["partner-a".into(), "7".into()]),
            ..IssuerCheck::default()
        };
        let several = Issuers {
            qualify_subjects: true,
            ..Issuers::default()
        };
        let iss = "https://login.partner-a.example";
        let c = several
            .vouch(
                &partner,
                claims(
                    iss,
                    "alice",
                    serde_json::json!({"tenant": "partner-a", "org_id": "acme"}),
                ),
            )
            .unwrap();
        assert_eq!(
            c.organisation.as_deref(),
            Some("partner-a"),
            "the issuer's own claim"
        );
        assert_eq!(
            c.subject.as_deref(),
            Some("alice"),
            "policies still see the IdP's sub"
        );
        assert_eq!(
            c.backend_subject.as_deref(),
            Some("https://login.partner-a.example#alice")
        );
        let c = several
            .vouch(
                &partner,
                claims(iss, "bob", serde_json::json!({"tenant": 7})),
            )
            .unwrap();
        assert_eq!(c.organisation.as_deref(), Some("7"));
        for raw in [
            serde_json::json!({"tenant": "partner-b"}),
            serde_json::json!({"org_id": "partner-a"}),
            serde_json::json!({"tenant": ["partner-a"]}),
            serde_json::json!({"tenant": "Partner-A"}),
        ] {
            assert_eq!(
                several.vouch(&partner, claims(iss, "alice", raw.clone())),
                Err(TokenError::OrganisationNotAccepted),
                "{raw}"
            );
        }
        // Without an allowlist: whatever the claim says, or no organisation.
        let ours = IssuerCheck {
            organisation_claim: Some("org_id".into()),
            ..IssuerCheck::default()
        };
        let single = Issuers::default();
        let c = single
            .vouch(
                &ours,
                claims(
                    "https://idp.example",
                    "alice",
                    serde_json::json!({"org_id": "acme"}),
                ),
            )
            .unwrap();
        assert_eq!(c.organisation.as_deref(), Some("acme"));
        assert_eq!(
            c.backend_subject.as_deref(),
            Some("alice"),
            "one issuer: sub unchanged"
        );
        let c = single
            .vouch(
                &ours,
                claims(
                    "https://idp.example",
                    "alice",
                    serde_json::json!({"org_id": true}),
                ),
            )
            .unwrap();
        assert_eq!(c.organisation, None);
    }

    #[test]
    fn challenges() {
        let c = challenge(
            "https://e/.well-known/oauth-protected-resource/mcp",
            &["a".into(), "b".into()],
            None,
        );
        assert_eq!(
            c,
            "Bearer resource_metadata=\"https://e/.well-known/oauth-protected-resource/mcp\", scope=\"a b\""
        );
        let c = challenge("https://e/x", &[], Some(("invalid_token", "token expired")));
        assert_eq!(
            c,
            "Bearer resource_metadata=\"https://e/x\", error=\"invalid_token\", error_description=\"token expired\""
        );
    }
}
