//! A fast path for the common shape of a streamed chunk.
//!
//! serde_json's derived deserializer costs most of the decoder's time on the small, uniform
//! chunks OpenAI streams (a dozen keys, a few short strings). [`parse`] reads the usual
//! shape directly and gives up (`None`) on anything else: an unknown or repeated key, a value
//! of an unexpected type, a number that is not a plain integer, a control character, a
//! malformed document. The caller then parses with serde_json, so errors and unusual inputs
//! behave exactly as before; whatever `parse` accepts, serde_json parses to the same value
//! (but for the head fields a caller lets it skip, see [`Head`]).
//!
//! Past a learned head, a token chunk repeats its rest byte for byte too, but for the text
//! itself: [`Head`] also learns that shape (when `parse` accepts such a chunk), and a chunk
//! that has it is read by two comparisons and a scan of the text ([`Head::shaped_text`]),
//! before and instead of `parse`.

use std::borrow::Cow;

use serde::de::IgnoredAny;

use super::wire::{
    Choice, Chunk, CompletionTokensDetails, Delta, PromptTokensDetails, Str, WireUsage,
};
use crate::sse::json::skip_plain;

/// Longest chunk head kept by [`Head`]: real heads are under 300 bytes.
const MAX_HEAD: usize = 1024;

/// The bit of `usage` among a chunk's seen keys (see [`P::members`]).
const USAGE: u32 = 16;

/// The members a stream repeats byte for byte before `"choices"` in every chunk (`id`,
/// `object`, `created`, `model`, `system_fingerprint`...), as last parsed.
///
/// They are most of a token chunk's bytes, and the decoder reads them only from the stream's
/// first chunk; a later chunk that starts with the same bytes skips them (see [`parse`]).
#[derive(Debug, Default, Clone)]
pub(crate) struct Head {
    /// From the opening `{` to just before the `"choices"` key: whole members, each with its
    /// comma.
    bytes: Vec<u8>,
    /// The keys seen in `bytes` (the bits of [`P::members`]), for duplicate detection.
    seen: u32,
    /// The shape of a text chunk after `bytes`, once one was read past them.
    text: Option<TextShape>,
}

impl Head {
    /// The choice index and text of `data`, when it is the learned head followed by the
    /// learned text shape: the same chunk as the one the shape was learned from but for its
    /// text (and padding), which [`parse`] would read as one choice holding only that text.
    /// Only for a caller that has read the head's fields already, as with `skip`.
    pub(crate) fn shaped_text<'a>(&self, data: &'a str) -> Option<(u32, &'a str)> {
        let shape = self.text.as_ref()?;
        if !data.as_bytes().starts_with(&self.bytes) {
            return None;
        }
        Some((shape.index, shape.text_in(data.get(self.bytes.len()..)?)?))
    }
}

/// What follows a learned [`Head`] in a chunk that holds nothing but one choice's text
/// (`"choices":[{"index":0,"delta":{"content":"` ... `"},"logprobs":null,"finish_reason":null}]}`
/// in OpenAI's streams), learned from such a chunk that the full parse accepted. OpenAI's
/// chunks also end with an `"obfuscation"` string of random padding, different in every chunk
/// and ignored: the shape then has a second hole for it.
///
/// A later chunk made of the same bytes around strings without quotes, backslashes or
/// control characters is the same JSON document but for those strings, so it parses to the
/// same chunk but for the text: [`Head::shaped_text`] then reads it without parsing.
#[derive(Debug, Clone)]
struct TextShape {
    /// From the end of the head to the text's opening quote, inclusive.
    before: Vec<u8>,
    /// With an obfuscation hole: from the text's closing quote to the padding's opening
    /// quote, inclusive.
    between: Option<Vec<u8>>,
    /// From the closing quote of the last hole to the end of the data.
    after: Vec<u8>,
    /// The choice's index.
    index: u32,
}

