//! State for a single node, in process memory. A commit validates and
//! applies under one lock, so calls are serializable as in Redis.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use super::record::HOLD_TTL;
use super::{
    Commit, Committed, Expiry, Record, Scope, Snapshot, StateError, StateStore, Value, Version,
};

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
    /// Per scope prefix, the lease's token and when it lapses.
    leases: HashMap<String, (String, Instant)>,
    /// Per scope prefix, keys held by a commit's token, and until when.
    holds: HashMap<String, HashMap<String, (String, Instant)>>,
    /// The last version given to a write, unique across scopes.
    last_version: i64,
    writes_since_sweep: u32,
}

struct Entry {
    value: Value,
    /// Milliseconds since the Unix epoch.
    expires_at: Option<u64>,
    version: Version,
}

impl Entry {
    fn live(&self, now: u64) -> bool {
        self.expires_at.is_none_or(|at| at > now)
    }

    fn record(&self) -> Record {
        Record {
            value: self.value.clone(),
            expiry: self.expires_at.map_or(Expiry::Never, Expiry::At),
        }
    }
}

fn now_ms() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

fn deadline(expiry: Expiry, now: u64) -> Option<u64> {
    match expiry {
        Expiry::Never => None,
        Expiry::At(at) => Some(at),
        Expiry::After(ms) => Some(now.saturating_add(ms)),
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Inner {
    fn sweep_now_and_then(&mut self, now: u64) {
        self.writes_since_sweep += 1;
        if self.writes_since_sweep < SWEEP_EVERY_WRITES {
            return;
        }
        for entries in self.scopes.values_mut() {
            entries.retain(|_, entry| entry.live(now));
        }
        self.scopes.retain(|_, entries| !entries.is_empty());
        self.writes_since_sweep = 0;
    }

    fn leased_to_another(&self, scope: &Scope, token: Option<&str>) -> bool {
        self.leases
            .get(&scope.prefix)
            .is_some_and(|(holder, until)| {
                *until > Instant::now() && Some(holder.as_str()) != token
            })
    }

    fn next_version(&mut self) -> Version {
        self.last_version += 1;
        Version(self.last_version)
    }
}

/// The live entry under `key`, dropping it first if it has expired.
fn live<'a>(entries: &'a mut HashMap<String, Entry>, key: &str, now: u64) -> Option<&'a mut Entry> {
    if entries.get(key).is_some_and(|entry| !entry.live(now)) {
        entries.remove(key);
    }
    entries.get_mut(key)
}

/// Fails when `creates` new keys would take the scope past its quota.
/// Only then are expired keys swept, so the count stays exact.
fn admit(
    entries: &mut HashMap<String, Entry>,
    scope: &Scope,
    creates: usize,
    now: u64,
) -> Result<(), StateError> {
    let over = |entries: &HashMap<String, Entry>| {
        u64::try_from(entries.len() + creates).unwrap_or(u64::MAX) > scope.max_keys
    };
    if creates == 0 || !over(entries) {
        return Ok(());
    }
    entries.retain(|_, entry| entry.live(now));
    if over(entries) {
        return Err(StateError::TooManyKeys {
            max: scope.max_keys,
        });
    }
    Ok(())
}

#[async_trait]
impl StateStore for MemoryStore {
    async fn read(
        &self,
        scope: &Scope,
        keys: &[String],
    ) -> Result<Option<Vec<Snapshot>>, StateError> {
        let now = now_ms();
        let mut inner = self.lock();
        if let Some(holds) = inner.holds.get_mut(&scope.prefix) {
            let at = Instant::now();
            holds.retain(|_, (_, until)| *until > at);
            if keys.iter().any(|key| holds.contains_key(key)) {
                return Ok(None);
            }
        }
        let Some(entries) = inner.scopes.get_mut(&scope.prefix) else {
            return Ok(Some(keys.iter().map(|_| absent()).collect()));
        };
        Ok(Some(
            keys.iter()
                .map(|key| match live(entries, key, now) {
                    Some(entry) => Snapshot {
                        record: Some(entry.record()),
                        version: entry.version,
                    },
                    None => absent(),
                })
                .collect(),
        ))
    }

