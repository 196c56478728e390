//! The semantics every [`StateStore`] must have, checked through
//! [`Transaction`]s against each backend.

use std::sync::Arc;
use std::time::Duration;

use super::{Committed, Scope, StateError, StateStore, Transaction};

pub async fn check_all(store: Arc<dyn StateStore>) {
    strings_counters_and_compare_and_swap(&store).await;
    a_call_sees_its_own_writes_and_nothing_uncommitted(&store).await;
    changed_reads_conflict_and_blind_writes_do_not(&store).await;
    values_expire(&store).await;
    lists_follow_redis_indexing(&store).await;
    hashes_sets_and_sorted_sets(&store).await;
    keys_are_counted_per_scope(&store).await;
    collections_are_capped(&store).await;
    a_lease_holder_cannot_be_overtaken(&store).await;
    held_keys_wait_for_their_release(&store).await;
    a_call_holds_at_most_max_call_bytes(&store).await;
}

async fn a_call_holds_at_most_max_call_bytes(store: &Arc<dyn StateStore>) {
    let scope = &Scope {
        max_call_bytes: 8192,
        ..new_scope("plugin:call-bytes:", 100, 100)
    };
    fn too_large<T>(result: Result<T, StateError>) -> bool {
        matches!(result, Err(StateError::CallTooLarge { max: 8192 }))
    }
    let value = "x".repeat(1000);
    let keys: Vec<String> = (0..9).map(|n| format!("k{n}")).collect();
    let mut writer = open(store, scope);
    // A key of 1,000 bytes holds 1,130 with its name and records: seven fit.
    for key in &keys[..7] {
        writer.set(key, value.clone(), None).unwrap();
    }
    assert!(too_large(writer.set(&keys[7], value.clone(), None)));
    // Making a key smaller makes room.
    writer.set(&keys[0], "small".into(), None).unwrap();
    writer.set(&keys[7], value.clone(), None).unwrap();
    assert!(too_large(
        writer.list_push("list", vec![value.clone()]).await
    ));
    assert_eq!(
        writer.len("list").await.unwrap(),
        0,
        "a refused change is not made"
    );
    assert_eq!(writer.commit(None).await.unwrap().0, Committed::Applied);
    store_value(store, scope, &keys[8], &value).await;
    // What a call reads counts as well.
    let mut reader = open(store, scope);
    let read = reader.get_many(&keys[..8]).await.unwrap();
    assert_eq!(read[0].as_deref(), Some("small"));
    assert_eq!(read[7].as_ref(), Some(&value));
    assert!(too_large(reader.get(&keys[8]).await));
    assert!(too_large(open(store, scope).get_many(&keys).await));
}

async fn held_keys_wait_for_their_release(store: &Arc<dyn StateStore>) {
    let scope = &new_scope("plugin:holds:", 100, 100);
    let mut writer = open(store, scope);
    writer.set("held", "1".into(), None).unwrap();
    let (committed, written) = writer.commit(Some("token")).await.unwrap();
    assert_eq!(committed, Committed::Applied);
    assert_eq!(written, ["held"]);
    let keys = ["held".to_owned()];
    assert_eq!(
        store.read(scope, &keys).await.unwrap(),
        None,
        "held until released"
    );
    assert!(
        store
            .read(scope, &["free".to_owned()])
            .await
            .unwrap()
            .is_some()
    );
    store.release_holds(scope, "other", &keys).await.unwrap();
    assert_eq!(
        store.read(scope, &keys).await.unwrap(),
        None,
        "only its token releases it"
    );
    let reader = tokio::spawn({
        let store = store.clone();
        let scope = scope.clone();
        async move { open(&store, &scope).get("held").await.unwrap() }
    });
    writer.release("token", &written).await.unwrap();
    assert_eq!(
        reader.await.unwrap().as_deref(),
        Some("1"),
        "a waiting read goes on"
    );
}

