//! A component's exports: `handler` is required, the other interfaces of the
//! world are optional, so a plugin built against an older world (or one that
//! needs no timers or HTTP routes) still loads. A component built against WIT
//! 0.1 is called through the 0.1 bindings, its values adapted (see
//! [`super::compat`]).

use wasmtime::Store;
use wasmtime::component::{Instance, InstancePre};
use wasmtime::{AsContextMut, Result};

use super::InstanceState;
use super::compat;
use crate::bindings::exports::switchboard::plugin::ack_handler;
use crate::bindings::exports::switchboard::plugin::http_handler::{Request, Response};
use crate::bindings::{Conn, Payload, PluginError};
use crate::host_api::Answered;

/// An optional export, named as the manifest's errors and logs name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Export {
    ConnectionHandler,
    RecoveryHandler,
    TimerHandler,
    HttpHandler,
    /// Since 0.2.1.
    AckHandler,
}

impl std::fmt::Display for Export {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::ConnectionHandler => "connection-handler",
            Self::RecoveryHandler => "recovery-handler",
            Self::TimerHandler => "timer-handler",
            Self::HttpHandler => "http-handler",
            Self::AckHandler => "ack-handler",
        })
    }
}

/// The lookup and loading of one world's exports; the same code for each
/// version of the WIT, over that version's bindings.
macro_rules! world_exports {
    ($module:ident, $bindings:path, $version:literal) => {
        mod $module {
            use wasmtime::component::{Instance, InstancePre};
            use wasmtime::{AsContextMut, Result};

            use super::Export;
            use $bindings::{
                connection_handler, handler, http_handler, recovery_handler, timer_handler,
            };

            #[derive(Clone)]
            pub struct Indices {
                handler: handler::GuestIndices,
                connection: Option<connection_handler::GuestIndices>,
                recovery: Option<recovery_handler::GuestIndices>,
                timer: Option<timer_handler::GuestIndices>,
                http: Option<http_handler::GuestIndices>,
            }

            pub struct Guests {
                pub handler: handler::Guest,
                pub connection: Option<connection_handler::Guest>,
                pub recovery: Option<recovery_handler::Guest>,
                pub timer: Option<timer_handler::Guest>,
                pub http: Option<http_handler::Guest>,
            }

            /// Whether the component was built against this version.
            pub fn targets<T>(pre: &InstancePre<T>) -> bool {
                exported(pre, "handler")
            }

            pub fn exported<T>(pre: &InstancePre<T>, name: &str) -> bool {
                pre.component()
                    .get_export_index(None, &format!("switchboard:plugin/{name}@{}", $version))
                    .is_some()
            }

            impl Indices {
                pub fn new<T>(pre: &InstancePre<T>) -> Result<Self> {
                    Ok(Self {
                        handler: handler::GuestIndices::new(pre)?,
                        connection: exported(pre, "connection-handler")
                            .then(|| connection_handler::GuestIndices::new(pre))
                            .transpose()?,
                        recovery: exported(pre, "recovery-handler")
                            .then(|| recovery_handler::GuestIndices::new(pre))
                            .transpose()?,
                        timer: exported(pre, "timer-handler")
                            .then(|| timer_handler::GuestIndices::new(pre))
                            .transpose()?,
                        http: exported(pre, "http-handler")
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
                        // Not in every world: see `ExportIndices`.
                        Export::AckHandler => false,
                    }
                }

                pub fn load(
                    &self,
                    mut store: impl AsContextMut,
                    instance: &Instance,
                ) -> Result<Guests> {
                    let mut store = store.as_context_mut();
                    Ok(Guests {
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
        }
    };
}

world_exports!(
    current,
    crate::bindings::exports::switchboard::plugin,
    "0.2.1"
);
world_exports!(
    legacy,
    crate::bindings::v0_1::exports::switchboard::plugin,
    "0.1.2"
);

/// Where the exports are in a compiled component, looked up once.
#[derive(Clone)]
pub(super) enum ExportIndices {
    /// With `ack-handler` (0.2.1) when exported.
    Current(current::Indices, Option<ack_handler::GuestIndices>),
    /// Built against WIT 0.1.
    Legacy(legacy::Indices),
}

/// The exports of one instance.
pub(super) enum Exports {
    Current(current::Guests, Option<ack_handler::Guest>),
    Legacy(legacy::Guests),
}

impl ExportIndices {
    /// Fails when `handler` is missing or an optional interface is exported
    /// with the wrong shape; an absent optional interface is fine.
    pub fn new<T>(pre: &InstancePre<T>) -> Result<Self> {
        if legacy::targets(pre) && !current::targets(pre) {
            return legacy::Indices::new(pre).map(Self::Legacy);
        }
        let acks = current::exported(pre, "ack-handler")
            .then(|| ack_handler::GuestIndices::new(pre))
            .transpose()?;
        Ok(Self::Current(current::Indices::new(pre)?, acks))
    }

    pub fn has(&self, export: Export) -> bool {
        match (self, export) {
            (Self::Current(_, acks), Export::AckHandler) => acks.is_some(),
            (Self::Current(indices, _), export) => indices.has(export),
            (Self::Legacy(indices), export) => indices.has(export),
        }
    }

    pub fn load(&self, mut store: impl AsContextMut, instance: &Instance) -> Result<Exports> {
        Ok(match self {
            Self::Current(indices, acks) => {
                let mut store = store.as_context_mut();
                let acks = acks
                    .as_ref()
                    .map(|indices| indices.load(&mut store, instance))
                    .transpose()?;
                Exports::Current(indices.load(&mut store, instance)?, acks)
            }
            Self::Legacy(indices) => Exports::Legacy(indices.load(store, instance)?),
        })
    }
}

type Plugin = Store<InstanceState>;

/// Each export as the host calls it, whichever WIT the component targets.
/// An optional export the component lacks does nothing (callers check
/// [`ExportIndices::has`] where its absence is an error).
impl Exports {
    pub async fn init(&self, store: &mut Plugin, config: &str) -> Result<Result<(), PluginError>> {
        match self {
            Self::Current(guests, _) => guests.handler.call_init(store, config).await,
            Self::Legacy(guests) => {
                let result = guests.handler.call_init(store, config).await?;
                Ok(result.map_err(PluginError::from))
            }
        }
    }

    pub async fn on_connect(
        &self,
        store: &mut Plugin,
        conn: &Conn,
    ) -> Result<Result<(), PluginError>> {
        match self {
            Self::Current(guests, _) => guests.handler.call_on_connect(store, conn).await,
            Self::Legacy(guests) => {
                let result = guests.handler.call_on_connect(store, &conn.into()).await?;
                Ok(result.map_err(PluginError::from))
            }
        }
    }

    pub async fn on_event(
        &self,
        store: &mut Plugin,
        conn: &Conn,
        event: &str,
        payload: &Payload,
    ) -> Result<Result<Option<Payload>, PluginError>> {
        match self {
            Self::Current(guests, _) => {
                guests
                    .handler
                    .call_on_event(store, conn, event, payload)
                    .await
            }
            Self::Legacy(guests) => {
                let result = guests
                    .handler
                    .call_on_event(store, &conn.into(), event, &compat::payload_to_0_1(payload))
                    .await?;
                Ok(result
                    .map(|reply| reply.map(compat::payload_from_0_1))
                    .map_err(PluginError::from))
            }
        }
    }

    pub async fn on_disconnect(&self, store: &mut Plugin, conn: &Conn, reason: &str) -> Result<()> {
        match self {
            Self::Current(guests, _) => {
                guests.handler.call_on_disconnect(store, conn, reason).await
            }
            Self::Legacy(guests) => {
                guests
                    .handler
                    .call_on_disconnect(store, &conn.into(), reason)
                    .await
            }
        }
    }

    pub async fn on_connected(&self, store: &mut Plugin, conn: &Conn) -> Result<()> {
        match self {
            Self::Current(guests, _) => match &guests.connection {
                Some(connection) => connection.call_on_connected(store, conn).await,
                None => Ok(()),
            },
            Self::Legacy(guests) => match &guests.connection {
                Some(connection) => connection.call_on_connected(store, &conn.into()).await,
                None => Ok(()),
            },
        }
    }

    pub async fn on_recovered(&self, store: &mut Plugin, conn: &Conn) -> Result<()> {
        match self {
            Self::Current(guests, _) => match &guests.recovery {
                Some(recovery) => recovery.call_on_recovered(store, conn).await,
                None => Ok(()),
            },
            Self::Legacy(guests) => match &guests.recovery {
                Some(recovery) => recovery.call_on_recovered(store, &conn.into()).await,
                None => Ok(()),
            },
        }
    }

    pub async fn on_timer(
        &self,
        store: &mut Plugin,
        key: &str,
        payload: &str,
    ) -> Result<Result<(), PluginError>> {
        match self {
            Self::Current(guests, _) => match &guests.timer {
                Some(timer) => timer.call_on_timer(store, key, payload).await,
                None => Ok(Ok(())),
            },
            Self::Legacy(guests) => match &guests.timer {
                Some(timer) => {
                    let result = timer.call_on_timer(store, key, payload).await?;
                    Ok(result.map_err(PluginError::from))
                }
                None => Ok(Ok(())),
            },
        }
    }

    pub async fn on_ack(
        &self,
        store: &mut Plugin,
        answered: &Answered,
    ) -> Result<Result<(), PluginError>> {
        match self {
            Self::Current(_, Some(acks)) => {
                let question = &answered.question;
                acks.call_on_ack(
                    store,
                    &question.namespace,
                    &question.socket_id,
                    &question.tag,
                    answered.answer.as_ref(),
                )
                .await
            }
            _ => Ok(Ok(())),
        }
    }

    /// `None` when the component has no `http-handler`.
    pub async fn handle(&self, store: &mut Plugin, request: &Request) -> Result<Option<Response>> {
        match self {
            Self::Current(guests, _) => match &guests.http {
                Some(http) => http.call_handle(store, request).await.map(Some),
                None => Ok(None),
            },
            Self::Legacy(guests) => match &guests.http {
                Some(http) => {
                    let response = http.call_handle(store, &request.into()).await?;
                    Ok(Some(response.into()))
                }
                None => Ok(None),
            },
        }
    }
}
