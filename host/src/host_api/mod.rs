//! The host side of the WIT imports, one file per interface. Each implements
//! the `Host` trait `bindgen!` generated for that interface on
//! [`InstanceState`], the data of every plugin `Store`. What a handler call
//! does to state and sockets waits in [`pending`] until it commits.

mod acks;
mod clock;
mod config;
mod emit;
mod immediate;
mod log;
mod pending;
mod rooms;
mod state;
mod timers;

use std::sync::Arc;

pub use acks::{AckWaits, Answered};
pub use clock::Clock;
pub use log::LogRate;
pub use pending::{PendingEmit, PendingEmits};

use crate::bindings::PluginError;
use crate::bindings::switchboard::plugin::types;
use crate::cluster::StateStore;
use crate::cluster::timers::TimerStore;
use crate::manifest::ServerSettings;
use crate::runtime::InstanceState;
use crate::transport::{AckFailure, RoomNameError, Sockets, SocketsError};

/// What the host imports reach: the sockets of the server, the state backend
/// and the timers.
pub struct HostServices {
    pub sockets: Arc<dyn Sockets>,
    pub state: Arc<dyn StateStore>,
    pub timers: Arc<dyn TimerStore>,
    /// Rooms plugins may put one socket in (`[server] max_rooms_per_socket`).
    pub max_rooms_per_socket: usize,
    /// The largest event a plugin may emit (`[server] max_payload_bytes`).
    pub max_payload_bytes: usize,
    /// What `clock.now-ms` answers.
    pub clock: Clock,
    /// The acks plugins wait for, and who hands the answers back.
    pub acks: Arc<AckWaits>,
}

impl HostServices {
    /// The services, with the limits `[server]` sets on what plugins do.
    pub fn new(
        sockets: Arc<dyn Sockets>,
        state: Arc<dyn StateStore>,
        timers: Arc<dyn TimerStore>,
        server: &ServerSettings,
    ) -> Self {
        Self {
            sockets,
            state,
            timers,
            max_rooms_per_socket: server.max_rooms_per_socket,
            max_payload_bytes: usize::try_from(server.max_payload_bytes).unwrap_or(usize::MAX),
            clock: Clock::default(),
            acks: Arc::default(),
        }
    }
}

impl types::Host for InstanceState {}

impl InstanceState {
    /// Refuses namespaces the plugin is not bound to, so a plugin only
    /// reaches the sockets the manifest gave it.
    fn check_namespace(&self, namespace: &str) -> Result<(), PluginError> {
        if self.plugin.serves(namespace) {
            return Ok(());
        }
        Err(PluginError::new(
            "namespace_not_allowed",
            format!(
                "plugin `{}` is not bound to namespace `{namespace}`; add it to the plugin's `namespaces` in the manifest",
                self.plugin.name
            ),
        ))
    }
}

impl From<SocketsError> for PluginError {
    fn from(error: SocketsError) -> Self {
        let code = match error {
            SocketsError::UnknownNamespace(_) => "unknown_namespace",
            SocketsError::Transport(_) => "transport_error",
            SocketsError::Unavailable(_) => "cluster_unavailable",
        };
        PluginError::new(code, error.to_string())
    }
}

impl From<AckFailure> for PluginError {
    fn from(failure: AckFailure) -> Self {
        PluginError::new(failure.code(), failure.to_string())
    }
}

impl From<RoomNameError> for PluginError {
    fn from(error: RoomNameError) -> Self {
        PluginError::new(error.code(), error.to_string())
    }
}
