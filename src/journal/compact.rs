//! Which segment may be deleted, and when. Pure bookkeeping (the journal does the unlinking).
//!
//! A closed segment is deleted once none of its records matters any more:
//! - a record of a stream (Open, Events, End) matters until the stream is forgotten;
//! - a `Forget` record matters while the forgotten stream still has records in another
//!   segment: deleting it first would bring the stream back on recovery.
//!
//! So forgetting a stream can free the segments holding it, and deleting those can in turn
//! free the segment holding its `Forget`. The current segment and corrupt ("pinned") segments
//! are never deleted. Segments are deleted in the order returned, which puts a stream's data
//! before the `Forget` that guarded it.
//!
//! Memory: one entry per stream with records on disk (its name, shared, and the numbers of the
//! few segments it touched) and, per segment, the names of the streams in it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

/// One segment's bookkeeping.
#[derive(Debug, Default)]
struct Segment {
    /// Bytes on disk (for the stats).
    bytes: u64,
    /// Streams with records here that are not forgotten: each keeps the segment.
    live: HashSet<Arc<str>>,
    /// Forgotten streams with records here: deleting the segment may free their `Forget`.
    dead: Vec<Arc<str>>,
    /// `Forget` records here still guarding records in other segments: each keeps the segment.
    guards: HashSet<Arc<str>>,
    /// Damaged: kept for inspection, never deleted.
    pinned: bool,
}

/// One stream with records on disk.
#[derive(Debug, Default)]
struct Stream {
    /// The segments holding its records (few: a stream lives seconds to minutes).
    segments: Vec<u64>,
    /// The segment holding its (first) `Forget`, once forgotten.
    forgotten_in: Option<u64>,
}

/// Segments and the streams in them.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    segments: BTreeMap<u64, Segment>,
    streams: HashMap<Arc<str>, Stream>,
    /// The segment being appended to.
    current: u64,
    /// Forgotten streams whose id was opened again (for their books' unique names).
    retired: u64,
}

impl Ledger {
    /// Segment `n` (higher than any before) becomes the current one. Returns the segments
    /// that closing the previous one frees.
    pub(crate) fn open_segment(&mut self, n: u64, bytes: u64) -> Vec<u64> {
        let previous = self.current;
        self.current = n;
        self.segments.insert(
            n,
            Segment {
                bytes,
                ..Segment::default()
            },
        );
        self.collect(vec![previous])
    }

    /// Segment `n` is damaged: it is kept.
    pub(crate) fn pin(&mut self, n: u64) {
        if let Some(s) = self.segments.get_mut(&n) {
            s.pinned = true;
        }
    }

    /// Segment `n` grew by `bytes`.
    pub(crate) fn grow(&mut self, n: u64, bytes: u64) {
        if let Some(s) = self.segments.get_mut(&n) {
            s.bytes += bytes;
        }
    }

    /// Segments on disk, and their bytes.
    pub(crate) fn usage(&self) -> (usize, u64) {
        (
            self.segments.len(),
            self.segments.values().map(|s| s.bytes).sum(),
        )
    }

    /// A record of `stream` other than `Forget` went into segment `n`.
    pub(crate) fn data(&mut self, n: u64, stream: &str) {
        let name = self.name(stream);
        let Some(info) = self.streams.get_mut(stream) else {
            return;
        };
        if info.segments.contains(&n) {
            return;
        }
        info.segments.push(n);
        let forgotten_in = info.forgotten_in;
        let Some(seg) = self.segments.get_mut(&n) else {
            return;
        };
        match forgotten_in {
            None => {
                seg.live.insert(name);
            }
            // Written after its Forget: dead on arrival, but its Forget must outlive it.
            Some(f) => {
                seg.dead.push(name.clone());
                if f != n
                    && let Some(guard) = self.segments.get_mut(&f)
                {
                    guard.guards.insert(name);
                }
            }
        }
    }

    /// An `Open` of `stream` went into segment `n`. An id whose stream was forgotten is free
    /// again: the forgotten stream's books are kept under a name no stream id can have (its
    /// records and its `Forget` still have to go in order), and the new stream starts clean,
    /// so its records are not mistaken for strays after the old `Forget`.
    pub(crate) fn open(&mut self, n: u64, stream: &str) {
        if self
            .streams
            .get(stream)
            .is_some_and(|s| s.forgotten_in.is_some())
            && let Some((old, info)) = self.streams.remove_entry(stream)
        {
            self.retired += 1;
            // Stream ids never hold a NUL: the retired name is unique.
            let retired: Arc<str> = Arc::from(format!("{old}\0{}", self.retired));
            for s in &info.segments {
                if let Some(seg) = self.segments.get_mut(s) {
                    for name in seg.dead.iter_mut().filter(|d| **d == old) {
                        *name = retired.clone();
                    }
                }
            }
            if let Some(seg) = info.forgotten_in.and_then(|f| self.segments.get_mut(&f))
                && seg.guards.remove(&old)
            {
                seg.guards.insert(retired.clone());
            }
            self.streams.insert(retired, info);
        }
        self.data(n, stream);
    }

    /// A `Forget` of `stream` went into segment `n`. Returns the segments this frees, in the
    /// order they must be deleted.
    pub(crate) fn forget(&mut self, n: u64, stream: &str) -> Vec<u64> {
        let Some((name, info)) = self.streams.get_key_value(stream) else {
            return Vec::new(); // nothing of it on disk: nothing to guard
        };
        if info.forgotten_in.is_some() {
            return Vec::new();
        }
        let name = name.clone();
        let held: Vec<u64> = info.segments.clone();
        if let Some(info) = self.streams.get_mut(stream) {
            info.forgotten_in = Some(n);
        }
        for s in &held {
            if let Some(seg) = self.segments.get_mut(s)
                && seg.live.remove(stream)
            {
                seg.dead.push(name.clone());
            }
        }
        if held.iter().any(|&s| s != n)
            && let Some(seg) = self.segments.get_mut(&n)
        {
            seg.guards.insert(name);
        }
        self.collect(held)
    }

