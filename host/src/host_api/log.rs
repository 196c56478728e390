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
        let message = Escaped(&message);
        // Whether the line is logged is asked first: naming the call's
        // context makes spans.
        macro_rules! log_at {
            ($level:expr) => {
                if tracing::enabled!(target: "plugin", $level) {
                    log_context::logged(|| tracing::event!(target: "plugin", $level, plugin, "{message}"));
                }
            };
        }
        match level {
            Level::Trace => log_at!(tracing::Level::TRACE),
            Level::Debug => log_at!(tracing::Level::DEBUG),
            Level::Info => log_at!(tracing::Level::INFO),
            Level::Warn => log_at!(tracing::Level::WARN),
            Level::Error => log_at!(tracing::Level::ERROR),
        }
    }
}
