//! Bearer token validation against a local HTTPS JWKS endpoint: fetch, rotation, single-flight
//! and rate-limited refetches, stale serving, the cache file, and every rejection path.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::signature::KeyPair as _;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header, jwk::Jwk};
use mcp_edge::auth::jwks::{JwksUrlConfig, KeySource, KeyStore};
use mcp_edge::auth::jwt::{IssuerPolicy, TokenError};
use serde_json::{Value, json};
use support::clock::now;

use support::jwks_server::JwksServer;

const ISS: &str = "https://idp.example.com/tenant";
const AUD: &str = "https://mcp.example.com/memory";

fn init() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

fn pem(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// A signing key generated for this test run, with its public JWK.
struct TestKey {
    kid: String,
    alg: Algorithm,
    enc: EncodingKey,
    jwk: Value,
    /// Public key, PEM (SPKI).
    public_pem: String,
}

impl TestKey {
    fn ec(kid: &str) -> TestKey {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let enc = EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).unwrap();
        let jwk =
            serde_json::to_value(Jwk::from_encoding_key(&enc, Algorithm::ES256).unwrap()).unwrap();
        TestKey::finish(kid, Algorithm::ES256, enc, jwk, kp.public_key_pem())
    }

    fn rsa(kid: &str, alg: Algorithm) -> TestKey {
        let kp = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
        let pkcs8 = kp.as_der().unwrap();
        let enc = EncodingKey::from_rsa_pem(pem("PRIVATE KEY", pkcs8.as_ref()).as_bytes()).unwrap();
        let jwk = serde_json::to_value(Jwk::from_encoding_key(&enc, alg).unwrap()).unwrap();
        let spki = kp.public_key().as_der().unwrap();
        TestKey::finish(kid, alg, enc, jwk, pem("PUBLIC KEY", spki.as_ref()))
    }

    fn ed(kid: &str) -> TestKey {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let enc = EncodingKey::from_ed_pem(kp.serialize_pem().as_bytes()).unwrap();
        let jwk = json!({
            "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA",
            "x": URL_SAFE_NO_PAD.encode(kp.public_key_raw()),
        });
        TestKey::finish(kid, Algorithm::EdDSA, enc, jwk, kp.public_key_pem())
    }

    fn finish(kid: &str, alg: Algorithm, enc: EncodingKey, mut jwk: Value, pem: String) -> TestKey {
        jwk["kid"] = json!(kid);
        jwk["use"] = json!("sig");
        TestKey {
            kid: kid.to_owned(),
            alg,
            enc,
            jwk,
            public_pem: pem,
        }
    }

    fn header(&self) -> Header {
        let mut h = Header::new(self.alg);
        h.kid = Some(self.kid.clone());
        h
    }

    fn sign(&self, claims: &Value) -> String {
        jsonwebtoken::encode(&self.header(), claims, &self.enc).unwrap()
    }
}

fn jwks(keys: &[&TestKey]) -> String {
    json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() }).to_string()
}

fn claims() -> Value {
    json!({ "iss": ISS, "aud": AUD, "sub": "alice", "exp": now() + 300, "scope": "memory.read" })
}

fn with(mut v: Value, k: &str, val: Value) -> Value {
    v[k] = val;
    v
}

fn config(server: &JwksServer) -> JwksUrlConfig {
    let mut cfg = JwksUrlConfig::new(server.url());
    cfg.ca = Some(server.ca_path.clone());
    cfg.timeout = Duration::from_secs(5);
    cfg
}

async fn policy_for(cfg: JwksUrlConfig, algs: Vec<Algorithm>) -> IssuerPolicy {
    let keys = KeyStore::new(KeySource::JwksUrl(cfg)).await.unwrap();
    IssuerPolicy::new(ISS, algs, Duration::from_secs(30), 8192, keys).unwrap()
}

