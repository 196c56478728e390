//! A call's view of its plugin's state: optimistic and serializable.
//!
//! The first time a call touches a key, the transaction reads it whole with
//! its version; every operation then works on that copy, so the call sees
//! its own writes and nothing else's. At the end the writes are committed in
//! one step that fails with [`Committed::Conflict`] when a key the call read
//! was changed meanwhile; the caller then runs the call again on fresh state.
//! A call that fails commits nothing. A `set` alone does not read its key, so
//! blind writes never conflict. Keys that conflicted are read in turn by the
//! calls of this node ([`HotKeys`]). What the call holds of its keys is
//! bounded in bytes ([`Scope::max_call_bytes`]).

use std::collections::hash_map::Entry as Slot;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use super::hot_keys::{HotKeys, Turn};
use super::{Commit, Committed, Expiry, Record, Scope, StateError, StateStore, Value, Version};
use crate::allowance::{HeldBytes, OverBound};

pub struct Transaction {
    store: Arc<dyn StateStore>,
    scope: Scope,
    keys: HashMap<String, Key>,
    held: HeldBytes,
    lease: Option<String>,
    hot: Arc<HotKeys>,
    /// The call's turns on the hot keys it read, held until its commit is
    /// done ([`Self::end_turns`]).
    turns: Vec<Turn>,
}

/// How long a read waits before asking again for keys another call holds.
const HELD_POLL: std::time::Duration = std::time::Duration::from_millis(1);

/// A token unique to this call, for leases and holds: the process's id and
/// start time (read once: reading the id is a system call) and a count of
/// the tokens it has made.
pub fn token() -> String {
    static PROCESS: OnceLock<String> = OnceLock::new();
    static TAKEN: AtomicU64 = AtomicU64::new(0);
    let process = PROCESS.get_or_init(|| {
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        format!("{:x}-{:x}", std::process::id(), started.as_nanos())
    });
    format!("{process}-{:x}", TAKEN.fetch_add(1, Ordering::Relaxed))
}

/// One key as the call sees it.
struct Key {
    record: Option<Record>,
    /// The version read, when the call's result depends on it.
    read: Option<Version>,
    written: bool,
    /// What it holds ([`held_bytes`]).
    bytes: usize,
}

/// What a key costs a call besides its value's bytes: its slot, its name's
/// record and its value's.
const KEY_RECORD_BYTES: usize = 128;

fn held_bytes(key: &str, record: Option<&Record>) -> usize {
    KEY_RECORD_BYTES + key.len() + record.map_or(0, |record| record.value.bytes())
}

/// A call whose keys would hold more than the scope's `max_call_bytes` (one
/// call writing 5,000 keys of 60 KB made the node hold 815 MiB until it
/// returned, outside the plugin's own memory limit).
impl From<OverBound> for StateError {
    fn from(OverBound { max }: OverBound) -> Self {
        StateError::CallTooLarge { max }
    }
}

/// A kind of collection a key may hold, and how it sits in a [`Value`].
trait Kind: Default + Clone {
    const NAME: &'static str;
    fn of(value: &Value) -> Option<&Self>;
    fn of_mut(value: &mut Value) -> Option<&mut Self>;
    fn into_value(self) -> Value;
}

macro_rules! kind {
    ($type:ty, $variant:ident, $name:literal) => {
        impl Kind for $type {
            const NAME: &'static str = $name;
            fn of(value: &Value) -> Option<&Self> {
                match value {
                    Value::$variant(inner) => Some(inner),
                    _ => None,
                }
            }
            fn of_mut(value: &mut Value) -> Option<&mut Self> {
                match value {
                    Value::$variant(inner) => Some(inner),
                    _ => None,
                }
            }
            fn into_value(self) -> Value {
                Value::$variant(self)
            }
        }
    };
}

kind!(String, Text, "string");
kind!(VecDeque<String>, List, "list");
kind!(BTreeMap<String, String>, Hash, "hash");
kind!(BTreeSet<String>, Set, "set");
kind!(BTreeMap<String, f64>, Sorted, "sorted set");

fn wrong_type<K: Kind>(key: &str, value: &Value) -> StateError {
    let holds = match value {
        Value::Sorted(_) => "sorted set",
        other => other.kind(),
    };
    StateError::WrongType {
        key: key.to_owned(),
        holds,
        wanted: K::NAME,
    }
}

/// The key's value as `K`; `None` when absent.
fn view<'a, K: Kind>(key: &str, record: Option<&'a Record>) -> Result<Option<&'a K>, StateError> {
    record
        .map(|record| K::of(&record.value).ok_or_else(|| wrong_type::<K>(key, &record.value)))
        .transpose()
}

