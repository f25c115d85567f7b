//! Per-message compression: every message is compressed on its own (no dictionary, no history
//! shared with earlier messages), so any message can be read alone, after a resume, by any
//! client. tokio-tungstenite has no permessage-deflate; this is the application-layer stand-in
//! the design asks for.
//!
//! Formats (each readable by the standard tools of its family):
//! - lz4: one LZ4 *block* preceded by its uncompressed size as a little-endian u32 (what
//!   `lz4_flex::compress_prepend_size` and python-lz4's `lz4.block.compress` write). The block
//!   format costs 4 bytes per message where the frame format costs 15.
//! - zstd: one zstd frame, level [`ZSTD_LEVEL`], content size in the header.
//! - gzip: one gzip member (RFC 1952), deflate level [`GZIP_LEVEL`].
//!
//! [`decompress`] never produces more than its `limit`: a message that would inflate past it
//! is refused with [`InflateError::TooLarge`] after at most `limit` bytes of output (see each
//! codec's notes below).

use std::io::{self, Read};

use super::protocol::Compression;

/// zstd level: 1, the fastest regular level. On the recorded streams level 3 (zstd's default)
/// saves nothing measurable per message (321 bytes per event either way, docs/websocket.md):
/// single events are too small for its larger search to find more.
pub const ZSTD_LEVEL: i32 = 1;

/// Deflate level of gzip messages: 1, miniz's fast path. Level 6 (zlib's default) saves 1% of
/// the bytes per event on the recorded streams (docs/websocket.md) for a slower search.
pub const GZIP_LEVEL: u8 = 1;

/// Largest zstd window accepted when the message needs no larger: 8 MiB, the size the zstd
/// format recommends every decoder support (`window_log_max` is never below 23).
const ZSTD_MIN_WINDOW_LOG: u32 = 23;
/// zstd's own default ceiling (`ZSTD_WINDOWLOG_LIMIT_DEFAULT`): 128 MiB.
const ZSTD_MAX_WINDOW_LOG: u32 = 27;

/// Output is pulled from streaming decoders in pieces of this size.
const READ_CHUNK: usize = 16 * 1024;

/// Why a compressed message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InflateError {
    /// It inflates past the limit (a bomb, or a message larger than allowed).
    #[error("inflates to more than {limit} bytes")]
    TooLarge {
        /// The limit, in bytes of output.
        limit: usize,
    },
    /// It is not valid data of its format.
    #[error("corrupt data: {0}")]
    Corrupt(String),
}

/// Compresses one message on its own. [`Compression::None`] copies it.
pub fn compress(c: Compression, data: &[u8]) -> Vec<u8> {
    match c {
        Compression::None => data.to_vec(),
        Compression::Lz4 => lz4_flex::block::compress_prepend_size(data),
        Compression::Zstd => {
            // Only fails if zstd cannot allocate its context; a valid zstd frame holding the
            // data uncompressed goes out instead.
            zstd::bulk::compress(data, ZSTD_LEVEL).unwrap_or_else(|_| zstd_raw_frame(data))
        }
        Compression::Gzip => gzip(data),
    }
}

/// Inflates one message, refusing anything that is corrupt or would inflate past `limit`
/// bytes. Never holds more than `limit` bytes of output (plus one read buffer of 16 KiB).
pub fn decompress(c: Compression, data: &[u8], limit: usize) -> Result<Vec<u8>, InflateError> {
    match c {
        Compression::None if data.len() > limit => Err(InflateError::TooLarge { limit }),
        Compression::None => Ok(data.to_vec()),
        Compression::Lz4 => lz4_decompress(data, limit),
        Compression::Zstd => zstd_decompress(data, limit),
        Compression::Gzip => read_bounded(flate2::bufread::GzDecoder::new(data), limit, data.len()),
    }
}

fn corrupt(e: impl std::fmt::Display) -> InflateError {
    InflateError::Corrupt(e.to_string())
}

