//! The log writer: formatted lines are appended to a bounded buffer, and a thread of its own
//! writes that buffer to stderr in batches, waking at most once per [`BATCH_WINDOW`].
//!
//! Why not `tracing_appender::non_blocking`: it hands each line to its thread through a
//! channel whose receiver is woken per line. At one client and fast answers, that wake-up
//! (a futex call and two context switches on a gateway pinned to one CPU) and a write per
//! line took a tenth of the gateway's CPU (docs/performance-gateway.md). Here a line costs
//! a lock and a copy; the thread is woken only when the buffer turns non-empty, then waits
//! out the window so that the lines of that time go out in one write.
//!
//! The buffer is capped ([`MAX_BUFFERED_BYTES`]): past it, lines are dropped and counted
//! rather than holding a request back behind a stalled stderr pipe, and the count is written
//! as a line of its own once there is room.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// How long the writer thread collects lines after the first one before writing them.
pub const BATCH_WINDOW: Duration = Duration::from_millis(5);
/// The most bytes waiting for the writer thread; lines beyond are dropped and counted.
pub const MAX_BUFFERED_BYTES: usize = 8 * 1024 * 1024;
/// How long a closing writer waits for its last batch to be written.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

#[derive(Default)]
struct State {
    lines: Vec<u8>,
    dropped: u64,
    /// The thread waits for lines: the next one wakes it.
    idle: bool,
    closed: bool,
    /// The thread has written its last batch.
    finished: bool,
}

struct Shared {
    state: Mutex<State>,
    /// The writer thread waits here for lines; a closing handle waits here for `finished`.
    changed: Condvar,
    cap: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Closes the writer: what is buffered is written at once, lines after are dropped. Waits
    /// for that last write at most `wait`.
    fn close(&self, wait: Duration) {
        let mut state = self.lock();
        state.closed = true;
        self.changed.notify_all();
        let deadline = std::time::Instant::now() + wait;
        while !state.finished {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return;
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

/// Where formatted lines go: cheap to clone, one per layer (`MakeWriter`).
#[derive(Clone)]
pub struct LogWriter {
    shared: Arc<Shared>,
}

/// Closes the writer when dropped: lines still buffered are written (waiting at most a
/// second), then the thread ends.
pub struct LogWriterGuard {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for LogWriterGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogWriterGuard").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for LogWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogWriter").finish_non_exhaustive()
    }
}

/// A writer of batches to `sink` on a thread named `name`, holding at most `cap` bytes.
pub fn spawn<W: Write + Send + 'static>(
    sink: W,
    name: &str,
    cap: usize,
) -> std::io::Result<(LogWriter, LogWriterGuard)> {
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        changed: Condvar::new(),
        cap,
    });
    let thread_shared = Arc::clone(&shared);
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || run(&thread_shared, sink))?;
    Ok((
        LogWriter {
            shared: Arc::clone(&shared),
        },
        LogWriterGuard { shared },
    ))
}

