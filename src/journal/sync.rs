//! Getting appended records from the page cache to the disk: the group commit behind
//! `FsyncPolicy::Always` ([`Syncer::sync_through`]) and the background thread behind
//! `FsyncPolicy::Interval` ([`Flusher`]).
//!
//! Every appended record gets a ticket (1, 2, 3, ... in write order). One fdatasync of the
//! current segment settles every ticket written before it started (older segments were synced
//! when they were closed), so appenders that arrive while a sync runs wait for it to end and
//! then share the next one: one disk flush per batch, not per record.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::counters::{DISK_BUCKETS, Histogram};

/// What a sync round flushes: the segment being appended to, and the last ticket written to
/// it when the round began.
#[derive(Debug)]
pub(crate) struct Target {
    pub(crate) ticket: u64,
    pub(crate) file: Arc<File>,
}

/// A range of tickets `(after, through]` whose flush failed.
#[derive(Debug)]
struct Failure {
    after: u64,
    through: u64,
    kind: io::ErrorKind,
    message: String,
}

/// Failed ranges kept for appenders still to wake up; older ones are long answered.
const FAILURES_KEPT: usize = 64;

#[derive(Debug, Default)]
struct State {
    /// Every ticket up to this one is settled: flushed, or in a failed range.
    settled: u64,
    /// A round is flushing: later appenders wait for it rather than start their own.
    running: bool,
    failures: VecDeque<Failure>,
}

impl State {
    /// The outcome of a settled ticket.
    fn outcome(&self, ticket: u64) -> io::Result<()> {
        match self
            .failures
            .iter()
            .rev()
            .find(|f| f.after < ticket && ticket <= f.through)
        {
            Some(f) => Err(io::Error::new(f.kind, f.message.clone())),
            None => Ok(()),
        }
    }
}

/// Tickets and their flushes, plus the counters the stats report.
#[derive(Debug)]
pub(crate) struct Syncer {
    state: Mutex<State>,
    done: Condvar,
    /// fdatasync calls made (successful or not).
    pub(crate) syncs: AtomicU64,
    /// fdatasync calls that failed.
    pub(crate) errors: AtomicU64,
    /// The last failure, for the admin endpoint.
    last_error: Mutex<Option<String>>,
    /// How long each fdatasync of records took (for the metrics).
    pub(crate) latency: Histogram,
}

