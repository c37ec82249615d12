//! SSE framing (the WHATWG event-stream grammar), shared by everything that reads events as
//! they pass: the relay's heartbeat placement, the legacy endpoint rewrite and the answer
//! filter. Lines end in LF, CR or CRLF; an event ends at a blank line; a field is `name:value`
//! with one optional space after the colon.

/// Index just past the blank line ending the first complete event, if any.
pub(crate) fn event_end(buf: &[u8]) -> Option<usize> {
    scan_event_end(buf, false)
}

/// Like [`event_end`], once no more bytes will come: a final CR is a whole line end.
pub(crate) fn event_end_at_eof(buf: &[u8]) -> Option<usize> {
    scan_event_end(buf, true)
}

/// Index just past the blank line ending the first complete event; with `eof`, a final CR
/// counts as a whole line end.
pub(crate) fn scan_event_end(buf: &[u8], eof: bool) -> Option<usize> {
    let mut i = 0;
    let mut line_start = 0;
    while i < buf.len() {
        let b = buf[i];
        if b == b'\n' || b == b'\r' {
            // A CR at the very end may be the first half of CRLF: wait for more.
            if b == b'\r' && i + 1 == buf.len() && !eof {
                return None;
            }
            let next = if b == b'\r' && buf.get(i + 1) == Some(&b'\n') {
                i + 2
            } else {
                i + 1
            };
            if i == line_start {
                return Some(next);
            }
            line_start = next;
            i = next;
        } else {
            i += 1;
        }
    }
    None
}

/// The non-empty lines of an event.
pub(crate) fn lines(event: &[u8]) -> impl Iterator<Item = &[u8]> {
    event
        .split(|&b| b == b'\n' || b == b'\r')
        .filter(|l| !l.is_empty())
}

/// `(field, value)` of a line; a line without `:` is a field with an empty value.
pub(crate) fn split_field(line: &[u8]) -> (&[u8], &[u8]) {
    match line.iter().position(|&b| b == b':') {
        Some(i) => {
            let value = &line[i + 1..];
            (&line[..i], value.strip_prefix(b" ").unwrap_or(value))
        }
        None => (line, &[]),
    }
}
