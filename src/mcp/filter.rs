//! Answer filtering: a principal sees only the tools and resources it may use.
//!
//! Three kinds of lists are filtered, in every answer that carries them, whatever its id:
//!
//! | member of `result` | element kept when |
//! |---|---|
//! | `tools` | its one string `name` is a tool the principal may call |
//! | `resources` | its one string `uri` is inside the principal's namespaces |
//! | `resourceTemplates` | its one string `uriTemplate` is inside the principal's namespaces |
//!
//! and `notifications/resources/updated` events whose `params.uri` is outside the principal's
//! namespaces are dropped, so a principal cannot follow updates of resources it cannot read.
//!
//! Answers are not paired with request ids on purpose: a client may write an id in a form
//! the backend rewrites (`1.0`, `-0`, `1e0`, integers past 2^53), and a filter that paired
//! ids would then pass the whole list. Filtering on the shape of every answer cannot be
//! sidestepped that way.
//!
//! The rewrite is a splice, not a re-serialization: the answer is first validated with
//! serde_json, then a small scanner finds the byte span of each list and the span of each
//! element in it, and only that array is rebuilt from the kept elements' original bytes.
//! Everything else (`nextCursor`, `ttlMs`, `cacheScope`, `_meta`, unknown members, key order,
//! big numbers in schemas) stays byte for byte as the backend wrote it.
//!
//! It fails closed: an element without a clear string key (missing, not a string, or a
//! repeated member) is dropped, and an ambiguous answer (a repeated `result`/`tools`/`id`, a
//! list that is not an array, nesting too deep to parse) is an error rather than passed
//! through.
//!
//! Two entry points share that logic: [`filter_json`] for an `application/json` answer, and
//! [`SseAnswerFilter`] for a `text/event-stream` answer, fed chunk by chunk.

use std::ops::Range;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use serde::de::IgnoredAny;

use super::envelope::{Params, RawMessage, Scalar, exceeds_depth};
use crate::sse::frame::{lines, scan_event_end, split_field};

/// Default cap on one SSE event held while waiting for its end (a big `tools/list` page with
/// rich schemas fits comfortably).
pub const MAX_PENDING_EVENT: usize = 1024 * 1024;

/// Deepest nesting accepted in an answer. Below serde_json's own limit (128), so that a parse
/// failure always means "not JSON" and never "valid JSON too deep for us", which would
/// otherwise let a deep answer through unfiltered.
const MAX_ANSWER_DEPTH: usize = 100;

/// Requests whose answers carry a filtered list.
pub const LIST_METHODS: [&str; 3] = ["tools/list", "resources/list", "resources/templates/list"];

/// The notification that tells a subscriber a resource changed.
const RESOURCE_UPDATED: &str = "notifications/resources/updated";

/// What one principal may see in answers.
pub trait Visibility {
    /// Whether the tool `name` stays in `tools/list` answers.
    fn tool(&self, name: &str) -> bool;
    /// Whether the resource (or resource template) `uri` stays in list answers, and its
    /// update notifications reach the client.
    fn resource(&self, uri: &str) -> bool;
}

impl<T: Visibility + ?Sized> Visibility for Arc<T> {
    fn tool(&self, name: &str) -> bool {
        (**self).tool(name)
    }
    fn resource(&self, uri: &str) -> bool {
        (**self).resource(uri)
    }
}

/// Why an answer could not be filtered. The caller should fail closed (for example 502, or
/// end the stream) rather than pass the original through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// An `application/json` answer that is not JSON.
    #[error("list answer is not valid JSON")]
    NotJson,
    /// Nested deeper than the filter parses.
    #[error("list answer nested deeper than {limit} levels")]
    TooDeep {
        /// The limit.
        limit: usize,
    },
    /// An answer carrying a list is ambiguous or not shaped like a list result.
    #[error("malformed list answer: {0}")]
    Malformed(&'static str),
    /// An SSE event grew past the cap without ending.
    #[error("SSE event exceeds {limit} bytes without ending")]
    EventTooLarge {
        /// The cap.
        limit: usize,
    },
}

/// Filters an `application/json` answer: a single response, or (2025-03-26) an array of them.
///
/// Every response whose `result` carries `tools`, `resources` or `resourceTemplates` gets
/// those lists reduced to what `vis` allows. Anything else (errors, other results) is left
/// alone. Returns `body` itself (no copy) when nothing was removed; otherwise a new body, so
/// the caller must drop any upstream `Content-Length`.
pub fn filter_json<V: Visibility + ?Sized>(body: &Bytes, vis: &V) -> Result<Bytes, FilterError> {
    match rewrite(body, vis)? {
        Rewrite::Unchanged => Ok(body.clone()),
        Rewrite::Changed(new) => Ok(Bytes::from(new)),
        // A JSON answer holds responses only; a dropped notification leaves an empty body.
        Rewrite::Dropped => Ok(Bytes::new()),
        Rewrite::NotJson => Err(FilterError::NotJson),
    }
}

