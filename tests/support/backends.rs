//! MCP backends (and a legacy client) for integration tests.
//!
//! - [`start_streamable_backend`]: the built-in demo server
//!   (`mcp_edge::demo::backend`), Streamable HTTP at `/mcp`.
//! - [`start_legacy_sse_backend`]: a real rmcp 0.10 server on the legacy
//!   HTTP+SSE transport (protocol 2024-11-05): `GET /sse` + `POST /message`.
//! - [`legacy_sse_client`]: a real rmcp 0.10 client for that transport that
//!   trusts a custom CA, to talk to the proxy's TLS listener.
//!
//! Every test binary compiles this whole file but uses only part of it.
#![allow(dead_code)]

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use futures_util::StreamExt as _;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto::Builder,
    service::TowerToHyperService,
};
use rmcp_legacy::{
    ErrorData, RoleClient, RoleServer, ServerHandler, ServiceExt as _,
    model::{
        CallToolRequestParam, CallToolResult, ClientInfo, Content, Implementation, JsonObject,
        ListToolsResult, LoggingLevel, LoggingMessageNotificationParam, PaginatedRequestParam,
        ProgressNotificationParam, ProtocolVersion, ServerCapabilities, ServerInfo, Tool,
    },
    service::{RequestContext, RunningService},
    transport::{
        SseClientTransport,
        common::client_side_sse::BoxedSseResponse,
        sse_client::{SseClient, SseClientConfig, SseTransportError},
        sse_server::{SseServer, SseServerConfig},
    },
};
use serde::Deserialize;
use tokio::{net::TcpListener, task::JoinHandle, task::JoinSet};
use tokio_util::sync::CancellationToken;

/// Path of the legacy transport's event stream.
pub const LEGACY_SSE_PATH: &str = "/sse";
/// Path (before `?sessionId=`) the legacy transport announces for POSTs.
pub const LEGACY_MESSAGE_PATH: &str = "/message";
/// `serverInfo.name` of the legacy backend.
pub const LEGACY_SERVER_NAME: &str = "mcp-edge-legacy-demo";

/// Stops a test backend: dropping it cancels the backend's token and aborts
/// its task (open connections are dropped at once); [`BackendGuard::shutdown`]
/// stops it gracefully instead.
pub struct BackendGuard {
    shutdown: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl BackendGuard {
    fn new(shutdown: CancellationToken, task: JoinHandle<()>) -> Self {
        Self {
            shutdown,
            task: Some(task),
        }
    }

    /// The token the backend stops on (cancel it to begin a graceful stop
    /// while keeping the guard, e.g. to test the proxy during upstream drain).
    pub fn token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Cancels the backend and waits until its serving task has finished.
    pub async fn shutdown(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for BackendGuard {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn bind_loopback() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind a loopback port for a test backend");
    let addr = listener
        .local_addr()
        .expect("local address of a test backend");
    (listener, addr)
}

/// Starts the demo rmcp backend (mcp_edge::demo::backend::serve) on 127.0.0.1:0; returns its address and a guard that stops it on drop.
pub async fn start_streamable_backend() -> (SocketAddr, BackendGuard) {
    let (listener, addr) = bind_loopback().await;
    let shutdown = CancellationToken::new();
    let task = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            if let Err(error) = mcp_edge::demo::backend::serve(listener, shutdown).await {
                eprintln!("streamable test backend on {addr} failed: {error}");
            }
        }
    });
    (addr, BackendGuard::new(shutdown, task))
}

/// Starts a LEGACY HTTP+SSE (2024-11-05 transport) MCP backend on 127.0.0.1:0: `GET /sse` opens the stream whose first event is `endpoint` with data = a relative URI like `/message?sessionId=...`, POSTs to that URI are answered 202 and replies arrive as `event: message` on the stream. Same tools as the demo (at least echo and add).
///
/// The transport is rmcp 0.10's own `SseServer` (an axum router), served
/// here with hyper so the port can be `0`; the tools are implemented against
/// rmcp 0.10's `ServerHandler` (`echo`, `add`, `countdown`, with the demo's
/// argument names and results). Unknown session ids get 404, unknown paths
/// 404. The stream sends a keep-alive comment every 15 s.
pub async fn start_legacy_sse_backend() -> (SocketAddr, BackendGuard) {
    let (listener, addr) = bind_loopback().await;
    let shutdown = CancellationToken::new();
    let (sse_server, router) = SseServer::new(SseServerConfig {
        bind: addr,
        sse_path: LEGACY_SSE_PATH.into(),
        post_path: LEGACY_MESSAGE_PATH.into(),
        ct: shutdown.clone(),
        sse_keep_alive: Some(Duration::from_secs(15)),
    });
    // One server instance per SSE connection, stopped by `shutdown`.
    let _ = sse_server.with_service(LegacyDemoServer::default);

    let task = tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            let builder = Builder::new(TokioExecutor::new());
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        };
                        let connection = builder
                            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(router.clone()))
                            .into_owned();
                        connections.spawn(async move {
                            let _ = connection.await;
                        });
                    }
                }
            }
            // rmcp 0.10 keeps an SSE response open until the client goes
            // away, even after its session ended, so a graceful drain would
            // never finish: drop the connections.
            connections.shutdown().await;
        }
    });
    (addr, BackendGuard::new(shutdown, task))
}

