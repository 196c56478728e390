//! Prometheus metrics: the process's recorder, and every series the host
//! records, named and described in one place.
//!
//! Labels only take values the manifest or the host bounds (namespaces,
//! plugin names, the events a manifest routes, host reasons, and at most
//! [`MAX_CODES_PER_EVENT`] of the error codes a plugin gives per event),
//! never free text a client chooses, so no client can grow the number of
//! series.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

pub use metrics::{Counter, Histogram};
use metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use thread_local::ThreadLocal;

/// Sockets connected to this node, per namespace.
pub const CONNECTIONS: &str = "switchboard_connections";
/// Sockets that left, per namespace and reason.
pub const DISCONNECTS: &str = "switchboard_disconnects_total";
/// Events from clients routed to a plugin, per namespace, plugin, event and
/// outcome (`ok` or the error code the client got).
pub const EVENTS: &str = "switchboard_events_total";
/// Events refused before any plugin saw them, per namespace and error code
/// (`unknown_event`, `payload_too_large`, `overloaded`, `invalid_packet`...).
pub const EVENTS_REFUSED: &str = "switchboard_events_refused_total";
/// Times a socket's events used up its budget of plugin time or bytes sent,
/// per namespace: its next event then waits for the refill.
pub const BUDGETS_EXHAUSTED: &str = "switchboard_budgets_exhausted_total";
/// Plugin calls whose commit found state they read changed by another call,
/// per plugin: each is run again, or fails with `conflict` after the last.
pub const PLUGIN_CONFLICTS: &str = "switchboard_plugin_conflicts_total";
/// Log lines a plugin wrote past its `limits.log_lines_per_second`, dropped.
pub const PLUGIN_LOG_LINES_DROPPED: &str = "switchboard_plugin_log_lines_dropped_total";
/// Times a connection's reading paused for `packets_per_second_per_connection`.
pub const READS_PACED: &str = "switchboard_reads_paced_total";
/// Route requests refused for their caller's rates, per plugin.
pub const ROUTE_RATE_LIMITED: &str = "switchboard_route_requests_rate_limited_total";
/// Whether this node's Redis connections are up (1) or not (0).
pub const REDIS_CONNECTED: &str = "switchboard_redis_connected";
/// Times this node's Redis connections came back after a loss.
pub const REDIS_RECONNECTS: &str = "switchboard_redis_reconnects_total";

/// Sessions of connection-state recovery, per namespace and outcome:
/// `recovered`, `expired` (the client did not come back in time),
/// `too_late` (its missed events left the journal while it reconnected),
/// `not_kept` (`max_waiting_sessions` waited already).
pub const SESSIONS: &str = "switchboard_sessions_total";

/// Bytes of emits waiting in this node's outbox for the cluster's Redis.
pub const OUTBOX_BYTES: &str = "switchboard_outbox_bytes";
/// Emits that failed before reaching anyone, per reason (`outbox_full`).
pub const EMITS_REFUSED: &str = "switchboard_emits_refused_total";

/// Plugin calls (any export), per plugin: a histogram of their duration.
pub const PLUGIN_CALL_SECONDS: &str = "switchboard_plugin_call_seconds";
/// Plugin calls that failed in the host's terms, per plugin and code
/// (`plugin_trapped`, `plugin_timeout`, `plugin_memory_limit`, ...).
pub const PLUGIN_FAILURES: &str = "switchboard_plugin_failures_total";
/// Emits plugins made that were handed to the transport, per plugin.
pub const EMITS: &str = "switchboard_emits_total";
/// Events plugins sent asking for an acknowledgement, per plugin and
/// outcome: `answered` or why not (`ack_timeout`, `disconnected`, ...).
pub const ACKS: &str = "switchboard_acks_total";
/// Redis round trips the host waits on, per command: `state` (a plugin
/// state script) and `journal` (appending an emit).
pub const REDIS_COMMAND_SECONDS: &str = "switchboard_redis_command_seconds";

