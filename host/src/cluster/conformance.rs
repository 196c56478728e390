//! The semantics every [`StateStore`] must have, checked against each backend.

use std::time::Duration;

use super::{Scope, StateError, StateStore};

pub async fn check_all(store: &dyn StateStore) {
    let scope = &new_scope("plugin:a:", 100, 100);
    strings_counters_and_compare_and_swap(store, scope).await;
    values_expire(store, scope).await;
    lists_follow_redis_indexing(store, scope).await;
    keys_are_counted_per_scope(store).await;
    lists_are_capped(store).await;
}

fn new_scope(prefix: &str, max_keys: u64, max_list_items: u64) -> Scope {
    Scope {
        prefix: prefix.to_owned(),
        max_keys,
        max_list_items,
    }
}

async fn keys_are_counted_per_scope(store: &dyn StateStore) {
    let scope = &new_scope("plugin:quota:", 3, 100);
    let other = &new_scope("plugin:other:", 3, 100);
    store.set(scope, "a", "1".into(), None).await.unwrap();
    assert_eq!(store.incr(scope, "b", 1).await.unwrap(), 1);
    store.list_push(scope, "c", vec!["x".into()]).await.unwrap();
    let full =
        |result: Result<_, StateError>| matches!(result, Err(StateError::TooManyKeys { max: 3 }));
    assert!(full(store.set(scope, "d", "1".into(), None).await));
    assert!(full(store.incr(scope, "d", 1).await.map(drop)));
    assert!(full(
        store
            .list_push(scope, "d", vec!["x".into()])
            .await
            .map(drop)
    ));
    assert!(full(
        store
            .compare_and_swap(scope, "d", None, "1".into(), None)
            .await
            .map(drop)
    ));
    assert_eq!(store.get(scope, "d").await.unwrap(), None);
    // Existing keys can still be written, and other scopes are not affected.
    store.set(scope, "a", "2".into(), None).await.unwrap();
    assert_eq!(store.incr(scope, "b", 1).await.unwrap(), 2);
    store.list_push(scope, "c", vec!["y".into()]).await.unwrap();
    store.set(other, "d", "1".into(), None).await.unwrap();
    // Deleting, trimming a list empty and expiring each free a key.
    assert!(store.delete(scope, "a").await.unwrap());
    store.set(scope, "d", "1".into(), None).await.unwrap();
    assert!(full(store.set(scope, "e", "1".into(), None).await));
    store.list_trim(scope, "c", 5, 6).await.unwrap();
    store
        .set(scope, "e", "1".into(), Some(Duration::from_millis(30)))
        .await
        .unwrap();
    assert!(full(store.set(scope, "f", "1".into(), None).await));
    tokio::time::sleep(Duration::from_millis(80)).await;
    store.set(scope, "f", "1".into(), None).await.unwrap();
    assert!(
        store
            .expire(scope, "f", Some(Duration::from_millis(30)))
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(80)).await;
    store.set(scope, "g", "1".into(), None).await.unwrap();
}

async fn lists_are_capped(store: &dyn StateStore) {
    let scope = &new_scope("plugin:lists:", 10, 3);
    let values = |n: usize| vec!["v".to_owned(); n];
    let too_long = |result: Result<u64, StateError>| {
        matches!(result, Err(StateError::ListTooLong { max: 3, .. }))
    };
    assert!(too_long(store.list_push(scope, "l", values(4)).await));
    assert!(
        store
            .list_range(scope, "l", 0, -1)
            .await
            .unwrap()
            .is_empty()
    );
    // Pushing nothing creates no key, so it takes no room in the key quota.
    for index in 0..11 {
        let key = format!("empty{index}");
        assert_eq!(store.list_push(scope, &key, Vec::new()).await.unwrap(), 0);
    }
    assert_eq!(store.list_push(scope, "l", values(2)).await.unwrap(), 2);
    assert!(too_long(store.list_push(scope, "l", values(2)).await));
    assert_eq!(store.list_push(scope, "l", values(1)).await.unwrap(), 3);
    store.list_trim(scope, "l", -1, -1).await.unwrap();
    assert_eq!(store.list_push(scope, "l", values(2)).await.unwrap(), 3);
}

