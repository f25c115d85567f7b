//! Reading back: round trips, torn tails, damaged segments, gaps and overlaps.

use std::fs::{self, OpenOptions};
use std::io::Write as _;

use super::*;

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
fn recover_segment_reads_a_segment_file_as_open_does() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (j, _) = open(dir.path());
        append_open(&j, "done");
        append_events(&j, "done", 0..3);
        append_end(&j, "done");
        append_open(&j, "gone");
        append_forget(&j, "gone");
        append_open(&j, "running");
        append_events(&j, "running", 0..2);
    }
    let bytes = fs::read(segment::path(dir.path(), 1)).unwrap();
    let (_j, r) = open(dir.path());
    assert_eq!(recover_segment(&bytes, true), r.streams);
    assert_eq!(names(&r), vec!["done", "running"]);
    // A torn tail is cut the same way; in an older segment the damage ends the reading there.
    let torn = &bytes[..bytes.len() - 3];
    let streams = recover_segment(torn, true);
    assert_eq!(streams.len(), 2);
    assert_eq!(streams[..1], r.streams[..1]);
    assert_eq!(streams[1].stream, "running");
    assert!(
        streams[1].events.is_empty(),
        "the torn events record is cut off"
    );
    assert!(recover_segment(&bytes[..5], false).is_empty());
}
