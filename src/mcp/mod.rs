//! MCP protocol inspection: what the proxy reads from MCP traffic to make its decisions.
//!
//! - [`envelope`]: reads the JSON-RPC envelope of a POST body (size-capped, borrowing, strict
//!   about anything that could make the proxy and the backend read different requests).
//! - [`headers`]: `MCP-Protocol-Version`, and the 2026-07-28 `Mcp-Method` / `Mcp-Name` /
//!   `Mcp-Param-*` headers, checked against the body.
//! - [`filter`]: rewrites list answers (JSON or SSE) so a principal sees only the tools and
//!   resources it may use, and drops resource updates outside its namespaces.
//! - [`pending`]: the calls in flight on an event stream, answered with JSON-RPC errors when
//!   the stream dies before the upstream answers them.
//!
//! None of this is wired into the request path by itself; the proxy calls it.
//!
//! # Eras and what the proxy checks
//!
//! | protocol version | era | what the proxy checks here |
//! |---|---|---|
//! | 2024-11-05 | legacy HTTP+SSE | envelope of POSTs to the message endpoint; `tools/list` answers arrive on the GET stream |
//! | 2025-03-26 (also: no `MCP-Protocol-Version`) | session | envelope; the only version with JSON-RPC batches |
//! | 2025-06-18, 2025-11-25 | session | envelope; batches refused (-32600) |
//! | 2026-07-28 | stateless | envelope; batches refused; `Mcp-Method` (and `Mcp-Name` for `tools/call`, `resources/read`, `prompts/get`) required and equal to the body (-32020); `Mcp-Param-*` forwarded untouched |
//! | anything else well-formed | — | 400 with -32022 and `data.supported` |
//! | malformed | — | 400 with -32600 |
//!
//! In every era decisions use the body, never the headers; list answers are filtered in every
//! era.

pub mod envelope;
pub mod filter;
pub mod headers;
pub mod jsonrpc;
pub mod pending;

pub use envelope::{Envelope, EnvelopeError, Id, Message, MessageKind, parse, read_capped};
pub use filter::{FilterError, SseAnswerFilter, Visibility, filter_json};
pub use headers::{
    McpHeaderError, ProtocolVersion, check_consistency, json_rpc_error_body, json_rpc_error_for,
    protocol_version,
};
