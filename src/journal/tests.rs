//! The journal on a real directory: round trips, crashes simulated by damaging files, rotation
//! and compaction, concurrency, and each fsync policy.

use std::fs::{self, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::record::Entry;
use super::segment::{self, ScanEnd};
use super::*;

fn config(dir: &Path, fsync: FsyncPolicy, segment_bytes: u64) -> JournalConfig {
    JournalConfig {
        dir: dir.to_path_buf(),
        fsync,
        segment_bytes,
    }
}

fn open(dir: &Path) -> (Journal, Recovered) {
    Journal::open(config(
        dir,
        FsyncPolicy::Never,
        JournalConfig::DEFAULT_SEGMENT_BYTES,
    ))
    .unwrap()
}

/// The envelope of event `seq` of `stream` (with bytes JSON would escape, to see them kept).
fn event(stream: &str, seq: u64) -> Bytes {
    Bytes::from(format!(
        r#"{{"stream":"{stream}","seq":{seq},"type":"text_delta","text":"é \"q\"\n"}}"#
    ))
}

fn events(stream: &str, seqs: std::ops::Range<u64>) -> Vec<Bytes> {
    seqs.map(|seq| event(stream, seq)).collect()
}

fn append_open(j: &Journal, stream: &str) {
    j.append(&Record::Open {
        stream,
        created_ms: 1_700_000_000_000,
        door: "openai",
        body: br#"{"model":"gpt","stream":true}"#,
        forward: &[("x-request-id".to_string(), "r1".to_string())],
    })
    .unwrap();
}

fn append_events(j: &Journal, stream: &str, seqs: std::ops::Range<u64>) {
    j.append(&Record::Events {
        stream,
        first_seq: seqs.start,
        events: &events(stream, seqs),
    })
    .unwrap();
}

fn append_end(j: &Journal, stream: &str) {
    j.append(&Record::End { stream }).unwrap();
}

fn append_forget(j: &Journal, stream: &str) {
    j.append(&Record::Forget { stream }).unwrap();
}

/// A big event: one record of it fills a small segment.
fn append_big(j: &Journal, stream: &str, seq: u64) {
    j.append(&Record::Events {
        stream,
        first_seq: seq,
        events: &[Bytes::from(vec![b'x'; 1000])],
    })
    .unwrap();
}

fn stream<'a>(r: &'a Recovered, name: &str) -> &'a RecoveredStream {
    r.streams
        .iter()
        .find(|s| s.stream == name)
        .unwrap_or_else(|| panic!("stream {name} not recovered"))
}

fn names(r: &Recovered) -> Vec<&str> {
    r.streams.iter().map(|s| s.stream.as_str()).collect()
}

/// The segment numbers on disk.
fn segments(dir: &Path) -> Vec<u64> {
    segment::list(dir).unwrap()
}

fn seg(dir: &Path, n: u64) -> PathBuf {
    segment::path(dir, n)
}

fn size(path: &Path) -> u64 {
    fs::metadata(path).unwrap().len()
}

/// The streams each segment holds records of, as the scanner sees them.
fn layout(dir: &Path) -> Vec<(u64, Vec<String>)> {
    segments(dir)
        .into_iter()
        .map(|n| {
            let buf = fs::read(seg(dir, n)).unwrap();
            let mut streams: Vec<String> = Vec::new();
            let end = segment::scan(&buf, true, |_, e: Entry<'_>| {
                if !streams.iter().any(|s| s == e.stream()) {
                    streams.push(e.stream().to_string());
                }
            });
            assert_eq!(end, ScanEnd::Clean);
            (n, streams)
        })
        .collect()
}

#[test]
fn every_record_kind_round_trips_through_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (j, r) = open(dir.path());
        assert!(r.streams.is_empty());
        append_open(&j, "done");
        append_open(&j, "running");
        append_events(&j, "done", 0..2);
        append_events(&j, "running", 0..1);
        append_events(&j, "done", 2..3);
        append_end(&j, "done");
        append_open(&j, "gone");
        append_events(&j, "gone", 0..1);
        append_forget(&j, "gone");
        assert_eq!(j.stats().records_appended, 9);
    }
    let (_j, r) = open(dir.path());
    assert_eq!((r.torn_bytes, r.corrupt_segments), (0, 0));
    assert_eq!(
        names(&r),
        vec!["done", "running"],
        "opening order, forgotten dropped"
    );
    let done = stream(&r, "done");
    assert_eq!(done.created_ms, 1_700_000_000_000);
    assert_eq!(done.door, "openai");
    assert_eq!(done.body, br#"{"model":"gpt","stream":true}"#);
    assert_eq!(
        done.forward,
        vec![("x-request-id".to_string(), "r1".to_string())]
    );
    assert_eq!(
        done.events,
        events("done", 0..3),
        "event bytes come back as written"
    );
    assert!(done.ended);
    let running = stream(&r, "running");
    assert_eq!(running.events, events("running", 0..1));
    assert!(!running.ended);
}

