//! The stream hub: every stream of the native doors (and the resumable answers of the
//! OpenAI and Anthropic doors) lives here, detached from the connection that started it.
//!
//! A stream's generation task ([`generate`]) appends stamped events to its [`Entry`]; any
//! number of [`Subscription`]s follow it from a seq, reading what is kept and then what comes
//! live. When the last client leaves, generation goes on for `detach_ms`; a finished stream
//! stays resumable for `retention_ms`. All streams, live ones included, keep at most
//! `max_bytes` of events, and at most `max_live` (`max_live_per_key` per key) generate at
//! once ([`capacity`]). Every event is journaled before any client sees it (docs/journal.md):
//! on local disk ([`persist`]), or with `[state] backend = "redis"` in Redis, where every
//! instance follows, resumes and takes over any stream ([`cluster`]).

mod capacity;
mod cluster;
mod entry;
mod generate;
mod persist;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use providers::{Dialect, Stamper};
use serde::Serialize;

pub use crate::config::{FsyncMode, JournalSettings, StreamsConfig, WebSocketSettings};
pub use crate::error::{HubError, LiveScope};
pub use capacity::LiveSlot;
pub use cluster::{ClusterStats, MAX_STREAM_EVENTS};
pub use entry::{
    Entry, FORGOTTEN_CODE, MAX_BATCH_BYTES, Status, StoredEvent, StreamInfo, Subscription,
};
pub use persist::OpenError;

use crate::engine::{Answer, Engine, unix_now_ms};
use crate::journal::{Journal, JournalStats, OwnedRecord};
use capacity::LiveCounts;
use persist::Persist;

/// The `Retry-After` hint of [`HubError::TooManyLive`]: room comes back when some stream
/// ends, which nobody can predict; a second keeps well-behaved clients from spinning.
pub const LIVE_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The `error` code of a live stream the memory cap ended.
pub const MEMORY_CAP_CODE: &str = "memory_cap";

/// The `error` code of a stream another instance took over (this one's lease lapsed): the
/// client reconnects, on any instance, and follows it from its last seq.
pub const MOVED_CODE: &str = "stream_moved";

/// A stream about to start.
#[derive(Debug, Clone)]
pub struct NewStream {
    /// The client's own id for it, if it chose one.
    pub id: Option<String>,
    /// The gateway key starting it (None on an open gateway): only that key finds it.
    pub owner: Option<String>,
    /// The door it came through.
    pub door: Dialect,
    /// The client's request body as received (the journal keeps it to continue the answer
    /// after a restart).
    pub body: bytes::Bytes,
    /// Its pass-through headers.
    pub forward: crate::upstream::ForwardHeaders,
}

/// Totals for `/admin/streams`.
#[derive(Debug, Clone, Serialize)]
pub struct HubStats {
    /// Streams still generating.
    pub live: usize,
    /// Finished streams still resumable.
    pub finished: usize,
    /// Bytes of event JSON held in memory.
    pub buffer_bytes: usize,
    /// `streams.max_bytes`.
    pub max_bytes: usize,
    /// Streams forgotten so far (retention or memory cap).
    pub evicted: u64,
    /// Live streams ended by the memory cap so far.
    pub cut: u64,
    /// `streams.max_live`.
    pub max_live: usize,
    /// `streams.max_live_per_key`.
    pub max_live_per_key: usize,
}

/// The map of streams and the order finished ones ended in (the memory cap forgets them in
/// that order without sorting).
#[derive(Debug, Default)]
struct Streams {
    map: HashMap<String, Arc<Entry>>,
    /// Finished streams, first ended first; entries already forgotten are skipped (and
    /// pruned by the sweep).
    ended: VecDeque<Weak<Entry>>,
}

