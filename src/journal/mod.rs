//! The durable, append-only on-disk journal of Agent Event streams: what lets a restarted
//! gateway serve (and resume) the streams it was serving when it went down.
//!
//! # Layout
//!
//! - `record`: a [`Record`], its frame on disk, reading a frame back.
//! - `segment`: segment files: names, header, creation, scanning one.
//! - `recover`: records replayed into [`RecoveredStream`]s, gap-free.
//! - `compact`: which closed segments may be deleted.
//! - `sync`: fdatasync: group commit (`Always`) and the background flusher (`Interval`).
//! - `open` and `append`: the [`Journal`] itself. [`JournalError`] says what failed where.
//! - `appender`: the journal's writer thread, for async callers ([`Appender`]): rotation,
//!   compaction and flushes never run on an async worker.
//!
//! # Format
//!
//! The journal is a directory of segment files `seg-00000001.log`, `seg-00000002.log`, ...,
//! numbered in write order (numbers compaction removed are not reused). A segment starts with
//! an 8-byte header, `SGJOURN` and a format version byte (1), then holds frames back to back:
//!
//! ```text
//! [u32 LE payload length][u32 LE CRC32 of payload][payload]
//! payload = tag u8, then fields; uN = LEB128 varint, bytes = varint length + the bytes as-is
//!   1 Open    stream, created_ms, door, body, header count, (name, value)*, route
//!             (route: absent in journals written before it was recorded)
//!   2 Events  stream, first_seq, event count, event*
//!   3 End     stream
//!   4 Forget  stream
//! ```
//!
//! Event bytes are written exactly as given: the envelope JSON is never re-escaped or
//! re-serialized. One [`Journal::append`] is one frame and one write(2), however many events it
//! carries. A segment is closed, and the next record starts a new one, once it holds
//! [`JournalConfig::segment_bytes`]; so a segment holds at most that plus one record.
//!
//! # What a crash loses
//!
//! An append returns once its frame was handed to the kernel with write(2): nothing is
//! buffered in the process. Then:
//!
//! - **Process crash** (panic, `kill -9`, OOM kill): nothing that was appended is lost, with any
//!   policy: the kernel has it. A write the crash cut in half was never acknowledged; recovery
//!   cuts it off.
//! - **Power failure or kernel crash**: what survives is what reached the disk.
//!   [`FsyncPolicy::Always`]: every acknowledged append (each returns after an fdatasync that
//!   covers it; concurrent appends share one). [`FsyncPolicy::Interval`]: everything but up to
//!   the last interval's appends (a background thread fdatasyncs the current segment every
//!   interval, and a segment closed meanwhile, with the directory, at its next tick; it also
//!   does compaction's unlinks, so no append ever waits for the disk).
//!   [`FsyncPolicy::Never`]: whatever the
//!   OS had written back (typically up to ~30 s on Linux).
//!
//! # Recovery
//!
//! [`Journal::open`] reads every segment in order. A bad record with nothing valid after it at
//! the end of the last segment is a torn write: the file is cut there ([`Recovered::torn_bytes`])
//! and appends continue after it. A bad record elsewhere ends that segment's reading: it counts
//! in [`Recovered::corrupt_segments`], is logged, the file is kept (and never appended to or
//! compacted), and the next segment is read. Forgotten streams are dropped; each stream's
//! events come back gap-free from seq 0 (duplicates are skipped, a gap ends the stream there).
//!
//! # Compaction
//!
//! A closed segment is deleted once every stream with records in it has been forgotten, and
//! no `Forget` record in it still guards a forgotten stream's records elsewhere (see
//! `compact.rs`). A stream never forgotten keeps its segments forever: the hub must forget
//! every stream it stops retaining.
//!
//! One process per directory: two journals on the same directory would corrupt each other.

mod append;
mod appender;
mod compact;
mod error;
mod open;
mod record;
mod recover;
mod segment;
mod sync;

use std::collections::VecDeque;
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

pub use append::Ticket;
pub use appender::{Appender, OwnedRecord};
pub use error::JournalError;
pub use record::Record;
pub use recover::{Recovered, RecoveredStream};

use crate::counters::{Histogram, Snapshot};
use compact::Ledger;
use sync::{Flusher, Syncer};

/// What recovery makes of one segment file's bytes, without I/O: the streams its records
/// rebuild, as [`Journal::open`] would from a journal holding only this segment (`last`: it is
/// the newest one, where a torn tail is expected). Public for the fuzzer (`fuzz/`): segment
/// bytes are untrusted input to the scanner and the record decoder.
pub fn recover_segment(buf: &[u8], last: bool) -> Vec<RecoveredStream> {
    let mut replay = recover::Replay::default();
    segment::scan(buf, last, |offset, entry| replay.apply(&entry, 1, offset));
    replay.finish()
}

