//! What waits to be written on one connection: a bounded queue per followed stream (a
//! *lane*), taken round-robin by the writer, one WebSocket message at a time.
//!
//! Each lane holds at most `buffer_events` events (each already encoded: one message, or its
//! shards), and all lanes of a connection together at most `buffer_bytes` bytes of encoded
//! messages (an event larger than that still goes, alone). A lane that is full, or finds the
//! connection's bytes spent, makes its stream's task wait, and that task stops pulling from
//! the hub: the events wait there (nothing is lost) while every other lane keeps its turn.
//! The writer takes one message from each lane that has one, in turn, so a stream that
//! produces fast (or sends a 1 MiB event as many shards) delays another stream's next
//! message by at most one message per other lane.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::ws::Message;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};

/// One event's messages (or a `started` / `error` frame): queued together, written in order.
pub(super) type Batch = Vec<Message>;

/// A batch and its share of the connection's bytes, given back once it is all written.
#[derive(Debug)]
struct Queued {
    messages: Batch,
    bytes: OwnedSemaphorePermit,
}

/// The sending side of a lane: its stream's task pushes here.
#[derive(Debug)]
pub(super) struct LaneSender {
    tx: mpsc::Sender<Queued>,
}

/// Every lane of a connection, and the writer's wake-up.
#[derive(Debug)]
pub(super) struct Outbox {
    lanes: Mutex<VecDeque<Lane>>,
    /// Notified after every push, so a writer with nothing to write wakes up.
    wake: Notify,
    /// Bytes of encoded messages the lanes may hold together (`buffer_bytes`); closed with
    /// the outbox, which fails the pushes waiting for room.
    bytes: Arc<Semaphore>,
    /// The most one batch takes of [`Outbox::bytes`]: all of them.
    max_bytes: u32,
}

/// The writer's side of a lane.
#[derive(Debug)]
struct Lane {
    rx: mpsc::Receiver<Queued>,
    /// The rest of the batch being written (shards of one event stay in order).
    current: VecDeque<Message>,
    /// The bytes of the batch being written, given back when its last message is taken.
    held: Option<OwnedSemaphorePermit>,
}

impl Outbox {
    /// An outbox whose lanes hold at most `max_bytes` bytes together (at least 1; at most
    /// 4 GiB, what a semaphore hands out at once).
    pub(super) fn new(max_bytes: usize) -> Outbox {
        let max_bytes = u32::try_from(max_bytes).unwrap_or(u32::MAX).max(1);
        Outbox {
            lanes: Mutex::default(),
            wake: Notify::new(),
            bytes: Arc::new(Semaphore::new(max_bytes as usize)),
            max_bytes,
        }
    }

    fn lanes(&self) -> MutexGuard<'_, VecDeque<Lane>> {
        // Operations on the ring are single steps: a poisoned lock still holds a valid ring.
        self.lanes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new lane of at most `capacity` batches (at least one).
    pub(super) fn open(&self, capacity: usize) -> LaneSender {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        self.lanes().push_back(Lane {
            rx,
            current: VecDeque::new(),
            held: None,
        });
        LaneSender { tx }
    }

    /// The next message, round-robin over the lanes (None when every lane is empty). A lane
    /// whose sender is gone and whose queue is drained is dropped.
    pub(super) fn next_message(&self) -> Option<Message> {
        let mut lanes = self.lanes();
        for _ in 0..lanes.len() {
            let mut lane = lanes.pop_front()?;
            if lane.current.is_empty() {
                match lane.rx.try_recv() {
                    Ok(queued) => {
                        lane.current = queued.messages.into();
                        lane.held = Some(queued.bytes);
                    }
                    Err(mpsc::error::TryRecvError::Empty) => {
                        lanes.push_back(lane);
                        continue;
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => continue,
                }
            }
            let message = lane.current.pop_front();
            if lane.current.is_empty() {
                // Handed to the writer, whose own buffer is capped apart.
                lane.held = None;
            }
            lanes.push_back(lane);
            if message.is_some() {
                return message;
            }
        }
        None
    }

    /// Drops every lane (the connection is over): pending messages are discarded and the
    /// lanes' producers get `false` from [`LaneSender::push`].
    pub(super) fn close(&self) {
        self.bytes.close();
        self.lanes().clear();
    }

    /// Waits until some lane may have something (or was closed).
    pub(super) async fn woken(&self) {
        self.wake.notified().await;
    }

    /// Lanes still open or holding messages.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lanes().len()
    }

    /// Bytes the lanes may still take.
    #[cfg(test)]
    fn bytes_free(&self) -> usize {
        self.bytes.available_permits()
    }
}

/// The bytes of a batch's messages as they go on the wire (frame headers aside).
fn batch_bytes(batch: &Batch) -> usize {
    batch
        .iter()
        .map(|m| match m {
            Message::Text(t) => t.len(),
            Message::Binary(b) | Message::Ping(b) | Message::Pong(b) => b.len(),
            Message::Close(_) => 0,
        })
        .sum()
}