#[derive(Deserialize)]
struct EchoArgs {
    text: String,
}

#[derive(Deserialize)]
struct AddArgs {
    a: i64,
    b: i64,
}

#[derive(Deserialize)]
struct CountdownArgs {
    #[serde(default = "default_steps")]
    steps: u32,
    #[serde(default = "default_interval_ms")]
    interval_ms: u64,
}

fn default_steps() -> u32 {
    5
}

fn default_interval_ms() -> u64 {
    1000
}

/// The legacy backend's tools, mirroring the demo backend's.
#[derive(Clone, Default)]
struct LegacyDemoServer;

fn schema(value: serde_json::Value) -> Arc<JsonObject> {
    match value {
        serde_json::Value::Object(object) => Arc::new(object),
        _ => Arc::new(JsonObject::new()),
    }
}

fn legacy_tools() -> Vec<Tool> {
    vec![
        Tool::new(
            "echo",
            "Echo the given text back unchanged.",
            schema(serde_json::json!({
                "type": "object",
                "properties": { "text": { "type": "string" } },
                "required": ["text"],
            })),
        ),
        Tool::new(
            "add",
            "Add two 64-bit integers and return the sum as text.",
            schema(serde_json::json!({
                "type": "object",
                "properties": { "a": { "type": "integer" }, "b": { "type": "integer" } },
                "required": ["a", "b"],
            })),
        ),
        Tool::new(
            "countdown",
            "Count down, sending a progress notification per step.",
            schema(serde_json::json!({
                "type": "object",
                "properties": {
                    "steps": { "type": "integer", "minimum": 0, "maximum": 50, "default": 5 },
                    "interval_ms": { "type": "integer", "minimum": 0, "maximum": 10000, "default": 1000 },
                },
            })),
        ),
    ]
}

fn parse_args<T: for<'de> Deserialize<'de>>(args: Option<JsonObject>) -> Result<T, ErrorData> {
    serde_json::from_value(serde_json::Value::Object(args.unwrap_or_default()))
        .map_err(|error| ErrorData::invalid_params(format!("invalid arguments: {error}"), None))
}

impl LegacyDemoServer {
    async fn countdown(
        args: CountdownArgs,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        if args.steps > 50 || args.interval_ms > 10_000 {
            return Err(ErrorData::invalid_params(
                "steps must be at most 50 and interval_ms at most 10000",
                None,
            ));
        }
        let token = ctx.meta.get_progress_token();
        let mut done = 0;
        for step in 1..=args.steps {
            if step > 1 {
                tokio::select! {
                    _ = ctx.ct.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(args.interval_ms)) => {}
                }
            }
            let message = format!("countdown: {} remaining", args.steps - step);
            let _ = match &token {
                Some(token) => {
                    ctx.peer
                        .notify_progress(ProgressNotificationParam {
                            progress_token: token.clone(),
                            progress: f64::from(step),
                            total: Some(f64::from(args.steps)),
                            message: Some(message),
                        })
                        .await
                }
                None => {
                    ctx.peer
                        .notify_logging_message(LoggingMessageNotificationParam {
                            level: LoggingLevel::Info,
                            logger: Some("countdown".into()),
                            data: serde_json::json!({ "step": step, "steps": args.steps, "message": message }),
                        })
                        .await
                }
            };
            done = step;
        }
        let text = if done == args.steps {
            format!("countdown finished after {done} steps")
        } else {
            format!("countdown cancelled after {done} of {} steps", args.steps)
        };
        Ok(CallToolResult::success(vec![Content::text(text)]))
    }
}

