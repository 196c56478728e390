//! What each caller of a plugin's routes may ask of it
//! ([`RouteRate`]): requests, and the plugin time they take. A socket's
//! events have their namespace's rates; without these, one caller of a
//! route could keep the plugin's every instance busy for everyone else.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::allowance::Bucket;
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
/// Plugin time may go into debt: it is charged once a call has run.
struct Allowance {
    requests: Bucket,
    plugin_ms: Bucket,
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
            callers.retain(|_, allowance| !allowance.refilled(now));
            if callers.len() >= MAX_CALLERS {
                return Err(OverRate {
                    retry_after: Duration::from_secs(1),
                });
            }
        }
        let allowance = callers
            .entry(caller.clone())
            .or_insert_with(|| self.new_allowance(now));
        allowance.refill(now);
        let wait = allowance
            .requests
            .wait_for(1.0)
            .max(allowance.plugin_ms.wait_for(0.0));
        if wait > 0.0 {
            return Err(OverRate {
                retry_after: Duration::from_secs_f64(wait),
            });
        }
        allowance.requests.take(1.0);
        Ok(())
    }

    /// Charges `caller` for the plugin time its request took.
    pub fn charge(&self, caller: &Caller, took: Duration) {
        let mut callers = self.callers.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(allowance) = callers.get_mut(caller) {
            allowance.plugin_ms.take(took.as_secs_f64() * 1000.0);
        }
    }

    fn new_allowance(&self, now: Instant) -> Allowance {
        let rate = &self.rate;
        Allowance {
            requests: Bucket::new(
                f64::from(rate.requests_per_second),
                f64::from(rate.request_burst.get()),
            ),
            plugin_ms: Bucket::new(
                f64::from(rate.plugin_ms_per_second),
                f64::from(rate.plugin_burst_ms.get()),
            ),
            at: now,
        }
    }
}

impl Allowance {
    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.requests.refill(elapsed);
        self.plugin_ms.refill(elapsed);
    }

    /// Whether the caller would be as good as new: nothing to remember.
    fn refilled(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.requests.is_full() && self.plugin_ms.is_full()
    }
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
