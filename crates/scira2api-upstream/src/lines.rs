//! Incremental line and SSE event splitting over a byte stream.
//!
//! Upstream bodies arrive in arbitrary pieces: a line may be split across many reads, and one
//! read may hold many lines. [`LineBuffer`] collects bytes and hands out complete lines without
//! copying them; [`SseEvents`] groups lines into server-sent events. Neither limits line length
//! except by the caller's `max_line` (the gateway passes `MAX_BODY_BYTES`).

use bytes::{Bytes, BytesMut};

/// A line longer than the allowed maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineTooLong(pub usize);

/// Collects bytes and yields complete `\n`-terminated lines (without the `\n` or a trailing `\r`).
#[derive(Debug, Default)]
pub struct LineBuffer {
    buf: BytesMut,
    /// How far `buf` has already been searched for `\n`.
    scanned: usize,
    max_line: usize,
}

impl LineBuffer {
    /// A buffer that rejects lines longer than `max_line` bytes.
    pub fn new(max_line: usize) -> Self {
        LineBuffer {
            buf: BytesMut::new(),
            scanned: 0,
            max_line,
        }
    }

    /// Appends a piece of the body.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete line, `Ok(None)` when more bytes are needed.
    pub fn next_line(&mut self) -> Result<Option<Bytes>, LineTooLong> {
        match memchr(b'\n', &self.buf[self.scanned..]) {
            Some(pos) => {
                let end = self.scanned + pos;
                let mut line = self.buf.split_to(end + 1);
                line.truncate(end);
                if line.last() == Some(&b'\r') {
                    line.truncate(end - 1);
                }
                self.scanned = 0;
                Ok(Some(line.freeze()))
            }
            None => {
                self.scanned = self.buf.len();
                if self.buf.len() > self.max_line {
                    Err(LineTooLong(self.max_line))
                } else {
                    Ok(None)
                }
            }
        }
    }

    /// What is left after the body ended: a last line without a terminating `\n`, if any.
    pub fn finish(&mut self) -> Option<Bytes> {
        self.scanned = 0;
        let mut rest = self.buf.split();
        if rest.last() == Some(&b'\r') {
            rest.truncate(rest.len() - 1);
        }
        (!rest.is_empty()).then(|| rest.freeze())
    }
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&b| b == needle)
}

/// Groups SSE lines into events; yields each event's `data` (several data lines joined by `\n`).
///
/// Comment lines (`:`), `event:`, `id:` and `retry:` fields are skipped: OpenAI-style streams
/// carry everything in `data`.
#[derive(Debug, Default)]
pub struct SseEvents {
    data: Option<Bytes>,
    joined: Option<BytesMut>,
}

impl SseEvents {
    /// Feeds one line; returns the event's data when the line ends an event.
    pub fn line(&mut self, line: Bytes) -> Option<Bytes> {
        if line.is_empty() {
            return self.take();
        }
        if let Some(rest) = line.strip_prefix(b"data:") {
            let skip = 5 + usize::from(rest.first() == Some(&b' '));
            let payload = line.slice(skip..);
            match (&mut self.joined, &self.data) {
                (Some(j), _) => {
                    j.extend_from_slice(b"\n");
                    j.extend_from_slice(&payload);
                }
                (None, Some(first)) => {
                    let mut j = BytesMut::from(&first[..]);
                    j.extend_from_slice(b"\n");
                    j.extend_from_slice(&payload);
                    self.joined = Some(j);
                    self.data = None;
                }
                (None, None) => self.data = Some(payload),
            }
        }
        None
    }

    /// Ends the stream: an event still open (no blank line after it) is returned.
    pub fn take(&mut self) -> Option<Bytes> {
        if let Some(j) = self.joined.take() {
            return Some(j.freeze());
        }
        self.data.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(pieces: &[&[u8]]) -> Vec<Bytes> {
        let mut lb = LineBuffer::new(1 << 20);
        let mut out = Vec::new();
        for p in pieces {
            lb.push(p);
            while let Some(l) = lb.next_line().unwrap() {
                out.push(l);
            }
        }
        out.extend(lb.finish());
        out
    }

    #[test]
    fn splits_lines_across_arbitrary_pieces() {
        let out = lines_of(&[b"ab", b"c\r\nde", b"f\n\n", b"g", b"h"]);
        assert_eq!(out, [&b"abc"[..], b"def", b"", b"gh"]);
    }

    #[test]
    fn every_split_point_gives_the_same_lines() {
        let body = b"data: {\"a\":1}\n\ndata: x\r\ndata: y\n\n0:\"t\"\nlast";
        let whole = lines_of(&[body]);
        for i in 0..body.len() {
            assert_eq!(lines_of(&[&body[..i], &body[i..]]), whole, "split at {i}");
        }
    }

    #[test]
    fn rejects_overlong_line() {
        let mut lb = LineBuffer::new(4);
        lb.push(b"12345");
        assert_eq!(lb.next_line(), Err(LineTooLong(4)));
    }

    #[test]
    fn sse_events_join_data_lines_and_skip_comments() {
        let mut ev = SseEvents::default();
        let mut out = Vec::new();
        for l in [
            &b": ping"[..],
            b"event: x",
            b"data: a",
            b"data:b",
            b"",
            b"data: [DONE]",
            b"",
        ] {
            out.extend(ev.line(Bytes::copy_from_slice(l)));
        }
        assert_eq!(out, [&b"a\nb"[..], b"[DONE]"]);
        assert_eq!(ev.take(), None);
    }
}