async fn a_lease_holder_cannot_be_overtaken(store: &Arc<dyn StateStore>) {
    let scope = &new_scope("plugin:lease:", 100, 100);
    let ttl = Duration::from_secs(10);
    assert!(store.acquire_lease(scope, "holder", ttl).await.unwrap());
    assert!(!store.acquire_lease(scope, "other", ttl).await.unwrap());
    let mut holder = open(store, scope);
    holder.run_under(Some("holder".to_owned()));
    assert_eq!(holder.incr("hot", 1).await.unwrap(), 1);
    let mut other = open(store, scope);
    other.set("cold", "x".into(), None).unwrap();
    assert_eq!(
        other.commit(None).await.unwrap().0,
        Committed::Conflict,
        "writes wait for the lease"
    );
    let mut reader = open(store, scope);
    reader.get("hot").await.unwrap();
    assert_eq!(
        reader.commit(None).await.unwrap().0,
        Committed::Applied,
        "reads do not"
    );
    assert_eq!(holder.commit(None).await.unwrap().0, Committed::Applied);
    store.release_lease(scope, "other").await.unwrap();
    assert!(
        !store.acquire_lease(scope, "other", ttl).await.unwrap(),
        "only the holder releases"
    );
    store.release_lease(scope, "holder").await.unwrap();
    store_value(store, scope, "cold", "x").await;
    // A lease whose holder died lapses.
    assert!(
        store
            .acquire_lease(scope, "dead", Duration::from_millis(30))
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(80)).await;
    store_value(store, scope, "cold", "y").await;
    assert!(store.acquire_lease(scope, "next", ttl).await.unwrap());
}

fn new_scope(prefix: &str, max_keys: u64, max_list_items: u64) -> Scope {
    Scope {
        prefix: prefix.to_owned(),
        max_keys,
        max_list_items,
        max_call_bytes: 1 << 20,
    }
}

fn open(store: &Arc<dyn StateStore>, scope: &Scope) -> Transaction {
    Transaction::new(store.clone(), scope.clone(), Arc::default())
}

/// Runs `work` in a transaction of its own and commits it.
async fn committed<R>(
    store: &Arc<dyn StateStore>,
    scope: &Scope,
    work: impl AsyncFnOnce(&mut Transaction) -> Result<R, StateError>,
) -> Result<R, StateError> {
    let mut transaction = open(store, scope);
    let result = work(&mut transaction).await?;
    assert_eq!(transaction.commit(None).await?.0, Committed::Applied);
    Ok(result)
}

async fn store_value(store: &Arc<dyn StateStore>, scope: &Scope, key: &str, value: &str) {
    let mut transaction = open(store, scope);
    transaction.set(key, value.to_owned(), None).unwrap();
    assert_eq!(
        transaction.commit(None).await.unwrap().0,
        Committed::Applied
    );
}

async fn strings_counters_and_compare_and_swap(store: &Arc<dyn StateStore>) {
    let scope = &new_scope("plugin:strings:", 100, 100);
    let mut t = open(store, scope);
    assert_eq!(t.get("a").await.unwrap(), None);
    t.set("a", "1".into(), None).unwrap();
    assert_eq!(t.incr("a", 41).await.unwrap(), 42);
    assert_eq!(t.incr("fresh", -2).await.unwrap(), -2);
    assert!(
        !t.compare_and_swap("a", Some("41"), "x".into(), None)
            .await
            .unwrap()
    );
    assert!(
        t.compare_and_swap("a", Some("42"), "x".into(), None)
            .await
            .unwrap()
    );
    assert!(matches!(
        t.incr("a", 1).await,
        Err(StateError::NotAnInteger { .. })
    ));
    t.set("big", i64::MAX.to_string(), None).unwrap();
    assert!(matches!(
        t.incr("big", 1).await,
        Err(StateError::Overflow { .. })
    ));
    assert!(
        t.compare_and_swap("new", None, "v".into(), None)
            .await
            .unwrap()
    );
    assert!(
        !t.compare_and_swap("new", None, "w".into(), None)
            .await
            .unwrap()
    );
    assert_eq!(t.commit(None).await.unwrap().0, Committed::Applied);

    let mut t = open(store, scope);
    let keys = ["a", "fresh", "new", "none"].map(String::from);
    assert_eq!(
        t.get_many(&keys).await.unwrap(),
        [Some("x".into()), Some("-2".into()), Some("v".into()), None]
    );
    assert!(t.delete("a").await.unwrap());
    assert!(!t.delete("a").await.unwrap());
    assert_eq!(t.commit(None).await.unwrap().0, Committed::Applied);
    assert_eq!(open(store, scope).get("a").await.unwrap(), None);
    // The escape hatch applies at once and keeps the semantics.
    assert_eq!(store.incr_now(scope, "fresh", 5).await.unwrap(), 3);
    assert!(matches!(
        store.incr_now(scope, "new", 1).await,
        Err(StateError::NotAnInteger { .. })
    ));
}

