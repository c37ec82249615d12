//! Browser-facing checks: `Origin` (a web page's origin; MCP servers must refuse foreign ones)
//! and `Host` / `:authority` (DNS rebinding: a hostile name resolving to this proxy), plus the
//! CORS preflight answer for allowed origins.
//!
//! Rules:
//! - no `Origin` header: a server-side client (SDKs, hosted connectors); allowed unless the
//!   route requires an Origin;
//! - exactly one `Origin` that matches the route's list (scheme, host, port; default ports
//!   normalised; case-insensitive): allowed;
//! - `null` (sandboxed frames, file: pages) only if `"null"` is listed;
//! - several `Origin` headers, or a value that does not parse, or anything else: refused.

use http::header::{self, HeaderMap, HeaderValue};

/// A serialized origin, normalised for comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    scheme: String,
    host: String,
    port: u16,
}

impl Origin {
    /// Parses `scheme://host[:port]` (no path, query or user info), as browsers send it.
    pub fn parse(s: &str) -> Option<Origin> {
        let (scheme, rest) = s.split_once("://")?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "https" => 443,
            "http" => 80,
            _ => return None,
        };
        if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
            return None;
        }
        let (host, port) = split_host_port(rest)?;
        let port = match port {
            Some(p) => p.parse().ok()?,
            None => default_port,
        };
        if host.is_empty() {
            return None;
        }
        Some(Origin {
            scheme,
            host: host.to_ascii_lowercase(),
            port,
        })
    }
}

/// Splits `host[:port]`, keeping IPv6 brackets as part of the host.
fn split_host_port(s: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let end = rest.find(']')?;
        let host = &s[..end + 2];
        return match &rest[end + 1..] {
            "" => Some((host, None)),
            p => Some((host, Some(p.strip_prefix(':')?))),
        };
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => Some((h, Some(p))),
        Some(_) => None,
        None => Some((s, None)),
    }
}

/// A route's Origin policy.
#[derive(Debug, Clone, Default)]
pub struct OriginPolicy {
    /// Origins allowed to call the route.
    pub allowed: Vec<Origin>,
    /// Whether `Origin: null` is allowed.
    pub allow_null: bool,
    /// Whether requests without `Origin` are refused.
    pub require_origin: bool,
    /// Whether a validated `Origin` is passed to the backend. Off by default: the proxy is the
    /// Origin check, and SDK backends bound to loopback refuse any foreign `Origin` (403),
    /// which would lock out every browser client the route allows.
    pub forward: bool,
}

/// What the Origin check decided.
#[derive(Debug, PartialEq, Eq)]
pub enum OriginCheck {
    /// No Origin header, and none is required.
    Absent,
    /// An allowed origin; echo it in `Access-Control-Allow-Origin`.
    Allowed(HeaderValue),
    /// Refused, with the reason for the log (never echoed to the client).
    Refused(&'static str),
}

impl OriginPolicy {
    /// Applies the policy to a request's headers.
    pub fn check(&self, headers: &HeaderMap) -> OriginCheck {
        let mut values = headers.get_all(header::ORIGIN).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return if headers.contains_key(header::ORIGIN) {
                OriginCheck::Refused("more than one Origin header")
            } else if self.require_origin {
                OriginCheck::Refused("Origin header required")
            } else {
                OriginCheck::Absent
            };
        };
        let Ok(text) = value.to_str() else {
            return OriginCheck::Refused("Origin is not ASCII");
        };
        if text == "null" {
            return if self.allow_null {
                OriginCheck::Allowed(value.clone())
            } else {
                OriginCheck::Refused("Origin null not allowed")
            };
        }
        match Origin::parse(text) {
            Some(o) if self.allowed.contains(&o) => OriginCheck::Allowed(value.clone()),
            Some(_) => OriginCheck::Refused("Origin not allowed"),
            None => OriginCheck::Refused("Origin malformed"),
        }
    }
}

/// Why the host a request names cannot be trusted (answered 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// Neither `:authority` / an absolute-form target nor a `Host` header.
    #[error("the request names no host")]
    Missing,
    /// More than one `Host` header.
    #[error("more than one Host header")]
    Several,
    /// `Host` names another host than the request target (`:authority` or absolute form).
    #[error("the Host header disagrees with the request's authority")]
    Disagrees,
    /// Not ASCII, or not `host[:port]`.
    #[error("malformed Host header")]
    Malformed,
}

