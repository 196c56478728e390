//! The threads plugin code runs on (all of it but the first slice of calls
//! likely to be short, see [`super::placement`]): a tokio runtime of its
//! own, apart from the workers that serve sockets and HTTP. A guest runs at
//! most one epoch tick ([`super::engine::EPOCH_TICK`]) before it yields, but
//! while it runs it holds its thread; on these threads that delays only
//! other plugin calls, never a socket's reads and writes, which the OS
//! schedules beside them.
//! On Linux the plugin threads also run at a lower OS priority, so on a busy
//! machine the threads serving sockets get the CPU first.

use std::io;
use std::num::NonZeroUsize;

use tokio::runtime::{Builder, Handle, Runtime};

pub struct Executor {
    handle: Handle,
    /// `None` only while dropping.
    runtime: Option<Runtime>,
}

impl Executor {
    /// One thread per core the node uses (`threads`): guest code is
    /// CPU-bound, more threads would only take turns.
    pub fn new(threads: NonZeroUsize) -> io::Result<Self> {
        let runtime = Builder::new_multi_thread()
            .worker_threads(threads.get())
            .thread_name("switchboard-plugin")
            .on_thread_start(lower_priority)
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

/// How much nicer than the rest of the server plugin threads are.
#[cfg(target_os = "linux")]
const NICER_BY: i32 = 10;

/// Linux gives each thread its own nice value: this lowers only the thread
/// that calls it.
#[cfg(target_os = "linux")]
fn lower_priority() {
    use rustix::process::{getpriority_process, setpriority_process};
    let thread = Some(rustix::thread::gettid());
    let lowered = getpriority_process(thread)
        .and_then(|nice| setpriority_process(thread, (nice + NICER_BY).min(19)));
    if let Err(error) = lowered {
        tracing::warn!("plugin thread left at the server's priority: {error}");
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() {}

impl Drop for Executor {
    /// When the runtime and every plugin are gone. Without waiting: this may
    /// run on an async worker, where a blocking shutdown panics.
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
