//! `tools/list` answer filtering: a principal sees only the tools it may call.
//!
//! The rewrite is a splice, not a re-serialization: the answer is first validated with
//! serde_json, then a small scanner finds the byte span of `result.tools` and the span of each
//! tool in it, and only that array is rebuilt from the kept tools' original bytes. Everything
//! else (`nextCursor`, `ttlMs`, `cacheScope`, `_meta`, unknown members, key order, big numbers
//! in schemas) stays byte for byte as the backend wrote it.
//!
//! It fails closed: a tool without a string `name` (or with two) is dropped, and an answer to
//! the tracked request that is ambiguous (a repeated `result`/`tools`/`id`, `tools` not an
//! array, nesting too deep to parse) is an error rather than passed through.
//!
//! Two entry points share that logic: [`filter_json`] for an `application/json` answer, and
//! [`SseToolsFilter`] for a `text/event-stream` answer, fed chunk by chunk.

use std::ops::Range;

use bytes::{Bytes, BytesMut};
use serde::de::IgnoredAny;

use super::envelope::{Id, Params, RawMessage, Scalar, exceeds_depth};
use crate::sse::legacy::{lines, scan_event_end, split_field};

/// Default cap on one SSE event held while waiting for its end (a big `tools/list` page with
/// rich schemas fits comfortably).
pub const MAX_PENDING_EVENT: usize = 1024 * 1024;

/// Deepest nesting accepted in an answer. Below serde_json's own limit (128), so that a parse
/// failure always means "not JSON" and never "valid JSON too deep for us", which would
/// otherwise let a deep answer through unfiltered.
const MAX_ANSWER_DEPTH: usize = 100;

/// Why an answer could not be filtered. The caller should fail closed (for example 502, or
/// end the stream) rather than pass the original through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// An `application/json` answer that is not JSON.
    #[error("tools/list answer is not valid JSON")]
    NotJson,
    /// Nested deeper than the filter parses.
    #[error("tools/list answer nested deeper than {limit} levels")]
    TooDeep {
        /// The limit.
        limit: usize,
    },
    /// The answer to the tracked request is ambiguous or not shaped like a `tools/list` result.
    #[error("malformed tools/list answer: {0}")]
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
/// Responses whose `id` matches one of `ids` (loosely: `2` matches `"2"`) get `result.tools`
/// reduced to the tools for which `allow(name)` is true. Anything else (errors, other ids) is
/// left alone. Returns `body` itself (no copy) when nothing was removed; otherwise a new body,
/// so the caller must drop any upstream `Content-Length`.
pub fn filter_json<F>(body: &Bytes, ids: &[Id], allow: F) -> Result<Bytes, FilterError>
where
    F: Fn(&str) -> bool,
{
    match rewrite(body, Track::Ids(ids), &allow)? {
        Rewrite::Unchanged => Ok(body.clone()),
        Rewrite::Changed(new) => Ok(Bytes::from(new)),
        Rewrite::NotJson => Err(FilterError::NotJson),
    }
}

/// Incremental filter for a `text/event-stream` answer to a `tools/list` request.
///
/// Feed upstream chunks to [`feed`](Self::feed); it returns the complete events among them,
/// at once, in order. An event whose `data` (multi-line data joined with `\n`, as the SSE spec
/// says) is a response to one of the tracked ids has its tools filtered and is re-emitted with
/// the same `event:`, `id:`, `retry:` and comment lines and the new data; every other event
/// (notifications, priming events with empty data, comments, non-JSON data) passes through
/// byte for byte. At the end of the upstream call [`finish`](Self::finish).
#[derive(Debug)]
pub struct SseToolsFilter<F> {
    ids: Vec<Id>,
    /// Filter every `tools/list`-shaped answer, whatever its id (streams whose requests the
    /// proxy did not see: legacy SSE streams and resumed GET streams).
    any_id: bool,
    allow: F,
    pending: BytesMut,
    max_event: usize,
    /// Whether the first event (the only place a byte-order mark may sit) has been handled.
    started: bool,
}

impl<F: Fn(&str) -> bool> SseToolsFilter<F> {
    /// A filter for answers to `ids` (usually the one id of the `tools/list` request), keeping
    /// the tools for which `allow(name)` is true, with the [`MAX_PENDING_EVENT`] cap.
    pub fn new(ids: Vec<Id>, allow: F) -> Self {
        SseToolsFilter {
            ids,
            any_id: false,
            allow,
            pending: BytesMut::new(),
            max_event: MAX_PENDING_EVENT,
            started: false,
        }
    }

