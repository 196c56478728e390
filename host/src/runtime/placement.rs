//! Which thread a call's guest code runs on. Most calls take microseconds,
//! less than handing them to the plugin threads and the result back (two
//! thread wake-ups), so a call runs on its caller's thread until it has
//! held it for [`HELD_FOR_LONG`] (time spent waiting for the host does not
//! count), then continues on the plugin threads. Once a call of the plugin
//! is seen computing for long ([`Placement::long_call`]), the plugin's calls
//! start on the plugin threads for [`POOLED_FOR`]: a plugin that spins or
//! computes for long takes at most about an epoch tick of a socket thread
//! per period, per socket thread.
//!
//! A call yielding at an epoch tick after microseconds stays where it is:
//! handed over, it would wait behind whatever the plugin threads compute
//! until their next tick, a millisecond added to a short call.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::runtime::Handle;
use tokio::task::JoinError;

/// How long the calls of a plugin seen computing for long start on the
/// plugin threads.
const POOLED_FOR: Duration = Duration::from_secs(1);

/// How long a call may hold its caller's thread. Wall time: a call the OS
/// preempts is handed over too, which is why it does not count as long.
const HELD_FOR_LONG: Duration = Duration::from_micros(100);

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

    /// Runs `work` to completion, here or on `plugin_threads`. Once it has
    /// waited (for the host, or at an epoch tick) it completes even if the
    /// caller goes away.
    /// `work` comes boxed: a call's future is kilobytes, and moving it into
    /// this one would copy it into every future awaiting it.
    pub async fn run<F>(
        &self,
        plugin_threads: &Handle,
        work: Pin<Box<F>>,
    ) -> Result<F::Output, JoinError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let now = Instant::now();
        if self.since_origin(now) < self.pooled_until.load(Ordering::Relaxed) {
            return plugin_threads.spawn(work).await;
        }
        let mut here = Held {
            work: Some(work),
            held: Duration::ZERO,
            next_poll: Some(now),
        };
        // Most calls finish in their first poll, without a task of their own.
        match std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut here).poll(cx))).await {
            Poll::Ready(Ran::Finished(result)) => Ok(result),
            Poll::Ready(Ran::HandedOver(work)) => plugin_threads.spawn(work).await,
            Poll::Pending => {
                let plugin_threads = plugin_threads.clone();
                let rest = tokio::spawn(async move {
                    match here.await {
                        Ran::Finished(result) => Ok(result),
                        Ran::HandedOver(work) => plugin_threads.spawn(work).await,
                    }
                });
                rest.await.and_then(|finished| finished)
            }
        }
    }

    fn now(&self) -> u64 {
        self.since_origin(Instant::now())
    }

    fn since_origin(&self, instant: Instant) -> u64 {
        nanos(instant.saturating_duration_since(self.origin))
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// A call polled on its caller's thread until it finishes or has held the
/// thread for [`HELD_FOR_LONG`].
struct Held<F> {
    /// `None` once handed over.
    work: Option<Pin<Box<F>>>,
    held: Duration,
    /// When its next poll starts, if known already: the first, when it
    /// was placed.
    next_poll: Option<Instant>,
}

enum Ran<F: Future> {
    Finished(F::Output),
    HandedOver(Pin<Box<F>>),
}

impl<F: Future> Future for Held<F> {
    type Output = Ran<F>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Ran<F>> {
        let started = self.next_poll.take().unwrap_or_else(Instant::now);
        let work = self.work.as_mut().expect("polled after it was handed over");
        if let Poll::Ready(result) = work.as_mut().poll(cx) {
            return Poll::Ready(Ran::Finished(result));
        }
        self.held += started.elapsed();
        if self.held <= HELD_FOR_LONG {
            return Poll::Pending;
        }
        let work = self.work.take().expect("checked above");
        Poll::Ready(Ran::HandedOver(work))
    }
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
            .run(
                plugin_threads,
                Box::pin(async {
                    work.await;
                    std::thread::current().name().map(str::to_owned)
                }),
            )
            .await
            .expect("the call completes");
        name.as_deref() == Some(PLUGIN_THREAD)
    }

    fn plugin_threads() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(PLUGIN_THREAD)
            .build()
            .expect("runtime")
    }

    #[tokio::test]
    async fn calls_run_here_until_they_compute_for_long() {
        let plugin_threads = plugin_threads();
        let threads = plugin_threads.handle();
        let placement = Placement::new();

        assert!(!finished_there(&placement, threads, async {}).await);
        // Waiting is not computing: a call yielding at once stays here.
        assert!(!finished_there(&placement, threads, tokio::task::yield_now()).await);
        // Computing (here: blocking) for long, then done without a yield:
        // nowhere to hand it over to in between.
        let computes = async { std::thread::sleep(HELD_FOR_LONG * 2) };
        assert!(!finished_there(&placement, threads, computes).await);
        // Computing for long, then yielding (at an epoch tick): the rest
        // runs on the plugin threads...
        let computes_then_yields = async {
            std::thread::sleep(HELD_FOR_LONG * 2);
            tokio::task::yield_now().await;
        };
        assert!(finished_there(&placement, threads, computes_then_yields).await);
        // ...but the next call starts here again.
        assert!(!finished_there(&placement, threads, async {}).await);
        placement.long_call();
        assert!(finished_there(&placement, threads, async {}).await);
        plugin_threads.shutdown_background();
    }

    #[tokio::test]
    async fn a_call_that_waited_completes_without_its_caller() {
        let plugin_threads = plugin_threads();
        let placement = Placement::new();
        let (go, went) = tokio::sync::oneshot::channel::<()>();
        let (done, finished) = tokio::sync::oneshot::channel();
        let call = placement.run(
            plugin_threads.handle(),
            Box::pin(async move {
                went.await.expect("the test sends");
                done.send(()).expect("the test waits");
            }),
        );
        // The caller gives up while the call waits.
        let gave_up = tokio::time::timeout(Duration::from_millis(10), call).await;
        assert!(gave_up.is_err());
        go.send(()).expect("the call waits");
        finished.await.expect("the call completes");
        plugin_threads.shutdown_background();
    }
}