/// Where the journal lives and how hard it tries to survive a power failure. The gateway's
/// config (`[streams.journal]`) is turned into this.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalConfig {
    /// The directory of segment files (created if missing).
    pub dir: PathBuf,
    /// When appended records are flushed to disk.
    pub fsync: FsyncPolicy,
    /// A segment is closed once it holds this many bytes: small enough that compaction frees
    /// disk soon after streams are forgotten, large enough to keep files few.
    pub segment_bytes: u64,
}

impl JournalConfig {
    /// Default segment size: 64 MiB.
    pub const DEFAULT_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

    /// A journal in `dir` with the default policy and segment size.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        JournalConfig {
            dir: dir.into(),
            fsync: FsyncPolicy::default(),
            segment_bytes: Self::DEFAULT_SEGMENT_BYTES,
        }
    }
}

impl Default for JournalConfig {
    /// `streamgate-journal` under the working directory.
    fn default() -> Self {
        JournalConfig::new("streamgate-journal")
    }
}

/// When appended records are flushed from the page cache to the disk: the trade between
/// append latency and what a power failure loses (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Every append returns after an fdatasync covering it (appends in flight together share
    /// one). Nothing acknowledged is lost; each append waits for the disk, so call it off the
    /// async runtime (an [`Appender`]) if the disk is slow.
    Always,
    /// A background thread fdatasyncs the current segment every interval when it was written
    /// to (an interval under 1 ms counts as 1 ms). A power failure loses up to one interval.
    Interval(Duration),
    /// Never fdatasync: the OS writes back when it likes. Fine for tests and for disposable
    /// journals.
    Never,
}

impl Default for FsyncPolicy {
    /// Every 100 ms: a power failure loses at most a tenth of a second of events, and appends
    /// never wait for the disk.
    fn default() -> Self {
        FsyncPolicy::Interval(Duration::from_millis(100))
    }
}

/// Counters for the admin endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct JournalStats {
    /// Segment files on disk.
    pub segments: usize,
    /// Bytes in them.
    pub bytes: u64,
    /// Records appended since the journal was opened.
    pub records_appended: u64,
    /// fdatasync calls made for records (successful or not).
    pub syncs: u64,
    /// Of those, the ones that failed.
    pub sync_errors: u64,
    /// The last fdatasync failure, if any: the disk may be losing data.
    pub last_sync_error: Option<String>,
    /// Segment files deleted by compaction since the journal was opened.
    pub segments_deleted: u64,
}

/// The journal's latency histograms (see [`Journal::latencies`]).
#[derive(Debug, Clone, PartialEq)]
pub struct JournalLatencies {
    /// One per record appended: the writer lock and the write(2) to the page cache.
    pub append: Snapshot,
    /// One per fdatasync of records (group commits, segments closed, the interval flush).
    pub sync: Snapshot,
}

/// The journal: appends records, syncs them per the policy, deletes segments nobody needs.
/// `Send + Sync`: share it in an `Arc`; appends from many tasks are serialized by one lock
/// around a write to the page cache (microseconds).
#[derive(Debug)]
pub struct Journal {
    shared: Arc<Shared>,
    /// The `Interval` thread; stopped and joined when the journal is dropped.
    flusher: Option<Flusher>,
}

/// What the journal and its flusher thread share.
#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    fsync: FsyncPolicy,
    segment_bytes: u64,
    /// The segment being appended to; held only for a write(2) (and rarely a rotation).
    writer: Mutex<Writer>,
    /// Flushes and their outcomes.
    syncer: Syncer,
    /// Held while unlinking segments, so they go in the order the ledger freed them.
    deleting: Mutex<()>,
    /// Records appended since open.
    appended: AtomicU64,
    /// Segments deleted since open.
    deleted: AtomicU64,
    /// Bytes of frames appended since open.
    appended_bytes: AtomicU64,
    /// How long each append's write took, lock wait included.
    append_latency: Histogram,
}

/// The append side, under one lock.
#[derive(Debug)]
struct Writer {
    /// The current segment, opened for appending. In an `Arc` so a flush runs without the lock.
    file: Arc<File>,
    /// Its number.
    segment: u64,
    /// Its length: where the next frame starts.
    len: u64,
    /// The ticket of the last record written (records written since open).
    tickets: u64,
    /// Which segments can be deleted.
    ledger: Ledger,
    /// Segments the ledger freed, oldest first, not yet unlinked.
    doomed: VecDeque<u64>,
    /// Start a new segment before the next write: the current one had a failed write or flush,
    /// and records behind possibly lost bytes could not be read back.
    rotate: bool,
    /// Under `Interval`: closed segments whose flush the background thread owes (a rotation
    /// never waits for the disk).
    unsynced: Vec<Arc<File>>,
    /// Under `Interval`: a segment was created since the directory was last flushed.
    dir_dirty: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these locks; a poisoned one still holds consistent data.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests;
