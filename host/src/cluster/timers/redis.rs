//! Timers in Redis, shared by every node: a sorted set of due times, a hash
//! of payloads (a timer exists while its payload does), a sorted set of
//! leases and a hash of each plugin's count of timers, all under one hash
//! tag so each Lua script touches a single Redis Cluster slot.

use async_trait::async_trait;
use fred::prelude::{Client, LuaInterface};

use super::{DueTimer, LEASE, TimerStore, member, split_member};
use crate::cluster::StateError;

/// KEYS = [due, payloads, leases, counts]; ARGV = [member, at, payload,
/// plugin, max timers]. Returns 0, scheduling nothing, for a new timer of a
/// plugin that has max timers.
const SCHEDULE: &str = r"
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 then
  if tonumber(redis.call('HGET', KEYS[4], ARGV[4]) or '0') >= tonumber(ARGV[5]) then
    return 0
  end
  redis.call('HINCRBY', KEYS[4], ARGV[4], 1)
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
";

/// Lua: `forget()` counts a timer of plugin ARGV[2] gone, its payload
/// deleted (KEYS[4] the counts); a count from before counts were kept never
/// goes below zero.
macro_rules! with_forget {
    ($script:literal) => {
        concat!(
            r"
local function forget()
  if redis.call('HINCRBY', KEYS[4], ARGV[2], -1) <= 0 then
    redis.call('HDEL', KEYS[4], ARGV[2])
  end
end
",
            $script
        )
    };
}

/// KEYS = [due, payloads, leases, counts]; ARGV = [member, plugin].
const CANCEL: &str = with_forget!(
    r"
local removed = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
if redis.call('HDEL', KEYS[2], ARGV[1]) == 1 then forget() end
return removed
"
);

/// KEYS = [due, payloads, leases, counts]; ARGV = [now, lease until, limit].
/// Expired leases become due again (unless rescheduled meanwhile), then the
/// earliest due timers move to the leases: returns member, payload pairs.
const CLAIM_DUE: &str = r"
local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', ARGV[1])
for _, member in ipairs(expired) do
  redis.call('ZREM', KEYS[3], member)
  redis.call('ZADD', KEYS[1], 'NX', ARGV[1], member)
end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local claimed = {}
for _, member in ipairs(due) do
  redis.call('ZREM', KEYS[1], member)
  redis.call('ZADD', KEYS[3], ARGV[2], member)
  claimed[#claimed + 1] = member
  claimed[#claimed + 1] = redis.call('HGET', KEYS[2], member) or ''
end
return claimed
";

/// KEYS = [due, payloads, leases, counts]; ARGV = [member, plugin]. A timer
/// scheduled again while it was being delivered has no lease any more and
/// keeps its payload.
const COMPLETE: &str = with_forget!(
    r"
if redis.call('ZREM', KEYS[3], ARGV[1]) == 1 and not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  if redis.call('HDEL', KEYS[2], ARGV[1]) == 1 then forget() end
end
return 1
"
);

pub struct RedisTimers {
    client: Client,
    keys: Vec<String>,
}

impl RedisTimers {
    pub fn new(client: Client, prefix: &str) -> Self {
        let tag = format!("{{{prefix}:timers}}");
        Self {
            client,
            keys: ["due", "payloads", "leases", "counts"]
                .map(|name| format!("{tag}:{name}"))
                .to_vec(),
        }
    }

    async fn eval<R: fred::types::FromValue>(
        &self,
        script: &str,
        arguments: Vec<String>,
    ) -> Result<R, StateError> {
        self.client
            .eval(script, self.keys.clone(), arguments)
            .await
            .map_err(|error| StateError::Backend(error.to_string()))
    }
}

#[async_trait]
impl TimerStore for RedisTimers {
    async fn schedule(
        &self,
        plugin: &str,
        key: &str,
        at_ms: u64,
        payload: &str,
        max_timers: u64,
    ) -> Result<(), StateError> {
        let arguments = vec![
            member(plugin, key),
            at_ms.to_string(),
            payload.to_owned(),
            plugin.to_owned(),
            max_timers.to_string(),
        ];
        match self.eval::<i64>(SCHEDULE, arguments).await? {
            0 => Err(StateError::TooManyTimers { max: max_timers }),
            _ => Ok(()),
        }
    }

    async fn cancel(&self, plugin: &str, key: &str) -> Result<bool, StateError> {
        let arguments = vec![member(plugin, key), plugin.to_owned()];
        let removed: i64 = self.eval(CANCEL, arguments).await?;
        Ok(removed == 1)
    }

    async fn claim_due(&self, now_ms: u64, limit: usize) -> Result<Vec<DueTimer>, StateError> {
        let lease_until = now_ms.saturating_add(u64::try_from(LEASE.as_millis()).unwrap_or(0));
        let arguments = vec![
            now_ms.to_string(),
            lease_until.to_string(),
            limit.to_string(),
        ];
        let claimed: Vec<String> = self.eval(CLAIM_DUE, arguments).await?;
        Ok(claimed
            .chunks_exact(2)
            .filter_map(|pair| {
                let (plugin, key) = split_member(&pair[0])?;
                Some(DueTimer {
                    plugin: plugin.to_owned(),
                    key: key.to_owned(),
                    payload: pair[1].clone(),
                })
            })
            .collect())
    }

    async fn complete(&self, timer: &DueTimer) -> Result<(), StateError> {
        let arguments = vec![member(&timer.plugin, &timer.key), timer.plugin.clone()];
        self.eval::<i64>(COMPLETE, arguments).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use fred::prelude::{Builder, ClientLike, Config};
    use fred::types::RespVersion;

    use super::RedisTimers;
    use crate::cluster::test_redis::RedisServer;
    use crate::cluster::timers::{LEASE, TimerStore, conformance};

    async fn client(server: &RedisServer) -> fred::prelude::Client {
        let mut config = Config::from_url(&server.url()).unwrap();
        config.version = RespVersion::RESP3;
        let client = Builder::from_config(config).build().unwrap();
        client.init().await.unwrap();
        client
    }

    #[tokio::test]
    async fn follows_the_timer_semantics() {
        let server = RedisServer::start();
        conformance::check_all(&RedisTimers::new(client(&server).await, "test")).await;
    }

    #[tokio::test]
    async fn one_node_claims_a_timer_and_another_takes_it_after_the_lease() {
        let server = RedisServer::start();
        let node_a = RedisTimers::new(client(&server).await, "test");
        let node_b = RedisTimers::new(client(&server).await, "test");
        node_a
            .schedule("auction", "close:1", 100, "1", 10)
            .await
            .unwrap();
        let (claimed_a, claimed_b) =
            tokio::join!(node_a.claim_due(200, 10), node_b.claim_due(200, 10));
        let claims = [claimed_a.unwrap(), claimed_b.unwrap()];
        assert_eq!(claims.iter().map(Vec::len).sum::<usize>(), 1);
        let lease_ms = u64::try_from(LEASE.as_millis()).unwrap();
        assert!(
            node_b
                .claim_due(200 + lease_ms - 1, 10)
                .await
                .unwrap()
                .is_empty()
        );
        let reclaimed = node_b.claim_due(200 + lease_ms, 10).await.unwrap();
        assert_eq!(
            reclaimed.len(),
            1,
            "a lease that ran out makes the timer due again"
        );
        node_b.complete(&reclaimed[0]).await.unwrap();
        assert!(node_a.claim_due(u64::MAX / 2, 10).await.unwrap().is_empty());
    }
}
