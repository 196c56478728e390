//! Socket.IO on axum via socketioxide: one namespace per manifest namespace,
//! plugins asked on connect ([`Namespace::admit`]), events queued per socket and
//! handled in order ([`connection`]) within their connection's rates ([`rates`]).

mod budget;
mod connection;
mod job_queue;
mod rates;
mod request_head;
mod room_names;
mod routes;
mod sockets;

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use engineioxide::config::IncomingPace;
use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;
use socketioxide::handler::{ConnectHandler, FromConnectParts, Value};
use socketioxide::socket::Socket;
use socketioxide::{ParserConfig, SocketIo, SocketIoBuilder};
use socketioxide_core::adapter::DefinedAdapter;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::bindings::Conn;
use crate::cluster::{Backoff, NodeLiveness};
use crate::identity::{Identity, IdentityError, Verifier, bearer_token};
use crate::manifest::{self, Rate, ServerSettings};
use crate::recovery::{Lease, Recovery, Session};
pub use request_head::{SessionDoor, SocketIoPath, admit_session, own_request_head};
pub use room_names::{
    EVERY_SOCKET, RoomNameError, check_audience, check_membership, is_reserved, socket_room,
    user_room,
};
pub use routes::{NamespaceRoutes, Routes};
pub use sockets::{
    AckFailure, Audience, Membership, NodeSockets, PendingAck, PluginRooms, Sockets, SocketsError,
};

/// Packets that may wait for one client, whatever their size.
const MAX_OUTBOUND_PACKETS: usize = 4096;
/// What a WebSocket reads at a time (engineioxide's default is 4 KiB); held
/// while a connection reads, released while it has nothing to read. A larger
/// frame is still read whole, into a buffer reserved for it, this many bytes
/// a read.
const WS_READ_BUFFER_BYTES: usize = 1024;
/// Binary attachments one event may declare. Each waits, held by the
/// connection, until the last has come; socketioxide's default (10,000)
/// let a connection hold half a megabyte of them one byte each.
const MAX_ATTACHMENTS: usize = 1000;

/// Builds the Socket.IO layer and its handle from the `[server]` settings,
/// on the adapter `builder` was given.
pub fn socket_io<A: Adapter>(
    mut builder: SocketIoBuilder<A>,
    settings: &ServerSettings,
) -> (socketioxide::layer::SocketIoLayer<A>, SocketIo<A>) {
    let transport_limit = manifest::transport_limit(settings.max_payload_bytes);
    let frame_limit = usize::try_from(transport_limit).unwrap_or(usize::MAX);
    let pace = |rate: Rate| {
        IncomingPace::new(rate.per_second, rate.burst).on_pause(crate::metrics::read_paced)
    };
    // A client flooding tiny packets (pongs, noops, pings) is read at the
    // pace, not as fast as it sends: two such connections took 1.8 cores.
    if let Some(rate) = settings.connections.packets {
        builder = builder.incoming_pace(pace(rate));
    }
    // Bytes too: large packets, or a WebSocket message sent as endless empty
    // fragments (never a packet, never nearer the message size limit), kept
    // a core busy reading one connection.
    if let Some(rate) = settings.connections.bytes {
        builder = builder.incoming_byte_pace(pace(rate));
    }
    builder
        // An event's attachments wait whole until the last one comes: bounded
        // as its frames are, or a client declaring one more than it sends had
        // the node hold 10 MB per connection (socketioxide's default) until the
        // packet's completion timeout, a minute. Past it, the connection is closed.
        .with_parser(
            ParserConfig::common()
                .max_incoming_binary_buf_size(frame_limit)
                .max_incoming_binaries(MAX_ATTACHMENTS),
        )
        .req_path(settings.path.clone())
        .ping_interval(settings.ping_interval)
        .ping_timeout(settings.ping_timeout)
        .connect_timeout(settings.connections.connect_timeout)
        // Events over `max_payload_bytes` get a clear error from the host; only
        // frames far beyond it are refused by the transport itself.
        .max_payload(transport_limit)
        // A client that cannot keep up is disconnected (reason "client did not
        // keep up with the packets sent to it"), never left connected while its
        // events are dropped: the bound is in bytes; the packet count only
        // backs it up.
        .max_buffer_bytes(settings.max_outbound_bytes)
        .max_buffer_size(MAX_OUTBOUND_PACKETS)
        .write_timeout(settings.connections.write_timeout)
        .ws_min_write_interval(settings.min_write_interval)
        .ws_write_observer(crate::metrics::websocket_written)
        .ws_max_message_size(frame_limit)
        .ws_max_frame_size(frame_limit)
        .ws_read_buffer_size(WS_READ_BUFFER_BYTES)
        .build_layer()
}

