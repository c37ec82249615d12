//! Load client for bench/run.sh: what wrk and h2load cannot do.
//!
//! `bench_client sse URL --streams N --hold SECS [--ca PEM] [-H 'name: value']...`
//!   Opens N event streams (GET, HTTP/1.1, one TCP/TLS connection each), waits until every
//!   stream has its 200 head (or failed) and then `--settle` seconds (default 0.5), prints
//!   `READY <ok> <failed>`, then for `--hold` seconds records, per event
//!   carrying `"t":<unix µs>` (bench/static_backend.rs with `?ts=1` stamps its send time), the
//!   receive-minus-send latency, per stream the largest gap between events, and the events per
//!   second. Prints `DONE` and one JSON line of results, then closes everything.
//!
//! `bench_client handshake HOST:PORT --secs SECS [--resume] [--concurrency K] [--ca PEM]`
//!   New TLS 1.3 connections (X25519 only, the group every server here speaks) as fast as K
//!   tasks can make them: handshake, `GET /bench-handshake` with `connection: close`, read the
//!   answer to its end, close. Without `--resume` no session is kept (every handshake is full);
//!   with it the client keeps the server's tickets and resumes. Prints one JSON line: handshakes
//!   per second, how many were full / resumed (as rustls reports them), failures.
//!
//! Everything is loopback; both modes are bounded by their count and time arguments.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

fn usage() -> ! {
    eprintln!(
        "usage: bench_client sse URL --streams N --hold SECS [--settle SECS] [--ca PEM] [--open-concurrency K] [-H 'k: v']...\n       \
         bench_client handshake HOST:PORT --secs SECS [--resume] [--concurrency K] [--ca PEM]"
    );
    std::process::exit(2)
}

struct Args {
    mode: String,
    target: String,
    streams: usize,
    hold: f64,
    settle: f64,
    secs: f64,
    resume: bool,
    concurrency: usize,
    open_concurrency: usize,
    ca: Option<String>,
    headers: Vec<(String, String)>,
}

fn parse_args() -> Args {
    let mut it = std::env::args().skip(1);
    let mode = it.next().unwrap_or_else(|| usage());
    let target = it.next().unwrap_or_else(|| usage());
    let mut a = Args {
        mode,
        target,
        streams: 1,
        hold: 10.0,
        settle: 0.5,
        secs: 5.0,
        resume: false,
        concurrency: 4,
        open_concurrency: 64,
        ca: None,
        headers: Vec::new(),
    };
    while let Some(k) = it.next() {
        let mut v = || it.next().unwrap_or_else(|| usage());
        match k.as_str() {
            "--streams" => a.streams = v().parse().unwrap_or_else(|_| usage()),
            "--hold" => a.hold = v().parse().unwrap_or_else(|_| usage()),
            "--settle" => a.settle = v().parse().unwrap_or_else(|_| usage()),
            "--secs" => a.secs = v().parse().unwrap_or_else(|_| usage()),
            "--concurrency" => a.concurrency = v().parse().unwrap_or_else(|_| usage()),
            "--open-concurrency" => a.open_concurrency = v().parse().unwrap_or_else(|_| usage()),
            "--ca" => a.ca = Some(v()),
            "--resume" => a.resume = true,
            "-H" => {
                let h = v();
                let (n, val) = h.split_once(':').unwrap_or_else(|| usage());
                a.headers
                    .push((n.trim().to_string(), val.trim().to_string()));
            }
            _ => usage(),
        }
    }
    a
}

fn tls_config(ca: Option<&str>, resume: bool) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(path) = ca {
        for c in CertificateDer::pem_file_iter(path).expect("read --ca") {
            roots.add(c.expect("parse --ca")).expect("add --ca");
        }
    }
    let provider = rustls::crypto::CryptoProvider {
        kx_groups: vec![rustls::crypto::aws_lc_rs::kx_group::X25519],
        ..rustls::crypto::aws_lc_rs::default_provider()
    };
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("TLS 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    if !resume {
        cfg.resumption = rustls::client::Resumption::disabled();
    }
    Arc::new(cfg)
}

/// This process's utime+stime in clock ticks (/proc/self/stat fields 14 and 15).
fn own_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn pct(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// One parsed `http[s]://host:port/path?query`.
struct Target {
    tls: bool,
    host: String,
    addr: String,
    path: String,
}

fn parse_url(url: &str) -> Target {
    let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        usage()
    };
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let host = hostport
        .rsplit_once(':')
        .map_or(hostport, |(h, _)| h)
        .to_string();
    Target {
        tls,
        host,
        addr: hostport.replace("localhost", "127.0.0.1"),
        path: path.into(),
    }
}

