//! The hub's two caps: how many streams may be live at once (in total and per gateway key),
//! and how many bytes of event JSON all streams together may keep (`max_bytes`).
//!
//! A live slot is taken before the engine calls any upstream, so a refused stream costs
//! nothing upstream, and is given back when the stream's generation task ends. The kept bytes
//! are one counter, updated per event in O(1); only when they pass `max_bytes` does the hub
//! look further (forgetting finished streams in the order they ended, then cutting a live
//! stream over its share), and each such look frees or cuts something.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::LiveScope;

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    per_owner: HashMap<String, usize>,
}

/// The live-stream counts, shared by the hub and every [`LiveSlot`].
#[derive(Debug)]
pub(super) struct LiveCounts {
    max_live: usize,
    max_per_key: usize,
    counts: Mutex<Counts>,
}

impl LiveCounts {
    /// Counts capped at `max_live` in total and `max_per_key` per owner (0: no cap).
    pub(super) fn new(max_live: usize, max_per_key: usize) -> Arc<Self> {
        Arc::new(LiveCounts {
            max_live,
            max_per_key,
            counts: Mutex::new(Counts::default()),
        })
    }

    fn counts(&self) -> MutexGuard<'_, Counts> {
        // Every update is a few integer writes under the lock: a poisoned lock is consistent.
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A slot for one more live stream of `owner`, or which cap refuses it. An open gateway
    /// (`owner` None) has no per-key cap: all its clients are one anonymous caller, and the
    /// total cap already bounds them.
    pub(super) fn reserve(
        self: &Arc<Self>,
        owner: Option<&str>,
    ) -> Result<LiveSlot, (LiveScope, usize)> {
        let mut counts = self.counts();
        if self.max_live > 0 && counts.total >= self.max_live {
            return Err((LiveScope::Gateway, self.max_live));
        }
        if let Some(owner) = owner
            && self.max_per_key > 0
            && counts.per_owner.get(owner).copied().unwrap_or(0) >= self.max_per_key
        {
            return Err((LiveScope::Key, self.max_per_key));
        }
        Ok(self.take(&mut counts, owner))
    }

    /// A slot past the caps: for streams brought back from the journal, which were admitted
    /// before the restart and must be continued (or ended) all the same.
    pub(super) fn force(self: &Arc<Self>, owner: Option<&str>) -> LiveSlot {
        let mut counts = self.counts();
        self.take(&mut counts, owner)
    }

    fn take(self: &Arc<Self>, counts: &mut Counts, owner: Option<&str>) -> LiveSlot {
        counts.total += 1;
        if let Some(owner) = owner {
            *counts.per_owner.entry(owner.to_owned()).or_insert(0) += 1;
        }
        LiveSlot {
            counts: Arc::clone(self),
            owner: owner.map(str::to_owned),
        }
    }

    /// Live streams now (slots held).
    pub(super) fn total(&self) -> usize {
        self.counts().total
    }
}

/// One live stream's place under the caps; dropping it gives the place back.
#[derive(Debug)]
pub struct LiveSlot {
    counts: Arc<LiveCounts>,
    owner: Option<String>,
}

impl Drop for LiveSlot {
    fn drop(&mut self) {
        let mut counts = self.counts.counts();
        counts.total = counts.total.saturating_sub(1);
        if let Some(owner) = &self.owner
            && let Some(n) = counts.per_owner.get_mut(owner)
        {
            *n = n.saturating_sub(1);
            // Keys come and go: an owner with no live stream holds no map entry.
            if *n == 0 {
                counts.per_owner.remove(owner);
            }
        }
    }
}

/// The share of `max_bytes` one of `live` live streams may keep when live streams alone are
/// over the cap: by pigeonhole, when their sum is over `max_bytes` at least one of them is
/// over this share, so cutting the streams over it always brings the sum back.
pub(super) fn share(max_bytes: usize, live: usize) -> usize {
    max_bytes / live.max(1)
}
