//! Plugin timers: kept where the cluster's state is (in memory on one node,
//! in Redis in a cluster), claimed by exactly one node when due, delivered to
//! the plugin's `on-timer`. Every node polls, so a timer fires even when the
//! node that scheduled it has died.

#[cfg(test)]
mod conformance;
mod memory;
mod redis;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
pub use memory::MemoryTimers;
pub use redis::RedisTimers;

use super::StateError;

/// How often each node looks for due timers: the delivery delay's upper bound.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Timers claimed per poll; more wait for the next one.
const CLAIM_BATCH: usize = 64;
/// How long a claimed timer is reserved for its node. A node that dies before
/// finishing the delivery loses the timer to another node after this.
pub const LEASE: Duration = Duration::from_secs(60);

/// A timer due and claimed by this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueTimer {
    pub plugin: String,
    pub key: String,
    pub payload: String,
}

/// Where timers are kept. Keys are per plugin.
#[async_trait]
pub trait TimerStore: Send + Sync + 'static {
    /// Schedules or replaces `plugin`'s timer `key` for `at_ms` (Unix ms).
    /// A new key while `plugin` has `max_timers` timers not yet delivered
    /// fails with [`StateError::TooManyTimers`].
    async fn schedule(
        &self,
        plugin: &str,
        key: &str,
        at_ms: u64,
        payload: &str,
        max_timers: u64,
    ) -> Result<(), StateError>;
    /// True when a pending timer was removed.
    async fn cancel(&self, plugin: &str, key: &str) -> Result<bool, StateError>;
    /// Takes up to `limit` timers due at `now_ms`, each for this node only,
    /// and leases them until `now_ms + LEASE`; a lease that ran out makes its
    /// timer due again.
    async fn claim_due(&self, now_ms: u64, limit: usize) -> Result<Vec<DueTimer>, StateError>;
    /// Forgets a delivered timer, unless it was scheduled again meanwhile.
    async fn complete(&self, timer: &DueTimer) -> Result<(), StateError>;
}

/// One member name per plugin timer; plugin names never contain `/`.
fn member(plugin: &str, key: &str) -> String {
    format!("{plugin}/{key}")
}

fn split_member(member: &str) -> Option<(&str, &str)> {
    member.split_once('/')
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

/// Polls `store` for due timers for as long as the process runs and hands
/// each to `deliver`, one at a time per timer, then completes it.
pub fn run<F, Fut>(store: Arc<dyn TimerStore>, deliver: F)
where
    F: Fn(DueTimer) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let deliver = Arc::new(deliver);
    tokio::spawn(async move {
        let mut poll = tokio::time::interval(POLL_INTERVAL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            poll.tick().await;
            let due = match store.claim_due(now_ms(), CLAIM_BATCH).await {
                Ok(due) => {
                    failing = false;
                    due
                }
                Err(error) => {
                    if !failing {
                        tracing::warn!("cannot check for due timers ({error}); retrying");
                    }
                    failing = true;
                    continue;
                }
            };
            for timer in due {
                let store = store.clone();
                let deliver = deliver.clone();
                tokio::spawn(async move {
                    deliver(timer.clone()).await;
                    if let Err(error) = store.complete(&timer).await {
                        tracing::warn!(
                            plugin = %timer.plugin,
                            "timer `{}` delivered but not marked done ({error}); it may fire again after its lease",
                            timer.key
                        );
                    }
                });
            }
        }
    });
}
