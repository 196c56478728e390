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

use async_trait::async_trait;
use fred::prelude::{Client, HashesInterface, LuaInterface, SortedSetsInterface};
use tokio::time::Instant;

use super::sessions::{Expired, Lease, Session, SessionStore};
use crate::bindings::Conn;
use crate::cluster::RecordedConn;

/// Sessions handed to the sweep at most per pass.
const SWEEP_BATCH: i64 = 100;
/// How long the keys of a session waiting for its client outlive its
/// deadline, so a sweep that runs late still finds them.
const GRACE_MS: u64 = 60_000;

/// KEYS: session, rooms, socket index; ARGV: socket id, namespace, conn,
/// lease, opened at, rooms...
const OPEN: &str = r"
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('HSET', KEYS[1], 'sid', ARGV[1], 'ns', ARGV[2], 'conn', ARGV[3], 'state', 'live', 'lease', ARGV[4], 'opened', ARGV[5])
redis.call('SET', KEYS[3], KEYS[1])
for i = 6, #ARGV do redis.call('SADD', KEYS[2], ARGV[i]) end
return 1
";

/// KEYS: session, rooms, waiting, socket index; ARGV: lease, deadline ms,
/// reason, pid, grace ms, rooms... Returns 1 when the session goes on (kept
/// here, or claimed by another connection), 0 when it is unknown.
const SUSPEND: &str = r"
local state, lease = unpack(redis.call('HMGET', KEYS[1], 'state', 'lease'))
if not state then return 0 end
if state ~= 'live' or lease ~= ARGV[1] then return 1 end
redis.call('HSET', KEYS[1], 'state', 'waiting', 'deadline', ARGV[2], 'reason', ARGV[3])
redis.call('DEL', KEYS[2], KEYS[4])
for i = 6, #ARGV do redis.call('SADD', KEYS[2], ARGV[i]) end
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

/// KEYS: session, waiting; ARGV: namespace, now ms, deadline ms, pid.
/// Returns the socket id, or nil.
const CLAIM: &str = r"
local state, ns, deadline, sid = unpack(redis.call('HMGET', KEYS[1], 'state', 'ns', 'deadline', 'sid'))
if not state or ns ~= ARGV[1] then return nil end
if state == 'waiting' and tonumber(deadline) <= tonumber(ARGV[2]) then return nil end
if state == 'claimed' then return nil end
if state == 'live' then
  redis.call('HSET', KEYS[1], 'reason', 'transport close')
end
redis.call('HSET', KEYS[1], 'state', 'claimed', 'deadline', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
return sid
";

/// KEYS: session, rooms, waiting, socket index; ARGV: lease, pid.
/// Returns {conn, opened at, rooms...}, or nil.
const RESUME: &str = r"
local state, conn, opened = unpack(redis.call('HMGET', KEYS[1], 'state', 'conn', 'opened'))
if state ~= 'claimed' then return nil end
redis.call('HSET', KEYS[1], 'state', 'live', 'lease', ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[2])
redis.call('PERSIST', KEYS[1])
redis.call('PERSIST', KEYS[2])
redis.call('SET', KEYS[4], KEYS[1])
local reply = {conn, opened}
for _, room in ipairs(redis.call('SMEMBERS', KEYS[2])) do table.insert(reply, room) end
return reply
";

/// KEYS: session, rooms, waiting; ARGV: now ms, pid. Returns {conn,
/// reason} of a session past its deadline, which is removed, or nil.
const EXPIRE: &str = r"
local state, deadline, conn, reason = unpack(redis.call('HMGET', KEYS[1], 'state', 'deadline', 'conn', 'reason'))
if not state or state == 'live' then
  redis.call('ZREM', KEYS[3], ARGV[2])
  return nil
end
if tonumber(deadline) > tonumber(ARGV[1]) then return nil end
redis.call('ZREM', KEYS[3], ARGV[2])
redis.call('DEL', KEYS[1], KEYS[2])
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
        match self.client.eval(script, keys, arguments).await {
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
    ) -> bool {
        let Some(conn_keys) = self.socket_keys_of(pid).await else {
            return false;
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
        ];
        arguments.extend(rooms);
        self.eval::<i64>(SUSPEND, keys, arguments).await == Some(1)
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
        let fields: Vec<Option<String>> = self
            .client
            .hmget(self.session_key(pid), vec!["opened", "sid"])
            .await
            .ok()?;
        match fields.as_slice() {
            [Some(opened_at), Some(socket_id)] => Some((opened_at.clone(), socket_id.clone())),
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
            let arguments = vec![now_ms.to_string(), pid];
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
        let fields: Result<Vec<Option<String>>, _> = self
            .client
            .hmget(self.session_key(pid), vec!["ns", "sid"])
            .await;
        match fields.ok()?.as_slice() {
            [Some(namespace), Some(socket_id)] => Some(self.socket_key(namespace, socket_id)),
            _ => None,
        }
    }
}
