//! Redis pub/sub for one gateway instance: one RESP3 connection whose pushes are routed to
//! bounded per-subscriber queues, channels subscribed while someone listens and unsubscribed
//! when the last listener goes, and every subscription renewed after a reconnect.
//!
//! Pub/sub loses what is published while a subscriber is not connected, so the bus never
//! claims it was delivered: a [`BusMessage::Reset`] tells a listener "messages may have been
//! missed before this point; read the state itself again" — after every (re)subscription,
//! after a disconnection and when its queue overflowed. Listeners keep the truth in keys
//! (streams, hashes) and use the bus only to learn early that it changed.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{PushInfo, PushKind, Value};
use tokio::sync::{Notify, mpsc};

use super::StateError;

/// What a listener receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusMessage {
    /// A message published on the channel.
    Message(Bytes),
    /// Messages may have been missed before this point: read the state again.
    Reset,
}

/// One listener's queue and whether it overflowed.
#[derive(Debug)]
struct Route {
    id: u64,
    tx: mpsc::Sender<BusMessage>,
    lagged: Arc<AtomicBool>,
}

/// Channels and their listeners, and the channels whose subscription must be brought in line
/// with them.
#[derive(Debug, Default)]
struct Table {
    routes: HashMap<String, Vec<Route>>,
    dirty: HashSet<String>,
}

#[derive(Debug, Default)]
struct Shared {
    table: Mutex<Table>,
    /// Wakes the task that subscribes and unsubscribes.
    changed: Notify,
    next_id: AtomicU64,
}

impl Shared {
    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Routes one push from the connection.
    fn push(&self, info: PushInfo) {
        match info.kind {
            PushKind::Message | PushKind::SMessage => {
                let mut data = info.data.into_iter();
                let (Some(channel), Some(payload)) = (data.next(), data.next()) else {
                    return;
                };
                let (Some(channel), Some(payload)) = (text(channel), bytes(payload)) else {
                    return;
                };
                let table = self.table();
                for route in table.routes.get(&channel).into_iter().flatten() {
                    deliver(route, BusMessage::Message(payload.clone()));
                }
            }
            PushKind::Subscribe | PushKind::SSubscribe => {
                let Some(channel) = info.data.into_iter().next().and_then(text) else {
                    return;
                };
                let table = self.table();
                for route in table.routes.get(&channel).into_iter().flatten() {
                    deliver(route, BusMessage::Reset);
                }
            }
            PushKind::Disconnection => {
                let table = self.table();
                for route in table.routes.values().flatten() {
                    deliver(route, BusMessage::Reset);
                }
            }
            _ => {}
        }
    }
}

/// Queues `message` for `route`; a full queue marks it lagged (its next receive is a reset).
fn deliver(route: &Route, message: BusMessage) {
    if route.tx.try_send(message).is_err() {
        route.lagged.store(true, Ordering::Relaxed);
    }
}

fn text(value: Value) -> Option<String> {
    bytes(value).and_then(|b| String::from_utf8(b.to_vec()).ok())
}

fn bytes(value: Value) -> Option<Bytes> {
    match value {
        Value::BulkString(b) => Some(Bytes::from(b)),
        Value::SimpleString(s) => Some(Bytes::from(s)),
        _ => None,
    }
}

/// The pub/sub side of the Redis connection.
pub struct Bus {
    shared: Arc<Shared>,
    /// Ends the subscription task when the bus is dropped.
    stop: tokio_util::sync::CancellationToken,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus").finish_non_exhaustive()
    }
}

impl Bus {
    /// The bus over `client` (a RESP3 client); starts the task that keeps subscriptions in
    /// line with listeners. Call inside a tokio runtime.
    pub(super) fn new(
        client: redis::Client,
        config: ConnectionManagerConfig,
        timeout: Duration,
    ) -> Result<Bus, StateError> {
        let shared = Arc::new(Shared::default());
        let pushes = Arc::clone(&shared);
        let config =
            config
                .set_automatic_resubscription()
                .set_push_sender(move |info: PushInfo| {
                    pushes.push(info);
                    Ok::<(), std::convert::Infallible>(())
                });
        let manager = ConnectionManager::new_lazy_with_config(client, config).map_err(|e| {
            StateError::Url {
                reason: format!("{:?}", e.kind()),
            }
        })?;
        let stop = tokio_util::sync::CancellationToken::new();
        tokio::spawn(keep_subscriptions(
            Arc::clone(&shared),
            manager,
            timeout,
            stop.clone(),
        ));
        Ok(Bus { shared, stop })
    }