#[tokio::test]
async fn fetches_and_validates_every_key_type() {
    init();
    let ec = TestKey::ec("ec-1");
    let rs = TestKey::rsa("rsa-1", Algorithm::RS256);
    let ps = TestKey::rsa("rsa-pss", Algorithm::PS384);
    let ed = TestKey::ed("ed-1");
    let server = JwksServer::start(jwks(&[&ec, &rs, &ps, &ed])).await;
    let algs = vec![
        Algorithm::ES256,
        Algorithm::RS256,
        Algorithm::PS384,
        Algorithm::EdDSA,
    ];
    let policy = policy_for(config(&server), algs).await;
    assert_eq!(policy.keys().status().keys, 4);
    for key in [&ec, &rs, &ps, &ed] {
        let got = policy.validate(&key.sign(&claims()), AUD).await;
        let claims = got.unwrap_or_else(|e| panic!("{}: {e}", key.kid));
        assert_eq!(claims.subject.as_deref(), Some("alice"));
        assert_eq!(claims.key_id.as_deref(), Some(key.kid.as_str()));
        assert!(claims.scopes.contains("memory.read"));
    }
    // A key's own `alg` binds it: the PS384 key does not verify RS256.
    let mut h = Header::new(Algorithm::RS256);
    h.kid = Some("rsa-pss".into());
    let t = jsonwebtoken::encode(&h, &claims(), &ps.enc).unwrap();
    assert_eq!(
        policy.validate(&t, AUD).await.unwrap_err(),
        TokenError::UnknownKey
    );
    assert_eq!(
        server.hits(),
        1,
        "one fetch at start, no refetch for known kids"
    );
}

#[tokio::test]
async fn unknown_kid_refetch_picks_up_rotated_key() {
    init();
    let old = TestKey::ec("2026-01");
    let new = TestKey::ec("2026-02");
    let server = JwksServer::start(jwks(&[&old])).await;
    let mut cfg = config(&server);
    cfg.min_refetch_interval = Duration::from_millis(200);
    let policy = policy_for(cfg, vec![Algorithm::ES256]).await;
    assert!(policy.validate(&old.sign(&claims()), AUD).await.is_ok());

    // The IdP rotates; the next token names the new kid.
    server.set_jwks(jwks(&[&old, &new]));
    tokio::time::sleep(Duration::from_millis(250)).await;
    let claims_new = policy.validate(&new.sign(&claims()), AUD).await.unwrap();
    assert_eq!(claims_new.key_id.as_deref(), Some("2026-02"));
    assert_eq!(server.hits(), 2);
    // Both keys are now known: no further fetches.
    assert!(policy.validate(&old.sign(&claims()), AUD).await.is_ok());
    assert!(policy.validate(&new.sign(&claims()), AUD).await.is_ok());
    assert_eq!(server.hits(), 2);
}

#[tokio::test]
async fn burst_of_unknown_kids_is_single_flight_and_rate_limited() {
    init();
    let key = TestKey::ec("real");
    let server = JwksServer::start(jwks(&[&key])).await;
    let mut cfg = config(&server);
    cfg.min_refetch_interval = Duration::from_secs(1);
    let policy = Arc::new(policy_for(cfg, vec![Algorithm::ES256]).await);
    assert_eq!(server.hits(), 1);
    // Past the rate limit, so a miss may fetch; slow answers make the misses overlap.
    tokio::time::sleep(Duration::from_millis(1050)).await;
    server.set_delay(Duration::from_millis(300));

    let attacker = TestKey::ec("x");
    let burst = |n: usize| {
        (0..n)
            .map(|_| {
                let mut h = Header::new(Algorithm::ES256);
                h.kid = Some(format!("garbage-{}", rand::random::<u64>()));
                let t = jsonwebtoken::encode(&h, &claims(), &attacker.enc).unwrap();
                let p = policy.clone();
                tokio::spawn(async move { p.validate(&t, AUD).await })
            })
            .collect::<Vec<_>>()
    };
    for task in burst(50) {
        assert_eq!(task.await.unwrap().unwrap_err(), TokenError::UnknownKey);
    }
    assert_eq!(server.hits(), 2, "50 concurrent misses share one fetch");
    // Right after: rate-limited, no fetch at all.
    for task in burst(50) {
        assert_eq!(task.await.unwrap().unwrap_err(), TokenError::UnknownKey);
    }
    assert_eq!(
        server.hits(),
        2,
        "misses within min_refetch_interval do not fetch"
    );
    // The real key still works throughout.
    assert!(policy.validate(&key.sign(&claims()), AUD).await.is_ok());
}

