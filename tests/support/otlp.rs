//! A small OTLP trace receiver on a loopback port, the far end of `[telemetry.otlp]`: OTLP/HTTP
//! (`POST /v1/traces`, protobuf bodies decoded with prost) or gRPC (the generated tonic
//! `TraceService`, served by hyper). It keeps every span it receives, with its resource, and
//! the headers of every export request.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// One span as received, with the `service.name` of its resource.
#[derive(Debug, Clone)]
pub struct Received {
    pub service_name: Option<String>,
    pub resource: Vec<KeyValue>,
    pub scope: String,
    pub span: Span,
}

impl Received {
    pub fn name(&self) -> &str {
        &self.span.name
    }

    /// A string, integer or boolean attribute as text.
    pub fn attr(&self, key: &str) -> Option<String> {
        attr(&self.span.attributes, key)
    }
}

/// The value of attribute `key` among `attrs`, as text.
pub fn attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    let v = attrs.iter().find(|kv| kv.key == key)?.value.as_ref()?;
    match v.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        any_value::Value::BoolValue(b) => Some(b.to_string()),
        any_value::Value::DoubleValue(d) => Some(d.to_string()),
        other => Some(format!("{other:?}")),
    }
}

/// What the collector answers an export instead of accepting it (see [`Collector::script`]).
#[derive(Debug, Clone)]
pub enum Answer {
    /// OTLP/HTTP: this status, spans not taken.
    Status(StatusCode),
    /// OTLP/gRPC: this status, spans not taken.
    Grpc(tonic::Code),
    /// Takes the spans and answers `partial_success` with this many rejected and a message.
    Partial(i64, &'static str),
}

#[derive(Default)]
struct Seen {
    spans: Mutex<Vec<Received>>,
    headers: Mutex<Vec<HeaderMap>>,
    arrived: tokio::sync::Notify,
    /// Answers for the next exports, in order; then every export is accepted.
    script: Mutex<std::collections::VecDeque<Answer>>,
    /// Export requests received (accepted or not).
    attempts: std::sync::atomic::AtomicUsize,
}

impl Seen {
    /// Counts an export and returns the scripted answer for it, if any.
    fn next_answer(&self) -> Option<Answer> {
        self.attempts
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.script.lock().ok()?.pop_front()
    }

    fn take(&self, headers: HeaderMap, req: ExportTraceServiceRequest) {
        let mut got = Vec::new();
        for rs in req.resource_spans {
            let resource = rs.resource.map(|r| r.attributes).unwrap_or_default();
            let service_name = attr(&resource, "service.name");
            for ss in rs.scope_spans {
                let scope = ss.scope.map(|s| s.name).unwrap_or_default();
                for span in ss.spans {
                    got.push(Received {
                        service_name: service_name.clone(),
                        resource: resource.clone(),
                        scope: scope.clone(),
                        span,
                    });
                }
            }
        }
        if let Ok(mut h) = self.headers.lock() {
            h.push(headers);
        }
        if let Ok(mut s) = self.spans.lock() {
            s.extend(got);
        }
        self.arrived.notify_waiters();
    }
}

/// A running receiver; stopped by [`Collector::stop`] or when dropped.
pub struct Collector {
    pub addr: SocketAddr,
    seen: Arc<Seen>,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Collector {
    /// OTLP/HTTP with protobuf bodies on 127.0.0.1:0.
    pub async fn http() -> Collector {
        Collector::serve(|seen| {
            hyper::service::service_fn(move |req| {
                let seen = seen.clone();
                async move { Ok::<_, Infallible>(http_export(seen, req).await) }
            })
        })
        .await
    }

    /// OTLP/gRPC on 127.0.0.1:0.
    pub async fn grpc() -> Collector {
        Collector::serve(|seen| {
            hyper_util::service::TowerToHyperService::new(TraceServiceServer::new(Grpc(seen)))
        })
        .await
    }

    async fn serve<S, B>(make: impl FnOnce(Arc<Seen>) -> S) -> Collector
    where
        S: hyper::service::Service<Request<Incoming>, Response = Response<B>>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind collector");
        let addr = listener.local_addr().expect("collector addr");
        let seen = Arc::new(Seen::default());
        let svc = make(seen.clone());
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let (stop2, tasks2) = (stop.clone(), tasks.clone());
        tasks.spawn(async move {
            loop {
                let tcp = tokio::select! {
                    () = stop2.cancelled() => break,
                    accepted = listener.accept() => match accepted {
                        Ok((tcp, _)) => tcp,
                        Err(_) => continue,
                    },
                };
                let svc = svc.clone();
                let stop = stop2.clone();
                tasks2.spawn(async move {
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    let conn = builder.serve_connection(TokioIo::new(tcp), svc);
                    tokio::select! {
                        _ = conn => {}
                        () = stop.cancelled() => {}
                    }
                });
            }
        });
        Collector {
            addr,
            seen,
            stop,
            tasks,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Makes the next exports get these answers, in order (then exports are accepted again).
    pub fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        if let Ok(mut s) = self.seen.script.lock() {
            s.extend(answers);
        }
    }

    /// Export requests received so far, accepted or not.
    pub fn attempts(&self) -> usize {
        self.seen.attempts.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Received> {
        self.seen
            .spans
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default()
    }

    /// The headers (gRPC: metadata) of every export request so far.
    pub fn headers(&self) -> Vec<HeaderMap> {
        self.seen
            .headers
            .lock()
            .map(|h| h.clone())
            .unwrap_or_default()
    }

    /// Waits up to `within` until at least `n` spans have arrived; returns them all.
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let arrived = self.seen.arrived.notified();
            let spans = self.spans();
            if spans.len() >= n {
                return spans;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                panic!(
                    "expected {n} spans within {within:?}, got {}: {:#?}",
                    spans.len(),
                    spans.iter().map(Received::name).collect::<Vec<_>>()
                );
            }
        }
    }