/// Completes once a namespace is served: at once in memory, after the Redis
/// subscriptions for a cluster adapter.
pub trait NamespaceReady: Send + 'static {
    fn ready(self) -> impl Future<Output = Result<(), String>> + Send;
}

impl NamespaceReady for () {
    async fn ready(self) -> Result<(), String> {
        Ok(())
    }
}

impl<D: socketioxide_redis::drivers::Driver> NamespaceReady for socketioxide_redis::InitRes<D> {
    async fn ready(self) -> Result<(), String> {
        self.await.map_err(|error| error.to_string())
    }
}

type AddNamespace = Box<dyn Fn(&str, Arc<Namespace>) + Send + Sync>;

/// The namespaces this node serves. A manifest change swaps their routes and
/// adds new ones; a namespace no plugin serves any more keeps its connections
/// and answers every event with `unknown_event`.
pub struct Namespaces {
    served: Mutex<HashMap<String, Arc<Namespace>>>,
    add: AddNamespace,
    limits: SocketLimits,
    liveness: Option<Arc<NodeLiveness>>,
    verifier: Option<Arc<Verifier>>,
    recovery: Option<Arc<Recovery>>,
    /// Every socket's task, so shutdown can wait for them.
    connections: TaskTracker,
    /// Cancelled at shutdown: each socket then has its disconnect handled.
    closing: CancellationToken,
    /// Set at shutdown when other nodes are alive to recover this node's
    /// sessions: its sockets' sessions are then left to their clients.
    hand_over: Arc<AtomicBool>,
}

impl Namespaces {
    /// Serves every namespace of `routes`, waiting until each is ready.
    /// `verifier`: sockets must present a valid token (unless their namespace
    /// is anonymous); `None`: identities are not verified.
    pub async fn serve<A>(
        io: &SocketIo<A>,
        routes: &Routes,
        limits: SocketLimits,
        liveness: Option<Arc<NodeLiveness>>,
        verifier: Option<Arc<Verifier>>,
        recovery: Option<Arc<Recovery>>,
    ) -> Arc<Self>
    where
        A: Adapter + DefinedAdapter,
        A::InitRes: NamespaceReady,
    {
        let mut served = HashMap::new();
        let namespaces = Self {
            served: Mutex::new(HashMap::new()),
            add: Box::new({
                let io = io.clone();
                move |path, namespace| {
                    let (io, path) = (io.clone(), path.to_owned());
                    tokio::spawn(async move { serve_namespace(&io, &path, namespace).await });
                }
            }),
            limits,
            liveness,
            verifier,
            recovery,
            connections: TaskTracker::new(),
            closing: CancellationToken::new(),
            hand_over: Arc::new(AtomicBool::new(false)),
        };
        for (path, routes) in routes.namespaces() {
            let namespace = namespaces.namespace(routes.clone());
            serve_namespace(io, path, namespace.clone()).await;
            served.insert(path.clone(), namespace);
        }
        *namespaces
            .served
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = served;
        Arc::new(namespaces)
    }

    fn namespace(&self, routes: Arc<NamespaceRoutes>) -> Arc<Namespace> {
        Arc::new(Namespace {
            routes: ArcSwap::new(routes),
            limits: self.limits,
            liveness: self.liveness.clone(),
            verifier: self.verifier.clone(),
            recovery: self.recovery.clone(),
            connections: self.connections.clone(),
            closing: self.closing.clone(),
            hand_over: self.hand_over.clone(),
        })
    }

