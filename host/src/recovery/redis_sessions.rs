//! Sessions of a cluster, in Redis, so a client recovers on any node: also
//! when the node it was connected to was killed or drained.
//!
//! A session is a hash `{P}:session:{pid}` (its socket id, namespace, `conn`,
//! state, lease, deadline, reason) with its rooms in `{P}:rooms:{pid}`;
//! sessions waiting for their client are in the sorted set `{P}:waiting` by
//! deadline, which every node sweeps. A socket's rooms are kept current
//! while it is connected (`{P}:socket:{namespace}:{socket id}` names its
//! session), so they are known even if its node dies. `{P}` is one hash tag:
//! in a Redis Cluster every key is in one slot and each transition is one
//! Lua script.
//!
//! Unlike on one node, a live session can be claimed: its client presents
//! the session's `pid`, which only it knows, so its old connection is gone
//! (or a dead node still holds it). That connection's lease no longer
//! changes the session.
//!
//! Every command is tried again while Redis fails it (see
//! [`REDIS_RETRIED_FOR`]): one that timed out may still have run, so each
//! script answers its repeat (same lease or token) as it answered the first
//! run, instead of taking its own change for someone else's.

use async_trait::async_trait;
use fred::prelude::{Client, HashesInterface, LuaInterface, SortedSetsInterface};
use tokio::time::Instant;

use super::REDIS_RETRIED_FOR;
use super::sessions::{Expired, Lease, Session, SessionStore, Suspension};
use crate::bindings::Conn;
use crate::cluster::{RecordedConn, retried};

/// Sessions handed to the sweep at most per pass.
const SWEEP_BATCH: i64 = 100;
/// How long the keys of a session waiting for its client outlive its
/// deadline, so a sweep that runs late still finds them.
const GRACE_MS: u64 = 60_000;

/// KEYS: session, rooms, socket index; ARGV: socket id, namespace, conn,
/// lease, opened at, rooms...
const OPEN: &str = r"
if redis.call('HGET', KEYS[1], 'lease') == ARGV[4] then return 1 end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('HSET', KEYS[1], 'sid', ARGV[1], 'ns', ARGV[2], 'conn', ARGV[3], 'state', 'live', 'lease', ARGV[4], 'opened', ARGV[5])
redis.call('SET', KEYS[3], KEYS[1])
for i = 6, #ARGV do redis.call('SADD', KEYS[2], ARGV[i]) end
return 1
";

/// KEYS: session, rooms, waiting, socket index; ARGV: lease, deadline ms,
/// reason, pid, grace ms, max waiting, rooms... Returns 1 when the session
/// goes on (kept here, or claimed by another connection), 0 when it is
/// unknown, 2 when max waiting sessions wait already (it stays live, for
/// its connection to close).
const SUSPEND: &str = r"
local state, lease = unpack(redis.call('HMGET', KEYS[1], 'state', 'lease'))
if not state then return 0 end
if state ~= 'live' or lease ~= ARGV[1] then return 1 end
if redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[6]) then return 2 end
redis.call('HSET', KEYS[1], 'state', 'waiting', 'deadline', ARGV[2], 'reason', ARGV[3])
redis.call('DEL', KEYS[2], KEYS[4])
for i = 7, #ARGV do redis.call('SADD', KEYS[2], ARGV[i]) end
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[4])
local until_ms = tonumber(ARGV[2]) + tonumber(ARGV[5])
redis.call('PEXPIREAT', KEYS[1], until_ms)
redis.call('PEXPIREAT', KEYS[2], until_ms)
return 1
";

/// KEYS: session, rooms, socket index; ARGV: lease.
const CLOSE: &str = r"
local state, lease = unpack(redis.call('HMGET', KEYS[1], 'state', 'lease'))
if state == 'live' and lease == ARGV[1] then
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
end
return 1
";

/// KEYS: session, waiting; ARGV: namespace, now ms, deadline ms, pid,
/// claimer. Returns the socket id, or nil.
const CLAIM: &str = r"
local state, ns, deadline, sid, claimer = unpack(redis.call('HMGET', KEYS[1], 'state', 'ns', 'deadline', 'sid', 'claimer'))
if state == 'claimed' and claimer == ARGV[5] then return sid end
if (state ~= 'live' and state ~= 'waiting') or ns ~= ARGV[1] then return nil end
if state == 'waiting' and tonumber(deadline) <= tonumber(ARGV[2]) then return nil end
if state == 'live' then
  redis.call('HSET', KEYS[1], 'reason', 'transport close')