    /// Listens on `channel` with a queue of `capacity` messages (overflow: a reset). The
    /// subscription is made in the background; its confirmation arrives as a reset.
    pub fn subscribe(&self, channel: String, capacity: usize) -> BusReceiver {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let lagged = Arc::new(AtomicBool::new(false));
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut table = self.shared.table();
            let routes = table.routes.entry(channel.clone()).or_default();
            routes.push(Route {
                id,
                tx,
                lagged: Arc::clone(&lagged),
            });
            if routes.len() == 1 {
                table.dirty.insert(channel.clone());
            }
        }
        self.shared.changed.notify_one();
        BusReceiver {
            rx,
            lagged,
            id,
            channel,
            shared: Arc::clone(&self.shared),
        }
    }

    /// Publishes `payload` on `channel` (PUBLISH; listeners connected now get it).
    pub async fn publish(
        &self,
        redis: &super::Redis,
        channel: &str,
        payload: &[u8],
    ) -> Result<(), StateError> {
        redis
            .query::<()>("PUBLISH", redis::cmd("PUBLISH").arg(channel).arg(payload))
            .await
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// One listener: receives messages and resets; unsubscribes the channel when it is the last.
#[derive(Debug)]
pub struct BusReceiver {
    rx: mpsc::Receiver<BusMessage>,
    lagged: Arc<AtomicBool>,
    id: u64,
    channel: String,
    shared: Arc<Shared>,
}

impl BusReceiver {
    /// The next message, or a reset. None only when the bus is gone.
    pub async fn recv(&mut self) -> Option<BusMessage> {
        if self.lagged.swap(false, Ordering::Relaxed) {
            // Whatever is queued predates the loss: the reset covers it.
            while self.rx.try_recv().is_ok() {}
            return Some(BusMessage::Reset);
        }
        let message = self.rx.recv().await?;
        if self.lagged.swap(false, Ordering::Relaxed) {
            while self.rx.try_recv().is_ok() {}
            return Some(BusMessage::Reset);
        }
        Some(message)
    }

    /// The channel listened to.
    pub fn channel(&self) -> &str {
        &self.channel
    }
}

impl Drop for BusReceiver {
    fn drop(&mut self) {
        let mut table = self.shared.table();
        let empty = match table.routes.get_mut(&self.channel) {
            Some(routes) => {
                routes.retain(|r| r.id != self.id);
                routes.is_empty()
            }
            None => false,
        };
        if empty {
            table.routes.remove(&self.channel);
            table.dirty.insert(self.channel.clone());
            drop(table);
            self.shared.changed.notify_one();
        }
    }
}

/// Pause after a failed SUBSCRIBE/UNSUBSCRIBE before trying again (Redis is down).
const RETRY: Duration = Duration::from_millis(250);

/// Subscribes channels that gained a listener and unsubscribes those that lost the last, one
/// at a time in this one task (so a quick drop-and-listen never ends unsubscribed).
async fn keep_subscriptions(
    shared: Arc<Shared>,
    mut manager: ConnectionManager,
    timeout: Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut subscribed: HashSet<String> = HashSet::new();
    loop {
        let notified = shared.changed.notified();
        let dirty: Vec<(String, bool)> = {
            let mut table = shared.table();
            let dirty = std::mem::take(&mut table.dirty);
            dirty
                .into_iter()
                .map(|c| {
                    let wanted = table.routes.contains_key(&c);
                    (c, wanted)
                })
                .collect()
        };
        let mut failed = Vec::new();
        for (channel, wanted) in dirty {
            let result = match (wanted, subscribed.contains(&channel)) {
                (true, false) => tokio::time::timeout(timeout, manager.subscribe(&channel)).await,
                (false, true) => tokio::time::timeout(timeout, manager.unsubscribe(&channel)).await,
                _ => continue,
            };
            match result {
                Ok(Ok(())) => {
                    if wanted {
                        subscribed.insert(channel);
                    } else {
                        subscribed.remove(&channel);
                    }
                }
                _ => failed.push(channel),
            }
        }
        let retry = !failed.is_empty();
        if retry {
            shared.table().dirty.extend(failed);
        }
        let wait = if retry { RETRY } else { Duration::from_secs(5) };
        tokio::select! {
            () = stop.cancelled() => return,
            () = notified, if !retry => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}
