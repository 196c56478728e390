//! What one socket's events may cost beyond their count: the plugin time they
//! take and the bytes they have sent (replies and emits). A flood of cheap
//! events meets `events_per_second`; a few events that each make a plugin
//! spin for a second or send megabytes meet this: the socket's next event
//! waits until its budget has refilled.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::manifest::EventRate;
use crate::runtime::Meter;

/// Each resource is a bucket refilled continuously up to its burst. A call's
/// cost is known only once it has run, so it is charged then and a bucket
/// may go below zero: the socket's next event waits until every bucket is
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

    /// How long the socket's next event must wait for the budget to be
    /// above zero again; `None` when it may be handled now.
    pub fn pause(&self) -> Option<Duration> {
        let now = Instant::now();
        let wait = self
            .plugin_ms
            .time_to_credit(now)
            .max(self.output_bytes.time_to_credit(now));
        (wait > 0.0).then(|| Duration::from_secs_f64(wait))
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

    /// Seconds until the level is above zero.
    fn time_to_credit(&self, now: Instant) -> f64 {
        let level = self.level(now);
        if level > 0.0 {
            return 0.0;
        }
        // Past zero by a little, so the wait ends with credit.
        (-level + 1.0) / self.per_second
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
    fn a_budget_in_debt_pauses_for_as_long_as_the_refill_takes() {
        let budget = CostBudget {
            plugin_ms: Bucket::new(100.0, 200.0),
            output_bytes: Bucket::new(1000.0, 1000.0),
        };
        assert_eq!(budget.pause(), None);
        budget.plugin_time(Duration::from_millis(500));
        let pause = budget.pause().unwrap();
        assert!(
            pause > Duration::from_millis(2900) && pause <= Duration::from_millis(3100),
            "{pause:?}"
        );
        budget.output_bytes(5000);
        let pause = budget.pause().unwrap();
        assert!(pause >= Duration::from_millis(3900), "{pause:?}");
    }

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
