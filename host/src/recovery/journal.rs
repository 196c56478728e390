//! The journal every emit goes through: it gives each emit its offset, keeps
//! it for the recovery window, and delivers it to this node's sockets in
//! offset order. A recovering socket catches up while delivery waits, so it
//! sees every emit once, in order.
//!
//! A node alone keeps it in memory ([`MemoryJournal`]); a cluster in a Redis
//! stream ([`super::stream::StreamJournal`]).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex as SyncMutex};

use async_trait::async_trait;
use tokio::sync::{Mutex, mpsc};
use tokio::time::Instant;

use crate::escaped::Escaped;
use crate::manifest::RecoverySettings;
use crate::payload::Outgoing;
use crate::transport::SocketsError;

/// An emit as plugins and the HTTP API make it.
pub struct Emit {
    pub namespace: String,
    /// `None`: every socket of the namespace.
    pub room: Option<String>,
    /// A room (usually a socket's) left out.
    pub except: Option<String>,
    pub event: String,
    pub payload: Outgoing,
}

impl Emit {
    /// Whether a socket in `rooms` of `namespace` is addressed.
    pub fn reaches(&self, namespace: &str, rooms: &[String]) -> bool {
        let member = |room: &String| rooms.iter().any(|own| own == room);
        self.namespace == namespace
            && self.room.as_ref().is_none_or(member)
            && !self.except.as_ref().is_some_and(member)
    }

    pub(super) fn bytes(&self) -> usize {
        self.namespace.len() + self.event.len() + self.payload.size()
    }
}

/// Delivers to the sockets connected to this node.
#[async_trait]
pub trait LocalDelivery: Send + Sync + 'static {
    /// `offset`: appended as the event's last argument, for recovery.
    async fn deliver(&self, emit: &Emit, offset: Option<&str>) -> Result<(), SocketsError>;
}

struct Kept {
    offset: u64,
    emit: Arc<Emit>,
    at: Instant,
    bytes: usize,
}

/// What a node keeps in memory: the emits of the last window, bounded in
/// count and bytes.
#[derive(Default)]
struct Log {
    /// The offset of the next emit; 0 is never given, so a client's first
    /// offset is at least 1.
    last: u64,
    kept: VecDeque<Kept>,
    bytes: usize,
}

impl Log {
    fn keep(&mut self, kept: Kept, limits: &RecoverySettings) {
        self.bytes += kept.bytes;
        self.kept.push_back(kept);
        let now = Instant::now();
        while let Some(oldest) = self.kept.front() {
            let stale = now.duration_since(oldest.at) > limits.max_disconnection;
            let over = self.kept.len() as u64 > limits.max_events || self.bytes > limits.max_bytes;
            if !stale && !over {
                break;
            }
            self.bytes -= oldest.bytes;
            self.kept.pop_front();
        }
    }

    /// At most `limit` emits after `offset` up to `until`, if `offset` is covered.
    fn after(&self, offset: &str, until: u64, limit: usize) -> Option<Vec<(String, Arc<Emit>)>> {
        let offset = offset
            .parse::<u64>()
            .ok()
            .filter(|offset| self.covers(*offset))?;
        Some(
            self.kept
                .iter()
                .skip_while(|kept| kept.offset <= offset)
                .take_while(|kept| kept.offset <= until)
                .take(limit)
                .map(|kept| (kept.offset.to_string(), kept.emit.clone()))
                .collect(),
        )
    }

    /// Whether every emit after `offset` is still kept.
    fn covers(&self, offset: u64) -> bool {
        let first = self.kept.front().map_or(self.last + 1, |kept| kept.offset);
        offset <= self.last && offset + 1 >= first
    }
}

/// An emit a recovering socket missed, with its offset.
pub struct Missed {
    pub offset: String,
    pub emit: Arc<Emit>,
}

/// A recovering socket catching up, while nothing else is delivered.
pub trait CatchUp: Send {
    /// Sends it missed emits, in order (called once per batch).
    fn missed(&mut self, missed: &[Missed]);
    /// Every missed emit is sent: it joins its rooms.
    fn caught_up(&mut self);
}

