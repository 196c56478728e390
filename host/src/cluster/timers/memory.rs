//! Timers of a single node, in memory.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{DueTimer, TimerStore, member, split_member};
use crate::cluster::StateError;

#[derive(Default)]
pub struct MemoryTimers {
    /// Member → (due at, payload).
    pending: Mutex<HashMap<String, (u64, String)>>,
}

impl MemoryTimers {
    pub fn new() -> Self {
        Self::default()
    }

    /// When the earliest pending timer is due.
    pub fn next_due_ms(&self) -> Option<u64> {
        self.pending().values().map(|(at, _)| *at).min()
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, String)>> {
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl TimerStore for MemoryTimers {
    async fn schedule(
        &self,
        plugin: &str,
        key: &str,
        at_ms: u64,
        payload: &str,
    ) -> Result<(), StateError> {
        self.pending()
            .insert(member(plugin, key), (at_ms, payload.to_owned()));
        Ok(())
    }

    async fn cancel(&self, plugin: &str, key: &str) -> Result<bool, StateError> {
        Ok(self.pending().remove(&member(plugin, key)).is_some())
    }

    /// One node has nothing to lease against: a claimed timer is taken out.
    async fn claim_due(&self, now_ms: u64, limit: usize) -> Result<Vec<DueTimer>, StateError> {
        let mut pending = self.pending();
        let mut due: Vec<(u64, String)> = pending
            .iter()
            .filter(|(_, (at, _))| *at <= now_ms)
            .map(|(member, (at, _))| (*at, member.clone()))
            .collect();
        due.sort();
        due.truncate(limit);
        Ok(due
            .into_iter()
            .filter_map(|(_, member)| {
                let (_, payload) = pending.remove(&member)?;
                let (plugin, key) = split_member(&member)?;
                Some(DueTimer {
                    plugin: plugin.to_owned(),
                    key: key.to_owned(),
                    payload,
                })
            })
            .collect())
    }

    async fn complete(&self, _timer: &DueTimer) -> Result<(), StateError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::MemoryTimers;
    use crate::cluster::timers::conformance;

    #[tokio::test]
    async fn follows_the_timer_semantics() {
        conformance::check_all(&MemoryTimers::new()).await;
    }
}
