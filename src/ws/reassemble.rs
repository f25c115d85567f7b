//! Shard reassembly on the reading side: [`Reassembler`] glues the `data` of a sharded event's
//! `shard` frames back into the `event` frame's JSON text, enforcing order and limits.

use std::collections::HashMap;

use super::frame::Shard;

/// Bounds of the [`Reassembler`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReassemblyLimits {
    /// Largest event frame reassembled, in bytes of JSON text.
    pub max_event_bytes: usize,
    /// Most events partly received at once (one per stream at most).
    pub max_pending: usize,
}

impl Default for ReassemblyLimits {
    /// 16 MiB per event, 64 events pending.
    fn default() -> Self {
        ReassemblyLimits {
            max_event_bytes: 16 << 20,
            max_pending: 64,
        }
    }
}

/// Why a shard was refused. The stream's partial event is dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    /// `count` is 0 or `index` is not below it.
    #[error("stream {stream:?}: shard index {index} of count {count}")]
    BadIndex {
        /// Stream.
        stream: String,
        /// Index received.
        index: u32,
        /// Count received.
        count: u32,
    },
    /// A shard other than the next one of the event in progress (or a first shard missing).
    #[error(
        "stream {stream:?}: got shard {index}/{count} of seq {seq}, expected {}",
        expected.map_or("a shard 0".to_owned(), |(s, i, c)| format!("shard {i}/{c} of seq {s}"))
    )]
    OutOfOrder {
        /// Stream.
        stream: String,
        /// Seq received.
        seq: u64,
        /// Index received.
        index: u32,
        /// Count received.
        count: u32,
        /// Seq, index and count of the shard that should have come, if an event is in progress.
        expected: Option<(u64, u32, u32)>,
    },
    /// The event grows past the limit.
    #[error("stream {stream:?}: event {seq} is larger than {limit} bytes")]
    TooLarge {
        /// Stream.
        stream: String,
        /// Seq of the event.
        seq: u64,
        /// The limit.
        limit: usize,
    },
    /// Too many streams have an event in progress.
    #[error("more than {limit} sharded events in progress")]
    TooManyPending {
        /// The limit.
        limit: usize,
    },
}

/// Puts sharded events back together. Shards of one event come in order; shards of events
/// of different streams may interleave.
#[derive(Debug, Default)]
pub struct Reassembler {
    limits: ReassemblyLimits,
    /// The event in progress of each stream that has one.
    partial: HashMap<String, Partial>,
}

#[derive(Debug)]
struct Partial {
    seq: u64,
    count: u32,
    /// Index of the next shard expected.
    next: u32,
    /// The pieces so far.
    data: String,
}

impl Reassembler {
    /// A reassembler within `limits`.
    pub fn new(limits: ReassemblyLimits) -> Self {
        Reassembler {
            limits,
            partial: HashMap::new(),
        }
    }

    /// Number of events in progress.
    pub fn pending(&self) -> usize {
        self.partial.len()
    }

    /// Takes the next shard; returns the whole event frame's JSON text with its last shard.
    pub fn push(&mut self, shard: Shard) -> Result<Option<String>, ShardError> {
        let Shard {
            stream,
            seq,
            index,
            count,
            data,
        } = shard;
        let limit = self.limits.max_event_bytes;
        if count == 0 || index >= count {
            self.partial.remove(&stream);
            return Err(ShardError::BadIndex {
                stream,
                index,
                count,
            });
        }
        let Some(p) = self.partial.get_mut(&stream) else {
            if index != 0 {
                return Err(ShardError::OutOfOrder {
                    stream,
                    seq,
                    index,
                    count,
                    expected: None,
                });
            }
            if data.len() > limit {
                return Err(ShardError::TooLarge { stream, seq, limit });
            }
            if count == 1 {
                return Ok(Some(data));
            }
            if self.partial.len() >= self.limits.max_pending {
                return Err(ShardError::TooManyPending {
                    limit: self.limits.max_pending,
                });
            }
            self.partial.insert(
                stream,
                Partial {
                    seq,
                    count,
                    next: 1,
                    data,
                },
            );
            return Ok(None);
        };
        if (seq, index, count) != (p.seq, p.next, p.count) {
            let expected = Some((p.seq, p.next, p.count));
            self.partial.remove(&stream);
            return Err(ShardError::OutOfOrder {
                stream,
                seq,
                index,
                count,
                expected,
            });
        }
        if p.data.len() + data.len() > limit {
            self.partial.remove(&stream);
            return Err(ShardError::TooLarge { stream, seq, limit });
        }
        p.data.push_str(&data);
        p.next += 1;
        if p.next < p.count {
            return Ok(None);
        }
        Ok(self.partial.remove(&stream).map(|p| p.data))
    }
}

