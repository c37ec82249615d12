//! JSON-RPC envelope reader for MCP POST bodies.
//!
//! The proxy needs only a handful of facts from a POST body to make its decisions: what kind
//! of message it is, its `id`, its `method`, and for a few methods the tool or prompt name
//! (`params.name`) or the resource URI (`params.uri`). Everything else (tool arguments, which
//! can be megabytes) is skipped by the parser without being copied: the visitors below borrow
//! strings straight from the body and ignore every other value with [`IgnoredAny`].
//!
//! The reader is deliberately strict where a lenient reading could let the proxy and the
//! backend see two different requests:
//! - a repeated member among the ones the proxy reads (`id`, `method`, `params.name`, …) is
//!   refused, because JSON parsers disagree on which copy wins;
//! - `jsonrpc` must be exactly `"2.0"`;
//! - nesting deeper than [`MAX_DEPTH`] is refused before parsing;
//! - the strings the proxy keeps have length limits, so audit lines and policy inputs stay
//!   small whatever the body cap is.
//!
//! [`read_capped`] collects a request body up to a limit; [`parse`] turns the bytes into an
//! [`Envelope`]. Neither is tied to the proxy pipeline.

use std::borrow::Cow;
use std::fmt;

use bytes::{Buf, Bytes, BytesMut};
use http::StatusCode;
use http_body::Body;
use http_body_util::BodyExt;
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

pub use super::jsonrpc::Id;
use super::jsonrpc::{ProtocolVersion, json_rpc_error_body};

/// Deepest array/object nesting accepted in a body. serde_json would stop at 128 on its own;
/// checking first gives a clear error and keeps the limit ours rather than the library's.
pub const MAX_DEPTH: usize = 64;
/// Longest `method` accepted (MCP method names are a few dozen bytes).
pub const MAX_METHOD_LEN: usize = 256;
/// Longest tool or prompt name accepted (the spec recommends at most 128 characters).
pub const MAX_NAME_LEN: usize = 1024;
/// Longest resource URI accepted.
pub const MAX_URI_LEN: usize = 8 * 1024;
/// Longest string `id` accepted.
pub const MAX_ID_LEN: usize = 1024;
/// Most messages accepted in one batch.
pub const MAX_BATCH_LEN: usize = 1024;
/// Longest `params._meta.traceparent` read (W3C version 00 is 55 bytes).
pub const MAX_TRACEPARENT_LEN: usize = 256;

