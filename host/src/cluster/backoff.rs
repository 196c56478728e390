//! Exponential backoff between attempts to reach Redis.

use std::fmt::Display;
use std::time::Duration;

const FIRST: Duration = Duration::from_millis(200);
const LONGEST: Duration = Duration::from_secs(5);

/// Delays that double from 200 ms up to 5 s.
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    pub fn new() -> Self {
        Self { next: FIRST }
    }

    /// The delay to wait before the next attempt.
    pub fn delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (delay * 2).min(LONGEST);
        delay
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs `attempt` again with backoff while it fails, for at most
/// `for_at_most`; then its last error. Under load a command can outlast its
/// timeout although Redis runs it: only for commands whose repeat answers
/// as their first run did (reads, and scripts written to).
pub async fn retried<T, E, F, Fut>(
    what: &str,
    for_at_most: Duration,
    mut attempt: F,
) -> Result<T, E>
where
    E: Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let started = tokio::time::Instant::now();
    let mut backoff = Backoff::new();
    loop {
        match attempt().await {
            Err(error) if started.elapsed() < for_at_most => {
                let delay = backoff.delay();
                tracing::debug!("{what} failed ({error}); again in {} ms", delay.as_millis());
                tokio::time::sleep(delay).await;
            }
            done => return done,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_longest_delay() {
        let mut backoff = Backoff::new();
        let delays: Vec<u128> = (0..7).map(|_| backoff.delay().as_millis()).collect();
        assert_eq!(delays, [200, 400, 800, 1600, 3200, 5000, 5000]);
    }
}
