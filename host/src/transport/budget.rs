//! What one socket's events may cost beyond their count: the plugin time they
//! take and the bytes they have sent (replies and emits). A flood of cheap
//! events meets `events_per_second`; a few events that each make a plugin
//! spin for a second or send megabytes meet this.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::manifest::EventRate;
use crate::runtime::Meter;

/// Each resource is a bucket refilled continuously up to its burst. A call's
/// cost is known only once it has run, so it is charged then and a bucket
/// may go below zero: the socket's events are refused until every bucket is
/// above zero again.
pub struct CostBudget {
    plugin_ms: Bucket,
    output_bytes: Bucket,
}

impl CostBudget {
    pub fn new(rate: &EventRate) -> Self {
        Self {
            plugin_ms: Bucket::new(
                f64::from(rate.plugin_ms_per_second.get()),
                f64::from(rate.plugin_burst_ms.get()),
            ),
            output_bytes: Bucket::new(
                rate.output_bytes_per_second.get() as f64,
                rate.output_burst_bytes.get() as f64,
            ),
        }
    }

    /// Whether the socket may have another event handled now.
    pub fn allows(&self) -> bool {
        let now = Instant::now();
        self.plugin_ms.level(now) > 0.0 && self.output_bytes.level(now) > 0.0
    }
}

impl Meter for CostBudget {
    fn plugin_time(&self, took: Duration) {
        self.plugin_ms.charge(took.as_secs_f64() * 1000.0);
    }

    fn output_bytes(&self, bytes: usize) {
        self.output_bytes.charge(bytes as f64);
    }
}

struct Bucket {
    per_second: f64,
    burst: f64,
    state: Mutex<Level>,
}

struct Level {
    level: f64,
    at: Instant,
}

impl Bucket {
    fn new(per_second: f64, burst: f64) -> Self {
        Self {
            per_second,
            burst,
            state: Mutex::new(Level {
                level: burst,
                at: Instant::now(),
            }),
        }
    }

    /// What is left at `now`, refilled since it was last read.
    fn level(&self, now: Instant) -> f64 {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        self.refill(&mut state, now);
        state.level
    }

    fn charge(&self, amount: f64) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        self.refill(&mut state, Instant::now());
        state.level -= amount;
    }

    fn refill(&self, state: &mut Level, now: Instant) {
        let elapsed = now.saturating_duration_since(state.at).as_secs_f64();
        state.level = (state.level + elapsed * self.per_second).min(self.burst);
        state.at = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_goes_into_debt_and_refills_at_its_rate_up_to_its_burst() {
        let bucket = Bucket::new(1000.0, 2000.0);
        let start = Instant::now();
        assert_eq!(bucket.level(start), 2000.0);
        bucket.charge(3000.0);
        let after = bucket.state.lock().unwrap().at;
        assert!(bucket.level(after) <= -999.0);
        // A second later at 1000 a second: back to about zero, not above the burst later.
        assert!(bucket.level(after + Duration::from_millis(1500)) > 0.0);
        assert_eq!(bucket.level(after + Duration::from_secs(60)), 2000.0);
    }
}
