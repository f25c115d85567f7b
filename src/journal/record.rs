//! One journal record: what it says ([`Record`]), how it is framed on disk ([`encode`]), and how
//! a frame is read back ([`read_frame`], [`decode`]). Pure: no I/O, so the scanner and the tests
//! share it.
//!
//! A frame is `[u32 LE payload length][u32 LE CRC32 of payload][payload]`. A payload is a tag
//! byte, then the record's fields: integers as LEB128 varints, strings and byte strings as a
//! varint length then the bytes, as-is (event JSON is never re-escaped or re-serialized).

use std::fmt;

use bytes::Bytes;

/// Bytes before a frame's payload: length and CRC.
pub(crate) const FRAME_HEADER: usize = 8;

const TAG_OPEN: u8 = 1;
const TAG_EVENTS: u8 = 2;
const TAG_END: u8 = 3;
const TAG_FORGET: u8 = 4;

/// One fact about a stream, as the hub appends it. Borrowed, so appending copies nothing but
/// into the one buffer that goes to write(2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Record<'a> {
    /// A stream began. Recovery needs what it takes to serve the stream again.
    Open {
        /// The stream id.
        stream: &'a str,
        /// When it began (ms since the Unix epoch).
        created_ms: u64,
        /// The dialect it was asked in (`"openai"` | `"anthropic"`).
        door: &'a str,
        /// The client's raw request body as received (re-parsed on recovery).
        body: &'a [u8],
        /// Non-secret pass-through headers.
        forward: &'a [(String, String)],
        /// The route that answered first (`provider/model`), for display after a restart;
        /// the continuation plans its routes from the model in `body`. Empty when unknown.
        route: &'a str,
    },
    /// Consecutive events of a stream, starting at `first_seq`; each is one envelope's JSON
    /// bytes. Several per record, so a burst of deltas is one write.
    Events {
        /// The stream id.
        stream: &'a str,
        /// The `seq` of `events[0]`.
        first_seq: u64,
        /// The events, in `seq` order.
        events: &'a [Bytes],
    },
    /// The stream finished (whatever its outcome: the last event says how).
    End {
        /// The stream id.
        stream: &'a str,
    },
    /// The stream is no longer retained: recovery must not bring it back, and the segments
    /// holding it may be deleted.
    Forget {
        /// The stream id.
        stream: &'a str,
    },
}

impl<'a> Record<'a> {
    /// The stream the record is about (for bookkeeping and error messages).
    pub fn stream(&self) -> &'a str {
        match *self {
            Record::Open { stream, .. }
            | Record::Events { stream, .. }
            | Record::End { stream }
            | Record::Forget { stream } => stream,
        }
    }
}

/// A record as read back from a segment, borrowing the segment's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Entry<'a> {
    Open {
        stream: &'a str,
        created_ms: u64,
        door: &'a str,
        body: &'a [u8],
        forward: Vec<(&'a str, &'a str)>,
        route: &'a str,
    },
    Events {
        stream: &'a str,
        first_seq: u64,
        events: Vec<&'a [u8]>,
    },
    End {
        stream: &'a str,
    },
    Forget {
        stream: &'a str,
    },
}

impl<'a> Entry<'a> {
    /// The stream the entry is about.
    pub(crate) fn stream(&self) -> &'a str {
        match *self {
            Entry::Open { stream, .. }
            | Entry::Events { stream, .. }
            | Entry::End { stream }
            | Entry::Forget { stream } => stream,
        }
    }
}

