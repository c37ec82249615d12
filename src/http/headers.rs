//! Header rules applied between client and upstream: hop-by-hop removal, forwarding headers,
//! request ids and trace context.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// `X-Request-Id`.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// W3C trace context.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// Streamable HTTP session id.
pub const MCP_SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");
/// 2026-07-28 era method header.
pub const MCP_METHOD: HeaderName = HeaderName::from_static("mcp-method");
/// Tells nginx-style buffering intermediaries not to buffer this response.
pub const X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const FORWARDED: HeaderName = HeaderName::from_static("forwarded");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Headers that describe one connection and must not cross the proxy (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    KEEP_ALIVE,
    PROXY_CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, including any listed in `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Collect first: names listed in Connection borrow from the map we are editing.
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in listed.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

/// Replaces any client-sent forwarding headers with the proxy's own view of the request.
pub fn set_forwarded(
    headers: &mut HeaderMap,
    client_ip: IpAddr,
    original_host: Option<&HeaderValue>,
) {
    headers.remove(FORWARDED);
    headers.remove(X_FORWARDED_HOST);
    // The client's own X-Forwarded-For is not trusted: at a trust boundary it is whatever the
    // caller wants it to be. The proxy states only what it saw.
    headers.insert(X_FORWARDED_FOR, ip_header(client_ip));
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
    if let Some(host) = original_host {
        headers.insert(X_FORWARDED_HOST, host.clone());
    }
}

/// Names the proxy sets, checks or strips on the way upstream; a client header that folds
/// (`_` read as `-`) onto one of them is a spoofing attempt.
const CONTROLLED: [&str; 14] = [
    "host",
    "authorization",
    "proxy-authorization",
    "forwarded",
    "x-real-ip",
    "x-request-id",
    "traceparent",
    "tracestate",
    "content-type",
    "content-length",
    "content-encoding",
    "transfer-encoding",
    "origin",
    "cookie",
];

/// Prefixes of header families the proxy controls: forwarding headers and MCP's own.
const CONTROLLED_PREFIXES: [&str; 2] = ["x-forwarded-", "mcp-"];

/// Removes client headers a backend could read as identity or forwarding headers the proxy
/// owns. Many servers (CGI/WSGI, PHP, some Node frameworks) fold `_` into `-`, so
/// `X_Mcp_Edge_Subject` would reach them as the identity header itself: any name that starts
/// with the identity prefix once `_` is read as `-` goes, and so does any name with a `_` that
/// folds onto a header the proxy sets or checks ([`CONTROLLED`], `x-forwarded-*`, `mcp-*`).
/// Names without `_` other than the identity prefix are left alone: the proxy handles those
/// itself where it must.
pub fn strip_lookalikes(headers: &mut HeaderMap, identity_prefix: &str) {
    // Config validation keeps the prefix to letters, digits and `-`: it needs no folding.
    let prefix = identity_prefix;
    let spoofed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            let name = name.as_str();
            if !name.contains('_') {
                return name.starts_with(prefix);
            }
            let folded = name.replace('_', "-");
            folded.starts_with(prefix)
                || CONTROLLED.contains(&folded.as_str())
                || CONTROLLED_PREFIXES.iter().any(|p| folded.starts_with(p))
        })
        .cloned()
        .collect();
    for name in spoofed {
        headers.remove(name);
    }
}

fn ip_header(ip: IpAddr) -> HeaderValue {
    // An IP address always renders as a valid header value.
    HeaderValue::from_str(&ip.to_canonical().to_string())
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// A copy of `v` with an allocation of its own, for a value kept as long as the request's
/// answer lasts. A header value hyper parsed shares the connection's read buffer (8 KiB or
/// more), and a clone of it would keep that buffer allocated for the life of a stream while
/// hyper takes a new one for the next read.
pub fn detached(v: &HeaderValue) -> HeaderValue {
    let mut copy = HeaderValue::from_bytes(v.as_bytes()).unwrap_or_else(|_| v.clone());
    copy.set_sensitive(v.is_sensitive());
    copy
}

/// Returns the client's `X-Request-Id` if it is a sane token, otherwise a fresh random id.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(X_REQUEST_ID)
        && is_token(v.as_bytes(), 128)
    {
        // Kept in the access record until the answer ends (see `detached`).
        return detached(v);
    }
    let id: u128 = rand::random();
    HeaderValue::from_str(&format!("{id:032x}")).unwrap_or_else(|_| HeaderValue::from_static("0"))
}

fn is_token(v: &[u8], max: usize) -> bool {
    !v.is_empty()
        && v.len() <= max
        && v.iter().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'/' | b'+' | b'=')
        })
}

/// Whether a `traceparent` value is well-formed W3C trace context (version 00 layout).
pub fn valid_traceparent(v: &[u8]) -> bool {
    // version(2)-trace_id(32)-parent_id(16)-flags(2), lower-case hex, ids not all zero.
    if v.len() < 55 {
        return false;
    }
    let hex = |s: &[u8]| s.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let nonzero = |s: &[u8]| s.iter().any(|&b| b != b'0');
    let (ver, trace, parent, flags) = (&v[0..2], &v[3..35], &v[36..52], &v[53..55]);
    v[2] == b'-'
        && v[35] == b'-'
        && v[52] == b'-'
        && hex(ver)
        && ver != b"ff"
        && hex(trace)
        && nonzero(trace)
        && hex(parent)
        && nonzero(parent)
        && hex(flags)
        // Version 00 is exactly 55 bytes; later versions may append fields after a dash.
        && (v.len() == 55 || (ver != b"00" && v[55] == b'-'))
}

/// Drops a `traceparent` that is not valid, so a malformed value never propagates.
pub fn sanitize_traceparent(headers: &mut HeaderMap) {
    let valid = match headers
        .get_all(TRACEPARENT)
        .iter()
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] => return,
        [one] => valid_traceparent(one.as_bytes()),
        _ => false,
    };
    if !valid {
        headers.remove(TRACEPARENT);
        headers.remove(HeaderName::from_static("tracestate"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_listed_and_fixed_hop_by_hop() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("mcp-session-id", HeaderValue::from_static("abc"));
        strip_hop_by_hop(&mut h);
        assert!(h.get("x-secret").is_none());
        assert!(h.get(header::CONNECTION).is_none());
        assert!(h.get(header::TRANSFER_ENCODING).is_none());
        assert_eq!(
            h.get("mcp-session-id").map(|v| v.as_bytes()),
            Some(&b"abc"[..])
        );
    }

    #[test]
    fn forwarded_headers_replace_client_copies() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        h.insert("forwarded", HeaderValue::from_static("for=6.6.6.6"));
        let host = HeaderValue::from_static("mcp.example.com");
        set_forwarded(&mut h, "192.0.2.7".parse().unwrap(), Some(&host));
        assert_eq!(h["x-forwarded-for"], "192.0.2.7");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "mcp.example.com");
        assert!(h.get("forwarded").is_none());
    }

    #[test]
    fn lookalike_identity_and_forwarding_headers_are_removed() {
        let mut h = HeaderMap::new();
        for name in [
            "x-mcp-edge-subject",
            "x_mcp_edge_subject",
            "x-mcp-edge_client-id",
            "x_forwarded_host",
            "mcp_session_id",
            "x_request_id",
            "authorization_",
        ] {
            h.insert(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static("victim"),
            );
        }
        h.insert("x_custom_app", HeaderValue::from_static("kept"));
        h.insert("x-forwarded-for", HeaderValue::from_static("set later"));
        strip_lookalikes(&mut h, "x-mcp-edge-");
        let left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(left.len(), 3, "{left:?}");
        for name in ["x_custom_app", "x-forwarded-for", "authorization_"] {
            assert!(h.contains_key(name), "{name} kept");
        }
    }

    #[test]
    fn request_id_kept_when_sane_and_replaced_when_hostile() {
        let mut h = HeaderMap::new();
        h.insert(X_REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h), "abc-123");
        h.insert(X_REQUEST_ID, HeaderValue::from_static("a b\"<script>"));
        let fresh = request_id(&h);
        assert_eq!(fresh.len(), 32);
        h.insert(
            X_REQUEST_ID,
            HeaderValue::from_str(&"a".repeat(129)).unwrap(),
        );
        assert_eq!(request_id(&h).len(), 32);
    }

    #[test]
    fn detached_values_are_equal_copies() {
        let mut v = HeaderValue::from_static("tools/call");
        v.set_sensitive(true);
        let d = detached(&v);
        assert_eq!(d, v);
        assert!(d.is_sensitive());
        assert_eq!(detached(&HeaderValue::from_static("")).as_bytes(), b"");
    }

    #[test]
    fn traceparent_validation() {
        let good = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert!(valid_traceparent(good));
        assert!(!valid_traceparent(
            b"00-00000000000000000000000000000000-00f067aa0ba902b7-01"
        ));
        assert!(!valid_traceparent(
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"
        ));
        assert!(!valid_traceparent(
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        ));
        assert!(!valid_traceparent(b"garbage"));
        let mut h = HeaderMap::new();
        h.append(TRACEPARENT, HeaderValue::from_static("garbage"));
        h.insert("tracestate", HeaderValue::from_static("x=1"));
        sanitize_traceparent(&mut h);
        assert!(h.get(TRACEPARENT).is_none() && h.get("tracestate").is_none());
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn header_parsers_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = valid_traceparent(&bytes);
            let _ = is_token(&bytes, 128);
            if let Ok(v) = HeaderValue::from_bytes(&bytes) {
                let mut h = HeaderMap::new();
                h.insert(X_REQUEST_ID, v.clone());
                h.insert(TRACEPARENT, v.clone());
                h.insert(header::CONNECTION, v);
                let id = request_id(&h);
                prop_assert!(is_token(id.as_bytes(), 128));
                sanitize_traceparent(&mut h);
                strip_hop_by_hop(&mut h);
                prop_assert!(h.get(header::CONNECTION).is_none());
            }
        }
    }
}
