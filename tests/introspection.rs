//! Opaque tokens checked through a local HTTPS RFC 7662 introspection endpoint: client
//! authentication (Basic and Post), active/inactive answers, failures that must never
//! succeed, the answer cache (positive, negative, `exp`-bounded), and single-flight calls.

mod support;

use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use mcp_edge::auth::introspection::{
    ClientAuthMethod, IntrospectionConfig, IntrospectionError, Introspector,
};
use serde_json::{Value, json};
use support::clock::now;

use support::introspection_server::{ClientAuth, IntrospectionServer};

const ISS: &str = "https://as.example.com";
const AUD: &str = "https://mcp.example.com/memory";
const CLIENT_ID: &str = "mcp-edge proxy";
/// Characters that need form encoding, to prove both sides agree on it.
const SECRET: &str = "s3cret:with%odd+chars";

fn active(scope: &str) -> Value {
    json!({
        "active": true, "iss": ISS, "sub": "partner-42", "client_id": "partner-app",
        "aud": AUD, "scope": scope, "exp": now() + 300, "token_type": "Bearer",
        "org": "acme", "cnf": { "x5t#S256": "bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2" },
    })
}

struct Setup {
    server: IntrospectionServer,
    cfg: IntrospectionConfig,
    _dir: tempfile::TempDir,
}

impl Setup {
    async fn new(auth: ClientAuth) -> Setup {
        Setup::with_secret(auth, SECRET).await
    }

    /// The endpoint expects [`SECRET`]; the proxy's secret file holds `secret` plus a newline.
    async fn with_secret(auth: ClientAuth, secret: &str) -> Setup {
        let server = IntrospectionServer::start(CLIENT_ID, SECRET, auth).await;
        let dir = tempfile::tempdir().unwrap();
        let secret_file = dir.path().join("client-secret");
        std::fs::write(&secret_file, format!("{secret}\n")).unwrap();
        let mut cfg = IntrospectionConfig::new(server.url(), CLIENT_ID, secret_file);
        cfg.ca = Some(server.ca_path.clone());
        cfg.expected_issuer = Some(ISS.into());
        cfg.auth_method = match auth {
            ClientAuth::Basic => ClientAuthMethod::ClientSecretBasic,
            ClientAuth::Post => ClientAuthMethod::ClientSecretPost,
        };
        cfg.timeout = Duration::from_secs(2);
        Setup {
            server,
            cfg,
            _dir: dir,
        }
    }

    fn introspector(&self) -> Introspector {
        Introspector::new(self.cfg.clone()).unwrap()
    }
}

