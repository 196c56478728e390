//! The escape hatch: emits and counters that take effect at once, outside
//! the call's transaction.

use crate::bindings::switchboard::plugin::immediate::Host;
use crate::bindings::{Payload, PluginError};
use crate::runtime::InstanceState;

impl Host for InstanceState {
    async fn emit_to_socket(
        &mut self,
        namespace: String,
        socket_id: String,
        event: String,
        payload: Payload,
    ) -> Result<(), PluginError> {
        let emit = self.checked_emit_to_socket(&namespace, &socket_id, &event, payload)?;
        Ok(self.send(emit).await?)
    }

    async fn emit_to_room(
        &mut self,
        namespace: String,
        room: String,
        event: String,
        payload: Payload,
    ) -> Result<(), PluginError> {
        let emit = self.checked_emit(&namespace, Some(room), None, &event, payload)?;
        Ok(self.send(emit).await?)
    }

    async fn incr(&mut self, key: String, delta: i64) -> Result<i64, PluginError> {
        self.check_key(&key)?;
        Ok(self
            .services
            .state
            .incr_now(&self.plugin.state, &key, delta)
            .await?)
    }
}