/// Incremental filter for a `text/event-stream` answer or stream.
///
/// Feed upstream chunks to [`feed`](Self::feed); it returns the complete events among them,
/// at once, in order. An event whose `data` (multi-line data joined with `\n`, as the SSE spec
/// says) carries a list loses what `vis` hides and is re-emitted with the same `event:`,
/// `id:`, `retry:` and comment lines and the new data; a resource update the principal may not
/// see keeps only its `id:` and `retry:` lines (so resumption still works) and is not
/// dispatched by clients; every other event (other notifications, priming events with empty
/// data, comments, non-JSON data) passes through byte for byte. At the end of the upstream
/// call [`finish`](Self::finish).
#[derive(Debug)]
pub struct SseAnswerFilter<V> {
    vis: V,
    pending: BytesMut,
    max_event: usize,
    /// Whether the first event (the only place a byte-order mark may sit) has been handled.
    started: bool,
}

impl<V: Visibility> SseAnswerFilter<V> {
    /// A filter keeping what `vis` allows, with the [`MAX_PENDING_EVENT`] cap.
    pub fn new(vis: V) -> Self {
        SseAnswerFilter {
            vis,
            pending: BytesMut::new(),
            max_event: MAX_PENDING_EVENT,
            started: false,
        }
    }

    /// Sets the cap on one pending (incomplete) event.
    pub fn with_max_event(mut self, max_event: usize) -> Self {
        self.max_event = max_event;
        self
    }

    /// Takes upstream bytes, returns the complete events among them (filtered as needed).
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Bytes, FilterError> {
        self.pending.extend_from_slice(chunk);
        let mut out = BytesMut::new();
        while let Some(end) = scan_event_end(&self.pending, false) {
            let event = self.pending.split_to(end);
            self.process(&event, &mut out)?;
        }
        if self.pending.len() > self.max_event {
            return Err(FilterError::EventTooLarge {
                limit: self.max_event,
            });
        }
        Ok(out.freeze())
    }

    /// Called when the upstream ends. A last event that is complete only now (bare-CR line
    /// ends) is processed and returned; an unterminated tail is dropped, as SSE clients
    /// discard it anyway, so an unfinished answer can never slip through unfiltered.
    pub fn finish(&mut self) -> Result<Bytes, FilterError> {
        let pending = self.pending.split();
        let mut out = BytesMut::new();
        if scan_event_end(&pending, true) == Some(pending.len()) {
            self.process(&pending, &mut out)?;
        }
        Ok(out.freeze())
    }

    fn process(&mut self, event: &[u8], out: &mut BytesMut) -> Result<(), FilterError> {
        // SSE clients strip one byte-order mark at the start of the stream; so must the
        // parser here, or `\u{feff}data:` would not be read as a data line and pass unfiltered.
        let mut body = event;
        if !std::mem::replace(&mut self.started, true)
            && let Some(rest) = event.strip_prefix("\u{feff}".as_bytes())
        {
            out.extend_from_slice("\u{feff}".as_bytes());
            body = rest;
        }
        let mut data: Vec<&[u8]> = Vec::new();
        for line in lines(body) {
            let (field, value) = split_field(line);
            if field == b"data" {
                data.push(value);
            }
        }
        if data.iter().all(|d| d.is_empty()) {
            out.extend_from_slice(body);
            return Ok(());
        }
        let joined = data.join(&b"\n"[..]);
        let new_data = match rewrite(&joined, &self.vis)? {
            // Non-JSON data is not a JSON-RPC message; no client can take anything from it.
            Rewrite::Unchanged | Rewrite::NotJson => {
                out.extend_from_slice(body);
                return Ok(());
            }
            Rewrite::Changed(new) => Some(new),
            Rewrite::Dropped => None,
        };
        let mut data_written = false;
        let mut any_line = false;
        for line in lines(body) {
            let (field, _) = split_field(line);
            match &new_data {
                // Every data line is written where the first one was.
                Some(_) if field == b"data" && data_written => {}
                Some(new_data) if field == b"data" => {
                    data_written = true;
                    // The new data holds only `\n` line breaks (it is made of pieces of
                    // `joined`), one data line each.
                    for piece in new_data.split(|&b| b == b'\n') {
                        out.extend_from_slice(b"data: ");
                        out.extend_from_slice(piece);
                        out.extend_from_slice(b"\n");
                    }
                }
                Some(_) => {
                    out.extend_from_slice(line);
                    out.extend_from_slice(b"\n");
                }
                // A dropped event keeps what resumption needs and nothing a client dispatches.
                None if field == b"id" || field == b"retry" => {
                    any_line = true;
                    out.extend_from_slice(line);
                    out.extend_from_slice(b"\n");
                }
                None => {}
            }
        }
        if new_data.is_some() || any_line {
            out.extend_from_slice(b"\n");
        }
        Ok(())
    }
}

/// Outcome of looking at one JSON text.
#[derive(Debug)]
enum Rewrite {
    Unchanged,
    Changed(Vec<u8>),
    /// Every message in it is one the principal may not see.
    Dropped,
    /// Not parseable as JSON at all.
    NotJson,
}

/// What happens to one JSON-RPC message.
enum Fate {
    Keep,
    Replace(Vec<u8>),
    Drop,
}

/// A byte range of the input and what replaces it.
type Splice = (Range<usize>, Vec<u8>);

