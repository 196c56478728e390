//! Which thread a call's guest code runs on. Most calls take microseconds,
//! less than handing them to the plugin threads and the result back (two
//! thread wake-ups), so a call starts on its caller's thread. One still
//! running at its first yield (at the next epoch tick, or when it waits for
//! the host) continues on the plugin threads. Once a call of the plugin is
//! seen computing for long ([`Placement::long_call`]), the plugin's calls
//! start on the plugin threads for [`POOLED_FOR`]: a plugin that spins or
//! computes for long takes at most about a tick of a socket thread per
//! period, per socket thread.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio::task::JoinError;

/// How long the calls of a plugin seen computing for long start on the
/// plugin threads.
const POOLED_FOR: Duration = Duration::from_secs(1);

pub struct Placement {
    origin: Instant,
    /// Until when calls start on the plugin threads, in ns since `origin`.
    pooled_until: AtomicU64,
}

impl Placement {
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
            pooled_until: AtomicU64::new(0),
        }
    }

    /// A call of the plugin computed for long: its next calls start on the
    /// plugin threads for a while.
    pub fn long_call(&self) {
        self.pooled_until
            .store(self.now() + nanos(POOLED_FOR), Ordering::Relaxed);
    }

    /// Runs `work` to completion, here or on `plugin_threads`. Once handed
    /// over, it completes even if the caller goes away.
    pub async fn run<R: Send + 'static>(
        &self,
        plugin_threads: &Handle,
        work: impl Future<Output = R> + Send + 'static,
    ) -> Result<R, JoinError> {
        let mut work = Box::pin(work);
        if self.now() >= self.pooled_until.load(Ordering::Relaxed)
            && let Poll::Ready(result) =
                std::future::poll_fn(|cx| Poll::Ready(work.as_mut().poll(cx))).await
        {
            return Ok(result);
        }
        plugin_threads.spawn(work).await
    }

    fn now(&self) -> u64 {
        nanos(self.origin.elapsed())
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLUGIN_THREAD: &str = "placement-test-plugin";

    /// Whether `work` finished on the plugin threads.
    async fn finished_there(
        placement: &Placement,
        plugin_threads: &Handle,
        work: impl Future<Output = ()> + Send + 'static,
    ) -> bool {
        let name = placement
            .run(plugin_threads, async {
                work.await;
                std::thread::current().name().map(str::to_owned)
            })
            .await
            .expect("the call completes");
        name.as_deref() == Some(PLUGIN_THREAD)
    }

    #[tokio::test]
    async fn calls_start_here_until_one_of_them_computes_for_long() {
        let plugin_threads = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(PLUGIN_THREAD)
            .build()
            .expect("runtime");
        let threads = plugin_threads.handle();
        let placement = Placement::new();

        assert!(!finished_there(&placement, threads, async {}).await);
        // Pending at its first poll: it finishes on the plugin threads...
        assert!(finished_there(&placement, threads, tokio::task::yield_now()).await);
        // ...and the next call starts here again.
        assert!(!finished_there(&placement, threads, async {}).await);
        placement.long_call();
        assert!(finished_there(&placement, threads, async {}).await);
        plugin_threads.shutdown_background();
    }
}
