//! Following on this instance a stream another instance generates: a *mirror* entry, the
//! same [`Entry`] the doors subscribe to, filled from Redis by one task per stream.
//!
//! The task listens on the stream's tail channel first, then reads the Redis Stream from the
//! entry's next seq, then applies what the channel brings (dedupe by seq). On a gap, a
//! [`BusMessage::Reset`] (a (re)subscription, a disconnection, a full queue) or every
//! `lease_ms / 3` without news, it reads the Redis Stream again from the next seq: the channel
//! only says early that something changed, Redis's keys are the truth. It finishes the entry
//! at `stream.end`; with no client for `detach_ms` it stops and the entry is let go.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use providers::{AgentEvent, Stamper};
use tokio::task::JoinHandle;
use tokio::time::Sleep;
use tokio_util::sync::CancellationToken;

use super::super::entry::{Entry, FORGOTTEN_CODE, StoredEvent};
use super::super::{Hub, HubError};
use super::{Cluster, RANGE_PAGE, TAIL_QUEUE, kept_from};
use crate::state::{BusMessage, StateError};

/// The mirror tasks running, by hub key: a takeover stops one before generating into its
/// entry.
#[derive(Debug, Default)]
pub(in crate::hub) struct Mirrors {
    tasks: Mutex<HashMap<String, (CancellationToken, JoinHandle<()>)>>,
}

impl Mirrors {
    fn tasks(&self) -> MutexGuard<'_, HashMap<String, (CancellationToken, JoinHandle<()>)>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn contains(&self, key: &str) -> bool {
        self.tasks().contains_key(key)
    }

    pub(super) fn len(&self) -> usize {
        self.tasks().len()
    }

    /// Stops the mirror of `key`, if any, and waits until it no longer touches its entry.
    pub(super) async fn stop(&self, key: &str) {
        let task = self.tasks().remove(key);
        if let Some((stop, handle)) = task {
            stop.cancel();
            let _ = handle.await;
        }
    }

    fn forget(&self, key: &str) {
        self.tasks().remove(key);
    }
}

/// What a read of the Redis Stream found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Filled {
    /// Every event Redis has now is in the entry.
    UpToDate,
    /// The entry holds the stream's `stream.end`.
    Ended,
    /// Redis no longer has the next event (trimmed by MAXLEN or expired): the entry was ended
    /// with `stream_forgotten`.
    Forgotten,
    /// The memory cap refused the events: the entry was ended with `memory_cap`.
    Cut,
}

/// Reads the Redis Stream into `entry` from its next seq. With `counted`, the events count
/// against `streams.max_bytes` as they come ([`Hub::admit`]); without, the caller counts the
/// entry when it puts it in the map.
pub(super) async fn fill(
    hub: &Hub,
    cluster: &Cluster,
    entry: &Entry,
    counted: bool,
) -> Result<Filled, StateError> {
    // Bounded: MAXLEN events at most, a page at a time.
    for _ in 0..=super::MAX_STREAM_EVENTS as usize / RANGE_PAGE {
        let next = entry.next_seq();
        let page = cluster.range(entry.key(), next).await?;
        let full = page.len() == RANGE_PAGE;
        let trimmed = page.first().is_some_and(|(seq, _)| *seq > next);
        let kept = kept_from(next, page);
        if kept.is_empty() {
            if trimmed {
                end_with(hub, entry, forgotten()).await;
                return Ok(Filled::Forgotten);
            }
            return Ok(Filled::UpToDate);
        }
        match apply(hub, entry, kept, counted).await {
            Filled::UpToDate if full => continue,
            other => return Ok(other),
        }
    }
    Ok(Filled::UpToDate)
}

