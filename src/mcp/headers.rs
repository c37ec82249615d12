//! MCP HTTP headers: `MCP-Protocol-Version`, and the 2026-07-28 request headers `Mcp-Method`,
//! `Mcp-Name` and `Mcp-Param-*`.
//!
//! The 2026-07-28 headers exist so that intermediaries can route without reading bodies. The
//! proxy does read the body, and always decides on the body; it checks the headers only so that
//! nothing behind it (a load balancer, the backend's own routing) can be steered by a header
//! that says something else than the body ([`check_consistency`]).
//!
//! Header values that cannot travel as plain ASCII arrive as `=?base64?<standard base64 of the
//! UTF-8 value>?=` (markers lowercase and case-sensitive); [`decode_header_value`] undoes that.

use std::borrow::Cow;

use base64::Engine;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use bytes::Bytes;
use http::StatusCode;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

pub use crate::http::headers::MCP_METHOD;

use super::envelope::Message;
pub use super::jsonrpc::{
    HEADER_MISMATCH, INVALID_REQUEST, ProtocolVersion, UNSUPPORTED_PROTOCOL_VERSION, VersionError,
    json_rpc_error_body, json_rpc_error_for,
};

/// `MCP-Protocol-Version`.
pub const MCP_PROTOCOL_VERSION: HeaderName = HeaderName::from_static("mcp-protocol-version");
/// `Mcp-Name` (2026-07-28): mirrors `params.name` or `params.uri`.
pub const MCP_NAME: HeaderName = HeaderName::from_static("mcp-name");
/// Prefix of the 2026-07-28 `Mcp-Param-<Name>` headers (lowercase, as `http` stores names).
pub const MCP_PARAM_PREFIX: &str = "mcp-param-";

/// Opening marker of an encoded header value.
pub const BASE64_PREFIX: &str = "=?base64?";
/// Closing marker of an encoded header value.
pub const BASE64_SUFFIX: &str = "?=";

/// Standard alphabet (the spec's own example contains `/`); padding accepted whether present
/// or not, since senders differ and either decodes to the same bytes.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The request's protocol version: [`ProtocolVersion::ASSUMED_WHEN_ABSENT`] without the
/// header; an error for several headers, a malformed value, or an unsupported one.
pub fn protocol_version(headers: &HeaderMap) -> Result<ProtocolVersion, McpHeaderError> {
    let mut values = headers.get_all(MCP_PROTOCOL_VERSION).iter();
    let Some(value) = values.next() else {
        return Ok(ProtocolVersion::ASSUMED_WHEN_ABSENT);
    };
    if values.next().is_some() {
        return Err(McpHeaderError::MalformedProtocolVersion);
    }
    ProtocolVersion::from_header_value(value.as_bytes()).map_err(McpHeaderError::from)
}

/// Why an `Mcp-Method`/`Mcp-Name` value could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderValueError {
    /// Bytes outside printable ASCII: such values must be sent base64-encoded.
    #[error("contains characters outside printable ASCII")]
    NotAscii,
    /// The `=?base64?…?=` payload is not standard base64.
    #[error("invalid base64 payload")]
    BadBase64,
    /// The decoded bytes are not UTF-8.
    #[error("decoded value is not UTF-8")]
    NotUtf8,
}

/// Decodes an MCP header value: `=?base64?<b64>?=` is decoded, anything else is taken
/// literally. Plain values must be printable ASCII (tab allowed), since senders encode
/// everything else.
pub fn decode_header_value(raw: &[u8]) -> Result<Cow<'_, str>, HeaderValueError> {
    if !raw.iter().all(|&b| b == b'\t' || (0x20..0x7f).contains(&b)) {
        return Err(HeaderValueError::NotAscii);
    }
    let text = std::str::from_utf8(raw).map_err(|_| HeaderValueError::NotAscii)?;
    let Some(payload) = text
        .strip_prefix(BASE64_PREFIX)
        .and_then(|rest| rest.strip_suffix(BASE64_SUFFIX))
    else {
        return Ok(Cow::Borrowed(text));
    };
    let bytes = BASE64
        .decode(payload)
        .map_err(|_| HeaderValueError::BadBase64)?;
    String::from_utf8(bytes)
        .map(Cow::Owned)
        .map_err(|_| HeaderValueError::NotUtf8)
}

