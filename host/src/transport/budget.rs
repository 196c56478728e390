//! What one socket's events may cost beyond their count: the plugin time they
//! take and the bytes they have sent (replies and emits). A flood of cheap
//! events meets `events_per_second`; a few events that each make a plugin
//! spin for a second or send megabytes meet this: the socket's next event
//! waits until its budget has refilled.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::allowance::Bucket;
use crate::manifest::EventRate;
use crate::runtime::Meter;

/// Each resource is a bucket refilled continuously up to its burst. A call's
/// cost is known only once it has run, so it is charged then and a bucket
/// may go below zero: the socket's next event waits until every bucket is
/// above zero again.
///
/// Charges are added up and taken from the buckets when the socket asks
/// whether it may go on, after refilling them: one clock read and one lock
/// per event rather than one each per charge. Refilling first is the
/// stricter order (a full bucket gains nothing for the time a charge waited).
pub struct CostBudget {
    buckets: Mutex<Buckets>,
    plugin_ns_owed: AtomicU64,
    output_bytes_owed: AtomicU64,
}

struct Buckets {
    plugin_ms: Bucket,
    output_bytes: Bucket,
    at: Instant,
}

impl CostBudget {
    pub fn new(rate: &EventRate) -> Self {
        Self::with_buckets(
            Bucket::new(
                f64::from(rate.plugin_ms_per_second.get()),
                f64::from(rate.plugin_burst_ms.get()),
            ),
            Bucket::new(
                rate.output_bytes_per_second.get() as f64,
                rate.output_burst_bytes.get() as f64,
            ),
        )
    }

    fn with_buckets(plugin_ms: Bucket, output_bytes: Bucket) -> Self {
        Self {
            buckets: Mutex::new(Buckets {
                plugin_ms,
                output_bytes,
                at: Instant::now(),
            }),
            plugin_ns_owed: AtomicU64::new(0),
            output_bytes_owed: AtomicU64::new(0),
        }
    }

    /// How long the socket's next event must wait for the budget to be
    /// above zero again; `None` when it may be handled now.
    pub fn pause(&self) -> Option<Duration> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let elapsed = now.saturating_duration_since(buckets.at).as_secs_f64();
        buckets.at = now;
        let plugin_ms = self.plugin_ns_owed.swap(0, Ordering::Relaxed) as f64 / 1e6;
        let output_bytes = self.output_bytes_owed.swap(0, Ordering::Relaxed) as f64;
        let wait = settle(&mut buckets.plugin_ms, elapsed, plugin_ms).max(settle(
            &mut buckets.output_bytes,
            elapsed,
            output_bytes,
        ));
        (wait > 0.0).then(|| Duration::from_secs_f64(wait))
    }
}

impl Meter for CostBudget {
    fn plugin_time(&self, took: Duration) {
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.plugin_ns_owed.fetch_add(nanos, Ordering::Relaxed);
    }

    fn output_bytes(&self, bytes: usize) {
        let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
        self.output_bytes_owed.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// Refills `bucket` for `elapsed` seconds, takes `charge` from it, and
/// returns the seconds until it is above zero again.
fn settle(bucket: &mut Bucket, elapsed: f64, charge: f64) -> f64 {
    bucket.refill(elapsed);
    bucket.take(charge);
    if !bucket.is_in_debt() {
        return 0.0;
    }
    // Past zero by a little, so the wait ends with credit.
    bucket.wait_for(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_in_debt_pauses_for_as_long_as_the_refill_takes() {
        let budget =
            CostBudget::with_buckets(Bucket::new(100.0, 200.0), Bucket::new(1000.0, 1000.0));
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
}
