//! The socket operations plugins reach, over whichever socketioxide adapter
//! the server runs (in memory, or Redis for a cluster), so the host API does
//! not depend on the adapter type.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;
use socketioxide::operators::BroadcastOperators;
use socketioxide::socket::Sid;
use socketioxide::{AckError, BroadcastError, SocketError, SocketIo};

use super::{EVERY_SOCKET, is_reserved, socket_room};
use crate::bindings::Payload;
use crate::payload::{AckArguments, Outgoing, TooLarge};
use crate::recovery::{Emit, Journal, LocalDelivery, SessionStore};

#[derive(Debug, thiserror::Error)]
pub enum SocketsError {
    #[error("namespace `{0}` is not served")]
    UnknownNamespace(String),
    #[error("{0}")]
    Transport(String),
    /// The cluster cannot take the emit now (its Redis is away and the
    /// outbox is full).
    #[error("{0}")]
    Unavailable(String),
}

/// Why an event that asked for an acknowledgement got none.
#[derive(Debug, thiserror::Error)]
pub enum AckFailure {
    #[error("the client did not answer within {} ms", .0.as_millis())]
    Timeout(Duration),
    #[error("the socket disconnected before it answered")]
    Disconnected,
    #[error("no socket `{0}` is connected to any node")]
    NotConnected(String),
    #[error("the client's answer is not valid Socket.IO data: {0}")]
    Invalid(String),
    #[error("the client's answer {0}")]
    TooLarge(#[from] TooLarge),
    #[error("{0}")]
    Transport(String),
}

impl AckFailure {
    /// The error code plugins see.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Timeout(_) => "ack_timeout",
            Self::Disconnected => "disconnected",
            Self::NotConnected(_) => "not_connected",
            Self::Invalid(_) => "invalid_ack",
            Self::TooLarge(_) => "payload_too_large",
            Self::Transport(_) => "transport_error",
        }
    }
}

/// The client's answer to an event sent with [`Sockets::ask`], once it comes.
pub type PendingAck = Pin<Box<dyn Future<Output = Result<Payload, AckFailure>> + Send>>;

/// Who an emit reaches within a namespace.
pub struct Audience {
    /// A room (see [`socket_room`] for one socket); `None` is the whole namespace.
    pub room: Option<String>,
    /// A room (usually a socket's) left out.
    pub except: Option<String>,
}

/// A change to a socket's rooms.
#[derive(Clone, Copy, Debug)]
pub enum Membership {
    Join,
    Leave,
}

/// A socket's rooms as a join checks them against its cap.
#[derive(Debug, PartialEq, Eq)]
pub struct PluginRooms {
    /// Rooms the socket is in but the host's own (see [`is_reserved`]).
    pub count: usize,
    /// Whether the socket is already in the room asked about.
    pub includes_room: bool,
}

impl PluginRooms {
    fn among(rooms: &[String], room: &str) -> Self {
        Self::count(rooms.iter().map(String::as_str), room)
    }

    fn count<'a>(rooms: impl IntoIterator<Item = &'a str>, room: &str) -> Self {
        let mut counted = Self {
            count: 0,
            includes_room: false,
        };
        for each in rooms {
            counted.includes_room |= each == room;
            counted.count += usize::from(!is_reserved(each));
        }
        counted
    }
}

#[async_trait]
pub trait Sockets: Send + Sync + 'static {
    async fn emit(
        &self,
        namespace: &str,
        audience: Audience,
        event: &str,
        payload: Outgoing,
    ) -> Result<(), SocketsError>;
    /// Puts a socket, wherever it is connected, in a room or takes it out.
    async fn change_rooms(
        &self,
        namespace: &str,
        socket_id: String,
        room: String,
        change: Membership,
    ) -> Result<(), SocketsError>;
    /// Socket ids in a room.
    async fn members(&self, namespace: &str, room: String) -> Result<Vec<String>, SocketsError>;
    /// Rooms a socket is in, including the host's (its socket and user rooms).
    async fn rooms_of(
        &self,
        namespace: &str,
        socket_id: String,
    ) -> Result<Vec<String>, SocketsError>;
    /// How many plugin rooms a socket is in and whether `room` is one: asked
    /// on every join, so it copies no room names where it can.
    async fn plugin_rooms(
        &self,
        namespace: &str,
        socket_id: String,
        room: &str,
    ) -> Result<PluginRooms, SocketsError> {
        let rooms = self.rooms_of(namespace, socket_id).await?;
        Ok(PluginRooms::among(&rooms, room))
    }
    /// Sends an event to one socket, wherever it is connected, asking for
    /// its acknowledgement within `timeout`. Not journaled: a client away
    /// when it is sent never gets it, as in Socket.IO.
    async fn ask(
        &self,
        namespace: &str,
        socket_id: &str,
        event: &str,
        payload: Outgoing,
        timeout: Duration,
    ) -> Result<PendingAck, SocketsError>;
    /// Disconnects every local socket, for shutdown.
    async fn close(&self);
}

