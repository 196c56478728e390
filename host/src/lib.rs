//! Switchboard: a Socket.IO server whose application logic runs as sandboxed
//! WebAssembly components.
//!
//! Module map:
//! - [`manifest`]: the TOML manifest, its strict schema, located errors and
//!   the settings the environment gives instead.
//! - [`metrics`]: the Prometheus series the host records, and their recorder.
//! - [`allocator`]: jemalloc as the process's allocator, and its figures.
//! - [`allowance`]: refilling buckets (rates, cost budgets) and bytes a call
//!   holds within a bound.
//! - [`runtime`]: the wasmtime engine, compiled plugins, warm instance pools,
//!   the plugin threads, the memory all instances share, and the adapter
//!   that keeps plugins built against WIT 0.1 working.
//! - [`bindings`]: the WIT world (`wit/plugin.wit`, 0.2) and the frozen 0.1
//!   world (`host/wit-0.1`) as Rust, generated once each.
//! - [`host_api`]: the host side of each WIT import interface, one file each,
//!   and the answers to acks plugins wait for.
//! - [`identity`]: JWT verification: who a socket or HTTP caller is, and until when.
//! - [`transport`]: Socket.IO namespaces, connect checks, per-socket event
//!   queues, the rates and cost budget (per connection and namespace) that
//!   pace them, acks asked of clients.
//! - [`payload`]: event payloads between Socket.IO packets and plugins.
//! - [`cluster`]: state shared by nodes (memory or Redis), the per-call
//!   state transaction and the hot keys its calls take in turn, and the
//!   Redis connection.
//! - [`recovery`]: connection-state recovery: the journal of emits and the
//!   sessions clients come back to.
//! - [`http_api`]: health, readiness, the `/api/v1` emit and room endpoints,
//!   plugin routes and their callers' rates, the API token and the Origin
//!   policy in front of Socket.IO.
//! - [`reload`]: hot reload of plugin components (file watch, API, SIGHUP).
//! - [`listener`]: the accept loop: connection limits, HTTP timeouts,
//!   request-head size and the client's address for each request.
//! - [`server`]: loads a manifest and serves it until shutdown.
//! - [`escaped`]: client and plugin text made safe for log lines.
//! - [`log_context`]: the socket and event a call serves, named in what it logs.
//! - [`log_output`]: log lines to stderr from a bounded queue, never blocking
//!   the thread that logs, and warnings of what happens many times at once,
//!   with a count.
//! - [`call`]: events through one plugin without a server (`switchboard call`).
//! - [`scaffold`]: a new plugin project (`switchboard plugin new`).
//! - `temp_dir` (tests only): scratch directories removed on drop.

pub mod allocator;
pub mod allowance;
pub mod bindings;
pub mod call;
pub mod cluster;
pub mod escaped;
pub mod host_api;
pub mod http_api;
pub mod identity;
pub mod listener;
pub mod log_context;
pub mod log_output;
pub mod manifest;
pub mod metrics;
pub mod payload;
pub mod recovery;
pub mod reload;
pub mod runtime;
pub mod scaffold;
pub mod server;
#[cfg(test)]
mod temp_dir;
pub mod transport;

pub use manifest::Manifest;
pub use server::{ServeError, Server};
