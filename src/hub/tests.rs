//! The hub's retention and caps: the memory cap forgets finished streams oldest first, then
//! ends a live stream over its share; the live caps refuse a stream over them; what the hub
//! forgets stays forgotten across a restart and is freed even from a subscriber behind it.

use std::sync::Arc;

use bytes::Bytes;
use providers::Dialect;

use super::entry::{Entry, StoredEvent};
use super::{Hub, HubError, LiveScope, LiveSlot, StreamsConfig};
use crate::engine::Engine;
use crate::journal::OwnedRecord;

fn event(bytes: usize) -> StoredEvent {
    // The journal's recovery parses events: a real envelope, padded to the size wanted.
    let head = r#"{"stream":"s","seq":0,"type":"text.delta","index":0,"text":""#;
    let pad = "x".repeat(bytes.saturating_sub(head.len() + 2));
    StoredEvent {
        seq: 0,
        kind: "text.delta",
        json: Bytes::from(format!("{head}{pad}\"}}")),
    }
}

/// A stream of one event of `bytes` bytes, journaled when the hub has a journal.
async fn stream(hub: &Arc<Hub>, id: &str, bytes: usize, finish: bool) -> Arc<Entry> {
    let entry = Arc::new(Entry::new(
        id.into(),
        Dialect::OpenAi,
        "p/m".into(),
        0,
        false,
    ));
    let stored = event(bytes);
    if let Some(persist) = &hub.persist {
        persist
            .append(OwnedRecord::Open {
                stream: id.to_owned(),
                created_ms: 0,
                door: "openai",
                body: Bytes::from_static(b"{}"),
                forward: Vec::new(),
                route: "p/m".into(),
            })
            .await;
    }
    hub.journal_events(&entry, std::slice::from_ref(&stored))
        .await;
    entry.append([stored]);
    hub.insert(Arc::clone(&entry));
    if finish {
        hub.finish(&entry);
        // Distinct end times: eviction goes by which ended first.
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    entry
}

fn config(max_bytes: usize) -> StreamsConfig {
    let mut config = StreamsConfig {
        max_bytes,
        ..StreamsConfig::default()
    };
    config.journal.enabled = false;
    config
}

fn engine() -> Arc<Engine> {
    Arc::new(Engine::new(crate::config::Config::default()).unwrap())
}

#[tokio::test]
async fn over_the_cap_the_streams_that_ended_first_go_first() {
    let hub = Hub::open(config(250), &engine()).unwrap();
    for id in ["a", "b", "c"] {
        stream(&hub, id, 100, true).await;
    }
    hub.sweep();
    assert!(
        hub.get(None, "a").is_err(),
        "the oldest finished stream is forgotten"
    );
    assert!(hub.get(None, "b").is_ok() && hub.get(None, "c").is_ok());
    assert_eq!(hub.stats().evicted, 1);
    assert!(hub.stats().buffer_bytes <= 250);
}

#[tokio::test]
async fn the_sweep_forgets_only_finished_streams() {
    let hub = Hub::open(config(250), &engine()).unwrap();
    stream(&hub, "done", 100, true).await;
    let live = stream(&hub, "live", 1000, false).await;
    hub.sweep();
    assert!(hub.get(None, "done").is_err());
    assert_eq!(hub.get(None, "live").unwrap().next_seq(), 1);
    assert!(!live.is_finished());
}

#[tokio::test]
async fn what_the_cap_forgot_does_not_come_back_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(250);
    config.journal.enabled = true;
    config.journal.dir = dir.path().to_owned();
    let engine = engine();
    {
        let hub = Hub::open(config.clone(), &engine).unwrap();
        for id in ["a", "b", "c"] {
            stream(&hub, id, 100, true).await;
        }
        hub.sweep();
    }
    let hub = Hub::open(config, &engine).unwrap();
    assert!(hub.get(None, "a").is_err(), "forgotten in the journal too");
    for id in ["b", "c"] {
        let entry = hub.get(None, id).unwrap();
        assert!(entry.is_finished(), "{id}");
        assert_eq!(entry.events()[0].json, event(100).json);
    }
}

