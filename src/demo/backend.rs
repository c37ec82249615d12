//! The built-in demo MCP backend.
//!
//! A real rmcp server (not a mock) speaking the Streamable HTTP transport at
//! `/mcp`, so the proxy can be tried out and integration-tested without
//! any external MCP server. It exposes three tools (see [`TOOLS`]); the
//! `countdown` tool streams notifications while the call is in flight, which
//! exercises the proxy's SSE relaying.

use std::{convert::Infallible, net::IpAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::{Request, Response, StatusCode, body::Incoming, service::service_fn};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto::Builder, graceful::GracefulShutdown},
};
use rmcp::{
    ErrorData, Peer, RoleServer, ServerHandler,
    handler::server::{router::tool::ToolRouter, wrapper::Parameters},
    model::{
        CallToolResult, ContentBlock, Implementation, ProgressNotificationParam, ProgressToken,
        ServerCapabilities, ServerConfig,
    },
    schemars,
    service::RequestContext,
    tool, tool_handler, tool_router,
    transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
    },
};
use serde::Deserialize;
use tokio::{net::TcpListener, task::JoinSet};
use tokio_util::sync::CancellationToken;

/// Tool names the demo server exposes (for docs/tests).
pub const TOOLS: &[&str] = &["echo", "add", "countdown"];

/// The only HTTP path the demo backend answers; everything else is a 404.
const MCP_PATH: &str = "/mcp";

/// Name announced in `serverInfo`.
const SERVER_NAME: &str = "mcp-edge-demo";

/// `Host` values accepted by rmcp's DNS-rebinding check. An entry without a
/// port matches that host on any port (rmcp compares the port only when the
/// entry names one), so these accept `127.0.0.1:PORT`, `localhost:PORT` and
/// `[::1]:PORT`, which is what the proxy sends after rewriting `Host` to the
/// upstream authority. `[::1]` is bracketed so it parses as an authority
/// rather than relying on rmcp's fallback for unparsable entries.
const ALLOWED_HOSTS: &[&str] = &["127.0.0.1", "localhost", "[::1]"];

const COUNTDOWN_DEFAULT_STEPS: u32 = 5;
const COUNTDOWN_MAX_STEPS: u32 = 50;
const COUNTDOWN_DEFAULT_INTERVAL_MS: u64 = 1000;
const COUNTDOWN_MAX_INTERVAL_MS: u64 = 10_000;

/// How long in-flight connections (typically SSE streams) get to finish after
/// shutdown before they are dropped. rmcp closes its streams as soon as the
/// config's cancellation token fires, so this is only a safety net.
const DRAIN_DEADLINE: Duration = Duration::from_secs(5);

/// Pause after a failed `accept` so that resource exhaustion (EMFILE and
/// friends) does not turn the accept loop into a busy loop.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

type ResponseBody = BoxBody<Bytes, Infallible>;

/// Arguments of the `echo` tool.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct EchoArgs {
    /// Text to send back unchanged.
    text: String,
}

/// Arguments of the `add` tool.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct AddArgs {
    /// First addend.
    a: i64,
    /// Second addend.
    b: i64,
}

/// Arguments of the `countdown` tool.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct CountdownArgs {
    /// Number of steps (default 5, at most 50).
    #[serde(default = "default_steps")]
    #[schemars(range(max = 50))]
    steps: u32,
    /// Pause between two steps in milliseconds (default 1000, at most 10000).
    #[serde(default = "default_interval_ms")]
    #[schemars(range(max = 10000))]
    interval_ms: u64,
}

fn default_steps() -> u32 {
    COUNTDOWN_DEFAULT_STEPS
}

fn default_interval_ms() -> u64 {
    COUNTDOWN_DEFAULT_INTERVAL_MS
}

/// The demo MCP server: `echo`, `add` and `countdown`.
#[derive(Clone)]
pub struct DemoServer {
    tool_router: ToolRouter<Self>,
}

impl Default for DemoServer {
    fn default() -> Self {
        Self::new()
    }
}

#[tool_router(router = tool_router)]
impl DemoServer {
    /// Creates a server instance (one per MCP session or stateless request).
    pub fn new() -> Self {
        Self {
            tool_router: Self::tool_router(),
        }
    }

