//! Bearer token (JWT) validation against one issuer's policy.
//!
//! [`IssuerPolicy::validate`] checks, in this order: size; compact structure; header (`alg`
//! must be in the issuer's allowlist, `none` never is; `crit` is refused; `typ`, when present,
//! must say access token, see [`access_token_type`]; `jku`, `x5u`, `x5c` and `jwk` are
//! ignored, never fetched or used); `iss` (exact, before any key lookup so
//! foreign tokens cannot trigger JWKS refetches); the key from the issuer's [`KeyStore`] only;
//! the signature; `exp` (required) and `nbf` with the configured leeway; and `aud`, which must
//! contain the route's resource URI compared in RFC 8707 canonical form
//! ([`canonical_resource`]).
//!
//! Algorithm confusion is closed three times over: HS* algorithms are accepted only for an
//! issuer whose key source is an HMAC secret file (and then no asymmetric algorithm is); keys
//! are tied to the algorithms their type allows, so an RSA key is never offered for HS256; and
//! the crypto backend refuses a key of the wrong family.

use std::collections::BTreeSet;
use std::str::FromStr;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, AlgorithmFamily};
use serde_json::{Map, Value};

use super::jwks::{KeyError, KeyStore};

/// Default clock-skew allowance for `exp` and `nbf`.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(60);
/// Default maximum token length in bytes.
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Why a token was refused. [`TokenError::description`] is safe for a 401 `error_description`:
/// it never includes token contents or key material.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Longer than the issuer's `max_token_bytes`.
    #[error("token too large")]
    TooLarge,
    /// Not a compact JWS with JSON header and claims, or a required claim is missing or has the
    /// wrong type. The reason is a fixed phrase.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// `alg` is `none`, unknown, or not in the issuer's allowlist.
    #[error("token algorithm not accepted")]
    UnsupportedAlgorithm,
    /// No key of the issuer matches the token's `kid` and `alg`.
    #[error("token signing key not recognised")]
    UnknownKey,
    /// The signature does not verify.
    #[error("token signature invalid")]
    BadSignature,
    /// `exp` is past (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("token not yet valid")]
    NotYetValid,
    /// `iss` is missing or not exactly the issuer.
    #[error("token issuer not accepted")]
    WrongIssuer,
    /// `aud` is missing or does not contain this resource.
    #[error("token audience does not include this resource")]
    WrongAudience,
    /// The issuer's keys could not be loaded (identity provider unreachable since start).
    /// A server-side condition: answer 503, not 401.
    #[error("token signing keys unavailable")]
    KeysUnavailable,
    /// The authorization server says the (opaque) token is not active.
    #[error("token not active")]
    Inactive,
    /// The introspection endpoint gave no usable answer. Server-side: 503.
    #[error("token introspection unavailable")]
    IntrospectionUnavailable,
    /// The header's `typ` names another kind of token (DPoP proof, logout token, …).
    #[error("token type not accepted")]
    WrongType,
    /// The organisation claim is missing or outside the organisations the issuer may vouch for.
    #[error("token organisation not accepted from its issuer")]
    OrganisationNotAccepted,
}

impl TokenError {
    /// Fixed text for `WWW-Authenticate: Bearer error="invalid_token", error_description="…"`.
    pub fn description(&self) -> &'static str {
        match self {
            TokenError::TooLarge => "token too large",
            TokenError::Malformed(_) => "malformed token",
            TokenError::UnsupportedAlgorithm => "token algorithm not accepted",
            TokenError::UnknownKey => "token signing key not recognised",
            TokenError::BadSignature => "token signature invalid",
            TokenError::Expired => "token expired",
            TokenError::NotYetValid => "token not yet valid",
            TokenError::WrongIssuer => "token issuer not accepted",
            TokenError::WrongAudience => "token audience does not include this resource",
            TokenError::KeysUnavailable => "token signing keys unavailable",
            TokenError::Inactive => "token not active",
            TokenError::IntrospectionUnavailable => "token introspection unavailable",
            TokenError::WrongType => "token type not accepted",
            TokenError::OrganisationNotAccepted => {
                "token organisation not accepted from its issuer"
            }
        }
    }

    /// Whether the failure is on the proxy's side (503) rather than the token's (401).
    pub fn is_server_side(&self) -> bool {
        matches!(
            self,
            TokenError::KeysUnavailable | TokenError::IntrospectionUnavailable
        )
    }
}