/// Writes to WebSocket clients: the frames due for one client, flushed
/// together (one system call unless its socket's buffer filled).
pub const WEBSOCKET_WRITES: &str = "switchboard_websocket_writes_total";
/// Frames (Engine.IO packets) those writes carried: frames per write is how
/// many each write took together, more under load or with
/// `min_write_interval_ms`.
pub const WEBSOCKET_FRAMES_WRITTEN: &str = "switchboard_websocket_frames_written_total";
/// Log lines dropped because stderr took them slower than they came.
pub const LOG_LINES_DROPPED: &str = "switchboard_log_lines_dropped_total";

/// Bytes the process's allocations hold (what the host and plugins use).
pub const MEMORY_ALLOCATED: &str = "switchboard_memory_allocated_bytes";
/// Bytes of physical memory the allocator holds: allocations, its own
/// metadata and freed pages not yet given back to the OS.
pub const MEMORY_RESIDENT: &str = "switchboard_memory_resident_bytes";
/// Allocations the process has made since it started: their rate against
/// the deliveries' shows what each delivery costs the allocator.
pub const MEMORY_ALLOCATIONS: &str = "switchboard_memory_allocations_total";

/// Bucket bounds (seconds) of the latency histograms: sub-millisecond to the
/// default one-second plugin time limit and past it.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// How often histogram samples are folded into their buckets. A histogram
/// keeps each sample it records until then (20 bytes a sample with its
/// share of the bucket's blocks), so this bounds that memory: a node making
/// 100,000 plugin calls a second holds about 2 MB of them.
const UPKEEP_PERIOD: Duration = Duration::from_secs(1);

/// The process's metrics, rendered for `/metrics`.
pub struct Metrics {
    handle: PrometheusHandle,
}

impl Metrics {
    /// The process-wide recorder, installed by the first call.
    pub fn global() -> &'static Metrics {
        static METRICS: OnceLock<Metrics> = OnceLock::new();
        METRICS.get_or_init(|| {
            let recorder = [PLUGIN_CALL_SECONDS, REDIS_COMMAND_SECONDS]
                .into_iter()
                .try_fold(PrometheusBuilder::new(), |builder, name| {
                    builder.set_buckets_for_metric(Matcher::Full(name.to_owned()), LATENCY_BUCKETS)
                })
                .unwrap_or_else(|_| PrometheusBuilder::new())
                .build_recorder();
            let handle = recorder.handle();
            keep_up(handle.clone());
            // Another recorder can only be there if an embedding program set
            // one: its metrics then go there, and ours render empty.
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics shows none of the host's series");
            }
            describe();
            Metrics { handle }
        })
    }

    /// Every series in the Prometheus text format.
    pub fn render(&self) -> String {
        crate::allocator::record_memory();
        record_websocket_writes();
        if let Some(dropped) = DROPPED_LOG_LINES.get() {
            counter!(LOG_LINES_DROPPED).absolute(dropped() as u64);
        }
        self.handle.run_upkeep();
        self.handle.render()
    }
}

/// Folds histogram samples into their buckets every [`UPKEEP_PERIOD`]
/// from a thread of its own. Rendering `/metrics` does it too, but nothing
/// may scrape it: samples would then pile up for every plugin call and
/// Redis command for as long as the process runs.
fn keep_up(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("switchboard-metrics".into())
        .spawn(move || {
            let mut dropped_lines_told = 0;
            loop {
                std::thread::sleep(UPKEEP_PERIOD);
                handle.run_upkeep();
                tell_dropped_log_lines(&mut dropped_lines_told);
            }
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "cannot start the metrics upkeep thread: histogram samples are folded only when /metrics is scraped");
    }
}

/// How many log lines the log's writer has dropped (`log_output`).
static DROPPED_LOG_LINES: OnceLock<Box<dyn Fn() -> usize + Send + Sync>> = OnceLock::new();

/// Has `/metrics` count the log lines `dropped` says were dropped, and the
/// upkeep thread warn of them.
pub fn count_dropped_log_lines(dropped: impl Fn() -> usize + Send + Sync + 'static) {
    let _ = DROPPED_LOG_LINES.set(Box::new(dropped));
}