/// The lists of a result that are filtered, and the member naming each element.
const LISTS: [(&str, ListKind); 3] = [
    ("tools", ListKind::Tool),
    ("resources", ListKind::Resource),
    ("resourceTemplates", ListKind::Template),
];

#[derive(Debug, Clone, Copy)]
enum ListKind {
    Tool,
    Resource,
    Template,
}

/// Filters the messages in one JSON text (an object or an array of objects).
fn rewrite<V: Visibility + ?Sized>(text: &[u8], vis: &V) -> Result<Rewrite, FilterError> {
    if exceeds_depth(text, MAX_ANSWER_DEPTH) {
        return Err(FilterError::TooDeep {
            limit: MAX_ANSWER_DEPTH,
        });
    }
    // Validating first is what makes the scanner below safe to keep simple.
    if serde_json::from_slice::<IgnoredAny>(text).is_err() {
        return Ok(Rewrite::NotJson);
    }
    let mut scan = Scan::new(text);
    scan.ws();
    match scan.peek() {
        Some(b'{') => {
            let span = scan.value().ok_or(FilterError::NotJson)?;
            Ok(match message(text, span, vis)? {
                Fate::Keep => Rewrite::Unchanged,
                Fate::Replace(new) => Rewrite::Changed(new),
                Fate::Drop => Rewrite::Dropped,
            })
        }
        Some(b'[') => {
            let span = scan.value().ok_or(FilterError::NotJson)?;
            let all = elements(text, span).ok_or(FilterError::NotJson)?;
            let mut fates = Vec::with_capacity(all.len());
            for element in &all {
                fates.push(if text.get(element.start) == Some(&b'{') {
                    message(text, element.clone(), vis)?
                } else {
                    Fate::Keep
                });
            }
            if fates.iter().all(|f| matches!(f, Fate::Keep)) {
                return Ok(Rewrite::Unchanged);
            }
            let mut kept: Vec<&[u8]> = Vec::with_capacity(all.len());
            for (element, fate) in all.iter().zip(&fates) {
                match fate {
                    Fate::Keep => kept.push(text.get(element.clone()).ok_or(FilterError::NotJson)?),
                    Fate::Replace(new) => kept.push(new),
                    Fate::Drop => {}
                }
            }
            if kept.is_empty() {
                // An empty batch is not a valid JSON-RPC message: nothing is left to send.
                return Ok(Rewrite::Dropped);
            }
            Ok(Rewrite::Changed(join_array(&kept, text.len())))
        }
        _ => Ok(Rewrite::Unchanged),
    }
}

/// `[a,b,…]` from the elements' bytes.
fn join_array(items: &[&[u8]], capacity: usize) -> Vec<u8> {
    let mut array = Vec::with_capacity(capacity);
    array.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            array.push(b',');
        }
        array.extend_from_slice(item);
    }
    array.push(b']');
    array
}

/// Decides the fate of one message object at `span`: a resource update outside the
/// principal's namespaces is dropped, a result carrying lists loses what `vis` hides.
fn message<V: Visibility + ?Sized>(
    text: &[u8],
    span: Range<usize>,
    vis: &V,
) -> Result<Fate, FilterError> {
    let object = text.get(span.clone()).ok_or(FilterError::NotJson)?;
    let raw: RawMessage<'_> =
        serde_json::from_slice(object).map_err(|_| FilterError::Malformed("not an object"))?;
    if let Some(method) = &raw.method {
        let Scalar::Str(method) = method else {
            // Not a message any client dispatches.
            return Ok(Fate::Keep);
        };
        // Fail closed: with a repeated member the client may read another method or URI.
        if raw.duplicate.is_some() {
            return Ok(Fate::Drop);
        }
        if method != RESOURCE_UPDATED {
            return Ok(Fate::Keep);
        }
        let visible = matches!(
            &raw.params,
            Some(Params { uri: Some(Scalar::Str(uri)), duplicate: None, .. }) if vis.resource(uri)
        );
        return Ok(if visible { Fate::Keep } else { Fate::Drop });
    }
    // Parsers disagree on which copy of a repeated member wins: with two `result`s the client
    // may read another list than the one filtered here.
    if raw.result && raw.duplicate.is_some() {
        return Err(FilterError::Malformed("repeated member in response"));
    }
    if !raw.result {
        return Ok(Fate::Keep);
    }
    let result = unique_member(text, span.clone(), "result")?.ok_or(FilterError::NotJson)?;
    if text.get(result.start) != Some(&b'{') {
        // Not an object: it cannot carry a list a client would read.
        return Ok(Fate::Keep);
    }
    let mut splices: Vec<Splice> = Vec::new();
    for (key, kind) in LISTS {
        let Some(list) = unique_member(text, result.clone(), key)? else {
            continue;
        };
        if text.get(list.start) != Some(&b'[') {
            return Err(FilterError::Malformed(match kind {
                ListKind::Tool => "`result.tools` is not an array",
                ListKind::Resource => "`result.resources` is not an array",
                ListKind::Template => "`result.resourceTemplates` is not an array",
            }));
        }
        let all = elements(text, list.clone()).ok_or(FilterError::NotJson)?;
        let kept: Vec<&[u8]> = all
            .iter()
            .filter_map(|r| text.get(r.clone()))
            .filter(|element| element_visible(element, kind, vis))
            .collect();
        if kept.len() != all.len() {
            let len = list.len();
            splices.push((list, join_array(&kept, len)));
        }
    }
    if splices.is_empty() {
        return Ok(Fate::Keep);
    }
    // Members of one object never overlap; apply them in order.
    splices.sort_by_key(|(r, _)| r.start);
    let mut out = Vec::with_capacity(object.len());
    let mut at = span.start;
    for (range, replacement) in splices {
        out.extend_from_slice(text.get(at..range.start).ok_or(FilterError::NotJson)?);
        out.extend_from_slice(&replacement);
        at = range.end;
    }
    out.extend_from_slice(text.get(at..span.end).ok_or(FilterError::NotJson)?);
    Ok(Fate::Replace(out))
}