/// lz4: the prepended size is a claim, checked before anything is allocated: above `limit`
/// it is a refusal; above what LZ4 can expand the block to (255 bytes of output per input
/// byte, plus a little), a lie. Only then is a buffer of the claimed size allocated, which
/// decoding cannot overrun (lz4_flex's checked decoder writes into the slice it is given).
fn lz4_decompress(data: &[u8], limit: usize) -> Result<Vec<u8>, InflateError> {
    let (size, block) = lz4_flex::block::uncompressed_size(data).map_err(corrupt)?;
    if size > limit {
        return Err(InflateError::TooLarge { limit });
    }
    if size > block.len().saturating_mul(256).saturating_add(64) {
        return Err(InflateError::Corrupt(format!(
            "claims {size} bytes from a {}-byte block",
            block.len()
        )));
    }
    let mut out = vec![0u8; size];
    let n = lz4_flex::block::decompress_into(block, &mut out).map_err(corrupt)?;
    if n != size {
        return Err(InflateError::Corrupt(format!(
            "claims {size} bytes, holds {n}"
        )));
    }
    Ok(out)
}

/// zstd: a content size declared above `limit` is refused at once; otherwise the stream
/// decoder is pulled until `limit`. Its window (internal buffer) is capped at
/// `max(8 MiB, limit)` rounded up to a power of two, so a frame cannot make it allocate more.
fn zstd_decompress(data: &[u8], limit: usize) -> Result<Vec<u8>, InflateError> {
    if let Ok(Some(declared)) = zstd::zstd_safe::get_frame_content_size(data)
        && declared > limit as u64
    {
        return Err(InflateError::TooLarge { limit });
    }
    let mut decoder = zstd::stream::read::Decoder::with_buffer(data).map_err(corrupt)?;
    decoder
        .window_log_max(zstd_window_log(limit))
        .map_err(corrupt)?;
    read_bounded(decoder, limit, data.len())
}

fn zstd_window_log(limit: usize) -> u32 {
    let needed = usize::BITS - limit.saturating_sub(1).leading_zeros();
    needed.clamp(ZSTD_MIN_WINDOW_LOG, ZSTD_MAX_WINDOW_LOG)
}

/// Reads `decoder` to its end, failing as soon as the output passes `limit`. The output's
/// capacity grows by doubling but never past `limit`.
fn read_bounded(
    mut decoder: impl Read,
    limit: usize,
    input_len: usize,
) -> Result<Vec<u8>, InflateError> {
    let mut out: Vec<u8> = Vec::with_capacity(input_len.saturating_mul(4).min(limit));
    let mut chunk = [0u8; READ_CHUNK];
    loop {
        let n = match decoder.read(&mut chunk) {
            Ok(0) => return Ok(out),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(corrupt(e)),
        };
        let len = out.len() + n;
        if len > limit {
            return Err(InflateError::TooLarge { limit });
        }
        if len > out.capacity() {
            let target = out.capacity().saturating_mul(2).clamp(len, limit);
            out.reserve_exact(target - out.len());
        }
        out.extend_from_slice(&chunk[..n]);
    }
}

/// One gzip member (RFC 1952): fixed 10-byte header (no name, no time, OS unknown), raw
/// deflate, CRC-32 and length. Built from infallible parts, so compression cannot fail.
fn gzip(data: &[u8]) -> Vec<u8> {
    let deflated = miniz_oxide::deflate::compress_to_vec(data, GZIP_LEVEL);
    let mut crc = flate2::Crc::new();
    crc.update(data);
    let mut out = Vec::with_capacity(deflated.len() + 18);
    out.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255]);
    out.extend_from_slice(&deflated);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    // ISIZE is the length modulo 2^32 (RFC 1952).
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

