//! Connection-state recovery: a client that lost its connection and comes
//! back within `[server.recovery] max_disconnection_ms` gets its socket id,
//! its rooms and every event it missed, exactly once and in order, before
//! anything new (Socket.IO's protocol: `pid` in the CONNECT reply, an offset
//! as each event's last argument, both in the reconnect's `auth`).
//!
//! - [`journal`]: every emit gets its offset and is kept for the window.
//! - [`sessions`]: what a socket's client gets back, and when it is over.
//!
//! To plugins a recovered socket never left: its `on-disconnect` runs only
//! once the session is over (its client left for good, or did not come back
//! in time), and a recovery calls `on-recovered` instead of `on-connect`.

pub mod journal;
pub mod redis_sessions;
pub mod sessions;
pub mod stream;

use std::sync::Arc;
use std::time::Duration;

use socketioxide::recovery::ResumeRequest;
use socketioxide::socket::{DisconnectReason, Sid};
use tokio::time::Instant;

use crate::log_output::ThrottledWarning;
use crate::metrics;

pub use journal::{CatchUp, Emit, Journal, LocalDelivery, MemoryJournal, Missed, PAGE, Page};
pub use redis_sessions::RedisSessions;
pub use sessions::{Expired, Lease, MemorySessions, Session, SessionStore, Suspension};
pub use stream::StreamJournal;

/// How often sessions past their deadline are looked for.
const EXPIRY_SWEEP: Duration = Duration::from_millis(500);

/// How long recovery's commands are tried again while Redis fails them.
/// Under load a command can outlast its timeout although Redis runs it:
/// giving up at once ended sessions that could be made whole, and their
/// clients, told to go, did not come back.
const REDIS_RETRIED_FOR: Duration = Duration::from_secs(10);

/// Whether a socket (namespace, socket id) is connected to this node.
pub type ConnectedHere = Box<dyn Fn(&str, &str) -> bool + Send + Sync>;

pub struct Recovery {
    pub journal: Arc<dyn Journal>,
    pub sessions: Arc<dyn SessionStore>,
    /// How long a suspended session waits for its client.
    pub window: Duration,
    /// How many sessions may wait for their client at once.
    pub max_waiting: usize,
    /// How long a claimed session waits for its client's CONNECT to complete.
    connect_timeout: Duration,
    /// Whether sessions outlive this node (kept in Redis): a node shutting
    /// down then leaves its sockets' sessions for their clients to recover
    /// elsewhere.
    pub durable: bool,
    connected_here: ConnectedHere,
    /// Sessions not kept for want of room, warned of with a count.
    not_kept: ThrottledWarning,
}

impl Recovery {
    pub fn new(
        journal: Arc<dyn Journal>,
        sessions: Arc<dyn SessionStore>,
        window: Duration,
        max_waiting: usize,
        connect_timeout: Duration,
        durable: bool,
        connected_here: ConnectedHere,
    ) -> Arc<Self> {
        Arc::new(Self {
            journal,
            sessions,
            window,
            max_waiting,
            connect_timeout,
            durable,
            connected_here,
            not_kept: ThrottledWarning::default(),
        })
    }

    /// A lost connection's session in `namespace` was not kept: as many as
    /// `max_waiting` wait already (a flood of lost connections past it is
    /// one warning with a count, not one each).
    pub fn not_kept(&self, namespace: &str) {
        metrics::recovery(namespace, "not_kept");
        if let Some(count) = self.not_kept.occurred() {
            tracing::warn!(
                "{count} lost connections' sessions were not kept for their clients: {} sessions wait already (server.recovery.max_waiting_sessions); their plugins saw them go at once",
                self.max_waiting
            );
        }
    }

    /// socketioxide's question: which socket id does a client asking to
    /// resume `request.pid` get back? None when the session is unknown, over,
    /// or missed emits the journal no longer keeps.
    pub async fn claim(&self, request: ResumeRequest) -> Option<Sid> {
        let (opened_at, socket_id) = self.sessions.opened_at(&request.pid).await?;
        // Its old connection is still here (this node has not noticed it is
        // gone): socketioxide cannot give its id to a second socket. The
        // client starts over; the old one's session ends when it times out.
        if (self.connected_here)(&request.ns, &socket_id) {
            return None;
        }
        // A client that received nothing since its session began missed
        // whatever came after the session's start.
        let offset = request.offset.unwrap_or(opened_at);
        if !self.journal.covers(&offset).await {
            // Its client starts over with a new socket and will not ask for
            // this session again: claimed for no one, it ends at the next
            // sweep instead of when its window closes.
            self.sessions
                .claim(&request.ns, &request.pid, Instant::now())
                .await;
            return None;
        }
        let deadline = Instant::now() + self.connect_timeout;
        let socket_id = self
            .sessions
            .claim(&request.ns, &request.pid, deadline)
            .await?;
        socket_id.parse().ok()
    }

    /// Keeps the session of a socket of `node`, which died, for its client
    /// to recover elsewhere. False when it has none.
    pub async fn suspend_lost(&self, node: &str, conn: &crate::bindings::Conn) -> bool {
        let deadline = Instant::now() + self.window;
        self.sessions
            .suspend_lost(node, conn, "server node lost", deadline)
            .await
    }

    /// Hands every session past its deadline to `gone`, for as long as the
    /// process runs.
    pub fn expire<F, Fut>(self: Arc<Self>, gone: F)
    where
        F: Fn(Expired) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send,
    {
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(EXPIRY_SWEEP);
            loop {
                ticker.tick().await;
                for expired in self.sessions.expired(Instant::now()).await {
                    gone(expired).await;
                }
            }
        });
    }
}

/// Whether a socket that went for `reason` may come back to its session: its
/// connection was lost, not closed on purpose by either side.
pub fn recoverable(reason: &DisconnectReason) -> bool {
    matches!(
        reason,
        DisconnectReason::TransportClose
            | DisconnectReason::TransportError
            | DisconnectReason::HeartbeatTimeout
            | DisconnectReason::SlowClient
            | DisconnectReason::ClosingServer
    )
}
