//! A local HTTPS JWKS endpoint for tests: serves a settable document on 127.0.0.1:0 with a
//! certificate from its own test CA, counts requests, and can answer slowly, fail or stop.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

struct State {
    body: Mutex<String>,
    hits: AtomicUsize,
    status: AtomicU16,
    delay_ms: AtomicU64,
}

/// The running endpoint. Dropping it stops it.
pub struct JwksServer {
    pub addr: SocketAddr,
    /// PEM file of the CA that issued the server certificate.
    pub ca_path: PathBuf,
    _dir: tempfile::TempDir,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    /// Starts serving `jwks` at `https://127.0.0.1:PORT/jwks.json`.
    pub async fn start(jwks: String) -> JwksServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca_path = dir.path().join("jwks-ca.pem");
        let acceptor = super::https::acceptor("jwks test CA", &ca_path, &[b"http/1.1"]);

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(State {
            body: Mutex::new(jwks),
            hits: AtomicUsize::new(0),
            status: AtomicU16::new(200),
            delay_ms: AtomicU64::new(0),
        });
        let st = state.clone();
        let task = tokio::spawn(async move {
            // Connections live in this set, so aborting the accept task closes them too.
            let mut conns = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((tcp, _)) = accepted else { continue };
                        let acceptor = acceptor.clone();
                        let st = st.clone();
                        conns.spawn(async move {
                            let Ok(tls) = acceptor.accept(tcp).await else { return };
                            let svc = service_fn(move |_req: http::Request<hyper::body::Incoming>| {
                                let st = st.clone();
                                async move {
                                    st.hits.fetch_add(1, Ordering::SeqCst);
                                    let delay = st.delay_ms.load(Ordering::SeqCst);
                                    if delay > 0 {
                                        tokio::time::sleep(Duration::from_millis(delay)).await;
                                    }
                                    let status = st.status.load(Ordering::SeqCst);
                                    let body = if status == 200 {
                                        st.body.lock().unwrap().clone()
                                    } else {
                                        String::new()
                                    };
                                    Ok::<_, Infallible>(
                                        http::Response::builder()
                                            .status(status)
                                            .header("content-type", "application/jwk-set+json")
                                            .body(Full::new(Bytes::from(body)))
                                            .unwrap(),
                                    )
                                }
                            });
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(tls), svc)
                                .await;
                        });
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        JwksServer {
            addr,
            ca_path,
            _dir: dir,
            state,
            task,
        }
    }

    /// The JWKS URL.
    pub fn url(&self) -> http::Uri {
        format!("https://127.0.0.1:{}/jwks.json", self.addr.port())
            .parse()
            .unwrap()
    }

    /// Replaces the served document.
    pub fn set_jwks(&self, jwks: String) {
        *self.state.body.lock().unwrap() = jwks;
    }

    /// Requests answered so far.
    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    /// Answers with `status` (and an empty body unless 200) from now on.
    pub fn set_status(&self, status: u16) {
        self.state.status.store(status, Ordering::SeqCst);
    }

    /// Waits this long before answering each request.
    pub fn set_delay(&self, delay: Duration) {
        self.state
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Stops listening and closes every connection (the identity provider goes down).
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