/// Why an issuer policy is inconsistent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// `issuer` is empty.
    #[error("issuer must not be empty")]
    EmptyIssuer,
    /// `algorithms` is empty.
    #[error("issuer {0}: `algorithms` must list at least one algorithm")]
    NoAlgorithms(String),
    /// An HS* algorithm without an HMAC secret source, or an asymmetric one with it.
    #[error(
        "issuer {0}: HS256/HS384/HS512 require `hmac_secret_file` as the key source and cannot be combined with RS/PS/ES/EdDSA algorithms or public-key sources"
    )]
    MixedKeyKinds(String),
    /// `max_token_bytes` is zero.
    #[error("issuer {0}: `max_token_bytes` must be greater than zero")]
    ZeroMaxTokenBytes(String),
}

/// What a valid token says. `raw` holds every claim (including the ones extracted into the
/// typed fields) for policy matching, e.g. on an organisation id.
#[derive(Debug, Clone, PartialEq)]
pub struct Claims {
    /// `iss`.
    pub issuer: String,
    /// `sub`, if present.
    pub subject: Option<String>,
    /// `aud`, as one or more strings.
    pub audience: Vec<String>,
    /// Union of `scope` (space-separated string, or array) and `scp` (array, or
    /// space-separated string).
    pub scopes: BTreeSet<String>,
    /// `client_id`, else `azp`.
    pub client_id: Option<String>,
    /// `cnf.x5t#S256` (RFC 8705 certificate binding), if present.
    pub cnf_x5t_s256: Option<String>,
    /// `exp`, seconds since the epoch.
    pub expires_at: u64,
    /// `kid` of the header, if any.
    pub key_id: Option<String>,
    /// Algorithm a JWT was verified with; `None` for opaque tokens checked by introspection.
    pub algorithm: Option<Algorithm>,
    /// All claims, as sent.
    pub raw: Map<String, Value>,
    /// The organisation the issuer vouches for (its organisation claim, a string or number),
    /// filled in by [`crate::auth::bearer::Issuers::validate`].
    pub organisation: Option<String>,
    /// The subject as backends see it (identity header, upstream token `sub`): `sub`, or
    /// `<iss>#<sub>` when several issuers are configured, so that two identity providers'
    /// `alice` never look like one user.
    pub backend_subject: Option<String>,
}

/// How tokens from one issuer are validated.
#[derive(Debug, Clone)]
pub struct IssuerPolicy {
    issuer: String,
    algorithms: Vec<Algorithm>,
    leeway: Duration,
    max_token_bytes: usize,
    keys: KeyStore,
}

impl IssuerPolicy {
    /// A policy for tokens whose `iss` is exactly `issuer`, signed with one of `algorithms` by
    /// a key from `keys`. HS* algorithms only with an HMAC secret store, never together with
    /// asymmetric ones.
    pub fn new(
        issuer: impl Into<String>,
        algorithms: Vec<Algorithm>,
        leeway: Duration,
        max_token_bytes: usize,
        keys: KeyStore,
    ) -> Result<IssuerPolicy, PolicyError> {
        let issuer = issuer.into();
        if issuer.is_empty() {
            return Err(PolicyError::EmptyIssuer);
        }
        if algorithms.is_empty() {
            return Err(PolicyError::NoAlgorithms(issuer));
        }
        let symmetric = keys.is_symmetric();
        if algorithms
            .iter()
            .any(|a| (a.family() == AlgorithmFamily::Hmac) != symmetric)
        {
            return Err(PolicyError::MixedKeyKinds(issuer));
        }
        if max_token_bytes == 0 {
            return Err(PolicyError::ZeroMaxTokenBytes(issuer));
        }
        let mut algorithms = algorithms;
        algorithms.dedup();
        Ok(IssuerPolicy {
            issuer,
            algorithms,
            leeway,
            max_token_bytes,
            keys,
        })
    }