/// Error type of request bodies, boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a POST body was refused.
///
/// [`status`](Self::status), [`rpc_code`](Self::rpc_code) and [`body`](Self::body) give the
/// answer the proxy should send.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// The body is longer than the cap (declared or streamed): answer 413.
    #[error("request body exceeds {limit} bytes")]
    TooLarge {
        /// The cap.
        limit: usize,
    },
    /// Reading the body failed (client went away, bad framing).
    #[error("request body could not be read")]
    Body(#[source] BoxError),
    /// Not JSON (syntax error, empty body, trailing garbage, invalid escape).
    #[error("parse error: {0}")]
    Parse(String),
    /// Arrays/objects nested deeper than [`MAX_DEPTH`].
    #[error("parse error: JSON nested deeper than {limit} levels")]
    TooDeep {
        /// The limit.
        limit: usize,
    },
    /// Valid JSON, but neither an object nor an array of objects.
    #[error("invalid request: a JSON-RPC message must be an object")]
    NotAnObject,
    /// `[]`.
    #[error("invalid request: empty batch")]
    EmptyBatch,
    /// A batch with more than [`MAX_BATCH_LEN`] messages.
    #[error("invalid request: batch of more than {limit} messages")]
    BatchTooLarge {
        /// The limit.
        limit: usize,
    },
    /// A batch sent under a protocol version that has none (all but 2025-03-26).
    #[error("invalid request: JSON-RPC batches are not supported in protocol version {version}")]
    BatchNotAllowed {
        /// The request's protocol version.
        version: ProtocolVersion,
    },
    /// `jsonrpc` missing or not `"2.0"`.
    #[error("invalid request: \"jsonrpc\" must be \"2.0\"")]
    WrongVersion,
    /// A member the proxy reads appears twice.
    #[error("invalid request: duplicate member `{0}`")]
    DuplicateKey(&'static str),
    /// A string the proxy keeps is over its limit.
    #[error("invalid request: `{field}` is longer than {limit} bytes")]
    FieldTooLong {
        /// Member name, e.g. `params.name`.
        field: &'static str,
        /// The limit.
        limit: usize,
    },
    /// Structurally not a JSON-RPC message (bad `id` type, no method and no result, …).
    #[error("invalid request: {0}")]
    Invalid(&'static str),
    /// A method that names its target without a string `params.name` / `params.uri`.
    #[error("invalid params: `{method}` requires a string `params.{param}`")]
    MissingParam {
        /// The method.
        method: &'static str,
        /// `name` or `uri`.
        param: &'static str,
    },
}

impl EnvelopeError {
    /// HTTP status of the answer.
    pub fn status(&self) -> StatusCode {
        match self {
            EnvelopeError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// JSON-RPC error code of the answer: -32700 when the body could not be parsed, -32602
    /// for missing target parameters, -32600 otherwise.
    pub fn rpc_code(&self) -> i64 {
        match self {
            EnvelopeError::Parse(_) | EnvelopeError::TooDeep { .. } => -32700,
            EnvelopeError::MissingParam { .. } => -32602,
            _ => -32600,
        }
    }

    /// Short label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            EnvelopeError::TooLarge { .. } => "body_too_large",
            EnvelopeError::Body(_) => "body_read",
            EnvelopeError::Parse(_) => "parse_error",
            EnvelopeError::TooDeep { .. } => "too_deep",
            EnvelopeError::NotAnObject => "not_an_object",
            EnvelopeError::EmptyBatch => "empty_batch",
            EnvelopeError::BatchTooLarge { .. } => "batch_too_large",
            EnvelopeError::BatchNotAllowed { .. } => "batch_not_allowed",
            EnvelopeError::WrongVersion => "wrong_jsonrpc_version",
            EnvelopeError::DuplicateKey(_) => "duplicate_key",
            EnvelopeError::FieldTooLong { .. } => "field_too_long",
            EnvelopeError::Invalid(_) => "invalid_request",
            EnvelopeError::MissingParam { .. } => "missing_param",
        }
    }

    /// JSON-RPC error body (no `id`) for the answer.
    pub fn body(&self) -> Bytes {
        json_rpc_error_body(self.rpc_code(), &self.to_string(), None)
    }
}

/// Collects a request body, refusing it as soon as it is known to exceed `cap` bytes.
///
/// A declared length (`Content-Length`, via the size hint) over the cap is refused before
/// reading anything; a streamed body is refused at the first frame that crosses the cap, so at
/// most `cap` bytes plus one frame are ever held. Trailers are ignored. A body that arrives in
/// one frame is returned without copying.
pub async fn read_capped<B>(body: B, cap: usize) -> Result<Bytes, EnvelopeError>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let too_large = || EnvelopeError::TooLarge { limit: cap };
    if body.size_hint().lower() > cap as u64 {
        return Err(too_large());
    }
    let mut body = std::pin::pin!(body);
    let mut first: Option<Bytes> = None;
    let mut rest: Option<BytesMut> = None;
    let mut len = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| EnvelopeError::Body(e.into()))?;
        let Ok(mut data) = frame.into_data() else {
            continue;
        };
        // Zero-copy for `Bytes` (what hyper bodies carry).
        let data = data.copy_to_bytes(data.remaining());
        if data.is_empty() {
            continue;
        }
        len = len.checked_add(data.len()).ok_or_else(too_large)?;
        if len > cap {
            return Err(too_large());
        }
        match (&mut first, &mut rest) {
            (None, _) => first = Some(data),
            (Some(f), None) => {
                let mut buf = BytesMut::with_capacity(len);
                buf.extend_from_slice(f);
                buf.extend_from_slice(&data);
                rest = Some(buf);
            }
            (Some(_), Some(buf)) => buf.extend_from_slice(&data),
        }
    }
    Ok(match (first, rest) {
        (_, Some(buf)) => buf.freeze(),
        (Some(f), None) => f,
        (None, None) => Bytes::new(),
    })
}

/// What a JSON-RPC message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// Has `method` and a non-null `id`: expects an answer.
    Request,
    /// Has `method` and no `id`.
    Notification,
    /// Has `result` (a client answering a server request, session era only).
    Response,
    /// Has `error`.
    Error,
}

/// The facts the proxy takes from one JSON-RPC message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Request, notification, response or error.
    pub kind: MessageKind,
    /// The `id`; `None` for notifications and for errors with a `null` or missing id.
    pub id: Option<Id>,
    /// The `method` of requests and notifications.
    pub method: Option<String>,
    /// `params.name` of `tools/call` and `prompts/get` (the tool or prompt called).
    pub tool_name: Option<String>,
    /// `params.uri` of `resources/read`, `resources/subscribe` and `resources/unsubscribe`.
    pub resource_uri: Option<String>,
    /// `params.notifications.resourceSubscriptions` of `subscriptions/listen`: resources the
    /// caller asks to follow, each checked like `resources/subscribe`.
    pub subscriptions: Vec<String>,
    /// `params._meta.traceparent` (the MCP convention's trace context propagation), when it
    /// is one string of at most [`MAX_TRACEPARENT_LEN`] bytes; validated by the caller.
    pub traceparent: Option<Box<str>>,
}

impl Message {
    /// The value the 2026-07-28 `Mcp-Name` header mirrors for this message, if any.
    pub fn header_name(&self) -> Option<&str> {
        self.tool_name.as_deref().or(self.resource_uri.as_deref())
    }

    /// Whether this is a request (as opposed to a notification, response or error).
    pub fn is_request(&self) -> bool {
        self.kind == MessageKind::Request
    }
}

/// A parsed POST body: one message, or a batch (protocol 2025-03-26 only; see
/// [`Envelope::check_version`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Envelope {
    /// A single JSON-RPC object.
    Single(Message),
    /// A JSON array of messages, never empty.
    Batch(Vec<Message>),
}

impl Envelope {
    /// All messages, in body order.
    pub fn messages(&self) -> &[Message] {
        match self {
            Envelope::Single(m) => std::slice::from_ref(m),
            Envelope::Batch(v) => v,
        }
    }

