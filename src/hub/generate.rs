//! A stream's generation task: takes the engine's events, stamps them, appends them to the
//! journal and then to the hub, and stops on cancel or when no client came back in time.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use crate::batch::ready_batches;
use providers::event::ErrorInfo;
use providers::{AgentEvent, Stamper};
use tokio::time::Sleep;

use super::entry::{Entry, StoredEvent};
use super::{Hub, LiveSlot, MEMORY_CAP_CODE, MOVED_CODE};
use crate::engine::Events;

/// Events taken from the engine at once (one journal write, one wake-up of the subscribers).
const MAX_BATCH: usize = 256;

/// Scheduler turns the upstream gets to add to a batch (see [`crate::batch`]).
const BATCH_YIELDS: u32 = 2;

/// Runs until the answer ends, is cancelled, is cut by the memory cap, or stays without a
/// client for `detach`; the stream holds `slot` until then.
pub(super) async fn run(
    hub: Arc<Hub>,
    entry: Arc<Entry>,
    mut stamper: Stamper,
    events: Events,
    detach: Duration,
    slot: LiveSlot,
) {
    let mut events = Box::pin(ready_batches(events, MAX_BATCH, BATCH_YIELDS));
    // The tail of a full batch that is part of a tool call, kept for the next batch.
    let mut carry: Vec<AgentEvent> = Vec::new();
    let mut subscribers = entry.watch_subscribers();
    let mut timer: Option<Pin<Box<Sleep>>> =
        (*subscribers.borrow_and_update() == 0).then(|| Box::pin(tokio::time::sleep(detach)));
    loop {
        let outcome = tokio::select! {
            biased;
            () = entry.cancelled().cancelled() => Some(if entry.was_cut() {
                memory_cap()
            } else if entry.was_moved() {
                stop_with(
                    MOVED_CODE,
                    "another gateway instance continues this stream: reconnect to follow it",
                    true,
                )
            } else {
                stop("cancelled", "the stream was cancelled by a client")
            }),
            () = async { if let Some(t) = timer.as_mut() { t.await } }, if timer.is_some() => {
                tracing::info!(stream = entry.id(), "no client came back: cancelling the detached stream");
                Some(stop("detached_timeout", "no client followed the stream within the detach time"))
            }
            changed = subscribers.changed() => {
                if changed.is_ok() {
                    let none = *subscribers.borrow_and_update() == 0;
                    timer = none.then(|| Box::pin(tokio::time::sleep(detach)));
                }
                continue;
            }
            batch = events.next() => match batch {
                None => None,
                Some(items) => {
                    let full = items.len() == MAX_BATCH;
                    let mut out = std::mem::take(&mut carry);
                    out.reserve(items.len());
                    let mut failed = false;
                    for item in items {
                        match item {
                            Ok(event) => out.push(event),
                            Err(e) => {
                                out.extend(AgentEvent::terminal_failure(e.to_error_info()));
                                failed = true;
                                break;
                            }
                        }
                    }
                    if full && !failed {
                        carry = split_open_call(&mut out);
                    }
                    if !publish(&hub, &entry, &mut stamper, out, true).await {
                        Some(memory_cap())
                    } else if failed {
                        None
                    } else {
                        continue;
                    }
                }
            },
        };
        // A cut stream keeps nothing more than its end: the carried events are dropped.
        let cut = entry.was_cut();
        let mut last = if cut {
            Vec::new()
        } else {
            std::mem::take(&mut carry)
        };
        if let Some(terminal) = outcome {
            last.extend(terminal);
        }
        if !publish(&hub, &entry, &mut stamper, last, !cut).await {
            publish(&hub, &entry, &mut stamper, memory_cap().into(), false).await;
        }
        break;
    }
    // Dropping the engine's events here cancels the upstream call if it is still open.
    drop(events);
    hub.finish_shared(&entry).await;
    drop(slot);
}

/// Events of one tool call kept back at most (then the batch goes as it is).
const MAX_CARRY: usize = 64 * MAX_BATCH;

