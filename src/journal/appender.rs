//! Appending from async tasks: the journal's own writer thread.
//!
//! An append is usually one write(2) to the page cache, but now and then it is much more: the
//! record that fills a segment closes it (an fdatasync of up to `segment_bytes`), creates the
//! next one (its header and the directory flushed), and compaction unlinks freed segments,
//! flushing the directory after each; under `fsync = "always"` every append waits for a disk
//! flush. None of that may run on an async worker thread, where it would stall every task
//! scheduled there. So async callers hand their records to one dedicated thread, which writes
//! them in the order they came, does whatever rotation, compaction and flushing they bring, and
//! tells each waiting caller when its record is in. Records that pile up while the thread is
//! busy are written back to back and share one flush under `always` (group commit).

use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;

use bytes::Bytes;
use tokio::sync::oneshot;

use super::{FsyncPolicy, Journal, JournalError, Record};

/// Records taken from the queue at once before their shared flush.
const MAX_GROUP: usize = 1024;

/// A [`Record`] that owns its data, to cross to the writer thread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnedRecord {
    /// See [`Record::Open`].
    Open {
        /// The stream id.
        stream: String,
        /// When it began (ms since the Unix epoch).
        created_ms: u64,
        /// The dialect it was asked in.
        door: &'static str,
        /// The client's raw request body.
        body: Bytes,
        /// Non-secret pass-through headers.
        forward: Vec<(String, String)>,
        /// The route that answered first.
        route: String,
    },
    /// See [`Record::Events`].
    Events {
        /// The stream id.
        stream: String,
        /// The `seq` of `events[0]`.
        first_seq: u64,
        /// The events' envelope JSON, in `seq` order.
        events: Vec<Bytes>,
    },
    /// See [`Record::End`].
    End {
        /// The stream id.
        stream: String,
    },
    /// See [`Record::Forget`].
    Forget {
        /// The stream id.
        stream: String,
    },
}

impl OwnedRecord {
    /// The record, borrowed.
    pub fn as_record(&self) -> Record<'_> {
        match self {
            OwnedRecord::Open {
                stream,
                created_ms,
                door,
                body,
                forward,
                route,
            } => Record::Open {
                stream,
                created_ms: *created_ms,
                door,
                body,
                forward,
                route,
            },
            OwnedRecord::Events {
                stream,
                first_seq,
                events,
            } => Record::Events {
                stream,
                first_seq: *first_seq,
                events,
            },
            OwnedRecord::End { stream } => Record::End { stream },
            OwnedRecord::Forget { stream } => Record::Forget { stream },
        }
    }
}

/// One record for the thread, and who waits for it (nobody, for [`Appender::submit`]).
struct Job {
    record: OwnedRecord,
    done: Option<oneshot::Sender<Result<(), JournalError>>>,
}

/// The journal behind its writer thread. Dropping it writes what is queued, then joins the
/// thread (the journal itself is dropped, and so flushed, with the last reference).
///
/// The queue has no cap of its own: a caller of [`Appender::append`] waits for its record
/// before it can queue another, and [`Appender::submit`] is for the one-off records of a
/// stream (its end, its forget), so what is queued is bounded by the streams alive.
#[derive(Debug)]
pub struct Appender {
    journal: Arc<Journal>,
    queue: Option<mpsc::Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl Appender {
    /// Starts the writer thread of `journal`.
    pub fn start(journal: Journal) -> Result<Appender, JournalError> {
        let journal = Arc::new(journal);
        let (queue, jobs) = mpsc::channel();
        let writing = Arc::clone(&journal);
        let thread = std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || run(&writing, &jobs))
            .map_err(|source| JournalError::Thread { source })?;
        Ok(Appender {
            journal,
            queue: Some(queue),
            thread: Some(thread),
        })
    }

    /// The journal (for its stats; appends go through [`Appender::append`]).
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// Appends `record` on the writer thread and waits, without blocking the async runtime,
    /// until it is written (and on disk, under [`FsyncPolicy::Always`]); see
    /// [`Journal::append`] for what each outcome means.
    pub async fn append(&self, record: OwnedRecord) -> Result<(), JournalError> {
        let (done, outcome) = oneshot::channel();
        self.send(Job {
            record,
            done: Some(done),
        })?;
        outcome.await.unwrap_or_else(|_| Err(stopped()))
    }