impl LaneSender {
    /// Queues one batch, waiting while the lane is full or the connection's bytes are spent.
    /// False when the connection is gone.
    pub(super) async fn push(&self, outbox: &Outbox, batch: Batch) -> bool {
        let wanted = u32::try_from(batch_bytes(&batch))
            .unwrap_or(u32::MAX)
            .clamp(1, outbox.max_bytes);
        let Ok(bytes) = Arc::clone(&outbox.bytes).acquire_many_owned(wanted).await else {
            return false;
        };
        let sent = self
            .tx
            .send(Queued {
                messages: batch,
                bytes,
            })
            .await
            .is_ok();
        outbox.wake.notify_one();
        sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Message {
        Message::Text(s.into())
    }

    fn drain(outbox: &Outbox) -> Vec<String> {
        std::iter::from_fn(|| outbox.next_message())
            .map(|m| match m {
                Message::Text(t) => t.as_str().to_owned(),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[tokio::test]
    async fn lanes_take_turns_one_message_at_a_time() {
        let outbox = Outbox::new(1 << 20);
        let a = outbox.open(8);
        let b = outbox.open(8);
        // a: two events, the first sharded in three; b: two single-message events.
        assert!(
            a.push(&outbox, vec![text("a0.0"), text("a0.1"), text("a0.2")])
                .await
        );
        assert!(a.push(&outbox, vec![text("a1")]).await);
        assert!(b.push(&outbox, vec![text("b0")]).await);
        assert!(b.push(&outbox, vec![text("b1")]).await);
        assert_eq!(
            drain(&outbox),
            ["a0.0", "b0", "a0.1", "b1", "a0.2", "a1"],
            "round-robin by message, each lane in its own order"
        );
    }

    #[tokio::test]
    async fn a_full_lane_waits_while_others_go_on() {
        let outbox = std::sync::Arc::new(Outbox::new(1 << 20));
        let slow = outbox.open(2);
        let other = outbox.open(2);
        assert!(slow.push(&outbox, vec![text("s0")]).await);
        assert!(slow.push(&outbox, vec![text("s1")]).await);
        // The third push waits for room.
        let blocked = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            slow.push(&outbox, vec![text("s2")]),
        )
        .await;
        assert!(blocked.is_err(), "a full lane must make its producer wait");
        assert!(other.push(&outbox, vec![text("o0")]).await);
        assert_eq!(drain(&outbox), ["s0", "o0", "s1"]);
    }

    #[tokio::test]
    async fn closed_lanes_are_drained_then_dropped() {
        let outbox = Outbox::new(1 << 20);
        let a = outbox.open(4);
        assert!(a.push(&outbox, vec![text("last")]).await);
        drop(a);
        assert_eq!(outbox.len(), 1);
        assert_eq!(drain(&outbox), ["last"]);
        assert_eq!(outbox.next_message(), None);
        assert_eq!(outbox.len(), 0, "a drained, closed lane leaves the ring");
    }

    #[tokio::test]
    async fn lanes_share_the_connections_bytes() {
        let outbox = std::sync::Arc::new(Outbox::new(100));
        let a = outbox.open(8);
        let b = outbox.open(8);
        assert!(a.push(&outbox, vec![text(&"a".repeat(60))]).await);
        assert_eq!(outbox.bytes_free(), 40);
        // b's 50 bytes do not fit beside a's 60: it waits, with room in its own lane.
        let waiting = {
            let outbox = std::sync::Arc::clone(&outbox);
            tokio::spawn(async move { b.push(&outbox, vec![text(&"b".repeat(50))]).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "over the connection's bytes: wait");
        assert_eq!(drain(&outbox).len(), 1, "a's batch is written...");
        assert!(waiting.await.unwrap(), "...which makes room for b's");
        assert_eq!(outbox.bytes_free(), 50);
        assert_eq!(drain(&outbox).len(), 1);
        assert_eq!(outbox.bytes_free(), 100);
        // A batch larger than all the bytes goes alone, taking them all.
        assert!(a.push(&outbox, vec![text(&"a".repeat(70)); 3]).await);
        assert_eq!(outbox.bytes_free(), 0);
        assert_eq!(drain(&outbox).len(), 3);
        assert_eq!(outbox.bytes_free(), 100, "all given back once written");
    }

    #[tokio::test]
    async fn a_push_waiting_for_bytes_fails_when_the_connection_closes() {
        let outbox = std::sync::Arc::new(Outbox::new(10));
        let a = outbox.open(8);
        assert!(a.push(&outbox, vec![text("0123456789")]).await);
        let waiting = {
            let outbox = std::sync::Arc::clone(&outbox);
            tokio::spawn(async move { a.push(&outbox, vec![text("x")]).await })
        };
        tokio::task::yield_now().await;
        outbox.close();
        assert!(!waiting.await.unwrap());
    }

    #[tokio::test]
    async fn pushing_to_a_dropped_outbox_fails() {
        let outbox = Outbox::new(1 << 20);
        let a = outbox.open(1);
        outbox.close();
        assert!(!a.push(&outbox, vec![text("x")]).await);
    }
}
