//! Plugin state in Redis, shared by every node.
//!
//! A call's transaction reads its keys whole (one Lua script: value, expiry
//! and version) and commits with another script that checks every version
//! it read and applies every write, or nothing: optimistic concurrency with
//! one round trip per commit, measured against `WATCH`/`MULTI`/`EXEC` in
//! BENCHMARKS.md. Versions live in a hash per scope, one field per key, given
//! from a counter in the same hash, so a version is never reused.
//!
//! Each scope's keys are counted in an index, a sorted set of its key names
//! scored by when each expires (`+inf`: never). A commit that would create
//! keys first drops the index's expired entries, then compares its size with
//! the quota: no `SCAN`, and the count is exact for keys written through
//! this store.
//!
//! A scope's keys, its index and its versions share the hash tag
//! `{scope prefix}`, so in a Redis Cluster they are in one slot and one
//! script can touch them all: a plugin's state lives on one shard, and any
//! set of its keys can be in one transaction.

use std::time::Duration;

use async_trait::async_trait;
use fred::prelude::{Client, ClientLike, LuaInterface};

use super::record::HOLD_TTL;
use super::{
    Commit, Committed, Expiry, Record, Scope, Snapshot, StateError, StateStore, Value, Version,
};
use crate::metrics;

/// Shared by the scripts.
const PRELUDE: &str = r"
local function now_ms()
  local time = redis.call('TIME')
  return tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
end
-- A key's version as reads see it: '0' when absent, '-1' for a key written
-- before versions existed.
local function version_of(versions, key)
  if redis.call('EXISTS', key) == 0 then return '0' end
  return redis.call('HGET', versions, key) or '-1'
end
-- Fails unless the scope has room for `creates` more live keys.
local function admit(index, versions, creates, max_keys)
  if creates <= 0 then return end
  if redis.call('ZCARD', index) + creates > max_keys then
    local now = now_ms()
    for _, gone in ipairs(redis.call('ZRANGEBYSCORE', index, '-inf', now)) do
      redis.call('HDEL', versions, gone)
    end
    redis.call('ZREMRANGEBYSCORE', index, '-inf', now)
    if redis.call('ZCARD', index) + creates > max_keys then
      error({err = 'QUOTA_KEYS the scope is full'})
    end
  end
end
-- Records a written key's expiry in the index and gives it `version`.
local function track(index, versions, key, version)
  local ttl = redis.call('PTTL', key)
  if ttl < 0 then
    redis.call('ZADD', index, '+inf', key)
  else
    redis.call('ZADD', index, now_ms() + ttl, key)
  end
  redis.call('HSET', versions, key, version)
end
";

/// KEYS = [versions, holds, keys...]: per key `{type, expires at ms or '',
/// version, items...}`, or `{{'held'}}` while a key is held.
const READ: &str = r"
local now = now_ms()
for position = 3, #KEYS do
  local hold = redis.call('HGET', KEYS[2], KEYS[position])
  if hold then
    if tonumber(string.match(hold, ' (%d+)$')) > now then return {{'held'}} end
    redis.call('HDEL', KEYS[2], KEYS[position])
  end