fn unavailable(r: Result<mcp_edge::auth::jwt::Claims, IntrospectionError>) -> String {
    match r {
        Err(e @ IntrospectionError::Unavailable(_)) => {
            assert!(e.is_server_side());
            let IntrospectionError::Unavailable(reason) = e else {
                unreachable!()
            };
            reason
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn active_token_yields_claims_with_basic_auth() {
    let s = Setup::new(ClientAuth::Basic).await;
    s.server
        .set_answer("opaque-token.A1", active("memory:read  tools:call"));
    let intro = s.introspector();

    let claims = intro.introspect("opaque-token.A1", AUD).await.unwrap();
    assert_eq!(claims.issuer, ISS);
    assert_eq!(claims.subject.as_deref(), Some("partner-42"));
    assert_eq!(claims.client_id.as_deref(), Some("partner-app"));
    assert_eq!(
        claims.scopes.iter().collect::<Vec<_>>(),
        ["memory:read", "tools:call"]
    );
    assert_eq!(claims.audience, [AUD]);
    assert_eq!(
        claims.cnf_x5t_s256.as_deref(),
        Some("bwcK0esc3ACC3DB2Y5_lESsXE8o9ltc05O89jdN-dg2")
    );
    assert_eq!(claims.raw["org"], "acme");
    assert!(claims.expires_at > now());

    let seen = s.server.seen();
    assert_eq!(seen.len(), 1);
    let req = &seen[0];
    assert_eq!(req.method, "POST");
    assert_eq!(
        req.content_type.as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(req.field("token"), Some("opaque-token.A1"));
    assert_eq!(req.field("token_type_hint"), Some("access_token"));
    assert!(req.authorization.as_deref().unwrap().starts_with("Basic "));
    assert_eq!(req.field("client_secret"), None);
    assert_eq!(intro.status().calls, 1);
}

#[tokio::test]
async fn active_token_with_post_auth() {
    let s = Setup::new(ClientAuth::Post).await;
    s.server.set_answer("tok-post", active("tools:call"));
    let claims = s.introspector().introspect("tok-post", AUD).await.unwrap();
    assert!(claims.scopes.contains("tools:call"));
    let seen = s.server.seen();
    assert_eq!(seen[0].authorization, None);
    assert_eq!(seen[0].field("client_id"), Some(CLIENT_ID));
    assert_eq!(seen[0].field("client_secret"), Some(SECRET));

    // The endpoint accepts only the configured method.
    let mut basic = s.cfg.clone();
    basic.auth_method = ClientAuthMethod::ClientSecretBasic;
    let r = Introspector::new(basic)
        .unwrap()
        .introspect("tok-post", AUD)
        .await;
    assert!(unavailable(r).contains("401"));
}

#[tokio::test]
async fn inactive_token_is_refused_and_remembered_briefly() {
    let mut s = Setup::new(ClientAuth::Basic).await;
    s.server
        .set_answer("revoked", json!({"active": false, "exp": "ignored"}));
    s.cfg.negative_cache = Duration::from_millis(600);
    let intro = s.introspector();
    for token in ["revoked", "never-issued"] {
        let e = intro.introspect(token, AUD).await.unwrap_err();
        assert_eq!(e, IntrospectionError::Inactive);
        assert!(!e.is_server_side());
        assert_eq!(e.description(), "token not active");
    }
    assert_eq!(s.server.hits(), 2);
    // Repeats are answered from the negative cache.
    for _ in 0..5 {
        assert_eq!(
            intro.introspect("revoked", AUD).await,
            Err(IntrospectionError::Inactive)
        );
    }
    assert_eq!(s.server.hits(), 2);
    // ... for a short time only: a token activated since is seen.
    tokio::time::sleep(Duration::from_millis(700)).await;
    s.server.set_answer("revoked", active("x"));
    assert!(intro.introspect("revoked", AUD).await.is_ok());
    assert_eq!(s.server.hits(), 3);
}

#[tokio::test]
async fn endpoint_down_is_unavailable_never_success() {
    let mut s = Setup::new(ClientAuth::Basic).await;
    s.server.set_answer("tok", active("a"));
    s.cfg.timeout = Duration::from_millis(500);
    let intro = s.introspector();

    s.server.set_down(true);
    unavailable(intro.introspect("tok", AUD).await);
    // Failures are not cached: the endpoint coming back is noticed at once.
    s.server.set_down(false);
    assert!(intro.introspect("tok", AUD).await.is_ok());

    // Down while a pooled connection is open.
    s.server.set_down(true);
    unavailable(intro.introspect("other-token", AUD).await);
    s.server.set_down(false);

    // Too slow: the deadline covers the whole exchange.
    s.server.set_delay(Duration::from_secs(3));
    let started = Instant::now();
    let reason = unavailable(intro.introspect("slow-token", AUD).await);
    assert!(reason.contains("no complete answer"), "{reason}");
    assert!(started.elapsed() < Duration::from_secs(2));
    s.server.set_delay(Duration::ZERO);

    // Server errors.
    s.server.set_status(500);
    assert!(unavailable(intro.introspect("t500", AUD).await).contains("500"));
    s.server.set_status(302);
    unavailable(intro.introspect("t302", AUD).await);
    s.server.set_status(0);

    // Gone entirely (connections closed, new ones refused).
    drop(s.server);
    tokio::time::sleep(Duration::from_millis(50)).await;
    unavailable(intro.introspect("tok-new", AUD).await);
}

#[tokio::test]
async fn answers_are_cached_until_cache_max() {
    let mut s = Setup::new(ClientAuth::Basic).await;
    s.server.set_answer("tok", active("a"));
    s.cfg.cache_max = Duration::from_secs(1);
    let intro = s.introspector();
    assert!(intro.introspect("tok", AUD).await.is_ok());
    assert!(intro.introspect("tok", AUD).await.is_ok());
    assert_eq!(s.server.hits(), 1);
    assert_eq!(intro.status().cached, 1);
    // One cached answer serves every route; the audience is checked per use.
    assert_eq!(
        intro
            .introspect("tok", "https://mcp.example.com/other")
            .await,
        Err(IntrospectionError::WrongAudience)
    );
    assert_eq!(s.server.hits(), 1);

    // Revoked at the AS: seen once the cached answer expires.
    s.server.set_answer("tok", json!({"active": false}));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(
        intro.introspect("tok", AUD).await,
        Err(IntrospectionError::Inactive)
    );
    assert_eq!(s.server.hits(), 2);
}

#[tokio::test]
async fn token_exp_bounds_the_cache() {
    let mut s = Setup::new(ClientAuth::Basic).await;
    let exp = now() + 2;
    let mut answer = active("a");
    answer["exp"] = json!(exp);
    s.server.set_answer("short-lived", answer);
    s.cfg.cache_max = Duration::from_secs(60);
    s.cfg.leeway = Duration::ZERO;
    let intro = s.introspector();
    let claims = intro.introspect("short-lived", AUD).await.unwrap();
    assert_eq!(claims.expires_at, exp);
    assert!(intro.introspect("short-lived", AUD).await.is_ok());
    assert_eq!(s.server.hits(), 1);

    // Past `exp`, the cached answer is not used: the endpoint is asked again, and its
    // (still active, now expired) answer is refused.
    let wait = Duration::from_secs(exp + 1) - SystemTime::UNIX_EPOCH.elapsed().unwrap();
    tokio::time::sleep(wait + Duration::from_millis(100)).await;
    assert_eq!(
        intro.introspect("short-lived", AUD).await,
        Err(IntrospectionError::Expired)
    );
    assert_eq!(s.server.hits(), 2);
}

#[tokio::test]
async fn concurrent_requests_share_one_call() {
    let s = Setup::new(ClientAuth::Basic).await;
    s.server.set_answer("popular", active("a"));
    s.server.set_delay(Duration::from_millis(300));
    let intro = s.introspector();
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let intro = intro.clone();
            tokio::spawn(async move { intro.introspect("popular", AUD).await })
        })
        .collect();
    for t in tasks {
        assert!(t.await.unwrap().is_ok());
    }
    assert_eq!(s.server.hits(), 1);

    // A caller giving up does not cancel the call for the others.
    s.server.set_answer("second", active("a"));
    let quitter = {
        let intro = intro.clone();
        tokio::spawn(async move { intro.introspect("second", AUD).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let waiter = {
        let intro = intro.clone();
        tokio::spawn(async move { intro.introspect("second", AUD).await })
    };
    quitter.abort();
    assert!(waiter.await.unwrap().is_ok());
    assert_eq!(s.server.hits(), 2);

    // Concurrent failures are shared too, and not cached.
    s.server.set_status(503);
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let intro = intro.clone();
            tokio::spawn(async move { intro.introspect("third", AUD).await })
        })
        .collect();
    for t in tasks {
        unavailable(t.await.unwrap());
    }
    assert_eq!(s.server.hits(), 3);
}

#[tokio::test]
async fn audience_and_issuer_checks() {
    let mut s = Setup::new(ClientAuth::Basic).await;
    let mut other_aud = active("a");
    other_aud["aud"] = json!(["https://mcp.example.com/tools", "https://elsewhere.example"]);
    s.server.set_answer("for-other-route", other_aud);
    let mut canon = active("a");
    canon["aud"] = json!(["x", "HTTPS://MCP.EXAMPLE.COM:443/memory/"]);
    s.server.set_answer("canonical", canon);
    let mut no_aud = active("a");
    no_aud.as_object_mut().unwrap().remove("aud");
    s.server.set_answer("no-aud", no_aud);
    let mut foreign = active("a");
    foreign["iss"] = json!("https://other-as.example.com");
    s.server.set_answer("foreign", foreign);
    let intro = s.introspector();

    let e = intro.introspect("for-other-route", AUD).await.unwrap_err();
    assert_eq!(e, IntrospectionError::WrongAudience);
    assert!(!e.is_server_side());
    assert!(intro.introspect("canonical", AUD).await.is_ok());
    assert_eq!(
        intro.introspect("no-aud", AUD).await,
        Err(IntrospectionError::WrongAudience)
    );
    assert_eq!(
        intro.introspect("foreign", AUD).await,
        Err(IntrospectionError::WrongIssuer)
    );

    s.cfg.require_audience = false;
    let lax = s.introspector();
    assert!(
        lax.introspect("no-aud", AUD)
            .await
            .unwrap()
            .audience
            .is_empty()
    );
    assert_eq!(
        lax.introspect("for-other-route", AUD).await,
        Err(IntrospectionError::WrongAudience)
    );
}

#[tokio::test]
async fn bad_answers_are_unavailable() {
    let s = Setup::new(ClientAuth::Basic).await;
    let intro = s.introspector();
    for (i, body) in [
        "not json",
        "[true]",
        r#"{"active":"true","aud":"x"}"#,
        r#"{"scope":"a"}"#,
        r#"{"active":true,"aud":"https://mcp.example.com/memory","exp":"soon"}"#,
    ]
    .into_iter()
    .enumerate()
    {
        s.server.set_body(Some(body.to_owned()));
        let token = format!("tok{i}");
        unavailable(intro.introspect(&token, AUD).await);
        // Not cached.
        unavailable(intro.introspect(&token, AUD).await);
    }
    assert_eq!(s.server.hits(), 10);
}

#[tokio::test]
async fn oversized_answer_is_unavailable() {
    let mut s = Setup::new(ClientAuth::Basic).await;
    s.cfg.max_body_bytes = 1024;
    let mut big = active("a");
    big["padding"] = json!("p".repeat(4096));
    s.server.set_answer("big", big);
    s.server.set_answer("small", active("a"));
    let intro = s.introspector();
    let reason = unavailable(intro.introspect("big", AUD).await);
    assert!(reason.contains("larger than 1024"), "{reason}");
    assert!(intro.introspect("small", AUD).await.is_ok());
}

#[tokio::test]
async fn untrusted_endpoint_certificate_is_unavailable() {
    let mut s = Setup::new(ClientAuth::Basic).await;
    s.server.set_answer("tok", active("a"));
    let other_ca = mcp_edge::demo::pki::DevCa::new("unrelated CA").unwrap();
    let path = s._dir.path().join("other-ca.pem");
    std::fs::write(&path, other_ca.cert_pem).unwrap();
    s.cfg.ca = Some(path);
    unavailable(s.introspector().introspect("tok", AUD).await);
    assert_eq!(s.server.hits(), 0);
}

/// Log lines captured for one test (current-thread runtime: every task logs on this thread).
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn wrong_client_secret_is_unavailable_and_not_logged() {
    let logs = Capture::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    const WRONG: &str = "wrong-secret-Zq9";
    for auth in [ClientAuth::Basic, ClientAuth::Post] {
        let s = Setup::with_secret(auth, WRONG).await;
        s.server.set_answer("tok-secret-test", active("a"));
        let intro = s.introspector();
        let reason = unavailable(intro.introspect("tok-secret-test", AUD).await);
        assert!(reason.contains("401"), "{reason}");
        assert!(!reason.contains(WRONG));
        assert!(!format!("{intro:?}").contains(WRONG));
        // Not cached: asked again next time.
        unavailable(intro.introspect("tok-secret-test", AUD).await);
        assert_eq!(s.server.hits(), 2);
    }
    let _ = std::io::stdout().flush();
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("token introspection failed"), "{text}");
    assert!(text.contains("401"), "{text}");
    assert!(text.contains("client_id=mcp-edge proxy"), "{text}");
    for needle in [WRONG, "wrong-secret", "tok-secret-test"] {
        assert!(!text.contains(needle), "{needle} logged:\n{text}");
    }
}
