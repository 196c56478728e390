//! What nodes share: plugin state behind the [`StateStore`] trait and plugin
//! [`timers`]. One node keeps them in memory ([`memory`]); a cluster keeps
//! them in Redis with the same semantics, which are Redis's own, and the same
//! quotas per plugin ([`Scope`]). Plugins see state through a per-call
//! [`Transaction`]: optimistic, serializable, applied whole or not at all.

mod backoff;
#[cfg(test)]
mod conformance;
mod connect;
mod hot_keys;
mod liveness;
mod memory;
mod record;
mod redis;
#[cfg(test)]
pub(crate) mod test_redis;
pub mod timers;
mod transaction;

use std::time::Duration;

use async_trait::async_trait;
pub use backoff::{Backoff, retried};
pub use connect::{ConnectError, RedisConnection, connect};
pub use hot_keys::HotKeys;
pub use liveness::{NodeLiveness, NodeReport, RecordedConn, Reporter};
pub use memory::MemoryStore;
pub use record::{Commit, Committed, Expiry, Record, Snapshot, Value, Version};
pub use redis::RedisStore;
pub use transaction::{Transaction, token};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("key `{key}` holds a {holds}; this operation needs a {wanted}")]
    WrongType {
        key: String,
        holds: &'static str,
        wanted: &'static str,
    },
    #[error("key `{key}` does not hold an integer")]
    NotAnInteger { key: String },
    #[error("incrementing key `{key}` would overflow a 64-bit integer")]
    Overflow { key: String },
    #[error("the score for `{key}` would not be a finite number")]
    NotAFiniteScore { key: String },
    #[error(
        "this plugin holds {max} state keys, its limit (plugins.limits.max_state_keys); delete keys or give them a TTL"
    )]
    TooManyKeys { max: u64 },
    #[error(
        "this plugin has {max} timers pending, its limit (plugins.limits.max_timers); cancel some or let them fire"
    )]
    TooManyTimers { max: u64 },
    #[error(
        "`{key}` would hold more than {max} items (plugins.limits.max_state_list_items); trim it first"
    )]
    ListTooLong { key: String, max: u64 },
    #[error(
        "this call would hold more than {} MiB of state until it returns (plugins.limits.memory_mib): \
         read and write fewer or smaller keys in one call", max >> 20
    )]
    CallTooLarge { max: usize },
    #[error("{what} is {size} bytes; the limit is {max} (plugins.limits.max_state_value_bytes)")]
    TooLarge {
        what: String,
        size: usize,
        max: usize,
    },
    #[error("state backend unavailable: {0}")]
    Backend(String),
}

impl StateError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::WrongType { .. } => "wrong_type",
            Self::NotAnInteger { .. } => "not_an_integer",
            Self::Overflow { .. } | Self::NotAFiniteScore { .. } => "overflow",
            Self::TooManyKeys { .. }
            | Self::TooManyTimers { .. }
            | Self::ListTooLong { .. }
            | Self::CallTooLarge { .. }
            | Self::TooLarge { .. } => "quota_exceeded",
            Self::Backend(_) => "state_unavailable",
        }
    }
}

/// One plugin's state: the prefix that keeps its keys apart and its quotas.
///
/// A commit that would create a key while the scope holds `max_keys` live
/// keys fails with [`StateError::TooManyKeys`]; writes to existing keys, and
/// deletes, always work. Expired keys do not count. A collection (list, hash,
/// set, sorted set) holds at most `max_list_items` items
/// ([`StateError::ListTooLong`]). One call's [`Transaction`] holds at most
/// `max_call_bytes` of the keys it read and wrote
/// ([`StateError::CallTooLarge`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub prefix: String,
    pub max_keys: u64,
    pub max_list_items: u64,
    pub max_call_bytes: usize,
}

/// Where plugin state lives. Plugins never call it directly: a call's
/// [`Transaction`] reads keys whole through it and commits its writes at the
/// end, optimistically (see [`Commit`]). Keys are within a [`Scope`].
#[async_trait]
pub trait StateStore: Send + Sync + 'static {
    /// The keys as one consistent snapshot, in the order asked; `None`
    /// while one of them is held (see [`Commit::hold`]).
    async fn read(
        &self,
        scope: &Scope,
        keys: &[String],
    ) -> Result<Option<Vec<Snapshot>>, StateError>;
    /// Applies every write, or none when a key read has changed since
    /// ([`Committed::Conflict`]) or a new key would pass the quota.
    async fn commit(&self, scope: &Scope, commit: &Commit) -> Result<Committed, StateError>;
    /// Adds `delta` to an integer at once, outside any transaction (a
    /// missing key counts as 0; an existing one keeps its expiry).
    async fn incr_now(&self, scope: &Scope, key: &str, delta: i64) -> Result<i64, StateError>;
    /// Takes the scope's lease for `token` unless another holds it. While
    /// held, commits that write and carry another [`Commit::lease`] (or none)
    /// conflict, so the holder's call cannot: a call that conflicted runs
    /// again under it and is not starved. It lapses after `ttl`, should its
    /// holder die.
    async fn acquire_lease(
        &self,
        scope: &Scope,
        token: &str,
        ttl: Duration,
    ) -> Result<bool, StateError>;
    /// Gives the lease back if `token` still holds it.
    async fn release_lease(&self, scope: &Scope, token: &str) -> Result<(), StateError>;
    /// Lets other calls read the keys a commit held with `token`.
    async fn release_holds(
        &self,
        scope: &Scope,
        token: &str,
        keys: &[String],
    ) -> Result<(), StateError>;
}
