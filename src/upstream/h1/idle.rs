//! One provider's idle HTTP/1.1 connections, ready for the next streamed answer.
//!
//! Last in, first out: the connection used most recently is the one most likely still open
//! at the provider (and the ones at the bottom age out). A connection comes back here only
//! after its response body ended cleanly and the provider left it open for another request;
//! one that broke or was dropped mid-body is closed by dropping it instead. Before one is
//! reused it is read once without blocking, so a connection the provider closed while it
//! sat here is noticed and dropped rather than sent on.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::time::Instant;

use super::Conn;

/// Idle connections kept per provider at most: beyond that, a finished one is closed.
pub(super) const MAX_IDLE: usize = 1024;

/// How long a connection may sit idle before it is closed (reqwest's `pool_idle_timeout`,
/// the same as before streamed answers had their own client).
pub(super) const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// A provider's idle connections.
#[derive(Debug)]
pub(super) struct Idle {
    stack: Mutex<Vec<Parked>>,
    cap: usize,
    timeout: Duration,
    /// Whether the task that closes expired connections runs (started with the first one
    /// parked, as only then is there a runtime to run it on).
    reaping: std::sync::atomic::AtomicBool,
}

/// A connection waiting for its next request, and since when.
#[derive(Debug)]
struct Parked {
    conn: Conn,
    since: Instant,
}

impl Idle {
    /// An empty pool keeping at most `cap` connections, each for at most `timeout`.
    pub(super) fn new(cap: usize, timeout: Duration) -> Idle {
        Idle {
            stack: Mutex::new(Vec::new()),
            cap,
            timeout,
            reaping: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The most recently parked connection still open, if any.
    pub(super) fn take(&self) -> Option<Conn> {
        loop {
            let parked = self.lock().pop()?;
            if parked.since.elapsed() >= self.timeout {
                // Everything below it parked earlier: expired too.
                let expired = std::mem::take(&mut *self.lock());
                drop(expired);
                return None;
            }
            let mut conn = parked.conn;
            if conn.still_open() {
                return Some(conn);
            }
        }
    }

    /// Parks `conn` for reuse, unless the pool is full (then it is closed).
    pub(super) fn put(self: &Arc<Self>, conn: Conn) {
        {
            let mut stack = self.lock();
            if stack.len() >= self.cap {
                return;
            }
            stack.push(Parked {
                conn,
                since: Instant::now(),
            });
        }
        self.start_reaper();
    }

    /// Connections parked now.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Parked>> {
        // A panic while holding the lock cannot leave the stack half-changed (each change
        // is one push, pop or take): the data is still good.
        self.stack
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Closes expired connections now and then, so that a provider no longer called does
    /// not keep its sockets open forever.
    fn start_reaper(self: &Arc<Self>) {
        use std::sync::atomic::Ordering;
        if self.reaping.swap(true, Ordering::Relaxed) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.reaping.store(false, Ordering::Relaxed);
            return;
        };
        let pool = Arc::downgrade(self);
        let every = self.timeout / 3;
        runtime.spawn(reap(pool, every));
    }

    /// Drops the connections parked for longer than the timeout.
    fn expire(&self) {
        let expired: Vec<Parked> = {
            let mut stack = self.lock();
            // Oldest at the bottom: the expired ones are a prefix.
            let keep_from = stack
                .iter()
                .position(|p| p.since.elapsed() < self.timeout)
                .unwrap_or(stack.len());
            stack.drain(..keep_from).collect()
        };
        // Closed outside the lock.
        drop(expired);
    }
}

/// The reaper: runs until the pool is gone (the gateway reloaded or stopped).
async fn reap(pool: Weak<Idle>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match pool.upgrade() {
            Some(pool) => pool.expire(),
            None => return,
        }
    }
}
