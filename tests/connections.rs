//! One client must not be able to lock everyone out: connections that never send a request
//! are closed at `http.first_request_timeout`, connections with nothing in progress at
//! `http.idle_timeout` (an open SSE stream is in progress), and one address may hold at most
//! `listener.max_connections_per_ip`. Real TLS over loopback; every wait is bounded, so a
//! regression fails an assertion instead of hanging.

mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::{TestProxy, raw, route, tls};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;

/// Slack on top of a server deadline before the test calls it missed: generous, so a loaded
/// box does not flake; without the fix these connections stay open for minutes.
const SLACK: Duration = Duration::from_secs(4);

/// The HTTP/2 connection preface, and nothing after it (no SETTINGS).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Senders feeding the SSE bodies the backend answers GETs with, one per request.
type StreamFeeds = mpsc::UnboundedReceiver<mpsc::Sender<Result<Bytes, std::io::Error>>>;

/// A backend that answers POST with `ok` and GET with an SSE stream the test feeds.
async fn backend() -> (raw::RawBackend, StreamFeeds) {
    let (streams_tx, streams) = mpsc::unbounded_channel();
    let backend = raw::serve(move |req: http::Request<hyper::body::Incoming>| {
        let streams_tx = streams_tx.clone();
        async move {
            if req.method() == http::Method::GET {
                let (tx, body) = raw::channel_body();
                let _ = streams_tx.send(tx);
                raw::sse(body)
            } else {
                http::Response::new(raw::full("ok"))
            }
        }
    })
    .await;
    (backend, streams)
}

/// A proxy routing `/mcp` to `backend`, with extra `[listener]` keys and further tables.
async fn proxy(listener_keys: &str, tables: &str, backend: &raw::RawBackend) -> TestProxy {
    let pki = support::Pki::new();
    let text = format!(
        "{}{tables}\n{}",
        support::listener_toml(&pki).replace(
            "[listener.tls]",
            &format!("{listener_keys}\n[listener.tls]")
        ),
        route("/mcp", &format!("http://{}/mcp", backend.addr))
    );
    support::start_proxy_text(pki, &text).await
}

/// A TCP connection to the proxy from the loopback address `from` (Linux routes all of
/// 127.0.0.0/8 to lo, so 127.0.0.2 is a second client address).
async fn tcp_from(from: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::V4(from), 0))?;
    socket.connect(to).await
}

/// A completed TLS handshake from `from` offering `alpn`, or the error that stopped it.
async fn tls_from(
    proxy: &TestProxy,
    from: Ipv4Addr,
    alpn: &[&[u8]],
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = tcp_from(from, proxy.addr).await?;
    let handshake = tls::handshake(tcp, tls::client_config(&proxy.pki.ca.cert_pem, None, alpn));
    tokio::time::timeout(SLACK, handshake)
        .await
        .map_err(|_| std::io::Error::other("handshake did not finish"))?
}

const LOCAL: Ipv4Addr = Ipv4Addr::LOCALHOST;
const OTHER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

/// Reads (discarding whatever the server sends, e.g. its HTTP/2 SETTINGS) until the server
/// closes the connection; `None` if it is still open after `limit`.
async fn closed_within(s: &mut TlsStream<TcpStream>, limit: Duration) -> Option<()> {
    let mut sink = Vec::new();
    // EOF or an error (no close_notify, reset) both mean the server let go.
    tokio::time::timeout(limit, s.read_to_end(&mut sink))
        .await
        .ok()
        .map(|_| ())
}

/// A POST of the JSON-RPC ping, for HTTP/1.1 (origin-form plus Host) or HTTP/2 (absolute).
fn ping(h2: bool) -> http::Request<Full<Bytes>> {
    let b = if h2 {
        http::Request::post("https://localhost/mcp")
    } else {
        http::Request::post("/mcp").header("host", "localhost")
    };
    b.header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(Full::new(Bytes::from_static(support::PING.as_bytes())))
        .unwrap()
}

/// An HTTP/1.1 client connection from `from`; the join handle yields when the server closed it.
async fn h1_client(
    proxy: &TestProxy,
    from: Ipv4Addr,
) -> (
    hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    tokio::task::JoinHandle<Instant>,
) {
    let tls = tls_from(proxy, from, &[b"http/1.1"])
        .await
        .expect("handshake");
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("h1 client");
    let closed = tokio::spawn(async move {
        let _ = conn.await;
        Instant::now()
    });
    (send, closed)
}