end
redis.call('HSET', KEYS[1], 'state', 'claimed', 'deadline', ARGV[3], 'claimer', ARGV[5])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
return sid
";

/// KEYS: session, rooms, waiting, socket index; ARGV: lease, pid.
/// Returns {conn, opened at, rooms...}, or nil.
const RESUME: &str = r"
local state, lease, conn, opened = unpack(redis.call('HMGET', KEYS[1], 'state', 'lease', 'conn', 'opened'))
if not (state == 'live' and lease == ARGV[1]) then
  if state ~= 'claimed' then return nil end
  redis.call('HSET', KEYS[1], 'state', 'live', 'lease', ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[2])
  redis.call('PERSIST', KEYS[1])
  redis.call('PERSIST', KEYS[2])
  redis.call('SET', KEYS[4], KEYS[1])
end
local reply = {conn, opened}
for _, room in ipairs(redis.call('SMEMBERS', KEYS[2])) do table.insert(reply, room) end
return reply
";

/// KEYS: session, rooms, waiting; ARGV: now ms, pid, expirer, grace ms.
/// Returns {conn, reason} of a session past its deadline, or nil. What is
/// left of it says who ended it, for a repeat, until the grace passes.
const EXPIRE: &str = r"
local state, deadline, conn, reason, expirer = unpack(redis.call('HMGET', KEYS[1], 'state', 'deadline', 'conn', 'reason', 'expirer'))
if state == 'expired' and expirer == ARGV[3] then return {conn, reason or ''} end
if not state or state == 'live' or state == 'expired' then
  redis.call('ZREM', KEYS[3], ARGV[2])
  return nil
end
if tonumber(deadline) > tonumber(ARGV[1]) then return nil end
redis.call('ZREM', KEYS[3], ARGV[2])
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[1], 'state', 'expired', 'expirer', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {conn, reason or ''}
";

/// KEYS: socket index, waiting; ARGV: node, deadline ms, reason, grace ms.
/// A session a dead node held: kept for its client like a lost connection.
/// Returns 1 when the session goes on (kept, or resumed elsewhere), 0 when
/// there is none.
const SUSPEND_LOST: &str = r"
local session = redis.call('GET', KEYS[1])
if not session then return 0 end
local state, lease = unpack(redis.call('HMGET', session, 'state', 'lease'))
if not state then return 0 end
if state ~= 'live' or string.sub(lease, 1, #ARGV[1] + 1) ~= ARGV[1] .. '-' then return 1 end
redis.call('HSET', session, 'state', 'waiting', 'deadline', ARGV[2], 'reason', ARGV[3])
redis.call('DEL', KEYS[1])
redis.call('ZADD', KEYS[2], ARGV[2], string.match(session, ':session:(.*)$'))
local until_ms = tonumber(ARGV[2]) + tonumber(ARGV[4])
redis.call('PEXPIREAT', session, until_ms)
redis.call('PEXPIREAT', string.gsub(session, ':session:', ':rooms:', 1), until_ms)
return 1
";

/// KEYS: socket index; ARGV: room, 1 to add or 0 to remove. The rooms key
/// is the session's, named in the index.
const ROOMS: &str = r"
local session = redis.call('GET', KEYS[1])
if not session then return 0 end
local rooms = string.gsub(session, ':session:', ':rooms:', 1)
if ARGV[2] == '1' then redis.call('SADD', rooms, ARGV[1]) else redis.call('SREM', rooms, ARGV[1]) end
return 1
";

pub struct RedisSessions {
    client: Client,
    /// `{prefix:recovery}`: the hash tag every key starts with.
    tag: String,
    leases: std::sync::atomic::AtomicU64,
    /// This node's id in the cluster: leases start with it, so the sessions
    /// of a node that died can be told apart.
    node: String,
}

impl RedisSessions {
    pub fn new(client: Client, prefix: &str, node: &str) -> Self {
        Self {
            client,
            tag: format!("{{{prefix}:recovery}}"),
            leases: std::sync::atomic::AtomicU64::new(0),
            node: node.to_owned(),
        }
    }

    fn session_key(&self, pid: &str) -> String {
        format!("{}:session:{pid}", self.tag)
    }

    fn rooms_key(&self, pid: &str) -> String {
        format!("{}:rooms:{pid}", self.tag)
    }

    fn waiting_key(&self) -> String {
        format!("{}:waiting", self.tag)
    }

    fn socket_key(&self, namespace: &str, socket_id: &str) -> String {
        format!("{}:socket:{namespace}:{socket_id}", self.tag)
    }

    fn lease(&self) -> Lease {
        self.leases
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1
    }

    fn lease_text(&self, lease: Lease) -> String {
        format!("{}-{lease}", self.node)
    }

    async fn eval<R: fred::types::FromValue>(
        &self,
        script: &str,
        keys: Vec<String>,
        arguments: Vec<String>,
    ) -> Option<R> {
        let run = || self.client.eval(script, keys.clone(), arguments.clone());
        match retried("a session script", REDIS_RETRIED_FOR, run).await {
            Ok(value) => Some(value),
            Err(error) => {
                tracing::warn!("session store in Redis failed: {error}");
                None
            }
        }
    }
}

fn epoch_ms(at: Instant) -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let from_now = at.saturating_duration_since(Instant::now());
    u64::try_from((now + from_now).as_millis()).unwrap_or(u64::MAX)
}