    /// The exact `iss` value accepted.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The algorithm allowlist.
    pub fn algorithms(&self) -> &[Algorithm] {
        &self.algorithms
    }

    /// The clock skew allowed on `exp` and `nbf`.
    pub fn leeway(&self) -> Duration {
        self.leeway
    }

    /// The issuer's key store (for status and reloads).
    pub fn keys(&self) -> &KeyStore {
        &self.keys
    }

    /// Validates `token` for the resource `expected_audience` (the route's resource URI).
    pub async fn validate(
        &self,
        token: &str,
        expected_audience: &str,
    ) -> Result<Claims, TokenError> {
        if token.len() > self.max_token_bytes {
            return Err(TokenError::TooLarge);
        }
        let parts = split(token)?;
        let header = decode_object(parts.header, "header is not a base64url JSON object")?;
        let alg = header_alg(&header)?;
        if !self.algorithms.contains(&alg) {
            return Err(TokenError::UnsupportedAlgorithm);
        }
        if header.contains_key("crit") {
            // RFC 7515 §4.1.11: extensions we do not understand make the token invalid.
            return Err(TokenError::Malformed("critical header extensions"));
        }
        match header.get("typ") {
            None => {}
            Some(Value::String(t)) if access_token_type(t) => {}
            // Same issuer, same keys, other purpose (DPoP proof, logout token, security event):
            // such a token must not pass for an access token (RFC 8725 §3.11).
            Some(Value::String(_)) => return Err(TokenError::WrongType),
            Some(_) => return Err(TokenError::Malformed("typ is not a string")),
        }
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(k)) => Some(k.as_str()),
            Some(_) => return Err(TokenError::Malformed("kid is not a string")),
        };
        // `jku`, `x5u`, `x5c`, `jwk`: deliberately never read.
        let claims = decode_object(parts.payload, "claims are not a base64url JSON object")?;
        match claims.get("iss") {
            Some(Value::String(iss)) if *iss == self.issuer => {}
            _ => return Err(TokenError::WrongIssuer),
        }

        let keys = self.keys.candidates(kid, alg).await.map_err(|e| match e {
            KeyError::NoKeys => TokenError::KeysUnavailable,
            KeyError::UnknownKey | KeyError::AlgorithmMismatch | KeyError::Ambiguous => {
                TokenError::UnknownKey
            }
        })?;
        let message = &token[..parts.header.len() + 1 + parts.payload.len()];
        let verified = keys.iter().any(|key| {
            jsonwebtoken::crypto::verify(parts.signature, message.as_bytes(), key, alg)
                .unwrap_or(false)
        });
        if !verified {
            return Err(TokenError::BadSignature);
        }

        let now = super::introspection::unix_now();
        let leeway = self.leeway.as_secs_f64();
        let exp = match claims.get("exp") {
            None => return Err(TokenError::Malformed("exp claim missing")),
            Some(v) => numeric_date(v).ok_or(TokenError::Malformed("exp is not a number"))?,
        };
        if now > exp + leeway {
            return Err(TokenError::Expired);
        }
        if let Some(v) = claims.get("nbf") {
            let nbf = numeric_date(v).ok_or(TokenError::Malformed("nbf is not a number"))?;
            if now + leeway < nbf {
                return Err(TokenError::NotYetValid);
            }
        }

        let audience = match claims.get("aud") {
            None => return Err(TokenError::WrongAudience),
            Some(Value::String(a)) => vec![a.clone()],
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or(TokenError::Malformed(
                    "aud is not a string or array of strings",
                ))?,
            Some(_) => {
                return Err(TokenError::Malformed(
                    "aud is not a string or array of strings",
                ));
            }
        };
        if !audience.iter().any(|a| same_resource(a, expected_audience)) {
            return Err(TokenError::WrongAudience);
        }

        let subject = claims.get("sub").and_then(Value::as_str).map(str::to_owned);
        Ok(Claims {
            issuer: self.issuer.clone(),
            backend_subject: subject.clone(),
            subject,
            organisation: None,
            audience,
            scopes: scopes(&claims),
            client_id: claims
                .get("client_id")
                .or_else(|| claims.get("azp"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            cnf_x5t_s256: claims
                .get("cnf")
                .and_then(|c| c.get("x5t#S256"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            expires_at: exp.max(0.0) as u64,
            key_id: kid.map(str::to_owned),
            algorithm: Some(alg),
            raw: claims,
        })
    }
}

/// Whether a JWT `typ` header names an access token: `JWT` or `at+jwt` (RFC 9068), compared
/// case-insensitively, with or without the `application/` prefix (RFC 7515 §4.1.9).
pub fn access_token_type(typ: &str) -> bool {
    let t = typ.to_ascii_lowercase();
    let t = t.strip_prefix("application/").unwrap_or(&t);
    t == "jwt" || t == "at+jwt"
}

/// The `iss` claim of a token, unverified: only for choosing which [`IssuerPolicy`] validates
/// it. Never trust it for anything else.
pub fn unverified_issuer(token: &str, max_token_bytes: usize) -> Result<String, TokenError> {
    if token.len() > max_token_bytes {
        return Err(TokenError::TooLarge);
    }
    let parts = split(token)?;
    let claims = decode_object(parts.payload, "claims are not a base64url JSON object")?;
    match claims.get("iss") {
        Some(Value::String(iss)) => Ok(iss.clone()),
        _ => Err(TokenError::WrongIssuer),
    }
}

struct Parts<'a> {
    header: &'a str,
    payload: &'a str,
    signature: &'a str,
}

fn split(token: &str) -> Result<Parts<'_>, TokenError> {
    let mut it = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (it.next(), it.next(), it.next(), it.next())
    else {
        return Err(TokenError::Malformed("not a compact JWS (three parts)"));
    };
    let b64url = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if header.is_empty() || payload.is_empty() || !b64url(header) || !b64url(payload) {
        return Err(TokenError::Malformed("not a compact JWS (three parts)"));
    }
    // An empty signature (`alg: none` style) passes here; it never verifies.
    if !b64url(signature) {
        return Err(TokenError::Malformed("not a compact JWS (three parts)"));
    }
    Ok(Parts {
        header,
        payload,
        signature,
    })
}

