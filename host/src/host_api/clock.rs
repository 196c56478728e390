use std::time::{SystemTime, UNIX_EPOCH};

use crate::bindings::switchboard::plugin::clock::Host;
use crate::runtime::InstanceState;

impl Host for InstanceState {
    async fn now_ms(&mut self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| {
                u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
            })
    }
}
