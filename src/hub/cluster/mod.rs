//! The hub on Redis (`[state] backend = "redis"`): the journal of every stream is a Redis
//! Stream every instance reads, so a client follows or resumes a stream on any instance, and
//! an instance that dies leaves its streams to another one, which continues them.
//!
//! - The instance generating a stream owns it: [`Cluster::open`] creates its keys (a
//!   client-chosen id already used on any instance is refused), [`Cluster::append`] writes each
//!   batch before any local client sees it (one script per batch: lease check, XADD, PUBLISH,
//!   lease renewal), [`Cluster::end`] marks it ended. The writes are fenced by the lease: an
//!   instance whose stream was taken over cannot write it any more ([`super::Entry`] is then
//!   ended here with a retryable `stream_moved` error).
//! - Another instance following it holds a *mirror* entry ([`mirror`]): the same
//!   [`super::Entry`] the doors subscribe to, filled from Redis (the tail channel, and XRANGE on
//!   every gap or reset).
//! - Every `lease_ms / 3` one task per instance ([`upkeep`]) renews the leases it holds,
//!   re-sends what Redis missed (Redis was down, or came back empty), relays cancels, and
//!   takes over streams whose lease lapsed ([`takeover`]).
//!
//! When Redis does not answer, a running stream goes on for its local clients and is written
//! to Redis from its entry once Redis answers again; a new stream starts locally (logged and
//! counted); a stream this instance does not hold answers 503 (docs/deployment.md, "Redis
//! trouble: streams").

mod mirror;
mod scripts;
mod takeover;
mod upkeep;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use bytes::Bytes;
use providers::Dialect;

use super::entry::{Entry, StoredEvent};
use super::{Hub, HubError, NewStream, StreamsConfig};
use crate::engine::Engine;
use crate::state::{Redis, StateError};

pub(super) use mirror::Mirrors;

/// Events one stream keeps in Redis at most (`XADD MAXLEN ~`): beyond it the oldest go, and
/// a follower that needs them gets the `stream_forgotten` end, as when the hub forgets one.
pub const MAX_STREAM_EVENTS: u64 = 100_000;

/// Events read per XRANGE call (a stream is read in pages, never whole in one reply).
const RANGE_PAGE: usize = 512;

/// Streams renewed per renewal script call.
const RENEW_BATCH: usize = 128;

/// Streams with a lapsed lease looked at per takeover round (the rest wait for the next one).
const TAKEOVER_BATCH: usize = 16;

/// Streams whose missed writes are re-sent per upkeep round.
const RESYNC_BATCH: usize = 64;

/// Messages queued per mirror on the tail channel before it counts as lagging (and reads
/// Redis again).
const TAIL_QUEUE: usize = 256;

/// What the owner keeps of one of its streams to write it to Redis again if Redis loses it.
#[derive(Debug, Clone)]
struct Owned {
    entry: Weak<Entry>,
    door: Dialect,
    route: String,
    created_ms: u64,
    body: Bytes,
    /// The pass-through headers as JSON pairs (never credentials).
    forward: String,
    /// False once a write failed or came back behind: the hot path then leaves the stream to
    /// the upkeep task, which re-sends from Redis's own `next` and sets it back.
    in_sync: bool,
    /// The stream ended here; its end is to be written when it is in sync.
    ended: bool,
}

/// Counters of the Redis backend of the hub, for `/admin/streams`.
#[derive(Debug, Default, serde::Serialize)]
pub struct ClusterStats {
    /// Streams owned (generated) by this instance now.
    pub owned: usize,
    /// Streams this instance follows for its clients from another's generation.
    pub mirrors: usize,
    /// Owned streams whose events Redis is missing now (it did not answer).
    pub unsynced: usize,
    /// Streams started while Redis did not answer (generated locally, written later).
    pub degraded_starts: u64,
    /// Streams this instance took over from a dead one.
    pub taken_over: u64,
    /// Streams this instance lost to another one (its lease lapsed).
    pub moved: u64,
}

