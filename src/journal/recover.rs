//! Replaying records into streams: what [`Journal::open`](super::Journal::open) hands back.
//! Pure: it sees records in journal order and keeps every stream's events gap-free from seq 0,
//! whatever duplicates, gaps or strays the segments hold.

use std::collections::HashMap;

use bytes::Bytes;

use super::record::Entry;

/// What recovery found: the retained streams and how much damage it met.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Every stream opened and not forgotten, in the order they were opened.
    pub streams: Vec<RecoveredStream>,
    /// Bytes cut off the end of the last segment: a write a crash interrupted (never
    /// acknowledged durable, so nothing promised is lost).
    pub torn_bytes: u64,
    /// Segments whose records stop early at a damaged record (the rest of each is unreadable
    /// and was skipped; the file is kept for inspection). Worth an alert.
    pub corrupt_segments: usize,
}

/// One stream as the journal last knew it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveredStream {
    /// The stream id.
    pub stream: String,
    /// When it began (ms since the Unix epoch).
    pub created_ms: u64,
    /// The dialect it was asked in (`"openai"` | `"anthropic"`).
    pub door: String,
    /// The client's raw request body, to be re-parsed.
    pub body: Vec<u8>,
    /// Non-secret pass-through headers.
    pub forward: Vec<(String, String)>,
    /// The route that answered first (`provider/model`); empty when the journal predates it.
    pub route: String,
    /// Its events, `events[i]` having seq `i`: gap-free from 0.
    pub events: Vec<Bytes>,
    /// An `End` was journaled and every event before it is here: the stream is complete.
    /// `false` for a stream the crash interrupted, and for one cut short at a gap (its events
    /// stop before the missing ones, so it must be treated as interrupted too).
    pub ended: bool,
}

/// A stream being rebuilt.
#[derive(Debug)]
struct Building {
    stream: RecoveredStream,
    /// A gap was met: events after it cannot be placed, so none are taken any more.
    stopped: bool,
}

/// Records in, streams out.
#[derive(Debug, Default)]
pub(crate) struct Replay {
    /// Streams in the order they were opened; `None` once forgotten.
    order: Vec<Option<Building>>,
    /// Stream id -> its place in `order`, `None` for a forgotten stream (whose later records
    /// are ignored: a Forget is final, until an `Open` starts a new stream of that id).
    index: HashMap<String, Option<usize>>,
    /// Records of streams never opened (their Open was in a lost part of a segment).
    orphans: u64,
}

impl Replay {
    /// Applies one record, read at `offset` of segment `segment` (for the warnings).
    pub(crate) fn apply(&mut self, entry: &Entry<'_>, segment: u64, offset: u64) {
        let name = entry.stream();
        if let Entry::Open {
            stream,
            created_ms,
            door,
            body,
            forward,
            route,
        } = entry
        {
            // An id forgotten before is free again (a client may name its streams): this Open
            // begins a new stream, and the forgotten one's records were dropped with it.
            if let Some(Some(_)) = self.index.get(*stream) {
                tracing::warn!(
                    stream,
                    segment,
                    offset,
                    "journal: stream opened twice; keeping the first"
                );
                return;
            }
            self.index
                .insert(stream.to_string(), Some(self.order.len()));
            self.order.push(Some(Building {
                stream: RecoveredStream {
                    stream: stream.to_string(),
                    created_ms: *created_ms,
                    door: door.to_string(),
                    body: body.to_vec(),
                    forward: forward
                        .iter()
                        .map(|(n, v)| (n.to_string(), v.to_string()))
                        .collect(),
                    route: route.to_string(),
                    events: Vec::new(),
                    ended: false,
                },
                stopped: false,
            }));
            return;
        }
        let slot = match self.index.get(name) {
            Some(Some(i)) => *i,
            Some(None) => return, // forgotten
            None => {
                if let Entry::Forget { .. } = entry {
                    // Forgotten before it was ever opened here: its Open was lost or deleted.
                    self.index.insert(name.to_string(), None);
                } else {
                    self.orphans += 1;
                }
                return;
            }
        };
        if let Entry::Forget { .. } = entry {
            self.order[slot] = None;
            self.index.insert(name.to_string(), None);
            return;
        }
        let Some(building) = self.order[slot].as_mut() else {
            return;
        };
        match entry {
            Entry::Events {
                first_seq, events, ..
            } => building.events(*first_seq, events, segment, offset),
            Entry::End { .. } => building.stream.ended = true,
            Entry::Open { .. } | Entry::Forget { .. } => {}
        }
    }

    /// The streams still retained, in opening order.
    pub(crate) fn finish(self) -> Vec<RecoveredStream> {
        if self.orphans > 0 {
            tracing::warn!(
                records = self.orphans,
                "journal: records of streams whose Open was not found were ignored"
            );
        }
        self.order
            .into_iter()
            .flatten()
            .map(|b| RecoveredStream {
                ended: b.stream.ended && !b.stopped,
                ..b.stream
            })
            .collect()
    }
}

