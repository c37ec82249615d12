//! Calls in flight on an event stream, and the answers the proxy owes their callers when the
//! stream dies first.
//!
//! An MCP client that sent a request waits for the response with its id. When the event
//! stream that should carry it ends first (the backend crashed, reset the connection, went
//! silent, or closed without answering), many clients wait forever. The proxy knows the ids
//! it forwarded, so [`PendingCalls`] watches the stream for their answers and, when the
//! stream ends with some still unanswered, writes one JSON-RPC error event per id.
//!
//! - **Pending ids** come from the inspected request envelope (requests only, never
//!   notifications; a batch has several), or for the legacy transport from the POSTs of the
//!   stream's session ([`SharedCalls`]), whose answers arrive on the GET stream.
//! - **Answered** means an event whose data is a JSON-RPC response (`result` or `error`, no
//!   `method`) with that id, or a batch holding one. Ids are compared by JSON value: a
//!   backend may write the client's `1` back as `1.0`, and clients pair those; a string
//!   never answers a number.
//! - **Cheap when there is nothing to pair**: with no pending id the bytes pass straight
//!   through (no copy, no parsing); while ids are pending, events are held until complete so
//!   an added error never lands inside an unfinished event, and only their `data` is parsed.
//!   A stream whose ids are all answered stops tracking for good.
//! - **The resume exception** (2025-11-25): an upstream that sent an event `id` and a
//!   `retry:` field and then closed cleanly is asking the client to resume with
//!   `Last-Event-ID`, so nothing is added. An error, a reset, a truncated event or silence
//!   always gets the answers; legacy streams cannot be resumed, so they always do too.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};

use super::envelope::{RawMessage, Scalar};
use super::jsonrpc::{Id, json_rpc_error_for};
use crate::sse::frame::{event_end, event_end_at_eof, lines, split_field};

/// JSON-RPC code of the answers the proxy adds (server-defined range, like its other
/// upstream errors).
pub const STREAM_ENDED: i64 = -32000;

/// Largest incomplete event held while calls are pending. A tool result sent as one event
/// may be large; past this the stream ends (and the calls get their errors).
pub const MAX_PENDING_EVENT: usize = 16 * 1024 * 1024;

/// Why the tracker cannot go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PendingError {
    /// An event grew past the cap without ending.
    #[error("SSE event exceeds {limit} bytes without ending")]
    EventTooLarge {
        /// The cap.
        limit: usize,
    },
}

/// How the stream is ending, as far as resumption goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Close {
    /// The upstream ended its body cleanly: resumable if it sent an id and `retry:`.
    Clean,
    /// The proxy closes it with `retry:` (its lifetime): resumable if the upstream sent an id.
    Retry,
    /// Anything else (error, reset, silence, shutdown): never resumable.
    Abrupt,
}

/// The ids of one legacy session's POSTs still waiting for their answer on its GET stream.
/// POSTs register before they are forwarded, so an answer can never arrive before its id.
#[derive(Debug, Default)]
pub struct SharedCalls {
    /// Number of ids, read without the lock on every event.
    count: AtomicUsize,
    ids: Mutex<Vec<Id>>,
}

impl SharedCalls {
    fn lock(&self) -> MutexGuard<'_, Vec<Id>> {
        // Single pushes and removals cannot leave the list half-updated.
        self.ids.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds `ids`; they are removed again when the returned registration is dropped unless
    /// it is [kept](Registration::keep) (the POST was accepted).
    pub fn register(self: &Arc<Self>, ids: Vec<Id>) -> Registration {
        let mut list = self.lock();
        list.extend(ids.iter().cloned());
        self.count.store(list.len(), Ordering::Release);
        drop(list);
        Registration {
            calls: self.clone(),
            ids,
        }
    }

    /// Number of ids waiting.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Whether no id is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn remove_where(&self, mut hit: impl FnMut(&Id) -> bool) {
        let mut list = self.lock();
        if let Some(i) = list.iter().position(&mut hit) {
            list.swap_remove(i);
        }
        self.count.store(list.len(), Ordering::Release);
    }

    fn take(&self) -> Vec<Id> {
        let mut list = self.lock();
        self.count.store(0, Ordering::Release);
        std::mem::take(&mut *list)
    }
}

/// Ids registered by one POST; see [`SharedCalls::register`].
#[derive(Debug)]
pub struct Registration {
    calls: Arc<SharedCalls>,
    ids: Vec<Id>,
}

