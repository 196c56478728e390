//! The connections over `max_connections` that are still read for one
//! request. When it is full, the connection that has waited longest without
//! sending a whole request is closed to make room: a flood of silent
//! connections then only evicts itself, and a probe, which sends its request
//! with the connection, still gets in.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio_util::sync::CancellationToken;

pub struct Reserve {
    capacity: usize,
    /// Oldest first.
    waiting: Mutex<VecDeque<(u64, CancellationToken)>>,
    next_id: AtomicU64,
}

impl Reserve {
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            capacity,
            waiting: Mutex::new(VecDeque::with_capacity(capacity)),
            next_id: AtomicU64::new(0),
        })
    }

    /// A seat for a new connection, evicting the longest waiting one if full.
    pub fn seat(self: &Arc<Self>) -> Arc<Seat> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let evicted = CancellationToken::new();
        let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        if waiting.len() >= self.capacity
            && let Some((_, oldest)) = waiting.pop_front()
        {
            oldest.cancel();
        }
        waiting.push_back((id, evicted.clone()));
        Arc::new(Seat {
            reserve: self.clone(),
            id,
            evicted,
        })
    }

    fn leave(&self, id: u64) {
        self.waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(waiting, _)| *waiting != id);
    }

    #[cfg(test)]
    pub fn waiting(&self) -> usize {
        self.waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// A connection's place in the reserve.
pub struct Seat {
    reserve: Arc<Reserve>,
    id: u64,
    /// Cancelled when a newer connection needs the place: close this one.
    pub evicted: CancellationToken,
}

impl Seat {
    /// The connection sent its request: it is answered now, not evicted.
    pub fn request_read(&self) {
        self.reserve.leave(self.id);
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        self.reserve.leave(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_reserve_evicts_the_longest_waiting_connection() {
        let reserve = Reserve::new(2);
        let first = reserve.seat();
        let second = reserve.seat();
        let third = reserve.seat();
        assert!(first.evicted.is_cancelled());
        assert!(!second.evicted.is_cancelled() && !third.evicted.is_cancelled());
        assert_eq!(reserve.waiting(), 2);

        second.request_read();
        let fourth = reserve.seat();
        assert!(!second.evicted.is_cancelled(), "being answered: kept");
        assert!(!third.evicted.is_cancelled() && !fourth.evicted.is_cancelled());
        drop(third);
        assert_eq!(reserve.waiting(), 1);
    }
}