/// The one host the request names: `:authority` on HTTP/2 or the absolute-form target on
/// HTTP/1.1, which a `Host` header, when also present, must agree with (RFC 9113 §8.3.1,
/// RFC 9112 §3.2.2); else the single `Host` header. This value, and nothing else the client
/// sent, is what is checked and what the backend is told in `X-Forwarded-Host`.
pub fn request_host<'a>(uri: &'a http::Uri, headers: &'a HeaderMap) -> Result<&'a str, HostError> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = match (hosts.next(), hosts.next()) {
        (_, Some(_)) => return Err(HostError::Several),
        (Some(h), None) => Some(h.to_str().map_err(|_| HostError::Malformed)?),
        (None, None) => None,
    };
    let authority = match (uri.authority(), host) {
        (Some(a), Some(h)) => {
            if normalised(a.as_str()) != normalised(h) || normalised(h).is_none() {
                return Err(HostError::Disagrees);
            }
            a.as_str()
        }
        (Some(a), None) => a.as_str(),
        (None, Some(h)) => h,
        (None, None) => return Err(HostError::Missing),
    };
    if normalised(authority).is_none() {
        return Err(HostError::Malformed);
    }
    Ok(authority)
}

/// `(host, port)` for comparison: lower-case, no trailing dot, the https default port filled in.
fn normalised(authority: &str) -> Option<(String, u16)> {
    let (host, port) = split_host_port(authority)?;
    let port = match port {
        None => 443,
        Some(p) => p.parse().ok()?,
    };
    if host.is_empty() || host.contains('@') {
        return None;
    }
    Some((host.trim_end_matches('.').to_ascii_lowercase(), port))
}

/// Whether the host of `authority` (as [`request_host`] returned it) is one of `allowed`
/// (lower-case host names or IP literals; the port is not compared: rebinding changes the
/// name, and the proxy may sit behind a port mapping).
pub fn host_name_allowed(allowed: &[String], authority: &str) -> bool {
    normalised(authority).is_some_and(|(host, _)| allowed.contains(&host))
}

/// Request headers a browser may send cross-origin to an MCP endpoint.
const ALLOW_HEADERS: &str = "authorization, content-type, accept, last-event-id, mcp-session-id, \
     mcp-protocol-version, mcp-method, mcp-name";
/// Response headers browser code must be able to read.
const EXPOSE_HEADERS: &str = "mcp-session-id, mcp-protocol-version, www-authenticate";

/// Adds the CORS headers for an allowed origin to a response.
pub fn add_cors_headers(headers: &mut HeaderMap, origin: HeaderValue) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSE_HEADERS),
    );
    headers.append(header::VARY, HeaderValue::from_static("origin"));
}

