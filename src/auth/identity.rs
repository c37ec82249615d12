//! Who the caller is: the one [`Identity`] built per request by [`authenticate`], from what
//! the route demands (client certificate, bearer token, scopes), and read by everything after
//! it: the access log, the audit log and refusal logs (its [`label`](Identity::label)), the
//! policy ([`principal`](Identity::principal)), the session binding
//! ([`session_binding`](Identity::session_binding)), the identity headers and the upstream
//! token.
//!
//! # The label
//!
//! | caller | label |
//! |---|---|
//! | a token with `sub` | `<iss>#<sub>` |
//! | a token without `sub` (client credentials) | `<iss>#<client_id>` (`<iss>#-` without either) |
//! | a client certificate only | its first URI SAN, else first DNS SAN, else subject DN |
//! | nobody (open route) | `anonymous` |
//!
//! The issuer is part of every token label, so two IdPs' `alice` are never one user.

use std::sync::Arc;

use base64::Engine as _;
use http::HeaderValue;

use super::bearer::{self, BearerError, SharedIssuers};
use super::jwt::{Claims, TokenError};
use super::mtls::ClientIdentity;
use super::token_cache::VerifiedToken;
use crate::metrics::AuthReason;
use crate::session::{self, PrincipalHash};

/// The proof a route demands of each request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequireAuth {
    /// Nothing (a route for anonymous access; say so explicitly in production configs).
    #[default]
    None,
    /// A verified client certificate (listener `client_auth` optional or required).
    Certificate,
    /// A valid bearer token.
    Token,
    /// A token or a certificate.
    Either,
    /// A token and a certificate.
    Both,
}

/// What a route asks of its callers, as authentication reads it (borrowed from the route's
/// settings, which build it with `Route::auth`).
#[derive(Debug, Clone, Copy)]
pub struct RouteAuth<'a> {
    /// The route's public path (for challenges and logs).
    pub path: &'a str,
    /// What each request must prove.
    pub require: RequireAuth,
    /// Issuers whose tokens are accepted.
    pub issuers: &'a [String],
    /// Scopes every token must carry.
    pub scopes: &'a [String],
    /// Tokens must be bound to the client certificate (RFC 8705).
    pub certificate_bound_tokens: bool,
    /// The route's resource URI: the audience its tokens must carry.
    pub resource: &'a str,
}

/// Why a request's credentials are refused. Carries the `WWW-Authenticate` challenge where
/// RFC 6750 asks for one.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The route needs a client certificate and none was presented.
    #[error("client certificate required")]
    CertificateRequired,
    /// `access_token` in the query string (URLs end up in logs).
    #[error("tokens in the query string are not accepted")]
    TokenInQuery,
    /// `Authorization` is not one well-formed `Bearer` credential.
    #[error("malformed bearer credentials")]
    Malformed,
    /// No token, and the route needs one.
    #[error("authentication required")]
    Missing,
    /// The token did not validate (its description is safe to show).
    #[error("invalid token: {}", .0.description())]
    Invalid(TokenError),
    /// The token is bound to another certificate (RFC 8705), or the route needs binding.
    #[error("the token is not bound to the presented client certificate")]
    NotBound,
    /// The token lacks a scope the route needs.
    #[error("insufficient scope")]
    InsufficientScope {
        /// The route's scopes, for the challenge.
        needed: Vec<String>,
    },
    /// The token lacks a scope the policy asks for this call (`method_scopes`, `tool_scopes`).
    #[error("insufficient scope for the call")]
    CallNeedsScopes {
        /// Every scope the call needs: the route's and the call's.
        needed: Vec<String>,
    },
    /// Keys or the introspection endpoint are unavailable: the proxy cannot decide.
    #[error("token validation unavailable: {0}")]
    KeysUnavailable(&'static str),
}

impl AuthError {
    /// Whether the proxy, not the client, is at fault.
    pub fn is_server_side(&self) -> bool {
        matches!(self, AuthError::KeysUnavailable(_))
    }

