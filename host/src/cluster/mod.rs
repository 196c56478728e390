//! What nodes share: plugin state behind the [`StateStore`] trait and plugin
//! [`timers`]. One node keeps them in memory ([`memory`]); a cluster keeps
//! them in Redis with the same semantics, which are Redis's own.

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
pub use liveness::NodeLiveness;
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
    #[error("state backend unavailable: {0}")]
    Backend(String),
}

impl StateError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotAString { .. } | Self::NotAList { .. } => "wrong_type",
            Self::NotAnInteger { .. } => "not_an_integer",
            Self::Overflow { .. } => "overflow",
            Self::Backend(_) => "state_unavailable",
        }
    }
}

/// Key-value and list state with Redis semantics. `ttl: None` means no expiry.
/// List indices are inclusive and negative ones count from the end.
#[async_trait]
pub trait StateStore: Send + Sync + 'static {
    async fn get(&self, key: &str) -> Result<Option<String>, StateError>;
    async fn set(&self, key: &str, value: String, ttl: Option<Duration>) -> Result<(), StateError>;
    /// True when the key existed.
    async fn delete(&self, key: &str) -> Result<bool, StateError>;
    async fn incr(&self, key: &str, delta: i64) -> Result<i64, StateError>;
    /// Sets `new` if the value equals `expected` (`None`: absent). True when set.
    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&str>,
        new: String,
        ttl: Option<Duration>,
    ) -> Result<bool, StateError>;
    /// True when the key exists.
    async fn expire(&self, key: &str, ttl: Option<Duration>) -> Result<bool, StateError>;
    /// Appends and returns the new length.
    async fn list_push(&self, key: &str, values: Vec<String>) -> Result<u64, StateError>;
    async fn list_range(&self, key: &str, start: i64, stop: i64)
    -> Result<Vec<String>, StateError>;
    async fn list_trim(&self, key: &str, start: i64, stop: i64) -> Result<(), StateError>;
}
