//! What nodes share: plugin state behind the [`StateStore`] trait and plugin
//! [`timers`]. One node keeps them in memory ([`memory`]); a cluster keeps
//! them in Redis with the same semantics, which are Redis's own, and the same
//! quotas per plugin ([`Scope`]).

mod backoff;
#[cfg(test)]
mod conformance;
mod connect;
mod liveness;
mod memory;
mod redis;
#[cfg(test)]
mod test_redis;
pub mod timers;

use std::time::Duration;

use async_trait::async_trait;
pub use backoff::Backoff;
pub use connect::{ConnectError, RedisConnection, connect};
pub use liveness::{NodeLiveness, NodeReport, RecordedConn, Reporter};
pub use memory::MemoryStore;
pub use redis::RedisStore;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("key `{key}` holds a list; use the list operations on it")]
    NotAString { key: String },
    #[error("key `{key}` holds a string; list operations need a list")]
    NotAList { key: String },
    #[error("key `{key}` does not hold an integer")]
    NotAnInteger { key: String },
    #[error("incrementing key `{key}` would overflow a 64-bit integer")]
    Overflow { key: String },
    #[error(
        "this plugin holds {max} state keys, its limit (plugins.limits.max_state_keys); delete keys or give them a TTL"
    )]
    TooManyKeys { max: u64 },
    #[error(
        "list `{key}` would hold more than {max} items (plugins.limits.max_state_list_items); trim it first"
    )]
    ListTooLong { key: String, max: u64 },
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
            Self::NotAString { .. } | Self::NotAList { .. } => "wrong_type",
            Self::NotAnInteger { .. } => "not_an_integer",
            Self::Overflow { .. } => "overflow",
            Self::TooManyKeys { .. } | Self::ListTooLong { .. } | Self::TooLarge { .. } => {
                "quota_exceeded"
            }
            Self::Backend(_) => "state_unavailable",
        }
    }
}

/// One plugin's state: the prefix that keeps its keys apart and its quotas.
///
/// A write that would create a key while the scope holds `max_keys` live keys
/// fails with [`StateError::TooManyKeys`]; writes to existing keys, and
/// deletes, always work. Expired keys do not count. A push that would make a
/// list longer than `max_list_items` fails with [`StateError::ListTooLong`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub prefix: String,
    pub max_keys: u64,
    pub max_list_items: u64,
}

/// Key-value and list state with Redis semantics. `ttl: None` means no expiry.
/// List indices are inclusive and negative ones count from the end. Keys are
/// within a [`Scope`].
#[async_trait]
pub trait StateStore: Send + Sync + 'static {
    async fn get(&self, scope: &Scope, key: &str) -> Result<Option<String>, StateError>;
    async fn set(
        &self,
        scope: &Scope,
        key: &str,
        value: String,
        ttl: Option<Duration>,
    ) -> Result<(), StateError>;
    /// True when the key existed.
    async fn delete(&self, scope: &Scope, key: &str) -> Result<bool, StateError>;
    async fn incr(&self, scope: &Scope, key: &str, delta: i64) -> Result<i64, StateError>;
    /// Sets `new` if the value equals `expected` (`None`: absent). True when set.
    async fn compare_and_swap(
        &self,
        scope: &Scope,
        key: &str,
        expected: Option<&str>,
        new: String,
        ttl: Option<Duration>,
    ) -> Result<bool, StateError>;
    /// True when the key exists.
    async fn expire(
        &self,
        scope: &Scope,
        key: &str,
        ttl: Option<Duration>,
    ) -> Result<bool, StateError>;
    /// Appends and returns the new length.
    async fn list_push(
        &self,
        scope: &Scope,
        key: &str,
        values: Vec<String>,
    ) -> Result<u64, StateError>;
    async fn list_range(
        &self,
        scope: &Scope,
        key: &str,
        start: i64,
        stop: i64,
    ) -> Result<Vec<String>, StateError>;
    async fn list_trim(
        &self,
        scope: &Scope,
        key: &str,
        start: i64,
        stop: i64,
    ) -> Result<(), StateError>;
}