    /// Label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            AuthError::CertificateRequired => "forbidden",
            AuthError::TokenInQuery => "bad_auth_request",
            AuthError::Malformed
            | AuthError::Missing
            | AuthError::Invalid(_)
            | AuthError::NotBound => "unauthorized",
            AuthError::InsufficientScope { .. } | AuthError::CallNeedsScopes { .. } => {
                "insufficient_scope"
            }
            AuthError::KeysUnavailable(_) => "auth_unavailable",
        }
    }

    /// The `reason` label of the refusal in `mcp_edge_auth_decisions_total`.
    pub fn reason(&self) -> AuthReason {
        match self {
            AuthError::CertificateRequired => AuthReason::CertificateRequired,
            AuthError::TokenInQuery => AuthReason::TokenInQuery,
            AuthError::Malformed => AuthReason::Malformed,
            AuthError::Missing => AuthReason::NoToken,
            AuthError::NotBound => AuthReason::CertificateBinding,
            AuthError::InsufficientScope { .. } | AuthError::CallNeedsScopes { .. } => {
                AuthReason::Scope
            }
            AuthError::KeysUnavailable(_) => AuthReason::KeysUnavailable,
            AuthError::Invalid(e) => match e {
                TokenError::Expired | TokenError::NotYetValid => AuthReason::Expired,
                TokenError::WrongAudience => AuthReason::Audience,
                TokenError::WrongIssuer => AuthReason::Issuer,
                TokenError::OrganisationNotAccepted => AuthReason::Organisation,
                TokenError::Inactive => AuthReason::Inactive,
                TokenError::TooLarge | TokenError::Malformed(_) | TokenError::WrongType => {
                    AuthReason::Malformed
                }
                _ => AuthReason::Invalid,
            },
        }
    }

    /// What the JSON-RPC error body says.
    pub fn message(&self) -> &'static str {
        match self {
            AuthError::CertificateRequired => "client certificate required",
            AuthError::TokenInQuery => "tokens in the query string are not accepted",
            AuthError::Missing => "authentication required",
            AuthError::Malformed | AuthError::Invalid(_) | AuthError::NotBound => "invalid token",
            AuthError::InsufficientScope { .. } | AuthError::CallNeedsScopes { .. } => {
                "insufficient scope"
            }
            AuthError::KeysUnavailable(_) => "token validation unavailable",
        }
    }

    /// The RFC 6750 `error` and `error_description` of the challenge, if any.
    fn challenge_error(&self) -> Option<(&'static str, &'static str)> {
        match self {
            AuthError::CertificateRequired | AuthError::Missing => None,
            AuthError::TokenInQuery => Some((
                "invalid_request",
                "send the token in the Authorization header",
            )),
            AuthError::Malformed => Some(("invalid_token", "malformed bearer credentials")),
            AuthError::Invalid(e) => Some(("invalid_token", e.description())),
            AuthError::NotBound => Some((
                "invalid_token",
                "the token is not bound to the presented client certificate",
            )),
            AuthError::InsufficientScope { .. } => {
                Some(("insufficient_scope", "the token lacks a required scope"))
            }
            AuthError::CallNeedsScopes { .. } => {
                Some(("insufficient_scope", "the call needs more scopes"))
            }
            AuthError::KeysUnavailable(d) => Some(("temporarily_unavailable", d)),
        }
    }

    /// The refusal with its challenge, for route `route` of the proxy at `public_url`.
    pub fn challenged(self, public_url: &http::Uri, route: &RouteAuth<'_>) -> AuthRefusal {
        let scopes = match &self {
            AuthError::CallNeedsScopes { needed } => needed.as_slice(),
            _ => route.scopes,
        };
        let challenge = (!matches!(self, AuthError::CertificateRequired)).then(|| {
            bearer::challenge(
                &bearer::metadata_url(public_url, route.path),
                scopes,
                self.challenge_error(),
            )
        });
        AuthRefusal {
            error: self,
            challenge,
        }
    }
}

/// An [`AuthError`] with the `WWW-Authenticate` value that answers it.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct AuthRefusal {
    /// What was refused.
    pub error: AuthError,
    /// The challenge (none for a missing client certificate).
    pub challenge: Option<HeaderValue>,
}

/// Who is calling, as proven by the request path.
#[derive(Debug, Clone, Copy, Default)]
pub struct Principal<'a> {
    /// Claims of a validated bearer token.
    pub claims: Option<&'a Claims>,
    /// Identity of a verified client certificate.
    pub cert: Option<&'a ClientIdentity>,
    /// Organisation, from the configured claim.
    pub organisation: Option<&'a str>,
}

impl Principal<'_> {
    /// A stable name for logs and the audit trail: `<iss>#<sub>` for tokens, the certificate
    /// identity otherwise, `anonymous` for open routes.
    pub fn label(&self) -> String {
        if let Some(c) = self.claims {
            let who = c
                .subject
                .as_deref()
                .or(c.client_id.as_deref())
                .unwrap_or("-");
            return format!("{}#{who}", c.issuer);
        }
        match self.cert {
            Some(id) => id.principal().to_owned(),
            None => "anonymous".to_owned(),
        }
    }

    /// The token's scopes, if a token was presented.
    pub fn scopes(&self) -> Option<&std::collections::BTreeSet<String>> {
        self.claims.map(|c| &c.scopes)
    }
}

/// The caller, as proven on this request. Cheap to build and clone: the token's part is shared
/// with the verified-token cache.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    token: Option<Arc<VerifiedToken>>,
    /// A verified client certificate.
    pub cert: Option<Arc<ClientIdentity>>,
}