    #[tool(description = "Echo the given text back unchanged.")]
    async fn echo(&self, Parameters(EchoArgs { text }): Parameters<EchoArgs>) -> String {
        text
    }

    #[tool(description = "Add two 64-bit integers and return the sum as text.")]
    async fn add(
        &self,
        Parameters(AddArgs { a, b }): Parameters<AddArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        // Overflow is a caller error, not a reason to panic or wrap silently.
        let sum = a
            .checked_add(b)
            .ok_or_else(|| ErrorData::invalid_params("a + b overflows a 64-bit integer", None))?;
        Ok(CallToolResult::success(vec![ContentBlock::text(
            sum.to_string(),
        )]))
    }

    #[tool(
        description = "Count down `steps` steps (default 5, max 50), pausing `interval_ms` ms \
                       (default 1000, max 10000) between steps. Sends a progress notification per \
                       step (or a log message when the request has no progress token) and stops \
                       early when the request is cancelled."
    )]
    async fn countdown(
        &self,
        Parameters(args): Parameters<CountdownArgs>,
        ctx: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        // Reject rather than clamp, so a caller never silently gets a
        // different countdown from the one it asked for.
        if args.steps > COUNTDOWN_MAX_STEPS {
            return Err(ErrorData::invalid_params(
                format!("steps must be at most {COUNTDOWN_MAX_STEPS}"),
                None,
            ));
        }
        if args.interval_ms > COUNTDOWN_MAX_INTERVAL_MS {
            return Err(ErrorData::invalid_params(
                format!("interval_ms must be at most {COUNTDOWN_MAX_INTERVAL_MS}"),
                None,
            ));
        }
        let interval = Duration::from_millis(args.interval_ms);
        let progress_token = ctx.meta.get_progress_token();

        let mut done = 0;
        for step in 1..=args.steps {
            if step > 1 {
                tokio::select! {
                    _ = ctx.ct.cancelled() => break,
                    _ = tokio::time::sleep(interval) => {}
                }
            }
            if ctx.ct.is_cancelled() {
                break;
            }
            // A failed send means the client went away; the token will be
            // cancelled shortly after, so just note it and keep counting.
            if let Err(error) =
                notify_step(&ctx.peer, progress_token.as_ref(), step, args.steps).await
            {
                tracing::debug!(%error, step, "countdown notification not delivered");
            }
            done = step;
        }

        let text = if done == args.steps {
            format!("countdown finished after {done} steps")
        } else {
            tracing::debug!(done, steps = args.steps, "countdown cancelled");
            format!("countdown cancelled after {done} of {} steps", args.steps)
        };
        Ok(CallToolResult::success(vec![ContentBlock::text(text)]))
    }
}

