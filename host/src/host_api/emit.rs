use socketioxide::operators::BroadcastOperators;

use super::transport_error;
use crate::bindings::switchboard::plugin::emit::Host;
use crate::bindings::{Payload, PluginError};
use crate::manifest::is_reserved_event;
use crate::payload::Outgoing;
use crate::runtime::InstanceState;
use crate::transport::Adapter;

impl Host for InstanceState {
    async fn to_socket(
        &mut self,
        namespace: String,
        socket_id: String,
        event: String,
        payload: Payload,
    ) -> Result<(), PluginError> {
        let target = self.namespace(&namespace)?.to(socket_id);
        send(target, &event, payload).await
    }

    async fn to_room(
        &mut self,
        namespace: String,
        room: String,
        event: String,
        payload: Payload,
    ) -> Result<(), PluginError> {
        let target = self.namespace(&namespace)?.to(room);
        send(target, &event, payload).await
    }

    async fn to_room_except(
        &mut self,
        namespace: String,
        room: String,
        except_socket_id: String,
        event: String,
        payload: Payload,
    ) -> Result<(), PluginError> {
        let target = self
            .namespace(&namespace)?
            .to(room)
            .except(except_socket_id);
        send(target, &event, payload).await
    }

    async fn to_namespace(
        &mut self,
        namespace: String,
        event: String,
        payload: Payload,
    ) -> Result<(), PluginError> {
        let target = self.namespace(&namespace)?;
        send(target, &event, payload).await
    }
}

async fn send(
    target: BroadcastOperators<Adapter>,
    event: &str,
    payload: Payload,
) -> Result<(), PluginError> {
    if is_reserved_event(event) {
        return Err(PluginError::new(
            "reserved_event",
            format!("`{event}` is reserved by Socket.IO and cannot be emitted by a plugin"),
        ));
    }
    let payload = Outgoing::new(payload)?;
    target.emit(event, &payload).await.map_err(transport_error)
}