/// The hub's Redis side.
#[derive(Debug)]
pub(super) struct Cluster {
    redis: Arc<Redis>,
    owned: Mutex<HashMap<String, Owned>>,
    pub(super) mirrors: Mirrors,
    /// How long a finished stream's keys stay (`streams.retention_ms`).
    retention_ms: u64,
    /// How long a live stream's keys stay after its last write or renewal.
    ttl_ms: u64,
    degraded_starts: AtomicU64,
    taken_over: AtomicU64,
    moved: AtomicU64,
}

/// What Redis holds of a stream's request (its meta hash).
#[derive(Debug, Clone)]
struct Meta {
    door: Dialect,
    route: String,
    created_ms: u64,
    body: Bytes,
    forward: String,
    ended: bool,
}

impl Cluster {
    pub(super) fn new(redis: Arc<Redis>, config: &StreamsConfig) -> Cluster {
        let lease = redis.lease().as_millis() as u64;
        Cluster {
            redis,
            owned: Mutex::new(HashMap::new()),
            mirrors: Mirrors::default(),
            retention_ms: config.retention_ms.max(1),
            ttl_ms: config
                .retention_ms
                .saturating_add(config.detach_ms)
                .saturating_add(lease.saturating_mul(2))
                .max(1),
            degraded_starts: AtomicU64::new(0),
            taken_over: AtomicU64::new(0),
            moved: AtomicU64::new(0),
        }
    }

    /// Starts the upkeep task (renewals, re-sends, cancels, takeovers) of `hub`.
    pub(super) fn spawn(hub: &Arc<Hub>, engine: &Arc<Engine>) {
        tokio::spawn(upkeep::run(Arc::downgrade(hub), Arc::clone(engine)));
    }

    fn owned(&self) -> MutexGuard<'_, HashMap<String, Owned>> {
        // Single-step map updates: a poisoned map is still consistent.
        self.owned.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn key(&self, tag: &str, suffix: &str) -> String {
        self.redis.key(tag, suffix)
    }

    fn me(&self) -> &str {
        self.redis.instance()
    }

    fn lease_ms(&self) -> u64 {
        self.redis.lease().as_millis() as u64
    }

    /// Creates the stream `entry` in Redis before its first event. A stream of that key
    /// already there (started on any instance) is a duplicate. Redis not answering is no
    /// refusal: the stream starts here and is written once Redis answers (counted, logged).
    pub(super) async fn open(&self, entry: &Arc<Entry>, new: &NewStream) -> Result<(), HubError> {
        let forward = serde_json::to_string(&super::persist::forward_pairs(&new.forward))
            .unwrap_or_else(|_| "[]".into());
        let mut owned = Owned {
            entry: Arc::downgrade(entry),
            door: new.door,
            route: entry.info().route,
            created_ms: entry.info().created_ms,
            body: new.body.clone(),
            forward,
            in_sync: false,
            ended: false,
        };
        // Known down (a call failed and none answered since): no wait on every new stream.
        let opened = if self.redis.is_up() {
            self.open_script(entry.key(), &owned, "new").await
        } else {
            Err(StateError::Failed {
                what: "hub open",
                reason: "Redis did not answer the last call".into(),
            })
        };
        match opened {
            Ok([1, _]) => owned.in_sync = true,
            Ok([0, _]) => {
                return Err(HubError::DuplicateStream {
                    id: entry.id().to_owned(),
                });
            }
            Ok(code) => {
                tracing::warn!(
                    stream = entry.id(),
                    ?code,
                    "state: unexpected answer opening a stream"
                );
            }
            Err(e) => {
                self.degraded_starts.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(stream = entry.id(), error = %e, "state: Redis did not answer: the stream starts on this instance alone and is written to Redis when it answers again");
            }
        }
        self.owned().insert(entry.key().to_owned(), owned);
        Ok(())
    }

