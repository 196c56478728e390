//! Plugin state in Redis, shared by every node: each operation is one Redis
//! command or one Lua script, so it is atomic across the cluster.
//!
//! Each scope's keys are counted in an index, a sorted set of its key names
//! scored by when each expires (`+inf`: never), kept by the scripts that
//! create, expire and delete keys. A write that would create a key first drops
//! the index's expired entries (`ZREMRANGEBYSCORE`), then compares its size
//! (`ZCARD`) with the quota: no `SCAN`, and the count is exact for keys written
//! through this store.
//!
//! A scope's keys and its index share the hash tag `{scope prefix}`, so in a
//! Redis Cluster they are in one slot and the scripts can touch both: a
//! plugin's state lives on one shard.

use std::time::Duration;

use async_trait::async_trait;
use fred::prelude::{Client, KeysInterface, ListInterface, LuaInterface};

use super::{Scope, StateError, StateStore};

/// Shared by the scripts: KEYS[1] is the key, KEYS[2] its scope's index.
const PRELUDE: &str = r"
local function now_ms()
  local time = redis.call('TIME')
  return tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end
-- Fails unless KEYS[1] exists or the scope has room for one more live key.
local function admit(max_keys)
  if redis.call('EXISTS', KEYS[1]) == 1 then return end
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now_ms())
  if redis.call('ZCARD', KEYS[2]) >= tonumber(max_keys) then
    error({err = 'QUOTA_KEYS the scope is full'})
  end
end
-- Records KEYS[1] in the index with its time to live in ms ('': none).
local function track(ttl)
  if ttl == '' then
    redis.call('ZADD', KEYS[2], '+inf', KEYS[1])
  else
    redis.call('ZADD', KEYS[2], now_ms() + tonumber(ttl), KEYS[1])
  end
end
";

/// `set`: ARGV = [value, ttl ms or "", max keys].
const SET: &str = r"
admit(ARGV[3])
if ARGV[2] == '' then
  redis.call('SET', KEYS[1], ARGV[1])
else
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
track(ARGV[2])
return 1
";

/// `compare_and_swap`: ARGV = [expects a value (0/1), expected, new, ttl ms or "", max keys].
const COMPARE_AND_SWAP: &str = r"
local current = redis.call('GET', KEYS[1])
local matches
if ARGV[1] == '0' then matches = (current == false) else matches = (current == ARGV[2]) end
if not matches then return 0 end
admit(ARGV[5])
if ARGV[4] == '' then redis.call('SET', KEYS[1], ARGV[3]) else redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4]) end
track(ARGV[4])
return 1
";

/// `incr`: ARGV = [delta, max keys]. An existing key keeps its expiry.
const INCR: &str = r"
local fresh = redis.call('EXISTS', KEYS[1]) == 0
admit(ARGV[2])
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
if fresh then track('') end
return value
";

/// `delete`: the number of keys deleted.
const DELETE: &str = r"
local deleted = redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], KEYS[1])
return deleted
";

/// `expire`: ARGV = [ttl ms, or "" to clear it]; whether the key exists.
const EXPIRE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if ARGV[1] == '' then redis.call('PERSIST', KEYS[1]) else redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
track(ARGV[1])
return 1
";

/// `list_push`: ARGV = [max keys, max items, values...]; the new length. An
/// existing list keeps its expiry; pushing nothing creates nothing. One `RPUSH` per value: `unpack` of
/// thousands of values would overflow Lua's stack.
const LIST_PUSH: &str = r"
local held = redis.call('LLEN', KEYS[1])
if #ARGV == 2 then return held end
if held + #ARGV - 2 > tonumber(ARGV[2]) then
  error({err = 'QUOTA_LIST the list is full'})
end
if held == 0 then admit(ARGV[1]) end
for index = 3, #ARGV do redis.call('RPUSH', KEYS[1], ARGV[index]) end
if held == 0 then track('') end
return redis.call('LLEN', KEYS[1])
";

/// `list_trim`: ARGV = [start, stop]. Redis deletes a list trimmed empty.
const LIST_TRIM: &str = r"
redis.call('LTRIM', KEYS[1], ARGV[1], ARGV[2])
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('ZREM', KEYS[2], KEYS[1]) end
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

    fn key(&self, scope: &Scope, key: &str) -> String {
        format!("{}{{{}}}{key}", self.prefix, scope.prefix)
    }

    /// Outside the scope's keys (which follow the tag), in the same slot.
    fn index(&self, scope: &Scope) -> String {
        format!("{}state-keys:{{{}}}", self.prefix, scope.prefix)
    }

    /// Runs one of the scripts above on `key` and its scope's index.
    async fn script<R: fred::types::FromValue>(
        &self,
        body: &str,
        scope: &Scope,
        key: &str,
        arguments: Vec<String>,
    ) -> Result<R, StateError> {
        let keys = vec![self.key(scope, key), self.index(scope)];
        self.client
            .eval(format!("{PRELUDE}{body}"), keys, arguments)
            .await
            .map_err(|error| state_error(scope, key, error))
    }
}

