//! The HTTPS client the proxy uses for its own calls (JWKS, token introspection, alert
//! webhooks): rustls with an explicit trust store, HTTP/1.1 and h2, https only.

use std::sync::Arc;
use std::time::Duration;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

/// The TLS settings of the proxy's own calls: trusting exactly `roots`, rustls' safe defaults,
/// no client certificate.
pub fn tls_config(roots: rustls::RootCertStore) -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The TCP connector under them: no Nagle delay, `connect_timeout`, any URL scheme (TLS is
/// the wrapping connector's business).
pub fn tcp_connector(connect_timeout: Duration) -> HttpConnector {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    http
}

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
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_config(roots)?)
        .https_only()
        .enable_http1()
        .enable_http2()
        .wrap_connector(tcp_connector(connect_timeout));
    Ok(Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(max_idle)
        .build(connector))
}
