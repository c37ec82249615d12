//! JSON-RPC and MCP protocol facts every other `mcp` module uses: request ids, the protocol
//! versions this proxy speaks, the error codes it answers with, and the error bodies. It
//! depends on no other `mcp` module, so `envelope` and `headers` can both use it.

use std::fmt;

use bytes::Bytes;
use serde::{Serialize, Serializer};
use serde_json::Value;

/// JSON-RPC code for a header that disagrees with the body (2026-07-28).
pub const HEADER_MISMATCH: i64 = -32020;
/// JSON-RPC code for an unsupported `MCP-Protocol-Version` (2026-07-28).
pub const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;
/// JSON-RPC "Invalid Request".
pub const INVALID_REQUEST: i64 = -32600;

/// Longest `MCP-Protocol-Version` value considered well-formed.
pub(crate) const MAX_VERSION_LEN: usize = 64;

/// Why an `MCP-Protocol-Version` value is not one this proxy speaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    /// Not a version token at all.
    #[error("malformed MCP-Protocol-Version header")]
    Malformed,
    /// Well-formed, but not supported.
    #[error("unsupported protocol version: {requested}")]
    Unsupported {
        /// The value sent.
        requested: String,
    },
}

/// A protocol revision this proxy understands, oldest first (so `<`/`>` compare eras).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProtocolVersion {
    /// Legacy HTTP+SSE transport.
    V2024_11_05,
    /// First Streamable HTTP revision; the only one with JSON-RPC batches.
    V2025_03_26,
    /// Session era.
    V2025_06_18,
    /// Session era; adds priming events.
    V2025_11_25,
    /// Stateless era: no sessions, `Mcp-Method`/`Mcp-Name` headers.
    V2026_07_28,
}

impl ProtocolVersion {
    /// Every supported version, oldest first: the `data.supported` list of a -32022 answer.
    pub const ALL: [ProtocolVersion; 5] = [
        ProtocolVersion::V2024_11_05,
        ProtocolVersion::V2025_03_26,
        ProtocolVersion::V2025_06_18,
        ProtocolVersion::V2025_11_25,
        ProtocolVersion::V2026_07_28,
    ];

    /// What a request without `MCP-Protocol-Version` speaks (the spec's backwards
    /// compatibility rule: never a 400 for absence).
    pub const ASSUMED_WHEN_ABSENT: ProtocolVersion = ProtocolVersion::V2025_03_26;

    /// The wire form, e.g. `"2025-06-18"`.
    pub fn as_str(self) -> &'static str {
        match self {
            ProtocolVersion::V2024_11_05 => "2024-11-05",
            ProtocolVersion::V2025_03_26 => "2025-03-26",
            ProtocolVersion::V2025_06_18 => "2025-06-18",
            ProtocolVersion::V2025_11_25 => "2025-11-25",
            ProtocolVersion::V2026_07_28 => "2026-07-28",
        }
    }

    /// Whether JSON-RPC batch arrays are allowed (2025-03-26 only).
    pub fn allows_batch(self) -> bool {
        self == ProtocolVersion::V2025_03_26
    }

    /// Whether this is the stateless era (no sessions, no GET stream, no DELETE).
    pub fn is_stateless(self) -> bool {
        self >= ProtocolVersion::V2026_07_28
    }

    /// Whether requests must carry `Mcp-Method` (and `Mcp-Name`) matching the body.
    pub fn requires_standard_headers(self) -> bool {
        self >= ProtocolVersion::V2026_07_28
    }

    /// Parses a header value. Well-formed means 1 to 64 characters from `[A-Za-z0-9._-]`
    /// (dates, and draft names such as `DRAFT-2026-v1`, so that those get the -32022 answer
    /// listing what is supported rather than a bare 400).
    pub fn from_header_value(value: &[u8]) -> Result<ProtocolVersion, VersionError> {
        let trimmed = value.trim_ascii();
        let well_formed = !trimmed.is_empty()
            && trimmed.len() <= MAX_VERSION_LEN
            && trimmed
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !well_formed {
            return Err(VersionError::Malformed);
        }
        ProtocolVersion::ALL
            .into_iter()
            .find(|v| v.as_str().as_bytes() == trimmed)
            .ok_or_else(|| VersionError::Unsupported {
                // Checked above: ASCII only.
                requested: String::from_utf8_lossy(trimmed).into_owned(),
            })
    }
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A JSON-RPC request id: a string or a number (`null` ids are represented as `None`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Id {
    /// A numeric id (integers within i64/u64 stay exact).
    Number(serde_json::Number),
    /// A string id.
    String(String),
}

impl Id {
    /// Whether `other` names the same request, also when one side is the string form of the
    /// other's number (`2` and `"2"`). Used where matching too much is the safe direction,
    /// such as deciding which responses to filter: some clients compare ids loosely.
    pub fn loosely_matches(&self, other: &Id) -> bool {
        match (self, other) {
            (Id::Number(a), Id::Number(b)) => a == b || a.to_string() == b.to_string(),
            (Id::String(a), Id::String(b)) => a == b,
            (Id::Number(n), Id::String(s)) | (Id::String(s), Id::Number(n)) => n.to_string() == *s,
        }
    }

    /// The id as a JSON value.
    pub fn to_value(&self) -> serde_json::Value {
        match self {
            Id::Number(n) => serde_json::Value::Number(n.clone()),
            Id::String(s) => serde_json::Value::String(s.clone()),
        }
    }
}

impl fmt::Display for Id {
    /// Numbers as written, strings without quotes (for logs).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Id::Number(n) => n.fmt(f),
            Id::String(s) => f.write_str(s),
        }
    }
}

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Id::Number(n) => n.serialize(s),
            Id::String(v) => v.serialize(s),
        }
    }
}

impl From<i64> for Id {
    fn from(n: i64) -> Self {
        Id::Number(n.into())
    }
}

impl From<u64> for Id {
    fn from(n: u64) -> Self {
        Id::Number(n.into())
    }
}

impl From<&str> for Id {
    fn from(s: &str) -> Self {
        Id::String(s.to_owned())
    }
}

impl From<String> for Id {
    fn from(s: String) -> Self {
        Id::String(s)
    }
}

/// A JSON-RPC error object without `id`, as the body of an answer the proxy gives itself:
/// `{"jsonrpc":"2.0","error":{"code":…,"message":…,"data":…}}` (`data` only when given).
pub fn json_rpc_error_body(code: i64, message: &str, data: Option<Value>) -> Bytes {
    json_rpc_error_for(None, code, message, data)
}

/// Like [`json_rpc_error_body`], answering the request with `id` (for refusals of one call
/// of a well-formed request, so the client can pair the error with its call).
pub fn json_rpc_error_for(id: Option<&Id>, code: i64, message: &str, data: Option<Value>) -> Bytes {
    let mut error = serde_json::Map::new();
    error.insert("code".into(), code.into());
    error.insert("message".into(), message.into());
    if let Some(data) = data {
        error.insert("data".into(), data);
    }
    let body = match id {
        Some(id) => serde_json::json!({ "jsonrpc": "2.0", "id": id.to_value(), "error": error }),
        None => serde_json::json!({ "jsonrpc": "2.0", "error": error }),
    };
    // A `Value` always serializes (its map keys are strings); the fallback is unreachable.
    serde_json::to_vec(&body).map_or_else(
        |_| {
            Bytes::from_static(
                br#"{"jsonrpc":"2.0","error":{"code":-32603,"message":"internal error"}}"#,
            )
        },
        Bytes::from,
    )
}