    /// For shutdown: has the plugins see every socket of this node
    /// disconnect, after the events each had sent, while the namespaces are
    /// still served: their `on-disconnect` can still reach sockets on other
    /// nodes (a user going offline), which it cannot once the transport is
    /// closed. Waits at most `grace`. Once every socket is handled, the node
    /// leaves the cluster; with some left, it keeps beating until it exits, so
    /// the others clean up after it only once it has stopped. The sockets stay
    /// connected, to be closed by the transport.
    pub async fn disconnect_all(&self, grace: Duration) {
        // Sessions kept in Redis are left for their clients to recover on
        // another node, if there is one: the last node ends them itself.
        let durable = self
            .recovery
            .as_ref()
            .is_some_and(|recovery| recovery.durable);
        if let (true, Some(liveness)) = (durable, &self.liveness) {
            self.hand_over
                .store(liveness.others_alive().await, Ordering::Release);
        }
        self.closing.cancel();
        self.connections.close();
        if tokio::time::timeout(grace, self.connections.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                sockets = self.connections.len(),
                "plugins still handling disconnects after {grace:?}; closing anyway"
            );
        } else if let Some(liveness) = &self.liveness {
            liveness.leave().await;
        }
    }

    /// Routes events by `routes` from now on.
    pub fn apply(&self, routes: &Routes) {
        let mut served = self
            .served
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for (path, namespace) in served.iter() {
            let routes = routes.namespace(path).cloned().unwrap_or_default();
            namespace.routes.store(routes);
        }
        for (path, routes) in routes.namespaces() {
            if !served.contains_key(path) {
                let namespace = self.namespace(routes.clone());
                (self.add)(path, namespace.clone());
                served.insert(path.clone(), namespace);
            }
        }
    }

    /// Runs the plugins' `on-disconnect` for a socket that is not connected
    /// here: one of a node that died, or whose session expired.
    pub async fn disconnect_gone(&self, conn: &Conn, reason: &str) {
        let namespace = self
            .served
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&conn.namespace)
            .cloned();
        if let Some(namespace) = namespace {
            namespace.disconnect_plugins(conn, reason).await;
        }
    }

    /// Sockets connected to this node.
    pub fn sockets(&self) -> usize {
        self.connections.len()
    }

    pub fn paths(&self) -> Vec<String> {
        self.served
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .keys()
            .cloned()
            .collect()
    }
}

/// Serves `namespace` at `path` once its adapter is ready. With Redis, a
/// subscription that fails (Redis slow or away) is retried with backoff:
/// socketioxide serves the namespace only once one succeeded.
async fn serve_namespace<A>(io: &SocketIo<A>, path: &str, namespace: Arc<Namespace>)
where
    A: Adapter + DefinedAdapter,
    A::InitRes: NamespaceReady,
{
    let mut backoff = Backoff::new();
    while let Err(error) = register(io, path, namespace.clone()).ready().await {
        let delay = backoff.delay();
        tracing::warn!(
            namespace = %path,
            "cannot subscribe to the namespace's Redis channels ({error}); retrying in {} ms",
            delay.as_millis()
        );
        tokio::time::sleep(delay).await;
    }
}

fn register<A: Adapter + DefinedAdapter>(
    io: &SocketIo<A>,
    path: &str,
    namespace: Arc<Namespace>,
) -> A::InitRes {
    let admit = {
        let namespace = namespace.clone();
        move |socket: SocketRef<A>, auth: HandshakeAuth| {
            let namespace = namespace.clone();
            let span =
                tracing::info_span!("connect", namespace = %socket.ns(), socket = %socket.id);
            async move { namespace.admit(socket, auth).await }.instrument(span)
        }
    };
    let connected = move |socket: SocketRef<A>| {
        connection::start(socket, namespace.clone());
        std::future::ready(())
    };
    io.ns(path.to_owned(), connected.with(admit))
}

/// What one socket may send, from `[server]`.
#[derive(Debug, Clone, Copy)]
pub struct SocketLimits {
    pub max_payload_bytes: usize,
    /// Bytes a recovering socket's backlog may have waiting for it at once:
    /// half of `max_outbound_bytes`, so live events still fit beside it.
    pub backlog_bytes: usize,
    pub max_queued_bytes: usize,
    pub max_auth_bytes: usize,
}

impl SocketLimits {
    pub fn new(settings: &ServerSettings) -> Self {
        Self {
            max_payload_bytes: usize::try_from(settings.max_payload_bytes).unwrap_or(usize::MAX),
            backlog_bytes: settings.max_outbound_bytes / 2,
            max_queued_bytes: settings.max_queued_bytes_per_socket,
            max_auth_bytes: settings.max_auth_bytes,
        }
    }
}