async fn a_call_sees_its_own_writes_and_nothing_uncommitted(store: &Arc<dyn StateStore>) {
    let scope = &new_scope("plugin:own:", 100, 100);
    let mut t = open(store, scope);
    t.set("k", "mine".into(), None).unwrap();
    assert!(t.set_add("voters", "ann".into()).await.unwrap());
    assert_eq!(t.get("k").await.unwrap().as_deref(), Some("mine"));
    assert!(!t.set_add("voters", "ann".into()).await.unwrap());
    // Not committed: another call sees nothing of it, and dropping it is a rollback.
    let mut other = open(store, scope);
    assert_eq!(other.get("k").await.unwrap(), None);
    assert!(other.set_members("voters").await.unwrap().is_empty());
    drop(t);
    assert_eq!(open(store, scope).get("k").await.unwrap(), None);
}

async fn changed_reads_conflict_and_blind_writes_do_not(store: &Arc<dyn StateStore>) {
    let scope = &new_scope("plugin:conflicts:", 100, 100);
    store_value(store, scope, "count", "0").await;
    let mut first = open(store, scope);
    let mut second = open(store, scope);
    assert_eq!(first.incr("count", 1).await.unwrap(), 1);
    assert_eq!(second.incr("count", 1).await.unwrap(), 1);
    first.set("blind", "first".into(), None).unwrap();
    second.set("blind", "second".into(), None).unwrap();
    assert_eq!(first.commit(None).await.unwrap().0, Committed::Applied);
    assert_eq!(second.commit(None).await.unwrap().0, Committed::Conflict);
    let mut check = open(store, scope);
    assert_eq!(check.get("count").await.unwrap().as_deref(), Some("1"));
    assert_eq!(check.get("blind").await.unwrap().as_deref(), Some("first"));

    // Blind writes of the same key both commit; the last one stays.
    let mut first = open(store, scope);
    let mut second = open(store, scope);
    first.set("blind", "1".into(), None).unwrap();
    second.set("blind", "2".into(), None).unwrap();
    assert_eq!(first.commit(None).await.unwrap().0, Committed::Applied);
    assert_eq!(second.commit(None).await.unwrap().0, Committed::Applied);

    // A key read absent and created meanwhile conflicts; so does an
    // immediate increment of a key read, and a deletion.
    let mut reader = open(store, scope);
    assert_eq!(reader.get("later").await.unwrap(), None);
    reader.set("other", "x".into(), None).unwrap();
    store_value(store, scope, "later", "v").await;
    assert_eq!(reader.commit(None).await.unwrap().0, Committed::Conflict);
    let mut reader = open(store, scope);
    assert_eq!(reader.incr("count", 1).await.unwrap(), 2);
    store.incr_now(scope, "count", 10).await.unwrap();
    assert_eq!(reader.commit(None).await.unwrap().0, Committed::Conflict);
    let mut reader = open(store, scope);
    assert_eq!(reader.incr("count", 1).await.unwrap(), 12);
    committed(store, scope, async |t| t.delete("count").await)
        .await
        .unwrap();
    assert_eq!(reader.commit(None).await.unwrap().0, Committed::Conflict);

    // Reads of several keys are validated even without writes.
    let mut reader = open(store, scope);
    reader.get("later").await.unwrap();
    reader.get("blind").await.unwrap();
    store_value(store, scope, "blind", "3").await;
    assert_eq!(reader.commit(None).await.unwrap().0, Committed::Conflict);
}

async fn values_expire(store: &Arc<dyn StateStore>) {
    let scope = &new_scope("plugin:expiry:", 100, 100);
    committed(store, scope, async |t| {
        t.set("k", "v".into(), Some(30)).unwrap();
        assert!(t.compare_and_swap("c", None, "v".into(), Some(30)).await?);
        t.set("kept", "v".into(), Some(30)).unwrap();
        assert!(t.expire("kept", None).await?);
        t.set("counter", "1".into(), Some(60_000)).unwrap();
        Ok(())
    })
    .await
    .unwrap();
    // An increment keeps the expiry; a read in a later call sees it.
    committed(store, scope, async |t| t.incr("counter", 1).await)
        .await
        .unwrap();
    assert!(open(store, scope).get("k").await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(80)).await;
    let mut t = open(store, scope);
    assert_eq!(t.get("k").await.unwrap(), None);
    assert_eq!(t.get("c").await.unwrap(), None);
    assert_eq!(t.get("kept").await.unwrap().as_deref(), Some("v"));
    assert!(!t.expire("k", None).await.unwrap());
    let snapshot = store.read(scope, &["counter".to_owned()]).await.unwrap();
    let snapshot = snapshot.unwrap();
    let record = snapshot[0].record.as_ref().unwrap();
    assert!(matches!(record.expiry, super::Expiry::At(_)), "{record:?}");
}

