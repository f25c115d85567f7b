//! Opening a journal: scan every segment, cut a torn tail, rebuild the compaction books, and
//! pick the segment to append to.

use std::collections::VecDeque;
use std::fs;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::compact::Ledger;
use super::record::Entry;
use super::recover::Replay;
use super::segment::{self, HEADER_LEN, ScanEnd};
use super::sync::{Flusher, Syncer};
use super::{FsyncPolicy, Journal, JournalConfig, JournalError, Recovered, Shared, Writer};
use crate::counters::{DISK_BUCKETS, Histogram};

impl Journal {
    /// Opens the journal in `config.dir` (creating it), reads every segment in order, cuts a
    /// torn tail off the last one, deletes segments that only hold forgotten streams, and
    /// returns the retained streams. Appends then go to the last segment (if it read cleanly)
    /// or to a new one.
    ///
    /// Reads one segment into memory at a time; the recovered events are copied out of it, so
    /// memory ends up holding only the retained streams.
    pub fn open(config: JournalConfig) -> Result<(Journal, Recovered), JournalError> {
        let JournalConfig {
            dir,
            fsync,
            segment_bytes,
        } = config;
        let durable = fsync != FsyncPolicy::Never;
        create_dir(&dir).map_err(|source| JournalError::CreateDir {
            path: dir.clone(),
            source,
        })?;
        let numbers = segment::list(&dir)?;
        let mut replay = Replay::default();
        let mut ledger = Ledger::default();
        let mut doomed = VecDeque::new();
        let mut recovered = Recovered::default();
        // The last segment, when appends can go on in it: its number and the bytes to keep.
        let mut tail = None;
        for (i, &n) in numbers.iter().enumerate() {
            let last = i + 1 == numbers.len();
            let path = segment::path(&dir, n);
            let buf = fs::read(&path).map_err(|source| JournalError::Read {
                path: path.clone(),
                source,
            })?;
            let len = buf.len() as u64;
            doomed.extend(ledger.open_segment(n, 0));
            let end = segment::scan(&buf, last, |offset, entry| {
                replay.apply(&entry, n, offset);
                match entry {
                    Entry::Forget { stream } => doomed.extend(ledger.forget(n, stream)),
                    Entry::Open { stream, .. } => ledger.open(n, stream),
                    other => ledger.data(n, other.stream()),
                }
            });
            match end {
                ScanEnd::Clean if last => tail = Some((n, len)),
                ScanEnd::Clean => ledger.grow(n, len),
                ScanEnd::Torn { at } => {
                    tracing::warn!(
                        path = %path.display(),
                        offset = at,
                        bytes = len - at,
                        "journal: cutting off a write interrupted by a crash"
                    );
                    recovered.torn_bytes += len - at;
                    tail = Some((n, at));
                }
                ScanEnd::Corrupt { at, why } => {
                    tracing::warn!(
                        path = %path.display(),
                        offset = at,
                        why,
                        "journal: damaged segment; the rest of it is skipped and the file kept"
                    );
                    recovered.corrupt_segments += 1;
                    ledger.grow(n, len);
                    ledger.pin(n);
                }
                ScanEnd::Version(version) => {
                    return Err(JournalError::UnsupportedVersion {
                        path,
                        version,
                        supported: segment::VERSION,
                    });
                }
            }
        }
        let (segment, file, len) = match tail {
            Some((n, keep)) => {
                let file = segment::reopen(&dir, n, keep, durable)?;
                let len = keep.max(HEADER_LEN);
                ledger.grow(n, len);
                (n, file, len)
            }
            None => {
                let n = numbers.last().map_or(1, |&last| last + 1);
                let file = segment::create(&dir, n, durable)?;
                doomed.extend(ledger.open_segment(n, HEADER_LEN));
                (n, file, HEADER_LEN)
            }
        };
        doomed.extend(ledger.sweep());
        recovered.streams = replay.finish();
        let shared = Arc::new(Shared {
            dir,
            fsync,
            segment_bytes,
            writer: Mutex::new(Writer {
                file: Arc::new(file),
                segment,
                len,
                tickets: 0,
                ledger,
                doomed,
                rotate: false,
                unsynced: Vec::new(),
                dir_dirty: false,
            }),
            syncer: Syncer::default(),
            deleting: Mutex::new(()),
            appended: AtomicU64::new(0),
            deleted: AtomicU64::new(0),
            appended_bytes: AtomicU64::new(0),
            append_latency: Histogram::new(DISK_BUCKETS),
        });
        shared.delete_doomed();
        let flusher = match fsync {
            FsyncPolicy::Interval(every) => {
                let flushing = shared.clone();
                let every = every.max(Duration::from_millis(1));
                let flusher = Flusher::start(every, move || flushing.flush_written())
                    .map_err(|source| JournalError::Thread { source })?;
                Some(flusher)
            }
            FsyncPolicy::Always | FsyncPolicy::Never => None,
        };
        Ok((Journal { shared, flusher }, recovered))
    }
}

/// Creates the journal directory (and missing parents) readable by the gateway's user only:
/// its segments hold prompts and answers.
fn create_dir(dir: &std::path::Path) -> std::io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}
