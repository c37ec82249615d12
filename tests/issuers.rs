//! Several identity providers on one proxy, over real TLS with real tokens: an issuer vouches
//! only for the organisations it is allowed to (read from its own claim), and our IdP's
//! `alice` and a partner IdP's `alice` stay two users everywhere the proxy names them: the
//! identity headers and upstream token a backend gets, the audit log, and session binding.

mod support;

use base64::Engine as _;
use support::idp::Idp;
use support::{TestProxy, raw, start_proxy_with};
use tokio::sync::mpsc;

const PARTNER: &str = "https://login.partner-a.test";

/// What the backend got: identity headers and the claims of the proxy's upstream token.
#[derive(Debug)]
struct Seen {
    headers: http::HeaderMap,
    upstream: serde_json::Value,
}

struct Setup {
    proxy: TestProxy,
    ours: Idp,
    partner: Idp,
    _backend: raw::RawBackend,
    seen: mpsc::UnboundedReceiver<Seen>,
    audit_file: std::path::PathBuf,
    _audit_dir: tempfile::TempDir,
}

/// The claims of a JWT, unverified (the backend's verification is tested in tests/bearer.rs).
fn payload(jwt: &str) -> serde_json::Value {
    let body = jwt.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(body)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

/// A backend recording what it gets; it mints `backend-sid-1` for requests without a session.
async fn backend() -> (raw::RawBackend, mpsc::UnboundedReceiver<Seen>) {
    let (tx, seen) = mpsc::unbounded_channel();
    let backend = raw::serve(move |req: http::Request<hyper::body::Incoming>| {
        let tx = tx.clone();
        async move {
            let upstream = req
                .headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map_or(serde_json::Value::Null, payload);
            let fresh = !req.headers().contains_key("mcp-session-id");
            let _ = tx.send(Seen {
                headers: req.headers().clone(),
                upstream,
            });
            let mut resp = http::Response::builder().header("content-type", "application/json");
            if fresh {
                resp = resp.header("mcp-session-id", "backend-sid-1");
            }
            resp.body(raw::full(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#))
                .unwrap()
        }
    })
    .await;
    (backend, seen)
}

/// Our IdP (organisation in `org_id`, any organisation) and partner A's (organisation in
/// `tenant`, only `partner-a`), both accepted on `/mcp`, whose policy gives every organisation
/// the tool `search` and its own `memory://{org}/` namespace.
async fn setup() -> Setup {
    let (backend, seen) = backend().await;
    let ours = Idp::new();
    let partner = Idp::with_issuer(PARTNER);
    let pki = support::Pki::new();
    let dir = pki.dir.path();
    let our_table = ours.issuer_toml(dir);
    let partner_table = partner.issuer_table(
        dir,
        "partner.pem",
        "organisation_claim = \"tenant\"\norganisations = [\"partner-a\"]",
    );
    let signing = rcgen::KeyPair::generate().unwrap();
    std::fs::write(dir.join("upstream.pem"), signing.serialize_pem()).unwrap();
    let audit_dir = tempfile::tempdir().unwrap();
    let audit_file = audit_dir.path().join("audit.jsonl");
    let proxy = start_proxy_with(
        pki,
        &format!(
            r#"[audit]
file = "{audit}"
fsync = "never"
[auth]
organisation_claim = "org_id"
[auth.upstream_token]
signing_key = "upstream.pem"
{our_table}{partner_table}
[[routes]]
path = "/mcp"
upstream = "http://{addr}/mcp"
upstream_token_audience = "https://backend.internal/mcp"
[routes.auth]
require = "token"
issuers = ["{ours}", "{PARTNER}"]
[routes.policy]
[[routes.policy.rules]]
name = "every-organisation"
match = {{ organisation = "*" }}
allow_tools = ["search"]
resource_prefixes = ["memory://{{org}}/"]
"#,
            audit = audit_file.display(),
            addr = backend.addr,
            ours = support::idp::ISSUER,
        ),
    )
    .await;
    Setup {
        proxy,
        ours,
        partner,
        _backend: backend,
        seen,
        audit_file,
        _audit_dir: audit_dir,
    }
}

/// POSTs one JSON-RPC message with `token` (and `sid`); returns status, `WWW-Authenticate`
/// and the session id the proxy handed out, if any.
async fn post(
    s: &Setup,
    token: &str,
    sid: Option<&str>,
    msg: serde_json::Value,
) -> (u16, String, Option<String>) {
    let mut req = s
        .proxy
        .client(false)
        .post(s.proxy.url("/mcp"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream");
    if let Some(sid) = sid {
        req = req.header("mcp-session-id", sid);
    }
    let resp = req.body(msg.to_string()).send().await.unwrap();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let challenge = header("www-authenticate").unwrap_or_default();
    let sid = header("mcp-session-id");
    let status = resp.status().as_u16();
    let _ = resp.bytes().await;
    (status, challenge, sid)
}

fn search(id: u64) -> serde_json::Value {
    serde_json::json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":"search","arguments":{}}})
}

fn read(id: u64, uri: &str) -> serde_json::Value {
    serde_json::json!({"jsonrpc":"2.0","id":id,"method":"resources/read","params":{"uri":uri}})
}

#[tokio::test]
async fn a_partner_idp_vouches_only_for_its_own_organisations() {
    let mut s = setup().await;
    let partner = |claims: serde_json::Value| s.partner.token("/mcp", claims);

    // Claiming another organisation, or none in its own claim (whatever the global claim
    // says), is an invalid token: the backend never hears of it.
    for (name, token) in [
        (
            "another organisation",
            partner(serde_json::json!({"sub": "alice", "tenant": "partner-b"})),
        ),
        (
            "our organisation",
            partner(serde_json::json!({"sub": "alice", "tenant": "acme"})),
        ),
        (
            "only the global claim",
            partner(serde_json::json!({"sub": "alice", "org_id": "partner-a"})),
        ),
        (
            "no organisation",
            partner(serde_json::json!({"sub": "alice"})),
        ),
    ] {
        let (status, challenge, _) = post(&s, &token, None, search(1)).await;
        assert_eq!(status, 401, "{name}");
        assert!(
            challenge.contains("error=\"invalid_token\""),
            "{name}: {challenge}"
        );
        assert!(challenge.contains("organisation"), "{name}: {challenge}");
    }
    assert!(
        s.seen.try_recv().is_err(),
        "a refused token reached the backend"
    );

    // Its own organisation, from its own claim (`org_id` here is ignored): partner-a's tools
    // and namespace, nobody else's.
    let token =
        partner(serde_json::json!({"sub": "alice", "tenant": "partner-a", "org_id": "acme"}));
    assert_eq!(post(&s, &token, None, search(2)).await.0, 200);
    let seen = s.seen.recv().await.unwrap();
    assert_eq!(seen.upstream["org"], "partner-a");
    assert_eq!(
        post(&s, &token, None, read(3, "memory://partner-a/notes/1"))
            .await
            .0,
        200
    );
    s.seen.recv().await.unwrap();
    assert_eq!(
        post(&s, &token, None, read(4, "memory://acme/notes/1"))
            .await
            .0,
        403
    );

    // Our IdP is not limited, and keeps reading `org_id`.
    let ours = s.ours.token(
        "/mcp",
        serde_json::json!({"sub": "alice", "org_id": "acme", "tenant": "partner-a"}),
    );
    assert_eq!(
        post(&s, &ours, None, read(5, "memory://acme/notes/1"))
            .await
            .0,
        200
    );
    assert_eq!(s.seen.recv().await.unwrap().upstream["org"], "acme");
    assert!(s.seen.try_recv().is_err());
}

#[tokio::test]
async fn two_idps_alice_are_two_users_to_backends_and_the_audit_log() {
    let mut s = setup().await;
    let ours = s.ours.token(
        "/mcp",
        serde_json::json!({"sub": "alice", "org_id": "acme"}),
    );
    let partner = s.partner.token(
        "/mcp",
        serde_json::json!({"sub": "alice", "tenant": "partner-a"}),
    );
    assert_eq!(post(&s, &ours, None, search(1)).await.0, 200);
    let a = s.seen.recv().await.unwrap();
    assert_eq!(post(&s, &partner, None, search(2)).await.0, 200);
    let b = s.seen.recv().await.unwrap();

    let our_alice = format!("{}#alice", support::idp::ISSUER);
    let their_alice = format!("{PARTNER}#alice");
    // A backend that reads only `sub`, or only the subject header, still tells them apart.
    assert_eq!(a.upstream["sub"], our_alice.as_str());
    assert_eq!(b.upstream["sub"], their_alice.as_str());
    assert_eq!(a.upstream["client_iss"], support::idp::ISSUER);
    assert_eq!(b.upstream["client_iss"], PARTNER);
    assert_eq!(a.headers["x-mcp-edge-subject"], our_alice.as_str());
    assert_eq!(b.headers["x-mcp-edge-subject"], their_alice.as_str());
    assert_eq!(a.headers["x-mcp-edge-issuer"], support::idp::ISSUER);
    assert_eq!(b.headers["x-mcp-edge-issuer"], PARTNER);

    let audit_file = s.audit_file.clone();
    s.proxy.stop().await;
    let text = std::fs::read_to_string(&audit_file).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|l: &serde_json::Value| l["method"] == "tools/call")
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0]["principal"], our_alice.as_str());
    assert_eq!(lines[0]["organisation"], "acme");
    assert_eq!(lines[1]["principal"], their_alice.as_str());
    assert_eq!(lines[1]["organisation"], "partner-a");
}

#[tokio::test]
async fn a_session_of_one_idps_alice_is_unknown_to_the_others() {
    let mut s = setup().await;
    let ours = s.ours.token(
        "/mcp",
        serde_json::json!({"sub": "alice", "org_id": "acme"}),
    );
    let partner = s.partner.token(
        "/mcp",
        serde_json::json!({"sub": "alice", "tenant": "partner-a"}),
    );
    let init = serde_json::json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
        "protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}});
    let (status, _, sid) = post(&s, &ours, None, init).await;
    assert_eq!(status, 200);
    let sid = sid.expect("a sealed session id");
    assert_ne!(sid, "backend-sid-1", "the backend's id is never shown");
    s.seen.recv().await.unwrap();

    // The same session id from the partner's alice: exactly like an unknown session.
    let (status, _, _) = post(&s, &partner, Some(&sid), search(2)).await;
    assert_eq!(status, 404);
    assert!(
        s.seen.try_recv().is_err(),
        "the partner's request reached the backend"
    );

    // Our alice keeps her session.
    assert_eq!(post(&s, &ours, Some(&sid), search(3)).await.0, 200);
    let seen = s.seen.recv().await.unwrap();
    assert_eq!(seen.headers["mcp-session-id"], "backend-sid-1");
}

#[tokio::test]
async fn with_one_issuer_the_subject_backends_see_is_unchanged() {
    let (backend, mut seen) = backend().await;
    let idp = Idp::with_issuer(PARTNER);
    let pki = support::Pki::new();
    let table = idp.issuer_table(
        pki.dir.path(),
        "partner.pem",
        "organisations = [\"partner-a\"]",
    );
    let proxy = start_proxy_with(
        pki,
        &format!(
            "[auth]\norganisation_claim = \"org_id\"\n{table}{}[routes.auth]\nrequire = \"token\"\n",
            support::route("/mcp", &format!("http://{}/mcp", backend.addr))
        ),
    )
    .await;
    let send = |token: String| {
        proxy
            .client(false)
            .post(proxy.url("/mcp"))
            .bearer_auth(token)
            .body(support::PING)
            .send()
    };
    let ok = send(idp.token(
        "/mcp",
        serde_json::json!({"sub": "alice", "org_id": "partner-a"}),
    ))
    .await
    .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(
        seen.recv().await.unwrap().headers["x-mcp-edge-subject"],
        "alice"
    );
    // The allowlist holds with a single issuer too.
    let refused = send(idp.token(
        "/mcp",
        serde_json::json!({"sub": "alice", "org_id": "partner-b"}),
    ))
    .await
    .unwrap();
    assert_eq!(refused.status(), 401);
    assert!(seen.try_recv().is_err());
}
