//! Two instances behind the shipped HAProxy config, sharing the session key and a real Redis:
//! an rmcp session whose requests land on both instances, streams opened on either, the
//! principal binding holding across them, and one tool limit shared by both.

mod support;

use std::net::SocketAddr;

use base64::Engine as _;
use rmcp::ServiceExt as _;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use support::haproxy::{Haproxy, Instance};
use support::idp::Idp;
use support::redis::Redis;
use support::{Pki, TestProxy};

/// One instance's config: the same everywhere but the admin port (listener ports are 0).
fn instance_toml(
    pki: &Pki,
    issuer: &str,
    backend: SocketAddr,
    redis: &Redis,
    admin: u16,
) -> String {
    format!(
        r#"{listener}
[admin]
bind = "127.0.0.1:{admin}"
[sessions]
key_file = "{key}"
[limits]
store = "redis"
redis_url = "{redis}"
redis_timeout = "50ms"
[limits.tools]
add = {{ requests_per_second = 0.01, burst = 3 }}
{issuer}
[[routes]]
path = "/mcp"
upstream = "http://{backend}/mcp"
[routes.auth]
require = "token"
"#,
        listener = support::listener_toml(pki),
        key = pki.dir.path().join("session.key").display(),
        redis = redis.url(),
    )
}

/// A client that opens a new connection for every request, so HAProxy's round-robin spreads
/// one session's requests over both instances.
fn fresh_connections(pki: &Pki, haproxy: &Haproxy) -> reqwest::Client {
    support::trusting(&pki.ca.cert_pem)
        .resolve(
            "localhost",
            SocketAddr::from(([127, 0, 0, 1], haproxy.port)),
        )
        .pool_max_idle_per_host(0)
        .build()
        .expect("client")
}

