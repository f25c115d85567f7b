//! A push parser for Server-Sent Events that accepts bytes split anywhere.
//!
//! Follows the WHATWG event-stream grammar: lines end in CRLF, LF or CR (a CR at the end of
//! one chunk and an LF at the start of the next are one line end); `:` starts a comment; one
//! space after the field colon is dropped; multi-line `data:` joins with `\n`; `id:` with a
//! NUL is ignored; `retry:` takes only digits; a leading BOM is skipped. Lines are decoded as
//! UTF-8 only once complete, so a character split across chunks is never damaged; invalid
//! bytes become U+FFFD instead of stalling the stream.
//!
//! Unlike a browser, a block that set only `event:`, `id:` or `retry:` is still reported (with
//! `has_data == false`) so that callers can see it; dialect decoders skip such frames.

use memchr::memchr2;

/// Default cap on one line or one frame's data, so a peer cannot grow our buffer forever.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// One dispatched SSE block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseFrame<'a> {
    /// `event:` field, if set in this block.
    pub event: Option<&'a str>,
    /// `data:` lines joined with `\n`.
    pub data: &'a str,
    /// Whether the block had at least one `data:` line (an empty `data:` counts).
    pub has_data: bool,
    /// `id:` field, if set in this block.
    pub id: Option<&'a str>,
    /// `retry:` field, if set in this block and all digits.
    pub retry: Option<u64>,
    /// 1-based line number of the block's first line in the whole body.
    pub line: u64,
    /// 1-based line number of the block's first `data:` line (else of its first line), so a
    /// bad payload is reported where it is rather than at its `event:` line.
    pub data_line: u64,
    /// Byte offset of that line.
    pub data_offset: u64,
    /// Byte offset of the block's first line in the whole body.
    pub offset: u64,
}

/// Errors from [`SseParser`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    /// A line or a frame's data grew past the configured limit.
    #[error("SSE frame starting at line {line} (byte {offset}) exceeds {limit} bytes")]
    TooLarge {
        /// Line where the frame started.
        line: u64,
        /// Byte offset where the frame started.
        offset: u64,
        /// The limit.
        limit: usize,
    },
}

/// Incremental SSE parser: feed bytes, receive frames through a callback.
#[derive(Debug)]
pub struct SseParser {
    /// Bytes of a line whose end has not arrived yet.
    partial: Vec<u8>,
    /// The previous chunk ended in CR: an LF at the start of the next one is the same line end.
    skip_lf: bool,
    /// Nothing has been read yet, so a BOM may still come.
    at_start: bool,
    event: String,
    has_event: bool,
    data: String,
    has_data: bool,
    id: String,
    has_id: bool,
    retry: Option<u64>,
    /// Whether the block being built has seen any field line.
    in_block: bool,
    block_line: u64,
    block_offset: u64,
    data_line: u64,
    data_offset: u64,
    /// Line number and byte offset of the next line to complete.
    line: u64,
    offset: u64,
    last_event_id: String,
    max_frame_bytes: usize,
}

impl Default for SseParser {
    fn default() -> Self {
        Self::new()
    }
}

impl SseParser {
    /// A parser with [`DEFAULT_MAX_FRAME_BYTES`].
    pub fn new() -> Self {
        Self::with_limit(DEFAULT_MAX_FRAME_BYTES)
    }

    /// A parser that rejects lines or frame data longer than `max_frame_bytes`.
    pub fn with_limit(max_frame_bytes: usize) -> Self {
        SseParser {
            partial: Vec::new(),
            skip_lf: false,
            at_start: true,
            event: String::new(),
            has_event: false,
            data: String::new(),
            has_data: false,
            id: String::new(),
            has_id: false,
            retry: None,
            in_block: false,
            block_line: 1,
            block_offset: 0,
            data_line: 1,
            data_offset: 0,
            line: 1,
            offset: 0,
            last_event_id: String::new(),
            max_frame_bytes,
        }
    }

    /// The last `id:` seen (the spec's "last event ID buffer"), for reconnects.
    pub fn last_event_id(&self) -> &str {
        &self.last_event_id
    }

    /// Bytes consumed so far, for error positions.
    pub fn position(&self) -> (u64, u64) {
        (self.line, self.offset + self.partial.len() as u64)
    }