#[cfg(test)]
mod tests {
    use super::super::shard::shard;
    use super::super::shard::tests::{big_frame, parse};
    use super::*;

    #[test]
    fn interleaved_streams_reassemble() {
        let a = big_frame("a", 1, 5000);
        let b = big_frame("b", 9, 3000);
        let sa = shard("a", 1, &a, 512);
        let sb = shard("b", 9, &b, 512);
        let mut r = Reassembler::default();
        let mut done = Vec::new();
        let (mut ia, mut ib) = (sa.iter(), sb.iter());
        loop {
            let next: Vec<&String> = ia.next().into_iter().chain(ib.next()).collect();
            if next.is_empty() {
                break;
            }
            for f in next {
                if let Some(whole) = r.push(parse(f)).unwrap() {
                    done.push(whole);
                }
            }
        }
        assert_eq!(done, vec![b, a]);
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn missing_and_out_of_order_shards_are_refused() {
        let frame = big_frame("s", 3, 2000);
        let shards: Vec<Shard> = shard("s", 3, &frame, 400)
            .iter()
            .map(|f| parse(f))
            .collect();
        assert!(shards.len() >= 4);

        // First shard missing.
        let mut r = Reassembler::default();
        let e = r.push(shards[1].clone()).unwrap_err();
        assert!(
            matches!(
                e,
                ShardError::OutOfOrder {
                    expected: None,
                    index: 1,
                    ..
                }
            ),
            "{e}"
        );

        // A shard skipped: the event is dropped, and what follows does not continue it.
        let mut r = Reassembler::default();
        r.push(shards[0].clone()).unwrap();
        let e = r.push(shards[2].clone()).unwrap_err();
        assert!(
            matches!(
                e,
                ShardError::OutOfOrder {
                    expected: Some((3, 1, _)),
                    index: 2,
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(r.pending(), 0);
        assert!(r.push(shards[3].clone()).is_err());

        // Swapped, repeated, or a new event before the last one ended.
        for (first, second) in [(1, 1), (0, 0)] {
            let mut r = Reassembler::default();
            r.push(shards[0].clone()).unwrap();
            if first == 1 {
                r.push(shards[1].clone()).unwrap();
            }
            assert!(r.push(shards[second].clone()).is_err(), "{first} {second}");
        }

        // Seq or count changing mid-event.
        let mut r = Reassembler::default();
        r.push(shards[0].clone()).unwrap();
        let mut other_seq = shards[1].clone();
        other_seq.seq = 4;
        assert!(r.push(other_seq).is_err());
        let mut r = Reassembler::default();
        r.push(shards[0].clone()).unwrap();
        let mut other_count = shards[1].clone();
        other_count.count += 1;
        assert!(r.push(other_count).is_err());

        // Impossible indexes.
        let mut bad = shards[0].clone();
        bad.count = 0;
        assert!(matches!(
            Reassembler::default().push(bad),
            Err(ShardError::BadIndex { .. })
        ));
        let mut bad = shards[0].clone();
        bad.index = bad.count;
        assert!(matches!(
            Reassembler::default().push(bad),
            Err(ShardError::BadIndex { .. })
        ));
    }

    #[test]
    fn limits_are_enforced() {
        let frame = big_frame("s", 0, 4000);
        let shards: Vec<Shard> = shard("s", 0, &frame, 512)
            .iter()
            .map(|f| parse(f))
            .collect();
        let mut r = Reassembler::new(ReassemblyLimits {
            max_event_bytes: 2000,
            max_pending: 8,
        });
        let mut result = Ok(None);
        for s in shards {
            result = r.push(s);
            if result.is_err() {
                break;
            }
        }
        assert_eq!(
            result,
            Err(ShardError::TooLarge {
                stream: "s".into(),
                seq: 0,
                limit: 2000
            })
        );
        assert_eq!(r.pending(), 0);

        let mut r = Reassembler::new(ReassemblyLimits {
            max_event_bytes: 1 << 20,
            max_pending: 2,
        });
        for stream in ["a", "b", "c"] {
            let first = Shard {
                stream: stream.into(),
                seq: 0,
                index: 0,
                count: 2,
                data: "{".into(),
            };
            let result = r.push(first);
            if stream == "c" {
                assert_eq!(result, Err(ShardError::TooManyPending { limit: 2 }));
            } else {
                assert_eq!(result, Ok(None));
            }
        }
        assert_eq!(r.pending(), 2);
    }
}
