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

/// Streams of a few ids opened, written, ended and forgotten in random order, ids reused after
/// their Forget, over segments small enough that each record rotates: every reopen (of the
/// books too, on a copy made mid-way) brings back exactly the latest stream of each id not
/// forgotten, with its own events, and forgetting everything leaves only the current segment.
#[test]
fn reused_ids_come_back_as_their_latest_stream_through_compaction() {
    for seed in 0..30 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let cfg = || config(d, FsyncPolicy::Never, 64);
        let (mut j, _) = Journal::open(cfg()).unwrap();
        // id -> (round, events so far, ended) of its stream not forgotten, if any.
        let mut live: std::collections::BTreeMap<&str, (u64, u64, bool)> = Default::default();
        let mut round = 0;
        for step in 0..60 {
            let id = ["a", "b", "c"][rng.usize(..3)];
            match live.get_mut(id) {
                None => {
                    round += 1;
                    j.append(&Record::Open {
                        stream: id,
                        created_ms: round,
                        door: "openai",
                        body: b"{}",
                        forward: &[],
                        route: "",
                    })
                    .unwrap();
                    live.insert(id, (round, 0, false));
                }
                Some((r, n, ended)) => match rng.u8(..4) {
                    0 if !*ended => {
                        append_end(&j, id);
                        *ended = true;
                    }
                    1 if *ended => {
                        append_forget(&j, id);
                        live.remove(id);
                    }
                    _ if !*ended => {
                        // Each round's events say which round they belong to.
                        j.append(&Record::Events {
                            stream: id,
                            first_seq: *n,
                            events: &[Bytes::from(format!("{r}:{n}"))],
                        })
                        .unwrap();
                        *n += 1;
                    }
                    _ => {}
                },
            }
            if step % 20 == 19 {
                drop(j);
                let (again, r) = Journal::open(cfg()).unwrap();
                j = again;
                let want: Vec<(String, u64, Vec<Bytes>, bool)> = live
                    .iter()
                    .map(|(id, (round, n, ended))| {
                        let events = (0..*n)
                            .map(|i| Bytes::from(format!("{round}:{i}")))
                            .collect();
                        (id.to_string(), *round, events, *ended)
                    })
                    .collect();
                let mut got: Vec<(String, u64, Vec<Bytes>, bool)> = r
                    .streams
                    .iter()
                    .map(|s| (s.stream.clone(), s.created_ms, s.events.clone(), s.ended))
                    .collect();
                got.sort();
                assert_eq!(got, want, "seed {seed} step {step}");
            }
        }
        for (id, (_, _, ended)) in std::mem::take(&mut live) {
            if !ended {
                append_end(&j, id);
            }
            append_forget(&j, id);
        }
        drop(j);
        let (j, r) = Journal::open(cfg()).unwrap();
        assert!(r.streams.is_empty(), "seed {seed}");
        assert_eq!(j.stats().segments, 1, "seed {seed}: {:?}", segments(d));
    }
}