impl TextShape {
    /// Learns the shape from `c`, parsed from `data` past a head of `head` bytes, if `c` is
    /// a text chunk and nothing else (the patterns name every field, so that a field added
    /// to the wire types cannot slip past unconsidered). `padding` is where the chunk's last
    /// unescaped `"obfuscation"` string lies, if it has one.
    fn of(data: &str, head: usize, c: &Chunk<'_>, padding: Option<(usize, usize)>) -> Option<Self> {
        let Chunk {
            id: None,
            model: None,
            created: None,
            choices: Some(choices),
            usage: None,
            system_fingerprint: None,
            service_tier: None,
            prompt_filter_results: None,
            error: None,
        } = c
        else {
            return None;
        };
        let [
            Choice {
                index,
                delta: Some(delta),
                finish_reason: None,
                logprobs: None,
                content_filter_results: None,
            },
        ] = choices.as_slice()
        else {
            return None;
        };
        let Delta {
            role: None,
            content: Some(Str(Cow::Borrowed(text))),
            refusal: None,
            reasoning_content: None,
            reasoning: None,
            tool_calls: None,
        } = delta
        else {
            return None;
        };
        // Where the borrowed text lies in `data`.
        let start = (text.as_ptr() as usize).checked_sub(data.as_ptr() as usize)?;
        let end = start + text.len();
        let b = data.as_bytes();
        let before = b.get(head..start)?;
        let quoted = |s: &[u8]| s.len() >= 2 && s[0] == b'"' && s[s.len() - 1] == b'"';
        let (between, after) = match padding.filter(|&(at, _)| at > end) {
            Some((at, to)) => (Some(b.get(end..at)?), b.get(to..)?),
            None => (None, b.get(end..)?),
        };
        let fits = before.len() + between.map_or(0, <[u8]>::len) + after.len() <= MAX_HEAD;
        let well_formed = before.last() == Some(&b'"')
            && after.first() == Some(&b'"')
            && between.is_none_or(quoted);
        (fits && well_formed).then(|| Self {
            before: before.to_vec(),
            between: between.map(<[u8]>::to_vec),
            after: after.to_vec(),
            index: *index,
        })
    }

    /// The text of `rest` (a chunk's bytes past its head) if `rest` has this shape.
    fn text_in<'a>(&self, rest: &'a str) -> Option<&'a str> {
        let b = rest.as_bytes();
        let end = b.len().checked_sub(self.after.len())?;
        let start = self.before.len();
        if end < start || !b.starts_with(&self.before) || !b[end..].eq(self.after.as_slice()) {
            return None;
        }
        let b = &b[..end];
        // The text ends at its first quote, backslash or control character: it must be the
        // quote that the rest of the shape starts with.
        let close = skip_plain(b, start);
        let plain = match &self.between {
            None => close == end,
            Some(between) => {
                b[close..].starts_with(between) && skip_plain(b, close + between.len()) == end
            }
        };
        // The text lies between ASCII quotes, so `get` cannot fail on a char boundary.
        plain.then(|| rest.get(start..close))?
    }
}