    /// Queues `record` without waiting for it: it is written after every record queued
    /// before it, and before every record queued after it. A failure is logged.
    pub fn submit(&self, record: OwnedRecord) {
        if let Err(e) = self.send(Job { record, done: None }) {
            tracing::error!(error = %e, "journal append failed");
        }
    }

    fn send(&self, job: Job) -> Result<(), JournalError> {
        self.queue
            .as_ref()
            .ok_or_else(stopped)?
            .send(job)
            .map_err(|_| stopped())
    }
}

impl Drop for Appender {
    fn drop(&mut self) {
        drop(self.queue.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("journal: the writer thread panicked");
        }
    }
}

fn stopped() -> JournalError {
    JournalError::Thread {
        source: std::io::Error::other("the journal's writer thread has stopped"),
    }
}

/// The writer thread: takes what is queued (up to [`MAX_GROUP`]), writes it in order, flushes
/// once under `Always`, and answers; until every sender is gone.
fn run(journal: &Journal, jobs: &mpsc::Receiver<Job>) {
    let always = journal.shared.fsync == FsyncPolicy::Always;
    let mut group = Vec::new();
    while let Ok(first) = jobs.recv() {
        group.push(first);
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let written: Vec<_> = group
            .drain(..)
            .map(|job| (journal.write(&job.record.as_record()), job))
            .collect();
        for (result, job) in written {
            // The first sync flushes for the whole group; the later ones find their tickets
            // settled (or failed with it).
            let result = match result {
                Ok(ticket) if always => journal.sync(ticket),
                Ok(_) => Ok(()),
                Err(e) => Err(e),
            };
            match job.done {
                // A caller that stopped waiting (its task was cancelled) needs no answer.
                Some(done) => drop(done.send(result)),
                None => {
                    if let Err(e) = result {
                        tracing::error!(stream = job.record.as_record().stream(), error = %e, "journal append failed");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::JournalConfig;

    fn events(stream: &str, first: u64, n: u64) -> OwnedRecord {
        OwnedRecord::Events {
            stream: stream.into(),
            first_seq: first,
            events: (first..first + n)
                .map(|seq| Bytes::from(format!(r#"{{"stream":"{stream}","seq":{seq}}}"#)))
                .collect(),
        }
    }

    fn open(stream: &str) -> OwnedRecord {
        OwnedRecord::Open {
            stream: stream.into(),
            created_ms: 1,
            door: "openai",
            body: Bytes::from_static(b"{}"),
            forward: Vec::new(),
            route: "p/m".into(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn appends_from_many_tasks_come_back_in_order_across_rotations() {
        for fsync in [FsyncPolicy::Always, FsyncPolicy::Never] {
            let dir = tempfile::tempdir().unwrap();
            let config = JournalConfig {
                fsync,
                segment_bytes: 512, // a rotation every few records
                ..JournalConfig::new(dir.path())
            };
            let (journal, _) = Journal::open(config.clone()).unwrap();
            let appender = Arc::new(Appender::start(journal).unwrap());
            let tasks: Vec<_> = (0..8)
                .map(|t| {
                    let appender = Arc::clone(&appender);
                    tokio::spawn(async move {
                        let stream = format!("s{t}");
                        appender.append(open(&stream)).await.unwrap();
                        for batch in 0..20 {
                            appender
                                .append(events(&stream, batch * 3, 3))
                                .await
                                .unwrap();
                        }
                        // Queued, not awaited: still written after the events.
                        appender.submit(OwnedRecord::End { stream });
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
            assert!(appender.journal().stats().segments > 10, "{fsync:?}");
            drop(appender); // writes what is queued, joins the thread
            let (_, recovered) = Journal::open(config).unwrap();
            assert_eq!(recovered.streams.len(), 8, "{fsync:?}");
            for s in &recovered.streams {
                assert_eq!(s.events.len(), 60, "{fsync:?} {}", s.stream);
                assert!(s.ended, "{fsync:?} {}", s.stream);
            }
        }
    }
}