async fn lists_follow_redis_indexing(store: &Arc<dyn StateStore>) {
    let scope = &new_scope("plugin:lists:", 100, 100);
    committed(store, scope, async |t| {
        let values = ["a", "b", "c", "d"].map(String::from).to_vec();
        assert_eq!(t.list_push("l", values).await?, 4);
        t.set("text", "t".into(), None).unwrap();
        Ok(())
    })
    .await
    .unwrap();
    let mut t = open(store, scope);
    assert_eq!(t.list_range("l", -2, -1).await.unwrap(), ["c", "d"]);
    assert_eq!(t.list_range("l", 0, 100).await.unwrap().len(), 4);
    assert!(t.list_range("l", 3, 1).await.unwrap().is_empty());
    assert!(t.list_range("missing", 0, -1).await.unwrap().is_empty());
    t.list_trim("l", -3, -1).await.unwrap();
    assert_eq!(t.list_range("l", 0, -1).await.unwrap(), ["b", "c", "d"]);
    assert!(matches!(
        t.get("l").await,
        Err(StateError::WrongType { .. })
    ));
    assert!(matches!(
        t.list_push("text", vec!["x".into()]).await,
        Err(StateError::WrongType { .. })
    ));
    assert_eq!(t.commit(None).await.unwrap().0, Committed::Applied);
    let mut t = open(store, scope);
    assert_eq!(t.list_range("l", 0, -1).await.unwrap(), ["b", "c", "d"]);
    // Trimmed empty, the list is gone.
    t.list_trim("l", 5, 6).await.unwrap();
    assert_eq!(t.commit(None).await.unwrap().0, Committed::Applied);
    assert!(!open(store, scope).delete("l").await.unwrap());
}

async fn hashes_sets_and_sorted_sets(store: &Arc<dyn StateStore>) {
    let scope = &new_scope("plugin:kinds:", 100, 100);
    committed(store, scope, async |t| {
        assert!(t.hash_set("h", "a".into(), "1".into()).await?);
        assert!(!t.hash_set("h", "a".into(), "2".into()).await?);
        assert_eq!(t.hash_incr("h", "n", 5).await?, 5);
        assert!(t.set_add("s", "x".into()).await?);
        assert!(t.set_add("s", "y".into()).await?);
        assert!(t.sorted_add("z", "low".into(), 1.5).await?);
        assert!(t.sorted_add("z", "high".into(), 10.0).await?);
        assert!(!t.sorted_add("z", "low".into(), 2.25).await?);
        assert_eq!(t.sorted_incr("z", "mid".into(), 5.0).await?, 5.0);
        Ok(())
    })
    .await
    .unwrap();
    let mut t = open(store, scope);
    assert_eq!(t.hash_get("h", "a").await.unwrap().as_deref(), Some("2"));
    assert_eq!(
        t.hash_get_all("h").await.unwrap(),
        [("a".into(), "2".into()), ("n".into(), "5".into())]
    );
    assert!(t.set_contains("s", "x").await.unwrap());
    assert!(!t.set_add("s", "x".into()).await.unwrap());
    assert_eq!(t.set_members("s").await.unwrap(), ["x", "y"]);
    assert_eq!(t.len("s").await.unwrap(), 2);
    assert_eq!(t.sorted_score("z", "low").await.unwrap(), Some(2.25));
    assert_eq!(
        t.sorted_range("z", 0, 1, true).await.unwrap(),
        [("high".to_owned(), 10.0), ("mid".to_owned(), 5.0)]
    );
    assert_eq!(
        t.sorted_range("z", 0, -1, false).await.unwrap()[0],
        ("low".to_owned(), 2.25)
    );
    assert!(matches!(
        t.set_add("h", "x".into()).await,
        Err(StateError::WrongType { .. })
    ));
    assert!(matches!(
        t.sorted_add("z", "nan".into(), f64::NAN).await,
        Err(StateError::NotAFiniteScore { .. })
    ));
    assert!(t.hash_delete("h", "a").await.unwrap());
    assert!(t.set_remove("s", "x").await.unwrap());
    assert!(t.set_remove("s", "y").await.unwrap());
    assert!(t.sorted_remove("z", "mid").await.unwrap());
    assert_eq!(t.commit(None).await.unwrap().0, Committed::Applied);
    let mut t = open(store, scope);
    assert_eq!(
        t.hash_get_all("h").await.unwrap(),
        [("n".into(), "5".into())]
    );
    assert_eq!(t.len("s").await.unwrap(), 0, "an emptied set is deleted");
    assert_eq!(t.len("z").await.unwrap(), 2);
}