impl Building {
    /// Adds the events that continue the stream: those it already has are skipped, a gap stops
    /// it.
    fn events(&mut self, first_seq: u64, events: &[&[u8]], segment: u64, offset: u64) {
        let stream = &mut self.stream;
        if self.stopped || events.is_empty() {
            return;
        }
        if stream.ended {
            tracing::warn!(
                stream = stream.stream,
                segment,
                offset,
                "journal: events after the stream's End ignored"
            );
            return;
        }
        let next = stream.events.len() as u64;
        if first_seq > next {
            tracing::warn!(
                stream = stream.stream,
                expected_seq = next,
                first_seq,
                segment,
                offset,
                "journal: gap in a stream's events; recovering it up to the gap"
            );
            self.stopped = true;
            return;
        }
        let skip = usize::try_from(next - first_seq).unwrap_or(usize::MAX);
        stream
            .events
            .extend(events.iter().skip(skip).map(|e| Bytes::copy_from_slice(e)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(stream: &str) -> Entry<'_> {
        Entry::Open {
            stream,
            created_ms: 5,
            door: "anthropic",
            body: b"{}",
            forward: vec![("x-a", "1")],
            route: "p/m",
        }
    }

    fn events<'a>(stream: &'a str, first_seq: u64, seqs: &[&'a [u8]]) -> Entry<'a> {
        Entry::Events {
            stream,
            first_seq,
            events: seqs.to_vec(),
        }
    }

    fn texts(s: &RecoveredStream) -> Vec<&[u8]> {
        s.events.iter().map(|e| e.as_ref()).collect()
    }

    #[test]
    fn overlapping_events_are_deduplicated() {
        let mut r = Replay::default();
        r.apply(&open("s"), 1, 0);
        r.apply(&events("s", 0, &[b"0", b"1"]), 1, 0);
        r.apply(&events("s", 1, &[b"1", b"2", b"3"]), 1, 0);
        r.apply(&events("s", 0, &[b"0"]), 1, 0);
        r.apply(&Entry::End { stream: "s" }, 1, 0);
        let out = r.finish();
        assert_eq!(texts(&out[0]), vec![b"0".as_slice(), b"1", b"2", b"3"]);
        assert!(out[0].ended);
        assert_eq!(out[0].forward, vec![("x-a".to_string(), "1".to_string())]);
    }

    #[test]
    fn a_gap_stops_the_stream_and_leaves_it_unended() {
        let mut r = Replay::default();
        r.apply(&open("s"), 1, 0);
        r.apply(&events("s", 0, &[b"0"]), 1, 0);
        r.apply(&events("s", 2, &[b"2"]), 1, 0);
        r.apply(&events("s", 1, &[b"1"]), 1, 0); // too late: the stream stopped at the gap
        r.apply(&Entry::End { stream: "s" }, 1, 0);
        let out = r.finish();
        assert_eq!(texts(&out[0]), vec![b"0".as_slice()]);
        assert!(!out[0].ended, "a stream cut at a gap is not complete");
    }

    #[test]
    fn forget_is_final_and_strays_are_ignored() {
        let mut r = Replay::default();
        r.apply(&open("a"), 1, 0);
        r.apply(&open("b"), 1, 0);
        r.apply(&events("ghost", 0, &[b"0"]), 1, 0);
        r.apply(&Entry::Forget { stream: "a" }, 1, 0);
        r.apply(&events("a", 0, &[b"0"]), 2, 0); // after its Forget: ignored
        r.apply(&Entry::End { stream: "a" }, 2, 0);
        r.apply(&open("b"), 2, 0); // a second Open does not reset b
        r.apply(&events("b", 0, &[b"0"]), 2, 0);
        let out = r.finish();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].stream, "b");
        assert_eq!(texts(&out[0]), vec![b"0".as_slice()]);
        assert!(!out[0].ended);
    }

    #[test]
    fn an_id_opened_again_after_its_forget_is_a_new_stream() {
        let mut r = Replay::default();
        r.apply(&open("a"), 1, 0);
        r.apply(&events("a", 0, &[b"old0", b"old1"]), 1, 0);
        r.apply(&Entry::End { stream: "a" }, 1, 0);
        r.apply(&open("b"), 1, 0);
        r.apply(&Entry::Forget { stream: "a" }, 2, 0);
        r.apply(&open("a"), 2, 0);
        r.apply(&events("a", 0, &[b"new0"]), 2, 0);
        let out = r.finish();
        assert_eq!(
            out.iter().map(|s| s.stream.as_str()).collect::<Vec<_>>(),
            vec!["b", "a"],
            "in opening order: the new a was opened after b"
        );
        assert_eq!(texts(&out[1]), vec![b"new0".as_slice()]);
        assert!(!out[1].ended, "the old stream's End is not the new one's");
    }

    #[test]
    fn events_after_end_are_ignored() {
        let mut r = Replay::default();
        r.apply(&open("s"), 1, 0);
        r.apply(&events("s", 0, &[b"0"]), 1, 0);
        r.apply(&Entry::End { stream: "s" }, 1, 0);
        r.apply(&events("s", 1, &[b"1"]), 1, 0);
        let out = r.finish();
        assert_eq!(texts(&out[0]), vec![b"0".as_slice()]);
        assert!(out[0].ended);
    }
}