fn conn_json(conn: &Conn) -> String {
    serde_json::to_string(&RecordedConn::from(conn)).unwrap_or_default()
}

fn parse_conn(json: &str) -> Option<Conn> {
    serde_json::from_str::<RecordedConn>(json)
        .ok()
        .map(Conn::from)
}

#[async_trait]
impl SessionStore for RedisSessions {
    async fn open(&self, pid: &str, conn: &Conn, rooms: Vec<String>, opened_at: &str) -> Lease {
        let lease = self.lease();
        let keys = vec![
            self.session_key(pid),
            self.rooms_key(pid),
            self.socket_key(&conn.namespace, &conn.socket_id),
        ];
        let mut arguments = vec![
            conn.socket_id.clone(),
            conn.namespace.clone(),
            conn_json(conn),
            self.lease_text(lease),
            opened_at.to_owned(),
        ];
        arguments.extend(rooms);
        let _: Option<i64> = self.eval(OPEN, keys, arguments).await;
        lease
    }

    async fn suspend(
        &self,
        pid: &str,
        lease: Lease,
        rooms: Vec<String>,
        reason: &str,
        deadline: Instant,
        max_waiting: usize,
    ) -> Suspension {
        let Some(conn_keys) = self.socket_keys_of(pid).await else {
            return Suspension::Gone;
        };
        let keys = vec![
            self.session_key(pid),
            self.rooms_key(pid),
            self.waiting_key(),
            conn_keys,
        ];
        let mut arguments = vec![
            self.lease_text(lease),
            epoch_ms(deadline).to_string(),
            reason.to_owned(),
            pid.to_owned(),
            GRACE_MS.to_string(),
            max_waiting.to_string(),
        ];
        arguments.extend(rooms);
        match self.eval::<i64>(SUSPEND, keys, arguments).await {
            Some(1) => Suspension::Kept,
            Some(2) => Suspension::Full,
            _ => Suspension::Gone,
        }
    }

    async fn close(&self, pid: &str, lease: Lease) {
        let Some(socket_key) = self.socket_keys_of(pid).await else {
            return;
        };
        let keys = vec![self.session_key(pid), self.rooms_key(pid), socket_key];
        let _: Option<i64> = self.eval(CLOSE, keys, vec![self.lease_text(lease)]).await;
    }

    async fn claim(&self, namespace: &str, pid: &str, deadline: Instant) -> Option<String> {
        let keys = vec![self.session_key(pid), self.waiting_key()];
        let arguments = vec![
            namespace.to_owned(),
            epoch_ms(Instant::now()).to_string(),
            epoch_ms(deadline).to_string(),
            pid.to_owned(),
            self.lease_text(self.lease()),
        ];
        self.eval::<Option<String>>(CLAIM, keys, arguments)
            .await
            .flatten()
    }

