//! Calls refused as `overloaded`, logged with a count at most once per
//! [`WARN_EVERY`] per plugin: an overload is many refusals at once, and one
//! warning each would flood the log just when it matters.

use super::CallError;
use crate::escaped::Escaped;
use crate::log_output::{ThrottledWarning, WARN_EVERY};
use crate::manifest::PluginName;

#[derive(Default)]
pub struct Refusals(ThrottledWarning);

impl Refusals {
    pub fn record(&self, plugin: &PluginName, refusal: &CallError) {
        if let Some(count) = self.0.occurred() {
            tracing::warn!(
                %plugin,
                "{count} call(s) refused since the last such warning (at most one per {} s), the latest: {}",
                WARN_EVERY.as_secs(),
                Escaped(refusal)
            );
        }
    }
}