/// Warns of log lines dropped since `told` were. The warning may be dropped
/// too, while stderr is still stalled: then it is tried again, with the
/// larger count, until one gets through.
fn tell_dropped_log_lines(told: &mut usize) {
    let Some(dropped) = DROPPED_LOG_LINES.get() else {
        return;
    };
    let before = dropped();
    if before == *told {
        return;
    }
    tracing::warn!(
        "{} log lines were dropped: stderr took them slower than they came (switchboard_log_lines_dropped_total)",
        before - *told
    );
    if dropped() == before {
        *told = before;
    }
}

fn describe() {
    describe_histogram!(
        PLUGIN_CALL_SECONDS,
        Unit::Seconds,
        "How long plugin calls took, by plugin (each run of a call that ran again counts)."
    );
    describe_counter!(
        PLUGIN_FAILURES,
        Unit::Count,
        "Plugin calls that failed: trapped, timed out, out of memory, overloaded..., by plugin and code."
    );
    describe_counter!(
        EMITS,
        Unit::Count,
        "Emits plugins made that were handed to the transport, by plugin."
    );
    describe_counter!(
        ACKS,
        Unit::Count,
        "Events plugins sent asking for an ack, by plugin and outcome (answered, ack_timeout, disconnected, not_connected...)."
    );
    describe_histogram!(
        REDIS_COMMAND_SECONDS,
        Unit::Seconds,
        "Redis round trips the host waited on, by command (state, journal)."
    );
    describe_gauge!(CONNECTIONS, Unit::Count, "Sockets connected to this node.");
    describe_gauge!(
        MEMORY_ALLOCATED,
        Unit::Bytes,
        "Bytes in live allocations of this process (host and plugin instances)."
    );
    describe_gauge!(
        MEMORY_RESIDENT,
        Unit::Bytes,
        "Bytes of physical memory the allocator holds, freed pages not yet returned to the OS included."
    );
    describe_counter!(
        MEMORY_ALLOCATIONS,
        Unit::Count,
        "Allocations the process has made since it started."
    );
    describe_counter!(
        WEBSOCKET_WRITES,
        Unit::Count,
        "Writes to WebSocket clients (the frames due for one client, flushed together)."
    );
    describe_counter!(
        WEBSOCKET_FRAMES_WRITTEN,
        Unit::Count,
        "Frames the writes to WebSocket clients carried."
    );
    describe_counter!(DISCONNECTS, Unit::Count, "Sockets that left, by reason.");
    describe_counter!(
        EVENTS,
        Unit::Count,
        "Client events handled by a plugin, by outcome (`ok` or the error code)."
    );
    describe_counter!(
        EVENTS_REFUSED,
        Unit::Count,
        "Client events refused before reaching a plugin, by error code."
    );
    describe_counter!(
        BUDGETS_EXHAUSTED,
        Unit::Count,
        "Times a socket's events used up its budget of plugin time or bytes sent (its next event then waits for the refill), by namespace."
    );
    describe_counter!(
        PLUGIN_CONFLICTS,
        Unit::Count,
        "Plugin calls whose commit conflicted with another call's, by plugin."
    );
    describe_gauge!(
        REDIS_CONNECTED,
        "Whether this node's Redis connections are up."
    );
    describe_counter!(
        SESSIONS,
        Unit::Count,
        "Sessions of sockets that lost their connection, by outcome: recovered, expired, too_late, not_kept."
    );
    describe_gauge!(
        OUTBOX_BYTES,
        Unit::Bytes,
        "Bytes of emits waiting for the cluster's Redis to come back."
    );
    describe_counter!(
        EMITS_REFUSED,
        Unit::Count,
        "Emits refused before reaching anyone, by reason (outbox_full)."
    );
    describe_counter!(
        READS_PACED,
        Unit::Count,
        "Times a connection's reading paused because it sent packets or bytes faster than server.packets_per_second_per_connection or bytes_per_second_per_connection."
    );
    describe_counter!(
        ROUTE_RATE_LIMITED,
        Unit::Count,
        "Plugin route requests refused (429) for their caller's limits.route_requests_per_second or route_plugin_ms_per_second, by plugin."
    );
    describe_counter!(
        PLUGIN_LOG_LINES_DROPPED,
        Unit::Count,
        "Log lines a plugin wrote past its limits.log_lines_per_second, dropped, by plugin."
    );
    describe_counter!(
        LOG_LINES_DROPPED,
        Unit::Count,
        "Log lines dropped because stderr took them slower than they came."
    );
    describe_counter!(
        REDIS_RECONNECTS,
        Unit::Count,
        "Redis connections re-established after a loss."
    );
}