#[tokio::test]
async fn idp_down_keeps_serving_the_last_good_set() {
    init();
    let key = TestKey::ec("k");
    let server = JwksServer::start(jwks(&[&key])).await;
    let mut cfg = config(&server);
    cfg.min_refetch_interval = Duration::from_millis(50);
    let policy = policy_for(cfg, vec![Algorithm::ES256]).await;
    assert!(policy.validate(&key.sign(&claims()), AUD).await.is_ok());

    // Errors from the IdP: the set is kept.
    server.set_status(503);
    assert!(policy.keys().refresh().await.is_err());
    server.set_jwks(r#"{"keys":[]}"#.into());
    server.set_status(200);
    assert!(
        policy.keys().refresh().await.is_err(),
        "an empty JWKS never replaces a good set"
    );
    assert!(policy.validate(&key.sign(&claims()), AUD).await.is_ok());

    // The IdP disappears entirely.
    server.stop();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(policy.keys().refresh().await.is_err());
    let status = policy.keys().status();
    assert!(status.last_error.is_some());
    // What `mcp_edge_jwks_fetches_total` and `_jwks_age_seconds` are made of: the first
    // fetch succeeded, the three refreshes failed, and the age runs from the first.
    assert_eq!((status.fetches, status.failures), (4, 3), "{status:?}");
    assert!(status.last_success.is_some());
    assert!(policy.validate(&key.sign(&claims()), AUD).await.is_ok());
    // Unknown kids still fail as unknown (not as "keys unavailable").
    let other = TestKey::ec("other");
    assert_eq!(
        policy
            .validate(&other.sign(&claims()), AUD)
            .await
            .unwrap_err(),
        TokenError::UnknownKey
    );
}

#[tokio::test]
async fn cache_file_is_written_and_used_when_idp_is_down_at_start() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("jwks-cache.json");
    let key = TestKey::ec("cached");
    let server = JwksServer::start(jwks(&[&key])).await;
    let mut cfg = config(&server);
    cfg.cache_file = Some(cache.clone());
    {
        let policy = policy_for(cfg.clone(), vec![Algorithm::ES256]).await;
        assert!(policy.validate(&key.sign(&claims()), AUD).await.is_ok());
    }
    let written: Value = serde_json::from_slice(&std::fs::read(&cache).unwrap()).unwrap();
    assert_eq!(written["keys"][0]["kid"], "cached");
    // No temporary files left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

    server.stop();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let policy = policy_for(cfg.clone(), vec![Algorithm::ES256]).await;
    assert!(policy.validate(&key.sign(&claims()), AUD).await.is_ok());

    // Without a cache file the store starts empty and refuses with a server-side error.
    cfg.cache_file = None;
    let policy = policy_for(cfg, vec![Algorithm::ES256]).await;
    let err = policy
        .validate(&key.sign(&claims()), AUD)
        .await
        .unwrap_err();
    assert_eq!(err, TokenError::KeysUnavailable);
    assert!(err.is_server_side());
}

#[tokio::test]
async fn background_refresh_retries_and_drops_removed_keys() {
    init();
    let a = TestKey::ec("a");
    let b = TestKey::ec("b");
    let server = JwksServer::start(jwks(&[&a])).await;
    server.set_status(500);
    let mut cfg = config(&server);
    cfg.min_refetch_interval = Duration::from_millis(100);
    cfg.refresh = Duration::from_millis(300);
    let policy = policy_for(cfg, vec![Algorithm::ES256]).await;
    assert_eq!(
        policy.validate(&a.sign(&claims()), AUD).await.unwrap_err(),
        TokenError::KeysUnavailable
    );
    // The IdP recovers: the background task retries without any traffic.
    server.set_status(200);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(policy.keys().status().keys, 1);
    assert!(policy.validate(&a.sign(&claims()), AUD).await.is_ok());

    // Key "a" is withdrawn: the scheduled refresh drops it.
    server.set_jwks(jwks(&[&b]));
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        policy.validate(&a.sign(&claims()), AUD).await.unwrap_err(),
        TokenError::UnknownKey
    );
    assert!(policy.validate(&b.sign(&claims()), AUD).await.is_ok());
}

#[tokio::test]
async fn untrusted_server_certificate_and_oversized_jwks_are_refused() {
    init();
    let key = TestKey::ec("k");
    let server = JwksServer::start(jwks(&[&key])).await;
    let other = JwksServer::start(jwks(&[&key])).await;

    // The CA of another server: the TLS handshake fails, no keys.
    let mut cfg = config(&server);
    cfg.ca = Some(other.ca_path.clone());
    let store = KeyStore::new(KeySource::JwksUrl(cfg)).await.unwrap();
    assert_eq!(store.status().keys, 0);
    assert!(store.status().last_error.unwrap().contains("certificate"));

    let mut cfg = config(&server);
    cfg.max_body_bytes = 64;
    let store = KeyStore::new(KeySource::JwksUrl(cfg)).await.unwrap();
    assert_eq!(store.status().keys, 0);
    let err = store.refresh().await.unwrap_err().to_string();
    assert!(err.contains("larger than 64 bytes"), "{err}");
}

