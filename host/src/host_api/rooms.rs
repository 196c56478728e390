use crate::bindings::PluginError;
use crate::bindings::switchboard::plugin::rooms::Host;
use crate::escaped::Escaped;
use crate::log_context;
use crate::runtime::InstanceState;
use crate::transport::{Membership, check_audience, check_membership, is_reserved};

// Every socket is in its `socket:{id}` room and, when verified, its user's
// `user:{id}` room (see `transport`); those are the host's, not the plugins'.
impl Host for InstanceState {
    async fn join(
        &mut self,
        namespace: String,
        socket_id: String,
        room: String,
    ) -> Result<(), PluginError> {
        self.check_namespace(&namespace)?;
        let rooms = self
            .services
            .sockets
            .plugin_rooms(&namespace, socket_id.clone(), &room)
            .await?;
        if rooms.count >= self.services.max_rooms_per_socket && !rooms.includes_room {
            return Err(PluginError::new(
                "too_many_rooms",
                format!(
                    "socket `{socket_id}` is in {} rooms, the limit (server.max_rooms_per_socket); have it leave one first",
                    rooms.count
                ),
            ));
        }
        self.change_rooms(namespace, socket_id, room, Membership::Join)
            .await
    }

    async fn leave(
        &mut self,
        namespace: String,
        socket_id: String,
        room: String,
    ) -> Result<(), PluginError> {
        self.change_rooms(namespace, socket_id, room, Membership::Leave)
            .await
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
        self.check_namespace(&namespace)?;
        check_audience(&room)?;
        Ok(self.services.sockets.members(&namespace, room).await?)
    }

    async fn rooms_of(
        &mut self,
        namespace: String,
        socket_id: String,
    ) -> Result<Vec<String>, PluginError> {
        self.check_namespace(&namespace)?;
        let rooms = self
            .services
            .sockets
            .rooms_of(&namespace, socket_id)
            .await?;
        Ok(rooms
            .into_iter()
            .filter(|room| !is_reserved(room))
            .collect())
    }
}

impl InstanceState {
    async fn change_rooms(
        &mut self,
        namespace: String,
        socket_id: String,
        room: String,
        change: Membership,
    ) -> Result<(), PluginError> {
        self.check_namespace(&namespace)?;
        if let Err(refused) = check_membership(&room) {
            log_context::logged(|| {
                tracing::warn!(
                    plugin = %self.plugin.name,
                    namespace,
                    socket = %Escaped(&socket_id),
                    "{change:?} refused: {refused}"
                );
            });
            return Err(refused.into());
        }
        Ok(self
            .services
            .sockets
            .change_rooms(&namespace, socket_id, room, change)
            .await?)
    }
}