#[test]
fn appends_after_a_reopen_continue_the_last_segment() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (j, _) = open(dir.path());
        append_open(&j, "s");
        append_events(&j, "s", 0..3);
    }
    {
        let (j, r) = open(dir.path());
        assert_eq!(stream(&r, "s").events.len(), 3);
        append_events(&j, "s", 3..5);
        append_end(&j, "s");
    }
    let (j, r) = open(dir.path());
    let s = stream(&r, "s");
    assert_eq!(s.events, events("s", 0..5));
    assert!(s.ended);
    assert_eq!(
        segments(dir.path()),
        vec![1],
        "no new segment for a clean reopen"
    );
    assert_eq!(j.stats().segments, 1);
    assert_eq!(j.stats().bytes, size(&seg(dir.path(), 1)));
}

#[test]
fn a_record_cut_mid_write_is_truncated_and_appends_resume() {
    let dir = tempfile::tempdir().unwrap();
    let path = seg(dir.path(), 1);
    let before_last;
    {
        let (j, _) = open(dir.path());
        append_open(&j, "s");
        append_events(&j, "s", 0..2);
        before_last = size(&path);
        append_events(&j, "s", 2..4);
    }
    let full = size(&path);
    let cut = full - 5;
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(cut)
        .unwrap();
    {
        let (j, r) = open(dir.path());
        assert_eq!(r.torn_bytes, cut - before_last);
        assert_eq!(r.corrupt_segments, 0);
        assert_eq!(stream(&r, "s").events, events("s", 0..2));
        assert_eq!(size(&path), before_last, "the torn record is cut off");
        append_events(&j, "s", 2..5);
        append_end(&j, "s");
    }
    let (_j, r) = open(dir.path());
    assert_eq!(r.torn_bytes, 0);
    let s = stream(&r, "s");
    assert_eq!(s.events, events("s", 0..5));
    assert!(s.ended);
}

/// Appends `tail` to the only segment, reopens, and checks it is cut off and appends go on.
fn tail_is_torn(tail: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    let path = seg(dir.path(), 1);
    {
        let (j, _) = open(dir.path());
        append_open(&j, "s");
        append_events(&j, "s", 0..1);
    }
    let good = size(&path);
    OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(tail)
        .unwrap();
    {
        let (j, r) = open(dir.path());
        assert_eq!(r.torn_bytes, tail.len() as u64);
        assert_eq!(r.corrupt_segments, 0);
        assert_eq!(stream(&r, "s").events, events("s", 0..1));
        assert_eq!(size(&path), good);
        append_events(&j, "s", 1..2);
    }
    let (_j, r) = open(dir.path());
    assert_eq!(r.torn_bytes, 0);
    assert_eq!(stream(&r, "s").events, events("s", 0..2));
    assert_eq!(segments(dir.path()), vec![1]);
}

#[test]
fn garbage_after_the_last_record_is_truncated() {
    tail_is_torn(b"\x13\x00\x00\x00garbage that is not a frame");
    // A length that fits, a wrong CRC, and nothing valid after it.
    tail_is_torn(b"\x04\x00\x00\x00\xde\xad\xbe\xefjunk");
}

#[test]
fn a_zero_filled_tail_is_truncated() {
    // What a power failure can leave: the file grew, its last blocks never got written.
    tail_is_torn(&[0; 4096]);
}

#[test]
fn a_segment_cut_inside_its_header_gets_a_fresh_one() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(seg(dir.path(), 1), b"SGJ").unwrap();
    {
        let (j, r) = Journal::open(config(dir.path(), FsyncPolicy::Always, 1 << 20)).unwrap();
        assert_eq!(r.torn_bytes, 3);
        append_open(&j, "s");
    }
    let (_j, r) = open(dir.path());
    assert_eq!(names(&r), vec!["s"]);
    assert_eq!(segments(dir.path()), vec![1]);
}

