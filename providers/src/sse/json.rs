//! JSON strings in frames written or read by hand: the scan for the bytes a JSON string
//! cannot hold as they are, and escaping exactly as serde_json does.
//!
//! The encoders write their hot chunks without serde_json (its serializer costs more than
//! the rest of re-encoding a token chunk), so the strings in them must come out
//! byte-identical to what serde_json writes: the same short escapes (`\"`, `\\`, `\b`, `\f`,
//! `\n`, `\r`, `\t`), `\u00xx` with lowercase hex for the other control characters, and
//! everything else, non-ASCII and DEL included, as it is.

/// The position of the first `"`, `\\` or control character (below 0x20) in `b` at or after
/// `i`, or `b.len()`; eight bytes at a time.
pub(crate) fn skip_plain(b: &[u8], mut i: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    while let Some(w) = b.get(i..i + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(w);
        let x = u64::from_le_bytes(word);
        let quote = x ^ (ONES * u64::from(b'"'));
        let slash = x ^ (ONES * u64::from(b'\\'));
        // A borrow may mark a byte above the first match too, but never one below it: the
        // lowest set bit marks exactly the first matching byte.
        let m = (quote.wrapping_sub(ONES) & !quote)
            | (slash.wrapping_sub(ONES) & !slash)
            | (x.wrapping_sub(ONES * 0x20) & !x);
        let m = m & HIGH;
        if m != 0 {
            return i + (m.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while let Some(&c) = b.get(i) {
        if c == b'"' || c == b'\\' || c < 0x20 {
            return i;
        }
        i += 1;
    }
    i
}

/// Appends `s` as a JSON string (quotes included), byte for byte as serde_json writes it.
pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let b = s.as_bytes();
    out.reserve(b.len() + 2);
    out.push(b'"');
    let mut start = 0;
    loop {
        let i = skip_plain(b, start);
        out.extend_from_slice(&b[start..i]);
        let Some(&c) = b.get(i) else { break };
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0C => out.extend_from_slice(b"\\f"),
            _ => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(c >> 4)],
                HEX[usize::from(c & 0xF)],
            ]),
        }
        start = i + 1;
    }
    out.push(b'"');
}

/// Appends `n` in decimal, as serde_json writes an integer.
pub(crate) fn write_u64(out: &mut Vec<u8>, n: u64) {
    if n < 10 {
        // Choice and tool-call indices: almost always a single digit.
        out.push(b'0' + n as u8);
        return;
    }
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut n = n;
    while n > 0 {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    out.extend_from_slice(&buf[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seeded::{Rng, escaper_string};

    fn check(s: &str) {
        let mut ours = Vec::new();
        write_str(&mut ours, s);
        let theirs = serde_json::to_vec(s).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&theirs),
            "{s:?}"
        );
    }

    #[test]
    fn every_single_char_escapes_like_serde_json() {
        for c in (0..0x800u32).chain([0x2028, 0x2029, 0xfeff, 0x1f600, 0x10ffff]) {
            let c = char::from_u32(c).unwrap_or(' ');
            check(&c.to_string());
            // At every offset within an eight-byte word, and past the word loop.
            for pad in 0..17 {
                check(&format!("{}{c}{}", "a".repeat(pad), "b".repeat(17 - pad)));
            }
        }
    }

    #[test]
    fn random_strings_and_every_prefix_escape_like_serde_json() {
        for seed in 1..=300u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let len = rng.below(40) as usize;
            let s = escaper_string(&mut rng, len);
            for cut in (0..=s.len()).filter(|&c| s.is_char_boundary(c)) {
                check(&s[..cut]);
                check(&s[cut..]);
            }
        }
    }

    #[test]
    fn skip_plain_finds_the_first_byte_to_escape() {
        for seed in 1..=2000u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let len = rng.below(30) as usize;
            let s = escaper_string(&mut rng, len);
            let b = s.as_bytes();
            for start in 0..=b.len() {
                let expected = (start..b.len())
                    .find(|&i| b[i] == b'"' || b[i] == b'\\' || b[i] < 0x20)
                    .unwrap_or(b.len());
                assert_eq!(skip_plain(b, start), expected, "{s:?} from {start}");
            }
        }
    }

    #[test]
    fn integers_like_serde_json() {
        for n in [
            0,
            1,
            9,
            10,
            11,
            99,
            100,
            1234567,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut out = Vec::new();
            write_u64(&mut out, n);
            assert_eq!(out, serde_json::to_vec(&n).unwrap());
        }
    }
}