/// Parses `data` into `c` (a default [`Chunk`]), or `None` when the slow path must decide
/// (`c` then holds whatever was read: the caller replaces it). Filled in place: the chunk and
/// its choice are large, and moving them showed in the profile.
///
/// `head` learns the members before `"choices"` of every accepted chunk. With `skip`, a
/// chunk whose data starts with the learned bytes is parsed from after them, and its fields
/// among them (`id`, `model`, `created`, `system_fingerprint`, `service_tier`) are left
/// `None`: only for a caller that has read them from an earlier chunk of the stream.
/// Everything else is as without `skip`, errors included: the skipped bytes were accepted
/// as whole members before, and the rest is parsed knowing which keys they held.
///
/// `spare` is an empty vector whose allocation the chunk's `choices` take (see
/// [`super::wire::recycle`]).
pub(crate) fn parse<'a>(
    data: &'a str,
    head: &mut Head,
    skip: bool,
    c: &mut Chunk<'a>,
    spare: Vec<Choice<'a>>,
) -> Option<()> {
    let mut p = P {
        s: data,
        b: data.as_bytes(),
        i: 0,
        head: None,
        spare,
        padding: None,
    };
    let known = skip && !head.bytes.is_empty() && p.b.starts_with(&head.bytes);
    if known {
        p.i = head.bytes.len();
        p.members(c, head.seen)?;
    } else {
        p.chunk(c)?;
    }
    p.ws();
    if p.i != p.b.len() {
        return None;
    }
    if known {
        if head.text.is_none() {
            head.text = TextShape::of(data, head.bytes.len(), c, p.padding);
        }
        return Some(());
    }
    // A head holding `usage` is not learned: usage is read from every chunk, not only the
    // first, so it must never be skipped.
    let learnable = |&(end, seen): &(usize, u32)| end <= MAX_HEAD && seen & USAGE == 0;
    if let Some((end, seen)) = p.head.filter(learnable) {
        head.bytes.clear();
        head.bytes.extend_from_slice(&p.b[..end]);
        head.seen = seen;
        head.text = None;
    }
    Some(())
}

