use std::time::Duration;

use crate::bindings::PluginError;
use crate::bindings::switchboard::plugin::state::Host;
use crate::cluster::StateError;
use crate::runtime::InstanceState;

impl From<StateError> for PluginError {
    fn from(error: StateError) -> Self {
        PluginError::new(error.code(), error.to_string())
    }
}

fn ttl(ttl_ms: Option<u64>) -> Option<Duration> {
    ttl_ms.map(Duration::from_millis)
}

impl InstanceState {
    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.plugin.state_prefix)
    }
}

impl Host for InstanceState {
    async fn get(&mut self, key: String) -> Result<Option<String>, PluginError> {
        Ok(self.services.state.get(&self.key(&key)).await?)
    }

    async fn set(
        &mut self,
        key: String,
        value: String,
        ttl_ms: Option<u64>,
    ) -> Result<(), PluginError> {
        Ok(self
            .services
            .state
            .set(&self.key(&key), value, ttl(ttl_ms))
            .await?)
    }

    async fn delete(&mut self, key: String) -> Result<bool, PluginError> {
        Ok(self.services.state.delete(&self.key(&key)).await?)
    }

    async fn incr(&mut self, key: String, delta: i64) -> Result<i64, PluginError> {
        Ok(self.services.state.incr(&self.key(&key), delta).await?)
    }

    async fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<String>,
        new: String,
        ttl_ms: Option<u64>,
    ) -> Result<bool, PluginError> {
        let key = self.key(&key);
        Ok(self
            .services
            .state
            .compare_and_swap(&key, expected.as_deref(), new, ttl(ttl_ms))
            .await?)
    }

    async fn expire(&mut self, key: String, ttl_ms: Option<u64>) -> Result<bool, PluginError> {
        Ok(self
            .services
            .state
            .expire(&self.key(&key), ttl(ttl_ms))
            .await?)
    }

    async fn list_push(&mut self, key: String, values: Vec<String>) -> Result<u64, PluginError> {
        Ok(self
            .services
            .state
            .list_push(&self.key(&key), values)
            .await?)
    }

    async fn list_range(
        &mut self,
        key: String,
        start: i64,
        stop: i64,
    ) -> Result<Vec<String>, PluginError> {
        Ok(self
            .services
            .state
            .list_range(&self.key(&key), start, stop)
            .await?)
    }

    async fn list_trim(&mut self, key: String, start: i64, stop: i64) -> Result<(), PluginError> {
        Ok(self
            .services
            .state
            .list_trim(&self.key(&key), start, stop)
            .await?)
    }
}