    /// Whether the body was a batch array.
    pub fn is_batch(&self) -> bool {
        matches!(self, Envelope::Batch(_))
    }

    /// Whether any message expects an answer (otherwise a server answers 202).
    pub fn has_requests(&self) -> bool {
        self.messages().iter().any(Message::is_request)
    }

    /// Refuses batches under protocol versions that have none: JSON-RPC batching existed
    /// only in 2025-03-26 (which is also what a request without `MCP-Protocol-Version` is
    /// taken to speak).
    pub fn check_version(&self, version: ProtocolVersion) -> Result<(), EnvelopeError> {
        if self.is_batch() && !version.allows_batch() {
            return Err(EnvelopeError::BatchNotAllowed { version });
        }
        Ok(())
    }
}

/// Parses a POST body into an [`Envelope`]. Never panics, whatever the bytes.
pub fn parse(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
    if exceeds_depth(bytes, MAX_DEPTH) {
        return Err(EnvelopeError::TooDeep { limit: MAX_DEPTH });
    }
    let top: Top<'_> =
        serde_json::from_slice(bytes).map_err(|e| EnvelopeError::Parse(e.to_string()))?;
    match top {
        Top::One(raw) => Ok(Envelope::Single(raw.into_message()?)),
        Top::Many(items) => {
            if items.is_empty() {
                return Err(EnvelopeError::EmptyBatch);
            }
            let messages = items
                .into_iter()
                .map(|item| item.ok_or(EnvelopeError::NotAnObject)?.into_message())
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Envelope::Batch(messages))
        }
        Top::ManyTooLong => Err(EnvelopeError::BatchTooLarge {
            limit: MAX_BATCH_LEN,
        }),
        Top::Other => Err(EnvelopeError::NotAnObject),
    }
}

/// [`parse`], then [`Envelope::check_version`].
pub fn parse_for(bytes: &[u8], version: ProtocolVersion) -> Result<Envelope, EnvelopeError> {
    let envelope = parse(bytes)?;
    envelope.check_version(version)?;
    Ok(envelope)
}

/// Whether arrays/objects nest deeper than `limit` anywhere in `bytes` (brackets inside
/// strings do not count). Works on any bytes; meant to run before a parser with its own,
/// different, limit so that deep input gets a deliberate answer.
pub(crate) fn exceeds_depth(bytes: &[u8], limit: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

// ---------------------------------------------------------------------------------------------
// Borrowing visitors. None of them fails on content it does not like: they record what they
// found (a duplicate member, a value of the wrong type) and keep consuming, so the only errors
// serde_json reports are genuine syntax errors, and the semantic checks happen in one place
// (`RawMessage::into_message`) with precise error variants.

/// A JSON value reduced to what the envelope cares about. Strings are borrowed from the input
/// when they contain no escapes.
#[derive(Debug)]
pub(crate) enum Scalar<'a> {
    Null,
    Str(Cow<'a, str>),
    Number(serde_json::Number),
    /// A boolean, object or array (consumed without being kept).
    Other,
}

impl<'de> Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scalar<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Scalar::Other)
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Scalar::Number(v.into()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Scalar::Number(v.into()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
                Ok(serde_json::Number::from_f64(v).map_or(Scalar::Other, Scalar::Number))
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Scalar::Str(Cow::Owned(v)))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Scalar::Null)
            }
            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(Scalar::Null)
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                Scalar::deserialize(d)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Scalar::Other)
            }
        }
        d.deserialize_any(V)
    }
}

/// An object key, borrowed when it has no escapes. Keys are compared after unescaping, so
/// `"n\u0061me"` is `name` here exactly as it is for the backend's parser.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// `params` (or any object) reduced to the members the proxy reads. Also used by the answer
/// filter to read each list element's `name`, `uri` or `uriTemplate`.
#[derive(Debug, Default)]
pub(crate) struct Params<'a> {
    pub(crate) name: Option<Scalar<'a>>,
    pub(crate) uri: Option<Scalar<'a>>,
    pub(crate) uri_template: Option<Scalar<'a>>,
    /// `notifications.resourceSubscriptions` of `subscriptions/listen`.
    pub(crate) notifications: Option<ListenParams<'a>>,
    /// `_meta`, reduced the same way (only its `traceparent` is used).
    pub(crate) meta: Option<Box<Params<'a>>>,
    /// `traceparent` (read inside `_meta`).
    pub(crate) traceparent: Option<Scalar<'a>>,
    /// First member read here seen twice.
    pub(crate) duplicate: Option<&'static str>,
}

/// `params.notifications` of `subscriptions/listen`, reduced to `resourceSubscriptions`.
#[derive(Debug, Default)]
pub(crate) struct ListenParams<'a> {
    /// The URIs, when the member is an array of strings within [`MAX_SUBSCRIPTIONS`].
    pub(crate) resource_subscriptions: Option<Vec<Cow<'a, str>>>,
    /// The member is there but is not such an array (or appears twice).
    pub(crate) invalid: bool,
}

/// Most resource URIs one `subscriptions/listen` may name.
pub const MAX_SUBSCRIPTIONS: usize = 1024;