/// One thread's count of WebSocket writes and the frames they carried. On a
/// cache line pair of its own: `ThreadLocal` keeps threads' values side by
/// side, and two cores writing one line would contend as on one counter.
#[derive(Default)]
#[repr(align(128))]
struct WriteCounts {
    writes: AtomicU64,
    frames: AtomicU64,
}

/// A count per thread: writers on every core add to their own, never
/// contending for one counter at every write.
static WRITE_COUNTS: ThreadLocal<WriteCounts> = ThreadLocal::new();

/// Counts a write to a WebSocket client and the frames it carried; called by
/// the transport after every write.
pub fn websocket_written(frames: usize) {
    let counts = WRITE_COUNTS.get_or_default();
    counts.writes.fetch_add(1, Ordering::Relaxed);
    counts.frames.fetch_add(frames as u64, Ordering::Relaxed);
}

/// Sets the write counters to the sum of every thread's count.
fn record_websocket_writes() {
    let (writes, frames) = WRITE_COUNTS
        .iter()
        .fold((0, 0), |(writes, frames), counts| {
            (
                writes + counts.writes.load(Ordering::Relaxed),
                frames + counts.frames.load(Ordering::Relaxed),
            )
        });
    counter!(WEBSOCKET_WRITES).absolute(writes);
    counter!(WEBSOCKET_FRAMES_WRITTEN).absolute(frames);
}

pub fn connected(namespace: &str) {
    gauge!(CONNECTIONS, "namespace" => namespace.to_owned()).increment(1.0);
}

pub fn disconnected(namespace: &str, reason: &'static str) {
    gauge!(CONNECTIONS, "namespace" => namespace.to_owned()).decrement(1.0);
    counter!(DISCONNECTS, "namespace" => namespace.to_owned(), "reason" => reason).increment(1);
}

pub fn event_handled(namespace: &str, plugin: &str, event: &str, outcome: &str) {
    events_handled(namespace, plugin, event, outcome).increment(1);
}

/// Distinct error codes one event's calls are counted under.
pub const MAX_CODES_PER_EVENT: usize = 32;
/// The longest error code counted under its own name.
const MAX_CODE_LABEL_BYTES: usize = 64;
/// What codes past those bounds are counted under.
const OTHER_CODE: &str = "other";

/// The error codes one event has been counted under. A plugin's codes are
/// meant to be a fixed set, but a buggy one may make them up from what
/// clients send: past [`MAX_CODES_PER_EVENT`] distinct codes, or for one
/// over 64 bytes, the count goes to `other` (the client still gets the
/// plugin's code), so the registry and `/metrics` stay bounded.
#[derive(Default)]
pub struct CodeLabels {
    seen: Mutex<HashSet<Box<str>>>,
}

impl CodeLabels {
    /// The label to count `code` under; `on_first_other` runs the first
    /// time a code is counted as `other`.
    pub fn label<'a>(&self, code: &'a str, on_first_other: impl FnOnce()) -> &'a str {
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if seen.contains(code) {
            return code;
        }
        if code.len() <= MAX_CODE_LABEL_BYTES && seen.len() < MAX_CODES_PER_EVENT {
            seen.insert(code.into());
            return code;
        }
        if seen.insert(OTHER_CODE.into()) {
            on_first_other();
        }
        OTHER_CODE
    }
}

