//! Where log lines go: stderr, written by a thread of its own from a bounded
//! queue. Writing stderr directly blocks the thread that logs once its
//! reader falls behind (a full pipe, a stalled log driver): a plugin logging
//! on every event then held up the sockets and plugin calls of that thread,
//! and with a few such events in flight the whole node, `/healthz` included.
//! Past the queue's bound a line is dropped and counted
//! (`switchboard_log_lines_dropped_total`), and a warning says how many once
//! stderr takes lines again.

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
