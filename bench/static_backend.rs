//! Minimal plain-HTTP backend for benchmarks: answers every POST with a fixed JSON-RPC result,
//! `GET /healthz` with `200 ok`, and every other GET with an SSE stream of small events, so
//! proxy overhead is measured without the cost of a real MCP server in the way.
//!
//! Usage: `cargo run --release --example static_backend -- 127.0.0.1:9100 [event_interval_ms] [event_pad_bytes]`
//!
//! `event_pad_bytes` (default 0) adds a `pad` string of that many bytes to every event. A GET
//! can override both for its own stream with the query `?every_ms=N&pad=N` (bench/soak.sh uses
//! it to fill the buffers of a client that stops reading quickly). With `ts=1` in the query every
//! event also carries `"t":<send time, µs since the Unix epoch>` (bench/run.sh measures the
//! latency each proxy adds per event with it).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};

const RESULT: &[u8] =
    br#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"5"}],"isError":false}}"#;

type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:9100".into());
    let interval = Duration::from_millis(args.next().and_then(|s| s.parse().ok()).unwrap_or(1000));
    let pad_bytes: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("static backend on {}", listener.local_addr()?);
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(
                move |req: http::Request<hyper::body::Incoming>| async move {
                    let resp: http::Response<Body> = if req.method() == http::Method::GET
                        && req.uri().path() == "/healthz"
                    {
                        http::Response::builder()
                            .header("content-type", "text/plain")
                            .body(Full::new(Bytes::from_static(b"ok")).boxed_unsync())
                            .unwrap_or_default()
                    } else if req.method() == http::Method::GET {
                        let (interval, pad, stamp) = stream_params(req.uri(), interval, pad_bytes);
                        let events = futures_util::stream::unfold(0u64, move |n| {
                            let pad = pad.clone();
                            async move {
                                tokio::time::sleep(interval).await;
                                let ev = if stamp {
                                    let t = std::time::SystemTime::now()
                                        .duration_since(std::time::UNIX_EPOCH)
                                        .map_or(0, |d| d.as_micros());
                                    Bytes::from(format!(
                                        "id: {n}\ndata: {{\"n\":{n},\"t\":{t}{}}}\n\n",
                                        if pad.is_empty() {
                                            String::new()
                                        } else {
                                            format!(",\"pad\":\"{pad}\"")
                                        }
                                    ))
                                } else if pad.is_empty() {
                                    Bytes::from(format!("id: {n}\ndata: {{\"n\":{n}}}\n\n"))
                                } else {
                                    Bytes::from(format!(
                                        "id: {n}\ndata: {{\"n\":{n},\"pad\":\"{pad}\"}}\n\n"
                                    ))
                                };
                                Some((Ok::<_, Infallible>(Frame::data(ev)), n + 1))
                            }
                        });
                        http::Response::builder()
                            .header("content-type", "text/event-stream")
                            .body(StreamBody::new(events).boxed_unsync())
                            .unwrap_or_default()
                    } else {
                        let _ = req.into_body().collect().await;
                        http::Response::builder()
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from_static(RESULT)).boxed_unsync())
                            .unwrap_or_default()
                    };
                    Ok::<_, Infallible>(resp)
                },
            );
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

/// The event interval, padding and send-time stamp of one stream: the defaults, or `every_ms` /
/// `pad` / `ts` from the query.
fn stream_params(
    uri: &http::Uri,
    interval: Duration,
    pad_bytes: usize,
) -> (Duration, Arc<str>, bool) {
    let (mut interval, mut pad_bytes, mut stamp) = (interval, pad_bytes, false);
    for pair in uri.query().unwrap_or("").split('&') {
        match pair.split_once('=') {
            Some(("every_ms", v)) => interval = v.parse().map_or(interval, Duration::from_millis),
            Some(("pad", v)) => pad_bytes = v.parse().unwrap_or(pad_bytes).min(1 << 20),
            Some(("ts", v)) => stamp = v == "1",
            _ => {}
        }
    }
    (interval, "x".repeat(pad_bytes).into(), stamp)
}