fn operators<A: Adapter>(
    io: &SocketIo<A>,
    namespace: &str,
) -> Result<BroadcastOperators<A>, SocketsError> {
    io.of(namespace)
        .ok_or_else(|| SocketsError::UnknownNamespace(namespace.to_owned()))
}

fn reaching<A: Adapter>(
    io: &SocketIo<A>,
    namespace: &str,
    audience: &Audience,
) -> Result<BroadcastOperators<A>, SocketsError> {
    let room = audience.room.as_deref().unwrap_or(EVERY_SOCKET);
    let mut target = operators(io, namespace)?.to(room.to_owned());
    if let Some(except) = &audience.except {
        target = target.except(except.clone());
    }
    Ok(target)
}

/// The socket, if it is connected to this node: its rooms are then changed
/// and read locally, with no round trip through the cluster.
fn local_socket<A: Adapter>(
    io: &SocketIo<A>,
    namespace: &str,
    socket_id: &str,
) -> Option<SocketRef<A>> {
    let sid = socket_id.parse::<Sid>().ok()?;
    io.of(namespace)?.get_socket(sid)
}

fn transport(error: impl std::fmt::Display) -> SocketsError {
    SocketsError::Transport(error.to_string())
}

/// A broadcast reached every recipient but those listed in a
/// `BroadcastError::Socket`: the emit itself succeeded, and failing it would
/// have its sender retry and everyone else receive it twice. A recipient that
/// closed meanwhile misses nothing it could still read.
fn delivered(sent: Result<(), BroadcastError>, event: &str) -> Result<(), BroadcastError> {
    match sent {
        Err(BroadcastError::Socket(failed)) => {
            let full = failed
                .iter()
                .filter(|error| matches!(error, SocketError::InternalChannelFull))
                .count();
            if full > 0 {
                tracing::warn!(
                    event,
                    recipients = full,
                    "recipients with a full send buffer missed an event"
                );
            }
            Ok(())
        }
        other => other,
    }
}

#[async_trait]
impl<A: Adapter> LocalDelivery for SocketIo<A> {
    async fn deliver(&self, emit: &Emit, offset: Option<&str>) -> Result<(), SocketsError> {
        let audience = Audience {
            room: emit.room.clone(),
            except: emit.except.clone(),
        };
        let target = reaching(self, &emit.namespace, &audience)?.local();
        let sent = match offset {
            Some(offset) => {
                target
                    .emit(&emit.event, &emit.payload.followed_by(offset))
                    .await
            }
            None => target.emit(&emit.event, &emit.payload).await,
        };
        delivered(sent, &emit.event).map_err(transport)
    }
}

/// This node's sockets: every emit goes through the [`Journal`] (in memory,
/// or the cluster's Redis stream); rooms are changed and read through the
/// adapter, on this node or across the cluster.
pub struct NodeSockets<A: Adapter> {
    io: SocketIo<A>,
    journal: Arc<dyn Journal>,
    /// With recovery on: told of room changes, so a session knows its rooms
    /// even if its node dies.
    sessions: Option<Arc<dyn SessionStore>>,
}

impl<A: Adapter> NodeSockets<A> {
    pub fn new(
        io: SocketIo<A>,
        journal: Arc<dyn Journal>,
        sessions: Option<Arc<dyn SessionStore>>,
    ) -> Self {
        Self {
            io,
            journal,
            sessions,
        }
    }
}