#[tokio::test]
async fn an_id_reused_after_it_was_forgotten_is_the_new_stream_after_a_restart() {
    for segment_bytes in [64, 1 << 20] {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config(usize::MAX);
        config.retention_ms = 0; // every finished stream is forgotten at the next sweep
        config.journal.enabled = true;
        config.journal.dir = dir.path().to_owned();
        config.journal.segment_bytes = segment_bytes;
        let engine = engine();
        {
            let hub = Hub::open(config.clone(), &engine).unwrap();
            // Each round's stream is told apart by its event's size.
            for round in 1..=4 {
                stream(&hub, "reused", 100 * round, true).await;
                hub.sweep();
                assert!(
                    hub.get(None, "reused").is_err(),
                    "{segment_bytes}: forgotten"
                );
            }
            stream(&hub, "reused", 1000, true).await;
        }
        let hub = Hub::open(config, &engine).unwrap();
        let entry = hub.get(None, "reused").unwrap();
        assert_eq!(entry.events().len(), 1, "{segment_bytes}");
        assert_eq!(entry.events()[0].json, event(1000).json, "{segment_bytes}");
        assert!(entry.is_finished(), "{segment_bytes}");
        let journal = hub.journal_stats().unwrap();
        assert!(
            journal.segments <= 3,
            "{segment_bytes}: the forgotten rounds' segments were deleted: {journal:?}"
        );
    }
}

/// Random reservations and releases against a model of the two live caps: every reserve is
/// refused exactly when the model is at a cap, with that cap's scope.
#[test]
fn live_caps_refuse_exactly_at_the_total_and_per_key_counts() {
    let owners = [None, Some("a"), Some("b"), Some("c")];
    for seed in 0..200 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut config = config(1 << 20);
        config.max_live = rng.usize(0..12);
        config.max_live_per_key = rng.usize(0..5);
        let live = super::capacity::LiveCounts::new(config.max_live, config.max_live_per_key);
        let mut held: Vec<(Option<&str>, LiveSlot)> = Vec::new();
        for step in 0..200 {
            if rng.u8(..3) == 0 && !held.is_empty() {
                held.swap_remove(rng.usize(..held.len()));
                continue;
            }
            let owner = owners[rng.usize(..owners.len())];
            let total = held.len();
            let mine = held
                .iter()
                .filter(|(o, _)| owner.is_some() && *o == owner)
                .count();
            let want = if config.max_live > 0 && total >= config.max_live {
                Err((LiveScope::Gateway, config.max_live))
            } else if owner.is_some()
                && config.max_live_per_key > 0
                && mine >= config.max_live_per_key
            {
                Err((LiveScope::Key, config.max_live_per_key))
            } else {
                Ok(())
            };
            match (live.reserve(owner), want) {
                (Ok(slot), Ok(())) => held.push((owner, slot)),
                (Err(got), Err(want)) => assert_eq!(got, want, "seed {seed} step {step}"),
                (got, want) => panic!("seed {seed} step {step}: {got:?} but want {want:?}"),
            }
            assert_eq!(live.total(), held.len(), "seed {seed} step {step}");
        }
    }
}

#[tokio::test]
async fn the_hub_refuses_over_a_live_cap_and_takes_a_stream_again_once_one_ended() {
    let mut config = config(1 << 20);
    config.max_live = 3;
    config.max_live_per_key = 2;
    let hub = Hub::open(config, &engine()).unwrap();
    let a = hub.reserve(Some("a")).unwrap();
    let _a2 = hub.reserve(Some("a")).unwrap();
    assert_eq!(
        hub.reserve(Some("a")).unwrap_err(),
        HubError::TooManyLive {
            scope: LiveScope::Key,
            limit: 2
        }
    );
    let _b = hub.reserve(Some("b")).unwrap();
    for owner in [None, Some("b"), Some("c")] {
        assert_eq!(
            hub.reserve(owner).unwrap_err(),
            HubError::TooManyLive {
                scope: LiveScope::Gateway,
                limit: 3
            }
        );
    }
    drop(a);
    assert!(hub.reserve(Some("a")).is_ok());
    assert!(
        hub.reserve(None).is_ok(),
        "the open gateway has no per-key cap"
    );
}

/// What the generation task does once the cap cut a stream: it ends with a small terminal
/// event kept past the cap, then gives back its slot.
fn end_cut(hub: &Arc<Hub>, entry: &Arc<Entry>, terminal: usize) {
    let stored = event(terminal);
    hub.add_kept(stored.json.len());
    entry.append([stored]);
    hub.finish(entry);
}

fn map_bytes(hub: &Hub) -> usize {
    hub.streams().map.values().map(|e| e.bytes()).sum()
}

