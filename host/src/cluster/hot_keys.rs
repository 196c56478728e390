//! Keys a plugin's calls on this node keep conflicting on, taken in turn.
//!
//! Transactions are optimistic: calls that read and write the same key at
//! once all run, then all but one conflict and run again, alone and under
//! the plugin's state lease. Under a steady stream of such calls (one chat
//! room's message counter) most of the work is thrown away and the calls
//! queue behind the reruns until they are refused. Once a key has been
//! written by a call that conflicted, the calls on this node that read it
//! take turns: each waits for the one before it to commit (and send its
//! emits) before reading it, so they stop conflicting with each other.
//! Calls on other nodes still conflict, and run again as before.
//!
//! A turn is waited for at most [`TURN_WAIT`]: a call that reads two hot
//! keys in the other order than another call does not deadlock with it, it
//! goes on optimistically. A key stays hot while calls wait for it, and
//! cools [`COOL_AFTER`] after the last conflict or wait.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::OwnedMutexGuard;

/// How long a call waits for its turn on a hot key before it reads the key
/// anyway, risking a conflict.
const TURN_WAIT: Duration = Duration::from_millis(250);

/// How long a key stays hot without conflicts or waits.
const COOL_AFTER: Duration = Duration::from_secs(10);

/// Hot keys kept per plugin and node; beyond it, keys conflicting are not
/// marked until others cool.
const MAX_HOT_KEYS: usize = 1024;

#[derive(Debug, Default)]
pub struct HotKeys {
    keys: Mutex<HashMap<String, Hot>>,
}

#[derive(Debug)]
struct Hot {
    turn: Arc<tokio::sync::Mutex<()>>,
    /// The last conflict on it, or wait for it.
    warmed: Instant,
}

/// A call's turn on a hot key, until it is dropped.
pub type Turn = OwnedMutexGuard<()>;

impl HotKeys {
    /// A call that wrote `keys` conflicted.
    pub fn conflicted<'a>(&self, keys: impl IntoIterator<Item = &'a str>) {
        let now = Instant::now();
        let mut hot = self.lock();
        if hot.len() >= MAX_HOT_KEYS {
            hot.retain(|_, key| now.duration_since(key.warmed) < COOL_AFTER);
        }
        for key in keys {
            if let Some(known) = hot.get_mut(key) {
                known.warmed = now;
            } else if hot.len() < MAX_HOT_KEYS {
                let turn = Arc::default();
                hot.insert(key.to_owned(), Hot { turn, warmed: now });
            }
        }
    }

    /// Waits for the call's turn on `key` when it is hot; `None` when it is
    /// not, or the turn did not come within [`TURN_WAIT`].
    pub async fn take_turn(&self, key: &str) -> Option<Turn> {
        let turn = {
            let mut hot = self.lock();
            let now = Instant::now();
            let known = hot.get_mut(key)?;
            if now.duration_since(known.warmed) >= COOL_AFTER {
                hot.remove(key);
                return None;
            }
            if let Ok(taken) = known.turn.clone().try_lock_owned() {
                return Some(taken);
            }
            // Contended: it is still hot.
            known.warmed = now;
            known.turn.clone()
        };
        tokio::time::timeout(TURN_WAIT, turn.lock_owned())
            .await
            .ok()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Hot>> {
        self.keys
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_is_taken_in_turn_once_it_conflicted() {
        let hot = HotKeys::default();
        assert!(hot.take_turn("room").await.is_none(), "not hot yet");
        hot.conflicted(["room"]);
        let first = hot.take_turn("room").await.expect("hot: a turn");
        let second = tokio::spawn({
            let hot = Arc::new(hot);
            async move { hot.take_turn("room").await.is_some() }
        });
        tokio::time::sleep(TURN_WAIT / 4).await;
        assert!(!second.is_finished(), "waits for the first turn to end");
        drop(first);
        assert!(second.await.expect("joins"), "then takes its turn");
    }

    #[tokio::test]
    async fn a_turn_held_too_long_is_not_waited_for() {
        let hot = HotKeys::default();
        hot.conflicted(["a"]);
        let _held = hot.take_turn("a").await.expect("a turn");
        let waited = Instant::now();
        assert!(hot.take_turn("a").await.is_none());
        assert!(waited.elapsed() >= TURN_WAIT);
    }
}
