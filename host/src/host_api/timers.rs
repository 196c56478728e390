use crate::bindings::PluginError;
use crate::bindings::switchboard::plugin::timers::Host;
use crate::runtime::InstanceState;

/// Longest timer key, in bytes.
const MAX_KEY_BYTES: usize = 512;
/// Largest timer payload, in bytes: a timer carries a reference, not data.
const MAX_PAYLOAD_BYTES: usize = 64 * 1024;

fn check_key(key: &str) -> Result<(), PluginError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(PluginError::new(
            "invalid_timer",
            format!("a timer key must be 1 to {MAX_KEY_BYTES} bytes long"),
        ));
    }
    Ok(())
}

impl Host for InstanceState {
    async fn schedule(
        &mut self,
        at_ms: u64,
        key: String,
        payload: String,
    ) -> Result<(), PluginError> {
        check_key(&key)?;
        if !self.plugin.receives_timers {
            return Err(PluginError::new(
                "timers_unavailable",
                format!(
                    "plugin `{}` does not export `timer-handler`, so its timers could not be delivered; implement `on_timer`",
                    self.plugin.name
                ),
            ));
        }
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(PluginError::new(
                "invalid_timer",
                format!(
                    "a timer payload is at most {MAX_PAYLOAD_BYTES} bytes; store the data in `state` and pass its key"
                ),
            ));
        }
        let plugin = self.plugin.name.as_str();
        Ok(self
            .services
            .timers
            .schedule(plugin, &key, at_ms, &payload, self.plugin.max_timers)
            .await?)
    }

    async fn cancel(&mut self, key: String) -> Result<bool, PluginError> {
        check_key(&key)?;
        let plugin = self.plugin.name.as_str();
        Ok(self.services.timers.cancel(plugin, &key).await?)
    }
}
