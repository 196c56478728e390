//! One task per socket runs its events through the plugins, one at a time, so
//! a socket's events are handled in the order it sent them, and disconnects
//! the socket when its token expires or it keeps sending over its rate.
//!
//! Events are queued by a [`MessageHandler`] that socketioxide calls inline,
//! in packet order, as each packet is read: no task per event, and nothing
//! can overtake anything else. The queue is bounded in events and in bytes,
//! and events over the namespace's rate are refused before they are queued.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures_util::task::ArcWake;
use serde::Serialize;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, SocketRef};
use socketioxide::handler::{FromMessageParts, MessageHandler, Value};
use socketioxide::socket::{DisconnectReason, Socket};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::job_queue::{Alarm, JobQueue, Refused, Wakeup};
use super::rates::SocketRates;
use super::{EVERY_SOCKET, Held, Namespace, Resumed};
use crate::bindings::{Conn, PluginError};
use crate::escaped::Escaped;
use crate::identity::{Identity, IdentityError};
use crate::log_context::LogContext;
use crate::metrics;
use crate::payload::{self, Outgoing};
use crate::recovery::{CatchUp, Missed, PAGE, Page, Recovery, Suspension, recoverable};
use crate::runtime::Meter;

/// The `on-disconnect` reason plugins see for the sockets of a node shutting down.
const SHUTDOWN_REASON: &str = "server shutting down";
/// The `on-disconnect` reason plugins see for a socket whose token expired.
const TOKEN_EXPIRED_REASON: &str = "token expired";
/// The `on-disconnect` reason plugins see for a socket that kept sending over its rate.
const RATE_LIMITED_REASON: &str = "rate limited";

/// Events a socket may have waiting before further ones are refused with
/// `overloaded` (their bytes are bounded too, by `max_queued_bytes_per_socket`).
const QUEUE_CAPACITY: usize = 256;

enum Job<A: Adapter> {
    Event(QueuedEvent<A>),
    /// `done` is answered once the plugins have seen the disconnect.
    Disconnect {
        reason: DisconnectReason,
        done: oneshot::Sender<()>,
    },
}

struct QueuedEvent<A: Adapter> {
    packet: Value,
    ack: Option<AckSender<A>>,
    /// What the packet counts against `max_queued_bytes_per_socket`.
    bytes: usize,
}

/// What a socket's handlers share with its task.
struct SocketJobs<A: Adapter> {
    queue: JobQueue<Job<A>>,
    /// Bytes of the events queued and not yet handled.
    queued_bytes: AtomicUsize,
    /// Raised by its [`EventQueue`] when the socket keeps sending over its rate.
    rate_limited: Alarm,
    /// Notes that the node's closing woke the task.
    closing: Wakeup,
}

/// The waker the socket's task polls the node's closing with.
impl<A: Adapter> ArcWake for SocketJobs<A> {
    fn wake_by_ref(jobs: &Arc<Self>) {
        jobs.closing.wake();
    }
}

/// The task's end of a socket's queue. Dropped, it closes the queue: a
/// disconnect never waits on a task that ended, or never started.
struct Reader<A: Adapter>(Arc<SocketJobs<A>>);

impl<A: Adapter> Reader<A> {
    async fn next(&self) -> Job<A> {
        self.0.queue.next().await
    }

    fn handled(&self, bytes: usize) {
        self.0.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
    }
}

impl<A: Adapter> Drop for Reader<A> {
    fn drop(&mut self) {
        self.0.queue.close();
    }
}

/// What [`register`] prepared for [`start`]: the socket's queue and the
/// state its handlers share with its task.
struct Registered<A: Adapter> {
    jobs: Reader<A>,
    rates: Arc<SocketRates>,
}

/// Carries [`Registered`] in the socket's extensions, which must be `Clone`.
struct Pending<A: Adapter>(Arc<Mutex<Option<Registered<A>>>>);

impl<A: Adapter> Clone for Pending<A> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