/// Whether one list element is kept: it has exactly one string key member (`name`, `uri` or
/// `uriTemplate`) that `vis` accepts, and no repeated member the filter reads.
fn element_visible<V: Visibility + ?Sized>(element: &[u8], kind: ListKind, vis: &V) -> bool {
    let Ok(p) = serde_json::from_slice::<Params<'_>>(element) else {
        return false;
    };
    if p.duplicate.is_some() {
        return false;
    }
    match (kind, p) {
        (
            ListKind::Tool,
            Params {
                name: Some(Scalar::Str(name)),
                ..
            },
        ) => vis.tool(&name),
        (
            ListKind::Resource,
            Params {
                uri: Some(Scalar::Str(uri)),
                ..
            },
        ) => vis.resource(&uri),
        (
            ListKind::Template,
            Params {
                uri_template: Some(Scalar::Str(t)),
                ..
            },
        ) => vis.resource(&t),
        _ => false,
    }
}

/// The value span of member `key` of the object at `span`; an error if it appears twice.
fn unique_member(
    text: &[u8],
    span: Range<usize>,
    key: &str,
) -> Result<Option<Range<usize>>, FilterError> {
    let mut found = None;
    for (k, v) in members(text, span).ok_or(FilterError::NotJson)? {
        // Keys are compared unescaped, as the client's parser will read them.
        let name: String = text
            .get(k)
            .and_then(|k| serde_json::from_slice(k).ok())
            .ok_or(FilterError::NotJson)?;
        if name == key {
            if found.is_some() {
                return Err(FilterError::Malformed("repeated member in response"));
            }
            found = Some(v);
        }
    }
    Ok(found)
}

/// `(key span, value span)` of each member of the object at `span`.
fn members(text: &[u8], span: Range<usize>) -> Option<Vec<(Range<usize>, Range<usize>)>> {
    let mut s = Scan::new(text.get(..span.end)?);
    s.i = span.start;
    s.expect(b'{')?;
    let mut out = Vec::new();
    s.ws();
    if s.peek() == Some(b'}') {
        return Some(out);
    }
    loop {
        s.ws();
        let key = s.string()?;
        s.ws();
        s.expect(b':')?;
        let value = s.value()?;
        out.push((key, value));
        s.ws();
        match s.next()? {
            b',' => {}
            b'}' => return Some(out),
            _ => return None,
        }
    }
}

/// Span of each element of the array at `span`.
fn elements(text: &[u8], span: Range<usize>) -> Option<Vec<Range<usize>>> {
    let mut s = Scan::new(text.get(..span.end)?);
    s.i = span.start;
    s.expect(b'[')?;
    let mut out = Vec::new();
    s.ws();
    if s.peek() == Some(b']') {
        return Some(out);
    }
    loop {
        out.push(s.value()?);
        s.ws();
        match s.next()? {
            b',' => {}
            b']' => return Some(out),
            _ => return None,
        }
    }
}

