//! One stream in the hub: its events so far, who follows it, and how it ended.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bytes::Bytes;
use futures_util::Stream;
use providers::Dialect;
use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::HubError;

/// One event as kept: its seq, its `type` (for SSE's `event:` line) and its envelope JSON,
/// shared by every subscriber, the journal and the WebSocket frames without copying.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// Position in the stream.
    pub seq: u64,
    /// The event's `type`.
    pub kind: &'static str,
    /// The serialized envelope.
    pub json: Bytes,
}

impl StoredEvent {
    /// The kept form of a stamped event.
    pub(super) fn of(envelope: &providers::Envelope) -> StoredEvent {
        // serde_json cannot fail on these types; an empty object keeps the seq.
        let json = serde_json::to_vec(envelope).unwrap_or_else(|_| b"{}".to_vec());
        StoredEvent {
            seq: envelope.seq,
            kind: envelope.event.kind(),
            json: Bytes::from(json),
        }
    }
}

/// Where a stream is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Still generating.
    Live,
    /// Ended (its last event says how: `stream.end` with a reason).
    Finished,
}

/// What `/admin/streams` shows of a stream.
#[derive(Debug, Clone, Serialize)]
pub struct StreamInfo {
    /// Stream id.
    pub id: String,
    /// The gateway key that started it (None on an open gateway).
    pub owner: Option<String>,
    /// Live or finished.
    pub status: Status,
    /// The door it came through.
    pub door: Dialect,
    /// `provider/model` that answered first.
    pub route: String,
    /// Events so far (the next seq).
    pub seq: u64,
    /// Bytes of event JSON kept in memory.
    pub buffer_bytes: usize,
    /// Clients following it now.
    pub subscribers: usize,
    /// Milliseconds since the last client left while it was live (generation goes on
    /// detached), if it has none.
    pub detached_ms: Option<u64>,
    /// Unix milliseconds when it started.
    pub created_ms: u64,
    /// Whether it was recovered from the journal after a restart.
    pub recovered: bool,
}

#[derive(Debug, Default)]
struct State {
    events: Vec<StoredEvent>,
    bytes: usize,
    finished: Option<Instant>,
    detached_since: Option<Instant>,
    /// Set when the hub forgot the stream (retention, memory cap): its events are dropped,
    /// and this is how many it had. Subscribers behind it get a `stream_forgotten` end.
    forgotten: Option<u64>,
}

impl State {
    fn len(&self) -> u64 {
        self.forgotten.unwrap_or(self.events.len() as u64)
    }
}

/// A stream's shared state. Cheap to read concurrently; written only by its generation task.
#[derive(Debug)]
pub struct Entry {
    /// The hub's key for it: the id, namespaced by its owner ([`super::scoped`]).
    key: String,
    /// The owner's part of `key`, and the id the client knows.
    owner: Option<String>,
    id: String,
    door: Dialect,
    route: String,
    created_ms: u64,
    recovered: bool,
    state: Mutex<State>,
    /// Bumped on every append and at the end; subscribers wait on it.
    version: watch::Sender<u64>,
    /// Number of subscribers; the generation task watches it for the detach timer.
    subscribers: watch::Sender<usize>,
    cancel: CancellationToken,
    /// Set when the memory cap ended the stream (its cancel token is cancelled too): the
    /// generation task then ends it with a `memory_cap` error instead of `cancelled`.
    cut: AtomicBool,
    /// Set when another instance holds the stream's lease now (docs/deployment.md): the
    /// generation task ends it here with a retryable `stream_moved` error, without writing to
    /// the shared store (it is fenced off), and the hub lets go of it.
    moved: AtomicBool,
}

impl Entry {
    /// An entry under the hub's `key` (which names its owner, if any: [`super::scoped`]).
    pub(super) fn new(
        key: String,
        door: Dialect,
        route: String,
        created_ms: u64,
        recovered: bool,
    ) -> Self {
        let (owner, id) = super::unscoped(&key);
        let (owner, id) = (owner.map(str::to_owned), id.to_owned());
        Entry {
            key,
            owner,
            id,
            door,
            route,
            created_ms,
            recovered,
            state: Mutex::new(State::default()),
            version: watch::Sender::new(0),
            subscribers: watch::Sender::new(0),
            cancel: CancellationToken::new(),
            cut: AtomicBool::new(false),
            moved: AtomicBool::new(false),
        }
    }