/// Emits kept after an offset, read while emits go on being delivered.
pub struct Page {
    /// Those that reach the socket.
    pub missed: Vec<Missed>,
    /// The offset of the last emit read (reaching the socket or not); `None`
    /// when there was none after the offset.
    pub last: Option<String>,
    /// How many emits were read: fewer than [`PAGE`] when the page ends at
    /// the last emit delivered.
    pub scanned: usize,
}

impl Page {
    /// The page of the emits `read` (in order), for a socket in `rooms` of
    /// `namespace`.
    pub fn of(read: Vec<(String, Arc<Emit>)>, namespace: &str, rooms: &[String]) -> Self {
        Self {
            last: read.last().map(|(offset, _)| offset.clone()),
            scanned: read.len(),
            missed: read
                .into_iter()
                .filter(|(_, emit)| emit.reaches(namespace, rooms))
                .map(|(offset, emit)| Missed { offset, emit })
                .collect(),
        }
    }
}

/// Emits one [`Journal::page`] reads at most.
pub const PAGE: usize = 512;

#[async_trait]
pub trait Journal: Send + Sync + 'static {
    /// Gives `emit` its offset and has every node deliver it to its sockets.
    async fn publish(&self, emit: Emit) -> Result<(), SocketsError>;
    /// Whether a session that last saw `offset` can still catch up.
    async fn covers(&self, offset: &str) -> bool;
    /// The offset of the last emit delivered on this node: a session opened
    /// now missed nothing up to it.
    async fn head(&self) -> String;
    /// Up to [`PAGE`] emits after `offset` (among those this node delivered)
    /// and which of them reach a socket in `rooms` of `namespace`, without
    /// holding up delivery: for a large backlog, sent at the client's pace
    /// before [`Journal::catch_up`]. `None` when `offset` is no longer covered.
    async fn page(&self, offset: &str, namespace: &str, rooms: &[String]) -> Option<Page>;
    /// Runs `catch_up` with the emits after `offset` that reach a socket in
    /// `rooms` of `namespace`, while no emit is delivered on this node: what
    /// it sends, and the rooms it joins, come before anything published
    /// meanwhile. False (and nothing sent) when `offset` is no longer
    /// covered.
    async fn catch_up(
        &self,
        offset: &str,
        namespace: &str,
        rooms: &[String],
        catch_up: &mut dyn CatchUp,
    ) -> bool;
}

/// Emits a node alone may have waiting for delivery before further ones are
/// refused: delivery keeps up unless the node is overloaded.
const MAX_UNDELIVERED: usize = 65_536;

/// An emit waiting for delivery, with its offset (`None`: recovery is off).
struct Undelivered {
    offset: Option<u64>,
    emit: Arc<Emit>,
}

/// The journal of a node alone. Emits are delivered in offset order by one
/// task on the server's runtime, whichever thread published them: a plugin
/// call that went on on the plugin threads would otherwise wake every
/// recipient's writer from outside the runtime, one thread wake-up each.
pub struct MemoryJournal {
    log: Arc<SyncMutex<Log>>,
    /// Taken with `log` held, so the queue is in offset order.
    deliveries: mpsc::Sender<Undelivered>,
    /// The offset of the last emit delivered, held while delivering.
    delivered: Arc<Mutex<u64>>,
    /// `None`: recovery is off; nothing is kept and emits carry no offset.
    limits: Option<RecoverySettings>,
}

impl MemoryJournal {
    /// Starts the delivery task on the current runtime.
    pub fn new(local: Arc<dyn LocalDelivery>, limits: Option<RecoverySettings>) -> Self {
        let (deliveries, queue) = mpsc::channel(MAX_UNDELIVERED);
        let delivered = Arc::new(Mutex::new(0));
        tokio::spawn(deliver_in_order(queue, local, delivered.clone()));
        Self {
            log: Arc::new(SyncMutex::new(Log::default())),
            deliveries,
            delivered,
            limits,
        }
    }

    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

async fn deliver_in_order(
    mut queue: mpsc::Receiver<Undelivered>,
    local: Arc<dyn LocalDelivery>,
    delivered: Arc<Mutex<u64>>,
) {
    while let Some(Undelivered { offset, emit }) = queue.recv().await {
        let mut last = delivered.lock().await;
        let text = offset.map(|offset| offset.to_string());
        if let Err(error) = local.deliver(&emit, text.as_deref()).await {
            tracing::warn!(event = %Escaped(&emit.event), "an emit was not delivered: {error}");
        }
        if let Some(offset) = offset {
            *last = offset;
        }
    }
}

#[async_trait]
impl Journal for MemoryJournal {
    async fn publish(&self, emit: Emit) -> Result<(), SocketsError> {
        let emit = Arc::new(emit);
        let mut log = self.log();
        let offset = self.limits.as_ref().map(|limits| {
            log.last += 1;
            let kept = Kept {
                offset: log.last,
                emit: emit.clone(),
                at: Instant::now(),
                bytes: emit.bytes(),
            };
            log.keep(kept, limits);
            log.last
        });
        self.deliveries
            .try_send(Undelivered { offset, emit })
            .map_err(|_| {
                SocketsError::Unavailable(format!(
                    "this node has {MAX_UNDELIVERED} emits waiting to be delivered; try again later"
                ))
            })
    }

