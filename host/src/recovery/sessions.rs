//! Sessions: what a socket's client gets back when it recovers, kept from
//! connect until its client left for good or did not come back in time.
//!
//! A session is *live* while its socket is connected, held by a lease that
//! only that connection knows (so a connection that was replaced cannot
//! change it). When the connection is lost it is *suspended* until its
//! deadline. A client that comes back with its `pid` *claims* it (for at most
//! the connect timeout), then *resumes* it as a new live lease. A suspended
//! or claimed session past its deadline has *expired*: its plugins then see
//! the disconnect they were spared so far.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::bindings::Conn;

/// Identifies one connection's hold on a session.
pub type Lease = u64;

/// What a recovering socket gets back.
#[derive(Debug, Clone)]
pub struct Session {
    pub conn: Conn,
    /// Every room it was in, the host's included.
    pub rooms: Vec<String>,
    pub lease: Lease,
    /// The journal's offset when it was opened: a client that received no
    /// event since (and so has no offset) missed what came after it.
    pub opened_at: String,
}

/// What became of a session whose connection was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suspension {
    /// It waits for its client (or another connection claimed it already).
    Kept,
    /// It is not this connection's to keep any more, or unknown.
    Gone,
    /// As many sessions wait already as may: not kept.
    Full,
}

/// A session whose client did not come back: its plugins see `reason`.
#[derive(Debug, Clone)]
pub struct Expired {
    pub conn: Conn,
    pub reason: String,
}

#[async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// A new socket's session, live, in `rooms`, opened at the journal's
    /// offset `opened_at`.
    async fn open(&self, pid: &str, conn: &Conn, rooms: Vec<String>, opened_at: &str) -> Lease;
    /// The offset session `pid` was opened at, and its socket id.
    async fn opened_at(&self, pid: &str) -> Option<(String, String)>;
    /// Its connection was lost: kept until `deadline` with its `rooms`,
    /// unless `max_waiting` sessions wait already, or the session is no
    /// longer `lease`'s (it was resumed elsewhere).
    async fn suspend(
        &self,
        pid: &str,
        lease: Lease,
        rooms: Vec<String>,
        reason: &str,
        deadline: Instant,
        max_waiting: usize,
    ) -> Suspension;
    /// Its client left for good.
    async fn close(&self, pid: &str, lease: Lease);
    /// A client asks to resume `pid` in `namespace`: the socket id to give
    /// it back, if the session is suspended there and not expired. It is
    /// then held for it until `deadline` (the connect timeout).
    async fn claim(&self, namespace: &str, pid: &str, deadline: Instant) -> Option<String>;
    /// Completes a claim: the session, live again under a new lease.
    async fn resume(&self, pid: &str) -> Option<Session>;
    /// Removes the sessions past their deadline, for their plugins to see
    /// them go.
    async fn expired(&self, now: Instant) -> Vec<Expired>;
    /// A plugin joined a socket to `room` (`joined`) or made it leave, so the
    /// session knows its rooms even if its node dies. A no-op where sessions
    /// die with their node.
    async fn room_changed(&self, _namespace: &str, _socket_id: &str, _room: &str, _joined: bool) {}
    /// The session of a socket of `node`, which died: kept until `deadline`
    /// for its client, as if its connection was lost. False when it has none
    /// (its plugins then see it go at once).
    async fn suspend_lost(
        &self,
        _node: &str,
        _conn: &Conn,
        _reason: &str,
        _deadline: Instant,
    ) -> bool {
        false
    }
}

enum State {
    Live(Lease),
    /// Suspended, or claimed (`claimed`) by a client resuming it.
    Waiting {
        deadline: Instant,
        reason: String,
        rooms: Vec<String>,
        claimed: bool,
    },
}

struct Entry {
    conn: Conn,
    opened_at: String,
    state: State,
}