#[test]
fn a_newer_format_is_refused_not_truncated() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    let path = seg(dir.path(), 1);
    let mut bytes = fs::read(&path).unwrap();
    bytes[7] = segment::VERSION + 1;
    bytes.extend_from_slice(b"records of the future");
    fs::write(&path, &bytes).unwrap();
    let err = Journal::open(config(dir.path(), FsyncPolicy::Never, 1 << 20)).unwrap_err();
    assert!(
        matches!(err, JournalError::UnsupportedVersion { version, .. } if version == segment::VERSION + 1),
        "{err}"
    );
    assert_eq!(fs::read(&path).unwrap(), bytes, "left untouched");
}

/// Flips one bit inside the payload of the record that starts at `offset`.
fn flip(path: &Path, offset: u64) {
    let mut bytes = fs::read(path).unwrap();
    bytes[offset as usize + 12] ^= 0x20;
    fs::write(path, bytes).unwrap();
}

#[test]
fn a_crc_flip_mid_segment_skips_only_the_rest_of_that_segment() {
    let dir = tempfile::tempdir().unwrap();
    let first = seg(dir.path(), 1);
    let damaged;
    {
        let (j, _) = open(dir.path());
        append_open(&j, "a");
        append_events(&j, "a", 0..2);
        damaged = size(&first);
        append_events(&j, "a", 2..3);
        append_events(&j, "a", 3..4);
    }
    {
        // Every record of this session goes to a segment of its own.
        let (j, _) = Journal::open(config(dir.path(), FsyncPolicy::Never, 1)).unwrap();
        append_open(&j, "b");
        append_events(&j, "b", 0..2);
        append_end(&j, "b");
    }
    assert_eq!(segments(dir.path()), vec![1, 2, 3, 4]);
    flip(&first, damaged);
    let (j, r) = open(dir.path());
    assert_eq!(r.corrupt_segments, 1);
    assert_eq!(r.torn_bytes, 0);
    let a = stream(&r, "a");
    assert_eq!(
        a.events,
        events("a", 0..2),
        "a stops before the damaged record"
    );
    assert!(!a.ended);
    let b = stream(&r, "b");
    assert_eq!(b.events, events("b", 0..2), "later segments are read");
    assert!(b.ended);
    assert!(first.exists(), "a damaged segment is kept for inspection");
    append_forget(&j, "a");
    drop(j);
    assert!(first.exists(), "and never compacted");
}

#[test]
fn a_crc_flip_mid_last_segment_is_not_mistaken_for_a_torn_write() {
    let dir = tempfile::tempdir().unwrap();
    let first = seg(dir.path(), 1);
    let damaged;
    {
        let (j, _) = open(dir.path());
        append_open(&j, "a");
        damaged = size(&first);
        append_events(&j, "a", 0..1);
        append_events(&j, "a", 1..2);
    }
    let len = size(&first);
    flip(&first, damaged);
    {
        let (j, r) = open(dir.path());
        assert_eq!((r.corrupt_segments, r.torn_bytes), (1, 0));
        assert_eq!(stream(&r, "a").events, Vec::<Bytes>::new());
        assert_eq!(
            size(&first),
            len,
            "nothing cut: a good record follows the bad one"
        );
        append_open(&j, "b");
    }
    assert_eq!(
        segments(dir.path()),
        vec![1, 2],
        "appends moved to a new segment"
    );
    let (_j, r) = open(dir.path());
    assert_eq!(r.corrupt_segments, 1);
    assert_eq!(names(&r), vec!["a", "b"]);
}

#[test]
fn gaps_and_overlaps_on_disk_come_back_gap_free() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (j, _) = open(dir.path());
        append_open(&j, "overlap");
        append_events(&j, "overlap", 0..3);
        append_events(&j, "overlap", 2..5);
        append_events(&j, "overlap", 0..1);
        append_end(&j, "overlap");
        append_open(&j, "gap");
        append_events(&j, "gap", 0..2);
        append_events(&j, "gap", 3..4);
        append_events(&j, "gap", 2..3);
        append_end(&j, "gap");
    }
    let (_j, r) = open(dir.path());
    let overlap = stream(&r, "overlap");
    assert_eq!(overlap.events, events("overlap", 0..5));
    assert!(overlap.ended);
    let gap = stream(&r, "gap");
    assert_eq!(gap.events, events("gap", 0..2), "stopped at the gap");
    assert!(!gap.ended, "a stream missing events is not complete");
}