/// An HTTP/2 client connection; the join handle yields when the server closed it.
async fn h2_client(
    proxy: &TestProxy,
) -> (
    hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    tokio::task::JoinHandle<Instant>,
) {
    let tls = tls_from(proxy, LOCAL, &[b"h2"]).await.expect("handshake");
    let (send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .expect("h2 client");
    let closed = tokio::spawn(async move {
        let _ = conn.await;
        Instant::now()
    });
    (send, closed)
}

/// Sends `req` and returns the status and the whole body.
async fn exchange<S>(send: &mut S, req: http::Request<Full<Bytes>>) -> (u16, Bytes)
where
    S: SendLike,
{
    let resp = tokio::time::timeout(SLACK, send.send(req))
        .await
        .expect("answered in time")
        .expect("response");
    let status = resp.status().as_u16();
    let body = tokio::time::timeout(SLACK, resp.into_body().collect())
        .await
        .expect("body in time")
        .expect("body")
        .to_bytes();
    (status, body)
}

/// The one method both hyper client halves share, so [`exchange`] serves both.
trait SendLike {
    fn send(
        &mut self,
        req: http::Request<Full<Bytes>>,
    ) -> impl std::future::Future<Output = hyper::Result<http::Response<hyper::body::Incoming>>>;
}

impl SendLike for hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    fn send(
        &mut self,
        req: http::Request<Full<Bytes>>,
    ) -> impl std::future::Future<Output = hyper::Result<http::Response<hyper::body::Incoming>>>
    {
        self.send_request(req)
    }
}

impl SendLike for hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    fn send(
        &mut self,
        req: http::Request<Full<Bytes>>,
    ) -> impl std::future::Future<Output = hyper::Result<http::Response<hyper::body::Incoming>>>
    {
        self.send_request(req)
    }
}

/// The next non-empty DATA frame of a streaming response.
async fn next_data(body: &mut hyper::body::Incoming) -> Bytes {
    loop {
        let frame = tokio::time::timeout(SLACK, body.frame())
            .await
            .expect("event in time")
            .expect("stream still open")
            .expect("frame");
        match frame.into_data() {
            Ok(data) if data.is_empty() => continue,
            Ok(data) => return data,
            Err(_) => panic!("only data frames are expected"),
        }
    }
}

/// Waits for `closed` (a client connection task) to report the server's close.
async fn server_closed(
    closed: tokio::task::JoinHandle<Instant>,
    limit: Duration,
) -> Option<Instant> {
    tokio::time::timeout(limit, closed)
        .await
        .ok()
        .and_then(Result::ok)
}

#[tokio::test]
async fn silent_connections_are_closed_at_the_first_request_deadline() {
    let (backend, _streams) = backend().await;
    // Long enough that all 8 handshakes and the refused 9th fit in it on a slow debug build.
    let first = Duration::from_secs(2);
    let proxy = proxy(
        "max_connections = 8\nmax_connections_per_ip = 8",
        "[http]\nfirst_request_timeout = \"2s\"",
        &backend,
    )
    .await;

    // Every slot taken by a connection that never completes a request head: silent after an
    // h1 or h2 handshake, only the h2 preface, or half an HTTP/1.1 head (header_read_timeout
    // is 30 s here, so only the first-request deadline can end it in time).
    let started = Instant::now();
    let mut silent = Vec::new();
    for kind in ["h1 silent", "h2 silent", "h2 preface only", "h1 half head"] {
        for _ in 0..2 {
            let alpn: &[&[u8]] = if kind.starts_with("h2") {
                &[b"h2"]
            } else {
                &[b"http/1.1"]
            };
            let mut s = tls_from(&proxy, LOCAL, alpn).await.expect("handshake");
            match kind {
                "h2 preface only" => s.write_all(H2_PREFACE).await.unwrap(),
                "h1 half head" => s
                    .write_all(b"POST /mcp HTTP/1.1\r\nHost: loc")
                    .await
                    .unwrap(),
                _ => {}
            }
            s.flush().await.unwrap();
            silent.push((kind, s));
        }
    }
    // The premise: while they are open, nobody else gets in.
    let refused = tls_from(&proxy, LOCAL, &[b"http/1.1"]).await;
    assert!(
        refused.is_err(),
        "the cap of 8 is full, a 9th must be refused"
    );

    for (kind, s) in &mut silent {
        assert!(
            closed_within(s, first + SLACK).await.is_some(),
            "{kind}: still open {:?} after connecting (first_request_timeout 2s)",
            started.elapsed()
        );
    }
    assert!(
        started.elapsed() >= first - Duration::from_millis(100),
        "closed before the deadline: {:?}",
        started.elapsed()
    );

    // With the slots free again, a normal client is served at once.
    let (mut send, _closed) = h1_client(&proxy, LOCAL).await;
    let (status, body) = exchange(&mut send, ping(false)).await;
    assert_eq!((status, &body[..]), (200, &b"ok"[..]));
}