/// A cursor over a JSON text that serde_json has already accepted: it only needs to find
/// where values start and end, not to validate them. Iterative, so depth costs no stack.
struct Scan<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Scan<'a> {
    fn new(b: &'a [u8]) -> Self {
        Scan { b, i: 0 }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    fn expect(&mut self, c: u8) -> Option<()> {
        (self.next()? == c).then_some(())
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    /// Span of the string at the cursor, quotes included.
    fn string(&mut self) -> Option<Range<usize>> {
        let start = self.i;
        self.expect(b'"')?;
        loop {
            match self.next()? {
                b'\\' => {
                    self.next()?;
                }
                b'"' => return Some(start..self.i),
                _ => {}
            }
        }
    }

    /// Span of the value at the cursor (after optional whitespace).
    fn value(&mut self) -> Option<Range<usize>> {
        self.ws();
        let start = self.i;
        match self.peek()? {
            b'"' => {
                self.string()?;
            }
            b'{' | b'[' => {
                let mut depth = 0usize;
                loop {
                    match self.peek()? {
                        b'"' => {
                            self.string()?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth = depth.checked_sub(1)?;
                            if depth == 0 {
                                self.i += 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                    self.i += 1;
                }
            }
            _ => {
                while let Some(c) = self.peek() {
                    if matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                        break;
                    }
                    self.i += 1;
                }
                if self.i == start {
                    return None;
                }
            }
        }
        Some(start..self.i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// Tools only: every resource visible.
    pub(super) struct Tools<F>(pub(super) F);

    impl<F: Fn(&str) -> bool> Visibility for Tools<F> {
        fn tool(&self, name: &str) -> bool {
            (self.0)(name)
        }
        fn resource(&self, _: &str) -> bool {
            true
        }
    }

    /// A tools/list page shaped like rmcp's output.
    const PAGE: &str = r#"{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"echo","description":"Echo the input back","inputSchema":{"$schema":"http://json-schema.org/draft-07/schema#","type":"object","properties":{"text":{"type":"string"}},"required":["text"],"title":"EchoArgs"},"annotations":{"readOnlyHint":true}},{"name":"delete_everything","description":"Deletes","inputSchema":{"type":"object","properties":{"max":{"type":"integer","maximum":18446744073709551616}}}},{"name":"sum","inputSchema":{"type":"object","properties":{"a":{"type":"number"},"b":{"type":"number"}}},"outputSchema":{"type":"object"}}],"nextCursor":"x","ttlMs":60000,"cacheScope":"principal","x-unknown":{"z":[1,2]}}}"#;

    fn no_delete(name: &str) -> bool {
        !name.starts_with("delete")
    }

    fn names(v: &Value) -> Vec<&str> {
        v["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn json_answer_filtered_and_rest_preserved() {
        let body = Bytes::from_static(PAGE.as_bytes());
        let out = filter_json(&body, &Tools(no_delete)).unwrap();
        let text = std::str::from_utf8(&out).unwrap();
        assert!(!text.contains("delete_everything"));
        // Everything outside the tools array is byte for byte the backend's.
        let (before, after) = PAGE.split_once(r#""tools":"#).unwrap();
        assert!(text.starts_with(before));
        assert!(text.ends_with(&after[after.find(r#"],"nextCursor""#).unwrap() + 1..]));
        // Kept tools are the original bytes (the big integer did not become a float).
        assert!(text.contains(
            r#"{"name":"echo","description":"Echo the input back","inputSchema":{"$schema""#
        ));
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(names(&v), ["echo", "sum"]);
        assert_eq!(v["result"]["nextCursor"], "x");
        assert_eq!(v["result"]["ttlMs"], 60000);
        assert_eq!(v["result"]["cacheScope"], "principal");
        assert_eq!(v["result"]["x-unknown"], json!({"z":[1,2]}));
        assert_eq!(v["id"], 2);
    }

    #[test]
    fn json_answer_untouched_when_nothing_removed() {
        let body = Bytes::from_static(PAGE.as_bytes());
        let out = filter_json(&body, &Tools(|_: &str| true)).unwrap();
        assert_eq!(out.as_ptr(), body.as_ptr(), "no copy when nothing changes");
        let err = Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":2,"error":{"code":-32603,"message":"x"}}"#,
        );
        assert_eq!(filter_json(&err, &Tools(|_: &str| false)).unwrap(), err);
        // Answers are filtered whatever their id: ids written as `1.0`, `-0`, `1e0` or past
        // 2^53 come back rewritten by backends, so pairing by id would let the list through.
        for id in ["2", "\"2\"", "1.0", "-0", "1e0", "9007199254740993", "null"] {
            let text = PAGE.replacen("\"id\":2", &format!("\"id\":{id}"), 1);
            let out = filter_json(&Bytes::from(text), &Tools(|_: &str| false)).unwrap();
            let v: Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(v["result"]["tools"], json!([]), "id {id}");
        }
    }

    #[test]
    fn whitespace_and_escapes() {
        let body = Bytes::from_static(
            b"{ \"id\" : \"t-1\" ,\n \"jsonrpc\":\"2.0\", \"res\\u0075lt\" : { \"tools\" : [ { \"n\\u0061me\" : \"a\" } ,\n { \"name\" : \"b\\u0022\" } , {\"name\":\"c\"} ] , \"nextCursor\" : null } }",
        );
        let out = filter_json(&body, &Tools(|n: &str| n != "b\"")).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(names(&v), ["a", "c"]);
        assert!(v["result"]["nextCursor"].is_null());
        let out = filter_json(&body, &Tools(|_: &str| false)).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["result"]["tools"], json!([]));
    }

    #[test]
    fn tools_without_a_clear_name_are_dropped() {
        let body = Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"ok"},{"title":"no name"},{"name":7},{"name":"ok","name":"evil"},"str",null]}}"#,
        );
        let out = filter_json(&body, &Tools(|_: &str| true)).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["result"]["tools"], json!([{"name":"ok"}]));
    }

    #[test]
    fn ambiguous_answers_are_errors() {
        for (body, want) in [
            (&br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[]},"result":{"tools":[{"name":"x"}]}}"#[..], "repeated"),
            (br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[],"t\u006fols":[{"name":"x"}]}}"#, "repeated"),
            (br#"{"jsonrpc":"2.0","id":1,"id":1,"result":{"tools":[{"name":"x"}]}}"#, "repeated"),
            (br#"{"jsonrpc":"2.0","id":9,"id":1,"result":{"tools":[{"name":"x"}]}}"#, "repeated"),
            (br#"{"jsonrpc":"2.0","id":1,"result":{"tools":{"name":"x"}}}"#, "not an array"),
            (br#"{"jsonrpc":"2.0","id":1,"result":{"resources":{"uri":"x"}}}"#, "not an array"),
            (br#"{"jsonrpc":"2.0","id":1,"result":{"resources":[],"resources":[{"uri":"x"}]}}"#, "repeated"),
        ] {
            let e = filter_json(&Bytes::from_static(body), &Tools(|_: &str| false)).unwrap_err();
            assert!(e.to_string().contains(want), "{e} for {}", String::from_utf8_lossy(body));
        }
        assert_eq!(
            filter_json(&Bytes::from_static(b"{\"id\":1"), &Tools(|_: &str| false)),
            Err(FilterError::NotJson)
        );
        let deep = format!(
            r#"{{"jsonrpc":"2.0","id":1,"result":{{"tools":[{{"name":"a","inputSchema":{}{}}}]}}}}"#,
            "[".repeat(120),
            "]".repeat(120)
        );
        assert!(matches!(
            filter_json(&Bytes::from(deep), &Tools(|_: &str| false)),
            Err(FilterError::TooDeep { .. })
        ));
        // Without lists there is nothing to filter; a result that is not an object carries
        // no list a client would read.
        for body in [
            &br#"{"jsonrpc":"2.0","id":1,"result":{}}"#[..],
            br#"{"jsonrpc":"2.0","id":1,"result":[{"name":"x"}]}"#,
        ] {
            let body = Bytes::from_static(body);
            assert_eq!(filter_json(&body, &Tools(|_: &str| false)).unwrap(), body);
        }
    }

    /// Resources under `memory://a/` only.
    struct OrgA;

    impl Visibility for OrgA {
        fn tool(&self, _: &str) -> bool {
            true
        }
        fn resource(&self, uri: &str) -> bool {
            uri.starts_with("memory://a/")
        }
    }

    #[test]
    fn resource_lists_keep_the_principals_namespace() {
        let body = Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":"r","result":{"resources":[{"uri":"memory://a/1","name":"one"},{"uri":"memory://b/merger-plans","name":"secret"},{"name":"no uri"},{"uri":"memory://a/2","uri":"memory://b/x"}],"nextCursor":"n"}}"#,
        );
        let out = filter_json(&body, &OrgA).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v["result"]["resources"],
            json!([{"uri":"memory://a/1","name":"one"}])
        );
        assert_eq!(v["result"]["nextCursor"], "n");
        let body = Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":3,"result":{"resourceTemplates":[{"uriTemplate":"memory://a/{id}"},{"uriTemplate":"memory://{org}/x"},{"uri":"memory://a/x"}]}}"#,
        );
        let out = filter_json(&body, &OrgA).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            v["result"]["resourceTemplates"],
            json!([{"uriTemplate":"memory://a/{id}"}])
        );
    }

    #[test]
    fn resource_updates_outside_the_namespace_are_dropped() {
        let f = |text: &'static str| run_with(OrgA, text.as_bytes());
        let inside = "id: 7
data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/resources/updated\",\"params\":{\"uri\":\"memory://a/x\"}}\n\n";
        assert_eq!(f(inside), inside);
        assert_eq!(
            f(
                "event: message\nid: 8\nretry: 10\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/resources/updated\",\"params\":{\"uri\":\"secret://x\"}}\n\n"
            ),
            "id: 8\nretry: 10\n\n",
            "only what resumption needs is left"
        );
        for hidden in [
            "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/resources/updated\",\"params\":{\"uri\":\"memory://b/x\"}}\n\n",
            "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/resources/updated\",\"params\":{}}\n\n",
            "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/resources/updated\",\"params\":{\"uri\":\"memory://a/x\",\"uri\":\"memory://b/x\"}}\n\n",
            "data: {\"jsonrpc\":\"2.0\",\"method\":\"tools/list\",\"method\":\"notifications/resources/updated\",\"params\":{\"uri\":\"memory://b/x\"}}\n\n",
        ] {
            assert_eq!(f(hidden), "", "{hidden}");
        }
        // In a batch only the hidden update goes.
        let out = f(
            "data: [{\"jsonrpc\":\"2.0\",\"method\":\"notifications/resources/updated\",\"params\":{\"uri\":\"memory://b/x\"}},{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{}}]\n\n",
        );
        assert_eq!(
            out,
            "data: [{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{}}]\n\n"
        );
        // Other notifications pass untouched.
        let other =
            "data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/resources/list_changed\"}\n\n";
        assert_eq!(f(other), other);
    }

    fn run_with<V: Visibility>(vis: V, input: &[u8]) -> String {
        let mut f = SseAnswerFilter::new(vis);
        let mut out = f.feed(input).unwrap().to_vec();
        out.extend_from_slice(&f.finish().unwrap());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn batch_answers() {
        let body = Bytes::from_static(
            br#"[{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a"},{"name":"b"}]}},{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"a"},{"name":"b"}]}},{"jsonrpc":"2.0","id":3,"result":{"tools":[{"name":"b"}]}}]"#,
        );
        let out = filter_json(&body, &Tools(|n: &str| n == "a")).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        for i in 0..2 {
            assert_eq!(v[i]["result"]["tools"], json!([{"name":"a"}]));
        }
        assert_eq!(v[2]["result"]["tools"], json!([]));
    }

    fn run_sse(
        input: &[u8],
        cuts: &[usize],
        allow: fn(&str) -> bool,
    ) -> Result<Vec<u8>, FilterError> {
        let mut f = SseAnswerFilter::new(Tools(allow));
        let mut out = Vec::new();
        let mut at = 0;
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        points.sort_unstable();
        points.push(input.len());
        for p in points {
            out.extend_from_slice(&f.feed(&input[at..p])?);
            at = p;
        }
        out.extend_from_slice(&f.finish()?);
        Ok(out)
    }

    #[test]
    fn sse_answer_filtered_others_pass() {
        let stream = format!(
            "id: 0\nretry: 3000\ndata:\n\n\
             : keep-alive\n\n\
             event: message\ndata: {{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{{\"progress\":1,\"tools\":[{{\"name\":\"delete_x\"}}]}}}}\nid: 1\n\n\
             event: message\ndata: {PAGE}\nid: 2\n\n"
        );
        let out = run_sse(stream.as_bytes(), &[], no_delete).unwrap();
        let text = String::from_utf8(out).unwrap();
        let events: Vec<&str> = text.split("\n\n").collect();
        // Priming event, comment and notification: byte for byte.
        assert_eq!(events[0], "id: 0\nretry: 3000\ndata:");
        assert_eq!(events[1], ": keep-alive");
        assert!(
            events[2].contains("delete_x"),
            "notifications are not filtered"
        );
        // The answer: same fields, filtered data.
        let answer = events[3];
        assert!(answer.starts_with("event: message\ndata: {"), "{answer}");
        assert!(answer.ends_with("\nid: 2"), "{answer}");
        assert!(!answer.contains("delete_everything"));
        let data = answer
            .lines()
            .find_map(|l| l.strip_prefix("data: "))
            .unwrap();
        let v: Value = serde_json::from_str(data).unwrap();
        assert_eq!(names(&v), ["echo", "sum"]);
        assert_eq!(v["result"]["nextCursor"], "x");
        assert_eq!(events[4], "");
    }

    #[test]
    fn sse_multiline_data_and_crlf() {
        let pretty =
            serde_json::to_string_pretty(&serde_json::from_str::<Value>(PAGE).unwrap()).unwrap();
        let mut stream = String::from("id: abc\r\n");
        for line in pretty.lines() {
            stream.push_str("data: ");
            stream.push_str(line);
            stream.push_str("\r\n");
        }
        stream.push_str("\r\n");
        let out = run_sse(stream.as_bytes(), &[], no_delete).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("id: abc\ndata: {\n"), "{text}");
        assert!(text.ends_with("\n\n"));
        // Reassemble the data the way a client does.
        let data: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("data: ").or(l.strip_prefix("data:")))
            .collect();
        let v: Value = serde_json::from_str(&data.join("\n")).unwrap();
        assert_eq!(names(&v), ["echo", "sum"]);
    }

    #[test]
    fn sse_bom_and_caps_and_tail() {
        let stream = format!("\u{feff}data: {PAGE}\n\n");
        let out = run_sse(stream.as_bytes(), &[], no_delete).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with('\u{feff}'));
        assert!(!text.contains("delete_everything"));

        let mut f = SseAnswerFilter::new(Tools(no_delete)).with_max_event(16);
        assert!(f.feed(b"data: 0123456789").is_ok());
        assert_eq!(
            f.feed(b"abcdef"),
            Err(FilterError::EventTooLarge { limit: 16 })
        );

        // An unterminated answer at the end of the stream is dropped, never passed unfiltered.
        let mut f = SseAnswerFilter::new(Tools(no_delete));
        assert!(
            f.feed(format!("data: {PAGE}\n").as_bytes())
                .unwrap()
                .is_empty()
        );
        assert!(f.finish().unwrap().is_empty());

        // Bare-CR events complete only at the end are still filtered.
        let mut f = SseAnswerFilter::new(Tools(no_delete));
        assert!(
            f.feed(format!("data: {PAGE}\r\r").as_bytes())
                .unwrap()
                .is_empty()
        );
        let last = f.finish().unwrap();
        assert!(
            last.starts_with(b"data: {") && !String::from_utf8_lossy(&last).contains("delete_")
        );

        // A malformed answer ends the stream with an error.
        let mut f = SseAnswerFilter::new(Tools(no_delete));
        let bad = b"data: {\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{\"tools\":1}}\n\n";
        assert!(matches!(f.feed(bad), Err(FilterError::Malformed(_))));
        // Non-JSON data passes.
        let mut f = SseAnswerFilter::new(Tools(no_delete));
        assert_eq!(&f.feed(b"data: ping\n\n").unwrap()[..], b"data: ping\n\n");
    }
}