/// The whole frame of `record` (header and payload), ready for one write(2). `Err` carries the
/// payload size when it exceeds the 32-bit length field.
pub(crate) fn encode(record: &Record<'_>) -> Result<Vec<u8>, usize> {
    let size = payload_len(record);
    let Ok(len) = u32::try_from(size) else {
        return Err(size);
    };
    let mut buf = Vec::with_capacity(FRAME_HEADER + size);
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    match *record {
        Record::Open {
            stream,
            created_ms,
            door,
            body,
            forward,
            route,
        } => {
            buf.push(TAG_OPEN);
            put_bytes(&mut buf, stream.as_bytes());
            put_varint(&mut buf, created_ms);
            put_bytes(&mut buf, door.as_bytes());
            put_bytes(&mut buf, body);
            put_varint(&mut buf, forward.len() as u64);
            for (name, value) in forward {
                put_bytes(&mut buf, name.as_bytes());
                put_bytes(&mut buf, value.as_bytes());
            }
            put_bytes(&mut buf, route.as_bytes());
        }
        Record::Events {
            stream,
            first_seq,
            events,
        } => {
            buf.push(TAG_EVENTS);
            put_bytes(&mut buf, stream.as_bytes());
            put_varint(&mut buf, first_seq);
            put_varint(&mut buf, events.len() as u64);
            for event in events {
                put_bytes(&mut buf, event);
            }
        }
        Record::End { stream } => {
            buf.push(TAG_END);
            put_bytes(&mut buf, stream.as_bytes());
        }
        Record::Forget { stream } => {
            buf.push(TAG_FORGET);
            put_bytes(&mut buf, stream.as_bytes());
        }
    }
    debug_assert_eq!(buf.len(), FRAME_HEADER + size);
    let crc = crc32fast::hash(&buf[FRAME_HEADER..]);
    buf[4..FRAME_HEADER].copy_from_slice(&crc.to_le_bytes());
    Ok(buf)
}

/// The payload size of `record`, computed first so the frame is allocated once.
fn payload_len(record: &Record<'_>) -> usize {
    let bytes = |b: &[u8]| varint_len(b.len() as u64) + b.len();
    1 + match *record {
        Record::Open {
            stream,
            created_ms,
            door,
            body,
            forward,
            route,
        } => {
            bytes(stream.as_bytes())
                + varint_len(created_ms)
                + bytes(door.as_bytes())
                + bytes(body)
                + varint_len(forward.len() as u64)
                + forward
                    .iter()
                    .map(|(n, v)| bytes(n.as_bytes()) + bytes(v.as_bytes()))
                    .sum::<usize>()
                + bytes(route.as_bytes())
        }
        Record::Events {
            stream,
            first_seq,
            events,
        } => {
            bytes(stream.as_bytes())
                + varint_len(first_seq)
                + varint_len(events.len() as u64)
                + events.iter().map(|e| bytes(e)).sum::<usize>()
        }
        Record::End { stream } | Record::Forget { stream } => bytes(stream.as_bytes()),
    }
}

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

fn varint_len(v: u64) -> usize {
    // 7 bits a byte; 0 still takes one byte.
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

fn put_bytes(buf: &mut Vec<u8>, b: &[u8]) {
    put_varint(buf, b.len() as u64);
    buf.extend_from_slice(b);
}

/// Why a frame could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BadFrame {
    /// Fewer bytes than the header, or than the length it declares: the file ends mid-frame.
    Short,
    /// The declared length fits, but the payload's CRC does not match.
    Crc {
        /// Where the following frame would start, if the length field is right.
        next: usize,
    },
    /// A zero length: no record is empty (what a zero-filled block reads as).
    Empty {
        /// Where the following frame would start.
        next: usize,
    },
}

impl BadFrame {
    /// Where the following frame would start, when the length field is believable.
    pub(crate) fn next(self) -> Option<usize> {
        match self {
            BadFrame::Short => None,
            BadFrame::Crc { next } | BadFrame::Empty { next } => Some(next),
        }
    }
}

impl fmt::Display for BadFrame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BadFrame::Short => "record cut short",
            BadFrame::Crc { .. } => "record CRC mismatch",
            BadFrame::Empty { .. } => "empty record",
        })
    }
}