#[derive(Default)]
struct StreamResult {
    opened: bool,
    status: u16,
    events_in_window: u64,
    max_gap_us: u64,
    ended_early: bool,
    open_retries: u32,
    lat: Vec<u32>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One stream's connection and request, up to the response head (60 s at most).
async fn open_stream(
    t: &Target,
    cfg: Arc<rustls::ClientConfig>,
    headers: &[(String, String)],
) -> Result<http::Response<hyper::body::Incoming>, BoxError> {
    tokio::time::timeout(Duration::from_secs(60), async {
        let tcp = TcpStream::connect(&t.addr).await?;
        tcp.set_nodelay(true)?;
        let mut req = http::Request::get(t.path.as_str())
            .header(
                "host",
                format!("{}:{}", t.host, t.addr.rsplit(':').next().unwrap_or("")),
            )
            .header("accept", "text/event-stream");
        for (k, v) in headers.iter() {
            req = req.header(k.as_str(), v.as_str());
        }
        let req = req.body(Empty::<Bytes>::new())?;
        let resp = if t.tls {
            let name = ServerName::try_from(t.host.clone())?;
            let tls = tokio_rustls::TlsConnector::from(cfg)
                .connect(name, tcp)
                .await?;
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
            tokio::spawn(conn);
            send.send_request(req).await?
        } else {
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
            tokio::spawn(conn);
            send.send_request(req).await?
        };
        Ok::<_, BoxError>(resp)
    })
    .await
    .unwrap_or_else(|_| Err("timed out opening the stream".into()))
}

async fn sse_stream(
    t: Arc<Target>,
    cfg: Arc<rustls::ClientConfig>,
    headers: Arc<Vec<(String, String)>>,
    open_gate: Arc<Semaphore>,
    window: Arc<(AtomicU64, AtomicU64)>,
    opened: tokio::sync::mpsc::UnboundedSender<bool>,
    stop: tokio_util::sync::CancellationToken,
) -> StreamResult {
    let mut r = StreamResult::default();
    let permit = open_gate.acquire_owned().await.ok();
    // A connection that fails before any answer (a reset while connecting, say) is tried
    // again, twice at most; the retries are counted and reported, a third failure is final.
    let mut res = open_stream(&t, cfg.clone(), &headers).await;
    for _ in 0..2 {
        if res.is_ok() {
            break;
        }
        r.open_retries += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
        res = open_stream(&t, cfg.clone(), &headers).await;
    }
    drop(permit);
    let resp = match res {
        Ok(resp) => resp,
        Err(e) => {
            eprintln!("stream open failed: {e}");
            let _ = opened.send(false);
            return r;
        }
    };
    r.status = resp.status().as_u16();
    r.opened = resp.status() == http::StatusCode::OK;
    let _ = opened.send(r.opened);
    if !r.opened {
        return r;
    }
    let mut body = resp.into_body();
    let mut buf: Vec<u8> = Vec::new();
    let mut last_event: Option<Instant> = None;
    loop {
        let next = tokio::select! {
            _ = stop.cancelled() => return r,
            f = body.frame() => f,
        };
        let frame = match next {
            Some(Ok(f)) => f,
            _ => {
                // Ended before the window closed: counted as lost.
                let end = window.1.load(Ordering::Relaxed);
                if end == 0 || now_us() < end {
                    r.ended_early = true;
                }
                return r;
            }
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let recv = now_us();
        buf.extend_from_slice(&data);
        // Complete lines only; the rest waits for the next frame.
        let mut start = 0;
        while let Some(nl) = buf[start..].iter().position(|&b| b == b'\n') {
            let line = &buf[start..start + nl];
            start += nl + 1;
            if let Some(i) = find(line, b"\"t\":") {
                let digits: u64 = line[i + 4..]
                    .iter()
                    .take_while(|b| b.is_ascii_digit())
                    .fold(0, |a, &b| a * 10 + u64::from(b - b'0'));
                let (w0, w1) = (
                    window.0.load(Ordering::Relaxed),
                    window.1.load(Ordering::Relaxed),
                );
                if w0 != 0 && recv >= w0 && (w1 == 0 || recv < w1) {
                    r.events_in_window += 1;
                    r.lat
                        .push(recv.saturating_sub(digits).min(u64::from(u32::MAX)) as u32);
                    let now = Instant::now();
                    if let Some(prev) = last_event {
                        r.max_gap_us = r
                            .max_gap_us
                            .max(now.duration_since(prev).as_micros() as u64);
                    }
                    last_event = Some(now);
                }
            }
        }
        buf.drain(..start);
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

async fn sse(a: Args) {
    let t = Arc::new(parse_url(&a.target));
    let cfg = tls_config(a.ca.as_deref(), false);
    let headers = Arc::new(a.headers.clone());
    let gate = Arc::new(Semaphore::new(a.open_concurrency.max(1)));
    let window = Arc::new((AtomicU64::new(0), AtomicU64::new(0)));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let stop = tokio_util::sync::CancellationToken::new();
    let t0 = Instant::now();
    let mut tasks = Vec::with_capacity(a.streams);
    for _ in 0..a.streams {
        tasks.push(tokio::spawn(sse_stream(
            t.clone(),
            cfg.clone(),
            headers.clone(),
            gate.clone(),
            window.clone(),
            tx.clone(),
            stop.clone(),
        )));
    }
    drop(tx);
    let (mut ok, mut failed) = (0usize, 0usize);
    while ok + failed < a.streams {
        match rx.recv().await {
            Some(true) => ok += 1,
            Some(false) => failed += 1,
            None => break,
        }
    }
    let open_secs = t0.elapsed().as_secs_f64();
    // Let what queued up while the streams were being opened drain, then measure.
    tokio::time::sleep(Duration::from_secs_f64(a.settle)).await;
    println!("READY {ok} {failed}");
    let w0 = now_us();
    let ticks0 = own_ticks();
    window.0.store(w0, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs_f64(a.hold)).await;
    let w1 = now_us();
    let ticks1 = own_ticks();
    window.1.store(w1, Ordering::Relaxed);
    println!("DONE");
    stop.cancel();
    let mut lat: Vec<u32> = Vec::new();
    let (mut events, mut early, mut min_events, mut max_gap) = (0u64, 0usize, u64::MAX, 0u64);
    let mut gaps: Vec<u64> = Vec::new();
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        if let Ok(r) = task.await {
            results.push(r);
        }
    }
    let retries: u32 = results.iter().map(|r| r.open_retries).sum::<u32>();
    for r in &results {
        if !r.opened {
            continue;
        }
        events += r.events_in_window;
        min_events = min_events.min(r.events_in_window);
        early += usize::from(r.ended_early);
        max_gap = max_gap.max(r.max_gap_us);
        gaps.push(r.max_gap_us);
        lat.extend_from_slice(&r.lat);
    }
    if min_events == u64::MAX {
        min_events = 0;
    }
    lat.sort_unstable();
    gaps.sort_unstable();
    let secs = (w1 - w0) as f64 / 1e6;
    println!(
        "{{\"streams_ok\":{ok},\"streams_failed\":{failed},\"open_secs\":{open_secs:.2},\"window_secs\":{secs:.2},\
         \"events\":{events},\"events_per_s\":{:.0},\"min_events_per_stream\":{min_events},\"ended_early\":{early},\
         \"lat_us_p50\":{},\"lat_us_p90\":{},\"lat_us_p99\":{},\"lat_us_p999\":{},\"lat_us_max\":{},\
         \"max_gap_us_p99\":{},\"max_gap_us\":{max_gap},\"client_cpu_pct\":{:.0},\"open_retries\":{retries}}}",
        events as f64 / secs,
        pct(&lat, 50.0),
        pct(&lat, 90.0),
        pct(&lat, 99.0),
        pct(&lat, 99.9),
        lat.last().copied().unwrap_or(0),
        pct_u64(&gaps, 99.0),
        // CLK_TCK is 100 on Linux.
        (ticks1 - ticks0) as f64 / secs,
    );
}

fn pct_u64(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn handshake(a: Args) {
    let cfg = tls_config(a.ca.as_deref(), a.resume);
    let addr = a.target.replace("localhost", "127.0.0.1");
    let deadline = Instant::now() + Duration::from_secs_f64(a.secs);
    let full = Arc::new(AtomicU64::new(0));
    let resumed = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..a.concurrency.max(1) {
        let (cfg, addr) = (cfg.clone(), addr.clone());
        let (full, resumed, failed) = (full.clone(), resumed.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let r = async {
                    let tcp = TcpStream::connect(&addr).await?;
                    tcp.set_nodelay(true)?;
                    let name = ServerName::try_from("localhost")?;
                    let mut tls = tokio_rustls::TlsConnector::from(cfg.clone()).connect(name, tcp).await?;
                    tls.write_all(b"GET /bench-handshake HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n").await?;
                    let mut head = Vec::with_capacity(512);
                    // Read to the end (close_notify or EOF): the ticket comes with the answer.
                    let _ = tls.read_to_end(&mut head).await;
                    if !head.starts_with(b"HTTP/1.1 ") {
                        return Err("no HTTP answer".into());
                    }
                    let kind = tls.get_ref().1.handshake_kind();
                    Ok::<_, Box<dyn std::error::Error + Send + Sync>>(kind)
                }
                .await;
                match r {
                    Ok(Some(rustls::HandshakeKind::Resumed)) => resumed.fetch_add(1, Ordering::Relaxed),
                    Ok(_) => full.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let secs = t0.elapsed().as_secs_f64();
    let (f, r, e) = (
        full.load(Ordering::Relaxed),
        resumed.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
    );
    println!(
        "{{\"handshakes\":{},\"per_s\":{:.0},\"full\":{f},\"resumed\":{r},\"failed\":{e},\"secs\":{secs:.2}}}",
        f + r,
        (f + r) as f64 / secs
    );
}

fn main() {
    let a = parse_args();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    match a.mode.as_str() {
        "sse" => rt.block_on(sse(a)),
        "handshake" => rt.block_on(handshake(a)),
        _ => usage(),
    }
}