    /// Parses `bytes`, calling `on_frame` for each completed block. Stops at the first error
    /// the callback returns.
    pub fn feed<E>(
        &mut self,
        mut bytes: &[u8],
        on_frame: &mut impl FnMut(&SseFrame<'_>) -> Result<(), E>,
    ) -> Result<(), E>
    where
        E: From<SseError>,
    {
        if self.at_start && !bytes.is_empty() {
            // A BOM may itself be split; wait until three bytes are known.
            let mut head = std::mem::take(&mut self.partial);
            let need = 3usize.saturating_sub(head.len());
            let take = need.min(bytes.len());
            head.extend_from_slice(&bytes[..take]);
            if head.len() < 3 && head.iter().zip(BOM).all(|(a, b)| a == b) {
                self.partial = head;
                return Ok(());
            }
            self.at_start = false;
            bytes = &bytes[take..];
            if head.starts_with(BOM) {
                self.offset += 3;
                head.drain(..3);
            }
            self.feed_lines(&head, on_frame)?;
        }
        self.feed_lines(bytes, on_frame)
    }

    fn feed_lines<E>(
        &mut self,
        bytes: &[u8],
        on_frame: &mut impl FnMut(&SseFrame<'_>) -> Result<(), E>,
    ) -> Result<(), E>
    where
        E: From<SseError>,
    {
        // The block's only `data:` line, still in `bytes`: handed to the callback without a
        // copy when the block ends within this input, copied into `data` otherwise.
        let mut borrowed = None;
        let r = self.feed_lines_inner(bytes, &mut borrowed, on_frame);
        if let Some(b) = borrowed {
            self.data.push_str(b);
        }
        r
    }

    fn feed_lines_inner<'a, E>(
        &mut self,
        mut bytes: &'a [u8],
        borrowed: &mut Option<&'a str>,
        on_frame: &mut impl FnMut(&SseFrame<'_>) -> Result<(), E>,
    ) -> Result<(), E>
    where
        E: From<SseError>,
    {
        if self.skip_lf && !bytes.is_empty() {
            self.skip_lf = false;
            if bytes[0] == b'\n' {
                bytes = &bytes[1..];
                self.offset += 1;
            }
        }
        while let Some(pos) = memchr2(b'\n', b'\r', bytes) {
            let mut end_len = 1;
            if bytes[pos] == b'\r' {
                match bytes.get(pos + 1) {
                    Some(b'\n') => end_len = 2,
                    Some(_) => {}
                    None => self.skip_lf = true,
                }
            }
            let line_len;
            if self.partial.is_empty() {
                line_len = pos;
                self.line_done(&bytes[..pos], borrowed, on_frame)?;
            } else {
                if let Some(b) = borrowed.take() {
                    self.data.push_str(b);
                }
                self.partial.extend_from_slice(&bytes[..pos]);
                let line = std::mem::take(&mut self.partial);
                line_len = line.len();
                let mut inner = None;
                let r = self.line_done(&line, &mut inner, on_frame);
                if let Some(b) = inner {
                    self.data.push_str(b);
                }
                self.partial = line;
                self.partial.clear();
                r?;
            }
            self.offset += (line_len + end_len) as u64;
            self.line += 1;
            bytes = &bytes[pos + end_len..];
        }
        if self.partial.len() + bytes.len() > self.max_frame_bytes {
            return Err(self.too_large().into());
        }
        self.partial.extend_from_slice(bytes);
        Ok(())
    }

    /// Signals the end of input. A block without its closing blank line is discarded, as the
    /// spec says; returns whether anything (a partial line or block) was left unfinished.
    pub fn finish(&mut self) -> bool {
        let leftover = !self.partial.is_empty() || self.in_block;
        self.partial.clear();
        self.reset_block();
        leftover
    }

    fn too_large(&self) -> SseError {
        let (line, offset) = if self.in_block {
            (self.block_line, self.block_offset)
        } else {
            (self.line, self.offset)
        };
        SseError::TooLarge {
            line,
            offset,
            limit: self.max_frame_bytes,
        }
    }

    fn line_done<'a, E>(
        &mut self,
        raw: &'a [u8],
        borrowed: &mut Option<&'a str>,
        on_frame: &mut impl FnMut(&SseFrame<'_>) -> Result<(), E>,
    ) -> Result<(), E>
    where
        E: From<SseError>,
    {
        if raw.is_empty() {
            return self.dispatch(borrowed.take(), on_frame);
        }
        if raw[0] == b':' {
            return Ok(());
        }
        if !self.in_block {
            self.in_block = true;
            self.block_line = self.line;
            self.block_offset = self.offset;
            self.data_line = self.line;
            self.data_offset = self.offset;
        }
        // The colon is ASCII, so splitting the bytes there and decoding each side gives what
        // decoding the whole line would. Valid UTF-8 is the norm: check it with the fast
        // validator (SIMD: std's was ~250 instructions of a token chunk's data line) and only
        // fall back to the slower replacing decoder for a broken line.
        let (field, value) = match memchr::memchr(b':', raw) {
            Some(i) => {
                let v = &raw[i + 1..];
                (&raw[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (raw, &b""[..]),
        };
        let r = match simdutf8::basic::from_utf8(value) {
            Ok(v) => self.field(field, v, Some(v), borrowed),
            Err(_) => self.field(field, &String::from_utf8_lossy(value), None, borrowed),
        };
        r.map_err(E::from)
    }

    /// One field line. `own` is `value` when it lives in the input and may be borrowed.
    fn field<'a>(
        &mut self,
        field: &[u8],
        value: &str,
        own: Option<&'a str>,
        borrowed: &mut Option<&'a str>,
    ) -> Result<(), SseError> {
        match field {
            b"data" => {
                let held = self.data.len() + borrowed.map_or(0, str::len);
                if held + value.len() + 1 > self.max_frame_bytes {
                    return Err(self.too_large());
                }
                if self.has_data {
                    if let Some(b) = borrowed.take() {
                        self.data.push_str(b);
                    }
                    self.data.push('\n');
                    self.data.push_str(value);
                } else {
                    self.data_line = self.line;
                    self.data_offset = self.offset;
                    match own {
                        Some(v) => *borrowed = Some(v),
                        None => self.data.push_str(value),
                    }
                }
                self.has_data = true;
            }
            b"event" => {
                self.event.clear();
                self.event.push_str(value);
                self.has_event = true;
            }
            b"id" if !value.contains('\0') => {
                self.id.clear();
                self.id.push_str(value);
                self.has_id = true;
                self.last_event_id.clear();
                self.last_event_id.push_str(value);
            }
            b"retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                self.retry = value.parse().ok();
            }
            _ => {}
        }
        Ok(())
    }

    fn dispatch<E>(
        &mut self,
        borrowed: Option<&str>,
        on_frame: &mut impl FnMut(&SseFrame<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        if !self.in_block {
            return Ok(());
        }
        let frame = SseFrame {
            event: self.has_event.then_some(self.event.as_str()),
            data: borrowed.unwrap_or(&self.data),
            has_data: self.has_data,
            id: self.has_id.then_some(self.id.as_str()),
            retry: self.retry,
            line: self.block_line,
            data_line: self.data_line,
            data_offset: self.data_offset,
            offset: self.block_offset,
        };
        let r = on_frame(&frame);
        self.reset_block();
        r
    }

    fn reset_block(&mut self) {
        self.event.clear();
        self.has_event = false;
        self.data.clear();
        self.has_data = false;
        self.id.clear();
        self.has_id = false;
        self.retry = None;
        self.in_block = false;
    }
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Owned {
        event: Option<String>,
        data: String,
        has_data: bool,
        id: Option<String>,
        retry: Option<u64>,
        line: u64,
        offset: u64,
    }

    fn parse_chunks(chunks: &[&[u8]]) -> Vec<Owned> {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        for c in chunks {
            p.feed::<SseError>(c, &mut |f| {
                out.push(Owned {
                    event: f.event.map(str::to_owned),
                    data: f.data.to_owned(),
                    has_data: f.has_data,
                    id: f.id.map(str::to_owned),
                    retry: f.retry,
                    line: f.line,
                    offset: f.offset,
                });
                Ok(())
            })
            .unwrap();
        }
        p.finish();
        out
    }

    fn parse(body: &[u8]) -> Vec<Owned> {
        parse_chunks(&[body])
    }

    #[test]
    fn multi_line_data_comments_and_fields() {
        let got = parse(b": hello\nevent: e\ndata: a\ndata:b\nid: 7\nretry: 3000\n\n");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].event.as_deref(), Some("e"));
        assert_eq!(got[0].data, "a\nb");
        assert_eq!(got[0].id.as_deref(), Some("7"));
        assert_eq!(got[0].retry, Some(3000));
        assert_eq!((got[0].line, got[0].offset), (2, 8));
    }

    #[test]
    fn data_position_points_at_the_first_data_line() {
        let mut p = SseParser::new();
        let mut pos = Vec::new();
        p.feed::<SseError>(
            b"event: a
data: 1
data: 2

data: 3

",
            &mut |f| {
                pos.push((f.line, f.data_line, f.data_offset));
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(pos, [(1, 2, 9), (5, 5, 26)]);
    }

    #[test]
    fn crlf_cr_and_lf_are_all_line_ends() {
        let a = parse(b"data: x\r\n\r\ndata: y\r\rdata: z\n\n");
        let datas: Vec<_> = a.iter().map(|f| f.data.as_str()).collect();
        assert_eq!(datas, ["x", "y", "z"]);
    }

    #[test]
    fn cr_lf_split_across_chunks_is_one_line_end() {
        let got = parse_chunks(&[b"data: x\r", b"\n", b"\r", b"\ndata: y\n\n"]);
        let datas: Vec<_> = got.iter().map(|f| f.data.as_str()).collect();
        assert_eq!(datas, ["x", "y"]);
    }

    #[test]
    fn utf8_split_mid_character_survives() {
        let body = "data: héllo ✓\n\n".as_bytes();
        for cut in 0..body.len() {
            let got = parse_chunks(&[&body[..cut], &body[cut..]]);
            assert_eq!(got.len(), 1, "cut at {cut}");
            assert_eq!(got[0].data, "héllo ✓");
        }
    }

    #[test]
    fn invalid_utf8_is_replaced_not_stalled() {
        let got = parse(b"data: a\xFFb\n\ndata: next\n\n");
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].data, "a\u{FFFD}b");
        assert_eq!(got[1].data, "next");
    }

    #[test]
    fn retry_only_block_is_reported_and_id_does_not_leak() {
        let got = parse(b"retry: 10\n\nid: 1\ndata: a\n\ndata: b\n\n");
        assert_eq!(got.len(), 3);
        assert!(!got[0].has_data);
        assert_eq!(got[0].retry, Some(10));
        assert_eq!(got[1].id.as_deref(), Some("1"));
        assert_eq!(got[2].id, None);
    }

    #[test]
    fn bom_is_skipped_even_when_split() {
        let got = parse_chunks(&[b"\xEF", b"\xBB", b"\xBFdata: a\n\n"]);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].data, "a");
        assert_eq!(got[0].offset, 3);
    }