    async fn resume(&self, pid: &str) -> Option<Session> {
        let socket_key = self.socket_keys_of(pid).await?;
        let lease = self.lease();
        let keys = vec![
            self.session_key(pid),
            self.rooms_key(pid),
            self.waiting_key(),
            socket_key,
        ];
        let arguments = vec![self.lease_text(lease), pid.to_owned()];
        let reply: Vec<String> = self
            .eval::<Option<Vec<String>>>(RESUME, keys, arguments)
            .await??;
        let [conn, opened_at, rooms @ ..] = reply.as_slice() else {
            return None;
        };
        Some(Session {
            conn: parse_conn(conn)?,
            rooms: rooms.to_vec(),
            lease,
            opened_at: opened_at.clone(),
        })
    }

    async fn opened_at(&self, pid: &str) -> Option<(String, String)> {
        match self.fields(pid, ["opened", "sid", "state"]).await? {
            [Some(opened_at), Some(socket_id), Some(state)] if state != "expired" => {
                Some((opened_at, socket_id))
            }
            _ => None,
        }
    }

    async fn room_changed(&self, namespace: &str, socket_id: &str, room: &str, joined: bool) {
        let keys = vec![self.socket_key(namespace, socket_id)];
        let arguments = vec![room.to_owned(), if joined { "1" } else { "0" }.to_owned()];
        let _: Option<i64> = self.eval(ROOMS, keys, arguments).await;
    }

    async fn suspend_lost(&self, node: &str, conn: &Conn, reason: &str, deadline: Instant) -> bool {
        let keys = vec![
            self.socket_key(&conn.namespace, &conn.socket_id),
            self.waiting_key(),
        ];
        let arguments = vec![
            node.to_owned(),
            epoch_ms(deadline).to_string(),
            reason.to_owned(),
            GRACE_MS.to_string(),
        ];
        self.eval::<i64>(SUSPEND_LOST, keys, arguments).await == Some(1)
    }

    async fn expired(&self, now: Instant) -> Vec<Expired> {
        let now_ms = epoch_ms(now);
        let expirer = self.lease_text(self.lease());
        let due: Result<Vec<String>, _> = self
            .client
            .zrangebyscore(
                self.waiting_key(),
                "-inf",
                now_ms as f64,
                false,
                Some((0, SWEEP_BATCH)),
            )
            .await;
        let mut expired = Vec::new();
        for pid in due.unwrap_or_default() {
            let keys = vec![
                self.session_key(&pid),
                self.rooms_key(&pid),
                self.waiting_key(),
            ];
            let arguments = vec![
                now_ms.to_string(),
                pid,
                expirer.clone(),
                GRACE_MS.to_string(),
            ];
            let reply: Option<Option<Vec<String>>> = self.eval(EXPIRE, keys, arguments).await;
            if let Some([conn, reason]) = reply
                .flatten()
                .and_then(|reply| <[String; 2]>::try_from(reply).ok())
                && let Some(conn) = parse_conn(&conn)
            {
                expired.push(Expired { conn, reason });
            }
        }
        expired
    }
}

impl RedisSessions {
    /// The socket index key of session `pid`, from its namespace and socket id.
    async fn socket_keys_of(&self, pid: &str) -> Option<String> {
        match self.fields(pid, ["ns", "sid"]).await? {
            [Some(namespace), Some(socket_id)] => Some(self.socket_key(&namespace, &socket_id)),
            _ => None,
        }
    }