/// Registers the handlers of an admitted socket, from its connect
/// middleware: socketioxide sends the CONNECT reply right after it, and a
/// client may send events as soon as it has it, before the connect handler
/// has run (under load, a `join` sent at once was lost that way). Events
/// wait in the queue until [`start`].
pub(super) fn register<A: Adapter>(
    socket: &SocketRef<A>,
    namespace: &Namespace,
    rates: Arc<SocketRates>,
) {
    let jobs = Arc::new(SocketJobs {
        queue: JobQueue::new(),
        queued_bytes: AtomicUsize::new(0),
        rate_limited: Alarm::default(),
        closing: Wakeup::default(),
    });
    socket.on_fallback(EventQueue {
        jobs: jobs.clone(),
        max_queued_bytes: namespace.limits.max_queued_bytes,
        rates: rates.clone(),
    });
    let disconnects = jobs.clone();
    socket.on_disconnect(move |reason: DisconnectReason| {
        let jobs = disconnects.clone();
        // socketioxide removes the socket from its rooms when this handler
        // returns: waiting keeps it in them while the plugins' `on-disconnect`
        // runs, so they can still see its rooms.
        async move {
            let (done, handled) = oneshot::channel();
            if jobs.queue.push(Job::Disconnect { reason, done }).is_ok() {
                let _ = handled.await;
            }
        }
    });
    let registered = Registered {
        jobs: Reader(jobs),
        rates,
    };
    socket
        .extensions
        .insert(Pending(Arc::new(Mutex::new(Some(registered)))));
}

/// Starts the task of a socket that is connected, which handles its events.
pub(super) fn start<A: Adapter>(socket: SocketRef<A>, namespace: Arc<Namespace>) {
    let (Some(conn), Some(Pending(pending))) = (
        socket.extensions.get::<Conn>(),
        socket.extensions.remove::<Pending<A>>(),
    ) else {
        tracing::error!(socket = %socket.id, "connected without being admitted; disconnecting");
        let _ = socket.disconnect();
        return;
    };
    let Some(Registered { jobs, rates }) = pending
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .take()
    else {
        return;
    };
    let expires = socket
        .extensions
        .get::<Identity>()
        .and_then(|identity| deadline(identity.expires_at_s));
    let held = socket.extensions.get::<Held>();
    let resumed = socket.extensions.remove::<Resumed>();
    let connection = Connection {
        conn: Arc::new(conn),
        held,
        resumed,
        socket,
        namespace,
        expires,
        jobs,
        rates,
    };
    let connections = connection.namespace.connections.clone();
    let context = LogContext::socket(connection.conn.clone());
    connections.spawn(context.scope(connection.run()));
}

struct EventQueue<A: Adapter> {
    jobs: Arc<SocketJobs<A>>,
    max_queued_bytes: usize,
    rates: Arc<SocketRates>,
}

/// Marks our handler apart from socketioxide's closure handlers.
pub struct Queued;

impl<A: Adapter> MessageHandler<A, Queued> for EventQueue<A> {
    fn call(&self, socket: Arc<Socket<A>>, mut packet: Value, ack_id: Option<i64>) {
        let ack = ack_id.map(|_| {
            let Ok(ack) = AckSender::from_message_parts(&socket, &mut packet, &ack_id);
            ack
        });
        let socket = SocketRef::from(socket);
        if let Err(over) = self.rates.take_event() {
            if over.persistently {
                self.jobs.rate_limited.raise();
            }
            let error = PluginError::new(
                "rate_limited",
                "this socket sends events faster than its namespace allows; slow down, or it is disconnected",
            );
            return refuse(&socket, &packet, ack, &error);
        }
        let bytes = packet_bytes(&packet);
        let queued_bytes = &self.jobs.queued_bytes;
        let before = queued_bytes.fetch_add(bytes, Ordering::AcqRel);
        // An empty queue takes any event, so the limit never refuses one
        // the transport let through.
        if before > 0 && before.saturating_add(bytes) > self.max_queued_bytes {
            queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
            let error = PluginError::new(
                "overloaded",
                format!(
                    "events from this socket waiting to be handled would take over {} bytes (server.max_queued_bytes_per_socket); slow down and retry",
                    self.max_queued_bytes
                ),
            );
            return refuse(&socket, &packet, ack, &error);
        }
        let event = QueuedEvent { packet, ack, bytes };
        let refused = match self.jobs.queue.try_push(Job::Event(event), QUEUE_CAPACITY) {
            Ok(()) => return,
            Err(Refused::Full(job)) => Some(job),
            Err(Refused::Closed(_)) => None,
        };
        queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
        if let Some(Job::Event(QueuedEvent { packet, ack, .. })) = refused {
            let error = PluginError::new(
                "overloaded",
                format!(
                    "more than {QUEUE_CAPACITY} events from this socket are waiting; slow down and retry"
                ),
            );
            refuse(&socket, &packet, ack, &error);
        }
    }
}

