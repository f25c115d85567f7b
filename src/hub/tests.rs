//! The hub's retention: the memory cap forgets finished streams oldest first and never a live
//! one, and what it forgets stays forgotten across a restart.

use std::sync::Arc;

use bytes::Bytes;
use providers::Dialect;

use super::entry::{Entry, StoredEvent};
use super::{Hub, StreamsConfig};
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
async fn a_live_stream_is_never_cut_whatever_it_holds() {
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
