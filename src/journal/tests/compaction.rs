//! Rotation and compaction: which segments go, and when.

use std::fs;

use super::*;

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
