//! Shared test harness: a test PKI generated at run time, a proxy started in-process on port 0
//! from TOML text (the same config path as production), and clients that trust the test CA.
#![allow(dead_code)]

/// A valid JSON-RPC request body for tests that only need the proxy to relay a POST.
pub const PING: &str = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;

pub mod backends;
pub mod cli;
pub mod clock;
pub mod dying;
pub mod flaky;
pub mod haproxy;
pub mod https;
pub mod idp;
pub mod introspection_server;
pub mod jwks_server;
#[cfg(feature = "otel")]
pub mod otlp;
pub mod process;
pub mod raw;
pub mod recording;
pub mod redis;
pub mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Once;

use mcp_edge::app::{self, Running};
use mcp_edge::demo::pki::DevCa;

/// Installs the process-wide crypto provider once (rustls needs it before any config).
pub fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "warn".into()),
            )
            .with_test_writer()
            .try_init();
    });
}

/// A temporary directory with a CA and a `localhost` server certificate.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: DevCa,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    pub fn new() -> Pki {
        init();
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = DevCa::new("mcp-edge test CA").expect("CA");
        let server = ca
            .issue_server(&["localhost", "127.0.0.1"])
            .expect("server cert");
        let cert = dir.path().join("server.pem");
        let key = dir.path().join("server.key");
        std::fs::write(&cert, &server.cert_pem).expect("write cert");
        std::fs::write(&key, &server.key_pem).expect("write key");
        Pki { dir, ca, cert, key }
    }

    /// Writes an extra certificate for `names`, returning (cert, key) paths.
    pub fn issue(&self, file_stem: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let c = self.ca.issue_server(names).expect("issue");
        let cert = self.dir.path().join(format!("{file_stem}.pem"));
        let key = self.dir.path().join(format!("{file_stem}.key"));
        std::fs::write(&cert, &c.cert_pem).expect("write cert");
        std::fs::write(&key, &c.key_pem).expect("write key");
        (cert, key)
    }
}

/// A proxy running in this test process.
pub struct TestProxy {
    pub addr: SocketAddr,
    pub pki: Pki,
    pub running: Option<Running>,
}

impl TestProxy {
    /// `https://localhost:PORT` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{}", self.addr.port(), path)
    }

    /// A reqwest client trusting the test CA; `h1` forces HTTP/1.1, otherwise ALPN picks h2.
    pub fn client(&self, h1: bool) -> reqwest::Client {
        let mut b = trusting(&self.pki.ca.cert_pem).resolve("localhost", self.addr);
        if h1 {
            b = b.http1_only();
        }
        b.build().expect("client")
    }

    /// Starts graceful shutdown and waits for it to finish.
    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            r.begin_shutdown();
            r.wait().await;
        }
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        if let Some(r) = &self.running {
            r.shutdown.force();
        }
    }
}

/// A reqwest client builder that trusts only `ca_pem` and ignores proxy settings.
pub fn trusting(ca_pem: impl AsRef<[u8]>) -> reqwest::ClientBuilder {
    let ca = reqwest::Certificate::from_pem(ca_pem.as_ref()).expect("ca");
    reqwest::Client::builder().tls_certs_only([ca]).no_proxy()
}

/// The `[listener]` section for a proxy on 127.0.0.1:0 using `pki`.
pub fn listener_toml(pki: &Pki) -> String {
    format!(
        r#"[listener]
bind = "127.0.0.1:0"
public_url = "https://localhost:8443"
[listener.tls]
cert = "{}"
key = "{}"
"#,
        pki.cert.display(),
        pki.key.display()
    )
}

/// Starts a proxy whose config is the listener section followed by `rest` (routes, limits).
pub async fn start_proxy(rest: &str) -> TestProxy {
    let pki = Pki::new();
    start_proxy_with(pki, rest).await
}

/// Like [`start_proxy`] with a prepared PKI.
pub async fn start_proxy_with(pki: Pki, rest: &str) -> TestProxy {
    let text = format!("{}{}", listener_toml(&pki), rest);
    start_proxy_text(pki, &text).await
}

/// Starts a proxy from the whole config `text`; relative paths are read from the PKI directory.
pub async fn start_proxy_text(pki: Pki, text: &str) -> TestProxy {
    let cfg = mcp_edge::config::parse(text, std::path::Path::new("test.toml"), pki.dir.path())
        .unwrap_or_else(|e| panic!("test config invalid: {e}\n{text}"));
    let running = app::start(cfg).await.expect("proxy starts");
    TestProxy {
        addr: running.addr,
        pki,
        running: Some(running),
    }
}

/// A `[[routes]]` table for one upstream.
pub fn route(path: &str, upstream: &str) -> String {
    format!("[[routes]]\npath = \"{path}\"\nupstream = \"{upstream}\"\n")
}

/// JSON-RPC `tools/call` body in the stateless (2026-07-28) era, as the demo prints it.
pub fn stateless_call(id: u64, tool: &str, args: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {
            "name": tool, "arguments": args,
            "_meta": {
                "progressToken": format!("p{id}"),
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {}
            }
        }
    })
}

/// Sends a stateless `tools/call` and returns the response.
pub async fn post_stateless(
    client: &reqwest::Client,
    url: &str,
    id: u64,
    tool: &str,
    args: serde_json::Value,
) -> reqwest::Response {
    client
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", "2026-07-28")
        .header("mcp-method", "tools/call")
        .header("mcp-name", tool)
        .json(&stateless_call(id, tool, args))
        .send()
        .await
        .expect("request sent")
}

/// Reads SSE `data:` payloads from a streaming response until it ends.
pub async fn sse_data(resp: reqwest::Response) -> Vec<serde_json::Value> {
    let text = resp.text().await.expect("body");
    text.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| d.trim())
        .filter(|d| !d.is_empty())
        .map(|d| serde_json::from_str(d).expect("data is JSON"))
        .collect()
}