/// The writer thread: waits for lines, lets the window fill, writes the batch.
fn run<W: Write>(shared: &Shared, mut sink: W) {
    let mut batch = Vec::new();
    loop {
        let mut state = shared.lock();
        while state.lines.is_empty() && state.dropped == 0 && !state.closed {
            state.idle = true;
            state = shared
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        state.idle = false;
        if !state.closed {
            drop(state);
            std::thread::sleep(BATCH_WINDOW);
            state = shared.lock();
        }
        std::mem::swap(&mut batch, &mut state.lines);
        let dropped = std::mem::take(&mut state.dropped);
        let closed = state.closed;
        drop(state);
        if dropped > 0 {
            let _ = writeln!(
                batch,
                "streamgate: {dropped} log lines dropped: stderr did not keep up"
            );
        }
        // A failed write has nowhere to be reported: the lines are lost, as on a closed stderr.
        let _ = sink.write_all(&batch).and_then(|()| sink.flush());
        batch.clear();
        // What a burst grew is given back rather than kept for the rest of the process.
        batch.shrink_to(64 * 1024);
        if closed {
            let mut state = shared.lock();
            state.finished = true;
            shared.changed.notify_all();
            return;
        }
    }
}

impl Write for &LogWriter {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let mut state = self.shared.lock();
        if state.closed || state.lines.len() + line.len() > self.shared.cap {
            state.dropped += 1;
        } else {
            state.lines.extend_from_slice(line);
        }
        if state.idle {
            state.idle = false;
            self.shared.changed.notify_all();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    // Borrowed: a line costs the lock and the copy, not a reference count too.
    type Writer = &'a LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self
    }
}

impl LogWriter {
    /// Writes what is buffered now and closes the writer, for a process about to exit without
    /// running destructors (`std::process::exit`). Waits at most `wait`.
    pub fn close(&self, wait: Duration) {
        self.shared.close(wait);
    }
}

impl Drop for LogWriterGuard {
    fn drop(&mut self) {
        self.shared.close(CLOSE_WAIT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink the test reads back; `gate` held blocks its writes (a stalled stderr pipe).
    #[derive(Clone, Default)]
    struct Sink {
        bytes: Arc<Mutex<Vec<u8>>>,
        gate: Arc<Mutex<()>>,
        entered: Arc<std::sync::atomic::AtomicUsize>,
        writes: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.entered
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let _open = self.gate.lock().unwrap();
            self.writes
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.bytes.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Sink {
        /// Waits (boundedly) until the writer thread is in its `n`th write.
        fn wait_entered(&self, n: usize) {
            for _ in 0..10_000 {
                if self.entered.load(std::sync::atomic::Ordering::SeqCst) >= n {
                    return;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            panic!("the writer thread never wrote");
        }

        fn text(&self) -> String {
            String::from_utf8(self.bytes.lock().unwrap().clone()).unwrap()
        }
    }

    #[test]
    fn every_line_is_written_in_order_and_closing_writes_the_last_batch() {
        let sink = Sink::default();
        let (writer, guard) = spawn(sink.clone(), "test-log", MAX_BUFFERED_BYTES).unwrap();
        let mut expected = String::new();
        // Seeded sizes: lines of one byte to several kilobytes, several threads' worth.
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        for i in 0..2000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let line = format!("{i} {}\n", "x".repeat((seed % 4096) as usize));
            (&writer).write_all(line.as_bytes()).unwrap();
            expected.push_str(&line);
        }
        drop(guard);
        assert_eq!(sink.text(), expected);
    }

    #[test]
    fn lines_of_one_window_go_out_in_one_write() {
        let sink = Sink::default();
        let (writer, guard) = spawn(sink.clone(), "test-log", MAX_BUFFERED_BYTES).unwrap();
        // Held: the thread is stuck in its first write while 100 lines come in.
        let gate = sink.gate.lock().unwrap();
        (&writer).write_all(b"first\n").unwrap();
        sink.wait_entered(1);
        for i in 0..100 {
            (&writer).write_all(format!("{i}\n").as_bytes()).unwrap();
        }
        drop(gate);
        drop(guard);
        let writes = sink.writes.load(std::sync::atomic::Ordering::SeqCst);
        assert!(writes <= 2, "{writes} writes for two batches");
        assert_eq!(sink.text().lines().count(), 101);
    }

    #[test]
    fn past_the_cap_lines_are_dropped_counted_and_said() {
        let sink = Sink::default();
        let (writer, guard) = spawn(sink.clone(), "test-log", 64).unwrap();
        let gate = sink.gate.lock().unwrap();
        (&writer).write_all(b"stuck\n").unwrap();
        sink.wait_entered(1);
        // The thread holds "stuck"; 64 bytes fit in the buffer, the rest is dropped.
        for _ in 0..20 {
            (&writer).write_all(b"0123456789abcde\n").unwrap();
        }
        drop(gate);
        drop(guard);
        let text = sink.text();
        assert_eq!(text.matches("0123456789abcde").count(), 4, "{text}");
        assert!(text.contains("16 log lines dropped"), "{text}");
    }

    #[test]
    fn closing_through_a_writer_writes_what_is_buffered_at_once() {
        let sink = Sink::default();
        let (writer, _guard) = spawn(sink.clone(), "test-log", MAX_BUFFERED_BYTES).unwrap();
        (&writer).write_all(b"last words\n").unwrap();
        writer.close(Duration::from_secs(30));
        assert_eq!(sink.text(), "last words\n");
        (&writer).write_all(b"after the close\n").unwrap();
        assert_eq!(
            sink.text(),
            "last words\n",
            "nothing is written after the close"
        );
    }

    #[test]
    fn a_stalled_sink_does_not_hold_a_closing_writer_forever() {
        let sink = Sink::default();
        let (writer, guard) = spawn(sink.clone(), "test-log", 1024).unwrap();
        let gate = sink.gate.lock().unwrap();
        (&writer)
            .write_all(b"never written while the gate is held\n")
            .unwrap();
        let started = std::time::Instant::now();
        drop(guard);
        assert!(started.elapsed() < CLOSE_WAIT * 30, "the close is bounded");
        drop(gate);
    }
}