/// Random starts, events and finishes of streams under a small cap (the generation task's
/// part played by the test, a cut stream ending at once as its task would): the bytes kept
/// never pass the cap by more than one event (and the closing `error` of a stream being cut,
/// kept past the cap so its followers learn why), and the O(1) counter always equals the
/// bytes of the streams kept.
#[tokio::test]
async fn kept_bytes_never_pass_the_cap_by_more_than_one_event() {
    const TERMINAL: usize = 200;
    let engine = engine();
    let (mut cuts, mut forgotten) = (0, 0);
    for seed in 0..300 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let largest = rng.usize(100..2000);
        let max = rng.usize(largest..40 * largest);
        let hub = Hub::open(config(max), &engine).unwrap();
        let mut live: Vec<(Arc<Entry>, LiveSlot)> = Vec::new();
        for step in 0..400 {
            match rng.u8(..10) {
                0..=1 if live.len() < 12 => {
                    let entry = Arc::new(Entry::new(
                        format!("s{step}"),
                        Dialect::OpenAi,
                        "p/m".into(),
                        0,
                        false,
                    ));
                    hub.insert(Arc::clone(&entry));
                    live.push((entry, hub.live.force(None)));
                }
                2 if !live.is_empty() => {
                    let (entry, _slot) = live.swap_remove(rng.usize(..live.len()));
                    hub.finish(&entry);
                }
                _ if !live.is_empty() => {
                    let (entry, _) = &live[rng.usize(..live.len())];
                    let stored = event(rng.usize(60..=largest));
                    if hub.admit(entry, stored.json.len()) {
                        entry.append([stored]);
                    } else {
                        assert!(
                            entry.was_cut(),
                            "seed {seed} step {step}: refused but not cut"
                        );
                    }
                }
                _ => {}
            }
            let (cut, kept): (Vec<_>, Vec<_>) = live.drain(..).partition(|(e, _)| e.was_cut());
            live = kept;
            for (entry, _slot) in cut {
                cuts += 1;
                end_cut(&hub, &entry, TERMINAL);
            }
            let bound = max + largest + TERMINAL;
            assert!(
                hub.kept_bytes() <= bound,
                "seed {seed} step {step}: {} kept over {max} + one event",
                hub.kept_bytes()
            );
            assert_eq!(hub.kept_bytes(), map_bytes(&hub), "seed {seed} step {step}");
        }
        forgotten += hub.stats().evicted;
    }
    assert!(
        cuts > 300 && forgotten > 300,
        "the cap was at work: {cuts} cuts, {forgotten} forgotten"
    );
}

/// Sets its flag when dropped: the engine's events of a stream are dropped with the upstream
/// call they stand for.
struct DropFlag(Arc<std::sync::atomic::AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// An answer that never ends on its own: `text` deltas of `bytes` bytes each; `dropped` is
/// set once the hub let go of it.
fn endless(bytes: usize, dropped: &Arc<std::sync::atomic::AtomicBool>) -> crate::engine::Answer {
    use providers::AgentEvent;
    let flag = DropFlag(Arc::clone(dropped));
    let events = futures_util::stream::iter(std::iter::repeat_with(move || {
        let _ = &flag;
        Ok(AgentEvent::TextDelta {
            index: 0,
            text: "x".repeat(bytes).into(),
            extra: None,
        })
    }));
    crate::engine::Answer {
        route: crate::route::Route {
            provider: "p".into(),
            model: "m".into(),
        },
        events: Box::pin(events),
    }
}

fn new_stream(id: &str) -> super::NewStream {
    super::NewStream {
        id: Some(id.into()),
        owner: None,
        door: Dialect::OpenAi,
        body: Bytes::from_static(b"{}"),
        forward: crate::upstream::ForwardHeaders::default(),
    }
}

/// Follows `entry` to its end, returning every event's envelope.
async fn follow(entry: &Arc<Entry>, after: Option<u64>) -> Vec<providers::Envelope> {
    let mut sub = entry.subscribe(after).unwrap();
    let mut out = Vec::new();
    while let Some(batch) = sub.next_batch().await {
        let bytes: usize = batch.iter().map(|e| e.json.len()).sum();
        assert!(
            batch.len() == 1 || bytes <= super::MAX_BATCH_BYTES,
            "a batch of {bytes} bytes"
        );
        out.extend(
            batch
                .iter()
                .map(|e| serde_json::from_slice::<providers::Envelope>(&e.json).unwrap()),
        );
    }
    out
}

#[tokio::test(start_paused = true)]
async fn a_live_stream_over_its_share_is_ended_with_memory_cap_and_its_upstream_dropped() {
    use providers::AgentEvent;
    const MAX: usize = 4 << 20;
    let hub = Hub::open(config(MAX), &engine()).unwrap();
    let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let slot = hub.reserve(None).unwrap();
    let entry = hub
        .start(new_stream("big"), endless(1000, &dropped), slot)
        .await
        .unwrap();
    let events = follow(&entry, None).await;
    assert!(entry.is_finished());
    assert!(
        dropped.load(std::sync::atomic::Ordering::SeqCst),
        "upstream call dropped"
    );
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, i as u64, "no gap in the seqs");
    }
    let n = events.len();
    match &events[n - 2].event {
        AgentEvent::Error(info) => {
            assert_eq!(info.code, super::MEMORY_CAP_CODE);
            assert!(info.retryable);
        }
        other => panic!("the end is not a memory_cap error: {other:?}"),
    }
    assert!(matches!(events[n - 1].event, AgentEvent::StreamEnd(_)));
    assert!(n > 1000, "it kept its events up to the cap: {n}");
    assert!(
        entry.bytes() <= MAX + 1024,
        "{} bytes kept for a cap of {MAX}",
        entry.bytes()
    );
    assert_eq!(hub.stats().cut, 1);
    assert_eq!(hub.live.total(), 0, "its live slot is back");
    // A resume sees what was kept, then the same end.
    let again = follow(&entry, Some(10)).await;
    assert_eq!(again.len(), n - 11);
}