/// Every stream the gateway keeps.
#[derive(Debug)]
pub struct Hub {
    config: StreamsConfig,
    streams: Mutex<Streams>,
    evicted: AtomicU64,
    /// Live streams, against `max_live` and `max_live_per_key`.
    live: Arc<LiveCounts>,
    /// Bytes of event JSON of every stream in the map (and of batches being admitted).
    kept: AtomicUsize,
    /// Live streams cut by the memory cap whose generation task has not ended them yet.
    cutting: AtomicUsize,
    cut: AtomicU64,
    /// Streams started by clients since the hub opened (not those recovered), for the metrics.
    started: AtomicU64,
    /// Streams refused by `max_live` and by `max_live_per_key`, for the metrics.
    refused: [AtomicU64; 2],
    persist: Option<Persist>,
    /// The Redis backend (`[state] backend = "redis"`), instead of `persist`.
    cluster: Option<cluster::Cluster>,
}

impl Hub {
    /// The hub of `config`: with its journal opened (when enabled) and the journaled streams
    /// back, interrupted ones being continued by `engine`. Call it inside a tokio runtime.
    pub fn open(config: StreamsConfig, engine: &Arc<Engine>) -> Result<Arc<Hub>, OpenError> {
        let shared = engine
            .redis()
            .map(|redis| cluster::Cluster::new(Arc::clone(redis), &config));
        // With Redis, the Redis Streams are the journal: the embedded one is not opened.
        let (persist, recovered) = if config.journal.enabled && shared.is_none() {
            let (persist, recovered) = Persist::open(&config.journal)?;
            (Some(persist), recovered)
        } else {
            (None, Vec::new())
        };
        let hub = Arc::new(Hub {
            live: LiveCounts::new(config.max_live, config.max_live_per_key),
            config,
            streams: Mutex::new(Streams::default()),
            evicted: AtomicU64::new(0),
            kept: AtomicUsize::new(0),
            cutting: AtomicUsize::new(0),
            cut: AtomicU64::new(0),
            started: AtomicU64::new(0),
            refused: [AtomicU64::new(0), AtomicU64::new(0)],
            persist,
            cluster: shared,
        });
        if hub.cluster.is_some() {
            cluster::Cluster::spawn(&hub, engine);
        }
        if !recovered.is_empty() {
            tracing::info!(streams = recovered.len(), "journal: streams recovered");
        }
        hub.recover(engine, recovered);
        Ok(hub)
    }

    /// The configuration in force.
    pub fn config(&self) -> &StreamsConfig {
        &self.config
    }

    fn streams(&self) -> MutexGuard<'_, Streams> {
        // Map operations are single calls: a poisoned map is still consistent.
        self.streams.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks an id `owner`'s client chose before any work starts for it.
    pub fn check_id(&self, owner: Option<&str>, id: &str) -> Result<(), HubError> {
        valid_id(id)?;
        if self.streams().map.contains_key(&scoped(owner, id)) {
            return Err(HubError::DuplicateStream { id: id.to_owned() });
        }
        Ok(())
    }

    /// A place for one more live stream of `owner` under `max_live` and `max_live_per_key`:
    /// taken before the engine calls any upstream, handed to [`Hub::start`], given back when
    /// the stream ends (or when dropped unused).
    pub fn reserve(&self, owner: Option<&str>) -> Result<LiveSlot, HubError> {
        self.live.reserve(owner).map_err(|(scope, limit)| {
            self.refused[live_index(scope)].fetch_add(1, Ordering::Relaxed);
            HubError::TooManyLive { scope, limit }
        })
    }