impl<'de> Deserialize<'de> for ListenParams<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ListenParams<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut p = ListenParams::default();
                while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
                    if key != "resourceSubscriptions" {
                        map.next_value::<IgnoredAny>()?;
                        continue;
                    }
                    let list = map.next_value::<UriList<'de>>()?;
                    if p.resource_subscriptions.is_some() || p.invalid {
                        p.invalid = true;
                        continue;
                    }
                    match list.0 {
                        Some(uris) => p.resource_subscriptions = Some(uris),
                        None => p.invalid = true,
                    }
                }
                Ok(p)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(ListenParams::not_an_object())
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(ListenParams::not_an_object())
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(ListenParams::not_an_object())
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(ListenParams::not_an_object())
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(ListenParams::not_an_object())
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(ListenParams::not_an_object())
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(ListenParams::not_an_object())
            }
        }
        d.deserialize_any(V)
    }
}

impl ListenParams<'_> {
    fn not_an_object() -> Self {
        ListenParams {
            resource_subscriptions: None,
            invalid: true,
        }
    }
}

/// An array of at most [`MAX_SUBSCRIPTIONS`] strings; `None` for anything else.
struct UriList<'a>(Option<Vec<Cow<'a, str>>>);

impl<'de> Deserialize<'de> for UriList<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = UriList<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut uris = Vec::new();
                let mut ok = true;
                while let Some(item) = seq.next_element::<Scalar<'de>>()? {
                    match item {
                        Scalar::Str(s) if ok && uris.len() < MAX_SUBSCRIPTIONS => uris.push(s),
                        _ => ok = false,
                    }
                }
                Ok(UriList(ok.then_some(uris)))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(UriList(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(UriList(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(UriList(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(UriList(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(UriList(None))
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(UriList(None))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(UriList(None))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Params<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Params<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut p = Params::default();
                while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
                    let (slot, name) = match &*key {
                        "name" => (&mut p.name, "params.name"),
                        "uri" => (&mut p.uri, "params.uri"),
                        "uriTemplate" => (&mut p.uri_template, "params.uriTemplate"),
                        "traceparent" => (&mut p.traceparent, "params._meta.traceparent"),
                        "_meta" => {
                            let value = map.next_value::<Params<'de>>()?;
                            if p.meta.is_some() {
                                p.duplicate.get_or_insert("params._meta");
                            } else {
                                p.meta = Some(Box::new(value));
                            }
                            continue;
                        }
                        "notifications" => {
                            let value = map.next_value::<ListenParams<'de>>()?;
                            if p.notifications.is_some() {
                                p.duplicate.get_or_insert("params.notifications");
                            } else {
                                p.notifications = Some(value);
                            }
                            continue;
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    let value = map.next_value::<Scalar<'de>>()?;
                    if slot.is_some() {
                        p.duplicate.get_or_insert(name);
                    } else {
                        *slot = Some(value);
                    }
                }
                Ok(p)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Params::default())
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Params::default())
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Params::default())
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Params::default())
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Params::default())
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(Params::default())
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Params::default())
            }
        }
        d.deserialize_any(V)
    }
}

/// One JSON-RPC object, as found, before validation.
#[derive(Debug, Default)]
pub(crate) struct RawMessage<'a> {
    pub(crate) jsonrpc: Option<Scalar<'a>>,
    pub(crate) id: Option<Scalar<'a>>,
    pub(crate) method: Option<Scalar<'a>>,
    pub(crate) params: Option<Params<'a>>,
    /// `result` present (any value, `null` included).
    pub(crate) result: bool,
    /// `error` present.
    pub(crate) error: bool,
    /// First member the proxy reads that appeared twice.
    pub(crate) duplicate: Option<&'static str>,
}

struct RawMessageVisitor;

impl<'de> Visitor<'de> for RawMessageVisitor {
    type Value = RawMessage<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON-RPC object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut m = RawMessage::default();
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            let seen = match &*key {
                "jsonrpc" => put(&mut m.jsonrpc, map.next_value()?),
                "id" => put(&mut m.id, map.next_value()?),
                "method" => put(&mut m.method, map.next_value()?),
                "params" => put(&mut m.params, map.next_value()?),
                "result" => {
                    map.next_value::<IgnoredAny>()?;
                    std::mem::replace(&mut m.result, true)
                }
                "error" => {
                    map.next_value::<IgnoredAny>()?;
                    std::mem::replace(&mut m.error, true)
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    false
                }
            };
            if seen && m.duplicate.is_none() {
                m.duplicate = Some(match &*key {
                    "jsonrpc" => "jsonrpc",
                    "id" => "id",
                    "method" => "method",
                    "params" => "params",
                    "result" => "result",
                    _ => "error",
                });
            }
        }
        Ok(m)
    }
}

/// Stores the first value of a member; returns whether one was already there.
fn put<T>(slot: &mut Option<T>, value: T) -> bool {
    if slot.is_some() {
        return true;
    }
    *slot = Some(value);
    false
}

impl<'de> Deserialize<'de> for RawMessage<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(RawMessageVisitor)
    }
}