impl Registration {
    /// The POST was accepted: its ids stay until answered or the stream ends.
    pub fn keep(mut self) {
        self.ids.clear();
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        for id in std::mem::take(&mut self.ids) {
            self.calls.remove_where(|x| *x == id);
        }
    }
}

/// Where a tracker's ids live.
#[derive(Debug)]
enum Calls {
    /// The ids of the POST this stream answers; they never grow.
    Own(Vec<Id>),
    /// A legacy session's, added to by its POSTs.
    Shared(Arc<SharedCalls>),
}

impl Calls {
    fn is_empty(&self) -> bool {
        match self {
            Calls::Own(v) => v.is_empty(),
            Calls::Shared(s) => s.is_empty(),
        }
    }

    fn answer(&mut self, answer: &Scalar<'_>) {
        match self {
            Calls::Own(v) => {
                if let Some(i) = v.iter().position(|id| same_id(id, answer)) {
                    v.swap_remove(i);
                }
            }
            Calls::Shared(s) => s.remove_where(|id| same_id(id, answer)),
        }
    }

    fn take(&mut self) -> Vec<Id> {
        match self {
            Calls::Own(v) => std::mem::take(v),
            Calls::Shared(s) => s.take(),
        }
    }
}

/// What the tracker has seen of the stream's resumption signals.
#[derive(Debug, Default)]
struct Seen {
    /// The first event (the only place a byte-order mark may sit) has been read.
    started: bool,
    /// The last `id` field set a non-empty event id.
    id_set: bool,
    /// A `retry:` field with a valid value.
    retry: bool,
    /// The stream ended inside an event.
    truncated: bool,
}

/// Watches an event stream for the answers to pending calls; see the module docs.
#[derive(Debug)]
pub struct PendingCalls {
    calls: Calls,
    seen: Seen,
    buf: BytesMut,
    max_event: usize,
}

impl PendingCalls {
    /// A tracker for the answer stream of a POST carrying `ids` (its requests' ids).
    pub fn for_post(ids: Vec<Id>) -> Self {
        Self::new(Calls::Own(ids))
    }

    /// A tracker for a legacy GET stream whose session's POSTs register in `calls`.
    pub fn for_session(calls: Arc<SharedCalls>) -> Self {
        Self::new(Calls::Shared(calls))
    }

    fn new(calls: Calls) -> Self {
        PendingCalls {
            calls,
            seen: Seen::default(),
            buf: BytesMut::new(),
            max_event: MAX_PENDING_EVENT,
        }
    }

    /// Sets the cap on one incomplete event held.
    pub fn with_max_event(mut self, max_event: usize) -> Self {
        self.max_event = max_event;
        self
    }

    /// Takes upstream bytes, returns what can be sent on now: `chunk` itself when nothing is
    /// pending, otherwise the complete events among what is held.
    pub fn feed(&mut self, chunk: Bytes) -> Result<Bytes, PendingError> {
        if self.buf.is_empty() && self.calls.is_empty() {
            return Ok(chunk);
        }
        self.buf.extend_from_slice(&chunk);
        let mut at = 0;
        while let Some(n) = event_end(&self.buf[at..]) {
            observe(&mut self.calls, &mut self.seen, &self.buf[at..at + n]);
            at += n;
            if let Calls::Own(v) = &self.calls
                && v.is_empty()
            {
                // Every call answered: nothing left to watch for.
                return Ok(self.buf.split().freeze());
            }
        }
        let out = self.buf.split_to(at).freeze();
        if self.buf.len() > self.max_event {
            return Err(PendingError::EventTooLarge {
                limit: self.max_event,
            });
        }
        Ok(out)
    }

    /// The upstream ended cleanly: a last event complete only now (bare-CR line ends) is
    /// read and returned; an unfinished one is dropped, as clients drop it, and marks the
    /// stream truncated.
    pub fn finish(&mut self) -> Bytes {
        let held = self.buf.split();
        if held.is_empty() {
            return Bytes::new();
        }
        if event_end_at_eof(&held) == Some(held.len()) {
            observe(&mut self.calls, &mut self.seen, &held);
            return held.freeze();
        }
        self.seen.truncated = true;
        Bytes::new()
    }

