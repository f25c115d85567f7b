//! What the journal counts for the metrics: bytes appended (exactly the frames written),
//! one append latency per record, one sync latency per fdatasync of records.

use super::*;

/// Appends a seeded mix of records under `fsync`; returns the bytes of their frames.
fn append_mix(j: &Journal, seed: u64, n: usize) -> u64 {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut bytes = 0;
    for i in 0..n {
        let stream = format!("s{}", rng.u8(..4));
        let events = events(&stream, 0..rng.u64(1..6));
        let record = match i % 3 {
            0 => Record::Events {
                stream: &stream,
                first_seq: 0,
                events: &events,
            },
            1 => Record::End { stream: &stream },
            _ => Record::Forget { stream: &stream },
        };
        bytes += record::encode(&record).unwrap().len() as u64;
        j.append(&record).unwrap();
    }
    bytes
}

#[test]
fn appended_bytes_and_latency_counts_match_what_was_written() {
    for (seed, fsync) in [(1, FsyncPolicy::Never), (2, FsyncPolicy::Always)] {
        let dir = tempfile::tempdir().unwrap();
        // Small segments: rotations (and their closing flushes) happen along the way.
        let (j, _) = Journal::open(config(dir.path(), fsync, 512)).unwrap();
        let n = 60;
        let bytes = append_mix(&j, seed, n);
        assert_eq!(j.appended_bytes(), bytes, "{fsync:?}");
        let stats = j.stats();
        assert_eq!(stats.records_appended, n as u64);
        let latencies = j.latencies();
        assert_eq!(
            latencies.append.count, n as u64,
            "one append latency per record"
        );
        assert_eq!(
            latencies.append.buckets.iter().map(|(_, c)| c).sum::<u64>(),
            n as u64
        );
        assert_eq!(
            latencies.sync.count, stats.syncs,
            "{fsync:?}: one sync latency per fdatasync of records"
        );
        match fsync {
            FsyncPolicy::Never => assert_eq!(latencies.sync.count, 0),
            _ => assert!(latencies.sync.count >= n as u64 / 2, "{latencies:?}"),
        }
    }
}