#[tokio::test]
async fn a_session_spans_two_instances_behind_haproxy_and_shares_one_limit() {
    let redis = Redis::start().await;
    let (backend, _backend_guard) = support::backends::start_streamable_backend().await;
    let idp = Idp::new();
    // One certificate, CA and session key for both instances, as in production.
    let pki = Pki::new();
    let issuer = idp.issuer_toml(pki.dir.path()).replace(
        "\"idp.pem\"",
        &format!("\"{}\"", pki.dir.path().join("idp.pem").display()),
    );
    std::fs::write(
        pki.dir.path().join("session.key"),
        base64::engine::general_purpose::STANDARD.encode([7u8; 32]),
    )
    .expect("session key");
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(
            pki.dir.path().join("session.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .expect("chmod 600");
    }
    let mut instances = Vec::new();
    let mut proxies: Vec<TestProxy> = Vec::new();
    for _ in 0..2 {
        let admin = support::process::free_port();
        let text = instance_toml(&pki, &issuer, backend, &redis, admin);
        // The second instance's own Pki is only a working directory: every path is absolute.
        let proxy = support::start_proxy_text(Pki::new(), &text).await;
        instances.push(Instance {
            port: proxy.addr.port(),
            admin,
        });
        proxies.push(proxy);
    }
    let haproxy = Haproxy::start(instances[0], instances[1]).await;
    haproxy.wait_up().await;

    let url = format!("https://localhost:{}/mcp", haproxy.port);
    let alice = idp.token("/mcp", serde_json::json!({"sub": "alice"}));
    let transport = StreamableHttpClientTransport::with_client(
        fresh_connections(&pki, &haproxy),
        StreamableHttpClientTransportConfig::with_uri(url.as_str()).auth_header(alice.clone()),
    );
    let client = ().serve(transport).await.expect("initialize through haproxy");
    let tools = client.list_all_tools().await.expect("tools/list");
    assert!(tools.iter().any(|t| t.name == "echo"), "{tools:?}");
    for i in 0..4 {
        let echoed = client
            .call_tool(
                CallToolRequestParams::new("echo").with_arguments(
                    serde_json::json!({"text": format!("hi {i}")})
                        .as_object()
                        .cloned()
                        .unwrap_or_default(),
                ),
            )
            .await
            .expect("echo on either instance");
        assert!(
            format!("{echoed:?}").contains(&format!("hi {i}")),
            "{echoed:?}"
        );
    }
    // One bucket of 3 `add` calls for alice, whichever instance counts them.
    let mut added = 0;
    let mut limited = 0;
    for _ in 0..6 {
        let r = client
            .call_tool(
                CallToolRequestParams::new("add").with_arguments(
                    serde_json::json!({"a": 1, "b": 2})
                        .as_object()
                        .cloned()
                        .unwrap_or_default(),
                ),
            )
            .await;
        match r {
            Ok(_) => added += 1,
            Err(_) => limited += 1,
        }
    }
    assert_eq!(
        (added, limited),
        (3, 3),
        "the tool limit is shared by both instances"
    );

    // Both instances served this session's requests.
    let servers = haproxy.servers().await;
    assert_eq!(servers.len(), 2, "{servers:?}");
    for (name, status, sessions) in &servers {
        assert_eq!(status, "UP", "{servers:?}");
        assert!(
            *sessions >= 3,
            "server {name} got {sessions} connections: {servers:?}"
        );
    }

    // The session id is alice's on every instance: bob gets 404 on both, alice's GET stream
    // opens on both.
    let sid = session_id(&pki, &haproxy, &alice).await;
    let bob = idp.token("/mcp", serde_json::json!({"sub": "bob"}));
    let raw = fresh_connections(&pki, &haproxy);
    for _ in 0..2 {
        let r = raw
            .get(url.as_str())
            .bearer_auth(&bob)
            .header("accept", "text/event-stream")
            .header("mcp-session-id", &sid)
            .send()
            .await
            .expect("sent");
        assert_eq!(
            r.status(),
            404,
            "another principal's session is unknown everywhere"
        );
        let r = raw
            .get(url.as_str())
            .bearer_auth(&alice)
            .header("accept", "text/event-stream")
            .header("mcp-session-id", &sid)
            .send()
            .await
            .expect("sent");
        assert_eq!(r.status(), 200, "alice's stream opens on either instance");
        assert_eq!(
            r.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("text/event-stream")
        );
        drop(r);
    }
    let _ = client.cancel().await;
    for p in proxies {
        p.stop().await;
    }
}

/// A new session of alice's, made with raw requests through HAProxy.
async fn session_id(pki: &Pki, haproxy: &Haproxy, token: &str) -> String {
    let r = fresh_connections(pki, haproxy)
        .post(format!("https://localhost:{}/mcp", haproxy.port))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(
            serde_json::json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{
                "protocolVersion":"2025-06-18","capabilities":{},
                "clientInfo":{"name":"scale-out","version":"1"}}})
            .to_string(),
        )
        .send()
        .await
        .expect("initialize");
    assert_eq!(r.status(), 200);
    r.headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .expect("a sealed session id")
        .to_owned()
}

#[test]
fn the_shipped_haproxy_config_is_valid() {
    let dir = tempfile::tempdir().expect("tempdir");
    // `haproxy -c` resolves the stats socket's directory and the users; check the file as
    // shipped apart from those two host-specific settings.
    let cfg = support::haproxy::shipped_config()
        .replace(
            "/run/haproxy/admin.sock",
            &dir.path().join("s.sock").display().to_string(),
        )
        .replace("    user haproxy\n", "")
        .replace("    group haproxy\n", "");
    let file = dir.path().join("haproxy.cfg");
    std::fs::write(&file, cfg).expect("write");
    let out = std::process::Command::new("haproxy")
        .arg("-c")
        .arg("-f")
        .arg(&file)
        .output()
        .expect("haproxy runs (install Debian's haproxy package; .ci/run does)");
    assert!(
        out.status.success(),
        "haproxy -c refused deploy/haproxy/haproxy.cfg:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