/// The frame at `at` in `buf`: its checked payload and where the next frame starts. `at` must
/// be before the end of `buf`.
pub(crate) fn read_frame(buf: &[u8], at: usize) -> Result<(&[u8], usize), BadFrame> {
    let rest = buf.get(at..).unwrap_or_default();
    let (Some(len), Some(crc)) = (le_u32(rest, 0), le_u32(rest, 4)) else {
        return Err(BadFrame::Short);
    };
    let end = FRAME_HEADER.saturating_add(len as usize);
    let Some(payload) = rest.get(FRAME_HEADER..end) else {
        return Err(BadFrame::Short);
    };
    let next = at + end;
    if len == 0 {
        return Err(BadFrame::Empty { next });
    }
    if crc32fast::hash(payload) != crc {
        return Err(BadFrame::Crc { next });
    }
    Ok((payload, next))
}

fn le_u32(buf: &[u8], at: usize) -> Option<u32> {
    let bytes: [u8; 4] = buf.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_le_bytes(bytes))
}

/// A payload whose CRC matched but whose fields do not parse: a bug or a foreign writer, never
/// a torn write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BadPayload(pub(crate) &'static str);

impl fmt::Display for BadPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed record: {}", self.0)
    }
}

/// The record in a checked payload.
pub(crate) fn decode(payload: &[u8]) -> Result<Entry<'_>, BadPayload> {
    let mut r = Reader { buf: payload };
    let entry = match r.byte()? {
        TAG_OPEN => {
            let stream = r.str()?;
            let created_ms = r.varint()?;
            let door = r.str()?;
            let body = r.bytes()?;
            let n = r.varint()?;
            // Every header takes at least two bytes: a forged count cannot make us allocate.
            let mut forward = Vec::with_capacity((n as usize).min(r.buf.len() / 2));
            for _ in 0..n {
                forward.push((r.str()?, r.str()?));
            }
            // Journals written before the route was recorded end here.
            let route = if r.buf.is_empty() { "" } else { r.str()? };
            Entry::Open {
                stream,
                created_ms,
                door,
                body,
                forward,
                route,
            }
        }
        TAG_EVENTS => {
            let stream = r.str()?;
            let first_seq = r.varint()?;
            let n = r.varint()?;
            let mut events = Vec::with_capacity((n as usize).min(r.buf.len()));
            for _ in 0..n {
                events.push(r.bytes()?);
            }
            Entry::Events {
                stream,
                first_seq,
                events,
            }
        }
        TAG_END => Entry::End { stream: r.str()? },
        TAG_FORGET => Entry::Forget { stream: r.str()? },
        _ => return Err(BadPayload("unknown record tag")),
    };
    if !r.buf.is_empty() {
        return Err(BadPayload("trailing bytes"));
    }
    Ok(entry)
}