    async fn commit(&self, scope: &Scope, commit: &Commit) -> Result<Committed, StateError> {
        let now = now_ms();
        let mut inner = self.lock();
        inner.sweep_now_and_then(now);
        if !commit.writes.is_empty() && inner.leased_to_another(scope, commit.lease.as_deref()) {
            return Ok(Committed::Conflict);
        }
        let version = inner.next_version();
        let entries = inner.scopes.entry(scope.prefix.clone()).or_default();
        for (key, seen) in &commit.reads {
            let current = live(entries, key, now).map_or(Version::ABSENT, |entry| entry.version);
            if current != *seen {
                return Ok(Committed::Conflict);
            }
        }
        // Deletes first, so a call that replaces keys fits in the quota.
        let mut creates = 0;
        for (key, record) in &commit.writes {
            let exists = live(entries, key, now).is_some();
            match record {
                Some(record) if !record.value.is_empty_collection() => {
                    creates += usize::from(!exists)
                }
                _ => {
                    entries.remove(key);
                }
            }
        }
        admit(entries, scope, creates, now)?;
        for (key, record) in &commit.writes {
            let Some(record) = record
                .as_ref()
                .filter(|record| !record.value.is_empty_collection())
            else {
                continue;
            };
            entries.insert(
                key.clone(),
                Entry {
                    value: record.value.clone(),
                    expires_at: deadline(record.expiry, now),
                    version,
                },
            );
        }
        if let Some(token) = &commit.hold {
            let until = Instant::now() + HOLD_TTL;
            let holds = inner.holds.entry(scope.prefix.clone()).or_default();
            for (key, _) in &commit.writes {
                holds.insert(key.clone(), (token.clone(), until));
            }
        }
        Ok(Committed::Applied)
    }

    async fn incr_now(&self, scope: &Scope, key: &str, delta: i64) -> Result<i64, StateError> {
        let now = now_ms();
        let mut inner = self.lock();
        inner.sweep_now_and_then(now);
        let version = inner.next_version();
        let entries = inner.scopes.entry(scope.prefix.clone()).or_default();
        let (current, expires_at) = match live(entries, key, now) {
            Some(entry) => (
                super::transaction::integer(key, Some(&entry.value))?,
                entry.expires_at,
            ),
            None => {
                admit(entries, scope, 1, now)?;
                (0, None)
            }
        };
        let next = current
            .checked_add(delta)
            .ok_or_else(|| StateError::Overflow {
                key: key.to_owned(),
            })?;
        entries.insert(
            key.to_owned(),
            Entry {
                value: Value::Text(next.to_string()),
                expires_at,
                version,
            },
        );
        Ok(next)
    }

    async fn acquire_lease(
        &self,
        scope: &Scope,
        token: &str,
        ttl: Duration,
    ) -> Result<bool, StateError> {
        let mut inner = self.lock();
        if inner.leased_to_another(scope, Some(token)) {
            return Ok(false);
        }
        let until = Instant::now() + ttl;
        inner
            .leases
            .insert(scope.prefix.clone(), (token.to_owned(), until));
        Ok(true)
    }

    async fn release_holds(
        &self,
        scope: &Scope,
        token: &str,
        keys: &[String],
    ) -> Result<(), StateError> {
        let mut inner = self.lock();
        if let Some(holds) = inner.holds.get_mut(&scope.prefix) {
            for key in keys {
                if holds.get(key).is_some_and(|(holder, _)| holder == token) {
                    holds.remove(key);
                }
            }
        }
        Ok(())
    }

    async fn release_lease(&self, scope: &Scope, token: &str) -> Result<(), StateError> {
        let mut inner = self.lock();
        if inner
            .leases
            .get(&scope.prefix)
            .is_some_and(|(holder, _)| holder == token)
        {
            inner.leases.remove(&scope.prefix);
        }
        Ok(())
    }
}

fn absent() -> Snapshot {
    Snapshot {
        record: None,
        version: Version::ABSENT,
    }
}

#[cfg(test)]
mod tests {
    use super::MemoryStore;
    use crate::cluster::conformance;

    #[tokio::test]
    async fn follows_the_state_semantics() {
        conformance::check_all(std::sync::Arc::new(MemoryStore::new())).await;
    }
}