    /// Every segment that can go now (after a rebuild from disk).
    pub(crate) fn sweep(&mut self) -> Vec<u64> {
        let all = self.segments.keys().copied().collect();
        self.collect(all)
    }

    /// Deletes (from the books) every candidate that can go, and whatever that frees in turn.
    fn collect(&mut self, mut candidates: Vec<u64>) -> Vec<u64> {
        let mut deleted = Vec::new();
        let mut i = 0;
        while i < candidates.len() {
            let n = candidates[i];
            i += 1;
            let free = self.segments.get(&n).is_some_and(|s| {
                n != self.current && !s.pinned && s.live.is_empty() && s.guards.is_empty()
            });
            if !free {
                continue;
            }
            let Some(seg) = self.segments.remove(&n) else {
                continue;
            };
            deleted.push(n);
            for name in seg.dead {
                let Some(info) = self.streams.get_mut(&name) else {
                    continue;
                };
                info.segments.retain(|&s| s != n);
                let Some(f) = info.forgotten_in else {
                    continue;
                };
                if info.segments.iter().all(|&s| s == f) {
                    // Nothing of it is left outside its Forget's segment: the Forget guards
                    // nothing any more.
                    if info.segments.is_empty() {
                        self.streams.remove(&name);
                    }
                    if let Some(guard) = self.segments.get_mut(&f)
                        && guard.guards.remove(&name)
                    {
                        candidates.push(f);
                    }
                }
            }
        }
        deleted
    }

    /// The shared name of `stream`, registering it on first sight.
    fn name(&mut self, stream: &str) -> Arc<str> {
        if let Some((name, _)) = self.streams.get_key_value(stream) {
            return name.clone();
        }
        let name: Arc<str> = Arc::from(stream);
        self.streams.insert(name.clone(), Stream::default());
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ledger with segments 1..=n opened in turn (n current).
    fn ledger(n: u64) -> Ledger {
        let mut l = Ledger::default();
        for s in 1..=n {
            assert!(l.open_segment(s, 100).is_empty());
        }
        l
    }

    #[test]
    fn a_closed_segment_goes_when_its_last_stream_is_forgotten() {
        let mut l = ledger(1);
        l.data(1, "a");
        l.data(1, "b");
        assert!(l.open_segment(2, 8).is_empty(), "a and b are live");
        assert!(l.forget(2, "a").is_empty(), "b still lives in segment 1");
        assert_eq!(l.forget(2, "b"), vec![1]);
        assert_eq!(l.usage(), (1, 8));
        assert!(l.streams.is_empty(), "nothing of a or b remains on disk");
    }

    #[test]
    fn the_current_segment_is_never_deleted() {
        let mut l = ledger(1);
        l.data(1, "a");
        assert!(l.forget(1, "a").is_empty());
        assert_eq!(l.open_segment(2, 8), vec![1], "freed once closed");
    }

    #[test]
    fn a_forget_outlives_the_records_it_guards() {
        let mut l = ledger(1);
        l.data(1, "a");
        l.data(1, "long");
        l.open_segment(2, 8);
        l.data(2, "b");
        assert!(
            l.forget(2, "a").is_empty(),
            "segment 1 still holds a live stream"
        );
        l.open_segment(3, 8);
        // Segment 2 has no live stream once b is forgotten, but its Forget of a guards
        // segment 1: deleting 2 first would bring a back.
        assert!(l.forget(3, "b").is_empty());
        // When `long` is forgotten, 1 goes, which frees 2's guard, so 2 goes after it.
        assert_eq!(l.forget(3, "long"), vec![1, 2]);
    }

    #[test]
    fn records_after_a_forget_are_dead_on_arrival() {
        let mut l = ledger(1);
        l.data(1, "a");
        l.data(1, "keep");
        l.open_segment(2, 8);
        assert!(l.forget(2, "a").is_empty());
        l.open_segment(3, 8);
        l.data(3, "a"); // a stray record after its Forget
        assert_eq!(l.open_segment(4, 8), vec![3], "3 holds only a dead record");
        // 2's Forget of a still guards segment 1, until 1 goes.
        assert_eq!(l.forget(4, "keep"), vec![1, 2]);
        assert!(l.streams.is_empty());
    }

    #[test]
    fn an_id_opened_again_after_its_forget_is_a_new_stream() {
        let mut l = ledger(1);
        l.data(1, "a");
        l.data(1, "keep");
        l.open_segment(2, 8);
        assert!(l.forget(2, "a").is_empty(), "keep still lives in 1");
        l.open(2, "a"); // the id is reused: a new stream
        l.open_segment(3, 8);
        l.data(3, "a");
        assert!(
            l.open_segment(4, 8).is_empty(),
            "3 holds the new a, which is live"
        );
        // 1 goes with keep; 2 holds the new a's Open, so it stays, and with it the old a's
        // Forget (harmless: the new a's Open comes after it).
        assert_eq!(l.forget(4, "keep"), vec![1]);
        assert_eq!(l.forget(4, "a"), vec![2, 3]);
        assert_eq!(l.usage().0, 1);
    }

    #[test]
    fn pinned_segments_stay() {
        let mut l = ledger(1);
        l.data(1, "a");
        l.pin(1);
        l.open_segment(2, 8);
        assert!(l.forget(2, "a").is_empty());
        assert_eq!(l.usage().0, 2);
    }
}
