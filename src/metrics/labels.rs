//! The fixed label values: every label a request can give comes from one of these tables, so
//! a caller cannot create series by sending new method names, versions or tools.

/// MCP methods labelled by name; anything else is `other`.
pub const MCP_METHODS: &[&str] = &[
    "initialize",
    "ping",
    "tools/list",
    "tools/call",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "prompts/list",
    "prompts/get",
    "completion/complete",
    "logging/setLevel",
    "sampling/createMessage",
    "roots/list",
    "elicitation/create",
    "subscriptions/listen",
    "tasks/get",
    "tasks/list",
    "tasks/result",
    "tasks/cancel",
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/progress",
    "notifications/message",
    "notifications/roots/list_changed",
];

/// Index of `other` in the method table (after the named methods).
pub const METHOD_OTHER: u8 = MCP_METHODS.len() as u8;
/// A JSON-RPC batch.
pub const METHOD_BATCH: u8 = METHOD_OTHER + 1;
/// A POST carrying only responses.
pub const METHOD_RESPONSE: u8 = METHOD_OTHER + 2;
/// A POST refused before its body was read.
pub const METHOD_UNKNOWN: u8 = METHOD_OTHER + 3;
/// A GET: an event stream.
pub const METHOD_STREAM: u8 = METHOD_OTHER + 4;
/// A DELETE: the end of a session.
pub const METHOD_SESSION_END: u8 = METHOD_OTHER + 5;
/// Anything else (preflights, metadata documents).
pub const METHOD_NONE: u8 = METHOD_OTHER + 6;
/// Size of the method dimension.
pub const METHOD_COUNT: usize = METHOD_NONE as usize + 1;

/// The label of a method index.
pub fn method_label(i: u8) -> &'static str {
    match i {
        METHOD_OTHER => "other",
        METHOD_BATCH => "batch",
        METHOD_RESPONSE => "response",
        METHOD_UNKNOWN => "unknown",
        METHOD_STREAM => "stream",
        METHOD_SESSION_END => "session_end",
        METHOD_NONE => "none",
        _ => MCP_METHODS.get(usize::from(i)).copied().unwrap_or("other"),
    }
}

/// The index of an MCP method name.
pub fn method_index(name: &str) -> u8 {
    MCP_METHODS
        .iter()
        .position(|m| *m == name)
        .map_or(METHOD_OTHER, |i| i as u8)
}

/// Protocol versions labelled by name (`MCP-Protocol-Version`); others are `other`, absent is
/// empty.
pub const PROTOCOL_VERSIONS: &[&str] = &[
    "",
    "2024-11-05",
    "2025-03-26",
    "2025-06-18",
    "2025-11-25",
    "2026-07-28",
    "other",
];

/// The index of a protocol version header value (0: absent).
pub fn version_index(v: Option<&[u8]>) -> u8 {
    match v {
        None => 0,
        Some(v) => PROTOCOL_VERSIONS[1..PROTOCOL_VERSIONS.len() - 1]
            .iter()
            .position(|p| p.as_bytes() == v)
            .map_or(PROTOCOL_VERSIONS.len() as u8 - 1, |i| i as u8 + 1),
    }
}

/// HTTP methods labelled by name.
pub const HTTP_METHODS: &[&str] = &["GET", "POST", "DELETE", "OPTIONS", "other"];

/// The index of an HTTP method.
pub fn http_method_index(m: &http::Method) -> usize {
    match *m {
        http::Method::GET => 0,
        http::Method::POST => 1,
        http::Method::DELETE => 2,
        http::Method::OPTIONS => 3,
        _ => 4,
    }
}

/// Status classes.
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The index of a status code's class (anything outside 100–599 counts as 5xx: the proxy
/// never sends one, so it would be its own fault).
pub fn status_class_index(status: u16) -> usize {
    match status {
        100..=199 => 0,
        200..=299 => 1,
        300..=399 => 2,
        400..=499 => 3,
        _ => 4,
    }
}

/// `error.type` values for answers that failed upstream, by status; others `_OTHER`.
const HTTP_ERROR_TYPES: &[(u16, &str)] = &[
    (400, "400"),
    (401, "401"),
    (403, "403"),
    (404, "404"),
    (408, "408"),
    (409, "409"),
    (413, "413"),
    (429, "429"),
    (500, "500"),
    (501, "501"),
    (502, "502"),
    (503, "503"),
    (504, "504"),
];

/// The OpenTelemetry convention's fallback `error.type`.
pub const ERROR_OTHER: &str = "_OTHER";

/// `error.type` of an answer the upstream failed with.
pub fn http_error_type(status: u16) -> &'static str {
    HTTP_ERROR_TYPES
        .iter()
        .find(|(s, _)| *s == status)
        .map_or(ERROR_OTHER, |(_, t)| t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_round_trip_and_unknown_is_other() {
        for (i, m) in MCP_METHODS.iter().enumerate() {
            assert_eq!(method_index(m) as usize, i);
            assert_eq!(method_label(i as u8), *m);
        }
        assert_eq!(method_index("tools/evil\n"), METHOD_OTHER);
        assert_eq!(method_label(METHOD_STREAM), "stream");
        assert_eq!(method_label(200), "other");
    }

    #[test]
    fn versions_are_bounded() {
        assert_eq!(PROTOCOL_VERSIONS[version_index(None) as usize], "");
        assert_eq!(
            PROTOCOL_VERSIONS[version_index(Some(b"2025-06-18")) as usize],
            "2025-06-18"
        );
        assert_eq!(
            PROTOCOL_VERSIONS[version_index(Some(b"1999-01-01")) as usize],
            "other"
        );
        assert_eq!(
            PROTOCOL_VERSIONS[version_index(Some(b"other")) as usize],
            "other"
        );
    }
}