    /// Stops accepting and closes every connection.
    pub async fn stop(self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// Answers one OTLP/HTTP request: protobuf `POST /v1/traces` only.
async fn http_export(seen: Arc<Seen>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let answer = |status: StatusCode, body: Vec<u8>| {
        Response::builder()
            .status(status)
            .header("content-type", "application/x-protobuf")
            .body(Full::new(Bytes::from(body)))
            .expect("response")
    };
    if req.method() != http::Method::POST || req.uri().path() != "/v1/traces" {
        return answer(StatusCode::NOT_FOUND, Vec::new());
    }
    if req
        .headers()
        .get("content-type")
        .is_none_or(|v| v != "application/x-protobuf")
    {
        return answer(StatusCode::UNSUPPORTED_MEDIA_TYPE, Vec::new());
    }
    let headers = req.headers().clone();
    let Ok(body) = req.into_body().collect().await else {
        return answer(StatusCode::BAD_REQUEST, Vec::new());
    };
    match ExportTraceServiceRequest::decode(body.to_bytes()) {
        Ok(r) => match seen.next_answer() {
            Some(Answer::Status(status)) => answer(status, b"scripted refusal".to_vec()),
            Some(Answer::Partial(rejected, message)) => {
                seen.take(headers, r);
                answer(StatusCode::OK, partial(rejected, message).encode_to_vec())
            }
            Some(Answer::Grpc(_)) | None => {
                seen.take(headers, r);
                answer(
                    StatusCode::OK,
                    ExportTraceServiceResponse::default().encode_to_vec(),
                )
            }
        },
        Err(_) => answer(StatusCode::BAD_REQUEST, Vec::new()),
    }
}

struct Grpc(Arc<Seen>);

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let headers = request.metadata().clone().into_headers();
        match self.0.next_answer() {
            Some(Answer::Grpc(code)) => Err(tonic::Status::new(code, "scripted refusal")),
            Some(Answer::Partial(rejected, message)) => {
                self.0.take(headers, request.into_inner());
                Ok(tonic::Response::new(partial(rejected, message)))
            }
            Some(Answer::Status(_)) | None => {
                self.0.take(headers, request.into_inner());
                Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
            }
        }
    }
}

fn partial(rejected: i64, message: &str) -> ExportTraceServiceResponse {
    ExportTraceServiceResponse {
        partial_success: Some(
            opentelemetry_proto::tonic::collector::trace::v1::ExportTracePartialSuccess {
                rejected_spans: rejected,
                error_message: message.to_owned(),
            },
        ),
    }
}
