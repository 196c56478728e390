//! The semantics every [`TimerStore`] must have, checked against each backend.

use super::{DueTimer, TimerStore};

pub async fn check_all(store: &dyn TimerStore) {
    due_timers_come_once_in_time_order(store).await;
    schedule_replaces_and_cancel_removes(store).await;
}

fn timer(plugin: &str, key: &str, payload: &str) -> DueTimer {
    DueTimer {
        plugin: plugin.to_owned(),
        key: key.to_owned(),
        payload: payload.to_owned(),
    }
}

async fn due_timers_come_once_in_time_order(store: &dyn TimerStore) {
    store.schedule("a", "late", 300, "3").await.unwrap();
    store.schedule("a", "early", 100, "1").await.unwrap();
    store.schedule("b", "early", 200, "2").await.unwrap();
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
    store.schedule("a", "k", 100, "first").await.unwrap();
    store.schedule("a", "k", 500, "second").await.unwrap();
    assert!(store.claim_due(200, 10).await.unwrap().is_empty());
    assert!(store.cancel("a", "k").await.unwrap());
    assert!(!store.cancel("a", "k").await.unwrap());
    assert!(store.claim_due(1_000, 10).await.unwrap().is_empty());
    store
        .schedule("a", "key/with/slashes", 100, "x")
        .await
        .unwrap();
    let due = store.claim_due(1_000, 10).await.unwrap();
    assert_eq!(due, [timer("a", "key/with/slashes", "x")]);
    // Scheduled again while being delivered: completing the old delivery keeps the new one.
    store
        .schedule("a", "key/with/slashes", 2_000, "y")
        .await
        .unwrap();
    store.complete(&due[0]).await.unwrap();
    assert_eq!(
        store.claim_due(3_000, 10).await.unwrap(),
        [timer("a", "key/with/slashes", "y")]
    );
}
