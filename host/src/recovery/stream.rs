//! The journal of a cluster: one Redis stream all nodes append their emits
//! to and every node reads, delivering each entry to its own sockets in
//! stream order. The entry's id is its offset. The stream keeps the last
//! `max_events` entries, and none older than the recovery window.
//!
//! Reading is pulled, at the reader's pace: an entry is never skipped because
//! a node fell behind (it catches up from its last id). While Redis is away,
//! a node's emits wait in a bounded outbox and are appended in order once it
//! is back; an emit that would overfill the outbox fails with
//! `cluster_unavailable`, and is counted.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use fred::prelude::{Client, ClientLike, StreamsInterface};
use fred::types::Value;
use fred::types::streams::{XCap, XCapKind, XCapTrim, XReadResponse};

use super::REDIS_RETRIED_FOR;
use super::journal::{CatchUp, Emit, Journal, LocalDelivery, PAGE, Page};
use crate::bindings::Payload;
use crate::cluster::{Backoff, retried};
use crate::manifest::RecoverySettings;
use crate::metrics;
use crate::payload::Outgoing;
use crate::transport::SocketsError;

/// Entries one read or catch-up takes at most.
const BATCH: u64 = PAGE as u64;
/// How long a read waits for new entries (below the commands' timeout).
const BLOCK_MS: u64 = 250;
/// The least time from one read to the next after a read found entries.
/// Under load the next read then takes several, and each socket gets them in
/// one write instead of a write (a syscall, a TCP segment) per entry: two
/// nodes at 400 msg/s to 2,000 subscribers spent four times one node's CPU
/// per delivery on those writes. It adds at most this to a delivery, and
/// only while entries keep coming faster than that.
const COALESCE: Duration = Duration::from_millis(10);
/// How often a node checks the stream was not reset under it.
const RESET_CHECK_EVERY: Duration = Duration::from_secs(1);
/// How often the stream is trimmed to the recovery window.
const TRIM_EVERY: Duration = Duration::from_secs(5);
/// How long a recovering client waits for this node to have delivered what
/// it had already received on another node.
const CATCH_UP_WAIT: Duration = Duration::from_secs(2);
/// Emits kept while Redis is away, at most, in bytes.
pub const OUTBOX_BYTES: usize = 64 << 20;
/// The length the stream is kept to when recovery is off: enough for every
/// node to read what it has not read yet.
const UNRECOVERED_LENGTH: u64 = 10_000;

/// Field names of an entry.
const NAMESPACE: &str = "n";
const ROOM: &str = "r";
const EXCEPT: &str = "x";
const EVENT: &str = "e";
/// The JSON text of an emit's one argument: what nodes before WIT 0.2
/// wrote, and still read during a rolling upgrade.
const ONE_ARGUMENT: &str = "j";
/// An emit's arguments but one, as one JSON array.
const ARGUMENTS: &str = "J";
/// Attachment `i` is the field `a{i}`.
const ATTACHMENT: &str = "a";

pub struct StreamJournal {
    commands: Client,
    key: String,
    local: Arc<dyn LocalDelivery>,
    /// `None`: recovery is off; entries carry no offset to clients.
    limits: Option<RecoverySettings>,
    /// The id of the last entry this node delivered, held while delivering.
    delivered: tokio::sync::Mutex<String>,
    outbox: Mutex<Outbox>,
}

/// Emits not appended yet because Redis was unreachable, in order.
#[derive(Default)]
struct Outbox {
    entries: VecDeque<Vec<(String, Bytes)>>,
    bytes: usize,
}

impl StreamJournal {
    /// Starts reading the stream (with its own connection `reader`, as reads
    /// block) and draining the outbox; runs until the process ends.
    pub async fn start(
        commands: Client,
        reader: Client,
        prefix: &str,
        local: Arc<dyn LocalDelivery>,
        limits: Option<RecoverySettings>,
    ) -> Arc<Self> {
        let key = format!("{prefix}:journal");
        // Entries appended from now on are this node's to deliver.
        let last = last_id(&commands, &key).await;
        let journal = Arc::new(Self {
            commands,
            key,
            local,
            limits,
            delivered: tokio::sync::Mutex::new(last),
            outbox: Mutex::new(Outbox::default()),
        });
        tokio::spawn(journal.clone().read(reader));
        tokio::spawn(journal.clone().maintain());
        journal
    }

    fn max_length(&self) -> u64 {
        self.limits
            .map_or(UNRECOVERED_LENGTH, |limits| limits.max_events)
    }