#[tokio::test]
async fn rejections() {
    init();
    let key = TestKey::ec("ec");
    let rsa = TestKey::rsa("rsa", Algorithm::RS256);
    let server = JwksServer::start(jwks(&[&key, &rsa])).await;
    let policy = policy_for(config(&server), vec![Algorithm::ES256, Algorithm::RS256]).await;
    let check = |token: String| {
        let p = &policy;
        async move { p.validate(&token, AUD).await }
    };

    // Accepted variants first: audience array, canonical-form differences.
    let ok = [
        with(claims(), "aud", json!(["https://other.example", AUD])),
        with(
            claims(),
            "aud",
            json!("HTTPS://MCP.EXAMPLE.COM:443/memory/"),
        ),
        with(claims(), "aud", json!(format!("{AUD}#section"))),
        with(claims(), "exp", json!(now() - 10)),
        with(claims(), "nbf", json!(now() + 10)),
    ];
    for c in ok {
        assert!(check(key.sign(&c)).await.is_ok(), "{c}");
    }

    let cases: Vec<(String, TokenError)> = vec![
        (
            key.sign(&with(claims(), "exp", json!(now() - 600))),
            TokenError::Expired,
        ),
        (
            key.sign(&with(claims(), "nbf", json!(now() + 600))),
            TokenError::NotYetValid,
        ),
        (
            key.sign(&with(claims(), "iss", json!("https://evil.example"))),
            TokenError::WrongIssuer,
        ),
        (
            key.sign(&with(claims(), "iss", json!(ISS.to_uppercase()))),
            TokenError::WrongIssuer,
        ),
        (
            key.sign(&with(
                claims(),
                "aud",
                json!("https://mcp.example.com/other"),
            )),
            TokenError::WrongAudience,
        ),
        (
            key.sign(&with(
                claims(),
                "aud",
                json!(["https://mcp.example.com", "x"]),
            )),
            TokenError::WrongAudience,
        ),
        (
            key.sign(&with(
                claims(),
                "aud",
                json!("https://mcp.example.com/Memory"),
            )),
            TokenError::WrongAudience,
        ),
    ];
    for (token, want) in cases {
        assert_eq!(check(token).await.unwrap_err(), want);
    }

    // Bad signature: another key under the real kid.
    let impostor = TestKey::ec("ec");
    assert_eq!(
        check(impostor.sign(&claims())).await.unwrap_err(),
        TokenError::BadSignature
    );

    // alg none.
    let none = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT","kid":"ec"}"#);
    let body = URL_SAFE_NO_PAD.encode(claims().to_string());
    assert_eq!(
        check(format!("{none}.{body}.")).await.unwrap_err(),
        TokenError::UnsupportedAlgorithm
    );
    // An allowed-looking but unlisted algorithm.
    let mut h = Header::new(Algorithm::ES384);
    h.kid = Some("ec".into());
    let t = format!(
        "{}.{body}.{}",
        URL_SAFE_NO_PAD.encode(serde_json::to_string(&h).unwrap()),
        URL_SAFE_NO_PAD.encode([0u8; 96])
    );
    assert_eq!(
        check(t).await.unwrap_err(),
        TokenError::UnsupportedAlgorithm
    );

    // Algorithm confusion: HS256 keyed with the RSA public key as published (PEM and DER).
    for secret in [
        rsa.public_pem.clone().into_bytes(),
        STANDARD
            .decode(
                rsa.public_pem
                    .lines()
                    .filter(|l| !l.starts_with("-----"))
                    .collect::<String>(),
            )
            .unwrap(),
    ] {
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("rsa".into());
        let forged =
            jsonwebtoken::encode(&h, &claims(), &EncodingKey::from_secret(&secret)).unwrap();
        assert_eq!(
            check(forged).await.unwrap_err(),
            TokenError::UnsupportedAlgorithm
        );
    }
    // The genuine RS256 token works.
    assert!(check(rsa.sign(&claims())).await.is_ok());

    // Oversized token (policy cap 8192 bytes).
    let big = with(claims(), "pad", json!("x".repeat(9000)));
    assert_eq!(
        check(key.sign(&big)).await.unwrap_err(),
        TokenError::TooLarge
    );

    // Garbage.
    for junk in ["", "a.b", "a.b.c.d", "!!.??.##", "eyJ.eyJ.sig"] {
        assert!(matches!(
            check(junk.to_owned()).await.unwrap_err(),
            TokenError::Malformed(_)
        ));
    }
    assert_eq!(server.hits(), 1, "no rejection above caused a JWKS refetch");
}