/// Takes off the end of `batch` a tool call it starts but does not end, when it is short
/// enough to keep back: the splicer releases a held call whole in one go, and only the batch
/// cap can cut it. Journaled in two records, a crash between them would leave the client half
/// a call that recovery cannot count as sent (the continuation produces it again, whole).
fn split_open_call(batch: &mut Vec<AgentEvent>) -> Vec<AgentEvent> {
    let mut open: Option<(usize, u32)> = None;
    for (at, event) in batch.iter().enumerate() {
        match event {
            AgentEvent::ToolCallStart { index, .. } if open.is_none() => open = Some((at, *index)),
            AgentEvent::ToolCallEnd { index, .. } | AgentEvent::BlockEnd { index }
                if open.is_some_and(|(_, i)| i == *index) =>
            {
                open = None;
            }
            _ => {}
        }
    }
    match open {
        Some((at, _)) if batch.len() - at <= MAX_CARRY => batch.split_off(at),
        _ => Vec::new(),
    }
}

/// The `error` and `stream.end` of a stream the gateway stops.
fn stop(code: &str, message: &str) -> [AgentEvent; 2] {
    stop_with(code, message, false)
}

fn stop_with(code: &str, message: &str, retryable: bool) -> [AgentEvent; 2] {
    AgentEvent::terminal_failure(ErrorInfo {
        code: code.into(),
        message: message.into(),
        retryable,
    })
}

/// The `error` and `stream.end` of a stream the memory cap ended.
pub(super) fn memory_cap() -> [AgentEvent; 2] {
    stop_with(
        MEMORY_CAP_CODE,
        "the gateway's memory for kept events (streams.max_bytes) is full and this stream kept \
         more than its share: it was ended here, after every event it had kept",
        true,
    )
}

/// Stamps, journals, then hands the events to the subscribers: an event reaches a client
/// only once the journal has it. With `admit`, the memory cap may refuse them
/// ([`Hub::admit`]): then nothing is journaled or kept, `stamper` is set back to the next
/// seq kept, and false comes back (the stream is cut and must end). Without, they are kept
/// past the cap (a stream's last events).
pub(super) async fn publish(
    hub: &Hub,
    entry: &Entry,
    stamper: &mut Stamper,
    events: Vec<AgentEvent>,
    admit: bool,
) -> bool {
    if events.is_empty() {
        return true;
    }
    let stored: Vec<StoredEvent> = events
        .into_iter()
        .map(|event| StoredEvent::of(&stamper.stamp(event)))
        .collect();
    let bytes = stored.iter().map(|e| e.json.len()).sum();
    if !admit {
        hub.add_kept(bytes);
    } else if !hub.admit(entry, bytes) {
        *stamper = Stamper::resume(entry.id().to_owned(), entry.next_seq());
        return false;
    }
    hub.journal_events(entry, &stored).await;
    entry.append(stored);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(index: u32) -> AgentEvent {
        AgentEvent::ToolCallStart {
            index,
            id: format!("call_{index}"),
            name: "f".into(),
            choice: 0,
            extra: None,
        }
    }

    fn delta(index: u32) -> AgentEvent {
        AgentEvent::ToolCallDelta {
            index,
            arguments: "{".into(),
        }
    }

    fn end(index: u32) -> AgentEvent {
        AgentEvent::ToolCallEnd {
            index,
            arguments: "{}".into(),
            truncated: false,
        }
    }

    #[test]
    fn a_call_cut_by_the_batch_cap_waits_for_the_next_batch() {
        let mut batch = vec![
            AgentEvent::Heartbeat,
            start(1),
            delta(1),
            end(1),
            start(2),
            delta(2),
        ];
        let carry = split_open_call(&mut batch);
        assert_eq!(carry, vec![start(2), delta(2)]);
        assert_eq!(batch.len(), 4);
        let mut whole = vec![start(3), delta(3), end(3)];
        assert!(split_open_call(&mut whole).is_empty());
        assert_eq!(whole.len(), 3);
    }
}