    /// The stream is closing: one error event per call still unanswered (none when the
    /// upstream asked the client to resume), and how many. `message` and `reason` (a short
    /// label, as `error.data.reason`) say why; neither may name the backend.
    pub fn close(&mut self, how: Close, message: &str, reason: &str) -> (Bytes, usize) {
        if self.calls.is_empty() {
            return (Bytes::new(), 0);
        }
        let resumable = matches!(self.calls, Calls::Own(_))
            && match how {
                Close::Clean => self.seen.id_set && self.seen.retry && !self.seen.truncated,
                Close::Retry => self.seen.id_set,
                Close::Abrupt => false,
            };
        if resumable {
            return (Bytes::new(), 0);
        }
        let ids = self.calls.take();
        let data = serde_json::json!({ "reason": reason });
        let mut out = BytesMut::new();
        for id in &ids {
            out.extend_from_slice(b"event: message\ndata: ");
            // Compact JSON: no raw line break can split the data line.
            out.extend_from_slice(&json_rpc_error_for(
                Some(id),
                STREAM_ENDED,
                message,
                Some(data.clone()),
            ));
            out.extend_from_slice(b"\n\n");
        }
        (out.freeze(), ids.len())
    }
}

/// Reads one complete event: its resumption fields, and (while calls are pending) whether
/// its data answers one.
fn observe(calls: &mut Calls, seen: &mut Seen, event: &[u8]) {
    let mut body = event;
    if !std::mem::replace(&mut seen.started, true)
        && let Some(rest) = event.strip_prefix("\u{feff}".as_bytes())
    {
        body = rest;
    }
    let mut first: Option<&[u8]> = None;
    let mut joined: Option<Vec<u8>> = None;
    for line in lines(body) {
        let (field, value) = split_field(line);
        match field {
            b"data" => match (&first, &mut joined) {
                (None, _) => first = Some(value),
                (Some(f), None) => {
                    let mut j = f.to_vec();
                    j.push(b'\n');
                    j.extend_from_slice(value);
                    joined = Some(j);
                }
                (Some(_), Some(j)) => {
                    j.push(b'\n');
                    j.extend_from_slice(value);
                }
            },
            // Clients ignore an id holding NUL; an empty one resets the last event id.
            b"id" if !value.contains(&0) => seen.id_set = !value.is_empty(),
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                seen.retry = true;
            }
            _ => {}
        }
    }
    if calls.is_empty() {
        return;
    }
    let Some(data) = joined.as_deref().or(first) else {
        return;
    };
    for_each_answer(data, |id| calls.answer(id));
}

/// Calls `f` with the id of every JSON-RPC response in `data` (one object or a batch).
/// Anything else (notifications, requests, non-JSON) is skipped; serde skips the `result`
/// without building it.
fn for_each_answer(data: &[u8], mut f: impl FnMut(&Scalar<'_>)) {
    // A repeated member makes the message ambiguous: it answers nothing for sure.
    let mut visit = |m: &RawMessage<'_>| {
        if (m.result || m.error)
            && m.method.is_none()
            && m.duplicate.is_none()
            && let Some(id) = &m.id
        {
            f(id);
        }
    };
    match data.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {
            if let Ok(m) = serde_json::from_slice::<RawMessage<'_>>(data) {
                visit(&m);
            }
        }
        Some(b'[') => {
            if let Ok(all) = serde_json::from_slice::<Vec<RawMessage<'_>>>(data) {
                all.iter().for_each(visit);
            }
        }
        _ => {}
    }
}

