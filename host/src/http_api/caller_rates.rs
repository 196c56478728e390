//! What each caller of a plugin's routes may ask of it
//! ([`RouteRate`]): requests, and the plugin time they take. A socket's
//! events have their namespace's rates; without these, one caller of a
//! route could keep the plugin's every instance busy for everyone else.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::manifest::RouteRate;
use crate::runtime::Meter;

/// Callers remembered per plugin and node. Past it, callers whose
/// allowance has refilled are forgotten; should none have, a new caller is
/// refused until some have.
const MAX_CALLERS: usize = 100_000;

/// Who a route request counts against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Caller {
    User(String),
    Address(IpAddr),
}

/// The callers of one plugin's routes.
pub struct CallerRates {
    rate: RouteRate,
    callers: Mutex<HashMap<Caller, Allowance>>,
}

/// What a caller has left: requests and plugin milliseconds, as of `at`.
/// Plugin time may go below zero: it is charged once a call has run.
struct Allowance {
    requests: f64,
    plugin_ms: f64,
    at: Instant,
}

/// Charges a caller for the plugin time of its request's call.
pub struct CallerMeter {
    pub rates: Arc<CallerRates>,
    pub caller: Caller,
}

impl Meter for CallerMeter {
    fn plugin_time(&self, took: Duration) {
        self.rates.charge(&self.caller, took);
    }

    /// What a route sends is its caller's response, and the emits of its
    /// call: neither is paced per caller.
    fn output_bytes(&self, _bytes: usize) {}
}

/// A request over its caller's allowance, and when it may try again.
#[derive(Debug)]
pub struct OverRate {
    pub retry_after: Duration,
}

impl OverRate {
    /// Whole seconds, as `Retry-After` gives them: rounded up.
    pub fn retry_after_s(&self) -> u64 {
        self.retry_after.as_secs() + u64::from(self.retry_after.subsec_nanos() > 0)
    }
}

impl CallerRates {
    pub fn new(rate: RouteRate) -> Self {
        Self {
            rate,
            callers: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a request from `caller`'s allowance, unless it has none left
    /// or is still in debt of plugin time.
    pub fn take_request(&self, caller: &Caller) -> Result<(), OverRate> {
        let now = Instant::now();
        let mut callers = self.callers.lock().unwrap_or_else(PoisonError::into_inner);
        if !callers.contains_key(caller) && callers.len() >= MAX_CALLERS {
            callers.retain(|_, allowance| !self.refilled(allowance, now));
            if callers.len() >= MAX_CALLERS {
                return Err(OverRate {
                    retry_after: Duration::from_secs(1),
                });
            }
        }
        let allowance = callers.entry(caller.clone()).or_insert_with(|| Allowance {
            requests: f64::from(self.rate.request_burst.get()),
            plugin_ms: f64::from(self.rate.plugin_burst_ms.get()),
            at: now,
        });
        self.refill(allowance, now);
        let wait_requests = wait(1.0 - allowance.requests, self.rate.requests_per_second);
        let wait_plugin = wait(-allowance.plugin_ms, self.rate.plugin_ms_per_second);
        let wait = wait_requests.max(wait_plugin);
        if wait > 0.0 {
            return Err(OverRate {
                retry_after: Duration::from_secs_f64(wait),
            });
        }
        allowance.requests -= 1.0;
        Ok(())
    }

    /// Charges `caller` for the plugin time its request took.
    pub fn charge(&self, caller: &Caller, took: Duration) {
        let mut callers = self.callers.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(allowance) = callers.get_mut(caller) {
            allowance.plugin_ms -= took.as_secs_f64() * 1000.0;
        }
    }

    fn refill(&self, allowance: &mut Allowance, now: Instant) {
        let elapsed = now.saturating_duration_since(allowance.at).as_secs_f64();
        allowance.at = now;
        // A rate of 0 does not limit: its bucket is always full.
        let refilled = |level: f64, per_second: u32, burst: u32| match per_second {
            0 => f64::from(burst),
            _ => (level + elapsed * f64::from(per_second)).min(f64::from(burst)),
        };
        let rate = &self.rate;
        allowance.requests = refilled(
            allowance.requests,
            rate.requests_per_second,
            rate.request_burst.get(),
        );
        allowance.plugin_ms = refilled(
            allowance.plugin_ms,
            rate.plugin_ms_per_second,
            rate.plugin_burst_ms.get(),
        );
    }

    /// Whether the caller would be as good as new: nothing to remember.
    fn refilled(&self, allowance: &mut Allowance, now: Instant) -> bool {
        self.refill(allowance, now);
        allowance.requests >= f64::from(self.rate.request_burst.get())
            && allowance.plugin_ms >= f64::from(self.rate.plugin_burst_ms.get())
    }
}

/// Seconds until `missing` has refilled at `per_second`; 0 when nothing is
/// missing (a bucket that does not limit never misses anything).
fn wait(missing: f64, per_second: u32) -> f64 {
    if missing <= 0.0 {
        return 0.0;
    }
    missing / f64::from(per_second)
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;

    fn rates(requests_per_second: u32, plugin_ms_per_second: u32) -> CallerRates {
        CallerRates::new(RouteRate {
            requests_per_second,
            request_burst: NonZeroU32::new(2).unwrap(),
            plugin_ms_per_second,
            plugin_burst_ms: NonZeroU32::new(100).unwrap(),
        })
    }

    #[test]
    fn a_caller_has_its_burst_then_waits_for_the_refill_and_others_are_apart() {
        let rates = rates(1, 1000);
        let alice = Caller::User("alice".to_owned());
        assert!(rates.take_request(&alice).is_ok());
        assert!(rates.take_request(&alice).is_ok());
        let over = rates.take_request(&alice).unwrap_err();
        assert!(over.retry_after > Duration::from_millis(900), "{over:?}");
        assert!(over.retry_after <= Duration::from_secs(1), "{over:?}");
        let address = Caller::Address("127.0.0.1".parse().unwrap());
        assert!(rates.take_request(&address).is_ok());
    }

    #[test]
    fn a_caller_in_debt_of_plugin_time_waits_until_it_is_repaid() {
        let rates = rates(1000, 100);
        let bob = Caller::User("bob".to_owned());
        assert!(rates.take_request(&bob).is_ok());
        rates.charge(&bob, Duration::from_millis(400));
        let over = rates.take_request(&bob).unwrap_err();
        // 300 ms of debt at 100 ms a second.
        assert!(over.retry_after > Duration::from_millis(2900), "{over:?}");
        assert!(over.retry_after <= Duration::from_secs(3), "{over:?}");
    }

    #[test]
    fn a_rate_of_zero_does_not_limit() {
        let rates = rates(0, 0);
        let carol = Caller::User("carol".to_owned());
        for _ in 0..10 {
            assert!(rates.take_request(&carol).is_ok());
            rates.charge(&carol, Duration::from_secs(1));
        }
    }
}
