use crate::bindings::Level;
use crate::bindings::switchboard::plugin::log::Host;
use crate::escaped::Escaped;
use crate::runtime::InstanceState;

/// Longest message kept from one log call; a plugin cannot flood the log with one line.
const MAX_MESSAGE_BYTES: usize = 4096;

impl Host for InstanceState {
    async fn log(&mut self, level: Level, mut message: String) {
        if message.len() > MAX_MESSAGE_BYTES {
            let cut = (0..=MAX_MESSAGE_BYTES)
                .rev()
                .find(|&index| message.is_char_boundary(index))
                .unwrap_or(0);
            message.truncate(cut);
            message.push('…');
        }
        let plugin = self.plugin.name.as_str();
        if matches!(level, Level::Error) {
            self.last_error = Some(message.clone());
        }
        let message = Escaped(&message);
        match level {
            Level::Trace => tracing::trace!(target: "plugin", plugin, "{message}"),
            Level::Debug => tracing::debug!(target: "plugin", plugin, "{message}"),
            Level::Info => tracing::info!(target: "plugin", plugin, "{message}"),
            Level::Warn => tracing::warn!(target: "plugin", plugin, "{message}"),
            Level::Error => tracing::error!(target: "plugin", plugin, "{message}"),
        }
    }
}
