//! A fast path for the common shape of a streamed chunk.
//!
//! serde_json's derived deserializer costs most of the decoder's time on the small, uniform
//! chunks OpenAI streams (a dozen keys, a few short strings). [`parse`] reads the usual
//! shape directly and gives up (`None`) on anything else: an unknown or repeated key, a value
//! of an unexpected type, a number that is not a plain integer, a control character, a
//! malformed document. The caller then parses with serde_json, so errors and unusual inputs
//! behave exactly as before; whatever `parse` accepts, serde_json parses to the same value.

use std::borrow::Cow;

use serde::de::IgnoredAny;

use super::wire::{Choice, Chunk, Delta, Str};

/// Parses `data` as a [`Chunk`], or `None` when the slow path must decide.
pub(crate) fn parse(data: &str) -> Option<Chunk<'_>> {
    let mut p = P {
        s: data,
        b: data.as_bytes(),
        i: 0,
    };
    let chunk = p.chunk()?;
    p.ws();
    (p.i == p.b.len()).then_some(chunk)
}

struct P<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
}

impl<'a> P<'a> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    /// Skips whitespace and consumes `c`.
    fn eat(&mut self, c: u8) -> Option<()> {
        self.ws();
        (*self.b.get(self.i)? == c).then(|| self.i += 1)
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.b.get(self.i).copied()
    }

    /// After a value: `,` (more follows, true) or `close` (false).
    fn next(&mut self, close: u8) -> Option<bool> {
        match self.peek()? {
            b',' => {
                self.i += 1;
                Some(true)
            }
            c if c == close => {
                self.i += 1;
                Some(false)
            }
            _ => None,
        }
    }

    /// A string; the opening quote is next. Escapes are decoded by serde_json itself.
    fn string(&mut self) -> Option<Cow<'a, str>> {
        self.eat(b'"')?;
        let start = self.i;
        let mut escaped = false;
        loop {
            self.i = skip_plain(self.b, self.i);
            match *self.b.get(self.i)? {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    // The escaped character may be a quote; serde_json checks the escape.
                    self.i += 2;
                }
                0..=0x1F => return None,
                _ => self.i += 1,
            }
        }
        let end = self.i;
        self.i += 1;
        if escaped {
            let quoted = self.s.get(start - 1..end + 1)?;
            serde_json::from_str::<String>(quoted).ok().map(Cow::Owned)
        } else {
            self.s.get(start..end).map(Cow::Borrowed)
        }
    }

    /// A key without escapes, and its colon.
    fn key(&mut self) -> Option<&'a str> {
        let k = match self.string()? {
            Cow::Borrowed(k) => k,
            Cow::Owned(_) => return None,
        };
        self.eat(b':')?;
        Some(k)
    }

    fn null(&mut self) -> Option<()> {
        self.ws();
        self.b.get(self.i..self.i + 4).filter(|w| *w == b"null")?;
        self.i += 4;
        Some(())
    }

    /// `null` or a string.
    fn opt_str(&mut self) -> Option<Option<Str<'a>>> {
        if self.peek()? == b'n' {
            self.null()?;
            Some(None)
        } else {
            self.string().map(|s| Some(Str(s)))
        }
    }

    /// A plain non-negative integer (no sign, fraction or exponent) that fits a u64.
    fn uint(&mut self) -> Option<u64> {
        self.ws();
        let start = self.i;
        let mut n: u64 = 0;
        while let Some(d @ b'0'..=b'9') = self.b.get(self.i) {
            n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
            self.i += 1;
        }
        let len = self.i - start;
        if len == 0 || (len > 1 && self.b[start] == b'0') {
            return None;
        }
        match self.b.get(self.i) {
            Some(b'.' | b'e' | b'E') => None,
            _ => Some(n),
        }
    }

    /// Marks `bit` seen; `None` if it already was (serde reports a duplicate field).
    fn once(seen: &mut u32, bit: u32) -> Option<()> {
        if *seen & bit != 0 {
            return None;
        }
        *seen |= bit;
        Some(())
    }

    fn chunk(&mut self) -> Option<Chunk<'a>> {
        let mut c = Chunk::default();
        let mut seen = 0u32;
        self.eat(b'{')?;
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(c);
        }
        loop {
            match self.key()? {
                "id" => {
                    Self::once(&mut seen, 1)?;
                    c.id = self.opt_str()?;
                }
                "model" => {
                    Self::once(&mut seen, 2)?;
                    c.model = self.opt_str()?;
                }
                "created" => {
                    Self::once(&mut seen, 4)?;
                    c.created = if self.peek()? == b'n' {
                        self.null().map(|()| None)?
                    } else {
                        Some(self.uint()?)
                    };
                }
                "choices" => {
                    Self::once(&mut seen, 8)?;
                    c.choices = if self.peek()? == b'n' {
                        self.null().map(|()| None)?
                    } else {
                        Some(self.choices()?)
                    };
                }
                "usage" => {
                    Self::once(&mut seen, 16)?;
                    self.null()?;
                }
                "system_fingerprint" => {
                    Self::once(&mut seen, 32)?;
                    c.system_fingerprint = self.opt_str()?;
                }
                "service_tier" => {
                    Self::once(&mut seen, 64)?;
                    c.service_tier = self.opt_str()?;
                }
                // Not fields of `Chunk`: skipped, repeats allowed, as serde does.
                "object" | "obfuscation" => {
                    self.opt_str()?;
                }
                _ => return None,
            }
            if !self.next(b'}')? {
                return Some(c);
            }
        }
    }

    fn choices(&mut self) -> Option<Vec<Choice<'a>>> {
        self.eat(b'[')?;
        let mut v = Vec::new();
        if self.peek()? == b']' {
            self.i += 1;
            return Some(v);
        }
        loop {
            v.push(self.choice()?);
            if !self.next(b']')? {
                return Some(v);
            }
        }
    }

    fn choice(&mut self) -> Option<Choice<'a>> {
        let mut c = Choice::default();
        let mut seen = 0u32;
        self.eat(b'{')?;
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(c);
        }
        loop {
            match self.key()? {
                "index" => {
                    Self::once(&mut seen, 1)?;
                    c.index = u32::try_from(self.uint()?).ok()?;
                }
                "delta" => {
                    Self::once(&mut seen, 2)?;
                    c.delta = if self.peek()? == b'n' {
                        self.null().map(|()| None)?
                    } else {
                        Some(self.delta()?)
                    };
                }
                "finish_reason" => {
                    Self::once(&mut seen, 4)?;
                    c.finish_reason = self.opt_str()?;
                }
                "logprobs" => {
                    Self::once(&mut seen, 8)?;
                    self.null()?;
                }
                _ => return None,
            }
            if !self.next(b'}')? {
                return Some(c);
            }
        }
    }

    fn delta(&mut self) -> Option<Delta<'a>> {
        let mut d = Delta::default();
        let mut seen = 0u32;
        self.eat(b'{')?;
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(d);
        }
        loop {
            let key = self.key()?;
            let (bit, slot) = match key {
                "role" => {
                    Self::once(&mut seen, 1)?;
                    d.role = self.opt_str()?.map(|_| IgnoredAny);
                    if !self.next(b'}')? {
                        return Some(d);
                    }
                    continue;
                }
                "content" => (2, &mut d.content),
                "refusal" => (4, &mut d.refusal),
                "reasoning_content" => (8, &mut d.reasoning_content),
                "reasoning" => (16, &mut d.reasoning),
                _ => return None,
            };
            Self::once(&mut seen, bit)?;
            *slot = self.opt_str()?;
            if !self.next(b'}')? {
                return Some(d);
            }
        }
    }
}