/// A cursor over a payload; every read checks what is left.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, BadPayload> {
        let (&b, rest) = self
            .buf
            .split_first()
            .ok_or(BadPayload("payload cut short"))?;
        self.buf = rest;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, BadPayload> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            let bits = u64::from(b & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(BadPayload("varint overflows u64"));
            }
            v |= bits << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(BadPayload("varint overflows u64"))
    }

    fn bytes(&mut self) -> Result<&'a [u8], BadPayload> {
        let len = self.varint()?;
        if len > self.buf.len() as u64 {
            return Err(BadPayload("length past the end of the record"));
        }
        let (head, rest) = self.buf.split_at(len as usize);
        self.buf = rest;
        Ok(head)
    }

    fn str(&mut self) -> Result<&'a str, BadPayload> {
        std::str::from_utf8(self.bytes()?).map_err(|_| BadPayload("string is not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(record: &Record<'_>) -> Entry<'static> {
        let frame = encode(record).unwrap();
        let leaked: &'static [u8] = Box::leak(frame.into_boxed_slice());
        let (payload, next) = read_frame(leaked, 0).unwrap();
        assert_eq!(next, leaked.len());
        decode(payload).unwrap()
    }

    #[test]
    fn an_open_written_before_routes_were_recorded_reads_with_none() {
        let forward = Vec::new();
        let frame = encode(&Record::Open {
            stream: "s",
            created_ms: 1,
            door: "openai",
            body: b"{}",
            forward: &forward,
            route: "",
        })
        .unwrap();
        // The older layout: the same fields without the route's (empty) length byte.
        let older = &frame[FRAME_HEADER..frame.len() - 1];
        assert!(matches!(decode(older), Ok(Entry::Open { route: "", .. })));
    }

    #[test]
    fn every_kind_round_trips() {
        let forward = vec![("x-trace".to_string(), "abc".to_string())];
        let open = Record::Open {
            stream: "s1",
            created_ms: 1_700_000_000_123,
            door: "openai",
            body: br#"{"model":"m","q":"\u00e9\n"}"#,
            forward: &forward,
            route: "p/m",
        };
        assert_eq!(
            round_trip(&open),
            Entry::Open {
                stream: "s1",
                created_ms: 1_700_000_000_123,
                door: "openai",
                body: br#"{"model":"m","q":"\u00e9\n"}"#,
                forward: vec![("x-trace", "abc")],
                route: "p/m",
            }
        );
        let events = [Bytes::from_static(b"{\"seq\":7}"), Bytes::new()];
        let rec = Record::Events {
            stream: "s1",
            first_seq: 7,
            events: &events,
        };
        assert_eq!(
            round_trip(&rec),
            Entry::Events {
                stream: "s1",
                first_seq: 7,
                events: vec![b"{\"seq\":7}".as_slice(), b"".as_slice()],
            }
        );
        assert_eq!(
            round_trip(&Record::End { stream: "s1" }),
            Entry::End { stream: "s1" }
        );
        assert_eq!(
            round_trip(&Record::Forget { stream: "é" }),
            Entry::Forget { stream: "é" }
        );
    }

    #[test]
    fn event_bytes_are_written_as_is() {
        let event = Bytes::from_static(b"{\"text\":\"a\\\"b\\n\"}");
        let frame = encode(&Record::Events {
            stream: "s",
            first_seq: 0,
            events: std::slice::from_ref(&event),
        })
        .unwrap();
        assert!(
            frame.ends_with(&event),
            "event bytes must end the frame verbatim"
        );
    }

    #[test]
    fn varints_round_trip_at_their_edges() {
        for v in [
            0,
            1,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            assert_eq!(buf.len(), varint_len(v), "length of {v}");
            assert_eq!(Reader { buf: &buf }.varint(), Ok(v));
        }
        let overflow = [0xff; 10];
        assert!(Reader { buf: &overflow }.varint().is_err());
    }

    #[test]
    fn damaged_frames_are_told_apart() {
        let mut frame = encode(&Record::End { stream: "s" }).unwrap();
        assert_eq!(read_frame(&frame[..5], 0), Err(BadFrame::Short));
        assert_eq!(
            read_frame(&frame[..frame.len() - 1], 0),
            Err(BadFrame::Short)
        );
        let len = frame.len();
        frame[len - 1] ^= 0x01;
        assert_eq!(read_frame(&frame, 0), Err(BadFrame::Crc { next: len }));
        // Zeros read as a valid-CRC empty payload (CRC32 of nothing is 0): refused.
        assert_eq!(read_frame(&[0; 8], 0), Err(BadFrame::Empty { next: 8 }));
    }

    #[test]
    fn malformed_payloads_are_refused() {
        assert!(decode(&[9]).is_err(), "unknown tag");
        assert!(decode(&[TAG_END, 5, b'a']).is_err(), "length past the end");
        assert!(decode(&[TAG_END, 1, b'a', 0]).is_err(), "trailing bytes");
        assert!(decode(&[TAG_END, 1, 0xff]).is_err(), "not UTF-8");
        assert!(
            decode(&[TAG_EVENTS, 1, b's', 0, 200, 1]).is_err(),
            "count too high"
        );
    }
}
