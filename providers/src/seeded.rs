//! Seeded test inputs shared by the crate's unit tests (it has no property-testing
//! dependency): a small deterministic generator, so that a failure reproduces from its seed,
//! and strings that stress a JSON escaper.

/// xorshift64*.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number below `n`.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// `len` characters that stress an escaper: every control character, the two escaped ASCII
/// characters, DEL, plain ASCII and multi-byte UTF-8 (2, 3 and 4 bytes, U+2028 among them).
pub(crate) fn escaper_string(rng: &mut Rng, len: usize) -> String {
    const SPECIAL: &[char] = &[
        '"', '\\', '/', '\u{7f}', 'é', '—', '\u{2028}', '\u{2029}', '😀', '\u{fffd}', ' ',
    ];
    (0..len)
        .map(|_| match rng.below(4) {
            0 => char::from(rng.below(0x20) as u8),
            1 => SPECIAL[rng.below(SPECIAL.len() as u64) as usize],
            2 => char::from_u32(rng.below(0x11_0000) as u32).unwrap_or('x'),
            _ => char::from(b' ' + rng.below(95) as u8),
        })
        .collect()
}