/// Appends `kept` (which follows the entry's last event) to a mirror entry.
async fn apply(hub: &Hub, entry: &Entry, kept: Vec<StoredEvent>, counted: bool) -> Filled {
    let ended = kept.last().is_some_and(|e| e.kind == "stream.end");
    let bytes = kept.iter().map(|e| e.json.len()).sum();
    if counted && !hub.admit(entry, bytes) {
        end_with(hub, entry, super::super::generate::memory_cap().into()).await;
        return Filled::Cut;
    }
    entry.append(kept);
    if ended {
        Filled::Ended
    } else {
        Filled::UpToDate
    }
}

/// Ends a mirror entry here with `events` (stamped from its next seq).
async fn end_with(hub: &Hub, entry: &Entry, events: Vec<AgentEvent>) {
    let mut stamper = Stamper::resume(entry.id().to_owned(), entry.next_seq());
    super::super::generate::publish(hub, entry, &mut stamper, events, false).await;
}

fn forgotten() -> Vec<AgentEvent> {
    AgentEvent::terminal_failure(providers::event::ErrorInfo {
        code: FORGOTTEN_CODE.into(),
        message: "Redis no longer holds this stream's earlier events (MAXLEN or its retention)"
            .into(),
        retryable: false,
    })
    .into()
}

/// The stream of hub key `key` (client id `id`) from Redis, followed here from now on.
pub(in crate::hub) async fn follow(
    hub: &Arc<Hub>,
    key: &str,
    id: &str,
) -> Result<Arc<Entry>, HubError> {
    let unknown = || HubError::UnknownStream { id: id.to_owned() };
    let Some(cluster) = hub.cluster.as_ref() else {
        return Err(unknown());
    };
    let unavailable = |e: StateError| {
        tracing::warn!(stream = id, error = %e, "state: a stream not held here cannot be looked up in Redis");
        HubError::StoreUnavailable
    };
    let Some(meta) = cluster.meta(key).await.map_err(unavailable)? else {
        return Err(unknown());
    };
    let entry = Arc::new(Entry::new(
        key.to_owned(),
        meta.door,
        meta.route,
        meta.created_ms,
        false,
    ));
    // The events so far, before any client subscribes: a resume after seq N needs them.
    let filled = fill(hub, cluster, &entry, false)
        .await
        .map_err(unavailable)?;
    let done = filled != Filled::UpToDate;
    if done {
        entry.finish();
    }
    let (entry, inserted) = hub.insert_if_absent(entry);
    if inserted && !done {
        start(hub, cluster, &entry);
    }
    Ok(entry)
}

/// Starts the mirror task of `entry` (already in the map).
pub(super) fn start(hub: &Arc<Hub>, cluster: &Cluster, entry: &Arc<Entry>) {
    let stop = CancellationToken::new();
    let mut tasks = cluster.mirrors.tasks();
    if tasks.contains_key(entry.key()) {
        return;
    }
    let handle = tokio::spawn(run(
        Arc::downgrade(hub),
        Arc::clone(entry),
        stop.clone(),
        Duration::from_millis(hub.config.detach_ms),
    ));
    tasks.insert(entry.key().to_owned(), (stop, handle));
}

