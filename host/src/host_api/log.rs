use std::num::NonZeroU32;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::bindings::Level;
use crate::bindings::switchboard::plugin::log::Host;
use crate::escaped::Escaped;
use crate::log_context;
use crate::log_output::ThrottledWarning;
use crate::manifest::PluginName;
use crate::metrics;
use crate::runtime::InstanceState;

/// Longest message kept from one log call; a plugin cannot flood the log with one line.
const MAX_MESSAGE_BYTES: usize = 4096;

/// How many lines a plugin's instances may log together
/// (`limits.log_lines_per_second`), and what was dropped past it.
#[derive(Debug)]
pub struct LogRate {
    lines: DefaultDirectRateLimiter,
    dropped: metrics::Counter,
    dropped_warning: ThrottledWarning,
}

impl LogRate {
    pub fn new(plugin: &PluginName, per_second: NonZeroU32) -> Self {
        Self {
            lines: RateLimiter::direct(Quota::per_second(per_second)),
            dropped: metrics::plugin_log_lines_dropped(plugin.as_str()),
            dropped_warning: ThrottledWarning::default(),
        }
    }

    /// Whether a line may be logged now; a line that may not is counted,
    /// and warned of on the first drop and then every ten seconds at most.
    fn admit(&self, plugin: &str) -> bool {
        if self.lines.check().is_ok() {
            return true;
        }
        self.dropped.increment(1);
        if let Some(count) = self.dropped_warning.occurred() {
            tracing::warn!(
                plugin,
                "plugin `{plugin}` logged faster than limits.log_lines_per_second: {count} line(s) dropped"
            );
        }
        false
    }
}

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
        let rate = &self.plugin.log_rate;
        // Whether the line is logged is asked first: naming the call's
        // context makes spans. A line the filter drops is not counted
        // against the plugin's rate.
        macro_rules! log_at {
            ($level:expr) => {
                if tracing::enabled!(target: "plugin", $level) && rate.admit(plugin) {
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
