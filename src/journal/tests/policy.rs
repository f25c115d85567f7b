//! Concurrent appenders and each fsync policy.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;

/// `threads` threads, each appending `per_thread` streams in small records; then checks every
/// stream comes back whole.
fn concurrent(fsync: FsyncPolicy, threads: usize, per_thread: usize, seqs: u64) -> JournalStats {
    let dir = tempfile::tempdir().unwrap();
    let (j, _) = Journal::open(config(dir.path(), fsync, 8 * 1024)).unwrap();
    let j = Arc::new(j);
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let j = j.clone();
            std::thread::spawn(move || {
                let names: Vec<String> = (0..per_thread).map(|i| format!("t{t}-s{i}")).collect();
                for name in &names {
                    append_open(&j, name);
                }
                // Each stream advances by 1 to 3 events a record, out of step with the others.
                let mut next = vec![0; names.len()];
                let mut round = 0;
                while next.iter().any(|&n| n < seqs) {
                    for (i, name) in names.iter().enumerate() {
                        if next[i] < seqs {
                            let end = (next[i] + 1 + (round + i as u64) % 3).min(seqs);
                            append_events(&j, name, next[i]..end);
                            next[i] = end;
                        }
                    }
                    round += 1;
                }
                for name in &names {
                    append_end(&j, name);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let stats = j.stats();
    assert!(
        stats.segments > 1,
        "the test should rotate under contention"
    );
    drop(j);
    let (_j, r) = open(dir.path());
    assert_eq!((r.torn_bytes, r.corrupt_segments), (0, 0));
    assert_eq!(r.streams.len(), threads * per_thread);
    for s in &r.streams {
        assert_eq!(s.events, events(&s.stream, 0..seqs), "{}", s.stream);
        assert!(s.ended, "{}", s.stream);
    }
    stats
}

#[test]
fn many_threads_appending_keep_every_stream_gap_free() {
    let stats = concurrent(FsyncPolicy::Never, 8, 3, 200);
    assert_eq!(stats.syncs, 0, "Never does not flush");
}

#[test]
fn always_flushes_every_append_before_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (j, _) = Journal::open(config(dir.path(), FsyncPolicy::Always, 1 << 20)).unwrap();
        append_open(&j, "s");
        for seq in 0..9 {
            append_events(&j, "s", seq..seq + 1);
        }
        let stats = j.stats();
        assert_eq!(stats.records_appended, 10);
        assert_eq!(stats.syncs, 10, "alone, each append is its own flush");
        assert_eq!((stats.sync_errors, stats.last_sync_error), (0, None));
    }
    let (_j, r) = open(dir.path());
    assert_eq!(stream(&r, "s").events, events("s", 0..9));

    let stats = concurrent(FsyncPolicy::Always, 4, 2, 40);
    assert!(stats.syncs >= 1);
    // Each flush settles at least one record not yet flushed (a round, or a closing segment).
    assert!(
        stats.syncs <= stats.records_appended + stats.segments as u64,
        "more flushes than appends: {stats:?}"
    );
}

#[test]
fn interval_flushes_in_the_background_and_its_thread_stops_on_drop() {
    let dir = tempfile::tempdir().unwrap();
    let policy = FsyncPolicy::Interval(Duration::from_millis(5));
    let (j, _) = Journal::open(config(dir.path(), policy, 1 << 20)).unwrap();
    append_open(&j, "s");
    append_events(&j, "s", 0..1);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !j.shared.syncer.settled(2) {
        assert!(Instant::now() < deadline, "the background flush never came");
        std::thread::sleep(Duration::from_millis(2));
    }
    let idle = j.stats().syncs;
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(j.stats().syncs, idle, "nothing written, nothing flushed");
    let shared = j.shared_weak();
    drop(j);
    assert!(
        shared.upgrade().is_none(),
        "the flusher thread let go of the journal: it was joined"
    );
    let (_j, r) = open(dir.path());
    assert_eq!(stream(&r, "s").events, events("s", 0..1));
}

#[test]
fn never_leaves_flushing_to_the_os() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (j, _) = Journal::open(config(dir.path(), FsyncPolicy::Never, 64)).unwrap();
        append_open(&j, "s");
        for seq in 0..20 {
            append_events(&j, "s", seq..seq + 1);
        }
        append_end(&j, "s");
        let stats = j.stats();
        assert_eq!(stats.syncs, 0);
        assert!(stats.segments > 1, "64-byte segments rotate");
    }
    let (_j, r) = open(dir.path());
    let s = stream(&r, "s");
    assert_eq!(s.events, events("s", 0..20));
    assert!(s.ended);
}

#[test]
fn the_default_config_is_documented() {
    let c = JournalConfig::default();
    assert_eq!(c.dir, PathBuf::from("streamgate-journal"));
    assert_eq!(c.fsync, FsyncPolicy::Interval(Duration::from_millis(100)));
    assert_eq!(c.segment_bytes, 64 * 1024 * 1024);
}

#[test]
fn the_journal_can_be_shared_across_threads() {
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<Journal>();
    shareable::<Arc<Journal>>();
}

#[test]
fn under_interval_no_append_waits_for_the_disk_not_even_a_rotation() {
    let dir = tempfile::tempdir().unwrap();
    // The background thread never ticks during the test: only the drop flushes.
    let policy = FsyncPolicy::Interval(Duration::from_secs(3600));
    let (j, _) = Journal::open(config(dir.path(), policy, 64)).unwrap();
    for s in ["a", "b"] {
        append_open(&j, s);
        for seq in 0..5 {
            append_events(&j, s, seq..seq + 1);
        }
        append_end(&j, s);
    }
    append_forget(&j, "a");
    let stats = j.stats();
    assert!(stats.segments > 5, "64-byte segments rotate: {stats:?}");
    assert_eq!(stats.syncs, 0, "rotations left their flushes to the thread");
    assert_eq!(stats.segments_deleted, 0, "and compaction its deletions");
    let on_disk = segments(dir.path()).len();
    drop(j); // the last tick: closed segments, the directory, the current one, deletions
    assert!(
        segments(dir.path()).len() < on_disk,
        "a's segments were deleted on the way out"
    );
    let (_j, r) = open(dir.path());
    assert_eq!(names(&r), vec!["b"]);
    assert_eq!(stream(&r, "b").events, events("b", 0..5));
    assert!(stream(&r, "b").ended);
}
