//! Journal append latency while segments rotate and compaction deletes them, seen from async
//! tasks: the hub's path (every batch of events awaited on the journal's writer thread,
//! `journal::Appender`) against appending inline on the async workers (what the hub did
//! before), in the same run.
//!
//!     cargo bench --bench journal
//!     cargo bench --bench journal -- --tasks 64 --appends 200000 --segment-kib 256 --fsync interval
//!
//! T tasks on a 2-worker tokio runtime each open a stream, append a batch of E events of B
//! bytes (one record) every `--every-us` (as a streaming answer does, not flat out: the
//! latency measured is an append's, not a queue's) until A records were appended over all,
//! end and forget their stream
//! every 50 batches and start a new one (so compaction deletes segments as it would under
//! retention), on a journal whose segments are `--segment-kib` KiB: a rotation (the closing
//! segment flushed, the next one created and the directory flushed) every few hundred
//! appends. It prints the append latency (from the call to its return, p50/p99/p99.9/max),
//! the rotations, and how late a 1 ms ticker task on the same runtime woke up (p99/max): the
//! time the runtime was blocked. docs/journal.md records the figures.
//!
//! Flags (unknown ones, such as cargo's `--bench`, are ignored): `--tasks N` (32),
//! `--appends N` (30000), `--events N` (4), `--bytes N` (200), `--every-us N` (5000),
//! `--segment-kib N` (256), `--fsync always|interval|never` (interval).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use streamgate::journal::{Appender, FsyncPolicy, Journal, JournalConfig, OwnedRecord};

struct Args {
    tasks: u64,
    appends: u64,
    events: usize,
    bytes: usize,
    every_us: u64,
    segment_kib: u64,
    fsync: FsyncPolicy,
}

fn args() -> Args {
    let mut a = Args {
        tasks: 32,
        appends: 30_000,
        events: 4,
        bytes: 200,
        every_us: 5000,
        segment_kib: 256,
        fsync: FsyncPolicy::Interval(Duration::from_millis(100)),
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let value = argv.get(i + 1).cloned().unwrap_or_default();
        let number = || value.parse::<u64>().unwrap_or(0).max(1);
        match argv[i].as_str() {
            "--tasks" => a.tasks = number(),
            "--appends" => a.appends = number(),
            "--events" => a.events = number() as usize,
            "--bytes" => a.bytes = number() as usize,
            "--segment-kib" => a.segment_kib = number(),
            "--every-us" => a.every_us = number(),
            "--fsync" => {
                a.fsync = match value.as_str() {
                    "always" => FsyncPolicy::Always,
                    "never" => FsyncPolicy::Never,
                    _ => FsyncPolicy::Interval(Duration::from_millis(100)),
                }
            }
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    a
}

/// How the tasks append.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Path {
    /// `Journal::append` on the async worker.
    Inline,
    /// `Appender::append`, awaited.
    Thread,
}

#[derive(Clone)]
enum Sink {
    Inline(Arc<Journal>),
    Thread(Arc<Appender>),
}

impl Sink {
    async fn append(&self, record: OwnedRecord) {
        let result = match self {
            Sink::Inline(j) => j.append(&record.as_record()),
            Sink::Thread(a) => a.append(record).await,
        };
        if let Err(e) = result {
            eprintln!("append failed: {e}");
            std::process::exit(1);
        }
    }

    fn journal(&self) -> &Journal {
        match self {
            Sink::Inline(j) => j,
            Sink::Thread(a) => a.journal(),
        }
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn us(ns: u64) -> String {
    format!("{:.0} µs", ns as f64 / 1000.0)
}

fn phase(args: &Args, path: Path) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = JournalConfig {
        fsync: args.fsync,
        segment_bytes: args.segment_kib * 1024,
        ..JournalConfig::new(dir.path())
    };
    let (journal, _) = Journal::open(config).expect("the journal opens");
    let sink = match path {
        Path::Inline => Sink::Inline(Arc::new(journal)),
        Path::Thread => Sink::Thread(Arc::new(Appender::start(journal).expect("its thread"))),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let payload = "x".repeat(args.bytes);
    let left = Arc::new(AtomicU64::new(args.appends));
    let done = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let (mut latencies, mut lags) = runtime.block_on(async {
        let ticker = {
            let done = Arc::clone(&done);
            tokio::spawn(async move {
                let mut lags = Vec::new();
                while !done.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    let late = t.elapsed().saturating_sub(Duration::from_millis(1));
                    lags.push(late.as_nanos() as u64);
                }
                lags
            })
        };
        let tasks: Vec<_> = (0..args.tasks)
            .map(|t| {
                let (sink, left, payload) = (sink.clone(), Arc::clone(&left), payload.clone());
                let events = args.events;
                let every = Duration::from_micros(args.every_us);
                tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    let mut tick = tokio::time::interval(every);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    let mut round = 0u64;
                    'streams: loop {
                        let stream = format!("s{t}-{round}");
                        round += 1;
                        sink.append(OwnedRecord::Open {
                            stream: stream.clone(),
                            created_ms: 0,
                            door: "openai",
                            body: Bytes::from_static(b"{\"model\":\"m\"}"),
                            forward: Vec::new(),
                            route: "openai/m".into(),
                        })
                        .await;
                        for batch in 0..50u64 {
                            if left
                                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                                    n.checked_sub(1)
                                })
                                .is_err()
                            {
                                break 'streams;
                            }
                            tick.tick().await;
                            let first_seq = batch * events as u64;
                            let record = OwnedRecord::Events {
                                stream: stream.clone(),
                                first_seq,
                                events: (0..events as u64)
                                    .map(|i| {
                                        Bytes::from(format!(
                                            r#"{{"stream":"{stream}","seq":{},"type":"text.delta","index":0,"text":"{payload}"}}"#,
                                            first_seq + i
                                        ))
                                    })
                                    .collect(),
                            };
                            let t = Instant::now();
                            sink.append(record).await;
                            latencies.push(t.elapsed().as_nanos() as u64);
                        }
                        sink.append(OwnedRecord::End {
                            stream: stream.clone(),
                        })
                        .await;
                        sink.append(OwnedRecord::Forget { stream }).await;
                    }
                    latencies
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.expect("a task"));
        }
        done.store(true, Ordering::Relaxed);
        (all, ticker.await.expect("the ticker"))
    });
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    lags.sort_unstable();
    let stats = sink.journal().stats();
    let name = match path {
        Path::Inline => "inline on the async workers",
        Path::Thread => "writer thread (the hub's path)",
    };
    println!(
        "{name}: {} appends in {:.2} s; append p50 {} p99 {} p99.9 {} max {}; \
         runtime tick lag p99 {} max {}; rotations {}, segments deleted {}",
        latencies.len(),
        elapsed.as_secs_f64(),
        us(percentile(&latencies, 0.5)),
        us(percentile(&latencies, 0.99)),
        us(percentile(&latencies, 0.999)),
        us(latencies.last().copied().unwrap_or(0)),
        us(percentile(&lags, 0.99)),
        us(lags.last().copied().unwrap_or(0)),
        stats.segments as u64 + stats.segments_deleted - 1,
        stats.segments_deleted,
    );
}

fn main() {
    let args = args();
    println!(
        "journal append: {} tasks, {} records of {} events x {} bytes, one per task every {} µs, \
         {} KiB segments, fsync {:?}",
        args.tasks,
        args.appends,
        args.events,
        args.bytes,
        args.every_us,
        args.segment_kib,
        args.fsync
    );
    for path in [Path::Inline, Path::Thread] {
        phase(&args, path);
    }
}
