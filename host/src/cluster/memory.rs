//! State for a single node, in process memory.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{Scope, StateError, StateStore};

/// Writes between sweeps of expired keys that nobody reads any more.
const SWEEP_EVERY_WRITES: u32 = 4096;

#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Per scope prefix, its keys.
    scopes: HashMap<String, HashMap<String, Entry>>,
    writes_since_sweep: u32,
}

struct Entry {
    value: Value,
    expires_at: Option<Instant>,
}

enum Value {
    Text(String),
    List(VecDeque<String>),
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|at| at > now)
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn with<R>(
        &self,
        scope: &Scope,
        write: bool,
        f: impl FnOnce(&mut HashMap<String, Entry>) -> R,
    ) -> R {
        let mut inner = self
            .inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if write {
            inner.writes_since_sweep += 1;
            if inner.writes_since_sweep >= SWEEP_EVERY_WRITES {
                let now = Instant::now();
                for entries in inner.scopes.values_mut() {
                    entries.retain(|_, entry| entry.live(now));
                }
                inner.scopes.retain(|_, entries| !entries.is_empty());
                inner.writes_since_sweep = 0;
            }
        }
        f(inner.scopes.entry(scope.prefix.clone()).or_default())
    }
}

/// Succeeds if `key` exists or the scope has room for one more live key.
/// Only at the limit are expired keys swept, so the count stays exact.
fn admit(entries: &mut HashMap<String, Entry>, scope: &Scope, key: &str) -> Result<(), StateError> {
    let full = |entries: &HashMap<String, Entry>| {
        u64::try_from(entries.len()).unwrap_or(u64::MAX) >= scope.max_keys
    };
    if live(entries, key).is_some() || !full(entries) {
        return Ok(());
    }
    let now = Instant::now();
    entries.retain(|_, entry| entry.live(now));
    if full(entries) {
        return Err(StateError::TooManyKeys {
            max: scope.max_keys,
        });
    }
    Ok(())
}

/// The live entry under `key`, dropping it first if it has expired.
fn live<'a>(entries: &'a mut HashMap<String, Entry>, key: &str) -> Option<&'a mut Entry> {
    let now = Instant::now();
    if entries.get(key).is_some_and(|entry| !entry.live(now)) {
        entries.remove(key);
    }
    entries.get_mut(key)
}

fn text<'a>(entry: &'a Entry, key: &str) -> Result<&'a str, StateError> {
    match &entry.value {
        Value::Text(text) => Ok(text),
        Value::List(_) => Err(StateError::NotAString {
            key: key.to_owned(),
        }),
    }
}

