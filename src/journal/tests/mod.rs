//! The journal on a real directory: recovery (crashes simulated by damaging files), rotation
//! and compaction, concurrency and each fsync policy. Helpers here, tests one file per topic.

mod compaction;
mod metrics;
#[cfg(unix)]
mod permissions;
mod policy;
mod recovery;

use std::fs;
use std::path::{Path, PathBuf};

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
        route: "openai/gpt",
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
