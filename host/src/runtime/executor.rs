//! The threads plugin code runs on: a tokio runtime of its own, apart from
//! the workers that serve sockets and HTTP. A guest runs at most one epoch
//! tick ([`super::engine::EPOCH_TICK`]) before it yields, but while it runs it
//! holds its thread; on these threads that delays only other plugin calls,
//! never a socket's reads and writes, which the OS schedules beside them.

use std::io;
use std::thread::available_parallelism;

use tokio::runtime::{Builder, Handle, Runtime};

pub struct Executor {
    handle: Handle,
    /// `None` only while dropping.
    runtime: Option<Runtime>,
}

impl Executor {
    /// One thread per core: guest code is CPU-bound, more threads would only
    /// take turns.
    pub fn new() -> io::Result<Self> {
        let threads = available_parallelism().map_or(1, usize::from);
        let runtime = Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("switchboard-plugin")
            .enable_all()
            .build()?;
        Ok(Self {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
        })
    }

    /// Where to spawn plugin calls.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}

impl Drop for Executor {
    /// Without waiting: this may run on an async worker, where a blocking
    /// shutdown panics. Calls still running are cancelled.
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