/// The top level of a body: one object, an array of (maybe) objects, or anything else.
// It lives on the stack for the length of one parse; boxing the single message would cost an
// allocation on every request.
#[allow(clippy::large_enum_variant)]
enum Top<'a> {
    One(RawMessage<'a>),
    /// `None` marks an element that is not an object.
    Many(Vec<Option<RawMessage<'a>>>),
    ManyTooLong,
    Other,
}

/// A batch element: an object, or something else (consumed and marked).
struct Element<'a>(Option<RawMessage<'a>>);

impl<'de> Deserialize<'de> for Element<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Element<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                RawMessageVisitor.visit_map(map).map(|m| Element(Some(m)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Element(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Element(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Element(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Element(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Element(None))
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(Element(None))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Element(None))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Top<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Top<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON-RPC object or batch array")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                RawMessageVisitor.visit_map(map).map(Top::One)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut items = Vec::new();
                while let Some(Element(item)) = seq.next_element::<Element<'de>>()? {
                    if items.len() == MAX_BATCH_LEN {
                        // Keep consuming so syntax errors further on still win.
                        while seq.next_element::<IgnoredAny>()?.is_some() {}
                        return Ok(Top::ManyTooLong);
                    }
                    items.push(item);
                }
                Ok(Top::Many(items))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Top::Other)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Top::Other)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Top::Other)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Top::Other)
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(Top::Other)
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Top::Other)
            }
        }
        d.deserialize_any(V)
    }
}

/// Methods whose target is `params.name`.
const NAME_METHODS: [&str; 2] = ["tools/call", "prompts/get"];
/// The 2026-07-28 long-lived POST whose params name resources to follow.
const LISTEN_METHOD: &str = "subscriptions/listen";
/// Methods whose target is `params.uri`.
const URI_METHODS: [&str; 3] = [
    "resources/read",
    "resources/subscribe",
    "resources/unsubscribe",
];

/// A string member within its length limit.
fn bounded(s: Cow<'_, str>, field: &'static str, limit: usize) -> Result<String, EnvelopeError> {
    if s.len() > limit {
        return Err(EnvelopeError::FieldTooLong { field, limit });
    }
    Ok(s.into_owned())
}