#[tokio::test]
async fn token_supplied_key_locations_are_never_contacted() {
    init();
    // A listener that records every connection attempt.
    let trap = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let trap_url = format!(
        "https://127.0.0.1:{}/jwks.json",
        trap.local_addr().unwrap().port()
    );
    let contacted = Arc::new(AtomicUsize::new(0));
    let c = contacted.clone();
    let trap_task = tokio::spawn(async move {
        while let Ok((_sock, _)) = trap.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
        }
    });

    let key = TestKey::ec("real");
    let server = JwksServer::start(jwks(&[&key])).await;
    let mut cfg = config(&server);
    cfg.min_refetch_interval = Duration::ZERO;
    let policy = policy_for(cfg, vec![Algorithm::ES256]).await;

    let attacker = TestKey::ec("attacker");
    let cert = rcgen::CertificateParams::new(vec!["attacker".to_owned()])
        .unwrap()
        .self_signed(&rcgen::KeyPair::generate().unwrap())
        .unwrap();
    let attacker_jwk: Jwk = serde_json::from_value(attacker.jwk.clone()).unwrap();
    for kid in ["attacker", "real"] {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(kid.into());
        h.jku = Some(trap_url.clone());
        h.x5u = Some(trap_url.clone());
        h.x5c = Some(vec![STANDARD.encode(cert.der())]);
        h.jwk = Some(attacker_jwk.clone());
        let token = jsonwebtoken::encode(&h, &claims(), &attacker.enc).unwrap();
        let err = policy.validate(&token, AUD).await.unwrap_err();
        let want = if kid == "real" {
            TokenError::BadSignature
        } else {
            TokenError::UnknownKey
        };
        assert_eq!(err, want);
    }
    // A token with an `iss` pointing at the trap does not make it a key location either.
    let mut h = key.header();
    h.jku = Some(trap_url.clone());
    let t = jsonwebtoken::encode(&h, &with(claims(), "iss", json!(trap_url)), &key.enc).unwrap();
    assert_eq!(
        policy.validate(&t, AUD).await.unwrap_err(),
        TokenError::WrongIssuer
    );

    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        contacted.load(Ordering::SeqCst),
        0,
        "jku/x5u/x5c/jwk followed"
    );
    // The configured JWKS was consulted once for the unknown kid, as it should be.
    assert_eq!(server.hits(), 2);
    trap_task.abort();
}

#[tokio::test]
async fn pem_keys_source_with_rsa() {
    init();
    let dir = tempfile::tempdir().unwrap();
    let rsa = TestKey::rsa("unused", Algorithm::PS256);
    let path = dir.path().join("rsa.pub.pem");
    std::fs::write(&path, &rsa.public_pem).unwrap();
    let keys = KeyStore::new(KeySource::PemKeys(vec![path])).await.unwrap();
    let policy = IssuerPolicy::new(
        ISS,
        vec![Algorithm::PS256, Algorithm::RS256],
        Duration::from_secs(5),
        8192,
        keys,
    )
    .unwrap();
    // PEM keys carry no kid: any kid (or none) selects them.
    assert!(policy.validate(&rsa.sign(&claims()), AUD).await.is_ok());
    let forged = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(),
        &EncodingKey::from_secret(rsa.public_pem.as_bytes()),
    )
    .unwrap();
    assert_eq!(
        policy.validate(&forged, AUD).await.unwrap_err(),
        TokenError::UnsupportedAlgorithm
    );
}