    /// Registers a stream for `answer` and starts its generation task, detached from
    /// whoever asked; `slot` ([`Hub::reserve`]) is held until the stream ends. Subscribe to
    /// the returned entry to follow it.
    pub async fn start(
        self: &Arc<Self>,
        new: NewStream,
        answer: Answer,
        slot: LiveSlot,
    ) -> Result<Arc<Entry>, HubError> {
        let owner = new.owner.as_deref();
        let id = match &new.id {
            Some(id) => {
                self.check_id(owner, id)?;
                id.clone()
            }
            None => new_id(),
        };
        let key = scoped(owner, &id);
        let entry = Arc::new(Entry::new(
            key.clone(),
            new.door,
            answer.route.to_string(),
            unix_now_ms(),
            false,
        ));
        {
            let mut streams = self.streams();
            if streams.map.contains_key(&key) {
                return Err(HubError::DuplicateStream { id });
            }
            streams.map.insert(key.clone(), Arc::clone(&entry));
        }
        if let Some(cluster) = &self.cluster
            && let Err(e) = cluster.open(&entry, &new).await
        {
            // Refused before any event: nothing kept to free.
            self.let_go(&entry, true);
            return Err(e);
        }
        self.started.fetch_add(1, Ordering::Relaxed);
        if let Some(persist) = &self.persist {
            persist
                .append(OwnedRecord::Open {
                    stream: key,
                    created_ms: unix_now_ms(),
                    door: new.door.as_str(),
                    body: new.body.clone(),
                    forward: persist::forward_pairs(&new.forward),
                    route: answer.route.to_string(),
                })
                .await;
        }
        // In the starting request's span: the generation's log lines carry its request id.
        tokio::spawn(tracing::Instrument::in_current_span(generate::run(
            Arc::clone(self),
            Arc::clone(&entry),
            Stamper::new(id),
            answer.events,
            Duration::from_millis(self.config.detach_ms),
            slot,
        )));
        Ok(entry)
    }

    /// The stream `owner` named `id`: another key's stream of that id is as unknown as one
    /// that never was (existence is not confirmed to anyone else).
    ///
    /// An id outside [`crate::stream_id`]'s rule is refused as such (not "unknown"), so every
    /// door that names a stream agrees with the doors that start one.
    pub fn get(&self, owner: Option<&str>, id: &str) -> Result<Arc<Entry>, HubError> {
        valid_id(id)?;
        self.streams()
            .map
            .get(&scoped(owner, id))
            .cloned()
            .ok_or_else(|| HubError::UnknownStream { id: id.to_owned() })
    }

    /// Every stream kept, newest first.
    pub fn list(&self) -> Vec<StreamInfo> {
        let mut list: Vec<StreamInfo> = self.streams().map.values().map(|e| e.info()).collect();
        list.sort_by(|a, b| b.created_ms.cmp(&a.created_ms).then(a.id.cmp(&b.id)));
        list
    }

    /// Totals over every stream kept.
    pub fn stats(&self) -> HubStats {
        let streams = self.streams();
        let live = streams.map.values().filter(|e| !e.is_finished()).count();
        HubStats {
            live,
            finished: streams.map.len() - live,
            buffer_bytes: self.kept_bytes(),
            max_bytes: self.config.max_bytes,
            evicted: self.evicted.load(Ordering::Relaxed),
            cut: self.cut.load(Ordering::Relaxed),
            max_live: self.config.max_live,
            max_live_per_key: self.config.max_live_per_key,
        }
    }

    /// Streams generating now (those holding a place under `max_live`).
    pub fn live(&self) -> usize {
        self.live.total()
    }

    /// Streams clients started since the hub opened.
    pub fn started(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }

    /// Streams refused so far because `scope`'s live cap was full.
    pub fn refused(&self, scope: LiveScope) -> u64 {
        self.refused[live_index(scope)].load(Ordering::Relaxed)
    }

    /// Clients following a stream now, over every stream kept.
    pub fn subscribers(&self) -> usize {
        self.streams().map.values().map(|e| e.subscribers()).sum()
    }

    /// Streams still generating, and how many of them no client follows (what a shutdown
    /// drain waits for).
    pub fn running(&self) -> (usize, usize) {
        let streams = self.streams();
        // Mirrors are other instances' streams: a drain here does not wait for them.
        let live = streams
            .map
            .values()
            .filter(|e| !e.is_finished() && !self.mirrors_entry(e));
        live.fold((0, 0), |(live, detached), e| {
            (live + 1, detached + usize::from(e.subscribers() == 0))
        })
    }

