use super::pending::PendingEmit;
use crate::bindings::switchboard::plugin::emit::Host;
use crate::bindings::{Payload, PluginError};
use crate::escaped::Escaped;
use crate::log_context;
use crate::manifest::is_reserved_event;
use crate::payload::{self, Outgoing};
use crate::runtime::InstanceState;
use crate::transport::{Audience, check_audience, socket_room};

impl Host for InstanceState {
    async fn to_socket(
        &mut self,
        namespace: String,
        socket_id: String,
        event: String,
        payload: Payload,
    ) -> Result<(), PluginError> {
        self.emit(
            &namespace,
            Some(socket_room(&socket_id)),
            None,
            &event,
            payload,
        )
        .await
    }

    async fn to_room(
        &mut self,
        namespace: String,
        room: String,
        event: String,
        payload: Payload,
    ) -> Result<(), PluginError> {
        self.emit(&namespace, Some(room), None, &event, payload)
            .await
    }

    async fn to_room_except(
        &mut self,
        namespace: String,
        room: String,
        except_socket_id: String,
        event: String,
        payload: Payload,
    ) -> Result<(), PluginError> {
        self.emit(
            &namespace,
            Some(room),
            Some(socket_room(&except_socket_id)),
            &event,
            payload,
        )
        .await
    }

    async fn to_namespace(
        &mut self,
        namespace: String,
        event: String,
        payload: Payload,
    ) -> Result<(), PluginError> {
        self.emit(&namespace, None, None, &event, payload).await
    }
}

impl InstanceState {
    /// Queues the emit for when the call commits.
    async fn emit(
        &mut self,
        namespace: &str,
        room: Option<String>,
        except: Option<String>,
        event: &str,
        payload: Payload,
    ) -> Result<(), PluginError> {
        let emit = self.checked_emit(namespace, room, except, event, payload)?;
        self.pending.push(emit)
    }

    /// An emit to one socket the plugin may make, or why not.
    pub(super) fn checked_emit_to_socket(
        &self,
        namespace: &str,
        socket_id: &str,
        event: &str,
        payload: Payload,
    ) -> Result<PendingEmit, PluginError> {
        self.checked_emit(
            namespace,
            Some(socket_room(socket_id)),
            None,
            event,
            payload,
        )
    }

    /// An emit the plugin may make, or why not.
    pub(super) fn checked_emit(
        &self,
        namespace: &str,
        room: Option<String>,
        except: Option<String>,
        event: &str,
        payload: Payload,
    ) -> Result<PendingEmit, PluginError> {
        self.check_namespace(namespace)?;
        if is_reserved_event(event) {
            return Err(PluginError::new(
                "reserved_event",
                format!("`{event}` is reserved by Socket.IO and cannot be emitted by a plugin"),
            ));
        }
        if let Some(room) = &room {
            check_audience(room)?;
        }
        let size = payload::size(&payload);
        if let Err(too_large) = payload::within(size, self.services.max_payload_bytes) {
            log_context::logged(|| {
                tracing::warn!(
                    plugin = %self.plugin.name,
                    event = %Escaped(event),
                    bytes = size,
                    "emit over server.max_payload_bytes refused"
                );
            });
            return Err(PluginError::new(
                "payload_too_large",
                format!("the emit of `{}` {too_large}", Escaped(event)),
            ));
        }
        Ok(PendingEmit {
            namespace: namespace.to_owned(),
            audience: Audience { room, except },
            event: event.to_owned(),
            payload: Outgoing::new(payload)?,
            bytes: size,
            question: None,
        })
    }
}