fn deadline(ttl: Option<Duration>) -> Option<Instant> {
    ttl.map(|ttl| Instant::now() + ttl)
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

#[async_trait]
impl StateStore for MemoryStore {
    async fn get(&self, scope: &Scope, key: &str) -> Result<Option<String>, StateError> {
        self.with(scope, false, |entries| {
            live(entries, key)
                .map(|entry| text(entry, key).map(str::to_owned))
                .transpose()
        })
    }

    async fn set(
        &self,
        scope: &Scope,
        key: &str,
        value: String,
        ttl: Option<Duration>,
    ) -> Result<(), StateError> {
        self.with(scope, true, |entries| {
            admit(entries, scope, key)?;
            entries.insert(
                key.to_owned(),
                Entry {
                    value: Value::Text(value),
                    expires_at: deadline(ttl),
                },
            );
            Ok(())
        })
    }

    async fn delete(&self, scope: &Scope, key: &str) -> Result<bool, StateError> {
        self.with(scope, true, |entries| {
            let existed = live(entries, key).is_some();
            entries.remove(key);
            Ok(existed)
        })
    }

    async fn incr(&self, scope: &Scope, key: &str, delta: i64) -> Result<i64, StateError> {
        self.with(scope, true, |entries| {
            let current = match live(entries, key) {
                Some(entry) => Some(text(entry, key)?.parse::<i64>().map_err(|_| {
                    StateError::NotAnInteger {
                        key: key.to_owned(),
                    }
                })?),
                None => None,
            };
            let next =
                current
                    .unwrap_or(0)
                    .checked_add(delta)
                    .ok_or_else(|| StateError::Overflow {
                        key: key.to_owned(),
                    })?;
            match entries.get_mut(key) {
                Some(entry) => entry.value = Value::Text(next.to_string()),
                None => {
                    admit(entries, scope, key)?;
                    entries.insert(
                        key.to_owned(),
                        Entry {
                            value: Value::Text(next.to_string()),
                            expires_at: None,
                        },
                    );
                }
            }
            Ok(next)
        })
    }

    async fn compare_and_swap(
        &self,
        scope: &Scope,
        key: &str,
        expected: Option<&str>,
        new: String,
        ttl: Option<Duration>,
    ) -> Result<bool, StateError> {
        self.with(scope, true, |entries| {
            let current = live(entries, key)
                .map(|entry| text(entry, key))
                .transpose()?;
            if current != expected {
                return Ok(false);
            }
            admit(entries, scope, key)?;
            entries.insert(
                key.to_owned(),
                Entry {
                    value: Value::Text(new),
                    expires_at: deadline(ttl),
                },
            );
            Ok(true)
        })
    }

    async fn expire(
        &self,
        scope: &Scope,
        key: &str,
        ttl: Option<Duration>,
    ) -> Result<bool, StateError> {
        self.with(scope, true, |entries| {
            Ok(live(entries, key)
                .map(|entry| entry.expires_at = deadline(ttl))
                .is_some())
        })
    }

    async fn list_push(
        &self,
        scope: &Scope,
        key: &str,
        values: Vec<String>,
    ) -> Result<u64, StateError> {
        self.with(scope, true, |entries| {
            let held = match live(entries, key).map(|entry| &entry.value) {
                None => None,
                Some(Value::List(list)) => Some(list.len()),
                Some(Value::Text(_)) => {
                    return Err(StateError::NotAList {
                        key: key.to_owned(),
                    });
                }
            };
            if values.is_empty() {
                return Ok(u64::try_from(held.unwrap_or(0)).unwrap_or(u64::MAX));
            }
            let len = held.unwrap_or(0).saturating_add(values.len());
            let len = u64::try_from(len).unwrap_or(u64::MAX);
            if len > scope.max_list_items {
                return Err(StateError::ListTooLong {
                    key: key.to_owned(),
                    max: scope.max_list_items,
                });
            }
            if held.is_none() {
                admit(entries, scope, key)?;
            }
            let entry = entries.entry(key.to_owned()).or_insert_with(|| Entry {
                value: Value::List(VecDeque::new()),
                expires_at: None,
            });
            if let Value::List(list) = &mut entry.value {
                list.extend(values);
            }
            Ok(len)
        })
    }

    async fn list_range(
        &self,
        scope: &Scope,
        key: &str,
        start: i64,
        stop: i64,
    ) -> Result<Vec<String>, StateError> {
        self.with(scope, false, |entries| {
            match live(entries, key).map(|entry| &entry.value) {
                None => Ok(Vec::new()),
                Some(Value::Text(_)) => Err(StateError::NotAList {
                    key: key.to_owned(),
                }),
                Some(Value::List(list)) => Ok(bounds(list.len(), start, stop)
                    .map(|(start, stop)| list.range(start..=stop).cloned().collect())
                    .unwrap_or_default()),
            }
        })
    }

    async fn list_trim(
        &self,
        scope: &Scope,
        key: &str,
        start: i64,
        stop: i64,
    ) -> Result<(), StateError> {
        self.with(scope, true, |entries| {
            let list = match live(entries, key).map(|entry| &mut entry.value) {
                None => return Ok(()),
                Some(Value::Text(_)) => {
                    return Err(StateError::NotAList {
                        key: key.to_owned(),
                    });
                }
                Some(Value::List(list)) => list,
            };
            match bounds(list.len(), start, stop) {
                Some((start, stop)) => {
                    list.truncate(stop + 1);
                    list.drain(..start);
                }
                None => {
                    entries.remove(key);
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::MemoryStore;
    use crate::cluster::conformance;

    #[tokio::test]
    async fn follows_the_state_semantics() {
        conformance::check_all(&MemoryStore::new()).await;
    }
}