impl Identity {
    /// The identity of `token` and `cert`, whichever were proven.
    pub fn new(token: Option<Arc<VerifiedToken>>, cert: Option<Arc<ClientIdentity>>) -> Self {
        Identity { token, cert }
    }

    /// The validated bearer token.
    pub fn token(&self) -> Option<&VerifiedToken> {
        self.token.as_deref()
    }

    /// Claims of a validated bearer token.
    pub fn claims(&self) -> Option<&Claims> {
        self.token.as_deref().map(|t| &t.claims)
    }

    /// The organisation, as the token's issuer vouched for it.
    pub fn organisation(&self) -> Option<&str> {
        self.claims()?.organisation.as_deref()
    }

    /// The one name of this caller in logs, the audit trail and metrics (see the module docs).
    pub fn label(&self) -> &str {
        match (&self.token, &self.cert) {
            (Some(t), _) => &t.label,
            (None, Some(id)) => id.principal(),
            (None, None) => "anonymous",
        }
    }

    /// The view the policy matches on.
    pub fn principal(&self) -> Principal<'_> {
        Principal {
            claims: self.claims(),
            cert: self.cert.as_deref(),
            organisation: self.organisation(),
        }
    }

    /// What sessions are bound to: the token's issuer and subject (or client id), plus the
    /// certificate when the token is bound to it; else the client certificate.
    pub fn session_binding(&self) -> PrincipalHash {
        let cert = self.cert.as_deref();
        // Asked on every request (endpoint affinity): the common cases are hashed once.
        match (&self.token, cert) {
            (Some(t), _) if t.claims.cnf_x5t_s256.is_none() => return t.binding,
            (None, None) => {
                static ANONYMOUS: std::sync::OnceLock<PrincipalHash> = std::sync::OnceLock::new();
                return *ANONYMOUS.get_or_init(|| session::principal_hash(None, None, None));
            }
            _ => {}
        }
        match self.claims() {
            Some(c) => session::principal_hash(
                Some(&c.issuer),
                c.subject.as_deref().or(c.client_id.as_deref()),
                c.cnf_x5t_s256
                    .as_ref()
                    .and(cert)
                    .map(|id| id.sha256.as_slice()),
            ),
            None => session::principal_hash(None, None, cert.map(|id| id.sha256.as_slice())),
        }
    }
}

/// Checks what `route` demands (client certificate, bearer token, certificate binding,
/// scopes) and returns who the caller is.
pub async fn authenticate(
    route: &RouteAuth<'_>,
    issuers: &SharedIssuers,
    headers: &http::HeaderMap,
    query: Option<&str>,
    cert: Option<Arc<ClientIdentity>>,
) -> Result<Identity, AuthError> {
    let has_cert = cert.is_some();
    let (cert_needed, token_needed) = match route.require {
        RequireAuth::None => return Ok(Identity::new(None, cert)),
        RequireAuth::Certificate => (true, false),
        RequireAuth::Token => (false, true),
        RequireAuth::Either => (false, !has_cert),
        RequireAuth::Both => (true, true),
    };
    if cert_needed && !has_cert {
        return Err(AuthError::CertificateRequired);
    }
    let token = match bearer::extract(headers, query) {
        Ok(t) => t,
        Err(BearerError::InQuery) => return Err(AuthError::TokenInQuery),
        Err(BearerError::Malformed) => return Err(AuthError::Malformed),
    };
    let Some(token) = token else {
        if token_needed {
            return Err(AuthError::Missing);
        }
        return Ok(Identity::new(None, cert));
    };
    let verified = match issuers.validate(token, route).await {
        Ok(v) => v,
        Err(e) if e.is_server_side() => {
            tracing::warn!(route = %route.path, error = %e, "token keys unavailable");
            return Err(AuthError::KeysUnavailable(e.description()));
        }
        Err(e) => {
            tracing::info!(route = %route.path, error = %e, "token refused");
            return Err(AuthError::Invalid(e));
        }
    };
    let claims = &verified.claims;
    // RFC 8705: a token bound to a certificate is only good with that certificate, whether
    // or not the route demands binding.
    let bound_ok = match (&claims.cnf_x5t_s256, &cert) {
        (Some(want), Some(id)) => {
            *want == base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id.sha256)
        }
        (Some(_), None) => false,
        (None, _) => !route.certificate_bound_tokens,
    };
    if !bound_ok {
        tracing::info!(route = %route.path, "token refused: not bound to the presented client certificate");
        return Err(AuthError::NotBound);
    }
    if !route.scopes.iter().all(|s| claims.scopes.contains(s)) {
        return Err(AuthError::InsufficientScope {
            needed: route.scopes.to_vec(),
        });
    }
    Ok(Identity::new(Some(verified), cert))
}