/// Bytes a packet holds: its text and binary attachments.
fn packet_bytes(packet: &Value) -> usize {
    match packet {
        Value::Str(text, attachments) => {
            text.len()
                + attachments
                    .iter()
                    .flatten()
                    .map(|attachment| attachment.len())
                    .sum::<usize>()
        }
        Value::Bytes(bytes) => bytes.len(),
    }
}

/// Tells the client its event was not queued, naming the event when the
/// reply is an `error` event (an ack needs no name, so nothing is decoded).
fn refuse<A: Adapter>(
    socket: &SocketRef<A>,
    packet: &Value,
    ack: Option<AckSender<A>>,
    error: &PluginError,
) {
    let event = match ack {
        Some(_) => String::new(),
        None => event_name(packet).unwrap_or_default(),
    };
    refuse_event(socket, ack, &event, error);
}

/// An event no plugin is given: counted, and the client told why.
fn refuse_event<A: Adapter>(
    socket: &SocketRef<A>,
    ack: Option<AckSender<A>>,
    event: &str,
    error: &PluginError,
) {
    metrics::event_refused(socket.ns(), &error.code);
    reply_error(socket, ack, event, error);
}

struct Connection<A: Adapter> {
    socket: SocketRef<A>,
    conn: Arc<Conn>,
    /// Its session, with connection-state recovery on.
    held: Option<Held>,
    /// The session it resumed, until it has caught up.
    resumed: Option<Resumed>,
    namespace: Arc<Namespace>,
    /// When the socket's token expires; `None` for a socket without one.
    expires: Option<Instant>,
    /// Its events and its disconnect, queued by its [`EventQueue`] and
    /// disconnect handler, and its alarm for a socket over its rate.
    jobs: Reader<A>,
    /// Its events' rate and what they may still cost: over it, its next
    /// event waits.
    rates: Arc<SocketRates>,
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
    async fn run(mut self) {
        metrics::connected(&self.conn.namespace);
        // Boxed, as every call below: the task of an idle socket holds only
        // the loop's own state, not room for the largest call it may make.
        Box::pin(self.begin()).await;
        // One wait each for the whole loop, not a new one per event.
        let jobs = self.jobs.0.clone();
        let closing_waker = futures_util::task::waker(jobs.clone());
        let closing = jobs
            .closing
            .polled_when_woken(&closing_waker, self.namespace.closing.cancelled());
        tokio::pin!(closing);
        let expires = self.expires;
        let expiry = async move {
            match expires {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(expiry);
        let rate_limited = self.jobs.0.rate_limited.raised();
        tokio::pin!(rate_limited);
        let gone = loop {
            // A socket whose events cost more than its budget has its next
            // one wait until the budget refills, while more queue up to the
            // queue's limits: a client waiting for its acks is slowed, not
            // refused, and one that is not fills its queue (`overloaded`).
            let pause = self.rates.costs.pause();
            if pause.is_some() {
                metrics::budget_exhausted(&self.conn.namespace);
            }
            // Biased: once the token expired, nothing queued is handled as
            // its user any more, nor for a socket flooding past its rate; at
            // shutdown, the events already queued are handled first.
            tokio::select! {
                biased;
                () = &mut expiry => {
                    let expired = IdentityError::Expired;
                    let error = PluginError::new(expired.code(), expired.to_string());
                    Box::pin(self.dismiss(&error, TOKEN_EXPIRED_REASON)).await;
                    break "token_expired";
                }
                () = &mut rate_limited => {
                    tracing::warn!(
                        socket = %self.conn.socket_id,
                        namespace = %self.conn.namespace,
                        "disconnected a socket that kept sending events over its namespace's rate (events_per_second, event_burst)"
                    );
                    let error = PluginError::new(
                        "rate_limited",
                        "this socket kept sending events over its namespace's rate; disconnected",
                    );
                    Box::pin(self.dismiss(&error, RATE_LIMITED_REASON)).await;
                    break "rate_limited";
                }
                // In a block: select! makes the futures of disabled branches
                // too, and a `Sleep` reads the clock and the runtime's handle.
                () = async { tokio::time::sleep(pause.unwrap_or_default()).await }, if pause.is_some() => {}
                job = self.jobs.next(), if pause.is_none() => match job {
                    Job::Event(QueuedEvent { packet, ack, bytes }) => {
                        Box::pin(self.handle(packet, ack)).await;
                        self.jobs.handled(bytes);
                    }
                    Job::Disconnect { reason, done } => {
                        if reason == DisconnectReason::SlowClient {
                            tracing::warn!(
                                socket = %self.conn.socket_id,
                                namespace = %self.conn.namespace,
                                "disconnected a client that did not keep up with the events sent to it (server.max_outbound_bytes, server.write_timeout_ms)"
                            );
                        }
                        let reason_text = reason.to_string();
                        Box::pin(self.leave(&reason_text, recoverable(&reason))).await;
                        let _ = done.send(());
                        break disconnect_label(&reason);
                    }
                },
                () = &mut closing => {
                    // Left to its client to recover on another node, if any.
                    let hand_over = self.namespace.hand_over.load(Ordering::Acquire);
                    Box::pin(self.leave(SHUTDOWN_REASON, hand_over)).await;
                    break "shutdown";
                }
            }
        };
        metrics::disconnected(&self.conn.namespace, gone);
    }

    /// Announces the socket: to the cluster, and to its plugins as a new
    /// connection or a recovered one.
    async fn begin(&mut self) {
        if let Some(liveness) = &self.namespace.liveness {
            liveness.connected(&self.conn).await;
        }
        match self.resumed.take() {
            Some(resumed) => self.recover(resumed).await,
            None => {
                for plugin in self.namespace.routes.load().plugins() {
                    // A failing plugin is logged by the runtime; the others still run.
                    let _ = plugin.current().on_connected(&self.conn).await;
                }
            }
        }
    }

    /// The socket is gone: its session is kept for recovery when `recoverable`
    /// and recovery can keep it, otherwise its plugins see it disconnect.
    async fn leave(&self, reason: &str, recoverable: bool) {
        if !(recoverable && self.suspend(reason).await) {
            self.disconnected(reason).await;
        }
    }

    async fn handle(&self, packet: Value, ack: Option<AckSender<A>>) {
        let Value::Str(text, attachments) = packet else {
            let error = PluginError::new(
                "invalid_packet",
                "an event must start with its name as text",
            );
            return refuse_event(&self.socket, ack, "", &error);
        };
        let parts = match payload::split_event(&text, attachments) {
            Ok(parts) => parts,
            Err(error) => {
                let error =
                    PluginError::new("invalid_packet", format!("cannot read the event: {error}"));
                return refuse_event(&self.socket, ack, "", &error);
            }
        };
        let event = &parts.event;
        let routes = self.namespace.routes.load_full();
        let Some(route) = routes.handler(event) else {
            let error = PluginError::new(
                "unknown_event",
                format!(
                    "no plugin handles `{event}` in namespace `{}`",
                    self.conn.namespace
                ),
            );
            return refuse_event(&self.socket, ack, event, &error);
        };
        // Checked before the arguments are copied out of the packet: an event
        // of 400,000 one-byte arguments took 22 MiB to copy.
        let max_payload_bytes = self.namespace.limits.max_payload_bytes;
        if let Err(too_large) = payload::within(parts.size(), max_payload_bytes) {
            let error = PluginError::new("payload_too_large", format!("`{event}` {too_large}"));
            return refuse_event(&self.socket, ack, event, &error);
        }
        let (event, payload) = parts.into_event();
        let slot = &route.slot;
        // What the plugin logs, and what is logged of its call (a trap, a
        // timeout), names the event and the plugin, the socket and its
        // namespace.
        let context = LogContext::event(self.conn.clone(), event.clone(), &slot.spec.name);
        let plugin = slot.current();
        let meter: Arc<dyn Meter> = self.rates.clone();
        let call = plugin.on_event(&self.conn, event.clone(), payload, Some(meter));
        let error = match context.scope(call).await {
            Ok(Ok(reply)) => {
                let reply_bytes = reply.as_ref().map_or(0, payload::size);
                match payload::within(reply_bytes, max_payload_bytes) {
                    Ok(()) => {
                        self.rates.output_bytes(reply_bytes);
                        route.handled_ok.increment(1);
                        if let Some(ack) = ack {
                            send_ack(ack, reply);
                        }
                        return;
                    }
                    // Handled, but its reply is bigger than any event may be:
                    // the client gets why, not a packet it would be cut off for.
                    Err(too_large) => {
                        tracing::warn!(
                            plugin = %slot.spec.name.as_str(),
                            event = %Escaped(&event),
                            bytes = reply_bytes,
                            "reply over server.max_payload_bytes not sent"
                        );
                        PluginError::new(
                            "payload_too_large",
                            format!("the reply to `{}` {too_large}", Escaped(&event)),
                        )
                    }
                }
            }
            Ok(Err(refusal)) => refusal,
            Err(failure) => failure.into(),
        };
        let plugin_name = slot.spec.name.as_str();
        let outcome = route.failure_codes.label(&error.code, || {
            tracing::warn!(
                "plugin `{plugin_name}` failed `{}` with more than {} distinct error codes, or one over 64 bytes: \
                 further ones are counted as `other` in switchboard_events_total (a plugin's codes are meant to be a fixed set)",
                Escaped(&event),
                metrics::MAX_CODES_PER_EVENT,
            );
        });
        metrics::event_handled(&self.conn.namespace, plugin_name, &event, outcome);
        reply_error(&self.socket, ack, &event, &error);
    }

    /// Tells the client why (`error`), disconnects it from the namespace
    /// (its client does not reconnect by itself, and any reconnect presents
    /// a token again), then has the plugins see it go with `reason`.
    async fn dismiss(&self, error: &PluginError, reason: &str) {
        reply_error(&self.socket, None, "", error);
        // A client that left meanwhile is being disconnected already.
        if self.socket.connected()
            && let Err(failure) = self.socket.clone().disconnect()
        {
            tracing::warn!(socket = %self.socket.id, "socket not disconnected ({reason}): {failure}");
        }
        self.disconnected(reason).await;
    }

    /// Sends what a resumed session missed, then puts the socket back in its
    /// rooms, while no emit is delivered; then tells the plugins. A session
    /// that can no longer catch up (its offset left the journal meanwhile)
    /// is not resumed with a gap (see [`Self::recovery_failed`]).
    async fn recover(&self, resumed: Resumed) {
        let Some(recovery) = &self.namespace.recovery else {
            return;
        };
        let Resumed { session, offset } = resumed;
        // A large backlog goes out at the client's pace while emits go on;
        // only what came meanwhile is sent with delivery held.
        let Some((offset, paced)) = self.send_backlog(recovery, offset, &session.rooms).await
        else {
            return self.recovery_failed();
        };
        let mut catching_up = CatchingUp {
            socket: &self.socket,
            rooms: &session.rooms,
            sent: 0,
        };
        let caught_up = recovery
            .journal
            .catch_up(
                &offset,
                &self.conn.namespace,
                &session.rooms,
                &mut catching_up,
            )
            .await;
        if !caught_up {
            return self.recovery_failed();
        }
        metrics::recovery(&self.conn.namespace, "recovered");
        let missed = paced + catching_up.sent;
        tracing::debug!(socket = %self.conn.socket_id, missed, "session recovered");
        for plugin in self.namespace.routes.load().plugins() {
            // A failing plugin is logged by the runtime; the others still run.
            let _ = plugin.current().on_recovered(&self.conn).await;
        }
    }

    /// Sends the emits after `offset` a recovering socket missed, page by
    /// page, never more than `backlog_bytes` waiting for it: the offset it
    /// got to, and how many it was sent. `None` when they are no longer all
    /// kept, or the socket went meanwhile.
    async fn send_backlog(
        &self,
        recovery: &Recovery,
        mut offset: String,
        rooms: &[String],
    ) -> Option<(String, usize)> {
        let mut sent = 0;
        loop {
            let page = recovery
                .journal
                .page(&offset, &self.conn.namespace, rooms)
                .await?;
            for Missed { offset, emit } in &page.missed {
                while self.socket.buffered_bytes() > self.namespace.limits.backlog_bytes {
                    if !self.socket.connected() {
                        return None;
                    }
                    tokio::time::sleep(BACKLOG_PACE).await;
                }
                if self
                    .socket
                    .emit(&emit.event, &emit.payload.followed_by(offset))
                    .is_err()
                {
                    return None;
                }
            }
            sent += page.missed.len();
            match page.last {
                Some(last) if page_was_full(&page) => offset = last,
                Some(last) => return Some((last, sent)),
                None => return Some((offset, sent)),
            }
        }
    }

    /// A session that cannot catch up is not resumed with a gap: its
    /// connection is closed as if lost, so its client reconnects by itself
    /// (it would not after a DISCONNECT) and either recovers from what it
    /// last received or, that being gone, starts over with
    /// `recovered === false`.
    fn recovery_failed(&self) {
        tracing::warn!(
            socket = %self.conn.socket_id,
            namespace = %self.conn.namespace,
            "a recovering session could not catch up (its events left the journal, server.recovery.max_events, or Redis failed); closing its connection for its client to reconnect"
        );
        metrics::recovery(&self.conn.namespace, "too_late");
        self.socket.close_transport();
    }

    /// Keeps the session of a socket whose connection was lost, for its
    /// client to come back to: its plugins then see no disconnect until the
    /// session is over. False when the socket goes for good.
    async fn suspend(&self, reason: &str) -> bool {
        let (Some(recovery), Some(Held(lease)), Some(pid)) =
            (&self.namespace.recovery, self.held, self.socket.pid())
        else {
            return false;
        };
        let rooms = self
            .socket
            .rooms()
            .into_iter()
            .map(|room| room.into_owned())
            .collect();
        let deadline = Instant::now() + recovery.window;
        let suspension = recovery
            .sessions
            .suspend(pid, lease, rooms, reason, deadline, recovery.max_waiting)
            .await;
        match suspension {
            Suspension::Kept => {
                if let Some(liveness) = &self.namespace.liveness {
                    // Not this node's any more: if it dies, the session is not its.
                    liveness.disconnected(&self.conn).await;
                }
                true
            }
            Suspension::Gone => false,
            Suspension::Full => {
                recovery.not_kept(&self.conn.namespace);
                false
            }
        }
    }

    async fn disconnected(&self, reason: &str) {
        if let (Some(recovery), Some(Held(lease)), Some(pid)) =
            (&self.namespace.recovery, self.held, self.socket.pid())
        {
            recovery.sessions.close(pid, lease).await;
        }
        self.namespace.disconnect_plugins(&self.conn, reason).await;
        if let Some(liveness) = &self.namespace.liveness {
            liveness.disconnected(&self.conn).await;
        }
    }
}

/// How often a recovering socket's backlog checks whether its client read
/// what it was sent.
const BACKLOG_PACE: Duration = Duration::from_millis(10);

fn page_was_full(page: &Page) -> bool {
    page.scanned == PAGE
}

/// A recovering socket: sent what it missed, then put back in its rooms.
struct CatchingUp<'a, A: Adapter> {
    socket: &'a SocketRef<A>,
    rooms: &'a [String],
    sent: usize,
}

impl<A: Adapter> CatchUp for CatchingUp<'_, A> {
    fn missed(&mut self, missed: &[Missed]) {
        for Missed { offset, emit } in missed {
            if let Err(error) = self
                .socket
                .emit(&emit.event, &emit.payload.followed_by(offset))
            {
                tracing::debug!(socket = %self.socket.id, "missed event not sent: {error}");
            }
        }
        self.sent += missed.len();
    }

    fn caught_up(&mut self) {
        self.socket.join(self.rooms.to_vec());
        self.socket.join(EVERY_SOCKET);
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

/// The `reason` label of a disconnect in the metrics.
fn disconnect_label(reason: &DisconnectReason) -> &'static str {
    match reason {
        DisconnectReason::TransportClose => "transport_close",
        DisconnectReason::TransportError => "transport_error",
        DisconnectReason::MultipleHttpPollingError | DisconnectReason::PacketParsingError => {
            "protocol_error"
        }
        DisconnectReason::HeartbeatTimeout => "ping_timeout",
        DisconnectReason::SlowClient => "slow_client",
        DisconnectReason::ClientNSDisconnect => "client_disconnect",
        DisconnectReason::ServerNSDisconnect => "server_disconnect",
        DisconnectReason::ClosingServer => "shutdown",
    }
}

fn event_name(packet: &Value) -> Option<String> {
    let text = packet.as_str()?;
    payload::split_event(text, None)
        .ok()
        .map(|parts| parts.event.to_string())
}