#[cfg(test)]
mod props {
    use super::tests::Tools;
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    fn tool() -> impl Strategy<Value = Value> {
        (
            prop_oneof![Just("echo"), Just("secret_a"), Just("sum"), Just("secret_b"), Just("x y")],
            "[ -~]{0,20}",
        )
            .prop_map(|(name, desc)| json!({"name": name, "description": desc, "inputSchema": {"type":"object"}}))
    }

    /// A stream of SSE events: tools/list answers (single or multi-line data, any id),
    /// notifications, priming events, comments; with mixed line terminators.
    fn stream() -> impl Strategy<Value = Vec<u8>> {
        let term = prop_oneof![Just("\n"), Just("\r\n"), Just("\r")];
        let event = (
            0u8..5,
            prop::collection::vec(tool(), 0..4),
            any::<bool>(),
            0u32..5,
            term,
        )
            .prop_map(|(kind, tools, pretty, id, t)| {
                let answer = json!({"jsonrpc":"2.0","id":id,"result":{"tools":tools,"nextCursor":"c"}});
                let data = match kind {
                    0 | 1 if pretty => serde_json::to_string_pretty(&answer).unwrap_or_default(),
                    0 | 1 => answer.to_string(),
                    2 => json!({"jsonrpc":"2.0","method":"notifications/message","params":{"data":"secret_a"}}).to_string(),
                    3 => String::new(),
                    _ => return format!(": comment secret_b{t}{t}"),
                };
                let mut e = format!("event: message{t}id: e{id}{t}");
                for line in data.split('\n') {
                    e.push_str("data: ");
                    e.push_str(line);
                    e.push_str(t);
                }
                if kind == 3 {
                    e.push_str("retry: 1000");
                    e.push_str(t);
                }
                e.push_str(t);
                e
            });
        prop::collection::vec(event, 0..6).prop_map(|events| events.concat().into_bytes())
    }