    /// Bytes of event JSON kept over all streams.
    pub fn kept_bytes(&self) -> usize {
        self.kept.load(Ordering::Relaxed)
    }

    /// Forgets finished streams past their retention, then, while memory is over
    /// `max_bytes`, the finished streams that ended first.
    pub fn sweep(&self) {
        let retention = Duration::from_millis(self.config.retention_ms);
        let mut forgotten = Vec::new();
        {
            let mut streams = self.streams();
            let mut freed = 0;
            streams.map.retain(|id, e| {
                let keep = e.finished_at().is_none_or(|t| t.elapsed() < retention);
                if !keep {
                    freed += e.forget();
                    forgotten.push(id.clone());
                }
                keep
            });
            self.kept.fetch_sub(freed, Ordering::Relaxed);
            let Streams { map, ended } = &mut *streams;
            ended.retain(|w| w.upgrade().is_some_and(|e| is_kept(map, &e)));
            self.forget_ended(&mut streams, &mut forgotten);
            self.journal_forgotten(&forgotten);
        }
        self.count_forgotten(forgotten.len());
    }

    /// Forgets finished streams, first ended first, while the kept bytes are over
    /// `max_bytes`. Each stream is looked at once over its life: O(1) per stream.
    fn forget_ended(&self, streams: &mut Streams, forgotten: &mut Vec<String>) {
        while self.kept_bytes() > self.config.max_bytes {
            let Some(weak) = streams.ended.pop_front() else {
                break;
            };
            let Some(entry) = weak.upgrade() else {
                continue;
            };
            if is_kept(&streams.map, &entry) {
                streams.map.remove(entry.key());
                self.kept.fetch_sub(entry.forget(), Ordering::Relaxed);
                forgotten.push(entry.key().to_owned());
            }
        }
    }

    /// Journals `forgotten` streams. Called before the map's lock goes: a client may reuse a
    /// forgotten id at once, and the new stream's Open must come after this Forget, or a
    /// restart would drop it.
    fn journal_forgotten(&self, forgotten: &[String]) {
        if let Some(persist) = &self.persist {
            for stream in forgotten {
                persist.append_now(OwnedRecord::Forget {
                    stream: stream.clone(),
                });
            }
        }
    }

    fn count_forgotten(&self, n: usize) {
        if n > 0 {
            self.evicted.fetch_add(n as u64, Ordering::Relaxed);
            tracing::debug!(count = n, "streams forgotten");
        }
    }

    /// Whether `entry` may keep `bytes` more of event JSON, counting them if so. Over
    /// `max_bytes`, finished streams are forgotten first; if live streams alone are still
    /// over it, `entry` is cut when it is over its share ([`capacity::share`]), else the
    /// largest live stream over its share is cut (it stops at its next batch). False: `entry`
    /// is cut and must end without these events.
    pub(crate) fn admit(&self, entry: &Entry, bytes: usize) -> bool {
        if entry.was_cut() {
            return false;
        }
        let max = self.config.max_bytes;
        if self.kept.fetch_add(bytes, Ordering::Relaxed) + bytes <= max {
            return true;
        }
        {
            let mut streams = self.streams();
            let mut forgotten = Vec::new();
            self.forget_ended(&mut streams, &mut forgotten);
            self.journal_forgotten(&forgotten);
            drop(streams);
            self.count_forgotten(forgotten.len());
        }
        if self.kept_bytes() <= max {
            return true;
        }
        let share = capacity::share(max, self.live.total());
        if entry.bytes() + bytes > share {
            self.kept.fetch_sub(bytes, Ordering::Relaxed);
            self.cut_stream(entry, share);
            return false;
        }
        // A stream cut already frees its share as soon as it ends: no need to look further.
        if self.cutting.load(Ordering::Relaxed) == 0 {
            let largest = self
                .streams()
                .map
                .values()
                .filter(|e| !e.is_finished() && !e.was_cut())
                .max_by_key(|e| e.bytes())
                .cloned();
            if let Some(largest) = largest.filter(|e| e.bytes() > share) {
                self.cut_stream(&largest, share);
            }
        }
        true
    }