async fn run(hub: Weak<Hub>, entry: Arc<Entry>, stop: CancellationToken, detach: Duration) {
    let Some(mut rx) = hub.upgrade().and_then(|hub| {
        let cluster = hub.cluster.as_ref()?;
        let channel = cluster.key(entry.key(), "tail");
        Some(cluster.redis.bus().subscribe(channel, TAIL_QUEUE))
    }) else {
        return;
    };
    let poll = hub
        .upgrade()
        .and_then(|h| h.cluster.as_ref().map(|c| c.redis.lease() / 3))
        .unwrap_or(Duration::from_secs(1));
    let mut tick = tokio::time::interval(poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut subscribers = entry.watch_subscribers();
    let mut timer: Option<Pin<Box<Sleep>>> =
        (*subscribers.borrow_and_update() == 0).then(|| Box::pin(tokio::time::sleep(detach)));
    let mut end_hint = false;
    let mut marked = tokio::time::Instant::now();
    loop {
        // Its owner must know a client follows here (else its detach timer would end the
        // stream): every `lease_ms / 3` while one does, however busy the tail is.
        if entry.subscribers() > 0 && marked.elapsed() >= poll {
            marked = tokio::time::Instant::now();
            if let Some(hub) = hub.upgrade()
                && let Some(cluster) = hub.cluster.as_ref()
            {
                let _ = cluster.mark_followed(entry.key()).await;
            }
        }
        let (read, payload) = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            () = entry.cancelled().cancelled(), if entry.was_cut() => {
                if let Some(hub) = hub.upgrade() {
                    end_with(&hub, &entry, super::super::generate::memory_cap().into()).await;
                    hub.finish_mirror(&entry);
                    forget_task(&hub, &entry);
                }
                return;
            }
            () = async { if let Some(t) = timer.as_mut() { t.await } }, if timer.is_some() => {
                if let Some(hub) = hub.upgrade() {
                    hub.let_go(&entry, true);
                    forget_task(&hub, &entry);
                }
                return;
            }
            changed = subscribers.changed() => {
                if changed.is_ok() {
                    let none = *subscribers.borrow_and_update() == 0;
                    timer = none.then(|| Box::pin(tokio::time::sleep(detach)));
                    if !none {
                        // A client arrived: the owner hears of it now, not a tick later.
                        marked = tokio::time::Instant::now() - poll;
                    }
                }
                continue;
            }
            message = rx.recv() => match message {
                None => return,
                Some(BusMessage::Reset) => (true, None),
                Some(BusMessage::Message(payload)) => (false, Some(payload)),
            },
            _ = tick.tick() => (true, None),
        };
        let Some(hub) = hub.upgrade() else { return };
        let Some(cluster) = hub.cluster.as_ref() else {
            return;
        };
        let mut filled = Filled::UpToDate;
        let mut read = read;
        if let Some(payload) = payload {
            if payload.as_ref() == b"end" {
                end_hint = true;
                read = true;
            } else {
                match parse_tail(&entry, &payload) {
                    Some(kept) if !kept.is_empty() => {
                        filled = apply(&hub, &entry, kept, true).await;
                    }
                    Some(_) => {}
                    // A gap (or a payload that does not parse): read Redis.
                    None => read = true,
                }
            }
        }
        if read && filled == Filled::UpToDate {
            match fill(&hub, cluster, &entry, true).await {
                Ok(f) => filled = f,
                // Redis is not answering: the next tick or reset reads again.
                Err(_) => continue,
            }
            if filled == Filled::UpToDate
                && end_hint
                && matches!(cluster.meta(entry.key()).await, Ok(Some(m)) if m.ended)
            {
                filled = Filled::Ended;
            }
        }
        if filled != Filled::UpToDate {
            hub.finish_mirror(&entry);
            forget_task(&hub, &entry);
            return;
        }
    }
}

fn forget_task(hub: &Hub, entry: &Entry) {
    if let Some(cluster) = hub.cluster.as_ref() {
        cluster.mirrors.forget(entry.key());
    }
}

/// The events of a tail message (`FIRST\nJSON\nJSON…`) that follow the entry's last one;
/// None when they start past it (a gap: read Redis) or do not parse.
pub(super) fn parse_tail(entry: &Entry, payload: &[u8]) -> Option<Vec<StoredEvent>> {
    let mut lines = payload.split(|b| *b == b'\n');
    let first: u64 = std::str::from_utf8(lines.next()?).ok()?.parse().ok()?;
    let next = entry.next_seq();
    if first > next {
        return None;
    }
    let events: Vec<(u64, bytes::Bytes)> = lines
        .enumerate()
        .map(|(i, json)| (first + i as u64, bytes::Bytes::copy_from_slice(json)))
        .collect();
    let total = events.len() as u64;
    let kept = kept_from(next, events);
    // Every event at or past `next` must have been taken, else something is off: read Redis.
    if first + total > next && kept.len() as u64 != first + total - next {
        return None;
    }
    Some(kept)
}
