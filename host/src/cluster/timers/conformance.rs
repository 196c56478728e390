//! The semantics every [`TimerStore`] must have, checked against each backend.

use super::{DueTimer, TimerStore};
use crate::cluster::StateError;

/// Schedules a timer where no limit applies.
async fn schedule(store: &dyn TimerStore, plugin: &str, key: &str, at_ms: u64, payload: &str) {
    store
        .schedule(plugin, key, at_ms, payload, u64::MAX)
        .await
        .unwrap();
}

pub async fn check_all(store: &dyn TimerStore) {
    due_timers_come_once_in_time_order(store).await;
    schedule_replaces_and_cancel_removes(store).await;
    a_plugin_at_its_limit_schedules_no_new_timer(store).await;
}

fn timer(plugin: &str, key: &str, payload: &str) -> DueTimer {
    DueTimer {
        plugin: plugin.to_owned(),
        key: key.to_owned(),
        payload: payload.to_owned(),
    }
}

async fn due_timers_come_once_in_time_order(store: &dyn TimerStore) {
    schedule(store, "a", "late", 300, "3").await;
    schedule(store, "a", "early", 100, "1").await;
    schedule(store, "b", "early", 200, "2").await;
    assert!(store.claim_due(99, 10).await.unwrap().is_empty());
    let due = store.claim_due(250, 10).await.unwrap();
    assert_eq!(due, [timer("a", "early", "1"), timer("b", "early", "2")]);
    assert!(
        store.claim_due(250, 10).await.unwrap().is_empty(),
        "a claimed timer is not claimed again"
    );
    for done in &due {
        store.complete(done).await.unwrap();
    }
    assert_eq!(
        store.claim_due(1_000, 1).await.unwrap(),
        [timer("a", "late", "3")]
    );
    store.complete(&timer("a", "late", "3")).await.unwrap();
}

async fn schedule_replaces_and_cancel_removes(store: &dyn TimerStore) {
    schedule(store, "a", "k", 100, "first").await;
    schedule(store, "a", "k", 500, "second").await;
    assert!(store.claim_due(200, 10).await.unwrap().is_empty());
    assert!(store.cancel("a", "k").await.unwrap());
    assert!(!store.cancel("a", "k").await.unwrap());
    assert!(store.claim_due(1_000, 10).await.unwrap().is_empty());
    schedule(store, "a", "key/with/slashes", 100, "x").await;
    let due = store.claim_due(1_000, 10).await.unwrap();
    assert_eq!(due, [timer("a", "key/with/slashes", "x")]);
    // Scheduled again while being delivered: completing the old delivery keeps the new one.
    schedule(store, "a", "key/with/slashes", 2_000, "y").await;
    store.complete(&due[0]).await.unwrap();
    assert_eq!(
        store.claim_due(3_000, 10).await.unwrap(),
        [timer("a", "key/with/slashes", "y")]
    );
}

async fn a_plugin_at_its_limit_schedules_no_new_timer(store: &dyn TimerStore) {
    store.schedule("c", "one", 100, "1", 2).await.unwrap();
    store.schedule("c", "two", 5_000, "2", 2).await.unwrap();
    assert!(matches!(
        store.schedule("c", "three", 100, "3", 2).await,
        Err(StateError::TooManyTimers { max: 2 })
    ));
    // Its pending timers can be scheduled again; other plugins are not held back.
    store.schedule("c", "one", 200, "1 again", 2).await.unwrap();
    store.schedule("d", "three", 5_000, "d", 2).await.unwrap();
    // A cancelled timer, and one delivered, make room.
    assert!(store.cancel("c", "two").await.unwrap());
    store.schedule("c", "three", 5_000, "3", 2).await.unwrap();
    let due = store.claim_due(1_000, 10).await.unwrap();
    assert_eq!(due, [timer("c", "one", "1 again")]);
    store.complete(&due[0]).await.unwrap();
    store.schedule("c", "four", 5_000, "4", 2).await.unwrap();
    for (plugin, key) in [("c", "three"), ("c", "four"), ("d", "three")] {
        assert!(store.cancel(plugin, key).await.unwrap());
    }
}