#[test]
fn rotation_and_compaction_delete_only_fully_forgotten_segments() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (j, _) = Journal::open(config(d, FsyncPolicy::Never, 1000)).unwrap();
    append_open(&j, "long");
    for i in 0..4 {
        let s = format!("s{i}");
        append_open(&j, &s);
        append_big(&j, &s, 0);
        append_end(&j, &s);
    }
    // One big event per segment: 1 = long + s0, 2 = s0's End + s1, ...
    assert_eq!(
        layout(d),
        vec![
            (1, vec!["long".into(), "s0".into()]),
            (2, vec!["s0".into(), "s1".into()]),
            (3, vec!["s1".into(), "s2".into()]),
            (4, vec!["s2".into(), "s3".into()]),
            (5, vec!["s3".into()]),
        ]
    );
    append_forget(&j, "s1");
    assert_eq!(
        segments(d),
        vec![1, 2, 3, 4, 5],
        "s0 and s2 still live beside s1"
    );
    append_forget(&j, "s2");
    assert_eq!(segments(d), vec![1, 2, 4, 5], "3 held only s1 and s2");
    append_forget(&j, "s0");
    assert_eq!(segments(d), vec![1, 4, 5], "1 holds long, still live");
    append_forget(&j, "s3");
    assert_eq!(segments(d), vec![1, 5], "5 is current");
    assert_eq!(j.stats().segments_deleted, 3);
    assert_eq!(j.stats().segments, 2);
    drop(j);
    let (j, r) = Journal::open(config(d, FsyncPolicy::Never, 1000)).unwrap();
    assert_eq!(names(&r), vec!["long"], "the forgotten stay forgotten");
    append_forget(&j, "long");
    assert_eq!(
        segments(d),
        vec![5],
        "the books were rebuilt on open: 1 goes"
    );
    let total: u64 = segments(d).iter().map(|&n| size(&seg(d, n))).sum();
    assert_eq!(j.stats().bytes, total);
}

#[test]
fn a_forget_outlives_the_records_it_forgets() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cfg = || config(d, FsyncPolicy::Never, 1000);
    {
        let (j, _) = Journal::open(cfg()).unwrap();
        append_open(&j, "long");
        append_open(&j, "a");
        append_big(&j, "a", 0);
        append_forget(&j, "a");
        append_open(&j, "b");
        append_big(&j, "b", 0);
        append_forget(&j, "b");
        assert_eq!(
            layout(d),
            vec![
                (1, vec!["long".into(), "a".into()]),
                (2, vec!["a".into(), "b".into()]),
                (3, vec!["b".into()]),
            ]
        );
        // Segment 2 holds no live stream, but its Forget of a is all that keeps a's records
        // in segment 1 from coming back.
        assert_eq!(segments(d), vec![1, 2, 3]);
    }
    {
        let (j, r) = Journal::open(cfg()).unwrap();
        assert_eq!(names(&r), vec!["long"]);
        assert_eq!(segments(d), vec![1, 2, 3], "the guard survives a reopen");
        append_forget(&j, "long");
        assert_eq!(
            segments(d),
            vec![3],
            "1 went, then 2 with nothing left to guard"
        );
    }
    let (_j, r) = Journal::open(cfg()).unwrap();
    assert!(r.streams.is_empty());
}

#[test]
fn a_segment_a_crash_left_behind_is_deleted_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cfg = || config(d, FsyncPolicy::Never, 1000);
    let saved;
    {
        let (j, _) = Journal::open(cfg()).unwrap();
        append_open(&j, "a");
        append_big(&j, "a", 0);
        append_open(&j, "b");
        saved = fs::read(seg(d, 1)).unwrap();
        append_forget(&j, "a");
        assert_eq!(segments(d), vec![2]);
    }
    // As if the process died between deciding to delete segment 1 and unlinking it.
    fs::write(seg(d, 1), &saved).unwrap();
    let (j, r) = Journal::open(cfg()).unwrap();
    assert_eq!(names(&r), vec!["b"]);
    assert_eq!(segments(d), vec![2]);
    assert_eq!(j.stats().segments_deleted, 1);
}

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
