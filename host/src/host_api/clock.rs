use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::bindings::switchboard::plugin::clock::Host;
use crate::cluster::timers;
use crate::runtime::InstanceState;

/// The time plugins read: the system's, or one `switchboard call` sets and
/// moves forward as the timers it fires come due.
#[derive(Clone, Default)]
pub struct Clock(Option<Arc<AtomicU64>>);

impl Clock {
    /// A clock that stands at `now_ms` until moved.
    pub fn fixed(now_ms: u64) -> Self {
        Self(Some(Arc::new(AtomicU64::new(now_ms))))
    }

    /// Milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        match &self.0 {
            Some(fixed) => fixed.load(Ordering::Relaxed),
            None => timers::now_ms(),
        }
    }

    /// Moves a fixed clock forward to `at_ms`, never back; the system's
    /// moves by itself.
    pub fn advance_to(&self, at_ms: u64) {
        if let Some(fixed) = &self.0 {
            fixed.fetch_max(at_ms, Ordering::Relaxed);
        }
    }
}

impl Host for InstanceState {
    async fn now_ms(&mut self) -> u64 {
        self.services.clock.now_ms()
    }
}
