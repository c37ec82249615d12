//! Phase `admit`: whether this proxy takes the request at all, before anyone is asked who
//! they are. Host (DNS rebinding, a `Host` that disagrees with the authority), the OAuth
//! metadata documents clients fetch before they have a token, the route, Origin (and CORS
//! preflights, answered here), the method and the declared body size.

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Method, Response};

use super::ctx::RequestCtx;
use super::error::ProxyError;
use super::gateway::{Gateway, RouteState};
use crate::auth::bearer;
use crate::auth::origin::{self, OriginCheck};
use crate::http::Body;

/// What `admit` decided.
pub(crate) enum Admission<'g> {
    /// Go on with this route.
    Route(&'g RouteState),
    /// The proxy answers itself (metadata document, CORS preflight).
    Answer(Response<Body>),
}

/// Runs the admission checks, in order.
pub(crate) fn admit<'g>(
    gw: &'g Gateway,
    ctx: &mut RequestCtx<'_>,
    req: &Parts,
) -> Result<Admission<'g>, ProxyError> {
    let cfg = &gw.config;
    // One host, named consistently (a `Host` that disagrees with `:authority` or an
    // absolute-form target would let the backend see another host than the one checked), and
    // one this proxy serves (anything else is DNS rebinding or a misrouted client).
    let host = origin::request_host(&req.uri, &req.headers).inspect_err(|e| {
        tracing::info!(request_id = %ctx.request_id(), reason = %e, "refused: Host");
    })?;
    if !origin::host_name_allowed(&cfg.listener.allowed_hosts, host) {
        tracing::info!(request_id = %ctx.request_id(), "refused: Host not in listener.allowed_hosts");
        return Err(ProxyError::Forbidden("host not allowed"));
    }
    // Only the validated value is forwarded (as `X-Forwarded-Host`).
    ctx.forwarded_host = HeaderValue::from_str(host).ok();

    if let Some(suffix) = req.uri.path().strip_prefix(bearer::PRM_PATH) {
        return gw.metadata(suffix, &req.method).map(Admission::Answer);
    }

    let route = gw.route(req.uri.path()).ok_or(ProxyError::NotFound)?;
    ctx.log.set_route(route.path.clone(), route.metrics.clone());

    let transport = route.config.transport;
    match route.config.origins.check(&req.headers) {
        OriginCheck::Absent => {}
        OriginCheck::Allowed(o) => ctx.cors = Some(o),
        OriginCheck::Refused(why) => {
            tracing::info!(request_id = %ctx.request_id(), reason = why, "refused: Origin");
            return Err(ProxyError::Forbidden("origin not allowed"));
        }
    }
    if req.method == Method::OPTIONS
        && req
            .headers
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
        && let Some(o) = ctx.cors.take()
    {
        let mut resp = Response::new(crate::http::empty());
        *resp.status_mut() = http::StatusCode::NO_CONTENT;
        *resp.headers_mut() = origin::preflight_headers(o, &req.headers, transport.allow_header());
        return Ok(Admission::Answer(resp));
    }

    if !transport.allows(&req.method) {
        return Err(ProxyError::MethodNotAllowed {
            allow: transport.allow_header(),
        });
    }
    // Declared lengths are refused up front; streamed bodies are cut where they are read.
    let limit = cfg.http.max_request_body_bytes;
    if let Some(len) = req.headers.get(header::CONTENT_LENGTH) {
        let len: u64 = len
            .to_str()
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(ProxyError::BadRequest("invalid Content-Length"))?;
        if len > limit {
            return Err(ProxyError::BodyTooLarge { limit });
        }
    }
    Ok(Admission::Route(route))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::ConnInfo;

    /// A gateway for one streamable route `/mcp` and one legacy route `/sse`, with the
    /// test certificate written to a temporary directory.
    async fn gateway() -> (tempfile::TempDir, Gateway) {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = crate::demo::pki::DevCa::new("admit test CA").expect("ca");
        let server = ca.issue_server(&["localhost"]).expect("cert");
        std::fs::write(dir.path().join("s.pem"), &server.cert_pem).expect("write");
        std::fs::write(dir.path().join("s.key"), &server.key_pem).expect("write");
        let text = r#"
[listener]
bind = "127.0.0.1:0"
public_url = "https://localhost:8443"
[listener.tls]
cert = "s.pem"
key = "s.key"
[http]
max_request_body_bytes = 100
[[routes]]
path = "/mcp"
upstream = "http://127.0.0.1:9/mcp"
allowed_origins = ["https://app.example.com"]
[[routes]]
path = "/sse"
transport = "sse"
upstream = "http://127.0.0.1:9/sse"
"#;
        let cfg =
            crate::config::parse(text, std::path::Path::new("t.toml"), dir.path()).expect("config");
        let prepared = crate::prepare::prepare(cfg, crate::prepare::Purpose::Check)
            .await
            .expect("prepare");
        (dir, prepared.gateway)
    }

    fn conn() -> ConnInfo {
        ConnInfo {
            peer: "127.0.0.1:1".parse().unwrap(),
            client_cert: None,
            write_stalled: Default::default(),
        }
    }

    /// Runs `admit` on a request built by `f`; `Ok(Some(path))` for a route, `Ok(None)` for an
    /// answer the proxy gives itself.
    async fn run(
        f: impl FnOnce(http::request::Builder) -> http::request::Builder,
    ) -> Result<Option<String>, ProxyError> {
        let (_dir, gw) = gateway().await;
        let conn = conn();
        let req = f(http::Request::builder().header("host", "localhost"))
            .body(())
            .unwrap();
        let (parts, ()) = req.into_parts();
        let mut ctx = RequestCtx::for_test(&parts, &conn);
        match admit(&gw, &mut ctx, &parts)? {
            Admission::Route(r) => Ok(Some(r.path.to_string())),
            Admission::Answer(_) => Ok(None),
        }
    }

    #[tokio::test]
    async fn admits_known_routes_and_methods() {
        let r = run(|b| b.method("POST").uri("/mcp")).await;
        assert_eq!(r.unwrap().as_deref(), Some("/mcp"));
        let r = run(|b| b.method("DELETE").uri("/mcp")).await;
        assert_eq!(r.unwrap().as_deref(), Some("/mcp"));
    }

    #[tokio::test]
    async fn refuses_in_order_host_route_origin_method_size() {
        let e = run(|b| b.method("POST").uri("https://evil.example/mcp")).await;
        assert!(matches!(e, Err(ProxyError::Host(_))), "{e:?}");
        let e = run(|b| b.method("POST").uri("/nope")).await;
        assert!(matches!(e, Err(ProxyError::NotFound)), "{e:?}");
        let e = run(|b| {
            b.method("POST")
                .uri("/mcp")
                .header("origin", "https://evil.example")
        })
        .await;
        assert!(
            matches!(e, Err(ProxyError::Forbidden("origin not allowed"))),
            "{e:?}"
        );
        let e = run(|b| b.method("DELETE").uri("/sse")).await;
        assert!(
            matches!(e, Err(ProxyError::MethodNotAllowed { allow: "GET, POST" })),
            "{e:?}"
        );
        let e = run(|b| b.method("POST").uri("/mcp").header("content-length", "101")).await;
        assert!(
            matches!(e, Err(ProxyError::BodyTooLarge { limit: 100 })),
            "{e:?}"
        );
        let e = run(|b| b.method("POST").uri("/mcp").header("content-length", "x")).await;
        assert!(matches!(e, Err(ProxyError::BadRequest(_))), "{e:?}");
    }

    #[tokio::test]
    async fn answers_preflights_and_metadata_itself() {
        let r = run(|b| {
            b.method("OPTIONS")
                .uri("/mcp")
                .header("origin", "https://app.example.com")
                .header("access-control-request-method", "POST")
        })
        .await;
        assert_eq!(r.unwrap(), None);
        // No token-protected route: the metadata document is not found.
        let e = run(|b| b.method("GET").uri("/.well-known/oauth-protected-resource")).await;
        assert!(matches!(e, Err(ProxyError::NotFound)), "{e:?}");
    }
}