impl RawMessage<'_> {
    /// Validates the raw members and keeps what the proxy needs.
    fn into_message(self) -> Result<Message, EnvelopeError> {
        if let Some(key) = self.duplicate {
            return Err(EnvelopeError::DuplicateKey(key));
        }
        if !matches!(&self.jsonrpc, Some(Scalar::Str(v)) if v == "2.0") {
            return Err(EnvelopeError::WrongVersion);
        }
        // `None`: member absent; `Some(None)`: `"id": null`.
        let id: Option<Option<Id>> = match self.id {
            None => None,
            Some(Scalar::Null) => Some(None),
            Some(Scalar::Number(n)) => Some(Some(Id::Number(n))),
            Some(Scalar::Str(s)) => Some(Some(Id::String(bounded(s, "id", MAX_ID_LEN)?))),
            Some(Scalar::Other) => {
                return Err(EnvelopeError::Invalid("`id` must be a string or a number"));
            }
        };
        let method = match self.method {
            None => None,
            Some(Scalar::Str(s)) => Some(bounded(s, "method", MAX_METHOD_LEN)?),
            Some(_) => return Err(EnvelopeError::Invalid("`method` must be a string")),
        };
        let Some(method) = method else {
            // A response or an error.
            return match (self.result, self.error) {
                (true, true) => Err(EnvelopeError::Invalid(
                    "a message cannot have both `result` and `error`",
                )),
                (true, false) => match id {
                    Some(Some(id)) => Ok(Message {
                        kind: MessageKind::Response,
                        id: Some(id),
                        method: None,
                        tool_name: None,
                        resource_uri: None,
                        subscriptions: Vec::new(),
                        traceparent: None,
                    }),
                    _ => Err(EnvelopeError::Invalid("a response needs a non-null `id`")),
                },
                // JSON-RPC sends `"id": null` when the request id could not be read.
                (false, true) => Ok(Message {
                    kind: MessageKind::Error,
                    id: id.flatten(),
                    method: None,
                    tool_name: None,
                    resource_uri: None,
                    subscriptions: Vec::new(),
                    traceparent: None,
                }),
                (false, false) => Err(EnvelopeError::Invalid(
                    "a message needs `method`, `result` or `error`",
                )),
            };
        };
        if self.result || self.error {
            return Err(EnvelopeError::Invalid(
                "a request cannot have `result` or `error`",
            ));
        }
        let (kind, id) = match id {
            None => (MessageKind::Notification, None),
            Some(Some(id)) => (MessageKind::Request, Some(id)),
            // MCP: "the ID MUST NOT be null".
            Some(None) => return Err(EnvelopeError::Invalid("request `id` must not be null")),
        };
        let mut params = self.params.unwrap_or_default();
        if let Some(key) = params.duplicate {
            return Err(EnvelopeError::DuplicateKey(key));
        }
        // A hostile or repeated `_meta.traceparent` is ignored, like a bad header: tracing
        // context never refuses a call.
        let traceparent = match params.meta.take().map(|m| *m) {
            Some(Params {
                traceparent: Some(Scalar::Str(s)),
                duplicate: None,
                ..
            }) if s.len() <= MAX_TRACEPARENT_LEN => Some(Box::from(&*s)),
            _ => None,
        };
        let mut tool_name = None;
        let mut resource_uri = None;
        let mut subscriptions = Vec::new();
        if let Some(&m) = NAME_METHODS.iter().find(|&&m| m == method) {
            match params.name.take() {
                Some(Scalar::Str(s)) => tool_name = Some(bounded(s, "params.name", MAX_NAME_LEN)?),
                _ => {
                    return Err(EnvelopeError::MissingParam {
                        method: m,
                        param: "name",
                    });
                }
            }
        } else if method == LISTEN_METHOD {
            if let Some(n) = params.notifications.take() {
                match n.resource_subscriptions {
                    Some(uris) if !n.invalid => {
                        for uri in uris {
                            subscriptions.push(bounded(
                                uri,
                                "params.notifications.resourceSubscriptions",
                                MAX_URI_LEN,
                            )?);
                        }
                    }
                    None if !n.invalid => {}
                    _ => {
                        return Err(EnvelopeError::Invalid(
                            "`params.notifications.resourceSubscriptions` must be one array of at most 1024 strings",
                        ));
                    }
                }
            }
        } else if let Some(&m) = URI_METHODS.iter().find(|&&m| m == method) {
            match params.uri.take() {
                Some(Scalar::Str(s)) => resource_uri = Some(bounded(s, "params.uri", MAX_URI_LEN)?),
                _ => {
                    return Err(EnvelopeError::MissingParam {
                        method: m,
                        param: "uri",
                    });
                }
            }
        }
        Ok(Message {
            kind,
            id,
            method: Some(method),
            tool_name,
            resource_uri,
            subscriptions,
            traceparent,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Full, StreamBody};

    fn one(json: &str) -> Message {
        match parse(json.as_bytes()) {
            Ok(Envelope::Single(m)) => m,
            other => panic!("{json}: {other:?}"),
        }
    }

    fn err(json: &[u8]) -> EnvelopeError {
        match parse(json) {
            Err(e) => e,
            Ok(ok) => panic!("{:?} parsed: {ok:?}", String::from_utf8_lossy(json)),
        }
    }

    #[test]
    fn tools_call_request() {
        let m = one(
            r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hi","nested":[1,{"a":null}]}}}"#,
        );
        assert_eq!(m.kind, MessageKind::Request);
        assert_eq!(m.id, Some(Id::from(7i64)));
        assert_eq!(m.method.as_deref(), Some("tools/call"));
        assert_eq!(m.tool_name.as_deref(), Some("echo"));
        assert_eq!(m.resource_uri, None);
        assert_eq!(m.header_name(), Some("echo"));
    }

    #[test]
    fn prompts_and_resources_targets() {
        let m = one(r#"{"jsonrpc":"2.0","id":"a","method":"prompts/get","params":{"name":"p"}}"#);
        assert_eq!(m.tool_name.as_deref(), Some("p"));
        assert_eq!(m.id, Some(Id::from("a")));
        for method in URI_METHODS {
            let m = one(&format!(
                r#"{{"jsonrpc":"2.0","id":1,"method":"{method}","params":{{"uri":"mem://org-a/x","name":"ignored"}}}}"#
            ));
            assert_eq!(m.resource_uri.as_deref(), Some("mem://org-a/x"), "{method}");
            assert_eq!(m.tool_name, None);
        }
    }

    #[test]
    fn escaped_members_are_unescaped_like_any_parser_would() {
        let m = one(
            r#"{"jsonrpc":"2.0","id":1,"m\u0065thod":"tools/call","params":{"n\u0061me":"ec\u0068o"}}"#,
        );
        assert_eq!(m.tool_name.as_deref(), Some("echo"));
        // …so spelling a member twice in two ways is still a duplicate.
        assert!(matches!(
            err(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"a","n\u0061me":"b"}}"#),
            EnvelopeError::DuplicateKey("params.name")
        ));
    }

    #[test]
    fn notification_response_error() {
        let m = one(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
        assert_eq!((m.kind, m.id), (MessageKind::Notification, None));
        let m = one(r#"{"jsonrpc":"2.0","id":3,"result":null}"#);
        assert_eq!(
            (m.kind, m.id),
            (MessageKind::Response, Some(Id::from(3i64)))
        );
        let m = one(r#"{"jsonrpc":"2.0","id":null,"error":{"code":-1,"message":"x"}}"#);
        assert_eq!((m.kind, m.id), (MessageKind::Error, None));
        let m = one(r#"{"jsonrpc":"2.0","id":"r","error":{"code":-1,"message":"x"}}"#);
        assert_eq!(m.kind, MessageKind::Error);
    }

    #[test]
    fn batches() {
        let env = parse(
            br#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"},{"jsonrpc":"2.0","method":"notifications/x"}]"#,
        )
        .unwrap();
        assert!(env.is_batch());
        assert_eq!(env.messages().len(), 2);
        assert!(env.has_requests());
        assert!(env.check_version(ProtocolVersion::V2025_03_26).is_ok());
        for v in [
            ProtocolVersion::V2024_11_05,
            ProtocolVersion::V2025_06_18,
            ProtocolVersion::V2025_11_25,
            ProtocolVersion::V2026_07_28,
        ] {
            assert!(matches!(
                env.check_version(v),
                Err(EnvelopeError::BatchNotAllowed { .. })
            ));
        }
        assert!(matches!(err(b"[]"), EnvelopeError::EmptyBatch));
        assert!(matches!(
            err(br#"[{"jsonrpc":"2.0","method":"a"},1]"#),
            EnvelopeError::NotAnObject
        ));
        assert!(matches!(err(b"[[]]"), EnvelopeError::NotAnObject));
        let many = format!(
            "[{}]",
            vec![r#"{"jsonrpc":"2.0","method":"a"}"#; MAX_BATCH_LEN + 1].join(",")
        );
        assert!(matches!(
            err(many.as_bytes()),
            EnvelopeError::BatchTooLarge { .. }
        ));
        let single = parse(br#"{"jsonrpc":"2.0","method":"a"}"#).unwrap();
        assert!(single.check_version(ProtocolVersion::V2026_07_28).is_ok());
        assert!(!single.has_requests());
    }

    #[test]
    fn hostile_inputs_get_clear_errors() {
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        let e = err(deep.as_bytes());
        assert!(matches!(e, EnvelopeError::TooDeep { .. }));
        assert_eq!(e.rpc_code(), -32700);
        // Brackets inside strings do not count.
        let m = one(&format!(
            r#"{{"jsonrpc":"2.0","method":"a","params":{{"x":"{}"}}}}"#,
            "[".repeat(1000)
        ));
        assert_eq!(m.method.as_deref(), Some("a"));

        let long = "x".repeat(MAX_NAME_LEN + 1);
        let e = err(format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{long}"}}}}"#
        )
        .as_bytes());
        assert!(matches!(
            e,
            EnvelopeError::FieldTooLong {
                field: "params.name",
                ..
            }
        ));
        assert_eq!(e.rpc_code(), -32600);
        // A huge string the proxy does not read is fine.
        let big = "y".repeat(1 << 20);
        let m = one(&format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"t","arguments":{{"blob":"{big}"}}}}}}"#
        ));
        assert_eq!(m.tool_name.as_deref(), Some("t"));

        let e = err(br#"{"jsonrpc":"2.0","id":1,"id":2,"method":"tools/list"}"#);
        assert!(matches!(e, EnvelopeError::DuplicateKey("id")));
        assert_eq!(e.rpc_code(), -32600);
        assert!(matches!(
            err(br#"{"jsonrpc":"2.0","method":"a","method":"b"}"#),
            EnvelopeError::DuplicateKey("method")
        ));

        for bad in [
            &br#"{"jsonrpc":"1.0","method":"a"}"#[..],
            br#"{"method":"a"}"#,
            br#"{"jsonrpc":2.0,"method":"a"}"#,
        ] {
            assert!(matches!(err(bad), EnvelopeError::WrongVersion));
        }
        for bad in [&b"42"[..], b"\"s\"", b"null", b"true"] {
            let e = err(bad);
            assert!(matches!(e, EnvelopeError::NotAnObject));
            assert_eq!(e.rpc_code(), -32600);
        }
        for bad in [
            &b""[..],
            b"{",
            b"{}x",
            b"\xff",
            b"{\"jsonrpc\":\"2.0\",}",
            b"  ",
        ] {
            let e = err(bad);
            assert!(matches!(e, EnvelopeError::Parse(_)), "{bad:?}: {e:?}");
            assert_eq!(e.rpc_code(), -32700);
            assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        }
    }

    #[test]
    fn structural_errors() {
        let cases: [(&[u8], &str); 8] = [
            (
                br#"{"jsonrpc":"2.0","id":{},"method":"a"}"#,
                "invalid_request",
            ),
            (br#"{"jsonrpc":"2.0","id":1,"method":5}"#, "invalid_request"),
            (
                br#"{"jsonrpc":"2.0","id":null,"method":"a"}"#,
                "invalid_request",
            ),
            (br#"{"jsonrpc":"2.0","id":1}"#, "invalid_request"),
            (br#"{"jsonrpc":"2.0","result":{}}"#, "invalid_request"),
            (
                br#"{"jsonrpc":"2.0","id":1,"result":1,"error":{}}"#,
                "invalid_request",
            ),
            (
                br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":3}}"#,
                "missing_param",
            ),
            (
                br#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":[]}"#,
                "missing_param",
            ),
        ];
        for (json, kind) in cases {
            assert_eq!(err(json).kind(), kind, "{}", String::from_utf8_lossy(json));
        }
        let e = err(br#"{"jsonrpc":"2.0","id":1,"method":"tools/call"}"#);
        assert_eq!(e.rpc_code(), -32602);
        let body: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(body["error"]["code"], -32602);
        assert!(body.get("id").is_none());
    }

    #[test]
    fn loose_id_matching() {
        assert!(Id::from(2i64).loosely_matches(&Id::from("2")));
        assert!(Id::from("2").loosely_matches(&Id::from(2u64)));
        assert!(!Id::from(2i64).loosely_matches(&Id::from(3i64)));
        assert!(!Id::from("a").loosely_matches(&Id::from("b")));
        assert_eq!(Id::from(-5i64).to_string(), "-5");
        assert_eq!(serde_json::to_string(&Id::from("x")).unwrap(), "\"x\"");
    }

    #[tokio::test]
    async fn read_capped_limits() {
        let ok = read_capped(Full::new(Bytes::from_static(b"hello")), 5)
            .await
            .unwrap();
        assert_eq!(ok, "hello");
        // Declared length over the cap: refused before reading.
        let e = read_capped(Full::new(Bytes::from_static(b"hello!")), 5)
            .await
            .unwrap_err();
        assert!(matches!(e, EnvelopeError::TooLarge { limit: 5 }));
        assert_eq!(e.status(), StatusCode::PAYLOAD_TOO_LARGE);

        // Streamed without a length: refused at the frame that crosses the cap.
        let frames = |parts: Vec<&'static [u8]>| {
            StreamBody::new(futures_util::stream::iter(parts.into_iter().map(|p| {
                Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from_static(p)))
            })))
        };
        let got = read_capped(frames(vec![b"ab", b"", b"cd", b"e"]), 5)
            .await
            .unwrap();
        assert_eq!(got, "abcde");
        let e = read_capped(frames(vec![b"abc", b"def"]), 5)
            .await
            .unwrap_err();
        assert!(matches!(e, EnvelopeError::TooLarge { .. }));
        let empty = read_capped(frames(vec![]), 5).await.unwrap();
        assert!(empty.is_empty());

        let failing = StreamBody::new(futures_util::stream::iter(vec![
            Ok(http_body::Frame::data(Bytes::from_static(b"a"))),
            Err(std::io::Error::other("reset")),
        ]));
        let e = read_capped(failing, 5).await.unwrap_err();
        assert!(matches!(e, EnvelopeError::Body(_)));
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    fn id() -> impl Strategy<Value = Id> {
        prop_oneof![
            any::<i64>().prop_map(Id::from),
            any::<u64>().prop_map(Id::from),
            "[ -~]{0,20}".prop_map(Id::from),
            "\\PC{0,10}".prop_map(Id::from),
        ]
    }

    /// (message JSON, expected parse)
    fn message() -> impl Strategy<Value = (Value, Message)> {
        let name = "\\PC{0,40}";
        let method = prop_oneof![
            Just("tools/list".to_owned()),
            Just("initialize".to_owned()),
            "[a-z/_]{1,30}",
        ];
        prop_oneof![
            (id(), name).prop_map(|(id, name)| (
                json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":name,"arguments":{"x":[1,2,{"y":"z"}]}}}),
                Message { kind: MessageKind::Request, id: Some(id), method: Some("tools/call".into()), tool_name: Some(name), resource_uri: None, subscriptions: Vec::new(), traceparent: None },
            )),
            (id(), name).prop_map(|(id, uri)| (
                json!({"params":{"uri":uri},"method":"resources/read","id":id,"jsonrpc":"2.0"}),
                Message { kind: MessageKind::Request, id: Some(id), method: Some("resources/read".into()), tool_name: None, resource_uri: Some(uri), subscriptions: Vec::new(), traceparent: None },
            )),
            (id(), method.clone()).prop_map(|(id, method)| (
                json!({"jsonrpc":"2.0","id":id,"method":method,"params":{}}),
                Message { kind: MessageKind::Request, id: Some(id), method: Some(method), tool_name: None, resource_uri: None, subscriptions: Vec::new(), traceparent: None },
            )),
            method.prop_map(|method| (
                json!({"jsonrpc":"2.0","method":method}),
                Message { kind: MessageKind::Notification, id: None, method: Some(method), tool_name: None, resource_uri: None, subscriptions: Vec::new(), traceparent: None },
            )),
            id().prop_map(|id| (
                json!({"jsonrpc":"2.0","id":id,"result":{"content":[]}}),
                Message { kind: MessageKind::Response, id: Some(id), method: None, tool_name: None, resource_uri: None, subscriptions: Vec::new(), traceparent: None },
            )),
            id().prop_map(|id| (
                json!({"jsonrpc":"2.0","id":id,"error":{"code":-32601,"message":"no"}}),
                Message { kind: MessageKind::Error, id: Some(id), method: None, tool_name: None, resource_uri: None, subscriptions: Vec::new(), traceparent: None },
            )),
        ]
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn parse_never_panics_on_jsonish(s in "[\\[\\]{}\",:0-9a-z\\\\ ]{0,200}") {
            let _ = parse(s.as_bytes());
        }

        #[test]
        fn round_trip_single((value, expected) in message(), pretty in any::<bool>()) {
            let text = if pretty { serde_json::to_vec_pretty(&value) } else { serde_json::to_vec(&value) };
            let got = parse(&text.unwrap()).unwrap();
            prop_assert_eq!(got, Envelope::Single(expected));
        }

        #[test]
        fn round_trip_batch(items in prop::collection::vec(message(), 1..6)) {
            let (values, expected): (Vec<Value>, Vec<Message>) = items.into_iter().unzip();
            let got = parse(&serde_json::to_vec(&values).unwrap()).unwrap();
            prop_assert_eq!(got, Envelope::Batch(expected));
        }

        #[test]
        fn truncated_messages_never_parse((value, _) in message(), cut in any::<prop::sample::Index>()) {
            let text = serde_json::to_vec(&value).unwrap();
            let cut = cut.index(text.len());
            // Every strict prefix of an object is invalid JSON.
            prop_assert!(parse(&text[..cut]).is_err());
        }
    }
}