/// The key's value as `K`, created empty (without expiry) when absent.
fn edit<'a, K: Kind>(key: &str, record: &'a mut Option<Record>) -> Result<&'a mut K, StateError> {
    let record = record.get_or_insert_with(|| Record {
        value: K::default().into_value(),
        expiry: Expiry::Never,
    });
    if K::of(&record.value).is_none() {
        return Err(wrong_type::<K>(key, &record.value));
    }
    Ok(K::of_mut(&mut record.value).expect("checked above"))
}

/// A string value as an integer; a missing key counts as 0.
pub(super) fn integer(key: &str, value: Option<&Value>) -> Result<i64, StateError> {
    let Some(value) = value else { return Ok(0) };
    let text = String::of(value).ok_or_else(|| wrong_type::<String>(key, value))?;
    text.parse().map_err(|_| StateError::NotAnInteger {
        key: key.to_owned(),
    })
}

fn add(key: &str, current: i64, delta: i64) -> Result<i64, StateError> {
    current
        .checked_add(delta)
        .ok_or_else(|| StateError::Overflow {
            key: key.to_owned(),
        })
}

fn expiry(ttl_ms: Option<u64>) -> Expiry {
    ttl_ms.map_or(Expiry::Never, Expiry::After)
}

/// Redis's inclusive, negative-from-the-end range, clamped to `len`.
fn bounds(len: usize, start: i64, stop: i64) -> Option<(usize, usize)> {
    let len = i64::try_from(len).unwrap_or(i64::MAX);
    let resolve = |index: i64| if index < 0 { len + index } else { index };
    let start = resolve(start).max(0);
    let stop = resolve(stop).min(len - 1);
    if len == 0 || start > stop {
        return None;
    }
    Some((usize::try_from(start).ok()?, usize::try_from(stop).ok()?))
}

/// A sorted set's members by score, then member, as Redis orders them.
fn ranked(sorted: &BTreeMap<String, f64>) -> Vec<(String, f64)> {
    let mut members: Vec<_> = sorted
        .iter()
        .map(|(member, score)| (member.clone(), *score))
        .collect();
    members.sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
    members
}

impl Transaction {
    pub fn new(store: Arc<dyn StateStore>, scope: Scope, hot: Arc<HotKeys>) -> Self {
        Self {
            store,
            held: HeldBytes::new(scope.max_call_bytes),
            scope,
            keys: HashMap::new(),
            lease: None,
            hot,
            turns: Vec::new(),
        }
    }

    /// The scope's lease (see [`StateStore::acquire_lease`]) the call runs
    /// under, if any.
    pub fn run_under(&mut self, lease: Option<String>) {
        self.lease = lease;
    }