#[async_trait]
impl<A: Adapter> Sockets for NodeSockets<A> {
    async fn emit(
        &self,
        namespace: &str,
        audience: Audience,
        event: &str,
        payload: Outgoing,
    ) -> Result<(), SocketsError> {
        operators(&self.io, namespace)?;
        let emit = Emit {
            namespace: namespace.to_owned(),
            room: audience.room,
            except: audience.except,
            event: event.to_owned(),
            payload,
        };
        self.journal.publish(emit).await
    }

    async fn change_rooms(
        &self,
        namespace: &str,
        socket_id: String,
        room: String,
        change: Membership,
    ) -> Result<(), SocketsError> {
        let io = &self.io;
        match local_socket(io, namespace, &socket_id) {
            Some(socket) => match change {
                Membership::Join => socket.join(room.clone()),
                Membership::Leave => socket.leave(room.clone()),
            },
            None => {
                let socket = operators(io, namespace)?.within(socket_room(&socket_id));
                match change {
                    Membership::Join => socket.join(room.clone()).await,
                    Membership::Leave => socket.leave(room.clone()).await,
                }
                .map_err(transport)?;
            }
        }
        if let Some(sessions) = &self.sessions {
            let joined = matches!(change, Membership::Join);
            sessions
                .room_changed(namespace, &socket_id, &room, joined)
                .await;
        }
        Ok(())
    }

    async fn members(&self, namespace: &str, room: String) -> Result<Vec<String>, SocketsError> {
        let sockets = operators(&self.io, namespace)?
            .within(room)
            .fetch_sockets()
            .await
            .map_err(transport)?;
        Ok(sockets
            .iter()
            .map(|socket| socket.data().id.to_string())
            .collect())
    }

    async fn rooms_of(
        &self,
        namespace: &str,
        socket_id: String,
    ) -> Result<Vec<String>, SocketsError> {
        let rooms = match local_socket(&self.io, namespace, &socket_id) {
            Some(socket) => socket.rooms(),
            None => operators(&self.io, namespace)?
                .within(socket_room(&socket_id))
                .rooms()
                .await
                .map_err(transport)?,
        };
        Ok(rooms.into_iter().map(|room| room.into_owned()).collect())
    }

    async fn plugin_rooms(
        &self,
        namespace: &str,
        socket_id: String,
        room: &str,
    ) -> Result<PluginRooms, SocketsError> {
        if let Some(socket) = local_socket(&self.io, namespace, &socket_id) {
            return Ok(socket.with_rooms(|rooms| {
                PluginRooms::count(rooms.iter().map(|each| each.as_ref()), room)
            }));
        }
        let rooms = self.rooms_of(namespace, socket_id).await?;
        Ok(PluginRooms::among(&rooms, room))
    }

    async fn ask(
        &self,
        namespace: &str,
        socket_id: &str,
        event: &str,
        payload: Outgoing,
        timeout: Duration,
    ) -> Result<PendingAck, SocketsError> {
        let answers = operators(&self.io, namespace)?
            .to(socket_room(socket_id))
            .timeout(timeout)
            .emit_with_ack::<_, AckArguments>(event, &payload)
            .await
            .map_err(transport)?;
        let socket_id = socket_id.to_owned();
        Ok(Box::pin(async move {
            let mut answers = std::pin::pin!(answers);
            // A socket room holds one socket: its answer is the first and only.
            match answers.next().await {
                None => Err(AckFailure::NotConnected(socket_id)),
                Some((_, Ok(AckArguments(payload)))) => Ok(payload),
                Some((_, Err(AckError::Timeout))) => Err(AckFailure::Timeout(timeout)),
                Some((_, Err(AckError::Socket(SocketError::Closed)))) => {
                    Err(AckFailure::Disconnected)
                }
                Some((_, Err(AckError::Decode(error)))) => {
                    Err(AckFailure::Invalid(error.to_string()))
                }
                Some((_, Err(error))) => Err(AckFailure::Transport(error.to_string())),
            }
        }))
    }

    async fn close(&self) {
        self.io.clone().close().await;
    }
}