/// The issuers of one remote JWKS, with a verified-token cache of `entries`.
async fn issuers_for(cfg: JwksUrlConfig, entries: usize) -> mcp_edge::auth::bearer::Issuers {
    use mcp_edge::auth::bearer::{AuthSettings, IssuerSettings, Issuers};
    let auth = AuthSettings {
        issuers: vec![IssuerSettings {
            issuer: ISS.into(),
            algorithms: vec![Algorithm::ES256],
            leeway: Duration::ZERO,
            max_token_bytes: 8192,
            authorization_server: ISS.into(),
            keys: Some(KeySource::JwksUrl(cfg)),
            introspection: None,
            organisation_claim: None,
            organisations: None,
        }],
        identity_header_prefix: "x-mcp-edge-".into(),
        organisation_claim: None,
        upstream_token: None,
        token_cache_entries: entries,
    };
    Issuers::build(&auth).await.unwrap()
}

fn route<'a>(issuers: &'a [String], resource: &'a str) -> mcp_edge::auth::identity::RouteAuth<'a> {
    mcp_edge::auth::identity::RouteAuth {
        path: "/mcp",
        require: mcp_edge::auth::identity::RequireAuth::Token,
        issuers,
        scopes: &[],
        certificate_bound_tokens: false,
        resource,
    }
}

#[tokio::test]
async fn verified_tokens_are_cached_until_exp_and_never_past_a_key_removal() {
    init();
    let a = TestKey::ec("a");
    let b = TestKey::ec("b");
    let server = JwksServer::start(jwks(&[&a, &b])).await;
    let mut cfg = config(&server);
    cfg.min_refetch_interval = Duration::from_millis(100);
    cfg.refresh = Duration::from_millis(300);
    let issuers = issuers_for(cfg, 100).await;
    let ours = [ISS.to_owned()];
    let r = route(&ours, AUD);
    let stats = || issuers.token_cache().unwrap();

    let token = a.sign(&claims());
    let first = issuers.validate(&token, &r).await.unwrap();
    assert_eq!(first.label, format!("{ISS}#alice"));
    assert_eq!((stats().hits, stats().misses, stats().entries), (0, 1, 1));
    let again = issuers.validate(&token, &r).await.unwrap();
    assert!(
        Arc::ptr_eq(&first, &again),
        "the second request reuses the verification"
    );
    assert_eq!(stats().hits, 1);

    // What a hit still checks: the route's issuers, and the resource (part of the key).
    let others = ["https://other-idp.example".to_owned()];
    assert_eq!(
        issuers
            .validate(&token, &route(&others, AUD))
            .await
            .unwrap_err(),
        TokenError::WrongIssuer
    );
    assert_eq!(
        issuers
            .validate(&token, &route(&ours, "https://mcp.example.com/other"))
            .await
            .unwrap_err(),
        TokenError::WrongAudience
    );
    // A tampered copy is its own entry, verified and refused.
    let mut tampered = token.clone();
    tampered.pop();
    tampered.push(if token.ends_with('A') { 'B' } else { 'A' });
    assert_eq!(
        issuers.validate(&tampered, &r).await.unwrap_err(),
        TokenError::BadSignature
    );

    // Valid until exp (leeway 0 here), not a moment longer.
    let short = a.sign(&with(claims(), "exp", json!(now() + 2)));
    assert!(issuers.validate(&short, &r).await.is_ok());
    assert!(issuers.validate(&short, &r).await.is_ok());
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        issuers.validate(&short, &r).await.unwrap_err(),
        TokenError::Expired
    );

    // The IdP withdraws key "a": once the refresh sees it, the cached token is refused while
    // tokens of key "b" are unaffected (verified again: any change of keys retires entries).
    let token_b = b.sign(&claims());
    assert!(issuers.validate(&token_b, &r).await.is_ok());
    // Both tokens are served from the cache up to the moment the keys change.
    let hits = stats().hits;
    assert!(issuers.validate(&token, &r).await.is_ok());
    assert!(issuers.validate(&token_b, &r).await.is_ok());
    assert_eq!(stats().hits, hits + 2);
    server.set_jwks(jwks(&[&b]));
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        issuers.validate(&token, &r).await.unwrap_err(),
        TokenError::UnknownKey
    );
    assert!(issuers.validate(&token_b, &r).await.is_ok());

    // With the cache off every request verifies, and nothing is reported.
    let server2 = JwksServer::start(jwks(&[&a])).await;
    let uncached = issuers_for(config(&server2), 0).await;
    assert!(uncached.validate(&token, &r).await.is_ok());
    assert!(uncached.token_cache().is_none());
}