    async fn append(&self, fields: Vec<(String, Bytes)>) -> Result<(), fred::error::Error> {
        let cap = XCap::try_from((
            XCapKind::MaxLen,
            XCapTrim::AlmostExact,
            i64::try_from(self.max_length()).unwrap_or(i64::MAX),
        ))?;
        let started = std::time::Instant::now();
        let appended: Result<String, _> =
            self.commands.xadd(&self.key, false, cap, "*", fields).await;
        metrics::redis_command("journal", started.elapsed());
        appended.map(drop)
    }

    /// Delivers every entry appended, in order, for as long as the process
    /// runs; after a Redis outage it resumes where it stopped.
    async fn read(self: Arc<Self>, reader: Client) {
        let mut backoff = Backoff::new();
        loop {
            let read_started = tokio::time::Instant::now();
            let last = self.delivered.lock().await.clone();
            let read = reader
                .xread::<Value, _, _>(
                    Some(BATCH),
                    Some(BLOCK_MS),
                    self.key.as_str(),
                    last.as_str(),
                )
                .await
                .and_then(new_entries);
            match read {
                Ok(mut streams) => {
                    backoff = Backoff::new();
                    let entries = streams.remove(&self.key).unwrap_or_default();
                    let busy = !entries.is_empty();
                    self.deliver(entries).await;
                    if busy {
                        tokio::time::sleep_until(read_started + COALESCE).await;
                    }
                }
                Err(error) => {
                    let delay = backoff.delay();
                    tracing::debug!(
                        "cannot read the cluster's journal ({error}); retrying in {delay:?}"
                    );
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// After Redis was away: if the stream now ends before what this node
    /// delivered, it was reset (Redis restarted without persistence, on a
    /// clock behind the old one), and entries appended since would have ids
    /// below it and never be read; reading starts over from the stream's
    /// start.
    async fn restart_if_reset(&self) {
        // Held first, so the reader cannot deliver past what is asked for.
        let mut delivered = self.delivered.lock().await;
        let Ok(last) = last_entry(&self.commands, &self.key).await else {
            return;
        };
        if stream_id(&last) < stream_id(&delivered) {
            tracing::warn!(
                delivered = %*delivered,
                last = %last,
                "the cluster's journal was reset (Redis restarted without its data?); reading it from its start"
            );
            *delivered = "0-0".to_owned();
        }
    }

    async fn deliver(&self, entries: Vec<(String, HashMap<String, Bytes>)>) {
        let mut delivered = self.delivered.lock().await;
        for (id, fields) in entries {
            match decode(&fields) {
                Some(emit) => {
                    let offset = self.limits.is_some().then_some(id.as_str());
                    if let Err(error) = self.local.deliver(&emit, offset).await {
                        tracing::debug!(entry = %id, "journal entry not delivered here: {error}");
                    }
                }
                None => tracing::warn!(entry = %id, "skipped a malformed journal entry"),
            }
            *delivered = id;
        }
    }

    /// Appends what waits in the outbox once Redis is back, keeps the stream
    /// within the recovery window,
    /// and checks it was not reset under this node's reader (which may not
    /// have seen an error: its command can be retried on the new Redis).
    async fn maintain(self: Arc<Self>) {
        let mut trimmed = tokio::time::Instant::now();
        let mut checked = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if checked.elapsed() >= RESET_CHECK_EVERY {
                checked = tokio::time::Instant::now();
                self.restart_if_reset().await;
            }
            self.drain_outbox().await;
            if let Some(limits) = self.limits
                && trimmed.elapsed() >= TRIM_EVERY
            {
                trimmed = tokio::time::Instant::now();
                self.trim(limits.max_disconnection).await;
            }
        }
    }

    async fn drain_outbox(&self) {
        loop {
            let next = {
                let outbox = self
                    .outbox
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                outbox.entries.front().cloned()
            };
            let Some(fields) = next else { return };
            if !self.commands.is_connected() || self.append(fields).await.is_err() {
                return;
            }
            let mut outbox = self
                .outbox
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Some(sent) = outbox.entries.pop_front() {
                outbox.bytes -= size(&sent);
            }
            metrics::outbox(outbox.bytes);
            if outbox.entries.is_empty() {
                tracing::info!("Redis is back: the emits kept meanwhile are published");
            }
        }
    }

    async fn trim(&self, window: Duration) {
        let oldest = std::time::SystemTime::now()
            .checked_sub(window)
            .and_then(|time| time.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |since| since.as_millis());
        let Ok(cap) = XCap::try_from((
            XCapKind::MinID,
            XCapTrim::AlmostExact,
            format!("{oldest}-0"),
        )) else {
            return;
        };
        let trimmed: Result<i64, _> = self.commands.xtrim(&self.key, cap).await;
        if let Err(error) = trimmed {
            tracing::debug!("cannot trim the cluster's journal: {error}");
        }
    }

    /// Keeps `fields` for later; fails when the outbox is full.
    fn keep(&self, fields: Vec<(String, Bytes)>) -> Result<(), SocketsError> {
        let mut outbox = self
            .outbox
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let bytes = size(&fields);
        if outbox.bytes + bytes > OUTBOX_BYTES {
            metrics::emit_refused("outbox_full");
            return Err(SocketsError::Unavailable(format!(
                "the cluster's Redis is unreachable and {} bytes of emits already wait for it; try again later",
                outbox.bytes
            )));
        }
        if outbox.entries.is_empty() {
            tracing::warn!(
                "Redis is unreachable: emits wait in this node's outbox until it is back"
            );
        }
        outbox.bytes += bytes;
        outbox.entries.push_back(fields);
        metrics::outbox(outbox.bytes);
        Ok(())
    }
}

#[async_trait]
impl Journal for StreamJournal {
    async fn publish(&self, emit: Emit) -> Result<(), SocketsError> {
        let fields = encode(emit);
        let waiting = !self
            .outbox
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entries
            .is_empty();
        // Behind what already waits, so a node's emits stay in order.
        if waiting || !self.commands.is_connected() {
            return self.keep(fields);
        }
        match self.append(fields.clone()).await {
            Ok(()) => Ok(()),
            Err(error) => {
                tracing::debug!("emit not appended to the cluster's journal ({error}); kept");
                self.keep(fields)
            }
        }
    }

    async fn covers(&self, offset: &str) -> bool {
        if !is_stream_id(offset) {
            return false;
        }
        xrange_retried(&self.commands, &self.key, offset, offset, 1)
            .await
            .is_ok_and(|entries| !entries.is_empty())
    }

    async fn head(&self) -> String {
        self.delivered.lock().await.clone()
    }

    async fn page(&self, offset: &str, namespace: &str, rooms: &[String]) -> Option<Page> {
        let delivered = self.delivered.lock().await.clone();
        if !self.covers(offset).await {
            return None;
        }
        self.read_page(offset, &delivered, namespace, rooms).await
    }

    async fn catch_up(
        &self,
        offset: &str,
        namespace: &str,
        rooms: &[String],
        catch_up: &mut dyn CatchUp,
    ) -> bool {
        let Some(delivered) = self.delivered_past(offset).await else {
            return false;
        };
        if !self.covers(offset).await {
            return false;
        }
        // Up to what this node delivered: the rest reaches the socket live.
        let mut after = offset.to_owned();
        loop {
            let Some(page) = self.read_page(&after, &delivered, namespace, rooms).await else {
                return false;
            };
            catch_up.missed(&page.missed);
            match page.last {
                Some(last) => after = last,
                None => break,
            }
        }
        catch_up.caught_up();
        true
    }
}

impl StreamJournal {
    /// Holds delivery once this node has delivered `offset`: a client coming
    /// from a node that read further must not get again what it had. `None`
    /// if this node does not get there within [`CATCH_UP_WAIT`].
    async fn delivered_past(&self, offset: &str) -> Option<tokio::sync::MutexGuard<'_, String>> {
        let wanted = stream_id(offset)?;
        let waiting = tokio::time::Instant::now();
        loop {
            let delivered = self.delivered.lock().await;
            if stream_id(&delivered).is_some_and(|delivered| delivered >= wanted) {
                return Some(delivered);
            }
            drop(delivered);
            if waiting.elapsed() >= CATCH_UP_WAIT {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Entries after `offset` up to `delivered`, at most [`PAGE`].
    async fn read_page(
        &self,
        offset: &str,
        delivered: &str,
        namespace: &str,
        rooms: &[String],
    ) -> Option<Page> {
        let read = xrange_retried(
            &self.commands,
            &self.key,
            &format!("({offset}"),
            delivered,
            BATCH,
        )
        .await
        .ok()?;
        let read = read
            .into_iter()
            .filter_map(|(id, fields)| Some((id, Arc::new(decode(&fields)?))))
            .collect();
        Some(Page::of(read, namespace, rooms))
    }
}

/// The entries from `start` to `end` (at most `count`), read again with
/// backoff while Redis fails the read, for at most [`REDIS_RETRIED_FOR`].
async fn xrange_retried(
    commands: &Client,
    key: &str,
    start: &str,
    end: &str,
    count: u64,
) -> Result<Vec<(String, HashMap<String, Bytes>)>, fred::error::Error> {
    retried(
        "reading the journal for a recovering session",
        REDIS_RETRIED_FOR,
        || commands.xrange_values(key, start, end, Some(count)),
    )
    .await
}

/// What a blocking `XREAD` returned. A read that waited `BLOCK_MS` for
/// nothing answers nil, which is no entries, not an error: taken for one,
/// an idle journal backed off up to 5 s, and so delayed the next emits.
fn new_entries(
    read: Value,
) -> Result<XReadResponse<String, String, String, Bytes>, fred::error::Error> {
    if read.is_null() {
        return Ok(HashMap::new());
    }
    read.into_xread_response()
}

/// The id of the stream's last entry, `0-0` when it has none (or Redis
/// cannot be asked).
async fn last_id(commands: &Client, key: &str) -> String {
    last_entry(commands, key)
        .await
        .unwrap_or_else(|_| "0-0".to_owned())
}

async fn last_entry(commands: &Client, key: &str) -> Result<String, fred::error::Error> {
    let last: Vec<(String, HashMap<String, Bytes>)> =
        commands.xrevrange_values(key, "+", "-", Some(1)).await?;
    Ok(last
        .into_iter()
        .next()
        .map_or_else(|| "0-0".to_owned(), |(id, _)| id))
}

/// A stream entry id as its two numbers, which order entries.
fn stream_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

fn is_stream_id(offset: &str) -> bool {
    stream_id(offset).is_some()
}

fn size(fields: &[(String, Bytes)]) -> usize {
    fields
        .iter()
        .map(|(name, value)| name.len() + value.len())
        .sum()
}

fn encode(emit: Emit) -> Vec<(String, Bytes)> {
    let mut fields = vec![
        (NAMESPACE.to_owned(), Bytes::from(emit.namespace)),
        (EVENT.to_owned(), Bytes::from(emit.event)),
    ];
    if let Some(room) = emit.room {
        fields.push((ROOM.to_owned(), Bytes::from(room)));
    }
    if let Some(except) = emit.except {
        fields.push((EXCEPT.to_owned(), Bytes::from(except)));
    }
    match emit.payload.only_argument() {
        Some(json) => fields.push((ONE_ARGUMENT.to_owned(), Bytes::from(json))),
        None => fields.push((ARGUMENTS.to_owned(), Bytes::from(emit.payload.json_array()))),
    }
    for (index, attachment) in emit.payload.into_attachments().into_iter().enumerate() {
        fields.push((format!("{ATTACHMENT}{index}"), Bytes::from(attachment)));
    }
    fields
}

fn decode(fields: &HashMap<String, Bytes>) -> Option<Emit> {
    let text = |name: &str| {
        fields
            .get(name)
            .and_then(|value| String::from_utf8(value.to_vec()).ok())
    };
    let attachments = (0..)
        .map_while(|index| fields.get(&format!("{ATTACHMENT}{index}")))
        .map(|bytes| bytes.to_vec())
        .collect();
    let payload = match text(ARGUMENTS) {
        Some(arguments) => Outgoing::from_json_array(&arguments, attachments)?,
        None => Outgoing::new(Payload {
            args: vec![text(ONE_ARGUMENT)?],
            attachments,
        })
        .ok()?,
    };
    Some(Emit {
        namespace: text(NAMESPACE)?,
        room: text(ROOM),
        except: text(EXCEPT),
        event: text(EVENT)?,
        payload,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use fred::prelude::{Builder, ClientLike, Config, StreamsInterface};

    use super::xrange_retried;
    use crate::cluster::test_redis::RedisServer;

    #[tokio::test]
    async fn a_read_that_times_out_while_redis_stalls_is_tried_again() {
        let server = RedisServer::start();
        let mut builder = Builder::from_config(Config::from_url(&server.url()).unwrap());
        builder.with_performance_config(|performance| {
            performance.default_command_timeout = Duration::from_millis(200);
        });
        let client = builder.build().unwrap();
        client.init().await.unwrap();
        let id: String = client
            .xadd("journal", false, None, "*", ("e", "kept"))
            .await
            .unwrap();

        // Stalled for several command timeouts, as an overloaded Redis is.
        server.pause();
        let resume = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            server.resume();
            server
        });
        let read = xrange_retried(&client, "journal", &id, &id, 1).await;
        let _server = resume.await.unwrap();
        let entries = read.expect("read once Redis answers again");
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].0, id);
    }
}