async fn keys_are_counted_per_scope(store: &Arc<dyn StateStore>) {
    let scope = &new_scope("plugin:quota:", 3, 100);
    let other = &new_scope("plugin:other:", 3, 100);
    committed(store, scope, async |t| {
        t.set("a", "1".into(), None).unwrap();
        t.incr("b", 1).await?;
        t.list_push("c", vec!["x".into()]).await
    })
    .await
    .unwrap();
    let full = |result: Result<Committed, StateError>| {
        matches!(result, Err(StateError::TooManyKeys { max: 3 }))
    };
    let mut t = open(store, scope);
    t.set("d", "1".into(), None).unwrap();
    assert!(full(t.commit(None).await.map(|(committed, _)| committed)));
    let mut t = open(store, scope);
    assert!(t.set_add("d", "x".into()).await.unwrap());
    t.set("a", "changed".into(), None).unwrap();
    assert!(
        full(t.commit(None).await.map(|(committed, _)| committed)),
        "one key too many fails the whole call"
    );
    let mut t = open(store, scope);
    assert_eq!(t.get("a").await.unwrap().as_deref(), Some("1"));
    assert_eq!(t.get("d").await.unwrap(), None);
    assert!(full(
        store
            .incr_now(scope, "d", 1)
            .await
            .map(|_| Committed::Applied)
    ));
    // Existing keys can still be written, other scopes are not affected, and
    // a call that deletes as many keys as it creates fits.
    committed(store, scope, async |t| {
        t.set("a", "2".into(), None).unwrap();
        t.incr("b", 1).await
    })
    .await
    .unwrap();
    store_value(store, other, "d", "1").await;
    committed(store, scope, async |t| {
        t.set("d", "1".into(), None).unwrap();
        t.delete("a").await
    })
    .await
    .unwrap();
    // Expiring frees a key.
    committed(store, scope, async |t| t.expire("d", Some(30)).await)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(80)).await;
    store_value(store, scope, "e", "1").await;
}

async fn collections_are_capped(store: &Arc<dyn StateStore>) {
    let scope = &new_scope("plugin:capped:", 10, 3);
    let values = |n: usize| vec!["v".to_owned(); n];
    fn too_long<T>(result: Result<T, StateError>) -> bool {
        matches!(result, Err(StateError::ListTooLong { max: 3, .. }))
    }
    let mut t = open(store, scope);
    assert!(too_long(t.list_push("l", values(4)).await));
    assert!(t.list_range("l", 0, -1).await.unwrap().is_empty());
    // Pushing nothing creates no key.
    assert_eq!(t.list_push("empty", Vec::new()).await.unwrap(), 0);
    assert_eq!(t.list_push("l", values(2)).await.unwrap(), 2);
    assert!(too_long(t.list_push("l", values(2)).await));
    assert_eq!(t.list_push("l", values(1)).await.unwrap(), 3);
    for member in ["a", "b", "c"] {
        t.set_add("s", member.into()).await.unwrap();
        t.hash_set("h", member.into(), "v".into()).await.unwrap();
        t.sorted_add("z", member.into(), 1.0).await.unwrap();
    }
    assert!(too_long(t.set_add("s", "d".into()).await));
    assert!(too_long(t.hash_set("h", "d".into(), "v".into()).await));
    assert!(too_long(t.sorted_add("z", "d".into(), 1.0).await));
    assert_eq!(t.commit(None).await.unwrap().0, Committed::Applied);
    assert_eq!(open(store, scope).len("empty").await.unwrap(), 0);
}