    async fn covers(&self, offset: &str) -> bool {
        let Ok(offset) = offset.parse() else {
            return false;
        };
        self.log().covers(offset)
    }

    async fn head(&self) -> String {
        self.delivered.lock().await.to_string()
    }

    async fn page(&self, offset: &str, namespace: &str, rooms: &[String]) -> Option<Page> {
        let delivered = *self.delivered.lock().await;
        let read = self.log().after(offset, delivered, PAGE)?;
        Some(Page::of(read, namespace, rooms))
    }

    async fn catch_up(
        &self,
        offset: &str,
        namespace: &str,
        rooms: &[String],
        catch_up: &mut dyn CatchUp,
    ) -> bool {
        // Delivery waits meanwhile: what is delivered after this reaches the
        // socket live, in its rooms.
        let delivered = self.delivered.lock().await;
        let Some(read) = self.log().after(offset, *delivered, usize::MAX) else {
            return false;
        };
        catch_up.missed(&Page::of(read, namespace, rooms).missed);
        catch_up.caught_up();
        true
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn limits(max_events: u64, max_bytes: usize) -> RecoverySettings {
        RecoverySettings {
            max_disconnection: Duration::from_secs(60),
            max_events,
            max_bytes,
            max_waiting_sessions: usize::MAX,
        }
    }

    fn emit(room: Option<&str>, except: Option<&str>) -> Emit {
        Emit {
            namespace: "/".to_owned(),
            room: room.map(str::to_owned),
            except: except.map(str::to_owned),
            event: "e".to_owned(),
            payload: Outgoing::new(crate::payload::one_argument("1".to_owned()))
                .expect("valid JSON"),
        }
    }

    fn kept(log: &mut Log, limits: &RecoverySettings) {
        log.last += 1;
        let emit = emit(None, None);
        let bytes = emit.bytes();
        log.keep(
            Kept {
                offset: log.last,
                emit: Arc::new(emit),
                at: Instant::now(),
                bytes,
            },
            limits,
        );
    }

    #[test]
    fn an_offset_is_covered_while_every_emit_after_it_is_kept() {
        let limits = limits(3, usize::MAX);
        let mut log = Log::default();
        assert!(log.covers(0), "nothing was missed before the first emit");
        for _ in 0..5 {
            kept(&mut log, &limits);
        }
        // Emits 3, 4 and 5 are kept.
        assert!(!log.covers(1), "emit 2 is gone");
        assert!(log.covers(2));
        assert!(log.covers(5));
        assert!(!log.covers(6), "an offset never given");
    }

    #[test]
    fn the_journal_is_bounded_in_bytes() {
        let one = emit(None, None).bytes();
        let limits = limits(u64::MAX, 2 * one);
        let mut log = Log::default();
        for _ in 0..10 {
            kept(&mut log, &limits);
        }
        assert_eq!(log.kept.len(), 2);
        assert_eq!(log.bytes, 2 * one);
    }

    #[test]
    fn an_emit_reaches_the_rooms_it_names_but_not_the_one_it_leaves_out() {
        let rooms = ["socket:a".to_owned(), "lobby".to_owned()];
        assert!(emit(None, None).reaches("/", &rooms));
        assert!(emit(Some("lobby"), None).reaches("/", &rooms));
        assert!(!emit(Some("other"), None).reaches("/", &rooms));
        assert!(!emit(Some("lobby"), Some("socket:a")).reaches("/", &rooms));
        assert!(!emit(None, None).reaches("/chat", &rooms));
    }
}
