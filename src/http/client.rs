//! The HTTPS client the proxy uses for its own calls (JWKS, token introspection, alert
//! webhooks): rustls with an explicit trust store, HTTP/1.1 and h2, https only.

use std::sync::Arc;
use std::time::Duration;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

/// A pooled HTTPS client sending bodies of type `B`.
pub type HttpsClient<B> = Client<HttpsConnector<HttpConnector>, B>;

/// A client trusting exactly `roots`, with `connect_timeout` and at most `max_idle` idle
/// connections per host (these calls are rare; a large pool would only hold sockets open).
pub fn https_client<B>(
    roots: rustls::RootCertStore,
    connect_timeout: Duration,
    max_idle: usize,
) -> Result<HttpsClient<B>, rustls::Error>
where
    B: http_body::Body + Send,
    B::Data: Send,
{
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(max_idle)
        .build(connector))
}
