use crate::bindings::Level;
use crate::bindings::switchboard::plugin::log::Host;
use crate::escaped::Escaped;
use crate::log_context;
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
        // Asked first: naming the call's context makes spans.
        let enabled = match level {
            Level::Trace => tracing::enabled!(target: "plugin", tracing::Level::TRACE),
            Level::Debug => tracing::enabled!(target: "plugin", tracing::Level::DEBUG),
            Level::Info => tracing::enabled!(target: "plugin", tracing::Level::INFO),
            Level::Warn => tracing::enabled!(target: "plugin", tracing::Level::WARN),
            Level::Error => tracing::enabled!(target: "plugin", tracing::Level::ERROR),
        };
        if !enabled {
            return;
        }
        let message = Escaped(&message);
        log_context::logged(|| match level {
            Level::Trace => tracing::trace!(target: "plugin", plugin, "{message}"),
            Level::Debug => tracing::debug!(target: "plugin", plugin, "{message}"),
            Level::Info => tracing::info!(target: "plugin", plugin, "{message}"),
            Level::Warn => tracing::warn!(target: "plugin", plugin, "{message}"),
            Level::Error => tracing::error!(target: "plugin", plugin, "{message}"),
        });
    }
}
