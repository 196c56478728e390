use super::transport_error;
use crate::bindings::PluginError;
use crate::bindings::switchboard::plugin::rooms::Host;
use crate::runtime::InstanceState;

// Every socket is in a room named after its id (see `transport`), which is how
// a socket is addressed wherever it is connected.
impl Host for InstanceState {
    async fn join(
        &mut self,
        namespace: String,
        socket_id: String,
        room: String,
    ) -> Result<(), PluginError> {
        self.namespace(&namespace)?
            .within(socket_id)
            .join(room)
            .await
            .map_err(transport_error)
    }

    async fn leave(
        &mut self,
        namespace: String,
        socket_id: String,
        room: String,
    ) -> Result<(), PluginError> {
        self.namespace(&namespace)?
            .within(socket_id)
            .leave(room)
            .await
            .map_err(transport_error)
    }

    async fn size(&mut self, namespace: String, room: String) -> Result<u32, PluginError> {
        let members = self.members(namespace, room).await?;
        Ok(u32::try_from(members.len()).unwrap_or(u32::MAX))
    }

    async fn members(
        &mut self,
        namespace: String,
        room: String,
    ) -> Result<Vec<String>, PluginError> {
        let sockets = self
            .namespace(&namespace)?
            .within(room)
            .fetch_sockets()
            .await
            .map_err(transport_error)?;
        Ok(sockets
            .iter()
            .map(|socket| socket.data().id.to_string())
            .collect())
    }

    async fn rooms_of(
        &mut self,
        namespace: String,
        socket_id: String,
    ) -> Result<Vec<String>, PluginError> {
        let rooms = self
            .namespace(&namespace)?
            .within(socket_id.clone())
            .rooms()
            .await
            .map_err(transport_error)?;
        Ok(rooms
            .into_iter()
            .filter(|room| *room != socket_id)
            .map(|room| room.into_owned())
            .collect())
    }
}
