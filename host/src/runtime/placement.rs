//! Which thread a call's guest code runs on. Most calls take microseconds,
//! less than handing them to the plugin threads and the result back (two
//! thread wake-ups), so a call starts on its caller's thread. One still
//! running at its first yield (at the next epoch tick, or when it waits for
//! the host) continues on the plugin threads. A call that ran past
//! [`INLINE_BUDGET`] before that yield has its plugin's calls start on the
//! plugin threads for [`POOLED_FOR`]: a plugin that spins or computes for
//! long takes at most about a tick of a socket thread per period, per socket
//! thread. A call that finished, however long it took, moves nothing: most
//! of those were short calls whose thread the OS gave to another for a
//! while.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio::task::JoinError;

/// Guest time a call may take on its caller's thread and still have the
/// next calls of its plugin start there.
const INLINE_BUDGET: Duration = Duration::from_micros(200);
/// How long the calls of a plugin whose call outran the budget start on the
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

    /// Runs `work` to completion, here or on `plugin_threads`. Once handed
    /// over, it completes even if the caller goes away.
    pub async fn run<R: Send + 'static>(
        &self,
        plugin_threads: &Handle,
        work: impl Future<Output = R> + Send + 'static,
    ) -> Result<R, JoinError> {
        let mut work = Box::pin(work);
        if self.now() >= self.pooled_until.load(Ordering::Relaxed) {
            let started = Instant::now();
            let first = std::future::poll_fn(|cx| Poll::Ready(work.as_mut().poll(cx))).await;
            // Pending alone proves nothing: a short call yields too when a
            // tick falls in it.
            if first.is_pending() && started.elapsed() > INLINE_BUDGET {
                self.pooled_until
                    .store(self.now() + nanos(POOLED_FOR), Ordering::Relaxed);
            }
            if let Poll::Ready(result) = first {
                return Ok(result);
            }
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
    async fn short_calls_stay_here_until_one_outruns_the_budget() {
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
        // ...but a short call that yielded does not move the next ones.
        assert!(!finished_there(&placement, threads, async {}).await);
        // Slow but finished: the OS may have taken the thread away.
        let slow = async { std::thread::sleep(INLINE_BUDGET * 2) };
        assert!(!finished_there(&placement, threads, slow).await);
        assert!(!finished_there(&placement, threads, async {}).await);
        // Still running past the budget: the next calls start over there.
        let long = async {
            std::thread::sleep(INLINE_BUDGET * 2);
            tokio::task::yield_now().await;
        };
        assert!(finished_there(&placement, threads, long).await);
        assert!(finished_there(&placement, threads, async {}).await);
        plugin_threads.shutdown_background();
    }
}