    #[test]
    fn unterminated_block_at_eof_is_not_dispatched() {
        let mut p = SseParser::new();
        let mut n = 0;
        p.feed::<SseError>(b"data: a\n\ndata: b", &mut |_| {
            n += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(n, 1);
        assert!(p.finish());
    }

    #[test]
    fn oversized_line_is_an_error() {
        let mut p = SseParser::with_limit(8);
        let r = p.feed::<SseError>(b"data: 0123456789", &mut |_| Ok(()));
        assert!(matches!(r, Err(SseError::TooLarge { limit: 8, .. })));
    }

    #[test]
    fn ignores_bad_retry_and_nul_id_and_unknown_fields() {
        let got = parse(b"retry: 1x\nid: a\0b\nfoo: bar\ndata\n\n");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].retry, None);
        assert_eq!(got[0].id, None);
        assert!(got[0].has_data);
        assert_eq!(got[0].data, "");
    }

    #[test]
    fn every_split_point_gives_the_same_frames() {
        let body: &[u8] =
            b"event: a\r\ndata: {\"x\":\"\xC3\xA9\"}\r\n\r\n: c\ndata: 1\ndata: 2\n\nid: 9\rdata: z\r\r";
        let whole = parse(body);
        assert_eq!(whole.len(), 3);
        for i in 0..body.len() {
            for j in i..body.len() {
                let got = parse_chunks(&[&body[..i], &body[i..j], &body[j..]]);
                assert_eq!(got, whole, "split at {i},{j}");
            }
        }
    }
}
