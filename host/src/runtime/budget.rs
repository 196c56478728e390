//! The linear memory all plugin instances of a node may hold together
//! (`[server] plugin_memory_mib`).
//!
//! An instance is charged what its memories grow to, as its store's limiter
//! sees each growth, and gives it back when it is dropped. Each running
//! plugin version has an [`Account`] whose reserve (its `memory_mib`, room for
//! one instance) is always its own; past its reserve, plugins share what the
//! reserves leave, first come. So a plugin that allocates from many
//! concurrent calls uses up only the shared part, never what another plugin
//! needs for its next call. Idle warm instances hold memory too: when a
//! growth does not fit, they are dropped first.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// A growth that did not fit the budget within its wait; the call is aborted.
#[derive(Debug, thiserror::Error)]
#[error("the plugin memory budget of {} MiB is in use", limit_bytes >> 20)]
pub struct BudgetExhausted {
    pub limit_bytes: usize,
}

/// Warm instances a plugin keeps that can be dropped to free memory.
pub trait IdleInstances: Send + Sync {
    fn drop_idle(&self);
}

pub struct MemoryBudget {
    limit: usize,
    /// The sum over accounts of the larger of their use and their reserve.
    charged: Mutex<usize>,
    /// Woken whenever memory is given back.
    released: Notify,
    idle: Mutex<Vec<Weak<dyn IdleInstances>>>,
}

impl MemoryBudget {
    pub fn new(limit_bytes: usize) -> Arc<Self> {
        Arc::new(Self {
            limit: limit_bytes,
            charged: Mutex::new(0),
            released: Notify::new(),
            idle: Mutex::new(Vec::new()),
        })
    }

    /// Opens an account for a plugin version, holding `reserve` bytes for it
    /// at once. Reserves may add up to more than the budget while a reload
    /// runs the old and the new version side by side: then no plugin grows
    /// past its reserve until the old version is gone.
    pub fn account(self: &Arc<Self>, reserve: usize) -> Arc<Account> {
        *self.charged() += reserve;
        Arc::new(Account {
            budget: self.clone(),
            reserve,
            used: AtomicUsize::new(0),
        })
    }

    /// Lets the budget drop `pool`'s idle instances when memory runs short.
    pub fn register_idle(&self, pool: Weak<dyn IdleInstances>) {
        let mut idle = lock(&self.idle);
        idle.retain(|pool| pool.strong_count() > 0);
        idle.push(pool);
    }

    fn drop_idle_instances(&self) {
        let pools: Vec<_> = lock(&self.idle).iter().filter_map(Weak::upgrade).collect();
        for pool in pools {
            pool.drop_idle();
        }
    }

    fn charged(&self) -> MutexGuard<'_, usize> {
        lock(&self.charged)
    }
}

/// What one plugin version's instances hold.
pub struct Account {
    budget: Arc<MemoryBudget>,
    reserve: usize,
    /// Changed only while `budget.charged` is locked, so the two agree.
    used: AtomicUsize,
}

impl Account {
    /// Takes `bytes` more from the budget, waiting up to `wait` for other
    /// instances to give memory back.
    pub async fn charge(&self, bytes: usize, wait: Duration) -> Result<(), BudgetExhausted> {
        if self.try_charge(bytes) {
            return Ok(());
        }
        let deadline = Instant::now() + wait;
        let mut idle_dropped = false;
        loop {
            let released = self.budget.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            if self.try_charge(bytes) {
                return Ok(());
            }
            if !idle_dropped {
                idle_dropped = true;
                self.budget.drop_idle_instances();
                continue;
            }
            if tokio::time::timeout_at(deadline, released).await.is_err() {
                return Err(BudgetExhausted {
                    limit_bytes: self.budget.limit,
                });
            }
        }
    }

    fn try_charge(&self, bytes: usize) -> bool {
        let mut charged = self.budget.charged();
        let used = self.used.load(Ordering::Relaxed);
        let grown = used.saturating_add(bytes);
        let extra = grown.max(self.reserve) - used.max(self.reserve);
        if extra > 0 && charged.saturating_add(extra) > self.budget.limit {
            return false;
        }
        *charged += extra;
        self.used.store(grown, Ordering::Relaxed);
        true
    }

    /// Gives back `bytes` an instance was charged.
    pub fn release(&self, bytes: usize) {
        {
            let mut charged = self.budget.charged();
            let used = self.used.load(Ordering::Relaxed);
            let shrunk = used.saturating_sub(bytes);
            *charged -= used.max(self.reserve) - shrunk.max(self.reserve);
            self.used.store(shrunk, Ordering::Relaxed);
        }
        self.budget.released.notify_waiters();
    }
}

impl Drop for Account {
    fn drop(&mut self) {
        let used = self.used.load(Ordering::Relaxed);
        *self.budget.charged() -= used.max(self.reserve);
        self.budget.released.notify_waiters();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;
    const NO_WAIT: Duration = Duration::ZERO;

    #[tokio::test]
    async fn a_plugin_past_its_reserve_cannot_take_another_plugins_reserve() {
        let budget = MemoryBudget::new(100 * MIB);
        let hog = budget.account(30 * MIB);
        let quiet = budget.account(20 * MIB);
        // The hog gets its reserve and the 50 MiB nobody reserved, no more.
        hog.charge(80 * MIB, NO_WAIT).await.expect("fits");
        assert!(hog.charge(MIB, NO_WAIT).await.is_err());
        // The other plugin still has its whole reserve.
        quiet
            .charge(20 * MIB, NO_WAIT)
            .await
            .expect("within its reserve");
        assert!(quiet.charge(MIB, NO_WAIT).await.is_err());
        // Memory given back is shared again.
        hog.release(10 * MIB);
        quiet
            .charge(10 * MIB, NO_WAIT)
            .await
            .expect("freed by the hog");
    }

    #[tokio::test]
    async fn a_growth_waits_for_memory_given_back() {
        let budget = MemoryBudget::new(10 * MIB);
        let account = budget.account(MIB);
        account.charge(10 * MIB, NO_WAIT).await.expect("fits");
        let releasing = account.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            releasing.release(5 * MIB);
        });
        account
            .charge(5 * MIB, Duration::from_secs(10))
            .await
            .expect("the wait sees the release");
    }

    #[tokio::test]
    async fn idle_instances_are_dropped_before_a_growth_fails() {
        struct Pool {
            account: Arc<Account>,
            held: Mutex<usize>,
        }
        impl IdleInstances for Pool {
            fn drop_idle(&self) {
                self.account.release(std::mem::take(&mut *lock(&self.held)));
            }
        }
        let budget = MemoryBudget::new(10 * MIB);
        let account = budget.account(MIB);
        account.charge(8 * MIB, NO_WAIT).await.expect("fits");
        let pool: Arc<dyn IdleInstances> = Arc::new(Pool {
            account: account.clone(),
            held: Mutex::new(8 * MIB),
        });
        budget.register_idle(Arc::downgrade(&pool));
        account
            .charge(8 * MIB, NO_WAIT)
            .await
            .expect("the idle 8 MiB were dropped");
    }

    #[tokio::test]
    async fn a_closed_account_frees_its_reserve() {
        let budget = MemoryBudget::new(10 * MIB);
        let old = budget.account(6 * MIB);
        let new = budget.account(6 * MIB);
        assert!(new.charge(7 * MIB, NO_WAIT).await.is_err());
        drop(old);
        new.charge(7 * MIB, NO_WAIT)
            .await
            .expect("the old reserve is free");
    }
}