/// The position of the first `"`, `\\` or control character at or after `i` (or the end),
/// eight bytes at a time.
fn skip_plain(b: &[u8], mut i: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    while let Some(w) = b.get(i..i + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(w);
        let x = u64::from_le_bytes(word);
        let quote = x ^ (ONES * u64::from(b'"'));
        let slash = x ^ (ONES * u64::from(b'\\'));
        // Lowest set bit of each mask marks exactly the first matching byte.
        let m = (quote.wrapping_sub(ONES) & !quote)
            | (slash.wrapping_sub(ONES) & !slash)
            | (x.wrapping_sub(ONES * 0x20) & !x);
        let m = m & HIGH;
        if m != 0 {
            return i + (m.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whatever the fast path accepts, serde_json parses to the same chunk.
    fn agrees(data: &str) {
        let slow = serde_json::from_str::<Chunk<'_>>(data);
        match (parse(data), slow) {
            (Some(fast), Ok(slow)) => {
                assert_eq!(format!("{fast:?}"), format!("{slow:?}"), "{data}")
            }
            (Some(fast), Err(e)) => panic!("fast path accepted {data:?} ({fast:?}); serde: {e}"),
            (None, _) => {}
        }
    }

    #[test]
    fn fast_path_matches_serde_on_fixtures_and_variants() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/openai_chat/");
        let mut hits = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let body = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            for line in body.lines().filter_map(|l| l.strip_prefix("data: ")) {
                hits += usize::from(parse(line).is_some());
                agrees(line);
                agrees(&line.replace(',', " ,\n\t").replace(':', ": "));
                agrees(&line.replace("\"content\":\"", "\"content\":\"\\n\\u00e9\\\""));
                agrees(&line.replace("\"index\":0", "\"index\":0,\"index\":0"));
                agrees(&line.replace("\"created\":1", "\"created\":01"));
                agrees(&line.replace("\"created\":1", "\"created\":-1"));
                agrees(&line.replace("null", "nul"));
                agrees(&line.replace("\"object\"", "\"object\":1,\"object\""));
                agrees(&format!("{line} x"));
                for cut in (0..line.len()).filter(|&c| line.is_char_boundary(c)) {
                    agrees(&line[..cut]);
                }
            }
        }
        assert!(hits > 100, "fast path barely used: {hits}");
    }

    #[test]
    fn odd_strings_fall_back_or_agree() {
        for data in [
            "{\"id\":\"a\\\"b\"}",
            "{\"id\":\"a\u{1}b\"}",
            "{\"id\":\"a\\ud800\"}",
            "{\"id\":\"\\\\\"}",
            "{\"id\":\"0123456789abcdef\\\"0123456789\"}",
            "{\"id\":\"é0123456789abcdef\\t\"}",
            "{\"created\":18446744073709551616}",
            "{\"created\":1.5}",
            "{\"choices\":[{\"index\":4294967296}]}",
            "{\"choices\":[{\"index\":1,\"delta\":{\"role\":\"assistant\",\"content\":null}}]}",
            "{\"choices\":[],}",
            "{}",
            " { } ",
        ] {
            agrees(data);
        }
    }
}