#[tokio::test]
async fn one_address_cannot_take_every_slot() {
    let (backend, _streams) = backend().await;
    let proxy = proxy(
        "max_connections = 8\nmax_connections_per_ip = 3",
        "[http]\nfirst_request_timeout = \"1m\"",
        &backend,
    )
    .await;

    // Connections that fail their handshake give their slot back: 10 failures from
    // 127.0.0.1, then its 3 slots must still be there.
    for _ in 0..10 {
        let mut tcp = tcp_from(LOCAL, proxy.addr).await.unwrap();
        tcp.write_all(b"\x16\x03\x01\x00\x05hello").await.unwrap();
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(SLACK, tcp.read_to_end(&mut sink)).await;
    }
    let mut held = Vec::new();
    for i in 0..3 {
        // The server releases a failed connection's slot right after closing it; retry
        // briefly so that ordering cannot flake, while a leaked slot still fails.
        let deadline = Instant::now() + SLACK;
        loop {
            match tls_from(&proxy, LOCAL, &[b"http/1.1"]).await {
                Ok(s) => {
                    held.push(s);
                    break;
                }
                Err(e) if Instant::now() > deadline => {
                    panic!("connection {i} from 127.0.0.1 refused after handshake failures: {e}")
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    // The 4th from the same address is closed at once...
    let t = Instant::now();
    let fourth = tls_from(&proxy, LOCAL, &[b"http/1.1"]).await;
    assert!(
        fourth.is_err(),
        "a 4th connection from 127.0.0.1 must be refused"
    );
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "refused at once, not at a deadline"
    );

    // ...while another address is served, promptly.
    let t = Instant::now();
    let (mut send, _closed) = h1_client(&proxy, OTHER).await;
    let (status, body) = exchange(&mut send, ping(false)).await;
    assert_eq!((status, &body[..]), (200, &b"ok"[..]));
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "served within seconds"
    );

    // Closing one of the three frees a slot for 127.0.0.1 again.
    drop(held.pop());
    let deadline = Instant::now() + SLACK;
    loop {
        match tls_from(&proxy, LOCAL, &[b"http/1.1"]).await {
            Ok(s) => {
                held.push(s);
                break;
            }
            Err(e) if Instant::now() > deadline => panic!("slot not released on close: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

#[tokio::test]
async fn idle_connections_are_closed_but_open_streams_are_not() {
    let (backend, mut streams) = backend().await;
    let idle = Duration::from_secs(1);
    // No heartbeats during the test: the stream must survive while fully silent.
    let proxy = proxy(
        "",
        "[http]\nidle_timeout = \"1s\"\n[sse]\nheartbeat_interval = \"1m\"\nidle_timeout = \"10m\"",
        &backend,
    )
    .await;

    // HTTP/1.1 keep-alive and HTTP/2 without open streams: closed about idle_timeout after
    // the last response, not before.
    let (mut send, closed) = h1_client(&proxy, LOCAL).await;
    assert_eq!(exchange(&mut send, ping(false)).await.0, 200);
    let served = Instant::now();
    let at = server_closed(closed, idle + SLACK)
        .await
        .expect("idle HTTP/1.1 connection closed by the server");
    assert!(
        at - served >= idle - Duration::from_millis(100),
        "closed early: {:?}",
        at - served
    );

    let (mut send, closed) = h2_client(&proxy).await;
    assert_eq!(exchange(&mut send, ping(true)).await.0, 200);
    let served = Instant::now();
    let at = server_closed(closed, idle + SLACK)
        .await
        .expect("HTTP/2 connection without open streams closed by the server");
    assert!(
        at - served >= idle - Duration::from_millis(100),
        "closed early: {:?}",
        at - served
    );

    // An SSE stream on HTTP/2 silent for three idle periods keeps its connection.
    let (mut send, closed) = h2_client(&proxy).await;
    let req = http::Request::get("https://localhost/mcp")
        .header("accept", "text/event-stream")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = tokio::time::timeout(SLACK, send.send_request(req))
        .await
        .expect("stream head in time")
        .expect("stream head");
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let tx = tokio::time::timeout(SLACK, streams.recv())
        .await
        .unwrap()
        .unwrap();
    tx.send(Ok(Bytes::from_static(b"data: 1\n\n")))
        .await
        .unwrap();
    assert_eq!(next_data(&mut body).await, "data: 1\n\n");
    tokio::time::sleep(idle * 3).await;
    assert!(
        !closed.is_finished(),
        "connection with an open stream was closed as idle"
    );
    tx.send(Ok(Bytes::from_static(b"data: 2\n\n")))
        .await
        .unwrap();
    assert_eq!(next_data(&mut body).await, "data: 2\n\n");
    // A second request on the same connection still works while the stream is open.
    assert_eq!(exchange(&mut send, ping(true)).await.0, 200);

    // Once the stream ends, the idle clock starts and closes the connection.
    drop(tx);
    let ended = Instant::now();
    drop(body);
    let at = server_closed(closed, idle + SLACK)
        .await
        .expect("connection closed after its last stream ended");
    assert!(
        at - ended >= idle - Duration::from_millis(100),
        "closed early: {:?}",
        at - ended
    );
}
