//! Calls refused as `overloaded`, logged with a count at most once per
//! [`LOG_EVERY`] per plugin: an overload is many refusals at once, and one
//! warning each would flood the log just when it matters.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::CallError;
use crate::escaped::Escaped;
use crate::manifest::PluginName;

const LOG_EVERY: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct Refusals {
    unlogged: AtomicU64,
    logged_at: Mutex<Option<Instant>>,
}

impl Refusals {
    pub fn record(&self, plugin: &PluginName, refusal: &CallError) {
        self.unlogged.fetch_add(1, Ordering::Relaxed);
        let mut logged_at = self
            .logged_at
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if logged_at.is_some_and(|at| at.elapsed() < LOG_EVERY) {
            return;
        }
        *logged_at = Some(Instant::now());
        let count = self.unlogged.swap(0, Ordering::Relaxed);
        tracing::warn!(
            %plugin,
            "{count} call(s) refused since the last such warning (at most one per {} s), the latest: {}",
            LOG_EVERY.as_secs(),
            Escaped(refusal)
        );
    }
}
