//! The queue between a socket's handlers and its task, and the alarm its
//! task also waits on.
//!
//! A queue that holds nothing allocates nothing: an idle socket's costs a
//! few words, where a tokio channel's was a kilobyte (its cache-padded
//! state and a first block of 32 slots). Its one reader is the socket's
//! task, so a [`Notify`] permit is all the waking it needs.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use futures_util::task::AtomicWaker;
use tokio::sync::Notify;

/// Room a queue keeps once drained; a burst's is given back.
const KEPT_CAPACITY: usize = 4;

pub(super) struct JobQueue<T> {
    state: Mutex<State<T>>,
    /// A permit for the reader whenever something is queued.
    queued: Notify,
}

struct State<T> {
    items: VecDeque<T>,
    /// The reader is gone: nothing is queued any more.
    closed: bool,
}

/// Why an item was not queued; it comes back.
#[derive(Debug)]
pub(super) enum Refused<T> {
    /// `capacity` items were waiting.
    Full(T),
    /// The reader is gone.
    Closed(T),
}

impl<T> JobQueue<T> {
    pub(super) fn new() -> Self {
        Self {
            state: Mutex::new(State {
                items: VecDeque::new(),
                closed: false,
            }),
            queued: Notify::new(),
        }
    }

    /// Queues `item` unless `capacity` items are waiting.
    pub(super) fn try_push(&self, item: T, capacity: usize) -> Result<(), Refused<T>> {
        let mut state = self.state();
        if state.closed {
            return Err(Refused::Closed(item));
        }
        if state.items.len() >= capacity {
            return Err(Refused::Full(item));
        }
        state.items.push_back(item);
        drop(state);
        self.queued.notify_one();
        Ok(())
    }

    /// Queues `item` however many are waiting: for what must reach the
    /// reader, once (a disconnect).
    pub(super) fn push(&self, item: T) -> Result<(), T> {
        self.try_push(item, usize::MAX)
            .map_err(|refused| match refused {
                Refused::Full(item) | Refused::Closed(item) => item,
            })
    }

    /// The next item, when there is one. Cancel-safe: an item is taken only
    /// when it is returned.
    pub(super) async fn next(&self) -> T {
        loop {
            {
                let mut state = self.state();
                if let Some(item) = state.items.pop_front() {
                    if state.items.is_empty() && state.items.capacity() > KEPT_CAPACITY {
                        state.items.shrink_to(KEPT_CAPACITY);
                    }
                    return item;
                }
            }
            self.queued.notified().await;
        }
    }

    /// The reader is done: what is queued is dropped, and nothing more is
    /// taken.
    pub(super) fn close(&self) {
        // Dropped once the lock is released: a queued disconnect's waiter
        // wakes as its sender drops.
        let dropped = {
            let mut state = self.state();
            state.closed = true;
            std::mem::take(&mut state.items)
        };
        drop(dropped);
    }

    fn state(&self) -> MutexGuard<'_, State<T>> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Raised once, waited for by the socket's task on every turn of its loop:
/// an atomic and a waker, where a `CancellationToken` takes two locks each
/// time it is polled.
#[derive(Default)]
pub(super) struct Alarm {
    raised: AtomicBool,
    waker: AtomicWaker,
}

impl Alarm {
    pub(super) fn raise(&self) {
        self.raised.store(true, Ordering::Release);
        self.waker.wake();
    }