/// Reports one countdown step to the client.
///
/// With a progress token this is a `notifications/progress`, which rmcp
/// routes onto the tool call's own SSE stream. Without one, the spec forbids
/// progress notifications, so a `notifications/message` log entry is sent
/// instead: on stateless requests it also rides the call's stream, in a
/// legacy session it goes to the session's standalone GET stream.
async fn notify_step(
    peer: &Peer<RoleServer>,
    token: Option<&ProgressToken>,
    step: u32,
    steps: u32,
) -> Result<(), rmcp::ServiceError> {
    let remaining = steps - step;
    let message = format!("countdown: {remaining} remaining");
    match token {
        Some(token) => {
            peer.notify_progress(
                ProgressNotificationParam::new(token.clone(), f64::from(step))
                    .with_total(f64::from(steps))
                    .with_message(message),
            )
            .await
        }
        None => {
            // Logging is deprecated by SEP-2577 but remains the only standard
            // notification a server may send without a progress token.
            #[allow(deprecated)]
            let param = rmcp::model::LoggingMessageNotificationParam::new(
                rmcp::model::LoggingLevel::Info,
                serde_json::json!({ "step": step, "steps": steps, "message": message }),
            )
            .with_logger("countdown");
            #[allow(deprecated)]
            let sent = peer.notify_logging_message(param).await;
            sent
        }
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for DemoServer {
    fn get_info(&self) -> ServerConfig {
        // `logging` is advertised because `countdown` may emit log messages;
        // the capability is deprecated (SEP-2577) but still part of the
        // protocol versions this server negotiates.
        #[allow(deprecated)]
        let capabilities = ServerCapabilities::builder()
            .enable_tools()
            .enable_logging()
            .build();
        ServerConfig::new(capabilities)
            .with_server_info(Implementation::new(SERVER_NAME, env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Demo MCP server bundled with mcp-edge: `echo`, `add` and `countdown` (streams \
                 progress).",
            )
    }
}

/// Serves the demo MCP server (Streamable HTTP at path `/mcp`) on `listener` until `shutdown` is cancelled.
///
/// The server keeps rmcp's default (legacy) session mode, so `initialize`,
/// `Mcp-Session-Id`, the standalone `GET` stream and `DELETE` all work; a
/// request carrying complete 2026-07-28 `_meta` is answered statelessly
/// without a prior `initialize`. Accepted `Host` values: loopback names and
/// addresses, plus the listener's own IP when it is bound to a specific one.
///
/// Accept errors are logged and retried, so this returns `Ok(())` once
/// `shutdown` has been cancelled and every connection has closed: open
/// connections get 5 seconds to finish, then they are dropped.
pub async fn serve(listener: TcpListener, shutdown: CancellationToken) -> std::io::Result<()> {
    // A child token: rmcp cancels it to end its sessions and SSE streams, and
    // must not be able to cancel the caller's token.
    let config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(allowed_hosts(&listener))
        .with_cancellation_token(shutdown.child_token());
    let mcp = StreamableHttpService::new(
        || Ok(DemoServer::new()),
        Arc::new(LocalSessionManager::default()),
        config,
    );

    let mut builder = Builder::new(TokioExecutor::new());
    // hyper only enforces its header read timeout when it has a timer.
    builder.http1().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    // Connections live in a JoinSet (not detached tasks) so that none
    // outlives `serve`: the caller can rely on the port being quiet after it
    // returns.
    let mut connections = JoinSet::new();

    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            // Reap finished connections so the set does not grow forever.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer_addr) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "demo backend: accept failed");
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                continue;
            }
        };
        // Latency matters more than throughput for small JSON-RPC frames.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%error, "demo backend: could not set TCP_NODELAY");
        }
        let mcp = mcp.clone();
        let service = service_fn(move |request: Request<Incoming>| {
            let mcp = mcp.clone();
            async move { Ok::<_, Infallible>(route(&mcp, request).await) }
        });
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        connections.spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, %peer_addr, "demo backend: connection ended with error");
            }
        });
    }

    // Stop accepting before draining so new clients fail fast.
    drop(listener);
    if tokio::time::timeout(DRAIN_DEADLINE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("demo backend: drain deadline passed, dropping open connections");
    }
    connections.shutdown().await;
    Ok(())
}

/// The `Host` allowlist for rmcp's DNS-rebinding check: [`ALLOWED_HOSTS`]
/// plus the listener's IP when it is a specific (non-wildcard) address, e.g.
/// `127.0.0.2` or `10.0.0.5`. An IP literal cannot be rebound, so allowing it
/// keeps the protection while letting clients (and the proxy, which sends the
/// upstream authority as `Host`) reach the demo by the address it listens on.
fn allowed_hosts(listener: &TcpListener) -> Vec<String> {
    let mut hosts: Vec<String> = ALLOWED_HOSTS.iter().map(|&host| host.to_owned()).collect();
    if let Ok(addr) = listener.local_addr()
        && !addr.ip().is_unspecified()
    {
        let own = match addr.ip() {
            IpAddr::V4(ip) => ip.to_string(),
            IpAddr::V6(ip) => format!("[{ip}]"),
        };
        if !hosts.contains(&own) {
            hosts.push(own);
        }
    }
    hosts
}

/// Sends `/mcp` to rmcp and answers everything else with 404, so the backend
/// behaves like a typical MCP server mounted at one path.
async fn route(
    mcp: &StreamableHttpService<DemoServer, LocalSessionManager>,
    request: Request<Incoming>,
) -> Response<ResponseBody> {
    if request.uri().path() == MCP_PATH {
        mcp.handle(request).await
    } else {
        let mut response = Response::new(Full::new(Bytes::from_static(b"Not Found")).boxed());
        *response.status_mut() = StatusCode::NOT_FOUND;
        response
    }
}