    /// The stream's id, as its client knows it.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The hub's key for the stream (its id namespaced by its owner): what the journal keeps.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The gateway key that started the stream (None on an open gateway).
    pub fn owner(&self) -> Option<&str> {
        self.owner.as_deref()
    }

    /// The door the stream came through.
    pub fn door(&self) -> Dialect {
        self.door
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave State half-written in a way readers
        // would misread (pushes are single statements), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends events (in seq order, continuing the stream) and wakes the subscribers.
    pub(super) fn append(&self, events: impl IntoIterator<Item = StoredEvent>) {
        {
            let mut state = self.state();
            for event in events {
                state.bytes += event.json.len();
                state.events.push(event);
            }
        }
        self.version.send_modify(|v| *v += 1);
    }

    /// Marks the stream over; subscribers end after its last event.
    pub(super) fn finish(&self) {
        self.state().finished = Some(Instant::now());
        self.version.send_modify(|v| *v += 1);
    }

    /// Whether the stream has ended.
    pub fn is_finished(&self) -> bool {
        self.state().finished.is_some()
    }

    /// When it ended, if it has.
    pub(super) fn finished_at(&self) -> Option<Instant> {
        self.state().finished
    }

    /// Bytes of event JSON held.
    pub(super) fn bytes(&self) -> usize {
        self.state().bytes
    }

    /// The seq the next event will get (= number of events).
    pub fn next_seq(&self) -> u64 {
        self.state().len()
    }

    /// Waits until the stream holds an event past `seq` (or has ended),
    /// at most `bound`. For a mirror entry a little behind Redis, when a client resumes after
    /// a seq it saw on another instance.
    pub(super) async fn wait_past(&self, seq: u64, bound: std::time::Duration) {
        let mut version = self.version.subscribe();
        let _ = tokio::time::timeout(bound, async {
            loop {
                version.borrow_and_update();
                if self.next_seq() > seq || self.is_finished() {
                    return;
                }
                if version.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
    }

    /// Drops the events (the hub forgot the stream): a subscriber that does not read must
    /// not keep alive what the hub let go. Returns the bytes freed.
    pub(super) fn forget(&self) -> usize {
        let freed = {
            let mut state = self.state();
            state.forgotten = Some(state.len());
            state.events = Vec::new();
            std::mem::take(&mut state.bytes)
        };
        self.version.send_modify(|v| *v += 1);
        freed
    }

    /// Every event so far (for tests and recovery).
    pub fn events(&self) -> Vec<StoredEvent> {
        self.state().events.clone()
    }

    /// Asks the generation task to stop. Returns false when the stream had already ended.
    pub fn cancel(&self) -> bool {
        let live = !self.is_finished();
        self.cancel.cancel();
        live
    }

    /// Marks the stream cut by the memory cap and stops its generation task. Returns false
    /// when it was cut already.
    pub(super) fn cut(&self) -> bool {
        let first = !self.cut.swap(true, Ordering::AcqRel);
        self.cancel.cancel();
        first
    }

    /// Marks the stream taken over by another instance and stops its generation task here.
    pub(super) fn move_away(&self) {
        self.moved.store(true, Ordering::Release);
        self.cancel.cancel();
    }

    /// Whether another instance took the stream over.
    pub(super) fn was_moved(&self) -> bool {
        self.moved.load(Ordering::Acquire)
    }

    /// Whether the memory cap cut the stream.
    pub(super) fn was_cut(&self) -> bool {
        self.cut.load(Ordering::Acquire)
    }

    pub(super) fn cancelled(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Clients following the stream now.
    pub fn subscribers(&self) -> usize {
        *self.subscribers.borrow()
    }

    /// Tells the generation task a client follows the stream elsewhere (on another
    /// instance): its detach timer starts again, as when a local client leaves.
    pub(super) fn touch(&self) {
        self.subscribers.send_modify(|_| {});
    }

    pub(super) fn watch_subscribers(&self) -> watch::Receiver<usize> {
        self.subscribers.subscribe()
    }

    /// What `/admin/streams` shows.
    pub fn info(&self) -> StreamInfo {
        let subscribers = *self.subscribers.borrow();
        let state = self.state();
        StreamInfo {
            id: self.id.clone(),
            owner: self.owner.clone(),
            status: if state.finished.is_some() {
                Status::Finished
            } else {
                Status::Live
            },
            door: self.door,
            route: self.route.clone(),
            seq: state.len(),
            buffer_bytes: state.bytes,
            subscribers,
            detached_ms: state
                .detached_since
                .filter(|_| state.finished.is_none())
                .map(|t| t.elapsed().as_millis() as u64),
            created_ms: self.created_ms,
            recovered: self.recovered,
        }
    }

    /// Follows the stream from just after seq `after` (from the start when None): what is
    /// kept first, then live events as they come. The subscription ends after the stream's
    /// last event. `after` beyond the last event is an error: the client cannot have seen it.
    pub fn subscribe(self: &Arc<Self>, after: Option<u64>) -> Result<Subscription, HubError> {
        let from = match after {
            None => 0,
            Some(after) => {
                let len = self.next_seq();
                if after >= len {
                    return Err(HubError::SeqBeyondEnd {
                        id: self.id.clone(),
                        after,
                        last: len.checked_sub(1),
                    });
                }
                after + 1
            }
        };
        self.subscribers.send_modify(|n| *n += 1);
        self.state().detached_since = None;
        Ok(Subscription {
            entry: Arc::clone(self),
            next: from,
            version: self.version.subscribe(),
        })
    }
}

/// Bytes of event JSON one batch of a subscription holds at most (and at least one event):
/// a door copies a batch into its write, so a subscriber far behind (one that does not read,
/// or resumes from the start) holds this much beyond the hub's shared copy, not the stream.
pub const MAX_BATCH_BYTES: usize = 256 << 10;

/// The `error` code a subscriber gets when the stream it was behind on was forgotten.
pub const FORGOTTEN_CODE: &str = "stream_forgotten";

/// What a subscriber behind on a forgotten stream gets instead of the events it missed: an
/// `error` and a `stream.end` from its next seq on.
fn forgotten_tail(id: &str, next: u64) -> Vec<StoredEvent> {
    let mut stamper = providers::Stamper::resume(id.to_owned(), next);
    providers::AgentEvent::terminal_failure(providers::event::ErrorInfo {
        code: FORGOTTEN_CODE.into(),
        message: "the gateway forgot this stream (its retention ran out or its memory was \
                  needed) before this client read all of it"
            .into(),
        retryable: false,
    })
    .into_iter()
    .map(|event| StoredEvent::of(&stamper.stamp(event)))
    .collect()
}

/// The first events of `events` that fit in [`MAX_BATCH_BYTES`] (never fewer than one).
fn capped_batch(events: &[StoredEvent]) -> Vec<StoredEvent> {
    let mut bytes = 0;
    let n = events
        .iter()
        .position(|e| {
            bytes += e.json.len();
            bytes > MAX_BATCH_BYTES
        })
        .unwrap_or(events.len())
        .max(1);
    events[..n].to_vec()
}

/// A client following one stream. Dropping it unsubscribes (and may start the detach timer).
#[derive(Debug)]
pub struct Subscription {
    entry: Arc<Entry>,
    next: u64,
    version: watch::Receiver<u64>,
}

impl Subscription {
    /// The stream followed.
    pub fn entry(&self) -> &Arc<Entry> {
        &self.entry
    }

    /// Every event after the last one returned that is there now, waiting for at least one
    /// (an empty Vec never comes back); None after the stream's last event.
    pub async fn next_batch(&mut self) -> Option<Vec<StoredEvent>> {
        loop {
            // Mark the current version seen before reading, so an append racing with the read
            // still wakes the wait below.
            self.version.borrow_and_update();
            {
                let state = self.entry.state();
                if let Some(len) = state.forgotten {
                    if self.next >= len {
                        return None;
                    }
                    let tail = forgotten_tail(self.entry.id(), self.next);
                    self.next = len;
                    return Some(tail);
                }
                let len = state.events.len() as u64;
                if self.next < len {
                    let batch = capped_batch(&state.events[self.next as usize..]);
                    self.next += batch.len() as u64;
                    return Some(batch);
                }
                if state.finished.is_some() {
                    return None;
                }
            }
            if self.version.changed().await.is_err() {
                return None;
            }
        }
    }

    /// The subscription as a stream of batches.
    pub fn into_stream(self) -> impl Stream<Item = Vec<StoredEvent>> + Send + 'static {
        futures_util::stream::unfold(self, |mut sub| async move {
            let batch = sub.next_batch().await?;
            Some((batch, sub))
        })
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut left = 0;
        self.entry.subscribers.send_modify(|n| {
            *n = n.saturating_sub(1);
            left = *n;
        });
        if left == 0 {
            self.entry.state().detached_since = Some(Instant::now());
        }
    }
}