    fn allow(name: &str) -> bool {
        !name.starts_with("secret")
    }

    fn run(input: &[u8], cuts: &[usize]) -> Result<Vec<u8>, FilterError> {
        let mut f = SseAnswerFilter::new(Tools(allow));
        let mut out = Vec::new();
        let mut at = 0;
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        points.sort_unstable();
        points.push(input.len());
        for p in points {
            out.extend_from_slice(&f.feed(&input[at..p])?);
            at = p;
        }
        out.extend_from_slice(&f.finish()?);
        Ok(out)
    }

    /// Data of each event, the way an SSE client reads it.
    fn client_view(stream: &[u8]) -> Vec<String> {
        let text = String::from_utf8_lossy(stream);
        let mut events = Vec::new();
        let mut data: Option<Vec<String>> = None;
        for line in text.split("\r\n").flat_map(|l| l.split(['\r', '\n'])) {
            if line.is_empty() {
                if let Some(d) = data.take() {
                    events.push(d.join("\n"));
                }
            } else if let Some(v) = line.strip_prefix("data:") {
                data.get_or_insert_with(Vec::new)
                    .push(v.strip_prefix(' ').unwrap_or(v).to_owned());
            }
        }
        events
    }

    proptest! {
        #[test]
        fn output_does_not_depend_on_chunking(input in stream(), cuts in prop::collection::vec(any::<usize>(), 0..16)) {
            prop_assert_eq!(run(&input, &[]), run(&input, &cuts));
        }

        #[test]
        fn answers_lose_denied_tools_only(input in stream()) {
            let out = run(&input, &[]).unwrap();
            let before = client_view(&input);
            let after = client_view(&out);
            prop_assert_eq!(before.len(), after.len());
            for (b, a) in before.iter().zip(&after) {
                let (Ok(b), Ok(a)) = (serde_json::from_str::<Value>(b), serde_json::from_str::<Value>(a)) else {
                    prop_assert_eq!(b, a);
                    continue;
                };
                if b.get("result").is_some() {
                    let mut expect = b.clone();
                    if let Some(tools) = expect["result"]["tools"].as_array_mut() {
                        tools.retain(|t| t["name"].as_str().is_some_and(allow));
                    }
                    prop_assert_eq!(a, expect);
                } else {
                    prop_assert_eq!(a, b);
                }
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(input in prop::collection::vec(any::<u8>(), 0..1024), cuts in prop::collection::vec(any::<usize>(), 0..8)) {
            let _ = run(&input, &cuts);
            let _ = filter_json(&Bytes::from(input), &Tools(allow));
        }

        #[test]
        fn jsonish_never_panics(s in "[\\[\\]{}\",:0-9a-z\\\\ ]{0,200}") {
            let _ = filter_json(&Bytes::from(s.clone()), &Tools(allow));
            let _ = run(format!("data: {s}\n\n").as_bytes(), &[]);
        }
    }

    #[test]
    fn every_tools_answer_is_filtered_and_nothing_else() {
        let mut f = SseAnswerFilter::new(Tools(|t: &str| t == "ok"));
        let input = concat!(
            "id: 1\ndata: {\"jsonrpc\":\"2.0\",\"id\":\"x\",\"result\":{\"tools\":[{\"name\":\"ok\"},{\"name\":\"no\"}]}}\n\n",
            "data: {\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{\"content\":[]}}\n\n",
            "data: {\"jsonrpc\":\"2.0\",\"id\":8,\"result\":\"odd\"}\n\n",
        );
        let mut out = f.feed(input.as_bytes()).unwrap().to_vec();
        out.extend_from_slice(&f.finish().unwrap());
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("{\"name\":\"ok\"}") && !text.contains("\"no\""),
            "{text}"
        );
        assert!(text.contains("id: 1\n"), "{text}");
        assert!(
            text.contains("\"content\":[]") && text.contains("\"odd\""),
            "{text}"
        );
    }
}
