//! The semantics every [`StateStore`] must have, checked against each backend.

use std::time::Duration;

use super::{StateError, StateStore};

pub async fn check_all(store: &dyn StateStore) {
    strings_counters_and_compare_and_swap(store).await;
    values_expire(store).await;
    lists_follow_redis_indexing(store).await;
}

async fn strings_counters_and_compare_and_swap(store: &dyn StateStore) {
    assert_eq!(store.get("a").await.unwrap(), None);
    store.set("a", "1".into(), None).await.unwrap();
    assert_eq!(store.incr("a", 41).await.unwrap(), 42);
    assert_eq!(store.incr("fresh", -2).await.unwrap(), -2);
    assert!(
        !store
            .compare_and_swap("a", Some("41"), "x".into(), None)
            .await
            .unwrap()
    );
    assert!(
        store
            .compare_and_swap("a", Some("42"), "x".into(), None)
            .await
            .unwrap()
    );
    assert_eq!(store.get("a").await.unwrap().as_deref(), Some("x"));
    assert!(matches!(
        store.incr("a", 1).await,
        Err(StateError::NotAnInteger { .. })
    ));
    store.set("big", i64::MAX.to_string(), None).await.unwrap();
    assert!(matches!(
        store.incr("big", 1).await,
        Err(StateError::Overflow { .. })
    ));
    assert!(
        store
            .compare_and_swap("new", None, "v".into(), None)
            .await
            .unwrap()
    );
    assert!(
        !store
            .compare_and_swap("new", None, "w".into(), None)
            .await
            .unwrap()
    );
    assert!(store.delete("a").await.unwrap());
    assert!(!store.delete("a").await.unwrap());
}

async fn values_expire(store: &dyn StateStore) {
    let short = Some(Duration::from_millis(30));
    store.set("k", "v".into(), short).await.unwrap();
    assert!(
        store
            .compare_and_swap("c", None, "v".into(), short)
            .await
            .unwrap()
    );
    store.set("kept", "v".into(), short).await.unwrap();
    assert!(store.expire("kept", None).await.unwrap());
    assert!(store.get("k").await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert_eq!(store.get("k").await.unwrap(), None);
    assert_eq!(store.get("c").await.unwrap(), None);
    assert_eq!(store.get("kept").await.unwrap().as_deref(), Some("v"));
    assert!(!store.expire("k", None).await.unwrap());
    assert!(
        store
            .expire("kept", Some(Duration::from_secs(60)))
            .await
            .unwrap()
    );
}

async fn lists_follow_redis_indexing(store: &dyn StateStore) {
    let values = ["a", "b", "c", "d"].map(String::from).to_vec();
    assert_eq!(store.list_push("l", values).await.unwrap(), 4);
    assert_eq!(store.list_range("l", -2, -1).await.unwrap(), ["c", "d"]);
    assert_eq!(store.list_range("l", 0, 100).await.unwrap().len(), 4);
    assert!(store.list_range("l", 3, 1).await.unwrap().is_empty());
    assert!(store.list_range("missing", 0, -1).await.unwrap().is_empty());
    store.list_trim("l", -3, -1).await.unwrap();
    assert_eq!(store.list_range("l", 0, -1).await.unwrap(), ["b", "c", "d"]);
    assert!(matches!(
        store.get("l").await,
        Err(StateError::NotAString { .. })
    ));
    store.set("text", "t".into(), None).await.unwrap();
    assert!(matches!(
        store.list_push("text", vec!["x".into()]).await,
        Err(StateError::NotAList { .. })
    ));
    store.list_trim("l", 5, 6).await.unwrap();
    assert!(store.list_range("l", 0, -1).await.unwrap().is_empty());
    assert!(!store.delete("l").await.unwrap());
}