    /// Fields of session `pid`, read again while Redis fails the read.
    async fn fields<const N: usize>(
        &self,
        pid: &str,
        names: [&str; N],
    ) -> Option<[Option<String>; N]> {
        let key = self.session_key(pid);
        let read = || {
            self.client
                .hmget::<Vec<Option<String>>, _, _>(&key, names.to_vec())
        };
        match retried("reading a session", REDIS_RETRIED_FOR, read).await {
            Ok(fields) => fields.try_into().ok(),
            Err(error) => {
                tracing::warn!("reading a session in Redis failed: {error}");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use fred::prelude::{Builder, ClientLike, Config};

    use super::*;
    use crate::cluster::test_redis::RedisServer;
    use crate::recovery::sessions::tests::{conn, later, suspended, suspended_until};

    /// Sessions on `server` whose commands time out after 200 ms.
    async fn sessions_on(server: &RedisServer) -> RedisSessions {
        let mut builder = Builder::from_config(Config::from_url(&server.url()).unwrap());
        builder.with_performance_config(|performance| {
            performance.default_command_timeout = Duration::from_millis(200);
        });
        let client = builder.build().unwrap();
        client.init().await.unwrap();
        RedisSessions::new(client, "test", "node-a")
    }

    /// Runs `step` while Redis is stopped for several command timeouts, as an
    /// overloaded Redis is: every attempt reaches it, and runs, at once
    /// when it answers again.
    async fn while_stalled<T>(server: &RedisServer, step: impl Future<Output = T>) -> T {
        server.pause();
        let (result, ()) = tokio::join!(step, async {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            server.resume();
        });
        result
    }

    #[tokio::test]
    async fn a_session_claimed_and_resumed_while_redis_stalls_comes_back_with_its_rooms() {
        let server = RedisServer::start();
        let sessions = sessions_on(&server).await;
        let lease = sessions.open("p", &conn(), Vec::new(), "0-1").await;
        let rooms = vec!["lobby".to_owned()];
        suspended(&sessions, "p", lease, rooms.clone()).await;

        let claimed = while_stalled(&server, sessions.claim("/", "p", later(60_000))).await;
        assert_eq!(
            claimed.as_deref(),
            Some("s1"),
            "the claim that ran first is ours"
        );
        let session = while_stalled(&server, sessions.resume("p"))
            .await
            .expect("the resume that ran first is ours");
        assert_eq!(session.rooms, rooms);
        assert_eq!(session.conn.socket_id, "s1");
        assert!(sessions.resume("p").await.is_none(), "resumed once");
    }

    #[tokio::test]
    async fn at_most_max_waiting_sessions_wait_across_the_cluster() {
        let server = RedisServer::start();
        let (here, there) = (sessions_on(&server).await, sessions_on(&server).await);
        async fn suspend(sessions: &RedisSessions, pid: &str, lease: Lease) -> Suspension {
            sessions
                .suspend(pid, lease, Vec::new(), "transport close", later(60_000), 2)
                .await
        }
        let (a, b) = (
            here.open("a", &conn(), Vec::new(), "0-1").await,
            there.open("b", &conn(), Vec::new(), "0-1").await,
        );
        assert_eq!(suspend(&here, "a", a).await, Suspension::Kept);
        assert_eq!(suspend(&there, "b", b).await, Suspension::Kept);
        let c = here.open("c", &conn(), Vec::new(), "0-1").await;
        assert_eq!(suspend(&here, "c", c).await, Suspension::Full);
        // Not kept, still live: its connection closes it.
        here.close("c", c).await;
        assert_eq!(here.opened_at("c").await, None);
        assert!(there.claim("/", "a", later(1000)).await.is_some());
        assert!(there.resume("a").await.is_some());
        let d = here.open("d", &conn(), Vec::new(), "0-1").await;
        assert_eq!(suspend(&here, "d", d).await, Suspension::Kept);
    }

    #[tokio::test]
    async fn a_session_expired_once_is_handed_to_its_sweep_again_and_to_no_other() {
        let server = RedisServer::start();
        let sessions = sessions_on(&server).await;
        let lease = sessions.open("p", &conn(), Vec::new(), "0-1").await;
        suspended_until(&sessions, "p", lease, "ping timeout", later(10)).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let expire = |expirer: &str| {
            let keys = vec![
                sessions.session_key("p"),
                sessions.rooms_key("p"),
                sessions.waiting_key(),
            ];
            let now = epoch_ms(Instant::now()).to_string();
            let arguments = vec![
                now,
                "p".to_owned(),
                expirer.to_owned(),
                GRACE_MS.to_string(),
            ];
            sessions.eval::<Option<Vec<String>>>(EXPIRE, keys, arguments)
        };
        let first = expire("sweep-1")
            .await
            .flatten()
            .expect("past its deadline");
        assert_eq!(first[1], "ping timeout");
        assert_eq!(expire("sweep-1").await.flatten(), Some(first), "its repeat");
        assert_eq!(expire("sweep-2").await.flatten(), None, "another sweep");
        assert!(sessions.expired(later(1000)).await.is_empty());
        assert_eq!(
            sessions.opened_at("p").await,
            None,
            "not offered for recovery"
        );
        assert_eq!(sessions.claim("/", "p", later(1000)).await, None);
    }
}