    async fn open_script(
        &self,
        tag: &str,
        owned: &Owned,
        mode: &str,
    ) -> Result<[i64; 2], StateError> {
        let mut call = scripts::OPEN.prepare_invoke();
        call.key(self.key(tag, "meta"))
            .key(self.key(tag, "lease"))
            .key(self.redis.global("live"))
            .arg(self.me())
            .arg(self.lease_ms())
            .arg(self.ttl_ms)
            .arg(tag)
            .arg(mode)
            .arg(owned.door.as_str())
            .arg(&owned.route)
            .arg(owned.created_ms)
            .arg(owned.body.as_ref())
            .arg(&owned.forward);
        Ok(pair(self.redis.script("hub open", &call).await?))
    }

    /// Writes a batch of `entry`'s events to Redis, before any local client sees them. A
    /// stream out of sync (Redis failed it before) is left to the upkeep task: the hot path
    /// never waits on a Redis that is not answering.
    pub(super) async fn append(&self, entry: &Entry, events: &[StoredEvent]) {
        let Some(first) = events.first() else { return };
        let in_sync = self
            .owned()
            .get(entry.key())
            .is_some_and(|o| o.in_sync && !o.ended);
        if !in_sync || !self.redis.is_up() {
            self.mark_unsynced(entry.key());
            return;
        }
        let jsons: Vec<&[u8]> = events.iter().map(|e| e.json.as_ref()).collect();
        match self.append_script(entry.key(), first.seq, &jsons).await {
            Ok([1, _]) => {}
            Ok([-1, _]) => self.fence(entry),
            Ok(_) | Err(_) => self.mark_unsynced(entry.key()),
        }
    }

    async fn append_script(
        &self,
        tag: &str,
        first: u64,
        jsons: &[&[u8]],
    ) -> Result<[i64; 2], StateError> {
        let mut call = scripts::APPEND.prepare_invoke();
        call.key(self.key(tag, "meta"))
            .key(self.key(tag, "lease"))
            .key(self.key(tag, "ev"))
            .key(self.redis.global("live"))
            .arg(self.me())
            .arg(self.lease_ms())
            .arg(self.ttl_ms)
            .arg(tag)
            .arg(MAX_STREAM_EVENTS)
            .arg(self.key(tag, "tail"))
            .arg(first);
        for json in jsons {
            call.arg(*json);
        }
        Ok(pair(self.redis.script("hub append", &call).await?))
    }

    fn mark_unsynced(&self, key: &str) {
        if let Some(o) = self.owned().get_mut(key) {
            o.in_sync = false;
        }
    }

