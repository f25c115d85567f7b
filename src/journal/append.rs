//! Appending: one frame, one write(2) under the writer lock, then the flush the policy asks
//! for; rotating to a new segment when the current one is full; unlinking freed segments.

use std::fs;
use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::record::{self, Record};
use super::segment::{self, HEADER_LEN};
use super::sync::Target;
use super::{
    FsyncPolicy, Journal, JournalError, JournalLatencies, JournalStats, Shared, Writer, lock,
};

/// A written record, for [`Journal::sync`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(u64);

impl Journal {
    /// Appends one record. When it returns `Ok`, the record has been handed to the kernel by a
    /// single write(2) (nothing is buffered in the process), so a process crash loses nothing
    /// appended; with [`FsyncPolicy::Always`] it is also on disk (an fdatasync covering it,
    /// shared with the appends in flight at the same time, has returned).
    ///
    /// An `Err` from the write means the record is not in the journal. A
    /// [`JournalError::Sync`] means it is written but may not survive a power failure; the
    /// next record goes to a new segment.
    pub fn append(&self, record: &Record<'_>) -> Result<(), JournalError> {
        let ticket = self.write(record)?;
        if self.shared.fsync == FsyncPolicy::Always {
            self.sync(ticket)?;
        }
        Ok(())
    }

    /// The first half of [`Journal::append`]: the single write(2), whatever the policy. A
    /// caller that must not block on the disk (an async task under `Always`) writes here and
    /// waits for [`Journal::sync`] elsewhere; a process crash already loses nothing written.
    pub fn write(&self, record: &Record<'_>) -> Result<Ticket, JournalError> {
        let frame = record::encode(record).map_err(|bytes| JournalError::RecordTooLarge {
            stream: record.stream().to_string(),
            bytes,
        })?;
        let shared = &*self.shared;
        let start = std::time::Instant::now();
        let (ticket, freed) = shared.write(record, &frame)?;
        shared.append_latency.observe(start.elapsed());
        shared.appended.fetch_add(1, Ordering::Relaxed);
        shared
            .appended_bytes
            .fetch_add(frame.len() as u64, Ordering::Relaxed);
        // Under `Interval` the background thread deletes them, with its flushes.
        if freed && !shared.background() {
            shared.delete_doomed();
        }
        Ok(Ticket(ticket))
    }

    /// The second half of [`Journal::append`]: returns once an fdatasync covering the record
    /// of `ticket` has (appends in flight together share one). Blocks on the disk.
    pub fn sync(&self, ticket: Ticket) -> Result<(), JournalError> {
        let shared = &*self.shared;
        shared.flush(ticket.0).map_err(|source| JournalError::Sync {
            path: segment::path(&shared.dir, lock(&shared.writer).segment),
            source,
        })
    }

    /// Counters for the admin endpoint.
    pub fn stats(&self) -> JournalStats {
        let shared = &*self.shared;
        let (segments, bytes) = lock(&shared.writer).ledger.usage();
        JournalStats {
            segments,
            bytes,
            records_appended: shared.appended.load(Ordering::Relaxed),
            syncs: shared.syncer.syncs.load(Ordering::Relaxed),
            sync_errors: shared.syncer.errors.load(Ordering::Relaxed),
            last_sync_error: shared.syncer.last_error(),
            segments_deleted: shared.deleted.load(Ordering::Relaxed),
        }
    }

    /// How long appends' writes took (the writer lock and the write(2)), and each fdatasync
    /// of records, for the metrics.
    pub fn latencies(&self) -> JournalLatencies {
        JournalLatencies {
            append: self.shared.append_latency.snapshot(),
            sync: self.shared.syncer.latency.snapshot(),
        }
    }

    /// Bytes of frames appended since the journal was opened.
    pub fn appended_bytes(&self) -> u64 {
        self.shared.appended_bytes.load(Ordering::Relaxed)
    }

    /// The state the flusher thread holds, to check that it lets go (tests).
    #[cfg(test)]
    pub(super) fn shared_weak(&self) -> std::sync::Weak<Shared> {
        Arc::downgrade(&self.shared)
    }
}

impl Drop for Journal {
    /// Stops the `Interval` thread (joining it), then flushes what it had not yet: a clean
    /// shutdown loses nothing, whatever the interval.
    fn drop(&mut self) {
        drop(self.flusher.take());
        if let FsyncPolicy::Interval(_) = self.shared.fsync {
            self.shared.flush_written();
        }
    }
}

