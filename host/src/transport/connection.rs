//! One task per socket runs its events through the plugins, one at a time, so
//! a socket's events are handled in the order it sent them, and disconnects
//! the socket when its token expires.
//!
//! Events are queued by a [`MessageHandler`] that socketioxide calls inline,
//! in packet order, as each packet is read: no task per event, and nothing
//! can overtake anything else.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, SocketRef};
use socketioxide::handler::{FromMessageParts, MessageHandler, Value};
use socketioxide::socket::{DisconnectReason, Socket};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::Namespace;
use crate::bindings::{Conn, PluginError};
use crate::identity::{Identity, IdentityError};
use crate::payload::{self, Outgoing};

/// The `on-disconnect` reason plugins see for the sockets of a node shutting down.
const SHUTDOWN_REASON: &str = "server shutting down";
/// The `on-disconnect` reason plugins see for a socket whose token expired.
const TOKEN_EXPIRED_REASON: &str = "token expired";

/// Events a socket may have waiting before further ones are refused with `overloaded`.
const QUEUE_CAPACITY: usize = 256;

enum Job<A: Adapter> {
    Event {
        packet: Value,
        ack: Option<AckSender<A>>,
    },
    /// `done` is answered once the plugins have seen the disconnect.
    Disconnect {
        reason: DisconnectReason,
        done: oneshot::Sender<()>,
    },
}

/// Registers the socket's handlers (before the connect handler returns, so an
/// event sent right after `connect` is not missed) and starts its task.
pub(super) fn start<A: Adapter>(socket: SocketRef<A>, namespace: Arc<Namespace>) {
    let Some(conn) = socket.extensions.get::<Conn>() else {
        tracing::error!(socket = %socket.id, "connected without being admitted; disconnecting");
        let _ = socket.disconnect();
        return;
    };
    let (jobs, queue) = mpsc::channel(QUEUE_CAPACITY);
    socket.on_fallback(EventQueue { jobs: jobs.clone() });
    socket.on_disconnect(move |reason: DisconnectReason| {
        let jobs = jobs.clone();
        // socketioxide removes the socket from its rooms when this handler
        // returns: waiting keeps it in them while the plugins' `on-disconnect`
        // runs, so they can still see its rooms.
        async move {
            let (done, handled) = oneshot::channel();
            if jobs.send(Job::Disconnect { reason, done }).await.is_ok() {
                let _ = handled.await;
            }
        }
    });
    let expires = socket
        .extensions
        .get::<Identity>()
        .and_then(|identity| deadline(identity.expires_at_s));
    let connection = Connection {
        conn,
        socket,
        namespace,
        expires,
    };
    let connections = connection.namespace.connections.clone();
    connections.spawn(connection.run(queue));
}

struct EventQueue<A: Adapter> {
    jobs: mpsc::Sender<Job<A>>,
}

/// Marks our handler apart from socketioxide's closure handlers.
pub struct Queued;

impl<A: Adapter> MessageHandler<A, Queued> for EventQueue<A> {
    fn call(&self, socket: Arc<Socket<A>>, mut packet: Value, ack_id: Option<i64>) {
        let ack = ack_id.map(|_| {
            let Ok(ack) = AckSender::from_message_parts(&socket, &mut packet, &ack_id);
            ack
        });
        if let Err(mpsc::error::TrySendError::Full(Job::Event { packet, ack })) =
            self.jobs.try_send(Job::Event { packet, ack })
        {
            let event = event_name(&packet).unwrap_or_default();
            let error = PluginError::new(
                "overloaded",
                format!(
                    "more than {QUEUE_CAPACITY} events from this socket are waiting; slow down and retry"
                ),
            );
            reply_error(&SocketRef::from(socket), ack, &event, &error);
        }
    }
}

struct Connection<A: Adapter> {
    socket: SocketRef<A>,
    conn: Conn,
    namespace: Arc<Namespace>,
    /// When the socket's token expires; `None` for a socket without one.
    expires: Option<Instant>,
}

/// `expires_at_s` (Unix seconds) on the monotonic clock; `None` if so far
/// ahead that it cannot be represented.
fn deadline(expires_at_s: u64) -> Option<Instant> {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    Instant::now().checked_add(Duration::from_secs(expires_at_s).saturating_sub(now))
}

