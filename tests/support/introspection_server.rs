//! A local HTTPS RFC 7662 introspection endpoint for tests: on 127.0.0.1:0 with a certificate
//! from its own test CA; checks the proxy's client credentials (`client_secret_basic` or
//! `client_secret_post`), answers per token from a settable table (unknown tokens are
//! inactive), counts requests, and can answer slowly, with another status or body, or go down.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

/// How the endpoint expects the client to authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    Basic,
    Post,
}

/// One request as the endpoint saw it.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    pub method: String,
    pub content_type: Option<String>,
    pub authorization: Option<String>,
    pub form: Vec<(String, String)>,
}

impl Seen {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

struct State {
    client_id: String,
    client_secret: String,
    auth: ClientAuth,
    answers: Mutex<HashMap<String, Value>>,
    body_override: Mutex<Option<String>>,
    status: AtomicU16,
    delay_ms: AtomicU64,
    down: AtomicBool,
    hits: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
}

/// The running endpoint. Dropping it stops it.
pub struct IntrospectionServer {
    pub addr: SocketAddr,
    /// PEM file of the CA that issued the server certificate.
    pub ca_path: PathBuf,
    _dir: tempfile::TempDir,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl IntrospectionServer {
    /// Starts serving at `https://127.0.0.1:PORT/oauth2/introspect`, accepting only
    /// `client_id`/`client_secret` sent with `auth`.
    pub async fn start(client_id: &str, client_secret: &str, auth: ClientAuth) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca_path = dir.path().join("as-ca.pem");
        let acceptor = super::https::acceptor("introspection test CA", &ca_path, &[b"http/1.1"]);

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(State {
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
            auth,
            answers: Mutex::new(HashMap::new()),
            body_override: Mutex::new(None),
            status: AtomicU16::new(0),
            delay_ms: AtomicU64::new(0),
            down: AtomicBool::new(false),
            hits: AtomicUsize::new(0),
            seen: Mutex::new(Vec::new()),
        });
        let st = state.clone();
        let task = tokio::spawn(async move {
            // Connections live in this set, so aborting the accept task closes them too.
            let mut conns = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((tcp, _)) = accepted else { continue };
                        if st.down.load(Ordering::SeqCst) {
                            drop(tcp);
                            continue;
                        }
                        let acceptor = acceptor.clone();
                        let st = st.clone();
                        conns.spawn(async move {
                            let Ok(tls) = acceptor.accept(tcp).await else { return };
                            let svc = service_fn(move |req| handle(st.clone(), req));
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(tls), svc)
                                .await;
                        });
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        IntrospectionServer {
            addr,
            ca_path,
            _dir: dir,
            state,
            task,
        }
    }

    /// The endpoint URL.
    pub fn url(&self) -> http::Uri {
        format!("https://127.0.0.1:{}/oauth2/introspect", self.addr.port())
            .parse()
            .unwrap()
    }

    /// Answers `answer` for `token` from now on.
    pub fn set_answer(&self, token: &str, answer: Value) {
        self.state
            .answers
            .lock()
            .unwrap()
            .insert(token.to_owned(), answer);
    }

    /// Answers this raw body (status 200 unless set otherwise) for every token, or the table
    /// again with `None`.
    pub fn set_body(&self, body: Option<String>) {
        *self.state.body_override.lock().unwrap() = body;
    }

    /// Answers `status` with an error body for every authenticated request; 0 restores normal
    /// answers.
    pub fn set_status(&self, status: u16) {
        self.state.status.store(status, Ordering::SeqCst);
    }

    /// Waits this long before answering each request.
    pub fn set_delay(&self, delay: Duration) {
        self.state
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Down: new connections are closed at once and requests on open connections are dropped
    /// without an answer. `false` brings it back.
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    /// Requests received so far (including refused ones).
    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    /// Every request received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }
}

impl Drop for IntrospectionServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Resp = http::Response<Full<Bytes>>;

fn json_response(status: u16, body: String) -> Resp {
    http::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("cache-control", "no-store")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("endpoint down")
    }
}

impl std::error::Error for Dropped {}

async fn handle(
    st: Arc<State>,
    req: http::Request<hyper::body::Incoming>,
) -> Result<Resp, Dropped> {
    st.hits.fetch_add(1, Ordering::SeqCst);
    let header = |name: http::header::HeaderName| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let mut seen = Seen {
        method: req.method().to_string(),
        content_type: header(http::header::CONTENT_TYPE),
        authorization: header(http::header::AUTHORIZATION),
        form: Vec::new(),
    };
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    seen.form = parse_form(&String::from_utf8_lossy(&body));
    st.seen.lock().unwrap().push(seen.clone());

    let delay = st.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    if st.down.load(Ordering::SeqCst) {
        return Err(Dropped);
    }
    if seen.method != "POST"
        || seen.content_type.as_deref() != Some("application/x-www-form-urlencoded")
    {
        return Ok(json_response(
            400,
            json!({"error": "invalid_request"}).to_string(),
        ));
    }
    if !authenticated(&st, &seen) {
        let mut resp = json_response(401, json!({"error": "invalid_client"}).to_string());
        resp.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Basic realm=\"introspection\""),
        );
        return Ok(resp);
    }
    let status = st.status.load(Ordering::SeqCst);
    if status != 0 && status != 200 {
        return Ok(json_response(
            status,
            json!({"error": "server_error"}).to_string(),
        ));
    }
    if let Some(body) = st.body_override.lock().unwrap().clone() {
        return Ok(json_response(200, body));
    }
    let answer = seen
        .field("token")
        .and_then(|t| st.answers.lock().unwrap().get(t).cloned())
        .unwrap_or_else(|| json!({"active": false}));
    Ok(json_response(200, answer.to_string()))
}

fn authenticated(st: &State, seen: &Seen) -> bool {
    match st.auth {
        ClientAuth::Basic => {
            if seen.field("client_secret").is_some() {
                return false; // RFC 6749 §2.3: one method only.
            }
            let Some(b64) = seen
                .authorization
                .as_deref()
                .and_then(|a| a.strip_prefix("Basic "))
            else {
                return false;
            };
            let Ok(decoded) = STANDARD.decode(b64) else {
                return false;
            };
            let decoded = String::from_utf8_lossy(&decoded).into_owned();
            let Some((id, secret)) = decoded.split_once(':') else {
                return false;
            };
            form_decode(id) == st.client_id && form_decode(secret) == st.client_secret
        }
        ClientAuth::Post => {
            seen.authorization.is_none()
                && seen.field("client_id") == Some(st.client_id.as_str())
                && seen.field("client_secret") == Some(st.client_secret.as_str())
        }
    }
}

fn parse_form(body: &str) -> Vec<(String, String)> {
    body.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (form_decode(k), form_decode(v))
        })
        .collect()
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte.
pub fn form_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