impl ServerHandler for LegacyDemoServer {
    fn get_info(&self) -> ServerInfo {
        ServerInfo {
            // The protocol revision that defined the HTTP+SSE transport.
            protocol_version: ProtocolVersion::V_2024_11_05,
            capabilities: ServerCapabilities::builder()
                .enable_tools()
                .enable_logging()
                .build(),
            server_info: Implementation {
                name: LEGACY_SERVER_NAME.into(),
                title: None,
                version: env!("CARGO_PKG_VERSION").into(),
                icons: None,
                website_url: None,
            },
            instructions: None,
        }
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParam>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(legacy_tools()))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParam,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        match request.name.as_ref() {
            "echo" => {
                let EchoArgs { text } = parse_args(request.arguments)?;
                Ok(CallToolResult::success(vec![Content::text(text)]))
            }
            "add" => {
                let AddArgs { a, b } = parse_args(request.arguments)?;
                let sum = a.checked_add(b).ok_or_else(|| {
                    ErrorData::invalid_params("a + b overflows a 64-bit integer", None)
                })?;
                Ok(CallToolResult::success(vec![Content::text(
                    sum.to_string(),
                )]))
            }
            "countdown" => Self::countdown(parse_args(request.arguments)?, context).await,
            other => Err(ErrorData::invalid_params(
                format!("unknown tool: {other}"),
                None,
            )),
        }
    }
}

/// A running rmcp 0.10 client on the legacy HTTP+SSE transport.
pub type LegacyClient = RunningService<RoleClient, ClientInfo>;

/// Connects a real rmcp 0.10 client to a legacy HTTP+SSE endpoint (`url` is
/// the `GET` stream, e.g. `https://127.0.0.1:PORT/sse`) and completes the
/// `initialize` handshake. `ca_pem` is the only trust anchor for `https`
/// URLs (system roots are not used); it is ignored for `http` URLs.
///
/// The HTTP side is reqwest 0.13 (rustls + aws-lc-rs) behind rmcp 0.10's
/// `SseClient` trait, because rmcp 0.10's own reqwest integration pulls
/// reqwest 0.12 with `ring`.
pub async fn legacy_sse_client(url: &str, ca_pem: &[u8]) -> anyhow::Result<LegacyClient> {
    let ca = reqwest::Certificate::from_pem(ca_pem).context("parse CA PEM")?;
    let http = reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .context("build reqwest client")?;
    let transport = SseClientTransport::start_with_client(
        LegacyHttp(http),
        SseClientConfig {
            sse_endpoint: url.into(),
            ..Default::default()
        },
    )
    .await
    .context("open legacy SSE stream")?;
    let info = ClientInfo {
        client_info: Implementation {
            name: "mcp-edge-legacy-test-client".into(),
            title: None,
            version: env!("CARGO_PKG_VERSION").into(),
            icons: None,
            website_url: None,
        },
        ..Default::default()
    };
    info.serve(transport)
        .await
        .context("legacy MCP initialize handshake")
}

/// reqwest 0.13 as rmcp 0.10's SSE HTTP client (a newtype: both the trait
/// and reqwest are foreign to this crate).
#[derive(Clone, Debug)]
struct LegacyHttp(reqwest::Client);

impl SseClient for LegacyHttp {
    type Error = reqwest::Error;

    async fn post_message(
        &self,
        uri: http::Uri,
        message: rmcp_legacy::model::ClientJsonRpcMessage,
        auth_token: Option<String>,
    ) -> Result<(), SseTransportError<Self::Error>> {
        let mut request = self.0.post(uri.to_string()).json(&message);
        if let Some(token) = auth_token {
            request = request.bearer_auth(token);
        }
        request
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map(drop)
            .map_err(SseTransportError::Client)
    }

    async fn get_stream(
        &self,
        uri: http::Uri,
        last_event_id: Option<String>,
        auth_token: Option<String>,
    ) -> Result<BoxedSseResponse, SseTransportError<Self::Error>> {
        let mut request = self
            .0
            .get(uri.to_string())
            .header(http::header::ACCEPT, "text/event-stream");
        if let Some(token) = auth_token {
            request = request.bearer_auth(token);
        }
        if let Some(id) = last_event_id {
            request = request.header("Last-Event-ID", id);
        }
        let response = request
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(SseTransportError::Client)?;
        let content_type = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
        if !content_type
            .as_deref()
            .is_some_and(|value| value.starts_with("text/event-stream"))
        {
            return Err(SseTransportError::UnexpectedContentType(content_type));
        }
        Ok(sse_stream::SseStream::from_bytes_stream(response.bytes_stream()).boxed())
    }
}