impl Default for Syncer {
    fn default() -> Syncer {
        Syncer {
            state: Mutex::default(),
            done: Condvar::new(),
            syncs: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            last_error: Mutex::new(None),
            latency: Histogram::new(DISK_BUCKETS),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while holding these locks; a poisoned one still holds consistent data.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Syncer {
    /// Returns once `ticket` is on disk, flushing (or waiting for the round in progress, then
    /// flushing) as needed. `target` names what to flush; it is called without this
    /// syncer's lock held.
    pub(crate) fn sync_through(&self, ticket: u64, target: impl Fn() -> Target) -> io::Result<()> {
        let mut state = lock(&self.state);
        loop {
            if state.settled >= ticket {
                return state.outcome(ticket);
            }
            if state.running {
                state = self
                    .done
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            state.running = true;
            drop(state);
            let target = target();
            let result = self.sync_data(&target.file);
            state = lock(&self.state);
            state.running = false;
            self.settle_locked(&mut state, target.ticket, result);
            self.done.notify_all();
        }
    }

    /// `file.sync_data()`, timed into [`Syncer::latency`].
    pub(crate) fn sync_data(&self, file: &File) -> io::Result<()> {
        let start = Instant::now();
        let result = file.sync_data();
        self.latency.observe(start.elapsed());
        result
    }

    /// Records the outcome of a flush made outside a round (a segment being closed): every
    /// ticket through `through` is settled by it.
    pub(crate) fn settle(&self, through: u64, result: io::Result<()>) {
        let mut state = lock(&self.state);
        self.settle_locked(&mut state, through, result);
        self.done.notify_all();
    }

    fn settle_locked(&self, state: &mut State, through: u64, result: io::Result<()>) {
        self.syncs.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = result {
            self.errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "journal: fdatasync failed");
            *lock(&self.last_error) = Some(e.to_string());
            if through > state.settled {
                if state.failures.len() == FAILURES_KEPT {
                    state.failures.pop_front();
                }
                state.failures.push_back(Failure {
                    after: state.settled,
                    through,
                    kind: e.kind(),
                    message: e.to_string(),
                });
            }
        }
        state.settled = state.settled.max(through);
    }

    /// Whether `ticket` is already settled (nothing to flush).
    pub(crate) fn settled(&self, ticket: u64) -> bool {
        lock(&self.state).settled >= ticket
    }

    /// The last flush failure, if any.
    pub(crate) fn last_error(&self) -> Option<String> {
        lock(&self.last_error).clone()
    }
}

/// The background thread of `FsyncPolicy::Interval`: every interval, flushes the current
/// segment if anything was written since the last flush. Stopped and joined on drop, so a
/// dropped journal leaves no thread behind.
#[derive(Debug)]
pub(crate) struct Flusher {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Flusher {
    /// Starts the thread; `flush` is called every `interval` until the flusher is dropped.
    pub(crate) fn start(
        interval: Duration,
        flush: impl Fn() + Send + 'static,
    ) -> io::Result<Flusher> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let signal = stop.clone();
        let thread = std::thread::Builder::new()
            .name("journal-fsync".into())
            .spawn(move || {
                let (stopped, wake) = &*signal;
                let mut next = Instant::now() + interval;
                let mut guard = lock(stopped);
                loop {
                    let now = Instant::now();
                    if *guard {
                        return;
                    }
                    if now < next {
                        guard = wake
                            .wait_timeout(guard, next - now)
                            .unwrap_or_else(PoisonError::into_inner)
                            .0;
                        continue;
                    }
                    drop(guard);
                    flush();
                    next = Instant::now() + interval;
                    guard = lock(stopped);
                }
            })?;
        Ok(Flusher {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        let (stopped, wake) = &*self.stop;
        *lock(stopped) = true;
        wake.notify_all();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::warn!("journal: the fsync thread panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn file() -> Arc<File> {
        Arc::new(tempfile::tempfile().unwrap())
    }

    #[test]
    fn a_settled_ticket_needs_no_flush() {
        let syncer = Syncer::default();
        let f = file();
        syncer
            .sync_through(3, || Target {
                ticket: 5,
                file: f.clone(),
            })
            .unwrap();
        assert!(syncer.settled(5));
        let called = AtomicUsize::new(0);
        syncer
            .sync_through(4, || {
                called.fetch_add(1, Ordering::Relaxed);
                Target {
                    ticket: 5,
                    file: f.clone(),
                }
            })
            .unwrap();
        assert_eq!(
            called.load(Ordering::Relaxed),
            0,
            "ticket 4 was flushed by the first round"
        );
        assert_eq!(syncer.syncs.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn appenders_arriving_during_a_flush_share_it() {
        let syncer = Arc::new(Syncer::default());
        let f = file();
        let running = Arc::new(std::sync::Barrier::new(3));
        let leader = {
            let (syncer, f, running) = (syncer.clone(), f.clone(), running.clone());
            std::thread::spawn(move || {
                syncer.sync_through(1, || {
                    running.wait(); // the others start while this round runs
                    std::thread::sleep(Duration::from_millis(50));
                    Target {
                        ticket: 3,
                        file: f.clone(),
                    }
                })
            })
        };
        let followers: Vec<_> = (2..=3)
            .map(|ticket| {
                let (syncer, f, running) = (syncer.clone(), f.clone(), running.clone());
                std::thread::spawn(move || {
                    running.wait();
                    syncer.sync_through(ticket, || Target {
                        ticket,
                        file: f.clone(),
                    })
                })
            })
            .collect();
        leader.join().unwrap().unwrap();
        for f in followers {
            f.join().unwrap().unwrap();
        }
        assert_eq!(
            syncer.syncs.load(Ordering::Relaxed),
            1,
            "one flush for three appends"
        );
    }

    #[test]
    fn a_failed_flush_fails_exactly_its_tickets() {
        let syncer = Syncer::default();
        syncer.settle(2, Ok(()));
        syncer.settle(6, Err(io::Error::other("disk on fire")));
        syncer.settle(9, Ok(()));
        let f = file();
        let target = || Target {
            ticket: 9,
            file: f.clone(),
        };
        assert!(syncer.sync_through(2, target).is_ok());
        assert!(syncer.sync_through(3, target).is_err());
        assert!(syncer.sync_through(6, target).is_err());
        assert!(syncer.sync_through(7, target).is_ok());
        assert_eq!(syncer.errors.load(Ordering::Relaxed), 1);
        assert_eq!(syncer.last_error().as_deref(), Some("disk on fire"));
    }

    #[test]
    fn the_flusher_runs_and_stops_when_dropped() {
        let count = Arc::new(AtomicUsize::new(0));
        let seen = count.clone();
        let flusher = Flusher::start(Duration::from_millis(1), move || {
            seen.fetch_add(1, Ordering::Relaxed);
        })
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while count.load(Ordering::Relaxed) < 3 {
            assert!(Instant::now() < deadline, "the flusher never ran");
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(flusher); // joins
        assert_eq!(Arc::strong_count(&count), 1, "the thread's closure is gone");
    }
}