/// The counter of one event's calls with one outcome: routes keep the
/// successful one's, so the event path counts without a registry lookup.
pub fn events_handled(namespace: &str, plugin: &str, event: &str, outcome: &str) -> Counter {
    counter!(
        EVENTS,
        "namespace" => namespace.to_owned(),
        "plugin" => plugin.to_owned(),
        "event" => event.to_owned(),
        "outcome" => outcome.to_owned(),
    )
}

pub fn budget_exhausted(namespace: &str) {
    counter!(BUDGETS_EXHAUSTED, "namespace" => namespace.to_owned()).increment(1);
}

pub fn event_refused(namespace: &str, code: &str) {
    counter!(EVENTS_REFUSED, "namespace" => namespace.to_owned(), "code" => code.to_owned())
        .increment(1);
}

pub fn recovery(namespace: &str, outcome: &'static str) {
    counter!(SESSIONS, "namespace" => namespace.to_owned(), "outcome" => outcome).increment(1);
}

pub fn outbox(bytes: usize) {
    gauge!(OUTBOX_BYTES).set(bytes as f64);
}

pub fn emit_refused(reason: &'static str) {
    counter!(EMITS_REFUSED, "reason" => reason).increment(1);
}

/// The histogram of one plugin's call durations, kept by the plugin so a
/// call records without a registry lookup.
pub fn plugin_call_seconds(plugin: &str) -> Histogram {
    histogram!(PLUGIN_CALL_SECONDS, "plugin" => plugin.to_owned())
}

pub fn plugin_log_lines_dropped(plugin: &str) -> Counter {
    counter!(PLUGIN_LOG_LINES_DROPPED, "plugin" => plugin.to_owned())
}

pub fn read_paced() {
    counter!(READS_PACED).increment(1);
}

pub fn route_rate_limited(plugin: &str) {
    counter!(ROUTE_RATE_LIMITED, "plugin" => plugin.to_owned()).increment(1);
}

pub fn plugin_failed(plugin: &str, code: &'static str) {
    counter!(PLUGIN_FAILURES, "plugin" => plugin.to_owned(), "code" => code).increment(1);
}

pub fn emitted(plugin: &str) {
    counter!(EMITS, "plugin" => plugin.to_owned()).increment(1);
}

pub fn ack(plugin: &str, outcome: &'static str) {
    counter!(ACKS, "plugin" => plugin.to_owned(), "outcome" => outcome).increment(1);
}

pub fn redis_command(command: &'static str, took: Duration) {
    histogram!(REDIS_COMMAND_SECONDS, "command" => command).record(took.as_secs_f64());
}

pub fn redis_connected(up: bool) {
    gauge!(REDIS_CONNECTED).set(if up { 1.0 } else { 0.0 });
}

pub fn plugin_conflicted(plugin: &str) {
    counter!(PLUGIN_CONFLICTS, "plugin" => plugin.to_owned()).increment(1);
}

pub fn redis_reconnected() {
    counter!(REDIS_RECONNECTS).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_past_the_bound_are_counted_as_other() {
        let labels = CodeLabels::default();
        let mut warned = 0;
        let codes: Vec<String> = (0..MAX_CODES_PER_EVENT + 5)
            .map(|n| format!("code_{n}"))
            .collect();
        let counted: Vec<&str> = codes
            .iter()
            .map(|code| labels.label(code, || warned += 1))
            .collect();
        assert_eq!(counted[..MAX_CODES_PER_EVENT], codes[..MAX_CODES_PER_EVENT]);
        assert!(
            counted[MAX_CODES_PER_EVENT..]
                .iter()
                .all(|&label| label == OTHER_CODE)
        );
        assert_eq!(warned, 1, "warned once");
        // Codes already counted keep their name.
        assert_eq!(labels.label("code_3", || warned += 1), "code_3");

        let fresh = CodeLabels::default();
        assert_eq!(fresh.label(&"x".repeat(65), || ()), OTHER_CODE);
        assert_eq!(fresh.label(&"x".repeat(64), || ()), "x".repeat(64));
    }
}
