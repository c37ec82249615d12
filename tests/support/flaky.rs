//! A plain-HTTP MCP-ish backend whose failure mode is switched while a test runs: answering,
//! answering 5xx, hanging, answering garbage, resetting the connection after reading the
//! request, or not listening at all (stopped, then started again on the same port). It counts
//! the calls it received (and `tools/call`s among them) and serves `/healthz` as told, so tests
//! can prove what the proxy sent and what it spared the backend.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use super::raw::{self, BoxBody};

/// How the backend treats the next request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A JSON-RPC result for the request's id, with `Mcp-Session-Id: <name>-session`.
    Ok,
    /// This status with a JSON-RPC error body.
    Status(u16),
    /// Reads the request and never answers.
    Hang,
    /// Answers bytes that are not HTTP, then closes.
    Garbage,
    /// Reads the whole request, then resets the connection (RST) without answering.
    ResetAfterRead,
}

struct State {
    name: String,
    mode: Mutex<Mode>,
    healthy: AtomicBool,
    calls: AtomicUsize,
    tool_calls: AtomicUsize,
    probes: AtomicUsize,
    /// Cancelled to drop every open connection (a mode change, a stop).
    connections: Mutex<CancellationToken>,
}

/// A running flaky backend; stops when dropped.
pub struct Flaky {
    pub addr: SocketAddr,
    state: Arc<State>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Flaky {
    /// Starts a backend named `name` (its session ids are `<name>-session`) on 127.0.0.1:0.
    pub async fn start(name: &str) -> Flaky {
        let state = Arc::new(State {
            name: name.to_owned(),
            mode: Mutex::new(Mode::Ok),
            healthy: AtomicBool::new(true),
            calls: AtomicUsize::new(0),
            tool_calls: AtomicUsize::new(0),
            probes: AtomicUsize::new(0),
            connections: Mutex::new(CancellationToken::new()),
        });
        let listener = bind("127.0.0.1:0".parse().expect("addr"));
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(accept(listener, state.clone()));
        Flaky {
            addr,
            state,
            task: Mutex::new(Some(task)),
        }
    }

    /// `http://127.0.0.1:PORT/mcp`.
    pub fn url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }

    /// Switches the mode; open connections are dropped so the next request meets it.
    pub fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().expect("mode") = mode;
        self.drop_connections();
    }

    /// What `/healthz` answers: 200 or 503.
    pub fn set_healthy(&self, healthy: bool) {
        self.state.healthy.store(healthy, Ordering::SeqCst);
    }

    /// Requests received (any path but `/healthz`).
    pub fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }

    /// `tools/call` requests received.
    pub fn tool_calls(&self) -> usize {
        self.state.tool_calls.load(Ordering::SeqCst)
    }

    /// Health probes (`/healthz`) received.
    pub fn probes(&self) -> usize {
        self.state.probes.load(Ordering::SeqCst)
    }

    /// Stops listening and drops every connection: connects are refused from now on.
    pub fn stop(&self) {
        if let Some(t) = self.task.lock().expect("task").take() {
            t.abort();
        }
        self.drop_connections();
    }

    /// Listens again on the same port.
    pub fn restart(&self) {
        let listener = bind(self.addr);
        let task = tokio::spawn(accept(listener, self.state.clone()));
        if let Some(old) = self.task.lock().expect("task").replace(task) {
            old.abort();
        }
    }

    fn drop_connections(&self) {
        let mut token = self.state.connections.lock().expect("token");
        token.cancel();
        *token = CancellationToken::new();
    }
}

impl Drop for Flaky {
    fn drop(&mut self) {
        self.stop();
    }
}

fn bind(addr: SocketAddr) -> tokio::net::TcpListener {
    let socket = TcpSocket::new_v4().expect("socket");
    // The port is taken again after a stop while old connections may linger in TIME_WAIT.
    socket.set_reuseaddr(true).expect("reuseaddr");
    socket.bind(addr).expect("bind flaky backend");
    socket.listen(128).expect("listen")
}

async fn accept(listener: tokio::net::TcpListener, state: Arc<State>) {
    // Aborting this task drops the set, which aborts every connection task.
    let mut conns = JoinSet::new();
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        let stop = state.connections.lock().expect("token").clone();
        conns.spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = connection(tcp, state) => {}
            }
        });
        while conns.try_join_next().is_some() {}
    }
}

async fn connection(tcp: TcpStream, state: Arc<State>) {
    let mode = *state.mode.lock().expect("mode");
    match mode {
        Mode::Garbage => {
            let mut tcp = tcp;
            let _ = read_request(&mut tcp, &state).await;
            let _ = tcp.write_all(b"SURPRISE this is not HTTP\r\n\r\n").await;
            let _ = tcp.shutdown().await;
        }
        Mode::ResetAfterRead => {
            let mut tcp = tcp;
            let _ = read_request(&mut tcp, &state).await;
            // Linger 0: closing sends RST, the way a crashed backend looks.
            let _ = tcp.set_zero_linger();
            drop(tcp);
        }
        _ => {
            let svc = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(answer(req, state).await) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        }
    }
}

/// Reads one HTTP/1.1 request (head and `Content-Length` body) off a raw socket and counts it.
async fn read_request(tcp: &mut TcpStream, state: &State) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = tcp.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = tcp.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    count(state, &buf[head_end..]);
    Ok(())
}

fn count(state: &State, body: &[u8]) {
    state.calls.fetch_add(1, Ordering::SeqCst);
    if String::from_utf8_lossy(body).contains("\"tools/call\"") {
        state.tool_calls.fetch_add(1, Ordering::SeqCst);
    }
}

async fn answer(req: Request<Incoming>, state: Arc<State>) -> Response<BoxBody> {
    if req.uri().path() == "/healthz" {
        state.probes.fetch_add(1, Ordering::SeqCst);
        let status = if state.healthy.load(Ordering::SeqCst) {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        return status_response(status, "health");
    }
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    count(&state, &body);
    let id = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("id").cloned())
        .unwrap_or(serde_json::Value::Null);
    let mode = *state.mode.lock().expect("mode");
    match mode {
        Mode::Status(code) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            status_response(status, "failing on purpose")
        }
        Mode::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            status_response(StatusCode::OK, "late")
        }
        _ => {
            let result =
                serde_json::json!({"jsonrpc": "2.0", "id": id, "result": {"from": state.name}});
            Response::builder()
                .header("content-type", "application/json")
                .header("mcp-session-id", format!("{}-session", state.name))
                .body(raw::full(result.to_string()))
                .expect("response")
        }
    }
}

fn status_response(status: StatusCode, message: &str) -> Response<BoxBody> {
    let body = serde_json::json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32603, "message": message}});
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(raw::full(body.to_string()))
        .expect("response")
}