impl Shared {
    /// Writes one frame; returns its ticket and whether segments were freed.
    fn write(&self, record: &Record<'_>, frame: &[u8]) -> Result<(u64, bool), JournalError> {
        let mut w = lock(&self.writer);
        let before = w.doomed.len();
        if w.rotate || w.len >= self.segment_bytes {
            self.rotate(&mut w)?;
        }
        let offset = w.len;
        if let Err(source) = (&*w.file).write_all(frame) {
            // A partial frame would hide every later record of this segment from recovery:
            // cut it off, or if even that fails, go on in a new segment.
            if w.file.set_len(offset).is_err() {
                w.rotate = true;
            }
            return Err(JournalError::Write {
                path: segment::path(&self.dir, w.segment),
                offset,
                source,
            });
        }
        let n = w.segment;
        w.len += frame.len() as u64;
        w.tickets += 1;
        w.ledger.grow(n, frame.len() as u64);
        match *record {
            Record::Forget { stream } => {
                let freed = w.ledger.forget(n, stream);
                w.doomed.extend(freed);
            }
            Record::Open { stream, .. } => w.ledger.open(n, stream),
            _ => w.ledger.data(n, record.stream()),
        }
        Ok((w.tickets, w.doomed.len() > before))
    }

    /// Whether flushes and deletions are the `Interval` thread's, off the append path.
    fn background(&self) -> bool {
        matches!(self.fsync, FsyncPolicy::Interval(_))
    }

    /// Closes the current segment and starts the next one. The closing segment is flushed,
    /// and the new one's header and directory entry, at once under `Always`, by the
    /// background thread at its next tick under `Interval` (before the new segment's records
    /// are: nothing is durable later than the interval promises), never under `Never`.
    fn rotate(&self, w: &mut Writer) -> Result<(), JournalError> {
        let durable = self.fsync != FsyncPolicy::Never;
        if self.background() {
            if !self.syncer.settled(w.tickets) {
                let closing = w.file.clone();
                w.unsynced.push(closing);
            }
            w.dir_dirty = true;
        } else if durable && !self.syncer.settled(w.tickets) {
            // Settles every ticket of the closing segment: flushes only ever cover the current
            // one after this.
            self.syncer
                .settle(w.tickets, self.syncer.sync_data(&w.file));
        }
        let next = w.segment + 1;
        let file = segment::create(&self.dir, next, durable && !self.background())?;
        w.file = Arc::new(file);
        w.segment = next;
        w.len = HEADER_LEN;
        w.rotate = false;
        let freed = w.ledger.open_segment(next, HEADER_LEN);
        w.doomed.extend(freed);
        Ok(())
    }

    /// Flushes through `ticket` (joining a round in flight). On failure the next record goes to
    /// a new segment: records behind bytes the disk may have lost could not be read back.
    pub(super) fn flush(&self, ticket: u64) -> io::Result<()> {
        let result = self.syncer.sync_through(ticket, || {
            let w = lock(&self.writer);
            Target {
                ticket: w.tickets,
                file: w.file.clone(),
            }
        });
        if result.is_err() {
            lock(&self.writer).rotate = true;
        }
        result
    }

    /// Flushes whatever was written and not yet flushed, closed segments and the directory
    /// first, then deletes what compaction freed (the `Interval` thread's tick).
    pub(super) fn flush_written(&self) {
        let (closed, dir) = {
            let mut w = lock(&self.writer);
            (
                std::mem::take(&mut w.unsynced),
                std::mem::take(&mut w.dir_dirty),
            )
        };
        for file in closed {
            // Counted and logged by the syncer; their tickets are settled with the current
            // segment's below (nobody waits for them under `Interval`).
            self.syncer.settle(0, self.syncer.sync_data(&file));
        }
        if dir && let Err(e) = segment::sync_dir(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "journal: cannot flush the directory");
        }
        let ticket = lock(&self.writer).tickets;
        if !self.syncer.settled(ticket) {
            // A failure is counted and logged by the syncer; no appender waits for it.
            let _ = self.flush(ticket);
        }
        self.delete_doomed();
    }

    /// Unlinks the segments compaction freed, in the order it freed them, flushing the
    /// directory after each (unless `Never`) so a power failure cannot bring back an older one
    /// after a newer one holding its `Forget` is gone. A segment that cannot be deleted stops
    /// the queue (it is retried when more is freed, or at the next open).
    pub(super) fn delete_doomed(&self) {
        let _in_order = lock(&self.deleting);
        loop {
            let Some(n) = lock(&self.writer).doomed.pop_front() else {
                return;
            };
            let path = segment::path(&self.dir, n);
            match fs::remove_file(&path) {
                Ok(()) => {
                    self.deleted.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "journal: cannot delete a compacted segment");
                    lock(&self.writer).doomed.push_front(n);
                    return;
                }
            }
            if self.fsync != FsyncPolicy::Never
                && let Err(e) = segment::sync_dir(&self.dir)
            {
                tracing::warn!(dir = %self.dir.display(), error = %e, "journal: cannot flush the directory");
            }
        }
    }
}
