//! Timers of a single node, in memory.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{DueTimer, TimerStore, member, split_member};
use crate::cluster::StateError;

#[derive(Default)]
pub struct MemoryTimers {
    pending: Mutex<Pending>,
}

#[derive(Default)]
struct Pending {
    /// Member → (due at, payload).
    timers: HashMap<String, (u64, String)>,
    /// Timers pending per plugin.
    per_plugin: HashMap<String, u64>,
}

impl Pending {
    fn remove(&mut self, member: &str) -> Option<(u64, String)> {
        let removed = self.timers.remove(member)?;
        if let Some((plugin, _)) = split_member(member)
            && let Some(count) = self.per_plugin.get_mut(plugin)
        {
            *count -= 1;
            if *count == 0 {
                self.per_plugin.remove(plugin);
            }
        }
        Some(removed)
    }
}

impl MemoryTimers {
    pub fn new() -> Self {
        Self::default()
    }

    /// When the earliest pending timer is due.
    pub fn next_due_ms(&self) -> Option<u64> {
        self.pending().timers.values().map(|(at, _)| *at).min()
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
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
        max_timers: u64,
    ) -> Result<(), StateError> {
        let mut pending = self.pending();
        let member = member(plugin, key);
        if !pending.timers.contains_key(&member) {
            let count = pending.per_plugin.entry(plugin.to_owned()).or_default();
            if *count >= max_timers {
                return Err(StateError::TooManyTimers { max: max_timers });
            }
            *count += 1;
        }
        pending.timers.insert(member, (at_ms, payload.to_owned()));
        Ok(())
    }

    async fn cancel(&self, plugin: &str, key: &str) -> Result<bool, StateError> {
        Ok(self.pending().remove(&member(plugin, key)).is_some())
    }

    /// One node has nothing to lease against: a claimed timer is taken out.
    async fn claim_due(&self, now_ms: u64, limit: usize) -> Result<Vec<DueTimer>, StateError> {
        let mut pending = self.pending();
        let mut due: Vec<(u64, String)> = pending
            .timers
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
