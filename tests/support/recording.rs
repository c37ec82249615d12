//! A backend that records exactly what it received — method, URI and headers, sent the moment a
//! request arrives, before any body — and answers every request the same way.

use http::{HeaderMap, Method, Response, Uri};
use tokio::sync::mpsc;

use super::raw::{self, BoxBody, RawBackend};

/// One request as the backend received it.
#[derive(Debug)]
pub struct Received {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
}

/// Serves `answer()` to every request on 127.0.0.1:0 and records each request on the channel.
pub async fn serve<F>(answer: F) -> (RawBackend, mpsc::UnboundedReceiver<Received>)
where
    F: Fn() -> Response<BoxBody> + Clone + Send + Sync + 'static,
{
    let (tx, seen) = mpsc::unbounded_channel();
    let backend = raw::serve(move |req: http::Request<hyper::body::Incoming>| {
        let tx = tx.clone();
        let answer = answer.clone();
        async move {
            let _ = tx.send(Received {
                method: req.method().clone(),
                uri: req.uri().clone(),
                headers: req.headers().clone(),
            });
            answer()
        }
    })
    .await;
    (backend, seen)
}

/// [`serve`] answering `200 ok` (text, no content type).
pub async fn ok() -> (RawBackend, mpsc::UnboundedReceiver<Received>) {
    serve(|| Response::new(raw::full("ok"))).await
}

/// [`serve`] answering an empty JSON-RPC result for id 1 as `application/json`.
pub async fn json_result() -> (RawBackend, mpsc::UnboundedReceiver<Received>) {
    serve(|| {
        Response::builder()
            .header("content-type", "application/json")
            .body(raw::full(RESULT))
            .unwrap()
    })
    .await
}

/// An empty JSON-RPC result for id 1.
pub const RESULT: &str = r#"{"jsonrpc":"2.0","id":1,"result":{}}"#;