/// The sessions of a node that runs alone.
#[derive(Default)]
pub struct MemorySessions {
    sessions: Mutex<Entries>,
    leases: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
struct Entries {
    by_pid: HashMap<String, Entry>,
    /// How many are [`State::Waiting`].
    waiting: usize,
}

impl MemorySessions {
    fn lease(&self) -> Lease {
        self.leases
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl SessionStore for MemorySessions {
    async fn open(&self, pid: &str, conn: &Conn, _rooms: Vec<String>, opened_at: &str) -> Lease {
        let lease = self.lease();
        let entry = Entry {
            conn: conn.clone(),
            opened_at: opened_at.to_owned(),
            state: State::Live(lease),
        };
        let mut sessions = self.sessions();
        let replaced = sessions.by_pid.insert(pid.to_owned(), entry);
        if replaced.is_some_and(|entry| matches!(entry.state, State::Waiting { .. })) {
            sessions.waiting -= 1;
        }
        lease
    }

    async fn opened_at(&self, pid: &str) -> Option<(String, String)> {
        self.sessions()
            .by_pid
            .get(pid)
            .map(|entry| (entry.opened_at.clone(), entry.conn.socket_id.clone()))
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
        let mut sessions = self.sessions();
        let waiting = sessions.waiting;
        let Some(entry) = sessions.by_pid.get_mut(pid) else {
            return Suspension::Gone;
        };
        if !matches!(entry.state, State::Live(held) if held == lease) {
            return Suspension::Gone;
        }
        if waiting >= max_waiting {
            return Suspension::Full;
        }
        entry.state = State::Waiting {
            deadline,
            reason: reason.to_owned(),
            rooms,
            claimed: false,
        };
        sessions.waiting += 1;
        Suspension::Kept
    }

    async fn close(&self, pid: &str, lease: Lease) {
        let mut sessions = self.sessions();
        if sessions
            .by_pid
            .get(pid)
            .is_some_and(|entry| matches!(entry.state, State::Live(held) if held == lease))
        {
            sessions.by_pid.remove(pid);
        }
    }

    async fn claim(&self, namespace: &str, pid: &str, deadline: Instant) -> Option<String> {
        let mut sessions = self.sessions();
        let entry = sessions.by_pid.get_mut(pid)?;
        if entry.conn.namespace != namespace {
            return None;
        }
        match &mut entry.state {
            State::Waiting {
                deadline: until,
                claimed: claimed @ false,
                ..
            } if *until > Instant::now() => {
                *claimed = true;
                *until = deadline;
                Some(entry.conn.socket_id.clone())
            }
            _ => None,
        }
    }

    async fn resume(&self, pid: &str) -> Option<Session> {
        let lease = self.lease();
        let mut sessions = self.sessions();
        let entry = sessions.by_pid.get_mut(pid)?;
        let State::Waiting {
            rooms,
            claimed: true,
            ..
        } = &mut entry.state
        else {
            return None;
        };
        let rooms = std::mem::take(rooms);
        entry.state = State::Live(lease);
        let session = Session {
            conn: entry.conn.clone(),
            rooms,
            lease,
            opened_at: entry.opened_at.clone(),
        };
        sessions.waiting -= 1;
        Some(session)
    }

    async fn expired(&self, now: Instant) -> Vec<Expired> {
        let mut expired = Vec::new();
        let mut sessions = self.sessions();
        sessions.by_pid.retain(|_, entry| match &entry.state {
            State::Waiting {
                deadline, reason, ..
            } if *deadline <= now => {
                expired.push(Expired {
                    conn: entry.conn.clone(),
                    reason: reason.clone(),
                });
                false
            }
            _ => true,
        });
        sessions.waiting -= expired.len();
        expired
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::time::Duration;

    use super::*;

    pub(in crate::recovery) fn conn() -> Conn {
        Conn {
            socket_id: "s1".to_owned(),
            namespace: "/".to_owned(),
            auth: "{}".to_owned(),
            user_id: None,
        }
    }

    /// Suspends a session in `rooms` for a minute (its connection closed),
    /// with no bound on the sessions waiting, and checks it is kept.
    pub(in crate::recovery) async fn suspended(
        sessions: &impl SessionStore,
        pid: &str,
        lease: Lease,
        rooms: Vec<String>,
    ) {
        let suspension = sessions
            .suspend(
                pid,
                lease,
                rooms,
                "transport close",
                later(60_000),
                usize::MAX,
            )
            .await;
        assert_eq!(suspension, Suspension::Kept);
    }

    /// Suspends a session in no room until `deadline` for `reason`, with no
    /// bound on the sessions waiting, and checks it is kept.
    pub(in crate::recovery) async fn suspended_until(
        sessions: &impl SessionStore,
        pid: &str,
        lease: Lease,
        reason: &str,
        deadline: Instant,
    ) {
        let suspension = sessions
            .suspend(pid, lease, Vec::new(), reason, deadline, usize::MAX)
            .await;
        assert_eq!(suspension, Suspension::Kept);
    }

    pub(in crate::recovery) fn later(ms: u64) -> Instant {
        Instant::now() + Duration::from_millis(ms)
    }

    #[tokio::test]
    async fn a_suspended_session_is_claimed_once_and_resumed_with_its_rooms() {
        let sessions = MemorySessions::default();
        let lease = sessions.open("p", &conn(), Vec::new(), "0").await;
        let rooms = vec!["lobby".to_owned()];
        suspended(&sessions, "p", lease, rooms.clone()).await;
        assert_eq!(
            sessions.claim("/chat", "p", later(1000)).await,
            None,
            "another namespace"
        );
        assert_eq!(
            sessions.claim("/", "p", later(1000)).await.as_deref(),
            Some("s1")
        );
        assert_eq!(
            sessions.claim("/", "p", later(1000)).await,
            None,
            "claimed once"
        );
        let session = sessions.resume("p").await.expect("claimed");
        assert_eq!(session.rooms, rooms);
        assert_ne!(session.lease, lease);
        // The old connection's lease no longer changes it.
        sessions.close("p", lease).await;
        assert!(
            sessions.resume("p").await.is_none(),
            "live again, not claimable"
        );
        assert!(sessions.expired(later(120_000)).await.is_empty());
    }

    #[tokio::test]
    async fn a_session_not_resumed_in_time_expires_with_its_reason() {
        let sessions = MemorySessions::default();
        let lease = sessions.open("p", &conn(), Vec::new(), "0").await;
        suspended_until(&sessions, "p", lease, "ping timeout", later(10)).await;
        assert!(sessions.expired(Instant::now()).await.is_empty());
        let expired = sessions.expired(later(20)).await;
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].reason, "ping timeout");
        assert_eq!(sessions.claim("/", "p", later(1000)).await, None);
    }

    #[tokio::test]
    async fn at_most_max_waiting_sessions_wait_and_each_resumed_or_expired_makes_room() {
        let sessions = MemorySessions::default();
        let mut leases = Vec::new();
        for pid in ["a", "b", "c"] {
            leases.push(sessions.open(pid, &conn(), Vec::new(), "0").await);
        }
        let suspend = |pid, lease, deadline| {
            sessions.suspend(pid, lease, Vec::new(), "transport close", deadline, 2)
        };
        assert_eq!(suspend("a", leases[0], later(10)).await, Suspension::Kept);
        assert_eq!(
            suspend("b", leases[1], later(60_000)).await,
            Suspension::Kept
        );
        assert_eq!(
            suspend("c", leases[2], later(60_000)).await,
            Suspension::Full
        );
        // Not kept, still live: its connection closes it.
        sessions.close("c", leases[2]).await;
        assert_eq!(sessions.opened_at("c").await, None);

        assert_eq!(sessions.expired(later(20)).await.len(), 1);
        let lease = sessions.open("d", &conn(), Vec::new(), "0").await;
        assert_eq!(suspend("d", lease, later(60_000)).await, Suspension::Kept);
        assert!(sessions.claim("/", "b", later(1000)).await.is_some());
        assert!(sessions.resume("b").await.is_some());
        let lease = sessions.open("e", &conn(), Vec::new(), "0").await;
        assert_eq!(suspend("e", lease, later(60_000)).await, Suspension::Kept);
        let lease = sessions.open("f", &conn(), Vec::new(), "0").await;
        assert_eq!(suspend("f", lease, later(60_000)).await, Suspension::Full);
    }

    #[tokio::test]
    async fn a_closed_session_cannot_be_claimed() {
        let sessions = MemorySessions::default();
        let lease = sessions.open("p", &conn(), Vec::new(), "0").await;
        sessions.close("p", lease).await;
        assert_eq!(
            sessions
                .suspend(
                    "p",
                    lease,
                    Vec::new(),
                    "transport close",
                    later(1000),
                    usize::MAX
                )
                .await,
            Suspension::Gone
        );
        assert_eq!(sessions.claim("/", "p", later(1000)).await, None);
    }
}