/// One served namespace: its plugins and limits.
pub struct Namespace {
    routes: ArcSwap<NamespaceRoutes>,
    limits: SocketLimits,
    /// In a cluster, where this node records its sockets.
    liveness: Option<Arc<NodeLiveness>>,
    verifier: Option<Arc<Verifier>>,
    recovery: Option<Arc<Recovery>>,
    connections: TaskTracker,
    closing: CancellationToken,
    hand_over: Arc<AtomicBool>,
}

/// A socket's hold on its session (connection-state recovery).
#[derive(Clone, Copy)]
struct Held(Lease);

/// A socket that resumed its session, until it has caught up.
#[derive(Clone)]
struct Resumed {
    session: Session,
    /// The last offset its client received.
    offset: String,
}

/// Why a connection was refused; the client sees it in `connect_error`.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Denied(String);

impl Namespace {
    /// Connect middleware: the connect must be within the connection's
    /// rate in the namespace, the `auth` object within its limit and the
    /// socket's token valid, then every plugin of the namespace must allow
    /// it.
    async fn admit<A: Adapter>(
        &self,
        socket: SocketRef<A>,
        auth: HandshakeAuth,
    ) -> Result<(), Denied> {
        let rates = rates::socket_rates(
            socket.req_parts(),
            socket.ns(),
            &self.routes.load().event_rate(),
        );
        if let Err(over) = rates.take_event() {
            if over.persistently {
                socket.close_transport();
            }
            return Err(Denied(
                "rate_limited: this connection connects to the namespace faster than its events_per_second allows; wait before connecting again".to_owned(),
            ));
        }
        if auth.0.len() > self.limits.max_auth_bytes {
            return Err(Denied(format!(
                "payload_too_large: the handshake `auth` is {} bytes; the limit is {} (server.max_auth_bytes)",
                auth.0.len(),
                self.limits.max_auth_bytes
            )));
        }
        let routes = self.routes.load_full();
        let token = auth.token();
        let token_in_auth = token.is_some();
        let token = token.or_else(|| bearer_token(&socket.req_parts().headers).map(str::to_owned));
        let identity = self
            .identify(token.as_deref(), routes.anonymous())
            .map_err(|refused| Denied(refused.to_string()))?;
        let user_id = identity.as_ref().map(|identity| identity.user_id.clone());
        if socket.recovered() {
            return self.readmit(&socket, &auth, identity, rates).await;
        }
        // The socket's room lets plugins address this socket by id wherever
        // it is connected; the user's room reaches all of the user's sockets.
        socket.join([EVERY_SOCKET.to_owned(), socket_room(&socket.id.to_string())]);
        if let Some(user_id) = &user_id {
            socket.join(user_room(user_id));
        }
        let conn = Conn {
            socket_id: socket.id.to_string(),
            namespace: socket.ns().to_owned(),
            auth: auth.for_plugins(token_in_auth && identity.is_some(), self.recovery.is_some()),
            user_id,
        };
        for (index, plugin) in routes.plugins().iter().enumerate() {
            let denied = match plugin.current().on_connect(&conn).await {
                Ok(Ok(())) => continue,
                Ok(Err(refusal)) => Denied(refusal.message),
                Err(failure) => Denied(format!("connection refused: {failure}")),
            };
            // The plugins that already accepted the socket see it go, so
            // whatever they recorded for it (presence, say) is undone.
            for accepted in &routes.plugins()[..index] {
                let _ = accepted
                    .current()
                    .on_disconnect(&conn, "connection refused")
                    .await;
            }
            return Err(denied);
        }
        if let (Some(recovery), Some(pid)) = (&self.recovery, socket.pid()) {
            // Rooms plugins joined it to in `on-connect` included.
            let rooms = socket
                .rooms()
                .into_iter()
                .map(|room| room.into_owned())
                .collect();
            let opened_at = recovery.journal.head().await;
            let lease = recovery.sessions.open(pid, &conn, rooms, &opened_at).await;
            socket.extensions.insert(Held(lease));
        }
        socket.extensions.insert(conn);
        if let Some(identity) = identity {
            // Read by the socket's task, which disconnects it when the token expires.
            socket.extensions.insert(identity);
        }
        connection::register(&socket, self, rates);
        Ok(())
    }

