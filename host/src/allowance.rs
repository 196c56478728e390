//! What a client, caller or call may use, as two kinds of allowance: a
//! [`Bucket`] that refills over time (a socket's plugin time and output
//! bytes, a route caller's requests and plugin time), and [`HeldBytes`], a
//! bound on what a call holds until it returns (its state and its emits).

/// A bucket refilled continuously at `per_second` up to `burst`. What is
/// taken is often known only once it has been used, so the level may go
/// below zero: a debt the refill repays. A rate of 0 does not limit: its
/// bucket is always full.
#[derive(Debug, Clone)]
pub struct Bucket {
    per_second: f64,
    burst: f64,
    level: f64,
}

impl Bucket {
    /// A full bucket.
    pub fn new(per_second: f64, burst: f64) -> Self {
        Self {
            per_second,
            burst,
            level: burst,
        }
    }

    /// Refills it for `elapsed` seconds.
    pub fn refill(&mut self, elapsed: f64) {
        self.level = if self.per_second == 0.0 {
            self.burst
        } else {
            (self.level + elapsed * self.per_second).min(self.burst)
        };
    }

    pub fn take(&mut self, amount: f64) {
        self.level -= amount;
    }

    /// Seconds until its level is at least `level`; 0 if it is already, or
    /// if it does not limit.
    pub fn wait_for(&self, level: f64) -> f64 {
        if self.level >= level || self.per_second == 0.0 {
            return 0.0;
        }
        (level - self.level) / self.per_second
    }

    /// As if new: nothing to remember of whoever used it.
    pub fn is_full(&self) -> bool {
        self.level >= self.burst
    }

    /// At or below zero: in debt.
    pub fn is_in_debt(&self) -> bool {
        self.level <= 0.0
    }
}

/// Bytes a call holds until it returns, within `max`.
#[derive(Debug)]
pub struct HeldBytes {
    held: usize,
    max: usize,
}

/// Holding more would pass the bound.
#[derive(Debug)]
pub struct OverBound {
    pub max: usize,
}

impl HeldBytes {
    pub fn new(max: usize) -> Self {
        Self { held: 0, max }
    }

    /// Trades `released` bytes held for `taken`, unless that would hold more
    /// than the bound. Releasing never fails.
    pub fn trade(&mut self, released: usize, taken: usize) -> Result<(), OverBound> {
        let held = self.held - released + taken;
        if taken > released && held > self.max {
            return Err(OverBound { max: self.max });
        }
        self.held = held;
        Ok(())
    }

    pub fn release_all(&mut self) {
        self.held = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_goes_into_debt_and_refills_at_its_rate_up_to_its_burst() {
        let mut bucket = Bucket::new(1000.0, 2000.0);
        // A full bucket gains nothing from the time before a charge.
        bucket.refill(10.0);
        bucket.take(3000.0);
        assert!(bucket.is_in_debt());
        assert_eq!(bucket.wait_for(0.0), 1.0);
        bucket.refill(1.5);
        assert!(!bucket.is_in_debt());
        assert_eq!(bucket.wait_for(0.0), 0.0);
        bucket.refill(60.0);
        assert!(bucket.is_full());
        assert_eq!(bucket.level, 2000.0);
    }

    #[test]
    fn a_bucket_of_rate_zero_is_always_full() {
        let mut bucket = Bucket::new(0.0, 10.0);
        bucket.take(1000.0);
        assert_eq!(bucket.wait_for(1.0), 0.0);
        bucket.refill(0.0);
        assert!(bucket.is_full());
    }

    #[test]
    fn held_bytes_stay_within_the_bound_and_releasing_never_fails() {
        let mut held = HeldBytes::new(100);
        held.trade(0, 60).unwrap();
        assert_eq!(held.trade(0, 50).unwrap_err().max, 100);
        held.trade(60, 90).unwrap();
        held.trade(90, 10).unwrap();
        held.release_all();
        held.trade(0, 100).unwrap();
    }
}