    pub(super) async fn raised(&self) {
        std::future::poll_fn(|cx| {
            if self.raised.load(Ordering::Acquire) {
                return Poll::Ready(());
            }
            self.waker.register(cx.waker());
            // Raised between the check and the registration: not woken.
            if self.raised.load(Ordering::Acquire) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }
}

/// For a wait that a socket's task polls on every turn of its loop but whose
/// own poll is costly (a `CancellationToken`'s takes two locks, and the
/// node's closing token is shared by every socket): the wait is polled with
/// a waker that raises this alarm, and again only once it did, lowering it;
/// every other turn costs the alarm's atomics, no lock.
#[derive(Default)]
pub(super) struct Wakeup(Alarm);

impl Wakeup {
    /// What the waker `wait` is polled with calls.
    pub(super) fn wake(&self) {
        self.0.raise();
    }

    /// Waits for `wait`, polling it with `waker`, which must call
    /// [`Self::wake`]: first at once, then each time it has woken.
    pub(super) async fn polled_when_woken<F: Future>(&self, waker: &Waker, wait: F) -> F::Output {
        let Self(alarm) = self;
        let mut wait = std::pin::pin!(wait);
        let mut first = true;
        std::future::poll_fn(|cx| {
            // Registered before the check: a wake after it wakes this task.
            alarm.waker.register(cx.waker());
            if !std::mem::take(&mut first) && !alarm.raised.swap(false, Ordering::AcqRel) {
                return Poll::Pending;
            }
            wait.as_mut().poll(&mut Context::from_waker(waker))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn items_come_out_in_order_and_the_bound_refuses_the_next() {
        let queue = JobQueue::new();
        queue.try_push(1, 2).expect("room");
        queue.try_push(2, 2).expect("room");
        assert!(matches!(queue.try_push(3, 2), Err(Refused::Full(3))));
        queue.push(4).expect("past the bound");
        assert_eq!(queue.next().await, 1);
        assert_eq!(queue.next().await, 2);
        assert_eq!(queue.next().await, 4);
    }

    /// What `wait` gives, run on a task that is still waiting when `wake` is called.
    async fn woken<T: Send + 'static>(
        wait: impl Future<Output = T> + Send + 'static,
        wake: impl FnOnce(),
    ) -> T {
        let waiter = tokio::spawn(wait);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "waits until woken");
        wake();
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("the waiter did not panic")
    }

    #[tokio::test]
    async fn a_waiting_reader_wakes_for_an_item() {
        let queue = Arc::new(JobQueue::new());
        let reader = queue.clone();
        let item = woken(async move { reader.next().await }, || {
            queue.push("event").expect("open");
        })
        .await;
        assert_eq!(item, "event");
    }

    #[tokio::test]
    async fn an_alarm_wakes_its_waiter_and_stays_raised() {
        let alarm = Arc::new(Alarm::default());
        let waiter = alarm.clone();
        woken(async move { waiter.raised().await }, || alarm.raise()).await;
        tokio::time::timeout(Duration::from_secs(5), alarm.raised())
            .await
            .expect("raised already: a later wait ends at once");
    }

    /// What a [`Wakeup`] is woken through in these tests.
    #[derive(Default)]
    struct TestWaker(Wakeup);

    impl futures_util::task::ArcWake for TestWaker {
        fn wake_by_ref(waker: &Arc<Self>) {
            waker.0.wake();
        }
    }

    #[tokio::test]
    async fn a_wait_is_polled_again_only_once_it_woke() {
        let noted = Arc::new(TestWaker::default());
        let waker = futures_util::task::waker(noted.clone());
        let (cancel, polls) = (
            tokio_util::sync::CancellationToken::new(),
            AtomicUsize::new(0),
        );
        let mut cancelled = std::pin::pin!(cancel.cancelled());
        let counted = std::future::poll_fn(|cx| {
            polls.fetch_add(1, Ordering::Relaxed);
            cancelled.as_mut().poll(cx)
        });
        let closing = noted.0.polled_when_woken(&waker, counted);
        tokio::pin!(closing);
        let queue = JobQueue::new();
        // The loop of a socket's task: its jobs first, the wait on every turn.
        for job in 0..10 {
            queue.push(job).expect("open");
            tokio::select! {
                biased;
                taken = queue.next() => assert_eq!(taken, job),
                () = &mut closing => unreachable!("not cancelled"),
            }
            tokio::select! {
                biased;
                _ = queue.next() => unreachable!("nothing queued"),
                () = &mut closing => unreachable!("not cancelled"),
                () = tokio::task::yield_now() => {}
            }
        }
        assert_eq!(
            polls.load(Ordering::Relaxed),
            1,
            "polled once, when first waited for"
        );
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(5), &mut closing)
            .await
            .expect("woken by the cancellation");
        assert_eq!(polls.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn a_closed_queue_drops_what_waits_and_refuses_more() {
        let queue = JobQueue::new();
        let waiting = Arc::new(());
        queue.push(waiting.clone()).expect("open");
        queue.close();
        assert_eq!(
            Arc::strong_count(&waiting),
            1,
            "the queued item was dropped"
        );
        assert!(queue.push(waiting.clone()).is_err());
        assert!(matches!(
            queue.try_push(waiting, 8),
            Err(Refused::Closed(_))
        ));
    }

    #[tokio::test]
    async fn a_drained_queue_gives_back_a_burst_s_room() {
        let queue = JobQueue::new();
        for item in 0..100 {
            queue.push(item).expect("open");
        }
        for _ in 0..100 {
            queue.next().await;
        }
        assert!(queue.state().items.capacity() <= KEPT_CAPACITY);
    }
}