    /// Counts bytes kept past the cap: the last events of a stream that is ending.
    pub(crate) fn add_kept(&self, bytes: usize) {
        self.kept.fetch_add(bytes, Ordering::Relaxed);
    }

    fn cut_stream(&self, entry: &Entry, share: usize) {
        if entry.cut() {
            self.cutting.fetch_add(1, Ordering::Relaxed);
            self.cut.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                stream = entry.id(),
                kept_bytes = entry.bytes(),
                share,
                max_bytes = self.config.max_bytes,
                "memory cap: ending a live stream over its share"
            );
        }
    }

    /// Sweeps every second until the hub is dropped by everyone else.
    pub fn spawn_janitor(self: &Arc<Self>) {
        let hub = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(hub) = hub.upgrade() else { break };
                hub.sweep();
            }
        });
    }

    /// The journal's counters, when there is a journal.
    pub fn journal_stats(&self) -> Option<JournalStats> {
        self.journal().map(Journal::stats)
    }

    /// The journal, when there is one (its latencies, for the metrics).
    pub fn journal(&self) -> Option<&Journal> {
        self.persist.as_ref().map(|p| p.appender.journal())
    }

    /// Puts a stream with its events so far in the map, in place of any of its key
    /// (recovery, takeover, tests).
    fn insert(&self, entry: Arc<Entry>) {
        let mut streams = self.streams();
        if let Some(old) = streams.map.remove(entry.key()) {
            self.kept.fetch_sub(old.forget(), Ordering::Relaxed);
        }
        self.put(&mut streams, entry);
    }

    fn put(&self, streams: &mut Streams, entry: Arc<Entry>) {
        self.kept.fetch_add(entry.bytes(), Ordering::Relaxed);
        if entry.is_finished() {
            streams.ended.push_back(Arc::downgrade(&entry));
        }
        streams.map.insert(entry.key().to_owned(), entry);
    }

    /// Hands a batch of events to the journal (before any subscriber sees them).
    async fn journal_events(&self, entry: &Entry, events: &[StoredEvent]) {
        if let Some(cluster) = &self.cluster {
            cluster.append(entry, events).await;
        }
        if let (Some(persist), Some(first)) = (&self.persist, events.first()) {
            persist
                .append(OwnedRecord::Events {
                    stream: entry.key().to_owned(),
                    first_seq: first.seq,
                    events: events.iter().map(|e| e.json.clone()).collect(),
                })
                .await;
        }
    }

    /// [`Hub::finish`] for a stream generated here, written ended to Redis first (when on). A
    /// stream another instance took over is let go instead: a client reconnecting here
    /// follows it from Redis.
    async fn finish_shared(&self, entry: &Arc<Entry>) {
        if let Some(cluster) = &self.cluster {
            if entry.was_moved() {
                self.finish(entry);
                self.let_go(entry, false);
                return;
            }
            cluster.end(entry).await;
        }
        self.finish(entry);
    }

    /// A mirror entry reached its stream's end: followers are told; it is kept like any
    /// finished stream.
    fn finish_mirror(&self, entry: &Arc<Entry>) {
        entry.finish();
        self.streams().ended.push_back(Arc::downgrade(entry));
    }

    /// Takes out of the map an entry this instance does not generate (a mirror nobody
    /// follows, with `forget`; a stream another instance took over, whose events stay for
    /// the clients still reading them), unless a newer one took its key. A client asking
    /// again follows the stream from Redis.
    fn let_go(&self, entry: &Arc<Entry>, forget: bool) {
        let mut streams = self.streams();
        if is_kept(&streams.map, entry) {
            streams.map.remove(entry.key());
            let freed = if forget {
                entry.forget()
            } else {
                entry.bytes()
            };
            self.kept.fetch_sub(freed, Ordering::Relaxed);
        }
    }

    /// Puts `entry` in the map unless its key is there already: the entry kept, and whether
    /// it is `entry`.
    fn insert_if_absent(&self, entry: Arc<Entry>) -> (Arc<Entry>, bool) {
        let mut streams = self.streams();
        if let Some(kept) = streams.map.get(entry.key()) {
            return (Arc::clone(kept), false);
        }
        self.put(&mut streams, Arc::clone(&entry));
        (entry, true)
    }

    /// The generation task is over: journaled as ended, then followers are told.
    fn finish(&self, entry: &Arc<Entry>) {
        if let Some(persist) = &self.persist {
            persist.append_now(OwnedRecord::End {
                stream: entry.key().to_owned(),
            });
        }
        entry.finish();
        if entry.was_cut() {
            let _ = self
                .cutting
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        }
        self.streams().ended.push_back(Arc::downgrade(entry));
    }
}

