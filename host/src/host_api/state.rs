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
    /// Refuses a key name or value over `max_state_value_bytes` before the
    /// backend sees it.
    fn check_size(&self, what: impl FnOnce() -> String, size: usize) -> Result<(), StateError> {
        let max = self.plugin.max_state_value_bytes;
        if size > max {
            return Err(StateError::TooLarge {
                what: what(),
                size,
                max,
            });
        }
        Ok(())
    }

    fn check_key(&self, key: &str) -> Result<(), StateError> {
        self.check_size(|| "the key name".to_owned(), key.len())
    }

    fn check_value(&self, key: &str, value: &str) -> Result<(), StateError> {
        self.check_key(key)?;
        self.check_size(|| format!("the value for `{key}`"), value.len())
    }
}

impl Host for InstanceState {
    async fn get(&mut self, key: String) -> Result<Option<String>, PluginError> {
        Ok(self.services.state.get(&self.plugin.state, &key).await?)
    }

    async fn set(
        &mut self,
        key: String,
        value: String,
        ttl_ms: Option<u64>,
    ) -> Result<(), PluginError> {
        self.check_value(&key, &value)?;
        Ok(self
            .services
            .state
            .set(&self.plugin.state, &key, value, ttl(ttl_ms))
            .await?)
    }

    async fn delete(&mut self, key: String) -> Result<bool, PluginError> {
        Ok(self.services.state.delete(&self.plugin.state, &key).await?)
    }

    async fn incr(&mut self, key: String, delta: i64) -> Result<i64, PluginError> {
        self.check_key(&key)?;
        Ok(self
            .services
            .state
            .incr(&self.plugin.state, &key, delta)
            .await?)
    }

    async fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<String>,
        new: String,
        ttl_ms: Option<u64>,
    ) -> Result<bool, PluginError> {
        self.check_value(&key, &new)?;
        Ok(self
            .services
            .state
            .compare_and_swap(
                &self.plugin.state,
                &key,
                expected.as_deref(),
                new,
                ttl(ttl_ms),
            )
            .await?)
    }

    async fn expire(&mut self, key: String, ttl_ms: Option<u64>) -> Result<bool, PluginError> {
        Ok(self
            .services
            .state
            .expire(&self.plugin.state, &key, ttl(ttl_ms))
            .await?)
    }

    async fn list_push(&mut self, key: String, values: Vec<String>) -> Result<u64, PluginError> {
        for value in &values {
            self.check_value(&key, value)?;
        }
        Ok(self
            .services
            .state
            .list_push(&self.plugin.state, &key, values)
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
            .list_range(&self.plugin.state, &key, start, stop)
            .await?)
    }

    async fn list_trim(&mut self, key: String, start: i64, stop: i64) -> Result<(), PluginError> {
        Ok(self
            .services
            .state
            .list_trim(&self.plugin.state, &key, start, stop)
            .await?)
    }
}