fn decode_object(part: &str, what: &'static str) -> Result<Map<String, Value>, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::Malformed(what))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(TokenError::Malformed(what)),
    }
}

fn header_alg(header: &Map<String, Value>) -> Result<Algorithm, TokenError> {
    match header.get("alg") {
        Some(Value::String(name)) => {
            Algorithm::from_str(name).map_err(|_| TokenError::UnsupportedAlgorithm)
        }
        Some(_) => Err(TokenError::Malformed("alg is not a string")),
        None => Err(TokenError::Malformed("alg missing")),
    }
}

/// A JSON NumericDate: a finite, non-negative number of seconds.
fn numeric_date(v: &Value) -> Option<f64> {
    v.as_f64().filter(|n| n.is_finite() && *n >= 0.0)
}

fn scopes(claims: &Map<String, Value>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for name in ["scope", "scp"] {
        match claims.get(name) {
            Some(Value::String(s)) => out.extend(s.split_whitespace().map(str::to_owned)),
            Some(Value::Array(items)) => out.extend(
                items
                    .iter()
                    .filter_map(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
            ),
            _ => {}
        }
    }
    out
}

fn same_resource(token_aud: &str, expected: &str) -> bool {
    match (canonical_resource(token_aud), canonical_resource(expected)) {
        (Some(a), Some(b)) => a == b,
        _ => token_aud == expected,
    }
}

/// RFC 8707 canonical form of an `http(s)` resource URI, for audience comparison: scheme and
/// host lower-cased, default port (443/80) removed, fragment dropped, trailing `/` of the path
/// removed (`https://h/` and `https://h` are equal); path and query kept as they are (case
/// sensitive). `None` for anything that is not an absolute `http(s)` URI with a host, or that
/// carries user info.
pub fn canonical_resource(uri: &str) -> Option<String> {
    let (scheme, rest) = uri.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => "443",
        "http" => "80",
        _ => return None,
    };
    let rest = rest.split_once('#').map_or(rest, |(r, _)| r);
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, after) = v6.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (format!("[{}]", h.to_ascii_lowercase()), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_ascii_lowercase(), Some(p)),
            None => (authority.to_ascii_lowercase(), None),
        }
    };
    if host.is_empty() || host == "[]" {
        return None;
    }
    let port = match port {
        None | Some("") => None,
        Some(p) if p.bytes().all(|b| b.is_ascii_digit()) => {
            let n: u16 = p.parse().ok()?;
            (n.to_string() != default_port).then(|| n.to_string())
        }
        Some(_) => return None,
    };
    let (path, query) = match tail.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (tail, None),
    };
    let path = path.trim_end_matches('/');
    let mut out = format!("{scheme}://{host}");
    if let Some(port) = port {
        out.push(':');
        out.push_str(&port);
    }
    out.push_str(path);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::jwks::KeySource;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    const ISS: &str = "https://idp.example";
    const AUD: &str = "https://mcp.example/tools";

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    struct Fixture {
        _dir: tempfile::TempDir,
        enc: EncodingKey,
        policy: IssuerPolicy,
        pub_pem: String,
    }

    async fn ec_fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let enc = EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).unwrap();
        let path = dir.path().join("k.pem");
        std::fs::write(&path, kp.public_key_pem()).unwrap();
        let keys = KeyStore::new(KeySource::PemKeys(vec![path])).await.unwrap();
        let policy = IssuerPolicy::new(
            ISS,
            vec![Algorithm::ES256],
            Duration::from_secs(30),
            4096,
            keys,
        )
        .unwrap();
        Fixture {
            _dir: dir,
            enc,
            policy,
            pub_pem: kp.public_key_pem(),
        }
    }

    fn claims() -> Value {
        json!({ "iss": ISS, "aud": AUD, "sub": "alice", "exp": now() + 300 })
    }

    fn sign(f: &Fixture, claims: &Value) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::ES256), claims, &f.enc).unwrap()
    }

    fn with(mut v: Value, k: &str, val: Value) -> Value {
        v[k] = val;
        v
    }

    #[tokio::test]
    async fn valid_token_yields_claims() {
        let f = ec_fixture().await;
        let c = json!({
            "iss": ISS, "aud": [ "other", "HTTPS://MCP.example:443/tools/" ], "sub": "alice",
            "exp": now() + 300, "nbf": now() - 5, "scope": "read  write", "scp": ["admin"],
            "azp": "client-1", "cnf": { "x5t#S256": "abc" }, "org": "acme",
        });
        let claims = f.policy.validate(&sign(&f, &c), AUD).await.unwrap();
        assert_eq!(claims.subject.as_deref(), Some("alice"));
        assert_eq!(claims.issuer, ISS);
        assert_eq!(
            claims.scopes.iter().collect::<Vec<_>>(),
            ["admin", "read", "write"]
        );
        assert_eq!(claims.client_id.as_deref(), Some("client-1"));
        assert_eq!(claims.cnf_x5t_s256.as_deref(), Some("abc"));
        assert_eq!(claims.raw["org"], "acme");
        assert_eq!(claims.algorithm, Some(Algorithm::ES256));
        assert_eq!(claims.audience.len(), 2);
        assert_eq!(unverified_issuer(&sign(&f, &c), 4096).unwrap(), ISS);
    }

    #[tokio::test]
    async fn claim_failures() {
        let f = ec_fixture().await;
        let v = |c: Value| {
            let t = sign(&f, &c);
            let p = f.policy.clone();
            async move { p.validate(&t, AUD).await.unwrap_err() }
        };
        assert_eq!(
            v(with(claims(), "exp", json!(now() - 120))).await,
            TokenError::Expired
        );
        // Within the leeway (30 s).
        assert!(
            f.policy
                .validate(&sign(&f, &with(claims(), "exp", json!(now() - 10))), AUD)
                .await
                .is_ok()
        );
        assert_eq!(
            v(with(claims(), "nbf", json!(now() + 120))).await,
            TokenError::NotYetValid
        );
        assert_eq!(
            v(with(claims(), "iss", json!("https://idp.example/"))).await,
            TokenError::WrongIssuer
        );
        assert_eq!(
            v(with(claims(), "aud", json!("https://mcp.example/other"))).await,
            TokenError::WrongAudience
        );
        assert_eq!(
            v(with(claims(), "aud", json!(["a", "b"]))).await,
            TokenError::WrongAudience
        );
        let mut no_exp = claims();
        no_exp.as_object_mut().unwrap().remove("exp");
        assert!(matches!(v(no_exp).await, TokenError::Malformed(_)));
        let mut no_aud = claims();
        no_aud.as_object_mut().unwrap().remove("aud");
        assert_eq!(v(no_aud).await, TokenError::WrongAudience);
        assert!(matches!(
            v(with(claims(), "exp", json!("tomorrow"))).await,
            TokenError::Malformed(_)
        ));
    }

    #[tokio::test]
    async fn structural_failures() {
        let f = ec_fixture().await;
        let good = sign(&f, &claims());
        let p = &f.policy;
        assert!(matches!(
            p.validate("abc", AUD).await,
            Err(TokenError::Malformed(_))
        ));
        assert!(matches!(
            p.validate("a.b.c.d", AUD).await,
            Err(TokenError::Malformed(_))
        ));
        assert!(matches!(
            p.validate(&format!("{good} "), AUD).await,
            Err(TokenError::Malformed(_))
        ));
        assert_eq!(
            p.validate(&"a".repeat(5000), AUD).await,
            Err(TokenError::TooLarge)
        );
        // Tampered claims: signature no longer matches.
        let mut parts: Vec<&str> = good.split('.').collect();
        let evil = URL_SAFE_NO_PAD.encode(with(claims(), "sub", json!("mallory")).to_string());
        parts[1] = &evil;
        assert_eq!(
            p.validate(&parts.join("."), AUD).await,
            Err(TokenError::BadSignature)
        );
        // alg none, with and without a signature part.
        let none = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
        let body = URL_SAFE_NO_PAD.encode(claims().to_string());
        assert_eq!(
            p.validate(&format!("{none}.{body}."), AUD).await,
            Err(TokenError::UnsupportedAlgorithm)
        );
        assert_eq!(
            p.validate(&format!("{none}.{body}.AAAA"), AUD).await,
            Err(TokenError::UnsupportedAlgorithm)
        );
        // crit is refused.
        let crit = URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256","crit":["b64"],"b64":false}"#);
        assert!(matches!(
            p.validate(&format!("{crit}.{body}.AAAA"), AUD).await,
            Err(TokenError::Malformed(_))
        ));
    }

    #[tokio::test]
    async fn only_access_token_types_are_accepted() {
        let f = ec_fixture().await;
        let typed = |typ: Option<&str>| {
            let mut h = Header::new(Algorithm::ES256);
            h.typ = typ.map(str::to_owned);
            jsonwebtoken::encode(&h, &claims(), &f.enc).unwrap()
        };
        for ok in [
            None,
            Some("JWT"),
            Some("jwt"),
            Some("at+jwt"),
            Some("AT+JWT"),
            Some("application/at+jwt"),
            Some("Application/JWT"),
        ] {
            assert!(f.policy.validate(&typed(ok), AUD).await.is_ok(), "{ok:?}");
        }
        for bad in [
            "dpop+jwt",
            "logout+jwt",
            "secevent+jwt",
            "id_token+jwt",
            "application/dpop+jwt",
            "at+jwt+x",
            "application/",
            "",
        ] {
            assert_eq!(
                f.policy.validate(&typed(Some(bad)), AUD).await,
                Err(TokenError::WrongType),
                "{bad}"
            );
        }
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"ES256","typ":7}"#);
        let body = URL_SAFE_NO_PAD.encode(claims().to_string());
        assert!(matches!(
            f.policy
                .validate(&format!("{header}.{body}.AAAA"), AUD)
                .await,
            Err(TokenError::Malformed(_))
        ));
    }

    #[tokio::test]
    async fn hs256_with_public_key_bytes_is_refused() {
        let f = ec_fixture().await;
        let forged = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims(),
            &EncodingKey::from_secret(f.pub_pem.as_bytes()),
        )
        .unwrap();
        assert_eq!(
            f.policy.validate(&forged, AUD).await,
            Err(TokenError::UnsupportedAlgorithm)
        );
        // Even a policy that (wrongly) listed HS256 is refused at construction.
        assert!(matches!(
            IssuerPolicy::new(
                ISS,
                vec![Algorithm::ES256, Algorithm::HS256],
                DEFAULT_LEEWAY,
                4096,
                f.policy.keys().clone()
            ),
            Err(PolicyError::MixedKeyKinds(_))
        ));
        // And the store never offers a public key for HS256.
        assert!(
            f.policy
                .keys()
                .key_for(None, Algorithm::HS256)
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn hmac_issuer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        let secret = b"0123456789abcdef0123456789abcdef";
        std::fs::write(&path, secret).unwrap();
        let keys = KeyStore::new(KeySource::HmacSecretFile(path))
            .await
            .unwrap();
        assert!(matches!(
            IssuerPolicy::new(
                ISS,
                vec![Algorithm::RS256],
                DEFAULT_LEEWAY,
                4096,
                keys.clone()
            ),
            Err(PolicyError::MixedKeyKinds(_))
        ));
        let policy =
            IssuerPolicy::new(ISS, vec![Algorithm::HS256], DEFAULT_LEEWAY, 4096, keys).unwrap();
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims(),
            &EncodingKey::from_secret(secret),
        )
        .unwrap();
        assert!(policy.validate(&token, AUD).await.is_ok());
        let wrong = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims(),
            &EncodingKey::from_secret(b"another-secret-another-secret-xx"),
        )
        .unwrap();
        assert_eq!(
            policy.validate(&wrong, AUD).await,
            Err(TokenError::BadSignature)
        );
        let hs512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &claims(),
            &EncodingKey::from_secret(secret),
        )
        .unwrap();
        assert_eq!(
            policy.validate(&hs512, AUD).await,
            Err(TokenError::UnsupportedAlgorithm)
        );
    }

    #[test]
    fn canonical_resources() {
        let c = |s: &str| canonical_resource(s);
        assert_eq!(
            c("HTTPS://MCP.Example.COM:443/Tools/#frag").as_deref(),
            Some("https://mcp.example.com/Tools")
        );
        assert_eq!(
            c("https://mcp.example.com/").as_deref(),
            Some("https://mcp.example.com")
        );
        assert_eq!(c("http://h:80/a?x=1").as_deref(), Some("http://h/a?x=1"));
        assert_eq!(c("https://h:8443/a").as_deref(), Some("https://h:8443/a"));
        assert_eq!(c("https://h:0443").as_deref(), Some("https://h"));
        assert_eq!(c("https://[::1]:443/m").as_deref(), Some("https://[::1]/m"));
        assert_eq!(c("https://[::1]:9/m").as_deref(), Some("https://[::1]:9/m"));
        assert_eq!(c("https://u@h/"), None);
        assert_eq!(c("ftp://h/"), None);
        assert_eq!(c("urn:x"), None);
        assert_eq!(c("https://h:x/"), None);
        assert_eq!(c("https:///p"), None);
        assert!(same_resource("https://H/a/", "https://h/a"));
        assert!(!same_resource("https://h/A", "https://h/a"));
        assert!(!same_resource("https://h/a", "http://h/a"));
        assert!(same_resource("api://x", "api://x"));
    }

    #[test]
    fn descriptions_are_fixed() {
        for e in [
            TokenError::TooLarge,
            TokenError::Malformed("x"),
            TokenError::UnsupportedAlgorithm,
            TokenError::UnknownKey,
            TokenError::BadSignature,
            TokenError::Expired,
            TokenError::NotYetValid,
            TokenError::WrongIssuer,
            TokenError::WrongAudience,
            TokenError::KeysUnavailable,
            TokenError::WrongType,
            TokenError::OrganisationNotAccepted,
        ] {
            assert!(!e.description().contains('"'));
            assert_eq!(e.is_server_side(), e == TokenError::KeysUnavailable);
        }
    }
}