impl<A: Adapter> Connection<A> {
    async fn run(self, mut queue: mpsc::Receiver<Job<A>>) {
        if let Some(liveness) = &self.namespace.liveness {
            liveness.connected(&self.conn).await;
        }
        for plugin in self.namespace.routes.load().plugins() {
            // A failing plugin is logged by the runtime; the others still run.
            let _ = plugin.current().on_connected(&self.conn).await;
        }
        // One wait each for the whole loop, not a new one per event.
        let closing = self.namespace.closing.clone();
        let closing = closing.cancelled();
        tokio::pin!(closing);
        let expires = self.expires;
        let expiry = async move {
            match expires {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(expiry);
        loop {
            // Biased: once the token expired, nothing queued is handled as
            // its user any more; at shutdown, the events already queued are
            // handled first.
            tokio::select! {
                biased;
                () = &mut expiry => {
                    self.token_expired().await;
                    break;
                }
                job = queue.recv() => match job {
                    Some(Job::Event { packet, ack }) => self.handle(packet, ack).await,
                    Some(Job::Disconnect { reason, done }) => {
                        if reason == DisconnectReason::SlowClient {
                            tracing::warn!(
                                socket = %self.conn.socket_id,
                                namespace = %self.conn.namespace,
                                "disconnected a client that did not keep up with the events sent to it (server.max_outbound_bytes, server.write_timeout_ms)"
                            );
                        }
                        self.disconnected(&reason.to_string()).await;
                        let _ = done.send(());
                        break;
                    }
                    None => break,
                },
                () = &mut closing => {
                    self.disconnected(SHUTDOWN_REASON).await;
                    break;
                }
            }
        }
    }

    async fn handle(&self, packet: Value, ack: Option<AckSender<A>>) {
        let (event, payload) = match packet {
            Value::Str(text, attachments) => match payload::decode_event(&text, attachments) {
                Ok(decoded) => decoded,
                Err(error) => {
                    let error = PluginError::new(
                        "invalid_packet",
                        format!("cannot read the event: {error}"),
                    );
                    return reply_error(&self.socket, ack, "", &error);
                }
            },
            Value::Bytes(_) => {
                let error = PluginError::new(
                    "invalid_packet",
                    "an event must start with its name as text",
                );
                return reply_error(&self.socket, ack, "", &error);
            }
        };
        let routes = self.namespace.routes.load_full();
        let Some(slot) = routes.handler(&event) else {
            let error = PluginError::new(
                "unknown_event",
                format!(
                    "no plugin handles `{event}` in namespace `{}`",
                    self.conn.namespace
                ),
            );
            return reply_error(&self.socket, ack, &event, &error);
        };
        let size = payload::size(&payload);
        if size > self.namespace.max_payload_bytes {
            let error = PluginError::new(
                "payload_too_large",
                format!(
                    "`{event}` carries {size} bytes; the limit is {} (server.max_payload_bytes)",
                    self.namespace.max_payload_bytes
                ),
            );
            return reply_error(&self.socket, ack, &event, &error);
        }
        let error = match slot.current().on_event(&self.conn, &event, &payload).await {
            Ok(Ok(reply)) => {
                if let Some(ack) = ack {
                    send_ack(ack, reply);
                }
                return;
            }
            Ok(Err(refusal)) => refusal,
            Err(failure) => PluginError::new(failure.code(), failure.to_string()),
        };
        reply_error(&self.socket, ack, &event, &error);
    }

    /// Tells the client why, disconnects it from the namespace (its client
    /// does not reconnect by itself, and any reconnect presents a token
    /// again), then has the plugins see it go.
    async fn token_expired(&self) {
        let expired = IdentityError::Expired;
        let error = PluginError::new(expired.code(), expired.to_string());
        reply_error(&self.socket, None, "", &error);
        // A client that left meanwhile is being disconnected already.
        if self.socket.connected()
            && let Err(error) = self.socket.clone().disconnect()
        {
            tracing::warn!(socket = %self.socket.id, "socket with an expired token not disconnected: {error}");
        }
        self.disconnected(TOKEN_EXPIRED_REASON).await;
    }

    async fn disconnected(&self, reason: &str) {
        for plugin in self.namespace.routes.load().plugins() {
            // A failing plugin is logged by the runtime; the others still run.
            let _ = plugin.current().on_disconnect(&self.conn, reason).await;
        }
        if let Some(liveness) = &self.namespace.liveness {
            liveness.disconnected(&self.conn).await;
        }
    }
}

fn send_ack<A: Adapter>(ack: AckSender<A>, reply: Option<crate::bindings::Payload>) {
    let sent = match reply.map(Outgoing::new).transpose() {
        Ok(Some(reply)) => ack.send(&reply),
        Ok(None) => ack.send(&serde_json::Value::Null),
        Err(invalid) => ack.send(&ErrorReply::from(&invalid)),
    };
    if let Err(error) = sent {
        tracing::debug!("ack not sent: {error}");
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: &'a str,
}

/// An error as the ack's single argument: `{ error: { code, message } }`.
#[derive(Serialize)]
struct ErrorReply<'a> {
    error: ErrorBody<'a>,
}

impl<'a> From<&'a PluginError> for ErrorReply<'a> {
    fn from(error: &'a PluginError) -> Self {
        Self {
            error: ErrorBody {
                code: &error.code,
                message: &error.message,
            },
        }
    }
}

/// An error for a client that asked for no ack: an `error` event naming the event.
#[derive(Serialize)]
struct ErrorEvent<'a> {
    event: &'a str,
    code: &'a str,
    message: &'a str,
}

/// Tells this client, and only it, that its event failed.
fn reply_error<A: Adapter>(
    socket: &SocketRef<A>,
    ack: Option<AckSender<A>>,
    event: &str,
    error: &PluginError,
) {
    let sent = match ack {
        Some(ack) => ack.send(&ErrorReply::from(error)),
        None => socket.emit(
            "error",
            &ErrorEvent {
                event,
                code: &error.code,
                message: &error.message,
            },
        ),
    };
    if let Err(failure) = sent {
        tracing::debug!(socket = %socket.id, "error reply not sent: {failure}");
    }
}

fn event_name(packet: &Value) -> Option<String> {
    let text = packet.as_str()?;
    payload::decode_event(text, None)
        .ok()
        .map(|(event, _)| event)
}