end
local out = {}
for position = 3, #KEYS do
  local key = KEYS[position]
  local kind = redis.call('TYPE', key)['ok']
  if kind == 'none' then
    out[#out + 1] = {'none', '', '0'}
  else
    local ttl = redis.call('PTTL', key)
    local at = ''
    if ttl >= 0 then at = string.format('%.0f', now + ttl) end
    local entry = {kind, at, version_of(KEYS[1], key)}
    local items = {}
    if kind == 'string' then items = {redis.call('GET', key)}
    elseif kind == 'list' then items = redis.call('LRANGE', key, 0, -1)
    elseif kind == 'hash' then items = redis.call('HGETALL', key)
    elseif kind == 'set' then items = redis.call('SMEMBERS', key)
    elseif kind == 'zset' then items = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
    end
    for _, item in ipairs(items) do entry[#entry + 1] = item end
    out[#out + 1] = entry
  end
end
return out
";

/// KEYS = [index, versions, lease, holds, keys...]. ARGV = [max keys, lease
/// token or '', hold token or '', hold ms, reads, then per read: key
/// position, version; then per write: key position, type ('none' deletes),
/// expiry ('never', 'at' or 'after'), its ms, item count, items]. 1 when
/// applied, 0 on a conflict. Everything is checked before anything is
/// written: a script that fails half way keeps its writes.
const COMMIT: &str = r"
local index, versions = KEYS[1], KEYS[2]
local at = 6
for _ = 1, tonumber(ARGV[5]) do
  if version_of(versions, KEYS[tonumber(ARGV[at])]) ~= ARGV[at + 1] then return 0 end
  at = at + 2
end
local writes, creates, deletes = {}, 0, 0
while at <= #ARGV do
  local write = {key = KEYS[tonumber(ARGV[at])], kind = ARGV[at + 1], expiry = ARGV[at + 2],
    ms = ARGV[at + 3], first = at + 5, last = at + 4 + tonumber(ARGV[at + 4])}
  writes[#writes + 1] = write
  at = write.last + 1
  local exists = redis.call('EXISTS', write.key) == 1
  if write.kind == 'none' then
    if exists then deletes = deletes + 1 end
  elseif not exists then
    creates = creates + 1
  end
end
if #writes > 0 then
  local holder = redis.call('GET', KEYS[3])
  if holder and holder ~= ARGV[2] then return 0 end
end
admit(index, versions, creates - deletes, tonumber(ARGV[1]))
local version = redis.call('HINCRBY', versions, '#', 1)
for _, write in ipairs(writes) do
  local key = write.key
  redis.call('DEL', key)
  if write.kind == 'none' then
    redis.call('ZREM', index, key)
    redis.call('HDEL', versions, key)
  else
    if write.kind == 'string' then
      redis.call('SET', key, ARGV[write.first])
    elseif write.kind == 'list' then
      for item = write.first, write.last do redis.call('RPUSH', key, ARGV[item]) end
    elseif write.kind == 'hash' then
      for item = write.first, write.last, 2 do redis.call('HSET', key, ARGV[item], ARGV[item + 1]) end
    elseif write.kind == 'set' then
      for item = write.first, write.last do redis.call('SADD', key, ARGV[item]) end
    elseif write.kind == 'zset' then
      for item = write.first, write.last, 2 do redis.call('ZADD', key, ARGV[item + 1], ARGV[item]) end
    end
    if write.expiry == 'at' then
      redis.call('PEXPIREAT', key, write.ms)
    elseif write.expiry == 'after' then
      redis.call('PEXPIRE', key, write.ms)
    end
    if redis.call('EXISTS', key) == 1 then
      track(index, versions, key, version)
    else
      redis.call('ZREM', index, key)
      redis.call('HDEL', versions, key)
    end
  end
  if ARGV[3] ~= '' then
    redis.call('HSET', KEYS[4], key, ARGV[3] .. ' ' .. string.format('%.0f', now_ms() + tonumber(ARGV[4])))
  end
end
return 1
";

/// KEYS = [holds]; ARGV = [token, keys...]: releases the keys `token` holds.
const RELEASE_HOLDS: &str = r"
for position = 2, #ARGV do
  local hold = redis.call('HGET', KEYS[1], ARGV[position])
  if hold and string.sub(hold, 1, #ARGV[1] + 1) == ARGV[1] .. ' ' then
    redis.call('HDEL', KEYS[1], ARGV[position])
  end
end
return 1
";

/// KEYS = [key, index, versions]; ARGV = [delta, max keys]. An existing key
/// keeps its expiry.
const INCR_NOW: &str = r"
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind ~= 'none' and kind ~= 'string' then
  return redis.error_reply('WRONGTYPE ' .. kind)
end
if kind == 'none' then admit(KEYS[2], KEYS[3], 1, tonumber(ARGV[2])) end
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
track(KEYS[2], KEYS[3], KEYS[1], redis.call('HINCRBY', KEYS[3], '#', 1))
return value
";

/// KEYS = [lease]; ARGV = [token, ttl ms]: 1 when taken.
const ACQUIRE_LEASE: &str = r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
";

/// KEYS = [lease]; ARGV = [token].
const RELEASE_LEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
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

    /// The versions of the scope's keys, in the same slot.
    fn versions(&self, scope: &Scope) -> String {
        format!("{}state-versions:{{{}}}", self.prefix, scope.prefix)
    }

    /// Keys held until their call's emits are sent, in the same slot.
    fn holds(&self, scope: &Scope) -> String {
        format!("{}state-holds:{{{}}}", self.prefix, scope.prefix)
    }

    /// Held by the call a conflict made run under it, in the same slot.
    fn lease(&self, scope: &Scope) -> String {
        format!("{}state-lease:{{{}}}", self.prefix, scope.prefix)
    }

    async fn script<R: fred::types::FromValue>(
        &self,
        body: &str,
        scope: &Scope,
        keys: Vec<String>,
        arguments: Vec<String>,
    ) -> Result<R, StateError> {
        // While Redis is away a command would wait out its timeout: a
        // handler making several calls would answer its client seconds
        // late. It fails at once instead, with `state_unavailable`.
        if !self.client.is_connected() {
            return Err(StateError::Backend(
                "the cluster's Redis is unreachable; try again shortly".to_owned(),
            ));
        }
        let started = std::time::Instant::now();
        let result = self
            .client
            .eval(format!("{PRELUDE}{body}"), keys, arguments)
            .await;
        metrics::redis_command("state", started.elapsed());
        result.map_err(|error| state_error(scope, &error))
    }
}

/// The scripts' quota errors become typed ones; anything else means the
/// backend cannot be reached right now.
fn state_error(scope: &Scope, error: &fred::error::Error) -> StateError {
    if error.details().contains("QUOTA_KEYS") {
        StateError::TooManyKeys {
            max: scope.max_keys,
        }
    } else {
        StateError::Backend(error.to_string())
    }
}

fn corrupt(key: &str) -> StateError {
    StateError::Backend(format!("Redis returned an unreadable value for `{key}`"))
}

/// One key as the read script returns it.
fn snapshot(key: &str, entry: Vec<String>) -> Result<Snapshot, StateError> {
    let mut parts = entry.into_iter();
    let (Some(kind), Some(at), Some(version)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(corrupt(key));
    };
    let version = Version(version.parse().map_err(|_| corrupt(key))?);
    let items: Vec<String> = parts.collect();
    let pairs = |items: Vec<String>| {
        let mut items = items.into_iter();
        std::iter::from_fn(move || Some((items.next()?, items.next()?)))
    };
    let value = match kind.as_str() {
        "none" => {
            return Ok(Snapshot {
                record: None,
                version,
            });
        }
        "string" => Value::Text(items.into_iter().next().ok_or_else(|| corrupt(key))?),
        "list" => Value::List(items.into()),
        "hash" => Value::Hash(pairs(items).collect()),
        "set" => Value::Set(items.into_iter().collect()),
        "zset" => Value::Sorted(
            pairs(items)
                .map(|(member, score)| Ok((member, score.parse().map_err(|_| corrupt(key))?)))
                .collect::<Result<_, StateError>>()?,
        ),
        _ => return Err(corrupt(key)),
    };
    let expiry = match at.as_str() {
        "" => Expiry::Never,
        at => Expiry::At(at.parse().map_err(|_| corrupt(key))?),
    };
    Ok(Snapshot {
        record: Some(Record { value, expiry }),
        version,
    })
}

/// A record as the commit script's write arguments, after its key position.
fn write_arguments(record: Option<&Record>, arguments: &mut Vec<String>) {
    let Some(record) = record else {
        arguments.extend(["none", "never", "0", "0"].map(String::from));
        return;
    };
    let (expiry, ms) = match record.expiry {
        Expiry::Never => ("never", 0),
        Expiry::At(at) => ("at", at),
        Expiry::After(ms) => ("after", ms.max(1)),
    };
    let items: Vec<String> = match &record.value {
        Value::Text(text) => vec![text.clone()],
        Value::List(list) => list.iter().cloned().collect(),
        Value::Set(set) => set.iter().cloned().collect(),
        Value::Hash(hash) => hash
            .iter()
            .flat_map(|(field, value)| [field.clone(), value.clone()])
            .collect(),
        Value::Sorted(sorted) => sorted
            .iter()
            .flat_map(|(member, score)| [member.clone(), score.to_string()])
            .collect(),
    };
    let count = items.len();
    arguments.extend([
        record.value.kind().to_owned(),
        expiry.to_owned(),
        ms.to_string(),
    ]);
    arguments.push(count.to_string());
    arguments.extend(items);
}

#[async_trait]
impl StateStore for RedisStore {
    async fn read(
        &self,
        scope: &Scope,
        keys: &[String],
    ) -> Result<Option<Vec<Snapshot>>, StateError> {
        let mut names = vec![self.versions(scope), self.holds(scope)];
        names.extend(keys.iter().map(|key| self.key(scope, key)));
        let entries: Vec<Vec<String>> = self.script(READ, scope, names, Vec::new()).await?;
        if entries
            .first()
            .is_some_and(|entry| entry.len() == 1 && entry[0] == "held")
        {
            return Ok(None);
        }
        if entries.len() != keys.len() {
            return Err(StateError::Backend(
                "Redis answered for other keys than asked".to_owned(),
            ));
        }
        keys.iter()
            .zip(entries)
            .map(|(key, entry)| snapshot(key, entry))
            .collect::<Result<_, _>>()
            .map(Some)
    }

    async fn commit(&self, scope: &Scope, commit: &Commit) -> Result<Committed, StateError> {
        let mut names = vec![
            self.index(scope),
            self.versions(scope),
            self.lease(scope),
            self.holds(scope),
        ];
        let mut positions = std::collections::HashMap::new();
        let mut position = |key: &str, names: &mut Vec<String>| {
            *positions.entry(key.to_owned()).or_insert_with(|| {
                names.push(self.key(scope, key));
                names.len()
            })
        };
        let mut arguments = vec![
            scope.max_keys.to_string(),
            commit.lease.clone().unwrap_or_default(),
            commit.hold.clone().unwrap_or_default(),
            HOLD_TTL.as_millis().to_string(),
            commit.reads.len().to_string(),
        ];
        for (key, version) in &commit.reads {
            arguments.push(position(key, &mut names).to_string());
            arguments.push(version.0.to_string());
        }
        for (key, record) in &commit.writes {
            arguments.push(position(key, &mut names).to_string());
            write_arguments(record.as_ref(), &mut arguments);
        }
        let applied: i64 = self.script(COMMIT, scope, names, arguments).await?;
        Ok(if applied == 1 {
            Committed::Applied
        } else {
            Committed::Conflict
        })
    }

    async fn incr_now(&self, scope: &Scope, key: &str, delta: i64) -> Result<i64, StateError> {
        let keys = vec![
            self.key(scope, key),
            self.index(scope),
            self.versions(scope),
        ];
        let arguments = vec![delta.to_string(), scope.max_keys.to_string()];
        self.script(INCR_NOW, scope, keys, arguments)
            .await
            .map_err(|error| match error {
                StateError::Backend(details) if details.contains("WRONGTYPE") => {
                    StateError::WrongType {
                        key: key.to_owned(),
                        holds: "collection",
                        wanted: "string",
                    }
                }
                StateError::Backend(details) if details.contains("overflow") => {
                    StateError::Overflow {
                        key: key.to_owned(),
                    }
                }
                StateError::Backend(details) if details.contains("not an integer") => {
                    StateError::NotAnInteger {
                        key: key.to_owned(),
                    }
                }
                other => other,
            })
    }

    async fn acquire_lease(
        &self,
        scope: &Scope,
        token: &str,
        ttl: Duration,
    ) -> Result<bool, StateError> {
        let ttl = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1);
        let arguments = vec![token.to_owned(), ttl.to_string()];
        let taken: i64 = self
            .script(ACQUIRE_LEASE, scope, vec![self.lease(scope)], arguments)
            .await?;
        Ok(taken == 1)
    }

    async fn release_holds(
        &self,
        scope: &Scope,
        token: &str,
        keys: &[String],
    ) -> Result<(), StateError> {
        let mut arguments = vec![token.to_owned()];
        arguments.extend(keys.iter().map(|key| self.key(scope, key)));
        self.script::<i64>(RELEASE_HOLDS, scope, vec![self.holds(scope)], arguments)
            .await
            .map(drop)
    }

    async fn release_lease(&self, scope: &Scope, token: &str) -> Result<(), StateError> {
        let arguments = vec![token.to_owned()];
        self.script::<i64>(RELEASE_LEASE, scope, vec![self.lease(scope)], arguments)
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
        conformance::check_all(std::sync::Arc::new(RedisStore::new(client, "test"))).await;
    }
}