/// Encodes a value for an MCP header the way conforming clients do: as is when it is printable
/// ASCII without leading/trailing blanks and does not look like an encoded value; otherwise
/// `=?base64?…?=`. The inverse of [`decode_header_value`].
pub fn encode_header_value(value: &str) -> Cow<'_, str> {
    let printable = value.bytes().all(|b| (0x20..0x7f).contains(&b));
    let blank_edge = value.starts_with(' ') || value.ends_with(' ');
    let looks_encoded = value.starts_with(BASE64_PREFIX) && value.ends_with(BASE64_SUFFIX);
    let plain = printable && !blank_edge && !looks_encoded;
    if plain {
        Cow::Borrowed(value)
    } else {
        Cow::Owned(format!(
            "{BASE64_PREFIX}{}{BASE64_SUFFIX}",
            base64::engine::general_purpose::STANDARD.encode(value)
        ))
    }
}

/// The decoded value of a single-valued MCP header; `Ok(None)` when absent.
fn single_decoded(
    headers: &HeaderMap,
    name: &HeaderName,
    label: &'static str,
) -> Result<Option<String>, McpHeaderError> {
    let mut values = headers.get_all(name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    // Two copies: intermediaries disagree on which one counts, so neither may.
    if values.next().is_some() {
        return Err(McpHeaderError::Duplicate(label));
    }
    decode_header_value(value.as_bytes())
        .map(|v| Some(v.into_owned()))
        .map_err(|reason| McpHeaderError::BadValue {
            header: label,
            reason,
        })
}

/// The decoded `Mcp-Method` header, if present.
pub fn mcp_method(headers: &HeaderMap) -> Result<Option<String>, McpHeaderError> {
    single_decoded(headers, &MCP_METHOD, "Mcp-Method")
}

/// The decoded `Mcp-Name` header, if present.
pub fn mcp_name(headers: &HeaderMap) -> Result<Option<String>, McpHeaderError> {
    single_decoded(headers, &MCP_NAME, "Mcp-Name")
}

/// Whether `name` is an `Mcp-Param-*` header.
pub fn is_param_header(name: &HeaderName) -> bool {
    name.as_str().starts_with(MCP_PARAM_PREFIX)
}

/// The `Mcp-Param-*` headers of a request, untouched.
///
/// They mirror tool arguments that the tool's input schema marks with `x-mcp-header`; only the
/// backend knows those schemas, so the proxy does not validate them. The spec requires
/// intermediaries to forward them (including ones they do not recognise): they must survive
/// every header rule between client and backend. Decisions never use them.
pub fn param_headers(headers: &HeaderMap) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
    headers.iter().filter(|(name, _)| is_param_header(name))
}

/// Methods whose `Mcp-Name` is required in 2026-07-28 (the rest may omit it).
const NAME_REQUIRED: [&str; 3] = ["tools/call", "resources/read", "prompts/get"];

/// Checks the 2026-07-28 request headers against the parsed body.
///
/// From 2026-07-28 on, for every message with a `method` (requests and notifications):
/// - `Mcp-Method` must be present, single, and equal the body's method;
/// - for `tools/call`, `prompts/get` and `resources/read`, `Mcp-Name` must be present, single,
///   and equal `params.name` / `params.uri`; for other methods whose target the envelope reads
///   (`resources/subscribe`, `resources/unsubscribe`) a present `Mcp-Name` must match too.
///
/// Earlier versions do not define these headers; they are not checked (and are forwarded
/// as is). Responses and errors have no method and are not checked.
pub fn check_consistency(
    headers: &HeaderMap,
    message: &Message,
    version: ProtocolVersion,
) -> Result<(), McpHeaderError> {
    if !version.requires_standard_headers() {
        return Ok(());
    }
    let Some(method) = message.method.as_deref() else {
        return Ok(());
    };
    match mcp_method(headers)? {
        None => return Err(McpHeaderError::Missing("Mcp-Method")),
        Some(h) if h != method => {
            return Err(McpHeaderError::Mismatch {
                header: "Mcp-Method",
                header_value: h,
                body_value: method.to_owned(),
            });
        }
        Some(_) => {}
    }
    let required = NAME_REQUIRED.contains(&method);
    let Some(expected) = message.header_name() else {
        // The envelope reader refuses the required-name methods without a target, so this
        // is a method without one: nothing to compare.
        return Ok(());
    };
    match mcp_name(headers)? {
        None if required => Err(McpHeaderError::Missing("Mcp-Name")),
        None => Ok(()),
        Some(h) if h != expected => Err(McpHeaderError::Mismatch {
            header: "Mcp-Name",
            header_value: h,
            body_value: expected.to_owned(),
        }),
        Some(_) => Ok(()),
    }
}