    /// Another instance holds the stream now: this one stops generating it and forgets it.
    fn fence(&self, entry: &Entry) {
        if self.owned().remove(entry.key()).is_some() {
            self.moved.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                stream = entry.id(),
                "state: another instance took this stream over: ending it here"
            );
        }
        entry.move_away();
    }

    /// The generation of `entry` is over here: its end is written now if Redis has all its
    /// events, else by the upkeep task after the re-send.
    pub(super) async fn end(&self, entry: &Entry) {
        let ready = match self.owned().get_mut(entry.key()) {
            Some(o) => {
                o.ended = true;
                o.in_sync && self.redis.is_up()
            }
            None => return,
        };
        if !ready {
            self.mark_unsynced(entry.key());
            return;
        }
        self.ended(
            entry.key(),
            self.end_script(entry.key(), entry.next_seq()).await,
        );
    }

    /// Acts on the answer of the end script of stream `tag`.
    fn ended(&self, tag: &str, answer: Result<i64, StateError>) {
        match answer {
            // Written, or another instance owns it now: nothing more to do here.
            Ok(1 | -1) => {
                self.owned().remove(tag);
            }
            // Redis lacks events, lost the stream, or did not answer: re-sent, then ended.
            _ => self.mark_unsynced(tag),
        }
    }

    async fn end_script(&self, tag: &str, next: u64) -> Result<i64, StateError> {
        let mut call = scripts::END.prepare_invoke();
        call.key(self.key(tag, "meta"))
            .key(self.key(tag, "lease"))
            .key(self.key(tag, "ev"))
            .key(self.redis.global("live"))
            .arg(self.me())
            .arg(self.retention_ms)
            .arg(tag)
            .arg(self.key(tag, "tail"))
            .arg(next);
        self.redis.script("hub end", &call).await
    }

    /// The stream's meta hash, None when Redis has no such stream.
    async fn meta(&self, tag: &str) -> Result<Option<Meta>, StateError> {
        let fields: HashMap<String, Vec<u8>> = self
            .redis
            .query("HGETALL", redis::cmd("HGETALL").arg(self.key(tag, "meta")))
            .await?;
        let text = |name: &str| {
            fields
                .get(name)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .unwrap_or_default()
        };
        let Ok(door) = text("door").parse::<Dialect>() else {
            return Ok(None);
        };
        Ok(Some(Meta {
            door,
            route: text("route"),
            created_ms: text("created_ms").parse().unwrap_or(0),
            body: Bytes::from(fields.get("body").cloned().unwrap_or_default()),
            forward: text("forward"),
            ended: text("ended") == "1",
        }))
    }

    /// The events of stream `tag` from seq `from` on, at most [`RANGE_PAGE`].
    async fn range(&self, tag: &str, from: u64) -> Result<Vec<(u64, Bytes)>, StateError> {
        let entries: Vec<(String, Vec<Vec<u8>>)> = self
            .redis
            .query(
                "XRANGE",
                redis::cmd("XRANGE")
                    .arg(self.key(tag, "ev"))
                    .arg(format!("0-{}", from.saturating_add(1)))
                    .arg("+")
                    .arg("COUNT")
                    .arg(RANGE_PAGE),
            )
            .await?;
        Ok(entries
            .into_iter()
            .filter_map(|(id, fields)| {
                let seq = id.strip_prefix("0-")?.parse::<u64>().ok()?.checked_sub(1)?;
                let json = fields.into_iter().nth(1)?;
                Some((seq, Bytes::from(json)))
            })
            .collect())
    }

    /// Asks the owner of stream `tag` to cancel it (it reads the request at its next lease
    /// renewal: within `lease_ms / 3`). Whether the stream was live; None when Redis has no
    /// such stream.
    pub(super) async fn request_cancel(&self, tag: &str) -> Result<Option<bool>, StateError> {
        let mut call = scripts::CANCEL.prepare_invoke();
        call.key(self.key(tag, "meta"));
        let live: i64 = self.redis.script("hub cancel", &call).await?;
        Ok((live >= 0).then_some(live == 1))
    }

    /// Tells the owner of stream `tag` a client follows it here.
    async fn mark_followed(&self, tag: &str) -> Result<(), StateError> {
        let mut call = scripts::FOLLOWED.prepare_invoke();
        call.key(self.key(tag, "meta"));
        self.redis
            .script::<i64>("hub followed", &call)
            .await
            .map(drop)
    }

    /// The backend's counters.
    pub(super) fn stats(&self) -> ClusterStats {
        let owned = self.owned();
        ClusterStats {
            owned: owned.len(),
            mirrors: self.mirrors.len(),
            unsynced: owned.values().filter(|o| !o.in_sync).count(),
            degraded_starts: self.degraded_starts.load(Ordering::Relaxed),
            taken_over: self.taken_over.load(Ordering::Relaxed),
            moved: self.moved.load(Ordering::Relaxed),
        }
    }
}

/// A script's `[code, next]` answer (0s where missing: an unexpected answer).
fn pair(reply: Vec<i64>) -> [i64; 2] {
    [
        reply.first().copied().unwrap_or(0),
        reply.get(1).copied().unwrap_or(0),
    ]
}

/// The Redis Stream events of a stream as kept ones: in seq order from `next`, stopping at
/// the first that does not parse or does not follow (a gap is read again later).
fn kept_from(next: u64, events: Vec<(u64, Bytes)>) -> Vec<StoredEvent> {
    let mut out = Vec::with_capacity(events.len());
    let mut expect = next;
    for (seq, json) in events {
        if seq < expect {
            continue;
        }
        match super::persist::stored(json) {
            Some((stored, _)) if seq == expect && stored.seq == seq => {
                out.push(stored);
                expect += 1;
            }
            _ => break,
        }
    }
    out
}