    /// Whether the call read or wrote anything.
    pub fn touched(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Forgets everything read and written, for the next call.
    pub fn reset(&mut self) {
        self.take_keys();
        self.end_turns();
    }

    fn take_keys(&mut self) -> HashMap<String, Key> {
        self.held.release_all();
        std::mem::take(&mut self.keys)
    }

    /// Lets the next call of this node read the hot keys this one read.
    pub fn end_turns(&mut self) {
        self.turns.clear();
    }

    /// Reads the keys not yet seen, in one round trip, each hot one in turn.
    async fn load(&mut self, keys: &[&str]) -> Result<(), StateError> {
        let mut missing: Vec<String> = keys
            .iter()
            .filter(|key| !self.keys.contains_key(**key))
            .map(|key| (*key).to_owned())
            .collect();
        if !missing.is_empty() {
            // In one order, so calls reading the same hot keys at once do not
            // wait on each other's turns.
            missing.sort_unstable();
            missing.dedup();
            for key in &missing {
                self.turns.extend(self.hot.take_turn(key).await);
            }
            let snapshots = loop {
                // A hold lapses by itself, so this ends.
                match self.store.read(&self.scope, &missing).await? {
                    Some(snapshots) => break snapshots,
                    None => tokio::time::sleep(HELD_POLL).await,
                }
            };
            let bytes: Vec<usize> = missing
                .iter()
                .zip(&snapshots)
                .map(|(key, snapshot)| held_bytes(key, snapshot.record.as_ref()))
                .collect();
            self.held.trade(0, bytes.iter().sum())?;
            for ((key, snapshot), bytes) in missing.into_iter().zip(snapshots).zip(bytes) {
                self.keys.insert(
                    key,
                    Key {
                        record: snapshot.record,
                        read: Some(snapshot.version),
                        written: false,
                        bytes,
                    },
                );
            }
        }
        Ok(())
    }

    /// The key's record as the call sees it, read if needed.
    async fn record(&mut self, key: &str) -> Result<Option<&Record>, StateError> {
        self.load(&[key]).await?;
        Ok(self.keys[key].record.as_ref())
    }

    /// Applies `change` to a copy of the key's record and keeps it if it
    /// succeeds, changes something and leaves collections and the call
    /// within their quotas.
    async fn modify<R>(
        &mut self,
        key: &str,
        change: impl FnOnce(&mut Option<Record>) -> Result<R, StateError>,
    ) -> Result<R, StateError> {
        self.load(&[key]).await?;
        let slot = self.keys.get_mut(key).expect("loaded");
        let mut record = slot.record.clone();
        let result = change(&mut record)?;
        let items =
            |record: &Option<Record>| record.as_ref().map_or(0, |record| record.value.items());
        let grown = items(&record);
        if grown > items(&slot.record)
            && u64::try_from(grown).unwrap_or(u64::MAX) > self.scope.max_list_items
        {
            return Err(StateError::ListTooLong {
                key: key.to_owned(),
                max: self.scope.max_list_items,
            });
        }
        if record != slot.record {
            let record = record.filter(|record| !record.value.is_empty_collection());
            let bytes = held_bytes(key, record.as_ref());
            self.held.trade(slot.bytes, bytes)?;
            slot.record = record;
            slot.bytes = bytes;
            slot.written = true;
        }
        Ok(result)
    }

    /// What to commit of `keys`: `None` when there is nothing to write and
    /// at most one key was read (a single read is already a consistent
    /// snapshot).
    fn changes(&self, keys: HashMap<String, Key>) -> Option<Commit> {
        let mut commit = Commit {
            lease: self.lease.clone(),
            ..Commit::default()
        };
        for (key, slot) in keys {
            if let Some(version) = slot.read {
                commit.reads.push((key.clone(), version));
            }
            if slot.written {
                commit.writes.push((key, slot.record));
            }
        }
        (!commit.writes.is_empty() || commit.reads.len() > 1).then_some(commit)
    }

    /// Applies what the call wrote if nothing it read has changed. With
    /// `hold`, the keys written stay unreadable to other calls until
    /// [`Self::release`]; returns them. The call keeps its turns on hot
    /// keys until [`Self::end_turns`].
    pub async fn commit(
        &mut self,
        hold: Option<&str>,
    ) -> Result<(Committed, Vec<String>), StateError> {
        // Whatever the outcome, the next call starts afresh.
        let keys = self.take_keys();
        let Some(mut commit) = self.changes(keys) else {
            return Ok((Committed::Applied, Vec::new()));
        };
        commit.hold = hold.map(str::to_owned);
        let committed = self.store.commit(&self.scope, &commit).await?;
        if committed == Committed::Conflict {
            // What it read and wrote, others wrote meanwhile.
            let read = |key: &String| commit.reads.iter().any(|(read, _)| read == key);
            let contended = commit
                .writes
                .iter()
                .map(|(key, _)| key)
                .filter(|key| read(key));
            self.hot.conflicted(contended.map(String::as_str));
        }
        let written = commit.writes.into_iter().map(|(key, _)| key).collect();
        Ok((committed, written))
    }

    /// Lets other calls read keys [`Self::commit`] held.
    pub async fn release(&self, hold: &str, keys: &[String]) -> Result<(), StateError> {
        if keys.is_empty() {
            return Ok(());
        }
        self.store.release_holds(&self.scope, hold, keys).await
    }

    pub async fn get(&mut self, key: &str) -> Result<Option<String>, StateError> {
        Ok(view::<String>(key, self.record(key).await?)?.cloned())
    }

    /// Several string values, read in one round trip.
    pub async fn get_many(&mut self, keys: &[String]) -> Result<Vec<Option<String>>, StateError> {
        let names: Vec<&str> = keys.iter().map(String::as_str).collect();
        self.load(&names).await?;
        keys.iter()
            .map(|key| Ok(view::<String>(key, self.keys[key].record.as_ref())?.cloned()))
            .collect()
    }

    /// A blind write: replaces whatever the key held without reading it.
    pub fn set(&mut self, key: &str, value: String, ttl_ms: Option<u64>) -> Result<(), StateError> {
        let record = Some(Record {
            value: Value::Text(value),
            expiry: expiry(ttl_ms),
        });
        let bytes = held_bytes(key, record.as_ref());
        match self.keys.entry(key.to_owned()) {
            Slot::Occupied(mut slot) => {
                let slot = slot.get_mut();
                self.held.trade(slot.bytes, bytes)?;
                slot.record = record;
                slot.bytes = bytes;
                slot.written = true;
            }
            Slot::Vacant(slot) => {
                self.held.trade(0, bytes)?;
                slot.insert(Key {
                    record,
                    read: None,
                    written: true,
                    bytes,
                });
            }
        }
        Ok(())
    }

    /// True when the key existed.
    pub async fn delete(&mut self, key: &str) -> Result<bool, StateError> {
        self.modify(key, |record| Ok(record.take().is_some())).await
    }

    /// An existing key keeps its expiry.
    pub async fn incr(&mut self, key: &str, delta: i64) -> Result<i64, StateError> {
        self.modify(key, |record| {
            let next = add(
                key,
                integer(key, record.as_ref().map(|record| &record.value))?,
                delta,
            )?;
            *edit::<String>(key, record)? = next.to_string();
            Ok(next)
        })
        .await
    }

    pub async fn compare_and_swap(
        &mut self,
        key: &str,
        expected: Option<&str>,
        new: String,
        ttl_ms: Option<u64>,
    ) -> Result<bool, StateError> {
        self.modify(key, |record| {
            let current = view::<String>(key, record.as_ref())?;
            if current.map(String::as_str) != expected {
                return Ok(false);
            }
            *record = Some(Record {
                value: Value::Text(new),
                expiry: expiry(ttl_ms),
            });
            Ok(true)
        })
        .await
    }

    /// True when the key exists.
    pub async fn expire(&mut self, key: &str, ttl_ms: Option<u64>) -> Result<bool, StateError> {
        self.modify(key, |record| {
            Ok(record
                .as_mut()
                .map(|record| record.expiry = expiry(ttl_ms))
                .is_some())
        })
        .await
    }

    /// Items in a collection; 0 when absent, 1 for a string.
    pub async fn len(&mut self, key: &str) -> Result<u64, StateError> {
        let items = self
            .record(key)
            .await?
            .map_or(0, |record| record.value.items());
        Ok(u64::try_from(items).unwrap_or(u64::MAX))
    }

    /// Appends and returns the new length.
    pub async fn list_push(&mut self, key: &str, values: Vec<String>) -> Result<u64, StateError> {
        self.modify(key, |record| {
            if values.is_empty() {
                let held = view::<VecDeque<String>>(key, record.as_ref())?.map_or(0, VecDeque::len);
                return Ok(u64::try_from(held).unwrap_or(u64::MAX));
            }
            let list = edit::<VecDeque<String>>(key, record)?;
            list.extend(values);
            Ok(u64::try_from(list.len()).unwrap_or(u64::MAX))
        })
        .await
    }

    /// Elements `start..=stop`; negative indices count from the end.
    pub async fn list_range(
        &mut self,
        key: &str,
        start: i64,
        stop: i64,
    ) -> Result<Vec<String>, StateError> {
        let list = view::<VecDeque<String>>(key, self.record(key).await?)?;
        Ok(list
            .and_then(|list| {
                bounds(list.len(), start, stop)
                    .map(|(start, stop)| list.range(start..=stop).cloned().collect())
            })
            .unwrap_or_default())
    }

    /// Keeps only elements `start..=stop`.
    pub async fn list_trim(&mut self, key: &str, start: i64, stop: i64) -> Result<(), StateError> {
        self.modify(key, |record| {
            if view::<VecDeque<String>>(key, record.as_ref())?.is_none() {
                return Ok(());
            }
            let list = edit::<VecDeque<String>>(key, record)?;
            match bounds(list.len(), start, stop) {
                Some((start, stop)) => {
                    list.truncate(stop + 1);
                    list.drain(..start);
                }
                None => list.clear(),
            }
            Ok(())
        })
        .await
    }

    pub async fn hash_get(&mut self, key: &str, field: &str) -> Result<Option<String>, StateError> {
        let hash = view::<BTreeMap<String, String>>(key, self.record(key).await?)?;
        Ok(hash.and_then(|hash| hash.get(field).cloned()))
    }

    pub async fn hash_get_all(&mut self, key: &str) -> Result<Vec<(String, String)>, StateError> {
        let hash = view::<BTreeMap<String, String>>(key, self.record(key).await?)?;
        Ok(hash
            .map(|hash| hash.clone().into_iter().collect())
            .unwrap_or_default())
    }

    /// True when the field is new.
    pub async fn hash_set(
        &mut self,
        key: &str,
        field: String,
        value: String,
    ) -> Result<bool, StateError> {
        self.modify(key, |record| {
            Ok(edit::<BTreeMap<String, String>>(key, record)?
                .insert(field, value)
                .is_none())
        })
        .await
    }

    /// True when the field existed.
    pub async fn hash_delete(&mut self, key: &str, field: &str) -> Result<bool, StateError> {
        self.modify(key, |record| {
            if view::<BTreeMap<String, String>>(key, record.as_ref())?.is_none() {
                return Ok(false);
            }
            Ok(edit::<BTreeMap<String, String>>(key, record)?
                .remove(field)
                .is_some())
        })
        .await
    }

    pub async fn hash_incr(
        &mut self,
        key: &str,
        field: &str,
        delta: i64,
    ) -> Result<i64, StateError> {
        self.modify(key, |record| {
            let hash = edit::<BTreeMap<String, String>>(key, record)?;
            let current = match hash.get(field) {
                Some(text) => text.parse().map_err(|_| StateError::NotAnInteger {
                    key: format!("{key}.{field}"),
                })?,
                None => 0,
            };
            let next = add(key, current, delta)?;
            hash.insert(field.to_owned(), next.to_string());
            Ok(next)
        })
        .await
    }

    /// True when the member was not in the set: the natural "only once".
    pub async fn set_add(&mut self, key: &str, member: String) -> Result<bool, StateError> {
        self.modify(key, |record| {
            Ok(edit::<BTreeSet<String>>(key, record)?.insert(member))
        })
        .await
    }

    /// True when the member was in the set.
    pub async fn set_remove(&mut self, key: &str, member: &str) -> Result<bool, StateError> {
        self.modify(key, |record| {
            if view::<BTreeSet<String>>(key, record.as_ref())?.is_none() {
                return Ok(false);
            }
            Ok(edit::<BTreeSet<String>>(key, record)?.remove(member))
        })
        .await
    }

    pub async fn set_contains(&mut self, key: &str, member: &str) -> Result<bool, StateError> {
        let set = view::<BTreeSet<String>>(key, self.record(key).await?)?;
        Ok(set.is_some_and(|set| set.contains(member)))
    }

    /// Members in lexicographic order.
    pub async fn set_members(&mut self, key: &str) -> Result<Vec<String>, StateError> {
        let set = view::<BTreeSet<String>>(key, self.record(key).await?)?;
        Ok(set
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default())
    }

    /// Sets the member's score; true when the member is new.
    pub async fn sorted_add(
        &mut self,
        key: &str,
        member: String,
        score: f64,
    ) -> Result<bool, StateError> {
        if !score.is_finite() {
            return Err(StateError::NotAFiniteScore {
                key: key.to_owned(),
            });
        }
        self.modify(key, |record| {
            Ok(edit::<BTreeMap<String, f64>>(key, record)?
                .insert(member, score)
                .is_none())
        })
        .await
    }

    /// Adds to the member's score (a new member starts at 0); the new score.
    pub async fn sorted_incr(
        &mut self,
        key: &str,
        member: String,
        delta: f64,
    ) -> Result<f64, StateError> {
        self.modify(key, |record| {
            let sorted = edit::<BTreeMap<String, f64>>(key, record)?;
            let score = sorted.get(&member).copied().unwrap_or(0.0) + delta;
            if !score.is_finite() {
                return Err(StateError::NotAFiniteScore {
                    key: key.to_owned(),
                });
            }
            sorted.insert(member, score);
            Ok(score)
        })
        .await
    }

    pub async fn sorted_score(
        &mut self,
        key: &str,
        member: &str,
    ) -> Result<Option<f64>, StateError> {
        let sorted = view::<BTreeMap<String, f64>>(key, self.record(key).await?)?;
        Ok(sorted.and_then(|sorted| sorted.get(member).copied()))
    }

    /// True when the member was there.
    pub async fn sorted_remove(&mut self, key: &str, member: &str) -> Result<bool, StateError> {
        self.modify(key, |record| {
            if view::<BTreeMap<String, f64>>(key, record.as_ref())?.is_none() {
                return Ok(false);
            }
            Ok(edit::<BTreeMap<String, f64>>(key, record)?
                .remove(member)
                .is_some())
        })
        .await
    }

    /// Members ranked `start..=stop` (negative from the end), lowest score
    /// first or, `descending`, highest first.
    pub async fn sorted_range(
        &mut self,
        key: &str,
        start: i64,
        stop: i64,
        descending: bool,
    ) -> Result<Vec<(String, f64)>, StateError> {
        let sorted = view::<BTreeMap<String, f64>>(key, self.record(key).await?)?;
        let mut members = sorted.map(ranked).unwrap_or_default();
        if descending {
            members.reverse();
        }
        Ok(bounds(members.len(), start, stop)
            .map(|(start, stop)| members.drain(start..=stop).collect())
            .unwrap_or_default())
    }
}
