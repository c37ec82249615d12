//! The HTTP layer: per-connection server settings, the HTTPS client, header handling and POST
//! media types shared by the request pipeline.

pub mod client;
pub mod headers;
pub mod media;
pub mod server;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;

/// Error type carried by relayed bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Body type of every response the proxy sends and every request it forwards.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// A body holding `bytes` in full.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    use http_body_util::BodyExt;
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An empty body.
pub fn empty() -> Body {
    use http_body_util::BodyExt;
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}