/// Headers of the answer to a CORS preflight from an allowed origin. `Mcp-Param-*` names are
/// open-ended, so requested ones are echoed when they have that prefix.
pub fn preflight_headers(
    origin: HeaderValue,
    request: &HeaderMap,
    methods: &'static str,
) -> HeaderMap {
    let mut h = HeaderMap::new();
    add_cors_headers(&mut h, origin);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(methods),
    );
    let mut allow = String::from(ALLOW_HEADERS);
    if let Some(req) = request
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .and_then(|v| v.to_str().ok())
    {
        for name in req.split(',').map(|n| n.trim().to_ascii_lowercase()) {
            if name.starts_with("mcp-param-")
                && name.len() <= 64
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                allow.push_str(", ");
                allow.push_str(&name);
            }
        }
    }
    if let Ok(v) = HeaderValue::from_str(&allow) {
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
    }
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether the request's host (see [`request_host`]) is one of `allowed`.
    fn host_allowed(allowed: &[String], uri: &http::Uri, headers: &HeaderMap) -> bool {
        request_host(uri, headers).is_ok_and(|a| host_name_allowed(allowed, a))
    }

    fn policy(allowed: &[&str]) -> OriginPolicy {
        OriginPolicy {
            allowed: allowed.iter().map(|s| Origin::parse(s).unwrap()).collect(),
            allow_null: false,
            require_origin: false,
            forward: false,
        }
    }

    fn headers(origins: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for o in origins {
            h.append(header::ORIGIN, HeaderValue::from_bytes(o).unwrap());
        }
        h
    }

    #[test]
    fn origin_parsing_normalises() {
        assert_eq!(
            Origin::parse("HTTPS://App.Example.com"),
            Origin::parse("https://app.example.com:443")
        );
        assert_ne!(
            Origin::parse("https://app.example.com"),
            Origin::parse("http://app.example.com")
        );
        assert_ne!(
            Origin::parse("https://app.example.com"),
            Origin::parse("https://app.example.com:8443")
        );
        assert!(Origin::parse("https://[::1]:8443").is_some());
        for bad in [
            "",
            "app.example.com",
            "ftp://x",
            "https://",
            "https://a/b",
            "https://u@a",
            "https://a:x",
            "https://a:99999",
            "https://::1",
        ] {
            assert!(Origin::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn origin_decisions() {
        let p = policy(&["https://app.example.com"]);
        assert_eq!(p.check(&headers(&[])), OriginCheck::Absent);
        assert!(matches!(
            p.check(&headers(&[b"https://APP.example.com:443"])),
            OriginCheck::Allowed(_)
        ));
        assert!(matches!(
            p.check(&headers(&[b"https://evil.example"])),
            OriginCheck::Refused(_)
        ));
        assert!(matches!(
            p.check(&headers(&[b"null"])),
            OriginCheck::Refused(_)
        ));
        assert!(matches!(
            p.check(&headers(&[
                b"https://app.example.com",
                b"https://app.example.com"
            ])),
            OriginCheck::Refused("more than one Origin header")
        ));
        assert!(matches!(
            p.check(&headers(&[b"https://app.example.com/path"])),
            OriginCheck::Refused(_)
        ));
        assert!(matches!(
            p.check(&headers(&[b"https://app.example.com\xff"])),
            OriginCheck::Refused(_)
        ));
        let strict = OriginPolicy {
            require_origin: true,
            allow_null: true,
            ..p
        };
        assert!(matches!(
            strict.check(&headers(&[])),
            OriginCheck::Refused(_)
        ));
        assert!(matches!(
            strict.check(&headers(&[b"null"])),
            OriginCheck::Allowed(_)
        ));
    }

    #[test]
    fn host_checks() {
        let allowed = vec![
            "mcp.example.com".to_owned(),
            "127.0.0.1".to_owned(),
            "[::1]".to_owned(),
        ];
        let uri: http::Uri = "/mcp".parse().unwrap();
        let mut h = HeaderMap::new();
        for (host, ok) in [
            ("mcp.example.com", true),
            ("MCP.Example.com:8443", true),
            ("mcp.example.com.", true),
            ("127.0.0.1:1", true),
            ("[::1]:8443", true),
            ("evil.example", false),
            ("mcp.example.com.evil.example", false),
            ("", false),
        ] {
            h.insert(header::HOST, HeaderValue::from_str(host).unwrap());
            assert_eq!(host_allowed(&allowed, &uri, &h), ok, "{host}");
        }
        h.append(header::HOST, HeaderValue::from_static("mcp.example.com"));
        assert!(!host_allowed(&allowed, &uri, &h), "two Host headers");
        let h2: http::Uri = "https://evil.example/mcp".parse().unwrap();
        assert!(
            !host_allowed(&allowed, &h2, &HeaderMap::new()),
            ":authority is checked"
        );
    }

    #[test]
    fn host_header_must_agree_with_the_authority() {
        let abs: http::Uri = "https://localhost/mcp".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("evil.example"));
        assert_eq!(request_host(&abs, &h), Err(HostError::Disagrees));
        h.insert(header::HOST, HeaderValue::from_static("LOCALHOST.:443"));
        assert_eq!(request_host(&abs, &h), Ok("localhost"));
        h.insert(header::HOST, HeaderValue::from_static("localhost:8443"));
        assert_eq!(request_host(&abs, &h), Err(HostError::Disagrees));
        let origin_form: http::Uri = "/mcp".parse().unwrap();
        assert_eq!(
            request_host(&origin_form, &HeaderMap::new()),
            Err(HostError::Missing)
        );
        h.insert(header::HOST, HeaderValue::from_static("a:b:c"));
        assert_eq!(request_host(&origin_form, &h), Err(HostError::Malformed));
        h.append(header::HOST, HeaderValue::from_static("localhost"));
        assert_eq!(request_host(&origin_form, &h), Err(HostError::Several));
    }

    #[test]
    fn preflight_echoes_only_mcp_param_headers() {
        let mut req = HeaderMap::new();
        req.insert(
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            HeaderValue::from_static("Content-Type, Mcp-Param-Region, X-Evil"),
        );
        let h = preflight_headers(
            HeaderValue::from_static("https://app.example.com"),
            &req,
            "GET, POST, DELETE",
        );
        let allow = h[header::ACCESS_CONTROL_ALLOW_HEADERS].to_str().unwrap();
        assert!(allow.contains("mcp-param-region"));
        assert!(!allow.contains("x-evil"));
        assert!(
            h[header::ACCESS_CONTROL_EXPOSE_HEADERS]
                .to_str()
                .unwrap()
                .contains("www-authenticate")
        );
        assert_eq!(
            h[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://app.example.com"
        );
    }
}