fn millis(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1)
}

fn ttl_argument(ttl: Option<Duration>) -> String {
    ttl.map(|ttl| millis(ttl).to_string()).unwrap_or_default()
}

/// Redis's own errors and the scripts' quota errors become typed ones;
/// anything else means the backend cannot be reached right now.
fn state_error(scope: &Scope, key: &str, error: fred::error::Error) -> StateError {
    let details = error.details();
    let key = key.to_owned();
    if details.contains("QUOTA_KEYS") {
        StateError::TooManyKeys {
            max: scope.max_keys,
        }
    } else if details.contains("QUOTA_LIST") {
        StateError::ListTooLong {
            key,
            max: scope.max_list_items,
        }
    } else if details.contains("WRONGTYPE") {
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

/// For operations on strings: a wrong type means the key holds a list.
fn on_string(error: StateError) -> StateError {
    match error {
        StateError::NotAList { key } => StateError::NotAString { key },
        other => other,
    }
}

#[async_trait]
impl StateStore for RedisStore {
    async fn get(&self, scope: &Scope, key: &str) -> Result<Option<String>, StateError> {
        self.client
            .get(self.key(scope, key))
            .await
            .map_err(|error| on_string(state_error(scope, key, error)))
    }

    async fn set(
        &self,
        scope: &Scope,
        key: &str,
        value: String,
        ttl: Option<Duration>,
    ) -> Result<(), StateError> {
        let arguments = vec![value, ttl_argument(ttl), scope.max_keys.to_string()];
        self.script::<i64>(SET, scope, key, arguments)
            .await
            .map(drop)
    }

    async fn delete(&self, scope: &Scope, key: &str) -> Result<bool, StateError> {
        let deleted: i64 = self.script(DELETE, scope, key, Vec::new()).await?;
        Ok(deleted > 0)
    }

    async fn incr(&self, scope: &Scope, key: &str, delta: i64) -> Result<i64, StateError> {
        let arguments = vec![delta.to_string(), scope.max_keys.to_string()];
        self.script(INCR, scope, key, arguments)
            .await
            .map_err(|error| match error {
                StateError::NotAList { key } => StateError::NotAnInteger { key },
                other => other,
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
        let arguments = vec![
            if expected.is_some() { "1" } else { "0" }.to_owned(),
            expected.unwrap_or_default().to_owned(),
            new,
            ttl_argument(ttl),
            scope.max_keys.to_string(),
        ];
        let swapped: i64 = self
            .script(COMPARE_AND_SWAP, scope, key, arguments)
            .await
            .map_err(on_string)?;
        Ok(swapped == 1)
    }

    async fn expire(
        &self,
        scope: &Scope,
        key: &str,
        ttl: Option<Duration>,
    ) -> Result<bool, StateError> {
        let existed: i64 = self
            .script(EXPIRE, scope, key, vec![ttl_argument(ttl)])
            .await?;
        Ok(existed == 1)
    }

    async fn list_push(
        &self,
        scope: &Scope,
        key: &str,
        values: Vec<String>,
    ) -> Result<u64, StateError> {
        let mut arguments = Vec::with_capacity(values.len() + 2);
        arguments.push(scope.max_keys.to_string());
        arguments.push(scope.max_list_items.to_string());
        arguments.extend(values);
        self.script(LIST_PUSH, scope, key, arguments).await
    }

    async fn list_range(
        &self,
        scope: &Scope,
        key: &str,
        start: i64,
        stop: i64,
    ) -> Result<Vec<String>, StateError> {
        self.client
            .lrange(self.key(scope, key), start, stop)
            .await
            .map_err(|error| state_error(scope, key, error))
    }

    async fn list_trim(
        &self,
        scope: &Scope,
        key: &str,
        start: i64,
        stop: i64,
    ) -> Result<(), StateError> {
        let arguments = vec![start.to_string(), stop.to_string()];
        self.script::<i64>(LIST_TRIM, scope, key, arguments)
            .await
            .map(drop)
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