/// A zstd frame holding `data` in raw (stored) blocks: the fallback when zstd cannot compress.
fn zstd_raw_frame(data: &[u8]) -> Vec<u8> {
    /// Largest block the format allows.
    const MAX_BLOCK: usize = 128 * 1024;
    let mut out = Vec::with_capacity(data.len() + 16 + data.len() / MAX_BLOCK * 3);
    out.extend_from_slice(&0xFD2F_B528u32.to_le_bytes());
    // Frame header descriptor: 8-byte content size, single segment (window = content).
    out.push(0b1110_0000);
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    let mut blocks = data.chunks(MAX_BLOCK).peekable();
    if blocks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0]); // one empty last raw block
    }
    while let Some(block) = blocks.next() {
        let last = u32::from(blocks.peek().is_none());
        // Block header, 3 bytes LE: last flag, type 0 (raw), size.
        let header = last | ((block.len() as u32) << 3);
        out.extend_from_slice(&header.to_le_bytes()[..3]);
        out.extend_from_slice(block);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MIB: usize = 1 << 20;

    fn sample() -> Vec<u8> {
        let mut s = String::new();
        for i in 0..500 {
            s.push_str(&format!(
                r#"{{"op":"event","stream":"st_1","seq":{i},"type":"text.delta","index":0,"text":"tok {i} é"}}"#
            ));
        }
        s.into_bytes()
    }

    #[test]
    fn every_mode_round_trips() {
        let data = sample();
        for c in Compression::ALL {
            for input in [&data[..], b"", b"{}"] {
                let packed = compress(c, input);
                let back = decompress(c, &packed, input.len()).unwrap();
                assert_eq!(back, input, "{c}");
            }
            if c != Compression::None {
                assert!(compress(c, &data).len() < data.len() / 4, "{c} compresses");
            }
        }
    }

    #[test]
    fn the_limit_is_inclusive() {
        let data = sample();
        for c in Compression::ALL {
            let packed = compress(c, &data);
            assert!(decompress(c, &packed, data.len()).is_ok(), "{c}");
            assert_eq!(
                decompress(c, &packed, data.len() - 1),
                Err(InflateError::TooLarge {
                    limit: data.len() - 1
                }),
                "{c}"
            );
        }
    }

    #[test]
    fn formats_are_the_standard_ones() {
        let data = sample();
        // gzip: readable by flate2's own decoder (header, CRC and length checked).
        let mut back = Vec::new();
        flate2::read::GzDecoder::new(&compress(Compression::Gzip, &data)[..])
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);
        // lz4: u32 LE size, then a block.
        let packed = compress(Compression::Lz4, &data);
        assert_eq!(packed[..4], (data.len() as u32).to_le_bytes());
        assert_eq!(
            lz4_flex::block::decompress(&packed[4..], data.len()).unwrap(),
            data
        );
        // zstd: one frame declaring its content size.
        let packed = compress(Compression::Zstd, &data);
        assert_eq!(
            zstd::zstd_safe::get_frame_content_size(&packed).unwrap(),
            Some(data.len() as u64)
        );
    }

    #[test]
    fn zstd_fallback_frame_is_valid_zstd() {
        for len in [0, 1, 1000, 128 * 1024, 300 * 1024 + 7] {
            let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let frame = zstd_raw_frame(&data);
            assert_eq!(zstd::decode_all(&frame[..]).unwrap(), data, "{len}");
            assert_eq!(
                decompress(Compression::Zstd, &frame, len).unwrap(),
                data,
                "{len}"
            );
        }
    }

    /// 100 MiB of zeros, compressed by each mode: refused at a 1 MiB limit. How: lz4 and
    /// zstd from the size in their header, gzip by reading at most 1 MiB + 16 KiB of output
    /// (see `bounded_read_stops_right_after_the_limit`).
    #[test]
    fn a_decompression_bomb_is_refused() {
        let zeros = vec![0u8; 100 * MIB];
        for c in [Compression::Lz4, Compression::Zstd, Compression::Gzip] {
            let bomb = compress(c, &zeros);
            assert!(bomb.len() < MIB, "{c}: {} bytes", bomb.len());
            assert_eq!(
                decompress(c, &bomb, MIB),
                Err(InflateError::TooLarge { limit: MIB }),
                "{c}"
            );
        }
        assert_eq!(
            decompress(Compression::None, &zeros, MIB),
            Err(InflateError::TooLarge { limit: MIB })
        );
    }

    #[test]
    fn bombs_that_hide_their_size_are_refused() {
        let zeros = vec![0u8; 8 * MIB];
        // zstd streamed without a content size in the header.
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        enc.include_contentsize(false).unwrap();
        io::Write::write_all(&mut enc, &zeros).unwrap();
        let bomb = enc.finish().unwrap();
        assert_eq!(
            zstd::zstd_safe::get_frame_content_size(&bomb).unwrap(),
            None
        );
        assert_eq!(
            decompress(Compression::Zstd, &bomb, MIB),
            Err(InflateError::TooLarge { limit: MIB })
        );
        // lz4 whose prefix lies: claims 1 KiB, holds 8 MiB -> the decoder stops at 1 KiB.
        let mut lying = compress(Compression::Lz4, &zeros);
        lying[..4].copy_from_slice(&1024u32.to_le_bytes());
        assert!(matches!(
            decompress(Compression::Lz4, &lying, MIB),
            Err(InflateError::Corrupt(_))
        ));
        // lz4 claiming the whole limit from a tiny block: refused before allocating.
        let mut tiny = MIB.to_le_bytes()[..4].to_vec();
        tiny.extend_from_slice(&[0x10, b'a']);
        assert!(matches!(
            decompress(Compression::Lz4, &tiny, MIB),
            Err(InflateError::Corrupt(e)) if e.contains("claims")
        ));
    }

    /// A reader that counts what it hands out.
    struct Counting<R> {
        inner: R,
        read: usize,
    }

    impl<R: Read> Read for Counting<R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.read += n;
            Ok(n)
        }
    }

    #[test]
    fn bounded_read_stops_right_after_the_limit() {
        let mut endless = Counting {
            inner: io::repeat(0),
            read: 0,
        };
        let limit = 100_000;
        assert_eq!(
            read_bounded(&mut endless, limit, 10),
            Err(InflateError::TooLarge { limit })
        );
        assert!(endless.read > limit && endless.read <= limit + READ_CHUNK);
        // Output capacity never passes the limit.
        let out = read_bounded(io::repeat(1).take(limit as u64), limit, 10).unwrap();
        assert_eq!(out.len(), limit);
        assert!(out.capacity() <= limit, "{}", out.capacity());
    }

    #[test]
    fn zstd_window_is_capped() {
        assert_eq!(zstd_window_log(1), 23);
        assert_eq!(zstd_window_log(8 * MIB), 23);
        assert_eq!(zstd_window_log(8 * MIB + 1), 24);
        assert_eq!(zstd_window_log(usize::MAX), 27);
    }

    #[test]
    fn garbage_is_corrupt() {
        for c in [Compression::Lz4, Compression::Zstd, Compression::Gzip] {
            let mut garbage = b"this is not compressed at all, not even a little bit".to_vec();
            if c == Compression::Lz4 {
                // A size prefix within the limit (a larger claim is TooLarge, unread).
                garbage.splice(..4, 100u32.to_le_bytes());
            }
            assert!(
                matches!(decompress(c, &garbage, MIB), Err(InflateError::Corrupt(_))),
                "{c}"
            );
            // A valid message, cut short or with a flipped byte.
            let packed = compress(c, &sample());
            let cut = &packed[..packed.len() / 2];
            assert!(
                matches!(decompress(c, cut, MIB), Err(InflateError::Corrupt(_))),
                "{c} cut"
            );
        }
        let mut flipped = compress(Compression::Gzip, &sample());
        let last = flipped.len() - 6;
        flipped[last] ^= 0xff; // inside the CRC
        assert!(matches!(
            decompress(Compression::Gzip, &flipped, MIB),
            Err(InflateError::Corrupt(_))
        ));
        assert!(matches!(
            decompress(Compression::Lz4, b"\x01\x00", MIB),
            Err(InflateError::Corrupt(_))
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any bytes: a result or an error, never a panic, never more than the limit.
        #[test]
        fn random_input_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            for c in Compression::ALL {
                if let Ok(out) = decompress(c, &bytes, 4096) {
                    prop_assert!(out.len() <= 4096);
                }
            }
        }

        #[test]
        fn round_trip_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            for c in Compression::ALL {
                let back = decompress(c, &compress(c, &bytes), bytes.len());
                prop_assert_eq!(back, Ok(bytes.clone()));
            }
        }
    }
}
