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

/// Longest `id:` line kept; an id longer than this is not repeated (it is still relayed).
const MAX_ID_LINE: usize = 1024;

/// The last event id in a stream of bytes cut anywhere, tracked line by line. Only the line
/// in progress is held, and only up to [`MAX_ID_LINE`] bytes.
#[derive(Debug, Default)]
pub struct LastEventId {
    line: Vec<u8>,
    /// The line in progress is longer than anything kept.
    overflow: bool,
    /// The previous byte was CR (a following LF belongs to the same line end).
    after_cr: bool,
    last: Option<Vec<u8>>,
}

impl LastEventId {
    /// Reads more of the stream.
    pub fn track(&mut self, mut chunk: &[u8]) {
        if self.after_cr && chunk.first() == Some(&b'\n') {
            chunk = &chunk[1..];
        }
        self.after_cr = false;
        while let Some(i) = chunk.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.push(&chunk[..i]);
            self.end_line();
            let crlf = chunk[i] == b'\r' && chunk.get(i + 1) == Some(&b'\n');
            if chunk[i] == b'\r' && i + 1 == chunk.len() {
                self.after_cr = true;
            }
            chunk = &chunk[i + if crlf { 2 } else { 1 }..];
        }
        self.push(chunk);
    }

    /// The last id seen, if the last `id` field was not empty.
    pub fn get(&self) -> Option<&[u8]> {
        self.last.as_deref()
    }

    fn push(&mut self, part: &[u8]) {
        if self.overflow || self.line.len() + part.len() > MAX_ID_LINE {
            self.overflow = true;
            return;
        }
        self.line.extend_from_slice(part);
    }

    fn end_line(&mut self) {
        if !self.overflow {
            let (field, value) = split_field(&self.line);
            // An empty `id` resets the last event id, as it does in clients; an id with NUL
            // is ignored by clients, so by us too.
            if field == b"id" && !value.contains(&0) {
                self.last = (!value.is_empty()).then(|| value.to_vec());
            }
        }
        self.line.clear();
        self.overflow = false;
    }
}

#[cfg(test)]
mod tests {
    use super::LastEventId;

    #[test]
    fn last_event_id_across_cuts() {
        let mut l = LastEventId::default();
        l.track(b"id: 4");
        l.track(b"2\r");
        l.track(b"\ndata: x\n\n");
        assert_eq!(l.get(), Some(&b"42"[..]));
        l.track(b"id:\n\n");
        assert_eq!(l.get(), None);
        l.track(b"data: id: 7\nid:8\r\r");
        assert_eq!(l.get(), Some(&b"8"[..]));
    }
}