/// Whether the answer id `answer` names the pending call `pending`, by JSON value.
fn same_id(pending: &Id, answer: &Scalar<'_>) -> bool {
    match (pending, answer) {
        (Id::String(a), Scalar::Str(b)) => a.as_str() == b.as_ref(),
        (Id::Number(a), Scalar::Number(b)) => {
            if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
                return x == y;
            }
            if let (Some(x), Some(y)) = (a.as_u64(), b.as_u64()) {
                return x == y;
            }
            matches!((a.as_f64(), b.as_f64()), (Some(x), Some(y)) if x == y)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(b: &Bytes) -> &str {
        std::str::from_utf8(b).unwrap()
    }

    fn errors_for(b: &Bytes) -> Vec<serde_json::Value> {
        text(b)
            .lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .map(|d| serde_json::from_str::<serde_json::Value>(d).unwrap()["id"].clone())
            .collect()
    }

    #[test]
    fn unanswered_ids_get_one_error_each() {
        let mut p = PendingCalls::for_post(vec![Id::from(1i64), Id::from("b")]);
        let out = p
            .feed(Bytes::from_static(
                b"data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\"}\n\ndata: {\"jsonrpc\":\"2.0\",\"id\":1.0,\"result\":{}}\n\ndata: {\"jso",
            ))
            .unwrap();
        assert!(text(&out).ends_with("\"result\":{}}\n\n"), "{}", text(&out));
        assert!(p.finish().is_empty(), "unfinished event dropped");
        let (added, n) = p.close(Close::Clean, "upstream stream ended before answering", "x");
        assert_eq!(n, 1);
        assert_eq!(errors_for(&added), vec![serde_json::json!("b")]);
        assert!(text(&added).contains("-32000"));
        assert_eq!(p.close(Close::Abrupt, "again", "x").1, 0, "answered once");
    }

    #[test]
    fn answered_post_stops_tracking_and_passes_through() {
        let mut p = PendingCalls::for_post(vec![Id::from(7i64)]);
        let out = p
            .feed(Bytes::from_static(
                b"data: [{\"jsonrpc\":\"2.0\",\"id\":7,\"error\":{}}]\n\ndata: partial",
            ))
            .unwrap();
        assert!(text(&out).ends_with("data: partial"));
        let chunk = Bytes::from_static(b" more");
        let same = p.feed(chunk.clone()).unwrap();
        assert_eq!(same.as_ptr(), chunk.as_ptr(), "no copy once answered");
        assert_eq!(p.close(Close::Abrupt, "m", "r").1, 0);
    }

    #[test]
    fn resume_request_suppresses_only_clean_closes() {
        let stream = b"id: 5\nretry: 1000\ndata:\n\n";
        let mut p = PendingCalls::for_post(vec![Id::from(1i64)]);
        p.feed(Bytes::from_static(stream)).unwrap();
        assert_eq!(p.close(Close::Clean, "m", "r").1, 0);
        let mut p = PendingCalls::for_post(vec![Id::from(1i64)]);
        p.feed(Bytes::from_static(stream)).unwrap();
        assert_eq!(p.close(Close::Abrupt, "m", "r").1, 1);
        // An id without retry is not a request to resume.
        let mut p = PendingCalls::for_post(vec![Id::from(1i64)]);
        p.feed(Bytes::from_static(b"id: 5\ndata:\n\n")).unwrap();
        assert_eq!(p.close(Close::Clean, "m", "r").1, 1);
        // A lifetime close with an upstream id is resumable; a string never answers a number.
        let mut p = PendingCalls::for_post(vec![Id::from(1i64)]);
        p.feed(Bytes::from_static(
            b"id: 5\ndata: {\"jsonrpc\":\"2.0\",\"id\":\"1\",\"result\":1}\n\n",
        ))
        .unwrap();
        assert_eq!(p.close(Close::Retry, "m", "r").1, 0);
        assert_eq!(p.close(Close::Abrupt, "m", "r").1, 1);
    }

    #[test]
    fn shared_calls_register_and_unregister() {
        let shared = Arc::new(SharedCalls::default());
        let mut p = PendingCalls::for_session(shared.clone());
        let chunk = Bytes::from_static(b"event: endpoint\ndata: /x\n\n");
        assert_eq!(p.feed(chunk.clone()).unwrap(), chunk);
        shared.register(vec![Id::from(1i64)]).keep();
        drop(shared.register(vec![Id::from(2i64)]));
        assert_eq!(shared.len(), 1, "a refused POST takes its ids back");
        shared.register(vec![Id::from(3i64)]).keep();
        p.feed(Bytes::from_static(
            b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":3,\"result\":{}}\n\n",
        ))
        .unwrap();
        // Legacy streams cannot resume: even a clean close answers.
        let (added, n) = p.close(Close::Clean, "m", "r");
        assert_eq!(n, 1);
        assert_eq!(errors_for(&added), vec![serde_json::json!(1)]);
        assert!(shared.is_empty());
    }

    #[test]
    fn oversized_pending_event_refused() {
        let mut p = PendingCalls::for_post(vec![Id::from(1i64)]).with_max_event(8);
        assert!(p.feed(Bytes::from_static(b"data: 0123456789")).is_err());
    }
}