    /// A filter for every answer that carries `result.tools`, whatever its id: for streams
    /// that carry answers to requests the proxy did not pair them with.
    pub fn any_id(allow: F) -> Self {
        let mut f = Self::new(Vec::new(), allow);
        f.any_id = true;
        f
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
        let track = if self.any_id {
            Track::Any
        } else {
            Track::Ids(&self.ids)
        };
        let new_data = match rewrite(&joined, track, &self.allow)? {
            // Non-JSON data is not a JSON-RPC message; no client can take tools from it.
            Rewrite::Unchanged | Rewrite::NotJson => {
                out.extend_from_slice(body);
                return Ok(());
            }
            Rewrite::Changed(new) => new,
        };
        let mut data_written = false;
        for line in lines(body) {
            let (field, _) = split_field(line);
            if field != b"data" {
                out.extend_from_slice(line);
                out.extend_from_slice(b"\n");
            } else if !data_written {
                data_written = true;
                // The new data holds only `\n` line breaks (it is made of pieces of `joined`),
                // one data line each.
                for piece in new_data.split(|&b| b == b'\n') {
                    out.extend_from_slice(b"data: ");
                    out.extend_from_slice(piece);
                    out.extend_from_slice(b"\n");
                }
            }
        }
        out.extend_from_slice(b"\n");
        Ok(())
    }
}

/// Outcome of looking at one JSON text.
#[derive(Debug)]
enum Rewrite {
    Unchanged,
    Changed(Vec<u8>),
    /// Not parseable as JSON at all.
    NotJson,
}

/// A byte range of the input and what replaces it.
type Splice = (Range<usize>, Vec<u8>);

/// Which responses are `tools/list` answers to filter.
#[derive(Debug, Clone, Copy)]
enum Track<'a> {
    /// Answers to these request ids.
    Ids(&'a [Id]),
    /// Every answer whose `result` has `tools`.
    Any,
}

impl Track<'_> {
    fn matches(self, id: &Id) -> bool {
        match self {
            Track::Ids(ids) => ids.iter().any(|t| t.loosely_matches(id)),
            Track::Any => true,
        }
    }
}

/// Filters the tracked responses in one JSON text (an object or an array of objects).
fn rewrite<F: Fn(&str) -> bool>(
    text: &[u8],
    ids: Track<'_>,
    allow: &F,
) -> Result<Rewrite, FilterError> {
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
    let splices = match scan.peek() {
        Some(b'{') => {
            let span = scan.value().ok_or(FilterError::NotJson)?;
            response_splice(text, span, ids, allow)?
                .into_iter()
                .collect()
        }
        Some(b'[') => {
            let span = scan.value().ok_or(FilterError::NotJson)?;
            let mut splices = Vec::new();
            for element in elements(text, span).ok_or(FilterError::NotJson)? {
                if text.get(element.start) == Some(&b'{') {
                    splices.extend(response_splice(text, element, ids, allow)?);
                }
            }
            splices
        }
        _ => Vec::new(),
    };
    if splices.is_empty() {
        return Ok(Rewrite::Unchanged);
    }
    let mut out = Vec::with_capacity(text.len());
    let mut at = 0;
    for (range, replacement) in splices {
        out.extend_from_slice(text.get(at..range.start).ok_or(FilterError::NotJson)?);
        out.extend_from_slice(&replacement);
        at = range.end;
    }
    out.extend_from_slice(text.get(at..).ok_or(FilterError::NotJson)?);
    Ok(Rewrite::Changed(out))
}

/// For one response object at `span`: the replacement of its `result.tools` array, if it
/// answers a tracked id and loses tools.
fn response_splice<F: Fn(&str) -> bool>(
    text: &[u8],
    span: Range<usize>,
    ids: Track<'_>,
    allow: &F,
) -> Result<Option<Splice>, FilterError> {
    let object = text.get(span.clone()).ok_or(FilterError::NotJson)?;
    let raw: RawMessage<'_> =
        serde_json::from_slice(object).map_err(|_| FilterError::Malformed("not an object"))?;
    // Parsers disagree on which copy of a repeated member wins: with two `id`s the client may
    // match another id than the one compared here, with two `result`s read another list.
    if raw.result && raw.duplicate.is_some() {
        return Err(FilterError::Malformed("repeated member in response"));
    }
    let id = match &raw.id {
        Some(Scalar::Number(n)) => Id::Number(n.clone()),
        Some(Scalar::Str(s)) => Id::String(s.clone().into_owned()),
        _ => return Ok(None),
    };
    if !raw.result || !ids.matches(&id) {
        return Ok(None);
    }
    let result = unique_member(text, span, "result")?.ok_or(FilterError::NotJson)?;
    if text.get(result.start) != Some(&b'{') {
        // Any other method's answer may be shaped differently; only a tracked id is sure
        // to be a `tools/list` answer.
        if matches!(ids, Track::Any) {
            return Ok(None);
        }
        return Err(FilterError::Malformed("`result` is not an object"));
    }
    let Some(tools) = unique_member(text, result, "tools")? else {
        return Ok(None);
    };
    if text.get(tools.start) != Some(&b'[') {
        return Err(FilterError::Malformed("`result.tools` is not an array"));
    }
    let all = elements(text, tools.clone()).ok_or(FilterError::NotJson)?;
    let kept: Vec<&[u8]> = all
        .iter()
        .filter_map(|r| text.get(r.clone()))
        .filter(|tool| tool_allowed(tool, allow))
        .collect();
    if kept.len() == all.len() {
        return Ok(None);
    }
    let mut array = Vec::with_capacity(tools.len());
    array.push(b'[');
    for (i, tool) in kept.iter().enumerate() {
        if i > 0 {
            array.push(b',');
        }
        array.extend_from_slice(tool);
    }
    array.push(b']');
    Ok(Some((tools, array)))
}