    /// A socket resuming its session: it must be the same user's, and gets
    /// the session's rooms once it has caught up (see [`connection`]). Its
    /// plugins are not asked again: to them it never left.
    async fn readmit<A: Adapter>(
        &self,
        socket: &SocketRef<A>,
        auth: &HandshakeAuth,
        identity: Option<Identity>,
        rates: Arc<rates::SocketRates>,
    ) -> Result<(), Denied> {
        let (Some(recovery), Some(pid)) = (&self.recovery, socket.pid()) else {
            return Err(Denied("session_expired: reconnect".to_owned()));
        };
        let Some(session) = recovery.sessions.resume(pid).await else {
            // Its client, refused, would not try again: with its connection
            // closed it reconnects, and gets a new socket.
            socket.close_transport();
            return Err(Denied(
                "session_expired: the session ended while reconnecting; reconnect".to_owned(),
            ));
        };
        let user_id = identity.as_ref().map(|identity| identity.user_id.as_str());
        if session.conn.user_id.as_deref() != user_id {
            recovery.sessions.close(pid, session.lease).await;
            self.disconnect_plugins(&session.conn, "session refused")
                .await;
            return Err(Denied(
                "forbidden: the session belongs to another user".to_owned(),
            ));
        }
        socket.extensions.insert(session.conn.clone());
        socket.extensions.insert(Held(session.lease));
        if let Some(identity) = identity {
            socket.extensions.insert(identity);
        }
        let offset = auth.offset().unwrap_or_else(|| session.opened_at.clone());
        socket.extensions.insert(Resumed { session, offset });
        connection::register(socket, self, rates);
        Ok(())
    }

    /// Has every plugin of the namespace see `conn` go.
    async fn disconnect_plugins(&self, conn: &Conn, reason: &str) {
        for plugin in self.routes.load().plugins() {
            // A failing plugin is logged by the runtime; the others still run.
            let _ = plugin.current().on_disconnect(conn, reason).await;
        }
    }

    /// The verified identity; `None` when identities are not verified, or
    /// for an anonymous socket where the namespace allows it.
    fn identify(
        &self,
        token: Option<&str>,
        anonymous: bool,
    ) -> Result<Option<Identity>, IdentityError> {
        let Some(verifier) = &self.verifier else {
            return Ok(None);
        };
        match token {
            Some(token) => verifier.verify(token).map(Some),
            None if anonymous => Ok(None),
            None => Err(IdentityError::Missing),
        }
    }
}

/// The handshake `auth` object as JSON text, as the client sent it.
pub struct HandshakeAuth(String);

impl HandshakeAuth {
    /// `auth.offset`: the last event a client resuming its session received.
    fn offset(&self) -> Option<String> {
        #[derive(serde::Deserialize)]
        struct WithOffset {
            offset: String,
        }
        serde_json::from_str::<WithOffset>(&self.0)
            .ok()
            .map(|auth| auth.offset)
    }

    /// `auth.token`, when `auth` is an object with a string token.
    fn token(&self) -> Option<String> {
        #[derive(serde::Deserialize)]
        struct WithToken {
            token: String,
        }
        serde_json::from_str::<WithToken>(&self.0)
            .ok()
            .map(|auth| auth.token)
    }

    /// What plugins get: the text the client sent, unchanged, unless the
    /// host verified `auth.token` (`token_verified`). That token is a
    /// credential for the host alone, so it is removed; a token the host did
    /// not check (no `[auth]`) may be the plugins' own, and stays.
    ///
    /// With recovery on, `pid` (which resumes the session: a credential
    /// too) and `offset` are the host's as well.
    fn for_plugins(self, token_verified: bool, recovery: bool) -> String {
        if !token_verified && !recovery {
            return self.0;
        }
        let Ok(serde_json::Value::Object(mut fields)) = serde_json::from_str(&self.0) else {
            return self.0;
        };
        let hosts = [
            ("token", token_verified),
            ("pid", recovery),
            ("offset", recovery),
        ];
        let mut removed = false;
        for (field, _) in hosts.iter().filter(|(_, host_owned)| *host_owned) {
            removed |= fields.remove(*field).is_some();
        }
        if !removed {
            return self.0;
        }
        serde_json::Value::Object(fields).to_string()
    }
}

impl<A: Adapter> FromConnectParts<A> for HandshakeAuth {
    type Error = std::convert::Infallible;

    fn from_connect_parts(_: &Arc<Socket<A>>, auth: &Option<Value>) -> Result<Self, Self::Error> {
        let json = auth
            .as_ref()
            .and_then(Value::as_str)
            .map_or_else(|| "{}".to_owned(), |text| text.to_string());
        Ok(Self(json))
    }
}