#[tokio::test(start_paused = true)]
async fn a_stream_under_its_share_goes_on_while_the_biggest_is_cut() {
    use providers::AgentEvent;
    const MAX: usize = 1 << 20;
    let hub = Hub::open(config(MAX), &engine()).unwrap();
    // A small stream fed by hand, under its share of the cap.
    let small = Arc::new(Entry::new(
        "small".into(),
        Dialect::OpenAi,
        "p/m".into(),
        0,
        false,
    ));
    hub.insert(Arc::clone(&small));
    let _small_slot = hub.reserve(None).unwrap();
    let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let slot = hub.reserve(None).unwrap();
    let big = hub
        .start(new_stream("big"), endless(1000, &dropped), slot)
        .await
        .unwrap();
    let events = follow(&big, None).await;
    assert!(
        matches!(&events[events.len() - 2].event, AgentEvent::Error(i) if i.code == super::MEMORY_CAP_CODE)
    );
    // Now the small one fills what the big one left: admitted up to its share.
    let stored = event(1000);
    assert!(hub.admit(&small, stored.json.len()));
    small.append([stored]);
    assert!(!small.was_cut());
    assert!(hub.kept_bytes() <= MAX + 2048);
}

#[tokio::test]
async fn a_subscriber_behind_a_forgotten_stream_frees_it_and_gets_stream_forgotten() {
    use providers::AgentEvent;
    let mut config = config(usize::MAX);
    config.retention_ms = 0;
    let hub = Hub::open(config, &engine()).unwrap();
    let entry = stream(&hub, "s", 5000, false).await;
    let more: Vec<StoredEvent> = (1..100)
        .map(|seq| StoredEvent { seq, ..event(5000) })
        .collect();
    hub.add_kept(more.iter().map(|e| e.json.len()).sum());
    entry.append(more);
    let mut sub = entry.subscribe(None).unwrap();
    let first = sub.next_batch().await.unwrap();
    assert!(first.len() < 100, "batches are capped");
    hub.finish(&entry);
    hub.sweep();
    assert!(hub.get(None, "s").is_err());
    assert_eq!(entry.bytes(), 0, "the events are freed even while followed");
    assert_eq!(hub.kept_bytes(), 0);
    let tail = sub.next_batch().await.unwrap();
    let tail: Vec<providers::Envelope> = tail
        .iter()
        .map(|e| serde_json::from_slice(&e.json).unwrap())
        .collect();
    assert_eq!(
        tail[0].seq,
        first.len() as u64,
        "it goes on from where it stopped"
    );
    assert!(matches!(&tail[0].event, AgentEvent::Error(i) if i.code == super::FORGOTTEN_CODE));
    assert!(matches!(tail[1].event, AgentEvent::StreamEnd(_)));
    assert!(sub.next_batch().await.is_none());
}

#[tokio::test]
async fn a_stream_the_memory_cap_ended_comes_back_finished_after_a_restart() {
    use providers::AgentEvent;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(1 << 20);
    config.journal.enabled = true;
    config.journal.dir = dir.path().to_owned();
    let engine = engine();
    let kept = {
        let hub = Hub::open(config.clone(), &engine).unwrap();
        let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let slot = hub.reserve(None).unwrap();
        let entry = hub
            .start(new_stream("cut"), endless(1000, &dropped), slot)
            .await
            .unwrap();
        let events = follow(&entry, None).await;
        // The generation task lets go of the hub just after the stream's end.
        while Arc::strong_count(&hub) > 1 {
            tokio::task::yield_now().await;
        }
        events
    };
    let hub = Hub::open(config, &engine).unwrap();
    let entry = hub.get(None, "cut").unwrap();
    assert!(
        entry.is_finished(),
        "not continued as if it were still running"
    );
    let back = follow(&entry, None).await;
    assert_eq!(back.len(), kept.len());
    assert!(
        matches!(&back[back.len() - 2].event, AgentEvent::Error(i) if i.code == super::MEMORY_CAP_CODE)
    );
    assert_eq!(hub.live.total(), 0, "nothing generating after the restart");
}