/// Why a request's MCP headers were refused. Every variant is a 400; see
/// [`rpc_code`](Self::rpc_code) and [`body`](Self::body) for the JSON-RPC answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum McpHeaderError {
    /// `MCP-Protocol-Version` repeated, empty, or not a version token.
    #[error("malformed MCP-Protocol-Version header")]
    MalformedProtocolVersion,
    /// A well-formed `MCP-Protocol-Version` this proxy does not support.
    #[error("unsupported protocol version: {requested}")]
    UnsupportedProtocolVersion {
        /// The version the client asked for.
        requested: String,
    },
    /// A required header (`Mcp-Method`, `Mcp-Name`) is missing.
    #[error("missing required {0} header")]
    Missing(&'static str),
    /// A single-valued header appears more than once.
    #[error("more than one {0} header")]
    Duplicate(&'static str),
    /// A header value could not be decoded.
    #[error("{header} header: {reason}")]
    BadValue {
        /// Which header.
        header: &'static str,
        /// What is wrong with it.
        reason: HeaderValueError,
    },
    /// A header disagrees with the body. The values are kept for logs, not put in the answer.
    #[error("{header} header does not match the request body")]
    Mismatch {
        /// Which header.
        header: &'static str,
        /// The decoded header value.
        header_value: String,
        /// What the body says.
        body_value: String,
    },
}

impl From<VersionError> for McpHeaderError {
    fn from(e: VersionError) -> Self {
        match e {
            VersionError::Malformed => McpHeaderError::MalformedProtocolVersion,
            VersionError::Unsupported { requested } => {
                McpHeaderError::UnsupportedProtocolVersion { requested }
            }
        }
    }
}

impl McpHeaderError {
    /// HTTP status of the answer (always 400).
    pub fn status(&self) -> StatusCode {
        StatusCode::BAD_REQUEST
    }

    /// JSON-RPC code: -32022 for an unsupported version, -32600 for a malformed one, -32020
    /// for `Mcp-Method`/`Mcp-Name` problems.
    pub fn rpc_code(&self) -> i64 {
        match self {
            McpHeaderError::MalformedProtocolVersion => INVALID_REQUEST,
            McpHeaderError::UnsupportedProtocolVersion { .. } => UNSUPPORTED_PROTOCOL_VERSION,
            _ => HEADER_MISMATCH,
        }
    }

    /// JSON-RPC `data`: `{"supported": [...], "requested": "..."}` for an unsupported version.
    pub fn data(&self) -> Option<Value> {
        match self {
            McpHeaderError::UnsupportedProtocolVersion { requested } => Some(serde_json::json!({
                "supported": ProtocolVersion::ALL.map(ProtocolVersion::as_str),
                "requested": requested,
            })),
            _ => None,
        }
    }

    /// Short label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            McpHeaderError::MalformedProtocolVersion => "malformed_protocol_version",
            McpHeaderError::UnsupportedProtocolVersion { .. } => "unsupported_protocol_version",
            McpHeaderError::Missing(_) => "header_missing",
            McpHeaderError::Duplicate(_) => "header_duplicate",
            McpHeaderError::BadValue { .. } => "header_bad_value",
            McpHeaderError::Mismatch { .. } => "header_mismatch",
        }
    }

    /// The JSON-RPC error body (no `id`) for the answer.
    pub fn body(&self) -> Bytes {
        json_rpc_error_body(self.rpc_code(), &self.to_string(), self.data())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcp::envelope::{Envelope, parse};

    fn map(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_bytes(value).unwrap(),
            );
        }
        h
    }

    fn msg(json: &str) -> Message {
        match parse(json.as_bytes()).unwrap() {
            Envelope::Single(m) => m,
            Envelope::Batch(_) => panic!("batch"),
        }
    }

    const CALL: &str =
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"deploy"}}"#;
    type Pairs<'a> = &'a [(&'a str, &'a [u8])];

    const V26: ProtocolVersion = ProtocolVersion::V2026_07_28;

    #[test]
    fn protocol_version_rules() {
        assert_eq!(
            protocol_version(&HeaderMap::new()),
            Ok(ProtocolVersion::V2025_03_26)
        );
        for v in ProtocolVersion::ALL {
            let h = map(&[("MCP-Protocol-Version", v.as_str().as_bytes())]);
            assert_eq!(protocol_version(&h), Ok(v));
        }
        let e = protocol_version(&map(&[("mcp-protocol-version", b"2099-01-01")])).unwrap_err();
        assert_eq!(e.rpc_code(), -32022);
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        let body: Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(body["error"]["code"], -32022);
        assert_eq!(body["error"]["data"]["requested"], "2099-01-01");
        assert_eq!(
            body["error"]["data"]["supported"],
            serde_json::json!([
                "2024-11-05",
                "2025-03-26",
                "2025-06-18",
                "2025-11-25",
                "2026-07-28"
            ])
        );
        assert!(body.get("id").is_none());
        assert!(matches!(
            protocol_version(&map(&[("mcp-protocol-version", b"DRAFT-2026-v1")])),
            Err(McpHeaderError::UnsupportedProtocolVersion { .. })
        ));
        for bad in [
            &b""[..],
            b"2025 06 18",
            b"2025-06-18, 2025-03-26",
            b"\xc3\xa9",
            b"\"2025-06-18\"",
        ] {
            let e = protocol_version(&map(&[("mcp-protocol-version", bad)])).unwrap_err();
            assert_eq!(e, McpHeaderError::MalformedProtocolVersion, "{bad:?}");
            assert_eq!(e.rpc_code(), -32600);
        }
        let twice = map(&[
            ("mcp-protocol-version", b"2025-06-18"),
            ("mcp-protocol-version", b"2025-06-18"),
        ]);
        assert_eq!(
            protocol_version(&twice),
            Err(McpHeaderError::MalformedProtocolVersion)
        );
        assert!(ProtocolVersion::V2026_07_28.is_stateless());
        assert!(!ProtocolVersion::V2025_11_25.is_stateless());
        assert!(ProtocolVersion::V2025_03_26.allows_batch());
        assert!(!ProtocolVersion::V2025_06_18.allows_batch());
    }

    #[test]
    fn header_value_decoding() {
        assert_eq!(decode_header_value(b"tools/call").unwrap(), "tools/call");
        // The spec's example: an ASCII value that looks like the sentinel, encoded.
        assert_eq!(
            decode_header_value(b"=?base64?PT9iYXNlNjQ/bGl0ZXJhbD89?=").unwrap(),
            "=?base64?literal?="
        );
        assert_eq!(decode_header_value(b"=?base64?w6k=?=").unwrap(), "é");
        assert_eq!(decode_header_value(b"=?base64?w6k?=").unwrap(), "é");
        assert_eq!(decode_header_value(b"=?base64??=").unwrap(), "");
        // Markers are case-sensitive; half a sentinel is a literal value.
        assert_eq!(
            decode_header_value(b"=?BASE64?w6k=?=").unwrap(),
            "=?BASE64?w6k=?="
        );
        assert_eq!(
            decode_header_value(b"=?base64?w6k=").unwrap(),
            "=?base64?w6k="
        );
        assert_eq!(
            decode_header_value(b"=?base64?***?="),
            Err(HeaderValueError::BadBase64)
        );
        assert_eq!(
            decode_header_value(b"=?base64?/w==?="),
            Err(HeaderValueError::NotUtf8)
        );
        assert_eq!(
            decode_header_value("é".as_bytes()),
            Err(HeaderValueError::NotAscii)
        );
        assert_eq!(encode_header_value("echo"), "echo");
        assert_eq!(encode_header_value("é"), "=?base64?w6k=?=");
        assert_eq!(encode_header_value(" x"), "=?base64?IHg=?=");
    }

    #[test]
    fn consistent_headers_pass() {
        let h = map(&[("mcp-method", b"tools/call"), ("mcp-name", b"deploy")]);
        assert_eq!(check_consistency(&h, &msg(CALL), V26), Ok(()));
        let read =
            msg(r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"mem://é"}}"#);
        let value = encode_header_value("mem://é");
        let h = map(&[
            ("mcp-method", b"resources/read"),
            ("mcp-name", value.as_bytes()),
        ]);
        assert_eq!(check_consistency(&h, &read, V26), Ok(()));
        let list = msg(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#);
        assert_eq!(
            check_consistency(&map(&[("mcp-method", b"tools/list")]), &list, V26),
            Ok(())
        );
        let note = msg(r#"{"jsonrpc":"2.0","method":"notifications/cancelled"}"#);
        assert_eq!(
            check_consistency(
                &map(&[("mcp-method", b"notifications/cancelled")]),
                &note,
                V26
            ),
            Ok(())
        );
        // Responses carry no method; nothing to mirror.
        let resp = msg(r#"{"jsonrpc":"2.0","id":1,"result":{}}"#);
        assert_eq!(check_consistency(&HeaderMap::new(), &resp, V26), Ok(()));
    }

    #[test]
    fn older_versions_are_not_checked() {
        let h = map(&[("mcp-method", b"tools/list")]);
        for v in &ProtocolVersion::ALL[..4] {
            assert_eq!(check_consistency(&h, &msg(CALL), *v), Ok(()));
            assert_eq!(check_consistency(&HeaderMap::new(), &msg(CALL), *v), Ok(()));
        }
    }

    #[test]
    fn inconsistent_headers_refused() {
        let cases: [(Pairs<'_>, &str); 8] = [
            (&[("mcp-name", b"deploy")], "header_missing"),
            (&[("mcp-method", b"tools/call")], "header_missing"),
            (
                &[("mcp-method", b"tools/list"), ("mcp-name", b"deploy")],
                "header_mismatch",
            ),
            (
                &[("mcp-method", b"tools/call"), ("mcp-name", b"other")],
                "header_mismatch",
            ),
            (
                &[("mcp-method", b"tools/call"), ("mcp-name", b"Deploy")],
                "header_mismatch",
            ),
            (
                &[
                    ("mcp-method", b"tools/call"),
                    ("mcp-method", b"tools/call"),
                    ("mcp-name", b"deploy"),
                ],
                "header_duplicate",
            ),
            (
                &[
                    ("mcp-method", b"tools/call"),
                    ("mcp-name", b"deploy"),
                    ("mcp-name", b"x"),
                ],
                "header_duplicate",
            ),
            (
                &[("mcp-method", b"tools/call"), ("mcp-name", b"=?base64?!?=")],
                "header_bad_value",
            ),
        ];
        for (pairs, kind) in cases {
            let e = check_consistency(&map(pairs), &msg(CALL), V26).unwrap_err();
            assert_eq!(e.kind(), kind, "{pairs:?}");
            assert_eq!(e.rpc_code(), -32020);
            assert_eq!(e.status(), StatusCode::BAD_REQUEST);
            let body: Value = serde_json::from_slice(&e.body()).unwrap();
            assert_eq!(body["error"]["code"], -32020);
        }
        // A present Mcp-Name must match for subscribe too, though it may be omitted.
        let sub = msg(
            r#"{"jsonrpc":"2.0","id":1,"method":"resources/subscribe","params":{"uri":"a://b"}}"#,
        );
        assert_eq!(
            check_consistency(&map(&[("mcp-method", b"resources/subscribe")]), &sub, V26),
            Ok(())
        );
        assert!(
            check_consistency(
                &map(&[
                    ("mcp-method", b"resources/subscribe"),
                    ("mcp-name", b"a://c")
                ]),
                &sub,
                V26
            )
            .is_err()
        );
    }

    #[test]
    fn param_headers_collected_untouched() {
        let h = map(&[
            ("mcp-param-region", b"eu"),
            ("Mcp-Param-Unknown", b"=?base64?eA==?="),
            ("mcp-method", b"tools/call"),
            ("x-mcp-param-no", b"1"),
        ]);
        let got: Vec<(String, Vec<u8>)> = param_headers(&h)
            .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("mcp-param-region".to_owned(), b"eu".to_vec()),
                ("mcp-param-unknown".to_owned(), b"=?base64?eA==?=".to_vec()),
            ]
        );
    }

    #[test]
    fn error_body_shape() {
        let b = json_rpc_error_body(-32020, "m \"q\"", None);
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"jsonrpc":"2.0","error":{"code":-32020,"message":"m \"q\""}})
        );
        let b = json_rpc_error_body(-1, "x", Some(serde_json::json!([1])));
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["error"]["data"], serde_json::json!([1]));
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn decode_never_panics(raw in prop::collection::vec(any::<u8>(), 0..128)) {
            let _ = decode_header_value(&raw);
        }

        #[test]
        fn sentinel_payloads_never_panic(payload in prop::collection::vec(any::<u8>(), 0..64)) {
            let mut raw = BASE64_PREFIX.as_bytes().to_vec();
            raw.extend_from_slice(&payload);
            raw.extend_from_slice(BASE64_SUFFIX.as_bytes());
            let _ = decode_header_value(&raw);
        }

        #[test]
        fn encode_decode_round_trip(value in "\\PC{0,40}|[ -~]{0,40}|=\\?base64\\?[ -~]{0,10}\\?=") {
            let encoded = encode_header_value(&value);
            // Whatever is encoded is a valid header value…
            prop_assert!(HeaderValue::from_str(&encoded).is_ok());
            // …and decodes back to the original.
            prop_assert_eq!(decode_header_value(encoded.as_bytes()).unwrap(), value.as_str());
        }

        #[test]
        fn base64_round_trip_any_utf8(value in any::<String>()) {
            let raw = format!("{BASE64_PREFIX}{}{BASE64_SUFFIX}", base64::engine::general_purpose::STANDARD.encode(&value));
            prop_assert_eq!(decode_header_value(raw.as_bytes()).unwrap(), value);
        }

        #[test]
        fn version_parser_never_panics(raw in prop::collection::vec(any::<u8>(), 0..80)) {
            match ProtocolVersion::from_header_value(&raw).map_err(McpHeaderError::from) {
                Ok(v) => prop_assert_eq!(v.as_str().as_bytes(), raw.trim_ascii()),
                Err(McpHeaderError::UnsupportedProtocolVersion { requested }) => {
                    prop_assert!(!requested.is_empty() && requested.len() <= crate::mcp::jsonrpc::MAX_VERSION_LEN);
                }
                Err(e) => prop_assert_eq!(e, McpHeaderError::MalformedProtocolVersion),
            }
        }

        #[test]
        fn header_checks_never_panic(
            method in prop::collection::vec(any::<u8>(), 0..40),
            name in prop::collection::vec(any::<u8>(), 0..40),
        ) {
            let mut h = HeaderMap::new();
            if let (Ok(m), Ok(n)) = (HeaderValue::from_bytes(&method), HeaderValue::from_bytes(&name)) {
                h.insert(MCP_METHOD, m);
                h.insert(MCP_NAME, n);
            }
            let m = Message {
                kind: crate::mcp::envelope::MessageKind::Request,
                id: Some(1i64.into()),
                method: Some("tools/call".into()),
                tool_name: Some("x".into()),
                resource_uri: None,
                subscriptions: Vec::new(),
                traceparent: None,
            };
            let _ = check_consistency(&h, &m, ProtocolVersion::V2026_07_28);
        }
    }
}