struct P<'a> {
    s: &'a str,
    b: &'a [u8],
    i: usize,
    /// Where the top-level `"choices"` key started (after the whitespace before it), with
    /// the keys seen before it: the chunk's [`Head`].
    head: Option<(usize, u32)>,
    /// The allocation `choices` goes into.
    spare: Vec<Choice<'a>>,
    /// Where the last unescaped `"obfuscation"` string's value lies (quotes excluded).
    padding: Option<(usize, usize)>,
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
    fn key(&mut self) -> Option<&'a [u8]> {
        self.eat(b'"')?;
        let start = self.i;
        self.i = skip_plain(self.b, self.i);
        // A key with an escape is left to serde_json.
        if *self.b.get(self.i)? != b'"' {
            return None;
        }
        let key = self.b.get(start..self.i)?;
        self.i += 1;
        self.eat(b':')?;
        Some(key)
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

    fn chunk(&mut self, c: &mut Chunk<'a>) -> Option<()> {
        self.eat(b'{')?;
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(());
        }
        self.members(c, 0)
    }

    /// The chunk's members from the next key on, `seen` holding the keys already read.
    fn members(&mut self, c: &mut Chunk<'a>, mut seen: u32) -> Option<()> {
        loop {
            self.ws();
            let start = self.i;
            match self.key()? {
                b"id" => {
                    Self::once(&mut seen, 1)?;
                    c.id = self.opt_str()?;
                }
                b"model" => {
                    Self::once(&mut seen, 2)?;
                    c.model = self.opt_str()?;
                }
                b"created" => {
                    Self::once(&mut seen, 4)?;
                    c.created = if self.peek()? == b'n' {
                        self.null().map(|()| None)?
                    } else {
                        Some(self.uint()?)
                    };
                }
                b"choices" => {
                    self.head = Some((start, seen));
                    Self::once(&mut seen, 8)?;
                    if self.peek()? == b'n' {
                        self.null()?;
                    } else {
                        let spare = std::mem::take(&mut self.spare);
                        self.choices(c.choices.insert(spare))?;
                    }
                }
                b"usage" => {
                    Self::once(&mut seen, USAGE)?;
                    c.usage = if self.peek()? == b'n' {
                        self.null().map(|()| None)?
                    } else {
                        Some(Box::new(self.usage()?))
                    };
                }
                b"system_fingerprint" => {
                    Self::once(&mut seen, 32)?;
                    c.system_fingerprint = self.opt_str()?;
                }
                b"service_tier" => {
                    Self::once(&mut seen, 64)?;
                    c.service_tier = self.opt_str()?;
                }
                // Not fields of `Chunk`: skipped, repeats allowed, as serde does.
                b"object" => {
                    self.opt_str()?;
                }
                b"obfuscation" => {
                    self.ws();
                    let at = self.i + 1;
                    if let Some(Str(Cow::Borrowed(_))) = self.opt_str()? {
                        self.padding = Some((at, self.i - 1));
                    }
                }
                _ => return None,
            }
            if !self.next(b'}')? {
                return Some(());
            }
        }
    }

    /// `null` or a plain integer.
    fn opt_uint(&mut self) -> Option<Option<u64>> {
        if self.peek()? == b'n' {
            self.null().map(|()| None)
        } else {
            self.uint().map(Some)
        }
    }

    /// The usage object of the stream's last chunk. serde skips unknown members whatever
    /// their value; here only plain integers and `null` are skipped, anything else goes to
    /// serde_json.
    fn usage(&mut self) -> Option<WireUsage> {
        let mut u = WireUsage::default();
        let mut seen = 0u32;
        self.eat(b'{')?;
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(u);
        }
        loop {
            match self.key()? {
                b"prompt_tokens" => {
                    Self::once(&mut seen, 1)?;
                    u.prompt_tokens = self.opt_uint()?;
                }
                b"completion_tokens" => {
                    Self::once(&mut seen, 2)?;
                    u.completion_tokens = self.opt_uint()?;
                }
                b"total_tokens" => {
                    Self::once(&mut seen, 4)?;
                    u.total_tokens = self.opt_uint()?;
                }
                b"prompt_tokens_details" => {
                    Self::once(&mut seen, 8)?;
                    u.prompt_tokens_details = self
                        .details(b"cached_tokens")?
                        .map(|cached_tokens| PromptTokensDetails { cached_tokens });
                }
                b"completion_tokens_details" => {
                    Self::once(&mut seen, 16)?;
                    u.completion_tokens_details = self
                        .details(b"reasoning_tokens")?
                        .map(|reasoning_tokens| CompletionTokensDetails { reasoning_tokens });
                }
                _ => {
                    self.opt_uint()?;
                }
            }
            if !self.next(b'}')? {
                return Some(u);
            }
        }
    }

    /// A details object (`Some`, holding its `field`: the only member read) or `null`
    /// (`None`); the outer `None` sends the chunk to serde_json.
    fn details(&mut self, field: &[u8]) -> Option<Option<Option<u64>>> {
        if self.peek()? == b'n' {
            return self.null().map(|()| None);
        }
        let mut value = None;
        let mut seen = 0u32;
        self.eat(b'{')?;
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(Some(value));
        }
        loop {
            if self.key()? == field {
                Self::once(&mut seen, 1)?;
                value = self.opt_uint()?;
            } else {
                self.opt_uint()?;
            }
            if !self.next(b'}')? {
                return Some(Some(value));
            }
        }
    }

    fn choices(&mut self, v: &mut Vec<Choice<'a>>) -> Option<()> {
        self.eat(b'[')?;
        if self.peek()? == b']' {
            self.i += 1;
            return Some(());
        }
        loop {
            v.push(Choice::default());
            self.choice(v.last_mut()?)?;
            if !self.next(b']')? {
                return Some(());
            }
        }
    }

    fn choice(&mut self, c: &mut Choice<'a>) -> Option<()> {
        let mut seen = 0u32;
        self.eat(b'{')?;
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(());
        }
        loop {
            match self.key()? {
                b"index" => {
                    Self::once(&mut seen, 1)?;
                    c.index = u32::try_from(self.uint()?).ok()?;
                }
                b"delta" => {
                    Self::once(&mut seen, 2)?;
                    if self.peek()? == b'n' {
                        self.null()?;
                    } else {
                        self.delta(c.delta.insert(Delta::default()))?;
                    }
                }
                b"finish_reason" => {
                    Self::once(&mut seen, 4)?;
                    c.finish_reason = self.opt_str()?;
                }
                b"logprobs" => {
                    Self::once(&mut seen, 8)?;
                    self.null()?;
                }
                _ => return None,
            }
            if !self.next(b'}')? {
                return Some(());
            }
        }
    }

    fn delta(&mut self, d: &mut Delta<'a>) -> Option<()> {
        let mut seen = 0u32;
        self.eat(b'{')?;
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(());
        }
        loop {
            let key = self.key()?;
            let (bit, slot) = match key {
                b"role" => {
                    Self::once(&mut seen, 1)?;
                    d.role = self.opt_str()?.map(|_| IgnoredAny);
                    if !self.next(b'}')? {
                        return Some(());
                    }
                    continue;
                }
                b"content" => (2, &mut d.content),
                b"refusal" => (4, &mut d.refusal),
                b"reasoning_content" => (8, &mut d.reasoning_content),
                b"reasoning" => (16, &mut d.reasoning),
                _ => return None,
            };
            Self::once(&mut seen, bit)?;
            *slot = self.opt_str()?;
            if !self.next(b'}')? {
                return Some(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seeded::Rng;

    /// [`parse`] into a fresh chunk.
    fn fast<'a>(data: &'a str, head: &mut Head, skip: bool) -> Option<Chunk<'a>> {
        let mut c = Chunk::default();
        parse(data, head, skip, &mut c, Vec::new()).map(|()| c)
    }

    /// Whatever the fast path accepts, serde_json parses to the same chunk.
    fn agrees(data: &str) {
        let slow = serde_json::from_str::<Chunk<'_>>(data);
        match (fast(data, &mut Head::default(), false), slow) {
            (Some(fast), Ok(slow)) => {
                assert_eq!(format!("{fast:?}"), format!("{slow:?}"), "{data}")
            }
            (Some(fast), Err(e)) => panic!("fast path accepted {data:?} ({fast:?}); serde: {e}"),
            (None, _) => {}
        }
    }

    /// The chunk without the fields a skipped head leaves out.
    fn headless(mut c: Chunk<'_>) -> String {
        c.id = None;
        c.model = None;
        c.created = None;
        c.system_fingerprint = None;
        c.service_tier = None;
        format!("{c:?}")
    }

    /// With `head` learned from an earlier chunk, whatever the fast path accepts with `skip`
    /// serde_json parses to the same chunk but for the head fields, and `head` is unchanged.
    fn agrees_skipping(head: &mut Head, data: &str) {
        let before = (head.bytes.clone(), head.seen);
        let slow = serde_json::from_str::<Chunk<'_>>(data);
        let fast = fast(data, head, true);
        let skipped = data.as_bytes().starts_with(&before.0);
        match (fast, slow) {
            (Some(fast), Ok(slow)) => {
                assert_eq!(headless(fast), headless(slow), "{data}");
            }
            (Some(fast), Err(e)) => panic!("fast path accepted {data:?} ({fast:?}); serde: {e}"),
            (None, _) => {}
        }
        if skipped {
            assert_eq!((head.bytes.clone(), head.seen), before, "{data}");
        }
    }

    #[test]
    fn usage_before_choices_is_never_skipped() {
        for first in [
            "{\"id\":\"a\",\"usage\":{\"prompt_tokens\":1},\"choices\":[]}",
            "{\"id\":\"a\",\"usage\":null,\"choices\":[]}",
        ] {
            let mut head = Head::default();
            assert!(fast(first, &mut head, false).is_some());
            assert!(head.bytes.is_empty(), "learned a head with usage: {first}");
            let next = "{\"id\":\"a\",\"usage\":{\"prompt_tokens\":2},\"choices\":[]}";
            let chunk = fast(next, &mut head, true).unwrap();
            assert_eq!(chunk.usage.unwrap().prompt_tokens, Some(2));
            agrees_skipping(&mut head, next);
        }
    }

    #[test]
    fn skipping_the_learned_head_agrees_with_serde() {
        let (mut skipped, mut shaped) = (0, 0);
        for body in recordings() {
            let lines = data_lines(&body);
            let head = learned(&lines);
            if head.bytes.is_empty() {
                continue;
            }
            for line in &lines {
                let mut h = head.clone();
                shaped += usize::from(read_by_shape(&h, line).is_some());
                skipped += usize::from(
                    !h.bytes.is_empty()
                        && line.as_bytes().starts_with(&h.bytes)
                        && fast(line, &mut h, true).is_some(),
                );
                agrees_skipping(&mut h, line);
                // The same head, then a repeated or a new key, a break in the rest.
                for (from, to) in [
                    ("\"choices\"", "\"id\":\"x\",\"choices\""),
                    ("\"choices\"", "\"model\":null,\"choices\""),
                    ("\"choices\"", "\"object\":\"x\",\"choices\""),
                    ("\"choices\"", "\"choices\":[],\"choices\""),
                    ("\"choices\"", "\"nope\":1,\"choices\""),
                    ("\"usage\":null", "\"usage\":null,\"usage\":null"),
                    ("\"content\":\"", "\"content\":\"\\n\\u00e9\\\""),
                    ("null", "nul"),
                ] {
                    agrees_skipping(&mut h, &line.replacen(from, to, 1));
                }
                agrees_skipping(&mut h, &format!("{line} x"));
                for cut in (0..line.len()).filter(|&c| line.is_char_boundary(c)) {
                    agrees_skipping(&mut h, &line[..cut]);
                }
            }
        }
        assert!(skipped > 100, "head barely skipped: {skipped}");
        assert!(shaped > 100, "text shape barely used: {shaped}");
    }

    /// Every recorded OpenAI stream's body.
    fn recordings() -> Vec<String> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/openai_chat/");
        std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| std::fs::read_to_string(entry.unwrap().path()).unwrap())
            .collect()
    }

    /// The data of each `data:` line of an SSE body.
    fn data_lines(body: &str) -> Vec<&str> {
        body.lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .collect()
    }

    /// The head and text shape a decoder learns from `lines`: the stream's first accepted
    /// chunk is parsed without skipping, every later one with.
    fn learned(lines: &[&str]) -> Head {
        let mut head = Head::default();
        let mut started = false;
        for line in lines {
            started |= fast(line, &mut head, started).is_some();
        }
        head
    }

    /// The text `line` is read as through `head`'s text shape, if it is.
    fn read_by_shape<'a>(head: &Head, line: &'a str) -> Option<&'a str> {
        head.shaped_text(line).map(|(_, text)| text)
    }

    /// Texts from an alphabet of what breaks a naive reading: quotes, backslashes and
    /// escapes, raw control characters, JSON punctuation, multi-byte characters.
    fn texts(seed: u64, count: usize) -> Vec<String> {
        const PIECES: [&str; 16] = [
            "a", " tok", "\"", "\\", "\\n", "\\\"", "\n", "\u{1}", "\u{1f}", "}", "]", ",", ":",
            "é", "日本", "\\u00e9",
        ];
        let mut rng = Rng(seed);
        (0..count)
            .map(|_| {
                let len = rng.below(12);
                (0..len)
                    .map(|_| PIECES[rng.below(PIECES.len() as u64) as usize])
                    .collect()
            })
            .collect()
    }

    /// Any text (and padding) in a learned shape: the fast path agrees with serde_json, reads
    /// a plain text by the shape as itself, and leaves the head and shape as they were.
    #[test]
    fn text_shape_agrees_with_serde_for_any_text() {
        let (mut plain, mut padded) = (0, 0);
        for (n, body) in recordings().iter().enumerate() {
            let lines = data_lines(body);
            let head = learned(&lines);
            let Some(shape) = &head.text else {
                continue;
            };
            let utf8 = |b: &[u8]| std::str::from_utf8(b).unwrap().to_owned();
            let (before, after) = (utf8(&shape.before), utf8(&shape.after));
            let between = shape.between.as_deref().map(utf8);
            padded += usize::from(between.is_some());
            let prefix = utf8(&head.bytes);
            let pads = texts(n as u64 + 1000, 400);
            for (text, pad) in texts(n as u64 + 1, 400).iter().zip(&pads) {
                let line = match &between {
                    None => format!("{prefix}{before}{text}{after}"),
                    Some(between) => format!("{prefix}{before}{text}{between}{pad}{after}"),
                };
                let mut h = head.clone();
                agrees_skipping(&mut h, &line);
                assert_eq!(format!("{h:?}"), format!("{head:?}"), "{line}");
                let plain_str = |s: &str| !s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20);
                if plain_str(text) && (between.is_none() || plain_str(pad)) {
                    plain += 1;
                    assert_eq!(read_by_shape(&head, &line), Some(text.as_str()), "{line}");
                    let chunk = fast(&line, &mut h, true).expect(&line);
                    let choices = chunk.choices.unwrap();
                    let content = choices[0].delta.as_ref().unwrap().content.as_ref();
                    assert_eq!(content.map(Str::as_str), Some(text.as_str()));
                } else {
                    assert_eq!(read_by_shape(&head, &line), None, "{line}");
                }
            }
        }
        assert!(plain > 100, "few plain texts tried: {plain}");
        assert!(
            padded > 0,
            "no shape with OpenAI's obfuscation padding learned"
        );
    }

    #[test]
    fn fast_path_matches_serde_on_fixtures_and_variants() {
        let mut hits = 0;
        for body in recordings() {
            for line in data_lines(&body) {
                hits += usize::from(fast(line, &mut Head::default(), false).is_some());
                agrees(line);
                agrees(&line.replace(',', " ,\n\t").replace(':', ": "));
                agrees(&line.replace("\"content\":\"", "\"content\":\"\\n\\u00e9\\\""));
                agrees(&line.replace("\"index\":0", "\"index\":0,\"index\":0"));
                agrees(&line.replace("\"created\":1", "\"created\":01"));
                agrees(&line.replace("\"created\":1", "\"created\":-1"));
                agrees(&line.replace("null", "nul"));
                agrees(&line.replace("\"total_tokens\":", "\"total_tokens\":1,\"total_tokens\":"));
                agrees(&line.replace("\"cached_tokens\":0", "\"cached_tokens\":0.0"));
                agrees(&line.replace("\"audio_tokens\":0", "\"audio_tokens\":{}"));
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
            "{\"usage\":{}}",
            "{\"usage\":{\"prompt_tokens\":1,\"prompt_tokens\":2}}",
            "{\"usage\":{\"prompt_tokens\":null,\"x\":1,\"x\":null}}",
            "{\"usage\":{\"x\":1.5}}",
            "{\"usage\":{\"x\":\"a\"}}",
            "{\"usage\":{\"prompt_tokens\":-1}}",
            "{\"usage\":{\"prompt_tokens\":18446744073709551616}}",
            "{\"usage\":{\"prompt_tokens_details\":null,\"completion_tokens_details\":{}}}",
            "{\"usage\":{\"prompt_tokens_details\":{\"cached_tokens\":3,\"audio_tokens\":0}}}",
            "{\"usage\":{\"prompt_tokens_details\":{\"cached_tokens\":3,\"cached_tokens\":3}}}",
            "{\"usage\":{\"completion_tokens_details\":{\"reasoning_tokens\":null,\"x\":2}}}",
            "{\"usage\":{\"completion_tokens_details\":{\"reasoning_tokens\":1},\"completion_tokens_details\":null}}",
            "{\"usage\":{\"prompt_tokens_details\":[]}}",
            "{\"usage\":{\"total_tokens\":5},\"usage\":null}",
            "{\"usage\":{\"total_tokens\":5,}}",
            "{}",
            " { } ",
        ] {
            agrees(data);
        }
    }
}
