//! Reading JSON Lines with a bound on line length.
//!
//! A line longer than the maximum event size is not buffered whole: only its
//! first bytes (enough for a rejected row) are kept while the rest is skipped, so
//! memory does not grow with the input, whatever is in it.

use std::io::{self, BufRead};

use allot_schemas::table_schema::REJECTED_RAW_BYTES;

/// One line of input, without its terminator (`\n` or `\r\n`).
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// A line within the size limit.
    Complete(&'a [u8]),
    /// A line over the limit: its first bytes and its full length.
    Oversize {
        /// The first bytes of the line.
        prefix: &'a [u8],
        /// The full length of the line.
        len: usize,
    },
}

/// Splits a reader into bounded lines, counting them from 1.
pub struct BoundedLines<R> {
    reader: R,
    buf: Vec<u8>,
    max_len: usize,
    line_no: u64,
}

impl<R: BufRead> BoundedLines<R> {
    /// Reads lines of at most `max_len` bytes from `reader`.
    pub fn new(reader: R, max_len: usize) -> Self {
        BoundedLines {
            reader,
            buf: Vec::with_capacity(4096),
            max_len,
            line_no: 0,
        }
    }

    /// The next line and its number, or `None` at the end of the input.
    pub fn next_line(&mut self) -> io::Result<Option<(u64, Line<'_>)>> {
        self.buf.clear();
        let mut len = 0usize;
        let mut saw_any = false;
        loop {
            let available = self.reader.fill_buf()?;
            if available.is_empty() {
                if !saw_any {
                    return Ok(None);
                }
                break;
            }
            saw_any = true;
            let (chunk, consumed, done) = match memchr::memchr(b'\n', available) {
                Some(i) => (&available[..i], i + 1, true),
                None => (available, available.len(), false),
            };
            let keep = if len + chunk.len() <= self.max_len {
                chunk.len()
            } else {
                REJECTED_RAW_BYTES
                    .saturating_sub(self.buf.len())
                    .min(chunk.len())
            };
            self.buf.extend_from_slice(&chunk[..keep]);
            len += chunk.len();
            self.reader.consume(consumed);
            if done {
                break;
            }
        }
        self.line_no += 1;
        if len <= self.max_len {
            if self.buf.last() == Some(&b'\r') {
                self.buf.pop();
            }
            return Ok(Some((self.line_no, Line::Complete(&self.buf))));
        }
        self.buf.truncate(REJECTED_RAW_BYTES);
        Ok(Some((
            self.line_no,
            Line::Oversize {
                prefix: &self.buf,
                len,
            },
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(input: &[u8], max: usize, capacity: usize) -> Vec<(u64, String)> {
        let reader = io::BufReader::with_capacity(capacity, input);
        let mut lines = BoundedLines::new(reader, max);
        let mut out = Vec::new();
        while let Some((no, line)) = lines.next_line().unwrap() {
            let text = match line {
                Line::Complete(bytes) => String::from_utf8_lossy(bytes).into_owned(),
                Line::Oversize { prefix, len } => format!("oversize {len} {}", prefix.len()),
            };
            out.push((no, text));
        }
        out
    }

    #[test]
    fn splits_lines_across_buffer_boundaries() {
        for capacity in [1, 3, 64] {
            let lines = collect(b"ab\r\n\ncdef\nlast", 10, capacity);
            assert_eq!(
                lines,
                vec![
                    (1, "ab".into()),
                    (2, "".into()),
                    (3, "cdef".into()),
                    (4, "last".into())
                ]
            );
        }
    }

    #[test]
    fn bounds_long_lines_and_keeps_a_prefix() {
        let mut input = vec![b'x'; 10_000];
        input.extend_from_slice(b"\nok\n");
        let lines = collect(&input, 100, 512);
        assert_eq!(
            lines,
            vec![
                (1, format!("oversize 10000 {REJECTED_RAW_BYTES}")),
                (2, "ok".into())
            ]
        );
    }
}
