//! A component's exports: `handler` is required, the other interfaces of the
//! world are optional, so a plugin built against an older world (or one that
//! needs no timers or HTTP routes) still loads.

use wasmtime::component::{Instance, InstancePre};
use wasmtime::{AsContextMut, Result};

use super::WIT_VERSION;
use crate::bindings::exports::switchboard::plugin::{
    connection_handler, handler, http_handler, recovery_handler, timer_handler,
};

/// An optional export, named as the manifest's errors and logs name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Export {
    ConnectionHandler,
    RecoveryHandler,
    TimerHandler,
    HttpHandler,
}

impl std::fmt::Display for Export {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::ConnectionHandler => "connection-handler",
            Self::RecoveryHandler => "recovery-handler",
            Self::TimerHandler => "timer-handler",
            Self::HttpHandler => "http-handler",
        })
    }
}

/// Where the exports are in a compiled component, looked up once.
#[derive(Clone)]
pub(super) struct ExportIndices {
    handler: handler::GuestIndices,
    connection: Option<connection_handler::GuestIndices>,
    recovery: Option<recovery_handler::GuestIndices>,
    timer: Option<timer_handler::GuestIndices>,
    http: Option<http_handler::GuestIndices>,
}

/// The exports of one instance.
pub(super) struct Exports {
    pub handler: handler::Guest,
    pub connection: Option<connection_handler::Guest>,
    pub recovery: Option<recovery_handler::Guest>,
    pub timer: Option<timer_handler::Guest>,
    pub http: Option<http_handler::Guest>,
}

impl ExportIndices {
    /// Fails when `handler` is missing or an optional interface is exported
    /// with the wrong shape; an absent optional interface is fine.
    pub fn new<T>(pre: &InstancePre<T>) -> Result<Self> {
        let exported = |name: &str| {
            pre.component()
                .get_export_index(
                    None,
                    format!("switchboard:plugin/{name}@{WIT_VERSION}").as_str(),
                )
                .is_some()
        };
        Ok(Self {
            handler: handler::GuestIndices::new(pre)?,
            connection: exported("connection-handler")
                .then(|| connection_handler::GuestIndices::new(pre))
                .transpose()?,
            recovery: exported("recovery-handler")
                .then(|| recovery_handler::GuestIndices::new(pre))
                .transpose()?,
            timer: exported("timer-handler")
                .then(|| timer_handler::GuestIndices::new(pre))
                .transpose()?,
            http: exported("http-handler")
                .then(|| http_handler::GuestIndices::new(pre))
                .transpose()?,
        })
    }

    pub fn has(&self, export: Export) -> bool {
        match export {
            Export::ConnectionHandler => self.connection.is_some(),
            Export::RecoveryHandler => self.recovery.is_some(),
            Export::TimerHandler => self.timer.is_some(),
            Export::HttpHandler => self.http.is_some(),
        }
    }

    pub fn load(&self, mut store: impl AsContextMut, instance: &Instance) -> Result<Exports> {
        let mut store = store.as_context_mut();
        Ok(Exports {
            handler: self.handler.load(&mut store, instance)?,
            connection: self
                .connection
                .as_ref()
                .map(|indices| indices.load(&mut store, instance))
                .transpose()?,
            recovery: self
                .recovery
                .as_ref()
                .map(|indices| indices.load(&mut store, instance))
                .transpose()?,
            timer: self
                .timer
                .as_ref()
                .map(|indices| indices.load(&mut store, instance))
                .transpose()?,
            http: self
                .http
                .as_ref()
                .map(|indices| indices.load(&mut store, instance))
                .transpose()?,
        })
    }
}