fn live_index(scope: LiveScope) -> usize {
    match scope {
        LiveScope::Gateway => 0,
        LiveScope::Key => 1,
    }
}

/// Whether `entry` is the stream `map` keeps under its key (not one forgotten, whose id a
/// newer stream may have taken).
fn is_kept(map: &HashMap<String, Arc<Entry>>, entry: &Arc<Entry>) -> bool {
    map.get(entry.key()).is_some_and(|e| Arc::ptr_eq(e, entry))
}

/// [`crate::stream_id::is_valid`] as a hub error; the id in it is cut to the longest valid
/// length, since it is echoed to the client and may be as long as a request line.
fn valid_id(id: &str) -> Result<(), HubError> {
    if crate::stream_id::is_valid(id) {
        return Ok(());
    }
    let mut end = id.len().min(crate::stream_id::MAX_LEN);
    while !id.is_char_boundary(end) {
        end -= 1;
    }
    Err(HubError::InvalidId {
        id: id[..end].to_owned(),
    })
}

/// A fresh, unguessable stream id: time-ordered prefix, 128 random bits from the operating
/// system's CSPRNG (ids must not repeat across restarts, since the journal brings old streams
/// back, and must not be guessed).
pub fn new_id() -> String {
    let mut random = [0u8; 16];
    if getrandom::fill(&mut random).is_err() {
        // No OS randomness (never seen on Linux): SipHash keys drawn by the standard library,
        // itself seeded from the OS, over a counter, rather than no stream at all.
        use std::hash::BuildHasher;
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let state = std::hash::RandomState::new();
        random[..8].copy_from_slice(&state.hash_one(n).to_le_bytes());
        random[8..].copy_from_slice(&state.hash_one(!n).to_le_bytes());
    }
    format!("st_{:x}{}", unix_now_ms(), crate::keys::hex(&random))
}

/// Separates an owner from an id in a hub key: neither an id ([`crate::stream_id`]) nor a key
/// name ([`crate::keys::MAX_NAME_LEN`]'s rule) may contain it, so `owner~id` is unambiguous.
const OWNER_SEPARATOR: char = '~';

/// The hub's key for `owner`'s stream `id`: the id alone on an open gateway, else `owner~id`,
/// so that two keys' ids never collide and the journal keeps who owns each stream.
fn scoped(owner: Option<&str>, id: &str) -> String {
    match owner {
        None => id.to_owned(),
        Some(owner) => format!("{owner}{OWNER_SEPARATOR}{id}"),
    }
}

/// The owner and the id of a hub key ([`scoped`]'s inverse).
fn unscoped(key: &str) -> (Option<&str>, &str) {
    match key.split_once(OWNER_SEPARATOR) {
        Some((owner, id)) => (Some(owner), id),
        None => (None, key),
    }
}

#[cfg(test)]
mod tests;
