//! Backends that die on cue, written at the TCP level so the way they die is exact: a
//! chunked SSE answer cut off without its last chunk (the connection dropped), a clean end,
//! silence, broken framing, or a connection that writes as fast as it can until the proxy
//! gives up on it. Each request is handed to the test's handler with the connection; the
//! handler writes the answer with [`Conn`]'s helpers and returns the connection to keep
//! serving on it, or `None` to close it.

use std::future::Future;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// One request as the backend read it.
#[derive(Debug, Clone)]
pub struct RawRequest {
    pub method: String,
    /// Path and query.
    pub target: String,
    /// Header lines, names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawRequest {
    /// The body as JSON (`Null` when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The JSON-RPC method of a single-message body.
    pub fn rpc_method(&self) -> Option<String> {
        self.json()["method"].as_str().map(str::to_owned)
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The backend side of one connection.
pub struct Conn {
    tcp: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    /// Writes bytes as they are; `false` once the peer is gone.
    pub async fn raw(&mut self, bytes: &[u8]) -> bool {
        self.tcp.write_all(bytes).await.is_ok() && self.tcp.flush().await.is_ok()
    }

    /// A `200` event-stream head, chunked, with `extra` header lines (each ending in CRLF).
    pub async fn sse_head(&mut self, extra: &str) -> bool {
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\
             transfer-encoding: chunked\r\n{extra}\r\n"
        );
        self.raw(head.as_bytes()).await
    }

    /// One chunk of a chunked body.
    pub async fn chunk(&mut self, bytes: &[u8]) -> bool {
        let mut out = format!("{:x}\r\n", bytes.len()).into_bytes();
        out.extend_from_slice(bytes);
        out.extend_from_slice(b"\r\n");
        self.raw(&out).await
    }

    /// The last chunk: a clean end of the body.
    pub async fn end(&mut self) -> bool {
        self.raw(b"0\r\n\r\n").await
    }

    /// A complete JSON answer.
    pub async fn json(&mut self, status: u16, body: &str, extra: &str) -> bool {
        let head = format!(
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{extra}\r\n",
            body.len()
        );
        self.raw(head.as_bytes()).await && self.raw(body.as_bytes()).await
    }

    /// An empty answer with `status` (202 for notifications, 405 for a refused GET).
    pub async fn empty(&mut self, status: u16) -> bool {
        self.raw(format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n").as_bytes())
            .await
    }

    /// Reads the next request; `None` when the peer closed or sent something unreadable.
    async fn next_request(&mut self) -> Option<RawRequest> {
        let end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            let mut chunk = [0u8; 4096];
            let n = self.tcp.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.drain(..end + 4);
        let mut lines = head.split("\r\n");
        let mut first = lines.next()?.split(' ');
        let (method, target) = (first.next()?.to_owned(), first.next()?.to_owned());
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let len: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        while self.buf.len() < len {
            let mut chunk = [0u8; 4096];
            let n = self.tcp.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
        let body = self.buf.drain(..len).collect();
        Some(RawRequest {
            method,
            target,
            headers,
            body,
        })
    }
}

/// A running backend; stops (dropping every connection) when dropped.
pub struct DyingBackend {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for DyingBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves every request on 127.0.0.1:0 with `handler`. Connection tasks are aborted with the
/// backend, so a handler that never returns holds its connection open until then.
pub async fn serve<F, Fut>(handler: F) -> DyingBackend
where
    F: Fn(RawRequest, Conn) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Option<Conn>> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((tcp, _)) = listener.accept().await {
            let handler = handler.clone();
            conns.spawn(async move {
                let mut conn = Conn {
                    tcp,
                    buf: Vec::new(),
                };
                while let Some(req) = conn.next_request().await {
                    match handler(req, conn).await {
                        Some(c) => conn = c,
                        None => return,
                    }
                }
            });
        }
    });
    DyingBackend { addr, task }
}

/// An SSE `data:` event carrying `json`.
pub fn event(json: &serde_json::Value) -> Vec<u8> {
    format!("data: {json}\n\n").into_bytes()
}

/// The JSON-RPC ids of the error answers among `messages`.
pub fn error_ids(messages: &[serde_json::Value]) -> Vec<serde_json::Value> {
    messages
        .iter()
        .filter(|m| m.get("error").is_some())
        .map(|m| m["id"].clone())
        .collect()
}
