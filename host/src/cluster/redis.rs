//! Plugin state in Redis, shared by every node: each operation is one Redis
//! command or one Lua script, so it is atomic across the cluster.

use std::time::Duration;

use async_trait::async_trait;
use fred::prelude::{Client, KeysInterface, ListInterface, LuaInterface};
use fred::types::Expiration;

use super::{StateError, StateStore};

/// `compare_and_swap`: ARGV = [expects a value (0/1), expected, new, ttl ms or ""].
const COMPARE_AND_SWAP: &str = r"
local current = redis.call('GET', KEYS[1])
local matches
if ARGV[1] == '0' then matches = (current == false) else matches = (current == ARGV[2]) end
if not matches then return 0 end
if ARGV[4] == '' then redis.call('SET', KEYS[1], ARGV[3]) else redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4]) end
return 1
";

/// `expire(None)`: clear the expiry, reporting whether the key exists.
const PERSIST_EXISTING: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('PERSIST', KEYS[1])
return 1
";

pub struct RedisStore {
    client: Client,
    /// `"{cluster prefix}:"`, so clusters sharing one Redis keep apart.
    prefix: String,
}

impl RedisStore {
    /// `client` must be connected (fred queues commands while it reconnects).
    pub fn new(client: Client, prefix: &str) -> Self {
        Self {
            client,
            prefix: format!("{prefix}:"),
        }
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }
}

fn millis(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1)
}

/// Redis's own errors become typed ones; anything else means the backend
/// cannot be reached right now.
fn state_error(key: &str, error: fred::error::Error) -> StateError {
    let details = error.details();
    let key = key.to_owned();
    if details.contains("WRONGTYPE") {
        // The caller knows which kind it expected; both read the same to a plugin.
        StateError::NotAList { key }
    } else if details.contains("overflow") {
        StateError::Overflow { key }
    } else if details.contains("not an integer") {
        StateError::NotAnInteger { key }
    } else {
        StateError::Backend(error.to_string())
    }
}

#[async_trait]
impl StateStore for RedisStore {
    async fn get(&self, key: &str) -> Result<Option<String>, StateError> {
        self.client
            .get(self.key(key))
            .await
            .map_err(|error| match state_error(key, error) {
                StateError::NotAList { key } => StateError::NotAString { key },
                other => other,
            })
    }

    async fn set(&self, key: &str, value: String, ttl: Option<Duration>) -> Result<(), StateError> {
        let expire = ttl.map(|ttl| Expiration::PX(millis(ttl)));
        self.client
            .set::<(), _, _>(self.key(key), value, expire, None, false)
            .await
            .map_err(|error| state_error(key, error))
    }

    async fn delete(&self, key: &str) -> Result<bool, StateError> {
        let deleted: u64 = self
            .client
            .del(self.key(key))
            .await
            .map_err(|error| state_error(key, error))?;
        Ok(deleted > 0)
    }

    async fn incr(&self, key: &str, delta: i64) -> Result<i64, StateError> {
        self.client
            .incr_by(self.key(key), delta)
            .await
            .map_err(|error| match state_error(key, error) {
                StateError::NotAList { key } => StateError::NotAnInteger { key },
                other => other,
            })
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&str>,
        new: String,
        ttl: Option<Duration>,
    ) -> Result<bool, StateError> {
        let arguments = vec![
            if expected.is_some() { "1" } else { "0" }.to_owned(),
            expected.unwrap_or_default().to_owned(),
            new,
            ttl.map(|ttl| millis(ttl).to_string()).unwrap_or_default(),
        ];
        let swapped: i64 = self
            .client
            .eval(COMPARE_AND_SWAP, self.key(key), arguments)
            .await
            .map_err(|error| match state_error(key, error) {
                StateError::NotAList { key } => StateError::NotAString { key },
                other => other,
            })?;
        Ok(swapped == 1)
    }

    async fn expire(&self, key: &str, ttl: Option<Duration>) -> Result<bool, StateError> {
        let existed: i64 = match ttl {
            Some(ttl) => self.client.pexpire(self.key(key), millis(ttl), None).await,
            None => {
                self.client
                    .eval(PERSIST_EXISTING, self.key(key), Vec::<String>::new())
                    .await
            }
        }
        .map_err(|error| state_error(key, error))?;
        Ok(existed == 1)
    }

    async fn list_push(&self, key: &str, values: Vec<String>) -> Result<u64, StateError> {
        self.client
            .rpush(self.key(key), values)
            .await
            .map_err(|error| state_error(key, error))
    }

    async fn list_range(
        &self,
        key: &str,
        start: i64,
        stop: i64,
    ) -> Result<Vec<String>, StateError> {
        self.client
            .lrange(self.key(key), start, stop)
            .await
            .map_err(|error| state_error(key, error))
    }

    async fn list_trim(&self, key: &str, start: i64, stop: i64) -> Result<(), StateError> {
        self.client
            .ltrim(self.key(key), start, stop)
            .await
            .map_err(|error| state_error(key, error))
    }
}

#[cfg(test)]
mod tests {
    use fred::prelude::{Builder, ClientLike, Config};
    use fred::types::RespVersion;

    use super::RedisStore;
    use crate::cluster::conformance;
    use crate::cluster::test_redis::RedisServer;

    #[tokio::test]
    async fn follows_the_state_semantics() {
        let server = RedisServer::start();
        let mut config = Config::from_url(&server.url()).unwrap();
        config.version = RespVersion::RESP3;
        let client = Builder::from_config(config).build().unwrap();
        client.init().await.unwrap();
        conformance::check_all(&RedisStore::new(client, "test")).await;
    }
}