async fn strings_counters_and_compare_and_swap(store: &dyn StateStore, scope: &Scope) {
    assert_eq!(store.get(scope, "a").await.unwrap(), None);
    store.set(scope, "a", "1".into(), None).await.unwrap();
    assert_eq!(store.incr(scope, "a", 41).await.unwrap(), 42);
    assert_eq!(store.incr(scope, "fresh", -2).await.unwrap(), -2);
    assert!(
        !store
            .compare_and_swap(scope, "a", Some("41"), "x".into(), None)
            .await
            .unwrap()
    );
    assert!(
        store
            .compare_and_swap(scope, "a", Some("42"), "x".into(), None)
            .await
            .unwrap()
    );
    assert_eq!(store.get(scope, "a").await.unwrap().as_deref(), Some("x"));
    assert!(matches!(
        store.incr(scope, "a", 1).await,
        Err(StateError::NotAnInteger { .. })
    ));
    store
        .set(scope, "big", i64::MAX.to_string(), None)
        .await
        .unwrap();
    assert!(matches!(
        store.incr(scope, "big", 1).await,
        Err(StateError::Overflow { .. })
    ));
    assert!(
        store
            .compare_and_swap(scope, "new", None, "v".into(), None)
            .await
            .unwrap()
    );
    assert!(
        !store
            .compare_and_swap(scope, "new", None, "w".into(), None)
            .await
            .unwrap()
    );
    assert!(store.delete(scope, "a").await.unwrap());
    assert!(!store.delete(scope, "a").await.unwrap());
}

async fn values_expire(store: &dyn StateStore, scope: &Scope) {
    let short = Some(Duration::from_millis(30));
    store.set(scope, "k", "v".into(), short).await.unwrap();
    assert!(
        store
            .compare_and_swap(scope, "c", None, "v".into(), short)
            .await
            .unwrap()
    );
    store.set(scope, "kept", "v".into(), short).await.unwrap();
    assert!(store.expire(scope, "kept", None).await.unwrap());
    assert!(store.get(scope, "k").await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert_eq!(store.get(scope, "k").await.unwrap(), None);
    assert_eq!(store.get(scope, "c").await.unwrap(), None);
    assert_eq!(
        store.get(scope, "kept").await.unwrap().as_deref(),
        Some("v")
    );
    assert!(!store.expire(scope, "k", None).await.unwrap());
    assert!(
        store
            .expire(scope, "kept", Some(Duration::from_secs(60)))
            .await
            .unwrap()
    );
}

async fn lists_follow_redis_indexing(store: &dyn StateStore, scope: &Scope) {
    let values = ["a", "b", "c", "d"].map(String::from).to_vec();
    assert_eq!(store.list_push(scope, "l", values).await.unwrap(), 4);
    assert_eq!(
        store.list_range(scope, "l", -2, -1).await.unwrap(),
        ["c", "d"]
    );
    assert_eq!(store.list_range(scope, "l", 0, 100).await.unwrap().len(), 4);
    assert!(store.list_range(scope, "l", 3, 1).await.unwrap().is_empty());
    assert!(
        store
            .list_range(scope, "missing", 0, -1)
            .await
            .unwrap()
            .is_empty()
    );
    store.list_trim(scope, "l", -3, -1).await.unwrap();
    assert_eq!(
        store.list_range(scope, "l", 0, -1).await.unwrap(),
        ["b", "c", "d"]
    );
    assert!(matches!(
        store.get(scope, "l").await,
        Err(StateError::NotAString { .. })
    ));
    store.set(scope, "text", "t".into(), None).await.unwrap();
    assert!(matches!(
        store.list_push(scope, "text", vec!["x".into()]).await,
        Err(StateError::NotAList { .. })
    ));
    store.list_trim(scope, "l", 5, 6).await.unwrap();
    assert!(
        store
            .list_range(scope, "l", 0, -1)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(!store.delete(scope, "l").await.unwrap());
}
