//! The host side of the WIT imports, one file per interface. Each implements
//! the `Host` trait `bindgen!` generated for that interface on
//! [`InstanceState`], the data of every plugin `Store`.

mod clock;
mod config;
mod emit;
mod log;
mod rooms;
mod state;

use std::sync::Arc;

use socketioxide::operators::BroadcastOperators;

use crate::bindings::PluginError;
use crate::bindings::switchboard::plugin::types;
use crate::cluster::StateStore;
use crate::runtime::InstanceState;
use crate::transport::{Adapter, Io};

/// What the host imports reach: the Socket.IO server and the state backend.
pub struct HostServices {
    pub io: Io,
    pub state: Arc<dyn StateStore>,
}

impl types::Host for InstanceState {}

impl InstanceState {
    /// Operators on a namespace the plugin serves; other namespaces are refused
    /// so a plugin only reaches the sockets the manifest gave it.
    fn namespace(&self, namespace: &str) -> Result<BroadcastOperators<Adapter>, PluginError> {
        if !self.plugin.serves(namespace) {
            return Err(PluginError::new(
                "namespace_not_allowed",
                format!(
                    "plugin `{}` is not bound to namespace `{namespace}`; add it to the plugin's `namespaces` in the manifest",
                    self.plugin.name
                ),
            ));
        }
        self.services.io.of(namespace).ok_or_else(|| {
            PluginError::new(
                "unknown_namespace",
                format!("namespace `{namespace}` is not served"),
            )
        })
    }
}

/// Maps a transport failure to the error a plugin sees.
fn transport_error(error: impl std::fmt::Display) -> PluginError {
    PluginError::new("transport_error", error.to_string())
}
