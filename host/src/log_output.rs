//! Where log lines go: stderr, written by a thread of its own from a bounded
//! queue. Writing stderr directly blocks the thread that logs once its
//! reader falls behind (a full pipe, a stalled log driver): a plugin logging
//! on every event then held up the sockets and plugin calls of that thread,
//! and with a few such events in flight the whole node, `/healthz` included.
//! Past the queue's bound a line is dropped and counted
//! (`switchboard_log_lines_dropped_total`), and a warning says how many once
//! stderr takes lines again. What happens many times at once is warned of
//! with a count ([`ThrottledWarning`]).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tracing_appender::non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard};

/// Lines waiting for stderr at most: with lines of up to a few KiB (a
/// plugin's message is cut at 4 KiB), some MiB while stderr is stalled.
const QUEUED_LINES: usize = 4096;

/// A writer for the log subscriber, and the guard that writes out what is
/// queued when dropped (waiting a second at most for a stalled stderr).
pub fn to_stderr() -> (NonBlocking, WorkerGuard) {
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(QUEUED_LINES)
        .thread_name("switchboard-log")
        .finish(std::io::stderr());
    let dropped = writer.error_counter();
    crate::metrics::count_dropped_log_lines(move || dropped.dropped_lines());
    (writer, guard)
}

/// Least time between two warnings of one [`ThrottledWarning`].
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// Something that happens many times at once (calls refused, log lines
/// dropped), warned of with a count: the first time, then at most once per
/// [`WARN_EVERY`]. One warning each would flood the log just when it matters.
#[derive(Debug, Default)]
pub struct ThrottledWarning {
    unwarned: AtomicU64,
    warned_at: Mutex<Option<Instant>>,
}

impl ThrottledWarning {
    /// Counts one more; when a warning is due, how many it is of: those
    /// since the last warning, this one included.
    pub fn occurred(&self) -> Option<u64> {
        self.unwarned.fetch_add(1, Ordering::Relaxed);
        let mut warned_at = self
            .warned_at
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if warned_at.is_some_and(|at| at.elapsed() < WARN_EVERY) {
            return None;
        }
        *warned_at = Some(Instant::now());
        Some(self.unwarned.swap(0, Ordering::Relaxed))
    }
}