/// Whether one tool object is kept: it has exactly one `name`, a string, that `allow` accepts.
fn tool_allowed<F: Fn(&str) -> bool>(tool: &[u8], allow: &F) -> bool {
    match serde_json::from_slice::<Params<'_>>(tool) {
        Ok(Params {
            name: Some(Scalar::Str(name)),
            duplicate,
            ..
        }) if duplicate != Some("params.name") => allow(&name),
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
        let out = filter_json(&body, &[Id::from(2i64)], no_delete).unwrap();
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
    fn json_answer_untouched_when_nothing_removed_or_not_tracked() {
        let body = Bytes::from_static(PAGE.as_bytes());
        let out = filter_json(&body, &[Id::from(2i64)], |_| true).unwrap();
        assert_eq!(out.as_ptr(), body.as_ptr(), "no copy when nothing changes");
        let out = filter_json(&body, &[Id::from(3i64)], |_| false).unwrap();
        assert_eq!(out, body);
        let err = Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":2,"error":{"code":-32603,"message":"x"}}"#,
        );
        assert_eq!(
            filter_json(&err, &[Id::from(2i64)], |_| false).unwrap(),
            err
        );
        // A string id matches the numeric one: filtering too much is the safe direction.
        let out = filter_json(&body, &[Id::from("2")], |_| false).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["result"]["tools"], json!([]));
    }

    #[test]
    fn whitespace_and_escapes() {
        let body = Bytes::from_static(
            b"{ \"id\" : \"t-1\" ,\n \"jsonrpc\":\"2.0\", \"res\\u0075lt\" : { \"tools\" : [ { \"n\\u0061me\" : \"a\" } ,\n { \"name\" : \"b\\u0022\" } , {\"name\":\"c\"} ] , \"nextCursor\" : null } }",
        );
        let out = filter_json(&body, &[Id::from("t-1")], |n| n != "b\"").unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(names(&v), ["a", "c"]);
        assert!(v["result"]["nextCursor"].is_null());
        let out = filter_json(&body, &[Id::from("t-1")], |_| false).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["result"]["tools"], json!([]));
    }

    #[test]
    fn tools_without_a_clear_name_are_dropped() {
        let body = Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"ok"},{"title":"no name"},{"name":7},{"name":"ok","name":"evil"},"str",null]}}"#,
        );
        let out = filter_json(&body, &[Id::from(1i64)], |_| true).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["result"]["tools"], json!([{"name":"ok"}]));
    }

    #[test]
    fn ambiguous_answers_are_errors() {
        let ids = [Id::from(1i64)];
        for (body, want) in [
            (&br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[]},"result":{"tools":[{"name":"x"}]}}"#[..], "repeated"),
            (br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[],"t\u006fols":[{"name":"x"}]}}"#, "repeated"),
            (br#"{"jsonrpc":"2.0","id":1,"id":1,"result":{"tools":[{"name":"x"}]}}"#, "repeated"),
            // The first id is not tracked, but a client may read the second one.
            (br#"{"jsonrpc":"2.0","id":9,"id":1,"result":{"tools":[{"name":"x"}]}}"#, "repeated"),
            (br#"{"jsonrpc":"2.0","id":1,"result":{"tools":{"name":"x"}}}"#, "not an array"),
            (br#"{"jsonrpc":"2.0","id":1,"result":[{"name":"x"}]}"#, "not an object"),
        ] {
            let e = filter_json(&Bytes::from_static(body), &ids, |_| false).unwrap_err();
            assert!(e.to_string().contains(want), "{e} for {}", String::from_utf8_lossy(body));
        }
        assert_eq!(
            filter_json(&Bytes::from_static(b"{\"id\":1"), &ids, |_| false),
            Err(FilterError::NotJson)
        );
        let deep = format!(
            r#"{{"jsonrpc":"2.0","id":1,"result":{{"tools":[{{"name":"a","inputSchema":{}{}}}]}}}}"#,
            "[".repeat(120),
            "]".repeat(120)
        );
        assert!(matches!(
            filter_json(&Bytes::from(deep), &ids, |_| false),
            Err(FilterError::TooDeep { .. })
        ));
        // Without tools there is nothing to filter.
        let empty = Bytes::from_static(br#"{"jsonrpc":"2.0","id":1,"result":{}}"#);
        assert_eq!(filter_json(&empty, &ids, |_| false).unwrap(), empty);
    }

    #[test]
    fn batch_answers() {
        let body = Bytes::from_static(
            br#"[{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"a"},{"name":"b"}]}},{"jsonrpc":"2.0","id":2,"result":{"tools":[{"name":"a"},{"name":"b"}]}},{"jsonrpc":"2.0","id":3,"result":{"tools":[{"name":"b"}]}}]"#,
        );
        let out = filter_json(&body, &[Id::from(1i64), Id::from(3i64)], |n| n == "a").unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v[0]["result"]["tools"], json!([{"name":"a"}]));
        assert_eq!(v[1]["result"]["tools"], json!([{"name":"a"},{"name":"b"}]));
        assert_eq!(v[2]["result"]["tools"], json!([]));
    }

    fn run_sse(
        input: &[u8],
        cuts: &[usize],
        allow: fn(&str) -> bool,
    ) -> Result<Vec<u8>, FilterError> {
        let mut f = SseToolsFilter::new(vec![Id::from(2i64)], allow);
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

        let mut f = SseToolsFilter::new(vec![Id::from(2i64)], no_delete).with_max_event(16);
        assert!(f.feed(b"data: 0123456789").is_ok());
        assert_eq!(
            f.feed(b"abcdef"),
            Err(FilterError::EventTooLarge { limit: 16 })
        );

        // An unterminated answer at the end of the stream is dropped, never passed unfiltered.
        let mut f = SseToolsFilter::new(vec![Id::from(2i64)], no_delete);
        assert!(
            f.feed(format!("data: {PAGE}\n").as_bytes())
                .unwrap()
                .is_empty()
        );
        assert!(f.finish().unwrap().is_empty());

        // Bare-CR events complete only at the end are still filtered.
        let mut f = SseToolsFilter::new(vec![Id::from(2i64)], no_delete);
        assert!(
            f.feed(format!("data: {PAGE}\r\r").as_bytes())
                .unwrap()
                .is_empty()
        );
        let last = f.finish().unwrap();
        assert!(
            last.starts_with(b"data: {") && !String::from_utf8_lossy(&last).contains("delete_")
        );

        // A malformed answer to the tracked id ends the stream with an error.
        let mut f = SseToolsFilter::new(vec![Id::from(2i64)], no_delete);
        let bad = b"data: {\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{\"tools\":1}}\n\n";
        assert!(matches!(f.feed(bad), Err(FilterError::Malformed(_))));
        // Non-JSON data passes.
        let mut f = SseToolsFilter::new(vec![Id::from(2i64)], no_delete);
        assert_eq!(&f.feed(b"data: ping\n\n").unwrap()[..], b"data: ping\n\n");
    }
}

#[cfg(test)]
mod props {
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

    /// A stream of SSE events: tools/list answers (single or multi-line data, id 2 or not),
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
        let mut f = SseToolsFilter::new(vec![Id::from(2i64)], allow);
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
        fn tracked_answers_lose_denied_tools_only(input in stream()) {
            let out = run(&input, &[]).unwrap();
            let before = client_view(&input);
            let after = client_view(&out);
            prop_assert_eq!(before.len(), after.len());
            for (b, a) in before.iter().zip(&after) {
                let (Ok(b), Ok(a)) = (serde_json::from_str::<Value>(b), serde_json::from_str::<Value>(a)) else {
                    prop_assert_eq!(b, a);
                    continue;
                };
                if b["id"] == json!(2) {
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
            let _ = filter_json(&Bytes::from(input), &[Id::from(2i64)], allow);
        }

        #[test]
        fn jsonish_never_panics(s in "[\\[\\]{}\",:0-9a-z\\\\ ]{0,200}") {
            let _ = filter_json(&Bytes::from(s.clone()), &[Id::from(2i64)], allow);
            let _ = run(format!("data: {s}\n\n").as_bytes(), &[]);
        }
    }

    #[test]
    fn any_id_mode_filters_every_tools_answer_and_nothing_else() {
        let mut f = SseToolsFilter::any_id(|t: &str| t == "ok");
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