impl Hub {
    /// The stream `owner` named `id`, here or, with the Redis backend, on any instance: a
    /// stream this instance does not hold is followed from Redis (a mirror entry). Redis not
    /// answering for a stream not held here is [`HubError::StoreUnavailable`], never
    /// "unknown": that would be a lie. `after`, the seq a resuming client saw last (perhaps
    /// on another instance): a mirror a little behind Redis is waited for, within a bound.
    pub async fn get_or_follow(
        self: &Arc<Self>,
        owner: Option<&str>,
        id: &str,
        after: Option<u64>,
    ) -> Result<Arc<Entry>, HubError> {
        let entry = match self.get(owner, id) {
            Err(HubError::UnknownStream { .. }) if self.cluster.is_some() => {
                return mirror::follow(self, &super::scoped(owner, id), id).await;
            }
            found => found?,
        };
        if let (Some(cluster), Some(after)) = (&self.cluster, after)
            && after >= entry.next_seq()
            && self.mirrors_entry(&entry)
        {
            // The mirror reads Redis at least every lease_ms / 3.
            let bound = cluster.redis.lease() / 3 + cluster.redis.timeout();
            entry.wait_past(after, bound).await;
        }
        Ok(entry)
    }

    /// [`Hub::check_id`], and with the Redis backend whether any instance used the id
    /// already, before any upstream is called for it. Redis not answering lets it through
    /// (the stream may start degraded; the id is checked again when it is written).
    pub async fn check_new_id(&self, owner: Option<&str>, id: &str) -> Result<(), HubError> {
        self.check_id(owner, id)?;
        if let Some(cluster) = &self.cluster
            && cluster.redis.is_up()
        {
            let key = cluster.key(&super::scoped(owner, id), "meta");
            let exists: Result<bool, _> = cluster
                .redis
                .query("EXISTS", redis::cmd("EXISTS").arg(key))
                .await;
            if exists.unwrap_or(false) {
                return Err(HubError::DuplicateStream { id: id.to_owned() });
            }
        }
        Ok(())
    }

    /// Cancels `entry`: here when this instance generates it, else by asking its owner
    /// through Redis. Whether it was live.
    async fn cancel(&self, entry: &Entry) -> bool {
        if let Some(cluster) = &self.cluster
            && self.mirrors_entry(entry)
        {
            return match cluster.request_cancel(entry.key()).await {
                Ok(live) => live == Some(true),
                Err(e) => {
                    tracing::warn!(stream = entry.id(), error = %e, "state: the cancel could not be relayed to the stream's owner");
                    !entry.is_finished()
                }
            };
        }
        entry.cancel()
    }

    /// Cancels the stream `owner` named `id`, wherever it is generated: whether it was live.
    /// A stream this instance does not hold is cancelled through Redis without following it.
    pub async fn cancel_stream(&self, owner: Option<&str>, id: &str) -> Result<bool, HubError> {
        let missing = match self.get(owner, id) {
            Ok(entry) => return Ok(self.cancel(&entry).await),
            Err(e) => e,
        };
        let (HubError::UnknownStream { .. }, Some(cluster)) = (&missing, &self.cluster) else {
            return Err(missing);
        };
        match cluster.request_cancel(&super::scoped(owner, id)).await {
            Ok(Some(live)) => Ok(live),
            Ok(None) => Err(missing),
            Err(e) => {
                tracing::warn!(stream = id, error = %e, "state: a stream not held here cannot be cancelled through Redis now");
                Err(HubError::StoreUnavailable)
            }
        }
    }

    pub(super) fn mirrors_entry(&self, entry: &Entry) -> bool {
        self.cluster
            .as_ref()
            .is_some_and(|c| c.mirrors.contains(entry.key()))
    }

    /// The Redis backend's counters, when it is on.
    pub fn cluster_stats(&self) -> Option<ClusterStats> {
        self.cluster.as_ref().map(|c| c.stats())
    }
}

#[cfg(test)]
mod tests;
